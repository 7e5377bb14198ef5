"""The "classic" family of the zoo: NIN (mlpconv, global-average-pooling head), VGG-16 and its CIFAR
variant, GoogLeNet (Inception modules; factorized Inception), SqueezeNet 1.0/1.1 (fire modules).

Counts are computed abstractly (no initializer or forward pass of a full-size model runs); the
block properties run on toy widths and inputs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models_util import assert_nnx_twin
from _models_util import count
from _models_util import params_and_macs
from _models_util import paths
from _models_util import random_like
from _models_util import shapes
from flax import nnx
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from jaxcomp import models
from jaxcomp.adapt import functional
from jaxcomp.analysis import flops
from jaxcomp.core._tree import path_str
from jaxcomp.models._nin import _pool_ceil

_IMAGENET = (224, 224, 3)
_CIFAR = (32, 32, 3)
_DN = ("NHWC", "HWIO", "NHWC")
_close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5)
# "rbg" keys for dropout: XLA's RngBitGenerator compiles in a fraction of threefry's time on a CPU
_rbg = functools.partial(jax.random.key, impl="rbg")


def _variables(module, x, seed=0):
    """Random variables (numpy) of a linen block for input ``x``, without its initializers."""
    return random_like(jax.eval_shape(module.init, jax.random.key(0), x), seed)


def _x(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _pointwise(h, conv):
    """A 1x1 convolution as the same dense layer at every pixel."""
    return h @ conv["kernel"][0, 0] + jnp.reshape(conv["bias"], (1,) * (h.ndim - 1) + (-1,))


def _conv(x, kernel, bias=None, padding="SAME", strides=1):
    y = jax.lax.conv_general_dilated(x, kernel, (strides, strides), padding, dimension_numbers=_DN)
    return y if bias is None else y + jnp.reshape(bias, (1, 1, 1, -1))


# Parameter and mult-add counts against the papers and reference implementations.

# name: (input shape, num_classes, params, published mult-adds or None, our exact mult-adds)
_COUNTS = {
    # NIN: the paper's released CIFAR-10 model (Caffe model zoo); no published mult-adds
    "nin": (_CIFAR, 10, 966_986, None, 222_486_528),
    # torchvision vgg16; ~15.5G mult-adds as commonly cited (the paper gives none)
    "vgg16": (_IMAGENET, 1000, 138_357_544, 15.5e9, 15_470_264_320),
    # pytorch-cifar's VGG16 (conv biases + batch norm, one dense classifier)
    "vgg16_cifar": (_CIFAR, 10, 14_728_266, None, 313_201_664),
    # torchvision googlenet(aux_logits=False); the paper: "1.5 billion multiply-adds"
    "googlenet": (_IMAGENET, 1000, 6_624_904, 1.5e9, 1_498_376_192),
    # torchvision squeezenet1_0 / 1_1 (its 0.82 / 0.35 GFLOPS)
    "squeezenet1_0": (_IMAGENET, 1000, 1_248_424, 0.82e9, 818_924_576),
    "squeezenet1_1": (_IMAGENET, 1000, 1_235_496, 0.35e9, 349_151_936),
}


@pytest.mark.parametrize("name", sorted(_COUNTS))
def test_params_and_mult_adds_match_the_published_figures(name):
    input_shape, classes, params, published, macs = _COUNTS[name]
    assert models.input_shape(name) == input_shape
    got_params, got_macs = params_and_macs(models.get(name, num_classes=classes), input_shape)
    assert got_params == params
    assert got_macs == macs
    if published is not None:
        assert abs(got_macs / published - 1) < 0.05


def test_nin_count_is_the_caffe_model_layer_by_layer():
    layers = [(5, 3, 192), (1, 192, 160), (1, 160, 96), (5, 96, 192), (1, 192, 192)]
    layers += [(1, 192, 192), (3, 192, 192), (1, 192, 192), (1, 192, 10)]
    assert sum(k * k * cin * cout + cout for k, cin, cout in layers) == _COUNTS["nin"][2]


def test_vgg16_count_is_configuration_d():
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs = sum(9 * cin * cout + cout for cin, cout in zip([3, *widths], widths))
    dense = (7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert convs + dense == 138_357_544
    cifar = convs + 2 * sum(widths) + 512 * 10 + 10  # + batch-norm scales and offsets
    assert cifar == _COUNTS["vgg16_cifar"][2]


def test_googlenet_paper_kernels_and_biases_give_about_7m():
    # the paper's 5x5 kernels with biased convolutions (no batch norm): the "about 7M"
    model = models.get("googlenet", num_classes=1000, kernel_5x5=5, batch_norm=False)
    assert count(shapes(model, _IMAGENET)["params"]) == 6_998_552


def test_squeezenet_metaparameters_give_the_papers_fire_modules():
    # table 1 of the paper: (s1x1, e1x1, e3x3) of fire2 ... fire9
    table = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128)]
    table += [(48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]
    for version in ("1_0", "1_1"):
        params = shapes(models.get(f"squeezenet{version}"), (32, 32, 3))["params"]
        for index, (s, e1, e3) in enumerate(table):
            fire = params[f"FireModule_{index}"]
            assert fire["Conv_0"]["kernel"].shape[-1] == s
            assert fire["Conv_1"]["kernel"].shape == (1, 1, s, e1)
            assert fire["Conv_2"]["kernel"].shape == (3, 3, s, e3)
    assert params["Conv_0"]["kernel"].shape == (3, 3, 3, 64)  # version 1_1's stem


@pytest.mark.parametrize(
    ("name", "smallest"),
    [
        ("nin", 4),
        ("vgg16", 32),
        ("googlenet", 15),  # torchvision's min_size
        ("squeezenet1_0", 21),  # torchvision's min_size
        ("squeezenet1_1", 17),
    ],
)
def test_smallest_input_and_too_small_inputs(name, smallest):
    model = models.get(name)
    variables = shapes(model, (smallest, smallest, 3))
    if name == "vgg16":  # the dense layer's input size follows the input: checked at init
        with pytest.raises(ValueError, match=r"too small.*>= 32"):
            shapes(model, (31, 40, 3))
    else:
        x = jax.ShapeDtypeStruct((2, smallest - 1, smallest, 3), jnp.float32)
        with pytest.raises(ValueError, match=rf"too small.*>= {smallest}"):
            jax.eval_shape(model.apply, variables, x)
    with pytest.raises(ValueError, match="NHWC"):
        jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((2, 32, 32), jnp.float32))
    with pytest.raises(ValueError, match="too small"):
        models.get(name, api="nnx", key=jax.random.key(0), input_shape=(smallest - 1,) * 2 + (3,))


# The NNX twins: same variables paths, same outputs from the same weights (toy sizes).

# toy sizes; GoogLeNet's batch norm in train mode is compared on its InceptionModule below (one
# eval compile suffices for the whole network)
_GOOGLENET_TOY = {"stem": (1, 2, 2), "modules": [(1, 1, 2, 1, 1, 1)] * 9, "dropout": 0.0}
_SQUEEZENET_TOY = {"stem": 2, "base_e": 4, "incr_e": 2, "squeeze_ratio": 0.5, "dropout": 0.0}
_TWINS = [  # (name, attributes, input shape, assert_nnx_twin options)
    ("nin", {"widths": ((3, 2), (3, 2), (2,)), "dropout": 0.0}, (8, 8, 3), {}),
    ("vgg16", {"widths": (1, 2, 2, 2, 2), "hidden": 3, "dropout": 0.0}, (32, 32, 3), {}),
    ("vgg16_cifar", {"widths": (1, 2, 2, 2, 2)}, (32, 32, 3), {}),
    ("googlenet", _GOOGLENET_TOY, (15, 15, 3), {"train": False}),
    # squeezenet1_0 is squeezenet1_1's code with another stem and pooling places: paths suffice
    ("squeezenet1_0", _SQUEEZENET_TOY, (21, 21, 3), {"outputs": False}),
    ("squeezenet1_1", _SQUEEZENET_TOY, (17, 19, 2), {}),
]


@pytest.mark.parametrize(("name", "kw", "input_shape", "options"), _TWINS)
def test_nnx_twin_has_the_linen_paths_and_outputs(name, kw, input_shape, options):
    assert_nnx_twin(name, kw, input_shape, **options)


def _block_twin(linen, make_nnx, x, train=True):
    """A linen block and its NNX twin: same variables, same eval (and train) outputs."""
    variables = _variables(linen, x)
    apply, own = functional(nnx.eval_shape(make_nnx))
    assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, variables)
    run = lambda fn, **kw: jax.jit(functools.partial(fn, **kw))(variables, x)
    y = run(apply, train=False)
    _close(y, run(linen.apply, train=False))
    if train and "batch_stats" in variables:
        out, stats = run(apply, train=True, mutable=["batch_stats"])
        ref, ref_stats = run(linen.apply, train=True, mutable=["batch_stats"])
        _close(out, ref)
        jax.tree.map(_close, stats, dict(ref_stats))
    return variables, y


# The blocks' defining properties.


def test_mlpconv_is_a_conv_then_per_pixel_dense_layers_with_relu():
    block = models.MLPConv((3, 4, 2), kernel_size=3, strides=2, padding=1)
    x = _x((2, 7, 7, 3))
    make = lambda: models.NNXMLPConv(3, (3, 4, 2), 3, 2, 1, rngs=nnx.Rngs(0))
    variables, y = _block_twin(block, make, x)
    p = variables["params"]
    h = jax.nn.relu(_conv(x, p["Conv_0"]["kernel"], p["Conv_0"]["bias"], [(1, 1)] * 2, 2))
    for name in ("Conv_1", "Conv_2"):  # a 1x1 convolution: the same dense layer at every pixel
        h = jax.nn.relu(_pointwise(h, p[name]))
    assert y.shape == (2, 4, 4, 2)
    _close(y, h)


def test_global_average_pooling_head_conv_then_mean_equals_mean_then_dense():
    x = _x((2, 5, 5, 4))
    conv = models.GlobalAvgPoolHead(3)
    make = lambda: models.NNXGlobalAvgPoolHead(4, 3, rngs=nnx.Rngs(0))
    variables, y = _block_twin(conv, make, x)
    conv0 = variables["params"]["Conv_0"]
    dense = models.GlobalAvgPoolHead(3, "dense")
    dense_vars = {"params": {"Dense_0": {"kernel": conv0["kernel"][0, 0], "bias": conv0["bias"]}}}
    _close(y, dense.apply(dense_vars, x))  # linear maps commute with the average
    _close(y, _pointwise(jnp.mean(x, axis=(1, 2)), conv0))
    relu = models.GlobalAvgPoolHead(3, relu=True).apply(variables, x)
    _close(relu, jnp.mean(jax.nn.relu(_pointwise(x, conv0)), axis=(1, 2)))
    # the same parameters; the dense head's mult-adds are h * w times fewer
    xs = jax.ShapeDtypeStruct(x.shape, jnp.float32)
    macs_conv = flops(lambda v, x: conv.apply(v, x), variables, xs)
    assert macs_conv == 25 * flops(lambda v, x: dense.apply(v, x), dense_vars, xs)


def test_fire_module_squeezes_then_concatenates_1x1_and_3x3_expansions():
    fire = models.FireModule(squeeze=2, expand1x1=3, expand3x3=4)
    x = _x((2, 6, 5, 8))
    make = lambda: models.NNXFireModule(8, 2, 3, 4, rngs=nnx.Rngs(0))
    variables, y = _block_twin(fire, make, x)
    p = variables["params"]
    assert count(p) == (8 * 2 + 2) + (2 * 3 + 3) + (9 * 2 * 4 + 4)
    s = jax.nn.relu(_pointwise(x, p["Conv_0"]))
    e1 = jax.nn.relu(_pointwise(s, p["Conv_1"]))
    e3 = jax.nn.relu(_conv(s, p["Conv_2"]["kernel"], p["Conv_2"]["bias"]))
    assert y.shape == (2, 6, 5, 7)
    _close(y[..., :3], e1)
    _close(y[..., 3:], e3)


def _bn_eval(x, params, stats, epsilon):
    c = lambda a: jnp.reshape(a, (1, 1, 1, -1))
    return (x - c(stats["mean"])) / jnp.sqrt(c(stats["var"]) + epsilon) * c(params["scale"]) + c(
        params["bias"]
    )


def test_inception_module_concatenates_its_four_branches():
    block = models.InceptionModule(2, 1, 3, 1, 2, 1, kernel_5x5=5)
    x = _x((2, 6, 6, 3))
    make = lambda: models.NNXInceptionModule(3, 2, 1, 3, 1, 2, 1, kernel_5x5=5, rngs=nnx.Rngs(0))
    variables, y = _block_twin(block, make, x)
    p, s = variables["params"], variables["batch_stats"]
    assert y.shape == (2, 6, 6, 2 + 3 + 2 + 1)
    assert p["Conv_4"]["kernel"].shape == (5, 5, 1, 2)
    assert "bias" not in p["Conv_0"]  # bias-free: the batch norm has the offset
    unit = lambda i, h: jax.nn.relu(
        _bn_eval(_conv(h, p[f"Conv_{i}"]["kernel"]), p[f"BatchNorm_{i}"], s[f"BatchNorm_{i}"], 1e-3)
    )

    @jax.jit
    def reference(x):
        pooled = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1,) * 4, "SAME")
        branches = [unit(0, x), unit(2, unit(1, x)), unit(4, unit(3, x)), unit(5, pooled)]
        return jnp.concatenate(branches, axis=-1)

    _close(y, reference(x))
    # torchvision's inception3a (its 3x3 in the "5x5" branch): 155,872 params
    params = shapes(models.InceptionModule(64, 96, 128, 16, 32, 32, kernel_5x5=3), (28, 28, 192))
    assert count(params["params"]) == 155_872
    biased = models.InceptionModule(64, 96, 128, 16, 32, 32, batch_norm=False)
    assert set(shapes(biased, (28, 28, 192))) == {"params"}


def test_inception_factorized_keeps_shape_and_receptive_field_with_fewer_params():
    n, shape = 3, (1, 9, 9, 1)
    x = np.random.default_rng(0).uniform(0.5, 1.5, shape).astype(np.float32)
    outputs, counts = [], []
    for factorize in (True, False):
        block = models.InceptionFactorized(1, 1, 1, 1, n=n, factorize=factorize)
        if factorize:
            make = lambda: models.NNXInceptionFactorized(1, 1, 1, 1, 1, n=n, rngs=nnx.Rngs(0))
            variables = _block_twin(block, make, x, train=False)[0]
        else:
            variables = _variables(block, x)
        counts.append(count(variables["params"]))
        # positive weights, zero means: every unit is active, so the gradient's support is the
        # receptive field of the centre pixel
        positive = jax.tree_util.tree_map_with_path(
            lambda p, a: np.zeros_like(a) if path_str(p).endswith("mean") else np.abs(a) + 0.1,
            variables,
        )
        y, vjp = jax.vjp(lambda x, v=positive, b=block: b.apply(v, x), x)
        grad = vjp(jnp.zeros(y.shape).at[0, 4, 4].set(1.0))[0]
        outputs.append((y.shape, np.asarray(grad[0, :, :, 0] != 0)))
    window = np.zeros((9, 9), bool)
    window[4 - (n - 1) : 5 + (n - 1), 4 - (n - 1) : 5 + (n - 1)] = True  # two stacked n x n: 5x5
    assert outputs[0][0] == outputs[1][0] == (1, 9, 9, 4)
    np.testing.assert_array_equal(outputs[0][1], window)
    np.testing.assert_array_equal(outputs[1][1], window)
    assert counts[0] < counts[1]
    # Inception-v3's 17x17 module (torchvision's Mixed_6b: InceptionC(768, channels_7x7=128))
    full = shapes(models.InceptionFactorized(), (17, 17, 768))["params"]
    unit = lambda cin, cout, k: cin * cout * k + 2 * cout  # bias-free conv + batch norm
    expected = unit(768, 192, 1) + unit(768, 128, 1) + unit(128, 128, 7) + unit(128, 192, 7)
    expected += unit(768, 128, 1) + 3 * unit(128, 128, 7) + unit(128, 192, 7) + unit(768, 192, 1)
    assert count(full) == expected == 1_297_408
    plain = shapes(models.InceptionFactorized(factorize=False), (17, 17, 768))["params"]
    assert count(plain) == 3_705_088


def _caffe_pool(x, kind, window, stride):
    """Caffe's pooling (no padding, ceil rounding, windows clipped to the image) in numpy."""
    n, h, w, c = x.shape
    out = []
    for size in (h, w):
        o = -(-(size - window) // stride) + 1
        out.append(o - ((o - 1) * stride >= size))
    y = np.zeros((n, *out, c), x.dtype)
    for i in range(out[0]):
        for j in range(out[1]):
            patch = x[:, i * stride : i * stride + window, j * stride : j * stride + window]
            y[:, i, j] = patch.max(axis=(1, 2)) if kind == "max" else patch.mean(axis=(1, 2))
    return y


@settings(max_examples=6, deadline=None)
@given(
    h=st.integers(3, 11),
    w=st.integers(3, 11),
    kind=st.sampled_from(["max", "avg"]),
    window=st.integers(2, 3),
    stride=st.integers(1, 2),
)
def test_pool_ceil_is_caffes_pooling(h, w, kind, window, stride):
    x = _x((1, h, w, 2))
    _close(_pool_ceil(jnp.asarray(x), kind, window, stride), _caffe_pool(x, kind, window, stride))


# Dropout (no parameters; NNX keeps an RNG stream named "dropout").


def test_dropout_is_active_only_in_training_and_follows_the_key():
    kw = {"widths": ((3, 2), (3, 2), (2,))}
    linen = models.get("nin", **kw)
    assert linen.dropout == 0.5  # the paper's rate
    variables = random_like(shapes(linen, (8, 8, 3)), 0)
    x = _x((2, 8, 8, 3))
    train = jax.jit(lambda v, x, key: linen.apply(v, x, train=True, rngs={"dropout": key}))
    a = train(variables, x, _rbg(0))
    assert not np.allclose(a, train(variables, x, _rbg(1)))
    _close(a, train(variables, x, _rbg(0)))
    y = jax.jit(linen.apply)(variables, x)

    build = lambda **more: nnx.eval_shape(  # abstract: no initializer runs
        lambda: models.get(
            "nin", api="nnx", key=jax.random.key(3), input_shape=(8, 8, 3), **kw, **more
        )
    )
    apply, own = functional(build())
    assert set(own) == {"params", "rng_state"}
    assert paths(own["params"]) == paths(variables["params"])
    is_key = lambda s: jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key)
    concrete = lambda s: _rbg(5) if is_key(s) else np.zeros(s.shape, s.dtype)
    rng_state = jax.tree.map(concrete, own["rng_state"])
    merged = {**variables, "rng_state": rng_state}
    _close(jax.jit(functools.partial(apply, train=False))(merged, x), y)
    nnx_train = jax.jit(lambda v, x, key: apply(v, x, train=True, rngs={"dropout": key}))
    c = nnx_train(merged, x, _rbg(0))
    assert not np.allclose(c, y)
    _close(c, nnx_train(merged, x, _rbg(0)))
    assert set(functional(build(dropout=0))[1]) == {"params"}  # rate 0: no stream


# Attributes and registry.


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: models.MLPConv(()), "features"),
        (lambda: models.MLPConv((2,), kernel_size=0), "kernel_size"),
        (lambda: models.MLPConv((2,), padding="FULL"), "padding"),
        (lambda: models.GlobalAvgPoolHead(0), "num_classes"),
        (lambda: models.GlobalAvgPoolHead(3, "pool"), r"kind.*\('conv', 'dense'\)"),
        (lambda: models.GlobalAvgPoolHead(3, "dense", relu=True), "relu"),
        (lambda: models.GlobalAvgPoolHead(3, dropout=1.0), r"dropout.*\[0, 1\)"),
        (lambda: models.FireModule(0, 1, 1), "squeeze"),
        (lambda: models.InceptionModule(1, 1, 1, 1, 1, 0), "pool_proj"),
        (lambda: models.InceptionModule(1, 1, 1, 1, 1, 1, batch_norm=1), "batch_norm"),
        (lambda: models.InceptionFactorized(n=1), "n must"),
        (lambda: models.NIN(widths=((2,), ())), "widths"),
        (lambda: models.NIN(kernel_sizes=(5, 5)), "kernel_sizes"),
        (lambda: models.NIN(dropout=-0.1), "dropout"),
        (lambda: models.VGG(convs=(2, 2)), "convs"),
        (lambda: models.VGG(hidden=0), "hidden"),
        (lambda: models.GoogLeNet(modules=[(1,) * 6] * 8), "modules must be 9"),
        (lambda: models.GoogLeNet(stem=(1, 2)), "stem"),
        (lambda: models.SqueezeNet(version="1_2"), r"version.*\('1_0', '1_1'\)"),
        (lambda: models.SqueezeNet(squeeze_ratio=0.1), "squeeze_ratio"),
        (lambda: models.SqueezeNet(pct_3x3=1.0), r"pct_3x3.*\(0, 1\)"),
        (lambda: models.SqueezeNet(base_e=3), r"pct_3x3 \* e_0"),
    ],
)
def test_bad_attributes_raise_naming_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda r: models.NNXMLPConv(0, (2,), rngs=r), "in_features"),
        (lambda r: models.NNXFireModule(2, 1, 0, 1, rngs=r), "expand1x1"),
        (lambda r: models.NNXGlobalAvgPoolHead(2, 3, "dense", relu=True, rngs=r), "relu"),
        (lambda r: models.NNXNIN(dropout=2, input_shape=(32, 32, 3), rngs=r), "dropout"),
        (lambda r: models.NNXVGG(widths=(), rngs=r), "widths"),
        (lambda r: models.NNXGoogLeNet(kernel_5x5=0, rngs=r), "kernel_5x5"),
        (lambda r: models.NNXSqueezeNet(freq=0, rngs=r), "freq"),
        (lambda r: models.NNXInceptionFactorized(2, factorize="yes", rngs=r), "factorize"),
    ],
)
def test_nnx_bad_attributes_raise_before_building(build, match):
    with pytest.raises(ValueError, match=match):
        build(nnx.Rngs(0))


def test_registry_fixes_the_configuration():
    assert models.get("vgg16").convs == (2, 2, 3, 3, 3)
    cifar = models.get("vgg16_cifar")
    assert (cifar.batch_norm, cifar.hidden) == (True, None)
    assert models.get("squeezenet1_1").version == "1_1"
    with pytest.raises(ValueError, match="does not take"):
        models.get("vgg16", convs=(1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="does not take"):
        models.get("squeezenet1_0", version="1_1")
    assert models.get("googlenet", dropout=0.2).dropout == 0.2  # torchvision's rate

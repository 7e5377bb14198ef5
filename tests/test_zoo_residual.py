"""The "residual" family of the zoo: ImageNet ResNets (basic and bottleneck blocks), stochastic
depth, FractalNet (joins and drop-path) and DenseNet-BC (dense blocks and transitions).

Counts are computed abstractly (no initializer or forward pass of a full-size model runs); the
block properties run on toy widths and inputs with numpy weights, each function jitted whole.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models_util import abstract_counts
from _models_util import assert_nnx_twin
from _models_util import count
from _models_util import params_and_macs
from _models_util import paths
from _models_util import random_like
from _models_util import shapes
from flax import linen as nn
from flax import nnx
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from jaxcomp import models
from jaxcomp.adapt import functional

_IMAGENET = (224, 224, 3)
_CIFAR = (32, 32, 3)
_close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5)


def _variables(module, x_shape, seed=0):
    """Random numpy variables of a linen block for inputs ``x_shape`` (no initializer runs)."""
    tree = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(x_shape))
    return random_like(tree, seed)


def _x(shape, seed=2):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _train(module, variables, x, key=None, **kw):
    """The train-mode output (batch statistics), jitted."""
    rngs = None if key is None else {"dropout": key}
    fn = lambda v, x: module.apply(v, x, train=True, rngs=rngs, mutable=["batch_stats"], **kw)[0]
    return jax.jit(fn)(variables, x)


# --- parameter and mult-add counts against the papers and reference implementations ---------


@pytest.mark.parametrize(
    ("name", "params", "macs"),
    # torchvision's counts (params exact) and mult-adds ("GFLOPS" 1.81 and 4.09 in its docs)
    [("resnet18", 11_689_512, 1.81e9), ("resnet50", 25_557_032, 4.09e9)],
)
def test_imagenet_resnets_have_torchvisions_params_and_mult_adds(name, params, macs):
    got_params, got_macs = params_and_macs(
        models.get(name, num_classes=1000), models.input_shape(name)
    )
    assert got_params == params
    assert abs(got_macs - macs) / macs < 0.05
    if name == "resnet50":
        # the paper's 3.8 G is v1, stride on the first 1x1; the stride on the 3x3 costs more
        assert got_macs > 1.05 * 3.8e9


def test_resnet110_sd_has_the_papers_params_and_stochastic_depth_adds_none():
    # at the natural input: its natural-input test too (test_models.COUNTED)
    got = count(abstract_counts(models.get("resnet110_sd"), _CIFAR)[0]["params"])
    assert got == count(shapes(models.get("resnet110"), _CIFAR)["params"]) == 1_727_962
    assert round(got / 1e6, 1) == 1.7  # Huang et al. table 1 (and the survey's): "1.7M"


def _fractal_count(columns, widths, in_features=3, num_classes=10):
    """The params of the paper's construction: per block, ``columns`` first convolutions from the
    block's input and ``2 ** columns - 1 - columns`` more, each 3x3 without bias and with batch
    norm (scale and offset); a dense classifier on the 1x1x``widths[-1]`` output."""
    total = 0
    for width in widths:
        convs = 2**columns - 1
        total += columns * 9 * in_features * width + (convs - columns) * 9 * width * width
        total += convs * 2 * width
        in_features = width
    return total + widths[-1] * num_classes + num_classes


def test_fractalnet_count_is_the_papers_construction_not_its_38_6m():
    got, macs = params_and_macs(models.get("fractalnet"), models.input_shape("fractalnet"))
    # the paper's 20-layer network: B = 5 blocks of C = 3 columns, 5 * 2 ** (3 - 1) = 20 layers;
    # osmr's pytorchcv fractalnet_cifar10 asserts this same count
    assert got == _fractal_count(3, (64, 128, 256, 512, 512)) == 33_724_618
    # the paper's table 1 prints 38.6M for it (the survey 3.6M): 12.6% more than it has
    assert 0.87 < got / 38.6e6 < 0.88
    assert abs(macs - 0.845e9) / 0.845e9 < 0.01  # ours; the paper gives none
    four = count(shapes(models.get("fractalnet", columns=4), _CIFAR)["params"])
    assert four == _fractal_count(4, (64, 128, 256, 512, 512)) == 76_106_634


def test_densenet_bc_100_12_has_769162_params():
    got, macs = params_and_macs(
        models.get("densenet_bc_100_12"), models.input_shape("densenet_bc_100_12")
    )
    assert got == 769_162
    assert round(got / 1e6, 1) == 0.8  # the paper's table 2
    assert abs(macs - 0.288e9) / 0.288e9 < 0.01  # ours; the paper gives none for CIFAR


# --- NNX twins ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kw", "input_shape", "outputs", "train"),
    [
        # eval outputs only: train-mode batch norm of these blocks is resnet20's (test_models)
        ("resnet18", {"width": 1}, (32, 32, 3), True, False),
        ("resnet50", {"width": 1}, (32, 32, 3), False, False),  # Bottleneck: compared below
        ("fractalnet", {"columns": 2, "widths": (2, 3), "local_drop": 0.0, "global_drop": 0.0},
         (8, 8, 3), True, True),
        ("densenet_bc_100_12", {"depth": 10, "growth_rate": 2}, (8, 8, 3), True, True),
    ],
)  # fmt: skip
def test_nnx_twin_has_the_linen_paths_and_outputs(name, kw, input_shape, outputs, train):
    assert_nnx_twin(name, kw, input_shape, outputs=outputs, train=train)


def _assert_block_twin(linen, make_nnx, x_shape, train=True):
    """An NNX block built abstractly has the linen block's params and batch-stats paths; with
    the same numpy variables both give the same eval (and train) outputs."""
    variables = _variables(linen, (1, *x_shape[1:]))
    apply, own = functional(nnx.eval_shape(make_nnx))
    own = {k: v for k, v in own.items() if k != "rng_state"}
    assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, variables)
    x = _x(x_shape)
    run = lambda fn, **kw: jax.jit(functools.partial(fn, **kw))(variables, x)
    _close(run(apply, train=False), run(linen.apply, train=False))
    if train:
        mutable = ["batch_stats"]
        out, stats = run(apply, train=True, mutable=mutable)
        ref, ref_stats = run(linen.apply, train=True, mutable=mutable)
        _close(out, ref)
        jax.tree.map(_close, stats, dict(ref_stats))


def test_nnx_bottleneck_is_the_linen_bottleneck():
    _assert_block_twin(
        models.Bottleneck(2, strides=2),
        lambda: models.NNXBottleneck(3, 2, strides=2, rngs=nnx.Rngs(0)),
        (2, 8, 8, 3),
    )


def test_nnx_stochastic_basic_block_scales_like_linen_in_eval():
    _assert_block_twin(
        models.BasicBlock(3, strides=2, survival=0.3),
        lambda: models.NNXBasicBlock(2, 3, strides=2, survival=0.3, rngs=nnx.Rngs(0)),
        (2, 8, 8, 2),
        train=False,  # random in training: see the tests of the draws below
    )


def test_stochastic_nnx_models_keep_one_dropout_stream_per_block():
    linen = models.get("resnet110_sd")
    assert (linen.depth, linen.survival) == (110, 0.5)  # Huang et al.: p_L = 0.5
    kw = {"depth": 20, "width": 1, "survival": 0.5}
    model = nnx.eval_shape(lambda: models.NNXResNet(**kw, rngs=nnx.Rngs(0)))
    _, variables = functional(model)
    tree = shapes(models.ResNet(**kw), _CIFAR)
    assert paths(variables["params"]) == paths(tree["params"])
    assert paths(variables["batch_stats"]) == paths(tree["batch_stats"])
    assert sorted(variables["rng_state"]) == sorted(f"BasicBlock_{i}" for i in range(9))
    # the linear decay rule: block l of L = 9 keeps its branch with probability 1 - l / L * 0.5
    survivals = [getattr(model, f"BasicBlock_{i}").survival for i in range(9)]
    np.testing.assert_allclose(survivals, [1 - (i + 1) / 9 * 0.5 for i in range(9)])
    assert survivals[-1] == 0.5
    # survival 1 (the plain ResNets): no RNG state at all, as before stochastic depth existed
    plain = nnx.eval_shape(lambda: models.NNXResNet(depth=8, width=1, rngs=nnx.Rngs(0)))
    assert set(functional(plain)[1]) == {"params", "batch_stats"}


# --- stochastic depth -----------------------------------------------------------------------


def test_stochastic_depth_survival_0_and_1_and_eval_scaling():
    x = _x((3, 4, 4, 2))
    variables = _variables(models.BasicBlock(2), x.shape)
    # survival 0 drops the branch: the block is relu(shortcut(x)), in training and evaluation
    dropped = models.BasicBlock(2, survival=0.0)
    _close(_train(dropped, variables, x, jax.random.key(0)), np.maximum(x, 0))
    _close(jax.jit(dropped.apply)(variables, x), np.maximum(x, 0))
    # survival 1 draws nothing (no "dropout" RNG needed) and is the plain block
    plain = _train(models.BasicBlock(2), variables, x)
    _close(_train(models.BasicBlock(2, survival=1.0), variables, x), plain)
    # evaluation scales the residual branch (BatchNorm_1's output) by the survival probability
    block = models.BasicBlock(2, survival=0.3)
    out, state = jax.jit(
        lambda v, x: block.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    )(variables, x)
    branch = state["intermediates"]["BatchNorm_1"]["__call__"][0]
    _close(out, np.maximum(0.3 * branch + x, 0))


def test_stochastic_depth_drops_the_whole_branch_per_mini_batch():
    x = _x((4, 4, 4, 2))
    variables = _variables(models.BasicBlock(2), x.shape)
    kept = np.asarray(_train(models.BasicBlock(2), variables, x))
    dropped = np.maximum(x, 0)
    block = models.BasicBlock(2, survival=0.5)
    run = jax.jit(lambda key: _train(block, variables, x, key))
    outcomes = []
    for seed in range(12):
        out = np.asarray(run(jax.random.key(seed)))
        # one Bernoulli draw for the mini-batch: every example kept, or every example dropped
        if np.allclose(out, kept, atol=1e-5):
            outcomes.append(True)
        else:
            _close(out, dropped)
            outcomes.append(False)
    assert True in outcomes and False in outcomes


_call = nnx.jit(lambda module, x: module(x))  # one compile per mode: RNG state is traced


def _drops(block, x, calls=12):
    """Which of ``calls`` successive train-mode calls dropped the branch (output relu(x))."""
    return [bool(np.allclose(_call(block, x), np.maximum(x, 0), atol=1e-6)) for _ in range(calls)]


def test_nnx_stochastic_depth_draws_fresh_randomness_after_reseed():
    block = models.NNXBasicBlock(2, 2, survival=0.5, rngs=nnx.Rngs(0))  # NNX: train mode
    x = _x((3, 4, 4, 2))
    nnx.reseed(block, dropout=1)
    first = _drops(block, x)
    assert True in first and False in first  # successive calls draw anew
    nnx.reseed(block, dropout=1)
    assert _drops(block, x) == first  # the same key, the same draws
    nnx.reseed(block, dropout=2)
    assert _drops(block, x) != first  # a new key, new draws
    block.eval()
    assert not any(_drops(block, x, calls=2))  # eval: deterministic, never dropped


# --- bottleneck and ImageNet ResNet structure ------------------------------------------------


def test_bottleneck_widths_stride_on_the_3x3_and_projection_where_the_shape_changes():
    block = models.Bottleneck(2, strides=2)
    x = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
    variables = jax.eval_shape(block.init, jax.random.key(0), x)
    assert paths(variables["params"]) == {
        "Conv_0/kernel": (1, 1, 3, 2),
        "BatchNorm_0/scale": (2,),
        "BatchNorm_0/bias": (2,),
        "Conv_1/kernel": (3, 3, 2, 2),
        "BatchNorm_1/scale": (2,),
        "BatchNorm_1/bias": (2,),
        "Conv_2/kernel": (1, 1, 2, 8),
        "BatchNorm_2/scale": (8,),
        "BatchNorm_2/bias": (8,),
        "Conv_shortcut/kernel": (1, 1, 3, 8),
        "BatchNorm_shortcut/scale": (8,),
        "BatchNorm_shortcut/bias": (8,),
    }
    _, state = jax.eval_shape(
        lambda v, x: block.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
        variables,
        x,
    )
    sizes = {k: v["__call__"][0].shape for k, v in state["intermediates"].items() if "Conv" in k}
    assert sizes["Conv_0"] == (1, 8, 8, 2) and sizes["Conv_1"] == (1, 4, 4, 2)  # v1.5 stride
    # the identity shortcut where the shape is kept: 4 * features channels in, stride 1
    same = jax.eval_shape(models.Bottleneck(2).init, jax.random.key(0), jnp.zeros((1, 4, 4, 8)))
    assert not any("shortcut" in p for p in paths(same["params"]))


@settings(max_examples=6, deadline=None)
@given(
    block=st.sampled_from(["basic", "bottleneck"]),
    stage_sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4),
)
def test_imagenet_resnet_layers_and_downsampling(block, stage_sizes):
    model = models.ImageNetResNet(block=block, stage_sizes=tuple(stage_sizes), width=2)
    side = 4 * 2 ** (len(stage_sizes) - 1)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, side, side, 3)))
    kernels = [s for p, s in paths(variables["params"]).items() if p.endswith("kernel")]
    per_block = 2 if block == "basic" else 3
    shortcuts = sum("shortcut" in p for p in paths(variables["params"]))
    # stem + per_block weighted layers a block + projections + the classifier
    assert len(kernels) == 1 + per_block * sum(stage_sizes) + shortcuts // 3 + 1
    out_features = 2 * 2 ** (len(stage_sizes) - 1) * (1 if block == "basic" else 4)
    assert paths(variables["params"])["Dense_0/kernel"] == (out_features, 1000)
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 3\) is too small"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 2, 2, 3)))


# --- FractalNet --------------------------------------------------------------------------------


def _conv_bn_relu(variables, index, z, train):
    """``relu(bn(conv(z)))`` with a block's ``Conv_{index}``/``BatchNorm_{index}`` variables."""
    params, stats = variables["params"], variables["batch_stats"]
    kernel = params[f"Conv_{index}"]["kernel"]
    y = nn.Conv(kernel.shape[-1], (3, 3), use_bias=False).apply(
        {"params": params[f"Conv_{index}"]}, z
    )
    norm = {"params": params[f"BatchNorm_{index}"], "batch_stats": stats[f"BatchNorm_{index}"]}
    y = nn.BatchNorm(use_running_average=not train).apply(norm, y, mutable=["batch_stats"])[0]
    return jax.nn.relu(y)


def _column(variables, indices, x, train):
    for index in indices:
        x = _conv_bn_relu(variables, index, x, train)
    return x


def test_fractal_block_eval_is_the_expansion_rule_with_mean_joins():
    # two columns: f_2(z) = join(conv(conv(z)), conv(z)), the join an element-wise mean
    block = models.FractalBlock(3, columns=2)
    x = _x((2, 4, 4, 2))
    variables = _variables(block, x.shape)
    ref = lambda v, x: (_column(v, [0, 1], x, False) + _column(v, [2], x, False)) / 2
    out, expected = jax.jit(lambda v, x: (block.apply(v, x), ref(v, x)))(variables, x)
    _close(out, expected)


def test_fractal_global_drop_path_keeps_one_column():
    # three columns: column 0 is Conv_6, column 1 Conv_2 then Conv_5, column 2 Conv_0, 1, 3, 4
    block = models.FractalBlock(2, columns=3, local_drop=0.0)
    x = _x((2, 4, 4, 2))
    variables = _variables(block, x.shape)
    chains = {0: [6], 1: [2, 5], 2: [0, 1, 3, 4]}

    @jax.jit
    def run(v, x):
        outs = [_train(block, v, x, column=c) for c in chains]
        return outs, [_column(v, chains[c], x, True) for c in chains]

    for out, expected in zip(*run(variables, x)):
        _close(out, expected)


def test_fractal_local_drop_path_keeps_at_least_one_join_input():
    block = models.FractalBlock(2, columns=2, local_drop=0.5, global_drop=0.0)
    x = _x((2, 4, 4, 2))
    variables = _variables(block, x.shape)
    deep, shallow = jax.jit(lambda v, x: (_column(v, [0, 1], x, True), _column(v, [2], x, True)))(
        variables, x
    )
    candidates = {"deep": deep, "shallow": shallow, "both": (deep + shallow) / 2}
    run = jax.jit(lambda key: _train(block, variables, x, key))
    seen = set()
    for seed in range(16):
        out = run(jax.random.key(seed))
        # never the empty join (zeros): dropping both inputs keeps one of them
        match = [k for k, v in candidates.items() if np.allclose(out, v, atol=1e-5)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == set(candidates)


def test_nnx_fractalnet_global_drop_path_is_one_column_for_the_whole_network():
    model = models.NNXFractalNet(
        columns=2, widths=(2, 2), local_drop=0.0, global_drop=0.9, input_shape=(8, 8, 3),
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    x = _x((2, 8, 8, 3))

    @nnx.jit
    def networks(model, x):  # every block with the same column (-1: no global drop-path)
        outs = []
        for column in (-1, 0, 1):
            z = x
            for index in range(2):
                z = getattr(model, f"FractalBlock_{index}")(z, column=column)
                z = nn.max_pool(z, (2, 2), strides=(2, 2))
            outs.append(model.Dense_0(z.reshape((2, -1))))
        return outs

    candidates = dict(zip((-1, 0, 1), networks(model, x)))
    draws = []
    for seed in (1, 2, 3, 4, 5, 6, 1):
        nnx.reseed(model, dropout=seed)
        out = _call(model, x)
        draws.append([c for c, v in candidates.items() if np.allclose(out, v, atol=1e-5)])
    assert all(len(d) == 1 for d in draws)  # never a mix of columns across blocks
    assert len({d[0] for d in draws}) >= 2  # fresh draws after each reseed
    assert draws[-1] == draws[0]  # the same key, the same draw


# --- DenseNet ------------------------------------------------------------------------------------


@settings(max_examples=6, deadline=None)
@given(
    layers=st.integers(1, 4),
    growth_rate=st.integers(1, 5),
    in_features=st.integers(1, 6),
    bottleneck=st.booleans(),
)
def test_dense_block_adds_growth_rate_channels_per_layer(
    layers, growth_rate, in_features, bottleneck
):
    block = models.DenseBlock(layers, growth_rate, bottleneck)
    x = jax.ShapeDtypeStruct((2, 4, 4, in_features), jnp.float32)
    variables = jax.eval_shape(block.init, jax.random.key(0), x)
    out = jax.eval_shape(block.apply, variables, x)
    assert out.shape == (2, 4, 4, in_features + layers * growth_rate)
    kernels = {p: s for p, s in paths(variables["params"]).items() if p.endswith("kernel")}
    for layer in range(layers):
        m = in_features + layer * growth_rate  # every earlier feature map is concatenated in
        if bottleneck:  # BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k)
            assert kernels[f"Conv_{2 * layer}/kernel"] == (1, 1, m, 4 * growth_rate)
            assert kernels[f"Conv_{2 * layer + 1}/kernel"] == (3, 3, 4 * growth_rate, growth_rate)
        else:
            assert kernels[f"Conv_{layer}/kernel"] == (3, 3, m, growth_rate)


def test_dense_block_passes_its_input_through_and_transition_compresses():
    x = _x((2, 4, 4, 3))
    block = models.DenseBlock(2, growth_rate=2)
    out = jax.jit(block.apply)(_variables(block, x.shape), x)
    _close(out[..., :3], x)  # concatenation: the input is the first channels, unchanged
    for m, theta in ((7, 0.5), (12, 0.5), (5, 1.0), (9, 0.3)):
        layer = models.Transition(theta)
        z = jax.ShapeDtypeStruct((1, 8, 6, m), jnp.float32)
        variables = jax.eval_shape(layer.init, jax.random.key(0), z)
        assert paths(variables["params"])["Conv_0/kernel"] == (1, 1, m, math.floor(theta * m))
        assert jax.eval_shape(layer.apply, variables, z).shape == (1, 4, 3, math.floor(theta * m))


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 4), bottleneck=st.booleans())
def test_densenet_depth_counts_weighted_layers(n, bottleneck):
    depth = (6 if bottleneck else 3) * n + 4
    model = models.DenseNet(depth=depth, growth_rate=2, bottleneck=bottleneck)
    params = shapes(model, (8, 8, 3))["params"]
    kernels = [s for p, s in paths(params).items() if p.endswith("kernel")]
    assert len(kernels) == depth
    assert paths(params)["Conv_0/kernel"][-1] == (4 if bottleneck else 16)  # 2k, or 16


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: models.BasicBlock(2, survival=1.5), "survival must be a number in"),
        (lambda: models.Bottleneck(2, survival=-0.1), r"survival .*got -0.1"),
        (lambda: models.ResNet(depth=20, survival=True), "survival"),
        (lambda: models.ImageNetResNet(block="wide"), r"block must be one of .*'wide'"),
        (lambda: models.ImageNetResNet(stage_sizes=()), r"stage_sizes .*got \(\)"),
        (lambda: models.ImageNetResNet(width=0), "width must be an integer >= 1, got 0"),
        (lambda: models.FractalNet(columns=0), "columns must be an integer >= 1, got 0"),
        (lambda: models.FractalNet(local_drop=1.0), r"local_drop must be .*\[0, 1\), got 1.0"),
        (lambda: models.FractalNet(widths=(64, 0)), r"widths .*got \(64, 0\)"),
        (lambda: models.FractalBlock(4, global_drop=-1), "global_drop"),
        (lambda: models.DenseNet(depth=99), r"depth must be 6n \+ 4 .*got 99"),
        (lambda: models.DenseNet(growth_rate=0), "growth_rate must be an integer >= 1, got 0"),
        (lambda: models.DenseNet(compression=0.0), r"compression must be .*\(0, 1\], got 0.0"),
        (lambda: models.DenseBlock(0), "layers must be an integer >= 1, got 0"),
        (lambda: models.DenseBlock(2, bottleneck="yes"), "bottleneck must be True or False"),
        (lambda: models.Transition(1.5), "compression"),
    ],
)
def test_bad_attributes_name_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_nnx_constructors_check_like_linen():
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError, match="survival"):
        models.NNXBasicBlock(2, 2, survival=2.0, rngs=rngs)
    with pytest.raises(ValueError, match="survival"):
        models.NNXResNet(depth=8, survival=-1.0, rngs=rngs)
    with pytest.raises(ValueError, match="block must be one of"):
        models.NNXImageNetResNet(block="x", rngs=rngs)
    with pytest.raises(ValueError, match="columns"):
        models.NNXFractalNet(columns=0, rngs=rngs)
    with pytest.raises(ValueError, match="depth must be"):
        models.NNXDenseNet(depth=12, rngs=rngs)
    with pytest.raises(ValueError, match="keeps 0"):
        models.NNXTransition(1, 0.5, rngs=rngs)


@pytest.mark.parametrize(
    ("model", "x_shape", "match"),
    [
        (models.FractalNet(columns=1, widths=(1, 2, 1)), (1, 4, 4, 3), r"\(1, 4, 4, 3\) is too"),
        (models.FractalNet(columns=1, widths=(1,)), (4, 4, 3), r"NHWC .*\(4, 4, 3\)"),
        (models.DenseNet(depth=10, growth_rate=1), (1, 2, 8, 3), r"\(1, 2, 8, 3\) is too small"),
        (models.ImageNetResNet(stage_sizes=(1,), width=1), (8, 8, 3), r"NHWC .*\(8, 8, 3\)"),
    ],
)  # fmt: skip
def test_bad_inputs_name_the_shape(model, x_shape, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(x_shape))

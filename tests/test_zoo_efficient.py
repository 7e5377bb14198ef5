"""The "efficient" family of the zoo: MobileNet v1 (depthwise separable convolutions), ShuffleNet v1
(pointwise group convolutions and the channel shuffle) and flattened networks (1-D filters).

Counts are computed abstractly (no initializer or forward pass of a full-size model runs); the
block properties run on toy widths and inputs.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models_util import assert_nnx_twin
from _models_util import count
from _models_util import params_and_macs
from _models_util import random_like
from _models_util import shapes
from flax import nnx
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from jaxcomp import models
from jaxcomp.adapt import functional
from jaxcomp.analysis import flops

_IMAGENET = (224, 224, 3)
_CIFAR = (32, 32, 3)
_EPS = 1e-5  # flax's BatchNorm epsilon
_DN = ("NHWC", "HWIO", "NHWC")
_close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5)


def _random_variables(module, x, seed=0):
    return random_like(jax.eval_shape(module.init, jax.random.key(0), x), seed)


def _assert_same(module, reference, variables, x):
    """``module.apply(variables, x)`` equals ``reference(variables, x)`` (both in one jit: one
    compile per shape instead of one per eager op)."""
    out, expected = jax.jit(lambda v, x: (module.apply(v, x), reference(v, x)))(variables, x)
    _close(out, expected)
    return out


def _conv(x, kernel, strides=1, groups=1, padding="SAME"):
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (strides, strides),
        padding,
        dimension_numbers=_DN,
        feature_group_count=groups,
    )


def _bn(x, stats, params):
    """Batch norm with running statistics (eval mode), as flax computes it."""
    per_channel = lambda a: jnp.reshape(a, (1, 1, 1, -1))
    inv = per_channel(params["scale"] / jnp.sqrt(stats["var"] + _EPS))
    return (x - per_channel(stats["mean"])) * inv + per_channel(params["bias"])


# ----------------------------------------------------------------------------- MobileNet


def test_mobilenet_v1_has_the_papers_params_and_mult_adds():
    # bias-free convs, BN scale and offset, classifier with bias: Keras's trainable count
    params, macs = params_and_macs(
        models.get("mobilenet_v1", num_classes=1000), models.input_shape("mobilenet_v1")
    )
    assert params == 4_231_976
    assert macs == 568_740_352  # 567.7M in the convolutions + 1,024,000 in the classifier
    assert abs(macs - 569e6) / 569e6 < 0.05


@pytest.mark.parametrize(
    ("alpha", "size", "paper_params", "paper_macs"),
    [  # the paper's tables 6 (width multiplier) and 7 (resolution), rounded there to 0.1M / 1M
        (0.75, 224, 2.6e6, 325e6),
        (0.5, 224, 1.3e6, 149e6),
        (0.25, 224, 0.5e6, 41e6),
        (1.0, 160, 4.2e6, 290e6),
    ],
)
def test_mobilenet_width_and_resolution_multipliers_match_tables_6_and_7(
    alpha, size, paper_params, paper_macs
):
    model = models.MobileNet(num_classes=1000, alpha=alpha)
    params, macs = params_and_macs(model, (size, size, 3))
    assert abs(params - paper_params) <= 0.05e6  # the paper prints one decimal of millions
    assert abs(macs - paper_macs) / paper_macs < 0.05


def test_mobilenet_layers_are_the_papers_table_1():
    params = shapes(models.MobileNet(), _IMAGENET)["params"]
    widths = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    assert params["Conv_0"]["kernel"].shape == (3, 3, 3, 32)
    for i, (m, n) in enumerate(itertools.pairwise(widths)):
        block = params[f"DepthwiseSeparable_{i}"]
        assert block["Conv_0"]["kernel"].shape == (3, 3, 1, m)  # depthwise
        assert block["Conv_1"]["kernel"].shape == (1, 1, m, n)  # pointwise
    assert params["Dense_0"]["kernel"].shape == (1024, 1000)
    assert f"DepthwiseSeparable_{len(widths) - 1}" not in params


@settings(max_examples=6, deadline=None)
@given(
    m=st.integers(1, 8),
    n=st.integers(1, 8),
    size=st.integers(4, 12),
    strides=st.sampled_from([1, 2]),
)
def test_depthwise_separable_mult_adds_are_the_papers_formula(m, n, size, strides):
    block = models.DepthwiseSeparable(n, strides)
    x = jax.ShapeDtypeStruct((1, size, size, m), jnp.float32)
    variables = jax.eval_shape(block.init, jax.random.key(0), x)
    d_f = -(-size // strides)  # the output's side
    d_k = 3
    # equation 5: D_K * D_K * M * D_F * D_F + M * N * D_F * D_F
    expected = d_k * d_k * m * d_f * d_f + m * n * d_f * d_f
    assert flops(lambda v, x: block.apply(v, x), variables, x) == expected
    # against the standard convolution's D_K * D_K * M * N * D_F * D_F (equation 1)
    assert expected / (d_k * d_k * m * n * d_f * d_f) == pytest.approx(1 / n + 1 / 9)


@settings(max_examples=3, deadline=None)
@given(m=st.integers(1, 4), n=st.integers(1, 4), strides=st.sampled_from([1, 2]))
def test_depthwise_separable_is_depthwise_then_pointwise(m, n, strides):
    block = models.DepthwiseSeparable(n, strides)
    x = np.random.default_rng(0).standard_normal((2, 7, 7, m)).astype(np.float32)

    def reference(variables, x):
        p, s = variables["params"], variables["batch_stats"]
        y = _conv(x, p["Conv_0"]["kernel"], strides, groups=m)  # one 3x3 filter per channel
        y = jax.nn.relu(_bn(y, s["BatchNorm_0"], p["BatchNorm_0"]))
        y = _conv(y, p["Conv_1"]["kernel"])  # 1x1 across the channels
        return jax.nn.relu(_bn(y, s["BatchNorm_1"], p["BatchNorm_1"]))

    out = _assert_same(block, reference, _random_variables(block, x), x)
    assert out.shape == (2, -(-7 // strides), -(-7 // strides), n)


# ----------------------------------------------------------------------------- ShuffleNet


def test_shufflenet_v1_g3_counts():
    params, macs = params_and_macs(
        models.get("shufflenet_v1_g3", num_classes=1000), models.input_shape("shufflenet_v1_g3")
    )
    # derived from the paper's table 1 (bias-free convs, BN scale and offset, classifier with
    # bias); megvii's reference ShuffleNetV1 1.0x (group=3) has a bias-free classifier (1000
    # fewer) and lists "1.9M" params and "138M" FLOPs
    assert params == 1_865_728
    assert abs(params - 1000 - 1.9e6) / 1.9e6 < 0.02
    assert macs == 137_460_672
    assert abs(macs - 140e6) / 140e6 < 0.05  # the (and the paper's table 2) figure
    assert abs(macs - 137e6) / 137e6 < 0.01  # the paper's table 1, g = 3


@pytest.mark.parametrize(
    ("groups", "widths", "table_1"),
    [(1, (144, 288, 576), 143e6), (8, (384, 768, 1536), 137e6)],
)
def test_shufflenet_other_groups_match_table_1(groups, widths, table_1):
    model = models.ShuffleNet(num_classes=1000, groups=groups, widths=widths)
    _, macs = params_and_macs(model, _IMAGENET)
    assert abs(macs - table_1) / table_1 < 0.02


@settings(max_examples=6, deadline=None)
@given(groups=st.integers(1, 5), n=st.integers(1, 5))
def test_channel_shuffle_is_the_papers_permutation(groups, n):
    c = groups * n
    x = np.arange(2 * c).reshape((1, 2, c))
    y = np.asarray(models.channel_shuffle(x, groups))
    # reshape to (groups, n), transpose, flatten: output j * groups + i is input i * n + j
    for i in range(groups):
        for j in range(n):
            np.testing.assert_array_equal(y[..., j * groups + i], x[..., i * n + j])
    # its inverse is the shuffle with channels / groups groups
    np.testing.assert_array_equal(models.channel_shuffle(y, n), x)
    # every group of a following group conv sees every group of the one before (n >= groups)
    if n >= groups:
        for k in range(groups):
            sources = {int(ch) % c // n for ch in y[0, 0, k * n : (k + 1) * n]}
            assert sources == set(range(groups))


def test_channel_shuffle_rejects_groups_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match=r"groups.*divides the 6 channels"):
        models.channel_shuffle(jnp.zeros((1, 6)), 4)


@settings(max_examples=4, deadline=None)
@given(groups=st.sampled_from([2, 3, 4]), n=st.integers(1, 3))
def test_group_convolutions_have_one_over_g_of_the_dense_params_and_mult_adds(groups, n):
    features = 4 * groups * n  # bottleneck groups * n, stride-1 unit: input = output channels
    x = jax.ShapeDtypeStruct((1, 6, 6, features), jnp.float32)
    grouped, dense = (
        jax.eval_shape(models.ShuffleUnit(features, 1, g).init, jax.random.key(0), x)["params"]
        for g in (groups, 1)
    )
    for conv in ("Conv_0", "Conv_2"):  # the pointwise group convolutions
        assert count(grouped[conv]) * groups == count(dense[conv])
    assert grouped["Conv_1"]["kernel"].shape == (3, 3, 1, features // 4)  # depthwise
    conv = lambda g: lambda x: _conv(x, jnp.zeros((1, 1, features // g, features)), groups=g)
    assert flops(conv(groups), x) * groups == flops(conv(1), x)


def _shuffle_unit_by_definition(variables, x, *, features, strides, groups, group_first):
    """The unit computed from its definition (paper, figure 2) with lax convolutions."""
    p, s = variables["params"], variables["batch_stats"]
    mid = features // 4
    pad = ((1, 1), (1, 1))
    y = _conv(x, p["Conv_0"]["kernel"], groups=groups if group_first else 1, padding="VALID")
    y = jax.nn.relu(_bn(y, s["BatchNorm_0"], p["BatchNorm_0"]))
    n = mid // groups  # the paper's shuffle as an explicit index: out[j * g + i] = in[i * n + j]
    order = [i * n + j for j in range(n) for i in range(groups)]
    y = y[..., np.asarray(order)]
    y = _bn(_conv(y, p["Conv_1"]["kernel"], strides, mid, pad), s["BatchNorm_1"], p["BatchNorm_1"])
    y = _conv(y, p["Conv_2"]["kernel"], groups=groups, padding="VALID")
    y = _bn(y, s["BatchNorm_2"], p["BatchNorm_2"])
    if strides == 1:
        return jax.nn.relu(x + y)
    window = jax.lax.reduce_window(
        x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 2, 2, 1), [(0, 0), *pad, (0, 0)]
    )
    return jax.nn.relu(jnp.concatenate([window / 9, y], axis=-1))  # zero padding counted


@pytest.mark.parametrize(
    ("in_features", "features", "strides", "group_first"),
    [(3, 12, 2, False), (6, 24, 2, True), (12, 12, 1, True)],
)
def test_shuffle_unit_is_its_definition(in_features, features, strides, group_first):
    unit = models.ShuffleUnit(features, strides, 3, group_first)
    x = np.random.default_rng(1).standard_normal((2, 7, 7, in_features)).astype(np.float32)
    reference = functools.partial(
        _shuffle_unit_by_definition,
        features=features,
        strides=strides,
        groups=3,
        group_first=group_first,
    )
    out = _assert_same(unit, reference, _random_variables(unit, x), x)
    assert out.shape == (2, -(-7 // strides), -(-7 // strides), features)


# ----------------------------------------------------------------------------- flattened


def _flattened_layer_counts(c, f, k, stages, hw):
    """(params, mult-adds) of one flattened layer: per stage L (c -> f) + V + H, with biases."""
    params = macs = 0
    for stage in range(stages):
        c_in = c if stage == 0 else f
        params += (c_in * f + f) + 2 * (k * f + f)
        macs += (c_in * f + 2 * k * f) * hw
    return params, macs


def test_flattened_counts_follow_from_the_configuration():
    params, macs = params_and_macs(models.get("flattened"), models.input_shape("flattened"))
    # Conv_0 5x5 3 -> 96 at 32x32, flattened 96 -> 128 at 16x16 and 128 -> 256 at 8x8 (two
    # LVH stages each), max pool after each, then Dense(256 -> 10)
    p1, m1 = _flattened_layer_counts(96, 128, 5, 2, 16 * 16)
    p2, m2 = _flattened_layer_counts(128, 256, 5, 2, 8 * 8)
    assert params == (75 * 96 + 96) + p1 + p2 + (256 * 10 + 10) == 146_826
    assert macs == 75 * 96 * 32 * 32 + m1 + m2 + 2560 == 21_989_888
    # the same network with full 5x5 convolutions
    full_params = (75 * 96 + 96) + (25 * 96 * 128 + 128) + (25 * 128 * 256 + 256) + 2570
    assert full_params / params > 7.5


def _rank_one_kernel(lateral, vertical, horizontal):
    """``W[y, x, c, f] = lateral[c, f] * vertical[y, f] * horizontal[x, f]`` (HWIO)."""
    return jnp.einsum("cf,yf,xf->yxcf", lateral, vertical, horizontal)


@settings(max_examples=4, deadline=None)
@given(
    c=st.integers(1, 3),
    f=st.integers(1, 3),
    k=st.integers(1, 5),
    size=st.integers(3, 8),
)
def test_flattened_conv_equals_the_full_conv_with_the_rank_one_kernel(c, f, k, size):
    layer = models.FlattenedConv(f, k)
    x = np.random.default_rng(3).standard_normal((2, size, size + 1, c)).astype(np.float32)
    params = _random_variables(layer, x)["params"]
    # the lateral and vertical biases would add a border-dependent offset: zero them, keep the
    # horizontal one as the full convolution's bias
    params = {
        **params,
        **{n: {**params[n], "bias": np.zeros(f, np.float32)} for n in ("Conv_0", "Conv_1")},
    }

    def reference(variables, x):
        p = variables["params"]
        lateral = p["Conv_0"]["kernel"][0, 0]  # (c, f)
        vertical = p["Conv_1"]["kernel"][:, 0, 0, :]  # (k, f)
        horizontal = p["Conv_2"]["kernel"][0, :, 0, :]  # (k, f)
        bias = jnp.reshape(p["Conv_2"]["bias"], (1, 1, 1, f))
        return _conv(x, _rank_one_kernel(lateral, vertical, horizontal)) + bias

    _assert_same(layer, reference, {"params": params}, x)


def test_flattened_conv_with_two_stages_is_two_rank_one_convs():
    layer = models.FlattenedConv(3, 3, stages=2, use_bias=False)
    x = np.random.default_rng(4).standard_normal((1, 6, 6, 2)).astype(np.float32)
    params = _random_variables(layer, x)["params"]

    def reference(variables, y):
        p = variables["params"]
        for stage in range(2):
            lateral = p[f"Conv_{3 * stage}"]["kernel"][0, 0]
            vertical = p[f"Conv_{3 * stage + 1}"]["kernel"][:, 0, 0, :]
            horizontal = p[f"Conv_{3 * stage + 2}"]["kernel"][0, :, 0, :]
            y = _conv(y, _rank_one_kernel(lateral, vertical, horizontal))
        return y

    _assert_same(layer, reference, {"params": params}, x)
    # per stage: C * F lateral + 2 * k * F one-dimensional weights, no bias
    assert count(params) == (2 * 3 + 2 * 3 * 3) + (3 * 3 + 2 * 3 * 3)


# ----------------------------------------------------------------------------- NNX twins, errors


@pytest.mark.parametrize(
    ("name", "kw", "input_shape", "train"),
    [
        ("mobilenet_v1", {"alpha": 1 / 32, "repeats": 0}, (32, 32, 3), False),
        (
            "shufflenet_v1_g3",
            {"widths": (12, 24), "stem": 3, "repeats": (2, 1)},
            (16, 16, 3),
            True,
        ),
        ("flattened", {"widths": (2, 4), "kernel_size": 3}, (8, 8, 3), False),
    ],
)
def test_nnx_twin_has_the_linen_paths_and_outputs(name, kw, input_shape, train):
    # eval-mode outputs of all three; train-mode outputs and batch statistics on ShuffleNet
    # (MobileNet's blocks hold the same BatchNorms; Flattened has none)
    assert_nnx_twin(name, kw, input_shape, train=train)


def test_nnx_blocks_have_the_linen_paths():
    cases = [
        (models.DepthwiseSeparable(4, 2), models.NNXDepthwiseSeparable, (3, 4, 2)),
        (models.ShuffleUnit(12, 2, 3, False), models.NNXShuffleUnit, (3, 12, 2, 3, False)),
        (models.FlattenedConv(4, 3, 2), models.NNXFlattenedConv, (3, 4, 3, 2)),
    ]
    for linen, cls, args in cases:
        tree = jax.eval_shape(linen.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
        block = nnx.eval_shape(lambda cls=cls, args=args: cls(*args, rngs=nnx.Rngs(0)))
        _, own = functional(block)
        assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, tree)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: models.MobileNet(alpha=0), "alpha"),
        (lambda: models.MobileNet(alpha=0.01), "alpha"),
        (lambda: models.MobileNet(alpha=True), "alpha"),
        (lambda: models.MobileNet(repeats=-1), "repeats"),
        (lambda: models.MobileNet(num_classes=0), "num_classes"),
        (lambda: models.DepthwiseSeparable(0), "features"),
        (lambda: models.DepthwiseSeparable(4, 3), "strides"),
        (lambda: models.ShuffleNet(widths=(40, 80, 160)), r"widths\[0\] = 40"),
        (lambda: models.ShuffleNet(repeats=(4, 8)), "repeats"),
        (lambda: models.ShuffleNet(stem=0), "stem"),
        (lambda: models.ShuffleNet(groups=0), "groups"),
        (lambda: models.ShuffleUnit(12, 3), "strides"),
        (lambda: models.Flattened(widths=()), "widths"),
        (lambda: models.Flattened(kernel_size=0), "kernel_size"),
        (lambda: models.Flattened(stages=0), "stages"),
        (lambda: models.FlattenedConv(0), "features"),
        (lambda: models.get("shufflenet_v1_g3", groups=2), "does not take"),
        (
            lambda: models.NNXMobileNet(alpha=0, input_shape=(32, 32, 3), rngs=nnx.Rngs(0)),
            "alpha",
        ),
        (
            lambda: models.NNXShuffleUnit(6, 12, 1, 3, rngs=nnx.Rngs(0)),
            "needs 12 input channels, got 6",
        ),
    ],
)
def test_bad_attributes_raise_naming_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("model", "x", "match"),
    [
        (models.MobileNet(alpha=1 / 32, repeats=0), (32, 32, 3), "NHWC"),
        (models.ShuffleNet(widths=(12, 24, 48), stem=3, repeats=(1, 1, 1)), (16, 16, 3), "NHWC"),
        (models.Flattened(widths=(2, 4, 8), kernel_size=3), (1, 4, 4, 3), "too small"),
        (models.ShuffleUnit(12, 1), (1, 8, 8, 6), r"needs 12 input channels.*\(1, 8, 8, 6\)"),
    ],
)
def test_bad_inputs_raise_with_the_shape(model, x, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(x))

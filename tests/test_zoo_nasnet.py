"""NASNet-A (Zoph et al., arXiv:1707.07012): counts against the paper and Keras, the cells' wiring
against TF-slim's tables (recomputed in numpy), the blocks' definitions, the NNX twin, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models_util import abstract_counts
from _models_util import assert_nnx_twin
from _models_util import count
from _models_util import random_like
from _models_util import shapes
from flax import nnx
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from jaxcomp import models
from jaxcomp.adapt import functional

_IMAGENET = (224, 224, 3)
_TINY = {"num_cells": 1, "penultimate_filters": 96, "stem_filters": 4}
_EPS = 1e-3  # TF-slim's and Keras's batch-norm epsilon for the ImageNet NASNets


@functools.cache
def _mobile():
    return abstract_counts(
        models.get("nasnet_a_mobile", num_classes=1000), models.input_shape("nasnet_a_mobile")
    )


def test_nasnet_a_mobile_has_keras_param_count_and_the_papers_mult_adds():
    variables, macs = _mobile()
    params, stats = count(variables["params"]), count(variables["batch_stats"])
    # Keras's NASNetMobile: "Total params: 5,326,716", "Trainable params: 5,289,978"; its total
    # includes the batch-norm moving means and variances (36,738), which are not parameters.
    assert params == 5_289_978
    assert params + stats == 5_326_716
    assert abs(params - 5.3e6) / 5.3e6 < 0.01  # the paper's table 2: 5.3M
    assert macs == 563_638_816
    assert abs(macs - 564e6) / 564e6 < 0.05  # the paper's table 2: 564M mult-adds


def test_nasnet_a_mobile_follows_tf_slims_cell_sequence():
    params = _mobile()[0]["params"]
    assert params["Conv_0"]["kernel"].shape == (3, 3, 3, 32)
    assert params["Dense_0"]["kernel"].shape == (1056, 1000)
    # (cell, width, how prev = the cell before the previous one is brought to the cell's input):
    # a factorized reduction right after a size change, a 1x1 projection when only the width
    # differs; the first stem cell has no prev (TF-slim's cell_outputs = [None, stem conv]).
    stage = lambda first, width: (
        [(f"NASNetNormalCell_{first}", width, "reduce")]
        + [(f"NASNetNormalCell_{first + i}", width, "project") for i in (1, 2, 3)]
    )
    expected = [
        ("NASNetReductionCell_0", 11, None),
        ("NASNetReductionCell_1", 22, "reduce"),
        *stage(0, 44),
        ("NASNetReductionCell_2", 88, "project"),
        *stage(4, 88),
        ("NASNetReductionCell_3", 176, "project"),
        *stage(8, 176),
    ]
    assert len(params) == 3 + len(expected)
    channels = 32  # the stem convolution's
    for name, width, adjust in expected:
        cell = params[name]
        assert cell["Conv_0"]["kernel"].shape == (1, 1, channels, width)
        assert ("FactorizedReduction_0" in cell) == (adjust == "reduce")
        assert ("Conv_prev" in cell) == (adjust == "project")
        assert sorted(k for k in cell if k.startswith("SeparableConv")) == [
            f"SeparableConv_{i}" for i in range(5)
        ]
        channels = width * (6 if "Normal" in name else 4)
    assert channels == 1056


# numpy references: TF's SAME padding, depthwise convolution, pooling and batch norm


def _same(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, (total // 2, total - total // 2)


def _windows(x, k, s, value):
    """The k*k shifted, strided views of ``x`` padded SAME with ``value``."""
    (oh, ph), (ow, pw) = _same(x.shape[1], k, s), _same(x.shape[2], k, s)
    xp = np.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=value)
    return [xp[:, i::s, j::s][:, :oh, :ow] for i in range(k) for j in range(k)]


def _np_pool(x, kind, s, k=3):
    if kind == "max":
        return np.max(_windows(x, k, s, -np.inf), axis=0)
    ones = np.ones_like(x[..., :1])
    return np.sum(_windows(x, k, s, 0.0), axis=0) / np.sum(_windows(ones, k, s, 0.0), axis=0)


def _np_bn(y, p, stats):
    return (y - stats["mean"]) / np.sqrt(stats["var"] + _EPS) * p["scale"] + p["bias"]


def _np_separable(x, p, stats, s):
    """(ReLU, depthwise, pointwise, batch norm) twice, the first depthwise with stride s."""
    for layer, stride in enumerate((s, 1)):
        dw = p[f"Conv_{2 * layer}"]["kernel"]  # (k, k, 1, c)
        k = dw.shape[0]
        views = _windows(np.maximum(x, 0), k, stride, 0.0)
        x = sum(v * dw[i // k, i % k, 0] for i, v in enumerate(views))
        x = x @ p[f"Conv_{2 * layer + 1}"]["kernel"][0, 0]
        x = _np_bn(x, p[f"BatchNorm_{layer}"], stats[f"BatchNorm_{layer}"])
    return x


def _np_factorized(x, p, stats):
    """TF-slim's factorized_reduction: avg_pool 1x1 stride 2 + conv, the same on the input padded
    at the bottom/right and shifted by one; concatenated; batch norm."""
    shifted = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:]
    path1 = x[:, ::2, ::2] @ p["Conv_0"]["kernel"][0, 0]
    path2 = shifted[:, ::2, ::2] @ p["Conv_1"]["kernel"][0, 0]
    return _np_bn(np.concatenate([path1, path2], -1), p["BatchNorm_0"], stats["BatchNorm_0"])


# TF-slim research/slim/nets/nasnet/nasnet_utils.py, verbatim: operations, hiddenstate_indices,
# used_hiddenstates of NasNetANormalCell and NasNetAReductionCell
_TF_SLIM = {
    "normal": (
        "separable_5x5_2 separable_3x3_2 separable_5x5_2 separable_3x3_2 avg_pool_3x3 none "
        "avg_pool_3x3 avg_pool_3x3 separable_3x3_2 none".split(),
        [0, 1, 1, 1, 0, 1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0, 0, 0],
        1,
    ),
    "reduction": (
        "separable_5x5_2 separable_7x7_2 max_pool_3x3 separable_7x7_2 avg_pool_3x3 "
        "separable_5x5_2 none avg_pool_3x3 separable_3x3_2 max_pool_3x3".split(),
        [0, 1, 0, 1, 0, 1, 3, 2, 2, 0],
        [1, 1, 1, 0, 0, 0, 0],
        2,
    ),
}


def _np_cell(kind, v, x, prev):
    """The cell recomputed from TF-slim's tables (NasNetABaseCell.__call__), in numpy."""
    ops, indices, used, stride = _TF_SLIM[kind]
    p, stats = v["params"], v["batch_stats"]
    if prev is None:
        h1 = x
    elif "FactorizedReduction_0" in p:
        h1 = _np_factorized(
            np.maximum(prev, 0), p["FactorizedReduction_0"], stats["FactorizedReduction_0"]
        )
    elif "Conv_prev" in p:
        h1 = _np_bn(
            np.maximum(prev, 0) @ p["Conv_prev"]["kernel"][0, 0],
            p["BatchNorm_prev"],
            stats["BatchNorm_prev"],
        )
    else:
        h1 = prev
    h0 = _np_bn(
        np.maximum(x, 0) @ p["Conv_0"]["kernel"][0, 0], p["BatchNorm_0"], stats["BatchNorm_0"]
    )
    states, sep = [h0, h1], 0
    for i in range(0, 10, 2):
        pair = []
        for op, j in zip(ops[i : i + 2], indices[i : i + 2]):
            s = stride if j < 2 else 1
            if op.startswith("separable"):
                name = f"SeparableConv_{sep}"
                assert p[name]["Conv_0"]["kernel"].shape[0] == int(op.split("_")[1][0])
                pair.append(_np_separable(states[j], p[name], stats[name], s))
                sep += 1
            elif op == "none":
                pair.append(states[j])
            else:
                pair.append(_np_pool(states[j], op[:3], s))
        states.append(pair[0] + pair[1])
    return np.concatenate([h for h, u in zip(states, used) if not u], axis=-1)


_CELLS = [  # kind, features F, x shape, prev shape (None: no prev), prev's adjustment
    ("normal", 2, (2, 5, 5, 3), (2, 9, 9, 4), "FactorizedReduction_0"),
    ("normal", 2, (2, 4, 4, 3), (2, 4, 4, 2), None),
    ("reduction", 2, (2, 7, 7, 3), None, None),
    ("reduction", 4, (2, 6, 6, 3), (2, 6, 6, 5), "Conv_prev"),
]


@pytest.mark.parametrize(("kind", "features", "x_shape", "prev_shape", "adjust"), _CELLS)
def test_cell_is_tf_slims_wiring_and_outputs_its_unused_states(
    kind, features, x_shape, prev_shape, adjust
):
    cls = models.NASNetNormalCell if kind == "normal" else models.NASNetReductionCell
    cell = cls(features)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    prev = None if prev_shape is None else rng.standard_normal(prev_shape).astype(np.float32)
    v = random_like(jax.eval_shape(cell.init, jax.random.key(0), x, prev), 1)
    assert (adjust or "none") in [*v["params"], "none"]
    out = np.asarray(jax.jit(cell.apply)(v, x, prev))
    # the defining shapes: 6F channels at x's size (normal), 4F at half of it (reduction)
    h, w = x_shape[1:3]
    expected = (
        (2, h, w, 6 * features) if kind == "normal" else (2, -(-h // 2), -(-w // 2), 4 * features)
    )
    assert out.shape == expected
    np.testing.assert_allclose(out, _np_cell(kind, v, x, prev), rtol=1e-4, atol=1e-4)
    if kind == "normal" and adjust is None:
        np.testing.assert_array_equal(out[..., :features], prev)  # h1 = prev is concatenated


@settings(max_examples=6, deadline=None)
@given(
    kind=st.sampled_from(["normal", "reduction"]),
    features=st.sampled_from([2, 4, 6]),
    size=st.integers(1, 9),
    channels=st.integers(1, 5),
    prev=st.sampled_from(["same", "double", "none"]),
)
def test_cell_output_shapes(kind, features, size, channels, prev):
    cls = models.NASNetNormalCell if kind == "normal" else models.NASNetReductionCell
    x = jax.ShapeDtypeStruct((1, size, size + 1, channels), jnp.float32)
    if prev == "none" and kind == "normal":
        prev = "same"
    p = {
        "same": jax.ShapeDtypeStruct((1, size, size + 1, 3), jnp.float32),
        "double": jax.ShapeDtypeStruct((1, 2 * size, 2 * size + 1, 3), jnp.float32),
        "none": None,
    }[prev]
    v = jax.eval_shape(cls(features).init, jax.random.key(0), x, p)
    y = jax.eval_shape(cls(features).apply, v, x, p)
    half = lambda n: -(-n // 2)
    if kind == "normal":
        assert y.shape == (1, size, size + 1, 6 * features)
    else:
        assert y.shape == (1, half(size), half(size + 1), 4 * features)


@pytest.mark.parametrize("strides", [1, 2])
def test_separable_conv_is_relu_depthwise_pointwise_bn_twice(strides):
    block = models.SeparableConv(features=4, kernel_size=3, strides=strides)
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 3)).astype(np.float32)
    v = random_like(jax.eval_shape(block.init, jax.random.key(0), x), 2)
    out = block.apply(v, x)
    ref = _np_separable(x, v["params"], v["batch_stats"], strides)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@settings(max_examples=6, deadline=None)
@given(c=st.integers(1, 6), f=st.integers(1, 6), k=st.sampled_from([3, 5, 7]))
def test_separable_conv_params_are_two_depthwise_pointwise_pairs(c, f, k):
    block = models.SeparableConv(features=f, kernel_size=k)
    params = jax.eval_shape(block.init, jax.random.key(0), jnp.zeros((1, 8, 8, c)))["params"]
    assert count(params) == (k * k * c + c * f + 2 * f) + (k * k * f + f * f + 2 * f)
    assert params["Conv_0"]["kernel"].shape == (k, k, 1, c)  # one filter per channel


@pytest.mark.parametrize("size", [6, 7])
def test_factorized_reduction_concatenates_the_even_and_the_shifted_pixels(size):
    block = models.FactorizedReduction(features=4)
    x = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32)
    v = random_like(jax.eval_shape(block.init, jax.random.key(0), x), 3)
    out = block.apply(v, x)
    assert out.shape == (2, -(-size // 2), -(-size // 2), 4)
    np.testing.assert_allclose(
        out, _np_factorized(x, v["params"], v["batch_stats"]), rtol=1e-4, atol=1e-4
    )


def test_nnx_twin_has_the_linen_paths():
    # outputs are compared cell by cell below: jitting even the tiny network compiles for ~10 CPU
    # s per mode and API
    assert_nnx_twin("nasnet_a_mobile", _TINY, (32, 32, 3), outputs=False)


_TWINS = [  # kind, x shape, prev shape: halved, projected, absent (the first stem cell)
    ("normal", (4, 4, 3), (8, 8, 5)),
    ("normal", (4, 4, 3), (4, 4, 5)),
    ("reduction", (5, 5, 3), None),
]


@pytest.mark.parametrize(("kind", "x_shape", "prev_shape"), _TWINS)
def test_nnx_cell_computes_what_the_linen_cell_does(kind, x_shape, prev_shape):
    linen = (models.NASNetNormalCell if kind == "normal" else models.NASNetReductionCell)(2)
    cls = models.NNXNASNetNormalCell if kind == "normal" else models.NNXNASNetReductionCell
    model = nnx.eval_shape(
        lambda: cls(2, input_shape=x_shape, prev_shape=prev_shape, rngs=nnx.Rngs(0))
    )
    apply, own = functional(model)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, *x_shape)).astype(np.float32)
    prev = None if prev_shape is None else rng.standard_normal((3, *prev_shape)).astype(np.float32)
    tree = jax.eval_shape(linen.init, jax.random.key(0), x, prev)
    assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, tree)
    assert model.out_shape == jax.eval_shape(linen.apply, tree, x, prev).shape[1:]

    def both(fn, variables):
        # one compile per API: the eval output, then the train output and batch statistics
        train = fn(variables, x, prev, train=True, mutable=["batch_stats"])
        return fn(variables, x, prev, train=False), *train

    variables = random_like(tree, 5)
    ours, ref = (
        jax.jit(functools.partial(both, apply))(variables),
        jax.jit(functools.partial(both, linen.apply))(variables),
    )
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5)
    close(ours[0], ref[0])
    close(ours[1], ref[1])
    jax.tree.map(close, ours[2], dict(ref[2]))
    assert not np.allclose(ours[0], ours[1])


def test_nnx_cells_take_shapes_and_check_prev():
    build = lambda cls, **kw: nnx.eval_shape(lambda: cls(2, rngs=nnx.Rngs(0), **kw))
    cell = build(models.NNXNASNetReductionCell, input_shape=(7, 7, 3))
    assert cell.out_shape == (4, 4, 8)
    assert cell.SeparableConv_1.Conv_0.kernel.shape == (7, 7, 1, 3)  # reads the raw input
    with pytest.raises(ValueError, match="prev_shape"):
        build(models.NNXNASNetNormalCell, input_shape=(4, 4, 3), prev_shape=None)
    with pytest.raises(ValueError, match=r"\(5, 5, 3\)"):
        build(models.NNXNASNetNormalCell, input_shape=(4, 4, 3), prev_shape=(5, 5, 3))


def test_bad_attributes_and_inputs_raise_value_error():
    with pytest.raises(ValueError, match=r"penultimate_filters.*96.*100"):
        models.NASNetA(penultimate_filters=100)
    with pytest.raises(ValueError, match="num_cells"):
        models.NASNetA(num_cells=0)
    with pytest.raises(ValueError, match="stem_filters"):
        models.NASNetA(stem_filters=0)
    with pytest.raises(ValueError, match="num_classes"):
        models.get("nasnet_a_mobile", num_classes=0)
    with pytest.raises(ValueError, match="features must be an even"):
        models.FactorizedReduction(features=3)
    with pytest.raises(ValueError, match="kernel_size"):
        models.SeparableConv(features=2, kernel_size=0)
    with pytest.raises(ValueError, match="features"):
        models.NASNetNormalCell(features=0)
    with pytest.raises(ValueError, match="penultimate_filters"):
        models.get("nasnet_a_mobile", api="nnx", key=jax.random.key(0), penultimate_filters=48)
    model = models.NASNetA(**_TINY)
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 3\).*3"):
        shapes(model, (2, 2, 3))
    with pytest.raises(ValueError, match="NHWC"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="too small"):
        models.get(
            "nasnet_a_mobile", api="nnx", key=jax.random.key(0), input_shape=(2, 8, 3), **_TINY
        )
    cell = models.NASNetNormalCell(2)
    x = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match=r"\(4, 4, 3\).*\(6, 6, 3\)"):
        jax.eval_shape(cell.init, jax.random.key(0), x, jnp.zeros((1, 6, 6, 3)))
    with pytest.raises(ValueError, match="even"):
        jax.eval_shape(
            models.NASNetNormalCell(3).init, jax.random.key(0), x, jnp.zeros((1, 8, 8, 3))
        )

"""Tests for jaxcomp.analysis: counts, storage bits, MACs and measured latency."""

import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from jax import lax

from jaxcomp import analysis
from jaxcomp.core import MaskedNode
from jaxcomp.errors import SelectionError

SETTINGS = settings(max_examples=12, deadline=None)


def _sds(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _linen_shapes(module, x_shape):
    """The variables of a linen module as ShapeDtypeStructs (no compute, no compilation)."""
    return jax.eval_shape(module.init, jax.random.key(0), _sds(*x_shape))


# ----------------------------------------------------------------------------- counts


@pytest.mark.parametrize(("d_in", "d_out"), [(1, 1), (3, 5), (7, 2)])
def test_param_count_linen_dense(d_in, d_out):
    variables = nn.Dense(d_out).init(jax.random.key(0), jnp.ones((1, d_in)))
    assert analysis.param_count(variables["params"]) == d_in * d_out + d_out
    assert analysis.param_count(variables) == d_in * d_out + d_out


def test_param_count_nnx_state_matches_linen():
    _, state = nnx.split(nnx.Linear(3, 5, rngs=nnx.Rngs(0)))
    linen = nn.Dense(5).init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    assert analysis.param_count(state) == 3 * 5 + 5
    assert analysis.param_count(state) == analysis.param_count(linen)


def test_param_count_skips_masked_nodes_and_accepts_shapes():
    tree = {"a": {"kernel": jnp.ones((2, 3)), "bias": MaskedNode()}, "b": _sds(4, 4)}
    assert analysis.param_count(tree) == 6 + 16


@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
@SETTINGS
def test_nonzero_count_is_exact(shape, frac, seed):
    size = math.prod(shape)
    k = round(frac * size)
    rng = np.random.default_rng(seed)
    # values bounded away from zero, then exactly k of them zeroed
    flat = rng.uniform(0.5, 2.0, size) * rng.choice([-1.0, 1.0], size)
    flat[rng.permutation(size)[:k]] = 0.0
    tree = {"w": jnp.asarray(flat.reshape(shape), jnp.float32), "b": jnp.ones(3)}
    assert analysis.nonzero_count(tree) == size - k + 3
    assert analysis.sparsity(tree) == pytest.approx(k / (size + 3))
    rows = analysis.per_leaf(tree)
    by_path = {r["path"]: r for r in rows}
    assert by_path["w"]["shape"] == tuple(shape)
    assert by_path["w"]["size"] == size
    assert by_path["w"]["nonzeros"] == size - k
    assert sum(r["nonzeros"] for r in rows) == analysis.nonzero_count(tree)


def test_per_leaf_paths_match_nnx_and_linen():
    _, state = nnx.split(nnx.Linear(3, 5, rngs=nnx.Rngs(0)))
    linen = nn.Dense(5).init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    rows = analysis.per_leaf(state)
    assert {r["path"] for r in rows} == {"kernel", "bias"}
    assert {r["path"] for r in rows} == {r["path"] for r in analysis.per_leaf(linen)}
    assert {r["path"]: r["shape"] for r in rows}["kernel"] == (3, 5)


def test_nonzero_count_rejects_traced_and_shape_only():
    with pytest.raises(ValueError, match="traced"):
        jax.jit(lambda t: analysis.nonzero_count(t))({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="ShapeDtypeStruct"):
        analysis.nonzero_count({"w": _sds(3)})
    with pytest.raises(ValueError, match="no array elements"):
        analysis.sparsity({})


def test_size_bytes_int_and_rules():
    tree = {
        "Dense_0": {"kernel": jnp.ones((4, 8)), "bias": jnp.ones(8)},
        "Dense_1": {"kernel": jnp.ones((8, 2)), "bias": jnp.ones(2)},
    }
    total = 32 + 8 + 16 + 2
    assert analysis.size_bytes(tree) == total * 4
    assert analysis.size_bytes(tree, bits=8) == total
    # first match wins: Dense_1's kernel is 2 bits, other kernels 4, biases the 32-bit default
    rules = [("Dense_1/kernel", 2), ("kernel", 4)]
    expected = (32 * 4 + 16 * 2 + (8 + 2) * 32) / 8
    assert analysis.size_bytes(tree, bits=rules) == expected


def test_size_bytes_rejects_bad_bits():
    tree = {"w": jnp.ones(4)}
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="bits"):
            analysis.size_bytes(tree, bits=bad)
    with pytest.raises(ValueError, match="bits"):
        analysis.size_bytes(tree, bits=[("w", 0)])
    with pytest.raises(SelectionError, match="match no leaf"):
        analysis.size_bytes(tree, bits=[("nope", 8)])


# ----------------------------------------------------------------------------- flops


@given(b=st.integers(1, 6), d_in=st.integers(1, 9), d_out=st.integers(1, 9))
@SETTINGS
def test_flops_dense_layer(b, d_in, d_out):
    model = nn.Dense(d_out)
    variables = _linen_shapes(model, (1, d_in))
    macs = analysis.flops(model.apply, variables, _sds(b, d_in))
    assert macs == b * d_in * d_out


def test_flops_dot_general_batch_dims():
    macs = analysis.flops(
        lambda a, c: jnp.einsum("bij,bjk->bik", a, c), _sds(3, 4, 5), _sds(3, 5, 6)
    )
    assert macs == 3 * 4 * 5 * 6


def _out_len(n, k, s, padding):
    return -(-n // s) if padding == "SAME" else (n - k) // s + 1


@given(
    b=st.integers(1, 2),
    h=st.integers(3, 8),
    w=st.integers(3, 8),
    kh=st.integers(1, 3),
    kw=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.sampled_from(["SAME", "VALID"]),
    cin=st.sampled_from([2, 4]),
    mult=st.integers(1, 3),
    depthwise=st.booleans(),
)
@SETTINGS
def test_flops_flax_conv_closed_form(b, h, w, kh, kw, stride, padding, cin, mult, depthwise):
    groups = cin if depthwise else 1
    cout = cin * mult
    model = nn.Conv(cout, (kh, kw), strides=stride, padding=padding, feature_group_count=groups)
    variables = _linen_shapes(model, (1, h, w, cin))
    macs = analysis.flops(model.apply, variables, _sds(b, h, w, cin))
    oh, ow = _out_len(h, kh, stride, padding), _out_len(w, kw, stride, padding)
    assert macs == oh * ow * kh * kw * (cin // groups) * cout * b


def test_flops_conv_reads_dimension_numbers():
    # NCHW input, OIHW kernel: axes differ from flax's NHWC/HWIO
    x, k = _sds(2, 3, 7, 6), _sds(5, 3, 3, 2)
    fn = lambda x, k: lax.conv_general_dilated(
        x, k, (2, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    oh, ow = (7 - 3) // 2 + 1, 6 - 2 + 1
    assert analysis.flops(fn, x, k) == 2 * 5 * oh * ow * 3 * 3 * 2


def test_flops_conv_batch_group_count():
    # batch_group_count=2: a batch of 4 is split in two groups, each convolved with half the
    # output features; output (2, 6, oh, ow), each element sums over cin * kh * kw
    x, k = _sds(4, 3, 5, 5), _sds(6, 3, 2, 2)
    fn = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "VALID", batch_group_count=2)
    assert analysis.flops(fn, x, k) == 2 * 6 * 4 * 4 * 3 * 2 * 2


def _matmul(a):
    return a @ a


def test_flops_inside_nested_jit_remat_and_custom_rules():
    x = _sds(4, 4)
    base = analysis.flops(_matmul, x)
    assert base == 4 * 4 * 4
    nested = lambda a: jax.jit(lambda b: jax.jit(_matmul)(b) + 1.0)(a)
    assert analysis.flops(nested, x) == base
    assert analysis.flops(jax.checkpoint(_matmul), x) == base

    @jax.custom_vjp
    def vjp_fn(a):
        return _matmul(a)

    vjp_fn.defvjp(lambda a: (vjp_fn(a), a), lambda a, g: (g,))
    assert analysis.flops(vjp_fn, x) == base

    jvp_fn = jax.custom_jvp(_matmul)
    jvp_fn.defjvp(lambda primals, tangents: (_matmul(*primals), tangents[0]))
    assert analysis.flops(jvp_fn, x) == base


@pytest.mark.parametrize("length", [1, 3, 7])
def test_flops_scan_multiplies_by_length(length):
    fn = lambda a: lax.scan(lambda c, _: (_matmul(c), None), a, None, length=length)[0]
    assert analysis.flops(fn, _sds(4, 4)) == length * 4 * 4 * 4
    static_loop = lambda a: lax.fori_loop(0, length, lambda i, c: _matmul(c), a)
    assert analysis.flops(static_loop, _sds(4, 4)) == length * 4 * 4 * 4


def test_flops_cond_takes_max_branch_and_while_counts_body_once():
    x = _sds(4, 4)
    fn = lambda a: lax.cond(a.sum() > 0, lambda b: _matmul(_matmul(b)), lambda b: b, a)
    assert analysis.flops(fn, x) == 2 * 4 * 4 * 4
    loop = lambda a: lax.while_loop(lambda c: c.sum() < 100.0, _matmul, a)
    assert analysis.flops(loop, x) == 4 * 4 * 4


def test_flops_accepts_kwargs_and_ignores_elementwise():
    fn = lambda x, *, w: jax.nn.relu(x @ w + 1.0) * 2.0
    assert analysis.flops(fn, _sds(2, 3), w=_sds(3, 5)) == 2 * 3 * 5
    assert analysis.flops(lambda x: jnp.tanh(x) * x + 1.0, _sds(8, 8)) == 0
    with pytest.raises(ValueError, match="callable"):
        analysis.flops(3, _sds(2))


class _LeNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (5, 5), padding="SAME")(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(120)(x))
        x = nn.relu(nn.Dense(84)(x))
        return nn.Dense(10)(x)


def test_flops_lenet_is_sum_of_layers():
    b = 2
    model = _LeNet()
    variables = _linen_shapes(model, (1, 28, 28, 1))
    macs = analysis.flops(model.apply, variables, _sds(b, 28, 28, 1))
    conv1 = 28 * 28 * 5 * 5 * 1 * 6
    conv2 = 10 * 10 * 5 * 5 * 6 * 16  # 14x14 after pooling, VALID 5x5 -> 10x10
    dense = 5 * 5 * 16 * 120 + 120 * 84 + 84 * 10
    assert macs == b * (conv1 + conv2 + dense)


def test_summary_is_consistent():
    model = nn.Dense(4)
    variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
    s = analysis.summary(model.apply, variables, jnp.ones((5, 3)))
    assert s["params"] == 3 * 4 + 4
    assert s["nonzeros"] == analysis.nonzero_count(variables["params"])
    assert s["sparsity"] == pytest.approx(1.0 - s["nonzeros"] / s["params"])
    assert s["bytes_fp32"] == 4 * s["params"]
    assert s["flops"] == 5 * 3 * 4


# ----------------------------------------------------------------------------- latency


def test_latency_positive_and_ordered():
    x = jnp.ones((16, 16))
    for fn in (_matmul, jax.jit(_matmul)):
        res = analysis.latency(fn, x, repeats=5, warmup=1)
        assert res["repeats"] == 5
        assert 0.0 < res["min_s"] <= res["median_s"] <= res["p90_s"]
        assert res["mean_s"] >= res["min_s"]


def test_latency_rejects_bad_arguments():
    x = jnp.ones(3)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="repeats"):
            analysis.latency(_matmul, x, repeats=bad)
    with pytest.raises(ValueError, match="warmup"):
        analysis.latency(_matmul, x, warmup=-1)
    with pytest.raises(ValueError, match="rounds"):
        analysis.compare_latency({"a": _matmul}, x, rounds=0)
    with pytest.raises(ValueError, match="fns"):
        analysis.compare_latency({}, x)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="pipeline"):
            analysis.compare_latency({"a": _matmul}, x, pipeline=bad)


class _SleepyCounter:
    """A 'jitted' function (it has ``lower``) that sleeps 2 ms per call and counts its calls."""

    def __init__(self):
        self.calls = 0

    def lower(self, *args):  # marks it as already jitted for compare_latency
        raise NotImplementedError

    def __call__(self, x):
        self.calls += 1
        time.sleep(0.002)
        return x


def test_compare_latency_pipeline_times_per_call():
    f = _SleepyCounter()
    res = analysis.compare_latency(
        {"f": f}, jnp.ones(3), repeats=4, warmup=1, rounds=2, pipeline=10
    )
    # 4 samples of 10 calls each after one warm-up call
    assert f.calls == 1 + 4 * 10
    assert res["f"]["repeats"] == 4
    # each sample is divided by the calls in it: about one 2 ms sleep, far from ten
    assert 0.002 <= res["f"]["median_s"] < 0.015


def test_compare_latency_interleaves_and_reports_ratios():
    x = np.ones((16, 16), np.float32)
    fns = {"mm": _matmul, "add": lambda a: a + a, "mm_jit": jax.jit(_matmul)}
    res = analysis.compare_latency(fns, x, repeats=7, warmup=1, rounds=3)
    assert list(res) == ["mm", "add", "mm_jit"]
    assert res["mm"]["ratio"] == 1.0
    for s in res.values():
        assert s["repeats"] == 7
        assert s["median_s"] > 0.0
        assert s["ratio"] == pytest.approx(s["median_s"] / res["mm"]["median_s"])
        assert s["ratio_of_min"] == pytest.approx(s["min_s"] / res["mm"]["min_s"])

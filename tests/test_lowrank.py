"""jaxcomp.lowrank: the mathematics of each factorization, rank selection, bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxcomp as jc
from jaxcomp import lowrank
from jaxcomp.adapt import ConvSpec
from jaxcomp.adapt import depthwise
from jaxcomp.adapt import grouped_conv
from jaxcomp.adapt import run_factorized

KEY = jax.random.key(0)


class ConvNet(nn.Module):
    """Convolutions of every geometry the fast path handles, then two dense layers."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (3, 3), padding="SAME")(x)
        x = nn.Conv(8, (3, 3), strides=2, padding="VALID", use_bias=False)(x)
        x = nn.Conv(8, (3, 3), padding=((1, 0), (2, 1)), kernel_dilation=(1, 2))(x)
        x = nn.Conv(4, (1, 1))(x)
        x = jnp.reshape(x, (x.shape[0], -1))
        x = nn.relu(nn.Dense(12)(x))
        return nn.Dense(5)(x)


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _random_params(model, x, seed=0):
    """Params of ``model`` filled from numpy (compiling flax's initializers costs seconds)."""
    shapes = jax.eval_shape(model.init, KEY, x)["params"]
    rng = np.random.default_rng(seed)
    fill = lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1])), s.dtype)
    return jax.tree.map(fill, shapes)


@pytest.fixture(scope="module")
def net():
    model = ConvNet()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 11, 12, 3)), jnp.float32)
    params = _random_params(model, x)
    return model, params, x, jax.jit(model.apply)({"params": params}, x)


@pytest.fixture(scope="module")
def fast_apply(net):
    return jax.jit(run_factorized(net[0].apply))


def _max_err(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def _check_exact(t, net, fast_apply, atol=2e-5):
    """apply(init(p)) == p, and the adapter running the factors == the dense model."""
    _, params, x, ref = net
    c, s = t.init(params)
    assert _max_err(t.apply(c, s), params) < atol
    fin = t.finalize(c, s)
    assert any(jc.is_compressed(n) for n in jax.tree.leaves(fin, is_leaf=jc.is_compressed))
    np.testing.assert_allclose(fast_apply({"params": fin}, x), ref, atol=10 * atol, rtol=1e-4)
    return c, s


_BICLUSTER_WHERE = [("Conv_[12]/kernel", True)]
FULL_RANK = [
    ("svd", lambda: lowrank.svd(energy=1.0)),
    ("jaderberg", lambda: lowrank.jaderberg(energy=1.0)),
    ("tucker2", lambda: lowrank.tucker2(energy=1.0)),
    ("bicluster", lambda: lowrank.bicluster(groups_in=1, groups_out=2, rank=4, key=KEY,
                                            where=_BICLUSTER_WHERE)),
    ("predicted", lambda: lowrank.predicted(rank=12, where=[("Dense_1/kernel", True)])),
]  # fmt: skip


@pytest.mark.parametrize("name,factory", FULL_RANK, ids=[n for n, _ in FULL_RANK])
def test_full_rank_rewrite_reproduces_dense(name, factory, net, fast_apply):
    _check_exact(factory(), net, fast_apply)


def _exact_cp_kernel(shape, rank, seed):
    factors = [_normal(seed + i, (d, rank)) for i, d in enumerate(shape)]
    return lowrank.cp_reconstruct(tuple(factors))


def _check_recovers_conv_1(t, kernel, net, fast_apply):
    """``t`` rebuilds ``kernel`` put in ``Conv_1``, and the adapter runs it as the dense model."""
    model, params, x, _ = net
    params = {**params, "Conv_1": {"kernel": kernel}}
    ref = model.apply({"params": params}, x)
    c, s = t.init(params)
    rebuilt = t.apply(c, s)["Conv_1"]["kernel"]
    assert float(jnp.linalg.norm(rebuilt - kernel) / jnp.linalg.norm(kernel)) < 1e-3
    out = fast_apply({"params": t.finalize(c, s)}, x)
    np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2 * float(jnp.abs(ref).max()))


def test_cp_recovers_an_exact_cp_kernel(net, fast_apply):
    kernel = _exact_cp_kernel((3, 3, 6, 8), 3, 5)
    t = lowrank.cp(rank=3, iterations=200, key=KEY, where=[("Conv_1/kernel", True)])
    _check_recovers_conv_1(t, kernel, net, fast_apply)


def test_monochromatic_reproduces_a_monochromatic_kernel(net, fast_apply):
    model, params, x, _ = net
    colors = _normal(2, (3, 2))  # two colors
    spatial = _normal(3, (3, 3, 6))
    assign = jnp.array([0, 1, 1, 0, 1, 0])
    kernel = spatial[:, :, None, :] * colors[:, assign][None, None]
    params = {**params, "Conv_0": {**params["Conv_0"], "kernel": kernel}}
    ref = model.apply({"params": params}, x)
    t = lowrank.monochromatic(colors=2, key=KEY)
    c, s = t.init(params)
    assert _max_err(t.apply(c, s), params) < 1e-5
    fin = t.finalize(c, s)
    node = fin["Conv_0"]["kernel"]
    assert node.colors.shape == (3, 2) and len(set(np.asarray(node.assign).tolist())) == 2
    np.testing.assert_allclose(fast_apply({"params": fin}, x), ref, atol=1e-4, rtol=1e-4)


def test_separable_basis_recovers_a_separable_bank(net, fast_apply):
    vert, hor = _normal(4, (3, 2)), _normal(5, (3, 2))
    coeffs = _normal(6, (6, 2, 8))
    kernel = jnp.einsum("im,jm,cmf->ijcf", vert, hor, coeffs)
    t = lowrank.separable_basis(rank=2, iterations=100, key=KEY, where=[("Conv_1/kernel", True)])
    _check_recovers_conv_1(t, kernel, net, fast_apply)


@settings(max_examples=15, deadline=None)
@given(
    m=st.sampled_from([2, 5, 9]),
    n=st.sampled_from([3, 8]),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_svd_error_is_the_discarded_spectrum(m, n, frac, seed):
    w = _normal(seed, (m, n))
    r = 1 + int(frac * (min(m, n) - 1))
    t = lowrank.svd(rank=r)
    c, s = t.init({"Dense_0": {"kernel": w}})
    err = jnp.linalg.norm(t.apply(c, s)["Dense_0"]["kernel"] - w)
    sv = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)
    np.testing.assert_allclose(float(err), np.sqrt(np.sum(sv[r:] ** 2)), atol=1e-4, rtol=1e-3)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), frac=st.floats(0.0, 1.0))
def test_jaderberg_error_is_the_discarded_spectrum_of_the_reshaped_kernel(seed, frac):
    w = _normal(seed, (3, 3, 4, 5))
    m = np.asarray(jnp.transpose(w, (0, 2, 1, 3)).reshape(12, 15), np.float64)
    sv = np.linalg.svd(m, compute_uv=False)
    k = 1 + int(frac * 11)
    t = lowrank.jaderberg(rank=k)
    c, s = t.init({"Conv_0": {"kernel": w}})
    node = c["Conv_0"]["kernel"]
    assert node.vertical.shape == (3, 1, 4, k) and node.horizontal.shape == (1, 3, k, 5)
    err = float(jnp.linalg.norm(t.apply(c, s)["Conv_0"]["kernel"] - w))
    np.testing.assert_allclose(err, np.sqrt(np.sum(sv[k:] ** 2)), atol=1e-4, rtol=1e-3)


def _cp_error(w, rank, iterations, key=KEY):
    fs = lowrank.cp_als(w, rank, iterations=iterations, key=key)
    return float(jnp.linalg.norm(lowrank.cp_reconstruct(fs) - w) / jnp.linalg.norm(w))


@pytest.mark.slow
def test_cp_error_falls_as_rank_rises():
    # the shape and rank 6 of the sweep test below: that ALS program compiles once for both
    w = _normal(7, (3, 3, 5, 6))
    errors = [_cp_error(w, r, 60) for r in (1, 6, 30)]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[0] > 0.5 and errors[-1] < 0.2


def test_cp_als_error_does_not_increase_over_sweeps():
    w = _normal(8, (3, 3, 5, 6))
    errors = [_cp_error(w, 6, n) for n in (1, 2, 4, 8, 16, 32)]
    assert all(b <= a + 1e-5 for a, b in itertools.pairwise(errors)), errors


def test_tucker2_hosvd_orthonormal_and_hooi_no_worse():
    w = _normal(9, (3, 3, 6, 8))
    first, core, last = lowrank.tucker2_decompose(w, 3, 4)
    np.testing.assert_allclose(first.T @ first, jnp.eye(3), atol=1e-5)
    np.testing.assert_allclose(last @ last.T, jnp.eye(4), atol=1e-5)
    err0 = jnp.linalg.norm(lowrank.Tucker2(first, core, last).to_dense() - w)
    refined = lowrank.Tucker2(*lowrank.tucker2_decompose(w, 3, 4, iterations=5))
    assert float(jnp.linalg.norm(refined.to_dense() - w)) <= float(err0) + 1e-5


def test_bicluster_orders_are_permutations_and_blocks_have_rank_k():
    w = _normal(10, (3, 3, 8, 6))
    t = lowrank.bicluster(groups_in=2, groups_out=3, rank=2, key=KEY)
    c, s = t.init({"Conv_0": {"kernel": w}})
    node = t.finalize(c, s)["Conv_0"]["kernel"]
    assert sorted(np.asarray(node.perm_in).tolist()) == list(range(8))
    assert sorted(np.asarray(node.inv_out).tolist()) == list(range(6))
    assert node.u.shape == (3, 3, 4, 2 * 3 * 2) and node.v.shape == (2, 3, 2, 2)
    assert isinstance(c["Conv_0"]["kernel"].perm_in, jc.core.MaskedNode)  # not trained
    # each (input group, output group) block of the rebuilt kernel has rank <= 2
    dense = np.asarray(node.to_dense())
    perm_out = np.argsort(np.asarray(node.inv_out))
    wp = dense[:, :, np.asarray(node.perm_in)][..., perm_out]
    for g in range(2):
        for h in range(3):
            block = wp[:, :, 4 * g : 4 * g + 4, 2 * h : 2 * h + 2].reshape(36, 2)
            assert np.linalg.matrix_rank(block, tol=1e-4) <= 2


@settings(max_examples=20, deadline=None)
@given(
    sv=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=12),
    energy=st.floats(0.01, 1.0),
)
def test_rank_for_energy_is_the_smallest_rank_keeping_the_energy(sv, energy):
    s = np.sort(np.asarray(sv))[::-1]
    r = lowrank.rank_for_energy(s, energy)
    kept = lambda k: np.sum(s[:k] ** 2) / np.sum(s**2)
    assert kept(r) >= energy - 1e-6
    assert r == 1 or kept(r - 1) < energy


def test_energy_and_compression_choose_per_layer_ranks():
    u = jnp.linalg.qr(_normal(1, (20, 20)))[0]
    v = jnp.linalg.qr(_normal(2, (10, 10)))[0]
    s = jnp.array([10.0, 5.0, 1.0, 0.5] + [0.01] * 6)
    w = (u[:, :10] * s[None, :]) @ v  # singular values s
    params = {"Dense_0": {"kernel": w}}
    c, _ = lowrank.svd(energy=0.995).init(params)  # 125 / 126.25 < 0.995 <= 126 / 126.25
    assert c["Dense_0"]["kernel"].u.shape == (20, 3)
    c, _ = lowrank.svd(compression=3.0).init(params)
    r = c["Dense_0"]["kernel"].u.shape[1]
    assert r * 30 <= 200 / 3 < (r + 1) * 30
    c, _ = lowrank.svd(rank=[("Dense", 4)]).init(params)
    assert c["Dense_0"]["kernel"].v.shape == (4, 10)


def test_tucker2_compression_meets_the_budget():
    w = _normal(3, (3, 3, 16, 32))
    c, _ = lowrank.tucker2(compression=4.0).init({"Conv_0": {"kernel": w}})
    node = c["Conv_0"]["kernel"]
    assert jc.analysis.param_count(node) <= w.size / 4


def test_sensitivity_scan_keeps_the_smallest_rank_within_tolerance():
    u = jnp.linalg.qr(_normal(1, (12, 12)))[0]
    s = jnp.array([8.0, 4.0, 2.0, 1.0, 0.1, 0.05, 0.02, 0.01])
    w = (u[:, :8] * s[None, :]) @ jnp.eye(8)
    params = {"a": {"kernel": w}, "b": {"kernel": jnp.eye(6)}}
    target = params

    def evaluate(p):
        return -float(sum(jnp.sum((p[k]["kernel"] - target[k]["kernel"]) ** 2) for k in p))

    scan = lowrank.sensitivity_scan(
        lowrank.svd, params, evaluate, candidates=[1, 2, 4, 8], tolerance=0.02
    )
    assert scan.baseline == 0.0
    assert scan.ranks["a/kernel"] == 4  # discarding 0.1^2 + 0.05^2 + ... = 0.0130 <= 0.02
    assert set(scan.scores["b/kernel"]) == {1, 2, 4}  # rank 8 exceeds min(6, 6)
    assert scan.ranks["b/kernel"] == 4  # no candidate is within tolerance: the largest one


def test_adapter_runs_fewer_macs(net):
    model, params, x, _ = net
    t = lowrank.jaderberg(rank=2)
    c, s = t.init(params)
    fin = t.finalize(c, s)
    dense = jc.analysis.flops(lambda x: model.apply({"params": params}, x), x)
    fast = jc.analysis.flops(lambda x: run_factorized(model.apply)({"params": fin}, x), x)
    assert fast < dense / 2


def test_svd_dense_layer_macs_are_r_times_m_plus_n():
    model = nn.Dense(30)
    v = {"params": _random_params(model, jnp.ones((1, 40)))}
    t = lowrank.svd(rank=5)
    c, s = t.init(v["params"])
    fn = lambda x: run_factorized(model.apply)({"params": t.finalize(c, s)}, x)
    assert jc.analysis.flops(fn, jnp.ones((8, 40))) == 8 * 5 * (40 + 30)


def test_adapter_falls_back_for_circular_padding_and_keeps_extra_batch_axes():
    model = nn.Conv(4, (3, 3), padding="CIRCULAR")
    x = _normal(0, (2, 3, 6, 6, 2))  # two batch axes
    v = {"params": _random_params(model, x)}
    t = lowrank.tucker2(rank=(2, 4))
    c, s = t.init(v["params"])
    ref = model.apply({"params": t.apply(c, s)}, x)
    out = run_factorized(model.apply)({"params": t.finalize(c, s)}, x)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    conv = nn.Conv(4, (3, 3))
    v = {"params": _random_params(conv, x)}
    c, s = t.init(v["params"])
    out = run_factorized(conv.apply)({"params": t.finalize(c, s)}, x)
    assert out.shape == (2, 3, 6, 6, 4)
    np.testing.assert_allclose(out, conv.apply({"params": t.apply(c, s)}, x), atol=1e-5)


def test_adapter_leaves_a_custom_dot_general_to_the_layer():
    calls = []

    def dot_general(*args, **kwargs):
        calls.append(1)
        return jax.lax.dot_general(*args, **kwargs)

    model = nn.Dense(4, dot_general=dot_general)
    x = _normal(0, (2, 6))
    params = _random_params(nn.Dense(4), x)
    t = lowrank.svd(rank=2)
    c, s = t.init(params)
    out = run_factorized(model.apply)({"params": t.finalize(c, s)}, x)
    assert calls == [1]  # the layer's own product ran, on the rebuilt kernel
    np.testing.assert_allclose(out, model.apply({"params": t.apply(c, s)}, x), atol=1e-6)


def test_lowrank_conv_closed_form_reproduces_dense_conv():
    dense = nn.Conv(6, (3, 3), strides=(2, 1), padding="SAME")
    x = _normal(0, (2, 9, 8, 4))
    v = {"params": _random_params(dense, x)}
    k, b = v["params"]["kernel"], v["params"]["bias"]
    layer = lowrank.LowRankConv(6, (3, 3), rank=12, strides=(2, 1), padding="SAME")
    lv = lowrank.lowrank_conv_variables(k, b, rank=12)
    np.testing.assert_allclose(layer.apply(lv, x), dense.apply(v, x), atol=2e-5)
    low = lowrank.LowRankConv(6, (3, 3), rank=2, strides=(2, 1), padding="SAME")
    y, upd = low.apply(lowrank.lowrank_conv_variables(k, b, rank=2), x, train=True,
                       mutable=["batch_stats"])  # fmt: skip
    assert y.shape == (2, 5, 8, 6) and set(upd["batch_stats"]["bn"]) == {"mean", "var"}


def test_lowrank_conv_from_scratch_has_the_factored_params():
    layer = lowrank.LowRankConv(8, (3, 3), rank=3, padding=1)
    v = jax.eval_shape(layer.init, KEY, jnp.ones((1, 6, 6, 5)))
    shapes = jax.tree.map(jnp.shape, v["params"])
    assert shapes["vertical"] == {"kernel": (3, 1, 5, 3)}
    assert shapes["horizontal"] == {"kernel": (1, 3, 3, 8), "bias": (8,)}
    out = jax.eval_shape(layer.apply, v, jnp.ones((2, 6, 6, 5)))
    assert out.shape == (2, 6, 6, 8)


def test_predicted_dense_dictionary_is_fixed_and_interpolates():
    layer = lowrank.PredictedDense(features=7, rank=10, grid=(5, 5))
    v = jax.eval_shape(layer.init, KEY, jnp.ones((1, 25)))
    assert jax.tree.map(jnp.shape, v["params"]) == {"alpha": (10, 7), "bias": (7,)}
    d = lowrank.kernel_dictionary(50, 10, ridge=1e-6)
    chosen = np.round(np.linspace(0, 49, 10)).astype(int)
    np.testing.assert_allclose(d[chosen], np.eye(10), atol=1e-3)  # kernel ridge interpolation
    r = lowrank.kernel_dictionary(50, 10, kind="random", key=KEY)
    assert r.shape == (50, 10)
    with pytest.raises(ValueError, match="key"):
        lowrank.kernel_dictionary(50, 10, kind="random")


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: lowrank.svd(rank=0), "rank must be an int >= 1"),
        (lambda: lowrank.svd(rank=2.5), "rank must be"),
        (lambda: lowrank.svd(energy=0.0), r"svd: energy must be a number in \(0, 1\]"),
        (lambda: lowrank.svd(energy=1.5), r"svd: energy must be a number in \(0, 1\]"),
        (lambda: lowrank.svd(compression=0.5), "compression must be"),
        (lambda: lowrank.svd(), "exactly one of"),
        (lambda: lowrank.svd(rank=2, energy=0.5), "exactly one of"),
        (lambda: lowrank.cp(energy=0.5, key=KEY), "unexpected|energy"),
        (lambda: lowrank.cp(rank=2, iterations=-1, key=KEY), "iterations"),
        (lambda: lowrank.cp(rank=2, key=0), "key"),
        (lambda: lowrank.tucker2(rank=(2, 0)), "rank must be"),
        (lambda: lowrank.monochromatic(colors=0, key=KEY), "colors"),
        (lambda: lowrank.predicted(rank=2, kind="fourier"), "kind"),
        (lambda: lowrank.predicted(rank=2, kind="random"), "key"),
    ],
)
def test_bad_hyperparameters_are_rejected_when_built(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_rank_above_the_matrix_names_the_layer(net):
    params = net[1]
    with pytest.raises(ValueError, match=r"Dense_1/kernel.*\[1, 5\]"):
        lowrank.svd(rank=6, where=[("Dense_1/kernel", True)]).init(params)
    with pytest.raises(ValueError, match=r"Conv_0/kernel"):
        lowrank.jaderberg(rank=10).init(params)  # min(3*3, 3*6) = 9
    with pytest.raises(ValueError, match=r"Conv_0/kernel.*R3 <= C = 3"):
        lowrank.tucker2(rank=(4, 2)).init(params)
    with pytest.raises(ValueError, match=r"svd: the rank dict .*missing \['Conv_0/kernel'"):
        lowrank.svd(rank={"Dense_0/kernel": 2}).init(params)
    with pytest.raises(ValueError, match=r"svd: rank: rules \['Dense_9'\] match no leaf"):
        lowrank.svd(rank=[("Dense_9", 2), (".*", 1)]).init(params)


def test_a_layer_the_method_cannot_factorize_is_named(net):
    params = net[1]
    with pytest.raises(ValueError, match=r"jaderberg: cannot compress 'Dense_0/kernel'"):
        lowrank.jaderberg(rank=2, where=[("Dense_0/kernel", True)]).init(params)
    with pytest.raises(ValueError, match=r"cannot compress 'Conv_3/kernel'.*kh > 1"):
        lowrank.jaderberg(rank=2, where=[("Conv_3/kernel", True)]).init(params)  # a 1x1 conv
    with pytest.raises(ValueError, match=r"cp: cannot compress 'Dense_1/kernel'"):
        lowrank.cp(rank=2, key=KEY, where=[("Dense_1/kernel", True)]).init(params)
    with pytest.raises(ValueError, match=r"bicluster: cannot compress 'Conv_1/kernel'.*divide"):
        lowrank.bicluster(groups_in=4, groups_out=1, rank=1, key=KEY,
                          where=[("Conv_1/kernel", True)]).init(params)  # fmt: skip
    with pytest.raises(jc.errors.SelectionError):
        lowrank.svd(rank=2, where=[("NoSuchLayer", True)]).init(params)


def test_default_selection_skips_what_the_method_cannot_factorize(net):
    params = net[1]
    c, _ = lowrank.jaderberg(rank=2).init(params)
    kinds = {k: type(v["kernel"]).__name__ for k, v in c.items()}
    assert kinds == {
        **{f"Conv_{i}": "Separable" for i in range(3)},
        **{k: "ArrayImpl" for k in ("Conv_3", "Dense_0", "Dense_1")},
    }
    dense_only = {"Dense_0": params["Dense_0"]}
    c, _ = lowrank.cp(rank=2, key=KEY).init(dense_only)
    assert _max_err(c, dense_only) == 0.0


def test_factors_train_through_the_rebuilt_kernel(net):
    model, params, x, _ = net
    t = lowrank.svd(rank=2)
    c, s = t.init(params)
    loss = lambda c: jnp.sum(model.apply({"params": t.apply(c, s)}, x) ** 2)
    g = jax.jit(jax.grad(loss))(c)  # one program, not each conv's backward pass eagerly
    assert isinstance(g["Dense_0"]["kernel"], lowrank.LowRank)
    assert float(jnp.abs(g["Dense_0"]["kernel"].u).sum()) > 0


GEOMETRIES = [((1, 1), ((1, 1), (1, 1)), (1, 1)), ((2, 1), ((0, 2), (1, 0)), (1, 2))]


@pytest.mark.parametrize("impl", ["slices", "conv"])
@pytest.mark.parametrize("strides,padding,dilation", GEOMETRIES)
def test_separable_basis_runs_as_its_dense_kernel(strides, padding, dilation, impl):
    node = lowrank.SeparableBasis(_normal(0, (3, 2)), _normal(1, (2, 2)), _normal(2, (6, 2, 5)))
    x = _normal(3, (2, 7, 8, 6))
    spec = ConvSpec(strides, padding, dilation, None, impl)
    ref = jax.lax.conv_general_dilated(
        x, node.to_dense(), strides, padding, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    np.testing.assert_allclose(node.conv(x, spec), ref, atol=1e-4, rtol=1e-5)


def test_depthwise_auto_choice_by_backend_and_taps(monkeypatch):
    auto, n = ConvSpec((1, 1), ((0, 0), (0, 0)), (1, 1)), jc.adapt.MAX_SLICE_TAPS
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    for taps in (None, 1, n, n + 1, 49):  # CPU: slices for every kernel
        assert jc.adapt.depthwise_impl(auto, taps) == "slices"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert [jc.adapt.depthwise_impl(auto, t) for t in (1, n, n + 1, 49, None)] == [
        "slices", "slices", "conv", "conv", "conv"
    ]  # fmt: skip
    for impl in ("slices", "conv"):  # an explicit choice is kept on any backend, for any size
        assert {jc.adapt.depthwise_impl(auto._replace(depthwise=impl), t) for t in (1, 49)} == {
            impl
        }


@pytest.mark.parametrize("strides,padding,dilation", GEOMETRIES)
def test_depthwise_slices_equal_the_grouped_convolution(strides, padding, dilation):
    x, w = _normal(0, (2, 7, 8, 6)), _normal(1, (3, 2, 6))
    spec = ConvSpec(strides, padding, dilation)
    slices = depthwise(x, w, spec._replace(depthwise="slices"))
    np.testing.assert_allclose(slices, depthwise(x, w, spec._replace(depthwise="conv")), atol=1e-5)
    k = _normal(2, (3, 2, 3, 4))
    ref = jax.lax.conv_general_dilated(
        x, k, strides, padding, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2,
    )  # fmt: skip
    np.testing.assert_allclose(grouped_conv(x, k, spec, 2), ref, atol=1e-5)

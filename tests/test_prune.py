"""jaxcomp.prune: exact mask counts, criteria, schedules, OBD, OBS, N:M, sensitivity, penalties."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxcomp as jc
from jaxcomp import prune

# ---------------------------------------------------------------- helpers


def _tree(arrays):
    return {
        f"Dense_{i}": {"kernel": a, "bias": jnp.zeros(a.shape[-1])} for i, a in enumerate(arrays)
    }


def _kernels(tree):
    return [tree[k]["kernel"] for k in sorted(tree)]


# a few shapes (eager ops compile once per shape), values with many ties
_shapes = st.lists(st.sampled_from([(1, 1), (3, 4), (7, 5), (2, 9)]), min_size=1, max_size=3)
_sparsity = st.floats(0.0, 1.0, exclude_max=True, allow_nan=False)


def _tied_arrays(shapes, seed):
    rng = np.random.default_rng(seed)
    # small integers: many ties and many exact zeros, the hard case for exact counts
    return [jnp.asarray(rng.integers(-3, 4, size=s).astype(np.float32)) for s in shapes]


# ---------------------------------------------------------------- exact counts


@settings(max_examples=10, deadline=None)  # an example compiles its counts: 10 per run
@given(shapes=_shapes, s=_sparsity, seed=st.integers(0, 2**16))
def test_layerwise_masks_have_exact_zero_count_per_leaf(shapes, s, seed):
    params = _tree(_tied_arrays(shapes, seed))
    c, state = prune.magnitude(sparsity=s).init(params)
    for k in params:  # checked in numpy: eager boolean indexing would compile per count
        assert isinstance(state.masks[k]["bias"], jc.core.MaskedNode)
        w, m, cw = (np.asarray(t[k]["kernel"]) for t in (params, state.masks, c))
        assert int(np.sum(~m)) == math.floor(s * w.size)
        assert np.all(np.where(m, True, cw == 0))  # pruned weights are exactly zero
        if np.any(~m) and np.any(m):  # every kept |w| >= every pruned |w|
            assert np.min(np.abs(w)[m]) >= np.max(np.abs(w)[~m])


@settings(max_examples=10, deadline=None)  # an example compiles its counts: 10 per run
@given(shapes=_shapes, s=_sparsity, seed=st.integers(0, 2**16))
def test_global_masks_have_exact_total_zero_count(shapes, s, seed):
    params = _tree(_tied_arrays(shapes, seed))
    _, state = prune.magnitude(sparsity=s, scope="global").init(params)
    masks = [np.asarray(m) for m in _kernels(state.masks)]  # numpy: see above
    ws = [np.asarray(w) for w in _kernels(params)]
    total = sum(w.size for w in ws)
    assert sum(int(np.sum(~m)) for m in masks) == math.floor(s * total)
    kept = np.concatenate([np.abs(w)[m] for w, m in zip(ws, masks, strict=True)])
    pruned = np.concatenate([np.abs(w)[~m] for w, m in zip(ws, masks, strict=True)])
    if kept.size and pruned.size:  # one threshold across leaves
        assert np.min(kept) >= np.max(pruned)


def test_ties_are_broken_by_index_and_schedule_counts_are_exact():
    assert prune.topk_mask(jnp.ones(6), 4).tolist() == [False] * 4 + [True] * 2
    assert prune.topk_mask(jnp.array([2.0, 1.0, 2.0, 1.0]), 3).tolist() == [
        False, False, True, False
    ]  # fmt: skip
    # a traced float32 sparsity counts like floor(s * n): float32(0.9) * 10 < 9 without care
    counts = jax.jit(lambda s: prune.num_pruned(s, 10))
    assert int(counts(jnp.float32(0.9))) == 9
    assert int(jax.jit(lambda s: prune.num_pruned(s, 235200))(jnp.float32(0.9))) == 211680
    assert prune.num_pruned(0.9, 10) == 9 and prune.num_pruned(0.0, 5) == 0


def _reference_mask(x, k):
    keep = np.ones(x.size, bool)
    keep[np.argsort(x.ravel(), kind="stable")[:k]] = False
    return keep.reshape(x.shape)


@pytest.mark.parametrize("n", [1000, 5000])
@pytest.mark.parametrize("kind", ["normal", "sample_misleads", "ties", "sticky"])
def test_topk_mask_matches_a_stable_sort(kind, n):
    """Leaves of at most 4096 entries read the threshold off a sort; larger ones bisect between
    bounds read off a sample. Both are exact, with ties pruned in index order."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal(n)).astype(np.float32)
    if kind == "sample_misleads":  # the strided sample sees only huge values: the bounds fail
        x[::2] += 1e6
    elif kind == "ties":
        x = rng.integers(0, 5, n).astype(np.float32)
    elif kind == "sticky":  # previously pruned weights at -inf, as the pruners rank them
        x[rng.random(n) < 0.5] = -np.inf
    for k in (0, 1, n // 4, n // 2, n - 1, n):
        assert np.array_equal(np.asarray(prune.topk_mask(jnp.asarray(x), k)), _reference_mask(x, k))


# ---------------------------------------------------------------- gradual and iterative pruning


def test_gradual_masks_recomputed_every_k_steps_nested_and_exact():
    k1 = jax.random.key(0)
    params = _tree([jax.random.normal(k1, (16, 8)), jax.random.normal(k1, (8, 4))])
    sched = prune.gradual_schedule(0.8, begin=0, end=12)
    t = prune.magnitude(sparsity=sched, update_every=3)
    c, s = t.init(params)
    upd = jax.jit(lambda c, s, step, g: t.update(c, s, step=step, grads=g))
    prev = s.masks
    for step in range(1, 16):
        noisy = jax.tree.map(lambda w: w + 0.05, c)  # an optimizer step moves every weight
        c, s = upd(noisy, s, jnp.int32(step), noisy)
        for m_old, m_new, w in zip(_kernels(prev), _kernels(s.masks), _kernels(c), strict=True):
            assert bool(jnp.all(m_new <= m_old))  # nested: once pruned, always pruned
            assert bool(jnp.all(jnp.where(m_new, True, w == 0)))  # re-zeroed every step
            if step % 3:
                assert bool(jnp.all(m_new == m_old))  # not recomputed off the grid
            else:
                assert int(jnp.sum(~m_new)) == int(prune.num_pruned(sched(step), m_new.size))
        prev = s.masks
    assert upd._cache_size() == 1
    assert [int(jnp.sum(~m)) for m in _kernels(s.masks)] == [102, 25]  # floor(0.8 n)


def test_iterative_schedule_staircase_and_errors():
    s = prune.iterative_schedule([0.5, 0.75, 0.9], every=10, begin=5)
    assert [round(float(s(t)), 3) for t in (0, 5, 14, 15, 25, 100)] == [0, 0.5, 0.5, 0.75, 0.9, 0.9]
    with pytest.raises(ValueError, match="non-decreasing"):
        prune.iterative_schedule([0.5, 0.4], every=10)
    with pytest.raises(ValueError, match="every"):
        prune.iterative_schedule([0.5], every=0)
    with pytest.raises(ValueError, match=r"end=5 must be greater than begin=10"):
        prune.gradual_schedule(0.9, begin=10, end=5)
    with pytest.raises(ValueError, match="end"):
        prune.magnitude(sparsity=jc.schedules.polynomial(0.0, 0.9, begin=10, end=5))


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


@pytest.fixture(scope="module")
def digits():
    return jc.data.load("digits")


def test_pruned_weights_stay_exactly_zero_through_fit(digits):
    model = _MLP()
    k1, k2 = jax.random.split(jax.random.key(0))
    variables = jc.models.init(model, k1, digits.input_shape)
    # Han et al.'s iterative pruning driven by update: 50%, 75%, 90% every 8 steps
    t = prune.magnitude(
        sparsity=prune.iterative_schedule([0.5, 0.75, 0.9], every=8), update_every=8
    )
    state = jc.train.TrainState.create(
        apply_fn=model.apply, variables=variables, tx=optax.adam(1e-2), key=k2, transform=t
    )
    res = jc.train.fit(state, digits, batch_size=64, steps=60, progress=False, eval_every=60)
    final = res.state
    for m, w, p in zip(
        _kernels(final.comp_state.masks), _kernels(final.cparams), _kernels(final.params),
        strict=True,
    ):  # fmt: skip
        assert int(jnp.sum(~m)) == math.floor(0.9 * m.size)
        assert bool(jnp.all(jnp.where(m, True, w == 0))) and bool(
            jnp.all(jnp.where(m, True, p == 0))
        )
    fin = final.finalize()
    assert jc.analysis.nonzero_count(fin) <= jc.analysis.param_count(fin) - sum(
        math.floor(0.9 * m.size) for m in _kernels(final.comp_state.masks)
    )
    assert res.history[-1]["test_accuracy"] > 0.3  # it still learned (chance is 0.1)


# ---------------------------------------------------------------- distributions, per-leaf specs


def test_erk_keeps_the_total_and_small_layers_denser():
    params = _tree([jnp.ones((64, 32)), jnp.ones((32, 16)), jnp.ones((16, 2))])
    per = prune.erk(params, sparsity=0.8)
    sizes = {k: params[k.split("/")[0]]["kernel"].size for k in per}
    kept = sum(n * (1 - per[k]) for k, n in sizes.items())
    assert kept == pytest.approx(0.2 * sum(sizes.values()), rel=1e-9)
    assert per["Dense_0/kernel"] > per["Dense_1/kernel"] > per["Dense_2/kernel"]
    assert prune.erk_sparsities([(100, 100), (100, 10)], 0.5)[1] == 0.0  # capped dense
    # the ERK transform prunes each leaf at exactly floor(s_l * n_l)
    _, s = prune.magnitude(sparsity=0.8, distribution="erk").init(params)
    for k, m in zip(sorted(per), _kernels(s.masks), strict=True):
        assert int(jnp.sum(~m)) == math.floor(per[k] * m.size)
    assert prune.uniform(params, sparsity=0.3) == {k: 0.3 for k in per}


def test_per_leaf_sparsity_dict_and_rules():
    params = _tree([jnp.arange(12.0).reshape(3, 4), jnp.arange(6.0).reshape(2, 3)])
    _, s = prune.magnitude(sparsity={"Dense_0/kernel": 0.5, "Dense_1/kernel": 0.0}).init(params)
    assert [int(jnp.sum(~m)) for m in _kernels(s.masks)] == [6, 0]
    _, s = prune.magnitude(sparsity=[("Dense_1", 0.5), (".*", 0.25)]).init(params)
    assert [int(jnp.sum(~m)) for m in _kernels(s.masks)] == [3, 3]
    with pytest.raises(ValueError, match="missing"):
        prune.magnitude(sparsity={"Dense_0/kernel": 0.5}).init(params)
    with pytest.raises(ValueError, match="scope='layer'"):
        prune.magnitude(sparsity={"Dense_0/kernel": 0.5}, scope="global")


# ---------------------------------------------------------------- random, taylor


def test_random_is_reproducible_exact_and_nested():
    params = _tree([jnp.ones((20, 10))])
    key = jax.random.key(3)
    m1 = prune.random(sparsity=0.5, key=key).init(params)[1].masks["Dense_0"]["kernel"]
    m2 = prune.random(sparsity=0.5, key=key).init(params)[1].masks["Dense_0"]["kernel"]
    m3 = (
        prune.random(sparsity=0.5, key=jax.random.key(4)).init(params)[1].masks["Dense_0"]["kernel"]
    )
    m4 = prune.random(sparsity=0.8, key=key).init(params)[1].masks["Dense_0"]["kernel"]
    assert bool(jnp.all(m1 == m2)) and not bool(jnp.all(m1 == m3))
    assert int(jnp.sum(~m1)) == 100 and bool(jnp.all(m4 <= m1))


def test_taylor_prunes_least_accumulated_w_times_g():
    w = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    params = _tree([w])
    t = prune.taylor(sparsity=0.5, update_every=2)
    c, s = t.init(params)
    assert bool(jnp.all(s.masks["Dense_0"]["kernel"]))  # no gradients yet: nothing pruned
    g1 = jax.tree.map(jnp.zeros_like, c)
    g1["Dense_0"]["kernel"] = jnp.array([[4.0, 1.0, 0.1, 0.0]])
    g2 = jax.tree.map(jnp.zeros_like, c)
    g2["Dense_0"]["kernel"] = jnp.array([[0.0, 0.0, 0.2, 0.1]])
    c, s = t.update(c, s, step=1, grads=g1)
    assert bool(jnp.all(s.masks["Dense_0"]["kernel"]))  # off the grid: only accumulated
    c, s = t.update(c, s, step=2, grads=g2)
    # |w g| summed: [4, 2, 0.9, 0.4] -> the last two are pruned, the sum restarts
    assert s.masks["Dense_0"]["kernel"].tolist() == [[True, True, False, False]]
    assert float(jnp.sum(s.saliency["Dense_0"]["kernel"])) == 0.0
    np.testing.assert_allclose(
        prune.taylor_saliency(params, g1)["Dense_0"]["kernel"], jnp.abs(w * g1["Dense_0"]["kernel"])
    )


# ---------------------------------------------------------------- OBD


def _quadratic(a):
    """loss(params) = 0.5 * w^T A w over the flattened kernel of a one-layer tree."""

    def loss(p):
        w = jnp.ravel(p["Dense_0"]["kernel"])
        return 0.5 * w @ a @ w + 0.0 * jnp.sum(p["Dense_0"]["bias"])

    return loss


def test_exact_and_hutchinson_hessian_diagonals():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(6, 6)).astype(np.float32)
    a = jnp.asarray(b @ b.T + np.eye(6, dtype=np.float32))
    params = _tree([jnp.asarray(rng.normal(size=(2, 3)).astype(np.float32))])
    loss = _quadratic(a)
    exact = prune.exact_hessian_diag(loss, params)["Dense_0"]["kernel"]
    np.testing.assert_allclose(jnp.ravel(exact), jnp.diagonal(a), rtol=1e-5)
    assert isinstance(prune.exact_hessian_diag(loss, params)["Dense_0"]["bias"], jc.core.MaskedNode)
    # a diagonal Hessian: z_i^2 = 1 makes one Rademacher probe exact
    diag_loss = _quadratic(jnp.diag(jnp.arange(1.0, 7.0)))
    est = prune.hutchinson_diag(diag_loss, params, key=jax.random.key(0), samples=1)
    np.testing.assert_allclose(jnp.ravel(est["Dense_0"]["kernel"]), jnp.arange(1.0, 7.0), rtol=1e-6)
    # a full Hessian: unbiased, close after many probes
    est = prune.hutchinson_diag(loss, params, key=jax.random.key(1), samples=4000)
    off = float(jnp.sqrt(jnp.sum(jnp.square(a)) - jnp.sum(jnp.square(jnp.diagonal(a)))))
    err = jnp.abs(jnp.ravel(est["Dense_0"]["kernel"]) - jnp.diagonal(a))
    assert float(jnp.max(err)) < 5 * off / math.sqrt(4000)
    with pytest.raises(ValueError, match="samples"):
        prune.hutchinson_diag(loss, params, key=jax.random.key(0), samples=0)


def test_gauss_newton_diag_equals_hessian_diag_when_logits_are_linear():
    # softmax regression: the logits are linear in the kernel, so the Hessian of the mean
    # cross-entropy is its Gauss-Newton matrix, and both diagonals must agree
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(12, 3)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 4, 12).astype(np.int32))
    params = _tree([jnp.asarray(rng.normal(size=(3, 4)).astype(np.float32))])
    logits = lambda p, xb: xb @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None]
    loss = lambda p: jc.train.cross_entropy(logits(p, x), y)
    gn = prune.gauss_newton_diag(logits, params, x, batch_size=5)["Dense_0"]["kernel"]
    exact = prune.exact_hessian_diag(loss, params)["Dense_0"]["kernel"]
    np.testing.assert_allclose(gn, exact, rtol=1e-4, atol=1e-6)
    assert bool(jnp.all(gn >= 0))


def test_obd_prunes_least_saliency():
    w = jnp.array([[1.0, 2.0, 3.0, 0.5]])
    h = jnp.array([[4.0, 0.1, 1.0, 1.0]])  # saliency 0.5 h w^2 = [2, 0.2, 4.5, 0.125]
    params = _tree([w])
    hd = {"Dense_0": {"kernel": h}}
    _c, s = prune.obd(sparsity=0.5, hessian_diag=hd).init(params)
    assert s.masks["Dense_0"]["kernel"].tolist() == [[True, False, True, False]]
    np.testing.assert_allclose(prune.obd_saliency(params["Dense_0"]["kernel"], h), 0.5 * h * w**2)
    # a function of the params works too, and a missing diagonal is named
    _, s2 = prune.obd(sparsity=0.5, hessian_diag=lambda p: hd).init(params)
    assert bool(jnp.all(s2.masks["Dense_0"]["kernel"] == s.masks["Dense_0"]["kernel"]))
    with pytest.raises(ValueError, match="Dense_0/kernel"):
        prune.obd(sparsity=0.5, hessian_diag={"other": h}).init(params)


# ---------------------------------------------------------------- OBS


@pytest.fixture(scope="module")
def obs_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32) @ rng.normal(size=(8, 8)).astype(np.float32)
    w = rng.normal(size=(8, 3)).astype(np.float32)
    return x, w


def _least_squares_with_zeros(x, w, keep, damping_h=None):
    """min ||X w' - X w||^2 with w'_q = 0 off ``keep``, per column (float64)."""
    x = x.astype(np.float64)
    out = np.zeros_like(w, dtype=np.float64)
    for j in range(w.shape[1]):
        sol, *_ = np.linalg.lstsq(x[:, keep[:, j]], x @ w[:, j], rcond=None)
        out[keep[:, j], j] = sol
    return out


def test_obs_one_removal_is_least_squares_and_predicted_loss_is_exact(obs_problem):
    x, w = obs_problem
    h = prune.layer_hessian(x, damping=0.0)
    new, mask = prune.obs_kernel(jnp.asarray(w), h, sparsity=1.5 / w.size)
    mask, new = np.asarray(mask), np.asarray(new, np.float64)
    assert (~mask).sum() == 1
    np.testing.assert_allclose(new, _least_squares_with_zeros(x, w, mask), atol=2e-5)
    # the removed weight has least w_q^2 / [H^-1]_qq, and 0.5 w_q^2 / [H^-1]_qq is the increase
    hn = np.asarray(h, np.float64)
    hinv = np.linalg.inv(hn)
    sal = 0.5 * w.astype(np.float64) ** 2 / np.diag(hinv)[:, None]
    q = np.unravel_index(np.argmin(sal), sal.shape)
    assert not mask[q]
    d = new - w
    actual = 0.5 * np.einsum("ij,ik,kj->", d, hn, d)
    assert actual == pytest.approx(sal[q], rel=1e-4)
    # ... and magnitude's choice (the smallest |w|, not compensated) would cost at least as much
    qm = np.unravel_index(np.argmin(np.abs(w)), w.shape)
    dm = np.zeros_like(d)
    dm[qm] = -w[qm]
    assert 0.5 * np.einsum("ij,ik,kj->", dm, hn, dm) >= actual


def test_obs_many_removals_equal_constrained_least_squares_with_damping(obs_problem):
    x, w = obs_problem
    lam = 0.1
    h = prune.layer_hessian(x, damping=lam)
    results = prune.obs_kernel(jnp.asarray(w), h, sparsity=[0.25, 0.5, 0.75])
    g = x.astype(np.float64).T @ x / x.shape[0]
    aug = np.concatenate([x / np.sqrt(x.shape[0]), np.sqrt(lam * np.mean(np.diag(g))) * np.eye(8)])
    for s, (new, mask) in zip([0.25, 0.5, 0.75], results, strict=True):
        mask = np.asarray(mask)
        assert (~mask).sum() == math.floor(s * w.size)  # exact count for the layer
        # damped OBS minimizes ||X d||^2/n + lam' ||d||^2: least squares on the augmented rows
        ref = _least_squares_with_zeros(aug, w, mask)
        np.testing.assert_allclose(np.asarray(new), ref, atol=5e-5)
        single = prune.obs_kernel(jnp.asarray(w), h, sparsity=s)
        np.testing.assert_array_equal(np.asarray(single[1]), mask)  # one pass == separate runs


class _ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(3, (3, 2), strides=(2, 1), padding="SAME", use_bias=False)(x)
        x = nn.relu(x).reshape((x.shape[0], -1))
        return nn.Dense(4)(x)


def test_layer_inputs_reproduce_layer_outputs_and_obs_prune_runs():
    model = _ConvNet()
    x = jax.random.normal(jax.random.key(0), (5, 6, 5, 2))
    # random weights drawn with numpy (flax's initializers compile slowly for small conv kernels)
    rng = np.random.default_rng(1)
    v = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype),
                     jax.eval_shape(model.init, jax.random.key(1), x))  # fmt: skip
    _, got = jc.adapt.capture(model.apply, inputs=["Conv_0", "Dense_0"], rows=True)(v, x)
    inputs = {f"{p}/kernel": rows for p, rows in got.inputs.items()}
    k = v["params"]["Conv_0"]["kernel"]
    conv_out = nn.Conv(3, (3, 2), strides=(2, 1), padding="SAME", use_bias=False).apply(
        {"params": {"kernel": k}}, x
    )
    np.testing.assert_allclose(
        inputs["Conv_0/kernel"] @ k.reshape(-1, 3), conv_out.reshape(-1, 3), atol=1e-5
    )
    hs = prune.layer_hessians(model.apply, v, x, batch_size=2)
    np.testing.assert_allclose(
        hs["Dense_0/kernel"], prune.layer_hessian(inputs["Dense_0/kernel"]), rtol=1e-4, atol=1e-5
    )
    res = prune.obs_prune(v["params"], hs, sparsity=0.5)
    for key in ("Conv_0", "Dense_0"):
        m = res.masks[key]["kernel"]
        assert int(jnp.sum(~m)) == math.floor(0.5 * m.size)
        assert bool(jnp.all(jnp.where(m, True, res.params[key]["kernel"] == 0)))
    with pytest.raises(ValueError, match="Conv_0/kernel"):
        prune.obs_prune(v["params"], {"Dense_0/kernel": hs["Dense_0/kernel"]}, sparsity=0.5)
    # retraining holds the OBS masks
    _c, s = prune.fixed_masks(res.masks).init(res.params)
    assert bool(jnp.all(s.masks["Conv_0"]["kernel"] == res.masks["Conv_0"]["kernel"]))


def test_fixed_masks_where_selects_which_given_masks_hold():
    w = jnp.arange(1.0, 7.0).reshape(2, 3)
    params = _tree([w, w + 10])
    given = jax.tree.map(lambda x: x > 3, params)  # a mask for every leaf, biases included
    c, s = prune.fixed_masks(given, where=jc.select.by_regex("Dense_1/kernel")).init(params)
    assert bool(jnp.all(c["Dense_1"]["kernel"] == params["Dense_1"]["kernel"]))  # all > 3
    assert bool(jnp.all(c["Dense_0"]["kernel"] == params["Dense_0"]["kernel"]))  # not selected
    assert isinstance(s.masks["Dense_0"]["kernel"], jc.core.MaskedNode)
    c, s = prune.fixed_masks(given, where=jc.select.kernels()).init(params)
    assert c["Dense_0"]["kernel"].tolist() == [[0.0, 0.0, 0.0], [4.0, 5.0, 6.0]]
    assert isinstance(s.masks["Dense_0"]["bias"], jc.core.MaskedNode)  # biases left alone
    with pytest.raises(ValueError, match="Dense_0/kernel"):  # a selected leaf without a mask
        prune.fixed_masks({"Dense_1": {"kernel": given["Dense_1"]["kernel"]}},
                          where=jc.select.kernels()).init(params)  # fmt: skip


def test_build_pruner_user_criterion_prunes_exactly_the_lowest_scores():
    w = jax.random.normal(jax.random.key(0), (6, 5))
    target = jax.random.normal(jax.random.key(1), (6, 5))

    def distance_to_target(w, leaf, step):  # a criterion of one's own: keep weights far from it
        return jnp.abs(w - target)

    t = prune.build_pruner(distance_to_target, sparsity=0.4, name="far_from_target")
    c, s = t.init(_tree([w]))
    score = np.asarray(jnp.abs(w - target)).ravel()
    pruned = np.flatnonzero(~np.asarray(s.masks["Dense_0"]["kernel"]).ravel())
    assert set(pruned) == set(np.argsort(score, kind="stable")[: math.floor(0.4 * 30)])
    assert bool(jnp.all(jnp.ravel(c["Dense_0"]["kernel"])[pruned] == 0))
    assert isinstance(s, prune.PrunerState)
    with pytest.raises(ValueError, match=r"far_from_target: sparsity must be a number in \[0, 1\)"):
        prune.build_pruner(distance_to_target, sparsity=1.0, name="far_from_target")


# ---------------------------------------------------------------- N:M


def test_nm_masks_and_transform():
    w = jax.random.normal(jax.random.key(0), (8, 3))
    m = prune.nm_mask(jnp.abs(w), n=2, m=4)
    groups = np.asarray(m).reshape(2, 4, 3)
    assert (groups.sum(axis=1) == 2).all()  # exactly 2 of every 4 along the input axis
    kept = np.abs(np.asarray(w)).reshape(2, 4, 3)
    for g in range(2):
        for j in range(3):
            col = kept[g, :, j]
            assert set(np.argsort(-col, kind="stable")[:2]) == set(np.flatnonzero(groups[g, :, j]))
    _c, s = prune.nm(n=2, m=4).init(_tree([w]))
    assert bool(jnp.all(s.masks["Dense_0"]["kernel"] == m))
    with pytest.raises(ValueError, match="Dense_0/kernel"):
        prune.nm(n=2, m=4).init(_tree([jnp.ones((6, 3))]))


# ---------------------------------------------------------------- sensitivity


def test_sensitivity_scan_and_allocation():
    params = _tree([jnp.arange(1.0, 11.0).reshape(2, 5), jnp.arange(1.0, 5.0).reshape(2, 2)])

    def evaluate(p):  # a metric that is hurt by removing large weights, more so in layer 1
        lost0 = jnp.sum(params["Dense_0"]["kernel"] - p["Dense_0"]["kernel"])
        lost1 = jnp.sum(params["Dense_1"]["kernel"] - p["Dense_1"]["kernel"])
        return 100.0 - lost0 - 10.0 * lost1

    res = prune.sensitivity_scan(evaluate, params, sparsities=[0.5, 0.2, 0.0])
    assert res.sparsities == (0.0, 0.2, 0.5)
    assert res.baseline == 100.0
    assert res.drops()["Dense_0/kernel"] == (0.0, 3.0, 15.0)  # 1+2, then 1+..+5
    assert res.drops()["Dense_1/kernel"] == (0.0, 0.0, 30.0)  # floor(0.2*4)=0, then 1+2
    alloc = prune.sparsities_for_drop(res, max_drop=5.0)
    assert alloc == {"Dense_0/kernel": 0.2, "Dense_1/kernel": 0.2}
    _, s = prune.magnitude(sparsity=alloc).init(params)
    assert int(jnp.sum(~s.masks["Dense_0"]["kernel"])) == 2


# ---------------------------------------------------------------- regularizers


def test_regularizer_values_and_gradients():
    w = jnp.array([[0.5, -2.0], [-0.1, 3.0]])
    params = _tree([w])
    assert float(prune.l1(strength=0.3)(params)) == pytest.approx(0.3 * 5.6)
    g = jax.grad(prune.l1(strength=0.3))(params)
    np.testing.assert_allclose(g["Dense_0"]["kernel"], 0.3 * jnp.sign(w))
    assert float(jnp.sum(jnp.abs(g["Dense_0"]["bias"]))) == 0.0  # only the selected leaves
    g = jax.grad(prune.l2(strength=0.5))(params)
    np.testing.assert_allclose(g["Dense_0"]["kernel"], w)
    lam = 2.0
    hyp = prune.biased_decay(kind="hyperbolic", lam=lam)
    g = jax.grad(hyp)(params)["Dense_0"]["kernel"]
    np.testing.assert_allclose(g, 2 * w / (1 + lam * w**2) ** 2, rtol=1e-6)
    assert float(hyp(_tree([jnp.full((1, 1), 1e6)]))) <= 1 / lam  # bounded: large weights survive
    ex = prune.biased_decay(kind="exponential", lam=lam, strength=0.5)
    g = jax.grad(ex)(params)["Dense_0"]["kernel"]
    np.testing.assert_allclose(g, 0.5 * 2 * lam * w * jnp.exp(-lam * w**2), rtol=1e-6)
    # relative decay: the small weight is pulled harder, relative to its size, than the large one
    rel = jnp.abs(jax.grad(hyp)(params)["Dense_0"]["kernel"] / w)
    assert float(rel[0, 0]) > float(rel[1, 1])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, True, "0.5"])
def test_bad_sparsity_is_a_value_error_naming_it(bad):
    for make in (
        lambda: prune.magnitude(sparsity=bad),
        lambda: prune.random(sparsity=bad, key=jax.random.key(0)),
        lambda: prune.taylor(sparsity=bad),
        lambda: prune.obd(sparsity=bad, hessian_diag={}),
    ):
        with pytest.raises(ValueError, match=r"sparsity.*\[0, 1\)"):
            make()
    with pytest.raises(ValueError, match="sparsity"):
        prune.obs_kernel(jnp.ones((4, 2)), jnp.eye(4), sparsity=bad)


def test_other_bad_input():
    params = _tree([jnp.ones((8, 4))])
    with pytest.raises(ValueError, match=r"nm: n must be an int in \[1, 4\]"):
        prune.nm(n=5, m=4)
    with pytest.raises(ValueError, match="selects no leaf"):
        prune.magnitude(sparsity=0.5, where=jc.select.by_regex("Conv")).init(params)
    with pytest.raises(ValueError, match="scope must be one of"):
        prune.magnitude(sparsity=0.5, scope="row")
    with pytest.raises(ValueError, match="distribution must be one of"):
        prune.magnitude(sparsity=0.5, distribution="normal")
    with pytest.raises(ValueError, match="update_every"):
        prune.magnitude(sparsity=0.5, update_every=0)
    with pytest.raises(ValueError, match=r"sparsity.*schedule gives 1\.5"):
        prune.magnitude(sparsity=jc.schedules.linear(0.0, 1.5, begin=0, end=10))
    with pytest.raises(ValueError, match="max_drop"):
        prune.sparsities_for_drop(prune.SensitivityResult(1.0, (0.5,), {}), max_drop=-1)
    with pytest.raises(ValueError, match="strength"):
        prune.l1(strength=-1.0)
    with pytest.raises(ValueError, match="kind"):
        prune.biased_decay(kind="cubic")

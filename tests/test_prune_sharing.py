"""jaxcomp.prune weight sharing: HashedNets and soft weight-sharing."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcomp import prune


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {
        "Dense_0": {"kernel": jax.random.normal(k1, (12, 10)), "bias": jnp.zeros(10)},
        "Dense_1": {"kernel": jax.random.normal(k2, (10, 3)), "bias": jnp.zeros(3)},
    }


# ---------------------------------------------------------------- HashedNets


def test_hashed_weights_take_at_most_k_distinct_magnitudes():
    p = _params()
    t = prune.hashed(compression=8, key=jax.random.key(0))
    c, s = t.init(p)
    dense = t.apply(c, s)
    for name in ("Dense_0", "Dense_1"):
        node = c[name]["kernel"]
        n = p[name]["kernel"].size
        assert isinstance(node, prune.HashedWeight)
        assert node.buckets.shape == (math.floor(n / 8),)
        w = dense[name]["kernel"]
        assert w.shape == p[name]["kernel"].shape
        assert len(np.unique(np.abs(np.asarray(w)))) <= node.buckets.shape[0]
        assert bool(jnp.all(dense[name]["bias"] == p[name]["bias"]))  # unselected: untouched
    # the buckets are the compressed model: about n / 8 parameters per kernel
    assert t.finalize(c, s)["Dense_0"]["kernel"].buckets.size == 15


def test_hashed_bucket_gradient_is_signed_sum_of_member_gradients():
    p = _params()
    t = prune.hashed(buckets=7, key=jax.random.key(3))
    c, s = t.init(p)
    g_dense = jax.tree.map(lambda x: jax.random.normal(jax.random.key(1), x.shape), p)
    loss = lambda c: sum(
        jnp.sum(a * b) for a, b in zip(jax.tree.leaves(t.apply(c, s)), jax.tree.leaves(g_dense))
    )
    g = jax.grad(loss)(c)
    node = c["Dense_0"]["kernel"]
    index, sign = prune.hash_indices(120, 7, node.seed)
    expected = np.zeros(7)
    np.add.at(
        expected, np.asarray(index), np.asarray(sign) * np.ravel(g_dense["Dense_0"]["kernel"])
    )
    np.testing.assert_allclose(g["Dense_0"]["kernel"].buckets, expected, rtol=1e-5, atol=1e-5)


def test_hashed_init_is_least_squares_projection_and_deterministic():
    p = _params()
    t = prune.hashed(buckets=9, key=jax.random.key(0))
    c, s = t.init(p)
    # the buckets minimize ||W - W(b)||^2: its gradient vanishes at init
    err = lambda c: sum(
        jnp.sum(jnp.square(a - b))
        for a, b in zip(jax.tree.leaves(t.apply(c, s)), jax.tree.leaves(p))
    )
    g = jax.grad(err)(c)
    assert float(jnp.max(jnp.abs(g["Dense_0"]["kernel"].buckets))) < 1e-5
    c2, _ = prune.hashed(buckets=9, key=jax.random.key(0)).init(p)
    c3, _ = prune.hashed(buckets=9, key=jax.random.key(1)).init(p)
    np.testing.assert_array_equal(c["Dense_0"]["kernel"].buckets, c2["Dense_0"]["kernel"].buckets)
    i0, s0 = prune.hash_indices(120, 9, c["Dense_0"]["kernel"].seed)
    i1, s1 = prune.hash_indices(120, 9, c3["Dense_0"]["kernel"].seed)
    assert not (np.array_equal(i0, i1) and np.array_equal(s0, s1))
    # the layers hash differently (per-layer seeds), and every bucket index is in range
    assert c["Dense_0"]["kernel"].seed != c["Dense_1"]["kernel"].seed
    assert int(jnp.min(i0)) >= 0 and int(jnp.max(i0)) < 9 and set(np.unique(s0)) == {-1, 1}


def test_hashed_bad_input():
    with pytest.raises(ValueError, match=r"buckets must be an int >= 1"):
        prune.hashed(buckets=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="compression must be a number >= 1"):
        prune.hashed(compression=0.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="exactly one of compression"):
        prune.hashed(key=jax.random.key(0))
    with pytest.raises(ValueError, match="key must be a typed PRNG key"):
        prune.hashed(buckets=3, key=0)
    with pytest.raises(ValueError, match=r"Dense_1/kernel.*0 buckets"):
        prune.hashed(compression=31, key=jax.random.key(0)).init(_params())  # 30 weights -> 0


# ---------------------------------------------------------------- soft weight-sharing


def _prior_logpdf(w, means, log_vars, log_pi):
    """numpy reference: log sum_j pi_j N(w | mu_j, var_j)."""
    w = np.asarray(w, np.float64).ravel()[:, None]
    var = np.exp(np.asarray(log_vars, np.float64))[None]
    comp = np.asarray(log_pi, np.float64)[None] - 0.5 * (
        np.log(2 * np.pi * var) + (w - np.asarray(means, np.float64)[None]) ** 2 / var
    )
    m = comp.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(comp - m).sum(axis=1, keepdims=True))).ravel()


def test_soft_sharing_penalty_is_negative_log_mixture_prior():
    p = _params()
    t = prune.soft_sharing(components=5, pi_zero=0.9)
    c, s = t.init(p)
    assert c.prior.means.shape == (4,) and c.prior.log_vars.shape == (5,)
    pen = float(prune.soft_sharing_penalty(c, s))
    means = np.concatenate([[0.0], np.asarray(c.prior.means)])
    log_pi = np.log(np.concatenate([[0.9], 0.1 * np.full(4, 0.25)]))
    ref = -sum(
        _prior_logpdf(p[k]["kernel"], means, c.prior.log_vars, log_pi).sum()
        for k in ("Dense_0", "Dense_1")
    )
    assert pen == pytest.approx(ref, rel=1e-4)
    assert t.apply(c, s) is c.params


def test_soft_sharing_training_clusters_and_finalize_snaps_to_means():
    p = _params()
    t = prune.soft_sharing(components=4, pi_zero=0.99)
    c, s = t.init(p)
    opt = optax.adam(3e-2)
    o = opt.init(c)

    @jax.jit
    def step(c, o, s, i):
        g = jax.grad(lambda c: prune.soft_sharing_penalty(c, s))(c)
        u, o = opt.update(g, o)
        c, s = t.update(optax.apply_updates(c, u), s, step=i)
        return c, o, s

    before = float(prune.soft_sharing_penalty(c, s))
    for i in range(60):
        c, o, s = step(c, o, s, i)
    assert float(prune.soft_sharing_penalty(c, s)) < before  # prior and weights learned
    assert float(jnp.min(c.prior.log_vars)) >= 2 * math.log(1e-4) - 1e-6  # update clamps
    fin = t.finalize(c, s)
    allowed = np.concatenate([[0.0], np.asarray(c.prior.means)])
    for k in ("Dense_0", "Dense_1"):
        vals = np.unique(np.asarray(fin[k]["kernel"]))
        assert np.isin(vals, allowed.astype(np.float32)).all()  # values are component means
        np.testing.assert_array_equal(fin[k]["bias"], c.params[k]["bias"])  # unselected kept
    # weights near zero become exactly zero (the zero component is the most responsible there)
    w = np.asarray(c.params["Dense_0"]["kernel"])
    near = np.abs(w) < 1e-3
    assert near.any() and (np.asarray(fin["Dense_0"]["kernel"])[near] == 0).all()


def test_soft_sharing_init_std_keeps_weights_out_of_the_zero_component():
    # weights like a trained layer's: mostly within 0.1 of zero. Components as wide as the spacing
    # of their means (the default width) let the zero component (pi_zero 0.99) take weights two
    # spacings away at finalize; narrow ones leave every weight beyond one spacing nonzero
    w = 0.05 * jax.random.normal(jax.random.key(0), (40, 50))
    p = {"Dense_0": {"kernel": w}}
    spacing = float(jnp.max(w) - jnp.min(w)) / 15  # 16 non-zero means spread over the range
    zeroed = {}
    for init_std in (None, 0.005):
        t = prune.soft_sharing(components=17, pi_zero=0.99, init_std=init_std)
        c, s = t.init(p)
        if init_std is not None:
            np.testing.assert_allclose(np.exp(0.5 * c.prior.log_vars), init_std, rtol=1e-5)
        fin = np.asarray(t.finalize(c, s)["Dense_0"]["kernel"])
        zeroed[init_std] = np.abs(np.asarray(w))[fin == 0]
    assert zeroed[None].max() > 2 * spacing
    assert zeroed[0.005].max() < spacing
    with pytest.raises(ValueError, match=r"init_std must be a number >= 0\.0001"):
        prune.soft_sharing(init_std=1e-5)


def test_soft_sharing_bad_input():
    with pytest.raises(ValueError, match="components must be an int >= 2"):
        prune.soft_sharing(components=1)
    with pytest.raises(ValueError, match=r"pi_zero must be a number in \(0, 1\)"):
        prune.soft_sharing(pi_zero=1.0)

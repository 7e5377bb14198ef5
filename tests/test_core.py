"""The transform protocol and its combinators: order of chain, partition, masked, identity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _toys import factor_out
from _toys import round_ste
from _toys import threshold_mask

import jaxcomp as jc


def _params():
    k1, k2 = jax.random.split(jax.random.key(1))
    return {
        "Dense_0": {"kernel": jax.random.normal(k1, (4, 5)), "bias": jnp.zeros(5)},
        "Dense_1": {"kernel": jax.random.normal(k2, (5, 3)), "bias": jnp.ones(3)},
    }


def _close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6), a, b)


def test_identity_round_trip():
    p = _params()
    t = jc.identity()
    c, s = t.init(p)
    _close(t.apply(c, s), p)
    _close(t.finalize(c, s), p)


def test_chain_quantizer_after_pruner_sees_pruned_weights():
    p = _params()
    t = jc.chain(threshold_mask(0.5), round_ste(0.25))
    c, s = t.init(p)
    # the quantizer's init saw the pruner's cparams: exact zeros where |w| < 0.5
    for w, w0 in zip(jax.tree.leaves(c), jax.tree.leaves(p), strict=True):
        assert np.all(np.asarray(w)[np.abs(np.asarray(w0)) < 0.5] == 0)
    # apply = mask * round(c): the first transform is outermost
    out = t.apply(c, s)
    mask = s.states[0].mask
    expected = jax.tree.map(lambda w, m: jnp.round(w / 0.25) * 0.25 * m, c, mask)
    _close(out, expected)


def test_chain_apply_runs_last_transform_first():
    p = _params()
    a, b = round_ste(1.0), factor_out(4.0)
    t = jc.chain(a, b)
    c, s = t.init(p)
    # b rebuilds the dense weights, then a rounds them
    _close(t.apply(c, s), jax.tree.map(lambda w: jnp.round(w), p))
    assert set(c) == {"w", "s"}


def test_chain_update_order_and_pushback():
    p = _params()
    t = jc.chain(threshold_mask(0.5), round_ste(0.25))
    c, s = t.init(p)
    moved = jax.tree.map(lambda w: w + 0.1, c)  # an optimizer step moves pruned weights
    c2, s2 = jax.jit(lambda c, s: t.update(c, s, step=1))(moved, s)
    # the pruner re-zeroed the latent weights themselves, not a quantized copy
    mask = s.states[0].mask
    _close(c2, jax.tree.map(jnp.multiply, moved, mask))
    assert int(s2.states[1].calls) == 1


def test_chain_before_structure_change_updates_state_only():
    p = _params()
    t = jc.chain(round_ste(1.0), factor_out(2.0))
    c, s = t.init(p)
    c2, s2 = t.update(c, s, step=1)
    assert jax.tree.structure(c2) == jax.tree.structure(c)
    assert int(s2.states[0].calls) == 1


def test_chain_finalize_pipes_results():
    p = _params()
    t = jc.chain(threshold_mask(0.5), round_ste(0.25))
    c, s = t.init(p)
    moved = jax.tree.map(lambda w: w + 0.1, c)
    fin = t.finalize(moved, s)
    mask = s.states[0].mask
    _close(fin, jax.tree.map(lambda w, m: jnp.round(w * m / 0.25) * 0.25, moved, mask))


def test_chain_rejects_non_transform():
    with pytest.raises(TypeError, match="argument 1"):
        jc.chain(jc.identity(), lambda p: p)


def test_masked_touches_only_selected_leaves():
    p = _params()
    t = jc.masked(round_ste(1.0), jc.select.by_regex("Dense_1/kernel"))
    c, s = t.init(p)
    assert jax.tree.structure(c) == jax.tree.structure(p)  # structure kept
    out = t.apply(c, s)
    _close(out["Dense_0"], p["Dense_0"])
    _close(out["Dense_1"]["kernel"], jnp.round(p["Dense_1"]["kernel"]))
    _close(out["Dense_1"]["bias"], p["Dense_1"]["bias"])


def test_partition_with_structure_change_splits_cparams():
    p = _params()
    labels = {"Dense_0": {"kernel": "f", "bias": "id"}, "Dense_1": {"kernel": "r", "bias": "id"}}
    t = jc.partition({"f": factor_out(2.0), "r": round_ste(1.0), "id": jc.identity()}, labels)
    c, s = t.init(p)
    assert isinstance(s, jc.core.SplitPartitionState)
    out = jax.jit(t.apply)(c, s)
    _close(out["Dense_0"], p["Dense_0"])
    _close(out["Dense_1"]["kernel"], jnp.round(p["Dense_1"]["kernel"]))
    c2, s2 = t.update(c, s, step=3)
    assert int(s2.inner_states["r"].calls) == 1
    assert jax.tree.structure(c2) == jax.tree.structure(c)


def test_partition_unknown_label():
    p = _params()
    labels = jax.tree.map(lambda _: "nope", p)
    with pytest.raises(ValueError, match="nope"):
        jc.partition({"a": jc.identity()}, labels).init(p)


def test_grad_flows_through_chain_with_ste():
    p = _params()
    t = jc.chain(threshold_mask(0.5), round_ste(0.25))
    c, s = t.init(p)
    g = jax.grad(lambda c: sum(jnp.sum(x) for x in jax.tree.leaves(t.apply(c, s))))(c)
    # STE: gradient 1 where kept, 0 where pruned
    _close(g, s.states[0].mask)


def test_check_same_structure_names_the_differing_paths():
    p = _params()
    jc.core.check_same_structure(p, jax.tree.map(jnp.zeros_like, p))
    q = {"Dense_0": p["Dense_0"]}
    with pytest.raises(jc.errors.StructureMismatchError, match="Dense_1"):
        jc.core.check_same_structure(p, q, what="params and mask")

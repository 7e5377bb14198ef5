"""The transform protocol and its combinators: order of chain, partition, masked, identity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _toys import Scaled
from _toys import counter
from _toys import factor_out
from _toys import round_ste
from _toys import threshold_mask
from flax import linen as nn

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
    t = jc.chain(factor_out(2.0), round_ste(1.0))
    c, s = t.init(p)
    # the rounding runs on the factors first, then the factored-out scale is multiplied back
    _close(t.apply(c, s), jax.tree.map(lambda w: 2.0 * jnp.round(w / 2.0), p))
    assert isinstance(c["Dense_0"]["kernel"], Scaled)  # the node sits at the leaf's own path
    _close(jc.to_dense(t.finalize(c, s)), t.apply(c, s))


def test_chain_refuses_an_order_that_would_lose_an_effect():
    """Rounding the rebuilt dense weights cannot be kept in the factored encoding."""
    with pytest.raises(jc.errors.CompositionError, match=r"chain\(b, a\) composes them"):
        jc.chain(round_ste(1.0), factor_out(2.0)).init(_params())


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
    t = jc.chain(counter(), factor_out(2.0))
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


def test_partition_with_structure_change_keeps_paths():
    p = _params()
    labels = {"Dense_0": {"kernel": "f", "bias": "id"}, "Dense_1": {"kernel": "r", "bias": "id"}}
    t = jc.partition({"f": factor_out(2.0), "r": round_ste(1.0), "id": jc.identity()}, labels)
    c, s = t.init(p)
    # no label in the paths: the node sits where the kernel was, its children below it
    assert jc.core.leaf_paths(c) == [
        "Dense_0/bias",
        "Dense_0/kernel/w",
        "Dense_0/kernel/s",
        "Dense_1/bias",
        "Dense_1/kernel",
    ]
    out = jax.jit(t.apply)(c, s)
    _close(out["Dense_0"], p["Dense_0"])
    _close(out["Dense_1"]["kernel"], jnp.round(p["Dense_1"]["kernel"]))
    c2, s2 = jax.jit(lambda c, s: t.update(c, s, step=3))(c, s)
    assert int(s2.inner_states["r"].calls) == 1
    assert jax.tree.structure(c2) == jax.tree.structure(c)
    assert isinstance(t.finalize(c, s)["Dense_0"]["kernel"], Scaled)


def test_masked_then_selector_finds_factors():
    """A transform after a masked rewrite names the factors by the kernel's own path."""
    p = _params()
    t = jc.chain(
        jc.masked(factor_out(2.0), jc.select.by_regex("Dense_0/kernel")),
        jc.masked(round_ste(1.0), [("Dense_0/kernel/w", True), (".*", False)]),
    )
    c, s = t.init(p)
    assert "Dense_0/kernel/w" in jc.core.leaf_paths(c)
    _close(t.apply(c, s)["Dense_0"]["kernel"], 2.0 * jnp.round(p["Dense_0"]["kernel"] / 2.0))
    sel = jc.select.resolve(None, c)  # kernels() selects the factor and the other kernel
    assert sel["Dense_0"]["kernel"].w and sel["Dense_1"]["kernel"]
    assert not sel["Dense_0"]["kernel"].s and not sel["Dense_0"]["bias"]


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


def test_factorize_prune_quantize_bakes_nested_nodes_the_adapter_runs():
    """The survey's composition: low-rank factors, pruned, each quantized to int8 codes."""
    model = nn.Dense(6)
    x = jax.random.normal(jax.random.key(2), (3, 12))
    variables = model.init(jax.random.key(0), x)
    t = jc.chain(
        jc.lowrank.svd(rank=4), jc.prune.magnitude(sparsity=0.5), jc.quant.fake_quant(bits=8)
    )
    c, s = t.init(variables["params"])
    assert set(jc.core.leaf_paths(c)) == {"bias", "kernel/u", "kernel/v"}  # factors at the kernel
    fin = t.finalize(c, s)
    node = fin["kernel"]
    assert isinstance(node, jc.lowrank.LowRank)
    assert all(isinstance(f, jc.quant.QuantizedArray) for f in (node.u, node.v))
    assert int(jnp.sum(node.u.codes == 0)) == node.u.codes.size // 2  # the pruned half at code 0
    _close(jc.to_dense(fin), t.apply(c, s))
    assert jc.core.nbytes(fin) == node.u.nbytes + node.v.nbytes + fin["bias"].nbytes
    fast = jc.adapt.run_factorized(model.apply)({"params": fin}, x)
    _close(fast, model.apply({"params": t.apply(c, s)}, x))

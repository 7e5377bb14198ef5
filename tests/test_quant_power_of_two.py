"""jaxcomp.quant.power_of_two: values 0 or ±2^k in range, straight-through, baked = trained."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcomp as jc
from jaxcomp import quant


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {
        "Conv_0": {"kernel": jax.random.normal(k1, (3, 3, 2, 4)), "bias": jnp.ones(4)},
        "Dense_0": {"kernel": 0.05 * jax.random.normal(k2, (8, 3)), "bias": jnp.ones(3)},
    }


@pytest.mark.parametrize("bits", [2, 3, 4, 6])
def test_every_finalized_value_is_zero_or_a_power_of_two_in_range(bits):
    p = _params()
    t = quant.power_of_two(bits=bits)
    fin = t.finalize(*t.init(p))
    for name in ("Conv_0", "Dense_0"):
        w = np.asarray(p[name]["kernel"])
        v = np.asarray(jc.to_dense(fin[name]["kernel"]))
        k_max = np.round(np.log2(np.abs(w).max()))
        k_min = k_max - (2 ** (bits - 1) - 2)
        nz = v[v != 0]
        k = np.log2(np.abs(nz))
        assert np.array_equal(k, np.round(k))  # exact powers of two
        assert k.min() >= k_min and k.max() <= k_max
        assert np.array_equal(np.sign(nz), np.sign(w[v != 0]))
        # each nonzero weight sits at its rounded log2; the zeros are the ones below the range
        np.testing.assert_array_equal(k, np.minimum(np.round(np.log2(np.abs(w[v != 0]))), k_max))
        assert (np.round(np.log2(np.abs(w[v == 0]))) < k_min).all()
        assert len(np.unique(v)) <= 2**bits - 1
    assert bool(jnp.all(fin["Dense_0"]["bias"] == 1.0))  # not selected


def test_straight_through_gradient_and_bits_per_leaf():
    p = _params()
    t = quant.power_of_two(bits=[("Conv_0", 3), ("Dense_0", 5)])
    c, s = t.init(p)
    upstream = jax.tree.map(lambda x: jax.random.normal(jax.random.key(1), x.shape), p)
    loss = lambda c: sum(
        jnp.sum(a * b) for a, b in zip(jax.tree.leaves(t.apply(c, s)), jax.tree.leaves(upstream))
    )
    g = jax.grad(loss)(c)
    jax.tree.map(np.testing.assert_allclose, g, upstream)  # d apply / d w is the identity
    fin = t.finalize(c, s)
    assert fin["Conv_0"]["kernel"].codes.dtype == jnp.int8
    assert int(jnp.max(jnp.abs(fin["Conv_0"]["kernel"].codes))) <= 3  # 2^(3-1) - 1 levels
    assert int(jnp.max(jnp.abs(fin["Dense_0"]["kernel"].codes))) > 3


def test_to_dense_of_finalize_equals_apply_and_the_node_counts_its_bytes():
    p = _params()
    t = quant.power_of_two(bits=4)
    c, s = t.init(p)
    jax.tree.map(np.testing.assert_array_equal, jc.to_dense(t.finalize(c, s)), t.apply(c, s))
    node = t.finalize(c, s)["Dense_0"]["kernel"]
    assert jc.is_compressed(node) and node.nbytes == 8 * 3 + 4  # int8 codes and an int32 k_min


def test_bits_out_of_range_names_the_argument():
    with pytest.raises(ValueError, match=r"power_of_two: bits must be an int in \[2, 8\], got 9"):
        quant.power_of_two(bits=9)

"""Net2Net: wider and deeper models compute what the original did."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from jaxcomp import distill

X_VEC = jax.random.normal(jax.random.key(10), (3, 7))
X_IMG = jax.random.normal(jax.random.key(11), (2, 6, 6, 2))
TOL = {"rtol": 1e-4, "atol": 1e-5}


def _mlp(features):
    return distill.MLP(features=features, num_classes=3)


def _conv(features, **kw):
    kw = {
        "hidden": (5,),
        "num_classes": 3,
        "kernel_size": 3,
        "padding": "SAME",
        "pool": False,
        **kw,
    }
    return distill.ConvNet(features=features, **kw)


@pytest.fixture(scope="module")
def mlp_params():
    return jax.jit(_mlp((4, 5)).init)(jax.random.key(0), X_VEC)["params"]


_APPLY = {}


def _mlp_apply(features):
    """One jitted ``apply`` per width, shared by the examples (a new one compiles again)."""
    if features not in _APPLY:
        _APPLY[features] = jax.jit(_mlp(features).apply)
    return _APPLY[features]


@settings(max_examples=10, deadline=None)
@given(
    extra=st.sampled_from([0, 3, 9]), seed=st.integers(0, 2**16), noise=st.sampled_from([0.0, 0.3])
)
def test_wider_dense_keeps_the_output(mlp_params, extra, seed, noise):
    new = distill.wider(
        mlp_params, "Dense_0", "Dense_1", 4 + extra, key=jax.random.key(seed), noise=noise
    )
    assert new["Dense_0"]["kernel"].shape == (7, 4 + extra)
    assert new["Dense_1"]["kernel"].shape == (4 + extra, 5)
    ref = _mlp_apply((4, 5))({"params": mlp_params}, X_VEC)
    out = _mlp_apply((4 + extra, 5))({"params": new}, X_VEC)
    np.testing.assert_allclose(out, ref, **TOL)


def test_wider_replicates_units_and_splits_their_outgoing_weights(mlp_params):
    new = distill.wider(mlp_params, "Dense_1", "Dense_2", 9, key=jax.random.key(0))
    k, kn = np.asarray(new["Dense_1"]["kernel"]), np.asarray(new["Dense_2"]["kernel"])
    old_k = np.asarray(mlp_params["Dense_1"]["kernel"])
    old_kn = np.asarray(mlp_params["Dense_2"]["kernel"])
    # each new unit is a copy of an old one (the first 5 are the old ones, in order)
    np.testing.assert_array_equal(k[:, :5], old_k)
    src = np.array([int(np.argmin(np.abs(old_k - k[:, j : j + 1]).sum(0))) for j in range(9)])
    np.testing.assert_array_equal(k, old_k[:, src])
    np.testing.assert_array_equal(
        new["Dense_1"]["bias"], np.asarray(mlp_params["Dense_1"]["bias"])[src]
    )
    counts = np.bincount(src, minlength=5)
    assert counts.sum() == 9 and (counts >= 1).all()
    np.testing.assert_allclose(kn, old_kn[src] / counts[src][:, None], rtol=1e-6)
    # noise breaks the symmetry between replicas while keeping their sum
    noisy = distill.wider(mlp_params, "Dense_1", "Dense_2", 9, key=jax.random.key(0), noise=0.5)
    rep = np.flatnonzero(counts[src] > 1)
    assert not np.allclose(np.asarray(noisy["Dense_2"]["kernel"])[rep], kn[rep])
    seg = jax.ops.segment_sum(noisy["Dense_2"]["kernel"], jnp.asarray(src), num_segments=5)
    np.testing.assert_allclose(seg, old_kn, rtol=1e-4, atol=1e-6)


def test_wider_conv_into_conv_and_into_flattened_dense():
    small = _conv((3, 4))
    p = jax.jit(small.init)(jax.random.key(0), X_IMG)["params"]
    ref = jax.jit(small.apply)({"params": p}, X_IMG)
    p1 = distill.wider(p, "Conv_0", "Conv_1", 7, key=jax.random.key(1), noise=0.1)
    np.testing.assert_allclose(jax.jit(_conv((7, 4)).apply)({"params": p1}, X_IMG), ref, **TOL)
    # Conv_1 -> flatten -> Dense_0: each spatial position's channel block is remapped
    p2 = distill.wider(p1, "Conv_1", "Dense_0", 6, key=jax.random.key(2), noise=0.1)
    assert p2["Dense_0"]["kernel"].shape == (6 * 6 * 6, 5)
    np.testing.assert_allclose(jax.jit(_conv((7, 6)).apply)({"params": p2}, X_IMG), ref, **TOL)


def test_wider_through_batch_norm_with_statistics():
    small = _conv((3, 4), norm=True)
    v = jax.jit(small.init)(jax.random.key(0), X_IMG)
    # give the statistics non-trivial values, as after training
    stats = jax.tree.map(lambda a: a + np.random.default_rng(5).random(a.shape), v["batch_stats"])
    p = jax.tree.map(lambda a: a + 0.1 * np.random.default_rng(6).normal(size=a.shape), v["params"])
    ref = jax.jit(small.apply)({"params": p, "batch_stats": stats}, X_IMG)
    p2, s2 = distill.wider(
        p, "Conv_0", "Conv_1", 5, key=jax.random.key(1), norm="BatchNorm_0", batch_stats=stats
    )
    out = jax.jit(_conv((5, 4), norm=True).apply)({"params": p2, "batch_stats": s2}, X_IMG)
    np.testing.assert_allclose(out, ref, **TOL)


def test_deeper_dense_inserts_an_identity_layer_and_renumbers(mlp_params):
    new = distill.deeper(mlp_params, "Dense_0")
    assert sorted(new) == ["Dense_0", "Dense_1", "Dense_2", "Dense_3"]
    np.testing.assert_array_equal(new["Dense_1"]["kernel"], jnp.eye(4))
    np.testing.assert_array_equal(new["Dense_2"]["kernel"], mlp_params["Dense_1"]["kernel"])
    ref = _mlp_apply((4, 5))({"params": mlp_params}, X_VEC)
    np.testing.assert_allclose(jax.jit(_mlp((4, 4, 5)).apply)({"params": new}, X_VEC), ref, **TOL)
    # deeper after the last hidden layer, then wider: the composed growth keeps the function
    grown = distill.deeper(new, "Dense_2")
    grown = distill.wider(grown, "Dense_3", "Dense_4", 8, key=jax.random.key(0), noise=0.2)
    np.testing.assert_allclose(
        jax.jit(_mlp((4, 4, 5, 8)).apply)({"params": grown}, X_VEC), ref, **TOL
    )


def test_deeper_conv_uses_a_centered_identity_kernel():
    small = _conv((3, 4))
    p = jax.jit(small.init)(jax.random.key(0), X_IMG)["params"]
    new = distill.deeper(p, "Conv_0")
    k = new["Conv_1"]["kernel"]
    assert k.shape == (3, 3, 3, 3)
    np.testing.assert_array_equal(k[1, 1], jnp.eye(3))
    assert float(jnp.sum(jnp.abs(k))) == 3.0
    ref = jax.jit(small.apply)({"params": p}, X_IMG)
    deep_apply = jax.jit(_conv((3, 3, 4)).apply)  # compiled once for both checks
    np.testing.assert_allclose(deep_apply({"params": new}, X_IMG), ref, **TOL)
    noisy = distill.deeper(p, "Conv_0", key=jax.random.key(0), noise=1e-3)
    out = deep_apply({"params": noisy}, X_IMG)
    assert 0 < float(jnp.max(jnp.abs(out - ref))) < 0.1  # noise changes it, slightly


class Body(nn.Module):
    depth: int

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(4)(x))
        return x


class Wrapped(nn.Module):
    depth: int = 2

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(4)(x))
        return nn.Dense(2, name="head")(Body(self.depth, name="body")(x))


def test_deeper_renumbers_inside_a_nested_module():
    p = jax.jit(Wrapped(2).init)(jax.random.key(0), X_VEC)["params"]
    new = distill.deeper(p, "body/Dense_0")
    assert sorted(new["body"]) == ["Dense_0", "Dense_1", "Dense_2"]
    assert sorted(new) == ["Dense_0", "body", "head"]  # the top-level Dense_0 is not renumbered
    np.testing.assert_array_equal(new["body"]["Dense_2"]["kernel"], p["body"]["Dense_1"]["kernel"])
    ref = jax.jit(Wrapped(2).apply)({"params": p}, X_VEC)
    np.testing.assert_allclose(jax.jit(Wrapped(3).apply)({"params": new}, X_VEC), ref, **TOL)
    named = distill.deeper(p, "body/Dense_0", new_name="extra")
    assert sorted(named["body"]) == ["Dense_0", "Dense_1", "extra"]


def test_net2net_rejects_bad_arguments(mlp_params):
    k = jax.random.key(0)
    with pytest.raises(ValueError, match=r"not a layer.*Dense_0"):
        distill.wider(mlp_params, "Dense_9", "Dense_1", 8, key=k)
    with pytest.raises(ValueError, match="new_width"):
        distill.wider(mlp_params, "Dense_0", "Dense_1", 3, key=k)
    with pytest.raises(ValueError, match="multiple"):
        distill.wider(mlp_params, "Dense_0", "Dense_2", 8, key=k)  # 5 inputs, 4 units
    with pytest.raises(ValueError, match="noise"):
        distill.wider(mlp_params, "Dense_0", "Dense_1", 8, key=k, noise=-1.0)
    with pytest.raises(ValueError, match="batch_stats needs norm"):
        distill.wider(mlp_params, "Dense_0", "Dense_1", 8, key=k, batch_stats={})
    with pytest.raises(ValueError, match="odd"):
        distill.deeper({"Conv_0": {"kernel": jnp.ones((3, 3, 2, 2))}}, "Conv_0", kernel_size=(2, 3))
    with pytest.raises(ValueError, match="suffix"):
        distill.deeper({"head": {"kernel": jnp.ones((2, 2))}}, "head")
    with pytest.raises(ValueError, match="already"):
        distill.deeper(mlp_params, "Dense_0", new_name="Dense_1")
    with pytest.raises(ValueError, match="key"):
        distill.deeper(mlp_params, "Dense_0", noise=0.1)

"""The interception machinery that apply adapters share."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import jaxcomp as jc


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(6)(x))
        return nn.Dense(3, name="head")(x)


@pytest.fixture(scope="module")
def net_and_vars():
    net = Net()
    return net, net.init(jax.random.key(0), jnp.ones((2, 4)))


def _factored(layer):
    p = layer.params
    if "u" not in p:
        return jc.adapt.PASS
    return layer.args[0] @ p["u"] @ p["v"] + p["bias"][None, :]


def test_layer_runs_from_params_of_another_shape(net_and_vars):
    net, v = net_and_vars
    k = v["params"]["head"]["kernel"]  # 6x3, replaced by exact rank-3 factors 6x3 @ 3x3
    u, s, vt = jnp.linalg.svd(k, full_matrices=False)
    params = dict(v["params"])
    params["head"] = {"u": u * s[None, :], "v": vt, "bias": params["head"]["bias"]}
    x = jax.random.normal(jax.random.key(1), (2, 4))
    run = jax.jit(jc.adapt.intercept(net.apply, _factored))
    np.testing.assert_allclose(run({"params": params}, x), net.apply(v, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception):  # noqa: B017 - the layer's own code rejects the new shapes
        net.apply({"params": params}, x)


def test_handler_sees_paths_and_first_non_pass_wins(net_and_vars):
    net, v = net_and_vars
    seen = []

    def record(layer):
        seen.append(layer.path)
        return jc.adapt.PASS

    zero_head = lambda layer: jnp.zeros((2, 3)) if layer.path == "head" else jc.adapt.PASS
    ones = lambda layer: jnp.ones((2, 3))
    out = jc.adapt.intercept(net.apply, [record, zero_head])(v, jnp.ones((2, 4)))
    assert seen == ["", "Dense_0", "head"]
    np.testing.assert_array_equal(out, jnp.zeros((2, 3)))
    seen.clear()
    out = jc.adapt.intercept(net.apply, [record, zero_head, ones])(v, jnp.ones((2, 4)))
    assert seen == [""]  # the model itself was answered by `ones`; no layer ran
    np.testing.assert_array_equal(out, jnp.ones((2, 3)))


def test_bad_handler():
    with pytest.raises(TypeError, match="handler 1"):
        jc.adapt.intercept(lambda *a: None, [lambda layer: None, 3])

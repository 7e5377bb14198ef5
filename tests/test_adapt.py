"""The interception machinery that apply adapters share: intercept, capture, layer_config."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

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


# --- capture ----------------------------------------------------------------------------------


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(5)(x)
        return nn.BatchNorm(use_running_average=not train)(x)


class Nested(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(Block(name="block")(x, train))
        return nn.Dense(3)(x)


@pytest.fixture(scope="module")
def nested():
    model = Nested()
    return model, jax.jit(model.init)(jax.random.key(0), jnp.ones((2, 4)))


def test_capture_returns_the_named_layers_inputs_and_outputs(nested):
    model, v = nested
    x = jax.random.normal(jax.random.key(1), (2, 4))
    names = ["block/Dense_0", "block", "Dense_0"]
    run = jax.jit(jc.adapt.capture(model.apply, inputs="Dense_0", outputs=names))
    out, got = run(v, x)
    assert set(got.outputs) == set(names) and set(got.inputs) == {"Dense_0"}
    np.testing.assert_allclose(out, model.apply(v, x), rtol=1e-6)
    p = v["params"]["block"]["Dense_0"]
    np.testing.assert_allclose(
        got.outputs["block/Dense_0"], x @ p["kernel"] + p["bias"][None, :], rtol=1e-5
    )
    h = jax.nn.relu(got.outputs["block"])
    np.testing.assert_allclose(got.inputs["Dense_0"], h, rtol=1e-6)
    q = v["params"]["Dense_0"]
    np.testing.assert_allclose(h @ q["kernel"] + q["bias"][None, :], out, rtol=1e-5, atol=1e-6)
    # with mutable collections the output is (logits, new_state), as from apply
    run = jc.adapt.capture(model.apply, outputs="block")
    (_, st2), got2 = run(v, x, train=True, mutable=["batch_stats"])
    assert "batch_stats" in st2 and got2.outputs["block"].shape == (2, 5)


def test_capture_is_differentiable(nested):
    model, v = nested
    x = jax.random.normal(jax.random.key(1), (2, 4))
    run = jc.adapt.capture(model.apply, outputs="block/Dense_0")
    g = jax.grad(lambda xx: jnp.sum(run(v, xx)[1].outputs["block/Dense_0"]))(x)
    k = v["params"]["block"]["Dense_0"]["kernel"]
    np.testing.assert_allclose(g, jnp.broadcast_to(k.sum(1), x.shape), rtol=1e-5)


def test_capture_unknown_names_and_bad_selections(nested):
    model, v = nested
    with pytest.raises(ValueError, match=r"block/BatchNorm_0") as e:
        jc.adapt.capture(model.apply, outputs=["Dense_7"])(v, jnp.ones((2, 4)))
    assert "Dense_7" in str(e.value)
    with pytest.raises(ValueError, match="matches no"):
        jc.adapt.capture(model.apply, inputs=re.compile("Conv"))(v, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="repeat"):
        jc.adapt.capture(model.apply, outputs=["Dense_0", "Dense_0"])
    with pytest.raises(ValueError, match="inputs"):
        jc.adapt.capture(model.apply, inputs=3)
    with pytest.raises(ValueError, match="BatchNorm"):  # rows of a layer that has no kernel
        jc.adapt.capture(model.apply, inputs="block/BatchNorm_0", rows=True)(v, jnp.ones((2, 4)))


def test_captured_rows_of_a_shared_layer_hold_every_call():
    class Twice(nn.Module):
        @nn.compact
        def __call__(self, x):
            d = nn.Dense(3)
            return d(d(x))

    m = Twice()
    x = jax.random.normal(jax.random.key(0), (2, 3))
    v = m.init(jax.random.key(1), x)
    _, got = jc.adapt.capture(m.apply, inputs="Dense_0", rows=True)(v, x)
    _, last = jc.adapt.capture(m.apply, inputs="Dense_0")(v, x)
    p = v["params"]["Dense_0"]
    np.testing.assert_allclose(got.inputs["Dense_0"][:2], x)
    np.testing.assert_allclose(
        got.inputs["Dense_0"][2:], x @ p["kernel"] + p["bias"][None, :], rtol=1e-6
    )
    np.testing.assert_allclose(last.inputs["Dense_0"], got.inputs["Dense_0"][2:])


# --- one configuration view for linen and NNX -------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=(3, 3)),
        dict(kernel_size=(3, 2), strides=(2, 1), padding="VALID", use_bias=False),
        dict(kernel_size=(3,), padding=((1, 2),), kernel_dilation=2),
        dict(kernel_size=(2, 2), padding=1, input_dilation=(2, 1), feature_group_count=2),
        dict(kernel_size=(3, 3), padding="CIRCULAR", precision=jax.lax.Precision.HIGHEST),
    ],
)
def test_layer_config_is_the_same_for_linen_and_nnx(kw):
    lin = jc.adapt.layer_config(nn.Conv(4, **kw))
    nx = jc.adapt.layer_config(nnx.Conv(2, 4, **kw, rngs=nnx.Rngs(0)))
    assert lin == nx and lin.kind == "conv" and lin.default_product
    assert len(lin.strides) == len(lin.kernel_size) == len(lin.kernel_dilation)
    dense = jc.adapt.layer_config(nn.Dense(4, use_bias=False))
    assert dense == jc.adapt.layer_config(nnx.Linear(2, 4, use_bias=False, rngs=nnx.Rngs(0)))
    assert (dense.kind, dense.features, dense.use_bias, dense.ndim) == ("dense", 4, False, 1)
    assert jc.adapt.layer_config(nn.BatchNorm()) is None
    assert jc.adapt.layer_config(nnx.ConvTranspose(2, 4, (3, 3), rngs=nnx.Rngs(0))) is None
    custom = nnx.Linear(2, 4, dot_general=lambda *a, **k: jax.lax.dot_general(*a, **k),
                        rngs=nnx.Rngs(0))  # fmt: skip
    assert not jc.adapt.layer_config(custom).default_product

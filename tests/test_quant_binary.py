"""jaxcomp.quant binary and ternary weights: BinaryConnect, XNOR-Net scales, TWN, ternary
connect, loss-aware binarization, weight noise."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcomp import quant


def _params(key=0, shape=(10, 6)):
    w = jax.random.normal(jax.random.key(key), shape) * jnp.linspace(0.1, 1.0, shape[-1])[None, :]
    return {"Dense_0": {"kernel": w, "bias": jnp.zeros(shape[-1])}}


def test_xnor_scale_is_the_closed_form_mean_abs_per_channel():
    p = _params()
    w = np.asarray(p["Dense_0"]["kernel"])
    t = quant.binary_weights()
    c, s = t.init(p)
    out = np.asarray(t.apply(c, s)["Dense_0"]["kernel"])
    alpha = np.abs(w).mean(axis=0)
    np.testing.assert_allclose(out, alpha[None, :] * np.where(w >= 0, 1, -1), rtol=1e-6)
    fin = t.finalize(c, s)["Dense_0"]["kernel"]
    np.testing.assert_allclose(fin.scale, alpha, rtol=1e-6)
    assert set(np.unique(np.asarray(fin.codes)).tolist()) == {-1, 1} and fin.bits == 1
    # alpha minimizes ||W - a * sign(W)||^2 per channel: any other scale does worse
    b = np.where(w >= 0, 1, -1)
    for f in (0.9, 1.1):
        assert np.all(((w - f * alpha * b) ** 2).sum(0) > ((w - alpha * b) ** 2).sum(0))
    t = quant.binary_weights(per_channel=False)
    np.testing.assert_allclose(np.abs(t.apply(*t.init(p))["Dense_0"]["kernel"]),
                               np.abs(w).mean(), rtol=1e-6)  # fmt: skip


def test_twn_threshold_and_scale_closed_form():
    p = _params(shape=(40, 5))
    w = np.asarray(p["Dense_0"]["kernel"])
    t = quant.ternary_weights()
    c, s = t.init(p)
    delta = 0.7 * np.abs(w).mean()
    big = np.abs(w) > delta
    alpha = np.abs(w)[big].mean()
    np.testing.assert_allclose(t.apply(c, s)["Dense_0"]["kernel"], alpha * np.sign(w) * big,
                               rtol=1e-6)  # fmt: skip
    fin = t.finalize(c, s)["Dense_0"]["kernel"]
    assert set(np.unique(np.asarray(fin.codes)).tolist()) == {-1, 0, 1}
    g = jax.grad(lambda c: jnp.sum(t.apply(c, s)["Dense_0"]["kernel"] * 3.0))(c)
    np.testing.assert_allclose(g["Dense_0"]["kernel"], 3.0)  # straight through
    with pytest.raises(ValueError, match="threshold"):
        quant.ternary_weights(threshold=2.5)


def test_binary_connect_deterministic_hard_tanh_gradient_and_clipping():
    w = jnp.array([[-2.0, -0.3], [0.0, 0.4], [0.9, 1.5]])
    p = {"Dense_0": {"kernel": w}}
    t = quant.binary_connect(scale=1.0)
    c, s = t.init(p)
    np.testing.assert_array_equal(t.apply(c, s)["Dense_0"]["kernel"], np.where(w >= 0, 1, -1))
    g = jax.grad(lambda c: jnp.sum(t.apply(c, s)["Dense_0"]["kernel"]))(c)["Dense_0"]["kernel"]
    np.testing.assert_array_equal(g, np.abs(w) <= 1)
    c2, _ = t.update(c, s, step=1)
    np.testing.assert_allclose(c2["Dense_0"]["kernel"], np.clip(w, -1, 1))
    h = quant.glorot_scale((3, 2))
    assert h == pytest.approx(np.sqrt(1.5 / 5))
    t = quant.binary_connect(scale="glorot")
    np.testing.assert_allclose(np.abs(t.apply(*t.init(p))["Dense_0"]["kernel"]), h, rtol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        quant.binary_connect(scale=-1.0)
    with pytest.raises(ValueError, match=r"binary_connect: key .*rounding='stochastic'"):
        quant.binary_connect(rounding="stochastic")
    with pytest.raises(ValueError, match="rounding must be one of"):
        quant.binary_connect(rounding="up")


@pytest.mark.parametrize("kind", ["binary", "ternary"])
def test_stochastic_binary_and_ternary_are_unbiased(kind):
    w = jnp.linspace(-0.9, 0.9, 12).reshape(3, 4)
    p = {"Dense_0": {"kernel": w}}
    if kind == "binary":
        t = quant.binary_connect(rounding="stochastic", key=jax.random.key(0))
        values = {-1.0, 1.0}
    else:
        t = quant.ternary_connect(key=jax.random.key(0))
        values = {-1.0, 0.0, 1.0}
    c, s = t.init(p)
    step = jax.jit(lambda s: t.update(c, s, step=0)[1])
    app = jax.jit(lambda s: t.apply(c, s)["Dense_0"]["kernel"])
    draws = []
    for _ in range(600):
        draws.append(app(s))
        s = step(s)
    draws = jnp.stack(draws)
    assert set(np.unique(np.asarray(draws)).tolist()) <= values
    np.testing.assert_allclose(draws.mean(0), w, atol=0.12)  # E[w_b] = w


def test_lab_scale_closed_form_with_adams_second_moment():
    p = _params()
    t = quant.loss_aware_binary(b2=0.999, eps=1e-8)
    c, s = t.init(p)
    w = p["Dense_0"]["kernel"]
    # before any curvature: d = 1, the BWN scale
    np.testing.assert_allclose(jnp.abs(t.apply(c, s)["Dense_0"]["kernel"]), jnp.mean(jnp.abs(w)),
                               rtol=1e-6)  # fmt: skip
    opt = optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-8)
    opt_state = opt.init(c)
    upd = jax.jit(lambda c, s, g: t.update(c, s, step=0, grads=g))
    for i in range(3):
        g = jax.tree.map(lambda x, i=i: jnp.sin(x * (i + 1)), c)
        _, opt_state = opt.update(g, opt_state, c)
        c, s = upd(c, s, g)
    nu = opt_state[0].nu
    np.testing.assert_allclose(s.nu["Dense_0"]["kernel"], nu["Dense_0"]["kernel"], rtol=1e-6)
    d = np.sqrt(np.asarray(nu["Dense_0"]["kernel"]) / (1 - 0.999**3)) + 1e-8
    alpha = np.sum(d * np.abs(np.asarray(w))) / np.sum(d)  # ||d * w||_1 / ||d||_1
    out = np.asarray(t.apply(c, s)["Dense_0"]["kernel"])
    np.testing.assert_allclose(out, alpha * np.where(np.asarray(w) >= 0, 1, -1), rtol=1e-5)
    np.testing.assert_allclose(quant.lab_scale(w, jnp.asarray(d)), alpha, rtol=1e-5)
    fin = t.finalize(c, s)["Dense_0"]["kernel"]
    np.testing.assert_allclose(fin.scale, alpha, rtol=1e-5)
    g = jax.grad(lambda c: jnp.sum(t.apply(c, s)["Dense_0"]["kernel"] * 2.0))(c)
    np.testing.assert_allclose(g["Dense_0"]["kernel"], 2.0)  # straight through


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_noise_is_fresh_each_step_and_finalize_is_clean(kind):
    p = _params(shape=(64, 32))
    w = p["Dense_0"]["kernel"]
    t = quant.noise(std=0.2, kind=kind, key=jax.random.key(0))
    c, s = t.init(p)
    a = t.apply(c, s)["Dense_0"]["kernel"]
    c, s2 = t.update(c, s, step=1)
    b = t.apply(c, s2)["Dense_0"]["kernel"]
    assert not bool(jnp.allclose(a, b))
    np.testing.assert_array_equal(t.apply(c, s)["Dense_0"]["kernel"], a)  # same key, same noise
    rel = (a - w) / (jnp.sqrt(jnp.mean(w**2)) if kind == "additive" else w)
    assert 0.17 < float(jnp.std(rel)) < 0.23
    np.testing.assert_array_equal(t.finalize(c, s2)["Dense_0"]["kernel"], w)
    np.testing.assert_array_equal(t.apply(c, s)["Dense_0"]["bias"], p["Dense_0"]["bias"])
    with pytest.raises(ValueError, match="kind"):
        quant.noise(std=0.1, kind="salt", key=jax.random.key(0))
    with pytest.raises(ValueError, match="std"):
        quant.noise(std=-0.1, key=jax.random.key(0))

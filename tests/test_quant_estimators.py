"""Straight-through estimators, quantized back-propagation and the exact integer paths.

Each estimator's defining gradient against ``jax.vjp`` of the float layer at the right operands;
the power-of-two and int8 error signals that reach the backward products; stochastic rounding
unbiased over keys; every integer path bit-identical to an integer reference.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from jax import lax

import jaxcomp as jc
from jaxcomp import quant
from jaxcomp.quant import _intdot
from jaxcomp.quant._backprop import POW2_EXPONENTS
from jaxcomp.quant._intops import int_linear
from jaxcomp.quant._intops import qat_linear

K_IN, N_OUT = 4, 3


@pytest.fixture(scope="module")
def dense():
    """A linen Dense and an NNX Linear with the same params, and an input batch."""
    rng = np.random.default_rng(0)
    params = {
        "kernel": jnp.asarray(rng.normal(size=(K_IN, N_OUT)), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=(N_OUT,)), jnp.float32),
    }
    x = jnp.asarray(rng.normal(size=(5, K_IN)), jnp.float32)
    r = jnp.asarray(rng.normal(size=(5, N_OUT)), jnp.float32)
    nnx_apply, _ = jc.adapt.functional(nnx.Linear(K_IN, N_OUT, rngs=nnx.Rngs(0)))
    return nn.Dense(N_OUT).apply, nnx_apply, params, x, r


def _fq_input(x):
    """The affine 8-bit fake quantization of the batch's own range (what the adapter does)."""
    sx, zx = quant.qparams_from_range(jnp.min(x), jnp.max(x), bits=8, symmetric=False)
    return quant.fake_quantize(x, sx, zx, bits=8, symmetric=False)


def _fq_kernel(w):
    wq, sw = quant.quantize_kernel(w, 8)
    return wq.astype(jnp.float32) * sw[None]


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize("int_matmul", [True, False])
def test_estimators_differentiate_at_their_operands(dense, api, int_matmul):
    linen_apply, nnx_apply, params, x, r = dense
    apply_fn = linen_apply if api == "linen" else nnx_apply
    x_hat = _fq_input(x)
    # int_matmul quantizes the kernel in the adapter; the fake path leaves it to a transform
    w_hat = _fq_kernel(params["kernel"]) if int_matmul else params["kernel"]
    grads = {}
    for est in quant.ESTIMATORS:
        q = quant.activations(apply_fn, [(".*", 8)], int_matmul=int_matmul, estimator=est)
        loss = lambda p, x, q=q: jnp.sum(q({"params": p}, x) * r)
        grads[est] = jax.grad(loss, (0, 1))(params, x)
    # the defining gradients: jax.vjp of the float layer at (x_hat, w_hat) or at (x, w), the
    # input's masked by the clipped STE (the zero point's rounding can leave an end of the
    # batch's range half a step outside the grid)
    mask = jax.grad(lambda x: jnp.sum(_fq_input(x)))(x)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    float_op = lambda a, b: a @ b
    for est, (a, b) in {"quantized": (x_hat, w_hat), "latent": (x, params["kernel"])}.items():
        dx, dw = jax.vjp(float_op, a, b)[1](r)
        (gp, gx) = grads[est]
        np.testing.assert_allclose(gp["kernel"], dw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gx, dx * mask, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gp["bias"], r.sum(0), rtol=1e-6)
    # and they differ: the kernel gradient by the input's rounding
    diff = jnp.abs(grads["latent"][0]["kernel"] - grads["quantized"][0]["kernel"])
    assert float(jnp.max(diff)) > 1e-4


def test_bad_estimator_and_backward_are_named():
    f = lambda v, x: x
    with pytest.raises(ValueError, match="estimator"):
        quant.activations(f, [(".*", 8)], estimator="qwix")
    with pytest.raises(ValueError, match="backward"):
        quant.activations(f, [(".*", 8)], backward="fp8")
    with pytest.raises(ValueError, match="estimator='quantized'"):
        quant.activations(f, [(".*", 8)], int_matmul=True, estimator="latent", backward="int8")
    with pytest.raises(ValueError, match="int_matmul=True"):
        quant.activations(f, [(".*", 8)], backward="int8")
    with pytest.raises(ValueError, match="path"):
        quant.activations(f, [(".*", 8)], int_matmul=True, path="fast")
    with pytest.raises(ValueError, match="path"):
        quant.run_int8(f, path="fast")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_subnormal=False, width=32), min_size=12, max_size=12))
def test_round_pow2_gives_the_nearest_power_of_two_in_the_log_domain(values):
    g = np.asarray(values, np.float32)
    p = np.asarray(quant.round_pow2(jnp.asarray(g)))
    nz = p != 0
    mant, _ = np.frexp(p[nz])
    assert np.all(np.abs(mant) == 0.5)  # +-2^e exactly
    assert np.all(np.sign(p[nz]) == np.sign(g[nz]))
    assert np.all(np.abs(np.log2(np.abs(p[nz])) - np.log2(np.abs(g[nz]))) <= 0.5 + 1e-6)
    # what became zero was zero, or more than POW2_EXPONENTS - 1 octaves below the largest
    if nz.any():
        top = np.max(np.abs(p))
        assert np.min(np.abs(p[nz])) >= top * 2.0 ** -(POW2_EXPONENTS - 1)
        assert np.all(np.abs(g[~nz]) <= top * 2.0 ** -(POW2_EXPONENTS - 1) * np.sqrt(2) * 1.0001)
    else:
        assert np.all(g == 0)


def test_pow2_backward_feeds_powers_of_two_to_the_products(dense):
    linen_apply, _, params, _, r = dense
    # the latent estimator with an identity input: the kernel gradient x^T g' is g' itself
    x = jnp.eye(K_IN, dtype=jnp.float32)[: r.shape[0] - 1]
    r = r[: x.shape[0]]
    q = quant.activations(linen_apply, [(".*", 8)], int_matmul=True, estimator="latent",
                          backward="pow2")  # fmt: skip
    gw, gx = jax.jit(jax.grad(lambda p, x: jnp.sum(q({"params": p}, x) * r), (0, 1)))(params, x)
    gp = quant.round_pow2(r)
    np.testing.assert_array_equal(gw["kernel"], x.T @ gp)
    _, exps = np.frexp(np.asarray(gw["kernel"]))
    np.testing.assert_array_equal(np.abs(np.asarray(gw["kernel"])), 2.0 ** (exps - 1.0))
    np.testing.assert_allclose(gx, gp @ params["kernel"].T, rtol=1e-6)


def test_stochastic_codes_are_unbiased_over_keys():
    v = jax.random.normal(jax.random.key(0), (6, 16))
    keys = jax.random.split(jax.random.key(1), 4096)
    codes, scale = jax.jit(jax.vmap(lambda k: quant.stochastic_codes(v, k, axis=-1)))(keys)
    assert jnp.all(codes == jnp.round(codes)) and jnp.all(jnp.abs(codes) <= 127)
    t = (v / scale[0])[None]
    assert jnp.all(jnp.abs(codes - t) < 1)  # floor or ceil of v / scale
    # tolerance: the rounding error of one draw is at most one step and has mean 0, so the mean of
    # 4096 draws is within 5 standard errors (<= 5 * 0.5 / 64 steps) with overwhelming probability
    err = jnp.abs(jnp.mean(codes, 0) - t[0])
    assert float(jnp.max(err)) < 5 * 0.5 / 64
    again = quant.stochastic_codes(v, keys[3], axis=-1)[0]
    np.testing.assert_array_equal(again, codes[3])  # the same key, the same codes


@pytest.mark.parametrize("layer", ["dense", "conv"])
def test_int8_backward_rounds_the_error_to_int8_codes_without_bias(layer):
    if layer == "dense":
        m, x = nn.Dense(N_OUT), 2.0 * jnp.eye(K_IN, dtype=jnp.float32)
    else:
        m = nn.Conv(N_OUT, (3, 3), padding="SAME", strides=2)
        x = jax.random.normal(jax.random.key(0), (1, 5, 5, 2))
    w = jax.random.normal(jax.random.key(1), jax.eval_shape(m.init, jax.random.key(0), x)
                          ["params"]["kernel"].shape)  # fmt: skip
    op = quant.contraction(m)
    symmetric = layer == "dense"
    sx, zx = quant.qparams_from_range(jnp.min(x), jnp.max(x), bits=8, symmetric=symmetric)
    r = jax.random.normal(jax.random.key(2), jax.eval_shape(lambda: op(x, w)).shape)

    def grads(key, backward):
        f = lambda x, w: jnp.sum(qat_linear(op, x, w, sx, zx, bits=8, symmetric=symmetric,
                                            backward=backward, key=key) * r)  # fmt: skip
        return jax.grad(f, (0, 1))(x, w)

    ref = jax.jit(lambda: grads(None, "float"))()
    keys = jax.random.split(jax.random.key(3), 256)
    gx, gw = jax.jit(jax.vmap(lambda k: grads(k, "int8")))(keys)
    # unbiased: the mean over keys is within 5 standard errors of the float gradient
    for g, want in ((gx, ref[0]), (gw, ref[1])):
        se = jnp.std(g, 0) / np.sqrt(len(keys))
        assert jnp.all(jnp.abs(jnp.mean(g, 0) - want) <= 5 * se + 1e-5)
        assert float(jnp.max(jnp.abs(g[0] - want))) > 0  # and one draw is not the float one
    if layer == "dense":
        # with x = 2 I (codes 127 I) the kernel gradient is x_hat^T g^ = 127 s_x s_2 codes: the
        # codes of g that reached the product are integers in [-127, 127]
        s2 = jnp.max(jnp.abs(r), axis=0) / 127
        codes = gw[0] / (127 * sx * s2)[None]
        np.testing.assert_allclose(codes, jnp.round(codes), atol=2e-3)
        assert float(jnp.max(jnp.abs(codes))) <= 127 + 2e-3
    with pytest.raises(ValueError, match="key"):
        jax.eval_shape(lambda: grads(None, "int8"))


def test_int8_backward_key_comes_from_the_calls_rngs(dense):
    linen_apply, nnx_apply, params, x, r = dense
    out = {}
    for api, apply_fn in (("linen", linen_apply), ("nnx", nnx_apply)):
        q = quant.activations(apply_fn, [(".*", 8)], int_matmul=True, backward="int8")
        g = jax.grad(lambda p, k, q=q: jnp.sum(q({"params": p}, x, rngs={"dropout": k}) * r))
        g = jax.jit(jax.vmap(g, (None, 0)))
        out[api] = g(params, jax.random.split(jax.random.key(0), 2))["kernel"][np.array([0, 0, 1])]
    a, b, c = out["linen"]
    np.testing.assert_array_equal(a, b)  # the same key, the same rounding
    assert float(jnp.max(jnp.abs(a - c))) > 0  # another key, another rounding
    for u, v in zip(out["linen"], out["nnx"]):
        np.testing.assert_allclose(u, v, rtol=1e-6)
    # jc.train passes the step's key as the "dropout" stream
    q = quant.activations(linen_apply, [(".*", 8)], int_matmul=True, backward="int8")
    state = jc.train.TrainState.create(apply_fn=q, variables={"params": params},
                                       tx=optax.sgd(0.1), key=jax.random.key(0))  # fmt: skip
    objective = jc.train.supervised_objective(train_kwarg=None)
    step = jc.train.make_train_step(objective, donate=False)
    state, metrics = step(state, (x, jnp.arange(5) % 3))
    assert np.isfinite(float(metrics["loss"]))


# --- exact integer paths ------------------------------------------------------------------------


def _codes(key, shape, lo=-128, hi=127):
    return jax.random.randint(key, shape, lo, hi + 1).astype(jnp.int8)


@pytest.mark.parametrize("layer", ["dense", "conv"])
def test_every_path_is_bit_identical_to_the_integer_reference(layer):
    if layer == "dense":
        m, shape = nn.Dense(5), (6, 40)
    else:
        m, shape = nn.Conv(5, (3, 3), strides=2, kernel_dilation=1, padding="SAME"), (2, 7, 7, 3)
    op = quant.contraction(m)
    xq = _codes(jax.random.key(0), shape)
    w_shape = (40, 5) if layer == "dense" else (3, 3, 3, 5)
    wq = _codes(jax.random.key(1), w_shape, -127)
    if layer == "dense":
        ref = np.asarray(xq, np.int64) @ np.asarray(wq, np.int64)
    else:  # XLA's integer convolution, not the im2col matmul the int8 path uses
        dn = ("NHWC", "HWIO", "NHWC")
        ref = lax.conv_general_dilated(xq.astype(jnp.int32), wq.astype(jnp.int32), (2, 2), "SAME",
                                       dimension_numbers=dn)  # fmt: skip
    k = int(np.prod(w_shape[:-1]))
    sx, zx, sw = jnp.float32(0.013), jnp.float32(-7.0), jnp.linspace(0.01, 0.02, 5)

    @jax.jit
    def run(xq, wq):
        accs = [_intdot.contract(op, xq, wq, k=k, amax=128, bmax=127, path=p)
                for p in ("int8", "f32")]  # fmt: skip
        outs = [int_linear(op, xq, wq, sx, zx, sw, symmetric=False, path=p)
                for p in ("int8", "f32", "auto")]  # fmt: skip
        return accs, outs

    accs, outs = run(xq, wq)
    for acc in accs:
        np.testing.assert_array_equal(np.asarray(acc).astype(np.int64), np.asarray(ref))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])  # bit for bit


def test_row_sums_chunked_in_float32_are_exact():
    a, b = _codes(jax.random.key(2), (2500, 3)), _codes(jax.random.key(3), (2500, 4), -127)
    ref = np.asarray(a, np.int64).T @ np.asarray(b, np.int64)
    run = jax.jit(_intdot.contract_rows, static_argnames=("amax", "bmax", "path"))
    for path in ("int8", "f32"):  # f32: three chunks of <= 1032 rows, added in int32
        np.testing.assert_array_equal(run(a, b, amax=128, bmax=127, path=path), ref)


def test_run_int8_paths_agree_bit_for_bit(dense):
    linen_apply, _, params, x, _ = dense
    t = quant.fake_quant(bits=8, per_channel=True)
    final = {"params": t.finalize(*t.init(params))}
    outs = [quant.run_int8(linen_apply, path=p)(final, x) for p in ("int8", "f32", "auto")]
    np.testing.assert_array_equal(outs[1], outs[0])
    np.testing.assert_array_equal(outs[2], outs[0])


def test_path_choice_per_cpu_and_kind(monkeypatch):
    monkeypatch.setattr(_intdot, "cpu_features", lambda: frozenset({"avx2", "fma"}))
    got = {k: _intdot.preferred_path("cpu", kind=k) for k in _intdot.KINDS}
    assert got == {"features": "int8", "conv": "f32", "rows": "f32"}
    monkeypatch.setattr(_intdot, "cpu_features", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert {_intdot.preferred_path("cpu", kind=k) for k in _intdot.KINDS} == {"int8"}
    assert _intdot.preferred_path("tpu", kind="conv") == "int8"
    # where float32 would not be exact, auto takes int8 and an explicit f32 is refused
    monkeypatch.setattr(_intdot, "cpu_features", lambda: frozenset({"avx2"}))
    assert _intdot.resolve_path("auto", k=9, amax=128, bmax=127, kind="conv") == "f32"
    assert _intdot.resolve_path("auto", k=2000, amax=128, bmax=127, kind="conv") == "int8"
    with pytest.raises(ValueError, match="path='f32'"):
        _intdot.resolve_path("f32", k=2000, amax=128, bmax=127)


def test_qat_vs_qwix_names_the_missing_dependency(monkeypatch):
    from experiments.benchmarks import qat_vs_qwix

    monkeypatch.setitem(sys.modules, "qwix", None)  # import qwix now raises ImportError
    with pytest.raises(SystemExit, match=r"pip install 'jaxcomp\[bench\]'"):
        qat_vs_qwix.main(["--smoke"])

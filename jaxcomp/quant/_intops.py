"""Integer matmuls and convolutions: int8 x int8 -> int32, forward-only or with a chosen backward.

Vanhoucke et al. (2011) showed that 8-bit fixed-point weights and activations with 32-bit
accumulation run neural networks faster on CPUs at no loss of accuracy. Here a ``Dense`` or
``Conv`` layer's contraction (:func:`jaxcomp.quant.contraction`) is computed exactly on the integer
codes and the result is rescaled:

    ``y = s_x * s_w[c] * (sum_k q_x q_w - z_x * sum_k q_w)``

where the zero-point term (affine activations) is the same contraction applied to an all-ones
input, so zero padding stays exact; it is computed as one more example of the batch, in the same
call (a separate sum over the kernel cost more than the int8 matmul itself). Weights are symmetric
(zero point 0), per output channel. The exact integer sum is computed on the faster of two exact
paths for the machine and the contraction (:mod:`jaxcomp.quant._intdot`; ``path=``): XLA's int8 x
int8 -> int32 contraction, or float32 arithmetic on the same small integers (exact while ``K * 128
* 127 <= 2**24``). Where the CPU has 8-bit dot-product instructions (VNNI, AMX, Arm dot product),
and on GPUs and TPUs, everything takes int8; on an AVX2-only CPU, Dense layers and input gradients
take int8 (YNNPACK's int8 GEMM, about 0.9 of the float time) and convolutions and weight
gradients float32 (XLA's float convolution, and its float GEMM for the contraction over the batch,
which its int8 kernel runs 2.5x slower).

:func:`int_linear` is inference. :func:`qat_linear` is the same forward with a ``custom_vjp``:
quantization-aware training whose forward matmuls really run on integers, with a choice of
straight-through estimator and of backward:

* ``estimator="quantized"`` (default): the backward is the float contraction's vector-Jacobian
  product at the *dequantized* operands ``(x_hat, w_hat)``: ``dx = g w_hat^T``, ``dw = x_hat^T g``
  (the gradient of the fake-quantized model).
* ``estimator="latent"`` (Qwix's default for W8A8 training): at the float *latent* operands:
  ``dx = g w^T``, ``dw = x^T g``, as if the layer had not been quantized.

In both, the input's gradient is zero where ``x`` fell outside the representable range (the
clipped straight-through estimator) and the scales get none.

* ``backward="float"`` (default): the float contractions above.
* ``backward="pow2"``: the error signal ``g`` rounded to signed powers of two first
  (:func:`jaxcomp.quant.round_pow2`; Lin et al. 2015's quantized back-propagation), then the float
  contractions (each product is then a shift).
* ``backward="int8"``: both backward products as exact int8 x int8 contractions, as AQT and Qwix
  offer: ``g`` quantized to int8 with stochastic rounding (:func:`jaxcomp.quant.stochastic_codes`;
  per output position for ``dx``, per output channel for ``dw``) and contracted with the forward's
  int8 codes of ``w`` and ``x`` (so it goes with the quantized estimator). Needs ``key=``.

References:
  Vanhoucke, Senior and Mao, "Improving the speed of neural networks on CPUs", NIPS Deep Learning
  and Unsupervised Feature Learning Workshop, 2011.

  Jacob et al., "Quantization and training of neural networks for efficient integer-arithmetic-only
  inference", CVPR 2018, arXiv:1712.05877.

  Lin, Courbariaux, Memisevic and Bengio, "Neural networks with few multiplications", ICLR 2016,
  arXiv:1510.03009.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxcomp.core import _checks as checks
from jaxcomp.quant._backprop import round_pow2
from jaxcomp.quant._backprop import stochastic_codes_from_data
from jaxcomp.quant._core import broadcast_channel
from jaxcomp.quant._core import in_range
from jaxcomp.quant._core import qparams_from_range
from jaxcomp.quant._core import qrange
from jaxcomp.quant._intdot import contract
from jaxcomp.quant._intdot import contract_rows
from jaxcomp.quant._intdot import kernel_terms
from jaxcomp.quant._intdot import resolve_path

__all__ = [
    "BACKWARDS",
    "ESTIMATORS",
    "check_training",
    "float_linear",
    "int_linear",
    "qat_linear",
    "quantize_kernel",
]

ESTIMATORS = ("quantized", "latent")
"""The straight-through estimators of :func:`qat_linear`: at the dequantized or latent operands."""

BACKWARDS = ("float", "pow2", "int8")
"""The backward contractions of :func:`qat_linear`: float, power-of-two error, int8 error."""


def check_training(estimator: str, backward: str, *, fn: str) -> None:
    """Validates ``estimator`` and ``backward`` (:data:`ESTIMATORS`, :data:`BACKWARDS`).

    Raises:
      ValueError: an unknown value, or ``backward="int8"`` with ``estimator="latent"`` (the int8
        backward contracts the forward's integer codes, which is the quantized estimator).
    """
    checks.choice(estimator, ESTIMATORS, fn=fn, name="estimator")
    checks.choice(backward, BACKWARDS, fn=fn, name="backward")
    if estimator == "latent" and backward == "int8":
        raise ValueError(
            f"{fn}: backward='int8' contracts the error signal with the forward's int8 codes (the "
            "quantized operands), so it goes with estimator='quantized'; estimator='latent' takes "
            "backward='float' or 'pow2'"
        )


def _kernel_codes(w: jax.Array, bits: int, dtype) -> tuple[jax.Array, jax.Array]:
    amax = jnp.max(jnp.abs(w), axis=tuple(range(w.ndim - 1)))
    sw, _ = qparams_from_range(-amax, amax, bits=bits, symmetric=True)
    qmax = 2 ** (bits - 1) - 1
    q = jnp.clip(jnp.round(w / broadcast_channel(sw, w.ndim, w.ndim - 1)), -qmax, qmax)
    return q.astype(dtype), sw


def quantize_kernel(w: jax.Array, bits: int) -> tuple[jax.Array, jax.Array]:
    """Symmetric per-output-channel (last axis) int8 codes and scales of a float kernel.

    Rounding an already fake-quantized kernel (``fake_quant(bits, per_channel=True)``) again gives
    back its own codes: the largest magnitude of each channel is exactly ``qmax * scale``.
    """
    return _kernel_codes(w, bits, jnp.int8)


def _quantize_input(x, sx, zx, bits, symmetric, dtype):
    """The input's codes (in ``dtype``) and the clipped STE's mask (where it lies in range)."""
    qmin, qmax = qrange(bits, symmetric=symmetric)
    v = x / sx + zx
    xq = jnp.clip(jnp.round(v), qmin, qmax).astype(dtype)
    return xq, in_range(v, qmin, qmax)


def _bounds(bits: int, symmetric: bool) -> tuple[int, int]:
    """Bounds on ``|x codes|`` and ``|w codes|`` (affine inputs reach ``-2^(b-1)``)."""
    half = 2 ** (bits - 1)
    return (half - 1 if symmetric else half), half - 1


def int_linear(
    op: Callable[..., jax.Array],
    xq: jax.Array,
    wq: jax.Array,
    sx: jax.Array,
    zx: jax.Array,
    sw: jax.Array,
    *,
    symmetric: bool,
    bits: int = 8,
    path: str = "auto",
) -> jax.Array:
    """The float output of a contraction on integer codes, accumulated exactly.

    Args:
      op: the layer's contraction, ``op(x, kernel, pref)``.
      xq: the input codes (int8, or integer-valued floats).
      wq: the kernel codes (symmetric).
      sx: the input's scale (scalar).
      zx: the input's zero point (scalar, integer-valued float).
      sw: the kernel's scale per output channel (or a scalar).
      symmetric: True when ``zx`` is 0 (skips the zero-point term).
      bits: the widest of the two operands' bit widths (bounds the codes for ``path``).
      path: how the integer sums are computed (:func:`jaxcomp.quant._intdot.resolve_path`):
        ``"auto"`` (int8 where the machine has 8-bit dot products, float32 of the codes where
        that is exact and the machine has none), ``"int8"`` or ``"f32"``. All give the same bits.

    Returns:
      ``s_x * s_w * (op(xq, wq) - z_x * op(1, wq))`` in float32, before the bias.
    """
    amax, bmax = _bounds(bits, symmetric)
    k = kernel_terms(wq.shape)
    kind = _kind(op)
    p = resolve_path(path, k=k, amax=amax, bmax=bmax, kind=kind, fn="int_linear")

    def c(a):
        return contract(op, a, wq, k=k, amax=amax, bmax=bmax, path=p, kind=kind)

    if symmetric:
        acc = c(xq)
    elif xq.ndim > getattr(op, "example_ndim", xq.ndim):
        # the zero-point term op(1, w_q) (padding-exact: the part of each window inside the
        # input) rides along as one more example of the batch, in the same contraction
        ones = jnp.ones((1, *xq.shape[1:]), xq.dtype)
        both = c(jnp.concatenate([xq, ones]))
        acc = both[:-1] - zx.astype(both.dtype) * both[-1:]
    else:
        acc = c(xq)
        acc = acc - zx.astype(acc.dtype) * c(jnp.ones_like(xq))
    scale = sx * broadcast_channel(sw, acc.ndim, acc.ndim - 1 if jnp.ndim(sw) else None)
    return acc.astype(jnp.float32) * scale


def _kind(op: Callable[..., jax.Array]) -> str:
    """``"features"`` for a Dense layer's contraction, ``"conv"`` for a convolution's."""
    return "features" if getattr(op, "example_ndim", 1) == 1 else "conv"


def _mm(a: jax.Array, b: jax.Array, pref=None, *, ca: int, cb: int) -> jax.Array:
    return lax.dot_general(a, b, (((ca,), (cb,)), ((), ())), preferred_element_type=pref)


def _int8_backward(op, g, xq, wq, sw, sx, zx, *, bits, symmetric, kd, path):
    """``(dx, dw)`` of the quantized estimator, both products on int8 codes of ``g``."""
    n_out = wq.shape[-1]
    k = kernel_terms(wq.shape)
    w2 = wq.reshape(k, n_out)
    gf = g.astype(jnp.float32)
    xmax, wmax = _bounds(bits, symmetric)
    # dx = g w_hat^T = (g s_w) w_q^T: g s_w in int8 per output position
    sw_g = broadcast_channel(sw, g.ndim, g.ndim - 1)
    g1, s1 = stochastic_codes_from_data(gf * sw_g, kd[0], axis=-1)
    # dw = x_hat^T g: g in int8 per output channel
    g2, s2 = stochastic_codes_from_data(gf.reshape(-1, n_out), kd[1], axis=0)
    if op.patches is None:
        # no im2col form (feature groups, input dilation): the same rounded error signals through
        # the float contraction of the dequantized operands (equal up to summation order)
        x_hat = (xq.astype(jnp.float32) - zx) * sx
        w_hat = wq.astype(jnp.float32) * broadcast_channel(sw, wq.ndim, wq.ndim - 1)
        _, vjp = jax.vjp(lambda a, b: op(a, b), x_hat, w_hat)
        dx = vjp(g1 * s1 / sw_g)[0]
        dw = vjp((g2 * s2).reshape(g.shape))[1]
        return dx, dw
    mm_dx = lambda a, b, pref=None: _mm(a, b, pref, ca=a.ndim - 1, cb=1)
    dp = contract(mm_dx, g1, w2, k=n_out, amax=127, bmax=wmax, path=path).astype(jnp.float32)
    shape = jax.ShapeDtypeStruct(xq.shape, jnp.float32)
    (dx,) = jax.linear_transpose(op.patches, shape)(dp * s1)
    pq = op.patches(xq).reshape(-1, k)
    acc = contract_rows(pq, g2, amax=xmax, bmax=127, path=path)
    if not symmetric:
        # x_hat = s_x (x_q - z_x) at the positions inside the input (padding is a real 0)
        ones = op.patches(jnp.ones((1, *xq.shape[1:]), jnp.int32)).reshape(-1, k)
        gsum = jnp.sum(g2.astype(jnp.int32).reshape(-1, ones.shape[0], n_out), axis=0)
        acc = acc - zx.astype(jnp.int32) * _mm(ones, gsum, jnp.int32, ca=0, cb=0)
    dw = (acc.astype(jnp.float32) * sx * s2).reshape(wq.shape)
    return dx, dw


def qat_linear(
    op: Callable[..., jax.Array],
    x: jax.Array,
    w: jax.Array,
    sx: jax.Array,
    zx: jax.Array,
    *,
    bits: int,
    symmetric: bool,
    estimator: str = "quantized",
    backward: str = "float",
    key: jax.Array | None = None,
    path: str = "auto",
) -> jax.Array:
    """A quantized contraction whose forward runs on integers, with a chosen backward.

    Forward: ``x`` is quantized with ``(sx, zx)`` and ``w`` per output channel (symmetric), both at
    ``bits`` <= 8, and the contraction is computed exactly on the codes (:func:`int_linear`). Its
    value equals the float contraction of the fake-quantized operands (up to float summation
    order). Backward: see the module docstring; with ``estimator="quantized"`` and
    ``backward="float"`` it is the fake-quantized model's gradient, with ``"latent"`` the float
    layer's gradient at the latent operands; the input's gradient is zero where ``x`` fell outside
    the representable range, and the scales get none.

    Args:
      op: the layer's contraction, ``op(x, kernel, pref)``.
      x: the float input.
      w: the float kernel (for instance already fake-quantized by :func:`fake_quant`; it is then
        also the latent kernel the ``"latent"`` estimator sees).
      sx: the input's scale.
      zx: the input's zero point.
      bits: the bit width of both operands, in [2, 8].
      symmetric: whether the input's range is symmetric (``zx == 0``).
      estimator: ``"quantized"`` or ``"latent"`` (:data:`ESTIMATORS`).
      backward: ``"float"``, ``"pow2"`` or ``"int8"`` (:data:`BACKWARDS`).
      key: a typed PRNG key, needed by ``backward="int8"`` (its stochastic rounding); a different
        key for every step and layer (fold the step's key with the layer).
      path: how the forward's integer sums are computed (:func:`int_linear`).

    Returns:
      The float output, before the bias.

    Raises:
      ValueError: a bad ``estimator``, ``backward`` or ``path``, or ``backward="int8"`` without a
        typed PRNG key (when the backward is traced).
    """
    fn = "qat_linear"
    check_training(estimator, backward, fn=fn)
    amax, bmax = _bounds(bits, symmetric)
    p = resolve_path(path, k=kernel_terms(w.shape), amax=amax, bmax=bmax, kind=_kind(op), fn=fn)
    cdtype = jnp.int8 if p == "int8" else jnp.float32
    x_dtype, w_dtype = x.dtype, w.dtype
    has_key = key is not None
    if has_key:
        checks.key(key, fn=fn, why="backward='int8'")
        kd = jax.random.key_data(jax.random.split(key))
    else:
        kd = jnp.zeros((2, 2), jnp.uint32)

    @jax.custom_vjp
    def f(x, w, sx, zx, kd):
        return fwd(x, w, sx, zx, kd)[0]

    def fwd(x, w, sx, zx, kd):
        xq, inside = _quantize_input(x, sx, zx, bits, symmetric, cdtype)
        wq, sw = _kernel_codes(w, bits, cdtype)
        y = int_linear(op, xq, wq, sx, zx, sw, symmetric=symmetric, bits=bits, path=p)
        y = y.astype(x_dtype)
        if estimator == "latent":
            return y, (x, w, inside)
        if backward == "int8":
            return y, (xq, wq, sw, inside, sx, zx, kd)
        # the dequantized kernel for the backward, from the same pass over w as the codes
        w_hat = wq.astype(jnp.float32) * broadcast_channel(sw, wq.ndim, wq.ndim - 1)
        return y, (xq, w_hat.astype(w_dtype), inside, sx, zx)

    s_shape, z_shape = jnp.shape(sx), jnp.shape(zx)

    def bwd(res, g):
        if estimator == "latent":
            a, b, inside = res
        elif backward == "int8":
            if not has_key:
                raise ValueError(
                    f"{fn}: backward='int8' rounds the error signal stochastically and needs "
                    "key=, a jax.random.key (jc.quant.activations takes it from the call's "
                    "rngs=, which jc.train passes every step)"
                )
            xq, wq, sw, inside, sx_, zx_, kd = res
            dx, dw = _int8_backward(op, g, xq, wq, sw, sx_, zx_, bits=bits, symmetric=symmetric,
                                    kd=kd, path="auto")  # fmt: skip
        else:
            xq, b, inside, sx_, zx_ = res
            a = ((xq.astype(jnp.float32) - zx_) * sx_).astype(x_dtype)
        if estimator == "latent" or backward != "int8":
            if backward == "pow2":
                g = round_pow2(g)
            _, vjp = jax.vjp(lambda a, b: op(a, b), a, b)
            dx, dw = vjp(g)
        return (
            (dx * inside.astype(dx.dtype)).astype(x_dtype),
            dw.astype(w_dtype),
            jnp.zeros(s_shape, jnp.float32),
            jnp.zeros(z_shape, jnp.float32),
            None,
        )

    f.defvjp(fwd, bwd)
    return f(x, w, sx, zx, kd)


def float_linear(
    op: Callable[..., jax.Array],
    x_hat: jax.Array,
    x: jax.Array,
    w: jax.Array,
    *,
    estimator: str = "quantized",
    backward: str = "float",
) -> jax.Array:
    """``op(x_hat, w)`` in float, with the backward of :func:`qat_linear`'s ``estimator`` and
    ``backward="float"`` or ``"pow2"``: the fake-quantized path of
    :func:`jaxcomp.quant.activations`.

    ``x_hat`` is the fake-quantized input (whose own straight-through gradient, to ``x``, is the
    clipped one of :func:`jaxcomp.quant.fake_quantize`); ``x`` the latent input, which gets no
    gradient here. The cotangent of ``x_hat`` is ``g' w^T`` and that of ``w`` is ``a^T g'``, with
    ``a = x_hat`` (quantized estimator) or ``x`` (latent), and ``g'`` the error signal, rounded to
    powers of two for ``backward="pow2"``.
    """
    check_training(estimator, backward, fn="float_linear")
    if backward == "int8":
        raise ValueError(
            "float_linear: backward='int8' needs the integer codes of the forward; use "
            "qat_linear (activations(..., int_matmul=True))"
        )
    x_shape, x_dtype = x.shape, x.dtype

    @jax.custom_vjp
    def f(x_hat, x, w):
        return op(x_hat, w)

    def fwd(x_hat, x, w):
        return op(x_hat, w), (x if estimator == "latent" else x_hat, w)

    def bwd(res, g):
        a, b = res
        if backward == "pow2":
            g = round_pow2(g)
        da, dw = jax.vjp(lambda a, b: op(a, b), a, b)[1](g)
        return da, jnp.zeros(x_shape, x_dtype), dw

    f.defvjp(fwd, bwd)
    return f(x_hat, x, w)

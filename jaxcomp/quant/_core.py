"""The quantization primitives every quantizer in :mod:`jaxcomp.quant` reuses.

Uniform affine quantization maps a real ``x`` to an integer code
``q = clip(round(x / scale + zero_point), qmin, qmax)`` and back to ``(q - zero_point) * scale``.
Fake quantization does both in floating point, so the forward pass sees the rounded values while
the backward pass uses the straight-through estimator (STE) with clipping: the gradient is 1 where
``x`` lies inside the representable range and 0 outside (Bengio et al. 2013; Jacob et al. 2018).
Rounding is to nearest, or stochastic (up with probability ``v - floor(v)``), which is unbiased and
lets small updates survive low-precision storage (Gupta et al. 2015).

Everything here is a pure ``jnp`` function, jit-able and differentiable, written once: fake
quantization, fixed point, activation quantization, the int8 kernels and the binary quantizers all
call these.

References:
  Gupta, Agrawal, Gopalakrishnan and Narayanan, "Deep learning with limited numerical
  precision", ICML 2015, arXiv:1502.02551.

  Jacob et al., "Quantization and training of neural networks for efficient integer-arithmetic-only
  inference", CVPR 2018, arXiv:1712.05877.

  Bengio, Léonard and Courville, "Estimating or propagating gradients through stochastic neurons
  for conditional computation", 2013, arXiv:1308.3432.

  Esser et al., "Learned step size quantization", ICLR 2020, arXiv:1902.08153.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.core import _checks as checks

__all__ = [
    "ROUNDINGS",
    "broadcast_channel",
    "check_bits",
    "code_dtype",
    "dequantize",
    "fake_quantize",
    "grad_scale",
    "in_range",
    "key_data",
    "optional_key_data",
    "qparams_from_range",
    "qrange",
    "quantize",
    "reduce_axes",
    "round_ste",
    "round_value",
    "rounding_key_data",
    "sign_ste",
    "split_key_data",
]

ROUNDINGS = ("nearest", "stochastic")


def key_data(key: Any, *, fn: str, why: str = "") -> jax.Array:
    """The raw ``uint32`` data of a typed PRNG key (kept in states so they compare as arrays).

    Raises:
      ValueError: ``key`` is not a typed PRNG key (the message names ``fn`` and ``why``).
    """
    return jax.random.key_data(checks.key(key, fn=fn, why=why))


def optional_key_data(key: Any, *, needed: bool, fn: str, why: str = "") -> jax.Array:
    """:func:`key_data` of ``key`` when ``needed``, else a fixed placeholder (the state keeps a key
    either way, so its structure does not depend on the settings)."""
    return key_data(key, fn=fn, why=why) if needed else jax.random.key_data(jax.random.key(0))


def rounding_key_data(rounding: Any, key: Any, *, fn: str) -> jax.Array:
    """Validates ``rounding`` and returns the raw key data a rounding transform's state keeps.

    Raises:
      ValueError: ``rounding`` is not one of :data:`ROUNDINGS`, or is ``"stochastic"`` without a
        typed PRNG key (the messages name ``fn``).
    """
    checks.choice(rounding, ROUNDINGS, fn=fn, name="rounding")
    needed = rounding == "stochastic"
    return optional_key_data(key, needed=needed, fn=fn, why="rounding='stochastic'")


def split_key_data(data: jax.Array) -> jax.Array:
    """The raw data of a fresh key split from the raw key data ``data`` (one ``update``'s draw)."""
    return jax.random.key_data(jax.random.split(jax.random.wrap_key_data(data))[0])


def check_bits(bits: Any, *, lo: int = 1, hi: int = 16, what: str = "bits") -> int:
    """:func:`jaxcomp.core.checks.bits` for callers that name the argument ``"fn: bits"``."""
    fn, _, name = what.rpartition(": ")
    return checks.bits(bits, fn=fn, name=name, low=lo, high=hi)


def qrange(bits: int, *, symmetric: bool) -> tuple[int, int]:
    """The signed integer code range of a ``bits``-bit quantizer.

    Symmetric quantizers use the narrow range ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` (so that ``-x``
    is representable when ``x`` is, and zero is exact); asymmetric ones the full signed range
    ``[-2**(b-1), 2**(b-1) - 1]`` with a zero point. Both fit the signed integer type of ``bits``.

    Examples:
        >>> qrange(8, symmetric=True), qrange(8, symmetric=False)
        ((-127, 127), (-128, 127))
    """
    half = 2 ** (bits - 1)
    return (-(half - 1), half - 1) if symmetric else (-half, half - 1)


def code_dtype(bits: int) -> jnp.dtype:
    """The smallest signed integer type that holds ``bits``-bit codes (int8 or int16)."""
    return jnp.dtype(jnp.int8) if bits <= 8 else jnp.dtype(jnp.int16)


def reduce_axes(ndim: int, axis: int | None) -> tuple[int, ...]:
    """The axes to reduce over for per-tensor (``axis=None``) or per-channel statistics."""
    return tuple(i for i in range(ndim) if i != axis)


def broadcast_channel(v: jax.Array, ndim: int, axis: int | None) -> jax.Array:
    """Reshapes a per-channel vector ``(C,)`` so it broadcasts along ``axis`` of an ``ndim`` array.

    A scalar (per-tensor) value is returned unchanged.
    """
    v = jnp.asarray(v)
    if axis is None or v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def qparams_from_range(
    lo: jax.Array, hi: jax.Array, *, bits: int, symmetric: bool
) -> tuple[jax.Array, jax.Array]:
    """Scale and zero point that map ``[lo, hi]`` onto the ``bits``-bit code range.

    The range is widened to contain 0 so that zero is represented exactly (zero padding and
    pruned weights stay exact). A degenerate range (all zeros) gets scale 1.

    Args:
      lo: the smallest value to represent (scalar or per channel).
      hi: the largest value to represent.
      bits: the bit width.
      symmetric: symmetric (zero point 0, scale ``max(|lo|, |hi|) / qmax``) or affine.

    Returns:
      ``(scale, zero_point)``, float32 scale and float32 integer-valued zero point, shaped like
      ``lo``.
    """
    qmin, qmax = qrange(bits, symmetric=symmetric)
    lo = jnp.minimum(jnp.asarray(lo, jnp.float32), 0.0)
    hi = jnp.maximum(jnp.asarray(hi, jnp.float32), 0.0)
    if symmetric:
        scale = jnp.maximum(-lo, hi) / qmax
        zero_point = jnp.zeros_like(scale)
    else:
        scale = (hi - lo) / (qmax - qmin)
        safe = jnp.where(scale > 0, scale, 1.0)
        zero_point = jnp.clip(jnp.round(qmin - lo / safe), qmin, qmax)
    scale = jnp.where(scale > 0, scale, 1.0)
    return scale, zero_point


def round_value(v: jax.Array, rounding: str, key: jax.Array | None) -> jax.Array:
    """Rounds ``v`` to integers, to nearest or stochastically (up with probability ``frac(v)``)."""
    if rounding == "nearest":
        return jnp.round(v)
    if rounding == "stochastic":
        if key is None:
            raise ValueError("rounding='stochastic' needs key=, a jax.random.key")
        # floor(v) + [u < frac(v)]: unbiased, and unlike floor(v + u) it does not depend on how
        # XLA fuses the addition, so jit and eager draw the same codes.
        fl = jnp.floor(v)
        return fl + (jax.random.uniform(key, v.shape, v.dtype) < v - fl).astype(v.dtype)
    raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")


def quantize(
    x: jax.Array,
    scale: jax.Array,
    zero_point: jax.Array,
    *,
    bits: int,
    symmetric: bool,
    axis: int | None = None,
    rounding: str = "nearest",
    key: jax.Array | None = None,
) -> jax.Array:
    """Integer codes ``clip(round(x / scale + zero_point), qmin, qmax)`` in the code dtype.

    The codes are those :func:`fake_quantize` rounds to (so ``dequantize(quantize(x))`` equals
    its value, ties included).

    Args:
      x: the real values.
      scale: the step, a scalar or a per-channel vector along ``axis``.
      zero_point: the code of 0, shaped like ``scale``.
      bits: the bit width (codes are int8 up to 8 bits, int16 above).
      symmetric: which code range (:func:`qrange`).
      axis: the channel axis of per-channel ``scale``; None for per-tensor.
      rounding: ``"nearest"`` or ``"stochastic"``.
      key: the PRNG key of stochastic rounding.

    Returns:
      The codes, ``x.shape``, int8 or int16.
    """
    qmin, qmax = qrange(bits, symmetric=symmetric)
    s = broadcast_channel(scale, x.ndim, axis)
    z = broadcast_channel(zero_point, x.ndim, axis)
    q = jnp.clip(round_value(x / s + z, rounding, key), qmin, qmax)
    return q.astype(code_dtype(bits))


def dequantize(
    codes: jax.Array,
    scale: jax.Array,
    zero_point: jax.Array,
    *,
    axis: int | None = None,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """The real values ``(codes - zero_point) * scale`` of integer codes."""
    s = broadcast_channel(scale, codes.ndim, axis)
    z = broadcast_channel(zero_point, codes.ndim, axis)
    return ((codes.astype(jnp.float32) - z) * s).astype(dtype)


def fake_quantize(
    x: jax.Array,
    scale: jax.Array,
    zero_point: jax.Array,
    *,
    bits: int,
    symmetric: bool,
    axis: int | None = None,
    rounding: str = "nearest",
    key: jax.Array | None = None,
    clip_gradient: bool = True,
) -> jax.Array:
    """Quantize then dequantize, with the clipped straight-through gradient.

    The value is ``dequantize(quantize(x))``. The gradient with respect to ``x`` is exactly 1 where
    ``x`` lies inside the representable range ``[(qmin - zp) * scale, (qmax - zp) * scale]``
    (boundaries included, up to float rounding: a thousandth of a step beyond them still counts)
    and exactly 0 outside; ``scale`` and ``zero_point`` receive no gradient
    (they come from observers; the learned step of LSQ uses :func:`grad_scale` instead).

    ``clip_gradient=False`` drops the mask (gradient 1 everywhere). It is for callers that know
    every value is inside, such as a range taken from the tensor's own min and max, and saves a
    pass over the tensor in the backward.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([-3.0, 0.26, 0.9, 5.0])
        >>> f = lambda x: fake_quantize(x, jnp.float32(0.5), jnp.float32(0.0), bits=3,
        ...                             symmetric=True)
        >>> f(x).tolist(), jax.grad(lambda x: f(x).sum())(x).tolist()
        ([-1.5, 0.5, 1.0, 1.5], [0.0, 1.0, 1.0, 0.0])
    """
    qmin, qmax = qrange(bits, symmetric=symmetric)
    s = jax.lax.stop_gradient(broadcast_channel(scale, x.ndim, axis))
    z = jax.lax.stop_gradient(broadcast_channel(zero_point, x.ndim, axis))
    v = x / s + z
    q = jnp.clip(round_value(jax.lax.stop_gradient(v), rounding, key), qmin, qmax)
    value = ((q - z) * s).astype(x.dtype)
    if not clip_gradient:
        return jax.lax.stop_gradient(value) + (x - jax.lax.stop_gradient(x))
    inside = in_range(v, qmin, qmax).astype(x.dtype)
    return jax.lax.stop_gradient(value) + (x - jax.lax.stop_gradient(x)) * inside


def in_range(v: jax.Array, qmin: int, qmax: int) -> jax.Array:
    """Where ``v = x / scale + zero_point`` lies in the code range: the clipped STE's mask.

    Up to float rounding: a thousandth of a step (plus float32's relative error of ``x / scale``;
    the largest weight of a min/max range lands on ``qmax`` only up to an ulp) beyond an end code
    still counts as inside.
    """
    tol = 1e-3 + qmax * 2.0**-20
    return (v >= qmin - tol) & (v <= qmax + tol)


def round_ste(v: jax.Array) -> jax.Array:
    """``round(v)`` whose gradient is 1 (the plain straight-through estimator)."""
    return v + jax.lax.stop_gradient(jnp.round(v) - v)


def grad_scale(x: jax.Array, g: float | jax.Array) -> jax.Array:
    """The value ``x`` with its gradient multiplied by ``g`` (LSQ's step-size gradient scale)."""
    return x * g + jax.lax.stop_gradient(x - x * g)


def sign_ste(x: jax.Array, *, clip: float | None = 1.0) -> jax.Array:
    """``sign(x)`` in ``{-1, +1}`` (``sign(0) = +1``) with a straight-through gradient.

    With ``clip`` the gradient is that of the hard tanh, ``1`` where ``|x| <= clip`` and 0 elsewhere
    (BinaryNet, Hubara et al. 2016); with ``clip=None`` it is 1 everywhere (BinaryConnect).
    """
    b = jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)
    inside = jnp.ones_like(x) if clip is None else (jnp.abs(x) <= clip).astype(x.dtype)
    return jax.lax.stop_gradient(b) + (x - jax.lax.stop_gradient(x)) * inside

"""Quantized back-propagation: the error signal rounded to powers of two, or to int8 codes.

The backward of a layer ``y = x W`` computes two products with the error signal ``g = dL/dy``:
``dx = g W^T`` and ``dW = x^T g``. Quantizing ``g`` makes both cheap:

* **Powers of two** (:func:`round_pow2`): every entry of ``g`` becomes ``0`` or ``+-2^e``, so each
  product with ``g`` is a shift of the other operand. Lin, Courbariaux, Memisevic and Bengio (2015)
  quantize the backward this way to remove its multiplications; with their binary or ternary
  weights ``g W^T`` was already sign changes, so they rounded the layer *inputs* of
  ``dW = x^T g`` to powers of two; with int8 weights both products involve ``g``, so here it is
  ``g``, the one operand the two products share, that is rounded. Rounding is to the nearest power
  of two in the log domain (up where the mantissa is at least ``sqrt(2)``), and only the
  :data:`POW2_EXPONENTS` exponents below the tensor's largest are kept (a sign and 4 exponent
  bits); smaller entries become 0.
* **int8 codes with stochastic rounding** (:func:`stochastic_codes`): ``g`` scaled per row or
  column to ``[-127, 127]`` and rounded up with probability ``frac``, which is unbiased, so the
  int8 x int8 backward matmuls of AQT and Qwix (``bwd_qtype=int8``, stochastic rounding) keep the
  expected gradient. The noise is a counter-based hash of the element index keyed by the PRNG key
  (:func:`hash_uniform`): uniform over keys for every element, so the rounding is unbiased in
  expectation over keys; it costs a few integer operations per element, fused into the rounding,
  where a Threefry draw of an activation-sized tensor costs as much as the matmul it feeds on a
  CPU.

References:
  Lin, Courbariaux, Memisevic and Bengio, "Neural networks with few multiplications", ICLR 2016,
  arXiv:1510.03009.

  Gupta, Agrawal, Gopalakrishnan and Narayanan, "Deep learning with limited numerical
  precision", ICML 2015, arXiv:1502.02551.

  Lew et al., "AQT: Accurate Quantized Training" (google/aqt), and Qwix (google/qwix): int8
  backward matmuls with stochastic rounding of the gradient.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "POW2_EXPONENTS",
    "hash_uniform",
    "round_pow2",
    "stochastic_codes",
    "stochastic_codes_from_data",
]

POW2_EXPONENTS = 16
"""How many powers of two below a tensor's largest :func:`round_pow2` keeps (4 exponent bits)."""

# f32 bit fields; 0x3504F4 is the first mantissa at or above sqrt(2) - 1
_EXP_MASK = 0x7F800000
_SQRT2_UP = 0x800000 - 0x3504F4


def round_pow2(g: jax.Array, *, exponents: int = POW2_EXPONENTS) -> jax.Array:
    """Each entry of ``g`` as ``0`` or ``+-2^e``: the nearest power of two in the log domain,
    entries more than ``exponents - 1`` octaves below the largest one flushed to 0.

    Bit arithmetic on float32 (no logarithms): adding ``2^23 - mantissa(sqrt 2)`` to the magnitude
    carries into the exponent exactly when the mantissa is at least ``sqrt(2)``'s, and masking
    the mantissa off leaves the power of two.

    Args:
      g: the error signal (float32; other float types are rounded through float32).
      exponents: how many exponents to keep, counted down from the largest entry's.

    Returns:
      ``g``'s shape and dtype, every entry 0 or a signed power of two.

    Examples:
        >>> import jax.numpy as jnp
        >>> round_pow2(jnp.array([3.0, -1.4, 1.5, 0.0, 2.0**-20])).tolist()
        [4.0, -1.0, 2.0, 0.0, 0.0]
    """
    bits = lax.bitcast_convert_type(g.astype(jnp.float32), jnp.uint32)
    sign = bits & jnp.uint32(0x80000000)
    mag = ((bits & jnp.uint32(0x7FFFFFFF)) + jnp.uint32(_SQRT2_UP)) & jnp.uint32(_EXP_MASK)
    exp = mag >> 23
    lowest = jnp.max(exp).astype(jnp.int32) - (exponents - 1)
    mag = jnp.where(exp.astype(jnp.int32) >= jnp.maximum(lowest, 1), mag, jnp.uint32(0))
    return lax.bitcast_convert_type(sign | mag, jnp.float32).astype(g.dtype)


def _mix(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer: a bijection of uint32 with full avalanche."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def hash_uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform float32 numbers in ``[0, 1)`` from a counter hash keyed by ``key``.

    Entry ``i`` (row-major index) is ``mix(mix(i * phi + k0) ^ k1) >> 8`` scaled by ``2^-24``,
    with ``(k0, k1)`` the first and last words of the key's data (``jax.random.key_data``) and
    ``mix`` a bijection of uint32: for a uniformly drawn key every entry is exactly uniform on the
    ``2^24`` grid. The same key gives the same numbers.

    Args:
      key: a typed PRNG key.
      shape: the output shape.
    """
    return _hash_uniform(jax.random.key_data(key), shape)


def _hash_uniform(data: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    data = data.reshape(-1).astype(jnp.uint32)
    idx = lax.iota(jnp.uint32, math.prod(shape))
    h = _mix(_mix(idx * jnp.uint32(0x9E3779B9) + data[0]) ^ data[-1])
    return ((h >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)).reshape(shape)


def stochastic_codes(
    v: jax.Array, key: jax.Array, *, axis: int, bits: int = 8
) -> tuple[jax.Array, jax.Array]:
    """Symmetric ``bits``-bit codes of ``v`` with a scale per slice along ``axis``, rounded
    stochastically (up with probability ``frac``).

    ``scale = max |v|`` over ``axis`` divided by ``2^(bits-1) - 1`` (1 where a slice is all zero),
    and ``codes = floor(v / scale) + [u < frac(v / scale)]`` with ``u`` from :func:`hash_uniform`,
    so ``E[codes * scale] = v`` over keys.

    Args:
      v: the values (float).
      key: a typed PRNG key.
      axis: the axis the scale is shared along (reduced over): ``-1`` for one scale per row.
      bits: the code width, at most 8.

    Returns:
      ``(codes, scale)``: float32 integer-valued codes in ``[-(2^(b-1)-1), 2^(b-1)-1]`` (cast to
      int8 for an int8 matmul) and the scale, with ``axis`` kept as a size-1 axis.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> codes, scale = stochastic_codes(jnp.array([[0.5, -1.0]]), jax.random.key(0), axis=-1)
        >>> codes[0, 1].item(), codes[0, 0].item() in (63.0, 64.0), round(scale.item() * 127, 6)
        (-127.0, True, 1.0)
    """
    return stochastic_codes_from_data(v, jax.random.key_data(key), axis=axis, bits=bits)


def stochastic_codes_from_data(
    v: jax.Array, data: jax.Array, *, axis: int, bits: int = 8
) -> tuple[jax.Array, jax.Array]:
    """:func:`stochastic_codes` keyed by a key's raw data (``jax.random.key_data``)."""
    qmax = 2 ** (bits - 1) - 1
    amax = jnp.max(jnp.abs(v), axis=axis, keepdims=True).astype(jnp.float32)
    scale = jnp.where(amax > 0, amax / qmax, 1.0)
    t = v.astype(jnp.float32) / scale
    fl = jnp.floor(t)
    codes = fl + (_hash_uniform(data, v.shape) < t - fl).astype(jnp.float32)
    return jnp.clip(codes, -qmax, qmax), scale

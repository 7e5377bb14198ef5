"""Integer matmuls and convolutions: int8 x int8 -> int32, forward-only or with a float backward.

Vanhoucke et al. (2011) showed that 8-bit fixed-point weights and activations with 32-bit
accumulation run neural networks faster on CPUs at no loss of accuracy. Here a ``Dense`` or
``Conv`` layer's contraction (:func:`jaxcomp.quant.contraction`) is called on int8 codes with
``preferred_element_type=jnp.int32`` (XLA lowers it to ``lax.dot_general`` /
``lax.conv_general_dilated`` on integers) and the int32 result is rescaled:

    ``y = s_x * s_w[c] * (sum_k q_x q_w - z_x * sum_k q_w)``

where the zero-point term (affine activations) is the same contraction applied to an all-ones
input, so zero padding stays exact; it is computed as one more example of the batch, in the same
integer call (a separate sum over the kernel cost more than the int8 matmul itself). Weights are
symmetric (zero point 0), per output channel.

:func:`int_linear` is inference. :func:`qat_linear` is the same forward with a ``custom_vjp``
whose backward is the float contraction of the dequantized operands, with the clipped
straight-through mask on the input: quantization-aware training whose forward matmuls really run
in int8.

References:
  Vanhoucke, Senior and Mao, "Improving the speed of neural networks on CPUs", NIPS Deep Learning
  and Unsupervised Feature Learning Workshop, 2011.

  Jacob et al., "Quantization and training of neural networks for efficient integer-arithmetic-only
  inference", CVPR 2018, arXiv:1712.05877.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxcomp.quant._core import broadcast_channel
from jaxcomp.quant._core import in_range
from jaxcomp.quant._core import qparams_from_range
from jaxcomp.quant._core import qrange
from jaxcomp.quant._core import quantize

__all__ = ["int_linear", "qat_linear", "quantize_kernel"]


def quantize_kernel(w: jax.Array, bits: int) -> tuple[jax.Array, jax.Array]:
    """Symmetric per-output-channel (last axis) int8 codes and scales of a float kernel.

    Rounding an already fake-quantized kernel (``fake_quant(bits, per_channel=True)``) again gives
    back its own codes: the largest magnitude of each channel is exactly ``qmax * scale``.
    """
    amax = jnp.max(jnp.abs(w), axis=tuple(range(w.ndim - 1)))
    sw, zero = qparams_from_range(-amax, amax, bits=bits, symmetric=True)
    return quantize(w, sw, zero, bits=bits, symmetric=True, axis=w.ndim - 1), sw


def _quantize_input(x, sx, zx, bits, symmetric):
    """The input's int8 codes and the clipped STE's mask (where it lies in the code range)."""
    qmin, qmax = qrange(bits, symmetric=symmetric)
    v = x / sx + zx
    xq = jnp.clip(jnp.round(v), qmin, qmax).astype(jnp.int8)
    return xq, in_range(v, qmin, qmax)


def int_linear(
    op: Callable[..., jax.Array],
    xq: jax.Array,
    wq: jax.Array,
    sx: jax.Array,
    zx: jax.Array,
    sw: jax.Array,
    *,
    symmetric: bool,
) -> jax.Array:
    """The float output of a contraction on int8 codes, accumulated in int32.

    Args:
      op: the layer's contraction, ``op(x, kernel, pref)``.
      xq: the input codes (int8).
      wq: the kernel codes (int8, symmetric).
      sx: the input's scale (scalar).
      zx: the input's zero point (scalar, integer-valued float).
      sw: the kernel's scale per output channel (or a scalar).
      symmetric: True when ``zx`` is 0 (skips the zero-point term).

    Returns:
      ``s_x * s_w * (op(xq, wq) - z_x * op(1, wq))`` in float32, before the bias.
    """
    if symmetric:
        acc = op(xq, wq, jnp.int32)
    elif xq.ndim > getattr(op, "example_ndim", xq.ndim):
        # the zero-point term op(1, w_q) (padding-exact: the part of each window inside the
        # input) rides along as one more example of the batch, in the same integer matmul
        ones = jnp.ones((1, *xq.shape[1:]), xq.dtype)
        both = op(jnp.concatenate([xq, ones]), wq, jnp.int32)
        acc = both[:-1] - zx.astype(jnp.int32) * both[-1:]
    else:
        acc = op(xq, wq, jnp.int32) - zx.astype(jnp.int32) * op(jnp.ones_like(xq), wq, jnp.int32)
    scale = sx * broadcast_channel(sw, acc.ndim, acc.ndim - 1 if jnp.ndim(sw) else None)
    return acc.astype(jnp.float32) * scale


def qat_linear(
    op: Callable[..., jax.Array],
    x: jax.Array,
    w: jax.Array,
    sx: jax.Array,
    zx: jax.Array,
    *,
    bits: int,
    symmetric: bool,
) -> jax.Array:
    """A quantized contraction that runs in int8 forward and in float backward.

    Forward: ``x`` is quantized with ``(sx, zx)`` and ``w`` per output channel (symmetric), both at
    ``bits`` <= 8, and the contraction runs as int8 x int8 -> int32 (:func:`int_linear`). Its
    value equals the float contraction of the fake-quantized operands (up to float summation
    order). Backward: the float contraction's vector-Jacobian product at the dequantized operands;
    the input's gradient is zero where ``x`` fell outside the representable range (the clipped
    straight-through estimator), the kernel's passes straight through, and the scales get none.

    Args:
      op: the layer's contraction, ``op(x, kernel, pref)``.
      x: the float input.
      w: the float kernel (for instance already fake-quantized by :func:`fake_quant`).
      sx: the input's scale.
      zx: the input's zero point.
      bits: the bit width of both operands, in [2, 8].
      symmetric: whether the input's range is symmetric (``zx == 0``).

    Returns:
      The float output, before the bias.
    """
    x_dtype, w_dtype = x.dtype, w.dtype

    @jax.custom_vjp
    def f(x, w, sx, zx):
        return fwd(x, w, sx, zx)[0]

    def fwd(x, w, sx, zx):
        xq, inside = _quantize_input(x, sx, zx, bits, symmetric)
        wq, sw = quantize_kernel(w, bits)
        y = int_linear(op, xq, wq, sx, zx, sw, symmetric=symmetric).astype(x.dtype)
        # the dequantized kernel, from the same pass over w as the codes
        w_hat = (wq.astype(jnp.float32) * broadcast_channel(sw, wq.ndim, wq.ndim - 1)).astype(
            w_dtype
        )
        return y, (xq, w_hat, inside, sx, zx)

    def bwd(res, g):
        xq, w_hat, inside, sx, zx = res
        x_hat = ((xq.astype(jnp.float32) - zx) * sx).astype(x_dtype)
        _, vjp = jax.vjp(lambda a, b: op(a, b), x_hat, w_hat)
        dx, dw = vjp(g)
        return dx * inside.astype(dx.dtype), dw, jnp.zeros_like(sx), jnp.zeros_like(zx)

    f.defvjp(fwd, bwd)
    return f(x, w, sx, zx)

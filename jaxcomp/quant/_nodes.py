"""Compressed leaf nodes: what the quantizers' ``finalize`` puts where a float array was.

* :class:`QuantizedArray`: integer codes with a scale and zero point per tensor or per channel
  (uniform, fixed-point, binary and ternary weights), the input of the int8 kernels
  (Vanhoucke et al. 2011) and of ``jaxcomp.encode``.
* :class:`CodebookArray`: a scalar codebook and a small unsigned index per weight (k-means and
  ECSQ weight sharing; Gong et al. 2014, Han et al. 2016, Choi et al. 2017); the indices are what
  Huffman coding compresses.
* :class:`ProductQuantizedArray`: sub-vector codebooks and codes (product and residual
  quantization; Gong et al. 2014, Wu et al. 2016).

They are frozen dataclasses registered as pytrees: the arrays are children, the static layout
(axis, bit width, shape) is auxiliary data, so a finalized tree can be passed through ``jax.jit``,
``jax.tree.map`` and the apply adapters. They speak the one node protocol of
:mod:`jaxcomp.core` (``to_dense()`` and ``nbytes``), so :func:`jaxcomp.to_dense` turns any tree of
them back into float arrays.

References:
  Vanhoucke, Senior and Mao, "Improving the speed of neural networks on CPUs", NIPS Deep Learning
  Workshop, 2011.

  Gong, Liu, Yang and Bourdev, "Compressing deep convolutional networks using vector
  quantization", 2014, arXiv:1412.6115.

  Han, Mao and Dally, "Deep Compression", ICLR 2016, arXiv:1510.00149.

  Wu, Leng, Wang, Hu and Cheng, "Quantized convolutional neural networks for mobile devices",
  CVPR 2016, arXiv:1512.06473.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.core._nodes import nbytes
from jaxcomp.quant._core import dequantize

__all__ = [
    "CodebookArray",
    "ProductQuantizedArray",
    "QuantizedArray",
    "index_dtype",
]


_F32 = jnp.dtype(jnp.float32)


def index_dtype(entries: int) -> jnp.dtype:
    """The integer type of indices into ``entries`` codebook entries: uint8 up to 256 entries,
    uint16 up to 65536, int32 beyond."""
    if entries <= 256:
        return jnp.dtype(jnp.uint8)
    if entries <= 65536:
        return jnp.dtype(jnp.uint16)
    return jnp.dtype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class QuantizedArray:
    """Integer codes with scales: ``value = (codes - zero_point) * scale``.

    Attributes:
      codes: the integer codes, the weight's shape, int8 (up to 8 bits) or int16.
      scale: float32, a scalar (per tensor) or a vector along ``axis`` (per channel).
      zero_point: float32 integer-valued, shaped like ``scale`` (0 for symmetric codes).
      axis: the channel axis of per-channel scales, or None (static).
      bits: the bit width the codes use (static); 1 for binary, 2 for ternary weights.
      symmetric: True when every zero point is 0 (static); the int8 kernels need it.
      dtype: the float dtype of the weight the codes stand for (static).
    """

    codes: jax.Array
    scale: jax.Array
    zero_point: jax.Array
    axis: int | None = None
    bits: int = 8
    symmetric: bool = True
    dtype: Any = _F32

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the weight."""
        return tuple(self.codes.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the codes in their integer type, plus the scales and zero points."""
        zp = () if self.symmetric else (self.zero_point,)
        return nbytes((self.codes, self.scale, *zp))

    def to_dense(self) -> jax.Array:
        """The float weight ``(codes - zero_point) * scale``."""
        return dequantize(self.codes, self.scale, self.zero_point, axis=self.axis, dtype=self.dtype)


@dataclasses.dataclass(frozen=True)
class CodebookArray:
    """Weight sharing: ``value = codebook[indices]``.

    Attributes:
      codebook: the shared values, ``(K,)`` float. When the transform kept exact zeros (pruned
        weights), entry 0 is the fixed 0.0.
      indices: one small unsigned index per weight (uint8 when ``K <= 256``), the weight's shape.
      dtype: the float dtype of the weight (static).
    """

    codebook: jax.Array
    indices: jax.Array
    dtype: Any = _F32

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the weight."""
        return tuple(self.indices.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the indices in their integer type plus the codebook (before entropy coding)."""
        return nbytes((self.codebook, self.indices))

    @property
    def index_bits(self) -> int:
        """``ceil(log2(K))``: the bits an index needs at fixed length."""
        return max(1, math.ceil(math.log2(self.codebook.shape[0])))

    def to_dense(self) -> jax.Array:
        """The float weight ``codebook[indices]``."""
        return jnp.take(self.codebook, self.indices.astype(jnp.int32)).astype(self.dtype)


@dataclasses.dataclass(frozen=True)
class ProductQuantizedArray:
    """Product (and residual) quantization of a kernel viewed as a ``(D, out)`` matrix.

    The first axes of the kernel are flattened into ``D = M * d`` rows, split into ``M``
    sub-spaces of ``d`` rows; in each sub-space, every output column's ``d``-vector is one of ``K``
    codewords. Residual quantization sums ``S`` stages of such codes.

    Attributes:
      codebooks: ``(S, M, K, d)`` float.
      codes: ``(S, M, out)`` unsigned ints.
      shape: the kernel's shape (static).
      dtype: the float dtype of the kernel (static).
    """

    codebooks: jax.Array
    codes: jax.Array
    shape: tuple[int, ...] = ()
    dtype: Any = _F32

    @property
    def nbytes(self) -> int:
        """Bytes of the codes in their integer type plus the codebooks."""
        return nbytes((self.codebooks, self.codes))

    def to_dense(self) -> jax.Array:
        """The float kernel: the sum over stages of the selected codewords, reshaped."""
        _, m, _, d = self.codebooks.shape
        out = self.codes.shape[-1]
        idx = self.codes.astype(jnp.int32)  # (S, M, out)
        words = jnp.take_along_axis(self.codebooks, idx[..., None], axis=2)  # (S, M, out, d)
        w = jnp.sum(words, axis=0)  # (M, out, d)
        w = jnp.transpose(w, (0, 2, 1)).reshape(m * d, out)
        return w.reshape(self.shape).astype(self.dtype)


jax.tree_util.register_dataclass(
    QuantizedArray,
    data_fields=["codes", "scale", "zero_point"],
    meta_fields=["axis", "bits", "symmetric", "dtype"],
)
jax.tree_util.register_dataclass(
    CodebookArray, data_fields=["codebook", "indices"], meta_fields=["dtype"]
)
jax.tree_util.register_dataclass(
    ProductQuantizedArray, data_fields=["codebooks", "codes"], meta_fields=["shape", "dtype"]
)

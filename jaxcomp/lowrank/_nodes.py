"""Factored kernels: the pytree nodes that low-rank transforms put where a ``kernel`` was.

Each node is a NamedTuple of arrays that stands for one dense kernel (a ``Dense`` kernel ``(m, n)``
or a ``Conv`` kernel ``(kh, kw, C, F)``, flax's layouts). It knows how to

* ``to_dense()``: rebuild the kernel (what ``transform.apply`` hands the unchanged model in
  training); ``nbytes``: the bytes of the factors (the node protocol of :mod:`jaxcomp.core`);
* ``matmul(x, precision)`` and/or ``conv(x, spec)``: compute the layer's output from the factors,
  without the bias (what :func:`jaxcomp.adapt.run_factorized` calls at inference).

Fields that are not trained (integer channel assignments, a fixed dictionary) are
``jaxcomp.core.MaskedNode()`` in a transform's ``cparams`` and live in its state; ``finalize``
fills them in, so the finalized node is complete.

References:
    Denton, Zaremba, Bruna, LeCun and Fergus, "Exploiting linear structure within convolutional
    networks for efficient evaluation", NeurIPS 2014, arXiv:1404.0736.

    Jaderberg, Vedaldi and Zisserman, "Speeding up convolutional neural networks with low rank
    expansions", BMVC 2014, arXiv:1405.3866.

    Lebedev, Ganin, Rakhuba, Oseledets and Lempitsky, "Speeding-up convolutional neural networks
    using fine-tuned CP-decomposition", ICLR 2015, arXiv:1412.6553.

    Kim, Park, Yoo, Choi, Yang and Shin, "Compression of deep convolutional neural networks for
    fast and low power mobile applications", ICLR 2016, arXiv:1511.06530.

    Rigamonti, Sironi, Lepetit and Fua, "Learning separable filters", CVPR 2013.

    Denil, Shakibi, Dinh, Ranzato and de Freitas, "Predicting parameters in deep learning",
    NeurIPS 2013, arXiv:1306.0543.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcomp.adapt._factorized import ConvSpec
from jaxcomp.adapt._factorized import conv
from jaxcomp.adapt._factorized import depthwise
from jaxcomp.adapt._factorized import depthwise_impl
from jaxcomp.adapt._factorized import grouped_conv
from jaxcomp.core._nodes import nbytes

__all__ = [
    "CP",
    "Bicluster",
    "LowRank",
    "Monochromatic",
    "Predicted",
    "Separable",
    "SeparableBasis",
    "Tucker2",
]

Array = jax.Array


def _factor_bytes(node: Any) -> int:
    """The bytes of a node's arrays (integer assignments included; ``MaskedNode`` counts 0)."""
    return nbytes(tuple(node))


def _mm(x: Array, w: Array, precision: Any = None) -> Array:
    """``x @ w`` over the last axis of ``x`` (a 1x1 convolution in channels-last layout)."""
    return jnp.matmul(x, w, precision=precision)


def _depthwise_axis(x: Array, taps: Array, spec: ConvSpec, axis: int) -> Array:
    """A depthwise convolution along one spatial axis of a 2-D input; ``taps`` is ``(k, R)``."""
    k, r = taps.shape
    shape = (k, 1, r) if axis == 0 else (1, k, r)
    return depthwise(x, jnp.reshape(taps, shape), spec.along(axis))


class LowRank(NamedTuple):
    """``kernel = u @ v`` over the output axis (truncated SVD).

    Attributes:
      u: ``(m, r)`` for a ``Dense`` kernel, ``(*spatial, C, r)`` for a convolution (a convolution
        to ``r`` channels).
      v: ``(r, n)``: the product to the output features (a 1x1 convolution).
    """

    u: Array
    v: Array

    nbytes = property(_factor_bytes, doc="Bytes of the factors as stored.")

    def to_dense(self) -> Array:
        return jnp.tensordot(self.u, self.v, axes=1)

    def matmul(self, x: Array, precision: Any = None) -> Array:
        return _mm(_mm(x, self.u, precision), self.v, precision)

    def conv(self, x: Array, spec: ConvSpec) -> Array:
        return _mm(conv(x, self.u, spec), self.v, spec.precision)


class Separable(NamedTuple):
    """A ``kh x kw`` convolution as ``kh x 1`` to ``K`` channels then ``1 x kw`` (Jaderberg).

    Attributes:
      vertical: ``(kh, 1, C, K)``.
      horizontal: ``(1, kw, K, F)``.
    """

    vertical: Array
    horizontal: Array

    nbytes = property(_factor_bytes, doc="Bytes of the factors as stored.")

    def to_dense(self) -> Array:
        return jnp.einsum("ick,jkf->ijcf", self.vertical[:, 0], self.horizontal[0])

    def conv(self, x: Array, spec: ConvSpec) -> Array:
        return conv(conv(x, self.vertical, spec.along(0)), self.horizontal, spec.along(1))


class CP(NamedTuple):
    """A rank-``R`` CP kernel: 1x1 to ``R``, ``kh x 1`` and ``1 x kw`` depthwise, 1x1 (Lebedev).

    ``kernel[i, j, c, f] = sum_r first[c, r] vertical[i, r] horizontal[j, r] last[r, f]``.

    Attributes:
      first: ``(C, R)``.
      vertical: ``(kh, R)``.
      horizontal: ``(kw, R)``.
      last: ``(R, F)``.
    """

    first: Array
    vertical: Array
    horizontal: Array
    last: Array

    nbytes = property(_factor_bytes, doc="Bytes of the factors as stored.")

    def to_dense(self) -> Array:
        return jnp.einsum(
            "cr,ir,jr,rf->ijcf", self.first, self.vertical, self.horizontal, self.last
        )

    def conv(self, x: Array, spec: ConvSpec) -> Array:
        z = _mm(x, self.first, spec.precision)
        # two passes (kh taps, then kw taps); one pass of the kh kw rank-1 taps measured slower
        # on CPU for few channels (VGG: 81 ms against 48 ms at batch 128)
        z = _depthwise_axis(z, self.vertical, spec, 0)
        z = _depthwise_axis(z, self.horizontal, spec, 1)
        return _mm(z, self.last, spec.precision)


class Tucker2(NamedTuple):
    """A Tucker-2 kernel: 1x1 to ``R3``, a ``kh x kw`` core to ``R4``, 1x1 (Kim et al.).

    Attributes:
      first: ``(C, R3)``.
      core: ``(kh, kw, R3, R4)``.
      last: ``(R4, F)``.
    """

    first: Array
    core: Array
    last: Array

    nbytes = property(_factor_bytes, doc="Bytes of the factors as stored.")

    def to_dense(self) -> Array:
        return jnp.einsum("cr,ijrs,sf->ijcf", self.first, self.core, self.last)

    def conv(self, x: Array, spec: ConvSpec) -> Array:
        z = conv(_mm(x, self.first, spec.precision), self.core, spec)
        return _mm(z, self.last, spec.precision)


class Monochromatic(NamedTuple):
    """Denton's monochromatic kernel: each output filter sees one of ``C'`` color projections.

    ``kernel[i, j, c, f] = colors[c, assign[f]] * spatial[i, j, f]``: the input is projected to
    ``C'`` color channels by a 1x1 convolution, each output filter takes the channel of its
    cluster and convolves it with its own ``kh x kw`` spatial filter (a depthwise convolution).

    Attributes:
      colors: ``(C, C')``, the cluster centres of the filters' color vectors.
      spatial: ``(kh, kw, F)``.
      assign: ``(F,)`` int32, each filter's color cluster (not trained).
    """

    colors: Array
    spatial: Array
    assign: Any

    nbytes = property(_factor_bytes, doc="Bytes of the factors as stored.")

    def to_dense(self) -> Array:
        col = jnp.take(self.colors, self.assign, axis=1)  # (C, F)
        return self.spatial[:, :, None, :] * col[None, None]

    def conv(self, x: Array, spec: ConvSpec) -> Array:
        # the projection on each filter's color, folded into one 1x1 (C -> F): on CPU a gather of
        # the C' color channels costs more than the C x F products it saves
        z = _mm(x, jnp.take(self.colors, self.assign, axis=1), spec.precision)
        return depthwise(z, self.spatial, spec)


class Bicluster(NamedTuple):
    """Denton's biclustered kernel: ``G`` input by ``H`` output channel clusters, SVD per block.

    With the input channels reordered by ``perm_in`` into ``G`` groups of ``C/G`` and the output
    channels into ``H`` groups of ``F/H``, block ``(g, h)`` of the kernel, as a
    ``(kh kw C/G, F/H)`` matrix, is ``u[..., g, h, :] @ v[g, h]``. It runs as a grouped convolution
    (``G`` groups, ``H K`` outputs per group) and a block product (run as one product with the
    block-sparse ``(G H K, F)`` matrix).

    Attributes:
      u: ``(kh, kw, C/G, G*H*K)``, output channels ordered ``(g, h, k)``.
      v: ``(G, H, K, F/H)``.
      perm_in: ``(C,)`` int32, the input channels in cluster order (not trained).
      inv_out: ``(F,)`` int32, where each original output channel sits in cluster order.
    """

    u: Array
    v: Array
    perm_in: Any
    inv_out: Any

    def _blocks(self) -> Array:
        g, h, k, fh = self.v.shape
        kh, kw, cg, _ = self.u.shape
        u6 = jnp.reshape(self.u, (kh, kw, cg, g, h, k))
        w = jnp.einsum("ijcghk,ghkf->ijgchf", u6, self.v)
        return jnp.reshape(w, (kh, kw, g * cg, h * fh))

    nbytes = property(_factor_bytes, doc="Bytes of the factors as stored.")

    def to_dense(self) -> Array:
        wp = self._blocks()
        w = jnp.take(wp, jnp.argsort(self.perm_in), axis=2)
        return jnp.take(w, self.inv_out, axis=3)

    def conv(self, x: Array, spec: ConvSpec) -> Array:
        g, h, k, fh = self.v.shape
        z = grouped_conv(jnp.take(x, self.perm_in, axis=-1), self.u, spec, g)
        # the block product as one matmul with the (G H K, F) matrix that is zero off the blocks,
        # its columns in the original channel order: on CPU one GEMM beats a batched product
        # over the output groups followed by a gather (at H times the block product's MACs)
        block = jnp.einsum("ghkf,hj->ghkjf", self.v, jnp.eye(h, dtype=self.v.dtype))
        block = jnp.take(jnp.reshape(block, (g * h * k, h * fh)), self.inv_out, axis=1)
        return _mm(z, block, spec.precision)


class SeparableBasis(NamedTuple):
    """Filters as learned combinations of ``M`` separable (rank-1) bases (Rigamonti et al.).

    ``kernel[i, j, c, f] = sum_m coeffs[c, m, f] vertical[i, m] horizontal[j, m]``. It runs as a
    ``kh x 1`` depthwise convolution with ``M`` outputs per input channel, a ``1 x kw`` depthwise
    convolution, and a 1x1 combination.

    Attributes:
      vertical: ``(kh, M)``.
      horizontal: ``(kw, M)``.
      coeffs: ``(C, M, F)``.
    """

    vertical: Array
    horizontal: Array
    coeffs: Array

    nbytes = property(_factor_bytes, doc="Bytes of the factors as stored.")

    def to_dense(self) -> Array:
        return jnp.einsum("im,jm,cmf->ijcf", self.vertical, self.horizontal, self.coeffs)

    def conv(self, x: Array, spec: ConvSpec) -> Array:
        c, m, f = self.coeffs.shape
        kh, kw = self.vertical.shape[0], self.horizontal.shape[0]
        if depthwise_impl(spec, max(kh, kw)) == "slices":
            # basis by basis: two 1-D passes over all C channels (channels innermost, as the
            # shifted-slice sums vectorize best), then that basis's 1x1; 1.9x faster on CPU than
            # one pass with M filters per channel ordered (c, m), whose innermost axis is M
            out = None
            for j in range(m):
                v = jnp.broadcast_to(self.vertical[:, j, None, None], (kh, 1, c))
                h = jnp.broadcast_to(self.horizontal[None, :, j, None], (1, kw, c))
                z = depthwise(depthwise(x, v, spec.along(0)), h, spec.along(1))
                y = _mm(z, self.coeffs[:, j, :], spec.precision)
                out = y if out is None else out + y
            return out
        vert = jnp.broadcast_to(self.vertical[:, None, None, :], (kh, 1, c, m))
        z = depthwise(x, vert, spec.along(0))  # M filters per input channel, ordered (c, m)
        z = _depthwise_axis(z, jnp.tile(self.horizontal, (1, c)), spec, 1)
        return _mm(z, jnp.reshape(self.coeffs, (c * m, f)), spec.precision)


class Predicted(NamedTuple):
    """Denil's predicted weights: a fixed dictionary times a small learned matrix.

    Attributes:
      dictionary: ``(m, n_alpha)``, fixed (not trained).
      alpha: ``(n_alpha, n)``, learned.
    """

    dictionary: Any
    alpha: Array

    nbytes = property(_factor_bytes, doc="Bytes of the factors as stored.")

    def to_dense(self) -> Array:
        return jnp.matmul(self.dictionary, self.alpha)

    def matmul(self, x: Array, precision: Any = None) -> Array:
        return _mm(_mm(x, self.dictionary, precision), self.alpha, precision)

"""HashedNets: each weight matrix is a hash of a few shared, trainable buckets.

Chen et al. compress a layer of ``n`` weights to ``K`` real parameters ("buckets"): weight ``i``
is ``xi(i) * b[h(i)]``, where ``h`` hashes its position into ``[0, K)`` and ``xi`` is a second hash
into ``{-1, +1}`` that removes the bias of collisions. The hashes are deterministic functions of
the position and a per-layer seed, so only the buckets need storing; the gradient of a bucket is
the signed sum of the gradients of the weights that share it.

:func:`hashed` is a structure-changing transform: its ``cparams`` hold, at each selected leaf, a
:class:`HashedWeight` node with the ``K`` buckets (the shape and the layer's seed are static
fields), and ``apply`` rebuilds the dense weight by recomputing the hash (a murmur3 ``fmix32``
finalizer of the flat index mixed with the seed, in uint32 arithmetic). ``init`` sets each bucket to
the mean of the signed weights hashed into it, the least-squares projection of the given weights
onto the hashed subspace (a random init, as in the paper, is the projection of random weights).

References:
  Chen, W., Wilson, J. T., Tyree, S., Weinberger, K. Q., Chen, Y. "Compressing neural networks
  with the hashing trick." ICML 2015. arXiv:1504.04788.
"""

from __future__ import annotations

import math
import zlib
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxcomp.core import _checks as checks
from jaxcomp.core._map import map_leaves
from jaxcomp.core._map import select
from jaxcomp.core._transform import Transform

__all__ = ["HashedState", "HashedWeight", "hash_indices", "hashed"]


@struct.dataclass
class HashedWeight:
    """A hashed leaf: ``K`` trainable buckets; the dense shape and hash seed are static.

    Attributes:
      buckets: ``(K,)`` bucket values.
      shape: the dense weight's shape.
      seed: the layer's hash seed (a uint32 value).
    """

    buckets: jax.Array
    shape: tuple[int, ...] = struct.field(pytree_node=False)
    seed: int = struct.field(pytree_node=False)

    def to_dense(self) -> jax.Array:
        """The dense weight: each position's bucket value times its hashed sign."""
        return _dense(self, self.buckets.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of the buckets (the hashes are recomputed from the static seed)."""
        return int(self.buckets.size) * self.buckets.dtype.itemsize


class HashedState(NamedTuple):
    """The state of :func:`hashed` (none: the hashes are recomputed from the static seed)."""


def _fmix32(h: jax.Array) -> jax.Array:
    h = h ^ (h >> jnp.uint32(16))
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> jnp.uint32(13))
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> jnp.uint32(16))


def hash_indices(n: int, buckets: int, seed: int) -> tuple[jax.Array, jax.Array]:
    """The bucket index (int32 in ``[0, buckets)``) and sign (±1) of each of ``n`` positions.

    Args:
      n: the number of weights.
      buckets: ``K >= 1``.
      seed: the layer's seed, an int in ``[0, 2**32)``.

    Returns:
      ``(index, sign)``, both of shape ``(n,)``: ``h(i) = fmix32(i * 0x9E3779B9 + seed) mod K`` and
      ``xi(i) = 1 - 2 * (top bit of fmix32(i ^ seed'))`` with another seed ``seed'``.
    """
    i = jnp.arange(n, dtype=jnp.uint32)
    s1 = jnp.uint32(seed & 0xFFFFFFFF)
    s2 = jnp.uint32((seed * 0x27D4EB2F + 0x165667B1) & 0xFFFFFFFF)
    index = (_fmix32(i * jnp.uint32(0x9E3779B9) + s1) % jnp.uint32(buckets)).astype(jnp.int32)
    sign = 1 - 2 * (_fmix32(i ^ s2) >> jnp.uint32(31)).astype(jnp.int32)
    return index, sign


def _layer_seed(path: str, seed: int) -> int:
    return (zlib.crc32(path.encode()) ^ (seed * 0x9E3779B1)) & 0xFFFFFFFF


def _dense(leaf: HashedWeight, dtype: Any) -> jax.Array:
    n = math.prod(leaf.shape)
    index, sign = hash_indices(n, leaf.buckets.shape[0], leaf.seed)
    return (sign.astype(dtype) * leaf.buckets[index].astype(dtype)).reshape(leaf.shape)


def hashed(
    *,
    compression: float | None = None,
    buckets: int | None = None,
    key: jax.Array,
    where: Any = None,
) -> Transform:
    """HashedNets: each selected leaf of ``n`` weights becomes ``K`` shared buckets.

    Args:
      compression: ``n / K``: each leaf gets ``K = floor(n / compression)`` buckets; a number
        ``>= 1``. Give exactly one of ``compression`` and ``buckets``.
      buckets: ``K`` for every leaf, an int ``>= 1``.
      key: a typed PRNG key (``jax.random.key``); a seed drawn from it is mixed with each
        leaf's path into the leaf's hash seed, so the same key gives the same hashes.
      where: the leaves (default :func:`jaxcomp.select.kernels`).

    Returns:
      A :class:`~jaxcomp.Transform` whose ``cparams`` hold :class:`HashedWeight` nodes at the
      selected leaves; its state is a :class:`HashedState`; ``finalize`` returns the
      ``cparams`` (the buckets are the compressed model).

    Raises:
      ValueError: naming the argument: neither or both of ``compression`` and ``buckets``,
        ``compression < 1``, ``buckets < 1`` (zero buckets), a ``key`` that is not a typed PRNG
        key; in ``init``, a leaf with fewer weights than ``compression`` (it would get zero
        buckets) or fewer than ``buckets``.
    """
    if (compression is None) == (buckets is None):
        raise ValueError("hashed: give exactly one of compression= (>= 1) and buckets= (>= 1)")
    if compression is not None:
        checks.number(compression, fn="hashed", name="compression", low=1.0)
    if buckets is not None:
        checks.integer(buckets, fn="hashed", name="buckets")
    seed = int(jax.random.bits(checks.key(key, fn="hashed"), (), jnp.uint32))

    def init(params):
        def one(leaf, w):
            p, n = leaf.path, w.size
            k = buckets if buckets is not None else math.floor(n / compression)
            if k < 1 or k > n:
                raise ValueError(
                    f"hashed: leaf {p!r} has {n} weights, which gives {k} buckets; buckets must "
                    f"be in [1, {n}] (compression at most {n})"
                )
            s = _layer_seed(p, seed)
            index, sign = hash_indices(n, k, s)
            flat = jnp.ravel(w).astype(jnp.float32) * sign
            total = jax.ops.segment_sum(flat, index, num_segments=k)
            count = jax.ops.segment_sum(jnp.ones_like(flat), index, num_segments=k)
            b = (total / jnp.maximum(count, 1.0)).astype(w.dtype)
            return HashedWeight(b, tuple(w.shape), s)

        return map_leaves(one, select(params, where, fn="hashed"), params), HashedState()

    def apply(cparams, state):
        # only this transform's own nodes: an enclosing node (factors) stays for its transform
        is_h = lambda x: isinstance(x, HashedWeight)
        return jax.tree.map(lambda x: x.to_dense() if is_h(x) else x, cparams, is_leaf=is_h)

    def update(cparams, state, *, step, grads=None):
        del step, grads
        return cparams, state

    return Transform(init, apply, update, lambda cparams, state: cparams)

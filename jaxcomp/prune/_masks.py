"""Exact top-k pruning masks: layer-wise, global, and N:M.

A mask keeps the largest scores and prunes the rest, with *exact* counts: a leaf of ``n`` weights
pruned at sparsity ``s`` has exactly ``floor(s * n)`` zeros (layer-wise), and a global mask over
leaves of ``N`` weights in total has exactly ``floor(s * N)`` zeros in total. Ties are broken
deterministically by position: among equal scores, the weight with the lower flat index (in the
flattening order of the leaves, for a global mask) is pruned first. The selection needs no sort
of the scores (``_rank_mask`` bisects on their bit patterns, between bounds read off a sorted
sample, then breaks ties by position), so recomputing masks inside a training step is cheap, and
the same scores always give the same mask.

A constant sparsity (a Python number) is counted exactly with ``math.floor(s * n)`` in double
precision. A sparsity that comes from a schedule is a traced float32; its count is
``floor(s * n * (1 + 2**-20))``, which is ``floor(s * n)`` up to the float32 rounding of ``s``
(without the nudge, ``float32(0.9) * 10`` would floor to 8).

N:M masks keep the ``N`` largest scores in every group of ``M`` consecutive weights along one axis
(the input axis), the pattern that sparse tensor cores run (2:4).

References:
  Han, S., Pool, J., Tran, J., Dally, W. J. "Learning both weights and connections for efficient
  neural networks." NeurIPS 2015. arXiv:1506.02626.

  Mishra, A. et al. "Accelerating sparse deep neural networks." 2021. arXiv:2104.08378.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.core._tree import is_masked

__all__ = [
    "apply_masks",
    "global_masks",
    "layerwise_masks",
    "nm_mask",
    "num_pruned",
    "topk_mask",
]

_NUDGE = 1.0 + 2.0**-20


def check_nm(n: Any, m: Any, fn: str) -> None:
    """Raises a ValueError naming ``fn`` unless ``m >= 1`` and ``1 <= n <= m`` are ints."""
    checks.integer(m, fn=fn, name="m")
    checks.integer(n, fn=fn, name="n", high=m)


def num_pruned(sparsity: Any, n: int) -> Any:
    """How many of ``n`` weights a sparsity prunes: ``floor(sparsity * n)``, clipped to ``[0, n]``.

    Args:
      sparsity: a Python number (counted exactly in double precision) or a traced scalar (counted
        in float32 with the nudge described in the module docstring).
      n: the number of weights, a Python int.

    Returns:
      A Python int for a Python number, else an int32 scalar.

    Examples:
        >>> num_pruned(0.9, 10), num_pruned(0.5, 7)
        (9, 3)
    """
    if isinstance(sparsity, int | float) and not isinstance(sparsity, bool):
        return min(max(math.floor(float(sparsity) * n), 0), n)
    s = jnp.asarray(sparsity, jnp.float32)
    k = jnp.floor(s * jnp.float32(n) * jnp.float32(_NUDGE))
    return jnp.clip(k, 0, n).astype(jnp.int32)


_SAMPLE = 4096
_MARGIN = 96


def _bracket(u: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Bounds ``lo <= t <= hi`` on the ``k``-th smallest key ``t``, narrowed by a sample.

    The sorted strided sample of ``_SAMPLE`` keys puts ``t`` near its ``k / n`` quantile; two
    counts over all keys check that ``t`` lies between the sample's keys ``_MARGIN`` places either
    side (about four standard deviations of the quantile's position). If it does not, the bounds
    are the whole key range. Either way the bisection that follows is exact; the sample only saves
    it the passes that would narrow the range down to there.
    """
    n = u.shape[0]
    full = (jnp.uint32(0), jnp.uint32(0xFFFFFFFF))
    if n <= _SAMPLE:
        return full
    stride = n // _SAMPLE
    sample = jnp.sort(u[::stride][:_SAMPLE])
    j = k // stride
    lo = sample[jnp.clip(j - _MARGIN, 0, _SAMPLE - 1)]
    hi = sample[jnp.clip(j + _MARGIN, 0, _SAMPLE - 1)]
    ok = (jnp.sum(u < lo, dtype=jnp.int32) < k) & (jnp.sum(u <= hi, dtype=jnp.int32) >= k)
    return jnp.where(ok, lo, full[0]), jnp.where(ok, hi, full[1])


@jax.jit
def _rank_mask(flat_scores: jax.Array, k: Any) -> jax.Array:
    """Keeps all but the ``k`` lowest of a flat vector (lower index first among ties).

    The scores are mapped to uint32 keys in the same order (the float's bits, with the sign folded
    so that the integer order is the float order; NaN highest), the ``k``-th smallest key ``t`` is
    found, and of the keys equal to ``t`` the first ``k - count(key < t)`` in index order are
    pruned (all of them, without the cumulative sum over the ties, when that is their number: the
    usual case of distinct scores). A vector of at most ``_SAMPLE`` keys reads ``t`` off its sort
    (one small sort compiles to half the code of the loop, which matters in models with hundreds
    of small leaves); a longer one finds ``t`` without a sort, by bisection (at most 32 counting
    passes; fewer from the bounds of :func:`_bracket`).
    """
    x = flat_scores.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    key = jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)
    u = jax.lax.bitcast_convert_type(key, jnp.uint32) ^ jnp.uint32(0x80000000)
    u = jnp.where(jnp.isnan(x), jnp.uint32(0xFFFFFFFF), u)
    k = jnp.asarray(k, jnp.int32)
    n = u.shape[0]
    if n <= _SAMPLE:
        # k = 0 reads the smallest key: its ties_to_prune below is then 0, so nothing is pruned
        t = jnp.sort(u)[jnp.clip(k - 1, 0, max(n - 1, 0))] if n else jnp.uint32(0)
    else:

        def bisect(bounds):
            lo, hi = bounds
            mid = lo + (hi - lo) // jnp.uint32(2)
            enough = jnp.sum(u <= mid, dtype=jnp.int32) >= k
            return jnp.where(enough, lo, mid + jnp.uint32(1)), jnp.where(enough, mid, hi)

        t, _ = jax.lax.while_loop(lambda b: b[0] < b[1], bisect, _bracket(u, k))
    below = u < t
    ties_to_prune = k - jnp.sum(below, dtype=jnp.int32)
    tie = u == t
    # the cumulative sum (a full pass of its own) only when some ties must be kept
    pruned_ties = jax.lax.cond(
        ties_to_prune >= jnp.sum(tie, dtype=jnp.int32),
        lambda: tie,
        lambda: tie & (jnp.cumsum(tie, dtype=jnp.int32) <= ties_to_prune),
    )
    return ~(below | pruned_ties)


def _select(flat: jax.Array, k: Any) -> jax.Array:
    """``_rank_mask`` on ``flat`` padded with NaN (kept, after every real score) to a power of 2.

    The padding lets leaves of many sizes share a few compiled selections.
    """
    n = flat.shape[0]
    size = 1 << max(n - 1, 0).bit_length()
    if size > n:
        flat = jnp.concatenate([flat.astype(jnp.float32), jnp.full((size - n,), jnp.nan)])
    return _rank_mask(flat, k)[:n]


def topk_mask(scores: jax.Array, num_zeros: Any) -> jax.Array:
    """A boolean mask of ``scores``' shape with exactly ``num_zeros`` False entries.

    The ``num_zeros`` lowest scores are pruned; among equal scores the lower flat index is pruned
    first. NaN scores rank highest (kept).

    Args:
      scores: any array.
      num_zeros: an int or int32 scalar in ``[0, scores.size]``.

    Returns:
      A bool array, True where kept.

    Examples:
        >>> import jax.numpy as jnp
        >>> topk_mask(jnp.array([3.0, 1.0, 1.0, 2.0]), 2).tolist()
        [True, False, False, True]
    """
    flat = jnp.ravel(scores).astype(jnp.float32)
    return _select(flat, num_zeros).reshape(scores.shape)


def layerwise_masks(scores: Any, sparsities: Any) -> Any:
    """One exact top-k mask per leaf: leaf ``i`` gets ``floor(s_i * n_i)`` zeros.

    Args:
      scores: a pytree of score arrays; :class:`~jaxcomp.core.MaskedNode` leaves are passed over.
      sparsities: one sparsity for every leaf, or a pytree of them with the structure of
        ``scores`` (Python numbers or traced scalars).

    Returns:
      A pytree of bool masks with the structure of ``scores``.
    """
    if isinstance(sparsities, int | float) or getattr(sparsities, "ndim", None) == 0:
        return jax.tree.map(lambda x: topk_mask(x, num_pruned(sparsities, x.size)), scores)
    return jax.tree.map(lambda x, s: topk_mask(x, num_pruned(s, x.size)), scores, sparsities)


def global_masks(scores: Any, sparsity: Any) -> Any:
    """Masks with one threshold across all leaves: exactly ``floor(s * N)`` zeros in total.

    The scores of every leaf are ranked together (in flattening order, so ties are broken by
    leaf order, then by index), the ``floor(s * N)`` lowest are pruned.

    Args:
      scores: a pytree of score arrays (MaskedNode leaves are passed over).
      sparsity: a Python number or a traced scalar.

    Returns:
      A pytree of bool masks with the structure of ``scores``.
    """
    leaves, treedef = jax.tree.flatten(scores)
    if not leaves:
        return scores
    sizes = [x.size for x in leaves]
    flat = jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in leaves])
    keep = _select(flat, num_pruned(sparsity, flat.shape[0]))
    out, start = [], 0
    for x, n in zip(leaves, sizes, strict=True):
        out.append(keep[start : start + n].reshape(x.shape))
        start += n
    return jax.tree.unflatten(treedef, out)


def nm_mask(scores: jax.Array, *, n: int, m: int, axis: int = -2) -> jax.Array:
    """Keeps the ``n`` largest scores in every group of ``m`` consecutive entries along ``axis``.

    Args:
      scores: an array whose size along ``axis`` is a multiple of ``m``.
      n: how many to keep per group, ``1 <= n <= m``.
      m: the group size, ``m >= 1``.
      axis: the grouped axis; ``-2`` is the input axis of a Dense ``(in, out)`` or a convolution
        ``(h, w, in, out)`` kernel.

    Returns:
      A bool mask of ``scores``' shape with exactly ``m - n`` False entries per group.

    Raises:
      ValueError: ``n``/``m`` out of range or the axis length not a multiple of ``m``.

    Examples:
        >>> import jax.numpy as jnp
        >>> nm_mask(jnp.array([[1.0], [4.0], [3.0], [2.0]]), n=2, m=4).ravel().tolist()
        [False, True, True, False]
    """
    check_nm(n, m, "nm_mask")
    x = jnp.moveaxis(scores, axis, -1)
    if x.shape[-1] % m:
        raise ValueError(
            f"nm_mask: the size {x.shape[-1]} of axis {axis} must be a multiple of m={m}"
        )
    g = x.reshape((*x.shape[:-1], x.shape[-1] // m, m)).astype(jnp.float32)
    order = jnp.argsort(g, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1)
    keep = (rank >= m - n).reshape(x.shape)
    return jnp.moveaxis(keep, -1, axis)


def apply_masks(params: Any, masks: Any) -> Any:
    """Hard-masked params: ``where(mask, w, 0)`` where a mask is given, the leaf itself elsewhere.

    Args:
      params: a pytree of arrays.
      masks: a pytree with the structure of ``params`` as a prefix whose entries are bool arrays
        of the leaves' shapes, or :class:`~jaxcomp.core.MaskedNode` for leaves to leave alone.

    Returns:
      The masked params (pruned weights exactly zero).
    """

    def one(w, m):
        return w if is_masked(m) else jnp.where(m, w, jnp.zeros_like(w))

    return jax.tree.map(one, params, masks)

"""Transforms that hold masks fixed: masks given from elsewhere, and N:M semi-structured masks.

:func:`fixed_masks` retrains a model whose masks were chosen by a one-shot procedure (OBS,
sensitivity analysis, a saved mask): ``apply`` and ``update`` keep the pruned weights exactly zero
while the others train. :func:`nm` prunes a kernel to the N:M pattern (N kept in every M
consecutive weights along the input axis; 2:4 runs on sparse tensor cores) from the magnitudes at
``init`` and then keeps that pattern, as NVIDIA's recipe does (prune a trained model once,
retrain with the mask fixed).

References:
  Han, S., Pool, J., Tran, J., Dally, W. J. "Learning both weights and connections for efficient
  neural networks." NeurIPS 2015. arXiv:1506.02626.

  Mishra, A., Latorre, J. A., Pool, J., Stosic, D., Stosic, D., Venkatesh, G., Yu, C.,
  Micikevicius, P. "Accelerating sparse deep neural networks." 2021. arXiv:2104.08378.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.core._map import by_path
from jaxcomp.core._map import leaves
from jaxcomp.core._map import placed
from jaxcomp.core._map import rebuild
from jaxcomp.core._map import select
from jaxcomp.core._map import selected
from jaxcomp.core._transform import Transform
from jaxcomp.core._tree import leaf_paths
from jaxcomp.prune._masks import check_nm
from jaxcomp.prune._masks import nm_mask
from jaxcomp.prune._pruner import apply_masked
from jaxcomp.prune._pruner import apply_own_masked
from jaxcomp.prune._pruner import zero_pruned

__all__ = [
    "FixedMasksState",
    "NmState",
    "fixed_masks",
    "nm",
]


class FixedMasksState(NamedTuple):
    """The state of :func:`fixed_masks`: bool ``masks`` per masked leaf, ``MaskedNode()`` else."""

    masks: Any


class NmState(NamedTuple):
    """The state of :func:`nm`: bool ``masks`` per selected leaf, ``MaskedNode()`` elsewhere."""

    masks: Any


def _masked_transform(init_masks, state_cls) -> Transform:
    """A transform whose masks come from ``init_masks(params) -> (spec, masks)``; then fixed."""

    def init(params):
        spec, masks = init_masks(params)
        return rebuild(spec, params, zero_pruned(selected(spec, params), masks)), state_cls(
            placed(spec, masks)
        )

    def update(cparams, state, *, step, grads=None):
        del step, grads
        return apply_masked(cparams, state), state

    # init and update keep the masked weights at exact zero
    return Transform(init, apply_masked, update, apply_masked, apply_own_masked)


def fixed_masks(masks: Any, *, where: Any = None) -> Transform:
    """Holds given masks: pruned weights are zero in ``apply`` and re-zeroed in ``update``.

    Args:
      masks: a tree whose bool arrays, matched to the params by ``/``-joined path, are the masks
        (True = kept); leaves it has no array for (``MaskedNode()``, absent) are left alone. Or a
        function ``params -> masks`` that ``init`` calls.
      where: the leaves to mask (any form of :func:`jaxcomp.select.resolve`); each must have a
        mask. By default, every leaf that ``masks`` has an array for.

    Returns:
      A :class:`~jaxcomp.Transform` whose state is a :class:`FixedMasksState`.

    Raises:
      ValueError: in ``init``, no mask matches a leaf, a selected leaf has no mask, or a mask's
        shape differs from its leaf's.
    """
    if masks is None:
        raise ValueError("fixed_masks: masks must be a tree of bool arrays or a function of params")

    def init_masks(params):
        tree = masks(params) if callable(masks) else masks
        given = set(leaf_paths(tree))  # MaskedNode placeholders have no leaves
        sel = (lambda p, x: p in given) if where is None else where
        spec = select(params, sel, fn="fixed_masks")
        paths, ws = [lf.path for lf in leaves(spec)], selected(spec, params)
        found = by_path(tree, paths, [jnp.shape(w) for w in ws], what="fixed_masks: masks")
        return spec, [jnp.asarray(m, bool) for m in found]

    return _masked_transform(init_masks, FixedMasksState)


def nm(*, n: int = 2, m: int = 4, axis: int = -2, where: Any = None) -> Transform:
    """N:M sparsity: keeps the ``n`` largest-magnitude weights in every ``m`` along ``axis``.

    The pattern is chosen from the magnitudes at ``init`` and then held (``update`` re-zeroes).

    Args:
      n: weights kept per group, ``1 <= n <= m``.
      m: the group size, ``m >= 1`` (2:4 is ``n=2, m=4``).
      axis: the grouped axis; ``-2`` is the input axis of Dense ``(in, out)`` and convolution
        ``(h, w, in, out)`` kernels.
      where: the leaves (default :func:`jaxcomp.select.kernels`).

    Returns:
      A :class:`~jaxcomp.Transform` whose state is an :class:`NmState`.

    Raises:
      ValueError: ``n > m`` or either out of range (when built); in ``init``, a selected leaf
        whose size along ``axis`` is not a multiple of ``m`` (the message names it).
    """
    check_nm(n, m, "nm")
    checks.integer(axis, fn="nm", name="axis", low=None)

    def init_masks(params):
        spec = select(params, where, fn="nm")
        out = []
        for p, w in zip([lf.path for lf in leaves(spec)], selected(spec, params), strict=True):
            if w.ndim == 0 or not -w.ndim <= axis < w.ndim or w.shape[axis] % m:
                raise ValueError(
                    f"nm: leaf {p!r} of shape {w.shape} has no axis {axis} whose size is a "
                    f"multiple of m={m}; select other leaves with where= or change axis"
                )
            out.append(nm_mask(jnp.abs(w), n=n, m=m, axis=axis))
        return spec, out

    return _masked_transform(init_masks, NmState)

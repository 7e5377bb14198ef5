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

from jaxcomp.core._transform import Transform
from jaxcomp.core._tree import leaf_paths
from jaxcomp.errors import SelectionError
from jaxcomp.prune._masks import check_nm
from jaxcomp.prune._masks import nm_mask
from jaxcomp.prune._pruner import Leaves
from jaxcomp.prune._pruner import apply_masked
from jaxcomp.prune._pruner import apply_own_masked
from jaxcomp.prune._pruner import by_path
from jaxcomp.prune._pruner import path_dict
from jaxcomp.prune._pruner import select_leaves
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
    """A transform whose masks come from ``init_masks(params) -> (leaves, masks)``; then fixed."""

    def init(params):
        lv, masks = init_masks(params)
        return lv.replace(zero_pruned(lv.sel(), masks)), state_cls(lv.state_tree(masks))

    def update(cparams, state, *, step, grads=None):
        del step, grads
        return apply_masked(cparams, state), state

    # init and update keep the masked weights at exact zero
    return Transform(init, apply_masked, update, apply_masked, apply_own_masked)


def fixed_masks(masks: Any) -> Transform:
    """Holds given masks: pruned weights are zero in ``apply`` and re-zeroed in ``update``.

    Args:
      masks: a tree whose bool arrays, matched to the params by ``/``-joined path, are the masks
        (True = kept); leaves it has no array for (``MaskedNode()``, absent) are left alone. Or a
        function ``params -> masks`` that ``init`` calls.

    Returns:
      A :class:`~jaxcomp.Transform` whose state is a :class:`FixedMasksState`.

    Raises:
      ValueError: in ``init``, no mask matches a leaf, or a mask's shape differs from its leaf's.
    """
    if masks is None:
        raise ValueError("fixed_masks: masks must be a tree of bool arrays or a function of params")

    def init_masks(params):
        tree = masks(params) if callable(masks) else masks
        given = path_dict(tree)
        paths = leaf_paths(params)
        selected = [p in given for p in paths]
        if not any(selected):
            raise SelectionError(
                f"fixed_masks: no mask path {sorted(given)[:5]} matches a leaf of the params "
                f"{paths[:5]}"
            )
        lv = Leaves(params, selected)
        shapes = [jnp.shape(w) for w in lv.sel()]
        found = by_path(tree, lv.sel_paths(), "fixed_masks: masks", shapes)
        return lv, [jnp.asarray(m, bool) for m in found]

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
    if not isinstance(axis, int):
        raise ValueError(f"nm: axis must be an int, got {axis!r}")

    def init_masks(params):
        lv = select_leaves(params, where, "nm")
        out = []
        for p, w in zip(lv.sel_paths(), lv.sel(), strict=True):
            if w.ndim == 0 or not -w.ndim <= axis < w.ndim or w.shape[axis] % m:
                raise ValueError(
                    f"nm: leaf {p!r} of shape {w.shape} has no axis {axis} whose size is a "
                    f"multiple of m={m}; select other leaves with where= or change axis"
                )
            out.append(nm_mask(jnp.abs(w), n=n, m=m, axis=axis))
        return lv, out

    return _masked_transform(init_masks, NmState)

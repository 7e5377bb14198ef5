"""Sensitivity analysis: prune one layer at a time and measure what it costs.

Han et al. choose each layer's pruning threshold from a sensitivity scan: every layer alone is
pruned over a grid of sparsities while the others stay dense, and the accuracy is measured. Layers
whose accuracy barely moves (large fully-connected layers) can be pruned hard; sensitive ones
(the first convolution) less. :func:`sensitivity_scan` runs the scan with any criterion and
evaluation function; :func:`sparsities_for_drop` turns it into per-layer sparsities that each
cost at most a given drop, to pass to :func:`jaxcomp.prune.magnitude` as ``sparsity=``.

References:
  Han, S., Pool, J., Tran, J., Dally, W. J. "Learning both weights and connections for efficient
  neural networks." NeurIPS 2015. arXiv:1506.02626.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.core._map import leaves
from jaxcomp.core._map import rebuild
from jaxcomp.core._map import select
from jaxcomp.core._map import selected
from jaxcomp.prune._masks import num_pruned
from jaxcomp.prune._masks import topk_mask

__all__ = ["SensitivityResult", "sensitivity_scan", "sparsities_for_drop"]


class SensitivityResult(NamedTuple):
    """A sensitivity scan.

    Attributes:
      baseline: the metric of the unpruned params.
      sparsities: the grid, increasing.
      metrics: ``{path: (metric at each sparsity,)}`` with only that leaf pruned.
    """

    baseline: float
    sparsities: tuple[float, ...]
    metrics: dict[str, tuple[float, ...]]

    def drops(self) -> dict[str, tuple[float, ...]]:
        """``{path: (baseline - metric at each sparsity,)}``."""
        return {p: tuple(self.baseline - m for m in ms) for p, ms in self.metrics.items()}


def sensitivity_scan(
    evaluate: Callable[[Any], float],
    params: Any,
    *,
    sparsities: Sequence[float],
    where: Any = None,
    score: Callable[[Any], Any] = jnp.abs,
) -> SensitivityResult:
    """Prunes each selected leaf alone over ``sparsities`` and evaluates.

    Args:
      evaluate: ``evaluate(params) -> metric`` (higher is better, e.g. test accuracy).
      params: the dense params.
      sparsities: the grid, values in ``[0, 1)``.
      where: the leaves to scan (default :func:`jaxcomp.select.kernels`).
      score: the criterion, ``score(leaf) -> scores`` (magnitude by default); the
        ``floor(s * n)`` lowest are pruned.

    Returns:
      A :class:`SensitivityResult`.

    Raises:
      ValueError: an empty grid or a sparsity outside ``[0, 1)``.
    """
    if not sparsities:
        raise ValueError(
            "sensitivity_scan: sparsities must be a non-empty list of numbers in [0, 1)"
        )
    grid = sorted(
        checks.fraction(s, fn="sensitivity_scan", name="sparsities[i]") for s in sparsities
    )
    spec = select(params, where, fn="sensitivity_scan")
    ws = selected(spec, params)
    base = float(evaluate(params))
    metrics = {}
    for i, (leaf, w) in enumerate(zip(leaves(spec), ws, strict=True)):
        sc = score(w)
        row = []
        for s in grid:
            m = topk_mask(sc, num_pruned(s, w.size))
            pruned = [jnp.where(m, w, jnp.zeros_like(w)) if j == i else x for j, x in enumerate(ws)]
            row.append(float(evaluate(rebuild(spec, params, pruned))))
        metrics[leaf.path] = tuple(row)
    return SensitivityResult(base, tuple(grid), metrics)


def sparsities_for_drop(result: SensitivityResult, *, max_drop: float) -> dict[str, float]:
    """Per leaf, the largest grid sparsity whose drop, and that of every smaller one, is small.

    Args:
      result: a :func:`sensitivity_scan`.
      max_drop: the largest allowed ``baseline - metric`` (same units as the metric), ``>= 0``.

    Returns:
      ``{path: sparsity}`` (0.0 for a leaf that no grid value satisfies), usable as
      ``magnitude(sparsity=...)``.
    """
    checks.number(max_drop, fn="sparsities_for_drop", name="max_drop", low=0)
    out = {}
    for p, drops in result.drops().items():
        chosen = 0.0
        for s, d in zip(result.sparsities, drops, strict=True):
            if d > max_drop:
                break
            chosen = s
        out[p] = chosen
    return out

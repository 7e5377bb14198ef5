"""Sensitivity analysis of channel pruning: each group pruned alone, and what it costs.

Li et al. choose how many filters to remove from each layer by pruning every layer alone over a
range of ratios (by the L1 norm of its filters) and measuring the accuracy: layers whose accuracy
barely moves are pruned hard, sensitive ones less or not at all. :func:`sensitivity` runs that scan
over the dependency groups (a residual stream is one group: its writers are pruned together), and
:func:`ratios_for_drop` turns it into one ratio per group, which :func:`jaxcomp.structured.masks`
and :func:`jaxcomp.structured.channels` take as ``ratio=``.

References:
    Li, Kadav, Durdanovic, Samet and Graf, "Pruning filters for efficient ConvNets", ICLR 2017,
    arXiv:1608.08710 [33], section 3.1.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.structured._criteria import keep_top
from jaxcomp.structured._criteria import scores as channel_scores
from jaxcomp.structured._graph import Groups
from jaxcomp.structured._shrink import Masks
from jaxcomp.structured._shrink import apply_masks

__all__ = ["GroupSensitivity", "ratios_for_drop", "sensitivity"]


class GroupSensitivity(NamedTuple):
    """A sensitivity scan over dependency groups.

    Attributes:
        baseline: the metric of the unpruned model.
        ratios: the grid of ratios, increasing.
        metrics: per group, the metric with that group alone pruned at each ratio.
    """

    baseline: float
    ratios: tuple[float, ...]
    metrics: tuple[tuple[float, ...], ...]


def sensitivity(
    evaluate: Callable[[Any], float],
    variables: Any,
    groups: Groups,
    *,
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    criterion: str = "l1",
    grads: Any = None,
) -> GroupSensitivity:
    """Prunes each group alone at each ratio (the other groups whole) and evaluates.

    Args:
        evaluate: ``evaluate(variables) -> metric`` (higher is better, such as test accuracy).
        variables: the dense model's variables.
        groups: from :func:`jaxcomp.structured.groups`.
        ratios: the grid of ratios, each in [0, 1), increasing.
        criterion: the channel score (see :func:`jaxcomp.structured.scores`).
        grads: gradients for ``criterion="taylor"``.

    Returns:
        A :class:`GroupSensitivity`.
    """
    grid = tuple(checks.fraction(r, fn="sensitivity", name="ratios") for r in ratios)
    if not grid or list(grid) != sorted(set(grid)):
        raise ValueError(f"sensitivity: ratios must be increasing and not empty, got {ratios!r}")
    if not callable(evaluate):
        raise TypeError(f"sensitivity: evaluate must be callable, got {evaluate!r}")
    s = channel_scores(groups, variables, criterion=criterion, grads=grads)
    whole = tuple(jnp.ones(g.size, bool) for g in groups)
    metrics = []
    for gi in range(len(groups)):
        row = []
        for r in grid:
            keep = (*whole[:gi], keep_top(s[gi], r), *whole[gi + 1 :])
            row.append(float(evaluate(apply_masks(variables, Masks(keep, groups)))))
        metrics.append(tuple(row))
    return GroupSensitivity(float(evaluate(variables)), grid, tuple(metrics))


def ratios_for_drop(result: GroupSensitivity, *, max_drop: float) -> tuple[float, ...]:
    """Per group, the largest grid ratio whose drop, and that of every smaller ratio, is small.

    Args:
        result: a :func:`sensitivity` scan.
        max_drop: the largest allowed ``baseline - metric``, ``>= 0``.

    Returns:
        One ratio per group (0.0 where no grid ratio qualifies), for ``masks(ratio=...)`` or
        ``channels(ratio=...)``.
    """
    checks.number(max_drop, fn="ratios_for_drop", name="max_drop", low=0)
    out = []
    for row in result.metrics:
        best = 0.0
        for r, m in zip(result.ratios, row):
            if result.baseline - m > max_drop:
                break
            best = r
        out.append(best)
    return tuple(out)

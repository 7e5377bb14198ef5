"""Sparsity schedules for gradual (Zhu and Gupta) and iterative (Han et al.) pruning.

Both return ordinary :mod:`jaxcomp.schedules` functions of the step, to pass as a pruner's
``sparsity=``; the pruner recomputes its masks every ``update_every`` steps, and since pruned
weights stay pruned the masks are nested.

* :func:`gradual_schedule`: ``s_f + (s_i - s_f) * (1 - (t - begin) / (end - begin))**3``, pruning
  fast while the network has many redundant weights and slowly near the target.
* :func:`iterative_schedule`: a staircase; the sparsity steps up every ``every`` steps and the
  steps in between retrain the surviving weights (Han et al.'s prune-retrain cycles).

References:
  Zhu, M., Gupta, S. "To prune, or not to prune: exploring the efficacy of pruning for model
  compression." 2017. arXiv:1710.01878.

  Han, S., Pool, J., Tran, J., Dally, W. J. "Learning both weights and connections for efficient
  neural networks." NeurIPS 2015. arXiv:1506.02626.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from jaxcomp.core import _checks as checks
from jaxcomp.core._types import Schedule
from jaxcomp.schedules._schedules import polynomial
from jaxcomp.schedules._schedules import step

__all__ = ["gradual_schedule", "iterative_schedule"]


def gradual_schedule(
    sparsity: float, *, begin: int, end: int, initial: float = 0.0, power: float = 3.0
) -> Schedule:
    """Zhu and Gupta's cubic ramp from ``initial`` at ``begin`` to ``sparsity`` at ``end``.

    Args:
      sparsity: the final sparsity, in ``[0, 1)``.
      begin: the first pruning step, a non-negative int.
      end: the step the final sparsity is reached, an int greater than ``begin``.
      initial: the sparsity at ``begin``, in ``[0, sparsity]``.
      power: the exponent (3 in the paper), > 0.

    Returns:
      A schedule ``step -> sparsity``.

    Raises:
      ValueError: naming the argument: a sparsity outside ``[0, 1)``, ``initial > sparsity``, or
        ``end <= begin`` (the schedule would end before it begins).

    Examples:
        >>> s = gradual_schedule(0.9, begin=0, end=100)
        >>> [round(float(s(t)), 4) for t in (0, 50, 100)]
        [0.0, 0.7875, 0.9]
    """
    final = checks.fraction(sparsity, fn="gradual_schedule", name="sparsity")
    init = checks.fraction(initial, fn="gradual_schedule", name="initial")
    if init > final:
        raise ValueError(f"gradual_schedule: initial={initial} must be <= sparsity={sparsity}")
    checks.integer(begin, fn="gradual_schedule", name="begin", low=0)
    checks.integer(end, fn="gradual_schedule", name="end", low=0)
    if end <= begin:
        raise ValueError(
            f"gradual_schedule: end={end} must be greater than begin={begin} (a schedule "
            "cannot end before it begins)"
        )
    if not power > 0:
        raise ValueError(f"gradual_schedule: power must be > 0, got {power!r}")
    return polynomial(init, final, begin=begin, end=end, power=power)


def iterative_schedule(sparsities: Sequence[float], *, every: int, begin: int = 0) -> Schedule:
    """Han et al.'s staircase: ``sparsities[i]`` from step ``begin + i * every``, 0 before.

    Args:
      sparsities: non-decreasing values in ``[0, 1)``, one per prune-retrain cycle.
      every: the steps of one cycle (the retraining between two prunings), an int >= 1.
      begin: the step of the first pruning, a non-negative int.

    Returns:
      A schedule ``step -> sparsity``.

    Raises:
      ValueError: naming the argument: an empty or decreasing list, a value outside ``[0, 1)``,
        ``every < 1`` or a negative ``begin``.

    Examples:
        >>> s = iterative_schedule([0.5, 0.75], every=10, begin=5)
        >>> [float(s(t)) for t in (0, 5, 14, 15)]
        [0.0, 0.5, 0.5, 0.75]
    """
    values = [checks.fraction(v, fn="iterative_schedule", name="sparsities[i]") for v in sparsities]
    if not values:
        raise ValueError("iterative_schedule: sparsities must hold at least one value")
    if any(b < a for a, b in itertools.pairwise(values)):
        raise ValueError(f"iterative_schedule: sparsities must be non-decreasing, got {values}")
    checks.integer(every, fn="iterative_schedule", name="every")
    checks.integer(begin, fn="iterative_schedule", name="begin", low=0)
    return step([begin + i * every for i in range(len(values))], [0.0, *values])

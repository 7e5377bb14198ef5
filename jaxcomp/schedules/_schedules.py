"""Schedules: scalar functions of the training step, evaluated under ``jit``.

Sparsity, bit-width and temperature schedules are plain functions ``step -> scalar`` built from
``jnp`` operations, so they trace with a traced ``step``. Gradual pruning uses Zhu and Gupta's cubic
ramp (:func:`polynomial` with ``power=3``).

References:
  Zhu, M., Gupta, S. "To prune, or not to prune: exploring the efficacy of pruning for model
  compression." 2017. arXiv:1710.01878.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from jaxcomp.core._types import Schedule

__all__ = [
    "as_schedule",
    "constant",
    "linear",
    "one_shot",
    "polynomial",
    "step",
]


def _check_range(begin: int, end: int, fn: str) -> None:
    if not isinstance(begin, int) or begin < 0:
        raise ValueError(f"{fn}: begin must be a non-negative int, got {begin!r}")
    if not isinstance(end, int) or end <= begin:
        raise ValueError(f"{fn}: end must be an int greater than begin={begin}, got {end!r}")


def constant(value: float) -> Schedule:
    """``value`` at every step.

    Examples:
        >>> float(constant(0.5)(10))
        0.5
    """
    value = float(value)
    return lambda step: jnp.full((), value, jnp.float32)


def polynomial(
    init_value: float, final_value: float, *, begin: int, end: int, power: float = 3.0
) -> Schedule:
    """Zhu and Gupta's ramp: ``final + (init - final) * (1 - t)**power``, ``t`` from 0 to 1.

    Holds ``init_value`` before ``begin`` and ``final_value`` after ``end``. With ``power=3`` it is
    the cubic sparsity schedule of gradual pruning: prune fast early, slowly near the end.

    Examples:
        >>> s = polynomial(0.0, 0.9, begin=0, end=100)
        >>> [round(float(s(t)), 4) for t in (0, 50, 100, 1000)]
        [0.0, 0.7875, 0.9, 0.9]
    """
    _check_range(begin, end, "polynomial")
    if power <= 0:
        raise ValueError(f"polynomial: power must be > 0, got {power!r}")
    i, f = float(init_value), float(final_value)

    def schedule(step: Any) -> Any:
        t = jnp.clip((jnp.asarray(step, jnp.float32) - begin) / (end - begin), 0.0, 1.0)
        return jnp.asarray(f + (i - f) * (1.0 - t) ** power, jnp.float32)

    return schedule


def linear(init_value: float, final_value: float, *, begin: int, end: int) -> Schedule:
    """A straight ramp from ``init_value`` at ``begin`` to ``final_value`` at ``end``."""
    _check_range(begin, end, "linear")
    i, f = float(init_value), float(final_value)

    def schedule(step: Any) -> Any:
        t = jnp.clip((jnp.asarray(step, jnp.float32) - begin) / (end - begin), 0.0, 1.0)
        return jnp.asarray(i + (f - i) * t, jnp.float32)

    return schedule


def step(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """Piecewise constant: ``values[0]`` before ``boundaries[0]``, ``values[k]`` from its start.

    Args:
      boundaries: strictly increasing non-negative steps; ``len(values) == len(boundaries) + 1``.
      values: the value of each piece.

    Examples:
        >>> s = step([10, 20], [0.5, 0.7, 0.9])
        >>> [round(float(s(t)), 2) for t in (0, 10, 19, 20)]
        [0.5, 0.7, 0.7, 0.9]
    """
    b = list(boundaries)
    v = [float(x) for x in values]
    if len(v) != len(b) + 1:
        raise ValueError(
            f"step: values must have len(boundaries) + 1 = {len(b) + 1} entries, got {len(v)}"
        )
    if any(not isinstance(x, int) or x < 0 for x in b) or any(
        x >= y for x, y in itertools.pairwise(b)
    ):
        raise ValueError(f"step: boundaries must be strictly increasing non-negative ints, got {b}")
    bj = jnp.asarray(b, jnp.int32)
    vj = jnp.asarray(v, jnp.float32)

    def schedule(t: Any) -> Any:
        idx = jnp.sum(jnp.asarray(t, jnp.int32) >= bj)
        return vj[idx]

    return schedule


def one_shot(value: float, *, at: int) -> Schedule:
    """0 before step ``at``, ``value`` from it on (one-shot pruning)."""
    if not isinstance(at, int) or at < 0:
        raise ValueError(f"one_shot: at must be a non-negative int, got {at!r}")
    return step([at], [0.0, value]) if at > 0 else constant(value)


def as_schedule(value: float | Schedule, *, name: str, low: float, high: float) -> Schedule:
    """A constant in ``[low, high)`` becomes a schedule; a callable is returned as it is.

    Raises:
      ValueError: naming ``name`` when a constant is outside ``[low, high)``, or a schedule's values
        at steps 0 and 10**9 are.
    """
    if callable(value):
        for probe in (0, 10**9):
            v = float(value(probe))
            if not low <= v < high:
                raise ValueError(
                    f"{name}: the schedule gives {v} at step {probe}; allowed is [{low}, {high})"
                )
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number in [{low}, {high}) or a schedule, got {value!r}")
    if not low <= float(value) < high:
        raise ValueError(f"{name} must be in [{low}, {high}), got {value!r}")
    return constant(value)

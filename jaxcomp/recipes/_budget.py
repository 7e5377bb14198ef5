"""Budgets: the strength of a recipe's stage chosen to fit what a platform allows.

``--budget bytes=N``, ``flops=N`` or ``latency_ms=N`` (``latency_ms@B=N`` at batch ``B``; 128 by
default) turns one knob of the recipe, its ``[budget] knob`` (``"prune.sparsity"``: the ``sparsity``
of its first ``prune`` stage), by a *scale* ``s``: ``s = 1`` is the recipe as written, ``s < 1``
compresses harder, ``s > 1`` less. What the scale does to each knob (how much is kept is
multiplied by ``s``):

* ``sparsity`` (prune): the kept fraction ``1 - sparsity`` of each rule, times ``s``;
* ``flops``, ``ratio`` (structured prune): the kept fraction, times ``s``;
* ``rank`` (lowrank): each rank times ``s`` (at least 1); ``energy``: the discarded energy
  ``1 - energy`` divided by ``s``; ``compression``: divided by ``s`` (at least 1);
* ``bits`` (quant): each bit width times ``s``, rounded (within the scheme's range);
  ``clusters``: times ``s``, rounded.

The search (:func:`search`) predicts the budget's metric of the recipe at a scale by a dry run
(every stage built and its schedule run to its end on the dense weights, without training, then
finalized, encoded, traced for FLOPs or timed), and bisects, in log scale between ``min_scale``
and ``max_scale`` over ``steps`` halvings, for the largest scale whose prediction meets the
budget. A setting the recipe refuses (k-means with more clusters than a strong pruning leaves
weights) counts as too strong: the range then starts at the strongest accepted setting. The recipe
then trains once at that scale; the report gives the prediction, the measured value of the
artifact, and whether it met the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

from jaxcomp.errors import RecipeError

__all__ = ["KNOBS", "Budget", "parse_budget", "resolve_knob", "scaled", "search", "strongest"]

METRICS = ("bytes", "flops", "latency_ms")
KNOBS = (
    ("prune", "sparsity"),
    ("prune", "flops"),
    ("prune", "ratio"),
    ("lowrank", "rank"),
    ("lowrank", "energy"),
    ("lowrank", "compression"),
    ("quant", "bits"),
    ("quant", "clusters"),
)
"""The knobs a budget can turn, in the order a recipe without ``[budget] knob`` looks for one."""


class Budget(NamedTuple):
    """A budget: ``metric`` (bytes, flops or latency_ms) at most ``value``; ``batch`` for
    latency."""

    metric: str
    value: float
    batch: int | None = None

    def __str__(self) -> str:
        at = f"@{self.batch}" if self.metric == "latency_ms" else ""
        return f"{self.metric}{at}={self.value:g}"


def parse_budget(text: str) -> Budget:
    """Parses ``bytes=N``, ``flops=N``, ``latency_ms=N`` or ``latency_ms@B=N``.

    Raises:
        RecipeError: anything else.

    Examples:
        >>> parse_budget("latency_ms@1=0.5")
        Budget(metric='latency_ms', value=0.5, batch=1)
    """
    name, sep, value = str(text).partition("=")
    metric, _, batch = name.partition("@")
    bad = lambda why: RecipeError(
        f"--budget {text}: {why}; give bytes=N, flops=N, latency_ms=N or latency_ms@BATCH=N",
        key="budget",
    )  # fmt: skip
    if not sep or metric not in METRICS:
        raise bad("unknown metric")
    try:
        v = float(value)
    except ValueError:
        raise bad(f"{value!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise bad("the value must be > 0")
    b = None
    if metric == "latency_ms":
        try:
            b = int(batch) if batch else 128
        except ValueError:
            raise bad(f"{batch!r} is not a batch size") from None
        if b < 1:
            raise bad("the batch must be >= 1")
    elif batch:
        raise bad("only latency takes a batch")
    return Budget(metric, v, b)


def resolve_knob(recipe: Any) -> tuple[int, str]:
    """``(stage index, key)`` of the recipe's budget knob.

    Raises:
        RecipeError: the named knob is not in the recipe, or it has none a budget can turn.
    """
    named = recipe.budget.get("knob")
    wanted = [tuple(named.split(".", 1))] if named else list(KNOBS)
    if named and (len(wanted[0]) != 2 or wanted[0] not in KNOBS):
        raise RecipeError(
            f"{recipe.origin}: [budget]: knob: {named!r} is not one a budget can turn; allowed: "
            f"{', '.join('.'.join(k) for k in KNOBS)}",
            key="knob",
        )
    for kind, key in wanted:
        for s in recipe.stages:
            if s.type == kind and key in s.args:
                return s.index, key
    raise RecipeError(
        f"{recipe.origin}: [budget]: knob: "
        + (f"no {named} in the recipe" if named else "the recipe has no stage whose strength a "
           f"budget can set (one of {', '.join('.'.join(k) for k in KNOBS)})"),
        key="knob",
    )  # fmt: skip


def _scale_value(key: str, v: Any, s: float) -> Any:
    if isinstance(v, list | tuple) and v and isinstance(v[0], list | tuple):
        return [[rx, _scale_value(key, x, s)] for rx, x in v]
    if isinstance(v, dict):
        return {rx: _scale_value(key, x, s) for rx, x in v.items()}
    if key in ("sparsity", "flops", "ratio"):
        return min(0.999, max(0.0, 1.0 - (1.0 - float(v)) * s))
    if key == "energy":
        return min(1.0, max(1e-6, 1.0 - (1.0 - float(v)) / s))
    if key == "compression":
        return max(1.0, float(v) / s)
    if key == "bits":
        return int(min(16, max(2, round(v * s))))
    return int(max(1, round(v * s)))  # rank, clusters


def scaled(recipe: Any, knob: tuple[int, str], scale: float) -> Any:
    """The recipe with its knob scaled (``scale == 1``: itself)."""
    if scale == 1.0:
        return recipe
    index, key = knob
    value = recipe.to_dict()["stages"][index - 1][key]
    return recipe.replace({f"stages.{index}.{key}": _scale_value(key, value, scale)})


def _guarded(predict: Callable[[float], float], tried: list) -> Callable[[float], float]:
    """``predict`` recording each ``(scale, value)``; a setting the recipe refuses (k-means with
    more clusters than the weights a strong pruning leaves) is ``inf``."""

    def f(s: float) -> float:
        try:
            v = float(predict(s))
        except RecipeError:
            v = math.inf
        tried.append((s, v))
        return v

    return f


def strongest(
    predict: Callable[[float], float], *, min_scale: float, steps: int, tried: list | None = None
) -> tuple[float, float]:
    """``(scale, predicted)`` of the strongest setting the recipe accepts: ``min_scale``, or the
    edge (bisected in log scale below 1) where stronger settings are refused."""
    tried = [] if tried is None else tried
    f = _guarded(predict, tried)
    v = f(min_scale)
    if math.isfinite(v):
        return min_scale, v
    lo, hi = min_scale, 1.0  # lo refused
    hi_v = f(hi)
    if not math.isfinite(hi_v):
        raise RecipeError("the recipe refuses its own setting (scale 1)", key="budget")
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        v = f(mid)
        if math.isfinite(v):
            hi, hi_v = mid, v
        else:
            lo = mid
    return hi, hi_v


def search(
    predict: Callable[[float], float],
    budget: Budget,
    *,
    min_scale: float,
    max_scale: float,
    steps: int,
) -> tuple[float, float, list[tuple[float, float]]]:
    """The largest scale whose predicted metric meets the budget, by bisection in log scale.

    Args:
        predict: ``scale -> metric`` (assumed not to decrease as the scale grows); a
            :class:`RecipeError` marks a setting the recipe refuses (too strong).
        budget: the budget.
        min_scale, max_scale: the range searched.
        steps: bisection steps.

    Returns:
        ``(scale, predicted, tried)``: ``tried`` lists every ``(scale, predicted)`` evaluated
        (``inf`` where refused). ``scale`` is the strongest accepted setting (and ``predicted``
        above the budget) when nothing meets it.
    """
    tried: list[tuple[float, float]] = []
    f = _guarded(predict, tried)
    ok = lambda v: v <= budget.value
    v1 = f(1.0)
    if ok(v1):
        lo, lo_v, hi = 1.0, v1, max_scale
        v_hi = f(hi)
        if ok(v_hi):
            return hi, v_hi, tried
    else:
        lo, lo_v = strongest(predict, min_scale=min_scale, steps=steps, tried=tried)
        hi = 1.0
        if not ok(lo_v):
            return lo, lo_v, tried
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        v = f(mid)
        if ok(v):
            lo, lo_v = mid, v
        else:
            hi = mid
    return lo, lo_v, tried

"""The checks every factory runs on its hyperparameters when it is built.

Each check returns the value in canonical form or raises a ``ValueError`` whose message names the
factory, the argument, the allowed range and the value given: ``"magnitude: sparsity must be a
number in [0, 1), got 1.5"``. Factories call these instead of writing their own tests, so the same
argument is checked the same way everywhere.

Examples:
    >>> fraction(0.5, fn="magnitude", name="sparsity")
    0.5
    >>> integer(0, fn="svd", name="rank")
    Traceback (most recent call last):
    ...
    ValueError: svd: rank must be an int >= 1, got 0
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = [
    "axis",
    "bits",
    "choice",
    "fraction",
    "integer",
    "is_rule_list",
    "key",
    "number",
    "per_leaf",
    "schedule_or_number",
]


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    low, high = (None if v is None else f"{v:g}" for v in (low, high))
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    if low is None:
        return f"{'<' if high_open else '<='} {high}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def number(
    value: Any,
    *,
    fn: str,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number in the interval given (ends closed unless ``*_open``), as a float."""
    ok = _is_number(value) and math.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if high_open else float(value) <= high
    if not ok:
        span = (
            "" if low is None and high is None else " " + _interval(low, high, low_open, high_open)
        )
        raise ValueError(f"{fn}: {name} must be a number{span}, got {value!r}")
    return float(value)


def fraction(value: Any, *, fn: str, name: str) -> float:
    """A number in ``[0, 1)`` (a sparsity, a pruned fraction)."""
    return number(value, fn=fn, name=name, low=0.0, high=1.0, high_open=True)


def integer(value: Any, *, fn: str, name: str, low: int | None = 1, high: int | None = None) -> int:
    """An int (not a bool) in ``[low, high]`` (``None``: no bound on that side)."""
    if (
        not _is_int(value)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        span = "" if low is None and high is None else " " + _interval(low, high, False, False)
        raise ValueError(f"{fn}: {name} must be an int{span}, got {value!r}")
    return int(value)


def bits(value: Any, *, fn: str, name: str = "bits", low: int = 1, high: int = 16) -> int:
    """A bit width: an int in ``[low, high]``."""
    return integer(value, fn=fn, name=name, low=low, high=high)


def axis(value: Any, ndim: int, *, fn: str, name: str = "axis") -> int:
    """An axis of an array of ``ndim`` dimensions, normalized to ``[0, ndim)``."""
    integer(value, fn=fn, name=name, low=-ndim, high=ndim - 1)
    return int(value) % ndim


def key(value: Any, *, fn: str, name: str = "key", why: str = "") -> jax.Array:
    """A typed PRNG key (``jax.random.key(seed)``); ``why`` says what needs it, for the message."""
    if not jax.dtypes.issubdtype(getattr(value, "dtype", None), jax.dtypes.prng_key):
        need = f" (needed by {why})" if why else ""
        raise ValueError(
            f"{fn}: {name}{need} must be a typed PRNG key from jax.random.key(seed), got {value!r}"
        )
    return value


def choice(value: Any, allowed: tuple[Any, ...], *, fn: str, name: str) -> Any:
    """One of ``allowed``."""
    if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
        raise ValueError(f"{fn}: {name} must be one of {allowed}, got {value!r}")
    return value


def schedule_or_number(
    value: Any, *, fn: str, name: str, low: float = 0.0, high: float = 1.0
) -> Any:
    """A number in ``[low, high)`` (as a float) or a schedule whose values are (checked at steps 0
    and ``10**9``), returned as it is."""
    if not callable(value):
        return number(value, fn=fn, name=name, low=low, high=high, high_open=True)
    for step in (0, 10**9):
        v = float(value(step))
        if not low <= v < high:
            raise ValueError(
                f"{fn}: {name} must stay in [{low:g}, {high:g}); the schedule gives {v} at step "
                f"{step}"
            )
    return value


def is_rule_list(value: Any) -> bool:
    """True for a non-empty list of ``(regex, value)`` pairs."""
    return (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(
            isinstance(r, list | tuple) and len(r) == 2 and isinstance(r[0], str) for r in value
        )
    )


def per_leaf(value: Any, check: Callable[[Any, str], Any], *, fn: str, name: str) -> Any:
    """A value for every leaf, or per-leaf values: ``{path: value}`` or ``[(regex, value)]`` rules.

    Every value passes ``check(value, label)`` (``label`` names it in messages, such as
    ``"bits['Dense_0/kernel']"``), and every regex must compile. The per-leaf forms are resolved
    against the selected leaves by :func:`jaxcomp.core.leaf_values`.

    Returns:
      The checked value, a dict of checked values, or a list of ``(regex, checked value)`` pairs.
    """
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{fn}: {name} is an empty dict; give {{path: value}} per leaf")
        return {p: check(v, f"{name}[{p!r}]") for p, v in value.items()}
    if isinstance(value, list | tuple) and value and isinstance(value[0], list | tuple):
        if not is_rule_list(value):
            raise ValueError(f"{fn}: {name} rules must be (regex, value) pairs, got {value!r}")
        for pattern, _ in value:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{fn}: {name} rule {pattern!r} is not a regex: {e}") from e
        return [(p, check(v, f"{name} rule {p!r}")) for p, v in value]
    return check(value, name)

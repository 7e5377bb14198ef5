"""Measured latency of a jitted function, and interleaved comparisons of several.

The survey's acceleration claims (Yi et al., "Neural Network Compression and Acceleration: An
Overview", 2018) are about wall-clock time, which FLOPs do not predict well: memory traffic, kernel
launches and sparse formats change the picture. So jaxcomp measures. A measurement compiles
first (warm-up calls, untimed), then times single calls with ``time.perf_counter`` around
``jax.block_until_ready`` so that asynchronous dispatch is not mistaken for speed.

Machines are noisy (other processes, clock scaling, thermal state), so absolute times from
different runs are not comparable. :func:`compare_latency` times several functions in the same
process, interleaved in rounds (A B A B ...), so that drift affects all of them alike, and reports
ratios to the first; the project compares those ratios.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["compare_latency", "latency"]


def _check(fn_name: str, **counts: tuple[Any, int]) -> None:
    """Each ``name=(value, lowest)`` must be an int (not a bool) >= ``lowest``."""
    for name, (value, lowest) in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ValueError(f"{fn_name}: {name} must be an int >= {lowest}, got {value!r}")


def _jitted(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    if not callable(fn):
        raise ValueError(f"{what} must be callable, got {type(fn).__name__}")
    # A jitted function (jax.jit's result) has .lower; anything else is wrapped.
    return fn if hasattr(fn, "lower") else jax.jit(fn)


def _on_device(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Moves numpy leaves to the device once, so that the timed calls do not copy them."""
    return jax.tree.map(lambda x: jax.device_put(x) if isinstance(x, np.ndarray) else x, args)


def _time_calls(
    fn: Callable[..., Any], args: tuple[Any, ...], n: int, pipeline: int = 1
) -> list[float]:
    """``n`` samples of the time of one call; a sample times ``pipeline`` calls, waiting once."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        for _ in range(pipeline - 1):
            fn(*args)
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) / pipeline)
    return times


def _stats(times: list[float]) -> dict[str, Any]:
    t = np.asarray(times, dtype=np.float64)
    return {
        "median_s": float(np.median(t)),
        "mean_s": float(np.mean(t)),
        "min_s": float(np.min(t)),
        "p90_s": float(np.percentile(t, 90)),
        "repeats": len(times),
    }


def latency(
    fn: Callable[..., Any], *args: Any, repeats: int = 50, warmup: int = 3
) -> dict[str, Any]:
    """Times ``fn(*args)`` after compiling it.

    Args:
      fn: the function; wrapped in ``jax.jit`` unless it is already a jitted function (whose
        static arguments and shardings are then kept).
      *args: its arguments; numpy arrays are put on the device once, before timing.
      repeats: the number of timed calls, an int >= 1.
      warmup: the number of untimed calls first (compilation happens in the first), an int >= 0.

    Returns:
      A dict with ``median_s``, ``mean_s``, ``min_s``, ``p90_s`` (seconds, floats) and
      ``repeats``.

    Raises:
      ValueError: ``repeats < 1``, ``warmup < 0`` or ``fn`` is not callable.
    """
    _check("latency", repeats=(repeats, 1), warmup=(warmup, 0))
    jfn = _jitted(fn, "latency: fn")
    args = _on_device(args)
    for _ in range(warmup):
        jax.block_until_ready(jfn(*args))
    return _stats(_time_calls(jfn, args, repeats))


def compare_latency(
    fns: Mapping[str, Callable[..., Any]],
    *args: Any,
    repeats: int = 50,
    warmup: int = 3,
    rounds: int = 5,
    pipeline: int = 1,
) -> dict[str, dict[str, Any]]:
    """Times several functions on the same arguments, interleaved, and their ratios to the first.

    Each function is jitted and warmed up, then the ``repeats`` timed calls of each are split into
    ``rounds`` rounds; a round times a block of calls of every function in turn (A B C, A B C, ...),
    so slow drift of the machine lands on all of them alike.

    Args:
      fns: ``{name: fn}``; the first entry is the baseline of the ratios. Functions not already
        jitted are wrapped in ``jax.jit``.
      *args: the arguments every function is called with.
      repeats: the number of timed samples of each function (one call each, or ``pipeline``
        calls), an int >= 1.
      warmup: untimed calls of each function before the first round, an int >= 0.
      rounds: the number of interleaved rounds, an int >= 1 (at most ``repeats`` are non-empty).
      pipeline: calls per timed sample, an int >= 1. With 1, each call is dispatched and waited
        for on its own (latency, dispatch included). With more, a sample dispatches ``pipeline``
        calls back to back and waits once at the end, and counts the elapsed time divided by
        ``pipeline``: on an accelerator, where JAX dispatches asynchronously, this is the device
        time per call (throughput) rather than a launch-and-wait round trip, which at small
        sizes can be most of a single call's time.

    Returns:
      ``{name: stats}`` in the order of ``fns``, where ``stats`` has the keys of :func:`latency`,
      ``ratio``, the function's median divided by the first function's median (1.0 for the
      first; below 1 is faster), and ``ratio_of_min``, the same for the fastest calls (which
      suffer least from other processes on a shared machine).

    Raises:
      ValueError: ``fns`` is empty or holds a non-callable, or ``repeats``, ``warmup``,
        ``rounds`` or ``pipeline`` is out of range.

    Examples:
        >>> import jax.numpy as jnp
        >>> x = jnp.ones((8, 8))
        >>> res = compare_latency({"a": lambda x: x @ x, "b": lambda x: x + x}, x, repeats=3)
        >>> res["a"]["ratio"]
        1.0
    """
    _check(
        "compare_latency",
        repeats=(repeats, 1),
        warmup=(warmup, 0),
        rounds=(rounds, 1),
        pipeline=(pipeline, 1),
    )
    if not isinstance(fns, Mapping) or not fns:
        raise ValueError("compare_latency: fns must be a non-empty dict of {name: callable}")
    jfns = {name: _jitted(f, f"compare_latency: fns[{name!r}]") for name, f in fns.items()}
    args = _on_device(args)
    for jfn in jfns.values():
        for _ in range(warmup):
            jax.block_until_ready(jfn(*args))
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    times: dict[str, list[float]] = {name: [] for name in jfns}
    for n in per_round:
        for name, jfn in jfns.items():
            times[name].extend(_time_calls(jfn, args, n, pipeline))
    stats = {name: _stats(t) for name, t in times.items()}
    first = next(iter(stats.values()))
    base, base_min = first["median_s"], first["min_s"]
    for s in stats.values():
        s["ratio"] = s["median_s"] / base if base > 0 else float("nan")
        s["ratio_of_min"] = s["min_s"] / base_min if base_min > 0 else float("nan")
    return stats

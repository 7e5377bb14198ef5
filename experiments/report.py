"""Shared by the experiments that report in the survey-wide format of ``experiments.summary``.

* :func:`summary_row`: one row of a file's top-level ``"summary"`` list, with every key of the
  convention (``null`` where a quantity was not measured or does not change).
* :func:`interleaved_latency`: CPU latency at batch 1 and 128 of several jitted models in the same
  process, interleaved in rounds, medians in milliseconds.
* :func:`mean_std`, :func:`accuracy` and :func:`write_doc` (the JSON and Markdown of a result).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import machine
from experiments.common import markdown_table

SUMMARY_KEYS = (
    "ref", "method", "model", "data", "acc_before", "acc_after", "acc_after_std", "seeds",
    "params_before", "params_after", "bits", "bytes", "flops_before", "flops_after",
    "latency_ms_b1", "latency_ms_b128", "command",
)  # fmt: skip
OPTIONAL_KEYS = ("acc_before_std", "latency_ms_b1_before", "latency_ms_b128_before", "note")


def summary_row(**values: Any) -> dict[str, Any]:
    """A summary row: every key of :data:`SUMMARY_KEYS` (missing ones ``None``) and the optional
    keys given. An unknown key is a ``ValueError`` (a typo would vanish from the table)."""
    unknown = set(values) - set(SUMMARY_KEYS) - set(OPTIONAL_KEYS)
    if unknown:
        raise ValueError(f"summary_row: unknown keys {sorted(unknown)}")
    row = {k: values.get(k) for k in SUMMARY_KEYS}
    row.update({k: values[k] for k in OPTIONAL_KEYS if k in values})
    return row


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (``None`` for one value)."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else None)


def accuracy(fn: Callable[..., Any], variables: Any, x: np.ndarray, y: np.ndarray,
             batch: int = 500) -> float:  # fmt: skip
    """Top-1 accuracy of the jitted ``fn(variables, x)`` on ``(x, y)``, in batches."""
    correct = 0
    for i in range(0, len(x), batch):
        logits = fn(variables, jnp.asarray(x[i : i + batch]))
        correct += int(jnp.sum(jnp.argmax(logits, -1) == jnp.asarray(y[i : i + batch])))
    return correct / len(x)


def interleaved_latency(
    models: Mapping[str, tuple[Callable[..., Any], Any]],
    x: np.ndarray,
    *,
    batches: Sequence[int] = (1, 128),
    repeats: Mapping[int, int] | None = None,
    rounds: int = 5,
    skip: bool = False,
) -> dict[str, dict[str, float | None]]:
    """Median CPU latency (ms) of each jitted ``fn(variables, x[:b])`` at each batch size.

    Every model is compiled and warmed up (3 calls), then the timed calls are split into
    ``rounds`` rounds in which the models take turns (A B C, A B C, ...), so that the machine's
    drift and the other processes on it fall on all of them alike. Each model is called with its
    own variables (already on the device), one call per sample, waited for.

    Returns:
      ``{name: {"b1": ms, "b128": ms, "b1_min": ms, ...}}`` (medians, and the fastest calls);
      with ``skip`` (the smoke runs) every value is ``None`` and nothing is compiled.
    """
    if skip:
        keys = [f"b{b}{m}" for b in batches for m in ("", "_min")]
        return {n: dict.fromkeys(keys) for n in models}
    repeats = dict(repeats or {1: 200, 128: 30})
    out: dict[str, dict[str, float | None]] = {n: {} for n in models}
    for b in batches:
        xb = jax.device_put(jnp.asarray(x[:b]))
        args = {n: (f, jax.device_put(v)) for n, (f, v) in models.items()}
        for f, v in args.values():
            for _ in range(3):
                jax.block_until_ready(f(v, xb))
        times: dict[str, list[float]] = {n: [] for n in models}
        per_round = max(1, repeats.get(b, 30) // rounds)
        for _ in range(rounds):
            for n, (f, v) in args.items():
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    jax.block_until_ready(f(v, xb))
                    times[n].append(time.perf_counter() - t0)
        for n, t in times.items():
            out[n][f"b{b}"] = 1e3 * float(np.median(t))
            out[n][f"b{b}_min"] = 1e3 * float(np.min(t))
    return out


def versions() -> dict[str, str]:
    """The installed versions the numbers came from."""
    return {"jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__}


Table = tuple[str, list[dict[str, Any]], Sequence[str]]


def write_doc(out_dir: str, name: str, doc: dict[str, Any], tables: Sequence[Table]) -> str:
    """Writes ``name.json`` (``doc``, with ``meta.machine`` and versions added) and ``name.md``
    (each ``(title, rows, columns)`` table under its title); returns the Markdown."""
    os.makedirs(out_dir, exist_ok=True)
    doc = dict(doc)
    doc["meta"] = {**doc.get("meta", {}), "machine": machine(), "versions": versions()}
    with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, default=float)
    parts = []
    for title, rows, columns in tables:
        parts.append(f"### {title}\n\n" + markdown_table(rows, columns))
    md = "\n".join(parts)
    with open(os.path.join(out_dir, f"{name}.md"), "w", encoding="utf-8") as f:
        f.write(md)
    return md

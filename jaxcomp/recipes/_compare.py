"""Comparing recipe runs: one table and one picture of accuracy against size and latency.

``jaxcomp compare DIR ...`` reads each run's ``report.json`` and gives a row per run (its
accuracy, coded size, MACs and measured latency), marks the runs on the Pareto front of accuracy
against coded size and of accuracy against latency (no other run is at least as accurate and at
least as small or fast, and better in one), and plots both fronts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["compare", "compare_markdown", "pareto", "plot_compare"]


def pareto(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which ``(cost, accuracy)`` points no other point dominates.

    A point is dominated when another has a cost at most its cost and an accuracy at least its
    accuracy, and is strictly better in one of them.

    Examples:
        >>> pareto([(1.0, 0.9), (2.0, 0.95), (3.0, 0.94), (1.0, 0.9)])
        [True, True, False, True]
    """
    out = []
    for i, (c, a) in enumerate(points):
        dominated = any(
            c2 <= c and a2 >= a and (c2 < c or a2 > a)
            for j, (c2, a2) in enumerate(points)
            if j != i
        )
        out.append(not dominated)
    return out


def _latency(report: dict[str, Any], which: str) -> tuple[int | None, float | None]:
    lat = report.get("latency_ms") or {}
    if not lat:
        return None, None
    batch = max(lat, key=lambda k: int(k.split("_")[1]))
    return int(batch.split("_")[1]), lat[batch][which]


def compare(dirs: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """One row per run folder (each holding a ``report.json`` of :func:`jaxcomp.recipes.run`).

    Returns:
        Rows with ``run`` (the folder's name), ``recipe``, ``model``, ``data``,
        ``dense_accuracy``, ``accuracy``, ``change_pp``, ``bytes``, ``ratio``, ``flops``,
        ``latency_batch``, ``latency_ms``, ``dense_latency_ms``, ``speedup``, and
        ``front_size`` / ``front_latency``: whether the run is on the Pareto front of accuracy
        against coded size / against latency.

    Raises:
        FileNotFoundError: a folder without ``report.json``.
        ValueError: a ``report.json`` that is not a recipe run's.
    """
    rows = []
    for d in dirs:
        path = os.path.join(os.fspath(d), "report.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{d}: no report.json (is it a `jaxcomp compress` --out?)")
        with open(path, encoding="utf-8") as f:
            try:
                r = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not JSON: {e}") from None
        missing = [k for k in ("final_accuracy", "compressed_bytes", "baseline_accuracy")
                   if k not in r]  # fmt: skip
        if missing:
            raise ValueError(f"{path}: not a recipe report (no {', '.join(missing)})")
        batch, lat = _latency(r, "compressed")
        _, dense_lat = _latency(r, "dense")
        rows.append({
            "run": os.path.basename(os.path.normpath(os.fspath(d))),
            "recipe": r.get("recipe"),
            "model": r.get("model"),
            "data": r.get("data"),
            "dense_accuracy": r["baseline_accuracy"],
            "accuracy": r["final_accuracy"],
            "change_pp": 100 * (r["final_accuracy"] - r["baseline_accuracy"]),
            "bytes": r["compressed_bytes"],
            "ratio": r.get("compression_ratio"),
            "flops": r.get("flops"),
            "latency_batch": batch,
            "latency_ms": lat,
            "dense_latency_ms": dense_lat,
            "speedup": None if not lat else dense_lat / lat,
        })  # fmt: skip
    size = pareto([(r["bytes"], r["accuracy"]) for r in rows])
    timed = [r for r in rows if r["latency_ms"] is not None]
    fast = iter(pareto([(r["latency_ms"], r["accuracy"]) for r in timed]))
    for r, s in zip(rows, size, strict=True):
        r["front_size"] = s
        r["front_latency"] = next(fast) if r["latency_ms"] is not None else None
    return rows


def compare_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (``*``: on the Pareto front)."""
    out = ["| run | recipe | model | accuracy | change (pp) | .jcz bytes | ratio | MACs | "
           "latency ms (batch) | speed-up | front: size | front: latency |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f} ({r['latency_batch']})"
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        flops = "-" if r["flops"] is None else f"{r['flops']:,}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        out.append(
            f"| {r['run']} | {r['recipe']} | {r['model']} | {r['accuracy']:.4f} | "
            f"{r['change_pp']:+.2f} | {r['bytes']:,} | {ratio} | {flops} | {lat} | {sp} | "
            f"{'*' if r['front_size'] else ''} | {'*' if r['front_latency'] else ''} |"
        )
    return "\n".join(out) + "\n"


def plot_compare(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Accuracy against coded size and against latency, the Pareto fronts joined and marked."""
    from jaxcomp.recipes._report import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (("bytes", "front_size", ".jcz size (bytes, log)"),
              ("latency_ms", "front_latency", "latency (ms, median)"))  # fmt: skip
    for ax, (key, front, label) in zip(axes, panels, strict=True):
        pts = [r for r in rows if r[key] is not None]
        for r in pts:
            on = r[front]
            ax.scatter(r[key], 100 * r["accuracy"], s=60 if on else 30,
                       c="#c0392b" if on else "#7f8c8d", zorder=3)  # fmt: skip
            ax.annotate(r["run"], (r[key], 100 * r["accuracy"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
        line = sorted((r[key], 100 * r["accuracy"]) for r in pts if r[front])
        if line:
            ax.step(*zip(*line, strict=True), where="post", color="#c0392b", lw=1,
                    label="Pareto front")  # fmt: skip
        if key == "bytes":
            ax.set_xscale("log")
            dense = {(r["dense_accuracy"], r["model"]) for r in rows}
            for acc, _ in dense:
                ax.axhline(100 * acc, color="#bbbbbb", lw=0.8, ls="--")
        else:
            batch = {r["latency_batch"] for r in pts}
            label = f"latency at batch {', '.join(map(str, sorted(batch)))} (ms, median)"
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if line:
            ax.legend(fontsize=8)
    axes[0].set_title("accuracy against coded size (dashed: dense)")
    axes[1].set_title("accuracy against measured latency")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

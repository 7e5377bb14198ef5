"""Reports of a recipe run: the per-layer table of Deep Compression, Markdown, and plots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxcomp.core import path_str

__all__ = ["layer_rows", "markdown_report", "plot_layers", "plot_stages", "plot_widths"]


def _bits_of_codebook(n: int) -> int:
    return max(1, (n - 1).bit_length())


def layer_rows(artifact_report: dict[str, Any], dense_params: Any) -> list[dict[str, Any]]:
    """One row per layer, as in Deep Compression's tables, whatever the kernel became.

    Args:
      artifact_report: :func:`jaxcomp.encode.report` of the artifact.
      dense_params: the dense params (for each layer's shapes and dense size).

    Returns:
      Rows with ``layer``, ``weights`` (elements of its dense kernel), ``stored`` (values stored
      for it: the kernel, its factors, codes or kept channels), ``kept`` (nonzero stored values
      over ``weights``), ``value_bits`` (codebook index bits, the code width, or 32 for floats),
      ``index_bits`` (relative-index gap bits, None when stored dense), ``bytes`` (its share of
      the file, bias included), ``dense_bytes`` and ``compression`` (dense over stored).
    """
    leaves = artifact_report["leaves"]
    rows: dict[str, dict[str, Any]] = {}
    for p, x in jax.tree_util.tree_leaves_with_path(dense_params):
        path = "params/" + path_str(p)
        layer, _, name = path_str(p).rpartition("/")
        mine = [lf for lf in leaves if lf["path"] == path or lf["path"].startswith(path + "/")]
        row = rows.setdefault(layer, {"layer": layer, "weights": 0, "stored": None,
                                      "kept": None, "value_bits": None, "index_bits": None,
                                      "bytes": 0, "dense_bytes": 0})  # fmt: skip
        row["bytes"] += sum(lf["total_bytes"] for lf in mine)
        row["dense_bytes"] += 4 * int(x.size)
        if name != "kernel":
            continue
        row["weights"] = int(x.size)
        book = [lf for lf in mine if lf["path"].endswith("/codebook")]
        main = [lf for lf in mine if not lf["path"].endswith("/codebook")
                and lf["dtype"] != "bool" and lf["elements"] > 1]  # fmt: skip
        if main:
            row["stored"] = sum(lf["elements"] for lf in main)
            row["kept"] = sum(lf["nonzeros"] for lf in main) / max(1, int(x.size))
            sparse = [lf["index_bits"] for lf in main if lf["codec"] == "sparse"]
            row["index_bits"] = max(sparse) if sparse else None
        if book:
            row["value_bits"] = max(_bits_of_codebook(b["elements"]) for b in book)
        elif main:
            row["value_bits"] = 8 * max(np.dtype(lf["dtype"]).itemsize for lf in main)
    for row in rows.values():
        row["compression"] = row["dense_bytes"] / row["bytes"] if row["bytes"] else None
    return list(rows.values())


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return f"{v:.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown_report(report: dict[str, Any]) -> str:
    """``report.md`` of a recipe run: summary, latency, stages, layers, widths, bytes."""
    out = [f"# {report['recipe']}: {report['model']} on {report['data']}", ""]
    keys = ("baseline_accuracy", "final_accuracy", "accuracy_change_pp", "dense_bytes",
            "compressed_bytes", "compression_ratio", "dense_flops", "flops", "flops_ratio",
            "params", "stored_params", "nonzeros", "measured_speedup",
            "measured_speedup_batch1", "wall_s")  # fmt: skip
    out += [f"- {k}: {_num(report.get(k))}" for k in keys if k in report]
    b = report.get("budget")
    if b:
        at = f" at batch {b['batch']}" if b.get("batch") else ""
        out.append(f"- budget: {b['metric']}{at} <= {b['value']:g}: {b['knob']} = {b['setting']} "
                   f"(scale {b['scale']:.3g}); predicted {b['predicted']:,.4g}, measured "
                   f"{b['measured']:,.4g}: {'met' if b['met'] else 'NOT met'}")  # fmt: skip
    m = report.get("machine", {})
    out += ["", f"## Latency (ms, median of interleaved calls; {m.get('backend', '?')}, "
            f"{m.get('device', '?')}, {m.get('cores', '?')} cores)", "",
            "| batch | dense | compressed | speed-up |", "| --- | --- | --- | --- |"]  # fmt: skip
    for batch, row in report["latency_ms"].items():
        out.append(f"| {batch.split('_')[1]} | {row['dense']:.3f} | {row['compressed']:.3f} | "
                   f"{row['dense'] / row['compressed']:.2f}x |")  # fmt: skip
    out += ["", "## Stages", "",
            "| stage | epochs | test accuracy | bytes | MACs | stored values | nonzeros | s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for s in report["stages"]:
        out.append(f"| {s['stage']} | {s['epochs']} | {_num(s['test_accuracy'])} | "
                   f"{s['bytes']:,} | {s['flops']:,} | {s['params']:,} | {s['nonzeros']:,} | "
                   f"{s['seconds']} |")  # fmt: skip
    out += ["", "## Layers", "",
            "| layer | weights | stored | kept | value bits | index bits | bytes | compression |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in report["layers"]:
        out.append(
            f"| {r['layer']} | {_fmt(r['weights'])} | {_fmt(r['stored'])} | "
            f"{_fmt(r['kept'], pct=True)} | {_fmt(r['value_bits'])} | {_fmt(r['index_bits'])} | "
            f"{_fmt(r['bytes'])} | {_fmt(r['compression'])}x |"
        )
    if report.get("widths"):
        out += ["", "## Widths", "", "| layer | inputs | outputs |", "| --- | --- | --- |"]
        out += [f"| {r['layer']} | {r['inputs']} of {r['dense_inputs']} | {r['width']} of "
                f"{r['dense_width']} |" for r in report["widths"]]  # fmt: skip
    out += ["", "## Where the bytes go", "", "| part | bytes |", "| --- | --- |"]
    out += [f"| {k} | {v:,} |" for k, v in report["bytes"].items()]
    return "\n".join(out) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_stages(stages: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Accuracy and size after each stage (size on a log scale)."""
    plt = _plt()
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    pos = list(range(len(stages)))  # stage names may repeat (two fine-tunings)
    ax1.bar(pos, [s["bytes"] / 1024 for s in stages], color="#8fb3d9")
    ax1.set_xticks(pos, [s["stage"] for s in stages], rotation=20, fontsize=8)
    ax1.set_yscale("log")
    ax1.set_ylabel("size (KiB, log)")
    ax2 = ax1.twinx()
    ax2.plot(pos, [100 * s["test_accuracy"] for s in stages], "o-", color="#c0392b")
    ax2.set_ylabel("test accuracy (%)")
    ax1.set_title("Accuracy and size after each stage")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_layers(layers: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Per-layer fraction of weights kept and bits per kept weight."""
    plt = _plt()
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    rows = [r for r in layers if r["weights"]]
    names = [r["layer"] for r in rows]
    ax1.bar(names, [100 * (r["kept"] or 0) for r in rows], color="#8fb3d9")
    ax1.set_ylabel("weights kept (%)")
    ax2 = ax1.twinx()
    ax2.plot(names, [r["value_bits"] for r in rows], "s-", color="#27ae60", label="value bits")
    ax2.set_ylabel("value bits")
    ax1.set_title("Per-layer sparsity and bits")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_widths(widths: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Output width of every layer, dense and pruned."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(widths)), 3.5))
    names = [r["layer"] for r in widths]
    pos = range(len(names))
    ax.bar(pos, [r["dense_width"] for r in widths], color="#d5dde8", label="dense")
    ax.bar(pos, [r["width"] for r in widths], color="#3b6ea8", label="pruned")
    ax.set_xticks(list(pos), names, rotation=90, fontsize=7)
    ax.set_ylabel("output channels")
    ax.legend()
    ax.set_title("Width of every layer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

"""Reports of a compression run: the per-layer table of the paper, plots, and JSON."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax

from jaxcomp.core import path_str

__all__ = ["layer_rows", "markdown_report", "plot_layers", "plot_stages"]


def _bits_of_codebook(n: int) -> int:
    return max(1, (n - 1).bit_length())


def layer_rows(artifact_report: dict[str, Any], dense_params: Any) -> list[dict[str, Any]]:
    """One row per layer, as in Deep Compression's tables.

    Args:
      artifact_report: :func:`jaxcomp.encode.report` of the artifact.
      dense_params: the dense params (for each layer's shapes and dense size).

    Returns:
      Rows with ``layer``, ``weights`` (elements of its kernel), ``kept`` (fraction nonzero),
      ``value_bits`` (codebook index bits, 32 for raw floats), ``index_bits`` (relative-index
      gap bits, None when stored dense), ``bytes`` (its share of the file), ``dense_bytes`` and
      ``compression`` (dense over stored).
    """
    leaves = artifact_report["leaves"]
    rows: dict[str, dict[str, Any]] = {}
    for p, x in jax.tree_util.tree_leaves_with_path(dense_params):
        path = "params/" + path_str(p)
        layer, _, name = path_str(p).rpartition("/")
        mine = [lf for lf in leaves if lf["path"] == path or lf["path"].startswith(path + "/")]
        row = rows.setdefault(layer, {"layer": layer, "weights": 0, "kept": None,
                                      "value_bits": None, "index_bits": None, "bytes": 0,
                                      "dense_bytes": 0})  # fmt: skip
        row["bytes"] += sum(lf["total_bytes"] for lf in mine)
        row["dense_bytes"] += 4 * int(x.size)
        if name != "kernel":
            continue
        row["weights"] = int(x.size)
        idx = [lf for lf in mine if lf["path"].endswith("/indices")]
        book = [lf for lf in mine if lf["path"].endswith("/codebook")]
        main = idx[0] if idx else (mine[0] if mine else None)
        if main is not None:
            row["kept"] = main["nonzeros"] / max(1, main["elements"])
            row["index_bits"] = main["index_bits"] if main["codec"] == "sparse" else None
        row["value_bits"] = _bits_of_codebook(book[0]["elements"]) if book else 32
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


def markdown_report(
    *, title: str, summary: dict[str, Any], stages: Sequence[dict[str, Any]], layers: Sequence[dict]
) -> str:
    """A Markdown report: the summary, the stages and the per-layer table."""
    out = [f"# {title}", ""]
    out += [
        f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in summary.items()
    ]
    out += [
        "",
        "## Stages",
        "",
        "| stage | test accuracy | bytes | nonzeros |",
        "| --- | --- | --- | --- |",
    ]
    out += [f"| {s['stage']} | {s['test_accuracy']:.4f} | {s['bytes']:,} | {s['nonzeros']:,} |"
            for s in stages]  # fmt: skip
    out += ["", "## Layers", "",
            "| layer | weights | kept | value bits | index bits | bytes | compression |",
            "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in layers:
        out.append(
            f"| {r['layer']} | {_fmt(r['weights'])} | {_fmt(r['kept'], pct=True)} | "
            f"{_fmt(r['value_bits'])} | {_fmt(r['index_bits'])} | {_fmt(r['bytes'])} | "
            f"{_fmt(r['compression'])}x |"
        )
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
    names = [s["stage"] for s in stages]
    ax1.bar(names, [s["bytes"] / 1024 for s in stages], color="#8fb3d9")
    ax1.set_yscale("log")
    ax1.set_ylabel("size (KiB, log)")
    ax2 = ax1.twinx()
    ax2.plot(names, [100 * s["test_accuracy"] for s in stages], "o-", color="#c0392b")
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


def structured_markdown(report: dict[str, Any]) -> str:
    """The Markdown report of ``jaxcomp compress --recipe structured``."""
    keys = ("model", "data", "criterion", "flops_target", "baseline_accuracy",
            "masked_accuracy", "final_accuracy", "dense_flops", "flops", "flops_ratio",
            "dense_params", "params", "params_ratio", "measured_speedup",
            "measured_speedup_batch1", "artifact_bytes")  # fmt: skip
    out = [f"# Structured pruning of {report['model']} on {report['data']}", ""]
    for k in keys:
        v = report[k]
        out.append(f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}")
    lat = report["latency_ms"]
    out += ["", "## Latency (ms, median, interleaved)", "", "| batch | dense | small |",
            "| --- | --- | --- |"]  # fmt: skip
    for batch, row in lat.items():
        out.append(f"| {batch.split('_')[1]} | {row['dense']:.3f} | {row['small']:.3f} |")
    out += [
        "",
        "## Stages",
        "",
        "| stage | test accuracy | MACs | params |",
        "| --- | --- | --- | --- |",
    ]
    out += [f"| {s['stage']} | {s['test_accuracy']:.4f} | {s['flops']:,} | {s['params']:,} |"
            for s in report["stages"]]  # fmt: skip
    out += ["", "## Widths", "", "| layer | inputs | outputs |", "| --- | --- | --- |"]
    out += [f"| {r['layer']} | {r['inputs']} of {r['dense_inputs']} | {r['width']} of "
            f"{r['dense_width']} |" for r in report["widths"]]  # fmt: skip
    return "\n".join(out) + "\n"


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

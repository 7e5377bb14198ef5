"""One results table for every row of the survey map: ``docs/results/summary.md`` and ``.json``.

Run ``python -m experiments.summary``. It reads the experiments' JSON files under
``docs/results/`` (it runs nothing) and writes one row per measured result for every row of the
survey map (``experiments/survey_rows.toml``); survey rows without a result are listed as missing,
not left out. ``--check`` compares instead of writing (exit status 1 when the committed table is
stale).

Convention for an experiment's JSON (new experiments follow it; the existing formats are read by
the adapters below): a top-level key ``"summary"`` holding a list of row dicts, one per measured
result, with these keys (``null`` wherever a quantity was not measured or does not change)::

    ref              the survey reference as written in the survey map: "[28]", "table 1", "7.2 (2)"
    method           what was run, short: "HashedNets 1/8", "prune 90% + k-means 5 bits"
    model            the model's registry name or a short description: "lenet300"
    data             the dataset name: "mnist5k", "digits"
    acc_before       test accuracy (a fraction in [0, 1]) of the uncompressed baseline
    acc_after        test accuracy of the compressed model (the mean over seeds)
    acc_after_std    its standard deviation over seeds (null for one seed)
    seeds            the number of seeds acc_after averages
    params_before    parameter count of the baseline
    params_after     parameters actually stored (nonzeros for pruning, factor sizes, buckets)
    bits             bits per stored weight (8, 5, 1, log2 of the codebook), null for float32
    bytes            bytes of the compressed model as stored (the coded .jcz, or the counted size)
    flops_before     multiply-adds of one example through the baseline (jc.analysis.flops)
    flops_after      the same through the compressed model, where it changes
    latency_ms_b1    measured CPU latency of the compressed model at batch 1, in ms
    latency_ms_b128  the same at batch 128, in ms
    command          the command that produced the number ("python -m experiments.x.y --flag")

Optional keys: ``acc_before_std``, ``latency_ms_b1_before`` and ``latency_ms_b128_before``
(the baseline's latency measured in the same run), ``compression`` and ``flops_reduction``
(x-fold ratios, where only the ratio was recorded), ``also`` (further refs the row counts for,
e.g. ``["table 2"]``), ``note`` (one short sentence, e.g. the paper's claim or what the number is
not). ``bits`` may be a string for mixed widths (``"3-5"``). ``ref`` must be a ``ref`` of
``experiments/survey_rows.toml`` (an unknown ref or key is an error). The machine and the
installed versions come from the file's ``meta["machine"]`` or ``machine``
(``experiments.common.machine()``), shown once per source file. After adding or changing a
result, run ``python -m experiments.summary`` and commit ``docs/results/summary.{md,json}``:
``tests/test_summary.py`` fails while the committed table is stale.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import tomllib
from typing import Any

from experiments import _summary_legacy

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(os.path.dirname(HERE), "docs", "results")
ROWS_FILE = os.path.join(HERE, "survey_rows.toml")

KEYS = (
    "ref",
    "method",
    "model",
    "data",
    "acc_before",
    "acc_after",
    "acc_after_std",
    "seeds",
    "params_before",
    "params_after",
    "bits",
    "bytes",
    "flops_before",
    "flops_after",
    "latency_ms_b1",
    "latency_ms_b128",
    "command",
)
OPTIONAL = (
    "acc_before_std",
    "latency_ms_b1_before",
    "latency_ms_b128_before",
    "compression",
    "flops_reduction",
    "also",
    "note",
)
FAMILIES = (
    "architectures",
    "pruning",
    "structured",
    "quantization",
    "lowrank",
    "distillation",
    "deep_compression",
    "training",
)


def survey_rows(path: str = ROWS_FILE) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The survey map's rows and the extra (outside the map) rows of ``survey_rows.toml``."""
    with open(path, "rb") as f:
        table = tomllib.load(f)
    return table["row"], table.get("extra", [])


def _row(**kw: Any) -> dict[str, Any]:
    """A result row with every convention key (missing ones None)."""
    unknown = set(kw) - set(KEYS) - set(OPTIONAL)
    if unknown:
        raise ValueError(f"summary row: unknown keys {sorted(unknown)}")
    return {k: kw.get(k) for k in KEYS} | {k: kw[k] for k in OPTIONAL if k in kw}


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


# ---- collecting and writing -------------------------------------------------------------------


def _machine(d: dict[str, Any]) -> str:
    m = (d.get("meta") or {}).get("machine") or d.get("machine") or {}
    versions = d.get("versions") or {}
    if not m and not versions:
        return "not recorded"
    parts = [m.get("cpu"), f"{m['cores']} cores" if m.get("cores") else None, m.get("backend")]
    for k in ("jax", "flax"):
        if m.get(k) or versions.get(k):
            parts.append(f"{k} {m.get(k) or versions.get(k)}")
    return ", ".join(str(p) for p in parts if p)


def collect(results: str = RESULTS) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every result row under ``results`` (a ``"summary"`` list, or an adapter) and each source's
    machine. Rows are returned in a stable order: by source file, then as the file lists them."""
    readers = _summary_legacy.adapters(results)
    rows, sources = [], {}
    for path in sorted(glob.glob(os.path.join(results, "**", "*.json"), recursive=True)):
        rel = os.path.relpath(path, results).replace(os.sep, "/")
        if rel == "summary.json":
            continue
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict):
            continue
        if isinstance(d.get("summary"), list):
            found = [_row(**r) for r in d["summary"]]
        elif rel in readers:
            found = [_row(**r) for r in readers[rel](d)]
        else:
            continue
        for r in found:
            r["source"] = rel
        rows += found
        sources[rel] = _machine(d)
    return rows, sources


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float) and math.isnan(v):
        return ""
    return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _acc(mean: Any, std: Any, seeds: Any = None) -> str:
    if mean is None:
        return ""
    s = _fmt(mean)
    if std is not None:
        s += f" ± {_fmt(std)}"
    if seeds:
        s += f" ({seeds} seed{'s' if seeds != 1 else ''})" if std is None else f" ({seeds})"
    return s


def _pair(before: Any, after: Any, ratio: Any = None, word: str = "fewer") -> str:
    if before is not None and after is not None:
        s = f"{_fmt(before)} → {_fmt(after)}"
        return s + (f" ({before / after:.1f}x)" if after else "")
    if ratio is not None:
        return f"{ratio:.2f}x {word}"
    if after is not None:
        return _fmt(after)
    return f"{_fmt(before)} (before)" if before is not None else ""


def _latency(after: Any, before: Any) -> str:
    if after is None:
        return ""
    return _fmt(after, 2) + (f" ({_fmt(before, 2)})" if before is not None else "")


def build(results: str = RESULTS) -> tuple[str, dict[str, Any]]:
    """The summary as Markdown and as a JSON-able dict."""
    survey, extra = survey_rows()
    rows, sources = collect(results)
    known = {r["ref"] for r in survey} | {r["ref"] for r in extra}
    bad = sorted({r["ref"] for r in rows} - known)
    if bad:
        raise ValueError(f"summary: result rows name refs that survey_rows.toml lacks: {bad}")
    by_ref: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_ref.setdefault(r["ref"], []).append(r)
        for ref in r.get("also", []):
            by_ref.setdefault(ref, []).append(r)
    order = {f: i for i, f in enumerate(FAMILIES)}
    listed = sorted(survey, key=lambda s: order[s["family"]]) + list(extra)
    with_result = [s["ref"] for s in survey if s["ref"] in by_ref]
    missing = [s["ref"] for s in survey if s["ref"] not in by_ref]

    lines = [
        "# Results: every survey row, one table",
        "",
        "Generated by `python -m experiments.summary` from the experiments' JSON under",
        "`docs/results/` (nothing is re-run; edit the experiments, not this file). Survey",
        "references `[n]` are those of Yi et al., *Neural Network Compression and Acceleration:",
        "An Overview*; each family's page lists them. Accuracy is the fraction of the test split",
        "(`mnist5k`: 1,000 real MNIST test images, so one image is 0.001 and seed-to-seed spreads",
        "of 0.005 are common); `a ± s (n)` is the mean and standard deviation over `n` seeds.",
        "Params and MACs are `before → after (ratio)`; `Nx fewer` where the experiment recorded",
        "only the ratio. Latency is the median of interleaved CPU timings in ms, the compressed",
        "model first and the baseline in parentheses, on the machine its source names (below).",
        "",
        f"Survey rows: **{len(survey)}**, with a result: **{len(with_result)}**, without: "
        f"**{len(missing)}**; result rows: **{len(rows)}** (plus {len(extra)} public methods",
        "outside the survey map, listed last).",
        "",
        "## Coverage",
        "",
        "| ref | method | page | public API | results |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in listed:
        n = len(by_ref.get(s["ref"], []))
        api = ", ".join(f"`{a}`" for a in s["api"]) or "experiments only"
        page = f"[{s['family']}](../{s['family']}.md)"
        lines.append(
            f"| {s['ref']} | {s['method']} | {page} | {api} | {n if n else '**missing**'} |"
        )
    lines += [
        "",
        "Rows without a result: " + (", ".join(missing) if missing else "none") + ".",
        "",
        "## Results",
        "",
        "| ref | method | model | data | acc before | acc after | params | bits | bytes | MACs "
        "| ms b1 (base) | ms b128 (base) | source |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in listed:
        for r in by_ref.get(s["ref"], []):
            if s["ref"] != r["ref"]:  # counted here through "also": shown under its own ref
                continue
            method = r["method"] + (f" ({r['note']})" if r.get("note") else "")
            lines.append(
                "| "
                + " | ".join(
                    [
                        s["ref"] + "".join(f", {a}" for a in r.get("also", [])),
                        method,
                        _fmt(r["model"]),
                        _fmt(r["data"]),
                        _acc(r["acc_before"], r.get("acc_before_std")),
                        _acc(r["acc_after"], r["acc_after_std"], r["seeds"]),
                        _pair(r["params_before"], r["params_after"], r.get("compression")),
                        _fmt(r["bits"]),
                        _fmt(r["bytes"]),
                        _pair(r["flops_before"], r["flops_after"], r.get("flops_reduction")),
                        _latency(r["latency_ms_b1"], r.get("latency_ms_b1_before")),
                        _latency(r["latency_ms_b128"], r.get("latency_ms_b128_before")),
                        f"`{r['source']}`",
                    ]
                )
                + " |"
            )
    lines += [
        "",
        "## Sources",
        "",
        'The machine and versions each file recorded ("not recorded": the run predates',
        "`experiments.common.machine()`; its page states the machine in words).",
        "",
        "| source | command | machine |",
        "| --- | --- | --- |",
    ]
    for rel, machine in sources.items():
        cmds = sorted({r["command"] for r in rows if r["source"] == rel and r["command"]})
        lines.append(f"| `{rel}` | {', '.join(f'`{c}`' for c in cmds)} | {machine} |")
    md = "\n".join(lines) + "\n"
    data = {
        "counts": {
            "survey_rows": len(survey),
            "with_result": len(with_result),
            "missing": len(missing),
            "result_rows": len(rows),
            "extra_rows": len(extra),
        },
        "missing": missing,
        "rows": rows,
        "sources": sources,
    }
    return md, data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="compare with the committed files")
    args = p.parse_args(argv)
    md, data = build()
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    targets = {os.path.join(RESULTS, "summary.md"): md, os.path.join(RESULTS, "summary.json"): text}
    if args.check:
        stale = [p for p, t in targets.items() if not os.path.exists(p) or open(p).read() != t]
        for p in stale:
            print(f"stale: {p} (run python -m experiments.summary)", file=sys.stderr)
        return 1 if stale else 0
    for p, t in targets.items():
        with open(p, "w", encoding="utf-8") as f:
            f.write(t)
    c = data["counts"]
    print(
        f"{c['survey_rows']} survey rows: {c['with_result']} with a result, {c['missing']} "
        f"without; {c['result_rows']} result rows -> {RESULTS}/summary.md"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Readers of the result files written before the summary convention (see ``experiments.summary``).

Each function turns one existing JSON format under ``docs/results/`` into summary rows (dicts with
the convention's keys; ``experiments.summary`` checks them). New experiments write a ``"summary"``
list instead and need nothing here. Where a file holds a sweep, one operating point is taken (the
reason is in the function's docstring); the file's own table has the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

MNIST = "mnist5k"


def _pruning_accuracy(d: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """Pruning at 90% of the kernel weights, one seed, retrained (before: the dense model)."""
    refs = {"random": "random", "magnitude": "[27]", "obd": "[24]", "obs": "[25]"}
    meta, out = d["meta"], []
    for r in meta["rows"]:
        base = r["method"].removesuffix("_global")
        if r["sparsity"] != 0.9 or base not in refs:
            continue
        scope = "global" if r["method"].endswith("_global") else "per layer"
        out.append(
            dict(
                ref=refs[base],
                method=f"{base} 90% ({scope}), retrained",
                model=model,
                data=MNIST,
                acc_before=meta["dense_accuracy"],
                acc_after=r["accuracy_retrained"],
                seeds=1,
                params_before=meta["params"],
                command="python -m experiments.pruning.lenet",
                note=f"kernel sparsity {r['kernel_sparsity']}; before retraining "
                f"{r['accuracy_no_retrain']}",
            )
        )
    return out


def _pruning_schedules(d: dict[str, Any], model: str) -> list[dict[str, Any]]:
    names = {"han_iterative": "iterative (Han)", "zhu_gupta_gradual": "gradual (Zhu and Gupta)"}
    return [
        dict(
            ref="[27]",
            method=f"magnitude {r['target_sparsity']:.0%}, {names.get(r['method'], r['method'])}",
            model=model,
            data=MNIST,
            acc_before=d["meta"]["dense_accuracy"],
            acc_after=r["accuracy"],
            seeds=1,
            params_before=r["params"],
            params_after=r["nonzeros"],
            command="python -m experiments.pruning.lenet",
        )
        for r in d["rows"]
    ]


def _pruning_sensitivity(d: dict[str, Any], dense: float) -> list[dict[str, Any]]:
    m = d["meta"]
    return [
        dict(
            ref="[27]",
            method="magnitude, per-layer sparsity from a sensitivity scan (1 pp)",
            model="lenet300",
            data=MNIST,
            acc_before=dense,
            acc_after=m["accuracy_retrained"],
            seeds=1,
            command="python -m experiments.pruning.lenet",
            note=f"kernel sparsity {m['kernel_sparsity']}",
        )
    ]


def _deep_compression(d: dict[str, Any], details: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for r in d["rows"]:
        det = (details or {}).get(r["model"], {})
        stages = {s["stage"]: s for s in det.get("stages", [])}
        bits = sorted({ly["value_bits"] for ly in det.get("layers", [])})
        out.append(
            dict(
                ref="[18]",
                method="prune, k-means with trained centroids, Huffman (.jcz)",
                model=r["model"],
                data=MNIST,
                acc_before=r["dense accuracy"],
                acc_after=r["final accuracy"],
                seeds=1,
                params_before=stages.get("dense", {}).get("nonzeros"),
                params_after=stages.get("quantized+coded", {}).get("nonzeros"),
                bits=(f"{bits[0]}-{bits[-1]}" if len(bits) > 1 else bits[0]) if bits else None,
                bytes=r["jcz bytes"],
                command="python -m experiments.deep_compression.run",
                note=f"{r['ratio']:.1f}x smaller than float32 ({r['dense bytes']:,} bytes)",
            )
        )
    return out


def _distillation(d: dict[str, Any]) -> list[dict[str, Any]]:
    refs = (
        ("KD", "[45]"),
        ("mimic", "[44]"),
        ("FitNets", "[46]"),
        ("neuron-selective", "[48]"),
        ("pseudo data", "[43]"),
        ("Bayesian dark knowledge", "[47]"),
        ("attention transfer", "AT"),
    )
    cfg = d["meta"]["config"]
    students = {
        "dense": ("lenet300 -> MLP", f"an MLP with {cfg['hidden']} hidden units"),
        "conv": ("lenet5 -> ConvNet", f"a ConvNet with {cfg['conv_features']} features"),
    }
    scratch = {r["pair"]: r for r in d["rows"] if r["method"] == "scratch"}
    teacher = {r["pair"]: r for r in d["rows"] if r["method"].startswith("teacher")}
    out = []
    for r in d["rows"]:
        ref = next((v for k, v in refs if r["method"].startswith(k)), None)
        if ref is None:
            continue
        s, t = scratch[r["pair"]], teacher[r["pair"]]
        model, student = students[r["pair"]]
        out.append(
            dict(
                ref=ref,
                method=r["method"],
                model=model,
                data=MNIST,
                acc_before=s["accuracy_mean"],
                acc_before_std=s["accuracy_std"],
                acc_after=r["accuracy_mean"],
                acc_after_std=r["accuracy_std"],
                seeds=len(d["meta"]["seeds"]),
                command="python -m experiments.distillation.compare",
                note=f"before: {student} trained alone; teacher {t['accuracy_mean']:.3f}, "
                f"{t.get('params', 0):,} params",
            )
        )
    return out


def _lowrank_table2(d: dict[str, Any]) -> list[dict[str, Any]]:
    refs = {
        "svd": "[37]",
        "svd (scan)": "[37]",
        "jaderberg": "[38]",
        "cp": "[39]",
        "tucker2": "Tucker-2",
        "bn_lowrank (scratch)": "[40]",
    }
    dense = {r["model"]: r for r in d["rows"] if r["method"] == "dense"}
    out = []
    for r in d["rows"]:
        if r["method"] not in refs:
            continue
        out.append(
            dict(
                ref=refs[r["method"]],
                also=["table 2"],
                method=f"{r['method']}, ranks {r['ranks']}",
                model=r["model"],
                data=MNIST,
                acc_before=dense[r["model"]]["accuracy"],
                acc_after=r["accuracy"],
                seeds=1,
                compression=r["compression"],
                flops_reduction=r["theoretical_speedup"],
                latency_ms_b128=r["ms"],
                latency_ms_b128_before=r["dense_ms"],
                command="python -m experiments.lowrank.table2",
                note=f"layers {r['layers']}",
            )
        )
    return out


def _bits_sweep(d: dict[str, Any]) -> list[dict[str, Any]]:
    rows = d["rows"]
    base = next(r["accuracy"] for r in rows if r["kind"] == "baseline")
    pick = {
        ("PTQ W (min/max)", 8): "[16]",
        ("PTQ W8A8, run_int8 (integer kernels)", 8): "[16]",
        ("QAT W+A (STE, moving-average ranges)", 8): "[16]",
        ("k-means sharing, trained centroids", 4): "[14]",
        ("k-means sharing, trained centroids", 2): "[14]",
        ("LSQ W (learned step)", 2): "LSQ",
        ("BinaryConnect (deterministic)", 1): "[20]",
        ("BinaryConnect (stochastic)", 1): "[35]",
        ("BinaryNet (sign weights + activations)", 1): "[20]",
        ("BWN (XNOR-Net weights)", 1): "[21]",
        ("XNOR-Net (weights + inputs)", 1): "[21]",
        ("LAB (loss-aware)", 1): "[34]",
        ("TWN (ternary, 0.7 mean|W|)", 2): "TWN",
        ("ternary connect (stochastic)", 2): "[35]",
    }
    return [
        dict(
            ref=pick[(r["method"], r["bits"])],
            method=r["method"],
            model="lenet5",
            data=MNIST,
            acc_before=base,
            acc_after=r["accuracy"],
            seeds=1,
            bits=r["bits"],
            command="python -m experiments.quantization.bits_sweep",
        )
        for r in rows
        if (r["method"], r["bits"]) in pick
    ]


def _distortions(d: dict[str, Any], base: float | None) -> list[dict[str, Any]]:
    acc = {r["experiment"]: r["accuracy"] for r in d["rows"]}
    cmd = "python -m experiments.quantization.bits_sweep"
    fp = "fixed point <4,12> from scratch, stochastic rounding, lr 1e-4"
    near = "fixed point <4,12> from scratch, nearest rounding, lr 1e-4"
    noisy = "fine-tuned with additive noise (0.5 rms), binarized after"
    plain = "baseline, binarized after training"
    out = []
    if fp in acc:
        out.append(
            dict(
                ref="[17]",
                method="16-bit fixed point <4,12> from scratch, stochastic rounding",
                model="lenet5",
                data=MNIST,
                acc_before=base,
                acc_after=acc[fp],
                seeds=1,
                bits=16,
                command=cmd,
                note=f"nearest rounding: {acc.get(near)}",
            )
        )
    if noisy in acc:
        out.append(
            dict(
                ref="[22]",
                method="fine-tuned under weight noise (0.5 rms), then binarized",
                model="lenet5",
                data=MNIST,
                acc_before=base,
                acc_after=acc[noisy],
                seeds=1,
                bits=1,
                command=cmd,
                note=f"binarized without the noise training: {acc.get(plain)}",
            )
        )
    return out


def _int8(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, model in (("mlp", "MLP (1.9M params)"), ("lenet5", "lenet5")):
        r = d[name]
        out.append(
            dict(
                ref="[16]",
                method="int8 kernels (static scales), run_int8: speed only",
                model=model,
                bits=8,
                bytes=r["weight_bytes"]["quantized"],
                command="python -m experiments.benchmarks.int8_inference",
                note=f"batch {r['batch']}: {r['int8_static']['median_ms']:.2f} ms against float32 "
                f"{r['fp32']['median_ms']:.2f} ms (random weights, no accuracy)",
            )
        )
    return out


def _structured(d: dict[str, Any]) -> list[dict[str, Any]]:
    refs = {"l1": "[33]", "taylor": "Taylor", "bn": "BN scale"}
    out = []
    for res in d["results"]:
        for r in res["rows"]:
            if r["flops_target"] != 0.5 or r["criterion"] not in refs:
                continue
            out.append(
                dict(
                    ref=refs[r["criterion"]],
                    method=f"{r['criterion']} channels, 50% of FLOPs, removed",
                    model=r["model"],
                    data=MNIST,
                    acc_before=r["dense_acc"],
                    acc_before_std=r["dense_acc_std"],
                    acc_after=r["acc_after"],
                    acc_after_std=r["acc_after_std"],
                    seeds=len(r["seeds_after"]),
                    params_before=r["dense_params"],
                    params_after=r["small_params"],
                    flops_before=r["dense_flops"],
                    flops_after=r["small_flops"],
                    latency_ms_b128=r["small_ms"],
                    latency_ms_b128_before=r["dense_ms"],
                    command="python -m experiments.structured.run",
                )
            )
    return out


def _structured_speed(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in d["results"]:
        a = r["aligned"]
        out.append(
            dict(
                ref="7.2 (2)",
                method=f"L1 channels removed, widths rounded to {a['multiple']}: speed",
                model=r["model"],
                params_before=r["dense_params"],
                flops_before=r["dense_flops"],
                flops_after=a["flops"],
                latency_ms_b1=a["ms_batch1"],
                latency_ms_b1_before=r["dense_ms_batch1"],
                latency_ms_b128=a["ms"],
                latency_ms_b128_before=r["dense_ms"],
                command="python -m experiments.benchmarks.structured_speed",
                note="initialized weights (speed only, no accuracy)",
            )
        )
    return out


def _efficient(d: dict[str, Any]) -> list[dict[str, Any]]:
    refs = {
        "vgg_small": "[2]",
        "mobilenet_v1": "[6]",
        "shufflenet_v1_g3": "[7]",
        "squeezenet1_1": "[9]",
        "nin": "[8]",
    }
    rows = {r["model"]: r for r in d["rows"]}
    base = rows[d["meta"]["baseline"]]
    out = []
    for name, r in rows.items():
        if name not in refs:
            continue
        is_base = name == d["meta"]["baseline"]
        out.append(
            dict(
                ref=refs[name],
                method=f"{r['block']} ({'the baseline' if is_base else 'against vgg_small'})",
                model=name,
                data=MNIST + " 32x32",
                acc_before=None if is_base else base["acc"],
                acc_before_std=None if is_base else base["acc_std"],
                acc_after=r["acc"],
                acc_after_std=r["acc_std"],
                seeds=len(r["acc_seeds"]),
                params_before=None if is_base else base["params"],
                params_after=r["params"],
                flops_before=None if is_base else base["macs"],
                flops_after=r["macs"],
                latency_ms_b1=r["ms_b1"],
                latency_ms_b128=r["ms_b128"],
                latency_ms_b1_before=None if is_base else base["ms_b1"],
                latency_ms_b128_before=None if is_base else base["ms_b128"],
                command=d["meta"]["command"],
            )
        )
    return out


def _table1(d: dict[str, Any]) -> list[dict[str, Any]]:
    refs = {"ResNet": "[10]", "FractalNet": "[13]", "DenseNet": "[12]"}
    return [
        dict(
            ref=refs[r["class"]],
            also=["table 1"],
            method=r["model"],
            model=r["class"],
            data=MNIST + " 32x32",
            acc_after=1 - r["error_mean"] / 100,
            acc_after_std=r["error_std"] / 100,
            seeds=len(r["errors"]),
            params_after=r["params"],
            flops_after=r["macs"],
            command=d["meta"]["command"],
            note=f"training error {r['train_error_mean']}%",
        )
        for r in d["rows"]
        if r["class"] in refs
    ]


def _dsod(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        dict(
            ref="[55]",
            method=r["arm"],
            model="dense backbone",
            data=MNIST + " 32x32",
            acc_after=1 - r["error_mean"] / 100,
            acc_after_std=r["error_std"] / 100,
            seeds=len(r["errors"]),
            params_after=r["params_tested"],
            flops_after=r["macs"],
            command=d["meta"]["command"],
        )
        for r in d["rows"]
    ]


def adapters(results: str) -> dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]]:
    """Result file (relative to ``results``) -> the function that reads its rows."""

    def _load(rel: str) -> dict[str, Any] | None:
        path = os.path.join(results, rel)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    p300 = _load("pruning/lenet300_accuracy.json")
    bits = _load("quantization/bits_sweep.json")
    base = None
    if bits:
        base = next((r["accuracy"] for r in bits["rows"] if r["kind"] == "baseline"), None)
    return {
        "pruning/lenet300_accuracy.json": lambda d: _pruning_accuracy(d, "lenet300"),
        "pruning/lenet5_accuracy.json": lambda d: _pruning_accuracy(d, "lenet5"),
        "pruning/lenet300_schedules.json": lambda d: _pruning_schedules(d, "lenet300"),
        "pruning/lenet5_schedules.json": lambda d: _pruning_schedules(d, "lenet5"),
        "pruning/lenet300_sensitivity.json": lambda d: _pruning_sensitivity(
            d, p300["meta"]["dense_accuracy"] if p300 else None
        ),
        "deep_compression/summary.json": lambda d: _deep_compression(
            d, _load("deep_compression/details.json")
        ),
        "distillation/distillation.json": _distillation,
        "lowrank/table2.json": _lowrank_table2,
        "quantization/bits_sweep.json": _bits_sweep,
        "quantization/distortions.json": lambda d: _distortions(d, base),
        "quantization/int8_inference.json": _int8,
        "structured.json": _structured,
        "structured_speed.json": _structured_speed,
        "architectures_efficient.json": _efficient,
        "architectures_table1.json": _table1,
        "dsod.json": _dsod,
    }

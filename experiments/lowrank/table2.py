"""The survey's Table 2 at small scale: low-rank methods on LeNet-5 and a small VGG, on MNIST.

Yi et al.'s Table 2 compares low-rank methods (Denton's SVD, Jaderberg's separable filters,
Lebedev's CP, Kim's Tucker-2, Tai's low-rank layers with batch norm) by speed-up and accuracy
drop. Here, on the embedded MNIST subset (4,000 train / 1,000 test images; 32x32 zero-padded for
the VGG):

1. a dense model is trained (LeNet-5; the small VGG with widths 16, 32, 64);
2. each transform rewrites the selected layers (LeNet-5: the 5x5 20->50 convolution ``Conv_1``,
   and for SVD also the 800x500 ``Dense_0``; VGG: every 3x3 convolution after the first), the
   model is evaluated as rewritten, fine-tuned through the rebuilt kernels, finalized, and
   evaluated again *through* :func:`jaxcomp.adapt.run_factorized` (the factors, not the rebuilt
   kernels);
3. the inference time of the jitted model at batch 128, adapter against dense, is measured
   interleaved in one process (``jc.analysis.compare_latency``), next to the theoretical speed-up
   (MACs, ``jc.analysis.flops``) and the compression rate (params of the whole model);
4. Tai et al.'s low-rank model with batch norm between the factors (``LowRankConv``) is trained
   from scratch for as many epochs as the dense model and its fine-tuning together.

For LeNet-5 one more SVD row takes per-layer ranks from a sensitivity scan
(``jc.lowrank.sensitivity_scan``: each layer alone at ranks 2..32, accuracy on 1,000 *training*
images, at most 1 point lost).

Budget: about 10-15 minutes on 2 shared CPU cores. Run:
``python -m experiments.lowrank.table2 [--smoke] [--out DIR] [--img DIR]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import threadpoolctl

import jaxcomp as jc
from experiments.common import Bound
from experiments.common import train
from experiments.common import write_results
from experiments.lowrank.models import LeNet5LowRank
from experiments.lowrank.models import VGGSmallLowRank
from jaxcomp import lowrank
from jaxcomp.adapt import run_factorized

matplotlib.use("Agg")
import matplotlib.pyplot as plt

KEY = jax.random.key(0)
COLUMNS = [
    "model", "method", "layers", "ranks", "accuracy", "acc_before_ft", "acc_drop",
    "compression", "theoretical_speedup", "measured_speedup", "dense_ms", "ms",
]  # fmt: skip


def _only(paths: Sequence[str]) -> list[tuple[str, bool]]:
    return [("^(" + "|".join(re.escape(p) for p in paths) + ")$", True)]


def _convs_after_first(params: Any) -> dict[str, int]:
    """``{path: F}`` of the VGG's 3x3 kernels after ``Conv_0``."""
    return {
        f"{k}/kernel": int(v["kernel"].shape[-1])
        for k, v in params.items()
        if k.startswith("Conv_") and k != "Conv_0"
    }


def lenet5_methods(params: Any, scan_ranks: dict[str, int] | None) -> dict[str, Callable]:
    conv, fc = "Conv_1/kernel", "Dense_0/kernel"
    methods = {
        "svd": lambda: lowrank.svd(rank={conv: 12, fc: 32}, where=_only([conv, fc])),
        "jaderberg": lambda: lowrank.jaderberg(rank=8, where=_only([conv])),
        "cp": lambda: lowrank.cp(rank=24, iterations=100, key=KEY, where=_only([conv])),
        "tucker2": lambda: lowrank.tucker2(rank=(10, 20), where=_only([conv])),
    }
    if scan_ranks:
        methods["svd (scan)"] = lambda: lowrank.svd(rank=scan_ranks, where=_only(list(scan_ranks)))
    return methods


def vgg_methods(params: Any, scan_ranks: Any = None) -> dict[str, Callable]:
    outs = _convs_after_first(params)
    where = _only(list(outs))
    return {
        "svd": lambda: lowrank.svd(rank={p: f // 4 for p, f in outs.items()}, where=where),
        "jaderberg": lambda: lowrank.jaderberg(rank={p: f // 4 for p, f in outs.items()},
                                               where=where),
        "cp": lambda: lowrank.cp(rank={p: f // 2 for p, f in outs.items()}, iterations=100,
                                 key=KEY, where=where),
        "tucker2": lambda: lowrank.tucker2(rank={p: (f // 2, f // 2) for p, f in outs.items()},
                                           where=where),
    }  # fmt: skip


def _describe(fin: Any) -> tuple[list[str], str]:
    """The factorized layer paths and their factor shapes, for the table."""
    layers, ranks = [], []
    for path, node in jax.tree_util.tree_flatten_with_path(fin, is_leaf=jc.is_compressed)[0]:
        if jc.is_compressed(node):
            name = jc.core.path_str(path).rsplit("/", 1)[0]
            layers.append(name)
            if isinstance(node, lowrank.LowRank):
                ranks.append(str(node.v.shape[0]))
            elif isinstance(node, lowrank.Separable):
                ranks.append(str(node.vertical.shape[-1]))
            elif isinstance(node, lowrank.CP):
                ranks.append(str(node.last.shape[0]))
            elif isinstance(node, lowrank.Tucker2):
                ranks.append(f"{node.core.shape[2]}x{node.core.shape[3]}")
    return layers, ",".join(ranks)


def _accuracy(fn: Callable, variables: Any, data: jc.data.Dataset, batch: int = 500) -> float:
    correct = 0
    for i in range(0, len(data.x_test), batch):
        logits = fn(variables, jnp.asarray(data.x_test[i : i + batch]))
        correct += int(jnp.sum(jnp.argmax(logits, -1) == jnp.asarray(data.y_test[i : i + batch])))
    return correct / len(data.x_test)


def _speed(dense: tuple[Callable, Any], other: tuple[Callable, Any], x: jax.Array, repeats: int):
    """The jitted ``fn(variables, x)`` of each, timed interleaved as they are (``Bound``): the
    programs the evaluations compiled at this batch size are the ones timed."""
    stats = jc.analysis.compare_latency(
        {"dense": Bound(*dense), "other": Bound(*other)},
        x, repeats=repeats, warmup=3, rounds=min(5, repeats),
    )  # fmt: skip
    return stats["dense"]["median_s"], stats["other"]["median_s"]


def run_model(name: str, cfg: dict[str, Any], data: jc.data.Dataset, *, repeats: int, log):
    """All rows of one model."""
    model = jc.models.get(name, num_classes=data.num_classes, **cfg["kwargs"])
    t0 = time.time()
    state, dense_acc = train(model, data, epochs=cfg["dense_epochs"], lr=cfg["lr"],
                             batch_size=cfg["batch"])  # fmt: skip
    variables = state.variables()
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    log(f"{name}: dense accuracy {dense_acc:.4f} ({time.time() - t0:.0f}s)")
    x_bench = jnp.asarray(data.x_test[: cfg["bench_batch"]])
    dense_fn = jax.jit(model.apply)
    dense_macs = jc.analysis.flops(dense_fn, variables, x_bench)
    dense_params = jc.analysis.param_count(params)
    rows = [{
        "model": name, "method": "dense", "layers": "", "ranks": "", "accuracy": dense_acc,
        "acc_before_ft": dense_acc, "acc_drop": 0.0, "compression": 1.0,
        "theoretical_speedup": 1.0, "measured_speedup": 1.0,
    }]  # fmt: skip

    scan = None
    if cfg.get("scan"):
        t0 = time.time()
        pick = np.random.default_rng(1).permutation(data.num_train)[:1000]  # classes are sorted
        probe = dataclasses.replace(data, x_test=data.x_train[pick], y_test=data.y_train[pick])
        evaluate = lambda p: _accuracy(dense_fn, {"params": p, **model_state}, probe)
        scan = lowrank.sensitivity_scan(
            lowrank.svd, params, evaluate, candidates=cfg["scan"], tolerance=0.01,
            where=_only(["Conv_1/kernel", "Dense_0/kernel"]),
        )  # fmt: skip
        log(f"{name}: sensitivity scan ranks {scan.ranks} ({time.time() - t0:.0f}s)")

    fast_fn = jax.jit(run_factorized(model.apply))
    counted = jax.jit(run_factorized(model.apply, depthwise="conv"))  # what flops can count
    for method, make in cfg["methods"](params, None if scan is None else scan.ranks).items():
        t0 = time.time()
        t = make()
        c, s = t.init(params)
        before = _accuracy(dense_fn, {"params": t.apply(c, s), **model_state}, data)
        ft, _ = train(model, data, variables=variables, transform=t, epochs=cfg["ft_epochs"],
                      lr=cfg["ft_lr"], batch_size=cfg["batch"])  # fmt: skip
        fin_vars = {"params": ft.finalize(), **ft.model_state}
        acc = _accuracy(fast_fn, fin_vars, data)
        macs = jc.analysis.flops(counted, fin_vars, x_bench)
        td, tf = _speed((dense_fn, variables), (fast_fn, fin_vars), x_bench, repeats)
        layers, ranks = _describe(fin_vars["params"])
        rows.append({
            "model": name, "method": method, "layers": " ".join(layers), "ranks": ranks,
            "accuracy": acc, "acc_before_ft": before, "acc_drop": dense_acc - acc,
            "compression": dense_params / jc.analysis.param_count(fin_vars["params"]),
            "theoretical_speedup": dense_macs / macs, "measured_speedup": td / tf,
            "dense_ms": 1e3 * td, "ms": 1e3 * tf,
        })  # fmt: skip
        log(f"{name}/{method}: {rows[-1]} ({time.time() - t0:.0f}s)")

    if cfg["bn_model"] is None:
        return _finish(rows), scan
    t0 = time.time()
    low = cfg["bn_model"](data.num_classes)
    st, acc = train(low, data, epochs=cfg["dense_epochs"] + cfg["ft_epochs"], lr=cfg["lr"],
                    batch_size=cfg["batch"])  # fmt: skip
    low_vars = st.variables()
    low_fn = jax.jit(low.apply)
    td, tl = _speed((dense_fn, variables), (low_fn, low_vars), x_bench, repeats)
    rows.append({
        "model": name, "method": "bn_lowrank (scratch)", "layers": cfg["bn_layers"],
        "ranks": cfg["bn_ranks"], "accuracy": acc, "acc_before_ft": float("nan"),
        "acc_drop": dense_acc - acc,
        "compression": dense_params / jc.analysis.param_count(low_vars["params"]),
        "theoretical_speedup": dense_macs / jc.analysis.flops(low_fn, low_vars, x_bench),
        "measured_speedup": td / tl, "dense_ms": 1e3 * td, "ms": 1e3 * tl,
    })  # fmt: skip
    log(f"{name}/bn_lowrank: {rows[-1]} ({time.time() - t0:.0f}s)")
    return _finish(rows), scan


def _finish(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dense row's time: the median of the dense times measured next to each method."""
    rows[0]["dense_ms"] = rows[0]["ms"] = float(np.median([r["dense_ms"] for r in rows[1:]]))
    return rows


def configs(smoke: bool) -> dict[str, dict[str, Any]]:
    """Per model: epochs, learning rates, the methods and the low-rank model trained from scratch.

    The smoke run trains one epoch of 256 images, keeps CP and the scanned SVD on LeNet-5, SVD on
    the tiniest VGG (two stages of one convolution each), and trains the low-rank model from
    scratch for LeNet-5 only.
    """
    widths = (2, 4) if smoke else (16, 32, 64)
    vgg = {"widths": widths, "convs_per_stage": 1} if smoke else {"widths": widths}
    pick = lambda f, keep: lambda p, r: {k: v for k, v in f(p, r).items() if k in keep or not smoke}
    return {
        "lenet5": {
            "kwargs": {}, "pad": None, "dense_epochs": 1 if smoke else 4,
            "ft_epochs": 1, "lr": 1e-3, "ft_lr": 5e-4, "batch": 64, "bench_batch": 128,
            "methods": pick(lenet5_methods, ("cp", "svd (scan)")),
            "scan": [4] if smoke else [2, 4, 8, 16, 32],
            "bn_model": lambda nc: LeNet5LowRank(num_classes=nc, rank=8),
            "bn_layers": "Conv_1", "bn_ranks": "8",
        },
        "vgg_small": {
            "kwargs": vgg, "pad": 32, "dense_epochs": 1 if smoke else 3,
            "ft_epochs": 1 if smoke else 2, "lr": 1e-3, "ft_lr": 5e-4, "batch": 64,
            "bench_batch": 128,
            "methods": pick(vgg_methods, ("svd",)), "scan": None,
            "bn_model": None if smoke else lambda nc: VGGSmallLowRank(
                num_classes=nc, widths=widths, rank_fraction=0.25),
            "bn_layers": "Conv_1..", "bn_ranks": "F/4",
        },
    }  # fmt: skip


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Measured speed-up against accuracy drop, one panel per model."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, m in zip(axes[0], models):
        for r in rows:
            if r["model"] != m:
                continue
            ax.scatter(r["measured_speedup"], 100 * r["acc_drop"], s=40)
            ax.annotate(r["method"], (r["measured_speedup"], 100 * r["acc_drop"]), fontsize=8,
                        xytext=(4, 3), textcoords="offset points")  # fmt: skip
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_xlabel("measured speed-up of jitted inference (batch 128, CPU)")
        ax.set_ylabel("accuracy drop (points)")
        ax.set_title(f"{m} on mnist5k")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="toy sizes, 1 epoch, 512 images")
    ap.add_argument("--out", default="docs/results/lowrank", help="where the tables go")
    ap.add_argument("--img", default="docs/img", help="where the plot goes")
    ap.add_argument("--models", default="lenet5,vgg_small", help="comma-separated models")
    args = ap.parse_args(argv)
    t_start = time.time()
    log = lambda msg: print(f"[{time.time() - t_start:6.0f}s] {msg}", flush=True)
    # host SVDs at init: one BLAS thread (OpenBLAS threads on a shared 2-core machine are slower)
    limits = threadpoolctl.threadpool_limits(1, user_api="blas")
    base = jc.data.load("mnist5k")
    if args.smoke:  # a random subset (the embedded arrays are sorted by class)
        tr = np.random.default_rng(0).permutation(base.num_train)[:256]
        te = np.random.default_rng(1).permutation(len(base.x_test))[:128]
        base = dataclasses.replace(base, x_train=base.x_train[tr], y_train=base.y_train[tr],
                                   x_test=base.x_test[te], y_test=base.y_test[te])  # fmt: skip
    rows, scans = [], {}
    for name, cfg in configs(args.smoke).items():
        if name not in args.models.split(","):
            continue
        data = base if cfg["pad"] is None else jc.data.pad_to(base, cfg["pad"])
        model_rows, scan = run_model(name, cfg, data, repeats=3 if args.smoke else 30, log=log)
        rows += model_rows
        if scan is not None:
            scans[name] = {"ranks": scan.ranks, "baseline": scan.baseline,
                           "scores": {p: {str(r): v for r, v in s.items()}
                                      for p, s in scan.scores.items()}}  # fmt: skip
    meta = {
        "dataset": "mnist5k (4000 train / 1000 test), 32x32 zero-padded for vgg_small",
        "device": str(jax.devices()[0].device_kind),
        "smoke": args.smoke,
        "sensitivity_scans": scans,
        "seconds": round(time.time() - t_start, 1),
    }
    table = write_results(args.out, "table2", rows, COLUMNS, meta)
    plot(rows, os.path.join(args.img, "lowrank_table2.png"))
    print(table)
    log("done")
    limits.restore_original_limits()
    return rows


if __name__ == "__main__":
    main()

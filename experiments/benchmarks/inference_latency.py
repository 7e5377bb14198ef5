"""CPU inference latency of the pruning and distillation experiments' models, batch 1 and 128.

The pruning and distillation experiments (``experiments.pruning.lenet``,
``experiments.distillation.compare``) report accuracy and size; this script adds what their models
cost to run. The models are rebuilt at the experiments' published sizes (latency depends on the
shapes and, for a sparse format, on the number of nonzeros per layer, not on the trained values):

* **pruning** (Han et al.'s iterative magnitude pruning to 92% of the kernels, 12.3x fewer
  weights; per-layer sparsities from ``docs/results/pruning/*_schedules.json``): LeNet-300-100 and
  LeNet-5, each (a) dense, (b) *masked*: the pruned weights are exact zeros in the dense kernels,
  which is what ``jc.prune`` produces and what every dense matmul then runs, and (c) *BCOO*: the
  pruned ``Dense`` kernels as ``jax.experimental.sparse.BCOO`` matrices (the convolutions of
  LeNet-5 stay dense; XLA has no sparse convolution). Unstructured zeros do not make a dense
  matmul faster: (b) costs what (a) costs. Whether (c) pays depends on XLA's sparse kernels.
* **distillation** (``experiments.distillation.compare``'s pairs): teacher LeNet-300-100 (266,610
  params) against the student MLP 784-30-10 (23,860), and teacher LeNet-5 (431,080) against the
  student ``ConvNet((4, 8), (32,))`` (5,370). Every method of a pair trains the same student, so
  its latency is the student's.

For each group the models are jitted, warmed up and timed interleaved in the same process
(``experiments.report.interleaved_latency``: medians of 5 rounds), at batch 1 and 128, on mnist5k
test images. Writes ``docs/results/pruning/inference_latency.{json,md}`` and
``docs/results/distillation/inference_latency.{json,md}`` with summary rows that carry the
accuracies of the experiments' results files.

Run ``python -m experiments.benchmarks.inference_latency [--smoke] [--root DIR]`` (about 2
minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.experimental import sparse

import jaxcomp as jc
from experiments.common import machine
from experiments.report import interleaved_latency
from experiments.report import summary_row
from experiments.report import write_doc
from jaxcomp import distill

COMMAND = "python -m experiments.benchmarks.inference_latency"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISTILL_REFS = {
    "KD (T=4, alpha=0.9)": "[45]", "mimic (logit L2)": "[44]", "FitNets (hint, then KD)": "[46]",
    "neuron-selective (+labels)": "[48]", "pseudo data (MUNGE x2, KD)": "[43]",
    "Bayesian dark knowledge": "[47]", "attention transfer (+labels)": "AT",
    "attention transfer + KD": "AT",
}  # fmt: skip


def prune_like(params: Any, per_layer: dict[str, float]) -> Any:
    """``params`` with the smallest-magnitude fraction of each listed kernel set to zero."""

    def one(path, x):
        s = per_layer.get(jc.core.path_str(path))
        if s is None:
            return x
        k = round(s * x.size)
        thr = jnp.sort(jnp.abs(x).ravel())[k - 1] if k else -1.0
        return jnp.where(jnp.abs(x) > thr, x, 0.0)

    return jax.tree_util.tree_map_with_path(one, params)


def to_bcoo(params: Any) -> Any:
    """Every 2-D kernel as a BCOO matrix holding its nonzeros (other leaves unchanged)."""

    def one(path, x):
        if jc.core.path_str(path).endswith("kernel") and x.ndim == 2:
            return sparse.BCOO.fromdense(x, nse=int(jnp.count_nonzero(x)))
        return x

    return jax.tree_util.tree_map_with_path(one, params)


def lenet300_sparse(variables: Any, x: jax.Array) -> jax.Array:
    """LeNet-300-100's forward with BCOO kernels."""
    p = variables["params"]
    h = jnp.reshape(x, (x.shape[0], -1))
    for i in range(3):
        h = h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"][None, :]
        h = nn.relu(h) if i < 2 else h
    return h


def lenet5_sparse(variables: Any, x: jax.Array) -> jax.Array:
    """LeNet-5's forward with dense (masked) convolutions and BCOO dense-layer kernels."""
    p = variables["params"]
    h = x
    for i in range(2):
        h = jax.lax.conv_general_dilated(h, p[f"Conv_{i}"]["kernel"], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
        h = nn.max_pool(h + p[f"Conv_{i}"]["bias"][None, None, None, :], (2, 2), strides=(2, 2))
    h = jnp.reshape(h, (h.shape[0], -1))
    h = nn.relu(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None, :])
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"][None, :]


SPARSE_FORWARD = {"lenet300": lenet300_sparse, "lenet5": lenet5_sparse}


def _read(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def pruning(root: str, x: np.ndarray, reps: dict[int, int], log, *, models: Sequence[str],
            skip: bool) -> tuple[list, list, dict]:  # fmt: skip
    """Rows, summary rows and raw latencies of the pruned models."""
    rows, summary, raw = [], [], {}
    for name in models:
        sched = _read(os.path.join(root, "docs/results/pruning", f"{name}_schedules.json"))
        han = next(r for r in sched["rows"] if r["method"] == "han_iterative")
        dense_acc = _read(os.path.join(root, "docs/results/pruning", f"{name}_accuracy.json"))
        dense_acc = dense_acc["meta"]["dense_accuracy"]
        model = jc.models.get(name)
        v = jc.models.init(model, jax.random.key(0), x.shape[1:])
        # trained biases are nonzero (the published nonzero counts include them)
        v = jax.tree_util.tree_map_with_path(
            lambda p, a: a + 0.01 if jc.core.path_str(p).endswith("bias") else a, v
        )
        masked = {"params": prune_like(v["params"], han["per_layer_sparsity"])}
        bcoo = {"params": to_bcoo(masked["params"])}
        dense_fn = jax.jit(model.apply)
        sparse_fn = jax.jit(SPARSE_FORWARD[name])
        err = float(jnp.max(jnp.abs(sparse_fn(bcoo, x[:8]) - dense_fn(masked, x[:8]))))
        assert err < 1e-3, f"{name}: the BCOO forward differs from the masked model by {err}"
        fns = {"dense": (dense_fn, v), "masked": (dense_fn, masked), "bcoo": (sparse_fn, bcoo)}
        lat = interleaved_latency(fns, x, repeats=reps, skip=skip)
        raw[name] = lat
        log(f"pruning {name}: {lat}")
        nnz = int(jc.analysis.nonzero_count(masked["params"]))
        params = int(jc.analysis.param_count(v["params"]))
        macs = int(jc.analysis.flops(dense_fn, v, x[:1]))
        for kind in ("dense", "masked", "bcoo"):
            rows.append({"model": name, "execution": kind, "nonzeros": nnz if kind != "dense"
                         else params, "ms_b1": lat[kind]["b1"], "ms_b128": lat[kind]["b128"],
                         "ratio_b1": ratio(lat[kind]["b1"], lat["dense"]["b1"]),
                         "ratio_b128": ratio(lat[kind]["b128"], lat["dense"]["b128"])})  # fmt: skip
        for kind, how in (("masked", "masked dense kernels (what jc.prune produces)"),
                          ("bcoo", "pruned Dense kernels as BCOO sparse matrices")):  # fmt: skip
            summary.append(summary_row(
                ref="[27]", method=f"Han iterative magnitude pruning to 92%, run as {how}",
                model=name, data="mnist5k", acc_before=dense_acc, acc_after=han["accuracy"],
                seeds=1, params_before=params, params_after=nnz, flops_before=macs,
                flops_after=macs, latency_ms_b1=lat[kind]["b1"],
                latency_ms_b128=lat[kind]["b128"], latency_ms_b1_before=lat["dense"]["b1"],
                latency_ms_b128_before=lat["dense"]["b128"], command=COMMAND,
                note="accuracy from experiments.pruning.lenet (one run); unstructured zeros do "
                "not speed up dense matmuls: the masked model runs the dense model's MACs",
            ))  # fmt: skip
    return rows, summary, raw


def distillation(root: str, x: np.ndarray, reps: dict[int, int], log, *, pairs: Sequence[str],
                 skip: bool) -> tuple[list, list, dict]:  # fmt: skip
    """Rows, summary rows and raw latencies of the teachers and students."""
    res = _read(os.path.join(root, "docs/results/distillation/distillation.json"))
    cfg = res["meta"]["config"]
    nets = {
        "dense": (jc.models.get("lenet300"), distill.MLP(features=(cfg["hidden"],))),
        "conv": (jc.models.get("lenet5"),
                 distill.ConvNet(features=tuple(cfg["conv_features"]), hidden=(32,))),
    }  # fmt: skip
    rows, summary, raw = [], [], {}
    for pair, (teacher, student) in ((p, nets[p]) for p in pairs):
        tv = jc.models.init(teacher, jax.random.key(0), x.shape[1:])
        sv = jc.models.init(student, jax.random.key(1), x.shape[1:])
        tf, sf = jax.jit(teacher.apply), jax.jit(student.apply)
        lat = interleaved_latency({"teacher": (tf, tv), "student": (sf, sv)}, x, repeats=reps,
                                  skip=skip)  # fmt: skip
        raw[pair] = lat
        log(f"distillation {pair}: {lat}")
        tp, sp = (int(jc.analysis.param_count(v["params"])) for v in (tv, sv))
        tm, sm = int(jc.analysis.flops(tf, tv, x[:1])), int(jc.analysis.flops(sf, sv, x[:1]))
        for who, p, m in (("teacher", tp, tm), ("student", sp, sm)):
            rows.append({"pair": pair, "model": who, "params": p, "macs": m,
                         "ms_b1": lat[who]["b1"], "ms_b128": lat[who]["b128"],
                         "speedup_b1": ratio(lat["teacher"]["b1"], lat[who]["b1"]),
                         "speedup_b128": ratio(lat["teacher"]["b128"],
                                               lat[who]["b128"])})  # fmt: skip
        mine = [r for r in res["rows"] if r["pair"] == pair]
        t_acc = next(r for r in mine if r["method"].startswith("teacher"))["accuracy_mean"]
        for r in mine:
            method = r["method"].split(" (SGLD")[0]
            if method.startswith("teacher") or method == "scratch":  # no survey row: baselines
                continue
            summary.append(summary_row(
                ref=DISTILL_REFS[method], method=f"{method}: student trained from the teacher",
                model=f"{type(student).__name__} student of {teacher.__class__.__name__}",
                data=res["meta"]["dataset"], acc_before=t_acc, acc_after=r["accuracy_mean"],
                acc_after_std=r["accuracy_std"], seeds=len(res["meta"]["seeds"]),
                params_before=tp, params_after=sp, flops_before=tm, flops_after=sm,
                latency_ms_b1=lat["student"]["b1"], latency_ms_b128=lat["student"]["b128"],
                latency_ms_b1_before=lat["teacher"]["b1"],
                latency_ms_b128_before=lat["teacher"]["b128"], command=COMMAND,
                note="accuracy from experiments.distillation.compare; acc_before is the "
                "teacher's; latency measured here on the same architectures",
            ))  # fmt: skip
    return rows, summary, raw


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="dense models only, untimed (the test)")
    ap.add_argument("--root", default=ROOT, help="where docs/results/ is read")
    ap.add_argument("--out", default=None, help="results root (default ROOT/docs/results)")
    args = ap.parse_args(argv)
    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:6.0f}s] {m}", flush=True)
    data = jc.data.load("mnist5k")
    x = data.x_test[:128]
    reps = {1: 500, 128: 100}
    out = args.out or os.path.join(ROOT, "docs", "results")
    meta = {"command": COMMAND, "smoke": args.smoke, "rounds": 5, "data": "mnist5k test images",
            "repeats": {str(k): v for k, v in reps.items()}}  # fmt: skip
    # the smoke (the test) runs the dense models only, without timing them
    models, pairs = (
        (("lenet300",), ("dense",)) if args.smoke else (("lenet300", "lenet5"), ("dense", "conv"))
    )
    p_rows, p_sum, p_raw = pruning(args.root, x, reps, log, models=models, skip=args.smoke)
    cols = ["model", "execution", "nonzeros", "ms_b1", "ms_b128", "ratio_b1", "ratio_b128"]
    md_p = write_doc(os.path.join(out, "pruning"), "inference_latency",
                     {"meta": meta, "rows": p_rows, "summary": p_sum, "latency": p_raw},
                     [("Pruned models (Han et al., 92%), CPU latency", p_rows, cols)])  # fmt: skip
    d_rows, d_sum, d_raw = distillation(args.root, x, reps, log, pairs=pairs, skip=args.smoke)
    cols = ["pair", "model", "params", "macs", "ms_b1", "ms_b128", "speedup_b1", "speedup_b128"]
    md_d = write_doc(os.path.join(out, "distillation"), "inference_latency",
                     {"meta": meta, "rows": d_rows, "summary": d_sum, "latency": d_raw},
                     [("Teachers and students, CPU latency", d_rows, cols)])  # fmt: skip
    print(md_p + "\n" + md_d)
    result = {"benchmark": "inference_latency", "machine": machine(), "pruning": p_rows,
              "distillation": d_rows, "summary": p_sum + d_sum}  # fmt: skip
    print(json.dumps({k: result[k] for k in ("benchmark", "machine")} | {"rows": p_rows + d_rows}))
    log("done")
    return result


if __name__ == "__main__":
    main()

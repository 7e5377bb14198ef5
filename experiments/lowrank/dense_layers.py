"""Low-rank dense layers on LeNet-300-100: Sainath's low-rank classifier, Denil's predicted weights.

* **Low-rank final layer** (Sainath et al., ICASSP 2013, [42]): the classifier ``Dense_2``
  (100 -> 10) as a rank-``r`` product. Table 2 factorizes ``Dense_0``; here the classifier, both
  post hoc (``jc.lowrank.svd`` on ``Dense_2`` only, fine-tuned 1 epoch) and, as Sainath et al. do,
  trained from scratch in factored form (``experiments.lowrank.models.LeNet300LowRankHead``).
  Their claim, for acoustic models with 2,220-9,300 output targets where the final layer holds a
  large share of the weights: "reduce the number of parameters of the network by 30-50%" with no
  loss in accuracy. With 10 classes the classifier is 1,010 of LeNet-300-100's 266,610
  parameters, so the saving on the whole network is necessarily tiny; what the experiment can show
  is whether a rank-``r`` classifier keeps the accuracy.
* **Predicting parameters** (Denil et al., NeurIPS 2013, [41]): the first layer's 784 x 300 kernel
  as ``D alpha``, ``D`` a fixed smooth dictionary over the 28x28 pixel grid (squared-exponential
  kernel ridge regression from ``n_alpha`` locations), only ``alpha`` (``n_alpha x 300``) learned.
  Trained from scratch as in the paper (``LeNet300Predicted``, ``jc.lowrank.PredictedDense``),
  with a random fixed dictionary as the paper's baseline, and post hoc (``jc.lowrank.predicted``:
  ``alpha`` fitted by least squares to the trained kernel, fine-tuned 1 epoch). ``n_alpha = 40``
  predicts 94.9% of the layer's weights. Claim: "in the best case we are able to predict more than
  95% of the weights of a network without any drop in accuracy".

Dense model: LeNet-300-100, 8 epochs (Adam 1e-3, batch 64); the from-scratch models train 9
epochs (the dense epochs plus the fine-tuning epoch). mnist5k; 3 seeds. The dictionary is not
counted in the stored parameters (it is rebuilt from its hyperparameters).

Run ``python -m experiments.lowrank.dense_layers [--smoke] [--seeds N] [--out DIR]`` (about 6
minutes on 2 shared cores).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import jax
import threadpoolctl

import jaxcomp as jc
from experiments.lowrank._posthoc import Runner
from experiments.lowrank._posthoc import jitted
from experiments.lowrank._posthoc import over_seeds
from experiments.lowrank._posthoc import params_of
from experiments.lowrank._posthoc import pm
from experiments.lowrank._posthoc import posthoc_row
from experiments.lowrank._posthoc import subset
from experiments.lowrank._posthoc import train_fresh
from experiments.lowrank.models import LeNet300LowRankHead
from experiments.lowrank.models import LeNet300Predicted
from experiments.lowrank.models import as_factored
from experiments.report import accuracy
from experiments.report import interleaved_latency
from experiments.report import write_doc
from jaxcomp import lowrank

COMMAND = "python -m experiments.lowrank.dense_layers"
CLAIMS = {
    "[42]": "Sainath et al.: a low-rank final layer reduces the parameters of the network by "
    "30-50% without loss of accuracy (acoustic models with 2,220-9,300 targets)",
    "[41]": "Denil et al.: more than 95% of the weights can be predicted without any drop in "
    "accuracy",
}


def dictionary_size(variables: Any) -> int:
    """Elements of the fixed dictionaries in a finalized params tree (not stored)."""
    nodes = jax.tree.leaves(variables["params"], is_leaf=lambda x: isinstance(x, lowrank.Predicted))
    return sum(int(n.dictionary.size) for n in nodes if isinstance(n, lowrank.Predicted))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="toy size, one seed (the test)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="docs/results/lowrank")
    args = ap.parse_args(argv)
    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:6.0f}s] {m}", flush=True)
    limits = threadpoolctl.threadpool_limits(1, user_api="blas")
    data = jc.data.load("mnist5k")
    epochs, head_ranks, n_alpha = 8, (2, 5), 40
    seeds, reps = list(range(args.seeds)), {1: 300, 128: 100}
    if args.smoke:
        data, epochs, head_ranks = subset(data, 128, 64), 1, (2,)
        seeds, reps = [0], {1: 2, 128: 2}
    nc = data.num_classes
    model = jc.models.get("lenet300", num_classes=nc)
    run = Runner(model)
    scratch_models = {
        **{f"[42] scratch r={r}": LeNet300LowRankHead(num_classes=nc, rank=r) for r in head_ranks},
        f"[41] scratch smooth n_alpha={n_alpha}": LeNet300Predicted(num_classes=nc, rank=n_alpha),
        f"[41] scratch random n_alpha={n_alpha}": LeNet300Predicted(
            num_classes=nc, rank=n_alpha, kind="random"),
    }  # fmt: skip
    if args.smoke:
        scratch_models = {k: v for k, v in scratch_models.items() if "smooth" not in k}
    posthoc = {
        **{f"[42] post hoc svd r={r}": (lambda r=r: lowrank.svd(
            rank=r, where=[("^Dense_2/kernel$", True)])) for r in head_ranks},
        f"[41] post hoc smooth n_alpha={n_alpha}": lambda: lowrank.predicted(
            rank=n_alpha, grid=(28, 28), where=[("^Dense_0/kernel$", True)]),
    }  # fmt: skip
    if args.smoke:  # one post-hoc and one from-scratch model (the test)
        posthoc = {k: v for k, v in posthoc.items() if k.startswith("[42]")}
    scratch_fns = {n: jitted(m) for n, m in scratch_models.items()}
    dense_accs: list[float] = []
    accs: dict[str, list[float]] = {n: [] for n in [*posthoc, *scratch_models]}
    befores: dict[str, list[float]] = {n: [] for n in posthoc}
    fins: dict[str, Any] = {}
    transforms = {n: make() for n, make in posthoc.items()}  # one per method, for every seed
    for seed in seeds:
        variables, acc = train_fresh(model, data, epochs=epochs, seed=seed)
        dense_accs.append(acc)
        log(f"seed {seed}: dense {acc:.4f}")
        if seed == seeds[0]:
            fins["dense"] = variables
        for name, t in transforms.items():
            r = run.rewrite(variables, t, data, epochs=1, lr=5e-4, batch=64, seed=seed)
            accs[name].append(r.after)
            befores[name].append(r.before)
            log(f"seed {seed}: {name} {r.before:.4f} -> {r.after:.4f}")
            if seed == seeds[0]:
                fins[name] = r.variables
        for name, m in scratch_models.items():
            v2, _ = train_fresh(m, data, epochs=epochs + 1, seed=seed)
            accs[name].append(accuracy(scratch_fns[name], v2, data.x_test, data.y_test))
            log(f"seed {seed}: {name} {accs[name][-1]:.4f}")
            if seed == seeds[0]:
                fins[name] = v2
    x1 = data.x_test[:1]
    dense_vars = fins["dense"]

    def fn_of(name):
        if name == "dense":
            return run.dense
        return run.fast if name in posthoc else scratch_fns[name]

    lat = interleaved_latency({n: (fn_of(n), v) for n, v in fins.items()}, data.x_test,
                              repeats=reps, skip=args.smoke)  # fmt: skip
    log(f"latency: {lat}")
    macs_dense = run.macs(dense_vars, x1, factored=False)
    dense = over_seeds(dense_accs)
    p_dense = params_of(dense_vars)
    rows = [{"method": "dense", "acc_before_ft": "", "accuracy": pm(dense), "params": p_dense,
             "layer_params": "", "model_macs": macs_dense, "ms_b1": lat["dense"]["b1"],
             "ms_b128": lat["dense"]["b128"]}]  # fmt: skip
    summary = []
    for name in accs:
        fin = fins[name]
        ref = name.split()[0]
        if name in posthoc:
            macs = run.macs(fin, x1, factored=True)
            stored = params_of(fin) - dictionary_size(fin)
            layer_fin = fin["params"]["Dense_2" if ref == "[42]" else "Dense_0"]["kernel"]
            layer_params = sum(int(a.size) for a in layer_fin
                               if not (ref == "[41]" and a is layer_fin.dictionary))  # fmt: skip
        else:
            macs = int(jc.analysis.flops(scratch_fns[name], fin, x1))
            stored = params_of(fin)
            p = fin["params"]
            layer_params = (p["Dense_2_u"]["kernel"].size + p["Dense_2"]["kernel"].size
                            if ref == "[42]" else p["Dense_0"]["alpha"].size)  # fmt: skip
            if ref == "[42]":
                fin = {"params": as_factored(p)}  # the LeNet-300-100 params with a LowRank head
        acc = over_seeds(accs[name])
        rows.append({
            "method": name, "acc_before_ft": pm(over_seeds(befores[name])) if name in befores
            else "", "accuracy": pm(acc), "params": stored, "layer_params": int(layer_params),
            "model_macs": macs, "ms_b1": lat[name]["b1"], "ms_b128": lat[name]["b128"],
        })  # fmt: skip
        dense_layer = 100 * nc + nc if ref == "[42]" else 784 * 300
        summary.append(posthoc_row(
            ref=ref, method=name.split(" ", 1)[1] + (" (final layer)" if ref == "[42]"
                                                     else " (first layer)"),
            model="lenet300", data=data.name, dense=dense, after=acc, seeds=seeds,
            params_before=p_dense, params_after=stored, bytes=4 * stored, macs_dense=macs_dense,
            macs=macs, lat=lat, name=name, command=COMMAND,
            note=f"claim: {CLAIMS[ref]}; measured: accuracy {acc['mean'] - dense['mean']:+.4f} "
            f"vs dense; the layer keeps {layer_params / dense_layer:.1%} of its weights, the "
            f"network {stored / p_dense:.1%}",
        ))  # fmt: skip
    meta = {"dataset": data.name, "seeds": seeds, "epochs": epochs, "ft_epochs": 1,
            "scratch_epochs": epochs + 1, "claims": CLAIMS, "smoke": args.smoke,
            "command": COMMAND, "per_seed": {"dense": dense_accs, **accs},
            "seconds": round(time.time() - t0, 1)}  # fmt: skip
    cols = ["method", "acc_before_ft", "accuracy", "params", "layer_params", "model_macs",
            "ms_b1", "ms_b128"]  # fmt: skip
    md = write_doc(args.out, "dense_layers", {"meta": meta, "rows": rows, "summary": summary},
                   [("Low-rank dense layers on LeNet-300-100, mnist5k", rows, cols)])  # fmt: skip
    print(md)
    limits.restore_original_limits()
    log("done")
    return {"rows": rows, "summary": summary, "meta": meta}


if __name__ == "__main__":
    main()

"""Denton et al.'s monochromatic and biclustered approximations on LeNet-5, over seeds.

Denton et al. (NeurIPS 2014, arXiv:1404.0736) approximate the first convolution, whose input has
three colors, by its *monochromatic* approximation (each filter a spatial filter times one of
``C'`` shared colors; ``jc.lowrank.monochromatic``) and the second by *biclustering* (input and
output channels clustered into ``G`` and ``H`` groups, each block at rank ``K``;
``jc.lowrank.bicluster``), then fine-tune. The survey sums it up: "2x speedup for a single
convolutional layer with 1% drop in classification accuracy".

MNIST has one channel, where the monochromatic approximation is exact and saves nothing. So the
images are *colored* here: every image of mnist5k gets a random foreground and background color
(``colorize``; the colors carry no label information), which gives the first layer a
3-channel input as in Denton's setting. LeNet-5 (``Conv_0`` 5x5 3->20, ``Conv_1`` 5x5 20->50) is
trained on it (4 epochs, Adam 1e-3, batch 64) for each seed; then on each trained model

* ``monochromatic``: ``Conv_0`` with ``C' = 4`` colors;
* ``bicluster``: ``Conv_1`` with ``G = 4`` input groups, ``H = 5`` output groups, rank ``K = 4``;

each evaluated right after the rewrite, fine-tuned 1 epoch (Adam 5e-4) through the rebuilt kernels,
then evaluated through ``run_factorized`` (the factors). MACs of the layer and of the model
(``jc.analysis.flops``), parameters, and CPU latency of the whole model at batch 1 and 128 (dense
and rewritten, interleaved, seed 0's models) are reported.

Run ``python -m experiments.lowrank.denton [--smoke] [--seeds N] [--out DIR]`` (about 5 minutes on
2 shared cores; ``--smoke``: toy size, one seed).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import threadpoolctl

import jaxcomp as jc
from experiments.lowrank._posthoc import Runner
from experiments.lowrank._posthoc import over_seeds
from experiments.lowrank._posthoc import params_of
from experiments.lowrank._posthoc import pm
from experiments.lowrank._posthoc import posthoc_row
from experiments.lowrank._posthoc import subset
from experiments.lowrank._posthoc import train_fresh
from experiments.report import interleaved_latency
from experiments.report import write_doc
from jaxcomp import lowrank

COMMAND = "python -m experiments.lowrank.denton"
KEY = jax.random.key(0)
CLAIMS = {
    "monochromatic": "Denton et al.: the first layer's monochromatic approximation, fine-tuned, "
    "speeds that layer up about 2x within 1% accuracy (survey: '2x speedup for a single "
    "convolutional layer with 1% drop')",
    "bicluster": "Denton et al.: biclustering + low rank on the second layer, fine-tuned, "
    "about 2x on that layer within 1% accuracy",
}
LAYER = {"monochromatic": "Conv_0", "bicluster": "Conv_1"}


def colorize(x: np.ndarray, seed: int) -> np.ndarray:
    """Gray images in [0, 1] as RGB: a random foreground color where the digit is, a random
    darker background color elsewhere, one pair of colors per image (label-free)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    fg = rng.uniform(0.4, 1.0, (n, 1, 1, 3)).astype(np.float32)
    bg = rng.uniform(0.0, 0.4, (n, 1, 1, 3)).astype(np.float32)
    return x * fg + (1.0 - x) * bg


def colored_mnist(data: jc.data.Dataset) -> jc.data.Dataset:
    return data.replace(x_train=colorize(data.x_train, 0), x_test=colorize(data.x_test, 1),
                        name=f"{data.name} (colored)")  # fmt: skip


def methods(smoke: bool) -> dict[str, Any]:
    """name -> transform factory (a fresh transform per seed)."""
    out = {
        "monochromatic": lambda: lowrank.monochromatic(
            colors=4, key=KEY, where=[("^Conv_0/kernel$", True)]),
        "bicluster": lambda: lowrank.bicluster(
            groups_in=4, groups_out=5, rank=4, key=KEY, where=[("^Conv_1/kernel$", True)]),
    }  # fmt: skip
    return {k: v for k, v in out.items() if not smoke or k == "bicluster"}


def layer_macs(variables: Any, layer: str, out_hw: tuple[int, int]) -> int:
    """MACs of one dense convolution layer for one image."""
    kh, kw, c, f = variables["params"][layer]["kernel"].shape
    return out_hw[0] * out_hw[1] * kh * kw * c * f


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="toy size, one seed (the test)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="docs/results/lowrank")
    args = ap.parse_args(argv)
    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:6.0f}s] {m}", flush=True)
    limits = threadpoolctl.threadpool_limits(1, user_api="blas")
    data = colored_mnist(jc.data.load("mnist5k"))
    epochs, ft_epochs, seeds, reps = 4, 1, list(range(args.seeds)), {1: 200, 128: 30}
    if args.smoke:
        data, epochs, seeds, reps = subset(data, 128, 64), 1, [0], {1: 2, 128: 2}
    model = jc.models.get("lenet5", num_classes=data.num_classes)
    run = Runner(model)
    x1 = data.x_test[:1]
    transforms = {n: make() for n, make in methods(args.smoke).items()}  # one per method
    dense_accs, res, fins = [], {m: [] for m in transforms}, {}
    for seed in seeds:
        variables, acc = train_fresh(model, data, epochs=epochs, seed=seed)
        dense_accs.append(acc)
        log(f"seed {seed}: dense {acc:.4f}")
        for name, t in transforms.items():
            r = run.rewrite(variables, t, data, epochs=ft_epochs, lr=5e-4, batch=64,
                            seed=seed)  # fmt: skip
            res[name].append(r)
            log(f"seed {seed}: {name} before ft {r.before:.4f}, after {r.after:.4f}")
            if seed == seeds[0]:
                fins[name] = r.variables
        if seed == seeds[0]:
            dense_vars = variables
    dense = over_seeds(dense_accs)
    macs_dense = run.macs(dense_vars, x1, factored=False)
    lat = interleaved_latency(
        {"dense": (run.dense, dense_vars), **{n: (run.fast, v) for n, v in fins.items()}},
        data.x_test, repeats=reps, skip=args.smoke,
    )  # fmt: skip
    log(f"latency: {lat}")
    out_hw = {"Conv_0": (24, 24), "Conv_1": (8, 8)}
    rows = [{"method": "dense", "layer": "", "acc_before_ft": "", "accuracy": pm(dense),
             "params": params_of(dense_vars), "model_macs": macs_dense, "layer_speedup": 1.0,
             "ms_b1": lat["dense"]["b1"], "ms_b128": lat["dense"]["b128"]}]  # fmt: skip
    summary = []
    for name, rs in res.items():
        fin = fins[name]
        macs = run.macs(fin, x1, factored=True)
        lm = layer_macs(dense_vars, LAYER[name], out_hw[LAYER[name]])
        layer_speedup = lm / (lm - (macs_dense - macs))
        before, after = over_seeds([r.before for r in rs]), over_seeds([r.after for r in rs])
        rows.append({
            "method": name, "layer": LAYER[name], "acc_before_ft": pm(before),
            "accuracy": pm(after), "params": params_of(fin), "model_macs": macs,
            "layer_speedup": layer_speedup, "ms_b1": lat[name]["b1"],
            "ms_b128": lat[name]["b128"],
        })  # fmt: skip
        cfg = {"monochromatic": "C'=4 colors", "bicluster": "G=4, H=5, K=4"}[name]
        summary.append(posthoc_row(
            ref="[37]", method=f"Denton {name} ({LAYER[name]}, {cfg}), fine-tuned 1 epoch",
            model="lenet5", data=data.name, dense=dense, after=after, seeds=seeds,
            dense_vars=dense_vars, fin=fin, macs_dense=macs_dense, macs=macs, lat=lat, name=name,
            command=COMMAND,
            note=f"claim: {CLAIMS[name]}; measured: layer MACs {layer_speedup:.2f}x fewer, "
            f"accuracy {after['mean'] - dense['mean']:+.4f} vs dense",
        ))  # fmt: skip
    meta = {"dataset": data.name, "seeds": seeds, "epochs": epochs, "ft_epochs": ft_epochs,
            "claims": CLAIMS, "smoke": args.smoke, "command": COMMAND,
            "per_seed": {"dense": dense_accs,
                         **{n: {"before": [r.before for r in rs], "after": [r.after for r in rs]}
                            for n, rs in res.items()}},
            "seconds": round(time.time() - t0, 1)}  # fmt: skip
    cols = ["method", "layer", "acc_before_ft", "accuracy", "params", "model_macs",
            "layer_speedup", "ms_b1", "ms_b128"]  # fmt: skip
    md = write_doc(args.out, "denton", {"meta": meta, "rows": rows, "summary": summary},
                   [("Denton et al. on LeNet-5, colored mnist5k", rows, cols)])  # fmt: skip
    print(md)
    limits.restore_original_limits()
    log("done")
    return {"rows": rows, "summary": summary, "meta": meta}


if __name__ == "__main__":
    main()

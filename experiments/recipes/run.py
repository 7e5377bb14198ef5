"""The recipes compared on one model: the targets table of docs/recipes.md.

Each seed trains one dense model (``jaxcomp train``) and runs every recipe from it with
``jaxcomp compress --recipe NAME --init DENSE --seed S`` (the shipped recipe files, unchanged), then
``jaxcomp compare`` sets the first seed's runs side by side, and the dense model and the first
seed's artifacts are timed together (one interleaved measurement, so that the load of a shared
machine falls on all of them alike). The folders under ``--runs`` are kept
and reused: an interrupted experiment run again continues where it stopped.

python -m experiments.recipes.run                          # LeNet-5 on mnist5k, 3 seeds
python -m experiments.recipes.run --model vgg_small --recipes lowrank-prune-quant-kd --seeds 0 \\
    --dense-epochs 10
python -m experiments.recipes.run --smoke --out /tmp/recipes-smoke   # toy size (the test suite)

``--smoke`` runs every step of the script once at toy size: LeNet-300-100 on the 8x8 digits,
two seeds of ``deep-compression`` (the spread across seeds), one epoch of dense training and of
each stage that trains, two timed calls a model; its runs go under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from experiments.common import machine
from experiments.common import markdown_table
from jaxcomp import cli
from jaxcomp import recipes

RECIPES = "lowrank,deep-compression,lowrank-prune-quant-kd,w8a8-kd,structured"
SPREAD = "lowrank,deep-compression,lowrank-prune-quant-kd"


def _run(args: list[str], out: str) -> dict[str, Any]:
    if not os.path.isfile(os.path.join(out, "report.json")):
        resume = ["--resume"] if os.path.isfile(os.path.join(out, "recipe.json")) else []
        t0 = time.perf_counter()
        assert cli.main([*args, "--out", out, "--no-progress", *resume]) == 0
        print(f"{out}: {time.perf_counter() - t0:.0f} s", flush=True)
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        return json.load(f)


def _latency_together(dense_dir: str, dirs: dict[str, str], data: Any, repeats: int):
    """The dense model and every run's artifact (run the fast way), timed in one interleaved
    measurement at batch 1 and 128: median ms and ratio to the dense model."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcomp import analysis
    from jaxcomp import models

    fns: dict[str, Any] = {}
    for name, d in dirs.items():
        tree, meta = recipes.read_artifact(os.path.join(d, "model.jcz"))
        model = models.get(meta["model"], num_classes=meta["num_classes"])
        shape = tuple(meta["input_shape"])
        if not fns:
            template = models.init(model, jax.random.key(0), shape)
            dense = recipes.restore(model.apply, template, dense_dir)
            fns["dense"] = lambda x, v=dense, f=model.apply: f(v, x)
        fast, fv = recipes.deploy(model.apply, tree, shape, activations=meta.get("activations"))
        fns[name] = lambda x, f=fast, v=fv: f(v, x)
    out: dict[str, dict[str, float]] = {n: {} for n in fns}
    for b in (1, 128):
        xb = jnp.asarray(np.resize(data.x_test, (b, *data.x_test.shape[1:])))
        t = analysis.compare_latency(fns, xb, repeats=repeats, warmup=3, rounds=20)
        for n, v in t.items():
            out[n][f"batch_{b}_ms"] = 1e3 * v["median_s"]
            out[n][f"batch_{b}_vs_dense"] = v["ratio"]
            out[n][f"batch_{b}_min_vs_dense"] = v["ratio_of_min"]
    return out


def _ms(vals: list[float]) -> str:
    if len(vals) == 1:
        return f"{vals[0]:.4f}"
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--recipes", default=RECIPES)
    ap.add_argument("--spread", default=SPREAD, help="recipes run with every seed")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--dense-epochs", type=int, default=20)
    ap.add_argument(
        "--budget",
        action="append",
        default=[],
        help="RECIPE:METRIC=N, one more run of RECIPE (first seed) with --budget",
    )
    ap.add_argument(
        "--latency-repeats",
        type=int,
        default=200,
        help="timed calls of each model in the interleaved latency measurement",
    )
    ap.add_argument("--runs", default=None, help="default: runs/recipes (--smoke: OUT/runs)")
    ap.add_argument("--out", default=None,
                    help="default: docs/results/recipes (--smoke: runs/recipes-smoke)")  # fmt: skip
    ap.add_argument("--smoke", action="store_true", help="toy size (see above)")
    args = ap.parse_args(argv)
    extra: list[str] = []  # flags of every compress run
    if args.smoke:
        args.model, args.data, args.seeds, args.dense_epochs = "lenet300", "digits", "0,1", 1
        args.recipes = args.spread = "deep-compression"
        args.latency_repeats = 2
        args.out = args.out or "runs/recipes-smoke"
        extra = ["--prune-epochs", "1", "--retrain-epochs", "0", "--quant-epochs", "1"]
    args.out = args.out or "docs/results/recipes"
    args.runs = args.runs or (os.path.join(args.out, "runs") if args.smoke else "runs/recipes")
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.recipes.split(",")
    spread = set(args.spread.split(","))
    reports: dict[str, dict[int, dict[str, Any]]] = {n: {} for n in names}
    dirs: dict[str, str] = {}
    dense_acc = {}
    for seed in seeds:
        dense = os.path.join(args.runs, f"dense-{args.model}-s{seed}")
        if not os.path.isfile(os.path.join(dense, "report.json")):
            assert cli.main(["train", "--model", args.model, "--data", args.data, "--epochs",
                             str(args.dense_epochs), "--seed", str(seed), "--out", dense,
                             "--no-progress"]) == 0  # fmt: skip
        with open(os.path.join(dense, "report.json"), encoding="utf-8") as f:
            dense_acc[seed] = json.load(f)["test_accuracy"]
        for name in names:
            if seed != seeds[0] and name not in spread:
                continue
            out = os.path.join(args.runs, f"{name}-{args.model}-s{seed}")
            reports[name][seed] = _run(["compress", "--recipe", name, "--model", args.model,
                                        "--data", args.data, "--init", dense, "--seed",
                                        str(seed), *extra], out)  # fmt: skip
            if seed == seeds[0]:
                dirs[name] = out
    for spec in args.budget:
        name, _, budget = spec.partition(":")
        metric = budget.split("=")[0].replace("@", "_at_")
        out = os.path.join(args.runs, f"{name}-{args.model}-{metric}-s{seeds[0]}")
        dense = os.path.join(args.runs, f"dense-{args.model}-s{seeds[0]}")
        key = f"{name} --budget {budget}"
        reports[key] = {seeds[0]: _run(["compress", "--recipe", name, "--model", args.model,
                                        "--data", args.data, "--init", dense, "--seed",
                                        str(seeds[0]), "--budget", budget, *extra],
                                       out)}  # fmt: skip
        dirs[key] = out
    rows = []
    for name, by_seed in reports.items():
        rs = [by_seed[s] for s in sorted(by_seed)]
        first = rs[0]
        b = first.get("budget")
        rows.append({
            "recipe": name,
            "seeds": len(rs),
            "dense accuracy": _ms([r["baseline_accuracy"] for r in rs]),
            "accuracy": _ms([r["final_accuracy"] for r in rs]),
            "change (pp)": _ms([r["accuracy_change_pp"] for r in rs]),
            "worst change (pp)": min(r["accuracy_change_pp"] for r in rs),
            ".jcz bytes": " / ".join(f"{r['compressed_bytes']:,}" for r in rs),
            "ratio": statistics.mean(r["compression_ratio"] for r in rs),
            "MACs": first["flops"],
            "budget": "" if not b else f"{b['metric']} <= {b['value']:g}: "
                      f"{'met' if b['met'] else 'not met'} ({b['measured']:,.4g})",
        })  # fmt: skip
    with open(os.path.join(args.runs, f"dense-{args.model}-s{seeds[0]}", "report.json"),
              encoding="utf-8") as f:  # fmt: skip
        dense_report = json.load(f)
    accs = [dense_acc[s] for s in seeds]
    rows.insert(0, {"recipe": "dense", "seeds": len(seeds), "dense accuracy": _ms(accs),
                    "accuracy": _ms(accs), ".jcz bytes": f"{4 * dense_report['params']:,} "
                    "(float32)", "ratio": 1.0, "MACs": dense_report["flops"]})  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    data = __import__("jaxcomp").data.load(args.data)
    together = _latency_together(os.path.join(args.runs, f"dense-{args.model}-s{seeds[0]}"),
                                 dirs, data, args.latency_repeats)  # fmt: skip
    for row in rows:
        t = together[row["recipe"] if row["recipe"] in together else "dense"]
        row["ms b1 together"] = t["batch_1_ms"]
        row["ms b128 together"] = t["batch_128_ms"]
        row["speed-up b1"] = 1 / t["batch_1_vs_dense"]
        row["speed-up b128"] = 1 / t["batch_128_vs_dense"]
        row["speed-up b128 (fastest calls)"] = 1 / t["batch_128_min_vs_dense"]
    cmp_rows = recipes.compare([dirs[n] for n in dirs])
    for r, n in zip(cmp_rows, dirs, strict=True):
        r["run"] = n
    recipes.plot_compare(cmp_rows, os.path.join(args.out, "compare.png"))
    cols = list(rows[1]) + [c for c in rows[0] if c not in rows[1]]
    payload = {"model": args.model, "data": args.data, "seeds": seeds, "machine": machine(),
               "dense_accuracy": dense_acc, "rows": rows, "compare": cmp_rows,
               "latency_together": together,
               "reports": {n: {str(s): {k: r[k] for k in ("baseline_accuracy", "final_accuracy",
                                                          "compressed_bytes", "flops",
                                                          "latency_ms", "stages", "layers",
                                                          "bytes", "budget", "wall_s")}
                               for s, r in by.items()} for n, by in reports.items()}}  # fmt: skip
    name = f"targets_{args.model}"
    with open(os.path.join(args.out, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    md = [f"# Recipes on {args.model} / {args.data}", "",
          f"`python -m experiments.recipes.run --model {args.model} --seeds {args.seeds}` on "
          f"{payload['machine']['cpu']} ({payload['machine']['cores']} cores, "
          f"{payload['machine']['backend']}), jax {payload['machine']['jax']}.", "",
          markdown_table(rows, cols), "", "## jaxcomp compare (first seed)", "",
          recipes.compare_markdown(cmp_rows)]  # fmt: skip
    with open(os.path.join(args.out, f"{name}.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    print("\n".join(md))
    return rows


if __name__ == "__main__":
    main()

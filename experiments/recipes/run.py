"""The recipes compared on one model: the targets table of docs/recipes.md.

Each seed trains one dense model (``jaxcomp train``) and runs every recipe from it with
``jaxcomp compress --recipe NAME --init DENSE --seed S`` (the shipped recipe files, unchanged), then
``jaxcomp compare`` sets the first seed's runs side by side. The folders under ``--runs`` are kept
and reused: an interrupted experiment run again continues where it stopped.

python -m experiments.recipes.run                          # LeNet-5 on mnist5k, 3 seeds
python -m experiments.recipes.run --model vgg_small --recipes lowrank-prune-quant-kd --seeds 0 \\
    --dense-epochs 10
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
    ap.add_argument("--runs", default="runs/recipes")
    ap.add_argument("--out", default="docs/results/recipes")
    args = ap.parse_args(argv)
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
                                        str(seed)], out)  # fmt: skip
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
                                        str(seeds[0]), "--budget", budget], out)}  # fmt: skip
        dirs[key] = out
    rows = []
    for name, by_seed in reports.items():
        rs = [by_seed[s] for s in sorted(by_seed)]
        first = rs[0]
        lat = first["latency_ms"]
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
            "ms b1 (dense)": f"{lat['batch_1']['compressed']:.3f} ({lat['batch_1']['dense']:.3f})",
            "ms b128 (dense)": f"{lat['batch_128']['compressed']:.2f} "
                               f"({lat['batch_128']['dense']:.2f})",
            "speed-up b128": first["measured_speedup"],
            "budget": "" if not b else f"{b['metric']} <= {b['value']:g}: "
                      f"{'met' if b['met'] else 'not met'} ({b['measured']:,.4g})",
        })  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    cmp_rows = recipes.compare([dirs[n] for n in dirs])
    for r, n in zip(cmp_rows, dirs, strict=True):
        r["run"] = n
    recipes.plot_compare(cmp_rows, os.path.join(args.out, "compare.png"))
    cols = list(rows[0])
    payload = {"model": args.model, "data": args.data, "seeds": seeds, "machine": machine(),
               "dense_accuracy": dense_acc, "rows": rows, "compare": cmp_rows,
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

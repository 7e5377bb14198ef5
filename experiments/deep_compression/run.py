"""Deep Compression of LeNet-300-100 and LeNet-5 on mnist5k: the table of docs/deep_compression.md.

The pipeline is the shipped recipe ``deep-compression`` (jaxcomp/recipes/shipped/deep-compression/),
run by ``jaxcomp.recipes.run``; ``jaxcomp compress --recipe deep-compression --model NAME`` is the
same run.

python -m experiments.deep_compression.run            # full run, writes docs/results/...
python -m experiments.deep_compression.run --smoke    # toy size (the test suite runs this)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jaxcomp as jc
from experiments.common import write_results
from jaxcomp import recipes

_OLD_NAMES = {"dense": "dense", "finetune": "pruned", "encode": "quantized+coded"}
"""details.json keeps the three stages of the paper (experiments/summary.py reads them)."""


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="toy size: digits, one epoch a stage")
    ap.add_argument("--out", default="docs/results/deep_compression")
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--coder", default="huffman", choices=["huffman", "ans"])
    args = ap.parse_args(argv)
    rows, details = [], {}
    for name in args.models.split(","):
        # the shipped recipe file jaxcomp/recipes/shipped/deep-compression/NAME.toml
        rec = recipes.load_recipe("deep-compression", model=name)
        changes = {f"stages.{rec.stages[-1].index}.coder": args.coder}
        if args.smoke:
            data = jc.data.load("digits")
            changes.update({"training.epochs": 1, "stages.1.epochs": 1, "stages.2.epochs": 0,
                            "stages.3.epochs": 1, "measure.latency_repeats": 1})  # fmt: skip
            if name == "lenet5":
                continue  # 8x8 digits are too small for LeNet-5's valid convolutions
        else:
            data = jc.data.load("mnist5k")
        t0 = time.perf_counter()
        res = recipes.run(rec.replace(changes), data=data, progress=False, log=print)
        r = res.report
        rows.append({
            "model": name,
            "dense accuracy": r["baseline_accuracy"],
            "final accuracy": r["final_accuracy"],
            "change (pp)": r["accuracy_change_pp"],
            "dense bytes": r["dense_bytes"],
            "jcz bytes": r["compressed_bytes"],
            "ratio": r["compression_ratio"],
            "seconds": round(time.perf_counter() - t0, 1),
        })  # fmt: skip
        stages = [{**s, "stage": _OLD_NAMES[s["type"]]} for s in r["stages"]
                  if s["type"] in _OLD_NAMES]  # fmt: skip
        details[name] = {"stages": stages, "layers": r["layers"], "bytes": r["bytes"]}
        if not args.smoke:
            os.makedirs("docs/img", exist_ok=True)
            recipes.plot_stages(stages, f"docs/img/deep_compression_{name}_stages.png")
            recipes.plot_layers(r["layers"], f"docs/img/deep_compression_{name}_layers.png")
    cols = ["model", "dense accuracy", "final accuracy", "change (pp)", "dense bytes",
            "jcz bytes", "ratio", "seconds"]  # fmt: skip
    print(write_results(args.out, "summary", rows, cols, meta={"coder": args.coder}))
    with open(os.path.join(args.out, "details.json"), "w", encoding="utf-8") as f:
        json.dump(details, f, indent=2)
    return rows


if __name__ == "__main__":
    main()

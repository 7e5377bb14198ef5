"""Deep Compression of LeNet-300-100 and LeNet-5 on mnist5k: the table of docs/deep_compression.md.

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


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="toy size: digits, one epoch a stage")
    ap.add_argument("--out", default="docs/results/deep_compression")
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--coder", default="huffman", choices=["huffman", "ans"])
    args = ap.parse_args(argv)
    rows, details = [], {}
    for name in args.models.split(","):
        cfg = recipes.PRESETS[name].replace(coder=args.coder)
        if args.smoke:
            data = jc.data.load("digits")
            cfg = cfg.replace(dense_epochs=1, prune_epochs=1, retrain_epochs=0, quant_epochs=1)
            if name == "lenet5":
                continue  # 8x8 digits are too small for LeNet-5's valid convolutions
        else:
            data = jc.data.load("mnist5k")
        model = jc.models.get(name, num_classes=data.num_classes)
        t0 = time.perf_counter()
        res = recipes.deep_compression(model, data, cfg, progress=False, log=print)
        variables, _ = recipes.load_artifact(res.artifact)
        layers = recipes.layer_rows(res.report, variables["params"])
        rows.append({
            "model": name,
            "dense accuracy": res.baseline_accuracy,
            "final accuracy": res.final_accuracy,
            "change (pp)": 100 * (res.final_accuracy - res.baseline_accuracy),
            "dense bytes": res.report["dense_bytes"],
            "jcz bytes": res.report["file_bytes"],
            "ratio": res.report["compression_ratio"],
            "seconds": round(time.perf_counter() - t0, 1),
        })  # fmt: skip
        details[name] = {"stages": res.stages, "layers": layers, "bytes": res.report["bytes"]}
        if not args.smoke:
            os.makedirs("docs/img", exist_ok=True)
            recipes.plot_stages(res.stages, f"docs/img/deep_compression_{name}_stages.png")
            recipes.plot_layers(layers, f"docs/img/deep_compression_{name}_layers.png")
    cols = ["model", "dense accuracy", "final accuracy", "change (pp)", "dense bytes",
            "jcz bytes", "ratio", "seconds"]  # fmt: skip
    print(write_results(args.out, "summary", rows, cols, meta={"coder": args.coder}))
    with open(os.path.join(args.out, "details.json"), "w", encoding="utf-8") as f:
        json.dump(details, f, indent=2)
    return rows


if __name__ == "__main__":
    main()

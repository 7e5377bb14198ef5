"""Efficient architectures on real MNIST: accuracy, parameters, mult-adds and CPU latency.

The survey (Yi et al., "Neural Network Compression and Acceleration: An Overview", 2018) presents
the building blocks of its section 2, 1x1 "mlpconv" layers and global average pooling (NIN [8]),
fire modules (SqueezeNet [9]), depthwise separable convolutions (MobileNet [6]) and pointwise group
convolutions with a channel shuffle (ShuffleNet [7]), as the way to "a model with fewer parameters
with a better performance" (its section 7.1, rule 1), while its section 7.3.1 warns that MobileNet
and ShuffleNet "are not accurate as larger one". This script trains small variants of the four and
a plain baseline, on the same data with the same budget, and measures what they cost.

Data: mnist5k (4,000 train / 1,000 test real MNIST images, 28x28x1), zero-padded to 32x32x1
(``jc.data.pad_to``), then standardized with the training split's mean and standard deviation
(``jc.data.normalize``); ``--data tfds:cifar10`` (32x32x3, prepared on disk, never downloaded)
runs the same models on CIFAR-10. The models read one channel (or three), 10 classes.

Models (``jc.models.get(name, **kw)``, the ImageNet networks at their own strides: the registry's
attributes choose widths and depths, not strides, so a 32x32 input ends on a small map):

* ``vgg_small`` (baseline: plain 3x3 convolutions, batch norm, global average pooling),
  ``widths=(16, 32, 64)``, two convolutions per stage: 32 -> 16 -> 8 -> 4, last map 4x4;
* ``mobilenet_v1``, ``alpha=0.25`` (every layer a quarter of the paper's channels: stem 8, then
  16 ... 256) and ``repeats=1`` (one of the five 512-channel layers, here 128): stem stride 2 and
  four stride-2 layers, 32 -> 16 -> 8 -> 4 -> 2 -> 1, last map 1x1;
* ``shufflenet_v1_g3``, ``widths=(60, 120)``, ``stem=12``, ``repeats=(2, 4)``: the paper's 0.25x
  widths for ``g = 3`` (60, 120, 240 after a 12-channel stem, half of 24) and half its units
  (4, 8, 4), without the third stage, which at 32x32 would work on a 1x1 map: stem stride 2 and
  max pooling, 32 -> 16 -> 8, then 4 and 2, last map 2x2;
* ``squeezenet1_1``, ``stem=16``, ``base_e=32``, ``incr_e=32``, ``squeeze_ratio=0.25``
  (expand 32 ... 128 channels instead of 128 ... 512, squeeze a quarter of them instead of an
  eighth, so the narrowest squeeze keeps 8), ``dropout=0``: unpadded 3x3/2 stem and three 3x3/2
  poolings, 32 -> 15 -> 7 -> 3 -> 1, the last four fire modules on a 1x1 map;
* ``nin``, ``widths=((32, 32, 16), (32, 32, 32), (32, 32))`` (a sixth of the released CIFAR-10
  model's 192, 160, 96), ``dropout=0``: 32 -> 16 -> 8, last map 8x8.

Dropout is off in NIN and SqueezeNet (0.5 in their papers) because no other model has any and the
budget is 4 epochs, far from where it regularizes.

Training, the same for every model and seed: Adam with a warm-up cosine schedule (peak 3e-3, 10%
of the steps of linear warm-up, decay to 0), batch 64, 250 steps (4 epochs), weights drawn with
numpy (``experiments.structured.run.init_variables``: He-normal convolutions, LeCun-normal dense
layers; the seed draws them and the batch order), no augmentation. Accuracy is on the 1,000 test
images (mean and standard deviation over the seeds), batch norm on its running averages; the
training accuracy (the same evaluation on the first 1,000 training images) shows each model's
generalization gap. Nothing is tuned on the test split (the schedule was chosen once, on the
training loss of short trial runs, and is shared).

Counts: parameters of the ``params`` collection (``jc.analysis.param_count``) and mult-adds of
one 32x32 image (``jc.analysis.flops``: the multiply-accumulates of convolutions, depthwise and
grouped ones included, and dense layers). Latency: the jitted inference forward pass (running
batch-norm statistics, seed 0's trained weights closed over) of all five models, timed
interleaved in one process by ``jc.analysis.compare_latency`` (blocks of calls of each model in
turn, median of the repeats), at batch 1 and at batch 128, on the CPU that ran the training; the
machine (CPU model, ISA features, cores) is recorded. Throughput is mult-adds per second at batch
128, which shows how well each kind of layer uses the CPU.

Budget: 13 minutes on 2 CPU cores that other processes kept at a load average of about 7
(``--seeds 3`` for a third seed). Writes ``docs/results/architectures_efficient.json`` and
``.md`` and prints the JSON.

Run: ``python -m experiments.architectures.efficient [--smoke] [--data mnist5k|tfds:cifar10]
[--data-dir DIR] [--out DIR] [--seeds N]`` (``--smoke``: the baseline and ShuffleNet at toy
widths, 256 training and 256 test images, 3 steps, for the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcomp as jc
from experiments.common import EVAL_STEP
from experiments.common import machine
from experiments.common import markdown_table
from experiments.structured.run import init_variables

SIZE = 32  # images are zero-padded to SIZE x SIZE
BATCH = 64
CLOSE_PP = 1.0  # "close accuracy": at most this many points below the baseline's test accuracy
STEPS = 250
LR = 3e-3
WARMUP = 0.1  # share of the steps of linear warm-up
SEEDS = (0, 1)
TRAIN_EVAL = 1000  # training images whose accuracy shows the generalization gap
REPEATS = {1: 100, 128: 15}  # timed calls of each model per batch size
ROUNDS = 5

CONFIGS: dict[str, dict[str, Any]] = {
    "vgg_small": {"kw": {"widths": (16, 32, 64)}, "block": "3x3 conv + BN (plain)",
                  "last_map": "4x4"},
    "mobilenet_v1": {"kw": {"alpha": 0.25, "repeats": 1}, "block": "depthwise separable",
                     "last_map": "1x1"},
    "shufflenet_v1_g3": {"kw": {"widths": (60, 120), "stem": 12, "repeats": (2, 4)},
                         "block": "1x1 group conv + shuffle + depthwise", "last_map": "2x2"},
    "squeezenet1_1": {"kw": {"stem": 16, "base_e": 32, "incr_e": 32, "squeeze_ratio": 0.25,
                             "dropout": 0.0}, "block": "fire module", "last_map": "1x1"},
    "nin": {"kw": {"widths": ((32, 32, 16), (32, 32, 32), (32, 32)), "dropout": 0.0},
            "block": "mlpconv + GAP head", "last_map": "8x8"},
}  # fmt: skip
SMOKE: dict[str, dict[str, Any]] = {
    "vgg_small": {"kw": {"widths": (4,), "convs_per_stage": 1}, "block": "3x3 conv + BN (plain)",
                  "last_map": "16x16"},
    "shufflenet_v1_g3": {"kw": {"widths": (12,), "stem": 3, "repeats": (1,)},
                         "block": "1x1 group conv + shuffle + depthwise", "last_map": "4x4"},
}  # fmt: skip
SMOKE_SIZE = 256  # training and test images of the smoke run: one evaluation shape for both
SMOKE_STEPS = 3
SMOKE_REPEATS = {1: 3, 8: 3}

CLAIM = (
    "Section 2 and 7.1 (rule 1) of the survey: well-designed modules (1x1 filters combined with "
    "3x3 ones, global average pooling instead of fully connected layers; NIN, SqueezeNet) give "
    "'a model with fewer parameters with a better performance'; MobileNet's depthwise separable "
    "and ShuffleNet's pointwise group convolutions cut the computation further, though (7.3.1) "
    "they 'are not accurate as larger one'. Published: MobileNet 1.0-224 70.6% top-1 with 4.2M "
    "params and 569M mult-adds against VGG-16's 71.5% with 138M and 15.3G (Howard et al., "
    "table 8); SqueezeNet AlexNet-level accuracy with 50x fewer parameters (Iandola et al.)."
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dataset(spec: str, smoke: bool, data_dir: str | None = None) -> jc.data.Dataset:
    """``spec`` at SIZE x SIZE (zero-padded), standardized with the training statistics."""
    data = jc.data.load(spec, data_dir=data_dir)
    if smoke:
        rng = np.random.default_rng(0)
        tr = rng.permutation(data.num_train)[:SMOKE_SIZE]
        te = rng.permutation(data.num_test)[:SMOKE_SIZE]
        data = data.replace(x_train=data.x_train[tr], y_train=data.y_train[tr],
                            x_test=data.x_test[te], y_test=data.y_test[te])  # fmt: skip
    if data.input_shape[0] < SIZE:
        data = jc.data.pad_to(data, SIZE)
    return jc.data.normalize(data)


def optimizer(steps: int) -> optax.GradientTransformation:
    """Adam on a warm-up cosine schedule: 0 to LR over WARMUP of the steps, then down to 0."""
    warmup = max(1, int(WARMUP * steps))
    return optax.adam(optax.warmup_cosine_decay_schedule(0.0, LR, warmup, max(steps, warmup + 1)))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return round(float(np.mean(values)), 4), round(float(np.std(values)), 4)


def train_model(
    name: str, cfg: dict[str, Any], data: jc.data.Dataset, steps: int, seeds: Sequence[int]
) -> dict[str, Any]:
    """Trains ``name`` once per seed; its accuracies, counts and seed 0's trained variables."""
    t0 = time.perf_counter()
    model = jc.models.get(name, num_classes=data.num_classes, **cfg["kw"])
    apply = model.apply  # one apply and one optimizer: the seeds share the compiled step
    tx = optimizer(steps)
    step = jc.train.make_train_step()
    test_acc, train_acc, first = [], [], None
    n_train = min(TRAIN_EVAL, data.num_train)
    for seed in seeds:
        variables = init_variables(model, data.input_shape, seed)
        state = jc.train.TrainState.create(
            apply_fn=apply, variables=variables, tx=tx, key=jax.random.key(seed)
        )
        res = jc.train.fit(
            state, data, batch_size=min(BATCH, data.num_train), steps=steps, seed=seed,
            eval_every=steps, train_step=step, eval_step=EVAL_STEP,
            description=f"{name} seed {seed}",
        )  # fmt: skip
        test_acc.append(res.history[-1]["test_accuracy"])
        ev = jc.train.evaluate(
            res.state, data.x_train[:n_train], data.y_train[:n_train], eval_step=EVAL_STEP
        )
        train_acc.append(ev["accuracy"])
        first = res.state.variables() if first is None else first
        log(f"[{name}] seed {seed}: test {test_acc[-1]:.4f}, train {train_acc[-1]:.4f} "
            f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    x1 = jnp.zeros((1, *data.input_shape), jnp.float32)
    acc, acc_std = mean_std(test_acc)
    tr, tr_std = mean_std(train_acc)
    return {
        "model": name, "kw": json.loads(json.dumps(cfg["kw"])), "block": cfg["block"],
        "last_map": cfg["last_map"], "params": jc.analysis.param_count(first["params"]),
        "macs": jc.analysis.flops(apply, first, x1), "acc": acc, "acc_std": acc_std,
        "acc_seeds": test_acc, "train_acc": tr, "train_acc_std": tr_std,
        "train_acc_seeds": train_acc, "train_seconds": round(time.perf_counter() - t0, 1),
        "apply": apply, "variables": first,
    }  # fmt: skip


def measure_latency(
    models: Sequence[dict[str, Any]], x: np.ndarray, repeats: int
) -> dict[str, dict[str, Any]]:
    """Every model's jitted forward pass on ``x``, interleaved (the first model is the baseline).

    Each function closes over its own trained variables, so a call passes only the images:
    passing all five models' variables as arguments (the way to give ``compare_latency`` the
    same arguments for all) would add the dispatch of every model's leaves to every call, which
    at batch 1 is a visible share of a small model's time.
    """
    fns = {m["model"]: jax.jit(lambda x, f=m["apply"], v=m["variables"]: f(v, x)) for m in models}
    return jc.analysis.compare_latency(
        fns, jnp.asarray(x), repeats=repeats, warmup=2, rounds=min(ROUNDS, repeats)
    )


def run(
    configs: dict[str, dict[str, Any]], data: jc.data.Dataset, steps: int, seeds: Sequence[int],
    repeats: dict[int, int],
) -> list[dict[str, Any]]:  # fmt: skip
    """Trains every model, counts it and times all of them together; one row per model."""
    models = [train_model(n, c, data, steps, seeds) for n, c in configs.items()]
    base = models[0]
    for b, r in repeats.items():
        idx = np.arange(b) % data.num_test
        t0 = time.perf_counter()
        stats = measure_latency(models, data.x_test[idx], r)
        log(f"latency at batch {b}: {time.perf_counter() - t0:.0f} s")
        for m in models:
            s = stats[m["model"]]
            m[f"ms_b{b}"] = round(1e3 * s["median_s"], 4)
            m[f"min_ms_b{b}"] = round(1e3 * s["min_s"], 4)
            m[f"ratio_b{b}"] = round(s["ratio"], 4)
            m[f"gmacs_per_s_b{b}"] = round(m["macs"] * b / s["median_s"] / 1e9, 3)
    rows = []
    for m in models:
        row = {k: v for k, v in m.items() if k not in ("apply", "variables")}
        row["params_vs_baseline"] = round(m["params"] / base["params"], 4)
        row["macs_vs_baseline"] = round(m["macs"] / base["macs"], 4)
        row["acc_vs_baseline_pp"] = round(100 * (m["acc"] - base["acc"]), 2)
        rows.append(row)
    return rows


def table(rows: Sequence[dict[str, Any]], big: int) -> str:
    """One line per model: accuracy, counts and latency (ratios to the first row, the baseline)."""
    out = [
        {
            "model": r["model"], "block": r["block"], "last map": r["last_map"],
            "test acc": f"{r['acc']:.4f} ± {r['acc_std']:.4f}",
            "train acc": f"{r['train_acc']:.4f}",
            "params": f"{r['params']:,} ({r['params_vs_baseline']:.2f}x)",
            "mult-adds": f"{r['macs'] / 1e6:.2f}M ({r['macs_vs_baseline']:.3f}x)",
            "ms b1": f"{r['ms_b1']:.3f} ({r['ratio_b1']:.2f}x)",
            f"ms b{big}": f"{r[f'ms_b{big}']:.2f} ({r[f'ratio_b{big}']:.2f}x)",
            f"GMAC/s b{big}": f"{r[f'gmacs_per_s_b{big}']:.2f}",
        }
        for r in rows
    ]  # fmt: skip
    return markdown_table(out, list(out[0]))


def _times(ratio: float) -> str:
    """``ratio`` as "3.2x fewer" / "1.4x more" (of a count against the baseline's)."""
    return f"{1 / ratio:.1f}x fewer" if ratio < 1 else f"{ratio:.1f}x more"


def reading(rows: Sequence[dict[str, Any]], big: int) -> list[str]:
    """Per model against the baseline (the first row): the claim's parts, computed."""
    base = rows[0]
    lines = []
    for r in rows[1:]:
        speed = base[f"ms_b{big}"] / r[f"ms_b{big}"]
        speed1 = base["ms_b1"] / r["ms_b1"]
        lines.append(
            f"- {r['model']}: {_times(r['params_vs_baseline'])} parameters, "
            f"{_times(r['macs_vs_baseline'])} mult-adds, test accuracy "
            f"{r['acc_vs_baseline_pp']:+.2f} pp (generalization gap "
            f"{100 * (r['train_acc'] - r['acc']):.1f} pp, the baseline's "
            f"{100 * (base['train_acc'] - base['acc']):.1f}); {speed:.2f}x the baseline's speed "
            f"at batch {big} ({r[f'gmacs_per_s_b{big}']:.2f} GMAC/s against "
            f"{base[f'gmacs_per_s_b{big}']:.2f}) and {speed1:.2f}x at batch 1."
        )
    return lines


def claim_check(rows: Sequence[dict[str, Any]], big: int) -> dict[str, Any]:
    """The claim's parts for each model against the baseline (the first row), and the models for
    which all three hold: fewer parameters, fewer mult-adds, test accuracy (mean over seeds) at
    most :data:`CLOSE_PP` points below the baseline's. Speed is measured, not part of the claim."""
    base = rows[0]
    models = {
        r["model"]: {
            "fewer_params": r["params"] < base["params"],
            "fewer_macs": r["macs"] < base["macs"],
            "close_accuracy": 100 * (base["acc"] - r["acc"]) <= CLOSE_PP,
            f"faster_b{big}": r[f"ms_b{big}"] < base[f"ms_b{big}"],
            "faster_b1": r["ms_b1"] < base["ms_b1"],
            "macs_per_s_vs_baseline": round(
                r[f"gmacs_per_s_b{big}"] / base[f"gmacs_per_s_b{big}"], 4
            ),
        }
        for r in rows[1:]
    }
    holds = [n for n, c in models.items() if c["fewer_params"] and c["fewer_macs"]
             and c["close_accuracy"]]  # fmt: skip
    return {"close_pp": CLOSE_PP, "baseline": base["model"], "models": models, "holds_for": holds}


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def write(out: str, result: dict[str, Any]) -> str:
    """Writes ``result`` (``{"meta", "rows", "claim_check"}``) to ``architectures_efficient.json``
    and its tables to ``architectures_efficient.md`` in ``out``; returns the Markdown."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "architectures_efficient.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    meta, rows, check = result["meta"], result["rows"], result["claim_check"]
    big = max(meta["latency_batches"])
    m = meta["machine"]
    models = check["models"]
    pick = lambda key: _names([n for n, c in models.items() if c[key]])
    rates = ", ".join(f"{n} {c['macs_per_s_vs_baseline']:.2f}" for n, c in models.items())
    repeats = ", ".join(f"{r} at batch {b}" for b, r in meta["repeats"].items())
    configs = "\n".join(f"- `{r['model']}` {r['kw']}" for r in rows)
    text = (
        "# Efficient architectures on " + meta["dataset"] + "\n\n"
        f"Generated by `{meta['command']}` in {meta['seconds'] / 60:.1f} min on {m['cpu']} "
        f"({m['cores']} cores, ISA {', '.join(m['isa']) or 'unknown'}, {m['backend']}, JAX "
        f"{m['jax']}; 1-minute load average {meta['load_average_1min'][0]:.1f} at the start, "
        f"{meta['load_average_1min'][1]:.1f} at the end). {len(meta['seeds'])} seeds "
        f"({', '.join(map(str, meta['seeds']))}), "
        f"the same budget for every model: {meta['steps']} steps of batch {meta['batch']}, Adam "
        f"with a warm-up cosine schedule (peak {meta['lr']}), no augmentation; test accuracy as "
        f"mean ± std on the {meta['num_test']} test images, train accuracy on "
        f"{meta['train_eval']} training images (mean over seeds). Mult-adds of one "
        f"{SIZE}x{SIZE} image (`jc.analysis.flops`); latency: jitted inference, all models "
        "interleaved in one process (`jc.analysis.compare_latency`), the median of the calls "
        f"({repeats}). 'last map': the spatial size before the global pooling. Ratios in "
        "brackets are to the baseline (first row). The module docstring has the method.\n\n"
        f"**The survey's claim.** {CLAIM}\n\n" + table(rows, big) + "\nConfigurations:\n\n"
        + configs + "\n\n**Against the claim** (computed from the table): fewer parameters than "
        f"the baseline: {pick('fewer_params')}; fewer mult-adds: {pick('fewer_macs')}; test "
        f"accuracy within {check['close_pp']:g} pp of the baseline's: {pick('close_accuracy')}; "
        f"all three: {_names(check['holds_for'])}. Faster than the baseline on this CPU at batch "
        f"{big}: {pick(f'faster_b{big}')}; at batch 1: {pick('faster_b1')}. Mult-adds per "
        f"second at batch {big} relative to the baseline's: {rates}.\n\n"
        + "\n".join(reading(rows, big))
        + "\n"
    )  # fmt: skip
    with open(os.path.join(out, "architectures_efficient.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return text


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="two toy models, a few steps")
    ap.add_argument("--data", default="mnist5k", help="mnist5k or tfds:cifar10 (prepared)")
    ap.add_argument("--data-dir", default=None, help="the TFDS data directory")
    ap.add_argument("--out", default=None, help="results folder (docs/results)")
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0 .. N-1")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    out = args.out or ("/tmp/jaxcomp_efficient_smoke" if args.smoke else "docs/results")
    configs = SMOKE if args.smoke else CONFIGS
    steps = SMOKE_STEPS if args.smoke else STEPS
    repeats = SMOKE_REPEATS if args.smoke else REPEATS
    seeds = tuple(range(args.seeds))
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]  # the machine is shared: other processes' load, for the record
    data = dataset(args.data, args.smoke, args.data_dir)
    rows = run(configs, data, steps, seeds, repeats)
    command = "python -m experiments.architectures.efficient" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    meta = {
        "machine": machine(), "dataset": f"{data.name} ({data.num_train} train / "
        f"{data.num_test} test, {'x'.join(map(str, data.input_shape))})",
        "command": command, "seeds": list(seeds), "steps": steps, "batch": BATCH, "lr": LR,
        "schedule": f"adam, warmup_cosine_decay (0 -> {LR} over {WARMUP:.0%} of the steps, -> 0)",
        "num_test": data.num_test, "train_eval": min(TRAIN_EVAL, data.num_train),
        "latency_batches": list(repeats), "repeats": {str(b): r for b, r in repeats.items()},
        "baseline": next(iter(configs)), "claim": CLAIM, "smoke": args.smoke,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }  # fmt: skip
    result = {"meta": meta, "rows": rows, "claim_check": claim_check(rows, max(repeats))}
    log(write(out, result))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

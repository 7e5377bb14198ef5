"""DSOD's deep supervision as a classification experiment: dense backbone, trained from scratch.

Shen et al. train object detectors from scratch (no ImageNet pre-training) and name deep
supervision as what makes that work: not the companion objectives of deeply-supervised nets
(Lee et al., a classifier and its loss on every hidden stage), but the dense layer-wise
connections of DenseNet, through which every layer receives the loss's gradient directly
("implicit deep supervision"). Their backbone adds a *stem* (three 3x3 convolutions, 64, 64 and
128 channels, then a max pool, before the first dense block) to keep more of the input.

Here, classification on the same 32x32 MNIST as ``experiments.architectures.table1`` (mnist5k,
zero-padded, standardized), both arms trained from random weights, with the same backbone
(:class:`DSODNet`):

* stem: three 3x3 convolutions with batch norm and ReLU (16, 16 and 32 channels: DSOD's stem at a
  quarter of its width), then a 2x2 max pool (32x32 to 16x16);
* three ``jc.models.DenseBlock`` s of 4 bottleneck layers each at growth rate 8, with a
  ``jc.models.Transition`` (1x1 convolution to half the channels, 2x2 average pool) after the
  first two (16x16, 8x8, 4x4);
* head: batch norm, ReLU, global average pooling and a dense classifier.

The two arms:

* **implicit only** (``heads=False``): the backbone trained with the classifier's cross-entropy
  alone. Its dense connections are the paper's implicit deep supervision;
* **implicit + explicit** (``heads=True``): the same backbone with an auxiliary classifier (batch
  norm, ReLU, global average pooling, dense) on the output of each transition (after dense
  block 1 at 8x8, after dense block 2 at 4x4), whose cross-entropies are added to the loss with
  weight ``AUX_WEIGHT`` = 0.3 each (GoogLeNet's weight for its auxiliary classifiers). The heads
  only train: the tested model is the backbone's own classifier, so both arms are evaluated with
  the same network and the same mult-adds.

If the dense connections already supervise every layer, as DSOD argues (the paper does not
test explicit heads on a dense backbone), the heads should add little. Both arms train as every
network of ``experiments.architectures.table1``: SGD with Nesterov momentum 0.9, learning rate
0.1 decayed to 0 by a cosine over ``STEPS`` = 124 steps at batch 64 (2 epochs), no
augmentation, weights drawn with numpy; 3 seeds (weights, batch order), test error on the 1,000
test images once at the end (mean and sample standard deviation over the seeds).

Not implemented (detection-specific): DSOD's proposal-free SSD-style heads, its dense prediction
structure over multiple scales, and its transition layers without pooling.

Run: ``python -m experiments.architectures.dsod [--smoke] [--data mnist5k|tfds:cifar10]
[--data-dir DIR] [--steps N] [--seeds N] [--out DIR]`` (5.7 minutes on 2 shared CPU cores at a
load average of about 2) writes ``docs/results/dsod.json`` and ``docs/results/dsod.md``.

References:
    Shen, Liu, Li, Jiang, Chen and Xue, "DSOD: Learning deeply supervised object detectors from
    scratch", ICCV 2017, arXiv:1708.01241.

    Lee, Xie, Gallagher, Zhang and Tu, "Deeply-supervised nets", AISTATS 2015,
    arXiv:1409.5185.

    Huang, Liu, van der Maaten and Weinberger, "Densely connected convolutional networks",
    CVPR 2017, arXiv:1608.06993.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxcomp as jc
from experiments.architectures.table1 import BATCH
from experiments.architectures.table1 import LR
from experiments.architectures.table1 import MOMENTUM
from experiments.architectures.table1 import STEPS
from experiments.architectures.table1 import Trainer
from experiments.architectures.table1 import command
from experiments.architectures.table1 import counts
from experiments.architectures.table1 import dataset
from experiments.architectures.table1 import describe
from experiments.architectures.table1 import mean_std
from experiments.architectures.table1 import parse_args
from experiments.common import machine
from experiments.common import markdown_table

AUX_WEIGHT = 0.3
SEEDS = 3
CONFIG: dict[str, Any] = {"stem": (16, 16, 32), "layers": (4, 4, 4), "growth_rate": 8}
SMOKE: dict[str, Any] = {"stem": (), "layers": (1, 1), "growth_rate": 2}
SMOKE_STEPS = 3
SMOKE_BATCH = 32
ARMS = {"implicit only (dense connections)": False,
        "implicit + explicit (auxiliary heads, weight 0.3)": True}  # fmt: skip


def _head(x: jax.Array, train: bool, num_classes: int, name: str) -> jax.Array:
    """Batch norm, ReLU, global average pooling and a dense classifier, named ``name``."""
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"{name}_BatchNorm")(x)
    return nn.Dense(num_classes, name=f"{name}_Dense")(jnp.mean(nn.relu(x), axis=(1, 2)))


class DSODNet(nn.Module):
    """A DSOD-style classification backbone: stem, dense blocks and transitions, auxiliary heads.

    Submodules: ``Stem_Conv_i``/``Stem_BatchNorm_i``, ``DenseBlock_i`` and ``Transition_i``
    (``jc.models`` blocks), ``Head_BatchNorm``/``Head_Dense`` and, with ``heads``,
    ``AuxHead_i_BatchNorm``/``AuxHead_i_Dense`` on the output of ``Transition_i``.

    Attributes:
        num_classes: number of output logits.
        stem: channels of the stem's 3x3 convolutions (before a 2x2 max pool).
        layers: bottleneck layers of each dense block; a transition follows each but the last.
        growth_rate: ``k`` of the dense blocks.
        compression: ``theta`` of the transitions.
        heads: whether the auxiliary classifiers exist (they are always computed then, so that
            ``init`` creates them; only ``aux=True`` returns them).
    """

    num_classes: int = 10
    stem: Sequence[int] = (16, 16, 32)
    layers: Sequence[int] = (4, 4, 4)
    growth_rate: int = 8
    compression: float = 0.5
    heads: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, aux: bool = False) -> Any:
        """The logits, or ``(logits, aux_logits)`` with ``aux`` (``aux_logits`` a tuple, empty
        without ``heads``)."""
        for i, features in enumerate(self.stem):
            x = nn.Conv(features, (3, 3), use_bias=False, name=f"Stem_Conv_{i}",
                        kernel_init=nn.initializers.kaiming_normal())(x)  # fmt: skip
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                             name=f"Stem_BatchNorm_{i}")(x)  # fmt: skip
            x = nn.relu(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        side = []
        for i, n in enumerate(self.layers):
            x = jc.models.DenseBlock(n, self.growth_rate, name=f"DenseBlock_{i}")(x, train=train)
            if i < len(self.layers) - 1:
                x = jc.models.Transition(self.compression, name=f"Transition_{i}")(x, train=train)
                if self.heads:
                    side.append(_head(x, train, self.num_classes, f"AuxHead_{i}"))
        logits = _head(x, train, self.num_classes, "Head")
        return (logits, tuple(side)) if aux else logits


def deep_supervision(weight: float) -> jc.train.Objective:
    """``CE(logits) + weight * sum_i CE(aux_logits_i)`` in training mode, reporting both parts."""

    def objective(params, state, batch, key):
        x, y = batch
        apply = functools.partial(state.apply_fn, aux=True)
        (logits, side), model_state = jc.train.forward(
            state, params, x, train=True, key=key, apply_fn=apply
        )
        main = jc.train.cross_entropy(logits, y)
        extra = sum((jc.train.cross_entropy(s, y) for s in side), jnp.zeros(()))
        loss = main + weight * extra
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return loss, (model_state, {"loss": loss, "main_loss": main, "aux_loss": extra,
                                    "accuracy": acc})  # fmt: skip

    return objective


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_arm(label: str, heads: bool, cfg: dict[str, Any], data: jc.data.Dataset,
            trainer: Trainer, seeds: Sequence[int]) -> dict[str, Any]:  # fmt: skip
    t0 = time.perf_counter()
    model = DSODNet(num_classes=data.num_classes, heads=heads, **cfg)
    backbone = DSODNet(num_classes=data.num_classes, heads=False, **cfg)
    params, _ = counts(model, data.input_shape)
    backbone_params, macs = counts(backbone, data.input_shape)
    errors, train_errors = [], []
    for seed in seeds:
        _, acc, train_acc = trainer.run(model, data, seed, label)
        errors.append(round(100.0 * (1.0 - acc), 2))
        train_errors.append(round(100.0 * (1.0 - train_acc), 2))
        log(f"[{label}] seed {seed}: test error {errors[-1]:.2f}% "
            f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    mean, std = mean_std(errors)
    return {
        "arm": label, "aux_heads": heads, "aux_weight": AUX_WEIGHT if heads else 0.0,
        "params_trained": params, "params_tested": backbone_params, "macs": macs,
        "error_mean": round(mean, 2), "error_std": round(std, 2), "errors": errors,
        "train_error_mean": round(mean_std(train_errors)[0], 2), "train_errors": train_errors,
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def write(out: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Writes ``dsod.json`` and ``dsod.md`` in ``out``; returns the JSON object."""
    os.makedirs(out, exist_ok=True)
    implicit, explicit = rows
    n = len(implicit["errors"])
    diff = round(implicit["error_mean"] - explicit["error_mean"], 2)
    se = round(((implicit["error_std"] ** 2 + explicit["error_std"] ** 2) / n) ** 0.5, 2)
    if abs(diff) <= se:
        verdict = (f"the auxiliary heads change the test error by {-diff:+.2f} pp, within its "
                   f"standard error over the seeds ({se:.2f} pp): no gain resolved from explicit "
                   "deep supervision on top of the dense connections, consistent with DSOD's "
                   "argument that these already supervise every layer (both arms have them, so "
                   "this does not test the dense connections themselves)")  # fmt: skip
    elif diff > 0:
        verdict = (f"the auxiliary heads lower the test error by {diff:.2f} pp (standard error "
                   f"{se:.2f} pp): explicit deep supervision still helps this dense backbone at "
                   "this budget")  # fmt: skip
    else:
        verdict = (f"the auxiliary heads raise the test error by {-diff:.2f} pp (standard error "
                   f"{se:.2f} pp): the extra losses hurt this dense backbone at this "
                   "budget")  # fmt: skip
    payload = {"meta": meta, "rows": rows,
               "reading": {"gain_pp": diff, "se_pp": se, "sentence": verdict}}  # fmt: skip
    with open(os.path.join(out, "dsod.json"), "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    table = markdown_table(
        [{"arm": r["arm"], "params trained": f"{r['params_trained']:,}",
          "params tested": f"{r['params_tested']:,}", "mult-adds": f"{r['macs'] / 1e6:.1f}M",
          "test error %": f"{r['error_mean']:.2f} ± {r['error_std']:.2f}",
          "per seed": ", ".join(f"{e:.2f}" for e in r["errors"]),
          "training error %": f"{r['train_error_mean']:.2f}",
          "seconds": f"{r['seconds']:.0f}"} for r in rows],
        ["arm", "params trained", "params tested", "mult-adds", "test error %", "per seed",
         "training error %", "seconds"],
    )  # fmt: skip
    m, load = meta["machine"], meta["load_average_1min"]
    text = (
        "# DSOD's deep supervision, from scratch, on a small task\n\n"
        f"Generated by `{meta['command']}` in {meta['seconds'] / 60:.1f} min on {m['cpu']} "
        f"({m['cores']} cores, {m['backend']}, JAX {m['jax']}; 1-minute load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end, the machine shared). Data: "
        f"{meta['dataset']}. Backbone "
        f"(both arms): stem {meta['config']['stem']}, dense blocks of "
        f"{meta['config']['layers']} bottleneck layers at growth rate "
        f"{meta['config']['growth_rate']}, transitions with compression 0.5; trained from "
        f"random weights, {meta['steps']} steps of {meta['optimizer']} at batch {meta['batch']} "
        f"(learning rate {meta['lr']:g}, cosine decay to 0), {len(meta['seeds'])} seeds; test "
        "error on the "
        f"{meta['num_test']:,} test images, mean ± sample standard deviation (training error: "
        f"on {meta['num_test']:,} training images, mean). The auxiliary "
        "heads only train: both arms are tested with the backbone's own classifier. The module "
        "docstring of `experiments/architectures/dsod.py` has the method.\n\n"
        + table
        + f"\n**Reading.** {verdict[0].upper() + verdict[1:]}.\n"
    )
    with open(os.path.join(out, "dsod.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return payload


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__.splitlines()[0], argv, seeds=SEEDS, unit="arm")
    t0, load0 = time.perf_counter(), os.getloadavg()
    cfg = SMOKE if args.smoke else CONFIG
    steps = args.steps or (SMOKE_STEPS if args.smoke else STEPS)
    batch = SMOKE_BATCH if args.smoke else BATCH
    out = args.out or ("/tmp/jaxcomp_dsod_smoke" if args.smoke else "docs/results")
    data = dataset(args.data, smoke=args.smoke, data_dir=args.data_dir)
    trainer = Trainer(steps, batch, deep_supervision(AUX_WEIGHT))
    seeds = list(range(args.seeds))
    rows = [run_arm(label, heads, cfg, data, trainer, seeds) for label, heads in ARMS.items()]
    meta = {
        "machine": machine(), "command": command("dsod", args, SEEDS), "data": args.data,
        "dataset": describe(data), "num_test": data.num_test,
        "config": json.loads(json.dumps(cfg)), "steps": steps, "batch": batch, "lr": LR,
        "schedule": "cosine decay to 0", "optimizer": f"SGD (Nesterov momentum {MOMENTUM})",
        "aux_weight": AUX_WEIGHT, "seeds": seeds, "smoke": args.smoke,
        "load_average_1min": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    payload = write(out, rows, meta)
    print(json.dumps(payload, indent=2))
    return payload


if __name__ == "__main__":
    main()

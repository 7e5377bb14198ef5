"""Structured pruning on real MNIST: accuracy, FLOPs, params and measured speed-up per criterion.

Models and data: LeNet-5 on mnist5k (4,000 train / 1,000 test images, 28x28x1), and the small VGG
and ResNet-20 on the same images zero-padded to 32x32 (``jc.data.pad_to``) with the grey channel
repeated three times (32x32x3, the CIFAR shape they were designed for). To fit the budget of this
2-core CPU, the CIFAR-shaped models are narrower than their defaults: the small VGG at
``widths=(16, 32, 64)`` (9.9M MACs instead of 153M) and ResNet-20 at ``width=8`` (10.2M MACs
instead of 40.6M; the same depth and blocks). ResNet-56 is not run here (see
``experiments.benchmarks.structured_speed`` for its speed at full width).

For each model and each of 2 seeds (0 and 1; the seed draws the initial weights and the batch
order of every run that starts from it):

1. dense training: Adam (lr 1e-3), batch 64, ``dense_steps`` steps (LeNet-5: 400, 6.4 epochs;
   VGG and ResNet-20: 250, 4 epochs). The control: the dense model trained ``finetune_steps``
   more steps, the same total training as a pruned and fine-tuned model;
2. structured pruning at 30, 50 and 70% of the dense FLOPs removed
   (:func:`jaxcomp.structured.ratio_for_flops` gives the fraction of every dependency group's
   channels to remove; the widths are whole channels, so a little more goes), by each criterion:
   ``l1`` (filter norms), ``bn`` (batch-norm scales; VGG and ResNet only) and ``taylor``
   (first-order Taylor importance of each channel):

   * one-shot (before fine-tuning): the dense model pruned by :func:`jaxcomp.structured.masks`
     (``taylor``: with the gradient of the loss on 512 training images), test accuracy;
   * fine-tuned: :func:`jaxcomp.structured.channels` in the training loop from the dense model,
     its ratio ramped linearly from 0 to the target over the first half of ``finetune_steps``
     and then fixed (LeNet-5: 60 steps; VGG and ResNet-20: 30 steps, half an epoch), the masks
     recomputed every step (``l1``, ``bn``) or every 5 steps (``taylor``, whose importance
     accumulates between recomputations); then the test accuracy of the masked model. Like the
     control, every fine-tuning continues the dense training's Adam state.

   Each level's physically smaller model (``state.finalize()``, then
   :func:`jaxcomp.structured.small`; seed 0, the first criterion) is checked against the masked
   model on a test batch, tested, counted (MACs with ``jc.analysis.flops``, params) and timed
   against the dense model (jitted inference at batch 128, interleaved in one process with
   ``jc.analysis.compare_latency``). All criteria and seeds of a level share its widths (every
   group loses the same number of channels), so they share its FLOPs, params and speed;
3. unstructured magnitude pruning (``jc.prune.magnitude``, per layer, kernels only) one-shot at
   50, 80, 90 and 95% sparsity (LeNet-5) or 50, 70 and 90% (VGG, ResNet-20), fine-tuned with the
   masks fixed for the same ``finetune_steps``. Each structured row is shown next to the highest
   of these sparsities whose fine-tuned accuracy (mean over seeds) is at least the row's, and the
   sparse model's measured speed-up (at the highest sparsity, in the same interleaved
   comparison): it runs as the dense model does, multiplying its zeros.

Every model with batch norm is tested with its batch-norm statistics re-estimated on 1,024
training images (:meth:`Runner.recalibrate`; the weights are not changed): with the dense
model's running averages a pruned VGG or ResNet is at chance before fine-tuning, and still far
off after a few steps of it. Accuracies are the mean and standard deviation over the 2 seeds on
the 1,000 test images; nothing is tuned on them. The check of the brief: at 50% of the FLOPs
removed, the fine-tuned accuracy within 1 percentage point of the dense model, and of the control
(``check_50``).

To fit the budget, one compiled training step serves the three levels of a criterion (the
transform's ratio is a schedule of the step, :func:`level_schedule`, and each level's run starts
at its own step offset), and the dense training, the control and the magnitude fine-tuning share
one (fixed masks, all True for the dense model). The models are initialized with numpy
(:func:`init_variables`): on this machine XLA takes 45-70 s to compile a ResNet-20's random
initializer.

Budget: about 25 minutes on 2 shared CPU cores. Writes ``docs/results/structured.json`` and
``docs/results/structured.md``.

Run: ``python -m experiments.structured.run [--smoke] [--out DIR] [--models ...]`` (``--smoke``:
LeNet-5 on 256 training images, 50% of the FLOPs, a few steps, for the test suite).
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
from experiments.common import Bound
from experiments.common import machine
from experiments.common import markdown_table
from jaxcomp import prune

LEVELS = (0.3, 0.5, 0.7)
SEEDS = (0, 1)
BATCH = 64
EVAL_BATCH = 128  # evaluation and timing share the batch size, so each function compiles once
TIME_REPEATS = 10
LR = 1e-3
TAYLOR_EVERY = 5
OFFSET = 1_000_000  # the step at which level i's run starts is i * OFFSET

BN_MOMENTUM = 0.9  # of the batch norms of vgg_small and the ResNets (checked in Runner)
CALIBRATION = 1024  # training images whose statistics the batch norms are given before a test

_CIFAR_SPARSITIES = (0.5, 0.7, 0.9)
CONFIGS: dict[str, dict[str, Any]] = {
    "lenet5": {"kw": {}, "dense_steps": 400, "finetune_steps": 60,
               "sparsities": (0.5, 0.8, 0.9, 0.95)},
    "vgg_small": {"kw": {"widths": (16, 32, 64)}, "dense_steps": 250, "finetune_steps": 30,
                  "sparsities": _CIFAR_SPARSITIES},
    "resnet20": {"kw": {"width": 8}, "dense_steps": 250, "finetune_steps": 30,
                 "sparsities": _CIFAR_SPARSITIES},
}  # fmt: skip
SMOKE = {"lenet5": {"kw": {}, "dense_steps": 4, "finetune_steps": 4, "sparsities": (0.5,)}}
SMOKE_LEVELS = (0.5,)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def init_variables(model: Any, shape: Sequence[int], seed: int) -> dict[str, Any]:
    """Variables drawn with numpy: kernels normal with variance ``gain / fan_in`` (gain 2 for
    convolutions as the models' He initializers, 1 for dense layers as flax's LeCun default),
    batch-norm scales and variances one, biases, offsets and means zero."""
    x = jnp.zeros((1, *shape), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = getattr(path[-1], "key", "")
        if name == "kernel":
            gain = 2.0 if len(s.shape) > 2 else 1.0
            std = np.sqrt(gain / np.prod(s.shape[:-1]))
            return jnp.asarray((rng.normal(size=s.shape) * std).astype(s.dtype))
        fill = np.ones if name in ("scale", "var") else np.zeros
        return jnp.asarray(fill(s.shape, s.dtype))

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def dataset(shape: Sequence[int], smoke: bool) -> jc.data.Dataset:
    """mnist5k at the model's input shape (32x32x3: zero-padded, the channel repeated)."""
    data = jc.data.load("mnist5k")
    if smoke:
        rng = np.random.default_rng(0)
        tr, te = rng.permutation(data.num_train)[:256], rng.permutation(data.num_test)[:200]
        data = data.replace(x_train=data.x_train[tr], y_train=data.y_train[tr],
                            x_test=data.x_test[te], y_test=data.y_test[te])  # fmt: skip
    if tuple(shape) != data.input_shape:
        data = jc.data.pad_to(data, shape[0])
        rep = lambda x: np.repeat(x, shape[2], axis=-1)
        data = data.replace(x_train=rep(data.x_train), x_test=rep(data.x_test))
    return data


def level_schedule(ratios: Sequence[float], ramp: int) -> Any:
    """The ratio of the run that starts at step ``i * OFFSET``: 0 ramped linearly to
    ``ratios[i]`` over ``ramp`` steps, then fixed."""
    targets = jnp.asarray(ratios, jnp.float32)

    def ratio(step):
        level = step // OFFSET
        local = step - level * OFFSET
        return targets[jnp.clip(level, 0, len(ratios) - 1)] * jnp.minimum(1.0, local / ramp)

    return ratio


class Runner:
    """One model on one dataset: a compiled training step, evaluation and timing."""

    def __init__(self, model: Any, data: jc.data.Dataset):
        self.model, self.data = model, data
        self.apply = model.apply
        self.tx = optax.adam(LR)
        self.step = jc.train.make_train_step()
        self.logits = jax.jit(self.apply)
        self.x1 = jnp.zeros((1, *data.input_shape), jnp.float32)
        loss = lambda p, v, x, y: jc.train.cross_entropy(self.apply({**v, "params": p}, x), y)
        self.grad = jax.jit(jax.grad(loss))
        idx = np.random.default_rng(0).permutation(data.num_train)[:CALIBRATION]
        self.calibration = jnp.asarray(data.x_train[idx])
        self.bn_update = jax.jit(
            lambda v, x: self.apply(v, x, train=True, mutable=["batch_stats"])[1]["batch_stats"]
        )

    def recalibrate(self, variables: Any) -> Any:
        """``variables`` with the batch norms' statistics of :data:`CALIBRATION` training images.

        Pruning changes the statistics of every layer after the pruned one, so a pruned model
        tested with the dense model's running averages is mostly noise; re-estimating them on
        training data (no weight changes) is the usual remedy (adaptive batch norm: Li, Wu, Li,
        Pan, Wang and Xu, "EagleEye: fast sub-net evaluation for efficient neural network
        pruning", ECCV 2020, arXiv:2007.02491). One training-mode pass from zero statistics
        stores ``(1 - momentum)`` times the batch's statistics, which this divides out.
        """
        if "batch_stats" not in variables:
            return variables
        zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
        stored = self.bn_update({**variables, "batch_stats": zeros}, self.calibration)
        stats = jax.tree.map(lambda a: a / (1.0 - BN_MOMENTUM), stored)
        return {**variables, "batch_stats": stats}

    def check_momentum(self, variables: Any) -> None:
        """A second pass from the first pass's statistics stores ``(1 + m)`` times the first's."""
        if "batch_stats" not in variables:
            return
        zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
        first = self.bn_update({**variables, "batch_stats": zeros}, self.calibration)
        second = self.bn_update({**variables, "batch_stats": first}, self.calibration)
        var = lambda t: sum(  # the variances: positive, unlike the means
            float(jnp.sum(a))
            for path, a in jax.tree_util.tree_leaves_with_path(t)
            if getattr(path[-1], "key", None) == "var"
        )
        m = var(second) / var(first) - 1.0
        assert abs(m - BN_MOMENTUM) < 1e-3, f"batch norm momentum {m:.4f}, not {BN_MOMENTUM}"

    def evaluate(self, variables: Any) -> float:
        """Test accuracy after :meth:`recalibrate`."""
        return self.accuracy(self.recalibrate(variables))

    def state(self, variables: Any, seed: int, transform: Any = None) -> jc.train.TrainState:
        return jc.train.TrainState.create(
            apply_fn=self.apply, variables=variables, tx=self.tx, key=jax.random.key(seed),
            transform=transform,
        )  # fmt: skip

    def train(self, state: jc.train.TrainState, steps: int, seed: int) -> jc.train.TrainState:
        state = jax.tree.map(jnp.copy, state)  # the step donates its input
        done, epoch = 0, 0
        while done < steps:
            for xb, yb in jc.data.batches(
                self.data.x_train, self.data.y_train, batch_size=min(BATCH, self.data.num_train),
                seed=seed, epoch=epoch,
            ):  # fmt: skip
                state, _ = self.step(state, (xb, yb))
                done += 1
                if done == steps:
                    break
            epoch += 1
        return state

    def accuracy(self, variables: Any, fn: Any = None) -> float:
        """Test accuracy of ``fn(variables, x)`` (the dense model's apply by default)."""
        fn = self.logits if fn is None else fn
        x, y = self.data.x_test, self.data.y_test
        n = len(y)
        pad = (-n) % EVAL_BATCH
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        correct = 0
        for i in range(0, n + pad, EVAL_BATCH):
            pred = np.asarray(jnp.argmax(fn(variables, x[i : i + EVAL_BATCH]), -1))
            k = min(EVAL_BATCH, n - i)
            correct += int(np.sum(pred[:k] == y[i : i + k]))
        return correct / n

    def taylor_grads(self, variables: Any, seed: int, n: int = 512) -> Any:
        """The gradient of the training loss with respect to the params, on ``n`` images."""
        rng = np.random.default_rng(seed)
        idx = rng.permutation(self.data.num_train)[:n]
        x, y = self.data.x_train[idx], self.data.y_train[idx]
        return self.grad(variables["params"], variables, x, y)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return round(float(np.mean(values)), 4), round(float(np.std(values)), 4)


def speed(runner: Runner, dense: Any, small_fn: Any, small: Any, sparse: Any) -> dict[str, float]:
    """Dense, physically smaller and unstructured-sparse forward passes, interleaved, batch 128.

    The jitted functions that the evaluations ran at this batch size are timed as they are
    (:class:`experiments.common.Bound`), so the timing compiles nothing more."""
    x = jnp.asarray(runner.data.x_test[:EVAL_BATCH])
    fns = {
        "dense": Bound(runner.logits, dense),
        "small": Bound(small_fn, small),
        "unstructured": Bound(runner.logits, sparse),
    }
    stats = jc.analysis.compare_latency(fns, x, repeats=TIME_REPEATS, warmup=2, rounds=5)
    d = stats["dense"]["median_s"]
    return {
        "dense_ms": round(1e3 * d, 3),
        "small_ms": round(1e3 * stats["small"]["median_s"], 3),
        "unstructured_ms": round(1e3 * stats["unstructured"]["median_s"], 3),
        "speedup": round(d / stats["small"]["median_s"], 3),
        "unstructured_speedup": round(d / stats["unstructured"]["median_s"], 3),
    }


def run_model(name: str, cfg: dict[str, Any], smoke: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = jc.models.get(name, **cfg["kw"])
    data = dataset(jc.models.input_shape(name), smoke)
    runner = Runner(model, data)
    apply, x1 = runner.apply, runner.x1
    criteria = ("l1", "taylor") if name.startswith("lenet") else ("l1", "bn", "taylor")
    sparsities = cfg["sparsities"]
    levels_ = SMOKE_LEVELS if smoke else LEVELS
    v0 = init_variables(model, data.input_shape, 0)
    runner.check_momentum(v0)
    groups = jc.structured.groups(apply, v0, x1)
    ratios = {lv: jc.structured.ratio_for_flops(apply, v0, x1, flops=lv, groups=groups)
              for lv in levels_}  # fmt: skip
    fsteps = cfg["finetune_steps"]
    ramp = max(1, fsteps // 2)
    schedule = level_schedule([ratios[lv] for lv in levels_], ramp)
    transforms = {
        c: jc.structured.channels(
            apply, v0, x1, ratio=schedule, criterion=c, groups=groups,
            update_every=TAYLOR_EVERY if c == "taylor" and ramp >= 2 * TAYLOR_EVERY else 1,
        )
        for c in criteria
    }  # fmt: skip
    # dense training and magnitude fine-tuning share one compiled step: fixed masks, all True
    # for the dense model (which then trains exactly as without a transform)
    template = prune.magnitude(sparsity=0.0).init(v0["params"])[1].masks
    fixed = prune.fixed_masks(template)
    log(f"[{name}] {len(groups)} groups, ratios {ratios} ({time.perf_counter() - t0:.0f}s)")

    dense_acc: list[float] = []
    dense_more: list[float] = []
    before: dict[tuple[str, float], list[float]] = {}
    after: dict[tuple[str, float], list[float]] = {}
    mag_before: dict[float, list[float]] = {s: [] for s in sparsities}
    mag_after: dict[float, list[float]] = {s: [] for s in sparsities}
    smalls: dict[float, dict[str, Any]] = {}
    sparse_vars: dict[float, Any] = {}
    dense0 = None
    for seed in SEEDS:
        v = init_variables(model, data.input_shape, seed)
        state = runner.train(runner.state(v, seed, fixed), cfg["dense_steps"], seed)
        dense = state.variables()
        dense0 = dense if dense0 is None else dense0
        dense_acc.append(runner.evaluate(dense))
        # the control: the dense model trained for as many more steps as the fine-tuning
        dense_more.append(runner.evaluate(runner.train(state, fsteps, seed).variables()))
        log(f"[{name}] seed {seed}: dense {dense_acc[-1]:.4f}, {fsteps} steps more "
            f"{dense_more[-1]:.4f} ({time.perf_counter() - t0:.0f}s)")  # fmt: skip
        # unstructured magnitude pruning, fine-tuned with fixed masks
        # every fine-tuning continues the dense training's optimizer state, as the control does
        # (a fresh Adam's first steps undo more than a few dozen steps repair)
        base = runner.state(dense, seed, fixed).replace(opt_state=state.opt_state)
        for s in sparsities:
            c, st = prune.magnitude(sparsity=s).init(dense["params"])
            mag_before[s].append(runner.evaluate({**dense, "params": c}))
            ms = base.replace(cparams=c, comp_state=prune.FixedMasksState(st.masks))
            ms = runner.train(ms, fsteps, seed)
            mag_after[s].append(runner.evaluate(ms.variables()))
            if seed == SEEDS[0]:
                sparse_vars[s] = ms.variables()
        log(f"[{name}] seed {seed}: magnitude {[round(a[-1], 4) for a in mag_after.values()]} "
            f"({time.perf_counter() - t0:.0f}s)")  # fmt: skip
        # structured: one-shot, then the channels transform in the training loop
        grads = runner.taylor_grads(dense, seed) if "taylor" in criteria else None
        for c in criteria:
            for li, lv in enumerate(levels_):
                m = jc.structured.masks(
                    apply, dense, x1, ratio=ratios[lv], criterion=c, groups=groups,
                    grads=grads if c == "taylor" else None,
                )  # fmt: skip
                before.setdefault((c, lv), []).append(
                    runner.evaluate(jc.structured.apply_masks(dense, m))
                )
                st = runner.state(dense, seed, transforms[c])
                st = st.replace(step=jnp.asarray(li * OFFSET, jnp.int32), opt_state=state.opt_state)
                st = runner.train(st, fsteps, seed)
                if "batch_stats" in st.model_state:
                    stats = runner.recalibrate(st.variables())["batch_stats"]
                    st = st.replace(model_state={**st.model_state, "batch_stats": stats})
                after.setdefault((c, lv), []).append(runner.accuracy(st.variables()))
                kept = [int(np.sum(k)) for k in st.comp_state.masks.keep]
                want = [int(np.sum(k)) for k in m.keep]
                assert kept == want, f"{c} at {lv}: kept {kept}, expected {want}"
                if seed == SEEDS[0] and c == criteria[0]:
                    smalls[lv] = {"state": st}
            accs = [(before[(c, lv)][-1], after[(c, lv)][-1]) for lv in levels_]
            log(f"[{name}] seed {seed}: {c} {accs} ({time.perf_counter() - t0:.0f}s)")

    dense_flops = jc.analysis.flops(apply, dense0, x1)
    dense_params = jc.analysis.param_count(dense0["params"])
    mag_rows = []
    for s in sparsities:
        mb, sb = mean_std(mag_before[s])
        ma, sa = mean_std(mag_after[s])
        mag_rows.append({
            "model": name, "sparsity": s, "acc_before": mb, "acc_before_std": sb,
            "acc_after": ma, "acc_after_std": sa, "seeds_after": mag_after[s],
        })  # fmt: skip
    # the smaller models: checked against the masked model, counted and timed
    levels = {}
    for lv in levels_:
        st = smalls[lv]["state"]
        masked = st.variables()
        small_apply, small_vars = jc.structured.small(
            apply, {"params": st.finalize(), **st.model_state}, x1
        )
        small_fn = jax.jit(small_apply)
        xb = jnp.asarray(data.x_test[:EVAL_BATCH])
        diff = float(jnp.max(jnp.abs(small_fn(small_vars, xb) - runner.logits(masked, xb))))
        small_acc = runner.accuracy(small_vars, small_fn)
        small_flops = jc.analysis.flops(small_apply, small_vars, x1)
        small_params = jc.analysis.param_count(small_vars["params"])
        sparse = sparse_vars[max(sparsities)]
        levels[lv] = {
            "channel_ratio": ratios[lv],
            "small_flops": small_flops,
            "flops_removed": round(1 - small_flops / dense_flops, 4),
            "small_params": small_params,
            "params_ratio": round(small_params / dense_params, 4),
            "max_abs_diff_small_vs_masked": diff,
            "small_accuracy": small_acc,
            "masked_accuracy": after[(criteria[0], lv)][0],
            "unstructured_timed_sparsity": max(sparsities),
            **speed(runner, dense0, small_fn, small_vars, sparse),
        }
        log(f"[{name}] level {lv}: {levels[lv]} ({time.perf_counter() - t0:.0f}s)")
    dmean, dstd = mean_std(dense_acc)
    cmean, cstd = mean_std(dense_more)
    rows = []
    for c in criteria:
        for lv in levels_:
            bm, bs = mean_std(before[(c, lv)])
            am, as_ = mean_std(after[(c, lv)])
            match = [r for r in mag_rows if r["acc_after"] >= am]
            best = max(match, key=lambda r: r["sparsity"]) if match else None
            lvl = levels[lv]
            rows.append({
                "model": name, "criterion": c, "flops_target": lv,
                "flops_removed": lvl["flops_removed"], "channel_ratio": lvl["channel_ratio"],
                "params_ratio": lvl["params_ratio"], "dense_flops": dense_flops,
                "small_flops": lvl["small_flops"], "dense_params": dense_params,
                "small_params": lvl["small_params"],
                "dense_acc": dmean, "dense_acc_std": dstd,
                "dense_more_acc": cmean, "dense_more_acc_std": cstd,
                "acc_before": bm, "acc_before_std": bs, "acc_after": am, "acc_after_std": as_,
                "drop_pp": round(100 * (dmean - am), 2),
                "drop_vs_more_pp": round(100 * (cmean - am), 2),
                "speedup": lvl["speedup"], "dense_ms": lvl["dense_ms"], "small_ms": lvl["small_ms"],
                "magnitude_sparsity": best["sparsity"] if best else None,
                "magnitude_acc": best["acc_after"] if best else None,
                "magnitude_speedup": lvl["unstructured_speedup"],
                "seeds_before": before[(c, lv)], "seeds_after": after[(c, lv)],
            })  # fmt: skip
    check = {
        c: {"dense": dmean, "dense_more": cmean, "after": r["acc_after"],
            "drop_pp": r["drop_pp"], "drop_vs_more_pp": r["drop_vs_more_pp"],
            "holds": max(r["drop_pp"], r["drop_vs_more_pp"]) <= 1.0}
        for c in criteria
        for r in rows
        if r["criterion"] == c and r["flops_target"] == 0.5
    }  # fmt: skip
    return {
        "model": name, "config": json.loads(json.dumps(cfg)),
        "input_shape": list(data.input_shape), "groups": len(groups),
        "dense_acc_seeds": dense_acc, "dense_more_acc_seeds": dense_more, "rows": rows,
        "magnitude": mag_rows,
        "levels": {str(k): v for k, v in levels.items()}, "check_50": check,
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


COLUMNS = ["model", "criterion", "FLOPs removed", "params kept", "dense acc",
           "dense + same steps", "one-shot acc", "fine-tuned acc", "drop (pp)", "speed-up (b128)",
           "magnitude sparsity at >= acc", "its acc", "its speed-up"]  # fmt: skip


def table(results: Sequence[dict[str, Any]]) -> str:
    rows = []
    for res in results:
        for r in res["rows"]:
            rows.append({
                "model": r["model"], "criterion": r["criterion"],
                "FLOPs removed": f"{r['flops_removed']:.1%}",
                "params kept": f"{r['params_ratio']:.1%}",
                "dense acc": _pm(r["dense_acc"], r["dense_acc_std"]),
                "dense + same steps": _pm(r["dense_more_acc"], r["dense_more_acc_std"]),
                "one-shot acc": _pm(r["acc_before"], r["acc_before_std"]),
                "fine-tuned acc": _pm(r["acc_after"], r["acc_after_std"]),
                "drop (pp)": f"{r['drop_pp']:.2f} / {r['drop_vs_more_pp']:.2f}",
                "speed-up (b128)": f"{r['speedup']:.2f}x",
                "magnitude sparsity at >= acc": "none" if r["magnitude_sparsity"] is None
                else f"{r['magnitude_sparsity']:.0%}",
                "its acc": "" if r["magnitude_acc"] is None else f"{r['magnitude_acc']:.4f}",
                "its speed-up": f"{r['magnitude_speedup']:.2f}x",
            })  # fmt: skip
    return markdown_table(rows, COLUMNS)


def magnitude_table(results: Sequence[dict[str, Any]]) -> str:
    rows = [{"model": r["model"], "sparsity": f"{r['sparsity']:.0%}",
             "one-shot acc": _pm(r["acc_before"], r["acc_before_std"]),
             "fine-tuned acc": _pm(r["acc_after"], r["acc_after_std"])}
            for res in results for r in res["magnitude"]]  # fmt: skip
    return markdown_table(rows, ["model", "sparsity", "one-shot acc", "fine-tuned acc"])


def level_table(results: Sequence[dict[str, Any]]) -> str:
    """Per model and level: the smaller model's counts, its check and its speed."""
    rows = [
        {
            "model": res["model"], "FLOPs target": f"{float(lv):.0%}",
            "FLOPs removed": f"{v['flops_removed']:.1%}",
            "channel ratio": f"{v['channel_ratio']:.4g}",
            "params kept": f"{v['params_ratio']:.1%}",
            "small = masked (max abs diff)": f"{v['max_abs_diff_small_vs_masked']:.1e}",
            "small acc / masked acc": f"{v['small_accuracy']:.4f} / {v['masked_accuracy']:.4f}",
            "dense ms": f"{v['dense_ms']:.1f}", "small ms": f"{v['small_ms']:.1f}",
            "speed-up": f"{v['speedup']:.2f}x",
            "unstructured": f"{v['unstructured_timed_sparsity']:.0%} sparse, "
                            f"{v['unstructured_speedup']:.2f}x",
        }
        for res in results
        for lv, v in res["levels"].items()
    ]  # fmt: skip
    return markdown_table(rows, list(rows[0]))


def write(out: str, results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Writes ``structured.json`` (``{"meta", "results"}``) and ``structured.md`` in ``out``."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "structured.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    checks = []
    for res in results:
        for c, v in res["check_50"].items():
            verdict = "holds" if v["holds"] else "does not hold"
            checks.append(
                f"- {res['model']}, {c}: dense {v['dense']:.4f} ({v['dense_more']:.4f} with the "
                f"fine-tuning's steps), fine-tuned {v['after']:.4f}, drop {v['drop_pp']:.2f} / "
                f"{v['drop_vs_more_pp']:.2f} pp: {verdict}"
            )
    sizes = [
        f"- {r['model']} {r['config']['kw'] or '(default)'}, input {tuple(r['input_shape'])}: "
        f"{r['config']['dense_steps']} dense steps, {r['config']['finetune_steps']} fine-tuning "
        f"steps, batch {meta['batch']}, {r['seconds']:.0f} s"
        for r in results
    ]
    m = meta["machine"]
    text = (
        "# Structured pruning on mnist5k\n\n"
        f"Generated by `python -m experiments.structured.run` in {meta['seconds'] / 60:.0f} min on "
        f"{m['cpu']} ({m['cores']} cores, {m['backend']}, JAX {m['jax']}); {meta['seeds']} seeds "
        f"({', '.join(map(str, SEEDS))}), accuracies as mean ± std on the 1,000 test images, "
        "batch norms recalibrated on 1,024 training images before each test. Speed-ups: jitted "
        f"inference at batch {EVAL_BATCH}, dense and pruned interleaved in one process; all "
        "criteria and seeds of a level share its widths, so its FLOPs, params and speed. The "
        "module docstring has the method.\n\n"
        + "\n".join(sizes)
        + "\n\n"
        + table(results)
        + "\nDrops: against the dense model / against the dense model trained for as many more "
        "steps as the fine-tuning (the same total training). 'magnitude sparsity at >= acc': the "
        "highest sparsity of unstructured magnitude pruning (same fine-tuning) whose accuracy is "
        "at least the row's; it runs at the dense model's speed.\n\n"
        "50% of FLOPs removed, fine-tuned, against the dense model (target: <= 1 pp by both):\n\n"
        + "\n".join(checks)
        + "\n\nThe smaller models (seed 0, first criterion): `state.finalize()`, then "
        "`jc.structured.small`, against the masked model and the dense model:\n\n"
        + level_table(results)
        + "\nUnstructured magnitude pruning (per layer, kernels), fine-tuned with the masks "
        "fixed:\n\n" + magnitude_table(results)
    )
    with open(os.path.join(out, "structured.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return text


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="LeNet-5 on 256 images, a few steps")
    ap.add_argument("--out", default=None, help="results folder (docs/results)")
    ap.add_argument("--models", nargs="+", default=None, choices=list(CONFIGS))
    args = ap.parse_args(argv)
    out = args.out or ("/tmp/jaxcomp_structured_smoke" if args.smoke else "docs/results")
    configs = SMOKE if args.smoke else CONFIGS
    names = list(configs) if args.models is None else args.models
    t0 = time.perf_counter()
    results = [run_model(n, configs[n], args.smoke) for n in names]
    meta = {
        "machine": machine(), "seeds": len(SEEDS), "batch": BATCH,
        "levels": list(SMOKE_LEVELS if args.smoke else LEVELS),
        "lr": LR, "eval_batch": EVAL_BATCH, "time_repeats": TIME_REPEATS, "smoke": args.smoke,
        "dataset": "mnist5k (4000 train / 1000 test); 32x32x3 (padded, channel repeated) for "
                   "vgg_small and resnet20",
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    log(write(out, results, meta))
    return results


if __name__ == "__main__":
    main()

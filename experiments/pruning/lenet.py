"""Accuracy against sparsity for LeNet-300-100 and LeNet-5 on MNIST (mnist5k), five criteria.

A dense model is trained on the embedded MNIST subset (4,000 train / 1,000 test images). It is
then pruned one-shot at each sparsity by

* ``random``: a random subset per layer (``jc.prune.random``);
* ``magnitude``: the smallest ``|w|`` per layer (``jc.prune.magnitude``);
* ``magnitude_global``: the smallest ``|w|`` with one threshold over all layers;
* ``obd``: the least ``0.5 * h_ii * w**2`` per layer (``jc.prune.obd``), and ``obd_global`` over all
  layers (as LeCun et al. rank), with ``h_ii`` the exact diagonal of the Gauss-Newton matrix of the
  training loss (``jc.prune.gauss_newton_diag``; positive, like LeCun et al.'s approximation).
  Hutchinson's estimate of the Hessian diagonal (``jc.prune.hutchinson_diag``) is measured
  against it too: with 64 probes it is mostly noise on LeNet-300-100's hidden layers, see the
  ``hessian_check`` entry of the results;
* ``obs``: layer-wise Optimal Brain Surgeon (``jc.prune.obs_prune``) with the layer Hessians of
  the dense model's layer inputs on training images (``jc.prune.layer_hessians``);

and its test accuracy is measured as pruned ("no retraining") and after retraining the surviving
weights with the masks fixed (``jc.prune.fixed_masks``). Every kernel is pruned at the given
sparsity; biases are kept (the reported sparsity is that of the kernels, which are 99.8% of the
weights).

Han et al.'s setting is then reproduced with iterative pruning driven by ``update``: global
magnitude pruning to 50, 75, 87.5 and 92% of the kernels with retraining between the steps and
after the last (``jc.prune.iterative_schedule``), i.e. about 12x fewer weights, against our own
dense baseline. For LeNet-300-100 we also run Zhu and Gupta's gradual pruning to the same
sparsity, a sensitivity scan (each layer pruned alone, test accuracy), and one-shot pruning at the
per-layer sparsities the scan allows for a 1-point drop.

Budget (~10-15 minutes on 2 shared CPU cores): LeNet-300-100 trains 20 dense epochs and retrains
4 epochs per point at sparsities 50-98%; LeNet-5 trains 8 dense epochs, retrains 2 epochs per
point and uses fewer sparsities (50, 80, 90, 95, 98%). OBS runs at every point of both models (one
pass per layer serves all sparsities, since the greedy removal order does not depend on the
target).

Run: ``python -m experiments.pruning.lenet [--smoke] [--out DIR] [--img DIR]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

import jaxcomp as jc
from experiments.common import write_results
from jaxcomp import prune

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METHODS = ("random", "magnitude", "magnitude_global", "obd", "obd_global", "obs")

CONFIGS = {
    "lenet300": {
        "dense_epochs": 20,
        "retrain_epochs": 4,
        "sparsities": (0.5, 0.7, 0.8, 0.9, 0.95, 0.98),
        "han_every_epochs": 3,
        "obd_examples": 1000,
        "obs_examples": 2000,
        "gradual": True,
        "sensitivity": True,
        "hessian_check": True,
    },
    "lenet5": {
        "dense_epochs": 8,
        "retrain_epochs": 2,
        "sparsities": (0.5, 0.8, 0.9, 0.95, 0.98),
        "han_every_epochs": 2,
        "obd_examples": 256,
        "obs_examples": 500,
        "gradual": False,
        "sensitivity": False,
        "hessian_check": False,
    },
}

SMOKE = {
    "dense_epochs": 1,
    "retrain_epochs": 1,
    "sparsities": (0.5,),  # one: OBS at 0.9 alone was 6 s of compute at the suite's -O0
    "han_every_epochs": 1,
    "obd_examples": 32,
    "obs_examples": 64,
    "gradual": False,
    "sensitivity": True,
    "hessian_check": False,
}

HAN_SPARSITIES = (0.5, 0.75, 0.875, 0.92)
LR_DENSE = 1e-3
LR_RETRAIN = 5e-4
BATCH = 128


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Runner:
    """One compiled retraining step and evaluation step per model, reused for every mask."""

    def __init__(self, model: Any, variables: dict[str, Any], data: jc.data.Dataset):
        self.model, self.data = model, data
        self.params = variables["params"]
        template = prune.magnitude(sparsity=0.0).init(self.params)[1].masks
        self.tx = optax.adam(LR_RETRAIN)
        self.state0 = jc.train.TrainState.create(
            apply_fn=model.apply, variables=variables, tx=self.tx, key=jax.random.key(1),
            transform=prune.fixed_masks(template),
        )  # fmt: skip
        self.train_step = jc.train.make_train_step()
        self.eval_step = jc.train.make_eval_step()

    def state(self, params: Any, masks: Any) -> jc.train.TrainState:
        c = prune.apply_masks(params, masks)
        return self.state0.replace(
            step=jnp.zeros((), jnp.int32), cparams=c, comp_state=prune.FixedMasksState(masks),
            opt_state=self.tx.init(c),
        )  # fmt: skip

    def accuracy(self, state: jc.train.TrainState) -> float:
        return jc.train.evaluate(
            state, self.data.x_test, self.data.y_test, eval_step=self.eval_step
        )["accuracy"]

    def retrain(self, state: jc.train.TrainState, epochs: int) -> tuple[float, Any]:
        steps = epochs * (self.data.num_train // BATCH)
        res = jc.train.fit(
            state, self.data, batch_size=BATCH, steps=steps, eval_every=steps, progress=False,
            train_step=self.train_step, eval_step=self.eval_step,
        )  # fmt: skip
        final = res.state
        # the masks held: every pruned weight is still exactly zero
        for m, w in zip(
            jax.tree.leaves(final.comp_state.masks), jax.tree.leaves(kernels(final.cparams)),
            strict=True,
        ):  # fmt: skip
            assert bool(jnp.all(jnp.where(m, True, w == 0)))
        return res.history[-1]["test_accuracy"], final


def kernels(params: Any) -> Any:
    """``params`` with the kernels (the selection every pruner here uses), others MaskedNode."""
    return jc.core.tree_select(params, jc.select.resolve(None, params))


def kernel_sparsity(params: Any) -> float:
    return jc.analysis.sparsity(kernels(params))


def train_dense(model: Any, data: jc.data.Dataset, epochs: int) -> tuple[dict[str, Any], float]:
    k_init, k_train = jax.random.split(jax.random.key(0))
    variables = jc.models.init(model, k_init, data.input_shape)
    state = jc.train.TrainState.create(
        apply_fn=model.apply, variables=variables, tx=optax.adam(LR_DENSE), key=k_train
    )
    steps = epochs * (data.num_train // BATCH)
    res = jc.train.fit(state, data, batch_size=BATCH, steps=steps, eval_every=steps, progress=False)
    return res.state.variables(), res.history[-1]["test_accuracy"]


def criterion_masks(
    name: str, model: Any, params: Any, data: jc.data.Dataset, sparsities: Sequence[float],
    cfg: dict[str, Any], cache: dict[str, Any],
) -> dict[float, tuple[Any, Any]]:  # fmt: skip
    """``{sparsity: (pruned params, masks)}`` for one criterion (``cache`` keeps curvatures)."""
    out = {}
    if name == "obs":
        x = data.x_train[: cfg["obs_examples"]]
        hs = prune.layer_hessians(model.apply, {"params": params}, x, damping=1e-2)
        for s, r in zip(
            sparsities, prune.obs_prune(params, hs, sparsity=list(sparsities)), strict=True
        ):
            out[s] = (r.params, r.masks)
        return out
    if name in ("obd", "obd_global"):
        if "gauss_newton" not in cache:
            x = jnp.asarray(data.x_train[: cfg["obd_examples"]])
            logits = lambda p, xb: model.apply({"params": p}, xb)
            cache["gauss_newton"] = prune.gauss_newton_diag(logits, params, x, batch_size=8)
        hd = cache["gauss_newton"]
    for s in sparsities:
        if name == "random":
            t = prune.random(sparsity=s, key=jax.random.key(3))
        elif name == "magnitude":
            t = prune.magnitude(sparsity=s)
        elif name == "magnitude_global":
            t = prune.magnitude(sparsity=s, scope="global")
        elif name == "obd":
            t = prune.obd(sparsity=s, hessian_diag=hd)
        else:
            t = prune.obd(sparsity=s, hessian_diag=hd, scope="global")
        c, st = t.init(params)
        out[s] = (c, st.masks)
    return out


def hessian_check(model: Any, params: Any, data: jc.data.Dataset, n: int, samples: int):
    """How well Hutchinson's estimate of the Hessian diagonal agrees with other curvatures.

    Per layer: the correlation of two independent Hutchinson estimates (``samples`` probes each),
    of one with the Gauss-Newton diagonal, and its fraction of negative entries; for the last
    layer, the correlation of the exact Hessian diagonal with the Gauss-Newton one (equal there:
    the logits are linear in the last kernel).
    """
    x, y = jnp.asarray(data.x_train[:n]), jnp.asarray(data.y_train[:n])
    loss = lambda p: jc.train.cross_entropy(model.apply({"params": p}, x), y)
    h1 = prune.hutchinson_diag(loss, params, key=jax.random.key(11), samples=samples)
    h2 = prune.hutchinson_diag(loss, params, key=jax.random.key(12), samples=samples)
    gn = prune.gauss_newton_diag(lambda p, xb: model.apply({"params": p}, xb), params, x)
    corr = lambda a, b: round(float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]), 4)
    out: dict[str, Any] = {"examples": n, "probes": samples, "layers": {}}
    for k in sorted(params):
        a, b, g = h1[k]["kernel"], h2[k]["kernel"], gn[k]["kernel"]
        out["layers"][k] = {
            "hutchinson_vs_hutchinson": corr(a, b), "hutchinson_vs_gauss_newton": corr(a, g),
            "hutchinson_negative_fraction": round(float(jnp.mean(a < 0)), 4),
        }  # fmt: skip
    last = sorted(params)[-1]
    ex = prune.exact_hessian_diag(loss, params, where=jc.select.by_regex(f"{last}/kernel"))
    out["exact_vs_gauss_newton_last_layer"] = corr(ex[last]["kernel"], gn[last]["kernel"])
    return out


def han_iterative(
    model: Any, variables: dict[str, Any], data: jc.data.Dataset, every_epochs: int,
    sparsities: Sequence[float] = HAN_SPARSITIES,
) -> dict[str, Any]:  # fmt: skip
    """Iterative global magnitude pruning with retraining, driven by ``update``."""
    spe = data.num_train // BATCH
    every = every_epochs * spe
    t = prune.magnitude(
        sparsity=prune.iterative_schedule(list(sparsities), every=every),
        scope="global", update_every=every,
    )  # fmt: skip
    steps = every * (len(sparsities) + 1)
    return _run_schedule(model, variables, data, t, steps, "han_iterative", sparsities[-1])


def zhu_gupta_gradual(
    model: Any, variables: dict[str, Any], data: jc.data.Dataset, epochs: int, target: float
) -> dict[str, Any]:
    """Gradual global magnitude pruning on the cubic schedule, masks every 10 steps."""
    spe = data.num_train // BATCH
    steps = epochs * spe
    sched = prune.gradual_schedule(target, begin=0, end=int(0.6 * steps))
    t = prune.magnitude(sparsity=sched, scope="global", update_every=10)
    return _run_schedule(model, variables, data, t, steps, "zhu_gupta_gradual", target)


def _run_schedule(model, variables, data, t, steps, name, target) -> dict[str, Any]:
    state = jc.train.TrainState.create(
        apply_fn=model.apply, variables=variables, tx=optax.adam(LR_RETRAIN),
        key=jax.random.key(2), transform=t,
    )  # fmt: skip
    res = jc.train.fit(state, data, batch_size=BATCH, steps=steps, eval_every=steps, progress=False)
    final = res.state.finalize()
    per_layer = {
        jc.core.path_str(p): round(float(jnp.mean(x == 0)), 4)
        for p, x in jax.tree_util.tree_leaves_with_path(final)
        if x.ndim >= 2
    }
    total = jc.analysis.param_count(final)
    nnz = jc.analysis.nonzero_count(final)
    return {
        "method": name,
        "target_sparsity": target,
        "kernel_sparsity": round(kernel_sparsity(final), 4),
        "accuracy": res.history[-1]["test_accuracy"],
        "params": total,
        "nonzeros": nnz,
        "compression": round(total / nnz, 2),
        "epochs": steps / (data.num_train // BATCH),
        "per_layer_sparsity": per_layer,
    }


def sensitivity(runner: Runner, grid: Sequence[float], max_drop: float, epochs: int):
    """Han et al.'s sensitivity scan, and one-shot pruning at the allocation it gives."""
    ev = lambda p: runner.accuracy(runner.state(p, runner.state0.comp_state.masks))
    res = prune.sensitivity_scan(ev, runner.params, sparsities=grid)
    alloc = prune.sparsities_for_drop(res, max_drop=max_drop)
    c, st = prune.magnitude(sparsity=alloc).init(runner.params)
    state = runner.state(c, st.masks)
    before = runner.accuracy(state)
    after, _ = runner.retrain(state, epochs)
    rows = [
        {
            "layer": p,
            **{f"s={s:g}": round(d, 4) for s, d in zip(res.sparsities, drops, strict=True)},
        }
        for p, drops in res.drops().items()
    ]
    summary = {
        "max_drop": max_drop, "allocation": alloc, "kernel_sparsity": round(kernel_sparsity(c), 4),
        "accuracy_no_retrain": before, "accuracy_retrained": after,
    }  # fmt: skip
    return rows, summary


def run_model(name: str, cfg: dict[str, Any], data: jc.data.Dataset) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = jc.models.get(name)
    variables, dense_acc = train_dense(model, data, cfg["dense_epochs"])
    log(f"[{name}] dense accuracy {dense_acc:.4f} ({time.perf_counter() - t0:.0f}s)")
    runner = Runner(model, variables, data)
    sparsities = cfg["sparsities"]
    rows, timings, cache = [], {}, {}
    for method in METHODS:
        t1 = time.perf_counter()
        masks = criterion_masks(method, model, runner.params, data, sparsities, cfg, cache)
        t_crit = time.perf_counter() - t1
        for s in sparsities:
            params, m = masks[s]
            state = runner.state(params, m)
            before = runner.accuracy(state)
            after, _ = runner.retrain(state, cfg["retrain_epochs"])
            rows.append({
                "model": name, "method": method, "sparsity": s,
                "kernel_sparsity": round(kernel_sparsity(params), 4),
                "accuracy_no_retrain": before, "accuracy_retrained": after,
            })  # fmt: skip
        timings[method] = {
            "criterion_s": round(t_crit, 1),
            "total_s": round(time.perf_counter() - t1, 1),
        }
        log(f"[{name}] {method}: {timings[method]}")
    t1 = time.perf_counter()
    schedule_rows = [han_iterative(model, variables, data, cfg["han_every_epochs"])]
    if cfg["gradual"]:
        epochs = cfg["han_every_epochs"] * (len(HAN_SPARSITIES) + 1)
        schedule_rows.append(zhu_gupta_gradual(model, variables, data, epochs, HAN_SPARSITIES[-1]))
    timings["schedules_s"] = round(time.perf_counter() - t1, 1)
    log(f"[{name}] schedules: {schedule_rows}")
    sens = None
    if cfg["sensitivity"]:
        t1 = time.perf_counter()
        grid = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99) if cfg is not SMOKE else (0.5, 0.9)
        sens = sensitivity(runner, grid, max_drop=0.01, epochs=cfg["retrain_epochs"])
        timings["sensitivity_s"] = round(time.perf_counter() - t1, 1)
    check = None
    if cfg["hessian_check"]:
        t1 = time.perf_counter()
        check = hessian_check(model, runner.params, data, 500, 64)
        timings["hessian_check_s"] = round(time.perf_counter() - t1, 1)
        log(f"[{name}] hessian check: {check}")
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    n_params = jc.analysis.param_count(runner.params)
    return {
        "model": name, "dense_accuracy": dense_acc, "params": n_params, "rows": rows,
        "schedules": schedule_rows, "sensitivity": sens, "hessian_check": check,
        "timings": timings,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
    }  # fmt: skip


def wide_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per sparsity: each method's accuracy without and with retraining."""
    out = []
    for s in result["config"]["sparsities"]:
        row: dict[str, Any] = {"sparsity": s}
        for r in result["rows"]:
            if r["sparsity"] == s:
                row[r["method"]] = round(r["accuracy_no_retrain"], 4)
                row[f"{r['method']}+rt"] = round(r["accuracy_retrained"], 4)
        out.append(row)
    return out


def plot(result: dict[str, Any], path: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    palette = ["tab:gray", "tab:blue", "tab:cyan", "tab:orange", "tab:brown", "tab:red"]
    colors = dict(zip(METHODS, palette, strict=True))
    for m in METHODS:
        rs = [r for r in result["rows"] if r["method"] == m]
        xs = [100 * r["sparsity"] for r in rs]
        ax.plot(xs, [r["accuracy_no_retrain"] for r in rs], "--o", color=colors[m], ms=3,
                label=f"{m} (no retraining)")  # fmt: skip
        ax.plot(xs, [r["accuracy_retrained"] for r in rs], "-s", color=colors[m], ms=3,
                label=f"{m} (retrained)")  # fmt: skip
    ax.axhline(result["dense_accuracy"], color="k", lw=0.8, label="dense")
    for sr, marker in zip(result["schedules"], ["*", "P"], strict=False):
        ax.plot(100 * sr["kernel_sparsity"], sr["accuracy"], marker, ms=12 if marker == "*" else 8,
                label=f"{sr['method']} ({sr['compression']}x)")  # fmt: skip
    ax.set_xlabel("kernel sparsity (%)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{result['model']} on mnist5k: one-shot pruning, then retraining")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="toy size, for the test suite")
    ap.add_argument("--out", default=None, help="results folder (docs/results/pruning)")
    ap.add_argument("--img", default=None, help="plot folder (docs/img; --out when --smoke)")
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args(argv)
    out = args.out or ("/tmp/jaxcomp_pruning_smoke" if args.smoke else "docs/results/pruning")
    img = args.img or (out if args.smoke else "docs/img")
    os.makedirs(img, exist_ok=True)
    # the smoke runs LeNet-300-100 on the 8x8 digits, so that OBS's layers are small
    data = jc.data.load("digits" if args.smoke else "mnist5k")
    models = ["lenet300"] if args.smoke else args.models
    results = {}
    for name in models:
        cfg = SMOKE if args.smoke else CONFIGS[name]
        r = run_model(name, cfg, data)
        results[name] = r
        cols = ["sparsity", *[c for m in METHODS for c in (m, f"{m}+rt")]]
        table = write_results(out, f"{name}_accuracy", wide_table(r), cols, meta=r)
        sched_cols = ["method", "target_sparsity", "kernel_sparsity", "accuracy", "params",
                      "nonzeros", "compression", "epochs"]  # fmt: skip
        write_results(out, f"{name}_schedules", r["schedules"], sched_cols,
                      meta={"dense_accuracy": r["dense_accuracy"]})  # fmt: skip
        if r["sensitivity"] is not None:
            rows, summary = r["sensitivity"]
            write_results(out, f"{name}_sensitivity", rows, list(rows[0]), meta=summary)
        plot(r, os.path.join(img, f"pruning_{name}.png"))
        log(f"[{name}] dense {r['dense_accuracy']:.4f}\n{table}")
    return results


if __name__ == "__main__":
    main()

"""Teacher-student distillation on mnist5k: every method against the student trained alone.

Two teacher-student pairs, each student trained from scratch and with each method for the same
number of optimizer steps, over several seeds (the seed fixes the student's init and batch
order; the teacher is trained once):

* dense: teacher LeNet-300-100, student MLP 784-30-10. Scratch (labels only), KD (Hinton et
  al.), mimic (logit L2, Ba and Caruana), FitNets (hint stage, then KD), neuron-selective
  (Luo et al., with labels), pseudo data (MUNGE + KD, Bucila et al.) and Bayesian dark knowledge
  (SGLD teacher, Korattikara et al.).
* conv: teacher LeNet-5, student a LeNet-5-shaped ConvNet with 4 and 8 filters. Scratch, KD,
  attention transfer (with labels; Zagoruyko and Komodakis) and attention transfer + KD.

Teachers are trained with random +-2 pixel shifts (the students are not), as Hinton et al.'s
MNIST teacher was trained with jitter: a stronger teacher whose soft outputs on the training
images are not all one-hot.

Run ``python -m experiments.distillation.compare [--smoke] [--out DIR] [--seeds N]``. The full run
writes ``distillation.json``/``.md`` to ``docs/results/distillation/`` and
``docs/img/distillation_accuracy.png``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxcomp as jc
from experiments.common import EVAL_STEP
from experiments.common import adam
from experiments.common import train
from experiments.common import write_results
from jaxcomp import distill

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMNS = [
    "pair",
    "method",
    "accuracy_mean",
    "accuracy_std",
    "delta_vs_scratch",
    "per_seed",
    "seconds",
]


# Shared optimizer (jit caches on the state's static fields, the optimizer among them), and the
# shared eval step of experiments.common, which its train() uses too: students of one
# architecture share one compiled evaluation.
TX = adam(1e-3)


def shift(x: np.ndarray, rng: np.random.Generator, margin: int = 2) -> np.ndarray:
    """Random translations of each image by up to ``margin`` pixels (zero fill)."""
    b, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
    oy = rng.integers(0, 2 * margin + 1, b)
    ox = rng.integers(0, 2 * margin + 1, b)
    rows = (oy[:, None] + np.arange(h))[:, :, None]
    cols = (ox[:, None] + np.arange(w))[:, None, :]
    return xp[np.arange(b)[:, None, None], rows, cols]


def train_teacher(model: Any, data: jc.data.Dataset, *, steps: int, batch_size: int) -> Any:
    """Trains a teacher with shift augmentation; returns (variables, test accuracy)."""
    st, acc = train(model, data, steps=steps, seed=1234, batch_size=batch_size, augment=shift)
    return st.variables(), acc


def subset(data: jc.data.Dataset, n_train: int, n_test: int) -> jc.data.Dataset:
    """A fixed random subset of each split (for the smoke run; mnist5k is sorted by label)."""
    rng = np.random.default_rng(0)
    tr = rng.permutation(data.num_train)[:n_train]
    te = rng.permutation(data.num_test)[:n_test]
    return jc.data.Dataset(
        data.x_train[tr],
        data.y_train[tr],
        data.x_test[te],
        data.y_test[te],
        num_classes=data.num_classes,
        name=f"{data.name}[{n_train}]",
    )


def dense_methods(t_apply, tv, data, cfg) -> dict[str, Callable[[int], dict[str, Any]]]:
    """The dense pair's methods: name -> run(seed) -> {"accuracy", ...}."""
    student = distill.MLP(features=(cfg["hidden"],))
    steps, bs = cfg["steps"], cfg["batch_size"]
    kd = distill.kd_term(temperature=4.0, alpha=0.9)
    # one KD objective for plain KD, FitNets' second stage and the pseudo data: the train step
    # is cached per objective (experiments.common.train_step), so the three share one program
    kd_obj = distill.objective(t_apply, tv, [kd])

    def run(obj, seed, data=data, variables=None, steps=steps):
        st, acc = train(
            student, data, steps=steps, seed=seed, objective=obj, variables=variables, batch_size=bs
        )
        return st, acc

    def scratch(seed):
        return {"accuracy": run(None, seed)[1]}

    def kd_(seed):
        return {"accuracy": run(kd_obj, seed)[1]}

    def mimic(seed):
        return {"accuracy": run(distill.objective(t_apply, tv, [distill.mimic_term()]), seed)[1]}

    def fitnets(seed):
        k_init, k_reg = jax.random.split(jax.random.key(seed))
        v = jc.models.init(student, k_init, data.input_shape)
        reg = distill.regressor(k_reg, (1, cfg["hidden"]), feats.shape)  # -> teacher's Dense_1
        v = {"params": distill.add_regressors(v["params"], {"hint": reg})}
        hint = distill.hint_term("Dense_0", "Dense_1", regressor="hint")
        hint_steps = steps // 6
        st, _ = run(distill.objective(t_apply, tv, [hint]), seed, variables=v, steps=hint_steps)
        v2 = {"params": distill.strip_regressors(st.params)}
        _, acc = run(kd_obj, seed, variables=v2, steps=steps - hint_steps)
        return {"accuracy": acc}

    _, got = jax.jit(jc.adapt.capture(t_apply, outputs="Dense_1"))(tv, data.x_train)
    feats = got.outputs["Dense_1"]
    idx = distill.select_neurons(feats, cfg["hidden"], criterion="variance")

    def neurons(seed):
        terms = [distill.label_term(), distill.neuron_term("Dense_0", "Dense_1", idx, weight=0.1)]
        return {"accuracy": run(distill.objective(t_apply, tv, terms), seed)[1]}

    def pseudo(seed):
        pd = distill.pseudo_data(
            data,
            t_apply,
            tv,
            key=jax.random.key(100 + seed),
            multiplier=2,
            p=0.2,
            scale=0.5,
            clip=(0.0, 1.0),
        )
        return {"accuracy": run(kd_obj, seed, data=pd)[1]}

    x_test = jnp.asarray(data.x_test)
    t_probs = jax.jit(lambda p: jax.nn.softmax(t_apply({"params": p}, x_test)))

    def bdk(seed):
        k_init, k_train, k_bdk = jax.random.split(jax.random.key(seed), 3)
        sv = jc.models.init(student, k_init, data.input_shape)
        s = jc.train.TrainState.create(apply_fn=student.apply, variables=sv, tx=TX, key=k_train)
        per_epoch = data.num_train // bs
        b = distill.bayesian_dark_knowledge(
            t_apply,
            num_train=data.num_train,
            learning_rate=cfg["sgld_lr"],
            prior_precision=1.0,
            input_noise=0.05,
            burn_in=per_epoch,
        )
        state = b.init(tv["params"], s, key=k_bdk)
        ens, count, step, epoch = 0.0, 0, 0, 0
        while step < steps:
            for xb, yb in jc.data.batches(
                data.x_train, data.y_train, batch_size=bs, seed=seed, epoch=epoch
            ):
                if step >= steps:
                    break
                state, _ = b.step(state, (xb, yb))
                step += 1
                if step > per_epoch and step % per_epoch == 0:  # one posterior sample per epoch
                    ens, count = ens + t_probs(state.teacher_params), count + 1
            epoch += 1
        acc = jc.train.evaluate(state.student, data.x_test, data.y_test, eval_step=EVAL_STEP)[
            "accuracy"
        ]
        ens_acc = float(jnp.mean(jnp.argmax(ens, -1) == data.y_test)) if count else float("nan")
        return {"accuracy": acc, "sgld_ensemble_accuracy": ens_acc, "samples": count}

    return {
        "scratch": scratch,
        "KD (T=4, alpha=0.9)": kd_,
        "mimic (logit L2)": mimic,
        "FitNets (hint, then KD)": fitnets,
        "neuron-selective (+labels)": neurons,
        "pseudo data (MUNGE x2, KD)": pseudo,
        "Bayesian dark knowledge": bdk,
    }


def conv_methods(t_apply, tv, data, cfg) -> dict[str, Callable[[int], dict[str, Any]]]:
    """The conv pair's methods."""
    student = distill.ConvNet(features=cfg["conv_features"], hidden=(32,))
    kd = distill.kd_term(temperature=4.0, alpha=0.9)
    at = distill.attention_term({"Conv_0": "Conv_0", "Conv_1": "Conv_1"}, weight=500.0)

    def run(terms, seed):
        obj = None if terms is None else distill.objective(t_apply, tv, terms)
        return {
            "accuracy": train(
                student,
                data,
                steps=cfg["conv_steps"],
                seed=seed,
                objective=obj,
                batch_size=cfg["batch_size"],
            )[1]
        }

    methods = {
        "scratch": lambda s: run(None, s),
        "KD (T=4, alpha=0.9)": lambda s: run([kd], s),
        "attention transfer (+labels)": lambda s: run([distill.label_term(), at], s),
        "attention transfer + KD": lambda s: run([kd, at], s),
    }
    keep = cfg.get("conv_methods")  # the smoke's subset (None: all)
    return {k: f for k, f in methods.items() if keep is None or k in keep}


def run_pair(pair: str, teacher_name: str, methods_fn, data, cfg, seeds) -> list[dict[str, Any]]:
    """Trains the teacher, then every method over the seeds; returns the table's rows."""
    t0 = time.perf_counter()
    teacher = cfg["teachers"].get(teacher_name) or jc.models.get(teacher_name)
    tv, t_acc = train_teacher(
        teacher, data, steps=cfg[f"{pair}_teacher_steps"], batch_size=cfg["batch_size"]
    )
    rows = [
        {
            "pair": pair,
            "method": f"teacher {teacher_name}",
            "accuracy_mean": t_acc,
            "accuracy_std": 0.0,
            "per_seed": f"{t_acc:.3f} (one run)",
            "params": jc.analysis.param_count(tv["params"]),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    ]
    print(f"[{pair}] teacher {teacher_name}: {t_acc:.4f}", flush=True)
    methods = methods_fn(teacher.apply, tv, data, cfg)
    scratch_mean = None
    for name, fn in methods.items():
        t0 = time.perf_counter()
        outs = [fn(s) for s in seeds]
        accs = np.array([o["accuracy"] for o in outs])
        row = {
            "pair": pair,
            "method": name,
            "accuracy_mean": float(accs.mean()),
            "accuracy_std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
            "per_seed": ", ".join(f"{a:.3f}" for a in accs),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if name == "scratch":
            scratch_mean = row["accuracy_mean"]
        row["delta_vs_scratch"] = row["accuracy_mean"] - scratch_mean
        if "sgld_ensemble_accuracy" in outs[0]:
            ens = np.array([o["sgld_ensemble_accuracy"] for o in outs])
            row["sgld_ensemble_accuracy"] = float(ens.mean())
            row["method"] += f" (SGLD teacher ensemble {ens.mean():.3f})"
        rows.append(row)
        print(
            f"[{pair}] {row['method']}: {row['accuracy_mean']:.4f} +- "
            f"{row['accuracy_std']:.4f} ({row['seconds']} s)",
            flush=True,
        )
    return rows


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """A bar chart of mean test accuracy with one-std error bars, one panel per pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4.5), squeeze=False)
    for ax, pair in zip(axes[0], pairs, strict=True):
        rs = [r for r in rows if r["pair"] == pair]
        names = [r["method"].split(" (SGLD")[0] for r in rs]
        means = [r["accuracy_mean"] for r in rs]
        stds = [r["accuracy_std"] for r in rs]
        ax.barh(range(len(rs)), means, xerr=stds, color=["gray"] + ["C0"] * (len(rs) - 1))
        ax.set_yticks(range(len(rs)), names, fontsize=8)
        ax.invert_yaxis()
        lo = min(means) - 0.03
        ax.set_xlim(lo, min(1.0, max(means) + 0.02))
        ax.set_xlabel("test accuracy (mnist5k, mean +- std over seeds)")
        ax.set_title(f"{pair} pair")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Runs the comparison; returns the table's rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="toy size, one seed (for the tests)")
    ap.add_argument(
        "--out", default=None, help="results folder (default docs/results/distillation)"
    )
    ap.add_argument("--seeds", type=int, default=3, help="student seeds per method")
    ap.add_argument("--pairs", default="dense,conv", help="comma-separated: dense, conv")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    data = jc.data.load("mnist5k")
    if args.smoke:
        data = subset(data, 256, 128)
        cfg = {
            "batch_size": 32,
            "hidden": 8,
            "steps": 16,
            "conv_steps": 4,
            "conv_features": (2, 4),
            "dense_teacher_steps": 8,
            # small stand-ins with the same layer names, so the smoke compiles quickly (the conv
            # teacher's kernels have the student's shapes: their initializers compile once)
            "teachers": {
                "lenet300": distill.MLP(features=(16, 16)),
                "lenet5": distill.ConvNet(features=(2, 4), hidden=(8,)),
            },
            "conv_teacher_steps": 4,
            "sgld_lr": 1e-5,
            # plain KD is the dense pair's too: each conv method compiles a conv step of its own
            "conv_methods": ("scratch", "attention transfer (+labels)", "attention transfer + KD"),
        }
        seeds = [0]
        out = args.out or os.path.join("/tmp", "jaxcomp_distill_smoke")
        img = os.path.join(out, "distillation_accuracy.png")
    else:
        per_epoch = data.num_train // 64
        cfg = {
            "batch_size": 64,
            "hidden": 30,
            "steps": 60 * per_epoch,
            "conv_steps": 15 * per_epoch,
            "conv_features": (4, 8),
            "dense_teacher_steps": 40 * per_epoch,
            "conv_teacher_steps": 15 * per_epoch,
            "sgld_lr": 2e-5,
            "teachers": {},
        }
        seeds = list(range(args.seeds))
        out = args.out or os.path.join(ROOT, "docs", "results", "distillation")
        img = (
            os.path.join(ROOT, "docs", "img", "distillation_accuracy.png")
            if args.out is None
            else os.path.join(out, "distillation_accuracy.png")
        )
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    unknown = sorted(set(pairs) - {"dense", "conv"})
    if unknown or not pairs:
        ap.error(f"--pairs must name dense and/or conv, got {args.pairs!r}")
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if "dense" in pairs:
        rows += run_pair("dense", "lenet300", dense_methods, data, cfg, seeds)
    if "conv" in pairs:
        rows += run_pair("conv", "lenet5", conv_methods, data, cfg, seeds)
    meta = {
        "dataset": data.name,
        "seeds": seeds,
        "config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if k != "teachers"
        },
        "smoke": args.smoke,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "device": jax.devices()[0].platform,
    }
    table = jc_write(out, rows, meta)
    plot(rows, img)
    print(table)
    print(f"total {meta['total_seconds']} s", flush=True)
    return rows


def jc_write(out: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Writes ``distillation.json`` and ``distillation.md``."""
    return write_results(out, "distillation", rows, COLUMNS, meta)


if __name__ == "__main__":
    main()

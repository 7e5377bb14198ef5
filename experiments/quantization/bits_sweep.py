"""Accuracy against bits for LeNet-5 on MNIST (mnist5k): PTQ, QAT, LSQ, k-means, binary, ternary.

A float LeNet-5 is trained on the embedded MNIST subset (4,000 train / 1,000 test images), then
compressed at 8, 4, 3, 2 and 1 bits by every method of ``jaxcomp.quant``:

* post-training quantization (no training): weights per channel with min/max or MSE-optimal
  clipping, and weights plus calibrated layer inputs (W+A, ``jc.quant.activations`` with
  ``jc.quant.calibrate``); at 1 bit, binarization after training (``binary_weights``);
* quantization-aware fine-tuning with the straight-through estimator: weights only, weights plus
  activations (moving-average ranges carried in the train state), and learned step sizes (LSQ);
* k-means weight sharing with ``2**bits`` centroids, before and after training the centroids
  (Deep Compression);
* binary weights: BinaryConnect (deterministic and stochastic, Glorot scale), binary-weight
  networks (XNOR-Net's weights), XNOR-Net (binary weights and inputs), BinaryNet (binary weights and
  sign activations), loss-aware binarization; ternary weights: TWN and ternary connect;

and a table of distortions: 16-bit fixed point trained with stochastic against nearest rounding
(Gupta et al. 2015), and binarization after training of a network trained with weight noise
(Merolla et al. 2016). The 8-bit PTQ model is also run with real int8 kernels (``run_int8``).

**Estimators and quantized back-propagation** (``bits_estimators.{json,md}``): W+A
quantization-aware fine-tuning with integer forward matmuls (``jc.quant.activations(...,
int_matmul=True)``, which quantizes each kernel per output channel itself; calibrated
moving-average input ranges) at 8, 4 and 2 bits, over ``--seeds`` fine-tuning seeds, with each
straight-through estimator (``"quantized"``: the gradient at the dequantized operands, the same
gradient as the fake-quantized model's; ``"latent"``: at the float operands, Qwix's) and each
quantized backward (``"pow2"``: the error signal rounded to powers of two, after Lin et al. 2015;
``"int8"``: int8 backward matmuls with stochastic rounding of the error signal, as AQT and Qwix).

Budget: to fit ~10 minutes on 2 shared CPU cores, the baseline trains 4 epochs and every
fine-tuning run 2 epochs (Adam, batch 64); the fixed-point runs train 2 epochs from scratch.

Run: ``python -m experiments.quantization.bits_sweep [--smoke] [--part all|sweep|estimators]
[--seeds N] [--out DIR] [--img PATH]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import matplotlib
import numpy as np
import optax

import jaxcomp as jc
import jaxcomp.quant as jq
from experiments.common import EVAL_STEP
from experiments.common import machine
from experiments.common import train
from experiments.common import write_results

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def evaluate(model, data, variables, *, apply_fn=None, transform=None) -> float:
    """Test accuracy of ``model`` run by ``apply_fn`` on ``transform.apply`` of the params."""
    state = jc.train.TrainState.create(
        apply_fn=apply_fn or model.apply, variables=variables, tx=optax.identity(),
        key=jax.random.key(0), transform=transform,
    )  # fmt: skip
    return jc.train.evaluate(state, data.x_test, data.y_test, eval_step=EVAL_STEP)["accuracy"]


def finetune(model, data, variables, *, epochs, lr, apply_fn=None, transform=None, seed=0):
    """Trains under ``transform`` (and ``apply_fn``); returns ``(state, test accuracy)``."""
    return train(model, data, variables=variables, transform=transform, epochs=epochs, lr=lr,
                 seed=seed, apply_fn=apply_fn)  # fmt: skip


def _calib_batches(data, n: int, bs: int = 256):
    return [data.x_train[i * bs : (i + 1) * bs] for i in range(n)]


SMOKE_JOBS = (
    ("float32", 32),
    ("PTQ W (min/max)", 2),
    ("PTQ W+A (calibrated)", 2),
    ("PTQ W8A8, run_int8 (integer kernels)", 8),
    ("QAT W (STE)", 2),
    ("binarize after training (BWN scale)", 1),
)
"""The smoke's jobs: one of each way a job runs (the baseline, an evaluation under a transform, a
calibrated adapter, integer kernels, a fine-tuning, a 1-bit row for the plot's markers); k-means'
rows evaluate and fine-tune as the fake-quantization rows do (its clustering: tests/test_quant*)."""


def _fq(bits: int, **kw: Any) -> jc.Transform:
    return jq.fake_quant(bits=bits, per_channel=True, **kw)


def jobs(
    model, data, base, *, base_acc, bits_list, epochs, lr, calib
) -> list[tuple[str, int, str, Any]]:
    """Every method at every bit width: ``(method, bits, kind, run)``, ``run()`` -> accuracy."""
    out: list[tuple[str, int, str, Any]] = []
    key = jax.random.key(1)
    ev = lambda **kw: lambda: evaluate(model, data, **kw)
    ft = lambda variables=base, **kw: lambda: finetune(model, data, variables, epochs=epochs,
                                                       lr=kw.pop("lr", lr), **kw)[1]  # fmt: skip
    out.append(("float32", 32, "baseline", lambda: base_acc))
    for b in (b for b in bits_list if b > 1):
        qapply = jq.activations(model.apply, [(".*", b)])

        def ptq_wa(b=b, qapply=qapply):
            t = _fq(b)
            wq = {"params": t.apply(*t.init(base["params"]))}
            return evaluate(model, data, jq.calibrate(qapply, wq, calib, train=False),
                            apply_fn=qapply)  # fmt: skip

        def qat_wa(b=b, qapply=qapply):
            stats = jq.calibrate(qapply, base, calib, train=False)
            return finetune(model, data, stats, epochs=epochs, lr=lr, apply_fn=qapply,
                            transform=_fq(b))[1]  # fmt: skip

        out += [
            ("PTQ W (min/max)", b, "ptq", ev(variables=base, transform=_fq(b))),
            ("PTQ W (MSE clipping)", b, "ptq",
             ev(variables=base, transform=_fq(b, observer=jq.mse(bits=b)))),
            ("PTQ W+A (calibrated)", b, "ptq", ptq_wa),
        ]  # fmt: skip
        if b == 8:
            t8 = _fq(8)
            fin = {"params": t8.finalize(*t8.init(base["params"]))}
            out.append(("PTQ W8A8, run_int8 (integer kernels)", 8, "ptq",
                        ev(variables=fin, apply_fn=jq.run_int8(model.apply))))  # fmt: skip
        out += [
            ("QAT W (STE)", b, "qat", ft(transform=_fq(b))),
            ("QAT W+A (STE, moving-average ranges)", b, "qat", qat_wa),
        ]
        if b <= 4:
            out.append(("LSQ W (learned step)", b, "qat", ft(transform=_fq(b, learned_step=True))))
    for b in bits_list:
        t = jq.kmeans(bits=b, keep_zeros=False, iterations=30)
        out += [
            ("k-means sharing, centroids not trained", b, "kmeans",
             ev(variables=base, transform=t)),
            ("k-means sharing, trained centroids", b, "kmeans", ft(transform=t, lr=lr / 3)),
        ]  # fmt: skip
    if 1 in bits_list:
        binarize = jq.binary_weights()
        # binary inputs for the hidden layers; the first and last layers see real inputs (as in
        # XNOR-Net and BinaryNet's experiments)
        first_float = lambda value: jq.activations(
            model.apply, [("Conv_0|Dense_1", None), (".*", value)]
        )
        out += [
            ("binarize after training (BWN scale)", 1, "binary",
             ev(variables=base, transform=binarize)),
            ("BinaryConnect (deterministic)", 1, "binary",
             ft(transform=jq.binary_connect(scale="glorot"))),
            ("BinaryConnect (stochastic)", 1, "binary",
             ft(transform=jq.binary_connect(rounding="stochastic", scale="glorot", key=key))),
            ("BWN (XNOR-Net weights)", 1, "binary", ft(transform=binarize)),
            ("XNOR-Net (weights + inputs)", 1, "binary",
             ft(transform=binarize, apply_fn=first_float("xnor"))),
            ("BinaryNet (sign weights + activations)", 1, "binary",
             ft(transform=binarize, apply_fn=first_float(1))),
            ("LAB (loss-aware)", 1, "binary", ft(transform=jq.loss_aware_binary())),
        ]  # fmt: skip
    if 2 in bits_list:
        out += [
            ("TWN (ternary, 0.7 mean|W|)", 2, "ternary", ft(transform=jq.ternary_weights())),
            ("ternary connect (stochastic)", 2, "ternary",
             ft(transform=jq.ternary_connect(scale="glorot", key=key))),
        ]  # fmt: skip
    return out


ESTIMATOR_VARIANTS = (
    ("quantized", "float"),
    ("latent", "float"),
    ("quantized", "pow2"),
    ("quantized", "int8"),
)
"""The ``(estimator, backward)`` pairs of the estimator table."""


def estimator_rows(model, data, base, *, bits_list, epochs, lr, calib, seeds, log,
                   variants=ESTIMATOR_VARIANTS) -> list[dict[str, Any]]:  # fmt: skip
    """W+A QAT with integer forward matmuls for each estimator and backward, per bits and seed."""
    rows = []
    for b in bits_list:
        for estimator, backward in variants:
            qapply = jq.activations(model.apply, [(".*", b)], int_matmul=True,
                                    estimator=estimator, backward=backward)  # fmt: skip
            stats = jq.calibrate(qapply, base, calib, train=False)
            accs = [
                finetune(model, data, stats, epochs=epochs, lr=lr, apply_fn=qapply, seed=seed)[1]
                for seed in seeds
            ]
            rows.append({
                "method": f"QAT W+A, int matmuls, estimator={estimator}, backward={backward}",
                "bits": b, "estimator": estimator, "backward": backward,
                "accuracy": round(float(np.mean(accs)), 4), "std": round(float(np.std(accs)), 4),
                "seeds": [round(float(a), 4) for a in accs],
            })  # fmt: skip
            log(f"{rows[-1]['method']:64s} {b} bits  acc {rows[-1]['accuracy']:.4f} "
                f"± {rows[-1]['std']:.4f} {rows[-1]['seeds']}")  # fmt: skip
    return rows


def sweep(model, data, base, *, base_acc, bits_list, epochs, lr, calib, log, only=None):
    """Runs :func:`jobs` (the ``(method, bits)`` in ``only`` if given); returns the rows."""
    rows = []
    todo = jobs(model, data, base, base_acc=base_acc, bits_list=bits_list, epochs=epochs, lr=lr,
                calib=calib)  # fmt: skip
    for method, bits, kind, run in todo:
        if only is not None and (method, bits) not in only:
            continue
        acc = run()
        rows.append({"method": method, "bits": bits, "accuracy": round(float(acc), 4),
                     "kind": kind})  # fmt: skip
        log(f"{method:42s} {bits!s:>5} bits  acc {acc:.4f}")
    return rows


def distortions(model, data, base, *, epochs, lr, log) -> list[dict[str, Any]]:
    """Gupta's fixed point (stochastic vs nearest) and Merolla's noise-then-binarize."""
    rows = []
    fresh = jc.models.init(model, jax.random.key(7), data.input_shape)
    for rounding in ("stochastic", "nearest"):
        t = jq.fixed_point(word_length=16, fractional_length=12, rounding=rounding,
                           key=jax.random.key(3))  # fmt: skip
        _, acc = finetune(model, data, fresh, epochs=epochs, lr=1e-4, transform=t)
        rows.append({"experiment": f"fixed point <4,12> from scratch, {rounding} rounding, lr 1e-4",
                     "accuracy": round(acc, 4)})  # fmt: skip
        log(rows[-1])
    binarize = jq.binary_weights()
    acc_base = evaluate(model, data, base, transform=binarize)
    rows.append({"experiment": "baseline, binarized after training",
                 "accuracy": round(acc_base, 4)})  # fmt: skip
    log(rows[-1])
    noisy, acc_noisy = finetune(model, data, base, epochs=epochs, lr=lr,
                                transform=jq.noise(std=0.5, key=jax.random.key(4)))  # fmt: skip
    rows.append({"experiment": "fine-tuned with additive noise (0.5 rms), clean",
                 "accuracy": round(acc_noisy, 4)})  # fmt: skip
    noisy_vars = {"params": noisy.finalize()}
    acc_nb = evaluate(model, data, noisy_vars, transform=binarize)
    rows.append({"experiment": "fine-tuned with additive noise (0.5 rms), binarized after",
                 "accuracy": round(acc_nb, 4)})  # fmt: skip
    log(rows[-2:])
    return rows


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Accuracy against bits, one line per method; binary and ternary as markers."""
    fig, ax = plt.subplots(figsize=(11, 5.5))
    base = next(r["accuracy"] for r in rows if r["kind"] == "baseline")
    ax.axhline(base, color="k", ls=":", label=f"float32 ({base:.3f})")
    lines = [r["method"] for r in rows if r["kind"] in ("ptq", "qat", "kmeans")]
    for method in dict.fromkeys(lines):
        pts = sorted((r["bits"], r["accuracy"]) for r in rows if r["method"] == method)
        if len(pts) > 1:
            ax.plot(*zip(*pts, strict=True), marker="o", label=method)
    for r in rows:
        if r["kind"] in ("binary", "ternary"):
            x = 1.0 if r["kind"] == "binary" else np.log2(3)
            ax.scatter([x], [r["accuracy"]], marker="x" if r["kind"] == "binary" else "^",
                       label=r["method"])  # fmt: skip
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("test accuracy (mnist5k)")
    ax.set_xticks([1, 2, 3, 4, 8])
    ax.set_title("LeNet-5 on MNIST (4k train): accuracy against bits")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy size, a few steps")
    parser.add_argument("--out", default="docs/results/quantization")
    parser.add_argument("--img", default=None, help="the plot (default docs/img/...)")
    parser.add_argument("--part", default="all", choices=("all", "sweep", "estimators"),
                        help="the sweep and distortions, the estimator table, or both")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=2, help="fine-tuning seeds of the estimators")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    t0 = time.perf_counter()
    data = jc.data.load("mnist5k")
    if args.smoke:
        rng = np.random.default_rng(0)
        tr, te = rng.permutation(data.num_train)[:128], rng.permutation(data.num_test)[:64]
        data = data.replace(x_train=data.x_train[tr], y_train=data.y_train[tr],
                            x_test=data.x_test[te], y_test=data.y_test[te])  # fmt: skip
        base_epochs, epochs, bits_list, n_calib = 1, 1, (8, 2, 1), 1
    else:
        base_epochs, epochs, bits_list, n_calib = 4, 2, (8, 4, 3, 2, 1), 4
    img = args.img or (
        os.path.join(args.out, "quantization_bits.png") if args.smoke
        else "docs/img/quantization_bits.png"
    )  # fmt: skip
    log = lambda *a: print(f"[{time.perf_counter() - t0:6.1f}s]", *a, flush=True)
    model = jc.models.get("lenet5")
    state, acc = finetune(model, data, jc.models.init(model, jax.random.key(0), data.input_shape),
                          epochs=base_epochs, lr=1e-3)  # fmt: skip
    base = state.variables()
    log(f"baseline accuracy {acc:.4f}")
    calib = _calib_batches(data, n_calib, bs=min(256, data.num_train))
    meta = {
        "model": "lenet5", "dataset": "mnist5k (4000 train / 1000 test)",
        "baseline_epochs": base_epochs, "baseline_accuracy": round(float(acc), 4),
        "finetune_epochs": epochs, "batch_size": 64, "optimizer": "adam", "smoke": args.smoke,
        "machine": machine(),
    }  # fmt: skip
    out: dict[str, Any] = {"rows": [], "distortions": [], "estimators": [], "meta": meta}
    if args.part in ("all", "sweep"):
        rows = sweep(model, data, base, base_acc=acc, bits_list=bits_list, epochs=epochs,
                     lr=3e-4, calib=calib, log=log,
                     only=SMOKE_JOBS if args.smoke else None)  # fmt: skip
        drows = (
            [] if args.smoke else distortions(model, data, base, epochs=epochs, lr=3e-4, log=log)
        )
        meta["seconds"] = round(time.perf_counter() - t0, 1)
        table = write_results(args.out, "bits_sweep", rows, ["method", "bits", "accuracy"], meta)
        dtable = write_results(args.out, "distortions", drows, ["experiment", "accuracy"], meta)
        plot(rows, img)
        print(table)
        print(dtable)
        out.update(rows=rows, distortions=drows)
    if args.part in ("all", "estimators"):
        seeds = [0] if args.smoke else list(range(args.seeds))
        smoke_variants = (("quantized", "float"),)  # every variant runs the same code here
        erows = estimator_rows(
            model, data, base, bits_list=[2] if args.smoke else [8, 4, 2], epochs=epochs,
            lr=3e-4, calib=calib, seeds=seeds, log=log,
            variants=smoke_variants if args.smoke else ESTIMATOR_VARIANTS,
        )  # fmt: skip
        emeta = {**meta, "seeds": seeds, "seconds": round(time.perf_counter() - t0, 1)}
        etable = write_results(args.out, "bits_estimators", erows,
                               ["bits", "estimator", "backward", "accuracy", "std", "seeds"],
                               emeta)  # fmt: skip
        print(etable)
        out["estimators"] = erows
    log("done")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])

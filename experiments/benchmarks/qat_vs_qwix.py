"""jaxcomp's W8A8 quantization-aware training side by side with Qwix's, in one process.

For an MLP 784-1024-1024-10 and LeNet-5 at batch 256, the jitted training steps (forward,
backward, Adam; ``jc.train.make_train_step``) of these configurations are timed interleaved
(``jc.analysis.compare_latency``), each as its median over the fp32 step's median in the same run:

* ``fp32``: the plain model;
* ``qwix_w8a8``: Qwix's quantized training, ``qwix.QtRule(weight_qtype=int8, act_qtype=int8)`` on
  every layer (``qwix.quantize_model`` over the unchanged model): int8 forward (dynamic per-example
  absmax ranges of the inputs, per-channel weights), backward at the float latent operands (Qwix's
  default when only the forward is quantized);
* ``qwix_w8a8_bwd_int8``: the same with ``bwd_qtype=int8`` and ``bwd_stochastic_rounding=
  "uniform"``: the backward matmuls in int8 on the forward's quantized operands;
* ``jaxcomp_w8a8_quantized``: ``jc.quant.activations(model.apply, [(".*", 8)], int_matmul=True)``
  (the adapter quantizes each kernel per output channel itself: W8A8; dynamic per-tensor affine
  input ranges), the default estimator (gradient at the dequantized operands);
* ``jaxcomp_w8a8_latent``: the same with ``estimator="latent"`` (Qwix's estimator);
* ``jaxcomp_w8a8_bwd_int8``: ``backward="int8"``: backward matmuls on int8 codes, stochastic
  rounding of the error signal (the pair of ``qwix_w8a8_bwd_int8``).

Then each configuration trains the same way on the embedded MNIST (``jc.data.load("mnist5k")``:
4,000 training and 1,000 test images; Adam 1e-3, batch 64, ``--epochs`` epochs, the same seeds,
the same initial weights) and its test accuracy is reported per seed and as mean and spread.

The JSON holds the machine (CPU model and ISA features, accelerator, JAX version) and the load
average during the run: the timings are ratios within one run, the machine may be shared
(``--clock cpu`` times by the process's CPU time, steadier there; see ``qat_overhead``).

Qwix is an optional benchmark dependency (``pip install jaxcomp[bench]``), not a runtime one.

Run: ``python -m experiments.benchmarks.qat_vs_qwix [--smoke] [--repeats N] [--batch N]
[--epochs N] [--seeds N] [--clock wall|cpu] [--no-accuracy] [--out DIR]``; prints one JSON object
and writes
``qat_vs_qwix.{json,md}`` under ``--out`` (default ``docs/results/quantization``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcomp as jc
import jaxcomp.quant as jq
from experiments.benchmarks.qat_overhead import MLP
from experiments.benchmarks.qat_overhead import compare
from experiments.common import EVAL_STEP
from experiments.common import machine
from experiments.common import markdown_table

# one jitted step for the timings and the training runs (states are not donated: the timed ones
# are reused)
STEP = jc.train.make_train_step(donate=False)


def _qwix():
    try:
        import qwix
    except ImportError as e:
        raise SystemExit(
            "qat_vs_qwix: this benchmark compares against Qwix, which is not installed. Install "
            "the benchmark extra: pip install 'jaxcomp[bench]' (or pip install qwix)"
        ) from e
    return qwix


def _qwix_apply(qwix, model, *, bwd_int8: bool) -> Callable[..., Any]:
    """Qwix's quantized ``apply`` of ``model``: the ``"dropout"`` key that ``jc.train`` passes
    feeds Qwix's ``"stochastic_rounding"`` stream."""
    extra = {"bwd_qtype": jnp.int8, "bwd_stochastic_rounding": "uniform"} if bwd_int8 else {}
    rule = qwix.QtRule(module_path=".*", weight_qtype=jnp.int8, act_qtype=jnp.int8, **extra)
    qmodel = qwix.quantize_model(model, qwix.QtProvider([rule]))

    def apply(variables, x, *, rngs=None, **kwargs):
        if bwd_int8:
            # a forward without a backward (evaluation) draws no noise, but Qwix asks for the
            # stream at trace time
            key = rngs["dropout"] if rngs else jax.random.key(0)
            rngs = {"stochastic_rounding": key}
        return qmodel.apply(variables, x, rngs=rngs, **kwargs)

    return apply


def configs(model, qwix) -> dict[str, Callable[..., Any]]:
    """``{name: apply_fn}`` of every configuration compared."""
    rules = [(".*", 8)]
    w8a8 = lambda **kw: jq.activations(model.apply, rules, int_matmul=True, **kw)
    return {
        "fp32": model.apply,
        "qwix_w8a8": _qwix_apply(qwix, model, bwd_int8=False),
        "qwix_w8a8_bwd_int8": _qwix_apply(qwix, model, bwd_int8=True),
        "jaxcomp_w8a8_quantized": w8a8(),
        "jaxcomp_w8a8_latent": w8a8(estimator="latent"),
        "jaxcomp_w8a8_bwd_int8": w8a8(backward="int8"),
    }


def bench_steps(model, applies, *, batch, shape, repeats, clock="wall") -> dict[str, Any]:
    """Interleaved timings of every configuration's training step; medians, ratios to fp32."""
    v = jc.models.init(model, jax.random.key(0), shape)
    x = jax.random.uniform(jax.random.key(2), (batch, *shape), jnp.float32)
    y = jax.random.randint(jax.random.key(3), (batch,), 0, 10)
    names = list(applies)
    tx = optax.adam(1e-3)
    states = tuple(
        jc.train.TrainState.create(apply_fn=applies[n], variables=v, tx=tx, key=jax.random.key(1))
        for n in names
    )

    def make(i):
        return lambda ss, b: STEP(ss[i], b)

    fns = {n: make(i) for i, n in enumerate(names)}
    return compare(fns, states, (x, y), repeats=repeats, clock=clock)


def accuracy(model, applies, data, *, epochs, seeds, batch_size=64, lr=1e-3) -> dict[str, Any]:
    """Test accuracy of every configuration after the same training, per seed."""
    out: dict[str, Any] = {}
    tx = optax.adam(lr)
    for name, apply_fn in applies.items():
        accs = []
        for seed in seeds:
            k_init, k_train = jax.random.split(jax.random.key(seed))
            v = jc.models.init(model, k_init, data.input_shape)
            state = jc.train.TrainState.create(apply_fn=apply_fn, variables=v, tx=tx, key=k_train)
            res = jc.train.fit(state, data, batch_size=batch_size, epochs=epochs, seed=seed,
                               train_step=STEP, eval_step=EVAL_STEP,
                               eval_every=epochs * (data.num_train // batch_size))  # fmt: skip
            accs.append(float(res.history[-1]["test_accuracy"]))
        out[name] = {"accuracy": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs))}
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a few steps")
    p.add_argument("--repeats", type=int, default=20, help="timed steps of each configuration")
    p.add_argument("--batch", type=int, default=256, help="batch of the timed steps (256)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs for the accuracies")
    p.add_argument("--seeds", type=int, default=2, help="seeds for the accuracies (>= 2)")
    p.add_argument("--out", default="docs/results/quantization")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time steps by the wall clock or by the process's CPU time")  # fmt: skip
    p.add_argument("--no-accuracy", action="store_true", help="time the steps only")
    args = p.parse_args(argv)
    if min(args.repeats, args.batch, args.epochs, args.seeds) < 1:
        p.error("--repeats, --batch, --epochs and --seeds must be >= 1")
    return args


def _acc_text(acc: dict[str, Any] | None) -> str:
    if acc is None:
        return ""
    each = ", ".join(f"{a:.3f}" for a in acc["accuracy"])
    return f"{acc['mean']:.4f} ± {acc['std']:.4f} ({each})"


def _rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for m in ("mlp", "lenet5"):
        if m not in result:
            continue
        for name, t in result[m]["step"].items():
            rows.append({
                "model": m, "configuration": name, "step_ms": round(t["median_ms"], 2),
                "ratio_to_fp32": round(t["ratio"], 3), "ratio_of_min": round(t["ratio_of_min"], 3),
                "test_accuracy": _acc_text(result[m].get("accuracy", {}).get(name)),
            })  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    qwix = _qwix()
    t0 = time.perf_counter()
    data = jc.data.load("mnist5k")
    if args.smoke:
        cases = {"mlp": (MLP(hidden=(32, 32)), 64)}
        repeats, seeds, epochs = 2, [0], 1
        rng = np.random.default_rng(0)
        tr, te = rng.permutation(data.num_train)[:128], rng.permutation(data.num_test)[:64]
        data = data.replace(x_train=data.x_train[tr], y_train=data.y_train[tr],
                            x_test=data.x_test[te], y_test=data.y_test[te])  # fmt: skip
    else:
        cases = {"mlp": (MLP(), args.batch), "lenet5": (jc.models.get("lenet5"), args.batch)}
        repeats, seeds, epochs = args.repeats, list(range(args.seeds)), args.epochs
    result: dict[str, Any] = {
        "benchmark": "qat_vs_qwix",
        "machine": machine(),
        "qwix": getattr(qwix, "__version__", "?"),
        "load_average_before": os.getloadavg(),
        "batch": cases["mlp"][1],
        "repeats": repeats,
        "clock": args.clock,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "training": {"dataset": "mnist5k (4000 train / 1000 test)" if not args.smoke else "smoke",
                     "epochs": epochs, "batch": 64, "optimizer": "adam 1e-3", "seeds": seeds},
    }  # fmt: skip
    for name, (model, batch) in cases.items():
        applies = configs(model, qwix)
        result[name] = {"step": bench_steps(model, applies, batch=batch, shape=data.input_shape,
                                            repeats=repeats, clock=args.clock)}  # fmt: skip
        print(f"[{time.perf_counter() - t0:6.1f}s] {name} steps timed", file=sys.stderr)
        if args.no_accuracy:
            continue
        result[name]["accuracy"] = accuracy(model, applies, data, epochs=epochs, seeds=seeds)
        print(f"[{time.perf_counter() - t0:6.1f}s] {name} trained", file=sys.stderr)
    result["load_average_after"] = os.getloadavg()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    rows = _rows(result)
    table = markdown_table(rows, ["model", "configuration", "step_ms", "ratio_to_fp32",
                                  "ratio_of_min", "test_accuracy"])  # fmt: skip
    if not args.smoke or args.out != parse_args([]).out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "qat_vs_qwix.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        with open(os.path.join(args.out, "qat_vs_qwix.md"), "w", encoding="utf-8") as f:
            f.write(table)
    print(json.dumps(result, indent=2))
    print(table)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

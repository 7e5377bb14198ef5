"""Overhead of W8A8 quantization-aware training: the jitted training step against fp32.

For an MLP 784-1024-1024-10 and LeNet-5 at batch 256, four jitted training steps (forward,
backward, Adam, the transform's update; ``jc.train.make_train_step``) are timed interleaved in the
same process (``jc.analysis.compare_latency``):

* ``fp32``: the plain model;
* ``w8a8_fake``: weights fake-quantized by ``jc.quant.fake_quant(bits=8, per_channel=True)`` and
  layer inputs by ``jc.quant.activations(model.apply, rules=[(".*", 8)])``, all in float (the usual
  simulated quantization);
* ``w8a8_int``: the same model, with ``int_matmul=True``: the forward contractions run as
  int8 x int8 -> int32 and the backward in float on the dequantized operands (a ``custom_vjp``);
* ``w8a8_int_adapter_only``: ``int_matmul=True`` without the weight transform: the adapter already
  quantizes each kernel per output channel for its int8 matmul (what the transform would add is
  the same values again);
* ``w8a8_int_adapter_only_latent``: the same with ``estimator="latent"`` (the backward at the float
  operands, Qwix's estimator; no dequantized residuals).

The integer contractions take the machine's faster exact path (``jaxcomp.quant._intdot``; the
JSON's ``paths`` says which per kind of contraction): on this AVX2-only EPYC, int8 for the Dense
layers and float32 of the integer codes for the convolutions.

The ratio is each step's median time over the fp32 step's (``ratio_of_min`` compares the fastest
calls, which suffer least from other processes on a shared machine). Targets: at most 0.85 of
fp32 on a CPU with VNNI or AMX, at most 1.0 on an AVX2-only CPU.

``--clock cpu`` times each call by the process's CPU time (``time.process_time``) instead of the
wall clock: on a machine shared with other jobs, a call that is descheduled for a while costs wall
time but no CPU time, so the CPU-time ratios stay steady where wall-clock medians do not; run it
with a single-threaded XLA (``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1"``) so that it measures the work of one thread.

Run: ``python -m experiments.benchmarks.qat_overhead [--smoke] [--repeats N] [--batch N]
[--pipeline N] [--clock wall|cpu]``; prints one JSON object.
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
from flax import linen as nn

import jaxcomp as jc
import jaxcomp.quant as jq
from experiments.common import latency_summary
from experiments.common import machine


class MLP(nn.Module):
    """784-1024-1024-10 with ReLU."""

    hidden: Sequence[int] = (1024, 1024)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for i, h in enumerate(self.hidden):
            x = nn.relu(nn.Dense(h, name=f"Dense_{i}")(x))
        return nn.Dense(self.num_classes, name=f"Dense_{len(self.hidden)}")(x)


def _states(model: nn.Module, shape: tuple[int, ...]) -> dict[str, Any]:
    v = jc.models.init(model, jax.random.key(0), shape)
    rules = [(".*", 8)]
    configs = {
        "fp32": (model.apply, None),
        "w8a8_fake": (jq.activations(model.apply, rules), jq.fake_quant(bits=8, per_channel=True)),
        "w8a8_int": (
            jq.activations(model.apply, rules, int_matmul=True),
            jq.fake_quant(bits=8, per_channel=True),
        ),
        "w8a8_int_adapter_only": (jq.activations(model.apply, rules, int_matmul=True), None),
        "w8a8_int_adapter_only_latent": (
            jq.activations(model.apply, rules, int_matmul=True, estimator="latent"),
            None,
        ),
    }
    out = {}
    for name, (apply_fn, transform) in configs.items():
        out[name] = jc.train.TrainState.create(
            apply_fn=apply_fn, variables=v, tx=optax.adam(1e-3), key=jax.random.key(1),
            transform=transform,
        )  # fmt: skip
    return out


def compare_cpu_time(
    fns: dict[str, Any], *args: Any, repeats: int, warmup: int = 3, rounds: int = 10
) -> dict[str, dict[str, Any]]:
    """``jc.analysis.compare_latency``'s interleaved rounds and result keys, with each call timed
    by the process's CPU time (``time.process_time``) instead of the wall clock."""
    jfns = {n: f if hasattr(f, "lower") else jax.jit(f) for n, f in fns.items()}
    for f in jfns.values():
        for _ in range(warmup):
            jax.block_until_ready(f(*args))
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    times: dict[str, list[float]] = {n: [] for n in jfns}
    for n_calls in per_round:
        for name, f in jfns.items():
            for _ in range(n_calls):
                t = time.process_time()
                jax.block_until_ready(f(*args))
                times[name].append(time.process_time() - t)
    stats = {n: {"median_s": float(np.median(t)), "min_s": float(np.min(t))}
             for n, t in times.items()}  # fmt: skip
    base = next(iter(stats.values()))
    for s in stats.values():
        s["ratio"] = s["median_s"] / base["median_s"]
        s["ratio_of_min"] = s["min_s"] / base["min_s"]
    return stats


def compare(fns: dict[str, Any], *args: Any, repeats: int, pipeline: int = 1, clock: str = "wall"):
    """Interleaved timings of ``fns`` on ``args`` by the wall clock (``compare_latency``) or the
    process's CPU time (:func:`compare_cpu_time`), in milliseconds with their ratios."""
    if clock == "cpu":
        return latency_summary(compare_cpu_time(fns, *args, repeats=repeats))
    res = jc.analysis.compare_latency(
        fns, *args, repeats=repeats, warmup=3, rounds=10, pipeline=pipeline
    )
    return latency_summary(res)


def bench(
    model: nn.Module,
    *,
    batch: int,
    shape: tuple[int, ...],
    repeats: int,
    pipeline: int = 1,
    clock: str = "wall",
) -> dict:
    """Interleaved timings of the four steps; returns medians and ratios to fp32."""
    states = _states(model, shape)
    step = jc.train.make_train_step(donate=False)
    x = jax.random.uniform(jax.random.key(2), (batch, *shape), jnp.float32)
    y = jax.random.randint(jax.random.key(3), (batch,), 0, 10)
    names = list(states)

    def make(i):
        return lambda ss, b: step(ss[i], b)

    fns = {name: make(i) for i, name in enumerate(names)}
    ss = tuple(states[n] for n in names)
    return compare(fns, ss, (x, y), repeats=repeats, pipeline=pipeline, clock=clock)


def parse_args(argv: Sequence[str] | None, doc: str, *, repeats: int) -> argparse.Namespace:
    """The options of the quantization benchmarks: ``--smoke``, ``--repeats``, ``--batch``,
    ``--pipeline`` (exits with a usage error on a batch or pipeline below 1)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, few repeats")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--batch", type=int, default=256, help="batch size (the issue's: 256)")
    parser.add_argument(
        "--pipeline", type=int, default=1,
        help="calls per timed sample, waited for once (device time on an accelerator)",
    )  # fmt: skip
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="time calls by the wall clock or by the process's CPU time (see the docstring)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.batch < 1 or args.pipeline < 1:
        parser.error(f"--batch and --pipeline must be >= 1, got {args.batch}, {args.pipeline}")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv, __doc__, repeats=60)
    if args.smoke:
        cases = {"mlp": (MLP(hidden=(16,)), 16, (8, 8, 1))}  # one hidden layer: fewer to compile
        repeats = 3
    else:
        b = args.batch
        cases = {
            "mlp": (MLP(), b, (28, 28, 1)),
            "lenet5": (jc.models.get("lenet5"), b, (28, 28, 1)),
        }
        repeats = args.repeats
    result: dict[str, Any] = {
        "benchmark": "qat_overhead",
        "machine": machine(),
        "paths": {k: jq.preferred_path(kind=k) for k in ("features", "conv", "rows")},
        "load_average_before": os.getloadavg(),
        "batch": args.batch if not args.smoke else 16,
        "pipeline": args.pipeline,
        "repeats": repeats,
        "clock": args.clock,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    for name, (model, batch, shape) in cases.items():
        result[name] = bench(
            model, batch=batch, shape=shape, repeats=repeats, pipeline=args.pipeline,
            clock=args.clock,
        )  # fmt: skip
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

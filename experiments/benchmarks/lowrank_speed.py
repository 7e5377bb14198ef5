"""Factorized layers against their dense layer: measured speed-up over the theoretical FLOP ratio.

For each kind of factorized layer of :mod:`jaxcomp.lowrank`, one layer at a size where the
factorization pays (a 1024x1024 ``Dense`` at batch 128; a 3x3 128->128 ``Conv`` on 16x16 inputs at
batch 16; the monochromatic first layer, 7x7 3->64 on 32x32), rewritten by the transform and run
through :func:`jaxcomp.adapt.run_factorized` (the factors, not the rebuilt kernel), is timed
against the same dense layer, interleaved in one process (``jc.analysis.compare_latency``).

Reported per kind: the MACs of both (``jc.analysis.flops``), the theoretical speed-up
``dense_macs / factored_macs`` (the factored MACs counted with depthwise convolutions as ``lax``
convolutions, ``run_factorized(..., depthwise="conv")``, since ``flops`` does not count the
shifted-slice sums that run on CPU), the measured speed-up ``dense_median / factored_median`` (the
median over three interleaved trials, the machine being shared), the efficiency
``measured / theoretical``, and the same from the minima. Target: efficiency >= 0.7 for every kind
(some factorized layer libraries run their factorized layers slower than the dense ones). Layer
kinds: SVD and Denil's predicted weights on the dense layer; SVD, Jaderberg, CP, Tucker-2,
biclustering and Rigamonti's separable bases on the 3x3 convolution; the separable bases also on a
5x5 one (where they pay more); Denton's monochromatic approximation on a 7x7 3->64 first layer.

Run: ``python -m experiments.benchmarks.lowrank_speed [--smoke] [--repeats N] [--scale N]
[--pipeline N] [--depthwise IMPL] [--sweep]``; prints one JSON object (``--scale 32 --pipeline 20``
on a GPU, where batch 128 only times kernel launches; ``--sweep`` for the efficiency against the
rank).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxcomp as jc
from experiments.common import machine
from jaxcomp import lowrank
from jaxcomp.adapt import run_factorized

TARGET = 0.7
KEY = jax.random.key(0)


def _sizes(smoke: bool, scale: int) -> tuple[int, int, int, int, int]:
    """``(d, c, b, n, hw)``: dense width, conv channels, conv batch, dense batch, conv size.

    ``scale`` multiplies every batch size (an accelerator needs larger batches than a CPU to be
    timed on its arithmetic rather than on kernel launches).
    """
    d, c, b = (64, 16, 2) if smoke else (1024, 128, 16)
    return d, c, b * scale, (8 if smoke else 128) * scale, 8 if smoke else 16


def _kinds(
    smoke: bool, scale: int = 1
) -> list[tuple[str, Any, tuple[int, ...], Callable[[], jc.Transform]]]:
    """``(name, layer, input shape, transform)`` for each factorized layer kind (see _sizes)."""
    d, c, b, n, hw = _sizes(smoke, scale)
    dense = nn.Dense(d)
    conv = nn.Conv(c, (3, 3), padding="SAME")
    first = nn.Conv(c // 2, (7, 7), padding="SAME")
    conv5 = nn.Conv(c, (5, 5), padding="SAME")
    r = d // 16
    return [
        ("dense_svd", dense, (n, d), lambda: lowrank.svd(rank=r)),
        ("dense_predicted", dense, (n, d), lambda: lowrank.predicted(rank=r)),
        ("conv_svd", conv, (b, hw, hw, c), lambda: lowrank.svd(rank=c // 4)),
        ("conv_jaderberg", conv, (b, hw, hw, c), lambda: lowrank.jaderberg(rank=c // 4)),
        ("conv_cp", conv, (b, hw, hw, c),
         lambda: lowrank.cp(rank=c // 2, iterations=5, key=KEY)),
        ("conv_tucker2", conv, (b, hw, hw, c), lambda: lowrank.tucker2(rank=c // 4)),
        ("conv_bicluster", conv, (b, hw, hw, c),
         lambda: lowrank.bicluster(groups_in=4, groups_out=4, rank=c // 16, key=KEY)),
        ("conv_separable_basis", conv, (b, hw, hw, c),
         lambda: lowrank.separable_basis(rank=3, iterations=5, key=KEY)),
        ("conv5x5_separable_basis", conv5, (b, hw, hw, c),
         lambda: lowrank.separable_basis(rank=4, iterations=5, key=KEY)),
        ("conv_monochromatic", first, (b, 2 * hw, 2 * hw, 3),
         lambda: lowrank.monochromatic(colors=4, key=KEY)),
    ]  # fmt: skip


def _sweep(
    smoke: bool, scale: int = 1
) -> list[tuple[str, Any, tuple[int, ...], Callable[[], jc.Transform]]]:
    """The same layers at several ranks: how the efficiency depends on the compression."""
    d, c, b, n, hw = _sizes(smoke, scale)
    dense, conv = nn.Dense(d), nn.Conv(c, (3, 3), padding="SAME")
    out = []
    for r in (d // 16, d // 8, d // 4, 3 * d // 8):
        out.append((f"dense_svd_r{r}", dense, (n, d), lambda r=r: lowrank.svd(rank=r)))
    for r in (c // 8, c // 4, c // 2):
        out.append((f"conv_svd_r{r}", conv, (b, hw, hw, c), lambda r=r: lowrank.svd(rank=r)))
        out.append(
            (f"conv_tucker2_r{r}", conv, (b, hw, hw, c), lambda r=r: lowrank.tucker2(rank=r))
        )
    for r in (c // 4, c // 2, c):
        out.append((f"conv_cp_r{r}", conv, (b, hw, hw, c),
                    lambda r=r: lowrank.cp(rank=r, iterations=5, key=KEY)))  # fmt: skip
    return out


def _params(layer: Any, x: jax.Array) -> Any:
    shapes = jax.eval_shape(layer.init, KEY, x)["params"]
    rng = np.random.default_rng(0)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1])), s.dtype),
        shapes,
    )


def bench(
    name: str,
    layer: Any,
    shape: tuple[int, ...],
    make: Callable,
    repeats: int,
    trials: int,
    *,
    depthwise: str = "auto",
    pipeline: int = 1,
) -> dict:
    """Times one factorized layer kind against its dense layer.

    ``depthwise`` is :func:`jaxcomp.adapt.run_factorized`'s choice of depthwise implementation;
    ``pipeline`` the calls per timed sample of ``jc.analysis.compare_latency``.
    """
    x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
    params = _params(layer, x)
    t = make()
    c, s = t.init(params)
    fin = t.finalize(c, s)
    dense_fn = jax.jit(lambda p, x: layer.apply({"params": p}, x))
    fast_fn = jax.jit(
        lambda p, x: run_factorized(layer.apply, depthwise=depthwise)({"params": p}, x)
    )
    # the factors compute the rebuilt kernel's output (checked in full float32: accelerators
    # default to reduced-precision matmuls, which the timings below keep)
    with jax.default_matmul_precision("highest"):
        ref = dense_fn(t.apply(c, s), x)
        got = fast_fn(fin, x)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * float(jnp.abs(ref).max()))
    dense_macs = jc.analysis.flops(dense_fn, params, x)
    # MACs of the same factored computation with depthwise convolutions as lax convolutions
    # (``flops`` counts convolutions and matmuls, not the shifted-slice sums that run on CPU)
    counted = lambda p, x: run_factorized(layer.apply, depthwise="conv")({"params": p}, x)
    fast_macs = jc.analysis.flops(counted, fin, x)
    fns = {"dense": lambda a, b, x: dense_fn(a, x), "factored": lambda a, b, x: fast_fn(b, x)}
    speedups, speedups_min, times = [], [], []
    for _ in range(trials):  # the machine is shared: several interleaved trials, their median
        stats = jc.analysis.compare_latency(
            fns,
            params,
            fin,
            x,
            repeats=repeats,
            warmup=3,
            rounds=min(20, repeats),
            pipeline=pipeline,
        )
        d, f = stats["dense"], stats["factored"]
        speedups.append(d["median_s"] / f["median_s"])
        speedups_min.append(d["min_s"] / f["min_s"])
        times.append((d["median_s"], f["median_s"]))
    theoretical = dense_macs / fast_macs
    measured = float(np.median(speedups))
    measured_min = float(np.median(speedups_min))
    dense_s, fact_s = np.median(np.asarray(times), axis=0)
    return {
        "kind": name,
        "input": list(shape),
        "dense_macs": dense_macs,
        "factored_macs": fast_macs,
        "dense_params": jc.analysis.param_count(params),
        "factored_params": jc.analysis.param_count(fin),
        "dense_ms": round(1e3 * float(dense_s), 4),
        "factored_ms": round(1e3 * float(fact_s), 4),
        "theoretical_speedup": round(theoretical, 3),
        "measured_speedup": round(measured, 3),
        "efficiency": round(measured / theoretical, 3),
        "efficiency_of_minima": round(measured_min / theoretical, 3),
        "trial_speedups": [round(v, 3) for v in speedups],
        "repeats": repeats,
        "trials": trials,
        "depthwise": depthwise,
        "pipeline": pipeline,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny layers, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per function")
    ap.add_argument("--trials", type=int, default=None, help="interleaved trials per kind")
    ap.add_argument("--only", default=None, help="a comma-separated subset of the kinds")
    ap.add_argument(
        "--scale", type=int, default=1, help="multiply every batch size by this (e.g. 32 on a GPU)"
    )
    ap.add_argument(
        "--depthwise",
        choices=("auto", "slices", "conv"),
        default="auto",
        help="depthwise implementation of run_factorized (auto: slices on CPU and for small "
        "kernels elsewhere)",
    )
    ap.add_argument(
        "--pipeline",
        type=int,
        default=1,
        help="calls per timed sample, waited for once (device throughput on an accelerator)",
    )
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="instead of one layer per kind: SVD, Tucker-2 and CP layers at several ranks",
    )
    args = ap.parse_args(argv)
    if args.scale < 1:
        ap.error(f"--scale must be an int >= 1, got {args.scale}")
    if args.pipeline < 1:
        ap.error(f"--pipeline must be an int >= 1, got {args.pipeline}")
    repeats = args.repeats or (3 if args.smoke else 200)
    kinds = (_sweep if args.sweep else _kinds)(args.smoke, args.scale)
    if args.only:
        kinds = [k for k in kinds if k[0] in args.only.split(",")]
    trials = args.trials or (1 if args.smoke else 3)
    results = [
        bench(n, layer, shape, make, repeats, trials, depthwise=args.depthwise,
              pipeline=args.pipeline)
        for n, layer, shape, make in kinds
    ]  # fmt: skip
    out = {
        "benchmark": "lowrank_speed",
        "machine": machine(),
        "batch_scale": args.scale,
        "sweep": args.sweep,
        "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "target_efficiency": TARGET,
        "results": results,
        "meets_target": all(r["efficiency"] >= TARGET for r in results),
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

"""Structured pruning's speed-up: the physically smaller model against the dense one, on CPU.

For ResNet-56 and the small VGG (default widths, 32x32x3 inputs), half of the dense model's FLOPs
are removed: :func:`jaxcomp.structured.ratio_for_flops` (``flops=0.5``) gives the fraction of every
dependency group's channels to remove, :func:`jaxcomp.structured.masks` picks them by the L1 norm
of the initial filters (drawn by ``experiments.structured.run.init_variables``; which channels go
does not change the speed, only how many), and :func:`jaxcomp.structured.shrink` builds the smaller
model, which runs the model's own program at the smaller widths. Its outputs are checked against
the masked dense model on a batch.

A second smaller model, ``aligned``, keeps a multiple of 8 channels in every group
(``round_to=8``: a ratio's widths rounded down; the least such ratio that still removes half of
the FLOPs, by ``ratio_for_flops``'s bisection), to
see what the widths themselves cost: AVX2 holds 8 float32 lanes, and the widths that
``ratio_for_flops`` gives (11 of 16, 45 of 64, ...) do not fill them. The target is judged on the
first model.

The jitted inference forward passes of the three (``apply_fn(variables, x)``, batch norm on its
running statistics) are timed interleaved in one process (``jc.analysis.compare_latency``, blocks
of calls in turn), at batch 128 and at batch 1. Reported per model: the MACs at batch 1
(``jc.analysis.flops`` counts multiply-accumulates; ``flops_ratio = small / dense``), the
parameter ratio, the median times, the measured speed-up ``dense_median / small_median`` (and
from the minima, less sensitive to other processes on a shared machine), and
``speedup_over_flop_ratio = measured speed-up / (dense_flops / small_flops)``; the same for
``aligned``. Target at batch 128: a speed-up of at least 1.8 and a ratio to the FLOP reduction of
at least 0.9.

Run: ``python -m experiments.benchmarks.structured_speed [--smoke] [--repeats N]``; prints one JSON
object (``--smoke``: ResNet-20 at batch 1, 3 repeats: the timing at "batch" and at batch 1 then
share their compiled programs). The default run takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxcomp as jc
from experiments.common import machine
from experiments.structured.run import init_variables

FLOPS_REMOVED = 0.5
TARGET_SPEEDUP = 1.8
TARGET_EFFICIENCY = 0.9
ALIGN = 8  # AVX2 holds 8 float32 lanes


def prune_half(
    name: str, *, flops: float = FLOPS_REMOVED, align: int = ALIGN, tol: float = 1e-3
) -> dict[str, Any]:
    """The dense model, its masks at ``flops`` removed (L1) and the smaller model they give; and
    the same with every kept width a multiple of ``align`` (the least ratio that still removes
    ``flops``). ``tol``: the bisections' tolerance on the ratio."""
    shape = jc.models.input_shape(name)
    model = jc.models.get(name)
    variables = init_variables(model, shape, 0)  # numpy: jc.models.init compiles the RNG (slow)
    apply_fn = model.apply
    x1 = jnp.zeros((1, *shape), jnp.float32)
    groups = jc.structured.groups(apply_fn, variables, x1)
    ratio = jc.structured.ratio_for_flops(
        apply_fn, variables, x1, flops=flops, groups=groups, tol=tol
    )
    masks = jc.structured.masks(apply_fn, variables, x1, ratio=ratio, groups=groups)
    small_apply, small_vars = jc.structured.shrink(apply_fn, variables, masks)
    a_ratio = jc.structured.ratio_for_flops(
        apply_fn, variables, x1, flops=flops, groups=groups, round_to=align, tol=tol
    )
    a_masks = jc.structured.masks(
        apply_fn, variables, x1, ratio=a_ratio, round_to=align, groups=groups
    )
    a_apply, a_vars = jc.structured.shrink(apply_fn, variables, a_masks)
    hi = a_ratio
    return {
        "model": model, "apply": apply_fn, "variables": variables, "shape": shape,
        "groups": groups, "ratio": ratio, "masks": masks, "small_apply": small_apply,
        "small_variables": small_vars, "aligned_ratio": hi, "aligned_masks": a_masks,
        "aligned_apply": a_apply, "aligned_variables": a_vars,
    }  # fmt: skip


def _calls(fns: dict[str, Any]) -> dict[str, Any]:
    """``{name: jitted(v_0, ..., v_k, x) -> fns[name](v_i, x)}``: what :func:`_time` times, jitted
    once, so that the masked-model checks and the timing run the same compiled programs."""
    return {n: jax.jit(lambda *a, i=i, f=f: f(a[i], a[-1])) for i, (n, f) in enumerate(fns.items())}


def _time(calls: dict[str, Any], variables: list[Any], x, repeats: int) -> dict[str, dict]:
    """Each ``calls[name](*variables, x)``, interleaved; median times and speed-ups over the
    first."""
    stats = jc.analysis.compare_latency(
        calls, *variables, x, repeats=repeats, warmup=2, rounds=min(5, repeats)
    )
    d = stats[next(iter(calls))]
    return {
        n: {
            "ms": 1e3 * s["median_s"],
            "speedup": d["median_s"] / s["median_s"],
            "speedup_of_min": d["min_s"] / s["min_s"],
        }
        for n, s in stats.items()
    }


def bench(
    name: str, *, batch: int, repeats: int, repeats_b1: int, tol: float = 1e-3
) -> dict[str, Any]:
    """Dense against shrunk (and shrunk to aligned widths) for one model, at ``batch`` and 1."""
    p = prune_half(name, tol=tol)
    apply_fn, variables = p["apply"], p["variables"]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((batch, *p["shape"]), np.float32))
    x1 = x[:1]
    calls = _calls({"dense": apply_fn, "small": p["small_apply"], "aligned": p["aligned_apply"]})
    args = [variables, p["small_variables"], p["aligned_variables"]]
    # the smaller models compute the masked dense model (through the timed programs)
    diffs = []
    for key, smaller in (("masks", "small"), ("aligned_masks", "aligned")):
        want = calls["dense"](jc.structured.apply_masks(variables, p[key]), *args[1:], x)
        got = calls[smaller](*args, x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))
        diffs.append(float(jnp.max(jnp.abs(want - got))))
    count = lambda f, v: jc.analysis.flops(f, v, x1)
    dense_flops = count(apply_fn, variables)
    small_flops = count(p["small_apply"], p["small_variables"])
    aligned_flops = count(p["aligned_apply"], p["aligned_variables"])
    n_params = lambda v: jc.analysis.param_count(v["params"])
    t = _time(calls, args, x, repeats)
    t1 = _time(calls, args, x1, repeats_b1)
    speedup = t["small"]["speedup"]
    reduction = dense_flops / small_flops
    a_reduction = dense_flops / aligned_flops
    return {
        "model": name,
        "input": list(p["shape"]),
        "batch": batch,
        "groups": len(p["groups"]),
        "group_sizes": [g.size for g in p["groups"]],
        "channel_ratio": p["ratio"],
        "widths_kept": [int(np.sum(k)) for k in p["masks"].keep],
        "dense_flops": dense_flops,
        "small_flops": small_flops,
        "flops_ratio": round(small_flops / dense_flops, 4),
        "dense_params": n_params(variables),
        "small_params": n_params(p["small_variables"]),
        "params_ratio": round(n_params(p["small_variables"]) / n_params(variables), 4),
        "max_abs_diff_vs_masked": diffs[0],
        "dense_ms": round(t["dense"]["ms"], 3),
        "small_ms": round(t["small"]["ms"], 3),
        "measured_speedup": round(speedup, 3),
        "measured_speedup_of_min": round(t["small"]["speedup_of_min"], 3),
        "speedup_over_flop_ratio": round(speedup / reduction, 3),
        "dense_ms_batch1": round(t1["dense"]["ms"], 4),
        "small_ms_batch1": round(t1["small"]["ms"], 4),
        "measured_speedup_batch1": round(t1["small"]["speedup"], 3),
        "measured_speedup_of_min_batch1": round(t1["small"]["speedup_of_min"], 3),
        "meets_target": bool(
            speedup >= TARGET_SPEEDUP and speedup / reduction >= TARGET_EFFICIENCY
        ),
        "aligned": {
            "multiple": ALIGN,
            "channel_ratio": p["aligned_ratio"],
            "widths_kept": [int(np.sum(k)) for k in p["aligned_masks"].keep],
            "flops": aligned_flops,
            "flops_ratio": round(aligned_flops / dense_flops, 4),
            "params_ratio": round(n_params(p["aligned_variables"]) / n_params(variables), 4),
            "max_abs_diff_vs_masked": diffs[1],
            "ms": round(t["aligned"]["ms"], 3),
            "measured_speedup": round(t["aligned"]["speedup"], 3),
            "measured_speedup_of_min": round(t["aligned"]["speedup_of_min"], 3),
            "speedup_over_flop_ratio": round(t["aligned"]["speedup"] / a_reduction, 3),
            "ms_batch1": round(t1["aligned"]["ms"], 4),
            "measured_speedup_batch1": round(t1["aligned"]["speedup"], 3),
        },
        "repeats": repeats,
        "repeats_batch1": repeats_b1,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--smoke", action="store_true", help="ResNet-20 at batch 1, 3 repeats, coarse ratios"
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per function")
    args = ap.parse_args(argv)
    if args.smoke:
        runs = [("resnet20", 1, args.repeats or 3, args.repeats or 3)]
    else:
        runs = [(n, 128, args.repeats or 20, 5 * (args.repeats or 20)) for n in
                ("resnet56", "vgg_small")]  # fmt: skip
    tol = 1.0 / 16 if args.smoke else 1e-3
    results = [bench(n, batch=b, repeats=r, repeats_b1=r1, tol=tol) for n, b, r, r1 in runs]
    out = {
        "benchmark": "structured_speed",
        "machine": machine(),
        "flops_removed_target": FLOPS_REMOVED,
        "criterion": "l1 (initialized weights)",
        "target": {
            "speedup": TARGET_SPEEDUP,
            "speedup_over_flop_ratio": TARGET_EFFICIENCY,
            "batch": runs[0][1],
        },
        "results": results,
        "meets_target": all(r["meets_target"] for r in results),
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

"""Int8 inference against float32: the MLP 784-1024-1024-10 (and LeNet-5) at batch 256.

The model is quantized by ``jc.quant.fake_quant(bits=8, per_channel=True)`` and finalized into
int8 codes with per-channel scales; ``jc.quant.run_int8(model.apply)`` runs the unchanged model's
``Dense`` and ``Conv`` layers as int8 x int8 -> int32 (``lax.dot_general`` /
``lax.conv_general_dilated`` with ``preferred_element_type=jnp.int32``), quantizing each layer's
input per tensor on the fly (dynamic ranges) or with calibrated ranges (static). The forwards are
jitted and timed interleaved in one process (``jc.analysis.compare_latency``); the weight bytes
are those of the int8 codes plus the float32 scales against float32 weights.

``int8_dynamic_first_layer_float`` keeps a first ``Conv_0`` layer in float (LeNet-5's 1-channel
input leaves an int8 convolution little to gain). ``run_int8`` computes the integer sums on the
machine's faster exact path (``path="auto"``; the JSON's ``paths`` says which per kind of
contraction); ``int8_dynamic_path_int8`` and ``int8_dynamic_path_f32`` force each exact path (XLA's
int8 x int8 -> int32 contraction, or float32 arithmetic on the same integer codes), the
measurement behind the choice. Targets: the int8 forward at least 2x faster than float32 on CPUs
with VNNI or AMX, at least as fast (1.0x) on AVX2-only CPUs.

Run: ``python -m experiments.benchmarks.int8_inference [--smoke] [--repeats N] [--batch N]
[--pipeline N]``; prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

import jaxcomp as jc
import jaxcomp.quant as jq
from experiments.benchmarks.qat_overhead import MLP
from experiments.benchmarks.qat_overhead import compare
from experiments.benchmarks.qat_overhead import parse_args
from experiments.common import machine


def bench(
    model,
    *,
    batch: int,
    shape: tuple[int, ...],
    repeats: int,
    pipeline: int = 1,
    clock: str = "wall",
) -> dict[str, Any]:
    """fp32 against dynamic and static int8 forwards; medians, ratios, bytes and agreement."""
    v = jc.models.init(model, jax.random.key(0), shape)
    x = jax.random.uniform(jax.random.key(2), (batch, *shape), jnp.float32)
    t = jq.fake_quant(bits=8, per_channel=True)
    c, s = t.init(v["params"])
    final = {"params": t.finalize(c, s)}
    run = jq.run_int8(model.apply)
    calibrated = jq.calibrate(jq.activations(model.apply, [(".*", 8)], symmetric=True),
                              {"params": t.apply(c, s)}, [x])  # fmt: skip
    static = {**final, jq.STATS: calibrated[jq.STATS]}
    # the first layer kept in float (its 1-channel input gives the int8 kernel little to do)
    first = jc.select.kernels() & ~jc.select.by_regex("^Conv_0/")
    if any(p.startswith("Conv_0/") for p in jc.core.leaf_paths(v["params"])):
        t1 = jq.fake_quant(bits=8, per_channel=True, where=first)
        mixed = {"params": t1.finalize(*t1.init(v["params"]))}
    else:
        mixed = final
    run_i8, run_f32 = jq.run_int8(model.apply, path="int8"), jq.run_int8(model.apply, path="f32")
    fns = {
        "fp32": lambda a: model.apply(a[0], a[3]),
        "int8_dynamic": lambda a: run(a[1], a[3]),
        "int8_static": lambda a: run(a[2], a[3]),
        "int8_dynamic_first_layer_float": lambda a: run(a[4], a[3]),
        "int8_dynamic_path_int8": lambda a: run_i8(a[1], a[3]),
        "int8_dynamic_path_f32": lambda a: run_f32(a[1], a[3]),
    }
    args = (v, final, static, x, mixed)
    out: dict[str, Any] = compare(fns, args, repeats=repeats, pipeline=pipeline, clock=clock)
    for n in list(fns)[1:]:
        out[n]["speedup"] = 1.0 / out[n]["ratio"]
    y32 = model.apply({"params": t.apply(c, s)}, x)
    y8 = jax.jit(run)(final, x)
    out["max_abs_diff_vs_fake_quant_weights"] = float(jnp.max(jnp.abs(y8 - y32)))
    out["output_scale"] = float(jnp.max(jnp.abs(y32)))
    out["weight_bytes"] = jq.weight_bytes(final)
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv, __doc__, repeats=100)
    if args.smoke:
        cases = {"mlp": (MLP(hidden=(16,)), 16, (8, 8, 1))}  # one hidden layer: fewer to compile
        repeats = 3
    else:
        cases = {
            "mlp": (MLP(), args.batch, (28, 28, 1)),
            "lenet5": (jc.models.get("lenet5"), args.batch, (28, 28, 1)),
        }
        repeats = args.repeats
    result: dict[str, Any] = {
        "benchmark": "int8_inference",
        "machine": machine(),
        "paths": {k: jq.preferred_path(kind=k) for k in ("features", "conv", "rows")},
        "load_average_before": os.getloadavg(),
        "repeats": repeats,
        "pipeline": args.pipeline,
        "clock": args.clock,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    for name, (model, batch, shape) in cases.items():
        result[name] = bench(
            model, batch=batch, shape=shape, repeats=repeats, pipeline=args.pipeline,
            clock=args.clock,
        )  # fmt: skip
        result[name]["batch"] = batch
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

"""Overhead of gradual magnitude pruning: the jitted training step against the dense step.

For LeNet-300-100 (28x28x1) and ResNet-20 (32x32x3) at batch 128, three jitted training steps
(forward, backward, Adam, the transform's update; ``jc.train.make_train_step``) are timed
interleaved in the same process (``jc.analysis.compare_latency``), on the same fixed random batch:

* ``dense``: no transform;
* ``masked``: ``jc.prune.magnitude`` on Zhu and Gupta's cubic schedule with
  ``update_every=100``, on a step where the masks are *not* recomputed: the step's ``apply_own``
  passes the weights through with a masked gradient (``jc.prune.mask_grad``), and ``update``
  re-zeroes the pruned weights (fused with Adam's write of the weights);
* ``masked_recompute``: the same step on a multiple of ``update_every``, where ``update`` also
  ranks every kernel (a sort-free bisection, `jaxcomp.prune.topk_mask`) inside its ``lax.cond``.

A fourth function, ``dense_control``, is the dense step again: its ratio to ``dense`` shows how
much of a ratio is noise on the machine at hand.

The functions take turns in blocks of ``BLOCK`` consecutive calls (as in training, where a step
follows the same step), each call timed on its own; with blocks of one call, every call would
follow a different function's call (the recompute step evicts the caches of the call
after it, which made ``dense_control`` look 5-7% slower than ``dense``).

Reported: each median over the dense median (``ratio``, ``recompute_ratio``,
``control_ratio``), and the amortized ratio ``((k - 1) * masked + recompute) / (k * dense)`` of a
run that recomputes every ``k`` steps. Target: ``masked`` at most 1.05.

Run: ``python -m experiments.benchmarks.prune_overhead [--smoke] [--repeats N]``; prints one JSON
object.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcomp as jc
from experiments.common import machine
from jaxcomp import prune

UPDATE_EVERY = 100
TARGET = 1.05
BLOCK = 10


def _states(name: str, shape: tuple[int, ...]) -> dict[str, jc.train.TrainState]:
    model = jc.models.get(name)
    v = jc.models.init(model, jax.random.key(0), shape)
    sched = prune.gradual_schedule(0.9, begin=0, end=10 * UPDATE_EVERY)
    masked = prune.magnitude(sparsity=sched, update_every=UPDATE_EVERY)
    make = lambda t: jc.train.TrainState.create(
        apply_fn=model.apply, variables=v, tx=optax.adam(1e-3), key=jax.random.key(1), transform=t
    )
    dense = make(None)
    # masks at 50% (as in the middle of the schedule), so the masked step does real work: a 50%
    # pruner's state (the scheduled pruner's structure), stepped by the scheduled pruner (its
    # own init would compute masks at the schedule's start only to be replaced)
    m = make(prune.magnitude(sparsity=0.5)).replace(transform=masked)
    off_grid = m.replace(step=jnp.int32(5 * UPDATE_EVERY + 4))  # next step is not on the grid
    on_grid = m.replace(step=jnp.int32(5 * UPDATE_EVERY - 1))  # next step recomputes
    control = jax.tree.map(jnp.copy, dense)  # a second dense step: the noise floor of the ratio
    return {
        "dense": dense,
        "masked": off_grid,
        "masked_recompute": on_grid,
        "dense_control": control,
    }


def _stepper(step: Any, i: int) -> Any:
    return lambda *args: step(args[i], args[-1])


def bench(name: str, *, batch: int, repeats: int) -> dict[str, Any]:
    """Interleaved timings of the three steps for one model."""
    shape = jc.models.input_shape(name)
    states = _states(name, shape)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((batch, *shape), np.float32))
    y = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
    step = jc.train.make_train_step(donate=False)
    # sanity: the off-grid step keeps the masks, the on-grid step recomputes them (cubic ramp)
    s_off, _ = step(states["masked"], (x, y))
    s_on, _ = step(states["masked_recompute"], (x, y))
    masks = lambda s: jax.tree.leaves(s.comp_state.masks)
    zeros = lambda s: sum(int(jnp.sum(~m)) for m in masks(s))
    assert zeros(s_off) == zeros(states["masked"])
    assert zeros(s_on) > zeros(states["masked"])
    names = list(states)
    # every function gets all states and the batch, and steps its own state
    fns = {n: _stepper(step, i) for i, n in enumerate(names)}
    stats = jc.analysis.compare_latency(
        fns, *[states[n] for n in names], (x, y), repeats=repeats, warmup=3,
        rounds=max(1, repeats // BLOCK),
    )  # fmt: skip
    d, m, r, ctl = (stats[n]["median_s"] for n in names)
    k = UPDATE_EVERY
    return {
        "model": name,
        "batch": batch,
        "params": jc.analysis.param_count(states["dense"].cparams),
        "dense_ms": round(1e3 * d, 3),
        "masked_ms": round(1e3 * m, 3),
        "recompute_ms": round(1e3 * r, 3),
        "ratio": round(m / d, 4),
        "recompute_ratio": round(r / d, 4),
        "amortized_ratio": round(((k - 1) * m + r) / (k * d), 4),
        "mean_ratio": round(stats["masked"]["mean_s"] / stats["dense"]["mean_s"], 4),
        "control_ratio": round(ctl / d, 4),
        "repeats": repeats,
        "block": min(BLOCK, repeats),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="LeNet-300-100 at batch 8, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timed steps per function")
    args = ap.parse_args(argv)
    if args.smoke:
        runs = [("lenet300", 8, args.repeats or 3)]
    else:
        runs = [("lenet300", 128, args.repeats or 2000), ("resnet20", 128, args.repeats or 40)]
    results = [bench(n, batch=b, repeats=r) for n, b, r in runs]
    out = {
        "benchmark": "prune_overhead",
        "machine": machine(),
        "update_every": UPDATE_EVERY,
        "target_ratio": TARGET,
        "results": results,
        "meets_target": all(r["ratio"] <= TARGET for r in results),
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

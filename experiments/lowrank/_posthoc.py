"""What the low-rank experiments share: a rewrite evaluated, fine-tuned and measured; seeds.

A post-hoc rewrite (a ``jc.lowrank`` transform) of a trained model is evaluated right after the
rewrite, fine-tuned through the rebuilt kernels (``experiments.common.train`` with the transform),
finalized, and evaluated again *through* :func:`jaxcomp.adapt.run_factorized` (the factors, not
the rebuilt kernels), as ``experiments/lowrank/table2.py`` does. Every accuracy is on the test
split; everything fitted (decompositions, calibration) sees only the training split.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxcomp as jc
from experiments.common import EVAL_STEP
from experiments.common import adam
from experiments.report import accuracy
from experiments.report import mean_std
from experiments.report import summary_row
from jaxcomp.adapt import run_factorized

# One jitted training step for every model of these scripts: jit caches on the state's static
# fields (apply_fn, optimizer, transform) and shapes, so a model or a transform object used again
# (another seed) reuses its compilation; experiments.common.train builds a new step per call.
STEP = jc.train.make_train_step()


def train_fresh(model: Any, data: jc.data.Dataset, *, epochs: int | None = None,
                steps: int | None = None, lr: float = 1e-3, batch: int = 64,
                seed: int = 0) -> tuple[Any, float]:  # fmt: skip
    """``experiments.common.train`` from a fresh initialization, through :data:`STEP`:
    (the trained variables, test accuracy)."""
    k_init, k_train = jax.random.split(jax.random.key(seed))
    variables = jc.models.init(model, k_init, data.input_shape)
    state = jc.train.TrainState.create(apply_fn=model.apply, variables=variables, tx=adam(lr),
                                       key=k_train)  # fmt: skip
    total = steps if steps is not None else epochs * (data.num_train // batch)
    res = jc.train.fit(state, data, batch_size=batch, steps=total, seed=seed, progress=False,
                       train_step=STEP, eval_every=total, eval_step=EVAL_STEP)  # fmt: skip
    return res.state.variables(), res.history[-1]["test_accuracy"]


@dataclasses.dataclass
class Result:
    """One rewrite of one trained model (one seed)."""

    before: float
    after: float
    variables: Any


def subset(data: jc.data.Dataset, n_train: int, n_test: int) -> jc.data.Dataset:
    """A fixed random subset of each split (the embedded arrays are sorted by class)."""
    tr = np.random.default_rng(0).permutation(data.num_train)[:n_train]
    te = np.random.default_rng(1).permutation(data.num_test)[:n_test]
    return data.replace(x_train=data.x_train[tr], y_train=data.y_train[tr],
                        x_test=data.x_test[te], y_test=data.y_test[te])  # fmt: skip


@functools.cache
def jitted(model: Any, kind: str = "dense") -> Any:
    """One jitted function per (model, kind) in the process, so that scripts run one after
    another (the smoke tests) share compilations: ``"dense"`` is ``model.apply``, ``"fast"``
    runs the factors (``run_factorized``), ``"counted"`` runs them as ``jc.analysis.flops``
    counts them (grouped convolutions for the depthwise parts)."""
    if kind == "dense":
        return jax.jit(model.apply)
    return jax.jit(run_factorized(model.apply, depthwise="conv" if kind == "counted" else "auto"))


class Runner:
    """Jitted evaluation of one model architecture, dense and through the factorizing adapter."""

    def __init__(self, model: Any):
        self.model = model
        self.dense = jitted(model)
        self.fast = jitted(model, "fast")
        self.counted = jitted(model, "counted")

    def acc(self, variables: Any, data: jc.data.Dataset, *, factored: bool = False) -> float:
        fn = self.fast if factored else self.dense
        return accuracy(fn, variables, data.x_test, data.y_test)

    def rewrite(self, variables: Any, transform: jc.Transform, data: jc.data.Dataset, *,
                epochs: int | None = None, steps: int | None = None, lr: float, batch: int,
                seed: int, start: tuple[Any, Any] | None = None) -> Result:  # fmt: skip
        """Evaluates the rewrite, fine-tunes its factors, evaluates the finalized factors.

        ``start``: the ``(cparams, state)`` to start from, when already computed (by this
        transform, or by a data-driven variant of it with the same structure); by default
        ``transform.init(params)``. ``transform`` is what the training state holds (its
        ``apply``/``update``/``finalize``): reusing one transform object for every seed lets the
        compiled training step be reused (the transform is a static field of the state).
        """
        params = variables["params"]
        model_state = {k: v for k, v in variables.items() if k != "params"}
        c, s = transform.init(params) if start is None else start
        before = self.acc({"params": transform.apply(c, s), **model_state}, data)
        tx = adam(lr)
        state = jc.train.TrainState(
            step=jnp.zeros((), jnp.int32), cparams=c, comp_state=s, opt_state=tx.init(c),
            model_state=model_state, key=jax.random.split(jax.random.key(seed))[1],
            apply_fn=self.model.apply, tx=tx, transform=transform,
        )  # fmt: skip
        total = steps if steps is not None else epochs * (data.num_train // batch)
        ft = jc.train.fit(
            state,
            data,
            batch_size=batch,
            steps=total,
            seed=seed,
            progress=False,
            train_step=STEP,
            eval_every=total,
            eval_step=EVAL_STEP,
        ).state
        fin = {"params": ft.finalize(), **ft.model_state}
        return Result(before, self.acc(fin, data, factored=True), fin)

    def macs(self, variables: Any, x1: np.ndarray, *, factored: bool) -> int:
        fn = self.counted if factored else self.dense
        return int(jc.analysis.flops(fn, variables, x1))


def params_of(variables: Any) -> int:
    """Parameters stored (a factored node counts its factors)."""
    return int(jc.analysis.param_count(variables["params"]))


def bytes_of(variables: Any) -> int:
    """Bytes of the params as stored (float32; factored nodes at their own size)."""
    return int(jc.analysis.size_bytes(variables["params"]))


def over_seeds(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "per_seed"}`` of one quantity over the seeds."""
    m, s = mean_std(values)
    return {"mean": m, "std": s, "per_seed": [float(v) for v in values]}


def pm(d: dict[str, Any]) -> str:
    """``0.9610 ± 0.0040`` from :func:`over_seeds`."""
    return f"{d['mean']:.4f}" if d["std"] is None else f"{d['mean']:.4f} ± {d['std']:.4f}"


def posthoc_row(
    *,
    dense: dict[str, Any],
    after: dict[str, Any],
    seeds: Sequence[int],
    lat: dict[str, dict[str, Any]],
    name: str,
    macs_dense: int,
    macs: int,
    dense_vars: Any = None,
    fin: Any = None,
    **fields: Any,
) -> dict[str, Any]:
    """The summary row (:func:`experiments.report.summary_row`) of one compressed model ``name``
    against the dense one: accuracies from :func:`over_seeds` (``dense``, ``after``), MACs, the
    latencies ``lat[name]`` and ``lat["dense"]``, and, given ``dense_vars`` and ``fin``, their
    params and bytes (:func:`params_of`, :func:`bytes_of`); ``fields`` are the other keys (ref,
    method, model, data, command, note, or the sizes counted otherwise)."""
    if fin is not None:
        sizes = {"params_before": params_of(dense_vars), "params_after": params_of(fin),
                 "bytes": bytes_of(fin)}  # fmt: skip
        fields = {**sizes, **fields}
    return summary_row(
        acc_before=dense["mean"], acc_before_std=dense["std"], acc_after=after["mean"],
        acc_after_std=after["std"], seeds=len(seeds), flops_before=macs_dense, flops_after=macs,
        latency_ms_b1=lat[name]["b1"], latency_ms_b128=lat[name]["b128"],
        latency_ms_b1_before=lat["dense"]["b1"], latency_ms_b128_before=lat["dense"]["b128"],
        **fields,
    )  # fmt: skip

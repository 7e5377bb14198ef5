"""Shared pieces of the experiment scripts: training under a transform, tables and results.

Every experiment is a script with a ``--smoke`` flag that runs it at toy size (the test suite runs
each smoke) and writes its results as JSON next to a Markdown table for ``docs/``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from collections.abc import Sequence
from typing import Any

import flax
import jax
import optax

import jaxcomp as jc

# one compiled evaluation per model architecture for every script (jit caches on the state's
# static fields): the experiments evaluate through this step, not fresh ones
EVAL_STEP = jc.train.make_eval_step()


@functools.cache
def _cached_train_step(objective: Any, penalty: Any) -> Any:
    return jc.train.make_train_step(objective, penalty=penalty)


def train_step(objective: Any = None, penalty: Any = None) -> Any:
    """One train step per objective (and penalty) for the whole process: a jitted step compiles
    once per state structure, so repeated trainings of one model (seeds, schedules, and the
    scripts that the test suite runs one after another) share the compiled program instead of
    compiling a fresh step each call. Objectives that cannot be hashed get their own."""
    try:
        return _cached_train_step(objective, penalty)
    except TypeError:
        return jc.train.make_train_step(objective, penalty=penalty)


@functools.cache
def adam(lr: float) -> optax.GradientTransformation:
    """One ``optax.adam(lr)`` per learning rate: the optimizer is a static field of the train
    state, compared by identity, so states with equal but separate optimizers (the same model
    and transform) would compile the shared evaluation step again."""
    return optax.adam(lr)


def train(
    model: Any,
    data: jc.data.Dataset,
    *,
    variables: dict[str, Any] | None = None,
    transform: jc.Transform | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    objective: Any = None,
    progress: bool = False,
    augment: Any = None,
    apply_fn: Any = None,
) -> tuple[jc.train.TrainState, float]:
    """Trains ``model`` (from ``variables`` if given) under ``transform``: (state, accuracy).

    ``apply_fn`` runs the model (``model.apply`` by default; an adapter such as
    ``jc.quant.activations(model.apply, ...)`` otherwise).
    """
    k_init, k_train = jax.random.split(jax.random.key(seed))
    if variables is None:
        variables = jc.models.init(model, k_init, data.input_shape)
    state = jc.train.TrainState.create(
        apply_fn=apply_fn or model.apply, variables=variables, tx=adam(lr), key=k_train,
        transform=transform,
    )  # fmt: skip
    if epochs is None and steps is None:
        raise ValueError("train: give epochs= or steps=")
    batch = min(batch_size, data.num_train)
    total = steps if steps is not None else epochs * (data.num_train // batch)
    res = jc.train.fit(
        state, data, batch_size=batch, epochs=epochs, steps=steps, seed=seed, progress=progress,
        train_step=train_step(objective), eval_every=max(total, 1),
        eval_step=EVAL_STEP, augment=augment,
    )  # fmt: skip
    # fit evaluated the test split once, at the end
    return res.state, res.history[-1]["test_accuracy"]


_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "neon", "asimd")


def _cpuinfo() -> tuple[str, list[str]]:
    """The CPU model name and the ISA features of :data:`_ISA` it has (Linux /proc/cpuinfo)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == platform.machine():
            model = value.strip()
        elif key in ("flags", "Features"):
            flags |= set(value.split())
    return model, [f for f in _ISA if f in flags]


def machine() -> dict[str, Any]:
    """The machine a benchmark ran on: CPU model and ISA features (AVX2, AVX-512, VNNI, AMX),
    cores, the accelerator, JAX backend, the JAX and Flax versions. Speed-ups depend on them all."""
    model, isa = _cpuinfo()
    return {
        "cpu": model,
        "isa": isa,
        "cores": os.cpu_count(),
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "platform": platform.platform(),
    }


def latency_summary(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``jc.analysis.compare_latency``'s result in milliseconds, with its two ratios."""
    return {
        n: {
            "median_ms": r["median_s"] * 1e3,
            "min_ms": r["min_s"] * 1e3,
            "ratio": r["ratio"],
            "ratio_of_min": r["ratio_of_min"],
        }
        for n, r in stats.items()
    }


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (floats with 4 significant digits)."""

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(out_dir: str, name: str, rows: list[dict[str, Any]], columns: Sequence[str],
                  meta: dict[str, Any] | None = None) -> str:  # fmt: skip
    """Writes ``name.json`` and ``name.md`` in ``out_dir``; returns the Markdown table."""
    os.makedirs(out_dir, exist_ok=True)
    table = markdown_table(rows, columns)
    with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta or {}, "rows": rows}, f, indent=2)
    with open(os.path.join(out_dir, f"{name}.md"), "w", encoding="utf-8") as f:
        f.write(table)
    return table


class Evaluator:
    """Test accuracy of dense params of one model, one compiled evaluation (:data:`EVAL_STEP`).

    The state's optimizer (``adam(1e-3)``) is never stepped: it only fills the train state."""

    def __init__(self, model: Any, variables: dict[str, Any], data: jc.data.Dataset):
        self.data = data
        self.state = jc.train.TrainState.create(
            apply_fn=model.apply, variables=variables, tx=adam(1e-3), key=jax.random.key(0)
        )

    def __call__(self, params: Any) -> float:
        st = self.state.replace(cparams=params)
        return jc.train.evaluate(st, self.data.x_test, self.data.y_test, eval_step=EVAL_STEP)[
            "accuracy"
        ]


class Bound:
    """``jitted(params, x)`` called as ``fn(x)``: the params stay an argument of the compiled
    function (closed over, they would be compile-time constants that XLA may fold, hashing or
    decompression included). It exposes the jitted function's ``lower`` so that
    ``jc.analysis.compare_latency`` takes it as already jitted and does not wrap it again. An
    ``fn`` that is already jitted is kept as it is: its compiled programs (an evaluation's, at
    the timed batch size) serve the timing too."""

    def __init__(self, fn: Any, params: Any):
        self.jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
        self.params = params

    @property
    def lower(self) -> Any:
        return self.jitted.lower

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.jitted(self.params, x)

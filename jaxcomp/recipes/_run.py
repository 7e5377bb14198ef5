"""Running a recipe: dense training, the stages in order, the artifact, and what it bought.

:func:`run` checks the whole recipe on the model before anything trains or is written (every
stage built and composed on the initial weights, a distillation teacher loaded and its layers
traced, a budget's feasibility predicted): a bad recipe is one :class:`jaxcomp.errors.RecipeError`.
Then:

1. **dense**: the model trains for ``[training] epochs`` (skipped when weights are given).
2. **stages**, in order. A transform stage's transform is initialized on the ``cparams`` of the
   chain so far and appended to it (:func:`jaxcomp.chain`): its state starts where the previous
   stage left the weights. Each transform's schedule counts the steps since its own stage began
   and keeps running in later stages (a pruner's masks hold at their final sparsity; an observer
   keeps watching the weights it quantizes). A stage trains ``epochs`` with a fresh optimizer and
   the current objective (cross-entropy, or the teacher's after a ``distill`` stage); a transform
   stage that does not train compresses at once (its schedule starts at its final value). Every
   stage checkpoints under ``OUT/stages/NN-TYPE/`` and, with ``resume``, a run killed anywhere and
   started again ends with the same bytes as one never interrupted.
3. **encode**: the chain's ``finalize`` and the model's collections packed into ``model.jcz``,
   loaded back, run the fast way (:func:`jaxcomp.recipes.deploy`), checked against the trained
   model on test inputs, evaluated, and timed against the dense model at batch 1 and 128 in one
   interleaved run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcomp import analysis
from jaxcomp import data as jdata
from jaxcomp import distill
from jaxcomp import encode
from jaxcomp import models
from jaxcomp import structured as st_
from jaxcomp import train
from jaxcomp.adapt import functional
from jaxcomp.core import ChainState
from jaxcomp.core import EmptyState
from jaxcomp.core import Transform
from jaxcomp.core import chain
from jaxcomp.core import identity
from jaxcomp.core import is_compressed
from jaxcomp.core import path_str
from jaxcomp.core import to_dense
from jaxcomp.core._transform import _lost
from jaxcomp.errors import CheckpointError
from jaxcomp.errors import CompositionError
from jaxcomp.errors import DatasetNotFoundError
from jaxcomp.errors import RecipeError
from jaxcomp.recipes._budget import Budget
from jaxcomp.recipes._budget import parse_budget
from jaxcomp.recipes._budget import resolve_knob
from jaxcomp.recipes._budget import scaled
from jaxcomp.recipes._budget import search
from jaxcomp.recipes._budget import strongest
from jaxcomp.recipes._deploy import accuracy
from jaxcomp.recipes._deploy import deploy
from jaxcomp.recipes._deploy import read_artifact
from jaxcomp.recipes._report import layer_rows
from jaxcomp.recipes._report import markdown_report
from jaxcomp.recipes._report import plot_layers
from jaxcomp.recipes._report import plot_stages
from jaxcomp.recipes._report import plot_widths
from jaxcomp.recipes._schema import Recipe
from jaxcomp.recipes._schema import load_recipe
from jaxcomp.recipes._stages import Context
from jaxcomp.recipes._stages import activation_rules
from jaxcomp.recipes._stages import build_stage
from jaxcomp.recipes._stages import calibrate
from jaxcomp.recipes._stages import restore

__all__ = ["RecipeResult", "run"]

EVAL_BATCH = 128
"""The batch of the artifact's evaluation, and of the check of its outputs against the trained
model's (the first test inputs)."""


@dataclasses.dataclass
class RecipeResult:
    """What :func:`run` returns.

    Attributes:
        artifact: the ``.jcz`` bytes.
        report: what ``report.json`` holds (see ``docs/recipes.md``).
        final_params: the finalized params (nodes where stages encoded leaves).
        apply_fn: the fast apply of the artifact (:func:`jaxcomp.recipes.deploy`).
        variables: its variables.
    """

    artifact: bytes
    report: dict[str, Any]
    final_params: Any
    apply_fn: Callable[..., Any]
    variables: dict[str, Any]


@dataclasses.dataclass
class _Base:
    recipe: Recipe
    apply_fn: Callable[..., Any]
    start: dict[str, Any]
    given: bool
    data: Any
    input_shape: tuple[int, ...]
    model_name: str
    api: str
    spe: int
    batch_size: int
    teachers: dict[int, tuple[Any, Any]]


def _shifted(t: Transform, offset: int) -> Transform:
    """``t`` whose ``update`` sees the steps since its own stage began."""
    if offset == 0:
        return t

    def update(cparams, state, *, step, grads=None):
        return t.update(cparams, state, step=step + offset, grads=grads)

    return Transform(t.init, t.apply, update, t.finalize, t.apply_own)


def _optimizer(
    setting: Any, training: Mapping[str, Any], steps: int
) -> optax.GradientTransformation:
    """The optimizer of a stage (or of ``[training]``, for the dense model) over ``steps``."""
    get = setting.get if isinstance(setting, Mapping) else lambda k: getattr(setting, k)
    lr, kind, opt = get("lr"), get("lr_schedule"), get("optimizer")
    sched: Any = lr
    if kind == "cosine":
        sched = optax.cosine_decay_schedule(lr, max(1, steps))
    elif kind == "linear":
        sched = optax.linear_schedule(lr, 0.0, max(1, steps))
    if opt == "adam":
        return optax.adam(sched)
    if opt == "adamw":
        return optax.adamw(sched, weight_decay=training["weight_decay"])
    if opt == "momentum":
        return optax.sgd(sched, momentum=training["momentum"])
    return optax.sgd(sched)


def _fresh_state(c, comp_state, model_state, key, apply_fn, tx, transform) -> train.TrainState:
    return train.TrainState(step=jnp.zeros((), jnp.int32), cparams=c, comp_state=comp_state,
                            opt_state=tx.init(c), model_state=model_state, key=key,
                            apply_fn=apply_fn, tx=tx, transform=transform)  # fmt: skip


def _fail(origin: str, where: str, key: str | None, msg: str):
    at = f"{where}: {key}" if key else where
    raise RecipeError(f"{origin}: {at}: {msg}", stage=where, key=key)


def _inference(apply_fn):
    return lambda v, x: apply_fn(v, x)


# ------------------------------------------------------------------------------ setting up


def _base(recipe: Recipe, model: Any, data: Any, variables: Any) -> _Base:
    origin = recipe.origin
    if data is None:
        name = recipe.data.get("name")
        if not name:
            _fail(origin, "[data]", "name", "required (or pass data=, or --data)")
        try:
            data = jdata.load(name, data_dir=recipe.data.get("data_dir"))
        except (DatasetNotFoundError, ValueError) as e:
            _fail(origin, "[data]", "name", str(e).splitlines()[0])
    shape = tuple(int(d) for d in data.x_train.shape[1:])
    key = jax.random.key(recipe.training["seed"])
    k_init = jax.random.fold_in(key, 0)
    name = recipe.model.get("name")
    api = recipe.model.get("api", "linen")
    try:
        if model is None:
            if not name:
                _fail(origin, "[model]", "name", "required (or pass model=, or --model)")
            try:
                model = models.get(name, num_classes=data.num_classes, api=api,
                                   **({"key": k_init, "input_shape": shape}
                                      if api == "nnx" else {}))  # fmt: skip
            except ValueError as e:
                _fail(origin, "[model]", "name", str(e).splitlines()[0])
        else:
            name = name or type(model).__name__
        if isinstance(model, nnx.Module):
            apply_fn, start = functional(model)
            api = "nnx"
        else:
            apply_fn = model.apply
            # one compiled program (bit-identical to flax's eager init, which compiles each
            # initializer of each shape on its own)
            start = models.init(model, k_init, shape)
            api = "linen"
    except RecipeError:
        raise
    except (ValueError, TypeError) as e:
        _fail(origin, "[model]", "name", f"{name} cannot take {data.name}'s inputs {shape}: "
              f"{str(e).splitlines()[0]}")  # fmt: skip
    given = variables is not None
    init_dir = recipe.model.get("init")
    if not given and init_dir:
        try:
            variables = restore(apply_fn, start, init_dir)
        except CheckpointError as e:
            _fail(origin, "[model]", "init", str(e).splitlines()[0])
        given = True
    if given:
        start = jax.tree.map(jnp.asarray, dict(variables))
    bs = min(recipe.training["batch_size"], data.num_train)
    return _Base(recipe, apply_fn, start, given, data, shape, name, api,
                 max(1, data.num_train // bs), bs, {})  # fmt: skip


def _teacher_of(base: _Base, dense: dict[str, Any], num_classes: int):
    def teacher_of(stage):
        a = stage.args
        if a["teacher"] == "dense":
            return base.apply_fn, dense
        if stage.index in base.teachers:
            return base.teachers[stage.index]
        tname = a.get("teacher_model", base.model_name)
        tapi = a.get("teacher_api", "linen")
        key = jax.random.key(0)
        try:
            tm = models.get(tname, num_classes=num_classes, api=tapi,
                            **({"key": key, "input_shape": base.input_shape}
                               if tapi == "nnx" else {}))  # fmt: skip
        except ValueError as e:
            _fail(base.recipe.origin, stage.label, "teacher_model", str(e).splitlines()[0])
        if tapi == "nnx":
            t_apply, template = functional(tm)
        else:
            t_apply = tm.apply
            template = models.init(tm, key, base.input_shape)
        try:
            t_vars = restore(t_apply, template, a["teacher"])
        except (CheckpointError, ValueError) as e:
            _fail(base.recipe.origin, stage.label, "teacher", f"{a['teacher']} does not hold a "
                  f"{tname} checkpoint: {str(e).splitlines()[0]}")  # fmt: skip
        base.teachers[stage.index] = (t_apply, t_vars)
        return t_apply, t_vars

    return teacher_of


# ------------------------------------------------------------------------------ the stages


@dataclasses.dataclass
class _Flow:
    """The run between stages."""

    ts: list[Transform]
    starts: list[int]
    states: list[Any]
    cparams: Any
    model_state: dict[str, Any]
    student_apply: Callable[..., Any]
    objective: Any = None
    activations: dict[str, Any] | None = None
    step: int = 0
    transform: Transform = dataclasses.field(default_factory=identity)
    comp_state: Any = dataclasses.field(default_factory=EmptyState)

    def assemble(self) -> None:
        if self.ts:
            self.transform = chain(
                *[_shifted(t, self.step - s) for t, s in zip(self.ts, self.starts, strict=True)]
            )
            self.comp_state = ChainState(tuple(self.states))
        else:
            self.transform, self.comp_state = identity(), EmptyState()

    def params(self) -> Any:
        return self.transform.apply(self.cparams, self.comp_state)

    def finalize(self) -> Any:
        return self.transform.finalize(self.cparams, self.comp_state)


def _stages(
    base: _Base,
    recipe: Recipe,
    dense: dict[str, Any],
    *,
    trainer: Callable[..., tuple[train.TrainState, float | None]] | None,
    on_stage: Callable[[Any, _Flow, float | None, float], None] | None = None,
    check: bool = False,
    dense_accuracy: float | None = None,
    calibrate_dry: bool = False,
) -> _Flow:
    """Runs the stages before ``encode``. ``trainer=None`` is a dry run: no training, every
    transform compressing fully at ``init`` (for checks and budget predictions)."""
    params0 = dense["params"]
    model_state = {k: v for k, v in dense.items() if k != "params"}
    flow = _Flow([], [], [], params0, model_state, base.apply_fn)
    key = jax.random.key(base.recipe.training["seed"])
    teacher_of = _teacher_of(base, dense, base.data.num_classes)
    x1 = jnp.zeros((1, *base.input_shape), jnp.float32)
    origin = recipe.origin
    last_acc = dense_accuracy
    checks: list[tuple[Any, int, Any, list[Any]]] = []
    for stage in recipe.stages:
        if stage.type == "encode":
            break
        t0 = time.perf_counter()
        flow.assemble()
        dry = trainer is None
        ctx = Context(origin, base.apply_fn, flow.student_apply, dense, flow.params(),
                      flow.cparams, flow.model_state, x1, None if dry else base.data, base.spe,
                      base.batch_size, jax.random.fold_in(key, stage.index),
                      untrained=dry or stage.epochs == 0)  # fmt: skip
        same = jax.tree.structure(flow.cparams) == jax.tree.structure(params0)
        built = build_stage(stage, ctx, teacher_of=teacher_of, dense_structure=same)
        if built.cparams is not None:
            if flow.ts:
                _fail(origin, stage.label, "criterion", "LASSO channel selection refits the "
                      "dense weights: it must be the first stage that compresses")  # fmt: skip
            flow.cparams = built.cparams
        if built.transform is not None:
            try:
                c, s = built.transform.init(flow.cparams)
            except (ValueError, TypeError) as e:
                _fail(origin, stage.label, None, str(e).splitlines()[0])
            flow.ts.append(built.transform)
            flow.starts.append(flow.step)
            flow.states.append(s)
            flow.cparams = c
        flow.assemble()
        if built.student_apply is not None:
            a = stage.args
            flow.student_apply = built.student_apply
            flow.activations = {"rules": [list(r) for r in activation_rules(a["activations"])],
                                "symmetric": a.get("activation_symmetric", False)}  # fmt: skip
            if trainer is not None or calibrate_dry:
                v = calibrate(flow.student_apply, {"params": flow.params(), **flow.model_state},
                              base.data, base.batch_size)  # fmt: skip
                flow.model_state = {k: x for k, x in v.items() if k != "params"}
        if built.teacher is not None:
            t_apply, t_vars, terms = built.teacher
            flow.objective = distill.objective(t_apply, t_vars, terms)
        tx = _optimizer(stage, recipe.training, stage.epochs * base.spe)
        state = _fresh_state(flow.cparams, flow.comp_state, flow.model_state,
                             jax.random.fold_in(key, 1000 + stage.index), flow.student_apply, tx,
                             flow.transform)  # fmt: skip
        changed = built.transform is not None or built.student_apply is not None
        if dry:
            acc = None
        elif stage.epochs:
            state, acc = trainer(stage, state, flow.objective)
        elif changed or last_acc is None:
            acc = train.evaluate(state, base.data.x_test, base.data.y_test)["accuracy"]
        else:  # nothing changed the model: its accuracy stands
            acc = last_acc
        last_acc = acc
        flow.cparams, flow.model_state = state.cparams, state.model_state
        flow.states = list(state.comp_state.states) if flow.ts else []
        flow.comp_state = state.comp_state
        flow.step += stage.epochs * base.spe
        if check and built.transform is not None:
            checks.append((stage, len(flow.ts), flow.cparams, list(flow.states)))
        if on_stage is not None:
            on_stage(stage, flow, acc, time.perf_counter() - t0)
    flow.assemble()
    # the whole chain's baked model against its trained one; where they differ, the first stage
    # whose chain already loses an effect is the one named
    if checks and _lost_in(flow.ts, *checks[-1][1:]):
        for stage, n, cparams, states in checks:
            lost = _lost_in(flow.ts[:n], n, cparams, states)
            if lost:
                _fail(origin, stage.label, None, f"cannot compose with the stages before it: "
                      f"{lost}")  # fmt: skip
    return flow


def _lost_in(ts: list[Transform], n: int, cparams: Any, states: list[Any]) -> str:
    """Where a chain's baked model would differ from its trained one (empty: nowhere)."""
    try:
        lost = _lost(tuple(ts[:n]), cparams, ChainState(tuple(states)))
    except CompositionError as e:
        return str(e).splitlines()[0]
    return "; ".join(lost[:3]) if lost else ""


# ------------------------------------------------------------------------------ measuring


def _stored(tree: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def _nonzeros(tree: Any) -> int:
    """Nonzero stored weights: of each node's decoded children for factors (not of their
    product), of each decoded node otherwise."""
    from jaxcomp.adapt import FactoredKernel
    from jaxcomp.core._nodes import children

    n = 0
    for x in jax.tree.leaves(tree, is_leaf=is_compressed):
        parts = children(x)[0] if isinstance(x, FactoredKernel) else [x]
        n += sum(int(np.count_nonzero(np.asarray(to_dense(p)))) for p in parts)
    return n


def _measure_model(base: _Base, variables: dict[str, Any], act, coder: str, sparse: Any):
    """Bytes (packed with the recipe's coder), MACs of the fast model, stored values, nonzeros."""
    blob = encode.pack(variables, coder=coder, sparse=sparse)
    fast, fast_vars = deploy(base.apply_fn, variables, base.input_shape, activations=act)
    x1 = jnp.zeros((1, *base.input_shape), jnp.float32)
    return {
        "bytes": len(blob),
        "flops": int(analysis.flops(fast, fast_vars, x1)),
        "params": _stored(variables["params"]),
        "nonzeros": _nonzeros(variables["params"]),
    }


def _latency(fns: dict[str, Callable], base: _Base, batches, repeats: int) -> dict[str, Any]:
    out = {}
    for b in batches:
        xb = jnp.asarray(np.resize(base.data.x_test, (b, *base.input_shape)))
        timed = analysis.compare_latency(fns, xb, repeats=repeats, warmup=2,
                                         rounds=min(5, repeats))  # fmt: skip
        out[f"batch_{b}"] = {k: 1e3 * v["median_s"] for k, v in timed.items()}
    return out


def _metadata(base: _Base, recipe: Recipe, baseline: float, activations, extra=None):
    meta = dict(extra or {})
    meta.update({"model": base.model_name, "api": base.api, "num_classes": base.data.num_classes,
                 "input_shape": list(base.input_shape), "data": base.data.name,
                 "recipe": recipe.name, "baseline_accuracy": baseline,
                 "activations": activations})  # fmt: skip
    return meta


def _pack(base, recipe, variables, meta) -> bytes:
    enc = recipe.stages[-1].args
    dense_bytes = 4 * analysis.param_count(base.start["params"])
    return encode.pack(variables, metadata=meta, coder=enc["coder"], sparse=_sparse(enc),
                       dense_bytes=dense_bytes)  # fmt: skip


def _predict(base, recipe, dense, budget: Budget, baseline: float, extra) -> float:
    """The budget's metric of ``recipe`` by a dry run (nothing trained) from ``dense``; bytes with
    the artifact's own metadata."""
    flow = _stages(base, recipe, dense, trainer=None, calibrate_dry=True)
    variables = {"params": flow.finalize(), **flow.model_state}
    if budget.metric == "bytes":
        m = _metadata(base, recipe, baseline, flow.activations, extra)
        return len(_pack(base, recipe, variables, m))
    fast, fast_vars = deploy(base.apply_fn, variables, base.input_shape,
                             activations=flow.activations)  # fmt: skip
    if budget.metric == "flops":
        x1 = jnp.zeros((1, *base.input_shape), jnp.float32)
        return float(analysis.flops(fast, fast_vars, x1))
    lat = _latency({"compressed": lambda x: fast(fast_vars, x)}, base, [budget.batch],
                   recipe.measure["latency_repeats"])  # fmt: skip
    return lat[f"batch_{budget.batch}"]["compressed"]


def _sparse(enc: Mapping[str, Any]) -> Any:
    return None if enc["sparse"] == "auto" else enc["sparse"]


def _widths(final_params: Any) -> list[dict[str, Any]]:
    rows = []
    for p, leaf in jax.tree_util.tree_flatten_with_path(
        final_params, is_leaf=lambda n: isinstance(n, st_.ChannelPruned)
    )[0]:
        path = path_str(p)
        if not path.endswith("kernel"):
            continue
        shape = leaf.shape if isinstance(leaf, st_.ChannelPruned) else np.shape(leaf)
        small = np.shape(leaf.values) if isinstance(leaf, st_.ChannelPruned) else shape
        rows.append({"layer": path.rsplit("/", 1)[0], "dense_width": int(shape[-1]),
                     "width": int(small[-1]), "dense_inputs": int(shape[-2]),
                     "inputs": int(small[-2])})  # fmt: skip
    return rows


def machine() -> dict[str, Any]:
    """Where the latencies were measured: backend, device, CPU, cores, JAX version."""
    return {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
            "processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "jax": jax.__version__}  # fmt: skip


# ------------------------------------------------------------------------------ the run


def _prepare_out(out: str, resume: bool, fingerprint: dict[str, Any]) -> None:
    """Refuses an ``out`` holding another run (without ``resume``) or another recipe."""
    rfile = os.path.join(out, "recipe.json")
    if resume:
        if not os.path.isfile(rfile):
            raise RecipeError(f"--resume: {out} holds no recipe run (no recipe.json)", key="resume")
        with open(rfile, encoding="utf-8") as f:
            old = json.load(f)
        if old != json.loads(json.dumps(fingerprint)):
            raise RecipeError(f"--resume: {out} was started with another recipe, model, budget or "
                              "start; run it with the same ones, or choose another --out",
                              key="resume")  # fmt: skip
        return
    if os.path.isdir(os.path.join(out, "stages")) or os.path.isfile(rfile):
        raise RecipeError(f"{out} already holds a recipe run; pass --resume to continue it, or "
                          "choose another --out", key="out")  # fmt: skip


def _atomic_write(path: str, data: bytes | str) -> None:
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(
        path + ".tmp", mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})
    ) as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def run(
    recipe: Any,
    *,
    model: Any = None,
    data: Any = None,
    variables: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    budget: str | Budget | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> RecipeResult:
    """Runs a recipe end to end (see the module docstring and ``docs/recipes.md``).

    Args:
        recipe: a :class:`Recipe`, a path to a recipe file, a shipped recipe's name, or a dict.
        model: a ``flax.linen`` module (taking ``(x, train=...)``) or an ``nnx.Module``; by
            default ``jaxcomp.models.get`` of the recipe's ``[model] name`` and ``api``.
        data: a :class:`jaxcomp.data.Dataset`; by default the recipe's ``[data] name``.
        variables: trained dense variables to start from (dense training is skipped). Without
            them the model starts from its initial weights (an NNX model's own) and trains.
        out: the folder for ``model.jcz``, ``report.json``, ``report.md``, plots and the stages'
            checkpoints; nothing is written when omitted.
        resume: continue the run in ``out`` from its checkpoints.
        budget: ``"bytes=N"``, ``"flops=N"``, ``"latency_ms=N"`` or ``"latency_ms@B=N"``: the
            recipe's budget knob is set to meet it (``jaxcomp.recipes._budget``).
        metadata: extra JSON metadata stored in the artifact.
        progress: progress bars.
        log: called with one line per finished stage.

    Returns:
        A :class:`RecipeResult`.

    Raises:
        RecipeError: the recipe is malformed or cannot run on this model and data (before
            anything is trained or written).
    """
    t_start = time.perf_counter()
    log = log or (lambda line: None)
    out = None if out is None else os.fspath(out)
    if out is not None and not resume:  # before any work
        _prepare_out(out, False, {})
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    base = _base(rec, model, data, variables)
    bud = parse_budget(budget) if isinstance(budget, str) else budget
    knob = resolve_knob(rec) if bud is not None else None
    # everything is checked on the initial weights before anything is written
    _stages(base, rec, base.start, trainer=None, check=True)
    if bud is not None:
        s_min, v_min = strongest(
            lambda s: _predict(base, scaled(rec, knob, s), base.start, bud, 0.0, metadata),
            min_scale=rec.budget["min_scale"], steps=rec.budget["steps"],
        )  # fmt: skip
        if v_min > bud.value:
            index, k = knob
            raise RecipeError(
                f"--budget {bud}: cannot be met by {rec.name}: its strongest setting (stage "
                f"{index} {k} at scale {s_min:.3g}) is predicted at {v_min:,.4g}",
                key="budget",
            )
    fingerprint = {"recipe": rec.to_dict(), "model": base.model_name, "api": base.api,
                   "budget": None if bud is None else str(bud), "start_given": base.given,
                   "start_sha256": _digest(base.start) if base.given else None}  # fmt: skip
    if out is not None:
        _prepare_out(out, resume, fingerprint)
        os.makedirs(out, exist_ok=True)
        if not resume:
            _atomic_write(os.path.join(out, "recipe.json"), json.dumps(fingerprint, indent=2))
    ds = base.data
    seed = rec.training["seed"]
    key = jax.random.key(seed)
    n_stages = len(rec.stages)

    def stage_dir(i: int, kind: str) -> str | None:
        return None if out is None else os.path.join(out, "stages", f"{i:02d}-{kind}")

    def fit(state, epochs: int, objective, i: int, kind: str, title: str):
        every = rec.training["checkpoint_every"] or base.spe
        d = stage_dir(i, kind)
        res = train.fit(
            state, ds, batch_size=base.batch_size, epochs=epochs, seed=seed, out_dir=d,
            checkpoint_every=every if d else None, resume=True, progress=progress,
            train_step=train.make_train_step(objective), eval_every=10**9,
            description=f"{i}/{n_stages} {title}",
        )  # fmt: skip
        if res.history:
            return res.state, res.history[-1]["test_accuracy"]
        return res.state, train.evaluate(res.state, ds.x_test, ds.y_test)["accuracy"]

    # 1. dense
    t0 = time.perf_counter()
    dense = base.start
    if not base.given and rec.training["epochs"]:
        tx = _optimizer(rec.training, rec.training, rec.training["epochs"] * base.spe)
        state = train.TrainState.create(apply_fn=base.apply_fn, variables=dense, tx=tx,
                                        key=jax.random.fold_in(key, 1))  # fmt: skip
        state, _ = fit(state, rec.training["epochs"], None, 0, "dense", "dense")
        dense = state.variables()
    baseline = accuracy(_inference(base.apply_fn), dense, ds.x_test, ds.y_test,
                        batch_size=min(EVAL_BATCH, ds.num_test))  # fmt: skip
    x1 = jnp.zeros((1, *base.input_shape), jnp.float32)
    dense_flops = int(analysis.flops(_inference(base.apply_fn), dense, x1))
    n_params = analysis.param_count(dense["params"])
    dense_bytes = 4 * n_params
    records = [{"stage": "dense", "type": "dense", "epochs": 0 if base.given else
                rec.training["epochs"], "test_accuracy": baseline, "bytes": dense_bytes,
                "flops": dense_flops, "params": n_params,
                "nonzeros": int(analysis.nonzero_count(dense["params"])),
                "seconds": round(time.perf_counter() - t0, 2)}]  # fmt: skip
    log(f"dense: test accuracy {baseline:.4f}, {dense_bytes:,} bytes, {dense_flops:,} MACs")

    # 2. the budget's strength, chosen on the dense weights (kept for --resume)
    budget_report = None
    if bud is not None:
        bfile = None if out is None else os.path.join(out, "budget.json")
        if bfile and resume and os.path.isfile(bfile):
            with open(bfile, encoding="utf-8") as f:
                budget_report = json.load(f)
        else:
            # bytes and latency are predicted before training moves the weights (and the
            # machine's load moves the timings): the search aims `margin` under the budget;
            # FLOPs follow from the shapes alone
            margin = 0.0 if bud.metric == "flops" else rec.budget["margin"]
            scale, predicted, tried = search(
                lambda s: _predict(base, scaled(rec, knob, s), dense, bud, baseline, metadata),
                bud._replace(value=bud.value * (1 - margin)),
                min_scale=rec.budget["min_scale"], max_scale=rec.budget["max_scale"],
                steps=rec.budget["steps"],
            )  # fmt: skip
            index, k = knob
            budget_report = {"metric": bud.metric, "value": bud.value, "batch": bud.batch,
                             "aimed_at": bud.value * (1 - margin),
                             "knob": f"stage {index} ({rec.stages[index - 1].type}).{k}",
                             "scale": scale, "predicted": predicted,
                             "setting": scaled(rec, knob, scale).to_dict()["stages"][index - 1][k],
                             "tried": [list(t) for t in tried]}  # fmt: skip
            if bfile:
                _atomic_write(bfile, json.dumps(budget_report, indent=2))
        rec = scaled(rec, knob, budget_report["scale"])
        log(
            f"budget {bud}: {budget_report['knob']} = {budget_report['setting']} (scale "
            f"{budget_report['scale']:.3g}, predicted {budget_report['predicted']:,.4g})"
        )

    # 3. the stages
    enc = rec.stages[-1].args

    def trainer(stage, state, objective):
        return fit(state, stage.epochs, objective, stage.index, stage.type, stage.title)

    def on_stage(stage, flow: _Flow, acc, seconds):
        variables_ = {"params": flow.finalize(), **flow.model_state}
        m = _measure_model(base, variables_, flow.activations, enc["coder"], _sparse(enc))
        records.append({"stage": stage.title, "type": stage.type, "epochs": stage.epochs,
                        "test_accuracy": acc, **m, "seconds": round(seconds, 2)})  # fmt: skip
        log(f"{stage.label} {stage.title}: test accuracy {acc:.4f}, {m['bytes']:,} bytes coded, "
            f"{m['flops']:,} MACs")  # fmt: skip

    flow = _stages(base, rec, dense, trainer=trainer, on_stage=on_stage, dense_accuracy=baseline)

    # 4. encode, load back, check, evaluate, time
    t0 = time.perf_counter()
    final = flow.finalize()
    meta = _metadata(base, rec, baseline, flow.activations, metadata)
    blob = _pack(base, rec, {"params": final, **flow.model_state}, meta)
    stored, _ = read_artifact(blob)
    fast, fast_vars = deploy(base.apply_fn, stored, base.input_shape,
                             activations=flow.activations)  # fmt: skip
    state = _fresh_state(flow.cparams, flow.comp_state, flow.model_state, key,
                         flow.student_apply, optax.identity(), flow.transform)  # fmt: skip
    fwd = jax.jit(fast)
    bsz = min(EVAL_BATCH, ds.num_test)
    probe = jnp.asarray(ds.x_test[:bsz])
    want = jax.jit(lambda st, x: train.forward(st, st.params, x, train=False)[0])(state, probe)
    got = fwd(fast_vars, probe)
    scale = float(jnp.max(jnp.abs(want))) or 1.0
    tol = 2e-2 if flow.activations else 1e-4  # int8 inputs: a rounding tie may fall otherwise
    if not np.allclose(got, want, rtol=tol, atol=tol * scale):  # never report a wrong model
        raise RuntimeError(
            "the artifact's outputs differ from the trained model's by "
            f"{float(jnp.max(jnp.abs(got - want))):.3g}; please report this recipe and model"
        )
    final_acc = accuracy(fwd, fast_vars, ds.x_test, ds.y_test, batch_size=bsz)
    flops = int(analysis.flops(fast, fast_vars, x1))
    stored_params = _stored(stored["params"])  # as on disk
    records.append({"stage": rec.stages[-1].title, "type": "encode", "epochs": 0,
                    "test_accuracy": final_acc, "bytes": len(blob), "flops": flops,
                    "params": stored_params,
                    "nonzeros": _nonzeros(final),
                    "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip
    fns = {"dense": lambda x: base.apply_fn(dense, x), "compressed": lambda x: fast(fast_vars, x)}
    lat = _latency(fns, base, rec.measure["latency_batches"], rec.measure["latency_repeats"])
    big = f"batch_{max(rec.measure['latency_batches'])}"
    one = f"batch_{min(rec.measure['latency_batches'])}"
    art = encode.report(blob, dense_bytes=dense_bytes)
    report: dict[str, Any] = {
        "model": base.model_name,
        "data": ds.name,
        "recipe": rec.name,
        "api": base.api,
        "baseline_accuracy": baseline,
        "final_accuracy": final_acc,
        "accuracy_change_pp": 100 * (final_acc - baseline),
        "dense_bytes": dense_bytes,
        "compressed_bytes": len(blob),
        "compression_ratio": dense_bytes / len(blob),
        "params": n_params,
        "stored_params": stored_params,
        "params_ratio": stored_params / n_params,
        "nonzeros": records[-1]["nonzeros"],
        "dense_flops": dense_flops,
        "flops": flops,
        "flops_ratio": flops / dense_flops if dense_flops else None,
        "latency_ms": lat,
        "measured_speedup": lat[big]["dense"] / lat[big]["compressed"],
        "measured_speedup_batch1": lat[one]["dense"] / lat[one]["compressed"],
        "budget": None,
        "stages": records,
        "layers": layer_rows(art, dense["params"]),
        "bytes": art["bytes"],
        "artifact_sha256": hashlib.sha256(blob).hexdigest(),
        "machine": machine(),
        "config": rec.to_dict(),
    }
    widths = _widths(final)
    if any(isinstance(x, st_.ChannelPruned)
           for x in jax.tree.leaves(final, is_leaf=is_compressed)):  # fmt: skip
        report["widths"] = widths
    if budget_report is not None:
        measured = {
            "bytes": len(blob),
            "flops": flops,
            "latency_ms": lat.get(f"batch_{bud.batch}", {}).get("compressed"),
        }[bud.metric]
        if bud.metric == "latency_ms" and measured is None:
            measured = _latency(
                {"compressed": fns["compressed"]}, base, [bud.batch], rec.measure["latency_repeats"]
            )[f"batch_{bud.batch}"]["compressed"]
        report["budget"] = {**budget_report, "measured": measured, "met": measured <= bud.value}
    report["wall_s"] = round(time.perf_counter() - t_start, 2)
    log(
        f"encoded: test accuracy {final_acc:.4f}, {len(blob):,} bytes "
        f"({dense_bytes / len(blob):.1f}x), {flops:,} MACs, "
        f"{report['measured_speedup']:.2f}x the dense model's speed at {big.replace('_', ' ')}"
    )
    if out is not None:
        _atomic_write(os.path.join(out, "model.jcz"), blob)
        _atomic_write(os.path.join(out, "report.json"), json.dumps(report, indent=2))
        _atomic_write(os.path.join(out, "report.md"), markdown_report(report))
        plot_stages(records, os.path.join(out, "stages.png"))
        plot_layers(report["layers"], os.path.join(out, "layers.png"))
        if "widths" in report:
            plot_widths(widths, os.path.join(out, "widths.png"))
    return RecipeResult(blob, report, final, fast, fast_vars)


def _digest(tree: Any) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        a = np.ascontiguousarray(leaf)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()

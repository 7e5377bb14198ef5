"""Recipe files: the schema, its validation, and the recipes shipped with jaxcomp.

A recipe is a TOML file (or the same content as a dict) naming a model, its data, how it trains,
and an ordered list of stages, each one of the library's transforms or objectives with its
arguments and how long it trains (``docs/recipes.md`` is the reference)::

    [model]
    name = "lenet5"

    [data]
    name = "mnist5k"

    [training]
    epochs = 20          # the dense model (skipped when it is given)

    [[stages]]
    type = "prune"
    sparsity = 0.9
    epochs = 10

    [[stages]]
    type = "encode"
    coder = "huffman"

Everything is checked before anything runs: an unknown section, stage type, key or value is a
:class:`jaxcomp.errors.RecipeError` whose one-line message names where it is (``stage 2
(prune)``), the key, and what is allowed. Stage-specific keys are checked by
:mod:`jaxcomp.recipes._stages`, against the signature of the factory each stage calls.

Shipped recipes live in ``jaxcomp/recipes/shipped/NAME/MODEL.toml`` (or ``default.toml``, for any
model); :func:`shipped` lists them and :func:`load_recipe` finds one by name.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import math
import os
import tomllib
from collections.abc import Mapping
from typing import Any

from jaxcomp.errors import RecipeError

__all__ = [
    "Recipe",
    "Stage",
    "load_recipe",
    "parse",
    "shipped",
]

STAGE_TYPES = ("lowrank", "prune", "quant", "distill", "finetune", "encode")
OPTIMIZERS = ("adam", "adamw", "sgd", "momentum")
LR_SCHEDULES = ("constant", "cosine", "linear")
APIS = ("linen", "nnx")
_TOP = ("name", "description", "model", "data", "training", "measure", "budget", "stages")
_MODEL = ("name", "api", "init")
_DATA = ("name", "data_dir")
_TRAINING = ("optimizer", "lr", "lr_schedule", "batch_size", "epochs", "seed", "checkpoint_every",
             "momentum", "weight_decay")  # fmt: skip
_MEASURE = ("latency_repeats", "latency_batches")
_BUDGET = ("knob", "min_scale", "max_scale", "steps", "margin")
STAGE_COMMON = ("type", "epochs", "lr", "optimizer", "lr_schedule")
"""Keys every stage takes (``epochs`` of training at that stage, and its optimizer's settings,
which default to ``[training]``'s)."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a recipe.

    Attributes:
        index: its position, from 1.
        type: one of ``lowrank``, ``prune``, ``quant``, ``distill``, ``finetune``, ``encode``.
        epochs: epochs of training at this stage (0: none).
        lr, optimizer, lr_schedule: its optimizer (``[training]``'s where the stage gives none).
        args: the stage's own keys, checked (see ``docs/recipes.md``).
    """

    index: int
    type: str
    epochs: int
    lr: float
    optimizer: str
    lr_schedule: str
    args: Mapping[str, Any]

    @property
    def label(self) -> str:
        """``"stage 2 (prune)"``: how messages and reports name it."""
        return f"stage {self.index} ({self.type})"

    @property
    def title(self) -> str:
        """A short name for reports: ``"prune"``, ``"lowrank svd"``, ``"quant kmeans"``."""
        what = self.args.get("method") or self.args.get("scheme") or self.args.get("kind")
        if self.type == "prune" and self.args.get("kind") == "unstructured":
            what = self.args.get("criterion")
        if self.type == "prune" and self.args.get("kind") == "structured":
            what = f"channels {self.args.get('criterion')}"
        if self.type == "encode":
            what = self.args.get("coder")
        return f"{self.type} {what}" if what else self.type


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A checked recipe: what :func:`jaxcomp.recipes.run` runs.

    Attributes:
        name: the recipe's name (the file's, or its ``name`` key).
        description: one sentence.
        model: ``{"name", "api", "init"}``.
        data: ``{"name", "data_dir"}``.
        training: ``{"optimizer", "lr", "lr_schedule", "batch_size", "epochs", "seed",
            "checkpoint_every", "momentum", "weight_decay"}``.
        measure: ``{"latency_repeats", "latency_batches"}``.
        budget: ``{"knob", "min_scale", "max_scale", "steps", "margin"}``.
        stages: the stages, in order; the last is ``encode``.
        source: the dict it was parsed from (with defaults filled in), for :meth:`to_dict`.
        origin: where it came from (a path, ``shipped:NAME/MODEL``, or ``<dict>``).
    """

    name: str
    description: str
    model: Mapping[str, Any]
    data: Mapping[str, Any]
    training: Mapping[str, Any]
    measure: Mapping[str, Any]
    budget: Mapping[str, Any]
    stages: tuple[Stage, ...]
    source: Mapping[str, Any]
    origin: str

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a plain dict (JSON- and TOML-able), defaults filled in."""
        return copy.deepcopy(dict(self.source))

    def replace(self, changes: Mapping[str, Any]) -> Recipe:
        """A copy with ``changes`` made and checked again.

        Args:
            changes: ``{"training.epochs": 2, "model.name": "lenet300", "stages.3.bits": 3}``:
                dotted paths into the recipe's dict (stages by their number, from 1).
        """
        src = self.to_dict()
        for path, value in changes.items():
            parts = path.split(".")
            node: Any = src
            for p in parts[:-1]:
                node = node[int(p) - 1] if isinstance(node, list) else node.setdefault(p, {})
            node[parts[-1]] = value
        return parse(src, origin=self.origin)


def _fail(origin: str, where: str, key: str | None, msg: str, stage: str | None = None):
    at = f"{where}: {key}" if key else where
    raise RecipeError(f"{origin}: {at}: {msg}", stage=stage, key=key)


def _unknown(origin: str, where: str, table: Mapping[str, Any], allowed: tuple[str, ...],
             stage: str | None = None) -> None:  # fmt: skip
    for k in table:
        if k not in allowed:
            _fail(origin, where, k, f"unknown key; allowed: {', '.join(allowed)}", stage)


def _table(origin: str, src: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = src.get(name, {})
    if not isinstance(value, Mapping):
        _fail(origin, f"[{name}]", None, f"must be a table, got {type(value).__name__}")
    return dict(value)


def check_int(origin, where, key, v, *, low=0, stage=None) -> int:
    """``v`` as an int >= ``low``, or a RecipeError naming ``where`` and ``key``."""
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        _fail(origin, where, key, f"must be an integer >= {low}, got {v!r}", stage)
    return v


def check_number(origin, where, key, v, *, low=0.0, open_low=True, stage=None) -> float:
    """``v`` as a finite float > ``low`` (>= with ``open_low=False``), or a RecipeError."""
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or v < low or (open_low and v == low):
        _fail(origin, where, key, f"must be a number {'>' if open_low else '>='} {low:g}, got "
              f"{v!r}", stage)  # fmt: skip
    return float(v)


def check_choice(origin, where, key, v, allowed, *, stage=None):
    """``v`` if it is one of ``allowed``, or a RecipeError listing them."""
    if v not in allowed:
        _fail(origin, where, key, f"must be one of {', '.join(map(str, allowed))}; got {v!r}",
              stage)  # fmt: skip
    return v


def parse(src: Mapping[str, Any], *, origin: str = "<dict>") -> Recipe:
    """Checks a recipe's dict and returns the :class:`Recipe`.

    Args:
        src: the recipe, as ``tomllib`` reads it.
        origin: where it came from, for messages.

    Raises:
        RecipeError: anything malformed (one line naming the section or stage and the key).
    """
    from jaxcomp.recipes._stages import check_stage

    if not isinstance(src, Mapping):
        _fail(origin, "recipe", None, f"must be a table, got {type(src).__name__}")
    _unknown(origin, "recipe", src, _TOP)
    name = src.get("name", "recipe")
    if not isinstance(name, str) or not name:
        _fail(origin, "recipe", "name", f"must be a non-empty string, got {name!r}")
    description = src.get("description", "")
    if not isinstance(description, str):
        _fail(origin, "recipe", "description", "must be a string")

    model = _table(origin, src, "model")
    _unknown(origin, "[model]", model, _MODEL)
    if "name" in model and (not isinstance(model["name"], str) or not model["name"]):
        _fail(origin, "[model]", "name", f"must be a model name, got {model['name']!r}")
    model.setdefault("api", "linen")
    check_choice(origin, "[model]", "api", model["api"], APIS)
    if "init" in model and not isinstance(model["init"], str):
        _fail(origin, "[model]", "init", "must be a path (a `jaxcomp train` --out folder)")

    data = _table(origin, src, "data")
    _unknown(origin, "[data]", data, _DATA)
    for k in ("name", "data_dir"):
        if k in data and not isinstance(data[k], str):
            _fail(origin, "[data]", k, f"must be a string, got {data[k]!r}")

    tr = _table(origin, src, "training")
    _unknown(origin, "[training]", tr, _TRAINING)
    tr.setdefault("optimizer", "adam")
    check_choice(origin, "[training]", "optimizer", tr["optimizer"], OPTIMIZERS)
    tr.setdefault("lr", 1e-3)
    check_number(origin, "[training]", "lr", tr["lr"])
    tr.setdefault("lr_schedule", "constant")
    check_choice(origin, "[training]", "lr_schedule", tr["lr_schedule"], LR_SCHEDULES)
    tr.setdefault("batch_size", 64)
    check_int(origin, "[training]", "batch_size", tr["batch_size"], low=1)
    tr.setdefault("epochs", 10)
    check_int(origin, "[training]", "epochs", tr["epochs"])
    tr.setdefault("seed", 0)
    check_int(origin, "[training]", "seed", tr["seed"])
    tr.setdefault("checkpoint_every", 0)
    check_int(origin, "[training]", "checkpoint_every", tr["checkpoint_every"])
    tr.setdefault("momentum", 0.9)
    check_number(origin, "[training]", "momentum", tr["momentum"], open_low=False)
    tr.setdefault("weight_decay", 1e-4)
    check_number(origin, "[training]", "weight_decay", tr["weight_decay"], open_low=False)

    ms = _table(origin, src, "measure")
    _unknown(origin, "[measure]", ms, _MEASURE)
    ms.setdefault("latency_repeats", 30)
    check_int(origin, "[measure]", "latency_repeats", ms["latency_repeats"], low=1)
    ms.setdefault("latency_batches", [1, 128])
    lb = ms["latency_batches"]
    if (
        not isinstance(lb, list)
        or not lb
        or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in lb)
    ):
        _fail(origin, "[measure]", "latency_batches", f"must be a list of batch sizes >= 1, got "
              f"{lb!r}")  # fmt: skip

    bd = _table(origin, src, "budget")
    _unknown(origin, "[budget]", bd, _BUDGET)
    if "knob" in bd and not isinstance(bd["knob"], str):
        _fail(origin, "[budget]", "knob", "must be 'TYPE.KEY', such as 'prune.sparsity'")
    bd.setdefault("min_scale", 1 / 32)
    bd.setdefault("max_scale", 4.0)
    check_number(origin, "[budget]", "min_scale", bd["min_scale"])
    check_number(origin, "[budget]", "max_scale", bd["max_scale"], low=bd["min_scale"])
    bd.setdefault("steps", 8)
    check_int(origin, "[budget]", "steps", bd["steps"], low=1)
    bd.setdefault("margin", 0.05)
    check_number(origin, "[budget]", "margin", bd["margin"], open_low=False)
    if bd["margin"] >= 1:
        _fail(origin, "[budget]", "margin", f"must be in [0, 1), got {bd['margin']!r}")

    raw = src.get("stages")
    if not isinstance(raw, list) or not raw:
        _fail(origin, "recipe", "stages", "must be a list of [[stages]] tables, one at least")
    stages: list[Stage] = []
    clean: list[dict[str, Any]] = []
    for i, st in enumerate(raw, 1):
        if not isinstance(st, Mapping):
            _fail(origin, f"stage {i}", None, f"must be a table, got {type(st).__name__}")
        kind = st.get("type")
        where = f"stage {i} ({kind})" if isinstance(kind, str) else f"stage {i}"
        if kind not in STAGE_TYPES:
            _fail(origin, where, "type", f"must be one of {', '.join(STAGE_TYPES)}; got {kind!r}",
                  where)  # fmt: skip
        st = dict(st)
        epochs = check_int(origin, where, "epochs", st.setdefault("epochs", 0), stage=where)
        if kind == "encode" and epochs:
            _fail(origin, where, "epochs", "an encode stage does not train; remove epochs", where)
        lr = check_number(origin, where, "lr", st.setdefault("lr", tr["lr"]), stage=where)
        opt = check_choice(origin, where, "optimizer", st.setdefault("optimizer",
                           tr["optimizer"]), OPTIMIZERS, stage=where)  # fmt: skip
        sch = check_choice(origin, where, "lr_schedule", st.setdefault("lr_schedule",
                           tr["lr_schedule"]), LR_SCHEDULES, stage=where)  # fmt: skip
        args = check_stage(origin, where, kind, {k: v for k, v in st.items()
                                                 if k not in STAGE_COMMON})  # fmt: skip
        stages.append(Stage(i, kind, epochs, lr, opt, sch, args))
        clean.append(st)
    encodes = [s.index for s in stages if s.type == "encode"]
    if len(encodes) > 1:
        _fail(origin, f"stage {encodes[1]} (encode)", None, "a recipe encodes once (the last "
              "stage)", f"stage {encodes[1]} (encode)")  # fmt: skip
    if encodes and encodes[0] != len(stages):
        where = f"stage {encodes[0]} (encode)"
        _fail(origin, where, None, "encode must be the last stage (it writes the artifact)", where)
    if not encodes:  # every recipe ends in an artifact: the default coder
        st = {"type": "encode", "epochs": 0, "lr": tr["lr"], "optimizer": tr["optimizer"],
              "lr_schedule": tr["lr_schedule"]}  # fmt: skip
        n = len(stages) + 1
        args = check_stage(origin, f"stage {n} (encode)", "encode", {})
        stages.append(Stage(n, "encode", 0, tr["lr"], tr["optimizer"], tr["lr_schedule"], args))
        clean.append({**st, **args})
    source = {"name": name, "description": description, "model": model, "data": data,
              "training": tr, "measure": ms, "budget": bd, "stages": clean}  # fmt: skip
    return Recipe(name, description, model, data, tr, ms, bd, tuple(stages), source, origin)


def _shipped_root():
    return importlib.resources.files("jaxcomp.recipes") / "shipped"


def shipped() -> dict[str, dict[str, Any]]:
    """The recipes shipped with jaxcomp.

    Returns:
        ``{name: {"models": [...], "description": str, "files": {model: resource}}}``, sorted
        by name; the model ``"default"`` is a version for any model.
    """
    out: dict[str, dict[str, Any]] = {}
    root = _shipped_root()
    for d in sorted(root.iterdir(), key=lambda p: p.name):
        if not d.is_dir():
            continue
        files = {f.name[: -len(".toml")]: f for f in sorted(d.iterdir(), key=lambda p: p.name)
                 if f.name.endswith(".toml")}  # fmt: skip
        if not files:
            continue
        first = tomllib.loads(next(iter(files.values())).read_text(encoding="utf-8"))
        out[d.name] = {"models": list(files), "description": first.get("description", ""),
                       "files": files}  # fmt: skip
    return out


def _read_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{origin}: not valid TOML: {e}") from None


def load_recipe(
    recipe: str | os.PathLike[str] | Mapping[str, Any] | Recipe,
    *,
    model: str | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Recipe:
    """Reads and checks a recipe: a file, a shipped recipe's name, a dict, or a :class:`Recipe`.

    Args:
        recipe: a path to a ``.toml`` file; the name of a shipped recipe (``"deep-compression"``;
            ``jaxcomp recipes`` lists them), whose version for ``model`` is taken (its
            ``default`` version for a model it has none for); a dict of the same content; or a
            :class:`Recipe`.
        model: the model to run it on, replacing the recipe's ``[model] name``.
        changes: further changes, as :meth:`Recipe.replace` takes them.

    Returns:
        The checked :class:`Recipe`.

    Raises:
        RecipeError: no such file or shipped recipe, no version for ``model``, or anything
            malformed.

    Examples:
        >>> r = load_recipe("deep-compression", model="lenet5")
        >>> [s.type for s in r.stages]
        ['prune', 'finetune', 'quant', 'encode']
    """
    if isinstance(recipe, Recipe):
        rec = recipe
    elif isinstance(recipe, Mapping):
        rec = parse(recipe)
    else:
        path = os.fspath(recipe)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                src = _read_toml(f.read(), path)
            src.setdefault("name", os.path.splitext(os.path.basename(path))[0])
            rec = parse(src, origin=path)
        else:
            table = shipped()
            if path not in table:
                if path.endswith(".toml") or os.sep in path:
                    raise RecipeError(f"--recipe {path}: no such file")
                raise RecipeError(
                    f"--recipe {path}: neither a file nor a shipped recipe; shipped: "
                    f"{', '.join(table)}"
                )
            files = table[path]["files"]
            version = model if model in files else "default" if "default" in files else None
            if version is None:
                if model is None and len(files) == 1:
                    version = next(iter(files))
                else:
                    raise RecipeError(
                        f"--recipe {path} has versions for {', '.join(files)}"
                        + (f", not for --model {model}" if model else "; give --model")
                    )
            src = _read_toml(files[version].read_text(encoding="utf-8"), f"{path}/{version}")
            src.setdefault("name", path)
            rec = parse(src, origin=f"shipped:{path}/{version}")
    if model is not None and rec.model.get("name") != model:
        rec = rec.replace({"model.name": model})
    if changes:
        rec = rec.replace(changes)
    return rec

"""The stages of a recipe: their keys, and the transform, objective or adapter each one builds.

Each stage type calls one family of the library (``docs/recipes.md`` lists the keys):

* ``lowrank``: ``method`` names a :mod:`jaxcomp.lowrank` factory (``svd``, ``tucker2``, ``cp``,
  ``jaderberg``, ``bicluster``, ``monochromatic``, ``separable_basis``, ``predicted``); the other
  keys are that factory's arguments (checked against its signature).
* ``prune``: ``kind = "unstructured"`` (``criterion`` magnitude, random or taylor; ``sparsity``
  ramped by a ``schedule``), ``"nm"`` (N:M) or ``"structured"`` (:func:`jaxcomp.structured.channels`
  by ``flops`` or ``ratio``, ``criterion`` l1, l2, bn, taylor or lasso).
* ``quant``: ``scheme`` names a :mod:`jaxcomp.quant` weight quantizer (``uniform``, ``kmeans``,
  ``ecsq``, ``product``, ``residual``, ``binary``, ``ternary``, ``binary_connect``,
  ``ternary_connect``, ``power_of_two``, ``fixed_point``, ``lab``) with its arguments; ``estimator``
  (``ste`` or ``lsq``) and ``observer`` for ``uniform``; ``activations`` quantizes layer inputs too
  (:func:`jaxcomp.quant.activations`, calibrated on training batches).
* ``distill``: from this stage on, training is against a teacher (``"dense"``: the recipe's dense
  model; or a ``jaxcomp train`` folder) with KD, hint, attention, mimic and label ``terms``.
* ``finetune``: trains the model as it is. ``encode``: the artifact's ``coder``.

A transform stage's transform is chained after the ones before it (:func:`jaxcomp.chain`): a
pruner after a low-rank stage prunes the factors, a quantizer after it clusters what survived.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp import distill
from jaxcomp import lowrank
from jaxcomp import prune
from jaxcomp import quant
from jaxcomp import schedules
from jaxcomp import select
from jaxcomp import structured as st_
from jaxcomp.core import Transform
from jaxcomp.errors import RecipeError

__all__ = ["LOWRANK", "QUANT", "Built", "Context", "build_stage", "check_stage"]

LOWRANK: dict[str, Callable[..., Transform]] = {
    "svd": lowrank.svd,
    "tucker2": lowrank.tucker2,
    "cp": lowrank.cp,
    "jaderberg": lowrank.jaderberg,
    "bicluster": lowrank.bicluster,
    "monochromatic": lowrank.monochromatic,
    "separable_basis": lowrank.separable_basis,
    "predicted": lowrank.predicted,
}
QUANT: dict[str, Callable[..., Transform]] = {
    "uniform": quant.fake_quant,
    "kmeans": quant.kmeans,
    "ecsq": quant.ecsq,
    "product": quant.product_quant,
    "residual": quant.residual_quant,
    "binary": quant.binary_weights,
    "ternary": quant.ternary_weights,
    "binary_connect": quant.binary_connect,
    "ternary_connect": quant.ternary_connect,
    "power_of_two": quant.power_of_two,
    "fixed_point": quant.fixed_point,
    "lab": quant.loss_aware_binary,
}
UNSTRUCTURED: dict[str, Callable[..., Transform]] = {
    "magnitude": prune.magnitude,
    "random": prune.random,
    "taylor": prune.taylor,
}
PRUNE_KINDS = ("unstructured", "nm", "structured")
STRUCTURED_CRITERIA = (*st_.CRITERIA, "lasso")
SPARSITY_SCHEDULES = ("cubic", "linear", "one_shot")
OBSERVERS = {"minmax": quant.minmax, "percentile": quant.percentile, "mse": quant.mse,
             "moving_average": quant.moving_average}  # fmt: skip
ESTIMATORS = ("ste", "lsq")
CODERS = ("huffman", "ans", "raw")
# factory arguments a recipe does not set: keys are drawn from the seed; Hessians, calibration
# inputs and observer objects are not file values (observer has its own string key)
_NOT_KEYS = ("key", "hessian", "hessian_diag", "inputs", "observer", "learned_step")
_RULE_KEYS = ("sparsity", "bits", "rank", "clusters", "axis")
_ACT_KEYS = ("activations", "activation_symmetric", "int_matmul")
_TERMS = {
    "kd": ("kind", "temperature", "alpha", "weight"),
    "hint": ("kind", "student", "teacher", "weight"),
    "attention": ("kind", "pairs", "p", "weight"),
    "mimic": ("kind", "weight"),
    "labels": ("kind", "weight"),
}
LASSO_EXAMPLES = 256
"""Training examples that LASSO channel selection reads."""


def _fail(origin: str, where: str, key: str | None, msg: str):
    at = f"{where}: {key}" if key else where
    raise RecipeError(f"{origin}: {at}: {msg}", stage=where, key=key)


def _keys(fn: Callable[..., Any]) -> tuple[str, ...]:
    sig = inspect.signature(fn)
    return tuple(n for n, p in sig.parameters.items()
                 if p.kind == p.KEYWORD_ONLY and n not in _NOT_KEYS)  # fmt: skip


def _takes_key(fn: Callable[..., Any]) -> bool:
    return "key" in inspect.signature(fn).parameters


def _rules(value: Any) -> Any:
    """TOML's ``[["Dense_0", 0.9], ...]`` or ``{"Dense_0" = 0.9}`` as ``[(regex, value)]``."""
    if isinstance(value, Mapping):
        return [(k, v) for k, v in value.items()]
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(r, list | tuple) and len(r) == 2 and isinstance(r[0], str) for r in value
        )
    ):
        return [tuple(r) for r in value]
    return value


def where_of(value: Any, origin: str, where: str) -> Any:
    """A recipe's ``where``: ``"kernels"`` (default), ``"all"`` (every float array), a regex, or
    ``[[regex, true|false], ...]`` rules."""
    if value == "kernels":
        return select.kernels()
    if value == "all":
        return select.floating()
    if isinstance(value, str):
        return select.by_regex(value)
    rules = _rules(value)
    if isinstance(rules, list) and all(isinstance(v, bool) for _, v in rules):
        return rules
    _fail(origin, where, "where", "must be 'kernels', 'all', a regex, or [[regex, true|false], ...]"
          f" rules; got {value!r}")  # fmt: skip


def _allowed(origin: str, where: str, args: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for k in args:
        if k not in allowed:
            _fail(origin, where, k, f"unknown key; allowed: {', '.join(allowed)}")


def _method(origin, where, args, key, table) -> Callable[..., Transform]:
    name = args.get(key)
    if name not in table:
        _fail(origin, where, key, f"must be one of {', '.join(table)}; got {name!r}")
    return table[name]


def _call(origin: str, where: str, fn: Callable[..., Transform], kwargs: dict[str, Any]):
    try:
        return fn(**kwargs)
    except (ValueError, TypeError) as e:
        _fail(origin, where, None, str(e).splitlines()[0])


def _factory_kwargs(fn, args: Mapping[str, Any], skip: tuple[str, ...], origin, where, key=None):
    kw = {k: (_rules(v) if k in _RULE_KEYS else v) for k, v in args.items() if k not in skip}
    if "where" in kw:
        kw["where"] = where_of(kw["where"], origin, where)
    if _takes_key(fn):
        kw["key"] = jax.random.key(0) if key is None else key
    return kw


def _check_terms(origin: str, where: str, terms: Any) -> list[distill.Term]:
    if not isinstance(terms, list) or not terms:
        _fail(origin, where, "terms", "must be a list of tables such as {kind = \"kd\", "
              "temperature = 4.0}, one at least")  # fmt: skip
    out = []
    for i, t in enumerate(terms, 1):
        at = f"terms[{i}]"
        if not isinstance(t, Mapping) or t.get("kind") not in _TERMS:
            _fail(origin, where, at, f"must be a table with kind one of {', '.join(_TERMS)}; "
                  f"got {t!r}")  # fmt: skip
        kind = t["kind"]
        for k in t:
            if k not in _TERMS[kind]:
                _fail(origin, where, f"{at}.{k}", f"unknown key of a {kind} term; allowed: "
                      f"{', '.join(_TERMS[kind])}")  # fmt: skip
        kw = {k: v for k, v in t.items() if k != "kind"}
        try:
            if kind == "kd":
                out.append(distill.kd_term(**kw))
            elif kind == "mimic":
                out.append(distill.mimic_term(**kw))
            elif kind == "labels":
                out.append(distill.label_term(**kw))
            elif kind == "hint":
                if "student" not in kw or "teacher" not in kw:
                    _fail(origin, where, at, "a hint term needs student and teacher layer names")
                out.append(distill.hint_term(kw.pop("student"), kw.pop("teacher"), **kw))
            else:
                pairs = kw.pop("pairs", None)
                out.append(distill.attention_term(_rules(pairs) or [], **kw))
        except (ValueError, TypeError) as e:
            _fail(origin, where, at, str(e).splitlines()[0])
    return out


def check_stage(origin: str, where: str, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Checks one stage's own keys (not ``type``/``epochs``/``lr``/...) and fills defaults.

    Hyperparameters are checked by building the stage's factory once (with a throwaway key), so
    the message is the factory's own (``kmeans: bits must be an int in [2, 16], got 1``).

    Returns:
        The stage's args with defaults filled in (rule tables as ``[(regex, value)]`` lists).

    Raises:
        RecipeError: an unknown key or value (one line naming the stage and the key).
    """
    args = dict(args)
    if kind == "lowrank":
        fn = _method(origin, where, args, "method", LOWRANK)
        _allowed(origin, where, args, ("method", *_keys(fn)))
        _call(origin, where, fn, _factory_kwargs(fn, args, ("method",), origin, where))
    elif kind == "prune":
        k = args.setdefault("kind", "unstructured")
        if k not in PRUNE_KINDS:
            _fail(origin, where, "kind", f"must be one of {', '.join(PRUNE_KINDS)}; got {k!r}")
        if k == "nm":
            _allowed(origin, where, args, ("kind", "n", "m", "axis", "where"))
            _call(origin, where, prune.nm, _factory_kwargs(prune.nm, args, ("kind",), origin,
                                                           where))  # fmt: skip
        elif k == "unstructured":
            _allowed(origin, where, args, ("kind", "criterion", "sparsity", "scope",
                                           "distribution", "schedule", "ramp_epochs",
                                           "mask_every", "where"))  # fmt: skip
            crit = args.setdefault("criterion", "magnitude")
            if crit not in UNSTRUCTURED:
                _fail(origin, where, "criterion", f"must be one of {', '.join(UNSTRUCTURED)} for "
                      f"unstructured pruning; got {crit!r}")  # fmt: skip
            fn = UNSTRUCTURED[crit]
            _common_prune(origin, where, args)
            if "sparsity" not in args:
                _fail(origin, where, "sparsity", "required: a fraction in [0, 1) or "
                      "[[regex, fraction], ...] rules")  # fmt: skip
            kw = _factory_kwargs(fn, args, ("kind", "criterion", "schedule", "ramp_epochs",
                                            "mask_every"), origin, where)  # fmt: skip
            _call(origin, where, fn, {**kw, "update_every": args["mask_every"]})
        else:
            _allowed(origin, where, args, ("kind", "criterion", "flops", "ratio", "round_to",
                                           "scope", "schedule", "ramp_epochs",
                                           "mask_every"))  # fmt: skip
            crit = args.setdefault("criterion", "l1")
            if crit not in STRUCTURED_CRITERIA:
                _fail(
                    origin,
                    where,
                    "criterion",
                    f"must be one of "
                    f"{', '.join(STRUCTURED_CRITERIA)} for structured pruning; got {crit!r}",
                )
            if ("flops" in args) == ("ratio" in args):
                _fail(origin, where, "flops", "give exactly one of flops (the fraction of the "
                      "FLOPs to remove) and ratio (of each group's channels)")  # fmt: skip
            for k2 in ("flops", "ratio"):
                v = args.get(k2, 0.0)
                if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1:
                    _fail(origin, where, k2, f"must be a fraction in [0, 1), got {v!r}")
            args.setdefault("round_to", 8)
            if (
                isinstance(args["round_to"], bool)
                or not isinstance(args["round_to"], int)
                or (args["round_to"] < 1)
            ):
                _fail(origin, where, "round_to", f"must be an integer >= 1, got "
                      f"{args['round_to']!r}")  # fmt: skip
            args.setdefault("scope", "layer")
            if args["scope"] not in ("layer", "global"):
                _fail(origin, where, "scope", f"must be layer or global; got {args['scope']!r}")
            _common_prune(origin, where, args, ("linear", "one_shot"))
    elif kind == "quant":
        fn = _method(origin, where, args, "scheme", QUANT)
        extra = ("observer", "estimator") if args["scheme"] == "uniform" else ()
        _allowed(origin, where, args, ("scheme", *_keys(fn), *extra, *_ACT_KEYS))
        kw = _factory_kwargs(fn, args, ("scheme", *extra, *_ACT_KEYS), origin, where)
        if args["scheme"] == "uniform":
            est = args.setdefault("estimator", "ste")
            if est not in ESTIMATORS:
                _fail(origin, where, "estimator", f"must be ste (clipped straight-through) or lsq "
                      f"(learned step size); got {est!r}")  # fmt: skip
            kw["learned_step"] = est == "lsq"
            if "observer" in args:
                if args["observer"] not in OBSERVERS:
                    _fail(origin, where, "observer", f"must be one of {', '.join(OBSERVERS)}; "
                          f"got {args['observer']!r}")  # fmt: skip
                kw["observer"] = OBSERVERS[args["observer"]]()
        _call(origin, where, fn, kw)
        if "activations" in args:
            rules = activation_rules(args["activations"])
            try:
                quant.activations(lambda v, x: x, rules,
                                  symmetric=args.get("activation_symmetric", False),
                                  int_matmul=args.get("int_matmul", False))  # fmt: skip
            except (ValueError, TypeError) as e:
                _fail(origin, where, "activations", str(e).splitlines()[0])
        for k in ("activation_symmetric", "int_matmul"):
            if k in args and not isinstance(args[k], bool):
                _fail(origin, where, k, f"must be true or false, got {args[k]!r}")
            if k in args and "activations" not in args:
                _fail(origin, where, k, "needs activations (the bits of the layers' inputs)")
    elif kind == "distill":
        _allowed(origin, where, args, ("teacher", "teacher_model", "teacher_api", "terms"))
        teacher = args.setdefault("teacher", "dense")
        if not isinstance(teacher, str) or not teacher:
            _fail(origin, where, "teacher", 'must be "dense" or a `jaxcomp train` --out folder')
        if "teacher_model" in args and not isinstance(args["teacher_model"], str):
            _fail(origin, where, "teacher_model", "must be a model name")
        if args.get("teacher_api", "linen") not in ("linen", "nnx"):
            _fail(origin, where, "teacher_api", f"must be linen or nnx; got "
                  f"{args['teacher_api']!r}")  # fmt: skip
        if teacher == "dense" and ("teacher_model" in args or "teacher_api" in args):
            _fail(origin, where, "teacher_model", "applies to a checkpoint teacher; the dense "
                  "teacher is the recipe's own model")  # fmt: skip
        _check_terms(origin, where, args.get("terms"))
    elif kind == "finetune":
        _allowed(origin, where, args, ())
    else:
        _allowed(origin, where, args, ("coder", "sparse"))
        c = args.setdefault("coder", "huffman")
        if c not in CODERS:
            _fail(origin, where, "coder", f"must be one of {', '.join(CODERS)}; got {c!r}")
        s = args.setdefault("sparse", "auto")
        if s not in ("auto", True, False):
            _fail(origin, where, "sparse", f'must be "auto", true or false; got {s!r}')
    return args


def _common_prune(origin, where, args, allowed=SPARSITY_SCHEDULES) -> None:
    s = args.setdefault("schedule", allowed[0])
    if s not in allowed:
        _fail(origin, where, "schedule", f"must be one of {', '.join(allowed)}; got {s!r}")
    for k, default in (("mask_every", 20), ("ramp_epochs", None)):
        v = args.get(k, default)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            _fail(origin, where, k, f"must be an integer >= 1, got {v!r}")
        args[k] = v


def activation_rules(value: Any) -> list[tuple[str, Any]]:
    """A quant stage's ``activations``: bits for every Dense and Conv layer, or rules."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [(".*", value)]
    return _rules(value)


# ----------------------------------------------------------------------------------- building


@dataclasses.dataclass
class Context:
    """What a stage is built from.

    Attributes:
        origin: the recipe's origin, for messages.
        apply_fn: the dense model's ``apply`` (``model.apply`` or an NNX model's functional
            apply); the teacher ``"dense"`` runs it.
        student_apply: the apply the student trains with (``apply_fn``, or wrapped by an
            activation quantizer).
        dense: the dense model's variables.
        params: the current dense params (the chain's ``apply``); its structure is the model's.
        cparams: the chain's current ``cparams``.
        model_state: the model's other collections.
        x1: an example input of batch 1.
        data: the dataset (``None`` in a dry run without data).
        steps_per_epoch: training steps per epoch.
        batch_size: examples per step.
        key: the stage's PRNG key.
        untrained: the stage does not train (``epochs = 0``, or a dry run): schedules start at
            their final value, so the transform compresses fully at ``init`` (one-shot).
    """

    origin: str
    apply_fn: Callable[..., Any]
    student_apply: Callable[..., Any]
    dense: dict[str, Any]
    params: Any
    cparams: Any
    model_state: dict[str, Any]
    x1: Any
    data: Any
    steps_per_epoch: int
    batch_size: int
    key: jax.Array
    untrained: bool = False


class Built(NamedTuple):
    """What a stage adds: a transform to chain, a new student apply (activations), new model
    collections (calibrated ranges), new cparams to start from (LASSO's refit), a teacher
    (``(apply, variables, terms)``)."""

    transform: Transform | None = None
    student_apply: Callable[..., Any] | None = None
    model_state: dict[str, Any] | None = None
    cparams: Any = None
    teacher: tuple[Callable[..., Any], dict[str, Any], list[distill.Term]] | None = None


def _stage_steps(stage, ctx: Context) -> int:
    return max(1, stage.epochs * ctx.steps_per_epoch)


def ramp(stage, ctx: Context) -> tuple[int, int]:
    """``(end, every)``: the step at which a pruning schedule reaches its final value and the mask
    period. ``end`` is a multiple of ``every`` within the stage, so the masks are recomputed at
    the final sparsity before the stage ends (and stay there in later stages)."""
    steps = _stage_steps(stage, ctx)
    r = stage.args.get("ramp_epochs")
    length = steps if r is None else min(steps, max(1, r * ctx.steps_per_epoch))
    every = min(stage.args.get("mask_every", 20), length)
    return max(every, length // every * every), every


def _sparsity_schedule(kind: str, value: float, end: int, untrained: bool):
    if kind == "one_shot" or untrained:
        return schedules.constant(float(value))
    if kind == "linear":
        return schedules.linear(0.0, float(value), begin=0, end=end)
    return schedules.polynomial(0.0, float(value), begin=0, end=end, power=3.0)


def _unstructured(stage, ctx: Context) -> Built:
    a = stage.args
    end, every = ramp(stage, ctx)
    sp = _rules(a["sparsity"])
    if isinstance(sp, list):
        sp = [(rx, _sparsity_schedule(a["schedule"], s, end, ctx.untrained)) for rx, s in sp]
    else:
        sp = _sparsity_schedule(a["schedule"], sp, end, ctx.untrained)
    fn = UNSTRUCTURED[a["criterion"]]
    kw = _factory_kwargs(fn, a, ("kind", "criterion", "schedule", "ramp_epochs", "mask_every",
                                 "sparsity"), ctx.origin, stage.label, ctx.key)  # fmt: skip
    return Built(transform=fn(sparsity=sp, update_every=every, **kw))


def _inference(apply_fn):
    return lambda v, x: apply_fn(v, x)


def _structured(stage, ctx: Context, current_structure_is_dense: bool) -> Built:
    a = stage.args
    if not current_structure_is_dense:
        _fail(ctx.origin, stage.label, "kind", "structured pruning traces the dense model's "
              "channels: it must come before any stage that changes the params' structure "
              "(lowrank, or a quant scheme with codebooks)")  # fmt: skip
    apply_fn = _inference(ctx.apply_fn)
    variables = {"params": ctx.params, **ctx.model_state}
    try:
        groups = st_.groups(apply_fn, variables, ctx.x1)
        if "flops" in a:
            round_to = 1 if a["criterion"] == "lasso" else a["round_to"]
            ratio = st_.ratio_for_flops(apply_fn, variables, ctx.x1, flops=a["flops"],
                                        groups=groups, round_to=round_to)  # fmt: skip
        else:
            ratio = float(a["ratio"])
        if a["criterion"] not in ("taylor", "lasso"):
            st_.scores(groups, variables, criterion=a["criterion"])
    except ValueError as e:
        key = "flops" if "flops" in a and "met" in str(e) else "criterion"
        _fail(ctx.origin, stage.label, key, str(e).splitlines()[0])
    end, every = ramp(stage, ctx)
    if a["criterion"] == "lasso":
        if ctx.data is None:  # a dry run: LASSO's channels by their L1 norm (same widths)
            masks = st_.masks(apply_fn, variables, ctx.x1, ratio=ratio, groups=groups)
            new = variables
        else:
            masks, new = _lasso_masks(apply_fn, variables, ctx.data, groups, ratio)
        ones = jax.tree.map(jnp.ones_like, new["params"])
        keep = jax.tree.map(lambda m: m != 0, st_.apply_masks(ones, masks))
        fm = prune.fixed_masks(keep)
        t = Transform(fm.init, fm.apply, fm.update,
                      lambda c, s: st_.remove_channels(fm.finalize(c, s), masks),
                      fm.apply_own)  # fmt: skip
        return Built(transform=t, cparams=new["params"])
    sched = (schedules.constant(ratio) if a["schedule"] == "one_shot" or ctx.untrained
             else schedules.linear(0.0, ratio, begin=0, end=end))  # fmt: skip
    t = st_.channels(apply_fn, variables, ctx.x1, ratio=sched, criterion=a["criterion"],
                     scope=a["scope"], update_every=every, round_to=a["round_to"],
                     groups=groups)  # fmt: skip
    return Built(transform=t)


def _lasso_masks(apply_fn, variables, data, groups, ratio: float):
    """He et al.'s LASSO selection and least-squares refit for the groups with one reader; the L1
    norm of the filters for the others (a residual stream is read by several layers)."""
    one_reader = [i for i, g in enumerate(groups)
                  if sum(m.role == "in" for m in g.members) == 1]  # fmt: skip
    x = jnp.asarray(data.x_train[: min(LASSO_EXAMPLES, data.num_train)])
    lasso, variables = st_.lasso_channels(apply_fn, variables, x, one_reader, ratio=ratio,
                                          groups=groups)  # fmt: skip
    l1 = st_.masks(apply_fn, variables, x, ratio=ratio, groups=groups)
    keep = [a if i in one_reader else b for i, (a, b) in enumerate(zip(lasso.keep, l1.keep))]
    return st_.Masks(keep, groups), variables


def _quant(stage, ctx: Context) -> Built:
    a = stage.args
    fn = QUANT[a["scheme"]]
    extra = ("observer", "estimator") if a["scheme"] == "uniform" else ()
    kw = _factory_kwargs(fn, a, ("scheme", *extra, *_ACT_KEYS), ctx.origin, stage.label, ctx.key)
    if a["scheme"] == "uniform":
        kw["learned_step"] = a["estimator"] == "lsq"
        if "observer" in a:
            kw["observer"] = OBSERVERS[a["observer"]]()
    t = fn(**kw)
    if "activations" not in a:
        return Built(transform=t)
    student = quant.activations(ctx.student_apply, activation_rules(a["activations"]),
                                symmetric=a.get("activation_symmetric", False),
                                int_matmul=a.get("int_matmul", False))  # fmt: skip
    return Built(transform=t, student_apply=student)


def calibrate(student_apply, variables: dict[str, Any], data, batch_size: int, batches: int = 8):
    """``variables`` with the activation ranges of ``batches`` training batches (in order)."""
    n = min(len(data.x_train), batches * batch_size)
    xs = [jnp.asarray(data.x_train[i : i + batch_size]) for i in range(0, n, batch_size)]
    try:
        return quant.calibrate(student_apply, variables, xs, train=False)
    except TypeError:  # a model without a train keyword
        return quant.calibrate(student_apply, variables, xs)


def restore(apply_fn: Callable[..., Any], template: dict[str, Any], folder: str) -> dict[str, Any]:
    """The variables of the latest checkpoint of a ``jaxcomp train`` output folder.

    Args:
        apply_fn: the model's apply (linen ``model.apply`` or an NNX model's functional apply).
        template: variables of the same model (their structure and shapes).
        folder: the ``jaxcomp train --out`` folder (holding ``checkpoints/``).

    Raises:
        CheckpointError: no checkpoints there, or ones of another model.
    """
    import optax

    from jaxcomp import train
    from jaxcomp.errors import CheckpointError

    ckdir = os.path.join(folder, "checkpoints")
    if not os.path.isdir(ckdir):
        raise CheckpointError(f"{folder} has no checkpoints/ (is it a `jaxcomp train` --out?)")
    state = train.TrainState.create(apply_fn=apply_fn, variables=template, tx=optax.adam(1e-3),
                                    key=jax.random.key(0))  # fmt: skip
    ck = train.Checkpointer(ckdir)
    try:
        step = ck.latest_step()
        if step is None:
            raise CheckpointError(f"{ckdir} holds no checkpoint")
        # shapes first: a restore that fails half-way leaves orbax's reads behind it
        _check_fits(os.path.abspath(os.path.join(ckdir, str(step), "default")), template)
        return ck.restore(state).variables()
    finally:
        ck.close()


def _check_fits(path: str, template: dict[str, Any]) -> None:
    """Raises CheckpointError naming the first leaf where a checkpoint's params differ from the
    model's (path or shape)."""
    import logging

    import orbax.checkpoint as ocp

    from jaxcomp.core import path_str
    from jaxcomp.errors import CheckpointError

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # orbax warns of a metadata file our checkpoints do not write
    try:
        with ocp.StandardCheckpointer() as ckptr:
            meta = ckptr.metadata(path)
        tree = getattr(meta, "item_metadata", meta)
        saved = dict(tree)["cparams"]
    except Exception as e:  # orbax raises many kinds
        raise CheckpointError(f"cannot read {path}: {str(e).splitlines()[0]}") from e
    finally:
        absl.setLevel(level)
    have = {path_str(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(saved)}
    want = {path_str(p): tuple(np.shape(x))
            for p, x in jax.tree_util.tree_leaves_with_path(template["params"])}  # fmt: skip
    for p, shape in want.items():
        if p not in have:
            raise CheckpointError(f"it has no {p} (the model's params {shape})")
        if have[p] != shape:
            raise CheckpointError(f"its {p} is {have[p]}, the model's is {shape}")
    extra = sorted(set(have) - set(want))
    if extra:
        raise CheckpointError(f"it holds {extra[0]}, which the model has not")


def _distill(stage, ctx: Context, teacher_of: Callable[[Any], tuple[Any, Any]]) -> Built:
    terms = _check_terms(ctx.origin, stage.label, stage.args["terms"])
    t_apply, t_vars = teacher_of(stage)
    obj = distill.objective(t_apply, t_vars, terms)
    # layer names and shapes are checked here, abstractly, on one example
    from jaxcomp import train

    state = train.TrainState.create(apply_fn=ctx.student_apply,
                                    variables={"params": ctx.params, **ctx.model_state},
                                    tx=_noop_tx(), key=jax.random.key(0))  # fmt: skip
    x = jnp.zeros((2, *np.shape(ctx.x1)[1:]), jnp.float32)
    y = jnp.zeros((2,), jnp.int32)
    try:
        jax.eval_shape(lambda p: obj(p, state, (x, y), jax.random.key(0)), ctx.params)
    except (ValueError, TypeError, KeyError) as e:
        _fail(ctx.origin, stage.label, "terms", str(e).splitlines()[0])
    return Built(teacher=(t_apply, t_vars, terms))


def _noop_tx():
    import optax

    return optax.identity()


def build_stage(stage, ctx: Context, *, teacher_of=None, dense_structure: bool = True) -> Built:
    """Builds what ``stage`` adds to the run (see :class:`Built`).

    Args:
        stage: the :class:`jaxcomp.recipes.Stage`.
        ctx: the run's :class:`Context` at this stage.
        teacher_of: ``stage -> (teacher_apply, teacher_variables)`` for distill stages.
        dense_structure: whether the chain's cparams still have the params' structure.

    Raises:
        RecipeError: the stage cannot run on this model (one line naming stage and key).
    """
    o, where = ctx.origin, stage.label
    try:
        if stage.type == "lowrank":
            fn = LOWRANK[stage.args["method"]]
            t = fn(**_factory_kwargs(fn, stage.args, ("method",), o, where, ctx.key))
            return Built(transform=t)
        if stage.type == "prune":
            kind = stage.args["kind"]
            if kind == "unstructured":
                return _unstructured(stage, ctx)
            if kind == "nm":
                t = prune.nm(**_factory_kwargs(prune.nm, stage.args, ("kind",), o, where))
                return Built(transform=t)
            return _structured(stage, ctx, dense_structure)
        if stage.type == "quant":
            return _quant(stage, ctx)
        if stage.type == "distill":
            return _distill(stage, ctx, teacher_of)
        return Built()
    except RecipeError:
        raise
    except (ValueError, TypeError) as e:
        _fail(o, where, None, str(e).splitlines()[0])

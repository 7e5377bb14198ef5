"""The ``jaxcomp`` command.

``jaxcomp train --model lenet300 --data mnist5k --epochs 10 --out runs/lenet300`` trains a
reference model with a progress bar, evaluates it, and writes ``metrics.jsonl``, checkpoints and
``report.json`` to the output folder. ``--resume`` continues from the latest checkpoint there.
``--api nnx`` trains the model's Flax NNX twin (same architecture and params paths).

``jaxcomp compress --recipe FILE_OR_NAME --out DIR`` runs a recipe (``docs/recipes.md``): a TOML
file of stages (low-rank, pruning, quantization, distillation, fine-tuning, encoding), or a shipped
recipe by name (``jaxcomp recipes`` lists them; ``deep-compression`` by default, for ``--model``).
It writes ``DIR/model.jcz``, ``report.json``, ``report.md`` and plots; ``--resume`` continues an
interrupted run; ``--budget bytes=N|flops=N|latency_ms=N`` sets the recipe's strength to meet it.
The flags of the former built-in recipes (``--sparsity``, ``--bits``, ``--flops``, the epochs of
each stage...) set the matching keys of the recipe's stages. ``jaxcomp evaluate DIR/model.jcz
--data ... [--latency]`` runs an artifact of any recipe; ``jaxcomp compare DIR ...`` sets runs side
by side (a table, and a plot of accuracy against size and latency with the Pareto fronts).

Bad arguments (an unknown model or dataset, a missing file, a malformed ``.npz``) print one line
``jaxcomp: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any
from typing import NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(message)


class _UsageError(Exception):
    pass


def _fail(message: str) -> NoReturn:
    print(f"jaxcomp: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _bounded(kind: type, *, allow_zero: bool = False) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(
                f"must be {'>= 0' if allow_zero else '> 0'}, got {text}"
            )
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _positive(kind: type) -> Any:
    return _bounded(kind)


def _rules(kind: type) -> Any:
    """Parses ``'regex=value,regex=value'`` into ordered ``[(regex, value)]`` rules."""

    def parse(text: str) -> list[tuple[str, Any]]:
        rules = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            rx, sep, value = part.rpartition("=")
            if not sep or not rx:
                raise argparse.ArgumentTypeError(f"expected 'regex=value' pairs, got {part!r}")
            try:
                rules.append((rx, kind(value)))
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{value!r} in {part!r} is not a {kind.__name__}"
                ) from None
        if not rules:
            raise argparse.ArgumentTypeError("expected at least one 'regex=value' pair")
        return rules

    return parse


def _build_parser() -> argparse.ArgumentParser:
    from jaxcomp.data import embedded_names
    from jaxcomp.models import names as model_names

    p = _Parser(prog="jaxcomp", description="Neural network compression for JAX/Flax.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a reference model and report its accuracy")
    t.add_argument("--model", required=True, help=f"one of {', '.join(model_names())}")
    t.add_argument(
        "--data",
        required=True,
        help=f"an embedded dataset ({', '.join(embedded_names())}), tfds:NAME, or a .npz path",
    )
    t.add_argument("--data-dir", default=None, help="TFDS data_dir for tfds:NAME")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--epochs", type=_positive(int), default=10)
    t.add_argument("--batch-size", type=_positive(int), default=64)
    t.add_argument("--lr", type=_positive(float), default=1e-3, help="Adam learning rate")
    t.add_argument("--seed", type=_bounded(int, allow_zero=True), default=0)
    t.add_argument("--checkpoint-every", type=_positive(int), default=None,
                   help="steps between checkpoints (default: once per epoch)")  # fmt: skip
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    t.add_argument("--augment", action="store_true", help="random crop and flip (32x32 images)")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument("--api", choices=["linen", "nnx"], default="linen",
                   help="flax.linen (default) or the Flax NNX twin of the model")  # fmt: skip

    c = sub.add_parser("compress", help="run a compression recipe into a .jcz artifact")
    c.add_argument(
        "--recipe",
        default="deep-compression",
        help="a recipe file (.toml) or a shipped recipe's name (`jaxcomp recipes`)",
    )
    c.add_argument("--model", default=None, help="the recipe's model (one of "
                   f"{', '.join(model_names())})")  # fmt: skip
    c.add_argument("--data", default=None, help="the recipe's data (as for train)")
    c.add_argument("--data-dir", default=None, help="TFDS data_dir for tfds:NAME")
    c.add_argument("--api", choices=["linen", "nnx"], default=None,
                   help="the model as flax.linen or as its Flax NNX twin")  # fmt: skip
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its checkpoints")  # fmt: skip
    c.add_argument("--budget", default=None,
                   help="bytes=N, flops=N, latency_ms=N or latency_ms@BATCH=N: the recipe's "
                   "strength is chosen to meet it")  # fmt: skip
    c.add_argument("--init", default=None,
                   help="a `jaxcomp train` --out folder: start from its checkpoint")  # fmt: skip
    c.add_argument(
        "--config",
        default=None,
        help="a JSON object of the flags below (sparsity, bits, dense_epochs, ...)",
    )
    c.add_argument(
        "--sparsity",
        default=None,
        type=_rules(float),
        help="prune stage: per-layer fraction pruned, e.g. 'Dense_0=0.95,Dense=0.8'",
    )
    c.add_argument("--bits", default=None, type=_rules(int),
                   help="quant stage: per-layer bits, e.g. 'Conv=8,Dense=5'")  # fmt: skip
    c.add_argument(
        "--flops",
        default=None,
        type=_fraction,
        help="structured prune stage: FLOPs fraction to remove, in [0, 1)",
    )
    c.add_argument("--criterion", default=None, choices=["l1", "l2", "bn", "taylor", "lasso"],
                   help="structured prune stage: channel importance")  # fmt: skip
    c.add_argument(
        "--round-to",
        default=None,
        type=_positive(int),
        help="structured prune stage: keep multiples of this many channels",
    )
    for knob in ("dense-epochs", "prune-epochs", "retrain-epochs", "quant-epochs",
                 "finetune-epochs"):  # fmt: skip
        c.add_argument(f"--{knob}", type=_bounded(int, allow_zero=True), default=None)
    c.add_argument("--batch-size", type=_positive(int), default=None)
    c.add_argument("--coder", choices=["huffman", "ans", "raw"], default=None)
    c.add_argument("--seed", type=_bounded(int, allow_zero=True), default=None)
    c.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    r = sub.add_parser("recipes", help="list the shipped recipes (or show one)")
    r.add_argument("--show", default=None, metavar="NAME", help="print a shipped recipe's file")
    r.add_argument("--model", default=None, help="with --show: its version for this model")

    m = sub.add_parser("compare", help="compare `jaxcomp compress` runs: a table and a plot")
    m.add_argument("dirs", nargs="+", help="--out folders of `jaxcomp compress`")
    m.add_argument("--format", choices=["md", "json"], default="md")
    m.add_argument("--plot", default="compare.png",
                   help="where the plot goes (accuracy against size and latency)")  # fmt: skip

    e = sub.add_parser("evaluate", help="report the test accuracy of a .jcz artifact")
    e.add_argument("artifact", help="path to a .jcz written by `jaxcomp compress`")
    e.add_argument("--data", required=True, help="as for train")
    e.add_argument("--data-dir", default=None, help="TFDS data_dir for tfds:NAME")
    e.add_argument("--latency", action="store_true",
                   help="time it against the dense model at batch 1 and 128")  # fmt: skip
    e.add_argument("--repeats", type=_positive(int), default=30, help="timed calls per batch")
    return p


def _load_data(spec: str, data_dir: str | None):
    from jaxcomp import data
    from jaxcomp.errors import DatasetNotFoundError

    try:
        return data.load(spec, data_dir=data_dir)
    except (DatasetNotFoundError, ValueError) as e:
        raise _UsageError(str(e).splitlines()[0] if str(e) else type(e).__name__) from e


def _tree_digest(tree: Any) -> str:
    """A SHA-256 of every leaf's bytes in flattening order: equal digests, bit-identical trees."""
    import hashlib

    import jax
    import numpy as np

    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        a = np.ascontiguousarray(leaf)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _train(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    import optax

    from jaxcomp import analysis
    from jaxcomp import data as jdata
    from jaxcomp import models
    from jaxcomp import train
    from jaxcomp.errors import CheckpointError

    ds = _load_data(args.data, args.data_dir)
    try:
        model = models.get(args.model, num_classes=ds.num_classes)
    except ValueError as e:
        raise _UsageError(str(e)) from e
    key = jax.random.key(args.seed)
    init_key, train_key = jax.random.split(key)
    tx = optax.adam(args.lr)
    try:
        if args.api == "nnx":  # the same architecture and params paths, as an nnx.Module
            nnx_model = models.get(args.model, num_classes=ds.num_classes, api="nnx",
                                   key=init_key, input_shape=ds.input_shape)  # fmt: skip
            state = train.TrainState.create(model=nnx_model, tx=tx, key=train_key)
        else:
            variables = models.init(model, init_key, ds.input_shape)
            state = train.TrainState.create(
                apply_fn=model.apply, variables=variables, tx=tx, key=train_key
            )
    except ValueError as e:
        raise _UsageError(f"--model {args.model} cannot take --data {args.data}: {e}") from e
    batch_size = min(args.batch_size, ds.num_train)
    steps_per_epoch = ds.num_train // batch_size
    augment = None
    if args.augment:
        augment = lambda x, rng: jdata.random_crop_flip(x, rng=rng)
    try:
        result = train.fit(
            state,
            ds,
            batch_size=batch_size,
            epochs=args.epochs,
            seed=args.seed,
            out_dir=args.out,
            checkpoint_every=args.checkpoint_every or steps_per_epoch,
            resume=args.resume,
            progress=not args.no_progress,
            augment=augment,
            description=f"train {args.model}",
        )
    except CheckpointError as e:
        raise _UsageError(f"{e} (use --resume)") from e
    final = result.state
    ev = train.evaluate(final, ds.x_test, ds.y_test)
    params = final.params
    example = jax.numpy.zeros((1, *ds.input_shape), jax.numpy.float32)
    variables = final.variables()
    report = {
        "model": args.model,
        "data": args.data,
        "num_train": ds.num_train,
        "num_test": ds.num_test,
        "epochs": args.epochs,
        "steps": int(final.step),
        "batch_size": batch_size,
        "seed": args.seed,
        "params": analysis.param_count(params),
        "nonzeros": analysis.nonzero_count(params),
        "api": args.api,
        "flops": analysis.flops(lambda v, x: final.apply_fn(v, x, train=False), variables, example),
        "bytes_fp32": analysis.size_bytes(params, bits=32),
        "test_accuracy": ev["accuracy"],
        "test_loss": ev["loss"],
        "params_sha256": _tree_digest(final.cparams),
    }
    return report


def _refuse_checkpoints(out: str) -> None:
    """Refuses an ``--out`` that holds a run's checkpoints before any work is done (``fit``
    would refuse it too, after the data is loaded and the model built)."""
    ckdir = os.path.join(out, "checkpoints")
    if not os.path.isdir(ckdir):
        return
    from jaxcomp.train import Checkpointer

    ck = Checkpointer(ckdir)
    try:
        latest = ck.latest_step()
    finally:
        ck.close()
    if latest is not None:
        raise _UsageError(
            f"{ckdir} already holds checkpoints (latest step {latest}); pass --resume to "
            "continue, or choose another --out"
        )


# the flags of the former built-in recipes: (stage type or "training", key) they set
_LEGACY = {
    "sparsity": ("prune", "sparsity"),
    "bits": ("quant", "bits"),
    "flops": ("prune", "flops"),
    "criterion": ("prune", "criterion"),
    "round_to": ("prune", "round_to"),
    "mask_every": ("prune", "mask_every"),
    "prune_epochs": ("prune", "epochs"),
    "retrain_epochs": ("finetune", "epochs"),
    "finetune_epochs": ("finetune", "epochs"),
    "quant_epochs": ("quant", "epochs"),
    "quant_lr": ("quant", "lr"),
    "coder": ("encode", "coder"),
    "dense_epochs": ("training", "epochs"),
    "batch_size": ("training", "batch_size"),
    "lr": ("training", "lr"),
    "seed": ("training", "seed"),
}


def _legacy(args: argparse.Namespace) -> dict[str, Any]:
    """The former recipes' flags (and ``--config``'s JSON of the same names) that were given."""
    given: dict[str, Any] = {}
    if args.config is not None:
        try:
            with open(args.config, encoding="utf-8") as f:
                cfg = json.load(f)
        except OSError as e:
            raise _UsageError(f"--config: cannot read {args.config}: {e.strerror}") from e
        except json.JSONDecodeError as e:
            raise _UsageError(f"--config: {args.config} is not valid JSON: {e}") from e
        if not isinstance(cfg, dict):
            raise _UsageError(f"--config: {args.config} must hold a JSON object")
        for k in cfg:
            if k not in _LEGACY:
                raise _UsageError(f"--config: unknown key {k!r}; allowed: {', '.join(_LEGACY)}")
        given.update(cfg)
    for k in _LEGACY:
        v = getattr(args, k, None)
        if v is not None:
            given[k] = v
    return given


def _changes(recipe: Any, given: dict[str, Any]) -> dict[str, Any]:
    """``Recipe.replace`` changes for the former flags: each sets its key in the first stage of
    its type (``--retrain-epochs``/``--finetune-epochs``: the first fine-tuning)."""
    out: dict[str, Any] = {}
    for flag, value in given.items():
        kind, key = _LEGACY[flag]
        if isinstance(value, list | tuple):
            value = [list(r) for r in value]
        if kind == "training":
            out[f"training.{key}"] = value
            continue
        stage = next((s for s in recipe.stages if s.type == kind), None)
        if stage is None:
            raise _UsageError(
                f"--{flag.replace('_', '-')}: recipe {recipe.name} has no {kind} stage (its "
                f"stages: {', '.join(s.type for s in recipe.stages)})"
            )
        out[f"stages.{stage.index}.{key}"] = value
    return out


def _load_recipe(args: argparse.Namespace, given: dict[str, Any]) -> Any:
    from jaxcomp import recipes
    from jaxcomp.errors import RecipeError

    try:
        return recipes.load_recipe(args.recipe, model=args.model)
    except RecipeError as e:
        table = recipes.shipped()
        if args.recipe not in table or args.model is None:
            raise _UsageError(str(e)) from e
        # a shipped recipe on a model it has no version for: its first version's stages, with
        # the per-layer settings given on the command line
        needs = [f"--{k}" for k in ("sparsity", "bits") if k not in given]
        first = table[args.recipe]["models"][0]
        rec = recipes.load_recipe(args.recipe, model=first)
        kinds = {s.type for s in rec.stages}
        needs = [n for n in needs if _LEGACY[n[2:]][0] in kinds]
        if needs:
            raise _UsageError(
                f"{e}; give {' and '.join(needs)} for --model {args.model} (the per-layer "
                "settings), or write a recipe file"
            ) from e
        return rec.replace({"model.name": args.model})


def _compress(args: argparse.Namespace) -> dict[str, Any]:
    from jaxcomp import recipes
    from jaxcomp.errors import RecipeError

    given = _legacy(args)
    rec = _load_recipe(args, given)
    changes = _changes(rec, given)
    if args.data is not None:
        changes["data.name"] = args.data
    if args.data_dir is not None:
        changes["data.data_dir"] = args.data_dir
    if args.api is not None:
        changes["model.api"] = args.api
    if args.init is not None:
        if not os.path.isdir(os.path.join(args.init, "checkpoints")):
            raise _UsageError(f"--init: {args.init} has no checkpoints/ (is it a `jaxcomp train` "
                              "--out?)")  # fmt: skip
        changes["model.init"] = args.init
    if args.resume and not os.path.isdir(args.out):
        raise _UsageError(f"--resume: {args.out} does not exist")
    try:
        rec = rec.replace(changes)
        res = recipes.run(rec, out=args.out, resume=args.resume, budget=args.budget,
                          progress=not args.no_progress,
                          log=lambda line: print(line, file=sys.stderr))  # fmt: skip
    except RecipeError as e:
        raise _UsageError(str(e)) from e
    return res.report


def _recipes(args: argparse.Namespace) -> int:
    from jaxcomp import recipes

    table = recipes.shipped()
    if args.show is not None:
        if args.show not in table:
            raise _UsageError(f"--show: no shipped recipe {args.show!r}; shipped: "
                              f"{', '.join(table)}")  # fmt: skip
        files = table[args.show]["files"]
        version = args.model if args.model in files else "default" if "default" in files else None
        if version is None:
            version = next(iter(files)) if args.model is None else None
        if version is None:
            raise _UsageError(f"--show {args.show} has versions for {', '.join(files)}, not for "
                              f"--model {args.model}")  # fmt: skip
        print(files[version].read_text(encoding="utf-8"), end="")
        return 0
    width = max(len(n) for n in table)
    for name, info in table.items():
        models = ", ".join("any model" if m == "default" else m for m in info["models"])
        print(f"{name:<{width}}  [{models}]  {info['description']}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from jaxcomp import recipes

    try:
        rows = recipes.compare(args.dirs)
    except (FileNotFoundError, ValueError) as e:
        raise _UsageError(str(e)) from e
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(recipes.compare_markdown(rows), end="")
    if args.plot:
        recipes.plot_compare(rows, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcomp import analysis
    from jaxcomp import models
    from jaxcomp import recipes
    from jaxcomp.adapt import functional
    from jaxcomp.core import to_dense
    from jaxcomp.errors import CorruptArtifactError
    from jaxcomp.errors import WidthMismatchError

    if not os.path.isfile(args.artifact):
        raise _UsageError(f"{args.artifact}: no such file")
    try:
        tree, meta = recipes.read_artifact(args.artifact)
    except CorruptArtifactError as e:
        raise _UsageError(f"{args.artifact}: {e}") from e
    ds = _load_data(args.data, args.data_dir)
    name, api = meta.get("model"), meta.get("api", "linen")
    shape = tuple(meta.get("input_shape", ds.input_shape))
    if shape != tuple(ds.input_shape):
        raise _UsageError(
            f"--data {args.data} has inputs {ds.input_shape}, the artifact's model takes {shape}"
        )
    try:
        model = models.get(name, num_classes=int(meta.get("num_classes", ds.num_classes)),
                           api=api, **({"key": jax.random.key(0), "input_shape": shape}
                                       if api == "nnx" else {}))  # fmt: skip
    except (ValueError, TypeError) as e:
        raise _UsageError(f"{args.artifact}: its model {name!r} is unknown: {e}") from e
    apply_fn = functional(model)[0] if api == "nnx" else model.apply
    try:
        fast, fast_vars = recipes.deploy(apply_fn, tree, shape,
                                         activations=meta.get("activations"))  # fmt: skip
    except WidthMismatchError as e:
        raise _UsageError(f"{args.artifact}: {str(e).splitlines()[0]}") from e
    fwd = jax.jit(fast)
    x1 = jnp.zeros((1, *shape), jnp.float32)
    out = {"artifact": args.artifact, "model": name, "api": api, "data": args.data,
           "recipe": meta.get("recipe"), "bytes": os.path.getsize(args.artifact),
           "test_accuracy": recipes.accuracy(fwd, fast_vars, ds.x_test, ds.y_test,
                                             batch_size=min(128, ds.num_test)),
           "params": int(sum(np.size(x) for x in jax.tree.leaves(tree["params"]))),
           "flops": int(analysis.flops(fast, fast_vars, x1))}  # fmt: skip
    if args.latency:
        dense = jax.tree.map(jnp.asarray, to_dense(tree))
        fns = {"dense": lambda x: apply_fn(dense, x), "compressed": lambda x: fast(fast_vars, x)}
        lat = {}
        for b in (1, 128):
            xb = jnp.asarray(np.resize(ds.x_test, (b, *shape)))
            t = analysis.compare_latency(fns, xb, repeats=args.repeats, warmup=2,
                                         rounds=min(5, args.repeats))  # fmt: skip
            lat[f"batch_{b}"] = {k: 1e3 * v["median_s"] for k, v in t.items()}
        out["latency_ms"] = lat
        out["speedup_batch_128"] = lat["batch_128"]["dense"] / lat["batch_128"]["compressed"]
        out["speedup_batch_1"] = lat["batch_1"]["dense"] / lat["batch_1"]["compressed"]
        out["machine"] = recipes.machine()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = _build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        if args.command == "train":
            if args.resume and not os.path.isdir(args.out):
                raise _UsageError(f"--resume: {args.out} does not exist")
            if not args.resume:
                _refuse_checkpoints(args.out)
            report = _train(args)
        elif args.command == "compress":
            r = _compress(args)
            lat = r["latency_ms"].get("batch_128") or next(iter(r["latency_ms"].values()))
            print(
                f"{r['model']} on {r['data']} by {r['recipe']}: {r['compressed_bytes']:,} bytes "
                f"({r['compression_ratio']:.1f}x smaller), {r['flops_ratio']:.2f} of the MACs, "
                f"{lat['dense'] / lat['compressed']:.2f}x the dense model's speed; test accuracy "
                f"{r['baseline_accuracy']:.4f} -> {r['final_accuracy']:.4f} -> {args.out}/model.jcz"
            )
            return 0
        elif args.command == "recipes":
            return _recipes(args)
        elif args.command == "compare":
            return _compare(args)
        elif args.command == "evaluate":
            print(json.dumps(_evaluate(args)))
            return 0
        else:  # pragma: no cover - argparse rejects unknown commands
            raise _UsageError(f"unknown command {args.command}")
    except _UsageError as e:
        _fail(str(e))
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(
        f"{report['model']} on {report['data']}: test accuracy {report['test_accuracy']:.4f} "
        f"({report['params']:,} params, {report['flops']:,} MACs) -> {args.out}/report.json"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

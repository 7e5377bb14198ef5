"""The ``jaxcomp`` command.

``jaxcomp train --model lenet300 --data mnist5k --epochs 10 --out runs/lenet300`` trains a
reference model with a progress bar, evaluates it, and writes ``metrics.jsonl``, checkpoints and
``report.json`` to the output folder. ``--resume`` continues from the latest checkpoint there.
``--api nnx`` trains the model's Flax NNX twin (same architecture and params paths).

``jaxcomp compress --model lenet300 --data mnist5k --recipe deep-compression --out DIR`` runs
Deep Compression (train dense or ``--init`` from a ``jaxcomp train`` folder, prune with retraining,
k-means sharing with centroid fine-tuning, entropy coding) and writes ``DIR/model.jcz``,
``DIR/report.md``, ``DIR/report.json`` and PNG plots. ``jaxcomp evaluate DIR/model.jcz --data ...``
loads an artifact and reports its accuracy.

Bad arguments (an unknown model or dataset, a missing file, a malformed ``.npz``) print one line
``jaxcomp: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
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

    c = sub.add_parser("compress", help="compress a model end to end into a .jcz artifact")
    c.add_argument("--model", required=True, help=f"one of {', '.join(model_names())}")
    c.add_argument("--data", required=True, help="as for train")
    c.add_argument("--data-dir", default=None, help="TFDS data_dir for tfds:NAME")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument(
        "--recipe", default="deep-compression", choices=["deep-compression", "structured"]
    )
    c.add_argument("--config", default=None, help="a JSON file of recipe knobs")
    c.add_argument("--init", default=None,
                   help="a `jaxcomp train` --out folder: start from its checkpoint")  # fmt: skip
    c.add_argument("--sparsity", default=None, type=_rules(float),
                   help="per-layer fraction pruned, e.g. 'Dense_0=0.95,Dense=0.8'")  # fmt: skip
    c.add_argument("--bits", default=None, type=_rules(int),
                   help="per-layer codebook index bits, e.g. 'Conv=8,Dense=5'")  # fmt: skip
    c.add_argument("--flops", default=None, type=_fraction,
                   help="structured: FLOPs fraction to remove, in [0, 1)")  # fmt: skip
    c.add_argument("--criterion", default=None, choices=["l1", "l2", "bn", "taylor", "lasso"],
                   help="structured: channel importance (default l1)")  # fmt: skip
    c.add_argument("--round-to", default=None, type=_positive(int),
                   help="structured: keep multiples of this many channels (default 8)")  # fmt: skip
    for knob in ("dense-epochs", "prune-epochs", "retrain-epochs", "quant-epochs",
                 "finetune-epochs"):  # fmt: skip
        c.add_argument(f"--{knob}", type=_bounded(int, allow_zero=True), default=None)
    c.add_argument("--batch-size", type=_positive(int), default=None)
    c.add_argument("--coder", choices=["huffman", "ans"], default=None)
    c.add_argument("--seed", type=_bounded(int, allow_zero=True), default=None)
    c.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    e = sub.add_parser("evaluate", help="report the test accuracy of a .jcz artifact")
    e.add_argument("artifact", help="path to a .jcz written by `jaxcomp compress`")
    e.add_argument("--data", required=True, help="as for train")
    e.add_argument("--data-dir", default=None, help="TFDS data_dir for tfds:NAME")
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


def _restore_variables(model: Any, ds: Any, folder: str) -> dict[str, Any]:
    """The variables of the latest checkpoint of a ``jaxcomp train`` output folder."""
    import jax
    import optax

    from jaxcomp import models
    from jaxcomp import train
    from jaxcomp.errors import CheckpointError

    ckdir = os.path.join(folder, "checkpoints")
    if not os.path.isdir(ckdir):
        raise _UsageError(f"--init: {folder} has no checkpoints/ (is it a `jaxcomp train` --out?)")
    variables = models.init(model, jax.random.key(0), ds.input_shape)
    template = train.TrainState.create(
        apply_fn=model.apply, variables=variables, tx=optax.adam(1e-3), key=jax.random.key(0)
    )
    ck = train.Checkpointer(ckdir)
    try:
        state = ck.restore(template)
    except CheckpointError as e:
        raise _UsageError(f"--init: {e}") from e
    finally:
        ck.close()
    return state.variables()


def _recipe_config(args: argparse.Namespace) -> Any:
    from jaxcomp import recipes

    if args.model not in recipes.PRESETS and (args.sparsity is None or args.bits is None):
        if args.config is None:
            raise _UsageError(
                f"no preset for --model {args.model}; give --sparsity and --bits (or --config); "
                f"presets exist for {', '.join(recipes.PRESETS)}"
            )
    cfg = recipes.PRESETS.get(args.model)
    changes: dict[str, Any] = {}
    if args.config is not None:
        try:
            with open(args.config, encoding="utf-8") as f:
                changes.update(json.load(f))
        except OSError as e:
            raise _UsageError(f"--config: cannot read {args.config}: {e.strerror}") from e
        except json.JSONDecodeError as e:
            raise _UsageError(f"--config: {args.config} is not valid JSON: {e}") from e
        if not isinstance(changes, dict):
            raise _UsageError(f"--config: {args.config} must hold a JSON object")
        for key in ("sparsity", "bits"):
            if key in changes:
                changes[key] = [tuple(r) for r in changes[key]]
    for key in ("sparsity", "bits", "dense_epochs", "prune_epochs", "retrain_epochs",
                "quant_epochs", "batch_size", "coder", "seed"):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            changes[key] = value
    try:
        if cfg is None:
            return recipes.DeepCompression(**changes)
        return cfg.replace(**changes)
    except TypeError as e:
        raise _UsageError(f"--config: {e}") from e
    except ValueError as e:
        raise _UsageError(str(e)) from e


_ONLY = {
    "deep-compression": ("sparsity", "bits", "retrain_epochs", "quant_epochs", "coder", "config"),
    "structured": ("flops", "criterion", "finetune_epochs", "round_to"),
}


def _check_recipe_flags(args: argparse.Namespace) -> None:
    for recipe, flags in _ONLY.items():
        if recipe == args.recipe:
            continue
        for flag in flags:
            if getattr(args, flag) is not None:
                raise _UsageError(
                    f"--{flag.replace('_', '-')} belongs to --recipe {recipe}, not "
                    f"--recipe {args.recipe}"
                )


def _run_recipe(recipe: Any, args: argparse.Namespace, model: Any, ds: Any, cfg: Any) -> Any:
    """Runs ``recipe`` from dense (or ``--init``) and writes its artifact to ``--out``."""
    variables = None if args.init is None else _restore_variables(model, ds, args.init)
    os.makedirs(args.out, exist_ok=True)
    meta = {"model": args.model, "num_classes": ds.num_classes,
            "input_shape": list(ds.input_shape), "data": args.data}  # fmt: skip
    res = recipe(model, ds, cfg, variables=variables, metadata=meta,
                 progress=not args.no_progress,
                 log=lambda line: print(line, file=sys.stderr))  # fmt: skip
    path = os.path.join(args.out, "model.jcz")
    with open(path + ".tmp", "wb") as f:  # a crash never leaves half a model.jcz
        f.write(res.artifact)
    os.replace(path + ".tmp", path)
    return res


def _compress_structured(args: argparse.Namespace, model: Any, ds: Any) -> dict[str, Any]:
    from jaxcomp import recipes

    changes = {k: getattr(args, k) for k in ("flops", "criterion", "dense_epochs",
               "prune_epochs", "finetune_epochs", "batch_size", "seed", "round_to")
               if getattr(args, k) is not None}  # fmt: skip
    try:
        cfg = recipes.Structured(**changes)
    except ValueError as e:
        raise _UsageError(str(e)) from e
    try:
        res = _run_recipe(recipes.structured, args, model, ds, cfg)
    except ValueError as e:
        raise _UsageError(str(e).splitlines()[0]) from e
    report = {"model": args.model, "data": args.data, "recipe": "structured", **res.report,
              "config": dataclasses.asdict(cfg), "stages": res.stages}  # fmt: skip
    with open(os.path.join(args.out, "report.md"), "w", encoding="utf-8") as f:
        f.write(recipes.structured_markdown(report))
    recipes.plot_widths(res.report["widths"], os.path.join(args.out, "widths.png"))
    return report


def _compress(args: argparse.Namespace) -> dict[str, Any]:
    from jaxcomp import analysis
    from jaxcomp import models
    from jaxcomp import recipes
    from jaxcomp.errors import SelectionError

    _check_recipe_flags(args)
    ds = _load_data(args.data, args.data_dir)
    try:
        model = models.get(args.model, num_classes=ds.num_classes)
    except ValueError as e:
        raise _UsageError(str(e)) from e
    if args.recipe == "structured":
        return _compress_structured(args, model, ds)
    cfg = _recipe_config(args)
    try:
        res = _run_recipe(recipes.deep_compression, args, model, ds, cfg)
    except SelectionError as e:
        raise _UsageError(str(e).splitlines()[0]) from e
    dense_params, _ = recipes.load_artifact(res.artifact)
    layers = recipes.layer_rows(res.report, dense_params["params"])
    summary = {
        "model": args.model,
        "data": args.data,
        "recipe": args.recipe,
        "baseline_accuracy": res.baseline_accuracy,
        "final_accuracy": res.final_accuracy,
        "accuracy_change_pp": 100 * (res.final_accuracy - res.baseline_accuracy),
        "dense_bytes": res.report["dense_bytes"],
        "compressed_bytes": res.report["file_bytes"],
        "compression_ratio": res.report["compression_ratio"],
        "params": analysis.param_count(dense_params["params"]),
        "nonzeros": analysis.nonzero_count(dense_params["params"]),
    }
    with open(os.path.join(args.out, "report.md"), "w", encoding="utf-8") as f:
        title = f"Deep Compression of {args.model} on {args.data}"
        f.write(recipes.markdown_report(title=title, summary=summary, stages=res.stages,
                                        layers=layers))  # fmt: skip
    recipes.plot_stages(res.stages, os.path.join(args.out, "stages.png"))
    recipes.plot_layers(layers, os.path.join(args.out, "layers.png"))
    cfg_json = {k: (list(map(list, v)) if k in ("sparsity", "bits") else v)
                for k, v in dataclasses.asdict(cfg).items()}  # fmt: skip
    return {**summary, "config": cfg_json, "stages": res.stages, "layers": layers,
            "bytes": res.report["bytes"]}  # fmt: skip


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    import optax

    from jaxcomp import analysis
    from jaxcomp import models
    from jaxcomp import recipes
    from jaxcomp import train
    from jaxcomp.errors import CorruptArtifactError
    from jaxcomp.errors import WidthMismatchError

    if not os.path.isfile(args.artifact):
        raise _UsageError(f"{args.artifact}: no such file")
    try:
        variables, meta = recipes.load_artifact(args.artifact)
    except CorruptArtifactError as e:
        raise _UsageError(f"{args.artifact}: {e}") from e
    user = meta
    ds = _load_data(args.data, args.data_dir)
    name = user.get("model")
    try:
        model = models.get(name, num_classes=int(user.get("num_classes", ds.num_classes)))
    except (ValueError, TypeError) as e:
        raise _UsageError(f"{args.artifact}: its model {name!r} is unknown: {e}") from e
    if tuple(user.get("input_shape", ds.input_shape)) != tuple(ds.input_shape):
        raise _UsageError(
            f"--data {args.data} has inputs {ds.input_shape}, the artifact's model takes "
            f"{tuple(user['input_shape'])}"
        )
    out = {"artifact": args.artifact, "model": name, "data": args.data,
           "bytes": os.path.getsize(args.artifact)}  # fmt: skip
    if user.get("recipe") == "structured":  # run the smaller model, not the masked dense one
        try:
            small_apply, small, _ = recipes.load_small(model, args.artifact, ds.input_shape)
            acc = recipes.structured_accuracy(small_apply, small, ds.x_test, ds.y_test)
        except WidthMismatchError as e:
            raise _UsageError(f"{args.artifact}: {str(e).splitlines()[0]}") from e
        return {**out, "test_accuracy": acc, "params": analysis.param_count(small["params"])}
    state = train.TrainState.create(apply_fn=model.apply, variables=variables,
                                    tx=optax.identity(), key=jax.random.key(0))  # fmt: skip
    ev = train.evaluate(state, ds.x_test, ds.y_test)
    return {**out, "test_accuracy": ev["accuracy"], "test_loss": ev["loss"]}


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
            report = _compress(args)
        elif args.command == "evaluate":
            report = _evaluate(args)
            print(json.dumps(report))
            return 0
        else:  # pragma: no cover - argparse rejects unknown commands
            raise _UsageError(f"unknown command {args.command}")
    except _UsageError as e:
        _fail(str(e))
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    if args.command == "compress" and args.recipe == "structured":
        print(
            f"{report['model']} on {report['data']}: {report['flops_ratio']:.2f} of the FLOPs, "
            f"{report['params_ratio']:.2f} of the params, {report['measured_speedup']:.2f}x "
            f"faster at batch 128; test accuracy {report['baseline_accuracy']:.4f} -> "
            f"{report['final_accuracy']:.4f} -> {args.out}/model.jcz"
        )
        return 0
    if args.command == "compress":
        print(
            f"{report['model']} on {report['data']}: {report['compressed_bytes']:,} bytes, "
            f"{report['compression_ratio']:.1f}x smaller; test accuracy "
            f"{report['baseline_accuracy']:.4f} -> {report['final_accuracy']:.4f} "
            f"-> {args.out}/model.jcz"
        )
        return 0
    print(
        f"{report['model']} on {report['data']}: test accuracy {report['test_accuracy']:.4f} "
        f"({report['params']:,} params, {report['flops']:,} MACs) -> {args.out}/report.json"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

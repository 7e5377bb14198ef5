"""The ``jaxcomp`` command.

``jaxcomp train --model lenet300 --data mnist5k --epochs 10 --out runs/lenet300`` trains a
reference model with a progress bar, evaluates it, and writes ``metrics.jsonl``, checkpoints and
``report.json`` to the output folder. ``--resume`` continues from the latest checkpoint there.

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


def _positive(kind: type) -> Any:
    return _bounded(kind)


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
    try:
        variables = models.init(model, init_key, ds.input_shape)
    except ValueError as e:
        raise _UsageError(f"--model {args.model} cannot take --data {args.data}: {e}") from e
    state = train.TrainState.create(
        apply_fn=model.apply, variables=variables, tx=optax.adam(args.lr), key=train_key
    )
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
        "flops": analysis.flops(lambda v, x: model.apply(v, x, train=False), variables, example),
        "bytes_fp32": analysis.size_bytes(params, bits=32),
        "test_accuracy": ev["accuracy"],
        "test_loss": ev["loss"],
        "params_sha256": _tree_digest(final.cparams),
    }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = _build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        if args.command == "train":
            if args.resume and not os.path.isdir(args.out):
                raise _UsageError(f"--resume: {args.out} does not exist")
            report = _train(args)
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

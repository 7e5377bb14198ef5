"""The training loop: epochs or steps, progress bar, evaluation, JSONL metrics, checkpoints.

:func:`fit` is deterministic given its ``seed``: the batch order of each epoch is a function of
``(seed, epoch)``, augmentation draws from ``(seed, step)``, and the model's key is in the state.
With ``checkpoint_every`` and ``resume=True`` a run killed at any point and started again ends with
the same parameters, bit for bit, as one that was never interrupted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxcomp.data import Dataset
from jaxcomp.data import batches
from jaxcomp.errors import CheckpointError
from jaxcomp.train._checkpoint import Checkpointer
from jaxcomp.train._sharding import replicate
from jaxcomp.train._sharding import shard_batch
from jaxcomp.train._state import TrainState
from jaxcomp.train._step import make_eval_step
from jaxcomp.train._step import make_train_step

__all__ = ["FitResult", "evaluate", "fit"]


class FitResult(NamedTuple):
    """What :func:`fit` returns: the final state and every logged record."""

    state: TrainState
    history: list[dict[str, Any]]


def evaluate(
    state: TrainState,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 500,
    eval_step: Callable[..., Any] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, float]:
    """Accuracy and mean loss of the state's model on ``(x, y)``, every example counted once.

    The last partial batch is padded to the static batch shape and masked, so one compiled
    function serves every batch.
    """
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    n = len(x)
    if n == 0:
        raise ValueError("evaluate: x is empty")
    eval_step = make_eval_step() if eval_step is None else eval_step
    bs = min(batch_size, n)
    if mesh is not None:
        d = mesh.shape["data"]
        bs = -(-bs // d) * d
    totals = None
    for start in range(0, n, bs):
        xb, yb = x[start : start + bs], y[start : start + bs]
        valid = np.ones(bs, bool)
        if len(xb) < bs:
            pad = bs - len(xb)
            valid[len(xb) :] = False
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
        batch = (xb, yb, valid)
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        out = eval_step(state, *batch)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    return {"accuracy": float(totals["correct"]) / count, "loss": float(totals["loss_sum"]) / count}


def _append_jsonl(path: str, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def fit(
    state: TrainState,
    data: Dataset,
    *,
    batch_size: int = 128,
    epochs: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    eval_every: int | None = None,
    eval_batch_size: int = 500,
    out_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    max_to_keep: int = 3,
    progress: bool = True,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    train_step: Callable[..., Any] | None = None,
    eval_step: Callable[..., Any] | None = None,
    description: str = "train",
) -> FitResult:
    """Trains ``state`` on ``data`` and returns the final state and the logged history.

    Args:
      state: the initial state (:meth:`TrainState.create`).
      data: the dataset; its train split is trained on and its test split evaluated.
      batch_size: examples per step (the last partial batch of an epoch is dropped).
      epochs: how many passes over the train split; exactly one of ``epochs`` and ``steps``.
      steps: how many optimizer steps.
      seed: fixes the batch order and augmentation.
      eval_every: evaluate on the test split every this many steps (default: each epoch) and at
        the end.
      eval_batch_size: the evaluation batch size.
      out_dir: where ``metrics.jsonl`` and ``checkpoints/`` go; nothing is written when omitted.
      checkpoint_every: save a checkpoint every this many steps (and at the end); needs
        ``out_dir``.
      resume: continue from the latest checkpoint in ``out_dir`` if there is one. Without it, a
        folder that already holds checkpoints is refused rather than overwritten.
      max_to_keep: how many checkpoints to keep.
      progress: show a progress bar.
      augment: ``augment(x_batch, rng) -> x_batch`` applied on the host to each training batch.
      mesh: a ``("data",)`` mesh (:func:`jaxcomp.train.data_mesh`) for data-parallel training.
      train_step: a step from :func:`make_train_step` (built with the default objective if not).
      eval_step: a step from :func:`make_eval_step`.
      description: the progress bar's label.

    Returns:
      A :class:`FitResult`. The caller's ``state`` is left intact (the loop donates a copy).

    Raises:
      ValueError: bad arguments (both or neither of epochs and steps, a batch larger than the
        train split, checkpoints without ``out_dir``).
      CheckpointError: ``out_dir`` holds checkpoints and ``resume`` is False.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("fit: give exactly one of epochs= and steps=")
    if batch_size < 1 or batch_size > data.num_train:
        raise ValueError(
            f"fit: batch_size must be in [1, {data.num_train}] (the train split), got {batch_size}"
        )
    if mesh is not None and batch_size % mesh.shape["data"]:
        raise ValueError(
            f"fit: batch_size {batch_size} must be a multiple of the mesh's "
            f"{mesh.shape['data']} devices"
        )
    steps_per_epoch = data.num_train // batch_size
    total = steps if steps is not None else epochs * steps_per_epoch
    if total < 1:
        raise ValueError(f"fit: epochs/steps must give at least one step, got {total}")
    eval_every = steps_per_epoch if eval_every is None else eval_every
    if eval_every < 1:
        raise ValueError(f"fit: eval_every must be >= 1, got {eval_every}")
    if checkpoint_every is not None and (out_dir is None or checkpoint_every < 1):
        raise ValueError("fit: checkpoint_every needs out_dir= and must be >= 1")

    ckpt = metrics_path = None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        metrics_path = os.path.join(out_dir, "metrics.jsonl")
    if checkpoint_every is not None:
        ckpt = Checkpointer(os.path.join(out_dir, "checkpoints"), max_to_keep=max_to_keep)
        latest = ckpt.latest_step()
        if latest is not None and not resume:
            raise CheckpointError(
                f"{ckpt.directory} already holds checkpoints (latest step {latest}); "
                "pass resume=True to continue, or choose another out_dir"
            )
        if latest is not None:
            state = ckpt.restore(state)

    train_step = make_train_step() if train_step is None else train_step
    # The step donates its input; work on a copy so the caller's state stays usable.
    state = jax.tree.map(jnp.copy, state)
    eval_step = make_eval_step() if eval_step is None else eval_step
    if mesh is not None:
        state = replicate(state, mesh)

    start = int(jax.device_get(state.step))
    history: list[dict[str, Any]] = []
    pending: list[dict[str, jax.Array]] = []
    bar = tqdm(total=total, initial=min(start, total), desc=description, disable=not progress)
    t0 = time.perf_counter()

    def log(step: int, epoch: int) -> None:
        record: dict[str, Any] = {"step": step, "epoch": epoch}
        if pending:
            means = jax.device_get(jax.tree.map(lambda *v: jnp.mean(jnp.stack(v)), *pending))
            record.update({f"train_{k}": float(v) for k, v in means.items()})
            pending.clear()
        ev = evaluate(state, data.x_test, data.y_test, batch_size=eval_batch_size,
                      eval_step=eval_step, mesh=mesh)  # fmt: skip
        record.update({"test_accuracy": ev["accuracy"], "test_loss": ev["loss"]})
        record["elapsed_s"] = round(time.perf_counter() - t0, 3)
        history.append(record)
        bar.set_postfix(loss=record.get("train_loss"), test_acc=ev["accuracy"])
        if metrics_path is not None:
            _append_jsonl(metrics_path, record)

    step = start
    try:
        while step < total:
            epoch, index = divmod(step, steps_per_epoch)
            it = batches(
                data.x_train, data.y_train, batch_size=batch_size, seed=seed, epoch=epoch,
                start=index,
            )  # fmt: skip
            for xb, yb in it:
                if step >= total:
                    break
                if augment is not None:
                    xb = augment(xb, np.random.default_rng((seed, step, 1)))
                batch = (xb, yb) if mesh is None else shard_batch((xb, yb), mesh)
                state, metrics = train_step(state, batch)
                pending.append(metrics)
                step += 1
                bar.update(1)
                if step % eval_every == 0 or step == total:
                    log(step, step / steps_per_epoch)
                if ckpt is not None and (step % checkpoint_every == 0 or step == total):
                    ckpt.save(state)
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()
    return FitResult(state, history)

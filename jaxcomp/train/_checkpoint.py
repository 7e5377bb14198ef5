"""Orbax checkpoints of a :class:`TrainState`, saved every N steps and resumed after a crash.

Saving is synchronous and atomic (orbax writes to a temporary folder and renames it), so a process
killed mid-save leaves the previous checkpoints intact. Nothing is ever loaded with pickle.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxcomp.errors import CheckpointError
from jaxcomp.train._state import TrainState

__all__ = ["Checkpointer"]


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def _saveable(state: TrainState) -> dict[str, Any]:
    """The state's arrays, typed PRNG keys (its own, an NNX model's RNG streams) as key data."""
    tree = {
        "step": state.step,
        "cparams": state.cparams,
        "comp_state": state.comp_state,
        "opt_state": state.opt_state,
        "model_state": state.model_state,
        "key": state.key,
    }
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _rewrap(template: Any, restored: Any) -> Any:
    """Typed keys again where ``template`` has them, with the template's key implementation."""
    return jax.tree.map(
        lambda t, r: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r,
        template,
        restored,
    )


def _placed_like(template: Any, restored: Any) -> Any:
    """``restored`` uncommitted to a device where ``template`` is (a fresh state's arrays): jit
    compiles again for committed arguments, so a resumed state would not reuse the steps compiled
    for a fresh one."""
    if isinstance(template, jax.Array) and not template.committed:
        if isinstance(restored, jax.Array) and restored.committed:
            return jax.device_put(np.asarray(restored))
    return restored


class _DropIncomplete(logging.Filter):
    """Drops orbax's warning about a step folder without its metadata file: what a process killed
    while orbax deleted an old checkpoint (one beyond ``max_to_keep``) leaves behind. The newer
    checkpoints are complete, and the warning would be a second line before a command's one-line
    error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Metadata file does not exist")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    log, drop = logging.getLogger("absl"), _DropIncomplete()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


class Checkpointer:
    """Saves and restores training states in ``directory``.

    Args:
      directory: the checkpoint folder (created if needed).
      max_to_keep: how many of the latest checkpoints to keep.
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_to_keep: int = 3):
        if max_to_keep < 1:
            raise ValueError(f"Checkpointer: max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = os.path.abspath(os.fspath(directory))
        with _quiet():
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
                ),
            )

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, state: TrainState) -> None:
        """Saves ``state`` under its step (a step already saved is left as it is)."""
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(_saveable(state)))
        self._manager.wait_until_finished()

    def restore(self, template: TrainState, step: int | None = None) -> TrainState:
        """Restores the checkpoint at ``step`` (the latest when omitted) into ``template``'s shape.

        Raises:
          CheckpointError: there is no checkpoint, or it does not fit ``template``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint to restore in {self.directory}")
        target = _saveable(template)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax raises many kinds; name the folder and step
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} does not fit this model and transform: {e}"
            ) from e
        templates = {k: getattr(template, k) for k in target}
        restored = jax.tree.map(_placed_like, target, {k: restored[k] for k in target})
        restored = _rewrap(templates, restored)
        return template.replace(**restored)

    def close(self) -> None:
        self._manager.close()

"""Orbax checkpoints of a :class:`TrainState`, saved every N steps and resumed after a crash.

Saving is synchronous and atomic (orbax writes to a temporary folder and renames it), so a process
killed mid-save leaves the previous checkpoints intact. Nothing is ever loaded with pickle.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxcomp.errors import CheckpointError
from jaxcomp.train._state import TrainState

__all__ = ["Checkpointer"]


def _saveable(state: TrainState) -> dict[str, Any]:
    return {
        "step": state.step,
        "cparams": state.cparams,
        "comp_state": state.comp_state,
        "opt_state": state.opt_state,
        "model_state": state.model_state,
        "key": jax.random.key_data(state.key),
    }


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
        return template.replace(
            step=restored["step"],
            cparams=restored["cparams"],
            comp_state=restored["comp_state"],
            opt_state=restored["opt_state"],
            model_state=restored["model_state"],
            key=jax.random.wrap_key_data(restored["key"], impl=jax.random.key_impl(template.key)),
        )

    def close(self) -> None:
        self._manager.close()

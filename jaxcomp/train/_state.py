"""The training state: trainable compressed params, compression state, optimizer state.

In the manner of ``flax.training.train_state.TrainState``, with two additions: the parameters are
held as a compression transform's ``cparams`` and ``state`` (the dense params the model sees are
``transform.apply(cparams, comp_state)``), and the mutable model collections (batch norm
statistics) and the PRNG key travel with it, so one pytree is all there is to checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import struct

from jaxcomp.core import Transform
from jaxcomp.core import identity
from jaxcomp.core import own_apply

__all__ = ["TrainState"]


class TrainState(struct.PyTreeNode):
    """Everything a training step reads and writes.

    Attributes:
      step: the number of optimizer steps taken (int32 scalar).
      cparams: the trainable pytree of the compression transform.
      comp_state: the transform's non-trained state (masks, codes, observers).
      opt_state: the optax state of ``cparams``.
      model_state: the model's mutable collections other than ``params`` (``{"batch_stats": ...}``),
        an empty dict for models without them.
      key: a typed PRNG key (``jax.random.key``), split once per step.
      apply_fn: the model's ``apply`` (static).
      tx: the optax optimizer (static).
      transform: the compression transform (static).
    """

    step: jax.Array
    cparams: Any
    comp_state: Any
    opt_state: Any
    model_state: Any
    key: jax.Array
    apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    transform: Transform = struct.field(pytree_node=False)

    @classmethod
    def create(
        cls,
        *,
        apply_fn: Callable[..., Any],
        variables: dict[str, Any],
        tx: optax.GradientTransformation,
        key: jax.Array,
        transform: Transform | None = None,
    ) -> TrainState:
        """Builds the state from a model's initial variables.

        Args:
          apply_fn: the model's apply function, ``model.apply`` for ``flax.linen``.
          variables: ``model.init(...)``: a dict with ``"params"`` and any other collections.
          tx: the optimizer.
          key: a PRNG key from ``jax.random.key(seed)``.
          transform: the compression transform; :func:`jaxcomp.identity` when omitted.

        Raises:
          ValueError: ``variables`` has no ``"params"`` or ``key`` is not a typed key.
        """
        if not isinstance(variables, dict) or "params" not in variables:
            raise ValueError("TrainState.create: variables must be a dict with a 'params' entry")
        if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
            raise ValueError(
                "TrainState.create: key must be a typed PRNG key from jax.random.key(seed)"
            )
        transform = identity() if transform is None else transform
        cparams, comp_state = transform.init(variables["params"])
        model_state = {k: v for k, v in variables.items() if k != "params"}
        return cls(
            step=jax.numpy.zeros((), jax.numpy.int32),
            cparams=cparams,
            comp_state=comp_state,
            opt_state=tx.init(cparams),
            model_state=model_state,
            key=key,
            apply_fn=apply_fn,
            tx=tx,
            transform=transform,
        )

    @property
    def params(self) -> Any:
        """The dense params the model sees: ``transform.apply(cparams, comp_state)``.

        Computed with :func:`jaxcomp.core.own_apply`, since a state's ``cparams`` only come from
        the transform's ``init`` and ``update``.
        """
        return own_apply(self.transform)(self.cparams, self.comp_state)

    def variables(self) -> dict[str, Any]:
        """The model's variables: ``{"params": self.params, **self.model_state}``."""
        return {"params": self.params, **self.model_state}

    def finalize(self) -> Any:
        """The transform's baked result (hard masks, codes with scales, factors)."""
        return self.transform.finalize(self.cparams, self.comp_state)

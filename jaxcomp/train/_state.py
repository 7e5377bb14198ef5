"""The training state: trainable compressed params, compression state, optimizer state.

In the manner of ``flax.training.train_state.TrainState``, with two additions: the parameters are
held as a compression transform's ``cparams`` and ``state`` (the dense params the model sees are
``transform.apply(cparams, comp_state)``), and the mutable model collections (batch norm
statistics) and the PRNG key travel with it, so one pytree is all there is to checkpoint.

A Flax NNX model enters through :func:`jaxcomp.adapt.functional`: ``TrainState.create(model=...)``
splits it into a linen-style ``apply_fn`` and plain-dict variables, so the steps, the loop and
the checkpoints are the same code for both APIs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx
from flax import struct

from jaxcomp.adapt import functional
from jaxcomp.core import Transform
from jaxcomp.core import identity

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
      apply_fn: the model's ``apply`` (static): ``model.apply`` for linen, the
        :class:`jaxcomp.adapt.NNXApply` of :func:`jaxcomp.adapt.functional` for NNX.
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
        tx: optax.GradientTransformation,
        key: jax.Array,
        model: nnx.Module | None = None,
        apply_fn: Callable[..., Any] | None = None,
        variables: dict[str, Any] | None = None,
        transform: Transform | None = None,
    ) -> TrainState:
        """Builds the state from an NNX model, or from a linen model's apply and variables.

        Args:
          tx: the optimizer.
          key: a PRNG key from ``jax.random.key(seed)``.
          model: a Flax NNX module (with its initial weights); it is split with
            :func:`jaxcomp.adapt.functional` and left unchanged. Give either ``model`` or both
            ``apply_fn`` and ``variables``.
          apply_fn: the linen model's apply function, ``model.apply``.
          variables: the linen ``model.init(...)``: a dict with ``"params"`` and any other
            collections.
          transform: the compression transform; :func:`jaxcomp.identity` when omitted.

        Raises:
          ValueError: both or neither of ``model`` and ``apply_fn``/``variables`` are given,
            ``model`` is not an ``nnx.Module``, ``variables`` has no ``"params"``, or ``key`` is
            not a typed key.

        Examples:
          >>> import jax, optax
          >>> from flax import nnx
          >>> state = TrainState.create(
          ...     model=nnx.Linear(3, 2, rngs=nnx.Rngs(0)), tx=optax.sgd(0.1),
          ...     key=jax.random.key(0))
          >>> sorted(state.params)
          ['bias', 'kernel']
        """
        if model is not None:
            if apply_fn is not None or variables is not None:
                raise ValueError(
                    "TrainState.create: give model= (an nnx.Module) or apply_fn= and "
                    "variables= (linen), not both"
                )
            if not isinstance(model, nnx.Module):
                raise ValueError(
                    f"TrainState.create: model= takes an nnx.Module, got {type(model).__name__}; "
                    "for a linen model pass apply_fn=model.apply and variables=model.init(...)"
                )
            apply_fn, variables = functional(model)
        elif apply_fn is None or variables is None:
            raise ValueError(
                "TrainState.create: give model= (an nnx.Module) or both apply_fn= and "
                "variables= (linen)"
            )
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

        Always the transform's full ``apply`` (masks applied, codes dequantized), whatever values
        ``cparams`` hold.
        """
        return self.transform.apply(self.cparams, self.comp_state)

    def variables(self) -> dict[str, Any]:
        """The model's variables: ``{"params": self.params, **self.model_state}``."""
        return {"params": self.params, **self.model_state}

    def finalize(self) -> Any:
        """The transform's baked result (hard masks, codes with scales, factors)."""
        return self.transform.finalize(self.cparams, self.comp_state)

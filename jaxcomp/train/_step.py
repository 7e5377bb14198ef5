"""Jitted training and evaluation steps for a compressed model.

One step: rebuild the dense params with ``transform.apply`` (differentiable, straight-through
where it rounds; the transform's ``apply_own`` where it has one, see
:func:`jaxcomp.core.own_apply`), run the model, take the gradient with respect to the
transform's ``cparams``, apply the optimizer, then let the transform do its between-step work with
``transform.update`` (re-masking, observers), all inside one ``jit`` with the state's buffers
donated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcomp.core import own_apply
from jaxcomp.train._state import TrainState

__all__ = [
    "Objective",
    "cross_entropy",
    "forward",
    "make_eval_step",
    "make_train_step",
    "supervised_objective",
]

Objective = Callable[[Any, TrainState, tuple[jax.Array, jax.Array], jax.Array], Any]
"""``objective(params, state, batch, key) -> (loss, (new_model_state, metrics))``."""


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def forward(
    state: TrainState,
    params: Any,
    x: jax.Array,
    *,
    train: bool,
    key: jax.Array | None = None,
    train_kwarg: str | None = "train",
    apply_fn: Callable[..., Any] | None = None,
) -> tuple[Any, Any]:
    """Runs the model with ``params`` and the state's collections: the one forward pass.

    Args:
      state: the training state (its ``model_state`` and ``apply_fn``).
      params: the dense params (``transform.apply`` of the state's ``cparams``).
      x: the inputs.
      train: training mode: passed as ``train_kwarg``, and the state's collections are mutable
        (batch statistics, an NNX model's RNG streams).
      key: the ``"dropout"`` RNG of the step, if any.
      train_kwarg: the keyword that switches the model's mode; ``None`` for models without one.
      apply_fn: run instead of ``state.apply_fn``, with linen's ``apply`` convention (a wrapped
        apply, such as the student's under :func:`jaxcomp.distill.objective`).

    Returns:
      ``(output, new_model_state)``: the output is the logits (or what ``apply_fn`` returns);
      ``new_model_state`` is the state's own when not training.
    """
    apply_fn = state.apply_fn if apply_fn is None else apply_fn
    variables = {"params": params, **state.model_state}
    kwargs: dict[str, Any] = {} if train_kwarg is None else {train_kwarg: train}
    if key is not None:
        kwargs["rngs"] = {"dropout": key}
    mutable = list(state.model_state) if train else []
    if mutable:
        out, new_state = apply_fn(variables, x, mutable=mutable, **kwargs)
        return out, dict(new_state)
    return apply_fn(variables, x, **kwargs), state.model_state


def supervised_objective(
    loss: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
    *,
    train_kwarg: str | None = "train",
) -> Objective:
    """The objective of plain supervised training: ``loss(model(x), y)``, reporting accuracy."""

    def objective(params, state, batch, key):
        x, y = batch
        logits, new_model_state = forward(
            state, params, x, train=True, key=key, train_kwarg=train_kwarg
        )
        value = loss(logits, y)
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return value, (new_model_state, {"loss": value, "accuracy": acc})

    return objective


def make_train_step(
    objective: Objective | None = None,
    *,
    penalty: Callable[[Any, Any], jax.Array] | None = None,
    donate: bool = True,
) -> Callable[[TrainState, tuple[jax.Array, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the jitted step ``(state, (x, y)) -> (state, metrics)``.

    Args:
      objective: ``objective(params, state, batch, key) -> (loss, (new_model_state, metrics))``;
        :func:`supervised_objective` with cross-entropy when omitted. Distillation and other
        training regimes pass their own.
      penalty: ``penalty(cparams, comp_state) -> scalar`` added to the loss, differentiated with
        respect to the transform's own ``cparams`` (a prior over weights that the transform
        learns, such as :func:`jaxcomp.prune.soft_sharing_penalty` scaled by its weight).
      donate: donate the state's buffers to the step (the caller must not reuse the old state).

    Returns:
      A jitted function. Shard its inputs (see :mod:`jaxcomp.train`'s sharding helpers) and it
      runs data parallel unchanged.
    """
    objective = supervised_objective() if objective is None else objective

    def step(state: TrainState, batch):
        key, sub = jax.random.split(state.key)

        def loss_of(cparams):
            params = own_apply(state.transform)(cparams, state.comp_state)
            value, aux = objective(params, state, batch, sub)
            if penalty is not None:
                value = value + penalty(cparams, state.comp_state)
            return value, aux

        (_, (model_state, metrics)), grads = jax.value_and_grad(loss_of, has_aux=True)(
            state.cparams
        )
        updates, opt_state = state.tx.update(grads, state.opt_state, state.cparams)
        cparams = optax.apply_updates(state.cparams, updates)
        new_step = state.step + 1
        cparams, comp_state = state.transform.update(
            cparams, state.comp_state, step=new_step, grads=grads
        )
        new = state.replace(
            step=new_step,
            cparams=cparams,
            comp_state=comp_state,
            opt_state=opt_state,
            model_state=model_state,
            key=key,
        )
        return new, metrics

    return jax.jit(step, donate_argnums=(0,) if donate else ())


@functools.lru_cache(maxsize=32)
def make_eval_step(
    loss: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
    *,
    train_kwarg: str | None = "train",
) -> Callable[..., dict[str, jax.Array]]:
    """Builds the jitted ``(state, x, y, valid) -> {"correct", "loss_sum", "count"}``.

    ``valid`` is a boolean vector marking real examples, so that a final partial batch padded to
    the static batch shape is counted exactly. The same arguments give the same jitted function,
    so repeated :func:`evaluate` calls reuse its compilations.
    """

    def step(state: TrainState, x, y, valid):
        logits, _ = forward(state, state.params, x, train=False, train_kwarg=train_kwarg)
        per_example = jax.vmap(lambda lg, lb: loss(lg[None], lb[None]))(logits, y)
        correct = (jnp.argmax(logits, -1) == y) & valid
        return {
            "correct": jnp.sum(correct),
            "loss_sum": jnp.sum(jnp.where(valid, per_example, 0.0)),
            "count": jnp.sum(valid),
        }

    return jax.jit(step)

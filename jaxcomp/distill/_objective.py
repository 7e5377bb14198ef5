"""Teacher-student training as an objective for :func:`jaxcomp.train.make_train_step`.

:func:`objective` builds ``objective(params, state, batch, key) -> (loss, (model_state,
metrics))``: the frozen teacher runs on the batch (its output and captured features under
``stop_gradient``, its variables closed over and never trained), the student runs from the
state's params with the layers its terms need captured, and the loss is the weighted sum of the
terms. The student is any model trained by a :class:`jaxcomp.train.TrainState`, under any
compression transform; trainable FitNets regressors travel in its params tree
(:func:`jaxcomp.distill.add_regressors`), so they are part of the state's ``cparams``.

The teacher's logits may instead be computed once per dataset (:func:`teacher_logits`) and passed
as the third element of the batch ``(x, labels, teacher_logits)``; the teacher is then not run
(this needs a loop that cuts the cached logits with the batch, and terms that read no teacher
features).

References:
    Hinton, Vinyals and Dean, "Distilling the knowledge in a neural network",
    arXiv:1503.02531; Romero et al., "FitNets: hints for thin deep nets", arXiv:1412.6550.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.adapt import capture
from jaxcomp.distill._terms import Outputs
from jaxcomp.distill._terms import Term
from jaxcomp.train import forward

__all__ = ["objective", "teacher_logits"]


def _union(groups: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    out: list[str] = []
    for g in groups:
        out += [n for n in g if n not in out]
    return tuple(out)


def objective(
    teacher_apply: Callable[..., Any],
    teacher_variables: dict[str, Any],
    terms: Term | Sequence[Term],
    *,
    train_kwarg: str | None = "train",
    teacher_kwargs: dict[str, Any] | None = None,
) -> Callable[..., Any]:
    """The teacher-student objective: ``sum(term.weight * term.fn(student, teacher, ...))``.

    Args:
      teacher_apply: the teacher's ``apply`` (``teacher_model.apply``).
      teacher_variables: the teacher's variables (``{"params": ..., ...}``), frozen.
      terms: one :class:`jaxcomp.distill.Term` or several (:func:`kd_term`, :func:`hint_term`,
        :func:`label_term`...).
      train_kwarg: the keyword that switches the student (and teacher) model between training
        and inference (``train``); ``None`` for models without one.
      teacher_kwargs: keyword arguments of the teacher's forward pass (default
        ``{train_kwarg: False}``).

    Returns:
      ``objective(params, state, batch, key) -> (loss, (new_model_state, metrics))`` for
      :func:`jaxcomp.train.make_train_step`; ``metrics`` holds ``loss``, the student's
      ``accuracy`` on the batch's labels, and each term's unweighted value under its name
      (``kd``, ``hint``, ... with ``_1``, ``_2`` added to repeats).

    Raises:
      ValueError: no terms, or something that is not a :class:`Term`; when the objective runs,
        a batch with cached teacher logits while a term reads teacher features, or a captured
        layer name that names no layer (listing the layer paths).

    Examples:
        >>> import jax, optax
        >>> import jaxcomp as jc
        >>> from jaxcomp import distill
        >>> teacher = jc.models.get("lenet300")
        >>> tv = jc.models.init(teacher, jax.random.key(0), (28, 28, 1))
        >>> student = distill.MLP(features=(30,))
        >>> sv = jc.models.init(student, jax.random.key(1), (28, 28, 1))
        >>> obj = distill.objective(teacher.apply, tv, [distill.kd_term(temperature=4.0)])
        >>> state = jc.train.TrainState.create(
        ...     apply_fn=student.apply, variables=sv, tx=optax.adam(1e-3), key=jax.random.key(2))
        >>> step = jc.train.make_train_step(obj)
    """
    terms = (terms,) if isinstance(terms, Term) else tuple(terms)
    if not terms:
        raise ValueError("objective: terms must hold at least one jaxcomp.distill.Term")
    for i, t in enumerate(terms):
        if not isinstance(t, Term):
            raise ValueError(
                f"objective: terms[{i}] is a {type(t).__name__}, not a jaxcomp.distill.Term "
                "(build one with kd_term, hint_term, label_term, ...)"
            )
    names: list[str] = []
    for t in terms:
        n, k = t.name, 1
        while n in names or n in ("loss", "accuracy"):
            n, k = f"{t.name}_{k}", k + 1
        names.append(n)
    student_layers = _union([t.student_layers for t in terms])
    teacher_layers = _union([t.teacher_layers for t in terms])
    if teacher_kwargs is None:
        teacher_kwargs = {} if train_kwarg is None else {train_kwarg: False}
    teacher_fn = capture(teacher_apply, outputs=teacher_layers)

    def run_teacher(x):
        logits, got = teacher_fn(teacher_variables, x, **teacher_kwargs)
        return jax.lax.stop_gradient(Outputs(logits, got.outputs))

    def obj(params, state, batch, key):
        if len(batch) == 3:
            x, y, cached = batch
            if teacher_layers:
                raise ValueError(
                    "objective: the batch carries cached teacher logits, but terms read the "
                    f"teacher's features {list(teacher_layers)}; pass (x, labels) batches"
                )
            teacher = Outputs(jax.lax.stop_gradient(cached), {})
        else:
            x, y = batch
            teacher = run_teacher(x)
        run = capture(state.apply_fn, outputs=student_layers)

        def apply_fn(variables, *args, mutable=False, **kwargs):
            # linen's convention for forward: ((logits, captured), new_model_state)
            out, got = run(variables, *args, mutable=mutable, **kwargs)
            return ((out[0], got), out[1]) if mutable else (out, got)

        (logits, got), new_model_state = forward(
            state, params, x, train=True, key=key, train_kwarg=train_kwarg, apply_fn=apply_fn
        )
        student = Outputs(logits, got.outputs)
        values = [t.fn(student, teacher, y, params) for t in terms]
        loss = sum(t.weight * v for t, v in zip(terms, values, strict=True))
        metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}
        metrics.update(dict(zip(names, values, strict=True)))
        return loss, (new_model_state, metrics)

    return obj


def teacher_logits(
    teacher_apply: Callable[..., Any],
    teacher_variables: dict[str, Any],
    x: np.ndarray,
    *,
    batch_size: int = 500,
    **kwargs: Any,
) -> np.ndarray:
    """The teacher's logits on a whole array, computed once (to cache, or to label data).

    Args:
      teacher_apply: the teacher's ``apply``.
      teacher_variables: its variables.
      x: the inputs, ``(n, ...)``.
      batch_size: examples per forward pass (the last batch is padded, so one compilation
        serves all).
      **kwargs: keyword arguments of the forward pass (``train=False``).

    Returns:
      A float32 numpy array ``(n, classes)``.

    Raises:
      ValueError: ``batch_size < 1`` or an empty ``x``.
    """
    if batch_size < 1:
        raise ValueError(f"teacher_logits: batch_size must be >= 1, got {batch_size}")
    n = len(x)
    if n == 0:
        raise ValueError("teacher_logits: x is empty")
    bs = min(batch_size, n)
    fn = jax.jit(lambda v, xb: teacher_apply(v, xb, **kwargs))
    out = []
    for start in range(0, n, bs):
        xb = np.asarray(x[start : start + bs])
        m = len(xb)
        if m < bs:
            xb = np.concatenate([xb, np.zeros((bs - m, *xb.shape[1:]), xb.dtype)])
        out.append(np.asarray(fn(teacher_variables, xb))[:m])
    return np.concatenate(out).astype(np.float32)

"""Losses on logits: knowledge distillation with a temperature, and logit regression (mimic).

Hinton et al. soften the teacher's and the student's class probabilities with a temperature
``T`` (``softmax(z / T)``) and train the student on the cross-entropy between them, scaled by
``T**2`` so that the soft part's gradients keep their size as ``T`` changes, mixed with the
ordinary cross-entropy on the hard labels. Ba and Caruana regress the teacher's logits directly
with an L2 loss ("mimic learning"), the limit of high temperature.

For one example, the gradient of the ``T**2``-scaled soft loss with respect to the student's
logits ``s`` is ``T * (softmax(s / T) - softmax(t / T))``; losses here are batch means, so the
gradient of a batch of ``B`` examples is that divided by ``B`` (``tests/test_distill.py`` checks
it numerically).

References:
    Hinton, Vinyals and Dean, "Distilling the knowledge in a neural network", NeurIPS 2014 Deep
    Learning Workshop, arXiv:1503.02531.

    Ba and Caruana, "Do deep nets really need to be deep?", NeurIPS 2014, arXiv:1312.6184.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["check_temperature", "kd_loss", "mimic_loss", "soft_targets"]


def check_temperature(temperature: float | jax.Array, what: str = "temperature") -> None:
    """Raises ``ValueError`` if a concrete ``temperature`` is not ``> 0`` (traced values pass).

    Args:
      temperature: a Python number or an array; a traced value (a schedule inside ``jit``) cannot
        be checked and is let through.
      what: how to name the argument in the message.

    Raises:
      ValueError: ``temperature <= 0`` or not finite.
    """
    try:
        value = float(temperature)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{what} must be a finite number > 0, got {temperature!r}")


def _check_logits(student_logits: jax.Array, teacher_logits: jax.Array, fn: str) -> None:
    s, t = jnp.shape(student_logits), jnp.shape(teacher_logits)
    if s != t:
        raise ValueError(
            f"{fn}: student_logits and teacher_logits must have the same shape, got {s} and {t}"
        )
    if len(s) < 1:
        raise ValueError(f"{fn}: logits must have a class axis, got shape {s}")


def soft_targets(logits: jax.Array, *, temperature: float | jax.Array = 1.0) -> jax.Array:
    """The softened class probabilities ``softmax(logits / temperature)`` over the last axis.

    Args:
      logits: ``(..., classes)``.
      temperature: ``T > 0``; larger gives softer probabilities.

    Returns:
      Probabilities of the shape of ``logits``.

    Raises:
      ValueError: ``temperature <= 0``.
    """
    check_temperature(temperature)
    return jax.nn.softmax(logits / temperature, axis=-1)


def kd_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    *,
    temperature: float | jax.Array,
    labels: jax.Array | None = None,
    alpha: float = 1.0,
) -> jax.Array:
    """Hinton's distillation loss: ``alpha * T**2 * KL(p_T(t) || p_T(s)) + (1 - alpha) * CE``.

    ``p_T(z) = softmax(z / T)``; ``CE`` is the cross-entropy of the student's ordinary
    (``T = 1``) softmax with the integer ``labels``. The KL divergence equals the soft
    cross-entropy minus the teacher's entropy, so the loss is exactly zero when the student's
    logits equal the teacher's (and ``alpha = 1``), and its gradient is that of the soft
    cross-entropy. The teacher's logits get no gradient (``stop_gradient``).

    Args:
      student_logits: ``(batch, classes)``.
      teacher_logits: the same shape.
      temperature: ``T > 0`` (may be a traced schedule value).
      labels: integer labels ``(batch,)``; needed when ``alpha < 1``.
      alpha: weight of the soft part, in ``[0, 1]``; ``1 - alpha`` weighs the hard part.

    Returns:
      The batch-mean loss, a scalar.

    Raises:
      ValueError: ``temperature <= 0``, ``alpha`` outside ``[0, 1]``, mismatched logit shapes, or
        ``alpha < 1`` without ``labels`` (or labels of the wrong shape).

    Examples:
        >>> import jax.numpy as jnp
        >>> z = jnp.array([[1.0, 2.0, 3.0]])
        >>> float(kd_loss(z, z, temperature=4.0))
        0.0
    """
    check_temperature(temperature)
    _check_logits(student_logits, teacher_logits, "kd_loss")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"kd_loss: alpha must be in [0, 1], got {alpha!r}")
    t = jax.lax.stop_gradient(teacher_logits)
    log_ps = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    log_pt = jax.nn.log_softmax(t / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
    loss = alpha * temperature**2 * jnp.mean(kl)
    if alpha < 1.0:
        if labels is None:
            raise ValueError("kd_loss: labels are needed when alpha < 1 (the hard-label part)")
        if jnp.shape(labels) != jnp.shape(student_logits)[:-1]:
            raise ValueError(
                f"kd_loss: labels must have shape {jnp.shape(student_logits)[:-1]}, "
                f"got {jnp.shape(labels)}"
            )
        ce = optax.softmax_cross_entropy_with_integer_labels(student_logits, labels)
        loss = loss + (1.0 - alpha) * jnp.mean(ce)
    return loss


def mimic_loss(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
    """Ba and Caruana's logit regression: ``mean over examples of 0.5 * ||s - t||^2``.

    Args:
      student_logits: ``(batch, classes)``.
      teacher_logits: the same shape (no gradient flows to it).

    Returns:
      The loss, a scalar; zero exactly when the logits are equal.

    Raises:
      ValueError: mismatched shapes.
    """
    _check_logits(student_logits, teacher_logits, "mimic_loss")
    diff = student_logits - jax.lax.stop_gradient(teacher_logits)
    return 0.5 * jnp.mean(jnp.sum(jnp.square(diff), axis=-1))

"""Attention transfer: match the student's spatial attention maps to the teacher's.

The activation-based attention map of a feature map ``A`` of shape ``(batch, h, w, c)`` is the
sum over channels of ``|A|^p``, flattened to ``(batch, h * w)`` and divided by its L2 norm. The
loss is the squared distance between the student's and the teacher's normalized maps at chosen
pairs of layers of equal spatial size (the channel counts may differ), averaged as the authors'
code does (``(at(s) - at(t)).pow(2).mean()``: over examples and positions).

References:
    Zagoruyko and Komodakis, "Paying more attention to attention: improving the performance of
    convolutional neural networks via attention transfer", ICLR 2017, arXiv:1612.03928.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["attention_loss", "attention_map"]


def _check_p(p: float, fn: str) -> None:
    if not float(p) > 0:
        raise ValueError(f"{fn}: p must be > 0, got {p!r}")


def attention_map(features: jax.Array, *, p: float = 2.0, eps: float = 1e-12) -> jax.Array:
    """The normalized spatial attention map ``F(A) / ||F(A)||_2``, ``F(A) = sum_c |A_c|^p``.

    Args:
      features: a channels-last feature map ``(batch, *spatial, channels)`` (NHWC for images).
      p: the exponent, ``> 0``; the paper uses 2.
      eps: added to the norm so that an all-zero map stays finite (it maps to zero).

    Returns:
      ``(batch, prod(spatial))``, each row of unit L2 norm (or zero).

    Raises:
      ValueError: ``features`` has no spatial axis (``ndim < 3``) or ``p <= 0``.
    """
    _check_p(p, "attention_map")
    if features.ndim < 3:
        raise ValueError(
            "attention_map: features must be (batch, *spatial, channels) with at least one "
            f"spatial axis, got shape {features.shape}"
        )
    q = jnp.sum(jnp.abs(features) ** p, axis=-1).reshape(features.shape[0], -1)
    return q / (jnp.linalg.norm(q, axis=-1, keepdims=True) + eps)


def attention_loss(
    student_features: jax.Array, teacher_features: jax.Array, *, p: float = 2.0
) -> jax.Array:
    """``mean((attention_map(s) - attention_map(t))^2)`` over examples and positions.

    Args:
      student_features: ``(batch, h, w, c_s)``.
      teacher_features: ``(batch, h, w, c_t)``: the same batch and spatial size; the teacher's
        get no gradient.
      p: the exponent of :func:`attention_map`.

    Returns:
      A scalar, zero when the maps are proportional position by position.

    Raises:
      ValueError: the batch or spatial sizes differ, or the features have no spatial axis.
    """
    s, t = jnp.shape(student_features), jnp.shape(teacher_features)
    if len(s) != len(t) or s[:-1] != t[:-1]:
        raise ValueError(
            "attention_loss: student and teacher features must agree in batch and spatial size "
            f"(channels may differ), got {s} and {t}"
        )
    qs = attention_map(student_features, p=p)
    qt = attention_map(jax.lax.stop_gradient(teacher_features), p=p)
    return jnp.mean(jnp.square(qs - qt))

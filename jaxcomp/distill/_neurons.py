"""Neuron-selective distillation: the student regresses a chosen subset of teacher neurons.

Luo et al. compress a face model by distilling from the neurons of the teacher's top hidden
layer rather than from its softmax, and only from a selected subset of them: the neurons that are
informative (selective for face attributes) are kept and the noisy or redundant ones dropped, so
that a much narrower student layer can regress them. The student's layer has as many units as
neurons are selected; the loss is the squared error.

:func:`select_neurons` picks the subset from the teacher's activations on a sample of data by one
of these criteria (the top ``k`` by score):

* ``"variance"``: the variance of the activation over the sample (dead and constant neurons go);
* ``"mean"``: the mean activation (the most active neurons);
* ``"fisher"``: the ratio of between-class to within-class variance of the activation, with the
  sample's labels: the neurons most selective for the classes, the analogue of Luo et al.'s
  attribute-selective neurons (their attribute labels are replaced by class labels here).

Indices may also be given directly.

References:
    Luo, Zhu, Liu, Wang and Tang, "Face model compression by distilling knowledge from neurons",
    AAAI 2016.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["CRITERIA", "neuron_loss", "select_neurons"]

CRITERIA = ("variance", "mean", "fisher")
"""The selection criteria of :func:`select_neurons`."""


def select_neurons(
    activations: jax.Array,
    k: int,
    *,
    criterion: str = "variance",
    labels: jax.Array | None = None,
    num_classes: int | None = None,
) -> jax.Array:
    """The indices of the ``k`` highest-scoring neurons of a layer, best first.

    Args:
      activations: the teacher layer's output on a sample, ``(examples, neurons)`` (anything
        after the first axis is flattened).
      k: how many neurons to keep, in ``[1, neurons]``.
      criterion: one of :data:`CRITERIA`.
      labels: integer class labels ``(examples,)``, for ``"fisher"``.
      num_classes: the number of classes, for ``"fisher"`` (default ``max(labels) + 1``).

    Returns:
      An int32 vector of ``k`` indices into the flattened neurons.

    Raises:
      ValueError: ``k`` out of range, an unknown criterion, or ``"fisher"`` without labels.
    """
    a = jnp.reshape(activations, (activations.shape[0], -1))
    n = a.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"select_neurons: k must be an int in [1, {n}] (the neurons), got {k!r}")
    if criterion == "variance":
        score = jnp.var(a, axis=0)
    elif criterion == "mean":
        score = jnp.mean(a, axis=0)
    elif criterion == "fisher":
        if labels is None or jnp.shape(labels) != (a.shape[0],):
            raise ValueError(
                f"select_neurons: criterion='fisher' needs labels of shape ({a.shape[0]},)"
            )
        c = int(jnp.max(labels)) + 1 if num_classes is None else int(num_classes)
        onehot = jax.nn.one_hot(labels, c)  # (examples, classes)
        counts = jnp.sum(onehot, axis=0)  # (classes,)
        means = (onehot.T @ a) / jnp.maximum(counts, 1.0)[:, None]  # (classes, neurons)
        overall = jnp.mean(a, axis=0)
        between = jnp.sum(counts[:, None] * jnp.square(means - overall[None, :]), axis=0)
        within = jnp.sum(jnp.square(a - onehot @ means), axis=0)
        score = between / (within + 1e-12)
    else:
        raise ValueError(f"select_neurons: criterion must be one of {CRITERIA}, got {criterion!r}")
    return jnp.argsort(-score)[:k].astype(jnp.int32)


def neuron_loss(
    student_features: jax.Array, teacher_features: jax.Array, indices: jax.Array
) -> jax.Array:
    """``0.5 * mean((student - teacher[:, indices])^2)``: regress the selected teacher neurons.

    Args:
      student_features: ``(batch, k)`` (flattened after the batch axis).
      teacher_features: ``(batch, neurons)`` (flattened after the batch axis); no gradient.
      indices: the ``k`` selected neurons (:func:`select_neurons`).

    Returns:
      A scalar.

    Raises:
      ValueError: the student's width is not the number of indices.
    """
    s = jnp.reshape(student_features, (student_features.shape[0], -1))
    t = jnp.reshape(teacher_features, (teacher_features.shape[0], -1))
    idx = jnp.asarray(indices)
    if idx.ndim != 1 or s.shape != (t.shape[0], idx.shape[0]):
        raise ValueError(
            f"neuron_loss: student features {s.shape} must be (batch, k) with k = "
            f"{idx.shape[0] if idx.ndim == 1 else idx.shape} selected neurons and batch "
            f"{t.shape[0]}"
        )
    target = jax.lax.stop_gradient(jnp.take(t, idx, axis=1))
    return 0.5 * jnp.mean(jnp.square(s - target))

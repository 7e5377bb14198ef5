"""Model compression with pseudo data: MUNGE samples labelled by the teacher.

Bucila et al. compress a large ensemble into a small network by labelling a large set of
synthetic examples with the ensemble and training the network on them; the synthetic points
should follow the data's distribution, which their MUNGE procedure approximates by mixing each
training example with its nearest neighbour. The procedure here (one round per ``multiplier``):
for each example ``x`` with nearest neighbour ``x'`` (Euclidean, another example), each feature
``a`` independently

* with probability ``p`` takes the neighbour's value, ``x_a <- x'_a``;
* otherwise is perturbed, ``x_a <- x_a + N(0, (scale * |x_a - x'_a|)^2)``,

so features where the two examples agree stay put and the others move on the scale of their
local disagreement. (The paper's Algorithm 3 modifies a feature only with probability ``p``, then
both examples of the pair, sampling around the neighbour's value with standard deviation
``|x_a - x'_a| / s``; the variant here is the one this project specifies, one output per example
per round.) Nearest neighbours are found with ``jnp`` matrix products in chunks of examples, so
memory is ``chunk_size x n``.

References:
    Bucila, Caruana and Niculescu-Mizil, "Model compression", KDD 2006.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.data import Dataset
from jaxcomp.distill._objective import teacher_logits

__all__ = ["munge", "nearest_neighbors", "pseudo_data"]


def _check_chunk(chunk_size: int, fn: str) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size must be an int >= 1, got {chunk_size!r}")


def nearest_neighbors(x: jax.Array, *, chunk_size: int = 512) -> jax.Array:
    """The index of each example's nearest other example (Euclidean distance, flattened).

    Args:
      x: ``(n, ...)`` with ``n >= 2``.
      chunk_size: queries per block of the distance matrix (``chunk_size x n`` floats at once).

    Returns:
      int32 ``(n,)``; never an example's own index (ties go to the lowest index).

    Raises:
      ValueError: fewer than two examples or a bad ``chunk_size``.
    """
    _check_chunk(chunk_size, "nearest_neighbors")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"nearest_neighbors: x needs at least 2 examples, got {n}")
    return _nn(jnp.reshape(jnp.asarray(x, jnp.float32), (n, -1)), min(chunk_size, n))


@functools.partial(jax.jit, static_argnums=1)
def _nn(xf: jax.Array, c: int) -> jax.Array:
    n, d = xf.shape
    chunks = -(-n // c)
    xq = jnp.concatenate([xf, jnp.zeros((chunks * c - n, d), xf.dtype)])
    sq = jnp.sum(jnp.square(xf), axis=1)
    cols = jnp.arange(n)

    def one(i):
        q = jax.lax.dynamic_slice(xq, (i * c, 0), (c, d))
        rows = i * c + jnp.arange(c)
        d2 = jnp.sum(jnp.square(q), axis=1)[:, None] - 2.0 * (q @ xf.T) + sq[None, :]
        d2 = jnp.where(cols[None, :] == rows[:, None], jnp.inf, d2)
        return jnp.argmin(d2, axis=1).astype(jnp.int32)

    return jax.lax.map(one, jnp.arange(chunks)).reshape(-1)[:n]


def munge(
    x: jax.Array,
    *,
    key: jax.Array,
    p: float = 0.5,
    scale: float = 1.0,
    multiplier: int = 1,
    chunk_size: int = 512,
    clip: tuple[float, float] | None = None,
    neighbors: jax.Array | None = None,
) -> jax.Array:
    """MUNGE synthetic examples: ``multiplier`` rounds of one sample per example.

    Args:
      x: the real examples ``(n, ...)``.
      key: the PRNG key; the same key gives the same samples.
      p: the probability that a feature takes the neighbour's value, in ``[0, 1]``.
      scale: the perturbation's standard deviation per unit of ``|x_a - x'_a|``, ``>= 0``.
      multiplier: the rounds, ``>= 1``; the result has ``multiplier * n`` examples.
      chunk_size: the nearest-neighbour search's block size.
      clip: ``(low, high)`` to clip the samples to (``(0, 1)`` for images), or ``None``.
      neighbors: precomputed :func:`nearest_neighbors` of ``x``.

    Returns:
      ``(multiplier * n, ...)`` float32 samples, round by round.

    Raises:
      ValueError: ``p`` outside ``[0, 1]``, ``scale < 0``, ``multiplier < 1``, a bad ``clip``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"munge: p must be in [0, 1], got {p!r}")
    if not scale >= 0:
        raise ValueError(f"munge: scale must be >= 0, got {scale!r}")
    if isinstance(multiplier, bool) or not isinstance(multiplier, int) or multiplier < 1:
        raise ValueError(f"munge: multiplier must be an int >= 1, got {multiplier!r}")
    if clip is not None and not (len(clip) == 2 and clip[0] <= clip[1]):
        raise ValueError(f"munge: clip must be (low, high) with low <= high, got {clip!r}")
    x = jnp.asarray(x, jnp.float32)
    idx = nearest_neighbors(x, chunk_size=chunk_size) if neighbors is None else neighbors
    lo, hi = (None, None) if clip is None else (float(clip[0]), float(clip[1]))
    return _munge(x, jnp.asarray(idx), key, float(p), float(scale), multiplier, lo, hi)


@functools.partial(jax.jit, static_argnums=(5, 6, 7))
def _munge(x, idx, key, p, scale, multiplier, lo, hi):
    nn_x = jnp.take(x, idx, axis=0)

    def one(k):
        k_swap, k_noise = jax.random.split(k)
        swap = jax.random.bernoulli(k_swap, p, x.shape)
        z = jax.random.normal(k_noise, x.shape, x.dtype)
        out = jnp.where(swap, nn_x, x + scale * jnp.abs(x - nn_x) * z)
        return out if lo is None else jnp.clip(out, lo, hi)

    samples = jax.lax.map(one, jax.random.split(key, multiplier))
    return jnp.reshape(samples, (multiplier * x.shape[0], *x.shape[1:]))


def pseudo_data(
    data: Dataset,
    teacher_apply: Callable[..., Any],
    teacher_variables: dict[str, Any],
    *,
    key: jax.Array,
    multiplier: int = 1,
    p: float = 0.5,
    scale: float = 1.0,
    clip: tuple[float, float] | None = None,
    chunk_size: int = 512,
    batch_size: int = 500,
) -> Dataset:
    """``data`` with MUNGE samples of its train split, labelled by the teacher, added to it.

    The labels of the synthetic examples are the teacher's predicted classes; a student trained
    with :func:`jaxcomp.distill.objective` sees the teacher's soft outputs on them too.

    Args:
      data: the dataset; its test split is kept as it is.
      teacher_apply: the teacher's ``apply``.
      teacher_variables: its variables.
      key: the PRNG key of :func:`munge`.
      multiplier: synthetic examples per real one.
      p: :func:`munge`'s swap probability.
      scale: :func:`munge`'s perturbation scale.
      clip: :func:`munge`'s clipping range.
      chunk_size: the nearest-neighbour block size.
      batch_size: the teacher's batch size when labelling.

    Returns:
      A :class:`jaxcomp.data.Dataset` with ``(1 + multiplier) * num_train`` training examples
      (the real ones first), named ``"<name>+munge"``.
    """
    synth = np.asarray(
        munge(
            data.x_train,
            key=key,
            p=p,
            scale=scale,
            multiplier=multiplier,
            chunk_size=chunk_size,
            clip=clip,
        )
    )
    labels = np.argmax(
        teacher_logits(teacher_apply, teacher_variables, synth, batch_size=batch_size), axis=-1
    ).astype(np.int32)
    return Dataset(
        np.concatenate([data.x_train, synth]).astype(np.float32),
        np.concatenate([data.y_train, labels]).astype(np.int32),
        data.x_test,
        data.y_test,
        num_classes=data.num_classes,
        name=f"{data.name}+munge",
    )

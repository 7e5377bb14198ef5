"""Host-side minibatches with a reproducible, resumable order.

The order of an epoch is a pure function of ``(seed, epoch)``: the permutation is drawn from
``np.random.default_rng((seed, epoch))``. A run resumed from a checkpoint at step ``s`` therefore
sees exactly the batches that the uninterrupted run would have seen: epoch ``s // steps_per_epoch``
from index ``s % steps_per_epoch`` (see :func:`batch_at` and the ``start`` argument of
:func:`batches`). No generator state needs to be saved.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "batch_at",
    "batches",
    "epoch_order",
    "num_batches",
]


def _check_int(value: Any, arg: str, fn: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{fn}: {arg} must be an int >= {minimum}, got {value!r}")
    return int(value)


def num_batches(n: int, batch_size: int, drop_remainder: bool = True) -> int:
    """The number of batches in one epoch of ``n`` examples.

    Args:
        n: the number of examples (>= 0).
        batch_size: examples per batch (> 0).
        drop_remainder: drop the last, smaller batch.

    Returns:
        ``n // batch_size`` with ``drop_remainder``, else ``ceil(n / batch_size)``.

    Raises:
        ValueError: if ``n < 0`` or ``batch_size <= 0``.

    Examples:
        >>> num_batches(10, 4), num_batches(10, 4, drop_remainder=False)
        (2, 3)
    """
    n = _check_int(n, "n", "num_batches", 0)
    batch_size = _check_int(batch_size, "batch_size", "num_batches", 1)
    return n // batch_size if drop_remainder else -(-n // batch_size)


def epoch_order(n: int, *, seed: int, epoch: int = 0, shuffle: bool = True) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``n`` examples.

    Args:
        n: the number of examples.
        seed: a non-negative int.
        epoch: a non-negative int.
        shuffle: if ``False``, the identity order ``0, 1, ..., n - 1``.

    Returns:
        An int64 permutation of ``range(n)``, a function of ``(seed, epoch)`` only.
    """
    n = _check_int(n, "n", "epoch_order", 0)
    seed = _check_int(seed, "seed", "epoch_order", 0)
    epoch = _check_int(epoch, "epoch", "epoch_order", 0)
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng((seed, epoch)).permutation(n)


def _check_batching(x: Any, y: Any, batch_size: Any, drop_remainder: bool, fn: str) -> int:
    n = len(x)
    if len(y) != n:
        raise ValueError(f"{fn}: x and y must have the same length, got {n} and {len(y)}")
    batch_size = _check_int(batch_size, "batch_size", fn, 1)
    if drop_remainder and batch_size > n:
        raise ValueError(
            f"{fn}: batch_size={batch_size} exceeds the {n} examples, so drop_remainder=True "
            "would leave no batch; use a smaller batch_size or drop_remainder=False"
        )
    return batch_size


def batches(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epoch: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
    start: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterates over one epoch of ``(x_batch, y_batch)`` numpy minibatches.

    Args:
        x: inputs, ``(N, ...)``.
        y: labels, ``(N,)``.
        batch_size: examples per batch, in ``[1, N]`` when ``drop_remainder``.
        seed: a non-negative int; with ``epoch`` it fixes the order.
        epoch: a non-negative int; each epoch has its own order.
        shuffle: shuffle the examples; otherwise visit them in order.
        drop_remainder: drop the last, smaller batch (so every batch has one shape and a jitted
            step compiles once).
        start: the index of the first batch to yield, to resume mid-epoch; ``0`` to
            ``num_batches(...)``.

    Yields:
        ``(x[idx], y[idx])`` for consecutive slices ``idx`` of :func:`epoch_order`.

    Raises:
        ValueError: if ``batch_size <= 0``, ``batch_size > N`` with ``drop_remainder``, the lengths
            of ``x`` and ``y`` differ, ``seed`` or ``epoch`` is negative, or ``start`` is out of
            range. Raised on the call, before the first batch.

    Examples:
        >>> import numpy as np
        >>> x, y = np.arange(10.0)[:, None], np.arange(10)
        >>> [len(b) for b, _ in batches(x, y, batch_size=4, seed=0, drop_remainder=False)]
        [4, 4, 2]
    """
    batch_size = _check_batching(x, y, batch_size, drop_remainder, "batches")
    order = epoch_order(len(x), seed=seed, epoch=epoch, shuffle=shuffle)
    count = num_batches(len(x), batch_size, drop_remainder)
    start = _check_int(start, "start", "batches", 0)
    if start > count:
        raise ValueError(f"batches: start must be in [0, {count}], got {start}")
    return _iterate(x, y, order, batch_size, start, count)


def _iterate(
    x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int, start: int, count: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i in range(start, count):
        idx = order[i * batch_size : (i + 1) * batch_size]
        yield x[idx], y[idx]


def batch_at(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    index: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``index``-th batch of epoch ``epoch``, as :func:`batches` would yield it.

    Args:
        x: inputs, ``(N, ...)``.
        y: labels, ``(N,)``.
        batch_size: examples per batch.
        seed: a non-negative int.
        epoch: a non-negative int.
        index: the batch's index within the epoch, in ``[0, num_batches(...))``.
        shuffle: as in :func:`batches`.
        drop_remainder: as in :func:`batches`.

    Returns:
        ``(x_batch, y_batch)``.

    Raises:
        ValueError: as :func:`batches`, or if ``index`` is out of range.
    """
    batch_size = _check_batching(x, y, batch_size, drop_remainder, "batch_at")
    count = num_batches(len(x), batch_size, drop_remainder)
    index = _check_int(index, "index", "batch_at", 0)
    if index >= count:
        raise ValueError(f"batch_at: index must be in [0, {count}), got {index}")
    order = epoch_order(len(x), seed=seed, epoch=epoch, shuffle=shuffle)
    idx = order[index * batch_size : (index + 1) * batch_size]
    return x[idx], y[idx]

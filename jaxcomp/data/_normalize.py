"""Per-channel standardization with training-set statistics.

Each input channel (the last axis: image channels, or features of a feature matrix) is shifted by
the mean and divided by the standard deviation of the *training* split, and the same statistics
are applied to the test split, so nothing about the test set leaks into training. The statistics
are returned to the caller, never stored globally.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcomp.data._dataset import Dataset

__all__ = [
    "channel_stats",
    "normalize",
]


def channel_stats(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel mean and standard deviation of ``ds.x_train``.

    Statistics are taken over every axis but the last, in float64, and returned as float32
    arrays of shape ``(C,)``. A channel with zero spread (a constant border pixel of a feature
    matrix) gets standard deviation 1, so it maps to 0 rather than to NaN.

    Args:
        ds: the dataset.

    Returns:
        ``(mean, std)``, each of shape ``(ds.input_shape[-1],)``.
    """
    axes = tuple(range(ds.x_train.ndim - 1))
    x = ds.x_train.astype(np.float64)
    mean = x.mean(axis=axes)
    std = x.std(axis=axes)
    std = np.where(std > 0, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def _channel_vector(value: Any, channels: int, arg: str) -> np.ndarray:
    v = np.asarray(value, np.float32)
    if v.ndim == 0:
        v = np.full((channels,), v, np.float32)
    if v.shape != (channels,):
        raise ValueError(
            f"normalize: {arg} must be a scalar or have shape ({channels},), got {v.shape}"
        )
    if not np.all(np.isfinite(v)):
        raise ValueError(f"normalize: {arg} must be finite, got {v}")
    return v


def normalize(ds: Dataset, mean: Any = None, std: Any = None) -> Dataset:
    """Standardizes each channel: ``(x - mean) / std``, with train statistics by default.

    Args:
        ds: the dataset.
        mean: per-channel means, a scalar or shape ``(C,)``; ``None`` takes
            :func:`channel_stats` of the training split.
        std: per-channel standard deviations (> 0), a scalar or shape ``(C,)``; ``None`` takes
            :func:`channel_stats` of the training split.

    Returns:
        A new :class:`Dataset` with standardized ``x_train`` and ``x_test`` (same name, labels).

    Raises:
        ValueError: if ``mean`` or ``std`` has the wrong shape, is not finite, or ``std <= 0``.

    Examples:
        >>> import numpy as np
        >>> from jaxcomp.data import from_arrays
        >>> ds = normalize(from_arrays([[1.0], [3.0]], [0, 1], [[5.0]], [1]))
        >>> ds.x_train.ravel().tolist(), ds.x_test.ravel().tolist()
        ([-1.0, 1.0], [3.0])
    """
    channels = ds.input_shape[-1]
    if mean is None or std is None:
        train_mean, train_std = channel_stats(ds)
        mean = train_mean if mean is None else mean
        std = train_std if std is None else std
    mean = _channel_vector(mean, channels, "mean")
    std = _channel_vector(std, channels, "std")
    if np.any(std <= 0):
        raise ValueError(f"normalize: std must be > 0 in every channel, got {std}")
    return ds.replace(
        x_train=((ds.x_train - mean) / std).astype(np.float32),
        x_test=((ds.x_test - mean) / std).astype(np.float32),
    )

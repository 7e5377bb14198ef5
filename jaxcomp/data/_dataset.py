"""The in-memory :class:`Dataset` and its constructor from plain arrays.

Every loader in :mod:`jaxcomp.data` returns a :class:`Dataset`: four host-side numpy arrays (images
as float32 NHWC in ``[0, 1]``, or float32 feature vectors; int32 labels), the number of classes and
a name. It is checked once, when built, so the training code can trust it. The datasets that the
survey's experiments use are small enough (MNIST, CIFAR-10) to hold in host memory; batches are cut
from it by :func:`jaxcomp.data.batches` and sent to the device one at a time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = [
    "Dataset",
    "from_arrays",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled train/test split held in host memory.

    Attributes:
        x_train: ``float32`` inputs, shape ``(num_train, *input_shape)``; images are NHWC.
        y_train: ``int32`` labels in ``[0, num_classes)``, shape ``(num_train,)``.
        x_test: ``float32`` inputs, shape ``(num_test, *input_shape)``.
        y_test: ``int32`` labels, shape ``(num_test,)``.
        num_classes: the number of classes, a positive int.
        name: a short name for reports (``"mnist5k"``, ``"tfds:cifar10"``).

    Raises:
        ValueError: when built with arrays that are not numpy arrays of the dtypes above, whose
            lengths or example shapes disagree, whose inputs have fewer than 2 dimensions, or whose
            labels fall outside ``[0, num_classes)``. The message names the field.

    Examples:
        >>> import numpy as np
        >>> ds = Dataset(np.zeros((4, 2, 2, 1), np.float32), np.array([0, 1, 0, 1], np.int32),
        ...              np.zeros((2, 2, 2, 1), np.float32), np.array([1, 0], np.int32),
        ...              num_classes=2, name="toy")
        >>> ds.input_shape, ds.num_train, ds.num_test
        ((2, 2, 1), 4, 2)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ValueError(f"Dataset: name must be a str, got {type(self.name).__name__}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int | np.integer):
            raise ValueError(f"Dataset: num_classes must be an int, got {self.num_classes!r}")
        if self.num_classes < 1:
            raise ValueError(f"Dataset: num_classes must be >= 1, got {self.num_classes}")
        object.__setattr__(self, "num_classes", int(self.num_classes))
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            for field, arr in ((f"x_{split}", x), (f"y_{split}", y)):
                if not isinstance(arr, np.ndarray):
                    raise ValueError(
                        f"Dataset: {field} must be a numpy array, got {type(arr).__name__}"
                    )
            if x.dtype != np.float32:
                raise ValueError(
                    f"Dataset: x_{split} must have dtype float32, got {x.dtype} "
                    "(use jaxcomp.data.from_arrays to convert)"
                )
            if x.ndim < 2:
                raise ValueError(
                    f"Dataset: x_{split} must have ndim >= 2 (examples, features...), "
                    f"got shape {x.shape}"
                )
            if y.dtype != np.int32 or y.ndim != 1:
                raise ValueError(
                    f"Dataset: y_{split} must be a 1-D int32 array, got dtype {y.dtype} "
                    f"and shape {y.shape} (use jaxcomp.data.from_arrays to convert)"
                )
            if len(x) != len(y):
                raise ValueError(
                    f"Dataset: x_{split} and y_{split} must have the same length, "
                    f"got {len(x)} and {len(y)}"
                )
            if len(x) == 0:
                raise ValueError(f"Dataset: x_{split} must hold at least one example")
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(
                    f"Dataset: y_{split} labels must lie in [0, num_classes={self.num_classes}), "
                    f"got values in [{lo}, {hi}]"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                "Dataset: x_train and x_test must have the same example shape, got "
                f"{self.x_train.shape[1:]} and {self.x_test.shape[1:]}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example (``(H, W, C)`` for images, ``(F,)`` for features)."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        """The number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """The number of test examples."""
        return int(self.x_test.shape[0])

    def replace(self, **changes: Any) -> Dataset:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, num_train={self.num_train}, num_test={self.num_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


def _as_inputs(x: Any, field: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    elif x.dtype.kind in "biuf":
        x = x.astype(np.float32)
    else:
        raise ValueError(f"from_arrays: {field} must be numeric, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim < 2:
        raise ValueError(f"from_arrays: {field} must have ndim >= 2, got shape {x.shape}")
    return x


def _as_labels(y: Any, field: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"from_arrays: {field} must have shape (N,) or (N, 1), got {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"from_arrays: {field} must hold integers, got dtype {y.dtype}")
    if y.size and (int(y.min()) < 0 or int(y.max()) > np.iinfo(np.int32).max):
        raise ValueError(
            f"from_arrays: {field} labels must be non-negative int32 values, "
            f"got values in [{int(y.min())}, {int(y.max())}]"
        )
    return y.astype(np.int32)


def from_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    num_classes: int | None = None,
    name: str = "arrays",
) -> Dataset:
    """Builds a :class:`Dataset` from array-likes, converting dtypes and layouts.

    Inputs of dtype ``uint8`` are taken as 8-bit images and scaled to ``[0, 1]``; other numeric
    inputs are cast to ``float32`` unchanged (so integer images of another dtype are *not*
    rescaled). Inputs of shape ``(N, H, W)`` get a trailing channel axis; ``(N, F)`` stays a
    feature matrix. Labels of shape ``(N,)`` or ``(N, 1)`` are cast to ``int32``.

    Args:
        x_train: training inputs, ``(N, ...)`` with ``ndim >= 2``.
        y_train: training labels, non-negative integers.
        x_test: test inputs with the same example shape as ``x_train``.
        y_test: test labels.
        num_classes: the number of classes; ``None`` takes the largest label plus one.
        name: the dataset's name.

    Returns:
        The checked :class:`Dataset`.

    Raises:
        ValueError: for non-numeric inputs, non-integer or negative labels, or anything that
            :class:`Dataset` rejects; the message names the argument.

    Examples:
        >>> import numpy as np
        >>> ds = from_arrays(np.full((3, 4, 4), 255, np.uint8), [0, 2, 1],
        ...                  np.zeros((1, 4, 4), np.uint8), [2])
        >>> ds.input_shape, ds.num_classes, float(ds.x_train.max())
        ((4, 4, 1), 3, 1.0)
    """
    xs = {"x_train": _as_inputs(x_train, "x_train"), "x_test": _as_inputs(x_test, "x_test")}
    ys = {"y_train": _as_labels(y_train, "y_train"), "y_test": _as_labels(y_test, "y_test")}
    if num_classes is None:
        sizes = [y for y in ys.values() if y.size]
        if not sizes:
            raise ValueError("from_arrays: cannot infer num_classes from empty labels; pass it")
        num_classes = max(int(y.max()) for y in sizes) + 1
    return Dataset(
        xs["x_train"], ys["y_train"], xs["x_test"], ys["y_test"], num_classes=num_classes, name=name
    )

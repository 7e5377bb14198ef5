"""TensorFlow Datasets through random-access data sources, read whole into host memory.

``tfds.data_source`` reads datasets prepared in the ``array_record`` (or ``parquet``) file format
without TensorFlow. jaxcomp calls it with ``download=False``, always: it never downloads, so a
dataset must be prepared on disk first (on a machine with network access, then copied), and a
missing one is a :class:`jaxcomp.errors.DatasetNotFoundError` that says how to prepare it.

The ``"image"`` and ``"label"`` features of the ``train`` split and of the ``test`` split (or
``validation`` where there is no ``test``) are read into numpy; ``uint8`` images become float32 in
``[0, 1]``; the number of classes is the ``ClassLabel`` feature's.

References:
  TensorFlow Datasets, "tfds.data_source", https://www.tensorflow.org/datasets/api_docs/python/tfds/data_source
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcomp.data._dataset import Dataset
from jaxcomp.data._dataset import from_arrays
from jaxcomp.errors import DatasetNotFoundError

__all__ = [
    "load_tfds",
]


def _not_found(name: str, data_dir: str | None, cause: BaseException) -> DatasetNotFoundError:
    where = repr(data_dir) if data_dir is not None else "the default TFDS data_dir"
    dir_arg = data_dir if data_dir is not None else "DIR"
    first_line = (str(cause).splitlines() or [""])[0].rstrip(" :")
    return DatasetNotFoundError(
        f"The TFDS dataset {name!r} is not prepared for random access under {where}. jaxcomp never "
        "downloads data: it reads datasets that are already on disk in the array_record format. "
        "On a machine with network access, prepare it with "
        f"`python -c \"import tensorflow_datasets as tfds; tfds.data_source('{name}', "
        f"download=True, data_dir='{dir_arg}')\"` or "
        f"`tfds build {name} --file_format=array_record --data_dir={dir_arg}`, copy that folder "
        "here if needed, and pass its path as data_dir (or set TFDS_DATA_DIR). "
        f"(TFDS: {type(cause).__name__}: {first_line}.)"
    )


def _source(tfds: Any, name: str, split: str, data_dir: str | None) -> Any:
    errors = (
        tfds.core.registered.DatasetNotFoundError,
        NotImplementedError,
        FileNotFoundError,
        AssertionError,
    )
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except errors as e:
        raise _not_found(name, data_dir, e) from e


def _read_all(
    source: Any, image_key: str, label_key: str, split: str
) -> tuple[np.ndarray, np.ndarray]:
    records = [source[i] for i in range(len(source))]  # host I/O: one record at a time
    if not records:
        raise ValueError(f"load_tfds: the {split!r} split is empty")
    try:
        images = np.stack([np.asarray(r[image_key]) for r in records])
    except ValueError as e:
        raise ValueError(
            f"load_tfds: the {image_key!r} feature of split {split!r} holds images of differing "
            "shapes; jaxcomp.data needs fixed-size images"
        ) from e
    labels = np.asarray([np.asarray(r[label_key]).item() for r in records])
    return images, labels


def load_tfds(
    name: str,
    *,
    config: str | None = None,
    data_dir: str | None = None,
    image_key: str = "image",
    label_key: str = "label",
) -> Dataset:
    """Reads a prepared TFDS image-classification dataset into a :class:`Dataset`.

    Args:
        name: the TFDS dataset name (``"mnist"``, ``"cifar10"``).
        config: an optional builder config, read as ``"name/config"``.
        data_dir: the TFDS data directory; ``None`` uses TFDS's default (``TFDS_DATA_DIR`` or
            ``~/tensorflow_datasets``).
        image_key: the feature holding the images.
        label_key: the feature holding the integer class labels.

    Returns:
        The :class:`Dataset` named ``"tfds:name"`` (or ``"tfds:name:config"``), test split from
        ``"test"`` where the dataset has one and from ``"validation"`` otherwise.

    Raises:
        DatasetNotFoundError: if the dataset is unknown to TFDS or not prepared in a
            random-access format under ``data_dir``. Nothing is downloaded.
        ValueError: if the dataset has neither a ``test`` nor a ``validation`` split, lacks the
            image or label feature, or holds images of differing shapes.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"load_tfds: name must be a non-empty str, got {name!r}")
    import tensorflow_datasets as tfds  # imported here: heavy, and only this loader needs it

    full_name = name if config is None else f"{name}/{config}"
    train_source = _source(tfds, full_name, "train", data_dir)
    info = train_source.dataset_info
    splits = set(info.splits.keys())
    if not splits or "test" in splits:
        test_split = "test"
    elif "validation" in splits:
        test_split = "validation"
    else:
        raise ValueError(
            f"load_tfds: dataset {full_name!r} has neither a 'test' nor a 'validation' split; "
            f"it has {sorted(splits)}"
        )
    test_source = _source(tfds, full_name, test_split, data_dir)
    features = info.features
    for key, arg in ((image_key, "image_key"), (label_key, "label_key")):
        if key not in features:
            raise ValueError(
                f"load_tfds: {arg}={key!r} is not a feature of {full_name!r}; "
                f"features are {sorted(features.keys())}"
            )
    num_classes = getattr(features[label_key], "num_classes", None)
    x_train, y_train = _read_all(train_source, image_key, label_key, "train")
    x_test, y_test = _read_all(test_source, image_key, label_key, test_split)
    spec = name if config is None else f"{name}:{config}"
    return from_arrays(
        x_train, y_train, x_test, y_test, num_classes=num_classes, name=f"tfds:{spec}"
    )

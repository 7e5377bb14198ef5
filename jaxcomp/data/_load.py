"""``load(spec)``: one entry point for embedded, TFDS and ``.npz`` datasets.

A spec is a string, so that scripts, configs and the command line can name a dataset:

- an embedded name (``"mnist5k"``, ``"digits"``): real data shipped inside installed packages;
- ``"tfds:NAME"`` or ``"tfds:NAME:CONFIG"``: a TFDS dataset prepared on disk (never downloaded);
- a path ending in ``.npz``: arrays ``x_train, y_train, x_test, y_test`` (and optionally
  ``num_classes``), read with ``allow_pickle=False``: nothing is ever unpickled.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from jaxcomp.data._dataset import Dataset
from jaxcomp.data._dataset import from_arrays
from jaxcomp.data._embedded import embedded_names
from jaxcomp.data._embedded import load_embedded
from jaxcomp.data._tfds import load_tfds
from jaxcomp.errors import DatasetNotFoundError

__all__ = [
    "load",
    "load_npz",
]

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | os.PathLike[str]) -> Dataset:
    """Reads a dataset from a ``.npz`` file, without pickle.

    The file holds the arrays ``x_train, y_train, x_test, y_test`` and optionally a scalar
    ``num_classes`` (else the largest label plus one). ``uint8`` inputs are scaled to ``[0, 1]``
    and ``(N, H, W)`` inputs get a channel axis, as in :func:`jaxcomp.data.from_arrays`.

    Args:
        path: the file's path.

    Returns:
        The :class:`Dataset`, named after the file (without ``.npz``).

    Raises:
        DatasetNotFoundError: if the file does not exist.
        ValueError: if the file is not a readable ``.npz``, lacks one of the keys, holds object
            arrays (which would need pickle) or arrays that :func:`from_arrays` rejects.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"load_npz: no such file {path!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"load_npz: {path!r} is not a readable .npz file: {e}") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"load_npz: {path!r} holds a single array, not an .npz archive")
    arrays: dict[str, np.ndarray] = {}
    with archive:
        missing = [k for k in _NPZ_KEYS if k not in archive.files]
        if missing:
            raise ValueError(
                f"load_npz: {path!r} lacks the keys {missing}; it must hold "
                f"{list(_NPZ_KEYS)} (and optionally 'num_classes'), it holds {archive.files}"
            )
        for key in (*_NPZ_KEYS, "num_classes"):
            if key not in archive.files:
                continue
            try:
                arrays[key] = archive[key]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                # object arrays need pickle, which is never allowed; or a corrupt member
                raise ValueError(
                    f"load_npz: key {key!r} of {path!r} cannot be read without pickle "
                    f"(object arrays are refused) or is corrupt: {e}"
                ) from e
    num_classes = None
    if "num_classes" in arrays:
        nc = arrays["num_classes"]
        if nc.shape != () or nc.dtype.kind not in "iu":
            raise ValueError(
                f"load_npz: key 'num_classes' of {path!r} must be an integer scalar, "
                f"got dtype {nc.dtype} and shape {nc.shape}"
            )
        num_classes = int(nc)
    name = os.path.splitext(os.path.basename(path))[0]
    try:
        return from_arrays(
            arrays["x_train"],
            arrays["y_train"],
            arrays["x_test"],
            arrays["y_test"],
            num_classes=num_classes,
            name=name,
        )
    except ValueError as e:
        raise ValueError(
            f"load_npz: malformed arrays in {path!r} (keys {list(_NPZ_KEYS)}): {e}"
        ) from e


def load(spec: str, *, data_dir: str | None = None) -> Dataset:
    """Loads a dataset named by a string spec; never downloads.

    Args:
        spec: an embedded name (see :func:`jaxcomp.data.embedded_names`: ``"mnist5k"``,
            ``"digits"``), ``"tfds:NAME"`` or ``"tfds:NAME:CONFIG"`` for a TFDS dataset prepared
            under ``data_dir``, or a path ending in ``.npz``.
        data_dir: the TFDS data directory (``tfds:`` specs only); ``None`` uses TFDS's default.

    Returns:
        The :class:`Dataset`.

    Raises:
        DatasetNotFoundError: if a TFDS dataset is not prepared on disk or an ``.npz`` file does
            not exist; the message says how to prepare the data.
        ValueError: if ``spec`` is none of the accepted forms, or the data is malformed.

    Examples:
        >>> ds = load("mnist5k")
        >>> ds.num_train, ds.num_test, ds.input_shape
        (4000, 1000, (28, 28, 1))
    """
    if not isinstance(spec, str):
        raise ValueError(f"load: spec must be a str, got {type(spec).__name__}")
    if spec in embedded_names():
        return load_embedded(spec)
    if spec.startswith("tfds:"):
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not all(parts[1:]):
            raise ValueError(
                f"load: a TFDS spec is 'tfds:NAME' or 'tfds:NAME:CONFIG', got {spec!r}"
            )
        config = parts[2] if len(parts) == 3 else None
        return load_tfds(parts[1], config=config, data_dir=data_dir)
    if spec.endswith(".npz"):
        return load_npz(spec)
    raise ValueError(
        f"load: spec must be an embedded name {embedded_names()}, 'tfds:NAME', "
        f"'tfds:NAME:CONFIG' or a path ending in '.npz', got {spec!r}"
    )

"""Datasets: embedded real data, TFDS data sources, ``.npz`` files, batching and augmentation.

jaxcomp never downloads. ``load("mnist5k")`` and ``load("digits")`` read real images shipped
inside installed packages; ``load("tfds:NAME", data_dir=...)`` reads a TFDS dataset prepared on
disk; ``load("path.npz")`` reads arrays without pickle.
"""

from jaxcomp.data._augment import pad_to
from jaxcomp.data._augment import random_crop_flip
from jaxcomp.data._batching import batch_at
from jaxcomp.data._batching import batches
from jaxcomp.data._batching import epoch_order
from jaxcomp.data._batching import num_batches
from jaxcomp.data._dataset import Dataset
from jaxcomp.data._dataset import from_arrays
from jaxcomp.data._embedded import embedded_names
from jaxcomp.data._embedded import load_digits
from jaxcomp.data._embedded import load_mnist5k
from jaxcomp.data._load import load
from jaxcomp.data._load import load_npz
from jaxcomp.data._normalize import channel_stats
from jaxcomp.data._normalize import normalize
from jaxcomp.data._tfds import load_tfds

__all__ = [
    "Dataset",
    "batch_at",
    "batches",
    "channel_stats",
    "embedded_names",
    "epoch_order",
    "from_arrays",
    "load",
    "load_digits",
    "load_mnist5k",
    "load_npz",
    "load_tfds",
    "normalize",
    "num_batches",
    "pad_to",
    "random_crop_flip",
]

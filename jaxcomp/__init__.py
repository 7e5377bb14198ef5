"""jaxcomp: neural network compression and acceleration for JAX and Flax.

Pure-function transforms over parameter pytrees (masks, fake quantization with straight-through
estimators, factorized rewrites, distillation losses) and a small training-loop library that
drives them on CPU, GPU or TPU. See ``README.md`` and ``docs/``.
"""

from jaxcomp import adapt
from jaxcomp import analysis
from jaxcomp import core
from jaxcomp import data
from jaxcomp import distill
from jaxcomp import encode
from jaxcomp import errors
from jaxcomp import lowrank
from jaxcomp import models
from jaxcomp import prune
from jaxcomp import quant
from jaxcomp import recipes
from jaxcomp import schedules
from jaxcomp import select
from jaxcomp import structured
from jaxcomp import train
from jaxcomp.core import Transform
from jaxcomp.core import chain
from jaxcomp.core import identity
from jaxcomp.core import is_compressed
from jaxcomp.core import masked
from jaxcomp.core import partition
from jaxcomp.core import to_dense

__version__ = "0.1.0"

__all__ = [
    "Transform",
    "__version__",
    "adapt",
    "analysis",
    "chain",
    "core",
    "data",
    "distill",
    "encode",
    "errors",
    "identity",
    "is_compressed",
    "lowrank",
    "masked",
    "models",
    "partition",
    "prune",
    "quant",
    "recipes",
    "schedules",
    "select",
    "structured",
    "to_dense",
    "train",
]

"""The training library: state, jitted steps, the loop, checkpoints, data-parallel sharding."""

from jaxcomp.train._checkpoint import Checkpointer
from jaxcomp.train._loop import FitResult
from jaxcomp.train._loop import evaluate
from jaxcomp.train._loop import fit
from jaxcomp.train._sharding import data_mesh
from jaxcomp.train._sharding import replicate
from jaxcomp.train._sharding import shard_batch
from jaxcomp.train._state import TrainState
from jaxcomp.train._step import Objective
from jaxcomp.train._step import cross_entropy
from jaxcomp.train._step import forward
from jaxcomp.train._step import make_eval_step
from jaxcomp.train._step import make_train_step
from jaxcomp.train._step import supervised_objective

__all__ = [
    "Checkpointer",
    "FitResult",
    "Objective",
    "TrainState",
    "cross_entropy",
    "data_mesh",
    "evaluate",
    "fit",
    "forward",
    "make_eval_step",
    "make_train_step",
    "replicate",
    "shard_batch",
    "supervised_objective",
]

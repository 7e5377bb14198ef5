"""The transform protocol, its combinators, the compressed-node protocol, and tree utilities."""

from jaxcomp.core._nodes import is_compressed
from jaxcomp.core._nodes import nbytes
from jaxcomp.core._nodes import to_dense
from jaxcomp.core._transform import ChainState
from jaxcomp.core._transform import EmptyState
from jaxcomp.core._transform import PartitionState
from jaxcomp.core._transform import SplitPartitionState
from jaxcomp.core._transform import Transform
from jaxcomp.core._transform import chain
from jaxcomp.core._transform import identity
from jaxcomp.core._transform import masked
from jaxcomp.core._transform import own_apply
from jaxcomp.core._transform import partition
from jaxcomp.core._tree import MaskedNode
from jaxcomp.core._tree import check_same_structure
from jaxcomp.core._tree import is_array
from jaxcomp.core._tree import leaf_paths
from jaxcomp.core._tree import path_str
from jaxcomp.core._tree import tree_merge
from jaxcomp.core._tree import tree_select

__all__ = [
    "ChainState",
    "EmptyState",
    "MaskedNode",
    "PartitionState",
    "SplitPartitionState",
    "Transform",
    "chain",
    "check_same_structure",
    "identity",
    "is_array",
    "is_compressed",
    "leaf_paths",
    "masked",
    "nbytes",
    "own_apply",
    "partition",
    "path_str",
    "to_dense",
    "tree_merge",
    "tree_select",
]

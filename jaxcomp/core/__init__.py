"""The transform protocol, its combinators, and tree utilities."""

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
    "leaf_paths",
    "masked",
    "own_apply",
    "partition",
    "path_str",
    "tree_merge",
    "tree_select",
]

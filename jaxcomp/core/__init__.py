"""The transform protocol, its combinators, the compressed-node protocol, and tree utilities."""

from jaxcomp.core import _checks as checks
from jaxcomp.core._map import Leaf
from jaxcomp.core._map import leaf_key
from jaxcomp.core._map import leaf_values
from jaxcomp.core._map import leaves
from jaxcomp.core._map import map_leaves
from jaxcomp.core._map import map_state
from jaxcomp.core._map import placed
from jaxcomp.core._map import rebuild
from jaxcomp.core._map import select
from jaxcomp.core._map import selected
from jaxcomp.core._nodes import is_compressed
from jaxcomp.core._nodes import nbytes
from jaxcomp.core._nodes import to_dense
from jaxcomp.core._transform import ChainState
from jaxcomp.core._transform import EmptyState
from jaxcomp.core._transform import PartitionState
from jaxcomp.core._transform import Transform
from jaxcomp.core._transform import chain
from jaxcomp.core._transform import identity
from jaxcomp.core._transform import masked
from jaxcomp.core._transform import own_apply
from jaxcomp.core._transform import partition
from jaxcomp.core._tree import MaskedNode
from jaxcomp.core._tree import check_same_structure
from jaxcomp.core._tree import is_array
from jaxcomp.core._tree import is_masked
from jaxcomp.core._tree import leaf_paths
from jaxcomp.core._tree import path_str
from jaxcomp.core._tree import tree_select

__all__ = [
    "ChainState",
    "EmptyState",
    "Leaf",
    "MaskedNode",
    "PartitionState",
    "Transform",
    "chain",
    "check_same_structure",
    "checks",
    "identity",
    "is_array",
    "is_compressed",
    "is_masked",
    "leaf_key",
    "leaf_paths",
    "leaf_values",
    "leaves",
    "map_leaves",
    "map_state",
    "masked",
    "nbytes",
    "own_apply",
    "partition",
    "path_str",
    "placed",
    "rebuild",
    "select",
    "selected",
    "to_dense",
    "tree_select",
]

"""Tree and path utilities shared by every transform."""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import jax
import numpy as np

from jaxcomp.errors import StructureMismatchError

__all__ = [
    "MaskedNode",
    "check_same_structure",
    "is_array",
    "is_masked",
    "leaf_paths",
    "path_str",
    "tree_select",
]


class MaskedNode(NamedTuple):
    """A placeholder for a leaf that a transform does not see.

    It is an empty pytree node, so ``jax.tree.map`` passes over it. ``partition`` and ``masked``
    hand inner transforms trees in which the leaves of other labels are ``MaskedNode()``. It is an
    explicit node, never ``None``.
    """


def is_masked(x: Any) -> bool:
    """True for the :class:`MaskedNode` placeholder of a leaf a transform does not see."""
    return isinstance(x, MaskedNode)


def _key_name(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_str(path: tuple[Any, ...]) -> str:
    """Joins a jax key path with ``/``: ``("params", "Dense_0", "kernel")`` -> ``Dense_0/kernel``.

    A leading ``params`` collection name is kept; a trailing ``.value`` attribute (the array inside
    an ``nnx.Variable``) is dropped, so ``nnx.State`` and linen dicts give the same names.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> tree = {"Dense_0": {"kernel": jnp.ones((2, 2))}}
        >>> [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
        ['Dense_0/kernel']
    """
    keys = list(path)
    if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
        keys = keys[:-1]
    return "/".join(_key_name(k) for k in keys)


def leaf_paths(tree: Any) -> list[str]:
    """The ``/``-joined path of every leaf of ``tree``, in flattening order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def is_array(x: Any) -> bool:
    """True for jax and numpy arrays (leaves that transforms may compress)."""
    return isinstance(x, jax.Array | np.ndarray)


def check_same_structure(a: Any, b: Any, *, what: str = "trees") -> None:
    """Raises :class:`StructureMismatchError` naming the paths where ``a`` and ``b`` differ."""
    sa, sb = jax.tree.structure(a), jax.tree.structure(b)
    if sa == sb:
        return
    pa = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(a)}
    pb = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(b)}
    only_a, only_b = sorted(pa - pb)[:5], sorted(pb - pa)[:5]
    raise StructureMismatchError(
        f"{what} differ in structure: only in the first {only_a}, only in the second {only_b}"
        if (only_a or only_b)
        else f"{what} differ in structure: {sa} vs {sb}"
    )


def tree_select(tree: Any, mask: Any) -> Any:
    """Keeps the leaves of ``tree`` where the boolean pytree ``mask`` is True, others MaskedNode."""
    return jax.tree.map(lambda m, x: x if m else MaskedNode(), mask, tree)

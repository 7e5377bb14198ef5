"""The one protocol of compressed nodes.

A *compressed node* is what a structure-changing transform's ``finalize`` (or ``cparams``) puts
where a float array was: integer codes with scales, a codebook with indices, low-rank factors, a
physically smaller layer. Whatever its fields, every node

* is a registered pytree (its arrays are children, its static layout auxiliary data), so it passes
  through ``jax.jit`` and ``jax.tree.map``;
* has ``to_dense()``: the float array it stands for (what the unchanged model computes with);
* has ``nbytes``: the bytes its arrays take as stored (codes at their integer size, factors at
  their float size), before any entropy coding.

That is the whole protocol: :func:`is_compressed`, :func:`to_dense` and :func:`nbytes` work on any
class that has both, inside jaxcomp or not, and so do the apply adapters and
``jaxcomp.analysis.size_bytes``. Saving such a node in a ``.jcz`` artifact needs one explicit call,
:func:`jaxcomp.encode.register_node`, so that loading never imports a class named in a file.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from typing import NamedTuple
    >>> class Scaled(NamedTuple):  # a node of one's own: a kernel stored as w / s and s
    ...     w: jax.Array
    ...     s: jax.Array
    ...     def to_dense(self):
    ...         return self.w * self.s
    ...     @property
    ...     def nbytes(self):
    ...         return self.w.nbytes + self.s.nbytes
    >>> tree = {"kernel": Scaled(jnp.ones((2, 2)), jnp.float32(3.0)), "bias": jnp.zeros(2)}
    >>> is_compressed(tree["kernel"]), is_compressed(tree["bias"])
    (True, False)
    >>> to_dense(tree)["kernel"].tolist(), nbytes(tree)
    ([[3.0, 3.0], [3.0, 3.0]], 28)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

__all__ = ["children", "is_compressed", "nbytes", "to_dense"]


def is_compressed(x: Any) -> bool:
    """True for a compressed node: an object whose class has ``to_dense()`` and ``nbytes``.

    Arrays are never nodes (a numpy array has ``nbytes`` but no ``to_dense``), nor are classes.
    """
    if isinstance(x, type) or isinstance(x, jax.Array | np.ndarray):
        return False
    cls = type(x)
    return callable(getattr(cls, "to_dense", None)) and hasattr(cls, "nbytes")


def to_dense(tree: Any) -> Any:
    """Replaces every compressed node of ``tree`` by its float array; other leaves are kept.

    Args:
      tree: any pytree, such as a transform's ``finalize`` result.

    Returns:
      The tree with each node replaced by ``node.to_dense()``. A node whose children are nodes
      themselves (low-rank factors, each quantized) has its children made dense first.
    """
    return jax.tree.map(_dense, tree, is_leaf=is_compressed)


def children(node: Any) -> tuple[list[Any], Any]:
    """The direct children of a node, arrays or nodes themselves, and the treedef to rebuild it.

    ``treedef.unflatten([to_dense(k) for k in kids])`` is the node with dense children, which
    its own methods (``to_dense``, a factored kernel's ``matmul``) can compute with.
    """
    return jax.tree_util.tree_flatten(node, is_leaf=lambda y: y is not node and is_compressed(y))


def _dense(x: Any) -> Any:
    """A node made dense, its own compressed children (quantized factors) first."""
    if not is_compressed(x):
        return x
    kids, treedef = children(x)
    return treedef.unflatten([_dense(k) for k in kids]).to_dense()


def _array_bytes(x: Any) -> int:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return math.prod(x.shape) * np.dtype(x.dtype).itemsize
    return 0


def nbytes(tree: Any) -> int:
    """Bytes of a finalized tree: nodes at their own ``nbytes``, arrays at their dense size.

    Codes count at their integer type's size (int8: one byte per weight); no bit packing or entropy
    coding (that is ``jaxcomp.encode``'s work).
    """
    total = 0
    for x in jax.tree.leaves(tree, is_leaf=is_compressed):
        total += int(x.nbytes) if is_compressed(x) else _array_bytes(x)
    return total

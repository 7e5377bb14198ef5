"""Counting parameters, nonzeros and storage bits of a params pytree.

These are the size measures that compression results are reported in: the number of parameters,
the number of nonzero parameters left after pruning, the fraction of zeros, and the storage at a
bit width (Yi et al., "Neural Network Compression and Acceleration: An Overview", 2018; Han et al.,
"Deep Compression", 2016, arXiv:1510.00149, report compression rates in exactly these terms).

They work on any pytree of arrays: a ``flax.linen`` params dict, the ``nnx.State`` of
``nnx.split(model)``, or a tree in which ``jaxcomp.core.MaskedNode`` placeholders stand for leaves
that are not there (an empty node, so it has no leaves and counts nothing). Shape-only leaves such
as ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape``) are accepted where no values are needed.

The functions run on the host and return Python numbers; they are for reports, not for use inside a
jitted step (the sparsity of a traced tree is ``jnp.mean(x == 0)``, written where it is needed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxcomp.analysis._flops import flops
from jaxcomp.core._nodes import is_compressed
from jaxcomp.core._tree import path_str
from jaxcomp.select._select import resolve_rules

__all__ = [
    "nonzero_count",
    "param_count",
    "per_leaf",
    "size_bytes",
    "sparsity",
    "summary",
]


def _has_shape(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _leaves_with_paths(params: Any) -> list[tuple[str, Any]]:
    """The ``(path, leaf)`` pairs of the leaves that have a shape (arrays, ShapeDtypeStructs)."""
    return [
        (path_str(p), x) for p, x in jax.tree_util.tree_leaves_with_path(params) if _has_shape(x)
    ]


def _size(x: Any) -> int:
    return math.prod(int(d) for d in x.shape)


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _nonzeros(path: str, x: Any) -> int:
    if isinstance(x, jax.core.Tracer):
        raise ValueError(
            f"nonzero_count: leaf {path!r} is a traced value; the counting functions run on the "
            "host, call them outside jax.jit (inside a step use jnp.count_nonzero)"
        )
    if isinstance(x, jax.ShapeDtypeStruct):
        raise ValueError(
            f"nonzero_count: leaf {path!r} is a jax.ShapeDtypeStruct with no values; "
            "pass concrete arrays"
        )
    if _is_key(x):
        return _size(x)  # a PRNG key is never "zero"; each key counts as one element
    return int(np.count_nonzero(np.asarray(x)))


def param_count(params: Any) -> int:
    """The total number of elements of the array leaves of ``params``.

    Args:
      params: a pytree of arrays (linen params, ``nnx.State``, any nested container). Leaves
        without a shape are ignored; ``MaskedNode`` placeholders have no leaves.

    Returns:
      The number of elements, a Python int.

    Examples:
        >>> import jax.numpy as jnp
        >>> param_count({"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}})
        16
    """
    return sum(_size(x) for _, x in _leaves_with_paths(params))


def nonzero_count(params: Any) -> int:
    """The exact number of nonzero elements of the array leaves of ``params``.

    Counted on the host with numpy. A PRNG key leaf counts as nonzero.

    Args:
      params: a pytree of concrete arrays.

    Returns:
      The number of nonzero elements, a Python int.

    Raises:
      ValueError: a leaf is traced (called under ``jax.jit``) or holds no values.

    Examples:
        >>> import jax.numpy as jnp
        >>> nonzero_count({"w": jnp.array([0.0, 1.0, 0.0, 2.0])})
        2
    """
    return sum(_nonzeros(p, x) for p, x in _leaves_with_paths(params))


def sparsity(params: Any) -> float:
    """The fraction of elements of ``params`` that are exactly zero.

    Args:
      params: a pytree of concrete arrays.

    Returns:
      ``1 - nonzero_count(params) / param_count(params)``, in ``[0, 1]``.

    Raises:
      ValueError: ``params`` has no array leaves, or a leaf holds no values.
    """
    total = param_count(params)
    if total == 0:
        raise ValueError("sparsity: params has no array elements; sparsity is undefined")
    return 1.0 - nonzero_count(params) / total


def _check_bits(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"size_bytes: {what} must be an int >= 1, got {value!r}")
    return int(value)


def size_bytes(params: Any, *, bits: int | list[tuple[str, int]] = 32) -> float:
    """The dense storage of ``params`` in bytes when each element takes ``bits`` bits.

    Every element is counted, zero or not: this is the size of the dense tensors at a bit width.
    A compressed node (codes with scales, a codebook, factors: anything with ``to_dense()`` and
    ``nbytes``, see :mod:`jaxcomp.core`) counts at its own ``nbytes``, whatever ``bits`` says. The
    size of a sparse or entropy-coded encoding is accounted for in ``jaxcomp.encode``.

    Args:
      params: a pytree of arrays (or ``jax.ShapeDtypeStruct`` leaves) and compressed nodes.
      bits: the bit width of every leaf (an int >= 1), or ordered ``(regex, bits)`` rules over the
        ``/``-joined leaf paths, first match wins (``re.search``); leaves no rule covers take 32.

    Returns:
      The number of bytes, ``sum(size * bits) / 8`` (a float, since widths need not be whole
      bytes).

    Raises:
      ValueError: a bit width is not an int >= 1.
      SelectionError: a rule is not a valid regex or matches no leaf.

    Examples:
        >>> import jax.numpy as jnp
        >>> tree = {"Dense_0": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)}}
        >>> size_bytes(tree, bits=[("kernel", 8)])
        32.0
    """
    leaves = jax.tree_util.tree_leaves_with_path(params, is_leaf=is_compressed)
    if isinstance(bits, list | tuple):
        per_leaf_bits = resolve_rules(bits, params, default=32, what="bits")
        treedef = jax.tree.structure(params, is_leaf=is_compressed)
        per_leaf_bits = treedef.flatten_up_to(per_leaf_bits)
        pairs = [(path_str(p), x, b) for (p, x), b in zip(leaves, per_leaf_bits, strict=True)]
    else:
        b = _check_bits(bits, "bits")
        pairs = [(path_str(p), x, b) for p, x in leaves]
    total_bits = 0
    for path, x, b in pairs:
        if is_compressed(x):
            total_bits += 8 * int(x.nbytes)
        elif _has_shape(x):
            total_bits += _size(x) * _check_bits(b, f"the bits of leaf {path!r}")
    return total_bits / 8.0


def per_leaf(params: Any) -> list[dict[str, Any]]:
    """One row per array leaf: its path, shape, dtype, size and number of nonzeros.

    Args:
      params: a pytree of concrete arrays.

    Returns:
      A list of dicts with keys ``path`` (``/``-joined, as ``jaxcomp.core.path_str`` writes it),
      ``shape`` (a tuple), ``dtype`` (a string), ``size`` and ``nonzeros``, in flattening order.

    Raises:
      ValueError: a leaf is traced or holds no values.
    """
    return [
        {
            "path": p,
            "shape": tuple(int(d) for d in x.shape),
            "dtype": str(x.dtype),
            "size": _size(x),
            "nonzeros": _nonzeros(p, x),
        }
        for p, x in _leaves_with_paths(params)
    ]


def summary(
    model_apply: Callable[[Any, Any], Any], variables: Any, example_input: Any
) -> dict[str, Any]:
    """The size and cost of a model in one dict, for reports.

    Args:
      model_apply: ``(variables, x) -> output``, such as ``model.apply`` of a linen module.
      variables: what ``model_apply`` takes first. If it is a mapping with a ``"params"`` entry
        (linen variables), the counts are of ``variables["params"]``; otherwise of all of it.
      example_input: one input batch (an array, a pytree, or ``jax.ShapeDtypeStruct`` values).

    Returns:
      A dict with ``params``, ``nonzeros``, ``sparsity``, ``bytes_fp32`` (dense storage at 32
      bits) and ``flops`` (the multiply-accumulates of one call, see :func:`flops`).

    Raises:
      ValueError: the params have no array elements or hold no values.
    """
    counted = (
        variables["params"]
        if isinstance(variables, Mapping) and "params" in variables
        else variables
    )
    return {
        "params": param_count(counted),
        "nonzeros": nonzero_count(counted),
        "sparsity": sparsity(counted),
        "bytes_fp32": size_bytes(counted, bits=32),
        "flops": flops(model_apply, variables, example_input),
    }

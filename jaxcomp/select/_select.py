"""Leaf selection: which leaves of a params pytree a transform acts on.

Every transform takes ``where=``, which may be

* ``None``: the transform's default (for most, :func:`kernels`);
* a predicate ``(path, leaf) -> bool`` over ``/``-joined paths, such as a :class:`Selector`
  (``kernels() & ~by_regex("Dense_2")``);
* a pytree of booleans with the structure of the params;
* a list of ordered ``(regex, value)`` rules over ``/``-joined paths, first match wins
  (``re.search``).
  A rule that matches no leaf is an error, and so is a leaf that no rule covers when no default is
  given, so that a typo in a layer name never silently compresses nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.core._checks import is_rule_list as _is_rule_list
from jaxcomp.core._map import REQUIRED
from jaxcomp.core._map import leaf_values
from jaxcomp.core._tree import is_array
from jaxcomp.core._tree import path_str
from jaxcomp.errors import SelectionError

__all__ = [
    "Selector",
    "all_arrays",
    "by_regex",
    "floating",
    "kernels",
    "min_size",
    "resolve",
    "resolve_rules",
]


class Selector:
    """A composable predicate over ``(path, leaf)``; combine with ``&``, ``|`` and ``~``.

    Examples:
        >>> import jax.numpy as jnp
        >>> sel = kernels() & ~by_regex("Dense_1")
        >>> sel("Dense_0/kernel", jnp.ones((3, 4))), sel("Dense_1/kernel", jnp.ones((3, 4)))
        (True, False)
    """

    def __init__(self, fn: Callable[[str, Any], bool], description: str):
        self._fn = fn
        self.description = description

    def __call__(self, path: str, leaf: Any) -> bool:
        return bool(self._fn(path, leaf))

    def __and__(self, other: Selector) -> Selector:
        return Selector(lambda p, x: self(p, x) and other(p, x), f"({self} & {other})")

    def __or__(self, other: Selector) -> Selector:
        return Selector(lambda p, x: self(p, x) or other(p, x), f"({self} | {other})")

    def __invert__(self) -> Selector:
        return Selector(lambda p, x: not self(p, x), f"~{self}")

    def __repr__(self) -> str:
        return self.description


def _is_float(leaf: Any) -> bool:
    return is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating)


def all_arrays() -> Selector:
    """Every array leaf."""
    return Selector(lambda p, x: is_array(x), "all_arrays()")


def floating() -> Selector:
    """Every floating-point array leaf."""
    return Selector(lambda p, x: _is_float(x), "floating()")


def kernels() -> Selector:
    """Weight matrices, convolution kernels and their factors.

    Float leaves with ndim >= 2 named ``kernel`` or under a ``kernel`` (the factors that a
    low-rank rewrite puts at the kernel's path, ``Dense_0/kernel/u``), so that "factorize, then
    prune or quantize the factors" needs no regex. Integer codes, scales and biases are not
    selected.

    Examples:
        >>> import jax.numpy as jnp
        >>> sel = kernels()
        >>> sel("Dense_0/kernel", jnp.ones((3, 4))), sel("Dense_0/kernel/u", jnp.ones((3, 2)))
        (True, True)
        >>> sel("Dense_0/bias", jnp.ones((4,))), sel("Dense_0/kernel/scale", jnp.ones((4,)))
        (False, False)
    """
    return Selector(
        lambda p, x: _is_float(x) and x.ndim >= 2 and "kernel" in p.split("/"),
        "kernels()",
    )


def by_regex(pattern: str) -> Selector:
    """Leaves whose ``/``-joined path matches ``pattern`` (``re.search``)."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise SelectionError(f"by_regex: pattern {pattern!r} is not a valid regex: {e}") from e
    return Selector(lambda p, x: is_array(x) and rx.search(p) is not None, f"by_regex({pattern!r})")


def min_size(n: int) -> Selector:
    """Array leaves with at least ``n`` elements."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"min_size: n must be a non-negative int, got {n!r}")
    return Selector(lambda p, x: is_array(x) and x.size >= n, f"min_size({n})")


def _paths_and_leaves(params: Any) -> tuple[list[str], list[Any], Any]:
    pl, treedef = jax.tree_util.tree_flatten_with_path(params)
    return [path_str(p) for p, _ in pl], [x for _, x in pl], treedef


def resolve_rules(
    rules: Sequence[tuple[str, Any]],
    params: Any,
    *,
    default: Any = REQUIRED,
    what: str = "where",
) -> Any:
    """Evaluates ordered ``(regex, value)`` rules over the leaves of ``params``; first match wins.

    Args:
      rules: ``[(regex, value), ...]``; a regex is matched with ``re.search`` against paths.
      params: the pytree the rules describe.
      default: the value of a leaf no rule covers; without it, such a leaf is an error.
      what: the argument name used in error messages.

    Returns:
      A pytree with the structure of ``params`` holding each leaf's value.

    Raises:
      SelectionError: a rule matches no leaf, a regex is invalid, or a leaf is uncovered.
    """
    if not _is_rule_list(rules):
        raise SelectionError(f"{what}: expected a list of (regex, value) pairs, got {rules!r}")
    paths, _, treedef = _paths_and_leaves(params)
    values = leaf_values(list(rules), paths, fn=what, name="(regex, value)", default=default)
    return jax.tree.unflatten(treedef, values)


def resolve(
    where: Any, params: Any, *, default: Selector | None = None, what: str = "where"
) -> Any:
    """Turns any form of ``where=`` into a pytree of Python booleans shaped like ``params``.

    Args:
      where: ``None``, a predicate over ``(path, leaf)``, a boolean pytree, or a rule list.
      params: the pytree to select from.
      default: the selector used when ``where`` is None (:func:`kernels` if not given).
      what: the argument name used in error messages.

    Returns:
      A pytree of bools with the structure of ``params``. Non-array leaves are never selected.

    Raises:
      SelectionError: the selection is malformed or selects no leaf.
    """
    paths, leaves, treedef = _paths_and_leaves(params)
    if where is None:
        where = default if default is not None else kernels()
    if _is_rule_list(where):
        mask = resolve_rules(where, params, default=False, what=what)
        flags = jax.tree.leaves(mask)
        if not all(isinstance(f, bool) for f in flags):
            raise SelectionError(f"{what}: selection rules must map to True or False")
    elif callable(where):
        flags = [bool(where(p, x)) and is_array(x) for p, x in zip(paths, leaves, strict=True)]
    else:
        try:
            flags = treedef.flatten_up_to(where)
        except (ValueError, TypeError) as e:
            raise SelectionError(
                f"{what}: a boolean pytree must have the structure of the params ({e})"
            ) from e
        if not all(isinstance(f, bool | jnp.bool_) for f in flags):
            raise SelectionError(f"{what}: a selection pytree must hold Python booleans")
        flags = [bool(f) for f in flags]
    flags = [f and is_array(x) for f, x in zip(flags, leaves, strict=True)]
    if not any(flags):
        raise SelectionError(f"{what}={where!r} selects no leaf; the paths are {paths}")
    return jax.tree.unflatten(treedef, flags)

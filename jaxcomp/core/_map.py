"""The one per-leaf mapper: select the leaves a transform acts on once, then map over them.

A transform's ``init`` calls :func:`select` once. It resolves ``where=`` (any form that
:func:`jaxcomp.select.resolve` accepts) and the per-leaf arguments (a value for every leaf, a
``{path: value}`` dict or ``[(regex, value)]`` rules, like ``sparsity``, ``bits`` and ``rank``), and
returns a *spec*: a tree with the params' structure holding a :class:`Leaf` at each selected leaf
and a :class:`~jaxcomp.core.MaskedNode` elsewhere. A ``Leaf`` has no arrays (its path, its index
among the selected leaves and its per-leaf values are static), so a spec kept in a transform's
state is part of the state's tree structure: it is hashable, passes through ``jit``, ``chain`` and
``partition`` untraced, and costs nothing at run time.

``apply``, ``update`` and ``finalize`` then call :func:`map_leaves` (replace each selected leaf of
the ``cparams`` by ``fn(leaf, x, ...)``, the other leaves unchanged) or :func:`map_state` (a
state tree: ``fn(leaf, ...)`` at the selected leaves, ``MaskedNode()`` elsewhere). A replacement
may be a subtree (a compressed node, low-rank factors, ``{"w": w, "scale": s}``): it stays at the
leaf's own path, so ``Dense_0/kernel`` becomes ``Dense_0/kernel/u``. Randomness is per leaf:
:func:`leaf_key` folds the leaf's index into one ``key``.

A state tree with ``MaskedNode()`` at the unselected leaves and arrays at the selected ones (a
pruner's masks) is a spec too: its ``Leaf`` s are made from its paths.

Examples:
    >>> import jax.numpy as jnp
    >>> params = {"Dense_0": {"bias": jnp.zeros(2), "kernel": jnp.ones((3, 2))}}
    >>> spec = select(params, None, fn="demo", bits=[("Dense_0", 4)])
    >>> [(leaf.path, leaf.index, leaf["bits"]) for leaf in leaves(spec)]
    [('Dense_0/kernel', 0, 4)]
    >>> out = map_leaves(lambda leaf, w: w * leaf["bits"], spec, params)
    >>> out["Dense_0"]["kernel"].tolist()[0], out["Dense_0"]["bias"].tolist()
    ([4.0, 4.0], [0.0, 0.0])
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import jax

from jaxcomp.core._checks import is_rule_list
from jaxcomp.core._tree import MaskedNode
from jaxcomp.core._tree import is_array
from jaxcomp.core._tree import is_masked
from jaxcomp.core._tree import path_str
from jaxcomp.errors import SelectionError

__all__ = [
    "Leaf",
    "by_path",
    "is_masked",
    "leaf_key",
    "leaf_values",
    "leaves",
    "map_leaves",
    "map_state",
    "placed",
    "rebuild",
    "select",
    "selected",
]


@dataclasses.dataclass(frozen=True)
class Leaf:
    """A selected leaf in a spec: a pytree node without arrays.

    Attributes:
      path: the leaf's ``/``-joined params path.
      index: its position among the selected leaves, in flattening order (fold it into keys).
      values: ``((name, value), ...)``, its per-leaf arguments; ``leaf["bits"]`` reads one.
    """

    path: str
    index: int
    values: tuple[tuple[str, Any], ...] = ()

    def __getitem__(self, name: str) -> Any:
        return dict(self.values)[name]


jax.tree_util.register_dataclass(Leaf, data_fields=[], meta_fields=["path", "index", "values"])


def _is_node(x: Any) -> bool:
    return isinstance(x, Leaf | MaskedNode)


REQUIRED = object()
"""The ``default`` of :func:`leaf_values` that makes a leaf no rule covers an error."""


def leaf_values(
    value: Any, paths: list[str], *, fn: str, name: str, default: Any = REQUIRED
) -> list[Any]:
    """The value of each of ``paths`` under a per-leaf argument.

    Args:
      value: one value for every leaf; a ``{path: value}`` dict, which must name exactly
        ``paths``; or ordered ``[(regex, value)]`` rules (``re.search``, first match wins), each
        of which must match one of ``paths`` and which together must cover them all (unless a
        ``default`` is given for the leaves no rule covers).
      paths: the selected leaves' paths.
      fn, name: the factory and the argument, for messages.

    Raises:
      SelectionError: a dict or rule list that does not fit ``paths`` (the message names them).
    """
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(paths))
        missing = [p for p in paths if p not in value]
        if unknown or missing:
            raise SelectionError(
                f"{fn}: the {name} dict must name exactly the selected leaves {paths}; "
                f"unknown {unknown}, missing {missing}"
            )
        return [value[p] for p in paths]
    if not is_rule_list(value):
        return [value] * len(paths)
    for rx, _ in value:
        try:
            re.compile(rx)
        except re.error as e:
            raise SelectionError(f"{fn}: {name} rule {rx!r} is not a valid regex: {e}") from e
    out, used, uncovered = [], set(), []
    for p in paths:
        hit = next((i for i, (rx, _) in enumerate(value) if re.search(rx, p)), None)
        if hit is None and default is REQUIRED:
            uncovered.append(p)
        used.add(hit)
        out.append(default if hit is None else value[hit][1])
    unused = [rx for i, (rx, _) in enumerate(value) if i not in used]
    if unused or uncovered:
        problems = [f"rules {unused} match no leaf"] if unused else []
        problems += [f"no rule covers {uncovered} and there is no default"] if uncovered else []
        raise SelectionError(f"{fn}: {name}: {'; '.join(problems)} (the leaves: {paths})")
    return out


def select(
    params: Any,
    where: Any,
    *,
    fn: str,
    default: Callable[[str, Any], bool] | None = None,
    accepts: Callable[[str, Any], str | None] | None = None,
    defaults: dict[str, Any] | None = None,
    derive: Callable[[Leaf, Any], dict[str, Any]] | None = None,
    **per_leaf: Any,
) -> Any:
    """The spec of a transform's selected leaves (see the module docstring).

    Args:
      params: the tree the transform's ``init`` received.
      where: the user's ``where=``.
      fn: the factory's name, for messages.
      default: the selector when ``where`` is None (:func:`jaxcomp.select.kernels` if not given).
      accepts: ``(path, leaf) -> None`` if the transform can act on the leaf, else the reason.
        With ``where=None`` the leaves it refuses are passed over (and selecting none is fine);
        an explicit ``where`` selecting such a leaf is a ``ValueError`` naming it.
      defaults: per argument of ``per_leaf``, the value of a leaf that no rule covers.
      derive: ``(leaf, array) -> {name: value}``, further static values of each leaf (its
        resolved channel axis, its shape), read back like the others.
      **per_leaf: per-leaf arguments (see :func:`leaf_values`), each read back as ``leaf[name]``;
        their values must be hashable.

    Returns:
      A tree with the structure of ``params``: a :class:`Leaf` per selected leaf, ``MaskedNode()``
      elsewhere.

    Raises:
      SelectionError: the selection or a per-leaf argument is malformed or does not fit.
    """
    from jaxcomp.select import kernels
    from jaxcomp.select import resolve

    default = kernels() if default is None else default

    pl, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [path_str(p) for p, _ in pl]
    if where is None and accepts is not None:
        flags = [is_array(x) and default(p, x) and accepts(p, x) is None
                 for p, (_, x) in zip(paths, pl, strict=True)]  # fmt: skip
    else:
        flags = jax.tree.leaves(resolve(where, params, default=default, what=f"{fn}(where=...)"))
    for p, (_, x), f in zip(paths, pl, flags, strict=True):
        reason = accepts(p, x) if f and accepts is not None else None
        if reason is not None:
            raise ValueError(f"{fn}: cannot compress {p!r}: {reason}")
    chosen = [p for p, f in zip(paths, flags, strict=True) if f]
    dflt = defaults or {}
    values = {
        k: leaf_values(v, chosen, fn=fn, name=k, default=dflt.get(k, REQUIRED))
        for k, v in per_leaf.items()
    }
    out, i = [], 0
    for p, (_, x), f in zip(paths, pl, flags, strict=True):
        if not f:
            out.append(MaskedNode())
            continue
        leaf = Leaf(p, i, tuple((k, v[i]) for k, v in values.items()))
        if derive is not None:
            leaf = Leaf(p, i, tuple({**dict(leaf.values), **derive(leaf, x)}.items()))
        out.append(leaf)
        i += 1
    return treedef.unflatten(out)


def _flat(spec: Any) -> tuple[list[tuple[Any, Any]], Any]:
    return jax.tree_util.tree_flatten_with_path(spec, is_leaf=_is_node)


def leaves(spec: Any) -> list[Leaf]:
    """The selected :class:`Leaf` s of ``spec``, in flattening order (made from the paths of a
    state tree whose selected leaves are arrays)."""
    out = []
    for p, x in _flat(spec)[0]:
        if isinstance(x, Leaf):
            out.append(x)
        elif not is_masked(x):
            out.append(Leaf(path_str(p), len(out)))
    return out


def selected(spec: Any, tree: Any) -> list[Any]:
    """The subtrees of ``tree`` at the selected leaves of ``spec`` (a prefix of ``tree``)."""
    pl, treedef = _flat(spec)
    return [
        s for (_, x), s in zip(pl, treedef.flatten_up_to(tree), strict=True) if not is_masked(x)
    ]


def rebuild(spec: Any, tree: Any, values: list[Any]) -> Any:
    """``tree`` with the subtrees at the selected leaves of ``spec`` replaced by ``values``."""
    pl, treedef = _flat(spec)
    it = iter(values)
    subs = treedef.flatten_up_to(tree)
    return treedef.unflatten(
        [s if is_masked(x) else next(it) for (_, x), s in zip(pl, subs, strict=True)]
    )


def placed(spec: Any, values: list[Any]) -> Any:
    """A state tree: ``values`` at the selected leaves of ``spec``, ``MaskedNode()`` elsewhere."""
    pl, treedef = _flat(spec)
    it = iter(values)
    return treedef.unflatten([x if is_masked(x) else next(it) for _, x in pl])


def map_leaves(fn: Callable[..., Any], spec: Any, tree: Any, *rest: Any) -> Any:
    """``tree`` with each selected leaf ``x`` replaced by ``fn(leaf, x, *rest_at_leaf)``.

    ``rest`` are trees with ``spec``'s structure as a prefix (state trees, gradients). The other
    leaves of ``tree`` are returned unchanged.
    """
    subs = [selected(spec, t) for t in (tree, *rest)]
    return rebuild(spec, tree, [fn(lf, *xs) for lf, *xs in zip(leaves(spec), *subs, strict=True)])


def map_state(fn: Callable[..., Any], spec: Any, *trees: Any) -> Any:
    """A state tree: ``fn(leaf, *trees_at_leaf)`` at each selected leaf, ``MaskedNode()`` else."""
    subs = [selected(spec, t) for t in trees]
    return placed(spec, [fn(lf, *xs) for lf, *xs in zip(leaves(spec), *subs, strict=True)])


def by_path(tree: Any, paths: list[str], shapes: list[Any], *, what: str) -> list[Any]:
    """The arrays of a user's ``tree`` at ``paths`` (matched by ``/``-joined path), each checked
    to have its shape in ``shapes``: masks, Hessians or calibration data given per leaf.

    Raises:
      ValueError: a path has no array in ``tree`` (``MaskedNode()`` counts as none) or one of
        another shape; the message starts with ``what`` and names the paths.
    """
    found = {
        path_str(p): x
        for p, x in jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_masked)
        if not is_masked(x)
    }
    missing = [p for p in paths if p not in found]
    if missing:
        raise ValueError(f"{what} has no entry for the selected leaves {missing}")
    for p, shape in zip(paths, shapes, strict=True):
        if tuple(jax.numpy.shape(found[p])) != tuple(shape):
            raise ValueError(
                f"{what}[{p!r}] has shape {jax.numpy.shape(found[p])}, the leaf {shape}"
            )
    return [found[p] for p in paths]


def leaf_key(key: jax.Array, leaf: Leaf) -> jax.Array:
    """The leaf's own PRNG key: ``fold_in(key, leaf.index)``; ``key`` typed or raw key data."""
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return jax.random.fold_in(key, leaf.index)

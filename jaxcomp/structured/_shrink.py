"""Channel masks over dependency groups, the masked model, and the physically smaller model.

:func:`apply_masks` zeroes every member of each removed channel's group: the same shapes, the
function of the pruned model. :func:`shrink` removes those channels for real and returns a smaller
variables tree with the function that runs it: the dense model's own program (its jaxpr, traced
once per input shape) re-run at the smaller widths, so the model's code is not changed and no
layer needs to be rebuilt. Its outputs equal the masked model's.

The widths are kept as one boolean vector per (leaf path, axis) (:func:`widths`): what an artifact
stores, and what :func:`run_small` checks against the model before it runs anything.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal

from jaxcomp.core._tree import path_str
from jaxcomp.errors import StructureMismatchError
from jaxcomp.errors import WidthMismatchError
from jaxcomp.structured._graph import Groups
from jaxcomp.structured._graph import _Analysis
from jaxcomp.structured._graph import analyse
from jaxcomp.structured._propagate import _Frame
from jaxcomp.structured._propagate import _shape
from jaxcomp.structured._propagate import _where

__all__ = ["Masks", "apply_masks", "complete_widths", "run_small", "shrink", "widths"]

Widths = dict[tuple[str, int], np.ndarray]


@jax.tree_util.register_pytree_node_class
class Masks:
    """Keep-masks per dependency group: ``keep[i]`` is a boolean ``(groups[i].size,)`` array.

    A pytree whose leaves are the masks (the groups are static), so it can live in a transform's
    state and pass through ``jit``.
    """

    def __init__(self, keep: Any, groups: Groups) -> None:
        self.keep = tuple(keep)
        self.groups = groups

    def tree_flatten(self):
        return self.keep, self.groups

    @classmethod
    def tree_unflatten(cls, groups, keep):
        return cls(keep, groups)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Masks) or other.groups is not self.groups:
            return False
        return len(self.keep) == len(other.keep) and all(
            a is b or bool(np.all(a == b)) for a, b in zip(self.keep, other.keep)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        try:
            kept = sum(int(np.asarray(k).sum()) for k in self.keep)
        except Exception:  # traced, or leaves that are not arrays (shapes)
            kept = "?"
        total = sum(g.size for g in self.groups)
        return f"Masks({len(self.keep)} groups, {kept} of {total} channels kept)"


def check_masks(masks: Any) -> Masks:
    if not isinstance(masks, Masks):
        raise TypeError(
            f"masks must be a jaxcomp.structured.Masks (from jc.structured.masks), got "
            f"{type(masks).__name__}"
        )
    for i, (k, g) in enumerate(zip(masks.keep, masks.groups)):
        if np.shape(k) != (g.size,):
            raise ValueError(
                f"masks.keep[{i}] must have shape ({g.size},) for its group, got {np.shape(k)}"
            )
    return masks


def _leaves(variables: Any) -> list[tuple[str, Any]]:
    flat = jax.tree_util.tree_flatten_with_path(variables)[0]
    return [(path_str(p), leaf) for p, leaf in flat]


def apply_masks(variables: Any, masks: Masks) -> Any:
    """Zeroes every member of each removed channel's group (same shapes; works under ``jit``).

    Args:
        variables: the model's variables (the tree :func:`jaxcomp.structured.groups` traced), or
            its ``params`` alone (paths without the leading ``params/``).
        masks: :class:`Masks` over those groups.

    Returns:
        ``variables`` with the removed channels' weights, biases, scales and statistics at zero.
    """
    check_masks(masks)
    plan: dict[str, list[tuple[int, int, np.ndarray]]] = {}
    for gi, group in enumerate(masks.groups):
        for m in group.members:
            plan.setdefault(m.path, []).append((m.axis, gi, m.index))
    flat, treedef = jax.tree_util.tree_flatten_with_path(variables)
    paths = [path_str(p) for p, _ in flat]
    if not any(p in plan for p in paths):  # a params tree: its paths lack the collection
        paths = ["params/" + p for p in paths]
    if not any(p in plan for p in paths):
        raise StructureMismatchError(
            "apply_masks: variables has none of the leaves the groups name (such as "
            f"{next(iter(plan), None)!r}); pass the variables (or params) the groups were "
            "traced from"
        )
    touched = tuple(i for i, p in enumerate(paths) if p in plan)
    names = tuple(paths[i] for i in touched)

    def make():
        def mask_leaves(leaves, keeps):
            out = []
            for path, leaf in zip(names, leaves):
                for axis, gi, index in plan[path]:
                    keep = jnp.asarray(keeps[gi])
                    factor = jnp.where(index >= 0, keep[np.maximum(index, 0)], True)
                    shape = [1] * jnp.ndim(leaf)
                    shape[axis] = -1
                    leaf = leaf * factor.reshape(shape).astype(jnp.result_type(leaf))
                out.append(leaf)
            return out

        return jax.jit(mask_leaves)

    # one program per groups and tree: eagerly, every member's mask would be its own few programs
    groups = masks.groups
    key = ("apply_masks", names)
    fn = groups.compiled(key, make) if isinstance(groups, Groups) else make()
    new = fn([flat[i][1] for i in touched], tuple(jnp.asarray(k) for k in masks.keep))
    out = [leaf for _, leaf in flat]
    for i, leaf in zip(touched, new):
        out[i] = leaf
    return jax.tree_util.tree_unflatten(treedef, out)


def widths(masks: Masks) -> Widths:
    """The kept positions of every pruned leaf axis: ``{(path, axis): bool vector}`` (concrete)."""
    check_masks(masks)
    out: Widths = {}
    for keep, group in zip(masks.keep, masks.groups):
        keep = np.asarray(keep, bool)
        for m in group.members:
            vec = np.where(m.index >= 0, keep[np.maximum(m.index, 0)], True)
            key = (m.path, m.axis)
            out[key] = out[key] & vec if key in out else vec
    return out


def _slice(variables: Any, kept: Widths) -> Any:
    flat, treedef = jax.tree_util.tree_flatten_with_path(variables)
    out = []
    for p, leaf in flat:
        path = path_str(p)
        for axis in range(np.ndim(leaf)):
            vec = kept.get((path, axis))
            if vec is not None and not vec.all():
                leaf = take(leaf, np.flatnonzero(vec), axis)
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def take(leaf: Any, index: np.ndarray, axis: int) -> Any:
    """``jnp.take(leaf, index, axis=axis)``; a concrete leaf is sliced by numpy (the same values,
    without compiling a gather for every leaf shape)."""
    if isinstance(leaf, jax.core.Tracer):
        return jnp.take(leaf, index, axis=axis)
    return jnp.asarray(np.take(np.asarray(leaf), index, axis=axis))


# --------------------------------------------------------------------------------------------------
# the program at smaller widths


def _kept_ids(analysis: _Analysis, kept: Widths, *, derive: bool = False) -> np.ndarray:
    """A boolean per id of the analysis: is its channel kept? Checks ``kept`` against the model.

    With ``derive``, leaf axes that ``kept`` does not name follow their group (batch statistics of
    a finalized params tree); otherwise they must keep everything.
    """
    uf = analysis.uf
    roots = uf.find(np.arange(uf.parent.size))
    keep_root = np.ones(uf.parent.size, bool)
    for key, vec in kept.items():
        ids = analysis.leaf_ids.get(key)
        if ids is None:
            raise WidthMismatchError(
                f"the widths name {key[0]!r} axis {key[1]}, which is not a channel axis of the "
                "model (the artifact does not match its model)"
            )
        if np.shape(vec) != ids.shape:
            raise WidthMismatchError(
                f"the widths of {key[0]!r} axis {key[1]} have {np.size(vec)} positions, the model "
                f"has {ids.size} (the artifact does not match its model)"
            )
        np.logical_and.at(keep_root, roots[ids], np.asarray(vec, bool))
    kept_by_id = keep_root[roots]
    pinned = uf.pinned_roots()
    if (~kept_by_id & pinned).any():
        raise WidthMismatchError(
            "the widths remove a channel tied to the model's input, output or a constant; such "
            "channels cannot be removed"
        )
    for key, ids in analysis.leaf_ids.items():
        if derive and key not in kept:
            continue
        want = kept_by_id[ids]
        have = np.asarray(kept.get(key, np.ones(ids.shape, bool)), bool)
        if not np.array_equal(want, have):
            raise WidthMismatchError(
                f"{key[0]!r} axis {key[1]} keeps {int(have.sum())} of {ids.size} positions but its "
                f"dependency group keeps {int(want.sum())}: every member of a group must lose the "
                "same channels"
            )
    return kept_by_id


class _Keeps:
    """Per-variable kept positions of one analysed frame, computed on demand."""

    def __init__(self, frame: _Frame, kept_by_id: np.ndarray) -> None:
        self.frame = frame
        self.kept_by_id = kept_by_id
        self.cache: dict[Any, list[np.ndarray]] = {}

    def __call__(self, v: Any, eqn: Any = None) -> list[np.ndarray]:
        if isinstance(v, Literal):
            return [np.ones(n, bool) for n in _shape(v)]
        if v in self.cache:
            return self.cache[v]
        shape = _shape(v)
        fields = self.frame.fields.get(v, ())
        mask = np.ones([1] * len(shape), bool)
        for f in fields:
            mask = mask & self.kept_by_id[f]
        vecs = []
        for axis, n in enumerate(shape):
            if mask.shape[axis] == 1:
                vecs.append(np.ones(n, bool))
            else:
                others = tuple(a for a in range(mask.ndim) if a != axis)
                vecs.append(mask.any(axis=others))
        rect = np.ones([1] * len(shape), bool)
        for axis, vec in enumerate(vecs):
            if mask.shape[axis] > 1:
                s = [1] * len(shape)
                s[axis] = -1
                rect = rect & vec.reshape(s)
        if not np.array_equal(np.broadcast_to(rect, mask.shape), mask):
            where = _where(eqn) if eqn is not None else "an input"
            raise WidthMismatchError(
                f"the kept channels of the output of {where} are not a rectangle: the pruned model "
                "cannot hold them in one smaller array"
            )
        self.cache[v] = vecs
        return vecs

    def shape(self, v: Any, eqn: Any = None) -> tuple[int, ...]:
        return tuple(int(vec.sum()) for vec in self(v, eqn))


def _params(eqn: Any, keeps: _Keeps, invals: list[Any]) -> dict[str, Any]:
    name = eqn.primitive.name
    p = dict(eqn.params)
    if name in ("reshape", "broadcast_in_dim", "iota") or "shape" in p:
        key = "new_sizes" if name == "reshape" else "shape"
        p[key] = keeps.shape(eqn.outvars[0], eqn)
        if name == "reshape":
            p["dimensions"] = None
    if name == "conv_general_dilated":
        lhs_spec, rhs_spec, _ = p["dimension_numbers"]
        p["feature_group_count"] = invals[0].shape[lhs_spec[1]] // invals[1].shape[rhs_spec[1]]
    elif name == "slice":
        vecs = keeps(eqn.invars[0])
        strides = p["strides"] or (1,) * len(vecs)
        start, limit = [], []
        for vec, s, e, step in zip(vecs, p["start_indices"], p["limit_indices"], strides):
            if step != 1 and not vec[s:e].all():
                raise WidthMismatchError(f"a strided slice loses channels at {_where(eqn)}")
            start.append(int(vec[:s].sum()))
            limit.append(int(vec[:e].sum()))
        p["start_indices"], p["limit_indices"] = tuple(start), tuple(limit)
    elif name == "pad":
        vecs = keeps(eqn.outvars[0], eqn)
        config = []
        for vec, (lo, hi, interior) in zip(vecs, p["padding_config"]):
            if lo > 0:
                lo = int(vec[:lo].sum())
            if hi > 0:
                hi = int(vec[vec.size - hi :].sum())
            config.append((lo, hi, interior))
        p["padding_config"] = tuple(config)
    elif name == "split":
        axis = p["axis"]
        p["sizes"] = tuple(keeps.shape(v, eqn)[axis] for v in eqn.outvars)
    return p


def complete_widths(
    apply_fn: Callable[..., Any], variables: Any, x: Any, kept: Mapping[tuple[str, int], Any]
) -> Widths:
    """``kept`` for some leaf axes, completed with every other leaf axis of the same groups."""
    analysis = analyse(apply_fn, jax.tree.map(_aval, variables), jax.tree.map(_aval, x))
    kept = {k: np.asarray(v, bool) for k, v in kept.items()}
    kept_by_id = _kept_ids(analysis, kept, derive=True)
    out = dict(kept)
    for key, ids in analysis.leaf_ids.items():
        vec = kept_by_id[ids]
        if key not in out and not vec.all():
            out[key] = vec
    return out


def _interpret(frame: _Frame, kept_by_id: np.ndarray, args: list[Any]) -> list[Any]:
    keeps = _Keeps(frame, kept_by_id)
    env: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for v, c in zip(frame.jaxpr.constvars, frame.consts):
        env[v] = c
    for v, a in zip(frame.jaxpr.invars, args):
        env[v] = a
    for index, eqn in enumerate(frame.jaxpr.eqns):
        invals = [read(v) for v in eqn.invars]
        child = frame.children.get(index)
        if child is not None:
            outs = _interpret(child, kept_by_id, invals)
        else:
            outs = eqn.primitive.bind(*invals, **_params(eqn, keeps, invals))
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, o in zip(eqn.outvars, outs):
            want = keeps.shape(v, eqn)
            if tuple(np.shape(o)) != want:
                raise WidthMismatchError(
                    f"{_where(eqn)} gave shape {tuple(np.shape(o))} at the smaller widths, "
                    f"expected {want}"
                )
            env[v] = o
    return [read(v) for v in frame.jaxpr.outvars]


def _aval(a: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))


def run_small(
    apply_fn: Callable[..., Any], dense_variables: Any, kept: Mapping[tuple[str, int], Any]
) -> Callable[[Any, Any], Any]:
    """The function that runs ``apply_fn``'s program with the channels ``kept`` leaves.

    Args:
        apply_fn: the dense model's ``apply_fn(variables, x)`` (inference mode).
        dense_variables: the dense variables or their shapes (``jax.ShapeDtypeStruct``).
        kept: ``{(path, axis): bool vector}`` as :func:`widths` gives.

    Returns:
        ``small_apply_fn(small_variables, x)``: traces ``apply_fn`` at the dense shapes once per
        input shape and runs its equations at the smaller widths. Jit it as any function.

    Raises:
        WidthMismatchError: ``kept`` does not fit the model (members of a group disagree, a leaf
            axis that is not a channel axis, a channel tied to the input or output removed); the
            check runs at the first call for each input shape.
    """
    avals = jax.tree.map(_aval, dense_variables)
    kept = {k: np.asarray(v, bool) for k, v in kept.items()}
    small_shapes = {}
    for path, a in _leaves(avals):
        shape = list(a.shape)
        for axis in range(len(shape)):
            if (path, axis) in kept:
                shape[axis] = int(kept[(path, axis)].sum())
        small_shapes[path] = tuple(shape)
    cache: dict[Any, tuple[_Analysis, np.ndarray]] = {}

    def small_apply_fn(small_variables: Any, x: Any) -> Any:
        x_aval = jax.tree.map(_aval, x)
        leaves_x = jax.tree.leaves(x_aval)
        key = (jax.tree.structure(x_aval), tuple((a.shape, a.dtype) for a in leaves_x))
        if key not in cache:
            analysis = analyse(apply_fn, avals, x_aval)
            cache[key] = (analysis, _kept_ids(analysis, kept))
        analysis, kept_by_id = cache[key]
        leaves = _leaves(small_variables)
        if [p for p, _ in leaves] != list(analysis.paths):
            raise WidthMismatchError(
                "small_variables must have the leaves of the dense variables (same paths), got "
                f"{[p for p, _ in leaves][:5]}... for {list(analysis.paths)[:5]}..."
            )
        for path, leaf in leaves:
            if tuple(np.shape(leaf)) != small_shapes[path]:
                raise WidthMismatchError(
                    f"small_variables[{path!r}] has shape {tuple(np.shape(leaf))}, the pruned "
                    f"model needs {small_shapes[path]}"
                )
        args = [leaf for _, leaf in leaves] + jax.tree.leaves(x)
        outs = _interpret(analysis.frame, kept_by_id, args)
        return jax.tree.unflatten(analysis.out_tree, outs)

    return small_apply_fn


def shrink(apply_fn: Callable[..., Any], variables: Any, masks: Masks) -> tuple[Callable, Any]:
    """Removes the masked channels physically: ``(small_apply_fn, small_variables)``.

    ``small_apply_fn(small_variables, x)`` equals ``apply_fn(apply_masks(variables, masks), x)``
    (to float rounding) for inputs of any batch size, and runs the model's own code: its jaxpr,
    re-run with the smaller arrays (convolutions, matmuls, batch norms, reshapes and pads at the
    smaller widths). Every leaf of ``variables`` (batch statistics too) comes back with the removed
    positions gone.

    Args:
        apply_fn: the function the groups were traced from.
        variables: the dense variables.
        masks: :class:`Masks` (concrete: the widths decide the shapes).

    Returns:
        ``(small_apply_fn, small_variables)``.

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> import jaxcomp as jc
        >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
        >>> x = jnp.ones((2, 4))
        >>> variables = model.init(jax.random.key(0), x)
        >>> masks = jc.structured.masks(model.apply, variables, x, ratio=0.5)
        >>> small_apply, small = jc.structured.shrink(model.apply, variables, masks)
        >>> small["params"]["layers_0"]["kernel"].shape
        (4, 4)
        >>> masked = jc.structured.apply_masks(variables, masks)
        >>> bool(jnp.allclose(small_apply(small, x), model.apply(masked, x), atol=1e-6))
        True
    """
    check_masks(masks)
    kept = widths(masks)
    return run_small(apply_fn, variables, kept), _slice(variables, kept)

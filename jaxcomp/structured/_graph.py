"""Dependency groups of channels, traced from the jaxpr of any Flax model.

Removing a filter of one layer is only correct if every parameter that reads or writes that
channel loses it too: the next layer's input weights, the batch norm's scale, bias and statistics,
the other branches of a residual addition, the rows that a flatten gives each channel in the next
``Dense``. Torch-Pruning (DepGraph) finds these couplings from the graph of a PyTorch model; this
module finds them from the jaxpr of ``apply_fn(variables, x)``, so it needs no layer names and works
for linen and NNX models alike.

How: every element of every parameter axis gets an id, and so do the elements of the input's and
the constants' axes. Each array in the jaxpr carries *fields*: integer arrays broadcastable to its
shape that name, for every element, the channel it belongs to. Primitives propagate fields (a
transpose transposes them, a reshape reshapes them, a convolution hands the kernel's output-feature
ids to its output) and couple ids with a union-find (an addition couples its operands element by
element, a contraction couples the activation's channels with the kernel's input features). At
the end each set of coupled ids is one channel; the sets that touch the same parameter axes form a
:class:`Group`. A set that touches the model's input or output, a constant, an iota or a reduction
over channels is pinned: it is never removed.

A primitive the analysis does not know raises :class:`jaxcomp.errors.UnsupportedPrimitiveError`
naming it and the layer, whenever it touches a channel that could otherwise be removed: the
analysis never guesses.

References:
    Fang, Ma, Song, Mi and Wang, "DepGraph: Towards any structural pruning", CVPR 2023,
    arXiv:2301.12900 (the dependency graph; Torch-Pruning is its PyTorch implementation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.extend.core import Literal

from jaxcomp.core._tree import path_str
from jaxcomp.structured._propagate import Field
from jaxcomp.structured._propagate import _Frame
from jaxcomp.structured._propagate import _Tracer
from jaxcomp.structured._propagate import _UnionFind

__all__ = ["Group", "Groups", "Member", "analyse", "groups"]

# --------------------------------------------------------------------------------------------------
# public result


@dataclasses.dataclass(frozen=True, eq=False)
class Member:
    """One parameter axis in a group.

    Attributes:
        path: the leaf's path in ``variables`` (``"params/Conv_0/kernel"``).
        axis: the axis of that leaf that loses the group's channels.
        index: ``(leaf.shape[axis],)`` integers: the group channel each position belongs to, or -1
            for positions of other groups (a concatenation's next layer reads several groups).
        role: ``"out"`` where the leaf writes the channel (a kernel's output features), ``"in"``
            where a contraction reads it (the next layer's input features), ``"other"`` elsewhere
            (biases, batch norm scale, bias and statistics, depthwise kernels' taps).
    """

    path: str
    axis: int
    index: np.ndarray
    role: str

    def __repr__(self) -> str:
        used = int((self.index >= 0).sum())
        return f"Member({self.path!r}, axis={self.axis}, role={self.role!r}, positions={used})"


@dataclasses.dataclass(frozen=True, eq=False)
class Group:
    """Channels that must be removed together from every member: one channel per position.

    Attributes:
        size: how many channels the group has.
        members: every (leaf path, axis, index map) that loses a removed channel.
    """

    size: int
    members: tuple[Member, ...]

    def __repr__(self) -> str:
        outs = [m.path for m in self.members if m.role == "out"]
        return f"Group(size={self.size}, members={len(self.members)}, writers={outs})"


class Groups(Sequence[Group]):
    """The dependency groups of a model: a sequence of :class:`Group`, from :func:`groups`.

    It also keeps what :func:`jaxcomp.structured.shrink` needs to run the model at smaller widths:
    the traced program and the ids of every parameter axis.
    """

    def __init__(
        self,
        groups: tuple[Group, ...],
        analysis: _Analysis,
    ) -> None:
        self._groups = groups
        self._analysis = analysis
        self._compiled: dict[Any, Any] = {}  # jitted functions over these groups, by purpose

    def compiled(self, key: Any, make: Callable[[], Any]) -> Any:
        """The function ``make()`` built once for these groups and ``key`` (a jitted function over
        the groups' index maps: compiled once per input shapes, not once per call)."""
        if key not in self._compiled:
            self._compiled[key] = make()
        return self._compiled[key]

    def __len__(self) -> int:
        return len(self._groups)

    def __getitem__(self, i):  # type: ignore[override]
        return self._groups[i]

    def __iter__(self) -> Iterator[Group]:
        return iter(self._groups)

    def __repr__(self) -> str:
        sizes = [g.size for g in self._groups]
        return f"Groups({len(sizes)} groups, {sum(sizes)} channels)"

    def summary(self) -> str:
        """One line per group: its size and the leaves it touches."""
        lines = []
        for i, g in enumerate(self._groups):
            leaves = ", ".join(f"{m.path}[{m.axis}]" for m in g.members)
            lines.append(f"{i:3d}  {g.size:5d} channels  {leaves}")
        return "\n".join(lines)


@dataclasses.dataclass
class _Analysis:
    """The traced program, the ids of every leaf axis and the union-find that couples them."""

    frame: _Frame
    uf: _UnionFind
    leaf_ids: dict[tuple[str, int], np.ndarray]
    paths: tuple[str, ...]
    treedef: Any
    avals: tuple[jax.ShapeDtypeStruct, ...]
    x_aval: Any
    out_tree: Any
    produced: np.ndarray
    consumed: np.ndarray


def _leaf_fields(tracer: _Tracer, shape, path: str, leaf_ids: dict) -> tuple[Field, ...]:
    fields = []
    for axis, n in enumerate(shape):
        if n > 1:
            ids_shape = [1] * len(shape)
            ids_shape[axis] = n
            ids = tracer.uf.fresh(ids_shape, pinned=False)
            leaf_ids[(path, axis)] = ids.reshape(-1)
            fields.append(ids)
    return tuple(fields)


def analyse(apply_fn: Callable[..., Any], variables: Any, x: Any) -> _Analysis:
    """Traces ``apply_fn(variables, x)`` and propagates channel ids (no arrays are computed)."""
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable as apply_fn(variables, x), got {apply_fn!r}")
    aval = lambda a: jax.ShapeDtypeStruct(np.shape(a), jax.numpy.result_type(a))
    avals = jax.tree.map(aval, variables)
    x_aval = jax.tree.map(aval, x)
    closed, out_shape = jax.make_jaxpr(lambda v, x_: apply_fn(v, x_), return_shape=True)(
        avals, x_aval
    )
    flat, treedef = jax.tree_util.tree_flatten_with_path(avals)
    paths = tuple(path_str(p) for p, _ in flat)
    if len(set(paths)) != len(paths):
        raise ValueError("variables has two leaves with the same path; give every leaf a name")
    tracer = _Tracer()
    leaf_ids: dict[tuple[str, int], np.ndarray] = {}
    in_fields = [_leaf_fields(tracer, a.shape, path, leaf_ids) for path, (_, a) in zip(paths, flat)]
    for a in jax.tree.leaves(x_aval):
        in_fields.append(tracer.axis_fields(a.shape, pinned=True))
    frame = tracer.walk(closed.jaxpr, closed.consts, in_fields)
    for v in closed.jaxpr.outvars:
        if not isinstance(v, Literal):
            tracer.pin_all(frame.fields[v])
    analysis = _Analysis(
        frame=frame,
        uf=tracer.uf,
        leaf_ids=leaf_ids,
        paths=paths,
        treedef=treedef,
        avals=tuple(a for _, a in flat),
        x_aval=x_aval,
        out_tree=jax.tree.structure(out_shape),
        produced=_id_mask(tracer.uf, tracer.produced),
        consumed=_id_mask(tracer.uf, tracer.consumed),
    )
    return analysis


def _id_mask(uf: _UnionFind, fields: list[np.ndarray]) -> np.ndarray:
    mask = np.zeros(uf.parent.size, bool)
    for f in fields:
        mask[np.asarray(f).ravel()] = True
    return mask


def _groups_of(analysis: _Analysis) -> tuple[Group, ...]:
    uf = analysis.uf
    pinned = uf.pinned_roots()
    signature: dict[int, list[tuple[str, int]]] = {}
    roots_of: dict[tuple[str, int], np.ndarray] = {}
    for key, ids in analysis.leaf_ids.items():
        roots = uf.find(ids)
        roots_of[key] = roots
        for r in np.unique(roots[~pinned[ids]]):
            signature.setdefault(int(r), []).append(key)
    by_sig: dict[tuple[tuple[str, int], ...], list[int]] = {}
    for r, keys in signature.items():
        by_sig.setdefault(tuple(keys), []).append(r)
    out = []
    for keys, roots in by_sig.items():
        if len(roots) < 2:
            continue  # a group of one channel can lose nothing (every group keeps one)
        roots = sorted(roots)
        position = {r: i for i, r in enumerate(roots)}
        members = []
        for key in keys:
            ids = analysis.leaf_ids[key]
            index = np.array([position.get(int(r), -1) for r in roots_of[key]], np.int64)
            sel = ids[index >= 0]
            if analysis.produced[sel].any():
                role = "out"
            elif analysis.consumed[sel].any():
                role = "in"
            else:
                role = "other"
            members.append(Member(path=key[0], axis=key[1], index=index, role=role))
        out.append(Group(size=len(roots), members=tuple(members)))
    order = {p: i for i, p in enumerate(analysis.paths)}
    out.sort(key=lambda g: min((order[m.path], m.axis) for m in g.members))
    return tuple(out)


def groups(apply_fn: Callable[..., Any], variables: Any, x: Any) -> Groups:
    """The groups of channels that must be removed together, traced from ``apply_fn``'s jaxpr.

    Args:
        apply_fn: ``apply_fn(variables, x) -> outputs`` in inference mode (batch norm with running
            statistics, no dropout): ``model.apply`` of a linen module, or the ``apply_fn`` of
            :func:`jaxcomp.adapt.functional` for an NNX module.
        variables: the model's variables (arrays or ``jax.ShapeDtypeStruct``; only shapes are used).
        x: an example input (one example is enough; only its shape and dtype are used).

    Returns:
        :class:`Groups`: one :class:`Group` per set of channels with the same members, in the order
        of the variables' leaves. Channels tied to the input, the output, a constant or a
        reduction over channels are in no group: they are never removed.

    Raises:
        UnsupportedPrimitiveError: a primitive that the analysis cannot follow touches a channel
            that could otherwise be removed (the message names the primitive and the layer).

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> class MLP(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         h = nn.relu(nn.Dense(8)(x))
        ...         return nn.Dense(3)(h)
        >>> model = MLP()
        >>> variables = model.init(jax.random.key(0), jnp.ones((1, 4)))
        >>> gs = groups(model.apply, variables, jnp.ones((1, 4)))
        >>> len(gs), gs[0].size
        (1, 8)
        >>> [(m.path, m.axis, m.role) for m in gs[0].members]  # doctest: +NORMALIZE_WHITESPACE
        [('params/Dense_0/bias', 0, 'other'), ('params/Dense_0/kernel', 1, 'out'),
         ('params/Dense_1/kernel', 0, 'in')]
    """
    analysis = analyse(apply_fn, variables, x)
    return Groups(_groups_of(analysis), analysis)

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
from jax.extend.core import ClosedJaxpr
from jax.extend.core import Jaxpr
from jax.extend.core import Literal

from jaxcomp.core._tree import path_str
from jaxcomp.errors import UnsupportedPrimitiveError

__all__ = ["Group", "Groups", "Member", "groups"]

Field = np.ndarray
"""Integer ids broadcastable to an array's shape (size 1 along the axes where they are constant)."""

_ELEMENTWISE = frozenset(
    """abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp conj convert_element_type
    copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag
    integer_pow is_finite le lgamma log log1p logistic lt max min mul ne neg nextafter not or pow
    real reduce_precision rem round rsqrt select_n sign sin sinh sqrt square sub tan tanh xor
    shift_left shift_right_arithmetic shift_right_logical population_count clz""".split()
)
_IDENTITY = frozenset({"optimization_barrier", "sharding_constraint", "mesh_cast", "pvary"})
_REDUCE = frozenset(
    {
        "reduce_sum",
        "reduce_max",
        "reduce_min",
        "reduce_prod",
        "reduce_and",
        "reduce_or",
        "reduce_xor",
        "argmax",
        "argmin",
    }
)
_REDUCE_WINDOW = frozenset(
    {"reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window"}
)
_CUMULATIVE = frozenset({"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})
_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


# --------------------------------------------------------------------------------------------------
# union-find over integer ids


class _UnionFind:
    """Sets of integer ids, with a ``pinned`` flag per id (a set is pinned if any member is)."""

    def __init__(self) -> None:
        self.parent = np.zeros(0, np.int64)
        self.pinned = np.zeros(0, bool)

    def fresh(self, shape: Sequence[int], *, pinned: bool) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64))
        start = self.parent.size
        self.parent = np.concatenate([self.parent, np.arange(start, start + n)])
        self.pinned = np.concatenate([self.pinned, np.full(n, pinned)])
        return np.arange(start, start + n).reshape(shape)

    def find(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        roots = ids
        while True:
            up = self.parent[roots]
            if np.array_equal(up, roots):
                break
            roots = up
        self.parent[ids] = roots  # path compression
        return roots

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
        a, b = a.ravel(), b.ravel()
        while a.size:
            ra, rb = self.find(a), self.find(b)
            differ = ra != rb
            if not differ.any():
                return
            ra, rb = ra[differ], rb[differ]
            np.minimum.at(self.parent, np.maximum(ra, rb), np.minimum(ra, rb))
            a, b = a[differ], b[differ]

    def pin(self, ids: np.ndarray) -> None:
        self.pinned[np.asarray(ids, np.int64).ravel()] = True

    def pinned_roots(self) -> np.ndarray:
        """A boolean per id: whether its set is pinned."""
        roots = self.find(np.arange(self.parent.size))
        pinned = np.zeros(self.parent.size, bool)
        np.logical_or.at(pinned, roots, self.pinned)
        return pinned[roots]


# --------------------------------------------------------------------------------------------------
# fields


def _compress(field: Field) -> Field:
    for axis in range(field.ndim):
        if field.shape[axis] > 1:
            first = np.take(field, [0], axis=axis)
            if np.array_equal(np.broadcast_to(first, field.shape), field):
                field = first
    return field


def _support(field: Field) -> frozenset[int]:
    return frozenset(a for a, n in enumerate(field.shape) if n > 1)


def _rows(field: Field, axis: int) -> np.ndarray:
    """The field's ids as ``(size along axis, everything else)``."""
    return np.moveaxis(field, axis, 0).reshape(field.shape[axis], -1)


@dataclasses.dataclass
class _Frame:
    """One jaxpr and the fields of its variables (a call site of a nested jaxpr gets its own)."""

    jaxpr: Jaxpr
    consts: list[Any]
    fields: dict[Any, tuple[Field, ...]]
    children: dict[int, _Frame]


def _where(eqn: Any) -> str:
    stack = str(eqn.source_info.name_stack)
    return f"primitive {eqn.primitive.name!r}" + (f" in layer {stack!r}" if stack else "")


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(v.aval.shape) if hasattr(v.aval, "shape") else ()


class _Tracer:
    """Propagates fields through a jaxpr; see the module docstring."""

    def __init__(self) -> None:
        self.uf = _UnionFind()
        self.produced: list[np.ndarray] = []
        self.consumed: list[np.ndarray] = []

    # ---- helpers

    def axis_fields(self, shape: Sequence[int], *, pinned: bool) -> tuple[Field, ...]:
        """One fresh field per axis of size > 1."""
        out = []
        for axis, n in enumerate(shape):
            if n > 1:
                ids_shape = [1] * len(shape)
                ids_shape[axis] = n
                out.append(self.uf.fresh(ids_shape, pinned=pinned))
        return tuple(out)

    def unpinned(self, fields: Sequence[Field]) -> bool:
        return any(not self.uf.pinned[self.uf.find(f)].all() for f in fields if f.size)

    def pin_all(self, fields: Sequence[Field]) -> None:
        for f in fields:
            self.uf.pin(f)

    def merge(self, fields: Sequence[Field], shape: Sequence[int]) -> tuple[Field, ...]:
        """Fields of operands coupled element by element: those whose supports meet are one."""
        fields = [f for f in fields if f.ndim == len(shape) and _support(f)]
        comps: list[list[Field]] = []
        for f in fields:
            hit = [i for i, c in enumerate(comps) if any(_support(f) & _support(g) for g in c)]
            joined = [g for i in hit for g in comps[i]] + [f]  # the first operand leads
            comps = [c for i, c in enumerate(comps) if i not in hit] + [joined]
        out = []
        for comp in comps:
            arrays = np.broadcast_arrays(*comp)
            for other in arrays[1:]:
                self.uf.union(arrays[0], other)
            out.append(_compress(np.ascontiguousarray(arrays[0])))
        return tuple(out)

    def couple_axis(self, sides: Sequence[tuple[Sequence[Field], int]], eqn: Any) -> list[Field]:
        """Couples position ``k`` of ``axis`` across every side; returns the fields consumed.

        A side without a field along its axis is untracked there (a constant): its partners on
        that axis are pinned, since the position cannot be removed from it.
        """
        rows: list[np.ndarray] = []
        used: list[Field] = []
        missing = False
        for fields, axis in sides:
            along = [f for f in fields if f.shape[axis] > 1]
            missing |= not along
            for f in along:
                rows.append(_rows(f, axis))
                used.append(f)
        if not rows:
            return used
        base = rows[0][:, :1]
        for r in rows:
            self.uf.union(base, r)
        if missing:
            self.uf.pin(base)
        del eqn
        return used

    # ---- the walk

    def walk(self, jaxpr: Jaxpr, consts: Sequence[Any], in_fields: Sequence[tuple[Field, ...]]):
        frame = _Frame(jaxpr, list(consts), {}, {})
        for v, c in zip(jaxpr.constvars, consts):
            frame.fields[v] = self.axis_fields(np.shape(c), pinned=True)
        for v, f in zip(jaxpr.invars, in_fields):
            frame.fields[v] = tuple(f)
        for index, eqn in enumerate(jaxpr.eqns):
            ins = [() if isinstance(v, Literal) else frame.fields[v] for v in eqn.invars]
            sub = next((eqn.params[k] for k in _CALL_PARAMS if k in eqn.params), None)
            if sub is not None:
                closed = sub if isinstance(sub, ClosedJaxpr) else None
                inner = closed.jaxpr if closed is not None else sub
                child = self.walk(inner, closed.consts if closed is not None else [], ins)
                frame.children[index] = child
                outs = [child.fields.get(v, ()) for v in inner.outvars]
                outs = [
                    self.axis_fields(_shape(v), pinned=True) if isinstance(v, Literal) else o
                    for v, o in zip(inner.outvars, outs)
                ]
            else:
                outs = self.rule(eqn, ins)
            for v, f in zip(eqn.outvars, outs):
                frame.fields[v] = tuple(f)
        return frame

    def rule(self, eqn: Any, ins: list[tuple[Field, ...]]) -> list[tuple[Field, ...]]:
        name = eqn.primitive.name
        p = eqn.params
        out_shapes = [_shape(v) for v in eqn.outvars]
        if name in _ELEMENTWISE:
            return [self.merge([f for fs in ins for f in fs], out_shapes[0])]
        if name in _IDENTITY:
            return [tuple(f) for f in ins[: len(out_shapes)]]
        if name == "broadcast_in_dim":
            return [self.broadcast(ins[0], p["shape"], p["broadcast_dimensions"])]
        if name == "reshape":
            src = _shape(eqn.invars[0])
            fs = [np.broadcast_to(f, src).reshape(out_shapes[0]) for f in ins[0]]
            return [tuple(_compress(f) for f in fs)]
        if name == "squeeze":
            return [tuple(np.squeeze(f, axis=tuple(p["dimensions"])) for f in ins[0])]
        if name == "transpose":
            return [tuple(np.transpose(f, p["permutation"]) for f in ins[0])]
        if name == "rev":
            return [tuple(np.flip(f, axis=tuple(p["dimensions"])) for f in ins[0])]
        if name == "dot_general":
            return [self.dot_general(eqn, ins)]
        if name == "conv_general_dilated":
            return [self.conv(eqn, ins)]
        if name in _REDUCE:
            axes = set(p["axes"])
            keep = []
            for f in ins[0]:
                if _support(f) & axes:
                    self.uf.pin(f)
                else:
                    keep.append(np.squeeze(f, axis=tuple(sorted(axes))))
            return [tuple(keep)]
        if name in _REDUCE_WINDOW:
            return [self.reduce_window(eqn, ins, out_shapes[0])]
        if name in _CUMULATIVE:
            for f in ins[0]:
                if p["axis"] in _support(f):
                    self.uf.pin(f)
            return [ins[0]]
        if name == "concatenate":
            return [self.concatenate(eqn, ins, out_shapes[0])]
        if name == "pad":
            return [self.pad(eqn, ins[0])]
        if name == "slice":
            return [self.slice(ins[0], p["start_indices"], p["limit_indices"], p["strides"])]
        if name == "split":
            return self.split(ins[0], p["axis"], p["sizes"])
        if name == "iota":
            return [self.axis_fields(out_shapes[0], pinned=True)]
        return self.unknown(eqn, ins, out_shapes)

    def unknown(self, eqn: Any, ins: list[tuple[Field, ...]], out_shapes: list[tuple[int, ...]]):
        fields = [f for fs in ins for f in fs]
        if self.unpinned(fields):
            raise UnsupportedPrimitiveError(
                f"structured pruning cannot follow channels through {_where(eqn)}: jaxcomp does "
                "not know how it maps channels, so it cannot tell which channels it couples. "
                "Trace the model in inference mode (no dropout), or keep this layer out of "
                "pruning by computing it outside apply_fn."
            )
        self.pin_all(fields)
        return [self.axis_fields(s, pinned=True) for s in out_shapes]

    # ---- rules with structure

    def broadcast(self, fields, shape, dims) -> tuple[Field, ...]:
        out = []
        for f in fields:
            new_shape = [1] * len(shape)
            for src, dst in enumerate(dims):
                new_shape[dst] = f.shape[src]
            out.append(f.reshape(new_shape))
        return tuple(out)

    def dot_general(self, eqn: Any, ins: list[tuple[Field, ...]]) -> tuple[Field, ...]:
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        lhs, rhs = ins
        ls, rs = _shape(eqn.invars[0]), _shape(eqn.invars[1])
        for a, b in zip(lc, rc):
            self.couple_axis([(lhs, a), (rhs, b)], eqn)
            self.consumed += [f for f in rhs if f.shape[b] > 1]  # the kernel reads the channel
        for a, b in zip(lb, rb):
            self.couple_axis([(lhs, a), (rhs, b)], eqn)
        lfree = [a for a in range(len(ls)) if a not in lc and a not in lb]
        rfree = [a for a in range(len(rs)) if a not in rc and a not in rb]
        out = []
        for f in lhs:
            sup = _support(f)
            if sup & set(lc):
                if sup - set(lc):
                    self.uf.pin(f)  # a field on contracted and kept axes: cannot be followed
                continue
            g = np.transpose(f, [*lb, *lfree, *lc]).reshape([f.shape[a] for a in (*lb, *lfree)])
            out.append(g.reshape(g.shape + (1,) * len(rfree)))
        for f in rhs:
            sup = _support(f)
            if sup & set(rc):
                if sup - set(rc):
                    self.uf.pin(f)
                continue
            g = np.transpose(f, [*rb, *rfree, *rc]).reshape([f.shape[a] for a in (*rb, *rfree)])
            g = g.reshape(g.shape[: len(rb)] + (1,) * len(lfree) + g.shape[len(rb) :])
            out.append(g)
            if sup & set(rfree):
                self.produced.append(f)
        return tuple(_compress(f) for f in out)

    def conv(self, eqn: Any, ins: list[tuple[Field, ...]]) -> tuple[Field, ...]:
        p = eqn.params
        if p["batch_group_count"] != 1:
            return tuple(self.unknown(eqn, ins, [_shape(eqn.outvars[0])])[0])
        lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
        lhs, rhs = ins
        ls, rs = _shape(eqn.invars[0]), _shape(eqn.invars[1])
        lf, rin, rout = lhs_spec[1], rhs_spec[1], rhs_spec[0]
        groups = p["feature_group_count"]
        cin, cin_g, cout = ls[lf], rs[rin], rs[rout]
        for f in lhs:
            if _support(f) - {lf}:
                self.uf.pin(f)  # channels mixed with batch or space: not channels any more
        for f in rhs:
            if _support(f) - {rin, rout}:
                self.uf.pin(f)  # kernel taps are not channels
        lfs = [f for f in lhs if _support(f) == {lf}]
        outs = [f for f in rhs if _support(f) == {rout}]
        ins_ = [f for f in rhs if _support(f) == {rin}]
        lvec = self._vector(lfs, lf, cin)
        ovec = self._vector(outs, rout, cout)
        ivec = self._vector(ins_, rin, cin_g)
        if groups == 1:
            self._couple_vectors(lvec, ivec)
            self.consumed += [v for v in (ivec,) if v is not None]
        elif cin_g == 1:  # depthwise, with a channel multiplier cout / cin
            if ovec is None or lvec is None:
                self.pin_all([v for v in (lvec, ovec) if v is not None])
            else:
                self.uf.union(lvec.reshape(groups, 1), ovec.reshape(groups, cout // groups))
        else:  # grouped: the same position in every group goes together
            if lvec is not None and ivec is not None:
                self.uf.union(lvec.reshape(groups, cin_g), ivec.reshape(1, cin_g))
            elif lvec is not None or ivec is not None:
                self.pin_all([v for v in (lvec, ivec) if v is not None])
            if ovec is not None:
                o2 = ovec.reshape(groups, cout // groups)
                self.uf.union(o2, o2[:1])
            self.consumed += [v for v in (ivec,) if v is not None]
        result = []
        if ovec is not None:
            self.produced.append(ovec)
            shape = [1] * len(ls)
            shape[out_spec[1]] = cout
            result.append(ovec.reshape(shape))
        return tuple(result)

    def _vector(self, fields: list[Field], axis: int, n: int) -> np.ndarray | None:
        if n == 1 or not fields:
            return None
        vecs = [f.reshape(-1) if f.size == n else _rows(f, axis)[:, 0] for f in fields]
        for v in vecs[1:]:
            self.uf.union(vecs[0], v)
        return vecs[0]

    def _couple_vectors(self, a: np.ndarray | None, b: np.ndarray | None) -> None:
        if a is not None and b is not None:
            self.uf.union(a, b)
        elif a is not None:
            self.uf.pin(a)
        elif b is not None:
            self.uf.pin(b)

    def reduce_window(self, eqn: Any, ins, out_shape) -> tuple[Field, ...]:
        p = eqn.params
        dims = p["window_dimensions"]
        strides = p["window_strides"]
        pads = p["padding"]
        moved = {
            a
            for a in range(len(dims))
            if dims[a] != 1 or strides[a] != 1 or tuple(pads[a]) != (0, 0)
        }
        out = []
        for f in ins[0]:
            if _support(f) & moved:
                self.uf.pin(f)
            else:
                out.append(f)
        return tuple(out)

    def concatenate(self, eqn: Any, ins, out_shape) -> tuple[Field, ...]:
        d = eqn.params["dimension"]
        parts = []
        for v, fields in zip(eqn.invars, ins):
            shape = _shape(v)
            along = [f for f in fields if f.shape[d] > 1 or (shape[d] == 1 and f.ndim)]
            along = [f for f in along if f.shape[d] == shape[d]]
            for f in fields:
                if not any(f is g for g in along):
                    self.uf.pin(f)
            if along:
                arrays = np.broadcast_arrays(*along)
                for other in arrays[1:]:
                    self.uf.union(arrays[0], other)
                part = along[0]
            else:
                ids_shape = [1] * len(shape)
                ids_shape[d] = shape[d]
                part = self.uf.fresh(ids_shape, pinned=True)
            parts.append(part)
        other = [max(p_.shape[a] for p_ in parts) for a in range(len(out_shape))]
        full = []
        for part in parts:
            target = list(other)
            target[d] = part.shape[d]
            full.append(np.broadcast_to(part, target))
        return (_compress(np.concatenate(full, axis=d)),)

    def pad(self, eqn: Any, fields) -> tuple[Field, ...]:
        config = eqn.params["padding_config"]
        out_shape = _shape(eqn.outvars[0])
        out = []
        for f in fields:
            for axis, (lo, hi, interior) in enumerate(config):
                if (lo, hi, interior) == (0, 0, 0) or f.shape[axis] == 1:
                    continue
                if interior or lo < 0 or hi < 0:  # dilation or cropping: not followed
                    self.uf.pin(f)
                    shape = [1] * f.ndim
                    shape[axis] = out_shape[axis]
                    f = self.uf.fresh(shape, pinned=True)
                    continue
                # padded positions hold a constant: free ids that the pruned model may drop
                blocks = []
                for n in (lo, 0, hi):
                    shape = [1] * f.ndim
                    shape[axis] = n
                    target = list(f.shape)
                    target[axis] = n
                    blocks.append(np.broadcast_to(self.uf.fresh(shape, pinned=False), target))
                f = np.concatenate([blocks[0], f, blocks[2]], axis=axis)
            out.append(_compress(f))
        return tuple(out)

    def slice(self, fields, start, limit, strides) -> tuple[Field, ...]:
        out = []
        for f in fields:
            index = []
            for axis in range(f.ndim):
                if f.shape[axis] == 1:
                    index.append(slice(None))
                    continue
                step = 1 if strides is None else strides[axis]
                partial = start[axis] != 0 or limit[axis] != f.shape[axis] or step != 1
                if partial and step != 1:
                    self.uf.pin(f)
                index.append(slice(start[axis], limit[axis], step))
            out.append(_compress(f[tuple(index)]))
        return tuple(out)

    def split(self, fields, axis, sizes) -> list[tuple[Field, ...]]:
        outs: list[list[Field]] = [[] for _ in sizes]
        for f in fields:
            if f.shape[axis] == 1:
                for o in outs:
                    o.append(f)
                continue
            edges = np.cumsum([0, *sizes])
            for o, lo, hi in zip(outs, edges[:-1], edges[1:]):
                o.append(_compress(np.take(f, np.arange(lo, hi), axis=axis)))
        return [tuple(o) for o in outs]


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

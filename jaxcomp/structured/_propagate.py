"""How channel ids flow through the primitives of a jaxpr (see :mod:`jaxcomp.structured._graph`).

A union-find over integer ids, the *fields* that an array carries (integer arrays broadcastable to
its shape naming the channel of every element), and :class:`_Tracer`, which walks a jaxpr and
applies one rule per primitive. :mod:`jaxcomp.structured._graph` turns the result into groups and
:mod:`jaxcomp.structured._shrink` re-runs the program at the smaller widths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from jax.extend.core import ClosedJaxpr
from jax.extend.core import Jaxpr
from jax.extend.core import Literal

from jaxcomp.errors import UnsupportedPrimitiveError

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
        in_shape = _shape(eqn.invars[0])
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
        for axis, n in enumerate(out_shape):
            # an axis of size 1 carries no ids (a one-channel tensor is untracked); padded to
            # more (ResNet's zero-padded shortcut from one channel), every position is pinned, so
            # that what it is added to keeps its width there
            if in_shape[axis] == 1 < n and not any(f.shape[axis] > 1 for f in out):
                shape = [1] * len(out_shape)
                shape[axis] = n
                out.append(self.uf.fresh(shape, pinned=True))
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

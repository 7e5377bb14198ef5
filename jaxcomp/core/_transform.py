"""The transform protocol and its combinators.

A compression transform is a NamedTuple of four pure functions, in the manner of optax's
``GradientTransformation``:

* ``init(params) -> (cparams, state)``: the trainable pytree and the non-trained state.
* ``apply(cparams, state) -> params``: the dense params the forward pass uses; differentiable in
  ``cparams`` (rounding uses straight-through estimators).
* ``update(cparams, state, *, step, grads=None) -> (cparams, state)``: what happens between
  optimizer steps (masks recomputed on a schedule, pruned weights zeroed, observers updated). It
  runs under ``jit``: schedules are evaluated with ``jnp.where``/``lax.cond``, never Python ``if``.
* ``finalize(cparams, state) -> compressed``: the baked result (hard masks, integer codes with
  scales, codebooks, factors), consumed by ``jaxcomp.encode`` and the fast inference adapters. It
  has the structure of the params as a prefix: each leaf is an array or a compressed node.
* ``apply_own(cparams, state) -> params`` (optional, ``None`` by default): ``apply`` for
  ``cparams`` that this transform's own ``init`` and ``update`` produced, free to rely on the
  invariants they keep. It must equal ``apply`` there, in value and in gradient. A pruner's
  ``update`` leaves the pruned weights at exact zero, so its ``apply_own`` skips the masking pass
  of the forward and only masks the gradient. The training step uses it (see :func:`own_apply`);
  everything else that may hand a transform foreign ``cparams`` uses ``apply``.

A transform that keeps the structure of the params (masks, fake quantization) returns ``params``
itself as ``cparams``; one that rewrites it (low-rank factors, codebooks, hash buckets) returns a
different structure, and its ``apply`` rebuilds the dense params.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import numpy as np

from jaxcomp.core._nodes import children
from jaxcomp.core._nodes import is_compressed
from jaxcomp.core._nodes import to_dense
from jaxcomp.core._tree import MaskedNode
from jaxcomp.core._tree import is_masked
from jaxcomp.core._tree import path_str
from jaxcomp.core._types import CParams
from jaxcomp.core._types import Params
from jaxcomp.core._types import State
from jaxcomp.errors import CompositionError
from jaxcomp.errors import StructureMismatchError

__all__ = [
    "ChainState",
    "EmptyState",
    "PartitionState",
    "Transform",
    "chain",
    "identity",
    "masked",
    "own_apply",
    "partition",
]


class Transform(NamedTuple):
    """A compression transform: four pure functions over pytrees (see the module docstring)."""

    init: Callable[[Params], tuple[CParams, State]]
    apply: Callable[[CParams, State], Params]
    update: Callable[..., tuple[CParams, State]]
    finalize: Callable[[CParams, State], Any]
    apply_own: Callable[[CParams, State], Params] | None = None


def own_apply(transform: Transform) -> Callable[[CParams, State], Params]:
    """The ``apply`` to use on ``cparams`` that ``transform``'s own ``init``/``update`` produced.

    That is ``transform.apply_own`` when the transform has one, else ``transform.apply``. The
    training step and :attr:`jaxcomp.train.TrainState.params` use it: their ``cparams`` only ever
    come from ``init`` and ``update``.
    """
    return transform.apply if transform.apply_own is None else transform.apply_own


class EmptyState(NamedTuple):
    """The state of a transform that keeps none."""


def _no_update(cparams: CParams, state: State, *, step: Any = None, grads: Any = None):
    del step, grads
    return cparams, state


def _identity_init(params: Params) -> tuple[CParams, State]:
    return params, EmptyState()


def _identity_apply(cparams: CParams, state: State) -> Any:
    return cparams


# one instance: a transform is a static field of a jitted state (``TrainState.transform``), so
# states built with their own identity would compile the same step again
_IDENTITY = Transform(
    init=_identity_init, apply=_identity_apply, update=_no_update, finalize=_identity_apply
)


def identity() -> Transform:
    """The transform that changes nothing: ``apply(init(p)) == p``.

    Every call returns the same (stateless) transform, so the jitted steps of states that use it
    are compiled once.
    """
    return _IDENTITY


class ChainState(NamedTuple):
    """The states of the transforms of a :func:`chain`, in order."""

    states: tuple[Any, ...]


def _same_structure(a: Any, b: Any) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b)


def _absorb(outer: Any, inner: Any, path: str) -> Any:
    """One leaf of a chain's baked result: ``outer`` baked over ``inner`` (see :func:`chain`)."""
    if not is_compressed(inner):
        return outer  # the inner transform left an array: the outer one's result stands
    if not is_compressed(outer):
        return inner  # the outer one left an array: the inner node stands (checked at init)
    if type(outer) is not type(inner):
        raise CompositionError(
            f"chain: the leaf {path!r} is encoded twice, as {type(inner).__name__} by a later "
            f"transform and as {type(outer).__name__} by an earlier one; one node cannot hold "
            "both. Compose them the other way round, or select disjoint leaves with where="
        )
    kids, treedef = children(outer)
    inner_kids = treedef.flatten_up_to(inner)
    return treedef.unflatten([_absorb(o, i, path) for o, i in zip(kids, inner_kids, strict=True)])


def _bake(outer: Any, inner: Any) -> Any:
    """Merges an earlier transform's baked tree over a later one's, leaf by leaf."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(outer, is_leaf=is_compressed)
    try:
        inner_leaves = treedef.flatten_up_to(inner)
    except (ValueError, TypeError) as e:
        raise CompositionError(
            f"chain: the baked results of two consecutive transforms do not share the params' "
            f"structure ({e})"
        ) from e
    return treedef.unflatten(
        [_absorb(o, i, path_str(p)) for (p, o), i in zip(leaves, inner_leaves, strict=True)]
    )


def _is_traced(tree: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def _mismatch(a: Any, b: Any) -> set[str]:
    """The leaf paths where two trees (nodes made dense) differ beyond float32 round-off.

    A node holding placeholders (``MaskedNode``) for fields that its transform keeps in the state
    cannot be made dense on its own, and is not compared.
    """
    bad = set()
    pa, treedef = jax.tree_util.tree_flatten_with_path(a, is_leaf=is_compressed)
    for (p, x), y in zip(pa, treedef.flatten_up_to(b), strict=True):
        if _incomplete(x) or _incomplete(y):
            continue
        x, y = np.asarray(to_dense(x), np.float64), np.asarray(to_dense(y), np.float64)
        tol = 1e-6 * (1.0 + float(np.abs(x).max(initial=0.0)))
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-5, atol=tol):
            bad.add(path_str(p))
    return bad


def _incomplete(x: Any) -> bool:
    return any(is_masked(y) for y in jax.tree.leaves(x, is_leaf=is_masked))


def _views(ts, cparams, state, own=False):
    """The input each transform of a chain sees (``views[k]`` is transform ``k``'s cparams),
    and the chain's dense output. With ``own``, the last transform uses its ``apply_own``."""
    out = [None] * len(ts)
    x = cparams
    for k in range(len(ts) - 1, -1, -1):
        out[k] = x
        fn = own_apply(ts[k]) if own and k == len(ts) - 1 else ts[k].apply
        x = fn(x, state.states[k])
    return out, x


def _finalize(ts, cparams, state):
    vs, _ = _views(ts, cparams, state)
    out = ts[-1].finalize(vs[-1], state.states[-1])
    for k in range(len(ts) - 2, -1, -1):
        out = _bake(ts[k].finalize(vs[k], state.states[k]), out)
    return out


def _init(ts, params):
    states = []
    c = params
    for t in ts:
        c, s = t.init(c)
        states.append(s)
    return c, ChainState(tuple(states))


def _lost(ts, cparams, state) -> list[str]:
    """The leaves where the chain's baked model differs from its trained one, beyond what each
    transform alone differs by (a stochastic or noisy ``apply`` is never equal to its bake)."""
    vs, out = _views(ts, cparams, state)
    try:
        bad = _mismatch(out, _finalize(ts, cparams, state))
    except CompositionError as e:
        return [str(e)]
    own = set()
    for t, v, s in zip(ts, vs, state.states, strict=True):
        own |= _mismatch(t.apply(v, s), t.finalize(v, s))
    covered = lambda p: any(p == q or p.startswith(q + "/") or q.startswith(p + "/") for q in own)
    return sorted(p for p in bad if not covered(p))


def chain(*transforms: Transform) -> Transform:
    """Composes transforms; ``chain(a, b)`` means "compress with ``a``, then with ``b``".

    The order is that of the survey's pipelines (prune, then quantize, then encode):

    * ``init``: each transform is initialized on the ``cparams`` of the one before it, so a
      quantizer after a pruner sees the pruned (exactly zero) weights, a k-means quantizer after a
      pruner clusters only the surviving ones, and a pruner after a low-rank rewrite prunes the
      factors (``Dense_0/kernel/u``: :func:`jaxcomp.select.kernels` selects them). The chain's
      ``cparams`` are the last transform's.
    * ``apply``: the last transform's ``apply`` runs first, the first transform's last; so
      ``chain(prune, quant).apply(c, s) == mask * fake_quant(c)``: the first transform's effect is
      outermost and always holds (pruned weights stay zero whatever comes after).
    * ``update``: transforms update in order. A transform whose input has the structure of the
      chain's ``cparams`` updates them directly (a pruner re-masks the latent weights, a
      quantizer's observers see them) and receives ``grads``. A transform followed by a
      structure-changing one (a pruner before k-means) sees the dense params rebuilt by the
      transforms after it and updates only its state. Each view is computed once per update.
    * ``finalize``: the last transform bakes its ``cparams`` first, then each earlier one bakes
      its own input, and the two are merged leaf by leaf: where the earlier transform left a leaf
      an array and the later one encoded it (integer codes, a codebook, factors), the node is
      kept; where the earlier one encoded a leaf the later one left dense, its node is taken;
      where both encoded the same leaf as the same kind of node (factors whose children were
      quantized), the earlier one's node holds the later one's encoded children. So
      ``chain(magnitude, fake_quant)`` and ``chain(fake_quant, magnitude)`` both bake to integer
      codes with the pruned weights at code zero.

    The baked model is the trained model: ``jc.to_dense(finalize(c, s))`` equals ``apply(c, s)``.
    ``init`` checks this on the params it is given and raises :class:`CompositionError` naming the
    order that works when an effect would be lost (a pruner over low-rank factors, which cannot
    zero single entries of their product; a pruner over binary weights, which have no zero).

    Args:
      *transforms: the transforms, in the order they compress.

    Returns:
      A :class:`Transform` whose state is a :class:`ChainState`.

    Examples:
        >>> import jax.numpy as jnp, numpy as np
        >>> import jaxcomp as jc
        >>> params = {"Dense_0": {"kernel": np.random.default_rng(0).standard_normal((8, 8))}}
        >>> t = jc.chain(jc.prune.magnitude(sparsity=0.75), jc.quant.fake_quant(bits=8))
        >>> c, s = t.init(params)
        >>> q = t.finalize(c, s)["Dense_0"]["kernel"]
        >>> q.codes.dtype, int(jnp.sum(q.codes == 0))
        (dtype('int8'), 48)
    """
    if not transforms:
        return identity()
    for i, t in enumerate(transforms):
        if not isinstance(t, Transform):
            raise TypeError(f"chain: argument {i} is {type(t).__name__}, not a jaxcomp Transform")
    ts = tuple(transforms)
    n = len(ts)

    def apply(cparams, state):
        return _views(ts, cparams, state)[1]

    def apply_own(cparams, state):
        return _views(ts, cparams, state, own=True)[1]

    def finalize(cparams, state):
        return _finalize(ts, cparams, state)

    def init(params):
        c, state = _init(ts, params)
        if n == 1 or _is_traced((params, c, state)):
            return c, state
        lost = _lost(ts, c, state)
        if lost:
            msg = (
                "chain: composed in this order, the baked model (finalize) would differ from "
                f"the trained one (apply) at {lost[:5]}: an earlier transform's effect cannot be "
                "kept in a later one's encoding."
            )
            if n == 2:
                rev = (ts[1], ts[0])
                if _lost(rev, *_init(rev, params)):
                    msg += " The reverse order fails too: apply them to disjoint leaves (where=)."
                else:
                    msg += " chain(b, a) composes them (the arguments in the reverse order)."
            raise CompositionError(msg)
        return c, state

    def update(cparams, state, *, step, grads=None):
        states = list(state.states)
        # transform k updates the chain's cparams directly when every later transform keeps the
        # structure (its input then is the cparams); the others update their state from the view
        # the later transforms rebuild, computed once, before any direct update changes them
        vs, _ = _views(ts, cparams, state)
        c = cparams
        for k, t in enumerate(ts):
            if _same_structure(vs[k], cparams):
                c, states[k] = t.update(c, states[k], step=step, grads=grads)
            else:
                _, states[k] = t.update(vs[k], states[k], step=step, grads=None)
        return c, ChainState(tuple(states))

    fast = apply_own if ts[-1].apply_own is not None else None
    return Transform(init, apply, update, finalize, fast)


class _Labels:
    """The labels of a :func:`partition`, resolved once at ``init``: static, hashable."""

    def __init__(self, treedef: Any, labels: tuple[Any, ...], paths: tuple[str, ...]):
        self.treedef, self.labels, self.paths = treedef, labels, paths

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, _Labels)
            and self.treedef == other.treedef
            and self.labels == other.labels
        )

    def __hash__(self) -> int:
        return hash((self.treedef, self.labels))

    def __repr__(self) -> str:
        return f"Labels({dict(zip(self.paths, self.labels, strict=True))})"

    def parts(self, tree: Any, what: str) -> list[Any]:
        """The subtree of ``tree`` at each labelled leaf of the params."""
        try:
            return self.treedef.flatten_up_to(tree)
        except (ValueError, TypeError) as e:
            raise StructureMismatchError(
                f"partition: {what} must have the params' structure (leaves {list(self.paths)}) "
                f"as a prefix, the structure seen at init ({e})"
            ) from e

    def split(self, tree: Any, label: Any, what: str) -> Any:
        """``tree`` with the leaves of other labels replaced by ``MaskedNode``."""
        parts = self.parts(tree, what)
        return self.treedef.unflatten(
            [x if lab == label else MaskedNode() for x, lab in zip(parts, self.labels, strict=True)]
        )

    def merge(self, trees: dict[Any, Any], what: str) -> Any:
        """Each leaf from the tree of its label."""
        parts = {k: self.parts(t, what) for k, t in trees.items()}
        return self.treedef.unflatten([parts[lab][i] for i, lab in enumerate(self.labels)])


jax.tree_util.register_pytree_node(_Labels, lambda x: ((), x), lambda aux, _: aux)


class PartitionState(NamedTuple):
    """The inner states of a :func:`partition`, and its labels (static, resolved at ``init``)."""

    inner_states: dict[Any, Any]
    labels: _Labels


def partition(transforms: dict[Any, Transform], labels: Any) -> Transform:
    """Applies a different transform to each group of leaves.

    Each inner transform sees the params with the leaves of other labels replaced by
    :class:`MaskedNode`. The partition's ``cparams`` always have the params' structure as a
    prefix: each leaf holds what its group's transform put there (the leaf itself, or a node such
    as low-rank factors at the leaf's own path, ``Dense_0/kernel/u``), never a label. The labels
    are resolved once, at ``init``, and kept in the state.

    Args:
      transforms: a mapping from label to transform.
      labels: a pytree of labels with the structure of the params, or a function of the params
        that returns one. Every label must be a key of ``transforms``.

    Returns:
      A :class:`Transform` whose state is a :class:`PartitionState`.
    """
    if not isinstance(transforms, dict) or not transforms:
        raise ValueError("partition: transforms must be a non-empty dict from label to Transform")
    for label, t in transforms.items():
        if not isinstance(t, Transform):
            raise TypeError(f"partition: transforms[{label!r}] is not a jaxcomp Transform")

    def resolve_labels(params) -> _Labels:
        lab = labels(params) if callable(labels) else labels
        pl, treedef = jax.tree_util.tree_flatten_with_path(params)
        try:
            values = treedef.flatten_up_to(lab)
        except (ValueError, TypeError) as e:
            raise StructureMismatchError(
                f"partition: labels must have the structure of the params ({e})"
            ) from e
        unknown = sorted({repr(x) for x in values} - {repr(k) for k in transforms})
        if unknown:
            raise ValueError(
                f"partition: labels {unknown} have no transform; known labels: {list(transforms)}"
            )
        return _Labels(treedef, tuple(values), tuple(path_str(p) for p, _ in pl))

    def init(params):
        lab = resolve_labels(params)
        cs, ss = {}, {}
        for k, t in transforms.items():
            cs[k], ss[k] = t.init(lab.split(params, k, "params"))
            lab.parts(
                cs[k],
                f"the cparams of transforms[{k!r}] (a transform with trainables shared by all its "
                "leaves, such as prune.soft_sharing's prior, has none to place at a leaf's path: "
                "select its leaves with its own where= instead of a partition or masked)",
            )
        return lab.merge(cs, "the cparams of an inner transform"), PartitionState(ss, lab)

    def each(fn, cparams, state, what):
        lab = state.labels
        return {
            k: fn(t, lab.split(cparams, k, what), state.inner_states[k])
            for k, t in transforms.items()
        }

    def apply(cparams, state):
        outs = each(lambda t, c, s: t.apply(c, s), cparams, state, "cparams")
        return state.labels.merge(outs, "an inner transform's apply")

    def apply_own(cparams, state):
        outs = each(lambda t, c, s: own_apply(t)(c, s), cparams, state, "cparams")
        return state.labels.merge(outs, "an inner transform's apply")

    def update(cparams, state, *, step, grads=None):
        lab = state.labels
        cs, ss = {}, {}
        for k, t in transforms.items():
            g = None if grads is None else lab.split(grads, k, "grads")
            cs[k], ss[k] = t.update(
                lab.split(cparams, k, "cparams"), state.inner_states[k], step=step, grads=g
            )
        return lab.merge(cs, "an inner transform's update"), PartitionState(ss, lab)

    def finalize(cparams, state):
        fins = each(lambda t, c, s: t.finalize(c, s), cparams, state, "cparams")
        return state.labels.merge(fins, "an inner transform's finalize")

    fast = apply_own if any(t.apply_own is not None for t in transforms.values()) else None
    return Transform(init, apply, update, finalize, fast)


def masked(inner: Transform, where: Any) -> Transform:
    """Applies ``inner`` to the leaves that ``where`` selects and leaves the others unchanged.

    Paths are kept: a leaf that ``inner`` rewrites keeps its params path (``Dense_0/kernel``, or
    ``Dense_0/kernel/u`` for its factors), so a later transform's ``where=`` names it as before.

    Args:
      inner: the transform.
      where: any form that :func:`jaxcomp.select.resolve` accepts.
    """
    from jaxcomp.select import resolve

    return partition(
        {True: inner, False: identity()},
        lambda params: resolve(where, params, what="masked(where=...)"),
    )

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

from jaxcomp.core._tree import MaskedNode
from jaxcomp.core._tree import tree_merge
from jaxcomp.core._tree import tree_select
from jaxcomp.core._types import CParams
from jaxcomp.core._types import Params
from jaxcomp.core._types import State

__all__ = [
    "ChainState",
    "EmptyState",
    "PartitionState",
    "SplitPartitionState",
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


def identity() -> Transform:
    """The transform that changes nothing: ``apply(init(p)) == p``."""
    return Transform(
        init=lambda params: (params, EmptyState()),
        apply=lambda cparams, state: cparams,
        update=_no_update,
        finalize=lambda cparams, state: cparams,
    )


class ChainState(NamedTuple):
    """The states of the transforms of a :func:`chain`, in order."""

    states: tuple[Any, ...]


def _same_structure(a: Any, b: Any) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b)


def chain(*transforms: Transform) -> Transform:
    """Composes transforms; ``chain(a, b)`` means "compress with ``a``, then with ``b``".

    The order is that of the survey's pipelines (prune, then quantize, then encode):

    * ``init``: each transform is initialized on the ``cparams`` of the one before it, so a
      quantizer after a pruner sees the pruned (exactly zero) weights, and a k-means quantizer after
      a pruner clusters only the surviving ones. The chain's ``cparams`` are the last transform's.
    * ``apply``: the last transform's ``apply`` runs first, the first transform's last; so
      ``chain(prune, quant).apply(c, s) == mask * fake_quant(c)``: the first transform's effect is
      outermost and always holds (pruned weights stay zero whatever comes after).
    * ``update``: transforms update in order. A transform whose input has the structure of the
      chain's ``cparams`` updates them directly (a pruner re-masks the latent weights, a quantizer's
      observers see them). A transform followed by a structure-changing one (a pruner before
      k-means) sees the dense params rebuilt by the transforms after it and updates only its state.
      ``grads`` reach only transforms whose input has the structure of the ``cparams``.
    * ``finalize``: the first transform finalizes its input; each next one finalizes the result
      when it has the structure of its own ``cparams`` (``chain(prune, fake_quant)`` quantizes the
      hard-masked weights), and its own ``cparams`` otherwise (k-means after a pruner, whose
      clusters already exclude the pruned weights). The last transform's result is returned.

    Args:
      *transforms: the transforms, in the order they compress.

    Returns:
      A :class:`Transform` whose state is a :class:`ChainState`.
    """
    if not transforms:
        return identity()
    for i, t in enumerate(transforms):
        if not isinstance(t, Transform):
            raise TypeError(f"chain: argument {i} is {type(t).__name__}, not a jaxcomp Transform")
    ts = tuple(transforms)

    def init(params):
        states = []
        c = params
        for t in ts:
            c, s = t.init(c)
            states.append(s)
        return c, ChainState(tuple(states))

    def views(cparams, state, own=False):
        """The input each transform sees: views[k] is transform k's cparams.

        With ``own``, the last transform (the only one whose input is the chain's ``cparams``,
        which it initializes and updates last) uses its ``apply_own``.
        """
        out = [None] * len(ts)
        x = cparams
        for k in range(len(ts) - 1, -1, -1):
            out[k] = x
            fn = own_apply(ts[k]) if own and k == len(ts) - 1 else ts[k].apply
            x = fn(x, state.states[k])
        return out, x

    def apply(cparams, state):
        return views(cparams, state)[1]

    def apply_own(cparams, state):
        return views(cparams, state, own=True)[1]

    def update(cparams, state, *, step, grads=None):
        states = list(state.states)
        c = cparams
        for k, t in enumerate(ts):
            v = views(c, ChainState(tuple(states)))[0][k]
            if _same_structure(v, c):
                c, states[k] = t.update(c, states[k], step=step, grads=grads)
            else:
                _, states[k] = t.update(v, states[k], step=step, grads=None)
        return c, ChainState(tuple(states))

    def finalize(cparams, state):
        vs, _ = views(cparams, state)
        out = ts[0].finalize(vs[0], state.states[0])
        for k in range(1, len(ts)):
            src = out if _same_structure(out, vs[k]) else vs[k]
            out = ts[k].finalize(src, state.states[k])
        return out

    fast = apply_own if ts[-1].apply_own is not None else None
    return Transform(init, apply, update, finalize, fast)


class PartitionState(NamedTuple):
    """The inner states of a :func:`partition` whose ``cparams`` keep the params' structure."""

    inner_states: dict[Any, Any]


class SplitPartitionState(NamedTuple):
    """The inner states of a :func:`partition` whose ``cparams`` are split by label.

    Used when an inner transform changes the structure of its leaves (low-rank factors, codebooks).
    """

    inner_states: dict[Any, Any]


def _is_masked(x: Any) -> bool:
    return isinstance(x, MaskedNode)


def partition(transforms: dict[Any, Transform], labels: Any) -> Transform:
    """Applies a different transform to each group of leaves.

    Each inner transform sees the params with the leaves of other labels replaced by
    :class:`MaskedNode`. When every inner transform keeps the structure of its leaves, the
    partition's ``cparams`` are the params' own structure (so it composes in :func:`chain` like any
    structure-keeping transform) and the state is a :class:`PartitionState`. Otherwise the
    ``cparams`` are a dict from label to that transform's ``cparams`` and the state is a
    :class:`SplitPartitionState`.

    Args:
      transforms: a mapping from label to transform.
      labels: a pytree of labels with the structure of the params, or a function of the params
        that returns one. Every label must be a key of ``transforms``.

    Returns:
      A :class:`Transform`.
    """
    if not isinstance(transforms, dict) or not transforms:
        raise ValueError("partition: transforms must be a non-empty dict from label to Transform")
    for label, t in transforms.items():
        if not isinstance(t, Transform):
            raise TypeError(f"partition: transforms[{label!r}] is not a jaxcomp Transform")

    def label_tree(params):
        lab = labels(params) if callable(labels) else labels
        unknown = sorted({repr(x) for x in jax.tree.leaves(lab)} - {repr(k) for k in transforms})
        if unknown:
            raise ValueError(
                f"partition: labels {unknown} have no transform; known labels: {list(transforms)}"
            )
        return lab

    def split(tree, lab):
        return {
            k: tree_select(tree, jax.tree.map(lambda x, _k=k: x == _k, lab)) for k in transforms
        }

    def init(params):
        lab = label_tree(params)
        subs = split(params, lab)
        cs, ss = {}, {}
        for k, t in transforms.items():
            cs[k], ss[k] = t.init(subs[k])
        if all(jax.tree.structure(cs[k]) == jax.tree.structure(subs[k]) for k in transforms):
            return tree_merge(lab, cs), PartitionState(ss)
        return cs, SplitPartitionState(ss)

    def split_labels(outs):
        """The label of each leaf, read off the dense outputs of a split partition."""
        keys = list(outs)

        def pick(*xs):
            return next(k for k, x in zip(keys, xs, strict=True) if not _is_masked(x))

        return jax.tree.map(pick, *outs.values(), is_leaf=_is_masked)

    def rebuild(cparams, state, own):
        if isinstance(state, PartitionState):
            lab = label_tree(cparams)
            subs = split(cparams, lab)
        else:
            subs = cparams
        outs = {
            k: (own_apply(t) if own else t.apply)(subs[k], state.inner_states[k])
            for k, t in transforms.items()
        }
        lab = lab if isinstance(state, PartitionState) else split_labels(outs)
        return tree_merge(lab, outs)

    def apply(cparams, state):
        return rebuild(cparams, state, own=False)

    def apply_own(cparams, state):
        return rebuild(cparams, state, own=True)

    def update(cparams, state, *, step, grads=None):
        merged = isinstance(state, PartitionState)
        if merged:
            lab = label_tree(cparams)
            subs = split(cparams, lab)
            gsubs = None if grads is None else split(grads, lab)
        else:
            subs, gsubs = cparams, grads
        cs, ss = {}, {}
        for k, t in transforms.items():
            g = None if gsubs is None else gsubs[k]
            cs[k], ss[k] = t.update(subs[k], state.inner_states[k], step=step, grads=g)
        if merged:
            return tree_merge(lab, cs), PartitionState(ss)
        return cs, SplitPartitionState(ss)

    def finalize(cparams, state):
        if isinstance(state, PartitionState):
            lab = label_tree(cparams)
            subs = split(cparams, lab)
        else:
            subs = cparams
            lab = split_labels(
                {k: t.apply(subs[k], state.inner_states[k]) for k, t in transforms.items()}
            )
        fins = {k: t.finalize(subs[k], state.inner_states[k]) for k, t in transforms.items()}
        return tree_merge(lab, fins)

    fast = apply_own if any(t.apply_own is not None for t in transforms.values()) else None
    return Transform(init, apply, update, finalize, fast)


def masked(inner: Transform, where: Any) -> Transform:
    """Applies ``inner`` to the leaves that ``where`` selects and leaves the others unchanged.

    Args:
      inner: the transform.
      where: any form that :func:`jaxcomp.select.resolve` accepts.
    """
    from jaxcomp.select import resolve

    return partition(
        {True: inner, False: identity()},
        lambda params: resolve(where, params, what="masked(where=...)"),
    )

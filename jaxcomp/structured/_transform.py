"""Channel pruning as a transform: whole groups masked during training, removed at ``finalize``.

:func:`channels` is structure-keeping while it trains (``apply`` zeroes the removed channels'
weights in every member of their group, and ``update`` keeps them at zero and recomputes the masks
on a schedule, the removed channels ranking below every kept one so that the masks are nested).
``finalize`` gives each pruned leaf as a :class:`ChannelPruned` node: the smaller array and the
positions it keeps; :func:`small` turns the finalized variables into the smaller model that the
unchanged model code runs.

The strength is a ``ratio`` of channels removed per group (a number or a schedule), of all channels
(``scope="global"``), or a FLOPs budget: ``flops=0.5`` removes half of the dense model's FLOPs
(:func:`ratio_for_flops` finds the per-group ratio that meets it, counting the FLOPs of the smaller
program with :func:`jaxcomp.analysis.flops`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.core import _checks as checks
from jaxcomp.core._transform import Transform
from jaxcomp.core._tree import path_str
from jaxcomp.structured._criteria import CRITERIA
from jaxcomp.structured._criteria import SCOPES
from jaxcomp.structured._criteria import check_round_to
from jaxcomp.structured._criteria import keep_global
from jaxcomp.structured._criteria import keep_top
from jaxcomp.structured._criteria import per_group_ratios
from jaxcomp.structured._criteria import scores as channel_scores
from jaxcomp.structured._graph import Groups
from jaxcomp.structured._graph import groups as trace_groups
from jaxcomp.structured._nodes import ChannelPruned
from jaxcomp.structured._shrink import Masks
from jaxcomp.structured._shrink import _slice
from jaxcomp.structured._shrink import apply_masks
from jaxcomp.structured._shrink import complete_widths
from jaxcomp.structured._shrink import run_small
from jaxcomp.structured._shrink import take
from jaxcomp.structured._shrink import widths

__all__ = ["ChannelState", "channels", "ratio_for_flops", "remove_channels", "small"]

_FN = "channels"


class ChannelState(NamedTuple):
    """The state of :func:`channels`: the masks, and Taylor importance accumulated since the last
    recomputation (zeros for the other criteria)."""

    masks: Masks
    importance: tuple[jax.Array, ...]


def _flops_at(apply_fn, variables, x, groups: Groups, ratio: float, round_to: int = 1) -> int:
    from jaxcomp.analysis import flops  # analysis imports models; keep the import local

    keep = tuple(np.asarray(keep_top(jnp.zeros(g.size), ratio, round_to)) for g in groups)
    keep = Masks(keep, groups)
    small_apply = run_small(apply_fn, variables, widths(keep))
    shapes = _small_avals(variables, widths(keep))
    return flops(small_apply, shapes, x)


def _small_avals(variables: Any, kept: dict) -> Any:
    flat, treedef = jax.tree_util.tree_flatten_with_path(variables)
    out = []
    for p, leaf in flat:
        shape = list(np.shape(leaf))
        for axis in range(len(shape)):
            vec = kept.get((path_str(p), axis))
            if vec is not None:
                shape[axis] = int(vec.sum())
        out.append(jax.ShapeDtypeStruct(tuple(shape), jnp.result_type(leaf)))
    return jax.tree_util.tree_unflatten(treedef, out)


def ratio_for_flops(
    apply_fn: Callable[..., Any],
    variables: Any,
    x: Any,
    *,
    flops: float,
    groups: Groups | None = None,
    round_to: int = 1,
    tol: float = 1e-3,
) -> float:
    """The per-group ratio of channels to remove that removes at least ``flops`` of the FLOPs.

    Args:
        apply_fn, variables, x: the model, as for :func:`jaxcomp.structured.groups`.
        flops: the fraction of the dense model's FLOPs to remove, in [0, 1).
        groups: groups already traced from the same model.
        round_to: the widths are rounded down to multiples of this (see
            :func:`jaxcomp.structured.keep_top`).
        tol: the bisection's tolerance on the ratio.

    Raises:
        ValueError: ``flops`` outside [0, 1), or a budget that only removing whole groups could
            meet (the message gives the most that keeping one channel per group removes).
    """
    target = checks.fraction(flops, fn="ratio_for_flops", name="flops")
    groups = trace_groups(apply_fn, variables, x) if groups is None else groups
    from jaxcomp.analysis import flops as count

    dense = count(apply_fn, variables, x)
    need = dense * (1.0 - target)
    most = max(1.0 - 1.0 / min((g.size for g in groups), default=1), 0.0)
    check_round_to(round_to, "layer")
    floor_flops = _flops_at(apply_fn, variables, x, groups, np.nextafter(1.0, 0.0), round_to)
    if floor_flops > need:
        raise ValueError(
            f"flops={target} cannot be met without removing whole groups: keeping one channel "
            f"per group still leaves {floor_flops / dense:.1%} of the FLOPs (the most that can be "
            f"removed is {1 - floor_flops / dense:.1%})"
        )
    lo, hi = 0.0, 1.0
    del most
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if _flops_at(apply_fn, variables, x, groups, mid, round_to) <= need:
            hi = mid
        else:
            lo = mid
    return hi


def _params_view(groups: Groups) -> list[tuple[int, Any]]:
    return [(gi, m) for gi, g in enumerate(groups) for m in g.members]


def channels(
    apply_fn: Callable[..., Any],
    variables: Any,
    x: Any,
    *,
    ratio: Any = None,
    flops: float | None = None,
    criterion: str = "l1",
    scope: str = "layer",
    update_every: int = 1,
    round_to: int = 1,
    groups: Groups | None = None,
) -> Transform:
    """Channel pruning over dependency groups as a transform of the model's ``params``.

    Args:
        apply_fn: ``apply_fn(variables, x)`` in inference mode (``model.apply``, or the apply of
            :func:`jaxcomp.adapt.functional` for NNX).
        variables: the model's variables (shapes are used to trace the groups).
        x: an example input.
        ratio: the fraction of each group's channels to remove (of all channels with
            ``scope="global"``), a number in [0, 1) or a schedule of the step, or one number per
            group (from :func:`jaxcomp.structured.ratios_for_drop`).
        flops: instead of ``ratio``, the fraction of the dense FLOPs to remove, in [0, 1)
            (``scope="layer"`` only; resolved to a ratio here by :func:`ratio_for_flops`).
        criterion: ``"l1"``, ``"l2"``, ``"bn"`` or ``"taylor"`` (Taylor scores accumulate over
            the steps between recomputations; no channel is removed before the first one).
        scope: ``"layer"`` or ``"global"``.
        update_every: recompute the masks every this many steps.
        round_to: keep a multiple of this many channels in every group (``scope="layer"``; see
            :func:`jaxcomp.structured.keep_top`).
        groups: groups already traced from the same model.

    A group with ``params`` members that ``init`` is not given (inside a ``partition`` whose other
    part holds them) is left whole.

    Returns:
        A :class:`jaxcomp.Transform` over ``variables["params"]`` whose state is a
        :class:`ChannelState`; ``finalize`` gives :class:`ChannelPruned` nodes at the pruned
        leaves (:func:`small` runs them).

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> import jaxcomp as jc
        >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
        >>> x = jnp.ones((1, 4))
        >>> variables = model.init(jax.random.key(0), x)
        >>> t = jc.structured.channels(model.apply, variables, x, ratio=0.5)
        >>> cparams, state = t.init(variables["params"])
        >>> t.finalize(cparams, state)["layers_0"]["kernel"].values.shape
        (4, 4)
    """
    if (ratio is None) == (flops is None):
        raise ValueError(f"{_FN}: give exactly one of ratio= and flops=")
    checks.choice(criterion, CRITERIA, fn=_FN, name="criterion")
    checks.choice(scope, SCOPES, fn=_FN, name="scope")
    checks.integer(update_every, fn=_FN, name="update_every")
    check_round_to(round_to, scope)
    groups = trace_groups(apply_fn, variables, x) if groups is None else groups
    if not len(groups):
        raise ValueError(f"{_FN}: the model has no channel that can be removed")
    if flops is not None:
        if scope != "layer":
            raise ValueError(f"{_FN}: flops= needs scope='layer'")
        ratio = ratio_for_flops(
            apply_fn, variables, x, flops=flops, groups=groups, round_to=round_to
        )
    each = per_group_ratios(ratio, len(groups))
    if each is not None and scope != "layer":
        raise ValueError(f"{_FN}: one ratio per group needs scope='layer'")
    if each is None:
        ratio = checks.schedule_or_number(ratio, fn=_FN, name="ratio")
    at = lambda step: ratio(step) if callable(ratio) else ratio
    taylor = criterion == "taylor"

    def decide(params, masks: Masks, importance, step):
        act = _active(groups, params)
        live = [g for g, a in zip(groups, act) if a]
        if taylor:
            s = [v for v, a in zip(importance, act) if a]
        else:
            s = channel_scores(live, params, criterion=criterion)
        old = [k for k, a in zip(masks.keep, act) if a]
        s = [jnp.where(k, v, -jnp.inf) for v, k in zip(s, old)]  # nested masks
        if scope == "global" and s:
            new = iter(keep_global(s, at(step)))
        elif each is not None:
            mine = [r for r, a in zip(each, act) if a]
            new = iter([keep_top(v, r, round_to) for v, r in zip(s, mine)])
        else:
            new = iter([keep_top(v, at(step), round_to) for v in s])
        keep = tuple(next(new) if a else k for k, a in zip(masks.keep, act))
        return Masks(keep, groups)

    def init(params):
        full = Masks(tuple(jnp.ones(g.size, bool) for g in groups), groups)
        zeros = tuple(jnp.zeros(g.size) for g in groups)
        # one program for the scores and ranks of every group (eagerly, a few programs each)
        masks = full if taylor else jax.jit(decide)(params, full, zeros, 0)
        return apply_masks(params, masks), ChannelState(masks, zeros)

    def apply(cparams, state):
        return apply_masks(cparams, state.masks)

    def update(cparams, state, *, step, grads=None):
        importance = state.importance
        if taylor and grads is not None:
            importance = tuple(
                acc + jnp.square(v)
                for acc, v in zip(importance, _signed_sums(groups, cparams, grads))
            )
        due = (step % update_every) == 0
        if taylor:
            due = due & (step > 0)
        new = decide(cparams, state.masks, importance, step)
        keep = tuple(jnp.where(due, n, o) for n, o in zip(new.keep, state.masks.keep))
        masks = Masks(keep, groups)
        importance = tuple(jnp.where(due, jnp.zeros_like(a), a) for a in importance)
        return apply_masks(cparams, masks), ChannelState(masks, importance)

    def finalize(cparams, state):
        return remove_channels(cparams, state.masks)

    return Transform(init=init, apply=apply, update=update, finalize=finalize)


def remove_channels(params: Any, masks: Masks) -> Any:
    """``params`` with the masked channels removed: a :class:`ChannelPruned` node at every leaf
    that loses positions (the smaller array and the kept positions), the other leaves as they are.

    ``params`` is a params tree (paths without ``params/``) or a variables tree; ``masks`` must be
    concrete. ``jc.to_dense`` of the result is ``apply_masks(params, masks)``.
    """
    kept = widths(masks)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    out = []
    for p, leaf in flat:
        path = path_str(p)
        full = path if any(k[0] == path for k in kept) else "params/" + path
        keep = tuple(kept.get((full, a)) for a in range(np.ndim(leaf)))
        if all(k is None or k.all() for k in keep):
            out.append(leaf)
            continue
        keep = tuple(None if k is None or k.all() else jnp.asarray(k) for k in keep)
        values = leaf
        for axis, k in enumerate(keep):
            if k is not None:
                values = take(values, np.flatnonzero(np.asarray(k)), axis)
        out.append(ChannelPruned(values=values, keep=keep))
    return jax.tree_util.tree_unflatten(treedef, out)


def _active(groups: Groups, params: Any) -> list[bool]:
    """Per group: are all its ``params`` members in ``params``? A group with members outside
    (a partition's other part) is left whole: removing its channels from one side only would not
    be a smaller model."""
    present = set()
    for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        path = path_str(p)
        present.add(path if path.startswith("params/") else "params/" + path)
    return [
        all(m.path in present for m in g.members if m.path.startswith("params/")) for g in groups
    ]


def _signed_sums(groups: Groups, params: Any, grads: Any) -> tuple[jax.Array, ...]:
    """Per channel of every group, the sum of ``w * dL/dw`` over the group's params members."""
    from jaxcomp.structured._criteria import _by_path
    from jaxcomp.structured._criteria import _lookup
    from jaxcomp.structured._criteria import _per_channel

    w, g = _by_path(params), _by_path(grads)
    out = []
    for group in groups:
        total = jnp.zeros(group.size)
        for m in group.members:
            wl, gl = _lookup(w, m.path), _lookup(g, m.path)
            if wl is None or gl is None:
                continue
            total = total + _per_channel(wl * gl, m, group.size, lambda r: r.sum(axis=1))
        out.append(total)
    return tuple(out)


def small(apply_fn: Callable[..., Any], variables: Any, x: Any) -> tuple[Callable, Any]:
    """The physically smaller model from variables with :class:`ChannelPruned` leaves.

    ``variables`` is the dense model's variables tree in which the pruned leaves are
    :class:`ChannelPruned` nodes (``{"params": transform.finalize(...), "batch_stats": ...}``, or
    a loaded artifact). The other leaves of the same groups (batch statistics) lose the same
    channels.

    Args:
        apply_fn: the dense model's ``apply_fn(variables, x)``.
        variables: as above.
        x: an example input (its shape is used to trace the model).

    Returns:
        ``(small_apply_fn, small_variables)`` as :func:`jaxcomp.structured.shrink`.

    Raises:
        WidthMismatchError: the nodes' widths do not fit the model.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(
        variables, is_leaf=lambda n: isinstance(n, ChannelPruned)
    )
    kept: dict[tuple[str, int], np.ndarray] = {}
    dense_avals = []
    for p, leaf in flat:
        path = path_str(p)
        if isinstance(leaf, ChannelPruned):
            for axis, k in enumerate(leaf.keep):
                if k is not None:
                    kept[(path, axis)] = np.asarray(k, bool)
            dense_avals.append(jax.ShapeDtypeStruct(leaf.shape, jnp.result_type(leaf.values)))
        else:
            dense_avals.append(jax.ShapeDtypeStruct(np.shape(leaf), jnp.result_type(leaf)))
    dense = jax.tree_util.tree_unflatten(treedef, dense_avals)
    full = complete_widths(apply_fn, dense, x, kept)
    values = [leaf.values if isinstance(leaf, ChannelPruned) else leaf for _, leaf in flat]
    values = jax.tree_util.tree_unflatten(treedef, values)
    rest = {k: v for k, v in full.items() if k not in kept}
    return run_small(apply_fn, dense, full), _slice(values, rest)

"""Channel importance per dependency group, and keep-masks from it.

Criteria, each a score per channel of every group (higher is more important):

- ``"l1"`` / ``"l2"``: the norm of the weights that write the channel (the filters; every writer
  of a residual group counts), Li, Kadav, Durdanovic, Samet and Graf, "Pruning filters for
  efficient ConvNets", ICLR 2017, arXiv:1608.08710 [33].
- ``"bn"``: the magnitude of the batch-norm scale of the channel, the learned importance of
  network slimming (Liu, Li, Shen, Huang, Yan and Zhang, "Learning efficient convolutional
  networks through network slimming", ICCV 2017, arXiv:1708.06519).
- ``"taylor"``: the first-order Taylor estimate of the loss change when the whole group's
  channel is removed, ``(sum over the channel's weights of w * dL/dw)^2`` (Molchanov, Mallya,
  Tyree, Frosio and Kautz, "Importance estimation for neural network pruning", CVPR 2019,
  arXiv:1906.10771); needs ``grads=``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.core._tree import path_str
from jaxcomp.structured._graph import Group
from jaxcomp.structured._graph import Groups
from jaxcomp.structured._graph import groups as trace_groups
from jaxcomp.structured._shrink import Masks

__all__ = ["CRITERIA", "keep_global", "keep_top", "masks", "per_group_ratios", "scores"]

CRITERIA = ("l1", "l2", "bn", "taylor")
SCOPES = ("layer", "global")


def _by_path(tree: Any) -> dict[str, Any]:
    if tree is None:
        return {}
    return {path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _lookup(leaves: dict[str, Any], path: str) -> Any:
    if path in leaves:
        return leaves[path]
    head, _, rest = path.partition("/")
    return leaves.get(rest) if head == "params" else None


def _per_channel(leaf: Any, member: Any, size: int, reduce: Callable) -> jax.Array:
    """``reduce`` over every axis but the member's, summed into the group's channels."""
    if leaf is None:
        raise ValueError(f"variables has no leaf {member.path!r} that the groups name")
    x = jnp.moveaxis(jnp.asarray(leaf, jnp.float32), member.axis, 0)
    per_position = reduce(x.reshape(x.shape[0], -1))
    index = member.index
    valid = index >= 0
    return jax.ops.segment_sum(
        jnp.where(valid, per_position, 0.0), np.where(valid, index, 0), num_segments=size
    )


def _group_scores(group: Group, leaves, grads, criterion: str, gi: int) -> jax.Array:
    if criterion in ("l1", "l2"):
        writers = [m for m in group.members if m.role == "out"] or [
            m for m in group.members if m.role == "in"
        ]
        if criterion == "l1":
            reduce = lambda r: jnp.abs(r).sum(axis=1)
        else:
            reduce = lambda r: jnp.square(r).sum(axis=1)
        total = sum(_per_channel(_lookup(leaves, m.path), m, group.size, reduce) for m in writers)
        return jnp.sqrt(total) if criterion == "l2" else total
    if criterion == "bn":
        scales = [m for m in group.members if m.path.endswith("/scale") and m.role == "other"]
        if not scales:
            raise ValueError(
                f"criterion='bn' needs a batch norm scale in every group; group {gi} "
                f"({group!r}) has none. Use criterion='l1' for models without batch norm"
            )
        return sum(
            _per_channel(_lookup(leaves, m.path), m, group.size, lambda r: jnp.abs(r).sum(axis=1))
            for m in scales
        )
    # taylor
    total = jnp.zeros(group.size)
    for m in group.members:
        g = _lookup(grads, m.path)
        if g is None:
            continue
        w = _lookup(leaves, m.path)
        total = total + _per_channel(
            jnp.asarray(w) * jnp.asarray(g), m, group.size, lambda r: r.sum(axis=1)
        )
    return jnp.square(total)


def scores(
    groups: Groups, variables: Any, *, criterion: str = "l1", grads: Any = None
) -> tuple[jax.Array, ...]:
    """Importance of every channel of every group: a tuple of ``(group.size,)`` arrays.

    Args:
        groups: from :func:`jaxcomp.structured.groups`.
        variables: the model's variables (the arrays the groups index).
        criterion: one of ``"l1"``, ``"l2"``, ``"bn"``, ``"taylor"`` (see the module docstring).
        grads: gradients of the loss with respect to ``variables`` or to its ``params``
            (``criterion="taylor"`` only; leaves without a gradient count zero).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "taylor" and grads is None:
        raise ValueError("criterion='taylor' needs grads= (gradients of the loss)")
    if criterion != "taylor" and grads is not None:
        raise ValueError(f"grads= is only used by criterion='taylor', not {criterion!r}")
    leaves = _by_path(variables)
    grad_leaves = _by_path(grads)
    return tuple(
        _group_scores(g, leaves, grad_leaves, criterion, gi) for gi, g in enumerate(groups)
    )


def _check_ratio(ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be a number in [0, 1), got {ratio!r}")
    return float(ratio)


def check_round_to(round_to: Any, scope: str) -> int:
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be an int >= 1, got {round_to!r}")
    if round_to > 1 and scope != "layer":
        raise ValueError("round_to needs scope='layer'")
    return round_to


def per_group_ratios(ratio: Any, n: int) -> tuple[float, ...] | None:
    """``ratio`` as one checked number per group when it is a sequence, else None."""
    if isinstance(ratio, (list, tuple)):
        if len(ratio) != n:
            raise ValueError(f"ratio has {len(ratio)} values for {n} groups; give one per group")
        return tuple(_check_ratio(r) for r in ratio)
    return None


def _rank(score: jax.Array) -> jax.Array:
    """0 for the highest score, 1 for the next (ties by position)."""
    order = jnp.argsort(-score, stable=True)
    return jnp.zeros(score.shape[0], jnp.int32).at[order].set(jnp.arange(score.shape[0]))


def _removed(ratio: Any, size: int) -> Any:
    """``floor(ratio * size)``: a host int for a Python number (the product rounded to JAX's
    default float first, as ``jnp.floor`` receives it, so both paths agree), else traced int32."""
    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool):
        return int(np.floor(np.asarray(ratio * size, jnp.result_type(float))))
    return jnp.floor(ratio * size).astype(jnp.int32)


def _n_keep(size: int, ratio: Any, round_to: int) -> Any:
    xp = jnp if isinstance(removed := _removed(ratio, size), jax.Array) else np
    n_keep = xp.maximum(1, size - removed)
    if round_to > 1 and size >= round_to:
        n_keep = xp.maximum(round_to, n_keep // round_to * round_to)
    return n_keep if xp is jnp else int(n_keep)


@jax.jit
def _top(score: jax.Array, n_keep: jax.Array) -> jax.Array:
    return _rank(score) < n_keep


def keep_top(score: jax.Array, ratio: Any, round_to: int = 1) -> jax.Array:
    """Keeps the ``size - floor(ratio * size)`` highest scores, at least one (ties by position).

    With ``round_to > 1``, the kept count is rounded down to a multiple of ``round_to`` (at least
    ``round_to``; a group narrower than ``round_to`` keeps the unrounded count): hardware runs such
    widths faster (XLA's CPU convolutions at widths that are not multiples of 8 lose most of the
    speed-up, see ``docs/structured.md``). ``ratio`` may be traced (a scheduled ratio).
    """
    return _top(score, _n_keep(score.shape[0], ratio, round_to))


def _keep_global(scores: tuple[jax.Array, ...], n_keep: Any) -> tuple[jax.Array, ...]:
    normed = [s / (jnp.mean(jnp.abs(s)) + 1e-12) for s in scores]
    keep = _rank(jnp.concatenate(normed)) < n_keep
    out, start = [], 0
    for s in normed:
        k = keep[start : start + s.shape[0]] | (_rank(s) == 0)
        out.append(k)
        start += s.shape[0]
    return tuple(out)


_keep_global_jit = jax.jit(_keep_global)


def _global_n_keep(total: int, ratio: Any) -> Any:
    return total - _removed(ratio, total)


def keep_global(scores: Any, ratio: Any) -> tuple[jax.Array, ...]:
    """Removes ``floor(ratio * total)`` channels over all groups, ranked by the score divided by
    its group's mean (so that groups of different scales compare); every group keeps its best."""
    scores = tuple(scores)
    return _keep_global_jit(scores, _global_n_keep(sum(s.shape[0] for s in scores), ratio))


def masks(
    apply_fn: Callable[..., Any],
    variables: Any,
    x: Any,
    *,
    ratio: float,
    criterion: str = "l1",
    grads: Any = None,
    scope: str = "layer",
    round_to: int = 1,
    groups: Groups | None = None,
) -> Masks:
    """Keep-masks that remove ``ratio`` of the channels of every dependency group.

    Args:
        apply_fn: ``apply_fn(variables, x)`` in inference mode.
        variables: the model's variables.
        x: an example input.
        ratio: the fraction of each group's channels to remove, in [0, 1), or one such number
            per group (from :func:`jaxcomp.structured.ratios_for_drop`); every group keeps at
            least one channel.
        criterion: ``"l1"`` (default), ``"l2"``, ``"bn"`` or ``"taylor"``.
        grads: gradients for ``criterion="taylor"``.
        scope: ``"layer"`` (each group loses ``ratio`` of its channels) or ``"global"``
            (``ratio`` of all channels, ranked by score over group mean; see :func:`keep_global`).
        round_to: keep a multiple of this many channels in every group (see :func:`keep_top`;
            ``scope="layer"`` only).
        groups: groups already traced from the same model (skips the trace).

    Returns:
        :class:`Masks`, one boolean vector per group.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not isinstance(ratio, (list, tuple)):
        ratio = _check_ratio(ratio)
    if groups is None:
        groups = trace_groups(apply_fn, variables, x)
    each = per_group_ratios(ratio, len(groups))
    if each is not None and scope == "global":
        raise ValueError("one ratio per group needs scope='layer'")
    check_round_to(round_to, scope)
    if scope == "global":
        n_keep = _global_n_keep(sum(g.size for g in groups), ratio)

        def make():
            return jax.jit(
                lambda v, g, n: _keep_global(scores(groups, v, criterion=criterion, grads=g), n)
            )
    else:
        each = each or (ratio,) * len(groups)
        n_keep = tuple(_n_keep(g.size, r, round_to) for g, r in zip(groups, each))

        def make():
            def keep(v, g, n):
                s = scores(groups, v, criterion=criterion, grads=g)
                return tuple(_rank(si) < ni for si, ni in zip(s, n))

            return jax.jit(keep)

    # one program per groups, criterion and scope: scores and ranks, the kept counts as inputs
    key = ("masks", criterion, scope)
    fn = groups.compiled(key, make) if isinstance(groups, Groups) else make()
    return Masks(fn(variables, grads, n_keep), groups)

"""The machinery shared by every mask-based pruning transform.

A pruner keeps a boolean mask per selected leaf in its state. ``init`` computes the masks at the
sparsity of step 0 and zeroes the pruned weights; ``apply`` is one ``where(mask, w, 0)`` per leaf;
``update`` re-zeroes the pruned weights after every optimizer step (so they stay exactly zero,
whatever the optimizer's momentum does) and recomputes the masks every ``update_every`` steps
inside a ``lax.cond``, so that the expensive ranking runs only on those steps. ``finalize`` returns
the hard-masked dense params; the masks stay in the state for the encoders.

Since ``init`` and ``update`` keep the pruned weights at exact zero, ``apply_own`` (what the
training step uses, see :func:`jaxcomp.core.own_apply`) skips the forward's masking pass: it is
the identity on the weights with a masked derivative (:func:`mask_grad`), so the gradient, and with
it every optimizer (global-norm clipping included), is exactly that of ``where(mask, w, 0)``. On a
CPU this pass was most of a masked LeNet-300-100 step's overhead over the dense step.

Pruned weights stay pruned: when masks are recomputed, the weights pruned so far rank below every
other weight, so with a non-decreasing sparsity the masks are nested (gradual pruning of Zhu and
Gupta, iterative pruning of Han et al.) and with a constant sparsity they do not change.

The sparsity may be a number, a schedule (``jaxcomp.schedules``), a ``{path: value}`` dict or an
ordered ``[(regex, value)]`` rule list of per-leaf values (layer scope), and is distributed over
leaves uniformly or by ERK (see :mod:`jaxcomp.prune._distribution`). A scheduled value ``s(t)``
with ERK gives leaf ``l`` the sparsity ``s(t) * s_l / s_final``, which keeps the total count at
``s(t) * N`` and reaches ERK's allocation at the end of the schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.core._transform import Transform
from jaxcomp.core._tree import MaskedNode
from jaxcomp.core._tree import path_str
from jaxcomp.prune._distribution import erk_sparsities
from jaxcomp.prune._masks import apply_masks
from jaxcomp.prune._masks import global_masks
from jaxcomp.prune._masks import is_masked
from jaxcomp.prune._masks import layerwise_masks
from jaxcomp.schedules._schedules import as_schedule
from jaxcomp.select._select import resolve
from jaxcomp.select._select import resolve_rules

__all__ = ["mask_grad"]

_SCOPES = ("layer", "global")
_DISTRIBUTIONS = ("uniform", "erk")


def check_sparsity_value(value: Any, name: str) -> Any:
    """A number in [0, 1) (returned as float) or a schedule whose values are in [0, 1)."""
    checked = as_schedule(value, name=name, low=0, high=1)
    return checked if callable(value) else float(value)


def check_sparsity(sparsity: Any, *, fn: str, scope: str, distribution: str) -> Any:
    """Validates ``sparsity`` when a transform is built; returns it in canonical form."""
    if scope not in _SCOPES:
        raise ValueError(f"{fn}: scope must be one of {_SCOPES}, got {scope!r}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(
            f"{fn}: distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}"
        )
    per_leaf = isinstance(sparsity, dict | list | tuple)
    if per_leaf and (scope == "global" or distribution != "uniform"):
        raise ValueError(
            f"{fn}: per-leaf sparsities (a dict or rule list) need scope='layer' and "
            f"distribution='uniform', got scope={scope!r}, distribution={distribution!r}"
        )
    if isinstance(sparsity, dict):
        if not sparsity:
            raise ValueError(f"{fn}: sparsity dict is empty; give {{path: value}} per leaf")
        return {k: check_sparsity_value(v, f"{fn}: sparsity[{k!r}]") for k, v in sparsity.items()}
    if isinstance(sparsity, list | tuple):
        if not sparsity or not all(
            isinstance(r, list | tuple) and len(r) == 2 and isinstance(r[0], str) for r in sparsity
        ):
            raise ValueError(
                f"{fn}: sparsity must be a number, a schedule, a {{path: value}} dict or a "
                f"[(regex, value)] rule list, got {sparsity!r}"
            )
        return [(p, check_sparsity_value(v, f"{fn}: sparsity rule {p!r}")) for p, v in sparsity]
    return check_sparsity_value(sparsity, f"{fn}: sparsity")


def check_every(update_every: Any, fn: str) -> int:
    if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
        raise ValueError(f"{fn}: update_every must be an int >= 1, got {update_every!r}")
    return update_every


class Leaves:
    """The selected leaves of a tree in flattening order, and how to rebuild state trees."""

    def __init__(self, cparams: Any, selected: list[bool]):
        pl, self.treedef = jax.tree_util.tree_flatten_with_path(cparams)
        self.leaves = [x for _, x in pl]
        self.paths = [path_str(p) for p, _ in pl]
        self.selected = selected
        self.index = [i for i, f in enumerate(selected) if f]

    @classmethod
    def from_state(cls, cparams: Any, masks: Any) -> Leaves:
        treedef = jax.tree.structure(cparams)
        subs = treedef.flatten_up_to(masks)
        return cls(cparams, [not is_masked(m) for m in subs])

    def sel(self, tree: Any | None = None) -> list[Any]:
        """The selected leaves of ``tree`` (the cparams when omitted)."""
        if tree is None:
            return [self.leaves[i] for i in self.index]
        subs = self.treedef.flatten_up_to(tree)
        return [subs[i] for i in self.index]

    def sel_paths(self) -> list[str]:
        return [self.paths[i] for i in self.index]

    def state_tree(self, values: list[Any]) -> Any:
        """A tree with ``values`` at the selected leaves and MaskedNode elsewhere."""
        out: list[Any] = [MaskedNode()] * len(self.leaves)
        for i, v in zip(self.index, values, strict=True):
            out[i] = v
        return jax.tree.unflatten(self.treedef, out)

    def replace(self, values: list[Any]) -> Any:
        """The cparams with the selected leaves replaced by ``values``."""
        out = list(self.leaves)
        for i, v in zip(self.index, values, strict=True):
            out[i] = v
        return jax.tree.unflatten(self.treedef, out)


def select_leaves(params: Any, where: Any, fn: str) -> Leaves:
    sel = resolve(where, params, what=f"{fn}(where=...)")
    treedef = jax.tree.structure(params)
    return Leaves(params, [bool(f) for f in treedef.flatten_up_to(sel)])


def path_dict(tree: Any) -> dict[str, Any]:
    """The leaves of ``tree`` by ``/``-joined path, ``MaskedNode`` placeholders left out."""
    return {
        path_str(p): x
        for p, x in jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_masked)
        if not is_masked(x)
    }


def by_path(tree: Any, paths: list[str], what: str, shapes: list[tuple[int, ...]]) -> list[Any]:
    """The leaves of ``tree`` at ``paths`` (matched by ``/``-joined path), shape-checked."""
    found = path_dict(tree)
    missing = [p for p in paths if p not in found]
    if missing:
        raise ValueError(f"{what} has no entry for the selected leaves {missing}")
    out = []
    for p, shape in zip(paths, shapes, strict=True):
        x = found[p]
        if tuple(jnp.shape(x)) != tuple(shape):
            raise ValueError(f"{what}[{p!r}] has shape {jnp.shape(x)}, the leaf has {shape}")
        out.append(x)
    return out


def leaf_sparsities(spec: Any, leaves: Leaves, fn: str, distribution: str) -> list[Any]:
    """Per selected leaf: a float or a schedule (layer scope)."""
    paths = leaves.sel_paths()
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(paths))
        missing = [p for p in paths if p not in spec]
        if unknown or missing:
            raise ValueError(
                f"{fn}: the sparsity dict must have exactly the selected paths {paths}; "
                f"unknown {unknown}, missing {missing}"
            )
        return [spec[p] for p in paths]
    if isinstance(spec, list):
        probe = {p: 0 for p in paths}
        values = resolve_rules(spec, probe, default=None, what=f"{fn}(sparsity=...)")
        out = [values[p] for p in paths]
        uncovered = [p for p, v in zip(paths, out, strict=True) if v is None]
        if uncovered:
            raise ValueError(f"{fn}: no sparsity rule covers the selected leaves {uncovered}")
        return out
    if distribution == "uniform":
        return [spec] * len(paths)
    shapes = [tuple(x.shape) for x in leaves.sel()]
    final = spec if isinstance(spec, float) else float(spec(10**9))
    per = erk_sparsities(shapes, final)
    if isinstance(spec, float):
        return per
    ratios = [p / final if final > 0 else 0.0 for p in per]
    return [(lambda t, r=r: jnp.clip(r * spec(t), 0.0, 1.0)) for r in ratios]


@jax.custom_jvp
def mask_grad(w: jax.Array, mask: jax.Array) -> jax.Array:
    """``w`` itself, with the derivative of ``where(mask, w, 0)``.

    Equals ``where(mask, w, 0)`` in value and in every derivative when ``w`` is already zero
    where ``mask`` is False (the invariant a pruner's ``init`` and ``update`` keep), without the
    forward pass over the weights.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> w, m = jnp.array([0.0, 2.0]), jnp.array([False, True])
        >>> jax.grad(lambda w: jnp.sum(3.0 * mask_grad(w, m)))(w).tolist()
        [0.0, 3.0]
    """
    del mask
    return w


@mask_grad.defjvp
def _mask_grad_jvp(primals, tangents):
    w, mask = primals
    return w, jnp.where(mask, tangents[0], jnp.zeros_like(tangents[0]))


def zero_pruned(weights: list[Any], masks: list[Any]) -> list[Any]:
    """``where(mask, w, 0)`` for each pair of a list of leaves and their masks."""
    return [jnp.where(m, w, jnp.zeros_like(w)) for w, m in zip(weights, masks, strict=True)]


def apply_masked(cparams: Any, state: Any) -> Any:
    """``apply`` of a transform whose ``state.masks`` hold a mask per selected leaf."""
    return apply_masks(cparams, state.masks)


def apply_own_masked(cparams: Any, state: Any) -> Any:
    """``apply_own`` of a transform whose ``state.masks`` are kept by ``init``/``update``.

    The selected leaves pass through :func:`mask_grad`: their pruned entries are already zero.
    """
    lv = Leaves.from_state(cparams, state.masks)
    return lv.replace([mask_grad(w, m) for w, m in zip(lv.sel(), lv.sel(state.masks), strict=True)])


def _at(value: Any, step: Any) -> Any:
    return value(step) if callable(value) else value


def compute_masks(
    scores: list[jax.Array],
    old: list[jax.Array],
    *,
    spec: Any,
    leaves: Leaves,
    scope: str,
    distribution: str,
    fn: str,
    step: Any,
) -> list[jax.Array]:
    """Exact top-k masks of the selected leaves; pruned weights rank lowest (sticky)."""
    sticky = [
        jnp.where(m, s.astype(jnp.float32), -jnp.inf) for s, m in zip(scores, old, strict=True)
    ]
    if scope == "global":
        return global_masks(sticky, _at(spec, step))
    per = leaf_sparsities(spec, leaves, fn, distribution)
    return layerwise_masks(sticky, [_at(v, step) for v in per])


def build_pruner(
    *,
    fn: str,
    state_cls: type,
    sparsity: Any,
    where: Any,
    scope: str,
    distribution: str,
    update_every: int,
    scores: Callable[[list[Any], dict[str, list[Any]], Any], list[jax.Array]],
    init_extra: Callable[[Any, Leaves], dict[str, list[Any]]] = lambda p, lv: {},
    accumulate: Callable[..., dict[str, list[Any]]] | None = None,
    prune_at_init: bool = True,
) -> Transform:
    """A mask-based pruning transform (see the module docstring).

    ``sparsity``, ``scope``, ``distribution`` and ``update_every`` are validated here, when the
    transform is built, with messages naming ``fn``.

    Args:
      fn: the factory's name, for messages.
      state_cls: the state NamedTuple; its first field is ``masks``, the others ``init_extra``'s.
      scores: ``scores(selected_cparams, extra, step) -> scores`` (higher is kept).
      init_extra: ``(params, leaves) -> {field: [array per selected leaf]}``.
      accumulate: ``(selected_cparams, selected_grads, extra) -> extra`` every update with grads;
        the accumulated fields are reset to zero when the masks are recomputed.
      prune_at_init: compute the masks in ``init`` (False for criteria that need gradients).
    """
    sparsity = check_sparsity(sparsity, fn=fn, scope=scope, distribution=distribution)
    check_every(update_every, fn)

    def pack(lv: Leaves, masks: list[Any], extra: dict[str, list[Any]]) -> Any:
        return state_cls(lv.state_tree(masks), **{k: lv.state_tree(v) for k, v in extra.items()})

    def unpack(lv: Leaves, state: Any) -> tuple[list[Any], dict[str, list[Any]]]:
        d = state._asdict()
        masks = lv.sel(d.pop("masks"))
        return masks, {k: lv.sel(v) for k, v in d.items()}

    def init(params):
        lv = select_leaves(params, where, fn)
        leaf_sparsities(sparsity, lv, fn, distribution)  # validates per-leaf specs against paths
        c = lv.sel()
        masks = [jnp.ones(jnp.shape(w), bool) for w in c]
        extra = init_extra(params, lv)
        if prune_at_init:
            masks = compute_masks(
                scores(c, extra, 0), masks, spec=sparsity, leaves=lv, scope=scope,
                distribution=distribution, fn=fn, step=0,
            )  # fmt: skip
        return lv.replace(zero_pruned(c, masks)), pack(lv, masks, extra)

    def update(cparams, state, *, step, grads=None):
        lv = Leaves.from_state(cparams, state.masks)
        c = lv.sel()
        masks, extra = unpack(lv, state)
        if accumulate is not None and grads is not None:
            extra = accumulate(c, lv.sel(grads), extra)
        step = jnp.asarray(step, jnp.int32)

        # re-zero with the current masks first: it fuses with the optimizer's update of the
        # weights; the branch that recomputes the masks then zeroes the newly pruned ones too
        c = zero_pruned(c, masks)

        def recompute(operand):
            c, masks, extra = operand
            new = compute_masks(
                scores(c, extra, step), masks, spec=sparsity, leaves=lv, scope=scope,
                distribution=distribution, fn=fn, step=step,
            )  # fmt: skip
            if accumulate is not None:
                extra = {k: [jnp.zeros_like(x) for x in v] for k, v in extra.items()}
            return zero_pruned(c, new), new, extra

        if update_every == 1:
            c, masks, extra = recompute((c, masks, extra))
        else:
            c, masks, extra = jax.lax.cond(
                step % update_every == 0, recompute, lambda op: op, (c, masks, extra)
            )
        return lv.replace(c), pack(lv, masks, extra)

    return Transform(init, apply_masked, update, apply_masked, apply_own_masked)

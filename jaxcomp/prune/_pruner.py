"""The machinery shared by every mask-based pruning transform, and :func:`build_pruner`.

A pruner keeps a boolean mask per selected leaf in its state. ``init`` computes the masks at the
sparsity of step 0 and zeroes the pruned weights; ``apply`` is one ``where(mask, w, 0)`` per leaf;
``update`` re-zeroes the pruned weights after every optimizer step (so they stay exactly zero,
whatever the optimizer's momentum does) and recomputes the masks every ``update_every`` steps
inside a ``lax.cond``, so that the expensive ranking runs only on those steps. ``finalize`` returns
the hard-masked dense params; the masks stay in the state for the encoders.

Since ``init`` and ``update`` keep the pruned weights at exact zero, ``apply_own`` (what the
training step uses, see :func:`jaxcomp.core.own_apply`) skips the forward's masking pass: it is
the identity on the weights with a masked derivative (:func:`mask_grad`), so the gradient, and with
it every optimizer (global-norm clipping included), is exactly that of ``where(mask, w, 0)``.

Pruned weights stay pruned: when masks are recomputed, the weights pruned so far rank below every
other weight, so with a non-decreasing sparsity the masks are nested (gradual pruning of Zhu and
Gupta, iterative pruning of Han et al.) and with a constant sparsity they do not change.

The sparsity may be a number, a schedule (``jaxcomp.schedules``), a ``{path: value}`` dict or an
ordered ``[(regex, value)]`` rule list of per-leaf values (layer scope), and is distributed over
leaves uniformly or by ERK (see :mod:`jaxcomp.prune._distribution`). A scheduled value ``s(t)``
with ERK gives leaf ``l`` the sparsity ``s(t) * s_l / s_final``, which keeps the total count at
``s(t) * N`` and reaches ERK's allocation at the end of the schedule.

References:
  Han, Pool, Tran and Dally, "Learning both weights and connections for efficient neural
  networks", NeurIPS 2015, arXiv:1506.02626.

  Zhu and Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
  compression", 2017, arXiv:1710.01878.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.core._map import leaf_values
from jaxcomp.core._map import leaves
from jaxcomp.core._map import placed
from jaxcomp.core._map import rebuild
from jaxcomp.core._map import select
from jaxcomp.core._map import selected
from jaxcomp.core._transform import Transform
from jaxcomp.prune._distribution import erk_sparsities
from jaxcomp.prune._masks import apply_masks
from jaxcomp.prune._masks import global_masks
from jaxcomp.prune._masks import layerwise_masks

__all__ = ["PrunerState", "build_pruner", "mask_grad"]

_SCOPES = ("layer", "global")
_DISTRIBUTIONS = ("uniform", "erk")


class PrunerState(NamedTuple):
    """The state of a :func:`build_pruner` transform without extra fields.

    Attributes:
      masks: a bool array per selected leaf (True = kept), ``MaskedNode()`` elsewhere.
    """

    masks: Any


def check_sparsity(sparsity: Any, *, fn: str, scope: str, distribution: str) -> Any:
    """Validates ``sparsity`` when a transform is built; returns it in canonical form."""
    checks.choice(scope, _SCOPES, fn=fn, name="scope")
    checks.choice(distribution, _DISTRIBUTIONS, fn=fn, name="distribution")
    if isinstance(sparsity, dict | list | tuple) and (scope, distribution) != ("layer", "uniform"):
        raise ValueError(
            f"{fn}: per-leaf sparsities (a dict or rule list) need scope='layer' and "
            f"distribution='uniform', got scope={scope!r}, distribution={distribution!r}"
        )
    one = lambda v, name: checks.schedule_or_number(v, fn=fn, name=name)
    return checks.per_leaf(sparsity, one, fn=fn, name="sparsity")


def leaf_sparsities(spec: Any, paths: list[str], weights: list[Any], fn: str, dist: str) -> list:
    """Per selected leaf: a float or a schedule (layer scope)."""
    if isinstance(spec, dict | list) or dist == "uniform":
        return leaf_values(spec, paths, fn=fn, name="sparsity")
    final = spec if isinstance(spec, float) else float(spec(10**9))
    per = erk_sparsities([tuple(w.shape) for w in weights], final)
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
    """``apply_own`` of a transform whose ``state.masks`` are kept by ``init``/``update``: the
    selected leaves pass through :func:`mask_grad` (their pruned entries are already zero)."""
    ws, ms = selected(state.masks, cparams), selected(state.masks, state.masks)
    return rebuild(state.masks, cparams, [mask_grad(w, m) for w, m in zip(ws, ms, strict=True)])


def build_pruner(
    score: Callable[..., jax.Array],
    *,
    sparsity: Any,
    where: Any = None,
    scope: str = "layer",
    distribution: str = "uniform",
    update_every: int = 1,
    name: str = "build_pruner",
    state_cls: type = PrunerState,
    init_extra: Callable[[Any, Any], dict[str, list[Any]]] | None = None,
    accumulate: Callable[..., dict[str, Any]] | None = None,
    prune_at_init: bool = True,
) -> Transform:
    """A mask-based pruning transform from a score function: the lowest scores are pruned.

    Every pruner of :mod:`jaxcomp.prune` (magnitude, random, Taylor, OBD) is this function with
    its own ``score``; a new criterion is one more. The transform keeps exact counts (layer-wise
    ``floor(s * n)`` zeros per leaf, or ``floor(s * N)`` over all selected leaves with
    ``scope="global"``), keeps pruned weights pruned when masks are recomputed (nested masks under
    a growing sparsity), re-zeroes them after every step, and recomputes the masks every
    ``update_every`` steps (see the module docstring). Hyperparameters are checked here, with
    messages naming ``name``.

    Args:
      score: ``score(w, leaf, step, **extra) -> scores`` for one selected leaf: ``w`` its weights,
        ``leaf`` its :class:`jaxcomp.core.Leaf` (path and index, for
        :func:`jaxcomp.core.leaf_key`), ``step`` the (traced) step, ``extra`` the leaf's extra
        state fields. Higher scores are kept; the shape is ``w``'s.
      sparsity: a number in ``[0, 1)``, a schedule, or (layer scope) ``{path: value}`` or
        ``[(regex, value)]`` per-leaf values.
      where: the leaves to prune (default :func:`jaxcomp.select.kernels`).
      scope: ``"layer"`` or ``"global"``.
      distribution: with ``scope="layer"``, ``"uniform"`` or ``"erk"``.
      update_every: recompute the masks every this many steps, an int >= 1.
      name: the factory's name, for messages.
      state_cls: the state NamedTuple; its first field is ``masks``, the others are the fields of
        ``init_extra`` (a state tree each, ``MaskedNode()`` at unselected leaves).
      init_extra: ``(params, spec) -> {field: [array per selected leaf]}`` (``spec`` as
        :func:`jaxcomp.core.select` returns it).
      accumulate: ``accumulate(w, g, **extra) -> extra`` for one leaf at every ``update`` with
        ``grads``; these fields restart from zero when the masks are recomputed.
      prune_at_init: compute the masks in ``init`` (False for criteria that need gradients).

    Returns:
      A :class:`jaxcomp.Transform` whose state is a ``state_cls``.

    Raises:
      ValueError: a sparsity outside ``[0, 1)``, an unknown scope or distribution,
        ``update_every < 1``.

    Examples:
        A criterion that prunes the weights closest to the layer's mean:

        >>> import jax.numpy as jnp
        >>> t = build_pruner(lambda w, *_: jnp.abs(w - w.mean()), sparsity=0.5, name="centred")
        >>> c, s = t.init({"Dense_0": {"kernel": jnp.array([[1.0, 2.0], [3.0, 10.0]])}})
        >>> c["Dense_0"]["kernel"].tolist()
        [[1.0, 0.0], [0.0, 10.0]]
    """
    sparsity = check_sparsity(sparsity, fn=name, scope=scope, distribution=distribution)
    checks.integer(update_every, fn=name, name="update_every")
    extra_fields = state_cls._fields[1:]

    def pack(spec: Any, masks: list[Any], extra: dict[str, list[Any]]) -> Any:
        return state_cls(placed(spec, masks), **{k: placed(spec, extra[k]) for k in extra_fields})

    def compute(spec, ws, masks, extra, step):
        lvs = leaves(spec)
        scores = [
            jnp.where(m, score(w, lf, step, **{k: extra[k][i] for k in extra_fields}), -jnp.inf)
            for i, (lf, w, m) in enumerate(zip(lvs, ws, masks, strict=True))
        ]  # pruned weights rank lowest, so masks are nested
        scores = [s.astype(jnp.float32) for s in scores]
        at = lambda v: v(step) if callable(v) else v
        if scope == "global":
            return global_masks(scores, at(sparsity))
        per = leaf_sparsities(sparsity, [lf.path for lf in lvs], ws, name, distribution)
        return layerwise_masks(scores, [at(v) for v in per])

    def init(params):
        spec = select(params, where, fn=name)
        ws = selected(spec, params)
        leaf_sparsities(sparsity, [lf.path for lf in leaves(spec)], ws, name, distribution)
        masks = [jnp.ones(jnp.shape(w), bool) for w in ws]
        extra = init_extra(params, spec) if init_extra is not None else {}
        if prune_at_init:
            masks = compute(spec, ws, masks, extra, 0)
        return rebuild(spec, params, zero_pruned(ws, masks)), pack(spec, masks, extra)

    def update(cparams, state, *, step, grads=None):
        spec = state.masks
        ws, masks = selected(spec, cparams), selected(spec, spec)
        extra = {k: selected(spec, getattr(state, k)) for k in extra_fields}
        if accumulate is not None and grads is not None:
            per = [
                accumulate(w, g, **{k: extra[k][i] for k in extra_fields})
                for i, (w, g) in enumerate(zip(ws, selected(spec, grads), strict=True))
            ]
            extra = {k: [p[k] for p in per] for k in extra_fields}
        step = jnp.asarray(step, jnp.int32)
        # re-zero with the current masks first: it fuses with the optimizer's update of the
        # weights; the branch that recomputes the masks then zeroes the newly pruned ones too
        ws = zero_pruned(ws, masks)

        def recompute(operand):
            ws, masks, extra = operand
            new = compute(spec, ws, masks, extra, step)
            if accumulate is not None:
                extra = {k: [jnp.zeros_like(x) for x in v] for k, v in extra.items()}
            return zero_pruned(ws, new), new, extra

        if update_every == 1:
            ws, masks, extra = recompute((ws, masks, extra))
        else:
            ws, masks, extra = jax.lax.cond(
                step % update_every == 0, recompute, lambda op: op, (ws, masks, extra)
            )
        return rebuild(spec, cparams, ws), pack(spec, masks, extra)

    return Transform(init, apply_masked, update, apply_masked, apply_own_masked)

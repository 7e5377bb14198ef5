"""Group-wise brain damage: whole rows of the im2col weight matrix, zeroed and penalized.

A convolution computes ``patches @ kernel.reshape(-1, out)``: the im2col matrix of the input
times the kernel as a ``(kh * kw * cin, cout)`` matrix. A row of that matrix is one tap ``(i, j)``
of one input channel ``c`` across all output filters; when a row is zero, the column of the
patches that it multiplies is never needed, so the convolution becomes a smaller dense product
(fewer columns in im2col). Lebedev and Lempitsky learn such sparsity with a group lasso over the
rows, then remove the rows of smallest norm:

* :func:`brain_damage_penalty`: ``strength * sum over rows of ||W[i, j, c, :]||_2``, for
  :func:`jaxcomp.train.make_train_step` ``(penalty=...)``.
* :func:`brain_damage`: a transform that zeroes the ``floor(sparsity * kh * kw * cin)`` rows of
  smallest L2 norm of every selected kernel (exact counts, nested masks under a growing sparsity,
  pruned rows kept at zero after each step, as :func:`jaxcomp.prune.build_pruner`).

Both act on convolution kernels (``ndim >= 3``, the last axis the output features); ``where=None``
selects every convolution kernel.

The groups here are the same for every layer shape, so :func:`group_pruner` (what
:func:`brain_damage` and :func:`jaxcomp.structured.kernel_level` are made of) takes the axes that
a group spans; its counts are per group, which :func:`jaxcomp.prune.build_pruner` (counts per
weight) cannot express.

References:
    Lebedev and Lempitsky, "Fast ConvNets using group-wise brain damage", CVPR 2016,
    arXiv:1506.02515.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.core._map import leaves
from jaxcomp.core._map import placed
from jaxcomp.core._map import rebuild
from jaxcomp.core._map import select
from jaxcomp.core._map import selected
from jaxcomp.core._transform import Transform
from jaxcomp.prune._masks import layerwise_masks
from jaxcomp.prune._pruner import PrunerState
from jaxcomp.prune._pruner import apply_masked
from jaxcomp.prune._pruner import apply_own_masked
from jaxcomp.prune._pruner import check_sparsity
from jaxcomp.prune._pruner import leaf_sparsities
from jaxcomp.prune._pruner import zero_pruned

__all__ = ["brain_damage", "brain_damage_penalty", "group_pruner", "row_norms", "safe_sqrt"]


def safe_sqrt(sq: jax.Array) -> jax.Array:
    """``sqrt(sq)`` with derivative 0 (not NaN) where ``sq`` is 0: a norm that pruned groups
    (all zero) do not poison."""
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def row_norms(w: jax.Array) -> jax.Array:
    """The L2 norm of every im2col row of a kernel: over the last axis, ``w.shape[:-1]``."""
    return safe_sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=-1))


def _conv_only(path: str, leaf: Any) -> str | None:
    if jnp.ndim(leaf) < 3:
        return f"it has {jnp.ndim(leaf)} axes; only convolution kernels (ndim >= 3) qualify"
    return None


def group_pruner(
    group_score: Callable[[jax.Array], jax.Array],
    group_axes: Callable[[jax.Array], tuple[int, ...]],
    *,
    sparsity: Any,
    where: Any,
    update_every: int,
    name: str,
    accepts: Callable[[str, Any], str | None] = _conv_only,
) -> Transform:
    """A transform that zeroes whole groups of weights of each selected leaf, by a group score.

    A group is every weight that shares its indices on the axes ``group_axes(w)`` does *not*
    return: the score of a leaf of that shape is ``group_score(w)``, with size-1 axes at the
    spanned axes (``keepdims``). Each leaf loses exactly ``floor(s * groups)`` groups (ties by
    position); pruned groups rank lowest when the masks are recomputed, so masks are nested.

    Args:
        group_score: ``w -> scores`` with ``keepdims=True`` over the spanned axes.
        group_axes: ``w -> the axes a group spans``.
        sparsity: a number in [0, 1), a schedule, or per-leaf values (the fraction of groups).
        where: the leaves (default: every kernel that ``accepts``).
        update_every: recompute the masks every this many steps.
        name: the factory's name, for messages.
        accepts: ``(path, leaf) -> None`` or the reason a leaf cannot be pruned this way.
    """
    sparsity = check_sparsity(sparsity, fn=name, scope="layer", distribution="uniform")
    checks.integer(update_every, fn=name, name="update_every")

    def compute(spec, ws, masks, step):
        per = leaf_sparsities(sparsity, [lf.path for lf in leaves(spec)], ws, name, "uniform")
        at = lambda v: v(step) if callable(v) else v
        scores = []
        for w, m in zip(ws, masks, strict=True):
            alive = jnp.any(m, axis=group_axes(w), keepdims=True)
            scores.append(jnp.where(alive, group_score(w).astype(jnp.float32), -jnp.inf))
        keep = layerwise_masks(scores, [at(v) for v in per])
        return [jnp.broadcast_to(k, w.shape) for k, w in zip(keep, ws, strict=True)]

    def init(params):
        spec = select(params, where, fn=name, accepts=accepts)
        ws = selected(spec, params)
        masks = compute(spec, ws, [jnp.ones(jnp.shape(w), bool) for w in ws], 0)
        return rebuild(spec, params, zero_pruned(ws, masks)), PrunerState(placed(spec, masks))

    def update(cparams, state, *, step, grads=None):
        del grads
        spec = state.masks
        ws, masks = selected(spec, cparams), selected(spec, spec)
        ws = zero_pruned(ws, masks)
        step = jnp.asarray(step, jnp.int32)

        def recompute(operand):
            ws, masks = operand
            new = compute(spec, ws, masks, step)
            return zero_pruned(ws, new), new

        if update_every == 1:
            ws, masks = recompute((ws, masks))
        else:
            ws, masks = jax.lax.cond(
                step % update_every == 0, recompute, lambda op: op, (ws, masks)
            )
        return rebuild(spec, cparams, ws), PrunerState(placed(spec, masks))

    return Transform(init, apply_masked, update, apply_masked, apply_own_masked)


def brain_damage(*, sparsity: Any, where: Any = None, update_every: int = 1) -> Transform:
    """Zeroes the im2col rows ``W[i, j, c, :]`` of smallest L2 norm of every convolution kernel.

    Args:
        sparsity: the fraction of each kernel's ``kh * kw * cin`` rows to zero: a number in
            [0, 1), a schedule, or per-leaf ``{path: value}`` / ``[(regex, value)]`` values. A
            kernel loses exactly ``floor(sparsity * kh * kw * cin)`` rows, each across all of its
            output filters.
        where: the kernels (default: every convolution kernel; a selected leaf with fewer than
            3 axes is a ``ValueError``).
        update_every: recompute the masks every this many steps; pruned rows are re-zeroed at
            every step.

    Returns:
        A :class:`jaxcomp.Transform` whose state is a :class:`jaxcomp.prune.PrunerState` (one
        boolean mask per selected kernel).

    Examples:
        >>> import jax.numpy as jnp
        >>> w = jnp.arange(1.0, 9.0).reshape(1, 2, 2, 2)  # rows of norm sqrt(5), 5, ...
        >>> c, s = brain_damage(sparsity=0.5).init({"Conv_0": {"kernel": w}})
        >>> c["Conv_0"]["kernel"].reshape(4, 2).tolist()
        [[0.0, 0.0], [0.0, 0.0], [5.0, 6.0], [7.0, 8.0]]
    """
    return group_pruner(
        lambda w: row_norms(w)[..., None],
        lambda w: (w.ndim - 1,),
        sparsity=sparsity,
        where=where,
        update_every=update_every,
        name="brain_damage",
    )


def brain_damage_penalty(*, strength: float, where: Any = None) -> Callable[..., jax.Array]:
    """The group lasso over im2col rows: ``strength * sum over rows (i, j, c) of ||W[i,j,c,:]||``.

    Its gradient at a nonzero row is ``strength * row / ||row||`` (and 0 at a zero row).

    Args:
        strength: the coefficient, ``>= 0``.
        where: the kernels (default: every convolution kernel).

    Returns:
        ``penalty(cparams, state=None) -> scalar``: jit-able, for
        ``jaxcomp.train.make_train_step(penalty=...)`` (the state is ignored).

    Examples:
        >>> import jax.numpy as jnp
        >>> pen = brain_damage_penalty(strength=0.5)
        >>> float(pen({"Conv_0": {"kernel": jnp.array([3.0, 4.0, 0.0, 0.0]).reshape(1, 1, 2, 2)}}))
        2.5
    """
    strength = checks.number(strength, fn="brain_damage_penalty", name="strength", low=0)

    def penalty(cparams: Any, state: Any = None) -> jax.Array:
        del state
        spec = select(cparams, where, fn="brain_damage_penalty", accepts=_conv_only)
        total = sum((jnp.sum(row_norms(w)) for w in selected(spec, cparams)), jnp.float32(0))
        return jnp.float32(strength) * total

    return penalty

"""Optimal Brain Surgeon, layer-wise (L-OBS): prune and compensate with the layer Hessian.

For a layer ``y = X W`` with kernel ``W`` of shape ``(in, out)``, the squared error of the
layer's output, ``||X W' - X W||^2 / (2n)``, is for each output column ``j`` a quadratic
``0.5 * d_j^T H d_j`` in the change ``d_j`` of that column, with the same Hessian
``H = X^T X / n`` for every column (plus a damping term ``lambda * I`` that keeps it invertible).
Hassibi and Stork's Optimal Brain Surgeon removes weight ``q`` of a column and moves the others to
minimize that error: the best change is ``d = -w_q / [H^-1]_qq * H^-1[:, q]``, and the error it
leaves is ``L_q = 0.5 * w_q**2 / [H^-1]_qq``. Removing the weight of least ``L_q``, then the next
with the inverse Hessian of the remaining weights (the downdate
``H^-1 <- H^-1 - H^-1[:, q] H^-1[q, :] / [H^-1]_qq``, which is exactly the inverse of ``H``
restricted to them), is greedy exact constrained least squares.

:func:`obs_kernel` does this per output column (columns vectorized with ``vmap``, processed in
chunks with ``lax.map`` to bound memory; the removals run in a ``lax.fori_loop``). How many weights
each column loses is decided first, layer-wise: ``floor(s * in * out)`` in total (exact), shared
among columns as the ``floor(s * n)`` smallest initial saliencies ``L_q`` fall. The greedy sequence
of a column does not depend on how far it goes, so several sparsities are computed in one pass
(snapshots at each column's counts).

Dong et al.'s L-OBS prunes each layer with the Hessian of its own output error, computed from the
inputs that the *dense* network feeds it (:func:`jaxcomp.prune.layer_hessians`).

References:
  Hassibi, B., Stork, D. G. "Second order derivatives for network pruning: Optimal Brain
  Surgeon." NeurIPS 1992 (NIPS 5, 1993).

  Dong, X., Chen, S., Pan, S. J. "Learning to prune deep neural networks via layer-wise optimal
  brain surgeon." NeurIPS 2017. arXiv:1705.07565.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.core import _checks as checks
from jaxcomp.core._map import by_path
from jaxcomp.core._map import leaves
from jaxcomp.core._map import placed
from jaxcomp.core._map import rebuild
from jaxcomp.core._map import select
from jaxcomp.core._map import selected
from jaxcomp.prune._masks import num_pruned

__all__ = ["ObsResult", "layer_hessian", "obs_kernel", "obs_prune"]

_CHUNK_FLOATS = 5_000_000


class ObsResult(NamedTuple):
    """What :func:`obs_prune` returns.

    Attributes:
      params: the pruned and compensated params (pruned weights exactly zero).
      masks: a bool mask per pruned leaf (True = kept), ``MaskedNode()`` elsewhere; pass it to
        :func:`jaxcomp.prune.fixed_masks` to retrain.
    """

    params: Any
    masks: Any


def layer_hessian(x: jax.Array, *, damping: float = 1e-2) -> jax.Array:
    """``H = X^T X / n + damping * mean(diag(X^T X / n)) * I`` for the 2-D layer input ``x``.

    The damping is relative to the mean diagonal, so one value suits layers of any input scale
    (as in OBC and SparseGPT); ``damping=0`` gives the plain Gram matrix.

    Args:
      x: ``(n, fan_in)`` layer inputs (:func:`jaxcomp.adapt.capture` with ``rows=True``).
      damping: ``>= 0``.

    Returns:
      The ``(fan_in, fan_in)`` float32 Hessian.
    """
    if not damping >= 0:
        raise ValueError(f"layer_hessian: damping must be >= 0, got {damping!r}")
    x = jnp.asarray(x, jnp.float32)
    return damped(x.T @ x / x.shape[0], damping)


def damped(h: jax.Array, damping: float) -> jax.Array:
    """``h + damping * mean(diag(h)) * I``: the relative damping of :func:`layer_hessian`."""
    return h + damping * jnp.mean(jnp.diagonal(h)) * jnp.eye(h.shape[0], dtype=h.dtype)


def _sparsity_values(sparsity: Any, fn: str) -> tuple[bool, list[float]]:
    """Whether ``sparsity`` is a sequence, and its values checked to be numbers in [0, 1)."""
    many = isinstance(sparsity, list | tuple)
    return many, [
        checks.fraction(v, fn=fn, name="sparsity") for v in (sparsity if many else [sparsity])
    ]


def _column(w, hinv, counts, steps):
    """Greedy OBS on one column; snapshots of (w, mask) when the removals reach each count."""
    n = w.shape[0]
    idx = jnp.arange(n)
    last = jnp.max(counts)
    snaps_w = jnp.broadcast_to(w, (counts.shape[0], n))
    snaps_m = jnp.ones((counts.shape[0], n), bool)

    def body(t, carry):
        w, hinv, mask, snaps_w, snaps_m = carry
        d = jnp.diagonal(hinv)
        sal = jnp.where(mask, jnp.square(w) / jnp.where(mask, jnp.maximum(d, 1e-30), 1.0), jnp.inf)
        q = jnp.argmin(sal)
        active = t < last
        hq = hinv[:, q]
        dq = jnp.maximum(hinv[q, q], 1e-30)
        w = w - jnp.where(active, w[q] / dq, 0.0) * hq
        mask = mask & ((idx != q) | ~active)
        w = jnp.where(mask, w, 0.0)
        hinv = hinv - jnp.where(active, 1.0 / dq, 0.0) * jnp.outer(hq, hq)
        hit = (t + 1 == counts)[:, None]
        snaps_w = jnp.where(hit, w[None, :], snaps_w)
        snaps_m = jnp.where(hit, mask[None, :], snaps_m)
        return w, hinv, mask, snaps_w, snaps_m

    carry = (w, hinv, jnp.ones((n,), bool), snaps_w, snaps_m)
    out = jax.lax.fori_loop(0, steps, body, carry)
    return out[3], out[4]


@jax.jit
def _prepare(w2, h):
    hinv = jnp.linalg.inv(0.5 * (h + h.T))
    hinv = 0.5 * (hinv + hinv.T)
    return hinv, jnp.square(w2) / jnp.diagonal(hinv)[:, None]


@partial(jax.jit, static_argnames=("chunk",))
def _obs_columns(w2, hinv, counts, steps, *, chunk):
    """``w2 (in, out)``, ``counts (T, out)`` -> snapshots ``(T, in, out)`` of weights and masks."""
    f = lambda args: _column(args[0], hinv, args[1], steps)
    sw, sm = jax.lax.map(f, (w2.T, counts.T), batch_size=chunk)
    return jnp.moveaxis(sw, 0, -1), jnp.moveaxis(sm, 0, -1)


def obs_kernel(
    kernel: jax.Array, hessian: jax.Array, *, sparsity: float | Sequence[float]
) -> tuple[jax.Array, jax.Array] | list[tuple[jax.Array, jax.Array]]:
    """Layer-wise OBS of one kernel: ``floor(s * size)`` weights removed, the rest compensated.

    Args:
      kernel: ``(in, out)`` (Dense) or ``(..., in, out)`` (convolution; all axes but the last are
        the fan-in, ordered like :func:`jaxcomp.adapt.conv_patches`).
      hessian: ``(fan_in, fan_in)``, symmetric positive definite (:func:`layer_hessian`).
      sparsity: a number in ``[0, 1)``, or a sequence of them (computed in one pass).

    Returns:
      ``(new_kernel, mask)``, or a list of them for a sequence of sparsities.

    Raises:
      ValueError: a sparsity outside ``[0, 1)``, or a Hessian of the wrong shape.
    """
    many, values = _sparsity_values(sparsity, "obs_kernel")
    shape, dtype = kernel.shape, kernel.dtype
    w2 = jnp.asarray(kernel, jnp.float32).reshape((-1, shape[-1]))
    fan_in, out = w2.shape
    if tuple(hessian.shape) != (fan_in, fan_in):
        raise ValueError(
            f"obs_kernel: hessian must be ({fan_in}, {fan_in}) for a kernel of shape {shape}, "
            f"got {hessian.shape}"
        )
    hinv, sal = _prepare(w2, jnp.asarray(hessian, jnp.float32))
    # per-column counts: the floor(s * size) smallest initial saliencies (stable: lower index first)
    order = np.argsort(np.asarray(sal).ravel(), kind="stable")
    column = order % out
    counts = np.stack(
        [np.bincount(column[: num_pruned(v, w2.size)], minlength=out) for v in values]
    ).astype(np.int32)
    steps = int(counts.max())
    chunk = int(np.clip(_CHUNK_FLOATS // (fan_in * fan_in), 1, out))
    sw, sm = _obs_columns(w2, hinv, jnp.asarray(counts), jnp.int32(steps), chunk=chunk)
    res = [(sw[i].reshape(shape).astype(dtype), sm[i].reshape(shape)) for i in range(len(values))]
    return res if many else res[0]


def obs_prune(
    params: Any,
    hessians: dict[str, jax.Array],
    *,
    sparsity: float | Sequence[float],
    where: Any = None,
) -> ObsResult | list[ObsResult]:
    """Layer-wise OBS of every selected kernel (see the module docstring).

    Args:
      params: the dense params.
      hessians: ``{kernel_path: H}`` (:func:`jaxcomp.prune.layer_hessians`).
      sparsity: the sparsity of each selected leaf, in ``[0, 1)``, or a sequence of them.
      where: the kernels (default :func:`jaxcomp.select.kernels`).

    Returns:
      An :class:`ObsResult`, or a list of them (one per sparsity).

    Raises:
      ValueError: a sparsity outside ``[0, 1)``, or a selected kernel without a Hessian.
    """
    many, values = _sparsity_values(sparsity, "obs_prune")
    spec = select(params, where, fn="obs_prune")
    kernels = selected(spec, params)
    hs = by_path(
        hessians, [lf.path for lf in leaves(spec)],
        [(int(np.prod(w.shape[:-1])),) * 2 for w in kernels], what="obs_prune(hessians=...)",
    )  # fmt: skip
    per_leaf = [obs_kernel(w, h, sparsity=values) for w, h in zip(kernels, hs, strict=True)]
    results = []
    for i in range(len(values)):
        ws = [r[i][0] for r in per_leaf]
        ms = [r[i][1] for r in per_leaf]
        results.append(ObsResult(rebuild(spec, params, ws), placed(spec, ms)))
    return results if many else results[0]

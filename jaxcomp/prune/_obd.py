"""Optimal Brain Damage: pruning by the saliency ``0.5 * h_ii * w_i**2``.

LeCun, Denker and Solla approximate the increase of the training loss when weight ``i`` is set to
zero by the second-order term of its Taylor expansion at a minimum, keeping only the Hessian's
diagonal: ``0.5 * h_ii * w_i**2``. This module computes that diagonal two ways:

* :func:`hutchinson_diag`: Hutchinson's estimator ``E[z * (H z)]`` with Rademacher ``z``
  (unbiased, since ``E[z_i z_j] = delta_ij``); each ``H z`` is a forward-over-reverse
  Hessian-vector product (``jax.jvp`` of ``jax.grad``), so it costs a few gradients, whatever the
  number of weights.
* :func:`exact_hessian_diag`: one Hessian-vector product per selected weight, with unit tangents;
  exact, for small layers and tests.

:func:`obd` is a pruning transform ranking by the saliency, given the diagonal (a tree, or a
function of the params that computes one at ``init``).

References:
  LeCun, Y., Denker, J. S., Solla, S. A. "Optimal brain damage." NeurIPS 1989 (NIPS 2, 1990).

  Hutchinson, M. F. "A stochastic estimator of the trace of the influence matrix for Laplacian
  smoothing splines." Communications in Statistics - Simulation and Computation, 1990.

  Bekas, C., Kokiopoulou, E., Saad, Y. "An estimator for the diagonal of a matrix." Applied
  Numerical Mathematics, 2007.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.core._map import by_path
from jaxcomp.core._map import leaves
from jaxcomp.core._map import placed
from jaxcomp.core._map import rebuild
from jaxcomp.core._map import select
from jaxcomp.core._map import selected
from jaxcomp.core._transform import Transform
from jaxcomp.prune._pruner import build_pruner

__all__ = [
    "ObdState",
    "exact_hessian_diag",
    "gauss_newton_diag",
    "hutchinson_diag",
    "obd",
    "obd_saliency",
]


def _hvp(loss_fn: Callable[[Any], jax.Array], params: Any, v: Any) -> Any:
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def hutchinson_diag(
    loss_fn: Callable[[Any], jax.Array],
    params: Any,
    *,
    key: jax.Array,
    samples: int = 16,
    where: Any = None,
) -> Any:
    """Hutchinson's estimate of the Hessian diagonal, ``mean_k z_k * (H z_k)``, Rademacher ``z``.

    Args:
      loss_fn: ``loss_fn(params) -> scalar`` (close over the data batch).
      params: the point at which the Hessian is taken.
      key: a PRNG key for the probe vectors.
      samples: the number of probes, an int >= 1; the estimate's variance falls as ``1/samples``.
      where: the leaves to estimate (default :func:`jaxcomp.select.kernels`); the probes are zero
        on the others.

    Returns:
      A tree with the structure of ``params``: the estimate at selected leaves, ``MaskedNode()``
      elsewhere.

    Raises:
      ValueError: ``samples < 1``.
    """
    checks.integer(samples, fn="hutchinson_diag", name="samples")
    spec = select(params, where, fn="hutchinson_diag")

    @jax.jit
    def run(params, key):
        ws = selected(spec, params)

        def probe(k):
            z = [
                jax.random.rademacher(jax.random.fold_in(k, i), jnp.shape(w), jnp.float32)
                for i, w in enumerate(ws)
            ]
            z = [zi.astype(w.dtype) for zi, w in zip(z, ws, strict=True)]
            hz = selected(spec, _hvp(loss_fn, params, _zeros_except(spec, params, z)))
            return [zi * h for zi, h in zip(z, hz, strict=True)]

        def body(i, acc):
            return [a + p for a, p in zip(acc, probe(jax.random.fold_in(key, i)), strict=True)]

        zero = [jnp.zeros(jnp.shape(w), w.dtype) for w in ws]
        total = jax.lax.fori_loop(0, samples, body, zero)
        return [t / samples for t in total]

    return placed(spec, run(params, key))


def _zeros_except(spec: Any, params: Any, values: list[Any]) -> Any:
    """The params tree with zeros at unselected leaves and ``values`` at the selected ones."""
    return rebuild(spec, jax.tree.map(jnp.zeros_like, params), values)


def exact_hessian_diag(
    loss_fn: Callable[[Any], jax.Array], params: Any, *, where: Any = None, batch_size: int = 64
) -> Any:
    """The exact Hessian diagonal of the selected leaves: one Hessian-vector product per weight.

    Args:
      loss_fn: ``loss_fn(params) -> scalar``.
      params: the point at which the Hessian is taken.
      where: the leaves (default :func:`jaxcomp.select.kernels`); keep them small.
      batch_size: how many Hessian-vector products run at once (vectorized).

    Returns:
      A tree with the structure of ``params``: ``H_ii`` at selected leaves, ``MaskedNode()``
      elsewhere.
    """
    spec = select(params, where, fn="exact_hessian_diag")
    ws = selected(spec, params)
    out = []
    for j, w in enumerate(ws):

        def one(i, j=j, w=w):
            e = jnp.zeros((w.size,), w.dtype).at[i].set(1).reshape(w.shape)
            vals = [jnp.zeros_like(x) for x in ws]
            vals[j] = e
            h = selected(spec, _hvp(loss_fn, params, _zeros_except(spec, params, vals)))[j]
            return jnp.ravel(h)[i]

        diag = jax.jit(lambda idx, one=one: jax.lax.map(one, idx, batch_size=batch_size))
        out.append(diag(jnp.arange(w.size)).reshape(w.shape))
    return placed(spec, out)


def gauss_newton_diag(
    logits_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    x: jax.Array,
    *,
    where: Any = None,
    batch_size: int = 32,
) -> Any:
    """The exact diagonal of the Gauss-Newton matrix of the mean softmax cross-entropy.

    ``G = mean_n J_n^T (diag(p_n) - p_n p_n^T) J_n`` with ``J_n`` the Jacobian of example ``n``'s
    logits and ``p_n`` its predicted probabilities (for softmax cross-entropy this is also the
    Fisher information). Unlike the Hessian it is positive semi-definite, so the OBD saliencies
    are never negative; it is the positive curvature LeCun et al. used (their Levenberg-Marquardt
    approximation). ``diag(G)_k = mean_n [sum_c p_nc J_nck^2 - (sum_c p_nc J_nck)^2]``, computed
    with one vector-Jacobian product per example and class, examples vectorized in batches.

    Args:
      logits_fn: ``logits_fn(params, x) -> (batch, classes)``.
      params: the point at which ``G`` is taken.
      x: the examples, ``(n, ...)``.
      where: the leaves (default :func:`jaxcomp.select.kernels`).
      batch_size: examples per vectorized batch, an int >= 1.

    Returns:
      A tree with the structure of ``params``: the diagonal at selected leaves, ``MaskedNode()``
      elsewhere.
    """
    checks.integer(batch_size, fn="gauss_newton_diag", name="batch_size")
    spec = select(params, where, fn="gauss_newton_diag")

    @jax.jit
    def run(params, x):
        def one(xi):
            logits, vjp = jax.vjp(lambda p: logits_fn(p, xi[None])[0], params)
            prob = jax.nn.softmax(logits.astype(jnp.float32))
            rows = selected(spec, jax.vmap(vjp)(jnp.eye(logits.shape[0], dtype=logits.dtype))[0])
            out = []
            for j in rows:
                j = j.astype(jnp.float32).reshape((prob.shape[0], -1))
                d = prob @ jnp.square(j) - jnp.square(prob @ j)
                out.append(d)
            return out

        parts = jax.lax.map(one, x, batch_size=batch_size)
        means = [jnp.mean(d, axis=0) for d in parts]
        return [m.reshape(jnp.shape(w)) for m, w in zip(means, selected(spec, params), strict=True)]

    return placed(spec, run(params, jnp.asarray(x)))


def obd_saliency(params: Any, hessian_diag: Any) -> Any:
    """The OBD saliency ``0.5 * h_ii * w_i**2`` of every leaf (MaskedNode leaves passed over).

    Args:
      params: the weights.
      hessian_diag: the Hessian diagonal with the structure of ``params`` (``MaskedNode()``
        where there is none).

    Returns:
      A tree of saliencies with the structure of ``hessian_diag``.
    """
    return jax.tree.map(lambda h, w: 0.5 * h * jnp.square(w), hessian_diag, params)


class ObdState(NamedTuple):
    """The state of :func:`obd`.

    Attributes:
      masks: a bool array per selected leaf (True = kept), ``MaskedNode()`` elsewhere.
      hessian_diag: the Hessian diagonal of each selected leaf (float32), fixed at ``init``.
    """

    masks: Any
    hessian_diag: Any


def obd(
    *,
    sparsity: Any,
    hessian_diag: Any,
    where: Any = None,
    scope: str = "layer",
    distribution: str = "uniform",
    update_every: int = 1,
) -> Transform:
    """Optimal Brain Damage: prunes the weights of least saliency ``0.5 * h_ii * w_i**2``.

    The saliency uses the current weights and the diagonal given here, so with a schedule the
    masks follow the weights as they train while the curvature stays that of ``init``. For
    LeCun et al.'s procedure (train, compute the diagonal, prune, retrain, repeat), build a new
    ``obd`` per round. With ``scope="global"`` the saliencies of all layers, in units of the loss,
    are ranked together.

    Args:
      sparsity: as for :func:`magnitude`.
      hessian_diag: the diagonal: a tree holding an array of the leaf's shape at every selected
        path (other leaves may be anything, or ``MaskedNode()``), as :func:`hutchinson_diag` and
        :func:`exact_hessian_diag` return; or a function ``params -> tree`` that ``init`` calls.
      where: the leaves to prune (default :func:`jaxcomp.select.kernels`).
      scope: ``"layer"`` or ``"global"``.
      distribution: ``"uniform"`` or ``"erk"`` (layer scope).
      update_every: recompute the masks every this many steps.

    Returns:
      A :class:`~jaxcomp.Transform` whose state is an :class:`ObdState`.

    Raises:
      ValueError: as :func:`magnitude`; ``hessian_diag`` is None; in ``init``, a selected leaf has
        no diagonal of its shape.

    References:
      LeCun, Denker and Solla, "Optimal brain damage", NeurIPS 1989.
    """
    if hessian_diag is None:
        raise ValueError(
            "obd: hessian_diag must be a tree of diagonals or a function params -> tree"
        )

    def init_extra(params, spec):
        tree = hessian_diag(params) if callable(hessian_diag) else hessian_diag
        ws = selected(spec, params)
        paths = [lf.path for lf in leaves(spec)]
        diags = by_path(tree, paths, [jnp.shape(w) for w in ws], what="obd(hessian_diag=...)")
        return {"hessian_diag": [jnp.asarray(h, jnp.float32) for h in diags]}

    return build_pruner(
        lambda w, leaf, step, hessian_diag: 0.5 * hessian_diag * jnp.square(w.astype(jnp.float32)),
        sparsity=sparsity, where=where, scope=scope, distribution=distribution,
        update_every=update_every, name="obd", state_cls=ObdState, init_extra=init_extra,
    )  # fmt: skip

"""Unstructured pruning by magnitude, at random, and by first-order Taylor saliency.

* :func:`magnitude` prunes the weights of smallest ``|w|``: per layer, or with one threshold over
  all selected layers (``scope="global"``). With a constant sparsity it is one-shot pruning; with
  Zhu and Gupta's cubic schedule and masks recomputed every ``update_every`` steps it is gradual
  pruning; with a step schedule it is Han et al.'s iterative prune-and-retrain.
* :func:`random` prunes a random subset (the baseline every criterion must beat). Its scores are
  drawn once from ``key`` (one stream per leaf), so masks at growing sparsities are nested.
* :func:`taylor` prunes by ``|w * g|``, the first-order Taylor estimate of the change of the loss
  when a weight is removed, accumulated over the steps since the last recomputation. It needs
  gradients, so ``init`` keeps every weight and the first masks come at the first
  ``update`` on the ``update_every`` grid.

References:
  Han, S., Pool, J., Tran, J., Dally, W. J. "Learning both weights and connections for efficient
  neural networks." NeurIPS 2015. arXiv:1506.02626.

  Zhu, M., Gupta, S. "To prune, or not to prune: exploring the efficacy of pruning for model
  compression." 2017. arXiv:1710.01878.

  Molchanov, P., Tyree, S., Karras, T., Aila, T., Kautz, J. "Pruning convolutional neural
  networks for resource efficient inference." ICLR 2017. arXiv:1611.06440.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.core._map import leaf_key
from jaxcomp.core._map import selected
from jaxcomp.core._transform import Transform
from jaxcomp.prune._pruner import build_pruner

__all__ = [
    "MagnitudeState",
    "RandomState",
    "TaylorState",
    "magnitude",
    "random",
    "taylor",
    "taylor_saliency",
]


class MagnitudeState(NamedTuple):
    """The state of :func:`magnitude`.

    Attributes:
      masks: a bool array per selected leaf (True = kept), ``MaskedNode()`` elsewhere.
    """

    masks: Any


class RandomState(NamedTuple):
    """The state of :func:`random`: the bool ``masks`` (see :class:`MagnitudeState`)."""

    masks: Any


class TaylorState(NamedTuple):
    """The state of :func:`taylor`.

    Attributes:
      masks: a bool array per selected leaf, ``MaskedNode()`` elsewhere.
      saliency: ``sum |w * g|`` over the steps since the masks were last recomputed.
    """

    masks: Any
    saliency: Any


def magnitude(
    *,
    sparsity: Any,
    where: Any = None,
    scope: str = "layer",
    distribution: str = "uniform",
    update_every: int = 1,
) -> Transform:
    """Prunes the weights of smallest magnitude, with exact counts.

    Args:
      sparsity: the fraction of weights to prune: a number in ``[0, 1)``, a schedule
        (``jaxcomp.schedules.polynomial(0, 0.9, begin=..., end=...)`` for gradual pruning, a
        ``step`` schedule for iterative pruning), or, with ``scope="layer"``, per-leaf values as a
        ``{path: value}`` dict or ``[(regex, value)]`` rules (from :func:`erk`, :func:`uniform`
        or :func:`sparsities_for_drop`).
      where: the leaves to prune (default :func:`jaxcomp.select.kernels`).
      scope: ``"layer"``: each leaf of ``n`` weights has exactly ``floor(s * n)`` zeros;
        ``"global"``: one threshold, exactly ``floor(s * N)`` zeros over the ``N`` selected weights.
      distribution: with ``scope="layer"``, ``"uniform"`` (every leaf at ``s``) or ``"erk"``.
      update_every: recompute the masks every this many steps (``update`` with ``step`` a multiple
        of it); pruned weights are re-zeroed at every step.

    Returns:
      A :class:`~jaxcomp.Transform` whose state is a :class:`MagnitudeState`.

    Raises:
      ValueError: a sparsity outside ``[0, 1)``, an unknown scope or distribution, or
        ``update_every < 1``.

    Examples:
        >>> import jax.numpy as jnp
        >>> t = magnitude(sparsity=0.5)
        >>> c, s = t.init({"Dense_0": {"kernel": jnp.array([[1.0, -4.0], [3.0, 2.0]])}})
        >>> c["Dense_0"]["kernel"].tolist()
        [[0.0, -4.0], [3.0, 0.0]]
    """
    return build_pruner(
        lambda w, *_: jnp.abs(w), sparsity=sparsity, where=where, scope=scope,
        distribution=distribution, update_every=update_every, name="magnitude",
        state_cls=MagnitudeState,
    )  # fmt: skip


def random(
    *,
    sparsity: Any,
    key: jax.Array,
    where: Any = None,
    scope: str = "layer",
    distribution: str = "uniform",
    update_every: int = 1,
) -> Transform:
    """Prunes a random subset of weights (the baseline), with exact counts.

    Args:
      sparsity: as for :func:`magnitude`.
      key: a PRNG key; the scores of the ``i``-th selected leaf are
        ``uniform(fold_in(key, i))``, the same at every recomputation.
      where: the leaves to prune (default :func:`jaxcomp.select.kernels`).
      scope: ``"layer"`` or ``"global"``.
      distribution: ``"uniform"`` or ``"erk"`` (layer scope).
      update_every: recompute the masks every this many steps.

    Returns:
      A :class:`~jaxcomp.Transform` whose state is a :class:`RandomState`.

    Raises:
      ValueError: as :func:`magnitude`, or ``key`` is not a PRNG key.
    """
    checks.key(key, fn="random")
    return build_pruner(
        lambda w, leaf, step: jax.random.uniform(leaf_key(key, leaf), jnp.shape(w)),
        sparsity=sparsity, where=where, scope=scope, distribution=distribution,
        update_every=update_every, name="random", state_cls=RandomState,
    )  # fmt: skip


def taylor_saliency(params: Any, grads: Any) -> Any:
    """The first-order Taylor saliency ``|w * g|`` of every leaf.

    Args:
      params: a pytree of weights.
      grads: the gradient of the loss, with the structure of ``params``.

    Returns:
      A pytree of non-negative saliencies.
    """
    return jax.tree.map(lambda w, g: jnp.abs(w * g), params, grads)


def taylor(
    *,
    sparsity: Any,
    where: Any = None,
    scope: str = "layer",
    distribution: str = "uniform",
    update_every: int = 1,
) -> Transform:
    """Prunes by the accumulated first-order Taylor saliency ``sum_t |w_t * g_t|``.

    ``update`` adds ``|w * g|`` (with the ``grads`` it receives) to the state's saliency at every
    step, and on steps that are multiples of ``update_every`` ranks by it and starts a new sum.
    ``init`` prunes nothing (there are no gradients yet).

    Args:
      sparsity: as for :func:`magnitude`.
      where: the leaves to prune (default :func:`jaxcomp.select.kernels`).
      scope: ``"layer"`` or ``"global"``.
      distribution: ``"uniform"`` or ``"erk"`` (layer scope).
      update_every: recompute the masks every this many steps.

    Returns:
      A :class:`~jaxcomp.Transform` whose state is a :class:`TaylorState`.

    References:
      Molchanov et al., "Pruning convolutional neural networks for resource efficient
      inference", ICLR 2017, arXiv:1611.06440.
    """

    def init_extra(params, spec):
        return {"saliency": [jnp.zeros(jnp.shape(w), jnp.float32) for w in selected(spec, params)]}

    def accumulate(w, g, saliency):
        return {"saliency": saliency + jnp.abs(w * g).astype(jnp.float32)}

    return build_pruner(
        lambda w, leaf, step, saliency: saliency, sparsity=sparsity, where=where, scope=scope,
        distribution=distribution, update_every=update_every, name="taylor",
        state_cls=TaylorState, init_extra=init_extra, accumulate=accumulate, prune_at_init=False,
    )  # fmt: skip

"""Loss-aware binarization (Hou, Yao and Kwok 2017).

LAB binarizes with the curvature of the loss in mind: a proximal Newton step with a diagonal
Hessian approximation ``d`` gives the closed form

    ``w_hat = alpha * b``,  ``b = sign(w)``,  ``alpha = ||d * w||_1 / ||d||_1``

per layer, where plain binary-weight networks use ``alpha = mean |w|`` (``d = 1``). Like the paper,
the curvature is Adam's second moment estimate: ``d = sqrt(v_hat) + eps``, with
``v <- b2 * v + (1 - b2) * g**2`` and ``v_hat = v / (1 - b2**t)``.

How ``d`` reaches the transform: ``update`` receives the gradients the optimizer received
(``jc.train.make_train_step`` passes them), so the transform keeps its own copy of Adam's second
moment, updated by exactly Adam's rule. With the same ``b2`` it equals ``optax.adam``'s ``nu`` leaf
for leaf (the tests check it), so nothing has to be threaded from the optimizer's state. To use
another curvature, replace the state's ``nu`` (and ``count``) with ``state._replace(...)``. Before
the first update (``count == 0``) ``d = 1`` and ``alpha`` is the binary-weight-network scale.

References:
  Hou, Yao and Kwok, "Loss-aware binarization of deep networks", ICLR 2017, arXiv:1611.01600.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcomp.core import Transform
from jaxcomp.core import _checks as checks
from jaxcomp.core._map import map_leaves
from jaxcomp.core._map import map_state
from jaxcomp.quant._binary import _qarray
from jaxcomp.quant._binary import channel_spec
from jaxcomp.quant._core import broadcast_channel
from jaxcomp.quant._core import reduce_axes

__all__ = ["LossAwareBinaryState", "lab_scale", "loss_aware_binary"]


class LossAwareBinaryState(NamedTuple):
    """The state of :func:`loss_aware_binary`.

    Attributes:
      nu: per binarized leaf, Adam's second moment estimate of its gradient (``MaskedNode()``
        elsewhere).
      count: the number of updates with gradients (int32), for Adam's bias correction.
      spec: a :class:`jaxcomp.core.Leaf` per binarized leaf holding its channel ``axis`` (None:
        per layer), ``MaskedNode()`` elsewhere.
    """

    nu: Any
    count: jax.Array
    spec: Any


def lab_scale(w: jax.Array, d: jax.Array, axis: int | None = None) -> jax.Array:
    """LAB's ``alpha = ||d * w||_1 / ||d||_1`` (per channel along ``axis``, or per tensor)."""
    red = reduce_axes(w.ndim, axis)
    return jnp.sum(d * jnp.abs(w), axis=red) / jnp.sum(d, axis=red)


def loss_aware_binary(
    *, b2: float = 0.999, eps: float = 1e-8, per_channel: bool = False, where: Any = None
) -> Transform:
    """Loss-aware binarization: ``alpha(d) * sign(w)`` with Adam's curvature ``d``.

    Args:
      b2: the decay of the second moment estimate, in ``[0, 1)``; use the optimizer's (optax's
        default 0.999) so that ``d`` is Adam's.
      eps: added to ``sqrt(v_hat)``, > 0.
      per_channel: one ``alpha`` per output channel instead of per layer (the paper's).
      where: the leaves to binarize (default :func:`jaxcomp.select.kernels`).

    Returns:
      A :class:`jaxcomp.Transform` with a :class:`LossAwareBinaryState`. ``update`` folds its
      ``grads`` into the second moment; ``apply`` is ``alpha * sign(w)`` with a straight-through
      gradient; ``finalize`` gives ``QuantizedArray(codes=sign(w), scale=alpha)``.

    Raises:
      ValueError: ``b2`` or ``eps`` out of range.
    """
    checks.fraction(b2, fn="loss_aware_binary", name="b2")
    checks.number(eps, fn="loss_aware_binary", name="eps", low=0, low_open=True)

    def init(params):
        spec = channel_spec(params, where, "loss_aware_binary", per_channel)
        nu = map_state(lambda _, w: jnp.zeros_like(w), spec, params)
        return params, LossAwareBinaryState(nu, jnp.zeros((), jnp.int32), spec)

    def curvature(nu, count):
        t = count.astype(jnp.float32)
        v_hat = nu / jnp.maximum(1.0 - b2**t, 1e-30)
        return jnp.where(count > 0, jnp.sqrt(v_hat) + eps, jnp.ones_like(nu))

    def alpha_sign(w, nu, ax, count):
        alpha = lab_scale(w, curvature(nu, count), ax)
        b = jnp.where(w >= 0, 1.0, -1.0).astype(w.dtype)
        return b, alpha

    def apply(cparams, state):
        def one(leaf, w, nu):
            ax = leaf["axis"]
            b, alpha = alpha_sign(jax.lax.stop_gradient(w), nu, ax, state.count)
            w_hat = (broadcast_channel(alpha, w.ndim, ax) * b).astype(w.dtype)
            return w + jax.lax.stop_gradient(w_hat - w)

        return map_leaves(one, state.spec, cparams, state.nu)

    def update(cparams, state, *, step, grads=None):
        del step
        if grads is None:
            return cparams, state
        nu = map_leaves(
            lambda _, v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.spec, state.nu, grads
        )
        return cparams, LossAwareBinaryState(nu, state.count + 1, state.spec)

    def finalize(cparams, state):
        def one(leaf, w, nu):
            ax = leaf["axis"]
            return _qarray(*alpha_sign(w, nu, ax, state.count), ax, 1, w.dtype)

        return map_leaves(one, state.spec, cparams, state.nu)

    return Transform(init, apply, update, finalize)

"""Weight distortions during training, to make a network robust to them (Merolla et al. 2016).

Merolla et al. observe that networks trained under a distortion of their weights (additive or
multiplicative noise, binarization) tolerate that distortion, and others, at test time: the
training finds flat regions of the loss. :func:`noise` distorts the selected weights in the
forward pass with fresh Gaussian noise at every step (a key in the state, split at each
``update``; the noise itself gets no gradient, so the weights receive the gradient of the
distorted forward), and ``finalize`` returns the clean weights. Binarization
after training is :func:`binary_weights`' ``finalize`` (or ``apply``) run on the trained weights.

* ``kind="additive"``: ``w + std * rms(W) * e`` (the noise is relative to the layer's RMS weight,
  so one ``std`` suits every layer);
* ``kind="multiplicative"``: ``w * (1 + std * e)``;

with ``e ~ N(0, 1)`` drawn independently per weight.

References:
  Merolla, Appuswamy, Arthur, Esser and Modha, "Deep neural networks are robust to weight
  binarization and other non-linear distortions", 2016, arXiv:1606.01981.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcomp.core import Transform
from jaxcomp.core import _checks as checks
from jaxcomp.core._map import leaf_key
from jaxcomp.core._map import map_leaves
from jaxcomp.core._map import select
from jaxcomp.quant._core import key_data
from jaxcomp.quant._core import split_key_data

__all__ = ["NoiseState", "noise"]

KINDS = ("additive", "multiplicative")


class NoiseState(NamedTuple):
    """The state of :func:`noise`.

    Attributes:
      key: raw ``uint32`` PRNG key data, split at each ``update``.
      spec: a :class:`jaxcomp.core.Leaf` per distorted leaf, ``MaskedNode()`` elsewhere.
    """

    key: jax.Array
    spec: Any


def noise(*, std: float, kind: str = "additive", key: jax.Array, where: Any = None) -> Transform:
    """Gaussian weight noise in the forward pass, fresh at every step (Merolla et al. 2016).

    Args:
      std: the noise level, >= 0 (relative: to the layer's RMS weight for ``"additive"``, to
        each weight for ``"multiplicative"``).
      kind: ``"additive"`` or ``"multiplicative"``.
      key: the PRNG key (required).
      where: the leaves to distort (default :func:`jaxcomp.select.kernels`).

    Returns:
      A :class:`jaxcomp.Transform` with a :class:`NoiseState`; ``finalize`` returns the clean
      weights.

    Raises:
      ValueError: ``std < 0``, an unknown ``kind``, or a missing key.
    """
    std = checks.number(std, fn="noise", name="std", low=0)
    checks.choice(kind, KINDS, fn="noise", name="kind")
    kd = key_data(key, fn="noise")

    def init(params):
        return params, NoiseState(kd, select(params, where, fn="noise"))

    def apply(cparams, state):
        def one(leaf, w):
            e = jax.lax.stop_gradient(
                jax.random.normal(leaf_key(state.key, leaf), w.shape, w.dtype)
            )
            if kind == "additive":
                rms = jax.lax.stop_gradient(jnp.sqrt(jnp.mean(jnp.square(w))))
                return w + std * rms * e
            return w * (1.0 + std * e)

        return map_leaves(one, state.spec, cparams)

    def update(cparams, state, *, step, grads=None):
        del step, grads
        return cparams, state._replace(key=split_key_data(state.key))

    def finalize(cparams, state):
        return cparams

    return Transform(init, apply, update, finalize)

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
from jaxcomp.quant._core import build_spec
from jaxcomp.quant._core import key_data
from jaxcomp.quant._core import map_spec
from jaxcomp.quant._core import split_key_data
from jaxcomp.select import resolve

__all__ = ["NoiseState", "noise"]

KINDS = ("additive", "multiplicative")


class NoiseState(NamedTuple):
    """The state of :func:`noise`.

    Attributes:
      key: raw ``uint32`` PRNG key data, split at each ``update``.
      spec: a leafless marker per distorted leaf, ``MaskedNode()`` elsewhere.
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
    if isinstance(std, bool) or not isinstance(std, int | float) or std < 0:
        raise ValueError(f"noise: std must be a number >= 0, got {std!r}")
    if kind not in KINDS:
        raise ValueError(f"noise: kind must be one of {KINDS}, got {kind!r}")
    kd = key_data(key, what="noise: key")
    std = float(std)

    def init(params):
        mask = resolve(where, params, what="noise(where=...)")
        return params, NoiseState(kd, build_spec(mask, params, lambda p, x: None))

    def apply(cparams, state):
        base = jax.random.wrap_key_data(state.key)

        def one(i, _, w):
            e = jax.lax.stop_gradient(
                jax.random.normal(jax.random.fold_in(base, i), w.shape, w.dtype)
            )
            if kind == "additive":
                rms = jax.lax.stop_gradient(jnp.sqrt(jnp.mean(jnp.square(w))))
                return w + std * rms * e
            return w * (1.0 + std * e)

        return map_spec(one, state.spec, cparams)

    def update(cparams, state, *, step, grads=None):
        del step, grads
        return cparams, state._replace(key=split_key_data(state.key))

    def finalize(cparams, state):
        return cparams

    return Transform(init, apply, update, finalize)

"""Fixed-point training with stochastic rounding (Gupta et al. 2015).

A fixed-point number ``<IL, FL>`` has ``WL = IL + FL`` bits, a step ``eps = 2**-FL`` and the range
``[-2**(IL-1), 2**(IL-1) - eps]``. Gupta et al. train networks with 16-bit fixed-point weights by
rounding every weight update *stochastically*: ``x`` becomes ``floor(x)`` with probability
``1 - (x - floor(x)) / eps`` and ``floor(x) + eps`` otherwise, so the rounding is unbiased and
updates smaller than ``eps`` survive on average, where rounding to nearest would discard them.

:func:`fixed_point` does exactly that to the selected weights: ``init`` rounds them onto the grid,
``update`` (after each optimizer step) rounds the updated weights stochastically with a fresh key
(so the stored weights are always fixed-point numbers), and ``apply`` rounds to nearest with a
straight-through gradient (the identity on grid values). ``finalize`` returns int16 codes with the
scale ``2**-FL``. :func:`to_fixed_point` is the same rounding as a function, for activations
(a rule of :func:`activations` may be any function of the input).

References:
  Gupta, Agrawal, Gopalakrishnan and Narayanan, "Deep learning with limited numerical precision",
  ICML 2015, arXiv:1502.02551.
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
from jaxcomp.quant._core import ROUNDINGS
from jaxcomp.quant._core import fake_quantize
from jaxcomp.quant._core import quantize
from jaxcomp.quant._core import rounding_key_data
from jaxcomp.quant._nodes import QuantizedArray

__all__ = ["FixedPointState", "fixed_point", "to_fixed_point"]


class FixedPointState(NamedTuple):
    """The state of :func:`fixed_point`.

    Attributes:
      key: the raw ``uint32`` data of the base PRNG key; ``update`` at step ``t`` rounds with
        ``fold_in(key, t)``.
      spec: a :class:`jaxcomp.core.Leaf` per rounded leaf, ``MaskedNode()`` elsewhere.
    """

    key: jax.Array
    spec: Any


def _check(word_length: Any, fractional_length: Any, fn: str) -> tuple[int, int]:
    wl = checks.bits(word_length, fn=fn, name="word_length", low=2)
    return wl, checks.integer(fractional_length, fn=fn, name="fractional_length", low=0, high=32)


def to_fixed_point(
    x: jax.Array,
    *,
    word_length: int = 16,
    fractional_length: int = 14,
    rounding: str = "nearest",
    key: jax.Array | None = None,
) -> jax.Array:
    """Rounds ``x`` to ``<word_length - fractional_length, fractional_length>`` fixed point.

    Values beyond the range saturate. The gradient is the clipped straight-through one: 1 inside
    the range, 0 outside.

    Args:
      x: the values.
      word_length: the total number of bits, in [2, 16].
      fractional_length: the bits after the binary point, in [0, 32]; the step is
        ``2**-fractional_length``.
      rounding: ``"nearest"`` or ``"stochastic"`` (unbiased; needs ``key``).
      key: the PRNG key of stochastic rounding.

    Returns:
      The rounded values, ``x``'s shape and dtype.

    Examples:
        >>> import jax.numpy as jnp
        >>> to_fixed_point(jnp.array([0.3, -5.0]), word_length=4, fractional_length=2).tolist()
        [0.25, -2.0]
    """
    wl, fl = _check(word_length, fractional_length, "to_fixed_point")
    checks.choice(rounding, ROUNDINGS, fn="to_fixed_point", name="rounding")
    eps = jnp.float32(2.0**-fl)
    return fake_quantize(
        x, eps, jnp.float32(0), bits=wl, symmetric=False, rounding=rounding, key=key
    )


def fixed_point(
    *,
    word_length: int = 16,
    fractional_length: int = 14,
    rounding: str = "stochastic",
    key: jax.Array | None = None,
    where: Any = None,
) -> Transform:
    """Fixed-point weights, updated with stochastic rounding (Gupta et al. 2015).

    Args:
      word_length: the total number of bits, in [2, 16] (16 in the paper).
      fractional_length: the bits after the binary point, in [0, 32] (the paper's FL = 14 for
        MNIST: step ``2**-14``, range ``[-2, 2)``).
      rounding: how ``update`` rounds the weights after each optimizer step: ``"stochastic"``
        (the paper's method; needs ``key``) or ``"nearest"`` (the baseline it beats).
      key: the PRNG key of stochastic rounding.
      where: the leaves to keep in fixed point (default :func:`jaxcomp.select.kernels`).

    Returns:
      A :class:`jaxcomp.Transform` with a :class:`FixedPointState`; ``finalize`` gives
      :class:`QuantizedArray` nodes (int16 codes, or int8 for ``word_length <= 8``, scale
      ``2**-FL``, zero point 0).

    Raises:
      ValueError: a hyperparameter is out of range, or stochastic rounding without a key.
    """
    wl, fl = _check(word_length, fractional_length, "fixed_point")
    kd = rounding_key_data(rounding, key, fn="fixed_point")
    eps = jnp.float32(2.0**-fl)
    zero = jnp.float32(0)

    def rnd(w, mode, k):
        return fake_quantize(w, eps, zero, bits=wl, symmetric=False, rounding=mode, key=k)

    def init(params):
        spec = select(params, where, fn="fixed_point")
        return map_leaves(lambda _, w: rnd(w, "nearest", None), spec, params), FixedPointState(
            kd, spec
        )

    def apply(cparams, state):
        return map_leaves(lambda _, w: rnd(w, "nearest", None), state.spec, cparams)

    def update(cparams, state, *, step, grads=None):
        del grads
        base = jax.random.fold_in(jax.random.wrap_key_data(state.key), step)

        def one(leaf, w):
            k = leaf_key(base, leaf) if rounding == "stochastic" else None
            return jax.lax.stop_gradient(rnd(w, rounding, k))

        return map_leaves(one, state.spec, cparams), state

    def finalize(cparams, state):
        def one(_, w):
            codes = quantize(w, eps, zero, bits=wl, symmetric=False)
            return QuantizedArray(codes, eps, zero, None, wl, True, jnp.dtype(w.dtype))

        return map_leaves(one, state.spec, cparams)

    return Transform(init, apply, update, finalize)

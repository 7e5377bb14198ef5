"""Power-of-two (logarithmic) weight quantization: every weight becomes 0 or ``±2^k``.

Miyashita, Lee and Murmann represent weights in the log domain, ``LogQuant(w) = sign(w) *
2^round(log2 |w|)``, clipped to a full-scale range: with ``bits`` bits (one of them the sign) a
leaf has ``2^(bits - 1) - 1`` exponents ``k_min..k_max`` plus zero. ``k_max = round(log2
max|w|)`` is the leaf's full-scale exponent (the largest weight keeps its level; weights above
``2^k_max`` are clipped to it); a weight whose rounded exponent falls below ``k_min`` becomes 0.
A multiplication by such a weight is a bit shift, which is what makes the representation
attractive for hardware.

Training keeps the real weights (``cparams`` are the params) and uses the straight-through
estimator: the forward pass sees the quantized weights, the gradient passes to the real weights
unchanged. ``finalize`` gives :class:`PowerOfTwoArray` nodes, an int8 code per weight (``0`` for
zero, ``±(k - k_min + 1)`` for ``±2^k``) and the leaf's ``k_min``.

References:
  Miyashita, Lee and Murmann, "Convolutional neural networks using logarithmic data
  representation", 2016, arXiv:1603.01025.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxcomp.core import Transform
from jaxcomp.core import checks
from jaxcomp.core import map_leaves
from jaxcomp.core import select

__all__ = ["PowerOfTwoArray", "PowerOfTwoState", "power_of_two"]


@struct.dataclass
class PowerOfTwoArray:
    """A leaf of powers of two: ``value = sign(codes) * 2^(|codes| - 1 + k_min)``, 0 where 0.

    Attributes:
      codes: int8, the weight's shape.
      k_min: int32 scalar, the smallest exponent.
      dtype: the float dtype of the weight (static).
    """

    codes: jax.Array
    k_min: jax.Array
    dtype: Any = struct.field(pytree_node=False, default=jnp.dtype(jnp.float32))

    def to_dense(self) -> jax.Array:
        mag = jnp.exp2((jnp.abs(self.codes).astype(jnp.int32) - 1 + self.k_min).astype(jnp.float32))
        return jnp.where(self.codes == 0, 0.0, jnp.sign(self.codes) * mag).astype(self.dtype)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.k_min.nbytes)


class PowerOfTwoState(NamedTuple):
    """The state of :func:`power_of_two`: a :class:`jaxcomp.core.Leaf` per quantized leaf holding
    its ``bits``, ``MaskedNode()`` elsewhere."""

    spec: Any


def _codes(w: jax.Array, bits: int) -> tuple[jax.Array, jax.Array]:
    """The int8 codes and ``k_min`` of ``w`` at ``bits`` bits (see the module docstring)."""
    a = jnp.abs(w.astype(jnp.float32))
    k_max = jnp.round(jnp.log2(jnp.maximum(jnp.max(a), jnp.finfo(jnp.float32).tiny)))
    k_min = k_max - (2 ** (bits - 1) - 2)
    k = jnp.minimum(jnp.round(jnp.log2(jnp.where(a > 0, a, 1.0))), k_max)
    level = jnp.where((a > 0) & (k >= k_min), k - k_min + 1, 0.0)
    return (jnp.sign(w) * level).astype(jnp.int8), k_min.astype(jnp.int32)


def power_of_two(
    *, bits: int | dict[str, int] | list[tuple[str, int]] = 4, where: Any = None
) -> Transform:
    """Power-of-two weight quantization with a straight-through gradient (Miyashita et al. 2016).

    Args:
      bits: the bits per weight, sign included, an int in [2, 8]: ``2^(bits - 1) - 1`` exponents
        and zero; or per leaf, ``{path: bits}`` or ``[(regex, bits)]`` rules.
      where: the leaves to quantize (default :func:`jaxcomp.select.kernels`).

    Returns:
      A :class:`jaxcomp.Transform` whose state is a :class:`PowerOfTwoState`; ``apply`` gives
      ``w + stop_gradient(q(w) - w)``; ``finalize`` gives :class:`PowerOfTwoArray` nodes.

    Raises:
      ValueError: ``bits`` outside [2, 8].

    Examples:
        >>> import jax.numpy as jnp
        >>> t = power_of_two(bits=4)  # 7 exponents, 2^-6 to 2^0 here, and zero
        >>> c, s = t.init({"Dense_0": {"kernel": jnp.array([[0.9, -0.3], [0.1, 0.001]])}})
        >>> t.apply(c, s)["Dense_0"]["kernel"].tolist()
        [[1.0, -0.25], [0.125, 0.0]]
    """
    one = lambda v, name: checks.bits(v, fn="power_of_two", name=name, low=2, high=8)
    bits = checks.per_leaf(bits, one, fn="power_of_two", name="bits")

    def node(leaf, w):
        return PowerOfTwoArray(*_codes(w, leaf["bits"]), jnp.dtype(w.dtype))

    def init(params):
        return params, PowerOfTwoState(select(params, where, fn="power_of_two", bits=bits))

    def apply(cparams, state):
        def one(leaf, w):
            q = node(leaf, jax.lax.stop_gradient(w)).to_dense()
            return w + jax.lax.stop_gradient(q - w)

        return map_leaves(one, state.spec, cparams)

    def update(cparams, state, *, step, grads=None):
        return cparams, state

    def finalize(cparams, state):
        return map_leaves(node, state.spec, cparams)

    return Transform(init, apply, update, finalize)

"""Sparsity-inducing penalties over selected leaves: L1, L2 and Hanson and Pratt's biased decay.

Each factory returns a pure ``penalty(params) -> scalar`` to add to a training objective. Only
the leaves that ``where`` selects (by default the kernels) contribute.

* :func:`l1`: ``strength * sum |w|``, which drives weights to exactly zero under proximal updates
  and towards it under gradient descent.
* :func:`l2`: ``strength * sum w**2`` (weight decay).
* :func:`biased_decay`: Hanson and Pratt's biased weight decay, which decays small weights
  relatively more than large ones, so that a few large weights survive and the rest vanish:
  ``"hyperbolic"``: ``sum w**2 / (1 + lam * w**2)``; ``"exponential"``:
  ``sum 1 - exp(-lam * w**2)``. Both are quadratic near zero (``w**2`` and ``lam * w**2``) and
  bounded for large weights (by ``1/lam`` and 1 per weight), so their pull on a weight fades as
  it grows.

References:
  Hanson, S. J., Pratt, L. Y. "Comparing biases for minimal network construction with
  back-propagation." NeurIPS 1988 (NIPS 1, 1989).

  Han, S., Pool, J., Tran, J., Dally, W. J. "Learning both weights and connections for efficient
  neural networks." NeurIPS 2015. arXiv:1506.02626 (L1 and L2 regularization before pruning).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.core._map import select
from jaxcomp.core._map import selected

__all__ = ["biased_decay", "l1", "l2"]

_KINDS = ("hyperbolic", "exponential")


def _penalty(fn: str, where: Any, per_weight: Callable[[jax.Array], jax.Array], strength: float):
    def penalty(params: Any) -> jax.Array:
        ws = selected(select(params, where, fn=fn), params)
        total = sum(jnp.sum(per_weight(w.astype(jnp.float32))) for w in ws)
        return strength * jnp.asarray(total, jnp.float32)

    return penalty


def l1(*, strength: float = 1.0, where: Any = None) -> Callable[[Any], jax.Array]:
    """``strength * sum |w|`` over the selected leaves.

    Args:
      strength: the coefficient, ``>= 0``.
      where: the leaves (default :func:`jaxcomp.select.kernels`).

    Returns:
      ``penalty(params) -> scalar``.

    Examples:
        >>> import jax.numpy as jnp
        >>> float(l1(strength=0.5)({"Dense_0": {"kernel": jnp.array([[1.0, -2.0]])}}))
        1.5
    """
    return _penalty("l1", where, jnp.abs, checks.number(strength, fn="l1", name="strength", low=0))


def l2(*, strength: float = 1.0, where: Any = None) -> Callable[[Any], jax.Array]:
    """``strength * sum w**2`` over the selected leaves.

    Args:
      strength: the coefficient, ``>= 0``.
      where: the leaves (default :func:`jaxcomp.select.kernels`).

    Returns:
      ``penalty(params) -> scalar``.
    """
    return _penalty(
        "l2", where, jnp.square, checks.number(strength, fn="l2", name="strength", low=0)
    )


def biased_decay(
    *, strength: float = 1.0, kind: str = "hyperbolic", lam: float = 1.0, where: Any = None
) -> Callable[[Any], jax.Array]:
    """Hanson and Pratt's biased weight decay (see the module docstring).

    Args:
      strength: the coefficient, ``>= 0``.
      kind: ``"hyperbolic"`` (``w**2 / (1 + lam * w**2)``) or ``"exponential"``
        (``1 - exp(-lam * w**2)``).
      lam: the bias's sharpness, ``> 0``; weights much larger than ``lam**-0.5`` are barely
        decayed.
      where: the leaves (default :func:`jaxcomp.select.kernels`).

    Returns:
      ``penalty(params) -> scalar``.

    Raises:
      ValueError: ``strength < 0``, ``lam <= 0`` or an unknown ``kind``.

    References:
      Hanson and Pratt, "Comparing biases for minimal network construction with
      back-propagation", NeurIPS 1988.
    """
    strength = checks.number(strength, fn="biased_decay", name="strength", low=0)
    checks.choice(kind, _KINDS, fn="biased_decay", name="kind")
    lam = checks.number(lam, fn="biased_decay", name="lam", low=0, low_open=True)
    if kind == "hyperbolic":
        per_weight = lambda w: jnp.square(w) / (1.0 + lam * jnp.square(w))
    else:
        per_weight = lambda w: 1.0 - jnp.exp(-lam * jnp.square(w))
    return _penalty("biased_decay", where, per_weight, strength)

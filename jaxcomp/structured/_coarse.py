"""Coarse pruning: whole ``k x k`` kernels and whole feature maps.

Anwar, Hwang and Sung prune convolutions at coarse granularities, which keep the computation
dense:

* **kernel level**: a ``(cin, cout)`` pair of a convolution kernel, the ``k x k`` kernel that
  connects input map ``cin`` to output map ``cout``, is removed as a whole.
  :func:`kernel_level` zeroes the ``floor(sparsity * cin * cout)`` kernels of smallest L1 (or L2)
  norm of every convolution kernel, with exact counts and nested masks under a growing sparsity
  (the pruner of :func:`jaxcomp.structured.brain_damage`, with other groups).
* **feature-map level**: a whole output map of a layer is removed, with every weight that writes
  or reads it. That is channel pruning over dependency groups:
  :func:`jaxcomp.structured.masks` (or the :func:`jaxcomp.structured.channels` transform) with
  ``criterion="l1"`` ranks whole feature maps, and :func:`jaxcomp.structured.shrink` removes them
  for real, across residual additions, batch norms and the next layers. There is no second
  function for it here.

The paper selects which kernels or maps to remove with evolutionary particle filtering over the
misclassification rate; here the selection is by weight norm, a data-free stand-in for that
search (the masks are the same whichever score ranks the kernels).

References:
    Anwar, Hwang and Sung, "Structured pruning of deep convolutional neural networks", ACM JETC
    2017, arXiv:1512.08571.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.core._transform import Transform
from jaxcomp.structured._brain_damage import group_pruner
from jaxcomp.structured._brain_damage import safe_sqrt

__all__ = ["kernel_level"]

NORMS = ("l1", "l2")


def _spatial(w: Any) -> tuple[int, ...]:
    return tuple(range(w.ndim - 2))


def kernel_level(
    *, sparsity: Any, norm: str = "l1", where: Any = None, update_every: int = 1
) -> Transform:
    """Zeroes whole ``k x k`` kernels ``W[..., cin, cout]`` of smallest norm in every convolution.

    Args:
        sparsity: the fraction of each convolution's ``cin * cout`` kernels to zero: a number in
            [0, 1), a schedule, or per-leaf ``{path: value}`` / ``[(regex, value)]`` values. A
            kernel of shape ``(*window, cin, cout)`` loses exactly ``floor(sparsity * cin * cout)``
            of them, each entirely (every tap of the window).
        norm: ``"l1"`` (default) or ``"l2"``, the norm of each ``k x k`` kernel.
        where: the convolution kernels (default: every kernel with ``ndim >= 3``; a selected leaf
            with fewer axes is a ``ValueError``).
        update_every: recompute the masks every this many steps; pruned kernels are re-zeroed at
            every step.

    Returns:
        A :class:`jaxcomp.Transform` whose state is a :class:`jaxcomp.prune.PrunerState`.

    Raises:
        ValueError: a sparsity outside [0, 1), an unknown ``norm``, ``update_every < 1``.

    Examples:
        >>> import jax.numpy as jnp
        >>> w = jnp.array([1.0, 5.0, 2.0, 3.0]).reshape(1, 1, 2, 2)  # four 1x1 kernels
        >>> c, s = kernel_level(sparsity=0.5).init({"Conv_0": {"kernel": w}})
        >>> c["Conv_0"]["kernel"].reshape(2, 2).tolist()
        [[0.0, 5.0], [0.0, 3.0]]
    """
    checks.choice(norm, NORMS, fn="kernel_level", name="norm")
    if norm == "l1":
        score = lambda w: jnp.sum(jnp.abs(w), axis=_spatial(w), keepdims=True)
    else:
        score = lambda w: safe_sqrt(jnp.sum(jnp.square(w), axis=_spatial(w), keepdims=True))
    return group_pruner(
        score,
        _spatial,
        sparsity=sparsity,
        where=where,
        update_every=update_every,
        name="kernel_level",
    )

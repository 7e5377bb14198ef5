"""Turning one global sparsity into per-layer sparsities: uniform and Erdős–Rényi-Kernel (ERK).

*Uniform* gives every selected layer the same sparsity. *ERK* (Evci et al., RigL) keeps a layer's
density proportional to ``sum(shape) / prod(shape)`` (the Erdős–Rényi graph density, extended to
the kernel's spatial dimensions), scaled so that the total number of kept weights is that of the
global sparsity; layers whose density would exceed 1 are kept dense and the rest rescaled. Small
layers (the classifier, the first convolution) thus stay denser than large ones.

References:
  Evci, U., Gale, T., Menick, J., Castro, P. S., Elsen, E. "Rigging the lottery: making all
  tickets winners." ICML 2020. arXiv:1911.11134.

  Mocanu, D. C. et al. "Scalable training of artificial neural networks with adaptive sparse
  connectivity inspired by network science." Nature Communications 2018. arXiv:1707.04780.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from jaxcomp.core import _checks as checks
from jaxcomp.core._map import leaves
from jaxcomp.core._map import select
from jaxcomp.core._map import selected

__all__ = ["erk", "erk_sparsities", "uniform"]


def erk_sparsities(shapes: Sequence[tuple[int, ...]], sparsity: float) -> list[float]:
    """ERK per-layer sparsities for layers of the given shapes (see the module docstring).

    Args:
      shapes: the kernel shapes.
      sparsity: the global sparsity in ``[0, 1)``.

    Returns:
      One sparsity in ``[0, 1)`` per shape; ``sum(n_i * (1 - s_i)) == (1 - s) * sum(n_i)`` up to
      rounding.

    Examples:
        >>> [round(s, 3) for s in erk_sparsities([(100, 100), (100, 10)], 0.5)]
        [0.55, 0.0]
    """
    s = checks.fraction(sparsity, fn="erk_sparsities", name="sparsity")
    sizes = [math.prod(sh) for sh in shapes]
    raw = [sum(sh) / n for sh, n in zip(shapes, sizes, strict=True)]
    dense: set[int] = set()
    while True:
        rhs = sum(-n * s if i in dense else n * (1 - s) for i, n in enumerate(sizes))
        divisor = sum(raw[i] * sizes[i] for i in range(len(sizes)) if i not in dense)
        if divisor <= 0:
            return [0.0] * len(sizes)
        eps = rhs / divisor
        over = [i for i in range(len(sizes)) if i not in dense and eps * raw[i] > 1.0]
        if not over:
            break
        top = max(raw[i] for i in over)
        dense |= {i for i in over if raw[i] == top}
    return [
        0.0 if i in dense else min(max(1.0 - eps * raw[i], 0.0), 1.0) for i in range(len(sizes))
    ]


def _selected(params: Any, where: Any, fn: str) -> list[tuple[str, Any]]:
    spec = select(params, where, fn=fn)
    return [(lf.path, x) for lf, x in zip(leaves(spec), selected(spec, params), strict=True)]


def uniform(params: Any, *, sparsity: float, where: Any = None) -> dict[str, float]:
    """The same sparsity for every selected leaf.

    Args:
      params: the params pytree.
      sparsity: in ``[0, 1)``.
      where: the leaves (default :func:`jaxcomp.select.kernels`).

    Returns:
      ``{path: sparsity}`` for the selected leaves; pass it as ``magnitude(sparsity=...)``.
    """
    s = checks.fraction(sparsity, fn="uniform", name="sparsity")
    return {p: s for p, _ in _selected(params, where, "uniform")}


def erk(params: Any, *, sparsity: float, where: Any = None) -> dict[str, float]:
    """ERK per-layer sparsities whose total matches the global ``sparsity``.

    Args:
      params: the params pytree.
      sparsity: the global sparsity over the selected leaves, in ``[0, 1)``.
      where: the leaves (default :func:`jaxcomp.select.kernels`).

    Returns:
      ``{path: sparsity}`` for the selected leaves.

    References:
      Evci et al., "Rigging the lottery: making all tickets winners", ICML 2020, arXiv:1911.11134.
    """
    checks.fraction(sparsity, fn="erk", name="sparsity")
    leaves = _selected(params, where, "erk")
    values = erk_sparsities([tuple(x.shape) for _, x in leaves], sparsity)
    return {p: v for (p, _), v in zip(leaves, values, strict=True)}

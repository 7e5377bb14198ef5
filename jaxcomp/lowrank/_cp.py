"""CP decomposition of convolution kernels (Lebedev et al. 2015).

The 4-way kernel ``W (kh, kw, C, F)`` is approximated by a sum of ``R`` rank-1 tensors,
``W[i, j, c, f] ~ sum_r K^y[i, r] K^x[j, r] K^s[c, r] K^t[f, r]``, and the convolution becomes a
pipeline of four small ones: a 1x1 convolution from ``C`` to ``R`` channels (``K^s``), a
``kh x 1`` and a ``1 x kw`` depthwise convolution on the ``R`` channels (``K^y``, ``K^x``), and a
1x1 convolution from ``R`` to ``F`` (``K^t``): ``R (C + kh + kw + F)`` multiply-adds per output
pixel instead of ``kh kw C F``.

Lebedev et al. compute the decomposition by non-linear least squares and then fine-tune the
four layers. Here ``method="nls"`` does that (:func:`jaxcomp.lowrank.cp_nls`: Levenberg-Marquardt
over all factors at once, its damped Gauss-Newton systems solved by preconditioned conjugate
gradients as in Tensorlab), and ``method="als"`` (the default, cheaper per iteration) uses
alternating least squares (:func:`jaxcomp.lowrank.cp_als`); both are jit-able loops started from
the same HOSVD start. Fine-tuning trains the four factors through the rebuilt kernel.

References:
    Lebedev, Ganin, Rakhuba, Oseledets and Lempitsky, "Speeding-up convolutional neural networks
    using fine-tuned CP-decomposition", ICLR 2015, arXiv:1412.6553.

    Kolda and Bader, "Tensor decompositions and applications", SIAM Review 51(3), 2009.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from jaxcomp.core import _checks as checks
from jaxcomp.core._transform import Transform
from jaxcomp.lowrank._decompose import cp_als
from jaxcomp.lowrank._decompose import cp_nls
from jaxcomp.lowrank._factorize import FactorizedState
from jaxcomp.lowrank._factorize import build
from jaxcomp.lowrank._factorize import conv_only
from jaxcomp.lowrank._jaderberg import spatial_convs
from jaxcomp.lowrank._nodes import CP
from jaxcomp.lowrank._rank import Ranks
from jaxcomp.lowrank._rank import choose_rank

__all__ = ["CpState", "cp"]


class CpState(FactorizedState):
    """The state of :func:`cp`: the ``spec`` of the factorized kernels; ``fixed`` holds
    ``{}`` per kernel."""


def cp(
    *,
    rank: Any = None,
    compression: float | None = None,
    iterations: int = 50,
    key: jax.Array,
    method: str = "als",
    where: Any = None,
) -> Transform:
    """CP-decomposes convolution kernels into 1x1, ``kh x 1``, ``1 x kw`` and 1x1 convolutions.

    Args:
      rank: ``R``, the number of rank-1 terms: an int, a dict ``{leaf_path: R}`` or
        ``(regex, R)`` rules; each ``1 <= R <= kh kw C F / max(kh, kw, C, F)`` (the largest CP
        rank a tensor of that shape can need).
      compression: instead of ``rank``, the largest ``R`` with
        ``R (C + kh + kw + F) <= kh kw C F / compression``.
      iterations: ALS sweeps or Levenberg-Marquardt iterations, an int >= 0.
      key: a PRNG key (completes the HOSVD start where ``R`` exceeds a mode's size); the same key
        gives the same factors.
      method: ``"als"`` (alternating least squares, :func:`jaxcomp.lowrank.cp_als`) or ``"nls"``
        (non-linear least squares as Lebedev et al., :func:`jaxcomp.lowrank.cp_nls`).
      where: the convolution kernels (default: every ``(kh, kw, C, F)`` kernel with
        ``kh * kw > 1``; a tree with none is left unchanged).

    Returns:
      A structure-changing :class:`jaxcomp.Transform` whose ``cparams`` hold :class:`CP` nodes;
      state :class:`CpState`.

    Raises:
      ValueError: not exactly one of ``rank`` and ``compression``, one out of range,
        ``iterations < 0`` or an unknown ``method``. At ``init``: a selected leaf that is not
        a 4-D convolution kernel, or a
        rank above the bound, naming the leaf.

    References:
        Lebedev et al., "Speeding-up convolutional neural networks using fine-tuned
        CP-decomposition", ICLR 2015, arXiv:1412.6553.
    """
    ranks = Ranks.build("cp", rank, None, compression)
    checks.integer(iterations, fn="cp", name="iterations", low=0)
    checks.key(key, fn="cp")
    checks.choice(method, ("als", "nls"), fn="cp", name="method")
    decompose = cp_als if method == "als" else cp_nls

    def factorize(leaf, x):
        kh, kw, c, f = x.shape
        size = math.prod(x.shape)
        r = choose_rank(
            ranks, "cp", leaf, max_rank=size // max(x.shape),
            bound=f"kh kw C F / max(kh, kw, C, F) for shape {tuple(x.shape)}",
            cost=lambda r: r * (c + kh + kw + f), dense=size,
        )  # fmt: skip
        k = jax.random.fold_in(key, leaf.index)
        ky, kx, ks, kt = decompose(x, r, iterations=iterations, key=k)
        node = CP(first=ks, vertical=ky, horizontal=kx, last=kt.T)
        return jax.tree.map(lambda a: a.astype(x.dtype), node), {}

    return build(
        what="cp",
        where=where,
        default=spatial_convs(),
        accepts=conv_only("CP"),
        factorize=factorize,
        per_leaf=ranks.per_leaf(),
        state_cls=CpState,
    )

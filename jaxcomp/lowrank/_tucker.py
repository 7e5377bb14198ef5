"""Tucker-2 decomposition of convolution kernels (Kim et al. 2016).

The kernel ``W (kh, kw, C, F)`` is decomposed over its two channel modes only,
``W ~ core x_3 U x_4 V``: a 1x1 convolution from ``C`` to ``R3`` channels (``U``), a ``kh x kw``
convolution from ``R3`` to ``R4`` (the core) and a 1x1 convolution from ``R4`` to ``F`` (``V``),
``C R3 + kh kw R3 R4 + R4 F`` multiply-adds per output pixel instead of ``kh kw C F``. Kim et al.
initialize with the higher-order SVD (HOSVD: ``U`` and ``V`` are the leading left singular
vectors of the mode-3 and mode-4 unfoldings, the core the kernel projected on them), choose the
ranks per layer (by variational Bayesian matrix factorization; here by ``rank=``, ``energy=`` of
each unfolding's spectrum, or ``compression=``) and fine-tune the whole network. At full ranks
``R3 = C, R4 = F`` the rewrite is exact.

References:
    Kim, Park, Yoo, Choi, Yang and Shin, "Compression of deep convolutional neural networks for
    fast and low power mobile applications", ICLR 2016, arXiv:1511.06530.

    De Lathauwer, De Moor and Vandewalle, "A multilinear singular value decomposition", SIAM J.
    Matrix Anal. Appl. 21(4), 2000.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxcomp.core import _checks as checks
from jaxcomp.core._transform import Transform
from jaxcomp.lowrank._decompose import singular_values
from jaxcomp.lowrank._decompose import tucker2_decompose
from jaxcomp.lowrank._factorize import FactorizedState
from jaxcomp.lowrank._factorize import build
from jaxcomp.lowrank._factorize import conv_only
from jaxcomp.lowrank._jaderberg import spatial_convs
from jaxcomp.lowrank._nodes import Tucker2
from jaxcomp.lowrank._rank import Ranks
from jaxcomp.lowrank._rank import check_rank
from jaxcomp.lowrank._rank import rank_for_energy

__all__ = ["Tucker2State", "tucker2"]


class Tucker2State(FactorizedState):
    """The state of :func:`tucker2`: the ``spec`` of the factorized kernels; ``fixed`` holds
    ``{}`` per kernel."""


def _mode_spectrum(x: jax.Array, mode: int) -> np.ndarray:
    unfold = np.reshape(np.moveaxis(np.asarray(x, np.float32), mode, 0), (x.shape[mode], -1))
    return singular_values(unfold)


def tucker2(
    *,
    rank: Any = None,
    energy: float | None = None,
    compression: float | None = None,
    iterations: int = 0,
    where: Any = None,
) -> Transform:
    """Tucker-2 decomposes convolution kernels into 1x1, ``kh x kw`` core and 1x1 convolutions.

    Args:
      rank: ``(R3, R4)``, the channels into and out of the core (an int means both): a value, a
        dict ``{leaf_path: value}`` or ``(regex, value)`` rules; ``1 <= R3 <= C``,
        ``1 <= R4 <= F``.
      energy: instead of ``rank``, per layer and per channel mode, the fewest singular values of
        the unfolding holding this fraction of its squared spectrum, in ``(0, 1]``.
      compression: instead of ``rank``, the largest ``R3`` (with ``R4 = round(R3 F / C)``) whose
        factors hold at most ``kh kw C F / compression`` params.
      iterations: HOOI sweeps after the HOSVD start, an int >= 0 (0: plain HOSVD, as Kim et al.).
      where: the convolution kernels (default: every ``(kh, kw, C, F)`` kernel with
        ``kh * kw > 1``; a tree with none is left unchanged).

    Returns:
      A structure-changing :class:`jaxcomp.Transform` whose ``cparams`` hold :class:`Tucker2`
      nodes; state :class:`Tucker2State`.

    Raises:
      ValueError: not exactly one of ``rank``, ``energy``, ``compression``, one out of range, or
        ``iterations < 0``. At ``init``: a selected leaf that is not a 4-D convolution kernel, or
        ``R3 > C`` or ``R4 > F``, naming the leaf.

    References:
        Kim et al., "Compression of deep convolutional neural networks for fast and low power
        mobile applications", ICLR 2016, arXiv:1511.06530.
    """
    ranks = Ranks.build("tucker2", rank, energy, compression, pair=True)
    checks.integer(iterations, fn="tucker2", name="iterations", low=0)

    def choose(leaf, x):
        path, (kh, kw, c, f) = leaf.path, x.shape
        value = leaf["rank"] if ranks.rank is not None else None
        if value is not None:
            r3, r4 = (value, value) if isinstance(value, int | np.integer) else value
            return (
                check_rank("tucker2", path, r3, c, f"R3 <= C = {c}"),
                check_rank("tucker2", path, r4, f, f"R4 <= F = {f}"),
            )
        if ranks.energy is not None:
            return (
                rank_for_energy(_mode_spectrum(x, 2), ranks.energy),
                rank_for_energy(_mode_spectrum(x, 3), ranks.energy),
            )
        budget = kh * kw * c * f / ranks.compression
        for r3 in range(c, 0, -1):
            r4 = min(f, max(1, round(r3 * f / c)))
            if c * r3 + kh * kw * r3 * r4 + r4 * f <= budget:
                return r3, r4
        return 1, 1

    def factorize(leaf, x):
        r3, r4 = choose(leaf, x)
        first, core, last = tucker2_decompose(x, r3, r4, iterations=iterations)
        return jax.tree.map(lambda a: a.astype(x.dtype), Tucker2(first, core, last)), {}

    return build(
        what="tucker2",
        where=where,
        default=spatial_convs(),
        accepts=conv_only("Tucker-2"),
        factorize=factorize,
        per_leaf=ranks.per_leaf(),
        state_cls=Tucker2State,
    )

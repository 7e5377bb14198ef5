"""Spatially separable convolutions from a low-rank expansion (Jaderberg et al. 2014, scheme 2).

A ``kh x kw`` convolution from ``C`` to ``F`` channels is replaced by a ``kh x 1`` (vertical)
convolution to ``K`` channels followed by a ``1 x kw`` (horizontal) convolution to ``F``. Written as
the ``(kh C, kw F)`` matrix ``M[(i, c), (j, f)] = W[i, j, c, f]``, such a pair is exactly a rank-
``K`` factorization of ``M``, so the best pair in Frobenius norm (of the kernel; Jaderberg et al.
minimize it this way as their closed-form "filter reconstruction" start) is given in closed form by
the truncated SVD of ``M``: ``vertical[i, 0, c, k] = U[(i, c), k] sqrt(s_k)`` and
``horizontal[0, j, k, f] = sqrt(s_k) V^T[k, (j, f)]``. At full rank ``K = min(kh C, kw F)`` the
pair reproduces the convolution exactly. The cost per output pixel falls from ``kh kw C F`` to
``K (kh C + kw F)`` multiply-adds.

With ``data=`` (a :class:`jaxcomp.lowrank.Calibration`) the pairs are then refitted to the layers'
*responses* on that data, layer by layer in forward order, each on the inputs produced by the
layers already approximated (Jaderberg et al.'s data reconstruction; see
:mod:`jaxcomp.lowrank._reconstruct`).

References:
    Jaderberg, Vedaldi and Zisserman, "Speeding up convolutional neural networks with low rank
    expansions", BMVC 2014, arXiv:1405.3866.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxcomp.core import _checks as checks
from jaxcomp.core._transform import Transform
from jaxcomp.lowrank._decompose import singular_values
from jaxcomp.lowrank._decompose import split_svd
from jaxcomp.lowrank._factorize import FactorizedState
from jaxcomp.lowrank._factorize import build
from jaxcomp.lowrank._factorize import describe
from jaxcomp.lowrank._nodes import Separable
from jaxcomp.lowrank._rank import Ranks
from jaxcomp.lowrank._rank import choose_rank
from jaxcomp.lowrank._reconstruct import Calibration
from jaxcomp.lowrank._reconstruct import check_calibration
from jaxcomp.lowrank._reconstruct import reconstruct_layers
from jaxcomp.select._select import Selector
from jaxcomp.select._select import kernels

__all__ = ["JaderbergState", "jaderberg", "separable_factors", "separable_matrix", "spatial_convs"]


def spatial_convs() -> Selector:
    """Convolution kernels ``(kh, kw, C, F)`` with a spatial extent (``kh * kw > 1``)."""
    return kernels() & Selector(
        lambda p, x: x.ndim == 4 and x.shape[0] * x.shape[1] > 1, "spatial_convs()"
    )


def separable_matrix(kernel: Any) -> np.ndarray:
    """The ``(kh C, kw F)`` matrix ``M[(i, c), (j, f)] = W[i, j, c, f]`` of a kernel, float32."""
    kh, kw, c, f = kernel.shape
    return np.reshape(np.transpose(np.asarray(kernel, np.float32), (0, 2, 1, 3)), (kh * c, kw * f))


def separable_factors(
    matrix: np.ndarray, shape: tuple[int, ...], rank: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``kh x 1`` then ``1 x kw`` pair for a kernel of ``shape``, from its matrix.

    Args:
      matrix: the kernel's :func:`separable_matrix`.
      shape: the kernel's ``(kh, kw, C, F)``.
      rank: ``K``, ``1 <= K <= min(kh C, kw F)``.

    Returns:
      ``vertical`` ``(kh, 1, C, K)`` and ``horizontal`` ``(1, kw, K, F)``, float32: the truncated
      SVD of ``matrix`` with the singular values split evenly.
    """
    kh, kw, c, f = shape
    a, b = split_svd(matrix, rank)
    horizontal = np.transpose(np.reshape(b, (rank, kw, f)), (1, 0, 2))[None]
    return np.reshape(a, (kh, 1, c, rank)), horizontal


class JaderbergState(FactorizedState):
    """The state of :func:`jaderberg`: the ``spec`` of the factorized kernels; ``fixed`` holds
    ``{}`` per kernel."""


def jaderberg(
    *,
    rank: Any = None,
    energy: float | None = None,
    compression: float | None = None,
    where: Any = None,
    data: Calibration | None = None,
    iterations: int = 10,
) -> Transform:
    """Replaces ``kh x kw`` convolutions by a ``kh x 1`` and a ``1 x kw`` convolution (scheme 2).

    Args:
      rank: ``K``, the channels between the two convolutions: an int, a dict
        ``{leaf_path: K}`` or ``(regex, K)`` rules; each ``1 <= K <= min(kh C, kw F)``.
      energy: instead of ``rank``, keep per layer the fewest singular values of the
        ``(kh C, kw F)`` matrix holding this fraction of its squared spectrum, in ``(0, 1]``.
      compression: instead of ``rank``, the largest ``K`` with
        ``K (kh C + kw F) <= kh kw C F / compression``.
      where: the convolution kernels (default :func:`spatial_convs`: every ``(kh, kw, C, F)``
        kernel with ``kh * kw > 1``; a tree with none is left unchanged).
      data: ``None`` for the closed form (the best pair for the kernel), or a
        :class:`jaxcomp.lowrank.Calibration`: ``init`` then refits each pair, from the closed
        form, to its layer's output on ``data.x``, layer by layer in forward order, each on the
        inputs of the network approximated so far and against the original network's outputs
        (Jaderberg et al.'s data reconstruction). The ranks are chosen as without data.
      iterations: alternating least-squares sweeps of the data reconstruction, an int >= 0.

    Returns:
      A structure-changing :class:`jaxcomp.Transform` whose ``cparams`` hold :class:`Separable`
      nodes; state :class:`JaderbergState`.

    Raises:
      ValueError: not exactly one of ``rank``, ``energy``, ``compression``, or one out of range.
        At ``init``: a selected leaf that is not a ``kh x kw`` convolution with ``kh, kw > 1``
        (a ``Dense`` kernel, a 1x1 or ``k x 1`` convolution), or a rank above
        ``min(kh C, kw F)``, naming the leaf. A ``data`` that is not a ``Calibration``, or
        ``iterations < 0``.

    References:
        Jaderberg, Vedaldi and Zisserman, "Speeding up convolutional neural networks with low
        rank expansions", BMVC 2014, arXiv:1405.3866.
    """
    ranks = Ranks.build("jaderberg", rank, energy, compression)
    checks.integer(iterations, fn="jaderberg", name="iterations", low=0)
    if data is not None:
        check_calibration(data, "jaderberg")

    def accepts(path, x):
        if x.ndim != 4 or x.shape[0] < 2 or x.shape[1] < 2:
            return (
                f"it is {describe(x)}; Jaderberg's scheme separates a (kh, kw, C, F) "
                "convolution kernel with kh > 1 and kw > 1"
            )
        return None

    def factorize(leaf, x):
        kh, kw, c, f = x.shape
        mat = separable_matrix(x)
        k = choose_rank(
            ranks, "jaderberg", leaf, max_rank=min(kh * c, kw * f),
            bound=f"min(kh C, kw F) = min({kh * c}, {kw * f})",
            cost=lambda r: r * (kh * c + kw * f), dense=kh * kw * c * f,
            spectrum=lambda: singular_values(mat),
        )  # fmt: skip
        vertical, horizontal = separable_factors(mat, x.shape, k)
        return Separable(jnp.asarray(vertical, x.dtype), jnp.asarray(horizontal, x.dtype)), {}

    closed = build(
        what="jaderberg",
        where=where,
        default=spatial_convs(),
        accepts=accepts,
        factorize=factorize,
        per_leaf=ranks.per_leaf(),
        state_cls=JaderbergState,
    )
    if data is None:
        return closed

    def init(params):
        cparams, state = closed.init(params)
        return reconstruct_layers(state.spec, params, cparams, data, iterations), state

    return closed._replace(init=init)

"""Learned separable filters: filters as linear combinations of rank-1 bases (Rigamonti et al.).

Each of the ``C F`` two-dimensional filters ``W[:, :, c, f]`` of a ``kh x kw`` convolution is
written as a linear combination of ``M`` separable (rank-1) basis filters shared by the layer,
``W[:, :, c, f] = sum_m coeffs[c, m, f] vertical[:, m] horizontal[:, m]^T``. Rigamonti et al.
obtain such bases either by learning them directly (with a nuclear-norm penalty) or, faster, by
decomposing a learned filter bank: the ``(kh, kw, N)`` stack of filters is CP-decomposed at rank
``M``, whose factors give the separable bases and the combination weights. This transform does
the latter at ``init`` (:func:`jaxcomp.lowrank.cp_als` on the ``(kh, kw, C F)`` stack), and the
bases and coefficients are then *learned* together by fine-tuning through the rebuilt kernel. At
inference the layer runs as ``M`` separable convolutions of every input channel (a ``kh x 1`` and a
``1 x kw`` depthwise convolution) and a 1x1 combination: ``C M (kh + kw + F)`` multiply-adds per
pixel instead of ``kh kw C F``.

References:
    Rigamonti, Sironi, Lepetit and Fua, "Learning separable filters", CVPR 2013.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.core import _checks as checks
from jaxcomp.core._transform import Transform
from jaxcomp.lowrank._decompose import cp_als
from jaxcomp.lowrank._factorize import FactorizedState
from jaxcomp.lowrank._factorize import build
from jaxcomp.lowrank._factorize import conv_only
from jaxcomp.lowrank._jaderberg import spatial_convs
from jaxcomp.lowrank._nodes import SeparableBasis
from jaxcomp.lowrank._rank import check_rank

__all__ = ["SeparableBasisState", "separable_basis"]


class SeparableBasisState(FactorizedState):
    """The state of :func:`separable_basis`: the ``spec`` of the rewritten kernels; ``fixed`` holds
    ``{}`` per kernel."""


def separable_basis(
    *, rank: int, key: jax.Array, iterations: int = 50, where: Any = None
) -> Transform:
    """Rewrites convolutions as combinations of ``rank`` learned separable basis filters.

    Args:
      rank: ``M``, the number of separable bases per layer, ``1 <= M <= kh kw``.
      key: a PRNG key for the CP start; the same key gives the same result.
      iterations: ALS sweeps of the initial decomposition, an int >= 0.
      where: the convolution kernels (default: every ``(kh, kw, C, F)`` kernel with
        ``kh * kw > 1``; a tree with none is left unchanged).

    Returns:
      A structure-changing :class:`jaxcomp.Transform` whose ``cparams`` hold
      :class:`SeparableBasis` nodes (bases and coefficients, all trained); state
      :class:`SeparableBasisState`.

    Raises:
      ValueError: a hyperparameter out of range; at ``init``, a selected leaf that is not a 4-D
        convolution kernel, or ``rank > kh kw``, naming the leaf.

    References:
        Rigamonti, Sironi, Lepetit and Fua, "Learning separable filters", CVPR 2013.
    """
    checks.integer(rank, fn="separable_basis", name="rank")
    checks.integer(iterations, fn="separable_basis", name="iterations", low=0)
    checks.key(key, fn="separable_basis")

    def factorize(leaf, x):
        kh, kw, c, f = x.shape
        check_rank("separable_basis", leaf.path, rank, kh * kw, f"kh kw = {kh * kw} basis filters")
        stack = np.reshape(np.asarray(x, np.float32), (kh, kw, c * f))
        vert, hor, comb = cp_als(
            stack, rank, iterations=iterations, key=jax.random.fold_in(key, leaf.index)
        )
        coeffs = np.transpose(np.reshape(np.asarray(comb), (c, f, rank)), (0, 2, 1))
        node = SeparableBasis(vert, hor, coeffs)
        return jax.tree.map(lambda a: jnp.asarray(a, x.dtype), node), {}

    return build(
        what="separable_basis",
        where=where,
        default=spatial_convs(),
        accepts=conv_only("the separable-basis rewrite"),
        factorize=factorize,
        state_cls=SeparableBasisState,
    )

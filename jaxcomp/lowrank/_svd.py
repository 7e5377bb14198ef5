"""Truncated SVD of weight matrices (Denton et al. 2014; Sainath et al. 2013).

A kernel ``W`` (``(m, n)`` for a ``Dense`` layer; a convolution ``(*spatial, C, F)`` as the
``(prod(spatial) C, F)`` matrix) is replaced by its best rank-``r`` approximation in Frobenius
norm, ``W_r = U_r S_r V_r^T`` (Eckart-Young), held as two factors ``u = U_r sqrt(S_r)`` and
``v = sqrt(S_r) V_r^T``. Its error is exactly the part of the spectrum left out:
``||W - W_r||_F = sqrt(sum_{i > r} s_i^2)``. A ``Dense`` layer then runs as two matmuls,
``m r + r n`` multiply-adds per example instead of ``m n``; a convolution as a ``k x k``
convolution to ``r`` channels followed by a 1x1 convolution.

Denton et al. apply this to the fully connected layers of a trained network and fine-tune;
Sainath et al. factorize the final (softmax) layer of acoustic and language models, whose output
dimension is large.

References:
    Denton, Zaremba, Bruna, LeCun and Fergus, "Exploiting linear structure within convolutional
    networks for efficient evaluation", NeurIPS 2014, arXiv:1404.0736.

    Sainath, Kingsbury, Sindhwani, Arisoy and Ramabhadran, "Low-rank matrix factorization for
    deep neural network training with high-dimensional output targets", ICASSP 2013.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxcomp.core._transform import Transform
from jaxcomp.lowrank._decompose import singular_values
from jaxcomp.lowrank._decompose import split_svd
from jaxcomp.lowrank._factorize import FactorizedState
from jaxcomp.lowrank._factorize import build
from jaxcomp.lowrank._factorize import describe
from jaxcomp.lowrank._nodes import LowRank
from jaxcomp.lowrank._rank import Ranks
from jaxcomp.lowrank._rank import choose_rank
from jaxcomp.select._select import kernels

__all__ = ["SvdState", "svd"]


class SvdState(FactorizedState):
    """The state of :func:`svd`: the ``spec`` of the factorized kernels; ``fixed`` holds
    ``{}`` per kernel."""


def svd(
    *,
    rank: Any = None,
    energy: float | None = None,
    compression: float | None = None,
    where: Any = None,
) -> Transform:
    """Truncated SVD of the selected kernels: ``W ~ u @ v`` with ``u`` ``(m, r)``, ``v`` ``(r, n)``.

    Args:
      rank: the rank ``r``: an int, a dict ``{leaf_path: r}``, or ``(regex, r)`` rules; each
        ``1 <= r <= min(m, n)``.
      energy: instead of ``rank``, keep per layer the fewest singular values holding this fraction
        of the squared spectrum, in ``(0, 1]``.
      compression: instead of ``rank``, the largest rank with ``r (m + n) <= m n / compression``.
      where: the kernels to factorize (``jc.select.kernels()``: every ``Dense`` and ``Conv``
        kernel, a convolution ``(*spatial, C, F)`` as the ``(prod(spatial) C, F)`` matrix).

    Returns:
      A structure-changing :class:`jaxcomp.Transform` whose ``cparams`` hold :class:`LowRank`
      nodes (the trainable factors), whose ``apply`` rebuilds the dense kernels and whose
      ``finalize`` returns the nodes for :func:`jaxcomp.adapt.run_factorized`. State:
      :class:`SvdState`.

    Raises:
      ValueError: not exactly one of ``rank``, ``energy``, ``compression``; a rank below 1; an
        energy outside ``(0, 1]``; a compression below 1. At ``init``: a rank above ``min(m, n)``
        or a selected leaf that is not a kernel, naming the leaf.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> w = jax.random.normal(jax.random.key(0), (6, 4))
        >>> t = svd(rank=4)
        >>> c, s = t.init({"Dense_0": {"kernel": w}})
        >>> c["Dense_0"]["kernel"].u.shape, c["Dense_0"]["kernel"].v.shape
        ((6, 4), (4, 4))
        >>> bool(jnp.allclose(t.apply(c, s)["Dense_0"]["kernel"], w, atol=1e-5))
        True

    References:
        Denton et al., "Exploiting linear structure within convolutional networks for efficient
        evaluation", NeurIPS 2014, arXiv:1404.0736. Sainath et al., "Low-rank matrix
        factorization for deep neural network training with high-dimensional output targets",
        ICASSP 2013.
    """
    ranks = Ranks.build("svd", rank, energy, compression)

    def accepts(path, x):
        if x.ndim < 2:
            return f"it is {describe(x)}; SVD needs a matrix or a convolution kernel"
        return None

    def factorize(leaf, x):
        mat = np.reshape(np.asarray(x, np.float32), (-1, x.shape[-1]))
        m, n = mat.shape
        r = choose_rank(
            ranks, "svd", leaf, max_rank=min(m, n), bound=f"min(m, n) of the {m}x{n} matrix",
            cost=lambda r: r * (m + n), dense=m * n,
            spectrum=lambda: singular_values(mat),
        )  # fmt: skip
        u, v = split_svd(mat, r)
        u = np.reshape(u, (*x.shape[:-1], r))
        return LowRank(jnp.asarray(u, x.dtype), jnp.asarray(v, x.dtype)), {}

    return build(
        what="svd",
        where=where,
        default=kernels(),
        accepts=accepts,
        factorize=factorize,
        per_leaf=ranks.per_leaf(),
        state_cls=SvdState,
    )

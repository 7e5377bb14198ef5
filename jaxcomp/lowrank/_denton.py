"""Denton et al.'s approximations of convolutions: monochromatic and biclustered.

**Monochromatic** (the first layer, whose input has few color channels). Each output filter
``W_f`` (``kh kw x C``) is approximated by a rank-1 filter, a spatial filter times a color vector
(the leading singular pair of ``W_f``); the filters' color vectors are clustered into ``C'``
colors (k-means; each vector's sign is fixed so that its entries sum to a non-negative value) and
each filter's spatial part is refit by least squares to its cluster's color. The layer then
projects the input on the ``C'`` colors (a 1x1 convolution) and each output filter convolves the
one color channel of its cluster with its own spatial filter (a depthwise convolution):
``C C' + kh kw F`` multiply-adds per pixel instead of ``kh kw C F``.

**Biclustering** (the other layers). The input channels are clustered into ``G`` groups and the
output channels into ``H`` groups, and each of the ``G H`` blocks is approximated at rank ``K``.
What is implemented: each channel is described by its slice of the kernel, the slices are
clustered by k-means, and, since the groups must be of equal size to run as one grouped
convolution, the channels are ordered by (cluster, projection on the slices' first principal
direction), the clusters themselves ordered by their centres' projection, and cut into equal
consecutive groups. Each block, as the ``(kh kw C/G, F/H)`` matrix, is replaced by its truncated
SVD (Denton et al. also consider a sum of rank-1 tensors per block; the SVD form is used here). It
runs as a grouped ``kh x kw`` convolution (``G`` groups, ``H K`` outputs each) and a block
product: ``kh kw C H K + G K F`` multiply-adds per pixel in principle; the product is run as one
matmul with the block-sparse ``(G H K, F)`` matrix (``G H K F``), faster on CPU than ``H`` small
products and a gather. At ``K = min(kh kw C/G, F/H)`` it is exact.

References:
    Denton, Zaremba, Bruna, LeCun and Fergus, "Exploiting linear structure within convolutional
    networks for efficient evaluation", NeurIPS 2014, arXiv:1404.0736.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.core import _checks as checks
from jaxcomp.core._transform import Transform
from jaxcomp.core._tree import MaskedNode
from jaxcomp.lowrank._decompose import split_svd
from jaxcomp.lowrank._factorize import FactorizedState
from jaxcomp.lowrank._factorize import build
from jaxcomp.lowrank._factorize import conv_only
from jaxcomp.lowrank._jaderberg import spatial_convs
from jaxcomp.lowrank._nodes import Bicluster
from jaxcomp.lowrank._nodes import Monochromatic
from jaxcomp.lowrank._rank import check_rank
from jaxcomp.quant._cluster import kmeans_vectors
from jaxcomp.select._select import Selector

__all__ = ["BiclusterState", "MonochromaticState", "bicluster", "monochromatic"]

MAX_COLORS = 4
"""The default selection of :func:`monochromatic`: spatial convolutions with at most this many
input channels (the color layers)."""


class MonochromaticState(FactorizedState):
    """The state of :func:`monochromatic`: the ``spec``; ``fixed`` holds, per kernel,
    ``{"assign": (F,) int32}``."""


def monochromatic(
    *, colors: int, key: jax.Array, iterations: int = 20, where: Any = None
) -> Transform:
    """Denton's monochromatic approximation of (first-layer) convolutions.

    Args:
      colors: ``C'``, the number of color clusters, ``1 <= C' <= F``.
      key: a PRNG key for the k-means start; the same key gives the same result.
      iterations: k-means iterations, an int >= 1.
      where: the convolution kernels (default: spatial convolutions with at most
        ``MAX_COLORS = 4`` input channels; a tree with none is left unchanged).

    Returns:
      A structure-changing :class:`jaxcomp.Transform` whose ``cparams`` hold
      :class:`Monochromatic` nodes (``colors`` and ``spatial`` trained; ``assign`` in the state,
      :class:`MonochromaticState`).

    Raises:
      ValueError: a hyperparameter out of range; at ``init``, a selected leaf that is not a 4-D
        convolution kernel or has fewer than ``colors`` filters, naming the leaf.

    References:
        Denton et al., "Exploiting linear structure within convolutional networks for efficient
        evaluation", NeurIPS 2014, arXiv:1404.0736 (section 3.2.1).
    """
    checks.integer(colors, fn="monochromatic", name="colors")
    checks.integer(iterations, fn="monochromatic", name="iterations")
    checks.key(key, fn="monochromatic")
    default = spatial_convs() & Selector(
        lambda p, x: x.shape[2] <= MAX_COLORS, f"input_channels<={MAX_COLORS}"
    )

    def factorize(leaf, x):
        kh, kw, c, f = x.shape
        check_rank("monochromatic", leaf.path, colors, f, f"colors <= F = {f} filters")
        w = np.reshape(np.transpose(np.asarray(x, np.float64), (3, 0, 1, 2)), (f, kh * kw, c))
        vt = np.linalg.svd(w, full_matrices=False)[2]
        color = vt[:, 0, :]  # (F, C), unit vectors
        color = color * np.where(np.sum(color, axis=1) < 0, -1.0, 1.0)[:, None]
        centres, assign = kmeans_vectors(
            color, k=colors, key=jax.random.fold_in(key, leaf.index), iterations=iterations
        )
        centres, assign = np.asarray(centres, np.float64), np.asarray(assign)
        col = centres[assign]  # (F, C)
        norm2 = np.sum(col**2, axis=1)
        spatial = np.einsum("fkc,fc->fk", w, col) / np.where(norm2 > 0, norm2, 1.0)[:, None]
        node = Monochromatic(
            colors=jnp.asarray(centres.T, x.dtype),
            spatial=jnp.asarray(np.reshape(spatial.T, (kh, kw, f)), x.dtype),
            assign=MaskedNode(),
        )
        return node, {"assign": jnp.asarray(assign, jnp.int32)}

    return build(
        what="monochromatic",
        where=where,
        default=default,
        accepts=conv_only("the monochromatic approximation"),
        factorize=factorize,
        state_cls=MonochromaticState,
    )


def _balanced_order(feats: np.ndarray, groups: int, key: jax.Array, iterations: int) -> np.ndarray:
    """Channels ordered so that ``groups`` equal consecutive chunks follow k-means clusters."""
    n = feats.shape[0]
    if groups == 1:
        return np.arange(n, dtype=np.int32)
    centred = feats - np.mean(feats, axis=0, keepdims=True)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    centres, labels = kmeans_vectors(feats, k=groups, key=key, iterations=iterations)
    centres, labels = np.asarray(centres, np.float64), np.asarray(labels)
    cluster_rank = np.argsort(np.argsort(centres @ direction))
    return np.lexsort((feats @ direction, cluster_rank[labels])).astype(np.int32)


class BiclusterState(FactorizedState):
    """The state of :func:`bicluster`: the ``spec``; ``fixed`` holds, per kernel,
    ``{"perm_in", "inv_out"}`` int32."""


def bicluster(
    *,
    groups_in: int,
    groups_out: int,
    rank: int,
    key: jax.Array,
    iterations: int = 20,
    where: Any = None,
) -> Transform:
    """Denton's biclustering approximation: channel clusters, a truncated SVD per block.

    Args:
      groups_in: ``G``, input channel groups (must divide ``C``).
      groups_out: ``H``, output channel groups (must divide ``F``).
      rank: ``K``, the rank of each block, ``1 <= K <= min(kh kw C/G, F/H)``.
      key: a PRNG key for the k-means starts; the same key gives the same result.
      iterations: k-means iterations, an int >= 1.
      where: the convolution kernels (default: every ``(kh, kw, C, F)`` kernel with
        ``kh * kw > 1``; a tree with none is left unchanged).

    Returns:
      A structure-changing :class:`jaxcomp.Transform` whose ``cparams`` hold :class:`Bicluster`
      nodes (``u`` and ``v`` trained; the channel orders in the state, :class:`BiclusterState`).

    Raises:
      ValueError: a hyperparameter out of range; at ``init``, a selected leaf that is not a 4-D
        convolution kernel, whose channels the groups do not divide, or whose blocks are smaller
        than ``rank``, naming the leaf.

    References:
        Denton et al., "Exploiting linear structure within convolutional networks for efficient
        evaluation", NeurIPS 2014, arXiv:1404.0736 (section 3.2.2).
    """
    for name, v in (("groups_in", groups_in), ("groups_out", groups_out), ("rank", rank)):
        checks.integer(v, fn="bicluster", name=name)
    checks.integer(iterations, fn="bicluster", name="iterations")
    checks.key(key, fn="bicluster")

    def accepts(path, x):
        reason = conv_only("biclustering")(path, x)
        if reason is None and (x.shape[2] % groups_in or x.shape[3] % groups_out):
            reason = (
                f"groups_in={groups_in} must divide C={x.shape[2]} and groups_out={groups_out} "
                f"must divide F={x.shape[3]}"
            )
        return reason

    def factorize(leaf, x):
        kh, kw, c, f = x.shape
        g, h = groups_in, groups_out
        cg, fh = c // g, f // h
        check_rank("bicluster", leaf.path, rank, min(kh * kw * cg, fh), "min(kh kw C/G, F/H)")
        k_in, k_out = jax.random.split(jax.random.fold_in(key, leaf.index))
        w = np.asarray(x, np.float64)
        perm_in = _balanced_order(np.reshape(np.transpose(w, (2, 0, 1, 3)), (c, -1)), g, k_in,
                                  iterations)  # fmt: skip
        perm_out = _balanced_order(np.reshape(np.transpose(w, (3, 0, 1, 2)), (f, -1)), h, k_out,
                                   iterations)  # fmt: skip
        blocks = np.reshape(w[:, :, perm_in][..., perm_out], (kh, kw, g, cg, h, fh))
        blocks = np.reshape(np.transpose(blocks, (2, 4, 0, 1, 3, 5)), (g, h, kh * kw * cg, fh))
        a, b = split_svd(blocks, rank)  # (G, H, kh kw cg, K), (G, H, K, fh)
        a = np.transpose(np.reshape(a, (g, h, kh, kw, cg, rank)), (2, 3, 4, 0, 1, 5))
        node = Bicluster(
            u=jnp.asarray(np.reshape(a, (kh, kw, cg, g * h * rank)), x.dtype),
            v=jnp.asarray(b, x.dtype),
            perm_in=MaskedNode(),
            inv_out=MaskedNode(),
        )
        inv_out = np.argsort(perm_out).astype(np.int32)
        fixed = {"perm_in": jnp.asarray(perm_in), "inv_out": jnp.asarray(inv_out)}
        return node, fixed

    return build(
        what="bicluster",
        where=where,
        default=spatial_convs(),
        accepts=accepts,
        factorize=factorize,
        state_cls=BiclusterState,
    )

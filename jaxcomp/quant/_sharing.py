"""Trained weight sharing: k-means (Deep Compression) and entropy-constrained (ECSQ) codebooks.

Each selected weight matrix is clustered once, at ``init`` (Gong et al. 2014): every weight gets
the index of its cluster, and the cluster's centroid stands for it. Then, as in Deep Compression
(Han et al. 2016), the indices stay fixed and the centroids are trained: the transform's
``cparams`` hold, per shared leaf, ``{"centroids": (K,)}``, its state the integer index of each
weight, and ``apply`` rebuilds the dense weight by a gather, ``codebook[indices]``. The gradient of
a gather is a scatter-add, so each centroid receives exactly the sum of its members' gradients,
the update rule of Deep Compression, with no extra code.

Pruned weights (exact zeros, for instance after ``jc.prune``) are left out of the clusters when
``keep_zeros=True``: index 0 is reserved for a fixed, untrained 0.0, so they stay zero.

Choi et al. (2017) weight the clustering by a Hessian diagonal (``hessian=``; they use Adam's second
moment estimate), and replace k-means by entropy-constrained scalar quantization (:func:`ecsq`),
whose Lagrangian rate term leaves the indices cheaper to Huffman-code.

``finalize`` returns :class:`~jaxcomp.quant.CodebookArray` nodes: the codebook (with the zero
entry when kept) and uint8 indices (uint16 above 256 entries), ready for Huffman coding.

References:
  Gong, Liu, Yang and Bourdev, "Compressing deep convolutional networks using vector
  quantization", 2014, arXiv:1412.6115.

  Han, Mao and Dally, "Deep Compression: compressing deep neural networks with pruning, trained
  quantization and Huffman coding", ICLR 2016, arXiv:1510.00149.

  Choi, El-Khamy and Lee, "Towards the limit of network quantization", ICLR 2017,
  arXiv:1612.01543.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.core import MaskedNode
from jaxcomp.core import Transform
from jaxcomp.core import leaf_paths
from jaxcomp.core import path_str
from jaxcomp.quant._cluster import INITS
from jaxcomp.quant._cluster import ecsq_1d
from jaxcomp.quant._cluster import kmeans_1d
from jaxcomp.quant._core import check_bits
from jaxcomp.quant._core import key_data
from jaxcomp.quant._nodes import CodebookArray
from jaxcomp.quant._nodes import index_dtype
from jaxcomp.select import resolve

__all__ = ["KMeansState", "ecsq", "kmeans"]


class KMeansState(NamedTuple):
    """The state of :func:`kmeans` and :func:`ecsq`.

    Attributes:
      indices: per shared leaf, the index of each weight's centroid (the leaf's shape, uint8 for
        up to 256 codebook entries, else uint16); with ``keep_zeros``, index 0 is the fixed zero.
        ``MaskedNode()`` for leaves that are not shared.
    """

    indices: Any


def _is_masked(x: Any) -> bool:
    return isinstance(x, MaskedNode)


def _num_clusters(clusters: Any, bits: Any, keep_zeros: bool, fn: str) -> int:
    if (clusters is None) == (bits is None):
        raise ValueError(f"{fn}: give exactly one of clusters= and bits=")
    if bits is not None:
        b = check_bits(bits, lo=1, hi=16, what=f"{fn}: bits")
        k = 2**b - (1 if keep_zeros else 0)
        if k < 1:
            raise ValueError(f"{fn}: bits=1 with keep_zeros=True leaves no cluster; use bits >= 2")
        return k
    if isinstance(clusters, bool) or not isinstance(clusters, int) or not 1 <= clusters <= 65535:
        raise ValueError(f"{fn}: clusters must be an int in [1, 65535], got {clusters!r}")
    return clusters


def _check_common(fn: str, init: Any, key: Any, iterations: Any) -> None:
    if init not in INITS:
        raise ValueError(f"{fn}: init must be one of {INITS}, got {init!r}")
    if init == "random" and key is None:
        raise ValueError(f"{fn}: init='random' needs key=, a jax.random.key")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"{fn}: iterations must be an int >= 1, got {iterations!r}")


def _hessian_lookup(hessian: Any, params: Any) -> dict[str, Any]:
    if hessian is None:
        return {}
    tree = hessian(params) if callable(hessian) else hessian
    paths = leaf_paths(tree)
    return dict(zip(paths, jax.tree.leaves(tree), strict=True))


def _shared(
    fn: str,
    cluster: Callable[..., tuple[jax.Array, jax.Array]],
    k: int,
    keep_zeros: bool,
    hessian: Any,
    key: jax.Array | None,
    where: Any,
) -> Transform:
    kd = None if key is None else key_data(key, what=f"{fn}: key")

    def init(params):
        mask = resolve(where, params, what=f"{fn}(where=...)")
        hess = _hessian_lookup(hessian, params)
        pl, treedef = jax.tree_util.tree_flatten_with_path(params)
        flags = treedef.flatten_up_to(mask)
        cs, idxs = [], []
        for i, ((p, w), m) in enumerate(zip(pl, flags, strict=True)):
            if not m:
                cs.append(w)
                idxs.append(MaskedNode())
                continue
            path = path_str(p)
            valid = (w != 0) if keep_zeros else jnp.ones(w.shape, bool)
            if not isinstance(w, jax.core.Tracer):
                distinct = np.unique(np.asarray(w)[np.asarray(valid)]).size
                if k > distinct:
                    raise ValueError(
                        f"{fn}: clusters={k} is more than the {distinct} distinct "
                        f"{'nonzero ' if keep_zeros else ''}weights of leaf {path!r}"
                    )
            h = None
            if hessian is not None:
                if path not in hess:
                    raise ValueError(f"{fn}: hessian= has no leaf {path!r}")
                h = jnp.asarray(hess[path], w.dtype)
                if h.shape != w.shape:
                    raise ValueError(
                        f"{fn}: hessian leaf {path!r} has shape {h.shape}, the weight {w.shape}"
                    )
            sub = None if kd is None else jax.random.fold_in(jax.random.wrap_key_data(kd), i)
            c, idx = cluster(w, k=k, key=sub, weights=h, valid=valid)
            entries = k + (1 if keep_zeros else 0)
            idx = jnp.where(valid, idx + (1 if keep_zeros else 0), 0).astype(index_dtype(entries))
            cs.append({"centroids": c.astype(w.dtype)})
            idxs.append(idx)
        return jax.tree.unflatten(treedef, cs), KMeansState(jax.tree.unflatten(treedef, idxs))

    def codebook(c):
        cen = c["centroids"]
        return jnp.concatenate([jnp.zeros((1,), cen.dtype), cen]) if keep_zeros else cen

    def node(c, idx):
        cb = codebook(c)
        return CodebookArray(cb, idx, jnp.dtype(cb.dtype))

    def per_shared(fn, cparams, state):
        """``fn(node)`` for each shared leaf; the other leaves of ``cparams`` unchanged."""
        return jax.tree.map(
            lambda idx, c: c if _is_masked(idx) else fn(node(c, idx)),
            state.indices,
            cparams,
            is_leaf=_is_masked,
        )

    def apply(cparams, state):
        return per_shared(CodebookArray.to_dense, cparams, state)

    def update(cparams, state, *, step, grads=None):
        del step, grads
        return cparams, state

    def finalize(cparams, state):
        return per_shared(lambda n: n, cparams, state)

    return Transform(init, apply, update, finalize)


def kmeans(
    *,
    clusters: int | None = None,
    bits: int | None = None,
    init: str = "linear",
    iterations: int = 20,
    key: jax.Array | None = None,
    keep_zeros: bool = True,
    hessian: Any = None,
    where: Any = None,
) -> Transform:
    """k-means weight sharing with trained centroids (Gong et al. 2014; Han et al. 2016).

    Args:
      clusters: the number of trained centroids per leaf.
      bits: instead of ``clusters``: the index width; ``2**bits`` codebook entries, one of them
        the fixed zero when ``keep_zeros`` (so ``2**bits - 1`` clusters).
      init: centroid initialization: ``"linear"`` (Han et al.'s best), ``"density"`` or
        ``"random"`` (needs ``key``).
      iterations: Lloyd iterations (fixed; jit-able).
      key: the PRNG key of ``init="random"``.
      keep_zeros: leave exact zeros (pruned weights) out of the clusters, fixed at zero.
      hessian: Hessian-weighted k-means (Choi et al. 2017): a pytree with the params' leaf paths
        holding a nonnegative weight per weight (such as Adam's second moment ``nu``), or a
        function of the params returning one.
      where: the leaves to share (default :func:`jaxcomp.select.kernels`).

    Returns:
      A structure-changing :class:`jaxcomp.Transform`: ``cparams`` hold ``{"centroids": (K,)}``
      per shared leaf, the state is a :class:`KMeansState`, ``finalize`` gives
      :class:`CodebookArray` nodes.

    Raises:
      ValueError: a hyperparameter is out of range; at ``init``, more clusters than distinct
        (nonzero) weights in a leaf, or a Hessian leaf that is missing or misshapen.
    """
    k = _num_clusters(clusters, bits, keep_zeros, "kmeans")
    _check_common("kmeans", init, key, iterations)

    def cluster(w, *, k, key, weights, valid):
        return kmeans_1d(w, k=k, init=init, iterations=iterations, key=key, weights=weights,
                         valid=valid)  # fmt: skip

    return _shared("kmeans", cluster, k, keep_zeros, hessian, key, where)


def ecsq(
    *,
    clusters: int | None = None,
    bits: int | None = None,
    rate: float = 0.02,
    init: str = "linear",
    iterations: int = 20,
    key: jax.Array | None = None,
    keep_zeros: bool = True,
    hessian: Any = None,
    where: Any = None,
) -> Transform:
    """Entropy-constrained scalar quantization with trained centroids (Choi et al. 2017).

    Like :func:`kmeans`, but the clusters minimize the Lagrangian ``distortion + rate * entropy``
    (see :func:`jaxcomp.quant.ecsq_1d`; ``rate`` is dimensionless, the distortion being divided by
    ``mean(h) * var(w)``). ``rate=0`` is (Hessian-weighted) k-means; larger values trade accuracy
    for indices that Huffman-code to fewer bits.

    Args:
      clusters: the largest number of clusters per leaf (some may empty out).
      bits: instead of ``clusters``, the index width (as in :func:`kmeans`).
      rate: the Lagrange multiplier of the rate term, >= 0.
      init: centroid initialization (as in :func:`kmeans`).
      iterations: Lloyd-like iterations.
      key: the PRNG key of ``init="random"``.
      keep_zeros: leave exact zeros out of the clusters.
      hessian: per-weight Hessian weights, as in :func:`kmeans`.
      where: the leaves to share (default :func:`jaxcomp.select.kernels`).

    Returns:
      A structure-changing :class:`jaxcomp.Transform`, as :func:`kmeans`.

    Raises:
      ValueError: as :func:`kmeans`, or ``rate < 0``.
    """
    k = _num_clusters(clusters, bits, keep_zeros, "ecsq")
    _check_common("ecsq", init, key, iterations)
    if not isinstance(rate, int | float) or rate < 0:
        raise ValueError(f"ecsq: rate must be a number >= 0, got {rate!r}")

    def cluster(w, *, k, key, weights, valid):
        return ecsq_1d(w, k=k, lam=float(rate), init=init, iterations=iterations, key=key,
                       weights=weights, valid=valid)  # fmt: skip

    return _shared("ecsq", cluster, k, keep_zeros, hessian, key, where)

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

from jaxcomp.core import Transform
from jaxcomp.core import _checks as checks
from jaxcomp.core._map import by_path
from jaxcomp.core._map import leaf_key
from jaxcomp.core._map import leaves
from jaxcomp.core._map import map_leaves
from jaxcomp.core._map import placed
from jaxcomp.core._map import rebuild
from jaxcomp.core._map import select
from jaxcomp.core._map import selected
from jaxcomp.quant._cluster import INITS
from jaxcomp.quant._cluster import ecsq_1d
from jaxcomp.quant._cluster import kmeans_1d
from jaxcomp.quant._core import key_data
from jaxcomp.quant._nodes import CodebookArray
from jaxcomp.quant._nodes import index_dtype

__all__ = ["KMeansState", "ecsq", "kmeans"]


class KMeansState(NamedTuple):
    """The state of :func:`kmeans` and :func:`ecsq`.

    Attributes:
      indices: per shared leaf, the index of each weight's centroid (the leaf's shape, uint8 for
        up to 256 codebook entries, else uint16); with ``keep_zeros``, index 0 is the fixed zero.
        ``MaskedNode()`` for leaves that are not shared.
    """

    indices: Any


def _check_clusters(clusters: Any, bits: Any, keep_zeros: bool, fn: str) -> tuple[Any, Any]:
    """Exactly one of ``clusters`` and ``bits``, each for every leaf or per leaf; checked."""
    if (clusters is None) == (bits is None):
        raise ValueError(f"{fn}: give exactly one of clusters= and bits=")
    if bits is not None:
        low = 2 if keep_zeros else 1  # keep_zeros spends one of the 2**bits entries on the zero
        one = lambda v, name: checks.bits(v, fn=fn, name=name, low=low)
        return None, checks.per_leaf(bits, one, fn=fn, name="bits")
    one = lambda v, name: checks.integer(v, fn=fn, name=name, high=65535)
    return checks.per_leaf(clusters, one, fn=fn, name="clusters"), None


def _check_common(fn: str, init: Any, key: Any, iterations: Any) -> None:
    checks.choice(init, INITS, fn=fn, name="init")
    if init == "random":
        checks.key(key, fn=fn, why="init='random'")
    checks.integer(iterations, fn=fn, name="iterations")


def _shared(
    fn: str,
    cluster: Callable[..., tuple[jax.Array, jax.Array]],
    clusters: Any,
    bits: Any,
    keep_zeros: bool,
    hessian: Any,
    key: jax.Array | None,
    where: Any,
) -> Transform:
    kd = None if key is None else key_data(key, fn=fn)
    extra = 1 if keep_zeros else 0

    def init(params):
        spec = select(params, where, fn=fn, clusters=clusters, bits=bits)
        ws = selected(spec, params)
        hs = [None] * len(ws)
        if hessian is not None:
            tree = hessian(params) if callable(hessian) else hessian
            paths, shapes = [lf.path for lf in leaves(spec)], [w.shape for w in ws]
            hs = by_path(tree, paths, shapes, what=f"{fn}(hessian=...)")

        def one(leaf, w, h):
            k = leaf["clusters"] if bits is None else 2 ** leaf["bits"] - extra
            valid = (w != 0) if keep_zeros else jnp.ones(w.shape, bool)
            if not isinstance(w, jax.core.Tracer):
                distinct = np.unique(np.asarray(w)[np.asarray(valid)]).size
                if k > distinct:
                    raise ValueError(
                        f"{fn}: clusters={k} is more than the {distinct} distinct "
                        f"{'nonzero ' if keep_zeros else ''}weights of leaf {leaf.path!r}"
                    )
            h = None if h is None else jnp.asarray(h, w.dtype)
            sub = None if kd is None else leaf_key(kd, leaf)
            c, idx = cluster(w, k=k, key=sub, weights=h, valid=valid)
            idx = jnp.where(valid, idx + extra, 0).astype(index_dtype(k + extra))
            return {"centroids": c.astype(w.dtype)}, idx

        out = [one(lf, w, h) for lf, w, h in zip(leaves(spec), ws, hs, strict=True)]
        cs = rebuild(spec, params, [c for c, _ in out])
        return cs, KMeansState(placed(spec, [i for _, i in out]))

    def node(c, idx):
        cen = c["centroids"]
        cb = jnp.concatenate([jnp.zeros((1,), cen.dtype), cen]) if keep_zeros else cen
        return CodebookArray(cb, idx, jnp.dtype(cb.dtype))

    def apply(cparams, state):
        return map_leaves(
            lambda _, c, i: node(c, i).to_dense(), state.indices, cparams, state.indices
        )

    def update(cparams, state, *, step, grads=None):
        del step, grads
        return cparams, state

    def finalize(cparams, state):
        return map_leaves(lambda _, c, i: node(c, i), state.indices, cparams, state.indices)

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
      clusters: the number of trained centroids per leaf, an int in [1, 65535]; or per leaf,
        ``{path: clusters}`` or ``[(regex, clusters)]`` rules (first match wins).
      bits: instead of ``clusters``: the index width, an int in [1, 16] ([2, 16] with
        ``keep_zeros``); ``2**bits`` codebook entries, one of them the fixed zero when
        ``keep_zeros`` (so ``2**bits - 1`` clusters). Per leaf like ``clusters``: Deep
        Compression's ``[("Conv", 8), ("Dense", 5)]``.
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
    clusters, bits = _check_clusters(clusters, bits, keep_zeros, "kmeans")
    _check_common("kmeans", init, key, iterations)

    def cluster(w, *, k, key, weights, valid):
        return kmeans_1d(w, k=k, init=init, iterations=iterations, key=key, weights=weights,
                         valid=valid)  # fmt: skip

    return _shared("kmeans", cluster, clusters, bits, keep_zeros, hessian, key, where)


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
      clusters: the largest number of clusters per leaf (some may empty out); per-leaf values as
        in :func:`kmeans`.
      bits: instead of ``clusters``, the index width (as in :func:`kmeans`, per leaf too).
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
    clusters, bits = _check_clusters(clusters, bits, keep_zeros, "ecsq")
    _check_common("ecsq", init, key, iterations)
    checks.number(rate, fn="ecsq", name="rate", low=0)

    def cluster(w, *, k, key, weights, valid):
        return ecsq_1d(w, k=k, lam=float(rate), init=init, iterations=iterations, key=key,
                       weights=weights, valid=valid)  # fmt: skip

    return _shared("ecsq", cluster, clusters, bits, keep_zeros, hessian, key, where)

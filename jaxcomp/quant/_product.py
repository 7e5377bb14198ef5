"""Product and residual quantization of weight matrices, and Q-CNN's error-corrected codebooks.

A kernel is viewed as a ``(D, out)`` matrix (its leading axes flattened, the output features last).
Its ``D`` rows are split into ``M = D / d`` sub-spaces of ``d`` rows; in each sub-space every output
column's ``d``-vector is replaced by the nearest of ``K`` codewords learned by k-means (product
quantization, Gong et al. 2014; Jégou et al. 2011). Storage: ``M * out`` indices of
``log2 K`` bits and ``M * K * d`` codeword values, about ``log2(K) / d`` bits per weight. Residual
quantization (Gong et al. 2014) quantizes the error again, ``stages`` times, and sums the codewords.

Wu et al. (2016, Q-CNN) observe that what matters is the layer's response, not its weights: with
calibration inputs ``X`` (``inputs=``, the layer's input rows, im2col patches for convolutions, see
:func:`jaxcomp.adapt.capture`) they fit the sub-space codebooks to minimize
``||X W - X W_hat||^2``. Starting from plain product quantization, each round visits every
sub-space ``m`` and, holding the others fixed, (1) assigns each output column the codeword whose
response ``X_m c`` is nearest to the residual response ``R = X W - sum_{m' != m} X_m' W_hat_m'``
and (2) refits each codeword by least squares to the mean residual of its members. Both steps
carry a ridge that pulls each codeword towards its members' sub-vectors of ``W`` (plain PQ):
the cost is ``||R_j - X_m c||^2 + a ||w_j - c||^2``, so the refit is
``c = (X_m^T X_m + a I)^{-1} (X_m^T mean(R_j) + a mean(w_j))``, with ``a = ridge * ||X||^2 / D``.
Without it, input directions that the calibration rows barely excite (MNIST pixels that are
rarely on) get codewords fitted to a handful of rows: on LeNet-300-100 (``d = 4``, ``K = 16``,
1,000 calibration images) the first layer's relative response error was 0.010 on those images
and 0.57 on held-out ones, and test accuracy fell below plain PQ's (0.902 against 0.922); with
``ridge=1e-2`` it is 0.010 and 0.031 (plain PQ: 0.068) and the accuracy 0.934.

The codebooks are the ``cparams`` (trainable, like Deep Compression's centroids: each codeword gets
the summed gradient of the sub-vectors that use it) and the codes the state; ``finalize`` gives
:class:`~jaxcomp.quant.ProductQuantizedArray` nodes.

References:
  Gong, Liu, Yang and Bourdev, "Compressing deep convolutional networks using vector
  quantization", 2014, arXiv:1412.6115.

  Jégou, Douze and Schmid, "Product quantization for nearest neighbor search", IEEE TPAMI, 2011.

  Wu, Leng, Wang, Hu and Cheng, "Quantized convolutional neural networks for mobile devices",
  CVPR 2016, arXiv:1512.06473.
"""

from __future__ import annotations

import functools
import math
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.core import Transform
from jaxcomp.core import _checks as checks
from jaxcomp.core._map import leaf_key
from jaxcomp.core._map import leaves
from jaxcomp.core._map import map_leaves
from jaxcomp.core._map import placed
from jaxcomp.core._map import rebuild
from jaxcomp.core._map import select
from jaxcomp.core._map import selected
from jaxcomp.quant._cluster import kmeans_vectors
from jaxcomp.quant._core import key_data
from jaxcomp.quant._nodes import ProductQuantizedArray
from jaxcomp.quant._nodes import index_dtype

__all__ = ["ProductQuantState", "product_quant", "residual_quant"]


class ProductQuantState(NamedTuple):
    """The state of :func:`product_quant` and :func:`residual_quant`.

    Attributes:
      codes: per quantized leaf, ``(S, M, out)`` codeword indices (uint8 for ``K <= 256``);
        ``MaskedNode()`` elsewhere.
      spec: a :class:`jaxcomp.core.Leaf` per quantized leaf holding the kernel's ``shape``;
        ``MaskedNode()`` elsewhere.
    """

    codes: Any
    spec: Any


def _reconstruct(codebooks: jax.Array, codes: jax.Array, shape: tuple[int, ...], dtype) -> Any:
    return ProductQuantizedArray(codebooks, codes, tuple(shape), dtype).to_dense()


@functools.partial(jax.jit, static_argnames=("d", "k", "iterations"))
def _pq_fit(w2: jax.Array, d: int, k: int, iterations: int, key: jax.Array):
    """Plain PQ of a (D, out) matrix: codebooks (M, K, d), codes (M, out)."""
    dd, out = w2.shape
    m = dd // d
    sub = jnp.transpose(w2.reshape(m, d, out), (0, 2, 1))  # (M, out, d)
    keys = jax.random.split(key, m)
    return jax.vmap(lambda v, kk: kmeans_vectors(v, k=k, iterations=iterations, key=kk))(sub, keys)


@functools.partial(jax.jit, static_argnames=("d", "rounds"))
def _error_correct(x, w2, codebooks, codes, *, d, rounds, ridge):
    """Q-CNN: refit the sub-space codebooks to the layer's response on inputs ``x`` (N, D)."""
    dd, out = w2.shape
    m_total, k, _ = codebooks.shape
    target = x @ w2  # (N, out)
    # the ridge, relative to the mean energy of one input dimension over the whole layer
    a = (ridge + 1e-6) * (jnp.sum(x * x) / dd + 1e-12)

    def recon_m(cb, cd):  # (K, d), (out,) -> (d, out)
        return cb[cd].T

    w_hat = jnp.transpose(jnp.take_along_axis(codebooks, codes[..., None], axis=1), (0, 2, 1))
    resp = target - x @ w_hat.reshape(dd, out)  # the current residual response

    def sub_step(m, carry):
        cbs, cds, resp = carry
        xm = jax.lax.dynamic_slice_in_dim(x, m * d, d, axis=1)  # (N, d)
        wm = jax.lax.dynamic_slice_in_dim(w2, m * d, d, axis=0)  # (d, out)
        cb, cd = cbs[m], cds[m]
        r = resp + xm @ recon_m(cb, cd)  # residual without sub-space m
        p = xm @ cb.T  # (N, K): responses of the codewords
        cost = jnp.sum(p**2, axis=0)[None, :] - 2.0 * r.T @ p  # (out, K)
        cost = cost + a * (jnp.sum(cb**2, axis=1)[None, :] - 2.0 * wm.T @ cb.T)  # the ridge
        cd = jnp.argmin(cost, axis=1).astype(cds.dtype)
        onehot = jax.nn.one_hot(cd, k, dtype=x.dtype)  # (out, K)
        cnt = jnp.sum(onehot, axis=0)
        mean_r = (r @ onehot) / jnp.maximum(cnt, 1.0)[None, :]  # (N, K)
        mean_w = (wm @ onehot) / jnp.maximum(cnt, 1.0)[None, :]  # (d, K): members' mean
        g = xm.T @ xm
        fit = jnp.linalg.solve(g + a * jnp.eye(d, dtype=x.dtype), xm.T @ mean_r + a * mean_w).T
        cb = jnp.where(cnt[:, None] > 0, fit, cb)
        resp = r - xm @ recon_m(cb, cd)
        return cbs.at[m].set(cb), cds.at[m].set(cd), resp

    def round_(_, carry):
        return jax.lax.fori_loop(0, m_total, sub_step, carry)

    cbs, cds, _ = jax.lax.fori_loop(0, rounds, round_, (codebooks, codes, resp))
    return cbs, cds


def _pq_transform(
    fn: str,
    *,
    subvector: int | None,
    clusters: int,
    stages: int,
    iterations: int,
    key: jax.Array,
    inputs: dict[str, Any] | None,
    rounds: int,
    ridge: float,
    where: Any,
) -> Transform:
    kd = key_data(key, fn=fn)

    def init(params):
        spec = select(params, where, fn=fn, derive=lambda lf, w: {"shape": tuple(w.shape)})
        unknown = sorted(set(inputs or {}) - {lf.path for lf in leaves(spec)})
        if unknown:
            raise ValueError(f"{fn}: inputs= names leaves that are not quantized: {unknown}")
        cs, codes = [], []
        for leaf, w in zip(leaves(spec), selected(spec, params), strict=True):
            path = leaf.path
            if w.ndim < 2:
                raise ValueError(f"{fn}: leaf {path!r} has {w.ndim} dimensions; kernels need >= 2")
            out = w.shape[-1]
            dd = math.prod(w.shape[:-1])
            d = dd if subvector is None else subvector
            if dd % d:
                raise ValueError(
                    f"{fn}: subvector={d} does not divide the {dd} input rows of leaf {path!r} "
                    f"(shape {w.shape})"
                )
            if clusters > out:
                raise ValueError(
                    f"{fn}: clusters={clusters} is more than the {out} sub-vectors per sub-space "
                    f"(output columns) of leaf {path!r}"
                )
            w2 = jnp.reshape(w, (dd, out)).astype(jnp.float32)
            if not isinstance(w, jax.core.Tracer):
                distinct = np.unique(np.asarray(w2).T, axis=0).shape[0]
                if distinct < clusters:
                    raise ValueError(
                        f"{fn}: clusters={clusters} is more than the {distinct} distinct columns "
                        f"of leaf {path!r}"
                    )
            base = leaf_key(kd, leaf)
            resid, books, cds = w2, [], []
            for s in range(stages):
                sub = jax.random.fold_in(base, s)
                cb, cd = _pq_fit(resid, d=d, k=clusters, iterations=iterations, key=sub)
                if inputs is not None and path in inputs:
                    x = jnp.asarray(inputs[path], jnp.float32)
                    if x.ndim != 2 or x.shape[1] != dd:
                        raise ValueError(
                            f"{fn}: inputs[{path!r}] must be (N, {dd}) rows, got {x.shape}"
                        )
                    cb, cd = _error_correct(x, resid, cb, cd, d=d, rounds=rounds, ridge=ridge)
                books.append(cb)
                cds.append(cd)
                resid = resid - _reconstruct(cb[None], cd[None], (dd, out), jnp.float32)
            cs.append({"codebooks": jnp.stack(books).astype(w.dtype)})
            codes.append(jnp.stack(cds).astype(index_dtype(clusters)))
        return rebuild(spec, params, cs), ProductQuantState(placed(spec, codes), spec)

    def per_quantized(fn, cparams, state):
        """``fn(node)`` for each quantized leaf; the other leaves of ``cparams`` unchanged."""

        def one(leaf, c, cd):
            cb = c["codebooks"]
            return fn(ProductQuantizedArray(cb, cd, leaf["shape"], jnp.dtype(cb.dtype)))

        return map_leaves(one, state.spec, cparams, state.codes)

    def apply(cparams, state):
        return per_quantized(ProductQuantizedArray.to_dense, cparams, state)

    def update(cparams, state, *, step, grads=None):
        del step, grads
        return cparams, state

    def finalize(cparams, state):
        return per_quantized(lambda n: n, cparams, state)

    return Transform(init, apply, update, finalize)


def product_quant(
    *,
    subvector: int = 4,
    clusters: int = 16,
    iterations: int = 20,
    key: jax.Array,
    inputs: dict[str, Any] | None = None,
    rounds: int = 4,
    ridge: float = 1e-2,
    where: Any = None,
) -> Transform:
    """Product quantization of kernels (Gong et al. 2014), optionally error-corrected (Q-CNN).

    Args:
      subvector: ``d``, the rows per sub-space; must divide ``prod(kernel.shape[:-1])``.
      clusters: ``K``, the codewords per sub-space (at most the number of output columns).
      iterations: k-means iterations.
      key: the PRNG key of the k-means initialization (required).
      inputs: Q-CNN error correction: ``{leaf path: X}`` with ``X`` the layer's calibration
        inputs as ``(N, D)`` rows (:func:`jaxcomp.adapt.capture` builds them); the codebooks
        of those leaves then minimize ``||X W - X W_hat||`` instead of ``||W - W_hat||``.
      rounds: error-correction rounds over all sub-spaces.
      ridge: error correction's pull of each codeword towards its members' mean sub-vector,
        relative to the layer's mean input energy per row of the kernel, ``||X||^2 / D``
        (``>= 0``); it keeps input directions that the calibration rows barely excite near plain
        PQ instead of fitting them to a few rows.
      where: the kernels to quantize (default :func:`jaxcomp.select.kernels`).

    Returns:
      A structure-changing :class:`jaxcomp.Transform`: ``cparams`` hold
      ``{"codebooks": (1, M, K, d)}`` per leaf, the state is a :class:`ProductQuantState`,
      ``finalize`` gives :class:`ProductQuantizedArray` nodes.

    Raises:
      ValueError: a hyperparameter is out of range; at ``init``, a ``subvector`` that does not
        divide a kernel, more clusters than output columns, or misshapen ``inputs``.
    """
    checks.integer(subvector, fn="product_quant", name="subvector", low=1)
    checks.integer(clusters, fn="product_quant", name="clusters", low=1)
    checks.integer(iterations, fn="product_quant", name="iterations", low=1)
    checks.integer(rounds, fn="product_quant", name="rounds", low=1)
    ridge = checks.number(ridge, fn="product_quant", name="ridge", low=0)
    if inputs is not None and not isinstance(inputs, dict):
        raise ValueError("product_quant: inputs must be a dict {leaf path: (N, D) array}")
    return _pq_transform(
        "product_quant", subvector=subvector, clusters=clusters, stages=1, iterations=iterations,
        key=key, inputs=inputs, rounds=rounds, ridge=ridge, where=where,
    )  # fmt: skip


def residual_quant(
    *,
    stages: int = 2,
    clusters: int = 16,
    subvector: int | None = None,
    iterations: int = 20,
    key: jax.Array,
    where: Any = None,
) -> Transform:
    """Residual quantization of kernels (Gong et al. 2014): k-means of the error, stage by stage.

    Args:
      stages: how many quantizers are summed, >= 1.
      clusters: codewords per stage (and sub-space).
      subvector: rows per sub-space; None quantizes each output column whole (Gong et al.).
      iterations: k-means iterations per stage.
      key: the PRNG key of the k-means initializations (required).
      where: the kernels to quantize (default :func:`jaxcomp.select.kernels`).

    Returns:
      A structure-changing :class:`jaxcomp.Transform` like :func:`product_quant`, with
      ``(stages, M, K, d)`` codebooks.

    Raises:
      ValueError: as :func:`product_quant`.
    """
    checks.integer(stages, fn="residual_quant", name="stages", low=1)
    checks.integer(clusters, fn="residual_quant", name="clusters", low=1)
    checks.integer(iterations, fn="residual_quant", name="iterations", low=1)
    if subvector is not None:
        checks.integer(subvector, fn="residual_quant", name="subvector", low=1)
    return _pq_transform(
        "residual_quant", subvector=subvector, clusters=clusters, stages=stages,
        iterations=iterations, key=key, inputs=None, rounds=1, ridge=0.0, where=where,
    )  # fmt: skip

"""Clustering in JAX for weight sharing: scalar k-means, ECSQ, and k-means of vectors.

All three are Lloyd-style alternations with a fixed number of iterations run by
``lax.fori_loop``, so they compile once and run under ``jit``:

* :func:`kmeans_1d`: (weighted) k-means of scalars, the weight sharing of Gong et al. (2014) and
  Deep Compression (Han et al. 2016), with the three centroid initializations Han et al. compare:
  ``"linear"`` (evenly spaced between min and max), ``"density"`` (evenly spaced quantiles of the
  weights' distribution) and ``"random"`` (Forgy: distinct weights drawn at random). With
  per-weight ``weights`` (a Hessian diagonal) it is Choi et al.'s Hessian-weighted k-means. In one
  dimension the nearest centroid is found by a binary search among the midpoints of the sorted
  centroids, so memory stays linear in the number of weights.
* :func:`ecsq_1d`: entropy-constrained scalar quantization (Chou, Lookabaugh and Gray 1989; Choi
  et al. 2017): each weight goes to the cluster minimizing ``h (w - c)^2 / D0 + lam * (-log2 p)``,
  where ``p`` is the cluster's share of weights and ``D0 = mean(h) * var(w)`` makes ``lam``
  dimensionless; centroids are the ``h``-weighted means. Rarely used clusters become expensive and
  empty out, so the entropy of the indices (what Huffman coding pays) drops.
* :func:`kmeans_vectors`: k-means of vectors with farthest-point seeding (product and residual
  quantization, Denton et al.'s channel clustering).

Empty clusters keep their previous centroid. Points marked invalid (pruned weights) take no part.

References:
  Gong, Liu, Yang and Bourdev, "Compressing deep convolutional networks using vector
  quantization", 2014, arXiv:1412.6115.

  Han, Mao and Dally, "Deep Compression", ICLR 2016, arXiv:1510.00149.

  Choi, El-Khamy and Lee, "Towards the limit of network quantization", ICLR 2017,
  arXiv:1612.01543.

  Chou, Lookabaugh and Gray, "Entropy-constrained vector quantization", IEEE TASSP, 1989.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["INITS", "ecsq_1d", "init_centroids", "kmeans_1d", "kmeans_vectors"]

INITS = ("linear", "density", "random")


def init_centroids(
    x: jax.Array, valid: jax.Array, k: int, init: str, key: jax.Array | None
) -> jax.Array:
    """``k`` initial centroids for the valid entries of the flat ``x``, sorted.

    Args:
      x: the values, 1-D.
      valid: a boolean mask of the values that take part.
      k: the number of centroids.
      init: ``"linear"``, ``"density"`` or ``"random"``.
      key: the PRNG key of ``"random"``.
    """
    if init == "linear":
        lo = jnp.min(jnp.where(valid, x, jnp.inf))
        hi = jnp.max(jnp.where(valid, x, -jnp.inf))
        return jnp.linspace(lo, hi, k, dtype=x.dtype)
    if init == "density":
        qs = (jnp.arange(k, dtype=jnp.float32) + 0.5) / k
        return jnp.nanquantile(jnp.where(valid, x, jnp.nan), qs).astype(x.dtype)
    if init == "random":
        if key is None:
            raise ValueError("init='random' needs key=, a jax.random.key")
        p = valid.astype(jnp.float32)
        idx = jax.random.choice(key, x.shape[0], (k,), replace=False, p=p / jnp.sum(p))
        return jnp.sort(x[idx])
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def _nearest_sorted(x: jax.Array, c: jax.Array) -> jax.Array:
    """Index of the nearest of the sorted centroids ``c`` for each ``x`` (binary search)."""
    mids = (c[1:] + c[:-1]) / 2
    return jnp.searchsorted(mids, x, side="left").astype(jnp.int32)


def _flat_inputs(x, weights, valid):
    """The flat values, validity and weights (zero where invalid) of a clustering call."""
    x = x.reshape(-1)
    valid = jnp.ones(x.shape, bool) if valid is None else valid.reshape(-1)
    h = jnp.ones_like(x) if weights is None else weights.reshape(-1).astype(x.dtype)
    return x, valid, jnp.where(valid, h, 0.0)


def _weighted_means(x, h, idx, k, c_old):
    sums = jax.ops.segment_sum(h * x, idx, num_segments=k)
    mass = jax.ops.segment_sum(h, idx, num_segments=k)
    return jnp.where(mass > 0, sums / jnp.where(mass > 0, mass, 1.0), c_old), mass


@functools.partial(jax.jit, static_argnames=("k", "init", "iterations"))
def kmeans_1d(
    x: jax.Array,
    *,
    k: int,
    init: str = "linear",
    iterations: int = 20,
    key: jax.Array | None = None,
    weights: jax.Array | None = None,
    valid: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Weighted k-means of scalars by Lloyd iterations.

    Args:
      x: the values, any shape (flattened).
      k: the number of clusters.
      init: centroid initialization, ``"linear"``, ``"density"`` or ``"random"``.
      iterations: the number of Lloyd iterations (fixed, so it compiles once).
      key: the PRNG key of ``init="random"``.
      weights: a nonnegative weight per value (a Hessian diagonal); ones by default.
      valid: which values take part; all by default. Invalid values get index 0.

    Returns:
      ``(centroids, indices)``: the ``k`` sorted centroids and the int32 index of each value's
      nearest centroid, shaped like ``x``.

    Examples:
        >>> import jax.numpy as jnp
        >>> c, i = kmeans_1d(jnp.array([0.0, 0.1, 1.0, 1.1, 5.0]), k=3, init="density")
        >>> [round(float(v), 2) for v in c], i.tolist()
        ([0.05, 1.05, 5.0], [0, 0, 1, 1, 2])
    """
    shape = x.shape
    x, valid, h = _flat_inputs(x, weights, valid)
    c0 = init_centroids(x, valid, k, init, key)

    def body(_, c):
        c = jnp.sort(c)
        return _weighted_means(x, h, _nearest_sorted(x, c), k, c)[0]

    c = jnp.sort(jax.lax.fori_loop(0, iterations, body, c0))
    idx = jnp.where(valid, _nearest_sorted(x, c), 0)
    return c, idx.reshape(shape)


def _ecsq_assign(x, hn, c, p, lam, block):
    """argmin_k hn * (x - c_k)^2 + lam * (-log2 p_k), in blocks of ``block`` values; an empty
    cluster (``p_k = 0``) is never chosen."""
    bits_k = jnp.where(p > 0, -jnp.log2(jnp.where(p > 0, p, 1.0)), jnp.inf)

    def one(args):
        xi, hi = args
        return jnp.argmin(hi * (xi - c) ** 2 + lam * bits_k).astype(jnp.int32)

    return jax.lax.map(one, (x, hn), batch_size=block)


@functools.partial(jax.jit, static_argnames=("k", "init", "iterations"))
def ecsq_1d(
    x: jax.Array,
    *,
    k: int,
    lam: float | jax.Array,
    init: str = "linear",
    iterations: int = 20,
    key: jax.Array | None = None,
    weights: jax.Array | None = None,
    valid: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Entropy-constrained scalar quantization by Lloyd-like iterations (Choi et al. 2017).

    Alternates (1) assigning each value to ``argmin_k h (x - c_k)^2 / D0 - lam * log2 p_k`` with
    ``D0 = mean(h) * var(x)`` and (2) setting each centroid to its members' ``h``-weighted mean and
    ``p_k`` to its share of members. ``lam = 0`` is weighted k-means.

    Args:
      x: the values, any shape.
      k: the largest number of clusters (some may end up empty).
      lam: the Lagrange multiplier of the rate term, >= 0 (dimensionless).
      init: centroid initialization (as in :func:`kmeans_1d`).
      iterations: the number of iterations.
      key: the PRNG key of ``init="random"``.
      weights: a nonnegative weight per value (a Hessian diagonal); ones by default.
      valid: which values take part.

    Returns:
      ``(centroids, indices)`` as in :func:`kmeans_1d` (centroids sorted; empty clusters keep a
      centroid that no index uses).
    """
    shape = x.shape
    x, valid, h = _flat_inputs(x, weights, valid)
    n = jnp.maximum(jnp.sum(valid), 1)
    mean_x = jnp.sum(jnp.where(valid, x, 0.0)) / n
    var_x = jnp.sum(jnp.where(valid, (x - mean_x) ** 2, 0.0)) / n
    d0 = jnp.maximum(jnp.sum(h) / n * var_x, 1e-30)
    hn = h / d0
    lam = jnp.asarray(lam, x.dtype)
    c0 = init_centroids(x, valid, k, init, key)
    block = 4096

    def body(_, carry):
        c, p = carry
        idx = _ecsq_assign(x, hn, c, p, lam, block)
        c, _ = _weighted_means(x, h, idx, k, c)
        counts = jax.ops.segment_sum(valid.astype(x.dtype), idx, num_segments=k)
        return c, counts / n

    p0 = jnp.full((k,), 1.0 / k, x.dtype)
    c, p = jax.lax.fori_loop(0, iterations, body, (c0, p0))
    idx = _ecsq_assign(x, hn, c, p, lam, block)
    order = jnp.argsort(c)
    rank = jnp.argsort(order)
    idx = jnp.where(valid, rank[idx], 0)
    return c[order], idx.reshape(shape)


@functools.partial(jax.jit, static_argnames=("k", "iterations"))
def kmeans_vectors(
    v: jax.Array, *, k: int, key: jax.Array, iterations: int = 20
) -> tuple[jax.Array, jax.Array]:
    """Lloyd's k-means of the rows of ``v`` (n, d), started by farthest-point seeding.

    The first centre is a row chosen with ``key``; each next one is the row farthest from the
    centres so far, so well separated clusters each get a centre (Gonzalez 1985). A centre that
    loses all its rows keeps its place. Product and residual quantization (Gong et al. 2014) and
    Denton et al.'s channel clustering use it.

    Args:
      v: the points, ``(n, d)`` (computed in float32).
      k: ``1 <= k <= n`` (static).
      key: a PRNG key.
      iterations: Lloyd iterations (static).

    Returns:
      ``(centres (k, d) float32, labels (n,) int32)``.

    References:
      Gonzalez, "Clustering to minimize the maximum intercluster distance", Theoretical Computer
      Science 38, 1985.
    """
    x = v.astype(jnp.float32)
    n = x.shape[0]

    def sq_dists(c: jax.Array) -> jax.Array:
        return jnp.sum((x[:, None, :] - c[None, :, :]) ** 2, axis=-1)  # (n, k)

    first = jax.random.randint(key, (), 0, n)
    centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])

    def seed(i, c):
        d = jnp.where(jnp.arange(k)[None, :] < i, sq_dists(c), jnp.inf)
        return c.at[i].set(x[jnp.argmax(jnp.min(d, axis=1))])

    centres = jax.lax.fori_loop(1, k, seed, centres)

    def labels_of(c: jax.Array) -> jax.Array:
        return jnp.argmin(sq_dists(c), axis=1).astype(jnp.int32)

    def step(_, c):
        one_hot = jax.nn.one_hot(labels_of(c), k, dtype=x.dtype)  # (n, k)
        count = jnp.sum(one_hot, axis=0)
        mean = (one_hot.T @ x) / jnp.where(count > 0, count, 1.0)[:, None]
        return jnp.where((count > 0)[:, None], mean, c)

    centres = jax.lax.fori_loop(0, iterations, step, centres)
    return centres, labels_of(centres)

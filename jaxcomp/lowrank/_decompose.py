"""The decompositions behind the low-rank transforms, in JAX: SVD, CP-ALS, Tucker-2.

The vector k-means of Denton et al.'s clustering is :func:`jaxcomp.quant.kmeans_vectors`.

All are jit-able with static ranks and iteration counts (``lax.fori_loop``), and deterministic for
a given ``key``.

References:
    Eckart and Young, "The approximation of one matrix by another of lower rank", Psychometrika,
    1936 (truncated SVD is the best rank-r approximation in Frobenius norm).

    Kolda and Bader, "Tensor decompositions and applications", SIAM Review 51(3), 2009 (CP by
    alternating least squares, HOSVD and HOOI for Tucker).

    Lebedev et al., "Speeding-up convolutional neural networks using fine-tuned
    CP-decomposition", ICLR 2015, arXiv:1412.6553.

    Kim et al., "Compression of deep convolutional neural networks for fast and low power mobile
    applications", ICLR 2016, arXiv:1511.06530.
"""

from __future__ import annotations

import functools
import string
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "cp_als",
    "cp_reconstruct",
    "singular_values",
    "split_svd",
    "tucker2_decompose",
]

Array = jax.Array


def split_svd(matrix: Any, rank: int) -> tuple[Array, Array]:
    """The best rank-``rank`` factors ``(a, b)`` of a matrix, ``a @ b`` = its truncated SVD.

    The singular values are split evenly: ``a = U_r sqrt(S_r)``, ``b = sqrt(S_r) V_r^T``, so both
    factors have the same scale (which keeps fine-tuning well conditioned). A concrete matrix is
    decomposed on the host (LAPACK, float64: no compilation per shape and rank, as at a
    transform's ``init``, giving numpy arrays); a traced one with ``jnp.linalg.svd``. Leading axes
    are a stack of matrices, each factored on its own.

    Args:
      matrix: ``(..., m, n)``.
      rank: ``1 <= rank <= min(m, n)``.

    Returns:
      ``a`` of shape ``(..., m, rank)`` and ``b`` of shape ``(..., rank, n)``, float32.
    """
    traced = isinstance(matrix, jax.core.Tracer)
    xp = jnp if traced else np
    dtype = jnp.float32 if traced else np.float64
    u, s, vt = xp.linalg.svd(xp.asarray(matrix, dtype), full_matrices=False)
    root = xp.sqrt(s[..., :rank])
    a, b = u[..., :rank] * root[..., None, :], root[..., :, None] * vt[..., :rank, :]
    return a.astype(xp.float32), b.astype(xp.float32)


def singular_values(matrix: Any) -> np.ndarray:
    """The singular values of a concrete matrix, on the host (float64), in decreasing order."""
    return np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)


def _mode_einsum(ndim: int, mode: int) -> str:
    """The MTTKRP contraction of mode ``mode``: ``'abcd,br,cr,dr->ar'`` for ``ndim=4, mode=0``."""
    letters = string.ascii_lowercase[:ndim]
    others = [f"{letters[k]}z" for k in range(ndim) if k != mode]
    return f"{letters},{','.join(others)}->{letters[mode]}z"


def cp_reconstruct(factors: tuple[Array, ...]) -> Array:
    """The tensor ``sum_r factors[0][:, r] o factors[1][:, r] o ...`` (outer products)."""
    letters = string.ascii_lowercase[: len(factors)]
    spec = ",".join(f"{a}z" for a in letters) + "->" + letters
    return jnp.einsum(spec, *factors)


def _normalize(f: Array) -> tuple[Array, Array]:
    norm = jnp.linalg.norm(f, axis=0)
    safe = jnp.where(norm > 0, norm, 1.0)
    return f / safe[None, :], norm


@functools.partial(jax.jit, static_argnames="rank")
def cp_als(tensor: Array, rank: int, *, iterations: int, key: Array) -> tuple[Array, ...]:
    """A rank-``rank`` CP decomposition by alternating least squares.

    Each sweep solves, mode by mode, the least-squares problem for one factor with the others
    fixed: ``A_n = X_(n) (kr of the others) (hadamard of their Gram matrices)^+``. Each update is
    the minimizer over its block (up to a ridge of ``1e-6`` of the Gram matrix's mean diagonal,
    for conditioning), so the fit error does not increase from sweep to sweep. The
    factors are initialized from the leading left singular vectors of each unfolding (HOSVD),
    completed with Gaussian columns from ``key`` where the rank exceeds a mode's size. After the
    loop the column norms are spread evenly over the factors.

    Args:
      tensor: an ``n``-way array.
      rank: the number of rank-1 terms, >= 1.
      iterations: the number of ALS sweeps, >= 0 (traced: changing it does not recompile).
      key: a PRNG key for the columns the HOSVD start cannot supply.

    Returns:
      ``n`` factor matrices, factor ``k`` of shape ``(tensor.shape[k], rank)``, whose
      :func:`cp_reconstruct` approximates ``tensor``.
    """
    x = tensor.astype(jnp.float32)
    n = x.ndim
    keys = jax.random.split(key, n)
    factors = []
    for k in range(n):
        unfold = jnp.reshape(jnp.moveaxis(x, k, 0), (x.shape[k], -1))
        u = jnp.linalg.svd(unfold, full_matrices=False)[0][:, :rank]
        extra = rank - u.shape[1]
        if extra > 0:
            noise = jax.random.normal(keys[k], (x.shape[k], extra)) / jnp.sqrt(x.shape[k])
            u = jnp.concatenate([u, noise], axis=1)
        factors.append(u)

    def sweep(_, fs):
        fs = list(fs)
        for mode in range(n):
            others = [fs[k] for k in range(n) if k != mode]
            m = jnp.einsum(_mode_einsum(n, mode), x, *others)
            gram = functools.reduce(jnp.multiply, [f.T @ f for f in others])
            ridge = 1e-6 * jnp.mean(jnp.diag(gram)) + 1e-30
            chol = jax.scipy.linalg.cho_factor(gram + ridge * jnp.eye(rank), lower=True)
            new = jax.scipy.linalg.cho_solve(chol, m.T).T
            fs[mode] = _normalize(new)[0] if mode < n - 1 else new
        return tuple(fs)

    factors = lax.fori_loop(0, iterations, sweep, tuple(factors))
    units, norms = zip(*(_normalize(f) for f in factors), strict=True)
    scale = jnp.prod(jnp.stack(norms), axis=0) ** (1.0 / n)
    return tuple(u * scale[None, :] for u in units)


@functools.partial(jax.jit, static_argnames=("rank_in", "rank_out", "iterations"))
def tucker2_decompose(
    kernel: Array, rank_in: int, rank_out: int, *, iterations: int = 0
) -> tuple[Array, Array, Array]:
    """Tucker-2 of a ``(kh, kw, C, F)`` kernel over its channel modes, by HOSVD (and HOOI).

    ``kernel ~ core x_3 first x_4 last^T``: ``first`` (``C x rank_in``) and ``last``
    (``rank_out x F``) have orthonormal columns/rows, from the leading left singular vectors of the
    mode-3 and mode-4 unfoldings (HOSVD, as Kim et al. initialize); ``iterations`` HOOI sweeps
    then refine them (each recomputes one mode's vectors with the other projected out).

    Args:
      kernel: ``(kh, kw, C, F)``.
      rank_in: ``1 <= rank_in <= C``.
      rank_out: ``1 <= rank_out <= F``.
      iterations: HOOI sweeps after the HOSVD start (static), >= 0.

    Returns:
      ``(first (C, rank_in), core (kh, kw, rank_in, rank_out), last (rank_out, F))``.
    """
    w = kernel.astype(jnp.float32)

    def leading(t: Array, mode: int, r: int) -> Array:
        unfold = jnp.reshape(jnp.moveaxis(t, mode, 0), (t.shape[mode], -1))
        return jnp.linalg.svd(unfold, full_matrices=False)[0][:, :r]

    u_in, u_out = leading(w, 2, rank_in), leading(w, 3, rank_out)

    def hooi(_, us):
        u_in, u_out = us
        u_in = leading(jnp.einsum("ijcf,fs->ijcs", w, u_out), 2, rank_in)
        u_out = leading(jnp.einsum("ijcf,cr->ijrf", w, u_in), 3, rank_out)
        return u_in, u_out

    u_in, u_out = lax.fori_loop(0, iterations, hooi, (u_in, u_out))
    core = jnp.einsum("ijcf,cr,fs->ijrs", w, u_in, u_out)
    return u_in, core, u_out.T

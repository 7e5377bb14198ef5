"""The decompositions behind the low-rank transforms, in JAX: SVD, CP (ALS and NLS), Tucker-2.

The vector k-means of Denton et al.'s clustering is :func:`jaxcomp.quant.kmeans_vectors`.

All are jit-able with static ranks and iteration counts (``lax.fori_loop``), and deterministic for
a given ``key``.

References:
    Eckart and Young, "The approximation of one matrix by another of lower rank", Psychometrika,
    1936 (truncated SVD is the best rank-r approximation in Frobenius norm).

    Kolda and Bader, "Tensor decompositions and applications", SIAM Review 51(3), 2009 (CP by
    alternating least squares, HOSVD and HOOI for Tucker).

    Tomasi and Bro, "A comparison of algorithms for fitting the PARAFAC model", Computational
    Statistics & Data Analysis 50(7), 2006 (the Gauss-Newton matrix of CP, Levenberg-Marquardt).

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
    "cp_nls",
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
    factors = _hosvd_start(x, rank, key)

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
    return _balance(factors)


def _hosvd_start(x: Array, rank: int, key: Array) -> list[Array]:
    """Per mode the leading ``rank`` left singular vectors of the unfolding (HOSVD), completed
    with Gaussian columns from ``key`` where ``rank`` exceeds the mode's size."""
    keys = jax.random.split(key, x.ndim)
    factors = []
    for k in range(x.ndim):
        unfold = jnp.reshape(jnp.moveaxis(x, k, 0), (x.shape[k], -1))
        u = jnp.linalg.svd(unfold, full_matrices=False)[0][:, :rank]
        extra = rank - u.shape[1]
        if extra > 0:
            noise = jax.random.normal(keys[k], (x.shape[k], extra)) / jnp.sqrt(x.shape[k])
            u = jnp.concatenate([u, noise], axis=1)
        factors.append(u)
    return factors


def _balance(factors: tuple[Array, ...]) -> tuple[Array, ...]:
    """The same rank-1 terms with each term's norm spread evenly over the factors."""
    units, norms = zip(*(_normalize(f) for f in factors), strict=True)
    scale = jnp.prod(jnp.stack(norms), axis=0) ** (1.0 / len(factors))
    return tuple(u * scale[None, :] for u in units)


def _gn_parts(x: Array, fs: tuple[Array, ...]) -> tuple[list[Array], Any, list[Array]]:
    """The pieces of CP's Gauss-Newton system at ``fs`` (Tomasi and Bro 2006).

    With ``G_k = A_k^T A_k``, ``Gamma_n`` the Hadamard product of the ``G_k`` for ``k != n`` and
    ``Gamma_nm`` that for ``k != n, m``, the residual ``r = [[fs]] - x`` has the gradient
    ``J^T r = A_n Gamma_n - X_(n) (Khatri-Rao of the others)`` for factor ``n``, and ``J^T J``
    the diagonal blocks ``I (x) Gamma_n`` and the off-diagonal blocks
    ``[(i, r), (j, s)] -> Gamma_nm[r, s] A_m[j, r] A_n[i, s]``.

    Returns:
      ``(gammas, gamma_pair, grads)``: the ``Gamma_n``, a function ``(n, m) -> Gamma_nm`` and the
      gradient of each factor.
    """
    n, rank = len(fs), fs[0].shape[1]
    grams = [f.T @ f for f in fs]
    ones = jnp.ones((rank, rank), fs[0].dtype)
    prod = lambda ks: functools.reduce(jnp.multiply, [grams[k] for k in ks], ones)
    gammas = [prod([k for k in range(n) if k != a]) for a in range(n)]
    grads = []
    for a in range(n):
        mttkrp = jnp.einsum(_mode_einsum(n, a), x, *[fs[k] for k in range(n) if k != a])
        grads.append(fs[a] @ gammas[a] - mttkrp)
    return gammas, lambda a, b: prod([k for k in range(n) if k not in (a, b)]), grads


def _gn_matvec(fs: tuple[Array, ...], gammas: list[Array], pair: Any, d: list[Array]) -> list:
    """``J^T J d`` for a direction ``d`` (one ``(I_n, R)`` array per factor), never forming
    ``J^T J``: ``d_n Gamma_n + sum_{m != n} A_n (Gamma_nm * (A_m^T d_m))^T``."""
    n = len(fs)
    proj = [fs[m].T @ d[m] for m in range(n)]
    out = []
    for a in range(n):
        acc = d[a] @ gammas[a]
        for b in range(n):
            if b != a:
                acc = acc + fs[a] @ (pair(a, b) * proj[b]).T
        out.append(acc)
    return out


def _gauss_newton(x: Array, fs: tuple[Array, ...]) -> tuple[Array, Array]:
    """``J^T J`` (dense) and ``J^T r`` over the stacked factors (each row-major ``(i, r)``), for
    tests of the structured products of :func:`_gn_parts` and :func:`_gn_matvec`."""
    gammas, pair, grads = _gn_parts(x, fs)
    n = len(fs)
    rows = []
    for a in range(n):
        blocks = []
        for b in range(n):
            if a == b:
                blocks.append(jnp.kron(jnp.eye(fs[a].shape[0]), gammas[a]))
            else:
                blk = jnp.einsum("rs,jr,is->irjs", pair(a, b), fs[b], fs[a])
                blocks.append(jnp.reshape(blk, (fs[a].size, fs[b].size)))
        rows.append(jnp.concatenate(blocks, axis=1))
    flat = jnp.concatenate([jnp.reshape(g, (-1,)) for g in grads])
    return jnp.concatenate(rows, axis=0), flat


def _scaled_start(x: Array, fs: list[Array]) -> tuple[Array, ...]:
    """Unit-column factors with the least-squares weight of each rank-1 term put back."""
    n, rank = len(fs), fs[0].shape[1]
    units = [_normalize(f)[0] for f in fs]
    gram = functools.reduce(jnp.multiply, [u.T @ u for u in units])
    rhs = jnp.einsum(_mode_einsum(n, 0), x, *units[1:])
    rhs = jnp.sum(rhs * units[0], axis=0)
    ridge = 1e-6 * jnp.mean(jnp.diag(gram)) + 1e-30
    weights = jnp.linalg.solve(gram + ridge * jnp.eye(rank), rhs)
    return _balance((units[0] * weights[None, :], *units[1:]))


@functools.partial(jax.jit, static_argnames=("rank", "cg_iterations"))
def cp_nls(
    tensor: Array,
    rank: int,
    *,
    iterations: int,
    key: Array,
    damping: float = 1e-1,
    cg_iterations: int = 25,
) -> tuple[Array, ...]:
    """A rank-``rank`` CP decomposition by non-linear least squares (Levenberg-Marquardt).

    Minimizes ``1/2 ||tensor - [[A_1, ..., A_n]]||^2`` over all factors at once, as Lebedev et
    al. do (with Tensorlab's NLS solver), rather than one factor at a time as ALS does. Each
    iteration solves the damped Gauss-Newton system ``(J^T J + mu I) delta = -J^T r`` as
    Tensorlab's ``cpd_nls`` does: by preconditioned conjugate gradients (``cg_iterations``
    steps) with the structured products of CP's ``J^T J`` (never the Jacobian, never the dense
    ``J^T J``) and its block-diagonal ``I (x) (Gamma_n + mu I)`` as preconditioner. A step is kept
    only if the error falls; ``mu`` shrinks by 3 after a kept step and grows by 4 after a rejected
    one (Levenberg's rule), so the error never increases. The start is :func:`cp_als`'s HOSVD
    start (same ``key``) with each rank-1 term's least-squares weight, and
    ``mu = damping * mean(diag(Gamma_n))``; after the loop the column norms are spread evenly.

    Args:
      tensor: an ``n``-way array.
      rank: the number of rank-1 terms, >= 1.
      iterations: Levenberg-Marquardt iterations, >= 0 (traced: changing it does not recompile).
      key: a PRNG key for the columns the HOSVD start cannot supply.
      damping: the initial damping relative to the mean diagonal of the ``Gamma_n``, > 0.
      cg_iterations: conjugate-gradient steps per iteration (static), >= 1.

    Returns:
      ``n`` factor matrices as :func:`cp_als` returns them.

    References:
        Lebedev et al., "Speeding-up convolutional neural networks using fine-tuned
        CP-decomposition", ICLR 2015, arXiv:1412.6553.

        Tomasi and Bro, "A comparison of algorithms for fitting the PARAFAC model", 2006.

        Sorber, Van Barel and De Lathauwer, "Optimization-based algorithms for tensor
        decompositions: canonical polyadic decomposition, decomposition in rank-(Lr,Lr,1) terms,
        and a new generalization", SIAM J. Optim. 23(2), 2013 (Tensorlab's ``cpd_nls``).
    """
    x = tensor.astype(jnp.float32)
    loss = lambda fs: 0.5 * jnp.sum((cp_reconstruct(fs) - x) ** 2)
    dot = lambda a, b: sum(jnp.vdot(p, q) for p, q in zip(a, b, strict=True))
    axpy = lambda t, a, b: [p + t * q for p, q in zip(a, b, strict=True)]
    start = _scaled_start(x, _hosvd_start(x, rank, key))
    gammas0 = _gn_parts(x, start)[0]
    mu0 = damping * jnp.mean(jnp.stack([jnp.mean(jnp.diag(g)) for g in gammas0])) + 1e-12
    eye = jnp.eye(rank, dtype=jnp.float32)

    def solve(fs, mu):
        """PCG on ``(J^T J + mu I) delta = -J^T r`` from ``delta = 0``."""
        gammas, pair, grads = _gn_parts(x, fs)
        chols = [jax.scipy.linalg.cho_factor(g + mu * eye, lower=True) for g in gammas]
        precond = lambda r: [
            jax.scipy.linalg.cho_solve(c, q.T).T for c, q in zip(chols, r, strict=True)
        ]
        matvec = lambda d: axpy(mu, _gn_matvec(fs, gammas, pair, d), d)
        b = [-g for g in grads]

        def cg(_, carry):
            d, r, z, p, rz = carry
            ap = matvec(p)
            pap = dot(p, ap)
            alpha = jnp.where(pap > 0, rz / jnp.where(pap > 0, pap, 1.0), 0.0)
            d, r = axpy(alpha, d, p), axpy(-alpha, r, ap)
            z = precond(r)
            rz_new = dot(r, z)
            beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
            return d, r, z, axpy(beta, z, p), rz_new

        z = precond(b)
        zero = [jnp.zeros_like(g) for g in grads]
        return lax.fori_loop(0, cg_iterations, cg, (zero, b, z, z, dot(b, z)))[0]

    def step(_, carry):
        fs, mu, err = carry
        cand = tuple(axpy(1.0, list(fs), solve(fs, mu)))
        new = loss(cand)
        ok = jnp.isfinite(new) & (new < err)
        fs = tuple(jnp.where(ok, c, f) for c, f in zip(cand, fs, strict=True))
        return fs, jnp.where(ok, mu / 3.0, mu * 4.0), jnp.where(ok, new, err)

    fs, _, _ = lax.fori_loop(0, iterations, step, (start, mu0, loss(start)))
    return _balance(fs)


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

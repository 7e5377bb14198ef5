"""Predicting parameters: weights as a fixed dictionary times a small learned matrix (Denil et al.).

Denil et al. observe that the weights of a layer are highly redundant and structured: the columns
of a first-layer weight matrix on images, seen as images, are smooth. So a column ``w`` (``m``
values) is predicted from its values ``w_alpha`` at ``n_alpha << m`` locations by kernel ridge
regression, ``w = k(X, X_alpha) (K_alpha + lambda I)^-1 w_alpha = D w_alpha``, and only the
``n_alpha x n`` matrix ``alpha`` is learned; the ``m x n_alpha`` dictionary ``D`` is fixed (never
trained, and rebuilt from its few hyperparameters rather than stored). The layer's kernel is
``W = D alpha``: ``n_alpha (m + n)`` multiply-adds instead of ``m n``, and ``n_alpha n`` stored
parameters instead of ``m n``.

Dictionaries (:func:`kernel_dictionary`): ``"smooth"``, the squared-exponential kernel ridge
regression of the paper over the input coordinates (1-D positions, or 2-D pixel positions with
``grid=(h, w)`` for a flattened image), with the ``n_alpha`` locations evenly spaced; ``"random"``,
a fixed Gaussian matrix (the paper's baseline with random, untrained features).

Two entry points: :func:`predicted`, a transform that rewrites trained ``Dense`` kernels (``alpha``
fitted by least squares to the kernel, then fine-tuned), and :class:`PredictedDense`, a Flax layer
to train from scratch.

References:
    Denil, Shakibi, Dinh, Ranzato and de Freitas, "Predicting parameters in deep learning",
    NeurIPS 2013, arXiv:1306.0543.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.core._transform import Transform
from jaxcomp.core._tree import MaskedNode
from jaxcomp.lowrank._factorize import FactorizedState
from jaxcomp.lowrank._factorize import build
from jaxcomp.lowrank._factorize import describe
from jaxcomp.lowrank._nodes import Predicted
from jaxcomp.lowrank._rank import check_rank
from jaxcomp.select._select import Selector
from jaxcomp.select._select import kernels

__all__ = ["PredictedDense", "PredictedState", "kernel_dictionary", "predicted"]

_KINDS = ("smooth", "random")


def _check(what: str, rank: Any, kind: Any, grid: Any, lengthscale: Any, ridge: Any) -> None:
    checks.integer(rank, fn=what, name="rank")
    checks.choice(kind, _KINDS, fn=what, name="kind")
    if grid is not None and (
        not isinstance(grid, Sequence) or len(grid) != 2 or not all(
            isinstance(g, int) and g >= 1 for g in grid)
    ):  # fmt: skip
        raise ValueError(f"{what}: grid must be None or (height, width) ints >= 1, got {grid!r}")
    if lengthscale is not None:
        checks.number(lengthscale, fn=what, name="lengthscale", low=0, low_open=True)
    checks.number(ridge, fn=what, name="ridge", low=0, low_open=True)


def kernel_dictionary(
    size: int,
    rank: int,
    *,
    kind: str = "smooth",
    grid: tuple[int, int] | None = None,
    lengthscale: float | None = None,
    ridge: float = 1e-3,
    key: jax.Array | None = None,
) -> jax.Array:
    """The fixed ``(size, rank)`` dictionary ``D`` of a predicted layer (``W = D alpha``).

    Args:
      size: ``m``, the layer's input features.
      rank: ``n_alpha``, the dictionary size, ``1 <= n_alpha <= m``.
      kind: ``"smooth"`` (squared-exponential kernel ridge regression from ``n_alpha`` evenly
        spaced locations) or ``"random"`` (Gaussian, from ``key``).
      grid: for ``"smooth"``, ``(h, w)`` with ``h w = m`` to use 2-D pixel positions.
      lengthscale: of the squared-exponential kernel, in units where the positions span
        ``[0, 1]``; by default the spacing of the locations (``1 / n_alpha`` in 1-D,
        ``1 / sqrt(n_alpha)`` in 2-D).
      ridge: the ridge ``lambda`` added to ``K_alpha``, > 0.
      key: a PRNG key, required for ``"random"``.

    Returns:
      ``D``, float32.

    Raises:
      ValueError: an argument out of range, ``grid`` not matching ``size``, or no ``key`` for
        ``"random"``.
    """
    _check("kernel_dictionary", rank, kind, grid, lengthscale, ridge)
    if rank > size:
        raise ValueError(f"kernel_dictionary: rank {rank} exceeds the input size {size}")
    if kind == "random":
        if key is None:
            raise ValueError("kernel_dictionary: kind='random' needs key=")
        return jax.random.normal(key, (size, rank), jnp.float32) / math.sqrt(rank)
    if grid is not None and grid[0] * grid[1] != size:
        raise ValueError(
            f"kernel_dictionary: grid {grid} has {grid[0] * grid[1]} positions, not {size}"
        )
    return _smooth(size, rank, None if grid is None else tuple(grid), lengthscale, float(ridge))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _smooth(size: int, rank: int, grid: Any, lengthscale: Any, ridge: float) -> jax.Array:
    """The squared-exponential kernel ridge regression dictionary (see kernel_dictionary)."""
    if grid is not None:
        h, w = grid
        idx = jnp.arange(size)
        pos = jnp.stack([idx // w / max(h - 1, 1), idx % w / max(w - 1, 1)], axis=1)
        scale = lengthscale or 1.0 / math.sqrt(rank)
    else:
        pos = (jnp.arange(size) / max(size - 1, 1))[:, None]
        scale = lengthscale or 1.0 / rank
    chosen = jnp.round(jnp.linspace(0, size - 1, rank)).astype(jnp.int32)

    def se(a: jax.Array, b: jax.Array) -> jax.Array:
        d2 = jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
        return jnp.exp(-d2 / (2 * scale**2))

    k_alpha = se(pos[chosen], pos[chosen]) + ridge * jnp.eye(rank)
    return jnp.linalg.solve(k_alpha, se(pos, pos[chosen]).T).T


class PredictedState(FactorizedState):
    """The state of :func:`predicted`: the ``spec``; ``fixed`` holds, per kernel,
    ``{"dictionary": (m, n_alpha)}``."""


def predicted(
    *,
    rank: int,
    kind: str = "smooth",
    grid: tuple[int, int] | None = None,
    lengthscale: float | None = None,
    ridge: float = 1e-3,
    key: jax.Array | None = None,
    where: Any = None,
) -> Transform:
    """Rewrites ``Dense`` kernels as ``D alpha``: a fixed dictionary and a learned ``alpha``.

    ``alpha`` starts as the least-squares fit ``argmin ||D alpha - W||_F``; only ``alpha`` is in
    the ``cparams`` (trained), ``D`` is in the state.

    Args:
      rank: ``n_alpha``, ``1 <= n_alpha <= m``.
      kind: ``"smooth"`` or ``"random"`` (see :func:`kernel_dictionary`).
      grid: ``(h, w)`` for inputs that are flattened ``h x w`` images (``"smooth"``).
      lengthscale: of the smooth dictionary (see :func:`kernel_dictionary`).
      ridge: the ridge of the smooth dictionary, > 0.
      key: a PRNG key, required for ``"random"`` (folded with each leaf's index).
      where: the kernels (default: every ``Dense`` kernel, the 2-D ``kernel`` leaves).

    Returns:
      A structure-changing :class:`jaxcomp.Transform` whose ``cparams`` hold :class:`Predicted`
      nodes; state :class:`PredictedState`.

    Raises:
      ValueError: a hyperparameter out of range; at ``init``, a selected leaf that is not a 2-D
        kernel, or ``rank > m``, naming the leaf.

    References:
        Denil et al., "Predicting parameters in deep learning", NeurIPS 2013, arXiv:1306.0543.
    """
    _check("predicted", rank, kind, grid, lengthscale, ridge)
    if kind == "random" and key is None:
        raise ValueError("predicted: kind='random' needs key=")

    def accepts(path, x):
        if x.ndim != 2:
            return f"it is {describe(x)}; predicted parameters need a (m, n) Dense kernel"
        return None

    def factorize(leaf, x):
        m = x.shape[0]
        check_rank("predicted", leaf.path, rank, m, f"the input size m = {m}")
        k = None if key is None else jax.random.fold_in(key, leaf.index)
        d = kernel_dictionary(
            m, rank, kind=kind, grid=grid, lengthscale=lengthscale, ridge=ridge, key=k
        )
        alpha = jnp.linalg.lstsq(d, x.astype(jnp.float32))[0]
        return Predicted(MaskedNode(), alpha.astype(x.dtype)), {"dictionary": d.astype(x.dtype)}

    return build(
        what="predicted",
        where=where,
        default=kernels() & Selector(lambda p, x: x.ndim == 2, "dense_kernels()"),
        accepts=accepts,
        factorize=factorize,
        state_cls=PredictedState,
    )


class PredictedDense(nn.Module):
    """A dense layer whose kernel is a fixed dictionary times a learned matrix (Denil et al.).

    ``y = (x D) alpha + bias``, with ``D`` from :func:`kernel_dictionary` (a constant, not a
    parameter; rebuilt from the attributes) and ``alpha`` (``(rank, features)``) learned.

    Attributes:
      features: output features.
      rank: ``n_alpha``, the dictionary size.
      kind: ``"smooth"`` or ``"random"``.
      grid: ``(h, w)`` when the input is a flattened ``h x w`` image.
      lengthscale: of the smooth dictionary.
      seed: seeds the ``"random"`` dictionary (``jax.random.key(seed)``).
      use_bias: whether to add a bias.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> layer = PredictedDense(features=3, rank=4)
        >>> v = jax.eval_shape(layer.init, jax.random.key(0), jnp.ones((2, 16)))  # shapes only
        >>> v["params"]["alpha"].shape, jax.eval_shape(layer.apply, v, jnp.ones((2, 16))).shape
        ((4, 3), (2, 3))
    """

    features: int
    rank: int
    kind: str = "smooth"
    grid: tuple[int, int] | None = None
    lengthscale: float | None = None
    seed: int = 0
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the layer to ``x`` (``(..., m)``)."""
        with jax.ensure_compile_time_eval():
            d = kernel_dictionary(
                x.shape[-1], self.rank, kind=self.kind, grid=self.grid,
                lengthscale=self.lengthscale, key=jax.random.key(self.seed),
            )  # fmt: skip
        alpha = self.param(
            "alpha", nn.initializers.lecun_normal(), (self.rank, self.features), jnp.float32
        )
        y = Predicted(d.astype(x.dtype), alpha).matmul(x)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + bias.shape)
        return y

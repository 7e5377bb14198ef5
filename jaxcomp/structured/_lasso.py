"""Channel pruning by LASSO channel selection and least-squares reconstruction.

He, Zhang and Sun prune the input channels of a layer so that its *output* on sampled data
changes least. With ``X`` the consumer layer's input rows (the input vectors of a ``Dense``, the
im2col patches of a convolution) and ``W`` its kernel as a ``(fan_in, out)`` matrix, channel ``c``
contributes ``Z_c = X[:, rows of c] @ W[rows of c]`` to the output ``Y = X @ W``. Two steps:

1. **selection**: ``min_beta ||Y - sum_c beta_c Z_c||^2 + lam * ||beta||_1``, solved by
   coordinate descent (on the Gram matrix of the contributions, each scaled to unit norm), with
   the penalty ``lam`` raised until at most the wanted number of channels have ``beta_c != 0``;
   the kept channels are exactly those (topped up, when the path skips a count, by the largest
   ``|beta|`` just below that ``lam``).
2. **reconstruction**: the consumer's kernel rows of the kept channels are refit by least
   squares, ``W' = argmin ||Y - X[:, kept] W'||``; the removed channels' rows become zero.

:func:`lasso_channels` does this for one dependency group (or several, one after the other, each
on the inputs of the model pruned so far and against the original model's outputs, as the paper
does to keep errors from accumulating). A group must be read by exactly one consumer: a ``Dense``
or an ungrouped, zero-padded convolution of any window (``kxk``; its im2col rows come from
:func:`jaxcomp.adapt.capture` with ``rows=True``); a group read by several layers (a residual
addition) or only by a depthwise or grouped convolution is a ``ValueError``. The writers of the
removed channels (the filters, biases, batch norms) lose them through the returned masks.

References:
    He, Zhang and Sun, "Channel pruning for accelerating very deep neural networks", ICCV 2017,
    arXiv:1707.06168.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.adapt._capture import capture
from jaxcomp.core import _checks as checks
from jaxcomp.structured._criteria import _by_path
from jaxcomp.structured._criteria import _check_ratio
from jaxcomp.structured._graph import Group
from jaxcomp.structured._graph import Groups
from jaxcomp.structured._graph import Member
from jaxcomp.structured._graph import groups as trace_groups
from jaxcomp.structured._merge import pick_group
from jaxcomp.structured._merge import replace_leaves
from jaxcomp.structured._shrink import Masks

__all__ = ["lasso_channels", "lasso_path"]

_FN = "lasso_channels"
_GRID = 16


def _consumer(group: Group, gi: int, leaves: dict[str, Any]) -> Member:
    ins = [m for m in group.members if m.role == "in"]
    if len(ins) != 1:
        readers = [m.path for m in ins]
        raise ValueError(
            f"{_FN}: group {gi} is read by {len(ins)} layers {readers}; LASSO channel selection "
            "needs exactly one consumer (a Dense or an ungrouped Conv)"
        )
    m = ins[0]
    ndim = np.ndim(leaves[m.path])
    if not m.path.endswith("/kernel") or ndim < 2 or m.axis != ndim - 2:
        raise ValueError(
            f"{_FN}: group {gi}'s reader {m.path!r} (axis {m.axis}) is not the input axis of a "
            "Dense or Conv kernel"
        )
    return m


def _rows(apply_fn: Callable[..., Any], variables: Any, x: Any, layer: str) -> jax.Array:
    run = capture(apply_fn, inputs=layer, rows=True)
    rows = jax.jit(lambda v, x_: run(v, x_)[1].inputs[layer])(variables, x)
    return jnp.asarray(rows, jnp.float32)


@functools.partial(jax.jit, static_argnames=("sweeps",))
def lasso_path(gram: jax.Array, b: jax.Array, lams: jax.Array, *, sweeps: int = 100) -> jax.Array:
    """``argmin 1/2 beta^T G beta - b^T beta + lam ||beta||_1`` for every ``lam`` of ``lams``.

    Cyclic coordinate descent from zero, ``sweeps`` passes over the coordinates; a coordinate
    with ``G[j, j] = 0`` stays 0. Returns ``(len(lams), n)``.
    """
    n = b.shape[0]
    diag = jnp.diagonal(gram)

    def solve(lam):
        def coord(j, beta):
            r = b[j] - gram[j] @ beta + diag[j] * beta[j]
            d = diag[j]
            new = jnp.sign(r) * jnp.maximum(jnp.abs(r) - lam, 0.0) / jnp.where(d > 0, d, 1.0)
            return beta.at[j].set(jnp.where(d > 0, new, 0.0))

        sweep = lambda _, beta: jax.lax.fori_loop(0, n, coord, beta)
        return jax.lax.fori_loop(0, sweeps, sweep, jnp.zeros(n, gram.dtype))

    return jax.vmap(solve)(lams)


@jax.jit
def _normal_equations(x, y, w, onehot, fixed):
    """The LASSO's Gram matrix and right side over the channels' contributions, each scaled to
    unit norm: ``Z_c = X[:, rows of c] @ W[rows of c]``, against ``Y`` less the fixed rows'."""
    target = y - x @ (w * fixed[:, None])
    gram = onehot.T @ (((x.T @ x) * (w @ w.T)) @ onehot)
    b = onehot.T @ jnp.sum(w * (x.T @ target), axis=1)
    d = jnp.diagonal(gram)
    inv = jnp.where(d > 0, 1.0 / jnp.sqrt(jnp.where(d > 0, d, 1.0)), 0.0)
    return gram * inv[:, None] * inv[None, :], b * inv


@jax.jit
def _refit(x, y, kept):
    """``argmin ||Y - X[:, kept] W'||`` as a full-height kernel with zero rows elsewhere."""
    fit = jnp.linalg.lstsq(x * kept[None, :], y)[0]
    return fit * kept[:, None]


def _top(key: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest of ``key`` (ties by position), as a boolean mask."""
    keep = np.zeros(key.shape[0], bool)
    keep[np.argsort(-key, kind="stable")[:k]] = True
    return keep


def _select(g: jax.Array, bn: jax.Array, k: int, sweeps: int) -> np.ndarray:
    """The keep-mask of LASSO selection: the penalty raised until at most ``k`` channels remain."""
    size = bn.shape[0]
    top = float(jnp.max(jnp.abs(bn)))
    if top == 0.0 or k == size:
        return _top(np.abs(np.asarray(bn)), k)
    lams = top * np.geomspace(1.0, 1e-6, _GRID)  # lams[0] gives beta = 0
    betas = np.asarray(lasso_path(g, bn, jnp.asarray(lams, g.dtype), sweeps=sweeps))
    nnz = (betas != 0).sum(axis=1)
    i = int(np.flatnonzero(nnz <= k).max())  # the smallest penalty that keeps few enough
    hi, lo = betas[i], betas[min(i + 1, _GRID - 1)]
    if i + 1 < _GRID and nnz[i] < k:  # refine between the two penalties
        fine = np.linspace(lams[i], lams[i + 1], _GRID)
        betas2 = np.asarray(lasso_path(g, bn, jnp.asarray(fine, g.dtype), sweeps=sweeps))
        j = int(np.flatnonzero((betas2 != 0).sum(axis=1) <= k).max())
        hi = betas2[j]
        lo = betas2[j + 1] if j + 1 < _GRID else lo
    return _top(np.where(hi != 0, 1.0 + np.abs(hi), np.abs(lo) / (1.0 + np.abs(lo))), k)


def _prune_one(apply_fn, original, current, x, gi, group, ratio, sweeps):
    leaves = _by_path(current)
    m = _consumer(group, gi, leaves)
    layer = "/".join(m.path.split("/")[1:-1])
    kernel = jnp.asarray(leaves[m.path], jnp.float32)
    cout = kernel.shape[-1]
    w = kernel.reshape(-1, cout)
    shape = [1] * (kernel.ndim - 1)
    shape[m.axis] = -1
    chan = np.broadcast_to(m.index.reshape(shape), kernel.shape[:-1]).reshape(-1)
    x_cur = _rows(apply_fn, current, x, layer)
    if original is current:
        y = x_cur @ w
    else:
        w0 = jnp.asarray(_by_path(original)[m.path], jnp.float32).reshape(-1, cout)
        y = _rows(apply_fn, original, x, layer) @ w0
    fixed = chan < 0
    onehot = (chan[:, None] == np.arange(group.size)[None, :]).astype(np.float32)
    g, bn = _normal_equations(x_cur, y, w, onehot, fixed.astype(np.float32))
    keep = _select(g, bn, max(1, group.size - math.floor(ratio * group.size)), sweeps)
    kept = fixed | keep[np.maximum(chan, 0)]
    new = _refit(x_cur, y, kept.astype(np.float32))
    return jnp.asarray(keep), replace_leaves(current, {m.path: new.reshape(kernel.shape)})


def lasso_channels(
    apply_fn: Callable[..., Any],
    variables: Any,
    x: Any,
    group: Any,
    *,
    ratio: float,
    sweeps: int = 100,
    groups: Groups | None = None,
) -> tuple[Masks, Any]:
    """Removes ``ratio`` of a group's channels by LASSO selection, then refits the consumer.

    Args:
        apply_fn: ``apply_fn(variables, x)`` in inference mode.
        variables: the model's variables.
        x: the data the consumer's inputs are sampled from (a batch; every row of every example,
            every im2col patch of a convolution, is one sample).
        group: the index of a group in ``groups`` (or the :class:`Group`), or a sequence of them,
            pruned in that order.
        ratio: the fraction of each group's channels to remove, in [0, 1): exactly
            ``floor(ratio * size)`` go (at least one channel stays).
        sweeps: coordinate-descent passes per LASSO solve, an int >= 1.
        groups: groups already traced from the same model.

    Returns:
        ``(masks, new_variables)``: :class:`Masks` over every group (the groups not pruned keep
        every channel) and ``variables`` with each consumer kernel refit on its kept channels
        (the removed channels' rows zero), so that :func:`jaxcomp.structured.apply_masks` and
        :func:`jaxcomp.structured.shrink` of them give the pruned model.

    Raises:
        ValueError: a bad ``ratio``, ``sweeps`` or ``group``, a repeated group, or a group not
            read by exactly one Dense or Conv kernel (see the module docstring).

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> import jaxcomp as jc
        >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
        >>> x = jax.random.normal(jax.random.key(0), (32, 4))
        >>> v = model.init(jax.random.key(1), x)
        >>> masks, refit = lasso_channels(model.apply, v, x, 0, ratio=0.5)
        >>> int(masks.keep[0].sum())
        4
        >>> small_apply, small = jc.structured.shrink(model.apply, refit, masks)
        >>> small["params"]["layers_2"]["kernel"].shape
        (4, 3)
    """
    ratio = _check_ratio(ratio)
    sweeps = checks.integer(sweeps, fn=_FN, name="sweeps")
    groups = trace_groups(apply_fn, variables, x) if groups is None else groups
    many = isinstance(group, Sequence) and not isinstance(group, str | Group)
    picked = [pick_group(groups, g, _FN) for g in (group if many else [group])]
    if not picked:
        raise ValueError(f"{_FN}: group is an empty sequence; name at least one group")
    if len({gi for gi, _ in picked}) != len(picked):
        raise ValueError(f"{_FN}: group names a group twice: {[gi for gi, _ in picked]}")
    keep = [jnp.ones(g.size, bool) for g in groups]
    current = variables
    for gi, g in picked:
        keep[gi], current = _prune_one(apply_fn, variables, current, x, gi, g, ratio, sweeps)
    return Masks(tuple(keep), groups), current

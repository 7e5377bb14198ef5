"""Jaderberg et al.'s data reconstruction: separable filters fitted to layer outputs, in order.

The closed form of :func:`jaxcomp.lowrank.jaderberg` minimizes the error of the *kernel*. Jaderberg
et al. also minimize the error of the layer's *output* on training data ("data reconstruction
optimization"), and approximate the layers one after another, each fitted on the inputs that the
already approximated layers below produce. With ``X`` the layer's input rows in the network
approximated so far (im2col patches, :func:`jaxcomp.adapt.capture` with ``rows=True``), ``X_o``
those of the original network and ``W`` the original kernel as a ``(kh kw C, F)`` matrix, the
separable pair ``(V, H)``, ``W'[i, j, c, f] = sum_k V[i, c, k] H[j, k, f]``, minimizes

    ``||X_o W - X W'(V, H)||_F^2 = tr(W'^T A W') - 2 tr(W'^T B) + const``

with ``A = X^T X`` and ``B = X^T X_o W``: only the ``(kh kw C)^2`` Gram matrix and a
``(kh kw C, F)`` cross term are accumulated over the data. ``W'`` is linear in ``V`` for fixed
``H`` and in ``H`` for fixed ``V``, so alternating exact least-squares solves (from the closed-form
start) never increase the error. Jaderberg et al. use conjugate gradient descent on the same
objective; the alternating solves reach a block minimum at each step instead. Fine-tuning of the
layers above each approximated layer is the training loop's business (``experiments/lowrank``).

References:
    Jaderberg, Vedaldi and Zisserman, "Speeding up convolutional neural networks with low rank
    expansions", BMVC 2014, arXiv:1405.3866 (section 3.2, data reconstruction optimization).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.adapt._capture import capture
from jaxcomp.core import _checks as checks
from jaxcomp.core._map import leaves
from jaxcomp.core._map import rebuild
from jaxcomp.core._map import selected
from jaxcomp.lowrank._nodes import Separable

__all__ = ["Calibration", "fit_separable", "reconstruct_layers"]

Array = jax.Array


class Calibration(NamedTuple):
    """The data a data-driven rewrite fits each layer's responses on.

    Attributes:
      apply_fn: the model's ``apply`` (a linen ``model.apply``, or the
        :class:`jaxcomp.adapt.NNXApply` of :func:`jaxcomp.adapt.functional`).
      x: the inputs (numpy or jax; training images, never the test split), cut into batches.
      collections: the model's variables other than ``"params"`` (``{"batch_stats": ...}``).
      batch_size: examples per captured batch, an int >= 1.
      kwargs: further keyword arguments of ``apply_fn`` (``{"train": False}``).
    """

    apply_fn: Callable[..., Any]
    x: Any
    collections: Mapping[str, Any] = {}
    batch_size: int = 256
    kwargs: Mapping[str, Any] = {}


def check_calibration(data: Any, fn: str) -> None:
    """A ``ValueError`` naming ``fn`` unless ``data`` is a usable :class:`Calibration`."""
    if not isinstance(data, Calibration):
        raise ValueError(f"{fn}: data must be a jaxcomp.lowrank.Calibration, got {type(data)}")
    if not callable(data.apply_fn):
        raise ValueError(f"{fn}: data.apply_fn must be callable, got {data.apply_fn!r}")
    if np.ndim(data.x) < 2 or len(data.x) < 1:
        raise ValueError(f"{fn}: data.x must be a non-empty batch of inputs")
    checks.integer(data.batch_size, fn=fn, name="data.batch_size")
    if "params" in data.collections:
        raise ValueError(f"{fn}: data.collections must not hold 'params' (init receives them)")


def _balance(v: Array, h: Array) -> tuple[Array, Array]:
    """The same product with each of the ``K`` pairs' norm split evenly between ``V`` and ``H``."""
    nv = jnp.sqrt(jnp.sum(v**2, axis=(0, 1)))
    nh = jnp.sqrt(jnp.sum(h**2, axis=(0, 2)))
    ok = (nv > 0) & (nh > 0)
    s = jnp.where(ok, jnp.sqrt(nv / jnp.where(ok, nh, 1.0)), 1.0)
    return v / s[None, None, :], h * s[None, :, None]


def _ridged_solve(n: Array, b: Array) -> Array:
    ridge = 1e-6 * jnp.mean(jnp.diagonal(n)) + 1e-30
    chol = jax.scipy.linalg.cho_factor(n + ridge * jnp.eye(n.shape[0], dtype=n.dtype), lower=True)
    return jax.scipy.linalg.cho_solve(chol, b)


@jax.jit
def fit_separable(
    gram: Array, target: Array, vertical: Array, horizontal: Array, *, iterations: int
) -> Separable:
    """Alternating least squares for a separable pair against a layer's responses.

    Minimizes ``tr(W'^T A W') - 2 tr(W'^T B)`` (see the module docstring) over the pair, one
    factor at a time, each step the exact block minimizer (up to a ridge of ``1e-6`` of the mean
    diagonal), so the data error never increases. Afterwards the ``K`` pairs' norms are split
    evenly between the two factors (the product is unchanged).

    Args:
      gram: ``A = X^T X``, ``(kh kw C, kh kw C)``, rows ordered ``(i, j, c)`` like the kernel.
      target: ``B = X^T X_o W``, ``(kh kw C, F)``.
      vertical: the start ``(kh, 1, C, K)``.
      horizontal: the start ``(1, kw, K, F)``.
      iterations: sweeps (each a ``V`` then an ``H`` solve), >= 0 (traced: no recompilation).

    Returns:
      The fitted :class:`Separable`.
    """
    kh, _, c, k = vertical.shape
    kw, f = horizontal.shape[1], horizontal.shape[3]
    a6 = jnp.reshape(gram.astype(jnp.float32), (kh, kw, c, kh, kw, c))
    b3 = jnp.reshape(target.astype(jnp.float32), (kh, kw, c, f))
    v, h = vertical[:, 0].astype(jnp.float32), horizontal[0].astype(jnp.float32)

    def sweep(_, vh):
        v, h = vh
        hh = jnp.einsum("jkf,qlf->jkql", h, h)
        nv = jnp.reshape(jnp.einsum("ijcpqd,jkql->ickpdl", a6, hh), (kh * c * k, kh * c * k))
        bv = jnp.reshape(jnp.einsum("ijcf,jkf->ick", b3, h), (-1,))
        v = jnp.reshape(_ridged_solve(nv, bv), (kh, c, k))
        nh = jnp.reshape(jnp.einsum("ijcpqd,ick,pdl->jkql", a6, v, v), (kw * k, kw * k))
        bh = jnp.reshape(jnp.einsum("ijcf,ick->jkf", b3, v), (kw * k, f))
        h = jnp.reshape(_ridged_solve(nh, bh), (kw, k, f))
        return v, h

    v, h = _balance(*jax.lax.fori_loop(0, iterations, sweep, (v, h)))
    return Separable(v[:, None].astype(vertical.dtype), h[None].astype(horizontal.dtype))


def _layer_stats(data: Calibration, layer: str) -> Callable[..., tuple[Array, Array]]:
    """A jitted ``(orig_vars, cur_vars, x) -> (X^T X, X^T X_o)`` of one layer's input rows.

    The same model, layer and keyword arguments give the same jitted function (so a later call,
    for another seed or another selection, reuses its compilations)."""
    kwargs = tuple(sorted(dict(data.kwargs).items()))
    try:
        return _cached_stats(data.apply_fn, layer, kwargs)
    except TypeError:  # an unhashable apply_fn or keyword value: build it uncached
        return _build_stats(data.apply_fn, layer, kwargs)


def _build_stats(apply_fn: Callable[..., Any], layer: str, kwargs: tuple) -> Callable[..., Any]:
    run = capture(apply_fn, inputs=layer, rows=True)

    @jax.jit
    def stats(orig, cur, xb):
        xo = run(orig, xb, **dict(kwargs))[1].inputs[layer].astype(jnp.float32)
        xc = run(cur, xb, **dict(kwargs))[1].inputs[layer].astype(jnp.float32)
        return xc.T @ xc, xc.T @ xo

    return stats


_cached_stats = functools.lru_cache(maxsize=64)(_build_stats)


def _forward_order(data: Calibration, variables: Any, layers: list[str]) -> list[str]:
    """``layers`` in the order the forward pass calls them."""
    run = capture(data.apply_fn, inputs=layers)
    xb = jnp.asarray(data.x[:1])
    got = jax.eval_shape(lambda v: run(v, xb, **dict(data.kwargs))[1].inputs, variables)
    return list(got)


def reconstruct_layers(spec: Any, params: Any, cparams: Any, data: Calibration, iterations: int):
    """Refits the :class:`Separable` nodes of ``cparams`` to their layers' responses, in order.

    Each selected kernel ``<layer>/kernel`` is refitted on the inputs of the network whose
    earlier layers (in forward order) already hold their refitted pairs, against the original
    network's responses (:func:`fit_separable` from the node in ``cparams``).

    Returns:
      ``cparams`` with the refitted nodes.
    """
    lvs = leaves(spec)
    nodes = dict(zip([lf.path for lf in lvs], selected(spec, cparams), strict=True))
    kernels = dict(zip([lf.path for lf in lvs], selected(spec, params), strict=True))
    layer_of = {p: p.rsplit("/", 1)[0] for p in nodes}
    for p in nodes:
        if not p.endswith("/kernel"):
            raise ValueError(f"jaderberg: data= refits layers' kernels; {p!r} is not a kernel")
    original = {"params": params, **dict(data.collections)}
    order = _forward_order(data, original, [layer_of[p] for p in nodes])
    by_layer = {layer: p for p, layer in layer_of.items()}
    done: dict[str, Any] = {}
    for layer in order:
        path = by_layer[layer]
        w = kernels[path]
        current = rebuild(
            spec,
            params,
            [done[lf.path].to_dense() if lf.path in done else kernels[lf.path] for lf in lvs],
        )
        cur_vars = {"params": current, **dict(data.collections)}
        stats = _layer_stats(data, layer)
        gram = cross = None
        for start in range(0, len(data.x), data.batch_size):
            xb = jnp.asarray(data.x[start : start + data.batch_size])
            g, cr = stats(original, cur_vars, xb)
            gram, cross = (g, cr) if gram is None else (gram + g, cross + cr)
        target = cross @ jnp.reshape(w, (-1, w.shape[-1])).astype(jnp.float32)
        node = nodes[path]
        done[path] = fit_separable(
            gram, target, node.vertical, node.horizontal, iterations=iterations
        )
    return rebuild(spec, cparams, [done[lf.path] for lf in lvs])

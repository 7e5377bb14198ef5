"""Binary and ternary weights: BinaryConnect, binary-weight networks (XNOR-Net), ternary weights.

* :func:`binary_connect` (Courbariaux, Bengio and David 2015): the forward pass uses
  ``H * sign(w)``, deterministically, or stochastically with ``P(+H) = hard_sigmoid(w / H)``; the
  latent real weights are kept, updated with the straight-through gradient (the hard tanh's:
  zero where ``|w| > H``) and clipped to ``[-H, H]`` after each step. ``H`` is 1 in the paper
  (with batch norm) or, as in the authors' code, the Glorot scale ``sqrt(1.5 / (fan_in +
  fan_out))`` for networks without it. BinaryNet (Hubara et al. 2016) is these weights plus
  binary activations, which :func:`activations` gives with the rule value ``1``.
* :func:`binary_weights` (Rastegari et al. 2016): ``W ~ alpha * sign(W)`` with
  ``alpha = mean |W|`` per output channel, the binary-weight network of XNOR-Net (XNOR-Net also
  binarizes the inputs, scaled by ``K``: the rule value ``"xnor"`` of :func:`activations`).
* :func:`ternary_weights` (Li, Zhang and Liu 2016, TWN): ``alpha * sign(w) * [|w| > delta]`` with
  ``delta = 0.7 * mean |W|`` and ``alpha`` the mean of the ``|w|`` above ``delta``.
* :func:`ternary_connect` (Lin et al. 2015): stochastic ternarization, ``sign(w)`` with probability
  ``|w| / H`` and 0 otherwise (or deterministic rounding), with BinaryConnect's clipping.

``finalize`` gives :class:`~jaxcomp.quant.QuantizedArray` nodes with codes in ``{-1, 0, 1}``
(int8) and the scales (``bits`` 1 for binary, 2 for ternary), which the int8 kernels can run.

References:
  Courbariaux, Bengio and David, "BinaryConnect: training deep neural networks with binary weights
  during propagations", NeurIPS 2015, arXiv:1511.00363.

  Hubara, Courbariaux, Soudry, El-Yaniv and Bengio, "Binarized neural networks", NeurIPS 2016,
  arXiv:1602.02830.

  Rastegari, Ordonez, Redmon and Farhadi, "XNOR-Net: ImageNet classification using binary
  convolutional neural networks", ECCV 2016, arXiv:1603.05279.

  Li, Zhang and Liu, "Ternary weight networks", 2016, arXiv:1605.04711.

  Lin, Courbariaux, Memisevic and Bengio, "Neural networks with few multiplications", ICLR 2016,
  arXiv:1510.03009.
"""

from __future__ import annotations

import math
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcomp.core import Transform
from jaxcomp.core import _checks as checks
from jaxcomp.core._map import leaf_key
from jaxcomp.core._map import map_leaves
from jaxcomp.core._map import select
from jaxcomp.quant._core import broadcast_channel
from jaxcomp.quant._core import optional_key_data
from jaxcomp.quant._core import reduce_axes
from jaxcomp.quant._core import rounding_key_data
from jaxcomp.quant._core import sign_ste
from jaxcomp.quant._core import split_key_data
from jaxcomp.quant._nodes import QuantizedArray

__all__ = [
    "BinaryState",
    "binary_connect",
    "binary_weights",
    "glorot_scale",
    "ternary_connect",
    "ternary_weights",
    "twn_scale",
    "xnor_scale",
]


class BinaryState(NamedTuple):
    """The state of the binary and ternary transforms.

    Attributes:
      key: raw ``uint32`` PRNG key data; stochastic variants draw with ``fold_in(key, leaf)`` and
        split it at each ``update`` (unused by deterministic ones).
      spec: a :class:`jaxcomp.core.Leaf` per binarized leaf holding its channel ``axis`` (None:
        per tensor), ``MaskedNode()`` elsewhere (:func:`jaxcomp.core.select`).
    """

    key: jax.Array
    spec: Any


def glorot_scale(shape: tuple[int, ...]) -> float:
    """BinaryConnect's ``H = sqrt(1.5 / (fan_in + fan_out))`` for a kernel of ``shape``.

    ``fan_in`` counts the receptive field times the input channels, ``fan_out`` the receptive
    field times the output channels (the authors' Theano/Lasagne code).
    """
    if len(shape) < 2:
        return 1.0
    receptive = math.prod(shape[:-2])
    return math.sqrt(1.5 / (receptive * shape[-2] + receptive * shape[-1]))


def xnor_scale(w: jax.Array, axis: int | None) -> jax.Array:
    """XNOR-Net's optimal binary scale ``alpha = mean |W|`` (per channel along ``axis``)."""
    return jnp.mean(jnp.abs(w), axis=reduce_axes(w.ndim, axis))


def twn_scale(
    w: jax.Array, axis: int | None, threshold: float = 0.7
) -> tuple[jax.Array, jax.Array]:
    """TWN's ``(delta, alpha)``: ``delta = t * mean |W|``, ``alpha = mean_{|w| > delta} |w|``."""
    red = reduce_axes(w.ndim, axis)
    a = jnp.abs(w)
    delta = threshold * jnp.mean(a, axis=red)
    big = a > broadcast_channel(delta, w.ndim, axis)
    n = jnp.sum(big, axis=red)
    alpha = jnp.sum(jnp.where(big, a, 0.0), axis=red) / jnp.maximum(n, 1)
    return delta, alpha


def _scale_of(scale: Any, shape: tuple[int, ...]) -> float:
    return glorot_scale(shape) if scale == "glorot" else float(scale)


def _check_scale(scale: Any, fn: str) -> None:
    if scale != "glorot":
        checks.number(scale, fn=fn, name="scale (or 'glorot')", low=0, low_open=True)


def _qarray(codes: jax.Array, scale: Any, axis: int | None, bits: int, dtype) -> QuantizedArray:
    scale = jnp.asarray(scale, jnp.float32)
    return QuantizedArray(
        codes.astype(jnp.int8), scale, jnp.zeros_like(scale), axis, bits, True, jnp.dtype(dtype)
    )


def _clip_transform(
    fn: str, scale: Any, rounding: str, key: Any, where: Any, forward, codes, bits: int
) -> Transform:
    """A transform over clipped latent weights: ``forward(w, h, k)`` (``k`` the leaf's key under
    stochastic rounding, else None), ``codes(w, h)``."""
    _check_scale(scale, fn)
    kd = rounding_key_data(rounding, key, fn=fn)
    stochastic = rounding == "stochastic"

    def init(params):
        return params, BinaryState(kd, select(params, where, fn=fn))

    def apply(cparams, state):
        def one(leaf, w):
            k = leaf_key(state.key, leaf) if stochastic else None
            return forward(w, _scale_of(scale, w.shape), k)

        return map_leaves(one, state.spec, cparams)

    def update(cparams, state, *, step, grads=None):
        del step, grads
        h = lambda w: _scale_of(scale, w.shape)
        cparams = map_leaves(lambda _, w: jnp.clip(w, -h(w), h(w)), state.spec, cparams)
        return cparams, (state._replace(key=split_key_data(state.key)) if stochastic else state)

    def finalize(cparams, state):
        def one(_, w):
            h = _scale_of(scale, w.shape)
            return _qarray(codes(w, h), jnp.float32(h), None, bits, w.dtype)

        return map_leaves(one, state.spec, cparams)

    return Transform(init, apply, update, finalize)


def binary_connect(
    *, rounding: str = "nearest", scale: float | str = 1.0, key: jax.Array | None = None,
    where: Any = None,
) -> Transform:  # fmt: skip
    """BinaryConnect: train real weights, propagate ``H * sign(w)`` (Courbariaux et al. 2015).

    Args:
      rounding: ``"nearest"``: the deterministic ``H * sign(w)``; ``"stochastic"``: ``+H`` with
        probability ``hard_sigmoid(w / H) = clip((w / H + 1) / 2, 0, 1)`` (needs ``key``; a fresh
        draw after each ``update``).
      scale: ``H``, a positive number or ``"glorot"`` (per layer ``sqrt(1.5 / (fan_in +
        fan_out))``, as in the authors' code for networks without batch norm).
      key: the PRNG key of stochastic rounding.
      where: the leaves to binarize (default :func:`jaxcomp.select.kernels`).

    Returns:
      A :class:`jaxcomp.Transform` with a :class:`BinaryState`; ``update`` clips the latent
      weights to ``[-H, H]``; ``finalize`` gives the deterministic ``sign`` codes with scale ``H``.

    Raises:
      ValueError: ``scale`` is not positive or ``"glorot"``, an unknown ``rounding``, or
        stochastic rounding without a key.
    """

    def forward(w, h, k):
        if k is not None:
            p = jnp.clip((w / h + 1.0) / 2.0, 0.0, 1.0)
            u = jax.random.uniform(k, w.shape, w.dtype)
            b = jnp.where(u < p, 1.0, -1.0).astype(w.dtype)
            inside = (jnp.abs(w) <= h).astype(w.dtype)
            return h * (jax.lax.stop_gradient(b) + (w - jax.lax.stop_gradient(w)) / h * inside)
        return h * sign_ste(w / h, clip=1.0)

    def codes(w, h):
        return jnp.where(w >= 0, 1, -1)

    return _clip_transform("binary_connect", scale, rounding, key, where, forward, codes, 1)


def ternary_connect(
    *, rounding: str = "stochastic", scale: float | str = 1.0, key: jax.Array | None = None,
    where: Any = None,
) -> Transform:  # fmt: skip
    """Ternary connect (Lin et al. 2015): weights in ``{-H, 0, H}``.

    Stochastic: ``H * sign(w)`` with probability ``|w| / H``, else 0 (unbiased: its expectation is
    ``w``); deterministic: ``H * round(w / H)``. The gradient is straight-through inside
    ``[-H, H]`` and the latent weights are clipped to it, as in BinaryConnect.

    Args:
      rounding: ``"stochastic"`` (the paper's; needs ``key``) or ``"nearest"`` (deterministic).
      scale: ``H``, a positive number or ``"glorot"``.
      key: the PRNG key of stochastic rounding.
      where: the leaves to ternarize (default :func:`jaxcomp.select.kernels`).

    Returns:
      A :class:`jaxcomp.Transform` with a :class:`BinaryState`; ``finalize`` gives the
      deterministic codes ``round(w / H)`` with scale ``H``.

    Raises:
      ValueError: ``scale`` is invalid, an unknown ``rounding``, or stochastic rounding without a
        key.
    """

    def forward(w, h, k):
        v = jnp.clip(w / h, -1.0, 1.0)
        if k is not None:
            u = jax.random.uniform(k, w.shape, w.dtype)
            t = jnp.where(u < jnp.abs(v), jnp.sign(v), 0.0)
        else:
            t = jnp.round(v)
        inside = (jnp.abs(w) <= h).astype(w.dtype)
        return h * (jax.lax.stop_gradient(t) + (w - jax.lax.stop_gradient(w)) / h * inside)

    def codes(w, h):
        return jnp.round(jnp.clip(w / h, -1.0, 1.0))

    return _clip_transform("ternary_connect", scale, rounding, key, where, forward, codes, 2)


def channel_spec(params: Any, where: Any, fn: str, per_channel: bool) -> Any:
    """The spec of a per-tensor or per-output-channel (last axis of a kernel) quantizer."""
    derive = lambda lf, x: {"axis": x.ndim - 1 if per_channel and x.ndim >= 2 else None}
    return select(params, where, fn=fn, derive=derive)


def _closed_form_transform(fn: str, per_channel: bool, where: Any, forward, final) -> Transform:
    """A stateless transform over the selected leaves: ``forward(w, ax)``, ``final(w, ax)``."""

    def init(params):
        kd = optional_key_data(None, needed=False, fn=fn)
        return params, BinaryState(kd, channel_spec(params, where, fn, per_channel))

    def apply(cparams, state):
        return map_leaves(lambda leaf, w: forward(w, leaf["axis"]), state.spec, cparams)

    def update(cparams, state, *, step, grads=None):
        return cparams, state

    def finalize(cparams, state):
        return map_leaves(lambda leaf, w: final(w, leaf["axis"]), state.spec, cparams)

    return Transform(init, apply, update, finalize)


def binary_weights(*, per_channel: bool = True, where: Any = None) -> Transform:
    """Binary-weight networks (XNOR-Net's weights): ``alpha * sign(W)``, ``alpha = mean |W|``.

    ``alpha`` is the closed-form minimizer of ``||W - alpha * B||^2`` over ``B`` in ``{-1, 1}``
    (Rastegari et al. 2016), per output channel (the last axis) or per tensor. The gradient is that
    of ``alpha(W) * sign_ste(W)``: the exact gradient through ``alpha`` plus the hard-tanh
    straight-through gradient through ``sign``, as in the paper.

    Args:
      per_channel: one ``alpha`` per output channel (the paper's per-filter scale) or per tensor.
      where: the leaves to binarize (default :func:`jaxcomp.select.kernels`).

    Returns:
      A :class:`jaxcomp.Transform` with a :class:`BinaryState`; ``finalize`` gives
      ``QuantizedArray(codes=sign(W), scale=alpha)``.
    """

    def forward(w, ax):
        return broadcast_channel(xnor_scale(w, ax), w.ndim, ax) * sign_ste(w, clip=1.0)

    def final(w, ax):
        return _qarray(jnp.where(w >= 0, 1, -1), xnor_scale(w, ax), ax, 1, w.dtype)

    return _closed_form_transform("binary_weights", per_channel, where, forward, final)


def ternary_weights(
    *, threshold: float = 0.7, per_channel: bool = False, where: Any = None
) -> Transform:
    """Ternary weight networks (Li et al. 2016): ``alpha * sign(w) * [|w| > delta]``.

    ``delta = threshold * mean |W|`` (0.7 in the paper, an approximation of the optimal
    threshold for Gaussian or uniform weights) and ``alpha`` is the mean of the ``|w|`` above it,
    per tensor (the paper) or per output channel. Straight-through gradient.

    Args:
      threshold: the factor of ``mean |W|``, in ``(0, 2)``.
      per_channel: per output channel instead of per tensor.
      where: the leaves to ternarize (default :func:`jaxcomp.select.kernels`).

    Returns:
      A :class:`jaxcomp.Transform` with a :class:`BinaryState`; ``finalize`` gives
      ``QuantizedArray`` with codes in ``{-1, 0, 1}`` and scale ``alpha``.

    Raises:
      ValueError: ``threshold`` out of range.
    """
    checks.number(threshold, fn="ternary_weights", name="threshold", low=0, high=2,
                  low_open=True, high_open=True)  # fmt: skip

    def codes_alpha(w, ax):
        delta, alpha = twn_scale(w, ax, threshold)
        t = jnp.where(jnp.abs(w) > broadcast_channel(delta, w.ndim, ax), jnp.sign(w), 0.0)
        return t, alpha

    def forward(w, ax):
        t, alpha = codes_alpha(jax.lax.stop_gradient(w), ax)
        wt = (t * broadcast_channel(alpha, w.ndim, ax)).astype(w.dtype)
        return w + jax.lax.stop_gradient(wt - w)

    def final(w, ax):
        return _qarray(*codes_alpha(w, ax), ax, 2, w.dtype)

    return _closed_form_transform("ternary_weights", per_channel, where, forward, final)

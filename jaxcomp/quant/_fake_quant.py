"""Uniform fake quantization of weights, with straight-through gradients and learned step sizes.

The forward pass sees ``bits``-bit uniformly quantized weights; the backward pass treats rounding
as the identity inside the representable range and zero outside (the clipped straight-through
estimator). Ranges are per tensor or per channel (by default the last axis, the output features of
``Dense`` and ``Conv`` kernels), symmetric or affine, taken from the current latent weights by an
observer (min/max by default, or percentile / MSE-optimal clipping). Rounding is to nearest or
stochastic with an explicit key (Gupta et al. 2015).

With ``learned_step=True`` the step is a trainable leaf, as in LSQ (Esser et al. 2019): each
selected leaf's ``cparams`` become ``{"w": w, "scale": s}``, ``s`` starts at
``2 * mean|w| / sqrt(Qp)`` and its gradient is scaled by ``1 / sqrt(N * Qp)`` (``N`` weights per
scale, ``Qp`` the largest code).

``finalize`` returns :class:`~jaxcomp.quant.QuantizedArray` nodes (int8 codes up to 8 bits, int16
above, with scales and zero points), which ``run_int8`` executes with integer matmuls
(Vanhoucke et al. 2011) and whose weights take a quarter of float32's bytes at 8 bits.

References:
  Jacob et al., "Quantization and training of neural networks for efficient integer-arithmetic-only
  inference", CVPR 2018, arXiv:1712.05877.

  Krishnamoorthi, "Quantizing deep convolutional networks for efficient inference: a whitepaper",
  2018, arXiv:1806.08342 (per-channel weight ranges).

  Esser, McKinstry, Bablani, Appuswamy and Modha, "Learned step size quantization", ICLR 2020,
  arXiv:1902.08153.

  Gupta, Agrawal, Gopalakrishnan and Narayanan, "Deep learning with limited numerical precision",
  ICML 2015, arXiv:1502.02551.

  Vanhoucke, Senior and Mao, "Improving the speed of neural networks on CPUs", 2011.
"""

from __future__ import annotations

import math
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcomp.core import Transform
from jaxcomp.core import leaf_paths
from jaxcomp.quant._core import broadcast_channel
from jaxcomp.quant._core import build_spec
from jaxcomp.quant._core import check_axis
from jaxcomp.quant._core import check_bits
from jaxcomp.quant._core import fake_quantize
from jaxcomp.quant._core import grad_scale
from jaxcomp.quant._core import map_spec
from jaxcomp.quant._core import qparams_from_range
from jaxcomp.quant._core import qrange
from jaxcomp.quant._core import quantize
from jaxcomp.quant._core import reduce_axes
from jaxcomp.quant._core import round_value
from jaxcomp.quant._core import rounding_key_data
from jaxcomp.quant._core import split_key_data
from jaxcomp.quant._nodes import QuantizedArray
from jaxcomp.quant._observers import Observer
from jaxcomp.quant._observers import minmax
from jaxcomp.select import resolve
from jaxcomp.select import resolve_rules

__all__ = ["FakeQuantState", "fake_quant"]

_LSQ_MIN_SCALE = 1e-8


class FakeQuantState(NamedTuple):
    """The state of :func:`fake_quant`.

    Attributes:
      key: the raw ``uint32`` data of the PRNG key of stochastic rounding, split at each
        ``update`` (unused with rounding to nearest).
      spec: per leaf, a leafless node holding its channel axis (None: per tensor), or
        ``MaskedNode()`` where the leaf is not quantized.
    """

    key: jax.Array
    spec: Any


def _leaf_axis(path: str, leaf: Any, per_channel: bool, axis_rule: Any) -> int | None:
    if not per_channel:
        return None
    if axis_rule is None:
        return leaf.ndim - 1 if leaf.ndim >= 2 else None
    return check_axis(axis_rule, leaf.ndim, what=f"fake_quant: axis for leaf {path!r}")


def _check_axis_arg(axis: Any, per_channel: bool) -> None:
    if axis is None:
        return
    if not per_channel:
        raise ValueError("fake_quant: axis= is the per-channel axis; pass per_channel=True with it")
    if isinstance(axis, list | tuple):
        return  # rules, resolved per leaf in init
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(
            f"fake_quant: axis must be an int, a list of (regex, int) rules, or None; got {axis!r}"
        )


def fake_quant(
    *,
    bits: int = 8,
    symmetric: bool = True,
    per_channel: bool = False,
    axis: int | list[tuple[str, int]] | None = None,
    rounding: str = "nearest",
    key: jax.Array | None = None,
    observer: Observer | None = None,
    learned_step: bool = False,
    where: Any = None,
) -> Transform:
    """Uniform fake quantization of the selected weights with a clipped straight-through gradient.

    Args:
      bits: the bit width, an int in [2, 16] (1 bit is :func:`binary_weights`).
      symmetric: symmetric codes around 0 (zero point 0; what the int8 kernels need), or affine
        codes with a zero point covering ``[min, max]``.
      per_channel: one scale per channel instead of one per tensor.
      axis: the channel axis: an int for every selected leaf, or ``[(regex, axis), ...]`` rules over
        leaf paths (first match wins); by default the last axis (output features) of kernels with
        ndim >= 2, and per tensor for 1-D leaves. Needs ``per_channel=True``.
      rounding: ``"nearest"`` or ``"stochastic"`` (needs ``key``; a fresh key each ``update``).
      key: the PRNG key of stochastic rounding (``jax.random.key``).
      observer: how the range is taken from the latent weights (:func:`minmax` by default;
        :func:`percentile` or :func:`mse` clip outliers). Its own ``axis`` is ignored; the
        quantizer's channel axis is used.
      learned_step: LSQ: the scale becomes a trainable leaf (``cparams`` change structure, each
        selected leaf becomes ``{"w": w, "scale": s}``). Needs ``symmetric=True`` and no
        ``observer``.
      where: the leaves to quantize (default :func:`jaxcomp.select.kernels`).

    Returns:
      A :class:`jaxcomp.Transform` whose state is a :class:`FakeQuantState`; ``finalize`` puts a
      :class:`QuantizedArray` in place of each quantized leaf.

    Raises:
      ValueError: a hyperparameter is out of range; at ``init``, a per-channel axis that a leaf
        does not have.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> t = fake_quant(bits=4, per_channel=True)
        >>> params = {"Dense_0": {"kernel": jax.random.normal(jax.random.key(0), (8, 3))}}
        >>> c, s = t.init(params)
        >>> [int(jnp.unique(t.apply(c, s)["Dense_0"]["kernel"][:, j]).size) <= 15 for j in range(3)]
        [True, True, True]
    """
    bits = check_bits(bits, lo=2, what="fake_quant: bits")
    kd = rounding_key_data(rounding, key, fn="fake_quant")
    _check_axis_arg(axis, per_channel)
    if observer is not None and not isinstance(observer, Observer):
        raise ValueError(f"fake_quant: observer must be a jaxcomp.quant Observer, got {observer!r}")
    if learned_step and (not symmetric or observer is not None):
        raise ValueError("fake_quant: learned_step=True needs symmetric=True and no observer")
    obs = minmax() if observer is None else observer
    clips = obs.name != "minmax"  # a min/max range holds every weight: the STE mask is all ones
    qmin, qmax = qrange(bits, symmetric=symmetric)
    stochastic = rounding == "stochastic"

    def leaf_key(state, i):
        return jax.random.fold_in(jax.random.wrap_key_data(state.key), i) if stochastic else None

    def qparams_of(w, ax):
        lo, hi = obs.range_of(jax.lax.stop_gradient(w), ax)
        return qparams_from_range(lo, hi, bits=bits, symmetric=symmetric)

    def init(params):
        mask = resolve(where, params, what="fake_quant(where=...)")
        rules = None
        if isinstance(axis, list | tuple):
            resolved = resolve_rules(axis, params, default=None, what="fake_quant(axis=...)")
            rules = jax.tree.leaves(resolved, is_leaf=lambda x: x is None)
        paths_axes = {}

        def leaf_spec(path, leaf):
            rule = axis if rules is None else paths_axes.get(path)
            return _leaf_axis(path, leaf, per_channel, rule)

        if rules is not None:
            paths_axes.update(zip(leaf_paths(params), rules, strict=True))
        spec = build_spec(mask, params, leaf_spec)
        state = FakeQuantState(kd, spec)
        if not learned_step:
            return params, state

        def to_lsq(_, ax, w):
            red = reduce_axes(w.ndim, ax)
            s = 2.0 * jnp.mean(jnp.abs(w), axis=red) / math.sqrt(qmax)
            return {"w": w, "scale": jnp.maximum(s, _LSQ_MIN_SCALE).astype(w.dtype)}

        return map_spec(to_lsq, spec, params), state

    def lsq_apply(w, s, ax, k):
        n_per_scale = w.size // (1 if s.ndim == 0 else s.shape[0])
        g = 1.0 / math.sqrt(n_per_scale * qmax)
        sb = broadcast_channel(grad_scale(s, g), w.ndim, ax)
        v = jnp.clip(w / sb, qmin, qmax)
        q = v + jax.lax.stop_gradient(round_value(v, rounding, k) - v)
        return (q * sb).astype(w.dtype)

    def apply(cparams, state):
        def one(i, ax, c):
            k = leaf_key(state, i)
            if learned_step:
                return lsq_apply(c["w"], c["scale"], ax, k)
            scale, zp = qparams_of(c, ax)
            return fake_quantize(
                c, scale, zp, bits=bits, symmetric=symmetric, axis=ax, rounding=rounding, key=k,
                clip_gradient=clips,
            )  # fmt: skip

        return map_spec(one, state.spec, cparams)

    def update(cparams, state, *, step, grads=None):
        del step, grads
        if stochastic:
            state = state._replace(key=split_key_data(state.key))
        if learned_step:
            cparams = map_spec(
                lambda _, ax, c: {"w": c["w"], "scale": jnp.maximum(c["scale"], _LSQ_MIN_SCALE)},
                state.spec,
                cparams,
            )
        return cparams, state

    def finalize(cparams, state):
        def one(_, ax, c):
            if learned_step:
                w, scale = c["w"], c["scale"].astype(jnp.float32)
                zp = jnp.zeros_like(scale)
            else:
                w = c
                scale, zp = qparams_of(w, ax)
            codes = quantize(w, scale, zp, bits=bits, symmetric=symmetric, axis=ax)
            return QuantizedArray(codes, scale, zp, ax, bits, symmetric, jnp.dtype(w.dtype))

        return map_spec(one, state.spec, cparams)

    return Transform(init, apply, update, finalize)

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
from jaxcomp.core import _checks as checks
from jaxcomp.core._map import leaf_key
from jaxcomp.core._map import map_leaves
from jaxcomp.core._map import select
from jaxcomp.quant._core import broadcast_channel
from jaxcomp.quant._core import fake_quantize
from jaxcomp.quant._core import grad_scale
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

__all__ = ["FakeQuantState", "fake_quant"]

_LSQ_MIN_SCALE = 1e-8


class FakeQuantState(NamedTuple):
    """The state of :func:`fake_quant`.

    Attributes:
      key: the raw ``uint32`` data of the PRNG key of stochastic rounding, split at each
        ``update`` (unused with rounding to nearest).
      spec: a :class:`jaxcomp.core.Leaf` per quantized leaf holding its ``bits`` and channel
        ``axis`` (None: per tensor), ``MaskedNode()`` elsewhere (:func:`jaxcomp.core.select`).
    """

    key: jax.Array
    spec: Any


def leaf_axis(leaf: Any, w: Any, per_channel: bool, rule: Any, fn: str) -> int | None:
    """The channel axis of one leaf: ``rule`` when given, else the last axis of a kernel (ndim >=
    2), per tensor for 1-D leaves; None without ``per_channel``."""
    if not per_channel:
        return None
    if rule is None:
        return w.ndim - 1 if w.ndim >= 2 else None
    return checks.axis(rule, w.ndim, fn=fn, name=f"axis of leaf {leaf.path!r}")


def check_bits_arg(bits: Any, fn: str, low: int = 2, high: int = 16) -> Any:
    """``bits`` for every leaf, or per-leaf ``{path: bits}`` / ``[(regex, bits)]``, checked."""
    one = lambda v, name: checks.bits(v, fn=fn, name=name, low=low, high=high)
    return checks.per_leaf(bits, one, fn=fn, name="bits")


def fake_quant(
    *,
    bits: int | dict[str, int] | list[tuple[str, int]] = 8,
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
      bits: the bit width, an int in [2, 16] (1 bit is :func:`binary_weights`), or per leaf:
        ``{path: bits}`` or ``[(regex, bits)]`` rules (first match wins).
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
    bits = check_bits_arg(bits, "fake_quant")
    kd = rounding_key_data(rounding, key, fn="fake_quant")
    if axis is not None and not per_channel:
        raise ValueError("fake_quant: axis= is the per-channel axis; pass per_channel=True with it")
    if axis is not None:
        checks.per_leaf(axis, lambda v, n: checks.integer(v, fn="fake_quant", name=n, low=None),
                        fn="fake_quant", name="axis")  # fmt: skip
    if observer is not None and not isinstance(observer, Observer):
        raise ValueError(f"fake_quant: observer must be a jaxcomp.quant Observer, got {observer!r}")
    if learned_step and (not symmetric or observer is not None):
        raise ValueError("fake_quant: learned_step=True needs symmetric=True and no observer")
    obs = minmax() if observer is None else observer
    clips = obs.name != "minmax"  # a min/max range holds every weight: the STE mask is all ones
    stochastic = rounding == "stochastic"

    def qparams_of(w, leaf):
        lo, hi = obs.range_of(jax.lax.stop_gradient(w), leaf["axis"])
        return qparams_from_range(lo, hi, bits=leaf["bits"], symmetric=symmetric)

    def init(params):
        derive = lambda lf, w: {"axis": leaf_axis(lf, w, per_channel, lf["axis"], "fake_quant")}
        spec = select(params, where, fn="fake_quant", defaults={"axis": None}, derive=derive,
                      bits=bits, axis=axis)  # fmt: skip
        state = FakeQuantState(kd, spec)
        if not learned_step:
            return params, state

        def to_lsq(leaf, w):
            qmax = qrange(leaf["bits"], symmetric=True)[1]
            s = 2.0 * jnp.mean(jnp.abs(w), axis=reduce_axes(w.ndim, leaf["axis"])) / math.sqrt(qmax)
            return {"w": w, "scale": jnp.maximum(s, _LSQ_MIN_SCALE).astype(w.dtype)}

        return map_leaves(to_lsq, spec, params), state

    def lsq_apply(w, s, leaf, k):
        ax = leaf["axis"]
        qmin, qmax = qrange(leaf["bits"], symmetric=True)
        n_per_scale = w.size // (1 if s.ndim == 0 else s.shape[0])
        sb = broadcast_channel(grad_scale(s, 1.0 / math.sqrt(n_per_scale * qmax)), w.ndim, ax)
        v = jnp.clip(w / sb, qmin, qmax)
        q = v + jax.lax.stop_gradient(round_value(v, rounding, k) - v)
        return (q * sb).astype(w.dtype)

    def apply(cparams, state):
        def one(leaf, c):
            k = leaf_key(state.key, leaf) if stochastic else None
            if learned_step:
                return lsq_apply(c["w"], c["scale"], leaf, k)
            scale, zp = qparams_of(c, leaf)
            return fake_quantize(
                c, scale, zp, bits=leaf["bits"], symmetric=symmetric, axis=leaf["axis"],
                rounding=rounding, key=k, clip_gradient=clips,
            )  # fmt: skip

        return map_leaves(one, state.spec, cparams)

    def update(cparams, state, *, step, grads=None):
        del step, grads
        if stochastic:
            state = state._replace(key=split_key_data(state.key))
        if learned_step:
            cparams = map_leaves(
                lambda _, c: {"w": c["w"], "scale": jnp.maximum(c["scale"], _LSQ_MIN_SCALE)},
                state.spec,
                cparams,
            )
        return cparams, state

    def finalize(cparams, state):
        def one(leaf, c):
            ax, b = leaf["axis"], leaf["bits"]
            if learned_step:
                w, scale = c["w"], c["scale"].astype(jnp.float32)
                zp = jnp.zeros_like(scale)
            else:
                w = c
                scale, zp = qparams_of(w, leaf)
            codes = quantize(w, scale, zp, bits=b, symmetric=symmetric, axis=ax)
            return QuantizedArray(codes, scale, zp, ax, b, symmetric, jnp.dtype(w.dtype))

        return map_leaves(one, state.spec, cparams)

    return Transform(init, apply, update, finalize)

"""The contraction of a Flax Dense or Conv layer, for kernels the layer cannot run itself.

The apply adapters of :mod:`jaxcomp.quant` compute a layer's output from other kinds of operands
than its float params: int8 codes (``lax.dot_general`` with int32 accumulation; convolutions as
matmuls over patches), binarized inputs with XNOR-Net's scaling. :func:`contraction` reads the
layer's configuration (strides, padding, dilations, feature groups) from a linen or NNX module
through :func:`jaxcomp.adapt.layer_config` and returns its linear map as a function of
``(inputs, kernel)``, with ``preferred_element_type`` passed through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxcomp.adapt import LayerConfig
from jaxcomp.adapt import layer_config
from jaxcomp.adapt import window_slices
from jaxcomp.adapt._factorized import _dimension_numbers

__all__ = ["add_bias", "contraction", "is_linear"]

Contraction = Callable[..., jax.Array]


def is_linear(module: Any) -> bool:
    """True for the layers the adapters can run: Dense and Conv, linen or NNX."""
    return layer_config(module) is not None


def contraction(layer: Any, *, path: str = "") -> Contraction:
    """The linear map of a Dense or Conv layer: ``op(x, kernel, pref=None, groups=None)``.

    Args:
      layer: the layer: a linen module (bound or not), an NNX module, or its
        :class:`jaxcomp.adapt.LayerConfig`.
      path: its path, for error messages.

    Returns:
      ``op(x, kernel, pref=None, groups=None)``: ``x @ kernel`` over the last axis for ``Dense``;
      the layer's convolution for ``Conv`` (leading batch axes flattened as Flax does).
      ``pref`` is the ``preferred_element_type`` (``jnp.int32`` for int8 operands); ``groups``
      overrides the feature group count. ``op.example_ndim`` is the rank of one example (1 for
      ``Dense``, the spatial rank plus one for ``Conv``): an input of higher rank has a batch axis
      first. Integer convolutions without feature groups or input dilation run as one integer
      matmul over patches gathered by strided slices (:func:`_int_conv`), which XLA's CPU backend
      runs several times faster than its integer convolution. ``op.patches(x)`` is then that
      im2col matrix, ``(*batch, *out_spatial, K)`` with ``op(x, k) == op.patches(x) @
      k.reshape(K, -1)`` (the identity for ``Dense``; None for a Conv with feature groups or input
      dilation): the integer backward of :func:`jaxcomp.quant.qat_linear` contracts it.

    Raises:
      ValueError: the layer is neither, or a ``Conv`` with a mask or circular, reflect or causal
        padding.
    """
    cfg = layer if isinstance(layer, LayerConfig) else layer_config(layer)
    if cfg is None:
        raise ValueError(
            f"layer {path!r} is a {type(layer).__name__}; only Dense (nn.Dense, nnx.Linear) and "
            "Conv (nn.Conv, nnx.Conv) layers can run from quantized operands"
        )
    if cfg.kind == "dense":

        def dense(x, kernel, pref=None, groups=None):
            del groups
            dims = (((x.ndim - 1,), (0,)), ((), ()))
            return lax.dot_general(x, kernel, dims, preferred_element_type=pref)

        dense.example_ndim = 1
        dense.patches = lambda x: x
        return dense
    n = len(cfg.kernel_size)
    padding = cfg.padding
    if isinstance(padding, str) and padding not in ("SAME", "VALID"):
        raise ValueError(
            f"layer {path!r}: padding {padding!r} is not supported (SAME, VALID or pairs)"
        )
    if cfg.mask is not None:
        raise ValueError(f"layer {path!r}: masked convolutions are not supported")
    strides, lhs_dil, rhs_dil = cfg.strides, cfg.input_dilation, cfg.kernel_dilation

    def conv(x, kernel, pref=None, groups=None):
        batch = x.shape[: x.ndim - (n + 1)]
        flat = x.reshape((-1, *x.shape[x.ndim - (n + 1) :])) if len(batch) != 1 else x
        g = cfg.groups if groups is None else groups
        if (
            pref is not None
            and jnp.issubdtype(flat.dtype, jnp.integer)
            and g == 1
            and all(d == 1 for d in lhs_dil)
        ):
            y = _int_conv(flat, kernel, strides, padding, rhs_dil, pref)
        else:
            dn = _dimension_numbers(n + 2)
            y = lax.conv_general_dilated(
                flat, kernel, strides, padding, lhs_dilation=lhs_dil, rhs_dilation=rhs_dil,
                dimension_numbers=dn, preferred_element_type=pref, feature_group_count=g,
            )  # fmt: skip
        return y.reshape((*batch, *y.shape[1:])) if len(batch) != 1 else y

    conv.example_ndim = n + 1
    if cfg.groups == 1 and all(d == 1 for d in lhs_dil):

        def patches(x):
            batch = x.shape[: x.ndim - (n + 1)]
            flat = x.reshape((-1, *x.shape[x.ndim - (n + 1) :])) if len(batch) != 1 else x
            p = _patches(flat, tuple(cfg.kernel_size), strides, padding, rhs_dil)
            return p.reshape((*batch, *p.shape[1:])) if len(batch) != 1 else p

        conv.patches = patches
    else:
        conv.patches = None
    return conv


def _patches(
    x: jax.Array,
    window: tuple[int, ...],
    strides: tuple[int, ...],
    padding: Any,
    dilation: tuple[int, ...],
) -> jax.Array:
    """The im2col matrix of a channels-last convolution, ``(batch, *out_spatial, prod(window) *
    in)``, in the order of ``kernel.reshape(-1, out)``: one strided slice of the zero-padded
    input per window offset, concatenated along the channels."""
    n = len(window)
    if isinstance(padding, str):
        span = tuple((k - 1) * d + 1 for k, d in zip(window, dilation, strict=True))
        padding = lax.padtype_to_pads(x.shape[1 : n + 1], span, strides, padding)
    cols = [piece for _, piece in window_slices(x, window, strides, padding, dilation)]
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def _int_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, ...],
    padding: Any,
    dilation: tuple[int, ...],
    pref: Any,
) -> jax.Array:
    """A channels-last convolution as one matmul over patches gathered by strided slices.

    ``x`` is ``(batch, *spatial, in)``, ``kernel`` ``(*window, in, out)``; padding (a string or
    ``(lo, hi)`` pairs, negative allowed) pads with zeros as ``lax.conv_general_dilated`` does, so
    the result is the same integer for integer operands. Each window offset is one strided slice
    of the padded input; their concatenation along the channels is the im2col matrix, in the order
    of ``kernel.reshape(-1, out)``.
    """
    n = kernel.ndim - 2
    patches = _patches(x, kernel.shape[:n], strides, padding, dilation)
    dims = (((n + 1,), (0,)), ((), ()))
    return lax.dot_general(
        patches, kernel.reshape(-1, kernel.shape[-1]), dims, preferred_element_type=pref
    )


def add_bias(y: jax.Array, bias: jax.Array | None) -> jax.Array:
    """``y + bias`` over the last axis (no-op for ``None``)."""
    if bias is None:
        return y
    return y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,)).astype(y.dtype)

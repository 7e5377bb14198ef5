"""The contraction of a Flax ``Dense`` or ``Conv`` layer, for kernels the layer cannot run itself.

The apply adapters of :mod:`jaxcomp.quant` compute a layer's output from other kinds of operands
than its float params: int8 codes (``lax.dot_general`` with int32 accumulation; convolutions as
matmuls over patches), binarized inputs with XNOR-Net's scaling. :func:`contraction` reads the
layer's configuration (strides, padding, dilations, feature groups) from the bound module and
returns its linear map as a function of ``(inputs, kernel)``, with ``preferred_element_type``
passed through.
:func:`layer_inputs` records the inputs of layers as the rows that multiply their kernels
(im2col patches for convolutions), the calibration data of Q-CNN's error correction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen.linear import canonicalize_padding
from jax import lax

from jaxcomp.adapt import PASS
from jaxcomp.adapt import conv_patches
from jaxcomp.adapt import intercept
from jaxcomp.adapt import window_slices
from jaxcomp.adapt._factorized import _dimension_numbers
from jaxcomp.adapt._factorized import _tuple

__all__ = ["add_bias", "contraction", "is_linear", "layer_inputs"]

Contraction = Callable[..., jax.Array]


def is_linear(module: Any) -> bool:
    """True for the layers the adapters can run: ``nn.Dense`` and ``nn.Conv``."""
    return isinstance(module, nn.Dense) or type(module) is nn.Conv


def contraction(module: nn.Module, *, path: str = "") -> Contraction:
    """The linear map of a bound ``Dense`` or ``Conv``: ``op(x, kernel, pref=None, groups=None)``.

    Args:
      module: the bound layer.
      path: its path, for error messages.

    Returns:
      ``op(x, kernel, pref=None, groups=None)``: ``x @ kernel`` over the last axis for ``Dense``;
      the layer's convolution for ``Conv`` (leading batch axes flattened as Flax does).
      ``pref`` is the ``preferred_element_type`` (``jnp.int32`` for int8 operands); ``groups``
      overrides the feature group count. ``op.example_ndim`` is the rank of one example (1 for
      ``Dense``, the spatial rank plus one for ``Conv``): an input of higher rank has a batch axis
      first. Integer convolutions without feature groups or input dilation run as one integer
      matmul over patches gathered by strided slices (:func:`_int_conv`), which XLA's CPU backend
      runs several times faster than its integer convolution.

    Raises:
      ValueError: the layer is neither, or a ``Conv`` with a mask or circular, reflect or causal
        padding.
    """
    if isinstance(module, nn.Dense):

        def dense(x, kernel, pref=None, groups=None):
            del groups
            dims = (((x.ndim - 1,), (0,)), ((), ()))
            return lax.dot_general(x, kernel, dims, preferred_element_type=pref)

        dense.example_ndim = 1
        return dense
    if type(module) is not nn.Conv:
        raise ValueError(
            f"layer {path!r} is a {type(module).__name__}; only nn.Dense and nn.Conv can run "
            "from quantized operands"
        )
    ks = module.kernel_size
    n = 1 if isinstance(ks, int) else len(ks)
    padding = canonicalize_padding(module.padding, n)
    if isinstance(padding, str) and padding not in ("SAME", "VALID"):
        raise ValueError(
            f"layer {path!r}: padding {padding!r} is not supported (SAME, VALID or pairs)"
        )
    if module.mask is not None:
        raise ValueError(f"layer {path!r}: masked convolutions are not supported")
    strides = _tuple(module.strides, n)
    lhs_dil = _tuple(module.input_dilation, n)
    rhs_dil = _tuple(module.kernel_dilation, n)

    def conv(x, kernel, pref=None, groups=None):
        batch = x.shape[: x.ndim - (n + 1)]
        flat = x.reshape((-1, *x.shape[x.ndim - (n + 1) :])) if len(batch) != 1 else x
        g = module.feature_group_count if groups is None else groups
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
    return conv


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
    window = kernel.shape[:n]
    if isinstance(padding, str):
        span = tuple((k - 1) * d + 1 for k, d in zip(window, dilation, strict=True))
        padding = lax.padtype_to_pads(x.shape[1 : n + 1], span, strides, padding)
    cols = [piece for _, piece in window_slices(x, window, strides, padding, dilation)]
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    dims = (((n + 1,), (0,)), ((), ()))
    return lax.dot_general(
        patches, kernel.reshape(-1, kernel.shape[-1]), dims, preferred_element_type=pref
    )


def add_bias(y: jax.Array, bias: jax.Array | None) -> jax.Array:
    """``y + bias`` over the last axis (no-op for ``None``)."""
    if bias is None:
        return y
    return y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,)).astype(y.dtype)


def _patches(module: nn.Conv, x: jax.Array, kernel_shape: tuple[int, ...], path: str) -> jax.Array:
    """The im2col rows of a conv input, ordered like ``kernel.reshape(-1, out)``."""
    if module.feature_group_count != 1:
        raise ValueError(f"layer_inputs: grouped convolution {path!r} is not supported")
    n = len(kernel_shape) - 2
    contraction(module, path=path)  # validates padding and mask
    return conv_patches(module, x.reshape((-1, *x.shape[x.ndim - (n + 1) :])))


def layer_inputs(
    apply_fn: Callable[..., Any],
    variables: Any,
    *args: Any,
    layers: str = ".*",
    max_rows: int | None = None,
    key: jax.Array | None = None,
    **kwargs: Any,
) -> dict[str, jax.Array]:
    """The inputs of a model's ``Dense`` and ``Conv`` layers as ``(N, D)`` rows, by kernel path.

    For a ``Dense`` the rows are its input vectors; for a ``Conv`` its im2col patches ordered like
    ``kernel.reshape(-1, features)``, so that ``rows @ kernel.reshape(-1, features)`` is the
    layer's output (before the bias). These are the calibration inputs ``X`` of
    :func:`product_quant`'s error correction (Wu et al. 2016). Runs eagerly (not under ``jit``).

    Args:
      apply_fn: the model's ``apply``.
      variables: its variables.
      *args: the model's inputs (a calibration batch).
      layers: a regex over layer paths (``re.search``); default every layer.
      max_rows: keep at most this many rows per layer, drawn at random with ``key``.
      key: the PRNG key of the subsampling.
      **kwargs: passed to ``apply_fn``.

    Returns:
      ``{"<layer path>/kernel": rows}``.

    Raises:
      ValueError: ``max_rows`` without a key, a layer that cannot be unrolled, or no layer matched.
    """
    if max_rows is not None and key is None:
        raise ValueError("layer_inputs: max_rows= needs key=, a jax.random.key")
    rx = re.compile(layers)
    found: dict[str, jax.Array] = {}

    def record(layer):
        kernel = layer.params.get("kernel")
        if kernel is None or not is_linear(layer.module) or not rx.search(layer.path):
            return PASS
        x = layer.args[0]
        if isinstance(layer.module, nn.Dense):
            rows = x.reshape(-1, x.shape[-1])
        else:
            rows = _patches(layer.module, x, tuple(kernel.shape), layer.path)
        found[f"{layer.path}/kernel"] = rows
        return PASS

    intercept(apply_fn, record)(variables, *args, **kwargs)
    if not found:
        raise ValueError(f"layer_inputs: no Dense or Conv layer matches layers={layers!r}")
    if max_rows is not None:
        out = {}
        for i, (p, rows) in enumerate(sorted(found.items())):
            if rows.shape[0] > max_rows:
                sel = jax.random.choice(jax.random.fold_in(key, i), rows.shape[0], (max_rows,),
                                        replace=False)  # fmt: skip
                rows = rows[np.sort(np.asarray(sel))]
            out[p] = rows
        return out
    return found

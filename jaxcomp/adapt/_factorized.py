"""Running factorized layers as their factors: the adapter behind ``run_factorized``.

A low-rank rewrite (Denton et al., "Exploiting linear structure within convolutional networks for
efficient evaluation", 2014, arXiv:1404.0736; Jaderberg et al., "Speeding up convolutional neural
networks with low rank expansions", 2014, arXiv:1405.3866; Lebedev et al., "Speeding-up
convolutional neural networks using fine-tuned CP-decomposition", 2015, arXiv:1412.6553; Kim et
al., "Compression of deep convolutional neural networks for fast and low power mobile
applications", 2016, arXiv:1511.06530) only saves time if inference runs the factors instead of
the dense kernel they stand for. Training rebuilds the dense kernel (``transform.apply``) and runs
the model as written; inference wraps the unchanged model (linen, or NNX through
:func:`jaxcomp.adapt.functional`) with :func:`run_factorized`, whose handler finds each Dense or
Conv layer (``nn.Dense`` / ``nnx.Linear``, ``nn.Conv`` / ``nnx.Conv``) whose ``kernel`` param is
a *factored kernel* (an object with a ``to_dense()`` method, such as the nodes of
:mod:`jaxcomp.lowrank`) and computes the layer's output from the factors:

* Dense: ``kernel.matmul(x, precision)`` when the node has it and the layer uses the
  default ``lax.dot_general``;
* Conv: ``kernel.conv(x, spec)``, where ``spec`` is the layer's own strides, explicit zero
  padding, kernel dilation and precision (:class:`ConvSpec`), when the node has it and the layer's
  configuration is one the fast path covers (zero padding of any form, ``feature_group_count=1``,
  no input dilation, no mask, the default ``lax`` convolution).

Every other case (a node without the method, ``CIRCULAR`` padding, grouped convolutions, other
module kinds) rebuilds the dense kernel and runs the module's own code on it, so the output is
always right and only the speed-up is lost.

The building blocks the nodes use are here too: :func:`conv` (channels-last ``lax`` convolution),
:func:`depthwise` (on CPU a sum of shifted slices, since XLA's CPU backend runs grouped
convolutions an order of magnitude slower than dense ones of more MACs) and :func:`grouped_conv`
(one dense convolution per group).
"""

from __future__ import annotations

import itertools
import math
import string
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple
from typing import Protocol
from typing import runtime_checkable

import jax
import jax.numpy as jnp
from jax import lax

from jaxcomp.adapt._config import CONV
from jaxcomp.adapt._config import DENSE
from jaxcomp.adapt._config import LayerConfig
from jaxcomp.adapt._config import layer_config
from jaxcomp.adapt._intercept import PASS
from jaxcomp.adapt._intercept import Layer
from jaxcomp.adapt._intercept import intercept
from jaxcomp.core._nodes import children
from jaxcomp.core._nodes import to_dense

__all__ = [
    "MAX_SLICE_TAPS",
    "ConvSpec",
    "FactoredKernel",
    "conv",
    "conv_patches",
    "conv_spec",
    "depthwise",
    "depthwise_impl",
    "factorized_handler",
    "grouped_conv",
    "run_factorized",
    "window_slices",
]


@runtime_checkable
class FactoredKernel(Protocol):
    """A kernel held as factors: ``to_dense()`` rebuilds the array the layer was built for.

    A node may also define ``matmul(x, precision)`` (a ``Dense`` layer's product with ``x``, without
    the bias) and ``conv(x, spec)`` (a convolution of the batched, channels-last ``x`` under the
    :class:`ConvSpec` ``spec``, without the bias) to run without rebuilding.
    """

    def to_dense(self) -> jax.Array: ...


class ConvSpec(NamedTuple):
    """A convolution's geometry, resolved for one input shape.

    Attributes:
      strides: one stride per spatial axis.
      padding: one explicit ``(low, high)`` zero padding per spatial axis.
      dilation: one kernel dilation per spatial axis.
      precision: the ``lax`` precision of the layer (``None`` for the default).
      depthwise: how :func:`depthwise` runs: ``"slices"`` (a sum of shifted slices),
        ``"conv"`` (a ``feature_group_count = C`` convolution) or ``"auto"`` (see
        :func:`depthwise_impl`: slices on CPU, where XLA's grouped convolutions are slow, and
        elsewhere for kernels of at most :data:`MAX_SLICE_TAPS` taps; the convolution for
        larger kernels off the CPU).
    """

    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    precision: Any = None
    depthwise: str = "auto"

    def along(self, axis: int) -> ConvSpec:
        """The spec restricted to one spatial axis: the others get stride 1 and no padding.

        A kernel that is separable over the spatial axes (``k x 1`` then ``1 x k``) runs as one
        convolution per axis, each with that axis's stride, padding and dilation.
        """
        return ConvSpec(
            tuple(s if i == axis else 1 for i, s in enumerate(self.strides)),
            tuple(p if i == axis else (0, 0) for i, p in enumerate(self.padding)),
            tuple(d if i == axis else 1 for i, d in enumerate(self.dilation)),
            self.precision,
            self.depthwise,
        )


def _dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    """Channels-last: input and output ``(N, *spatial, C)``, kernel ``(*spatial, I, O)``."""
    n = ndim - 2
    lhs = (0, ndim - 1, *range(1, n + 1))
    rhs = (n + 1, n, *range(n))
    return lax.ConvDimensionNumbers(lhs, rhs, lhs)


def conv(x: jax.Array, kernel: jax.Array, spec: ConvSpec, *, groups: int = 1) -> jax.Array:
    """A channels-last convolution of ``x`` (``(N, *spatial, C)``) under ``spec``.

    Args:
      x: the batched input.
      kernel: ``(*spatial, C // groups, O)``.
      spec: strides, padding, dilation and precision.
      groups: the ``feature_group_count`` (``C`` for a depthwise convolution).

    Returns:
      ``(N, *out_spatial, O)``.
    """
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=spec.strides,
        padding=spec.padding,
        rhs_dilation=spec.dilation,
        dimension_numbers=_dimension_numbers(x.ndim),
        feature_group_count=groups,
        precision=spec.precision,
    )


MAX_SLICE_TAPS = 8
"""Off the CPU, ``"auto"`` runs depthwise kernels of at most this many taps as shifted slices.

Measured on one NVIDIA H100 (``experiments/benchmarks/lowrank_speed.py --scale 32 --pipeline
20``, float32, 128 channels): the 3- and 5-tap 1-D passes of CP and separable-basis layers ran
4-5x faster as shifted slices than as XLA's grouped convolutions, and the 49-tap 7x7 depthwise of
the monochromatic layer 2x slower.
"""


def depthwise_impl(spec: ConvSpec, taps: int | None = None) -> str:
    """``"slices"`` or ``"conv"``: how :func:`depthwise` runs under ``spec`` on this backend.

    Args:
      spec: the convolution's spec; its ``depthwise`` field, unless ``"auto"``, is the answer.
      taps: the number of taps of the depthwise kernel (the product of its spatial sizes), or
        ``None`` if unknown. ``"auto"`` gives ``"slices"`` on CPU for any kernel, and elsewhere
        for kernels of at most :data:`MAX_SLICE_TAPS` taps; ``"conv"`` otherwise.
    """
    if spec.depthwise != "auto":
        return spec.depthwise
    if jax.default_backend() == "cpu":
        return "slices"
    return "slices" if taps is not None and taps <= MAX_SLICE_TAPS else "conv"


def window_slices(
    x: jax.Array,
    window: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
) -> list[tuple[tuple[int, ...], jax.Array]]:
    """The input each tap of a convolution window sees: one strided slice per window offset.

    ``x`` is ``(N, *spatial, C)``, zero-padded by the explicit ``(low, high)`` pairs (negative
    values crop, as in ``lax.conv_general_dilated``). For each offset ``t`` of the window, in
    ``itertools.product`` order, the slice holds ``x[n, p * stride + t * dilation, c]`` for every
    output position ``p``: a convolution is the sum over offsets of each slice times its tap
    (the depthwise sums here, the int8 im2col of :mod:`jaxcomp.quant`).

    Returns:
      ``[(offset, slice)]``, each slice ``(N, *out_spatial, C)``.
    """
    n = len(window)
    cfg = [(0, 0, 0), *((int(lo), int(hi), 0) for lo, hi in padding), (0, 0, 0)]
    xp = lax.pad(x, jnp.zeros((), x.dtype), cfg)
    out = [
        (size - (k - 1) * d - 1) // s + 1
        for size, k, d, s in zip(xp.shape[1 : n + 1], window, dilation, strides, strict=True)
    ]
    pieces = []
    for offset in itertools.product(*(range(k) for k in window)):
        start = (0, *(t * d for t, d in zip(offset, dilation, strict=True)), 0)
        limit = (
            xp.shape[0],
            *(s0 + (o - 1) * st + 1 for s0, o, st in zip(start[1:-1], out, strides, strict=True)),
            xp.shape[-1],
        )
        pieces.append((offset, lax.slice(xp, start, limit, (1, *strides, 1))))
    return pieces


def conv_patches(layer: Any, x: jax.Array) -> jax.Array:
    """The im2col patches of ``x`` for a convolution, ``(positions, kh*kw*in)``.

    Ordered like ``kernel.reshape(-1, out)``, so ``conv_patches(m, x) @ kernel.reshape(-1, out)``
    is the convolution without bias.

    Args:
      layer: a ``Conv`` module (linen or NNX) or its :class:`jaxcomp.adapt.LayerConfig`.
      x: the input, ``(N, *spatial, C)`` (further leading batch axes are flattened).

    Raises:
      ValueError: not a convolution, or a grouped, masked or non-zero-padded one.
    """
    cfg = _config(layer, "conv_patches")
    if cfg.kind != CONV:
        raise ValueError(f"conv_patches: layer must be a Conv, got a {cfg.kind} layer")
    if cfg.groups != 1:
        raise ValueError("conv_patches: grouped convolutions (feature_group_count > 1) unsupported")
    if cfg.mask is not None:
        raise ValueError("conv_patches: masked convolutions are not supported")
    pad = cfg.padding
    if isinstance(pad, str) and pad not in ("SAME", "VALID"):
        raise ValueError(f"conv_patches: padding {pad!r} is not supported (SAME, VALID, ints)")
    ks = cfg.kernel_size
    nd = len(ks)
    x = x.reshape((-1, *x.shape[x.ndim - (nd + 1) :]))
    spatial = string.ascii_uppercase[:nd].replace("C", "Z").replace("N", "Y")
    lhs = "N" + spatial + "C"
    dn = (lhs, spatial + "IO", lhs)
    p = jax.lax.conv_general_dilated_patches(
        x, ks, cfg.strides, pad, lhs_dilation=cfg.input_dilation,
        rhs_dilation=cfg.kernel_dilation, dimension_numbers=dn,
    )  # fmt: skip
    cin = x.shape[-1]
    p = p.reshape((-1, cin, *ks))
    return jnp.moveaxis(p, 1, -1).reshape((p.shape[0], -1))


def _config(layer: Any, what: str) -> LayerConfig:
    cfg = layer if isinstance(layer, LayerConfig) else layer_config(layer)
    if cfg is None:
        raise ValueError(
            f"{what}: layer must be a Dense or Conv (linen or NNX) or a LayerConfig, got "
            f"{type(layer).__name__}"
        )
    return cfg


def depthwise(x: jax.Array, weights: jax.Array, spec: ConvSpec) -> jax.Array:
    """A depthwise convolution: each channel convolved with its own filter(s).

    ``out[n, p, c, m] = sum_t x[n, p * stride + t * dilation, c] * weights[t, c, m]`` over the taps
    ``t`` of the kernel, with the input zero-padded by ``spec.padding``. With ``spec.depthwise`` of
    ``"slices"`` (the ``"auto"`` choice on CPU, and for small kernels elsewhere; see
    :func:`depthwise_impl`) it is computed as that sum of shifted, strided slices, one fused
    elementwise loop (XLA's CPU backend runs ``feature_group_count = C`` convolutions far slower
    than its dense ones); with ``"conv"`` as a grouped ``lax`` convolution (which
    :func:`jaxcomp.analysis.flops` counts).

    Args:
      x: ``(N, *spatial, C)``.
      weights: ``(*kernel_spatial, C)`` (one filter per channel), or ``(*kernel_spatial, C, M)``
        (``M`` filters per channel, a channel multiplier).
      spec: strides, padding and dilation.

    Returns:
      ``(N, *out_spatial, C)``, or ``(N, *out_spatial, C * M)`` ordered ``(c, m)``.
    """
    multiplier = weights.ndim == x.ndim
    w_all = weights if multiplier else weights[..., None]  # (*K, C, M)
    c, m = w_all.shape[-2:]
    if depthwise_impl(spec, math.prod(w_all.shape[:-2])) == "conv":
        kernel = jnp.reshape(w_all, (*w_all.shape[:-2], 1, c * m))
        return conv(x, kernel, spec, groups=c)
    acc = None
    for taps, piece in window_slices(
        x, w_all.shape[:-2], spec.strides, spec.padding, spec.dilation
    ):
        if multiplier:
            w = jnp.reshape(w_all[taps], (1,) * (x.ndim - 1) + (c, m))
            term = piece[..., None] * w
        else:
            term = piece * jnp.reshape(w_all[taps][:, 0], (1,) * (x.ndim - 1) + (c,))
        acc = term if acc is None else acc + term
    return jnp.reshape(acc, (*acc.shape[: x.ndim - 1], c * m)) if multiplier else acc


def grouped_conv(x: jax.Array, kernel: jax.Array, spec: ConvSpec, groups: int) -> jax.Array:
    """A grouped convolution as ``groups`` dense convolutions on channel slices, concatenated.

    Equal to :func:`conv` with ``groups`` (input channels and output channels split into
    ``groups`` consecutive blocks), but runs on XLA's fast dense convolution.

    Args:
      x: ``(N, *spatial, C)``.
      kernel: ``(*spatial, C // groups, O)``, ``O`` divisible by ``groups``.
      spec: strides, padding, dilation and precision.
      groups: the number of groups.

    Returns:
      ``(N, *out_spatial, O)``.
    """
    if groups == 1:
        return conv(x, kernel, spec)
    cg, og = x.shape[-1] // groups, kernel.shape[-1] // groups
    outs = [
        conv(x[..., g * cg : (g + 1) * cg], kernel[..., g * og : (g + 1) * og], spec)
        for g in range(groups)
    ]
    return jnp.concatenate(outs, axis=-1)


def _explicit_padding(padding: Any, in_shape, kernel_size, strides, dilation):
    """Explicit ``(low, high)`` pairs for a canonical padding, or None for a non-zero mode."""
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID", "SAME_LOWER"):
            return None  # CIRCULAR, REFLECT, CAUSAL: not zero padding
        window = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation)]
        return tuple(tuple(p) for p in lax.padtype_to_pads(in_shape, window, strides, padding))
    return tuple(padding) if len(padding) == len(kernel_size) else None


def conv_spec(layer: Any, x: jax.Array, *, depthwise: str = "auto") -> ConvSpec | None:
    """The :class:`ConvSpec` of a ``Conv`` layer for the (batch-flattened) input ``x``.

    Args:
      layer: a ``Conv`` module (linen or NNX) or its :class:`jaxcomp.adapt.LayerConfig`.
      x: the input, ``(N, *spatial, C)``.
      depthwise: the spec's ``depthwise`` field.

    Returns:
      The spec, or None when the layer's configuration is outside the fast path (non-zero padding
      modes, grouped convolutions, input dilation, a mask, unshared weights, a custom
      convolution).
    """
    cfg = _config(layer, "conv_spec")
    n = len(cfg.kernel_size)
    if (
        cfg.kind != CONV
        or cfg.groups != 1
        or cfg.input_dilation != (1,) * n
        or cfg.mask is not None
        or not cfg.default_product
    ):
        return None
    padding = _explicit_padding(cfg.padding, x.shape[1:-1], cfg.kernel_size, cfg.strides,
                                cfg.kernel_dilation)  # fmt: skip
    if padding is None:
        return None
    return ConvSpec(cfg.strides, padding, cfg.kernel_dilation, cfg.precision, depthwise)


def _run_dense(layer: Layer, kernel: jax.Array) -> jax.Array:
    """Runs the module's own code with the rebuilt dense kernel (the always-correct fallback)."""
    return layer.run({**layer.params, "kernel": kernel}, *layer.args, **layer.kwargs)


def _cast(node: Any, dtype: Any) -> Any:
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, node
    )


def _dtype(cfg: LayerConfig, x: jax.Array, node: Any, bias: Any) -> Any:
    if cfg.dtype is not None:
        return cfg.dtype
    floats = [a for a in jax.tree.leaves((node, bias)) if jnp.issubdtype(a.dtype, jnp.floating)]
    return jnp.result_type(x, *floats)


def _add_bias(y: jax.Array, bias: Any) -> jax.Array:
    if bias is None:
        return y
    return y + jnp.reshape(bias, (1,) * (y.ndim - bias.ndim) + bias.shape)


def _promote(layer: Layer, cfg: LayerConfig, node: Any, x: jax.Array) -> tuple[Any, jax.Array, Any]:
    """The node, the input and the bias (or None) in the layer's computation dtype."""
    bias = layer.params.get("bias") if cfg.use_bias else None
    dtype = _dtype(cfg, x, node, bias)
    return _cast(node, dtype), x.astype(dtype), None if bias is None else bias.astype(dtype)


def _run_conv(layer: Layer, cfg: LayerConfig, node: Any, x: jax.Array, impl: str) -> Any:
    nb = x.ndim - (len(cfg.kernel_size) + 1)
    batch = x.shape[:nb]
    xf = jnp.reshape(x, (-1, *x.shape[nb:]))
    spec = conv_spec(cfg, xf, depthwise=impl)
    if spec is None:
        return PASS
    node, xf, bias = _promote(layer, cfg, node, xf)
    y = _add_bias(node.conv(xf, spec), bias)
    return jnp.reshape(y, (*batch, *y.shape[1:]))


def _run_matmul(layer: Layer, cfg: LayerConfig, node: Any, x: jax.Array) -> Any:
    if not cfg.default_product:
        return PASS  # a custom product (quantized, sharded): the layer's own code runs it
    node, x, bias = _promote(layer, cfg, node, x)
    return _add_bias(node.matmul(x, cfg.precision), bias)


_IMPLS = ("auto", "slices", "conv")


def factorized_handler(*, depthwise: str = "auto") -> Callable[[Layer], Any]:
    """The :func:`jaxcomp.adapt.intercept` handler that runs factored kernels.

    The handler passes (:data:`jaxcomp.adapt.PASS`) on every layer whose ``kernel`` is a plain
    array, so it composes with other handlers.

    Args:
      depthwise: how depthwise convolutions run (see :class:`ConvSpec`): ``"auto"``,
        ``"slices"`` or ``"conv"``.

    Returns:
      ``handler(layer)``: the layer's output computed from its factors, or ``PASS``.

    Raises:
      ValueError: ``depthwise`` is not one of the three.
    """
    if depthwise not in _IMPLS:
        raise ValueError(
            f"factorized_handler: depthwise must be one of {_IMPLS}, got {depthwise!r}"
        )

    def handler(layer: Layer) -> Any:
        node = layer.params.get("kernel")
        if not isinstance(node, FactoredKernel):
            return PASS
        kids, treedef = children(node)  # factors that are nodes themselves (quantized) run dense
        node = treedef.unflatten([to_dense(k) for k in kids])
        out: Any = PASS
        cfg = layer.config
        if cfg is not None and len(layer.args) == 1 and not layer.kwargs:
            x = layer.args[0]
            if cfg.kind == DENSE and hasattr(node, "matmul"):
                out = _run_matmul(layer, cfg, node, x)
            elif cfg.kind == CONV and hasattr(node, "conv"):
                out = _run_conv(layer, cfg, node, x, depthwise)
        if out is PASS:
            out = _run_dense(layer, node.to_dense())
        return out

    return handler


def run_factorized(
    apply_fn: Callable[..., Any],
    *,
    depthwise: str = "auto",
    handlers: Sequence[Callable[[Layer], Any]] = (),
) -> Callable[..., Any]:
    """Wraps an unchanged model's ``apply`` so that factorized layers run as their factors.

    Args:
      apply_fn: ``model.apply`` of a ``flax.linen`` model, or the
        :class:`jaxcomp.adapt.NNXApply` of an NNX one (:func:`jaxcomp.adapt.functional`).
      depthwise: how depthwise convolutions (CP, monochromatic, separable bases) run:
        ``"auto"`` (shifted slices on CPU and for small kernels elsewhere, grouped convolutions
        for larger kernels off the CPU; :func:`depthwise_impl`), ``"slices"`` or
        ``"conv"`` (which :func:`jaxcomp.analysis.flops` counts).
      handlers: further :func:`jaxcomp.adapt.intercept` handlers, tried after this one (for
        instance activation quantizers).

    Returns:
      A function with the signature of ``apply_fn`` that accepts params in which some ``kernel``
      leaves are factored kernels (``transform.finalize`` of a :mod:`jaxcomp.lowrank` transform);
      jit-able like ``apply_fn``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import linen as nn
        >>> from jaxcomp import lowrank
        >>> model = nn.Dense(4)
        >>> v = model.init(jax.random.key(0), jnp.ones((1, 6)))
        >>> t = lowrank.svd(rank=4)
        >>> c, s = t.init(v["params"])
        >>> fast = run_factorized(model.apply)
        >>> y = fast({"params": t.finalize(c, s)}, jnp.ones((2, 6)))
        >>> bool(jnp.allclose(y, model.apply(v, jnp.ones((2, 6))), atol=1e-5))
        True
    """
    return intercept(apply_fn, [factorized_handler(depthwise=depthwise), *handlers])

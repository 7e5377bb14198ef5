"""One view of a Dense or Conv layer's configuration, for linen and NNX modules alike.

Handlers that compute a layer's output themselves (from factors, int8 codes, quantized inputs)
need the layer's geometry: its features, strides, padding, dilations, feature groups, whether it
has a bias, its precision, and whether its product is the default ``lax`` one. ``flax.linen``
(``nn.Dense``, ``nn.Conv``) and ``flax.nnx`` (``nnx.Linear``, ``nnx.Conv``) spell these
differently (``dot_general=None`` against ``dot_general=lax.dot_general``, ``features`` against
``out_features``). :func:`layer_config` reads either into one :class:`LayerConfig`, so that each
handler is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

from flax import linen as nn
from flax import nnx
from flax.linen.linear import canonicalize_padding
from jax import lax

__all__ = ["LayerConfig", "layer_config"]

DENSE = "dense"
CONV = "conv"


class LayerConfig(NamedTuple):
    """The configuration of a Dense (linen ``nn.Dense``, NNX ``nnx.Linear``) or Conv layer.

    Attributes:
      kind: ``"dense"`` or ``"conv"``.
      features: the number of output features.
      kernel_size: the convolution window, one int per spatial axis (``()`` for Dense).
      strides: one stride per spatial axis (``()`` for Dense).
      padding: ``"SAME"``, ``"VALID"``, ``"CIRCULAR"``, ``"REFLECT"``, ``"CAUSAL"`` or one
        explicit ``(low, high)`` pair per spatial axis (``"VALID"`` for Dense).
      input_dilation: one input (lhs) dilation per spatial axis.
      kernel_dilation: one kernel (rhs) dilation per spatial axis.
      groups: the feature group count (1 for Dense).
      use_bias: whether the layer adds a bias.
      mask: a Conv's weight mask, or None.
      precision: the ``lax`` precision (None for the default).
      dtype: the computation dtype (None: inferred from the operands).
      default_product: True when the layer's product is the plain ``lax.dot_general`` or
        ``lax.conv_general_dilated`` with shared weights; False for a custom ``dot_general``,
        ``conv_general_dilated`` (quantized, sharded products) or an unshared-weights
        convolution, which an adapter should leave to the layer's own code.
    """

    kind: str
    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str | tuple[tuple[int, int], ...]
    input_dilation: tuple[int, ...]
    kernel_dilation: tuple[int, ...]
    groups: int
    use_bias: bool
    mask: Any
    precision: Any
    dtype: Any
    default_product: bool

    @property
    def ndim(self) -> int:
        """The rank of one example's input: 1 for Dense, the spatial rank plus one for Conv."""
        return len(self.kernel_size) + 1 if self.kind == CONV else 1


def _tuple(x: int | Sequence[int] | None, n: int) -> tuple[int, ...]:
    if x is None:
        return (1,) * n
    if isinstance(x, int):
        return (x,) * n
    return tuple(int(v) for v in x)


def _padding(padding: Any, n: int) -> str | tuple[tuple[int, int], ...]:
    p = canonicalize_padding(padding, n)
    if isinstance(p, str):
        return p.upper()
    return tuple((int(lo), int(hi)) for lo, hi in p)


def _conv(m: Any, features: int, default_product: bool) -> LayerConfig:
    ks = m.kernel_size
    ks = (ks,) if isinstance(ks, int) else tuple(int(k) for k in ks)
    n = len(ks)
    return LayerConfig(
        CONV, int(features), ks, _tuple(m.strides, n), _padding(m.padding, n),
        _tuple(m.input_dilation, n), _tuple(m.kernel_dilation, n), int(m.feature_group_count),
        bool(m.use_bias), m.mask, m.precision, m.dtype, default_product,
    )  # fmt: skip


def _dense(m: Any, features: int, default_product: bool) -> LayerConfig:
    return LayerConfig(DENSE, int(features), (), (), "VALID", (), (), 1, bool(m.use_bias), None,
                       m.precision, m.dtype, default_product)  # fmt: skip


def layer_config(module: Any) -> LayerConfig | None:
    """The :class:`LayerConfig` of a Dense or Conv module, linen or NNX; None for other kinds.

    The classes are matched exactly (``nn.Dense``, ``nnx.Linear``, ``nn.Conv``, ``nnx.Conv``): a
    subclass may compute something else in its ``__call__``, and linen's ``ConvLocal`` and the
    transposed convolutions are other layers.

    Args:
      module: a linen module (bound or not) or an NNX module.

    Returns:
      The configuration, or None when ``module`` is neither kind.

    Examples:
        >>> from flax import linen as nn, nnx
        >>> a = layer_config(nn.Conv(8, (3, 3), strides=2))
        >>> b = layer_config(nnx.eval_shape(  # abstract weights: the layer's settings are enough
        ...     lambda: nnx.Conv(4, 8, (3, 3), strides=2, rngs=nnx.Rngs(0))))
        >>> a.kind, a.features, a.strides, a.padding == b.padding, a.strides == b.strides
        ('conv', 8, (2, 2), True, True)
    """
    if isinstance(module, nnx.Module):
        base = getattr(type(module), "_jaxcomp_base", type(module))
        if base is nnx.Linear:
            default = (
                module.dot_general is lax.dot_general and module.preferred_element_type is None
            )
            return _dense(module, module.out_features, default)
        if base is nnx.Conv:
            default = (
                module.conv_general_dilated is lax.conv_general_dilated
                and module.preferred_element_type is None
            )
            return _conv(module, module.out_features, default)
        return None
    if type(module) is nn.Dense:
        default = module.dot_general is None and module.dot_general_cls is None
        return _dense(module, module.features, default)
    if type(module) is nn.Conv:
        default = (
            module.conv_general_dilated is None
            and module.conv_general_dilated_cls is None
            and getattr(module, "shared_weights", True)
        )
        return _conv(module, module.features, default)
    return None

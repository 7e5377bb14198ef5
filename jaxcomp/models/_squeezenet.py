"""SqueezeNet 1.0 and 1.1 (Iandola et al.): fire modules and a convolutional classifier.

A fire module (:class:`FireModule`) squeezes its input to few channels with ``1 x 1``
convolutions, then expands them with ``1 x 1`` and ``3 x 3`` convolutions side by side and
concatenates the two: most filters are ``1 x 1`` and the ``3 x 3`` ones see few input channels.

:class:`SqueezeNet` builds the eight fire modules from the paper's metaparameters (section 5):
module ``i`` (0-7) expands to ``e_i = base_e + incr_e * (i // freq)`` channels, ``pct_3x3`` of
them ``3 x 3``, and squeezes to ``squeeze_ratio * e_i``; the defaults (128, 128, 2, 0.5, 0.125)
give the paper's table 1. Version ``"1_0"`` (the paper) has a ``7 x 7``/2 stem with 96 filters
and max pooling after the stem, fire4 and fire8; version ``"1_1"`` (the authors' later release)
a ``3 x 3``/2 stem with 64 filters and the poolings after the stem, fire3 and fire5, for the same
accuracy at 2.4x less computation. The classifier is dropout (50%), a ``1 x 1`` convolution to
the classes, ReLU and global average pooling. Convolutions have biases; there is no batch norm.
The stem is unpadded and the poolings round up (Caffe's, PyTorch's ``ceil_mode=True``), as in
the reference implementation, torchvision's ``squeezenet1_0``/``squeezenet1_1``: at 224x224x3
with 1000 classes both have its parameter counts, 1,248,424 and 1,235,496 (the paper's table 1
lists 1,248,424 weights before compression, the "4.8MB" at 32 bits), and 819M and 349M
mult-adds (torchvision lists 0.82 and 0.35 GFLOPS).

References:
    Iandola, Han, Moskewicz, Ashraf, Dally and Keutzer, "SqueezeNet: AlexNet-level accuracy with
    50x fewer parameters and <0.5MB model size", arXiv:1602.07360, 2016.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._nin import GlobalAvgPoolHead
from jaxcomp.models._nin import NNXGlobalAvgPoolHead
from jaxcomp.models._nin import _check_input_size
from jaxcomp.models._nin import _check_int
from jaxcomp.models._nin import _check_rate
from jaxcomp.models._nin import _check_x
from jaxcomp.models._nin import _pool_ceil

__all__ = ["FireModule", "NNXFireModule", "NNXSqueezeNet", "SqueezeNet"]

_VERSIONS = ("1_0", "1_1")
# per version: stem kernel, default stem filters, fire modules after which to max-pool
_STEM = {"1_0": (7, 96, (2, 6)), "1_1": (3, 64, (1, 3))}
_FIRES = 8


def _conv(features: int, size: int, name: str, **kw) -> nn.Conv:
    return nn.Conv(
        features,
        (size, size),
        kernel_init=nn.initializers.kaiming_normal(),
        name=name,
        **kw,
    )


def _nnx_conv(in_features: int, features: int, size: int, rngs: nnx.Rngs, **kw) -> nnx.Conv:
    return nnx.Conv(
        in_features,
        features,
        (size, size),
        kernel_init=nnx.initializers.kaiming_normal(),
        rngs=rngs,
        **kw,
    )


class FireModule(nn.Module):
    """The fire module: ``1 x 1`` squeeze, then ``1 x 1`` and ``3 x 3`` expand, concatenated.

    ``Conv_0`` (``1 x 1``, ``squeeze`` filters) + ReLU; then, on its output, ``Conv_1``
    (``1 x 1``, ``expand1x1``) + ReLU and ``Conv_2`` (``3 x 3``, ``"SAME"``, ``expand3x3``) +
    ReLU, concatenated in that order: ``expand1x1 + expand3x3`` channels at the input's spatial
    size. All convolutions have biases. The paper asks for ``squeeze`` smaller than
    ``expand1x1 + expand3x3`` (it is not enforced).

    Attributes:
        squeeze: filters of the ``1 x 1`` squeeze layer (``s_1x1``).
        expand1x1: ``1 x 1`` filters of the expand layer (``e_1x1``).
        expand3x3: ``3 x 3`` filters of the expand layer (``e_3x3``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> fire = FireModule(squeeze=2, expand1x1=3, expand3x3=4)
        >>> x = jax.ShapeDtypeStruct((2, 5, 5, 8), jnp.float32)  # shapes only: nothing runs
        >>> variables = jax.eval_shape(fire.init, jax.random.key(0), x)
        >>> jax.eval_shape(fire.apply, variables, x).shape
        (2, 5, 5, 7)

    References:
        Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB
        model size", arXiv:1602.07360, 2016 (section 3.2).
    """

    squeeze: int
    expand1x1: int
    expand3x3: int

    def __post_init__(self) -> None:
        _check_fire(self.squeeze, self.expand1x1, self.expand3x3)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the module (``train`` is accepted for a uniform interface; unused).

        Args:
            x: NHWC activations.
            train: unused.

        Returns:
            ``(batch, h, w, expand1x1 + expand3x3)``.
        """
        del train
        x = nn.relu(_conv(self.squeeze, 1, "Conv_0")(x))
        e1 = nn.relu(_conv(self.expand1x1, 1, "Conv_1")(x))
        e3 = nn.relu(_conv(self.expand3x3, 3, "Conv_2", padding="SAME")(x))
        return jnp.concatenate([e1, e3], axis=-1)


def _check_fire(squeeze: int, expand1x1: int, expand3x3: int) -> None:
    _check_int("squeeze", squeeze)
    _check_int("expand1x1", expand1x1)
    _check_int("expand3x3", expand3x3)


class NNXFireModule(nnx.Module):
    """:class:`FireModule` as a Flax NNX module, with the same submodule names.

    Args:
        in_features: input channels.
        squeeze: filters of the ``1 x 1`` squeeze layer.
        expand1x1: ``1 x 1`` filters of the expand layer.
        expand3x3: ``3 x 3`` filters of the expand layer.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> x = jax.ShapeDtypeStruct((2, 5, 5, 8), jnp.float32)  # shapes only: nothing runs
        >>> fire = lambda x: NNXFireModule(8, 2, 3, 4, rngs=nnx.Rngs(0))(x)
        >>> jax.eval_shape(fire, x).shape
        (2, 5, 5, 7)
    """

    def __init__(
        self, in_features: int, squeeze: int, expand1x1: int, expand3x3: int, *, rngs: nnx.Rngs
    ) -> None:
        _check_int("in_features", in_features)
        _check_fire(squeeze, expand1x1, expand3x3)
        self.Conv_0 = _nnx_conv(in_features, squeeze, 1, rngs)
        self.Conv_1 = _nnx_conv(squeeze, expand1x1, 1, rngs)
        self.Conv_2 = _nnx_conv(squeeze, expand3x3, 3, rngs, padding="SAME")

    def __call__(self, x: jax.Array) -> jax.Array:
        """The concatenated expand outputs, ``(batch, h, w, expand1x1 + expand3x3)``."""
        x = nnx.relu(self.Conv_0(x))
        return jnp.concatenate([nnx.relu(self.Conv_1(x)), nnx.relu(self.Conv_2(x))], axis=-1)


def _fire_widths(
    base_e: int, incr_e: int, freq: int, pct_3x3: float, squeeze_ratio: float
) -> list[tuple[int, int, int]]:
    """``(squeeze, expand1x1, expand3x3)`` of the eight fire modules, from the metaparameters."""
    widths = []
    for index in range(_FIRES):
        expand = base_e + incr_e * (index // freq)
        e3, squeeze = pct_3x3 * expand, squeeze_ratio * expand
        if not (float(e3).is_integer() and 1 <= e3 < expand):
            raise ValueError(
                f"pct_3x3 * e_{index} (the 3x3 expand filters of fire module {index}, whose "
                f"expand width is e_{index} = {expand}) must be an integer in [1, {expand - 1}], "
                f"got {e3} (pct_3x3={pct_3x3!r})"
            )
        if not (float(squeeze).is_integer() and squeeze >= 1):
            raise ValueError(
                f"squeeze_ratio * e_{index} (the squeeze filters of fire module {index}, whose "
                f"expand width is e_{index} = {expand}) must be an integer >= 1, got {squeeze} "
                f"(squeeze_ratio={squeeze_ratio!r})"
            )
        widths.append((int(squeeze), expand - int(e3), int(e3)))
    return widths


def _check_squeezenet(
    num_classes: int,
    version: str,
    stem: int | None,
    base_e: int,
    incr_e: int,
    freq: int,
    pct_3x3: float,
    squeeze_ratio: float,
    dropout: float,
) -> list[tuple[int, int, int]]:
    _check_int("num_classes", num_classes)
    if version not in _VERSIONS:
        raise ValueError(f"version must be one of {_VERSIONS}, got {version!r}")
    if stem is not None:
        _check_int("stem", stem)
    _check_int("base_e", base_e)
    _check_int("incr_e", incr_e, 0)
    _check_int("freq", freq)
    for name, value, high in (("pct_3x3", pct_3x3, ")"), ("squeeze_ratio", squeeze_ratio, "]")):
        number = not isinstance(value, bool) and isinstance(value, int | float)
        if not number or not 0 < value <= 1 or (high == ")" and value == 1):
            raise ValueError(f"{name} must be a number in (0, 1{high}, got {value!r}")
    _check_rate("dropout", dropout)
    return _fire_widths(base_e, incr_e, freq, pct_3x3, squeeze_ratio)


def _windows(version: str) -> list[tuple[int, int, int, bool]]:
    """The stem convolution (unpadded, stride 2) and the three poolings (3x3/2, rounding up)."""
    return [(_STEM[version][0], 2, 0, False)] + [(3, 2, 0, True)] * 3


class SqueezeNet(nn.Module):
    """SqueezeNet 1.0 or 1.1 (1,248,424 / 1,235,496 params at 224x224x3 with 1000 classes).

    ``Conv_0`` (the stem, unpadded, stride 2) + ReLU, 3x3/2 max pooling, ``FireModule_0`` ...
    ``FireModule_7`` with two more 3x3/2 max poolings among them (placed by ``version``), then
    ``GlobalAvgPoolHead_0`` (dropout, ``1 x 1`` convolution to ``num_classes``, ReLU, average).
    The variables are ``params`` only.

    Attributes:
        num_classes: number of output logits.
        version: ``"1_0"`` (the paper: ``7 x 7`` stem, poolings after fire4 and fire8) or
            ``"1_1"`` (``3 x 3`` stem, poolings after fire3 and fire5).
        stem: filters of the stem convolution; ``None`` for the version's (96 or 64).
        base_e: expand channels of the first fire module (128).
        incr_e: expand channels added every ``freq`` fire modules (128).
        freq: fire modules per increment (2).
        pct_3x3: share of the expand channels that are ``3 x 3`` (0.5).
        squeeze_ratio: squeeze channels over expand channels (0.125).
        dropout: drop rate before the classifier (0.5; 0 for none). With ``train=True`` apply
            with ``rngs={"dropout": key}``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> toy = SqueezeNet(stem=2, base_e=4, incr_e=4, squeeze_ratio=0.25)  # a toy size
        >>> x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)  # shapes only: nothing runs
        >>> variables = jax.eval_shape(toy.init, jax.random.key(0), x)
        >>> jax.eval_shape(toy.apply, variables, x).shape
        (2, 1000)

    References:
        Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB
        model size", arXiv:1602.07360, 2016.
    """

    num_classes: int = 1000
    version: str = "1_0"
    stem: int | None = None
    base_e: int = 128
    incr_e: int = 128
    freq: int = 2
    pct_3x3: float = 0.5
    squeeze_ratio: float = 0.125
    dropout: float = 0.5

    def __post_init__(self) -> None:
        self._fires()
        super().__post_init__()

    def _fires(self) -> list[tuple[int, int, int]]:
        return _check_squeezenet(
            self.num_classes,
            self.version,
            self.stem,
            self.base_e,
            self.incr_e,
            self.freq,
            self.pct_3x3,
            self.squeeze_ratio,
            self.dropout,
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``; 224x224x3 for ImageNet (at
                least 21x21 for version 1_0, 17x17 for 1_1, as torchvision).
            train: if True (and ``dropout > 0``), dropout is active.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or is too small for the strided layers.
        """
        _check_x(x, "SqueezeNet", _windows(self.version))
        size, default, pools = _STEM[self.version]
        stem = default if self.stem is None else self.stem
        x = nn.relu(_conv(stem, size, "Conv_0", strides=(2, 2), padding="VALID")(x))
        x = _pool_ceil(x, "max", 3, 2)
        for index, widths in enumerate(self._fires()):
            x = FireModule(*widths, name=f"FireModule_{index}")(x)
            if index in pools:
                x = _pool_ceil(x, "max", 3, 2)
        head = GlobalAvgPoolHead(
            self.num_classes, relu=True, dropout=self.dropout, name="GlobalAvgPoolHead_0"
        )
        return head(x, train=train)


class NNXSqueezeNet(nnx.Module):
    """:class:`SqueezeNet` as a Flax NNX module, with the same params paths.

    Dropout is active in NNX's train mode (the default; ``.eval()`` turns it off) and draws from
    the RNG stream ``"dropout"`` of ``rngs`` (reseed with ``nnx.reseed(model, dropout=key)``); at
    rate 0 no stream is kept.

    Args:
        num_classes: number of output logits.
        version: ``"1_0"`` or ``"1_1"``.
        stem: filters of the stem convolution; ``None`` for the version's.
        base_e: expand channels of the first fire module.
        incr_e: expand channels added every ``freq`` fire modules.
        freq: fire modules per increment.
        pct_3x3: share of the expand channels that are ``3 x 3``.
        squeeze_ratio: squeeze channels over expand channels.
        dropout: drop rate before the classifier.
        input_shape: ``(height, width, channels)`` of one example; it fixes ``Conv_0``'s input
            channels.
        rngs: the ``nnx.Rngs`` that initialize the weights (and feed the dropout).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> x = jax.ShapeDtypeStruct((2, 17, 17, 3), jnp.float32)  # shapes only: nothing runs
        >>> toy = lambda: NNXSqueezeNet(
        ...     10, "1_1", stem=2, base_e=4, incr_e=4, squeeze_ratio=0.25,
        ...     input_shape=(17, 17, 3), rngs=nnx.Rngs(0),
        ... )
        >>> jax.eval_shape(lambda x: toy()(x), x).shape
        (2, 10)
    """

    def __init__(
        self,
        num_classes: int = 1000,
        version: str = "1_0",
        stem: int | None = None,
        base_e: int = 128,
        incr_e: int = 128,
        freq: int = 2,
        pct_3x3: float = 0.5,
        squeeze_ratio: float = 0.125,
        dropout: float = 0.5,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        rngs: nnx.Rngs,
    ) -> None:
        fires = _check_squeezenet(
            num_classes, version, stem, base_e, incr_e, freq, pct_3x3, squeeze_ratio, dropout
        )
        in_features = _check_input_size(input_shape, "SqueezeNet", _windows(version))[-1]
        size, default, self.pools = _STEM[version]
        self.version = version
        stem = default if stem is None else stem
        self.Conv_0 = _nnx_conv(in_features, stem, size, rngs, strides=2, padding="VALID")
        in_features = stem
        for index, widths in enumerate(fires):
            setattr(self, f"FireModule_{index}", NNXFireModule(in_features, *widths, rngs=rngs))
            in_features = widths[1] + widths[2]
        self.GlobalAvgPoolHead_0 = NNXGlobalAvgPoolHead(
            in_features, num_classes, relu=True, dropout=dropout, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_x(x, "SqueezeNet", _windows(self.version))
        x = _pool_ceil(nnx.relu(self.Conv_0(x)), "max", 3, 2)
        for index in range(_FIRES):
            x = getattr(self, f"FireModule_{index}")(x)
            if index in self.pools:
                x = _pool_ceil(x, "max", 3, 2)
        return self.GlobalAvgPoolHead_0(x)

"""MobileNet (v1) of Howard et al. and its depthwise separable convolution.

A depthwise separable convolution factors a ``D_K x D_K`` convolution from ``M`` to ``N`` channels
into a depthwise ``D_K x D_K`` convolution (one filter per input channel, ``feature_group_count =
M``) and a pointwise 1x1 convolution, each followed by batch normalization and ReLU. On a
``D_F x D_F`` output it costs ``D_K * D_K * M * D_F * D_F + M * N * D_F * D_F`` mult-adds instead of
``D_K * D_K * M * N * D_F * D_F`` (the paper's equations 4 and 5).

The network (the paper's table 1): a 3x3 stride-2 convolution with 32 filters, then 13 depthwise
separable layers (64, 128 s2, 128, 256 s2, 256, 512 s2, five of 512, 1024 s2, 1024), global average
pooling and a dense classifier; every convolution is bias-free and followed by batch normalization
and ReLU. The paper's table prints stride 2 for the last depthwise layer, but its output is 7x7
like its input: that layer has stride 1 (as in the authors' TF-slim code and Keras). The width
multiplier ``alpha`` scales every layer's channels to ``int(alpha * channels)`` (Keras's rule);
the resolution multiplier is the input size itself (``models.init(model, key, (160, 160, 3))``).

At 1.0 x 224 with 1000 classes it has 4,231,976 params (bias-free convolutions, batch-norm scales
and offsets, the classifier with bias; the paper's "4.2M" and Keras's trainable count) and
568,740,352 mult-adds (567.7M in the convolutions and 1.0M in the classifier; the paper's "569M").

References:
    Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto and Adam, "MobileNets: efficient
    convolutional neural networks for mobile vision applications", arXiv:1704.04861, 2017.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._lenet import _check_input_shape
from jaxcomp.models._lenet import _check_num_classes

__all__ = ["DepthwiseSeparable", "MobileNet", "NNXDepthwiseSeparable", "NNXMobileNet"]

_BN_MOMENTUM = 0.9
_STEM = 32
# (output channels, stride) of the depthwise separable layers before and after the repeated
# 512-channel layers (five in the paper)
_HEAD = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))
_TAIL = ((1024, 2), (1024, 1))
_REPEATED = 512


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_block(features: int, strides: int) -> None:
    if not _is_int(features) or features < 1:
        raise ValueError(f"features must be an integer >= 1, got {features!r}")
    if strides not in (1, 2) or isinstance(strides, bool):
        raise ValueError(f"strides must be 1 or 2, got {strides!r}")


def _check(num_classes: int, alpha: float, repeats: int) -> None:
    _check_num_classes(num_classes)
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, int | float)
        or not alpha > 0
        or int(_STEM * alpha) < 1
    ):
        raise ValueError(
            f"alpha (the width multiplier) must be a number >= 1/32 (so that the 32-channel stem "
            f"keeps a channel), got {alpha!r}"
        )
    if not _is_int(repeats) or repeats < 0:
        raise ValueError(
            f"repeats (the 512-channel depthwise separable layers) must be an integer >= 0, "
            f"got {repeats!r}"
        )


def _check_x(x: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(f"MobileNet expects NHWC input (batch, h, w, c), got shape {x.shape}")


def _layers(alpha: float, repeats: int) -> list[tuple[int, int]]:
    """``(channels, stride)`` of each depthwise separable layer, scaled by ``alpha``."""
    plan = [*_HEAD, *[(_REPEATED, 1)] * repeats, *_TAIL]
    return [(int(features * alpha), strides) for features, strides in plan]


def _norm(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, name=name)


class DepthwiseSeparable(nn.Module):
    """A 3x3 depthwise convolution, BN, ReLU, then a 1x1 pointwise convolution, BN, ReLU.

    Submodules ``Conv_0`` (the depthwise kernel, shape ``(3, 3, 1, in_channels)``),
    ``BatchNorm_0``, ``Conv_1`` (pointwise, ``(1, 1, in_channels, features)``) and ``BatchNorm_1``;
    both convolutions are bias-free. Mult-adds on an ``h x w`` output: ``9 * M * h * w + M * N *
    h * w`` for ``M`` input and ``N`` output channels.

    Attributes:
        features: output channels ``N`` of the pointwise convolution.
        strides: stride of the depthwise convolution (1, or 2 to halve the spatial size).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> block = DepthwiseSeparable(features=4, strides=2)
        >>> x = jnp.zeros((2, 8, 8, 3))
        >>> variables = jax.eval_shape(block.init, jax.random.key(0), x)
        >>> variables["params"]["Conv_0"]["kernel"].shape
        (3, 3, 1, 3)
        >>> jax.eval_shape(block.apply, variables, x).shape
        (2, 4, 4, 4)

    References:
        Howard et al., "MobileNets: efficient convolutional neural networks for mobile vision
        applications", arXiv:1704.04861, 2017 (section 3.1).
    """

    features: int
    strides: int = 1

    def __post_init__(self) -> None:
        _check_block(self.features, self.strides)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the block.

        Args:
            x: NHWC activations.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            ``(batch, ceil(h / strides), ceil(w / strides), features)``.
        """
        channels = x.shape[-1]
        x = nn.Conv(
            channels,
            (3, 3),
            strides=(self.strides, self.strides),
            padding="SAME",
            feature_group_count=channels,
            use_bias=False,
            kernel_init=nn.initializers.kaiming_normal(),
            name="Conv_0",
        )(x)
        x = nn.relu(_norm(train, "BatchNorm_0")(x))
        x = nn.Conv(
            self.features,
            (1, 1),
            use_bias=False,
            kernel_init=nn.initializers.kaiming_normal(),
            name="Conv_1",
        )(x)
        return nn.relu(_norm(train, "BatchNorm_1")(x))


class MobileNet(nn.Module):
    """MobileNet v1: a 3x3 stride-2 convolution, 13 depthwise separable layers, pooling, dense.

    Submodules ``Conv_0`` and ``BatchNorm_0`` (the stem), ``DepthwiseSeparable_0`` ...
    ``DepthwiseSeparable_{8 + repeats - 1}`` and ``Dense_0``. Batch-norm statistics live in the
    ``batch_stats`` collection (momentum 0.9); with ``train=True`` apply with
    ``mutable=["batch_stats"]``. Any input size works (every convolution is ``"SAME"``-padded);
    224x224 is the paper's, 192, 160 and 128 its reduced resolutions.

    At the defaults with 1000 classes: 4,231,976 params and 568,740,352 mult-adds on 224x224x3
    (the paper: 4.2M and 569M). At ``alpha`` 0.75, 0.5 and 0.25 the paper's table 6 gives 2.6M,
    1.3M and 0.5M params and 325M, 149M and 41M mult-adds.

    Attributes:
        num_classes: number of output logits.
        alpha: the width multiplier; each layer has ``int(alpha * channels)`` channels
            (``alpha >= 1/32``).
        repeats: how many 512-channel stride-1 depthwise separable layers sit at the 14x14
            resolution (5 in the paper; fewer for small test models).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = MobileNet(num_classes=10, alpha=0.125, repeats=1)  # a toy size
        >>> x = jnp.zeros((2, 32, 32, 3))
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
        >>> jax.eval_shape(model.apply, variables, x).shape
        (2, 10)

    References:
        Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto and Adam, "MobileNets: efficient
        convolutional neural networks for mobile vision applications", arXiv:1704.04861, 2017.
    """

    num_classes: int = 1000
    alpha: float = 1.0
    repeats: int = 5

    def __post_init__(self) -> None:
        _check(self.num_classes, self.alpha, self.repeats)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``; 224x224x3 for ImageNet.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``;
                otherwise it uses the running averages.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D.
        """
        _check_x(x)
        x = nn.Conv(
            int(_STEM * self.alpha),
            (3, 3),
            strides=(2, 2),
            padding="SAME",
            use_bias=False,
            kernel_init=nn.initializers.kaiming_normal(),
            name="Conv_0",
        )(x)
        x = nn.relu(_norm(train, "BatchNorm_0")(x))
        for index, (features, strides) in enumerate(_layers(self.alpha, self.repeats)):
            x = DepthwiseSeparable(features, strides, name=f"DepthwiseSeparable_{index}")(
                x, train=train
            )
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="Dense_0")(x)


def _nnx_conv(in_features, features, size, strides, rngs, groups=1):
    return nnx.Conv(
        in_features,
        features,
        (size, size),
        strides=(strides, strides),
        padding="SAME",
        feature_group_count=groups,
        use_bias=False,
        kernel_init=nnx.initializers.kaiming_normal(),
        rngs=rngs,
    )


class NNXDepthwiseSeparable(nnx.Module):
    """:class:`DepthwiseSeparable` as a Flax NNX module, with the same submodule names.

    Args:
        in_features: input channels ``M`` (the depthwise convolution's groups).
        features: output channels ``N``.
        strides: stride of the depthwise convolution (1 or 2).
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> block = nnx.eval_shape(lambda: NNXDepthwiseSeparable(3, 4, rngs=nnx.Rngs(0)))
        >>> block.Conv_0.kernel.shape, block.Conv_1.kernel.shape
        ((3, 3, 1, 3), (1, 1, 3, 4))
    """

    def __init__(
        self, in_features: int, features: int, strides: int = 1, *, rngs: nnx.Rngs
    ) -> None:
        _check_block(features, strides)
        if not _is_int(in_features) or in_features < 1:
            raise ValueError(f"in_features must be an integer >= 1, got {in_features!r}")
        self.Conv_0 = _nnx_conv(in_features, in_features, 3, strides, rngs, groups=in_features)
        self.BatchNorm_0 = nnx.BatchNorm(in_features, momentum=_BN_MOMENTUM, rngs=rngs)
        self.Conv_1 = _nnx_conv(in_features, features, 1, 1, rngs)
        self.BatchNorm_1 = nnx.BatchNorm(features, momentum=_BN_MOMENTUM, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, ceil(h / strides), ceil(w / strides), features)``."""
        x = nnx.relu(self.BatchNorm_0(self.Conv_0(x)))
        return nnx.relu(self.BatchNorm_1(self.Conv_1(x)))


class NNXMobileNet(nnx.Module):
    """:class:`MobileNet` as a Flax NNX module, with the same params and batch-stats paths.

    The module starts in NNX's train mode (``.eval()`` for the running averages).

    Args:
        num_classes: number of output logits.
        alpha: the width multiplier (``alpha >= 1/32``).
        repeats: the number of 512-channel stride-1 layers (5 in the paper).
        input_shape: ``(height, width, channels)`` of one example; it fixes ``Conv_0``'s input
            channels.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: NNXMobileNet(
        ...     num_classes=10, alpha=0.125, repeats=1, input_shape=(32, 32, 3),
        ...     rngs=nnx.Rngs(0)))
        >>> model.DepthwiseSeparable_8.Conv_1.kernel.shape
        (1, 1, 128, 128)
    """

    def __init__(
        self,
        num_classes: int = 1000,
        alpha: float = 1.0,
        repeats: int = 5,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        rngs: nnx.Rngs,
    ) -> None:
        _check(num_classes, alpha, repeats)
        in_features = _check_input_shape(input_shape, 3)[-1]
        stem = int(_STEM * alpha)
        self.Conv_0 = _nnx_conv(in_features, stem, 3, 2, rngs)
        self.BatchNorm_0 = nnx.BatchNorm(stem, momentum=_BN_MOMENTUM, rngs=rngs)
        in_features = stem
        layers = _layers(alpha, repeats)
        for index, (features, strides) in enumerate(layers):
            block = NNXDepthwiseSeparable(in_features, features, strides, rngs=rngs)
            setattr(self, f"DepthwiseSeparable_{index}", block)
            in_features = features
        self.blocks = len(layers)
        self.Dense_0 = nnx.Linear(in_features, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_x(x)
        x = nnx.relu(self.BatchNorm_0(self.Conv_0(x)))
        for index in range(self.blocks):
            x = getattr(self, f"DepthwiseSeparable_{index}")(x)
        x = jnp.mean(x, axis=(1, 2))
        return self.Dense_0(x)

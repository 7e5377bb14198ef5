"""CIFAR ResNets (ResNet-20, -32, -44, -56, -110) of He et al., section 4.2.

A 3x3 convolution with ``width`` filters, then three stages of ``n = (depth - 2) / 6`` basic blocks
(two 3x3 convolutions each, with batch normalization and ReLU) at widths ``width``, ``2 * width``
and ``4 * width`` and spatial sizes 32, 16 and 8, then global average pooling and a dense
classifier: ``6n + 2`` weighted layers in all. The first block of the second and third stage
downsamples with stride 2.

The shortcut where the shape changes is the paper's option A by default: subsample by 2 and pad
the new channels with zeros, which adds no parameters, so ResNet-20 has 269,722 params (the
paper's "0.27M"), ResNet-56 0.85M and ResNet-110 1.7M. Option B (a 1x1 strided convolution with
batch norm) is available as ``shortcut="B"``.

References:
    He, Zhang, Ren and Sun, "Deep residual learning for image recognition", CVPR 2016,
    arXiv:1512.03385.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._lenet import _check_input_shape

__all__ = [
    "BasicBlock",
    "NNXBasicBlock",
    "NNXResNet",
    "ResNet",
    "ResNet20",
    "ResNet56",
    "ResNet110",
]

_BN_MOMENTUM = 0.9
_SHORTCUTS = ("A", "B")


def _check(depth: int, num_classes: int, width: int, shortcut: str) -> None:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"depth must be 6n + 2 for an integer n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), "
            f"got {depth!r}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    if shortcut not in _SHORTCUTS:
        raise ValueError(f"shortcut must be one of {_SHORTCUTS}, got {shortcut!r}")


def _shortcut_a(x: jax.Array, features: int, strides: int) -> jax.Array:
    """Option A: subsample by ``strides`` and zero-pad the new channels on both sides."""
    in_features = x.shape[-1]
    x = x[:, ::strides, ::strides, :]
    if features > in_features:
        pad = features - in_features
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))
    elif features < in_features:
        raise ValueError(f"shortcut 'A' cannot reduce channels ({in_features} -> {features})")
    return x


def _conv3x3(features: int, strides: int, name: str) -> nn.Conv:
    return nn.Conv(
        features,
        (3, 3),
        strides=(strides, strides),
        padding="SAME",
        use_bias=False,
        kernel_init=nn.initializers.kaiming_normal(),
        name=name,
    )


class BasicBlock(nn.Module):
    """The basic residual block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    Attributes:
        features: output channels.
        strides: stride of the first convolution (1, or 2 to halve the spatial size).
        shortcut: ``"A"`` (subsample and zero-pad channels, parameter-free) or ``"B"`` (1x1
            strided convolution and batch norm) when the shape changes; identity otherwise.
    """

    features: int
    strides: int = 1
    shortcut: str = "A"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the block.

        Args:
            x: NHWC activations.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            The block's output, ``(batch, ceil(h / strides), ceil(w / strides), features)``.
        """
        norm = lambda name: nn.BatchNorm(
            use_running_average=not train, momentum=_BN_MOMENTUM, name=name
        )
        y = _conv3x3(self.features, self.strides, "Conv_0")(x)
        y = nn.relu(norm("BatchNorm_0")(y))
        y = _conv3x3(self.features, 1, "Conv_1")(y)
        y = norm("BatchNorm_1")(y)

        in_features = x.shape[-1]
        if self.strides != 1 or in_features != self.features:
            if self.shortcut == "A":
                x = _shortcut_a(x, self.features, self.strides)
            else:
                x = nn.Conv(
                    self.features,
                    (1, 1),
                    strides=(self.strides, self.strides),
                    use_bias=False,
                    kernel_init=nn.initializers.kaiming_normal(),
                    name="Conv_shortcut",
                )(x)
                x = norm("BatchNorm_shortcut")(x)
        return nn.relu(y + x)


class ResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016), ``depth = 6n + 2``.

    Submodules: ``Conv_0`` and ``BatchNorm_0`` (the stem), ``BasicBlock_0`` ...
    ``BasicBlock_{3n-1}`` (each with ``Conv_0``, ``BatchNorm_0``, ``Conv_1``, ``BatchNorm_1``)
    and ``Dense_0``. Batch-norm statistics live in the ``batch_stats`` collection (momentum 0.9);
    with ``train=True`` apply with ``mutable=["batch_stats"]``.

    Attributes:
        depth: number of weighted layers, ``6n + 2`` for an integer ``n >= 1`` (20, 32, 44, 56,
            110, ...).
        num_classes: number of output logits.
        width: channels of the first stage; the stages have ``width``, ``2 * width``,
            ``4 * width``.
        shortcut: ``"A"`` (parameter-free zero padding, the paper's CIFAR choice) or ``"B"``
            (1x1 projection) where a block changes shape.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = ResNet(depth=8, width=1)  # a toy size: a shapes-only example
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
        >>> model.apply(variables, jnp.zeros((2, 32, 32, 3))).shape
        (2, 10)
    """

    depth: int = 20
    num_classes: int = 10
    width: int = 16
    shortcut: str = "A"

    def __post_init__(self) -> None:
        _check(self.depth, self.num_classes, self.width, self.shortcut)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``; 32x32x3 for CIFAR.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``;
                otherwise it uses the running averages.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D.
        """
        if x.ndim != 4:
            raise ValueError(f"ResNet expects NHWC input (batch, h, w, c), got shape {x.shape}")
        blocks_per_stage = (self.depth - 2) // 6
        x = _conv3x3(self.width, 1, "Conv_0")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, name="BatchNorm_0")(
            x
        )
        x = nn.relu(x)
        index = 0
        for stage in range(3):
            features = self.width * 2**stage
            for block in range(blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(features, strides, self.shortcut, name=f"BasicBlock_{index}")(
                    x, train=train
                )
                index += 1
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="Dense_0")(x)


def ResNet20(num_classes: int = 10, **kwargs) -> ResNet:
    """ResNet-20 (0.27M params with option-A shortcuts).

    Args:
        num_classes: number of output logits.
        **kwargs: other :class:`ResNet` attributes (``width``, ``shortcut``).

    Returns:
        ``ResNet(depth=20, ...)``.
    """
    return ResNet(depth=20, num_classes=num_classes, **kwargs)


def ResNet56(num_classes: int = 10, **kwargs) -> ResNet:
    """ResNet-56 (0.85M params with option-A shortcuts).

    Args:
        num_classes: number of output logits.
        **kwargs: other :class:`ResNet` attributes (``width``, ``shortcut``).

    Returns:
        ``ResNet(depth=56, ...)``.
    """
    return ResNet(depth=56, num_classes=num_classes, **kwargs)


def ResNet110(num_classes: int = 10, **kwargs) -> ResNet:
    """ResNet-110 (1.7M params with option-A shortcuts).

    Args:
        num_classes: number of output logits.
        **kwargs: other :class:`ResNet` attributes (``width``, ``shortcut``).

    Returns:
        ``ResNet(depth=110, ...)``.
    """
    return ResNet(depth=110, num_classes=num_classes, **kwargs)


def _nnx_conv(in_features: int, features: int, size: int, strides: int, rngs: nnx.Rngs):
    return nnx.Conv(
        in_features,
        features,
        (size, size),
        strides=(strides, strides),
        padding="SAME",
        use_bias=False,
        kernel_init=nnx.initializers.kaiming_normal(),
        rngs=rngs,
    )


class NNXBasicBlock(nnx.Module):
    """:class:`BasicBlock` as a Flax NNX module, with the same submodule names.

    Args:
        in_features: input channels.
        features: output channels.
        strides: stride of the first convolution.
        shortcut: ``"A"`` or ``"B"`` where the shape changes (see :class:`BasicBlock`).
        rngs: the ``nnx.Rngs`` that initialize the weights.
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        strides: int = 1,
        shortcut: str = "A",
        *,
        rngs: nnx.Rngs,
    ) -> None:
        norm = lambda: nnx.BatchNorm(features, momentum=_BN_MOMENTUM, rngs=rngs)
        self.features, self.strides = features, strides
        self.Conv_0 = _nnx_conv(in_features, features, 3, strides, rngs)
        self.BatchNorm_0 = norm()
        self.Conv_1 = _nnx_conv(features, features, 3, 1, rngs)
        self.BatchNorm_1 = norm()
        self.projection = strides != 1 or in_features != features
        self.option_b = self.projection and shortcut == "B"
        if self.option_b:
            self.Conv_shortcut = _nnx_conv(in_features, features, 1, strides, rngs)
            self.BatchNorm_shortcut = norm()
        elif self.projection and features < in_features:
            raise ValueError(f"shortcut 'A' cannot reduce channels ({in_features} -> {features})")

    def __call__(self, x: jax.Array) -> jax.Array:
        """The block's output, ``(batch, ceil(h / strides), ceil(w / strides), features)``."""
        y = nnx.relu(self.BatchNorm_0(self.Conv_0(x)))
        y = self.BatchNorm_1(self.Conv_1(y))
        if self.option_b:
            x = self.BatchNorm_shortcut(self.Conv_shortcut(x))
        elif self.projection:
            x = _shortcut_a(x, self.features, self.strides)
        return nnx.relu(y + x)


class NNXResNet(nnx.Module):
    """:class:`ResNet` as a Flax NNX module, with the same params and batch-stats paths.

    Submodules ``Conv_0``, ``BatchNorm_0``, ``BasicBlock_0`` ... ``BasicBlock_{3n-1}`` and
    ``Dense_0``, as in the linen model. The module starts in NNX's train mode (``.eval()`` for
    the running averages).

    Args:
        depth: ``6n + 2`` weighted layers.
        num_classes: number of output logits.
        width: channels of the first stage.
        shortcut: ``"A"`` or ``"B"``.
        input_shape: ``(height, width, channels)`` of one example; it fixes ``Conv_0``'s input
            channels.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = NNXResNet(depth=8, width=1, input_shape=(8, 8, 3), rngs=nnx.Rngs(0))
        >>> model(jnp.zeros((2, 8, 8, 3))).shape
        (2, 10)
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        width: int = 16,
        shortcut: str = "A",
        *,
        input_shape: Sequence[int] = (32, 32, 3),
        rngs: nnx.Rngs,
    ) -> None:
        _check(depth, num_classes, width, shortcut)
        in_features = _check_input_shape(input_shape, 3)[-1]
        self.Conv_0 = _nnx_conv(in_features, width, 3, 1, rngs)
        self.BatchNorm_0 = nnx.BatchNorm(width, momentum=_BN_MOMENTUM, rngs=rngs)
        blocks_per_stage = (depth - 2) // 6
        in_features, index = width, 0
        for stage in range(3):
            features = width * 2**stage
            for block in range(blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                layer = NNXBasicBlock(in_features, features, strides, shortcut, rngs=rngs)
                setattr(self, f"BasicBlock_{index}", layer)
                in_features, index = features, index + 1
        self.blocks = index
        self.Dense_0 = nnx.Linear(in_features, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        if x.ndim != 4:
            raise ValueError(f"ResNet expects NHWC input (batch, h, w, c), got shape {x.shape}")
        x = nnx.relu(self.BatchNorm_0(self.Conv_0(x)))
        for index in range(self.blocks):
            x = getattr(self, f"BasicBlock_{index}")(x)
        x = jnp.mean(x, axis=(1, 2))
        return self.Dense_0(x)

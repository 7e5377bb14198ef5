"""DenseNet (Huang, Liu, van der Maaten and Weinberger): dense blocks and transitions, CIFAR.

In a dense block every layer receives the concatenation of the block's input and all earlier
layers' outputs, and adds ``k`` (the growth rate) channels of its own: a block of ``n`` layers on
``m`` channels outputs ``m + n * k``. DenseNet-B layers are bottlenecks, BN-ReLU-Conv1x1(4k) then
BN-ReLU-Conv3x3(k); plain layers are BN-ReLU-Conv3x3(k). Between blocks a transition layer,
BN-ReLU-Conv1x1 to ``floor(theta * m)`` channels (compression ``theta``, 0.5 for DenseNet-C)
then 2x2 average pooling, halves the resolution.

The CIFAR network is a 3x3 convolution (``2k`` channels for DenseNet-BC, 16 otherwise), three
dense blocks with two transitions between them, then BN-ReLU, global average pooling and a dense
classifier; ``depth = 6n + 4`` for bottleneck layers (``n`` layers per block), ``3n + 4``
without. DenseNet-BC with ``depth=100`` and ``k=12`` has 16 layers per block and 769,162 params
at 10 classes (bias-free convolutions, batch-norm scale and offset, a classifier with bias;
the paper's table 2 says 0.8M) and 0.29 G mult-adds on 32x32 inputs.

References:
    Huang, Liu, van der Maaten and Weinberger, "Densely connected convolutional networks",
    CVPR 2017, arXiv:1608.06993.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._lenet import _check_input_shape

__all__ = [
    "DenseBlock",
    "DenseNet",
    "NNXDenseBlock",
    "NNXDenseNet",
    "NNXTransition",
    "Transition",
]

_BN_MOMENTUM = 0.9
_BLOCKS = 3  # dense blocks of the CIFAR network
_BOTTLENECK_WIDTH = 4  # a bottleneck layer's 1x1 convolution has 4k channels


def _is_int(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_block(layers: int, growth_rate: int, bottleneck: bool) -> None:
    if not _is_int(layers, 1):
        raise ValueError(f"layers must be an integer >= 1, got {layers!r}")
    if not _is_int(growth_rate, 1):
        raise ValueError(f"growth_rate must be an integer >= 1, got {growth_rate!r}")
    if not isinstance(bottleneck, bool):
        raise ValueError(f"bottleneck must be True or False, got {bottleneck!r}")


def _check_compression(compression: float) -> None:
    if (
        isinstance(compression, bool)
        or not isinstance(compression, (int, float))
        or not 0 < compression <= 1
    ):
        raise ValueError(f"compression must be a number in (0, 1], got {compression!r}")


def _transition_features(in_features: int, compression: float) -> int:
    features = math.floor(compression * in_features)
    if features < 1:
        raise ValueError(
            f"a transition with compression {compression} of {in_features} channels keeps "
            f"{features}: it must keep at least 1"
        )
    return features


def _check(
    num_classes: int, depth: int, growth_rate: int, bottleneck: bool, compression: float
) -> None:
    if not _is_int(num_classes, 1):
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    _check_block(1, growth_rate, bottleneck)
    step = 6 if bottleneck else 3
    if not _is_int(depth, step + 4) or (depth - 4) % step:
        raise ValueError(
            f"depth must be {step}n + 4 for an integer n >= 1 with bottleneck={bottleneck} "
            f"({', '.join(str(step * n + 4) for n in (1, 2, 16))}, ...), got {depth!r}"
        )
    _check_compression(compression)


def _layers_per_block(depth: int, bottleneck: bool) -> int:
    return (depth - 4) // (6 if bottleneck else 3)


def _stem_features(growth_rate: int, bottleneck: bool) -> int:
    return 2 * growth_rate if bottleneck else 16


def _check_x(x: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(f"DenseNet expects NHWC input (batch, h, w, c), got shape {x.shape}")
    min_size = 2 ** (_BLOCKS - 1)
    if min(x.shape[1], x.shape[2]) < min_size:
        raise ValueError(
            f"DenseNet input of shape {x.shape} is too small: height and width must be >= "
            f"{min_size} (a 2x2 average pool in each of the {_BLOCKS - 1} transitions)"
        )


def _conv(features: int, size: int) -> nn.Conv:
    return nn.Conv(
        features,
        (size, size),
        padding="SAME",
        use_bias=False,
        kernel_init=nn.initializers.kaiming_normal(),
    )


def _norm(train: bool) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM)


class DenseBlock(nn.Module):
    """A dense block: ``layers`` layers, each fed the concatenation of all earlier feature maps.

    Layer ``i`` computes ``BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k)`` (``BatchNorm_{2i}``,
    ``Conv_{2i}``, ``BatchNorm_{2i+1}``, ``Conv_{2i+1}``) with ``bottleneck``, or
    ``BN-ReLU-Conv3x3(k)`` (``BatchNorm_i``, ``Conv_i``) without, and its ``k`` channels are
    concatenated after its input's: the block maps ``m`` channels to ``m + layers * k``, the
    first ``m`` being its input unchanged.

    Attributes:
        layers: number of layers.
        growth_rate: ``k``, the channels each layer adds.
        bottleneck: whether layers have the 1x1 bottleneck (DenseNet-B).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> block = DenseBlock(layers=3, growth_rate=2)
        >>> variables = jax.eval_shape(block.init, jax.random.key(0), jnp.zeros((1, 4, 4, 5)))
        >>> jax.eval_shape(block.apply, variables, jnp.zeros((2, 4, 4, 5))).shape  # 5 + 3 * 2
        (2, 4, 4, 11)

    References:
        Huang, Liu, van der Maaten and Weinberger, "Densely connected convolutional networks",
        CVPR 2017, arXiv:1608.06993.
    """

    layers: int
    growth_rate: int = 12
    bottleneck: bool = True

    def __post_init__(self) -> None:
        _check_block(self.layers, self.growth_rate, self.bottleneck)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the block.

        Args:
            x: NHWC activations with ``m`` channels.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            ``(batch, h, w, m + layers * growth_rate)``.
        """
        for _ in range(self.layers):
            y = nn.relu(_norm(train)(x))
            if self.bottleneck:
                y = _conv(_BOTTLENECK_WIDTH * self.growth_rate, 1)(y)
                y = nn.relu(_norm(train)(y))
            y = _conv(self.growth_rate, 3)(y)
            x = jnp.concatenate([x, y], axis=-1)
        return x


class Transition(nn.Module):
    """A transition layer: BN-ReLU-Conv1x1 to ``floor(compression * m)`` channels, 2x2 average
    pooling (``BatchNorm_0``, ``Conv_0``).

    Attributes:
        compression: ``theta`` in ``(0, 1]``; 0.5 for DenseNet-C, 1 keeps the channels.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> layer = Transition()
        >>> variables = jax.eval_shape(layer.init, jax.random.key(0), jnp.zeros((1, 8, 8, 7)))
        >>> jax.eval_shape(layer.apply, variables, jnp.zeros((2, 8, 8, 7))).shape  # floor(3.5)
        (2, 4, 4, 3)

    References:
        Huang, Liu, van der Maaten and Weinberger, "Densely connected convolutional networks",
        CVPR 2017, arXiv:1608.06993.
    """

    compression: float = 0.5

    def __post_init__(self) -> None:
        _check_compression(self.compression)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the layer.

        Args:
            x: NHWC activations with ``m`` channels.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            ``(batch, h // 2, w // 2, floor(compression * m))``.

        Raises:
            ValueError: if the compression keeps no channel.
        """
        features = _transition_features(x.shape[-1], self.compression)
        x = _conv(features, 1)(nn.relu(_norm(train)(x)))
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
    """The CIFAR DenseNet of Huang et al. (2017); DenseNet-BC at the defaults.

    Submodules ``Conv_0`` (the 3x3 stem), ``DenseBlock_0``, ``Transition_0``, ``DenseBlock_1``,
    ``Transition_1``, ``DenseBlock_2``, ``BatchNorm_0`` (before the pooling) and ``Dense_0``. At
    the defaults (DenseNet-BC, ``depth=100``, ``k=12``) it has 769,162 params at 10 classes
    (the paper's "0.8M") and 0.29 G mult-adds on 32x32 inputs.

    Attributes:
        num_classes: number of output logits.
        depth: ``6n + 4`` with bottleneck layers (``n`` per block; 100 gives 16), ``3n + 4``
            without.
        growth_rate: ``k``, the channels each layer adds (12 for DenseNet-BC-100).
        bottleneck: bottleneck layers (DenseNet-B); the stem then has ``2k`` channels, else 16.
        compression: ``theta`` of the transitions (0.5 for DenseNet-C, 1 for none).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = DenseNet(depth=10, growth_rate=2)  # a toy size: shapes only
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
        >>> jax.eval_shape(model.apply, variables, jnp.zeros((2, 8, 8, 3))).shape
        (2, 10)

    References:
        Huang, Liu, van der Maaten and Weinberger, "Densely connected convolutional networks",
        CVPR 2017, arXiv:1608.06993.
    """

    num_classes: int = 10
    depth: int = 100
    growth_rate: int = 12
    bottleneck: bool = True
    compression: float = 0.5

    def __post_init__(self) -> None:
        _check(self.num_classes, self.depth, self.growth_rate, self.bottleneck, self.compression)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``, at least 4x4 (32x32x3 for
                CIFAR).
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or is smaller than the poolings allow.
        """
        _check_x(x)
        layers = _layers_per_block(self.depth, self.bottleneck)
        x = nn.Conv(
            _stem_features(self.growth_rate, self.bottleneck),
            (3, 3),
            padding="SAME",
            use_bias=False,
            kernel_init=nn.initializers.kaiming_normal(),
            name="Conv_0",
        )(x)
        for index in range(_BLOCKS):
            block = DenseBlock(
                layers, self.growth_rate, self.bottleneck, name=f"DenseBlock_{index}"
            )
            x = block(x, train=train)
            if index < _BLOCKS - 1:
                x = Transition(self.compression, name=f"Transition_{index}")(x, train=train)
        x = nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, name="BatchNorm_0")(
            x
        )
        x = jnp.mean(nn.relu(x), axis=(1, 2))
        return nn.Dense(self.num_classes, name="Dense_0")(x)


def _nnx_conv(in_features: int, features: int, size: int, rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(
        in_features,
        features,
        (size, size),
        padding="SAME",
        use_bias=False,
        kernel_init=nnx.initializers.kaiming_normal(),
        rngs=rngs,
    )


class NNXDenseBlock(nnx.Module):
    """:class:`DenseBlock` as a Flax NNX module, with the same submodule names.

    Args:
        in_features: input channels ``m``.
        layers: number of layers.
        growth_rate: ``k``.
        bottleneck: whether layers have the 1x1 bottleneck.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> block = nnx.eval_shape(lambda: NNXDenseBlock(5, 3, growth_rate=2, rngs=nnx.Rngs(0)))
        >>> nnx.eval_shape(lambda m: m(jnp.zeros((2, 4, 4, 5))), block).shape
        (2, 4, 4, 11)
    """

    def __init__(
        self,
        in_features: int,
        layers: int,
        growth_rate: int = 12,
        bottleneck: bool = True,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        _check_block(layers, growth_rate, bottleneck)
        self.layers, self.bottleneck = layers, bottleneck
        norm = lambda n: nnx.BatchNorm(n, momentum=_BN_MOMENTUM, rngs=rngs)
        index = 0
        for _ in range(layers):
            features = in_features
            if bottleneck:
                inner = _BOTTLENECK_WIDTH * growth_rate
                setattr(self, f"BatchNorm_{index}", norm(features))
                setattr(self, f"Conv_{index}", _nnx_conv(features, inner, 1, rngs))
                features, index = inner, index + 1
            setattr(self, f"BatchNorm_{index}", norm(features))
            setattr(self, f"Conv_{index}", _nnx_conv(features, growth_rate, 3, rngs))
            in_features, index = in_features + growth_rate, index + 1

    def __call__(self, x: jax.Array) -> jax.Array:
        """The block's output, ``(batch, h, w, m + layers * growth_rate)``."""
        index = 0
        for _ in range(self.layers):
            y = x
            for _ in range(2 if self.bottleneck else 1):
                y = nnx.relu(getattr(self, f"BatchNorm_{index}")(y))
                y = getattr(self, f"Conv_{index}")(y)
                index += 1
            x = jnp.concatenate([x, y], axis=-1)
        return x


class NNXTransition(nnx.Module):
    """:class:`Transition` as a Flax NNX module, with the same submodule names.

    Args:
        in_features: input channels ``m``.
        compression: ``theta`` in ``(0, 1]``.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> layer = nnx.eval_shape(lambda: NNXTransition(7, rngs=nnx.Rngs(0)))
        >>> nnx.eval_shape(lambda m: m(jnp.zeros((2, 8, 8, 7))), layer).shape
        (2, 4, 4, 3)
    """

    def __init__(self, in_features: int, compression: float = 0.5, *, rngs: nnx.Rngs) -> None:
        _check_compression(compression)
        self.features = _transition_features(in_features, compression)
        self.BatchNorm_0 = nnx.BatchNorm(in_features, momentum=_BN_MOMENTUM, rngs=rngs)
        self.Conv_0 = _nnx_conv(in_features, self.features, 1, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The layer's output, ``(batch, h // 2, w // 2, floor(compression * m))``."""
        x = self.Conv_0(nnx.relu(self.BatchNorm_0(x)))
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class NNXDenseNet(nnx.Module):
    """:class:`DenseNet` as a Flax NNX module, with the same params and batch-stats paths.

    The module starts in NNX's train mode (``.eval()`` for the running averages).

    Args:
        num_classes: number of output logits.
        depth: ``6n + 4`` with bottleneck layers, ``3n + 4`` without.
        growth_rate: ``k``.
        bottleneck: bottleneck layers (and a ``2k``-channel stem).
        compression: ``theta`` of the transitions.
        input_shape: ``(height, width, channels)`` of one example; it fixes ``Conv_0``'s input
            channels.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.eval_shape(  # shapes only: no initializer runs
        ...     lambda: NNXDenseNet(
        ...         depth=10, growth_rate=2, input_shape=(8, 8, 3), rngs=nnx.Rngs(0)
        ...     )
        ... )
        >>> nnx.eval_shape(lambda m: m(jnp.zeros((2, 8, 8, 3))), model).shape
        (2, 10)
    """

    def __init__(
        self,
        num_classes: int = 10,
        depth: int = 100,
        growth_rate: int = 12,
        bottleneck: bool = True,
        compression: float = 0.5,
        *,
        input_shape: Sequence[int] = (32, 32, 3),
        rngs: nnx.Rngs,
    ) -> None:
        _check(num_classes, depth, growth_rate, bottleneck, compression)
        in_features = _check_input_shape(input_shape, 3)[-1]
        layers = _layers_per_block(depth, bottleneck)
        features = _stem_features(growth_rate, bottleneck)
        self.Conv_0 = _nnx_conv(in_features, features, 3, rngs)
        for index in range(_BLOCKS):
            block = NNXDenseBlock(features, layers, growth_rate, bottleneck, rngs=rngs)
            setattr(self, f"DenseBlock_{index}", block)
            features += layers * growth_rate
            if index < _BLOCKS - 1:
                transition = NNXTransition(features, compression, rngs=rngs)
                setattr(self, f"Transition_{index}", transition)
                features = transition.features
        self.BatchNorm_0 = nnx.BatchNorm(features, momentum=_BN_MOMENTUM, rngs=rngs)
        self.Dense_0 = nnx.Linear(features, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_x(x)
        x = self.Conv_0(x)
        for index in range(_BLOCKS):
            x = getattr(self, f"DenseBlock_{index}")(x)
            if index < _BLOCKS - 1:
                x = getattr(self, f"Transition_{index}")(x)
        x = jnp.mean(nnx.relu(self.BatchNorm_0(x)), axis=(1, 2))
        return self.Dense_0(x)

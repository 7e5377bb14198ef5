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

The ImageNet ResNets of the same paper (table 1) are :class:`ImageNetResNet`: a 7x7 stride-2 stem,
a 3x3 stride-2 max pool, four stages of basic blocks (ResNet-18/34) or :class:`Bottleneck` blocks
(ResNet-50/101/152) with projection shortcuts where the shape changes, global average pooling and
a dense classifier. The bottleneck puts its stride on the 3x3 convolution, as torchvision's
"ResNet v1.5" does (the paper's v1 strides the first 1x1): ResNet-18 has 11,689,512 params and
1.82 G mult-adds, ResNet-50 25,557,032 params and 4.09 G mult-adds (the paper's 3.8 G is v1's).

Every residual block takes ``survival``, the stochastic depth of Huang et al.: in training the
whole residual branch of a block is kept with probability ``survival`` once per mini-batch (the
block is ``relu(shortcut(x))`` otherwise), and at inference the branch is scaled by ``survival``.
The networks decay it linearly from 1 at the input to ``survival`` at the last block;
``survival=1`` (the default) is the plain ResNet.

References:
    He, Zhang, Ren and Sun, "Deep residual learning for image recognition", CVPR 2016,
    arXiv:1512.03385.

    Huang, Sun, Liu, Sedra and Weinberger, "Deep networks with stochastic depth", ECCV 2016,
    arXiv:1603.09382.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._lenet import _check_input_shape

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ImageNetResNet",
    "NNXBasicBlock",
    "NNXBottleneck",
    "NNXImageNetResNet",
    "NNXResNet",
    "ResNet",
    "ResNet20",
    "ResNet56",
    "ResNet110",
]

_BN_MOMENTUM = 0.9
_SHORTCUTS = ("A", "B")


def _check_survival(survival: float) -> None:
    if (
        isinstance(survival, bool)
        or not isinstance(survival, (int, float))
        or not 0.0 <= survival <= 1.0
    ):
        raise ValueError(
            f"survival must be a number in [0, 1] (1 = no stochastic depth), got {survival!r}"
        )


def _survivals(blocks: int, last: float) -> list[float]:
    """The linear decay rule of Huang et al. (eq. 4): block ``l`` of ``L`` keeps its residual
    branch with probability ``1 - l / L * (1 - last)``; all 1.0 when ``last`` is 1."""
    return [1.0 - (index + 1) / blocks * (1.0 - last) for index in range(blocks)]


def _drop_branch(y: jax.Array, survival: float, key: jax.Array | None) -> jax.Array:
    """Stochastic depth on a residual branch ``y``: with a ``key`` (training), the whole branch is
    kept with probability ``survival`` (one Bernoulli draw for the mini-batch); without one
    (inference), it is scaled by ``survival``."""
    if survival == 1.0:
        return y
    if key is None:
        return y * survival
    return y * jax.random.bernoulli(key, survival).astype(y.dtype)


def _check(depth: int, num_classes: int, width: int, shortcut: str, survival: float) -> None:
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
    _check_survival(survival)


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


def _conv(features: int, size: int, strides: int, name: str, padding: Any = "SAME") -> nn.Conv:
    return nn.Conv(
        features,
        (size, size),
        strides=(strides, strides),
        padding=padding,
        use_bias=False,
        kernel_init=nn.initializers.kaiming_normal(),
        name=name,
    )


def _conv3x3(features: int, strides: int, name: str) -> nn.Conv:
    return _conv(features, 3, strides, name)


class BasicBlock(nn.Module):
    """The basic residual block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    With ``survival < 1`` it is a stochastic-depth block (Huang et al., 2016): in training the
    residual branch is kept with probability ``survival``, one Bernoulli draw per mini-batch from
    the ``"dropout"`` RNG (apply with ``rngs={"dropout": key}``), so the block is either the
    plain block or ``relu(shortcut(x))``; at inference the branch is multiplied by ``survival``.
    The branch is computed (and its batch statistics updated) even when it is dropped: the draw
    multiplies it, as jaxcomp's tracers need, where the reference implementation skips it.

    Attributes:
        features: output channels.
        strides: stride of the first convolution (1, or 2 to halve the spatial size).
        shortcut: ``"A"`` (subsample and zero-pad channels, parameter-free) or ``"B"`` (1x1
            strided convolution and batch norm) when the shape changes; identity otherwise.
        survival: probability of keeping the residual branch in training, in ``[0, 1]``; 1 (the
            default) is the deterministic block.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> block = BasicBlock(4, strides=2, survival=0.5)
        >>> variables = jax.eval_shape(block.init, jax.random.key(0), jnp.zeros((1, 8, 8, 2)))
        >>> jax.eval_shape(block.apply, variables, jnp.zeros((3, 8, 8, 2))).shape
        (3, 4, 4, 4)
    """

    features: int
    strides: int = 1
    shortcut: str = "A"
    survival: float = 1.0

    def __post_init__(self) -> None:
        _check_survival(self.survival)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the block.

        Args:
            x: NHWC activations.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``, and
                with ``survival < 1`` the branch is dropped at random (needs the ``"dropout"``
                RNG).

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
        key = self.make_rng("dropout") if train and self.survival < 1.0 else None
        y = _drop_branch(y, self.survival, key)

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

    With ``survival < 1`` it is the stochastic-depth ResNet of Huang et al. (2016): block ``l``
    of ``L = 3n`` keeps its residual branch with probability ``1 - l / L * (1 - survival)`` (the
    linear decay rule, so the last block has ``survival``), and training needs the ``"dropout"``
    RNG. ``ResNet(depth=110, survival=0.5)`` is the paper's CIFAR model (registry name
    ``"resnet110_sd"``, 1,727,962 params at 10 classes as ResNet-110, the paper's "1.7M"). Its
    reference code subsamples the shortcut by 2x2 average pooling and pads the new channels at
    the end; option A here subsamples by striding and pads both sides (no parameters either way).

    Attributes:
        depth: number of weighted layers, ``6n + 2`` for an integer ``n >= 1`` (20, 32, 44, 56,
            110, ...).
        num_classes: number of output logits.
        width: channels of the first stage; the stages have ``width``, ``2 * width``,
            ``4 * width``.
        shortcut: ``"A"`` (parameter-free zero padding, the paper's CIFAR choice) or ``"B"``
            (1x1 projection) where a block changes shape.
        survival: survival probability of the last block's residual branch, in ``[0, 1]``
            (0.5 in Huang et al.); 1, the default, is the plain ResNet.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = ResNet(depth=8, width=1)  # a toy size: a shapes-only example
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
        >>> jax.eval_shape(model.apply, variables, jnp.zeros((2, 32, 32, 3))).shape
        (2, 10)
    """

    depth: int = 20
    num_classes: int = 10
    width: int = 16
    shortcut: str = "A"
    survival: float = 1.0

    def __post_init__(self) -> None:
        _check(self.depth, self.num_classes, self.width, self.shortcut, self.survival)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``; 32x32x3 for CIFAR.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``;
                otherwise it uses the running averages. With ``survival < 1`` training drops
                residual branches at random and needs the ``"dropout"`` RNG.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D.
        """
        if x.ndim != 4:
            raise ValueError(f"ResNet expects NHWC input (batch, h, w, c), got shape {x.shape}")
        blocks_per_stage = (self.depth - 2) // 6
        survivals = _survivals(3 * blocks_per_stage, self.survival)
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
                layer = BasicBlock(
                    features,
                    strides,
                    self.shortcut,
                    survivals[index],
                    name=f"BasicBlock_{index}",
                )
                x = layer(x, train=train)
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


_BLOCKS = ("basic", "bottleneck")
_EXPANSION = 4  # a bottleneck block's output channels per bottleneck channel
_STEM = ((3, 3), (3, 3))  # the 7x7 stride-2 stem convolution's padding, as torchvision's
_POOL = ((1, 1), (1, 1))  # the 3x3 stride-2 max pool's padding


def _check_imagenet(
    num_classes: int, block: str, stage_sizes: Sequence[int], width: int, survival: float
) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if block not in _BLOCKS:
        raise ValueError(f"block must be one of {_BLOCKS}, got {block!r}")
    sizes = tuple(stage_sizes) if isinstance(stage_sizes, Sequence) else None
    if not sizes or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in sizes):
        raise ValueError(
            f"stage_sizes must be a non-empty sequence of integers >= 1 (blocks per stage), "
            f"got {stage_sizes!r}"
        )
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    _check_survival(survival)


def _check_imagenet_x(x: jax.Array, stages: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"ImageNetResNet expects NHWC input (batch, h, w, c), got shape {x.shape}")
    min_size = 4 * 2 ** (stages - 1)
    if min(x.shape[1], x.shape[2]) < min_size:
        raise ValueError(
            f"ImageNetResNet input of shape {x.shape} is too small: height and width must be >= "
            f"{min_size} (stride 4 in the stem, then 2 per stage after the first)"
        )


class Bottleneck(nn.Module):
    """The bottleneck residual block of He et al. (2016), ResNet-50/101/152.

    ``relu(bn(conv1x1(relu(bn(conv3x3(relu(bn(conv1x1(x)))))))) + shortcut(x))``: a 1x1
    convolution down to ``features`` channels, a 3x3 convolution with stride ``strides``, a 1x1
    convolution up to ``4 * features`` channels. The stride is on the 3x3 convolution, as in
    torchvision's ResNet ("v1.5"; the paper's v1 strides the first 1x1, which has the same
    params and fewer mult-adds). Where the shape changes the shortcut is a projection, a 1x1
    strided convolution with batch norm (``Conv_shortcut``, ``BatchNorm_shortcut``); the
    identity otherwise. ``survival`` is stochastic depth as in :class:`BasicBlock`.

    Attributes:
        features: bottleneck channels; the block outputs ``4 * features``.
        strides: stride of the 3x3 convolution (1, or 2 to halve the spatial size).
        survival: probability of keeping the residual branch in training, in ``[0, 1]``; 1 (the
            default) is the deterministic block.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> block = Bottleneck(2, strides=2)
        >>> variables = jax.eval_shape(block.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
        >>> jax.eval_shape(block.apply, variables, jnp.zeros((2, 8, 8, 3))).shape
        (2, 4, 4, 8)

    References:
        He, Zhang, Ren and Sun, "Deep residual learning for image recognition", CVPR 2016,
        arXiv:1512.03385 (figure 5, right).
    """

    features: int
    strides: int = 1
    survival: float = 1.0

    def __post_init__(self) -> None:
        _check_survival(self.survival)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the block.

        Args:
            x: NHWC activations.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``, and
                with ``survival < 1`` the branch is dropped at random (needs the ``"dropout"``
                RNG).

        Returns:
            ``(batch, ceil(h / strides), ceil(w / strides), 4 * features)``.
        """
        norm = lambda name: nn.BatchNorm(
            use_running_average=not train, momentum=_BN_MOMENTUM, name=name
        )
        out_features = _EXPANSION * self.features
        y = nn.relu(norm("BatchNorm_0")(_conv(self.features, 1, 1, "Conv_0")(x)))
        y = nn.relu(norm("BatchNorm_1")(_conv(self.features, 3, self.strides, "Conv_1")(y)))
        y = norm("BatchNorm_2")(_conv(out_features, 1, 1, "Conv_2")(y))
        key = self.make_rng("dropout") if train and self.survival < 1.0 else None
        y = _drop_branch(y, self.survival, key)
        if self.strides != 1 or x.shape[-1] != out_features:
            x = _conv(out_features, 1, self.strides, "Conv_shortcut")(x)
            x = norm("BatchNorm_shortcut")(x)
        return nn.relu(y + x)


class ImageNetResNet(nn.Module):
    """The ImageNet ResNets of He et al. (2016), table 1: ResNet-18/34 (basic blocks) and
    ResNet-50/101/152 (bottleneck blocks).

    A 7x7 stride-2 convolution with ``width`` filters (``Conv_0``, padded by 3 as torchvision
    does), batch norm and ReLU, a 3x3 stride-2 max pool (padded by 1), then one stage per entry
    of ``stage_sizes`` at ``width * 2**stage`` (times 4 out of a bottleneck) channels, the first
    block of every stage after the first with stride 2, then global average pooling and
    ``Dense_0``. Blocks are ``BasicBlock_i`` (with projection shortcuts, option B) or
    ``Bottleneck_i``, numbered through the network. The stride-2 3x3 convolutions pad as
    ``"SAME"`` (0 before, 1 after on even sizes), as in Flax's ImageNet example; torchvision pads
    1 on both sides, so weights ported from it see a grid shifted by one pixel there (counts and
    mult-adds are the same).

    ``ImageNetResNet()`` is ResNet-18 (11,689,512 params at 1000 classes, exactly torchvision's;
    1.82 G mult-adds on 224x224), ``ImageNetResNet(block="bottleneck", stage_sizes=(3, 4, 6,
    3))`` ResNet-50 (25,557,032 params, exactly torchvision's; 4.09 G mult-adds with the stride
    on the 3x3, the paper's table 1 gives 1.8 and 3.8 G for its v1 bottleneck). ``survival < 1``
    adds stochastic depth with the linear decay of :class:`ResNet`.

    Attributes:
        num_classes: number of output logits (1000 for ImageNet).
        block: ``"basic"`` or ``"bottleneck"``.
        stage_sizes: blocks per stage; (2, 2, 2, 2) for ResNet-18, (3, 4, 6, 3) for ResNet-34
            (basic) and ResNet-50 (bottleneck), (3, 4, 23, 3) for ResNet-101.
        width: channels of the stem and the first stage's (bottleneck) width; 64 in the paper.
        survival: survival probability of the last block's residual branch; 1, the default, is
            the plain ResNet.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = ImageNetResNet(stage_sizes=(1, 1), width=2)  # a toy size: shapes only
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
        >>> jax.eval_shape(model.apply, variables, jnp.zeros((2, 8, 8, 3))).shape
        (2, 1000)

    References:
        He, Zhang, Ren and Sun, "Deep residual learning for image recognition", CVPR 2016,
        arXiv:1512.03385.

        Huang, Sun, Liu, Sedra and Weinberger, "Deep networks with stochastic depth", ECCV
        2016, arXiv:1603.09382.
    """

    num_classes: int = 1000
    block: str = "basic"
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width: int = 64
    survival: float = 1.0

    def __post_init__(self) -> None:
        _check_imagenet(self.num_classes, self.block, self.stage_sizes, self.width, self.survival)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``; 224x224x3 for ImageNet, at
                least ``4 * 2 ** (len(stage_sizes) - 1)`` (32) pixels on each side.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``; with
                ``survival < 1`` training also needs the ``"dropout"`` RNG.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or is smaller than the network's downsampling.
        """
        _check_imagenet_x(x, len(self.stage_sizes))
        x = _conv(self.width, 7, 2, "Conv_0", padding=_STEM)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, name="BatchNorm_0")(
            x
        )
        x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=_POOL)
        survivals = _survivals(sum(self.stage_sizes), self.survival)
        index = 0
        for stage, size in enumerate(self.stage_sizes):
            features = self.width * 2**stage
            for block in range(size):
                strides = 2 if stage > 0 and block == 0 else 1
                if self.block == "basic":
                    layer = BasicBlock(
                        features, strides, "B", survivals[index], name=f"BasicBlock_{index}"
                    )
                else:
                    layer = Bottleneck(
                        features, strides, survivals[index], name=f"Bottleneck_{index}"
                    )
                x = layer(x, train=train)
                index += 1
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="Dense_0")(x)


def _nnx_conv(
    in_features: int,
    features: int,
    size: int,
    strides: int,
    rngs: nnx.Rngs,
    padding: Any = "SAME",
) -> nnx.Conv:
    return nnx.Conv(
        in_features,
        features,
        (size, size),
        strides=(strides, strides),
        padding=padding,
        use_bias=False,
        kernel_init=nnx.initializers.kaiming_normal(),
        rngs=rngs,
    )


def _nnx_dropout_stream(survival: float, rngs: nnx.Rngs) -> nnx.RngStream | None:
    """The module's own ``"dropout"`` stream (what ``nnx.reseed(module, dropout=key)`` reseeds),
    or None for a deterministic block (``survival == 1``), which then has no RNG state."""
    if survival == 1.0:
        return None
    return nnx.RngStream(rngs["dropout"](), tag="dropout")


def _nnx_key(module: nnx.Module) -> jax.Array | None:
    """A key from the module's ``"dropout"`` stream in train mode, None in eval mode or for a
    deterministic module."""
    if module.deterministic or module.rngs is None:
        return None
    return module.rngs()


class NNXBasicBlock(nnx.Module):
    """:class:`BasicBlock` as a Flax NNX module, with the same submodule names.

    With ``survival < 1`` the block keeps a ``"dropout"`` RNG stream (attribute ``rngs``, the
    ``rng_state`` collection of ``jaxcomp.adapt.functional``; ``nnx.reseed(block, dropout=key)``
    reseeds it) and drops its branch at random in train mode (``.train()``, NNX's default);
    ``.eval()`` scales the branch by ``survival``.

    Args:
        in_features: input channels.
        features: output channels.
        strides: stride of the first convolution.
        shortcut: ``"A"`` or ``"B"`` where the shape changes (see :class:`BasicBlock`).
        survival: probability of keeping the residual branch in training, in ``[0, 1]``.
        rngs: the ``nnx.Rngs`` that initialize the weights (and seed the ``"dropout"`` stream:
            its ``dropout`` stream if it has one, else its default stream).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> block = nnx.eval_shape(  # shapes only: no initializer runs
        ...     lambda: NNXBasicBlock(2, 4, strides=2, survival=0.5, rngs=nnx.Rngs(0))
        ... )
        >>> nnx.eval_shape(lambda m: m(jnp.zeros((3, 8, 8, 2))), block).shape
        (3, 4, 4, 4)
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        strides: int = 1,
        shortcut: str = "A",
        survival: float = 1.0,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        _check_survival(survival)
        norm = lambda: nnx.BatchNorm(features, momentum=_BN_MOMENTUM, rngs=rngs)
        self.features, self.strides = features, strides
        self.survival, self.deterministic = survival, False
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
        self.rngs = _nnx_dropout_stream(survival, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The block's output, ``(batch, ceil(h / strides), ceil(w / strides), features)``."""
        y = nnx.relu(self.BatchNorm_0(self.Conv_0(x)))
        y = self.BatchNorm_1(self.Conv_1(y))
        y = _drop_branch(y, self.survival, _nnx_key(self))
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
        survival: survival probability of the last block (linear decay, see :class:`ResNet`);
            below 1 every block keeps a ``"dropout"`` RNG stream (see :class:`NNXBasicBlock`).
        input_shape: ``(height, width, channels)`` of one example; it fixes ``Conv_0``'s input
            channels.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.eval_shape(  # shapes only: no initializer runs
        ...     lambda: NNXResNet(depth=8, width=1, input_shape=(8, 8, 3), rngs=nnx.Rngs(0))
        ... )
        >>> nnx.eval_shape(lambda m: m(jnp.zeros((2, 8, 8, 3))), model).shape
        (2, 10)
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        width: int = 16,
        shortcut: str = "A",
        survival: float = 1.0,
        *,
        input_shape: Sequence[int] = (32, 32, 3),
        rngs: nnx.Rngs,
    ) -> None:
        _check(depth, num_classes, width, shortcut, survival)
        in_features = _check_input_shape(input_shape, 3)[-1]
        self.Conv_0 = _nnx_conv(in_features, width, 3, 1, rngs)
        self.BatchNorm_0 = nnx.BatchNorm(width, momentum=_BN_MOMENTUM, rngs=rngs)
        blocks_per_stage = (depth - 2) // 6
        survivals = _survivals(3 * blocks_per_stage, survival)
        in_features, index = width, 0
        for stage in range(3):
            features = width * 2**stage
            for block in range(blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                layer = NNXBasicBlock(
                    in_features, features, strides, shortcut, survivals[index], rngs=rngs
                )
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


class NNXBottleneck(nnx.Module):
    """:class:`Bottleneck` as a Flax NNX module, with the same submodule names.

    With ``survival < 1`` it keeps a ``"dropout"`` RNG stream, as :class:`NNXBasicBlock` does.

    Args:
        in_features: input channels.
        features: bottleneck channels; the block outputs ``4 * features``.
        strides: stride of the 3x3 convolution.
        survival: probability of keeping the residual branch in training, in ``[0, 1]``.
        rngs: the ``nnx.Rngs`` that initialize the weights (and seed the ``"dropout"`` stream).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> block = nnx.eval_shape(lambda: NNXBottleneck(3, 2, strides=2, rngs=nnx.Rngs(0)))
        >>> nnx.eval_shape(lambda m: m(jnp.zeros((2, 8, 8, 3))), block).shape
        (2, 4, 4, 8)
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        strides: int = 1,
        survival: float = 1.0,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        _check_survival(survival)
        norm = lambda n: nnx.BatchNorm(n, momentum=_BN_MOMENTUM, rngs=rngs)
        out_features = _EXPANSION * features
        self.survival, self.deterministic = survival, False
        self.Conv_0 = _nnx_conv(in_features, features, 1, 1, rngs)
        self.BatchNorm_0 = norm(features)
        self.Conv_1 = _nnx_conv(features, features, 3, strides, rngs)
        self.BatchNorm_1 = norm(features)
        self.Conv_2 = _nnx_conv(features, out_features, 1, 1, rngs)
        self.BatchNorm_2 = norm(out_features)
        self.projection = strides != 1 or in_features != out_features
        if self.projection:
            self.Conv_shortcut = _nnx_conv(in_features, out_features, 1, strides, rngs)
            self.BatchNorm_shortcut = norm(out_features)
        self.rngs = _nnx_dropout_stream(survival, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The block's output, ``(batch, ceil(h / strides), ceil(w / strides), 4 * features)``."""
        y = nnx.relu(self.BatchNorm_0(self.Conv_0(x)))
        y = nnx.relu(self.BatchNorm_1(self.Conv_1(y)))
        y = self.BatchNorm_2(self.Conv_2(y))
        y = _drop_branch(y, self.survival, _nnx_key(self))
        if self.projection:
            x = self.BatchNorm_shortcut(self.Conv_shortcut(x))
        return nnx.relu(y + x)


class NNXImageNetResNet(nnx.Module):
    """:class:`ImageNetResNet` as a Flax NNX module, with the same params and batch-stats paths.

    Submodules ``Conv_0``, ``BatchNorm_0``, ``BasicBlock_i`` or ``Bottleneck_i``, ``Dense_0``, as
    in the linen model. The module starts in NNX's train mode (``.eval()`` for the running
    averages and, with ``survival < 1``, the deterministic scaled branches).

    Args:
        num_classes: number of output logits.
        block: ``"basic"`` or ``"bottleneck"``.
        stage_sizes: blocks per stage.
        width: channels of the stem and the first stage's (bottleneck) width.
        survival: survival probability of the last block (linear decay).
        input_shape: ``(height, width, channels)`` of one example; it fixes ``Conv_0``'s input
            channels.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.eval_shape(  # shapes only: no initializer runs
        ...     lambda: NNXImageNetResNet(
        ...         stage_sizes=(1, 1), width=2, input_shape=(8, 8, 3), rngs=nnx.Rngs(0)
        ...     )
        ... )
        >>> nnx.eval_shape(lambda m: m(jnp.zeros((2, 8, 8, 3))), model).shape
        (2, 1000)
    """

    def __init__(
        self,
        num_classes: int = 1000,
        block: str = "basic",
        stage_sizes: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
        survival: float = 1.0,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        rngs: nnx.Rngs,
    ) -> None:
        _check_imagenet(num_classes, block, stage_sizes, width, survival)
        in_features = _check_input_shape(input_shape, 3)[-1]
        self.stages = len(stage_sizes)
        self.Conv_0 = _nnx_conv(in_features, width, 7, 2, rngs, padding=_STEM)
        self.BatchNorm_0 = nnx.BatchNorm(width, momentum=_BN_MOMENTUM, rngs=rngs)
        survivals = _survivals(sum(stage_sizes), survival)
        names: list[str] = []
        in_features = width
        for stage, size in enumerate(stage_sizes):
            features = width * 2**stage
            for index in range(size):
                strides = 2 if stage > 0 and index == 0 else 1
                p = survivals[len(names)]
                if block == "basic":
                    layer = NNXBasicBlock(in_features, features, strides, "B", p, rngs=rngs)
                    name, in_features = f"BasicBlock_{len(names)}", features
                else:
                    layer = NNXBottleneck(in_features, features, strides, p, rngs=rngs)
                    name, in_features = f"Bottleneck_{len(names)}", _EXPANSION * features
                setattr(self, name, layer)
                names.append(name)
        self.names = tuple(names)
        self.Dense_0 = nnx.Linear(in_features, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_imagenet_x(x, self.stages)
        x = nnx.relu(self.BatchNorm_0(self.Conv_0(x)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_POOL)
        for name in self.names:
            x = getattr(self, name)(x)
        x = jnp.mean(x, axis=(1, 2))
        return self.Dense_0(x)

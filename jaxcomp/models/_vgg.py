"""A small VGG-style network for 32x32 images (CIFAR-10 scale) that trains on a CPU.

It keeps VGG's recipe, stacks of 3x3 convolutions separated by 2x2 max pooling with the width
doubling from stage to stage, and adds batch normalization after each convolution (as the
CIFAR variants of VGG do). Instead of VGG's three large fully connected layers it ends with global
average pooling and a single dense classifier (optionally after one small hidden dense layer).

At the defaults (``widths=(64, 128, 256)``, two convolutions per stage, no hidden layer,
10 classes) it has 1,148,874 params: 1,144,512 in the six bias-free conv kernels, 1,792 batch-norm
scales and offsets, and 2,570 in the classifier.

References:
    Simonyan and Zisserman, "Very deep convolutional networks for large-scale image
    recognition", ICLR 2015, arXiv:1409.1556.

    Ioffe and Szegedy, "Batch normalization: accelerating deep network training by reducing
    internal covariate shift", ICML 2015, arXiv:1502.03167.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._lenet import _check_input_shape

__all__ = ["NNXVGGSmall", "VGGSmall"]

_BN_MOMENTUM = 0.9


def _check(num_classes: int, widths: Sequence[int], convs_per_stage: int, hidden: int | None):
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    widths = tuple(widths)
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty sequence of integers >= 1, got {widths}")
    if not isinstance(convs_per_stage, int) or convs_per_stage < 1:
        raise ValueError(f"convs_per_stage must be an integer >= 1, got {convs_per_stage!r}")
    if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
        raise ValueError(f"hidden must be None or an integer >= 1, got {hidden!r}")


def _check_x(x: jax.Array, stages: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"VGGSmall expects NHWC input (batch, h, w, c), got shape {x.shape}")
    min_size = 2**stages
    if min(x.shape[1], x.shape[2]) < min_size:
        raise ValueError(
            f"VGGSmall input of shape {x.shape} is too small: height and width must be >= "
            f"{min_size} (one 2x2 pool per stage, {stages} stages)"
        )


class VGGSmall(nn.Module):
    """Small VGG: per stage, ``convs_per_stage`` x (3x3 conv, BatchNorm, ReLU), then 2x2 max pool.

    After the last stage: global average pooling, an optional ``Dense(hidden)`` ReLU layer, and
    ``Dense(num_classes)``. Convolutions are bias-free (the batch norm that follows has an
    offset). Submodules carry flax's default names: ``Conv_0``, ``BatchNorm_0``, ..., ``Dense_0``.
    Batch-norm statistics live in the ``batch_stats`` collection (momentum 0.9); with
    ``train=True`` apply with ``mutable=["batch_stats"]``.

    Attributes:
        num_classes: number of output logits.
        widths: output channels of each stage; each stage halves the spatial size.
        convs_per_stage: 3x3 convolutions per stage.
        hidden: width of an extra ReLU dense layer before the classifier, or ``None`` for none.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = VGGSmall(widths=(1, 2))  # a toy size: a shapes-only example
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
        >>> model.apply(variables, jnp.zeros((2, 32, 32, 3))).shape
        (2, 10)
    """

    num_classes: int = 10
    widths: Sequence[int] = (64, 128, 256)
    convs_per_stage: int = 2
    hidden: int | None = None

    def __post_init__(self) -> None:
        _check(self.num_classes, self.widths, self.convs_per_stage, self.hidden)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``; height and width must be at
                least ``2 ** len(widths)`` (8 at the defaults).
            train: if True, batch norm uses batch statistics and updates ``batch_stats``;
                otherwise it uses the running averages.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or is too small for the poolings.
        """
        _check_x(x, len(self.widths))
        for width in self.widths:
            for _ in range(self.convs_per_stage):
                x = nn.Conv(
                    width,
                    (3, 3),
                    padding="SAME",
                    use_bias=False,
                    kernel_init=nn.initializers.kaiming_normal(),
                )(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM)(x)
                x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        if self.hidden is not None:
            x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)


class NNXVGGSmall(nnx.Module):
    """:class:`VGGSmall` as a Flax NNX module, with the same params and batch-stats paths.

    Submodules carry the linen names: ``Conv_0``, ``BatchNorm_0``, ``Conv_1``, ... in order, then
    ``Dense_0`` (and ``Dense_1`` with a hidden layer). Batch norm uses momentum 0.9, as in linen;
    the module starts in NNX's train mode (``.eval()`` for the running averages).

    Args:
        num_classes: number of output logits.
        widths: output channels of each stage.
        convs_per_stage: 3x3 convolutions per stage.
        hidden: width of an extra ReLU dense layer before the classifier, or ``None``.
        input_shape: ``(height, width, channels)`` of one example; it fixes ``Conv_0``'s input
            channels.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = NNXVGGSmall(widths=(1, 2), input_shape=(8, 8, 3), rngs=nnx.Rngs(0))
        >>> model(jnp.zeros((2, 8, 8, 3))).shape
        (2, 10)
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = (64, 128, 256),
        convs_per_stage: int = 2,
        hidden: int | None = None,
        *,
        input_shape: Sequence[int] = (32, 32, 3),
        rngs: nnx.Rngs,
    ) -> None:
        _check(num_classes, widths, convs_per_stage, hidden)
        features = _check_input_shape(input_shape, 3)[-1]
        self.stages = len(tuple(widths))
        self.convs_per_stage = convs_per_stage
        index = 0
        for width in widths:
            for _ in range(convs_per_stage):
                conv = nnx.Conv(
                    features,
                    width,
                    (3, 3),
                    padding="SAME",
                    use_bias=False,
                    kernel_init=nnx.initializers.kaiming_normal(),
                    rngs=rngs,
                )
                setattr(self, f"Conv_{index}", conv)
                norm = nnx.BatchNorm(width, momentum=_BN_MOMENTUM, rngs=rngs)
                setattr(self, f"BatchNorm_{index}", norm)
                features, index = width, index + 1
        self.dense = ("Dense_0",) if hidden is None else ("Dense_0", "Dense_1")
        if hidden is not None:
            self.Dense_0 = nnx.Linear(features, hidden, rngs=rngs)
            features = hidden
        setattr(self, self.dense[-1], nnx.Linear(features, num_classes, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_x(x, self.stages)
        index = 0
        for _ in range(self.stages):
            for _ in range(self.convs_per_stage):
                x = getattr(self, f"Conv_{index}")(x)
                x = nnx.relu(getattr(self, f"BatchNorm_{index}")(x))
                index += 1
            x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        if len(self.dense) == 2:
            x = nnx.relu(self.Dense_0(x))
        return getattr(self, self.dense[-1])(x)

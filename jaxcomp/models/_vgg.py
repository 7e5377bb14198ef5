"""A small VGG-style network for 32x32 images (CIFAR-10 scale) that trains on a CPU.

It keeps VGG's recipe, stacks of 3x3 convolutions separated by 2x2 max pooling with the width
doubling from stage to stage, and adds batch normalization after each convolution (as the
CIFAR variants of VGG do). Instead of VGG's three large fully connected layers it ends with global
average pooling and a single dense classifier (optionally after one small hidden dense layer).

At the defaults (``widths=(64, 128, 256)``, two convolutions per stage, no hidden layer,
10 classes) it has 1,148,874 params: 1,144,512 in the six bias-free conv kernels, 1,792 batch-norm
scales and offsets, and 2,570 in the classifier.

:class:`VGG` is the network of the paper itself: stages of ``3 x 3`` convolutions (with biases)
and 2x2 max pooling, then the flattened last feature map into two 4096-wide ReLU layers with 50%
dropout and the classifier. At its defaults (configuration D, 13 convolutions) it is VGG-16:
138,357,544 params at 224x224x3 with 1000 classes (torchvision's ``vgg16`` count, and the paper's
"138M") and 15.47G mult-adds. ``VGG(batch_norm=True, hidden=None)`` is the common CIFAR variant
(as in the widely used pytorch-cifar code): batch norm after each of the 13 convolutions (which
keep their biases) and one dense classifier on the 1x1x512 map of a 32x32 input: 14,728,266
params and 313.2M mult-adds with 10 classes.

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
from jaxcomp.models._nin import _check_input_size
from jaxcomp.models._nin import _check_int
from jaxcomp.models._nin import _check_ints
from jaxcomp.models._nin import _check_rate
from jaxcomp.models._nin import _check_x as _check_x_windows
from jaxcomp.models._nin import _dropout
from jaxcomp.models._nin import _out_size

__all__ = ["NNXVGG", "VGG", "NNXVGGSmall", "VGGSmall"]

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
        >>> x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)  # nothing runs
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
        >>> jax.eval_shape(model.apply, variables, x).shape
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
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)  # shapes only: nothing runs
        >>> toy = lambda: NNXVGGSmall(widths=(1, 2), input_shape=(8, 8, 3), rngs=nnx.Rngs(0))
        >>> jax.eval_shape(lambda x: toy()(x), x).shape
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


_VGG16_WIDTHS = (64, 128, 256, 512, 512)
_VGG16_CONVS = (2, 2, 3, 3, 3)


def _check_vgg(
    num_classes: int,
    widths: Sequence[int],
    convs: Sequence[int],
    hidden: int | None,
    batch_norm: bool,
    dropout: float,
) -> None:
    _check_int("num_classes", num_classes)
    _check_ints("convs", convs, len(_check_ints("widths", widths)))
    if hidden is not None:
        _check_int("hidden", hidden)
    if not isinstance(batch_norm, bool):
        raise ValueError(f"batch_norm must be a bool, got {batch_norm!r}")
    _check_rate("dropout", dropout)


def _vgg_pools(stages: int) -> tuple[tuple[int, int, int, bool], ...]:
    return ((2, 2, 0, False),) * stages


class VGG(nn.Module):
    """VGG of Simonyan and Zisserman; the defaults are VGG-16 (configuration D).

    Per stage, ``convs[i]`` x (``3 x 3`` convolution with bias, ``"SAME"``; optional batch norm;
    ReLU), then 2x2 max pooling. Then the last feature map is flattened (``h / 2**stages x
    w / 2**stages x widths[-1]``: 7x7x512 at 224x224), and with ``hidden`` two ReLU dense layers
    of that width, each followed by dropout, then the classifier. Submodules ``Conv_0`` ...
    ``Conv_12`` (``BatchNorm_i`` alike), ``Dense_0`` ... ``Dense_2`` (``Dense_0`` alone without
    ``hidden``). VGG-16 has 138,357,544 params at 224x224x3 with 1000 classes; the CIFAR variant
    ``VGG(batch_norm=True, hidden=None)`` 14,728,266 at 32x32x3 with 10.

    Attributes:
        num_classes: number of output logits.
        widths: output channels of each stage.
        convs: ``3 x 3`` convolutions per stage (configuration D: 2, 2, 3, 3, 3).
        hidden: width of the two hidden dense layers (4096), or ``None`` for a single dense
            classifier on the flattened features.
        batch_norm: batch norm (momentum 0.9) after each convolution.
        dropout: drop rate after each hidden dense layer (0.5; used only with ``hidden``). With
            ``train=True`` apply with ``rngs={"dropout": key}`` (and ``mutable=["batch_stats"]``
            with ``batch_norm``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> toy = VGG(widths=(1, 2, 2, 2, 2), hidden=4)  # a toy size
        >>> x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)  # shapes only: nothing runs
        >>> variables = jax.eval_shape(toy.init, jax.random.key(0), x)
        >>> jax.eval_shape(toy.apply, variables, x).shape
        (2, 1000)

    References:
        Simonyan and Zisserman, "Very deep convolutional networks for large-scale image
        recognition", ICLR 2015, arXiv:1409.1556.
    """

    num_classes: int = 1000
    widths: Sequence[int] = _VGG16_WIDTHS
    convs: Sequence[int] = _VGG16_CONVS
    hidden: int | None = 4096
    batch_norm: bool = False
    dropout: float = 0.5

    def __post_init__(self) -> None:
        _check_vgg(
            self.num_classes, self.widths, self.convs, self.hidden, self.batch_norm, self.dropout
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``; 224x224x3 for VGG-16, 32x32x3
                for the CIFAR variant (at least ``2 ** len(widths)``).
            train: if True, batch norm uses batch statistics and updates ``batch_stats``, and
                dropout is active.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or is too small for the poolings.
        """
        _check_x_windows(x, "VGG", _vgg_pools(len(self.widths)))
        index = 0
        for width, convs in zip(self.widths, self.convs):
            for _ in range(convs):
                x = nn.Conv(
                    width,
                    (3, 3),
                    padding="SAME",
                    kernel_init=nn.initializers.kaiming_normal(),
                    name=f"Conv_{index}",
                )(x)
                if self.batch_norm:
                    x = nn.BatchNorm(
                        use_running_average=not train,
                        momentum=_BN_MOMENTUM,
                        name=f"BatchNorm_{index}",
                    )(x)
                x, index = nn.relu(x), index + 1
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        layers = 0 if self.hidden is None else 2
        for dense in range(layers):
            x = nn.relu(nn.Dense(self.hidden, name=f"Dense_{dense}")(x))
            x = nn.Dropout(self.dropout, deterministic=not train, name=f"Dropout_{dense}")(x)
        return nn.Dense(self.num_classes, name=f"Dense_{layers}")(x)


class NNXVGG(nnx.Module):
    """:class:`VGG` as a Flax NNX module, with the same params and batch-stats paths.

    The module starts in NNX's train mode (``.eval()`` for inference: running averages, no
    dropout). Dropout draws from the RNG stream ``"dropout"`` of ``rngs`` (reseed with
    ``nnx.reseed(model, dropout=key)``); at rate 0 no stream is kept.

    Args:
        num_classes: number of output logits.
        widths: output channels of each stage.
        convs: ``3 x 3`` convolutions per stage.
        hidden: width of the two hidden dense layers, or ``None``.
        batch_norm: batch norm after each convolution.
        dropout: drop rate after each hidden dense layer.
        input_shape: ``(height, width, channels)`` of one example; it fixes ``Conv_0``'s input
            channels and the first dense layer's input size.
        rngs: the ``nnx.Rngs`` that initialize the weights (and feed the dropout).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)  # shapes only: nothing runs
        >>> toy = lambda: NNXVGG(
        ...     10, (1, 2), (1, 1), hidden=None, input_shape=(8, 8, 3), rngs=nnx.Rngs(0)
        ... )
        >>> jax.eval_shape(lambda x: toy()(x), x).shape
        (2, 10)
    """

    def __init__(
        self,
        num_classes: int = 1000,
        widths: Sequence[int] = _VGG16_WIDTHS,
        convs: Sequence[int] = _VGG16_CONVS,
        hidden: int | None = 4096,
        batch_norm: bool = False,
        dropout: float = 0.5,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        rngs: nnx.Rngs,
    ) -> None:
        _check_vgg(num_classes, widths, convs, hidden, batch_norm, dropout)
        self.pools = _vgg_pools(len(tuple(widths)))
        height, width, features = _check_input_size(input_shape, "VGG", self.pools)
        size = _out_size(height, self.pools) * _out_size(width, self.pools)
        self.convs = tuple(convs)
        self.batch_norm = batch_norm
        index = 0
        for stage_width, stage_convs in zip(widths, convs):
            for _ in range(stage_convs):
                conv = nnx.Conv(
                    features,
                    stage_width,
                    (3, 3),
                    padding="SAME",
                    kernel_init=nnx.initializers.kaiming_normal(),
                    rngs=rngs,
                )
                setattr(self, f"Conv_{index}", conv)
                if batch_norm:
                    norm = nnx.BatchNorm(stage_width, momentum=_BN_MOMENTUM, rngs=rngs)
                    setattr(self, f"BatchNorm_{index}", norm)
                features, index = stage_width, index + 1
        features *= size
        self.layers = 0 if hidden is None else 2
        for dense in range(self.layers):
            setattr(self, f"Dense_{dense}", nnx.Linear(features, hidden, rngs=rngs))
            setattr(self, f"Dropout_{dense}", _dropout(dropout, rngs))
            features = hidden
        setattr(self, f"Dense_{self.layers}", nnx.Linear(features, num_classes, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_x_windows(x, "VGG", self.pools)
        index = 0
        for stage_convs in self.convs:
            for _ in range(stage_convs):
                x = getattr(self, f"Conv_{index}")(x)
                if self.batch_norm:
                    x = getattr(self, f"BatchNorm_{index}")(x)
                x, index = nnx.relu(x), index + 1
            x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        for dense in range(self.layers):
            x = nnx.relu(getattr(self, f"Dense_{dense}")(x))
            x = getattr(self, f"Dropout_{dense}")(x)
        return getattr(self, f"Dense_{self.layers}")(x)

"""Flattened convolutions of Jin et al.: a 3-D filter as a sequence of 1-D filters.

A flattened layer replaces each ``C x k x k`` filter ``f`` of a convolution with the outer product
of three 1-D filters, ``W[y, x, c, f] = lateral[c, f] * vertical[y, f] * horizontal[x, f]``, and
computes it as three convolutions in that order: a lateral 1x1 convolution across the channels
(``C -> F``), then a vertical ``k x 1`` and a horizontal ``1 x k`` convolution, each per channel
(depthwise over the ``F`` maps: one 1-D filter per output filter, as in the authors' Torch modules
``nn.LateralConvolution``, ``nn.VerticalConvolution`` and ``nn.HorizontalConvolution``). One
stage (L, V, H) costs ``C * F + 2 * k * F`` weights and ``(C * F + 2 * k * F) * h * w``
mult-adds instead of ``k * k * C * F`` and ``k * k * C * F * h * w``. The paper cascades ``l``
such stages per layer (``l = 2`` in its experiments, the second one ``F -> F``), adds a bias
after every 1-D convolution and puts no nonlinearity inside the layer.

The network here, :class:`Flattened`, is a small CIFAR convnet built from flattened layers: a full
``k x k`` convolution on the RGB input (flattening three input channels saves almost nothing), then
one flattened layer per further width, each layer followed by ReLU and 2x2 max pooling, then global
average pooling and a dense classifier. At its defaults (widths 96, 128, 256, ``k = 5``, two
stages, 10 classes) it has 146,826 params and 21,989,888 mult-adds on 32x32x3, against 1,136,650
params and 138,447,360 mult-adds for the same network with full 5x5 convolutions (7.7x and 6.3x).
This configuration is ours: the paper's description of its CIFAR-10 model (its section 4) was not
available to us; its figure 2 (two LVH stages, biases after each 1-D convolution, no
nonlinearity inside a layer) and the authors' Torch code are what this module follows.

References:
    Jin, Dundar and Culurciello, "Flattened convolutional neural networks for feedforward
    acceleration", ICLR 2015 workshop, arXiv:1412.5474.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._lenet import _check_input_shape
from jaxcomp.models._lenet import _check_num_classes

__all__ = ["Flattened", "FlattenedConv", "NNXFlattened", "NNXFlattenedConv"]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_layer(features: int, kernel_size: int, stages: int) -> None:
    if not _is_int(features) or features < 1:
        raise ValueError(f"features must be an integer >= 1, got {features!r}")
    if not _is_int(kernel_size) or kernel_size < 1:
        raise ValueError(f"kernel_size must be an integer >= 1, got {kernel_size!r}")
    if not _is_int(stages) or stages < 1:
        raise ValueError(f"stages (LVH stages per layer) must be an integer >= 1, got {stages!r}")


def _one_d_shapes(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return (kernel_size, 1), (1, kernel_size)


class FlattenedConv(nn.Module):
    """Flattened conv: ``stages`` x (lateral 1x1, vertical ``k x 1``, horizontal ``1 x k``).

    The lateral convolution maps the channels to ``features``; the vertical and horizontal ones
    are depthwise (``feature_group_count=features``, one 1-D filter per map) and ``"SAME"``-padded,
    so the spatial size is kept. Submodules ``Conv_0`` (lateral), ``Conv_1`` (vertical, kernel
    ``(k, 1, 1, features)``), ``Conv_2`` (horizontal, ``(1, k, 1, features)``), then ``Conv_3`` ...
    for further stages. With one stage and no lateral or vertical bias it equals the ``k x k``
    convolution with the rank-1 kernel ``lateral[c, f] * vertical[y, f] * horizontal[x, f]``;
    with those biases, that convolution plus a per-map offset (constant away from the borders).

    Attributes:
        features: output channels ``F``.
        kernel_size: the length ``k`` of the vertical and horizontal filters.
        stages: LVH stages in the layer (the paper's ``l``; it used 2).
        use_bias: a bias after every 1-D convolution (the paper's choice).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> layer = FlattenedConv(features=4, kernel_size=3)
        >>> x = jnp.zeros((2, 8, 8, 3))
        >>> variables = jax.eval_shape(layer.init, jax.random.key(0), x)
        >>> [variables["params"][f"Conv_{i}"]["kernel"].shape for i in range(3)]
        [(1, 1, 3, 4), (3, 1, 1, 4), (1, 3, 1, 4)]
        >>> jax.eval_shape(layer.apply, variables, x).shape
        (2, 8, 8, 4)

    References:
        Jin, Dundar and Culurciello, "Flattened convolutional neural networks for feedforward
        acceleration", ICLR 2015 workshop, arXiv:1412.5474 (section 3, figure 2).
    """

    features: int
    kernel_size: int = 3
    stages: int = 1
    use_bias: bool = True

    def __post_init__(self) -> None:
        _check_layer(self.features, self.kernel_size, self.stages)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the layer.

        Args:
            x: NHWC activations.

        Returns:
            ``(batch, h, w, features)``.
        """
        vertical, horizontal = _one_d_shapes(self.kernel_size)
        for stage in range(self.stages):
            x = nn.Conv(self.features, (1, 1), use_bias=self.use_bias, name=f"Conv_{3 * stage}")(x)
            for offset, shape in ((1, vertical), (2, horizontal)):
                x = nn.Conv(
                    self.features,
                    shape,
                    padding="SAME",
                    feature_group_count=self.features,
                    use_bias=self.use_bias,
                    name=f"Conv_{3 * stage + offset}",
                )(x)
        return x


def _check(num_classes: int, widths: Sequence[int], kernel_size: int, stages: int) -> tuple:
    _check_num_classes(num_classes)
    widths = tuple(widths)
    if not widths or any(not _is_int(w) or w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty sequence of integers >= 1, got {widths}")
    _check_layer(widths[0], kernel_size, stages)
    return widths


def _check_x(x: jax.Array, layers: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"Flattened expects NHWC input (batch, h, w, c), got shape {x.shape}")
    if min(x.shape[1], x.shape[2]) < 2**layers:
        raise ValueError(
            f"Flattened input of shape {x.shape} is too small: height and width must be >= "
            f"{2**layers} (one 2x2 max pool per layer, {layers} layers)"
        )


def _pool(x: jax.Array) -> jax.Array:
    return nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))


class Flattened(nn.Module):
    """A CIFAR convnet of flattened layers: a ``k x k`` conv, then flattened layers, each + pool.

    Layer 0 is a full ``k x k`` convolution (``Conv_0``), layer ``i > 0`` a
    :class:`FlattenedConv` (``FlattenedConv_{i-1}``) with ``stages`` LVH stages; each layer is
    followed by ReLU and 2x2 max pooling. Then global average pooling and ``Dense_0``. No batch
    normalization (the paper predates its use), so there are no ``batch_stats`` and ``train`` has
    no effect. At the defaults: 146,826 params and 21,989,888 mult-adds on 32x32x3.

    Attributes:
        num_classes: number of output logits.
        widths: output channels of each layer; each halves the spatial size.
        kernel_size: ``k``, the size of the first convolution and of the 1-D filters.
        stages: LVH stages per flattened layer (the paper's ``l = 2``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = Flattened(widths=(2, 4), kernel_size=3)  # a toy size
        >>> x = jnp.zeros((2, 8, 8, 3))
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
        >>> jax.eval_shape(model.apply, variables, x).shape
        (2, 10)

    References:
        Jin, Dundar and Culurciello, "Flattened convolutional neural networks for feedforward
        acceleration", ICLR 2015 workshop, arXiv:1412.5474.
    """

    num_classes: int = 10
    widths: Sequence[int] = (96, 128, 256)
    kernel_size: int = 5
    stages: int = 2

    def __post_init__(self) -> None:
        _check(self.num_classes, self.widths, self.kernel_size, self.stages)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``; height and width must be at
                least ``2 ** len(widths)`` (8 at the defaults).
            train: unused (no batch norm or dropout); accepted like the other models.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or is too small for the poolings.
        """
        widths = tuple(self.widths)
        _check_x(x, len(widths))
        k = self.kernel_size
        x = _pool(nn.Conv(widths[0], (k, k), padding="SAME", name="Conv_0")(x))
        for index, width in enumerate(widths[1:]):
            layer = FlattenedConv(width, k, self.stages, name=f"FlattenedConv_{index}")
            x = _pool(layer(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="Dense_0")(x)


class NNXFlattenedConv(nnx.Module):
    """:class:`FlattenedConv` as a Flax NNX module, with the same submodule names.

    Args:
        in_features: input channels ``C``.
        features: output channels ``F``.
        kernel_size: the length ``k`` of the 1-D filters.
        stages: LVH stages.
        use_bias: a bias after every 1-D convolution.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> from flax import nnx
        >>> layer = nnx.eval_shape(lambda: NNXFlattenedConv(3, 4, 5, stages=2, rngs=nnx.Rngs(0)))
        >>> layer.Conv_3.kernel.shape, layer.Conv_5.kernel.shape
        ((1, 1, 4, 4), (1, 5, 1, 4))
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        kernel_size: int = 3,
        stages: int = 1,
        use_bias: bool = True,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        _check_layer(features, kernel_size, stages)
        if not _is_int(in_features) or in_features < 1:
            raise ValueError(f"in_features must be an integer >= 1, got {in_features!r}")
        self.convs = 3 * stages
        vertical, horizontal = _one_d_shapes(kernel_size)
        for stage in range(stages):
            c = in_features if stage == 0 else features
            lateral = nnx.Conv(c, features, (1, 1), use_bias=use_bias, rngs=rngs)
            setattr(self, f"Conv_{3 * stage}", lateral)
            for offset, shape in ((1, vertical), (2, horizontal)):
                conv = nnx.Conv(
                    features,
                    features,
                    shape,
                    padding="SAME",
                    feature_group_count=features,
                    use_bias=use_bias,
                    rngs=rngs,
                )
                setattr(self, f"Conv_{3 * stage + offset}", conv)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, h, w, features)``."""
        for index in range(self.convs):
            x = getattr(self, f"Conv_{index}")(x)
        return x


class NNXFlattened(nnx.Module):
    """:class:`Flattened` as a Flax NNX module, with the same params paths.

    Args:
        num_classes: number of output logits.
        widths: output channels of each layer.
        kernel_size: the size of the first convolution and of the 1-D filters.
        stages: LVH stages per flattened layer.
        input_shape: ``(height, width, channels)`` of one example; it fixes ``Conv_0``'s input
            channels.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: NNXFlattened(
        ...     widths=(2, 4), kernel_size=3, input_shape=(8, 8, 3), rngs=nnx.Rngs(0)))
        >>> model.FlattenedConv_0.Conv_4.kernel.shape
        (3, 1, 1, 4)
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = (96, 128, 256),
        kernel_size: int = 5,
        stages: int = 2,
        *,
        input_shape: Sequence[int] = (32, 32, 3),
        rngs: nnx.Rngs,
    ) -> None:
        widths = _check(num_classes, widths, kernel_size, stages)
        in_features = _check_input_shape(input_shape, 3)[-1]
        k = kernel_size
        self.Conv_0 = nnx.Conv(in_features, widths[0], (k, k), padding="SAME", rngs=rngs)
        for index, (c, width) in enumerate(itertools.pairwise(widths)):
            layer = NNXFlattenedConv(c, width, k, stages, rngs=rngs)
            setattr(self, f"FlattenedConv_{index}", layer)
        self.layers = len(widths)
        self.Dense_0 = nnx.Linear(widths[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_x(x, self.layers)
        x = _pool(self.Conv_0(x))
        for index in range(self.layers - 1):
            x = _pool(getattr(self, f"FlattenedConv_{index}")(x))
        x = jnp.mean(x, axis=(1, 2))
        return self.Dense_0(x)

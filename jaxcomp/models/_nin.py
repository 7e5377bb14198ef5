"""Network in Network (Lin, Chen and Yan): mlpconv blocks and a global-average-pooling head.

An mlpconv block is a ``k x k`` convolution followed by ``1 x 1`` convolutions (a small multilayer
perceptron slid over the image), each with a ReLU (:class:`MLPConv`). Instead of fully connected
layers, the last block's ``1 x 1`` convolution has one channel per class and the logits are the
spatial averages of those maps (:class:`GlobalAvgPoolHead`).

:class:`NIN` is the CIFAR-10 network that the authors released with the paper (the Caffe model
zoo's "cifar10_nin", from their cuda-convnet definition): mlpconv 5x5-192, 1x1-160, 1x1-96;
3x3/2 max pooling; dropout 0.5; mlpconv 5x5-192, 1x1-192, 1x1-192; 3x3/2 average pooling;
dropout 0.5; mlpconv 3x3-192, 1x1-192, then the head's 1x1-10 convolution with a ReLU and the
8x8 global average. Every convolution has a bias and no normalization. On 32x32x3 it has
966,986 params (the survey's "about 0.97M") and 222.5M mult-adds (no published figure).

The pooling is Caffe's: windows are laid from the top-left corner and a last, partial window is
kept where the input does not divide evenly (``ceil`` rounding, as PyTorch's ``ceil_mode=True``);
an average counts only the pixels inside the image. :func:`_pool_ceil` does this for the other
Caffe-era networks of the zoo too (GoogLeNet, SqueezeNet).

References:
    Lin, Chen and Yan, "Network in network", ICLR 2014, arXiv:1312.4400.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._lenet import _check_input_shape

__all__ = [
    "NIN",
    "NNXNIN",
    "GlobalAvgPoolHead",
    "MLPConv",
    "NNXGlobalAvgPoolHead",
    "NNXMLPConv",
]

_HEAD_KINDS = ("conv", "dense")
_NIN_WIDTHS = ((192, 160, 96), (192, 192, 192), (192, 192))
_NIN_KERNELS = (5, 5, 3)


# Shared checks and layers of the classic networks (NIN, VGG, GoogLeNet, SqueezeNet).


def _is_int(value: object, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_int(name: str, value: object, minimum: int = 1) -> None:
    if not _is_int(value, minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_ints(name: str, values: object, length: int | None = None) -> tuple[int, ...]:
    """``values`` as a non-empty tuple of integers >= 1 (of ``length`` items when given)."""
    items = tuple(values) if isinstance(values, Sequence) and not isinstance(values, str) else ()
    if not items or any(not _is_int(v) for v in items) or length not in (None, len(items)):
        size = "non-empty" if length is None else f"{length}-item"
        raise ValueError(f"{name} must be a {size} sequence of integers >= 1, got {values!r}")
    return items


def _check_rate(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1) (0 turns it off), got {value!r}")


def _check_padding(padding: object) -> None:
    if padding not in ("SAME", "VALID") and not _is_int(padding, 0):
        raise ValueError(f"padding must be 'SAME', 'VALID' or an integer >= 0, got {padding!r}")


def _padding(padding: str | int) -> str | tuple[tuple[int, int], tuple[int, int]]:
    return padding if isinstance(padding, str) else ((padding, padding), (padding, padding))


def _out_size(size: int, layers: Sequence[tuple[int, int, int, bool]]) -> int:
    """The spatial size after ``(kernel, stride, padding, ceil)`` windows (``ceil``: PyTorch's
    ``ceil_mode=True``, Caffe's pooling); 0 if one of them leaves nothing."""
    for kernel, stride, pad, ceil in layers:
        span = size + 2 * pad - kernel
        if ceil:  # PyTorch's rule: a last window may hang over the edge if it starts inside
            out = -(-span // stride) + 1
            if (out - 1) * stride >= size + pad:
                out -= 1
        else:
            out = span // stride + 1 if span >= 0 else 0
        if out < 1:
            return 0
        size = out
    return size


def _min_size(layers: Sequence[tuple[int, int, int, bool]]) -> int:
    """The smallest height (or width) that every window of ``layers`` fits."""
    size = 1
    while _out_size(size, layers) < 1:
        size += 1
    return size


def _check_x(x: jax.Array, model: str, layers: Sequence[tuple[int, int, int, bool]]) -> None:
    """``x`` is NHWC and large enough for the ``(kernel, stride, padding, ceil)`` windows."""
    if x.ndim != 4:
        raise ValueError(f"{model} expects NHWC input (batch, h, w, c), got shape {x.shape}")
    if min(_out_size(x.shape[1], layers), _out_size(x.shape[2], layers)) < 1:
        raise ValueError(
            f"{model} input of shape {x.shape} is too small: height and width must be >= "
            f"{_min_size(layers)} for its strided convolutions and poolings"
        )


def _check_input_size(
    input_shape: Sequence[int], model: str, layers: Sequence[tuple[int, int, int, bool]]
) -> tuple[int, ...]:
    """An NNX network's ``input_shape`` (height, width, channels), large enough for ``layers``."""
    shape = _check_input_shape(input_shape, 3)
    if min(_out_size(shape[0], layers), _out_size(shape[1], layers)) < 1:
        raise ValueError(
            f"input_shape {shape} is too small for {model}: height and width must be >= "
            f"{_min_size(layers)} for its strided convolutions and poolings"
        )
    return shape


def _pool_ceil(x: jax.Array, kind: str, window: int, stride: int) -> jax.Array:
    """Caffe's (PyTorch's ``ceil_mode=True``) unpadded pooling: ``ceil((n - window) / stride) + 1``
    outputs per axis, the last window cut at the bottom/right edge; an average counts only the
    pixels inside the image."""
    pads = []
    for size in x.shape[1:3]:
        out = _out_size(size, [(window, stride, 0, True)])
        if out < 1:
            raise ValueError(f"a {window}x{window} pooling leaves nothing of input shape {x.shape}")
        pads.append((0, (out - 1) * stride + window - size))
    if kind == "max":
        return nn.max_pool(x, (window, window), strides=(stride, stride), padding=pads)
    return nn.avg_pool(
        x, (window, window), strides=(stride, stride), padding=pads, count_include_pad=False
    )


def _dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout:
    """An NNX dropout layer; at rate 0 it keeps no RNG stream (it is the identity)."""
    return nnx.Dropout(rate, rngs=rngs if rate > 0 else None)


# The blocks.


def _check_mlpconv(features: Sequence[int], kernel_size: int, strides: int, padding) -> None:
    _check_ints("features", features)
    _check_int("kernel_size", kernel_size)
    _check_int("strides", strides)
    _check_padding(padding)


class MLPConv(nn.Module):
    """The mlpconv block: a ``kernel_size`` convolution then ``1 x 1`` convolutions, each + ReLU.

    The ``1 x 1`` convolutions are the "cascaded cross channel parametric pooling" of the paper:
    a multilayer perceptron applied at every position to the ``k x k`` convolution's features.
    Submodules ``Conv_0`` (the ``k x k`` convolution) to ``Conv_{len(features) - 1}``, with biases.

    Attributes:
        features: output channels of the ``k x k`` convolution, then of each ``1 x 1`` one.
        kernel_size: size of the first convolution's square kernel.
        strides: stride of the first convolution.
        padding: of the first convolution: ``"SAME"``, ``"VALID"`` or pixels on every side.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> block = MLPConv((4, 3, 2), kernel_size=5)
        >>> x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)  # shapes only: nothing runs
        >>> variables = jax.eval_shape(block.init, jax.random.key(0), x)
        >>> jax.eval_shape(block.apply, variables, x).shape
        (2, 8, 8, 2)

    References:
        Lin, Chen and Yan, "Network in network", ICLR 2014, arXiv:1312.4400.
    """

    features: Sequence[int]
    kernel_size: int = 3
    strides: int = 1
    padding: str | int = "SAME"

    def __post_init__(self) -> None:
        _check_mlpconv(self.features, self.kernel_size, self.strides, self.padding)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the block (``train`` is accepted for a uniform interface; nothing depends on
        it).

        Args:
            x: NHWC activations.
            train: unused.

        Returns:
            ``(batch, h', w', features[-1])``.
        """
        del train
        for index, width in enumerate(self.features):
            size, strides = (self.kernel_size, self.strides) if index == 0 else (1, 1)
            conv = nn.Conv(
                width,
                (size, size),
                strides=(strides, strides),
                padding=_padding(self.padding) if index == 0 else "VALID",
                kernel_init=nn.initializers.kaiming_normal(),
                name=f"Conv_{index}",
            )
            x = nn.relu(conv(x))
        return x


class NNXMLPConv(nnx.Module):
    """:class:`MLPConv` as a Flax NNX module, with the same submodule names.

    Args:
        in_features: input channels.
        features: output channels of the ``k x k`` convolution, then of each ``1 x 1`` one.
        kernel_size: size of the first convolution's square kernel.
        strides: stride of the first convolution.
        padding: of the first convolution: ``"SAME"``, ``"VALID"`` or pixels on every side.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)  # shapes only: nothing runs
        >>> block = lambda x: NNXMLPConv(3, (4, 2), kernel_size=3, rngs=nnx.Rngs(0))(x)
        >>> jax.eval_shape(block, x).shape
        (2, 8, 8, 2)
    """

    def __init__(
        self,
        in_features: int,
        features: Sequence[int],
        kernel_size: int = 3,
        strides: int = 1,
        padding: str | int = "SAME",
        *,
        rngs: nnx.Rngs,
    ) -> None:
        _check_int("in_features", in_features)
        _check_mlpconv(features, kernel_size, strides, padding)
        self.layers = len(tuple(features))
        for index, width in enumerate(features):
            size, step = (kernel_size, strides) if index == 0 else (1, 1)
            conv = nnx.Conv(
                in_features,
                width,
                (size, size),
                strides=(step, step),
                padding=_padding(padding) if index == 0 else "VALID",
                kernel_init=nnx.initializers.kaiming_normal(),
                rngs=rngs,
            )
            setattr(self, f"Conv_{index}", conv)
            in_features = width

    def __call__(self, x: jax.Array) -> jax.Array:
        """The block's output, ``(batch, h', w', features[-1])``."""
        for index in range(self.layers):
            x = nnx.relu(getattr(self, f"Conv_{index}")(x))
        return x


def _check_head(num_classes: int, kind: str, relu: bool, dropout: float) -> None:
    _check_int("num_classes", num_classes)
    if kind not in _HEAD_KINDS:
        raise ValueError(f"kind must be one of {_HEAD_KINDS}, got {kind!r}")
    if not isinstance(relu, bool) or (relu and kind == "dense"):
        raise ValueError(
            f"relu must be a bool, and True only with kind='conv' (a ReLU between the 1x1 "
            f"convolution and the pooling), got relu={relu!r} with kind={kind!r}"
        )
    _check_rate("dropout", dropout)


class GlobalAvgPoolHead(nn.Module):
    """The classifier of NIN: one ``1 x 1`` convolution to ``num_classes`` maps, averaged.

    With ``kind="conv"`` (NIN, SqueezeNet): ``Conv_0`` (``1 x 1``, ``num_classes`` filters, with
    bias), an optional ReLU, then the spatial mean of each map. With ``kind="dense"`` (GoogLeNet):
    the spatial mean first, then ``Dense_0``; at the same widths both have the same parameters and
    mult-adds per example are ``h * w`` times fewer for ``"dense"``. Dropout at rate ``dropout``
    (active with ``train=True``, RNG stream ``"dropout"``) acts on the classifier's input.

    Attributes:
        num_classes: number of output logits.
        kind: ``"conv"`` (convolve, then average) or ``"dense"`` (average, then a dense layer).
        relu: ``kind="conv"`` only: a ReLU on the class maps before the average (as in NIN's
            released CIFAR-10 model and in SqueezeNet).
        dropout: drop rate on the classifier's input (0 for none).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> head = GlobalAvgPoolHead(num_classes=3)
        >>> x = jax.ShapeDtypeStruct((2, 4, 4, 2), jnp.float32)  # shapes only: nothing runs
        >>> variables = jax.eval_shape(head.init, jax.random.key(0), x)
        >>> jax.eval_shape(head.apply, variables, x).shape
        (2, 3)

    References:
        Lin, Chen and Yan, "Network in network", ICLR 2014, arXiv:1312.4400 (section 3.2).
    """

    num_classes: int
    kind: str = "conv"
    relu: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_head(self.num_classes, self.kind, self.relu, self.dropout)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC features.
            train: if True (and ``dropout > 0``), dropout is active (``rngs={"dropout": key}``).

        Returns:
            ``(batch, num_classes)``.
        """
        if x.ndim != 4:
            raise ValueError(f"GlobalAvgPoolHead expects NHWC input, got shape {x.shape}")
        if self.kind == "dense":
            x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train, name="Dropout_0")(x)
        if self.kind == "dense":
            return nn.Dense(self.num_classes, name="Dense_0")(x)
        x = nn.Conv(self.num_classes, (1, 1), name="Conv_0")(x)
        return jnp.mean(nn.relu(x) if self.relu else x, axis=(1, 2))


class NNXGlobalAvgPoolHead(nnx.Module):
    """:class:`GlobalAvgPoolHead` as a Flax NNX module, with the same submodule names.

    Dropout is active in NNX's train mode (the default; ``.eval()`` turns it off) and draws from
    the RNG stream ``"dropout"`` of ``rngs`` (reseed with ``nnx.reseed(head, dropout=key)``); at
    rate 0 the module keeps no stream.

    Args:
        in_features: input channels.
        num_classes: number of output logits.
        kind: ``"conv"`` or ``"dense"``.
        relu: ``kind="conv"`` only: a ReLU before the average.
        dropout: drop rate on the classifier's input.
        rngs: the ``nnx.Rngs`` that initialize the weights (and feed the dropout).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> x = jax.ShapeDtypeStruct((5, 4, 4, 2), jnp.float32)  # shapes only: nothing runs
        >>> head = lambda x: NNXGlobalAvgPoolHead(2, 3, kind="dense", rngs=nnx.Rngs(0))(x)
        >>> jax.eval_shape(head, x).shape
        (5, 3)
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        kind: str = "conv",
        relu: bool = False,
        dropout: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        _check_int("in_features", in_features)
        _check_head(num_classes, kind, relu, dropout)
        self.kind, self.relu = kind, relu
        self.Dropout_0 = _dropout(dropout, rngs)
        if kind == "dense":
            self.Dense_0 = nnx.Linear(in_features, num_classes, rngs=rngs)
        else:
            self.Conv_0 = nnx.Conv(in_features, num_classes, (1, 1), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits ``(batch, num_classes)`` of NHWC features."""
        if x.ndim != 4:
            raise ValueError(f"GlobalAvgPoolHead expects NHWC input, got shape {x.shape}")
        if self.kind == "dense":
            return self.Dense_0(self.Dropout_0(jnp.mean(x, axis=(1, 2))))
        x = self.Conv_0(self.Dropout_0(x))
        return jnp.mean(nnx.relu(x) if self.relu else x, axis=(1, 2))


# The network.


def _check_nin(
    num_classes: int, widths: Sequence[Sequence[int]], kernel_sizes: Sequence[int], dropout: float
) -> None:
    _check_int("num_classes", num_classes)
    blocks = tuple(widths) if isinstance(widths, Sequence) and not isinstance(widths, str) else ()
    try:
        if not blocks:
            raise ValueError
        for block in blocks:
            _check_ints("widths", block)
    except ValueError:
        raise ValueError(
            f"widths must be a non-empty sequence of non-empty sequences of integers >= 1 (the "
            f"mlpconv blocks' channels), got {widths!r}"
        ) from None
    _check_ints("kernel_sizes", kernel_sizes, len(blocks))
    _check_rate("dropout", dropout)


def _nin_pools(blocks: int) -> tuple[tuple[int, int, int, bool], ...]:
    return ((3, 2, 0, True),) * (blocks - 1)


class NIN(nn.Module):
    """Network in Network for CIFAR-10, as released with the paper (966,986 params on 32x32x3).

    ``len(widths)`` mlpconv blocks; between two blocks a 3x3/2 pooling (max after the first,
    average after the others, Caffe's rounding: see the module docstring) and dropout; after the
    last, the :class:`GlobalAvgPoolHead` (``1 x 1`` convolution to ``num_classes``, ReLU, spatial
    mean). Submodules ``MLPConv_0`` ... and ``GlobalAvgPoolHead_0``; no batch norm, so the
    variables are ``params`` only.

    Attributes:
        num_classes: number of output logits.
        widths: per block, the channels of its ``k x k`` and ``1 x 1`` convolutions.
        kernel_sizes: per block, the size of its first convolution (``"SAME"`` padding).
        dropout: drop rate after each inner pooling (0.5 in the paper; 0 for none). With
            ``train=True`` apply with ``rngs={"dropout": key}``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = NIN(widths=((4, 2), (4, 2), (4,)))  # a toy size
        >>> x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)  # shapes only: nothing runs
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
        >>> jax.eval_shape(model.apply, variables, x).shape
        (2, 10)

    References:
        Lin, Chen and Yan, "Network in network", ICLR 2014, arXiv:1312.4400.
    """

    num_classes: int = 10
    widths: Sequence[Sequence[int]] = _NIN_WIDTHS
    kernel_sizes: Sequence[int] = _NIN_KERNELS
    dropout: float = 0.5

    def __post_init__(self) -> None:
        _check_nin(self.num_classes, self.widths, self.kernel_sizes, self.dropout)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``; 32x32x3 for CIFAR-10 (at least
                4x4 with three blocks).
            train: if True (and ``dropout > 0``), dropout is active.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or is too small for the poolings.
        """
        blocks = len(self.widths)
        _check_x(x, "NIN", _nin_pools(blocks))
        for index, (features, size) in enumerate(zip(self.widths, self.kernel_sizes)):
            x = MLPConv(tuple(features), size, name=f"MLPConv_{index}")(x)
            if index < blocks - 1:
                x = _pool_ceil(x, "max" if index == 0 else "avg", 3, 2)
                x = nn.Dropout(self.dropout, deterministic=not train, name=f"Dropout_{index}")(x)
        return GlobalAvgPoolHead(self.num_classes, relu=True, name="GlobalAvgPoolHead_0")(x)


class NNXNIN(nnx.Module):
    """:class:`NIN` as a Flax NNX module, with the same params paths.

    Submodules ``MLPConv_0`` ... and ``GlobalAvgPoolHead_0``. Dropout is active in NNX's train
    mode (the default; ``.eval()`` turns it off) and draws from the RNG stream ``"dropout"`` of
    ``rngs`` (reseed with ``nnx.reseed(model, dropout=key)``); at rate 0 no stream is kept.

    Args:
        num_classes: number of output logits.
        widths: per block, the channels of its ``k x k`` and ``1 x 1`` convolutions.
        kernel_sizes: per block, the size of its first convolution.
        dropout: drop rate after each inner pooling.
        input_shape: ``(height, width, channels)`` of one example; it fixes the first
            convolution's input channels.
        rngs: the ``nnx.Rngs`` that initialize the weights (and feed the dropout).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)  # shapes only: nothing runs
        >>> toy = lambda: NNXNIN(widths=((2,), (2,), (2,)), input_shape=(8, 8, 3), rngs=nnx.Rngs(0))
        >>> jax.eval_shape(lambda x: toy()(x), x).shape
        (2, 10)
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[Sequence[int]] = _NIN_WIDTHS,
        kernel_sizes: Sequence[int] = _NIN_KERNELS,
        dropout: float = 0.5,
        *,
        input_shape: Sequence[int] = (32, 32, 3),
        rngs: nnx.Rngs,
    ) -> None:
        _check_nin(num_classes, widths, kernel_sizes, dropout)
        self.blocks = len(tuple(widths))
        in_features = _check_input_size(input_shape, "NIN", _nin_pools(self.blocks))[-1]
        for index, (features, size) in enumerate(zip(widths, kernel_sizes)):
            block = NNXMLPConv(in_features, tuple(features), size, rngs=rngs)
            setattr(self, f"MLPConv_{index}", block)
            if index < self.blocks - 1:
                setattr(self, f"Dropout_{index}", _dropout(dropout, rngs))
            in_features = tuple(features)[-1]
        self.GlobalAvgPoolHead_0 = NNXGlobalAvgPoolHead(
            in_features, num_classes, relu=True, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_x(x, "NIN", _nin_pools(self.blocks))
        for index in range(self.blocks):
            x = getattr(self, f"MLPConv_{index}")(x)
            if index < self.blocks - 1:
                x = _pool_ceil(x, "max" if index == 0 else "avg", 3, 2)
                x = getattr(self, f"Dropout_{index}")(x)
        return self.GlobalAvgPoolHead_0(x)

"""LeNet-300-100 and LeNet-5, the MNIST models of the pruning and Deep Compression papers.

Both follow the Caffe definitions that Han et al. prune: LeNet-300-100 is a three-layer
perceptron (784-300-100-10, 266,610 params on 28x28x1) and LeNet-5 is the Caffe ``lenet``
(two 5x5 VALID convolutions with 20 and 50 filters, each followed by 2x2 max pooling, then a
500-unit ReLU layer and the classifier; 431,080 params on 28x28x1). As in Caffe, the convolutions
have no nonlinearity of their own: the only ReLU is after the 500-unit layer.

References:
    LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document
    recognition", Proceedings of the IEEE, 1998.

    Han, Pool, Tran and Dally, "Learning both weights and connections for efficient neural
    networks", NeurIPS 2015, arXiv:1506.02626.

    Han, Mao and Dally, "Deep Compression: compressing deep neural networks with pruning, trained
    quantization and Huffman coding", ICLR 2016, arXiv:1510.00149.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["LeNet5", "LeNet300100", "NNXLeNet5", "NNXLeNet300100"]

# 5x5 VALID conv (-4), 2x2 pool (//2), 5x5 VALID conv (-4), 2x2 pool (//2) must leave >= 1 pixel:
# (h - 4) // 2 - 4 >= 2  <=>  h >= 16.
_LENET5_MIN_SIZE = 16


def _check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")


def _check_lenet5_size(shape: Sequence[int]) -> None:
    if min(shape[1], shape[2]) < _LENET5_MIN_SIZE:
        raise ValueError(
            f"LeNet5 input of shape {tuple(shape)} is too small: height and width must be >= "
            f"{_LENET5_MIN_SIZE} (two VALID 5x5 convs and two 2x2 pools; 28x28 is standard)"
        )


def _check_input_shape(input_shape: Sequence[int], ndim: int | None) -> tuple[int, ...]:
    """``input_shape`` (one example, no batch axis) as a tuple of positive ints."""
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else None
    if (
        not shape
        or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape)
        or (ndim is not None and len(shape) != ndim)
    ):
        rank = "a" if ndim is None else f"a {ndim}-element"
        raise ValueError(
            f"input_shape must be {rank} tuple of positive integers (one example, no batch axis), "
            f"got {input_shape!r}"
        )
    return shape


class LeNet300100(nn.Module):
    """LeNet-300-100: flatten, Dense(300) ReLU, Dense(100) ReLU, Dense(num_classes).

    Submodules are ``Dense_0``, ``Dense_1`` and ``Dense_2``, so kernels sit at paths such as
    ``Dense_0/kernel``. On 28x28x1 inputs it has 266,610 params.

    Attributes:
        num_classes: number of output logits.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = LeNet300100()
        >>> x = jnp.zeros((2, 28, 28, 1))
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only
        >>> jax.eval_shape(model.apply, variables, x).shape
        (2, 10)
    """

    num_classes: int = 10

    def __post_init__(self) -> None:
        _check_num_classes(self.num_classes)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: a batch of inputs, ``(batch, ...)``; everything after the batch axis is flattened
                (NHWC images of any size).
            train: unused (the model has no dropout or batch norm); kept for a uniform signature.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` has no batch axis.
        """
        del train
        if x.ndim < 2:
            raise ValueError(f"x must have a batch axis and features, got shape {x.shape}")
        x = jnp.reshape(x, (x.shape[0], -1))
        x = nn.relu(nn.Dense(300, name="Dense_0")(x))
        x = nn.relu(nn.Dense(100, name="Dense_1")(x))
        return nn.Dense(self.num_classes, name="Dense_2")(x)


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe and Deep Compression.

    ``Conv_0`` (20 5x5 VALID), 2x2 max pool, ``Conv_1`` (50 5x5 VALID), 2x2 max pool, flatten,
    ``Dense_0`` (500) ReLU, ``Dense_1`` (num_classes). On 28x28x1 inputs it has 431,080 params.
    Inputs must be at least 16x16.

    Attributes:
        num_classes: number of output logits.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = LeNet5()
        >>> x = jnp.zeros((2, 28, 28, 1))
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only
        >>> sum(p.size for p in jax.tree.leaves(variables["params"]))
        431080
        >>> jax.eval_shape(model.apply, variables, x).shape
        (2, 10)
    """

    num_classes: int = 10

    def __post_init__(self) -> None:
        _check_num_classes(self.num_classes)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``, height and width >= 16.
            train: unused (the model has no dropout or batch norm); kept for a uniform signature.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or is smaller than 16x16, the least size that the two
                VALID 5x5 convolutions and two 2x2 poolings leave a pixel of.
        """
        del train
        if x.ndim != 4:
            raise ValueError(f"LeNet5 expects NHWC input (batch, h, w, c), got shape {x.shape}")
        _check_lenet5_size(x.shape)
        x = nn.Conv(20, (5, 5), padding="VALID", name="Conv_0")(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.Conv(50, (5, 5), padding="VALID", name="Conv_1")(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.reshape(x, (x.shape[0], -1))
        x = nn.relu(nn.Dense(500, name="Dense_0")(x))
        return nn.Dense(self.num_classes, name="Dense_1")(x)


class NNXLeNet300100(nnx.Module):
    """:class:`LeNet300100` as a Flax NNX module, with the same params paths.

    Submodules ``Dense_0``, ``Dense_1`` and ``Dense_2`` (``nnx.Linear``), so the params of
    ``jaxcomp.adapt.functional(model)`` are those of the linen model (``Dense_0/kernel``...).

    Args:
        num_classes: number of output logits.
        input_shape: the shape of one example, without the batch axis; it fixes
            ``Dense_0``'s input size (``prod(input_shape)``).
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: NNXLeNet300100(rngs=nnx.Rngs(0)))  # shapes only
        >>> nnx.eval_shape(lambda m: m(jnp.zeros((2, 28, 28, 1))), model).shape
        (2, 10)
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        input_shape: Sequence[int] = (28, 28, 1),
        rngs: nnx.Rngs,
    ) -> None:
        _check_num_classes(num_classes)
        features = math.prod(_check_input_shape(input_shape, None))
        self.Dense_0 = nnx.Linear(features, 300, rngs=rngs)
        self.Dense_1 = nnx.Linear(300, 100, rngs=rngs)
        self.Dense_2 = nnx.Linear(100, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of a batch ``(batch, *input_shape)``, ``(batch, num_classes)``."""
        if x.ndim < 2:
            raise ValueError(f"x must have a batch axis and features, got shape {x.shape}")
        x = jnp.reshape(x, (x.shape[0], -1))
        x = nnx.relu(self.Dense_0(x))
        x = nnx.relu(self.Dense_1(x))
        return self.Dense_2(x)


class NNXLeNet5(nnx.Module):
    """:class:`LeNet5` as a Flax NNX module, with the same params paths.

    Submodules ``Conv_0``, ``Conv_1`` (``nnx.Conv``), ``Dense_0`` and ``Dense_1``
    (``nnx.Linear``), as in the linen model.

    Args:
        num_classes: number of output logits.
        input_shape: ``(height, width, channels)`` of one example, at least 16x16; it fixes
            ``Conv_0``'s input channels and ``Dense_0``'s input size.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: NNXLeNet5(rngs=nnx.Rngs(0)))  # shapes only
        >>> nnx.eval_shape(lambda m: m(jnp.zeros((2, 28, 28, 1))), model).shape
        (2, 10)
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        input_shape: Sequence[int] = (28, 28, 1),
        rngs: nnx.Rngs,
    ) -> None:
        _check_num_classes(num_classes)
        h, w, c = _check_input_shape(input_shape, 3)
        _check_lenet5_size((1, h, w, c))
        size = lambda n: ((n - 4) // 2 - 4) // 2
        self.Conv_0 = nnx.Conv(c, 20, (5, 5), padding="VALID", rngs=rngs)
        self.Conv_1 = nnx.Conv(20, 50, (5, 5), padding="VALID", rngs=rngs)
        self.Dense_0 = nnx.Linear(size(h) * size(w) * 50, 500, rngs=rngs)
        self.Dense_1 = nnx.Linear(500, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        if x.ndim != 4:
            raise ValueError(f"LeNet5 expects NHWC input (batch, h, w, c), got shape {x.shape}")
        _check_lenet5_size(x.shape)
        x = nnx.max_pool(self.Conv_0(x), (2, 2), strides=(2, 2))
        x = nnx.max_pool(self.Conv_1(x), (2, 2), strides=(2, 2))
        x = jnp.reshape(x, (x.shape[0], -1))
        x = nnx.relu(self.Dense_0(x))
        return self.Dense_1(x)

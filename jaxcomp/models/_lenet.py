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

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["LeNet5", "LeNet300100"]

# 5x5 VALID conv (-4), 2x2 pool (//2), 5x5 VALID conv (-4), 2x2 pool (//2) must leave >= 1 pixel:
# (h - 4) // 2 - 4 >= 2  <=>  h >= 16.
_LENET5_MIN_SIZE = 16


def _check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")


class LeNet300100(nn.Module):
    """LeNet-300-100: flatten, Dense(300) ReLU, Dense(100) ReLU, Dense(num_classes).

    Submodules are ``Dense_0``, ``Dense_1`` and ``Dense_2``, so kernels sit at paths such as
    ``Dense_0/kernel``. On 28x28x1 inputs it has 266,610 params.

    Attributes:
        num_classes: number of output logits.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = LeNet300100()
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
        >>> model.apply(variables, jnp.zeros((2, 28, 28, 1))).shape
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
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
        >>> model.apply(variables, jnp.zeros((2, 28, 28, 1))).shape
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
        if min(x.shape[1], x.shape[2]) < _LENET5_MIN_SIZE:
            raise ValueError(
                f"LeNet5 input of shape {x.shape} is too small: height and width must be >= "
                f"{_LENET5_MIN_SIZE} (two VALID 5x5 convs and two 2x2 pools; 28x28 is standard)"
            )
        x = nn.Conv(20, (5, 5), padding="VALID", name="Conv_0")(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.Conv(50, (5, 5), padding="VALID", name="Conv_1")(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.reshape(x, (x.shape[0], -1))
        x = nn.relu(nn.Dense(500, name="Dense_0")(x))
        return nn.Dense(self.num_classes, name="Dense_1")(x)

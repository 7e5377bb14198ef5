"""LeNet-5 and the small VGG with Tai et al.'s low-rank layers, for training from scratch.

Each model has the layer names and shapes of its dense counterpart in :mod:`jaxcomp.models`
(``LeNet5``, ``VGGSmall``), except that the selected convolutions are
:class:`jaxcomp.lowrank.LowRankConv` layers (a ``k x 1`` convolution, batch normalization, a
``1 x k`` convolution) whose rank is a fraction of the layer's output channels.

References:
    Tai, Xiao, Zhang, Wang and E, "Convolutional neural networks with low-rank regularization",
    ICLR 2016, arXiv:1511.06067.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp import lowrank

__all__ = ["LeNet5LowRank", "VGGSmallLowRank"]


class LeNet5LowRank(nn.Module):
    """LeNet-5 (Caffe) whose second convolution (5x5, 20 -> 50) is a rank-``rank`` LowRankConv."""

    num_classes: int = 10
    rank: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Conv(20, (5, 5), padding="VALID", name="Conv_0")(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = lowrank.LowRankConv(50, (5, 5), rank=self.rank, padding="VALID", name="Conv_1")(
            x, train=train
        )
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.reshape(x, (x.shape[0], -1))
        x = nn.relu(nn.Dense(500, name="Dense_0")(x))
        return nn.Dense(self.num_classes, name="Dense_1")(x)


class VGGSmallLowRank(nn.Module):
    """The small VGG whose convolutions after the first are LowRankConv layers.

    Each such layer with ``F`` output channels has rank ``max(1, round(rank_fraction * F))``.
    """

    num_classes: int = 10
    widths: Sequence[int] = (16, 32, 64)
    convs_per_stage: int = 2
    rank_fraction: float = 0.25

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        i = 0
        for width in self.widths:
            for _ in range(self.convs_per_stage):
                init = nn.initializers.kaiming_normal()
                if i == 0:
                    x = nn.Conv(width, (3, 3), use_bias=False, kernel_init=init, name="Conv_0")(x)
                else:
                    rank = max(1, round(self.rank_fraction * width))
                    x = lowrank.LowRankConv(
                        width, (3, 3), rank=rank, use_bias=False, kernel_init=init,
                        name=f"Conv_{i}",
                    )(x, train=train)  # fmt: skip
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
                x = nn.relu(x)
                i += 1
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)

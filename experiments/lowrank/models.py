"""LeNet-5 and the small VGG with low-rank layers trained from scratch (Tai; Rigamonti; Sainath).

Each model has the layer names and shapes of its dense counterpart in :mod:`jaxcomp.models`
(``LeNet5``, ``VGGSmall``), except that the selected convolutions are
:class:`jaxcomp.lowrank.LowRankConv` layers (a ``k x 1`` convolution, batch normalization, a
``1 x k`` convolution) whose rank is a fraction of the layer's output channels.

:class:`LeNet5SeparableBasis` has the layer names of LeNet-5 too, with ``Conv_1`` a
:class:`SeparableBasisConv` whose filters are combinations of ``M`` learned separable filters
(Rigamonti et al.), and :class:`LeNet300LowRankHead` is LeNet-300-100 whose classifier is a
product of two matrices (Sainath et al.); :func:`as_factored` turns either's params into the
dense model's params with a factored-kernel node, which ``run_factorized`` runs.

References:
    Tai, Xiao, Zhang, Wang and E, "Convolutional neural networks with low-rank regularization",
    ICLR 2016, arXiv:1511.06067.

    Rigamonti, Sironi, Lepetit and Fua, "Learning separable filters", CVPR 2013.

    Sainath, Kingsbury, Sindhwani, Arisoy and Ramabhadran, "Low-rank matrix factorization for
    deep neural network training with high-dimensional output targets", ICASSP 2013.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp import lowrank

__all__ = [
    "LeNet5LowRank",
    "LeNet5SeparableBasis",
    "LeNet300LowRankHead",
    "LeNet300Predicted",
    "SeparableBasisConv",
    "VGGSmallLowRank",
    "as_factored",
]


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


class SeparableBasisConv(nn.Module):
    """A VALID convolution whose filters are combinations of ``rank`` learned separable filters.

    ``kernel[i, j, c, f] = sum_m coeffs[c, m, f] vertical[i, m] horizontal[j, m]``
    (:class:`jaxcomp.lowrank.SeparableBasis`): the bases and the coefficients are the
    parameters, learned from scratch. Training runs the rebuilt kernel; inference runs the
    factors (:func:`as_factored` and ``run_factorized``). Initialization: bases ``N(0, 1/k)`` per
    axis, coefficients ``N(0, 1/(M C))``, so the kernel has LeCun's variance ``1/(kh kw C)``.
    """

    features: int
    kernel_size: tuple[int, int]
    rank: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        c, m = x.shape[-1], self.rank
        normal = lambda std: nn.initializers.normal(stddev=std)
        v = self.param("vertical", normal(kh**-0.5), (kh, m), jnp.float32)
        h = self.param("horizontal", normal(kw**-0.5), (kw, m), jnp.float32)
        coeffs = self.param("coeffs", normal((m * c) ** -0.5), (c, m, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        kernel = lowrank.SeparableBasis(v, h, coeffs).to_dense()
        y = jax.lax.conv_general_dilated(
            x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y + jnp.reshape(bias, (1, 1, 1, -1))


class LeNet5SeparableBasis(nn.Module):
    """LeNet-5 whose second convolution (5x5, 20 -> 50) has ``rank`` learned separable bases."""

    num_classes: int = 10
    rank: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Conv(20, (5, 5), padding="VALID", name="Conv_0")(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = SeparableBasisConv(50, (5, 5), rank=self.rank, name="Conv_1")(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.reshape(x, (x.shape[0], -1))
        x = nn.relu(nn.Dense(500, name="Dense_0")(x))
        return nn.Dense(self.num_classes, name="Dense_1")(x)


class LeNet300LowRankHead(nn.Module):
    """LeNet-300-100 whose classifier ``Dense_2`` (100 -> classes) is a rank-``rank`` product:
    a linear ``100 -> rank`` layer without bias, then ``rank -> classes`` (Sainath et al.)."""

    num_classes: int = 10
    rank: int = 5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jnp.reshape(x, (x.shape[0], -1))
        x = nn.relu(nn.Dense(300, name="Dense_0")(x))
        x = nn.relu(nn.Dense(100, name="Dense_1")(x))
        x = nn.Dense(self.rank, use_bias=False, name="Dense_2_u")(x)
        return nn.Dense(self.num_classes, name="Dense_2")(x)


class LeNet300Predicted(nn.Module):
    """LeNet-300-100 whose first layer is a :class:`jaxcomp.lowrank.PredictedDense`: a fixed
    dictionary over the 28x28 pixel grid times a learned ``(rank, 300)`` matrix (Denil et al.)."""

    num_classes: int = 10
    rank: int = 40
    kind: str = "smooth"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jnp.reshape(x, (x.shape[0], -1))
        grid = (28, 28) if self.kind == "smooth" else None
        x = nn.relu(lowrank.PredictedDense(300, self.rank, kind=self.kind, grid=grid,
                                           name="Dense_0")(x))  # fmt: skip
        x = nn.relu(nn.Dense(100, name="Dense_1")(x))
        return nn.Dense(self.num_classes, name="Dense_2")(x)


def as_factored(params: Any) -> Any:
    """The params of the dense model (``LeNet5`` or ``LeNet300100``) with the factored layer's
    kernel as its node: ``SeparableBasis`` for :class:`LeNet5SeparableBasis`, ``LowRank`` for
    :class:`LeNet300LowRankHead`."""
    out = dict(params)
    conv = params.get("Conv_1", {})
    if "coeffs" in conv:
        node = lowrank.SeparableBasis(conv["vertical"], conv["horizontal"], conv["coeffs"])
        out["Conv_1"] = {"kernel": node, "bias": conv["bias"]}
    if "Dense_2_u" in params:
        u = out.pop("Dense_2_u")["kernel"]
        head = params["Dense_2"]
        out["Dense_2"] = {"kernel": lowrank.LowRank(u, head["kernel"]), "bias": head["bias"]}
    return out

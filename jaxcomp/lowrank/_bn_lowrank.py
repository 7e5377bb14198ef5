"""Low-rank convolutions with batch normalization between the factors (Tai et al. 2016).

Tai et al. replace each ``kh x kw`` convolution by a vertical ``kh x 1`` convolution to ``K``
channels and a horizontal ``1 x kw`` convolution to ``F`` channels (the decomposition of
Jaderberg et al., for which they give the closed-form global optimum: the truncated SVD of the
kernel as a ``(kh C, kw F)`` matrix), and put a batch normalization between the two. With it the
low-rank network trains well *from scratch*, without a pretrained dense model.

:class:`LowRankConv` is that layer, usable in any Flax model in place of ``nn.Conv``;
:func:`lowrank_conv_variables` gives its variables from a trained dense kernel by Tai's closed
form, with the batch normalization set to the identity (zero mean, unit variance, unit scale, zero
offset), so that the rewritten layer computes what the dense one did (exactly at full rank) in
inference mode.

References:
    Tai, Xiao, Zhang, Wang and E, "Convolutional neural networks with low-rank regularization",
    ICLR 2016, arXiv:1511.06067.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.core import _checks as checks
from jaxcomp.lowrank._jaderberg import separable_factors
from jaxcomp.lowrank._jaderberg import separable_matrix
from jaxcomp.lowrank._rank import check_rank

__all__ = ["LowRankConv", "lowrank_conv_variables"]


def _pair(x: int | Sequence[int], name: str) -> tuple[int, int]:
    v = (x, x) if isinstance(x, int) else tuple(x)
    if len(v) != 2 or not all(isinstance(a, int) and a >= 1 for a in v):
        raise ValueError(f"LowRankConv: {name} must be an int >= 1 or a pair of them, got {x!r}")
    return v  # type: ignore[return-value]


def _split_padding(padding: Any) -> tuple[Any, Any]:
    """The padding of the vertical and of the horizontal convolution."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(
                f"LowRankConv: padding must be SAME, VALID or explicit, got {padding!r}"
            )
        return padding, padding
    if isinstance(padding, int):
        padding = (padding, padding)
    if len(padding) != 2:
        raise ValueError(f"LowRankConv: padding needs one entry per spatial axis, got {padding!r}")
    ph, pw = ((p, p) if isinstance(p, int) else tuple(p) for p in padding)
    return (ph, (0, 0)), ((0, 0), pw)


class LowRankConv(nn.Module):
    """A ``kh x 1`` convolution to ``rank`` channels, batch norm, a ``1 x kw`` convolution.

    Submodules: ``vertical`` (``nn.Conv``, no bias when there is batch norm), ``bn``
    (``nn.BatchNorm``, its statistics in ``batch_stats``) and ``horizontal`` (``nn.Conv``).
    ``kh kw C F`` multiply-adds per output pixel become ``rank (kh C + kw F)``.

    Attributes:
      features: output channels ``F``.
      kernel_size: ``(kh, kw)``.
      rank: ``K``, the channels between the two convolutions, >= 1.
      strides: an int or ``(sh, sw)``; ``sh`` applies to the vertical, ``sw`` to the horizontal.
      padding: ``"SAME"``, ``"VALID"``, an int, or per-axis ints or ``(low, high)`` pairs.
      use_bias: a bias on the horizontal convolution.
      batch_norm: the batch normalization between the factors (Tai et al.); False gives the
        plain decomposition of Jaderberg et al.
      momentum: of the batch norm's running averages.
      epsilon: of the batch norm.
      kernel_init: the initializer of both convolution kernels.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> layer = LowRankConv(features=8, kernel_size=(3, 3), rank=4)
        >>> v = jax.eval_shape(layer.init, jax.random.key(0), jnp.ones((1, 6, 6, 3)))  # shapes
        >>> v["params"]["vertical"]["kernel"].shape, v["params"]["horizontal"]["kernel"].shape
        ((3, 1, 3, 4), (1, 3, 4, 8))
        >>> jax.eval_shape(layer.apply, v, jnp.ones((2, 6, 6, 3))).shape
        (2, 6, 6, 8)
    """

    features: int
    kernel_size: Sequence[int]
    rank: int
    strides: int | Sequence[int] = 1
    padding: Any = "SAME"
    use_bias: bool = True
    batch_norm: bool = True
    momentum: float = 0.9
    epsilon: float = 1e-5
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the layer to NHWC ``x``; ``train`` selects batch statistics in the batch norm."""
        checks.integer(self.rank, fn="LowRankConv", name="rank")
        kh, kw = _pair(self.kernel_size, "kernel_size")
        sh, sw = _pair(self.strides, "strides")
        pad_v, pad_h = _split_padding(self.padding)
        y = nn.Conv(
            self.rank, (kh, 1), strides=(sh, 1), padding=pad_v, use_bias=not self.batch_norm,
            kernel_init=self.kernel_init, name="vertical",
        )(x)  # fmt: skip
        if self.batch_norm:
            y = nn.BatchNorm(
                use_running_average=not train, momentum=self.momentum, epsilon=self.epsilon,
                name="bn",
            )(y)  # fmt: skip
        return nn.Conv(
            self.features, (1, kw), strides=(1, sw), padding=pad_h, use_bias=self.use_bias,
            kernel_init=self.kernel_init, name="horizontal",
        )(y)  # fmt: skip


def lowrank_conv_variables(
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    rank: int,
    batch_norm: bool = True,
    epsilon: float = 1e-5,
) -> dict[str, Any]:
    """The variables of a :class:`LowRankConv` that best approximates a dense convolution.

    Tai et al.'s closed form: the truncated SVD of the kernel as the ``(kh C, kw F)`` matrix
    ``M[(i, c), (j, f)] = W[i, j, c, f]``. The batch norm is set to the identity of inference
    mode (running mean 0, running variance ``1 - epsilon``, scale 1, offset 0).

    Args:
      kernel: the dense ``(kh, kw, C, F)`` kernel.
      bias: its ``(F,)`` bias, or None (then the layer must have ``use_bias=False``).
      rank: ``K``, ``1 <= K <= min(kh C, kw F)``.
      batch_norm: whether the layer has the batch norm.
      epsilon: the batch norm's epsilon.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (no ``batch_stats`` without batch norm).

    Raises:
      ValueError: ``kernel`` is not 4-D or ``rank`` is out of range.
    """
    if getattr(kernel, "ndim", None) != 4:
        raise ValueError(
            f"lowrank_conv_variables: kernel must be (kh, kw, C, F), got {jnp.shape(kernel)}"
        )
    kh, kw, c, f = kernel.shape
    check_rank("lowrank_conv_variables", "kernel", rank, min(kh * c, kw * f), "min(kh C, kw F)")
    vertical, horizontal = separable_factors(separable_matrix(kernel), kernel.shape, rank)
    dtype = kernel.dtype
    params: dict[str, Any] = {
        "vertical": {"kernel": jnp.asarray(vertical, dtype)},
        "horizontal": {"kernel": jnp.asarray(horizontal, dtype)},
    }
    if bias is not None:
        params["horizontal"]["bias"] = jnp.asarray(bias, dtype)
    if not batch_norm:
        params["vertical"]["bias"] = jnp.zeros((rank,), dtype)
        return {"params": params}
    params["bn"] = {"scale": jnp.ones((rank,), dtype), "bias": jnp.zeros((rank,), dtype)}
    stats = {"mean": jnp.zeros((rank,), dtype), "var": jnp.full((rank,), 1.0 - epsilon, dtype)}
    return {"params": params, "batch_stats": {"bn": stats}}

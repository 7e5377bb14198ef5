"""Small student networks whose widths and depths are attributes.

Distillation trains a small *student* to imitate a large teacher, and Net2Net grows a network
by changing its widths or depth while keeping its function. Both need models whose shape is data:
:class:`MLP` (``Dense_0 ... Dense_n``, ReLU between) and :class:`ConvNet` (``Conv_0 ... Conv_m``
with optional ``BatchNorm_i``, ReLU and 2x2 max pooling, then ``Dense_*`` layers).

References:
    Ba and Caruana, "Do deep nets really need to be deep?", arXiv:1312.6184 (shallow students);
    Chen, Goodfellow and Shlens, "Net2Net: accelerating learning via knowledge transfer",
    ICLR 2016, arXiv:1511.05641.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["MLP", "ConvNet"]


def _check_widths(widths: Sequence[int], what: str, *, allow_empty: bool = True) -> None:
    if not allow_empty and not widths:
        raise ValueError(f"{what} must hold at least one width")
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"{what} must be positive ints, got {tuple(widths)!r}")


class MLP(nn.Module):
    """Flatten, then ``Dense(f) + ReLU`` for each ``f`` in ``features``, then ``Dense(classes)``.

    Layers are ``Dense_0 ... Dense_{len(features)}``; ``MLP(features=(30,))`` is the 784-30-10
    student of the distillation experiment.

    Attributes:
      features: the hidden widths (may be empty: a linear model).
      num_classes: the number of logits.
    """

    features: Sequence[int] = (30,)
    num_classes: int = 10

    def __post_init__(self) -> None:
        _check_widths(tuple(self.features), "MLP: features")
        _check_widths((self.num_classes,), "MLP: num_classes")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The logits of a batch ``(batch, ...)`` (flattened after the batch axis)."""
        del train
        x = jnp.reshape(x, (x.shape[0], -1))
        for i, f in enumerate(self.features):
            x = nn.relu(nn.Dense(f, name=f"Dense_{i}")(x))
        return nn.Dense(self.num_classes, name=f"Dense_{len(self.features)}")(x)


class ConvNet(nn.Module):
    """Convolutions (each ``Conv_i``, optional ``BatchNorm_i``, ReLU, optional 2x2 max pool),
    flatten, hidden ``Dense`` layers with ReLU, and the classifier.

    With ``features=(c1, c2)``, ``kernel_size=5``, VALID padding, pooling and ``hidden=(h,)``
    it is LeNet-5's geometry (28x28 -> 24x24 -> 12x12 -> 8x8 -> 4x4) at other widths, so its
    feature maps line up with LeNet-5's for attention transfer.

    Attributes:
      features: the convolutions' channel counts.
      hidden: the hidden dense widths.
      num_classes: the number of logits.
      kernel_size: the square kernel's side.
      padding: ``"VALID"`` or ``"SAME"``.
      pool: 2x2 max pooling after each convolution.
      norm: batch norm after each convolution (running averages when ``train=False``).
    """

    features: Sequence[int] = (8, 16)
    hidden: Sequence[int] = (64,)
    num_classes: int = 10
    kernel_size: int = 5
    padding: str = "VALID"
    pool: bool = True
    norm: bool = False

    def __post_init__(self) -> None:
        _check_widths(tuple(self.features), "ConvNet: features", allow_empty=False)
        _check_widths(tuple(self.hidden), "ConvNet: hidden")
        _check_widths((self.num_classes, self.kernel_size), "ConvNet: num_classes, kernel_size")
        if self.padding not in ("VALID", "SAME"):
            raise ValueError(f"ConvNet: padding must be 'VALID' or 'SAME', got {self.padding!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The logits of an NHWC batch."""
        if x.ndim != 4:
            raise ValueError(f"ConvNet expects NHWC input (batch, h, w, c), got shape {x.shape}")
        k = (self.kernel_size, self.kernel_size)
        for i, f in enumerate(self.features):
            x = nn.Conv(f, k, padding=self.padding, name=f"Conv_{i}")(x)
            if self.norm:
                x = nn.BatchNorm(use_running_average=not train, name=f"BatchNorm_{i}")(x)
            x = nn.relu(x)
            if self.pool:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.reshape(x, (x.shape[0], -1))
        for i, h in enumerate(self.hidden):
            x = nn.relu(nn.Dense(h, name=f"Dense_{i}")(x))
        return nn.Dense(self.num_classes, name=f"Dense_{len(self.hidden)}")(x)

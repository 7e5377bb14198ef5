"""FractalNet (Larsson, Maire and Shakhnarovich): deep networks without residuals, with drop-path.

A fractal block with ``C`` columns is the truncated fractal of the expansion rule
``f_1(z) = conv(z)``, ``f_{C+1}(z) = join(f_C(f_C(z)), conv(z))``: column ``c`` (0 the shallowest,
``C - 1`` the deepest) is a chain of ``2 ** c`` convolutions (each a 3x3 convolution, batch norm
and ReLU), ``2 ** C - 1`` in all, and a *join* (the element-wise mean of its inputs, not a sum or
a concatenation) merges the columns wherever several of them end a convolution at the same
depth. Nested joins are one join: at depth ``d`` (1 to ``2 ** (C - 1)``) every column whose
convolutions end there is averaged, and the mean feeds each of them.

Drop-path regularizes the joins in training, once per mini-batch: *local* drop-path drops each
input of each join with probability ``local_drop`` (0.15 in the paper), keeping at least one;
*global* drop-path keeps a single column, the same in every block of the network, for a fraction
``global_drop`` of the mini-batches (0.5 in the paper). A join averages the inputs it keeps.
Evaluation is deterministic: every join averages all its inputs.

The CIFAR network (section 4 of the paper) is ``B = 5`` blocks with 64, 128, 256, 512 and 512
channels, each followed by a 2x2 max pool (32x32 down to 1x1), then a dense classifier. With
``C = 3`` columns it has ``B * 2 ** (C - 1) = 20`` convolutional layers along its deepest path:
the "FractalNet (20 layers, 38.6M params)" of the paper's table 1, whose errors (10.18% on C10,
35.34% on C100...) are the ones the survey's table 1 prints next to "3.6M" (a dropped digit).
Built as the paper describes it, that network has 33,724,618 params (10 classes), the count the
reference PyTorch implementation (osmr's pytorchcv ``fractalnet_cifar10``) asserts; no
configuration the paper describes gives 38.6M, and reimplementations (khanrc/pt.fractalnet)
report the same 33.7M against the paper's 38.6M. Four columns (40 layers, the network drawn in
the paper's figure 1) give 76,106,634 params.

References:
    Larsson, Maire and Shakhnarovich, "FractalNet: ultra-deep neural networks without
    residuals", ICLR 2017, arXiv:1605.07648.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._lenet import _check_input_shape

__all__ = ["FractalBlock", "FractalNet", "NNXFractalBlock", "NNXFractalNet"]

_BN_MOMENTUM = 0.9


def _check_rates(local_drop: float, global_drop: float) -> None:
    for name, rate in (("local_drop", local_drop), ("global_drop", global_drop)):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"{name} must be a number in [0, 1), got {rate!r}")


def _check_block(features: int, columns: int, local_drop: float, global_drop: float) -> None:
    if not isinstance(features, int) or isinstance(features, bool) or features < 1:
        raise ValueError(f"features must be an integer >= 1, got {features!r}")
    if not isinstance(columns, int) or isinstance(columns, bool) or columns < 1:
        raise ValueError(f"columns must be an integer >= 1, got {columns!r}")
    _check_rates(local_drop, global_drop)


def _check(
    num_classes: int,
    columns: int,
    widths: Sequence[int],
    local_drop: float,
    global_drop: float,
) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    sizes = tuple(widths) if isinstance(widths, Sequence) else None
    if not sizes or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in sizes):
        raise ValueError(
            f"widths must be a non-empty sequence of integers >= 1 (channels per block), "
            f"got {widths!r}"
        )
    _check_block(sizes[0], columns, local_drop, global_drop)


def _check_x(x: jax.Array, blocks: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"FractalNet expects NHWC input (batch, h, w, c), got shape {x.shape}")
    if min(x.shape[1], x.shape[2]) < 2**blocks:
        raise ValueError(
            f"FractalNet input of shape {x.shape} is too small: height and width must be >= "
            f"{2**blocks} (a 2x2 max pool after each of the {blocks} blocks)"
        )


def _schedule(columns: int) -> list[tuple[int, ...]]:
    """For each depth of a block, the columns whose convolutions end there, deepest first."""
    depth = 2 ** (columns - 1)
    return [
        tuple(c for c in reversed(range(columns)) if d % 2 ** (columns - 1 - c) == 0)
        for d in range(1, depth + 1)
    ]


def _draw_column(key: jax.Array, columns: int, global_drop: float) -> jax.Array:
    """The column kept by global drop-path for this mini-batch, or -1 (local drop-path)."""
    use, pick = jax.random.split(key)
    column = jax.random.randint(pick, (), 0, columns)
    return jnp.where(jax.random.bernoulli(use, global_drop), column, -1)


def _join(
    ys: list[jax.Array],
    joined: tuple[int, ...],
    local_drop: float,
    key: jax.Array | None,
    column: jax.Array | int | None,
) -> jax.Array:
    """The element-wise mean of the inputs a join keeps.

    ``key`` (local drop-path) drops each input with probability ``local_drop`` and keeps one at
    random when it would drop all; ``column`` (>= 0, global drop-path) keeps only that column's
    input where it is one of the ``joined`` columns. Neither: the mean of all inputs.
    """
    n = len(ys)
    if isinstance(column, int) and column < 0:
        column = None
    if key is None and column is None:
        return sum(ys[1:], ys[0]) / n
    keep = jnp.ones((n,), bool)
    if key is not None:
        drop_key, pick_key = jax.random.split(key)
        keep = jax.random.bernoulli(drop_key, 1.0 - local_drop, (n,))
        fallback = jax.nn.one_hot(jax.random.randint(pick_key, (), 0, n), n) > 0
        keep = jnp.where(keep.any(), keep, fallback)
    if column is not None:
        hit = jnp.asarray(joined) == column
        keep = jnp.where(hit.any(), hit, keep)
    weights = keep.astype(ys[0].dtype) / keep.sum().astype(ys[0].dtype)
    return sum((weights[i] * ys[i] for i in range(1, n)), weights[0] * ys[0])


def _conv(features: int) -> nn.Conv:
    return nn.Conv(
        features,
        (3, 3),
        padding="SAME",
        use_bias=False,
        kernel_init=nn.initializers.kaiming_normal(),
    )


class FractalBlock(nn.Module):
    """A fractal block with ``columns`` columns and element-wise-mean joins, with drop-path.

    Convolutions are ``Conv_k``/``BatchNorm_k`` in the order they run: depth by depth, the
    deepest column first at each depth (with two columns: ``Conv_0`` and ``Conv_1`` are column
    1, ``Conv_2`` is column 0). All produce ``features`` channels at the input's spatial size.

    Attributes:
        features: output channels of every convolution (and of the block).
        columns: number of columns ``C``; column ``c`` has ``2 ** c`` convolutions.
        local_drop: probability that local drop-path drops an input of a join, in ``[0, 1)``.
        global_drop: fraction of the mini-batches that use global drop-path (one column), in
            ``[0, 1)``, when the block draws its own column (a :class:`FractalNet` draws one for
            all its blocks).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> block = FractalBlock(4, columns=3)
        >>> variables = jax.eval_shape(block.init, jax.random.key(0), jnp.zeros((1, 8, 8, 2)))
        >>> jax.eval_shape(block.apply, variables, jnp.zeros((2, 8, 8, 2))).shape
        (2, 8, 8, 4)
        >>> len([k for k in variables["params"] if k.startswith("Conv_")])  # 2 ** 3 - 1
        7

    References:
        Larsson, Maire and Shakhnarovich, "FractalNet: ultra-deep neural networks without
        residuals", ICLR 2017, arXiv:1605.07648.
    """

    features: int
    columns: int = 3
    local_drop: float = 0.15
    global_drop: float = 0.5

    def __post_init__(self) -> None:
        _check_block(self.features, self.columns, self.local_drop, self.global_drop)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, column: jax.Array | int | None = None
    ) -> jax.Array:
        """Applies the block.

        Args:
            x: NHWC activations.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``, and
                the joins use drop-path (with a rate above 0, from the ``"dropout"`` RNG).
            column: in training, the column that global drop-path keeps (an int or int scalar
                array), or -1 for local drop-path; None draws it here (global with probability
                ``global_drop``). Ignored in evaluation.

        Returns:
            ``(batch, h, w, features)``.
        """
        if train and column is None and self.global_drop > 0:
            column = _draw_column(self.make_rng("dropout"), self.columns, self.global_drop)
        if not train:
            column = None
        inputs = [x] * self.columns
        for joined in _schedule(self.columns):
            ys = []
            for c in joined:
                y = _conv(self.features)(inputs[c])
                y = nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM)(y)
                ys.append(nn.relu(y))
            y = ys[0]
            if len(ys) > 1:
                key = self.make_rng("dropout") if train and self.local_drop > 0 else None
                y = _join(ys, joined, self.local_drop, key, column)
            for c in joined:
                inputs[c] = y
        return inputs[0]


class FractalNet(nn.Module):
    """The CIFAR FractalNet of Larsson et al. (2017): fractal blocks, each then a 2x2 max pool,
    then a dense classifier on the flattened output.

    Submodules ``FractalBlock_0`` ... ``FractalBlock_{B-1}`` and ``Dense_0``. At the defaults
    (3 columns, widths 64, 128, 256, 512, 512: the paper's 20-layer network) it has 33,724,618
    params at 10 classes and 0.85 G mult-adds on 32x32 inputs; the paper's table 1 says 38.6M for
    this network and the survey's table 1 prints 3.6M (see the module docstring: neither is the
    count of the configuration the paper describes). In training, global drop-path draws one
    column per mini-batch for all blocks, and local drop-path draws per join.

    Attributes:
        num_classes: number of output logits.
        columns: columns per block (3: 20 layers; 4: 40 layers).
        widths: channels of each block; one 2x2 max pool per block.
        local_drop: local drop-path rate per join input (0.15 in the paper).
        global_drop: fraction of the mini-batches trained with global drop-path (0.5 in the
            paper); 0 and ``local_drop=0`` train without drop-path (no RNG needed).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = FractalNet(columns=2, widths=(2, 4))  # a toy size: shapes only
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
        >>> jax.eval_shape(model.apply, variables, jnp.zeros((2, 8, 8, 3))).shape
        (2, 10)

    References:
        Larsson, Maire and Shakhnarovich, "FractalNet: ultra-deep neural networks without
        residuals", ICLR 2017, arXiv:1605.07648.
    """

    num_classes: int = 10
    columns: int = 3
    widths: Sequence[int] = (64, 128, 256, 512, 512)
    local_drop: float = 0.15
    global_drop: float = 0.5

    def __post_init__(self) -> None:
        _check(self.num_classes, self.columns, self.widths, self.local_drop, self.global_drop)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``, at least ``2 ** len(widths)``
                pixels on each side (32x32x3 for CIFAR).
            train: if True, batch norm uses batch statistics and updates ``batch_stats``, and
                drop-path is on (with a rate above 0, it needs the ``"dropout"`` RNG).

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or is smaller than the poolings allow.
        """
        _check_x(x, len(self.widths))
        column = -1
        if train and self.global_drop > 0:
            column = _draw_column(self.make_rng("dropout"), self.columns, self.global_drop)
        for index, width in enumerate(self.widths):
            block = FractalBlock(
                width, self.columns, self.local_drop, self.global_drop, name=f"FractalBlock_{index}"
            )
            x = block(x, train=train, column=column)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.reshape(x, (x.shape[0], -1))
        return nn.Dense(self.num_classes, name="Dense_0")(x)


def _nnx_stream(rate: float, rngs: nnx.Rngs) -> nnx.RngStream | None:
    """The module's own ``"dropout"`` stream (reseeded by ``nnx.reseed(module, dropout=key)``),
    or None when the rate is 0 (no randomness, no RNG state)."""
    return nnx.RngStream(rngs["dropout"](), tag="dropout") if rate > 0 else None


class NNXFractalBlock(nnx.Module):
    """:class:`FractalBlock` as a Flax NNX module, with the same submodule names.

    With a drop-path rate above 0 it keeps a ``"dropout"`` RNG stream (attribute ``rngs``) and
    uses drop-path in train mode (``.train()``, NNX's default); ``.eval()`` averages every join.

    Args:
        in_features: input channels.
        features: output channels of every convolution.
        columns: number of columns.
        local_drop: local drop-path rate per join input.
        global_drop: fraction of the mini-batches with global drop-path, when the block draws
            its own column.
        rngs: the ``nnx.Rngs`` that initialize the weights (and seed the ``"dropout"`` stream).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> block = nnx.eval_shape(lambda: NNXFractalBlock(2, 4, columns=3, rngs=nnx.Rngs(0)))
        >>> block.eval()
        >>> nnx.eval_shape(lambda m: m(jnp.zeros((2, 8, 8, 2))), block).shape
        (2, 8, 8, 4)
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        columns: int = 3,
        local_drop: float = 0.15,
        global_drop: float = 0.5,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        _check_block(features, columns, local_drop, global_drop)
        self.columns, self.local_drop, self.global_drop = columns, local_drop, global_drop
        self.deterministic = False
        index = 0
        for depth, joined in enumerate(_schedule(columns), start=1):
            for c in joined:
                first = depth == 2 ** (columns - 1 - c)  # the column's first convolution
                conv = nnx.Conv(
                    in_features if first else features,
                    features,
                    (3, 3),
                    padding="SAME",
                    use_bias=False,
                    kernel_init=nnx.initializers.kaiming_normal(),
                    rngs=rngs,
                )
                setattr(self, f"Conv_{index}", conv)
                norm = nnx.BatchNorm(features, momentum=_BN_MOMENTUM, rngs=rngs)
                setattr(self, f"BatchNorm_{index}", norm)
                index += 1
        self.rngs = _nnx_stream(max(local_drop, global_drop), rngs)

    def __call__(self, x: jax.Array, column: jax.Array | int | None = None) -> jax.Array:
        """The block's output, ``(batch, h, w, features)``; ``column`` as in
        :meth:`FractalBlock.__call__` (train mode only)."""
        train = not self.deterministic
        if train and column is None and self.global_drop > 0:
            column = _draw_column(self.rngs(), self.columns, self.global_drop)
        if not train:
            column = None
        inputs, index = [x] * self.columns, 0
        for joined in _schedule(self.columns):
            ys = []
            for c in joined:
                y = getattr(self, f"BatchNorm_{index}")(getattr(self, f"Conv_{index}")(inputs[c]))
                ys.append(nnx.relu(y))
                index += 1
            y = ys[0]
            if len(ys) > 1:
                key = self.rngs() if train and self.local_drop > 0 else None
                y = _join(ys, joined, self.local_drop, key, column)
            for c in joined:
                inputs[c] = y
        return inputs[0]


class NNXFractalNet(nnx.Module):
    """:class:`FractalNet` as a Flax NNX module, with the same params and batch-stats paths.

    Submodules ``FractalBlock_0`` ... and ``Dense_0``. With ``global_drop > 0`` the network keeps
    a ``"dropout"`` RNG stream for the column that global drop-path keeps in every block. The
    module starts in NNX's train mode (``.eval()`` for the deterministic network).

    Args:
        num_classes: number of output logits.
        columns: columns per block.
        widths: channels of each block.
        local_drop: local drop-path rate per join input.
        global_drop: fraction of the mini-batches trained with global drop-path.
        input_shape: ``(height, width, channels)`` of one example; it fixes the first block's
            input channels and the classifier's input size.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.eval_shape(  # shapes only: no initializer runs
        ...     lambda: NNXFractalNet(
        ...         columns=2, widths=(2, 4), input_shape=(8, 8, 3), rngs=nnx.Rngs(0)
        ...     )
        ... )
        >>> model.eval()
        >>> nnx.eval_shape(lambda m: m(jnp.zeros((2, 8, 8, 3))), model).shape
        (2, 10)
    """

    def __init__(
        self,
        num_classes: int = 10,
        columns: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512, 512),
        local_drop: float = 0.15,
        global_drop: float = 0.5,
        *,
        input_shape: Sequence[int] = (32, 32, 3),
        rngs: nnx.Rngs,
    ) -> None:
        _check(num_classes, columns, widths, local_drop, global_drop)
        h, w, in_features = _check_input_shape(input_shape, 3)
        self.blocks, self.columns, self.global_drop = len(widths), columns, global_drop
        self.deterministic = False
        for index, width in enumerate(widths):
            block = NNXFractalBlock(in_features, width, columns, local_drop, global_drop, rngs=rngs)
            setattr(self, f"FractalBlock_{index}", block)
            in_features, h, w = width, h // 2, w // 2
        self.Dense_0 = nnx.Linear(h * w * in_features, num_classes, rngs=rngs)
        self.rngs = _nnx_stream(global_drop, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_x(x, self.blocks)
        column = -1
        if not self.deterministic and self.global_drop > 0:
            column = _draw_column(self.rngs(), self.columns, self.global_drop)
        for index in range(self.blocks):
            x = getattr(self, f"FractalBlock_{index}")(x, column=column)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.reshape(x, (x.shape[0], -1))
        return self.Dense_0(x)

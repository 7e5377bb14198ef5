"""ShuffleNet (v1) of Zhang et al.: pointwise group convolutions and the channel shuffle.

A ShuffleNet unit is a residual bottleneck whose 1x1 convolutions are group convolutions (``g``
groups: ``1/g`` of the dense parameters and mult-adds) and whose 3x3 convolution is depthwise. So
that information crosses the groups, :func:`channel_shuffle` permutes the channels between the
first group convolution and the depthwise one. A stride-2 unit concatenates its branch with a 3x3
average-pooled shortcut (the channels grow by concatenation); a stride-1 unit adds the identity.

The network (the paper's table 1, ``1x``): a 3x3 stride-2 convolution with 24 filters, 3x3
stride-2 max pooling, three stages of 4, 8 and 4 units (the first of each with stride 2), global
average pooling and a dense classifier. The stages have 240, 480 and 960 output channels for
``g = 3``, and each unit's bottleneck has a quarter of its stage's output channels. As the paper
says, the first 1x1 convolution of stage 2 is not grouped (its input has only 24 channels).

Counted from that table (bias-free convolutions, each followed by batch normalization with scale
and offset, the classifier with bias), ``g = 3`` at 1x with 1000 classes has 1,865,728 params and
137,460,672 mult-adds on 224x224x3. The paper's table 1 gives 137M for ``g = 3`` (143M, 140M,
133M and 137M for ``g`` = 1, 2, 4 and 8; this module counts 143.1M, 140.8M, 134.3M and 138.4M, the
classifier's 0.6M-1.5M included), its table 2 rounds them all to "140 MFLOPs" (it counts
mult-adds as FLOPs). The authors' reference implementation (megvii-model/ShuffleNet-Series,
ShuffleNetV1) is the same network except for a bias-free classifier (1,864,728 params) and lists
138M FLOPs and 1.9M params; its channel shuffle is the inverse permutation of the paper's (see
:func:`channel_shuffle`), which only renames channels.

References:
    Zhang, Zhou, Lin and Sun, "ShuffleNet: an extremely efficient convolutional neural network for
    mobile devices", CVPR 2018, arXiv:1707.01083.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._lenet import _check_input_shape
from jaxcomp.models._lenet import _check_num_classes

__all__ = [
    "NNXShuffleNet",
    "NNXShuffleUnit",
    "ShuffleNet",
    "ShuffleUnit",
    "channel_shuffle",
]

_BN_MOMENTUM = 0.9
_PAD = ((1, 1), (1, 1))  # the reference's padding of every 3x3 window (output ceil(h / 2))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """ShuffleNet's channel shuffle: reshape the channels to ``(groups, n)``, transpose, flatten.

    With ``C = groups * n`` channels, output channel ``j * groups + i`` is input channel
    ``i * n + j``: the first output group takes the first channel of every input group, and so
    on, so that a following group convolution sees every group of the one before. The inverse
    permutation is ``channel_shuffle(x, C // groups)``.

    Args:
        x: activations whose last axis (channels) is divisible by ``groups``.
        groups: the number of groups.

    Returns:
        ``x`` with its channels permuted (same shape).

    Raises:
        ValueError: if ``groups`` is not a positive integer that divides the channels.

    Examples:
        >>> import jax.numpy as jnp
        >>> channel_shuffle(jnp.arange(6), 2).tolist()
        [0, 3, 1, 4, 2, 5]
        >>> channel_shuffle(channel_shuffle(jnp.arange(6), 2), 3).tolist()
        [0, 1, 2, 3, 4, 5]

    References:
        Zhang et al., "ShuffleNet", CVPR 2018, arXiv:1707.01083 (section 3.1).
    """
    channels = x.shape[-1]
    if not _is_int(groups) or groups < 1 or channels % groups:
        raise ValueError(
            f"channel_shuffle: groups must be a positive integer that divides the {channels} "
            f"channels of x (shape {x.shape}), got {groups!r}"
        )
    lead = x.shape[:-1]
    x = x.reshape((*lead, groups, channels // groups))
    return jnp.swapaxes(x, -1, -2).reshape((*lead, channels))


def _check_unit(features: int, strides: int, groups: int) -> None:
    if not _is_int(features) or features < 4:
        raise ValueError(f"features must be an integer >= 4, got {features!r}")
    if strides not in (1, 2) or isinstance(strides, bool):
        raise ValueError(f"strides must be 1 or 2, got {strides!r}")
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups must be an integer >= 1, got {groups!r}")


def _check_unit_input(in_features, features, strides, groups, group_first, shape=None) -> None:
    """The unit's widths against its input channels (the shape names the input, if known)."""
    where = f" (input shape {shape})" if shape is not None else ""
    branch = features - in_features if strides == 2 else features
    if strides == 1 and in_features != features:
        raise ValueError(
            f"a stride-1 ShuffleUnit adds its input: it needs {features} input channels, got "
            f"{in_features}{where}"
        )
    if branch < 1:
        raise ValueError(
            f"a stride-2 ShuffleUnit concatenates its input: features ({features}) must exceed "
            f"the {in_features} input channels{where}"
        )
    mid = features // 4
    first = groups if group_first else 1
    for name, size, g in (
        ("input channels", in_features, first),
        ("bottleneck channels (features // 4)", mid, groups),
        ("branch output channels", branch, groups),
    ):
        if size % g:
            raise ValueError(
                f"ShuffleUnit(features={features}, groups={groups}): the {name} ({size}) must be "
                f"divisible by the {g} groups of their group convolution{where}"
            )


class ShuffleUnit(nn.Module):
    """ShuffleNet unit: 1x1 group conv, BN, ReLU, shuffle, 3x3 depthwise, BN, 1x1 group conv, BN.

    Stride 1: ``relu(x + branch(x))``. Stride 2 (the depthwise convolution strided): ``relu(concat(
    avg_pool_3x3_s2(x), branch(x)))``, the branch making ``features - in_channels`` channels.
    The bottleneck has ``features // 4`` channels. Submodules ``Conv_0`` (1x1, ``groups`` groups,
    or dense with ``group_first=False``), ``BatchNorm_0``, ``Conv_1`` (3x3 depthwise),
    ``BatchNorm_1``, ``Conv_2`` (1x1, ``groups`` groups) and ``BatchNorm_2``; all convolutions are
    bias-free.

    Attributes:
        features: output channels.
        strides: 1 (identity shortcut, ``features`` input channels) or 2 (average-pooled
            shortcut, concatenated).
        groups: the groups ``g`` of the 1x1 group convolutions and of the channel shuffle.
        group_first: whether the first 1x1 convolution is grouped (the paper does not group it
            in the first unit of stage 2).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> unit = ShuffleUnit(features=12, strides=2, groups=3)
        >>> x = jnp.zeros((2, 8, 8, 3))
        >>> variables = jax.eval_shape(unit.init, jax.random.key(0), x)
        >>> variables["params"]["Conv_2"]["kernel"].shape  # 3 -> 9 in 3 groups
        (1, 1, 1, 9)
        >>> jax.eval_shape(unit.apply, variables, x).shape
        (2, 4, 4, 12)

    References:
        Zhang et al., "ShuffleNet", CVPR 2018, arXiv:1707.01083 (section 3.2, figure 2).
    """

    features: int
    strides: int = 1
    groups: int = 3
    group_first: bool = True

    def __post_init__(self) -> None:
        _check_unit(self.features, self.strides, self.groups)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the unit.

        Args:
            x: NHWC activations.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            ``(batch, ceil(h / strides), ceil(w / strides), features)``.

        Raises:
            ValueError: if the input channels do not fit ``features``, ``strides`` and ``groups``.
        """
        in_features = x.shape[-1]
        _check_unit_input(
            in_features, self.features, self.strides, self.groups, self.group_first, x.shape
        )
        mid = self.features // 4
        branch = self.features - in_features if self.strides == 2 else self.features

        def conv(features, size, strides, groups, name):
            return nn.Conv(
                features,
                (size, size),
                strides=(strides, strides),
                padding=_PAD if size == 3 else "VALID",
                feature_group_count=groups,
                use_bias=False,
                kernel_init=nn.initializers.kaiming_normal(),
                name=name,
            )

        def norm(name):
            return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, name=name)

        y = conv(mid, 1, 1, self.groups if self.group_first else 1, "Conv_0")(x)
        y = channel_shuffle(nn.relu(norm("BatchNorm_0")(y)), self.groups)
        y = norm("BatchNorm_1")(conv(mid, 3, self.strides, mid, "Conv_1")(y))
        y = norm("BatchNorm_2")(conv(branch, 1, 1, self.groups, "Conv_2")(y))
        if self.strides == 1:
            return nn.relu(x + y)
        shortcut = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=_PAD)
        return nn.relu(jnp.concatenate([shortcut, y], axis=-1))


def _check(
    num_classes: int,
    groups: int,
    widths: Sequence[int],
    stem: int,
    repeats: Sequence[int],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    _check_num_classes(num_classes)
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups must be an integer >= 1, got {groups!r}")
    if not _is_int(stem) or stem < 1:
        raise ValueError(f"stem must be an integer >= 1, got {stem!r}")
    widths, repeats = tuple(widths), tuple(repeats)
    if not widths or any(not _is_int(w) or w < 4 for w in widths):
        raise ValueError(
            f"widths must be a non-empty sequence of integers >= 4 (stage output channels), "
            f"got {widths}"
        )
    if len(repeats) != len(widths) or any(not _is_int(r) or r < 1 for r in repeats):
        raise ValueError(
            f"repeats must be one integer >= 1 per stage ({len(widths)} stages), got {repeats}"
        )
    in_features = stem
    for stage, (width, count) in enumerate(zip(widths, repeats)):
        try:
            _check_unit_input(in_features, width, 2, groups, stage > 0)
            if count > 1:
                _check_unit_input(width, width, 1, groups, True)
        except ValueError as error:
            raise ValueError(
                f"widths[{stage}] = {width} does not fit the units of stage {stage} (after "
                f"{in_features} channels, groups={groups}): {error}"
            ) from None
        in_features = width
    return widths, repeats


def _check_x(x: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(f"ShuffleNet expects NHWC input (batch, h, w, c), got shape {x.shape}")


def _units(widths, repeats):
    """``(features, strides, group_first)`` of every unit, in order."""
    return [
        (width, 2 if unit == 0 else 1, not (stage == 0 and unit == 0))
        for stage, (width, count) in enumerate(zip(widths, repeats))
        for unit in range(count)
    ]


class ShuffleNet(nn.Module):
    """ShuffleNet v1: 3x3 s2 conv, 3x3 s2 max pool, three stages of ShuffleNet units, pool, dense.

    Submodules ``Conv_0`` and ``BatchNorm_0`` (the stem), ``ShuffleUnit_0`` ...
    ``ShuffleUnit_{sum(repeats) - 1}`` and ``Dense_0``. Batch-norm statistics live in the
    ``batch_stats`` collection (momentum 0.9); with ``train=True`` apply with
    ``mutable=["batch_stats"]``. Any input size works (windows are padded by 1, outputs
    ``ceil(h / 2)``); 224x224 is the paper's.

    At the defaults (``g = 3``, 1x) with 1000 classes: 1,865,728 params and 137,460,672
    mult-adds on 224x224x3 (the paper: 137M in table 1, "140M" in table 2; the reference
    implementation: 1.9M, 138M).

    Attributes:
        num_classes: number of output logits.
        groups: the groups ``g`` of the pointwise group convolutions (1, 2, 3, 4 or 8 in the
            paper, with stage widths 144, 200, 240, 272 and 384 at 1x, doubling per stage).
        widths: output channels of the three stages (``(240, 480, 960)`` for ``g = 3`` at 1x;
            ``s x`` scales them and ``stem`` by ``s``).
        stem: output channels of the first convolution (24).
        repeats: units per stage (``(4, 8, 4)``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = ShuffleNet(num_classes=10, widths=(12, 24, 48), stem=3, repeats=(1, 1, 1))
        >>> x = jnp.zeros((2, 32, 32, 3))
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
        >>> jax.eval_shape(model.apply, variables, x).shape
        (2, 10)

    References:
        Zhang, Zhou, Lin and Sun, "ShuffleNet: an extremely efficient convolutional neural
        network for mobile devices", CVPR 2018, arXiv:1707.01083.
    """

    num_classes: int = 1000
    groups: int = 3
    widths: Sequence[int] = (240, 480, 960)
    stem: int = 24
    repeats: Sequence[int] = (4, 8, 4)

    def __post_init__(self) -> None:
        _check(self.num_classes, self.groups, self.widths, self.stem, self.repeats)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``; 224x224x3 for ImageNet.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``;
                otherwise it uses the running averages.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D.
        """
        _check_x(x)
        x = nn.Conv(
            self.stem,
            (3, 3),
            strides=(2, 2),
            padding=_PAD,
            use_bias=False,
            kernel_init=nn.initializers.kaiming_normal(),
            name="Conv_0",
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, name="BatchNorm_0")(
            x
        )
        x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=_PAD)
        for index, (features, strides, group_first) in enumerate(_units(self.widths, self.repeats)):
            x = ShuffleUnit(
                features, strides, self.groups, group_first, name=f"ShuffleUnit_{index}"
            )(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="Dense_0")(x)


def _nnx_conv(in_features, features, size, strides, groups, rngs):
    return nnx.Conv(
        in_features,
        features,
        (size, size),
        strides=(strides, strides),
        padding=_PAD if size == 3 else "VALID",
        feature_group_count=groups,
        use_bias=False,
        kernel_init=nnx.initializers.kaiming_normal(),
        rngs=rngs,
    )


class NNXShuffleUnit(nnx.Module):
    """:class:`ShuffleUnit` as a Flax NNX module, with the same submodule names.

    Args:
        in_features: input channels.
        features: output channels.
        strides: 1 or 2.
        groups: the groups of the 1x1 group convolutions and of the shuffle.
        group_first: whether the first 1x1 convolution is grouped.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> from flax import nnx
        >>> unit = nnx.eval_shape(lambda: NNXShuffleUnit(3, 12, 2, 3, rngs=nnx.Rngs(0)))
        >>> unit.Conv_0.kernel.shape, unit.Conv_2.kernel.shape
        ((1, 1, 1, 3), (1, 1, 1, 9))
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        strides: int = 1,
        groups: int = 3,
        group_first: bool = True,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        _check_unit(features, strides, groups)
        if not _is_int(in_features) or in_features < 1:
            raise ValueError(f"in_features must be an integer >= 1, got {in_features!r}")
        _check_unit_input(in_features, features, strides, groups, group_first)
        self.strides, self.groups = strides, groups
        mid = features // 4
        branch = features - in_features if strides == 2 else features
        norm = lambda n: nnx.BatchNorm(n, momentum=_BN_MOMENTUM, rngs=rngs)
        first = groups if group_first else 1
        self.Conv_0 = _nnx_conv(in_features, mid, 1, 1, first, rngs)
        self.BatchNorm_0 = norm(mid)
        self.Conv_1 = _nnx_conv(mid, mid, 3, strides, mid, rngs)
        self.BatchNorm_1 = norm(mid)
        self.Conv_2 = _nnx_conv(mid, branch, 1, 1, groups, rngs)
        self.BatchNorm_2 = norm(branch)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, ceil(h / strides), ceil(w / strides), features)``."""
        y = nnx.relu(self.BatchNorm_0(self.Conv_0(x)))
        y = self.BatchNorm_1(self.Conv_1(channel_shuffle(y, self.groups)))
        y = self.BatchNorm_2(self.Conv_2(y))
        if self.strides == 1:
            return nnx.relu(x + y)
        shortcut = nnx.avg_pool(x, (3, 3), strides=(2, 2), padding=_PAD)
        return nnx.relu(jnp.concatenate([shortcut, y], axis=-1))


class NNXShuffleNet(nnx.Module):
    """:class:`ShuffleNet` as a Flax NNX module, with the same params and batch-stats paths.

    The module starts in NNX's train mode (``.eval()`` for the running averages).

    Args:
        num_classes: number of output logits.
        groups: the groups of the pointwise group convolutions.
        widths: output channels of the stages.
        stem: output channels of the first convolution.
        repeats: units per stage.
        input_shape: ``(height, width, channels)`` of one example; it fixes ``Conv_0``'s input
            channels.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: NNXShuffleNet(
        ...     num_classes=10, widths=(12, 24, 48), stem=3, repeats=(1, 1, 1),
        ...     input_shape=(32, 32, 3), rngs=nnx.Rngs(0)))
        >>> model.ShuffleUnit_2.Conv_2.kernel.shape
        (1, 1, 4, 24)
    """

    def __init__(
        self,
        num_classes: int = 1000,
        groups: int = 3,
        widths: Sequence[int] = (240, 480, 960),
        stem: int = 24,
        repeats: Sequence[int] = (4, 8, 4),
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        rngs: nnx.Rngs,
    ) -> None:
        widths, repeats = _check(num_classes, groups, widths, stem, repeats)
        in_features = _check_input_shape(input_shape, 3)[-1]
        self.Conv_0 = nnx.Conv(
            in_features,
            stem,
            (3, 3),
            strides=(2, 2),
            padding=_PAD,
            use_bias=False,
            kernel_init=nnx.initializers.kaiming_normal(),
            rngs=rngs,
        )
        self.BatchNorm_0 = nnx.BatchNorm(stem, momentum=_BN_MOMENTUM, rngs=rngs)
        in_features = stem
        units = _units(widths, repeats)
        for index, (features, strides, group_first) in enumerate(units):
            unit = NNXShuffleUnit(in_features, features, strides, groups, group_first, rngs=rngs)
            setattr(self, f"ShuffleUnit_{index}", unit)
            in_features = features
        self.units = len(units)
        self.Dense_0 = nnx.Linear(in_features, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_x(x)
        x = nnx.relu(self.BatchNorm_0(self.Conv_0(x)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=_PAD)
        for index in range(self.units):
            x = getattr(self, f"ShuffleUnit_{index}")(x)
        x = jnp.mean(x, axis=(1, 2))
        return self.Dense_0(x)

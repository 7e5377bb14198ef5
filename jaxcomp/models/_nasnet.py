"""NASNet-A of Zoph et al.: the searched normal and reduction cells and NASNet-A Mobile (4 @ 1056).

A NASNet-A cell takes two inputs, the previous cell's output ``x`` and the one before it,
``prev``. Both are brought to the cell's width ``F`` (``x`` by ReLU, 1x1 conv and batch norm;
``prev`` by ReLU and a :class:`FactorizedReduction` when it is twice as large, by ReLU, 1x1 conv
and batch norm when only its width differs), giving the hidden states ``h0`` and ``h1``. Five
combinations each add two operations (a :class:`SeparableConv`, 3x3 average or max pooling, or
the identity) of earlier hidden states into a new one, and the cell outputs the concatenation of
the hidden states that no combination read. The wiring (the paper's figure 4) is taken from the
authors' release, TF-slim's ``nets/nasnet/nasnet_utils.py`` (``NasNetANormalCell`` and
``NasNetAReductionCell``), and agrees with ``keras.applications.nasnet``:

* normal cell (output ``6F`` channels at the input's size): ``h1``, ``sep5(h0) + sep3(h1)``,
  ``sep5(h1) + sep3(h1)``, ``avg3(h0) + h1``, ``avg3(h1) + avg3(h1)``, ``sep3(h0) + h0``;
* reduction cell (output ``4F`` channels at half the size; the operations on ``h0`` and ``h1``
  have stride 2): ``a = sep5(h0) + sep7(h1)``, ``b = max3(h0) + sep7(h1)``,
  ``avg3(h0) + sep5(h1)``, ``b + avg3(a)``, ``sep3(a) + max3(h0)``; ``a`` is read, so it is not
  in the output.

The paper's figure 4 draws one state fewer into each concatenation (not ``h1`` in the normal
cell, not ``b`` in the reduction cell; tensorflow/models PR #5108 and issue #5325 point this
out). The released code is what the published figures describe: with the drawn wiring, "4 @ 1056"
would end in 880 channels and have 4,772,516 params and 518.3M mult-adds instead of 1056, 5.3M
and 564M.

Pooling is "SAME" with the padding left out of the average (TensorFlow's ``avg_pool``).

:class:`NASNetA` is TF-slim's ``build_nasnet_mobile`` without the auxiliary head (a
training-only classifier that TF-slim builds when ``is_training`` and Keras leaves out; the
published 5.3M does not count it), without drop-path (the mobile configuration trains with
``drop_path_keep_prob=1.0``) and without the dropout before the classifier (neither has
parameters). It is a 3x3 stride-2 VALID convolution with 32 filters and batch norm, two reduction
cells as the ImageNet stem (widths ``F / 4`` and ``F / 2``), then three stages of ``N`` normal
cells at widths ``F``, ``2F`` and ``4F`` with a reduction cell before the second and third, ReLU,
global average pooling and a dense classifier, where
``F = penultimate_filters / 24``. NASNet-A Mobile, "4 @ 1056", is ``N = 4``, ``F = 44``; at
224x224 with 1000 classes it has 5,289,978 params (batch-norm scale and offset counted; the
36,738 running means and variances are not) against the paper's "5.3M", and 563,638,816
mult-adds (convolutions and the classifier) against its "564M". Keras's ``NASNetMobile`` reports
5,326,716 "total params": the same 5,289,978 plus the batch-norm statistics.

References:
    Zoph, Vasudevan, Shlens and Le, "Learning transferable architectures for scalable image
    recognition", CVPR 2018, arXiv:1707.07012.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._lenet import _check_input_shape

__all__ = [
    "FactorizedReduction",
    "NASNetA",
    "NASNetNormalCell",
    "NASNetReductionCell",
    "NNXFactorizedReduction",
    "NNXNASNetA",
    "NNXNASNetNormalCell",
    "NNXNASNetReductionCell",
    "NNXSeparableConv",
    "SeparableConv",
]

_BN_MOMENTUM = 0.9
# TF-slim's and Keras's ImageNet NASNets use epsilon 1e-3 (and decay 0.9997, which suits their
# 250k-step runs; the zoo keeps 0.9, TF-slim's CIFAR value, for short runs).
_BN_EPSILON = 1e-3
# the stem: a 3x3 stride-2 VALID convolution needs at least 3x3 pixels; the cells use SAME
# padding and work down to 1x1.
_MIN_SIZE = 3


class _Spec(NamedTuple):
    """A cell's wiring, in TF-slim's words: five combinations, each the sum of two operations
    (``ops``) on two hidden states (``inputs``: 0 is ``h0``, 1 is ``h1``, 2... the earlier
    combinations' results); ``used`` marks the states left out of the output; the operations on
    ``h0`` and ``h1`` have stride ``strides``."""

    ops: tuple[tuple[str, str], ...]
    inputs: tuple[tuple[int, int], ...]
    used: tuple[int, ...]
    strides: int


# nasnet_utils.NasNetANormalCell: operations, hiddenstate_indices, used_hiddenstates
_NORMAL = _Spec(
    ops=(
        ("separable_5x5_2", "separable_3x3_2"),
        ("separable_5x5_2", "separable_3x3_2"),
        ("avg_pool_3x3", "none"),
        ("avg_pool_3x3", "avg_pool_3x3"),
        ("separable_3x3_2", "none"),
    ),
    inputs=((0, 1), (1, 1), (0, 1), (1, 1), (0, 0)),
    used=(1, 0, 0, 0, 0, 0, 0),
    strides=1,
)
# nasnet_utils.NasNetAReductionCell
_REDUCTION = _Spec(
    ops=(
        ("separable_5x5_2", "separable_7x7_2"),
        ("max_pool_3x3", "separable_7x7_2"),
        ("avg_pool_3x3", "separable_5x5_2"),
        ("none", "avg_pool_3x3"),
        ("separable_3x3_2", "max_pool_3x3"),
    ),
    inputs=((0, 1), (0, 1), (0, 1), (3, 2), (2, 0)),
    used=(1, 1, 1, 0, 0, 0, 0),
    strides=2,
)


def _op(op: str) -> tuple[str, int]:
    """``"separable_5x5_2"`` -> ``("separable", 5)`` (the stacked pair of :class:`SeparableConv`:
    NASNet-A has no other), ``"avg_pool_3x3"`` -> ``("avg", 3)``, ``"none"`` -> ``("none", 1)``."""
    if op == "none":
        return "none", 1
    return op.split("_")[0], int(re.search(r"_(\d+)x\1", op).group(1))


def _outputs(spec: _Spec) -> int:
    """How many hidden states a cell concatenates."""
    return len(spec.used) - sum(spec.used)


def _separables(spec: _Spec, h1_features: int, features: int) -> list[tuple[int, int, int]]:
    """``(kernel_size, strides, in_features)`` of the cell's separable convolutions, in order."""
    out = []
    for op, index in zip(sum(spec.ops, ()), sum(spec.inputs, ())):
        kind, size = _op(op)
        if kind == "separable":
            strides = spec.strides if index < 2 else 1
            out.append((size, strides, h1_features if index == 1 else features))
    return out


def _combine(
    spec: _Spec,
    h0: jax.Array,
    h1: jax.Array,
    separable: Callable[[int, jax.Array], jax.Array],
) -> jax.Array:
    """Runs the five combinations; ``separable(i, y)`` applies the cell's ``i``-th separable
    convolution (with the size and stride of :func:`_separables`)."""
    states, sep = [h0, h1], 0
    for ops, inputs in zip(spec.ops, spec.inputs):
        pair = []
        for op, index in zip(ops, inputs):
            kind, size = _op(op)
            strides = (spec.strides, spec.strides) if index < 2 else (1, 1)
            y = states[index]
            if kind == "separable":
                y, sep = separable(sep, y), sep + 1
            elif kind == "avg":
                y = nn.avg_pool(y, (size, size), strides, "SAME", count_include_pad=False)
            elif kind == "max":
                y = nn.max_pool(y, (size, size), strides, "SAME")
            # "none": NASNet-A's identities read stride-1 states of width F only
            pair.append(y)
        states.append(pair[0] + pair[1])
    return jnp.concatenate([h for h, used in zip(states, spec.used) if not used], axis=-1)


def _check_features(features: int, name: str = "features", *, even: bool = False) -> None:
    least = 2 if even else 1
    if (
        not isinstance(features, int)
        or isinstance(features, bool)
        or features < least
        or (even and features % 2)
    ):
        kind = "an even integer >= 2" if even else "an integer >= 1"
        raise ValueError(f"{name} must be {kind}, got {features!r}")


def _check_separable(features: int, kernel_size: int, strides: int) -> None:
    _check_features(features)
    _check_features(kernel_size, "kernel_size")
    _check_features(strides, "strides")


def _half(size: int) -> int:
    """The output size of a SAME stride-2 operation."""
    return -(-size // 2)


def _adjustment(cell: str, features: int, x_shape: Sequence[int], prev_shape: Sequence[int]):
    """How a cell brings ``prev`` to ``x``'s size and the cell's width: ``"reduce"`` (factorized
    reduction), ``"project"`` (1x1 conv) or ``"none"``; shapes are ``(h, w, c)``."""
    (h, w, _), (ph, pw, pc) = x_shape, prev_shape
    if (ph, pw) != (h, w):
        if (_half(ph), _half(pw)) != (h, w):
            raise ValueError(
                f"{cell}: prev must have x's height and width or twice them (rounded up), got x "
                f"of shape {tuple(x_shape)} and prev of shape {tuple(prev_shape)}"
            )
        if features % 2:
            raise ValueError(
                f"{cell}: a prev twice x's size is halved by a factorized reduction, which needs "
                f"an even number of features, got features={features}"
            )
        return "reduce"
    return "project" if pc != features else "none"


def _check_cell_inputs(cell: str, x: jax.Array, prev: jax.Array | None) -> None:
    if x.ndim != 4 or (prev is not None and (prev.ndim != 4 or prev.shape[0] != x.shape[0])):
        got = f"x of shape {x.shape}" + ("" if prev is None else f", prev of shape {prev.shape}")
        raise ValueError(f"{cell} expects NHWC inputs with one batch size, got {got}")


def _check(num_classes: int, num_cells: int, penultimate_filters: int, stem_filters: int):
    _check_features(num_classes, "num_classes")
    _check_features(num_cells, "num_cells")
    if (
        not isinstance(penultimate_filters, int)
        or isinstance(penultimate_filters, bool)
        or penultimate_filters < 96
        or penultimate_filters % 96
    ):
        raise ValueError(
            f"penultimate_filters must be a positive multiple of 96 (24 x the cell width F, and F "
            f"a multiple of 4 so the stem's reductions have even widths), got "
            f"{penultimate_filters!r}"
        )
    _check_features(stem_filters, "stem_filters")


def _check_x(x: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(f"NASNetA expects NHWC input (batch, h, w, c), got shape {x.shape}")
    if min(x.shape[1], x.shape[2]) < _MIN_SIZE:
        raise ValueError(
            f"NASNetA input of shape {x.shape} is too small: height and width must be >= "
            f"{_MIN_SIZE} (the stem's 3x3 stride-2 VALID convolution)"
        )


def _plan(num_cells: int, filters: int) -> list[tuple[str, int]]:
    """``(submodule name, width)`` of each cell in order: the two stem reduction cells, then
    three stages of ``num_cells`` normal cells with a reduction cell before the second and
    third (TF-slim's ``calc_reduction_layers``)."""
    plan = [("NASNetReductionCell_0", filters // 4), ("NASNetReductionCell_1", filters // 2)]
    normal = 0
    for stage in range(3):
        if stage:
            plan.append((f"NASNetReductionCell_{stage + 1}", filters * 2**stage))
        for _ in range(num_cells):
            plan.append((f"NASNetNormalCell_{normal}", filters * 2**stage))
            normal += 1
    return plan


def _conv(features: int, size: int, name: str, padding: str = "SAME", **kw) -> nn.Conv:
    return nn.Conv(
        features,
        (size, size),
        padding=padding,
        use_bias=False,
        kernel_init=nn.initializers.kaiming_normal(),
        name=name,
        **kw,
    )


def _norm(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name
    )


class SeparableConv(nn.Module):
    """NASNet's separable operation: (ReLU, depthwise kxk, pointwise 1x1, batch norm) twice.

    Submodules ``Conv_0`` (depthwise, one filter per input channel, stride ``strides``),
    ``Conv_1`` (pointwise, to ``features``), ``BatchNorm_0``, then ``Conv_2`` (depthwise, stride
    1), ``Conv_3`` (pointwise) and ``BatchNorm_1``; the convolutions are bias-free. This is
    TF-slim's ``_stacked_separable_conv`` for ``separable_kxk_2`` (depth multiplier 1); the
    paper's appendix A.4 describes applying the separable convolution twice.

    Attributes:
        features: output channels (of both pointwise convolutions).
        kernel_size: ``k`` of the depthwise ``k x k`` convolutions.
        strides: stride of the first depthwise convolution.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> block = SeparableConv(features=2, kernel_size=3, strides=2)  # shapes only
        >>> x = jnp.zeros((1, 8, 8, 3))
        >>> variables = jax.eval_shape(block.init, jax.random.key(0), x)
        >>> params = variables["params"]
        >>> params["Conv_0"]["kernel"].shape, params["Conv_1"]["kernel"].shape
        ((3, 3, 1, 3), (1, 1, 3, 2))
        >>> jax.eval_shape(block.apply, variables, x).shape
        (1, 4, 4, 2)
    """

    features: int
    kernel_size: int
    strides: int = 1

    def __post_init__(self) -> None:
        _check_separable(self.features, self.kernel_size, self.strides)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the operation.

        Args:
            x: NHWC activations.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            ``(batch, ceil(h / strides), ceil(w / strides), features)``.
        """
        k, s = self.kernel_size, self.strides
        for layer, strides in enumerate((s, 1)):
            x = nn.relu(x)
            groups = x.shape[-1]
            x = _conv(groups, k, f"Conv_{2 * layer}", strides=strides, feature_group_count=groups)(
                x
            )
            x = _conv(self.features, 1, f"Conv_{2 * layer + 1}")(x)
            x = _norm(train, f"BatchNorm_{layer}")(x)
        return x


class FactorizedReduction(nn.Module):
    """Halves the size without dropping pixels: two strided 1x1 paths, concatenated.

    One 1x1 stride-2 convolution (``Conv_0``) reads the even pixels, the other (``Conv_1``) the
    odd ones (the input shifted by one pixel down and right, zero-padded at the far edge); each
    gives ``features / 2`` channels, and ``BatchNorm_0`` normalizes their concatenation. This is
    TF-slim's ``factorized_reduction`` (its 1x1 stride-2 average pooling followed by a 1x1
    convolution is one strided 1x1 convolution); a NASNet cell applies it, after a ReLU, to a
    ``prev`` input that is twice its size.

    Attributes:
        features: output channels, even.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> block = FactorizedReduction(features=4)  # shapes only
        >>> x = jnp.zeros((1, 7, 7, 3))
        >>> variables = jax.eval_shape(block.init, jax.random.key(0), x)
        >>> jax.eval_shape(block.apply, variables, x).shape
        (1, 4, 4, 4)
    """

    features: int

    def __post_init__(self) -> None:
        _check_features(self.features, even=True)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the reduction.

        Args:
            x: NHWC activations.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            ``(batch, ceil(h / 2), ceil(w / 2), features)``.
        """
        half = self.features // 2
        even = _conv(half, 1, "Conv_0", strides=(2, 2))(x)
        odd = _conv(half, 1, "Conv_1", strides=(2, 2))(_shift(x))
        return _norm(train, "BatchNorm_0")(jnp.concatenate([even, odd], axis=-1))


def _shift(x: jax.Array) -> jax.Array:
    """``x`` moved up and left by one pixel, zero-padded at the bottom and right."""
    return jnp.pad(x[:, 1:, 1:, :], ((0, 0), (0, 1), (0, 1), (0, 0)))


def _linen_cell(
    cell: str, spec: _Spec, features: int, x: jax.Array, prev: jax.Array | None, train: bool
) -> jax.Array:
    _check_cell_inputs(cell, x, prev)
    if prev is None:  # TF-slim's first stem cell: h1 is the raw input
        h1 = x
    else:
        adjust = _adjustment(cell, features, x.shape[1:], prev.shape[1:])
        if adjust == "reduce":
            h1 = FactorizedReduction(features, name="FactorizedReduction_0")(nn.relu(prev), train)
        elif adjust == "project":
            h1 = _norm(train, "BatchNorm_prev")(_conv(features, 1, "Conv_prev")(nn.relu(prev)))
        else:
            h1 = prev
    h0 = _norm(train, "BatchNorm_0")(_conv(features, 1, "Conv_0")(nn.relu(x)))
    convs = [
        SeparableConv(features, size, strides, name=f"SeparableConv_{i}")
        for i, (size, strides, _) in enumerate(_separables(spec, h1.shape[-1], features))
    ]
    return _combine(spec, h0, h1, lambda i, y: convs[i](y, train))


class NASNetNormalCell(nn.Module):
    """The NASNet-A normal cell (figure 4, left, of Zoph et al.): ``6 * features`` channels out,
    at the input's height and width.

    ``h0 = bn(conv1x1(relu(x)))``; ``h1`` is ``prev`` brought to ``x``'s size and
    ``features`` channels (see the module docstring); the output concatenates ``h1``,
    ``sep5(h0) + sep3(h1)``, ``sep5(h1) + sep3(h1)``, ``avg3(h0) + h1``,
    ``avg3(h1) + avg3(h1)`` and ``sep3(h0) + h0``. Submodules: ``FactorizedReduction_0`` (when
    ``prev`` is twice ``x``'s size) or ``Conv_prev`` and ``BatchNorm_prev`` (when only its width
    differs from ``features``), ``Conv_0``, ``BatchNorm_0``, and :class:`SeparableConv`
    ``SeparableConv_0`` ... ``SeparableConv_4`` in the order above.

    Attributes:
        features: the cell's width ``F``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> cell = NASNetNormalCell(features=2)  # shapes only
        >>> x, prev = jnp.zeros((1, 4, 4, 3)), jnp.zeros((1, 8, 8, 5))
        >>> variables = jax.eval_shape(cell.init, jax.random.key(0), x, prev)
        >>> jax.eval_shape(cell.apply, variables, x, prev).shape
        (1, 4, 4, 12)
    """

    features: int

    def __post_init__(self) -> None:
        _check_features(self.features)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, prev: jax.Array, train: bool = False) -> jax.Array:
        """Applies the cell.

        Args:
            x: NHWC output of the previous cell.
            prev: NHWC output of the cell before it, at ``x``'s height and width or twice them
                (rounded up).
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            ``(batch, h, w, 6 * features)``.

        Raises:
            ValueError: if the inputs are not 4-D with one batch size, or ``prev``'s size is
                neither ``x``'s nor twice it.
        """
        return _linen_cell("NASNetNormalCell", _NORMAL, self.features, x, prev, train)


class NASNetReductionCell(nn.Module):
    """The NASNet-A reduction cell (figure 4, right, of Zoph et al.): ``4 * features`` channels
    out, at half the input's height and width (rounded up).

    With ``h0``, ``h1`` as in :class:`NASNetNormalCell` and the operations on them strided,
    ``a = sep5(h0) + sep7(h1)``, ``b = max3(h0) + sep7(h1)``, ``c = avg3(h0) + sep5(h1)``,
    ``d = b + avg3(a)``, ``e = sep3(a) + max3(h0)``; the output concatenates ``b``, ``c``,
    ``d``, ``e``. Submodules as in :class:`NASNetNormalCell`, with ``SeparableConv_0`` ...
    ``SeparableConv_4`` in the order above. With ``prev=None`` (the first stem cell), ``h1`` is
    ``x`` itself, unprojected, as in TF-slim.

    Attributes:
        features: the cell's width ``F``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> cell = NASNetReductionCell(features=2)  # shapes only
        >>> x = jnp.zeros((1, 7, 7, 3))
        >>> variables = jax.eval_shape(cell.init, jax.random.key(0), x)
        >>> jax.eval_shape(cell.apply, variables, x).shape
        (1, 4, 4, 8)
    """

    features: int

    def __post_init__(self) -> None:
        _check_features(self.features)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, x: jax.Array, prev: jax.Array | None = None, train: bool = False
    ) -> jax.Array:
        """Applies the cell.

        Args:
            x: NHWC output of the previous cell.
            prev: NHWC output of the cell before it, at ``x``'s height and width or twice them
                (rounded up), or ``None`` to read ``x`` in its place.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            ``(batch, ceil(h / 2), ceil(w / 2), 4 * features)``.

        Raises:
            ValueError: if the inputs are not 4-D with one batch size, or ``prev``'s size is
                neither ``x``'s nor twice it.
        """
        return _linen_cell("NASNetReductionCell", _REDUCTION, self.features, x, prev, train)


class NASNetA(nn.Module):
    """NASNet-A for ImageNet (TF-slim's ``build_nasnet_mobile`` at the defaults: "4 @ 1056").

    ``Conv_0`` (3x3, stride 2, VALID, ``stem_filters``) and ``BatchNorm_0``; the stem cells
    ``NASNetReductionCell_0`` and ``_1`` (widths ``F / 4``, ``F / 2``); ``num_cells``
    normal cells per stage (``NASNetNormalCell_0`` ...) at widths ``F``, ``2F``, ``4F``, with
    ``NASNetReductionCell_2`` and ``_3`` (widths ``2F``, ``4F``) between the stages; ReLU,
    global average pooling and ``Dense_0``. ``F = penultimate_filters / 24``; each cell reads
    the previous cell's output and the one before it. No auxiliary head, no drop-path, no
    dropout (see the module docstring). At the defaults, 5,289,978 params with 1000 classes
    (the paper: 5.3M) and 563.6M mult-adds at 224x224 (the paper: 564M).

    Attributes:
        num_classes: number of output logits.
        num_cells: normal cells per stage (the paper's ``N``; TF-slim's ``num_cells`` counts
            all ``3N``).
        penultimate_filters: channels of the last cell's output, ``24 F``; a multiple of 96.
        stem_filters: filters of the stem convolution.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = NASNetA(num_cells=1, penultimate_filters=96, stem_filters=4)  # shapes only
        >>> init = lambda x: model.init_with_output(jax.random.key(0), x)
        >>> logits, variables = jax.eval_shape(init, jnp.zeros((2, 32, 32, 3)))
        >>> logits.shape, variables["params"]["Dense_0"]["kernel"].shape
        ((2, 1000), (96, 1000))
    """

    num_classes: int = 1000
    num_cells: int = 4
    penultimate_filters: int = 1056
    stem_filters: int = 32

    def __post_init__(self) -> None:
        _check(self.num_classes, self.num_cells, self.penultimate_filters, self.stem_filters)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``, at least 3x3; 224x224x3 for
                NASNet-A Mobile.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``;
                otherwise it uses the running averages.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or is smaller than 3x3.
        """
        _check_x(x)
        x = _conv(self.stem_filters, 3, "Conv_0", strides=(2, 2), padding="VALID")(x)
        outputs = [None, _norm(train, "BatchNorm_0")(x)]  # TF-slim's cell_outputs
        for name, features in _plan(self.num_cells, self.penultimate_filters // 24):
            cls = NASNetNormalCell if name.startswith("NASNetNormal") else NASNetReductionCell
            outputs.append(cls(features, name=name)(outputs[-1], outputs[-2], train))
        x = jnp.mean(nn.relu(outputs[-1]), axis=(1, 2))
        return nn.Dense(self.num_classes, name="Dense_0")(x)


# Flax NNX twins


def _nnx_conv(
    in_features: int, features: int, size: int, rngs: nnx.Rngs, padding: str = "SAME", **kw
) -> nnx.Conv:
    return nnx.Conv(
        in_features,
        features,
        (size, size),
        padding=padding,
        use_bias=False,
        kernel_init=nnx.initializers.kaiming_normal(),
        rngs=rngs,
        **kw,
    )


def _nnx_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(features, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, rngs=rngs)


class NNXSeparableConv(nnx.Module):
    """:class:`SeparableConv` as a Flax NNX module, with the same submodule names.

    Args:
        features: output channels.
        kernel_size: ``k`` of the depthwise ``k x k`` convolutions.
        strides: stride of the first depthwise convolution.
        input_shape: ``(height, width, channels)`` of one example; its channels fix
            ``Conv_0``'s.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> from flax import nnx
        >>> block = nnx.eval_shape(  # shapes only
        ...     lambda: NNXSeparableConv(2, 3, input_shape=(8, 8, 3), rngs=nnx.Rngs(0))
        ... )
        >>> block.Conv_0.kernel.shape, block.Conv_3.kernel.shape
        ((3, 3, 1, 3), (1, 1, 2, 2))
    """

    def __init__(
        self,
        features: int,
        kernel_size: int,
        strides: int = 1,
        *,
        input_shape: Sequence[int],
        rngs: nnx.Rngs,
    ) -> None:
        _check_separable(features, kernel_size, strides)
        in_features = _check_input_shape(input_shape, 3)[-1]
        for layer, s in enumerate((strides, 1)):
            depthwise = _nnx_conv(
                in_features,
                in_features,
                kernel_size,
                rngs,
                strides=(s, s),
                feature_group_count=in_features,
            )
            setattr(self, f"Conv_{2 * layer}", depthwise)
            setattr(self, f"Conv_{2 * layer + 1}", _nnx_conv(in_features, features, 1, rngs))
            setattr(self, f"BatchNorm_{layer}", _nnx_norm(features, rngs))
            in_features = features

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, ceil(h / strides), ceil(w / strides), features)``."""
        for layer in range(2):
            x = getattr(self, f"Conv_{2 * layer}")(nnx.relu(x))
            x = getattr(self, f"BatchNorm_{layer}")(getattr(self, f"Conv_{2 * layer + 1}")(x))
        return x


class NNXFactorizedReduction(nnx.Module):
    """:class:`FactorizedReduction` as a Flax NNX module, with the same submodule names.

    Args:
        features: output channels, even.
        input_shape: ``(height, width, channels)`` of one example; its channels fix the
            convolutions' inputs.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> from flax import nnx
        >>> block = nnx.eval_shape(  # shapes only
        ...     lambda: NNXFactorizedReduction(4, input_shape=(7, 7, 3), rngs=nnx.Rngs(0))
        ... )
        >>> block.Conv_1.kernel.shape
        (1, 1, 3, 2)
    """

    def __init__(self, features: int, *, input_shape: Sequence[int], rngs: nnx.Rngs) -> None:
        _check_features(features, even=True)
        in_features = _check_input_shape(input_shape, 3)[-1]
        self.Conv_0 = _nnx_conv(in_features, features // 2, 1, rngs, strides=(2, 2))
        self.Conv_1 = _nnx_conv(in_features, features // 2, 1, rngs, strides=(2, 2))
        self.BatchNorm_0 = _nnx_norm(features, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, ceil(h / 2), ceil(w / 2), features)``."""
        y = jnp.concatenate([self.Conv_0(x), self.Conv_1(_shift(x))], axis=-1)
        return self.BatchNorm_0(y)


class _NNXCell(nnx.Module):
    """The NNX cells' shared body; ``cell``, ``spec`` name and wire the concrete cell."""

    def __init__(
        self,
        cell: str,
        spec: _Spec,
        features: int,
        input_shape: Sequence[int],
        prev_shape: Sequence[int] | None,
        rngs: nnx.Rngs,
    ) -> None:
        _check_features(features)
        input_shape = _check_input_shape(input_shape, 3)
        self.cell, self.features = cell, features
        self.spec = spec
        if prev_shape is None:
            self.adjust, h1_features = None, input_shape[-1]
        else:
            prev_shape = _check_input_shape(prev_shape, 3)
            self.adjust = _adjustment(cell, features, input_shape, prev_shape)
            h1_features = features
            if self.adjust == "reduce":
                self.FactorizedReduction_0 = NNXFactorizedReduction(
                    features, input_shape=prev_shape, rngs=rngs
                )
            elif self.adjust == "project":
                self.Conv_prev = _nnx_conv(prev_shape[-1], features, 1, rngs)
                self.BatchNorm_prev = _nnx_norm(features, rngs)
            else:
                h1_features = prev_shape[-1]
        self.Conv_0 = _nnx_conv(input_shape[-1], features, 1, rngs)
        self.BatchNorm_0 = _nnx_norm(features, rngs)
        self.separables = 0
        for i, (size, strides, in_features) in enumerate(_separables(spec, h1_features, features)):
            shape = (*input_shape[:2], in_features)
            conv = NNXSeparableConv(features, size, strides, input_shape=shape, rngs=rngs)
            setattr(self, f"SeparableConv_{i}", conv)
            self.separables += 1

    def __call__(self, x: jax.Array, prev: jax.Array | None = None) -> jax.Array:
        _check_cell_inputs(self.cell, x, prev)
        adjust = (
            None
            if prev is None
            else _adjustment(self.cell, self.features, x.shape[1:], prev.shape[1:])
        )
        if adjust != self.adjust:
            raise ValueError(
                f"{self.cell} was built for a prev adjustment {self.adjust!r} (None: no prev), "
                f"called with x of shape {x.shape} and prev of shape "
                f"{None if prev is None else prev.shape} ({adjust!r})"
            )
        if adjust is None:
            h1 = x
        elif adjust == "reduce":
            h1 = self.FactorizedReduction_0(nnx.relu(prev))
        elif adjust == "project":
            h1 = self.BatchNorm_prev(self.Conv_prev(nnx.relu(prev)))
        else:
            h1 = prev
        h0 = self.BatchNorm_0(self.Conv_0(nnx.relu(x)))
        return _combine(self.spec, h0, h1, lambda i, y: getattr(self, f"SeparableConv_{i}")(y))


def _out_shape(spec: _Spec, features: int, input_shape: Sequence[int]) -> tuple[int, int, int]:
    h, w = input_shape[:2]
    if spec.strides == 2:
        h, w = _half(h), _half(w)
    return h, w, _outputs(spec) * features


class NNXNASNetNormalCell(_NNXCell):
    """:class:`NASNetNormalCell` as a Flax NNX module, with the same submodule names.

    Args:
        features: the cell's width ``F``.
        input_shape: ``(height, width, channels)`` of one example of ``x``.
        prev_shape: the same for ``prev``: ``x``'s height and width or twice them (rounded up).
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> from flax import nnx
        >>> cell = nnx.eval_shape(  # shapes only
        ...     lambda: NNXNASNetNormalCell(
        ...         2, input_shape=(4, 4, 3), prev_shape=(8, 8, 5), rngs=nnx.Rngs(0)
        ...     )
        ... )
        >>> cell.FactorizedReduction_0.Conv_0.kernel.shape, cell.out_shape
        ((1, 1, 5, 1), (4, 4, 12))
    """

    def __init__(
        self,
        features: int,
        *,
        input_shape: Sequence[int],
        prev_shape: Sequence[int],
        rngs: nnx.Rngs,
    ) -> None:
        if prev_shape is None:
            raise ValueError("NNXNASNetNormalCell needs prev_shape, got None")
        super().__init__("NASNetNormalCell", _NORMAL, features, input_shape, prev_shape, rngs)
        self.out_shape = _out_shape(_NORMAL, features, input_shape)

    def __call__(self, x: jax.Array, prev: jax.Array) -> jax.Array:
        """``(batch, h, w, 6 * features)``."""
        return super().__call__(x, prev)


class NNXNASNetReductionCell(_NNXCell):
    """:class:`NASNetReductionCell` as a Flax NNX module, with the same submodule names.

    Args:
        features: the cell's width ``F``.
        input_shape: ``(height, width, channels)`` of one example of ``x``.
        prev_shape: the same for ``prev`` (``x``'s height and width or twice them, rounded up),
            or ``None`` for a cell called without ``prev``.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> from flax import nnx
        >>> cell = nnx.eval_shape(  # shapes only
        ...     lambda: NNXNASNetReductionCell(2, input_shape=(7, 7, 3), rngs=nnx.Rngs(0))
        ... )
        >>> cell.SeparableConv_1.Conv_0.kernel.shape, cell.out_shape
        ((7, 7, 1, 3), (4, 4, 8))
    """

    def __init__(
        self,
        features: int,
        *,
        input_shape: Sequence[int],
        prev_shape: Sequence[int] | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__("NASNetReductionCell", _REDUCTION, features, input_shape, prev_shape, rngs)
        self.out_shape = _out_shape(_REDUCTION, features, input_shape)

    def __call__(self, x: jax.Array, prev: jax.Array | None = None) -> jax.Array:
        """``(batch, ceil(h / 2), ceil(w / 2), 4 * features)``."""
        return super().__call__(x, prev)


class NNXNASNetA(nnx.Module):
    """:class:`NASNetA` as a Flax NNX module, with the same params and batch-stats paths.

    The module starts in NNX's train mode (``.eval()`` for the running averages).

    Args:
        num_classes: number of output logits.
        num_cells: normal cells per stage (the paper's ``N``).
        penultimate_filters: channels of the last cell's output, ``24 F``; a multiple of 96.
        stem_filters: filters of the stem convolution.
        input_shape: ``(height, width, channels)`` of one example, at least 3x3; it fixes the
            cells' input sizes.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> from flax import nnx
        >>> model = nnx.eval_shape(  # shapes only
        ...     lambda: NNXNASNetA(
        ...         num_cells=1, penultimate_filters=96, stem_filters=4,
        ...         input_shape=(32, 32, 3), rngs=nnx.Rngs(0),
        ...     )
        ... )
        >>> model.NASNetNormalCell_2.out_shape, model.Dense_0.kernel.shape
        ((1, 1, 96), (96, 1000))
    """

    def __init__(
        self,
        num_classes: int = 1000,
        num_cells: int = 4,
        penultimate_filters: int = 1056,
        stem_filters: int = 32,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        rngs: nnx.Rngs,
    ) -> None:
        _check(num_classes, num_cells, penultimate_filters, stem_filters)
        h, w, c = _check_input_shape(input_shape, 3)
        if min(h, w) < _MIN_SIZE:
            raise ValueError(
                f"NNXNASNetA input_shape {tuple(input_shape)} is too small: height and width "
                f"must be >= {_MIN_SIZE} (the stem's 3x3 stride-2 VALID convolution)"
            )
        self.Conv_0 = _nnx_conv(c, stem_filters, 3, rngs, strides=(2, 2), padding="VALID")
        self.BatchNorm_0 = _nnx_norm(stem_filters, rngs)
        shapes = [None, ((h - 3) // 2 + 1, (w - 3) // 2 + 1, stem_filters)]
        self.cells = tuple(name for name, _ in _plan(num_cells, penultimate_filters // 24))
        for name, features in _plan(num_cells, penultimate_filters // 24):
            cls = NNXNASNetNormalCell if name.startswith("NASNetNormal") else NNXNASNetReductionCell
            cell = cls(features, input_shape=shapes[-1], prev_shape=shapes[-2], rngs=rngs)
            setattr(self, name, cell)
            shapes.append(cell.out_shape)
        self.Dense_0 = nnx.Linear(penultimate_filters, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_x(x)
        outputs = [None, self.BatchNorm_0(self.Conv_0(x))]
        for name in self.cells:
            outputs.append(getattr(self, name)(outputs[-1], outputs[-2]))
        return self.Dense_0(jnp.mean(nnx.relu(outputs[-1]), axis=(1, 2)))

"""GoogLeNet (Inception v1) and the Inception modules, with 1x1 reductions and factorized kernels.

An Inception module (:class:`InceptionModule`) runs four branches side by side on the same input
and concatenates their channels: a ``1 x 1`` convolution; a ``1 x 1`` reduction then a
``3 x 3``; a ``1 x 1`` reduction then a "``5 x 5``"; and a ``3 x 3`` max pooling (stride 1)
then a ``1 x 1`` projection. The reductions make the expensive convolutions see few channels.

:class:`InceptionFactorized` is the module of Szegedy et al. (2016), figure 6, as torchvision's
Inception-v3 builds it (``InceptionC``): every ``n x n`` convolution is factorized into a
``1 x n`` and an ``n x 1`` one, which cover the same ``n x n`` window with ``2n`` instead of
``n^2`` weights per input-output channel pair.

:class:`GoogLeNet` follows the reference implementation whose count the zoo is tested against,
torchvision's ``googlenet(aux_logits=False)``: 6,624,904 params on 224x224x3 with 1000 classes and
1.50G mult-adds (the paper: "1.5 billion multiply-adds"). It differs from the paper's table 1 in
ways of torchvision's choosing: every convolution is bias-free and followed by batch normalization
(epsilon 1e-3; the paper predates batch norm and has biases and local response normalization),
the "``5 x 5``" branches convolve ``3 x 3`` (torchvision issue 906, kept for its pretrained
weights) and the pooling before inception 5a is ``2 x 2``/2 (same output size as the paper's
``3 x 3``/2). ``kernel_5x5=5, batch_norm=False`` gives the paper's kernels and biases: 6,998,552
params (the issue's "about 7M") and 1.58G mult-adds. The two auxiliary classifiers (a training
loss only) are left out in both. Dropout before the classifier is the paper's 40% (torchvision
uses 20%); it has no parameters.

References:
    Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke and Rabinovich, "Going deeper
    with convolutions", CVPR 2015, arXiv:1409.4842.

    Szegedy, Vanhoucke, Ioffe, Shlens and Wojna, "Rethinking the Inception architecture for
    computer vision", CVPR 2016, arXiv:1512.00567.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._nin import GlobalAvgPoolHead
from jaxcomp.models._nin import NNXGlobalAvgPoolHead
from jaxcomp.models._nin import _check_input_size
from jaxcomp.models._nin import _check_int
from jaxcomp.models._nin import _check_ints
from jaxcomp.models._nin import _check_rate
from jaxcomp.models._nin import _check_x
from jaxcomp.models._nin import _pool_ceil

__all__ = [
    "GoogLeNet",
    "InceptionFactorized",
    "InceptionModule",
    "NNXGoogLeNet",
    "NNXInceptionFactorized",
    "NNXInceptionModule",
]

_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-3  # torchvision's BasicConv2d (Inception v1 and v3)

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of inception 3a, 3b, 4a-4e, 5a, 5b
_GOOGLENET_MODULES = (
    (64, 96, 128, 16, 32, 32),
    (128, 128, 192, 32, 96, 64),
    (192, 96, 208, 16, 48, 64),
    (160, 112, 224, 24, 64, 64),
    (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64),
    (256, 160, 320, 32, 128, 128),
    (256, 160, 320, 32, 128, 128),
    (384, 192, 384, 48, 128, 128),
)
_GOOGLENET_STEM = (64, 64, 192)
_POOL_AFTER = {1: 3, 6: 2}  # module index -> max-pooling window (stride 2) after it


def _conv_unit(
    features: int, kernel: tuple[int, int], batch_norm: bool, train: bool, index: int, **kw
):
    """Linen ``Conv_{index}`` (+ ``BatchNorm_{index}``) + ReLU, as a function of ``x``."""

    def apply(x: jax.Array) -> jax.Array:
        x = nn.Conv(
            features,
            kernel,
            use_bias=not batch_norm,
            kernel_init=nn.initializers.kaiming_normal(),
            name=f"Conv_{index}",
            **kw,
        )(x)
        if batch_norm:
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=_BN_MOMENTUM,
                epsilon=_BN_EPSILON,
                name=f"BatchNorm_{index}",
            )(x)
        return nn.relu(x)

    return apply


class _NNXConvUnits(nnx.Module):
    """NNX counterpart of :func:`_conv_unit`: builds ``Conv_i`` (+ ``BatchNorm_i``) attributes."""

    def _add(
        self,
        index: int,
        in_features: int,
        features: int,
        kernel: tuple[int, int],
        batch_norm: bool,
        rngs: nnx.Rngs,
        **kw,
    ) -> int:
        conv = nnx.Conv(
            in_features,
            features,
            kernel,
            use_bias=not batch_norm,
            kernel_init=nnx.initializers.kaiming_normal(),
            rngs=rngs,
            **kw,
        )
        setattr(self, f"Conv_{index}", conv)
        if batch_norm:
            norm = nnx.BatchNorm(features, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, rngs=rngs)
            setattr(self, f"BatchNorm_{index}", norm)
        return features

    def _unit(self, index: int, x: jax.Array) -> jax.Array:
        x = getattr(self, f"Conv_{index}")(x)
        if hasattr(self, f"BatchNorm_{index}"):
            x = getattr(self, f"BatchNorm_{index}")(x)
        return nnx.relu(x)


def _max_pool_3x3_same(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


# InceptionModule


def _check_module(widths: Sequence[int], kernel_5x5: int, batch_norm: bool) -> None:
    _check_ints(
        "the widths (features_1x1, reduce_3x3, features_3x3, reduce_5x5, features_5x5, pool_proj)",
        widths,
        6,
    )
    _check_int("kernel_5x5", kernel_5x5)
    if not isinstance(batch_norm, bool):
        raise ValueError(f"batch_norm must be a bool, got {batch_norm!r}")


class InceptionModule(nn.Module):
    """The Inception module with ``1 x 1`` reductions (Szegedy et al. 2015, figure 2b).

    Four branches of conv + (batch norm) + ReLU units, concatenated along the channels in this
    order: ``Conv_0`` (``1 x 1``, ``features_1x1``); ``Conv_1`` (``1 x 1``, ``reduce_3x3``) then
    ``Conv_2`` (``3 x 3``, ``features_3x3``); ``Conv_3`` (``1 x 1``, ``reduce_5x5``) then
    ``Conv_4`` (``kernel_5x5`` square, ``features_5x5``); a ``3 x 3`` stride-1 max pooling then
    ``Conv_5`` (``1 x 1``, ``pool_proj``). The output has ``features_1x1 + features_3x3 +
    features_5x5 + pool_proj`` channels at the input's spatial size.

    Attributes:
        features_1x1: channels of the ``1 x 1`` branch.
        reduce_3x3: channels of the ``1 x 1`` reduction before the ``3 x 3``.
        features_3x3: channels of the ``3 x 3`` branch.
        reduce_5x5: channels of the ``1 x 1`` reduction before the "``5 x 5``".
        features_5x5: channels of the "``5 x 5``" branch.
        pool_proj: channels of the ``1 x 1`` projection after the pooling.
        kernel_5x5: kernel size of the "``5 x 5``" branch (5 in the paper; torchvision's
            GoogLeNet has 3).
        batch_norm: bias-free convolutions each followed by ``BatchNorm_i`` (epsilon 1e-3,
            momentum 0.9), as torchvision; False: convolutions with biases, as in the paper.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> block = InceptionModule(1, 2, 3, 1, 2, 1)
        >>> x = jax.ShapeDtypeStruct((2, 6, 6, 4), jnp.float32)  # shapes only: nothing runs
        >>> variables = jax.eval_shape(block.init, jax.random.key(0), x)
        >>> jax.eval_shape(block.apply, variables, x).shape
        (2, 6, 6, 7)

    References:
        Szegedy et al., "Going deeper with convolutions", CVPR 2015, arXiv:1409.4842.
    """

    features_1x1: int
    reduce_3x3: int
    features_3x3: int
    reduce_5x5: int
    features_5x5: int
    pool_proj: int
    kernel_5x5: int = 5
    batch_norm: bool = True

    def __post_init__(self) -> None:
        _check_module(self._widths(), self.kernel_5x5, self.batch_norm)
        super().__post_init__()

    def _widths(self) -> tuple[int, ...]:
        return (
            self.features_1x1,
            self.reduce_3x3,
            self.features_3x3,
            self.reduce_5x5,
            self.features_5x5,
            self.pool_proj,
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the module.

        Args:
            x: NHWC activations.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            ``(batch, h, w, features_1x1 + features_3x3 + features_5x5 + pool_proj)``.
        """
        unit = lambda index, features, size: _conv_unit(
            features, (size, size), self.batch_norm, train, index, padding="SAME"
        )
        b1 = unit(0, self.features_1x1, 1)(x)
        b2 = unit(2, self.features_3x3, 3)(unit(1, self.reduce_3x3, 1)(x))
        b3 = unit(4, self.features_5x5, self.kernel_5x5)(unit(3, self.reduce_5x5, 1)(x))
        b4 = unit(5, self.pool_proj, 1)(_max_pool_3x3_same(x))
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class NNXInceptionModule(_NNXConvUnits):
    """:class:`InceptionModule` as a Flax NNX module, with the same submodule names.

    Args:
        in_features: input channels.
        features_1x1: channels of the ``1 x 1`` branch.
        reduce_3x3: channels of the reduction before the ``3 x 3``.
        features_3x3: channels of the ``3 x 3`` branch.
        reduce_5x5: channels of the reduction before the "``5 x 5``".
        features_5x5: channels of the "``5 x 5``" branch.
        pool_proj: channels of the projection after the pooling.
        kernel_5x5: kernel size of the "``5 x 5``" branch.
        batch_norm: bias-free convolutions with batch norm (True) or convolutions with biases.
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> x = jax.ShapeDtypeStruct((2, 6, 6, 4), jnp.float32)  # shapes only: nothing runs
        >>> block = lambda x: NNXInceptionModule(4, 1, 2, 3, 1, 2, 1, rngs=nnx.Rngs(0))(x)
        >>> jax.eval_shape(block, x).shape
        (2, 6, 6, 7)
    """

    def __init__(
        self,
        in_features: int,
        features_1x1: int,
        reduce_3x3: int,
        features_3x3: int,
        reduce_5x5: int,
        features_5x5: int,
        pool_proj: int,
        kernel_5x5: int = 5,
        batch_norm: bool = True,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        _check_int("in_features", in_features)
        widths = (features_1x1, reduce_3x3, features_3x3, reduce_5x5, features_5x5, pool_proj)
        _check_module(widths, kernel_5x5, batch_norm)
        add = lambda index, cin, cout, size: self._add(
            index, cin, cout, (size, size), batch_norm, rngs, padding="SAME"
        )
        add(0, in_features, features_1x1, 1)
        add(2, add(1, in_features, reduce_3x3, 1), features_3x3, 3)
        add(4, add(3, in_features, reduce_5x5, 1), features_5x5, kernel_5x5)
        add(5, in_features, pool_proj, 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The concatenated branches, ``(batch, h, w, sum of the four branch widths)``."""
        b1 = self._unit(0, x)
        b2 = self._unit(2, self._unit(1, x))
        b3 = self._unit(4, self._unit(3, x))
        b4 = self._unit(5, _max_pool_3x3_same(x))
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


# InceptionFactorized


def _factorized_kernels(n: int, factorize: bool) -> tuple[list, list]:
    """The kernels of the two convolution branches after their ``1 x 1`` reductions (as in
    torchvision's ``InceptionC``: ``1 x n, n x 1`` and ``n x 1, 1 x n, n x 1, 1 x n``)."""
    if factorize:
        return [(1, n), (n, 1)], [(n, 1), (1, n), (n, 1), (1, n)]
    return [(n, n)], [(n, n), (n, n)]


def _check_factorized(widths: Sequence[int], n: int, factorize: bool) -> None:
    _check_ints("the widths (features_1x1, reduce, features_nxn, pool_proj)", widths, 4)
    _check_int("n", n, 2)
    if not isinstance(factorize, bool):
        raise ValueError(f"factorize must be a bool, got {factorize!r}")


class InceptionFactorized(nn.Module):
    """The Inception module with ``n x n`` kernels factorized into ``1 x n`` and ``n x 1``.

    Szegedy et al. (2016), section 3.2 and figure 6 (torchvision's ``InceptionC``, used at
    17x17 with ``n = 7``): four branches of bias-free conv + batch norm (epsilon 1e-3) + ReLU
    units, concatenated: ``1 x 1`` (``features_1x1``); ``1 x 1`` (``reduce``), ``1 x n``
    (``reduce``), ``n x 1`` (``features_nxn``): one factorized ``n x n``; ``1 x 1``
    (``reduce``), ``n x 1``, ``1 x n``, ``n x 1`` (``reduce``), ``1 x n`` (``features_nxn``): two
    stacked ``n x n``; and a ``3 x 3`` average pooling (stride 1, padded, counting the padding
    as torchvision does) then ``1 x 1`` (``pool_proj``). Units are numbered ``Conv_0`` ...
    ``Conv_9`` (``BatchNorm_i`` alike) in that order.

    With ``factorize=False`` the same module has unfactorized ``n x n`` kernels (``Conv_0`` ...
    ``Conv_6``): the same output shape and receptive field (``2n - 1`` square: two stacked
    ``n x n``) at ``n / 2`` times the convolution weights of the ``n``-wide kernels.

    Attributes:
        features_1x1: channels of the ``1 x 1`` branch (192 in Inception-v3).
        reduce: channels inside the two ``n x n`` branches (128, 160 or 192).
        features_nxn: output channels of each ``n x n`` branch (192).
        pool_proj: channels of the projection after the pooling (192).
        n: the kernel size that is factorized (7).
        factorize: ``1 x n`` then ``n x 1`` (True) or plain ``n x n`` kernels (False).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> block = InceptionFactorized(1, 2, 3, 1, n=3)
        >>> x = jax.ShapeDtypeStruct((2, 5, 5, 2), jnp.float32)  # shapes only: nothing runs
        >>> variables = jax.eval_shape(block.init, jax.random.key(0), x)
        >>> jax.eval_shape(block.apply, variables, x).shape
        (2, 5, 5, 8)

    References:
        Szegedy, Vanhoucke, Ioffe, Shlens and Wojna, "Rethinking the Inception architecture for
        computer vision", CVPR 2016, arXiv:1512.00567.
    """

    features_1x1: int = 192
    reduce: int = 128
    features_nxn: int = 192
    pool_proj: int = 192
    n: int = 7
    factorize: bool = True

    def __post_init__(self) -> None:
        widths = (self.features_1x1, self.reduce, self.features_nxn, self.pool_proj)
        _check_factorized(widths, self.n, self.factorize)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the module.

        Args:
            x: NHWC activations.
            train: if True, batch norm uses batch statistics and updates ``batch_stats``.

        Returns:
            ``(batch, h, w, features_1x1 + 2 * features_nxn + pool_proj)``.
        """
        index = 0

        def unit(features: int, kernel: tuple[int, int], y: jax.Array) -> jax.Array:
            nonlocal index
            y = _conv_unit(features, kernel, True, train, index, padding="SAME")(y)
            index += 1
            return y

        def branch(kernels: list, y: jax.Array) -> jax.Array:
            y = unit(self.reduce, (1, 1), y)
            for i, kernel in enumerate(kernels):
                y = unit(self.features_nxn if i == len(kernels) - 1 else self.reduce, kernel, y)
            return y

        single, double = _factorized_kernels(self.n, self.factorize)
        b1 = unit(self.features_1x1, (1, 1), x)
        b2 = branch(single, x)
        b3 = branch(double, x)
        pooled = nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        b4 = unit(self.pool_proj, (1, 1), pooled)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class NNXInceptionFactorized(_NNXConvUnits):
    """:class:`InceptionFactorized` as a Flax NNX module, with the same submodule names.

    Args:
        in_features: input channels.
        features_1x1: channels of the ``1 x 1`` branch.
        reduce: channels inside the two ``n x n`` branches.
        features_nxn: output channels of each ``n x n`` branch.
        pool_proj: channels of the projection after the pooling.
        n: the kernel size that is factorized.
        factorize: ``1 x n`` then ``n x 1`` (True) or plain ``n x n`` kernels (False).
        rngs: the ``nnx.Rngs`` that initialize the weights.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> x = jax.ShapeDtypeStruct((2, 5, 5, 2), jnp.float32)  # shapes only: nothing runs
        >>> block = lambda x: NNXInceptionFactorized(2, 1, 2, 3, 1, n=3, rngs=nnx.Rngs(0))(x)
        >>> jax.eval_shape(block, x).shape
        (2, 5, 5, 8)
    """

    def __init__(
        self,
        in_features: int,
        features_1x1: int = 192,
        reduce: int = 128,
        features_nxn: int = 192,
        pool_proj: int = 192,
        n: int = 7,
        factorize: bool = True,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        _check_int("in_features", in_features)
        _check_factorized((features_1x1, reduce, features_nxn, pool_proj), n, factorize)
        single, double = _factorized_kernels(n, factorize)
        self.branches = (len(single) + 1, len(double) + 1)
        index = 0

        def add(cin: int, cout: int, kernel: tuple[int, int]) -> int:
            nonlocal index
            self._add(index, cin, cout, kernel, True, rngs, padding="SAME")
            index += 1
            return cout

        add(in_features, features_1x1, (1, 1))
        for kernels in (single, double):
            cin = add(in_features, reduce, (1, 1))
            for i, kernel in enumerate(kernels):
                cin = add(cin, features_nxn if i == len(kernels) - 1 else reduce, kernel)
        add(in_features, pool_proj, (1, 1))

    def __call__(self, x: jax.Array) -> jax.Array:
        """The concatenated branches, ``(batch, h, w, features_1x1 + 2 * features_nxn +
        pool_proj)``."""
        outputs = [self._unit(0, x)]
        index = 1
        for units in self.branches:
            y = x
            for _ in range(units):
                y, index = self._unit(index, y), index + 1
            outputs.append(y)
        pooled = nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        outputs.append(self._unit(index, pooled))
        return jnp.concatenate(outputs, axis=-1)


# GoogLeNet


def _check_googlenet(
    num_classes: int,
    stem: Sequence[int],
    modules: Sequence[Sequence[int]],
    kernel_5x5: int,
    batch_norm: bool,
    dropout: float,
) -> None:
    _check_int("num_classes", num_classes)
    _check_ints("stem", stem, 3)
    _check_int("kernel_5x5", kernel_5x5)
    if not isinstance(batch_norm, bool):
        raise ValueError(f"batch_norm must be a bool, got {batch_norm!r}")
    items = tuple(modules) if isinstance(modules, Sequence) and not isinstance(modules, str) else ()
    try:
        if len(items) != len(_GOOGLENET_MODULES):
            raise ValueError
        for widths in items:
            _check_ints("modules", widths, 6)
    except ValueError:
        raise ValueError(
            f"modules must be {len(_GOOGLENET_MODULES)} sequences of 6 integers >= 1 (1x1, 3x3 "
            f"reduce, 3x3, 5x5 reduce, 5x5, pool proj of inception 3a ... 5b), got {modules!r}"
        ) from None
    _check_rate("dropout", dropout)


# conv 7x7/2 (pad 3), max 3x3/2, max 3x3/2, (3a, 3b) max 3x3/2, (4a-4e) max 2x2/2
_GOOGLENET_WINDOWS = [(7, 2, 3, False), (3, 2, 0, True), (3, 2, 0, True), (3, 2, 0, True)]
_GOOGLENET_WINDOWS += [(2, 2, 0, True)]


class GoogLeNet(nn.Module):
    """GoogLeNet without auxiliary classifiers: torchvision's ``googlenet(aux_logits=False)``.

    Stem: ``Conv_0`` (``7 x 7``/2, padding 3), 3x3/2 max pooling, ``Conv_1`` (``1 x 1``),
    ``Conv_2`` (``3 x 3``), 3x3/2 max pooling (each conv bias-free + ``BatchNorm_i`` + ReLU);
    ``InceptionModule_0`` ... ``InceptionModule_8`` (inception 3a, 3b, 3x3/2 max pooling, 4a-4e,
    2x2/2 max pooling, 5a, 5b); then ``GlobalAvgPoolHead_0`` (average, dropout, ``Dense_0``).
    The poolings round up as Caffe and PyTorch's ``ceil_mode=True`` do. 6,624,904 params and
    1.50G mult-adds at 224x224x3 with 1000 classes (see the module docstring for how this
    differs from the paper).

    Attributes:
        num_classes: number of output logits.
        stem: channels of the stem's three convolutions.
        modules: the widths of the nine Inception modules (see :class:`InceptionModule`).
        kernel_5x5: kernel size of the "``5 x 5``" branches (3 as torchvision; 5 as the paper).
        batch_norm: batch norm after bias-free convolutions (True) or biased convolutions.
        dropout: drop rate before the classifier (0.4 as in the paper). With ``train=True`` apply
            with ``rngs={"dropout": key}`` and ``mutable=["batch_stats"]``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> toy = GoogLeNet(10, (1, 1, 2), [(1, 1, 1, 1, 1, 1)] * 9)  # a toy size
        >>> x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)  # shapes only: nothing runs
        >>> variables = jax.eval_shape(toy.init, jax.random.key(0), x)
        >>> jax.eval_shape(toy.apply, variables, x).shape
        (2, 10)

    References:
        Szegedy et al., "Going deeper with convolutions", CVPR 2015, arXiv:1409.4842.
    """

    num_classes: int = 1000
    stem: Sequence[int] = _GOOGLENET_STEM
    modules: Sequence[Sequence[int]] = _GOOGLENET_MODULES
    kernel_5x5: int = 3
    batch_norm: bool = True
    dropout: float = 0.4

    def __post_init__(self) -> None:
        _check_googlenet(
            self.num_classes,
            self.stem,
            self.modules,
            self.kernel_5x5,
            self.batch_norm,
            self.dropout,
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Computes the logits.

        Args:
            x: NHWC images, ``(batch, height, width, channels)``; 224x224x3 for ImageNet (at
                least 15x15).
            train: if True, batch norm uses batch statistics and updates ``batch_stats``, and
                dropout is active.

        Returns:
            The logits, ``(batch, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or is too small for the strided layers.
        """
        _check_x(x, "GoogLeNet", _GOOGLENET_WINDOWS)
        c0, c1, c2 = self.stem
        x = _conv_unit(c0, (7, 7), self.batch_norm, train, 0, strides=(2, 2), padding=3)(x)
        x = _pool_ceil(x, "max", 3, 2)
        x = _conv_unit(c1, (1, 1), self.batch_norm, train, 1)(x)
        x = _conv_unit(c2, (3, 3), self.batch_norm, train, 2, padding="SAME")(x)
        x = _pool_ceil(x, "max", 3, 2)
        for index, widths in enumerate(self.modules):
            module = InceptionModule(
                *widths, self.kernel_5x5, self.batch_norm, name=f"InceptionModule_{index}"
            )
            x = module(x, train=train)
            if index in _POOL_AFTER:
                x = _pool_ceil(x, "max", _POOL_AFTER[index], 2)
        head = GlobalAvgPoolHead(
            self.num_classes, "dense", dropout=self.dropout, name="GlobalAvgPoolHead_0"
        )
        return head(x, train=train)


class NNXGoogLeNet(_NNXConvUnits):
    """:class:`GoogLeNet` as a Flax NNX module, with the same params and batch-stats paths.

    The module starts in NNX's train mode (batch statistics, dropout active; ``.eval()`` for
    inference). Dropout draws from the RNG stream ``"dropout"`` of ``rngs`` (reseed with
    ``nnx.reseed(model, dropout=key)``); at rate 0 no stream is kept.

    Args:
        num_classes: number of output logits.
        stem: channels of the stem's three convolutions.
        modules: the widths of the nine Inception modules.
        kernel_5x5: kernel size of the "``5 x 5``" branches.
        batch_norm: batch norm after bias-free convolutions (True) or biased convolutions.
        dropout: drop rate before the classifier.
        input_shape: ``(height, width, channels)`` of one example; it fixes ``Conv_0``'s input
            channels.
        rngs: the ``nnx.Rngs`` that initialize the weights (and feed the dropout).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)  # shapes only: nothing runs
        >>> toy = lambda: NNXGoogLeNet(
        ...     10, (1, 1, 2), [(1,) * 6] * 9, input_shape=(16, 16, 3), rngs=nnx.Rngs(0)
        ... )
        >>> jax.eval_shape(lambda x: toy()(x), x).shape
        (2, 10)
    """

    def __init__(
        self,
        num_classes: int = 1000,
        stem: Sequence[int] = _GOOGLENET_STEM,
        modules: Sequence[Sequence[int]] = _GOOGLENET_MODULES,
        kernel_5x5: int = 3,
        batch_norm: bool = True,
        dropout: float = 0.4,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        rngs: nnx.Rngs,
    ) -> None:
        _check_googlenet(num_classes, stem, modules, kernel_5x5, batch_norm, dropout)
        features = _check_input_size(input_shape, "GoogLeNet", _GOOGLENET_WINDOWS)[-1]
        c0, c1, c2 = stem
        features = self._add(0, features, c0, (7, 7), batch_norm, rngs, strides=2, padding=3)
        features = self._add(1, features, c1, (1, 1), batch_norm, rngs)
        features = self._add(2, features, c2, (3, 3), batch_norm, rngs, padding="SAME")
        self.modules_count = len(tuple(modules))
        for index, widths in enumerate(modules):
            module = NNXInceptionModule(features, *widths, kernel_5x5, batch_norm, rngs=rngs)
            setattr(self, f"InceptionModule_{index}", module)
            features = widths[0] + widths[2] + widths[4] + widths[5]
        self.GlobalAvgPoolHead_0 = NNXGlobalAvgPoolHead(
            features, num_classes, "dense", dropout=dropout, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """The logits of NHWC images ``(batch, height, width, channels)``."""
        _check_x(x, "GoogLeNet", _GOOGLENET_WINDOWS)
        x = _pool_ceil(self._unit(0, x), "max", 3, 2)
        x = _pool_ceil(self._unit(2, self._unit(1, x)), "max", 3, 2)
        for index in range(self.modules_count):
            x = getattr(self, f"InceptionModule_{index}")(x)
            if index in _POOL_AFTER:
                x = _pool_ceil(x, "max", _POOL_AFTER[index], 2)
        return self.GlobalAvgPoolHead_0(x)

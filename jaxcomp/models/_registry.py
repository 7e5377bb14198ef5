"""Look up the reference models by name, for configs and the command line.

The table is a plain dict literal, built once and never mutated: each name maps to a model class,
its Flax NNX twin (same params paths), the attributes that the name fixes (``"resnet56"`` fixes
``depth=56``) and the input shape the model was designed for (one example, without the batch axis).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcomp.models._densenet import DenseNet
from jaxcomp.models._densenet import NNXDenseNet
from jaxcomp.models._flattened import Flattened
from jaxcomp.models._flattened import NNXFlattened
from jaxcomp.models._fractal import FractalNet
from jaxcomp.models._fractal import NNXFractalNet
from jaxcomp.models._inception import GoogLeNet
from jaxcomp.models._inception import NNXGoogLeNet
from jaxcomp.models._lenet import LeNet5
from jaxcomp.models._lenet import LeNet300100
from jaxcomp.models._lenet import NNXLeNet5
from jaxcomp.models._lenet import NNXLeNet300100
from jaxcomp.models._mobilenet import MobileNet
from jaxcomp.models._mobilenet import NNXMobileNet
from jaxcomp.models._nasnet import NASNetA
from jaxcomp.models._nasnet import NNXNASNetA
from jaxcomp.models._nin import NIN
from jaxcomp.models._nin import NNXNIN
from jaxcomp.models._resnet import ImageNetResNet
from jaxcomp.models._resnet import NNXImageNetResNet
from jaxcomp.models._resnet import NNXResNet
from jaxcomp.models._resnet import ResNet
from jaxcomp.models._shufflenet import NNXShuffleNet
from jaxcomp.models._shufflenet import ShuffleNet
from jaxcomp.models._squeezenet import NNXSqueezeNet
from jaxcomp.models._squeezenet import SqueezeNet
from jaxcomp.models._vgg import NNXVGG
from jaxcomp.models._vgg import VGG
from jaxcomp.models._vgg import NNXVGGSmall
from jaxcomp.models._vgg import VGGSmall

__all__ = ["get", "init", "input_shape", "names"]


class _Entry(NamedTuple):
    cls: type[nn.Module]
    nnx_cls: type[nnx.Module]
    fixed: dict[str, Any]
    input_shape: tuple[int, ...]


_APIS = ("linen", "nnx")


_MNIST = (28, 28, 1)
_CIFAR = (32, 32, 3)
_IMAGENET = (224, 224, 3)

_VGG16 = {"convs": (2, 2, 3, 3, 3)}

_MODELS: dict[str, _Entry] = {
    "lenet300": _Entry(LeNet300100, NNXLeNet300100, {}, _MNIST),
    "lenet300100": _Entry(LeNet300100, NNXLeNet300100, {}, _MNIST),
    "lenet5": _Entry(LeNet5, NNXLeNet5, {}, _MNIST),
    "vgg_small": _Entry(VGGSmall, NNXVGGSmall, {}, _CIFAR),
    "resnet20": _Entry(ResNet, NNXResNet, {"depth": 20}, _CIFAR),
    "resnet56": _Entry(ResNet, NNXResNet, {"depth": 56}, _CIFAR),
    "resnet110": _Entry(ResNet, NNXResNet, {"depth": 110}, _CIFAR),
    "resnet18": _Entry(
        ImageNetResNet,
        NNXImageNetResNet,
        {"block": "basic", "stage_sizes": (2, 2, 2, 2)},
        _IMAGENET,
    ),
    "resnet50": _Entry(
        ImageNetResNet,
        NNXImageNetResNet,
        {"block": "bottleneck", "stage_sizes": (3, 4, 6, 3)},
        _IMAGENET,
    ),
    "resnet110_sd": _Entry(ResNet, NNXResNet, {"depth": 110, "survival": 0.5}, _CIFAR),
    "fractalnet": _Entry(FractalNet, NNXFractalNet, {}, _CIFAR),
    "densenet_bc_100_12": _Entry(
        DenseNet, NNXDenseNet, {"bottleneck": True, "compression": 0.5}, _CIFAR
    ),
    "nin": _Entry(NIN, NNXNIN, {}, _CIFAR),
    "vgg16": _Entry(VGG, NNXVGG, _VGG16, _IMAGENET),
    "vgg16_cifar": _Entry(VGG, NNXVGG, {**_VGG16, "batch_norm": True, "hidden": None}, _CIFAR),
    "googlenet": _Entry(GoogLeNet, NNXGoogLeNet, {}, _IMAGENET),
    "squeezenet1_0": _Entry(SqueezeNet, NNXSqueezeNet, {"version": "1_0"}, _IMAGENET),
    "squeezenet1_1": _Entry(SqueezeNet, NNXSqueezeNet, {"version": "1_1"}, _IMAGENET),
    "flattened": _Entry(Flattened, NNXFlattened, {}, _CIFAR),
    "mobilenet_v1": _Entry(MobileNet, NNXMobileNet, {}, _IMAGENET),
    "shufflenet_v1_g3": _Entry(ShuffleNet, NNXShuffleNet, {"groups": 3}, _IMAGENET),
    "nasnet_a_mobile": _Entry(NASNetA, NNXNASNetA, {}, _IMAGENET),
}


def names() -> list[str]:
    """The registered model names, aliases included, sorted.

    Returns:
        The names that :func:`get` accepts.
    """
    return sorted(_MODELS)


def _entry(name: str) -> _Entry:
    try:
        return _MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model name {name!r}; known names: {', '.join(names())}"
        ) from None


def get(
    name: str,
    *,
    num_classes: int = 10,
    api: str = "linen",
    key: jax.Array | None = None,
    input_shape: tuple[int, ...] | None = None,
    **kw: Any,
) -> nn.Module | nnx.Module:
    """Builds a registered model, as a ``flax.linen`` or a Flax NNX module.

    Both APIs give the same architecture with the same params paths (``Conv_0/kernel``,
    ``BasicBlock_3/BatchNorm_1/scale``...): the linen variables and the NNX module's
    ``jaxcomp.adapt.functional(model)[1]`` have the same structure, so weights copy between them
    and the same ``where=`` rules select the same leaves.

    Args:
        name: one of :func:`names`: ``"lenet300"`` (alias ``"lenet300100"``), ``"lenet5"``,
            ``"vgg_small"``, ``"vgg16"``, ``"vgg16_cifar"``, ``"nin"``, ``"googlenet"``,
            ``"squeezenet1_0"``, ``"squeezenet1_1"``, ``"resnet20"``, ``"resnet56"``,
            ``"resnet110"``, ``"resnet110_sd"``, ``"resnet18"``, ``"resnet50"``,
            ``"fractalnet"``, ``"densenet_bc_100_12"``, ``"flattened"``, ``"mobilenet_v1"``,
            ``"shufflenet_v1_g3"``, ``"nasnet_a_mobile"`` (docs/architectures.md lists their
            papers and sizes).
        num_classes: number of output logits.
        api: ``"linen"`` (an unbound module to ``init``) or ``"nnx"`` (an initialized
            ``nnx.Module``, in NNX's default train mode; call ``.eval()`` for inference).
        key: for ``api="nnx"`` only, and required there: the PRNG key (``jax.random.key``)
            that initializes the weights.
        input_shape: for ``api="nnx"`` only: the shape of one example without the batch axis,
            which fixes the layers' input sizes; :func:`input_shape` of ``name`` when omitted.
        **kw: further attributes of the model class (for example ``width=8`` for a ResNet or
            ``widths=(16, 32)`` for ``vgg_small``); attributes that the name fixes are not
            allowed.

    Returns:
        For ``"linen"``, an unbound module whose ``__call__(x, train=False)`` returns logits; for
        ``"nnx"``, an ``nnx.Module`` whose ``__call__(x)`` returns logits.

    Raises:
        ValueError: if ``name`` is unknown (the message lists the known names), ``api`` is not
            one of ``"linen"`` and ``"nnx"``, ``key`` is missing for ``"nnx"`` or
            ``key``/``input_shape`` are given for ``"linen"``, a keyword is not an attribute of
            the model or is fixed by the name, or a value is out of range.

    Examples:
        >>> get("resnet20", num_classes=100).depth
        20
        >>> import jax
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: get("lenet5", api="nnx", key=jax.random.key(0)))
        >>> model.Dense_0.kernel.shape  # shapes only: no initializer ran
        (800, 500)
    """
    entry = _entry(name)
    if api not in _APIS:
        raise ValueError(f"api must be one of {_APIS}, got {api!r}")
    allowed = {f.name for f in dataclasses.fields(entry.cls) if f.init} - {
        "parent",
        "name",
        "num_classes",
        *entry.fixed,
    }
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise ValueError(
            f"model {name!r} does not take {unknown}; allowed keywords: num_classes, "
            f"{', '.join(sorted(allowed)) or '(none)'}"
        )
    if api == "linen":
        if key is not None or input_shape is not None:
            raise ValueError(
                "key= and input_shape= are for api='nnx' (a linen model is initialized with "
                "jaxcomp.models.init(model, key, input_shape))"
            )
        return entry.cls(num_classes=num_classes, **entry.fixed, **kw)
    if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        raise ValueError(
            f"api='nnx' initializes the weights: key must be a typed PRNG key from "
            f"jax.random.key(seed), got {key!r}"
        )
    shape = entry.input_shape if input_shape is None else input_shape
    return entry.nnx_cls(
        num_classes=num_classes, **entry.fixed, **kw, input_shape=shape, rngs=nnx.Rngs(key)
    )


def input_shape(name: str) -> tuple[int, ...]:
    """The input shape that a registered model was designed for, without the batch axis.

    Args:
        name: one of :func:`names`.

    Returns:
        ``(28, 28, 1)`` for the LeNets, ``(32, 32, 3)`` for the CIFAR networks (``vgg_small``,
        ``vgg16_cifar``, ``nin``, the CIFAR ResNets, ``fractalnet``, ``densenet_bc_100_12``,
        ``flattened``) and ``(224, 224, 3)`` for the ImageNet ones.

    Raises:
        ValueError: if ``name`` is unknown.
    """
    return _entry(name).input_shape


def init(model: nn.Module, key: jax.Array, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Initializes a model's variables on a zero batch of one example.

    Args:
        model: a ``flax.linen`` module whose ``__call__`` takes ``(x, train=...)``.
        key: a PRNG key (``jax.random.key``).
        input_shape: the shape of one example, without the batch axis (``(28, 28, 1)``).

    Returns:
        The variables, ``{"params": ...}`` plus ``"batch_stats"`` for batch-norm models.

    Examples:
        >>> import jax
        >>> variables = init(get("lenet300"), jax.random.key(0), (28, 28, 1))
        >>> sorted(variables["params"])
        ['Dense_0', 'Dense_1', 'Dense_2']
    """
    input_shape = tuple(input_shape)
    try:
        hash(model)
    except TypeError:  # an attribute that cannot be hashed (a list): compiled for this call
        return jax.jit(lambda k: _init_variables(model, k, input_shape))(key)
    return _init_jitted(model, key, input_shape)


def _init_variables(model: nn.Module, key: jax.Array, input_shape: tuple[int, ...]) -> Any:
    return model.init(key, jnp.zeros((1, *input_shape)), train=False)


# one compiled program per (model, input shape): eagerly, each initializer of each parameter
# shape compiles on its own (LeNet-5: 2.6 s eagerly, 1.1 s compiled whole, on a 2-core EPYC)
_init_jitted = jax.jit(_init_variables, static_argnums=(0, 2))

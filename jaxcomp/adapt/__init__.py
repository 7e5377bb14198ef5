"""Apply adapters: run unchanged Flax models whose layers hold other params or kinds of params."""

from jaxcomp.adapt._capture import Captured
from jaxcomp.adapt._capture import capture
from jaxcomp.adapt._config import LayerConfig
from jaxcomp.adapt._config import layer_config
from jaxcomp.adapt._factorized import MAX_SLICE_TAPS
from jaxcomp.adapt._factorized import ConvSpec
from jaxcomp.adapt._factorized import FactoredKernel
from jaxcomp.adapt._factorized import conv
from jaxcomp.adapt._factorized import conv_patches
from jaxcomp.adapt._factorized import conv_spec
from jaxcomp.adapt._factorized import depthwise
from jaxcomp.adapt._factorized import depthwise_impl
from jaxcomp.adapt._factorized import factorized_handler
from jaxcomp.adapt._factorized import grouped_conv
from jaxcomp.adapt._factorized import run_factorized
from jaxcomp.adapt._factorized import window_slices
from jaxcomp.adapt._intercept import PASS
from jaxcomp.adapt._intercept import Handler
from jaxcomp.adapt._intercept import Layer
from jaxcomp.adapt._intercept import intercept
from jaxcomp.adapt._intercept import layer_path
from jaxcomp.adapt._nnx import NNXApply
from jaxcomp.adapt._nnx import collection_name
from jaxcomp.adapt._nnx import functional

__all__ = [
    "MAX_SLICE_TAPS",
    "PASS",
    "Captured",
    "ConvSpec",
    "FactoredKernel",
    "Handler",
    "Layer",
    "LayerConfig",
    "NNXApply",
    "capture",
    "collection_name",
    "conv",
    "conv_patches",
    "conv_spec",
    "depthwise",
    "depthwise_impl",
    "factorized_handler",
    "functional",
    "grouped_conv",
    "intercept",
    "layer_config",
    "layer_path",
    "run_factorized",
    "window_slices",
]

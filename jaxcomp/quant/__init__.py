"""Quantization and binarization: uniform fake quantization with straight-through gradients,
fixed point, learned step sizes, calibration observers, activation quantization, real int8
inference, k-means / ECSQ / product weight sharing, binary and ternary weights, LAB, and weight
noise. See ``docs/quantization.md``.
"""

from jaxcomp.quant._activations import STATS
from jaxcomp.quant._activations import activations
from jaxcomp.quant._activations import calibrate
from jaxcomp.quant._activations import input_qparams
from jaxcomp.quant._backprop import hash_uniform
from jaxcomp.quant._backprop import round_pow2
from jaxcomp.quant._backprop import stochastic_codes
from jaxcomp.quant._binary import BinaryState
from jaxcomp.quant._binary import binary_connect
from jaxcomp.quant._binary import binary_weights
from jaxcomp.quant._binary import glorot_scale
from jaxcomp.quant._binary import ternary_connect
from jaxcomp.quant._binary import ternary_weights
from jaxcomp.quant._binary import twn_scale
from jaxcomp.quant._binary import xnor_scale
from jaxcomp.quant._cluster import ecsq_1d
from jaxcomp.quant._cluster import kmeans_1d
from jaxcomp.quant._cluster import kmeans_vectors
from jaxcomp.quant._core import dequantize
from jaxcomp.quant._core import fake_quantize
from jaxcomp.quant._core import qparams_from_range
from jaxcomp.quant._core import qrange
from jaxcomp.quant._core import quantize
from jaxcomp.quant._core import sign_ste
from jaxcomp.quant._fake_quant import FakeQuantState
from jaxcomp.quant._fake_quant import fake_quant
from jaxcomp.quant._fixed_point import FixedPointState
from jaxcomp.quant._fixed_point import fixed_point
from jaxcomp.quant._fixed_point import to_fixed_point
from jaxcomp.quant._int8 import run_int8
from jaxcomp.quant._int8 import weight_bytes
from jaxcomp.quant._intdot import preferred_path
from jaxcomp.quant._intops import BACKWARDS
from jaxcomp.quant._intops import ESTIMATORS
from jaxcomp.quant._intops import float_linear
from jaxcomp.quant._intops import int_linear
from jaxcomp.quant._intops import qat_linear
from jaxcomp.quant._intops import quantize_kernel
from jaxcomp.quant._lab import LossAwareBinaryState
from jaxcomp.quant._lab import lab_scale
from jaxcomp.quant._lab import loss_aware_binary
from jaxcomp.quant._layers import contraction
from jaxcomp.quant._nodes import CodebookArray
from jaxcomp.quant._nodes import ProductQuantizedArray
from jaxcomp.quant._nodes import QuantizedArray
from jaxcomp.quant._noise import NoiseState
from jaxcomp.quant._noise import noise
from jaxcomp.quant._observers import Observer
from jaxcomp.quant._observers import ObserverState
from jaxcomp.quant._observers import minmax
from jaxcomp.quant._observers import moving_average
from jaxcomp.quant._observers import mse
from jaxcomp.quant._observers import percentile
from jaxcomp.quant._observers import qparams
from jaxcomp.quant._power_of_two import power_of_two
from jaxcomp.quant._product import ProductQuantState
from jaxcomp.quant._product import product_quant
from jaxcomp.quant._product import residual_quant
from jaxcomp.quant._sharing import KMeansState
from jaxcomp.quant._sharing import ecsq
from jaxcomp.quant._sharing import kmeans

__all__ = [
    "BACKWARDS",
    "ESTIMATORS",
    "STATS",
    "BinaryState",
    "CodebookArray",
    "FakeQuantState",
    "FixedPointState",
    "KMeansState",
    "LossAwareBinaryState",
    "NoiseState",
    "Observer",
    "ObserverState",
    "ProductQuantState",
    "ProductQuantizedArray",
    "QuantizedArray",
    "activations",
    "binary_connect",
    "binary_weights",
    "calibrate",
    "contraction",
    "dequantize",
    "ecsq",
    "ecsq_1d",
    "fake_quant",
    "fake_quantize",
    "fixed_point",
    "float_linear",
    "glorot_scale",
    "hash_uniform",
    "input_qparams",
    "int_linear",
    "kmeans",
    "kmeans_1d",
    "kmeans_vectors",
    "lab_scale",
    "loss_aware_binary",
    "minmax",
    "moving_average",
    "mse",
    "noise",
    "percentile",
    "power_of_two",
    "preferred_path",
    "product_quant",
    "qat_linear",
    "qparams",
    "qparams_from_range",
    "qrange",
    "quantize",
    "quantize_kernel",
    "residual_quant",
    "round_pow2",
    "run_int8",
    "sign_ste",
    "stochastic_codes",
    "ternary_connect",
    "ternary_weights",
    "to_fixed_point",
    "twn_scale",
    "weight_bytes",
    "xnor_scale",
]

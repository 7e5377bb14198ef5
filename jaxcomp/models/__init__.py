"""The survey's architectures (section 2) as Flax models, linen and NNX, for compression.

Blocks (1x1 mlpconv, global-average-pooling head, fire, Inception, factorized Inception,
residual basic and bottleneck with stochastic depth, fractal, dense and transition, flattened,
depthwise separable, shuffle unit, NASNet-A cells) and networks by name (:func:`get`); see
docs/architectures.md for their papers and sizes.
"""

from jaxcomp.models._densenet import DenseBlock
from jaxcomp.models._densenet import DenseNet
from jaxcomp.models._densenet import NNXDenseBlock
from jaxcomp.models._densenet import NNXDenseNet
from jaxcomp.models._densenet import NNXTransition
from jaxcomp.models._densenet import Transition
from jaxcomp.models._flattened import Flattened
from jaxcomp.models._flattened import FlattenedConv
from jaxcomp.models._flattened import NNXFlattened
from jaxcomp.models._flattened import NNXFlattenedConv
from jaxcomp.models._fractal import FractalBlock
from jaxcomp.models._fractal import FractalNet
from jaxcomp.models._fractal import NNXFractalBlock
from jaxcomp.models._fractal import NNXFractalNet
from jaxcomp.models._inception import GoogLeNet
from jaxcomp.models._inception import InceptionFactorized
from jaxcomp.models._inception import InceptionModule
from jaxcomp.models._inception import NNXGoogLeNet
from jaxcomp.models._inception import NNXInceptionFactorized
from jaxcomp.models._inception import NNXInceptionModule
from jaxcomp.models._lenet import LeNet5
from jaxcomp.models._lenet import LeNet300100
from jaxcomp.models._lenet import NNXLeNet5
from jaxcomp.models._lenet import NNXLeNet300100
from jaxcomp.models._mobilenet import DepthwiseSeparable
from jaxcomp.models._mobilenet import MobileNet
from jaxcomp.models._mobilenet import NNXDepthwiseSeparable
from jaxcomp.models._mobilenet import NNXMobileNet
from jaxcomp.models._nasnet import FactorizedReduction
from jaxcomp.models._nasnet import NASNetA
from jaxcomp.models._nasnet import NASNetNormalCell
from jaxcomp.models._nasnet import NASNetReductionCell
from jaxcomp.models._nasnet import NNXFactorizedReduction
from jaxcomp.models._nasnet import NNXNASNetA
from jaxcomp.models._nasnet import NNXNASNetNormalCell
from jaxcomp.models._nasnet import NNXNASNetReductionCell
from jaxcomp.models._nasnet import NNXSeparableConv
from jaxcomp.models._nasnet import SeparableConv
from jaxcomp.models._nin import NIN
from jaxcomp.models._nin import NNXNIN
from jaxcomp.models._nin import GlobalAvgPoolHead
from jaxcomp.models._nin import MLPConv
from jaxcomp.models._nin import NNXGlobalAvgPoolHead
from jaxcomp.models._nin import NNXMLPConv
from jaxcomp.models._registry import get
from jaxcomp.models._registry import init
from jaxcomp.models._registry import input_shape
from jaxcomp.models._registry import names
from jaxcomp.models._resnet import BasicBlock
from jaxcomp.models._resnet import Bottleneck
from jaxcomp.models._resnet import ImageNetResNet
from jaxcomp.models._resnet import NNXBasicBlock
from jaxcomp.models._resnet import NNXBottleneck
from jaxcomp.models._resnet import NNXImageNetResNet
from jaxcomp.models._resnet import NNXResNet
from jaxcomp.models._resnet import ResNet
from jaxcomp.models._resnet import ResNet20
from jaxcomp.models._resnet import ResNet56
from jaxcomp.models._resnet import ResNet110
from jaxcomp.models._shufflenet import NNXShuffleNet
from jaxcomp.models._shufflenet import NNXShuffleUnit
from jaxcomp.models._shufflenet import ShuffleNet
from jaxcomp.models._shufflenet import ShuffleUnit
from jaxcomp.models._shufflenet import channel_shuffle
from jaxcomp.models._squeezenet import FireModule
from jaxcomp.models._squeezenet import NNXFireModule
from jaxcomp.models._squeezenet import NNXSqueezeNet
from jaxcomp.models._squeezenet import SqueezeNet
from jaxcomp.models._vgg import NNXVGG
from jaxcomp.models._vgg import VGG
from jaxcomp.models._vgg import NNXVGGSmall
from jaxcomp.models._vgg import VGGSmall

__all__ = [
    "NIN",
    "NNXNIN",
    "NNXVGG",
    "VGG",
    "BasicBlock",
    "Bottleneck",
    "DenseBlock",
    "DenseNet",
    "DepthwiseSeparable",
    "FactorizedReduction",
    "FireModule",
    "Flattened",
    "FlattenedConv",
    "FractalBlock",
    "FractalNet",
    "GlobalAvgPoolHead",
    "GoogLeNet",
    "ImageNetResNet",
    "InceptionFactorized",
    "InceptionModule",
    "LeNet5",
    "LeNet300100",
    "MLPConv",
    "MobileNet",
    "NASNetA",
    "NASNetNormalCell",
    "NASNetReductionCell",
    "NNXBasicBlock",
    "NNXBottleneck",
    "NNXDenseBlock",
    "NNXDenseNet",
    "NNXDepthwiseSeparable",
    "NNXFactorizedReduction",
    "NNXFireModule",
    "NNXFlattened",
    "NNXFlattenedConv",
    "NNXFractalBlock",
    "NNXFractalNet",
    "NNXGlobalAvgPoolHead",
    "NNXGoogLeNet",
    "NNXImageNetResNet",
    "NNXInceptionFactorized",
    "NNXInceptionModule",
    "NNXLeNet5",
    "NNXLeNet300100",
    "NNXMLPConv",
    "NNXMobileNet",
    "NNXNASNetA",
    "NNXNASNetNormalCell",
    "NNXNASNetReductionCell",
    "NNXResNet",
    "NNXSeparableConv",
    "NNXShuffleNet",
    "NNXShuffleUnit",
    "NNXSqueezeNet",
    "NNXTransition",
    "NNXVGGSmall",
    "ResNet",
    "ResNet20",
    "ResNet56",
    "ResNet110",
    "SeparableConv",
    "ShuffleNet",
    "ShuffleUnit",
    "SqueezeNet",
    "Transition",
    "VGGSmall",
    "channel_shuffle",
    "get",
    "init",
    "input_shape",
    "names",
]

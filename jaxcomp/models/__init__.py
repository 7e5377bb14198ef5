"""Reference Flax models (linen and NNX) for compression experiments: LeNets, VGG, ResNets."""

from jaxcomp.models._lenet import LeNet5
from jaxcomp.models._lenet import LeNet300100
from jaxcomp.models._lenet import NNXLeNet5
from jaxcomp.models._lenet import NNXLeNet300100
from jaxcomp.models._registry import get
from jaxcomp.models._registry import init
from jaxcomp.models._registry import input_shape
from jaxcomp.models._registry import names
from jaxcomp.models._resnet import BasicBlock
from jaxcomp.models._resnet import NNXBasicBlock
from jaxcomp.models._resnet import NNXResNet
from jaxcomp.models._resnet import ResNet
from jaxcomp.models._resnet import ResNet20
from jaxcomp.models._resnet import ResNet56
from jaxcomp.models._resnet import ResNet110
from jaxcomp.models._vgg import NNXVGGSmall
from jaxcomp.models._vgg import VGGSmall

__all__ = [
    "BasicBlock",
    "LeNet5",
    "LeNet300100",
    "NNXBasicBlock",
    "NNXLeNet5",
    "NNXLeNet300100",
    "NNXResNet",
    "NNXVGGSmall",
    "ResNet",
    "ResNet20",
    "ResNet56",
    "ResNet110",
    "VGGSmall",
    "get",
    "init",
    "input_shape",
    "names",
]

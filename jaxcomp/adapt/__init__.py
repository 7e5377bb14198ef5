"""Apply adapters: run unchanged Flax models whose layers hold other params or kinds of params."""

from jaxcomp.adapt._intercept import PASS
from jaxcomp.adapt._intercept import Handler
from jaxcomp.adapt._intercept import Layer
from jaxcomp.adapt._intercept import intercept
from jaxcomp.adapt._intercept import layer_path

__all__ = [
    "PASS",
    "Handler",
    "Layer",
    "intercept",
    "layer_path",
]

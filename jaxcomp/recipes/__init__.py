"""Recipes: the survey's multi-stage pipelines, end to end."""

from jaxcomp.recipes._deep_compression import PRESETS
from jaxcomp.recipes._deep_compression import DeepCompression
from jaxcomp.recipes._deep_compression import DeepCompressionResult
from jaxcomp.recipes._deep_compression import deep_compression
from jaxcomp.recipes._deep_compression import load_artifact_params

__all__ = [
    "PRESETS",
    "DeepCompression",
    "DeepCompressionResult",
    "deep_compression",
    "load_artifact_params",
]

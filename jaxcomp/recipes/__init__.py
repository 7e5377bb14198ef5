"""Recipes: the survey's multi-stage pipelines, end to end."""

from jaxcomp.recipes._deep_compression import PRESETS
from jaxcomp.recipes._deep_compression import DeepCompression
from jaxcomp.recipes._deep_compression import DeepCompressionResult
from jaxcomp.recipes._deep_compression import deep_compression
from jaxcomp.recipes._deep_compression import load_artifact
from jaxcomp.recipes._report import layer_rows
from jaxcomp.recipes._report import markdown_report
from jaxcomp.recipes._report import plot_layers
from jaxcomp.recipes._report import plot_stages

__all__ = [
    "PRESETS",
    "DeepCompression",
    "DeepCompressionResult",
    "deep_compression",
    "layer_rows",
    "load_artifact",
    "markdown_report",
    "plot_layers",
    "plot_stages",
]

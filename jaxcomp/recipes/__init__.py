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
from jaxcomp.recipes._report import plot_widths
from jaxcomp.recipes._report import structured_markdown
from jaxcomp.recipes._structured import Structured
from jaxcomp.recipes._structured import StructuredResult
from jaxcomp.recipes._structured import accuracy as structured_accuracy
from jaxcomp.recipes._structured import load_small
from jaxcomp.recipes._structured import structured

__all__ = [
    "PRESETS",
    "DeepCompression",
    "DeepCompressionResult",
    "Structured",
    "StructuredResult",
    "deep_compression",
    "layer_rows",
    "load_artifact",
    "load_small",
    "markdown_report",
    "plot_layers",
    "plot_stages",
    "plot_widths",
    "structured",
    "structured_accuracy",
    "structured_markdown",
]

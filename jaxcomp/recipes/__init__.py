"""Recipes: compression pipelines that compose every family, from one file, end to end.

A recipe file (TOML; ``docs/recipes.md`` is the reference) names a model, its data, how it
trains, and an ordered list of stages (low-rank factorization, pruning, quantization,
distillation, fine-tuning, encoding); :func:`run` runs it into a ``.jcz`` artifact and a report
of accuracy, bytes, FLOPs and measured latency per stage. The survey's pipelines ship as recipes
(``deep-compression``, ``structured``) beside new ones (``lowrank-prune-quant-kd``, ``w8a8-kd``);
:func:`shipped` lists them. :func:`deploy` runs an artifact the fast way; :func:`compare` sets runs
side by side with their Pareto fronts.
"""

from jaxcomp.recipes._budget import Budget
from jaxcomp.recipes._budget import parse_budget
from jaxcomp.recipes._compare import compare
from jaxcomp.recipes._compare import compare_markdown
from jaxcomp.recipes._compare import pareto
from jaxcomp.recipes._compare import plot_compare
from jaxcomp.recipes._deploy import accuracy
from jaxcomp.recipes._deploy import deploy
from jaxcomp.recipes._deploy import load_artifact
from jaxcomp.recipes._deploy import read_artifact
from jaxcomp.recipes._report import layer_rows
from jaxcomp.recipes._report import markdown_report
from jaxcomp.recipes._report import plot_layers
from jaxcomp.recipes._report import plot_stages
from jaxcomp.recipes._report import plot_widths
from jaxcomp.recipes._run import RecipeResult
from jaxcomp.recipes._run import machine
from jaxcomp.recipes._run import run
from jaxcomp.recipes._schema import Recipe
from jaxcomp.recipes._schema import Stage
from jaxcomp.recipes._schema import load_recipe
from jaxcomp.recipes._schema import parse
from jaxcomp.recipes._schema import shipped
from jaxcomp.recipes._stages import restore

__all__ = [
    "Budget",
    "Recipe",
    "RecipeResult",
    "Stage",
    "accuracy",
    "compare",
    "compare_markdown",
    "deploy",
    "layer_rows",
    "load_artifact",
    "load_recipe",
    "machine",
    "markdown_report",
    "pareto",
    "parse",
    "parse_budget",
    "plot_compare",
    "plot_layers",
    "plot_stages",
    "plot_widths",
    "read_artifact",
    "restore",
    "run",
    "shipped",
]

"""Sphinx configuration of jaxcomp's documentation site.

Build (warnings are errors; the notebooks in ``notebooks/`` are executed at toy size)::

    sphinx-build -W --keep-going -j auto -b html docs docs/_build/html

Pages are Markdown read by MyST (``myst_nb``, which also executes the notebooks); the API
reference is generated from the docstrings by autosummary and autodoc (Google style, napoleon).
"""

from __future__ import annotations

import glob
import os

DOCS = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(DOCS, "_build")

# The notebooks read this: toy sizes when the docs build executes them (CI), a real run elsewhere.
os.environ.setdefault("JAXCOMP_NOTEBOOK_SIZE", "toy")
# Their kernels inherit this environment: XLA's cheaper LLVM optimization level compiles faster
# and computes the same functions (the test suite's setting, tests/conftest.py), and one
# persistent compilation cache serves the notebooks that train the same small models.
os.environ["XLA_FLAGS"] = " ".join(
    f
    for f in (
        os.environ.get("XLA_FLAGS"),
        "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true",
    )
    if f
)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(BUILD, "jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# The kernels' own settings, in an IPython directory of the build's: ipykernel warns at every
# start that its TCP sockets are unencrypted (they listen on localhost, for this build's client).
_ipython = os.path.join(BUILD, "ipython")
os.makedirs(os.path.join(_ipython, "profile_default"), exist_ok=True)
with open(os.path.join(_ipython, "profile_default", "ipython_kernel_config.json"), "w") as f:
    f.write('{"IPKernelApp": {"log_level": "ERROR"}}\n')
os.environ["IPYTHONDIR"] = _ipython

import jaxcomp  # noqa: E402

project = "jaxcomp"
author = "the jaxcomp authors"
copyright = "2026, the jaxcomp authors"
release = jaxcomp.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

# the experiments' own tables under results/ are data that the pages link to; the site shows the
# generated summary table (results/summary.md) as a page of its own
_tables = glob.glob(os.path.join(DOCS, "results", "**", "*.md"), recursive=True)
exclude_patterns = [
    "_build",
    "**.ipynb_checkpoints",
    *sorted(os.path.relpath(p, DOCS) for p in _tables if os.path.basename(p) != "summary.md"),
    "results/deep_compression/summary.md",
]
# autosummary writes its pages with the first suffix: reST, which autodoc speaks
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"

# MyST: `$...$` math, ::: fences, and anchors for `page.md#section` links
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks: every build executes them all first, in parallel (one kernel per core), into a fresh
# myst-nb cache that the pages are then rendered from. A notebook that failed there is not in the
# cache, so myst-nb executes it again while reading it and fails the build with its traceback.
nb_execution_mode = "cache"
nb_execution_cache_path = os.path.join(BUILD, "jupyter_cache")
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True


def _execute_notebooks() -> None:
    import shutil

    from jupyter_cache import get_cache
    from jupyter_cache.executors import load_executor

    shutil.rmtree(nb_execution_cache_path, ignore_errors=True)
    cache = get_cache(nb_execution_cache_path)
    for path in sorted(glob.glob(os.path.join(DOCS, "notebooks", "*.ipynb"))):
        cache.add_nb_to_project(path)
    load_executor("local-parallel", cache).run_and_cache(timeout=nb_execution_timeout)


_execute_notebooks()
nb_merge_streams = True

# API reference: one page per package (api/, written below at every build, not committed), its
# names listed from the package's __all__, each documented once (a name that re-exports an object
# documented under another package links there)
PACKAGES = [
    "core", "select", "schedules", "train", "models", "data", "analysis", "adapt", "prune",
    "structured", "quant", "lowrank", "distill", "encode", "recipes", "errors", "cli",
]  # fmt: skip


def _write_api_pages() -> None:
    import importlib
    import inspect

    out = os.path.join(DOCS, "api")
    os.makedirs(out, exist_ok=True)
    for old in glob.glob(os.path.join(out, "*.rst")):
        os.remove(old)
    seen: dict[int, str] = {}

    def page(shown: str, real: str, names: list[str], submodules: list[tuple[str, str]]):
        mod = importlib.import_module(real)
        lines = [shown, "=" * len(shown), "", f".. automodule:: {real}", "   :no-members:", ""]
        if shown != real:
            lines[3:3] = [f"``{shown}`` is the module ``{real}``.", ""]
        lines += [f".. currentmodule:: {real}", "", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {n}" for n in names] + [""]
        for n in names:
            obj = getattr(mod, n)
            if inspect.ismodule(obj):
                lines += [f"``{n}``: see :doc:`{shown}.{n}`.", ""]
                continue
            if id(obj) in seen and not isinstance(obj, (int, str, bytes, tuple, dict)):
                lines += [f".. py:data:: {n}", "   :no-index:", "",
                          f"   The same object as :obj:`{seen[id(obj)]}`.", ""]  # fmt: skip
                continue
            seen.setdefault(id(obj), f"{real}.{n}")
            if inspect.isclass(obj):
                kind = "autoexception" if issubclass(obj, BaseException) else "autoclass"
                lines += [f".. {kind}:: {n}", "   :members:", "   :show-inheritance:", ""]
            elif callable(obj):
                lines += [f".. autofunction:: {n}", ""]
            else:
                lines += [f".. autodata:: {n}", "   :annotation:", ""]
        if submodules:
            lines += [".. toctree::", "   :hidden:", ""] + [f"   {s}" for s, _ in submodules]
        with open(os.path.join(out, f"{shown}.rst"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    for name in PACKAGES:
        real = f"jaxcomp.{name}"
        mod = importlib.import_module(real)
        names = list(getattr(mod, "__all__", ()))
        subs = [(f"{real}.{n}", getattr(mod, n).__name__) for n in names
                if inspect.ismodule(getattr(mod, n))]  # fmt: skip
        for shown, sub_real in subs:
            page(shown, sub_real, list(importlib.import_module(sub_real).__all__), [])
        page(real, real, names, subs)
    # the top-level package last: its names re-export core's and the packages
    page("jaxcomp", "jaxcomp", [n for n in jaxcomp.__all__ if n not in PACKAGES], [])


_write_api_pages()
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# a NamedTuple's "Attributes:" become fields of its class, not second descriptions of its members
napoleon_use_ivar = True

html_theme = "sphinx_book_theme"
html_title = f"jaxcomp {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}

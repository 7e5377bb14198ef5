"""Leaf selection (``where=``) for every transform."""

from jaxcomp.select._select import Selector
from jaxcomp.select._select import all_arrays
from jaxcomp.select._select import by_regex
from jaxcomp.select._select import floating
from jaxcomp.select._select import kernels
from jaxcomp.select._select import min_size
from jaxcomp.select._select import resolve
from jaxcomp.select._select import resolve_rules

__all__ = [
    "Selector",
    "all_arrays",
    "by_regex",
    "floating",
    "kernels",
    "min_size",
    "resolve",
    "resolve_rules",
]

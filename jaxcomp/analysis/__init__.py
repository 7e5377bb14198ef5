"""Model analysis: parameters, nonzeros, storage bits, FLOPs (MACs) and measured latency."""

from jaxcomp.analysis._counts import nonzero_count
from jaxcomp.analysis._counts import param_count
from jaxcomp.analysis._counts import per_leaf
from jaxcomp.analysis._counts import size_bytes
from jaxcomp.analysis._counts import sparsity
from jaxcomp.analysis._counts import summary
from jaxcomp.analysis._flops import flops
from jaxcomp.analysis._latency import compare_latency
from jaxcomp.analysis._latency import latency

__all__ = [
    "compare_latency",
    "flops",
    "latency",
    "nonzero_count",
    "param_count",
    "per_leaf",
    "size_bytes",
    "sparsity",
    "summary",
]

"""Counting the multiply-accumulates (MACs) of a function by walking its jaxpr.

The cost measure is the one the compression literature reports as "FLOPs": the number of
multiply-accumulate operations of the matrix products and convolutions (Yi et al., "Neural Network
Compression and Acceleration: An Overview", 2018; the "mult-adds" of Howard et al., "MobileNets",
2017, arXiv:1704.04861). Elementwise operations (bias adds, activations, normalization), reductions
and pooling are not counted: they are a small share of the cost of the networks considered and the
survey's comparisons leave them out.

The function is traced once with ``jax.make_jaxpr`` (nothing is run, so ``jax.ShapeDtypeStruct``
arguments are fine) and every equation is visited, recursing into each sub-jaxpr found among an
equation's parameters (``jit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``, ``shard_map``
and any other higher-order primitive), with three rules for control flow:

* ``cond``: the most expensive branch (an upper bound on one call);
* ``scan``: the body times ``length`` (so ``fori_loop`` with static bounds is exact);
* ``while``: the body and the condition counted once, since the trip count is not known when
  tracing. Use ``lax.scan`` or a static ``fori_loop`` where an exact count matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import jax
from jax.extend.core import ClosedJaxpr
from jax.extend.core import Jaxpr
from jax.extend.core import JaxprEqn

__all__ = ["flops"]


def _jaxprs_in(value: Any) -> Iterator[Jaxpr]:
    """The jaxprs held by one equation parameter (a jaxpr, a closed jaxpr, or a tuple of them)."""
    if isinstance(value, ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, Jaxpr):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _jaxprs_in(v)


def _shape(var: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in var.aval.shape)


def _dot_general_macs(eqn: JaxprEqn) -> int:
    """Batch size times contracted size times the free sizes of both operands."""
    lhs, rhs = _shape(eqn.invars[0]), _shape(eqn.invars[1])
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    batch = math.prod(lhs[d] for d in lhs_batch)
    contract = math.prod(lhs[d] for d in lhs_contract)
    lhs_free = math.prod(s for d, s in enumerate(lhs) if d not in (*lhs_contract, *lhs_batch))
    rhs_free = math.prod(s for d, s in enumerate(rhs) if d not in (*rhs_contract, *rhs_batch))
    return batch * contract * lhs_free * rhs_free


def _conv_macs(eqn: JaxprEqn) -> int:
    """Output elements times the taps of one output: kernel spatial size times its in-features.

    The kernel's in-feature dimension already holds ``in_channels / feature_group_count``; with
    ``batch_group_count`` the output batch is already divided. So the count is right for grouped,
    depthwise and batch-grouped convolutions alike. With ``lhs_dilation`` (transposed
    convolutions) the taps that fall on inserted zeros are counted too, as is customary.
    """
    rhs = _shape(eqn.invars[1])
    out = _shape(eqn.outvars[0])
    dn = eqn.params["dimension_numbers"]
    if dn is None:  # lax default: lhs NCHW, rhs OIHW, out NCHW
        rhs_spec = tuple(range(len(rhs)))
    else:
        rhs_spec = tuple(dn.rhs_spec)
    in_features = rhs[rhs_spec[1]]
    kernel_spatial = math.prod(rhs[d] for d in rhs_spec[2:])
    return math.prod(out) * in_features * kernel_spatial


def _eqn_macs(eqn: JaxprEqn) -> int:
    name = eqn.primitive.name
    if name == "dot_general":
        return _dot_general_macs(eqn)
    if name == "conv_general_dilated":
        return _conv_macs(eqn)
    if name == "cond":
        return max((_jaxpr_macs(j) for j in _jaxprs_in(eqn.params["branches"])), default=0)
    if name == "scan":
        body = sum(_jaxpr_macs(j) for j in _jaxprs_in(eqn.params["jaxpr"]))
        return int(eqn.params["length"]) * body
    # while (body and cond counted once), jit, custom_jvp/vjp, remat, shard_map, ...: every
    # sub-jaxpr among the parameters is run once per call.
    return sum(_jaxpr_macs(j) for v in eqn.params.values() for j in _jaxprs_in(v))


def _jaxpr_macs(jaxpr: Jaxpr) -> int:
    return sum(_eqn_macs(eqn) for eqn in jaxpr.eqns)


def flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """The multiply-accumulates (MACs) of one call ``fn(*args, **kwargs)``.

    Only ``dot_general`` (matmuls, einsums, dense layers) and ``conv_general_dilated``
    (convolutions) are counted; elementwise operations are not (see the module docstring for the
    convention and for how ``cond``, ``scan`` and ``while`` are counted).

    * ``dot_general``: batch size x contracted size x free size of lhs x free size of rhs, that is,
      output size x contracted size.
    * ``conv_general_dilated``: output size x kernel spatial size x ``in_channels /
      feature_group_count``.

    Args:
      fn: the function, for instance ``lambda x: model.apply(variables, x)``.
      *args: its positional arguments: arrays, pytrees of arrays or ``jax.ShapeDtypeStruct`` values.
      **kwargs: its keyword arguments, traced like ``args``.

    Returns:
      The number of MACs, a Python int. Multiply by 2 for floating-point operations.

    Raises:
      ValueError: ``fn`` is not callable.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> w = jnp.ones((3, 4))
        >>> flops(lambda x: x @ w, jax.ShapeDtypeStruct((8, 3), jnp.float32))
        96
    """
    if not callable(fn):
        raise ValueError(f"flops: fn must be callable, got {type(fn).__name__}")
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    return int(_jaxpr_macs(closed.jaxpr))

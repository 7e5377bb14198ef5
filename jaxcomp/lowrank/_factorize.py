"""The shared machinery of the low-rank transforms: a kernel leaf in, a factored node out.

Every low-rank method is a structure-changing transform built the same way. ``init`` selects the
leaves once (:func:`jaxcomp.core.select`), checks that each selected kernel is one the method can
factorize (a ``ValueError`` naming the leaf otherwise), and replaces it with a factored node
(:mod:`jaxcomp.lowrank._nodes`) at the kernel's own path (``Dense_0/kernel/u``). The trainable
factors are the ``cparams``; the state holds the ``spec`` of the selection and, per factorized
kernel, the ``fixed`` node fields that are not trained (integer channel orders, a fixed
dictionary; ``{}`` for most methods), ``MaskedNode()`` elsewhere. ``apply`` rebuilds every dense
kernel from its factors (differentiable), ``update`` changes nothing, ``finalize`` returns the
complete nodes, which :func:`jaxcomp.adapt.run_factorized` runs directly.

With ``where=None`` a method acts on every kernel it can factorize (its default selector); a
params tree that holds none (a dense-only group of a ``partition`` handed to a convolution method)
is left as it is. An explicit ``where=`` must select something (``SelectionError``), and every leaf
it selects must be factorizable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax

from jaxcomp.core._map import leaves
from jaxcomp.core._map import map_leaves
from jaxcomp.core._map import placed
from jaxcomp.core._map import rebuild
from jaxcomp.core._map import select
from jaxcomp.core._map import selected
from jaxcomp.core._transform import Transform
from jaxcomp.select._select import Selector

__all__ = ["FactorizedState", "build", "conv_only", "describe"]


class FactorizedState(NamedTuple):
    """The state every low-rank method keeps (each subclasses it under its own name).

    Attributes:
      spec: the selection, as :func:`jaxcomp.core.select` returns it.
      fixed: per factorized kernel, its node's non-trained fields (``{}`` for most methods),
        ``MaskedNode()`` elsewhere.
    """

    spec: Any
    fixed: Any


def describe(x: Any) -> str:
    """A short description of a kernel for error messages: ``Dense kernel (784, 300)``."""
    kind = {2: "Dense kernel", 4: "Conv kernel"}.get(x.ndim, f"{x.ndim}-D kernel")
    return f"a {kind} of shape {tuple(x.shape)}"


def conv_only(method: str) -> Callable[[str, jax.Array], str | None]:
    """The ``accepts`` of a method that factorizes only ``(kh, kw, C, F)`` convolution kernels."""

    def accepts(path: str, x: jax.Array) -> str | None:
        if x.ndim != 4:
            return f"it is {describe(x)}; {method} needs a (kh, kw, C, F) convolution kernel"
        return None

    return accepts


def build(
    *,
    what: str,
    where: Any,
    default: Selector,
    accepts: Callable[[str, jax.Array], str | None],
    factorize: Callable[[Any, jax.Array], tuple[Any, dict[str, Any]]],
    state_cls: type,
    per_leaf: dict[str, Any] | None = None,
) -> Transform:
    """Builds a low-rank transform from its per-leaf parts.

    Args:
      what: the factory's name, for messages (``"jaderberg"``).
      where: the user's ``where=``.
      default: the selector used when ``where`` is None (only leaves it accepts).
      accepts: ``(path, kernel) -> None`` if the method can factorize the kernel, else the reason.
      factorize: ``(leaf, kernel) -> (node, fixed)``: the node (its non-trained fields
        ``MaskedNode()``) and the dict of those fields; ``leaf`` is the kernel's
        :class:`jaxcomp.core.Leaf` (its path, its index to fold into PRNG keys, its per-leaf
        values).
      state_cls: the state NamedTuple, built as ``state_cls(spec, fixed)``.
      per_leaf: per-leaf arguments (``{"rank": rank}``) resolved by :func:`jaxcomp.core.select`.

    Returns:
      The :class:`jaxcomp.Transform`.
    """

    def init(params):
        spec = select(params, where, fn=what, default=default, accepts=accepts, **(per_leaf or {}))
        ws = selected(spec, params)
        out = [factorize(lf, x) for lf, x in zip(leaves(spec), ws, strict=True)]
        fixed = placed(spec, [f for _, f in out])
        return rebuild(spec, params, [n for n, _ in out]), state_cls(spec, fixed)

    def apply(cparams, state):
        dense = lambda _, c, fixed: c._replace(**fixed).to_dense()
        return map_leaves(dense, state.spec, cparams, state.fixed)

    def update(cparams, state, *, step, grads=None):
        del step, grads
        return cparams, state

    def finalize(cparams, state):
        return map_leaves(lambda _, c, fixed: c._replace(**fixed), state.spec, cparams, state.fixed)

    return Transform(init, apply, update, finalize)

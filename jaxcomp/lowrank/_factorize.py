"""The shared machinery of the low-rank transforms: a kernel leaf in, a factored node out.

Every low-rank method is a structure-changing transform built the same way. ``init`` resolves
``where=``, checks that each selected kernel is one the method can factorize (a ``ValueError``
naming the leaf otherwise), and replaces it with a factored node (:mod:`jaxcomp.lowrank._nodes`).
The trainable factors are the ``cparams``; what is not trained (integer channel orders, a fixed
dictionary) goes in the state, in a tree of :class:`Slot` s with the params' structure (a
``MaskedNode`` where nothing was factorized). ``apply`` rebuilds every dense kernel from its
factors (differentiable), ``update`` changes nothing, ``finalize`` returns the complete nodes, which
:func:`jaxcomp.adapt.run_factorized` runs directly.

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

from jaxcomp.core._transform import Transform
from jaxcomp.core._tree import MaskedNode
from jaxcomp.core._tree import is_array
from jaxcomp.core._tree import path_str
from jaxcomp.select._select import Selector
from jaxcomp.select._select import resolve

__all__ = ["Slot", "build", "check_int", "check_key", "conv_only", "describe"]


class Slot(NamedTuple):
    """The non-trained fields of one factored kernel (empty for most methods).

    Attributes:
      fixed: ``{field: array}``, the node fields that are ``MaskedNode()`` in the ``cparams``.
    """

    fixed: dict[str, Any]


def describe(x: Any) -> str:
    """A short description of a kernel for error messages: ``Dense kernel (784, 300)``."""
    kind = {2: "Dense kernel", 4: "Conv kernel"}.get(x.ndim, f"{x.ndim}-D kernel")
    return f"a {kind} of shape {tuple(x.shape)}"


def check_int(what: str, name: str, value: Any, low: int = 1) -> None:
    """Raises ``ValueError`` unless ``value`` is an int (not a bool) ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what}: {name} must be an int >= {low}, got {value!r}")


def check_key(what: str, key: Any) -> None:
    """Raises ``ValueError`` unless ``key`` is a typed PRNG key."""
    if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        raise ValueError(f"{what}: key must be a typed PRNG key from jax.random.key(seed)")


def conv_only(method: str) -> Callable[[str, jax.Array], str | None]:
    """The ``accepts`` of a method that factorizes only ``(kh, kw, C, F)`` convolution kernels."""

    def accepts(path: str, x: jax.Array) -> str | None:
        if x.ndim != 4:
            return f"it is {describe(x)}; {method} needs a (kh, kw, C, F) convolution kernel"
        return None

    return accepts


def _is_slot(x: Any) -> bool:
    return isinstance(x, Slot | MaskedNode)


def build(
    *,
    what: str,
    where: Any,
    default: Selector,
    accepts: Callable[[str, jax.Array], str | None],
    factorize: Callable[[str, jax.Array, int], tuple[Any, dict[str, Any]]],
    state_cls: type,
) -> Transform:
    """Builds a low-rank transform from its per-leaf parts.

    Args:
      what: the factory's name, for messages (``"jaderberg"``).
      where: the user's ``where=``.
      default: the selector used when ``where`` is None (only leaves it accepts).
      accepts: ``(path, kernel) -> None`` if the method can factorize the kernel, else the reason.
      factorize: ``(path, kernel, index) -> (node, fixed)``: the node (its non-trained fields
        ``MaskedNode()``) and the dict of those fields; ``index`` numbers the selected leaves
        (to fold into PRNG keys).
      state_cls: the state NamedTuple, built as ``state_cls(slots)``.

    Returns:
      The :class:`jaxcomp.Transform`.
    """

    def selection(params: Any) -> list[bool]:
        pl = jax.tree_util.tree_leaves_with_path(params)
        if where is None:
            return [
                is_array(x) and default(path_str(p), x) and accepts(path_str(p), x) is None
                for p, x in pl
            ]
        flags = jax.tree.leaves(resolve(where, params, what=f"{what}(where=...)"))
        for (p, x), f in zip(pl, flags, strict=True):
            reason = accepts(path_str(p), x) if f else None
            if reason is not None:
                raise ValueError(f"{what}: cannot factorize {path_str(p)!r}: {reason}")
        return flags

    def init(params):
        pl, treedef = jax.tree_util.tree_flatten_with_path(params)
        flags = selection(params)
        leaves, slots, index = [], [], 0
        for (p, x), f in zip(pl, flags, strict=True):
            if f:
                node, fixed = factorize(path_str(p), x, index)
                index += 1
                leaves.append(node)
                slots.append(Slot(fixed))
            else:
                leaves.append(x)
                slots.append(MaskedNode())
        return treedef.unflatten(leaves), state_cls(treedef.unflatten(slots))

    def _map(fn, cparams, state):
        return jax.tree.map(
            lambda slot, c: fn(c, slot) if isinstance(slot, Slot) else c,
            state.slots,
            cparams,
            is_leaf=_is_slot,
        )

    def apply(cparams, state):
        return _map(lambda c, slot: c._replace(**slot.fixed).to_dense(), cparams, state)

    def update(cparams, state, *, step, grads=None):
        del step, grads
        return cparams, state

    def finalize(cparams, state):
        return _map(lambda c, slot: c._replace(**slot.fixed), cparams, state)

    return Transform(init, apply, update, finalize)

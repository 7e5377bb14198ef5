"""Running an unchanged Flax model whose layers hold params of other shapes or kinds.

Some compression cannot be said with dense params alone: a factorized layer should run as two
small matmuls, an int8 layer as an integer matmul, an activation quantizer must see the activations.
The model's code stays as it is; :func:`intercept` wraps its ``apply`` so that each layer's call
goes through a *handler* first (``flax.linen.intercept_methods``). A handler looks at the layer
and its params and either computes the layer's output itself (so a ``Dense`` built for a 784x300
kernel can run from 784x150 and 150x300 factors, which the layer's own code would reject) or
returns :data:`PASS` to let the layer run as written.

Handlers compose: :func:`intercept` takes several, and the first that does not pass wins.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

from flax import linen as nn

__all__ = [
    "PASS",
    "Handler",
    "Layer",
    "intercept",
    "layer_path",
]


class _Pass:
    """The sentinel a handler returns to let the layer run its own code."""

    def __repr__(self) -> str:
        return "PASS"


PASS = _Pass()


class Layer(NamedTuple):
    """What a handler sees of one layer call.

    Attributes:
      module: the bound Flax module (``nn.Dense``, ``nn.Conv``, ...): its attributes give the
        layer's configuration (``strides``, ``padding``, ``use_bias``...).
      path: the module's ``/``-joined path (``"Dense_0"``, ``"block1/Conv_0"``), the same names
        that ``where=`` rules and params paths use.
      params: the module's own ``params`` collection (a dict, possibly of other shapes or kinds
        than the module declares).
      args: the positional arguments of the call.
      kwargs: the keyword arguments of the call.
      call: ``call(*args, **kwargs)`` runs the layer's own code (or the next handler's).
    """

    module: nn.Module
    path: str
    params: dict[str, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    call: Callable[..., Any]


Handler = Callable[[Layer], Any]
"""``handler(layer) -> output``, or :data:`PASS` to run the layer as written."""


def layer_path(module: nn.Module) -> str:
    """The ``/``-joined path of a bound module (``""`` for the top-level model)."""
    scope = module.scope
    return "/".join(str(p) for p in scope.path) if scope is not None else ""


def intercept(apply_fn: Callable[..., Any], handlers: Handler | Sequence[Handler]) -> Callable:
    """Wraps a linen ``apply`` so that every module call goes through ``handlers`` first.

    Args:
      apply_fn: ``model.apply``, or any function that runs linen modules.
      handlers: one handler or several; for each ``__call__`` of a module, the first handler
        that returns something other than :data:`PASS` gives the output.

    Returns:
      A function with the signature of ``apply_fn``, jit-able like it.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import linen as nn
        >>> model = nn.Dense(2)
        >>> v = model.init(jax.random.key(0), jnp.ones((1, 3)))
        >>> doubled = intercept(model.apply, lambda layer: 2 * layer.call(*layer.args))
        >>> bool(jnp.allclose(doubled(v, jnp.ones((1, 3))), 2 * model.apply(v, jnp.ones((1, 3)))))
        True
    """
    hs = (handlers,) if callable(handlers) else tuple(handlers)
    for i, h in enumerate(hs):
        if not callable(h):
            raise TypeError(f"intercept: handler {i} is {type(h).__name__}, not callable")

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or module.scope is None:
            return next_fun(*args, **kwargs)
        params = module.variables.get("params", {})
        layer = Layer(module, layer_path(module), dict(params), tuple(args), dict(kwargs), next_fun)
        for h in hs:
            out = h(layer)
            if out is not PASS:
                return out
        return next_fun(*args, **kwargs)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with nn.intercept_methods(interceptor):
            return apply_fn(*args, **kwargs)

    return wrapped

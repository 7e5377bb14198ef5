"""Running an unchanged Flax model, linen or NNX, whose layers hold params of other shapes or kinds.

Some compression cannot be said with dense params alone: a factorized layer should run as two
small matmuls, an int8 layer as an integer matmul, an activation quantizer must see the activations.
The model's code stays as it is; :func:`intercept` wraps its ``apply`` so that each layer's call
goes through a *handler* first. A handler looks at the layer and its params and either computes the
layer's output itself (so a ``Dense`` built for a 784x300 kernel can run from 784x150 and 150x300
factors, which the layer's own code would reject) or returns :data:`PASS` to let the layer run as
written.

Both Flax APIs are intercepted the same way, and a handler sees the same :class:`Layer` for both:

* ``flax.linen``: ``apply_fn`` is ``model.apply`` (or any function that runs linen modules), and
  every module's ``__call__`` is intercepted with ``flax.linen.intercept_methods``.
* ``flax.nnx``: ``apply_fn`` is the :class:`jaxcomp.adapt.NNXApply` of
  :func:`jaxcomp.adapt.functional`. Each call merges the variables into a fresh copy of the module
  and, on that copy only, gives each module instance a cached subclass whose ``__call__`` goes
  through the handlers (the instances get their own classes back before the call returns). Nothing
  outside the call changes: no class, no global state.

The layer's path is its ``/``-joined params path (``"Conv_0"``, ``"block/Dense_1"``, ``""`` for
the model itself); :attr:`Layer.config` is its configuration read the same way from either API
(:func:`jaxcomp.adapt.layer_config`). Handlers compose: :func:`intercept` takes several, and the
first that does not pass wins.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

from flax import linen as nn
from flax import nnx

from jaxcomp.adapt._config import LayerConfig
from jaxcomp.adapt._config import layer_config
from jaxcomp.adapt._nnx import NNXApply
from jaxcomp.adapt._nnx import _mutable_names

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
    """What a handler sees of one layer call, for a linen or an NNX module.

    Attributes:
      module: the Flax module (a bound ``nn.Module``, or an ``nnx.Module``). Read its
        configuration through :attr:`config`, which is the same for both APIs.
      path: the module's ``/``-joined path (``"Dense_0"``, ``"block1/Conv_0"``), the same names
        that ``where=`` rules and params paths use.
      params: the module's ``params`` (a dict, possibly of other shapes or kinds than the module
        declares), with those of its submodules nested under their names.
      args: the positional arguments of the call.
      kwargs: the keyword arguments of the call.
      call: ``call(*args, **kwargs)`` runs the layer's own code (or the next handler's).
      backend: how variables are read and written for this API (internal; use the methods).
    """

    module: Any
    path: str
    params: dict[str, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    call: Callable[..., Any]
    backend: Any = None

    @property
    def config(self) -> LayerConfig | None:
        """The layer's :class:`jaxcomp.adapt.LayerConfig` (Dense or Conv), or None."""
        return layer_config(self.module)

    def run(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Runs the layer's own code with ``params`` in place of its own (a rebuilt kernel).

        Args:
          params: the layer's params to use, by name (``{"kernel": ..., "bias": ...}``).
          *args: the call's positional arguments.
          **kwargs: the call's keyword arguments.

        Returns:
          The layer's output.
        """
        return self.backend.run(self, params, args, kwargs)

    def get_variable(self, collection: str, name: str) -> Any:
        """The layer's variable ``name`` of ``collection`` (``"quant_stats"``), or None."""
        return self.backend.get(self, collection, name)

    def put_variable(self, collection: str, name: str, value: Any) -> None:
        """Sets the layer's variable ``name`` of ``collection``; the collection must be mutable.

        Raises:
          ValueError: ``collection`` is not mutable in this call (linen raises its own error).
        """
        self.backend.put(self, collection, name, value)

    def is_mutable(self, collection: str) -> bool:
        """Whether this call returns ``collection`` (``apply(..., mutable=[collection])``)."""
        return self.backend.is_mutable(self, collection)

    @property
    def initializing(self) -> bool:
        """True inside linen's ``model.init`` (an NNX module is never initializing here)."""
        return self.backend.initializing(self)


Handler = Callable[[Layer], Any]
"""``handler(layer) -> output``, or :data:`PASS` to run the layer as written."""


def layer_path(module: nn.Module) -> str:
    """The ``/``-joined path of a bound linen module (``""`` for the top-level model)."""
    scope = module.scope
    return "/".join(str(p) for p in scope.path) if scope is not None else ""


class _Linen:
    """Variable access of a bound linen module."""

    @staticmethod
    def run(layer: Layer, params: dict[str, Any], args: tuple, kwargs: dict) -> Any:
        return layer.module.clone(parent=None).apply({"params": params}, *args, **kwargs)

    @staticmethod
    def get(layer: Layer, collection: str, name: str) -> Any:
        m = layer.module
        return m.get_variable(collection, name) if m.has_variable(collection, name) else None

    @staticmethod
    def put(layer: Layer, collection: str, name: str, value: Any) -> None:
        layer.module.put_variable(collection, name, value)

    @staticmethod
    def is_mutable(layer: Layer, collection: str) -> bool:
        return layer.module.is_mutable_collection(collection)

    @staticmethod
    def initializing(layer: Layer) -> bool:
        return layer.module.is_initializing()


def _check_handlers(handlers: Handler | Sequence[Handler]) -> tuple[Handler, ...]:
    hs = (handlers,) if callable(handlers) else tuple(handlers)
    for i, h in enumerate(hs):
        if not callable(h):
            raise TypeError(f"intercept: handler {i} is {type(h).__name__}, not callable")
    return hs


def _dispatch(hs: tuple[Handler, ...], layer: Layer) -> Any:
    for h in hs:
        out = h(layer)
        if out is not PASS:
            return out
    return layer.call(*layer.args, **layer.kwargs)


def intercept(apply_fn: Callable[..., Any], handlers: Handler | Sequence[Handler]) -> Callable:
    """Wraps a linen or NNX ``apply`` so that every module call goes through ``handlers`` first.

    Args:
      apply_fn: a linen ``model.apply`` (or any function that runs linen modules), or the
        :class:`jaxcomp.adapt.NNXApply` of an NNX model (:func:`jaxcomp.adapt.functional`).
      handlers: one handler or several; for each ``__call__`` of a module, the first handler
        that returns something other than :data:`PASS` gives the output.

    Returns:
      A function with the signature of ``apply_fn``, jit-able like it. For NNX, collections that
      the module does not hold (such as ``"quant_stats"``, written by handlers with
      :meth:`Layer.put_variable`) are accepted in ``variables`` and returned with ``mutable=``.

    Raises:
      TypeError: a handler is not callable.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import linen as nn
        >>> model = nn.Dense(2)
        >>> v = model.init(jax.random.key(0), jnp.ones((1, 3)))
        >>> doubled = intercept(model.apply, lambda layer: 2 * layer.call(*layer.args))
        >>> bool(jnp.allclose(doubled(v, jnp.ones((1, 3))), 2 * model.apply(v, jnp.ones((1, 3)))))
        True
    """
    hs = _check_handlers(handlers)
    if isinstance(apply_fn, NNXApply):
        return _intercept_nnx(apply_fn, hs)

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or module.scope is None:
            return next_fun(*args, **kwargs)
        params = module.variables.get("params", {})
        layer = Layer(module, layer_path(module), dict(params), tuple(args), dict(kwargs),
                      next_fun, _Linen)  # fmt: skip
        return _dispatch(hs, layer)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with nn.intercept_methods(interceptor):
            return apply_fn(*args, **kwargs)

    return wrapped


# --- NNX --------------------------------------------------------------------------------------

_HOOK = "_jaxcomp_intercept"


def _has_call(cls: type) -> bool:
    return any("__call__" in vars(c) for c in cls.__mro__ if c is not object)


@functools.cache
def _intercepting(cls: type) -> type:
    """``cls`` with a ``__call__`` that goes through the instance's hook (cached per class)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        own = functools.partial(cls.__call__, self)
        hook = vars(self).get(_HOOK)
        return own(*args, **kwargs) if hook is None else hook(self, own, args, kwargs)

    ns = {"__call__": __call__, "_jaxcomp_base": cls, "__module__": cls.__module__,
          "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}  # fmt: skip
    return type(cls.__name__, (cls,), ns)


def _lookup(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key, tree.get(str(key)))
    return tree


class _NNX:
    """Variable access for the intercepted copy of an NNX module (one per call)."""

    def __init__(self, side: dict[str, Any], mutable: bool | tuple[str, ...], own: tuple[str, ...]):
        self.side = side  # the collections the module does not hold, as passed in
        self.mutable = mutable
        self.own = own
        self.updates: dict[str, dict[str, dict[str, Any]]] = {}

    def run(self, layer: Layer, params: dict[str, Any], args: tuple, kwargs: dict) -> Any:
        m = layer.module
        old = {}
        for name, value in params.items():
            var = vars(m).get(name)
            if not isinstance(var, nnx.Param):
                raise ValueError(
                    f"layer {layer.path!r}: params has {name!r}, which is not an nnx.Param of "
                    f"the layer; its params are {sorted(layer.params)}"
                )
            old[name] = var.get_value()
            var.set_value(value)
        try:
            return type(m)._jaxcomp_base.__call__(m, *args, **kwargs)
        finally:
            for name, value in old.items():
                vars(m)[name].set_value(value)

    def get(self, layer: Layer, collection: str, name: str) -> Any:
        if layer.path in self.updates.get(collection, {}):
            found = self.updates[collection][layer.path].get(name)
            if found is not None:
                return found
        path = tuple(layer.path.split("/")) if layer.path else ()
        scope = _lookup(self.side.get(collection, {}), path)
        return scope.get(name) if isinstance(scope, dict) else None

    def put(self, layer: Layer, collection: str, name: str, value: Any) -> None:
        if collection in self.own:
            raise ValueError(
                f"layer {layer.path!r}: the module holds collection {collection!r} in its own "
                "nnx.Variables; a handler can only write collections the module does not have"
            )
        if not self.is_mutable(layer, collection):
            raise ValueError(
                f"layer {layer.path!r}: collection {collection!r} is not mutable; pass "
                f"mutable=[{collection!r}]"
            )
        self.updates.setdefault(collection, {}).setdefault(layer.path, {})[name] = value

    def is_mutable(self, layer: Layer, collection: str) -> bool:
        del layer
        return self.mutable is True or (bool(self.mutable) and collection in self.mutable)

    def initializing(self, layer: Layer) -> bool:
        del layer
        return False

    def collection(self, name: str) -> dict[str, Any]:
        """The side collection ``name`` as passed in, with this call's updates applied."""
        tree = _copy(self.side.get(name, {}))
        for path, values in self.updates.get(name, {}).items():
            node = tree
            for key in path.split("/") if path else ():
                node = node.setdefault(key, {})
            node.update(values)
        return tree


def _copy(tree: Any) -> Any:
    return {k: _copy(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def _hook(module: nnx.Module, hs: tuple[Handler, ...], backend: _NNX, params: dict) -> list:
    hooked = []
    for path, m in nnx.iter_modules(module):
        cls = type(m)
        if not _has_call(cls):
            continue
        p = "/".join(str(k) for k in path)
        own = _lookup(params, tuple(path))

        def hook(self, call, args, kwargs, p=p, own=own):
            layer = Layer(self, p, dict(own) if isinstance(own, dict) else {}, tuple(args),
                          dict(kwargs), call, backend)  # fmt: skip
            return _dispatch(hs, layer)

        vars(m)[_HOOK] = hook
        object.__setattr__(m, "__class__", _intercepting(cls))
        hooked.append((m, cls))
    return hooked


def _unhook(hooked: list) -> None:
    for m, cls in hooked:
        object.__setattr__(m, "__class__", cls)
        vars(m).pop(_HOOK, None)


def _intercept_nnx(apply_fn: NNXApply, hs: tuple[Handler, ...]) -> Callable[..., Any]:
    own_names = apply_fn.collections

    def wrapped(variables: dict[str, Any], *args: Any, mutable: Any = False,
                method: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        if not isinstance(variables, dict):
            raise ValueError(
                f"variables must be a dict of collections, got {type(variables).__name__}"
            )
        names = _mutable_names(mutable)
        own = {c: v for c, v in variables.items() if c in own_names}
        side = {c: v for c, v in variables.items() if c not in own_names}
        backend = _NNX(side, names, own_names)
        module = apply_fn.merge(own)

        def run(module: nnx.Module, *a: Any, **k: Any) -> Any:
            hooked = _hook(module, hs, backend, own.get("params", {}))
            try:
                if method is None:
                    return module(*a, **k)
                if isinstance(method, str):
                    return getattr(module, method)(*a, **k)
                return method(module, *a, **k)
            finally:
                _unhook(hooked)

        out = apply_fn.call_module(module, *args, mutable=mutable, method=run, **kwargs)
        if not names:
            return out
        y, cols = out
        extra = set(side) | set(backend.updates)
        wanted = extra if names is True else [n for n in names if n not in own_names]
        return y, {**cols, **{n: backend.collection(n) for n in wanted}}

    return wrapped

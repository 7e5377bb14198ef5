"""A functional, linen-style view of a Flax NNX module: ``apply(variables, *args)``.

Every jaxcomp transform, ``where=`` rule, training step and checkpoint works on a pytree of params
and on an ``apply`` function, as linen gives them. :func:`functional` splits an ``nnx.Module`` into
the same two things: an :class:`NNXApply` (the module's graph definition and the shapes of its
state, static and hashable) and a ``variables`` dict of plain nested dicts,
``{"params": {...}, "batch_stats": {...}}``, whose paths are the module's attribute paths
(``Conv_0/kernel``). An NNX model whose submodules carry linen's names therefore has exactly the
params paths of its linen twin, and the same rules select the same leaves.

Each of the module's ``nnx.Variable`` s goes to the collection named by the first of these rules
that its type matches (:func:`collection_name`):

- ``nnx.Param`` (and its subclasses) -> ``"params"``
- ``nnx.BatchStat`` -> ``"batch_stats"``
- ``nnx.RngState`` (``RngKey``, ``RngCount``: the state of the module's own RNG streams, such
  as a ``Dropout``'s) -> ``"rng_state"``
- ``nnx.Intermediate`` (``sow``) -> ``"intermediates"``
- any other type -> its class name in snake case (``nnx.Cache`` -> ``"cache"``,
  ``MyStat`` -> ``"my_stat"``).

Calling ``NNXApply`` merges the variables into a fresh copy of the module, without checking
shapes (a layer may hold factors or integer codes that an adapter intercepts), sets the copy's
train or eval mode, calls it and, as linen's ``apply(..., mutable=[...])`` does, returns the
collections that the call changed.

References:
    Flax NNX, "Functional API" (``nnx.split`` / ``nnx.merge``), https://flax.readthedocs.io.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["NNXApply", "collection_name", "functional"]

_RULES: tuple[tuple[type, str], ...] = (
    (nnx.Param, "params"),
    (nnx.BatchStat, "batch_stats"),
    (nnx.RngState, "rng_state"),
    (nnx.Intermediate, "intermediates"),
)
_RNG_STATE = "rng_state"


def collection_name(variable_type: type) -> str:
    """The linen collection that an ``nnx.Variable`` type belongs to.

    Args:
        variable_type: a subclass of ``nnx.Variable``.

    Returns:
        ``"params"`` for ``nnx.Param``, ``"batch_stats"`` for ``nnx.BatchStat``, ``"rng_state"``
        for ``nnx.RngState``, ``"intermediates"`` for ``nnx.Intermediate`` (subclasses
        included, first match wins), else the class name in snake case.

    Raises:
        ValueError: if ``variable_type`` is not an ``nnx.Variable`` subclass.

    Examples:
        >>> from flax import nnx
        >>> collection_name(nnx.BatchStat), collection_name(nnx.Cache)
        ('batch_stats', 'cache')
    """
    if not (isinstance(variable_type, type) and issubclass(variable_type, nnx.Variable)):
        raise ValueError(f"variable_type must be an nnx.Variable subclass, got {variable_type!r}")
    for base, name in _RULES:
        if issubclass(variable_type, base):
            return name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", variable_type.__name__).lower()


def _path_str(path: tuple[Any, ...]) -> str:
    return "/".join(str(p) for p in path)


def _split_collections(state: nnx.State) -> dict[str, nnx.State]:
    groups: dict[str, list[tuple[tuple[Any, ...], nnx.Variable]]] = {}
    for path, variable in nnx.to_flat_state(state):
        groups.setdefault(collection_name(type(variable)), []).append((path, variable))
    return {name: nnx.from_flat_state(items) for name, items in groups.items()}


def _variables_of(module: nnx.Module) -> dict[str, dict[str, Any]]:
    _, state = nnx.split(module)
    return {name: nnx.to_pure_dict(s) for name, s in _split_collections(state).items()}


def _lookup(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping):
            raise KeyError(key)
        if key in tree:
            tree = tree[key]
        elif str(key) in tree:
            tree = tree[str(key)]
        else:
            raise KeyError(key)
    return tree


def _leaf_paths(tree: Any, prefix: tuple[Any, ...], stop: set[tuple[str, ...]]) -> Iterable[str]:
    """The paths of ``tree`` not at or under a path in ``stop`` (string keys)."""
    key = tuple(str(p) for p in prefix)
    if key in stop:
        return
    if isinstance(tree, Mapping) and tree:
        for k, v in tree.items():
            yield from _leaf_paths(v, (*prefix, k), stop)
    else:
        yield _path_str(prefix)


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def _placeholder(abstract: Any) -> Any:
    """A concrete value of an abstract RNG-state leaf (key 0 or count 0)."""
    if _is_key(abstract):
        return jax.random.key(0)
    return jnp.zeros(abstract.shape, abstract.dtype)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class NNXApply:
    """A linen-style ``apply`` for an NNX module: ``apply(variables, *args, **kwargs)``.

    Built by :func:`functional`. It holds no arrays, only the module's graph definition and the
    abstract (shape and dtype) state, and it is hashable and compares by structure, so it can be
    a static field of a jitted pytree (``TrainState.apply_fn``).

    Attributes:
        graphdef: the module's ``nnx.GraphDef``.
        abstract: ``((path, collection, abstract_variable), ...)``: every variable of the module
            at :func:`functional` time, its value a ``jax.ShapeDtypeStruct``.
    """

    graphdef: Any
    abstract: tuple[tuple[tuple[Any, ...], str, nnx.Variable], ...]

    _key: tuple[Any, ...] = dataclasses.field(init=False, repr=False)
    _hash: int = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        # computed once: a jitted step hashes and compares its static fields on every call
        key = (
            self.graphdef,
            tuple(
                (path, name, type(v), jax.tree.structure(v.get_value()),
                 tuple(jax.tree.leaves(v.get_value())))
                for path, name, v in self.abstract
            ),
        )  # fmt: skip
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        root = getattr(self.graphdef.nodes[0], "type", None)
        name = getattr(root, "__name__", "module")
        return f"NNXApply({name}, {len(self.abstract)} variables in {list(self.collections)})"

    def __eq__(self, other: object) -> bool:
        return self is other or (
            isinstance(other, NNXApply) and self._hash == other._hash and self._key == other._key
        )

    @property
    def collections(self) -> tuple[str, ...]:
        """The collection names of the module's variables, in first-seen order."""
        return tuple(dict.fromkeys(name for _, name, _ in self.abstract))

    def merge(self, variables: dict[str, Any]) -> nnx.Module:
        """A fresh module holding ``variables``; values are not shape-checked.

        A leaf may be any pytree (factors, integer codes with scales) or an array of another
        shape than the module declared: it is stored in the variable as it is, for an adapter that
        intercepts the layer's call to interpret.

        Args:
            variables: ``{collection: nested dict}`` as :func:`functional` returns. The
                ``"rng_state"`` collection may be omitted (the module's RNG streams then start
                from key 0; pass ``rngs=`` to the call to seed them).

        Returns:
            A new ``nnx.Module`` (the caller may mutate it; nothing is shared with other merges
            beyond the arrays of ``variables``).

        Raises:
            ValueError: ``variables`` is not a dict, names a collection the module does not
                have, lacks one it has, or a collection's paths differ from the module's
                (missing and unexpected paths are named).
        """
        if not isinstance(variables, Mapping):
            raise ValueError(
                f"variables must be a dict of collections, got {type(variables).__name__}"
            )
        known = self.collections
        unknown = sorted(set(variables) - set(known))
        if unknown:
            raise ValueError(
                f"variables has collections {unknown} that the module does not have; "
                f"its collections are {list(known)}"
            )
        absent = [c for c in known if c not in variables and c != _RNG_STATE]
        if absent:
            raise ValueError(
                f"variables lacks the collections {absent}; pass the dict that functional() "
                f"returned (collections {list(known)})"
            )
        flat, missing = [], []
        for path, name, abstract in self.abstract:
            if name not in variables:
                value = jax.tree.map(_placeholder, abstract.get_value())
            else:
                try:
                    value = _lookup(variables[name], path)
                except KeyError:
                    missing.append(f"{name}/{_path_str(path)}")
                    continue
            # numpy leaves become jax arrays: NNX writes updated statistics into a numpy array
            # in place, which would change the caller's variables
            value = jax.tree.map(
                lambda a: jnp.asarray(a) if isinstance(a, np.ndarray) else a, value
            )
            flat.append((path, abstract.replace(value)))
        stops: dict[str, set[tuple[str, ...]]] = {}
        for path, name, _ in self.abstract:
            stops.setdefault(name, set()).add(tuple(str(p) for p in path))
        extra = [
            f"{name}/{p}"
            for name, tree in variables.items()
            for p in _leaf_paths(tree, (), stops[name])
        ]
        if missing or extra:
            raise ValueError(
                f"variables do not fit the module: missing paths {missing}, unexpected paths "
                f"{extra}"
            )
        return nnx.merge(self.graphdef, nnx.from_flat_state(flat))

    def call_module(
        self,
        module: nnx.Module,
        *args: Any,
        train: bool | None = None,
        rngs: jax.Array | dict[str, jax.Array] | None = None,
        mutable: bool | str | Sequence[str] = False,
        method: str | Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Calls a merged module the way linen's ``apply`` calls a linen one.

        Args:
            module: a module from :meth:`merge` (it is mutated: mode, RNG streams, statistics).
            *args: the call's positional arguments.
            train: ``True`` calls ``module.train()`` first (batch statistics, dropout on),
                ``False`` calls ``module.eval()``, ``None`` keeps the mode the module had when
                :func:`functional` split it. Not passed on to the module.
            rngs: ``{stream: key}`` (linen's ``rngs={"dropout": key}``) reseeds the module's
                RNG streams of those names with ``nnx.reseed``; a single key reseeds the
                ``"default"`` stream.
            mutable: ``False``, a collection name, a list of them, or ``True`` for all: the
                collections to return after the call.
            method: a method name or ``fn(module, *args, **kwargs)`` to call instead of
                ``__call__``.
            **kwargs: the call's keyword arguments.

        Returns:
            The output, or ``(output, {collection: nested dict})`` when ``mutable`` names any.

        Raises:
            ValueError: if ``mutable`` is not a bool, a name or a list of names.
        """
        if train is not None:
            if train:
                module.train()
            else:
                module.eval()
        if rngs is not None:
            streams = rngs if isinstance(rngs, dict) else {"default": rngs}
            nnx.reseed(module, **streams)
        if method is None:
            out = module(*args, **kwargs)
        elif isinstance(method, str):
            out = getattr(module, method)(*args, **kwargs)
        else:
            out = method(module, *args, **kwargs)
        names = _mutable_names(mutable)
        if not names:
            return out
        collections = _variables_of(module)
        if names is True:
            return out, collections
        return out, {name: collections.get(name, {}) for name in names}

    def __call__(
        self,
        variables: dict[str, Any],
        *args: Any,
        train: bool | None = None,
        rngs: jax.Array | dict[str, jax.Array] | None = None,
        mutable: bool | str | Sequence[str] = False,
        method: str | Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``call_module(merge(variables), *args, ...)``: linen's ``apply`` for the module.

        See :meth:`merge` and :meth:`call_module` for the arguments.

        Raises:
            ValueError: as :meth:`merge` and :meth:`call_module` do, and for ``train=True`` on a
                module with RNG streams given neither ``rngs`` nor an ``"rng_state"`` collection.
        """
        if train and rngs is None and _RNG_STATE in self.collections:
            if _RNG_STATE not in variables:
                raise ValueError(
                    "train=True on a module with RNG streams needs rngs= or the variables' "
                    "'rng_state' collection"
                )
        module = self.merge(variables)
        return self.call_module(
            module, *args, train=train, rngs=rngs, mutable=mutable, method=method, **kwargs
        )


def _mutable_names(mutable: bool | str | Sequence[str]) -> bool | tuple[str, ...]:
    if mutable is True or mutable is False:
        return mutable
    if isinstance(mutable, str):
        return (mutable,)
    if isinstance(mutable, Sequence) and all(isinstance(m, str) for m in mutable):
        return tuple(mutable)
    raise ValueError(
        f"mutable must be a bool, a collection name or a list of them, got {mutable!r}"
    )


def functional(model: nnx.Module) -> tuple[NNXApply, dict[str, dict[str, Any]]]:
    """Splits an NNX module into a linen-style ``apply`` and its ``variables``.

    Args:
        model: an ``nnx.Module`` (left unchanged).

    Returns:
        ``(apply, variables)``: ``apply(variables, *args, train=None, rngs=None, mutable=False,
        **kwargs)`` (an :class:`NNXApply`) and ``{collection: nested dict of arrays}``, the
        collections named by :func:`collection_name` (``"params"``, ``"batch_stats"``...).
        ``apply(variables, x)`` equals ``model(x)``.

    Raises:
        ValueError: if ``model`` is not an ``nnx.Module``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> apply, variables = functional(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
        >>> sorted(variables["params"])
        ['bias', 'kernel']
        >>> apply(variables, jnp.ones((4, 3))).shape
        (4, 2)
    """
    if not isinstance(model, nnx.Module):
        raise ValueError(f"model must be an nnx.Module, got {type(model).__name__}")
    graphdef, state = nnx.split(model)
    abstract = []
    variables: dict[str, dict[str, Any]] = {}
    for name, group in _split_collections(state).items():
        variables[name] = nnx.to_pure_dict(group)
        for path, variable in nnx.to_flat_state(group):
            shapes = jax.tree.map(
                lambda x: (
                    jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
                    if not _is_key(x)
                    else jax.ShapeDtypeStruct(x.shape, x.dtype)
                ),
                variable.get_value(),
            )
            abstract.append((path, name, variable.replace(shapes)))
    return NNXApply(graphdef, tuple(abstract)), variables

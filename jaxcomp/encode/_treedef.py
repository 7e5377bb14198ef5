"""The structure of a params pytree as JSON, and back, without pickle or eval.

A ``.jcz`` artifact (see ``docs/encode.md``) describes the containers of the tree it stores in its
JSON metadata, so that loading gives back the same container types: dicts (string or int keys, in
their order), lists, tuples, ``None``, NamedTuples and dataclasses. A NamedTuple or dataclass is
written as its class's name, ``"module:qualname"``, and its field names. Loading never imports
anything by a name read from a file: it looks the name up among the classes jaxcomp defines
(compressed nodes such as ``jaxcomp.quant``'s codebook and integer-code arrays, the low-rank
factors, ``jaxcomp.core.MaskedNode``) and the classes a user registered with
:func:`register_node` (a compressed node defined outside jaxcomp, see :mod:`jaxcomp.core`), so an
artifact can never make the loader import or run anything else. The non-array fields of such nodes
(a bit width, an axis, a dtype, a shape) are stored as JSON values: Python ``bool``, ``int``,
finite ``float`` and ``str`` values, and dtypes (which come back as ``numpy.dtype``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from typing import Any

import jax
import numpy as np

from jaxcomp.errors import CorruptArtifactError

__all__ = ["class_ref", "register_node", "tree_from_json", "tree_to_json"]


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _is_dataclass_instance(x: Any) -> bool:
    return dataclasses.is_dataclass(x) and not isinstance(x, type)


def _is_dtype(x: Any) -> bool:
    """A numpy dtype, or a scalar type that names one (``np.float32``, ``jnp.bfloat16``)."""
    if isinstance(x, np.dtype):
        return True
    if isinstance(x, type) and (issubclass(x, np.generic) or hasattr(x, "dtype")):
        try:
            np.dtype(x)
        except TypeError:
            return False
        return True
    return False


def _is_node_class(cls: Any) -> bool:
    namedtuple = isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")
    return namedtuple or (isinstance(cls, type) and dataclasses.is_dataclass(cls))


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


@functools.cache
def _jaxcomp_classes() -> dict[str, type]:
    """Every NamedTuple and dataclass that a jaxcomp module defines, by ``module:qualname``."""
    out = {}
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "jaxcomp" or mod_name.startswith("jaxcomp.")):
            continue
        for obj in vars(mod).values():
            if _is_node_class(obj) and obj.__module__ == mod_name:
                out[_name(obj)] = obj
    return out


_REGISTERED: dict[str, type] = {}
"""Node classes from outside jaxcomp; filled only by explicit :func:`register_node` calls."""


def register_node(cls: type, *, name: str | None = None) -> str:
    """Lets ``jaxcomp.encode`` save and load a node class defined outside jaxcomp.

    An explicit call, made by the user before ``save``/``pack`` and before ``load``/``unpack``
    (loading looks names up here and never imports by a name read from a file).

    Args:
      cls: a NamedTuple or dataclass registered as a pytree (a compressed node: ``to_dense()`` and
        ``nbytes``, see :mod:`jaxcomp.core`, or any container of arrays).
      name: the name the artifact stores; ``"module:qualname"`` of ``cls`` by default.

    Returns:
      The name.

    Raises:
      ValueError: ``cls`` is not a NamedTuple or dataclass class, or ``name`` is already taken by
        another class.

    Examples:
        >>> from typing import NamedTuple
        >>> import jax
        >>> class Scaled(NamedTuple):
        ...     w: jax.Array
        ...     s: jax.Array
        >>> register_node(Scaled, name="mylib:Scaled")
        'mylib:Scaled'
    """
    if not _is_node_class(cls):
        raise ValueError(f"register_node: cls must be a NamedTuple or dataclass class, got {cls!r}")
    name = _name(cls) if name is None else name
    if not isinstance(name, str) or ":" not in name:
        raise ValueError(f"register_node: name must be a 'module:qualname' string, got {name!r}")
    known = _jaxcomp_classes().get(name) or _REGISTERED.get(name)
    if known is not None and known is not cls:
        raise ValueError(f"register_node: the name {name!r} is already taken by {known!r}")
    _REGISTERED[name] = cls
    return name


def class_ref(cls: type) -> str:
    """The name under which an artifact stores a node class.

    Raises:
      ValueError: the class is neither a jaxcomp class nor registered with :func:`register_node`.
    """
    for name, known in _REGISTERED.items():
        if known is cls:
            return name
    ref = _name(cls)
    if _jaxcomp_classes().get(ref) is cls:
        return ref
    raise ValueError(
        f"node class {ref} is not from jaxcomp; register it first with "
        "jaxcomp.encode.register_node(cls) (and again before loading)"
    )


def _child_path(path: str, key: Any) -> str:
    return f"{path}/{key}" if path else str(key)


def tree_to_json(tree: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """The JSON description of ``tree``'s containers and its leaves in depth-first order.

    Args:
      tree: nested dicts, lists, tuples, NamedTuples and dataclasses (of jaxcomp classes) and
        ``None``, with numpy or jax arrays as leaves; Python scalars, strings and dtypes are
        stored as JSON values.

    Returns:
      ``(node, leaves)``: the JSON-able description (``{"t": "leaf", "i": index}`` for the
      ``index``-th leaf) and the ``(path, array)`` pairs, paths ``/``-joined.

    Raises:
      ValueError: for an unsupported container or leaf, naming its path.
    """
    leaves: list[tuple[str, Any]] = []

    def walk(x: Any, path: str) -> Any:
        where = path or "<root>"
        if x is None:
            return {"t": "none"}
        if type(x) in (bool, int, str) or (type(x) is float and math.isfinite(x)):
            return {"t": "value", "v": x}
        if _is_dtype(x):
            return {"t": "dtype", "v": np.dtype(x).name}
        if _is_namedtuple(x):
            ref = class_ref(type(x))
            kids = [walk(v, _child_path(path, f)) for f, v in zip(x._fields, x)]
            return {"t": "namedtuple", "cls": ref, "f": list(x._fields), "c": kids}
        if _is_dataclass_instance(x):
            ref = class_ref(type(x))
            fields = dataclasses.fields(x)
            if not all(f.init for f in fields):
                raise ValueError(f"dataclass {ref} at {where!r} has fields that __init__ skips")
            kids = [walk(getattr(x, f.name), _child_path(path, f.name)) for f in fields]
            return {"t": "dataclass", "cls": ref, "f": [f.name for f in fields], "c": kids}
        if type(x) is dict:
            for k in x:
                if isinstance(k, bool) or not isinstance(k, str | int):
                    raise ValueError(
                        f"dict key {k!r} at {where!r} is a {type(k).__name__}; "
                        "artifacts store str and int keys"
                    )
            kids = [walk(v, _child_path(path, k)) for k, v in x.items()]
            return {"t": "dict", "k": list(x), "c": kids}
        if type(x) is list or type(x) is tuple:
            kids = [walk(v, _child_path(path, i)) for i, v in enumerate(x)]
            return {"t": type(x).__name__, "c": kids}
        if isinstance(x, np.ndarray | jax.Array):
            leaves.append((path, x))
            return {"t": "leaf", "i": len(leaves) - 1}
        raise ValueError(
            f"unsupported node at {where!r}: {type(x).__module__}.{type(x).__qualname__}; "
            "artifacts store dicts, lists, tuples, jaxcomp NamedTuples and dataclasses, None, "
            "array leaves, Python scalars and dtypes (convert other containers, e.g. flax "
            "FrozenDict or nnx.State, to plain dicts; wrap numpy scalars with np.asarray)"
        )

    return walk(tree, ""), leaves


def tree_from_json(node: Any, leaves: list[Any]) -> Any:
    """Rebuilds the tree that :func:`tree_to_json` described, with the given leaves.

    Raises:
      CorruptArtifactError: if the description is malformed, a leaf index is out of range or used
        twice, or a NamedTuple class is outside ``jaxcomp``, cannot be imported, or has other
        fields.
    """
    used: set[int] = set()

    def build(n: Any) -> Any:
        if not isinstance(n, dict) or "t" not in n:
            raise CorruptArtifactError(f"malformed tree node {str(n)[:80]!r}")
        t = n["t"]
        if t == "none":
            return None
        if t == "value":
            v = n.get("v")
            if not isinstance(v, bool | int | float | str):
                raise CorruptArtifactError(f"malformed value node {str(n)[:80]!r}")
            return v
        if t == "dtype":
            return np.dtype(str(n.get("v")))
        if t == "leaf":
            i = n.get("i")
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(leaves):
                raise CorruptArtifactError(f"tree names leaf {i!r} of {len(leaves)}")
            if i in used:
                raise CorruptArtifactError(f"tree uses leaf {i} twice")
            used.add(i)
            return leaves[i]
        kids = n.get("c")
        if not isinstance(kids, list):
            raise CorruptArtifactError(f"tree node of type {t!r} has no list of children")
        if t == "list":
            return [build(c) for c in kids]
        if t == "tuple":
            return tuple(build(c) for c in kids)
        if t == "dict":
            keys = n.get("k")
            if not isinstance(keys, list) or len(keys) != len(kids):
                raise CorruptArtifactError("dict node keys and children differ in number")
            return {k: build(c) for k, c in zip(keys, kids)}
        if t in ("namedtuple", "dataclass"):
            cls, fields = _node_class(t, n.get("cls"), n.get("f"))
            if len(kids) != len(fields):
                raise CorruptArtifactError(f"{n['cls']} node has {len(kids)} children")
            if t == "namedtuple":
                return cls(*[build(c) for c in kids])
            return cls(**{f: build(c) for f, c in zip(fields, kids)})
        raise CorruptArtifactError(f"unknown tree node type {t!r}")

    tree = build(node)
    if len(used) != len(leaves):
        raise CorruptArtifactError(f"tree uses {len(used)} of the {len(leaves)} stored leaves")
    return tree


def _node_class(kind: str, ref: Any, fields: Any) -> tuple[Any, list[str]]:
    if not isinstance(ref, str) or ":" not in ref:
        raise CorruptArtifactError(f"malformed class reference {ref!r}")
    cls = _REGISTERED.get(ref) or _jaxcomp_classes().get(ref)
    if cls is None:
        raise CorruptArtifactError(
            f"artifact names the class {ref!r}, which is neither a jaxcomp class nor registered; "
            "register a class of your own with jaxcomp.encode.register_node before loading"
        )
    if kind == "namedtuple":
        ok = isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")
        names = list(getattr(cls, "_fields", ())) if ok else []
    else:
        ok = isinstance(cls, type) and dataclasses.is_dataclass(cls)
        names = [f.name for f in dataclasses.fields(cls)] if ok else []
    if not ok:
        raise CorruptArtifactError(f"{ref!r} is not a {kind} class")
    if not isinstance(fields, list) or names != fields:
        raise CorruptArtifactError(f"{ref!r} has fields {names}, the artifact stores {fields!r}")
    return cls, names

"""Net2Net: grow a trained network wider or deeper without changing the function it computes.

A bigger *student* starts from a trained smaller *teacher* through a function-preserving
initialization, so it starts at the teacher's accuracy and training continues from there.

* :func:`wider` (Net2WiderNet) widens a ``Dense`` or ``Conv`` layer from ``n`` to ``q`` units:
  unit ``j`` of the new layer copies unit ``g(j)`` of the old (``g(j) = j`` for ``j < n``, random
  for the rest), with its bias and, if a ``BatchNorm`` sits between, its scale, offset and
  statistics; the next layer's incoming weights from a unit replicated ``c`` times are divided
  by ``c``. The replicas compute the same activation, so the next layer sees the same sum. When
  the next layer is a ``Dense`` after a flattened feature map, each spatial position's channel
  block is remapped.
* :func:`deeper` (Net2DeeperNet) inserts an identity layer after a layer followed by ReLU: a
  ``Dense`` with the identity kernel, or a ``Conv`` whose kernel is the identity at the center tap
  (stride 1, SAME padding), and zero bias. Since ``relu(relu(x)) = relu(x)``, the output stays the
  same.

Symmetry breaking. Replicated units receive identical gradients and would stay replicas. With
``noise > 0``, :func:`wider` adds Gaussian noise (``noise`` times the standard deviation of the
next layer's kernel) to the replicas' outgoing weights, made zero-sum within each group of
replicas: the function is still preserved exactly (the replicas' activations are equal), but
their outgoing weights, and so their gradients, differ. (Chen et al. add small noise without the
zero-sum projection; this variant keeps their identity exact.) In :func:`deeper` the noise is
added to the identity kernel and does change the output slightly.

These are plain functions on linen params dicts: build the new model with the new width or depth
(:class:`jaxcomp.distill.MLP` and :class:`jaxcomp.distill.ConvNet` take them as attributes) and
run it with the returned params.

References:
    Chen, Goodfellow and Shlens, "Net2Net: accelerating learning via knowledge transfer",
    ICLR 2016, arXiv:1511.05641.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["deeper", "wider"]


def _split(path: Any, what: str) -> list[str]:
    if not isinstance(path, str) or not path or any(not p for p in path.split("/")):
        raise ValueError(f"{what} must be a '/'-joined layer path like 'Dense_0', got {path!r}")
    return path.split("/")


def _layers(tree: Any, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        p = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if any(not isinstance(x, Mapping) for x in v.values()):
                out.append(p)
            out += _layers({a: b for a, b in v.items() if isinstance(b, Mapping)}, p + "/")
    return out


def _get(tree: Mapping[str, Any], path: str, what: str, fn: str) -> dict[str, Any]:
    node: Any = tree
    for part in _split(path, f"{fn}: {what}"):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(
                f"{fn}: {what} {path!r} is not a layer of the params; layers: {_layers(tree)}"
            )
        node = node[part]
    if not isinstance(node, Mapping):
        raise ValueError(f"{fn}: {what} {path!r} is a leaf, not a layer")
    return dict(node)


def _set(tree: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    parts = path.split("/")
    out = dict(tree)
    if len(parts) == 1:
        out[parts[0]] = value
    else:
        out[parts[0]] = _set(tree[parts[0]], "/".join(parts[1:]), value)
    return out


def _kernel(layer: dict[str, Any], path: str, fn: str) -> jax.Array:
    k = layer.get("kernel")
    if k is None or jnp.ndim(k) not in (2, 4):
        raise ValueError(
            f"{fn}: layer {path!r} must be a Dense or 2-D Conv layer with a 'kernel' of rank 2 "
            f"or 4, got {None if k is None else jnp.shape(k)}"
        )
    return k


def wider(
    params: Mapping[str, Any],
    layer: str,
    next_layer: str,
    new_width: int,
    *,
    key: jax.Array,
    noise: float = 0.0,
    norm: str | None = None,
    batch_stats: Mapping[str, Any] | None = None,
) -> Any:
    """Net2WiderNet: widens ``layer`` to ``new_width`` units, keeping the network's function.

    Args:
      params: the trained model's params dict.
      layer: the ``Dense`` or ``Conv`` layer to widen (``"Dense_0"``).
      next_layer: the layer that consumes its output (a ``Dense`` or ``Conv``; a ``Dense`` after
        a flattened NHWC feature map is handled).
      new_width: the new number of units, at least the current number.
      key: picks the units to replicate (and draws the noise).
      noise: relative scale of the symmetry-breaking noise (zero-sum per replica group, so the
        function is kept exactly), ``>= 0``.
      norm: the path of a ``BatchNorm`` between the two layers, if there is one; its
        ``scale``/``bias`` are replicated with the units.
      batch_stats: the model's ``batch_stats`` collection, with ``norm``; its ``mean``/``var``
        are replicated too.

    Returns:
      The new params for the model built with ``new_width`` units at ``layer``; with
      ``batch_stats`` given, ``(params, batch_stats)``.

    Raises:
      ValueError: a path that names no layer (the message lists them), a layer that is not
        Dense/Conv, ``new_width`` smaller than the width, a ``next_layer`` whose input size is not
        a multiple of the width, ``noise < 0``, ``batch_stats`` without ``norm``, or a ``norm``
        layer of the wrong size.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxcomp.distill import MLP
        >>> x = jnp.ones((2, 5))
        >>> p = MLP(features=(4,), num_classes=3).init(jax.random.key(0), x)["params"]
        >>> p2 = wider(p, "Dense_0", "Dense_1", 7, key=jax.random.key(1))
        >>> y1 = MLP(features=(4,), num_classes=3).apply({"params": p}, x)
        >>> y2 = MLP(features=(7,), num_classes=3).apply({"params": p2}, x)
        >>> bool(jnp.allclose(y1, y2, atol=1e-5))
        True
    """
    fn = "wider"
    if not isinstance(params, Mapping):
        raise ValueError(f"wider: params must be a dict of layers, got {type(params).__name__}")
    cur = _get(params, layer, "layer", fn)
    nxt = _get(params, next_layer, "next_layer", fn)
    k, k_next = _kernel(cur, layer, fn), _kernel(nxt, next_layer, fn)
    n = k.shape[-1]
    if isinstance(new_width, bool) or not isinstance(new_width, int) or new_width < n:
        raise ValueError(f"wider: new_width must be an int >= {n} (the width), got {new_width!r}")
    if not noise >= 0:
        raise ValueError(f"wider: noise must be >= 0, got {noise!r}")
    in_next = k_next.shape[-2]
    if in_next % n:
        raise ValueError(
            f"wider: next_layer {next_layer!r} takes {in_next} inputs, not a multiple of "
            f"{layer!r}'s {n} units; is it the layer that consumes {layer!r}?"
        )
    if batch_stats is not None and norm is None:
        raise ValueError("wider: batch_stats needs norm= (the BatchNorm layer's path)")

    g, new_k, new_next_k = _widen(k, k_next, key, jnp.float32(noise), new_width)
    new_cur = dict(cur)
    new_cur["kernel"] = new_k
    if "bias" in cur:
        new_cur["bias"] = jnp.take(cur["bias"], g, axis=-1)
    out = _set(params, layer, new_cur)
    new_next = dict(nxt)
    new_next["kernel"] = new_next_k
    out = _set(out, next_layer, new_next)

    if norm is not None:
        bn = _get(params, norm, "norm", fn)
        for name in ("scale", "bias"):
            if name in bn:
                if jnp.shape(bn[name]) != (n,):
                    raise ValueError(
                        f"wider: norm {norm!r} {name} has shape {jnp.shape(bn[name])}, not ({n},)"
                    )
                bn[name] = jnp.take(bn[name], g)
        out = _set(out, norm, bn)
        if batch_stats is not None:
            st = _get(batch_stats, norm, "norm (in batch_stats)", fn)
            for name in ("mean", "var"):
                if name in st:
                    st[name] = jnp.take(st[name], g)
            return out, _set(batch_stats, norm, st)
    return out


@functools.partial(jax.jit, static_argnums=4)
def _widen(k, k_next, key, noise, new_width):
    """The unit map ``g``, the widened kernel and the next layer's remapped kernel, in one jit."""
    n = k.shape[-1]
    k_map, k_noise = jax.random.split(key)
    extra = jax.random.randint(k_map, (new_width - n,), 0, n)
    g = jnp.concatenate([jnp.arange(n), extra])
    counts = jnp.bincount(g, length=n).astype(k_next.dtype)
    # The next kernel's input axis, viewed as (positions, n) with channels last (NHWC flatten).
    lead, in_next, out_next = k_next.shape[:-2], k_next.shape[-2], k_next.shape[-1]
    kn = jnp.reshape(k_next, (*lead, in_next // n, n, out_next))
    reps = jnp.reshape(jnp.take(counts, g), (1,) * (kn.ndim - 2) + (new_width, 1))
    kn = jnp.take(kn, g, axis=-2) / reps
    # Symmetry-breaking noise, zero-sum within each group of replicas (zero when noise == 0).
    e = jax.random.normal(k_noise, kn.shape, kn.dtype) * (noise * jnp.std(k_next))
    group_sum = jax.ops.segment_sum(jnp.moveaxis(e, -2, 0), g, num_segments=n)
    group_mean = jnp.moveaxis(jnp.take(group_sum, g, axis=0), 0, -2) / reps
    kn = kn + (e - group_mean)
    new_next = jnp.reshape(kn, (*lead, (in_next // n) * new_width, out_next))
    return g, jnp.take(k, g, axis=-1), new_next


def deeper(
    params: Mapping[str, Any],
    layer: str,
    *,
    new_name: str | None = None,
    kernel_size: tuple[int, int] | None = None,
    key: jax.Array | None = None,
    noise: float = 0.0,
) -> dict[str, Any]:
    """Net2DeeperNet: inserts an identity layer after ``layer`` (which must be followed by ReLU).

    The new layer has ``layer``'s width: a ``Dense`` with the identity kernel, or a ``Conv`` whose
    kernel is the identity at its center tap (so the model must run it with stride 1 and SAME
    padding), and a zero bias. Batch norm after the new layer is not handled.

    Naming. By default the new layer takes the next index of ``layer``'s name, and the later
    layers with the same prefix in the same module shift up by one (``Dense_0`` -> ``Dense_0``,
    new ``Dense_1``, old ``Dense_1`` -> ``Dense_2``...), which is how Flax names the layers of a
    model built one layer deeper (:class:`jaxcomp.distill.MLP` with one more width). With
    ``new_name`` the new layer gets that name and nothing is renamed.

    Args:
      params: the trained model's params dict.
      layer: the ``Dense`` or ``Conv`` layer after which to insert.
      new_name: the new layer's name within ``layer``'s module (default: renumbering, above).
      kernel_size: the inserted convolution's kernel ``(h, w)``, both odd (default: ``layer``'s).
      key: needed when ``noise > 0``.
      noise: the standard deviation of Gaussian noise added to the new kernel, ``>= 0`` (the
        output then changes slightly).

    Returns:
      The params of the deeper model.

    Raises:
      ValueError: a path that names no layer, a layer that is not Dense/Conv, an even kernel
        size, a default name without a ``_<index>`` suffix, a ``new_name`` that exists,
        ``noise < 0`` or ``noise > 0`` without ``key``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxcomp.distill import MLP
        >>> x = jnp.ones((2, 5))
        >>> p = MLP(features=(4,), num_classes=3).init(jax.random.key(0), x)["params"]
        >>> p2 = deeper(p, "Dense_0")
        >>> sorted(p2)
        ['Dense_0', 'Dense_1', 'Dense_2']
        >>> y1 = MLP(features=(4,), num_classes=3).apply({"params": p}, x)
        >>> y2 = MLP(features=(4, 4), num_classes=3).apply({"params": p2}, x)
        >>> bool(jnp.allclose(y1, y2, atol=1e-6))
        True
    """
    fn = "deeper"
    if not isinstance(params, Mapping):
        raise ValueError(f"deeper: params must be a dict of layers, got {type(params).__name__}")
    cur = _get(params, layer, "layer", fn)
    k = _kernel(cur, layer, fn)
    if not noise >= 0:
        raise ValueError(f"deeper: noise must be >= 0, got {noise!r}")
    if noise > 0 and key is None:
        raise ValueError("deeper: noise > 0 needs key=")
    n = k.shape[-1]
    if k.ndim == 2:
        new_k = jnp.eye(n, dtype=k.dtype)
    else:
        kh, kw = k.shape[:2] if kernel_size is None else tuple(kernel_size)
        if kh % 2 == 0 or kw % 2 == 0 or kh < 1 or kw < 1:
            raise ValueError(f"deeper: kernel_size must be positive and odd, got {(kh, kw)}")
        new_k = jnp.zeros((kh, kw, n, n), k.dtype).at[kh // 2, kw // 2].set(jnp.eye(n))
    if noise > 0:
        new_k = new_k + noise * jax.random.normal(key, new_k.shape, new_k.dtype)
    new_layer = {"kernel": new_k, "bias": jnp.zeros((n,), k.dtype)}

    parts = layer.split("/")
    parent_path, name = parts[:-1], parts[-1]
    parent: Mapping[str, Any] = params
    for p in parent_path:
        parent = parent[p]
    if new_name is not None:
        if not isinstance(new_name, str) or not new_name or "/" in new_name:
            raise ValueError(f"deeper: new_name must be a name without '/', got {new_name!r}")
        if new_name in parent:
            raise ValueError(f"deeper: new_name {new_name!r} already names a layer there")
        new_parent = {**parent, new_name: new_layer}
    else:
        m = re.fullmatch(r"(.*)_(\d+)", name)
        if m is None:
            raise ValueError(
                f"deeper: layer name {name!r} has no _<index> suffix to renumber; pass new_name="
            )
        prefix, i = m.group(1), int(m.group(2))
        new_parent = {}
        for key_, v in parent.items():
            mm = re.fullmatch(rf"{re.escape(prefix)}_(\d+)", key_)
            if mm is not None and int(mm.group(1)) > i:
                new_parent[f"{prefix}_{int(mm.group(1)) + 1}"] = v
            else:
                new_parent[key_] = v
        new_parent[f"{prefix}_{i + 1}"] = new_layer
    if not parent_path:
        return new_parent
    return _set(params, "/".join(parent_path), new_parent)

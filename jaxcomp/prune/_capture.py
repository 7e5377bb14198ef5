"""Capturing the inputs of a model's layers, for layer-wise pruning (OBS) and calibration.

:func:`layer_inputs` runs an unchanged linen model through :func:`jaxcomp.adapt.intercept` with a
handler that, for each selected ``Dense`` or ``Conv`` layer, ``sow``\\ s the layer's input as the
2-D matrix ``X`` whose rows are what the kernel, reshaped to ``(fan_in, out)``, multiplies: the
input vectors of a Dense layer, the im2col patches of a convolution (ordered ``(h, w, in)`` like the
kernel). So ``X @ kernel.reshape(-1, out)`` is the layer's output before the bias, and
``X.T @ X / n`` is the Hessian of the layer's squared output error with respect to each output
column of the kernel. The whole capture is one jitted, side-effect-free call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxcomp.adapt import conv_patches
from jaxcomp.adapt._intercept import PASS
from jaxcomp.adapt._intercept import intercept
from jaxcomp.core._tree import path_str
from jaxcomp.prune._obs import damped
from jaxcomp.prune._pruner import select_leaves

__all__ = ["conv_patches", "layer_hessians", "layer_inputs"]

_KEY = "jaxcomp_layer_inputs"


def _capture_fn(apply_fn: Callable[..., Any], wanted: set[str], kwargs: dict[str, Any]):
    """A jitted ``(variables, x) -> {kernel_path: X}`` for the kernels in ``wanted``."""

    def handler(layer):
        kp = f"{layer.path}/kernel" if layer.path else "kernel"
        if kp not in wanted or not layer.args:
            return PASS
        inp = layer.args[0]
        if isinstance(layer.module, nn.Dense):
            rows = inp.reshape((-1, inp.shape[-1]))
        elif isinstance(layer.module, nn.Conv):
            rows = conv_patches(layer.module, inp)
        else:
            return PASS
        layer.module.sow("intermediates", _KEY, rows)
        return PASS

    @jax.jit
    def run(variables, x):
        _, state = intercept(apply_fn, handler)(variables, x, mutable=["intermediates"], **kwargs)
        found: dict[str, list[jax.Array]] = {}
        for p, v in jax.tree_util.tree_leaves_with_path(state.get("intermediates", {})):
            head, sep, _ = path_str(p).partition(_KEY)
            if sep:
                found.setdefault(head.rstrip("/") + "/kernel", []).append(v)
        return {k: jnp.concatenate(v) for k, v in found.items()}

    return run


def layer_inputs(
    apply_fn: Callable[..., Any], variables: dict[str, Any], x: Any, *, where: Any = None, **kwargs
) -> dict[str, jax.Array]:
    """The 2-D inputs ``X`` of the selected Dense and Conv kernels (see the module docstring).

    Args:
      apply_fn: a linen model's ``apply``.
      variables: its variables (``{"params": ..., ...}``).
      x: the model's input batch.
      where: the kernels (default :func:`jaxcomp.select.kernels`), over ``variables["params"]``.
      **kwargs: further arguments of ``apply_fn`` (``train=False``).

    Returns:
      ``{kernel_path: X}``, ``X`` of shape ``(rows, fan_in)``; a layer called several times
      contributes the rows of every call. Selected kernels of other layer kinds are absent.
    """
    lv = select_leaves(variables["params"], where, "layer_inputs")
    return _capture_fn(apply_fn, set(lv.sel_paths()), kwargs)(variables, x)


def layer_hessians(
    apply_fn: Callable[..., Any],
    variables: dict[str, Any],
    x: Any,
    *,
    where: Any = None,
    damping: float = 1e-2,
    batch_size: int = 256,
    **kwargs,
) -> dict[str, jax.Array]:
    """Layer Hessians ``H = X^T X / n + damping * mean(diag) * I`` over ``x`` in batches.

    Args:
      apply_fn, variables, where, **kwargs: as for :func:`layer_inputs`.
      x: the calibration inputs (numpy or jax), cut into batches of ``batch_size``.
      damping: the relative damping, ``>= 0`` (see :func:`jaxcomp.prune.layer_hessian`).
      batch_size: examples per captured batch.

    Returns:
      ``{kernel_path: H}``, each ``(fan_in, fan_in)`` float32.
    """
    if not damping >= 0:
        raise ValueError(f"layer_hessians: damping must be >= 0, got {damping!r}")
    lv = select_leaves(variables["params"], where, "layer_hessians")
    capture = _capture_fn(apply_fn, set(lv.sel_paths()), kwargs)
    gram = jax.jit(lambda r: r.T.astype(jnp.float32) @ r.astype(jnp.float32))
    sums: dict[str, jax.Array] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(x), batch_size):
        for k, rows in capture(variables, x[start : start + batch_size]).items():
            g = gram(rows)
            sums[k] = sums[k] + g if k in sums else g
            counts[k] = counts.get(k, 0) + rows.shape[0]
    return {k: damped(g / counts[k], damping) for k, g in sums.items()}

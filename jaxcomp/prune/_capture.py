"""Layer Hessians for layer-wise pruning (OBS), from the layers' captured inputs.

:func:`layer_hessians` runs an unchanged model, linen or NNX, through
:func:`jaxcomp.adapt.capture` with ``rows=True``: each selected ``Dense`` or ``Conv`` layer's input
comes back as the 2-D matrix ``X`` whose rows are what the kernel, reshaped to ``(fan_in, out)``,
multiplies (the input vectors of a Dense layer, the im2col patches of a convolution). ``X.T @ X /
n`` is then the Hessian of the layer's squared output error with respect to each output column of
the kernel, the ``H`` of Dong et al.'s L-OBS (:func:`jaxcomp.prune.obs_prune`).

References:
  Dong, X., Chen, S., Pan, S. J. "Learning to prune deep neural networks via layer-wise optimal
  brain surgeon." NeurIPS 2017. arXiv:1705.07565.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.adapt import capture
from jaxcomp.core._tree import path_str
from jaxcomp.prune._obs import damped
from jaxcomp.select import resolve

__all__ = ["layer_hessians"]


def _kernel_layers(params: Any, where: Any) -> dict[str, str]:
    """``{layer path: kernel path}`` for the selected leaves named ``kernel``."""
    flags = resolve(where, params, what="layer_hessians(where=...)")
    out = {}
    for p, f in jax.tree_util.tree_leaves_with_path(flags):
        kp = path_str(p)
        if f and kp.rsplit("/", 1)[-1] == "kernel":
            out[kp[: -len("kernel")].rstrip("/")] = kp
    if not out:
        raise ValueError(f"layer_hessians: where={where!r} selects no leaf named 'kernel'")
    return out


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
      apply_fn: a linen model's ``apply``, or the :class:`jaxcomp.adapt.NNXApply` of an NNX one.
      variables: its variables (``{"params": ..., ...}``).
      x: the calibration inputs (numpy or jax), cut into batches of ``batch_size``.
      where: the kernels (default :func:`jaxcomp.select.kernels`), over ``variables["params"]``;
        each selected ``kernel`` leaf must belong to a Dense or Conv layer.
      damping: the relative damping, ``>= 0`` (see :func:`jaxcomp.prune.layer_hessian`).
      batch_size: examples per captured batch.
      **kwargs: further arguments of ``apply_fn`` (``train=False``).

    Returns:
      ``{kernel_path: H}``, each ``(fan_in, fan_in)`` float32; a layer called several times
      contributes the inputs of every call.

    Raises:
      ValueError: a bad ``damping``, a selection with no kernel, or a selected kernel whose layer
        is not a Dense or an ungrouped, zero-padded Conv (:func:`jaxcomp.adapt.capture`).
    """
    if not damping >= 0:
        raise ValueError(f"layer_hessians: damping must be >= 0, got {damping!r}")
    kernels = _kernel_layers(variables["params"], where)
    cap = capture(apply_fn, inputs=list(kernels), rows=True)
    run = jax.jit(lambda v, xb: cap(v, xb, **kwargs)[1].inputs)
    gram = jax.jit(lambda r: r.T.astype(jnp.float32) @ r.astype(jnp.float32))
    sums: dict[str, jax.Array] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(x), batch_size):
        for layer, rows in run(variables, x[start : start + batch_size]).items():
            k = kernels[layer]
            g = gram(rows)
            sums[k] = sums[k] + g if k in sums else g
            counts[k] = counts.get(k, 0) + rows.shape[0]
    return {k: damped(g / counts[k], damping) for k, g in sums.items()}

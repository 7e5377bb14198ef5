"""Capture: run an unchanged Flax model, linen or NNX, and return named layers' inputs and outputs.

Several methods need what a layer sees or produces while the model runs, not only its params:
distillation losses on hidden layers (FitNets hints, attention maps, selected neurons) read the
outputs of layers of both networks; layer-wise Optimal Brain Surgeon builds each layer's Hessian
``X^T X / n`` from its inputs; Q-CNN's error correction fits codebooks to a layer's response on its
inputs. :func:`capture` wraps an ``apply`` with :func:`jaxcomp.adapt.intercept`: every layer runs
as written, and the inputs and outputs of the selected layers are returned beside the model's own
output. The wrapped function is jit-able and differentiable like the original.

Layers are named by their ``/``-joined module paths, the params paths (``"Dense_0"``,
``"block1/Conv_0"``); a name may be a module that holds others (its ``__call__`` is recorded).
With ``rows=True`` an input is given as the 2-D matrix ``X`` whose rows are what the layer's
kernel, reshaped to ``(fan_in, out)``, multiplies: the input vectors of a Dense layer, the im2col
patches of a convolution (:func:`jaxcomp.adapt.conv_patches`, ordered ``(*window, in)`` like the
kernel), so ``X @ kernel.reshape(-1, out)`` is the layer's output before the bias.

References:
    Romero et al., "FitNets: hints for thin deep nets", ICLR 2015, arXiv:1412.6550.

    Dong, Chen and Pan, "Learning to prune deep neural networks via layer-wise optimal brain
    surgeon", NeurIPS 2017, arXiv:1705.07565.

    Wu, Leng, Wang, Hu and Cheng, "Quantized convolutional neural networks for mobile devices",
    CVPR 2016, arXiv:1512.06473.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcomp.adapt._config import CONV
from jaxcomp.adapt._factorized import conv_patches
from jaxcomp.adapt._intercept import Layer
from jaxcomp.adapt._intercept import intercept

__all__ = ["Captured", "capture"]

Selection = str | Sequence[str] | re.Pattern[str]


class Captured(NamedTuple):
    """What :func:`capture` records in one forward pass.

    Attributes:
      inputs: ``{layer path: the layer's first positional argument}`` (with ``rows=True``, its
        ``(rows, fan_in)`` matrix).
      outputs: ``{layer path: the layer's output}``.
    """

    inputs: dict[str, Any]
    outputs: dict[str, Any]


def _selection(sel: Any, what: str) -> tuple[str, ...] | re.Pattern[str]:
    if isinstance(sel, re.Pattern):
        return sel
    names = (sel,) if isinstance(sel, str) else sel
    if not isinstance(names, Sequence):
        raise ValueError(
            f"capture: {what} must be a layer path, a list of them or a compiled regex "
            f"(re.compile), got {type(sel).__name__}"
        )
    for n in names:
        if not isinstance(n, str) or not n:
            raise ValueError(f"capture: {what} must be non-empty '/'-joined paths, got {n!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"capture: {what} must not repeat a path, got {list(names)}")
    return tuple(names)


def _selects(sel: tuple[str, ...] | re.Pattern[str], path: str) -> bool:
    return sel.search(path) is not None if isinstance(sel, re.Pattern) else path in sel


def _rows(layer: Layer) -> jax.Array:
    """The 2-D rows that the layer's reshaped kernel multiplies."""
    cfg = layer.config
    if cfg is None:
        raise ValueError(
            f"capture: layer {layer.path!r} is a {type(layer.module).__name__}; rows=True needs "
            "Dense (nn.Dense, nnx.Linear) or Conv (nn.Conv, nnx.Conv) layers"
        )
    x = layer.args[0]
    if cfg.kind == CONV:
        if cfg.groups != 1:
            raise ValueError(f"capture: grouped convolution {layer.path!r} has no im2col rows")
        return conv_patches(cfg, x)
    return x.reshape((-1, x.shape[-1]))


def _check_found(what: str, sel: Any, found: dict[str, Any], seen: list[str], rows: bool) -> None:
    layers = sorted({p for p in seen if p})
    if isinstance(sel, re.Pattern):
        if not found:
            kind = " Dense or Conv" if rows and what == "inputs" else ""
            raise ValueError(
                f"capture: {what}={sel.pattern!r} matches no{kind} layer of the forward pass; the "
                f"layer paths are {layers}"
            )
        return
    missing = [n for n in sel if n not in found]
    if missing:
        raise ValueError(
            f"capture: {what} {missing} name(s) no layer of the forward pass; the layer paths are "
            f"{layers}"
        )


def _ordered(sel: Any, found: dict[str, Any]) -> dict[str, Any]:
    return {n: found[n] for n in sel} if isinstance(sel, tuple) else found


def capture(
    apply_fn: Callable[..., Any],
    *,
    inputs: Selection = (),
    outputs: Selection = (),
    rows: bool = False,
) -> Callable[..., tuple[Any, Captured]]:
    """Wraps ``apply_fn`` to return ``(output, Captured(inputs, outputs))`` of selected layers.

    Args:
      apply_fn: ``model.apply`` of a linen model (or any function that runs linen modules, such
        as another apply adapter), or the :class:`jaxcomp.adapt.NNXApply` of an NNX model
        (:func:`jaxcomp.adapt.functional`).
      inputs: the layers whose inputs (first positional argument) to record: one ``/``-joined
        path, a list of them (each must be called in the forward pass), or a compiled regex
        (``re.compile``, searched in every path; it must match at least one layer, with
        ``rows=True`` only Dense and Conv layers count).
      outputs: the layers whose outputs to record, named the same ways.
      rows: record inputs as ``(rows, fan_in)`` matrices that multiply the layer's reshaped
        kernel (input vectors of Dense layers, im2col patches of convolutions); a layer called
        several times contributes the rows of every call. Without ``rows``, a layer called
        several times (a shared layer) is recorded at its last call.

    Returns:
      A function with ``apply_fn``'s arguments returning ``(output, captured)``, where ``output``
      is what ``apply_fn`` returns (with ``mutable=...`` that is ``(output, new_state)``) and
      ``captured`` a :class:`Captured` of dicts keyed by layer path.

    Raises:
      ValueError: when wrapping, a selection that is not a path, a list of distinct non-empty
        paths or a compiled regex. When the wrapped function runs, a path that names no layer
        of the forward pass or a regex that matches none (the message lists the layer paths),
        or with ``rows=True`` a named layer that is not a Dense or an ungrouped, zero-padded Conv.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import jaxcomp as jc
        >>> model = jc.models.get("lenet300")
        >>> v = jc.models.init(model, jax.random.key(0), (28, 28, 1))
        >>> run = capture(model.apply, inputs="Dense_1", outputs=["Dense_1"])
        >>> logits, got = run(v, jnp.zeros((2, 28, 28, 1)))
        >>> logits.shape, got.inputs["Dense_1"].shape, got.outputs["Dense_1"].shape
        ((2, 10), (2, 300), (2, 100))
    """
    in_sel = _selection(inputs, "inputs")
    out_sel = _selection(outputs, "outputs")
    rows = bool(rows)

    def wrapped(*args: Any, **kwargs: Any) -> tuple[Any, Captured]:
        ins: dict[str, Any] = {}
        outs: dict[str, Any] = {}
        seen: list[str] = []

        def record(layer: Layer) -> Any:
            seen.append(layer.path)
            if layer.args and _selects(in_sel, layer.path):
                if not rows:
                    ins[layer.path] = layer.args[0]
                elif layer.config is not None or not isinstance(in_sel, re.Pattern):
                    r = _rows(layer)
                    if layer.path in ins:
                        r = jnp.concatenate([ins[layer.path], r])
                    ins[layer.path] = r
            out = layer.call(*layer.args, **layer.kwargs)
            if _selects(out_sel, layer.path):
                outs[layer.path] = out
            return out

        output = intercept(apply_fn, record)(*args, **kwargs)
        _check_found("inputs", in_sel, ins, seen, rows)
        _check_found("outputs", out_sel, outs, seen, rows)
        return output, Captured(_ordered(in_sel, ins), _ordered(out_sel, outs))

    return wrapped

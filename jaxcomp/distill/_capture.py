"""Feature capture: run an unchanged Flax model and return the outputs of named layers too.

Distillation losses on hidden layers (FitNets hints, attention maps, selected neurons) need the
intermediate features of both networks. :func:`capture` wraps a linen ``apply`` with
:func:`jaxcomp.adapt.intercept`: every module call is let through unchanged, and the outputs of
the named modules are recorded and returned beside the model's own output. The model's code is
not edited, and the wrapped function is jit-able and differentiable like the original.

Names are the ``/``-joined module paths, the same as the params paths (``"Dense_0"``,
``"Conv_1"``, ``"block1/Conv_0"``); a name may also be a module that holds others (its
``__call__`` output is recorded). A module that is called several times in one forward pass
(a shared layer) is recorded at its last call.

References:
    Romero et al., "FitNets: hints for thin deep nets", ICLR 2015, arXiv:1412.6550 (the
    intermediate layers that hints and attention maps are taken from).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from jaxcomp.adapt import Layer
from jaxcomp.adapt import intercept

__all__ = ["capture"]


def capture(
    apply_fn: Callable[..., Any], names: str | Sequence[str]
) -> Callable[..., tuple[Any, dict[str, Any]]]:
    """Wraps ``apply_fn`` to return ``(output, {name: features})`` for the named layers.

    Args:
      apply_fn: ``model.apply`` (or any function that runs linen modules, such as another apply
        adapter).
      names: one ``/``-joined module path or several.

    Returns:
      A function with ``apply_fn``'s arguments returning ``(output, features)``, where ``output``
      is what ``apply_fn`` returns (with ``mutable=...`` that is ``(logits, new_state)``) and
      ``features`` maps each name to its layer's output.

    Raises:
      ValueError: (when the wrapped function runs) a name that names no layer called in the
        forward pass; the message lists the layer paths there are. A name that is not a string,
        or repeated, is refused when wrapping.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import jaxcomp as jc
        >>> model = jc.models.get("lenet300")
        >>> v = jc.models.init(model, jax.random.key(0), (28, 28, 1))
        >>> logits, feats = capture(model.apply, ["Dense_1"])(v, jnp.zeros((2, 28, 28, 1)))
        >>> logits.shape, feats["Dense_1"].shape
        ((2, 10), (2, 100))
    """
    wanted = (names,) if isinstance(names, str) else tuple(names)
    for n in wanted:
        if not isinstance(n, str) or not n:
            raise ValueError(f"capture: names must be non-empty '/'-joined paths, got {n!r}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"capture: names must not repeat, got {list(wanted)}")
    wanted_set = frozenset(wanted)

    def wrapped(*args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        features: dict[str, Any] = {}
        seen: list[str] = []

        def record(layer: Layer) -> Any:
            seen.append(layer.path)
            out = layer.call(*layer.args, **layer.kwargs)
            if layer.path in wanted_set:
                features[layer.path] = out
            return out

        output = intercept(apply_fn, record)(*args, **kwargs)
        missing = [n for n in wanted if n not in features]
        if missing:
            layers = sorted({p for p in seen if p})
            raise ValueError(
                f"capture: {missing} name(s) no layer of the forward pass; the layer paths are "
                f"{layers}"
            )
        return output, {n: features[n] for n in wanted}

    return wrapped

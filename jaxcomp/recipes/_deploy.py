"""Running a recipe's artifact: decoded to the dense model, or fast, the way it was compressed.

A ``.jcz`` written by :func:`jaxcomp.recipes.run` holds the finalized params (codebooks, integer
codes, factors, physically smaller layers), the model's other collections and metadata naming the
model. Two ways to run it with the unchanged model code:

* :func:`load_artifact`: every node decoded to its dense array (``jax.to_dense``), run by
  ``model.apply`` at the dense model's shapes: the reference, and the "dense" side of latency;
* :func:`deploy`: each node run the way it saves time: factored kernels as their factors
  (:func:`jaxcomp.adapt.run_factorized`), removed channels as a smaller model
  (:func:`jaxcomp.structured.small`), int8 codes with quantized inputs in integer arithmetic
  (:func:`jaxcomp.quant.run_int8`, for recipes that quantized activations to 8 bits or fewer);
  codebooks and sparse weights are decoded once, at load.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp import encode
from jaxcomp import quant
from jaxcomp import structured as st_
from jaxcomp.adapt import FactoredKernel
from jaxcomp.adapt import run_factorized
from jaxcomp.core import is_compressed
from jaxcomp.core import to_dense
from jaxcomp.core._nodes import children
from jaxcomp.errors import CorruptArtifactError

__all__ = ["accuracy", "deploy", "load_artifact", "read_artifact"]


def read_artifact(blob_or_path: bytes | str | os.PathLike[str]) -> tuple[dict[str, Any], dict]:
    """The variables of a ``.jcz`` (bytes or a path) as stored (nodes kept) and its metadata.

    Raises:
        CorruptArtifactError: the artifact is damaged or is not a model's variables.
    """
    if isinstance(blob_or_path, bytes | bytearray | memoryview):
        tree, meta = encode.unpack(bytes(blob_or_path))
    else:
        tree, meta = encode.load(blob_or_path)
    if not isinstance(tree, dict) or "params" not in tree:
        raise CorruptArtifactError("the artifact does not hold model variables (no 'params')")
    return tree, meta


def load_artifact(blob_or_path: bytes | str | os.PathLike[str]) -> tuple[dict[str, Any], dict]:
    """A ``.jcz``'s variables with every node decoded to its dense array, and its metadata.

    Returns:
        ``(variables, metadata)``: ready for the unchanged ``model.apply`` at the dense model's
        shapes (removed channels are zeros there).

    Raises:
        CorruptArtifactError: the artifact is damaged or is not a model's variables.
    """
    tree, meta = read_artifact(blob_or_path)
    return jax.tree.map(np.asarray, to_dense(tree)), meta


def _int8_ready(params: Any, act: Mapping[str, Any] | None) -> bool:
    """Whether :func:`jaxcomp.quant.run_int8` computes what training did: one input bit width
    of at most 8 for every layer, and every kernel int codes it can run."""
    if not act:
        return False
    rules = act["rules"]
    if len(rules) != 1 or rules[0][0] != ".*" or not isinstance(rules[0][1], int):
        return False
    if not 2 <= rules[0][1] <= 8:
        return False
    kernels = [x for p, x in jax.tree_util.tree_leaves_with_path(params, is_leaf=is_compressed)
               if jax.tree_util.keystr(p).endswith("['kernel']")]  # fmt: skip
    return bool(kernels) and all(
        isinstance(k, quant.QuantizedArray) and k.symmetric and k.bits <= 8
        and (k.axis is None or k.axis == len(k.shape) - 1)
        for k in kernels
    )  # fmt: skip


def _factored(node: Any) -> bool:
    """A node that runs as its factors (``matmul``/``conv``; every node has ``to_dense``, so the
    :class:`jaxcomp.adapt.FactoredKernel` protocol alone does not tell codebooks from factors)."""
    return (
        is_compressed(node)
        and isinstance(node, FactoredKernel)
        and (hasattr(type(node), "matmul") or hasattr(type(node), "conv"))
    )


def _decode(node: Any, keep_int: bool) -> Any:
    if not is_compressed(node):
        return node
    if _factored(node):  # factors run as such; quantized factors decoded once
        kids, treedef = children(node)
        return treedef.unflatten([to_dense(k) for k in kids])
    if keep_int and isinstance(node, quant.QuantizedArray):
        return node
    if isinstance(node, st_.ChannelPruned):
        return node
    return to_dense(node)


def deploy(
    apply_fn: Callable[..., Any],
    variables: dict[str, Any],
    input_shape: tuple[int, ...],
    *,
    activations: Mapping[str, Any] | None = None,
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The fast way to run finalized variables: ``(fast_apply, fast_variables)``.

    Args:
        apply_fn: the dense model's apply (``model.apply``, or an NNX model's functional apply).
        variables: finalized variables (``{"params": finalize(...), **collections}``, or
            :func:`read_artifact`'s).
        input_shape: one example's shape (to trace the model where channels were removed).
        activations: the recipe's activation quantization, ``{"rules": [[regex, bits]],
            "symmetric": bool}`` (an artifact's ``metadata["activations"]``), or ``None``.

    Returns:
        ``fast_apply(fast_variables, x)`` computes what the trained model computed (factors as
        two layers, removed channels gone, int8 arithmetic where it applies).

    Raises:
        WidthMismatchError: removed channels that do not fit the model.
    """
    params = variables["params"]
    nodes = lambda: jax.tree.leaves(params, is_leaf=is_compressed)
    if any(isinstance(x, st_.ChannelPruned) for x in nodes()):
        x = jnp.zeros((1, *input_shape), jnp.float32)
        apply_fn, variables = st_.small(_inference(apply_fn), variables, x)
        params = variables["params"]
    int8 = _int8_ready(params, activations)
    factored = any(_factored(x) for x in nodes())
    fast = {k: jax.tree.map(lambda n: _decode(n, int8), v, is_leaf=is_compressed)
            for k, v in variables.items()}  # fmt: skip
    fn = apply_fn
    if activations and int8:
        fn = quant.run_int8(fn, bits=activations["rules"][0][1],
                            symmetric=activations.get("symmetric", False))  # fmt: skip
    elif activations:
        fn = quant.activations(fn, [tuple(r) for r in activations["rules"]],
                               symmetric=activations.get("symmetric", False))  # fmt: skip
    if factored:
        fn = run_factorized(fn)
    return _inference(fn), fast


def _inference(apply_fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda v, x: apply_fn(v, x)


def accuracy(
    apply_fn: Callable[..., Any],
    variables: Any,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 500,
) -> float:
    """Top-1 accuracy of ``apply_fn(variables, x)`` on ``(x, y)``: one compiled batch shape (the
    last batch padded), every example counted once. A jitted ``apply_fn`` is used as it is (its
    compilation at ``batch_size`` is shared with its other calls)."""
    fn = apply_fn if hasattr(apply_fn, "lower") else jax.jit(apply_fn)
    n, bs = len(x), min(batch_size, len(x))
    correct = 0
    for i in range(0, n, bs):
        xb = np.asarray(x[i : i + bs])
        m = len(xb)
        if m < bs:
            xb = np.concatenate([xb, np.zeros((bs - m, *xb.shape[1:]), xb.dtype)])
        pred = np.argmax(np.asarray(fn(variables, xb))[:m], axis=-1)
        correct += int(np.sum(pred == np.asarray(y[i : i + bs])))
    return correct / n

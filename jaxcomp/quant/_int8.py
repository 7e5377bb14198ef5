"""Real integer inference: run a finalized model's ``Dense`` and ``Conv`` layers on int8 codes.

``finalize`` of :func:`fake_quant` (and of the binary and ternary transforms) puts
:class:`QuantizedArray` nodes where kernels were: int8 codes with float scales, a quarter of the
float32 bytes (:func:`weight_bytes` measures it). :func:`run_int8` wraps the model's unchanged
``apply`` so that each layer whose kernel is such a node runs as Vanhoucke et al. (2011) describe:
its input is quantized on the fly to int8 per tensor (with the calibrated range of the
``"quant_stats"`` collection when there is one, else the batch's range), the integer contraction
is computed exactly, and the result is rescaled to float and the bias added. Layers with float
kernels run as written, so a model can mix both.

**Which exact path runs where** (``path="auto"``, :mod:`jaxcomp.quant._intdot`). On a CPU with
8-bit dot-product instructions (x86 AVX-512 VNNI, AVX-VNNI or AMX; Arm dot product or i8mm), and
on GPUs and TPUs, every layer runs XLA's int8 x int8 -> int32 contraction (``lax.dot_general``
with ``preferred_element_type=jnp.int32``; a convolution as one such matmul over im2col patches).
On a CPU without them (an AVX2-only x86 such as this project's AMD EPYC), Dense layers still take
the int8 matmul (XLA hands it to YNNPACK: 0.87-0.93 of the float32 GEMM's time there), but
convolutions contract the same integer codes in float32 with XLA's float convolution (gathering
int8 patches cost more than the float convolution), which is exact while ``K * 128 * 127 <=
2**24`` (``K`` the kernel's fan-in, up to 1,032 at 8 bits; a wider convolution takes the int8
path). Both paths give the same bits; ``path="int8"`` or ``"f32"`` forces one.

The output equals that of the fake-quantized model whose layer inputs are fake-quantized the same
way (:func:`activations` with the same bit width and symmetry), up to float summation order.

References:
  Vanhoucke, Senior and Mao, "Improving the speed of neural networks on CPUs", NIPS Deep Learning
  and Unsupervised Feature Learning Workshop, 2011.

  Jacob et al., "Quantization and training of neural networks for efficient integer-arithmetic-only
  inference", CVPR 2018, arXiv:1712.05877.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.adapt import PASS
from jaxcomp.adapt import Layer
from jaxcomp.adapt import intercept
from jaxcomp.core import _checks as checks
from jaxcomp.core._nodes import is_compressed
from jaxcomp.quant._activations import input_qparams
from jaxcomp.quant._core import check_bits
from jaxcomp.quant._core import quantize
from jaxcomp.quant._intdot import PATHS
from jaxcomp.quant._intops import int_linear
from jaxcomp.quant._layers import add_bias
from jaxcomp.quant._layers import contraction
from jaxcomp.quant._nodes import QuantizedArray
from jaxcomp.quant._observers import Observer
from jaxcomp.quant._observers import moving_average

__all__ = ["run_int8", "weight_bytes"]


def _check_kernel(q: QuantizedArray, path: str) -> None:
    if q.bits > 8:
        raise ValueError(f"run_int8: layer {path!r} has {q.bits}-bit codes; int8 kernels need <= 8")
    if not q.symmetric:
        raise ValueError(
            f"run_int8: layer {path!r} has affine weight codes (zero points); quantize the weights "
            "with symmetric=True"
        )
    if q.axis is not None and q.axis != len(q.shape) - 1:
        raise ValueError(
            f"run_int8: layer {path!r} has per-channel scales along axis {q.axis}; the int8 "
            "kernels need the output axis (the last) or per-tensor scales"
        )


def run_int8(
    apply_fn: Callable[..., Any],
    *,
    bits: int = 8,
    symmetric: bool = True,
    observer: Observer | None = None,
    path: str = "auto",
) -> Callable[..., Any]:
    """Wraps a Flax ``apply`` to run layers with :class:`QuantizedArray` kernels in int8.

    Args:
      apply_fn: ``model.apply``, or the :class:`jaxcomp.adapt.NNXApply` of an NNX model
        (:func:`jaxcomp.adapt.functional`).
      bits: the bit width of the on-the-fly input quantization, in [2, 8].
      symmetric: symmetric (zero point 0) or affine input ranges.
      observer: the observer whose ``"quant_stats"`` hold calibrated input ranges (the one used
        to calibrate; :func:`moving_average` by default). Without statistics the batch range is
        used.
      path: how the integer sums are computed: ``"auto"`` (the faster exact path on this
        machine for each layer, see the module docstring), ``"int8"`` or ``"f32"`` (exact only
        for fan-ins up to ``2**24 / (128 * 127)``; a wider layer is a ValueError when called).

    Returns:
      A function with ``apply_fn``'s signature, called with finalized params
      (``{"params": transform.finalize(...)}``).

    Raises:
      ValueError: when called, a quantized kernel with more than 8 bits, affine codes, or
        per-channel scales on another axis than the last; a quantized kernel in a layer other than
        a Dense or Conv (linen or NNX).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import linen as nn
        >>> import jaxcomp.quant as jq
        >>> model = nn.Dense(4)
        >>> v = model.init(jax.random.key(0), jnp.ones((2, 8)))
        >>> t = jq.fake_quant(bits=8, per_channel=True)
        >>> final = t.finalize(*t.init(v["params"]))
        >>> final["kernel"].codes.dtype
        dtype('int8')
        >>> run_int8(model.apply)({"params": final}, jnp.ones((2, 8))).shape
        (2, 4)
    """
    bits = check_bits(bits, lo=2, hi=8, what="run_int8: bits")
    checks.choice(path, PATHS, fn="run_int8", name="path")
    obs = moving_average() if observer is None else observer

    def handler(layer: Layer):
        kernel = layer.params.get("kernel")
        if not isinstance(kernel, QuantizedArray):
            if any(is_compressed(v) for v in layer.params.values()):
                raise ValueError(
                    f"run_int8: layer {layer.path!r} holds a {type(kernel).__name__}; only "
                    "QuantizedArray kernels run in int8 (jc.to_dense decodes others)"
                )
            return PASS
        cfg = layer.config
        if cfg is None:
            raise ValueError(
                f"run_int8: layer {layer.path!r} is a {type(layer.module).__name__}; only Dense "
                "(nn.Dense, nnx.Linear) and Conv (nn.Conv, nnx.Conv) layers run in int8"
            )
        _check_kernel(kernel, layer.path)
        x = layer.args[0]
        sx, zx = input_qparams(layer, x, bits=bits, symmetric=symmetric, observer=obs)
        xq = quantize(x, sx, zx, bits=bits, symmetric=symmetric)
        op = contraction(cfg, path=layer.path)
        y = int_linear(op, xq, kernel.codes.astype(jnp.int8), sx, zx, kernel.scale,
                       symmetric=symmetric, bits=max(bits, kernel.bits), path=path)  # fmt: skip
        return add_bias(y.astype(kernel.dtype), layer.params.get("bias"))

    return intercept(apply_fn, handler)


def weight_bytes(tree: Any) -> dict[str, float]:
    """Bytes of the weights of a finalized tree, quantized against float32.

    Args:
      tree: a tree with :class:`QuantizedArray` (or other compressed) nodes, as from ``finalize``.

    Returns:
      ``{"quantized": bytes of the compressed nodes (codes + scales + zero points),
      "float32": 4 bytes per weight of the same nodes, "ratio": float32 / quantized}``.
    """
    q = f = 0
    for x in jax.tree.leaves(tree, is_leaf=is_compressed):
        if is_compressed(x):
            q += x.nbytes
            f += 4 * math.prod(jax.eval_shape(x.to_dense).shape)
    if q == 0:
        raise ValueError("weight_bytes: the tree holds no compressed node")
    return {"quantized": q, "float32": f, "ratio": f / q}

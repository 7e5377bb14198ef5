"""Activation quantization: an apply adapter that quantizes the inputs of chosen layers.

Weights are params and the transforms quantize them; activations exist only while the model runs.
:func:`activations` wraps an unchanged Flax model's ``apply`` (through
:func:`jaxcomp.adapt.intercept`) so that the input of every ``Dense`` and ``Conv`` whose path
matches a rule is quantized before the layer runs::

    qapply = jc.quant.activations(model.apply, rules=[("Dense_.*", 8), ("Conv_.*", 8)])
    logits = qapply(variables, x)           # with fake_quant weights: a W8A8 model, one call

The quantizer is the clipped straight-through one (:func:`fake_quantize`), so the wrapped model
trains. A rule's value chooses what happens to the input:

* an int ``b`` in [2, 16]: uniform ``b``-bit quantization (affine by default, ``symmetric=``);
* ``1``: ``sign(x)`` with the hard-tanh straight-through gradient (BinaryNet, Hubara et al. 2016);
* ``"xnor"``: XNOR-Net's binary input with its scale ``K`` (Rastegari et al. 2016): the layer
  computes ``(sign(x) * sign-kernel) * K``, where ``K`` is the mean ``|x|`` over the input channels
  averaged over each receptive field (per example for ``Dense``);
* a function ``f(x) -> x`` (for instance fixed point, ``functools.partial(to_fixed_point, ...)``);
* ``None``: leave this layer alone (to exempt a layer before a broader rule).

**Ranges and calibration.** Without calibration, each batch's own range is used (dynamic
quantization). Ranges are calibrated in the Flax collection ``"quant_stats"``
(:data:`STATS`): running ``qapply(variables, x, mutable=["quant_stats"])`` lets each quantized
layer's observer (:func:`moving_average` by default) see its input and returns the updated
collection; :func:`calibrate` does this over batches. Once ``variables`` hold the collection,
``qapply(variables, x)`` uses the calibrated ranges (falling back to the batch range for a layer
whose observer has seen nothing). Everything is jit-able, and because the statistics are an
ordinary collection, ``jc.train`` carries them in the train state and updates them in every
training step (the moving-average ranges of quantization-aware training, Jacob et al. 2018).

**Integer matmuls in training.** With ``int_matmul=True`` the matched layers run their forward
contraction exactly on integer codes (the input quantized by the rule, the kernel per output
channel, symmetric, at the same bit width; a no-op on a kernel that :func:`fake_quant` with
``per_channel=True`` already quantized), on the machine's faster exact path (``path=``, see
:func:`jaxcomp.quant.run_int8`), and their backward as :func:`jaxcomp.quant.qat_linear` says. The
value is that of the fake-quantized forward.

**Estimators and quantized back-propagation** (``estimator=``, ``backward=``, for bit-width
rules): ``estimator="quantized"`` (default) differentiates the layer at the dequantized operands
(the fake-quantized model's gradient), ``"latent"`` at the float latent ones (Qwix's default for
W8A8 training: ``dw = x^T g`` with the unquantized input, ``dx = g w^T``). The kernel the adapter
sees is the latent one only when no weight transform quantized it first (with ``int_matmul=True``
the adapter quantizes kernels itself, so the adapter alone is full W8A8 with the latent
estimator; behind ``fake_quant`` the kernel it sees, and differentiates at, is already rounded).
``backward="pow2"`` rounds the error signal to signed powers of two before the backward products
(Lin et al. 2015); ``backward="int8"`` (needs ``int_matmul=True``) computes both backward products
as int8 contractions of the forward's codes with the error signal rounded stochastically to int8
(as AQT and Qwix do). Its rounding key comes from the call's ``rngs={rng_stream: key}`` (the
``"dropout"`` stream by default, which :func:`jaxcomp.train.make_train_step` passes a fresh key
every step), folded with each layer's path; taking a gradient without one is a ``ValueError``.

References:
  Jacob et al., "Quantization and training of neural networks for efficient integer-arithmetic-only
  inference", CVPR 2018, arXiv:1712.05877.

  Hubara, Courbariaux, Soudry, El-Yaniv and Bengio, "Binarized neural networks", NeurIPS 2016,
  arXiv:1602.02830.

  Rastegari, Ordonez, Redmon and Farhadi, "XNOR-Net", ECCV 2016, arXiv:1603.05279.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.adapt import PASS
from jaxcomp.adapt import Layer
from jaxcomp.adapt import intercept
from jaxcomp.core import _checks as checks
from jaxcomp.errors import SelectionError
from jaxcomp.quant._core import check_bits
from jaxcomp.quant._core import fake_quantize
from jaxcomp.quant._core import qparams_from_range
from jaxcomp.quant._core import sign_ste
from jaxcomp.quant._intdot import PATHS
from jaxcomp.quant._intops import check_training
from jaxcomp.quant._intops import float_linear
from jaxcomp.quant._intops import qat_linear
from jaxcomp.quant._layers import add_bias
from jaxcomp.quant._layers import contraction
from jaxcomp.quant._observers import Observer
from jaxcomp.quant._observers import moving_average

__all__ = ["STATS", "activations", "calibrate", "input_qparams"]

STATS = "quant_stats"
"""The Flax collection that holds the activation observers' states, one ``"input"`` per layer."""


def _check_rules(rules: Any, int_matmul: bool) -> list[tuple[str, re.Pattern[str], Any]]:
    if not isinstance(rules, list | tuple) or not rules:
        raise ValueError("activations: rules must be a non-empty list of (regex, value) pairs")
    out = []
    for r in rules:
        if not (isinstance(r, list | tuple) and len(r) == 2 and isinstance(r[0], str)):
            raise ValueError(f"activations: each rule must be a (regex, value) pair, got {r!r}")
        pattern, value = r
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise SelectionError(f"activations: rule {pattern!r} is not a valid regex: {e}") from e
        if value is None or value == "xnor" or (callable(value) and not isinstance(value, int)):
            if int_matmul and value is not None:
                raise ValueError(
                    f"activations: int_matmul=True needs integer bit widths in [2, 8]; rule "
                    f"{pattern!r} has {value!r}"
                )
        elif isinstance(value, str):
            raise ValueError(f"activations: rule {pattern!r}: unknown value {value!r}")
        else:
            hi = 8 if int_matmul else 16
            check_bits(value, lo=2 if int_matmul else 1, hi=hi,
                       what=f"activations: the bits of rule {pattern!r}")  # fmt: skip
        out.append((pattern, rx, value))
    return out


def input_qparams(
    layer: Layer, x: jax.Array, *, bits: int, symmetric: bool, observer: Observer
) -> tuple[jax.Array, jax.Array]:
    """The scale and zero point of a layer's input: calibrated if the layer has statistics.

    When the ``"quant_stats"`` collection is mutable, the layer's observer first sees ``x`` (and
    its state is created if missing). When the layer has statistics with at least one batch, their
    range is used; otherwise the batch's own range (the observer's range of ``x``).

    Args:
      layer: the intercepted layer.
      x: its input.
      bits: the bit width.
      symmetric: symmetric or affine.
      observer: the observer that keeps the statistics.

    Returns:
      ``(scale, zero_point)``, scalars.
    """
    xs = jax.lax.stop_gradient(x)
    mutable = layer.is_mutable(STATS)
    st = layer.get_variable(STATS, "input")
    if mutable:
        if st is None:
            st = observer.init(())
            if layer.initializing:
                layer.put_variable(STATS, "input", st)
        if not layer.initializing:
            # the observer has now seen at least this batch, so its range is the one to use (the
            # batch's own range is computed once, inside observe)
            st = observer.observe(st, xs)
            layer.put_variable(STATS, "input", st)
            return qparams_from_range(st.lo, st.hi, bits=bits, symmetric=symmetric)
    lo, hi = observer.range_of(xs, None)
    if st is not None:
        seen = st.count > 0
        lo, hi = jnp.where(seen, st.lo, lo), jnp.where(seen, st.hi, hi)
    return qparams_from_range(lo, hi, bits=bits, symmetric=symmetric)


def _xnor(layer: Layer, x: jax.Array) -> jax.Array:
    """XNOR-Net: ``(sign(x) (*) W) * K + b`` with ``K`` the receptive-field mean of ``|x|``."""
    cfg = layer.config
    op = contraction(cfg, path=layer.path)
    kernel = layer.params["kernel"]
    a = jnp.mean(jnp.abs(x), axis=-1, keepdims=True)
    if cfg.kind == "dense":
        k = a
    else:
        n = kernel.ndim - 2
        box = jnp.full((*kernel.shape[:n], 1, 1), 1.0 / math.prod(kernel.shape[:n]), a.dtype)
        k = op(a, box, None, 1)
    y = op(sign_ste(x, clip=1.0), kernel) * k
    return add_bias(y, layer.params.get("bias"))


def activations(
    apply_fn: Callable[..., Any],
    rules: Sequence[tuple[str, Any]],
    *,
    symmetric: bool = False,
    observer: Observer | None = None,
    int_matmul: bool = False,
    estimator: str = "quantized",
    backward: str = "float",
    rng_stream: str = "dropout",
    path: str = "auto",
) -> Callable[..., Any]:
    """Wraps a Flax ``apply`` so that the inputs of the matched layers are quantized.

    Args:
      apply_fn: ``model.apply`` (or any function that runs linen modules), or the
        :class:`jaxcomp.adapt.NNXApply` of an NNX model (:func:`jaxcomp.adapt.functional`).
      rules: ordered ``[(regex, value), ...]`` over layer paths (``re.search``; first match wins).
        Only Dense and Conv layers (``nn.Dense``/``nnx.Linear``, ``nn.Conv``/``nnx.Conv``) are
        quantized. A value is bits (an int in
        [2, 16]), ``1`` (binary, hard-tanh STE), ``"xnor"``, a function of the input, or None.
      symmetric: symmetric (zero point 0) or affine ranges for the bit-width rules.
      observer: the calibration observer of each layer's input range (per tensor);
        :func:`moving_average` by default.
      int_matmul: run the matched layers' forward contractions exactly on integer codes
        (:func:`qat_linear`); needs bit widths in [2, 8].
      estimator: the straight-through estimator of the bit-width rules: ``"quantized"`` (the
        gradient at the dequantized operands) or ``"latent"`` (at the float ones; Qwix's).
      backward: ``"float"``, ``"pow2"`` (the error signal rounded to powers of two) or
        ``"int8"`` (int8 backward matmuls, stochastic rounding; needs ``int_matmul=True``).
      rng_stream: the name in the call's ``rngs={name: key}`` whose key ``backward="int8"``
        rounds with (folded with each layer's path).
      path: the integer path of ``int_matmul=True``: ``"auto"`` (the faster exact one on this
        machine), ``"int8"`` or ``"f32"`` (:func:`jaxcomp.quant.run_int8` says which runs where).

    Returns:
      A function with ``apply_fn``'s signature. Pass ``mutable=["quant_stats"]`` to calibrate.

    Raises:
      ValueError: a malformed rule or value; when called, a rule that matched no layer
        (:class:`jaxcomp.errors.SelectionError`).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import linen as nn
        >>> model = nn.Dense(2)
        >>> v = model.init(jax.random.key(0), jnp.ones((1, 3)))
        >>> q = activations(model.apply, rules=[(".*", 2)])
        >>> x = jnp.array([[0.0, 0.4, 1.0]])  # 2 bits affine: the codes of 0, 1/3, 1
        >>> bool(jnp.allclose(q(v, x), model.apply(v, jnp.array([[0.0, 1 / 3, 1.0]]))))
        True
    """
    compiled = _check_rules(rules, int_matmul)
    check_training(estimator, backward, fn="activations")
    checks.choice(path, PATHS, fn="activations", name="path")
    if backward == "int8" and not int_matmul:
        raise ValueError(
            "activations: backward='int8' contracts the forward's integer codes; it needs "
            "int_matmul=True"
        )
    if not isinstance(rng_stream, str):
        raise ValueError(f"activations: rng_stream must be a str, got {rng_stream!r}")
    plain = estimator == "quantized" and backward == "float"
    if observer is None:
        observer = moving_average()
    if not isinstance(observer, Observer) or observer.axis is not None:
        raise ValueError(
            f"activations: observer must be a per-tensor jaxcomp.quant Observer, got {observer!r}"
        )

    def make_handler(matched: set[str], step_key: jax.Array | None):
        def handler(layer: Layer):
            if "kernel" not in layer.params or layer.config is None:
                return PASS
            value = None
            for pattern, rx, v in compiled:
                if rx.search(layer.path):
                    matched.add(pattern)
                    value = v
                    break
            if value is None:
                return PASS
            x, rest = layer.args[0], layer.args[1:]
            if value == "xnor":
                return _xnor(layer, x)
            if callable(value) and not isinstance(value, int):
                return layer.call(value(x), *rest, **layer.kwargs)
            if value == 1:
                return layer.call(sign_ste(x, clip=1.0), *rest, **layer.kwargs)
            scale, zp = input_qparams(layer, x, bits=value, symmetric=symmetric, observer=observer)
            if int_matmul:
                op = contraction(layer.config, path=layer.path)
                key = None
                if backward == "int8" and step_key is not None:
                    key = jax.random.fold_in(step_key, zlib.crc32(layer.path.encode()) >> 1)
                y = qat_linear(op, x, layer.params["kernel"], scale, zp, bits=value,
                               symmetric=symmetric, estimator=estimator, backward=backward,
                               key=key, path=path)  # fmt: skip
                return add_bias(y, layer.params.get("bias"))
            xq = fake_quantize(x, scale, zp, bits=value, symmetric=symmetric)
            if plain:
                return layer.call(xq, *rest, **layer.kwargs)
            op = contraction(layer.config, path=layer.path)
            y = float_linear(op, xq, x, layer.params["kernel"], estimator=estimator,
                             backward=backward)  # fmt: skip
            return add_bias(y, layer.params.get("bias"))

        return handler

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        matched: set[str] = set()
        rngs = kwargs.get("rngs")
        step_key = rngs.get(rng_stream) if isinstance(rngs, dict) else rngs
        out = intercept(apply_fn, make_handler(matched, step_key))(*args, **kwargs)
        unused = [p for p, _, _ in compiled if p not in matched]
        if unused:
            raise SelectionError(
                f"activations: rules {unused} match no Dense or Conv layer of the model"
            )
        return out

    return wrapped


def calibrate(
    qapply: Callable[..., Any],
    variables: dict[str, Any],
    batches: Iterable[Any],
    **kwargs: Any,
) -> dict[str, Any]:
    """Runs calibration batches through ``qapply`` and returns ``variables`` with the statistics.

    Args:
      qapply: a function from :func:`activations` (or :func:`run_int8`).
      variables: the model's variables (with or without a ``"quant_stats"`` collection).
      batches: an iterable of model inputs (each passed as the first argument after the
        variables).
      **kwargs: passed to ``qapply`` (such as ``train=False``).

    Returns:
      ``{**variables, "quant_stats": ...}``.

    Raises:
      ValueError: ``batches`` is empty.
    """
    step = jax.jit(lambda v, x: qapply(v, x, mutable=[STATS], **kwargs)[1])
    n = 0
    for x in batches:
        stats = step(variables, x)
        variables = {**variables, **stats}
        n += 1
    if n == 0:
        raise ValueError("calibrate: batches is empty")
    return variables

"""Exact integer contractions, and the fastest exact way to compute them on each machine.

An int8 x int8 contraction accumulated in int32 is what integer inference and integer-matmul
training compute. There are two exact ways to get it, and which is faster depends on the hardware
and on the contraction:

* ``"int8"``: ``lax.dot_general`` (or the layer's contraction; convolutions as one matmul over
  im2col patches) on the int8 codes with ``preferred_element_type=jnp.int32``. Exact for any length.
* ``"f32"``: the float32 contraction of the same codes held as float32 (small integers). Every
  product of two codes and every partial sum is an integer; while ``K * max|a| * max|b|`` stays at
  most ``2**24`` each one is exactly representable, so the result is the integer sum exactly, in any
  summation order, with or without fused multiply-adds (XLA's CPU convolutions and matmuls sum
  directly, without Winograd or FFT transforms). A sum over more rows than that (a weight
  gradient over a large batch of positions) is split into exact chunks whose results are added
  in int32.

Three kinds of contraction (``kind=``): ``"features"``, a matmul over the feature axis (a Dense
layer's forward, the input gradient ``g w^T``); ``"conv"``, a convolution's forward; ``"rows"``, a
sum over the examples (and positions), the weight gradient ``x^T g``. :func:`preferred_path`
chooses per backend, CPU and kind, from measurements (single-threaded XLA 0.10.2 on the 2-core
AMD EPYC with AVX2 only, int8 time over float32 time):

| contraction | int8 / f32 on AVX2 | path on CPUs without 8-bit dot products |
| --- | --- | --- |
| features, 256 x 512..2048 @ .. x 1024 | 0.87-0.93 (K=256: 1.01-1.04) | int8 |
| conv, LeNet-5's 5x5 convolutions at batch 256 | 1.0-2.4 (gathering int8 patches) | f32 |
| rows, ``x^T g`` over a batch of 256 | 2.3-2.5 (XLA's int8 kernel on a transposed operand) | f32 |

On CPUs with 8-bit dot-product instructions (x86 AVX-512 VNNI, AVX-VNNI, AMX; Arm dot product,
i8mm), where XLA's int8 matmul ran about 6x faster than float32 on an AMX Xeon (an earlier
session's measurement), and on GPUs and TPUs (not measured here), every kind takes ``"int8"``.
Where ``"f32"`` is preferred but not exact (``"features"`` and ``"conv"`` longer than
``2**24 / (max|a| max|b|)``), ``"int8"`` is taken.

References:
  Vanhoucke, Senior and Mao, "Improving the speed of neural networks on CPUs", NIPS Deep Learning
  and Unsupervised Feature Learning Workshop, 2011.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxcomp.core import _checks as checks

__all__ = [
    "KINDS",
    "PATHS",
    "contract",
    "contract_rows",
    "cpu_features",
    "exact_in_f32",
    "preferred_path",
    "resolve_path",
]

PATHS = ("auto", "int8", "f32")
"""The values of ``path=``: ``"auto"`` (:func:`preferred_path`), ``"int8"`` or ``"f32"``."""

KINDS = ("features", "conv", "rows")
"""The kinds of contraction :func:`preferred_path` tells apart (the module docstring says which)."""

# CPU flags (Linux /proc/cpuinfo names) of 8-bit integer dot-product instructions
FAST_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})

_F32_EXACT = 2**24


@functools.cache
def cpu_features() -> frozenset[str]:
    """The host CPU's feature flags (from ``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    return frozenset(flags)


def preferred_path(backend: str | None = None, *, kind: str = "features") -> str:
    """The faster of the two exact paths for a contraction of ``kind`` on ``backend`` (the
    default backend when None): see the module docstring's table.

    Args:
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"``, ...; None for ``jax.default_backend()``.
      kind: ``"features"``, ``"conv"`` or ``"rows"`` (:data:`KINDS`).

    Returns:
      ``"int8"`` or ``"f32"``.
    """
    checks.choice(kind, KINDS, fn="preferred_path", name="kind")
    backend = jax.default_backend() if backend is None else backend
    if backend == "cpu" and not cpu_features() & FAST_INT8_FLAGS:
        return "int8" if kind == "features" else "f32"
    return "int8"


def exact_in_f32(k: int, amax: int, bmax: int) -> bool:
    """Whether a ``k``-term sum of products of integers bounded by ``amax`` and ``bmax`` is exact in
    float32 (every partial sum at most ``2**24`` in magnitude)."""
    return k * amax * bmax <= _F32_EXACT


def resolve_path(
    path: str, *, k: int, amax: int, bmax: int, kind: str = "features", fn: str = "contract"
) -> str:
    """``"int8"`` or ``"f32"``: ``path`` itself, or for ``"auto"`` the :func:`preferred_path`,
    falling back to ``"int8"`` where float32 would not be exact.

    Raises:
      ValueError: ``path`` is not one of :data:`PATHS`, or is ``"f32"`` for a ``"features"`` or
        ``"conv"`` contraction that float32 cannot hold exactly (``"rows"`` sums are chunked).
    """
    checks.choice(path, PATHS, fn=fn, name="path")
    exact = kind == "rows" or exact_in_f32(k, amax, bmax)
    if path == "auto":
        return "f32" if preferred_path(kind=kind) == "f32" and exact else "int8"
    if path == "f32" and not exact:
        raise ValueError(
            f"{fn}: path='f32' is exact only while K * max|a| * max|b| <= 2**24; here K={k}, "
            f"max|a|={amax}, max|b|={bmax}. Use path='int8' or 'auto'"
        )
    return path


def contract(
    op: Callable[..., jax.Array],
    a: jax.Array,
    b: jax.Array,
    *,
    k: int,
    amax: int,
    bmax: int,
    path: str = "auto",
    kind: str = "features",
) -> jax.Array:
    """The exact integer contraction ``op(a, b)`` of integer codes.

    Args:
      op: ``op(a, b, pref)``, a contraction (``lax.dot_general`` with fixed dimensions, or a layer's
        from :func:`jaxcomp.quant.contraction`).
      a: integer codes (int8, or integer-valued floats), ``|a| <= amax``.
      b: integer codes, ``|b| <= bmax``.
      k: the number of products in each output's sum.
      amax: a bound on ``|a|``.
      bmax: a bound on ``|b|``.
      path: ``"auto"``, ``"int8"`` or ``"f32"`` (:func:`resolve_path`).
      kind: ``"features"`` or ``"conv"`` (for the sums over rows, :func:`contract_rows`).

    Returns:
      The accumulator: int32 on the ``"int8"`` path, float32 holding the same integers on the
      ``"f32"`` path (taken only where they are exact), so ``acc.astype(jnp.float32)`` is the same
      on both, bit for bit.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jax import lax
        >>> mm = lambda a, b, pref=None: lax.dot_general(
        ...     a, b, (((1,), (0,)), ((), ())), preferred_element_type=pref)
        >>> a = jnp.array([[127, -128]], jnp.int8); b = jnp.array([[127], [127]], jnp.int8)
        >>> acc = lambda p: contract(mm, a, b, k=2, amax=128, bmax=127, path=p)[0, 0].item()
        >>> acc("int8"), acc("f32")
        (-127, -127.0)
    """
    p = resolve_path(path, k=k, amax=amax, bmax=bmax, kind=kind)
    if p == "int8":
        return op(a.astype(jnp.int8), b.astype(jnp.int8), jnp.int32)
    return op(a.astype(jnp.float32), b.astype(jnp.float32), None)


def contract_rows(
    a: jax.Array, b: jax.Array, *, amax: int, bmax: int, path: str = "auto"
) -> jax.Array:
    """The exact ``a^T b`` of integer codes ``a (R, K)`` and ``b (R, N)``: a sum over rows.

    On the ``"f32"`` path the rows are split into chunks short enough to be exact in float32, each
    chunk's products summed by one batched float32 matmul, and the chunks added in int32.

    Returns:
      ``(K, N)`` int32 accumulators (on both paths).
    """
    rows = a.shape[0]
    p = resolve_path(path, k=rows, amax=amax, bmax=bmax, kind="rows", fn="contract_rows")
    dims = (((0,), (0,)), ((), ()))
    if p == "int8":
        return lax.dot_general(
            a.astype(jnp.int8), b.astype(jnp.int8), dims, preferred_element_type=jnp.int32
        )
    chunk = max(1, min(rows, _F32_EXACT // (amax * bmax)))
    n = -(-rows // chunk)
    pad = n * chunk - rows
    af = jnp.pad(a.astype(jnp.float32), ((0, pad), (0, 0))).reshape(n, chunk, -1)
    bf = jnp.pad(b.astype(jnp.float32), ((0, pad), (0, 0))).reshape(n, chunk, -1)
    part = lax.dot_general(af, bf, (((1,), (1,)), ((0,), (0,))))
    return jnp.sum(part.astype(jnp.int32), axis=0)


def kernel_terms(kernel_shape: tuple[int, ...]) -> int:
    """The number of products in each output of a Dense or Conv contraction with this kernel
    (everything but the output axis)."""
    return math.prod(kernel_shape[:-1])

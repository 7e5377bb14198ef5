"""Exact integer contractions, and the fastest exact way to compute them on each machine.

An int8 x int8 contraction accumulated in int32 is what integer inference and integer-matmul
training compute. There are two exact ways to get it, and which is faster depends on the hardware:

* ``"int8"``: ``lax.dot_general`` (or the layer's contraction) on the int8 codes with
  ``preferred_element_type=jnp.int32``. Fast where the CPU has 8-bit dot-product instructions
  (x86 AVX-512 VNNI, AVX-VNNI, AMX; Arm dot product / i8mm) and on TPUs; exact for any length.
* ``"f32"``: the float32 contraction of the same codes held as float32 (small integers). Every
  product of two codes and every partial sum is an integer; while ``K * max|a| * max|b|`` stays at
  most ``2**24`` each one is exactly representable, so the result is the integer sum exactly, in any
  summation order, with or without fused multiply-adds (and with the bfloat16 / TF32 passes of a
  TPU or GPU matmul, which hold codes up to 256 exactly). Where int8 instructions are missing
  (an AVX2-only x86 CPU) this runs the float32 GEMM, as fast as float and not slower.

:func:`preferred_path` chooses per backend and CPU; :func:`contract` computes an integer
contraction on the chosen path and returns its exact value as float32 (what the rescaling needs
next). Which path runs where:

| backend | CPU features | path |
| --- | --- | --- |
| cpu | ``avx512_vnni``, ``avx_vnni``, ``amx_int8`` (x86); ``asimddp``, ``i8mm`` (Arm) | int8 |
| cpu | none of them (e.g. AVX2 only) | f32 where exact, else int8 |
| gpu, tpu and others | | int8 (not measured here) |

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

from jaxcomp.core import _checks as checks

__all__ = ["PATHS", "contract", "cpu_features", "exact_in_f32", "preferred_path", "resolve_path"]

PATHS = ("auto", "int8", "f32")
"""The values of ``path=``: ``"auto"`` (:func:`preferred_path`), ``"int8"`` or ``"f32"``."""

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


def preferred_path(backend: str | None = None) -> str:
    """The faster of the two exact paths for ``backend`` (the default backend when None).

    ``"f32"`` on CPUs without 8-bit dot-product instructions (:data:`FAST_INT8_FLAGS`; an
    AVX2-only x86 CPU, where XLA's int8 matmul is no faster than its float32 GEMM), ``"int8"``
    everywhere else (CPUs with them, GPUs, TPUs). :func:`resolve_path` falls back to ``"int8"``
    where ``"f32"`` would not be exact.
    """
    backend = jax.default_backend() if backend is None else backend
    if backend == "cpu":
        return "int8" if cpu_features() & FAST_INT8_FLAGS else "f32"
    return "int8"


def exact_in_f32(k: int, amax: int, bmax: int) -> bool:
    """Whether a ``k``-term sum of products of integers bounded by ``amax`` and ``bmax`` is exact in
    float32 (every partial sum at most ``2**24`` in magnitude)."""
    return k * amax * bmax <= _F32_EXACT


def resolve_path(path: str, *, k: int, amax: int, bmax: int, fn: str = "contract") -> str:
    """``"int8"`` or ``"f32"``: ``path`` itself, or for ``"auto"`` the :func:`preferred_path`,
    falling back to ``"int8"`` where float32 would not be exact.

    Raises:
      ValueError: ``path`` is not one of :data:`PATHS`, or is ``"f32"`` for a contraction that
        float32 cannot hold exactly.
    """
    checks.choice(path, PATHS, fn=fn, name="path")
    exact = exact_in_f32(k, amax, bmax)
    if path == "auto":
        return "f32" if preferred_path() == "f32" and exact else "int8"
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
    p = resolve_path(path, k=k, amax=amax, bmax=bmax)
    if p == "int8":
        return op(a.astype(jnp.int8), b.astype(jnp.int8), jnp.int32)
    return op(a.astype(jnp.float32), b.astype(jnp.float32), None)


def kernel_terms(kernel_shape: tuple[int, ...]) -> int:
    """The number of products in each output of a Dense or Conv contraction with this kernel
    (everything but the output axis)."""
    return math.prod(kernel_shape[:-1])

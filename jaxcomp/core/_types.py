"""Type aliases shared across jaxcomp."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import TypeAlias

import jax

Array: TypeAlias = jax.Array
PRNGKey: TypeAlias = jax.Array
Params: TypeAlias = Any
"""A pytree of arrays: a ``flax.linen`` params dict, an ``nnx.State``, or any nested container."""
CParams: TypeAlias = Any
"""The trainable pytree of a transform (often ``Params`` itself; other structures for rewrites)."""
State: TypeAlias = Any
"""A transform's non-trainable state: a NamedTuple of arrays (masks, codes, statistics)."""
Schedule: TypeAlias = Callable[[Any], Any]
"""A function of the (possibly traced) integer step that returns a scalar."""
ScalarOrSchedule: TypeAlias = float | int | Schedule

"""The node a structurally pruned leaf becomes: its kept values and where they sit."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.core._nodes import nbytes as _nbytes

__all__ = ["ChannelPruned"]


@dataclasses.dataclass(frozen=True)
class ChannelPruned:
    """A leaf with whole channels removed: a smaller array and the positions it keeps.

    Attributes:
        values: the kept values, the leaf's shape with the removed positions gone.
        keep: per axis, a boolean vector over the dense positions (None where nothing was removed).
    """

    values: jax.Array
    keep: tuple[Any, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """The dense leaf's shape."""
        return tuple(
            int(np.shape(k)[0]) if k is not None else int(n)
            for k, n in zip(self.keep, np.shape(self.values))
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the kept values plus one bit per dense position of each pruned axis."""
        bits = sum(math.ceil(np.shape(k)[0] / 8) for k in self.keep if k is not None)
        return _nbytes(self.values) + bits

    def to_dense(self) -> jax.Array:
        """The dense leaf with zeros at the removed positions."""
        if not any(isinstance(a, jax.core.Tracer) for a in (self.values, *self.keep)):
            # concrete: numpy places the values (no scatter compiled for every leaf shape)
            index = [
                np.arange(n) if k is None else np.flatnonzero(np.asarray(k))
                for k, n in zip(self.keep, np.shape(self.values))
            ]
            dense = np.zeros(self.shape, jnp.result_type(self.values))
            dense[np.ix_(*index)] = np.asarray(self.values)
            return jnp.asarray(dense)
        index = []
        for axis, k in enumerate(self.keep):
            n = np.shape(self.values)[axis]
            index.append(jnp.arange(n) if k is None else jnp.nonzero(k, size=n)[0])
        grid = jnp.ix_(*index)
        return jnp.zeros(self.shape, jnp.result_type(self.values)).at[grid].set(self.values)


jax.tree_util.register_dataclass(ChannelPruned, data_fields=["values", "keep"], meta_fields=[])

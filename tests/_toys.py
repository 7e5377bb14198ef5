"""Toy transforms for testing the combinators; they exist only here, under honest names."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

import jaxcomp as jc


class ThresholdMaskState(NamedTuple):
    mask: object


def threshold_mask(threshold: float) -> jc.Transform:
    """Zeroes weights with |w| < threshold, fixed at init; update re-zeroes them."""

    def init(params):
        mask = jax.tree.map(lambda w: (jnp.abs(w) >= threshold).astype(w.dtype), params)
        return jax.tree.map(jnp.multiply, params, mask), ThresholdMaskState(mask)

    def apply(cparams, state):
        return jax.tree.map(jnp.multiply, cparams, state.mask)

    def update(cparams, state, *, step, grads=None):
        return apply(cparams, state), state

    return jc.Transform(init, apply, update, apply)


class RoundState(NamedTuple):
    calls: jax.Array


def round_ste(grid: float) -> jc.Transform:
    """Rounds to a grid with a straight-through gradient; counts its updates."""

    def q(w):
        return w + jax.lax.stop_gradient(jnp.round(w / grid) * grid - w)

    def init(params):
        return params, RoundState(jnp.zeros((), jnp.int32))

    def apply(cparams, state):
        return jax.tree.map(q, cparams)

    def update(cparams, state, *, step, grads=None):
        return cparams, RoundState(state.calls + 1)

    return jc.Transform(init, apply, update, apply)


def counter() -> jc.Transform:
    """Changes nothing and counts its updates (a stand-in for an observer)."""

    def apply(cparams, state):
        return cparams

    def update(cparams, state, *, step, grads=None):
        return cparams, RoundState(state.calls + 1)

    return jc.Transform(lambda p: (p, RoundState(jnp.zeros((), jnp.int32))), apply, update, apply)


class Scaled(NamedTuple):
    """A toy compressed node: a weight stored as ``w / s`` and a trainable factor ``s``."""

    w: jax.Array
    s: jax.Array

    def to_dense(self):
        return self.w * self.s

    @property
    def nbytes(self):
        return self.w.nbytes + self.s.nbytes


def factor_out(scale: float) -> jc.Transform:
    """A structure-changing toy: each leaf becomes a :class:`Scaled` node at its own path."""

    def init(params):
        return jax.tree.map(lambda w: Scaled(w / scale, jnp.asarray(scale, w.dtype)), params), ()

    def apply(cparams, state):
        return jc.to_dense(cparams)

    def update(cparams, state, *, step, grads=None):
        return cparams, state

    return jc.Transform(init, apply, update, lambda c, s: c)

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


class ScaleParams(NamedTuple):
    factor: jax.Array


def factor_out(scale: float) -> jc.Transform:
    """A structure-changing toy: cparams are ``w / scale`` packed with a trainable factor."""

    def init(params):
        return {"w": jax.tree.map(lambda w: w / scale, params), "s": jnp.asarray(scale)}, ()

    def apply(cparams, state):
        return jax.tree.map(lambda w: w * cparams["s"], cparams["w"])

    def update(cparams, state, *, step, grads=None):
        return cparams, state

    return jc.Transform(init, apply, update, lambda c, s: c)

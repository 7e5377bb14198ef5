"""Schedules: closed forms, jit, and argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxcomp as jc


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 50), st.integers(1, 100), st.integers(0, 400), st.floats(0.0, 0.99))
def test_polynomial_is_zhu_gupta(begin, length, t, final):
    s = jc.schedules.polynomial(0.0, final, begin=begin, end=begin + length)
    frac = min(max((t - begin) / length, 0.0), 1.0)
    np.testing.assert_allclose(float(s(t)), final * (1 - (1 - frac) ** 3), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(jax.jit(s)(jnp.int32(t))), float(s(t)), rtol=1e-6)


def test_polynomial_monotone():
    s = jc.schedules.polynomial(0.1, 0.9, begin=10, end=50)
    vals = np.asarray(jax.vmap(s)(jnp.arange(60)))
    assert np.all(np.diff(vals) >= -1e-7) and vals[0] == pytest.approx(0.1)


def test_linear_and_step_and_one_shot():
    lin = jc.schedules.linear(0.0, 1.0, begin=0, end=4)
    assert [float(lin(t)) for t in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    st_ = jc.schedules.step([2, 4], [1.0, 2.0, 3.0])
    assert [float(jax.jit(st_)(t)) for t in range(6)] == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    one = jc.schedules.one_shot(0.8, at=3)
    assert [round(float(one(t)), 6) for t in (0, 2, 3, 9)] == [0.0, 0.0, 0.8, 0.8]


def test_bad_arguments():
    with pytest.raises(ValueError, match="end"):
        jc.schedules.polynomial(0.0, 0.9, begin=10, end=5)
    with pytest.raises(ValueError, match="values"):
        jc.schedules.step([1], [0.1])
    with pytest.raises(ValueError, match="boundaries"):
        jc.schedules.step([3, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="sparsity"):
        jc.schedules.as_schedule(1.5, name="sparsity", low=0.0, high=1.0)
    with pytest.raises(ValueError, match="sparsity"):
        jc.schedules.as_schedule(
            jc.schedules.linear(0.0, 1.0, begin=0, end=5), name="sparsity", low=0.0, high=1.0
        )

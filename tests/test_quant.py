"""jaxcomp.quant, uniform quantization: STE, per-channel, stochastic rounding, LSQ, fixed point,
observers, compressed nodes."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxcomp as jc
from jaxcomp import quant
from jaxcomp.errors import NotCalibratedError


def _kernel(key=0, shape=(12, 5), spread=True):
    w = jax.random.normal(jax.random.key(key), shape)
    if spread:  # channels of very different magnitudes, as in trained layers
        w = w * jnp.logspace(-2, 0, shape[-1])[None, :]
    return w


def _params(key=0):
    k1, k2 = jax.random.split(jax.random.key(key))
    return {
        "Conv_0": {"kernel": jax.random.normal(k1, (3, 3, 2, 4)), "bias": jnp.zeros(4)},
        "Dense_0": {"kernel": jax.random.normal(k2, (8, 3)), "bias": jnp.zeros(3)},
    }


# ---- the straight-through estimator ---------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(
    bits=st.integers(2, 8),
    symmetric=st.booleans(),
    scale=st.floats(0.01, 2.0),
    seed=st.integers(0, 2**16),
)
def test_ste_gradient_is_one_inside_the_range_and_zero_outside(bits, symmetric, scale, seed):
    qmin, qmax = quant.qrange(bits, symmetric=symmetric)
    zp = 0.0 if symmetric else float(qmin + 1)
    lo, hi = (qmin - zp) * scale, (qmax - zp) * scale
    x = jax.random.uniform(jax.random.key(seed), (64,), minval=2 * lo - 1, maxval=2 * hi + 1)
    margin = 0.01 * scale  # points this close to an end are moved onto it (ends are inside)
    x = jnp.where(jnp.abs(x - lo) <= margin, lo, jnp.where(jnp.abs(x - hi) <= margin, hi, x))
    x = x.at[:2].set(jnp.array([lo, hi]))
    f = lambda x: quant.fake_quantize(
        x, jnp.float32(scale), jnp.float32(zp), bits=bits, symmetric=symmetric
    )
    g = jax.grad(lambda x: jnp.sum(f(x)))(x)
    inside = (x >= lo - margin) & (x <= hi + margin)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(inside, np.float32))
    # and the forward value is on the grid, within half a step inside the range
    y = f(x)
    codes = np.asarray(y) / scale + zp
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    err = np.abs(np.asarray(y - x))[np.asarray(inside)]
    assert np.all(err <= scale / 2 + 1e-5 * scale)


def test_sign_ste_hard_tanh_gradient():
    x = jnp.array([-2.0, -0.5, 0.0, 0.7, 1.0, 3.0])
    np.testing.assert_array_equal(quant.sign_ste(x), [-1, -1, 1, 1, 1, 1])
    g = jax.grad(lambda x: jnp.sum(quant.sign_ste(x)))(x)
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 1, 0])
    g = jax.grad(lambda x: jnp.sum(quant.sign_ste(x, clip=None)))(x)
    np.testing.assert_array_equal(g, np.ones(6))


# ---- per channel -----------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(
    bits=st.integers(2, 8),
    seed=st.integers(0, 2**16),
    scales=st.lists(st.floats(1e-3, 10.0), min_size=6, max_size=6),
)
def test_per_channel_error_at_most_per_tensor_error(bits, seed, scales):
    """Each channel's worst error is at most half its own step, which is at most half the
    per-tensor step; the per-tensor quantizer has errors up to that (coarser) half step."""
    w = jax.random.normal(jax.random.key(seed), (16, 6)) * jnp.array(scales)[None, :]
    params = {"Dense_0": {"kernel": w}}
    pt, pc = quant.fake_quant(bits=bits), quant.fake_quant(bits=bits, per_channel=True)
    err_pt = jnp.abs(pt.apply(*pt.init(params))["Dense_0"]["kernel"] - w)
    err_pc = jnp.abs(pc.apply(*pc.init(params))["Dense_0"]["kernel"] - w)
    _, qmax = quant.qrange(bits, symmetric=True)
    step_pt = float(jnp.max(jnp.abs(w))) / qmax
    step_pc = jnp.max(jnp.abs(w), axis=0) / qmax
    assert bool(jnp.all(jnp.max(err_pc, axis=0) <= step_pc / 2 * (1 + 1e-5)))
    assert bool(jnp.all(step_pc <= step_pt * (1 + 1e-6)))
    assert float(jnp.max(err_pc)) <= step_pt / 2 * (1 + 1e-5)
    assert float(jnp.max(err_pt)) <= step_pt / 2 * (1 + 1e-5)


def test_per_channel_relative_error_far_below_per_tensor_on_spread_channels():
    w = _kernel(shape=(64, 8))
    params = {"Dense_0": {"kernel": w}}
    rel = {}
    for pc in (False, True):
        t = quant.fake_quant(bits=4, per_channel=pc)
        err = (t.apply(*t.init(params))["Dense_0"]["kernel"] - w) ** 2
        rel[pc] = float(jnp.mean(jnp.mean(err, axis=0) / jnp.mean(w**2, axis=0)))
    assert rel[True] < 0.2 * rel[False]


def test_per_channel_axis_default_override_and_rules():
    p = _params()
    t = quant.fake_quant(bits=8, per_channel=True)
    fin = t.finalize(*t.init(p))
    assert fin["Conv_0"]["kernel"].axis == 3 and fin["Conv_0"]["kernel"].scale.shape == (4,)
    assert fin["Dense_0"]["kernel"].axis == 1 and fin["Dense_0"]["kernel"].scale.shape == (3,)
    t = quant.fake_quant(bits=8, per_channel=True, axis=0)
    assert t.finalize(*t.init(p))["Dense_0"]["kernel"].scale.shape == (8,)
    t = quant.fake_quant(bits=8, per_channel=True, axis=[("Conv_0", 2), ("Dense_0", 0)])
    fin = t.finalize(*t.init(p))
    assert fin["Conv_0"]["kernel"].scale.shape == (2,)
    assert fin["Dense_0"]["kernel"].scale.shape == (8,)
    with pytest.raises(ValueError, match=r"axis of leaf '\w+_0/kernel' must be an int in \[-"):
        quant.fake_quant(bits=8, per_channel=True, axis=3).init(p)
    with pytest.raises(ValueError, match="per_channel=True"):
        quant.fake_quant(bits=8, axis=0)


def test_bits_take_per_leaf_rules_and_dicts_in_every_quantizer():
    p = _params()
    n_codes = lambda x: np.unique(np.asarray(x)).size
    rules = [("Conv_0", 3), ("Dense_0", 6)]
    fin = quant.fake_quant(bits=rules).finalize(*quant.fake_quant(bits=rules).init(p))
    assert (fin["Conv_0"]["kernel"].bits, fin["Dense_0"]["kernel"].bits) == (3, 6)
    assert n_codes(fin["Conv_0"]["kernel"].codes) <= 7 < n_codes(fin["Dense_0"]["kernel"].codes)
    for make in (quant.kmeans, quant.ecsq):
        t = make(bits={"Conv_0/kernel": 2, "Dense_0/kernel": 3}, keep_zeros=False)
        fin = t.finalize(*t.init(p))
        assert fin["Conv_0"]["kernel"].codebook.shape == (4,)
        assert fin["Dense_0"]["kernel"].codebook.shape == (8,)
    with pytest.raises(ValueError, match=r"fake_quant: bits rule 'Dense_0' must be an int in \[2"):
        quant.fake_quant(bits=[("Conv_0", 4), ("Dense_0", 1)])
    with pytest.raises(ValueError, match=r"rules \['Dense_9'\] match no leaf"):
        quant.kmeans(bits=[("Conv_0", 2), ("Dense_9", 3), (".*", 2)]).init(p)
    with pytest.raises(ValueError, match=r"missing \['Dense_0/kernel'\]"):
        quant.fake_quant(bits={"Conv_0/kernel": 4}).init(p)


@pytest.mark.parametrize("bits", [0, 1, 17, 2.5, True])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits"):
        quant.fake_quant(bits=bits)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="rounding"):
        quant.fake_quant(rounding="up")
    with pytest.raises(ValueError, match="key"):
        quant.fake_quant(rounding="stochastic")
    with pytest.raises(ValueError, match="learned_step"):
        quant.fake_quant(learned_step=True, symmetric=False)


# ---- finalize and the compressed node ------------------------------------------------------


@pytest.mark.parametrize("bits,dtype", [(8, jnp.int8), (4, jnp.int8), (12, jnp.int16)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_finalize_codes_dequantize_to_apply(bits, dtype, symmetric):
    p = _params()
    t = quant.fake_quant(bits=bits, symmetric=symmetric, per_channel=True)
    c, s = t.init(p)
    fin = t.finalize(c, s)
    q = fin["Dense_0"]["kernel"]
    assert isinstance(q, quant.QuantizedArray) and q.codes.dtype == dtype
    qmin, qmax = quant.qrange(bits, symmetric=symmetric)
    assert int(q.codes.min()) >= qmin and int(q.codes.max()) <= qmax
    dense = jc.to_dense(fin)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), dense, t.apply(c, s))
    leaves = jax.jit(lambda f: f)(fin)  # a pytree that travels through jit
    assert isinstance(leaves["Dense_0"]["kernel"], quant.QuantizedArray)


def test_codes_are_those_fake_quantize_rounds_to_ties_included():
    # affine 2 bits over [-1, 2]: scale 1 and an odd zero point (-1), so the ties of x / scale
    # round to even one way and the ties of x / scale + zero_point the other
    x = jnp.array([-1.0, -0.5, 0.5, 1.5, 2.0])
    scale, zp = quant.qparams_from_range(-1.0, 2.0, bits=2, symmetric=False)
    assert (float(scale), float(zp)) == (1.0, -1.0)
    fq = quant.fake_quantize(x, scale, zp, bits=2, symmetric=False)
    np.testing.assert_array_equal(fq, [-1.0, -1.0, 1.0, 1.0, 2.0])
    codes = quant.quantize(x, scale, zp, bits=2, symmetric=False)
    np.testing.assert_array_equal(quant.dequantize(codes, scale, zp), fq)
    # so a finalized affine leaf dequantizes to exactly what apply computed
    t = quant.fake_quant(bits=2, symmetric=False)
    c, s = t.init({"Dense_0": {"kernel": x.reshape(5, 1)}})
    np.testing.assert_array_equal(jc.to_dense(t.finalize(c, s))["Dense_0"]["kernel"],
                                  t.apply(c, s)["Dense_0"]["kernel"])  # fmt: skip


def test_int8_weights_take_a_quarter_of_float32():
    p = {"Dense_0": {"kernel": _kernel(shape=(256, 128))}}
    t = quant.fake_quant(bits=8, per_channel=True)
    b = quant.weight_bytes(t.finalize(*t.init(p)))
    assert b["float32"] == 256 * 128 * 4
    assert b["quantized"] == 256 * 128 + 128 * 4  # int8 codes + float32 scales
    assert 3.9 < b["ratio"] <= 4.0


# ---- stochastic rounding -------------------------------------------------------------------


def test_stochastic_rounding_is_unbiased_and_fresh_each_update():
    w = _kernel(shape=(8, 4))
    p = {"Dense_0": {"kernel": w}}
    t = quant.fake_quant(bits=3, rounding="stochastic", key=jax.random.key(0))
    c, s = t.init(p)
    upd = jax.jit(lambda c, s, i: t.update(c, s, step=i))
    app = jax.jit(t.apply)
    outs = []
    for i in range(400):
        outs.append(app(c, s)["Dense_0"]["kernel"])
        c, s = upd(c, s, i)
    outs = jnp.stack(outs)
    assert not bool(jnp.all(outs[0] == outs[1]))
    _, qmax = quant.qrange(3, symmetric=True)
    step = float(jnp.max(jnp.abs(w))) / qmax
    assert float(jnp.max(jnp.abs(outs.mean(0) - w))) < 0.15 * step  # E[q(w)] = w


# ---- LSQ -------------------------------------------------------------------------------------


def test_lsq_scale_is_a_leaf_with_lsq_gradient():
    w = _kernel(shape=(10, 3), spread=False)
    p = {"Dense_0": {"kernel": w, "bias": jnp.zeros(3)}}
    bits = 3
    t = quant.fake_quant(bits=bits, learned_step=True)
    c, s = t.init(p)
    leaf = c["Dense_0"]["kernel"]
    assert set(leaf) == {"w", "scale"}
    qn, qp = -quant.qrange(bits, symmetric=True)[0], quant.qrange(bits, symmetric=True)[1]
    np.testing.assert_allclose(leaf["scale"], 2 * jnp.mean(jnp.abs(w)) / math.sqrt(qp), rtol=1e-6)
    upstream = jax.random.normal(jax.random.key(9), w.shape)
    g = jax.grad(lambda c: jnp.sum(t.apply(c, s)["Dense_0"]["kernel"] * upstream))(c)
    sc = float(leaf["scale"])
    v = np.asarray(w) / sc
    # LSQ (Esser et al., eq. 3): d w_hat / d s = -v + round(v) inside, -Qn / Qp at the ends
    dq = np.where(v <= -qn, -qn, np.where(v >= qp, qp, -v + np.round(v)))
    expect = np.sum(np.asarray(upstream) * dq) / math.sqrt(w.size * qp)
    np.testing.assert_allclose(float(g["Dense_0"]["kernel"]["scale"]), expect, rtol=1e-4)
    inside = (v > -qn) & (v < qp)
    np.testing.assert_allclose(
        g["Dense_0"]["kernel"]["w"], np.asarray(upstream) * inside, atol=1e-6
    )
    # the scale stays positive through update
    c2 = jax.tree.map(lambda x: x, c)
    c2["Dense_0"]["kernel"]["scale"] = -c2["Dense_0"]["kernel"]["scale"]
    c2, _ = t.update(c2, s, step=1)
    assert float(c2["Dense_0"]["kernel"]["scale"]) > 0
    fin = t.finalize(c, s)["Dense_0"]["kernel"]
    np.testing.assert_allclose(fin.to_dense(), t.apply(c, s)["Dense_0"]["kernel"], atol=1e-6)


# ---- fixed point (Gupta et al.) ------------------------------------------------------------


def test_to_fixed_point_grid_saturation_and_unbiased_stochastic_rounding():
    x = jnp.array([0.3, -5.0, 1.9, 0.124])
    y = quant.to_fixed_point(x, word_length=4, fractional_length=2)
    np.testing.assert_allclose(y, [0.25, -2.0, 1.75, 0.0])
    g = jax.grad(lambda x: quant.to_fixed_point(x, word_length=4, fractional_length=2).sum())(x)
    np.testing.assert_array_equal(g, [1, 0, 0, 1])
    keys = jax.random.split(jax.random.key(0), 2000)
    v = jnp.full((1,), 0.1)
    draws = jax.vmap(
        lambda k: quant.to_fixed_point(
            v, word_length=8, fractional_length=2, rounding="stochastic", key=k
        )
    )(keys)
    assert set(np.unique(np.asarray(draws)).tolist()) == {0.0, 0.25}
    assert abs(float(draws.mean()) - 0.1) < 0.015
    with pytest.raises(ValueError, match="word_length"):
        quant.to_fixed_point(x, word_length=17)
    with pytest.raises(ValueError, match="fractional_length"):
        quant.fixed_point(fractional_length=-1)


def _nudge(t, delta, c, s, i):
    """An optimizer step of ``+delta`` on every weight, then the transform's update."""
    return t.update(jax.tree.map(lambda w: w + delta, c), s, step=i)


def test_fixed_point_stochastic_updates_survive_where_nearest_loses_them():
    fl = 6
    eps = 2.0**-fl
    p = {"Dense_0": {"kernel": jnp.zeros((64, 64))}}
    res = {}
    for rounding in ("stochastic", "nearest"):
        t = quant.fixed_point(word_length=16, fractional_length=fl, rounding=rounding,
                              key=jax.random.key(0))  # fmt: skip
        c, s = t.init(p)
        step = jax.jit(functools.partial(_nudge, t, 0.1 * eps))
        for i in range(20):  # 20 updates of a tenth of a step each: +2 steps in total
            c, s = step(c, s, i)
        w = c["Dense_0"]["kernel"]
        np.testing.assert_allclose(np.asarray(w) / eps, np.round(np.asarray(w) / eps))  # on grid
        res[rounding] = float(w.mean())
        fin = t.finalize(c, s)["Dense_0"]["kernel"]
        assert fin.codes.dtype == jnp.int16 and float(fin.scale) == eps
    assert res["nearest"] == 0.0  # every update rounded away
    assert abs(res["stochastic"] - 2 * eps) < 0.2 * eps  # unbiased: the updates survive


# ---- observers -----------------------------------------------------------------------------


def test_observers_ranges():
    xs = [jnp.array([-1.0, 0.5, 2.0]), jnp.array([3.0, 0.0, -0.5])]
    obs = quant.minmax()
    s = obs.init(())
    for x in xs:
        s = obs.observe(s, x)
    assert (float(s.lo), float(s.hi), int(s.count)) == (-1.0, 3.0, 2)
    obs = quant.moving_average(momentum=0.5)
    s = obs.init(())
    for x in xs:
        s = obs.observe(s, x)
    assert (float(s.lo), float(s.hi)) == (-0.75, 2.5)  # first batch sets it, then halfway
    obs = quant.minmax(axis=0)
    s = obs.observe(obs.init((2, 3)), jnp.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 5.0]]))
    np.testing.assert_array_equal(s.hi, [3.0, 5.0])
    x = jnp.concatenate([jnp.linspace(-1, 1, 999), jnp.array([100.0])])
    obs = quant.percentile(q=99.0)
    s = jax.jit(obs.observe)(obs.init(()), x)
    assert float(s.hi) < 1.5  # the outlier is ignored


def test_mse_observer_clips_outliers_and_beats_minmax_at_4_bits():
    x = jax.random.laplace(jax.random.key(0), (4096,))
    errs = {}
    for name, obs in {"minmax": quant.minmax(), "mse": quant.mse(bits=4)}.items():
        s = obs.observe(obs.init(()), x)
        scale, zp = quant.qparams(s, bits=4, symmetric=True)
        errs[name] = float(jnp.mean((quant.fake_quantize(x, scale, zp, bits=4, symmetric=True)
                                     - x) ** 2))  # fmt: skip
        if name == "mse":
            assert float(s.hi) < float(jnp.max(x))
    assert errs["mse"] < errs["minmax"]


def test_observer_not_calibrated():
    obs = quant.minmax()
    s = obs.init(())
    with pytest.raises(NotCalibratedError):
        quant.qparams(s, bits=8, symmetric=True)
    scale, _ = jax.jit(lambda s: quant.qparams(s, bits=8, symmetric=True))(s)
    assert bool(jnp.isnan(scale))  # under jit: NaN, never a silent wrong scale
    scale, _ = quant.qparams(obs.observe(s, jnp.array([-2.0, 1.0])), bits=8, symmetric=False)
    assert math.isclose(float(scale), 3.0 / 255, rel_tol=1e-6)
    with pytest.raises(ValueError, match="momentum"):
        quant.moving_average(momentum=1.0)
    with pytest.raises(ValueError, match="q must"):
        quant.percentile(q=40)


def test_fake_quant_with_observer_uses_its_clipping():
    w = jax.random.laplace(jax.random.key(0), (64, 64))
    p = {"Dense_0": {"kernel": w}}
    err = {}
    for name, obs in {"minmax": None, "mse": quant.mse(bits=3)}.items():
        t = quant.fake_quant(bits=3, observer=obs)
        err[name] = float(jnp.mean((t.apply(*t.init(p))["Dense_0"]["kernel"] - w) ** 2))
    assert err["mse"] < 0.8 * err["minmax"]

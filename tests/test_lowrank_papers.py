"""The papers' own fitting procedures next to the library's shortcuts.

* CP by non-linear least squares (Lebedev et al.): the structured Gauss-Newton products equal
  those of the Jacobian, the error never increases, and on a tensor with nearly collinear factors
  (a "swamp" for ALS) it fits better than ALS in the same number of iterations.
* Jaderberg et al.'s data reconstruction: the alternating solves never increase the data error,
  are exact at full rank, and ``jaderberg(data=...)`` fits each layer on the inputs of the network
  approximated so far (linen and NNX).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import jaxcomp as jc
from jaxcomp import lowrank
from jaxcomp.lowrank import _decompose

KEY = jax.random.key(0)


def _rel(fs, w):
    return float(jnp.linalg.norm(lowrank.cp_reconstruct(fs) - w) / jnp.linalg.norm(w))


def test_cp_gauss_newton_products_equal_the_jacobians():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    fs = tuple(jnp.asarray(rng.normal(size=(n, 2)), jnp.float32) for n in x.shape)
    d = tuple(jnp.asarray(rng.normal(size=f.shape), jnp.float32) for f in fs)
    cuts = tuple(np.cumsum([f.size for f in fs])[:-1])
    flat = lambda t: jnp.concatenate([a.reshape(-1) for a in t])

    @jax.jit
    def both(x, fs, d):
        unflat = lambda v: tuple(p.reshape(f.shape) for p, f in zip(jnp.split(v, cuts), fs))
        res = lambda v: jnp.reshape(lowrank.cp_reconstruct(unflat(v)) - x, (-1,))
        jac = jax.jacfwd(res)(flat(fs))
        jtj, grad = _decompose._gauss_newton(x, fs)
        gammas, pair, _ = _decompose._gn_parts(x, fs)
        prod = flat(_decompose._gn_matvec(fs, gammas, pair, list(d)))
        ref = (jac.T @ jac, jac.T @ res(flat(fs)), jac.T @ (jac @ flat(d)))
        return (jtj, grad, prod), ref

    for got, ref in zip(*both(x, fs, d)):
        np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.fixture(scope="module")
def swamp():
    """A rank-4 tensor with nearly collinear factors (ALS's slow case), plus 1% noise."""
    rng = np.random.default_rng(3)
    shape, rank = (3, 3, 6, 7), 4
    fs = tuple(
        jnp.asarray(rng.normal(size=(n, 1)) + 0.3 * rng.normal(size=(n, rank)), jnp.float32)
        for n in shape
    )
    w = lowrank.cp_reconstruct(fs)
    noise = jnp.asarray(rng.normal(size=shape), jnp.float32)
    return w + 0.01 * jnp.linalg.norm(w) / np.sqrt(w.size) * noise, rank


def test_cp_nls_error_never_increases_and_beats_als_in_a_swamp(swamp):
    w, rank = swamp
    nls = [_rel(lowrank.cp_nls(w, rank, iterations=n, key=KEY), w) for n in (0, 2, 8, 30)]
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(nls)), nls
    als = _rel(lowrank.cp_als(w, rank, iterations=30, key=KEY), w)
    assert nls[-1] <= als, (nls, als)
    assert nls[-1] < 0.02  # down to the 1% noise


def test_cp_transform_takes_the_nls_method(swamp):
    w, rank = swamp
    params = {"Conv_0": {"kernel": w}}
    c, s = lowrank.cp(rank=rank, iterations=30, key=KEY, method="nls").init(params)
    assert isinstance(c["Conv_0"]["kernel"], lowrank.CP)
    rebuilt = lowrank.cp(rank=rank, iterations=30, key=KEY, method="nls").apply(c, s)
    leaf_key = jax.random.fold_in(KEY, 0)  # the transform folds in the leaf's index
    expect = lowrank.cp_reconstruct(lowrank.cp_nls(w, rank, iterations=30, key=leaf_key))
    np.testing.assert_allclose(rebuilt["Conv_0"]["kernel"], expect, atol=1e-5)
    with pytest.raises(ValueError, match="method"):
        lowrank.cp(rank=2, key=KEY, method="gn")


def _data_error(xo, xc, w, node):
    """``||X_o W - X W'||_F`` for a kernel and a Separable node."""
    f = w.shape[-1]
    return float(jnp.linalg.norm(xo @ w.reshape(-1, f) - xc @ node.to_dense().reshape(-1, f)))


def test_fit_separable_never_increases_the_data_error_and_solves_full_rank_exactly():
    rng = np.random.default_rng(1)
    kh, kw, c, f = 3, 3, 2, 4
    w = jnp.asarray(rng.normal(size=(kh, kw, c, f)), jnp.float32)
    mix = rng.normal(size=(kh * kw * c, kh * kw * c))
    xo = jnp.asarray(rng.normal(size=(200, kh * kw * c)) @ mix, jnp.float32)  # correlated
    xc = xo + 0.3 * jnp.asarray(rng.normal(size=xo.shape), jnp.float32)
    errs = []
    for k in (1, 6):  # 6 = min(kh C, kw F): full rank
        t = lowrank.jaderberg(rank=k)
        start = t.init({"Conv_0": {"kernel": w}})[0]["Conv_0"]["kernel"]
        gram, target = xc.T @ xc, xc.T @ xo @ w.reshape(-1, f)
        fit = lambda n, s=start, g=gram, b=target: lowrank.fit_separable(
            g, b, s.vertical, s.horizontal, iterations=n
        )
        errs.append([_data_error(xo, xc, w, fit(n)) for n in (0, 1, 3, 10)])
        assert all(b <= a * (1 + 1e-5) for a, b in zip(errs[-1], errs[-1][1:])), errs[-1]
    assert errs[0][-1] < 0.9 * errs[0][0]  # the data fit improves on the kernel fit
    # at full rank any kernel is a pair: one sweep reaches the unconstrained least squares
    lsq = jnp.linalg.lstsq(xc, xo @ w.reshape(-1, f))[0]
    best = float(jnp.linalg.norm(xo @ w.reshape(-1, f) - xc @ lsq))
    np.testing.assert_allclose(errs[1][1], best, rtol=1e-3)


class _Linen(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Conv(3, (3, 3))(x)


class _NNX(nnx.Module):
    def __init__(self, rngs):
        self.Conv_0 = nnx.Conv(2, 4, (3, 3), rngs=rngs)
        self.Conv_1 = nnx.Conv(4, 3, (3, 3), rngs=rngs)

    def __call__(self, x):
        return self.Conv_1(nnx.relu(self.Conv_0(x)))


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_jaderberg_data_fits_each_layer_on_the_approximated_inputs(kind):
    rng = np.random.default_rng(2)
    x = np.cumsum(rng.normal(size=(24, 6, 6, 2)), axis=1).astype(np.float32)
    if kind == "linen":
        model = _Linen()
        apply = model.apply
        params = model.init(KEY, x[:1])["params"]
    else:
        apply, variables = jc.adapt.functional(_NNX(nnx.Rngs(0)))
        params = variables["params"]
    data = lowrank.Calibration(apply, x, batch_size=10)  # three batches, the last partial
    closed = lowrank.jaderberg(rank=1)
    fitted = lowrank.jaderberg(rank=1, data=data, iterations=8)
    c_closed, _ = closed.init(params)
    c_fit, s_fit = fitted.init(params)
    # Conv_1 is refitted on the inputs the approximated Conv_0 produces, against the original
    run = jc.adapt.capture(apply, inputs="Conv_1", rows=True)
    approx0 = {**params, "Conv_0": {**params["Conv_0"],
                                    "kernel": c_fit["Conv_0"]["kernel"].to_dense()}}  # fmt: skip
    xo = run({"params": params}, x)[1].inputs["Conv_1"]
    xc = run({"params": approx0}, x)[1].inputs["Conv_1"]
    w1 = params["Conv_1"]["kernel"]
    start = c_closed["Conv_1"]["kernel"]
    expect = lowrank.fit_separable(xc.T @ xc, xc.T @ xo @ w1.reshape(-1, 3), start.vertical,
                                   start.horizontal, iterations=8)  # fmt: skip
    np.testing.assert_allclose(c_fit["Conv_1"]["kernel"].to_dense(), expect.to_dense(),
                               rtol=1e-3, atol=1e-4)  # fmt: skip
    # the data fit of each layer is no worse than the kernel fit on the same inputs
    assert _data_error(xo, xc, w1, c_fit["Conv_1"]["kernel"]) <= _data_error(xo, xc, w1, start) * (
        1 + 1e-5
    )
    y = apply({"params": params}, x)
    err = lambda c, t: float(jnp.linalg.norm(apply({"params": t.apply(c, s_fit)}, x) - y))
    assert err(c_fit, fitted) < err(c_closed, closed)
    with pytest.raises(ValueError, match="Calibration"):
        lowrank.jaderberg(rank=1, data=(apply, x))

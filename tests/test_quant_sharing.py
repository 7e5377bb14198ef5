"""jaxcomp.quant weight sharing: k-means (Deep Compression), Hessian-weighted k-means, ECSQ,
product and residual quantization with Q-CNN's error correction."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import jaxcomp as jc
from jaxcomp import quant


def _w(shape=(16, 12), key=0):
    return jax.random.normal(jax.random.key(key), shape)


# ---- the 1-D clustering ----------------------------------------------------------------------


def test_kmeans_1d_is_a_lloyd_fixed_point():
    x = jnp.concatenate([jax.random.normal(jax.random.key(i), (50,)) * 0.05 + c
                         for i, c in enumerate((-2.0, 0.0, 1.0, 4.0))])  # fmt: skip
    c, idx = quant.kmeans_1d(x, k=4, iterations=30)
    xs, cs, ids = np.asarray(x), np.asarray(c), np.asarray(idx)
    assert np.all(np.diff(cs) > 0)
    np.testing.assert_array_equal(ids, np.argmin(np.abs(xs[:, None] - cs[None, :]), axis=1))
    for k in range(4):  # each centroid is the mean of its members
        np.testing.assert_allclose(cs[k], xs[ids == k].mean(), rtol=1e-5)


def test_kmeans_1d_initializations():
    x = jax.random.uniform(jax.random.key(0), (101,)) ** 3  # skewed: density != linear
    valid = jnp.ones(x.shape, bool)
    lin = quant._cluster.init_centroids(x, valid, 5, "linear", None)
    np.testing.assert_allclose(lin, np.linspace(float(x.min()), float(x.max()), 5), rtol=1e-6)
    dens = quant._cluster.init_centroids(x, valid, 5, "density", None)
    np.testing.assert_allclose(dens, np.quantile(np.asarray(x), (np.arange(5) + 0.5) / 5),
                               rtol=1e-5)  # fmt: skip
    rnd = quant._cluster.init_centroids(x, valid, 5, "random", jax.random.key(1))
    assert set(np.asarray(rnd).tolist()) <= set(np.asarray(x).tolist())
    assert len(set(np.asarray(rnd).tolist())) == 5
    mask = x > 0.1  # invalid values are never drawn
    rnd = quant._cluster.init_centroids(x, mask, 5, "random", jax.random.key(2))
    assert bool(jnp.all(rnd > 0.1))


def test_hessian_weighted_centroids_are_weighted_means():
    x = jnp.array([0.0, 1.0, 10.0, 11.0])
    h = jnp.array([1.0, 3.0, 1.0, 1.0])
    c, _ = quant.kmeans_1d(x, k=2, weights=h)
    np.testing.assert_allclose(c, [0.75, 10.5], rtol=1e-6)  # (0 * 1 + 1 * 3) / 4
    c, _ = quant.kmeans_1d(x, k=2)
    np.testing.assert_allclose(c, [0.5, 10.5], rtol=1e-6)


def test_ecsq_rate_term_lowers_the_entropy_of_the_indices():
    x = jax.random.normal(jax.random.key(0), (4000,))

    def entropy(idx):
        p = np.bincount(np.asarray(idx).ravel()) / idx.size
        p = p[p > 0]
        return float(-(p * np.log2(p)).sum())

    c0, i0 = quant.ecsq_1d(x, k=16, lam=0.0)
    ck, _ = quant.kmeans_1d(x, k=16)
    np.testing.assert_allclose(c0, ck, rtol=1e-4, atol=1e-5)  # lam = 0 is k-means
    _, i1 = quant.ecsq_1d(x, k=16, lam=0.5)
    assert entropy(i1) < entropy(i0) - 0.3
    c1, i1 = quant.ecsq_1d(x, k=16, lam=0.5, iterations=100)  # converged: a fixed point
    used = np.unique(np.asarray(i1))
    xs, ids = np.asarray(x), np.asarray(i1)
    for k in used:  # centroids of used clusters are their members' means
        np.testing.assert_allclose(np.asarray(c1)[k], xs[ids == k].mean(), rtol=1e-4, atol=1e-5)


# ---- the k-means transform -------------------------------------------------------------------


def test_centroid_gradient_is_the_per_cluster_sum_of_the_dense_gradient():
    params = {"Dense_0": {"kernel": _w(), "bias": jnp.zeros(12)}}
    t = quant.kmeans(clusters=5, keep_zeros=False)
    c, s = t.init(params)
    target = jax.random.normal(jax.random.key(5), (16, 12))
    loss = lambda p: jnp.sum((p["Dense_0"]["kernel"] - target) ** 2 * jnp.arange(12.0)[None, :])
    dense_grad = jax.grad(loss)(t.apply(c, s))["Dense_0"]["kernel"]
    g = jax.grad(lambda c: loss(t.apply(c, s)))(c)["Dense_0"]["kernel"]["centroids"]
    idx = np.asarray(s.indices["Dense_0"]["kernel"]).ravel()
    expect = np.bincount(idx, weights=np.asarray(dense_grad).ravel(), minlength=5)
    np.testing.assert_allclose(g, expect, rtol=1e-5, atol=1e-5)


def test_kmeans_keeps_pruned_weights_out_and_at_zero():
    w = _w((20, 10))
    w = jnp.where(jnp.abs(w) < 0.6, 0.0, w)  # "pruned"
    params = {"Dense_0": {"kernel": w}}
    t = quant.kmeans(bits=3)
    c, s = t.init(params)
    idx = s.indices["Dense_0"]["kernel"]
    assert idx.dtype == jnp.uint8 and c["Dense_0"]["kernel"]["centroids"].shape == (7,)
    np.testing.assert_array_equal(np.asarray(idx) == 0, np.asarray(w) == 0)
    cen = np.asarray(c["Dense_0"]["kernel"]["centroids"])
    used = np.unique(np.asarray(idx))[1:] - 1  # clusters with members hold no pruned weight
    assert np.all(np.abs(cen[used]) >= 0.6 - 1e-6)
    step = jax.jit(lambda c: jax.tree.map(lambda a: a + 0.1, c))  # any update of the centroids
    out = t.apply(step(c), s)["Dense_0"]["kernel"]
    np.testing.assert_array_equal(np.asarray(out) == 0, np.asarray(w) == 0)
    fin = t.finalize(c, s)["Dense_0"]["kernel"]
    assert isinstance(fin, quant.CodebookArray) and fin.codebook.shape == (8,)
    assert fin.index_bits == 3 and float(fin.codebook[0]) == 0.0
    np.testing.assert_array_equal(fin.to_dense(), t.apply(c, s)["Dense_0"]["kernel"])


def test_kmeans_hessian_and_bad_inputs():
    w = _w()
    params = {"Dense_0": {"kernel": w}}
    h = {"Dense_0": {"kernel": jnp.ones_like(w)}}
    a = quant.kmeans(clusters=4, keep_zeros=False)
    b = quant.kmeans(clusters=4, keep_zeros=False, hessian=h)
    wa = a.apply(*a.init(params))["Dense_0"]["kernel"]
    np.testing.assert_allclose(wa, b.apply(*b.init(params))["Dense_0"]["kernel"], rtol=1e-6)
    # a non-uniform Hessian reaches the clustering: on four well-separated groups the centroids
    # are the h-weighted means of their members (a plain mean if the Hessian were dropped)
    rng = np.random.default_rng(0)
    wg = rng.choice([-3.0, -1.0, 1.0, 3.0], (16, 12)) + 0.1 * rng.standard_normal((16, 12))
    hg = rng.uniform(0.1, 2.0, (16, 12))
    pg = {"Dense_0": {"kernel": jnp.asarray(wg, jnp.float32)}}
    for hessian in ({"Dense_0": {"kernel": jnp.asarray(hg, jnp.float32)}}, lambda p: {
        "Dense_0": {"kernel": jnp.asarray(hg, jnp.float32)}}):  # fmt: skip
        t = quant.kmeans(clusters=4, keep_zeros=False, hessian=hessian)
        c, s = t.init(pg)
        cen = np.asarray(c["Dense_0"]["kernel"]["centroids"])
        idx = np.asarray(s.indices["Dense_0"]["kernel"])
        for k in range(4):
            members = idx == k
            np.testing.assert_allclose(cen[k], (hg * wg)[members].sum() / hg[members].sum(),
                                       rtol=1e-5)  # fmt: skip
            assert abs(cen[k] - wg[members].mean()) > 1e-4
    with pytest.raises(ValueError, match="distinct"):
        quant.kmeans(clusters=5).init({"Dense_0": {"kernel": jnp.tile(jnp.arange(4.0), (3, 1))}})
    with pytest.raises(ValueError, match="hessian"):
        quant.kmeans(clusters=2, hessian={"Dense_1": {"kernel": w}}).init(params)
    with pytest.raises(ValueError, match="exactly one"):
        quant.kmeans(clusters=4, bits=2)
    with pytest.raises(ValueError, match="bits"):
        quant.kmeans(bits=17)
    with pytest.raises(ValueError, match="init"):
        quant.kmeans(clusters=4, init="kmeans++")
    with pytest.raises(ValueError, match="key"):
        quant.kmeans(clusters=4, init="random")
    with pytest.raises(ValueError, match="rate"):
        quant.ecsq(clusters=4, rate=-1.0)


def test_kmeans_after_pruning_in_a_chain():
    w = _w((20, 10))
    w = jnp.where(jnp.abs(w) < 0.5, 0.0, w)
    params = {"Dense_0": {"kernel": w}}
    from _toys import threshold_mask

    ch = quant.kmeans(bits=2)
    import jaxcomp as jc

    chain = jc.chain(threshold_mask(0.5), ch)
    c, s = chain.init(params)
    assert set(c["Dense_0"]["kernel"]) == {"centroids"}
    out = chain.apply(c, s)["Dense_0"]["kernel"]
    np.testing.assert_array_equal(np.asarray(out) == 0, np.asarray(w) == 0)
    assert isinstance(chain.finalize(c, s)["Dense_0"]["kernel"], quant.CodebookArray)


# ---- product and residual quantization -------------------------------------------------------


def test_product_quant_exact_when_every_column_has_a_codeword():
    w = _w((8, 4))
    params = {"Dense_0": {"kernel": w}}
    t = quant.product_quant(subvector=2, clusters=4, key=jax.random.key(0))
    c, s = t.init(params)
    assert c["Dense_0"]["kernel"]["codebooks"].shape == (1, 4, 4, 2)  # (S, M, K, d)
    assert s.codes["Dense_0"]["kernel"].shape == (1, 4, 4)
    np.testing.assert_allclose(t.apply(c, s)["Dense_0"]["kernel"], w, atol=1e-6)
    fin = t.finalize(c, s)["Dense_0"]["kernel"]
    assert isinstance(fin, quant.ProductQuantizedArray)
    np.testing.assert_allclose(fin.to_dense(), w, atol=1e-6)
    with pytest.raises(ValueError, match="does not divide"):
        quant.product_quant(subvector=3, clusters=2, key=jax.random.key(0)).init(params)
    with pytest.raises(ValueError, match="clusters"):
        quant.product_quant(subvector=2, clusters=5, key=jax.random.key(0)).init(params)


def test_residual_quant_second_stage_reduces_the_error():
    w = _w((16, 32))
    params = {"Dense_0": {"kernel": w}}
    errs = []
    for stages in (1, 2, 3):
        t = quant.residual_quant(stages=stages, clusters=4, key=jax.random.key(0))
        errs.append(float(jnp.sum((t.apply(*t.init(params))["Dense_0"]["kernel"] - w) ** 2)))
    assert errs[2] < errs[1] < errs[0]


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3), padding="VALID")(x))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(8)(x)


def test_captured_rows_times_kernel_is_the_layer_output():
    net = _Net()
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    v = net.init(jax.random.key(1), x)
    rows = jc.adapt.capture(net.apply, inputs=re.compile(""), rows=True)(v, x)[1].inputs
    assert set(rows) == {"Conv_0", "Dense_0"}  # the model itself is no Dense or Conv
    k = v["params"]["Conv_0"]["kernel"]
    conv = nn.Conv(6, (3, 3), padding="VALID").apply({"params": v["params"]["Conv_0"]}, x)
    got = rows["Conv_0"] @ k.reshape(-1, 6) + v["params"]["Conv_0"]["bias"][None, :]
    np.testing.assert_allclose(got, conv.reshape(-1, 6), rtol=1e-5, atol=1e-5)
    assert rows["Dense_0"].shape == (2, 96)


def test_qcnn_ridge_keeps_barely_excited_inputs_near_plain_pq():
    # two sub-spaces are on in one calibration row only; held-out rows excite them fully. Fitted
    # to that row (ridge=0), their codewords generalize worse than plain PQ's; the ridge pulls
    # them back towards PQ at the same response error on the calibration rows
    k0, k1, k2 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k0, (512, 16)) @ jax.random.normal(k1, (16, 16))
    x_cal, x_new = x[:256].at[1:, :8].set(0.0), x[256:]
    w = jax.random.normal(k2, (16, 24))
    params = {"Dense_0": {"kernel": w}}
    err = {}
    for name, kw in {"pq": {}, "ridge0": {"ridge": 0.0}, "default": {}}.items():
        inputs = None if name == "pq" else {"Dense_0/kernel": x_cal}
        t = quant.product_quant(subvector=4, clusters=4, key=jax.random.key(3), inputs=inputs, **kw)
        w_hat = t.apply(*t.init(params))["Dense_0"]["kernel"]
        err[name] = [float(jnp.sum((v @ w - v @ w_hat) ** 2)) for v in (x_cal, x_new)]
    (pq_cal, pq_new), (r0_cal, r0_new), (cal, new) = err["pq"], err["ridge0"], err["default"]
    assert r0_cal < 0.85 * pq_cal and cal < 1.01 * r0_cal  # the calibration error still drops
    assert r0_new > 1.2 * pq_new  # the defect: worse than plain PQ on new rows
    assert new < 0.9 * r0_new
    with pytest.raises(ValueError, match="ridge"):
        quant.product_quant(subvector=4, clusters=4, key=jax.random.key(3), ridge=-1.0)


def test_qcnn_error_correction_lowers_the_response_error():
    # correlated inputs: what matters is W's action on them, not W itself
    x = jax.random.normal(jax.random.key(0), (256, 16)) @ jax.random.normal(jax.random.key(1),
                                                                           (16, 16))  # fmt: skip
    w = _w((16, 24))
    params = {"Dense_0": {"kernel": w}}
    err = {}
    for name, inputs in {"pq": None, "qcnn": {"Dense_0/kernel": x}}.items():
        t = quant.product_quant(subvector=4, clusters=4, key=jax.random.key(3), inputs=inputs)
        w_hat = t.apply(*t.init(params))["Dense_0"]["kernel"]
        err[name] = float(jnp.sum((x @ w - x @ w_hat) ** 2))
    assert err["qcnn"] < 0.6 * err["pq"]
    with pytest.raises(ValueError, match="inputs"):
        quant.product_quant(subvector=4, clusters=4, key=jax.random.key(3),
                            inputs={"Dense_0/kernel": x[:, :8]}).init(params)  # fmt: skip

"""The structured methods of the survey, each by its defining property.

LASSO channel selection [54], group-wise brain damage [30], coarse (kernel-level) pruning [53],
data-free neuron merging [26], SSL [32] and group-sparse neurons [31][52].
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxcomp as jc

FEW = settings(max_examples=3, deadline=None)


MLP = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
LINEAR = nn.Sequential([nn.Dense(8), nn.Dense(3)])


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3))(x))
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Dense(2)(x.mean(axis=(1, 2)))


CONV = ConvNet()


def _normal(seed, shape, scale=1.0):
    """Gaussian float32 from numpy (no PRNG kernels to compile: the tests stay fast)."""
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _setup(model, x, seed=1):
    """Random variables of the model's shapes (kernels scaled by fan-in) and its groups."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    leaves, treedef = jax.tree.flatten(shapes)
    scale = lambda s: 1.0 / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 0.1
    v = treedef.unflatten([_normal(seed + i, s.shape, scale(s)) for i, s in enumerate(leaves)])
    return v, jc.structured.groups(model.apply, v, x[:1])


# --------------------------------------------------------------------------------------------------
# [54] LASSO channel selection and least-squares reconstruction


def _consumer_errors(model, v, x, gs, gi, masks, refit, ratio):
    """Consumer-output errors of LASSO + refit, of the same channels with the original weights,
    and of L1 selection (Li et al.) with the original weights."""
    (m,) = [m for m in gs[gi].members if m.role == "in"]
    layer = m.path.split("/")[1]
    run = jc.adapt.capture(model.apply, inputs=layer, rows=True)
    xs = jax.jit(lambda v, x: run(v, x)[1].inputs[layer])(v, x)
    k = v["params"][layer]["kernel"]
    w = k.reshape(-1, k.shape[-1])
    y = xs @ w
    shape = [1] * (k.ndim - 1)
    shape[m.axis] = -1
    chan = np.broadcast_to(m.index.reshape(shape), k.shape[:-1]).reshape(-1)
    l1 = np.asarray(jc.structured.masks(model.apply, v, x, ratio=ratio, groups=gs).keep[gi])
    kept = np.asarray(masks.keep[gi])[chan]
    w2 = refit["params"][layer]["kernel"].reshape(w.shape)
    assert np.all(np.asarray(w2)[~kept] == 0), "removed channels' rows must be zero"
    err = lambda a: float(jnp.linalg.norm(a))
    return err(y - xs @ w2), err(y - xs[:, kept] @ w[kept]), err(y - xs[:, l1[chan]] @ w[l1[chan]])


@FEW
@given(seed=st.integers(0, 2**16), ratio=st.sampled_from([0.25, 0.5, 0.75]))
def test_lasso_refit_is_least_squares_and_keeps_exact_count(seed, ratio):
    model = MLP
    x = _normal(seed, (64, 4))
    v, gs = _setup(model, x, seed + 1)
    masks, refit = jc.structured.lasso_channels(model.apply, v, x, 0, ratio=ratio, groups=gs)
    assert int(masks.keep[0].sum()) == 8 - math.floor(ratio * 8)
    lasso, same, l1 = _consumer_errors(model, v, x, gs, 0, masks, refit, ratio)
    assert lasso <= same * (1 + 1e-5)  # least squares never worse than the original weights
    # (beating L1 selection is not guaranteed on every draw: hypothesis found seed 17193 at 0.75,
    # 5.59 against 5.48; the strict case is the bottleneck test below)
    del l1


def test_lasso_strictly_better_on_a_linear_bottleneck():
    # hidden = [x, 1] @ [W; b] has rank 4: any 4 generic channels reconstruct the output exactly
    model = LINEAR
    x = _normal(0, (64, 3))
    v, gs = _setup(model, x)
    masks, refit = jc.structured.lasso_channels(model.apply, v, x, 0, ratio=0.5, groups=gs)
    lasso, _, l1 = _consumer_errors(model, v, x, gs, 0, masks, refit, 0.5)
    assert lasso < 1e-3 * l1, (lasso, l1)


def test_lasso_kxk_conv_consumer_and_shrink():
    x = _normal(3, (2, 5, 5, 2))
    v, gs = _setup(CONV, x)
    masks, refit = jc.structured.lasso_channels(CONV.apply, v, x, [0], ratio=0.5, groups=gs)
    assert [int(k.sum()) for k in masks.keep] == [3, 4]  # the second group is not pruned
    lasso, same, l1 = _consumer_errors(CONV, v, x, gs, 0, masks, refit, 0.5)
    assert lasso <= same * (1 + 1e-5) and lasso <= l1 * (1 + 1e-5)
    small_apply, small = jc.structured.shrink(CONV.apply, refit, masks)
    assert small["params"]["Conv_1"]["kernel"].shape == (3, 3, 3, 4)
    masked = jax.jit(CONV.apply)(jc.structured.apply_masks(refit, masks), x)
    np.testing.assert_allclose(jax.jit(small_apply)(small, x), masked, atol=1e-5)


def test_lasso_refuses_what_it_cannot_do():
    model = MLP
    x = jnp.ones((64, 4))
    v, gs = _setup(model, x)
    with pytest.raises(ValueError, match="ratio"):
        jc.structured.lasso_channels(model.apply, v, x, 0, ratio=1.0, groups=gs)
    with pytest.raises(ValueError, match="group must be in"):
        jc.structured.lasso_channels(model.apply, v, x, 5, ratio=0.5, groups=gs)
    with pytest.raises(ValueError, match="twice"):
        jc.structured.lasso_channels(model.apply, v, x, [0, 0], ratio=0.5, groups=gs)

    class Residual(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4)(x)
            return nn.Dense(2)(h) + nn.Dense(2)(h)

    r = Residual()
    rv, rgs = _setup(r, x)
    with pytest.raises(ValueError, match="exactly one consumer"):
        jc.structured.lasso_channels(r.apply, rv, x, 0, ratio=0.5, groups=rgs)


# --------------------------------------------------------------------------------------------------
# [30] group-wise brain damage


@FEW
@given(
    shape=st.sampled_from([(3, 3, 2, 4), (1, 2, 5, 3), (2, 2, 3, 1)]),
    sparsity=st.sampled_from([0.0, 0.3, 0.5, 0.9]),
    seed=st.integers(0, 2**16),
)
def test_brain_damage_zeroes_exact_whole_rows(shape, sparsity, seed):
    w = _normal(seed, shape)
    t = jc.structured.brain_damage(sparsity=sparsity)
    c, s = jax.jit(t.init)({"Conv_0": {"kernel": w}, "Dense_0": {"kernel": jnp.ones((3, 2))}})
    rows = np.asarray(c["Conv_0"]["kernel"]).reshape(-1, shape[-1])
    zero = np.all(rows == 0, axis=1)
    assert zero.sum() == math.floor(sparsity * rows.shape[0])
    assert np.all(np.any(rows != 0, axis=1) | zero)  # no row is partly zeroed
    norms = np.linalg.norm(np.asarray(w).reshape(rows.shape), axis=1)
    if zero.any() and (~zero).any():
        assert norms[zero].max() <= norms[~zero].min()
    assert np.all(np.asarray(c["Dense_0"]["kernel"]) == 1)  # Dense kernels are not selected
    # pruned rows stay pruned after an optimizer-like step, and the masks stay nested
    out, s2 = jax.jit(t.update)(jax.tree.map(lambda a: a + 0.1, c), s, step=1)
    r2 = np.asarray(out["Conv_0"]["kernel"]).reshape(rows.shape)
    assert np.all(r2[zero] == 0) and np.all(r2[~zero] != 0)
    np.testing.assert_array_equal(s2.masks["Conv_0"]["kernel"], s.masks["Conv_0"]["kernel"])


def test_brain_damage_penalty_value_and_gradient():
    w = np.array(_normal(0, (2, 2, 3, 4)))
    w[0, 1, 2] = 0.0  # a zero row: derivative 0, not NaN
    params = {"Conv_0": {"kernel": jnp.asarray(w), "bias": jnp.ones(4)}}
    pen = jc.structured.brain_damage_penalty(strength=0.3)
    rows = w.reshape(-1, 4)
    norms = np.linalg.norm(rows, axis=1)
    np.testing.assert_allclose(float(jax.jit(pen)(params)), 0.3 * norms.sum(), rtol=1e-6)
    g = np.asarray(jax.jit(jax.grad(pen))(params)["Conv_0"]["kernel"]).reshape(-1, 4)
    nz = norms > 0
    np.testing.assert_allclose(g[nz], 0.3 * rows[nz] / norms[nz, None], rtol=1e-5)
    assert np.all(g[~nz] == 0)
    with pytest.raises(ValueError, match="strength"):
        jc.structured.brain_damage_penalty(strength=-1.0)
    with pytest.raises(ValueError, match="sparsity"):
        jc.structured.brain_damage(sparsity=1.5)


# --------------------------------------------------------------------------------------------------
# [53] coarse pruning: kernel level


@FEW
@given(
    norm=st.sampled_from(["l1", "l2"]),
    sparsity=st.sampled_from([0.25, 0.5, 0.8]),
    seed=st.integers(0, 2**16),
)
def test_kernel_level_zeroes_exact_whole_kernels(norm, sparsity, seed):
    w = _normal(seed, (3, 3, 4, 5))
    t = jc.structured.kernel_level(sparsity=sparsity, norm=norm)
    c, _ = jax.jit(t.init)({"Conv_0": {"kernel": w}})
    k = np.asarray(c["Conv_0"]["kernel"])
    zero = np.all(k == 0, axis=(0, 1))  # (cin, cout)
    assert zero.sum() == math.floor(sparsity * 20)
    assert np.all(np.any(k != 0, axis=(0, 1)) | zero)  # whole 3x3 kernels only
    order = {"l1": 1, "l2": 2}[norm]
    norms = np.linalg.norm(np.asarray(w).reshape(9, 20), ord=order, axis=0).reshape(4, 5)
    assert norms[zero].max() <= norms[~zero].min()


def test_kernel_level_refuses_dense_kernels_and_bad_norm():
    with pytest.raises(ValueError, match="norm"):
        jc.structured.kernel_level(sparsity=0.5, norm="l0")
    t = jc.structured.kernel_level(sparsity=0.5, where=jc.select.by_regex("Dense_0/kernel"))
    with pytest.raises(ValueError, match="Dense_0/kernel"):
        t.init({"Dense_0": {"kernel": jnp.ones((3, 2))}})


# --------------------------------------------------------------------------------------------------
# [26] data-free neuron merging


@FEW
@given(seed=st.integers(0, 2**16), pair=st.sampled_from([(0, 5), (2, 3), (4, 1)]))
def test_merging_a_duplicate_neuron_keeps_the_function(seed, pair):
    model = MLP
    x = _normal(seed, (64, 4))
    v, gs = _setup(model, x, seed + 1)
    i, j = pair
    p = v["params"]["layers_0"]
    v["params"]["layers_0"] = {
        "kernel": p["kernel"].at[:, j].set(p["kernel"][:, i]),
        "bias": _normal(seed + 2, (8,)).at[j].set(0.25).at[i].set(0.25),
    }
    masks, merged = jc.structured.merge_neurons(model.apply, v, x, 0, ratio=0.2, groups=gs)
    keep = np.asarray(masks.keep[0])
    assert keep.sum() == 7 and np.flatnonzero(~keep).tolist() in ([i], [j])
    want = model.apply(v, x)
    np.testing.assert_allclose(model.apply(jc.structured.apply_masks(merged, masks), x), want,
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    small_apply, small = jc.structured.shrink(model.apply, merged, masks)
    assert small["params"]["layers_0"]["kernel"].shape == (4, 7)
    np.testing.assert_allclose(small_apply(small, x), want, rtol=1e-5, atol=1e-5)


def test_merging_a_scaled_copy_and_exact_counts():
    model = MLP
    x = _normal(0, (64, 4))
    v, gs = _setup(model, x)
    p = v["params"]["layers_0"]
    v["params"]["layers_0"] = {
        "kernel": p["kernel"].at[:, 4].set(2.5 * p["kernel"][:, 1]),
        "bias": p["bias"].at[1].set(0.1).at[4].set(0.25),
    }
    masks, merged = jc.structured.merge_neurons(
        model.apply, v, x, 0, ratio=0.2, scaled=True, groups=gs
    )
    # either neuron is a positive multiple of the other: merging either way is exact
    assert np.flatnonzero(~np.asarray(masks.keep[0])).tolist() in ([1], [4])
    np.testing.assert_allclose(model.apply(jc.structured.apply_masks(merged, masks), x),
                               model.apply(v, x), rtol=1e-5, atol=1e-5)  # fmt: skip
    for ratio in (0.0, 0.5, 0.9):
        masks, _ = jc.structured.merge_neurons(model.apply, v, x, 0, ratio=ratio, groups=gs)
        assert int(masks.keep[0].sum()) == max(1, 8 - math.floor(ratio * 8))


def test_merging_refuses_a_batch_norm_in_between():
    class WithBN(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.BatchNorm(use_running_average=True)(nn.Dense(4)(x))
            return nn.Dense(2)(nn.relu(h))

    model = WithBN()
    x = jnp.ones((2, 3))
    v, gs = _setup(model, x)
    with pytest.raises(ValueError, match="BatchNorm_0"):
        jc.structured.merge_neurons(model.apply, v, x, 0, ratio=0.5, groups=gs)
    with pytest.raises(ValueError, match="scaled"):
        jc.structured.merge_neurons(model.apply, v, x, 0, ratio=0.5, scaled=1)


# --------------------------------------------------------------------------------------------------
# [32] SSL and [31][52] group-sparse neurons


def test_ssl_penalty_equals_the_hand_computation():
    x = jnp.ones((2, 5, 5, 2))
    v, gs = _setup(CONV, x)
    p = jax.tree.map(np.asarray, v["params"])
    k0, k1, d = p["Conv_0"]["kernel"], p["Conv_1"]["kernel"], p["Dense_0"]["kernel"]
    n = lambda a, axes: np.sqrt(np.sum(np.square(a), axis=axes))
    filters = n(k0, (0, 1, 2)).sum() + n(k1, (0, 1, 2)).sum()
    channels = n(k1, (0, 1, 3)).sum() + n(d, 1).sum()
    shapes = n(k0, 3).sum() + n(k1, 3).sum()
    depth = n(k0, (0, 1, 2, 3)) + n(k1, (0, 1, 2, 3)) + n(d, (0, 1))
    pen = jc.structured.ssl_penalty(gs, filters=0.1, channels=0.2, shapes=0.3, depth=0.4)
    want = 0.1 * filters + 0.2 * channels + 0.3 * shapes + 0.4 * depth
    np.testing.assert_allclose(float(jax.jit(pen)(v["params"])), want, rtol=1e-5)
    np.testing.assert_allclose(float(jax.jit(pen)(v)), want, rtol=1e-5)  # variables work too
    with pytest.raises(ValueError, match="at least one"):
        jc.structured.ssl_penalty(gs)
    with pytest.raises(ValueError, match="depth"):
        jc.structured.ssl_penalty(gs, depth=-1.0)
    with pytest.raises(ValueError, match="groups"):
        jc.structured.ssl_penalty([1, 2], filters=1.0)


def test_neuron_group_penalty_value_and_gradient():
    x = jnp.ones((64, 4))
    v, gs = _setup(MLP, x)
    p = jax.tree.map(np.asarray, v["params"])
    k0, b0, k1 = p["layers_0"]["kernel"], p["layers_0"]["bias"] + 0.1, p["layers_2"]["kernel"]
    params = {"layers_0": {"kernel": k0, "bias": b0}, "layers_2": p["layers_2"]}
    theta = np.concatenate([k0.T, b0[:, None], k1], axis=1)  # (channels, 4 + 1 + 3)
    norms = np.linalg.norm(theta, axis=1)
    pen = jc.structured.neuron_group_penalty(gs, strength=0.2, l1=0.01, l2=0.03)
    rest = np.abs(k0).sum() + np.abs(b0).sum() + np.abs(k1).sum()
    sq = np.square(k0).sum() + np.square(b0).sum() + np.square(k1).sum()
    want = 0.2 * np.sqrt(8.0) * norms.sum() + 0.01 * rest + 0.03 * sq
    np.testing.assert_allclose(float(jax.jit(pen)(params)), want, rtol=1e-5)
    group_only = jc.structured.neuron_group_penalty(gs, strength=0.2)
    g = jax.jit(jax.grad(group_only))(params)
    closed = 0.2 * np.sqrt(8.0) * theta / norms[:, None]
    np.testing.assert_allclose(g["layers_0"]["kernel"], closed[:, :4].T, rtol=1e-5)
    np.testing.assert_allclose(g["layers_0"]["bias"], closed[:, 4], rtol=1e-5)
    np.testing.assert_allclose(g["layers_2"]["kernel"], closed[:, 5:], rtol=1e-5)
    with pytest.raises(ValueError, match="roles"):
        jc.structured.neuron_group_penalty(gs, strength=1.0, roles=("bias",))


def test_neuron_group_penalty_trains_whole_channels_to_zero():
    x = _normal(0, (64, 4))
    y = jnp.tile(x[:, :1] - 0.5 * x[:, 1:2], (1, 3))
    v, gs = _setup(MLP, x)

    def objective(params, state, batch, key):
        out, model_state = jc.train.forward(state, params, batch[0], train=False, train_kwarg=None)
        loss = jnp.mean(jnp.square(out - batch[1]))
        return loss, (model_state, {"loss": loss})

    def channel_norms(p):  # every weight of each hidden channel: in, bias, out
        k0, b0, k1 = p["layers_0"]["kernel"], p["layers_0"]["bias"], p["layers_2"]["kernel"]
        return np.sqrt(np.sum(k0**2, 0) + b0**2 + np.sum(k1**2, 1))

    pen = jc.structured.neuron_group_penalty(gs, strength=0.05)
    state = jc.train.TrainState.create(
        tx=optax.sgd(0.05), key=jax.random.key(2), apply_fn=MLP.apply, variables=v
    )
    assert channel_norms(state.cparams).min() > 0.1
    step = jc.train.make_train_step(objective, penalty=pen, donate=False)
    for _ in range(300):
        state, metrics = step(state, (x, y))
    norms = channel_norms(state.cparams)
    assert (norms < 1e-2).sum() >= 2 and norms.max() > 0.3, norms
    assert float(metrics["loss"]) < 0.1

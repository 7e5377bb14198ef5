"""The training library: steps, loop, evaluation, checkpoints, resume, data parallelism."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _toys import threshold_mask
from flax import linen as nn
from flax import nnx

import jaxcomp as jc
from jaxcomp.core._tree import path_str
from jaxcomp.errors import CheckpointError


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8)(x.reshape((x.shape[0], -1)))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(10)(nn.relu(x))


# one instance of each: ``apply_fn`` (the bound ``model.apply``) is a static field of the state,
# and bound methods of two equal modules compare unequal, so each new instance compiles again
MLP_NET, BN_NET = MLP(), BNNet()


@pytest.fixture(scope="module")
def digits():
    return jc.data.load("digits")


# one optimizer for every state: ``tx`` is a static field of the state, and optax builds new
# functions each call, so states with their own ``optax.adam(...)`` would compile a shared
# jitted step (and the cached evaluation step) again for each
TX = optax.adam(3e-3)


def _draw(shapes, seed=0):
    """Variables of the given shapes drawn with numpy as flax's defaults draw them (lecun-normal
    kernels: a normal truncated to two deviations, variance 1 / fan-in; zero biases and means,
    unit scales and variances): jax's initializers would compile a sampler for every shape."""
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = path_str(path).rsplit("/", 1)[-1]
        if name == "kernel":
            w = rng.standard_normal(s.shape)
            while np.any(out := np.abs(w) > 2):
                w[out] = rng.standard_normal(np.sum(out))
            w /= 0.87962566103423978 * np.sqrt(np.prod(s.shape[:-1]))  # flax's truncation factor
        else:
            w = np.full(s.shape, 1.0 if name in ("scale", "var") else 0.0)
        return jnp.asarray(w.astype(s.dtype))

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _state(model, ds, *, seed=0, transform=None):
    shapes = jax.eval_shape(lambda: jc.models.init(model, jax.random.key(0), ds.input_shape))
    return jc.train.TrainState.create(
        apply_fn=model.apply, variables=_draw(shapes, seed), tx=TX, key=jax.random.key(seed),
        transform=transform,
    )  # fmt: skip


def _equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


@pytest.fixture(scope="module")
def step_fns():
    return jc.train.make_train_step(), jc.train.make_eval_step()


def test_fit_learns_and_logs(digits, step_fns, tmp_path):
    state = _state(MLP_NET, digits)
    before = jc.train.evaluate(state, digits.x_test, digits.y_test, eval_step=step_fns[1])
    res = jc.train.fit(state, digits, batch_size=32, epochs=4, out_dir=tmp_path, progress=False,
                       train_step=step_fns[0], eval_step=step_fns[1])  # fmt: skip
    after = jc.train.evaluate(res.state, digits.x_test, digits.y_test, eval_step=step_fns[1])
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.85
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 == len(res.history)
    assert res.history[-1]["step"] == 4 * (digits.num_train // 32) == int(res.state.step)


def test_evaluate_counts_every_example_once(digits, step_fns):
    state = _state(MLP_NET, digits)
    logits = state.apply_fn(state.variables(), digits.x_test)
    expected = int(np.sum(np.argmax(logits, -1) == digits.y_test)) / len(digits.y_test)
    for bs in (7, 100, 359, 1000):  # 359 examples: partial batches of several sizes
        got = jc.train.evaluate(state, digits.x_test, digits.y_test, batch_size=bs)
        assert got["accuracy"] == pytest.approx(expected, abs=1e-9)


def test_transform_update_runs_in_the_step(digits):
    state = _state(MLP_NET, digits, transform=threshold_mask(0.05))
    mask = state.comp_state.mask
    res = jc.train.fit(state, digits, batch_size=64, steps=30, progress=False)
    w = np.concatenate([np.ravel(x) for x in jax.tree.leaves(res.state.cparams)])
    m = np.concatenate([np.ravel(x) for x in jax.tree.leaves(mask)])
    assert 0 < np.sum(m == 0) < m.size
    assert np.all(w[m == 0] == 0)  # pruned weights stay exactly zero through training
    w0 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.cparams)])
    assert np.any(w[m == 1] != w0[m == 1])  # the kept ones trained


def test_batch_norm_statistics_are_trained(digits):
    state = _state(BN_NET, digits)
    res = jc.train.fit(state, digits, batch_size=64, steps=5, progress=False)
    assert not _equal(res.state.model_state, state.model_state)


def test_resume_is_bit_identical(digits, step_fns, tmp_path):
    kw = dict(batch_size=64, seed=3, progress=False, train_step=step_fns[0], checkpoint_every=10)
    full = jc.train.fit(_state(MLP_NET, digits), digits, steps=50, out_dir=tmp_path / "a", **kw)
    # an interrupted run: 30 steps, then a new process-like start that resumes to 50
    jc.train.fit(_state(MLP_NET, digits), digits, steps=30, out_dir=tmp_path / "b", **kw)
    with pytest.raises(CheckpointError, match="resume"):
        jc.train.fit(_state(MLP_NET, digits), digits, steps=50, out_dir=tmp_path / "b", **kw)
    resumed = jc.train.fit(
        _state(MLP_NET, digits), digits, steps=50, out_dir=tmp_path / "b", resume=True, **kw
    )
    assert int(resumed.state.step) == 50
    assert _equal(full.state.cparams, resumed.state.cparams)
    assert _equal(full.state.opt_state, resumed.state.opt_state)
    assert _equal(jax.random.key_data(full.state.key), jax.random.key_data(resumed.state.key))


def test_checkpointer_round_trip_and_mismatch(digits, tmp_path):
    state = _state(MLP_NET, digits, transform=jc.chain(threshold_mask(0.05), jc.identity()))
    ck = jc.train.Checkpointer(tmp_path / "ck")
    ck.save(state)
    back = ck.restore(state)
    assert _equal(back.cparams, state.cparams) and _equal(back.comp_state, state.comp_state)
    other = _state(BN_NET, digits)
    with pytest.raises(CheckpointError):
        ck.restore(other)
    ck.close()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        jc.train.Checkpointer(tmp_path / "empty").restore(state)


def test_bad_arguments(digits):
    state = _state(MLP_NET, digits)
    with pytest.raises(ValueError, match="exactly one"):
        jc.train.fit(state, digits, epochs=1, steps=1)
    with pytest.raises(ValueError, match="batch_size"):
        jc.train.fit(state, digits, steps=1, batch_size=10**6)
    with pytest.raises(ValueError, match="typed PRNG key"):
        jc.train.TrainState.create(
            apply_fn=MLP().apply, variables={"params": {}}, tx=optax.sgd(0.1),
            key=jax.random.PRNGKey(0),
        )  # fmt: skip
    with pytest.raises(ValueError, match="'params'"):
        jc.train.TrainState.create(
            apply_fn=MLP().apply, variables={}, tx=optax.sgd(0.1), key=jax.random.key(0)
        )


def _lecun_numpy(seed):
    """A kernel initializer drawing with numpy (see ``_draw``); it ignores the key."""
    return lambda key, shape, dtype: _draw(jax.ShapeDtypeStruct(shape, dtype), seed)


class NNXNet(nnx.Module):
    """Dense, batch norm, dropout, dense: params, batch_stats and rng_state all train."""

    def __init__(self, rngs: nnx.Rngs):
        self.Dense_0 = nnx.Linear(64, 16, kernel_init=_lecun_numpy(0), rngs=rngs)
        self.BatchNorm_0 = nnx.BatchNorm(16, momentum=0.9, rngs=rngs)
        self.Dropout_0 = nnx.Dropout(0.2, rngs=rngs)
        self.Dense_1 = nnx.Linear(16, 10, kernel_init=_lecun_numpy(1), rngs=rngs)

    def __call__(self, x):
        x = self.BatchNorm_0(self.Dense_0(x.reshape((x.shape[0], -1))))
        return self.Dense_1(nnx.relu(self.Dropout_0(x)))


def _nnx_state(seed=0, transform=None):
    k1, k2 = jax.random.split(jax.random.key(seed))
    model = NNXNet(nnx.Rngs(params=k1, dropout=k1))
    return jc.train.TrainState.create(model=model, tx=TX, key=k2, transform=transform)


def _key_data(tree):
    is_key = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    return jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x, tree)


def test_nnx_resume_is_bit_identical(digits, tmp_path):
    step = jc.train.make_train_step()
    kw = dict(batch_size=64, seed=3, progress=False, train_step=step, checkpoint_every=10)
    full = jc.train.fit(_nnx_state(), digits, steps=30, out_dir=tmp_path / "a", **kw)
    jc.train.fit(_nnx_state(), digits, steps=20, out_dir=tmp_path / "b", **kw)
    resumed = jc.train.fit(
        _nnx_state(), digits, steps=30, out_dir=tmp_path / "b", resume=True, **kw
    )
    assert int(resumed.state.step) == 30
    assert set(full.state.model_state) == {"batch_stats", "rng_state"}
    for name in ("cparams", "opt_state", "model_state", "key"):
        a, b = (_key_data(getattr(r.state, name)) for r in (full, resumed))
        assert _equal(a, b), name
    # it trained: weights, batch statistics and the dropout stream all moved
    start = _nnx_state()
    for name in ("cparams", "model_state"):
        assert not _equal(_key_data(getattr(start, name)), _key_data(getattr(full.state, name)))


def test_nnx_and_linen_twins_train_alike(digits):
    """The same weights and data: an NNX model trains and evaluates as its linen twin."""
    kw = dict(api="nnx", key=jax.random.key(0), input_shape=(8, 8, 1))
    build = lambda: jc.models.get("lenet300", **kw)
    apply_fn, shapes = jc.adapt.functional(nnx.eval_shape(build))
    model = apply_fn.merge(_draw(shapes))  # numpy weights: no initializer compiled
    nnx_state = jc.train.TrainState.create(
        model=model, tx=optax.sgd(0.1), key=jax.random.key(1), transform=threshold_mask(0.05)
    )
    linen_state = jc.train.TrainState.create(
        apply_fn=jc.models.get("lenet300").apply,
        variables=jc.adapt.functional(model)[1],
        tx=optax.sgd(0.1),
        key=jax.random.key(1),
        transform=threshold_mask(0.05),
    )
    kw = dict(batch_size=64, steps=10, progress=False)
    a, b = (jc.train.fit(s, digits, **kw).state for s in (nnx_state, linen_state))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
                 a.cparams, b.cparams)  # fmt: skip
    ev_a, ev_b = (jc.train.evaluate(s, digits.x_test, digits.y_test) for s in (a, b))
    assert ev_a["accuracy"] == ev_b["accuracy"] > 0.2  # chance is 0.1
    assert ev_a["loss"] == pytest.approx(ev_b["loss"], rel=1e-5)
    trained = a.apply_fn.merge(a.variables())  # the trained nnx.Module, masked weights
    assert isinstance(trained, type(model))
    trained.eval()
    x = digits.x_test[:8]
    np.testing.assert_allclose(trained(x), b.apply_fn(b.variables(), x), rtol=1e-5, atol=1e-6)


def test_create_takes_an_nnx_model_or_linen_apply_and_variables():
    model, tx, key = NNXNet(nnx.Rngs(0)), optax.sgd(0.1), jax.random.key(0)
    apply_fn, variables = jc.adapt.functional(model)
    with pytest.raises(ValueError, match=r"model=.*apply_fn=.*variables="):
        jc.train.TrainState.create(model=model, apply_fn=apply_fn, tx=tx, key=key)
    with pytest.raises(ValueError, match=r"model=.*apply_fn=.*variables="):
        jc.train.TrainState.create(apply_fn=apply_fn, tx=tx, key=key)
    with pytest.raises(ValueError, match=r"nnx\.Module"):
        jc.train.TrainState.create(model=MLP(), tx=tx, key=key)
    state = jc.train.TrainState.create(model=model, tx=tx, key=key)
    assert state.apply_fn == apply_fn
    assert _equal(state.params, variables["params"])


def test_params_apply_the_transform_whatever_cparams_hold(digits):
    state = _state(MLP_NET, digits, transform=jc.prune.magnitude(sparsity=0.5))
    dense = jax.tree.map(lambda w: w + 1.0, state.cparams)  # no exact zeros where pruned
    loaded = state.replace(cparams=dense)
    params = loaded.params
    for layer in ("Dense_0", "Dense_1"):
        assert np.mean(np.asarray(params[layer]["kernel"]) == 0) == 0.5, layer
        assert np.all(np.asarray(params[layer]["bias"]) != 0)
    # evaluation, finalize and export see the masked model too, never the unmasked weights
    masked = state.replace(cparams=params)  # the same model with its zeros written out
    ev = jc.train.evaluate(loaded, digits.x_test, digits.y_test)
    assert ev == jc.train.evaluate(masked, digits.x_test, digits.y_test)
    assert ev != jc.train.evaluate(
        state.replace(cparams=dense, transform=jc.identity(), comp_state=jc.core.EmptyState()),
        digits.x_test, digits.y_test,
    )  # fmt: skip
    fin = loaded.finalize()
    back, _ = jc.encode.unpack(jc.encode.pack(jax.tree.map(np.asarray, fin)))
    for tree in (fin, back):
        for layer in ("Dense_0", "Dense_1"):
            np.testing.assert_array_equal(tree[layer]["kernel"], params[layer]["kernel"])


_SHARDED = textwrap.dedent(
    """
    import sys
    import jax, numpy as np, optax
    import jaxcomp as jc
    from flax import linen as nn
    assert len(jax.devices()) == 4, jax.devices()

    class BNNet(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.Dense(8)(x.reshape((x.shape[0], -1)))
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            return nn.Dense(10)(nn.relu(x))

    ds = jc.data.load(sys.argv[1])  # the digits, as an .npz (no scikit-learn import)
    model = BNNet()
    # numpy weights of the model's shapes (no initializer compiled), variances positive
    shapes = jax.eval_shape(lambda: jc.models.init(model, jax.random.key(0), ds.input_shape))
    rng = np.random.default_rng(0)
    v0 = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    v0["batch_stats"]["BatchNorm_0"]["var"] = np.abs(v0["batch_stats"]["BatchNorm_0"]["var"]) + 1
    def state():
        return jc.train.TrainState.create(apply_fn=model.apply, variables=v0,
                                          tx=optax.sgd(0.1), key=jax.random.key(1))
    step = jc.train.make_train_step(donate=False)
    mesh = jc.train.data_mesh()
    single, sharded = state(), jc.train.replicate(state(), mesh)
    for i in range(3):
        xb, yb = ds.x_train[i * 64:(i + 1) * 64], ds.y_train[i * 64:(i + 1) * 64]
        single, m1 = step(single, (xb, yb))
        sharded, m4 = step(sharded, jc.train.shard_batch((xb, yb), mesh))
    shard_spec = sharded.cparams["Dense_0"]["kernel"].sharding
    assert shard_spec.is_fully_replicated, shard_spec
    for a, b in zip(jax.tree.leaves((single.cparams, single.model_state)),
                    jax.tree.leaves((sharded.cparams, sharded.model_state))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-5)
    ev1 = jc.train.evaluate(single, ds.x_test, ds.y_test, batch_size=100)
    ev4 = jc.train.evaluate(sharded, ds.x_test, ds.y_test, batch_size=100, mesh=mesh)
    assert abs(ev1["accuracy"] - ev4["accuracy"]) < 1e-9, (ev1, ev4)
    try:
        jc.train.shard_batch((ds.x_train[:65], ds.y_train[:65]), mesh)
        raise AssertionError("65 rows were sharded over 4 devices")
    except ValueError as e:
        assert "divisible" in str(e)
    print("SHARDED-OK")
    """
)


def test_four_device_sharded_step_equals_single_device(digits, tmp_path):
    data = tmp_path / "digits.npz"
    np.savez(data, x_train=digits.x_train, y_train=digits.y_train, x_test=digits.x_test,
             y_test=digits.y_test)  # fmt: skip
    # four CPU devices, and the suite's own XLA flags (conftest) kept
    flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                   "--xla_force_host_platform_device_count=4"]))  # fmt: skip
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", _SHARDED, str(data)], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHARDED-OK" in out.stdout


def test_penalty_trains_a_soft_sharing_prior(digits):
    t = jc.prune.soft_sharing(components=4)
    state = _state(MLP_NET, digits, transform=t)
    tau = 1e-3
    step = jc.train.make_train_step(
        penalty=lambda c, s: tau * jc.prune.soft_sharing_penalty(c, s), donate=False
    )
    plain = jc.train.make_train_step(donate=False)
    batch = (digits.x_train[:64], digits.y_train[:64])
    with_prior, m1 = step(state, batch)
    without, m0 = plain(state, batch)
    # the prior's parameters move only when the penalty is in the loss
    assert not _equal(with_prior.cparams.prior, state.cparams.prior)
    assert _equal(without.cparams.prior, state.cparams.prior)
    expected = float(m0["loss"])  # the metric is the task loss; the penalty adds to the gradient
    assert float(m1["loss"]) == pytest.approx(expected, rel=1e-6)

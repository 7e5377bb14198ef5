"""The NNX functional bridge: jaxcomp.adapt.functional and NNXApply; the CLI's --api nnx."""

import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcomp.adapt import NNXApply
from jaxcomp.adapt import collection_name
from jaxcomp.adapt import functional


class _Net(nnx.Module):
    """Conv, batch norm, dropout, dense: params, batch_stats and rng_state."""

    def __init__(self, rngs: nnx.Rngs):
        self.Conv_0 = nnx.Conv(2, 3, (3, 3), rngs=rngs)
        self.BatchNorm_0 = nnx.BatchNorm(3, momentum=0.5, rngs=rngs)
        self.Dropout_0 = nnx.Dropout(0.5, rngs=rngs)
        self.Dense_0 = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
        x = self.Dropout_0(self.BatchNorm_0(self.Conv_0(x)))
        return self.Dense_0(x.mean((1, 2)))


def _x(seed=1):
    return jax.random.normal(jax.random.key(seed), (2, 5, 5, 2))


def _net():
    return _Net(nnx.Rngs(0))


def test_collections_and_paths():
    _, variables = functional(_net())
    shapes = jax.tree.map(jnp.shape, variables)
    assert shapes["params"] == {
        "BatchNorm_0": {"bias": (3,), "scale": (3,)},
        "Conv_0": {"bias": (3,), "kernel": (3, 3, 2, 3)},
        "Dense_0": {"bias": (4,), "kernel": (3, 4)},
    }
    assert shapes["batch_stats"] == {"BatchNorm_0": {"mean": (3,), "var": (3,)}}
    assert set(shapes["rng_state"]["Dropout_0"]["rngs"]) == {"count", "key"}
    assert all(type(c) is dict for c in variables.values())


def test_collection_name_rules():
    class MyStat(nnx.Variable):
        pass

    class MyParam(nnx.Param):
        pass

    assert collection_name(nnx.Param) == "params"
    assert collection_name(MyParam) == "params"
    assert collection_name(nnx.BatchStat) == "batch_stats"
    assert collection_name(nnx.RngKey) == "rng_state"
    assert collection_name(nnx.Intermediate) == "intermediates"
    assert collection_name(MyStat) == "my_stat"
    with pytest.raises(ValueError, match="variable_type"):
        collection_name(int)


def test_eval_output_equals_module():
    model = _net()
    apply, variables = functional(model)
    model.eval()
    np.testing.assert_array_equal(apply(variables, _x(), train=False), model(_x()))


def test_train_mode_updates_batch_stats_like_the_module():
    model = _net()
    model.Dropout_0.rate = 0.0  # deterministic outputs in train mode
    apply, variables = functional(model)
    out, new = apply(variables, _x(), train=True, mutable=["batch_stats"])
    model.train()
    expected = model(_x())
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert set(new) == {"batch_stats"}
    np.testing.assert_allclose(
        new["batch_stats"]["BatchNorm_0"]["mean"], model.BatchNorm_0.mean.get_value(), rtol=1e-6
    )
    assert not np.allclose(new["batch_stats"]["BatchNorm_0"]["mean"], 0.0)
    # the input variables are untouched (the call ran on a merged copy)
    np.testing.assert_array_equal(variables["batch_stats"]["BatchNorm_0"]["mean"], 0.0)


def test_rngs_drive_dropout():
    apply, variables = functional(_net())
    del variables["rng_state"]
    run = lambda k: apply(variables, _x(), train=True, rngs={"default": jax.random.key(k)},
                          mutable="batch_stats")[0]  # fmt: skip
    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))
    with pytest.raises(ValueError, match="rngs="):
        apply(variables, _x(), train=True, mutable="batch_stats")
    # eval mode needs no RNG state
    assert apply(variables, _x(), train=False).shape == (2, 4)


def test_mutable_true_returns_every_collection():
    apply, variables = functional(_net())
    out, new = apply(variables, _x(), train=False, mutable=True)
    assert set(new) == {"params", "batch_stats", "rng_state"}
    np.testing.assert_array_equal(out, apply(variables, _x(), train=False))
    jax.tree.map(np.testing.assert_array_equal, new["params"], variables["params"])
    with pytest.raises(ValueError, match="mutable"):
        apply(variables, _x(), mutable=3)


def test_merge_takes_other_shapes_and_pytrees():
    apply, variables = functional(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))
    small = {"params": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros((2,))}}
    assert apply(small, jnp.ones((5, 3))).shape == (5, 2)
    frozen = flax.core.freeze(variables)  # linen's FrozenDict variables are mappings too
    ones = jnp.ones((5, 3))
    np.testing.assert_array_equal(apply(frozen, ones), apply(variables, ones))
    factors = {"u": jnp.ones((3, 1)), "v": jnp.ones((1, 4))}
    module = apply.merge({"params": {**variables["params"], "kernel": factors}})
    assert jax.tree.map(jnp.shape, module.kernel.get_value()) == {"u": (3, 1), "v": (1, 4)}
    out = apply.call_module(
        module, jnp.ones((5, 3)), method=lambda m, x: x @ (m.kernel["u"] @ m.kernel["v"])
    )
    np.testing.assert_array_equal(out, jnp.full((5, 4), 3.0))


def test_merge_errors_name_the_paths():
    apply, variables = functional(_net())
    params = variables["params"]
    missing = {**variables, "params": {k: v for k, v in params.items() if k != "Conv_0"}}
    with pytest.raises(ValueError, match="params/Conv_0/kernel"):
        apply(missing, _x())
    extra = {**variables, "params": {**params, "Dense_9": {"kernel": jnp.ones(2)}}}
    with pytest.raises(ValueError, match="params/Dense_9/kernel"):
        apply(extra, _x())
    with pytest.raises(ValueError, match="'cache'"):
        apply({**variables, "cache": {}}, _x())
    with pytest.raises(ValueError, match="batch_stats"):
        apply({"params": params}, _x())
    with pytest.raises(ValueError, match="model"):
        functional(object())


def test_static_and_hashable_under_jit():
    apply, variables = functional(_net())
    again, _ = functional(_Net(nnx.Rngs(7)))
    assert isinstance(apply, NNXApply)
    assert apply == again and hash(apply) == hash(again)
    other, _ = functional(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))
    assert apply != other
    assert repr(other) == "NNXApply(Linear, 2 variables in ['params'])"
    traces = []

    @jax.jit
    def run(variables, x):
        traces.append(1)
        return apply(variables, x, train=False)

    run(variables, _x(1))
    run(variables, _x(2))
    assert len(traces) == 1
    np.testing.assert_allclose(run(variables, _x()), apply(variables, _x(), train=False),
                               rtol=1e-6)  # fmt: skip


def test_cli_trains_the_nnx_twin(tmp_path):
    from jaxcomp import cli

    rng = np.random.default_rng(0)
    x = rng.random((48, 4, 4, 1), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x[:32], y_train=y[:32], x_test=x[32:], y_test=y[32:])
    reports = {}
    for api in ("linen", "nnx"):
        out = tmp_path / api
        args = ["train", "--model", "lenet300", "--data", str(path), "--epochs", "2",
                "--batch-size", "16", "--out", str(out), "--no-progress", "--api", api]  # fmt: skip
        assert cli.main(args) == 0
        reports[api] = json.loads((out / "report.json").read_text())
    assert reports["nnx"]["api"] == "nnx" and reports["nnx"]["steps"] == 4
    for field in ("params", "flops", "bytes_fp32"):
        assert reports["nnx"][field] == reports["linen"][field], field


def test_encode_round_trips_an_nnx_state(tmp_path):
    import jaxcomp as jc

    model = _net()
    state = nnx.state(model, nnx.Param)
    path = tmp_path / "model.jcz"
    jc.encode.save(path, state, metadata={"api": "nnx"})
    back, meta = jc.encode.load(path)
    assert isinstance(back, nnx.State) and meta == {"api": "nnx"}
    pure = nnx.to_pure_dict(state)
    assert jax.tree.structure(nnx.to_pure_dict(back)) == jax.tree.structure(pure)
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(back), pure)
    other = _Net(nnx.Rngs(5))
    nnx.update(other, back)
    np.testing.assert_array_equal(other.Conv_0.kernel.get_value(), model.Conv_0.kernel.get_value())
    # a plain dict of the same arrays stays a dict
    plain, _ = jc.encode.unpack(jc.encode.pack(pure))
    assert type(plain) is dict

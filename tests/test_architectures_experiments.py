"""The architecture experiments (the survey's table 1, DSOD's deep supervision) at toy size."""

import json

import numpy as np
import pytest

import jaxcomp as jc

# the persistent compilation cache (tests/conftest.py): programs that a script builds again
# (a new jitted function of the same program) load instead of compiling
pytestmark = pytest.mark.usefixtures("jit_cache")


@pytest.mark.slow
def test_table1_smoke(tmp_path):
    from experiments.architectures import table1

    out = table1.main(["--smoke", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "architectures_table1.json").read_text())
    assert saved == json.loads(json.dumps(out))
    md = (tmp_path / "architectures_table1.md").read_text()
    assert "ResNet with Stochastic Depth" in md and "**Reading.**" in md
    assert {"cpu", "cores", "backend", "jax"} <= set(out["meta"]["machine"])
    assert out["meta"]["seeds"] == [0, 1] and out["meta"]["steps"] == table1.SMOKE_STEPS
    rows = {r["model"]: r for r in out["rows"]}
    assert list(rows) == list(table1.CONFIGS) == list(table1.SMOKE)
    for r in rows.values():
        assert len(r["errors"]) == 2 and all(0.0 <= e <= 100.0 for e in r["errors"])
        assert min(r["errors"]) <= r["error_mean"] <= max(r["errors"]) and r["error_std"] >= 0
        assert r["params"] > 0 and r["macs"] > 0 and r["seconds"] > 0
    # stochastic depth and drop-path change the training, not the network
    plain, sd = rows["ResNet"], rows["ResNet, stochastic depth"]
    assert (plain["params"], plain["macs"]) == (sd["params"], sd["macs"])
    assert sd["config"]["survival"] == 0.5 and "survival" not in plain["config"]
    fractal, drop = rows["FractalNet"], rows["FractalNet, drop-path"]
    assert (fractal["params"], fractal["macs"]) == (drop["params"], drop["macs"])
    assert fractal["config"]["global_drop"] == 0.0 and "global_drop" not in drop["config"]
    # the batch norms are re-estimated for drop-path alone
    assert len(drop["errors_bn"]) == 2 and all(0.0 <= e <= 100.0 for e in drop["errors_bn"])
    assert [k for k in rows if "errors_bn" in rows[k]] == ["FractalNet, drop-path"]
    read = out["reading"]
    assert read["best"] in rows and read["sentence"].endswith(".")
    for key in ("stochastic_depth", "drop_path"):
        assert read[f"{key}_se_pp"] >= 0 and isinstance(read[f"{key}_gain_pp"], float)
    surveyed = [r["survey"] for r in out["rows"] if r["survey"] is not None]
    assert surveyed == [s["method"] for s in out["survey_table1"]]


@pytest.mark.slow
def test_dsod_smoke(tmp_path):
    from experiments.architectures import dsod

    out = dsod.main(["--smoke", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "dsod.json").read_text()) == json.loads(json.dumps(out))
    assert "**Reading.**" in (tmp_path / "dsod.md").read_text()
    implicit, explicit = out["rows"]
    assert (implicit["aux_heads"], explicit["aux_heads"]) == (False, True)
    assert explicit["aux_weight"] == dsod.AUX_WEIGHT == 0.3
    # the heads only train: both arms test the same backbone
    assert implicit["params_trained"] == implicit["params_tested"] == explicit["params_tested"]
    assert explicit["params_trained"] > explicit["params_tested"]
    assert implicit["macs"] == explicit["macs"] > 0
    for r in out["rows"]:
        assert len(r["errors"]) == dsod.SEEDS >= 2
        assert all(0.0 <= e <= 100.0 for e in r["errors"])
    assert isinstance(out["reading"]["gain_pp"], float)


def test_dsod_objective_adds_weighted_auxiliary_losses():
    import jax
    import optax

    from experiments.architectures import dsod
    from experiments.structured.run import init_variables

    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    model = dsod.DSODNet(heads=True, **{**dsod.SMOKE, "stem": (2,)})
    state = jc.train.TrainState.create(
        apply_fn=model.apply, variables=init_variables(model, (8, 8, 1), 0), tx=optax.sgd(0.1),
        key=jax.random.key(0),
    )  # fmt: skip

    @jax.jit
    def check(state):
        loss, (_, metrics) = dsod.deep_supervision(0.3)(state.params, state, (x, y), state.key)
        variables = {"params": state.params, **state.model_state}
        (logits, side), _ = model.apply(variables, x, train=True, aux=True,
                                        mutable=["batch_stats"])  # fmt: skip
        parts = [jc.train.cross_entropy(s, y) for s in side]
        return loss, metrics, jc.train.cross_entropy(logits, y), parts, model.apply(variables, x)

    loss, metrics, main, parts, logits = check(state)
    assert len(parts) == len(dsod.SMOKE["layers"]) - 1 == 1  # one head per transition
    np.testing.assert_allclose(loss, main + 0.3 * sum(parts), rtol=1e-6)
    np.testing.assert_allclose(metrics["main_loss"], main, rtol=1e-6)
    # evaluation returns the backbone's logits alone
    assert logits.shape == (4, 10)


def test_table1_data_pads_mnist_and_keeps_tfds_images(monkeypatch):
    from experiments.architectures import table1

    mnist = table1.dataset("mnist5k", smoke=True)
    assert mnist.input_shape == (32, 32, 1) and (mnist.num_train, mnist.num_test) == (256, 128)
    np.testing.assert_allclose(mnist.x_train.mean(), 0.0, atol=1e-4)
    seen = {}

    def fake_load(spec, *, data_dir=None):
        seen.update(spec=spec, data_dir=data_dir)
        rng = np.random.default_rng(0)
        return jc.data.from_arrays(
            rng.random((300, 32, 32, 3), np.float32), rng.integers(0, 10, 300),
            rng.random((150, 32, 32, 3), np.float32), rng.integers(0, 10, 150),
        )  # fmt: skip

    monkeypatch.setattr(jc.data, "load", fake_load)
    cifar = table1.dataset("tfds:cifar10", smoke=True, data_dir="/data/tfds")
    assert seen == {"spec": "tfds:cifar10", "data_dir": "/data/tfds"}
    assert cifar.input_shape == (32, 32, 3) and (cifar.num_train, cifar.num_test) == (256, 128)
    np.testing.assert_allclose(cifar.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)


def test_table1_refuses_missing_tfds_data_before_training(tmp_path):
    from experiments.architectures import table1

    with pytest.raises(jc.errors.DatasetNotFoundError, match="never"):
        table1.main(["--data", "tfds:cifar10", "--data-dir", str(tmp_path), "--out",
                     str(tmp_path / "out")])  # fmt: skip
    assert not (tmp_path / "out").exists()

"""The low-rank experiments beyond Table 2 run end to end at toy size (one process: they share
compilations), and the summary rows they write follow the survey-wide convention."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import report
from experiments.lowrank import bases
from experiments.lowrank import cp_nls
from experiments.lowrank import dense_layers
from experiments.lowrank import denton
from experiments.lowrank import jaderberg_data

# the persistent compilation cache (tests/conftest.py): programs that a script builds again
# (a new jitted function of the same program) load instead of compiling
pytestmark = pytest.mark.usefixtures("jit_cache")


def _check_summary(out, path, ref):
    rows = out["summary"]
    assert rows and all(list(r)[: len(report.SUMMARY_KEYS)] == list(report.SUMMARY_KEYS)
                        for r in rows)  # fmt: skip
    for r in rows:
        assert r["ref"] == ref and r["command"].startswith("python -m experiments.lowrank.")
        assert 0.0 <= r["acc_after"] <= 1.0 and 0.0 <= r["acc_before"] <= 1.0
        assert r["seeds"] == 1 and r["flops_after"] <= r["flops_before"]
    saved = json.loads(path.read_text())
    assert saved["summary"] == json.loads(json.dumps(rows))
    assert saved["meta"]["machine"]["cpu"] and saved["meta"]["versions"]["flax"]
    return rows


def test_summary_row_and_interleaved_latency():
    row = report.summary_row(ref="[1]", method="m", note="n")
    assert list(row)[:17] == list(report.SUMMARY_KEYS) and row["note"] == "n"
    assert row["acc_after"] is None
    with pytest.raises(ValueError, match="acc_afetr"):
        report.summary_row(acc_afetr=0.5)
    fn = lambda v, x: x * v
    lat = report.interleaved_latency({"a": (fn, 2.0), "b": (fn, 3.0)}, np.ones((4, 2)),
                                     batches=(1, 4), repeats={1: 5, 4: 5})  # fmt: skip
    assert set(lat) == {"a", "b"} and all(v["b1"] > 0 and v["b4"] > 0 for v in lat.values())
    assert report.interleaved_latency({"a": (fn, 2.0)}, np.ones((1, 2)), skip=True) == {
        "a": {"b1": None, "b1_min": None, "b128": None, "b128_min": None}
    }


@pytest.mark.slow
def test_denton_smoke(tmp_path):
    out = denton.main(["--smoke", "--out", str(tmp_path)])
    (row,) = _check_summary(out, tmp_path / "denton.json", "[37]")
    assert "bicluster" in row["method"] and row["params_after"] < row["params_before"]
    assert out["rows"][1]["layer_speedup"] > 1.0
    x = np.random.default_rng(0).random((3, 4, 4, 1)).astype(np.float32)
    rgb = denton.colorize(x, 0)  # label-free colors: a foreground and a background per image
    assert rgb.shape == (3, 4, 4, 3) and np.all(rgb >= 0) and np.all(rgb <= 1)


@pytest.mark.slow
def test_bases_smoke(tmp_path):
    out = bases.main(["--smoke", "--out", str(tmp_path)])
    post, scratch = _check_summary(out, tmp_path / "bases.json", "[36]")
    assert "shortcut" in post["method"] and "from scratch" in scratch["method"]
    # the model trained from scratch holds exactly the post-hoc rewrite's factors
    assert post["params_after"] == scratch["params_after"] < post["params_before"]


@pytest.mark.slow
def test_dense_layers_smoke(tmp_path):
    out = dense_layers.main(["--smoke", "--out", str(tmp_path)])
    rows = out["summary"]
    assert {r["ref"] for r in rows} == {"[41]", "[42]"}
    for r in rows:
        assert r["params_after"] < r["params_before"] and 0 <= r["acc_after"] <= 1
    # the rank-2 classifier keeps 2 (100 + 10) of its 1,000 weights, post hoc and from scratch
    heads = [r for r in out["rows"] if "r=2" in r["method"]]
    assert [r["layer_params"] for r in heads] == [220, 220]
    # the predicted first layer stores alpha (40 x 300) and no dictionary
    (pred,) = [r for r in out["rows"] if "n_alpha" in r["method"]]
    assert pred["layer_params"] == 40 * 300


@pytest.mark.slow
def test_jaderberg_data_smoke(tmp_path):
    out = jaderberg_data.main(["--smoke", "--out", str(tmp_path)])
    rows = _check_summary(out, tmp_path / "jaderberg_data.json", "[38]")
    assert len(rows) == 3 and "shortcut" in rows[0]["method"] and "paper" in rows[2]["method"]
    assert len({r["params_after"] for r in rows}) == 1  # the same ranks, three fitting routes


@pytest.mark.slow
def test_cp_nls_smoke(tmp_path):
    out = cp_nls.main(["--smoke", "--out", str(tmp_path)])
    (row,) = _check_summary(out, tmp_path / "cp_nls.json", "[39]")
    assert "non-linear least squares" in row["method"]
    err = out["meta"]["per_seed"]["nls R=4"]["kernel_error"][0]
    assert 0.0 < err < 1.0 and jnp.isfinite(err)

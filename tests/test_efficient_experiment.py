"""experiments.architectures.efficient at toy size: the table's structure and ranges."""

import json

import pytest

# the persistent compilation cache (tests/conftest.py): programs that a script builds again
# (a new jitted function of the same program) load instead of compiling
pytestmark = pytest.mark.usefixtures("jit_cache")


@pytest.mark.slow
def test_efficient_smoke(tmp_path):
    from experiments.architectures import efficient

    out = efficient.main(["--smoke", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "architectures_efficient.json").read_text()) == json.loads(
        json.dumps(out)
    )
    md = (tmp_path / "architectures_efficient.md").read_text()
    assert "survey's claim" in md and "| vgg_small |" in md and "| shufflenet_v1_g3 |" in md
    meta = out["meta"]
    assert {"cpu", "isa", "cores", "backend", "jax"} <= set(meta["machine"])
    assert meta["seeds"] == [0, 1] and meta["steps"] == efficient.SMOKE_STEPS
    assert meta["baseline"] == "vgg_small" and meta["latency_batches"] == [1, 8]
    rows = out["rows"]
    assert [r["model"] for r in rows] == list(efficient.SMOKE)
    base = rows[0]
    assert base["params_vs_baseline"] == base["macs_vs_baseline"] == 1.0
    assert base["ratio_b1"] == base["ratio_b8"] == 1.0 and base["acc_vs_baseline_pp"] == 0.0
    for r in rows:
        assert len(r["acc_seeds"]) == len(r["train_acc_seeds"]) == 2
        assert all(0.0 <= a <= 1.0 for a in r["acc_seeds"] + r["train_acc_seeds"])
        assert min(r["acc_seeds"]) <= r["acc"] <= max(r["acc_seeds"]) and r["acc_std"] >= 0
        assert r["params"] > 0 and r["macs"] > 0
        for b in (1, 8):
            assert 0 < r[f"min_ms_b{b}"] <= r[f"ms_b{b}"] and r[f"gmacs_per_s_b{b}"] > 0
            want = r[f"ms_b{b}"] / base[f"ms_b{b}"]
            assert r[f"ratio_b{b}"] == pytest.approx(want, rel=1e-2)
    # the ShuffleNet's depthwise and group convolutions are counted: fewer than a dense 3x3 stack
    shuffle = rows[1]
    assert shuffle["macs_vs_baseline"] == pytest.approx(shuffle["macs"] / base["macs"], abs=1e-4)
    assert len(efficient.reading(rows, 8)) == 1
    check = out["claim_check"]
    assert check["baseline"] == "vgg_small" and check["close_pp"] == efficient.CLOSE_PP
    (c,) = check["models"].values()
    assert c["fewer_params"] == (shuffle["params"] < base["params"])
    assert c["fewer_macs"] == (shuffle["macs"] < base["macs"])
    assert c["close_accuracy"] == (100 * (base["acc"] - shuffle["acc"]) <= efficient.CLOSE_PP)
    assert set(check["holds_for"]) <= {"shufflenet_v1_g3"} and "**Against the claim**" in md

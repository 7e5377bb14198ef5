"""jaxcomp.structured's experiment and speed benchmark run at toy size (both marked slow)."""

import json

import pytest

# the persistent compilation cache (tests/conftest.py): programs that a script builds again
# (a new jitted function of the same program) load instead of compiling
pytestmark = pytest.mark.usefixtures("jit_cache")


@pytest.mark.slow
def test_experiment_smoke(tmp_path):
    from experiments.structured import run

    (res,) = run.main(["--smoke", "--out", str(tmp_path)])
    assert (tmp_path / "structured.md").exists()
    saved = json.loads((tmp_path / "structured.json").read_text())
    assert saved["meta"]["seeds"] == len(run.SEEDS) >= 2
    assert res["model"] == "lenet5" and len(res["dense_acc_seeds"]) == len(run.SEEDS)
    assert {r["criterion"] for r in res["rows"]} == {"l1", "taylor"}
    for r in res["rows"]:
        assert len(r["seeds_before"]) == len(r["seeds_after"]) == len(run.SEEDS)
        for key in ("dense_acc", "acc_before", "acc_after"):
            assert 0.0 <= r[key] <= 1.0
        # at least the requested fraction of FLOPs is gone, and params with it
        assert r["flops_removed"] >= r["flops_target"]
        assert r["small_flops"] < r["dense_flops"] and r["params_ratio"] < 1.0
        assert r["speedup"] > 0 and r["magnitude_speedup"] > 0
    for level in res["levels"].values():
        # the physically smaller model computes the masked model
        assert level["max_abs_diff_small_vs_masked"] < 1e-4
        assert level["small_accuracy"] == level["masked_accuracy"]
    assert set(res["check_50"]) == {"l1", "taylor"}
    assert [m["sparsity"] for m in res["magnitude"]] == list(run.SMOKE["lenet5"]["sparsities"])


@pytest.mark.slow
def test_benchmark_smoke():
    from experiments.benchmarks import structured_speed

    out = structured_speed.main(["--smoke"])
    assert out["target"] == {"speedup": 1.8, "speedup_over_flop_ratio": 0.9, "batch": 1}
    assert {"cpu", "cores", "backend"} <= set(out["machine"])
    (r,) = out["results"]
    assert r["model"] == "resnet20"
    assert 0.0 < r["flops_ratio"] <= 0.5 and 0.0 < r["params_ratio"] < 1.0
    assert r["small_flops"] < r["dense_flops"] and r["small_params"] < r["dense_params"]
    assert r["max_abs_diff_vs_masked"] < 1e-3
    assert r["dense_ms"] > 0 and r["small_ms"] > 0 and r["dense_ms_batch1"] > 0
    reduction = r["dense_flops"] / r["small_flops"]
    ratio = r["measured_speedup"] / reduction
    assert r["speedup_over_flop_ratio"] == pytest.approx(ratio, abs=2e-3)
    assert isinstance(r["meets_target"], bool)
    assert out["meets_target"] == r["meets_target"]

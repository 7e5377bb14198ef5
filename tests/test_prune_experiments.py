"""jaxcomp.prune's experiment and benchmark run at toy size (both marked slow)."""

import pytest

# the persistent compilation cache (tests/conftest.py): programs that a script builds again
# (a new jitted function of the same program) load instead of compiling
pytestmark = pytest.mark.usefixtures("jit_cache")


@pytest.mark.slow
def test_experiment_smoke(tmp_path):
    from experiments.pruning import lenet

    res = lenet.main(["--smoke", "--out", str(tmp_path)])["lenet300"]
    for name in ("lenet300_accuracy.md", "lenet300_schedules.json", "pruning_lenet300.png"):
        assert (tmp_path / name).exists()
    assert {r["method"] for r in res["rows"]} == set(lenet.METHODS)
    for r in res["rows"]:  # every criterion prunes the kernels at the requested sparsity
        assert r["kernel_sparsity"] == pytest.approx(r["sparsity"], abs=1e-3)
        assert 0.0 <= r["accuracy_no_retrain"] <= 1.0 and 0.0 <= r["accuracy_retrained"] <= 1.0
    assert res["schedules"][0]["kernel_sparsity"] == pytest.approx(0.92, abs=1e-3)


@pytest.mark.slow
def test_benchmark_smoke():
    from experiments.benchmarks import prune_overhead

    out = prune_overhead.main(["--smoke"])
    r = out["results"][0]
    assert r["dense_ms"] > 0 and r["masked_ms"] > 0 and r["ratio"] > 0
    assert out["target_ratio"] == 1.05
    assert out["meets_target"] == (r["ratio"] <= out["target_ratio"])
    # the amortized ratio mixes the off-grid and recompute ratios (each rounded to 4 places)
    lo, hi = sorted((r["ratio"], r["recompute_ratio"]))
    assert lo - 1e-4 <= r["amortized_ratio"] <= hi + 1e-4

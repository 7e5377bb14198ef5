"""The weight-sharing experiments (experiments/quantization/sharing.py and
experiments/pruning/sharing.py) at toy size: one shared run per script."""

import json

import numpy as np
import pytest

SUMMARY_KEYS = {
    "ref", "method", "model", "data", "acc_before", "acc_after", "acc_after_std", "seeds",
    "params_before", "params_after", "bits", "bytes", "flops_before", "flops_after",
    "latency_ms_b1", "latency_ms_b128", "command",
}  # fmt: skip


@pytest.fixture(scope="module")
def quant_run(tmp_path_factory, jit_cache):
    # jit_cache: the persistent compilation cache (tests/conftest.py), so that programs a script
    # builds again (a new jitted function of the same program) load instead of compiling
    from experiments.quantization import sharing

    out = tmp_path_factory.mktemp("qsharing")
    return sharing.main(["--smoke", "--out", str(out)]), out


@pytest.mark.slow
def test_quant_sharing_smoke(quant_run):
    _, out = quant_run
    doc = json.loads((out / "sharing.json").read_text())
    assert (out / "sharing.md").exists() and doc["meta"]["machine"]["jax"]
    rows = {r["method"]: r for r in doc["rows"]}
    base = rows["float32 baseline"]
    assert base["params_after"] == 266_610 and base["bits"] == 32
    pq, qcnn = rows["PQ d=4 K=16"], rows["Q-CNN (error-corrected PQ) d=4 K=16"]
    # same codes layout: same stored floats; Dense_1's 300x100 kernel is 75 x 16 x 4 codewords
    assert pq["params_after"] == qcnn["params_after"] == 266_610 - 300 * 100 + 75 * 16 * 4
    assert pq["bits"] == qcnn["bits"] == 1.0
    km = rows["Hessian k-means 2 bits (Gauss-Newton diag)"]
    assert km["index_entropy"] <= 2.0 and km["bytes"] < base["bytes"]
    tc = rows["ternary connect (stochastic, trained from scratch)"]
    assert 0.0 <= tc["acc"] <= 1.0 and tc["bits"] == pytest.approx(np.log2(3), abs=1e-4)
    # the lookup-table forward pass computes the PQ model (checked inside), with fewer MACs
    macs = doc["speed"]["macs_per_image"]
    assert macs["Q-CNN lookup tables"] < macs["dense float32"] == 266_200
    for s in doc["summary"]:
        assert SUMMARY_KEYS <= set(s) and s["ref"] in {"[14]", "[15]", "[19]", "[35]"}
        assert s["data"] == "mnist5k" and 0.0 <= s["acc_after"] <= 1.0
    assert {s["ref"] for s in doc["summary"]} == {"[14]", "[15]", "[19]", "[35]"}
    lut = next(s for s in doc["summary"] if s["ref"] == "[15]")
    assert lut["latency_ms_b1"] > 0 and lut["flops_after"] == macs["Q-CNN lookup tables"]


@pytest.fixture(scope="module")
def prune_run(tmp_path_factory, jit_cache):  # jit_cache: as quant_run
    from experiments.pruning import sharing

    out = tmp_path_factory.mktemp("psharing")
    return sharing.main(["--smoke", "--out", str(out)]), out


@pytest.mark.slow
def test_prune_sharing_smoke(prune_run):
    _, out = prune_run
    doc = json.loads((out / "sharing.json").read_text())
    assert (out / "sharing.md").exists() and doc["meta"]["machine"]["jax"]
    rows = {r["method"]: r for r in doc["rows"]}
    dense, hashed = rows["dense LeNet-300-100"], rows["HashedNets 1/8"]
    # the buckets: floor(n / 8) per kernel, plus the float biases
    assert dense["params_after"] == 266_610
    assert hashed["params_after"] == 784 * 300 // 8 + 300 * 100 // 8 + 100 * 10 // 8 + 410
    mlp = next(r for n, r in rows.items() if n.startswith("equivalent-size dense"))
    assert abs(mlp["params_after"] - hashed["params_after"]) < 0.02 * hashed["params_after"]
    assert hashed["macs"] == dense["macs"] == 266_200 and mlp["macs"] < dense["macs"]
    soft = rows["soft weight-sharing (17 components, snapped)"]
    assert soft["distinct_kernel_values"] <= 17 and 0.0 <= soft["kernel_sparsity"] <= 1.0
    pruned = rows["biased hyperbolic, pruned 90% (no retraining)"]
    assert pruned["kernel_sparsity"] == int(0.9 * 266_200) / 266_200  # global, exact count
    assert pruned["params_after"] <= 266_200 - int(0.9 * 266_200) + 410
    refs = {s["ref"] for s in doc["summary"]}
    assert refs == {"[23]", "[28]", "[29]"}
    for s in doc["summary"]:
        assert SUMMARY_KEYS <= set(s) and s["data"] == "mnist5k"
    h = next(s for s in doc["summary"] if s["method"] == "HashedNets 1/8")
    assert h["latency_ms_b1"] > 0 and h["latency_ms_b1_before"] > 0

"""The distillation experiment's smoke run (toy size, one seed)."""

import json
import os

import pytest

from experiments.distillation import compare

# the persistent compilation cache (tests/conftest.py): programs that a script builds again
# (a new jitted function of the same program) load instead of compiling
pytestmark = pytest.mark.usefixtures("jit_cache")


@pytest.mark.slow
def test_distillation_experiment_smoke(tmp_path):
    rows = compare.main(["--smoke", "--out", str(tmp_path)])
    methods = {(r["pair"], r["method"].split(" (SGLD")[0]) for r in rows}
    for m in [
        "scratch",
        "KD (T=4, alpha=0.9)",
        "mimic (logit L2)",
        "FitNets (hint, then KD)",
        "neuron-selective (+labels)",
        "pseudo data (MUNGE x2, KD)",
        "Bayesian dark knowledge",
    ]:
        assert ("dense", m) in methods
    for m in ["scratch", "attention transfer (+labels)", "attention transfer + KD"]:
        assert ("conv", m) in methods
    for r in rows:
        assert 0.0 <= r["accuracy_mean"] <= 1.0
    with open(os.path.join(tmp_path, "distillation.json"), encoding="utf-8") as f:
        assert len(json.load(f)["rows"]) == len(rows)
    assert os.path.getsize(os.path.join(tmp_path, "distillation_accuracy.png")) > 0
    assert os.path.exists(os.path.join(tmp_path, "distillation.md"))

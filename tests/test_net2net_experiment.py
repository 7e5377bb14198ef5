"""Net2Net's experiment and the inference-latency benchmark run end to end at toy size."""

import json

import pytest

from experiments.benchmarks import inference_latency
from experiments.distillation import net2net

# the persistent compilation cache (tests/conftest.py): programs that a script builds again
# (a new jitted function of the same program) load instead of compiling
pytestmark = pytest.mark.usefixtures("jit_cache")


@pytest.mark.slow
def test_net2net_smoke(tmp_path):
    out = net2net.main(["--smoke", "--out", str(tmp_path)])
    (row,) = out["summary"]
    assert row["ref"] == "[49]" and row["params_after"] > row["params_before"]
    (n2n,) = [r for r in out["rows"] if r["init"] == "Net2Net"]
    # function preservation: the widened student starts with the teacher's logits
    assert float(n2n["max_logit_diff"]) < 1e-4
    assert n2n["acc_step0"].split(" ")[0] == out["rows"][0]["acc_end"].split(" ")[0]
    curves = out["meta"]["curves"]["conv"]["wider"]
    assert [s for s, _ in curves["n2n"][0]] == [s for s, _ in curves["scratch"][0]]
    assert json.loads((tmp_path / "net2net.json").read_text())["summary"][0]["ref"] == "[49]"


@pytest.mark.slow
def test_inference_latency_smoke(tmp_path):
    out = inference_latency.main(["--smoke", "--out", str(tmp_path)])
    dense, masked, bcoo = out["pruning"]
    assert dense["nonzeros"] == 266_610 and masked["nonzeros"] == bcoo["nonzeros"]
    assert abs(masked["nonzeros"] - 21_706) < 300  # the published 92% per-layer sparsities
    teacher, student = out["distillation"]
    assert (teacher["params"], student["params"]) == (266_610, 23_860)
    refs = {r["ref"] for r in out["summary"]}
    assert {"[27]", "[45]", "[44]", "[46]", "[48]", "[43]", "[47]"} <= refs
    saved = json.loads((tmp_path / "pruning" / "inference_latency.json").read_text())
    assert saved["meta"]["machine"]["cores"] >= 1
    assert out["machine"] == saved["meta"]["machine"]  # also in the printed JSON

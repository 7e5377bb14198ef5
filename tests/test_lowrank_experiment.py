"""The low-rank experiment and benchmark run end to end at toy size."""

import json

import pytest

from experiments.benchmarks import lowrank_speed
from experiments.lowrank import table2

# the persistent compilation cache (tests/conftest.py): programs that a script builds again
# (a new jitted function of the same program) load instead of compiling
pytestmark = pytest.mark.usefixtures("jit_cache")


@pytest.mark.slow
def test_table2_smoke(tmp_path):
    rows = table2.main(["--smoke", "--out", str(tmp_path), "--img", str(tmp_path)])
    methods = {(r["model"], r["method"]) for r in rows}
    assert ("lenet5", "cp") in methods and ("lenet5", "bn_lowrank (scratch)") in methods
    assert ("vgg_small", "svd") in methods
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["compression"] >= 1.0
        assert r["theoretical_speedup"] >= 1.0 or r["method"] == "dense"
    saved = json.loads((tmp_path / "table2.json").read_text())
    assert len(saved["rows"]) == len(rows) and (tmp_path / "lowrank_table2.png").exists()


@pytest.mark.slow
def test_speed_benchmark_smoke(capsys):
    out = lowrank_speed.main(["--smoke", "--only", "dense_svd,conv_cp,conv_monochromatic"])
    assert [r["kind"] for r in out["results"]] == ["dense_svd", "conv_cp", "conv_monochromatic"]
    for r in out["results"]:
        assert r["factored_macs"] < r["dense_macs"] and r["efficiency"] > 0
    assert json.loads(capsys.readouterr().out)["benchmark"] == "lowrank_speed"


def test_speed_benchmark_sweep_smoke(capsys):
    names = "dense_svd_r4,dense_svd_r8,conv_tucker2_r2,conv_tucker2_r4"
    out = lowrank_speed.main(
        ["--smoke", "--sweep", "--only", names, "--scale", "2", "--pipeline", "2"]
    )
    res = out["results"]
    assert [r["kind"] for r in res] == names.split(",") and out["sweep"]
    assert all(r["input"][0] in (16, 4) and r["pipeline"] == 2 for r in res)  # batches 8x2, 2x2
    # a higher rank costs more MACs and gives a smaller theoretical speed-up
    for lo, hi in ((res[0], res[1]), (res[2], res[3])):
        assert lo["factored_macs"] < hi["factored_macs"] < hi["dense_macs"] == lo["dense_macs"]
        assert lo["theoretical_speedup"] > hi["theoretical_speedup"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        lowrank_speed.main(["--smoke", "--pipeline", "0"])

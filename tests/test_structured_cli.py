"""``jaxcomp compress --recipe structured`` (a shipped recipe) end to end, and its bad inputs
(exit 2)."""

import json
import os

import jax
import numpy as np
import pytest

import jaxcomp as jc
from jaxcomp import cli

# the lasso run rebuilds the fixture's dense and fine-tuning programs: loaded from the persistent
# compilation cache (conftest's jit_cache) instead of compiled again
pytestmark = pytest.mark.usefixtures("jit_cache")


def _run(args, capsys):
    try:
        code = cli.main(args)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr()


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("structured"))
    args = ["compress", "--model", "lenet300", "--data", "digits", "--recipe", "structured",
            "--flops", "0.5", "--dense-epochs", "2", "--prune-epochs", "1",
            "--finetune-epochs", "1", "--out", out, "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    return out


def test_compress_writes_a_smaller_model_and_its_report(compressed, capsys):
    with open(os.path.join(compressed, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    keys = (
        "baseline_accuracy",
        "final_accuracy",
        "dense_flops",
        "flops",
        "flops_ratio",
        "params_ratio",
        "measured_speedup",
        "measured_speedup_batch1",
        "widths",
    )
    for key in keys:
        assert key in report, key
    assert report["flops_ratio"] <= 0.5 and report["flops"] < report["dense_flops"]
    assert report["params_ratio"] < 1 and isinstance(report["measured_speedup"], float)
    # the smaller model from the artifact computes what the masked model trained
    assert report["final_accuracy"] == report["stages"][-2]["test_accuracy"]
    widths = {r["layer"]: r for r in report["widths"]}
    assert widths["Dense_0"]["width"] < widths["Dense_0"]["dense_width"]
    assert widths["Dense_2"]["width"] == 10  # the classes stay
    for name in ("model.jcz", "report.md", "widths.png"):
        assert os.path.getsize(os.path.join(compressed, name)) > 0
    code, out = _run(["evaluate", os.path.join(compressed, "model.jcz"), "--data", "digits"],
                     capsys)  # fmt: skip
    assert code == 0
    ev = json.loads(out.out)
    assert ev["test_accuracy"] == pytest.approx(report["final_accuracy"])
    assert ev["params"] == report["stored_params"] < report["params"]


def test_artifact_with_widths_that_do_not_fit_is_exit_2(compressed, tmp_path, capsys):
    tree, meta = jc.encode.load(os.path.join(compressed, "model.jcz"))
    node = tree["params"]["Dense_0"]["bias"]
    keep = np.asarray(node.keep[0]).copy()
    keep[np.flatnonzero(keep)[0]] = False  # the bias loses one more unit than its kernel
    values = np.asarray(node.values)[1:]
    tree["params"]["Dense_0"]["bias"] = jc.structured.ChannelPruned(
        values, (jax.numpy.asarray(keep),)
    )
    bad = str(tmp_path / "bad.jcz")
    jc.encode.save(bad, tree, metadata=meta)
    code, out = _run(["evaluate", bad, "--data", "digits"], capsys)
    assert code == 2 and "same channels" in out.err and len(out.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--flops", "1.0"], "must be in [0, 1)"),
        (["--flops", "0.9999"], "cannot be met"),
        (["--criterion", "bn"], "batch norm"),
        (["--sparsity", "Dense=0.5"], "stage 1 (prune): sparsity: unknown key"),
    ],
)
def test_bad_arguments_exit_2(extra, message, tmp_path, capsys):
    args = ["compress", "--model", "lenet300", "--data", "digits", "--recipe", "structured",
            "--out", str(tmp_path), "--no-progress", *extra]  # fmt: skip
    code, out = _run(args, capsys)
    assert code == 2 and message in out.err, out.err


def test_lasso_criterion_end_to_end(tmp_path, capsys):
    # the lasso selection (and its least-squares refit) in one shot, without a pruning epoch
    # (the fixture's run trains one)
    args = ["compress", "--model", "lenet300", "--data", "digits", "--recipe", "structured",
            "--criterion", "lasso", "--flops", "0.5", "--dense-epochs", "1",
            "--prune-epochs", "0", "--finetune-epochs", "1", "--out", str(tmp_path),
            "--no-progress"]  # fmt: skip
    code, _ = _run(args, capsys)
    assert code == 0
    with open(tmp_path / "report.json", encoding="utf-8") as f:
        report = json.load(f)
    assert report["config"]["stages"][0]["criterion"] == "lasso"
    assert report["flops_ratio"] <= 0.5
    assert report["final_accuracy"] == report["stages"][-2]["test_accuracy"]

"""The results table (``python -m experiments.summary``): every public method is listed in it,
every row it names exists, and the committed table is what the script writes now."""

from __future__ import annotations

import inspect
import json
import os

import pytest

import jaxcomp as jc
from experiments import summary

# a public method: a transform factory, a distillation term or loss, or a regularizer (a factory
# of ``params -> scalar`` penalties), in the packages that hold the survey's methods
NAMESPACES = ("prune", "quant", "lowrank", "distill", "structured")
RETURNS = ("Transform", "Term", "BayesianDarkKnowledge")


def public_methods() -> list[str]:
    out = []
    for ns in NAMESPACES:
        mod = getattr(jc, ns)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not inspect.isfunction(obj):
                continue
            ret = inspect.signature(obj).return_annotation
            ret = getattr(ret, "__name__", str(ret))
            penalty = ret.startswith("Callable[") and ret.endswith("jax.Array]")
            if ret in RETURNS or penalty or name.endswith(("_penalty", "_loss")):
                out.append(f"jc.{ns}.{name}")
    return out


@pytest.fixture(scope="module")
def committed() -> str:
    with open(os.path.join(summary.RESULTS, "summary.md"), encoding="utf-8") as f:
        return f.read()


def test_every_public_method_is_in_the_table(committed):
    methods = public_methods()
    # the enumeration itself finds the known methods of each package
    for name in ("jc.prune.magnitude", "jc.quant.kmeans", "jc.lowrank.svd", "jc.distill.kd_term",
                 "jc.structured.ssl_penalty", "jc.prune.biased_decay"):  # fmt: skip
        assert name in methods
    assert len(methods) >= 50
    coverage = committed.split("## Results")[0]
    missing = [m for m in methods if f"`{m}`" not in coverage]
    assert not missing, f"public methods that no row of survey_rows.toml names: {missing}"


def test_every_named_api_exists():
    rows, extra = summary.survey_rows()
    assert len(rows) == 61  # the survey map's rows
    assert len({r["ref"] for r in rows + extra}) == len(rows) + len(extra)
    for r in rows + extra:
        assert r["family"] in summary.FAMILIES, r
        for name in r["api"]:
            obj = jc
            for part in name.split(".")[1:]:
                obj = getattr(obj, part)  # AttributeError names a stale row


def test_committed_table_is_regenerated_identically(committed):
    md, data = summary.build()
    assert md == committed, "docs/results/summary.md is stale: run python -m experiments.summary"
    with open(os.path.join(summary.RESULTS, "summary.json"), encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(data))
    listed = md.split("## Results")[0]
    assert f"without: **{data['counts']['missing']}**" in listed
    for ref in data["missing"]:  # rows without a result are listed, not hidden
        assert f"| {ref} |" in listed


def test_convention_rows_are_read_and_checked(tmp_path):
    row = {"ref": "[28]", "method": "HashedNets 1/8", "model": "lenet300", "data": "mnist5k",
           "acc_before": 0.95, "acc_after": 0.93, "acc_after_std": 0.004, "seeds": 3,
           "params_before": 266610, "params_after": 33327, "command": "python -m x"}  # fmt: skip
    (tmp_path / "x.json").write_text(json.dumps({"summary": [row]}))
    md, data = summary.build(str(tmp_path))
    assert "[28]" not in data["missing"] and data["counts"]["result_rows"] == 1
    assert "| 0.930 ± 0.004 (3) | 266,610 → 33,327 (8.0x) |" in md
    (tmp_path / "x.json").write_text(json.dumps({"summary": [row | {"ref": "[99]"}]}))
    with pytest.raises(ValueError, match=r"\[99\]"):
        summary.build(str(tmp_path))
    (tmp_path / "x.json").write_text(json.dumps({"summary": [row | {"accuracy": 1.0}]}))
    with pytest.raises(ValueError, match="accuracy"):
        summary.build(str(tmp_path))

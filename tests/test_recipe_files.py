"""Recipe files: the four families composed from one file end to end, a killed run resumed bit for
bit, bad recipes as one-line errors, budgets, the comparison of runs, an NNX model.

The runs are tiny (LeNet-300-100 on the 8x8 digits, a few dozen steps a stage). They share one
persistent compilation cache (conftest's ``jit_cache`` and ``subprocess_env``): the killed command
and the resumed run load the programs the first run compiled instead of compiling them again;
every run still traces, runs and computes everything.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import hypothesis.strategies as hs
import jax
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import settings

import jaxcomp as jc
from jaxcomp import cli
from jaxcomp import recipes
from jaxcomp.errors import RecipeError

pytestmark = pytest.mark.usefixtures("jit_cache")

# the four families in one file: distillation from the dense model, low-rank factors, the
# factors pruned, what survived shared by k-means (Dense_1's factors), Huffman coding
RECIPE = """
name = "toy-four"
description = "the four families on LeNet-300-100 and the digits"

[model]
name = "lenet300"

[data]
name = "DIGITS_NPZ"

[training]
epochs = 1
batch_size = 64

[measure]
latency_repeats = 1
latency_batches = [1]   # the default, [1, 128], is tests/test_recipes.py's

[[stages]]
type = "distill"
teacher = "dense"
terms = [{ kind = "kd", temperature = 4.0, alpha = 0.9 }]

[[stages]]
type = "lowrank"
method = "svd"
rank = [["Dense_0", 16], ["Dense_1", 16], ["Dense_2", 8]]

[[stages]]
type = "prune"
sparsity = 0.5
scope = "global"    # one mask over all six factors
mask_every = 4
epochs = 2

[[stages]]
type = "quant"
scheme = "kmeans"
bits = 3
where = "Dense_1/kernel"

[[stages]]
type = "encode"
coder = "huffman"
"""


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """The digits as an .npz: the killed command reads arrays instead of importing scikit-learn."""
    d = jc.data.load("digits")
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test)
    return str(path)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory, digits_npz):
    path = tmp_path_factory.mktemp("recipe") / "toy-four.toml"
    path.write_text(RECIPE.replace("DIGITS_NPZ", digits_npz))
    return path


@pytest.fixture(scope="module")
def compressed(jit_cache, recipe_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "four"
    args = ["compress", "--recipe", str(recipe_file), "--out", str(out), "--no-progress"]
    assert cli.main(args) == 0
    return out


def _report(out):
    return json.loads((out / "report.json").read_text())


def test_shipped_recipes_are_listed_and_check(capsys):
    assert cli.main(["recipes"]) == 0
    listed = capsys.readouterr().out
    for name in ("deep-compression", "structured", "lowrank-prune-quant-kd", "w8a8-kd"):
        assert name in listed
    for name, info in recipes.shipped().items():
        for version in info["models"]:
            rec = recipes.load_recipe(name, model=None if version == "default" else version)
            assert rec.stages[-1].type == "encode" and rec.name == name
    assert cli.main(["recipes", "--show", "lowrank-prune-quant-kd"]) == 0
    assert 'method = "svd"' in capsys.readouterr().out
    lrpq = recipes.load_recipe("lowrank-prune-quant-kd", model="lenet5")
    assert [s.type for s in lrpq.stages] == ["distill", "lowrank", "prune", "finetune", "quant",
                                             "encode"]  # fmt: skip
    assert all(b <= 4 for _, b in lrpq.stages[4].args["bits"])


def test_recipe_file_end_to_end(compressed, digits_npz, capsys):
    r = _report(compressed)
    # the keys of the Deep Compression report, and FLOPs and latency against the dense model
    for key in ("baseline_accuracy", "final_accuracy", "dense_bytes", "compressed_bytes",
                "compression_ratio", "params", "nonzeros", "layers", "stages", "bytes", "flops",
                "dense_flops", "latency_ms"):  # fmt: skip
        assert key in r, key
    assert set(r["latency_ms"]["batch_1"]) == {"dense", "compressed"}
    assert r["compressed_bytes"] == (compressed / "model.jcz").stat().st_size
    assert [s["type"] for s in r["stages"]] == ["dense", "distill", "lowrank", "prune", "quant",
                                                "encode"]  # fmt: skip
    for s in r["stages"]:
        assert {"test_accuracy", "bytes", "flops"} <= set(s)
    # the factors run as two layers: r (m + n) multiply-adds a layer instead of m n
    assert r["flops"] == 16 * (64 + 300) + 16 * (300 + 100) + 8 * (100 + 10) < r["dense_flops"]
    for name in ("report.md", "stages.png", "layers.png"):
        assert (compressed / name).stat().st_size > 0
    # composed: the pruner pruned exactly half of the factors, k-means shared what survived
    tree, meta = recipes.read_artifact(str(compressed / "model.jcz"))
    assert meta["recipe"] == "toy-four" and meta["model"] == "lenet300"
    factors = [np.asarray(jc.to_dense(getattr(tree["params"][layer]["kernel"], f)))
               for layer in ("Dense_0", "Dense_1", "Dense_2") for f in ("u", "v")]  # fmt: skip
    sizes = 16 * (64 + 300) + 16 * (300 + 100) + 8 * (100 + 10)
    assert sum(np.sum(f == 0) for f in factors) == sizes // 2
    u, v = factors[2], factors[3]  # Dense_1's, shared
    assert len(np.unique(u[u != 0])) <= 2**3 - 1 and len(np.unique(v[v != 0])) <= 2**3 - 1
    # the artifact, run by `jaxcomp evaluate`, is the model the report measured
    assert cli.main(["evaluate", str(compressed / "model.jcz"), "--data", digits_npz,
                     "--latency", "--repeats", "1"]) == 0  # fmt: skip
    ev = json.loads(capsys.readouterr().out)
    assert ev["test_accuracy"] == r["final_accuracy"] and ev["flops"] == r["flops"]
    assert set(ev["latency_ms"]) == {"batch_1", "batch_128"}


def test_killed_run_resumes_bit_for_bit(compressed, recipe_file, subprocess_env, tmp_path, capsys):
    out = tmp_path / "killed"
    args = ["compress", "--recipe", str(recipe_file), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxcomp.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=subprocess_env,
    )
    ckdir = out / "stages" / "03-prune" / "checkpoints"  # the pruning stage, after its 1st epoch
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckdir.is_dir() and any(d.isdigit() for d in os.listdir(ckdir)):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "model.jcz").exists()
    # without --resume: refused, nothing changed
    before = sorted(p.name for p in ckdir.iterdir())
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2 and "--resume" in capsys.readouterr().err
    assert sorted(p.name for p in ckdir.iterdir()) == before
    assert cli.main([*args, "--resume"]) == 0
    assert (out / "model.jcz").read_bytes() == (compressed / "model.jcz").read_bytes()
    assert _report(out)["artifact_sha256"] == _report(compressed)["artifact_sha256"]


def test_compare_table_json_and_plot(compressed, tmp_path, capsys):
    # a second run that is smaller and less accurate, and a third that is dominated
    runs = []
    for name, dbytes, dacc in (("smaller", -1000, -0.05), ("dominated", +10, -0.01)):
        d = tmp_path / name
        d.mkdir()
        r = _report(compressed)
        r["compressed_bytes"] += dbytes
        r["final_accuracy"] += dacc
        (d / "report.json").write_text(json.dumps(r))
        runs.append(str(d))
    plot = tmp_path / "compare.png"
    dirs = [str(compressed), *runs]
    assert cli.main(["compare", *dirs, "--format", "json", "--plot", str(plot)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in rows] == ["four", "smaller", "dominated"]
    assert [r["front_size"] for r in rows] == [True, True, False]
    assert plot.stat().st_size > 0
    assert cli.main(["compare", *dirs, "--plot", str(plot)]) == 0
    table = capsys.readouterr().out
    assert table.count("\n") == 2 + 3 and "| smaller |" in table
    with pytest.raises(SystemExit):
        cli.main(["compare", str(tmp_path / "nowhere")])


@given(hs.lists(hs.tuples(hs.integers(0, 5), hs.integers(0, 5)), min_size=1, max_size=12))
@settings(max_examples=60, deadline=None)
def test_pareto_front(points):
    front = recipes.pareto(points)
    dominates = lambda a, b: a[0] <= b[0] and a[1] >= b[1] and a != b
    on = [p for p, f in zip(points, front, strict=True) if f]
    assert on  # someone is always on the front
    assert not any(dominates(a, b) for a in on for b in on)
    for p, f in zip(points, front, strict=True):  # every run off the front has one on it above
        assert f or any(dominates(q, p) for q in on)


@given(hs.floats(0.05, 3.9), hs.integers(1, 10))
@settings(max_examples=40, deadline=None)
def test_budget_search_takes_the_weakest_setting_that_meets(budget, steps):
    from jaxcomp.recipes._budget import search

    lo, hi = 1 / 32, 4.0
    scale, predicted, tried = search(lambda s: s, recipes.Budget("bytes", budget), min_scale=lo,
                                     max_scale=hi, steps=steps)  # fmt: skip
    assert predicted == scale <= budget
    # the bracket left after `steps` halvings (in log scale) of [lo, 1] or [1, hi]
    width = (1 / lo if budget < 1 else hi) ** (0.5**steps)
    assert scale * width >= budget * (1 - 1e-9)
    assert all(v == s for s, v in tried)


def test_budget_search_skips_settings_the_recipe_refuses():
    from jaxcomp.recipes._budget import search

    def predict(s):  # below 0.2 the recipe refuses (k-means finds too few weights to cluster)
        if s < 0.2:
            raise RecipeError("too strong")
        return 100 * s

    scale, v, tried = search(predict, recipes.Budget("bytes", 30.0), min_scale=1 / 32,
                             max_scale=4.0, steps=8)  # fmt: skip
    assert 0.29 < scale <= 0.3 and v == 100 * scale
    assert any(t == float("inf") for _, t in tried)
    scale, v, _ = search(predict, recipes.Budget("bytes", 10.0), min_scale=1 / 32, max_scale=4.0,
                         steps=8)  # fmt: skip
    assert 0.2 <= scale < 0.21 and v > 10.0  # the strongest accepted setting, not met


def test_budget_scales_the_knob():
    from jaxcomp.recipes._budget import _scale_value

    assert _scale_value("sparsity", 0.9, 0.5) == pytest.approx(0.95)  # keeps half as much
    assert _scale_value("sparsity", [["Dense_0", 0.8]], 2.0) == [["Dense_0", pytest.approx(0.6)]]
    assert _scale_value("rank", 16, 0.5) == 8 and _scale_value("bits", 4, 0.75) == 3
    assert _scale_value("energy", 0.9, 2.0) == pytest.approx(0.95)
    assert recipes.parse_budget("latency_ms@1=0.5") == recipes.Budget("latency_ms", 0.5, 1)
    assert recipes.parse_budget("latency_ms=2").batch == 128
    for bad in ("bytes", "size=3", "bytes=-1", "flops@1=5", "bytes=x"):
        with pytest.raises(RecipeError, match="--budget"):
            recipes.parse_budget(bad)


def _stage(**kw):
    return {"type": "prune", "sparsity": 0.5, **kw}


BAD = [
    # (recipe changes, the words the one-line error must hold)
    ({"stages": [{"type": "pruning"}]}, "stage 1 (pruning): type: must be one of"),
    ({"stages": [_stage(sparsty=0.5)]}, "stage 1 (prune): sparsty: unknown key; allowed:"),
    ({"stages": [{"type": "quant", "scheme": "kmeans", "bits": 1}]}, "stage 1 (quant): kmeans:"),
    ({"stages": [{"type": "quant", "scheme": "uniform", "estimator": "lsqq"}]},
     "stage 1 (quant): estimator:"),
    ({"stages": [{"type": "encode"}, _stage()]}, "stage 1 (encode): encode must be the last"),
    ({"optimiser": {}, "stages": [_stage()]}, "recipe: optimiser: unknown key"),
    ({"training": {"lr": -1}, "stages": [_stage()]}, "[training]: lr: must be a number > 0"),
    ({"stages": [{"type": "distill", "terms": [{"kind": "kd", "temp": 2}]}]},
     "stage 1 (distill): terms[1].temp: unknown key"),
    ({"stages": [{"type": "distill", "terms": [{"kind": "hint", "student": "Dense_9",
                                                 "teacher": "Dense_0"}]}]},
     "stage 1 (distill): terms: "),
    # pruned zeros cannot survive a factorization after them
    ({"stages": [_stage(where="Dense_0/kernel"),
                 {"type": "lowrank", "method": "svd", "rank": 8, "where": "Dense_0/kernel"}]},
     "stage 2 (lowrank): cannot compose"),
    ({"stages": [{"type": "lowrank", "method": "svd", "rank": 8},
                 {"type": "prune", "kind": "structured", "flops": 0.5}]},
     "stage 2 (prune): kind: structured pruning traces the dense model"),
]  # fmt: skip


def _toml(value):
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def _write(path, changes):
    src = {"model": {"name": "lenet300"}, "data": {"name": "digits"},
           "training": {"epochs": 1}, **changes}  # fmt: skip
    lines = []
    for k, v in src.items():
        if k == "stages":
            for st in v:
                lines += ["[[stages]]", *(f"{a} = {_toml(b)}" for a, b in st.items())]
        elif isinstance(v, dict):
            lines += [f"[{k}]", *(f"{a} = {_toml(b)}" for a, b in v.items())]
        else:
            lines.insert(0, f"{k} = {_toml(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def bad(capsys, tmp_path):
    """Runs ``jaxcomp compress`` on a recipe that must fail: exit 2, one line naming the stage and
    key, and nothing written to --out."""

    def bad(changes, needle, *extra):
        recipe = _write(tmp_path / "bad.toml", changes) if changes is not None else None
        out = tmp_path / "out"
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            cli.main(["compress", *(["--recipe", str(recipe)] if recipe else []),
                      "--out", str(out), "--no-progress", *extra])  # fmt: skip
        captured = capsys.readouterr()
        lines = [ln for ln in captured.err.splitlines() if ln.strip()]
        assert info.value.code == 2 and len(lines) == 1, captured.err[-2000:]
        assert needle in lines[0], lines[0]
        assert not out.exists()

    return bad


@pytest.mark.parametrize("changes,needle", BAD)
def test_bad_recipes_are_one_line_and_write_nothing(bad, changes, needle):
    bad(changes, needle)


def test_bad_teacher_toml_and_budget(bad, tmp_path):
    # a teacher checkpoint of another model (three classes: Dense_2 has other shapes)
    tdir = tmp_path / "teacher"
    teacher = jc.models.get("lenet300", num_classes=3)
    v = jc.models.init(teacher, jax.random.key(0), (8, 8, 1))
    state = jc.train.TrainState.create(apply_fn=teacher.apply, variables=v, tx=optax.adam(1e-3),
                                       key=jax.random.key(0))  # fmt: skip
    ck = jc.train.Checkpointer(str(tdir / "checkpoints"))
    ck.save(state)
    ck.close()
    bad({"stages": [{"type": "distill", "teacher": str(tdir),
                     "terms": [{"kind": "kd"}]}, _stage()]},
        "stage 1 (distill): teacher:")  # fmt: skip
    (tmp_path / "broken.toml").write_text("[model\nname = 'lenet300'\n")
    bad(None, "not valid TOML", "--recipe", str(tmp_path / "broken.toml"))
    bad({"stages": [_stage(), {"type": "encode"}]}, "--budget bytes=10: cannot be met",
        "--budget", "bytes=10")  # fmt: skip
    bad(None, "no prune stage", "--recipe", "w8a8-kd", "--sparsity", "Dense=0.5",
        "--model", "lenet300", "--data", "digits")  # fmt: skip


def test_deploy_runs_int8_codes_with_8_bit_inputs_in_integer_arithmetic(tiny_net):
    # what a W8A8 recipe's artifact holds: int8 kernel codes and calibrated 8-bit input ranges
    x = np.random.default_rng(0).random((4, 6, 6, 2), dtype=np.float32)
    v = tiny_net.init(jax.random.key(0), x[:1])
    t = jc.quant.fake_quant(bits=8, per_channel=True)
    c, s = jax.jit(t.init)(v["params"])
    params, final = jax.jit(lambda c, s: (t.apply(c, s), t.finalize(c, s)))(c, s)
    act = {"rules": [[".*", 8]], "symmetric": False}
    qapply = jc.quant.activations(tiny_net.apply, [(".*", 8)])
    stats = jc.quant.calibrate(qapply, {"params": params}, [x])["quant_stats"]
    variables = {"params": final, "quant_stats": stats}
    fast, fast_vars = recipes.deploy(tiny_net.apply, variables, (6, 6, 2), activations=act)
    # the Dense layers' products in int8 x int8 -> int32 (the convolution's integer product is
    # jaxcomp.quant's own business: on CPU it may run as exact float arithmetic)
    assert str(jax.make_jaxpr(fast)(fast_vars, x)).count("preferred_element_type=int32") >= 2
    want = jax.jit(qapply)({"params": params, "quant_stats": stats}, x)
    np.testing.assert_allclose(jax.jit(fast)(fast_vars, x), want, rtol=1e-4, atol=1e-4)
    # without quantized inputs the codes are decoded once, at load, and run in float
    fast, fast_vars = recipes.deploy(tiny_net.apply, {"params": final}, (6, 6, 2))
    assert all(isinstance(a, jax.Array | np.ndarray) for a in jax.tree.leaves(
        fast_vars, is_leaf=jc.is_compressed))  # fmt: skip


def test_nnx_model_with_a_budget(jit_cache, tmp_path, capsys):
    digits = jc.data.load("digits")
    model = jc.models.get("lenet300", num_classes=10, api="nnx", key=jax.random.key(0),
                          input_shape=digits.input_shape)  # fmt: skip
    rec = {
        "name": "nnx-budget",
        "model": {"name": "lenet300", "api": "nnx"},
        "training": {"epochs": 0},
        "measure": {"latency_repeats": 1, "latency_batches": [1]},
        "budget": {"steps": 2},
        "stages": [
            {"type": "prune", "sparsity": 0.5},
        ],
    }
    dense = 4 * jc.analysis.param_count(jc.adapt.functional(model)[1]["params"])
    budget = dense // 16
    res = recipes.run(rec, model=model, data=digits, out=tmp_path / "o", budget=f"bytes={budget}",
                      progress=False)  # fmt: skip
    b = res.report["budget"]
    # nothing trains here, so the prediction (a dry run of the stages) is the artifact's size
    assert b["met"] and b["measured"] == b["predicted"] == res.report["compressed_bytes"] <= budget
    assert b["knob"] == "stage 1 (prune).sparsity" and b["setting"] > 0.5
    assert b["aimed_at"] == pytest.approx(0.95 * budget) and b["predicted"] <= b["aimed_at"]
    assert any(v > b["aimed_at"] for s, v in b["tried"] if s > b["scale"])  # weaker did not fit
    assert res.report["api"] == "nnx" and res.report["model"] == "lenet300"
    tree, _ = recipes.read_artifact(res.artifact)
    kept = 1 - float(b["setting"])
    assert np.sum(np.asarray(tree["params"]["Dense_0"]["kernel"]) != 0) == round(kept * 64 * 300)
    # the artifact evaluates as the NNX twin (`jaxcomp evaluate` rebuilds it by name)
    assert cli.main(["evaluate", str(tmp_path / "o" / "model.jcz"), "--data", "digits"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["api"] == "nnx" and ev["test_accuracy"] == res.report["final_accuracy"]
    shutil.rmtree(tmp_path / "o")

"""Deep Compression as the shipped recipe: exact sparsity, shared values, bit-exact artifact, and
the command with the former recipe's flags."""

import json

import jax
import numpy as np
import pytest

import jaxcomp as jc
from jaxcomp import cli
from jaxcomp import recipes
from jaxcomp.errors import RecipeError

# runs that rebuild the same programs (the commands below, the experiment's smoke) load them from
# the persistent compilation cache (conftest's jit_cache) instead of compiling them again
pytestmark = pytest.mark.usefixtures("jit_cache")

# the shipped deep-compression recipe (lenet300), at toy size on the digits: the sizes of the
# experiment's smoke (experiments/deep_compression/run.py --smoke), whose run below then loads
# this run's programs from the persistent compilation cache (conftest's jit_cache)
TOY = recipes.load_recipe(
    "deep-compression",
    model="lenet300",
    changes={
        "data.name": "digits",
        "training.epochs": 1,
        "stages.1.epochs": 1,
        "stages.2.epochs": 0,  # the quant stage's epoch trains with the mask (a fine-tuning
        # stage that trains: tests/test_structured_cli.py's recipe)
        "stages.3.epochs": 1,
        "measure.latency_repeats": 1,
    },
)
SPARSITY = {"Dense_0": 0.95, "Dense_1": 0.93, "Dense_2": 0.8}  # the shipped recipe's
BITS = {"Dense_0": 3, "Dense_1": 3, "Dense_2": 5}


@pytest.fixture(scope="module")
def digits():
    return jc.data.load("digits")


@pytest.fixture(scope="module")
def run(digits):
    model = jc.models.get("lenet300", num_classes=10)
    return model, recipes.run(TOY, model=model, data=digits, progress=False)


def test_exact_sparsity_and_shared_values(run):
    _, res = run
    variables, _ = recipes.load_artifact(res.artifact)
    p = variables["params"]
    for layer, s in SPARSITY.items():
        w, bits = p[layer]["kernel"], BITS[layer]
        assert np.sum(w == 0) == int(np.floor(s * w.size))  # exact count, kept through sharing
        nonzero_values = np.unique(w[w != 0])
        assert len(nonzero_values) <= 2**bits - 1  # one codebook entry is the pruned zero


def test_artifact_is_bit_exact_and_accuracy_is_of_the_bytes(run, digits):
    model, res = run
    tree, meta = jc.encode.unpack(res.artifact)
    for a, b in zip(
        jax.tree.leaves(tree["params"]), jax.tree.leaves(res.final_params), strict=True
    ):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert meta["recipe"] == "deep-compression"
    variables, _ = recipes.load_artifact(res.artifact)
    logits = model.apply(variables, digits.x_test)
    acc = int(np.sum(np.argmax(logits, -1) == digits.y_test)) / len(digits.y_test)
    report = res.report
    assert acc == pytest.approx(report["final_accuracy"], abs=1e-9)
    stages = report["stages"]
    assert [s["type"] for s in stages] == ["dense", "prune", "finetune", "quant", "encode"]
    assert stages[-1]["bytes"] == len(res.artifact) == report["compressed_bytes"]
    assert report["compression_ratio"] == pytest.approx(stages[0]["bytes"] / len(res.artifact))
    # run the fast way: the codebooks decoded once, at load (not in every forward pass)
    assert all(isinstance(x, jax.Array | np.ndarray) for x in jax.tree.leaves(
        res.variables, is_leaf=jc.is_compressed))  # fmt: skip


def test_bad_recipes():
    with pytest.raises(RecipeError, match="sparsity"):
        TOY.replace({"stages.1.sparsity": [["Dense", 1.0]]})
    with pytest.raises(RecipeError, match="bits"):
        TOY.replace({"stages.3.bits": [["Dense", 0]]})
    with pytest.raises(RecipeError, match="coder"):
        TOY.replace({"stages.4.coder": "gzip"})


def test_rule_that_misses_a_kernel(digits):
    bad = TOY.replace({"stages.1.sparsity": [["Dense_0", 0.5]]})
    with pytest.raises(RecipeError, match="Dense_1"):
        recipes.run(bad, data=digits, progress=False)


def test_compress_and_evaluate_commands(tmp_path, capsys):
    # the three commands run in this process (cli.main, as ``python -m jaxcomp.cli`` runs it;
    # tests/test_cli.py runs commands in processes of their own): no JAX import per command, and
    # with the fixture's sparsity, bits and epochs its programs load from the persistent
    # compilation cache; the centroids are not fine-tuned (--quant-epochs 0: the fixture's recipe
    # run trains them)
    def cli_main(args):
        assert cli.main(args) == 0
        return capsys.readouterr().out

    cli_main(["train", "--model", "lenet300", "--data", "digits", "--epochs", "1",
              "--out", str(tmp_path / "t"), "--no-progress"])  # fmt: skip
    out = tmp_path / "c"
    cli_main(["compress", "--model", "lenet300", "--data", "digits", "--out", str(out),
              "--init", str(tmp_path / "t"), "--prune-epochs", "1", "--retrain-epochs", "0",
              "--quant-epochs", "0", "--sparsity", "Dense_0=0.95,Dense_1=0.93,Dense=0.8",
              "--bits", "Dense_2=5,Dense=3",
              "--coder", "ans", "--no-progress"])  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    for key in ("baseline_accuracy", "final_accuracy", "dense_bytes", "compressed_bytes",
                "compression_ratio", "layers", "flops", "latency_ms"):  # fmt: skip
        assert key in report
    for batch in ("batch_1", "batch_128"):  # timed against the dense model in one run
        assert set(report["latency_ms"][batch]) == {"dense", "compressed"}
    assert report["compressed_bytes"] == (out / "model.jcz").stat().st_size
    assert report["dense_bytes"] == 4 * report["params"]
    assert [row["layer"] for row in report["layers"]] == ["Dense_0", "Dense_1", "Dense_2"]
    assert report["config"]["stages"][-1]["coder"] == "ans"
    assert report["config"]["stages"][0]["sparsity"] == [["Dense_0", 0.95], ["Dense_1", 0.93],
                                                         ["Dense", 0.8]]  # fmt: skip
    assert report["config"]["stages"][2]["bits"] == [["Dense_2", 5], ["Dense", 3]]
    assert (out / "stages.png").stat().st_size > 0 and (out / "layers.png").stat().st_size > 0
    assert "| Dense_0 |" in (out / "report.md").read_text()
    ev = cli_main(["evaluate", str(out / "model.jcz"), "--data", "digits"])
    assert json.loads(ev)["test_accuracy"] == pytest.approx(report["final_accuracy"])
    # the dense baseline is the --init checkpoint's own accuracy
    trained = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["baseline_accuracy"] == pytest.approx(trained["test_accuracy"])


def test_compress_and_evaluate_errors(tmp_path, capsys):
    def bad(args, needle):  # in this process (tests/test_cli.py runs one in a process of its own)
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            cli.main(args)
        stderr = capsys.readouterr().err
        assert info.value.code == 2 and "Traceback" not in stderr, stderr[-2000:]
        assert needle in stderr

    bad(["compress", "--model", "lenet300", "--data", "digits", "--out", str(tmp_path),
         "--sparsity", "Dense_0"], "regex=value")  # fmt: skip
    bad(["compress", "--model", "resnet20", "--data", "digits", "--out", str(tmp_path)],
        "--sparsity")  # fmt: skip
    bad(["compress", "--model", "lenet300", "--data", "digits", "--out", str(tmp_path),
         "--init", str(tmp_path / "nowhere")], "checkpoints")  # fmt: skip
    bad(["evaluate", str(tmp_path / "missing.jcz"), "--data", "digits"], "no such file")
    junk = tmp_path / "junk.jcz"
    junk.write_bytes(b"JCZ\x00" + b"\x01" * 40)
    bad(["evaluate", str(junk), "--data", "digits"], "junk.jcz")


def test_experiment_smoke(tmp_path):
    from experiments.deep_compression import run

    rows = run.main(["--smoke", "--out", str(tmp_path), "--models", "lenet300"])
    assert rows[0]["model"] == "lenet300" and rows[0]["ratio"] > 1
    assert (tmp_path / "summary.md").read_text().count("| lenet300 |") == 1


def test_recipes_experiment_smoke(tmp_path):
    # experiments/recipes/run.py at toy size: two seeds of deep-compression from `jaxcomp train`
    # through `jaxcomp compress --init`, timed together, compared and written; the module's
    # fixture compiled its programs (the same sizes)
    from experiments.recipes import run

    rows = run.main(["--smoke", "--out", str(tmp_path)])
    assert [r["recipe"] for r in rows] == ["dense", "deep-compression"]
    dense, dc = rows
    assert dense["seeds"] == dc["seeds"] == 2 and " ± " in dc["accuracy"]  # the spread
    assert dc["ratio"] > 1 and dense["speed-up b128"] == 1.0 and dc["ms b1 together"] > 0
    runs = tmp_path / "runs"
    for seed in (0, 1):
        for name in ("dense", "deep-compression"):
            assert (runs / f"{name}-lenet300-s{seed}" / "report.json").is_file()
    saved = json.loads((tmp_path / "targets_lenet300.json").read_text())
    assert saved["seeds"] == [0, 1] and set(saved["reports"]["deep-compression"]) == {"0", "1"}
    assert [r["run"] for r in saved["compare"]] == ["deep-compression"]
    assert "| deep-compression |" in (tmp_path / "targets_lenet300.md").read_text()
    assert (tmp_path / "compare.png").stat().st_size > 0

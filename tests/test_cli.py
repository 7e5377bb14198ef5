"""The ``jaxcomp`` command: training end to end, crash and resume, one-line errors."""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import jaxcomp as jc
from jaxcomp import cli
from jaxcomp.train import Checkpointer

CMD = [sys.executable, "-m", "jaxcomp.cli"]


def _run(args, **kw):
    return subprocess.run(CMD + args, capture_output=True, text=True, timeout=300, **kw)


def _train_args(data, out, epochs, *extra):
    return ["train", "--model", "lenet300", "--data", str(data), "--epochs", str(epochs),
            "--batch-size", "32", "--checkpoint-every", "20", "--out", str(out), "--no-progress",
            *extra]  # fmt: skip


def test_sigkill_then_resume_is_bit_identical(tmp_path, subprocess_env, jit_cache, capsys):
    epochs = 8  # 44 steps an epoch on digits: long enough to kill mid-run (after step 100 of 352)
    # the digits as an .npz: each command reads the arrays instead of importing scikit-learn
    digits = jc.data.load("digits")
    data = tmp_path / "digits.npz"
    np.savez(data, x_train=digits.x_train, y_train=digits.y_train, x_test=digits.x_test,
             y_test=digits.y_test)  # fmt: skip
    train_args = functools.partial(_train_args, data)
    # the uninterrupted reference, in this process (cli.main, as ``python -m jaxcomp.cli`` runs
    # it), checkpoints once, at the end (how often a run saves does not change what it computes);
    # its programs go to the persistent compilation cache (jit_cache) that the killed command
    # loads them from (subprocess_env)
    assert cli.main(train_args(tmp_path / "full", epochs, "--checkpoint-every", "1000")) == 0
    report = json.loads((tmp_path / "full" / "report.json").read_text())
    assert report["steps"] == epochs * (1438 // 32)
    assert report["test_accuracy"] > 0.9

    # the command in a process of its own, killed with SIGKILL mid-run
    out = tmp_path / "killed"
    proc = subprocess.Popen(CMD + train_args(out, epochs), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=subprocess_env)  # fmt: skip
    ckdir = out / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        steps = [int(d) for d in os.listdir(ckdir) if d.isdigit()] if ckdir.exists() else []
        if steps and max(steps) >= 100:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "report.json").exists()
    latest = Checkpointer(ckdir).latest_step()
    assert latest is not None and latest < report["steps"]

    # without --resume: refused before any work, nothing lost; in a real process, as the shell
    # sees it: exit status 2 and one line on stderr (the in-process cases are the test below's)
    assert "--resume" in _bad_process(train_args(out, epochs))
    assert Checkpointer(ckdir).latest_step() == latest

    # resumed from what the killed process left on disk (in this process)
    capsys.readouterr()
    assert cli.main(train_args(out, epochs, "--resume")) == 0
    r2 = json.loads((out / "report.json").read_text())
    assert r2["params_sha256"] == report["params_sha256"]
    assert r2["test_accuracy"] == report["test_accuracy"]


def _one_line_error(returncode, stderr):
    assert returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxcomp: error:"), stderr
    return lines[0]


def _bad_process(args):
    """The command in its own process: its exit status and its whole stderr."""
    r = _run(args)
    return _one_line_error(r.returncode, r.stderr)


@pytest.fixture
def bad(capsys):
    """The command in this process (``cli.main``, as ``python -m jaxcomp.cli`` runs it): it must
    exit with status 2 through SystemExit, having printed one line to stderr and nothing else."""

    def bad(args):
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            cli.main(args)
        out, err = capsys.readouterr()
        assert out == "", out
        return _one_line_error(info.value.code, err)

    return bad


def test_bad_arguments_are_one_line_errors(tmp_path, bad):
    base = ["--epochs", "1", "--out", str(tmp_path / "o")]
    # (one in a real process, the exit status and stderr the shell sees: the SIGKILL test's)
    assert "nope" in bad(["train", "--model", "nope", "--data", "digits", *base])
    assert "mnist6k" in bad(["train", "--model", "lenet300", "--data", "mnist6k", *base])
    missing = str(tmp_path / "missing.npz")
    assert "missing.npz" in bad(["train", "--model", "lenet300", "--data", missing, *base])
    bad_npz = tmp_path / "bad.npz"
    np.savez(bad_npz, x_train=np.zeros((4, 3)), y_train=np.zeros(4, np.int32))
    assert "x_test" in bad(["train", "--model", "lenet300", "--data", str(bad_npz), *base])
    assert "16" in bad(["train", "--model", "lenet5", "--data", "digits", *base])
    assert "epochs" in bad(["train", "--model", "lenet300", "--data", "digits",
                            "--epochs", "0", "--out", "x"])  # fmt: skip
    assert "seed" in bad(["train", "--model", "lenet300", "--data", "digits", "--seed", "-1",
                          "--out", "x"])  # fmt: skip
    assert "required" in bad(["train", "--model", "lenet300"])
    assert bad([])


def test_train_on_user_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((64, 4, 4, 1), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x[:48], y_train=y[:48], x_test=x[48:], y_test=y[48:])
    # in this process (cli.main): the process's own side is the SIGKILL test's
    args = ["train", "--model", "lenet300", "--data", str(path), "--epochs", "2",
            "--batch-size", "16", "--out", str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["num_train"] == 48 and report["num_test"] == 16
    assert report["params"] == 16 * 300 + 300 + 300 * 100 + 100 + 100 * 2 + 2
    assert (tmp_path / "o" / "metrics.jsonl").read_text().count("\n") == 2

"""Every ordered pair of public transforms, composed with ``jc.chain``: composes or is refused.

For each pair ``(a, b)`` of the contract cases (``tests/_cases_*.py``: every public transform
factory at small hyperparameters, plus the core combinators), ``jc.chain(a, b)`` is initialized on
the contract's tiny conv + dense params. It must either

* be refused at ``init`` with a ``ValueError`` (a :class:`jaxcomp.errors.CompositionError` naming
  the order that works, or a selection or rank that the pair cannot meet, named in the message), or
* compose: its baked model is its trained model, ``jc.to_dense(finalize(c, s)) == apply(c, s)``,
  at init and after updates, except at leaves where one of the two transforms alone differs
  from its own bake (a stochastic or noisy ``apply`` never equals its bake).

Anything else (another exception, or an effect lost without refusal) is a failure, listed. The
test suite checks a random sample of pairs on every run (``tests/test_contract.py``); this script
runs them all and writes ``docs/results/composition.{json,md}``.

Run: ``python -m experiments.composition [--smoke]``.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from tqdm import tqdm

import jaxcomp as jc

_TESTS = pathlib.Path(__file__).resolve().parent.parent / "tests"
_OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "results"


def cases() -> list[tuple[str, Any]]:
    """The contract cases: ``(name, factory)`` for every public transform."""
    if str(_TESTS) not in sys.path:
        sys.path.insert(0, str(_TESTS))
    out = [
        ("identity", lambda: jc.identity()),
        ("masked(identity, kernels)", lambda: jc.masked(jc.identity(), jc.select.kernels())),
    ]
    for f in sorted(_TESTS.glob("_cases_*.py")):
        out += importlib.import_module(f.stem).CASES
    return out


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.relu(x).reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(3)(x)


def tiny_params() -> Any:
    """The contract's params: a 3x3 conv (2 -> 4), Dense 144 -> 16 and 16 -> 3."""
    return _Tiny().init(jax.random.key(0), jnp.zeros((1, 6, 6, 2), jnp.float32))["params"]


def _incomplete(x: Any) -> bool:
    is_ph = lambda y: isinstance(y, jc.core.MaskedNode)
    return any(is_ph(y) for y in jax.tree.leaves(x, is_leaf=is_ph))


def gaps(a: Any, b: Any) -> set[str]:
    """Paths where two trees (nodes made dense) differ beyond float32 round-off; a node holding
    placeholders for fields its transform keeps in the state is not compared."""
    out = set()
    pa, treedef = jax.tree_util.tree_flatten_with_path(a, is_leaf=jc.is_compressed)
    for (p, x), y in zip(pa, treedef.flatten_up_to(b), strict=True):
        if _incomplete(x) or _incomplete(y):
            continue
        x, y = np.asarray(jc.to_dense(x)), np.asarray(jc.to_dense(y))
        scale = 1.0 + float(np.abs(x).max(initial=0.0))
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-5, atol=1e-6 * scale):
            out.add(jc.core.path_str(p))
    return out


def _related(p: str, q: str) -> bool:
    return p == q or p.startswith(q + "/") or q.startswith(p + "/")


def check_pair(a: Any, b: Any, params: Any, *, updates: int = 2) -> tuple[str, str]:
    """``("composes" | "refused", detail)`` for ``chain(a(), b())``; raises AssertionError when an
    effect is lost without refusal, and lets any non-ValueError exception through."""
    ts = (a(), b())
    t = jc.chain(*ts)
    try:
        c, s = t.init(params)
    except ValueError as e:
        assert str(e), "a refusal must say why"
        return "refused", f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    upd = jax.jit(lambda c, s: t.update(c, s, step=jnp.int32(1), grads=c))
    for _ in range(updates + 1):
        inner = ts[1].apply(c, s.states[1])
        own = gaps(inner, ts[1].finalize(c, s.states[1]))
        own |= gaps(ts[0].apply(inner, s.states[0]), ts[0].finalize(inner, s.states[0]))
        lost = gaps(t.apply(c, s), t.finalize(c, s))
        unexplained = sorted(p for p in lost if not any(_related(p, q) for q in own))
        assert not unexplained, f"baked model differs from the trained one at {unexplained}"
        c, s = upd(c, s)
    kinds = {type(x).__name__ for x in jax.tree.leaves(t.finalize(c, s), is_leaf=jc.is_compressed)}
    return "composes", ", ".join(sorted(kinds))


def run(limit: int | None = None) -> dict[str, Any]:
    """Every ordered pair (the first ``limit`` with ``limit``)."""
    cs = cases()
    params = tiny_params()
    pairs = [(a, b) for a in cs for b in cs][:limit]
    rows, failures = [], []
    for (na, fa), (nb, fb) in tqdm(pairs, desc="pairs", disable=limit is not None):
        try:
            verdict, detail = check_pair(fa, fb, params)
        except Exception as e:  # a failure of the library, listed
            verdict, detail = "FAILED", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            failures.append((na, nb, detail))
        rows.append({"first": na, "then": nb, "verdict": verdict, "detail": detail})
    counts = collections.Counter(r["verdict"] for r in rows)
    return {
        "cases": len(cs),
        "pairs": len(rows),
        "composes": counts["composes"],
        "refused": counts["refused"],
        "failed": counts["FAILED"],
        "failures": failures,
        "rows": rows,
        "versions": {"jax": jax.__version__, "jaxcomp": jc.__version__},
    }


def markdown(result: dict[str, Any]) -> str:
    """The table of verdicts, one row per first transform."""
    names = sorted({r["first"] for r in result["rows"]})
    by = {(r["first"], r["then"]): r for r in result["rows"]}
    mark = {"composes": "ok", "refused": "no", "FAILED": "FAIL"}
    lines = [
        "# Composition: every ordered pair of public transforms",
        "",
        f"`python -m experiments.composition` (jax {result['versions']['jax']}): "
        f"{result['pairs']} ordered pairs of {result['cases']} contract cases; "
        f"**{result['composes']} compose** (the baked model is the trained model), "
        f"**{result['refused']} are refused** at `init` with a `ValueError` that says why, "
        f"**{result['failed']} fail**.",
        "",
        "Refusals by reason (first line of the message, grouped by error class):",
        "",
    ]
    reasons = collections.Counter(
        r["detail"].split(":")[0] for r in result["rows"] if r["verdict"] == "refused"
    )
    lines += [f"- {k}: {v}" for k, v in reasons.most_common()]
    lines += ["", "Rows: the first transform of the chain; columns: the one after it.", ""]
    lines += ["| first \\ then | " + " | ".join(f"{i}" for i in range(len(names))) + " |"]
    lines += ["| --- |" + " --- |" * len(names)]
    for i, a in enumerate(names):
        cells = [mark[by[(a, b)]["verdict"]] if (a, b) in by else "" for b in names]
        lines.append(f"| {i}. {a} | " + " | ".join(cells) + " |")
    if result["failures"]:
        lines += ["", "Failures:", ""]
        lines += [f"- `chain({a}, {b})`: {d}" for a, b, d in result["failures"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="the first 4 pairs, nothing written")
    args = ap.parse_args(argv)
    result = run(limit=4 if args.smoke else None)
    if not args.smoke:
        _OUT.mkdir(parents=True, exist_ok=True)
        (_OUT / "composition.json").write_text(json.dumps(result, indent=1))
        (_OUT / "composition.md").write_text(markdown(result))
    summary = {k: result[k] for k in ("cases", "pairs", "composes", "refused", "failed")}
    print(json.dumps(summary))
    return result


if __name__ == "__main__":
    main()

"""HashedNets, soft weight-sharing and biased weight decay on MNIST (mnist5k), LeNet-300-100.

Each seed trains the dense LeNet-300-100 on the embedded MNIST subset (4,000 training images; the
1,000 test images give only the reported accuracies) for 10 epochs (Adam 1e-3, batch 64), and

* **HashedNets** (Chen et al. 2015 [28]; ``jc.prune.hashed``): the same network trained from
  scratch with every kernel hashed into ``n / c`` buckets, at compression factors ``c`` = 8 and
  64 (the paper's 1/8 and 1/64), next to a dense network with the same number of stored
  parameters (hidden layers shrunk 3:1, as the paper's "equivalent-size" baseline). The buckets
  start from the hashed projection of the dense initialization rescaled by ``sqrt(c)``, so that
  the virtual weights have the dense initialization's variance (the plain projection averages
  ``c`` weights and would start ``sqrt(c)`` times smaller);
* **soft weight-sharing** (Ullrich et al. 2017 [29]; ``jc.prune.soft_sharing``): the trained
  dense network retrained for 5 epochs with a 17-component Gaussian-mixture prior (the zero
  component fixed at ``pi_0 = 0.999``) added to the loss with the paper's ``tau = 5e-3`` per
  training example (``make_train_step(penalty=...)``), the prior's means, variances and mixing
  proportions learned with the weights (Adam 5e-4 for the weights and means, 3e-3 for the
  variances and mixing logits), then every weight snapped to its most responsible component.
  The components start 0.005 wide (``init_std``): at the default width (range / 17, about the
  spacing of the means) the snapped network of a trial run on seed 0 was at 30% training
  accuracy. ``tau`` and ``init_std`` were chosen on that seed's training accuracy;
* **biased weight decay** (Hanson and Pratt 1989 [23]; ``jc.prune.biased_decay``): the network
  trained from scratch with no penalty, with L2 decay, and with the hyperbolic and exponential
  biased penalties (``lam = 400``: weights above ``lam**-0.5 = 0.05`` are barely decayed), then
  magnitude-pruned one-shot (global, no retraining) to 90% and 95% sparsity, counting the hidden
  units that keep a path through the network. All penalties have the same pull on small weights
  (``1e-4 * w**2``, summed over the kernels, added to the mean cross-entropy); they were not
  tuned.

Sizes: ``bytes`` is the model encoded as a ``.jcz`` artifact (``jc.encode.pack``: relative-index
sparse storage where it pays, a codebook where there are at most 256 distinct values, Huffman
coding; the buckets of HashedNets are float32). Latency: jitted forward passes timed interleaved
in one process (``jc.analysis.compare_latency``) at batch 1 and 128: the dense network, the hashed
one run from its buckets (the weights rebuilt by hashing inside the call, as the method stores
them) and the equivalent-size dense networks; FLOPs by ``jc.analysis.flops`` (multiply-adds; the
hashing and gathers are not counted).

Budget: about 10 minutes on 2 shared CPU cores for 3 seeds.

Run: ``python -m experiments.pruning.sharing [--smoke] [--out DIR] [--seeds N]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcomp as jc
from experiments.common import EVAL_STEP
from experiments.common import Bound
from experiments.common import Evaluator
from experiments.common import adam
from experiments.common import machine
from experiments.common import markdown_table
from experiments.common import train_step
from jaxcomp import prune

COMMAND = "python -m experiments.pruning.sharing"
LR = 1e-3
BATCH = 64
FULL = {"epochs": 10, "ss_epochs": 5, "compressions": (8, 64), "decays": None,
        "prune": (0.9, 0.95)}  # fmt: skip
SMOKE = {"epochs": 1, "ss_epochs": 1, "compressions": (8,), "decays": ("biased hyperbolic",),
         "prune": (0.9,)}  # fmt: skip
REPEATS = {1: 200, 128: 30}
SS = {"components": 17, "pi_zero": 0.999, "tau": 5e-3, "init_std": 0.005}
DECAY_STRENGTH, DECAY_LAM = 1e-4, 400.0

CLAIMS = {
    "[28]": "Chen et al.: hashing the weights into 1/8 or 1/64 as many shared buckets, trained "
            "from scratch, keeps most of the accuracy and beats a dense network of equal size "
            "(MNIST and other benchmarks)",
    "[29]": "Ullrich et al.: retraining with a learned mixture prior prunes and quantizes at once; "
            "LeNet-300-100 64x and LeNet-5-Caffe 162x smaller with under 0.1 pp more error",
    "[23]": "Hanson and Pratt: biased weight decay, which spares large weights, builds smaller "
            "networks (fewer hidden units in use) than standard weight decay at equal accuracy",
}  # fmt: skip

COLUMNS = ["method", "acc", "params_after", "bytes", "ratio", "macs", "ms_b1", "ms_b128"]


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    v = np.asarray(values, np.float64)
    return round(float(v.mean()), 4), (round(float(v.std(ddof=1)), 4) if len(v) > 1 else None)


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


class MLP(nn.Module):
    """A smaller LeNet-300-100: flatten, two ReLU hidden layers, a classifier."""

    hidden: tuple[int, int]
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden[0])(x))
        x = nn.relu(nn.Dense(self.hidden[1])(x))
        return nn.Dense(self.num_classes)(x)


def mlp_params(a: int, b: int, d: int = 784, c: int = 10) -> int:
    return d * a + a + a * b + b + b * c + c


def equivalent_hidden(stored: int) -> tuple[int, int]:
    """Hidden sizes ``(3b, b)`` whose MLP has the stored parameter count closest to ``stored``."""
    return min(((3 * b, b) for b in range(1, 101)), key=lambda h: abs(mlp_params(*h) - stored))


def fit(model, data, *, epochs, seed, variables=None, transform=None, tx=None, penalty=None):
    """Trains (Adam 1e-3 unless ``tx``) with an optional ``penalty(cparams, comp_state)``."""
    k_init, k_train = jax.random.split(jax.random.key(seed))
    if variables is None:
        variables = jc.models.init(model, k_init, data.input_shape)
    state = jc.train.TrainState.create(
        apply_fn=model.apply, variables=variables, tx=tx or adam(LR), key=k_train,
        transform=transform,
    )  # fmt: skip
    steps = epochs * (data.num_train // BATCH)
    res = jc.train.fit(
        state, data, batch_size=BATCH, steps=steps, seed=seed, progress=False,
        train_step=train_step(penalty=penalty), eval_every=steps,
        eval_step=EVAL_STEP,
    )  # fmt: skip
    return res.state, res.history[-1]["test_accuracy"]


def coded(params: Any, dense: Any) -> dict[str, Any]:
    rep = jc.encode.report(params, dense_bytes=dense)
    return {"bytes": rep["file_bytes"], "ratio": round(rep["compression_ratio"], 3)}


def hashed_init(model, data, seed: int, c: float):
    """The dense initialization with kernels scaled by ``sqrt(c)`` (see the module docstring)."""
    v = jc.models.init(model, jax.random.split(jax.random.key(seed))[0], data.input_shape)
    scale = lambda path, x: x * math.sqrt(c) if path[-1].key == "kernel" else x
    return {"params": jax.tree_util.tree_map_with_path(scale, v["params"])}


def soft_sharing_tx() -> optax.GradientTransformation:
    """Adam 5e-4 for weights and means, 3e-3 for log-variances and mixing logits."""
    labels = lambda c: prune.SoftSharingParams(
        jax.tree.map(lambda _: "w", c.params),
        prune.MixturePrior(means="w", log_vars="prior", logits="prior"),
    )
    return optax.multi_transform({"w": optax.adam(5e-4), "prior": optax.adam(3e-3)}, labels)


def soft_penalty(tau: float) -> Any:
    """``tau * soft_sharing_penalty``: the prior's weight on a loss that is a mean over examples
    (the paper's ``tau`` multiplies the prior against a loss summed over the training set)."""
    return lambda c, s: tau * prune.soft_sharing_penalty(c, s)


def unit_paths(params: Any) -> tuple[int, int]:
    """Hidden units of each layer that keep a nonzero input and a nonzero output weight."""
    w0, w1, w2 = (np.asarray(params[k]["kernel"]) != 0 for k in ("Dense_0", "Dense_1", "Dense_2"))
    h1 = w0.any(axis=0) & w1.any(axis=1)
    h2 = w1[h1].any(axis=0) & w2.any(axis=1)
    return int(h1.sum()), int(h2.sum())


def run(data, cfg, seeds, log_t) -> dict[str, Any]:
    model = jc.models.get("lenet300")
    res: dict[str, list[dict[str, Any]]] = {}
    add = lambda name, **r: res.setdefault(name, []).append(r)
    keep: dict[str, Any] = {}
    decays = {
        "no penalty": None,
        "L2 decay": prune.l2(strength=DECAY_STRENGTH),
        "biased hyperbolic": prune.biased_decay(strength=DECAY_STRENGTH, kind="hyperbolic",
                                                lam=DECAY_LAM),
        # 1 - exp(-lam w^2) ~ lam w^2 near zero: strength / lam pulls small weights as L2 does
        "biased exponential": prune.biased_decay(strength=DECAY_STRENGTH / DECAY_LAM,
                                                 kind="exponential", lam=DECAY_LAM),
    }  # fmt: skip
    if cfg["decays"] is not None:
        decays = {k: v for k, v in decays.items() if k in cfg["decays"]}
    mlps: dict[int, Any] = {}
    ev = None
    for seed in seeds:
        state, acc = fit(model, data, epochs=cfg["epochs"], seed=seed)
        params = state.variables()["params"]
        ev = ev or Evaluator(model, state.variables(), data)
        n_dense = jc.analysis.param_count(params)
        add("dense LeNet-300-100", acc=acc, params_after=n_dense, **coded(params, params))
        keep.setdefault("dense", params)
        log_t(f"seed {seed}: dense {acc:.4f}")
        # HashedNets and the equivalent-size dense networks, from scratch
        for c in cfg["compressions"]:
            t = prune.hashed(compression=c, key=jax.random.key(300 + seed))
            st, acc_h = fit(model, data, epochs=cfg["epochs"], seed=seed, transform=t,
                            variables=hashed_init(model, data, seed, c))  # fmt: skip
            stored = jc.analysis.param_count(st.cparams)
            add(f"HashedNets 1/{c}", acc=acc_h, params_after=stored,
                **coded(st.cparams, params))  # fmt: skip
            keep.setdefault(f"hashed{c}", (t, st.cparams, st.comp_state))
            hid = equivalent_hidden(stored)
            mlp = mlps.setdefault(c, MLP(hid))
            st_m, acc_m = fit(mlp, data, epochs=cfg["epochs"], seed=seed)
            p_m = st_m.variables()["params"]
            add(f"equivalent-size dense {hid[0]}-{hid[1]} (vs 1/{c})", acc=acc_m,
                params_after=jc.analysis.param_count(p_m), **coded(p_m, p_m))  # fmt: skip
            keep.setdefault(f"mlp{c}", (mlp, p_m))
            log_t(f"seed {seed}: hashed 1/{c} {acc_h:.4f}, dense {hid} {acc_m:.4f}")
        # soft weight-sharing, from the trained dense network
        t = prune.soft_sharing(components=SS["components"], pi_zero=SS["pi_zero"],
                               init_std=SS["init_std"])  # fmt: skip
        pen = soft_penalty(SS["tau"] / data.num_train)  # the paper's tau, per training example
        st, _ = fit(model, data, epochs=cfg["ss_epochs"], seed=seed, variables=state.variables(),
                    transform=t, tx=soft_sharing_tx(), penalty=pen)  # fmt: skip
        snapped = st.transform.finalize(st.cparams, st.comp_state)
        acc_s = ev(snapped)
        kern = [snapped[k]["kernel"] for k in snapped]
        nz = sum(int(jnp.sum(w != 0)) for w in kern)
        distinct = len(np.unique(np.concatenate([np.asarray(w).ravel() for w in kern])))
        add("soft weight-sharing (17 components, snapped)", acc=acc_s,
            params_after=nz + sum(int(snapped[k]["bias"].size) for k in snapped),
            kernel_sparsity=round(1 - nz / sum(int(w.size) for w in kern), 4),
            distinct_kernel_values=distinct, acc_before_snap=ev(st.cparams.params),
            **coded(snapped, params))  # fmt: skip
        log_t(f"seed {seed}: soft sharing {acc_s:.4f}, sparsity {1 - nz / 266200:.4f}, "
              f"{distinct} values")  # fmt: skip
        # biased weight decay, from scratch, then one-shot global magnitude pruning
        for name, p in decays.items():
            if p is None:
                st_d, acc_d = state, acc
            else:
                st_d, acc_d = fit(model, data, epochs=cfg["epochs"], seed=seed,
                                  penalty=lambda c, s, p=p: p(c))  # fmt: skip
            pd = st_d.variables()["params"]
            for sp in cfg["prune"]:
                tr = prune.magnitude(sparsity=sp, scope="global")
                pruned = tr.apply(*tr.init(pd))
                h1, h2 = unit_paths(pruned)
                kz = [pruned[k]["kernel"] == 0 for k in pruned]
                add(f"{name}, pruned {sp:.0%} (no retraining)", acc=ev(pruned),
                    acc_unpruned=acc_d, params_after=jc.analysis.nonzero_count(pruned),
                    kernel_sparsity=sum(int(z.sum()) for z in kz) / sum(z.size for z in kz),
                    hidden_units_in_use=f"{h1}+{h2}", **coded(pruned, params))  # fmt: skip
            log_t(f"seed {seed}: {name} {acc_d:.4f}")
    return {"res": res, "keep": keep, "model": model}


def speed(out, data, repeats) -> dict[str, Any]:
    """Dense, hashed (rebuilt in the call) and equivalent-size networks, interleaved."""
    model, keep = out["model"], out["keep"]
    dense = keep["dense"]
    fns = {"dense LeNet-300-100": (model, lambda p, x: model.apply({"params": p}, x), dense)}
    for k, v in keep.items():
        if k.startswith("hashed"):
            t, c, s = v
            fns[f"HashedNets 1/{k[6:]}"] = (
                model,
                lambda p, x, t=t, s=s: model.apply({"params": t.apply(p, s)}, x),
                c,
            )
        elif k.startswith("mlp"):
            mlp, p = v
            fns[f"equivalent-size dense {mlp.hidden[0]}-{mlp.hidden[1]} (vs 1/{k[3:]})"] = (
                mlp, lambda p, x, mlp=mlp: mlp.apply({"params": p}, x), p)  # fmt: skip
    x1 = jax.ShapeDtypeStruct((1, *data.input_shape), jnp.float32)
    macs = {n: jc.analysis.flops(lambda x, f=f, p=p: f(p, x), x1) for n, (_, f, p) in fns.items()}
    closed = {n: Bound(f, p) for n, (_, f, p) in fns.items()}
    lat: dict[str, Any] = {}
    for b, r in repeats.items():
        idx = np.arange(b) % data.num_test
        stats = jc.analysis.compare_latency(closed, jnp.asarray(data.x_test[idx]), repeats=r,
                                            warmup=2, rounds=min(5, r))  # fmt: skip
        lat[str(b)] = {n: {"median_ms": round(s["median_s"] * 1e3, 4),
                           "min_ms": round(s["min_s"] * 1e3, 4), "ratio": round(s["ratio"], 3)}
                       for n, s in stats.items()}  # fmt: skip
    return {"macs_per_image": macs, "latency": lat}


def rows_of(res, spd) -> list[dict[str, Any]]:
    rows = []
    for name, rs in res.items():
        a, sd = mean_std([r["acc"] for r in rs])
        row = {"method": name, "acc_mean": a, "acc_std": sd, "seeds_acc": [r["acc"] for r in rs]}
        for k in rs[0]:
            if k == "acc":
                continue
            vals = [r[k] for r in rs]
            row[k] = (
                round(float(np.mean(vals)), 4) if isinstance(vals[0], float)
                else int(np.mean(vals)) if isinstance(vals[0], int) else "; ".join(vals)
            )  # fmt: skip
        if name in spd["macs_per_image"]:
            row["macs"] = spd["macs_per_image"][name]
            for b, lat in spd["latency"].items():
                row[f"ms_b{b}"] = lat[name]["median_ms"]
        rows.append(row)
    return rows


def summary_rows(rows, spd) -> list[dict[str, Any]]:
    base = next(r for r in rows if r["method"] == "dense LeNet-300-100")
    dense_lat = spd["latency"]
    out = []
    for r in rows:
        name = r["method"]
        if name.startswith("HashedNets"):
            ref = "[28]"
        elif name.startswith("soft"):
            ref = "[29]"
        elif name.startswith("biased") or name.startswith("L2") or name.startswith("no penalty"):
            ref = "[23]"
        else:
            continue
        s = {
            "ref": ref, "method": name, "model": "lenet300", "data": "mnist5k",
            "acc_before": base["acc_mean"], "acc_before_std": base["acc_std"],
            "acc_after": r["acc_mean"], "acc_after_std": r["acc_std"],
            "seeds": len(r["seeds_acc"]), "params_before": base["params_after"],
            "params_after": r["params_after"], "bits": None, "bytes": r["bytes"],
            "flops_before": None, "flops_after": None, "latency_ms_b1": None,
            "latency_ms_b128": None, "command": COMMAND, "note": CLAIMS[ref],
        }  # fmt: skip
        if ref == "[29]":
            s["bits"] = round(math.log2(r["distinct_kernel_values"]), 3)
        if name in spd["macs_per_image"]:
            s["flops_before"] = spd["macs_per_image"]["dense LeNet-300-100"]
            s["flops_after"] = spd["macs_per_image"][name]
            for b in ("1", "128"):
                if b in dense_lat:
                    s[f"latency_ms_b{b}"] = dense_lat[b][name]["median_ms"]
                    s[f"latency_ms_b{b}_before"] = dense_lat[b]["dense LeNet-300-100"]["median_ms"]
        out.append(s)
    return out


def write(out_dir: str, name: str, doc: dict[str, Any]) -> str:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    rows = [{**r, "acc": _pm(r["acc_mean"], r["acc_std"])} for r in doc["rows"]]
    md = markdown_table(rows, COLUMNS)
    extra = [r for r in doc["rows"] if "kernel_sparsity" in r or "hidden_units_in_use" in r]
    cols = ["method", "acc", "acc_before_snap", "acc_unpruned", "kernel_sparsity",
            "distinct_kernel_values", "hidden_units_in_use"]  # fmt: skip
    md += "\n" + markdown_table([{**r, "acc": _pm(r["acc_mean"], r["acc_std"])} for r in extra],
                                cols)  # fmt: skip
    md += "\nClaims:\n\n" + "".join(f"* {k} {v}\n" for k, v in doc["meta"]["claims"].items())
    with open(os.path.join(out_dir, f"{name}.md"), "w", encoding="utf-8") as f:
        f.write(md)
    return md


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy size, 1 seed")
    parser.add_argument("--out", default="docs/results/pruning")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    log_t = lambda msg: log(f"[{time.perf_counter() - t0:6.1f}s, cpu {time.process_time():6.1f}s] "
                            f"{msg}")  # fmt: skip
    data = jc.data.load("mnist5k")
    cfg, seeds, repeats = FULL, list(range(args.seeds)), REPEATS
    if args.smoke:
        rng = np.random.default_rng(0)
        tr, te = rng.permutation(data.num_train)[:256], rng.permutation(data.num_test)[:64]
        data = data.replace(x_train=data.x_train[tr], y_train=data.y_train[tr],
                            x_test=data.x_test[te], y_test=data.y_test[te])  # fmt: skip
        cfg, seeds, repeats = SMOKE, [0], {1: 2}
    out = run(data, cfg, seeds, log_t)
    spd = speed(out, data, repeats)
    log_t(f"speed {spd}")
    rows = rows_of(out["res"], spd)
    meta = {
        "model": "lenet300", "dataset": "mnist5k (4000 train / 1000 test)", "seeds": seeds,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "soft_sharing": SS, "decay": {"strength": DECAY_STRENGTH, "lam": DECAY_LAM},
        "optimizer": "adam 1e-3", "batch_size": BATCH, "smoke": args.smoke,
        "machine": machine(), "flax": flax.__version__, "claims": CLAIMS, "command": COMMAND,
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    doc = {"meta": meta, "rows": rows, "speed": spd, "summary": summary_rows(rows, spd)}
    md = write(args.out, "sharing", doc)
    log_t("done")
    print(md)
    return doc


if __name__ == "__main__":
    main(sys.argv[1:])

"""Weight sharing on MNIST (mnist5k): PQ, RQ, Q-CNN, Hessian k-means, ECSQ, ternary connect.

For LeNet-300-100 and LeNet-5 (Caffe's 20-50-500), each seed trains a float baseline on the
embedded MNIST subset (4,000 training images; the 1,000 test images give only the reported
accuracies) and compresses it after training, without fine-tuning, by

* scalar k-means weight sharing with ``2**bits`` centroids per kernel (Gong et al. 2014 [14];
  ``jc.quant.kmeans``, linear initialization, 20 Lloyd iterations);
* Hessian-weighted k-means (Choi et al. 2017 [19]; ``kmeans(hessian=...)``), weighted by the
  Gauss-Newton diagonal of the training loss (``jc.prune.gauss_newton_diag`` on training images:
  exact and nonnegative) or by Choi et al.'s cheap alternative, the square root of Adam's
  second-moment estimate ``nu`` from the baseline's optimizer state;
* entropy-constrained scalar quantization (Choi et al. [19]; ``jc.quant.ecsq``, 16 clusters at
  most) at two rates, then Huffman coding;
* product quantization (Gong et al. [14]; ``jc.quant.product_quant``): sub-vectors of ``d`` rows,
  16 codewords per sub-space, ``log2(16) / d`` index bits per weight;
* Q-CNN's error-corrected PQ (Wu et al. 2016 [15]): the same codes, fitted to the layer's
  response on 1,000 training images (``product_quant(inputs=...)``, rows from
  ``jc.adapt.capture``; LeNet-5's convolution rows are im2col patches, 8,192 of them drawn from
  512 images);
* residual quantization (Gong et al. [14]; ``jc.quant.residual_quant``): two stages of 4
  codewords on sub-vectors of ``d`` rows, the same index bits per weight as PQ with 16 codewords.

The scalar methods share every kernel (one codebook per kernel). The vector methods quantize the
large kernels (LeNet-300-100's ``Dense_0`` and ``Dense_1``, LeNet-5's ``Conv_1`` and ``Dense_0``:
99.6% and 98.7% of the weights); the others stay float32 and are counted in the bytes.
Sizes: ``bytes`` is the whole model encoded as a ``.jcz`` artifact (``jc.encode.pack``, Huffman
coding of every integer stream, codebooks, float leaves, header), ``params_after`` the float values
stored (codebooks and the leaves left in float32), ``bits`` the index bits per quantized weight at
fixed length (ECSQ's are entropy coded below that).

Ternary connect (Lin et al. 2015 [35]; ``jc.quant.ternary_connect``, stochastic, ``H`` from
Glorot's fan-in and fan-out) trains LeNet-300-100 from scratch with the baseline's schedule; its
accuracy is that of the deterministic ternary model that ``finalize`` gives (``round(w / H)``).

Speed: none of these changes the float computation that jaxcomp runs (the model is decompressed
when loaded), except when it runs from the compressed form. For Q-CNN's claim, LeNet-300-100 is
timed three ways in one process (``jc.analysis.compare_latency``, batch 1 and 128): the dense
model, the PQ nodes decompressed inside the jitted forward pass, and Q-CNN's test-phase
computation written here (:func:`lut_forward`: per layer, the inner products of each input
sub-vector with the 16 codewords, then a sum of table entries per output).

Budget: about 10 minutes on 2 shared CPU cores (LeNet-300-100 trains 10 epochs, LeNet-5 2 epochs,
Adam 1e-3, batch 64; 3 seeds).

Run: ``python -m experiments.quantization.sharing [--smoke] [--out DIR] [--seeds N]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

import jaxcomp as jc
import jaxcomp.quant as jq
from experiments.common import Bound
from experiments.common import Evaluator
from experiments.common import machine
from experiments.common import markdown_table
from experiments.common import train

COMMAND = "python -m experiments.quantization.sharing"
LR = 1e-3

CONFIGS = {
    "lenet300": {"epochs": 10, "vq": r"Dense_[01]", "calib_images": 1000, "gn_examples": 1000},
    "lenet5": {"epochs": 2, "vq": r"Conv_1|Dense_0", "calib_images": 512, "gn_examples": 256},
}
SMOKE = {"lenet300": {"epochs": 1, "vq": r"Dense_1", "scalar": r"Dense_1", "calib_images": 64,
                      "gn_examples": 32}}  # fmt: skip
MAX_ROWS = 8192  # calibration rows per layer (im2col patches are drawn from all positions)
SCALAR_BITS = (1, 2, 3)
ECSQ_RATES = (0.1, 0.3)
PQ_SUBVECTORS = (4, 2)  # d: 16 codewords give 1 and 2 index bits per weight
REPEATS = {1: 200, 128: 30}

REFS = {"kmeans": "[14]", "hessian": "[19]", "ecsq": "[19]", "pq": "[14]", "rq": "[14]",
        "qcnn": "[15]", "ternary": "[35]"}  # fmt: skip

CLAIMS = {
    "[14]": "Gong et al.: k-means or product quantization of the dense layers gives 16-24x "
            "compression with about 1% loss of top-5 accuracy (ImageNet CNN); PQ is the best "
            "structured quantizer, RQ works less well",
    "[15]": "Wu et al.: quantizing all layers by error-corrected PQ gives 4-6x speed-up and "
            "15-20x compression with about 1% loss of top-5 accuracy (ILSVRC-12)",
    "[19]": "Choi et al.: Hessian-weighted k-means loses less than k-means at the same number of "
            "clusters; ECSQ (or uniform quantization) with Huffman coding compresses further; "
            "51.25x for LeNet (with pruning)",
    "[35]": "Lin et al.: stochastic ternary weights in training do not hurt, and can improve, "
            "accuracy (MNIST, CIFAR-10, SVHN)",
}  # fmt: skip

COLUMNS = ["model", "method", "bits", "acc", "acc_std", "acc_before", "params_after", "bytes",
           "ratio", "index_entropy", "h_distortion", "resp_err_test"]  # fmt: skip


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    v = np.asarray(values, np.float64)
    return round(float(v.mean()), 4), (round(float(v.std(ddof=1)), 4) if len(v) > 1 else None)


def stored_floats(tree: Any) -> int:
    """Float values stored: codebooks, scales and the leaves left in float."""
    return sum(int(x.size) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating))


def index_entropy(fin: Any) -> float | None:
    """Mean Shannon entropy (bits) of the codebook indices per shared weight, if any."""
    nodes = [n for n in jax.tree.leaves(fin, is_leaf=_is_cb) if _is_cb(n)]
    if not nodes:
        return None
    total, n_all = 0.0, 0
    for n in nodes:
        idx = np.asarray(n.indices).ravel()
        p = np.bincount(idx) / idx.size
        p = p[p > 0]
        total += float(-(p * np.log2(p)).sum()) * idx.size
        n_all += idx.size
    return round(total / n_all, 4)


def _is_cb(x: Any) -> bool:
    return isinstance(x, jq.CodebookArray)


def h_distortion(params: Any, dense: Any, h: Any) -> float:
    """``sum h (w - q)^2 / sum h w^2`` over the kernels: the Hessian-weighted distortion."""
    num = den = 0.0
    for k in params:
        w, q, hh = params[k]["kernel"], dense[k]["kernel"], h[k]["kernel"]
        num += float(jnp.sum(hh * (w - q) ** 2))
        den += float(jnp.sum(hh * w**2))
    return round(num / den, 5)


def capture_rows(model, params, x, names: str, max_rows: int, seed: int) -> dict[str, Any]:
    """Layer input rows (im2col patches for convolutions) of the ``names`` layers, subsampled."""
    fn = jc.adapt.capture(model.apply, inputs=re.compile(names), rows=True)
    rows = fn({"params": params}, jnp.asarray(x))[1].inputs
    rng = np.random.default_rng(seed)
    out = {}
    for k, r in rows.items():
        r = np.asarray(r)
        if r.shape[0] > max_rows:
            r = r[np.sort(rng.choice(r.shape[0], max_rows, replace=False))]
        out[f"{k}/kernel"] = jnp.asarray(r)
    return out


def response_error(params, dense, rows) -> float:
    """Mean over layers of ``||X W - X W_hat||^2 / ||X W||^2`` on ``rows`` (held-out inputs)."""
    errs = []
    for path, x in rows.items():
        k = path.split("/")[0]
        w = params[k]["kernel"].reshape(x.shape[1], -1)
        wh = dense[k]["kernel"].reshape(x.shape[1], -1)
        errs.append(float(jnp.sum((x @ w - x @ wh) ** 2) / jnp.sum((x @ w) ** 2)))
    return round(float(np.mean(errs)), 4)


def methods(cfg, gn, h_adam, calib, key, smoke: bool) -> list[tuple[str, str, float, Any]]:
    """``(method, family, index bits per weight, transform)`` for one trained model (the smoke
    run keeps one k-means, PQ and Q-CNN, the minimum that runs every code path of the script)."""
    vq = jc.select.by_regex(f"({cfg['vq']})/kernel")
    sw = None if cfg.get("scalar") is None else jc.select.by_regex(f"({cfg['scalar']})/kernel")
    km = lambda b, **kw: jq.kmeans(bits=b, keep_zeros=False, where=sw, **kw)
    out: list[tuple[str, str, float, Any]] = []
    for b in () if smoke else SCALAR_BITS:
        out.append((f"k-means {b} bits", "kmeans", b, km(b)))
        out.append((f"Hessian k-means {b} bits (Gauss-Newton diag)", "hessian", b,
                    km(b, hessian=gn)))  # fmt: skip
        out.append((f"Hessian k-means {b} bits (Adam sqrt(nu))", "hessian", b,
                    km(b, hessian=h_adam)))  # fmt: skip
    if smoke:
        out.append(("Hessian k-means 2 bits (Gauss-Newton diag)", "hessian", 2, km(2, hessian=gn)))
    for r in () if smoke else ECSQ_RATES:
        out.append((f"ECSQ rate {r} (16 clusters at most)", "ecsq", 4,
                    jq.ecsq(bits=4, rate=r, keep_zeros=False, where=sw)))  # fmt: skip
    for d in PQ_SUBVECTORS[:1] if smoke else PQ_SUBVECTORS:
        b = math.log2(16) / d
        pq = lambda d=d, **kw: jq.product_quant(subvector=d, clusters=16, key=key, where=vq, **kw)
        out += [
            (f"PQ d={d} K=16", "pq", b, pq()),
            (f"Q-CNN (error-corrected PQ) d={d} K=16", "qcnn", b, pq(inputs=calib)),
        ]
        if not smoke:
            rq = jq.residual_quant(stages=2, subvector=d, clusters=4, key=key, where=vq)
            out.append((f"RQ 2 stages d={d} K=4", "rq", b, rq))
    return out


def train_baseline(model, data, cfg, seed):
    """The float model of one seed: its params, accuracy and the two Hessian weightings."""
    state, acc = train(model, data, epochs=cfg["epochs"], lr=LR, seed=seed)
    params = state.variables()["params"]
    x = jnp.asarray(data.x_train[: cfg["gn_examples"]])
    gn = jc.prune.gauss_newton_diag(
        lambda p, xb: model.apply({"params": p}, xb), params, x, batch_size=8
    )
    h_adam = jax.tree.map(jnp.sqrt, state.opt_state[0].nu)  # optax.adam: (ScaleByAdam, Empty)
    return state, params, acc, gn, h_adam


def run_model(name, cfg, data, seeds, smoke, log_t) -> tuple[list[dict], dict]:
    """Every method on every seed of one model; per-method rows (mean and std over seeds)."""
    model = jc.models.get(name)
    per: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    base_accs, keep = [], {}
    ev = None
    for seed in seeds:
        state, params, acc, gn, h_adam = train_baseline(model, data, cfg, seed)
        base_accs.append(acc)
        ev = ev or Evaluator(model, state.variables(), data)
        n_cal = cfg["calib_images"]
        calib = capture_rows(model, params, data.x_train[:n_cal], cfg["vq"], MAX_ROWS, seed)
        test_rows = capture_rows(model, params, data.x_test[:n_cal], cfg["vq"], MAX_ROWS, seed)
        log_t(f"[{name}] seed {seed}: baseline acc {acc:.4f}")
        key = jax.random.key(100 + seed)
        for method, fam, bits, t in methods(cfg, gn, h_adam, calib, key, smoke):
            c, s = t.init(params)
            fin = t.finalize(c, s)
            dense = jc.to_dense(fin)
            rep = jc.encode.report(fin, dense_bytes=params)
            r = {
                "acc": ev(dense), "bytes": rep["file_bytes"], "ratio": rep["compression_ratio"],
                "params_after": stored_floats(fin), "index_entropy": index_entropy(fin),
                "h_distortion": h_distortion(params, dense, gn),
                "resp_err_test": response_error(params, dense, test_rows)
                if fam in ("pq", "qcnn", "rq") else None,
            }  # fmt: skip
            per.setdefault((method, fam, bits), []).append(r)
            if seed == seeds[0] and fam in ("pq", "qcnn"):
                keep[method] = fin
            log_t(f"[{name}] seed {seed}: {method:45s} acc {r['acc']:.4f} bytes {r['bytes']}")
        if seed == seeds[0]:
            keep["_params"] = params
    b_mean, b_std = mean_std(base_accs)
    rows = []
    dense_bytes = jc.encode.report(keep["_params"])["file_bytes"]
    rows.append({"model": name, "method": "float32 baseline", "family": "baseline", "bits": 32,
                 "acc": b_mean, "acc_std": b_std, "acc_before": b_mean,
                 "params_after": jc.analysis.param_count(keep["_params"]),
                 "bytes": dense_bytes, "ratio": 1.0, "seeds_acc": base_accs})  # fmt: skip
    for (method, fam, bits), rs in per.items():
        a, sd = mean_std([r["acc"] for r in rs])
        row = {"model": name, "method": method, "family": fam, "bits": round(bits, 4),
               "acc": a, "acc_std": sd, "acc_before": b_mean,
               "seeds_acc": [r["acc"] for r in rs]}  # fmt: skip
        for k in ("bytes", "ratio", "params_after", "index_entropy", "h_distortion",
                  "resp_err_test"):  # fmt: skip
            vals = [r[k] for r in rs if r[k] is not None]
            row[k] = (round(float(np.mean(vals)), 4) if k != "bytes" else int(np.mean(vals))) \
                if vals else None  # fmt: skip
        rows.append(row)
    info = {"acc_before": b_mean, "acc_before_std": b_std, "base_accs": base_accs,
            "params": keep["_params"], "model": model, "pq_nodes": keep,
            "evaluator": ev}  # fmt: skip
    return rows, info


def ternary_connect(model, ev, data, cfg, seeds, log_t) -> dict[str, Any]:
    """LeNet-300-100 trained from scratch under stochastic ternary connect, per seed."""
    accs, latent, fins = [], [], []
    for seed in seeds:
        t = jq.ternary_connect(scale="glorot", key=jax.random.key(200 + seed))
        state, _ = train(model, data, epochs=cfg["epochs"], lr=LR, seed=seed, transform=t)
        fin = state.transform.finalize(state.cparams, state.comp_state)
        accs.append(ev(jc.to_dense(fin)))
        latent.append(ev(state.cparams))
        fins.append(fin)
        log_t(f"[ternary connect] seed {seed}: ternary acc {accs[-1]:.4f}, latent {latent[-1]:.4f}")
    rep = jc.encode.report(fins[0], dense_bytes=state.cparams)
    a, sd = mean_std(accs)
    la, lsd = mean_std(latent)
    return {"model": "lenet300", "method": "ternary connect (stochastic, trained from scratch)",
            "family": "ternary", "bits": round(math.log2(3), 4), "acc": a, "acc_std": sd,
            "seeds_acc": accs, "latent_acc": la, "latent_acc_std": lsd,
            "bytes": rep["file_bytes"], "ratio": rep["compression_ratio"],
            "params_after": stored_floats(fins[0])}  # fmt: skip


# ---- Q-CNN's test-phase computation ------------------------------------------------------------


def lut_dense(x: jax.Array, node: jq.ProductQuantizedArray) -> jax.Array:
    """``x @ W`` for a one-stage PQ kernel by Q-CNN's lookup tables: ``x`` (N, D) -> (N, out).

    Per sub-space ``m``: the table ``T[n, m, k] = <x_m, c_mk>`` (``N * D * K`` multiply-adds),
    then ``y[n, j] = sum_m T[n, m, code[m, j]]`` (``N * M * out`` additions, no multiplications).
    """
    _, m, _, d = node.codebooks.shape
    table = jnp.einsum("nmd,mkd->nmk", x.reshape(x.shape[0], m, d), node.codebooks[0])
    codes = node.codes[0].astype(jnp.int32)  # (M, out)
    return jnp.take_along_axis(table, codes[None], axis=2).sum(axis=1)


def lut_forward(params: Any, x: jax.Array) -> jax.Array:
    """LeNet-300-100 with its PQ layers run by :func:`lut_dense` (others dense)."""
    h = x.reshape(x.shape[0], -1)
    for i, k in enumerate(("Dense_0", "Dense_1", "Dense_2")):
        w = params[k]["kernel"]
        if isinstance(w, jq.ProductQuantizedArray):
            h = lut_dense(h, w) + params[k]["bias"][None, :]
        else:
            h = h @ w + params[k]["bias"][None, :]
        h = jax.nn.relu(h) if i < 2 else h
    return h


def speed(info, data, repeats) -> dict[str, Any]:
    """Dense, decompress-in-the-call and lookup-table LeNet-300-100, interleaved per batch."""
    model, params = info["model"], info["params"]
    fin = info["pq_nodes"]["Q-CNN (error-corrected PQ) d=4 K=16"]
    dense_q = jc.to_dense(fin)
    x_chk = jnp.asarray(data.x_test[:64])
    ref = model.apply({"params": dense_q}, x_chk)
    np.testing.assert_allclose(np.asarray(lut_forward(fin, x_chk)), np.asarray(ref), rtol=1e-4,
                               atol=1e-4)  # fmt: skip
    fns = {
        "dense float32": Bound(lambda p, x: model.apply({"params": p}, x), params),
        "PQ nodes decompressed in the call": Bound(
            lambda p, x: model.apply({"params": jc.to_dense(p)}, x), fin),
        "Q-CNN lookup tables": Bound(lut_forward, fin),
    }  # fmt: skip
    x1 = jax.ShapeDtypeStruct((1, *data.input_shape), jnp.float32)
    macs = {
        "dense float32": jc.analysis.flops(lambda x: model.apply({"params": params}, x), x1),
        "PQ nodes decompressed in the call": jc.analysis.flops(
            lambda x: model.apply({"params": jc.to_dense(fin)}, x), x1),
        "Q-CNN lookup tables": jc.analysis.flops(lambda x: lut_forward(fin, x), x1),
    }  # fmt: skip
    out: dict[str, Any] = {"macs_per_image": macs, "latency": {}}
    for b, r in repeats.items():
        idx = np.arange(b) % data.num_test
        stats = jc.analysis.compare_latency(fns, jnp.asarray(data.x_test[idx]), repeats=r,
                                            warmup=2, rounds=min(5, r))  # fmt: skip
        out["latency"][str(b)] = {
            n: {"median_ms": round(s["median_s"] * 1e3, 4), "min_ms": round(s["min_s"] * 1e3, 4),
                "ratio": round(s["ratio"], 3)}
            for n, s in stats.items()
        }  # fmt: skip
    return out


def summary_rows(rows, tc, info, spd) -> list[dict[str, Any]]:
    """The rows of ``docs/results/summary.md``: the main setting of each method and model."""
    main = {
        "k-means 2 bits", "Hessian k-means 2 bits (Gauss-Newton diag)",
        "Hessian k-means 2 bits (Adam sqrt(nu))", "ECSQ rate 0.3 (16 clusters at most)",
        "ECSQ rate 0.1 (16 clusters at most)", "PQ d=4 K=16", "RQ 2 stages d=4 K=4",
        "Q-CNN (error-corrected PQ) d=4 K=16",
    }  # fmt: skip
    out = []
    for r in [*rows, tc]:
        if r["method"] not in main and r["family"] != "ternary":
            continue
        inf = info[r["model"]]
        ref = REFS[r["family"]]
        s = {
            "ref": ref, "method": r["method"], "model": r["model"], "data": "mnist5k",
            "acc_before": inf["acc_before"], "acc_before_std": inf["acc_before_std"],
            "acc_after": r["acc"], "acc_after_std": r["acc_std"], "seeds": len(r["seeds_acc"]),
            "params_before": jc.analysis.param_count(inf["params"]),
            "params_after": r["params_after"], "bits": r["bits"], "bytes": r["bytes"],
            "flops_before": None, "flops_after": None, "latency_ms_b1": None,
            "latency_ms_b128": None, "command": COMMAND, "note": CLAIMS[ref],
        }  # fmt: skip
        if r["family"] == "qcnn" and r["model"] == "lenet300" and spd is not None:
            lut, dense = "Q-CNN lookup tables", "dense float32"
            s["flops_before"] = spd["macs_per_image"][dense]
            s["flops_after"] = spd["macs_per_image"][lut]
            for b in ("1", "128"):
                if b in spd["latency"]:
                    s[f"latency_ms_b{b}"] = spd["latency"][b][lut]["median_ms"]
                    s[f"latency_ms_b{b}_before"] = spd["latency"][b][dense]["median_ms"]
            s["note"] += "; latency: jaxcomp's lookup-table forward (lut_forward) vs dense"
        out.append(s)
    return out


def write(out_dir: str, name: str, doc: dict[str, Any]) -> str:
    """``name.json`` (everything) and ``name.md`` (the tables); returns the Markdown."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    rows = [{**r, "acc": _pm(r["acc"], r["acc_std"])} for r in doc["rows"]]
    md = markdown_table(rows, COLUMNS)
    lat = doc["speed"]["latency"]
    srows = [{"forward pass": n, "MACs per image": doc["speed"]["macs_per_image"][n],
              **{f"batch {b} ms (ratio)": f"{lat[b][n]['median_ms']:.4g} ({lat[b][n]['ratio']:.3g})"
                 for b in lat}} for n in doc["speed"]["macs_per_image"]]  # fmt: skip
    md += "\nLeNet-300-100, Q-CNN d=4 K=16 (seed 0), CPU latency (median, ratio to dense):\n\n"
    md += markdown_table(srows, list(srows[0]))
    md += "\nClaims:\n\n" + "".join(f"* {k} {v}\n" for k, v in doc["meta"]["claims"].items())
    with open(os.path.join(out_dir, f"{name}.md"), "w", encoding="utf-8") as f:
        f.write(md)
    return md


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy size: LeNet-300-100, 1 seed")
    parser.add_argument("--out", default="docs/results/quantization")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    log_t = lambda msg: log(
        f"[{time.perf_counter() - t0:6.1f}s, cpu {time.process_time():6.1f}s] {msg}"
    )
    data = jc.data.load("mnist5k")
    configs, seeds, repeats = CONFIGS, list(range(args.seeds)), REPEATS
    if args.smoke:
        rng = np.random.default_rng(0)
        tr, te = rng.permutation(data.num_train)[:256], rng.permutation(data.num_test)[:64]
        data = data.replace(x_train=data.x_train[tr], y_train=data.y_train[tr],
                            x_test=data.x_test[te], y_test=data.y_test[te])  # fmt: skip
        configs, seeds, repeats = SMOKE, [0], {1: 2}
    rows, info = [], {}
    for name, cfg in configs.items():
        r, inf = run_model(name, cfg, data, seeds, args.smoke, log_t)
        rows += r
        info[name] = inf
    base = info["lenet300"]
    tc = ternary_connect(base["model"], base["evaluator"], data, configs["lenet300"], seeds, log_t)
    tc["acc_before"] = info["lenet300"]["acc_before"]
    spd = speed(info["lenet300"], data, repeats)
    log_t(f"speed: {spd}")
    all_rows = [*rows, tc]
    summary = summary_rows(rows, tc, info, spd)
    meta = {
        "dataset": "mnist5k (4000 train / 1000 test)", "seeds": seeds,
        "epochs": {n: c["epochs"] for n, c in configs.items()}, "optimizer": "adam 1e-3",
        "batch_size": 64, "smoke": args.smoke, "machine": machine(),
        "flax": flax.__version__, "claims": CLAIMS, "command": COMMAND,
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    doc = {"meta": meta, "rows": all_rows, "speed": spd, "summary": summary}
    table = write(args.out, "sharing", doc)
    log_t("done")
    print(table)
    return {"rows": all_rows, "summary": summary, "speed": spd, "meta": meta}


if __name__ == "__main__":
    main(sys.argv[1:])

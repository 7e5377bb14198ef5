"""Benchmark of the entropy coders of ``jaxcomp.encode`` on Deep Compression's streams.

Deep Compression (Han et al., 2016, arXiv:1510.00149, section 4) Huffman codes two streams per
layer: the codebook indices of the nonzero weights and the relative-index gaps. This benchmark
builds both from a realistic layer, a 300x1000 matrix of Laplacian weights (300k weights) pruned
to 10% by magnitude and k-means quantized to 5 bits (32 shared values, linear initialization as
in the paper), in the relative-index form with 5-bit gaps (filler zeros included), and measures
for each stream:

* the empirical entropy bound ``n * H`` (bits), and the coded size of canonical Huffman, ANS
  (``constriction``) and fixed-width packing over that bound (payload alone, and with the
  decoder's tables);
* encode and decode throughput (symbols per second, best of several interleaved rounds);
* the same for general-purpose compressors on the same symbols (one byte per symbol): zlib
  (gzip's DEFLATE, level 9), lzma (preset 9) and zstd (level 19, ``zstandard``);

and the size of the whole layer as a ``.jcz`` artifact with each coder. Prints one JSON object.

Run: ``python -m experiments.benchmarks.coding [--smoke] [--repeats N] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import time
import zlib
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import numpy as np
import zstandard

from experiments.common import machine
from jaxcomp import encode


def layer(rows: int, cols: int, *, keep: float, bits: int, seed: int) -> np.ndarray:
    """A Laplacian weight matrix pruned by magnitude to ``keep`` and k-means quantized."""
    rng = np.random.default_rng(seed)
    w = rng.laplace(scale=0.05, size=(rows, cols)).astype(np.float32)
    thresh = np.quantile(np.abs(w), 1.0 - keep)
    w[np.abs(w) < thresh] = 0.0
    nz = w[w != 0]
    centers = np.linspace(nz.min(), nz.max(), 2**bits)  # linear initialization (paper, 3.2)
    for _ in range(30):  # Lloyd iterations in 1-D: assignment by the midpoints, vectorized
        assign = np.searchsorted((centers[1:] + centers[:-1]) / 2, nz)
        sums = np.bincount(assign, weights=nz, minlength=centers.size)
        counts = np.bincount(assign, minlength=centers.size)
        centers = np.where(counts > 0, sums / np.maximum(counts, 1), centers)
    assign = np.searchsorted((centers[1:] + centers[:-1]) / 2, nz)
    out = np.zeros_like(w)
    out[w != 0] = centers[assign].astype(np.float32)
    return out


def streams(w: np.ndarray, index_bits: int) -> dict[str, np.ndarray]:
    """The codebook-index and gap streams of ``w`` in relative-index form."""
    r = encode.relative_index(w, index_bits=index_bits)
    _, idx = np.unique(r.values.view(np.uint32), return_inverse=True)
    return {"indices": idx.astype(np.uint8), "gaps": r.gaps}


def _best_time(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall time of each function, timed in interleaved rounds (A B C A B C ...)."""
    best = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bench_stream(symbols: np.ndarray, repeats: int) -> dict[str, Any]:
    """Sizes and throughputs of every coder on one stream."""
    n = int(symbols.size)
    bound = encode.entropy_bits(symbols)
    coded = {c: encode.encode_symbols(symbols, coder=c) for c in encode.CODERS}
    for c, s in coded.items():
        assert np.array_equal(encode.decode_symbols(s), symbols), c
    raw_bytes = symbols.astype(np.uint8).tobytes()
    zstd_c = zstandard.ZstdCompressor(level=19)
    zstd_d = zstandard.ZstdDecompressor()
    general = {
        "zlib-9": (lambda: zlib.compress(raw_bytes, 9), zlib.decompress),
        "lzma-9": (lambda: lzma.compress(raw_bytes, preset=9), lzma.decompress),
        "zstd-19": (lambda: zstd_c.compress(raw_bytes), zstd_d.decompress),
    }
    blobs = {k: enc() for k, (enc, _) in general.items()}
    fns: dict[str, Callable[[], Any]] = {}
    for c in ("huffman", "ans"):
        fns[f"{c}/encode"] = lambda c=c: encode.encode_symbols(symbols, coder=c)
        fns[f"{c}/decode"] = lambda c=c: encode.decode_symbols(coded[c])
    for k, (enc, dec) in general.items():
        fns[f"{k}/encode"] = enc
        fns[f"{k}/decode"] = lambda dec=dec, k=k: dec(blobs[k])
    times = _best_time(fns, repeats)
    out: dict[str, Any] = {"symbols": n, "distinct": int(np.unique(symbols).size)}
    out["entropy_bits"] = bound
    out["entropy_bits_per_symbol"] = bound / n
    rows = {}
    for c, s in coded.items():
        row = {
            "bytes": len(s.payload),
            "table_bytes": s.nbytes - len(s.payload),
            "coded_over_entropy": 8 * len(s.payload) / bound,
            "total_over_entropy": 8 * s.nbytes / bound,
        }
        if c != "raw":
            row["encode_sym_per_s"] = n / times[f"{c}/encode"]
            row["decode_sym_per_s"] = n / times[f"{c}/decode"]
        rows[c] = row
    for k, blob in blobs.items():
        rows[k] = {
            "bytes": len(blob),
            "coded_over_entropy": 8 * len(blob) / bound,
            "encode_sym_per_s": n / times[f"{k}/encode"],
            "decode_sym_per_s": n / times[f"{k}/decode"],
        }
    out["coders"] = rows
    return out


def bench_artifact(w: np.ndarray) -> dict[str, Any]:
    """The layer as a ``.jcz`` artifact with each coder, against the dense float32 matrix."""
    out = {}
    for c in encode.CODERS:
        data = encode.pack({"fc": {"kernel": w}}, coder=c, sparse=True)
        back, _ = encode.unpack(data)
        assert np.array_equal(back["fc"]["kernel"].view(np.uint32), w.view(np.uint32))
        rep = encode.report(data)
        out[c] = {
            "file_bytes": rep["file_bytes"],
            "compression_ratio": rep["compression_ratio"],
            "bits_per_nonzero": rep["bits_per_nonzero"],
            "bytes": rep["bytes"],
        }
    dense = w.tobytes()
    out["zstd-19 of the dense float32 matrix"] = {
        "file_bytes": len(zstandard.ZstdCompressor(level=19).compress(dense)),
    }
    out["zstd-19 of the dense float32 matrix"]["compression_ratio"] = (
        len(dense) / out["zstd-19 of the dense float32 matrix"]["file_bytes"]
    )
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark and prints its JSON; returns the result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a quick run at toy size")
    p.add_argument("--repeats", type=int, default=None, help="timing rounds (default 7, smoke 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    rows, cols = (60, 200) if args.smoke else (300, 1000)
    repeats = args.repeats or (1 if args.smoke else 7)
    w = layer(rows, cols, keep=0.1, bits=5, seed=args.seed)
    result = {
        "machine": machine(),
        "setup": {
            "matrix": [rows, cols], "weights": rows * cols, "nonzeros": int(np.count_nonzero(w)),
            "distribution": "Laplace(scale=0.05)", "pruning": "magnitude, keep 10%",
            "quantization": "k-means, 5 bits (32 values), linear init", "index_bits": 5,
            "repeats": repeats, "smoke": bool(args.smoke),
            "zstandard": zstandard.__version__,
        },
        "streams": {k: bench_stream(v, repeats) for k, v in streams(w, 5).items()},
        "artifact": bench_artifact(w),
    }  # fmt: skip
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

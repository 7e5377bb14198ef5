"""Size accounting of a ``.jcz`` artifact: where the bytes go, and the compression ratio.

Deep Compression (Han et al., 2016, arXiv:1510.00149, tables 1-6) reports, per layer, the storage of
the weights, of the sparse indices and of the codebook, the bits per nonzero weight, and the
compression rate against the dense float32 model. :func:`report` gives the same accounting for any
artifact, exactly, from its JSON description: every byte of the file is attributed to a leaf's
streams or to the shared overhead.

Per leaf, the byte categories are

* ``values``: raw values (the nonzero entries of a sparse leaf, or every element of a dense one);
* ``indices``: the coded codebook-index stream (when the values go through a codebook);
* ``gaps``: the coded relative-index stream of a sparse leaf;
* ``codebook``: the distinct values;
* ``tables``: what the entropy decoder needs (alphabets, Huffman code lengths, ANS frequencies);
* ``metadata``: the leaf's JSON description in the file.

``overhead`` is the rest of the file: the fixed header, the checksums, the tree structure and the
user metadata. The compression ratio is ``dense_bytes / file_bytes``, where ``dense_bytes`` is
what :func:`jaxcomp.encode.pack` recorded (4 bytes per stored element unless the caller gave the
dense model or a number) or the ``dense_bytes=`` given here.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np

from jaxcomp.encode._artifact import dense_size
from jaxcomp.encode._artifact import pack
from jaxcomp.encode._artifact import read_artifact

__all__ = ["CATEGORIES", "report", "report_markdown"]

CATEGORIES = ("values", "indices", "gaps", "codebook", "tables", "metadata")
"""The byte categories of a leaf in :func:`report`."""


def _n(ref: Any) -> int:
    return int(ref[1])


def _stream(spec: dict[str, Any], into: dict[str, int], category: str) -> dict[str, Any]:
    payload = _n(spec["payload"])
    tables = _n(spec["alphabet"]) + _n(spec["table"])
    into[category] += payload
    into["tables"] += tables
    h = float(spec["h"])
    return {
        "coder": spec["coder"],
        "symbols": int(spec["n"]),
        "coded_bytes": payload,
        "table_bytes": tables,
        "entropy_bytes": h / 8.0,
        "coded_over_entropy": (8.0 * payload / h) if h > 0 else None,
    }


def _leaf_report(spec: dict[str, Any], meta_ratio: float = 1.0) -> dict[str, Any]:
    sizes = dict.fromkeys(CATEGORIES, 0)
    streams: dict[str, Any] = {}
    values = spec["values"]
    if values["kind"] == "raw":
        sizes["values"] += _n(values["data"])
    else:
        sizes["codebook"] += _n(values["codebook"])
        streams["indices"] = _stream(values["indices"], sizes, "indices")
    if spec["codec"] == "sparse":
        streams["gaps"] = _stream(spec["gaps"], sizes, "gaps")
    # the leaf's share of the (compressed) metadata section
    sizes["metadata"] = round(meta_ratio * len(json.dumps(spec, separators=(",", ":")).encode()))
    total = sum(sizes.values())
    elements = int(np.prod(spec["shape"], dtype=np.int64))
    nnz = int(spec["nnz"])
    return {
        "path": spec["path"],
        "shape": list(spec["shape"]),
        "dtype": spec["dtype"],
        "codec": spec["codec"],
        "values_kind": values["kind"],
        "index_bits": spec.get("index_bits"),
        "elements": elements,
        "nonzeros": nnz,
        "entries": int(spec.get("entries", elements)),
        "bytes": sizes,
        "total_bytes": total,
        "dense_bytes": 4 * elements,
        "bits_per_nonzero": 8.0 * total / nnz if nnz else None,
        "streams": streams,
    }


def report(artifact: Any, *, dense_bytes: Any = None, **pack_kwargs: Any) -> dict[str, Any]:
    """Where the bytes of an artifact go, per leaf and per stream, and the compression ratio.

    Args:
      artifact: the bytes of a ``.jcz`` artifact, a path to one, or a pytree (which is packed
        with ``pack_kwargs`` first).
      dense_bytes: the dense size to compare against: None for the one the artifact recorded,
        an int, or the dense params tree (4 bytes per element of its floating-point leaves).
      **pack_kwargs: arguments of :func:`jaxcomp.encode.pack` when ``artifact`` is a pytree.

    Returns:
      A dict with ``file_bytes``, ``dense_bytes``, ``compression_ratio``, ``elements``,
      ``nonzeros``, ``bits_per_nonzero`` (the whole file over the nonzero stored elements),
      ``bytes`` (the sum of each category over the leaves, and ``overhead``), ``coder``,
      ``metadata`` (the user's) and ``leaves``: one dict per leaf with its path, shape, dtype,
      codec, counts, ``bytes`` per category, ``total_bytes``, ``dense_bytes`` (4 bytes per
      element), ``bits_per_nonzero`` and, per coded stream, the symbol count, coded bytes,
      table bytes, entropy bound (``n * H / 8`` bytes) and coded size over that bound.
      The categories and the overhead add up to ``file_bytes`` exactly.

    Raises:
      CorruptArtifactError: if the artifact is damaged.
      ValueError: for bad ``pack_kwargs``, or ``pack_kwargs`` given with bytes or a path.
    """
    is_artifact = isinstance(artifact, bytes | bytearray | memoryview | str | os.PathLike)
    if pack_kwargs and is_artifact:
        raise ValueError(f"report: {sorted(pack_kwargs)} apply to a pytree, not to an artifact")
    if isinstance(artifact, bytes | bytearray | memoryview):
        data = artifact
    elif isinstance(artifact, str | os.PathLike):
        with open(os.fspath(artifact), "rb") as f:
            data = f.read()
    else:
        data = pack(artifact, **({"dense_bytes": dense_bytes} | pack_kwargs))
    meta, _ = read_artifact(data)
    stored = struct.unpack("<I", bytes(data[8:12]))[0]
    ratio = stored / len(json.dumps(meta, separators=(",", ":")).encode())
    leaves = [_leaf_report(s, ratio) for s in meta["leaves"]]
    totals = {c: sum(leaf["bytes"][c] for leaf in leaves) for c in CATEGORIES}
    file_bytes = len(data)
    totals["overhead"] = file_bytes - sum(totals.values())
    dense = int(meta["dense_bytes"]) if dense_bytes is None else dense_size(dense_bytes)
    nnz = sum(leaf["nonzeros"] for leaf in leaves)
    return {
        "coder": meta["coder"],
        "metadata": meta["metadata"],
        "file_bytes": file_bytes,
        "dense_bytes": dense,
        "compression_ratio": dense / file_bytes,
        "elements": sum(leaf["elements"] for leaf in leaves),
        "nonzeros": nnz,
        "bits_per_nonzero": 8.0 * file_bytes / nnz if nnz else None,
        "bytes": totals,
        "leaves": leaves,
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def report_markdown(rep: dict[str, Any]) -> str:
    """A Markdown table of a :func:`report`: one row per leaf and a total row.

    Args:
      rep: the dict that :func:`report` returned.

    Returns:
      The table, with the compression ratio on the last line.
    """
    cols = ["leaf", "shape", "codec", "nonzeros", *CATEGORIES, "total", "bits/nz"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for leaf in rep["leaves"]:
        row = [leaf["path"] or "<root>", "x".join(map(str, leaf["shape"])) or "()", leaf["codec"]]
        row += [leaf["nonzeros"], *(leaf["bytes"][c] for c in CATEGORIES)]
        row += [leaf["total_bytes"], leaf["bits_per_nonzero"]]
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    b = rep["bytes"]
    row = ["**total**", "", "", rep["nonzeros"], *(b[c] for c in CATEGORIES)]
    row += [rep["file_bytes"], rep["bits_per_nonzero"]]
    lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    lines.append(
        f"\n{rep['file_bytes']} bytes ({b['overhead']} of header, structure and checksums) against "
        f"{rep['dense_bytes']} dense: {rep['compression_ratio']:.2f}x"
    )
    return "\n".join(lines)

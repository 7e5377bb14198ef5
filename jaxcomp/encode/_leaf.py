"""How one array leaf is stored in a ``.jcz`` artifact: its codec and streams.

Deep Compression (Han et al., 2016, arXiv:1510.00149, sections 2-4) stores a layer as a sparse
relative-index stream plus the codebook indices of the nonzeros, both Huffman coded, plus the
codebook. This module applies that recipe to any array leaf, choosing the smallest of:

* codec ``"dense"``: every element, either as raw little-endian values or, when the leaf holds at
  most ``codebook_max`` distinct values, as a codebook of those values and a coded stream of
  codebook indices (a k-means shared-weight layer, or an int8 code array);
* codec ``"sparse"`` (leaves with exact zeros): the relative-index gaps as a coded stream and the
  entries' values, raw or through a codebook as above (filler zeros are values like any other).

A leaf is described by a JSON-able spec whose byte strings (the ``blobs``: raw values, codebooks,
code tables and coded payloads) are written to the artifact's payload section and replaced by
``[offset, nbytes]`` there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxcomp.encode._coders import decode_symbols
from jaxcomp.encode._coders import encode_symbols
from jaxcomp.encode._sparse import RelativeIndex
from jaxcomp.encode._sparse import bit_view
from jaxcomp.encode._sparse import from_relative_index
from jaxcomp.encode._sparse import relative_index
from jaxcomp.encode._stream import CodedStream

__all__ = ["blob_bytes", "check_dtype", "decode_leaf", "encode_leaf", "spec_cost"]

_TABLE_DTYPES = ("uint8", "uint16", "uint32")


def check_dtype(dtype: np.dtype, path: str) -> None:
    """ValueError unless leaves of ``dtype`` can be stored bit for bit and named in JSON."""
    ok = (
        dtype.fields is None
        and not dtype.hasobject
        and dtype.kind not in "OSUMm"
        and dtype.itemsize in (1, 2, 4, 8)
    )
    try:
        ok = ok and np.dtype(dtype.name) == dtype.newbyteorder("=")
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"leaf {path!r} has dtype {dtype}, which artifacts cannot store; numeric dtypes of "
            "1, 2, 4 or 8 bytes are supported (bool, ints, floats incl. bfloat16, complex64)"
        )


def _le_bytes(bits: np.ndarray) -> bytes:
    return bits.astype(bits.dtype.newbyteorder("<"), copy=False).tobytes()


def _from_le(data: Any, dtype: np.dtype) -> np.ndarray:
    """Little-endian bytes to an array of ``dtype`` (through its unsigned bit patterns)."""
    uint = bit_view(np.zeros(0, dtype)).dtype
    if len(data) % dtype.itemsize:
        raise ValueError(f"{len(data)} bytes are not whole {dtype} items")
    return np.frombuffer(data, uint.newbyteorder("<")).astype(uint).view(dtype)


def _stream_spec(s: CodedStream) -> dict[str, Any]:
    # The code table in the narrowest unsigned type that holds it (ANS counts vary in range).
    table_dtype = np.min_scalar_type(int(s.table.max()) if s.table.size else 0)
    return {
        "coder": s.coder, "n": s.n, "dtype": s.dtype, "nbits": s.nbits, "width": s.width,
        "h": s.entropy_bits, "alphabet": _le_bytes(s.alphabet), "tdtype": table_dtype.name,
        "table": _le_bytes(s.table.astype(table_dtype)), "payload": bytes(s.payload),
    }  # fmt: skip


def _stream(spec: dict[str, Any], blob: Callable[[Any], Any]) -> np.ndarray:
    dtype = np.dtype(spec["dtype"])
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        raise ValueError(f"a symbol stream has dtype {dtype}")
    if spec["tdtype"] not in _TABLE_DTYPES:
        raise ValueError(f"a code table has dtype {spec['tdtype']!r}")
    stream = CodedStream(
        coder=spec["coder"], n=int(spec["n"]), dtype=dtype.name,
        alphabet=_from_le(blob(spec["alphabet"]), dtype),
        table=_from_le(blob(spec["table"]), np.dtype(spec["tdtype"])),
        payload=bytes(blob(spec["payload"])), nbits=int(spec["nbits"]),
        width=int(spec["width"]), entropy_bits=float(spec["h"]),
    )  # fmt: skip
    return decode_symbols(stream)


def _value_candidates(values: np.ndarray, coder: str, codebook_max: int) -> list[dict[str, Any]]:
    """Raw values, and a codebook plus index stream when there are few distinct values."""
    bits = bit_view(values)
    out: list[dict[str, Any]] = [{"kind": "raw", "data": _le_bytes(bits)}]
    if bits.size:
        codebook, ranks = np.unique(bits, return_inverse=True)
        if codebook.size <= codebook_max:
            rank_dtype = np.min_scalar_type(max(codebook.size - 1, 0))
            stream = _stream_spec(encode_symbols(ranks.astype(rank_dtype), coder=coder))
            out.append({"kind": "codebook", "codebook": _le_bytes(codebook), "indices": stream})
    return out


def _values(spec: dict[str, Any], n: int, dtype: np.dtype, blob: Callable[[Any], Any]) -> Any:
    if spec["kind"] == "raw":
        values = _from_le(blob(spec["data"]), dtype)
    elif spec["kind"] == "codebook":
        codebook = bit_view(_from_le(blob(spec["codebook"]), dtype))
        idx = _stream(spec["indices"], blob)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= codebook.size):
            raise ValueError("a codebook index is out of range")
        values = codebook[idx.astype(np.int64)].view(dtype)
    else:
        raise ValueError(f"unknown values kind {spec['kind']!r}")
    if values.size != n:
        raise ValueError(f"{values.size} values stored where {n} are needed")
    return values


def blob_bytes(spec: Any) -> int:
    """The total size of the byte strings inside a spec (before they are written)."""
    if isinstance(spec, bytes):
        return len(spec)
    if isinstance(spec, dict):
        return sum(blob_bytes(v) for v in spec.values())
    return 0


def _placeholders(spec: Any) -> Any:
    if isinstance(spec, bytes):
        return [len(spec), len(spec)]  # about as many digits as the [offset, nbytes] written
    if isinstance(spec, dict):
        return {k: _placeholders(v) for k, v in spec.items()}
    return spec


def spec_cost(spec: dict[str, Any]) -> int:
    """About the bytes a leaf spec takes in the file: its blobs plus its JSON description."""
    return blob_bytes(spec) + len(json.dumps(_placeholders(spec), separators=(",", ":")))


def encode_leaf(
    path: str, x: np.ndarray, *, coder: str, index_bits: int, codebook_max: int, sparse: bool | None
) -> dict[str, Any]:
    """The smallest spec for leaf ``x`` (see the module docstring), with blobs as bytes.

    Args:
      path: the leaf's ``/``-joined path (for the spec and messages).
      x: a numpy array of a supported dtype (see :func:`check_dtype`).
      coder: the coder of the integer streams.
      index_bits: the relative-index gap width for this leaf.
      codebook_max: the most distinct values a codebook may hold.
      sparse: None to pick the smaller codec, True to use the sparse codec whenever the leaf has
        a zero, False never to use it.

    Returns:
      The JSON-able spec, blobs still as bytes.
    """
    check_dtype(x.dtype, path)
    if x.dtype.byteorder == ">":
        x = x.astype(x.dtype.newbyteorder("="))
    flat = np.ascontiguousarray(x).reshape(-1)
    nnz = int(np.count_nonzero(bit_view(flat)))
    head = {"path": path, "shape": list(x.shape), "dtype": x.dtype.name, "nnz": nnz}
    dense = [
        {**head, "codec": "dense", "values": v}
        for v in _value_candidates(flat, coder, codebook_max)
    ]
    if sparse is False or nnz == flat.size:
        return min(dense, key=spec_cost)
    r = relative_index(x, index_bits=index_bits)
    gaps = encode_symbols(r.gaps, coder=coder, width=index_bits if coder == "raw" else None)
    sparse_specs = [
        {**head, "codec": "sparse", "index_bits": index_bits, "entries": int(r.gaps.size),
         "gaps": _stream_spec(gaps), "values": v}
        for v in _value_candidates(r.values, coder, codebook_max)
    ]  # fmt: skip
    return min(sparse_specs if sparse else dense + sparse_specs, key=spec_cost)


def decode_leaf(spec: dict[str, Any], blob: Callable[[Any], Any]) -> np.ndarray:
    """The array a leaf spec describes; ``blob(ref)`` returns the bytes of an ``[offset, n]``.

    Raises:
      ValueError, KeyError, TypeError: if the spec is malformed or inconsistent (the artifact
        reader turns these into ``CorruptArtifactError``).
    """
    dtype = np.dtype(spec["dtype"])
    check_dtype(dtype, spec["path"])
    shape = tuple(int(d) for d in spec["shape"])
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    size = int(np.prod(shape, dtype=np.int64))
    if spec["codec"] == "dense":
        return _values(spec["values"], size, dtype, blob).reshape(shape)
    if spec["codec"] == "sparse":
        bits = int(spec["index_bits"])
        gaps = _stream(spec["gaps"], blob)
        values = _values(spec["values"], int(spec["entries"]), dtype, blob)
        out = from_relative_index(RelativeIndex(shape, bits, gaps, values))
        if int(np.count_nonzero(bit_view(out))) != int(spec["nnz"]):
            raise ValueError("the decoded leaf does not have the stored number of nonzeros")
        return out
    raise ValueError(f"unknown codec {spec['codec']!r}")

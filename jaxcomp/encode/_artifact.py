"""The ``.jcz`` artifact: a compressed params pytree in one checksummed file.

It stores a tree the way Deep Compression (Han, Mao and Dally, "Deep Compression", ICLR 2016,
arXiv:1510.00149, sections 2-4) stores a network: every leaf in relative-index sparse form or
dense, its values through a codebook where few are distinct, and the integer streams entropy coded
(canonical Huffman as in the paper, ANS, or fixed-width ``"raw"``). Layout, all integers
little-endian (``docs/encode.md`` has it byte by byte)::

    0   magic            4 bytes  b"JCZ\\x00"
    4   format version   uint16   (1)
    6   flags            uint16   bit 0: the metadata is zlib-compressed (set by this writer);
                                  other bits reserved (0)
    8   M                uint32   length of the (compressed) JSON metadata
    12  P                uint64   length of the payload
    20  metadata         M bytes  UTF-8 JSON (zlib-deflated when flag 0 is set): user metadata,
                                  tree structure, leaf specs
    +   CRC32            uint32   of bytes [0, 20 + M)
    +   payload          P bytes  the blobs the leaf specs point to ([offset, nbytes])
    +   CRC32            uint32   of the payload
    +   SHA-256          32 bytes of everything before it

Reading checks the magic, the version, the lengths and the checksums before it parses anything, and
any inconsistency found while decoding is a :class:`~jaxcomp.errors.CorruptArtifactError`: a damaged
file is an error, never a wrong model. Nothing is unpickled or evaluated; NamedTuple nodes are
re-imported only from ``jaxcomp`` modules.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxcomp.encode._coders import check_coder
from jaxcomp.encode._leaf import decode_leaf
from jaxcomp.encode._leaf import encode_leaf
from jaxcomp.encode._sparse import default_index_bits
from jaxcomp.encode._treedef import tree_from_json
from jaxcomp.encode._treedef import tree_to_json
from jaxcomp.errors import CorruptArtifactError

__all__ = [
    "FLAG_ZLIB_METADATA",
    "FORMAT_VERSION",
    "MAGIC",
    "dense_size",
    "load",
    "pack",
    "read_artifact",
    "save",
    "unpack",
]

MAGIC = b"JCZ\x00"
"""The first four bytes of every ``.jcz`` artifact."""

FORMAT_VERSION = 1
FLAG_ZLIB_METADATA = 1
_MAX_METADATA = 1 << 28
"""The artifact format version this module writes and reads."""

_HEADER = struct.Struct("<4sHHIQ")
_TRAILER = 4 + 4 + 32  # two CRC32s and the SHA-256


def _index_bits_fn(index_bits: Any) -> Callable[[str, np.ndarray], int]:
    if index_bits is None:
        return lambda path, x: default_index_bits(x.ndim)
    if callable(index_bits):
        return index_bits
    if isinstance(index_bits, bool) or not isinstance(index_bits, int) or not 1 <= index_bits <= 16:
        raise ValueError(
            f"pack: index_bits must be None, an int in [1, 16] or a callable (path, array) -> "
            f"int, got {index_bits!r}"
        )
    return lambda path, x: index_bits


def dense_size(dense_bytes: Any, leaves: list[tuple[str, Any]] | None = None) -> int:
    """The dense size a ratio is taken against (see ``dense_bytes`` of :func:`pack`).

    Raises:
      ValueError: if ``dense_bytes`` is negative, or a tree without floating-point leaves.
    """
    if dense_bytes is None:
        return 4 * sum(int(np.prod(x.shape, dtype=np.int64)) for _, x in leaves or [])
    if isinstance(dense_bytes, int | np.integer) and not isinstance(dense_bytes, bool):
        if dense_bytes < 0:
            raise ValueError(f"dense_bytes must be >= 0, got {dense_bytes}")
        return int(dense_bytes)
    floats = [
        x
        for x in jax.tree.leaves(dense_bytes)
        if hasattr(x, "dtype") and np.issubdtype(np.dtype(x.dtype), np.inexact)
    ]
    if not floats:
        raise ValueError(
            "dense_bytes must be None, an int, or the dense params tree (which has no "
            "floating-point leaves here)"
        )
    return 4 * sum(int(np.prod(x.shape, dtype=np.int64)) for x in floats)


def _writer(coder: str) -> dict[str, str | None]:
    """The versions that wrote an artifact (provenance; ANS decoding uses constriction's model)."""
    names = ["jaxcomp"] + (["constriction"] if coder == "ans" else [])
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _host_leaf(path: str, x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        raise ValueError(
            f"leaf {path!r} is a PRNG key array; store jax.random.key_data(key) instead"
        )
    return np.asarray(x)


def _write_blobs(spec: Any, chunks: list[bytes], offset: list[int]) -> Any:
    """Replaces every bytes value of ``spec`` by ``[offset, nbytes]``, appending it to chunks."""
    if isinstance(spec, bytes):
        ref = [offset[0], len(spec)]
        chunks.append(spec)
        offset[0] += len(spec)
        return ref
    if isinstance(spec, dict):
        return {k: _write_blobs(v, chunks, offset) for k, v in spec.items()}
    return spec


def pack(
    tree: Any,
    *,
    metadata: dict[str, Any] | None = None,
    coder: str = "huffman",
    index_bits: int | Callable[[str, np.ndarray], int] | None = None,
    codebook_max: int = 256,
    sparse: bool | None = None,
    dense_bytes: Any = None,
) -> bytes:
    """Encodes a params pytree as ``.jcz`` bytes.

    Args:
      tree: dicts (str or int keys), lists, tuples, ``None`` and NamedTuples of ``jaxcomp``
        classes, with numpy or jax arrays as leaves (dtypes of 1, 2, 4 or 8 bytes); or a Flax
        ``nnx.State``, stored as its pure dict (``nnx.to_pure_dict``, the Variable types are
        not kept) and given back by :func:`unpack` as an ``nnx.State`` of arrays, ready for
        ``nnx.update(model, state)``.
      metadata: a JSON-serializable dict stored alongside (a model name, accuracy, settings).
      coder: how the integer streams (relative-index gaps and codebook indices) are stored:
        ``"huffman"`` (canonical Huffman, as in Deep Compression), ``"ans"`` (ANS through
        ``constriction``) or ``"raw"`` (fixed width: ``index_bits`` per gap, ``ceil(log2 K)``
        bits per index into a codebook of ``K`` values).
      index_bits: bits per relative-index gap: None for the paper's defaults (8 for 4-d
        convolution kernels and other leaves of 3 or more dims, 5 otherwise), an int in
        ``[1, 16]``, or a callable ``(path, array) -> int``.
      codebook_max: the most distinct values a leaf's codebook may hold (default 256).
      sparse: None picks the smaller of the dense and relative-index codecs per leaf; True uses
        the relative-index codec for every leaf with a zero (the paper's format); False never.
      dense_bytes: the size that the compression ratio is taken against: None for 4 bytes per
        stored element (a float32 model of the same number of elements), an int, or the dense
        params tree (4 bytes per element of its floating-point leaves).

    Returns:
      The artifact's bytes; :func:`unpack` gives back the tree bit for bit.

    Raises:
      ValueError: for a bad argument, a container or leaf that cannot be stored (the message
        names its path), a NamedTuple class from outside ``jaxcomp``, or metadata that is not
        JSON-serializable.

    Examples:
        >>> import numpy as np
        >>> tree = {"w": np.array([[0.0, 0.5], [0.0, 0.5]], np.float32), "step": np.asarray(3)}
        >>> back, meta = unpack(pack(tree, metadata={"model": "toy"}))
        >>> meta, back["w"].tolist(), back["step"].dtype
        ({'model': 'toy'}, [[0.0, 0.5], [0.0, 0.5]], dtype('int64'))
    """
    check_coder(coder, "pack")
    bits_for = _index_bits_fn(index_bits)
    if isinstance(codebook_max, bool) or not isinstance(codebook_max, int):
        raise ValueError(f"pack: codebook_max must be an int in [1, 65536], got {codebook_max!r}")
    if not 1 <= codebook_max <= 1 << 16:
        raise ValueError(f"pack: codebook_max must be in [1, 65536], got {codebook_max}")
    if sparse not in (None, True, False):
        raise ValueError(f"pack: sparse must be None, True or False, got {sparse!r}")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError(f"pack: metadata must be a dict, got {type(metadata).__name__}")
    is_nnx_state = isinstance(tree, nnx.State)
    node, leaves = tree_to_json(nnx.to_pure_dict(tree) if is_nnx_state else tree)
    specs = []
    for path, x in leaves:  # a loop over leaves; each leaf is encoded vectorized
        arr = _host_leaf(path, x)
        bits = bits_for(path, arr)
        spec = encode_leaf(
            path, arr, coder=coder, index_bits=bits, codebook_max=codebook_max, sparse=sparse
        )
        specs.append(spec)
    chunks: list[bytes] = []
    offset = [0]
    meta = {
        "format": "jcz",
        "writer": _writer(coder),
        "metadata": metadata,
        "coder": coder,
        "dense_bytes": dense_size(dense_bytes, leaves),
        "tree": node,
        "leaves": [_write_blobs(s, chunks, offset) for s in specs],
    }
    if is_nnx_state:
        meta["nnx_state"] = True
    try:
        text = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"pack: metadata must be JSON-serializable (finite numbers): {e}") from e
    payload = b"".join(chunks)
    text = zlib.compress(text, 9)  # the per-leaf JSON is a large share of a small model's bytes
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, FLAG_ZLIB_METADATA, len(text), len(payload)) + text
    body = head + struct.pack("<I", zlib.crc32(head)) + payload
    body += struct.pack("<I", zlib.crc32(payload))
    return body + hashlib.sha256(body).digest()


def read_artifact(data: bytes | bytearray | memoryview) -> tuple[dict[str, Any], memoryview]:
    """Checks an artifact's header, lengths and checksums; returns its JSON and payload.

    Args:
      data: the bytes of a ``.jcz`` artifact.

    Returns:
      ``(meta, payload)``: the parsed JSON metadata and a view of the payload section.

    Raises:
      CorruptArtifactError: if the data is truncated, has trailing bytes, is not a ``.jcz``
        artifact, has another format version, or fails a checksum (the message says which).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"read_artifact: data must be bytes, got {type(data).__name__}")
    buf = memoryview(data).cast("B")
    if bytes(buf[: len(MAGIC)]) != MAGIC[: len(buf)]:
        raise CorruptArtifactError(f"not a .jcz artifact: the magic bytes are not {MAGIC!r}")
    if len(buf) < _HEADER.size:
        raise CorruptArtifactError(
            f"truncated artifact: {len(buf)} bytes, shorter than the {_HEADER.size}-byte header"
        )
    _, version, flags, m, p = _HEADER.unpack(buf[: _HEADER.size])
    if version != FORMAT_VERSION:
        raise CorruptArtifactError(
            f"unsupported .jcz format version {version}; this jaxcomp reads version "
            f"{FORMAT_VERSION}"
        )
    if flags & ~FLAG_ZLIB_METADATA:
        raise CorruptArtifactError(f"corrupt header: reserved flag bits are set ({flags:#06x})")
    expected = _HEADER.size + m + p + _TRAILER
    if len(buf) < expected:
        raise CorruptArtifactError(
            f"truncated artifact: {len(buf)} bytes where the header announces {expected}"
        )
    if len(buf) > expected:
        raise CorruptArtifactError(
            f"corrupt artifact: {len(buf) - expected} trailing bytes after the {expected} the "
            "header announces (or a damaged length field)"
        )
    meta_end = _HEADER.size + m
    pay_start = meta_end + 4
    pay_end = pay_start + p
    (crc_meta,) = struct.unpack("<I", buf[meta_end:pay_start])
    (crc_pay,) = struct.unpack("<I", buf[pay_end : pay_end + 4])
    if zlib.crc32(buf[:meta_end]) != crc_meta:
        raise CorruptArtifactError("corrupt artifact: the header/metadata section fails its CRC32")
    if zlib.crc32(buf[pay_start:pay_end]) != crc_pay:
        raise CorruptArtifactError("corrupt artifact: the payload section fails its CRC32")
    if hashlib.sha256(buf[: pay_end + 4]).digest() != bytes(buf[pay_end + 4 :]):
        raise CorruptArtifactError("corrupt artifact: the SHA-256 checksum does not match")
    text = bytes(buf[_HEADER.size : meta_end])
    if flags & FLAG_ZLIB_METADATA:
        try:
            inflater = zlib.decompressobj()
            text = inflater.decompress(text, _MAX_METADATA)
            if inflater.unconsumed_tail or not inflater.eof:
                raise zlib.error("the metadata does not inflate within its limit")
        except zlib.error as e:
            raise CorruptArtifactError(
                f"corrupt artifact: the metadata does not inflate: {e}"
            ) from e
    try:
        meta = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptArtifactError(f"corrupt artifact: the metadata is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != "jcz":
        raise CorruptArtifactError("corrupt artifact: the metadata is not a jcz description")
    for key, kind in (("metadata", dict), ("leaves", list), ("tree", dict), ("coder", str)):
        if not isinstance(meta.get(key), kind):
            raise CorruptArtifactError(f"corrupt artifact: metadata field {key!r} is missing")
    return meta, buf[pay_start:pay_end]


def _blob_reader(payload: memoryview) -> Callable[[Any], memoryview]:
    def blob(ref: Any) -> memoryview:
        ok = isinstance(ref, list) and len(ref) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ref)
        if not ok or ref[0] + ref[1] > len(payload):
            raise CorruptArtifactError(f"a blob reference {ref!r} is outside the payload")
        return payload[ref[0] : ref[0] + ref[1]]

    return blob


def unpack(data: bytes | bytearray | memoryview) -> tuple[Any, dict[str, Any]]:
    """Decodes ``.jcz`` bytes into ``(tree, metadata)``.

    The tree has the containers that were packed (dicts with their key order, lists, tuples,
    NamedTuples, ``None``) and numpy arrays bit-identical to the packed leaves, with their dtypes
    (jax arrays come back as numpy arrays; ``jnp.asarray`` or ``jax.device_put`` them if needed).
    A packed ``nnx.State`` comes back as an ``nnx.State`` over its pure dict.

    Args:
      data: the artifact's bytes.

    Returns:
      ``(tree, metadata)``: the tree and the user metadata dict given to :func:`pack`.

    Raises:
      CorruptArtifactError: if the data is truncated, corrupted, of another format version, or
        names a class outside ``jaxcomp``; never a wrong tree.
    """
    meta, payload = read_artifact(data)
    blob = _blob_reader(payload)
    try:
        leaves = [decode_leaf(spec, blob) for spec in meta["leaves"]]
        tree = tree_from_json(meta["tree"], leaves)
        if meta.get("nnx_state") is True:
            tree = nnx.State(tree)
    except CorruptArtifactError:
        raise
    except Exception as e:  # anything inconsistent in a file that passed its checksums
        raise CorruptArtifactError(
            f"corrupt artifact: inconsistent content ({type(e).__name__}: {e})"
        ) from e
    return tree, meta["metadata"]


def save(path: str | os.PathLike[str], tree: Any, **kwargs: Any) -> int:
    """Writes ``pack(tree, **kwargs)`` to ``path`` atomically; returns the number of bytes.

    The bytes go to a temporary file in the same folder, are flushed to disk, and replace
    ``path`` with ``os.replace``: an existing file is either the old one or the new one, never
    half written, and the temporary file is removed if anything fails.

    Args:
      path: the file to write (conventionally ``*.jcz``).
      tree: the pytree to store (see :func:`pack`).
      **kwargs: ``metadata``, ``coder``, ``index_bits``, ``codebook_max``, ``sparse`` and
        ``dense_bytes``, as for :func:`pack`.

    Returns:
      The size of the written file in bytes.

    Raises:
      ValueError: as :func:`pack`.
      OSError: if the folder cannot be written.
    """
    data = pack(tree, **kwargs)
    target = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(target)
    mode = os.stat(target).st_mode & 0o777 if os.path.exists(target) else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return len(data)


def load(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Reads a ``.jcz`` file: ``(tree, metadata)`` as :func:`unpack` gives them.

    Raises:
      FileNotFoundError: if there is no such file.
      CorruptArtifactError: if the file is truncated, corrupted or of another format version.
    """
    with open(os.fspath(path), "rb") as f:
        return unpack(f.read())

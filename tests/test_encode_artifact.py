"""Tests of the .jcz artifact and its size report (jaxcomp.encode; Han et al., 2016)."""

import collections
import dataclasses
import hashlib
import itertools
import json
import os
import struct
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxcomp as jc
from jaxcomp import encode
from jaxcomp.core import ChainState
from jaxcomp.core import EmptyState
from jaxcomp.core import MaskedNode
from jaxcomp.errors import CorruptArtifactError

SETTINGS = settings(max_examples=25, deadline=None)


def _tree():
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(3, 3, 4, 8)).astype(np.float32)
    conv[rng.random(conv.shape) < 0.8] = 0.0
    shared = rng.choice(
        np.float32([-0.5, -0.1, 0.0, 0.2, 0.7]), size=(24, 10), p=[0.1, 0.1, 0.6, 0.1, 0.1]
    )
    codes = rng.integers(-3, 4, size=(6, 5)).astype(np.int8)
    odd = np.zeros(12, np.float32)
    odd[2], odd[5] = -0.0, np.nan
    odd = odd.view(np.uint32).copy()
    odd[9] = 0x7FC00077  # NaN with a payload
    return {
        "Conv_0": {"kernel": jnp.asarray(conv), "bias": rng.normal(size=8).astype(np.float32)},
        "Dense_0": {"kernel": shared.astype(np.float32)},
        "quant": ChainState(states=(codes, np.float32([0.05]), EmptyState())),
        "misc": [
            odd.view(np.float32),
            (jnp.arange(5, dtype=jnp.bfloat16), None, MaskedNode()),
            np.array([True, False, False, True]),
            np.asarray(7, np.int64),
            np.zeros((0, 3), np.float16),
        ],
        "ints": {3: np.zeros((2, 2), np.float32), 1: np.ones(2, np.uint16)},
    }


def _assert_same_leaves(a, b):
    """Same containers (types, key order) and bit-identical numpy leaves of the same dtype."""
    if isinstance(a, np.ndarray | jax.Array):
        x = np.asarray(a)
        assert isinstance(b, np.ndarray)
        assert b.dtype == x.dtype and b.shape == x.shape
        assert b.tobytes() == x.tobytes()  # bit-identical, NaN payloads and -0.0 included
        return
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same_leaves(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_leaves(x, y)
    else:
        assert a is None and b is None


@pytest.fixture(scope="module")
def tree():
    return _tree()


@pytest.fixture(scope="module")
def artifact(tree):
    return encode.pack(tree, metadata={"model": "toy", "acc": 0.5})


@pytest.mark.parametrize("coder", encode.CODERS)
@pytest.mark.parametrize("sparse", [None, True, False])
def test_round_trip_is_bit_identical_with_the_same_containers(tree, coder, sparse):
    back, meta = encode.unpack(encode.pack(tree, coder=coder, sparse=sparse, metadata={"m": 1}))
    assert meta == {"m": 1}
    _assert_same_leaves(tree, back)
    assert type(back["quant"]) is ChainState and type(back["quant"].states[2]) is EmptyState
    assert type(back["misc"][1][2]) is MaskedNode and back["misc"][1][1] is None
    assert list(back) == list(tree) and list(back["ints"]) == [3, 1]


def test_pack_is_deterministic(tree, artifact):
    assert encode.pack(tree, metadata={"model": "toy", "acc": 0.5}) == artifact


def test_layout_matches_the_documented_format(artifact):
    magic, version, flags, m, p = struct.unpack("<4sHHIQ", artifact[:20])
    assert (magic, version, flags) == (b"JCZ\x00", encode.FORMAT_VERSION, 1)
    assert len(artifact) == 20 + m + 4 + p + 4 + 32
    (crc_meta,) = struct.unpack("<I", artifact[20 + m : 24 + m])
    assert crc_meta == zlib.crc32(artifact[: 20 + m])
    (crc_pay,) = struct.unpack("<I", artifact[24 + m + p : 28 + m + p])
    assert crc_pay == zlib.crc32(artifact[24 + m : 24 + m + p])
    assert hashlib.sha256(artifact[:-32]).digest() == artifact[-32:]
    meta = json.loads(zlib.decompress(artifact[20 : 20 + m]))
    assert meta["metadata"] == {"model": "toy", "acc": 0.5}
    assert meta["tree"]["t"] == "dict" and meta["tree"]["k"][:2] == ["Conv_0", "Dense_0"]
    blobs = [r for s in meta["leaves"] for r in _refs(s)]
    assert sum(n for _, n in blobs) == p  # the payload is exactly the blobs, nothing else
    ends = sorted((o, o + n) for o, n in blobs)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ends))


def _refs(spec):
    if isinstance(spec, dict):
        for k, v in spec.items():
            if k != "shape":
                yield from _refs(v)
    elif isinstance(spec, list) and len(spec) == 2 and all(isinstance(v, int) for v in spec):
        yield spec


def _reseal(meta: dict, payload: bytes, version: int = encode.FORMAT_VERSION) -> bytes:
    """Writes an artifact with the documented layout and fresh checksums around ``meta``.

    The metadata is written uncompressed (flags 0), which readers accept as well.
    """
    text = json.dumps(meta).encode()
    head = struct.pack("<4sHHIQ", b"JCZ\x00", version, 0, len(text), len(payload)) + text
    body = head + struct.pack("<I", zlib.crc32(head)) + payload
    body += struct.pack("<I", zlib.crc32(payload))
    return body + hashlib.sha256(body).digest()


def _split(artifact):
    _, _, _, m, p = struct.unpack("<4sHHIQ", artifact[:20])
    return json.loads(zlib.decompress(artifact[20 : 20 + m])), artifact[24 + m : 24 + m + p]


def test_resealed_artifact_loads(artifact, tree):
    back, _ = encode.unpack(_reseal(*_split(artifact)))
    _assert_same_leaves(tree, back)


def test_every_flipped_byte_is_detected(artifact):
    for i in range(len(artifact)):
        bad = bytearray(artifact)
        bad[i] ^= 0x10
        with pytest.raises(CorruptArtifactError):
            encode.unpack(bytes(bad))


@SETTINGS
@given(data=st.data())
def test_random_flips_and_truncations_raise_corrupt_artifact_error(artifact, data):
    bad = bytearray(artifact)
    offsets = st.lists(st.integers(0, len(bad) - 1), min_size=1, max_size=4, unique=True)
    for i in data.draw(offsets):  # distinct offsets, so that flips cannot cancel
        bad[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CorruptArtifactError):
        encode.unpack(bytes(bad))
    cut = data.draw(st.integers(0, len(artifact) - 1))
    with pytest.raises(CorruptArtifactError):
        encode.unpack(artifact[:cut])


def test_every_truncation_is_detected(artifact):
    for cut in range(len(artifact)):
        with pytest.raises(CorruptArtifactError):
            encode.unpack(artifact[:cut])
    with pytest.raises(CorruptArtifactError, match="trailing"):
        encode.unpack(artifact + b"\x00")


def test_wrong_version_and_foreign_files_are_named(artifact):
    with pytest.raises(CorruptArtifactError, match="version 2"):
        encode.unpack(_reseal(*_split(artifact), version=2))
    with pytest.raises(CorruptArtifactError, match="magic"):
        encode.unpack(b"PK\x03\x04" + artifact[4:])
    with pytest.raises(CorruptArtifactError, match="truncated"):
        encode.unpack(artifact[:10])
    with pytest.raises(CorruptArtifactError, match="SHA-256"):
        encode.unpack(artifact[:-1] + bytes([artifact[-1] ^ 1]))
    with pytest.raises(CorruptArtifactError, match="payload"):
        _, _, _, m, _ = struct.unpack("<4sHHIQ", artifact[:20])
        i = 24 + m
        encode.unpack(artifact[:i] + bytes([artifact[i] ^ 1]) + artifact[i + 1 :])


@SETTINGS
@given(data=st.data())
def test_tampered_content_with_valid_checksums_is_an_error_or_a_tree(artifact, data):
    # Checksums cannot catch a forger; the decoders must still fail cleanly, never crash.
    meta, payload = _split(artifact)
    text = bytearray(json.dumps(meta).encode())
    payload = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from([text, payload]))
        i = data.draw(st.integers(0, len(target) - 1))
        target[i] = data.draw(st.sampled_from(list(b'0123456789[]{},:"tx')))
    head = struct.pack("<4sHHIQ", b"JCZ\x00", 1, 0, len(text), len(payload)) + text
    body = head + struct.pack("<I", zlib.crc32(head)) + payload
    body += struct.pack("<I", zlib.crc32(payload))
    try:
        encode.unpack(body + hashlib.sha256(body).digest())
    except CorruptArtifactError:
        pass


def test_foreign_classes_are_refused(artifact):
    class Local(NamedTuple):
        a: np.ndarray

    with pytest.raises(ValueError, match="not from jaxcomp"):
        encode.pack({"x": Local(np.zeros(2))})
    Point = collections.namedtuple("Point", ["x"])
    with pytest.raises(ValueError, match="not from jaxcomp"):
        encode.pack(Point(np.zeros(2)))
    meta, payload = _split(artifact)
    node = meta["tree"]["c"][2]
    assert node["t"] == "namedtuple"
    for ref in ("os:system", "subprocess:Popen", "builtins:tuple"):
        node["cls"] = ref
        with pytest.raises(CorruptArtifactError, match="neither a jaxcomp class nor registered"):
            encode.unpack(_reseal(meta, payload))
    node["cls"] = "jaxcomp.core._tree:MaskedNode"  # a jaxcomp class with other fields
    with pytest.raises(CorruptArtifactError, match="fields"):
        encode.unpack(_reseal(meta, payload))


@dataclasses.dataclass(frozen=True)
class _Node:
    """A compressed node defined outside jaxcomp: arrays plus static layout fields."""

    codes: np.ndarray
    scale: np.ndarray
    axis: int | None = None
    bits: int = 8
    shape: tuple = ()
    dtype: object = np.float32


def test_dataclass_nodes_and_static_values_round_trip():
    assert encode.register_node(_Node, name="tests:_Node") == "tests:_Node"
    node = _Node(np.arange(6, dtype=np.int8).reshape(2, 3), np.float32([0.5]), axis=1, bits=4,
                 shape=(2, 3), dtype=jnp.bfloat16)  # fmt: skip
    tree = {"n": node, "v": [1, 2.5, "s", True, np.dtype("int16")]}
    back, _ = encode.unpack(encode.pack(tree))
    assert type(back["n"]) is _Node
    assert (back["n"].axis, back["n"].bits, back["n"].shape) == (1, 4, (2, 3))
    assert back["n"].dtype == np.dtype(jnp.bfloat16)
    assert back["v"] == [1, 2.5, "s", True, np.dtype("int16")]
    assert [type(v) for v in back["v"][:4]] == [int, float, str, bool]
    _assert_same_leaves(node.codes, back["n"].codes)
    foreign = dataclasses.make_dataclass("Foreign", [("x", np.ndarray)])
    with pytest.raises(ValueError, match="not from jaxcomp"):
        encode.pack({"n": foreign(np.zeros(2))})
    with pytest.raises(ValueError, match="already taken"):
        encode.register_node(foreign, name="tests:_Node")


class _Halved(NamedTuple):
    """A compressed node of a method written outside jaxcomp: a weight stored as w / 2."""

    half: jax.Array

    def to_dense(self):
        return 2.0 * self.half

    @property
    def nbytes(self):
        return self.half.nbytes


def test_a_node_defined_outside_jaxcomp_saves_after_registration(tmp_path):
    tree = {"Dense_0": {"kernel": _Halved(jnp.arange(6.0).reshape(2, 3))}}
    assert jc.is_compressed(tree["Dense_0"]["kernel"])
    with pytest.raises(ValueError, match="register_node"):
        encode.save(tmp_path / "m.jcz", tree)
    encode.register_node(_Halved, name="tests:_Halved")
    encode.save(tmp_path / "m.jcz", tree)
    back, _ = encode.load(tmp_path / "m.jcz")
    assert type(back["Dense_0"]["kernel"]) is _Halved
    np.testing.assert_array_equal(
        jc.to_dense(back)["Dense_0"]["kernel"], jc.to_dense(tree)["Dense_0"]["kernel"]
    )


@pytest.mark.parametrize(
    ("tree", "match"),
    [
        ({"a": np.float64(1.0)}, "'a'"),
        ({"a": [float("nan")]}, "a/0"),
        ({"a": b"bytes"}, "'a'"),
        ({"a": {"b": np.array(["x"])}}, "a/b"),
        ({"a": collections.OrderedDict(b=np.zeros(1))}, "OrderedDict"),
        ({(1, 2): np.zeros(1)}, "dict key"),
        ({"k": jax.random.key(0)}, "PRNG key"),
        ({"c": np.zeros(2, np.complex128)}, "complex128"),
    ],
)
def test_unsupported_nodes_and_leaves_are_named(tree, match):
    with pytest.raises(ValueError, match=match):
        encode.pack(tree)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"coder": "gzip"},
        {"index_bits": 0},
        {"index_bits": 17},
        {"codebook_max": 0},
        {"sparse": "yes"},
        {"metadata": ["a"]},
        {"metadata": {"x": float("nan")}},
        {"metadata": {"x": object()}},
        {"dense_bytes": -1},
    ],
)
def test_bad_pack_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        encode.pack({"w": np.zeros(3, np.float32)}, **kwargs)


def test_save_load_writes_atomically(tmp_path, tree, monkeypatch):
    path = tmp_path / "model.jcz"
    n = encode.save(path, tree, metadata={"model": "toy"})
    assert n == os.path.getsize(path)
    back, meta = encode.load(path)
    _assert_same_leaves(tree, back)
    assert meta == {"model": "toy"}
    before = path.read_bytes()
    with pytest.raises(ValueError):
        encode.save(path, {"bad": object()})  # fails while packing: the old file stays
    assert path.read_bytes() == before

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        encode.save(path, {"w": np.ones(3, np.float32)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.jcz"]  # no temporary left


def test_load_of_a_corrupted_file_raises(tmp_path, artifact):
    path = tmp_path / "m.jcz"
    path.write_bytes(artifact[: len(artifact) // 2])
    with pytest.raises(CorruptArtifactError, match="truncated"):
        encode.load(path)


def test_index_bits_control_gap_width_and_fillers():
    x = np.zeros((4, 64), np.float32)
    x[0, 0], x[3, 63] = 1.0, 2.0  # 254 zeros in between
    for bits, fillers in [(2, 254 // 4), (5, 254 // 32), (8, 0)]:
        data = encode.pack({"w": x}, index_bits=bits, sparse=True, coder="raw")
        leaf = encode.report(data)["leaves"][0]
        assert leaf["codec"] == "sparse" and leaf["index_bits"] == bits
        assert leaf["entries"] - leaf["nonzeros"] == fillers
        assert np.array_equal(encode.unpack(data)[0]["w"], x)
    data = encode.pack(
        {"w": x, "c": np.zeros((2, 2, 2, 2))}, index_bits=lambda p, a: 3, sparse=True
    )
    assert {leaf["index_bits"] for leaf in encode.report(data)["leaves"]} == {3}
    defaults = encode.report(encode.pack({"w": x, "c": np.ones((2, 2, 2, 2))}, sparse=True))
    assert [leaf["index_bits"] for leaf in defaults["leaves"]] == [5, None]


def _sparse_quantized(shape, seed=0, levels=16, keep=0.1):
    rng = np.random.default_rng(seed)
    w = rng.laplace(size=shape).astype(np.float32)
    w[np.abs(w) < np.quantile(np.abs(w), 1 - keep)] = 0.0
    centers = np.linspace(w.min(), w.max(), levels).astype(np.float32)
    nz = w != 0
    w[nz] = centers[np.abs(w[nz][:, None] - centers[None, :]).argmin(1)]
    w[nz & (w == 0)] = centers[1]
    return w


def test_report_accounts_for_every_byte(tree, artifact, tmp_path):
    rep = encode.report(artifact)
    assert sum(rep["bytes"].values()) == rep["file_bytes"] == len(artifact)
    for leaf in rep["leaves"]:
        assert leaf["total_bytes"] == sum(leaf["bytes"].values())
    elements = sum(np.asarray(x).size for x in jax.tree.leaves(tree))
    assert rep["elements"] == elements and rep["dense_bytes"] == 4 * elements
    assert rep["compression_ratio"] == pytest.approx(4 * elements / len(artifact))
    nz = sum(int(np.count_nonzero(np.asarray(x).view(f"u{np.asarray(x).itemsize}")))
             for x in jax.tree.leaves(tree) if np.asarray(x).itemsize in (1, 2, 4, 8))  # fmt: skip
    assert rep["nonzeros"] == nz
    path = tmp_path / "a.jcz"
    path.write_bytes(artifact)
    assert encode.report(str(path)) == rep
    assert encode.report(artifact, dense_bytes=1000)["compression_ratio"] == 1000 / len(artifact)
    with pytest.raises(ValueError, match="pytree"):
        encode.report(artifact, coder="ans")
    md = encode.report_markdown(rep)
    assert "Conv_0/kernel" in md and f"{rep['compression_ratio']:.2f}x" in md


def test_deep_compression_streams_are_entropy_coded():
    w = _sparse_quantized((200, 300))
    dense = {"fc": {"kernel": w}}
    reps = {c: encode.report(dense, coder=c, sparse=True) for c in encode.CODERS}
    leaves = {c: r["leaves"][0] for c, r in reps.items()}
    for leaf in leaves.values():
        assert leaf["codec"] == "sparse" and leaf["values_kind"] == "codebook"
        assert leaf["bytes"]["values"] == 0 and leaf["bytes"]["codebook"] <= 4 * 17
    raw, huff, ans = (leaves[c]["streams"] for c in ("raw", "huffman", "ans"))
    for name in ("gaps", "indices"):
        assert huff[name]["coded_bytes"] < raw[name]["coded_bytes"]  # skewed: coding pays
        bound_bits = 8 * huff[name]["entropy_bytes"]  # Huffman: nH <= bits < nH + n
        assert (
            bound_bits - 1e-6
            <= 8 * huff[name]["coded_bytes"]
            < bound_bits + huff[name]["symbols"] + 8
        )
        assert ans[name]["coded_bytes"] <= huff[name]["coded_bytes"]
    assert reps["ans"]["file_bytes"] < reps["raw"]["file_bytes"]
    assert reps["raw"]["bits_per_nonzero"] < 32
    # dense_bytes may be the dense model: 4 bytes per element of its float leaves
    assert encode.report(dense, dense_bytes=dense)["dense_bytes"] == 4 * w.size
    assert encode.report(dense, dense_bytes=123)["dense_bytes"] == 123


def test_auto_codec_picks_the_smaller_layout():
    w = _sparse_quantized((64, 64), keep=0.05)
    full = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    sizes = {s: len(encode.pack({"w": w}, sparse=s)) for s in (None, True, False)}
    assert sizes[None] <= min(sizes[True], sizes[False])
    rep = encode.report({"w": w, "f": full})
    assert [leaf["codec"] for leaf in rep["leaves"]] == ["sparse", "dense"]
    assert rep["leaves"][1]["values_kind"] == "raw"  # 4096 distinct values: no codebook


def test_benchmark_smoke():
    from experiments.benchmarks import coding

    result = coding.main(["--smoke"])
    for stream in result["streams"].values():
        assert stream["coders"]["ans"]["coded_over_entropy"] >= 0.99
        assert set(stream["coders"]) >= {"huffman", "ans", "raw", "zlib-9", "zstd-19"}
    assert result["artifact"]["ans"]["compression_ratio"] > 1


def test_metadata_that_does_not_inflate_is_corrupt(artifact):
    _meta, payload = _split(artifact)
    text = b"not deflate data"
    head = struct.pack("<4sHHIQ", b"JCZ\x00", encode.FORMAT_VERSION, 1, len(text), len(payload))
    body = head + text
    body = body + struct.pack("<I", zlib.crc32(body)) + payload
    body += struct.pack("<I", zlib.crc32(payload))
    with pytest.raises(CorruptArtifactError, match="inflate"):
        encode.unpack(body + hashlib.sha256(body).digest())

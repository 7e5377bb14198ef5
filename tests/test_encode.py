"""Tests of jaxcomp.encode's coders and sparse format (Han et al., 2016, arXiv:1510.00149)."""

import heapq
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from jaxcomp import encode

SETTINGS = settings(max_examples=25, deadline=None)
INT_DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "int64"]


def _entropy(counts):
    p = np.asarray(counts, np.float64) / np.sum(counts)
    return float(-(p * np.log2(p)).sum())


@st.composite
def symbol_streams(draw, signed=True):
    dtype = np.dtype(draw(st.sampled_from(INT_DTYPES if signed else ["uint8", "uint16", "int32"])))
    lo = max(int(np.iinfo(dtype).min), -1000) if signed else 0
    hi = min(int(np.iinfo(dtype).max), 1000)
    alphabet = draw(st.lists(st.integers(lo, hi), min_size=1, max_size=12, unique=True))
    n = draw(st.sampled_from([0, 1, 2, 7, 64, 500]))
    idx = draw(st.lists(st.integers(0, len(alphabet) - 1), min_size=n, max_size=n))
    return np.asarray(alphabet, dtype)[np.asarray(idx, np.int64)]


@pytest.mark.parametrize("coder", encode.CODERS)
@SETTINGS
@given(data=st.data())
def test_round_trip_is_exact(coder, data):
    s = data.draw(symbol_streams(signed=coder != "raw"))
    coded = encode.encode_symbols(s, coder=coder)
    out = encode.decode_symbols(coded)
    assert out.dtype == s.dtype and np.array_equal(out, s)
    assert coded.n == s.size


@pytest.mark.parametrize("coder", ["huffman", "ans"])
@pytest.mark.parametrize("n", [0, 1, 1000])
def test_empty_and_single_symbol_streams_need_no_payload(coder, n):
    s = np.full(n, 42, np.int16)
    coded = encode.encode_symbols(s, coder=coder)
    assert coded.payload == b"" and coded.entropy_bits == 0.0
    out = encode.decode_symbols(coded)
    assert out.dtype == np.int16 and np.array_equal(out, s)


@SETTINGS
@given(counts=st.lists(st.integers(1, 500), min_size=2, max_size=40))
def test_huffman_length_is_within_one_bit_of_entropy(counts):
    s = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(0).shuffle(s)
    coded = encode.huffman_encode(s)
    n, h = s.size, _entropy(counts)
    assert h * n - 1e-6 <= coded.nbits < (h + 1) * n
    assert coded.entropy_bits == pytest.approx(h * n)


@SETTINGS
@given(counts=st.lists(st.integers(1, 10_000), min_size=1, max_size=40))
def test_huffman_cost_equals_sum_of_merges(counts):
    # The optimal prefix code costs the sum of the weights of all merged (internal) nodes.
    heap = list(counts)
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    lengths = encode.huffman_code_lengths(counts)
    assert int(np.dot(lengths.astype(np.int64), counts)) == cost


@SETTINGS
@given(counts=st.lists(st.integers(1, 1000), min_size=2, max_size=30))
def test_canonical_code_is_complete_and_prefix_free(counts):
    lengths = encode.huffman_code_lengths(counts)
    assert sum(2.0 ** -int(v) for v in lengths) == 1.0  # Kraft equality: a complete code
    codes, _ = encode.canonical_codes(lengths)
    words = [format(int(c), f"0{int(v)}b") for c, v in zip(codes, lengths)]
    for a, b in itertools.permutations(words, 2):
        assert not b.startswith(a)


def test_length_limit_keeps_a_complete_code_and_round_trips():
    fib = [1, 1]
    while len(fib) < 20:
        fib.append(fib[-1] + fib[-2])
    assert encode.huffman_code_lengths(fib).max() == 19  # Fibonacci counts: a maximally deep tree
    limited = encode.huffman_code_lengths(fib, max_length=8)
    assert limited.max() <= 8 and sum(2.0 ** -int(v) for v in limited) == 1.0
    s = np.repeat(np.arange(20), fib)
    coded = encode.huffman_encode(s, max_length=8)
    assert coded.table.max() <= 8
    assert np.array_equal(encode.huffman_decode(coded), s)


def test_ans_reaches_the_entropy_bound():
    rng = np.random.default_rng(1)
    p = np.exp(-np.arange(32) / 3.0)
    s = rng.choice(32, size=20_000, p=p / p.sum()).astype(np.uint8)
    coded = encode.ans_encode(s)
    bound = encode.entropy_bits(s)
    assert 8 * len(coded.payload) <= 1.01 * bound
    assert 8 * len(coded.payload) >= bound - 64  # nothing beats the bound by more than a word
    assert np.array_equal(encode.ans_decode(coded), s)


def test_ans_frequencies_are_stored_exactly_or_scaled_deterministically():
    counts = np.array([3, 1, 7])
    assert encode.ans_encode(np.repeat(np.arange(3), counts)).table.tolist() == [3, 1, 7]
    from jaxcomp.encode._ans import quantized_frequencies

    big = np.array([2**30, 1, 2**20])
    q = quantized_frequencies(big)
    assert q.min() >= 1 and q.sum() <= 2**24
    assert np.array_equal(q, quantized_frequencies(big))
    assert q[0] > q[2] > 0


def test_entropy_bits_of_uniform_and_constant_streams():
    assert encode.entropy_bits(np.array([0, 1, 2, 3, 0, 1, 2, 3])) == pytest.approx(16.0)
    assert encode.entropy_bits(np.full(9, 5)) == 0.0
    assert encode.entropy_bits(np.zeros(0, np.int8)) == 0.0


def test_raw_packs_at_the_given_width():
    s = np.array([0, 31, 7, 16, 1], np.uint8)
    coded = encode.encode_symbols(s, coder="raw", width=5)
    assert coded.nbits == 25 and len(coded.payload) == 4
    assert np.array_equal(encode.decode_symbols(coded), s)
    assert encode.encode_symbols(np.zeros(10, np.uint8), coder="raw").payload == b""


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode.encode_symbols(np.array([1.5]), coder="huffman"),
        lambda: encode.encode_symbols(np.array([1, 2]), coder="zip"),
        lambda: encode.encode_symbols(np.array([1, 2]), coder="ans", width=3),
        lambda: encode.encode_symbols(np.array([8]), coder="raw", width=3),
        lambda: encode.encode_symbols(np.array([-1]), coder="raw"),
        lambda: encode.huffman_code_lengths([1, 0, 2]),
        lambda: encode.huffman_code_lengths([1, 2], max_length=0),
        lambda: encode.relative_index(np.zeros(3), index_bits=0),
        lambda: encode.relative_index(np.zeros(3), index_bits=17),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_inconsistent_streams_are_refused():
    s = np.array([0, 1, 1, 2, 2, 2, 2])
    h = encode.huffman_encode(s)
    with pytest.raises(ValueError, match="codes"):
        encode.huffman_decode(h._replace(n=h.n + 3))
    with pytest.raises(ValueError, match="complete"):
        encode.huffman_decode(h._replace(table=np.array([2, 2, 2], np.uint8)))
    a = encode.ans_encode(np.tile(s, 50))
    with pytest.raises(ValueError, match="left over"):
        encode.ans_decode(a._replace(n=a.n - 40))


def test_relative_index_matches_the_papers_figure_2():
    # Nonzeros at 1, 4 and 15 with 3-bit gaps: 10 zeros before position 15 exceed 7, so a
    # filler zero is inserted at position 12 (4 + 8), after which 2 zeros remain.
    x = np.zeros(16, np.float32)
    x[[1, 4, 15]] = [3.4, 0.9, 1.7]
    r = encode.relative_index(x, index_bits=3)
    assert r.gaps.tolist() == [1, 2, 7, 2]
    assert r.values.tolist() == [np.float32(3.4), np.float32(0.9), 0.0, np.float32(1.7)]
    assert r.num_fillers == 1
    positions = np.cumsum(r.gaps.astype(int) + 1) - 1
    assert positions.tolist() == [1, 4, 12, 15]
    assert np.array_equal(encode.from_relative_index(r), x)


@st.composite
def sparse_arrays(draw):
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=1, max_size=3)))
    dtype = draw(st.sampled_from(["float32", "float16", "int8", "uint16", "float64", "bool"]))
    size = int(np.prod(shape))
    density = draw(st.sampled_from([0.0, 0.02, 0.2, 0.7, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    vals = (rng.integers(1, 100, size) * (rng.random(size) < density)).astype(dtype)
    return vals.reshape(shape)


@SETTINGS
@given(x=sparse_arrays(), bits=st.integers(1, 8))
def test_relative_index_round_trip_and_filler_count(x, bits):
    r = encode.relative_index(x, index_bits=bits)
    assert r.gaps.size == 0 or int(r.gaps.max()) < 2**bits
    pos = np.flatnonzero(x.reshape(-1))
    zeros_before = np.diff(pos, prepend=-1) - 1
    assert r.num_fillers == int((zeros_before // 2**bits).sum())
    assert r.gaps.size == pos.size + r.num_fillers
    y = encode.from_relative_index(r)
    assert y.dtype == x.dtype and y.shape == x.shape and np.array_equal(y, x)


def test_relative_index_keeps_negative_zero_and_nan_payloads():
    x = np.zeros(40, np.float32)
    x[3] = -0.0
    x[20] = np.float32(np.nan)
    bits = x.view(np.uint32).copy()
    bits[30] = 0x7FC00123  # a NaN with a payload
    x = bits.view(np.float32)
    y = encode.from_relative_index(encode.relative_index(x, index_bits=4))
    assert np.array_equal(y.view(np.uint32), x.view(np.uint32))


def test_default_index_bits_follow_the_paper():
    assert encode.default_index_bits(4) == 8  # convolution kernels
    assert encode.default_index_bits(2) == 5  # fully connected

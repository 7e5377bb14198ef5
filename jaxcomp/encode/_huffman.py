"""Canonical Huffman coding of integer symbol streams, vectorized with numpy.

Deep Compression (Han, Mao and Dally, ICLR 2016, arXiv:1510.00149, section 4) Huffman codes the
codebook indices and the relative sparse indices of every layer, which saves 20-30% of the storage
because both distributions are far from uniform. This module implements it:

* code lengths from the symbol frequencies with a heap over the distinct symbols (ties broken by
  symbol order, so the code is deterministic), limited to ``max_length`` bits by halving the
  frequencies until the tree is shallow enough;
* the canonical code for those lengths (codes are the Kraft partial sums, in order of length then
  symbol), so only the lengths need to be stored;
* encoding by expanding every symbol's code into its bits with ``np.repeat`` and ``np.packbits``;
* decoding with a lookup table over the longest code length: a table lookup at every bit position
  gives the symbol and length of a code starting there, and the chain of code starts from bit 0
  is followed by pointer doubling (``log2(n)`` vectorized gathers), with no Python loop over
  symbols.

A stream of one distinct symbol (or none) needs no bits: its code length is 0 and the decoder
repeats the symbol ``n`` times.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from jaxcomp.encode._stream import CodedStream
from jaxcomp.encode._stream import as_symbols
from jaxcomp.encode._stream import counts_entropy_bits

__all__ = [
    "MAX_CODE_LENGTH",
    "canonical_codes",
    "huffman_code_lengths",
    "huffman_decode",
    "huffman_encode",
]

MAX_CODE_LENGTH = 24
"""The longest code the decoder's bit window holds (a 32-bit word read at any bit offset)."""


def _unlimited_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code lengths by repeatedly merging the two lightest trees (a heap over symbols)."""
    k = counts.size
    parent = np.zeros(2 * k - 1, dtype=np.int64)
    heap = [(int(c), i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    node = k
    while len(heap) > 1:  # k - 1 merges: a loop over distinct symbols, not over the stream
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (c1 + c2, node))
        node += 1
    depth = np.zeros(2 * k - 1, dtype=np.int64)
    for i in range(2 * k - 3, -1, -1):  # parents are created after their children
        depth[i] = depth[parent[i]] + 1
    return depth[:k]


def huffman_code_lengths(counts: Any, *, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code lengths for symbols with the given frequencies, at most ``max_length`` bits.

    Args:
      counts: positive integer frequencies, one per symbol.
      max_length: the longest allowed code, 1 to :data:`MAX_CODE_LENGTH`. When the optimal tree
        is deeper, the frequencies are halved (rounding up) until it is not; the result is still a
        complete prefix code.

    Returns:
      ``uint8`` lengths, one per symbol; ``[0]`` for a single symbol (no bits needed).

    Raises:
      ValueError: if a count is not positive, or there are more than ``2**max_length`` symbols.
    """
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise ValueError(f"huffman_code_lengths: max_length must be an int, got {max_length!r}")
    if not 1 <= max_length <= MAX_CODE_LENGTH:
        raise ValueError(
            f"huffman_code_lengths: max_length must be in [1, {MAX_CODE_LENGTH}], got {max_length}"
        )
    if c.size and int(c.min()) < 1:
        raise ValueError("huffman_code_lengths: counts must be positive")
    if c.size > 1 << max_length:
        raise ValueError(
            f"huffman_code_lengths: {c.size} symbols do not fit codes of at most {max_length} bits"
        )
    if c.size <= 1:
        return np.zeros(c.size, np.uint8)
    lengths = _unlimited_lengths(c)
    while int(lengths.max()) > max_length:
        c = (c + 1) // 2
        lengths = _unlimited_lengths(c)
    return lengths.astype(np.uint8)


def canonical_codes(lengths: Any) -> tuple[np.ndarray, np.ndarray]:
    """The canonical prefix code for the given code lengths.

    Symbols are ordered by (length, symbol); each code is the sum of ``2**-length`` of the codes
    before it, written in ``length`` bits (the Kraft partial sums), so the lengths alone define
    the code.

    Args:
      lengths: code lengths in ``[1, MAX_CODE_LENGTH]``, one per symbol, satisfying Kraft's
        inequality.

    Returns:
      ``(codes, order)``: the integer code of every symbol (``int64``) and the symbols in
      canonical order.

    Raises:
      ValueError: if a length is out of range or the lengths violate Kraft's inequality.
    """
    lens = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lens.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if int(lens.min()) < 1 or int(lens.max()) > MAX_CODE_LENGTH:
        raise ValueError(f"canonical_codes: lengths must be in [1, {MAX_CODE_LENGTH}]")
    top = int(lens.max())
    order = np.lexsort((np.arange(lens.size), lens))
    kraft = np.left_shift(np.int64(1), top - lens[order])
    start = np.cumsum(kraft) - kraft
    if int(start[-1] + kraft[-1]) > 1 << top:
        raise ValueError("canonical_codes: the lengths violate Kraft's inequality")
    codes = np.empty_like(lens)
    codes[order] = start >> (top - lens[order])
    return codes, order


def huffman_encode(symbols: Any, *, max_length: int = MAX_CODE_LENGTH) -> CodedStream:
    """Canonical Huffman coding of an integer stream.

    Args:
      symbols: an integer array (any shape; flattened). Any integer values and dtype; the decoder
        gives back the same values and dtype.
      max_length: the longest code allowed (see :func:`huffman_code_lengths`).

    Returns:
      A :class:`CodedStream` with ``coder="huffman"``, the sorted distinct symbols as
      ``alphabet`` and their code lengths as ``table``.

    Raises:
      ValueError: if ``symbols`` is not an integer array or has too many distinct values.

    Examples:
        >>> import numpy as np
        >>> s = huffman_encode(np.array([0, 0, 0, 0, 1, 1, 2, 3]))
        >>> s.table.tolist(), s.nbits
        ([1, 2, 3, 3], 14)
        >>> huffman_decode(s).tolist()
        [0, 0, 0, 0, 1, 1, 2, 3]
    """
    arr = as_symbols(symbols, "huffman_encode")
    alphabet, ranks, counts = np.unique(arr, return_inverse=True, return_counts=True)
    lengths = huffman_code_lengths(counts, max_length=max_length)
    payload, nbits = b"", 0
    if alphabet.size > 1:
        codes, _ = canonical_codes(lengths)
        lens = lengths.astype(np.int64)[ranks]
        nbits = int(lens.sum())
        starts = np.cumsum(lens) - lens
        within = np.arange(nbits, dtype=np.int64) - np.repeat(starts, lens)
        shift = np.repeat(lens, lens) - 1 - within
        bits = (np.repeat(codes[ranks], lens) >> shift) & 1
        payload = np.packbits(bits.astype(np.uint8)).tobytes()
    return CodedStream(
        coder="huffman", n=int(arr.size), dtype=arr.dtype.name, alphabet=alphabet,
        table=lengths, payload=payload, nbits=nbits, width=0,
        entropy_bits=counts_entropy_bits(counts),
    )  # fmt: skip


def _windows(payload: bytes, nbits: int, top: int) -> np.ndarray:
    """The ``top``-bit window starting at every bit position ``0 .. nbits - 1`` (zero padded)."""
    data = np.frombuffer(payload, np.uint8).astype(np.uint32)
    data = np.concatenate([data, np.zeros(4, np.uint32)])
    words = (data[:-3] << 24) | (data[1:-2] << 16) | (data[2:-1] << 8) | data[3:]
    pos = np.arange(nbits, dtype=np.int64)
    shift = (32 - top - (pos & 7)).astype(np.uint32)
    return ((words[pos >> 3] >> shift) & np.uint32((1 << top) - 1)).astype(np.int64)


def huffman_decode(stream: CodedStream) -> np.ndarray:
    """Inverse of :func:`huffman_encode`: the exact symbols, in the stream's dtype.

    Args:
      stream: a :class:`CodedStream` with ``coder="huffman"``.

    Returns:
      A 1-D array of ``stream.n`` symbols.

    Raises:
      ValueError: if the stream is inconsistent (an incomplete code table, a payload of the
        wrong length, or bits that do not decode to exactly ``n`` codes).
    """
    n, nbits = int(stream.n), int(stream.nbits)
    alphabet, lengths = np.asarray(stream.alphabet), np.asarray(stream.table).astype(np.int64)
    dtype = np.dtype(stream.dtype)
    if alphabet.shape != lengths.shape or alphabet.ndim != 1:
        raise ValueError("huffman_decode: alphabet and code lengths differ in shape")
    if len(stream.payload) != (nbits + 7) // 8:
        raise ValueError(
            f"huffman_decode: payload has {len(stream.payload)} bytes, expected {(nbits + 7) // 8}"
        )
    if n == 0 or alphabet.size <= 1:
        if (n > 0) != (alphabet.size == 1) or nbits != 0 or n < 0:
            raise ValueError("huffman_decode: an empty or one-symbol stream must carry no bits")
        return np.full(n, alphabet[0] if n else 0, dtype=dtype)
    _, order = canonical_codes(lengths)
    top = int(lengths.max())
    kraft = np.left_shift(np.int64(1), top - lengths[order])
    if int(kraft.sum()) != 1 << top:
        raise ValueError("huffman_decode: the code lengths do not form a complete prefix code")
    lut_rank = np.repeat(order, kraft)  # window value -> symbol rank
    lut_len = np.repeat(lengths[order], kraft)  # window value -> code length
    if nbits < n:
        raise ValueError(f"huffman_decode: {nbits} bits cannot hold {n} symbols")
    win = _windows(stream.payload, nbits, top)
    index = np.int32 if nbits < 2**31 - 32 else np.int64  # narrower gathers when they fit
    jump = np.minimum(np.arange(nbits, dtype=index) + lut_len[win].astype(index), nbits)
    jump = np.append(jump, index(nbits))  # position nbits is absorbing
    pos = np.zeros(1, index)
    while pos.size < n:  # pointer doubling: log2(n) vectorized steps
        pos = np.concatenate([pos, jump[pos]])
        if pos.size < n:
            jump = jump[jump]
    pos = pos[:n]
    if int(pos[-1]) >= nbits or int(pos[-1] + lut_len[win[pos[-1]]]) != nbits:
        raise ValueError(f"huffman_decode: the {nbits} payload bits do not hold exactly {n} codes")
    return alphabet[lut_rank[win[pos]]].astype(dtype, copy=False)

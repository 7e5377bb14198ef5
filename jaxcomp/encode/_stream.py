"""A coded symbol stream, the empirical entropy bound, and fixed-width bit packing.

Deep Compression (Han, Mao and Dally, "Deep Compression: Compressing Deep Neural Networks with
Pruning, Trained Quantization and Huffman Coding", ICLR 2016, arXiv:1510.00149, sections 3-4)
stores a pruned, weight-shared layer as two streams of small integers, the relative indices of the
nonzeros and their codebook indices, first at a fixed bit width and then Huffman coded. This module
holds what the coders share: the :class:`CodedStream` they produce, the bound they are measured
against (``n * H`` bits, ``H`` the entropy of the stream's empirical distribution) and the
fixed-width packing that the ``"raw"`` coder uses (the paper's stage before Huffman coding).

Everything runs on the host in numpy, vectorized over the symbols.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import numpy as np

__all__ = [
    "CodedStream",
    "as_symbols",
    "entropy_bits",
    "raw_decode",
    "raw_encode",
]


class CodedStream(NamedTuple):
    """A stream of integer symbols after coding, with everything needed to decode it exactly.

    Attributes:
      coder: ``"huffman"``, ``"ans"`` or ``"raw"``.
      n: the number of symbols.
      dtype: the numpy dtype name of the symbols (the decoder returns this dtype).
      alphabet: the distinct symbols, sorted (``"huffman"`` and ``"ans"``; empty for ``"raw"``).
      table: the coder's table over ``alphabet``: canonical Huffman code lengths (``uint8``) or
        the ANS model's integer frequencies (``uint32``); empty for ``"raw"``.
      payload: the coded bits, as bytes.
      nbits: the number of meaningful bits of ``payload``.
      width: the bits per symbol of the ``"raw"`` coder (0 for the others).
      entropy_bits: ``n * H`` of the empirical distribution of the symbols (the coding bound).
    """

    coder: str
    n: int
    dtype: str
    alphabet: np.ndarray
    table: np.ndarray
    payload: bytes
    nbits: int
    width: int
    entropy_bits: float

    @property
    def nbytes(self) -> int:
        """Bytes of the payload plus the tables a decoder needs (alphabet and code table)."""
        return len(self.payload) + int(self.alphabet.nbytes) + int(self.table.nbytes)


def as_symbols(symbols: Any, what: str) -> np.ndarray:
    """``symbols`` as a flat numpy integer array; ValueError naming ``what`` otherwise."""
    arr = np.asarray(symbols)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: symbols must be an integer array, got dtype {arr.dtype}")
    return arr.reshape(-1)


def entropy_bits(symbols: Any) -> float:
    """The empirical entropy bound of a symbol stream: ``n * H(p)`` bits.

    ``p`` is the empirical distribution of the symbols (counts over ``n``); no code that treats
    the symbols as independent draws from ``p`` can be shorter on average, and an ideal entropy
    coder reaches it up to its tables and a few bits.

    Args:
      symbols: an integer array (any shape; it is flattened).

    Returns:
      The bound in bits (0.0 for an empty stream or a stream of one distinct symbol).

    Raises:
      ValueError: if ``symbols`` is not an integer array.

    Examples:
        >>> entropy_bits([0, 1, 2, 3])
        8.0
    """
    arr = as_symbols(symbols, "entropy_bits")
    if arr.size == 0:
        return 0.0
    _, counts = np.unique(arr, return_counts=True)
    return counts_entropy_bits(counts)


def counts_entropy_bits(counts: np.ndarray) -> float:
    """``n * H`` in bits for a distribution given by positive integer ``counts``."""
    c = np.asarray(counts, dtype=np.float64)
    n = float(c.sum())
    if n == 0.0:
        return 0.0
    return float(-(c * np.log2(c / n)).sum()) + 0.0


def raw_encode(symbols: Any, *, width: int | None = None) -> CodedStream:
    """Packs non-negative integer symbols at a fixed width (big-endian bits, ``np.packbits``).

    This is the paper's storage before entropy coding: ``width`` bits per symbol, e.g. 5-bit
    relative indices of a fully connected layer or ``log2(K)``-bit codebook indices.

    Args:
      symbols: non-negative integers (any shape; flattened).
      width: bits per symbol, 0 to 32; by default the fewest that hold the largest symbol
        (0 when every symbol is 0).

    Returns:
      A :class:`CodedStream` with ``coder="raw"``.

    Raises:
      ValueError: if a symbol is negative or does not fit in ``width`` bits, or ``width`` is out
        of range.
    """
    arr = as_symbols(symbols, "raw_encode")
    top = int(arr.max()) if arr.size else 0
    if arr.size and int(arr.min()) < 0:
        raise ValueError("raw_encode: symbols must be non-negative")
    if width is None:
        width = top.bit_length()
    if isinstance(width, bool) or not isinstance(width, int) or not 0 <= width <= 32:
        raise ValueError(f"raw_encode: width must be an int in [0, 32], got {width!r}")
    if top >= 1 << width:
        raise ValueError(f"raw_encode: symbol {top} does not fit in width={width} bits")
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    bits = (arr.astype(np.uint64)[:, None] >> shifts[None, :]) & np.uint64(1)
    payload = np.packbits(bits.astype(np.uint8).reshape(-1)).tobytes()
    return CodedStream(
        coder="raw", n=int(arr.size), dtype=arr.dtype.name,
        alphabet=np.zeros(0, arr.dtype), table=np.zeros(0, np.uint8), payload=payload,
        nbits=int(arr.size) * width, width=width, entropy_bits=entropy_bits(arr),
    )  # fmt: skip


def raw_decode(stream: CodedStream) -> np.ndarray:
    """Inverse of :func:`raw_encode`.

    Raises:
      ValueError: if the payload does not hold ``n * width`` bits.
    """
    n, width = int(stream.n), int(stream.width)
    if not 0 <= width <= 32 or n < 0:
        raise ValueError(f"raw_decode: bad width {width} or length {n}")
    if len(stream.payload) != (n * width + 7) // 8:
        raise ValueError(
            f"raw_decode: payload has {len(stream.payload)} bytes, expected {(n * width + 7) // 8}"
        )
    bits = np.unpackbits(np.frombuffer(stream.payload, np.uint8), count=n * width)
    weights = np.left_shift(np.uint64(1), np.arange(width - 1, -1, -1, dtype=np.uint64))
    values = (bits.reshape(n, width).astype(np.uint64) * weights[None, :]).sum(axis=1)
    return values.astype(np.dtype(stream.dtype))

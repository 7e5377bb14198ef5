"""Asymmetric numeral systems (ANS) coding of integer streams through ``constriction``.

Huffman coding spends a whole number of bits on every symbol, which costs up to one bit per symbol
over the entropy on skewed streams such as the relative indices of a sparse layer. A stack
(ANS) entropy coder (Duda, "Asymmetric numeral systems", 2009, arXiv:0902.0271) reaches the
empirical entropy within a fraction of a percent. This module uses the ``AnsCoder`` of the
``constriction`` package (Bamler, "Understanding Entropy Coding With Asymmetric Numeral Systems
(ANS): a Statistician's Perspective", 2022, arXiv:2201.01741) with a categorical model built from
the stream's own symbol frequencies, as Deep Compression (Han et al., 2016, arXiv:1510.00149,
section 4) builds its Huffman code.

The model must be rebuilt bit for bit by the decoder, so the frequencies are stored as integers:
the exact counts when they sum to at most ``2**24`` (constriction's default precision), otherwise
counts scaled to that total with integer arithmetic (every present symbol keeps at least 1). The
decoder turns the stored integers into the same float64 probabilities and the same model.
"""

from __future__ import annotations

from typing import Any

import constriction
import numpy as np

from jaxcomp.encode._stream import CodedStream
from jaxcomp.encode._stream import as_symbols
from jaxcomp.encode._stream import counts_entropy_bits

__all__ = [
    "ans_decode",
    "ans_encode",
    "quantized_frequencies",
]

_PRECISION = 24


def quantized_frequencies(counts: Any) -> np.ndarray:
    """The integer frequencies stored for an ANS model (deterministic; see the module docstring).

    Args:
      counts: positive integer symbol counts.

    Returns:
      ``uint32`` frequencies, each at least 1, summing to at most ``2**24``.

    Raises:
      ValueError: if a count is not positive or there are more than ``2**24`` symbols.
    """
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    if c.size and int(c.min()) < 1:
        raise ValueError("quantized_frequencies: counts must be positive")
    if c.size > 1 << _PRECISION:
        raise ValueError(f"quantized_frequencies: at most 2**{_PRECISION} distinct symbols")
    total = int(c.sum())
    if total <= 1 << _PRECISION:
        return c.astype(np.uint32)
    spare = (1 << _PRECISION) - c.size
    # c * spare < 2**63 as long as a single count is below 2**39 (half a terabyte of symbols).
    return (1 + (c * spare) // total).astype(np.uint32)


def _model(freqs: np.ndarray) -> Any:
    probs = freqs.astype(np.float64) / float(freqs.astype(np.float64).sum())
    return constriction.stream.model.Categorical(probs, perfect=False)


def ans_encode(symbols: Any) -> CodedStream:
    """ANS (stack) coding of an integer stream with its empirical categorical model.

    Args:
      symbols: an integer array (any shape; flattened). Any integer values and dtype; the decoder
        gives back the same values and dtype.

    Returns:
      A :class:`CodedStream` with ``coder="ans"``: the sorted distinct symbols as ``alphabet``,
      their stored integer frequencies as ``table`` (in the narrowest unsigned dtype), and the
      coder's 32-bit words (little-endian) as ``payload``. A stream of at most one distinct
      symbol has an empty payload.

    Raises:
      ValueError: if ``symbols`` is not an integer array or has more than ``2**24`` distinct
        values.

    Examples:
        >>> import numpy as np
        >>> s = ans_encode(np.array([3, 3, 3, 7, 3, 9]))
        >>> ans_decode(s).tolist()
        [3, 3, 3, 7, 3, 9]
    """
    arr = as_symbols(symbols, "ans_encode")
    alphabet, ranks, counts = np.unique(arr, return_inverse=True, return_counts=True)
    freqs = quantized_frequencies(counts)
    freqs = freqs.astype(np.min_scalar_type(int(freqs.max()) if freqs.size else 0))
    payload = b""
    if alphabet.size > 1:
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(ranks.astype(np.int32), _model(freqs))
        payload = coder.get_compressed().astype("<u4").tobytes()
    return CodedStream(
        coder="ans", n=int(arr.size), dtype=arr.dtype.name, alphabet=alphabet, table=freqs,
        payload=payload, nbits=8 * len(payload), width=0,
        entropy_bits=counts_entropy_bits(counts),
    )  # fmt: skip


def ans_decode(stream: CodedStream) -> np.ndarray:
    """Inverse of :func:`ans_encode`: the exact symbols, in the stream's dtype.

    Args:
      stream: a :class:`CodedStream` with ``coder="ans"``.

    Returns:
      A 1-D array of ``stream.n`` symbols.

    Raises:
      ValueError: if the stream is inconsistent (bad tables, a payload that is not whole 32-bit
        words, or words left over after ``n`` symbols).
    """
    n = int(stream.n)
    alphabet, freqs = np.asarray(stream.alphabet), np.asarray(stream.table)
    dtype = np.dtype(stream.dtype)
    if alphabet.ndim != 1 or alphabet.shape != freqs.shape:
        raise ValueError("ans_decode: alphabet and frequencies differ in shape")
    if freqs.size and int(freqs.min()) < 1:
        raise ValueError("ans_decode: frequencies must be positive")
    if len(stream.payload) % 4 or int(stream.nbits) != 8 * len(stream.payload):
        raise ValueError("ans_decode: the payload is not a whole number of 32-bit words")
    if n == 0 or alphabet.size <= 1:
        if n < 0 or (n > 0) != (alphabet.size == 1) or stream.payload:
            raise ValueError("ans_decode: an empty or one-symbol stream must carry no words")
        return np.full(n, alphabet[0] if n else 0, dtype=dtype)
    words = np.frombuffer(stream.payload, "<u4").astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words)
    ranks = coder.decode(_model(freqs), n)
    if not coder.is_empty():
        raise ValueError("ans_decode: words are left over after decoding n symbols")
    return alphabet[ranks].astype(dtype, copy=False)

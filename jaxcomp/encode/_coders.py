"""One entry point over the symbol coders: ``"huffman"``, ``"ans"`` and ``"raw"``.

The three ways Deep Compression's integer streams can be stored (Han et al., 2016,
arXiv:1510.00149): at a fixed bit width (``"raw"``, the paper's stage after pruning and trained
quantization), canonical Huffman coded (``"huffman"``, the paper's stage 3), or with an ANS entropy
coder that reaches the entropy bound more closely (``"ans"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcomp.encode._ans import ans_decode
from jaxcomp.encode._ans import ans_encode
from jaxcomp.encode._huffman import huffman_decode
from jaxcomp.encode._huffman import huffman_encode
from jaxcomp.encode._stream import CodedStream
from jaxcomp.encode._stream import raw_decode
from jaxcomp.encode._stream import raw_encode

__all__ = ["CODERS", "decode_symbols", "encode_symbols"]

CODERS = ("huffman", "ans", "raw")
"""The coder names that :func:`encode_symbols` and the ``.jcz`` artifact accept."""


def check_coder(coder: Any, what: str) -> str:
    """``coder`` if it is one of :data:`CODERS`; ValueError naming ``what`` otherwise."""
    if coder not in CODERS:
        raise ValueError(f"{what}: coder must be one of {CODERS}, got {coder!r}")
    return coder


def encode_symbols(
    symbols: Any, *, coder: str = "huffman", width: int | None = None
) -> CodedStream:
    """Codes an integer stream with the named coder.

    Args:
      symbols: an integer array (any shape; flattened). ``"raw"`` needs non-negative symbols.
      coder: ``"huffman"``, ``"ans"`` or ``"raw"``.
      width: bits per symbol for ``"raw"`` (default: the fewest that hold the largest symbol);
        must be None for the other coders.

    Returns:
      The :class:`CodedStream`; :func:`decode_symbols` gives back the exact symbols.

    Raises:
      ValueError: for an unknown coder, a ``width`` with an entropy coder, or symbols the coder
        cannot take.

    Examples:
        >>> import numpy as np
        >>> x = np.array([1, 1, 1, 2, 0, 1], np.uint8)
        >>> [decode_symbols(encode_symbols(x, coder=c)).tolist() for c in CODERS]
        [[1, 1, 1, 2, 0, 1], [1, 1, 1, 2, 0, 1], [1, 1, 1, 2, 0, 1]]
    """
    check_coder(coder, "encode_symbols")
    if coder == "raw":
        return raw_encode(symbols, width=width)
    if width is not None:
        raise ValueError(f"encode_symbols: width applies to coder='raw' only, got {width!r}")
    return huffman_encode(symbols) if coder == "huffman" else ans_encode(symbols)


def decode_symbols(stream: CodedStream) -> np.ndarray:
    """The exact symbols of a :class:`CodedStream` (a 1-D array in the stream's dtype).

    Raises:
      ValueError: if the stream names an unknown coder or is inconsistent.
    """
    check_coder(stream.coder, "decode_symbols")
    if stream.coder == "raw":
        return raw_decode(stream)
    return huffman_decode(stream) if stream.coder == "huffman" else ans_decode(stream)

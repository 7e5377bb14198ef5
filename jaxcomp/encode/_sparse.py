"""Relative-index sparse format with filler zeros, and codebooks of distinct values.

Deep Compression (Han, Mao and Dally, ICLR 2016, arXiv:1510.00149, section 2, figure 2) stores a
pruned layer in compressed sparse form where each nonzero carries the *difference* of its position
to the previous nonzero, in a fixed number of bits: 8 bits for convolution layers and 5 bits for
fully connected layers. When a gap exceeds the largest difference the bits can hold, a filler zero
is inserted: an extra entry whose value is zero. Here an entry's gap is the number of zeros before
it (0 to ``2**bits - 1``); a run of ``z`` zeros followed by a nonzero becomes ``z // 2**bits``
fillers (each standing for ``2**bits - 1`` zeros and itself) and then the nonzero with gap
``z % 2**bits``. Zeros after the last nonzero need no entry: the shape says where the array ends.

Zeros are exact zeros of the bit pattern (``-0.0`` is kept as a value, so the round trip is
bit-identical). The values of a leaf are handled through their bit patterns too (an unsigned
integer view), so NaN payloads and signed zeros survive, and a codebook of the distinct values is
a sorted array of distinct bit patterns.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import numpy as np

__all__ = [
    "RelativeIndex",
    "bit_view",
    "default_index_bits",
    "from_relative_index",
    "relative_index",
]

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


class RelativeIndex(NamedTuple):
    """A flattened (C order) array in relative-index form.

    Attributes:
      shape: the shape of the dense array.
      index_bits: bits per gap.
      gaps: for each entry, the number of zeros before it since the previous entry
        (``uint8`` up to 8 bits, else ``uint16``); each is below ``2**index_bits``.
      values: the entries' values, in the array's dtype; filler entries hold zero.
    """

    shape: tuple[int, ...]
    index_bits: int
    gaps: np.ndarray
    values: np.ndarray

    @property
    def num_fillers(self) -> int:
        """The number of filler entries (the entries whose value has an all-zero bit pattern)."""
        return int(np.count_nonzero(bit_view(self.values) == 0))


def bit_view(x: Any) -> np.ndarray:
    """The flattened bit patterns of ``x`` as unsigned integers of the same width.

    Raises:
      ValueError: if the dtype's item size is not 1, 2, 4 or 8 bytes.
    """
    arr = np.ascontiguousarray(x).reshape(-1)
    if arr.dtype.itemsize not in _UINT:
        raise ValueError(
            f"bit_view: items of {arr.dtype.itemsize} bytes ({arr.dtype}) are not supported; "
            "dtypes of 1, 2, 4 or 8 bytes are"
        )
    return arr.view(_UINT[arr.dtype.itemsize])


def default_index_bits(ndim: int) -> int:
    """The paper's gap width: 8 bits for convolution kernels (ndim >= 3), 5 bits otherwise."""
    return 8 if ndim >= 3 else 5


def _check_bits(index_bits: Any, what: str) -> int:
    if isinstance(index_bits, bool) or not isinstance(index_bits, int | np.integer):
        raise ValueError(f"{what}: index_bits must be an int in [1, 16], got {index_bits!r}")
    if not 1 <= int(index_bits) <= 16:
        raise ValueError(f"{what}: index_bits must be in [1, 16], got {index_bits}")
    return int(index_bits)


def relative_index(x: Any, *, index_bits: int) -> RelativeIndex:
    """Converts an array with exact zeros to relative-index form (vectorized, no element loop).

    Args:
      x: an array of any shape and a dtype of 1, 2, 4 or 8 bytes.
      index_bits: bits per gap, 1 to 16 (the paper: 8 for convolution, 5 for fully connected).

    Returns:
      The :class:`RelativeIndex`; :func:`from_relative_index` gives back ``x`` bit for bit.

    Raises:
      ValueError: if ``index_bits`` is out of range or the dtype is not supported.

    Examples:
        The paper's figure 2 with 3-bit gaps: nonzeros at positions 1, 4 and 15 of 16; the gap of
        10 zeros before position 15 is more than 7, so a filler entry sits at position 12.

        >>> import numpy as np
        >>> x = np.zeros(16, np.float32); x[[1, 4, 15]] = [3.4, 0.9, 1.7]
        >>> r = relative_index(x, index_bits=3)
        >>> r.gaps.tolist(), r.values.tolist() == [np.float32(v) for v in (3.4, 0.9, 0, 1.7)]
        ([1, 2, 7, 2], True)
    """
    bits = _check_bits(index_bits, "relative_index")
    arr = np.asarray(x)
    pattern = bit_view(arr)
    pos = np.flatnonzero(pattern)
    zeros = np.diff(pos, prepend=-1) - 1  # zeros before each nonzero
    span = 1 << bits
    fillers = zeros >> bits
    per = fillers + 1
    total = int(per.sum())
    owner = np.repeat(np.arange(pos.size), per)
    within = np.arange(total) - np.repeat(np.cumsum(per) - per, per)
    real = within == fillers[owner]
    gap_dtype = np.uint8 if bits <= 8 else np.uint16
    gaps = np.where(real, zeros[owner] & (span - 1), span - 1).astype(gap_dtype)
    values = np.where(real, pattern[pos][owner], 0).astype(pattern.dtype).view(arr.dtype)
    return RelativeIndex(tuple(int(d) for d in arr.shape), bits, gaps, values)


def from_relative_index(r: RelativeIndex) -> np.ndarray:
    """The dense array of a :class:`RelativeIndex` (fillers write zeros, so they vanish).

    Raises:
      ValueError: if the entries run past the end of the array or disagree in length.
    """
    bits = _check_bits(r.index_bits, "from_relative_index")
    gaps, values = np.asarray(r.gaps).reshape(-1), np.asarray(r.values).reshape(-1)
    if gaps.shape != values.shape:
        raise ValueError(f"from_relative_index: {gaps.size} gaps but {values.size} values")
    if gaps.size and int(gaps.max()) >= 1 << bits:
        raise ValueError(f"from_relative_index: a gap does not fit index_bits={bits}")
    size = int(np.prod(r.shape, dtype=np.int64))
    out = np.zeros(size, bit_view(values[:0]).dtype)
    pos = np.cumsum(gaps.astype(np.int64) + 1) - 1
    if pos.size and int(pos[-1]) >= size:
        raise ValueError(
            f"from_relative_index: entries reach position {int(pos[-1])} of an array of {size}"
        )
    out[pos] = bit_view(values)
    return out.view(values.dtype).reshape(r.shape)

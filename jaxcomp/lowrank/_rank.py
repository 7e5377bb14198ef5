"""Rank selection: fixed or per-layer ranks, kept energy, a compression rate, a sensitivity scan.

How many components to keep is the main hyperparameter of every low-rank method. The transforms
of :mod:`jaxcomp.lowrank` take exactly one of

* ``rank=``: an int for every layer, a dict ``{leaf_path: rank}`` (what :func:`sensitivity_scan`
  returns), or ordered ``(regex, rank)`` rules over leaf paths (first match wins);
* ``energy=``: per layer, the smallest rank whose kept singular values hold at least this fraction
  of the sum of all squared singular values (Denton et al. 2014 choose ranks this way; Kim et al.
  2016 pick Tucker ranks per layer from the spectrum);
* ``compression=``: per layer, the largest rank whose factors hold at most ``1 / compression``
  of the dense kernel's parameters.

:func:`sensitivity_scan` chooses per-layer ranks empirically, in the manner of Zhang et al. and
Kim et al.: each layer is compressed alone at each candidate rank and the smallest rank whose
metric stays within a tolerance of the dense model's is kept.

References:
    Denton et al., "Exploiting linear structure within convolutional networks for efficient
    evaluation", NeurIPS 2014, arXiv:1404.0736.

    Kim et al., "Compression of deep convolutional neural networks for fast and low power mobile
    applications", ICLR 2016, arXiv:1511.06530.

    Zhang, Zou, He and Sun, "Accelerating very deep convolutional networks for classification and
    detection", TPAMI 2016, arXiv:1505.06798.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import numpy as np

from jaxcomp import errors
from jaxcomp.core import _checks as checks
from jaxcomp.core._map import leaves
from jaxcomp.core._map import select

__all__ = [
    "Ranks",
    "SensitivityScan",
    "rank_for_compression",
    "rank_for_energy",
    "sensitivity_scan",
]


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _check_rank_value(what: str, value: Any, pair: bool, name: str = "rank") -> Any:
    if pair and isinstance(value, tuple | list) and len(value) == 2:
        return tuple(checks.integer(v, fn=what, name=name) for v in value)
    return checks.integer(value, fn=what, name=name)


def rank_for_energy(singular_values: Any, energy: float) -> int:
    """The smallest ``r`` with ``sum(s[:r]**2) >= energy * sum(s**2)``.

    Args:
      singular_values: the singular values, in decreasing order.
      energy: the fraction of squared singular values to keep, in ``(0, 1]``.

    Returns:
      The rank, at least 1.

    Examples:
        >>> rank_for_energy([3.0, 2.0, 1.0], 0.9)  # 9 + 4 = 13 >= 0.9 * 14
        2
    """
    checks.number(energy, fn="rank_for_energy", name="energy", low=0, high=1, low_open=True)
    s2 = np.asarray(singular_values, dtype=np.float64) ** 2
    total = s2.sum()
    if total == 0:
        return 1
    kept = np.cumsum(s2) / total
    return int(min(np.searchsorted(kept, energy * (1 - 1e-7)) + 1, len(s2)))


def rank_for_compression(cost: Callable[[int], int], dense: int, max_rank: int, rate: float) -> int:
    """The largest rank in ``[1, max_rank]`` whose factors cost at most ``dense / rate``.

    Args:
      cost: the number of parameters of the factors at a rank (increasing in the rank).
      dense: the number of parameters of the dense kernel.
      max_rank: the largest rank allowed.
      rate: the compression rate, >= 1.

    Returns:
      The rank (1 if even rank 1 costs more than the budget).
    """
    budget = dense / float(rate)
    ranks = [r for r in range(1, max_rank + 1) if cost(r) <= budget]
    return max(ranks, default=1)


class Ranks(NamedTuple):
    """A transform's rank hyperparameters, checked when it is built (exactly one is set)."""

    rank: Any = None
    energy: float | None = None
    compression: float | None = None

    @classmethod
    def build(
        cls,
        what: str,
        rank: Any,
        energy: Any,
        compression: Any,
        *,
        pair: bool = False,
    ) -> Ranks:
        """Checks the arguments of a factory ``what`` and returns them."""
        given = [n for n, v in (("rank", rank), ("energy", energy), ("compression", compression))
                 if v is not None]  # fmt: skip
        if len(given) != 1:
            raise ValueError(
                f"{what}: give exactly one of rank=, energy=, compression=; got {given}"
            )
        if energy is not None:
            checks.number(energy, fn=what, name="energy", low=0, high=1, low_open=True)
        if compression is not None:
            checks.number(compression, fn=what, name="compression", low=1)
        if rank is not None:
            one = lambda v, name: _check_rank_value(what, v, pair, name)
            rank = checks.per_leaf(rank, one, fn=what, name="rank")
        return cls(rank, energy, compression)

    def per_leaf(self) -> dict[str, Any]:
        """The per-leaf arguments for :func:`jaxcomp.core.select`: ``rank``, when it is given."""
        return {} if self.rank is None else {"rank": self.rank}


def choose_rank(
    ranks: Ranks,
    what: str,
    leaf: Any,
    *,
    max_rank: int,
    bound: str,
    cost: Callable[[int], int],
    dense: int,
    spectrum: Callable[[], Any] | None = None,
) -> int:
    """The rank of one leaf under ``rank=``, ``energy=`` or ``compression=``.

    Args:
      ranks: the transform's :class:`Ranks`.
      what: the factory's name, for messages.
      leaf: the leaf's :class:`jaxcomp.core.Leaf` (its path, and its ``rank`` under ``rank=``).
      max_rank: the largest rank the leaf can take.
      bound: what ``max_rank`` is, for messages (``"min(m, n)"``).
      cost: the parameters of the factors at a rank.
      dense: the parameters of the dense kernel.
      spectrum: a function returning the singular values, for ``energy=``.

    Raises:
      RankOutOfRangeError: a given rank is outside ``[1, max_rank]``.
    """
    if ranks.rank is not None:
        return check_rank(what, leaf.path, leaf["rank"], max_rank, bound)
    if ranks.energy is not None:
        assert spectrum is not None
        return min(rank_for_energy(spectrum(), ranks.energy), max_rank)
    return rank_for_compression(cost, dense, max_rank, ranks.compression)


def check_rank(what: str, path: str, rank: int, max_rank: int, bound: str) -> int:
    """Raises :class:`RankOutOfRangeError` naming ``path`` unless ``1 <= rank <= max_rank``."""
    if not 1 <= int(rank) <= max_rank:
        raise errors.RankOutOfRangeError(
            f"{what}: rank {rank} for {path!r} is out of range; it must be in [1, {max_rank}] "
            f"({bound})"
        )
    return int(rank)


class SensitivityScan(NamedTuple):
    """The result of :func:`sensitivity_scan`.

    Attributes:
      ranks: ``{leaf_path: rank}``, ready to pass as ``rank=``.
      scores: ``{leaf_path: {rank: metric}}``, the metric with only that layer compressed.
      baseline: the metric of the uncompressed params.
    """

    ranks: dict[str, int]
    scores: dict[str, dict[int, float]]
    baseline: float


def sensitivity_scan(
    make: Callable[..., Any],
    params: Any,
    evaluate: Callable[[Any], float],
    *,
    candidates: Sequence[int],
    tolerance: float,
    where: Any = None,
) -> SensitivityScan:
    """Per-layer ranks from a sensitivity scan: each layer compressed alone at each candidate.

    For each selected kernel, ``make(rank=r, where=<that leaf>)`` builds a transform for every
    candidate rank the layer can take (in increasing order); the params with only that layer
    rewritten (``apply(init(params))``) are scored with ``evaluate``. The layer's rank is the
    smallest candidate whose score is at least ``baseline - tolerance``, or its largest candidate
    when none is.

    Args:
      make: a factory such as ``jc.lowrank.svd`` (called with ``rank=`` and ``where=``).
      params: the trained params.
      evaluate: ``params -> float``, higher is better (for instance validation accuracy).
      candidates: the ranks to try, ints >= 1.
      tolerance: the largest metric drop accepted, >= 0.
      where: the layers to scan (``jc.select.kernels()`` when None).

    Returns:
      A :class:`SensitivityScan`.

    Raises:
      ValueError: ``candidates`` is empty or holds a non-positive rank, or ``tolerance < 0``.
    """
    if not candidates:
        raise ValueError("sensitivity_scan: candidates must be a non-empty list of ints >= 1")
    cands = sorted(
        {checks.integer(c, fn="sensitivity_scan", name="candidates[i]") for c in candidates}
    )
    checks.number(tolerance, fn="sensitivity_scan", name="tolerance", low=0)
    selected = [lf.path for lf in leaves(select(params, where, fn="sensitivity_scan"))]
    baseline = float(evaluate(params))
    ranks: dict[str, int] = {}
    scores: dict[str, dict[int, float]] = {}
    for path in selected:
        only = [(f"^{re.escape(path)}$", True)]
        scores[path] = {}
        for r in cands:
            try:
                t = make(rank=r, where=only)
                c, s = t.init(params)
            except errors.RankOutOfRangeError:
                break
            scores[path][r] = float(evaluate(t.apply(c, s)))
        good = [r for r, v in scores[path].items() if v >= baseline - tolerance]
        if scores[path]:
            ranks[path] = min(good) if good else max(scores[path])
    return SensitivityScan(ranks, scores, baseline)

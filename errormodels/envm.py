"""Multi-level-cell eNVM (RRAM, CTT, ...) as a memory technology: levels per cell, confused as a whole cell.

An eNVM cell stores ``b`` bits (1: SLC, 2: MLC2, 3: MLC3) as one of ``L = 2**b`` levels of a sensed
quantity (a resistance, a threshold voltage). The levels are programmed with variation, so a
read senses a value spread around the level's target; the read thresholds cut the range into
``L`` bins, and a value that lands in another level's bin reads as that level. All ``b`` bits of
the cell change together, by the bit pattern of the new level: faults are per cell, not per bit.

The model here (MaxNVM, MICRO 2019, Sec. 3, describes the same mechanism for measured RRAM and
CTT distributions; its parameters below are **assumptions**, not measurements):

* the sensed quantity is normalised so that the lowest level's target is 0 and the highest's 1
  (the cell's programming window), and the ``L`` targets are evenly spaced in it: packing more
  bits into a cell shrinks the spacing from 1 (SLC) to 1/3 (MLC2) and 1/7 (MLC3);
* a level's sensed value is Gaussian around its target with standard deviation
  ``sigma * level_sigma[l]`` (``level_sigma`` all ones by default: the same variation at every
  level; measured RRAM spreads its middle levels more, which ``level_sigma`` expresses);
* the read thresholds lie midway between adjacent targets.

So the probability that level ``l`` reads as level ``k`` is the Gaussian mass of level ``l`` in
bin ``k`` (:func:`level_confusion`). The bit pattern stored for level ``l`` is ``l`` itself
(``code="binary"``) or its Gray code ``l ^ (l >> 1)`` (``code="gray"``, the default: adjacent
levels differ in one bit, so the most likely fault, to a neighbouring level, flips one bit).

**Its error rate.** A model's ``ber`` is the bit error rate the cell faults cause when the levels
are equally likely (:func:`bit_error_rate`); the model solves ``sigma`` for it (``MLC.sigma``),
so the searches of :mod:`boosting.characterization`, which move a model's ``ber``
(:meth:`ErrorModel.with_ber`), find the tolerable cell variation for a given number of bits per
cell; :meth:`MLC.from_sigma` builds the model of a device's variation instead.

**Cells in a tensor.** Cell ``c`` of a tensor holds its storage bits ``b c .. b c + b - 1``
(bit ``k`` of byte ``i`` is bit ``8 i + k``, :mod:`errormodels.inject`), the lowest bit as the
pattern's bit 0. With ``b = 3`` cells straddle bytes and values, as in a dense packing; the last
cell of a tensor whose size is not a multiple of ``b`` holds zeros in its missing bits, and
flips there are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Optional

import numpy as np
from scipy.special import ndtr

from errormodels.models import ErrorModel, ModelError, _check, register_model, show

__all__ = ["CODES", "CellPlan", "MLC", "bit_error_rate", "level_confusion", "level_patterns", "MAX_MLC_BER"]

CODES = ("gray", "binary")
"""How a level's index becomes the cell's bit pattern."""

MAX_BITS_PER_CELL = 4

MAX_MLC_BER = 0.25
"""Highest ``ber`` an :class:`MLC` model takes (the fault rate of a cell whose levels overlap heavily)."""


def _check_bits(bits_per_cell: Any) -> int:
    if not (isinstance(bits_per_cell, int) and not isinstance(bits_per_cell, bool)
            and 1 <= bits_per_cell <= MAX_BITS_PER_CELL):
        raise ModelError(f"bits_per_cell must be an integer in 1..{MAX_BITS_PER_CELL}, got {show(bits_per_cell)}")
    return bits_per_cell


def level_patterns(bits_per_cell: int, code: str = "gray") -> tuple[int, ...]:
    """The bit pattern stored for each level ``0 .. 2**bits_per_cell - 1``."""
    _check_bits(bits_per_cell)
    if code not in CODES:
        raise ModelError(f"code must be one of {', '.join(CODES)}, got {show(code)}")
    levels = range(1 << bits_per_cell)
    return tuple(level ^ (level >> 1) if code == "gray" else level for level in levels)


def level_confusion(bits_per_cell: int, sigma: float, level_sigma: Optional[tuple[float, ...]] = None) -> np.ndarray:
    """The ``L x L`` matrix of P(level ``l`` is read as level ``k``), ``L = 2**bits_per_cell``.

    Parameters
    ----------
    bits_per_cell : int
        Bits per cell (1..4).
    sigma : float
        Standard deviation of a level's sensed value, in units of the programming window (>= 0).
    level_sigma : tuple of float, optional
        Relative standard deviation of each level (``L`` values > 0; default all 1).

    Returns
    -------
    numpy.ndarray
        Rows sum to 1. The tails are computed from the nearer side (``ndtr`` of negative
        arguments), so probabilities down to about 1e-300 keep their relative precision.
    """
    n_levels = 1 << _check_bits(bits_per_cell)
    _check("sigma", sigma, 0.0, math.inf)
    rel = np.ones(n_levels) if not level_sigma else np.asarray(level_sigma, dtype=float)
    if rel.shape != (n_levels,) or not np.all(rel > 0) or not np.all(np.isfinite(rel)):
        raise ModelError(f"level_sigma must hold {n_levels} finite values > 0, got {show(level_sigma)}")
    means = np.linspace(0.0, 1.0, n_levels)
    edges = np.concatenate([[-np.inf], (means[:-1] + means[1:]) / 2, [np.inf]])
    conf = np.zeros((n_levels, n_levels))
    for lvl in range(n_levels):
        s = sigma * rel[lvl]
        if s == 0.0:
            conf[lvl, lvl] = 1.0
            continue
        z = (edges - means[lvl]) / s  # bin edges in this level's standard units
        for k in range(n_levels):
            if k > lvl:  # the upper tail: both edges above the mean
                conf[lvl, k] = ndtr(-z[k]) - ndtr(-z[k + 1])
            elif k < lvl:
                conf[lvl, k] = ndtr(z[k + 1]) - ndtr(z[k])
        conf[lvl, lvl] = max(0.0, 1.0 - conf[lvl].sum())
    return conf


def bit_error_rate(conf: np.ndarray, patterns: tuple[int, ...]) -> float:
    """The bit error rate of cells with confusion ``conf`` and level patterns, the levels equally likely."""
    n_levels = len(patterns)
    bits = n_levels.bit_length() - 1
    hamming = np.array([[bin(patterns[a] ^ patterns[b]).count("1") for b in range(n_levels)] for a in range(n_levels)])
    return float((conf * hamming).sum() / (n_levels * bits))


@lru_cache(maxsize=4096)
def _sigma_for(bits_per_cell: int, code: str, level_sigma: tuple[float, ...], ber: float) -> float:
    """The ``sigma`` whose cells have bit error rate ``ber`` (bisection on log sigma; relative 1e-10)."""
    if ber == 0.0:
        return 0.0
    patterns = level_patterns(bits_per_cell, code)

    def rate(s: float) -> float:
        return bit_error_rate(level_confusion(bits_per_cell, s, level_sigma or None), patterns)

    lo, hi = 1e-6, 1.0
    while rate(hi) < ber:
        hi *= 2.0
        if hi > 1e6:
            raise ModelError(f"mlc: no cell variation gives ber {ber:g}")
    while rate(lo) > ber:
        lo /= 2.0
        if lo < 1e-300:
            return lo
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if rate(mid) < ber:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-10:
            break
    return math.sqrt(lo * hi)


@dataclass(frozen=True)
class CellPlan:
    """How the injector draws a model's faults cell by cell (instead of a :class:`FlipPlan`'s bits).

    ``bits_per_cell`` consecutive storage bits form a cell; a cell whose bits hold the pattern of
    level ``l`` (``patterns[l]``) is read as level ``k`` with probability ``confusion[l][k]``.
    """

    bits_per_cell: int
    confusion: tuple[tuple[float, ...], ...]
    patterns: tuple[int, ...]

    def __post_init__(self) -> None:
        n_levels = 1 << _check_bits(self.bits_per_cell)
        conf = np.asarray(self.confusion, dtype=float)
        if conf.shape != (n_levels, n_levels) or not np.all(np.isfinite(conf)) or np.any(conf < 0) \
                or not np.allclose(conf.sum(axis=1), 1.0, atol=1e-9):
            raise ModelError(f"cell plan: confusion must be a {n_levels}x{n_levels} matrix of probabilities whose rows "
                             "sum to 1")
        if sorted(self.patterns) != list(range(n_levels)):
            raise ModelError(f"cell plan: patterns must be a permutation of 0..{n_levels - 1}, got {show(self.patterns)}")


@register_model
@dataclass(frozen=True)
class MLC(ErrorModel):
    """Model 4 ``mlc``: multi-level eNVM cells of ``bits_per_cell`` bits whose levels are confused as a whole.

    ``ber`` is the bit error rate the faults cause with equally likely levels; the cell variation
    ``sigma`` it needs is solved from it (module docstring). ``code`` is ``gray`` or ``binary``;
    ``level_sigma`` the relative variation of each level (empty: all equal).
    """

    bits_per_cell: int = 2
    code: str = "gray"
    level_sigma: tuple[float, ...] = field(default=())
    number: ClassVar[int] = 4
    name: ClassVar[str] = "mlc"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_bits(self.bits_per_cell)
        if self.code not in CODES:
            raise ModelError(f"mlc: code must be one of {', '.join(CODES)}, got {show(self.code)}")
        try:
            rel = tuple(float(v) for v in self.level_sigma)
        except (TypeError, ValueError):
            raise ModelError(f"mlc: level_sigma must be a list of numbers, got {show(self.level_sigma)}") from None
        object.__setattr__(self, "level_sigma", rel)
        if rel:
            level_confusion(self.bits_per_cell, 0.1, rel)  # checks its length and values
        if self.ber > MAX_MLC_BER:
            raise ModelError(f"mlc: ber must be at most {MAX_MLC_BER} (levels overlapping completely), got {self.ber:g}")

    @property
    def sigma(self) -> float:
        """The cell variation (units of the programming window) that gives ``ber``."""
        return _sigma_for(self.bits_per_cell, self.code, self.level_sigma, float(self.ber))

    @classmethod
    def from_sigma(cls, sigma: float, bits_per_cell: int = 2, code: str = "gray",
                   level_sigma: tuple[float, ...] = (), seed: int = 0) -> "MLC":
        """The model of a device with cell variation ``sigma``: its ``ber`` computed from the levels."""
        conf = level_confusion(bits_per_cell, sigma, tuple(level_sigma) or None)
        ber = bit_error_rate(conf, level_patterns(bits_per_cell, code))
        return cls(ber=min(ber, MAX_MLC_BER), seed=seed, bits_per_cell=bits_per_cell, code=code,
                   level_sigma=tuple(level_sigma))

    def confusion(self) -> np.ndarray:
        """P(level ``l`` read as level ``k``) at this model's ``sigma``."""
        return level_confusion(self.bits_per_cell, self.sigma, self.level_sigma or None)

    def cell_fault_rate(self) -> float:
        """The probability that a cell reads another level, the levels equally likely."""
        conf = self.confusion()
        return float(1.0 - np.trace(conf) / len(conf))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["level_sigma"] = list(self.level_sigma)
        return out

    def flip_plan(self, ctx: Any) -> CellPlan:  # type: ignore[override]
        """Faults per cell: the confusion matrix at ``sigma`` and the levels' bit patterns."""
        conf = self.confusion()
        return CellPlan(self.bits_per_cell, tuple(tuple(float(v) for v in row) for row in conf),
                        level_patterns(self.bits_per_cell, self.code))

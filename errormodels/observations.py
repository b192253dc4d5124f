"""What a BER map says about one partition, and the likelihood tools every model's fit uses.

Every model is scored on the same observation: which of the tested bits flipped (and, for
value-dependent models, what each held), so log-likelihoods are comparable across models:

- :class:`Observations`: tested bits by value, flips by direction, error positions;
- :class:`Candidate`: one fitted model with its log-likelihood and information criteria;
- :func:`binom_ll`, :func:`mixture_em`, :func:`location_histogram`: the pieces the built-in
  models' ``fit`` classmethods are made of (a registered model may use them too);
- :func:`partition_rows`: the partition label of a row (``all``, ``bank<b>``, ``rows<a>-<b>``).

This module sits below :mod:`errormodels.models` (which fits with it), :mod:`errormodels.curves`
and :mod:`errormodels.fit` (which gathers the observations from a map).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "FitError",
    "Observations",
    "Candidate",
    "partition_rows",
    "binom_ll",
    "mixture_em",
    "location_histogram",
    "EPS",
]

#: Smallest probability taken to a logarithm.
EPS = 1e-300


class FitError(ValueError):
    """The data cannot be fitted (no points, no bits, unknown partition)."""


def _ascii_digits(text: str) -> bool:
    """True for a non-empty run of ASCII digits only (``str.isdigit`` also accepts '²')."""
    return bool(text) and text.isascii() and text.isdigit()


def partition_rows(partition: str, bank: int, row: int) -> str:
    """The partition label of a row: ``all``, ``bank<b>``, ``rows<start>-<end>``; chips are split by bits."""
    if partition == "dimm":
        return "all"
    if partition == "bank":
        return f"bank{bank}"
    if partition.startswith("rowgroup:"):
        size_text = partition.split(":", 1)[1]
        if not _ascii_digits(size_text) or int(size_text) < 1:
            raise FitError(f"partition {partition!r}: rowgroup:N needs a positive N")
        size = int(size_text)
        start = row // size * size
        return f"rows{start}-{start + size - 1}"
    raise FitError(f"unknown partition {partition!r} (dimm, bank, rowgroup:N, chip)")


@dataclass
class Observations:
    """What a set of measured points says about one partition.

    Counts are over every tested bit; positions (for the clustered models) are
    available only when no point of the set truncated its error list.
    """

    n_bits: int = 0
    n0: int = 0  # tested bits that held 0
    n1: int = 0
    k01: int = 0
    k10: int = 0
    row_bits: int = 0  # bits of one tested row in this partition
    rows_tested: int = 0  # (point, row) pairs
    positions_complete: bool = True
    # Error positions: (test id, bank, row, bit in the partition's row) where test id numbers (point, row).
    err_test: list[np.ndarray] = field(default_factory=list)
    err_bank: list[np.ndarray] = field(default_factory=list)
    err_row: list[np.ndarray] = field(default_factory=list)
    err_bit: list[np.ndarray] = field(default_factory=list)
    rows_per_bank: dict[int, int] = field(default_factory=dict)  # tests per bank (bitline trials)
    point_keys: list[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        """Flipped bits."""
        return self.k01 + self.k10

    @property
    def ber(self) -> float:
        """Bit error rate."""
        return self.k / self.n_bits if self.n_bits else 0.0

    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Concatenated (test, bank, row, bit) of every recorded error."""
        if not self.err_bit:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty, empty
        return tuple(np.concatenate(part).astype(np.int64) for part in (self.err_test, self.err_bank, self.err_row, self.err_bit))  # type: ignore[return-value]


class FittedModel(Protocol):
    """What a candidate needs of its model (every :class:`~errormodels.models.ErrorModel` has it)."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class Candidate:
    """One fitted model: its parameters, log-likelihood and information criteria.

    ``n_params`` counts every parameter the fit estimated (for the wordline model also the group
    size it chose), ``n_obs`` the observations (tested bits) for BIC.
    """

    model: FittedModel
    loglik: float
    n_params: int
    n_obs: int
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def aic(self) -> float:
        """Akaike information criterion."""
        return 2 * self.n_params - 2 * self.loglik

    @property
    def bic(self) -> float:
        """Bayesian information criterion."""
        return self.n_params * math.log(max(self.n_obs, 1)) - 2 * self.loglik

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            **self.model.to_dict(),
            "loglik": self.loglik,
            "n_params": self.n_params,
            "aic": self.aic,
            "bic": self.bic,
            **({"detail": self.detail} if self.detail else {}),
        }


def _xlogy(k: float, p: float) -> float:
    return 0.0 if k == 0 else k * math.log(max(p, EPS))


def binom_ll(k: int, n: int, p: float) -> float:
    """Log-likelihood of one exact pattern of ``k`` flips among ``n`` bits at probability ``p``."""
    return _xlogy(k, p) + _xlogy(n - k, 1.0 - p)


def mixture_em(counts: np.ndarray, trials: np.ndarray, weights: np.ndarray,
               iterations: int = 300) -> tuple[float, float, float, float]:
    """Two-component binomial mixture by EM over distinct (k, n) values with multiplicities.

    Returns (weak_fraction, p_weak, p_strong, loglik) where loglik is the exact-pattern
    log-likelihood (no binomial coefficients).
    """
    k = counts.astype(np.float64)
    n = trials.astype(np.float64)
    w = weights.astype(np.float64)
    total_k, total_n = float((w * k).sum()), float((w * n).sum())
    p_all = total_k / total_n if total_n else 0.0
    if total_k == 0:
        return 0.0, 0.0, 0.0, 0.0
    # Start: weak = locations with errors above the mean rate.
    hot = k / np.maximum(n, 1) > p_all
    f = max(1e-6, min(0.5, float((w * hot).sum() / w.sum())))
    p_w = min(1 - 1e-9, max(p_all * 2, float((w * k * hot).sum() / max((w * n * hot).sum(), 1))))
    p_s = max(1e-12, min(p_all, float((w * k * ~hot).sum() / max((w * n * ~hot).sum(), 1))))
    ll_old = -math.inf
    for _ in range(iterations):
        log_w = np.log(f) + k * np.log(p_w) + (n - k) * np.log1p(-p_w)
        log_s = np.log1p(-f) + k * np.log(max(p_s, EPS)) + (n - k) * np.log1p(-min(p_s, 1 - 1e-12))
        top = np.maximum(log_w, log_s)
        norm = top + np.log(np.exp(log_w - top) + np.exp(log_s - top))
        ll = float((w * norm).sum())
        r = np.exp(log_w - norm)
        wr = w * r
        f = float(np.clip(wr.sum() / w.sum(), 1e-9, 1 - 1e-9))
        p_w = float(np.clip((wr * k).sum() / max((wr * n).sum(), EPS), 1e-12, 1 - 1e-9))
        ws = w * (1 - r)
        p_s = float(np.clip((ws * k).sum() / max((ws * n).sum(), EPS), 0.0, 1 - 1e-9))
        if p_s > p_w:  # keep the weak component the weak one
            f, p_w, p_s = 1 - f, p_s, p_w
        if abs(ll - ll_old) < 1e-9 * max(1.0, abs(ll)):
            break
        ll_old = ll
    return f, p_w, p_s, ll


def location_histogram(values: np.ndarray, n_locations: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct error counts, how many locations have each), including the error-free ones.

    ``values`` holds one location id (0 .. ``n_locations - 1``) per error.
    """
    per_location = np.bincount(values) if values.size else np.zeros(0, np.int64)
    per_location = per_location[per_location > 0]
    ks, mult = np.unique(per_location, return_counts=True)
    zero = n_locations - int(mult.sum())
    return np.r_[0, ks], np.r_[zero, mult]

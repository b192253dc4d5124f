"""Error curves: BER as a function of VDD, tRCD or tRP, per partition, with confidence and inversion.

From a sweep's points, each partition's BER at every setting (patterns and
repetitions merged) gets a 95 % Clopper-Pearson interval.  Along one parameter,
with the others held at their reference values (nominal where measured,
otherwise the most common), the BER is fitted monotonically in log space
(isotonic regression of ``log10((k + 0.5) / (n + 1))``, weighted by the bits
tested: BER never rises as VDD, tRCD or tRP grow, never falls as temperature
grows) and interpolated log-linearly between measured settings.
:meth:`Curve.lowest_safe` inverts it: the mildest-to-harshest walk stops at the
last setting whose fitted BER is at most the target, e.g. "the lowest VDD whose
BER <= 1e-4".
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.stats import beta

from errormodels.fit import FitError, partition_rows
from profiler.storage import BerMap

__all__ = ["Curve", "ber_table", "curves_for", "PARAMS", "NOMINAL"]

PARAMS = ("vdd_v", "trcd_ns", "trp_ns", "temp_c")
NOMINAL = {"trcd_ns": 13.75, "trp_ns": 13.75}
# +1: BER falls as the parameter grows (VDD, timings); -1: it grows (temperature).
_DIRECTION = {"vdd_v": 1, "trcd_ns": 1, "trp_ns": 1, "temp_c": -1}


def _interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of a binomial proportion."""
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def ber_table(ber_map: BerMap, partition: str = "dimm") -> dict[str, dict[tuple, tuple[int, int]]]:
    """Per partition label: {setting (vdd_v, trcd_ns, trp_ns, temp_c): (flips, bits)}."""
    table: dict[str, dict[tuple, list[int]]] = {}
    if partition == "chip":
        raise FitError("error curves are per bank, row group or DIMM (the map counts flips per row, not per chip)")
    for row in ber_map.summary():
        setting = tuple(
            None if row.get(k) is None or (isinstance(row[k], float) and math.isnan(row[k])) else round(float(row[k]), 6)
            for k in PARAMS
        )
        point = ber_map.point(row["key"])
        flips = point.flips_0to1.astype(np.int64) + point.flips_1to0
        for (bank, r), f, n in zip(point.rows, flips, point.bits_tested):
            label = partition_rows(partition, int(bank), int(r))
            cell = table.setdefault(label, {}).setdefault(setting, [0, 0])
            cell[0] += int(f)
            cell[1] += int(n)
    return {label: {s: (v[0], v[1]) for s, v in cells.items()} for label, cells in table.items()}


@dataclass
class Curve:
    """BER along one parameter at fixed others; measured points, interval and monotone fit."""

    param: str
    fixed: dict[str, float | None]
    x: np.ndarray
    flips: np.ndarray
    bits: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    fit: np.ndarray  # fitted BER at x (monotone)

    @property
    def ber(self) -> np.ndarray:
        """Measured BER at x."""
        return self.flips / np.maximum(self.bits, 1)

    def at(self, value: float) -> float:
        """Fitted BER at ``value`` (log-linear between measured settings; clamped at the ends)."""
        logs = np.log10(np.maximum(self.fit, 1e-300))
        return float(10 ** np.interp(value, self.x, logs))

    def lowest_safe(self, max_ber: float) -> float | None:
        """The most aggressive setting (lowest VDD / shortest timing / highest temperature) with fitted
        BER <= ``max_ber``, interpolating between measured settings; None if even the mildest fails."""
        direction = _DIRECTION[self.param]
        order = np.argsort(-direction * self.x)  # mildest first
        xs, fits = self.x[order], self.fit[order]
        if fits[0] > max_ber:
            return None
        best = float(xs[0])
        for i in range(1, len(xs)):
            if fits[i] <= max_ber:
                best = float(xs[i])
                continue
            # Crossing between xs[i-1] (ok) and xs[i] (too many errors): interpolate in log BER.
            lo_log = math.log10(max(fits[i - 1], 1e-300))
            hi_log = math.log10(max(fits[i], 1e-300))
            target = math.log10(max_ber)
            if hi_log > lo_log:
                t = (target - lo_log) / (hi_log - lo_log)
                best = float(xs[i - 1] + t * (xs[i] - xs[i - 1]))
            break
        return best

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "param": self.param,
            "fixed": self.fixed,
            "x": self.x.tolist(),
            "flips": self.flips.tolist(),
            "bits": self.bits.tolist(),
            "ber": self.ber.tolist(),
            "ci95_lo": self.lo.tolist(),
            "ci95_hi": self.hi.tolist(),
            "fit": self.fit.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Curve":
        """Rebuild from :meth:`to_dict`."""
        return cls(
            data["param"],
            data["fixed"],
            *(np.asarray(data[k], dtype=float) for k in ("x", "flips", "bits", "ci95_lo", "ci95_hi", "fit")),
        )


def _reference(settings: list[tuple], index: int, nominal_vdd: float | None) -> float | None:
    values = [s[index] for s in settings if s[index] is not None]
    if not values:
        return None
    name = PARAMS[index]
    nominal = nominal_vdd if name == "vdd_v" else NOMINAL.get(name)
    if nominal is not None and any(abs(v - nominal) < 1e-6 for v in values):
        return nominal
    return Counter(values).most_common(1)[0][0]


def curves_for(cells: dict[tuple, tuple[int, int]], nominal_vdd: float | None = None) -> dict[str, Curve]:
    """One curve per parameter with more than one measured value."""
    settings = list(cells)
    curves: dict[str, Curve] = {}
    for index, name in enumerate(PARAMS):
        values = {s[index] for s in settings if s[index] is not None}
        if len(values) < 2:
            continue
        fixed = {PARAMS[j]: _reference(settings, j, nominal_vdd) for j in range(len(PARAMS)) if j != index}
        line = [
            s for s in settings
            if s[index] is not None and all(s[j] == fixed[PARAMS[j]] for j in range(len(PARAMS)) if j != index)
        ]
        if len(line) < 2:
            continue
        line.sort(key=lambda s: s[index])
        x = np.array([s[index] for s in line], float)
        flips = np.array([cells[s][0] for s in line], float)
        bits = np.array([cells[s][1] for s in line], float)
        lo, hi = zip(*(_interval(int(k), int(n)) for k, n in zip(flips, bits)))
        logs = np.log10((flips + 0.5) / (bits + 1.0))
        # Non-increasing in x for VDD and timings (fit -log on increasing), non-decreasing for temperature.
        sign = -_DIRECTION[name]
        fitted = isotonic_regression(sign * logs, weights=bits, increasing=True).x * sign
        fit = 10**fitted
        curves[name] = Curve(name, fixed, x, flips, bits, np.array(lo), np.array(hi), fit)
    return curves

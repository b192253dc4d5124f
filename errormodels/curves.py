"""Error curves: BER as a function of VDD, tRCD or tRP, per partition, with confidence and inversion.

From a sweep's points, each partition's BER at every setting (patterns and
repetitions merged) gets a 95 % Clopper-Pearson interval.  Along one parameter,
with the others held at their reference values (:mod:`profiler.reference`: nominal where
measured, otherwise the most common, ties to the gentlest), the BER is fitted monotonically in log space
(isotonic regression of ``log10((k + 0.5) / (n + 1))``, weighted by the bits
tested: BER never rises as VDD, tRCD or tRP grow, never falls as temperature
grows) and interpolated log-linearly between measured settings.
:meth:`Curve.lowest_safe` inverts it: the mildest-to-harshest walk stops at the
last setting whose fitted BER is at most the target, e.g. "the lowest VDD whose
BER <= 1e-4".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.stats import beta

from errormodels.models import ModelError, finite_float, show
from errormodels.observations import FitError, partition_rows
from profiler.reference import RANGES, SETTING_PARAMS, at_reference_refresh, nominal_value, reference_value
from profiler.storage import BerMap
from softmc_host.timing import NOMINAL_TRCD_NS, NOMINAL_TRP_NS

__all__ = ["Curve", "ber_table", "curves_for", "PARAMS", "NOMINAL", "RANGES"]

PARAMS = SETTING_PARAMS
NOMINAL = {"trcd_ns": NOMINAL_TRCD_NS, "trp_ns": NOMINAL_TRP_NS}
# +1: BER falls as the parameter grows (VDD, timings); -1: it grows (temperature).
_DIRECTION = {"vdd_v": 1, "trcd_ns": 1, "trp_ns": 1, "temp_c": -1}
# RANGES (profiler.reference): accepted range of each parameter in curve documents.
# Relative rise of the fit between neighbours tolerated as rounding (10**isotonic is monotone to a few ulp).
_MONOTONE_SLACK = 1e-9


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
    for row in at_reference_refresh(ber_map.summary()):  # a refresh sweep: its reference interval
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
    def from_dict(cls, data: Any) -> "Curve":
        """Rebuild from :meth:`to_dict` (e.g. a fitted model's ``curves.<param>``), validating every field.

        Checked: ``param`` is one of :data:`PARAMS`; ``fixed`` maps the other parameters to a
        number in their range or null; ``x``, ``flips``, ``bits``, ``ci95_lo``, ``ci95_hi``, ``fit``
        (and ``ber`` where present) are equally long, non-empty lists of finite numbers; ``x``
        strictly increasing and in the parameter's range (:data:`RANGES`); ``0 <= flips <= bits``;
        BERs, interval bounds and the fit in [0, 1] with ``ci95_lo <= ci95_hi``; the fit monotone
        in the parameter's direction (non-increasing in VDD, tRCD, tRP; non-decreasing in
        temperature).

        Raises
        ------
        ModelError
            The first field that fails, in a one-line message naming it.
        """
        if not isinstance(data, Mapping):
            raise ModelError(f"a curve must be a JSON object, got {show(data)}")
        param = data.get("param")
        if not isinstance(param, str) or param not in PARAMS:
            raise ModelError(f"curve param must be one of {', '.join(PARAMS)}, got {show(param)}")
        where = f"curve {param}"
        fixed = data.get("fixed", {})
        if not isinstance(fixed, Mapping):
            raise ModelError(f"{where}: fixed must be an object, got {show(fixed)}")
        fixed_out: dict[str, float | None] = {}
        for key, value in fixed.items():
            if not isinstance(key, str) or key not in PARAMS or key == param:
                raise ModelError(f"{where}: fixed has key {show(key)}; allowed: the other parameters of {PARAMS}")
            if value is None:
                fixed_out[key] = None
                continue
            lo, hi = RANGES[key]
            f = finite_float(value)
            if f is None or not lo <= f <= hi:
                raise ModelError(f"{where}: fixed.{key} must be null or a number in [{lo:g}, {hi:g}], got {show(value)}")
            fixed_out[key] = f
        arrays = {}
        for key in ("x", "flips", "bits", "ber", "ci95_lo", "ci95_hi", "fit"):
            if key == "ber" and key not in data:
                continue
            arrays[key] = _numbers(data.get(key), f"{where}: {key}", len(arrays["x"]) if arrays else None)
        x, flips, bits, lo95, hi95, fit = (arrays[k] for k in ("x", "flips", "bits", "ci95_lo", "ci95_hi", "fit"))
        lo, hi = RANGES[param]
        if np.any(x < lo) or np.any(x > hi):
            raise ModelError(f"{where}: x must lie in [{lo:g}, {hi:g}]")
        if np.any(np.diff(x) <= 0):
            raise ModelError(f"{where}: x must be strictly increasing")
        if np.any(flips < 0) or np.any(flips > bits):
            raise ModelError(f"{where}: flips must be in [0, bits] at every x")
        for key in ("ber", "ci95_lo", "ci95_hi", "fit"):
            if key in arrays and (np.any(arrays[key] < 0) or np.any(arrays[key] > 1)):
                raise ModelError(f"{where}: {key} must be in [0, 1]")
        if np.any(lo95 > hi95):
            raise ModelError(f"{where}: ci95_lo must not exceed ci95_hi")
        step = np.diff(fit) * _DIRECTION[param]  # must not rise in the direction of milder settings
        if np.any(step > _MONOTONE_SLACK * np.maximum(fit[:-1], fit[1:])):
            raise ModelError(f"{where}: fit must be monotone (BER "
                             + ("non-increasing" if _DIRECTION[param] > 0 else "non-decreasing") + f" in {param})")
        return cls(param, fixed_out, x, flips, bits, lo95, hi95, fit)


def _numbers(value: Any, where: str, length: int | None) -> np.ndarray:
    """A non-empty list of finite numbers (not bools) as float64, of ``length`` if given; ModelError otherwise."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iuf":
        items = value.tolist()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ModelError(f"{where} must be a list of numbers, got {show(value)}")
    if not items:
        raise ModelError(f"{where} is empty")
    out = np.empty(len(items), float)
    for i, item in enumerate(items):
        f = finite_float(item)
        if f is None:
            raise ModelError(f"{where}[{i}] must be a finite number, got {show(item)}")
        out[i] = f
    if length is not None and len(out) != length:
        raise ModelError(f"{where} has {len(out)} values, x has {length}")
    return out


def _reference(settings: list[tuple], index: int, nominal_vdd: float | None) -> float | None:
    """The value parameter ``index`` is held at: the one rule of :mod:`profiler.reference`."""
    name = PARAMS[index]
    return reference_value(name, (s[index] for s in settings), nominal_value(name, nominal_vdd))


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

"""Fit the vendors' per-DIMM voltage spread to the Voltron per-DIMM data: ``python -m emubench.calibration``.

Input format (``data/voltron-faulty-cachelines.csv``, Chang et al., SIGMETRICS 2017)
-------------------------------------------------------------------------------------
CSV with a header row and the columns ``dimm_name, vdd, vendor, error_cacheline_percent``:
one row per (DIMM, supply voltage in volts) with the percentage (0..100) of the DIMM's 2^25
64-byte cache lines that held at least one flipped bit.  A 0 is "no line failed" (below
the resolution of one line in 2^25); a voltage a DIMM could not run at has no row.

The population model (per vendor)
---------------------------------
DIMM ``d`` has the line fraction ``F(V - delta_d)`` at supply ``V``:

- ``F`` is the typical DIMM of the vendor: ``log10 F`` is piecewise linear in ``V``
  between knots on the 25 mV grid of the data, non-increasing in ``V`` and never above
  ``log10(ceiling)`` (ceiling 0.5 for vendor C, whose lines saturate at half the lines,
  1.0 otherwise).  Both properties hold by construction: the knot values are
  ``log10(ceiling) - exp(u_0)`` followed by steps ``-exp(u_k)``.  Outside the knots
  ``log10 F`` continues with the end segments' slopes (and stays capped).
- ``delta_d`` is the DIMM's voltage shift (positive = weaker: it fails like the typical DIMM
  at a voltage ``delta_d`` lower).  The shifts are centred (their mean is 0 by
  construction), so ``F`` is the typical DIMM.

Everything is fitted jointly by ``scipy.optimize.least_squares`` on ``log10`` fraction:

- a measured value gives the residual ``log10 F(V - delta_d) - log10 value``;
- a zero is censored: it gives a residual only where the model predicts more than the
  resolution ``1/2^25``, namely ``log10 F - log10(1/2^25)``;
- a value at the ceiling (within 1 % of it, :data:`CEILING_TOLERANCE`) is censored from
  below: a residual only where the model predicts less than ``(1 - tol) * ceiling``.

Regularisation (identifiability)
--------------------------------
With one voltage per DIMM the shape of ``F`` and the shifts are confounded: any monotone
``F`` fits values measured at one voltage exactly by moving the DIMMs along it.  Vendor A is
that case (non-zero data at 1.10 V only, plus one DIMM at 1.125 V): its data only bound
``F``'s steepness from below (the DIMMs near 90 % at 1.10 V show no error at 1.125 V).  Two
penalty terms, both documented parameters of :func:`fit_vendor`, pick one answer:

- a **curvature penalty**: ``smoothing * (y[k-1] - 2 y[k] + y[k+1])`` on the knot values
  (decades).  It prefers a log-linear curve (the constant "x-fold per 25 mV" growth Voltron
  reports), extrapolates linearly where the data are all zeros, and, because ``F`` must bend
  where it leaves the ceiling, it prefers the *least steep* curve the data allow.  Where the
  data do not fix the steepness (vendor A) the fitted ``sigma_dimm_v`` is therefore at the
  upper end of what the data allow: a steeper ``F`` with a smaller spread fits vendor A's
  data as well.
- a weak **prior on each shift**, ``delta_d / delta_prior_v`` (``N(0, 0.1 V)``), which only
  matters for a DIMM whose every observation is censored (vendor A's DIMM A9 shows no
  error at its lowest voltage): its shift then sits at the edge of the range its zeros allow
  (the strongest DIMM it needs to be, not an arbitrarily strong one).

Hold-out
--------
By default every 5th DIMM of a vendor by natural name order, starting with the 3rd
(positions 3, 8, 13, ...: A3, A8, B3, B9, C3 in the shipped file), is held out of the fit.
Each held-out DIMM then gets its own shift by a one-parameter fit against the fitted ``F``
(same residuals and prior), the RMS residual with that shift, the percentile of the shift
under ``N(0, sigma_dimm_v)``, and per voltage the population's 5/50/95 % band of the line
fraction under the shift model (``F(V - sigma z_q)``, as ``F`` is monotone) and whether the
held-out value lies in it (a zero is inside when the 5 % line predicts less than one line; a
value at the ceiling when the 95 % line reaches the ceiling).

The eden table (issue #19)
--------------------------
:data:`EDEN_TABLE` holds the EDEN slides' eight one-knob points; :func:`measure_ber` measures a
profile's BER (flipped / tested bits) in process on the sweep's sample; :func:`fit_eden_table`
scales the eden profile's curve points until the mean over seeds meets each point
(``python -m emubench.calibration --eden``; ``docs/vendor-profiles.md`` section 2.4).

Operating floor
---------------
A DIMM's floor is taken from the data as its lowest row: it ran there and (the study
stepped down by 25 mV) not one step below, so its floor lies in ``(lowest - 25 mV, lowest]``.
The summary gives the median, spread and the correlation of floor with shift (Pearson and
Spearman) over all DIMMs of the vendor, held-out ones with their hold-out shift.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import least_squares, minimize_scalar
from scipy.special import ndtr, ndtri
from scipy.stats import pearsonr, spearmanr

from softmc_host.cli import add_verbosity, configure_logging, fail
from softmc_host.files import write_json

__all__ = [
    "CalibrationError",
    "Record",
    "BandPoint",
    "HoldoutResult",
    "FloorSummary",
    "VendorFit",
    "load_voltron",
    "default_holdout",
    "fit_vendor",
    "fit_all",
    "format_fit",
    "profile_literal",
    "main",
    "EDEN_TABLE",
    "measure_ber",
    "fit_eden_table",
    "table_setting",
    "within",
    "LINES_PER_DIMM",
    "RESOLUTION",
    "GRID_STEP_V",
    "CEILING_TOLERANCE",
]

log = logging.getLogger(__name__)

#: 64-byte lines of a 2 GiB DIMM: the denominator of the Voltron percentages.
LINES_PER_DIMM = 2**25
#: The smallest non-zero line fraction (one line).
RESOLUTION = 1.0 / LINES_PER_DIMM
#: Voltage step of the data (and of the knots), volts.
GRID_STEP_V = 0.025
#: A value within this relative distance of the ceiling counts as "at the ceiling".
CEILING_TOLERANCE = 0.01
#: Ceiling of the line fraction per vendor (vendor C: only half the lines can fail).
CEILINGS: Mapping[str, float] = {"C": 0.5}
DEFAULT_CSV = "data/voltron-faulty-cachelines.csv"
_COLUMNS = ("dimm_name", "vdd", "vendor", "error_cacheline_percent")
_LOG_RES = math.log10(RESOLUTION)


class CalibrationError(ValueError):
    """Bad input to the calibration: an unreadable file, a bad row, an impossible fit request."""


@dataclass(frozen=True)
class Record:
    """One measurement: ``line_fraction`` (0..1) of ``dimm``'s lines failed at ``vdd_v`` volts."""

    dimm: str
    vendor: str
    vdd_v: float
    line_fraction: float


def _natural_key(name: str) -> tuple[object, ...]:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def load_voltron(path: str | Path) -> list[Record]:
    """Read the Voltron per-DIMM CSV (format in the module docstring).

    Returns
    -------
    list of Record
        With the percentage converted to a fraction, in file order.

    Raises
    ------
    CalibrationError
        One line naming the file (and the line) for a missing, unreadable or corrupt file, a
        missing column, a bad number, a percentage outside 0..100, or a repeated row.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CalibrationError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if "\x00" in text:
        raise CalibrationError(f"{path}: not a text file (NUL bytes)")
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise CalibrationError(f"{path}: empty file, expected a header {','.join(_COLUMNS)}")
    names = [h.strip() for h in header]
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise CalibrationError(f"{path}: line 1: missing column(s) {', '.join(missing)}")
    index = {c: names.index(c) for c in _COLUMNS}
    records: list[Record] = []
    seen: set[tuple[str, float]] = set()
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            raise CalibrationError(f"{path}: line {lineno}: {len(row)} fields, expected {len(names)}")
        dimm, vendor = row[index["dimm_name"]].strip(), row[index["vendor"]].strip()
        if not dimm or not vendor:
            raise CalibrationError(f"{path}: line {lineno}: empty dimm_name or vendor")
        try:
            vdd_v = float(row[index["vdd"]])
            percent = float(row[index["error_cacheline_percent"]])
        except ValueError:
            raise CalibrationError(f"{path}: line {lineno}: vdd and error_cacheline_percent must be numbers") from None
        if not math.isfinite(vdd_v) or not 0.0 < vdd_v < 3.0:
            raise CalibrationError(f"{path}: line {lineno}: vdd {row[index['vdd']]!r} is not a DDR supply in volts")
        if not math.isfinite(percent) or not 0.0 <= percent <= 100.0:
            raise CalibrationError(f"{path}: line {lineno}: error_cacheline_percent {percent!r} is not in 0..100")
        key = (dimm, round(vdd_v, 6))
        if key in seen:
            raise CalibrationError(f"{path}: line {lineno}: a second row for {dimm} at {vdd_v} V")
        seen.add(key)
        records.append(Record(dimm, vendor, vdd_v, percent / 100.0))
    if not records:
        raise CalibrationError(f"{path}: no data rows")
    return records


@dataclass(frozen=True)
class BandPoint:
    """A held-out DIMM at one voltage against the population band (line fractions)."""

    vdd_v: float
    observed: float
    q05: float
    q50: float
    q95: float
    inside: bool


@dataclass(frozen=True)
class HoldoutResult:
    """A DIMM left out of the fit, judged against it."""

    dimm: str
    delta_v: float
    rms_decades: float
    percentile: float
    band: tuple[BandPoint, ...]

    @property
    def coverage(self) -> tuple[int, int]:
        """(voltages inside the 5-95 % band, voltages)."""
        return sum(p.inside for p in self.band), len(self.band)


@dataclass(frozen=True)
class FloorSummary:
    """Lowest voltage each DIMM ran at, and how it goes with the DIMM's shift.

    ``per_dimm_v`` maps DIMM -> lowest row (V); the floor lies in ``(v - 25 mV, v]``.
    Correlations are NaN where they are undefined (all floors equal).
    """

    per_dimm_v: dict[str, float]
    median_v: float
    std_v: float
    min_v: float
    max_v: float
    pearson_r: float
    spearman_rho: float
    spearman_p: float
    slope_v_per_v: float


@dataclass(frozen=True)
class VendorFit:
    """The fitted population of one vendor (see the module docstring for the model)."""

    vendor: str
    knots_v: tuple[float, ...]
    knots_log10_fraction: tuple[float, ...]
    ceiling: float
    deltas: dict[str, float]
    sigma_dimm_v: float
    sigma_dimm_robust_v: float
    rms_decades: float
    n_measured: int
    n_censored: int
    floors: FloorSummary
    holdout: tuple[HoldoutResult, ...] = ()
    smoothing: float = 0.0
    delta_prior_v: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def line_fraction(self, vdd_v: float | np.ndarray, delta_v: float | np.ndarray = 0.0) -> float | np.ndarray:
        """Line fraction ``F(vdd_v - delta_v)`` of a DIMM with shift ``delta_v`` (typical: 0)."""
        y = _eval_log10(np.asarray(self.knots_v), np.asarray(self.knots_log10_fraction),
                        np.asarray(vdd_v, dtype=float) - np.asarray(delta_v, dtype=float), math.log10(self.ceiling))
        out = 10.0**y
        return float(out) if np.ndim(out) == 0 else out

    def quantiles(self, vdd_v: float | np.ndarray, q: float | Sequence[float]) -> np.ndarray:
        """Population quantiles ``q`` (0..1) of the line fraction at ``vdd_v`` under the shift model.

        ``delta ~ N(0, sigma_dimm_v)`` and ``F`` is non-increasing, so the ``q`` quantile is
        ``F(vdd_v - sigma_dimm_v * z_q)``.  Shape: ``q``'s shape followed by ``vdd_v``'s.
        """
        qs = np.asarray(q, dtype=float)
        if np.any((qs <= 0.0) | (qs >= 1.0)):
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {q!r}")
        z = ndtri(qs)
        v = np.asarray(vdd_v, dtype=float)
        shift = self.sigma_dimm_v * z.reshape(z.shape + (1,) * v.ndim)
        return np.asarray(self.line_fraction(v, shift))

    @property
    def onset_v(self) -> float:
        """Highest voltage at which the typical DIMM has at least one failing line in 2^25 (V)."""
        grid = np.arange(self.knots_v[0], self.knots_v[-1] + 1e-9, 0.0005)
        failing = grid[np.asarray(self.line_fraction(grid)) >= RESOLUTION]
        return float(failing.max()) if failing.size else float("nan")


def _eval_log10(knots: np.ndarray, y: np.ndarray, v: np.ndarray, cap: float) -> np.ndarray:
    """Piecewise-linear ``log10 F`` with linear extrapolation, capped at ``cap``."""
    idx = np.clip(np.searchsorted(knots, v) - 1, 0, len(knots) - 2)
    t = (v - knots[idx]) / (knots[idx + 1] - knots[idx])
    return np.minimum(cap, y[idx] + t * (y[idx + 1] - y[idx]))


def _knots_from_params(u: np.ndarray, cap: float) -> np.ndarray:
    return cap - np.cumsum(np.exp(u))


def _residuals(model_log10: np.ndarray, obs_log10: np.ndarray, kind: np.ndarray, ceiling_log10: float) -> np.ndarray:
    """Per-observation residuals (decades); kind 0 = measured, 1 = zero, 2 = at the ceiling."""
    r = model_log10 - obs_log10
    r = np.where(kind == 1, np.maximum(0.0, model_log10 - _LOG_RES), r)
    floor = ceiling_log10 + math.log10(1.0 - CEILING_TOLERANCE)
    return np.where(kind == 2, np.minimum(0.0, model_log10 - floor), r)


@dataclass(frozen=True)
class _Obs:
    dimm_index: np.ndarray
    vdd_v: np.ndarray
    log10: np.ndarray
    kind: np.ndarray
    fraction: np.ndarray


def _observations(rows: Sequence[Record], dimms: Sequence[str], ceiling: float) -> _Obs:
    pos = {d: i for i, d in enumerate(dimms)}
    chosen = [r for r in rows if r.dimm in pos]
    frac = np.array([r.line_fraction for r in chosen], dtype=float)
    kind = np.zeros(len(chosen), dtype=int)
    kind[frac <= 0.0] = 1
    kind[frac >= ceiling * (1.0 - CEILING_TOLERANCE)] = 2
    log10 = np.log10(np.clip(frac, RESOLUTION, ceiling))
    return _Obs(np.array([pos[r.dimm] for r in chosen], dtype=int), np.array([r.vdd_v for r in chosen]),
                log10, kind, frac)


def default_holdout(dimms: Iterable[str]) -> tuple[str, ...]:
    """Every 5th DIMM by natural name order, starting with the 3rd (positions 3, 8, 13, ...)."""
    ordered = sorted(set(dimms), key=_natural_key)
    return tuple(d for i, d in enumerate(ordered) if i % 5 == 2)


def _initial_knots(knots: np.ndarray, obs: _Obs, cap: float) -> np.ndarray:
    """Median observation per knot (zeros one decade below the resolution), made monotone."""
    values = np.where(obs.kind == 1, _LOG_RES - 1.0, obs.log10)
    known_v, known_y = [], []
    for k in knots:
        at = np.isclose(obs.vdd_v, k)
        if at.any():
            known_v.append(k)
            known_y.append(float(np.median(values[at])))
    y = np.interp(knots, known_v, known_y)
    y = np.minimum.accumulate(np.minimum(y, cap - 1e-3))
    steps = np.diff(np.concatenate([[cap], y]))
    return np.log(np.maximum(-steps, 1e-3))


def _fit_one_delta(knots: np.ndarray, y: np.ndarray, cap: float, obs_v: np.ndarray, obs_log10: np.ndarray,
                   kind: np.ndarray, prior_v: float) -> tuple[float, float]:
    """Best shift of one DIMM against a fixed curve: (delta_v, rms residual in decades)."""

    def cost(d: float) -> float:
        r = _residuals(_eval_log10(knots, y, obs_v - d, cap), obs_log10, kind, cap)
        return float(np.sum(r**2) + (d / prior_v) ** 2)

    grid = np.arange(-0.2, 0.2 + 1e-9, 0.0005)
    costs = np.array([cost(d) for d in grid])
    best = float(grid[int(np.argmin(costs))])
    res = minimize_scalar(cost, bounds=(best - 0.0005, best + 0.0005), method="bounded",
                          options={"xatol": 1e-7})
    delta = float(res.x) if res.fun <= cost(best) else best
    r = _residuals(_eval_log10(knots, y, obs_v - delta, cap), obs_log10, kind, cap)
    return delta, float(np.sqrt(np.mean(r**2)))


def _floors(rows: Sequence[Record], dimms: Sequence[str], deltas: Mapping[str, float]) -> FloorSummary:
    lowest = {d: min(r.vdd_v for r in rows if r.dimm == d) for d in dimms}
    vals = np.array([lowest[d] for d in dimms])
    dl = np.array([deltas[d] for d in dimms])
    if np.ptp(vals) > 0 and np.ptp(dl) > 0 and len(dimms) >= 3:
        pear = float(pearsonr(dl, vals)[0])
        rho, rho_p = spearmanr(dl, vals)
        spear, spear_p = float(rho), float(rho_p)
        slope = float(np.polyfit(dl, vals, 1)[0])
    else:
        pear = spear = spear_p = slope = float("nan")
    return FloorSummary(lowest, float(np.median(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                        float(vals.min()), float(vals.max()), pear, spear, spear_p, slope)


def fit_vendor(rows: Sequence[Record], vendor: str, holdout: Sequence[str] | None = None, *,
               smoothing: float = 0.3, delta_prior_v: float = 0.1, knot_step_v: float = GRID_STEP_V) -> VendorFit:
    """Fit the shift model (module docstring) to one vendor's DIMMs.

    Parameters
    ----------
    rows : records from :func:`load_voltron` (other vendors' rows are ignored)
    vendor : vendor letter as in the file
    holdout : DIMMs to leave out of the fit (names of other vendors' DIMMs are ignored);
        ``None``: :func:`default_holdout`; ``()``: none
    smoothing : weight of the second-difference penalty on the knots (per decade)
    delta_prior_v : standard deviation of the weak N(0, .) prior on each shift, volts
    knot_step_v : knot spacing, volts (default the data's 25 mV grid; a divisor of it)

    Raises
    ------
    CalibrationError
        For an unknown vendor, a hold-out name that is no DIMM in ``rows``, or fewer than two
        DIMMs left to fit.
    """
    mine = [r for r in rows if r.vendor == vendor]
    if not mine:
        known = ", ".join(sorted({r.vendor for r in rows}))
        raise CalibrationError(f"no rows for vendor {vendor!r}; vendors in the data: {known}")
    all_dimms = sorted({r.dimm for r in mine}, key=_natural_key)
    if holdout is None:
        held = list(default_holdout(all_dimms))
    else:
        unknown = sorted(set(holdout) - {r.dimm for r in rows}, key=_natural_key)
        if unknown:
            raise CalibrationError(f"hold-out DIMM(s) {', '.join(unknown)} not in the data")
        held = [d for d in all_dimms if d in set(holdout)]
    dimms = [d for d in all_dimms if d not in held]
    if len(dimms) < 2:
        raise CalibrationError(f"vendor {vendor}: {len(dimms)} DIMM(s) left after the hold-out; need at least 2")
    if smoothing <= 0 or delta_prior_v <= 0 or not 0.001 <= knot_step_v <= GRID_STEP_V:
        raise CalibrationError("smoothing and delta_prior_v must be positive, knot_step_v in 0.001..0.025 V")

    ceiling = CEILINGS.get(vendor, 1.0)
    cap = math.log10(ceiling)
    fit_rows = [r for r in mine if r.dimm in set(dimms)]
    obs = _observations(fit_rows, dimms, ceiling)
    lo = round(min(r.vdd_v for r in mine) / GRID_STEP_V) * GRID_STEP_V - 4 * GRID_STEP_V
    hi = round(max(r.vdd_v for r in mine) / GRID_STEP_V) * GRID_STEP_V
    knots = np.round(np.arange(lo, hi + knot_step_v / 2, knot_step_v), 5)
    nk, nd = len(knots), len(dimms)

    def unpack(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        free = p[nk:]
        return _knots_from_params(p[:nk], cap), np.concatenate([free, [-np.sum(free)]])

    def fun(p: np.ndarray) -> np.ndarray:
        y, d = unpack(p)
        model = _eval_log10(knots, y, obs.vdd_v - d[obs.dimm_index], cap)
        data = _residuals(model, obs.log10, obs.kind, cap)
        curv = smoothing * (y[:-2] - 2.0 * y[1:-1] + y[2:])
        return np.concatenate([data, curv, d / delta_prior_v])

    p0 = np.concatenate([_initial_knots(knots, obs, cap), np.zeros(nd - 1)])
    lower = np.concatenate([np.full(nk, -30.0), np.full(nd - 1, -0.3)])
    upper = np.concatenate([np.full(nk, 5.0), np.full(nd - 1, 0.3)])
    sol = least_squares(fun, p0, bounds=(lower, upper), method="trf", x_scale="jac", max_nfev=4000,
                        xtol=1e-10, ftol=1e-10, gtol=1e-10)
    y, d = unpack(sol.x)
    log.debug("vendor %s: least_squares %s after %d evaluations", vendor, sol.message, sol.nfev)
    model = _eval_log10(knots, y, obs.vdd_v - d[obs.dimm_index], cap)
    data_res = _residuals(model, obs.log10, obs.kind, cap)
    measured = obs.kind == 0
    rms = float(np.sqrt(np.mean(data_res[measured] ** 2))) if measured.any() else float("nan")
    deltas = {name: float(v) for name, v in zip(dimms, d)}
    sigma = float(np.std(d, ddof=1))
    robust = float(1.4826 * np.median(np.abs(d - np.median(d))))

    results = []
    all_deltas = dict(deltas)
    for name in held:
        ho_rows = [r for r in mine if r.dimm == name]
        ho = _observations(ho_rows, [name], ceiling)
        delta, ho_rms = _fit_one_delta(knots, y, cap, ho.vdd_v, ho.log10, ho.kind, delta_prior_v)
        all_deltas[name] = delta
        provisional = VendorFit(vendor, tuple(knots), tuple(y), ceiling, deltas, sigma, robust, rms,
                                int(measured.sum()), int((~measured).sum()), _floors(mine, dimms, deltas))
        band = []
        for vdd, frac, kind in sorted(zip(ho.vdd_v, ho.fraction, ho.kind)):
            q05, q50, q95 = (float(x) for x in provisional.quantiles(vdd, (0.05, 0.5, 0.95)))
            if kind == 1:
                inside = q05 < RESOLUTION
            elif kind == 2:
                inside = q95 >= ceiling * (1.0 - CEILING_TOLERANCE)
            else:
                inside = q05 * (1 - 1e-9) <= frac <= q95 * (1 + 1e-9)
            band.append(BandPoint(float(vdd), float(frac), q05, q50, q95, bool(inside)))
        results.append(HoldoutResult(name, delta, ho_rms, float(100.0 * ndtr(delta / sigma)), tuple(band)))

    return VendorFit(
        vendor=vendor,
        knots_v=tuple(float(k) for k in knots),
        knots_log10_fraction=tuple(float(v) for v in y),
        ceiling=ceiling,
        deltas=deltas,
        sigma_dimm_v=sigma,
        sigma_dimm_robust_v=robust,
        rms_decades=rms,
        n_measured=int(measured.sum()),
        n_censored=int((~measured).sum()),
        floors=_floors(mine, all_dimms, all_deltas),
        holdout=tuple(results),
        smoothing=smoothing,
        delta_prior_v=delta_prior_v,
        extra={"rms_all_decades": float(np.sqrt(np.mean(data_res**2))), "cost": float(sol.cost)},
    )


def fit_all(rows: Sequence[Record], holdout: Sequence[str] | None = None, **kw: float) -> dict[str, VendorFit]:
    """:func:`fit_vendor` for every vendor in ``rows``, in name order."""
    vendors = sorted({r.vendor for r in rows})
    if holdout is not None:
        unknown = sorted(set(holdout) - {r.dimm for r in rows}, key=_natural_key)
        if unknown:
            raise CalibrationError(f"hold-out DIMM(s) {', '.join(unknown)} not in the data")
    return {v: fit_vendor(rows, v, holdout, **kw) for v in vendors}


def profile_literal(fit: VendorFit, min_fraction: float = 1e-10) -> str:
    """Python text for ``emubench/profiles.py``: ``points=(...)``, ``dimm_sigma_v=...``, ``floor_v=...``.

    The points are the knots from the last one at the ceiling down to the first one below
    ``min_fraction``.
    """
    fr = [10.0**y for y in fit.knots_log10_fraction]
    start = max([i for i, f in enumerate(fr) if f >= fit.ceiling * (1.0 - CEILING_TOLERANCE)], default=0)
    stop = next((i for i, f in enumerate(fr) if f < min_fraction), len(fr) - 1)
    pts = ", ".join(f"({fit.knots_v[i]:.3f}, {fr[i]:.4g})" for i in range(start, stop + 1))
    return (f"points=({pts}),\ndimm_sigma_v={fit.sigma_dimm_v:.4f},\nfloor_v={fit.floors.median_v:.3f},")


def _f(x: float, spec: str) -> str:
    return "n/a" if not math.isfinite(x) else format(x, spec)


def format_fit(fit: VendorFit) -> str:
    """A readable table of one vendor's fit (what the CLI prints)."""
    out = [f"== vendor {fit.vendor}: {len(fit.deltas)} DIMMs fitted, {len(fit.holdout)} held out; "
           f"ceiling {fit.ceiling:g}; smoothing {fit.smoothing:g}, delta prior {fit.delta_prior_v:g} V"]
    out.append("  typical DIMM F (knots):  vdd_v   log10_F    F")
    for v, y in zip(fit.knots_v, fit.knots_log10_fraction):
        out.append(f"                          {v:.3f}  {y:8.3f}  {10.0**y:9.3g}")
    out.append(f"  onset (F >= 1/2^25) at {fit.onset_v:.4f} V")
    out.append(f"  sigma_dimm: std {1e3 * fit.sigma_dimm_v:.2f} mV, robust (1.4826 MAD) "
               f"{1e3 * fit.sigma_dimm_robust_v:.2f} mV")
    out.append(f"  fit RMS: {fit.rms_decades:.3f} decades over {fit.n_measured} measured values "
               f"({fit.extra['rms_all_decades']:.3f} over all {fit.n_measured + fit.n_censored} incl. censored)")
    out.append("  deltas (mV): " + ", ".join(f"{d} {1e3 * v:+.1f}" for d, v in fit.deltas.items()))
    fl = fit.floors
    out.append(f"  floor (lowest row; true floor in (v-25 mV, v]): median {fl.median_v:.3f} V, std "
               f"{1e3 * fl.std_v:.1f} mV, range {fl.min_v:.3f}-{fl.max_v:.3f} V")
    out.append(f"  floor vs delta ({len(fl.per_dimm_v)} DIMMs): pearson {_f(fl.pearson_r, '+.2f')}, spearman "
               f"{_f(fl.spearman_rho, '+.2f')} (p {_f(fl.spearman_p, '.2f')}), slope {_f(fl.slope_v_per_v, '+.2f')} V/V")
    out.append("    " + ", ".join(f"{d} {v:.3f}" for d, v in fl.per_dimm_v.items()))
    for h in fit.holdout:
        inside, n = h.coverage
        out.append(f"  hold-out {h.dimm}: delta {1e3 * h.delta_v:+.1f} mV (percentile {h.percentile:.1f}), "
                   f"RMS {h.rms_decades:.3f} decades, inside 5-95 % band at {inside}/{n} voltages")
        for p in h.band:
            out.append(f"      {p.vdd_v:.3f} V  observed {p.observed:9.3g}  band {p.q05:9.3g} {p.q50:9.3g} "
                       f"{p.q95:9.3g}  {'in' if p.inside else 'OUT'}")
    out.append("  profile literal:")
    out.extend("    " + line for line in profile_literal(fit).splitlines())
    return "\n".join(out)


def _fit_doc(fit: VendorFit) -> dict[str, object]:
    return {
        "vendor": fit.vendor,
        "knots_v": fit.knots_v,
        "knots_log10_fraction": fit.knots_log10_fraction,
        "ceiling": fit.ceiling,
        "onset_v": fit.onset_v,
        "deltas_v": fit.deltas,
        "sigma_dimm_v": fit.sigma_dimm_v,
        "sigma_dimm_robust_v": fit.sigma_dimm_robust_v,
        "rms_decades": fit.rms_decades,
        "rms_all_decades": fit.extra["rms_all_decades"],
        "n_measured": fit.n_measured,
        "n_censored": fit.n_censored,
        "smoothing": fit.smoothing,
        "delta_prior_v": fit.delta_prior_v,
        "floors": {
            "per_dimm_v": fit.floors.per_dimm_v,
            "median_v": fit.floors.median_v,
            "std_v": fit.floors.std_v,
            "pearson_r": fit.floors.pearson_r,
            "spearman_rho": fit.floors.spearman_rho,
            "spearman_p": fit.floors.spearman_p,
            "slope_v_per_v": fit.floors.slope_v_per_v,
        },
        "holdout": [
            {"dimm": h.dimm, "delta_v": h.delta_v, "rms_decades": h.rms_decades, "percentile": h.percentile,
             "band": [vars(p) for p in h.band]}
            for h in fit.holdout
        ],
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emubench.calibration",
        description="Fit each vendor's typical-DIMM curve and per-DIMM voltage spread (V) to the Voltron "
                    "per-DIMM line-error data, with held-out DIMMs.",
    )
    parser.add_argument("--csv", default=DEFAULT_CSV, help=f"Voltron CSV (default {DEFAULT_CSV})")
    parser.add_argument("--holdout", default=None, metavar="DIMM,...",
                        help="DIMMs to hold out (comma-separated; empty string: none); default every 5th "
                             "DIMM per vendor by name order, starting with the 3rd")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the fits as JSON here")
    parser.add_argument("--smoothing", type=float, default=0.3,
                        help="weight of the knots' second-difference penalty, per decade (default 0.3)")
    parser.add_argument("--eden", action="store_true",
                        help="instead: refit the eden profile's curve points to the EDEN slides' table "
                             "(fit_eden_table over seeds 0..15) and print them beside the table")
    parser.add_argument("--knot-step-v", type=float, default=GRID_STEP_V,
                        help=f"knot spacing of the typical-DIMM curve in volts (default {GRID_STEP_V})")
    add_verbosity(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the calibration command; exit 0 on success, 2 on bad input."""
    args = _parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    if args.eden:
        from emubench.profiles import get_profile

        fit, table = fit_eden_table(get_profile("eden"), seeds=tuple(range(16)), iterations=3)
        print("vdd_points_v", fit.vdd_points_v, "p", tuple(round(10**y, 5) for y in fit.vdd_log10_p))
        print("margin x", fit.margin_curve.x, "p", tuple(round(10**y, 5) for y in fit.margin_curve.log10_p))
        for r in table:
            print(f"{r['knob']:>4} {r['delta']:+6.2f}  BER {100 * r['ber']:.3f} %  table {100 * r['low']:.1f}-"
                  f"{100 * r['high']:.1f} %  {'ok' if within(r['ber'], r['low'], r['high']) else 'MISS'}")
        return 0
    holdout = None if args.holdout is None else tuple(d.strip() for d in args.holdout.split(",") if d.strip())
    try:
        rows = load_voltron(args.csv)
        fits = fit_all(rows, holdout, smoothing=args.smoothing, knot_step_v=args.knot_step_v)
    except CalibrationError as exc:
        return fail(str(exc))
    print("\n\n".join(format_fit(f) for f in fits.values()))
    if args.json:
        try:
            write_json(args.json, {"source": str(args.csv), "vendors": {v: _fit_doc(f) for v, f in fits.items()}})
        except OSError as exc:
            return fail(f"cannot write {args.json}: {exc.strerror or exc}")
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------- the eden table (issue #19)
#: EDEN's coarse table, one knob at a time: (knob, delta from nominal, BER low, BER high).
#: BER is flipped bits / tested bits under random data (what ``profiler.sweep`` reports).
EDEN_TABLE: tuple[tuple[str, float, float, float], ...] = (
    ("vdd", -0.10, 0.005, 0.005),
    ("vdd", -0.25, 0.010, 0.015),
    ("vdd", -0.30, 0.030, 0.040),
    ("vdd", -0.35, 0.050, 0.050),
    ("trcd", -1.0, 0.005, 0.010),
    ("trcd", -2.0, 0.015, 0.015),
    ("trcd", -4.5, 0.030, 0.030),
    ("trcd", -6.0, 0.050, 0.050),
)
EDEN_NOMINAL_TRCD_NS = 13.75


def table_setting(knob: str, delta: float, vdd_nominal_v: float = 1.35) -> tuple[float, float]:
    """``(vdd_v, trcd_ns)`` of one table point (the other knob at nominal)."""
    if knob == "vdd":
        return round(vdd_nominal_v + delta, 4), EDEN_NOMINAL_TRCD_NS
    return vdd_nominal_v, round(EDEN_NOMINAL_TRCD_NS + delta, 4)


def within(ber: float, low: float, high: float, factor: float = 1.5) -> bool:
    """``ber`` lies within ``factor`` of the range ``[low, high]``."""
    return low / factor <= ber <= high * factor


def measure_ber(profile: object, *, vdd_v: float, trcd_ns: float, seeds: Sequence[int] = (0,),
                banks: Sequence[int] = (0, 3), rows: Sequence[int] = range(64), temp_c: float | None = None,
                pattern: str = "random", data_seed: int = 0) -> tuple[int, int]:
    """Flipped and tested bits of a DIMM population read at one setting, in process (no firmware).

    Each row is written with ``pattern`` (``random``: bytes from a seeded generator per row;
    or a byte value ``0xNN``), activated at nominal tRP and read in one activation with every
    burst at ACT-to-RD ``trcd_ns`` (the sweep reads each burst in its own activation: the same
    cells fail, only the read jitter differs). For fitting profiles quickly; the benchmark
    measures through the sweep and the emulated tester instead.
    """
    from emubench.physics import PhysicsDimm
    from emubench.profiles import VendorProfile

    if not isinstance(profile, VendorProfile):
        raise CalibrationError(f"profile must be a VendorProfile, got {type(profile).__name__}")
    tck = profile.tck_ns
    temp = profile.temp_ref_c if temp_c is None else float(temp_c)
    trcd_c = max(1, int(round(trcd_ns / tck)))
    trp_c = int(round(EDEN_NOMINAL_TRCD_NS / tck))
    tras_c = int(round(35.0 / tck))
    flipped = tested = 0
    for seed in seeds:
        dimm = PhysicsDimm(profile, seed=int(seed), environment=lambda: (vdd_v, temp), tck_ns=tck)
        g = dimm.geometry
        columns = np.arange(0, g.columns, 8)
        nom = np.full(columns.size, trp_c, np.int64)
        now = np.arange(columns.size, dtype=float)
        rng = np.random.default_rng([int(data_seed), int(seed)])
        for bank in banks:
            for row in rows:
                if pattern == "random":
                    data = rng.integers(0, 256, (columns.size, 64), dtype=np.uint8)
                else:
                    data = np.full((columns.size, 64), int(pattern, 16), np.uint8)
                access = dimm.activate(bank, row, trp_c)
                dimm.write_bursts(access, columns, data, nom, now)
                dimm.precharge(access, tras_c)
                access = dimm.activate(bank, row, trp_c)
                read = dimm.read_bursts(access, columns, np.full(columns.size, trcd_c, np.int64), now)
                dimm.precharge(access, tras_c)
                flipped += int(np.unpackbits(read ^ data.reshape(-1)).sum())
                tested += data.size * 8
    return flipped, tested


def fit_eden_table(profile: object, *, seeds: Sequence[int] = (0, 1, 2, 3), banks: Sequence[int] = (0, 3),
                   rows: Sequence[int] = range(64), iterations: int = 6) -> tuple[object, list[dict[str, float]]]:
    """Move the eden profile's curve points until its measured BER meets each table point's centre.

    The voltage curve's points at the four table voltages and the margin curve's points at the
    four table tRCDs (margins from the profile's onset) are scaled by ``(target / measured)`` per
    iteration, the target the range's geometric centre, BER measured by :func:`measure_ber` over
    ``seeds`` (the table is the mean over DIMMs). Returns the fitted profile and its last table.
    """
    import dataclasses

    from emubench.profiles import LogCurve

    p = profile
    table: list[dict[str, float]] = []
    for it in range(iterations + 1):
        table = []
        for knob, delta, lo, hi in EDEN_TABLE:
            vdd, trcd = table_setting(knob, delta, p.vdd_nominal_v)
            f, n = measure_ber(p, vdd_v=vdd, trcd_ns=trcd, seeds=seeds, banks=banks, rows=rows)
            table.append({"knob": knob, "delta": delta, "vdd_v": vdd, "trcd_ns": trcd, "ber": f / n,
                          "low": lo, "high": hi, "target": math.sqrt(lo * hi)})
        log.info("iteration %d: %s", it, ", ".join(f"{r['knob']}{r['delta']:+g} {r['ber']:.3g}" for r in table))
        if it == iterations:
            break
        vx, vy = list(p.vdd_points_v), list(p.vdd_log10_p)
        mx, my = list(p.margin_curve.x), list(p.margin_curve.log10_p)
        for r in table:
            step = math.log10(r["target"] / max(r["ber"], 1e-12))
            step = max(-1.0, min(1.0, step))
            if r["knob"] == "vdd":
                k = min(range(len(vx)), key=lambda i: abs(vx[i] - r["vdd_v"]))
                vy[k] += step
            else:
                margin = (r["trcd_ns"] - p.trcd_safe_ns) / p.margin_scale
                k = min(range(len(mx)), key=lambda i: abs(mx[i] - margin))
                my[k] = min(my[k] + step, math.log10(0.5))
        p = dataclasses.replace(p, vdd_log10_p=tuple(vy),
                                margin_curve=LogCurve(tuple(mx), tuple(my), p.margin_curve.zero_at, p.margin_curve.p_max))
    return p, table

"""Vendor profiles of the emulated DIMM: how often, where and under which conditions cells fail.

A profile describes one kind of DIMM (a vendor's population) by four mechanisms,
each a *marginal* probability that a cell fails (averaged over the vendor's DIMMs)
spread over DIMMs, chips, banks, subarrays, rows, bitlines and cells:

- **Voltage and latency (Voltron).** ``vdd_curve`` is the probability at the
  reference latency ``latency_ref_ns`` (Voltron's tRCD = tRP = 10 ns) and 20 C, as a
  function of the supply.  A cell that fails at ``V`` with the reference latency
  is one whose access is too slow at that voltage, so a longer latency helps: the
  probability at latency ``t`` is the curve read at the *equivalent voltage*
  ``V_eq = V_floor + (V - V_floor) * (t / (t_ref * f(T))) ** (1 / alpha)`` (the
  alpha-power law of transistor drive, Sakurai and Newton 1990), and below
  ``V_floor`` (the DIMM's floor) latency does not help at all.  ``f(T)`` is the
  temperature factor of the latency a cell needs.
- **Timing margin (AL-DRAM, EDEN).** For tRCD, tRP and tRAS, a probability as a
  function of the margin ``t - t_safe`` (ns) on a vendor-specific curve, where
  ``t_safe`` rises mildly as VDD drops, with the temperature factor ``f(T)``, and
  with per-DIMM and per-chip offsets.
- **Data-pattern coupling.** A cell whose neighbours on the adjacent bitlines hold
  the opposite value is weaker by ``coupling_per_aggressor`` (latent sigma) per such
  neighbour (0, 1 or 2), so checkerboards fail more than solid data.
- **Retention.** A cell's retention time is log-normal, temperature dependent;
  a row not restored (activated or refreshed) for longer than a cell's retention
  time loses that cell's charge.

Every coefficient, its source or its status as an assumption, and what it was
fitted to, are in ``docs/vendor-profiles.md``; the per-DIMM voltage spread and the
typical-DIMM curves are fitted to ``data/voltron-faulty-cachelines.csv`` by
:mod:`emubench.calibration`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from softmc_host.timing import ML605_TCK_NS

__all__ = [
    "LogCurve",
    "VendorProfile",
    "PROFILES",
    "get_profile",
    "ProfileError",
    "line_fraction",
    "cell_p_for_line_fraction",
]

_TAPER_LOG10_P = -16.0


class ProfileError(KeyError):
    """An unknown profile name."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class LogCurve:
    """A probability that is log-linear in ``x`` between points.

    ``p(x)`` interpolates ``log10 p`` linearly between the points (``x``
    ascending) and extrapolates with the end segments' slopes; it is 0 for
    ``x >= zero_at`` and never above ``p_max``.
    """

    x: tuple[float, ...]
    log10_p: tuple[float, ...]
    zero_at: float
    p_max: float = 0.5

    def __post_init__(self) -> None:
        if len(self.x) != len(self.log10_p) or len(self.x) < 2:
            raise ValueError("a LogCurve needs at least two points and matching lengths")
        if any(b <= a for a, b in zip(self.x, self.x[1:])):
            raise ValueError("LogCurve x values must be strictly ascending")

    def __call__(self, x: float) -> float:
        if x >= self.zero_at:
            return 0.0
        xs, ys = self.x, self.log10_p
        if x <= xs[0]:
            y = ys[0] + (ys[1] - ys[0]) / (xs[1] - xs[0]) * (x - xs[0])
        elif x >= xs[-1]:
            y = ys[-1] + (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) * (x - xs[-1])
        else:
            y = float(np.interp(x, xs, ys))
        if x > xs[-1] and self.zero_at > xs[-1]:
            # Taper to 1e-16 at zero_at, so the last error-free step is smooth, not a cliff.
            y = min(y, ys[-1] + (_TAPER_LOG10_P - ys[-1]) * (x - xs[-1]) / (self.zero_at - xs[-1]))
        return min(self.p_max, 10.0**y)


# Probabilists' Gauss-Hermite nodes: E[f(Z)] ~= sum(w * f(nodes)) / sqrt(2 pi).
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(96)
_GH_WEIGHTS = _GH_WEIGHTS / math.sqrt(2.0 * math.pi)


def line_fraction(threshold_z: float, shared_var: float, n_susceptible: int) -> float:
    """Expected fraction of lines with at least one failing cell.

    A cell fails when its latent weakness ``z = a + e`` exceeds ``threshold_z``,
    where ``a ~ N(0, shared_var)`` is shared by the line's cells (row and bank
    components) and ``e ~ N(0, 1 - shared_var)`` is its own.
    """
    sd_shared = math.sqrt(shared_var)
    sd_own = math.sqrt(1.0 - shared_var)
    a = _GH_NODES * sd_shared
    p_cell = ndtr((a - threshold_z) / sd_own)
    p_line = -np.expm1(n_susceptible * np.log1p(-np.minimum(p_cell, 1 - 1e-16)))
    return float(np.sum(_GH_WEIGHTS * p_line))


def cell_p_for_line_fraction(fraction: float, shared_var: float, n_susceptible: int) -> float:
    """Marginal cell failure probability whose expected line fraction is ``fraction``.

    Solved by bisection on the latent threshold (the fraction falls monotonically
    as the threshold rises).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"line fraction must be in (0, 1), got {fraction}")
    lo, hi = -8.0, 12.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if line_fraction(mid, shared_var, n_susceptible) > fraction:
            lo = mid
        else:
            hi = mid
    return float(ndtr(-0.5 * (lo + hi)))


_DEFAULT_MARGIN = LogCurve(
    x=(-8.0, -6.0, -4.0, -3.0, -2.0, -1.0, 0.0),
    log10_p=(-0.3, -0.7, -1.3, -2.0, -3.0, -5.0, -9.0),
    zero_at=0.0,
)

# Retention, from the calibration notes' Voltron retention figures (worst vendor):
# no errors up to 256 ms; first errors at 512 ms (70 C) and 1024 ms (20 C); about
# 3e-7 BER at 2048 ms, 70 C.  "First errors" is read as one flipped bit of a 2 GiB
# DIMM (BER 2^-34), and only charged cells can leak (half of them under the test
# data), so the cell probability is twice the BER.
_RETENTION_POINTS = ((0.512, 70.0, 2.0**-34), (2.048, 70.0, 3e-7), (1.024, 20.0, 2.0**-34))


def _retention_fit() -> tuple[float, float, float]:
    """Log-normal retention time through the notes' points: (log10 median s at 20 C, sigma decades, decades/C)."""
    from scipy.special import ndtri

    (t1, temp_hot, b1), (t2, _, b2), (t3, temp_cold, b3) = _RETENTION_POINTS
    z1, z2, z3 = (float(ndtri(2.0 * b)) for b in (b1, b2, b3))
    sigma = (math.log10(t2) - math.log10(t1)) / (z2 - z1)
    mu_hot = math.log10(t2) - sigma * z2
    mu_cold = math.log10(t3) - sigma * z3
    return mu_cold, sigma, (mu_cold - mu_hot) / (temp_hot - temp_cold)


_RET_MU_20, _RET_SIGMA, _RET_PER_C = _retention_fit()


@dataclass(frozen=True)
class VendorProfile:
    """Failure behaviour of one kind of DIMM (see the module docstring and ``docs/vendor-profiles.md``).

    Attributes (units in the names; ``*_var`` are shares of a cell's latent variance)
    ----------
    vdd_points_v, vdd_log10_p : voltage curve points (cell probabilities at the
        reference latency and ``temp_ref_c``, solid data)
    vdd_error_free_v : the voltage curve is 0 at or above this equivalent VDD
    dimm_sigma_v : DIMM-to-DIMM spread of the voltage curve (a shift, also of the floor)
    vdd_floor_v : the typical DIMM's floor: below it a longer latency does not help
    latency_ref_ns : latency the voltage curve was measured at (None: no coupling)
    latency_alpha : alpha-power-law exponent of the latency a cell needs vs VDD
    latency_temp_coeff_per_c : relative rise of the latency a cell needs per degree
    trcd_safe_ns, trp_safe_ns, tras_safe_ns : timing-margin onset at nominal VDD, ``temp_ref_c``
    timing_v_coeff_ns_per_v : rise of the timing onsets per volt below nominal
    dimm_sigma_ns, chip_sigma_ns : per-DIMM and per-chip offsets of the timing onsets
    margin_scale : stretches the margin axis of ``margin_curve`` (the vendor's slope)
    bank_var, row_var, subarray_var, distance_var, bitline_var, chip_var : latent
        shares; the cell's own share is the rest
    row_shared_frac : part of the row component that is the same in every bank (row stripes)
    subarray_rows : rows per subarray (distance from the sense amplifiers repeats with it)
    orientation : ``"bitline"`` or ``"row-block"`` (blocks of ``orientation_block_rows`` rows)
    coupling_per_aggressor : latent shift per adjacent-bitline neighbour holding the other value
    rcd_anti_bias : under reduced tRCD anti cells (0->1) fail ``1 + bias`` times, true cells
        ``1 - bias`` times the marginal rate
    read_noise_voltage, read_noise_timing : read-to-read jitter of a cell's failure
        probability (relative, 1 sigma) per mechanism
    retention_log10_s, retention_sigma_decades, retention_decades_per_c,
    retention_dimm_sigma_decades : log-normal retention time (median at ``temp_ref_c``),
        its temperature shift and the per-DIMM spread; ``retention_log10_s = inf`` disables it
    """

    name: str
    description: str
    sources: tuple[str, ...]
    vdd_nominal_v: float
    vdd_points_v: tuple[float, ...]
    vdd_log10_p: tuple[float, ...]
    vdd_error_free_v: float
    dimm_sigma_v: float
    trcd_safe_ns: float
    trp_safe_ns: float
    tras_safe_ns: float
    bank_var: float
    row_var: float
    row_shared_frac: float
    bitline_var: float
    chip_var: float = 0.02
    subarray_var: float = 0.03
    distance_var: float = 0.03
    subarray_rows: int = 512
    orientation: str = "bitline"
    orientation_block_rows: int = 512
    vdd_floor_v: float = 1.0
    latency_ref_ns: float | None = 10.0
    latency_alpha: float = 1.3
    latency_temp_coeff_per_c: float = 0.004
    timing_v_coeff_ns_per_v: float = 5.0
    dimm_sigma_ns: float = 0.8
    chip_sigma_ns: float = 0.3
    margin_scale: float = 1.0
    coupling_per_aggressor: float = 0.1
    temp_ref_c: float = 20.0
    rcd_anti_bias: float = 0.3
    read_noise_voltage: float = 0.05
    read_noise_timing: float = 0.05
    retention_log10_s: float = _RET_MU_20
    retention_sigma_decades: float = _RET_SIGMA
    retention_decades_per_c: float = _RET_PER_C
    retention_dimm_sigma_decades: float = 0.1
    tck_ns: float = ML605_TCK_NS
    margin_curve: LogCurve = field(default=_DEFAULT_MARGIN)
    published_line_fraction: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        structure = self.bank_var + self.row_var + self.bitline_var + self.chip_var + self.subarray_var
        if structure + self.distance_var >= 0.95:
            raise ValueError(f"profile {self.name}: component variances leave no cell-level share")
        if self.orientation not in ("bitline", "row-block"):
            raise ValueError(f"profile {self.name}: orientation must be 'bitline' or 'row-block'")

    @functools.cached_property
    def vdd_curve(self) -> LogCurve:
        """Marginal cell failure probability vs equivalent VDD (reference latency, solid data)."""
        return LogCurve(self.vdd_points_v, self.vdd_log10_p, zero_at=self.vdd_error_free_v)

    @property
    def cell_var(self) -> float:
        """Share of latent variance that is the cell's own."""
        return 1.0 - (
            self.bank_var + self.row_var + self.bitline_var + self.chip_var + self.subarray_var + self.distance_var
        )

    @property
    def line_shared_var(self) -> float:
        """Latent variance shared by the cells of one 64-byte line (bank, row, subarray, distance)."""
        return self.bank_var + self.row_var + self.subarray_var + self.distance_var

    def latency_need_factor(self, temp_c: float) -> float:
        """Latency a cell needs at ``temp_c`` relative to ``temp_ref_c`` (at least 0.5)."""
        return max(0.5, 1.0 + self.latency_temp_coeff_per_c * (temp_c - self.temp_ref_c))

    def equivalent_vdd_v(self, vdd_v: float, latency_ns: float, temp_c: float, floor_v: float) -> float:
        """The VDD at which the reference latency fails like ``latency_ns`` does at ``vdd_v``.

        ``vdd_v`` and ``floor_v`` are already shifted by the DIMM's (and chip's) offset.
        """
        if self.latency_ref_ns is None or vdd_v <= floor_v:
            return vdd_v
        ratio = latency_ns / (self.latency_ref_ns * self.latency_need_factor(temp_c))
        return floor_v + (vdd_v - floor_v) * max(ratio, 1e-6) ** (1.0 / self.latency_alpha)

    def p_voltage(self, vdd_eq_v: float) -> float:
        """Marginal cell failure probability at an equivalent VDD."""
        return self.vdd_curve(vdd_eq_v)

    def safe_ns(self, which: str, vdd_v: float, temp_c: float) -> float:
        """Onset of the timing-margin mechanism for tRCD/tRP/tRAS (``which``), typical DIMM."""
        base = {"trcd": self.trcd_safe_ns, "trp": self.trp_safe_ns, "tras": self.tras_safe_ns}[which]
        return (base + self.timing_v_coeff_ns_per_v * max(0.0, self.vdd_nominal_v - vdd_v)) * self.latency_need_factor(
            temp_c
        )

    def p_timing(self, which: str, t_ns: float, vdd_v: float, temp_c: float, offset_ns: float = 0.0) -> float:
        """Marginal cell failure probability of the timing-margin mechanism.

        ``offset_ns`` is the DIMM's and chip's onset offset (positive = slower).
        """
        margin = t_ns - self.safe_ns(which, vdd_v, temp_c) - offset_ns
        return self.margin_curve(margin / self.margin_scale)

    def retention_log10_s_at(self, temp_c: float) -> float:
        """log10 of the median retention time (s) at ``temp_c``."""
        return self.retention_log10_s - self.retention_decades_per_c * (temp_c - self.temp_ref_c)

    def p_retention(self, unrestored_s: float, temp_c: float, offset_decades: float = 0.0) -> float:
        """Probability that a charged cell has lost its charge after ``unrestored_s`` without restore."""
        if unrestored_s <= 0 or not math.isfinite(self.retention_log10_s):
            return 0.0
        z = (math.log10(unrestored_s) - self.retention_log10_s_at(temp_c) - offset_decades) / self.retention_sigma_decades
        return float(ndtr(z))


def _from_lines(
    points: tuple[tuple[float, float], ...], shared_var: float, n_susceptible: int, scale: float = 1.0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Turn (vdd_v, line fraction) points into (vdd_v, log10 cell p) points."""
    xs, ys = [], []
    for vdd, frac in sorted(points):
        target = min(frac * scale, 0.999)
        xs.append(vdd)
        ys.append(math.log10(cell_p_for_line_fraction(target, shared_var, n_susceptible)))
    return tuple(xs), tuple(ys)


_STRUCTURE = ("bank_var", "row_var", "subarray_var", "distance_var")


def _voltron(
    name: str,
    description: str,
    points: tuple[tuple[float, float], ...],
    error_free_v: float,
    orientation: str,
    **kw: float,
) -> VendorProfile:
    shared = sum(kw.get(k, VendorProfile.__dataclass_fields__[k].default) for k in _STRUCTURE)  # type: ignore[misc]
    if orientation == "row-block":
        # Under a solid pattern only the rows of one orientation can fail: half the lines
        # hold no susceptible cell, the other half 512.  The fraction is over all lines.
        xs, ys = _from_lines(points, shared, 512, scale=2.0)
    else:
        xs, ys = _from_lines(points, shared, 256)
    return VendorProfile(
        name=name,
        description=description,
        sources=(
            "Voltron (Chang et al., SIGMETRICS 2017): data/voltron-faulty-cachelines.csv, per-DIMM curves "
            "(typical curve and DIMM spread fitted by emubench.calibration)",
            "AL-DRAM (Lee et al., HPCA 2015): timing margins of 17-55 % at 55 C",
            "EDEN (Koppula et al., MICRO 2019): chip-to-chip tRP spread, 0->1 bias under reduced tRCD",
            "Voltron retention figures (calibration notes): onset intervals and BER at 2048 ms",
        ),
        vdd_nominal_v=1.35,
        vdd_points_v=xs,
        vdd_log10_p=ys,
        vdd_error_free_v=error_free_v,
        orientation=orientation,
        published_line_fraction=points,
        **kw,  # type: ignore[arg-type]
    )


def _build_profiles() -> dict[str, VendorProfile]:
    profiles = {
        "A": _voltron(
            "A",
            "DDR3L vendor A: errors from 1.10 V, steep onset, strong bank-to-bank differences",
            # Typical-DIMM curve and DIMM spread fitted by `python -m emubench.calibration`
            # (hold-out A3, A8 excluded): line fractions at tRCD = tRP = 10 ns, 20 C.
            ((1.075, 0.999), (1.100, 0.01455), (1.125, 7.769e-12)),
            error_free_v=1.15,
            orientation="bitline",
            dimm_sigma_v=0.0115,
            vdd_floor_v=1.0875,
            trcd_safe_ns=7.2,
            trp_safe_ns=7.2,
            tras_safe_ns=20.0,
            margin_scale=0.7,
            bank_var=0.22,
            row_var=0.22,
            row_shared_frac=0.6,
            bitline_var=0.05,
        ),
        "B": _voltron(
            "B",
            "DDR3L vendor B: onset 1.075-1.125 V with tiny rates growing ~100x per 25 mV",
            # Fitted by `python -m emubench.calibration` (hold-out B3, B9 excluded).
            (
                (1.000, 0.999),
                (1.025, 0.1807),
                (1.050, 5.307e-4),
                (1.075, 8.179e-6),
                (1.100, 4.145e-8),
                (1.125, 1.232e-8),
                (1.150, 3.664e-9),
                (1.175, 1.089e-9),
                (1.200, 3.238e-10),
                (1.225, 9.628e-11),
            ),
            error_free_v=1.25,
            orientation="bitline",
            dimm_sigma_v=0.0178,
            vdd_floor_v=1.0375,
            trcd_safe_ns=7.5,
            trp_safe_ns=7.5,
            tras_safe_ns=20.0,
            margin_scale=1.0,
            bank_var=0.13,
            row_var=0.17,
            row_shared_frac=0.5,
            bitline_var=0.10,
        ),
        "C": _voltron(
            "C",
            "DDR3L vendor C: onset ~1.25 V, saturating at 50 % of lines (true/anti cells by row block)",
            # Fitted by `python -m emubench.calibration` (hold-out C3 excluded); 0.5 is the ceiling.
            (
                (1.125, 0.4999),
                (1.150, 0.4233),
                (1.175, 0.2883),
                (1.200, 0.2555),
                (1.225, 0.04461),
                (1.250, 2.626e-5),
                (1.275, 1.82e-9),
            ),
            error_free_v=1.30,
            orientation="row-block",
            orientation_block_rows=1,
            dimm_sigma_v=0.0252,
            vdd_floor_v=1.0875,
            trcd_safe_ns=7.8,
            trp_safe_ns=7.8,
            tras_safe_ns=22.0,
            margin_scale=1.4,
            bank_var=0.18,
            row_var=0.30,
            row_shared_frac=0.8,
            bitline_var=0.05,
        ),
    }
    # EDEN's target DDR3 module (seed slides, coarse-grained table), calibrated (issue #19) so
    # that the BER a sweep measures with random data (flipped / tested bits, banks 0 and 3, rows
    # 0..63) meets the table's eight one-knob points: the curve points below are the output of
    # emubench.calibration.fit_eden_table over seeds 0..15 (docs/vendor-profiles.md, 2.4). One
    # module, so its DIMM-level structure (bank, subarray, chip, row) is small: a seed redraws
    # the module's cells, it does not pick a better or worse module.
    profiles["eden"] = VendorProfile(
        name="eden",
        description="EDEN's target DDR3 module: the slides' BER table of (delta VDD, delta tRCD) points",
        sources=("EDEN (Koppula et al., MICRO 2019), slides: coarse-grained characterization table",),
        vdd_nominal_v=1.35,
        vdd_points_v=(1.00, 1.05, 1.10, 1.25, 1.30),
        vdd_log10_p=tuple(math.log10(p) for p in (0.1386, 0.0997, 0.0388, 0.01715, 1e-6)),
        vdd_error_free_v=1.32,
        dimm_sigma_v=0.0,
        vdd_floor_v=0.95,
        latency_ref_ns=13.75,
        trcd_safe_ns=13.75,
        trp_safe_ns=12.75,
        tras_safe_ns=25.0,
        timing_v_coeff_ns_per_v=1.0,
        # The tRCD onset is the datasheet value and the margin curve is 0 down to -0.25 ns, so the
        # datasheet's 85 C guarantee bounds the temperature coefficient to 0.028 %/C; 0.025 %/C.
        latency_temp_coeff_per_c=0.00025,
        dimm_sigma_ns=0.0,
        chip_sigma_ns=0.0,
        bank_var=0.003,
        row_var=0.05,
        row_shared_frac=0.5,
        bitline_var=0.10,
        chip_var=0.003,
        subarray_var=0.003,
        rcd_anti_bias=0.3,
        tck_ns=0.25,  # the slides' -1.0, -4.5 ... ns steps need a 0.25 ns command grid
        margin_curve=LogCurve(
            x=(-10.0, -6.0, -4.5, -2.0, -1.0, -0.5),
            log10_p=tuple(math.log10(p) for p in (0.2, 0.1273, 0.0764, 0.0465, 0.02347, 1e-4)),
            zero_at=-0.25,
        ),
    )
    # A fault-free DIMM: the link and data path without physics.
    profiles["ideal"] = VendorProfile(
        name="ideal",
        description="A fault-free DIMM (no errors at any setting)",
        sources=(),
        vdd_nominal_v=1.35,
        vdd_points_v=(0.0, 0.1),
        vdd_log10_p=(-300.0, -300.0),
        vdd_error_free_v=0.0,
        dimm_sigma_v=0.0,
        vdd_floor_v=0.0,
        latency_ref_ns=None,
        trcd_safe_ns=0.0,
        trp_safe_ns=0.0,
        tras_safe_ns=0.0,
        timing_v_coeff_ns_per_v=0.0,
        dimm_sigma_ns=0.0,
        chip_sigma_ns=0.0,
        bank_var=0.0,
        row_var=0.0,
        row_shared_frac=0.0,
        bitline_var=0.0,
        chip_var=0.0,
        subarray_var=0.0,
        distance_var=0.0,
        coupling_per_aggressor=0.0,
        retention_log10_s=math.inf,
        margin_curve=LogCurve(x=(-2.0, -1.0), log10_p=(-300.0, -300.0), zero_at=-1e9),
    )
    return profiles


PROFILES: dict[str, VendorProfile] = _build_profiles()


def get_profile(name: str) -> VendorProfile:
    """Look a profile up by name (case-insensitive for the vendor letters)."""
    key = name if name in PROFILES else name.upper() if name.upper() in PROFILES else name.lower()
    try:
        return PROFILES[key]
    except KeyError:
        raise ProfileError(f"unknown DIMM profile {name!r}; known: {', '.join(PROFILES)}") from None

"""Vendor profiles of the emulated DIMM: how often and where its cells fail.

A profile gives, for each failure mechanism, the *marginal* probability that a
cell fails (averaged over the whole DIMM population of that vendor), and how
that probability is spread over banks, rows (wordlines), bitlines and cells.

- Voltage: the probability as a function of the effective supply voltage,
  log-linear between calibration points, exactly zero at or above
  ``vdd_error_free_v``.  Points of the Voltron-calibrated profiles are given as
  the published median fraction of 64-byte lines with errors and converted to
  cell probabilities by :func:`cell_p_for_line_fraction`, which accounts for
  the clustering the row and bank components cause.
- Timing: for tRCD, tRP and tRAS, the probability as a function of the
  *margin* ``t_eff - t_safe`` (ns), where ``t_safe`` rises as VDD drops below
  nominal and as temperature rises; zero for non-negative margins.
- Temperature shifts the effective voltage by ``temp_coeff_v_per_c`` per degree
  above ``temp_ref_c`` and the safe timings by ``timing_temp_coeff_ns_per_c``.
  At or above ``vdd_error_free_v`` (and at datasheet timings) a DIMM is error-free
  at any operating temperature, as its specification promises.

Sources and fit quality are documented in ``docs/vendor-profiles.md``; the
figures come from ``data/voltron-faulty-cachelines.csv`` (Chang et al.,
SIGMETRICS 2017), AL-DRAM (Lee et al., HPCA 2015) and EDEN (Koppula et al.,
MICRO 2019).
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


@dataclass(frozen=True)
class VendorProfile:
    """Failure behaviour of one kind of DIMM (see the module docstring).

    Attributes (units in the names; ``*_var`` are shares of the latent variance)
    ----------
    vdd_points_v, vdd_log10_p : voltage calibration points (cell probabilities)
    vdd_error_free_v : no voltage errors at or above this effective VDD
    dimm_sigma_v : DIMM-to-DIMM spread of the voltage at which errors begin
    bank_var, row_var, bitline_var : shares of latent variance per component;
        the cell's own share is the rest
    row_shared_frac : part of the row component that is the same in every bank
        (row stripes at the same indices across banks)
    orientation : ``"bitline"`` (true/anti cells alternate by bitline) or
        ``"row-block"`` (by blocks of ``orientation_block_rows`` rows)
    rcd_anti_bias : under reduced tRCD anti cells (0->1) fail ``1 + bias`` times,
        true cells (1->0) ``1 - bias`` times the marginal rate
    read_noise : read-to-read jitter of a cell's threshold (relative, 1 sigma)
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
    orientation: str = "bitline"
    orientation_block_rows: int = 512
    timing_v_coeff_ns_per_v: float = 10.0
    timing_temp_coeff_ns_per_c: float = 0.02
    temp_coeff_v_per_c: float = 0.0005
    temp_ref_c: float = 20.0
    rcd_anti_bias: float = 0.3
    read_noise: float = 0.05
    tck_ns: float = ML605_TCK_NS
    margin_curve: LogCurve = field(default=_DEFAULT_MARGIN)
    published_line_fraction: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.bank_var + self.row_var + self.bitline_var >= 0.95:
            raise ValueError(f"profile {self.name}: component variances leave no cell-level share")
        if self.orientation not in ("bitline", "row-block"):
            raise ValueError(f"profile {self.name}: orientation must be 'bitline' or 'row-block'")

    @functools.cached_property
    def vdd_curve(self) -> LogCurve:
        """Marginal cell failure probability vs effective VDD."""
        return LogCurve(self.vdd_points_v, self.vdd_log10_p, zero_at=self.vdd_error_free_v)

    @property
    def cell_var(self) -> float:
        """Share of latent variance that is the cell's own."""
        return 1.0 - self.bank_var - self.row_var - self.bitline_var

    def p_voltage(self, vdd_eff_v: float) -> float:
        """Marginal cell failure probability from voltage alone."""
        return self.vdd_curve(vdd_eff_v)

    def safe_ns(self, which: str, vdd_v: float, temp_c: float) -> float:
        """Shortest reliable tRCD/tRP/tRAS (``which``) at this VDD and temperature."""
        base = {"trcd": self.trcd_safe_ns, "trp": self.trp_safe_ns, "tras": self.tras_safe_ns}[which]
        return (
            base
            + self.timing_v_coeff_ns_per_v * max(0.0, self.vdd_nominal_v - vdd_v)
            + self.timing_temp_coeff_ns_per_c * (temp_c - self.temp_ref_c)
        )

    def p_timing(self, which: str, t_ns: float, vdd_v: float, temp_c: float) -> float:
        """Marginal cell failure probability from one timing parameter."""
        return self.margin_curve(t_ns - self.safe_ns(which, vdd_v, temp_c))


def _from_lines(
    points: tuple[tuple[float, float], ...], shared_var: float, n_susceptible: int, scale: float = 1.0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Turn (vdd_v, median line fraction) points into (vdd_v, log10 cell p) points."""
    xs, ys = [], []
    for vdd, frac in sorted(points):
        target = min(frac * scale, 0.999)
        xs.append(vdd)
        ys.append(math.log10(cell_p_for_line_fraction(target, shared_var, n_susceptible)))
    return tuple(xs), tuple(ys)


def _voltron(
    name: str,
    description: str,
    points: tuple[tuple[float, float], ...],
    error_free_v: float,
    orientation: str,
    **kw: float,
) -> VendorProfile:
    shared = kw["bank_var"] + kw["row_var"]
    if orientation == "row-block":
        # Under a solid pattern only the rows of one orientation can fail: half the lines
        # hold no susceptible cell, the other half 512.  The published fraction is over all lines.
        xs, ys = _from_lines(points, shared, 512, scale=2.0)
    else:
        xs, ys = _from_lines(points, shared, 256)
    return VendorProfile(
        name=name,
        description=description,
        sources=(
            "Voltron (Chang et al., SIGMETRICS 2017): data/voltron-faulty-cachelines.csv, medians per VDD",
            "AL-DRAM (Lee et al., HPCA 2015): timing margins of 17-55 % at 55 C",
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
            ((1.075, 0.6), (1.100, 0.0895), (1.1125, 1.0e-4), (1.125, 1.0e-8)),
            error_free_v=1.15,
            orientation="bitline",
            dimm_sigma_v=0.012,
            trcd_safe_ns=7.0,
            trp_safe_ns=7.0,
            tras_safe_ns=20.0,
            bank_var=0.25,
            row_var=0.25,
            row_shared_frac=0.6,
            bitline_var=0.05,
        ),
        "B": _voltron(
            "B",
            "DDR3L vendor B: onset 1.075-1.125 V with tiny rates growing ~100x per 25 mV",
            ((1.000, 0.6), (1.025, 0.11), (1.050, 2.72e-4), (1.075, 2.98e-6), (1.100, 1.0e-8), (1.125, 1.0e-10)),
            error_free_v=1.15,
            orientation="bitline",
            dimm_sigma_v=0.010,
            trcd_safe_ns=7.5,
            trp_safe_ns=7.5,
            tras_safe_ns=20.0,
            bank_var=0.15,
            row_var=0.20,
            row_shared_frac=0.5,
            bitline_var=0.10,
        ),
        "C": _voltron(
            "C",
            "DDR3L vendor C: onset ~1.25 V, saturating at 50 % of lines (true/anti cells by row block)",
            (
                (1.100, 0.4999),
                (1.125, 0.492),
                (1.150, 0.411),
                (1.175, 0.264),
                (1.200, 0.159),
                (1.250, 8.4e-5),
                (1.275, 1.0e-7),
            ),
            error_free_v=1.30,
            orientation="row-block",
            orientation_block_rows=1,
            dimm_sigma_v=0.015,
            trcd_safe_ns=8.0,
            trp_safe_ns=8.0,
            tras_safe_ns=22.0,
            bank_var=0.20,
            row_var=0.35,
            row_shared_frac=0.8,
            bitline_var=0.05,
        ),
    }
    # EDEN's target DDR3 module (seed slides, coarse-grained table): bit error rates with
    # random data, where half the cells hold their charged value, so cell p = 2 x BER.
    profiles["eden"] = VendorProfile(
        name="eden",
        description="EDEN's target DDR3 module: the slides' BER table of (delta VDD, delta tRCD) points",
        sources=("EDEN (Koppula et al., MICRO 2019), slides: coarse-grained characterization table",),
        vdd_nominal_v=1.35,
        vdd_points_v=(1.00, 1.05, 1.10, 1.25, 1.30),
        vdd_log10_p=tuple(math.log10(p) for p in (0.045, 0.03, 0.02, 0.01, 1e-6)),
        vdd_error_free_v=1.32,
        dimm_sigma_v=0.0,
        trcd_safe_ns=12.75,
        trp_safe_ns=12.75,
        tras_safe_ns=25.0,
        timing_v_coeff_ns_per_v=4.0,
        timing_temp_coeff_ns_per_c=0.01,
        bank_var=0.10,
        row_var=0.20,
        row_shared_frac=0.5,
        bitline_var=0.10,
        rcd_anti_bias=0.3,
        tck_ns=0.25,  # the slides' -1.0, -4.5 ... ns steps need a 0.25 ns command grid
        margin_curve=LogCurve(
            x=(-10.0, -6.4, -5.7, -5.2, -4.7, -2.0, -1.0, -0.5),
            log10_p=tuple(math.log10(p) for p in (0.2, 0.058, 0.052, 0.041, 0.031, 0.01, 1e-5, 1e-7)),
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
        trcd_safe_ns=0.0,
        trp_safe_ns=0.0,
        tras_safe_ns=0.0,
        bank_var=0.0,
        row_var=0.0,
        row_shared_frac=0.0,
        bitline_var=0.0,
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

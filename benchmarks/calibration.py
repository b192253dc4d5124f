"""Calibration of the emulated vendor profiles against Voltron's per-DIMM data and the published figures.

Sections (each printed beside its source figure, ``/work/shared/reference/dram-calibration.md``
and ``data/voltron-faulty-cachelines.csv``):

1. **Population vs real** per vendor (A, B, C) and voltage of the CSV grid: the fraction of
   64-byte lines with errors at tRCD = tRP = 10 ns, 20 C, all-ones data, of ``--dimms``
   emulated DIMMs (seeds), *predicted* at full resolution by
   :meth:`emubench.physics.PhysicsDimm.expected_line_fraction`, against the real DIMMs:
   quantiles side by side, a two-sample Kolmogorov-Smirnov and a Mann-Whitney U test
   (values under the data's resolution 2^-25 censored to 0 on both sides), and the median
   |log10(emulated / real)|.  A few seeds are also *measured* through the bench
   (``emu://`` with pyvisa-py instruments) on a sample of rows, to show that the bench
   path reads what the prediction says, within the sampling error of the row sample.
2. **Hold-out**: the DIMMs :func:`emubench.calibration.default_holdout` leaves out of the
   fit, each against the emulated population's 5/50/95 % band, with its percentile in it.
3. **Minimum reliable tRCD = tRP** per VDD (1.35 .. 1.10 V) on a 0.25 ns grid.
4. **Temperature**: line fraction at a failing voltage, and the timing-mechanism onset, vs
   temperature (AL-DRAM's 17.3-54.8 % cut of 13.75 ns at 55 C).
5. **Retention**: the profile's retention curve as BER and errors per 2 GiB DIMM beside the
   notes' figures, and one measured point through the bench (4096 ms at 70 C).
6. **Data patterns**: bit errors of 0x00, 0xFF, 0xAA, 0x55 and random data, measured.
7. **The eden table** (issue #19): the ``eden`` profile's BER (flipped / tested bits, random
   data, banks 0 and 3, rows 0..63, through the emulated tester) at the EDEN slides' eight
   one-knob points (VDD -0.10 .. -0.35 V, tRCD -1.0 .. -6.0 ns) over ``--eden-seeds`` DIMMs,
   beside the table, with how many seeds fall within 1.5x; nominal settings; BER per pattern.

Also writes a PNG of a bank x row error map of each vendor at a failing voltage (row
stripes), unless ``--quick``.

    python benchmarks/calibration.py [--dimms 20] [--rows 96] [--png out/calibration.png] [--quick] [--eden-only]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections import defaultdict
from typing import Sequence

import numpy as np
from scipy.stats import ks_2samp, mannwhitneyu, poisson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emubench.calibration import RESOLUTION, default_holdout, fit_all, load_voltron  # noqa: E402
from emubench.physics import PhysicsDimm  # noqa: E402
from emubench.profiles import get_profile  # noqa: E402
from softmc_host.bench import Bench  # noqa: E402
from softmc_host.files import atomic_write  # noqa: E402
from softmc_host.timing import AccessTiming  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSV_PATH = os.path.join(ROOT, "data", "voltron-faulty-cachelines.csv")
VENDORS = ("A", "B", "C")
VOLTRON_LATENCY_NS = 10.0
VOLTRON_TEMP_C = 20.0
VOLTRON_TIMING = AccessTiming(trcd_ns=VOLTRON_LATENCY_NS, trp_ns=VOLTRON_LATENCY_NS, tras_ns=35.0)
NOMINAL_TRCD_NS = 13.75  # DDR3-1600 datasheet tRCD = tRP
MAP_SETTINGS = {"A": 1.10, "B": 1.025, "C": 1.225}
#: A voltage per vendor where lines fail often but not all (temperature section).
FAILING_V = {"A": 1.10, "B": 1.05, "C": 1.225}
#: A voltage per vendor where a few dozen rows show enough bit errors to compare patterns.
PATTERN_V = {"A": 1.10, "B": 1.025, "C": 1.20}
LATENCY_VDD_V = tuple(round(1.35 - 0.025 * i, 3) for i in range(11))  # 1.35 .. 1.10
LATENCY_STEP_NS = 0.25
LATENCY_MAX_NS = 40.0
TEMPS_C = (20.0, 40.0, 55.0, 70.0, 85.0)
RETENTION_MS = (64, 128, 256, 512, 1024, 2048, 4096)
BITS_PER_DIMM = 2**34  # a 2 GiB DIMM
PATTERNS = ("0x00", "0xFF", "0xAA", "0x55", "random")


# Data ------------------------------------------------------------------------------------


def real_table(csv_path: str = CSV_PATH) -> dict[tuple[str, float], dict[str, float]]:
    """Voltron's line fractions: ``(vendor, vdd_v) -> {dimm: fraction}`` (missing rows stay missing)."""
    table: dict[tuple[str, float], dict[str, float]] = defaultdict(dict)
    for rec in load_voltron(csv_path):
        table[(rec.vendor, round(rec.vdd_v, 3))][rec.dimm] = rec.line_fraction
    return dict(table)


def grid_v(table: dict[tuple[str, float], dict[str, float]], vendor: str) -> list[float]:
    """The vendor's voltages in the CSV, descending."""
    return sorted({v for (ven, v) in table if ven == vendor}, reverse=True)


def censor(values: np.ndarray | Sequence[float]) -> np.ndarray:
    """Values under the data's resolution (one line in 2^25) set to 0."""
    arr = np.asarray(values, dtype=float)
    return np.where(arr < RESOLUTION, 0.0, arr)


def fmt(x: float) -> str:
    """A fraction in a short form: ``0`` or ``1.2e-03``."""
    return "0" if x == 0 else f"{x:.1e}"


# 1. Population ----------------------------------------------------------------------------


def predicted_population(
    vendor: str, seeds: Sequence[int], vdds_v: Sequence[float], temp_c: float = VOLTRON_TEMP_C,
    latency_ns: float = VOLTRON_LATENCY_NS,
) -> np.ndarray:
    """Predicted line fraction (full resolution, all-ones data) per seed and voltage: shape (seeds, vdds)."""
    profile = get_profile(vendor)
    out = np.empty((len(seeds), len(vdds_v)))
    for i, seed in enumerate(seeds):
        dimm = PhysicsDimm(profile, seed=seed)
        for j, vdd in enumerate(vdds_v):
            out[i, j] = dimm.expected_line_fraction(vdd, latency_ns, temp_c)
    return out


def sample_rows(n_rows: int, seed: int = 2017) -> list[tuple[int, int]]:
    """Pairs of neighbouring rows over all banks, so both cell orientations are equally represented."""
    rng = np.random.default_rng(seed)
    starts = zip(rng.integers(0, 8, max(1, n_rows // 2)), rng.integers(0, 32767, max(1, n_rows // 2)) & ~1)
    return sorted({(int(b), int(r) + k) for b, r in starts for k in (0, 1)})


def measure_dimm(vendor: str, seed: int, rows: list[tuple[int, int]], vdds_v: Sequence[float]) -> np.ndarray:
    """Measured line fractions through the bench, per row and voltage: shape (vdds, rows).

    Writes all-ones, sets each supply voltage and reads at tRCD = tRP = 10 ns, 20 C.
    """
    out = np.empty((len(vdds_v), len(rows)))
    with Bench.open(f"emu://{vendor}?seed={seed}&temp_c={VOLTRON_TEMP_C:g}") as bench:
        bench.tester.write_rows(rows, 0xFF)
        for j, vdd in enumerate(vdds_v):
            bench.set_vdd(vdd)
            data = bench.tester.read_rows(rows, VOLTRON_TIMING)
            out[j] = (data != 0xFF).reshape(len(rows), -1, 64).any(axis=2).mean(axis=1)
    return out


def two_sample(real: np.ndarray, emu: np.ndarray) -> tuple[float, float, float]:
    """(KS statistic, KS p, Mann-Whitney p) of censored samples; NaN p-values when both are one constant."""
    if np.unique(np.concatenate([real, emu])).size == 1:
        return 0.0, math.nan, math.nan
    ks = ks_2samp(real, emu)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mw = mannwhitneyu(real, emu, alternative="two-sided")
    return float(ks.statistic), float(ks.pvalue), float(mw.pvalue)


def population_section(
    table: dict[tuple[str, float], dict[str, float]], predicted: dict[str, np.ndarray], n_seeds: int
) -> dict[str, list[float]]:
    """Print quantiles and tests per vendor and voltage; return the |log10(emu/real)| medians per vendor."""
    print("\n== 1. population vs real: line fraction at tRCD = tRP = 10 ns, 20 C, all-ones ==")
    print(f"emulated: {n_seeds} DIMMs (seeds 0..{n_seeds - 1}), predicted at full resolution; real: every DIMM "
          f"of the CSV (hold-out included) that ran at the voltage.\nBoth sides censored: a fraction under "
          f"2^-25 = {RESOLUTION:.1e} (one line) counts as 0. Quantiles min/25/50/75/max.")
    log_errors: dict[str, list[float]] = defaultdict(list)
    pvals: list[tuple[str, float, float, float]] = []
    for vendor in VENDORS:
        vdds = grid_v(table, vendor)
        print(f"\nvendor {vendor}")
        print(f"{'VDD':>6} {'n':>3} | {'real quantiles':^44} | {'emulated quantiles':^44} | {'KS D':>5} {'KS p':>8} {'MWU p':>8}")
        for j, vdd in enumerate(vdds):
            real = censor(list(table[(vendor, vdd)].values()))
            emu = censor(predicted[vendor][:, j])
            rq = np.quantile(real, [0, 0.25, 0.5, 0.75, 1])
            eq = np.quantile(emu, [0, 0.25, 0.5, 0.75, 1])
            d, p_ks, p_mw = two_sample(real, emu)
            tests = f"{d:5.2f} {p_ks:8.2g} {p_mw:8.2g}" if not math.isnan(p_ks) else f"{'all 0 on both sides':>23}"
            print(f"{vdd:6.3f} {real.size:3d} | {' '.join(f'{fmt(q):>8}' for q in rq)} | "
                  f"{' '.join(f'{fmt(q):>8}' for q in eq)} | {tests}")
            if not math.isnan(p_ks):
                pvals.append((vendor, vdd, p_ks, p_mw))
            e, r = float(np.median(emu)), float(np.median(real))
            if e > 0 and r > 0:
                log_errors[vendor].append(abs(math.log10(e / r)))
            elif (e > 0) != (r > 0) and max(e, r) > 10 * RESOLUTION:
                log_errors[vendor].append(math.log10(max(e, r) / RESOLUTION))
    n = len(pvals)
    if n:
        bonf = 0.05 / n
        ks_rej = [f"{v}@{vdd:.3f}" for v, vdd, p, _ in pvals if p < 0.05]
        mw_rej = [f"{v}@{vdd:.3f}" for v, vdd, _, p in pvals if p < 0.05]
        print(f"\n{n} testable (vendor, VDD) points. KS p < 0.05 at {len(ks_rej)}: {', '.join(ks_rej) or '-'}; "
              f"MWU p < 0.05 at {len(mw_rej)}: {', '.join(mw_rej) or '-'}.")
        strict = [f"{v}@{vdd:.3f}" for v, vdd, pk, pm in pvals if min(pk, pm) < bonf]
        print(f"Below the Bonferroni level 0.05/{n} = {bonf:.1g}: {', '.join(strict) or 'none'}. "
              "(Censoring makes ties; the KS p-value is then conservative.)")
    print("\nmedian |log10(emulated median / real median)| over resolvable grid points:")
    for vendor, errs in log_errors.items():
        print(f"  vendor {vendor}: {float(np.median(errs)):.2f} decades over {len(errs)} points (max {max(errs):.2f})")
    return dict(log_errors)


def bench_check_section(
    table: dict[tuple[str, float], dict[str, float]], predicted: dict[str, np.ndarray], seeds: Sequence[int],
    rows: list[tuple[int, int]],
) -> tuple[int, int]:
    """Measured (bench) vs predicted line fraction for a few seeds; return (points agreeing, points)."""
    n_lines = len(rows) * 128
    print(f"\n-- 1b. measured through the bench (emu://, {len(rows)} rows x 128 lines = {n_lines} lines, "
          f"resolution {1 / n_lines:.1e}) vs predicted, seeds {', '.join(map(str, seeds))} --")
    print("agree: |measured - predicted| <= 3 se + 1 line, se the larger of the row-sample standard error "
          "of the measured rows and the binomial one of the prediction")
    agree = total = 0
    for vendor in VENDORS:
        vdds = grid_v(table, vendor)
        for seed in seeds:
            per_row = measure_dimm(vendor, seed, rows, vdds)
            cells = []
            for j, vdd in enumerate(vdds):
                meas = float(per_row[j].mean())
                pred = float(predicted[vendor][seed, j])
                se = max(float(per_row[j].std(ddof=1)) / math.sqrt(len(rows)), math.sqrt(pred * (1 - pred) / n_lines))
                ok = abs(meas - pred) <= 3 * se + 1 / n_lines
                agree += ok
                total += 1
                if pred > RESOLUTION or meas > 0:
                    cells.append(f"{vdd:.3f}: {fmt(meas)}/{fmt(pred)}{'' if ok else ' (!)'}")
            print(f"  {vendor} seed {seed} (measured/predicted, only nonzero shown): " + ("; ".join(cells) or "all 0"))
    print(f"  {agree} of {total} (vendor, seed, VDD) points agree")
    return agree, total


# 2. Hold-out ------------------------------------------------------------------------------


def percentile_in(value: float, population: np.ndarray) -> float:
    """Mid-rank percentile (0..100) of ``value`` in ``population`` (both already censored)."""
    below = float(np.sum(population < value))
    equal = float(np.sum(population == value))
    return 100.0 * (below + 0.5 * equal) / population.size


def holdout_section(
    table: dict[tuple[str, float], dict[str, float]], predicted: dict[str, np.ndarray]
) -> dict[str, list[float]]:
    """Print each held-out DIMM against the emulated 5/50/95 % band; return its percentiles per DIMM."""
    records = load_voltron(CSV_PATH)
    holdout = [d for v in VENDORS for d in default_holdout(r.dimm for r in records if r.vendor == v)]
    fits = fit_all(records)  # the same default hold-out, per vendor
    print(f"\n== 2. hold-out: DIMMs left out of the fit ({', '.join(holdout)}) vs the emulated population ==")
    print("band: 5/50/95 % of the emulated DIMMs' predicted fractions; pct: the real value's mid-rank "
          "percentile among them (censored at 2^-25; a 0 among zeros is 50)")
    result: dict[str, list[float]] = {}
    inside = points = 0
    for vendor in VENDORS:
        vdds = grid_v(table, vendor)
        fit_by_dimm = {h.dimm: h for h in fits[vendor].holdout}
        for dimm in (d for d in holdout if d in {r.dimm for r in records if r.vendor == vendor}):
            h = fit_by_dimm.get(dimm)
            note = (f" (shift model of emubench.calibration: shift {h.delta_v * 1000:+.1f} mV, percentile "
                    f"{h.percentile:.0f}, rms {h.rms_decades:.2f} dec, {h.coverage[0]}/{h.coverage[1]} in its band)"
                    if h else "")
            print(f"\n{dimm}{note}")
            print(f"{'VDD':>6} | {'real':>8} | {'emu 5%':>8} {'50%':>8} {'95%':>8} | {'pct':>5}")
            pcts = []
            for j, vdd in enumerate(vdds):
                if dimm not in table[(vendor, vdd)]:
                    continue
                real = float(censor([table[(vendor, vdd)][dimm]])[0])
                emu = censor(predicted[vendor][:, j])
                q05, q50, q95 = np.quantile(emu, [0.05, 0.5, 0.95])
                pct = percentile_in(real, emu)
                if real > 0 or q95 > 0:
                    pcts.append(pct)
                    points += 1
                    inside += q05 <= real <= q95
                print(f"{vdd:6.3f} | {fmt(real):>8} | {fmt(q05):>8} {fmt(q50):>8} {fmt(q95):>8} | {pct:5.0f}")
            result[dimm] = pcts
    print(f"\nheld-out points with a nonzero real value or band: {inside} of {points} inside the emulated 5-95 % band")
    return result


# 3. Minimum reliable latency --------------------------------------------------------------


def error_free(dimm: PhysicsDimm, vdd_v: float, t_ns: float, temp_c: float) -> bool:
    """Whether tRCD = tRP = ``t_ns`` has zero failure probability (voltage and timing mechanisms)."""
    if dimm.voltage_probability(vdd_v, t_ns, temp_c) > 0:
        return False
    return all(not np.any(dimm.timing_probability(which, t_ns, vdd_v, temp_c) > 0) for which in ("trcd", "trp"))


def min_reliable_ns(dimm: PhysicsDimm, vdd_v: float, temp_c: float = VOLTRON_TEMP_C) -> float | None:
    """Shortest tRCD = tRP on the 0.25 ns grid with zero failure probability (None: none up to 40 ns).

    Both probabilities fall as the latency grows, so the grid is bisected.
    """
    n = int(round(LATENCY_MAX_NS / LATENCY_STEP_NS))
    if not error_free(dimm, vdd_v, n * LATENCY_STEP_NS, temp_c):
        return None
    if error_free(dimm, vdd_v, LATENCY_STEP_NS, temp_c):
        return LATENCY_STEP_NS
    lo, hi = 1, n  # failing at lo, error-free at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if error_free(dimm, vdd_v, mid * LATENCY_STEP_NS, temp_c):
            hi = mid
        else:
            lo = mid
    return hi * LATENCY_STEP_NS


def spread(values: Sequence[float | None]) -> str:
    """Median and range of latencies, with the count of seeds that have none."""
    ok = [v for v in values if v is not None]
    none = len(values) - len(ok)
    if not ok:
        return f"{'none':>6} {'':>13}"
    text = f"{float(np.median(ok)):6.2f} {min(ok):6.2f}..{max(ok):<5.2f}"
    return text + (f" ({none} none)" if none else "")


def latency_section(seeds: Sequence[int]) -> dict[str, dict[float, list[float | None]]]:
    """Print the minimum reliable tRCD = tRP per VDD; return the per-seed values."""
    print("\n== 3. minimum reliable tRCD = tRP (ns, 0.25 ns grid, 20 C): median and range over "
          f"{len(seeds)} emulated DIMMs ==")
    print("source (Voltron): \"lower VDD raises the minimum reliable tRCD/tRP\"; below a DIMM's floor a longer "
          "latency does not help ('none' up to 40 ns). No per-VDD numbers published. The ML605 tester sets "
          "latencies in 2.5 ns cycles.")
    out: dict[str, dict[float, list[float | None]]] = {}
    dimms = {v: [PhysicsDimm(get_profile(v), seed=s) for s in seeds] for v in VENDORS}
    print(f"{'VDD':>6} | " + " | ".join(f"{'vendor ' + v:^26}" for v in VENDORS))
    for vdd in LATENCY_VDD_V:
        cells = []
        for vendor in VENDORS:
            vals = [min_reliable_ns(d, vdd) for d in dimms[vendor]]
            out.setdefault(vendor, {})[vdd] = vals
            cells.append(f"{spread(vals):<26}")
        print(f"{vdd:6.3f} | " + " | ".join(cells))
    return out


# 4. Temperature ---------------------------------------------------------------------------


def temperature_section(seeds: Sequence[int]) -> None:
    """Print line fraction, timing onset and minimum reliable latency vs temperature."""
    print(f"\n== 4. temperature: predicted line fraction at 10 ns (median, 5..95 % of {len(seeds)} DIMMs) ==")
    print(f"{'vendor':>6} {'VDD':>6} | " + " | ".join(f"{f'{t:.0f} C':<24}" for t in TEMPS_C))
    dimms = {v: [PhysicsDimm(get_profile(v), seed=s) for s in seeds] for v in VENDORS}
    for vendor in VENDORS:
        vdd = FAILING_V[vendor]
        cells = []
        for temp in TEMPS_C:
            frac = [d.expected_line_fraction(vdd, VOLTRON_LATENCY_NS, temp) for d in dimms[vendor]]
            q05, q50, q95 = np.quantile(frac, [0.05, 0.5, 0.95])
            cells.append(f"{fmt(q50):>7} {fmt(q05)}..{fmt(q95)}")
        print(f"{vendor:>6} {vdd:6.3f} | " + " | ".join(f"{c:<24}" for c in cells))
    print("source: EDEN 4.1: errors depend on temperature, a profile holds at its measured temperature "
          "(no published curve for these DIMMs).")
    print("\ntiming-margin onset at 1.35 V, typical DIMM (profile.safe_ns('trcd')), and its cut of 13.75 ns; "
          f"min reliable tRCD = tRP at 1.35 V over {len(seeds)} DIMMs (both mechanisms) as a cut of 13.75 ns")
    print("source: AL-DRAM (115 modules, 55 C): tRCD/tRP can be cut by 17.3-54.8 % with no errors; "
          "margins grow at lower temperature")
    print(f"{'vendor':>6} {'T (C)':>6} | {'safe_ns':>7} {'cut':>6} | {'min reliable (ns)':>24} | {'cut range':>13}")
    for vendor in VENDORS:
        profile = get_profile(vendor)
        for temp in TEMPS_C:
            safe = profile.safe_ns("trcd", 1.35, temp)
            vals = [min_reliable_ns(d, 1.35, temp) for d in dimms[vendor]]
            ok = [v for v in vals if v is not None]
            cuts = (f"{100 * (1 - max(ok) / NOMINAL_TRCD_NS):5.1f}..{100 * (1 - min(ok) / NOMINAL_TRCD_NS):4.1f} %"
                    if ok else "-")
            print(f"{vendor:>6} {temp:6.0f} | {safe:7.2f} {100 * (1 - safe / NOMINAL_TRCD_NS):5.1f}% | "
                  f"{spread(vals):>24} | {cuts:>13}")


# 5. Retention -----------------------------------------------------------------------------


def measure_retention(vendor: str = "B", seed: int = 1, temp_c: float = 70.0, hold_ms: float = 4096.0,
                      n_rows: int = 64) -> tuple[int, int, float]:
    """Bit flips after ``hold_ms`` without refresh, all-ones data: (flips, bits, predicted BER of this DIMM)."""
    rows = [(b, r) for b in range(8) for r in range(max(1, n_rows // 8))]
    with Bench.open(f"emu://{vendor}?seed={seed}&temp_c={temp_c:g}") as bench:
        bench.tester.set_refresh_interval(None)
        bench.tester.write_rows(rows, 0xFF)
        bench.tester.hold(hold_ms * 1e6)
        data = bench.tester.read_rows(rows)
    flips = int(np.unpackbits(data ^ 0xFF).sum())
    dimm = PhysicsDimm(get_profile(vendor), seed=seed)
    ber = get_profile(vendor).p_retention(hold_ms / 1000, temp_c, dimm.retention_offset_decades) / 2
    return flips, int(data.size * 8), ber


def retention_section(measure: bool = True) -> None:
    """Print the retention curve (typical DIMM) and one measured point."""
    print("\n== 5. retention without refresh: BER = cell p / 2 (half the cells charged), errors per 2 GiB DIMM ==")
    print("source (Voltron, worst vendor): none up to 256 ms; first errors at 512 ms (70 C) and 1024 ms (20 C); "
          "about 3e-7 BER at 2048 ms, 70 C")
    for vendor in VENDORS:
        profile = get_profile(vendor)
        print(f"vendor {vendor}: median retention {10 ** profile.retention_log10_s:.3g} s at 20 C, "
              f"sigma {profile.retention_sigma_decades:.3f} decades, {profile.retention_decades_per_c:.4f} decades/C")
    profile = get_profile("B")  # the three vendors share the retention fit
    print(f"{'interval (ms)':>13} | {'BER 20 C':>9} {'errors/DIMM':>11} | {'BER 70 C':>9} {'errors/DIMM':>11}")
    for ms in RETENTION_MS:
        cells = []
        for temp in (20.0, 70.0):
            ber = profile.p_retention(ms / 1000, temp, 0.0) / 2
            cells.append(f"{ber:9.2e} {ber * BITS_PER_DIMM:11.3g}")
        print(f"{ms:>13} | {cells[0]} | {cells[1]}")
    if measure:
        start = time.perf_counter()
        flips, bits, ber = measure_retention()
        lo, hi = _poisson_interval(ber * bits)
        print(f"measured (emu://B?seed=1&temp_c=70, refresh off, 4096 ms hold, all-ones): {flips} flips in {bits} "
              f"bits, BER {flips / bits:.2e}; this DIMM's predicted BER {ber:.2e} ({ber * bits:.1f} flips expected, "
              f"95 % Poisson range {lo}..{hi}); {time.perf_counter() - start:.1f} s")


def _poisson_interval(mean: float) -> tuple[int, int]:
    """Central 95 % range of a Poisson count with this mean."""
    return int(poisson.ppf(0.025, mean)), int(poisson.ppf(0.975, mean))


# 6. Data patterns -------------------------------------------------------------------------


def measure_patterns(vendor: str, vdd_v: float, rows: list[tuple[int, int]], seed: int = 0) -> dict[str, int]:
    """Bit errors per data pattern at ``vdd_v`` and tRCD = tRP = 10 ns, 20 C, through the bench."""
    rng = np.random.default_rng(7)
    random_data = rng.integers(0, 256, (len(rows), 8192), dtype=np.uint8)
    out: dict[str, int] = {}
    with Bench.open(f"emu://{vendor}?seed={seed}&temp_c={VOLTRON_TEMP_C:g}") as bench:
        for name in PATTERNS:
            data = random_data if name == "random" else np.full((len(rows), 8192), int(name, 16), np.uint8)
            bench.set_vdd(bench.nominal_vdd_v)
            bench.tester.write_rows(rows, list(data))
            bench.set_vdd(vdd_v)
            back = bench.tester.read_rows(rows, VOLTRON_TIMING)
            out[name] = int(np.unpackbits(back ^ data).sum())
    return out


def pattern_section(rows: list[tuple[int, int]]) -> None:
    """Print bit errors per pattern relative to the solid-pattern mean, one DIMM per vendor."""
    print(f"\n== 6. data patterns (seed 0, {len(rows)} rows, 10 ns, 20 C): bit errors, and relative to the "
          "mean of 0x00 and 0xFF ==")
    print("source: EDEN: test 0x00, 0xFF, 0xAA/0x55, checkerboards, random. The coupling coefficient "
          "(coupling_per_aggressor, latent sigma per opposite adjacent bit) is an assumption: no source gives a number.")
    print(f"{'vendor':>6} {'VDD':>6} {'coupling':>8} | " + " ".join(f"{p:>15}" for p in PATTERNS))
    for vendor in VENDORS:
        counts = measure_patterns(vendor, PATTERN_V[vendor], rows)
        solid = 0.5 * (counts["0x00"] + counts["0xFF"])
        cells = [f"{counts[p]:>8} ({counts[p] / solid:4.2f})" if solid else f"{counts[p]:>15}" for p in PATTERNS]
        print(f"{vendor:>6} {PATTERN_V[vendor]:6.3f} {get_profile(vendor).coupling_per_aggressor:8.2f} | " + " ".join(cells))


# The eden table (issue #19) ------------------------------------------------------------------


def eden_point(seed: int, vdd_v: float, trcd_ns: float, data: np.ndarray, rows: list[tuple[int, int]]) -> float:
    """BER (flipped / tested bits) of ``emu://eden?seed=N`` rows written with ``data`` and read at one setting."""
    timing = AccessTiming(trcd_ns=trcd_ns, trp_ns=NOMINAL_TRCD_NS, tras_ns=35.0)
    with Bench.open(f"emu://eden?seed={seed}") as bench:
        bench.tester.write_rows(rows, list(data))
        bench.set_vdd(vdd_v)
        back = bench.tester.read_rows(rows, timing, per_burst_activate=trcd_ns < NOMINAL_TRCD_NS)  # as the sweep
        bench.set_vdd(bench.nominal_vdd_v)
    return float(np.unpackbits(back ^ data).sum()) / data.size / 8


def eden_section(seeds: Sequence[int], n_rows: int) -> None:
    """The eden profile's BER at the slides' eight one-knob points, beside the table."""
    from emubench.calibration import EDEN_TABLE, table_setting, within

    rows = [(b, r) for b in (0, 3) for r in range(n_rows)]
    print(f"\n== 7. eden vs the EDEN slides' table (emu://eden, seeds {seeds[0]}..{seeds[-1]}, banks 0,3, rows "
          f"0:{n_rows}, random data, BER = flipped / tested bits) ==")
    print("source: EDEN slides' coarse table (dram-calibration.md), one knob at a time, the other at nominal "
          "(1.35 V, 13.75 ns). pass: within 1.5x of the table's value or range.")
    print(f"{'setting':>12} {'table':>10} {'mean':>8} {'min':>8} {'max':>8}  seeds within 1.5x")
    rng = np.random.default_rng(11)
    data = rng.integers(0, 256, (len(rows), 8192), dtype=np.uint8)
    for knob, delta, lo, hi in EDEN_TABLE:
        vdd, trcd = table_setting(knob, delta)
        bers = [eden_point(s, vdd, trcd, data, rows) for s in seeds]
        ok = sum(within(b, lo, hi) for b in bers)
        table = f"{100 * lo:.1f} %" if lo == hi else f"{100 * lo:.1f}-{100 * hi:.1f} %"
        label = f"VDD {delta:+.2f} V" if knob == "vdd" else f"tRCD {delta:+.1f} ns"
        print(f"{label:>12} {table:>10} {100 * np.mean(bers):7.2f}% {100 * min(bers):7.2f}% {100 * max(bers):7.2f}%  "
              f"{ok}/{len(bers)}{'' if within(float(np.mean(bers)), lo, hi) else '  (mean MISSES)'}")
    nominal = [eden_point(s, 1.35, NOMINAL_TRCD_NS, data, rows) for s in seeds[:2]]
    print(f"nominal (1.35 V, 13.75 ns): BER {max(nominal):.1e} on seeds {seeds[0]}, {seeds[1 % len(seeds)]}")
    print("patterns at VDD -0.25 V and tRCD -4.5 ns (seed 0): BER per pattern")
    for knob, delta in (("vdd", -0.25), ("trcd", -4.5)):
        vdd, trcd = table_setting(knob, delta)
        cells = []
        for name in PATTERNS:
            d = data if name == "random" else np.full_like(data, int(name, 16))
            cells.append(f"{name} {100 * eden_point(seeds[0], vdd, trcd, d, rows):.2f}%")
        print(f"  {knob} {delta:+g}: " + ", ".join(cells))


# PNG --------------------------------------------------------------------------------------


def error_map(vendor: str, vdd: float, rows_step: int) -> np.ndarray:
    """Bit errors per (bank, row) with random data at ``vdd``."""
    rows = [(b, r) for b in range(8) for r in range(0, 32768, rows_step)]
    data = np.random.default_rng(1).integers(0, 256, 8192, dtype=np.uint8)
    with Bench.open(f"emu://{vendor}?seed=0&temp_c=20") as bench:
        bench.tester.write_rows(rows, data)
        bench.set_vdd(vdd)
        back = bench.tester.read_rows(rows, VOLTRON_TIMING)
    return np.unpackbits(back ^ data, axis=1).sum(axis=1).reshape(8, -1)


def write_png(path: str, rows_step: int) -> bool:
    """Write the bank x row error maps of the three vendors; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return False
    fig, axes = plt.subplots(3, 1, figsize=(11, 7), constrained_layout=True)
    for ax, (vendor, vdd) in zip(axes, MAP_SETTINGS.items()):
        errors = error_map(vendor, vdd, rows_step)
        image = ax.imshow(np.log10(errors + 1), aspect="auto", interpolation="nearest", cmap="magma",
                          extent=(0, 32768, 7.5, -0.5))
        ax.set_title(f"vendor {vendor} at {vdd} V, random data: log10(1 + bit errors) per row")
        ax.set_ylabel("bank")
        fig.colorbar(image, ax=ax)
    axes[-1].set_xlabel("row")
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))  # creates the directory
    plt.close(fig)
    return True


# Command ----------------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dimms", type=_positive, default=None,
                        help="emulated DIMMs (seeds) per vendor (default 20; 6 with --quick)")
    parser.add_argument("--rows", type=_positive, default=None,
                        help="rows sampled per DIMM on the bench, over all banks (default 96; 32 with --quick)")
    parser.add_argument("--measured-seeds", type=_positive, default=None,
                        help="seeds also measured through the bench (default 3; 1 with --quick)")
    parser.add_argument("--png", default="out/calibration.png", help="error map PNG (default out/calibration.png)")
    parser.add_argument("--map-row-step", type=_positive, default=128, help="row spacing of the error map (default 128)")
    parser.add_argument("--eden-seeds", type=_positive, default=10,
                        help="emulated eden DIMMs (seeds) measured against the slides' table (default 10)")
    parser.add_argument("--eden-only", action="store_true", help="run section 7 (the eden table) alone")
    parser.add_argument("--quick", action="store_true",
                        help="fewer seeds and rows, no retention measurement, no PNG (a smoke run)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run every section and print the results; return 0."""
    args = _parser().parse_args(argv)
    n_dimms = args.dimms or (6 if args.quick else 20)
    n_rows = args.rows or (32 if args.quick else 96)
    n_measured = min(n_dimms, args.measured_seeds or (1 if args.quick else 3))
    start = time.perf_counter()
    table = real_table()
    seeds = list(range(n_dimms))
    predicted = {v: predicted_population(v, seeds, grid_v(table, v)) for v in VENDORS}
    rows = sample_rows(n_rows)
    sections = (
        lambda: population_section(table, predicted, n_dimms),
        lambda: bench_check_section(table, predicted, seeds[:n_measured], rows),
        lambda: holdout_section(table, predicted),
        lambda: latency_section(seeds),
        lambda: temperature_section(seeds),
        lambda: retention_section(measure=not args.quick),
        lambda: pattern_section(rows),
        lambda: eden_section(list(range(2 if args.quick else args.eden_seeds)), 16 if args.quick else 64),
    )
    if args.eden_only:
        sections = sections[-1:]
    for section in sections:
        section_start = time.perf_counter()
        section()
        print(f"[{time.perf_counter() - section_start:.1f} s]")
    if not args.quick and not args.eden_only:
        if write_png(args.png, args.map_row_step):
            print(f"\nerror maps written to {args.png}")
        else:  # pragma: no cover
            print("\nmatplotlib missing: no PNG written")
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Calibration of the emulated vendor profiles against Voltron's published DIMM data.

For each vendor profile (A, B, C) and several emulated DIMMs (seeds), sets the
supply through the bench (pyvisa-py), reads rows with all-ones data at
tRCD = tRP = 10 ns (Voltron's test conditions) across the Voltron voltage grid,
and prints the fraction of 64-byte lines with at least one error -- median and
range over the emulated DIMMs -- beside the published median and range over the
real DIMMs of ``data/voltron-faulty-cachelines.csv``.  Also writes a PNG of a
bank x row error map of each vendor at a failing voltage (row stripes).

    python benchmarks/calibration.py [--dimms 5] [--rows 96] [--png out/calibration.png]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from softmc_host.bench import Bench  # noqa: E402
from softmc_host.files import atomic_write  # noqa: E402
from softmc_host.timing import AccessTiming  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID_V = [round(1.35 - 0.025 * i, 3) for i in range(14)]  # 1.35 .. 1.025
VOLTRON_TIMING = AccessTiming(trcd_ns=10.0, trp_ns=10.0, tras_ns=35.0)
MAP_SETTINGS = {"A": 1.10, "B": 1.025, "C": 1.225}


def published() -> dict[tuple[str, float], list[float]]:
    """Voltron's fractions of lines with errors per (vendor, vdd), over DIMMs."""
    table: dict[tuple[str, float], list[float]] = defaultdict(list)
    with open(os.path.join(ROOT, "data", "voltron-faulty-cachelines.csv"), newline="") as fh:
        for row in csv.DictReader(fh):
            table[(row["vendor"], round(float(row["vdd"]), 3))].append(float(row["error_cacheline_percent"]) / 100)
    return table


def measure_dimm(vendor: str, seed: int, rows: list[tuple[int, int]]) -> dict[float, float]:
    """Fraction of lines with errors at each grid voltage, for one emulated DIMM."""
    result = {}
    with Bench.open(f"emu://{vendor}?seed={seed}&temp_c=20") as bench:
        bench.tester.write_rows(rows, 0xFF)
        for vdd in GRID_V:
            bench.set_vdd(vdd)
            data = bench.tester.read_rows(rows, VOLTRON_TIMING)
            lines = (data != 0xFF).reshape(-1, 64).any(axis=1)
            result[vdd] = float(lines.mean())
    return result


def error_map(vendor: str, vdd: float, rows_step: int) -> np.ndarray:
    """Bit errors per (bank, row) with random data at ``vdd``."""
    rows = [(b, r) for b in range(8) for r in range(0, 32768, rows_step)]
    data = np.random.default_rng(1).integers(0, 256, 8192, dtype=np.uint8)
    with Bench.open(f"emu://{vendor}?seed=0&temp_c=20") as bench:
        bench.tester.write_rows(rows, data)
        bench.set_vdd(vdd)
        back = bench.tester.read_rows(rows, VOLTRON_TIMING)
    return np.unpackbits(back ^ data, axis=1).sum(axis=1).reshape(8, -1)


def fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dimms", type=int, default=5, help="emulated DIMMs (seeds) per vendor (default 5)")
    parser.add_argument("--rows", type=int, default=96, help="rows sampled per DIMM, over all banks (default 96)")
    parser.add_argument("--png", default="out/calibration.png", help="error map PNG (default out/calibration.png)")
    parser.add_argument("--map-row-step", type=int, default=128, help="row spacing of the error map (default 128)")
    args = parser.parse_args()
    pub = published()
    rng = np.random.default_rng(2017)
    # Pairs of neighbouring rows, so rows of both cell orientations are equally represented.
    starts = zip(rng.integers(0, 8, args.rows // 2), rng.integers(0, 32767, args.rows // 2) & ~1)
    sample = sorted({(int(b), int(r) + k) for b, r in starts for k in (0, 1)})
    resolution = 1.0 / (len(sample) * 128)
    print(f"fraction of 64-byte lines with errors; {len(sample)} rows x 128 lines per DIMM "
          f"(resolution {resolution:.1e}); all-ones data, tRCD = tRP = 10 ns, 20 C")
    start = time.perf_counter()
    log_errors: dict[str, list[float]] = defaultdict(list)
    for vendor in "ABC":
        per_dimm = [measure_dimm(vendor, seed, sample) for seed in range(args.dimms)]
        print(f"\nvendor {vendor}: {args.dimms} emulated DIMMs vs {len(pub.get((vendor, 1.35), []))} published")
        print(f"{'VDD (V)':>8} | {'emulated median':>15} {'range':>19} | {'published median':>16} {'range':>19}")
        for vdd in GRID_V:
            emu = sorted(d[vdd] for d in per_dimm)
            real = sorted(pub.get((vendor, vdd), []))
            real_txt = (
                f"{fmt(statistics.median(real)):>16} {fmt(real[0]) + '..' + fmt(real[-1]):>19}" if real else f"{'-':>16} {'':>19}"
            )
            print(
                f"{vdd:8.3f} | {fmt(statistics.median(emu)):>15} {fmt(emu[0]) + '..' + fmt(emu[-1]):>19} | {real_txt}"
            )
            if real:
                e, r = statistics.median(emu), statistics.median(real)
                if e > resolution and r > resolution:
                    log_errors[vendor].append(abs(math.log10(e / r)))
                elif (e > resolution) != (r > resolution) and max(e, r) > 10 * resolution:
                    log_errors[vendor].append(math.log10(max(e, r) / resolution))
    print("\nmedian |log10(emulated / published)| over resolvable grid points:")
    for vendor, errs in log_errors.items():
        print(f"  vendor {vendor}: {statistics.median(errs):.2f} decades over {len(errs)} points (max {max(errs):.2f})")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        print("matplotlib missing: no PNG written")
        return
    fig, axes = plt.subplots(3, 1, figsize=(11, 7), constrained_layout=True)
    for ax, (vendor, vdd) in zip(axes, MAP_SETTINGS.items()):
        errors = error_map(vendor, vdd, args.map_row_step)
        image = ax.imshow(np.log10(errors + 1), aspect="auto", interpolation="nearest", cmap="magma",
                          extent=(0, 32768, 7.5, -0.5))
        ax.set_title(f"vendor {vendor} at {vdd} V, random data: log10(1 + bit errors) per row")
        ax.set_ylabel("bank")
        fig.colorbar(image, ax=ax)
    axes[-1].set_xlabel("row")
    atomic_write(args.png, lambda fh: fig.savefig(fh, format="png", dpi=110))  # creates the directory
    print(f"\nerror maps written to {args.png}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

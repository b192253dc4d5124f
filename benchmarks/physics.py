"""Cost of the emulated DIMM's error physics: reading a whole bank at a failing setting vs nominal.

Reads every row of one bank (32768 rows, 256 MiB) through the real bench path
(host -> socket -> emulator, supply over pyvisa-py) at nominal VDD and at a VDD
where a large share of lines fails, and prints both times and their ratio.

    python benchmarks/physics.py [--profile B] [--vdd 1.025] [--rows 32768]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from softmc_host.bench import Bench  # noqa: E402


def read_bank(bench: Bench, rows: list[tuple[int, int]], chunk: int = 992) -> tuple[float, np.ndarray]:
    """Seconds to read ``rows`` and the bursts (of 64 bytes) that differ from the nominal read."""
    start = time.perf_counter()
    out = [bench.tester.read_rows(rows[i : i + chunk]) for i in range(0, len(rows), chunk)]
    return time.perf_counter() - start, np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="B", help="vendor profile (default B)")
    parser.add_argument("--vdd", type=float, default=1.025, help="failing VDD in V (default 1.025)")
    parser.add_argument("--rows", type=int, default=32768, help="rows of bank 0 to read (default all 32768)")
    args = parser.parse_args()
    rows = [(0, r) for r in range(args.rows)]
    with Bench.open(f"emu://{args.profile}?seed=0") as bench:
        nominal_s, clean = read_bank(bench, rows)
        bench.set_vdd(args.vdd)
        failing_s, noisy = read_bank(bench, rows)
    lines = (clean != noisy).reshape(-1, 64).any(axis=1).mean()
    mib = len(rows) * 8192 / 2**20
    print(f"profile {args.profile}, bank 0, {len(rows)} rows ({mib:.0f} MiB), power-up data")
    print(f"nominal 1.35 V      : {nominal_s:7.2f} s  ({mib / nominal_s:6.1f} MiB/s)")
    print(f"failing {args.vdd:.3f} V    : {failing_s:7.2f} s  ({mib / failing_s:6.1f} MiB/s), "
          f"{lines:.2%} of lines with errors")
    print(f"ratio failing/nominal: {failing_s / nominal_s:.2f}x")


if __name__ == "__main__":
    main()

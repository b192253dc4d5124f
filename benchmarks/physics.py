"""Cost of the emulated DIMM's error physics: reading a whole bank at a failing setting vs nominal.

Reads every row of one bank (32768 rows, 256 MiB) through the real bench path
(host -> socket -> emulator, supply over pyvisa-py) at nominal VDD and at a VDD
where a large share of lines fails, and prints both times and their ratio.  Beside
it, the physics alone: the same rows read at the DIMM's API in this process (ACT,
one ``read_bursts`` of the row's 128 bursts, PRE, as the firmware calls it), so the
cost of the physics per row and that of the link and firmware are seen apart.

    python benchmarks/physics.py [--profile B] [--vdd 1.025] [--rows 32768] [--dimm-only]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emubench.physics import PhysicsDimm  # noqa: E402
from emubench.profiles import get_profile  # noqa: E402
from softmc_host.bench import Bench  # noqa: E402
from softmc_host.timing import ML605_TCK_NS, NOMINAL_TIMING  # noqa: E402


def read_bank(bench: Bench, rows: list[tuple[int, int]], chunk: int = 992) -> tuple[float, np.ndarray]:
    """Seconds to read ``rows`` and the bursts (of 64 bytes) that differ from the nominal read."""
    start = time.perf_counter()
    out = [bench.tester.read_rows(rows[i : i + chunk]) for i in range(0, len(rows), chunk)]
    return time.perf_counter() - start, np.concatenate(out)


def read_bank_dimm(profile: str, vdd_v: float, rows: int, seed: int = 0) -> tuple[float, np.ndarray]:
    """CPU seconds to read ``rows`` rows of bank 0 at the DIMM's API, and the bytes read.

    A fresh DIMM (no cached weak cells); each row is activated, read with one
    ``read_bursts`` call of its 128 bursts (tRCD from the nominal ACT-to-RD, 4 cycles more
    per burst, as a row-read program issues them) and precharged.
    """
    p = get_profile(profile)
    dimm = PhysicsDimm(p, seed=seed, environment=lambda: (vdd_v, p.temp_ref_c))
    cycles = NOMINAL_TIMING.cycles(ML605_TCK_NS)
    columns = np.arange(0, dimm.geometry.columns, 8)
    trcd = cycles.trcd + 4 * np.arange(columns.size)
    out = np.empty((rows, dimm.geometry.row_bytes), np.uint8)
    start = time.process_time()
    for row in range(rows):
        now_ns = row * 1e4
        dimm.now_ns = now_ns
        access = dimm.activate(0, row, cycles.trp)
        out[row] = dimm.read_bursts(access, columns, trcd, now_ns + trcd * ML605_TCK_NS)
        dimm.precharge(access, int(trcd[-1]) + cycles.tras)
    return time.process_time() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="B", help="vendor profile (default B)")
    parser.add_argument("--vdd", type=float, default=1.025, help="failing VDD in V (default 1.025)")
    parser.add_argument("--rows", type=int, default=32768, help="rows of bank 0 to read (default all 32768)")
    parser.add_argument("--dimm-only", action="store_true", help="measure the physics at the DIMM's API only")
    args = parser.parse_args()
    mib = args.rows * 8192 / 2**20
    nominal_v = get_profile(args.profile).vdd_nominal_v
    print(f"profile {args.profile}, bank 0, {args.rows} rows ({mib:.0f} MiB), power-up data")
    if not args.dimm_only:
        rows = [(0, r) for r in range(args.rows)]
        with Bench.open(f"emu://{args.profile}?seed=0") as bench:
            nominal_s, clean = read_bank(bench, rows)
            bench.set_vdd(args.vdd)
            failing_s, noisy = read_bank(bench, rows)
        lines = (clean != noisy).reshape(-1, 64).any(axis=1).mean()
        print("bench path (host -> socket -> emulator), wall time:")
        print(f"  nominal {nominal_v:.3f} V  : {nominal_s:7.2f} s  ({mib / nominal_s:6.1f} MiB/s)")
        print(f"  failing {args.vdd:.3f} V  : {failing_s:7.2f} s  ({mib / failing_s:6.1f} MiB/s), "
              f"{lines:.2%} of lines with errors")
        print(f"  ratio failing/nominal: {failing_s / nominal_s:.2f}x")
    nominal_s, clean = read_bank_dimm(args.profile, nominal_v, args.rows)
    failing_s, noisy = read_bank_dimm(args.profile, args.vdd, args.rows)
    lines = (clean != noisy).reshape(-1, 64).any(axis=1).mean()
    print("DIMM API alone (activate, read_bursts of 128 bursts, precharge), CPU time:")
    for name, vdd_v, seconds in (("nominal", nominal_v, nominal_s), ("failing", args.vdd, failing_s)):
        print(f"  {name} {vdd_v:.3f} V  : {seconds:7.2f} s  ({args.rows / seconds:8.0f} rows/s, "
              f"{mib / seconds:6.1f} MiB/s, {seconds / args.rows * 1e6:6.1f} us/row)")
    print(f"  physics per row at {args.vdd:.3f} V: {(failing_s - nominal_s) / args.rows * 1e6:.1f} us "
          f"({lines:.2%} of lines with errors)")


if __name__ == "__main__":
    main()

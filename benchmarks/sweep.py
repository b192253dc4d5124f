"""Sweep throughput against the emulated bench, and what writing the BER map costs.

Runs a VDD sweep (all-ones and all-zeros patterns) on an emulated vendor-B DIMM
through the real bench path and prints points/s, tested bytes/s, and the time
spent storing each point (journal + HDF5) as a ratio to the time spent measuring
it, all from the same run.

    python benchmarks/sweep.py [--rows 64] [--banks 8] [--vdd 1.35:1.0:-0.05]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from typing import Any  # noqa: E402

from profiler.engine import SweepPlan, run_sweep, sweep_metadata  # noqa: E402
from profiler.plan import SweepConfig, parse_values  # noqa: E402
from profiler.storage import MapWriter  # noqa: E402
from softmc_host.bench import Bench  # noqa: E402

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64, help="rows sampled per bank (default 64)")
    parser.add_argument("--banks", type=int, default=8, help="banks 0..N-1 (default 8)")
    parser.add_argument("--vdd", default="1.35:1.0:-0.05", help="VDD values in V (default 1.35:1.0:-0.05)")
    parser.add_argument("--bench", default="emu://B?seed=0", help="bench (default emu://B?seed=0)")
    args = parser.parse_args()
    config = SweepConfig(
        bench=args.bench,
        vdd_v=parse_values(args.vdd, "--vdd", "V"),
        banks=f"0:{args.banks}",
        rows=f"sample:{args.rows}",
        patterns=["all-1", "all-0"],
    )
    store_s = 0.0
    measure_s = 0.0
    bits = 0
    flips = 0
    with tempfile.TemporaryDirectory() as tmp, Bench.open(config.bench) as bench:
        plan = SweepPlan.from_config(config, banks=bench.tester.banks, rows=bench.tester.rows)
        writer = MapWriter(os.path.join(tmp, "bench.h5"), sweep_metadata(plan, bench), plan.identity)
        writer.open()

        def store(name: str, doc: dict[str, Any]) -> None:
            """The map writer, timed: a subscriber of the run's documents."""
            nonlocal store_s, measure_s, bits, flips
            t0 = time.perf_counter()
            writer(name, doc)
            if name != "point":
                return
            store_s += time.perf_counter() - t0
            point = doc["data"]
            measure_s += float(point.attrs["duration_s"])
            bits += point.bits
            flips += point.flips

        start = time.perf_counter()
        run_sweep(plan, bench, [store])
        total_s = time.perf_counter() - start
        size = os.path.getsize(os.path.join(tmp, "bench.h5"))
    rows = plan.rowset
    tested_bytes = bits / 8
    print(f"{len(plan)} points x {len(rows.rows)} rows ({tested_bytes / len(plan) / 2**20:.1f} MiB per point), "
          f"{flips:,} flips, map {size / 2**20:.1f} MiB")
    print(f"points/s          : {len(plan) / total_s:8.2f}")
    print(f"tested MiB/s      : {tested_bytes / total_s / 2**20:8.2f}  (each byte written once and read once)")
    print(f"measure per point : {measure_s / len(plan) * 1e3:8.1f} ms")
    print(f"store per point   : {store_s / len(plan) * 1e3:8.1f} ms  (journal + HDF5)")
    print(f"ratio store/measure: {store_s / measure_s:.3f}")


if __name__ == "__main__":
    main()

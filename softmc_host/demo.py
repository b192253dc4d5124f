"""Bench demo: write data patterns to rows of several banks, read them back, summarise.

``python -m softmc_host.demo`` starts the emulated tester in its own process and
talks to it through the real link (pySerial over ``socket://``); ``--tester URL``
runs the same job against any tester (a serial port, a socket, a spy URL).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import numpy as np

from firmware_bridge.emulator import EmulatorError, spawn
from firmware_bridge.link import LinkError
from softmc_host.session import TesterError, TesterSession
from softmc_host.timing import AccessTiming, TimingError


def _patterns(row_bytes: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    index = np.arange(row_bytes)
    return {
        "all-0 (0x00)": np.zeros(row_bytes, np.uint8),
        "all-1 (0xFF)": np.full(row_bytes, 0xFF, np.uint8),
        "0xAA": np.full(row_bytes, 0xAA, np.uint8),
        "checkerboard": np.where((index // 8) % 2 == 0, 0x55, 0xAA).astype(np.uint8),
        f"random (seed {seed})": rng.integers(0, 256, row_bytes, dtype=np.uint8),
    }


def _parse_list(text: str, what: str) -> list[int]:
    try:
        return [int(x, 0) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a comma list of integers, got {text!r}") from None


def run_demo(tester: TesterSession, banks: Sequence[int], rows: Sequence[int], seed: int, out=sys.stdout) -> int:
    """Write every pattern to every (bank, row), read back, print a table; return the bit-error count."""
    patterns = _patterns(tester.row_bytes, seed)
    targets = [(b, r) for b in banks for r in rows]
    cyc = tester.timing_cycles
    print(
        f"tester: {tester.info.get('firmware', '?')} {tester.info.get('version', '')}, "
        f"{tester.banks} banks x {tester.rows} rows x {tester.row_bytes} B, tCK {tester.tck_ns:g} ns",
        file=out,
    )
    print(
        f"timing: tRCD {cyc.trcd} cyc ({cyc.trcd_ns:g} ns), tRP {cyc.trp} cyc ({cyc.trp_ns:g} ns), "
        f"tRAS {cyc.tras} cyc ({cyc.tras_ns:g} ns)",
        file=out,
    )
    print(f"{'pattern':<22}{'rows':>6}{'bytes':>10}{'bit errors':>12}{'MB/s':>8}", file=out)
    total_errors = 0
    total_bytes = 0
    start = time.perf_counter()
    for name, data in patterns.items():
        t0 = time.perf_counter()
        tester.write_rows(targets, data)
        back = tester.read_rows(targets)
        dt = time.perf_counter() - t0
        errors = int(np.unpackbits(back ^ data[None, :]).sum())
        total_errors += errors
        nbytes = back.size
        total_bytes += nbytes
        print(f"{name:<22}{len(targets):>6}{nbytes:>10}{errors:>12}{2 * nbytes / dt / 1e6:>8.2f}", file=out)
    elapsed = time.perf_counter() - start
    stats = tester.link.stats
    print(
        f"total: {total_bytes} bytes written and read back in {elapsed:.2f} s, {total_errors} bit errors; "
        f"link: {stats.requests} requests, {stats.retransmissions} retransmissions",
        file=out,
    )
    return total_errors


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; exit status 0 if every byte read back as written, 1 if not, 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m softmc_host.demo",
        description="Write and read back data patterns on rows of several banks through the tester link.",
    )
    parser.add_argument("--tester", help="tester URL (default: start an emulated tester on a loopback socket)")
    parser.add_argument("--seed", type=int, default=0, help="emulated DIMM seed and random-pattern seed (default 0)")
    parser.add_argument(
        "--banks", type=lambda s: _parse_list(s, "--banks"), default=[0, 3, 7], help="comma list (default 0,3,7)"
    )
    parser.add_argument(
        "--rows", type=lambda s: _parse_list(s, "--rows"), default=[0, 1, 1024, 32767], help="comma list"
    )
    parser.add_argument("--trcd-ns", type=float, default=13.75, help="tRCD in ns (default 13.75)")
    parser.add_argument("--trp-ns", type=float, default=13.75, help="tRP in ns (default 13.75)")
    parser.add_argument("--tras-ns", type=float, default=35.0, help="tRAS in ns (default 35)")
    parser.add_argument("--spy", action="store_true", help="log every frame on standard error")
    args = parser.parse_args(argv)
    try:
        timing = AccessTiming(args.trcd_ns, args.trp_ns, args.tras_ns)
    except TimingError as exc:
        parser.error(str(exc))
    emulator = None
    try:
        url = args.tester
        if url is None:
            emulator = spawn(seed=args.seed)
            url = emulator.url
            print(f"started emulated tester at {url}")
        with TesterSession.open(url, timing=timing, spy=sys.stderr if args.spy else None) as tester:
            for bank in args.banks:
                if not 0 <= bank < tester.banks:
                    parser.error(f"bank {bank} outside 0..{tester.banks - 1}")
            for row in args.rows:
                if not 0 <= row < tester.rows:
                    parser.error(f"row {row} outside 0..{tester.rows - 1}")
            errors = run_demo(tester, args.banks, args.rows, args.seed)
    except (LinkError, TesterError, EmulatorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if emulator is not None:
            emulator.close()
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

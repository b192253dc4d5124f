"""Bench demo: write data patterns to rows of several banks, read them back, summarise.

``python -m softmc_host.demo`` opens the emulated tester ``emu://B?seed=N`` (the emulated
bench plug-in starts it in its own process, reached by URL through
:mod:`softmc_host.schemes`) and talks to it through the real link (pySerial over
``socket://``); ``--tester URL`` runs the same job against any tester (a serial port, a
socket, a spy URL, another ``emu://`` address, a stock SoftMC board at ``riffa://0/0``, or
the emulated one at ``emu://B?link=riffa``).  The patterns are those of
:mod:`softmc_host.patterns` (``checkerboard``: 0x55 in even rows, 0xAA in odd rows).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Sequence

import numpy as np

from firmware_bridge.link import LinkError
from softmc_host.cli import add_verbosity, configure_logging, fail
from softmc_host.patterns import Pattern, parse_pattern
from softmc_host.session import TesterError, TesterSession
from softmc_host.timing import NOMINAL_TRAS_NS, NOMINAL_TRCD_NS, NOMINAL_TRP_NS, AccessTiming, TimingError

log = logging.getLogger(__name__)

#: The emulated tester the demo opens without ``--tester`` (``{seed}``: the ``--seed``).
DEFAULT_TESTER = "emu://B?seed={seed}"


def _patterns(seed: int, arbitrary_data: bool = True) -> dict[str, Pattern]:
    """The demo's patterns by the label it prints (definitions from :mod:`softmc_host.patterns`).

    Without arbitrary write data (a stock SoftMC tester) the random pattern is ``random-bursts``:
    one random byte per burst, which a stock WR can write.
    """
    random = (f"random (seed {seed})", f"random:{seed}") if arbitrary_data else (
        f"random bursts ({seed})", f"random-bursts:{seed}")
    return {
        "all-0 (0x00)": parse_pattern("all-0"),
        "all-1 (0xFF)": parse_pattern("all-1"),
        "0xAA": parse_pattern("0xAA"),
        "checkerboard": parse_pattern("checkerboard"),
        random[0]: parse_pattern(random[1]),
    }


def _parse_list(text: str, what: str) -> list[int]:
    try:
        return [int(x, 0) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a comma list of integers, got {text!r}") from None


def run_demo(tester: TesterSession, banks: Sequence[int], rows: Sequence[int], seed: int, out=None) -> int:
    """Write every pattern to every (bank, row), read back, print a table (on ``out``, default standard
    output); return the bit-error count."""
    out = sys.stdout if out is None else out
    patterns = _patterns(seed, tester.writes_arbitrary_data)
    targets = [(b, r) for b in banks for r in rows]
    cyc = tester.timing_cycles
    print(
        f"tester: {tester.info.get('firmware', '?')} {tester.info.get('version', '')}, "
        f"{tester.banks} banks x {tester.rows} rows x {tester.row_bytes} B, tCK {tester.tck_ns:g} ns",
        file=out,
    )
    if not tester.writes_arbitrary_data:
        print(f"{tester.kind} tester: no write-data extension, each burst repeats one byte "
              "(random data written as one random byte per burst)", file=out)
    print(
        f"timing: tRCD {cyc.trcd} cyc ({cyc.trcd_ns:g} ns), tRP {cyc.trp} cyc ({cyc.trp_ns:g} ns), "
        f"tRAS {cyc.tras} cyc ({cyc.tras_ns:g} ns)",
        file=out,
    )
    print(f"{'pattern':<22}{'rows':>6}{'bytes':>10}{'bit errors':>12}{'MB/s':>8}", file=out)
    total_errors = 0
    total_bytes = 0
    start = time.perf_counter()
    for name, pattern in patterns.items():
        data = np.stack([pattern.data(b, r, i, tester.row_bytes) for i, (b, r) in enumerate(targets)])
        t0 = time.perf_counter()
        tester.write_rows(targets, list(data))
        back = tester.read_rows(targets)
        dt = time.perf_counter() - t0
        errors = int(np.unpackbits(back ^ data).sum())
        total_errors += errors
        nbytes = back.size
        total_bytes += nbytes
        print(f"{name:<22}{len(targets):>6}{nbytes:>10}{errors:>12}{2 * nbytes / dt / 1e6:>8.2f}", file=out)
    elapsed = time.perf_counter() - start
    stats = tester.link.stats
    link = (f"link: {stats.requests} requests, {stats.retransmissions} retransmissions" if not tester.stock else
            f"RIFFA: {stats.requests} requests, {stats.extra.get('resets', 0)} resets, "
            f"{stats.extra.get('drained_bursts', 0)} stale bursts drained")
    print(
        f"total: {total_bytes} bytes written and read back in {elapsed:.2f} s, {total_errors} bit errors; {link}",
        file=out,
    )
    return total_errors


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; exit status 0 if every byte read back as written, 1 if not, 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m softmc_host.demo",
        description="Write and read back data patterns on rows of several banks through the tester link.",
    )
    parser.add_argument(
        "--tester", help=f"tester URL (default: the emulated tester {DEFAULT_TESTER.format(seed='SEED')})"
    )
    parser.add_argument("--seed", type=int, default=0, help="emulated DIMM seed and random-pattern seed (default 0)")
    parser.add_argument(
        "--banks", type=lambda s: _parse_list(s, "--banks"), default=[0, 3, 7], help="comma list (default 0,3,7)"
    )
    parser.add_argument(
        "--rows", type=lambda s: _parse_list(s, "--rows"), default=[0, 1, 1024, 32767], help="comma list"
    )
    parser.add_argument("--trcd-ns", type=float, default=NOMINAL_TRCD_NS, help=f"tRCD in ns (default {NOMINAL_TRCD_NS:g})")
    parser.add_argument("--trp-ns", type=float, default=NOMINAL_TRP_NS, help=f"tRP in ns (default {NOMINAL_TRP_NS:g})")
    parser.add_argument("--tras-ns", type=float, default=NOMINAL_TRAS_NS, help=f"tRAS in ns (default {NOMINAL_TRAS_NS:g})")
    parser.add_argument("--spy", action="store_true", help="log every frame on standard error")
    add_verbosity(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        timing = AccessTiming(args.trcd_ns, args.trp_ns, args.tras_ns)
    except TimingError as exc:
        parser.error(str(exc))
    if not 0 <= args.seed < 1 << 64:
        parser.error(f"--seed must be in 0..2**64-1, got {args.seed}")
    url = args.tester if args.tester is not None else DEFAULT_TESTER.format(seed=args.seed)
    try:
        with TesterSession.open(url, timing=timing, spy=sys.stderr if args.spy else None) as tester:
            if args.tester is None:
                log.info("started emulated tester %s at %s", url, tester.link.name)
            for bank in args.banks:
                if not 0 <= bank < tester.banks:
                    parser.error(f"bank {bank} outside 0..{tester.banks - 1}")
            for row in args.rows:
                if not 0 <= row < tester.rows:
                    parser.error(f"row {row} outside 0..{tester.rows - 1}")
            errors = run_demo(tester, args.banks, args.rows, args.seed)
    except (LinkError, TesterError) as exc:
        return fail(str(exc))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

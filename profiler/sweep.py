"""``python -m profiler.sweep``: characterize a DIMM over VDD, tRCD, tRP and temperature into a BER map.

Examples::

    python -m profiler.sweep --vdd 1.35:1.05:-0.05 --out b.h5                 # emulated vendor-B DIMM
    python -m profiler.sweep --bench data/benches/emulated.toml --trcd 13.75,10,7.5,5 --out t.h5
    python -m profiler.sweep --config sweep.toml --dry-run

Every point is on disk as soon as it is measured; rerunning the same command
after an interruption resumes where it stopped.  The supply is back at nominal
when the command ends, however it ends.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from softmc_host import __version__

from profiler.plan import (
    MAX_PLAN_POINTS,
    NOMINAL_TRCD_NS,
    NOMINAL_TRP_NS,
    PlanError,
    SweepConfig,
    ascii_float,
    ascii_int,
    build_plan,
    load_config,
    parse_int_list,
    parse_rows,
    parse_values,
)
from profiler.storage import LockError, MapError, MapWriter, PointData

ML605_BANKS = 8
ML605_ROWS = 32768
ROW_BYTES = 8192
ASSUMED_LINK_MB_S = 8.0


def _int_arg(text: str) -> int:
    """An argparse type: an ASCII decimal integer (``int()`` would also take ``٣`` and ``1_000``)."""
    try:
        return ascii_int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a decimal integer: {text[:40]!r}") from None


def _float_arg(text: str) -> float:
    """An argparse type: an ASCII decimal number."""
    try:
        return ascii_float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text[:40]!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m profiler.sweep",
        description="Sweep VDD / tRCD / tRP / temperature per bank with data patterns; write a BER map (HDF5).",
    )
    p.add_argument(
        "--config",
        help="sweep TOML file with keys bench, vdd_v, trcd_ns, trp_ns, tras_ns, temp_c, banks, rows, patterns, "
        "reps, seed, out, max_error_positions (optionally under [sweep]); flags override it",
    )
    p.add_argument(
        "--bench",
        help="bench file (.toml), tester URL, emu://PROFILE?seed=N or replay://MAP.h5 (default emu://B?seed=0)",
    )
    p.add_argument("--vdd", help="supply voltages in V: a,b,c, start:stop:step, or a comma mix (default: leave VDD as it is)")
    p.add_argument("--trcd", help="tRCD values in ns (default 13.75, the DDR3 datasheet value)")
    p.add_argument("--trp", help="tRP values in ns (default 13.75)")
    p.add_argument("--tras", type=_float_arg, help="tRAS in ns (default 35)")
    p.add_argument("--temp", help="DIMM temperatures in C (default: leave as it is)")
    p.add_argument("--banks", help="banks: all, 0,3,7 or 0:4 (default all)")
    p.add_argument("--rows", help="rows per bank: all, 0:1024, 0:32768:64, 1,5,9, or sample:N (seeded; default sample:64)")
    p.add_argument("--patterns", help="comma list: all-0, all-1, 0xNN, checkerboard, rowstripe, random[:SEED], file:PATH")
    p.add_argument("--reps", type=_int_arg, help="repetitions of every point (default 1)")
    p.add_argument("--seed", type=_int_arg, help="seed of row sampling, random patterns and emulated read noise (default 0)")
    p.add_argument("--max-errors", type=_int_arg, help="error positions stored per point (default 1000000)")
    p.add_argument("--out", help="output BER map, HDF5 (default sweep.h5)")
    p.add_argument(
        "--max-points",
        type=_int_arg,
        default=MAX_PLAN_POINTS,
        help=f"refuse a plan of more points than this (default {MAX_PLAN_POINTS:,}); it is counted before it is built",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, point count and estimated duration; touch nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The sweep configuration: the TOML file's values, overridden by the flags given."""
    config = load_config(args.config) if args.config else SweepConfig()
    updates: dict[str, Any] = {}
    if args.bench is not None:
        updates["bench"] = args.bench
    for flag, key, unit in (("vdd", "vdd_v", "V"), ("trcd", "trcd_ns", "ns"), ("trp", "trp_ns", "ns"), ("temp", "temp_c", "C")):
        value = getattr(args, flag)
        if value is not None:
            updates[key] = parse_values(value, f"--{flag}", unit)
    if args.tras is not None:
        updates["tras_ns"] = args.tras
    for flag in ("banks", "rows"):
        if getattr(args, flag) is not None:
            updates[flag] = getattr(args, flag)
    if args.patterns is not None:
        updates["patterns"] = [p.strip() for p in args.patterns.split(",") if p.strip()]
    for flag, key in (("reps", "reps"), ("seed", "seed"), ("max_errors", "max_error_positions"), ("out", "out")):
        if getattr(args, flag) is not None:
            updates[key] = getattr(args, flag)
    return replace(config, **updates)


def resolve_rows(config: SweepConfig, banks: int, rows: int) -> list[tuple[int, int]]:
    """The (bank, row) pairs measured at every point."""
    bank_list = parse_int_list(config.banks, "banks", 0, banks)
    row_list = parse_rows(config.rows, rows, config.seed)
    return [(b, r) for b in bank_list for r in row_list]


def identity(config: SweepConfig) -> dict[str, Any]:
    """What must match for a rerun to resume an existing map."""
    values = config.as_dict()
    values.pop("out")
    values.pop("max_error_positions")
    # A file pattern's content (its hash), not only its name, must match.
    values["pattern_definitions"] = [p.definition for p in config.resolved_patterns()]
    return values


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def dry_run(config: SweepConfig, max_points: int = MAX_PLAN_POINTS) -> int:
    """Print the plan without touching anything."""
    plan = build_plan(config, max_points)
    rows = resolve_rows(config, ML605_BANKS, ML605_ROWS)
    per_point_bytes = 2 * len(rows) * ROW_BYTES
    reduced = [p for p in plan if p.trcd_ns < NOMINAL_TRCD_NS or p.trp_ns < NOMINAL_TRP_NS]
    seconds = (len(plan) * per_point_bytes + len(reduced) * per_point_bytes * 0.5) / (ASSUMED_LINK_MB_S * 1e6)
    seconds += len({p.vdd_v for p in plan}) * 0.5 + len({p.temp_c for p in plan if p.temp_c is not None}) * 60
    print(f"bench    : {config.bench}")
    print(f"output   : {config.out}")
    print(f"rows     : {len(rows)} per point ({len({b for b, _ in rows})} banks), {len(rows) * ROW_BYTES * 8:,} bits")
    for name, values, unit in (
        ("VDD", config.vdd_v, "V"),
        ("tRCD", config.trcd_ns, "ns"),
        ("tRP", config.trp_ns, "ns"),
        ("temp", config.temp_c, "C"),
    ):
        shown = ", ".join(f"{v:g}" for v in (values or [])[:12]) + (f", ... ({len(values)} values)" if values and len(values) > 12 else "")
        print(f"{name:<9}: {shown + ' ' + unit if values else 'unchanged'}")
    print(f"patterns : {', '.join(p.definition for p in config.resolved_patterns())}; reps {config.reps}")
    print(f"points   : {len(plan)}")
    print(f"estimate : {_fmt_duration(seconds)} (at {ASSUMED_LINK_MB_S:g} MB/s through the link, "
          "1 min per temperature step; the ML605 geometry is assumed)")
    for point in plan[:5]:
        print(f"  {point.key}")
    if len(plan) > 5:
        print(f"  ... {len(plan) - 5} more")
    return 0


class Progress:
    """A progress bar (tqdm) with points done, rate and ETA."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="pt", dynamic_ncols=True, file=sys.stderr)

    def __call__(self, point: PointData) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{point.key[:40]} BER {point.ber:.1e}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _summary(path: Path) -> None:
    from profiler.storage import BerMap

    rows = BerMap(path).summary()
    print(f"\n{'VDD (V)':>8} {'tRCD':>6} {'tRP':>6} {'temp':>6} {'pattern':<14} {'bits':>12} {'0->1':>9} {'1->0':>9} {'BER':>9}")
    for r in rows:
        def num(v: Any, f: str) -> str:
            return "-" if v is None or v != v else format(v, f)

        print(
            f"{num(r['vdd_v'], '8.3f')} {r['trcd_ns']:6g} {r['trp_ns']:6g} {num(r['temp_c'], '6g')} "
            f"{r['pattern']:<14} {r['bits']:>12,} {r['flips_0to1']:>9,} {r['flips_1to0']:>9,} {r['ber']:>9.2e}"
        )


class _StopFlag:
    """Ctrl-C / SIGTERM ask the sweep to stop after the point being measured; a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this point (again to stop now) ...", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep command; exit 0 when the plan is complete, 130 when interrupted, 2 on bad input."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        plan = build_plan(config, args.max_points)
        if args.dry_run:
            return dry_run(config, args.max_points)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from firmware_bridge.link import LinkError
    from profiler.engine import RowSet, check_plan, run_plan
    from softmc_host.bench import Bench, BenchError
    from softmc_host.instruments import InstrumentError
    from softmc_host.session import TesterError

    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop.handle)
    signal.signal(signal.SIGINT, stop.handle)
    writer = None
    complete = False
    try:
        with Bench.open(config.bench) as bench:
            rowset = RowSet(tuple(resolve_rows(config, bench.tester.banks, bench.tester.rows)))
            check_plan(plan, bench)  # before anything is powered or written
            patterns = {p.name: p for p in config.resolved_patterns()}
            description = bench.describe()
            meta = {
                "software": f"eden-dram-toolkit {__version__}",
                "bench": description,
                "dimm": description.get("emulated", {"profile": "hardware"}),
                "geometry": {
                    "banks": bench.tester.banks,
                    "rows": bench.tester.rows,
                    "row_bytes": bench.tester.row_bytes,
                    "tck_ns": bench.tester.tck_ns,
                },
                "config": config.as_dict(),
                "patterns": {p.name: p.definition for p in patterns.values()},
            }
            writer = MapWriter(config.out, meta, identity(config))
            done = writer.open()
            if writer.damaged is not None:
                print(f"{config.out} was damaged (interrupted during a write): moved to {writer.damaged}, "
                      "rebuilt from the journal", file=sys.stderr)
            todo = [p for p in plan if p.key not in done]
            if done:
                print(f"resuming {config.out}: {len(done)} of {len(plan)} points already measured"
                      + (f" ({writer.recovered_from_journal} recovered from the journal)" if writer.recovered_from_journal else ""),
                      file=sys.stderr)
            progress = Progress(len(plan), len(plan) - len(todo), not args.no_progress)
            start = time.perf_counter()
            try:
                measured = run_plan(
                    bench,
                    plan,
                    patterns,
                    rowset,
                    skip=done,
                    subscribers=[writer.write, progress],
                    sweep_seed=config.seed,
                    max_error_positions=config.max_error_positions,
                    stop_requested=stop,
                )
            finally:
                progress.close()
            elapsed = time.perf_counter() - start
            complete = True
        print(f"{config.out}: {len(plan)} points ({measured} measured now in {elapsed:.1f} s); supply at nominal")
        _summary(Path(config.out))
        return 0
    except KeyboardInterrupt:
        kept = len(writer.done) if writer is not None else 0
        print(f"\ninterrupted: {kept} points are on disk in {config.out}; the supply is back at nominal; "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    except (PlanError, MapError, LockError, BenchError, InstrumentError, LinkError, TesterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}", file=sys.stderr)
        return 2
    finally:
        if writer is not None:
            writer.finish(complete)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m profiler.sweep``: characterize a DIMM over VDD, tRCD, tRP, temperature and refresh interval into a BER map.

Examples::

    python -m profiler.sweep --vdd 1.35:1.05:-0.05 -o b.h5                    # emulated vendor-B DIMM
    python -m profiler.sweep --bench data/benches/emulated.toml --trcd 13.75,10,7.5,5 -o t.h5
    python -m profiler.sweep --config sweep.toml --dry-run
    python -m profiler.sweep --bench "emu://B?seed=1&temp_c=70" --trefi-ms 64,512,2048 -o r.h5  # retention

Every point is on disk as soon as it is measured; rerunning the same command
after an interruption resumes where it stopped.  The supply is back at nominal
when the command ends, however it ends.

The command is a thin shell over :func:`profiler.run.sweep_to_map` (re-exported here
with :class:`~profiler.plan.SweepConfig` and :class:`~profiler.run.SweepError`):
it reads the flags and the ``--config`` TOML file (``docs/profiling.md``), configures
logging, and prints the final summary.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from profiler.plan import (
    MAX_PLAN_POINTS,
    NOMINAL_TRCD_NS,
    NOMINAL_TRP_NS,
    PlanError,
    SweepConfig,
    ascii_float,
    ascii_int,
    build_plan,
    identity,
    load_config,
    parse_values,
    resolve_rows,
)
from profiler.run import SweepError, sweep_to_map
from softmc_host.cli import add_out, add_verbosity, configure_logging, fail
from softmc_host.geometry import ML605_GEOMETRY

__all__ = ["SweepConfig", "SweepError", "sweep_to_map", "config_from_args", "resolve_rows", "identity", "dry_run", "main"]

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
        description="Sweep VDD / tRCD / tRP / temperature / refresh interval per bank with data patterns; "
        "write a BER map (HDF5).",
    )
    p.add_argument(
        "--config",
        metavar="FILE.toml",
        help="sweep TOML file with keys bench, vdd_v, trcd_ns, trp_ns, tras_ns, temp_c, trefi_ms, banks, rows, "
        "patterns, reps, seed, out, max_error_positions (optionally under [sweep]; docs/profiling.md); flags override it",
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
    p.add_argument(
        "--trefi-ms",
        dest="trefi_ms",
        help="refresh intervals in ms, 8..16384 (every row refreshed once per interval, then a hold of twice "
        "the interval before the read); default: no hold, refresh as the tester has it",
    )
    p.add_argument("--banks", help="banks: all, 0,3,7 or 0:4 (default all)")
    p.add_argument("--rows", help="rows per bank: all, 0:1024, 0:32768:64, 1,5,9, or sample:N (seeded; default sample:64)")
    p.add_argument("--patterns", help="comma list: all-0, all-1, 0xNN, checkerboard, rowstripe, random[:SEED], "
                   "random-bursts[:SEED], file:PATH")
    p.add_argument("--reps", type=_int_arg, help="repetitions of every point (default 1)")
    p.add_argument("--seed", type=_int_arg, help="seed of row sampling, random patterns and emulated read noise (default 0)")
    p.add_argument("--max-errors", type=_int_arg, help="error positions stored per point (default 1000000)")
    add_out(p, None, "output BER map, HDF5 (default sweep.h5, or the config file's out)")
    p.add_argument(
        "--max-points",
        type=_int_arg,
        default=MAX_PLAN_POINTS,
        help=f"refuse a plan of more points than this (default {MAX_PLAN_POINTS:,}); it is counted before it is built",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, point count and estimated duration; touch nothing")
    p.add_argument("--live-plot", metavar="PNG", help="redraw this PNG of BER per point while the sweep runs")
    add_verbosity(p)
    # the old spelling: no progress bar (but the log as usual)
    p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    return p


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The sweep configuration: the TOML file's values, overridden by the flags given."""
    config = load_config(args.config) if args.config else SweepConfig()
    updates: dict[str, Any] = {}
    if args.bench is not None:
        updates["bench"] = args.bench
    for flag, key, unit in (("vdd", "vdd_v", "V"), ("trcd", "trcd_ns", "ns"), ("trp", "trp_ns", "ns"), ("temp", "temp_c", "C"),
                            ("trefi_ms", "trefi_ms", "ms")):
        value = getattr(args, flag)
        if value is not None:
            updates[key] = parse_values(value, f"--{flag.replace('_', '-')}", unit)
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


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def dry_run(config: SweepConfig, max_points: int = MAX_PLAN_POINTS) -> int:
    """Print the plan, its point count and an estimated duration, touching nothing; return 0."""
    plan = build_plan(config, max_points)
    geometry = ML605_GEOMETRY
    rows = resolve_rows(config, geometry.banks, geometry.rows)
    per_point_bytes = 2 * len(rows) * geometry.row_bytes
    reduced = [p for p in plan if p.trcd_ns < NOMINAL_TRCD_NS or p.trp_ns < NOMINAL_TRP_NS]
    seconds = (len(plan) * per_point_bytes + len(reduced) * per_point_bytes * 0.5) / (ASSUMED_LINK_MB_S * 1e6)
    seconds += len({p.vdd_v for p in plan}) * 0.5 + len({p.temp_c for p in plan if p.temp_c is not None}) * 60
    seconds += sum(2 * p.trefi_ms / 1000 for p in plan if p.trefi_ms is not None)  # the holds, real time on SoftMC
    print(f"bench    : {config.bench}")
    print(f"output   : {config.out}")
    print(f"rows     : {len(rows)} per point ({len({b for b, _ in rows})} banks), {len(rows) * geometry.row_bytes * 8:,} bits")
    for name, values, unit in (
        ("VDD", config.vdd_v, "V"),
        ("tRCD", config.trcd_ns, "ns"),
        ("tRP", config.trp_ns, "ns"),
        ("temp", config.temp_c, "C"),
        *((("refresh", config.trefi_ms, "ms"),) if config.trefi_ms else ()),
    ):
        shown = ", ".join(f"{v:g}" for v in (values or [])[:12]) + (f", ... ({len(values)} values)" if values and len(values) > 12 else "")
        print(f"{name:<9}: {shown + ' ' + unit if values else 'unchanged'}")
    print(f"patterns : {', '.join(p.definition for p in config.resolved_patterns())}; reps {config.reps}")
    print(f"points   : {len(plan)}")
    print(f"estimate : {_fmt_duration(seconds)} (at {ASSUMED_LINK_MB_S:g} MB/s through the link, "
          "1 min per temperature step; the ML605 geometry is assumed)")
    if config.trefi_ms:
        hold_s = sum(2 * p.trefi_ms / 1000 for p in plan if p.trefi_ms is not None)
        print(f"holds    : {_fmt_duration(hold_s)} in all (twice the refresh interval per point; real time on "
              "SoftMC, emulated time on emu://)")
    for point in plan[:5]:
        print(f"  {point.key}")
    if len(plan) > 5:
        print(f"  ... {len(plan) - 5} more")
    return 0


def _summary(path: Path) -> None:
    from profiler.storage import BerMap

    rows = BerMap(path).summary()
    refresh = any(r.get("trefi_ms") is not None and r["trefi_ms"] == r["trefi_ms"] for r in rows)
    print(f"\n{'VDD (V)':>8} {'tRCD':>6} {'tRP':>6} {'temp':>6} " + (f"{'tREFW':>6} " if refresh else "")
          + f"{'pattern':<14} {'bits':>12} {'0->1':>9} {'1->0':>9} {'BER':>9}")
    for r in rows:
        def num(v: Any, f: str) -> str:
            return "-" if v is None or v != v else format(v, f)

        print(
            f"{num(r['vdd_v'], '8.3f')} {r['trcd_ns']:6g} {r['trp_ns']:6g} {num(r['temp_c'], '6g')} "
            + (f"{num(r.get('trefi_ms'), '6g')} " if refresh else "")
            + f"{r['pattern']:<14} {r['bits']:>12,} {r['flips_0to1']:>9,} {r['flips_1to0']:>9,} {r['ber']:>9.2e}"
        )


class _StopFlag:
    """Ctrl-C / SIGTERM ask the sweep to stop after the point being measured; a second one stops at once.

    ``message`` is what the first one prints (``profiler.campaign`` says what stopping means there).
    """

    def __init__(self, message: str = "stopping after this point (again to stop now)") -> None:
        self.requested = False
        self.message = message

    def __call__(self) -> bool:
        return self.requested

    def handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{self.message} ...", file=sys.stderr, flush=True)


class _Tally:
    """A subscriber that keeps what the command reports: points stored, the stop document."""

    def __init__(self) -> None:
        self.stored = 0
        self.stop: dict[str, Any] | None = None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self.stored = doc["skipped"]
        elif name == "point":
            self.stored += 1
        elif name == "stop":
            self.stop = doc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep command; exit 0 when the plan is complete, 130 when interrupted, 2 on bad input."""
    args = _parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        config = config_from_args(args)
        build_plan(config, args.max_points)
        if args.dry_run:
            return dry_run(config, args.max_points)
    except PlanError as exc:
        return fail(str(exc))
    tally = _Tally()
    subscribers: list[Any] = [tally]
    if args.live_plot:
        from profiler.plot import LivePlot

        subscribers.append(LivePlot(args.live_plot))
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        path = sweep_to_map(config, progress=not (args.quiet or args.no_progress), max_points=args.max_points,
                            subscribers=subscribers, stop_requested=stop)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {tally.stored} points are on disk in {config.out}; the supply is back at nominal; "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    except SweepError as exc:
        return fail(str(exc))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    done = tally.stop or {}
    print(f"{path}: {done.get('total', 0)} points ({done.get('measured', 0)} measured now in "
          f"{done.get('elapsed_s', 0.0):.1f} s); supply at nominal")
    _summary(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

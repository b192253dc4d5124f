"""The sweep engine: checks a plan against the bench, runs it point by point, emits records.

The engine sets and measures; storage and progress subscribe to the records it
emits (a callable per finished point), so the loop knows nothing of HDF5 or the
terminal.  Before anything is powered every point is checked against the bench:
VDD within the supply's limits, temperatures within the thermal controller's,
and the instruments the plan needs present.  Whatever ends the run (the last
point, an error, Ctrl-C), the supply is ramped back to nominal.

At each point the rows are written with the pattern at the point's VDD and
nominal timing, then read at the point's timing; with a reduced tRCD or tRP
every burst gets its own activation, so each is read exactly tRCD after its ACT.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from profiler.patterns import Pattern
from profiler.plan import NOMINAL_TRCD_NS, NOMINAL_TRP_NS, PlanError, Point
from profiler.storage import ERROR_DTYPE, PointData, utc_now
from softmc_host.bench import Bench
from softmc_host.instruments import SupplyLimitError
from softmc_host.timing import AccessTiming

__all__ = ["check_plan", "measure_point", "run_plan", "RowSet", "point_noise_seed"]

Record = Callable[[PointData], None]


@dataclass(frozen=True)
class RowSet:
    """The (bank, row) pairs a sweep measures, in order."""

    rows: tuple[tuple[int, int], ...]

    @property
    def banks(self) -> list[int]:
        """Banks present, ascending."""
        return sorted({b for b, _ in self.rows})


def check_plan(plan: Sequence[Point], bench: Bench) -> None:
    """Refuse a plan the bench cannot run safely, before anything is set.

    Raises
    ------
    PlanError
        A VDD outside the supply's limits (or a VDD with no supply), a temperature
        outside the thermal controller's limits (or none), naming the first offender.
    """
    for point in plan:
        if point.vdd_v is not None:
            if bench.supply is None:
                raise PlanError("the plan sets VDD but the bench has no supply (use a bench file or emu://)")
            try:
                bench.supply.limits.check(point.vdd_v)
            except SupplyLimitError as exc:
                raise PlanError(f"point {point.key}: {exc}") from None
        if point.temp_c is not None:
            if bench.thermal is None:
                raise PlanError("the plan sets temperatures but the bench has no thermal controller")
            limits = bench.thermal.limits
            if not limits.min_c <= point.temp_c <= limits.max_c:
                raise PlanError(
                    f"point {point.key}: temperature {point.temp_c} C outside the limits {limits.min_c}..{limits.max_c} C"
                )


def point_noise_seed(sweep_seed: int, key: str) -> int:
    """Seed of an emulated DIMM's read noise at one point (reproducible across resumed runs)."""
    return (sweep_seed * 0x9E3779B97F4A7C15 + zlib.crc32(key.encode())) & 0xFFFFFFFFFFFFFFFF


def _popcount_rows(bits: np.ndarray) -> np.ndarray:
    return np.bitwise_count(bits).sum(axis=1, dtype=np.uint64)


def measure_point(
    bench: Bench,
    point: Point,
    pattern: Pattern,
    rowset: RowSet,
    *,
    index: int,
    sweep_seed: int,
    max_error_positions: int,
) -> PointData:
    """Set the bench to ``point``, write the pattern, read back, and count the flips."""
    started = utc_now()
    t0 = time.perf_counter()
    tester = bench.tester
    if point.temp_c is not None and bench.thermal is not None:
        if abs(bench.thermal.set_point_c - point.temp_c) > 1e-9:
            bench.set_temperature(point.temp_c, wait=True)
    if point.vdd_v is not None:
        bench.set_vdd(point.vdd_v)
    tester.seed_noise(point_noise_seed(sweep_seed, point.key))
    rows = list(rowset.rows)
    row_bytes = tester.row_bytes
    expected = np.stack([pattern.data(b, r, i, row_bytes) for i, (b, r) in enumerate(rows)])
    tester.write_rows(rows, list(expected))
    timing = AccessTiming(point.trcd_ns, point.trp_ns, point.tras_ns)
    per_burst = point.trcd_ns < NOMINAL_TRCD_NS or point.trp_ns < NOMINAL_TRP_NS
    read = tester.read_rows(rows, timing, per_burst_activate=per_burst)
    measured_vdd = bench.supply.measured_voltage_v if bench.supply is not None else None
    current = bench.supply.measured_current_a if bench.supply is not None else None
    measured_temp = bench.thermal.temperature_c if bench.thermal is not None else None
    diff = read ^ expected
    up = diff & ~expected  # written 0, read 1
    down = diff & expected  # written 1, read 0
    banks = rowset.banks
    bank_of = np.array([b for b, _ in rows])
    bitline_up = np.zeros((len(banks), row_bytes * 8), np.uint32)
    bitline_down = np.zeros_like(bitline_up)
    failing_rows = np.flatnonzero(diff.any(axis=1))
    errors = np.zeros(0, ERROR_DTYPE)
    truncated = False
    if failing_rows.size:
        up_bits = np.unpackbits(up[failing_rows], axis=1, bitorder="little")
        down_bits = np.unpackbits(down[failing_rows], axis=1, bitorder="little")
        for slot, bank in enumerate(banks):
            sel = bank_of[failing_rows] == bank
            if sel.any():
                bitline_up[slot] = up_bits[sel].sum(axis=0)
                bitline_down[slot] = down_bits[sel].sum(axis=0)
        r_idx, bit = np.nonzero(up_bits | down_bits)
        if r_idx.size > max_error_positions:
            truncated = True
            r_idx, bit = r_idx[:max_error_positions], bit[:max_error_positions]
        source = failing_rows[r_idx]
        errors = np.empty(r_idx.size, ERROR_DTYPE)
        errors["bank"] = bank_of[source]
        errors["row"] = np.array([r for _, r in rows], dtype=np.uint32)[source]
        errors["bit"] = bit
        errors["dir"] = up_bits[r_idx, bit]
    cycles = timing.cycles(tester.tck_ns)
    attrs = {
        **point.as_dict(),
        "index": index,
        "effective_trcd_ns": cycles.trcd_ns,
        "effective_trp_ns": cycles.trp_ns,
        "effective_tras_ns": cycles.tras_ns,
        "measured_vdd_v": measured_vdd,
        "measured_temp_c": measured_temp,
        "supply_current_a": current,
        "started_utc": started,
        "finished_utc": utc_now(),
        "duration_s": time.perf_counter() - t0,
        "errors_truncated": truncated,
    }
    return PointData(
        key=point.key,
        attrs=attrs,
        rows=np.array(rows, dtype=np.uint32).reshape(-1, 2),
        bits_tested=np.full(len(rows), row_bytes * 8, np.uint64),
        flips_0to1=_popcount_rows(up).astype(np.uint32),
        flips_1to0=_popcount_rows(down).astype(np.uint32),
        bitline_banks=np.array(banks, dtype=np.uint8),
        bitline_0to1=bitline_up,
        bitline_1to0=bitline_down,
        errors=errors,
    )


def run_plan(
    bench: Bench,
    plan: Sequence[Point],
    patterns: dict[str, Pattern],
    rowset: RowSet,
    *,
    skip: Iterable[str] = (),
    subscribers: Sequence[Record] = (),
    sweep_seed: int = 0,
    max_error_positions: int = 1_000_000,
    stop_requested: Callable[[], bool] = lambda: False,
) -> int:
    """Run the points of ``plan`` not in ``skip``; emit each result to the subscribers.

    Returns the number of points measured.  ``stop_requested`` is asked before each
    point; when it answers True the run stops there with KeyboardInterrupt.  The
    supply is back at nominal on return and on any exception.
    """
    check_plan(plan, bench)
    done = set(skip)
    measured = 0
    try:
        for index, point in enumerate(plan):
            if point.key in done:
                continue
            if stop_requested():
                raise KeyboardInterrupt
            data = measure_point(
                bench,
                point,
                patterns[point.pattern],
                rowset,
                index=index,
                sweep_seed=sweep_seed,
                max_error_positions=max_error_positions,
            )
            for subscriber in subscribers:
                subscriber(data)
            measured += 1
    finally:
        if bench.supply is not None:
            bench.supply.restore_nominal()
    return measured

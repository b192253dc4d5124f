"""The sweep engine: checks a plan against the bench, runs it point by point, emits documents.

:func:`run_sweep` sets and measures; everything else subscribes to the *documents* it
emits (after Bluesky's, without its learning curve).  A subscriber is any callable
``subscriber(name, doc)``; every run emits, in this order:

``"start"`` (once)
    ``uid``, ``time_utc``, ``software``, ``identity`` (what a resumed map must match),
    ``config``, ``plan`` (point and row counts, banks, the swept values), ``bench``
    (:meth:`softmc_host.bench.Bench.describe`), ``dimm``, ``geometry`` (banks, rows,
    row_bytes, tck_ns from the tester), ``patterns`` (name -> definition), ``total``
    (points in the plan) and ``skipped`` (points already stored, not measured again).
``"point"`` (once per measured point)
    ``uid`` (the run's), ``seq_num`` (1, 2, ... in this run), ``index`` (in the plan),
    ``key``, ``settings`` (the point's settings, units in the names), ``time_utc`` and
    ``data``: the :class:`~profiler.storage.PointData`.
``"stop"`` (once, however the run ends)
    ``uid``, ``time_utc``, ``exit_status`` (``"success"``, ``"interrupted"`` or
    ``"failed"``), ``reason`` (one line; empty on success), ``total``, ``skipped``,
    ``measured``, ``elapsed_s`` and ``supply_at_nominal`` (True, False, or None without a
    supply), emitted after the supply is back at nominal.

The HDF5 storage (:class:`~profiler.storage.MapWriter`), the progress bar
(:class:`profiler.run.ProgressBar`) and live plots (:class:`profiler.plot.LivePlot`)
are subscribers, so the loop knows nothing of HDF5 or the terminal.  Before anything is
powered every point is checked against the bench: VDD within the supply's limits,
temperatures within the thermal controller's, and the instruments the plan needs
present.  Whatever ends the run (the last point, an error, Ctrl-C), the supply is ramped
back to nominal.

At each point the rows are written with the pattern at the point's VDD and nominal
timing, then read at the point's timing; with a reduced tRCD or tRP every burst gets its
own activation, so each is read exactly tRCD after its ACT.  A point with a refresh
interval (``trefi_ms`` X) sets the tester's auto-refresh between the write and the read so
that every row is refreshed once every X ms (tREFI = X / 8192, in 200 ns ticks), holds
2X (WAIT programs: every row then has seen a whole gap of X between two refreshes), reads,
and puts back the refresh setting the tester had.  Whatever ends the run, the refresh
setting is put back as well (after the supply).
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from profiler.plan import MAX_PLAN_POINTS, PlanError, Point, SweepConfig, build_plan, identity, resolve_rows
from profiler.storage import ERROR_DTYPE, PointData, utc_now
from softmc_host import __version__
from softmc_host._compat import add_note
from softmc_host.bench import Bench
from softmc_host.geometry import ML605_GEOMETRY
from softmc_host.instruments import SupplyLimitError
from softmc_host.patterns import Pattern
from softmc_host.session import REFRESH_COMMANDS_PER_WINDOW, CapabilityError
from softmc_host.timing import NOMINAL_TRCD_NS, NOMINAL_TRP_NS, AccessTiming

__all__ = [
    "check_plan",
    "measure_point",
    "run_sweep",
    "run_plan",
    "sweep_metadata",
    "RowSet",
    "SweepPlan",
    "SweepSummary",
    "Subscriber",
    "DOCUMENT_NAMES",
    "EXIT_STATUSES",
    "point_noise_seed",
]

logger = logging.getLogger(__name__)

#: A subscriber of the documents: ``subscriber(name, doc)`` with ``name`` one of :data:`DOCUMENT_NAMES`.
Subscriber = Callable[[str, dict[str, Any]], None]
#: The documents of a run, in the order they come.
DOCUMENT_NAMES = ("start", "point", "stop")
#: The ``exit_status`` values of a stop document.
EXIT_STATUSES = ("success", "interrupted", "failed")
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


#: Rows :func:`check_patterns` builds at a time (it checks every row, a chunk at a time).
PATTERN_CHECK_ROWS = 256


def check_patterns(patterns: Mapping[str, Pattern], rowset: RowSet, bench: Bench) -> None:
    """Refuse a pattern the tester cannot write, before anything is set.

    A tester without the write-data extension (stock SoftMC) writes only bursts that repeat one
    byte: ``random`` and most ``file:`` patterns need the extension, ``random-bursts`` does not.
    Every row of every pattern is built and checked (as one point of the sweep builds them), so a
    file pattern whose later rows vary is refused here too.

    Raises
    ------
    PlanError
        Naming the pattern, the tester and what to use instead.
    """
    tester = bench.tester
    if getattr(tester, "writes_arbitrary_data", True):
        return
    rows = list(rowset.rows)
    for name, pattern in patterns.items():
        for start in range(0, len(rows), PATTERN_CHECK_ROWS):
            chunk = rows[start: start + PATTERN_CHECK_ROWS]
            data = np.stack([pattern.data(b, r, start + i, tester.row_bytes) for i, (b, r) in enumerate(chunk)])
            try:
                tester.check_writable(data, chunk, what=f"pattern {name!r}")
            except CapabilityError as exc:
                raise PlanError(f"{exc}; patterns a burst of one repeated byte can hold: all-0, all-1, 0xNN, "
                                "checkerboard, rowstripe, random-bursts[:SEED]") from None


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
    refresh: dict[str, Any] = {}
    if point.trefi_ms is not None:
        before_ns = tester.refresh_interval_ns
        trefi_ns = tester.set_refresh_interval(point.trefi_ms * 1e6 / REFRESH_COMMANDS_PER_WINDOW)
        window_ms = (trefi_ns or 0.0) * REFRESH_COMMANDS_PER_WINDOW / 1e6
        held_ns = tester.hold(2e6 * max(point.trefi_ms, window_ms))
        refresh = {"effective_trefi_ms": window_ms, "hold_ms": held_ns / 1e6}
    timing = AccessTiming(point.trcd_ns, point.trp_ns, point.tras_ns)
    per_burst = point.trcd_ns < NOMINAL_TRCD_NS or point.trp_ns < NOMINAL_TRP_NS
    read = tester.read_rows(rows, timing, per_burst_activate=per_burst)
    if point.trefi_ms is not None:
        tester.set_refresh_interval(before_ns)
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
        **refresh,
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


@dataclass(frozen=True)
class SweepPlan:
    """What :func:`run_sweep` runs: the ordered points, the rows of every point, the patterns.

    Parameters
    ----------
    points : tuple of Point
        The points, in measurement order (:func:`profiler.plan.build_plan`).
    rowset : RowSet
        The (bank, row) pairs measured at every point.
    patterns : mapping
        Pattern name (``Point.pattern``) -> :class:`~softmc_host.patterns.Pattern`.
    seed : int
        The sweep seed (the emulated DIMM's read noise at each point is seeded from it).
    max_error_positions : int
        Error positions kept per point (counts are always exact).
    config : SweepConfig, optional
        The configuration the plan was built from (for the documents' ``config`` and
        ``identity``).
    """

    points: tuple[Point, ...]
    rowset: RowSet
    patterns: Mapping[str, Pattern]
    seed: int = 0
    max_error_positions: int = 1_000_000
    config: SweepConfig | None = field(default=None, compare=False)

    @classmethod
    def from_config(
        cls,
        config: SweepConfig,
        *,
        banks: int = ML605_GEOMETRY.banks,
        rows: int = ML605_GEOMETRY.rows,
        max_points: int = MAX_PLAN_POINTS,
    ) -> "SweepPlan":
        """Build the plan of a configuration for a DIMM of ``banks`` x ``rows``.

        Pass the tester's geometry (``bench.tester.banks``, ``bench.tester.rows``) where a
        bench is open; the ML605 geometry is the default.

        Raises
        ------
        PlanError
            An invalid setting, more than ``max_points`` points, or rows outside the geometry.
        """
        points = build_plan(config, max_points)
        rowset = RowSet(tuple(resolve_rows(config, banks, rows)))
        patterns = {p.name: p for p in config.resolved_patterns()}
        return cls(tuple(points), rowset, patterns, config.seed, config.max_error_positions, config)

    @property
    def identity(self) -> dict[str, Any]:
        """What a resumed map must match (:func:`profiler.plan.identity`; empty without a config)."""
        return identity(self.config) if self.config is not None else {}

    def __len__(self) -> int:
        return len(self.points)


@dataclass(frozen=True)
class SweepSummary:
    """How a run ended (the content of its stop document).

    Attributes
    ----------
    uid : str
        The run's id (every document of the run carries it).
    exit_status : str
        ``"success"`` (every point of the plan is measured or was skipped), ``"interrupted"``
        (Ctrl-C, or ``stop_requested``) or ``"failed"`` (an error).
    reason : str
        One line: why the run stopped early; empty on success.
    total, skipped, measured : int
        Points in the plan, points skipped (already stored), points measured in this run.
    elapsed_s : float
        Seconds from the start document to the stop document.
    supply_at_nominal : bool or None
        Whether the supply was ramped back to nominal (None: the bench has no supply).
    """

    uid: str
    exit_status: str
    reason: str
    total: int
    skipped: int
    measured: int
    elapsed_s: float
    supply_at_nominal: bool | None

    @property
    def complete(self) -> bool:
        """True when every point of the plan is measured (now or before)."""
        return self.exit_status == "success"

    def as_dict(self) -> dict[str, Any]:
        """The summary as the fields of a stop document."""
        return {
            "uid": self.uid, "exit_status": self.exit_status, "reason": self.reason, "total": self.total,
            "skipped": self.skipped, "measured": self.measured, "elapsed_s": self.elapsed_s,
            "supply_at_nominal": self.supply_at_nominal,
        }


def sweep_metadata(plan: SweepPlan, bench: Bench) -> dict[str, Any]:
    """What a run records about itself: software, bench, DIMM, geometry, config and patterns.

    These are the start document's fields of the same names, and the file attributes of a
    BER map (:class:`~profiler.storage.MapWriter`'s ``meta``).
    """
    description = bench.describe()
    tester = bench.tester
    return {
        "software": f"eden-dram-toolkit {__version__}",
        "bench": description,
        "dimm": description.get("emulated", {"profile": "hardware"}),
        "geometry": {"banks": tester.banks, "rows": tester.rows, "row_bytes": tester.row_bytes,
                     "tck_ns": tester.tck_ns},
        "config": plan.config.as_dict() if plan.config is not None else {},
        "patterns": {p.name: p.definition for p in plan.patterns.values()},
    }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _emit(subscribers: Sequence[Subscriber], name: str, doc: dict[str, Any]) -> None:
    for subscriber in subscribers:
        subscriber(name, doc)


def _plan_doc(plan: SweepPlan) -> dict[str, Any]:
    points = plan.points
    return {
        "points": len(points),
        "rows_per_point": len(plan.rowset.rows),
        "banks": plan.rowset.banks,
        "vdd_v": sorted({p.vdd_v for p in points if p.vdd_v is not None}, reverse=True),
        "trcd_ns": sorted({p.trcd_ns for p in points}, reverse=True),
        "trp_ns": sorted({p.trp_ns for p in points}, reverse=True),
        "temp_c": sorted({p.temp_c for p in points if p.temp_c is not None}),
        "trefi_ms": sorted({p.trefi_ms for p in points if p.trefi_ms is not None}),
        "patterns": list(plan.patterns),
    }


def run_sweep(
    plan: SweepPlan,
    bench: Bench,
    subscribers: Iterable[Subscriber] = (),
    *,
    skip: Iterable[str] = (),
    stop_requested: Callable[[], bool] | None = None,
) -> SweepSummary:
    """Run the points of ``plan`` on ``bench``, emitting start, point and stop documents.

    Parameters
    ----------
    plan : SweepPlan
        What to measure (:meth:`SweepPlan.from_config`).
    bench : Bench
        An open bench (:meth:`softmc_host.bench.Bench.open`).
    subscribers : iterable of callables
        ``subscriber(name, doc)`` for every document, called in the given order (the
        module docstring lists the documents and their fields).  A subscriber that raises
        ends the run like an error of the bench does.
    skip : iterable of str
        Keys of points not to measure (already stored: a resumed map's points).
    stop_requested : callable, optional
        Asked before each point; when it answers True the run stops there, with exit status
        ``"interrupted"``.

    Returns
    -------
    SweepSummary
        Exit status ``"success"``, or ``"interrupted"`` when ``stop_requested`` stopped it.

    Raises
    ------
    PlanError
        The plan does not fit the bench (:func:`check_plan`); raised before any document
        and before anything is set.
    KeyboardInterrupt, Exception
        Whatever interrupted the run or went wrong in the bench or a subscriber, re-raised
        after the supply is back at nominal, the tester's refresh setting is back as it was
        (when a point with ``trefi_ms`` was started), and the stop document (``"interrupted"`` for a
        KeyboardInterrupt, ``"failed"`` otherwise) has been emitted.
    """
    subscribers = list(subscribers)
    check_plan(plan.points, bench)
    check_patterns(plan.patterns, plan.rowset, bench)
    done = set(skip)
    uid = uuid.uuid4().hex
    total = len(plan.points)
    skipped = sum(1 for p in plan.points if p.key in done)
    measured = 0
    status, reason = "success", ""
    error: BaseException | None = None
    refresh_before_ns = getattr(bench.tester, "refresh_interval_ns", None)
    refresh_touched = False  # a point with a refresh interval was started: put the setting back on exit
    t0 = time.perf_counter()
    try:
        _emit(subscribers, "start", {
            "uid": uid, "time_utc": utc_now(), "identity": plan.identity, "plan": _plan_doc(plan),
            **sweep_metadata(plan, bench), "total": total, "skipped": skipped,
        })
        for index, point in enumerate(plan.points):
            if point.key in done:
                continue
            if stop_requested is not None and stop_requested():
                status, reason = "interrupted", "stop requested"
                break
            refresh_touched = refresh_touched or point.trefi_ms is not None
            data = measure_point(bench, point, plan.patterns[point.pattern], plan.rowset, index=index,
                                 sweep_seed=plan.seed, max_error_positions=plan.max_error_positions)
            measured += 1
            _emit(subscribers, "point", {
                "uid": uid, "seq_num": measured, "index": index, "key": point.key, "settings": point.as_dict(),
                "time_utc": utc_now(), "data": data,
            })
    except KeyboardInterrupt as exc:
        status, reason, error = "interrupted", "KeyboardInterrupt", exc
    except BaseException as exc:  # noqa: BLE001 - reported in the stop document, then re-raised
        status, reason, error = "failed", _one_line(exc), exc
    at_nominal: bool | None = None
    if bench.supply is not None:
        try:
            bench.supply.restore_nominal()
            at_nominal = True
        except BaseException as exc:  # noqa: BLE001 - the stop document still goes out
            at_nominal = False
            if error is None:
                status, reason, error = "failed", f"restoring the nominal VDD: {_one_line(exc)}", exc
            else:
                add_note(error, f"while restoring the nominal VDD: {_one_line(exc)}")
    if refresh_touched and (error is not None or bench.tester.refresh_interval_ns != refresh_before_ns):
        try:
            bench.tester.set_refresh_interval(refresh_before_ns)
        except BaseException as exc:  # noqa: BLE001 - the stop document still goes out
            if error is None:
                status, reason, error = "failed", f"restoring the refresh interval: {_one_line(exc)}", exc
            else:
                add_note(error, f"while restoring the refresh interval: {_one_line(exc)}")
    summary = SweepSummary(uid, status, reason, total, skipped, measured, time.perf_counter() - t0, at_nominal)
    if status != "success":
        logger.debug("sweep %s stopped: %s (%s)", uid, status, reason)
    stop_doc = {**summary.as_dict(), "time_utc": utc_now()}
    stop_error: BaseException | None = None
    for subscriber in subscribers:  # every subscriber gets the stop document, even if one fails
        try:
            subscriber("stop", stop_doc)
        except BaseException as exc:  # noqa: BLE001 - raised below, after the others
            if stop_error is None:
                stop_error = exc
    if error is not None:
        if stop_error is not None:
            add_note(error, f"a subscriber failed on the stop document: {_one_line(stop_error)}")
        raise error
    if stop_error is not None:
        raise stop_error
    return summary


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
    """Run the points of ``plan`` not in ``skip``; give each :class:`PointData` to the subscribers.

    The older interface of :func:`run_sweep` (its subscribers take the point data only).
    Returns the number of points measured; a stop request raises KeyboardInterrupt.  The
    supply is back at nominal on return and on any exception.
    """
    def points_only(name: str, doc: dict[str, Any]) -> None:
        if name == "point":
            for subscriber in subscribers:
                subscriber(doc["data"])

    summary = run_sweep(SweepPlan(tuple(plan), rowset, patterns, sweep_seed, max_error_positions), bench,
                        [points_only], skip=skip, stop_requested=stop_requested)
    if summary.exit_status == "interrupted":
        raise KeyboardInterrupt
    return summary.measured

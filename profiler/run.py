"""The whole job of ``python -m profiler.sweep`` as one call: :func:`sweep_to_map`.

:func:`sweep_to_map` opens the bench a :class:`~profiler.plan.SweepConfig` names, builds the
plan for the tester's geometry, checks it against the bench before anything is powered,
opens (or resumes) the BER map, and runs :func:`~profiler.engine.run_sweep` with the map
writer and the progress bar (:class:`ProgressBar`) subscribed to its documents.  Every
failure a caller can do something about -- a bad setting, a bench, link, instrument or
tester that fails, a map that belongs to another sweep or is locked, a file that cannot be
written -- is one :class:`SweepError` with a one-line message, so callers (the pipeline)
need not know the lower layers' error classes.

Example::

    from profiler import SweepConfig, sweep_to_map

    path = sweep_to_map(SweepConfig(vdd_v=[1.35, 1.2], rows="0:8", out="s.h5"), progress=False)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import IO, Any, Callable, Iterable

from firmware_bridge.link import LinkError
from profiler.engine import Subscriber, SweepPlan, check_patterns, check_plan, run_sweep, sweep_metadata
from profiler.plan import MAX_PLAN_POINTS, PlanError, SweepConfig, build_plan
from profiler.storage import LockError, MapError, MapWriter
from softmc_host.bench import Bench, BenchError
from softmc_host.instruments import InstrumentError
from softmc_host.session import TesterError
from softmc_host.timing import TimingError

__all__ = ["SweepError", "ProgressBar", "sweep_to_map"]

logger = logging.getLogger(__name__)

# What the layers below raise for a bad setting, a failing bench or an unusable map file.
_LOWER_ERRORS = (PlanError, MapError, LockError, BenchError, InstrumentError, LinkError, TesterError, TimingError)


class SweepError(ValueError):
    """A sweep that cannot run or could not finish: bad configuration, bench, link, instrument,
    tester or map file (the message is one line and names the problem)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))


class ProgressBar:
    """A subscriber that shows a progress bar (tqdm): points done, rate, ETA, the last point's BER.

    Parameters
    ----------
    enabled : bool
        False: show nothing (the subscriber does nothing).
    file : file, optional
        Where the bar goes (default standard error).
    """

    def __init__(self, enabled: bool = True, file: IO[str] | None = None) -> None:
        self.enabled = enabled
        self.file = file
        self.bar: Any = None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if name == "start":
            from tqdm import tqdm

            self.bar = tqdm(total=doc["total"], initial=doc["skipped"], unit="pt", dynamic_ncols=True,
                            file=self.file if self.file is not None else sys.stderr)
        elif name == "point" and self.bar is not None:
            trefi = doc["settings"].get("trefi_ms")
            refresh = "" if trefi is None else f" tREFW {trefi:g} ms"
            self.bar.set_postfix_str(f"{doc['key'][:40]}{refresh} BER {doc['data'].ber:.1e}")
            self.bar.update(1)
        elif name == "stop" and self.bar is not None:
            self.bar.close()
            self.bar = None


def _os_message(exc: OSError) -> str:
    return f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}"


def sweep_to_map(
    config: SweepConfig,
    *,
    progress: bool = True,
    max_points: int = MAX_PLAN_POINTS,
    subscribers: Iterable[Subscriber] = (),
    stop_requested: Callable[[], bool] | None = None,
) -> Path:
    """Run a sweep into its BER map (``config.out``), resuming the map if it holds part of it.

    Parameters
    ----------
    config : SweepConfig
        The sweep: bench (``config.bench``: a bench file, tester URL, ``emu://`` or
        ``replay://`` address), settings, output map.
    progress : bool
        Show a progress bar on standard error.
    max_points : int
        Refuse a plan of more points than this (counted before it is built).
    subscribers : iterable of callables
        More subscribers of the run's documents (``subscriber(name, doc)``; see
        :mod:`profiler.engine`), called after the map writer and the progress bar.
    stop_requested : callable, optional
        Asked before each point; True stops the run there (as Ctrl-C does).

    Returns
    -------
    Path
        The map (``config.out``), holding every point of the plan.

    Raises
    ------
    SweepError
        One line: an invalid setting, a plan outside the bench's limits (refused before
        anything is set or written), a bench, link, instrument or tester failure, a map that
        belongs to another sweep or is being written by another process, or a file that
        cannot be written.
    KeyboardInterrupt
        The run was interrupted (Ctrl-C, or ``stop_requested``): the supply is back at
        nominal, the measured points are in the map, and the same call resumes it.
    """
    try:
        build_plan(config, max_points)  # a bad setting is refused before the bench is opened
    except PlanError as exc:
        raise SweepError(str(exc)) from None
    writer: MapWriter | None = None
    try:
        with Bench.open(config.bench) as bench:
            plan = SweepPlan.from_config(config, banks=bench.tester.banks, rows=bench.tester.rows,
                                         max_points=max_points)
            check_plan(plan.points, bench)  # before anything is powered or written
            check_patterns(plan.patterns, plan.rowset, bench)
            writer = MapWriter(config.out, sweep_metadata(plan, bench), plan.identity)
            done = writer.open()
            if writer.damaged is not None:
                logger.warning("%s was damaged (interrupted during a write): moved to %s, rebuilt from the journal",
                               config.out, writer.damaged)
            if done:
                recovered = writer.recovered_from_journal
                logger.info("resuming %s: %d of %d points already measured%s", config.out, len(done), len(plan),
                            f" ({recovered} recovered from the journal)" if recovered else "")
            summary = run_sweep(plan, bench, [writer, ProgressBar(progress), *subscribers], skip=done,
                                stop_requested=stop_requested)
    except KeyboardInterrupt:
        raise
    except _LOWER_ERRORS as exc:
        raise SweepError(str(exc)) from None
    except OSError as exc:
        raise SweepError(_os_message(exc)) from None
    finally:
        if writer is not None:
            writer.finish(complete=False)  # the lock, if the stop document did not release it
    if summary.exit_status == "interrupted":
        raise KeyboardInterrupt
    logger.debug("%s: %d points (%d measured now in %.1f s); supply at nominal", config.out, summary.total,
                summary.measured, summary.elapsed_s)
    return Path(config.out)

"""``python -m profiler.campaign``: one sweep plan on many benches, one BER map per DIMM, and the population view.

Examples::

    python -m profiler.campaign --bench "emu://C?seed=1..20" --vdd 1.35,1.1 --banks 0 --rows sample:8 -o camp/
    python -m profiler.campaign --benches lab-dimms.txt --config sweep.toml -o camp/ --jobs 4
    python -m profiler.campaign --bench "emu://A?seed=1..10" --bench "emu://B?seed=1..10" --vdd 1.35:1.0:-0.05 \\
        -o camp/ --executor dask://sched:8786
    python -m profiler.campaign summarize camp/          # rebuild the summary from the maps alone

The plan is given as to ``python -m profiler.sweep`` (the same flags and ``--config`` file;
:func:`profiler.sweep.config_from_args`), the benches with ``--bench`` (repeatable) and/or
``--benches FILE`` (one per line, ``#`` comments).  A bench is a bench file, a tester URL or
a bench address; ``A..B`` (ASCII integers, ``A <= B``) in it stands for every integer from A
to B, so ``emu://C?seed=1..20`` is 20 emulated vendor-C DIMMs (:func:`expand_benches`).

Every bench gets its own map, ``DIR/<name>.h5`` (:func:`map_names`: ``C-seed01.h5`` for
``emu://C?seed=1``, the file stem for a bench file), written by
:func:`profiler.run.sweep_to_map`, so each map resumes on its own: a rerun of the same
command skips the complete maps without opening their benches and resumes the partial ones.
One task per bench (a bench appears once in a campaign: one sweep per tester at a time);
the tasks run serially in this process or through any :class:`concurrent.futures.Executor`
(:func:`run_campaign`), each task opening its own bench.  A bench that fails is reported and
does not stop the others.  On a Dask cluster, ``--pin`` makes each bench a worker resource
named like its map: the bench runs only on a worker started with ``dask worker SCHEDULER
--resources "NAME=1"`` (the machine its tester is wired to), one sweep at a time
(``docs/scaling.md``).

After the sweeps, :func:`summarize` writes ``DIR/summary.csv`` (per DIMM and setting: the
fraction of 64-byte lines with at least one bit error), ``DIR/spread.csv`` (per vendor and
setting: min, median, max, mean and standard deviation over the DIMMs), ``DIR/benches.csv``
(per bench: its status) and ``DIR/spread.png``.  ``DIR/campaign.json`` keeps each bench's last
outcome.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import time
import traceback
import urllib.parse
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from profiler.plan import MAX_PLAN_POINTS, PlanError, SweepConfig, build_plan, identity
from profiler.run import SweepError, sweep_to_map
from profiler.executors import resolve_executor
from profiler.sweep import _int_arg, _StopFlag
from profiler.sweep import _parser as _sweep_parser  # the sweep's own flags, shared (same package)
from profiler.sweep import config_from_args, dry_run
from softmc_host.bench import BenchError, bench_config_from_table, load_bench_file
from softmc_host.cli import configure_logging, fail
from softmc_host.files import read_json, write_json, write_text
from softmc_host.schemes import has_bench_scheme, has_tester_scheme, pyserial_schemes, url_scheme

__all__ = [
    "CampaignError",
    "BenchTask",
    "BenchResult",
    "CampaignSummary",
    "MAX_BENCHES",
    "LINE_BYTES",
    "SETTINGS",
    "expand_benches",
    "read_bench_list",
    "check_bench",
    "map_names",
    "plan_campaign",
    "run_bench",
    "worker_initializer",
    "run_campaign",
    "line_fractions",
    "spread",
    "summarize",
    "main",
]

logger = logging.getLogger(__name__)

#: Most benches one campaign may have (after ranges are expanded); a bigger one is a typo.
MAX_BENCHES = 1000
#: The unit of the line fractions: a 64-byte cache line (one DDR3 burst of a 64-bit DIMM).
LINE_BYTES = 64
#: The point settings a DIMM's error curve is taken over (patterns and repetitions are merged).
SETTINGS = ("temp_c", "vdd_v", "trcd_ns", "trp_ns", "tras_ns", "trefi_ms")
#: Files of the campaign directory other than the maps.
STATE_FILE = "campaign.json"
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

_RANGE_RE = re.compile(r"(?<![0-9.])([0-9]+)\.\.([0-9]+)(?![0-9.])")
_MAX_RANGE_DIGITS = 18
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._]+")
_MAX_NAME = 80


class CampaignError(ValueError):
    """A campaign that cannot start: a bad bench list, range, directory or plan (one line)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))


def _short(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit - 20]}...{shown[-12:]} ({len(text)} chars)"


# Benches ----------------------------------------------------------------------------------------


def expand_benches(specs: Iterable[str], max_benches: int = MAX_BENCHES) -> list[str]:
    """Expand the ``A..B`` ranges of bench specs, in order; refuse duplicates and oversized lists.

    ``A..B`` (ASCII digits on both sides, not part of a longer number) stands for A, A+1, ..., B;
    a start written with leading zeros keeps its width (``01..12`` gives ``01``, ..., ``12``).
    Several ranges in one spec give every combination (the first range outermost).

    Parameters
    ----------
    specs : iterable of str
        Bench files, tester URLs or bench addresses, e.g. ``emu://C?seed=1..20``.
    max_benches : int
        Most benches the expansion may give, counted before anything is expanded.

    Returns
    -------
    list of str
        The benches, each once.

    Raises
    ------
    CampaignError
        A range that runs backwards (``5..2``), a malformed one in an address's query
        (``seed=1..``), more than ``max_benches`` benches, a bench listed twice, or none.
    """
    expanded: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip():
            raise CampaignError(f"a bench must be a non-empty string, got {_short(str(spec))}")
        spec = spec.strip()
        matches = list(_RANGE_RE.finditer(spec))
        query = spec.partition("?")[2]
        if ".." in _RANGE_RE.sub("", query):
            raise CampaignError(f"bench {_short(spec)}: a range is START..END with two integers (e.g. seed=1..20)")
        choices: list[list[str]] = []
        count = 1
        for m in matches:
            start_text, end_text = m.group(1), m.group(2)
            if len(start_text) > _MAX_RANGE_DIGITS or len(end_text) > _MAX_RANGE_DIGITS:
                raise CampaignError(f"bench {_short(spec)}: range {m.group(0)[:50]} has numbers of more than "
                                    f"{_MAX_RANGE_DIGITS} digits")
            start, end = int(start_text), int(end_text)
            if start > end:
                raise CampaignError(f"bench {_short(spec)}: range {start_text}..{end_text} runs backwards "
                                    "(START..END needs START <= END)")
            count *= end - start + 1
            if len(expanded) + count > max_benches:
                raise CampaignError(f"bench {_short(spec)}: range {start_text}..{end_text} makes the campaign more "
                                    f"than {max_benches:,} benches")
            width = len(start_text) if start_text.startswith("0") and len(start_text) > 1 else 0
            choices.append([str(v).zfill(width) for v in range(start, end + 1)])
        if len(expanded) + count > max_benches:
            raise CampaignError(f"the campaign has more than {max_benches:,} benches")
        for combo in itertools.product(*choices):
            pieces, last = [], 0
            for m, value in zip(matches, combo):
                pieces += [spec[last:m.start()], value]
                last = m.end()
            bench = "".join(pieces) + spec[last:]
            if bench in seen:
                raise CampaignError(f"bench {_short(bench)} is listed twice (one sweep per bench)")
            seen.add(bench)
            expanded.append(bench)
    if not expanded:
        raise CampaignError("no benches: give --bench SPEC (repeatable) or --benches FILE")
    return expanded


def read_bench_list(path: str | Path) -> list[str]:
    """The benches of a list file: one per line, blank lines and ``#`` comments skipped (ranges not expanded).

    Raises
    ------
    CampaignError
        The file cannot be read or is not UTF-8 text.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise CampaignError(f"cannot read the bench list {_short(str(path))}: {reason}") from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def check_bench(spec: str) -> None:
    """Check a bench without opening it: a bench file is read, a bench address parsed by its plug-in.

    A tester URL of a known scheme (``socket://``, a pySerial or plug-in scheme) is accepted as
    it is (it is reached only when the sweep runs); a spec without a scheme must be an existing
    file or device.

    Raises
    ------
    CampaignError
        A bench file that is missing or malformed, a bench address its plug-in refuses
        (``emu://Z``: unknown profile), an unknown scheme, or a path that does not exist.
    """
    scheme = url_scheme(spec)
    try:
        if scheme is not None and has_bench_scheme(scheme):
            bench_config_from_table({"tester": {"url": spec}}, spec)
        elif spec.endswith(".toml") or (scheme is None and Path(spec).is_file()):
            load_bench_file(spec)
        elif scheme is not None:
            if not (has_tester_scheme(scheme) or scheme in pyserial_schemes()):
                raise CampaignError(f"unknown bench {_short(spec)}: no tester or bench scheme {scheme}://")
        elif not Path(spec.partition("?")[0]).exists():
            raise CampaignError(f"unknown bench {_short(spec)}: not a bench file, bench address, tester URL or device")
    except BenchError as exc:
        raise CampaignError(str(exc)) from None


def _base_name(spec: str) -> str:
    """The map name of one bench before collisions are resolved."""
    scheme = url_scheme(spec)
    if scheme in ("emu", "replay"):
        parts = urllib.parse.urlsplit(spec)
        if scheme == "emu":
            head = (parts.netloc + parts.path).strip("/") or "B"
        else:
            head = "replay-" + Path(spec[len("replay://"):].partition("?")[0]).stem
        bits = [head]
        for key, value in urllib.parse.parse_qsl(parts.query):
            bits.append(f"seed{int(value):02d}" if key == "seed" and re.fullmatch("[0-9]{1,20}", value) else f"{key}{value}")
        name = "-".join(bits)
    elif scheme is None and (spec.endswith(".toml") or Path(spec).is_file()):
        name = Path(spec).stem
    else:
        name = spec
    name = _NAME_CHARS.sub("-", name).strip("-.")
    return (name or "bench")[:_MAX_NAME]


def map_names(benches: Sequence[str]) -> list[str]:
    """A map name per bench, deterministic and unique within the campaign (no ``.h5``).

    ``emu://C?seed=1`` -> ``C-seed01``, ``emu://B?seed=3&temp_c=70`` -> ``B-seed03-temp_c70``
    a bench file -> its stem, ``replay://m.h5?seed=2`` ->
    ``replay-m-seed02``, any other URL -> its characters other than letters, digits and ``.``
    ``_`` turned into ``-``.  Names that would collide get ``-`` and the first 8 hex digits of the
    SHA-1 of their spec appended.
    """
    base = [_base_name(b) for b in benches]
    counts: dict[str, int] = {}
    for name in base:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    names = [name if counts[name.lower()] == 1 else f"{name}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"
             for name, spec in zip(base, benches)]
    if len({n.lower() for n in names}) != len(names):  # two identical specs: expand_benches refuses them
        raise CampaignError("two benches have the same map name; list each bench once")
    return names


# Tasks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchTask:
    """One bench's sweep: the plan with ``config.bench`` and ``config.out`` set (picklable)."""

    name: str
    config: SweepConfig
    max_points: int = MAX_PLAN_POINTS


@dataclass
class BenchResult:
    """What one bench's task did.

    ``status`` is ``complete`` (the map holds the whole plan now), ``skipped`` (it already did;
    the bench was not opened), ``failed`` (``message`` says why) or ``interrupted``.
    ``stored_before`` points were in the map when the task started, ``measured`` were measured
    by it, ``total`` is the plan's size.  ``host`` is where the task ran (``hostname:pid``; on a
    cluster, the worker process), recorded in ``campaign.json``.
    """

    name: str
    bench: str
    map: str
    status: str
    total: int = 0
    stored_before: int = 0
    measured: int = 0
    elapsed_s: float = 0.0
    message: str = ""
    host: str = ""


def plan_campaign(config: SweepConfig, benches: Sequence[str], out_dir: str | Path,
                  max_points: int = MAX_PLAN_POINTS) -> list[BenchTask]:
    """The tasks of a campaign: ``config`` on every bench, into ``out_dir/<name>.h5``.

    Bench files are given as absolute paths, so that a task finds them from any working
    directory (a cluster worker's); the map's identity holds the path so written.

    Raises
    ------
    CampaignError
        A bad plan (:class:`~profiler.plan.PlanError`'s message), bench or map name.
    """
    try:
        build_plan(config, max_points)
    except PlanError as exc:
        raise CampaignError(str(exc)) from None
    for bench in benches:
        check_bench(bench)
    out_dir = Path(out_dir).absolute()
    resolved = [os.path.abspath(b) if url_scheme(b) is None and Path(b).is_file() else b for b in benches]
    return [BenchTask(name, replace(config, bench=bench, out=str(out_dir / f"{name}.h5")), max_points)
            for name, bench in zip(map_names(benches), resolved)]


def _normalized(doc: Any) -> Any:
    return json.loads(json.dumps(doc, sort_keys=True, default=str))


def _stored_points(config: SweepConfig, max_points: int) -> tuple[int, bool]:
    """(complete points of the plan in ``config.out``, whether the map is finished and matches the plan).

    Finished: the map exists with the plan's identity, has no journal or lock beside it, and
    holds every point of the plan.  Anything unreadable counts as not finished (the sweep
    then says what is wrong).
    """
    from profiler.storage import BerMap, MapError

    path = Path(config.out)
    if not path.exists():
        return 0, False
    try:
        ber_map = BerMap(path)
        keys = set(ber_map.keys())
    except (MapError, OSError):
        return 0, False
    wanted = {p.key for p in build_plan(config, max_points)}
    stored = len(keys & wanted)
    side = [path.with_name(path.name + suffix) for suffix in (".journal", ".lock")]
    finished = (stored == len(wanted) and ber_map.meta.get("identity") == _normalized(identity(config))
                and not any(p.exists() for p in side))
    return stored, finished


class _WorkerStop:
    """In a worker process of the local pool: SIGINT / SIGTERM ask its running sweep to stop after its point.

    Installed by :func:`worker_initializer`; without it ``requested`` stays False.
    """

    requested = False

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        cls.requested = True


def worker_initializer() -> None:
    """Initializer of a campaign's worker processes: a Ctrl-C (which a terminal sends to the whole
    process group) makes the worker's running sweep stop after its point instead of killing the
    worker (and an idle worker ignores it)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _WorkerStop.handle)


class _Counter:
    """A sweep subscriber: the points the map held at the start and those measured since."""

    def __init__(self) -> None:
        self.skipped = 0
        self.measured = 0

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self.skipped = int(doc["skipped"])
        elif name == "point":
            self.measured += 1


def run_bench(task: BenchTask, stop_requested: Callable[[], bool] | None = None) -> BenchResult:
    """Run one bench's sweep into its map (resuming it); never raises for a failing bench.

    A map that already holds the whole plan is not touched and its bench not opened
    (``skipped``).  Otherwise :func:`profiler.run.sweep_to_map` opens the bench, resumes the
    map and measures the missing points.  This is the function a campaign's executor runs: a
    module-level function of picklable arguments.  ``stop_requested`` (for a run in this
    process) is asked before each point, as :func:`~profiler.run.sweep_to_map` does: True stops
    the sweep there (``interrupted``; the map keeps its points).
    """
    config = task.config
    started = time.monotonic()
    result = BenchResult(task.name, config.bench, config.out, "failed", host=f"{socket.gethostname()}:{os.getpid()}")
    try:
        result.total = len(build_plan(config, task.max_points))
        stored, finished = _stored_points(config, task.max_points)
        result.stored_before = stored
        if finished:
            result.status = "skipped"
            return result
        counter = _Counter()

        def stop() -> bool:
            return _WorkerStop.requested or (stop_requested is not None and stop_requested())

        try:
            sweep_to_map(config, progress=False, max_points=task.max_points, subscribers=[counter],
                         stop_requested=stop)
            result.status = "complete"
        except KeyboardInterrupt:
            if _stored_points(config, task.max_points)[1]:
                result.status = "complete"  # the interrupt came after the last point
            else:
                result.status = "interrupted"
                result.message = "interrupted; rerun the campaign to resume"
        result.stored_before, result.measured = counter.skipped, counter.measured
    except (SweepError, PlanError) as exc:
        result.message = str(exc)
    except Exception as exc:  # noqa: BLE001 - one bench's unexpected failure must not stop the campaign
        # where it was raised, since the traceback stays on the worker that ran the bench
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
        result.message = f"{type(exc).__name__}: {' '.join(str(exc).split())}{where}"
        logger.warning("bench %s failed", task.name, exc_info=True)
    finally:
        result.elapsed_s = time.monotonic() - started
    return result


def _load_state(out_dir: Path) -> dict[str, Any]:
    path = out_dir / STATE_FILE
    if not path.is_file():
        return {"benches": {}}
    try:
        doc = read_json(path, "campaign state", CampaignError)
    except CampaignError:
        return {"benches": {}}
    return doc if isinstance(doc, dict) and isinstance(doc.get("benches"), dict) else {"benches": {}}


def _save_state(out_dir: Path, state: dict[str, Any], results: Iterable[BenchResult]) -> None:
    for r in results:
        state["benches"][r.name] = asdict(r)
    write_json(out_dir / STATE_FILE, state)


def run_campaign(
    config: SweepConfig,
    benches: Sequence[str],
    out_dir: str | Path,
    *,
    executor: Executor | None = None,
    max_points: int = MAX_PLAN_POINTS,
    on_result: Callable[[BenchResult], None] | None = None,
    summary: bool = True,
    stop_requested: Callable[[], bool] | None = None,
    max_in_flight: int | None = None,
    pin: bool = False,
) -> list[BenchResult]:
    """Run one sweep plan on every bench, one map per bench in ``out_dir``; then summarise.

    Parameters
    ----------
    config : SweepConfig
        The plan (``bench`` and ``out`` are ignored: every task gets its own).
    benches : sequence of str
        Bench files, tester URLs or bench addresses, ranges already expanded
        (:func:`expand_benches`).
    out_dir : path
        The campaign directory (created).
    executor : concurrent.futures.Executor, optional
        Runs :func:`run_bench` per bench (one task per bench; ``executor.submit``).  None: one
        after the other in this process.  The caller owns it (it is not shut down here).
    max_points : int
        Refuse a plan of more points than this.
    on_result : callable, optional
        Called with each :class:`BenchResult` as it arrives (in completion order).
    summary : bool
        Write the summary files (:func:`summarize`) at the end.
    stop_requested : callable, optional
        Asked before each point of a serial run and every half second with an executor: True
        stops the campaign.  Serially, the running sweep stops after its point; with an
        executor, the benches not started are cancelled and the running ones finish (a
        terminal's Ctrl-C also reaches local worker processes, whose sweeps then stop after
        their point).  Then KeyboardInterrupt is raised.
    max_in_flight : int, optional
        With an executor: submit at most this many tasks at a time (the next when one ends),
        so that a stop leaves nothing queued; None submits every task at once (a cluster's
        scheduler then places them).
    pin : bool
        Pin every bench to the Dask workers that offer it: the task of the bench whose map is
        ``NAME.h5`` needs the worker resource ``{NAME: 1}`` (a worker started with ``dask worker
        ... --resources "NAME=1"``, on the machine the tester is wired to; it then runs one sweep
        of that bench at a time).  Needs a :class:`~profiler.executors.DaskExecutor`; every
        bench to run must be offered by a connected worker.

    Returns
    -------
    list of BenchResult
        One per bench, in the order of ``benches`` (only those that ran, when stopped).

    Raises
    ------
    CampaignError
        A bad plan, bench, or a directory that cannot be created; pinning without a Dask
        executor or with a bench no worker offers; nothing has run then.
    KeyboardInterrupt
        Interrupted: the finished results are in ``campaign.json``, every map keeps its
        points, and the same call resumes.
    """
    if pin and not (executor is not None and callable(getattr(executor, "submit_on", None))):
        raise CampaignError("pinning benches to workers needs the Dask executor (--executor dask://HOST:PORT)")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CampaignError(f"cannot create the campaign directory {_short(str(out))}: {exc.strerror or exc}") from None
    tasks = plan_campaign(config, benches, out, max_points)
    state = _load_state(out)
    state["plan_points"] = len(build_plan(config, max_points))
    by_name: dict[str, BenchResult] = {}
    futures: dict[Future[BenchResult], BenchTask] = {}

    def done(result: BenchResult) -> None:
        by_name[result.name] = result
        _save_state(out, state, [result])
        if on_result is not None:
            on_result(result)

    to_run = []
    for task in tasks:  # finished maps are skipped here: no task, no worker, no bench
        stored, finished = _stored_points(task.config, max_points)
        if finished:
            done(BenchResult(task.name, task.config.bench, task.config.out, "skipped", total=state["plan_points"],
                             stored_before=stored))
        else:
            to_run.append(task)
    if pin and to_run:
        missing = executor.missing_resources({t.name: 1 for t in to_run})  # type: ignore[union-attr]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            raise CampaignError(f"no worker offers bench {shown}: start one on its machine with "
                                f"dask worker SCHEDULER --resources \"{missing[0]}=1\"")
    try:
        if executor is None:
            for task in to_run:
                result = run_bench(task, stop_requested)
                done(result)
                if result.status == "interrupted" or (stop_requested is not None and stop_requested()):
                    raise KeyboardInterrupt
        else:
            queue, stopping = list(to_run), False

            def top_up() -> None:
                while queue and not stopping and (max_in_flight is None or len(futures) < max_in_flight):
                    task = queue.pop(0)
                    if pin:
                        future = executor.submit_on({task.name: 1}, run_bench, task)  # type: ignore[attr-defined]
                    else:
                        future = executor.submit(run_bench, task)
                    futures[future] = task

            top_up()
            while futures:
                finished, _ = wait(set(futures), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    task = futures.pop(future)
                    if future.cancelled():
                        continue
                    try:
                        result = future.result()
                    except Exception as exc:  # noqa: BLE001 - a worker that died, a task the executor lost
                        result = BenchResult(task.name, task.config.bench, task.config.out, "failed",
                                             message=f"the executor lost the task: {type(exc).__name__}: {exc}"[:400])
                    done(result)
                if not stopping and stop_requested is not None and stop_requested():
                    stopping = True
                    for future in futures:
                        future.cancel()
                top_up()
            if stopping or any(r.status == "interrupted" for r in by_name.values()):
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        for future in futures:
            future.cancel()
        raise
    if summary:
        summarize(out)
    return [by_name[t.name] for t in tasks if t.name in by_name]


# Summary ----------------------------------------------------------------------------------------


def _setting(attrs: dict[str, Any], name: str) -> float | None:
    value = attrs.get(name)
    if value is None or not isinstance(value, (int, float)) or math.isnan(float(value)):
        return None
    return float(value)


def line_fractions(path: str | Path, line_bytes: int = LINE_BYTES) -> list[dict[str, Any]]:
    """Per setting of one map: the fraction of ``line_bytes`` lines with at least one bit error.

    A line is ``line_bytes`` consecutive bytes of a row (bytes ``k*line_bytes`` to
    ``(k+1)*line_bytes - 1``; the last line of a row may be shorter when ``row_bytes`` is not a
    multiple).  The points of one setting (every :data:`SETTINGS` value equal; the data patterns
    and repetitions) are merged: a line counts as erroneous when any of them flipped one of its
    bits.  The lines are those of the rows measured (``rows``, the same at every point).

    Error positions are exact unless a point was truncated (``errors_truncated``: more flips
    than ``max_error_positions``).  Then ``error_lines`` counts the lines seen in the stored
    positions (a lower bound) and ``error_lines_max`` adds, per row whose positions are
    incomplete, its unstored flips (at most the row's lines): an upper bound; ``exact`` is
    False.

    Returns
    -------
    list of dict
        One per setting, in plan order: the :data:`SETTINGS` (None where the sweep did not set
        one), ``points``, ``patterns`` (``+``-joined), ``lines``, ``error_lines``,
        ``error_lines_max``, ``line_fraction``, ``line_fraction_max``, ``exact``, ``bits``,
        ``flips`` and ``ber``.

    Raises
    ------
    profiler.storage.MapError
        A malformed map.
    """
    from profiler.storage import BerMap

    ber_map = BerMap(path)
    n_rows = int(ber_map.geometry["rows"])
    row_bits = ber_map.row_bits
    line_bits = line_bytes * 8
    per_row = -(-row_bits // line_bits)
    groups: dict[tuple[float | None, ...], dict[str, Any]] = {}
    for key in ber_map.keys():
        p = ber_map.point(key)
        settings = tuple(_setting(p.attrs, name) for name in SETTINGS)
        g = groups.setdefault(settings, {"points": 0, "patterns": [], "rows": [], "lines": [], "missing": {},
                                         "bits": 0, "flips": 0})
        g["points"] += 1
        if p.attrs["pattern"] not in g["patterns"]:
            g["patterns"].append(p.attrs["pattern"])
        codes = p.rows[:, 0].astype(np.int64) * n_rows + p.rows[:, 1].astype(np.int64)
        g["rows"].append(codes)
        e_codes = p.errors["bank"].astype(np.int64) * n_rows + p.errors["row"].astype(np.int64)
        g["lines"].append(np.unique(e_codes * per_row + p.errors["bit"].astype(np.int64) // line_bits))
        flips = p.flips_0to1.astype(np.int64) + p.flips_1to0.astype(np.int64)
        g["bits"] += p.bits
        g["flips"] += int(flips.sum())
        if p.attrs.get("errors_truncated"):
            order = np.argsort(codes)
            stored = np.bincount(order[np.searchsorted(codes, e_codes, sorter=order)], minlength=codes.size)
            for code, gap in zip(codes[flips > stored], (flips - stored)[flips > stored]):
                g["missing"][int(code)] = g["missing"].get(int(code), 0) + int(gap)
    out = []
    for settings, g in groups.items():
        rows = np.unique(np.concatenate(g["rows"]))
        lines = np.unique(np.concatenate(g["lines"]))
        seen_per_row = dict(zip(*np.unique(lines // per_row, return_counts=True)))
        extra = sum(min(per_row, int(seen_per_row.get(code, 0)) + gap) - int(seen_per_row.get(code, 0))
                    for code, gap in g["missing"].items())
        n_lines = int(rows.size) * per_row
        row = dict(zip(SETTINGS, settings))
        row.update(points=g["points"], patterns="+".join(g["patterns"]), lines=n_lines, error_lines=int(lines.size),
                   error_lines_max=int(lines.size) + extra, line_fraction=lines.size / n_lines,
                   line_fraction_max=(lines.size + extra) / n_lines, exact=not g["missing"], bits=g["bits"],
                   flips=g["flips"], ber=g["flips"] / max(1, g["bits"]))
        out.append(row)
    return out


def spread(dimm_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The population view: per vendor and setting, the spread of ``line_fraction`` over the DIMMs.

    Parameters
    ----------
    dimm_rows : sequence of dict
        Rows of ``summary.csv`` (:func:`line_fractions` rows with ``dimm`` and ``vendor``).

    Returns
    -------
    list of dict
        ``vendor``, the :data:`SETTINGS`, ``n_dimms``, ``dimms_with_errors``, ``min``,
        ``median``, ``max``, ``mean``, ``std`` (population standard deviation, ``ddof=0``) of
        the DIMMs' ``line_fraction``, and ``exact`` (every DIMM's fraction exact); sorted by
        vendor, then the settings (VDD descending).
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in dimm_rows:
        groups.setdefault((r["vendor"], *(r[s] for s in SETTINGS)), []).append(r)
    out = []
    for key, rows in groups.items():
        values = np.array([float(r["line_fraction"]) for r in rows])
        row: dict[str, Any] = {"vendor": key[0], **dict(zip(SETTINGS, key[1:]))}
        row.update(n_dimms=len(rows), dimms_with_errors=int((values > 0).sum()), min=float(values.min()),
                   median=float(np.median(values)), max=float(values.max()), mean=float(values.mean()),
                   std=float(values.std()), exact=all(bool(r["exact"]) for r in rows))
        out.append(row)
    return sorted(out, key=_sort_key)


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    def num(v: Any, sign: float = 1.0) -> float:
        return -math.inf if v is None else sign * float(v)

    return (str(row.get("vendor", "")), str(row.get("dimm", "")), num(row["temp_c"]), num(row["trcd_ns"], -1),
            num(row["trp_ns"], -1), num(row["tras_ns"], -1), num(row["trefi_ms"]), num(row["vdd_v"], -1))


@dataclass
class CampaignSummary:
    """What :func:`summarize` wrote and found."""

    dimm_rows: list[dict[str, Any]]
    spread_rows: list[dict[str, Any]]
    bench_rows: list[dict[str, Any]]
    files: list[Path]

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The benches whose status is not ``complete``."""
        return [r for r in self.bench_rows if r["status"] != "complete"]


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else (repr(r[k]) if isinstance(r[k], float) else r[k])
                         for k in columns})
    return buf.getvalue()


def _planned(meta: dict[str, Any]) -> int | None:
    """The plan size of a map's recorded configuration (None when it cannot be rebuilt)."""
    config = meta.get("config")
    if not isinstance(config, dict):
        return None
    try:
        known = {f.name for f in fields(SweepConfig)}
        return len(build_plan(SweepConfig(**{k: v for k, v in config.items() if k in known}), 10**12))
    except (PlanError, TypeError, ValueError):
        return None


DIMM_COLUMNS = ("dimm", "vendor", "seed", "bench", *SETTINGS, "points", "patterns", "lines", "error_lines",
                "error_lines_max", "line_fraction", "line_fraction_max", "exact", "bits", "flips", "ber")
SPREAD_COLUMNS = ("vendor", *SETTINGS, "n_dimms", "dimms_with_errors", "min", "median", "max", "mean", "std", "exact")
BENCH_COLUMNS = ("dimm", "vendor", "bench", "map", "status", "points", "planned", "message")


def summarize(out_dir: str | Path, *, plot: bool = True) -> CampaignSummary:
    """Rebuild the campaign summary from the maps in ``out_dir`` (no bench is opened).

    Reads every ``*.h5`` of the directory that is a BER map and ``campaign.json`` (each bench's
    last outcome), and writes ``summary.csv`` (:func:`line_fractions` per DIMM, with
    ``dimm``, ``vendor`` -- the emulated profile, or ``hardware`` -- ``seed`` and ``bench``),
    ``spread.csv`` (:func:`spread`), ``benches.csv`` (per bench: ``complete``, ``partial``,
    ``failed``, ``interrupted`` or ``unreadable``, with the points stored and planned and
    the failure) and ``spread.png`` (when there is a point and ``plot``).

    Raises
    ------
    CampaignError
        ``out_dir`` is not a directory.
    """
    from profiler.storage import BerMap, MapError

    out = Path(out_dir)
    if not out.is_dir():
        raise CampaignError(f"campaign directory {_short(str(out))} does not exist")
    state = _load_state(out)
    recorded = state["benches"]
    dimm_rows: list[dict[str, Any]] = []
    bench_rows: list[dict[str, Any]] = []
    for path in sorted(out.glob("*.h5")):
        name = path.stem
        last = recorded.get(name, {})
        try:
            ber_map = BerMap(path)
            rows = line_fractions(path)
        except (MapError, OSError) as exc:
            bench_rows.append({"dimm": name, "vendor": "", "bench": last.get("bench", ""), "map": path.name,
                               "status": "unreadable", "message": " ".join(str(exc).split())})
            continue
        dimm = ber_map.meta.get("dimm", {})
        vendor = str(dimm.get("profile", "unknown")) if isinstance(dimm, dict) else "unknown"
        seed = dimm.get("seed", "") if isinstance(dimm, dict) else ""
        config = ber_map.meta.get("config", {})
        bench = config.get("bench", "") if isinstance(config, dict) else ""
        for r in rows:
            r.update(dimm=name, vendor=vendor, seed=seed, bench=bench)
        dimm_rows.extend(rows)
        planned = _planned(ber_map.meta)
        stored = sum(r["points"] for r in rows)
        status = "complete" if planned is not None and stored >= planned else "partial"
        if last.get("status") in ("failed", "interrupted") and status != "complete":
            status = last["status"]
        bench_rows.append({"dimm": name, "vendor": vendor, "bench": bench or last.get("bench", ""), "map": path.name,
                           "status": status, "points": stored, "planned": planned,
                           "message": last.get("message", "") if status != "complete" else ""})
    listed = {r["dimm"] for r in bench_rows}
    for name, last in sorted(recorded.items()):
        if name not in listed and isinstance(last, dict):
            bench_rows.append({"dimm": name, "vendor": "", "bench": last.get("bench", ""), "map": "",
                               "status": last.get("status", "failed") if last.get("status") != "complete" else "missing",
                               "points": 0, "planned": last.get("total"), "message": last.get("message", "")})
    dimm_rows.sort(key=_sort_key)
    spread_rows = spread(dimm_rows)
    files = [write_text(out / "summary.csv", _csv_text(dimm_rows, DIMM_COLUMNS)),
             write_text(out / "spread.csv", _csv_text(spread_rows, SPREAD_COLUMNS)),
             write_text(out / "benches.csv", _csv_text(bench_rows, BENCH_COLUMNS))]
    if plot and dimm_rows:
        files.append(plot_spread(dimm_rows, spread_rows, out / "spread.png"))
    return CampaignSummary(dimm_rows, spread_rows, bench_rows, files)


def plot_spread(dimm_rows: Sequence[dict[str, Any]], spread_rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Draw the spread: one panel per vendor, line fraction (log) against the most swept setting.

    Each DIMM is a small dot; the median over the DIMMs a line, the min..max range a band; one
    colour per combination of the other settings.  DIMMs without an erroneous line sit on a
    dotted floor at half of one line in the largest DIMM sample, drawn hollow.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x_name = max(SETTINGS, key=lambda s: (len({r[s] for r in dimm_rows}), s == "vdd_v"))
    others = [s for s in SETTINGS if s != x_name]
    vendors = sorted({r["vendor"] for r in spread_rows})
    floor = 0.5 / max(int(r["lines"]) for r in dimm_rows)
    fig = Figure(figsize=(6.4, 3.6 * len(vendors)), constrained_layout=True)
    FigureCanvasAgg(fig)
    colors = matplotlib.colormaps["tab10"]
    units = {"temp_c": "C", "vdd_v": "V", "trcd_ns": "ns", "trp_ns": "ns", "tras_ns": "ns", "trefi_ms": "ms"}
    for i, vendor in enumerate(vendors):
        ax = fig.add_subplot(len(vendors), 1, i + 1)
        combos = sorted({tuple(r[s] for s in others) for r in spread_rows if r["vendor"] == vendor},
                        key=lambda c: tuple(-math.inf if v is None else v for v in c))
        for j, combo in enumerate(combos):
            color = colors(j % 10)
            srows = sorted((r for r in spread_rows if r["vendor"] == vendor and tuple(r[s] for s in others) == combo
                            and r[x_name] is not None), key=lambda r: r[x_name])
            drows = [r for r in dimm_rows if r["vendor"] == vendor and tuple(r[s] for s in others) == combo
                     and r[x_name] is not None]
            if not srows:
                continue
            xs = np.array([r[x_name] for r in srows])
            label = ", ".join(f"{s} {v:g}" for s, v in zip(others, combo) if v is not None and len(
                {r[s] for r in dimm_rows}) > 1) or "all DIMMs"
            ax.fill_between(xs, [max(r["min"], floor) for r in srows], [max(r["max"], floor) for r in srows],
                            color=color, alpha=0.2, linewidth=0)
            ax.plot(xs, [max(r["median"], floor) for r in srows], "-", color=color, marker="o",
                    label=f"median, min..max: {label} (n={max(r['n_dimms'] for r in srows)})")
            hit = [r for r in drows if r["line_fraction"] > 0]
            zero = [r for r in drows if r["line_fraction"] <= 0]
            ax.plot([r[x_name] for r in hit], [r["line_fraction"] for r in hit], ".", color=color, alpha=0.6, ms=4)
            ax.plot([r[x_name] for r in zero], [floor] * len(zero), "o", mfc="none", color=color, alpha=0.6, ms=4)
        ax.axhline(floor, color="0.6", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel(f"{x_name} ({units[x_name]})")
        ax.set_ylabel(f"fraction of {LINE_BYTES}-byte lines with errors")
        ax.set_title(f"vendor {vendor}: per-DIMM spread (hollow on the floor: no erroneous line)")
        if x_name == "vdd_v":
            ax.invert_xaxis()
        ax.legend(fontsize="small")
    from softmc_host.files import atomic_write

    return atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png"))


# Command ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m profiler.campaign",
        description="Run one sweep plan (the flags of python -m profiler.sweep) on many benches: one BER map per "
        "DIMM in DIR, resumable, in parallel; then write the population summary. "
        "'python -m profiler.campaign summarize DIR' rebuilds the summary from the maps alone.",
        parents=[_sweep_parser()],
        conflict_handler="resolve",
    )
    p.add_argument("--bench", action="append", default=None, metavar="SPEC",
                   help="a bench (file, tester URL, emu://PROFILE?seed=N, replay://MAP.h5); repeatable; "
                   "A..B stands for every integer from A to B: emu://C?seed=1..20 is 20 DIMMs")
    p.add_argument("--benches", metavar="FILE", help="a file listing benches, one per line (# comments; ranges allowed)")
    p.add_argument("-o", "--out", metavar="DIR", help="campaign directory: one map per DIMM, summary files (required)")
    p.add_argument("--jobs", type=_int_arg, default=None, metavar="N",
                   help="benches swept at once (default 1: one after the other in this process)")
    p.add_argument("--executor", metavar="SPEC",
                   help="local (processes, --jobs of them), serial, dask://HOST:PORT (default: serial, or local "
                   "with --jobs > 1)")
    p.add_argument("--pin", action="store_true",
                   help="with dask://: run each bench only on a worker offering the resource named like its map "
                   "(dask worker SCHEDULER --resources \"NAME=1\" on the tester's machine), one sweep at a time")
    p.add_argument("--summarize-only", action="store_true", help="rebuild the summary of DIR; open no bench")
    p.add_argument("--no-plot", action="store_true", help="do not draw spread.png")
    p.add_argument("--max-benches", type=_int_arg, default=MAX_BENCHES, help=f"most benches (default {MAX_BENCHES})")
    p.add_argument("--dry-run", action="store_true", help="print the benches, their maps and the plan; touch nothing")
    p.add_argument("--live-plot", help=argparse.SUPPRESS)
    return p


def _summarize_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m profiler.campaign summarize",
                                description="Rebuild DIR/summary.csv, spread.csv, benches.csv and spread.png from the "
                                "maps in DIR (no bench is opened).")
    p.add_argument("dir", metavar="DIR", help="the campaign directory")
    p.add_argument("--no-plot", action="store_true", help="do not draw spread.png")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more")
    return p


def resolve_campaign_executor(spec: str | None, jobs: int | None) -> tuple[Executor | None, bool]:
    """The executor of ``--executor SPEC`` / ``--jobs N``: (executor or None for serial, owned).

    ``serial`` (or no spec and at most one job) is None: the benches run one after the other in
    this process, where a stop request reaches the running sweep.  Anything else goes to
    :func:`profiler.executors.resolve_executor` (with ``workers=N``, default the CPU count; a
    local pool's workers start with :func:`worker_initializer`).

    Raises
    ------
    CampaignError
        A negative job count, or a spec that cannot be resolved (the resolver's message).
    """
    if jobs is not None and jobs < 0:
        raise CampaignError(f"--jobs must be 0 or more, got {jobs}")
    if spec is None:
        spec = "local" if jobs is not None and jobs > 1 else "serial"
    if spec == "serial":
        return None, False  # in this process: a stop request reaches the running sweep
    try:
        return resolve_executor(spec, workers=jobs if jobs else (os.cpu_count() or 1),
                                initializer=worker_initializer)
    except (ValueError, ImportError, RuntimeError, OSError, TypeError) as exc:
        raise CampaignError(str(exc) or type(exc).__name__) from None


def _in_flight(spec: str | None, jobs: int | None) -> int | None:
    """Tasks kept submitted at once: the local pool's workers (nothing queued behind them); all for a cluster."""
    if spec is None or spec == "local":
        return jobs if jobs else (os.cpu_count() or 1)
    return None


def _print_result(result: BenchResult, index: int, count: int) -> None:
    what = {"skipped": "already complete", "complete": f"complete, {result.measured} of {result.total} points "
            f"measured now", "interrupted": f"interrupted after {result.measured} points",
            "failed": f"FAILED: {result.message}"}[result.status]
    print(f"[{index}/{count}] {result.name}: {what} ({result.elapsed_s:.1f} s)", flush=True)


def _print_summary(summary: CampaignSummary, out: Path) -> None:
    for path in summary.files:
        print(path)
    vdds = sorted({r["vdd_v"] for r in summary.spread_rows if r["vdd_v"] is not None}, reverse=True)
    if vdds:
        print(f"\n{'vendor':<8} {'VDD (V)':>8} {'DIMMs':>5} {'min':>9} {'median':>9} {'max':>9}  (fraction of lines "
              "with errors)")
        for r in summary.spread_rows:
            if r["vdd_v"] is not None:
                print(f"{r['vendor']:<8} {r['vdd_v']:8.3f} {r['n_dimms']:5d} {r['min']:9.2e} {r['median']:9.2e} "
                      f"{r['max']:9.2e}")
    bad = summary.failed
    if bad:
        print(f"\n{len(bad)} of {len(summary.bench_rows)} benches are not complete (see {out / 'benches.csv'}):")
        for r in bad:
            print(f"  {r['dimm']}: {r['status']}{': ' + r['message'] if r['message'] else ''}")


def _summarize_main(argv: Sequence[str]) -> int:
    args = _summarize_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        summary = summarize(args.dir, plot=not args.no_plot)
    except CampaignError as exc:
        return fail(str(exc))
    if not args.quiet:
        _print_summary(summary, Path(args.dir))
    return EXIT_FAILED if summary.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the campaign command: 0 when every bench is complete, 1 when one failed, 2 on bad input, 130 interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["summarize"]:
        return _summarize_main(argv[1:])
    args = _parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    if args.out is None:
        return fail("give the campaign directory: -o DIR")
    out = Path(args.out)
    if args.summarize_only:
        try:
            summary = summarize(out, plot=not args.no_plot)
        except CampaignError as exc:
            return fail(str(exc))
        if not args.quiet:
            _print_summary(summary, out)
        return EXIT_FAILED if summary.failed else 0
    if args.live_plot:
        return fail("--live-plot draws one sweep; a campaign draws DIR/spread.png at the end")
    try:
        specs = list(args.bench or [])
        if args.benches:
            specs += read_bench_list(args.benches)
        bench_flag, args.bench = args.bench, None
        config = config_from_args(args)
        args.bench = bench_flag
        if not specs and args.config and config.bench != SweepConfig().bench:
            specs = [config.bench]  # the config file's one bench
        benches = expand_benches(specs, args.max_benches)
        tasks = plan_campaign(config, benches, out, args.max_points)
        if args.pin and not (args.executor or "").startswith("dask://"):
            raise CampaignError("--pin places benches on Dask workers: give --executor dask://HOST:PORT")
        if args.dry_run:
            for task in tasks:
                pinned = f"  (worker resource {task.name}=1)" if args.pin else ""
                print(f"{task.name + '.h5':<28} {task.config.bench}{pinned}")
            print(f"{len(tasks)} benches into {out}/\n")
            return dry_run(tasks[0].config, args.max_points)
        executor, owned = resolve_campaign_executor(args.executor, args.jobs)
    except (CampaignError, PlanError) as exc:
        return fail(str(exc))
    count = len(benches)
    finished = [0]

    def show(result: BenchResult) -> None:
        finished[0] += 1
        if not args.quiet or result.status == "failed":
            _print_result(result, finished[0], count)

    started = time.monotonic()
    stop = _StopFlag("starting no more benches; waiting for the running ones" if executor is not None
                     else "stopping after this point (again to stop now)")
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        results = run_campaign(config, benches, out, executor=executor, max_points=args.max_points, on_result=show,
                               summary=False, stop_requested=stop,
                               max_in_flight=_in_flight(args.executor, args.jobs), pin=args.pin)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every map in {out} keeps its points; rerun the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except CampaignError as exc:
        return fail(str(exc))
    finally:
        if owned and executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    elapsed = time.monotonic() - started
    summary = summarize(out, plot=not args.no_plot)
    failed = [r for r in results if r.status != "complete" and r.status != "skipped"]
    if not args.quiet:
        print(f"\n{count} benches in {elapsed:.1f} s: {sum(r.status == 'complete' for r in results)} swept, "
              f"{sum(r.status == 'skipped' for r in results)} already complete, {len(failed)} failed")
        _print_summary(summary, out)
    return EXIT_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())

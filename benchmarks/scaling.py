"""Scaling out (issue #17): probes per second over workers, each executor's cost per task, a campaign's wall time.

What it measures, on this machine, in one run (ratios are between runs of the same script, so a
noisy machine moves them less than the absolute figures):

1. **Probes per second** (``probes``): the characterization's unit of work, one error-injecting
   evaluation of a network (:func:`boosting.characterization._run_probe`: LeNet, ``--images``
   28x28 digits test images, int8 weights and IFMs under a uniform BER of 1e-3), run ``--tasks``
   times with distinct error seeds serially in this process, through the local process pool
   (``--executor local``: ``ProcessPoolExecutor``, spawn, one torch thread per worker) and
   through a Dask ``LocalCluster`` (``--executor dask://``: the same ``DaskExecutor`` a remote
   scheduler gets; one single-thread worker process per worker), for every worker count of
   ``--workers``.  Each task is submitted as the characterization submits it: on the pool it
   names the workload's file (written once, loaded once per worker), on Dask it refers to the
   scattered copy.  The start-up (processes, imports, the workload's first transfer) is timed
   apart from the steady state.  Each row's ``x serial`` is against the same probes run in this
   process just before it (``serial/s``), so a machine whose speed drifts between rows (a shared
   VM) moves the ratio less than the rates.  Every executor's accuracies must equal the serial ones, seed
   by seed: a mismatch fails the run.  The network is left untrained (seed 0): a probe's cost
   does not depend on the weights' values.
2. **Overhead per task** (``overhead``): with one worker, the mean time per probe in latency mode
   (submit one, wait for it) and throughput mode (submit all, then wait) against the same probes
   run in this process in the same round (``--rounds``, medians printed), the round trip of an empty task (``abs(-1)``) and what each task
   carries; ``local-pkl`` is the pool with the workload pickled into every task, as before the
   workload file (torch's multiprocessing reducers pass each tensor as a shared-memory file
   descriptor, one round trip per tensor per task).
3. **Campaign** (``campaign``): ``python -m profiler.campaign``'s work
   (:func:`profiler.campaign.run_campaign`) on ``--dimms`` emulated vendor-C DIMMs
   (``emu://C?seed=1..N``; two VDD points, bank 0, 4 sampled rows), serially, on the local pool
   and on a Dask LocalCluster, each with 2 workers; the summaries and every map's counts and
   error positions must be identical between them all.

Every Dask row is measured twice: ``dask`` with Dask's defaults, ``dask*`` with worker processes
started without the ``MALLOC_TRIM_THRESHOLD_=65536`` Dask's nanny puts in their environment (with
it, glibc maps and unmaps every large buffer, and a torch probe runs about 1.5x slower).

The machine's core count bounds every speed-up: on the two-core CI machine, more than two
workers only oversubscribe it (the table shows what that costs).  Results script, not a test;
``--quick`` is a smoke run (well under a minute).

    python benchmarks/scaling.py [--quick] [--workers 1,2,4] [--tasks 48] [--images 360] [--dimms 20]
                                 [--rounds 3] [--sections probes,overhead,campaign] [--out DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import functools
import logging
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from boosting.characterization import (  # noqa: E402
    NetworkWorkload,
    _run_from_file,
    _run_probe,
    _run_shared,
    _WorkloadFile,
)
from boosting.data import load_dataset  # noqa: E402
from boosting.inference import ErrorSpec  # noqa: E402
from boosting.networks import get_network  # noqa: E402
from errormodels.models import get_model  # noqa: E402
from profiler.executors import DaskExecutor, _pickled_size_bytes  # noqa: E402

SECTIONS = ("probes", "overhead", "campaign")
PROBE_BER = 1e-3
DASK_STAR = "dask*: workers without Dask's default MALLOC_TRIM_THRESHOLD_=65536 (docs/scaling.md)"


class UsageError(ValueError):
    """A bad command-line value (reported as one ``error:`` line)."""


def parse_counts(text: str, what: str) -> list[int]:
    """``"1,2,4"`` as ``[1, 2, 4]``: distinct integers >= 1, in the order given."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not counts or any(c < 1 for c in counts) or len(set(counts)) != len(counts):
        raise UsageError(f"{what} must be distinct integers >= 1, got {text!r}")
    return counts


def parse_sections(text: str) -> list[str]:
    """The sections named in ``text`` (comma-separated), in the script's order."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise UsageError(f"unknown section {unknown[0] if unknown else text!r} (choose from {', '.join(SECTIONS)})")
    return [s for s in SECTIONS if s in names]


def make_workload(images: int, batch_size: int = 256) -> NetworkWorkload:
    """LeNet (untrained, seed 0) on the first ``images`` images of the digits test split."""
    net = get_network("lenet", seed=0).eval()
    x, y = load_dataset("digits", split="test", image_size=28).tensors
    if images > len(y):
        raise UsageError(f"--images must be at most {len(y)} (the digits test split), got {images}")
    return NetworkWorkload(net, x[:images].clone(), y[:images].clone(), batch_size=batch_size)


def probe_spec(seed: int) -> ErrorSpec:
    """int8, uniform errors at :data:`PROBE_BER`."""
    return ErrorSpec(get_model("uniform", ber=PROBE_BER), fmt="int8", seed=seed)


def local_pool(workers: int) -> ProcessPoolExecutor:
    """What ``--executor local`` gives, each worker with one torch thread (as Dask's workers have)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=functools.partial(torch.set_num_threads, 1))


class Pool:
    """A local process pool, its probes submitted as the characterization submits them.

    ``per_task=False``: the workload is written to a file once and every task names it (each worker
    loads it once); ``per_task=True``: the workload is pickled into every task (torch passes each
    tensor as a shared-memory file descriptor), for comparison.
    """

    def __init__(self, workers: int, per_task: bool = False) -> None:
        self.executor = local_pool(workers)
        self.per_task = per_task
        self.file: Optional[_WorkloadFile] = None

    def submit(self, work: NetworkWorkload, spec: ErrorSpec, seed: int) -> Future:
        if self.per_task:
            return self.executor.submit(_run_probe, work, spec, seed)
        if self.file is None:
            self.file = _WorkloadFile.write(work, work.fingerprint())
        return self.executor.submit(_run_from_file, _run_probe, self.file, spec, seed)

    def sent(self, work: NetworkWorkload) -> str:
        """What one probe task carries."""
        if self.per_task:
            tensors = sum(1 for _ in work.net.parameters()) + sum(1 for _ in work.net.buffers()) + 2
            return f"{len(ForkingPickler.dumps(work)) / 1024:.1f} KiB + {tensors} fd"
        return f"{len(ForkingPickler.dumps((_run_probe, self.file))) / 1024:.1f} KiB (the file's name)"

    def close(self) -> None:
        self.executor.shutdown()
        if self.file is not None:
            self.file.remove()


NANNY_ENV = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class DaskCluster:
    """A ``LocalCluster`` of single-thread worker processes with a :class:`DaskExecutor` on it, its probes
    submitted as the characterization submits them (each worker thread evaluates its own copy).

    ``trim=False`` starts the workers without the ``MALLOC_TRIM_THRESHOLD_=65536`` that Dask's nanny
    puts in their environment by default (``distributed.nanny.pre-spawn-environ``; the setting
    ``docs/scaling.md`` recommends for worker machines).  The nanny also leaves its variables in
    this process's environment, where the local pools started later would inherit them: they are
    put back as they were.
    """

    def __init__(self, workers: int, trim: bool = True) -> None:
        import dask
        import distributed

        saved = {k: os.environ.get(k) for k in NANNY_ENV}
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
        if not trim:
            environ["MALLOC_TRIM_THRESHOLD_"] = None
        try:
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                self.cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                        dashboard_address=":0", silence_logs=False)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.client = distributed.Client(self.cluster, set_as_default=False)
        self.client.wait_for_workers(workers)
        self.executor = DaskExecutor(self.client)

    def submit(self, work: NetworkWorkload, spec: ErrorSpec, seed: int) -> Future:
        return self.executor.submit(_run_shared, _run_probe, work, spec, seed)

    def sent(self, work: NetworkWorkload) -> str:
        return f"a key ({self.executor.scattered} scatter)"

    def close(self) -> None:
        self.executor.shutdown()
        self.client.close()
        self.cluster.close()


def dask_available() -> bool:
    """Whether the optional ``distributed`` package is installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def executors(workers: int, with_dask: bool, per_task: bool = False) -> Iterator[tuple[str, Callable[[], Any]]]:
    """``(label, factory)`` for the local pool (and with ``per_task`` the pool that pickles the workload into
    every task) and, if installed, Dask with ``workers`` workers (``dask*``: without Dask's
    ``MALLOC_TRIM_THRESHOLD_``, see :class:`DaskCluster`)."""
    yield "local", lambda: Pool(workers)
    if per_task:
        yield "local-pkl", lambda: Pool(workers, per_task=True)
    if with_dask:
        yield "dask", lambda: DaskCluster(workers)
        yield "dask*", lambda: DaskCluster(workers, trim=False)


def run_all(handle: Any, work: NetworkWorkload, spec: ErrorSpec, seeds: Sequence[int]) -> list[tuple[float, int]]:
    """Every probe of ``seeds`` submitted at once; results in seed order."""
    futures = [handle.submit(work, spec, s) for s in seeds]
    return [f.result() for f in futures]


def run_serial(work: NetworkWorkload, spec: ErrorSpec, seeds: Sequence[int]) -> list[tuple[float, int]]:
    """Every probe of ``seeds`` in this process."""
    return [_run_probe(work, spec, s) for s in seeds]


def check_equal(label: str, got: list[tuple[float, int]], want: list[tuple[float, int]]) -> None:
    """Raise if an executor's accuracies differ from the serial ones."""
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    if bad or len(got) != len(want):
        raise RuntimeError(f"{label}: results differ from the serial run at task {bad[:5]}")


def _serial_rate(work: NetworkWorkload, spec: ErrorSpec, seeds: Sequence[int]) -> tuple[float, list[tuple[float, int]]]:
    """Probes per second of ``seeds`` in this process, and the results."""
    t0 = time.perf_counter()
    results = run_serial(work, spec, seeds)
    return len(seeds) / (time.perf_counter() - t0), results


def section_probes(args: argparse.Namespace, work: NetworkWorkload, with_dask: bool) -> None:
    """Section 1: probes per second over worker counts, each row beside a serial run just before it."""
    print(f"== 1. probes per second: LeNet, {len(work.y)} images, int8, uniform BER {PROBE_BER:g}, "
          f"{args.tasks} probes")
    spec = probe_spec(args.seed)
    seeds = [args.seed * 100_000 + i for i in range(args.tasks)]
    warm = [10**9 + i for i in range(max(args.workers))]
    run_serial(work, spec, warm[:1])
    serial_rate, want = _serial_rate(work, spec, seeds)
    print(f"{'executor':<10}{'workers':>8}{'start-up s':>12}{'probes/s':>10}{'serial/s':>10}{'x serial':>10}"
          f"{'x 1 worker':>12}")
    print(f"{'serial':<10}{1:>8}{0.0:>12.2f}{serial_rate:>10.2f}{serial_rate:>10.2f}{1.0:>10.2f}{1.0:>12.2f}")
    one_worker: dict[str, float] = {}
    for n in args.workers:
        for label, factory in executors(n, with_dask):
            serial_rate, _ = _serial_rate(work, spec, seeds)  # the machine's speed just now
            t0 = time.perf_counter()
            handle = factory()
            try:
                run_all(handle, work, spec, warm[:n])  # processes up, torch imported, the workload sent
                startup_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                got = run_all(handle, work, spec, seeds)
                elapsed_s = time.perf_counter() - t0
            finally:
                handle.close()
            check_equal(f"{label} x{n}", got, want)
            rate = args.tasks / elapsed_s
            speedup = rate / serial_rate
            base = one_worker.setdefault(label, speedup)
            print(f"{label:<10}{n:>8}{startup_s:>12.2f}{rate:>10.2f}{serial_rate:>10.2f}{speedup:>10.2f}"
                  f"{speedup / base:>12.2f}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"serial/s: the same probes in this process just before each row; x 1 worker: x serial against the first "
          f"--workers count's\n{DASK_STAR}\nresults identical to the serial run, seed by seed; {cores} cores usable "
          f"here")


def _timed(fn: Callable[[], Any], repeat: int) -> float:
    """Mean seconds of ``fn()`` over ``repeat`` calls."""
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def section_overhead(args: argparse.Namespace, work: NetworkWorkload, with_dask: bool) -> None:
    """Section 2: what an executor adds to each task, with one worker; rounds interleave every executor with a
    serial run, and the medians over the rounds are printed."""
    print(f"== 2. overhead per task, one worker ({args.tasks} probes each way, median of {args.rounds} rounds)")
    spec = probe_spec(args.seed)
    seeds = [args.seed * 100_000 + i for i in range(args.tasks)]
    workload_bytes = _pickled_size_bytes(work)
    handles = {}
    try:
        for label, factory in executors(1, with_dask, per_task=True):
            handles[label] = handle = factory()
            run_all(handle, work, spec, seeds[:1])
            handle.executor.submit(abs, -1).result()
        run_serial(work, spec, seeds[:1])
        rows: dict[str, list[tuple[float, float, float, float]]] = {label: [] for label in handles}
        serial: list[float] = []
        for _ in range(args.rounds):
            serial_ms = 1e3 * _timed(lambda: run_serial(work, spec, seeds), 1) / len(seeds)
            serial.append(serial_ms)
            for label, handle in handles.items():
                it = iter(seeds)
                latency_ms = 1e3 * _timed(lambda h=handle, it=it: h.submit(work, spec, next(it)).result(), len(seeds))
                throughput_ms = 1e3 * _timed(lambda h=handle: run_all(h, work, spec, seeds), 1) / len(seeds)
                empty_ms = 1e3 * _timed(lambda h=handle: h.executor.submit(abs, -1).result(), max(20, len(seeds)))
                rows[label].append((latency_ms, latency_ms - serial_ms, throughput_ms, throughput_ms - serial_ms,
                                    empty_ms))
        sent = {label: handle.sent(work) for label, handle in handles.items()}
    finally:
        for handle in handles.values():
            handle.close()
    print(f"probe in this process: {statistics.median(serial):.2f} ms (rounds {min(serial):.1f}-{max(serial):.1f}); "
          f"the workload pickles to {workload_bytes / 1024:.1f} KiB")
    print(f"{'executor':<10}{'latency ms':>12}{'+ ms':>8}{'throughput ms':>15}{'+ ms':>8}{'empty task ms':>15}"
          f"  {'sent per probe'}")
    for label, values in rows.items():
        med = [statistics.median(column) for column in zip(*values)]
        print(f"{label:<10}{med[0]:>12.2f}{med[1]:>8.2f}{med[2]:>15.2f}{med[3]:>8.2f}{med[4]:>15.2f}  {sent[label]}")
    print("latency: submit one probe and wait; throughput: submit all, then wait; + ms: over the probe in this "
          "process in the same round;\nlocal: the workload in a file written once, loaded once per worker (what the "
          "characterization does);\nlocal-pkl: pickled into every task, its tensors as shared-memory file "
          "descriptors; dask: scattered once\n" + DASK_STAR)


def campaign_arrays(out_dir: Path) -> dict[str, Any]:
    """Every map's point counts and error positions, by map name."""
    from profiler.storage import BerMap

    arrays = {}
    for path in sorted(out_dir.glob("*.h5")):
        ber_map = BerMap(path)
        arrays[path.name] = {k: (p.flips_0to1.tolist(), p.flips_1to0.tolist(), p.errors.tobytes())
                             for k, p in ((k, ber_map.point(k)) for k in ber_map.keys())}
    return arrays


def section_campaign(args: argparse.Namespace, out_root: Path, with_dask: bool) -> None:
    """Section 3: a campaign serially, on the local pool and on Dask (2 workers each)."""
    from profiler.campaign import expand_benches, run_campaign
    from profiler.plan import SweepConfig

    plan = SweepConfig(vdd_v=[1.35, 1.1], banks="0", rows="sample:4")
    benches = expand_benches([f"emu://C?seed=1..{args.dimms}"])
    print(f"== 3. campaign: {len(benches)} emulated vendor-C DIMMs, VDD 1.35 and 1.1 V, bank 0, 4 sampled rows")
    print(f"{'executor':<10}{'workers':>8}{'wall s':>10}{'x serial':>10}{'s per DIMM':>12}")
    runs: list[tuple[str, Optional[Callable[[], Any]]]] = [("serial", None), ("local", lambda: Pool(2))]
    if with_dask:
        runs += [("dask", lambda: DaskCluster(2)), ("dask*", lambda: DaskCluster(2, trim=False))]
    reference: Optional[tuple[str, str, dict[str, Any]]] = None
    serial_s = 0.0
    for label, factory in runs:
        out_dir = out_root / f"campaign-{label.replace('*', '-notrim')}"
        shutil.rmtree(out_dir, ignore_errors=True)
        t0 = time.perf_counter()
        handle = factory() if factory else None
        try:
            results = run_campaign(plan, benches, out_dir, executor=handle.executor if handle else None)
        finally:
            if handle is not None:
                handle.close()
        wall_s = time.perf_counter() - t0
        failed = [r for r in results if r.status != "complete"]
        if failed:
            raise RuntimeError(f"{label}: bench {failed[0].name} {failed[0].status}: {failed[0].message}")
        serial_s = serial_s or wall_s
        workers = 1 if factory is None else 2
        print(f"{label:<10}{workers:>8}{wall_s:>10.2f}{serial_s / wall_s:>10.2f}{wall_s / len(benches):>12.2f}")
        outcome = ((out_dir / "summary.csv").read_text(), (out_dir / "spread.csv").read_text(),
                   campaign_arrays(out_dir))
        if reference is None:
            reference = outcome
        elif outcome != reference:
            raise RuntimeError(f"{label}: the campaign's summary or maps differ from the serial run")
    print(DASK_STAR)
    print("wall time includes the pool's or cluster's start-up; summaries and maps identical to the serial run")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; 0 on success, 2 on a bad argument (one ``error:`` line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: workers 1,2, few probes, 3 DIMMs")
    parser.add_argument("--workers", default=None, help="worker counts, comma-separated (default 1,2,4; quick 1,2)")
    parser.add_argument("--tasks", type=int, default=None, help="probes per measurement (default 48; quick 8)")
    parser.add_argument("--images", type=int, default=None, help="test images per probe (default 360; quick 100)")
    parser.add_argument("--dimms", type=int, default=None, help="DIMMs of the campaign (default 20; quick 3)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the overhead section (default 3; quick 1)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"which of {', '.join(SECTIONS)}")
    parser.add_argument("--out", default=None, help="directory for the campaign's maps (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0, help="root of the probes' error seeds")
    args = parser.parse_args(argv)
    try:
        args.workers = parse_counts(args.workers or ("1,2" if args.quick else "1,2,4"), "--workers")
        args.sections = parse_sections(args.sections)
        args.tasks = args.tasks if args.tasks is not None else (8 if args.quick else 48)
        args.images = args.images if args.images is not None else (100 if args.quick else 360)
        args.dimms = args.dimms if args.dimms is not None else (3 if args.quick else 20)
        args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
        for name in ("tasks", "images", "dimms", "rounds"):
            if getattr(args, name) < 1:
                raise UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")
        if args.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {args.seed}")
        work = make_workload(args.images) if {"probes", "overhead"} & set(args.sections) else None
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with_dask = dask_available()
    if with_dask:  # the clusters' INFO lines (start, close) would break up the tables
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if not with_dask:
        print("distributed is not installed: the Dask rows are left out (pip install -c constraints.txt -e '.[cluster]')")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like every worker: the serial rows are one core's work too
    start = time.perf_counter()
    temp = None
    try:
        if args.out is None:
            temp = tempfile.TemporaryDirectory(prefix="eden-scaling-")
            out_root = Path(temp.name)
        else:
            out_root = Path(args.out)
            out_root.mkdir(parents=True, exist_ok=True)
        if "probes" in args.sections:
            section_probes(args, work, with_dask)
        if "overhead" in args.sections:
            section_overhead(args, work, with_dask)
        if "campaign" in args.sections:
            section_campaign(args, out_root, with_dask)
    finally:
        torch.set_num_threads(threads)
        if temp is not None:
            temp.cleanup()
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

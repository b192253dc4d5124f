"""Error-tolerance characterization of a network (EDEN, MICRO 2019, Algorithms 2 and 3).

EDEN's second stage finds how many bit errors a network tolerates before its accuracy falls
below a goal, first for the whole network (coarse) and then per layer and data kind (fine).
This module holds the searches (:func:`coarse_characterize`, :func:`fine_characterize`), their
workloads and executors, and :func:`characterize_network`, which runs them on a network file
and returns the tolerance document (``docs/tolerance-format.md``); ``python -m
boosting.characterize`` is the command over it. It logs through :mod:`logging` and never prints.

Goal
----
``goal = baseline - max_drop``, where ``baseline`` is the clean accuracy (no injector; or a
value the caller gives) and ``max_drop`` an absolute accuracy drop (0.01 is one percentage
point). A probe (one error spec) **passes** when ``statistic >= goal``; ``statistic`` is

* ``"ci_low"`` (default, conservative): the lower bound of the confidence interval of the mean
  accuracy over the error seeds (Student's t over the per-seed accuracies with two or more
  seeds; Wilson's score interval over the samples with one seed, which is wide: with a single
  seed prefer ``"mean"`` or a larger ``max_drop``);
* ``"mean"``: the mean accuracy over the seeds.

The interval is :func:`boosting.inference.confidence_interval`, the one
:func:`boosting.inference.evaluate` uses.

Coarse (Algorithm 2): :func:`coarse_characterize`
-------------------------------------------------
The highest *uniform* BER (the same for every layer and kind: ``spec.model.ber``, no
overrides) that passes, searched on ``log10(BER)`` in ``[ber_min, ber_max]``:

1. probe ``ber_min``; if it fails the result is ``ber = 0.0`` (``found`` is False);
2. probe ``ber_max``; if it passes the result is ``ber_max``;
3. otherwise bisect: ``lo, hi = log10(ber_min), log10(ber_max)``; while ``hi - lo > tol``
   (decades) probe ``mid = (lo + hi) / 2`` and set ``lo = mid`` if it passes, ``hi = mid``
   if not. The result is ``10 ** lo``, the highest BER that passed.

If ``retrain`` is given, ``retrain(spec)`` is called in the calling process before each probe
(bounds included) with the probe's spec; it must update, in place, the network the workload
evaluates (error-aware retraining at that BER, e.g. :mod:`boosting.retrain`). Accuracy is then
assumed to be monotone only for the retrained network at each step, as in the paper.

Fine (Algorithm 3): :func:`fine_characterize`
---------------------------------------------
Per ``(layer, kind)`` with ``kind`` in ``("weight", "ifm")``, greedy, starting from
``start_ber`` (normally the coarse result, which must be > 0) for every key:

1. *sensitivity probe*: for every key, probe the start spec with only that key raised one step
   (``start_ber * factor``, clipped to ``ber_max``); its sensitivity is
   ``baseline - statistic`` (the accuracy lost). All these probes are submitted at once.
2. visit the keys in order of increasing sensitivity (ties: layer order, weight before ifm);
3. for the visited key, repeat at most ``max_steps`` times: candidate ``= current * factor``
   (clipped to ``ber_max``; stop if it does not grow); probe the current per-key BERs with this
   key at the candidate; if it passes, keep the candidate and go on; if it fails, **roll back**
   (keep the last passing BER; the probe is recorded with ``rolled_back=True``) and go to the
   next key.

Keys already visited keep their raised BERs while later keys are raised, so the final
assignment passed its last probe (or is the start assignment), and each BER is ``>= start_ber``.

Execution
---------
Every probe is split into one task per error seed, ``_run_probe(workload, spec, seed)``, a
picklable top-level call submitted to a :class:`concurrent.futures.Executor`: the seeds of a
probe (and all sensitivity probes) run in parallel, the searches themselves are sequential.
The default is a local ``ProcessPoolExecutor(max_workers=2)`` with the ``spawn`` start method
(forking a process whose torch thread pools are running can deadlock; created and shut down by
the call; the workload is pickled into each task, so it must be importable by the workers); :class:`SerialExecutor` runs tasks in the
calling process, deterministically (tests, small nets, debugging); a ``ThreadPoolExecutor``
also works. A workload is any picklable object with ``layers`` (layer names), ``clean()`` and
``__call__(spec, seed)`` returning ``(accuracy, n_samples)``; :class:`NetworkWorkload` is the
one for a real network on tensors.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import sys
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from boosting.inference import KINDS, Calibration, ErrorSpec, confidence_interval, evaluate, injectable_layers

__all__ = [
    "CharacterizeError",
    "STATISTICS",
    "Workload",
    "NetworkWorkload",
    "SerialExecutor",
    "Probe",
    "CoarseResult",
    "FineResult",
    "SEARCHES",
    "confidence_interval",
    "coarse_characterize",
    "fine_characterize",
    "characterize_network",
    "probe_line",
]

log = logging.getLogger(__name__)

STATISTICS = ("ci_low", "mean")
"""Statistics a probe's pass/fail decision can use."""

Key = tuple[str, str]
Progress = Callable[["Probe"], None]


class CharacterizeError(ValueError):
    """Bad search parameters."""


# ------------------------------------------------------------------------ workloads
class Workload(Protocol):
    """What the searches evaluate: picklable, with layer names, clean and erroneous accuracy."""

    layers: Sequence[str]

    def clean(self) -> tuple[float, int]:
        """Clean accuracy and the number of samples."""

    def __call__(self, spec: ErrorSpec, seed: int) -> tuple[float, int]:
        """Accuracy under ``spec`` with error seed ``seed``, and the number of samples."""


@dataclass
class NetworkWorkload:
    """A network evaluated on in-memory tensors with :func:`boosting.inference.evaluate`.

    Parameters
    ----------
    net : nn.Module
        The network (picklable; it travels to worker processes with each task).
    x, y : torch.Tensor
        Inputs ``(N, C, H, W)`` and labels ``(N,)``.
    batch_size : int
        Evaluation batch size.
    calibration : Calibration, optional
        Passed to :func:`~boosting.inference.evaluate` (required with mitigation).
    """

    net: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    batch_size: int = 256
    calibration: Optional[Calibration] = None

    @property
    def layers(self) -> list[str]:
        """Names of the network's injectable layers."""
        return [n for n, _ in injectable_layers(self.net)]

    def _loader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size, shuffle=False)

    def clean(self) -> tuple[float, int]:
        """Clean accuracy (no injector) and the number of samples."""
        r = evaluate(self.net, self._loader(), None)
        return r.mean, r.n_samples

    def __call__(self, spec: ErrorSpec, seed: int) -> tuple[float, int]:
        """Accuracy under ``spec`` with the single error seed ``seed``."""
        r = evaluate(self.net, self._loader(), spec, seeds=(seed,), calibration=self.calibration)
        return r.mean, r.n_samples


def _run_probe(workload: Workload, spec: Optional[ErrorSpec], seed: int) -> tuple[float, int]:
    """One task: the workload's accuracy under ``spec`` and ``seed`` (clean if ``spec`` is None)."""
    if spec is None:
        return workload.clean()
    return workload(spec, seed)


# ------------------------------------------------------------------------- executor
class SerialExecutor(Executor):
    """An executor running each task at submission, in the calling thread.

    Attributes
    ----------
    submitted : int
        Tasks submitted so far.
    """

    def __init__(self) -> None:
        self.submitted = 0
        self._shutdown = False
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` now; return a finished future with its result or exception."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self.submitted += 1
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future, like other executors
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse further tasks."""
        with self._lock:
            self._shutdown = True


# -------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Probe:
    """One evaluated error configuration.

    Attributes
    ----------
    stage : str
        ``"baseline"``, ``"coarse"``, ``"sensitivity"`` or ``"fine"``.
    ber : float
        The uniform BER (``spec.model.ber``).
    overrides : dict
        ``{(layer, kind): ber}`` of the spec.
    mean, ci_low, ci_high : float
        Mean accuracy over the seeds and its confidence interval.
    per_seed : tuple of float
        Accuracy under each seed.
    passed : bool
        Whether the decision statistic reached the goal (True for the baseline).
    key : tuple of str, optional
        The (layer, kind) this probe raised (sensitivity and fine stages).
    rolled_back : bool
        A failed fine step whose BER was rolled back.
    """

    stage: str
    ber: float
    overrides: dict[Key, float]
    mean: float
    ci_low: float
    ci_high: float
    per_seed: tuple[float, ...]
    passed: bool
    key: Optional[Key] = None
    rolled_back: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (overrides as ``[layer, kind, ber]`` lists)."""
        return {"stage": self.stage, "ber": self.ber,
                "overrides": [[k[0], k[1], v] for k, v in self.overrides.items()],
                "mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "per_seed": list(self.per_seed), "passed": self.passed,
                "key": list(self.key) if self.key is not None else None, "rolled_back": self.rolled_back}


@dataclass(frozen=True)
class CoarseResult:
    """Outcome of :func:`coarse_characterize`.

    Attributes
    ----------
    ber : float
        Highest uniform BER that passed (0.0 if even ``ber_min`` failed).
    found : bool
        Whether some probed BER passed.
    baseline, goal : float
        Clean accuracy and ``baseline - max_drop``.
    statistic : str
        Decision statistic (:data:`STATISTICS`).
    probes : tuple of Probe
        The baseline and every coarse probe, in order.
    """

    ber: float
    found: bool
    baseline: float
    goal: float
    statistic: str
    probes: tuple[Probe, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"ber": self.ber, "found": self.found, "baseline": self.baseline, "goal": self.goal,
                "statistic": self.statistic, "probes": [p.to_dict() for p in self.probes]}


@dataclass(frozen=True)
class FineResult:
    """Outcome of :func:`fine_characterize`.

    Attributes
    ----------
    bers : dict
        ``{(layer, kind): ber}``, every key ``>= start_ber``.
    start_ber : float
        The common starting BER.
    order : tuple of key
        Keys in the order they were raised (increasing sensitivity).
    sensitivity : dict
        ``{(layer, kind): accuracy lost}`` by the sensitivity probe.
    baseline, goal : float
        Clean accuracy and ``baseline - max_drop``.
    statistic : str
        Decision statistic.
    probes : tuple of Probe
        The baseline, sensitivity and fine probes, in order.
    """

    bers: dict[Key, float]
    start_ber: float
    order: tuple[Key, ...]
    sensitivity: dict[Key, float]
    baseline: float
    goal: float
    statistic: str
    probes: tuple[Probe, ...] = field(default=())

    def spec(self, base: ErrorSpec) -> ErrorSpec:
        """``base`` with the per-(layer, kind) BERs as overrides."""
        return replace(base, model=base.model.with_ber(self.start_ber), overrides=dict(self.bers))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (keys as ``[layer, kind, ...]`` lists)."""
        return {"bers": [[k[0], k[1], v] for k, v in self.bers.items()], "start_ber": self.start_ber,
                "order": [list(k) for k in self.order],
                "sensitivity": [[k[0], k[1], v] for k, v in self.sensitivity.items()],
                "baseline": self.baseline, "goal": self.goal, "statistic": self.statistic,
                "probes": [p.to_dict() for p in self.probes]}


# ---------------------------------------------------------------------- machinery
class _Runner:
    """Submits probes (one task per seed), aggregates them, decides, records."""

    def __init__(self, workload: Workload, executor: Optional[Executor], seeds: Sequence[int], max_drop: float,
                 statistic: str, confidence: float, baseline: Optional[float], progress: Optional[Progress]) -> None:
        if statistic not in STATISTICS:
            raise CharacterizeError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
        seeds = tuple(int(s) for s in seeds)
        if not seeds or any(s < 0 for s in seeds):
            raise CharacterizeError(f"give at least one non-negative error seed, got {seeds!r}")
        if not (isinstance(max_drop, (int, float)) and 0.0 <= max_drop <= 1.0):
            raise CharacterizeError(f"max_drop must be in [0, 1], got {max_drop!r}")
        if not 0.0 < confidence < 1.0:
            raise CharacterizeError(f"confidence must be in (0, 1), got {confidence!r}")
        self.workload = workload
        self.own = executor is None
        self.executor = (ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
                         if executor is None else executor)
        self.seeds = seeds
        self.statistic = statistic
        self.confidence = confidence
        self.progress = progress
        self.probes: list[Probe] = []
        try:
            if baseline is None:
                acc, _ = self.executor.submit(_run_probe, workload, None, 0).result()
                baseline = float(acc)
            self.baseline = float(baseline)
        except BaseException:
            self.close()
            raise
        self.goal = self.baseline - float(max_drop)
        self._record(Probe("baseline", 0.0, {}, self.baseline, self.baseline, self.baseline, (self.baseline,), True))

    def close(self) -> None:
        if self.own:
            self.executor.shutdown(wait=True)

    def _record(self, probe: Probe) -> Probe:
        self.probes.append(probe)
        if self.progress is not None:
            self.progress(probe)
        return probe

    def submit(self, spec: ErrorSpec) -> list[Future]:
        return [self.executor.submit(_run_probe, self.workload, spec, s) for s in self.seeds]

    def collect(self, stage: str, spec: ErrorSpec, futures: list[Future], key: Optional[Key] = None,
                rollback_on_fail: bool = False) -> Probe:
        results = [f.result() for f in futures]
        per_seed = tuple(float(a) for a, _ in results)
        mean, lo, hi = confidence_interval(per_seed, int(results[0][1]), self.confidence)
        passed = (lo if self.statistic == "ci_low" else mean) >= self.goal
        return self._record(Probe(stage, spec.model.ber, dict(spec.overrides), mean, lo, hi, per_seed, passed,
                                  key, rollback_on_fail and not passed))

    def probe(self, stage: str, spec: ErrorSpec, key: Optional[Key] = None, rollback_on_fail: bool = False) -> Probe:
        return self.collect(stage, spec, self.submit(spec), key, rollback_on_fail)


def _check_bounds(ber_min: float, ber_max: float) -> None:
    if not (0.0 < ber_min < ber_max <= 1.0):
        raise CharacterizeError(f"need 0 < ber_min < ber_max <= 1, got {ber_min!r}, {ber_max!r}")


def _uniform(base: ErrorSpec, ber: float) -> ErrorSpec:
    return replace(base, model=base.model.with_ber(ber), overrides={})


# ------------------------------------------------------------------------ searches
def coarse_characterize(workload: Workload, base: ErrorSpec, *, max_drop: float = 0.01,
                        ber_min: float = 1e-9, ber_max: float = 0.5, tol: float = 0.1,
                        seeds: Sequence[int] = (0, 1, 2), statistic: str = "ci_low", confidence: float = 0.95,
                        retrain: Optional[Callable[[ErrorSpec], None]] = None, baseline: Optional[float] = None,
                        executor: Optional[Executor] = None, progress: Optional[Progress] = None) -> CoarseResult:
    """Highest uniform BER whose accuracy stays within ``max_drop`` of the baseline (Algorithm 2).

    Parameters
    ----------
    workload : Workload
        What to evaluate (:class:`NetworkWorkload` or any object with ``layers``, ``clean()``
        and ``__call__(spec, seed)``); picklable if the executor uses processes.
    base : ErrorSpec
        Error model shape, format, mitigation, layout and seed; its BER and overrides are replaced.
    max_drop : float
        Tolerated absolute accuracy drop below the baseline.
    ber_min, ber_max : float
        Search bounds, ``0 < ber_min < ber_max <= 1``.
    tol : float
        Stop bisecting when the bracket is at most this wide in decades of BER.
    seeds : sequence of int
        Error seeds of every probe (one task each).
    statistic : {"ci_low", "mean"}
        Decision statistic (see the module docstring).
    confidence : float
        Confidence level of the interval.
    retrain : callable, optional
        ``retrain(spec) -> None`` called before each probe (see the module docstring).
    baseline : float, optional
        Clean accuracy; measured (one task) if None.
    executor : Executor, optional
        Where tasks run; default a local ``ProcessPoolExecutor(max_workers=2)`` (spawn), shut down on return.
    progress : callable, optional
        Called with every recorded :class:`Probe`.

    Returns
    -------
    CoarseResult
    """
    _check_bounds(ber_min, ber_max)
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise CharacterizeError(f"tol must be > 0, got {tol!r}")
    runner = _Runner(workload, executor, seeds, max_drop, statistic, confidence, baseline, progress)
    try:
        def passes(log_ber: float) -> bool:
            spec = _uniform(base, 10.0 ** log_ber)
            if retrain is not None:
                retrain(spec)
            return runner.probe("coarse", spec).passed

        lo, hi = math.log10(ber_min), math.log10(ber_max)
        if not passes(lo):
            ber, found = 0.0, False
        elif passes(hi):
            ber, found = ber_max, True
        else:
            while hi - lo > tol:
                mid = (lo + hi) / 2
                if passes(mid):
                    lo = mid
                else:
                    hi = mid
            ber, found = 10.0 ** lo, True
        return CoarseResult(ber, found, runner.baseline, runner.goal, statistic, tuple(runner.probes))
    finally:
        runner.close()


def fine_characterize(workload: Workload, base: ErrorSpec, start_ber: float, *, max_drop: float = 0.01,
                      factor: float = 2.0, max_steps: int = 20, ber_max: float = 0.5,
                      keys: Optional[Sequence[Key]] = None, seeds: Sequence[int] = (0, 1, 2),
                      statistic: str = "ci_low", confidence: float = 0.95, baseline: Optional[float] = None,
                      executor: Optional[Executor] = None, progress: Optional[Progress] = None) -> FineResult:
    """Per-(layer, kind) BERs raised greedily from ``start_ber`` within the accuracy goal (Algorithm 3).

    Parameters
    ----------
    workload : Workload
        What to evaluate (see :func:`coarse_characterize`).
    base : ErrorSpec
        Error model shape, format, mitigation, layout and seed; BER and overrides are replaced.
    start_ber : float
        Common starting BER, normally :attr:`CoarseResult.ber`; must be in ``(0, ber_max]``.
    max_drop : float
        Tolerated absolute accuracy drop below the baseline.
    factor : float
        Multiplicative step (> 1) of a key's BER.
    max_steps : int
        Most steps per key (>= 1).
    ber_max : float
        Ceiling of any BER (<= 1).
    keys : sequence of (layer, kind), optional
        Keys to raise; default every layer of ``workload.layers`` with each of ``("weight", "ifm")``.
    seeds, statistic, confidence, baseline, executor, progress
        As in :func:`coarse_characterize`.

    Returns
    -------
    FineResult
    """
    if not (isinstance(start_ber, (int, float)) and 0.0 < start_ber <= ber_max <= 1.0):
        raise CharacterizeError(f"need 0 < start_ber <= ber_max <= 1, got {start_ber!r}, {ber_max!r}")
    if not (isinstance(factor, (int, float)) and factor > 1.0):
        raise CharacterizeError(f"factor must be > 1, got {factor!r}")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise CharacterizeError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if keys is None:
        keys = [(layer, kind) for layer in workload.layers for kind in KINDS]
    keys = [tuple(k) for k in keys]
    bad = [k for k in keys if len(k) != 2 or k[1] not in KINDS]
    if bad or not keys or len(set(keys)) != len(keys):
        raise CharacterizeError(f"keys must be distinct (layer, 'weight' | 'ifm') pairs, got {keys!r}")
    start_ber = float(start_ber)
    runner = _Runner(workload, executor, seeds, max_drop, statistic, confidence, baseline, progress)
    try:
        bers: dict[Key, float] = {k: start_ber for k in keys}

        def spec_with(key: Key, ber: float) -> ErrorSpec:
            return replace(base, model=base.model.with_ber(start_ber), overrides={**bers, key: ber})

        step_up = min(start_ber * factor, ber_max)
        submitted = [(k, spec_with(k, step_up)) for k in keys]
        futures = [(k, s, runner.submit(s)) for k, s in submitted]  # all at once: parallel
        sensitivity = {}
        for k, s, fs in futures:
            p = runner.collect("sensitivity", s, fs, key=k)
            sensitivity[k] = runner.baseline - (p.ci_low if statistic == "ci_low" else p.mean)
        index = {k: i for i, k in enumerate(keys)}
        order = tuple(sorted(keys, key=lambda k: (sensitivity[k], index[k])))
        for k in order:
            for _ in range(max_steps):
                candidate = min(bers[k] * factor, ber_max)
                if candidate <= bers[k]:
                    break
                if runner.probe("fine", spec_with(k, candidate), key=k, rollback_on_fail=True).passed:
                    bers[k] = candidate
                else:
                    break
        return FineResult(bers, start_ber, order, sensitivity, runner.baseline, runner.goal, statistic,
                          tuple(runner.probes))
    finally:
        runner.close()


def probe_line(search: str, probe: Probe) -> str:
    """One line describing a recorded probe (search, stage, BER, raised key, accuracy, CI, pass/fail)."""
    key = ""
    if probe.key is not None:
        key = f" {probe.key[0]}.{probe.key[1]}={probe.overrides.get(probe.key, probe.ber):.2e}"
    status = "PASS" if probe.passed else ("fail, rolled back" if probe.rolled_back else "fail")
    return (f"{search:<6} {probe.stage:<11} BER {probe.ber:9.3e}{key:<34} acc {probe.mean:.4f} "
            f"[{probe.ci_low:.4f}, {probe.ci_high:.4f}]  {status}")


SEARCHES = ("coarse", "fine", "both")
"""What :func:`characterize_network` searches: the uniform BER, per-(layer, kind) BERs, or both."""


def _search_of(search: Optional[str], mode: Optional[str]) -> str:
    """The search asked for by ``search=`` or its old name ``mode=``."""
    if search is not None and mode is not None and search != mode:
        raise CharacterizeError(f"search={search!r} and mode={mode!r} disagree (mode is the old name of search)")
    chosen = search if search is not None else (mode if mode is not None else "coarse")
    if chosen not in SEARCHES:
        raise CharacterizeError(f"search must be coarse, fine or both, got {chosen!r}")
    return chosen


class _ProbeReport:
    """Logs every recorded probe, advances an optional bar, forwards to an optional callback."""

    def __init__(self, progress: Union[bool, Callable[[str, Probe], None], None]) -> None:
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm import tqdm

            self.bar = tqdm(desc="probes", unit="probe", leave=False, dynamic_ncols=True, file=sys.stderr)

    def __call__(self, search: str, probe: Probe) -> None:
        log.debug("%s", probe_line(search, probe))
        if self.bar is not None:
            self.bar.set_postfix_str(f"{search} BER {probe.ber:.1e} acc {probe.mean:.3f}", refresh=False)
            self.bar.update(1)
        if self.callback is not None:
            self.callback(search, probe)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def characterize_network(net_file: Any, spec: ErrorSpec, *, mode: Optional[str] = None, max_drop: float = 0.01,
                         seeds: Sequence[int] = (0, 1, 2), ber_min: float = 1e-7, ber_max: float = 0.1,
                         tol: float = 0.25, factor: float = 2.0, max_steps: int = 20,
                         start_ber: Optional[float] = None, statistic: str = "ci_low", confidence: float = 0.95,
                         retrain_epochs: int = 0, retrain_lr: float = 1e-3, workers: int = 2,
                         samples: Optional[int] = None, calib_samples: int = 512, data_dir: Any = None,
                         progress: Union[bool, Callable[[str, Probe], None], None] = None,
                         search: Optional[str] = None, executor: Optional[Executor] = None) -> dict[str, Any]:
    """Coarse and/or fine tolerance characterization of a network file; the tolerance document.

    Parameters
    ----------
    net_file : NetworkFile or str or Path
        The network (:func:`boosting.checkpoint.load_network`).
    spec : ErrorSpec
        Error model shape, format, mitigation and seed (its BER and overrides are searched).
    mode : {"coarse", "fine", "both"}, optional
        Old name of ``search`` (kept; the document's ``mode`` key holds the search).
    max_drop : float
        Tolerated absolute accuracy drop below the clean accuracy, in [0, 1].
    seeds : sequence of int
        Error seeds of every probe.
    ber_min, ber_max : float
        Coarse search bounds; ``ber_max`` is also the fine ceiling.
    tol : float
        Coarse resolution in decades of BER.
    factor : float
        Fine search step (> 1).
    max_steps : int
        Fine steps per key.
    start_ber : float, optional
        Fine start BER instead of the coarse result.
    statistic : {"ci_low", "mean"}
        Pass/fail statistic (:func:`coarse_characterize`).
    confidence : float
        Confidence level of the intervals.
    retrain_epochs : int
        With N > 0, before every coarse probe a copy of the network (the original weights)
        is retrained N epochs at the probe's spec on the training split (EDEN's Algorithm 2
        with boosting); the fine search then uses the network retrained at the coarse BER.
    retrain_lr : float
        Learning rate of those retrainings.
    workers : int
        Worker processes (spawn); 0 runs every evaluation in this process (:class:`SerialExecutor`).
        Ignored when ``executor`` is given.
    samples : int, optional
        Evaluate on the first N test images (default all).
    calib_samples : int
        Training images calibrating the mitigation ranges and IFM scales.
    data_dir : str or Path, optional
        Overrides the dataset directory stored in the network file.
    progress : bool or callable, optional
        ``True`` shows a tqdm bar of the probes on stderr; a callable is called as
        ``progress(search, probe)`` for every recorded probe (``search`` is coarse or fine).
        Every probe is also logged at DEBUG (logger ``boosting.characterization``).
    search : {"coarse", "fine", "both"}, optional
        What to search (default coarse). ``fine`` starts from ``start_ber`` if given, else runs
        the coarse search first (and the document then holds both).
    executor : concurrent.futures.Executor, optional
        Where the evaluations run (one task per probe and seed; the caller shuts it down).
        Default: ``workers`` spawned processes, or this process with ``workers=0``.

    Returns
    -------
    dict
        The tolerance document (``docs/tolerance-format.md``).

    Raises
    ------
    CharacterizeError
        Bad search parameters.
    CheckpointError
        An unreadable network file.
    """
    from pathlib import Path

    from boosting.checkpoint import NetworkFile, load_network
    from boosting.inference import calibrate
    from boosting.records import spec_to_dict
    from boosting.retrain import retrain as _retrain
    from softmc_host.files import sha256_file

    mode = _search_of(search, mode)
    if not (isinstance(workers, int) and workers >= 0):
        raise CharacterizeError(f"workers must be an integer >= 0, got {workers!r}")
    if not (isinstance(retrain_epochs, int) and retrain_epochs >= 0):
        raise CharacterizeError(f"retrain_epochs must be an integer >= 0, got {retrain_epochs!r}")
    if samples is not None and not (isinstance(samples, int) and samples >= 1):
        raise CharacterizeError(f"samples must be an integer >= 1, got {samples!r}")
    nf = net_file if isinstance(net_file, NetworkFile) else load_network(net_file)
    net = nf.net.eval()
    train = nf.load_split("train", root=data_dir)
    test = nf.load_split("test", root=data_dir)
    x, y = test.tensors
    if samples is not None:
        x, y = x[:samples], y[:samples]
    xc = train.tensors[0][:calib_samples]
    calibration = calibrate(net, DataLoader(TensorDataset(xc), batch_size=256), spec.fmt)
    workload = NetworkWorkload(net, x, y, calibration=calibration)
    original = {k: v.detach().clone() for k, v in net.state_dict().items()}
    retrain_hook = None
    if retrain_epochs > 0:
        def retrain_hook(probe_spec: ErrorSpec) -> None:
            workload.net.load_state_dict(original)
            _retrain(workload.net, train, probe_spec, epochs=retrain_epochs, lr=retrain_lr,
                     calibration=calibration, seed=0)
            workload.net.eval()

    own = executor is None
    if executor is None:
        executor = (SerialExecutor() if workers == 0 else
                    ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")))
    report = _ProbeReport(progress)
    log.debug("characterizing %s (%s): search %s, model %s, fmt %s, mitigation %s, %d samples, seeds %s",
              nf.path, nf.network, mode, spec.model.describe(), spec.fmt, spec.mitigation, len(y), list(seeds))
    coarse = fine = None
    try:
        common = dict(max_drop=max_drop, seeds=seeds, statistic=statistic, confidence=confidence, executor=executor)
        if mode in ("coarse", "both") or (mode == "fine" and start_ber is None):
            coarse = coarse_characterize(workload, spec, ber_min=ber_min, ber_max=ber_max, tol=tol,
                                         retrain=retrain_hook, progress=lambda p: report("coarse", p), **common)
        if mode in ("fine", "both"):
            start = start_ber if start_ber is not None else coarse.ber  # type: ignore[union-attr]
            if start > 0:
                if retrain_hook is not None:
                    retrain_hook(_uniform(spec, start))
                fine = fine_characterize(workload, spec, start, factor=factor, max_steps=max_steps,
                                         ber_max=ber_max, baseline=coarse.baseline if coarse else None,
                                         progress=lambda p: report("fine", p), **common)
    finally:
        report.close()
        if own:
            executor.shutdown(wait=True)
    path = Path(nf.path)
    return {
        "format": "eden-tolerance",
        "format_version": 1,
        "network": {"path": str(path), "sha256": sha256_file(path), "name": nf.network,
                    "kind": nf.meta.get("kind")},
        "fmt": spec.fmt,
        "mitigation": spec.mitigation,
        "model": spec.model.to_dict(),
        "spec": spec_to_dict(spec),
        "max_drop": float(max_drop),
        "seeds": [int(s) for s in seeds],
        "statistic": statistic,
        "confidence": confidence,
        "mode": mode,
        "search": {"ber_min": ber_min, "ber_max": ber_max, "tol": tol, "factor": factor, "max_steps": max_steps,
                   "start_ber": start_ber},
        "retrain_epochs": retrain_epochs,
        "samples": int(len(y)),
        "layers": workload.layers,
        "coarse": coarse.to_dict() if coarse is not None else None,
        "fine": fine.to_dict() if fine is not None else None,
    }

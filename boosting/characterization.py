"""Error-tolerance characterization of a network (EDEN, MICRO 2019, Algorithms 2 and 3).

EDEN's second stage finds how many bit errors a network tolerates before its accuracy falls
below a goal, first for the whole network (coarse) and then per layer and data kind (fine).
This module holds the searches (:func:`coarse_characterize`, :func:`fine_characterize`), their
workloads and executors, and :func:`characterize_network`, which runs them on a network file
and returns the tolerance document (``docs/tolerance-format.md``); ``python -m
boosting.characterize`` is the command over it. It logs through :mod:`logging` and never prints.

Goal
----
``goal = baseline - max_drop``, where ``max_drop`` is an absolute accuracy drop (0.01 is one
percentage point) and ``baseline`` the value the caller gives, or else the workload's clean
accuracy *in the numeric format and mitigation of the base spec* (``workload.reference(base)``,
BER 0: :meth:`NetworkWorkload.reference`; a workload without ``reference`` gives ``clean()``).
:func:`characterize_network` anchors it at the *original* network (the root of a boosted or
control network's parent chain; ``reference=``), so every network derived from one original is
held to the same goal. A probe (one error spec) **passes** when ``statistic >= goal``;
``statistic`` is

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

Fresh error masks
-----------------
Every probe draws its own masks: the seed handed to the workload for error seed ``s`` of the
``i``-th probe of a search is ``_seed_of(spec.seed, tag, i, s)`` (``boosting.inference._seed_of``;
``tag`` 1 for the coarse and 2 for the fine search), so no two probes, not even two at the same
spec, reuse masks and the greedy search cannot select a lucky draw over and over. Each
:class:`Probe` records them (``mask_seeds``); the counter advances in submission order in the
calling process, so results stay deterministic and the same under every executor.
``fresh_masks=False`` hands the seeds to the workload as given (every probe the same masks; the
old behaviour, and for stand-in workloads that interpret the seed).

Held-out re-scoring
-------------------
A search's result is the best of many decisions on the same few seeds, so it is biased upward
(a winner's curse). With ``holdout_seeds`` (default :data:`DEFAULT_HOLDOUT_SEEDS`, 20 seeds
disjoint from the search seeds; ``()`` disables), the result is re-scored on those seeds (fresh
masks too) with the same statistic and goal, as probes of stage ``"holdout"``, and backed off
until it passes:

* coarse: divide the BER by ``backoff`` (default ``10 ** tol``, the bisection's resolution),
  not below ``ber_min``; if ``ber_min`` fails too the result is ``ber = 0.0``, ``found`` False;
* fine: undo the raised steps in reverse order of raising, one factor step at a time; if even
  the start assignment fails, lower every key together by ``backoff`` (default ``factor``) down
  to ``ber_min``; if that fails the assignment is empty.

``ber`` / ``bers`` are the values after back-off; ``search_ber`` / ``search_bers`` keep the
search's own, and ``holdout`` says what happened (``seeds``, ``passed``, ``backed_off``: the
failed held-out probes, and the final values).

Execution
---------
Every probe is split into one task per error seed, ``_run_probe(workload, spec, seed)``, a
picklable top-level call submitted to a :class:`concurrent.futures.Executor`: the seeds of a
probe (and all sensitivity probes) run in parallel, the searches themselves are sequential.
The default is a local ``ProcessPoolExecutor(max_workers=2)`` with the ``spawn`` start method
(forking a process whose torch thread pools are running can deadlock; created and shut down by
the call). A workload with ``fingerprint()`` goes to a process pool's workers through a private
temporary file written once (``_WorkloadFile``, removed when the search ends; again after the
workload changed): each task names the file, each worker process unpickles it once, instead of
every task carrying it (torch would pass each tensor as a shared-memory file descriptor, a
round trip per tensor per task); any other workload is pickled into each task. Either way it
must be importable by the workers. :class:`SerialExecutor` runs tasks in the
calling process, deterministically (tests, small nets, debugging); a ``ThreadPoolExecutor``
also works. An evaluation attaches the injector to the network while it runs, so where
concurrent tasks may share one workload object (a Dask worker's threads, a thread pool: every
executor but the serial one and process pools) each thread evaluates its own copy of the
network, made once per workload (``_run_shared``); the shared object is never changed. :func:`characterize_network` also takes ``"local"``, ``"serial"``, ``"dask://HOST:PORT"``
or a ``distributed.Client`` (:func:`profiler.executors.resolve_executor`): on a Dask cluster the
workload is scattered to the workers once rather than pickled into each task, and the tasks of a
worker that dies are re-run elsewhere (:class:`profiler.executors.DaskExecutor`); the results are
the same under every executor. A workload is any picklable object with ``layers`` (layer names), ``clean()`` and
``__call__(spec, seed)`` returning ``(accuracy, n_samples)``, and optionally ``reference(spec)``
(the clean accuracy in the spec's format); :class:`NetworkWorkload` is the one for a real
network on tensors.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import multiprocessing
import numbers
import os
import pickle
import sys
import tempfile
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from boosting.inference import (
    DEFAULT_LAYER_TYPES,
    KINDS,
    Calibration,
    ErrorSpec,
    _seed_of,
    confidence_interval,
    evaluate,
    injectable_layers,
)
from boosting.journal import ProbeJournal, spec_identity, task_key
from boosting.tolerable import reference_correctness
from profiler.executors import SerialExecutor, check_executor_spec, forget_shared, resolve_executor

__all__ = [
    "CharacterizeError",
    "STATISTICS",
    "DEFAULT_SEEDS",
    "DEFAULT_HOLDOUT_SEEDS",
    "REFERENCE_SOURCES",
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
    "root_ancestor",
    "probe_line",
]

log = logging.getLogger(__name__)

STATISTICS = ("ci_low", "mean")
"""Statistics a probe's pass/fail decision can use."""

DEFAULT_SEEDS = (0, 1, 2, 3, 4)
"""Search seeds of :func:`characterize_network` and the command (cheap; the held-out seeds judge)."""

DEFAULT_HOLDOUT_SEEDS = tuple(range(1000, 1020))
"""Held-out error seeds the results are re-scored on (disjoint from any small search seed set)."""

REFERENCE_SOURCES = ("given", "ancestor", "self", "value")
"""Where the goal's reference accuracy of :func:`characterize_network` came from."""

_SEARCH_TAGS = {"coarse": 1, "fine": 2}
_MAX_ANCESTORS = 32

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
    _fingerprint: Optional[str] = field(default=None, init=False, repr=False, compare=False)

    def fingerprint(self) -> str:
        """SHA-256 (hex) of everything a probe's result depends on besides its spec and seed.

        The network's parameters and buffers (names, dtypes, shapes, bytes), the inputs and
        labels, the batch size and the calibration. Cached; call :meth:`changed` after changing
        the network in place. The probe journal's keys hold it (:mod:`boosting.journal`).
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, tensor in self.net.state_dict().items():
                _hash_tensor(h, name, tensor)
            _hash_tensor(h, "x", self.x)
            _hash_tensor(h, "y", self.y)
            h.update(f"batch_size={self.batch_size}".encode())
            cal = asdict(self.calibration) if self.calibration is not None else None
            h.update(json.dumps(cal, sort_keys=True, default=str).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def changed(self) -> None:
        """Forget the cached :meth:`fingerprint` (the network was changed in place, e.g. retrained)."""
        self._fingerprint = None

    def own_copy(self) -> "NetworkWorkload":
        """A copy with its own network (deep-copied) and the same test tensors and calibration."""
        own = replace(self, net=copy.deepcopy(self.net))
        own._fingerprint = self._fingerprint
        return own

    @property
    def layers(self) -> list[str]:
        """Names of the network's injectable layers."""
        types = self.calibration.layer_types if self.calibration is not None else DEFAULT_LAYER_TYPES
        return [n for n, _ in injectable_layers(self.net, types)]

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

    def reference(self, spec: ErrorSpec) -> tuple[float, int]:
        """Clean accuracy in the format and mitigation of ``spec`` (BER 0), and the number of samples."""
        ok = reference_correctness(self.net, self.x, self.y, spec, self.calibration)
        return float(ok.mean()), int(ok.size)


def _hash_tensor(h: Any, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous().reshape(-1)
    h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _workload_changed(executor: Executor, workload: Workload) -> None:
    """After changing ``workload`` in place: a cluster re-sends it, its journal fingerprint is recomputed."""
    forget_shared(executor, workload)
    changed = getattr(workload, "changed", None)
    if callable(changed):
        changed()


def _run_probe(workload: Workload, spec: Optional[ErrorSpec], seed: int) -> tuple[float, int]:
    """One task: the workload's accuracy under ``spec`` and ``seed`` (clean if ``spec`` is None)."""
    if spec is None:
        return workload.clean()
    return workload(spec, seed)


def _run_reference(workload: Workload, spec: ErrorSpec) -> tuple[float, int]:
    """One task: the workload's clean accuracy in ``spec``'s format (``reference``), else ``clean()``."""
    reference = getattr(workload, "reference", None)
    return reference(spec) if callable(reference) else workload.clean()


_OWN = threading.local()


def _own_copy(workload: Workload) -> Workload:
    """This thread's private copy of ``workload``, made once per shared object (and fingerprint).

    An evaluation attaches the error injector to the network (parametrizations and hooks) for the
    length of a task. A workload object that several tasks share at once (a Dask worker's
    scattered copy, used by each of its threads; any thread-based executor) would therefore be
    changed under the other tasks, which then compute wrong accuracies, and could not be
    serialized while a task runs (Dask copies a scattered value to a worker that needs it from a
    peer). Every thread evaluates its own copy instead; the shared object is only read.
    A :class:`NetworkWorkload` copies its network only (the test tensors are shared, read-only);
    another workload is deep-copied.
    """
    fingerprint = getattr(workload, "fingerprint", None)
    version = fingerprint() if callable(fingerprint) else None  # changes when the caller changed it in place
    held = getattr(_OWN, "held", None)
    if held is not None and held[0] is workload and held[1] == version:
        return held[2]
    own_copy = getattr(workload, "own_copy", None)
    own = own_copy() if callable(own_copy) else copy.deepcopy(workload)
    _OWN.held = (workload, version, own)  # one per thread: the original is kept so its id stays unique
    return own


def _run_shared(fn: Callable[..., tuple[float, int]], workload: Workload, *args: Any) -> tuple[float, int]:
    """One task on a workload shared with concurrent tasks: ``fn`` on this thread's own copy of it."""
    return fn(_own_copy(workload), *args)


@dataclass(frozen=True)
class _WorkloadFile:
    """A workload pickled once to a private temporary file, named by a local pool's tasks instead of carried.

    Every worker process unpickles it once per :attr:`fingerprint` (:func:`_run_from_file`) and
    keeps it for its later tasks; the caller removes the file when its search ends.
    """

    fingerprint: str
    path: str

    @classmethod
    def write(cls, workload: Workload, fingerprint: str) -> "_WorkloadFile":
        fd, path = tempfile.mkstemp(prefix="eden-workload-", suffix=".pkl")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(workload, fh, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            os.unlink(path)
            raise
        return cls(fingerprint, path)

    def remove(self) -> None:
        """Delete the file (already gone is fine; another failure is logged, the search goes on)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("could not remove the workload file %s: %s", self.path, exc.strerror or exc)


_LOADED: dict[str, Any] = {}  # in a local pool's worker process: fingerprint -> the workload of that file


def _run_from_file(fn: Callable[..., tuple[float, int]], ref: _WorkloadFile, *args: Any) -> tuple[float, int]:
    """One task of a local pool: ``fn`` on the workload of ``ref``, loaded once per worker process."""
    workload = _LOADED.get(ref.fingerprint)
    if workload is None:
        with open(ref.path, "rb") as fh:
            workload = pickle.load(fh)
        _LOADED.clear()  # one workload at a time: a changed one replaces the last
        _LOADED[ref.fingerprint] = workload
    return fn(workload, *args)


def _shares_arguments(executor: Executor) -> bool:
    """Whether concurrent tasks of ``executor`` may see the same argument object.

    False for this module's serial executor (one task at a time, in the caller's thread) and for
    process pools (every task unpickles its own arguments); True for everything else (Dask, thread
    pools, executors this module does not know).
    """
    return not isinstance(executor, (SerialExecutor, ProcessPoolExecutor))


# SerialExecutor lives in profiler.executors (with the local and Dask executors); re-exported here.


# -------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Probe:
    """One evaluated error configuration.

    Attributes
    ----------
    stage : str
        ``"baseline"``, ``"coarse"``, ``"sensitivity"``, ``"fine"`` or ``"holdout"``.
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
    mask_seeds : tuple of int
        The seeds handed to the workload, one per error seed (fresh per probe; module docstring).
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
    mask_seeds: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (overrides as ``[layer, kind, ber]`` lists)."""
        return {"stage": self.stage, "ber": self.ber,
                "overrides": [[k[0], k[1], v] for k, v in self.overrides.items()],
                "mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "per_seed": list(self.per_seed), "passed": self.passed,
                "key": list(self.key) if self.key is not None else None, "rolled_back": self.rolled_back,
                "mask_seeds": list(self.mask_seeds)}


@dataclass(frozen=True)
class CoarseResult:
    """Outcome of :func:`coarse_characterize`.

    Attributes
    ----------
    ber : float
        Highest uniform BER that passed, after the held-out back-off (0.0 if none passed).
    found : bool
        Whether some BER passed (the search and, if enabled, the held-out re-scoring).
    baseline, goal : float
        Reference accuracy and ``baseline - max_drop``.
    statistic : str
        Decision statistic (:data:`STATISTICS`).
    probes : tuple of Probe
        The baseline, every coarse probe and the held-out probes, in order.
    search_ber : float, optional
        The search's BER before the held-out re-scoring (None: built without one).
    holdout : dict, optional
        ``{"seeds", "passed", "backed_off", "ber"}`` of the re-scoring; None when it was disabled
        or the search found nothing to re-score.
    """

    ber: float
    found: bool
    baseline: float
    goal: float
    statistic: str
    probes: tuple[Probe, ...] = field(default=())
    search_ber: Optional[float] = None
    holdout: Optional[dict[str, Any]] = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"ber": self.ber, "found": self.found, "baseline": self.baseline, "goal": self.goal,
                "statistic": self.statistic, "probes": [p.to_dict() for p in self.probes],
                "search_ber": self.search_ber if self.search_ber is not None else self.ber,
                "holdout": self.holdout}


@dataclass(frozen=True)
class FineResult:
    """Outcome of :func:`fine_characterize`.

    Attributes
    ----------
    bers : dict
        ``{(layer, kind): ber}`` after the held-out back-off (empty if even ``ber_min`` failed).
    start_ber : float
        The common starting BER.
    order : tuple of key
        Keys in the order they were raised (increasing sensitivity).
    sensitivity : dict
        ``{(layer, kind): accuracy lost}`` by the sensitivity probe.
    baseline, goal : float
        Reference accuracy and ``baseline - max_drop``.
    statistic : str
        Decision statistic.
    probes : tuple of Probe
        The baseline, sensitivity, fine and held-out probes, in order.
    search_bers : dict, optional
        The greedy search's assignment before the held-out re-scoring (None: built without one).
    holdout : dict, optional
        ``{"seeds", "passed", "backed_off", "uniform_ber", "bers"}`` of the re-scoring
        (``uniform_ber``: the BER of every key not in ``bers`` and, after a uniform back-off, of
        all of them; 0.0 when nothing passed); None when disabled.
    """

    bers: dict[Key, float]
    start_ber: float
    order: tuple[Key, ...]
    sensitivity: dict[Key, float]
    baseline: float
    goal: float
    statistic: str
    probes: tuple[Probe, ...] = field(default=())
    search_bers: Optional[dict[Key, float]] = None
    holdout: Optional[dict[str, Any]] = None

    def spec(self, base: ErrorSpec) -> ErrorSpec:
        """``base`` with the per-(layer, kind) BERs as overrides (the other tensors at the uniform BER)."""
        uniform = self.start_ber if self.holdout is None else float(self.holdout["uniform_ber"])
        return replace(base, model=base.model.with_ber(uniform), overrides=dict(self.bers))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (keys as ``[layer, kind, ...]`` lists)."""
        search = self.bers if self.search_bers is None else self.search_bers
        return {"bers": [[k[0], k[1], v] for k, v in self.bers.items()], "start_ber": self.start_ber,
                "order": [list(k) for k in self.order],
                "sensitivity": [[k[0], k[1], v] for k, v in self.sensitivity.items()],
                "baseline": self.baseline, "goal": self.goal, "statistic": self.statistic,
                "probes": [p.to_dict() for p in self.probes],
                "search_bers": [[k[0], k[1], v] for k, v in search.items()], "holdout": self.holdout}


# ---------------------------------------------------------------------- machinery
def _check_seeds(seeds: Sequence[int], what: str, allow_empty: bool = False) -> tuple[int, ...]:
    out = []
    for s in seeds:
        if not isinstance(s, numbers.Integral) or isinstance(s, bool) or s < 0:
            raise CharacterizeError(f"{what} must be non-negative integers, got {s!r}")
        out.append(int(s))
    if not out and not allow_empty:
        raise CharacterizeError(f"give at least one non-negative error seed, got {tuple(seeds)!r}")
    if len(set(out)) != len(out):
        raise CharacterizeError(f"{what} must be distinct, got {tuple(out)!r}")
    return tuple(out)


class _Runner:
    """Submits probes (one task per seed, fresh masks), aggregates them, decides, records."""

    def __init__(self, workload: Workload, executor: Optional[Executor], seeds: Sequence[int], max_drop: float,
                 statistic: str, confidence: float, baseline: Optional[float], progress: Optional[Progress],
                 base: Optional[ErrorSpec] = None, search: str = "coarse", fresh_masks: bool = True,
                 holdout_seeds: Sequence[int] = (), journal: Optional[ProbeJournal] = None) -> None:
        if statistic not in STATISTICS:
            raise CharacterizeError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
        try:
            seeds = tuple(seeds)
            holdout_seeds = tuple(holdout_seeds)
        except TypeError:
            raise CharacterizeError("seeds and holdout_seeds must be sequences of integers") from None
        seeds = _check_seeds(seeds, "error seeds")
        holdout_seeds = _check_seeds(holdout_seeds, "holdout seeds", allow_empty=True)
        shared = sorted(set(seeds) & set(holdout_seeds))
        if shared:
            raise CharacterizeError(f"holdout seeds must be disjoint from the search seeds; both hold {shared}")
        if not (isinstance(max_drop, (int, float)) and 0.0 <= max_drop <= 1.0):
            raise CharacterizeError(f"max_drop must be in [0, 1], got {max_drop!r}")
        if not 0.0 < confidence < 1.0:
            raise CharacterizeError(f"confidence must be in (0, 1), got {confidence!r}")
        if journal is not None and not callable(getattr(workload, "fingerprint", None)):
            raise CharacterizeError(f"a probe journal needs a workload with fingerprint(); "
                                    f"{type(workload).__name__} has none")
        self.workload = workload
        self.journal = journal
        self.own = executor is None
        self.executor = (ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
                         if executor is None else executor)
        self.shared = _shares_arguments(self.executor)
        # a local process pool would pickle the workload into every task (its tensors as shared-memory
        # file descriptors, one each): its tasks name a file written once instead
        self.by_file = (isinstance(self.executor, ProcessPoolExecutor)
                        and callable(getattr(workload, "fingerprint", None)))
        self._file: Optional[_WorkloadFile] = None
        self.seeds = seeds
        self.holdout_seeds = holdout_seeds
        self.statistic = statistic
        self.confidence = confidence
        self.progress = progress
        self.fresh_masks = bool(fresh_masks)
        self.tag = _SEARCH_TAGS[search]
        self.counter = 0
        self.probes: list[Probe] = []
        try:
            if baseline is None:
                if base is not None:
                    acc, _ = self._task("reference", _run_reference, base, None).result()
                else:
                    acc, _ = self._task("clean", _run_probe, None, 0).result()
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
        self._drop_file()

    def _record(self, probe: Probe) -> Probe:
        self.probes.append(probe)
        if self.progress is not None:
            self.progress(probe)
        return probe

    def mask_seeds(self, spec: ErrorSpec, seeds: Sequence[int]) -> tuple[int, ...]:
        """The seeds of the next probe: fresh ones derived from the probe counter (or ``seeds`` as given)."""
        index = self.counter
        self.counter += 1
        if not self.fresh_masks:
            return tuple(seeds)
        return tuple(_seed_of(spec.seed, self.tag, index, s) for s in seeds)

    def _workload_file(self) -> Optional[_WorkloadFile]:
        """The file the local pool's tasks load the workload from (written again when it changed), or None."""
        fingerprint = self.workload.fingerprint()  # type: ignore[attr-defined]
        if self._file is not None and self._file.fingerprint == fingerprint:
            return self._file
        self._drop_file()  # a changed workload: the previous probe's tasks have all finished
        try:
            self._file = _WorkloadFile.write(self.workload, fingerprint)
        except (OSError, pickle.PicklingError) as exc:
            log.debug("workload not written to a file (%s): it travels with every task", exc)
            self.by_file = False
        return self._file

    def _drop_file(self) -> None:
        if self._file is not None:
            self._file.remove()
            self._file = None

    def _submit(self, fn: Callable[..., tuple[float, int]], spec: Optional[ErrorSpec], seed: Optional[int]) -> Future:
        """Submit one task, the workload passed the way the executor takes it best."""
        rest: tuple[Any, ...] = (spec,) if seed is None else (spec, seed)
        if self.by_file:
            ref = self._workload_file()
            if ref is not None:
                return self.executor.submit(_run_from_file, fn, ref, *rest)
        if self.shared:
            return self.executor.submit(_run_shared, fn, self.workload, *rest)
        return self.executor.submit(fn, self.workload, *rest)

    def _task(self, kind: str, fn: Callable[..., tuple[float, int]], spec: Optional[ErrorSpec],
              seed: Optional[int], spec_json: Optional[str] = None) -> Future:
        """One task's future: answered from the journal if it holds it, else submitted (and journaled when done)."""
        if self.journal is None:
            return self._submit(fn, spec, seed)
        if spec_json is None:
            spec_json = spec_identity(spec)
        key = task_key(self.workload.fingerprint(), kind, spec_json, 0 if seed is None else seed)
        hit = self.journal.get(key)
        if hit is not None:
            future: Future = Future()
            future.set_result(hit)
            return future
        future = self._submit(fn, spec, seed)
        self.journal.record_when_done(key, future)
        return future

    def submit(self, spec: ErrorSpec, holdout: bool = False) -> tuple[tuple[int, ...], list[Future]]:
        masks = self.mask_seeds(spec, self.holdout_seeds if holdout else self.seeds)
        spec_json = spec_identity(spec) if self.journal is not None else None
        return masks, [self._task("probe", _run_probe, spec, s, spec_json) for s in masks]

    def collect(self, stage: str, spec: ErrorSpec, submitted: tuple[tuple[int, ...], list[Future]],
                key: Optional[Key] = None, rollback_on_fail: bool = False) -> Probe:
        masks, futures = submitted
        results = [f.result() for f in futures]
        per_seed = tuple(float(a) for a, _ in results)
        mean, lo, hi = confidence_interval(per_seed, int(results[0][1]), self.confidence)
        passed = (lo if self.statistic == "ci_low" else mean) >= self.goal
        return self._record(Probe(stage, spec.model.ber, dict(spec.overrides), mean, lo, hi, per_seed, passed,
                                  key, rollback_on_fail and not passed, masks))

    def probe(self, stage: str, spec: ErrorSpec, key: Optional[Key] = None, rollback_on_fail: bool = False) -> Probe:
        return self.collect(stage, spec, self.submit(spec, holdout=stage == "holdout"), key, rollback_on_fail)


def _check_bounds(ber_min: float, ber_max: float) -> None:
    if not (0.0 < ber_min < ber_max <= 1.0):
        raise CharacterizeError(f"need 0 < ber_min < ber_max <= 1, got {ber_min!r}, {ber_max!r}")


def _check_backoff(backoff: Optional[float]) -> None:
    if backoff is not None and not (isinstance(backoff, (int, float)) and math.isfinite(backoff) and backoff > 1.0):
        raise CharacterizeError(f"backoff must be a number > 1, got {backoff!r}")


def _uniform(base: ErrorSpec, ber: float) -> ErrorSpec:
    return replace(base, model=base.model.with_ber(ber), overrides={})


# ------------------------------------------------------------------------ searches
def coarse_characterize(workload: Workload, base: ErrorSpec, *, max_drop: float = 0.01,
                        ber_min: float = 1e-9, ber_max: float = 0.5, tol: float = 0.1,
                        seeds: Sequence[int] = (0, 1, 2), statistic: str = "ci_low", confidence: float = 0.95,
                        retrain: Optional[Callable[[ErrorSpec], None]] = None, baseline: Optional[float] = None,
                        executor: Optional[Executor] = None, progress: Optional[Progress] = None,
                        holdout_seeds: Sequence[int] = DEFAULT_HOLDOUT_SEEDS, backoff: Optional[float] = None,
                        fresh_masks: bool = True, journal: Optional[ProbeJournal] = None) -> CoarseResult:
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
        Error seeds of every probe (one task each; fresh masks per probe, module docstring).
    statistic : {"ci_low", "mean"}
        Decision statistic (see the module docstring).
    confidence : float
        Confidence level of the interval.
    retrain : callable, optional
        ``retrain(spec) -> None`` called before each probe, held-out ones included (see the
        module docstring).
    baseline : float, optional
        Reference accuracy; default ``workload.reference(base)`` (or ``clean()``), one task.
    executor : Executor, optional
        Where tasks run; default a local ``ProcessPoolExecutor(max_workers=2)`` (spawn), shut down on return.
    progress : callable, optional
        Called with every recorded :class:`Probe`.
    holdout_seeds : sequence of int
        Seeds the result is re-scored on and backed off until it passes (disjoint from
        ``seeds``; ``()`` disables).
    backoff : float, optional
        Back-off factor (> 1) of the held-out re-scoring; default ``10 ** tol``.
    fresh_masks : bool
        Derive fresh mask seeds per probe (default) or hand ``seeds`` to the workload as given.
    journal : ProbeJournal, optional
        Answer the tasks it holds from it and record every finished one (resuming an interrupted
        search: :mod:`boosting.journal`); the workload needs ``fingerprint()``.

    Returns
    -------
    CoarseResult
    """
    _check_bounds(ber_min, ber_max)
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise CharacterizeError(f"tol must be > 0, got {tol!r}")
    _check_backoff(backoff)
    runner = _Runner(workload, executor, seeds, max_drop, statistic, confidence, baseline, progress, base=base,
                     search="coarse", fresh_masks=fresh_masks, holdout_seeds=holdout_seeds, journal=journal)
    try:
        def passes(log_ber: float) -> bool:
            spec = _uniform(base, 10.0 ** log_ber)
            if retrain is not None:
                retrain(spec)
                _workload_changed(runner.executor, workload)  # changed in place: re-sent, re-fingerprinted
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
        search_ber, holdout = ber, None
        if runner.holdout_seeds and found:
            step = float(backoff) if backoff is not None else 10.0 ** tol
            failed = 0
            while True:
                spec = _uniform(base, ber)
                if retrain is not None:
                    retrain(spec)
                    _workload_changed(runner.executor, workload)
                if runner.probe("holdout", spec).passed:
                    break
                failed += 1
                if ber <= ber_min * (1 + 1e-9):
                    ber, found = 0.0, False
                    break
                ber = max(ber / step, ber_min)
            holdout = {"seeds": list(runner.holdout_seeds), "passed": found, "backed_off": failed, "ber": ber}
            if failed:
                log.info("coarse: BER %.3e failed %d held-out probe(s); backed off to %.3e", search_ber, failed, ber)
        return CoarseResult(ber, found, runner.baseline, runner.goal, statistic, tuple(runner.probes),
                            search_ber, holdout)
    finally:
        runner.close()


def fine_characterize(workload: Workload, base: ErrorSpec, start_ber: float, *, max_drop: float = 0.01,
                      factor: float = 2.0, max_steps: int = 20, ber_max: float = 0.5,
                      keys: Optional[Sequence[Key]] = None, seeds: Sequence[int] = (0, 1, 2),
                      statistic: str = "ci_low", confidence: float = 0.95, baseline: Optional[float] = None,
                      executor: Optional[Executor] = None, progress: Optional[Progress] = None,
                      holdout_seeds: Sequence[int] = DEFAULT_HOLDOUT_SEEDS, backoff: Optional[float] = None,
                      ber_min: float = 1e-9, fresh_masks: bool = True,
                      journal: Optional[ProbeJournal] = None) -> FineResult:
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
    seeds, statistic, confidence, baseline, executor, progress, holdout_seeds, fresh_masks, journal
        As in :func:`coarse_characterize`.
    backoff : float, optional
        Factor of the uniform back-off, after every raised step was undone (default ``factor``).
    ber_min : float
        Floor of the uniform back-off.

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
    if not (isinstance(ber_min, (int, float)) and 0.0 < ber_min <= 1.0):
        raise CharacterizeError(f"ber_min must be in (0, 1], got {ber_min!r}")
    _check_backoff(backoff)
    if keys is None:
        keys = [(layer, kind) for layer in workload.layers for kind in KINDS]
    keys = [tuple(k) for k in keys]
    bad = [k for k in keys if len(k) != 2 or k[1] not in KINDS]
    if bad or not keys or len(set(keys)) != len(keys):
        raise CharacterizeError(f"keys must be distinct (layer, 'weight' | 'ifm') pairs, got {keys!r}")
    start_ber = float(start_ber)
    runner = _Runner(workload, executor, seeds, max_drop, statistic, confidence, baseline, progress, base=base,
                     search="fine", fresh_masks=fresh_masks, holdout_seeds=holdout_seeds, journal=journal)
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
        raised: list[tuple[Key, float]] = []  # (key, BER before the step), in order of raising
        for k in order:
            for _ in range(max_steps):
                candidate = min(bers[k] * factor, ber_max)
                if candidate <= bers[k]:
                    break
                if runner.probe("fine", spec_with(k, candidate), key=k, rollback_on_fail=True).passed:
                    raised.append((k, bers[k]))
                    bers[k] = candidate
                else:
                    break
        search_bers, holdout = dict(bers), None
        if runner.holdout_seeds:
            bers, holdout = _fine_holdout(runner, base, keys, bers, raised, start_ber,
                                          float(backoff) if backoff is not None else float(factor), float(ber_min))
            if holdout["backed_off"]:
                log.info("fine: the assignment failed %d held-out probe(s) before passing (%s)",
                         holdout["backed_off"], "passed" if holdout["passed"] else "nothing passed")
        return FineResult(bers, start_ber, order, sensitivity, runner.baseline, runner.goal, statistic,
                          tuple(runner.probes), search_bers, holdout)
    finally:
        runner.close()


def _fine_holdout(runner: _Runner, base: ErrorSpec, keys: Sequence[Key], bers: dict[Key, float],
                  raised: list[tuple[Key, float]], start_ber: float, step: float,
                  ber_min: float) -> tuple[dict[Key, float], dict[str, Any]]:
    """Re-score a fine assignment on the held-out seeds; undo raised steps, then back off uniformly, until it passes."""
    bers, raised = dict(bers), list(raised)
    uniform, failed, passed = start_ber, 0, False
    while True:
        spec = replace(base, model=base.model.with_ber(uniform), overrides=dict(bers))
        if runner.probe("holdout", spec).passed:
            passed = True
            break
        failed += 1
        if raised:  # undo the last raised step
            key, before = raised.pop()
            bers[key] = before
        elif uniform <= ber_min * (1 + 1e-9):
            bers, uniform = {}, 0.0
            break
        else:  # every step undone and the start assignment fails: lower all keys together
            uniform = max(uniform / step, ber_min)
            bers = {k: uniform for k in keys}
    return bers, {"seeds": list(runner.holdout_seeds), "passed": passed, "backed_off": failed,
                  "uniform_ber": uniform, "bers": [[k[0], k[1], v] for k, v in bers.items()]}


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


def _locate_parent(path: str, child_dir: Any) -> Any:
    """The parent network file named in a child's meta: as given, else relative to the child's folder."""
    from pathlib import Path

    p = Path(path)
    if p.is_file():
        return p
    if not p.is_absolute() and (Path(child_dir) / p).is_file():
        return Path(child_dir) / p
    return None


def root_ancestor(nf: Any) -> Any:
    """The root of a boosted or control network file's parent chain, or None if it has no readable parent.

    Follows ``meta["parent"]["path"]`` while the file's ``meta["kind"]`` is ``"boosted"`` or
    ``"control"`` and the parent file exists (as written, or relative to the child's folder),
    at most 32 steps, stopping at a cycle. A parent whose SHA-256 differs from the one recorded
    is still used, with a warning (the file was rewritten since).

    Parameters
    ----------
    nf : NetworkFile

    Returns
    -------
    NetworkFile or None
    """
    from pathlib import Path

    from boosting.checkpoint import load_network
    from softmc_host.files import sha256_file

    current, root = nf, None
    seen = {Path(nf.path).resolve()}
    for _ in range(_MAX_ANCESTORS):
        meta = current.meta or {}
        parent = meta.get("parent")
        if meta.get("kind") not in ("boosted", "control") or not isinstance(parent, dict) \
                or not isinstance(parent.get("path"), str):
            break
        found = _locate_parent(parent["path"], Path(current.path).parent)
        if found is None:
            log.warning("%s: parent network %s not found; the goal is anchored at the last one found",
                        current.path, parent["path"])
            break
        if Path(found).resolve() in seen:
            log.warning("%s: the parent chain loops back to %s", current.path, found)
            break
        seen.add(Path(found).resolve())
        recorded = parent.get("sha256")
        if isinstance(recorded, str) and recorded != sha256_file(found):
            log.warning("%s: parent %s changed since it was recorded (sha256 differs)", current.path, found)
        current = root = load_network(found)
    return root


def _same_inputs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("name", "image_size", "normalize", "split_seed"))


def _reference_accuracy(nf: Any, reference: Any, spec: ErrorSpec, x: torch.Tensor, y: torch.Tensor,
                        xc: torch.Tensor, workload: "NetworkWorkload") -> tuple[dict[str, Any], Any]:
    """The goal's anchor of :func:`characterize_network`: ``{"path", "sha256", "accuracy", "source"}``.

    Returned with the anchor's per-sample correctness ``(N,)`` (or the accuracy, for a given value),
    which the honest curve's bootstrap resamples with the test samples.
    """
    from pathlib import Path

    from boosting.checkpoint import NetworkFile, load_network
    from boosting.inference import calibrate
    from softmc_host.files import sha256_file

    if isinstance(reference, numbers.Real) and not isinstance(reference, bool):
        value = float(reference)
        if not 0.0 <= value <= 1.0:
            raise CharacterizeError(f"a reference accuracy must be in [0, 1], got {reference!r}")
        return {"path": None, "sha256": None, "accuracy": value, "source": "value"}, value
    if reference is None:
        ref_nf, source = root_ancestor(nf), "ancestor"
        if ref_nf is None:
            ref_nf, source = nf, "self"
    elif isinstance(reference, NetworkFile):
        ref_nf, source = reference, "given"
    elif isinstance(reference, (str, Path)):
        if not Path(reference).is_file():
            raise CharacterizeError(f"reference network file {str(reference)!r} does not exist")
        ref_nf, source = load_network(reference), "given"
    else:
        raise CharacterizeError(f"reference must be a network file, an accuracy or None, got "
                                f"{type(reference).__name__}")
    if source == "self":
        correct = reference_correctness(workload.net, x, y, spec, workload.calibration)
    else:
        if not _same_inputs(ref_nf.dataset, nf.dataset):
            raise CharacterizeError(f"reference {ref_nf.path} expects other inputs ({ref_nf.dataset}) than "
                                    f"{nf.path} ({nf.dataset})")
        ref_net = ref_nf.net.eval()
        ref_cal = calibrate(ref_net, DataLoader(TensorDataset(xc), batch_size=256), spec.fmt,
                            layer_types=spec.layer_types)
        correct = reference_correctness(ref_net, x, y, spec, ref_cal)
    accuracy = float(correct.mean())
    path = Path(ref_nf.path)
    log.debug("goal anchored at %s (%s): accuracy %.4f in %s, mitigation %s", path, source, accuracy, spec.fmt,
              spec.mitigation)
    return {"path": str(path), "sha256": sha256_file(path), "accuracy": float(accuracy), "source": source}, correct


def characterize_network(net_file: Any, spec: ErrorSpec, *, mode: Optional[str] = None, max_drop: float = 0.01,
                         seeds: Sequence[int] = DEFAULT_SEEDS, ber_min: float = 1e-7, ber_max: float = 0.1,
                         tol: float = 0.25, factor: float = 2.0, max_steps: int = 20,
                         start_ber: Optional[float] = None, statistic: str = "ci_low", confidence: float = 0.95,
                         retrain_epochs: int = 0, retrain_lr: float = 1e-3, workers: int = 2,
                         samples: Optional[int] = None, calib_samples: int = 512, data_dir: Any = None,
                         progress: Union[bool, Callable[[str, Probe], None], None] = None,
                         search: Optional[str] = None, executor: Any = None,
                         reference: Any = None, holdout_seeds: Sequence[int] = DEFAULT_HOLDOUT_SEEDS,
                         backoff: Optional[float] = None, curve_seeds: int = 0, journal: Any = None,
                         fresh: bool = False) -> dict[str, Any]:
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
        Tolerated absolute accuracy drop below the reference accuracy, in [0, 1].
    seeds : sequence of int
        Search error seeds of every probe (default :data:`DEFAULT_SEEDS`; fresh masks per probe).
    ber_min, ber_max : float
        Coarse search bounds; ``ber_max`` is also the fine ceiling, ``ber_min`` the back-off floor.
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
        Worker processes (spawn) of the local executor; 0 runs every evaluation in this process
        (:class:`SerialExecutor`). Ignored by the other executors.
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
    executor : str or concurrent.futures.Executor or distributed.Client, optional
        Where the evaluations run (one task per probe and seed): an executor (the caller shuts it
        down), a ``distributed.Client`` (wrapped; the workload is scattered to its workers once),
        or a spelling of :func:`profiler.executors.resolve_executor`: ``"local"`` (default:
        ``workers`` spawned processes, or this process with ``workers=0``), ``"serial"``,
        ``"dask://HOST:PORT"`` (the cluster extra; ``pip install .[cluster]``).
    reference : NetworkFile or str or Path or float, optional
        The goal's anchor: ``goal = accuracy - max_drop`` with the accuracy of this network in
        ``spec``'s format and mitigation at BER 0 (its own calibration, the same test images),
        or this accuracy value. None: the root ancestor of a boosted or control network
        (:func:`root_ancestor`), else the network itself, in the same format.
    holdout_seeds : sequence of int
        Held-out seeds the coarse and fine results are re-scored on and backed off until they
        pass (default :data:`DEFAULT_HOLDOUT_SEEDS`; ``()`` disables).
    backoff : float, optional
        Back-off factor (default ``10 ** tol`` for coarse, ``factor`` for fine).
    curve_seeds : int
        With N > 0, also measure the honest tolerable BER (:mod:`boosting.tolerable`): the
        mean-accuracy curve over N error seeds (20 or more for a reliable interval) on four BERs per
        decade from ``ber_min`` to ``ber_max``, its crossing with the goal interpolated on log BER
        and a bootstrap interval over error seeds and test samples (the reference's correctness
        resampled with them); stored under the document's ``curve`` key. 0: none.
    journal : str or Path or ProbeJournal, optional
        The probe journal (:mod:`boosting.journal`; by convention ``<document>.probes.jsonl``):
        every finished task is recorded in it, and the tasks it already holds are answered from
        it, so rerunning an interrupted call resumes it (same result as an uninterrupted run).
        None: no journal. The honest curve (``curve_seeds``) is not journaled.
    fresh : bool
        Start the journal (a path) over instead of resuming from it.

    Returns
    -------
    dict
        The tolerance document (``docs/tolerance-format.md``).

    Raises
    ------
    CharacterizeError
        Bad search parameters, a missing reference file, a reference for other inputs.
    ExecutorError
        A bad executor spelling, Dask missing for ``dask://``, an unreachable scheduler
        (:mod:`profiler.executors`; a ``ValueError``).
    JournalError
        A journal path that is not a probe journal or cannot be written (a ``ValueError``).
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
    if not (isinstance(curve_seeds, int) and not isinstance(curve_seeds, bool) and curve_seeds >= 0):
        raise CharacterizeError(f"curve_seeds must be an integer >= 0, got {curve_seeds!r}")
    if not (isinstance(retrain_epochs, int) and retrain_epochs >= 0):
        raise CharacterizeError(f"retrain_epochs must be an integer >= 0, got {retrain_epochs!r}")
    if samples is not None and not (isinstance(samples, int) and samples >= 1):
        raise CharacterizeError(f"samples must be an integer >= 1, got {samples!r}")
    seeds = _check_seeds(seeds, "error seeds")
    holdout_seeds = _check_seeds(holdout_seeds, "holdout seeds", allow_empty=True)
    if isinstance(executor, str) or executor is None:
        check_executor_spec(executor)  # a bad spelling fails before the network is loaded
    nf = net_file if isinstance(net_file, NetworkFile) else load_network(net_file)
    net = nf.net.eval()
    train = nf.load_split("train", root=data_dir)
    test = nf.load_split("test", root=data_dir)
    x, y = test.tensors
    if samples is not None:
        x, y = x[:samples], y[:samples]
    xc = train.tensors[0][:calib_samples]
    calibration = calibrate(net, DataLoader(TensorDataset(xc), batch_size=256), spec.fmt,
                            layer_types=spec.layer_types)
    workload = NetworkWorkload(net, x, y, calibration=calibration)
    ref, ref_correct = _reference_accuracy(nf, reference, spec, x, y, xc, workload)
    clean = {"fp32": workload.clean()[0], "fmt": workload.reference(spec)[0]}
    original = {k: v.detach().clone() for k, v in net.state_dict().items()}
    retrain_hook = None
    if retrain_epochs > 0:
        def retrain_hook(probe_spec: ErrorSpec) -> None:
            workload.net.load_state_dict(original)
            _retrain(workload.net, train, probe_spec, epochs=retrain_epochs, lr=retrain_lr,
                     calibration=calibration, seed=0)
            workload.net.eval()
            _workload_changed(executor, workload)  # a cluster re-sends it; the journal re-fingerprints it

    own_journal = journal is not None and not isinstance(journal, ProbeJournal)
    if own_journal:
        journal = ProbeJournal(journal, fresh=fresh)
    if journal is not None and journal.loaded:
        log.info("resuming from %s: %d finished task(s) on record (fresh=True / --fresh starts over)",
                 journal.path, journal.loaded)
    try:
        executor, own = resolve_executor(executor, workers=workers)
    except BaseException:
        if own_journal:
            journal.close()
        raise
    report = _ProbeReport(progress)
    log.debug("characterizing %s (%s): search %s, model %s, fmt %s, mitigation %s, %d samples, seeds %s, "
              "holdout seeds %s, goal %.4f (%s)", nf.path, nf.network, mode, spec.model.describe(), spec.fmt,
              spec.mitigation, len(y), list(seeds), list(holdout_seeds), ref["accuracy"] - max_drop, ref["source"])
    coarse = fine = None
    try:
        common = dict(max_drop=max_drop, seeds=seeds, statistic=statistic, confidence=confidence, executor=executor,
                      baseline=ref["accuracy"], holdout_seeds=holdout_seeds, backoff=backoff, journal=journal)
        if mode in ("coarse", "both") or (mode == "fine" and start_ber is None):
            coarse = coarse_characterize(workload, spec, ber_min=ber_min, ber_max=ber_max, tol=tol,
                                         retrain=retrain_hook, progress=lambda p: report("coarse", p), **common)
        if mode in ("fine", "both"):
            start = start_ber if start_ber is not None else coarse.ber  # type: ignore[union-attr]
            if start > 0:
                if retrain_hook is not None:
                    retrain_hook(_uniform(spec, start))
                fine = fine_characterize(workload, spec, start, factor=factor, max_steps=max_steps,
                                         ber_max=ber_max, ber_min=min(ber_min, start),
                                         progress=lambda p: report("fine", p), **common)
    finally:
        report.close()
        if own:
            executor.shutdown(wait=True)
        if journal is not None:
            if journal.hits:
                log.info("%d task(s) answered from the probe journal %s, %d run", journal.hits, journal.path,
                         journal.written)
            if own_journal:
                journal.close()
    curve_doc = None
    if curve_seeds:
        curve_doc = _honest_curve(workload, spec, ref_correct, max_drop, ber_min, ber_max, curve_seeds, confidence)
    path = Path(nf.path)
    return {
        "format": "eden-tolerance",
        "format_version": 1,
        "network": {"path": str(path), "sha256": sha256_file(path), "name": nf.network,
                    "kind": nf.meta.get("kind")},
        "reference": ref,
        "clean": clean,
        "fmt": spec.fmt,
        "mitigation": spec.mitigation,
        "model": spec.model.to_dict(),
        "spec": spec_to_dict(spec),
        "max_drop": float(max_drop),
        "seeds": [int(s) for s in seeds],
        "holdout_seeds": [int(s) for s in holdout_seeds],
        "statistic": statistic,
        "confidence": confidence,
        "mode": mode,
        "search": {"ber_min": ber_min, "ber_max": ber_max, "tol": tol, "factor": factor, "max_steps": max_steps,
                   "start_ber": start_ber, "backoff": backoff, "fresh_masks": True},
        "retrain_epochs": retrain_epochs,
        "samples": int(len(y)),
        "layers": workload.layers,
        "coarse": coarse.to_dict() if coarse is not None else None,
        "fine": fine.to_dict() if fine is not None else None,
        "curve": curve_doc,
    }


def _honest_curve(workload: "NetworkWorkload", spec: ErrorSpec, reference: Any, max_drop: float, ber_min: float,
                  ber_max: float, n_seeds: int, confidence: float) -> dict[str, Any]:
    """The tolerable BER as a number with an interval (:mod:`boosting.tolerable`), for the document's ``curve``."""
    import numpy as np

    from boosting.tolerable import MIN_SEEDS, curve, default_bers, tolerable_ber

    if n_seeds < MIN_SEEDS:
        log.warning("the tolerable BER's interval from %d error seeds (fewer than %d) is unreliable", n_seeds,
                    MIN_SEEDS)
    bers = default_bers(ber_min, ber_max, per_decade=4)
    seeds = tuple(range(n_seeds))
    goal = float(np.mean(reference)) - max_drop
    correct = curve(workload.net, workload.x, workload.y, spec, bers, seeds, workload.calibration,
                    workload.batch_size, stop_below=goal)
    per_seed = correct.mean(axis=2)
    points = [confidence_interval(list(a), correct.shape[2], confidence) for a in per_seed]
    tol = tolerable_ber(correct, bers, reference, max_drop, confidence=confidence, seed=int(spec.seed))
    log.info("tolerable BER %.3g [%.3g, %.3g] (curve over %d seeds; goal %.4f)", tol.ber, tol.ci_low, tol.ci_high,
             n_seeds, tol.goal)
    return {"bers": bers, "mean": [p[0] for p in points], "ci_low": [p[1] for p in points],
            "ci_high": [p[2] for p in points], "seeds": list(seeds), "reference": tol.reference,
            "tolerable": tol.to_dict()}

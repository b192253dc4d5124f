"""Tolerable BER with a confidence interval: per-sample correctness, accuracy curves, bootstrap.

The searches of :mod:`boosting.characterization` answer "does this spec pass?" with a few error
seeds; this module measures the *tolerable BER* of a network as a number with an interval, as
issue 15 asks:

1. :func:`correctness` evaluates a network under an error spec for several error seeds and keeps
   the per-sample top-1 correctness, ``(seeds, samples)`` booleans;
2. :func:`curve` does it at every BER of a grid, ``(bers, seeds, samples)``, with **fresh error
   masks** at every BER (see *Mask seeds*);
3. :func:`reference_correctness` is the clean correctness of the *original* network in the same
   numeric format and mitigation as the spec (BER 0: the weights and IFMs are still quantized,
   and mitigated against the calibrated ranges, only no bit flips);
4. :func:`crossing` interpolates where the mean-accuracy curve crosses the goal
   ``reference - max_drop``, on ``log10(BER)``;
5. :func:`tolerable_ber` is that crossing with a percentile-bootstrap interval that resamples the
   error seeds and the test samples independently (and the reference's samples with the test
   samples, so the goal moves with the resample);
6. :func:`measure` runs it all for several drops and returns a :class:`CurveResult`;
7. :func:`gain` compares two networks measured on the same grid, seeds and samples: the ratio of
   their tolerable BERs with a paired bootstrap interval.

Mask seeds
----------
The error seed of BER ``b`` and seed ``s`` (the index given to
:meth:`boosting.inference.ErrorInjector.reseed`) is
``_seed_of(base_spec.seed, round(-1000 * log10(b)), s)`` (numpy ``SeedSequence``): a function of
the BER's value, not of its position in the grid, so two BERs differing by more than 0.001 decade
never share masks, while the same BER measured on two grids (a refined curve) gets the same
masks. BERs of one grid that map to the same key are refused.

Crossing
--------
Points are sorted by BER. With ``i`` the first point whose accuracy is below the goal:

* ``"interpolated"``: ``i > 0``; ``log10`` of the tolerable BER is linear between points
  ``i - 1`` (at or above the goal) and ``i`` (below), where the linearly interpolated accuracy
  equals the goal;
* ``"above_range"``: no point is below the goal; the result is the highest BER (a lower bound);
* ``"below_range"``: the lowest BER is already below the goal; the result is 0.0 (nothing on the
  grid is tolerated; 0.0 rather than the lowest BER, so that it is never mistaken for a
  tolerated rate).

Censored resamples in the interval
----------------------------------
Each bootstrap resample gives a crossing that may itself be censored: a ``below_range`` resample
counts as 0.0 and an ``above_range`` one as the highest BER, i.e. at the bound of the grid. The
interval bounds are order statistics of those values (no interpolation between resamples), so
``ci_low == 0.0`` says the lower end is below the grid and ``ci_high == max(bers)`` that the upper
end is at or beyond it: the grid does not resolve that end.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from boosting.inference import Calibration, ErrorInjector, ErrorSpec, _seed_of, confidence_interval

__all__ = [
    "ToleranceMeasureError",
    "MIN_SEEDS",
    "STATUSES",
    "Tolerance",
    "CurveResult",
    "correctness",
    "reference_correctness",
    "curve_seed",
    "curve",
    "crossing",
    "tolerable_ber",
    "default_bers",
    "measure",
    "gain",
]

log = logging.getLogger(__name__)

MIN_SEEDS = 20
"""Fewest error seeds :func:`measure` accepts without a warning (issue 15)."""

STATUSES = ("interpolated", "above_range", "below_range")
"""Outcomes of :func:`crossing`."""

Reference = Union[float, np.ndarray]


class ToleranceMeasureError(ValueError):
    """Bad input to a tolerable-BER measurement (one line)."""


# ----------------------------------------------------------------------- evaluation
def _check_xy(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ToleranceMeasureError("x and y must be tensors")
    if y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise ToleranceMeasureError(f"need x (N, ...) and y (N,) with N >= 1, got {tuple(x.shape)} and {tuple(y.shape)}")


def _check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    out = []
    for s in seeds:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0:
            raise ToleranceMeasureError(f"error seeds must be non-negative integers, got {s!r}")
        out.append(int(s))
    if not out:
        raise ToleranceMeasureError("give at least one error seed")
    return tuple(out)


def _predict_correct(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                     device: torch.device) -> np.ndarray:
    out = np.empty(len(y), dtype=bool)
    for i in range(0, len(y), batch_size):
        pred = net(x[i:i + batch_size].to(device)).argmax(dim=1).cpu()
        out[i:i + batch_size] = (pred == y[i:i + batch_size]).numpy()
    return out


def correctness(net: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: Optional[ErrorSpec],
                seeds: Sequence[int], calibration: Optional[Calibration] = None,
                batch_size: int = 256) -> np.ndarray:
    """Per-sample top-1 correctness of ``net`` under ``spec`` for each error seed.

    Parameters
    ----------
    net : nn.Module
        The network (run in eval mode without gradients; its mode is restored).
    x, y : torch.Tensor
        Inputs ``(N, ...)`` and labels ``(N,)``.
    spec : ErrorSpec or None
        Errors to inject; None evaluates the clean (fp32, no injector) network once.
    seeds : sequence of int
        Error seeds, each passed to :meth:`~boosting.inference.ErrorInjector.reseed` as
        :func:`boosting.inference.evaluate` does (ignored when ``spec`` is None).
    calibration : Calibration, optional
        For the injector (required with mitigation).
    batch_size : int
        Evaluation batch size.

    Returns
    -------
    np.ndarray
        bool, ``(len(seeds), N)``; ``(1, N)`` when ``spec`` is None.
    """
    _check_xy(x, y)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ToleranceMeasureError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    seeds = _check_seeds(seeds) if spec is not None else ()
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    was_training = net.training
    rows: list[np.ndarray] = []
    try:
        net.eval()
        with torch.no_grad():
            if spec is None:
                rows.append(_predict_correct(net, x, y, batch_size, device))
            else:
                with ErrorInjector(net, spec, calibration) as injector:
                    for s in seeds:
                        injector.reseed(s)
                        rows.append(_predict_correct(net, x, y, batch_size, device))
    finally:
        net.train(was_training)
    return np.stack(rows)


def reference_correctness(net: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: ErrorSpec,
                          calibration: Optional[Calibration] = None) -> np.ndarray:
    """Clean per-sample correctness of ``net`` in the numeric format and mitigation of ``spec``.

    ``spec`` at BER 0 without overrides goes through the injector: weights and IFMs are stored
    in ``spec.fmt`` and read back (and mitigated against the calibrated ranges) with no bit
    flipped, so this is the accuracy the goal of an error-free memory in that format is.

    Returns
    -------
    np.ndarray
        bool ``(N,)``.
    """
    if not isinstance(spec, ErrorSpec):
        raise ToleranceMeasureError(f"spec must be an ErrorSpec, got {type(spec).__name__}")
    clean = replace(spec, model=spec.model.with_ber(0.0), overrides={})
    return correctness(net, x, y, clean, (0,), calibration)[0]


def _check_bers(bers: Sequence[float]) -> np.ndarray:
    arr = np.asarray([float(b) for b in bers], dtype=float)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0) or np.any(arr > 1):
        raise ToleranceMeasureError(f"BERs must be a non-empty list of numbers in (0, 1], got {list(bers)!r}")
    return arr


def curve_seed(base_seed: int, ber: float, seed: int) -> int:
    """The error seed (reseed index) of ``seed`` at ``ber``: ``_seed_of(base_seed, round(-1000 log10 ber), seed)``."""
    return _seed_of(int(base_seed), _ber_key(ber), int(seed))


def _ber_key(ber: float) -> int:
    return int(round(-1000.0 * math.log10(float(ber))))


def curve(net: nn.Module, x: torch.Tensor, y: torch.Tensor, base_spec: ErrorSpec, bers: Sequence[float],
          seeds: Sequence[int], calibration: Optional[Calibration] = None, batch_size: int = 256, *,
          stop_below: Optional[float] = None, stop_after: int = 2) -> np.ndarray:
    """Per-sample correctness at every uniform BER of a grid, fresh error masks at each.

    Parameters
    ----------
    net, x, y, calibration, batch_size
        As in :func:`correctness`.
    base_spec : ErrorSpec
        Model shape, format, mitigation, layout and seed; its BER and overrides are replaced.
    bers : sequence of float
        BERs in (0, 1] (any order; no two within 0.001 decade of each other).
    seeds : sequence of int
        Error seeds; seed ``s`` at BER ``b`` uses the reseed index :func:`curve_seed`.
    stop_below : float, optional
        Early stop: once the mean accuracy has been below this at ``stop_after`` consecutive BERs
        (in increasing order), the higher BERs are not evaluated and count as all wrong. Accuracy
        only falls with the BER, so this can only lower a resampled crossing that would have run
        past them; give a value below every goal the curve is scored against.
    stop_after : int
        Consecutive points below ``stop_below`` before stopping (>= 1).

    Returns
    -------
    np.ndarray
        bool ``(len(bers), len(seeds), N)``, in the order of ``bers``.
    """
    if not isinstance(base_spec, ErrorSpec):
        raise ToleranceMeasureError(f"base_spec must be an ErrorSpec, got {type(base_spec).__name__}")
    arr = _check_bers(bers)
    seeds = _check_seeds(seeds)
    keys = [_ber_key(b) for b in arr]
    if len(set(keys)) != len(keys):
        raise ToleranceMeasureError("two BERs of the grid lie within 0.001 decade of each other (they would share "
                                    "error masks)")
    if not (isinstance(stop_after, int) and stop_after >= 1):
        raise ToleranceMeasureError(f"stop_after must be an integer >= 1, got {stop_after!r}")
    out: list[Optional[np.ndarray]] = [None] * arr.size
    below = 0
    for i in np.argsort(arr, kind="stable"):
        b, k = arr[i], keys[i]
        if stop_below is not None and below >= stop_after:
            out[i] = np.zeros((len(seeds), len(y)), dtype=bool)
            continue
        spec = replace(base_spec, model=base_spec.model.with_ber(float(b)), overrides={})
        mask_seeds = [_seed_of(base_spec.seed, k, s) for s in seeds]
        out[i] = correctness(net, x, y, spec, mask_seeds, calibration, batch_size)
        acc = float(out[i].mean())  # type: ignore[union-attr]
        below = below + 1 if stop_below is not None and acc < stop_below else 0
        log.debug("curve: BER %.3e accuracy %.4f over %d seeds", b, acc, len(seeds))
    return np.stack(out)


# ------------------------------------------------------------------------- crossing
def _crossings(log_bers: np.ndarray, acc: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised crossing: ``acc`` (K, B) sorted by BER, ``goal`` (K,) -> (BER (K,), status code (K,)).

    Status codes index :data:`STATUSES`.
    """
    below = acc < goal[:, None]
    has = below.any(axis=1)
    first = np.argmax(below, axis=1)
    k = np.arange(acc.shape[0])
    status = np.where(~has, 1, np.where(first == 0, 2, 0))
    i1 = np.clip(first, 1, None)
    i0 = i1 - 1
    a0, a1 = acc[k, i0], acc[k, i1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(a0 > a1, (a0 - goal) / (a0 - a1), 0.0)
    t = np.clip(t, 0.0, 1.0)
    x = log_bers[i0] + t * (log_bers[i1] - log_bers[i0])
    ber = np.where(status == 0, 10.0 ** x, np.where(status == 1, 10.0 ** log_bers[-1], 0.0))
    return ber, status


def _sorted_curve(bers: Sequence[float], accuracy: Any) -> tuple[np.ndarray, np.ndarray]:
    b = _check_bers(bers)
    acc = np.asarray(accuracy, dtype=float)
    if acc.shape[-1] != b.size:
        raise ToleranceMeasureError(f"need one accuracy per BER: {b.size} BERs, {acc.shape[-1]} accuracies")
    order = np.argsort(b, kind="stable")
    return b[order], acc[..., order]


def crossing(bers: Sequence[float], accuracy: Sequence[float], goal: float) -> tuple[float, str]:
    """Where the accuracy curve crosses ``goal``, interpolated on ``log10(BER)``.

    Parameters
    ----------
    bers : sequence of float
        BERs in (0, 1], any order.
    accuracy : sequence of float
        Accuracy at each BER (same order).
    goal : float
        Accuracy goal.

    Returns
    -------
    (ber, status) : tuple
        ``status`` in :data:`STATUSES` (see the module docstring): ``"interpolated"`` with the
        crossing, ``"above_range"`` with the highest BER, ``"below_range"`` with 0.0.
    """
    b, acc = _sorted_curve(bers, accuracy)
    if acc.ndim != 1 or not np.all(np.isfinite(acc)):
        raise ToleranceMeasureError("accuracy must be a list of finite numbers")
    if not math.isfinite(float(goal)):
        raise ToleranceMeasureError(f"goal must be a finite number, got {goal!r}")
    ber, status = _crossings(np.log10(b), acc[None, :], np.asarray([float(goal)]))
    return float(ber[0]), STATUSES[int(status[0])]


# ------------------------------------------------------------------------ tolerance
@dataclass(frozen=True)
class Tolerance:
    """A tolerable BER with its bootstrap interval.

    Attributes
    ----------
    ber : float
        Point estimate (:func:`crossing` of the mean accuracy over all seeds and samples).
    ci_low, ci_high : float
        Percentile-bootstrap interval (censored ends at 0.0 / the highest BER).
    goal : float
        ``reference - max_drop``.
    reference : float
        The reference accuracy the goal is anchored at.
    max_drop : float
        Tolerated absolute accuracy drop.
    status : str
        Status of the point estimate (:data:`STATUSES`).
    confidence : float
        Interval level.
    n_seeds, n_samples, n_boot : int
        Error seeds, test samples and bootstrap resamples.
    """

    ber: float
    ci_low: float
    ci_high: float
    goal: float
    reference: float
    max_drop: float
    status: str
    confidence: float
    n_seeds: int
    n_samples: int
    n_boot: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"ber": self.ber, "ci_low": self.ci_low, "ci_high": self.ci_high, "goal": self.goal,
                "reference": self.reference, "max_drop": self.max_drop, "status": self.status,
                "confidence": self.confidence, "n_seeds": self.n_seeds, "n_samples": self.n_samples,
                "n_boot": self.n_boot}


def _check_correct(correct: Any, n_bers: int) -> np.ndarray:
    c = np.asarray(correct)
    if c.ndim != 3 or c.shape[0] != n_bers or c.shape[1] == 0 or c.shape[2] == 0:
        raise ToleranceMeasureError(f"correct must be (bers={n_bers}, seeds, samples), got shape {c.shape}")
    if c.dtype != bool:
        if not np.all((c == 0) | (c == 1)):
            raise ToleranceMeasureError("correct must hold booleans (or 0/1)")
        c = c.astype(bool)
    return c


def _reference_of(reference: Reference, n: int) -> tuple[float, Optional[np.ndarray]]:
    if isinstance(reference, np.ndarray) and reference.ndim == 1:
        if reference.shape[0] != n:
            raise ToleranceMeasureError(f"reference correctness has {reference.shape[0]} samples, the curve {n}")
        r = reference.astype(float)
        return float(r.mean()), r
    if isinstance(reference, (int, float, np.floating)) and not isinstance(reference, bool) \
            and 0.0 <= float(reference) <= 1.0:
        return float(reference), None
    raise ToleranceMeasureError(f"reference must be an accuracy in [0, 1] or a (N,) correctness array, "
                                f"got {reference!r}")


def _counts(draws: np.ndarray, n: int) -> np.ndarray:
    """Per row of ``draws`` (K, n) of indices in [0, n), how often each index occurs: (K, n) floats."""
    k = draws.shape[0]
    flat = (draws + n * np.arange(k)[:, None]).ravel()
    return np.bincount(flat, minlength=k * n).reshape(k, n).astype(float)


def _resamples(seed: int, n_boot: int, n_seeds: int, n_samples: int, ref_acc: float,
               ref_arr: Optional[np.ndarray], max_drop: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bootstrap's draws: seed weights ``(K, S)``, sample weights ``(K, N)`` (times each is drawn) and goals ``(K,)``."""
    rng = np.random.default_rng(int(seed))
    seed_w = _counts(rng.integers(0, n_seeds, (n_boot, n_seeds)), n_seeds)
    sample_w = _counts(rng.integers(0, n_samples, (n_boot, n_samples)), n_samples)
    goal = (sample_w @ ref_arr / n_samples if ref_arr is not None else np.full(n_boot, ref_acc)) - max_drop
    return seed_w, sample_w, goal


def _boot_crossings(c: np.ndarray, log_b: np.ndarray, seed_w: np.ndarray, sample_w: np.ndarray,
                    goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crossings of the resampled mean-accuracy curves of ``c`` (B, S, N, sorted by BER): (BER (K,), status (K,))."""
    n_bers, n_seeds, n_samples = c.shape
    per_seed = (c.reshape(n_bers * n_seeds, n_samples).astype(float) @ sample_w.T).reshape(n_bers, n_seeds, -1)
    return _crossings(log_b, np.einsum("bsk,ks->kb", per_seed, seed_w) / (n_seeds * n_samples), goal)


def tolerable_ber(correct: Any, bers: Sequence[float], reference: Reference, max_drop: float, *,
                  n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> Tolerance:
    """Tolerable BER at ``reference - max_drop`` with a bootstrap confidence interval.

    Parameters
    ----------
    correct : array-like of bool
        ``(B, S, N)``: correctness per BER, error seed and test sample (:func:`curve`).
    bers : sequence of float
        The ``B`` BERs (order of ``correct``'s first axis).
    reference : float or np.ndarray
        The reference accuracy, or the reference network's per-sample correctness ``(N,)`` on the
        same samples (then resampled with the samples, so the goal moves with each resample).
    max_drop : float
        Tolerated absolute drop, in [0, 1].
    n_boot : int
        Bootstrap resamples (>= 1).
    confidence : float
        Interval level, in (0, 1).
    seed : int
        Seed of the bootstrap's ``numpy.random.Generator``.

    Returns
    -------
    Tolerance
        Point estimate from all the data; interval = percentiles of the crossings of ``n_boot``
        resamples, each drawing the ``S`` seeds and the ``N`` samples independently with
        replacement (censored resamples count at the grid's bounds; module docstring).
    """
    b = _check_bers(bers)
    c = _check_correct(correct, b.size)
    n_bers, n_seeds, n_samples = c.shape
    if not (isinstance(max_drop, (int, float)) and not isinstance(max_drop, bool) and 0.0 <= max_drop <= 1.0):
        raise ToleranceMeasureError(f"max_drop must be in [0, 1], got {max_drop!r}")
    if not (isinstance(n_boot, int) and n_boot >= 1):
        raise ToleranceMeasureError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ToleranceMeasureError(f"confidence must be in (0, 1), got {confidence!r}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ToleranceMeasureError(f"seed must be a non-negative integer, got {seed!r}")
    ref_acc, ref_arr = _reference_of(reference, n_samples)
    order = np.argsort(b, kind="stable")
    b, c = b[order], c[order]
    log_b = np.log10(b)
    goal = ref_acc - float(max_drop)
    acc = c.mean(axis=(1, 2))
    point, status = _crossings(log_b, acc[None, :], np.asarray([goal]))

    seed_w, sample_w, boot_goal = _resamples(seed, n_boot, n_seeds, n_samples, ref_acc, ref_arr, float(max_drop))
    boot_ber, boot_status = _boot_crossings(c, log_b, seed_w, sample_w, boot_goal)
    alpha = 1.0 - confidence
    lo = float(np.quantile(boot_ber, alpha / 2, method="lower"))
    hi = float(np.quantile(boot_ber, 1 - alpha / 2, method="higher"))
    log.debug("tolerable BER at drop %g: %.3e [%.3e, %.3e] (%s; resamples below range %d, above %d of %d)",
              max_drop, point[0], lo, hi, STATUSES[int(status[0])], int(np.sum(boot_status == 2)),
              int(np.sum(boot_status == 1)), n_boot)
    return Tolerance(float(point[0]), lo, hi, goal, ref_acc, float(max_drop), STATUSES[int(status[0])],
                     float(confidence), n_seeds, n_samples, n_boot)


# -------------------------------------------------------------------------- measure
@dataclass(frozen=True)
class CurveResult:
    """An accuracy-vs-BER curve and the tolerable BER at several drops.

    Attributes
    ----------
    bers : tuple of float
        The BERs, increasing.
    mean, ci_low, ci_high : tuple of float
        Mean accuracy at each BER over the seeds and its interval
        (:func:`boosting.inference.confidence_interval` over the per-seed accuracies).
    reference : float
        Reference accuracy (the goal's anchor).
    tolerable : dict
        ``{max_drop: Tolerance}``.
    """

    bers: tuple[float, ...]
    mean: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    reference: float
    tolerable: Mapping[float, Tolerance] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``tolerable`` as a list of :meth:`Tolerance.to_dict`, by drop)."""
        return {"bers": list(self.bers), "mean": list(self.mean), "ci_low": list(self.ci_low),
                "ci_high": list(self.ci_high), "reference": self.reference,
                "tolerable": [self.tolerable[d].to_dict() for d in sorted(self.tolerable)]}


def default_bers(lo: float = 1e-6, hi: float = 1e-1, per_decade: int = 4) -> list[float]:
    """BERs evenly spaced on ``log10`` from ``lo`` to ``hi`` (both included), ``per_decade`` per decade."""
    if not (0.0 < lo < hi <= 1.0):
        raise ToleranceMeasureError(f"need 0 < lo < hi <= 1, got {lo!r}, {hi!r}")
    if not (isinstance(per_decade, int) and per_decade >= 1):
        raise ToleranceMeasureError(f"per_decade must be an integer >= 1, got {per_decade!r}")
    a, z = math.log10(lo), math.log10(hi)
    n = max(1, int(round((z - a) * per_decade)))
    return [float(10.0 ** v) for v in np.linspace(a, z, n + 1)]


def measure(net: nn.Module, x: torch.Tensor, y: torch.Tensor, base_spec: ErrorSpec, *, bers: Sequence[float],
            seeds: Sequence[int] = tuple(range(20)), reference: Optional[Reference] = None,
            max_drops: Sequence[float] = (0.01, 0.02, 0.05), calibration: Optional[Calibration] = None,
            n_boot: int = 1000, seed: int = 0) -> CurveResult:
    """Accuracy curve of ``net`` over ``bers`` and its tolerable BER at each drop, with intervals.

    Parameters
    ----------
    net, x, y, base_spec, calibration
        As in :func:`curve`.
    bers : sequence of float
        The grid (:func:`default_bers`).
    seeds : sequence of int
        Error seeds (a warning is logged below :data:`MIN_SEEDS`).
    reference : float or np.ndarray, optional
        The goal's anchor: an accuracy or the original network's per-sample correctness
        (:func:`reference_correctness`). None: ``reference_correctness`` of ``net`` itself.
    max_drops : sequence of float
        Drops to report.
    n_boot, seed
        Bootstrap resamples and seed (:func:`tolerable_ber`).

    Returns
    -------
    CurveResult
    """
    seeds = _check_seeds(seeds)
    if len(seeds) < MIN_SEEDS:
        log.warning("measuring a tolerable BER with %d error seeds (fewer than %d): the interval is unreliable",
                    len(seeds), MIN_SEEDS)
    if reference is None:
        reference = reference_correctness(net, x, y, base_spec, calibration)
    arr = _check_bers(bers)
    order = np.argsort(arr, kind="stable")
    arr = arr[order]
    correct = curve(net, x, y, base_spec, arr, seeds, calibration)
    n = correct.shape[2]
    ref_acc, _ = _reference_of(reference, n)
    stats = [confidence_interval(list(correct[i].mean(axis=1)), n) for i in range(arr.size)]
    tol = {float(d): tolerable_ber(correct, arr, reference, float(d), n_boot=n_boot, seed=seed) for d in max_drops}
    return CurveResult(tuple(float(b) for b in arr), tuple(s[0] for s in stats), tuple(s[1] for s in stats),
                       tuple(s[2] for s in stats), ref_acc, tol)


# ------------------------------------------------------------------------------ gain
def gain(correct_a: Any, correct_b: Any, bers: Sequence[float], reference: Reference, max_drop: float, *,
         n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """How many times network A's tolerable BER is network B's, with a paired bootstrap interval.

    Both curves must be measured on the same BER grid, error-seed count and test samples (the
    samples pair up; the error seeds of the two networks are independent draws, resampled with
    the same indices, which is valid because they are exchangeable). Each resample draws the
    seeds and the samples once and computes both crossings against the same resampled goal
    (``reference - max_drop``), so the uncertainty of the shared goal cancels in the ratio.

    Parameters
    ----------
    correct_a, correct_b : array-like of bool
        ``(B, S, N)`` correctness of the two networks (:func:`curve`).
    bers : sequence of float
        The ``B`` BERs.
    reference : float or np.ndarray
        The goal's anchor (the original network's accuracy or per-sample correctness).
    max_drop : float
        Tolerated absolute drop, in [0, 1].
    n_boot, confidence, seed
        As in :func:`tolerable_ber`.

    Returns
    -------
    dict
        ``ratio`` (A / B of the point estimates), ``ci_low``, ``ci_high`` (percentiles of the
        resampled ratios), ``a`` and ``b`` (each :meth:`Tolerance.to_dict`), ``censored`` (a
        point estimate or an interval end hit the grid: a crossing below the grid counts as the
        lowest BER, one above it as the highest, so the ratio is then a bound), ``confidence``.
    """
    b = _check_bers(bers)
    ca, cb = _check_correct(correct_a, b.size), _check_correct(correct_b, b.size)
    if ca.shape != cb.shape:
        raise ToleranceMeasureError(f"the two curves differ in shape: {ca.shape} and {cb.shape}")
    ta = tolerable_ber(ca, b, reference, max_drop, n_boot=n_boot, confidence=confidence, seed=seed)
    tb = tolerable_ber(cb, b, reference, max_drop, n_boot=n_boot, confidence=confidence, seed=seed)
    _n_bers, n_seeds, n_samples = ca.shape
    ref_acc, ref_arr = _reference_of(reference, n_samples)
    order = np.argsort(b, kind="stable")
    b, ca, cb = b[order], ca[order], cb[order]
    log_b = np.log10(b)
    seed_w, sample_w, goal = _resamples(seed, n_boot, n_seeds, n_samples, ref_acc, ref_arr, float(max_drop))
    (ba, sa), (bb, sb) = (_boot_crossings(ca, log_b, seed_w, sample_w, goal),
                          _boot_crossings(cb, log_b, seed_w, sample_w, goal))
    floor = float(b[0])
    ratios = np.maximum(ba, floor) / np.maximum(bb, floor)
    alpha = 1.0 - confidence
    lo = float(np.quantile(ratios, alpha / 2, method="lower"))
    hi = float(np.quantile(ratios, 1 - alpha / 2, method="higher"))
    censored = bool(ta.status != "interpolated" or tb.status != "interpolated"
                    or np.mean((sa != 0) | (sb != 0)) > alpha / 2)
    return {"ratio": max(ta.ber, floor) / max(tb.ber, floor), "ci_low": lo, "ci_high": hi, "a": ta.to_dict(),
            "b": tb.to_dict(), "censored": censored, "confidence": float(confidence), "n_boot": int(n_boot)}

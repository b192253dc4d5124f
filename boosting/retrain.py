"""Error-aware retraining ("boosting", EDEN, MICRO 2019, Sec. 4.3 / Fig. 7).

The network is trained while an :class:`~boosting.inference.ErrorInjector` is active: the
forward pass reads weights and input feature maps through the error model of an
:class:`~boosting.inference.ErrorSpec`, and the straight-through estimator of the injector
sends the gradients to the **clean** weights, which the optimizer updates. The bit error rate
rises gradually from a small start to the target (a :class:`Curriculum`), so the network first
adapts to rare errors and then to the target rate.

The retraining error model is whatever ``spec`` says, independent of the one used for
evaluation: retrain under the chip's fitted model (matched) or under another one, e.g.
uniform (mismatched), and compare with :func:`boosting.inference.evaluate`.

Randomness
----------
Everything derives from ``seed`` and ``spec.seed``:

- the error patterns: the injector runs with seed ``_seed_of(spec.seed, seed, tag)`` (so
  retraining never sees the exact error masks that :func:`~boosting.inference.evaluate` draws
  from ``spec.seed`` and its evaluation seeds) and is re-seeded with the global step index
  before every batch (:meth:`~boosting.inference.ErrorInjector.reseed`);
- the data order: a dataset is batched in a permutation drawn per epoch,
  ``torch.randperm(N, generator)`` with a ``torch.Generator`` seeded by ``(seed, epoch)``
  (:func:`boosting.data.iter_batches`: a ``TensorDataset`` or a ``Subset`` of one by tensor
  indexing, the same batches a ``DataLoader`` with that order as sampler gives); a caller's
  ``DataLoader`` must be seeded (``generator=``) if it shuffles, and its generator state is
  checkpointed;
- the global torch RNG (dropout, a loader without a generator) is forked, so the caller's
  state is untouched, and seeded by ``(seed, epoch)`` at the start of every epoch.

Checkpoints
-----------
After every epoch the network, the optimizer, the epoch count, the global step, the
per-epoch history and the loader's generator state are written to ``checkpoint_path``
atomically (:func:`softmc_host.files.atomic_write`: a temporary file in the same directory,
fsync-ed, then renamed). A later call with the
same arguments resumes from it, and finishes with the same weights, bit for bit, as a run
that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from boosting.data import iter_batches
from boosting.inference import (
    Calibration,
    ErrorInjector,
    ErrorSpec,
    _batches,
    _device_of,
    _seed_of,
    calibrate,
    evaluate,
    injectable_layers,
)
from softmc_host.files import atomic_write

__all__ = [
    "RetrainError",
    "SCHEDULES",
    "OPTIMIZERS",
    "ERRORS_IN",
    "MIXES",
    "CLIP_MODES",
    "SELECTS",
    "Curriculum",
    "spec_at",
    "EpochStats",
    "RetrainResult",
    "retrain",
]

SCHEDULES = ("log", "linear")
"""Curriculum shapes: geometric (``log``) or arithmetic (``linear``) interpolation of the BER."""

OPTIMIZERS = ("adam", "sgd")
"""Optimizers of :func:`retrain`: Adam (default) or SGD with momentum 0.9."""

ERRORS_IN = ("weights+ifm", "weights")
"""Where :func:`retrain` puts bit errors: weights and input feature maps, or weights only."""

MIXES = ("batches", "sum")
"""How clean training mixes in: separate clean batches (``clean_fraction``), or clean + error loss per batch."""

CLIP_MODES = ("relative", "absolute")
"""How ``weight_clip`` is read: a fraction of each layer's max |weight|, or the bound itself."""

SELECTS = ("last", "val")
"""Which weights :func:`retrain` keeps: the last epoch's, or the best validation score's."""

_CHECKPOINT_VERSION = 1
_ERROR_TAG = 0x5254
_DATA_TAG = 0x4441
_TORCH_TAG = 0x5447
_SELECT_TAG = 0x5345

PathLike = Union[str, os.PathLike]


class RetrainError(ValueError):
    """Bad retraining arguments, or a checkpoint that does not belong to this run."""


def _check_ber(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise RetrainError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


# ------------------------------------------------------------------------ curriculum
@dataclass(frozen=True)
class Curriculum:
    """A BER that rises from ``start_ber`` to ``target_ber`` over ``warmup_epochs`` epochs.

    The training progress at ``epoch`` (0-based) and a fraction ``step_fraction`` of it is
    ``p = min(1, (epoch + step_fraction) / warmup_epochs)`` (1 when ``warmup_epochs`` is 0),
    and the BER is

    - ``log``: ``start_ber * (target_ber / start_ber) ** p`` (equal factors per epoch, the
      natural scale of bit error rates; plain linear if ``start_ber`` is 0);
    - ``linear``: ``start_ber + (target_ber - start_ber) * p``.

    It is non-decreasing in the progress, equals ``start_ber`` at 0 and ``target_ber`` from
    epoch ``warmup_epochs`` on. :func:`retrain` uses the BER at the start of each epoch
    (``step_fraction=0``): epoch 0 runs at ``start_ber``, epoch ``warmup_epochs`` and later at
    ``target_ber``.

    Parameters
    ----------
    target_ber : float
        Final BER, in [0, 1].
    start_ber : float, optional
        First BER, in [0, ``target_ber``]; default ``target_ber / 100``.
    warmup_epochs : int
        Epochs to reach the target (>= 0).
    schedule : {"log", "linear"}
        Interpolation.
    """

    target_ber: float
    start_ber: Optional[float] = None
    warmup_epochs: int = 2
    schedule: str = "log"

    def __post_init__(self) -> None:
        target = _check_ber("target_ber", self.target_ber)
        start = target / 100.0 if self.start_ber is None else _check_ber("start_ber", self.start_ber)
        if start > target:
            raise RetrainError(f"start_ber {start:g} exceeds target_ber {target:g}")
        if not isinstance(self.warmup_epochs, int) or isinstance(self.warmup_epochs, bool) or self.warmup_epochs < 0:
            raise RetrainError(f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}")
        if self.schedule not in SCHEDULES:
            raise RetrainError(f"schedule must be 'log' or 'linear', got {self.schedule!r}")
        object.__setattr__(self, "target_ber", target)
        object.__setattr__(self, "start_ber", start)

    def progress(self, epoch: int, step_fraction: float = 0.0) -> float:
        """Fraction of the warm-up done at ``epoch`` plus ``step_fraction`` of it, in [0, 1]."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise RetrainError(f"epoch must be an integer >= 0, got {epoch!r}")
        if not isinstance(step_fraction, (int, float)) or not 0.0 <= step_fraction <= 1.0:
            raise RetrainError(f"step_fraction must be in [0, 1], got {step_fraction!r}")
        if self.warmup_epochs == 0:
            return 1.0
        return min(1.0, (epoch + float(step_fraction)) / self.warmup_epochs)

    def ber_at(self, epoch: int, step_fraction: float = 0.0) -> float:
        """The BER at ``epoch`` (0-based) plus ``step_fraction`` of it.

        Parameters
        ----------
        epoch : int
            Completed epochs, >= 0.
        step_fraction : float
            Fraction of ``epoch`` done, in [0, 1].

        Returns
        -------
        float
            Between ``start_ber`` and ``target_ber``; exactly ``target_ber`` once the
            warm-up is over.
        """
        p = self.progress(epoch, step_fraction)
        start, target = float(self.start_ber), self.target_ber  # type: ignore[arg-type]
        if p >= 1.0:
            return target
        if self.schedule == "log" and start > 0.0:
            return min(target, start * (target / start) ** p)
        return min(target, start + (target - start) * p)


def spec_at(spec: ErrorSpec, curriculum: Optional[Curriculum], epoch: int) -> ErrorSpec:
    """The error spec of ``epoch``: every BER of ``spec`` scaled by ``ber_at(epoch) / target_ber``.

    The model BER and each override are multiplied by the same factor (capped at 1), through
    :meth:`~errormodels.models.ErrorModel.with_ber`, so the model's shape and the ratios
    between layers are kept; once the warm-up is over the spec comes back unchanged. Without
    a curriculum, or with a zero target, ``spec`` itself is returned.

    Parameters
    ----------
    spec : ErrorSpec
        The target errors.
    curriculum : Curriculum, optional
        The ramp.
    epoch : int
        0-based epoch.

    Returns
    -------
    ErrorSpec
    """
    if curriculum is None or curriculum.target_ber == 0.0:
        return spec
    factor = curriculum.ber_at(epoch) / curriculum.target_ber
    if factor == 1.0:
        return spec
    return dataclasses.replace(spec, model=spec.model.with_ber(min(1.0, spec.model.ber * factor)),
                               overrides={k: min(1.0, v * factor) for k, v in spec.overrides.items()})


# -------------------------------------------------------------------------- results
@dataclass(frozen=True)
class EpochStats:
    """One retraining epoch.

    Attributes
    ----------
    epoch : int
        0-based epoch.
    loss : float
        Mean training loss over the batches that were applied (NaN if none); with
        ``mix="sum"`` the sum of the clean and the error cross-entropy.
    ber : float
        Model BER of the epoch's spec (:func:`spec_at`).
    steps : int
        Batches seen.
    skipped_steps : int
        Batches whose loss or gradients were not finite; no update was made for them.
    clean_steps : int
        Batches trained without bit errors (``clean_fraction``).
    val_clean, val_error, val_score : float or None
        Validation accuracy clean and under the selection spec, and the selection score,
        measured after the epoch (None without validation data or a score function; with
        ``score=`` only ``val_score``).
    """

    epoch: int
    loss: float
    ber: float
    steps: int
    skipped_steps: int
    clean_steps: int = 0
    val_clean: Optional[float] = None
    val_error: Optional[float] = None
    val_score: Optional[float] = None


@dataclass(frozen=True)
class RetrainResult:
    """Outcome of :func:`retrain`.

    Attributes
    ----------
    epochs : tuple of EpochStats
        Every epoch, including those restored from a checkpoint.
    losses : tuple of float
        Per-epoch mean training loss.
    bers : tuple of float
        Per-epoch model BER used.
    state_dict : dict
        Final clean weights (detached copies of ``net.state_dict()``); ``net`` holds them too.
        With ``select="val"`` those of the best-scoring epoch.
    resumed_from : int
        Epochs restored from the checkpoint (0 for a fresh run).
    best_epoch : int or None
        The epoch whose weights were kept (``select="val"``), else None.
    calibration : Calibration or None
        The calibration in use at the end (the recalibrated one with ``recalibrate=True``).
    """

    epochs: tuple[EpochStats, ...]
    losses: tuple[float, ...]
    bers: tuple[float, ...]
    state_dict: dict[str, torch.Tensor]
    resumed_from: int
    best_epoch: Optional[int] = None
    calibration: Optional[Calibration] = None


# ------------------------------------------------------------------------- retrain
def _make_optimizer(name: str, params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def _loader_generator(loader: Any) -> Optional[torch.Generator]:
    if isinstance(loader, DataLoader):
        if isinstance(loader.sampler, RandomSampler) and loader.sampler.generator is None:
            raise RetrainError("the DataLoader shuffles without a seeded generator: pass "
                               "generator=torch.Generator().manual_seed(...)")
        return loader.generator
    return None


def _epoch_batches(data: Any, epoch: int, seed: int, batch_size: int) -> Iterable[Any]:
    """A dataset in the epoch's seeded permutation (:func:`boosting.data.iter_batches`), or the caller's iterable."""
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        gen = torch.Generator().manual_seed(_seed_of(seed, epoch, _DATA_TAG))
        return iter_batches(data, batch_size, torch.randperm(len(data), generator=gen))  # type: ignore[arg-type]
    return data


def _eval_batches(data: Any) -> Iterable[Any]:
    """A dataset in fixed order in batches of 256 (:func:`boosting.data.iter_batches`), or the caller's iterable as it is."""
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        return iter_batches(data, 256)
    return data


def _grads_finite(grads: list[torch.Tensor]) -> bool:
    """Whether every gradient is finite: one fused norm, the per-tensor check only if it is not finite
    (a finite gradient whose norm overflows float32 is still finite)."""
    if not grads:
        return True
    if bool(torch.isfinite(torch.nn.utils.get_total_norm(grads, 2.0, foreach=True))):
        return True
    return all(bool(torch.isfinite(g).all()) for g in grads)


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` through :func:`softmc_host.files.atomic_write` (complete or absent, fsync-ed)."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def _fingerprint(spec: ErrorSpec, curriculum: Optional[Curriculum], lr: float, optimizer: str,
                 weight_decay: float, seed: int, batch_size: int, extra: dict[str, Any]) -> str:
    base = (spec, curriculum, lr, optimizer, weight_decay, seed, batch_size)
    return repr(base + (extra,)) if extra else repr(base)  # the old fingerprint when no new setting is used


def _clean_batch(step: int, clean_fraction: float) -> bool:
    """Whether global step ``step`` is a clean batch: exactly ``clean_fraction`` of them, evenly spaced."""
    return clean_fraction > 0.0 and math.floor((step + 1) * clean_fraction) > math.floor(step * clean_fraction)


def _weights_only(spec: ErrorSpec, layers: list[str]) -> ErrorSpec:
    """``spec`` with no errors in the input feature maps (every IFM override 0)."""
    overrides = {k: v for k, v in spec.overrides.items() if k[1] != "ifm"}
    overrides.update({(name, "ifm"): 0.0 for name in layers})
    return dataclasses.replace(spec, overrides=overrides)


def _error_free(spec: ErrorSpec) -> ErrorSpec:
    """``spec`` at BER 0 everywhere: the same format, mitigation and placement, no bit errors."""
    return dataclasses.replace(spec, model=spec.model.with_ber(0.0), overrides={k: 0.0 for k in spec.overrides})


def _with_seed(spec: ErrorSpec, seed: int) -> ErrorSpec:
    return dataclasses.replace(spec, seed=seed)


def _layer_kw(spec: ErrorSpec) -> dict[str, Any]:
    """``{"layer_types": ...}`` of a spec that selects layer types (for calibrate / injectable_layers)."""
    types = getattr(spec, "layer_types", None)
    return {} if types is None else {"layer_types": types}


class _Switch:
    """Keeps at most one of several injectors active, entering and leaving them as batches need."""

    def __init__(self) -> None:
        self.active: Optional[ErrorInjector] = None

    def use(self, injector: ErrorInjector) -> ErrorInjector:
        if self.active is not injector:
            self.close()
            injector.__enter__()
            self.active = injector
        return injector

    def close(self) -> None:
        if self.active is not None:
            self.active.__exit__(None, None, None)
            self.active = None


def _check_number(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        raise RetrainError(f"{name} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def retrain(net: nn.Module, train_loader: Union[Dataset, Iterable[Any]], spec: ErrorSpec, *, epochs: int,
            lr: float = 1e-3, curriculum: Optional[Curriculum] = None, calibration: Optional[Calibration] = None,
            seed: int = 0, optimizer: str = "adam", weight_decay: float = 0.0, batch_size: int = 32,
            checkpoint_path: Optional[PathLike] = None, resume: bool = True,
            on_epoch: Optional[Callable[[EpochStats], None]] = None, errors_in: str = "weights+ifm",
            clean_fraction: float = 0.0, mix: str = "batches", weight_clip: Optional[float] = None,
            clip_mode: str = "relative", recalibrate: bool = False,
            calib_data: Optional[Union[Dataset, Iterable[Any]]] = None,
            val_data: Optional[Union[Dataset, Iterable[Any]]] = None, select: str = "last",
            select_spec: Optional[ErrorSpec] = None, select_seeds: Sequence[int] = (0, 1, 2),
            select_clean_weight: float = 0.5,
            score: Optional[Callable[[nn.Module], float]] = None) -> RetrainResult:
    """Retrain ``net`` in place with errors in the forward pass and updates on the clean weights.

    Each epoch builds its spec with :func:`spec_at` (the BERs of ``spec`` scaled by the
    curriculum), enters an :class:`~boosting.inference.ErrorInjector` with it, and for every
    batch re-seeds the injector with the global step index, computes the cross-entropy of the
    corrupted forward pass in training mode, and updates the clean weights (the injector's
    straight-through estimator). Batches with a non-finite loss (checked before backward) or
    gradient (one fused norm of all gradients per step; the per-tensor check only when that
    norm is not finite) make no update and are counted in :attr:`EpochStats.skipped_steps`.

    Recipe mechanics (:mod:`boosting.recipes` chooses them; all off by default):

    - ``clean_fraction``: that share of the batches (evenly spaced over the global steps) is
      trained in the same format and mitigation but without bit errors; ``mix="sum"`` instead
      uses the sum of the error-free and the corrupted cross-entropy on every batch (Stutz et
      al., MLSys 2021).
    - ``errors_in="weights"``: bit errors in the weights only (IFM BER 0; IFMs still quantized).
    - ``weight_clip``: after every optimizer step (and once before the first epoch) the
      weight of each layer that gets errors is clamped to ``[-w_max, w_max]``; ``clip_mode="absolute"`` takes
      ``w_max = weight_clip`` for every layer, ``"relative"`` ``w_max = weight_clip * max|w|``
      of the layer when retraining started (``weight_clip`` in (0, 1]). Biases are not clipped
      (they are not stored in approximate memory).
    - ``recalibrate``: the mitigation ranges and IFM scales are recomputed from the current
      network on ``calib_data`` at the start of every epoch (and before each validation)
      instead of using ``calibration``, the parent's, throughout.
    - ``select="val"``: after every epoch the network is scored on ``val_data``,
      ``select_clean_weight * clean + (1 - select_clean_weight) * under_errors`` (the mean
      accuracy under ``select_spec``, default ``spec``, over ``select_seeds``, with error
      masks seeded apart from the training and evaluation ones), or by ``score(net)``; the
      best epoch's weights are kept (ties: the later epoch).

    Parameters
    ----------
    net : nn.Module
        The network (usually trained clean first); updated in place, its train/eval mode is
        restored at the end.
    train_loader : Dataset or iterable
        A ``torch.utils.data.Dataset`` of ``(x, y)`` (batched by ``batch_size`` in a seeded
        permutation per epoch), or an iterable of ``(x, y)`` batches iterated once per epoch
        (a shuffling ``DataLoader`` must have a seeded ``generator``; its state is
        checkpointed so a resumed run sees the same order).
    spec : ErrorSpec
        The retraining errors at the end of the curriculum: model, per-layer overrides,
        format, mitigation. Its ``seed`` together with ``seed`` seeds the error patterns.
    epochs : int
        Total epochs (including any restored from a checkpoint), >= 1.
    lr : float
        Learning rate.
    curriculum : Curriculum, optional
        BER ramp; None trains at ``spec``'s BERs from the first epoch.
    calibration : Calibration, optional
        Passed to the injector (required with ``spec.mitigation`` unless ``recalibrate``).
    seed : int
        Seed of the data order, the error patterns and the global torch RNG in the run.
    optimizer : {"adam", "sgd"}
        Adam (default: robust to the gradient noise of the errors) or SGD with momentum 0.9.
    weight_decay : float
        L2 penalty of the optimizer.
    batch_size : int
        Batch size when ``train_loader`` is a dataset.
    checkpoint_path : str or Path, optional
        Written atomically after each epoch.
    resume : bool
        If ``checkpoint_path`` exists, continue from it (its arguments must match); False
        starts afresh and overwrites it.
    on_epoch : callable, optional
        Called with each finished epoch's :class:`EpochStats`, after its checkpoint.
    errors_in : {"weights+ifm", "weights"}
        Where the bit errors go.
    clean_fraction : float
        Share of error-free batches, in [0, 1] (``mix="batches"`` only).
    mix : {"batches", "sum"}
        Clean and error batches apart, or both losses summed per batch.
    weight_clip : float, optional
        ``w_max`` (absolute) or its fraction of the per-layer max (relative); None: no clipping.
    clip_mode : {"relative", "absolute"}
        How ``weight_clip`` is read.
    recalibrate : bool
        Recompute the calibration every epoch (needs ``calib_data``).
    calib_data : Dataset or iterable, optional
        Clean data for the recalibration.
    val_data : Dataset or iterable, optional
        Validation data: scored after every epoch when given.
    select : {"last", "val"}
        Keep the last epoch's weights, or the best-scoring epoch's (needs ``val_data`` or ``score``).
    select_spec : ErrorSpec, optional
        Errors of the validation score (default ``spec``, e.g. the target when training under
        another model).
    select_seeds : sequence of int
        Error seeds of the validation score.
    select_clean_weight : float
        Weight of the clean accuracy in the score, in [0, 1].
    score : callable, optional
        ``score(net) -> float``, replacing the built-in validation score.

    Returns
    -------
    RetrainResult

    Raises
    ------
    RetrainError
        Bad arguments, an unseeded shuffling loader, or a checkpoint from different arguments.
    """
    if not isinstance(spec, ErrorSpec):
        raise RetrainError(f"spec must be an ErrorSpec, got {type(spec).__name__}")
    if curriculum is not None and not isinstance(curriculum, Curriculum):
        raise RetrainError(f"curriculum must be a Curriculum, got {type(curriculum).__name__}")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise RetrainError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise RetrainError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(weight_decay, (int, float)) or not math.isfinite(weight_decay) or weight_decay < 0:
        raise RetrainError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise RetrainError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise RetrainError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if optimizer not in OPTIMIZERS:
        raise RetrainError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if errors_in not in ERRORS_IN:
        raise RetrainError(f"errors_in must be 'weights+ifm' or 'weights', got {errors_in!r}")
    if mix not in MIXES:
        raise RetrainError(f"mix must be 'batches' or 'sum', got {mix!r}")
    clean_fraction = _check_number("clean_fraction", clean_fraction, 0.0, 1.0)
    if mix == "sum" and clean_fraction > 0:
        raise RetrainError("clean_fraction applies to mix='batches' (mix='sum' trains clean and corrupted on every batch)")
    if clip_mode not in CLIP_MODES:
        raise RetrainError(f"clip_mode must be 'relative' or 'absolute', got {clip_mode!r}")
    if weight_clip is not None:
        weight_clip = _check_number("weight_clip", weight_clip, 0.0, 1.0 if clip_mode == "relative" else math.inf,
                                    lo_open=True)
    if recalibrate and calib_data is None:
        raise RetrainError("recalibrate needs calib_data (clean images to calibrate on)")
    if select not in SELECTS:
        raise RetrainError(f"select must be 'last' or 'val', got {select!r}")
    if select == "val" and val_data is None and score is None:
        raise RetrainError("select='val' needs val_data (or a score function)")
    if select_spec is not None and not isinstance(select_spec, ErrorSpec):
        raise RetrainError(f"select_spec must be an ErrorSpec, got {type(select_spec).__name__}")
    select_clean_weight = _check_number("select_clean_weight", select_clean_weight, 0.0, 1.0)
    select_seeds = tuple(int(s) for s in select_seeds)
    if (val_data is not None and score is None) and (not select_seeds or min(select_seeds) < 0):
        raise RetrainError("select_seeds must be non-negative integers, at least one")
    if score is not None and not callable(score):
        raise RetrainError("score must be a callable score(net) -> float")

    loader_gen = _loader_generator(train_loader)
    layers = injectable_layers(net, **_layer_kw(spec))
    if not layers:
        raise RetrainError("the network has no layer that gets errors")
    if errors_in == "weights":
        spec = _weights_only(spec, [n for n, _ in layers])
    # Sorted by name: the injector re-registers weights on exit, which changes parameters()' order.
    params = [p for _, p in sorted(net.named_parameters()) if p.requires_grad]
    if not params:
        raise RetrainError("the network has no trainable parameters")
    clip_weights = [(name, module.weight) for name, module in layers]  # the Parameters, outside any injector
    opt = _make_optimizer(optimizer, params, float(lr), float(weight_decay))
    error_seed = _seed_of(spec.seed, seed, _ERROR_TAG)
    eval_spec = _with_seed(select_spec if select_spec is not None else spec, _seed_of(spec.seed, seed, _SELECT_TAG))
    extra: dict[str, Any] = {}
    for key, value, default in (("errors_in", errors_in, "weights+ifm"), ("clean_fraction", clean_fraction, 0.0),
                                ("mix", mix, "batches"), ("weight_clip", weight_clip, None),
                                ("clip_mode", clip_mode if weight_clip is not None else "relative", "relative"),
                                ("recalibrate", bool(recalibrate), False), ("select", select, "last"),
                                ("select_spec", select_spec, None),
                                ("select_seeds", select_seeds if val_data is not None else (0, 1, 2), (0, 1, 2)),
                                ("select_clean_weight", select_clean_weight, 0.5),
                                ("validation", val_data is not None, False),
                                ("score", getattr(score, "__qualname__", repr(score)) if score else None, None)):
        if value != default:
            extra[key] = value
    fingerprint = _fingerprint(spec, curriculum, float(lr), optimizer, float(weight_decay), seed, batch_size, extra)
    device = _device_of(net)

    history: list[EpochStats] = []
    start_epoch = step = 0
    best_epoch: Optional[int] = None
    best_score = -math.inf
    best_state: Optional[dict[str, torch.Tensor]] = None
    bounds: Optional[list[float]] = None
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if path is not None and resume and path.exists():
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if ckpt.get("version") != _CHECKPOINT_VERSION or ckpt.get("fingerprint") != fingerprint:
            raise RetrainError(f"checkpoint {path} was written with other retraining arguments; "
                               "delete it or pass resume=False")
        net.load_state_dict(ckpt["net"])
        opt.load_state_dict(ckpt["optimizer"])
        start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        history = [EpochStats(**e) for e in ckpt["history"]]
        if ckpt.get("best_epoch") is not None:
            best_epoch, best_score, best_state = int(ckpt["best_epoch"]), float(ckpt["best_score"]), ckpt["best_state"]
        bounds = ckpt.get("clip_bounds")
        if loader_gen is not None:
            if ckpt["loader_rng"] is None:
                raise RetrainError(f"checkpoint {path} has no loader generator state but the loader has a generator")
            loader_gen.set_state(ckpt["loader_rng"].cpu())
    resumed_from = start_epoch

    def clip() -> None:
        if bounds is None:
            return
        with torch.no_grad():
            for (_, w), b in zip(clip_weights, bounds):
                w.clamp_(-b, b)

    if weight_clip is not None and bounds is None:
        bounds = [float(weight_clip) if clip_mode == "absolute" else
                  float(weight_clip) * float(w.detach().abs().max()) for _, w in clip_weights]
        clip()

    cal = calibration
    was_training = net.training
    fork_devices = [device] if device.type == "cuda" else []
    switch = _Switch()
    try:
        with torch.random.fork_rng(devices=fork_devices):
            for epoch in range(start_epoch, epochs):
                torch.manual_seed(_seed_of(seed, epoch, _TORCH_TAG))
                if recalibrate:
                    cal = calibrate(net, _eval_batches(calib_data), spec.fmt, **_layer_kw(spec))
                espec = _with_seed(spec_at(spec, curriculum, epoch), error_seed)
                # retrain reports no injection stats: the injectors skip their bookkeeping
                error_inj = ErrorInjector(net, espec, cal, collect_stats=False)
                clean_inj = ErrorInjector(net, _error_free(espec), cal, collect_stats=False) \
                    if (clean_fraction > 0 or mix == "sum") else None
                net.train()
                total = 0.0
                applied = seen = skipped = clean_steps = 0
                for x, y in _batches(_epoch_batches(train_loader, epoch, seed, batch_size)):
                    if y is None:
                        raise RetrainError("retraining needs (x, y) batches")
                    x, y = x.to(device), y.to(device)
                    kinds: list[ErrorInjector] = []
                    if mix == "sum":
                        kinds = [clean_inj, error_inj]  # type: ignore[list-item]
                    elif clean_inj is not None and _clean_batch(step, clean_fraction):
                        kinds = [clean_inj]
                        clean_steps += 1
                    else:
                        kinds = [error_inj]
                    opt.zero_grad(set_to_none=True)
                    loss_value = 0.0
                    finite = True
                    for injector in kinds:
                        switch.use(injector).reseed(step)
                        loss = F.cross_entropy(net(x), y)
                        if not torch.isfinite(loss):
                            finite = False
                            break
                        loss.backward()
                        loss_value += float(loss.detach())
                    step += 1
                    seen += 1
                    if finite and not _grads_finite([p.grad for p in params if p.grad is not None]):
                        finite = False
                    if not finite:
                        opt.zero_grad(set_to_none=True)
                        skipped += 1
                        continue
                    opt.step()
                    clip()
                    total += loss_value
                    applied += 1
                switch.close()
                opt.zero_grad(set_to_none=True)
                val_clean = val_error = val_score = None
                if score is not None:
                    val_score = float(score(net))
                elif val_data is not None:
                    if recalibrate:
                        cal = calibrate(net, _eval_batches(calib_data), spec.fmt, **_layer_kw(spec))
                    loader = _eval_batches(val_data)
                    val_clean = evaluate(net, loader, None).mean
                    val_error = evaluate(net, loader, eval_spec, seeds=select_seeds, calibration=cal).mean
                    val_score = select_clean_weight * val_clean + (1.0 - select_clean_weight) * val_error
                if select == "val" and val_score is not None and val_score >= best_score:
                    best_epoch, best_score = epoch, val_score
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                stats = EpochStats(epoch, total / applied if applied else math.nan, espec.model.ber, seen, skipped,
                                   clean_steps, val_clean, val_error, val_score)
                history.append(stats)
                if path is not None:
                    _atomic_save({
                        "version": _CHECKPOINT_VERSION,
                        "fingerprint": fingerprint,
                        "net": net.state_dict(),
                        "optimizer": opt.state_dict(),
                        "epoch": epoch + 1,
                        "step": step,
                        "history": [vars(e) for e in history],
                        "ber": stats.ber,
                        "loader_rng": loader_gen.get_state() if loader_gen is not None else None,
                        "best_epoch": best_epoch,
                        "best_score": best_score if best_epoch is not None else None,
                        "best_state": best_state,
                        "clip_bounds": bounds,
                    }, path)
                if on_epoch is not None:
                    on_epoch(stats)
    finally:
        switch.close()
        net.train(was_training)
    if select == "val" and best_state is not None:
        net.load_state_dict(best_state)
        if recalibrate:
            cal = calibrate(net, _eval_batches(calib_data), spec.fmt, **_layer_kw(spec))
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return RetrainResult(tuple(history), tuple(e.loss for e in history), tuple(e.ber for e in history),
                         state, resumed_from, best_epoch if select == "val" else None, cal)

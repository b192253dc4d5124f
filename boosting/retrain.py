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
- the data order: a dataset is batched in a permutation drawn per epoch from a
  ``torch.Generator`` seeded by ``(seed, epoch)``; a caller's ``DataLoader`` must be seeded
  (``generator=``) if it shuffles, and its generator state is checkpointed;
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

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from boosting.inference import Calibration, ErrorInjector, ErrorSpec, _batches, _device_of, _seed_of
from softmc_host.files import atomic_write

__all__ = [
    "RetrainError",
    "SCHEDULES",
    "OPTIMIZERS",
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

_CHECKPOINT_VERSION = 1
_ERROR_TAG = 0x5254
_DATA_TAG = 0x4441
_TORCH_TAG = 0x5447

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
    return ErrorSpec(spec.model.with_ber(min(1.0, spec.model.ber * factor)),
                     overrides={k: min(1.0, v * factor) for k, v in spec.overrides.items()},
                     fmt=spec.fmt, mitigation=spec.mitigation, seed=spec.seed, layout=spec.layout,
                     margin=spec.margin)


# -------------------------------------------------------------------------- results
@dataclass(frozen=True)
class EpochStats:
    """One retraining epoch.

    Attributes
    ----------
    epoch : int
        0-based epoch.
    loss : float
        Mean training cross-entropy over the batches that were applied (NaN if none).
    ber : float
        Model BER of the epoch's spec (:func:`spec_at`).
    steps : int
        Batches seen.
    skipped_steps : int
        Batches whose loss or gradients were not finite; no update was made for them.
    """

    epoch: int
    loss: float
    ber: float
    steps: int
    skipped_steps: int


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
    resumed_from : int
        Epochs restored from the checkpoint (0 for a fresh run).
    """

    epochs: tuple[EpochStats, ...]
    losses: tuple[float, ...]
    bers: tuple[float, ...]
    state_dict: dict[str, torch.Tensor]
    resumed_from: int


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
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        gen = torch.Generator().manual_seed(_seed_of(seed, epoch, _DATA_TAG))
        order = torch.randperm(len(data), generator=gen).tolist()  # type: ignore[arg-type]
        return DataLoader(data, batch_size=batch_size, sampler=order)
    return data


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` through :func:`softmc_host.files.atomic_write` (complete or absent, fsync-ed)."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def _fingerprint(spec: ErrorSpec, curriculum: Optional[Curriculum], lr: float, optimizer: str,
                 weight_decay: float, seed: int, batch_size: int) -> str:
    return repr((spec, curriculum, lr, optimizer, weight_decay, seed, batch_size))


def retrain(net: nn.Module, train_loader: Union[Dataset, Iterable[Any]], spec: ErrorSpec, *, epochs: int,
            lr: float = 1e-3, curriculum: Optional[Curriculum] = None, calibration: Optional[Calibration] = None,
            seed: int = 0, optimizer: str = "adam", weight_decay: float = 0.0, batch_size: int = 32,
            checkpoint_path: Optional[PathLike] = None, resume: bool = True,
            on_epoch: Optional[Callable[[EpochStats], None]] = None) -> RetrainResult:
    """Retrain ``net`` in place with errors in the forward pass and updates on the clean weights.

    Each epoch builds its spec with :func:`spec_at` (the BERs of ``spec`` scaled by the
    curriculum), enters an :class:`~boosting.inference.ErrorInjector` with it, and for every
    batch re-seeds the injector with the global step index, computes the cross-entropy of the
    corrupted forward pass in training mode, and updates the clean weights (the injector's
    straight-through estimator). Batches with a non-finite loss or gradient make no update
    and are counted in :attr:`EpochStats.skipped_steps`.

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
        Passed to the injector (required with ``spec.mitigation``); its ranges are those of
        the network it was computed on and are not updated during retraining.
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

    loader_gen = _loader_generator(train_loader)
    # Sorted by name: the injector re-registers weights on exit, which changes parameters()' order.
    params = [p for _, p in sorted(net.named_parameters()) if p.requires_grad]
    if not params:
        raise RetrainError("the network has no trainable parameters")
    opt = _make_optimizer(optimizer, params, float(lr), float(weight_decay))
    error_seed = _seed_of(spec.seed, seed, _ERROR_TAG)
    fingerprint = _fingerprint(spec, curriculum, float(lr), optimizer, float(weight_decay), seed, batch_size)
    device = _device_of(net)

    history: list[EpochStats] = []
    start_epoch = step = 0
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
        if loader_gen is not None:
            if ckpt["loader_rng"] is None:
                raise RetrainError(f"checkpoint {path} has no loader generator state but the loader has a generator")
            loader_gen.set_state(ckpt["loader_rng"].cpu())
    resumed_from = start_epoch

    was_training = net.training
    fork_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            for epoch in range(start_epoch, epochs):
                torch.manual_seed(_seed_of(seed, epoch, _TORCH_TAG))
                espec = spec_at(spec, curriculum, epoch)
                espec = ErrorSpec(espec.model, overrides=espec.overrides, fmt=espec.fmt,
                                  mitigation=espec.mitigation, seed=error_seed, layout=espec.layout,
                                  margin=espec.margin)
                net.train()
                total = 0.0
                applied = seen = skipped = 0
                with ErrorInjector(net, espec, calibration) as injector:
                    for x, y in _batches(_epoch_batches(train_loader, epoch, seed, batch_size)):
                        if y is None:
                            raise RetrainError("retraining needs (x, y) batches")
                        injector.reseed(step)
                        step += 1
                        seen += 1
                        opt.zero_grad(set_to_none=True)
                        loss = F.cross_entropy(net(x.to(device)), y.to(device))
                        if not torch.isfinite(loss):
                            skipped += 1
                            continue
                        loss.backward()
                        if not all(torch.isfinite(p.grad).all() for p in params if p.grad is not None):
                            opt.zero_grad(set_to_none=True)
                            skipped += 1
                            continue
                        opt.step()
                        total += float(loss.detach())
                        applied += 1
                opt.zero_grad(set_to_none=True)
                stats = EpochStats(epoch, total / applied if applied else math.nan, espec.model.ber, seen, skipped)
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
                    }, path)
                if on_epoch is not None:
                    on_epoch(stats)
    finally:
        net.train(was_training)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return RetrainResult(tuple(history), tuple(e.loss for e in history), tuple(e.ber for e in history),
                         state, resumed_from)

"""Clean training and boosting (error-aware retraining) of a network file: the library behind ``python -m boosting.train``.

:func:`train_clean`
    Adam on the cross-entropy, batches in a permutation drawn per epoch from ``(seed, epoch)``,
    the global torch RNG forked and seeded per epoch, the network built from ``seed``. A seeded,
    stratified validation split (``val_fraction``, default 10 % of the training split) is held
    out; after each epoch the validation accuracy and loss and the clean test accuracy are
    measured. Training stops when the validation accuracy (ties: the lower validation loss) has
    not improved for ``patience`` epochs (at most ``epochs``), the learning rate is halved on a
    validation plateau (``lr_schedule="plateau"``), and the best epoch's weights are restored.
    The network is written with :func:`boosting.checkpoint.save_network` (dataset info with
    ``val_fraction`` / ``val_seed``; meta: ``kind = "clean"``, the settings, the history,
    ``best_epoch``, ``stopped_epoch``, ``val_accuracy``, ``val_history``,
    ``clean_test_accuracy``), and beside it ``<stem>.train.json`` (the same information and the
    file's SHA-256), ``<stem>.train.csv`` (the history) and ``<stem>.train.png`` (loss and
    accuracy per epoch), all through :mod:`boosting.records`.

:func:`boost`
    The network of a file is retrained with :func:`boosting.retrain.retrain` under an error
    spec, optionally with a BER :class:`~boosting.retrain.Curriculum`, or with a
    :class:`~boosting.recipes.Recipe` (``eden``, ``control``, ``mixed``, ``clip``,
    ``randbet``). The mitigation ranges come from a calibration of the parent network on the
    first ``calib_samples`` training images (recomputed every epoch by recipes that
    recalibrate). Progress is checkpointed after every epoch in ``<stem>.boost-ckpt.pt``;
    calling it again after an interruption resumes from it (the checkpoint is deleted once the
    output is written). Clean accuracy and accuracy under the spec (mean and 95 % CI over the
    error seeds) are measured before and after and stored in the meta, the JSON and the CSV.

Both log through :mod:`logging` (logger ``boosting.training``; the per-epoch lines at INFO with
``verbose=True``, else DEBUG) and never print; a tqdm progress bar on stderr is shown only with
``progress=True``. Bad arguments raise :class:`TrainError` (or the ``NetworkError`` /
``DatasetError`` / ``CheckpointError`` of the module concerned) with a one-line message.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from boosting.checkpoint import load_network, save_network
from boosting.data import DATASETS, DatasetError, load_dataset, split_validation
from boosting.inference import ErrorSpec, _seed_of, calibrate, evaluate
from boosting.networks import NETWORKS, NetworkError, get_network
from boosting.recipes import Recipe, get_recipe
from boosting.records import accuracy_to_dict, side_path, spec_to_dict, write_csv, write_train_record
from boosting.retrain import Curriculum, EpochStats, retrain
from softmc_host.files import sha256_file

__all__ = ["TrainError", "LR_SCHEDULES", "train_clean", "boost"]

log = logging.getLogger(__name__)

_ORDER_TAG = 0x4f52
_TORCH_TAG = 0x5452

PathLike = Union[str, Path]


class TrainError(ValueError):
    """Bad arguments of the training tools (one-line message)."""


# ----------------------------------------------------------------------------- helpers
def _check_int(name: str, value: Any, lo: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise TrainError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


def _check_lr(lr: Any) -> float:
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise TrainError(f"lr must be a positive number, got {lr!r}")
    return float(lr)


def _head(dataset: Any, n: Optional[int]) -> Any:
    if n is None or n >= len(dataset):
        return dataset
    return Subset(dataset, range(n))


def _bar(total: int, desc: str, enabled: bool, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr,
                disable=not enabled)


@contextlib.contextmanager
def _bars_and_logs(enabled: bool) -> Iterator[None]:
    """While a progress bar is shown, send console log lines through ``tqdm.write`` (no torn bars)."""
    if not enabled:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


# ------------------------------------------------------------------------ clean training
LR_SCHEDULES = ("plateau", "cosine", None)
"""Learning-rate schedules of :func:`train_clean`: halve on a validation plateau, cosine to 0, or none."""


def _check_fraction(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise TrainError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _loss_and_accuracy(net: torch.nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``net`` on ``loader`` (eval mode, no gradients; mode restored)."""
    was_training = net.training
    net.eval()
    total = 0.0
    correct = n = 0
    try:
        with torch.no_grad():
            for x, y in loader:
                logits = net(x)
                total += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                n += int(y.numel())
    finally:
        net.train(was_training)
    return total / max(n, 1), correct / max(n, 1)


def _better(acc: float, loss: float, best: Optional[tuple[float, float]]) -> bool:
    """Higher validation accuracy wins; at equal accuracy the lower validation loss."""
    return best is None or acc > best[0] or (acc == best[0] and loss < best[1])


def train_clean(network: str, dataset: str = "digits", *, epochs: int = 40, lr: float = 3e-3, batch_size: int = 32,
                seed: int = 0, image_size: Optional[int] = None, data_dir: Optional[PathLike] = None,
                normalize: bool = False, split_seed: int = 0, options: Optional[Mapping[str, Any]] = None,
                val_fraction: float = 0.1, val_seed: Optional[int] = None, patience: Optional[int] = 5,
                lr_schedule: Optional[str] = "plateau", out: PathLike, progress: bool = False, verbose: bool = False,
                plot: bool = True) -> Path:
    """Train a registry network clean until it converges and write it, its history (JSON, CSV) and a plot.

    A seeded, stratified validation split (``val_fraction`` of the training split,
    :func:`boosting.data.split_validation`) is held out; after every epoch the validation
    accuracy and loss are measured, training stops when the best validation accuracy (ties: the
    lower validation loss) has not improved for ``patience`` epochs (or after ``epochs``), and
    the best epoch's weights are restored and written. The split (``val_fraction``,
    ``val_seed``) is recorded in the file's dataset info, so later stages load the same
    ``"train"`` and ``"val"`` parts (:meth:`boosting.checkpoint.NetworkFile.load_split`).
    ``val_fraction=0`` trains all ``epochs`` on the whole training split and keeps the last
    epoch (the behaviour before validation splits).

    Parameters
    ----------
    network : str
        Registry name (:data:`boosting.networks.NETWORKS`).
    dataset : str
        Dataset name (:data:`boosting.data.DATASETS`).
    epochs : int
        Maximum epochs (>= 1); the exact count with ``val_fraction=0`` or ``patience=None``.
    lr : float
        Adam learning rate (> 0).
    batch_size : int
        Batch size (>= 1).
    seed : int
        Seed of the initial weights, the batch order and the global torch RNG of the run.
    image_size : int, optional
        Input side in pixels; default the network's (28 for lenet).
    data_dir : str or Path, optional
        Directory of the dataset's files (mnist, cifar10).
    normalize : bool
        Normalize inputs with the dataset's mean and std.
    split_seed : int
        Seed of the digits train/test split.
    options : mapping, optional
        Extra :func:`~boosting.networks.get_network` options (e.g. ``width``).
    val_fraction : float
        Share of the training split held out for validation, in [0, 1); 0: none.
    val_seed : int, optional
        Seed of the validation split (default ``split_seed``).
    patience : int, optional
        Epochs without a better validation score before stopping (>= 1); None: no early
        stopping (the best epoch is still restored when there is a validation split).
    lr_schedule : {"plateau", "cosine", None}
        ``plateau`` (default): halve the learning rate when the validation accuracy has not
        improved for ``max(1, patience // 2)`` epochs (without a validation split the rate
        stays constant); ``cosine``: cosine decay to 0 over ``epochs``; None: constant.
        Measured on digits LeNet (split seeds 0-2): with ``plateau`` 10 more epochs after
        the early stop change the test accuracy by 0, 0 and -0.3 points; at a constant rate
        by +0.6, +0.6 points (and the third run did not stop within 50 epochs).
    out : str or Path
        Network file to write; ``<stem>.train.json``, ``.train.csv``, ``.train.png`` go beside it.
    progress : bool
        Show a tqdm bar per epoch on stderr (default: none).
    verbose : bool
        Log the settings and one line per epoch at INFO (default: at DEBUG).
    plot : bool
        Write the PNG.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    TrainError, NetworkError, DatasetError
        Bad arguments (one-line messages).
    """
    _check_int("epochs", epochs, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, 0)
    lr = _check_lr(lr)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    val_seed = _check_int("val_seed", split_seed if val_seed is None else val_seed, 0)
    if patience is not None:
        _check_int("patience", patience, 1)
    if lr_schedule not in LR_SCHEDULES:
        raise TrainError(f"lr_schedule must be 'plateau', 'cosine' or None, got {lr_schedule!r}")
    if lr_schedule == "plateau" and val_fraction == 0:
        lr_schedule = None  # nothing to watch: a constant rate
    level = logging.INFO if verbose else logging.DEBUG
    net_spec = NETWORKS.get(str(network).strip().lower())
    if net_spec is None:
        raise NetworkError(f"unknown network {network!r}; known: {', '.join(sorted(NETWORKS))}")
    data_spec = DATASETS.get(str(dataset).strip().lower())
    if data_spec is None:
        raise DatasetError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASETS))}")
    size = net_spec.image_size if image_size is None else _check_int("image_size", image_size, 1)
    root = str(Path(data_dir).expanduser().resolve()) if data_dir is not None else None
    build = {"num_classes": data_spec.num_classes, "in_channels": data_spec.in_channels, "image_size": size,
             **dict(options or {})}
    net = get_network(net_spec.name, seed=seed, **build)
    ds_info: dict[str, Any] = {"name": data_spec.name, "root": root, "image_size": size, "normalize": bool(normalize),
                               "split_seed": int(split_seed)}
    if val_fraction > 0:
        ds_info.update(val_fraction=val_fraction, val_seed=int(val_seed))
    full_train = load_dataset(data_spec.name, root=root, split="train", seed=split_seed, image_size=size,
                              normalize=normalize)
    train, val = split_validation(full_train, val_fraction, val_seed)
    test = load_dataset(data_spec.name, root=root, split="test", seed=split_seed, image_size=size, normalize=normalize)
    x_train, y_train = train.tensors
    test_loader = DataLoader(test, batch_size=256, shuffle=False)
    val_loader = DataLoader(val, batch_size=256, shuffle=False) if val is not None else None
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    scheduler: Any = None
    if lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    elif lr_schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5,
                                                               patience=max(1, (patience or 4) // 2))
    n = len(y_train)
    n_batches = -(-n // batch_size)
    history: list[dict[str, Any]] = []
    best: Optional[tuple[float, float]] = None
    best_epoch = 0
    best_state: Optional[dict[str, torch.Tensor]] = None
    log.log(level, "training %s on %s (%d train / %d val / %d test images, %dx%d), up to %d epochs (patience %s), "
            "Adam lr %g%s, batch %d, seed %d", net_spec.name, data_spec.name, n, 0 if val is None else len(val),
            len(test), size, size, epochs, patience, lr, f" ({lr_schedule})" if lr_schedule else "", batch_size, seed)
    with torch.random.fork_rng(devices=[]):
        for epoch in range(epochs):
            start = time.perf_counter()
            torch.manual_seed(_seed_of(seed, epoch, _TORCH_TAG))
            order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed_of(seed, epoch, _ORDER_TAG)))
            epoch_lr = float(opt.param_groups[0]["lr"])
            net.train()
            total_loss = 0.0
            correct = 0
            bar = _bar(n_batches, f"epoch {epoch + 1}/{epochs}", progress, "batch")
            try:
                for i in range(0, n, batch_size):
                    idx = order[i:i + batch_size]
                    logits = net(x_train[idx])
                    loss = F.cross_entropy(logits, y_train[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total_loss += float(loss.detach()) * len(idx)
                    correct += int((logits.detach().argmax(1) == y_train[idx]).sum())
                    bar.set_postfix_str(f"loss {float(loss.detach()):.3f}", refresh=False)
                    bar.update(1)
            finally:
                bar.close()
            test_acc = evaluate(net, test_loader, None).mean
            row: dict[str, Any] = {"epoch": epoch, "loss": total_loss / n, "train_acc": correct / n,
                                   "test_acc": test_acc, "seconds": 0.0}
            if val_loader is not None:
                val_loss, val_acc = _loss_and_accuracy(net, val_loader)
                row.update(val_acc=val_acc, val_loss=val_loss)
                if _better(val_acc, val_loss, best):
                    best, best_epoch = (val_acc, val_loss), epoch
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            row["lr"] = epoch_lr
            row["seconds"] = time.perf_counter() - start
            history.append(row)
            log.log(level, "epoch %d/%d  loss %.4f  train acc %.4f%s  test acc %.4f  (%.1f s)", epoch + 1, epochs,
                    row["loss"], row["train_acc"],
                    f"  val acc {row['val_acc']:.4f} loss {row['val_loss']:.4f}" if val_loader is not None else "",
                    test_acc, row["seconds"])
            if scheduler is not None:
                if lr_schedule == "plateau":
                    scheduler.step(row["val_acc"])
                else:
                    scheduler.step()
            if val_loader is not None and patience is not None and epoch - best_epoch >= patience:
                break
    stopped_epoch = history[-1]["epoch"]
    if best_state is not None:
        net.load_state_dict(best_state)
    else:
        best_epoch = stopped_epoch
    net.eval()
    settings = {"network": net_spec.name, "dataset": data_spec.name, "epochs": epochs, "lr": lr,
                "batch_size": batch_size, "seed": seed, "optimizer": "adam", "image_size": size,
                "normalize": bool(normalize), "split_seed": int(split_seed), "options": dict(options or {}),
                "val_fraction": val_fraction, "val_seed": int(val_seed), "patience": patience,
                "lr_schedule": lr_schedule}
    clean_acc = history[best_epoch]["test_acc"]
    meta = {"kind": "clean", "settings": settings, "history": history, "clean_test_accuracy": clean_acc,
            "best_epoch": best_epoch, "stopped_epoch": stopped_epoch,
            "val_accuracy": history[best_epoch].get("val_acc"), "val_loss": history[best_epoch].get("val_loss"),
            "val_history": [{"epoch": r["epoch"], "val_acc": r["val_acc"], "val_loss": r["val_loss"]}
                            for r in history if "val_acc" in r]}
    out = Path(out)
    save_network(out, net, network=net_spec.name, build=build, seed=seed, dataset=ds_info, meta=meta)
    write_train_record(out, "clean", meta)
    write_csv(side_path(out, ".train.csv"), [dict(r, best=int(r["epoch"] == best_epoch)) for r in history])
    if plot:
        from boosting.plots import plot_history

        plot_history(history, side_path(out, ".train.png"),
                     title=f"{net_spec.name} on {data_spec.name}: clean test accuracy {clean_acc:.4f} "
                           f"(epoch {best_epoch + 1})")
    log.log(level, "best epoch %d of %d (validation accuracy %s); clean test accuracy %.4f; written %s",
            best_epoch + 1, stopped_epoch + 1,
            "n/a" if meta["val_accuracy"] is None else f"{meta['val_accuracy']:.4f}", clean_acc, out)
    return out


# ------------------------------------------------------------------------------ boosting
def _resolve_recipe(recipe: Union[Recipe, str, None]) -> Optional[Recipe]:
    if recipe is None or isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str):
        return get_recipe(recipe)
    raise TrainError(f"recipe must be a Recipe, a recipe name or None, got {type(recipe).__name__}")


def boost(from_path: PathLike, spec: ErrorSpec, *, recipe: Union[Recipe, str, None] = None,
          epochs: Optional[int] = None, curriculum: Optional[Curriculum] = None, out: PathLike,
          seeds: Sequence[int] = (0, 1, 2), lr: Optional[float] = None, batch_size: Optional[int] = None,
          seed: int = 0, data_dir: Optional[PathLike] = None, calib_samples: int = 512,
          eval_samples: Optional[int] = None, val_samples: Optional[int] = None,
          train_samples: Optional[int] = None, resume: bool = True,
          progress: bool = False, verbose: bool = False, plot: bool = True,
          on_epoch: Optional[Callable[[EpochStats], None]] = None) -> Path:
    """Retrain a network file under errors (EDEN's boosting) and write the boosted network.

    Without a recipe the network is retrained under ``spec`` with ``curriculum`` (the
    original EDEN flow: ``epochs`` default 4, ``lr`` 1e-3). With a :class:`~boosting.recipes.Recipe`
    (or a preset name, :data:`boosting.recipes.RECIPES`) its schedule and mechanics are used:
    ``spec`` is the *target* (the caller sets its BER, usually
    ``recipe.target_ber(baseline_tolerable_ber)``), retraining runs under
    ``recipe.train_spec(spec)`` (BER 0 for the ``control``, uniform weight errors for
    ``randbet``), with ``recipe.curriculum_for(target)``; ``epochs``, ``lr`` and
    ``batch_size``, when given, replace the recipe's (the stored recipe says so). Validation
    (``select="val"``) uses the parent file's ``"val"`` split, or, for a file without one,
    10 % of its training split carved with the file's ``split_seed`` (and left out of the
    retraining data).

    Parameters
    ----------
    from_path : str or Path
        Network file of the parent (:func:`boosting.checkpoint.load_network`).
    spec : ErrorSpec
        Target errors: model at the target BER, format, mitigation, seed.
    recipe : Recipe or str, optional
        Retraining recipe; None: the plain flow above.
    epochs : int, optional
        Retraining epochs (>= 1); default the recipe's, else 4.
    curriculum : Curriculum, optional
        BER ramp without a recipe (its ``target_ber`` should be ``spec.model.ber``); None
        trains at the target. Not allowed with a recipe (it has its own).
    out : str or Path
        Boosted network file; ``<stem>.train.json``, ``.train.csv``, ``.train.png`` beside it,
        the resumable checkpoint ``<stem>.boost-ckpt.pt`` while it runs.
    seeds : sequence of int
        Error seeds of the before/after evaluations.
    lr : float, optional
        Adam learning rate; default the recipe's, else 1e-3.
    batch_size : int, optional
        Batch size; default the recipe's, else 32.
    seed : int
        Seed of the batch order, the retraining errors and the torch RNG.
    data_dir : str or Path, optional
        Overrides the dataset directory stored in the network file.
    calib_samples : int
        Training images used to calibrate the mitigation ranges and IFM scales (also those of
        a recipe's per-epoch recalibration).
    eval_samples : int, optional
        Evaluate on the first so many test images (default all).
    val_samples : int, optional
        Score the validation selection on the first so many validation images (default all).
    train_samples : int, optional
        Retrain on the first so many training images (default all; for quick runs).
    resume : bool
        Resume from an existing checkpoint (False starts afresh).
    progress : bool
        Show a tqdm bar over the epochs on stderr (default: none).
    verbose : bool
        Log the settings, the epochs and the before/after accuracies at INFO (default: at DEBUG).
    plot : bool
        Write the PNG.
    on_epoch : callable, optional
        Called with every finished :class:`~boosting.retrain.EpochStats` (after its checkpoint).

    Returns
    -------
    Path
        ``out``. Its meta: ``kind`` (``"boosted"``, or ``"control"`` for a recipe without
        errors), ``parent`` (path, SHA-256, kind, clean accuracy), ``recipe`` (the recipe's
        fields, or None), ``spec`` (the target), ``train_spec``, ``settings``, ``history``,
        ``best_epoch``, ``before`` / ``after`` accuracies, ``clean_test_accuracy``.

    Raises
    ------
    TrainError, CheckpointError, RetrainError, RecipeError
        Bad arguments, an unreadable parent, a checkpoint of another run, an unknown recipe.
    """
    if not isinstance(spec, ErrorSpec):
        raise TrainError(f"spec must be an ErrorSpec, got {type(spec).__name__}")
    rec = _resolve_recipe(recipe)
    if rec is not None and curriculum is not None:
        raise TrainError(f"recipe {rec.name!r} sets its own curriculum: do not pass curriculum=")
    if rec is not None:
        changes = {k: v for k, v in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size)) if v is not None}
        if changes:
            rec = rec.replace(**changes)
        epochs, lr, batch_size = rec.epochs, rec.lr, rec.batch_size
    else:
        epochs = 4 if epochs is None else epochs
        lr = 1e-3 if lr is None else lr
        batch_size = 32 if batch_size is None else batch_size
    _check_int("epochs", epochs, 1)
    _check_int("batch_size", batch_size, 1)
    lr = _check_lr(lr)
    _check_int("calib_samples", calib_samples, 1)
    if eval_samples is not None:
        _check_int("eval_samples", eval_samples, 1)
    if val_samples is not None:
        _check_int("val_samples", val_samples, 1)
    if train_samples is not None:
        _check_int("train_samples", train_samples, 1)
    level = logging.INFO if verbose else logging.DEBUG
    seeds = tuple(int(s) for s in seeds)
    from_path = Path(from_path)
    parent = load_network(from_path)
    net = parent.net
    train = parent.load_split("train", root=data_dir)
    test = _head(parent.load_split("test", root=data_dir), eval_samples)
    test_loader = DataLoader(test, batch_size=256, shuffle=False)
    val = None
    val_source = None
    if rec is not None and rec.select == "val":
        if parent.val_fraction > 0:
            val, val_source = parent.load_split("val", root=data_dir), "file"
        else:
            train, val = split_validation(train, 0.1, int(parent.dataset.get("split_seed", 0)))
            val_source = "carved"
            log.warning("%s records no validation split: validating on 10 %% of its training split", from_path)
        val = _head(val, val_samples)
    calib_data = _head(train, calib_samples)
    train = _head(train, train_samples)

    def measure(tag: str) -> dict[str, Any]:
        types = getattr(spec, "layer_types", None)
        cal = calibrate(net, DataLoader(calib_data, batch_size=256), spec.fmt,
                        **({} if types is None else {"layer_types": types}))
        clean = evaluate(net, test_loader, None)
        under = evaluate(net, test_loader, spec, seeds=seeds, calibration=cal)
        log.log(level, "%-13s clean %.4f   under spec %.4f [%.4f, %.4f]", tag, clean.mean, under.mean,
                under.ci_low, under.ci_high)
        return {"clean": accuracy_to_dict(clean), "under_spec": accuracy_to_dict(under), "calibration": cal}

    train_spec = spec if rec is None else rec.train_spec(spec)
    if rec is not None:
        curriculum = rec.curriculum_for(spec.model.ber)
    kind = "boosted" if rec is None else rec.kind
    log.log(level, "%s %s (%s) under %s, fmt %s, mitigation %s; %s%d epochs, lr %g, batch %d, seed %d",
            "retraining (control)" if kind == "control" else "boosting", from_path, parent.network,
            spec.model.describe(), spec.fmt, spec.mitigation, f"recipe {rec.name}, " if rec else "", epochs, lr,
            batch_size, seed)
    before = measure("before boost")
    calibration = before.pop("calibration")
    out = Path(out)
    ckpt = side_path(out, ".boost-ckpt.pt")
    mechanics: dict[str, Any] = {}
    if rec is not None:
        mechanics = {k: v for k, v in rec.retrain_kwargs().items() if k not in ("lr", "batch_size")}
        if rec.recalibrate:
            mechanics["calib_data"] = calib_data
        if val is not None:
            mechanics.update(val_data=val, select_spec=spec)

    with _bars_and_logs(progress):
        bar = _bar(epochs, "boosting", progress, "epoch")

        def epoch_done(stats: EpochStats) -> None:
            bar.set_postfix_str(f"BER {stats.ber:.1e} loss {stats.loss:.3f}", refresh=False)
            bar.update(1)
            log.log(level, "  epoch %3d/%d  BER %.2e  loss %.4f%s%s", stats.epoch + 1, epochs, stats.ber, stats.loss,
                    "" if stats.val_score is None else f"  val score {stats.val_score:.4f}",
                    f"  ({stats.skipped_steps} non-finite steps skipped)" if stats.skipped_steps else "")
            if on_epoch is not None:
                on_epoch(stats)

        if ckpt.exists() and resume:
            log.info("resuming from checkpoint %s", ckpt)
        try:
            result = retrain(net, train, train_spec, epochs=epochs, lr=lr, curriculum=curriculum,
                             calibration=calibration, seed=seed, batch_size=batch_size, checkpoint_path=ckpt,
                             resume=resume, on_epoch=epoch_done, **mechanics)
        finally:
            bar.close()
    net.eval()
    after = measure("after boost")
    after.pop("calibration")
    history = []
    for e in result.epochs:
        row: dict[str, Any] = {"epoch": e.epoch, "loss": e.loss, "ber": e.ber, "steps": e.steps,
                               "skipped_steps": e.skipped_steps}
        if rec is not None:
            row.update(clean_steps=e.clean_steps, val_clean=e.val_clean, val_error=e.val_error,
                       val_score=e.val_score)
        history.append(row)
    settings = {"from": str(from_path), "epochs": epochs, "lr": float(lr), "batch_size": batch_size, "seed": seed,
                "optimizer": "adam", "eval_seeds": list(seeds), "calib_samples": calib_samples,
                "eval_samples": eval_samples, "train_samples": train_samples,
                "curriculum": None if curriculum is None else {
                    "start_ber": curriculum.start_ber, "target_ber": curriculum.target_ber,
                    "warmup_epochs": curriculum.warmup_epochs, "schedule": curriculum.schedule}}
    if rec is not None:
        settings.update(val_samples=val_samples, validation=None if val is None else
                        {"source": val_source, "n_samples": len(val)})
    meta = {"kind": kind, "parent": {"path": str(from_path), "sha256": sha256_file(from_path),
                                     "kind": parent.meta.get("kind"),
                                     "clean_test_accuracy": parent.meta.get("clean_test_accuracy")},
            "spec": spec_to_dict(spec), "settings": settings, "history": history, "resumed_from": result.resumed_from,
            "before": before, "after": after, "clean_test_accuracy": after["clean"]["mean"]}
    if rec is not None:
        meta.update(recipe=rec.to_dict(), train_spec=spec_to_dict(train_spec), best_epoch=result.best_epoch)
    save_network(out, net, network=parent.network, build=parent.build, seed=parent.seed, dataset=parent.dataset,
                 meta=meta)
    write_train_record(out, kind, meta)
    rows = [dict(r, stage="boost") for r in history]
    for tag, m in (("before", before), ("after", after)):
        rows.append({"stage": tag, "clean_acc": m["clean"]["mean"], "spec_acc": m["under_spec"]["mean"],
                     "spec_ci_low": m["under_spec"]["ci_low"], "spec_ci_high": m["under_spec"]["ci_high"],
                     "ber": spec.model.ber})
    write_csv(side_path(out, ".train.csv"), rows)
    if plot:
        from boosting.plots import plot_history

        plot_history(history, side_path(out, ".train.png"),
                     title=f"{'control' if kind == 'control' else 'boosting'} at BER {spec.model.ber:.1e}: under spec "
                           f"{before['under_spec']['mean']:.3f} -> {after['under_spec']['mean']:.3f}")
    ckpt.unlink(missing_ok=True)
    log.log(level, "written %s", out)
    return out

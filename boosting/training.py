"""Clean training and boosting (error-aware retraining) of a network file: the library behind ``python -m boosting.train``.

:func:`train_clean`
    Adam on the cross-entropy, batches in a permutation drawn per epoch from ``(seed, epoch)``,
    the global torch RNG forked and seeded per epoch, the network built from ``seed``. After
    each epoch the clean test accuracy is measured. The network is written with
    :func:`boosting.checkpoint.save_network` (meta: ``kind = "clean"``, the settings, the
    history, ``clean_test_accuracy``), and beside it ``<stem>.train.json`` (the same information
    and the file's SHA-256), ``<stem>.train.csv`` (the history) and ``<stem>.train.png`` (loss
    and accuracy per epoch), all through :mod:`boosting.records`.

:func:`boost`
    The network of a file is retrained with :func:`boosting.retrain.retrain` under an error
    spec, optionally with a BER :class:`~boosting.retrain.Curriculum`. The mitigation ranges
    come from a calibration of the parent network on the first ``calib_samples`` training
    images. Progress is checkpointed after every epoch in ``<stem>.boost-ckpt.pt``; calling it
    again after an interruption resumes from it (the checkpoint is deleted once the output is
    written). Clean accuracy and accuracy under the spec (mean and 95 % CI over the error
    seeds) are measured before and after and stored in the meta, the JSON and the CSV.

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
from boosting.data import DATASETS, DatasetError, load_dataset
from boosting.inference import ErrorSpec, _seed_of, calibrate, evaluate
from boosting.networks import NETWORKS, NetworkError, get_network
from boosting.records import accuracy_to_dict, side_path, spec_to_dict, write_csv, write_train_record
from boosting.retrain import Curriculum, EpochStats, retrain
from softmc_host.files import sha256_file

__all__ = ["TrainError", "train_clean", "boost"]

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
def train_clean(network: str, dataset: str = "digits", *, epochs: int = 8, lr: float = 3e-3, batch_size: int = 32,
                seed: int = 0, image_size: Optional[int] = None, data_dir: Optional[PathLike] = None,
                normalize: bool = False, split_seed: int = 0, options: Optional[Mapping[str, Any]] = None,
                out: PathLike, progress: bool = False, verbose: bool = False, plot: bool = True) -> Path:
    """Train a registry network clean and write it, its history (JSON, CSV) and a plot.

    Parameters
    ----------
    network : str
        Registry name (:data:`boosting.networks.NETWORKS`).
    dataset : str
        Dataset name (:data:`boosting.data.DATASETS`).
    epochs : int
        Epochs (>= 1).
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
    ds_info = {"name": data_spec.name, "root": root, "image_size": size, "normalize": bool(normalize),
               "split_seed": int(split_seed)}
    train = load_dataset(data_spec.name, root=root, split="train", seed=split_seed, image_size=size, normalize=normalize)
    test = load_dataset(data_spec.name, root=root, split="test", seed=split_seed, image_size=size, normalize=normalize)
    x_train, y_train = train.tensors
    test_loader = DataLoader(test, batch_size=256, shuffle=False)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = len(y_train)
    n_batches = -(-n // batch_size)
    history: list[dict[str, Any]] = []
    log.log(level, "training %s on %s (%d train / %d test images, %dx%d), %d epochs, Adam lr %g, batch %d, seed %d",
            net_spec.name, data_spec.name, n, len(test), size, size, epochs, lr, batch_size, seed)
    with torch.random.fork_rng(devices=[]):
        for epoch in range(epochs):
            start = time.perf_counter()
            torch.manual_seed(_seed_of(seed, epoch, _TORCH_TAG))
            order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed_of(seed, epoch, _ORDER_TAG)))
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
            row = {"epoch": epoch, "loss": total_loss / n, "train_acc": correct / n, "test_acc": test_acc,
                   "seconds": time.perf_counter() - start}
            history.append(row)
            log.log(level, "epoch %d/%d  loss %.4f  train acc %.4f  test acc %.4f  (%.1f s)", epoch + 1, epochs,
                    row["loss"], row["train_acc"], test_acc, row["seconds"])
    net.eval()
    settings = {"network": net_spec.name, "dataset": data_spec.name, "epochs": epochs, "lr": lr,
                "batch_size": batch_size, "seed": seed, "optimizer": "adam", "image_size": size,
                "normalize": bool(normalize), "split_seed": int(split_seed), "options": dict(options or {})}
    clean_acc = history[-1]["test_acc"]
    meta = {"kind": "clean", "settings": settings, "history": history, "clean_test_accuracy": clean_acc}
    out = Path(out)
    save_network(out, net, network=net_spec.name, build=build, seed=seed, dataset=ds_info, meta=meta)
    write_train_record(out, "clean", meta)
    write_csv(side_path(out, ".train.csv"), history)
    if plot:
        from boosting.plots import plot_history

        plot_history(history, side_path(out, ".train.png"),
                     title=f"{net_spec.name} on {data_spec.name}: clean test accuracy {clean_acc:.4f}")
    log.log(level, "clean test accuracy %.4f; written %s", clean_acc, out)
    return out


# ------------------------------------------------------------------------------ boosting
def boost(from_path: PathLike, spec: ErrorSpec, *, epochs: int = 4, curriculum: Optional[Curriculum] = None,
          out: PathLike, seeds: Sequence[int] = (0, 1, 2), lr: float = 1e-3, batch_size: int = 32, seed: int = 0,
          data_dir: Optional[PathLike] = None, calib_samples: int = 512, eval_samples: Optional[int] = None,
          resume: bool = True, progress: bool = False, verbose: bool = False, plot: bool = True,
          on_epoch: Optional[Callable[[EpochStats], None]] = None) -> Path:
    """Retrain a network file under errors (EDEN's boosting) and write the boosted network.

    Parameters
    ----------
    from_path : str or Path
        Network file of the parent (:func:`boosting.checkpoint.load_network`).
    spec : ErrorSpec
        Target errors: model at the target BER, format, mitigation, seed.
    epochs : int
        Retraining epochs (>= 1).
    curriculum : Curriculum, optional
        BER ramp (its ``target_ber`` should be ``spec.model.ber``); None trains at the target.
    out : str or Path
        Boosted network file; ``<stem>.train.json``, ``.train.csv``, ``.train.png`` beside it,
        the resumable checkpoint ``<stem>.boost-ckpt.pt`` while it runs.
    seeds : sequence of int
        Error seeds of the before/after evaluations.
    lr : float
        Adam learning rate of :func:`boosting.retrain.retrain`.
    batch_size : int
        Batch size.
    seed : int
        Seed of the batch order, the retraining errors and the torch RNG.
    data_dir : str or Path, optional
        Overrides the dataset directory stored in the network file.
    calib_samples : int
        Training images used to calibrate the mitigation ranges and IFM scales.
    eval_samples : int, optional
        Evaluate on the first so many test images (default all).
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
        ``out``.

    Raises
    ------
    TrainError, CheckpointError, RetrainError
        Bad arguments, an unreadable parent, a checkpoint of another run.
    """
    if not isinstance(spec, ErrorSpec):
        raise TrainError(f"spec must be an ErrorSpec, got {type(spec).__name__}")
    _check_int("epochs", epochs, 1)
    _check_int("calib_samples", calib_samples, 1)
    if eval_samples is not None:
        _check_int("eval_samples", eval_samples, 1)
    level = logging.INFO if verbose else logging.DEBUG
    seeds = tuple(int(s) for s in seeds)
    from_path = Path(from_path)
    parent = load_network(from_path)
    net = parent.net
    train = parent.load_split("train", root=data_dir)
    test = _head(parent.load_split("test", root=data_dir), eval_samples)
    test_loader = DataLoader(test, batch_size=256, shuffle=False)

    def measure(tag: str) -> dict[str, Any]:
        cal = calibrate(net, DataLoader(_head(train, calib_samples), batch_size=256), spec.fmt)
        clean = evaluate(net, test_loader, None)
        under = evaluate(net, test_loader, spec, seeds=seeds, calibration=cal)
        log.log(level, "%-13s clean %.4f   under spec %.4f [%.4f, %.4f]", tag, clean.mean, under.mean,
                under.ci_low, under.ci_high)
        return {"clean": accuracy_to_dict(clean), "under_spec": accuracy_to_dict(under), "calibration": cal}

    log.log(level, "boosting %s (%s) under %s, fmt %s, mitigation %s; %d epochs, lr %g, batch %d, seed %d",
            from_path, parent.network, spec.model.describe(), spec.fmt, spec.mitigation, epochs, lr, batch_size, seed)
    before = measure("before boost")
    calibration = before.pop("calibration")
    out = Path(out)
    ckpt = side_path(out, ".boost-ckpt.pt")

    with _bars_and_logs(progress):
        bar = _bar(epochs, "boosting", progress, "epoch")

        def epoch_done(stats: EpochStats) -> None:
            bar.set_postfix_str(f"BER {stats.ber:.1e} loss {stats.loss:.3f}", refresh=False)
            bar.update(1)
            log.log(level, "  epoch %3d/%d  BER %.2e  loss %.4f%s", stats.epoch + 1, epochs, stats.ber, stats.loss,
                    f"  ({stats.skipped_steps} non-finite steps skipped)" if stats.skipped_steps else "")
            if on_epoch is not None:
                on_epoch(stats)

        if ckpt.exists() and resume:
            log.info("resuming from checkpoint %s", ckpt)
        try:
            result = retrain(net, train, spec, epochs=epochs, lr=lr, curriculum=curriculum, calibration=calibration,
                             seed=seed, batch_size=batch_size, checkpoint_path=ckpt, resume=resume,
                             on_epoch=epoch_done)
        finally:
            bar.close()
    net.eval()
    after = measure("after boost")
    after.pop("calibration")
    history = [{"epoch": e.epoch, "loss": e.loss, "ber": e.ber, "steps": e.steps, "skipped_steps": e.skipped_steps}
               for e in result.epochs]
    settings = {"from": str(from_path), "epochs": epochs, "lr": float(lr), "batch_size": batch_size, "seed": seed,
                "optimizer": "adam", "eval_seeds": list(seeds), "calib_samples": calib_samples,
                "eval_samples": eval_samples,
                "curriculum": None if curriculum is None else {
                    "start_ber": curriculum.start_ber, "target_ber": curriculum.target_ber,
                    "warmup_epochs": curriculum.warmup_epochs, "schedule": curriculum.schedule}}
    meta = {"kind": "boosted", "parent": {"path": str(from_path), "sha256": sha256_file(from_path),
                                          "kind": parent.meta.get("kind"),
                                          "clean_test_accuracy": parent.meta.get("clean_test_accuracy")},
            "spec": spec_to_dict(spec), "settings": settings, "history": history, "resumed_from": result.resumed_from,
            "before": before, "after": after, "clean_test_accuracy": after["clean"]["mean"]}
    save_network(out, net, network=parent.network, build=parent.build, seed=parent.seed, dataset=parent.dataset,
                 meta=meta)
    write_train_record(out, "boosted", meta)
    rows = [dict(r, stage="boost") for r in history]
    for tag, m in (("before", before), ("after", after)):
        rows.append({"stage": tag, "clean_acc": m["clean"]["mean"], "spec_acc": m["under_spec"]["mean"],
                     "spec_ci_low": m["under_spec"]["ci_low"], "spec_ci_high": m["under_spec"]["ci_high"],
                     "ber": spec.model.ber})
    write_csv(side_path(out, ".train.csv"), rows)
    if plot:
        from boosting.plots import plot_history

        plot_history(history, side_path(out, ".train.png"),
                     title=f"boosting at BER {spec.model.ber:.1e}: under spec {before['under_spec']['mean']:.3f}"
                           f" -> {after['under_spec']['mean']:.3f}")
    ckpt.unlink(missing_ok=True)
    log.log(level, "written %s", out)
    return out

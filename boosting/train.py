"""Train a network clean, or boost a trained one by error-aware retraining (``python -m boosting.train``).

Clean training
--------------
``python -m boosting.train --network lenet --dataset digits --epochs 8 --lr 3e-3 --batch-size 32
--seed 0 -o out/lenet.pt``

Adam on the cross-entropy, batches in a permutation drawn per epoch from ``(seed, epoch)``,
the global torch RNG forked and seeded per epoch, the network built from ``seed``. After each
epoch the clean test accuracy is measured and a table row printed (epoch, loss, train
accuracy, test accuracy). The network is written with :func:`boosting.checkpoint.save_network`
(meta: ``kind = "clean"``, the settings, the history, ``clean_test_accuracy``), and beside it
``<stem>.train.json`` (the same information and the file's SHA-256), ``<stem>.train.csv`` (the
history) and ``<stem>.train.png`` (loss and accuracy per epoch).

Input size: ``--image-size`` or the network's default (28 for ``lenet``, so digits' 8x8
images are resized to 28x28; 32 for the others); channels and classes come from the dataset.

Boosting
--------
``python -m boosting.train --from out/lenet.pt --error-model model.json|NAME [--partition P]
[--model-param k=v ...] --ber 1e-3 --fmt int8 --mitigation zero --curriculum-start 1e-6
--schedule log --epochs 4 -o out/lenet-boosted.pt``

The network of ``--from`` is retrained with :func:`boosting.retrain.retrain` under the error
spec (model at ``--ber``, format, mitigation) with a BER curriculum rising from
``--curriculum-start`` (default ``ber / 100``) to ``--ber`` over ``--warmup-epochs`` epochs
(default ``epochs - 1``: the last epoch runs at the target); ``--schedule none`` trains at the
target from the start. The mitigation ranges come from a calibration of the parent network on
the first ``--calib-samples`` training images. Progress is checkpointed after every epoch in
``<stem>.boost-ckpt.pt``; running the same command again after an interruption resumes from
it (the checkpoint is deleted once the output is written). Clean accuracy and accuracy under
the target spec (error seeds ``--seeds``, mean and 95 % CI) are measured before and after
(after: with a calibration of the boosted network) and stored in the meta, the JSON and
the CSV.

``--error-model`` is a registry name (``uniform``, ``wordline``, ``bitline``, ``bit-value`` or
0-3; shape parameters with ``--model-param k=v``) or a fitted-model JSON of
``python -m errormodels.fit`` (``docs/error-model-format.md``): the ``selected`` model of
``--partition LABEL``, or without it of partition ``all`` (whole DIMM), else of the first
partition that chose ``selected_model``. Without ``--ber`` the model's own BER is used.

Errors in the input (unknown names, missing files, bad numbers) print one line ``error: ...``
on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from boosting.checkpoint import load_network, save_network
from boosting.data import DATASETS, DatasetError, load_dataset
from boosting.inference import AccuracyResult, ErrorSpec, _seed_of, calibrate, evaluate
from boosting.networks import NETWORKS, NetworkError, get_network
from boosting.retrain import Curriculum, EpochStats, retrain
from errormodels.fit import file_sha256
from errormodels.models import ErrorModel, ModelError, get_model, model_from_dict

__all__ = [
    "TrainError",
    "FORMATS",
    "error_model_from",
    "parse_model_params",
    "parse_seeds",
    "file_sha256",
    "spec_to_dict",
    "accuracy_to_dict",
    "side_path",
    "train_clean",
    "boost",
    "main",
]

FORMATS = ("fp32", "int16", "int8", "int4")
"""Numeric formats accepted by the CLIs."""

_ORDER_TAG = 0x4f52
_TORCH_TAG = 0x5452

PathLike = Union[str, Path]


class TrainError(ValueError):
    """Bad arguments of the training tools (one-line message)."""


# ----------------------------------------------------------------------------- helpers
def side_path(out: PathLike, suffix: str) -> Path:
    """``out`` with its extension replaced by ``suffix`` (``out/lenet.pt``, ``.train.json`` -> ``out/lenet.train.json``)."""
    out = Path(out)
    return out.with_name(out.stem + suffix)


def _number(text: str) -> Union[int, float, str]:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_model_params(items: Optional[Sequence[str]]) -> dict[str, Any]:
    """``["k=v", ...]`` as ``{k: v}`` (values as int, else float, else str).

    Raises
    ------
    TrainError
        For an item without ``=`` or with an empty key.
    """
    params: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise TrainError(f"--model-param takes key=value, got {item!r}")
        params[key.strip()] = _number(value.strip())
    return params


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` as ``(0, 1, 2)``; raises :class:`TrainError` unless non-negative distinct integers."""
    try:
        seeds = tuple(int(s) for s in str(text).split(",") if s.strip())
    except ValueError:
        raise TrainError(f"seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise TrainError(f"seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def error_model_from(arg: str, params: Optional[Mapping[str, Any]] = None,
                     partition: Optional[str] = None) -> ErrorModel:
    """An error model from a registry name or a fitted-model JSON.

    Parameters
    ----------
    arg : str
        A name or number of :func:`errormodels.models.get_model` (``uniform``, ``wordline``,
        ``bitline``, ``bit-value``, 0-3), or the path of a JSON written by
        ``python -m errormodels.fit`` (any existing file, or a name ending in ``.json``).
    params : mapping, optional
        Model parameters: for a name, the constructor arguments; for a fitted model, values
        replacing the fitted ones (e.g. ``{"seed": 3}``).
    partition : str, optional
        Partition label of a fitted model (``all``, ``bank3``, ...). Default: ``all`` if
        present, else the first partition whose selected model is ``selected_model``.
        Not allowed with a name.

    Returns
    -------
    ErrorModel

    Raises
    ------
    TrainError
        Unreadable or foreign JSON, unknown partition, a partition given with a name.
    ModelError
        Unknown model name, bad parameter.
    """
    params = dict(params or {})
    path = Path(str(arg))
    if not (path.is_file() or str(arg).lower().endswith(".json")):
        if partition is not None:
            raise TrainError(f"--partition applies to a fitted-model JSON, not to the model name {arg!r}")
        return get_model(str(arg), **params)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except RecursionError:
        raise TrainError(f"cannot read fitted model {str(path)!r}: JSON nests too deeply") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, JSONDecodeError, int digit limit
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else text
        raise TrainError(f"cannot read fitted model {str(path)!r}: {detail}") from None
    if not isinstance(doc, dict) or doc.get("format") != "eden-error-model" or not isinstance(doc.get("partitions"), dict):
        raise TrainError(f"{path}: not an eden-error-model JSON (write one with python -m errormodels.fit)")
    parts: dict[str, Any] = doc["partitions"]
    for label, part in parts.items():
        if not isinstance(part, dict):
            raise TrainError(f"{path}: partition {label!r} is not an object")
    if partition is None:
        if "all" in parts:
            partition = "all"
        else:
            chosen = [k for k, v in parts.items() if v.get("selected", {}).get("model") == doc.get("selected_model")]
            if not chosen:
                raise TrainError(f"{path}: no partition selected {doc.get('selected_model')!r}; give --partition")
            partition = chosen[0]
    if partition not in parts:
        raise TrainError(f"{path}: unknown partition {partition!r}; known: {', '.join(parts) or 'none'}")
    selected = parts[partition].get("selected")  # checked further by model_from_dict
    if not isinstance(selected, dict):
        raise TrainError(f"{path}: partition {partition!r} has no selected model")
    return model_from_dict({**selected, **params})


def spec_to_dict(spec: ErrorSpec) -> dict[str, Any]:
    """JSON-ready description of an error spec (the layout is the default one and not stored)."""
    return {"model": spec.model.to_dict(), "fmt": spec.fmt, "mitigation": spec.mitigation, "seed": spec.seed,
            "margin": spec.margin, "overrides": [[k[0], k[1], v] for k, v in spec.overrides.items()]}


def accuracy_to_dict(r: AccuracyResult) -> dict[str, Any]:
    """JSON-ready :class:`~boosting.inference.AccuracyResult`."""
    return {"mean": r.mean, "ci_low": r.ci_low, "ci_high": r.ci_high, "per_seed": list(r.per_seed),
            "seeds": list(r.seeds), "n_samples": r.n_samples, "method": r.method}


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


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, default=float)
    tmp.replace(path)


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow(r)


def _bar(total: int, desc: str, enabled: bool, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr,
                disable=not enabled)


# ------------------------------------------------------------------------ clean training
def train_clean(network: str, dataset: str = "digits", *, epochs: int = 8, lr: float = 3e-3, batch_size: int = 32,
                seed: int = 0, image_size: Optional[int] = None, data_dir: Optional[PathLike] = None,
                normalize: bool = False, split_seed: int = 0, options: Optional[Mapping[str, Any]] = None,
                out: PathLike, progress: bool = True, verbose: bool = False, plot: bool = True) -> Path:
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
        Adam learning rate.
    batch_size : int
        Batch size.
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
        Show a tqdm bar per epoch on stderr.
    verbose : bool
        Print the per-epoch table on stdout.
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
    if verbose:
        print(f"training {net_spec.name} on {data_spec.name} ({n} train / {len(test)} test images, "
              f"{size}x{size}), {epochs} epochs, Adam lr {lr:g}, batch {batch_size}, seed {seed}")
        print(f"{'epoch':>5} {'loss':>9} {'train acc':>10} {'test acc':>9} {'time (s)':>9}")
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
            if verbose:
                print(f"{epoch + 1:>5} {row['loss']:>9.4f} {row['train_acc']:>10.4f} {test_acc:>9.4f} "
                      f"{row['seconds']:>9.1f}", flush=True)
    net.eval()
    settings = {"network": net_spec.name, "dataset": data_spec.name, "epochs": epochs, "lr": lr,
                "batch_size": batch_size, "seed": seed, "optimizer": "adam", "image_size": size,
                "normalize": bool(normalize), "split_seed": int(split_seed), "options": dict(options or {})}
    clean_acc = history[-1]["test_acc"]
    meta = {"kind": "clean", "settings": settings, "history": history, "clean_test_accuracy": clean_acc}
    out = Path(out)
    save_network(out, net, network=net_spec.name, build=build, seed=seed, dataset=ds_info, meta=meta)
    _write_json(side_path(out, ".train.json"),
                {"format": "eden-train", "format_version": 1, "kind": "clean",
                 "network": {"path": str(out), "sha256": file_sha256(out)}, **meta})
    _write_csv(side_path(out, ".train.csv"), history)
    if plot:
        from boosting.plots import plot_history

        plot_history(history, side_path(out, ".train.png"),
                     title=f"{net_spec.name} on {data_spec.name}: clean test accuracy {clean_acc:.4f}")
    if verbose:
        print(f"clean test accuracy {clean_acc:.4f}; written {out}")
    return out


# ------------------------------------------------------------------------------ boosting
def boost(from_path: PathLike, spec: ErrorSpec, *, epochs: int = 4, curriculum: Optional[Curriculum] = None,
          out: PathLike, seeds: Sequence[int] = (0, 1, 2), lr: float = 1e-3, batch_size: int = 32, seed: int = 0,
          data_dir: Optional[PathLike] = None, calib_samples: int = 512, eval_samples: Optional[int] = None,
          resume: bool = True, progress: bool = True, verbose: bool = False, plot: bool = True,
          on_epoch: Optional[Callable[[EpochStats], None]] = None) -> Path:
    """Retrain a network file under errors (EDEN's boosting) and write the boosted network.

    Parameters
    ----------
    from_path : str or Path
        Network file of the parent (:func:`boosting.checkpoint.load_network`).
    spec : ErrorSpec
        Target errors: model at the target BER, format, mitigation, seed.
    epochs : int
        Retraining epochs.
    curriculum : Curriculum, optional
        BER ramp (its ``target_ber`` should be ``spec.model.ber``); None trains at the target.
    out : str or Path
        Boosted network file; ``<stem>.train.json``, ``.train.csv``, ``.train.png`` beside it,
        the resumable checkpoint ``<stem>.boost-ckpt.pt`` while it runs.
    seeds : sequence of int
        Error seeds of the before/after evaluations.
    lr, batch_size, seed
        :func:`boosting.retrain.retrain` arguments.
    data_dir : str or Path, optional
        Overrides the dataset directory stored in the network file.
    calib_samples : int
        Training images used to calibrate the mitigation ranges and IFM scales.
    eval_samples : int, optional
        Evaluate on the first so many test images (default all).
    resume : bool
        Resume from an existing checkpoint (False starts afresh).
    progress : bool
        tqdm bar over the epochs on stderr.
    verbose : bool
        Print the epochs and the before/after table on stdout.
    plot : bool
        Write the PNG.
    on_epoch : callable, optional
        Called with every finished epoch (after its checkpoint).

    Returns
    -------
    Path
        ``out``.
    """
    if not isinstance(spec, ErrorSpec):
        raise TrainError(f"spec must be an ErrorSpec, got {type(spec).__name__}")
    _check_int("epochs", epochs, 1)
    _check_int("calib_samples", calib_samples, 1)
    if eval_samples is not None:
        _check_int("eval_samples", eval_samples, 1)
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
        if verbose:
            print(f"{tag:<13} clean {clean.mean:.4f}   under spec {under.mean:.4f} "
                  f"[{under.ci_low:.4f}, {under.ci_high:.4f}]", flush=True)
        return {"clean": accuracy_to_dict(clean), "under_spec": accuracy_to_dict(under), "calibration": cal}

    if verbose:
        print(f"boosting {from_path} ({parent.network}) under {spec.model.describe()}, fmt {spec.fmt}, "
              f"mitigation {spec.mitigation}; {epochs} epochs, lr {lr:g}, batch {batch_size}, seed {seed}")
    before = measure("before boost")
    calibration = before.pop("calibration")
    out = Path(out)
    ckpt = side_path(out, ".boost-ckpt.pt")
    bar = _bar(epochs, "boosting", progress, "epoch")
    history: list[dict[str, Any]] = []

    def epoch_done(stats: EpochStats) -> None:
        row = {"epoch": stats.epoch, "loss": stats.loss, "ber": stats.ber, "steps": stats.steps,
               "skipped_steps": stats.skipped_steps}
        history.append(row)
        bar.set_postfix_str(f"BER {stats.ber:.1e} loss {stats.loss:.3f}", refresh=False)
        bar.update(1)
        if verbose:
            print(f"  epoch {stats.epoch + 1:>3}/{epochs}  BER {stats.ber:.2e}  loss {stats.loss:.4f}"
                  + (f"  ({stats.skipped_steps} non-finite steps skipped)" if stats.skipped_steps else ""), flush=True)
        if on_epoch is not None:
            on_epoch(stats)

    if ckpt.exists() and resume:
        bar.write(f"resuming from checkpoint {ckpt}", file=sys.stderr)
    try:
        result = retrain(net, train, spec, epochs=epochs, lr=lr, curriculum=curriculum, calibration=calibration,
                         seed=seed, batch_size=batch_size, checkpoint_path=ckpt, resume=resume, on_epoch=epoch_done)
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
    meta = {"kind": "boosted", "parent": {"path": str(from_path), "sha256": file_sha256(from_path),
                                          "kind": parent.meta.get("kind"),
                                          "clean_test_accuracy": parent.meta.get("clean_test_accuracy")},
            "spec": spec_to_dict(spec), "settings": settings, "history": history, "resumed_from": result.resumed_from,
            "before": before, "after": after, "clean_test_accuracy": after["clean"]["mean"]}
    save_network(out, net, network=parent.network, build=parent.build, seed=parent.seed, dataset=parent.dataset,
                 meta=meta)
    _write_json(side_path(out, ".train.json"),
                {"format": "eden-train", "format_version": 1, "kind": "boosted",
                 "network": {"path": str(out), "sha256": file_sha256(out)}, **meta})
    rows = [dict(r, stage="boost") for r in history]
    for tag, m in (("before", before), ("after", after)):
        rows.append({"stage": tag, "clean_acc": m["clean"]["mean"], "spec_acc": m["under_spec"]["mean"],
                     "spec_ci_low": m["under_spec"]["ci_low"], "spec_ci_high": m["under_spec"]["ci_high"],
                     "ber": spec.model.ber})
    _write_csv(side_path(out, ".train.csv"), rows)
    if plot:
        from boosting.plots import plot_history

        plot_history(history, side_path(out, ".train.png"),
                     title=f"boosting at BER {spec.model.ber:.1e}: under spec {before['under_spec']['mean']:.3f}"
                           f" -> {after['under_spec']['mean']:.3f}")
    ckpt.unlink(missing_ok=True)
    if verbose:
        print(f"written {out}")
    return out


# ----------------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line ``error: ...`` and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def ber_arg(text: str) -> float:
    """argparse type: a BER in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise argparse.ArgumentTypeError(f"a bit error rate must be in (0, 1], got {text!r}")
    return value


def _int_at_least(lo: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < lo:
        raise argparse.ArgumentTypeError(f"must be >= {lo}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(1, text)


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(0, text)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def seeds_arg(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated seeds."""
    try:
        return parse_seeds(text)
    except TrainError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_error_model_args(p: argparse.ArgumentParser, required: bool) -> None:
    """The ``--error-model``, ``--partition``, ``--model-param``, ``--fmt``, ``--mitigation`` options."""
    p.add_argument("--error-model", required=required, default=None if required else "uniform",
                   help="registry name (uniform, wordline, bitline, bit-value or 0-3) or a fitted-model JSON of "
                        "python -m errormodels.fit" + ("" if required else " (default uniform)"))
    p.add_argument("--partition", help="partition label of a fitted-model JSON (default: all / the selected_model one)")
    p.add_argument("--model-param", action="append", metavar="K=V", default=[],
                   help="model parameter (repeatable), e.g. weak_fraction=0.01")
    p.add_argument("--fmt", default="int8", choices=FORMATS, help="numeric format in DRAM (default int8)")
    p.add_argument("--mitigation", default="zero", choices=("zero", "saturate", "none"),
                   help="out-of-range mitigation (default zero)")


def mitigation_arg(text: str) -> Optional[str]:
    """``"none"`` -> None."""
    return None if text == "none" else text


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m boosting.train",
                description="Train a network clean (--network) or boost a trained one by error-aware retraining "
                            "(--from, EDEN Sec. 4.3).")
    g = p.add_argument_group("clean training")
    g.add_argument("--network", help=f"registry network: {', '.join(sorted(NETWORKS))}")
    g.add_argument("--dataset", default="digits", help=f"dataset: {', '.join(sorted(DATASETS))} (default digits)")
    g.add_argument("--data-dir", help="directory of the dataset files (mnist, cifar10)")
    g.add_argument("--image-size", type=positive_int, help="input side in pixels (default: the network's; lenet 28)")
    g.add_argument("--normalize", action="store_true", help="normalize inputs with the dataset mean/std")
    g.add_argument("--width", type=positive_int, help="channel width option of vgg-small / resnets")
    b = p.add_argument_group("boosting")
    b.add_argument("--from", dest="from_path", metavar="NET.pt", help="network file to boost")
    add_error_model_args(b, required=False)
    b.add_argument("--ber", type=ber_arg, help="target bit error rate (default: the model's own)")
    b.add_argument("--curriculum-start", type=ber_arg, help="first BER of the curriculum (default ber/100)")
    b.add_argument("--schedule", default="log", choices=("log", "linear", "none"),
                   help="curriculum shape; none trains at the target BER from the start (default log)")
    b.add_argument("--warmup-epochs", type=nonneg_int, help="epochs to reach the target (default epochs - 1)")
    b.add_argument("--error-seed", type=nonneg_int, default=0, help="seed of the error spec (default 0)")
    b.add_argument("--seeds", type=seeds_arg, default=(0, 1, 2), help="evaluation error seeds (default 0,1,2)")
    b.add_argument("--calib-samples", type=positive_int, default=512, help="calibration images (default 512)")
    b.add_argument("--samples", type=positive_int, help="evaluate on the first N test images (default all)")
    b.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start afresh")
    c = p.add_argument_group("common")
    c.add_argument("--epochs", type=positive_int, help="epochs (default 8 clean, 4 boosting)")
    c.add_argument("--lr", type=positive_float, help="Adam learning rate (default 3e-3 clean, 1e-3 boosting)")
    c.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    c.add_argument("--seed", type=nonneg_int, default=0, help="seed of weights / order (default 0)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    c.add_argument("-o", "--out", required=True, help="network file to write (e.g. out/lenet.pt)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``python -m boosting.train``; 0 on success, 2 on bad input, 130 when interrupted."""
    from boosting.checkpoint import CheckpointError

    p = _parser()
    args = p.parse_args(argv)
    try:
        if args.from_path is None:
            if args.network is None:
                raise TrainError("give --network (clean training) or --from (boosting)")
            if args.ber is not None or args.curriculum_start is not None:
                raise TrainError("--ber and --curriculum-start apply to boosting (--from)")
            train_clean(args.network, args.dataset, epochs=args.epochs or 8, lr=args.lr or 3e-3,
                        batch_size=args.batch_size, seed=args.seed, image_size=args.image_size,
                        data_dir=args.data_dir, normalize=args.normalize,
                        options={"width": args.width} if args.width else None, out=args.out,
                        progress=not args.no_progress, verbose=True, plot=not args.no_plot)
            return 0
        if args.network is not None:
            raise TrainError("--network builds a new network; with --from the file says which network it is")
        if not Path(args.from_path).is_file():
            raise TrainError(f"network file {args.from_path!r} does not exist")
        model = error_model_from(args.error_model, parse_model_params(args.model_param), args.partition)
        if args.ber is not None:
            model = model.with_ber(args.ber)
        if model.ber <= 0:
            raise TrainError("the error model's BER is 0: give --ber")
        spec = ErrorSpec(model, fmt=args.fmt, mitigation=mitigation_arg(args.mitigation), seed=args.error_seed)
        epochs = args.epochs or 4
        curriculum = None
        if args.schedule != "none":
            warmup = args.warmup_epochs if args.warmup_epochs is not None else epochs - 1
            start = args.curriculum_start
            if start is not None and start > model.ber:
                raise TrainError(f"--curriculum-start {start:g} exceeds the target BER {model.ber:g}")
            curriculum = Curriculum(model.ber, start, warmup, args.schedule)
        boost(args.from_path, spec, epochs=epochs, curriculum=curriculum, out=args.out, seeds=args.seeds,
              lr=args.lr or 1e-3, batch_size=args.batch_size, seed=args.seed, data_dir=args.data_dir,
              calib_samples=args.calib_samples, eval_samples=args.samples, resume=not args.restart,
              progress=not args.no_progress, verbose=True, plot=not args.no_plot)
        return 0
    except KeyboardInterrupt:
        print("interrupted" + (" (run the same command again to resume)" if args.from_path else ""), file=sys.stderr)
        return 130
    except (TrainError, ModelError, CheckpointError, DatasetError, NetworkError, ValueError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

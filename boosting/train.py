"""Train a network clean, or boost a trained one by error-aware retraining (``python -m boosting.train``).

This module is the command; the algorithms are :func:`boosting.training.train_clean` and
:func:`boosting.training.boost`, the documents they write :mod:`boosting.records`, the shared
options :mod:`boosting.cli_args`. The old names (``train_clean``, ``boost``,
``error_model_from``, ``file_sha256``, ``spec_to_dict``, ``ber_arg``, ...) are re-exported here.

Clean training
--------------
``python -m boosting.train --network lenet --dataset digits --epochs 8 --lr 3e-3 --batch-size 32
--seed 0 -o out/lenet.pt``

Writes the network file and beside it ``<stem>.train.json``, ``<stem>.train.csv`` and
``<stem>.train.png``; the per-epoch table (epoch, loss, train accuracy, test accuracy) is
printed on stdout at the end. Input size: ``--image-size`` or the network's default (28 for
``lenet``, so digits' 8x8 images are resized to 28x28; 32 for the others); channels and classes
come from the dataset.

Boosting
--------
``python -m boosting.train --network-file out/lenet.pt --error-model model.json|NAME
[--partition P] [--model-param k=v ...] --ber 1e-3 --fmt int8 --mitigation zero
--curriculum-start 1e-6 --schedule log --epochs 4 -o out/lenet-boosted.pt``

(``--from`` is the old spelling of ``--network-file``.) The network is retrained under the error
spec (model at ``--ber``, format, mitigation) with a BER curriculum rising from
``--curriculum-start`` (default ``ber / 100``) to ``--ber`` over ``--warmup-epochs`` epochs
(default ``epochs - 1``: the last epoch runs at the target); ``--schedule none`` trains at the
target from the start. Progress is checkpointed after every epoch in ``<stem>.boost-ckpt.pt``;
running the same command again after an interruption resumes from it (``--restart`` starts
afresh). Clean accuracy and accuracy under the target spec (error seeds ``--seeds``, mean and
95 % CI) are measured before and after, and printed as a table on stdout.

``--error-model`` is a registry name (``uniform``, ``wordline``, ``bitline``, ``bit-value`` or
0-3; shape parameters with ``--model-param k=v``) or a fitted-model JSON of
``python -m errormodels.fit`` (``docs/error-model-format.md``): the ``selected`` model of
``--partition LABEL``, or without it of partition ``all`` (whole DIMM), else of the first
partition that chose ``selected_model``. Without ``--ber`` the model's own BER is used.

Common: ``-q/--quiet`` (warnings only, no progress bar; ``--no-progress``, the old flag, hides
the bar only), ``-v/--verbose``, ``--config FILE.toml`` (keys are the long flag names; flags
override). Errors in the input (unknown names, missing files, bad numbers) print one line
``error: ...`` on stderr and exit with status 2; an interruption exits 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from boosting.cli_args import (
    FORMATS,
    OneLineParser,
    add_error_model_args,
    add_network_file,
    ber_arg,
    error_model_from,
    mitigation_arg,
    network_file_of,
    nonneg_int,
    parse_model_params,
    parse_seeds,
    positive_float,
    positive_int,
    seeds_arg,
)
from boosting.data import DATASETS, DatasetError
from boosting.inference import ErrorSpec
from boosting.networks import NETWORKS, NetworkError
from boosting.records import accuracy_to_dict, side_path, spec_to_dict
from boosting.retrain import Curriculum
from boosting.training import TrainError, boost, train_clean
from errormodels.models import ModelError
from softmc_host.cli import add_config, add_out, add_verbosity, configure_logging, fail, parse_args
from softmc_host.files import FileFormatError, read_json, sha256_file

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
    "ber_arg",
    "positive_int",
    "nonneg_int",
    "positive_float",
    "seeds_arg",
    "mitigation_arg",
    "add_error_model_args",
    "build_parser",
    "main",
]

file_sha256 = sha256_file
"""Old name of :func:`softmc_host.files.sha256_file`."""

_Parser = OneLineParser  # old private name, for scripts that subclassed it

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m boosting.train``."""
    p = OneLineParser(prog="python -m boosting.train",
                      description="Train a network clean (--network) or boost a trained one by error-aware "
                                  "retraining (--network-file, EDEN Sec. 4.3).")
    g = p.add_argument_group("clean training")
    g.add_argument("--network", metavar="NAME", help=f"registry network: {', '.join(sorted(NETWORKS))}")
    g.add_argument("--dataset", default="digits", help=f"dataset: {', '.join(sorted(DATASETS))} (default digits)")
    g.add_argument("--data-dir", help="directory of the dataset files (mnist, cifar10)")
    g.add_argument("--image-size", type=positive_int, help="input side in pixels (default: the network's; lenet 28)")
    g.add_argument("--normalize", action="store_true", help="normalize inputs with the dataset mean/std")
    g.add_argument("--width", type=positive_int, help="channel width option of vgg-small / resnets")
    b = p.add_argument_group("boosting")
    add_network_file(b, "network file to boost (python -m boosting.train)", aliases=("--from",))
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
    c.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    add_out(c, None, "network file to write (e.g. out/lenet.pt)", required=True)
    add_verbosity(c)
    c.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)  # old flag: hides the bar only
    add_config(c)
    return p


def _print_clean(record: dict[str, Any], out: Path) -> None:
    """The per-epoch table of a clean training (stdout)."""
    s = record["settings"]
    print(f"trained {s['network']} on {s['dataset']} ({s['image_size']}x{s['image_size']}), {s['epochs']} epochs, "
          f"Adam lr {s['lr']:g}, batch {s['batch_size']}, seed {s['seed']}")
    print(f"{'epoch':>5} {'loss':>9} {'train acc':>10} {'test acc':>9} {'time (s)':>9}")
    for row in record["history"]:
        loss = float("nan") if row["loss"] is None else row["loss"]  # JSON holds a NaN loss as null
        print(f"{row['epoch'] + 1:>5} {loss:>9.4f} {row['train_acc']:>10.4f} {row['test_acc']:>9.4f} "
              f"{row['seconds']:>9.1f}")
    print(f"clean test accuracy {record['clean_test_accuracy']:.4f}; written {out}")


def _print_boost(record: dict[str, Any], out: Path) -> None:
    """The before/after table of a boosting (stdout)."""
    print(f"boosted {record['parent']['path']} at BER {record['spec']['model']['ber']:.3g}, fmt {record['spec']['fmt']}, "
          f"mitigation {record['spec']['mitigation']}, {len(record['history'])} epochs"
          + (f" (resumed after epoch {record['resumed_from']})" if record.get("resumed_from") else ""))
    print(f"{'':<7} {'clean':>7} {'under spec':>11} {'CI low':>7} {'CI high':>7}")
    for tag in ("before", "after"):
        m = record[tag]
        u = m["under_spec"]
        print(f"{tag:<7} {m['clean']['mean']:>7.4f} {u['mean']:>11.4f} {u['ci_low']:>7.4f} {u['ci_high']:>7.4f}")
    print(f"written {out}")


def _run(args: argparse.Namespace) -> Path:
    """Train or boost as the parsed arguments say; return the network file written."""
    progress = not (args.quiet or args.no_progress)
    from_path = network_file_of(args, required=False)
    if from_path is None:
        if args.network is None:
            raise TrainError("give --network NAME (clean training) or --network-file NET.pt (boosting)")
        if args.ber is not None or args.curriculum_start is not None:
            raise TrainError("--ber and --curriculum-start apply to boosting (--network-file)")
        out = train_clean(args.network, args.dataset, epochs=args.epochs or 8, lr=args.lr or 3e-3,
                          batch_size=args.batch_size, seed=args.seed, image_size=args.image_size,
                          data_dir=args.data_dir, normalize=args.normalize,
                          options={"width": args.width} if args.width else None, out=args.out,
                          progress=progress, verbose=True, plot=not args.no_plot)
        _print_clean(read_json(side_path(out, ".train.json"), "training record"), out)
        return out
    if args.network is not None:
        raise TrainError("--network builds a new network; with --network-file the file says which network it is")
    if not Path(from_path).is_file():
        raise TrainError(f"network file {from_path!r} does not exist")
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
    out = boost(from_path, spec, epochs=epochs, curriculum=curriculum, out=args.out, seeds=args.seeds,
                lr=args.lr or 1e-3, batch_size=args.batch_size, seed=args.seed, data_dir=args.data_dir,
                calib_samples=args.calib_samples, eval_samples=args.samples, resume=not args.restart,
                progress=progress, verbose=True, plot=not args.no_plot)
    _print_boost(read_json(side_path(out, ".train.json"), "training record"), out)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``python -m boosting.train``; 0 on success, 2 on bad input, 130 when interrupted."""
    from boosting.checkpoint import CheckpointError

    args = parse_args(build_parser(), argv)
    configure_logging(args.verbose, args.quiet)
    try:
        _run(args)
    except KeyboardInterrupt:
        resumable = network_file_of(args, required=False) is not None
        print("interrupted" + (" (run the same command again to resume)" if resumable else ""), file=sys.stderr)
        return 130
    except (TrainError, ModelError, CheckpointError, DatasetError, NetworkError, FileFormatError, ValueError,
            OSError) as exc:
        return fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train a network clean, or boost a trained one by error-aware retraining (``python -m boosting.train``).

This module is the command; the algorithms are :func:`boosting.training.train_clean` and
:func:`boosting.training.boost`, the documents they write :mod:`boosting.records`, the shared
options :mod:`boosting.cli_args`. The old names (``train_clean``, ``boost``,
``error_model_from``, ``file_sha256``, ``spec_to_dict``, ``ber_arg``, ...) are re-exported here.

An optional first word says what to do: ``train`` (clean training) or ``boost``
(retraining); without it the options decide (``--network`` or ``--network-file``).

Clean training
--------------
``python -m boosting.train [train] --network lenet --dataset digits --epochs 40 --lr 3e-3
--batch-size 32 --seed 0 [--val-fraction 0.1] [--patience 5] [--lr-schedule plateau] -o out/lenet.pt``

``--epochs`` is the maximum: ``--val-fraction`` of the training split is held out, training
stops after ``--patience`` epochs without a better validation accuracy (0: never), the learning
rate is halved on a validation plateau (``--lr-schedule plateau``, or ``cosine`` / ``none``),
and the best epoch's weights are written. ``--val-fraction 0`` trains all epochs on the whole
training split. Writes the network file and beside it ``<stem>.train.json``, ``<stem>.train.csv`` and
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

Recipes: ``python -m boosting.train boost --network-file out/lenet.pt --recipe NAME
(--ber TARGET | --baseline-ber TOLERATED) ...`` retrains with a :mod:`boosting.recipes` preset
(``eden``, ``control`` = the same schedule without errors, ``mixed``, ``clip``, ``randbet``);
``--baseline-ber`` sets the target to the recipe's factor (3) times the parent's tolerable BER.
The recipe sets the curriculum (``--schedule``, ``--curriculum-start`` and ``--warmup-epochs``
are refused with it); ``--epochs``, ``--lr`` and ``--batch-size`` replace its values.

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
    val_fraction_arg,
)
from boosting.data import DATASETS, DatasetError
from boosting.inference import ErrorSpec
from boosting.networks import NETWORKS, NetworkError
from boosting.records import accuracy_to_dict, side_path, spec_to_dict
from boosting.recipes import RECIPES, get_recipe
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

COMMANDS = ("train", "boost")
"""Optional first word: ``train`` (clean training) or ``boost`` (retraining); the options decide without it."""

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
    g.add_argument("--val-fraction", type=val_fraction_arg, default=0.1,
                   help="share of the training split held out for validation and early stopping, in [0, 1); "
                        "0 trains all --epochs on all of it (default 0.1)")
    g.add_argument("--patience", type=nonneg_int, default=5,
                   help="stop after this many epochs without a better validation accuracy; 0: never (default 5)")
    g.add_argument("--lr-schedule", default="plateau", choices=("none", "plateau", "cosine"),
                   help="learning-rate schedule: halve on a validation plateau, cosine to 0, or none "
                        "(default plateau)")
    b = p.add_argument_group("boosting")
    add_network_file(b, "network file to boost (python -m boosting.train)", aliases=("--from",))
    add_error_model_args(b, required=False)
    b.add_argument("--ber", type=ber_arg, help="target bit error rate (default: the model's own)")
    b.add_argument("--recipe", metavar="NAME",
                   help=f"retraining recipe: {', '.join(sorted(RECIPES))} (control: the same schedule without "
                        "errors); default: the plain curriculum flow below")
    b.add_argument("--control", action="store_true",
                   help="with --recipe: train the recipe's clean control instead (the same schedule, selection and "
                        "clipping, no errors)")
    b.add_argument("--baseline-ber", type=ber_arg,
                   help="with --recipe: the parent's tolerable BER; the target is the recipe's factor times it "
                        "(instead of --ber)")
    b.add_argument("--curriculum-start", type=ber_arg, help="first BER of the curriculum (default ber/100)")
    b.add_argument("--schedule", default=None, choices=("log", "linear", "none"),
                   help="curriculum shape; none trains at the target BER from the start (default log)")
    b.add_argument("--warmup-epochs", type=nonneg_int, help="epochs to reach the target (default epochs - 1)")
    b.add_argument("--error-seed", type=nonneg_int, default=0, help="seed of the error spec (default 0)")
    b.add_argument("--seeds", type=seeds_arg, default=(0, 1, 2), help="evaluation error seeds (default 0,1,2)")
    b.add_argument("--calib-samples", type=positive_int, default=512, help="calibration images (default 512)")
    b.add_argument("--samples", type=positive_int, help="evaluate on the first N test images (default all)")
    b.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start afresh")
    c = p.add_argument_group("common")
    c.add_argument("--epochs", type=positive_int,
                   help="epochs: the maximum of clean training (default 40), boosting's (default 4 or the recipe's)")
    c.add_argument("--lr", type=positive_float,
                   help="Adam learning rate (default 3e-3 clean, 1e-3 boosting or the recipe's)")
    c.add_argument("--batch-size", type=positive_int, help="batch size (default 32 or the recipe's)")
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
    verb = "retrained (control, no errors)" if record.get("kind") == "control" else "boosted"
    recipe = f" with recipe {record['recipe']['name']}" if record.get("recipe") else ""
    print(f"{verb} {record['parent']['path']}{recipe} at BER {record['spec']['model']['ber']:.3g}, fmt {record['spec']['fmt']}, "
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
        if args.ber is not None or args.curriculum_start is not None or args.recipe is not None \
                or args.baseline_ber is not None:
            raise TrainError("--ber, --baseline-ber, --recipe and --curriculum-start apply to boosting (--network-file)")
        out = train_clean(args.network, args.dataset, epochs=args.epochs or 40, lr=args.lr or 3e-3,
                          batch_size=args.batch_size or 32, seed=args.seed, image_size=args.image_size,
                          data_dir=args.data_dir, normalize=args.normalize,
                          options={"width": args.width} if args.width else None, val_fraction=args.val_fraction,
                          patience=args.patience or None,
                          lr_schedule=None if args.lr_schedule == "none" else args.lr_schedule, out=args.out,
                          progress=progress, verbose=True, plot=not args.no_plot)
        _print_clean(read_json(side_path(out, ".train.json"), "training record"), out)
        return out
    if args.network is not None:
        raise TrainError("--network builds a new network; with --network-file the file says which network it is")
    if not Path(from_path).is_file():
        raise TrainError(f"network file {from_path!r} does not exist")
    recipe = get_recipe(args.recipe) if args.recipe is not None else None
    if args.control:
        if recipe is None:
            raise TrainError("--control needs --recipe (the schedule the control follows)")
        recipe = recipe.replace(name=f"control-{recipe.name}", errors_enabled=False)
    model = error_model_from(args.error_model, parse_model_params(args.model_param), args.partition)
    if args.baseline_ber is not None:
        if recipe is None:
            raise TrainError("--baseline-ber needs --recipe (the recipe's target factor)")
        if args.ber is not None:
            raise TrainError("give --ber (the target) or --baseline-ber (the parent's tolerable BER), not both")
        model = model.with_ber(recipe.target_ber(args.baseline_ber))
    if args.ber is not None:
        model = model.with_ber(args.ber)
    if model.ber <= 0:
        raise TrainError("the error model's BER is 0: give --ber")
    spec = ErrorSpec(model, fmt=args.fmt, mitigation=mitigation_arg(args.mitigation), seed=args.error_seed,
                     layer_types=args.layer_types)
    if recipe is not None:
        if args.schedule is not None or args.curriculum_start is not None or args.warmup_epochs is not None:
            raise TrainError(f"recipe {recipe.name!r} sets the curriculum: drop --schedule, --curriculum-start "
                             "and --warmup-epochs")
        out = boost(from_path, spec, recipe=recipe, epochs=args.epochs, out=args.out, seeds=args.seeds, lr=args.lr,
                    batch_size=args.batch_size, seed=args.seed, data_dir=args.data_dir,
                    calib_samples=args.calib_samples, eval_samples=args.samples, resume=not args.restart,
                    progress=progress, verbose=True, plot=not args.no_plot)
        _print_boost(read_json(side_path(out, ".train.json"), "training record"), out)
        return out
    epochs = args.epochs or 4
    curriculum = None
    if (args.schedule or "log") != "none":
        warmup = args.warmup_epochs if args.warmup_epochs is not None else epochs - 1
        start = args.curriculum_start
        if start is not None and start > model.ber:
            raise TrainError(f"--curriculum-start {start:g} exceeds the target BER {model.ber:g}")
        curriculum = Curriculum(model.ber, start, warmup, args.schedule or "log")
    out = boost(from_path, spec, epochs=epochs, curriculum=curriculum, out=args.out, seeds=args.seeds,
                lr=args.lr or 1e-3, batch_size=args.batch_size or 32, seed=args.seed, data_dir=args.data_dir,
                calib_samples=args.calib_samples, eval_samples=args.samples, resume=not args.restart,
                progress=progress, verbose=True, plot=not args.no_plot)
    _print_boost(read_json(side_path(out, ".train.json"), "training record"), out)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``python -m boosting.train``; 0 on success, 2 on bad input, 130 when interrupted."""
    from boosting.checkpoint import CheckpointError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else None
    args = parse_args(build_parser(), argv)
    configure_logging(args.verbose, args.quiet)
    try:
        if command == "train" and network_file_of(args, required=False) is not None:
            raise TrainError("'train' builds a new network (--network); to retrain a file use 'boost'")
        if command == "boost" and network_file_of(args, required=False) is None:
            raise TrainError("'boost' needs the network file: --network-file NET.pt")
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

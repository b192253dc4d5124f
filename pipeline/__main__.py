"""``python -m pipeline [run] [options]`` runs EDEN's flow; ``python -m pipeline check OUT`` re-verifies a report.

A thin shell over :func:`pipeline.flow.run_flow` and :func:`pipeline.report.check_report`: it
reads the flags and an optional ``--config flow.toml`` (keys are the long flag names, e.g.
``max-drop = 0.02`` or ``max_drop = 0.02``; flags on the command line override the file),
builds and validates the :class:`~pipeline.options.FlowOptions`, configures :mod:`logging`
(``-q`` warnings only and no progress bars, ``-v`` more) and turns every bad input into one
``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence

from pipeline.flow import STAGES, FlowError, FlowOptions, run_flow
from softmc_host.cli import add_config, add_out, add_verbosity, configure_logging, fail, parse_args

__all__ = ["main", "options_from_args"]


class _Parser(argparse.ArgumentParser):
    """argparse with the toolkit's one-line ``error: ...`` (exit 2) for bad flags and config files."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (python -m pipeline --help lists the options)")
        raise SystemExit(2)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"give non-negative seeds, got {text!r}")
    return seeds


def _parser() -> argparse.ArgumentParser:
    d = FlowOptions()
    p = _Parser(prog="python -m pipeline", description=(
        "EDEN's flow on a bench: profile, fit, train, characterize, boost, map, validate on the DIMM, "
        "energy and latency, report. Finished stages are skipped on a rerun."))
    p.add_argument("command", nargs="?", default="run", choices=("run", "check"),
                   help="run the flow (default) or check an existing report's numbers against its files")
    p.add_argument("out_dir", nargs="?", help="the flow's output directory (the same as -o/--out)")
    add_out(p, d.out, "output directory")
    add_config(p, "the flow's options")
    p.add_argument("--bench", default=d.bench, help=f"bench file, emu:// or replay:// address (default {d.bench})")
    p.add_argument("--mode", default=d.mode, choices=("power", "latency"),
                   help="what DRAM parameter is reduced: VDD (power) or tRCD (latency) (default power)")
    p.add_argument("--granularity", default=d.granularity, choices=("coarse", "fine"),
                   help="one DIMM-wide setting or per-bank mapping (default coarse)")
    p.add_argument("--max-drop", type=float, default=d.max_drop,
                   help=f"accuracy goal: largest absolute drop below the clean accuracy, a fraction "
                        f"(0.02 = 2 points; default {d.max_drop})")
    p.add_argument("--fmt", default=d.fmt, choices=("fp32", "int16", "int8", "int4", "uint8", "uint4"),
                   help="number format of weights and feature maps in DRAM (default int8)")
    p.add_argument("--mitigation", default="zero", choices=("zero", "saturate", "none"),
                   help="what happens to values outside the calibrated range after errors (default zero)")
    p.add_argument("--network", default=d.network, help="registry network name (default lenet)")
    p.add_argument("--dataset", default=d.dataset, help="digits (offline default), mnist, cifar10")
    p.add_argument("--data-dir", help="directory of the dataset files (mnist, cifar10)")
    p.add_argument("--image-size", type=int, help="input side in pixels (default: the network's own, 28 for lenet)")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help=f"clean training epochs at most (early stopping on a validation split; default {d.epochs})")
    p.add_argument("--patience", type=int, default=d.patience,
                   help=f"stop clean training after this many epochs without a better validation accuracy, "
                        f"0: train every epoch (default {d.patience})")
    p.add_argument("--recipe", default=d.recipe,
                   help=f"boosting recipe: eden, mixed, clip, randbet (boosting.recipes; default {d.recipe})")
    p.add_argument("--boost-epochs", type=int, default=d.boost_epochs,
                   help=f"boosting (retraining) epochs, 0: no boosting (default {d.boost_epochs})")
    p.add_argument("--boost-factor", type=float, default=d.boost_factor,
                   help="boost at this many times the baseline's tolerable BER (default: the recipe's target_factor)")
    p.add_argument("--control", action=argparse.BooleanOptionalAction, default=d.control,
                   help="also retrain a clean control with the boosting schedule and no errors (default on)")
    p.add_argument("--curve-seeds", type=int, default=d.curve_seeds,
                   help=f"error seeds of the accuracy curves that give the tolerable BER and its interval "
                        f"(default {d.curve_seeds})")
    p.add_argument("--holdout-seeds", type=int, default=d.holdout_seeds,
                   help=f"held-out error seeds re-scoring the tolerance searches, 0: none (default {d.holdout_seeds})")
    p.add_argument("--seeds", type=_seeds, default=d.seeds,
                   help="error seeds of characterization and simulation, comma-separated (default 0,1,2,3,4)")
    p.add_argument("--hil-repeats", type=int, default=d.hil_repeats,
                   help=f"repetitions of the inference through the DIMM (default {d.hil_repeats})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"inference batch (images); feature-map placements are sized for it (default {d.batch_size})")
    p.add_argument("--vdd", default=d.vdd,
                   help=f"VDD values in V to sweep in power mode, profiler.sweep syntax (default {d.vdd})")
    p.add_argument("--trcd", default=d.trcd, help=f"tRCD values in ns to sweep in latency mode (default {d.trcd})")
    p.add_argument("--workers", type=int, default=d.workers,
                   help=f"characterization worker processes, 0: in this process (default {d.workers})")
    p.add_argument("--executor", default=d.executor, metavar="local|serial|dask://HOST:PORT",
                   help="where characterization's probes run: local processes (--workers), this process, or a "
                        "Dask scheduler (pip install .[cluster]) (default local)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of training and error draws (default 0)")
    p.add_argument("--redo", default="", help=f"comma list of stages to rerun: {','.join(STAGES)}")
    p.add_argument("--stop-after", choices=STAGES, help="last stage to run")
    add_verbosity(p)
    p.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)  # old spelling of -q
    return p


def options_from_args(args: argparse.Namespace) -> FlowOptions:
    """The validated options of parsed arguments (:class:`FlowError` for a bad value)."""
    doc: dict[str, Any] = {name: getattr(args, name) for name in FlowOptions.__struct_fields__
                           if name not in ("out", "mitigation", "progress")}
    doc["out"] = args.out_dir or args.out
    doc["mitigation"] = None if args.mitigation == "none" else args.mitigation
    doc["progress"] = not args.quiet
    return FlowOptions.from_mapping(doc)


def _input_errors() -> tuple[type[BaseException], ...]:
    """The one-line errors of the libraries the stages call (bad input, not bugs)."""
    from boosting.characterize import CharacterizeError
    from boosting.checkpoint import CheckpointError
    from boosting.data import DatasetError
    from boosting.inference import InferenceError
    from boosting.map import MapError
    from boosting.networks import NetworkError
    from boosting.recipes import RecipeError
    from boosting.retrain import RetrainError
    from boosting.tolerable import ToleranceMeasureError
    from boosting.tolerance import ToleranceError
    from boosting.train import TrainError
    from errormodels.fit import FitError
    from errormodels.models import ModelError
    from profiler.storage import MapError as BerMapError
    from softmc_host.files import FileFormatError

    return (FlowError, MapError, BerMapError, FitError, ModelError, CharacterizeError, CheckpointError,
            DatasetError, NetworkError, TrainError, FileFormatError, InferenceError, ToleranceError, RecipeError,
            RetrainError, ToleranceMeasureError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; exit 2 with a one-line message on bad input, 130 when interrupted."""
    args = parse_args(_parser(), argv)
    configure_logging(args.verbose, args.quiet)
    if args.command == "check":
        from pipeline.report import check_report

        try:
            problems = check_report(Path(args.out_dir or args.out))
        except FlowError as exc:
            return fail(str(exc))
        for p in problems:
            print(p)
        print("report agrees with its files" if not problems else f"{len(problems)} problem(s)")
        return 0 if not problems else 1
    try:
        opts = options_from_args(args)
        run_flow(opts, redo=[s.strip() for s in args.redo.split(",") if s.strip()], stop_after=args.stop_after)
    except _input_errors() as exc:
        if not getattr(exc, "reported", False):
            return fail(str(exc))
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are on disk; rerun the same command to resume", file=sys.stderr)
        return 130
    if args.stop_after in (None, "report"):
        print(f"report: {Path(opts.out) / 'report.md'} (python -m pipeline check {opts.out} re-verifies it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

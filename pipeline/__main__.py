"""``python -m pipeline [run] [options]`` runs EDEN's flow; ``python -m pipeline check OUT`` re-verifies a report."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from pipeline.flow import STAGES, FlowError, FlowOptions, run_flow


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
    p = argparse.ArgumentParser(prog="python -m pipeline", description=(
        "EDEN's flow on a bench: profile, fit, train, characterize, boost, map, validate on the DIMM, "
        "energy and latency, report. Finished stages are skipped on a rerun."))
    p.add_argument("command", nargs="?", default="run", choices=("run", "check"),
                   help="run the flow (default) or check an existing report's numbers against its files")
    p.add_argument("out_dir", nargs="?", help="with check: the flow's output directory")
    p.add_argument("--out", default=d.out, help=f"output directory (default {d.out})")
    p.add_argument("--bench", default=d.bench, help=f"bench file, emu:// or replay:// address (default {d.bench})")
    p.add_argument("--mode", default=d.mode, choices=("power", "latency"), help="reduce VDD or tRCD (default power)")
    p.add_argument("--granularity", default=d.granularity, choices=("coarse", "fine"),
                   help="one DIMM-wide setting or per-bank mapping (default coarse)")
    p.add_argument("--max-drop", type=float, default=d.max_drop,
                   help=f"accuracy goal: largest absolute drop below the clean accuracy, a fraction "
                        f"(0.02 = 2 points; default {d.max_drop})")
    p.add_argument("--fmt", default=d.fmt, choices=("fp32", "int16", "int8", "int4"),
                   help="number format of weights and feature maps in DRAM (default int8)")
    p.add_argument("--mitigation", default="zero", choices=("zero", "saturate", "none"),
                   help="what happens to values outside the calibrated range after errors (default zero)")
    p.add_argument("--network", default=d.network, help="registry network (default lenet)")
    p.add_argument("--dataset", default=d.dataset, help="digits (offline default), mnist, cifar10")
    p.add_argument("--data-dir", help="directory of the dataset files (mnist, cifar10)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"clean training epochs (default {d.epochs})")
    p.add_argument("--boost-epochs", type=int, default=d.boost_epochs, help=f"boosting (retraining) epochs, 0: no boosting (default {d.boost_epochs})")
    p.add_argument("--boost-factor", type=float, default=d.boost_factor,
                   help=f"boost at this many times the baseline's tolerable BER (default {d.boost_factor:g})")
    p.add_argument("--seeds", type=_seeds, default=d.seeds, help="error seeds of characterization and simulation, comma-separated (default 0,1,2,3,4)")
    p.add_argument("--hil-repeats", type=int, default=d.hil_repeats, help=f"repetitions of the inference through the DIMM (default {d.hil_repeats})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"inference batch (images); feature-map placements are sized for it (default {d.batch_size})")
    p.add_argument("--vdd", default=d.vdd, help=f"VDD values in V to sweep in power mode, profiler.sweep syntax (default {d.vdd})")
    p.add_argument("--trcd", default=d.trcd, help=f"tRCD values in ns to sweep in latency mode (default {d.trcd})")
    p.add_argument("--workers", type=int, default=d.workers, help=f"characterization worker processes, 0: in this process (default {d.workers})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of training and error draws (default 0)")
    p.add_argument("--redo", default="", help=f"comma list of stages to rerun: {','.join(STAGES)}")
    p.add_argument("--stop-after", choices=STAGES, help="last stage to run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; exit 2 with a one-line message on bad input."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        from pathlib import Path

        from pipeline.report import check_report

        try:
            problems = check_report(Path(args.out_dir or args.out))
        except FlowError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for p in problems:
            print(p)
        print("report agrees with its files" if not problems else f"{len(problems)} problem(s)")
        return 0 if not problems else 1
    opts = FlowOptions(out=args.out, bench=args.bench, mode=args.mode, granularity=args.granularity,
                       max_drop=args.max_drop, fmt=args.fmt,
                       mitigation=None if args.mitigation == "none" else args.mitigation, network=args.network,
                       dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                       boost_epochs=args.boost_epochs, boost_factor=args.boost_factor, seeds=args.seeds,
                       hil_repeats=args.hil_repeats, batch_size=args.batch_size, vdd=args.vdd, trcd=args.trcd, workers=args.workers,
                       seed=args.seed, progress=not args.no_progress)
    from boosting.characterize import CharacterizeError
    from boosting.checkpoint import CheckpointError
    from boosting.data import DatasetError
    from boosting.map import MapError
    from boosting.networks import NetworkError
    from boosting.train import TrainError
    from errormodels.fit import FitError
    from errormodels.models import ModelError
    from profiler.storage import MapError as BerMapError

    try:
        run_flow(opts, redo=[s for s in args.redo.split(",") if s], stop_after=args.stop_after)
    except (FlowError, MapError, BerMapError, FitError, ModelError, CharacterizeError, CheckpointError,
            DatasetError, NetworkError, TrainError) as exc:
        if not getattr(exc, "reported", False):
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are on disk; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

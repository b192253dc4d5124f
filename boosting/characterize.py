"""Error tolerance of a network file (``python -m boosting.characterize``; EDEN Algorithms 2 and 3).

This module is the command; the searches, their workloads and executors and
:func:`~boosting.characterization.characterize_network` live in
:mod:`boosting.characterization` and are re-exported here under their old names
(``coarse_characterize``, ``fine_characterize``, ``NetworkWorkload``, ``SerialExecutor``,
``Probe``, ``CoarseResult``, ``FineResult``, ``CharacterizeError``, ``STATISTICS``,
``characterize_network``, ``probe_rows``), with :func:`confidence_interval` (the old private
``_interval`` stays an alias).

Command
-------
``python -m boosting.characterize --network-file NET.pt [--error-model model.json|NAME]
[--partition LABEL] [--model-param k=v ...] [--fmt int8] [--mitigation zero|saturate|none]
[--max-drop 0.01] [--seeds 0,1,2,3,4] [--holdout-seeds 20] [--curve-seeds 20] [--reference NET.pt|ACC]
[--statistic ci_low|mean] [--search coarse|fine|both] [--ber-min 1e-7] [--ber-max 0.1] [--tol 0.25]
[--factor 2] [--max-steps 20] [--start-ber B] [--retrain-epochs N] [--workers 2]
[--executor local|serial|dask://HOST:PORT] [--samples N] [--journal FILE | --no-journal] [--fresh]
[-o tolerance.json] [-q] [-v] [--config FILE.toml]``

The goal is ``reference - max_drop``, the reference being the accuracy, in the same format and
mitigation, of ``--reference`` (a network file or an accuracy in [0, 1]) or, by default, of
the original network a boosted or control network derives from (else the network itself). The
results are re-scored on ``--holdout-seeds N`` held-out error seeds (1000 .. 1000+N-1; 0
disables) and backed off until they pass. Beside the searches, ``--curve-seeds N`` (default 20;
0 skips it) measures the tolerable BER as a number with an interval: the mean-accuracy curve
over N error seeds, four BERs per decade over ``[--ber-min, --ber-max]``, its crossing with the
goal interpolated on log BER, and a bootstrap interval (:mod:`boosting.tolerable`).

``--executor`` says where the probes run (:func:`profiler.executors.resolve_executor`):
``local`` (default; ``--workers`` spawned processes, 0 = this process), ``serial`` (this
process) or ``dask://HOST:PORT`` (a scheduler started with ``dask scheduler``, workers with
``dask worker tcp://HOST:PORT``; needs ``pip install .[cluster]``). The results are the same
under every executor; an unreachable scheduler is a one-line error after 10 s.

Every finished probe task is recorded in the probe journal (``--journal FILE``, default
``<out stem>.probes.jsonl`` beside the document; :mod:`boosting.journal`). Rerunning an
interrupted command answers the recorded tasks from it and runs only the rest, so it resumes
where it stopped and ends with the document an uninterrupted run writes. ``--fresh`` starts the
journal over (after editing the toolkit in place, say); ``--no-journal`` keeps none. The honest
curve (``--curve-seeds``) is not journaled.

The network file may also be given as the first positional argument (the old spelling), and
``--mode`` is the old name of ``--search``. Every probe is logged on stderr (hidden by ``-q``),
a results table is printed on stdout; the document is written to ``--out`` with its probes in
``<stem>.csv`` and a plot in ``<stem>.png`` (``docs/tolerance-format.md``). Bad input prints one
line ``error: ...`` on stderr and exits 2; an interruption exits 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from boosting.characterization import (
    DEFAULT_HOLDOUT_SEEDS,
    DEFAULT_SEEDS,
    SEARCHES,
    STATISTICS,
    CharacterizeError,
    CoarseResult,
    FineResult,
    NetworkWorkload,
    Probe,
    SerialExecutor,
    Workload,
    characterize_network,
    coarse_characterize,
    fine_characterize,
    probe_line,
)
from boosting.cli_args import (
    OneLineParser,
    add_error_model_args,
    add_network_file,
    ber_arg,
    error_model_from,
    fraction_arg,
    mitigation_arg,
    network_file_of,
    nonneg_int,
    parse_model_params,
    positive_float,
    positive_int,
    seeds_arg,
)
from boosting.inference import ErrorSpec, confidence_interval
from boosting.records import probe_rows, side_path, write_tolerance
from boosting.training import TrainError
from profiler.executors import ExecutorError, check_executor_spec
from softmc_host.cli import add_config, add_out, add_verbosity, configure_logging, fail, parse_args

__all__ = [
    "CharacterizeError",
    "STATISTICS",
    "SEARCHES",
    "Workload",
    "NetworkWorkload",
    "SerialExecutor",
    "Probe",
    "CoarseResult",
    "FineResult",
    "confidence_interval",
    "coarse_characterize",
    "fine_characterize",
    "characterize_network",
    "probe_rows",
    "format_summary",
    "build_parser",
    "main",
]

_interval = confidence_interval  # the old private name (pipeline.report and boosting.hil used it)
_probe_line = probe_line  # the old private name

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m boosting.characterize``."""
    p = OneLineParser(prog="python -m boosting.characterize",
                      description="Error tolerance of a network file: coarse (highest uniform BER, EDEN Algorithm 2) "
                                  "and fine (per layer and data kind, Algorithm 3) characterization.")
    add_network_file(p, "network file (python -m boosting.train); may also be given as the first argument",
                     positional=True)
    add_error_model_args(p, required=False)
    p.add_argument("--error-seed", type=nonneg_int, default=0, help="seed of the error spec (default 0)")
    p.add_argument("--max-drop", type=fraction_arg, default=0.01,
                   help="tolerated accuracy drop, absolute, in [0, 1] (default 0.01)")
    p.add_argument("--seeds", type=seeds_arg, default=DEFAULT_SEEDS,
                   help="search error seeds per probe, fresh masks each probe (default 0,1,2,3,4)")
    p.add_argument("--holdout-seeds", type=nonneg_int, default=len(DEFAULT_HOLDOUT_SEEDS), metavar="N",
                   help="re-score the results on N held-out error seeds (1000..) and back off until they pass; "
                        "0 disables (default 20)")
    p.add_argument("--curve-seeds", type=nonneg_int, default=20, metavar="N",
                   help="measure the tolerable BER with an interval from an accuracy curve over N error seeds; "
                        "0 skips it (default 20)")
    p.add_argument("--reference", metavar="NET.pt|ACC",
                   help="anchor the goal at this network file's accuracy in the same format (or at this "
                        "accuracy in [0, 1]); default: the original network a boosted/control one derives from")
    p.add_argument("--statistic", default="ci_low", choices=STATISTICS, help="pass/fail statistic (default ci_low)")
    p.add_argument("--search", default="coarse", choices=SEARCHES,
                   help="coarse (uniform BER), fine (per layer and kind) or both (default coarse)")
    p.add_argument("--mode", dest="search", default=argparse.SUPPRESS, choices=SEARCHES,
                   help=argparse.SUPPRESS)  # old name of --search
    p.add_argument("--ber-min", type=ber_arg, default=1e-7, help="lowest BER probed (default 1e-7)")
    p.add_argument("--ber-max", type=ber_arg, default=0.1, help="highest BER probed (default 0.1)")
    p.add_argument("--tol", type=positive_float, default=0.25, help="coarse resolution in decades (default 0.25)")
    p.add_argument("--factor", type=positive_float, default=2.0, help="fine step factor, > 1 (default 2)")
    p.add_argument("--max-steps", type=positive_int, default=20, help="fine steps per key (default 20)")
    p.add_argument("--start-ber", type=ber_arg, help="fine start BER (default: the coarse result)")
    p.add_argument("--retrain-epochs", type=nonneg_int, default=0,
                   help="retrain a copy of the net N epochs at every coarse probe (boosting; default 0)")
    p.add_argument("--retrain-lr", type=positive_float, default=1e-3, help="learning rate of those (default 1e-3)")
    p.add_argument("--workers", type=nonneg_int, default=2,
                   help="worker processes of the local executor; 0 = in this process (default 2)")
    p.add_argument("--executor", type=executor_arg, default="local", metavar="local|serial|dask://HOST:PORT",
                   help="where the probes run: local processes (--workers), this process, or a Dask scheduler "
                        "(pip install .[cluster]; the network and data go to each worker once) (default local)")
    p.add_argument("--samples", type=positive_int, help="evaluate on the first N test images (default all)")
    p.add_argument("--calib-samples", type=positive_int, default=512, help="calibration images (default 512)")
    p.add_argument("--data-dir", help="dataset directory (overrides the one in the network file)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--journal", metavar="FILE",
                   help="probe journal: every finished probe task is recorded, and a rerun answers the recorded "
                        "ones from it, resuming an interrupted run (default <out stem>.probes.jsonl)")
    p.add_argument("--no-journal", action="store_true", help="keep no probe journal (a rerun starts over)")
    p.add_argument("--fresh", action="store_true", help="start the probe journal over instead of resuming from it")
    add_out(p, "tolerance.json", "tolerance document to write (JSON; .csv and .png beside it)")
    add_verbosity(p)
    add_config(p)
    return p


def format_summary(doc: dict[str, Any]) -> str:
    """The results table of a tolerance document, as printed by the command."""
    from errormodels.models import ModelError, model_from_dict

    try:
        model = model_from_dict(doc["model"]).describe()
    except (ModelError, KeyError, TypeError, ValueError):
        model = str(doc.get("model", {}).get("model", "?"))
    lines = [f"network {doc['network']['path']} ({doc['network']['name']}), model {model}, "
             f"fmt {doc['fmt']}, mitigation {doc['mitigation']}, {doc['samples']} samples, seeds {doc['seeds']}"]
    part = doc["coarse"] or doc["fine"]
    if part is not None:
        ref = doc.get("reference") or {}
        anchor = f" of {ref.get('path')}" if ref.get("path") and ref.get("source") != "self" else ""
        where = f", reference {ref['source']}{anchor}" if ref.get("source") else ""
        lines.append(f"baseline {part['baseline']:.4f}, goal {part['goal']:.4f} (max drop {doc['max_drop']:g}, "
                     f"statistic {doc['statistic']}{where})")
    if doc["coarse"] is not None:
        c = doc["coarse"]
        lines.append(f"\n{'BER':>10} {'mean':>7} {'CI low':>7} {'CI high':>7}  result")
        for pr in c["probes"]:
            if pr["stage"] == "coarse":
                lines.append(f"{pr['ber']:>10.3e} {pr['mean']:>7.4f} {pr['ci_low']:>7.4f} {pr['ci_high']:>7.4f}  "
                             f"{'pass' if pr['passed'] else 'fail'}")
        lines.append(f"coarse: tolerated uniform BER {c['ber']:.3e}" + ("" if c["found"] else " (even ber-min failed)"))
        h = c.get("holdout")
        if h:
            lines.append(f"  held-out ({len(h['seeds'])} seeds): search BER {c.get('search_ber', c['ber']):.3e}, "
                         f"{h['backed_off']} failed re-scoring(s), {'passed' if h['passed'] else 'nothing passed'}")
    if doc["fine"] is not None:
        f = doc["fine"]
        sens = {(a, b): v for a, b, v in f["sensitivity"]}
        lines.append(f"\nfine (start BER {f['start_ber']:.3e}):\n{'layer':<24} {'kind':<6} {'BER':>10} "
                     f"{'sensitivity':>12}")
        for layer, kind, ber in f["bers"]:
            lines.append(f"{layer:<24} {kind:<6} {ber:>10.3e} {sens.get((layer, kind), float('nan')):>12.4f}")
        h = f.get("holdout")
        if h:
            lines.append(f"  held-out ({len(h['seeds'])} seeds): {h['backed_off']} failed re-scoring(s), "
                         + ("passed" if h["passed"] else "nothing passed (no fine BERs)"))
    elif doc.get("mode") != "coarse":
        lines.append("fine: skipped (no BER passed the coarse search)")
    cv = doc.get("curve")
    if cv:
        t = cv["tolerable"]
        lines.append(f"\ntolerable BER {t['ber']:.3e}, {100 * t['confidence']:.0f} % interval [{t['ci_low']:.3e}, "
                     f"{t['ci_high']:.3e}] ({t['status']}; curve over {t['n_seeds']} seeds, goal {t['goal']:.4f})")
    return "\n".join(lines)


_HOLDOUT_BASE = DEFAULT_HOLDOUT_SEEDS[0]


def executor_arg(value: str) -> str:
    """``--executor``: ``local``, ``serial`` or ``dask://HOST:PORT`` (checked, not connected)."""
    try:
        check_executor_spec(value)
    except ExecutorError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _reference_arg(value: Optional[str]) -> Any:
    """``--reference``: None, an accuracy in [0, 1], or an existing network file's path."""
    if value is None:
        return None
    try:
        accuracy = float(value)
    except ValueError:
        accuracy = None
    if accuracy is not None and not Path(value).is_file():
        if not 0.0 <= accuracy <= 1.0:
            raise CharacterizeError(f"--reference accuracy must be in [0, 1], got {value}")
        return accuracy
    if not Path(value).is_file():
        raise CharacterizeError(f"--reference network file {value!r} does not exist")
    return value


def _run(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Characterize as the parsed arguments say; return the document and the path written."""
    if not args.ber_min < args.ber_max:
        raise CharacterizeError(f"--ber-min {args.ber_min:g} must be below --ber-max {args.ber_max:g}")
    if args.factor <= 1:
        raise CharacterizeError(f"--factor must be > 1, got {args.factor:g}")
    net_path = network_file_of(args)
    if not Path(net_path).is_file():
        raise CharacterizeError(f"network file {net_path!r} does not exist")
    model = error_model_from(args.error_model, parse_model_params(args.model_param), args.partition)
    spec = ErrorSpec(model, fmt=args.fmt, mitigation=mitigation_arg(args.mitigation), seed=args.error_seed,
                     layer_types=args.layer_types)
    reference = _reference_arg(args.reference)
    holdout = tuple(range(_HOLDOUT_BASE, _HOLDOUT_BASE + args.holdout_seeds))
    shared = sorted(set(holdout) & set(args.seeds))
    if shared:
        raise CharacterizeError(f"--seeds must not hold the held-out seeds {_HOLDOUT_BASE}.."
                                f"{_HOLDOUT_BASE + args.holdout_seeds - 1} (found {shared[0]})")

    def show(search: str, probe: Probe) -> None:
        log.info("%s", probe_line(search, probe))

    if args.no_journal and (args.journal or args.fresh):
        raise CharacterizeError("--no-journal excludes --journal and --fresh")
    journal = None if args.no_journal else (args.journal or str(side_path(args.out, ".probes.jsonl")))

    doc = characterize_network(net_path, spec, search=args.search, max_drop=args.max_drop, seeds=args.seeds,
                               ber_min=args.ber_min, ber_max=args.ber_max, tol=args.tol, factor=args.factor,
                               max_steps=args.max_steps, start_ber=args.start_ber, statistic=args.statistic,
                               retrain_epochs=args.retrain_epochs, retrain_lr=args.retrain_lr,
                               workers=args.workers, executor=args.executor, samples=args.samples, calib_samples=args.calib_samples,
                               data_dir=args.data_dir, progress=show, reference=reference,
                               holdout_seeds=holdout, curve_seeds=args.curve_seeds, journal=journal,
                               fresh=args.fresh)
    out = Path(args.out)
    write_tolerance(doc, out)
    if not args.no_plot:
        from boosting.plots import plot_tolerance

        plot_tolerance(doc, side_path(out, ".png"))
    return doc, out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``python -m boosting.characterize``; 0 on success, 2 on bad input, 130 when interrupted."""
    from boosting.checkpoint import CheckpointError
    from errormodels.models import ModelError

    args = parse_args(build_parser(), argv)
    configure_logging(args.verbose, args.quiet)
    try:
        doc, out = _run(args)
    except KeyboardInterrupt:
        print("interrupted" + ("" if args.no_journal else "; the finished probes are in the probe journal: "
                               "rerun the same command to resume"), file=sys.stderr)
        return 130
    except (TrainError, CharacterizeError, CheckpointError, ModelError, ValueError, OSError) as exc:  # JournalError too
        return fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    print(format_summary(doc))
    print(f"written {out}, {side_path(out, '.csv')}" + ("" if args.no_plot else f", {side_path(out, '.png')}"))
    return 0


if __name__ == "__main__":
    from boosting.characterize import main as _main

    raise SystemExit(_main())

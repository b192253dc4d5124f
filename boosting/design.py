"""Storage design-space search for a network in a memory technology (``python -m boosting.design``; MaxNVM's question).

Command
-------
``python -m boosting.design --network-file NET.pt --sigma S [--code gray|binary]
[--level-sigma a,b,...] [--bits-per-cell 1,2,3] [--encodings dense,bitmask,bitmask+idxsync,csr]
[--protections none,secded,meta,msb] [--prune F|auto] [--finetune-epochs 3] [--max-drop 0.01]
[--seeds 0,...,9] [--backoff-seeds 10] [--holdout-seeds 10] [--statistic mean|ci_low] [--max-misalign 0.01] [--objective cells|energy] [--cost-model FILE.json]
[--no-uniform] [--data-dir DIR] [--no-plot] [-o design.json] [-q] [-v] [--config FILE.toml]``

The network's conv and linear weights are quantized to int8 (per tensor) and stored in eNVM
cells of one device whose level variation is ``--sigma`` (programming-window units;
:meth:`errormodels.models.MLC.from_sigma` gives the bit error rate of each bits-per-cell).
With ``--prune F`` the smallest ``F`` of each layer's weights are zeroed first and the
survivors retrained for ``--finetune-epochs`` (so the sparse encodings have zeros to drop);
``--prune auto`` takes the largest of 0.5 .. 0.9 whose fine-tuned network stays within half of
``--max-drop`` of the reference on the search split (:func:`boosting.storage.auto_prune`).
The goal is the unpruned network's clean int8 accuracy less ``--max-drop``, on the validation
split (the test split when the file has none); the search is :func:`boosting.storage.search_design`
(re-measured and repaired on ``--backoff-seeds N`` further seeds 2000 .. on the search split),
and the design it picks is then measured on the test split under ``--holdout-seeds N`` held-out
error seeds (1000 .. 1000 + N - 1). Unless ``--no-uniform``, every candidate is also applied to
all layers at once and measured on the test split: the density/accuracy table (``<stem>.csv``)
and plot (``<stem>.png``). The document (``docs/memories.md``, "The design document") is
written to ``--out``. Bad input prints one line ``error: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from boosting.cli_args import (
    OneLineParser,
    add_network_file,
    fraction_arg,
    int_list_arg,
    network_file_of,
    nonneg_int,
    seeds_arg,
)
from boosting.inference import injectable_layers
from boosting.records import side_path
from boosting.storage import (
    auto_prune,
    ENCODING_CHOICES,
    OBJECTIVES,
    STATISTICS,
    candidate_plans,
    clean_int8_accuracy,
    envm_memory,
    evaluate_stored,
    finetune_pruned_,
    plan_cost,
    prune_,
    search_design,
    sparsity,
    uniform_tradeoff,
)
from boosting.training import TrainError
from errormodels.encodings import PROTECTIONS, CostModel, EncodingError
from softmc_host.cli import add_config, add_out, add_verbosity, configure_logging, fail, parse_args
from softmc_host.files import atomic_write, write_json

__all__ = ["build_parser", "main", "run_design"]

log = logging.getLogger(__name__)

_HOLDOUT_BASE = 1000
_BACKOFF_BASE = 2000


def _list_arg(choices: Sequence[str], what: str):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {what} {bad[0] if bad else text!r}; known: {', '.join(choices)}")
        return items
    return parse


def _sigma_arg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sigma must be a number > 0, got {text!r}") from None
    if not 0.0 < v < 10.0:
        raise argparse.ArgumentTypeError(f"sigma must be in (0, 10) programming windows, got {text!r}")
    return v


def _floats_arg(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def _prune_arg(text: str) -> Any:
    if text == "auto":
        return "auto"
    v = fraction_arg(text)
    if v >= 1.0:
        raise argparse.ArgumentTypeError(f"--prune must be below 1, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m boosting.design``."""
    p = OneLineParser(prog="python -m boosting.design",
                      description="Per-layer storage design (encoding, protection, bits per cell) of a network in "
                                  "MLC eNVM that keeps an accuracy goal with the fewest cells or the least energy.")
    add_network_file(p, "network file (python -m boosting.train)")
    p.add_argument("--sigma", type=_sigma_arg, required=True,
                   help="the device's cell variation, in programming-window units (docs/memories.md)")
    p.add_argument("--code", choices=("gray", "binary"), default="gray", help="bits to levels (default gray)")
    p.add_argument("--level-sigma", type=_floats_arg, default=(), metavar="A,B,...",
                   help="relative variation of each level (2**b values; default all equal)")
    p.add_argument("--bits-per-cell", type=int_list_arg(1, 4, "bits per cell"), default=(1, 2, 3), metavar="1,2,3",
                   help="bits per cell to consider (default 1,2,3)")
    p.add_argument("--encodings", type=_list_arg(ENCODING_CHOICES, "encoding"), default=ENCODING_CHOICES,
                   help=f"encodings to consider (default {','.join(ENCODING_CHOICES)})")
    p.add_argument("--protections", type=_list_arg(PROTECTIONS, "protection"), default=PROTECTIONS,
                   help=f"protections to consider (default {','.join(PROTECTIONS)})")
    p.add_argument("--prune", type=_prune_arg, default=0.0, metavar="F|auto",
                   help="zero the smallest F of each layer's weights, then fine-tune; auto: the largest of "
                        "0.5..0.9 that keeps the search split within half of --max-drop (default 0)")
    p.add_argument("--finetune-epochs", type=nonneg_int, default=3, help="epochs of fine-tuning after --prune")
    p.add_argument("--max-drop", type=fraction_arg, default=0.01, help="tolerated accuracy drop (default 0.01)")
    p.add_argument("--seeds", type=seeds_arg, default=tuple(range(10)),
                   help="error seeds of the search (default 0..9: a small layer faults rarely, so few seeds miss it)")
    p.add_argument("--backoff-seeds", type=nonneg_int, default=10, metavar="N",
                   help="re-measure the found design on N further seeds (2000..) on the search split and repair "
                        "it until it passes there too; 0 disables (default 10)")
    p.add_argument("--holdout-seeds", type=nonneg_int, default=10, metavar="N",
                   help="measure the design on N held-out error seeds on the test split (default 10)")
    p.add_argument("--statistic", choices=STATISTICS, default="mean",
                   help="judge a design by the mean accuracy over seeds or the low end of its 95 %% interval "
                        "(default mean)")
    p.add_argument("--max-misalign", type=_nonneg_float, default=0.01, metavar="F",
                   help="leave out plans with more than F expected misaligning faults per load of a layer "
                        "(a plain bitmask's mask faults; default 0.01; inf keeps all)")
    p.add_argument("--objective", choices=OBJECTIVES, default="cells", help="what to minimise (default cells)")
    p.add_argument("--cost-model", metavar="FILE.json", help="cost model parameters (docs/memories.md)")
    p.add_argument("--no-uniform", action="store_true", help="skip the table of uniform plans")
    p.add_argument("--data-dir", metavar="DIR", help="directory of the dataset's files (mnist, cifar10)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--threads", type=nonneg_int, default=0, help="torch threads (0: torch's default)")
    add_out(p, "design.json", "design document")
    add_verbosity(p)
    add_config(p)
    return p


def _cost_model(path: Optional[str]) -> CostModel:
    if path is None:
        return CostModel()
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise EncodingError(f"cannot read cost model {path!r}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise EncodingError(f"cost model {path!r} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(doc, dict):
        raise EncodingError(f"cost model {path!r} must be a JSON object")
    return CostModel.from_dict(doc)


def run_design(args: argparse.Namespace) -> dict[str, Any]:
    """Run the search as the parsed arguments say; return the design document (also written)."""
    from boosting.checkpoint import load_network
    from boosting.data import iter_batches

    if args.threads:
        torch.set_num_threads(args.threads)
    path = network_file_of(args)
    if not Path(path).is_file():
        raise TrainError(f"network file {path!r} does not exist")
    cost = _cost_model(args.cost_model)
    nf = load_network(path)
    net = nf.net
    test = iter_batches(nf.load_split("test", args.data_dir), 512)
    search_split = "val" if nf.val_fraction > 0 else "test"
    search = iter_batches(nf.load_split(search_split, args.data_dir), 512) if search_split == "val" else test
    memory = envm_memory(args.sigma, args.code, args.level_sigma)
    for b in args.bits_per_cell:
        memory(b)  # checks --level-sigma against each cell size
    reference = clean_int8_accuracy(net, search)
    reference_test = clean_int8_accuracy(net, test)
    goal = reference - args.max_drop
    pruned = {}
    fraction = args.prune
    if fraction == "auto":
        fraction, net, _ = auto_prune(net, nf.load_split("train", args.data_dir), search,
                                      reference - args.max_drop / 2, epochs=args.finetune_epochs, seed=nf.seed)
    elif fraction > 0:
        net = copy.deepcopy(net)
        masks = prune_(net, fraction)
        if args.finetune_epochs:
            finetune_pruned_(net, masks, nf.load_split("train", args.data_dir), epochs=args.finetune_epochs,
                             seed=nf.seed)
    if fraction > 0:
        pruned = sparsity(net)
    clean = clean_int8_accuracy(net, search)
    log.info("reference %.4f (%s), goal %.4f, after pruning %.4f", reference, search_split, goal, clean)
    candidates = candidate_plans(args.bits_per_cell, args.encodings, args.protections)
    holdout = tuple(range(_HOLDOUT_BASE, _HOLDOUT_BASE + args.holdout_seeds))
    backoff = tuple(range(_BACKOFF_BASE, _BACKOFF_BASE + args.backoff_seeds))
    res = search_design(net, search, candidates, memory, goal=goal, clean=clean, seeds=args.seeds,
                        objective=args.objective, cost=cost, holdout_seeds=backoff, statistic=args.statistic,
                        max_misalign=args.max_misalign,
                        progress=lambda m: log.info("%s", m))
    test_acc = evaluate_stored(net, test, res.plans, memory, seeds=holdout) if holdout else None
    baseline_plans = {n: candidate_plans((1,), ("dense",), ("none",))[0] for n in res.plans}
    baseline = plan_cost(net, baseline_plans, cost)
    base_cells = sum(c.cells for c in baseline.values())
    base_energy = sum(c.energy for c in baseline.values())
    totals = res.totals()
    n_weights = sum(m.weight.numel() for _, m in injectable_layers(net))
    doc: dict[str, Any] = {
        "format": "eden-design/1",
        "network_file": str(path),
        "memory": {"technology": "mlc-envm", "sigma": args.sigma, "code": args.code,
                   "level_sigma": list(args.level_sigma),
                   "ber": {str(b): memory(b).ber for b in args.bits_per_cell}},
        "prune": fraction, "finetune_epochs": args.finetune_epochs if fraction else 0, "sparsity": pruned,
        "search_split": search_split, "reference": reference, "reference_test": reference_test,
        "max_drop": args.max_drop, "goal": goal, "clean_after_prune": clean,
        "objective": args.objective, "statistic": args.statistic, "max_misalign": args.max_misalign, "seeds": list(args.seeds), "backoff_seeds": list(backoff),
        "cost_model": asdict(cost),
        "layers": {n: {"plan": res.plans[n].label, **asdict(res.plans[n]), **asdict(res.costs[n])}
                   for n in res.plans},
        "search_accuracy": asdict(res.accuracy), "passed": res.passed, "repairs": res.repairs,
        "test": None if test_acc is None else {**asdict(test_acc), "seeds": list(holdout),
                                                "passed": test_acc.mean >= reference_test - args.max_drop},
        "totals": {**totals, "weights": n_weights, "cells_per_weight": totals["cells"] / n_weights,
                   "slc_dense_cells": base_cells, "density_vs_slc_dense": base_cells / totals["cells"],
                   "energy_vs_slc_dense": totals["energy"] / base_energy},
        "per_layer_candidates": res.per_layer,
    }
    out = Path(args.out)
    if not args.no_uniform:
        rows = uniform_tradeoff(net, test, candidates, memory, seeds=holdout or args.seeds, cost=cost,
                                progress=lambda r: log.info("uniform %-32s cells/weight %.3f accuracy %.4f",
                                                            r["plan"], r["cells_per_weight"], r["accuracy"]))
        doc["uniform"] = rows
        _write_csv(rows, side_path(out, ".csv"))
        if not args.no_plot:
            from boosting.plots import plot_design

            chosen = (doc["totals"]["cells_per_weight"], test_acc.mean) if test_acc is not None else None
            plot_design(rows, side_path(out, ".png"), goal=reference_test - args.max_drop, chosen=chosen,
                        title=f"{nf.network}, sigma {args.sigma:g} ({args.code})")
    write_json(out, doc)
    return doc


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    keys = list(rows[0]) if rows else []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    data = buf.getvalue().encode()
    atomic_write(path, lambda fh: fh.write(data))


def format_summary(doc: dict[str, Any]) -> str:
    """The design as a table (one row per layer) and its totals."""
    lines = [f"goal {doc['goal']:.4f} on {doc['search_split']} (reference {doc['reference']:.4f}, "
             f"after pruning {doc['clean_after_prune']:.4f})",
             f"{'layer':<16} {'plan':<32} {'cells':>9} {'cells/w':>8} {'energy':>11}"]
    for name, layer in doc["layers"].items():
        lines.append(f"{name:<16} {layer['plan']:<32} {layer['cells']:>9d} {layer['cells_per_weight']:>8.3f} "
                     f"{layer['energy']:>11.0f}")
    t = doc["totals"]
    lines.append(f"total cells {t['cells']:.0f} ({t['cells_per_weight']:.3f} per weight; {t['density_vs_slc_dense']:.2f}x "
                 f"denser than SLC dense), energy {t['energy_vs_slc_dense']:.3f}x of SLC dense")
    acc = doc["search_accuracy"]
    lines.append(f"search accuracy {acc['mean']:.4f} [{acc['ci_low']:.4f}, {acc['ci_high']:.4f}] "
                 f"({'meets' if doc['passed'] else 'misses'} the goal, {doc['repairs']} repairs)")
    if doc["test"]:
        ts = doc["test"]
        lines.append(f"test accuracy {ts['mean']:.4f} [{ts['ci_low']:.4f}, {ts['ci_high']:.4f}] over "
                     f"{len(ts['seeds'])} held-out seeds (clean int8 {doc['reference_test']:.4f}; "
                     f"{'meets' if ts['passed'] else 'misses'} the goal)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``python -m boosting.design``; 0 on success, 2 on bad input, 130 when interrupted."""
    from boosting.checkpoint import CheckpointError
    from errormodels.models import ModelError

    args = parse_args(build_parser(), argv)
    configure_logging(args.verbose, args.quiet)
    try:
        doc = run_design(args)
    except KeyboardInterrupt:
        print("interrupted; nothing was written (rerun the command: it is deterministic)", file=sys.stderr)
        return 130
    except (TrainError, EncodingError, CheckpointError, ModelError, ValueError, OSError) as exc:
        return fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    print(format_summary(doc))
    out = Path(args.out)
    extra = "" if args.no_uniform else f", {side_path(out, '.csv')}" + ("" if args.no_plot else f", {side_path(out, '.png')}")
    print(f"written {out}{extra}")
    return 0


if __name__ == "__main__":
    from boosting.design import main as _main

    raise SystemExit(_main())

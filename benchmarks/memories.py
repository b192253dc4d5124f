"""Weights in MLC eNVM: accuracy against storage cells per weight, dense vs sparse vs IdxSync vs ECC (issue #18).

What it measures, per network (``--networks``: LeNet on 28x28 digits and VGG-small on
32x32-upscaled digits by default), per training split seed (``--split-seeds``) and per device
cell variation (``--sigmas``, programming-window units, :meth:`errormodels.models.MLC.from_sigma`):

1. A converged baseline (:func:`boosting.training.train_clean`, validation split, early stop),
   its clean int8 accuracy the reference; the goal is ``reference - --max-drop`` on the test split.
2. The baseline pruned (``--prune``, default 0.7 of each layer's weights, fixed before any
   measurement; MaxNVM's networks keep 10-40 %) and fine-tuned ``--finetune-epochs`` with the
   zeros held. Its cost is reported on its own; the fault goal of plans on the pruned network is
   the pruned network's clean int8 accuracy less ``--max-drop`` (dense plans on the unpruned
   baseline: the baseline's), so the table separates what pruning costs from what faults cost.
3. Every uniform plan (all layers alike): SLC / MLC2 / MLC3 x dense / bitmask /
   bitmask+IdxSync / CSR x none / SECDED / metadata-SECDED / MSB-SECDED, on the test split over
   ``--seeds`` error seeds (dense plans on the unpruned baseline *and* on the pruned network,
   sparse plans on the pruned one): accuracy with its 95 % interval, cells per weight, read
   energy (relative units, :class:`errormodels.encodings.CostModel`), weights read back wrong.
4. The findings MaxNVM states, each checked on these numbers: sparse encodings are more
   vulnerable (unprotected bitmask / CSR vs dense at the same cells), IdxSync bounds the
   bitmask's damage, protection recovers density (fewest cells per weight meeting the goal,
   with vs without protection), and the per-layer design (:func:`boosting.storage.search_design`,
   searched on the validation split over ``--design-seeds`` seeds, re-measured and repaired on as
   many further seeds 2000.., checked on the test split over held-out seeds 1000..) vs SLC dense.

Outputs under ``--out`` (default ``out/benchmarks/``): ``memories-<network>.json`` (everything),
``memories-<network>.csv`` (one row per plan, sigma and split seed) and the printed tables
(``docs/memories-results.md`` quotes them). Results script, not a test; ``--quick`` is a smoke run.

    python benchmarks/memories.py [--quick] [--networks lenet,vgg-small] [--split-seeds 0,1] [--sigmas 0.02,0.03,0.045]
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from boosting.checkpoint import load_network  # noqa: E402
from boosting.data import iter_batches  # noqa: E402
from boosting.inference import injectable_layers  # noqa: E402
from boosting.storage import (  # noqa: E402
    auto_prune,
    candidate_plans,
    clean_int8_accuracy,
    envm_memory,
    evaluate_stored,
    finetune_pruned_,
    prune_,
    search_design,
    sparsity,
    uniform_tradeoff,
)
from boosting.training import train_clean  # noqa: E402

DEFAULT_SIZES = {"lenet": 28}


def family(row: dict[str, Any]) -> str:
    return row["encoding"] + ("+idxsync" if row["idxsync"] else "")


def cheapest(rows: list[dict[str, Any]], pred=lambda r: True) -> dict[str, Any] | None:
    ok = [r for r in rows if pred(r) and r["meets"]]
    return min(ok, key=lambda r: r["cells_per_weight"]) if ok else None


def main() -> None:  # noqa: C901 - a results script: one linear story
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--networks", default="lenet,vgg-small")
    p.add_argument("--split-seeds", default="0,1", help="training / split seeds")
    p.add_argument("--sigmas", default="0.02,0.03,0.045", help="device cell variations")
    p.add_argument("--code", default="gray", choices=("gray", "binary"))
    p.add_argument("--seeds", type=int, default=10, help="error seeds per plan")
    p.add_argument("--design-seeds", type=int, default=10, help="error seeds per probe of the per-layer search")
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--statistic", default="mean", choices=("mean", "ci_low"), help="what the design search judges by")
    p.add_argument("--prune", default="0.7", help="share of each layer's weights pruned (a fraction, fixed before "
                   "measuring), or auto: the largest of 0.5..0.9 keeping the validation accuracy within half of "
                   "--max-drop (boosting.storage.auto_prune; coarse on digits' 144 validation samples)")
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="LeNet, one split, one sigma, 3 seeds")
    p.add_argument("--out", default="out/benchmarks")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    networks = ["lenet"] if args.quick else args.networks.split(",")
    split_seeds = [0] if args.quick else [int(s) for s in args.split_seeds.split(",")]
    sigmas = [0.03] if args.quick else [float(s) for s in args.sigmas.split(",")]
    n_seeds = 3 if args.quick else args.seeds
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = tuple(range(n_seeds))
    holdout = tuple(range(1000, 1000 + n_seeds))
    candidates = candidate_plans((1, 2, 3))
    for network in networks:
        size = DEFAULT_SIZES.get(network, 32)
        doc: dict[str, Any] = {"args": vars(args), "network": network, "image_size": size, "runs": []}
        csv_rows = []
        for split_seed in split_seeds:
            t0 = time.time()
            base_path = out_dir / f"memories-{network}-s{split_seed}.pt"
            if not base_path.is_file():
                train_clean(network, "digits", epochs=args.max_epochs, seed=split_seed, split_seed=split_seed,
                            image_size=size, out=base_path, plot=False)
            nf = load_network(base_path)
            base = nf.net
            test = iter_batches(nf.load_split("test"), 512)
            val = iter_batches(nf.load_split("val"), 512)
            reference = clean_int8_accuracy(base, test)
            reference_val = clean_int8_accuracy(base, val)
            goal = reference - args.max_drop
            if args.prune == "auto":
                fraction, pruned, _ = auto_prune(base, nf.load_split("train"), val, reference_val - args.max_drop / 2,
                                                 epochs=args.finetune_epochs, seed=split_seed)
            else:
                fraction, pruned = float(args.prune), copy.deepcopy(base)
                masks = prune_(pruned, fraction)
                finetune_pruned_(pruned, masks, nf.load_split("train"), epochs=args.finetune_epochs, seed=split_seed)
            clean_pruned = clean_int8_accuracy(pruned, test)
            n_weights = sum(m.weight.numel() for _, m in injectable_layers(base))
            run: dict[str, Any] = {"split_seed": split_seed, "prune": fraction, "reference": reference, "goal": goal,
                                   "clean_pruned": clean_pruned, "sparsity": sparsity(pruned),
                                   "n_weights": n_weights, "sigmas": {}}
            print(f"\n## {network}, split seed {split_seed}: {n_weights} weights, clean int8 {reference:.4f}, "
                  f"pruned {fraction:.0%} + {args.finetune_epochs} epochs {clean_pruned:.4f}; goals {goal:.4f} (unpruned), "
                  f"{clean_pruned - args.max_drop:.4f} (pruned)")
            for sigma in sigmas:
                memory = envm_memory(sigma, args.code)
                bers = {b: memory(b).ber for b in (1, 2, 3)}
                goal_pruned = clean_pruned - args.max_drop
                dense_base = [dict(r, network_state="unpruned", goal=goal, meets=r["accuracy"] >= goal) for r in
                              uniform_tradeoff(base, test, [c for c in candidates if c.encoding == "dense"], memory,
                                               seeds=seeds)]
                pruned_rows = [dict(r, network_state="pruned", goal=goal_pruned, meets=r["accuracy"] >= goal_pruned)
                               for r in
                               uniform_tradeoff(pruned, test, candidates, memory, seeds=seeds)]
                rows = dense_base + pruned_rows
                clean_val = clean_int8_accuracy(pruned, val)
                design = search_design(pruned, val, candidates, memory, goal=clean_val - args.max_drop,
                                       clean=clean_val, seeds=tuple(range(args.design_seeds)),
                                       holdout_seeds=tuple(range(2000, 2000 + args.design_seeds)),
                                       statistic=args.statistic)
                checked = evaluate_stored(pruned, test, design.plans, memory, seeds=holdout)
                cells = design.totals()["cells"]
                findings = {
                    "best_unprotected": cheapest(rows, lambda r: r["protection"] == "none"),
                    "best_protected": cheapest(rows, lambda r: r["protection"] != "none"),
                    "best_dense_unpruned": cheapest(dense_base),
                    "best_sparse_unprotected": cheapest(rows, lambda r: r["encoding"] != "dense" and r["protection"] == "none"),
                    "best_sparse": cheapest(rows, lambda r: r["encoding"] != "dense"),
                    "best_overall": cheapest(rows),
                }
                run["sigmas"][str(sigma)] = {
                    "ber": {str(b): v for b, v in bers.items()}, "rows": rows, "findings": findings,
                    "design": {"plans": {n: pl.label for n, pl in design.plans.items()},
                               "cells": cells, "cells_per_weight": cells / n_weights,
                               "search_accuracy": design.accuracy.mean, "search_passed": design.passed,
                               "test_accuracy": checked.mean, "test_ci": [checked.ci_low, checked.ci_high],
                               "test_passed": checked.mean >= goal_pruned, "repairs": design.repairs,
                               "density_vs_slc_dense": 8 * n_weights / cells}}
                for r in rows:
                    csv_rows.append({"network": network, "split_seed": split_seed, "sigma": sigma, **r})
                print(f"\n### sigma {sigma:g}: BER SLC {bers[1]:.1e}, MLC2 {bers[2]:.1e}, MLC3 {bers[3]:.1e}")
                print("| plan | network | cells/weight | accuracy [95 % CI] | meets | wrong weights | energy (rel.) |")
                print("|---|---|---|---|---|---|---|")
                for r in rows:
                    print(f"| {r['plan']} | {r['network_state']} | {r['cells_per_weight']:.3f} | {r['accuracy']:.4f} "
                          f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}] | {'yes' if r['meets'] else 'no'} | {r['weights_changed']:.0f} | "
                          f"{r['energy'] / (8 * n_weights * 2):.3f} |")
                for k, v in findings.items():
                    print(f"- {k}: " + (f"{v['plan']} ({v['network_state']}) {v['cells_per_weight']:.3f} cells/weight, "
                                        f"accuracy {v['accuracy']:.4f}" if v else "none meets the goal"))
                d = run["sigmas"][str(sigma)]["design"]
                print(f"- per-layer design: {d['cells_per_weight']:.3f} cells/weight "
                      f"({d['density_vs_slc_dense']:.1f}x denser than SLC dense), test accuracy "
                      f"{d['test_accuracy']:.4f} [{d['test_ci'][0]:.4f}, {d['test_ci'][1]:.4f}] "
                      f"({'meets' if d['test_passed'] else 'misses'} the goal); {d['plans']}")
            run["seconds"] = time.time() - t0
            doc["runs"].append(run)
        (out_dir / f"memories-{network}.json").write_text(json.dumps(doc, indent=1, default=float))
        with open(out_dir / f"memories-{network}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(csv_rows[0]))
            w.writeheader()
            w.writerows(csv_rows)
        print(f"\nwritten {out_dir / f'memories-{network}.json'}, .csv")


if __name__ == "__main__":
    main()

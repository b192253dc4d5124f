"""Boosting results, measured honestly: tolerable BER with intervals for baseline, control and recipes.

What it measures (EDEN, MICRO 2019, Sec. 4-6; issue #15), per network (``--networks``: LeNet
on 28x28 digits and the over-parameterized VGG-small on 32x32-upscaled digits by default;
MNIST / CIFAR-10 with ``--dataset`` and ``--data-dir``), per numeric format + mitigation
(``--formats``) and error model (``--models``):

1. **A converged baseline**: :func:`boosting.training.train_clean` with a validation split and
   early stopping (so a later "boost" cannot be a training gain).
2. **Tolerable BER with intervals**: the mean-accuracy curve over ``--seeds`` (default 20) error
   seeds, on a grid of ``--per-decade`` points per decade, each point with fresh error masks;
   the tolerable BER at each drop of ``--drops`` (1, 2, 5 points) is the crossing of the curve
   with ``goal = reference - drop``, interpolated on log BER (:func:`boosting.tolerable.crossing`),
   with a percentile-bootstrap interval over error seeds and test samples. ``reference`` is
   always the **original** network's clean accuracy in the same format and mitigation, for every
   network derived from it. A curve stops two points after its mean falls below the lowest goal;
   the points above are counted as wrong (accuracy only falls with BER), which can only lower
   a resampled crossing that would otherwise have run past them.
3. **Boosting, beside its control**: for each recipe of ``--recipes``
   (:data:`boosting.recipes.RECIPES`) the baseline is retrained (:func:`boosting.training.boost`)
   at the recipe's target (``target_factor`` x the baseline's tolerable BER at the 1-point
   drop) under the same model, format and mitigation; the ``control`` recipe retrains with
   the identical schedule and no errors. Each network is scored on the same grid and seeds;
   the gain (boosted / baseline, boosted / control) is a paired bootstrap ratio
   (:func:`boosting.tolerable.gain`), and the clean-accuracy cost is reported beside it.
4. **Mismatched retraining** (``--mismatch``, EDEN Fig. 9): retrained under one model,
   evaluated under another: bit-value directions against each other (``zero_share`` 0.9 vs
   0.1), uniform vs wordline, and fp32 without mitigation.
5. **Fine vs coarse on held-out seeds** (``--fine``): :func:`boosting.characterize_network`
   with ``search="both"`` on the search seeds; the search's own results and the results after
   held-out re-scoring and back-off, each re-scored on 30 further unseen seeds.

Outputs under ``--out`` (default ``out/benchmarks/``): ``boosting-<network>.json`` (everything,
per-point curves included), ``boosting-<network>.csv`` (one row per curve point) and the
printed tables. Every random choice is seeded (``--seed``, ``--split-seeds``). Results script,
not a test; ``--quick`` is a small smoke run (a few minutes on two cores).

    python benchmarks/boosting.py [--quick] [--networks lenet,vgg-small] [--split-seeds 0,1]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from boosting.checkpoint import load_network  # noqa: E402
from boosting.inference import ErrorSpec, _seed_of, calibrate  # noqa: E402
from boosting.recipes import get_recipe  # noqa: E402
from boosting.tolerable import curve, default_bers, gain, reference_correctness, tolerable_ber  # noqa: E402
from boosting.training import boost, train_clean  # noqa: E402
from errormodels.models import ErrorModel, get_model  # noqa: E402

DEFAULT_SIZES = {"lenet": 28}
CURVE_TAG = 0x4355


def error_model(name: str, ber: float) -> ErrorModel:
    """A model by benchmark name at ``ber``.

    ``uniform``; ``wordline`` (1 % weak 64-bit groups flipping 100x as often, saturating at high
    BER); ``bitvalue01`` / ``bitvalue10`` (90 % of the flips turn a 0 into a 1, or a 1 into a 0).
    """
    if name == "wordline":
        return get_model("wordline", ber=1e-6, weak_fraction=0.01, ratio=100.0).with_ber(ber)
    if name == "bitvalue01":
        return get_model("bit-value", ber=ber, zero_share=0.9)
    if name == "bitvalue10":
        return get_model("bit-value", ber=ber, zero_share=0.1)
    return get_model(name, ber=ber)


def parse_format(text: str) -> tuple[str, Optional[str]]:
    """``"int8"`` -> ``("int8", None)``; ``"fp32+zero"`` -> ``("fp32", "zero")``."""
    fmt, _, mit = text.partition("+")
    return fmt, (mit or None)


def label(fmt: str, mitigation: Optional[str]) -> str:
    """``int8`` or ``fp32+zero``."""
    return fmt + (f"+{mitigation}" if mitigation else "")


class Scorer:
    """Curves of networks on one test split, all on the same BER grid, error seeds and samples."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, train: Any, bers: list[float], seeds: tuple[int, ...],
                 seed: int, n_boot: int, calib_samples: int = 512) -> None:
        self.x, self.y, self.train = x, y, train
        self.bers, self.seeds, self.seed, self.n_boot = bers, seeds, seed, n_boot
        self.calib = Subset(train, range(min(calib_samples, len(train))))
        self.eval_s = 0.0

    def calibration(self, net: torch.nn.Module, fmt: str) -> Any:
        """The network's own calibration (mitigation ranges, IFM scales) on training images."""
        return calibrate(net, DataLoader(self.calib, batch_size=256), fmt)

    def curve(self, net: torch.nn.Module, model: str, fmt: str, mitigation: Optional[str], stop_goal: float,
              stream: int) -> np.ndarray:
        """Correctness ``(B, S, N)`` over the grid; stops two points below ``stop_goal`` (the rest False).

        Every point draws its own error masks (:func:`boosting.tolerable.curve_seed` of the BER's
        value; ``stream`` separates the configurations).
        """
        t0 = time.perf_counter()
        net.eval()
        cal = self.calibration(net, fmt)
        spec = ErrorSpec(error_model(model, self.bers[0]), fmt=fmt, mitigation=mitigation,
                         seed=_seed_of(self.seed, CURVE_TAG, stream))
        out = curve(net, self.x, self.y, spec, self.bers, self.seeds, calibration=cal, stop_below=stop_goal)
        self.eval_s += time.perf_counter() - t0
        return out

    def reference(self, net: torch.nn.Module, fmt: str, mitigation: Optional[str]) -> np.ndarray:
        """Clean correctness ``(N,)`` of ``net`` in ``fmt`` with ``mitigation`` (no errors)."""
        spec = ErrorSpec(get_model("uniform", ber=0.0), fmt=fmt, mitigation=mitigation, seed=self.seed)
        return reference_correctness(net, self.x, self.y, spec, calibration=self.calibration(net, fmt))

    def summary(self, correct: np.ndarray, reference: np.ndarray, drops: list[float]) -> dict[str, Any]:
        """Per-point means and the tolerable BER (with interval) at every drop."""
        acc = correct.mean(axis=2)  # (B, S)
        return {
            "mean_pct": [100 * float(a.mean()) for a in acc],
            "tolerable": {f"{d:g}": tolerable_ber(correct, self.bers, reference, d / 100, n_boot=self.n_boot,
                                                  seed=self.seed).to_dict() for d in drops},
        }


def fmt_tol(t: dict[str, Any]) -> str:
    """``3.1e-04 [2.0e-04, 4.4e-04]`` (status marks a censored point)."""
    if t["status"] == "below_range":
        return "< grid"
    mark = ">=" if t["status"] == "above_range" else ""
    return f"{mark}{t['ber']:.2g} [{t['ci_low']:.2g}, {t['ci_high']:.2g}]"


def fmt_gain(g: dict[str, Any]) -> str:
    """``3.2x [1.5, 6.0]``."""
    if g["ratio"] is None or not math.isfinite(g["ratio"]):
        return "n/a"
    lo = "n/a" if g["ci_low"] is None else f"{g['ci_low']:.2g}"
    hi = "n/a" if g["ci_high"] is None else f"{g['ci_high']:.2g}"
    return f"{g['ratio']:.2g}x [{lo}, {hi}]"


def main() -> None:  # noqa: C901 - a results script: one linear story
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: lenet, int8 uniform, 8 seeds, 2 per decade, "
                                                             "recipes eden and mixed, no mismatch or fine")
    parser.add_argument("--networks", default="lenet,vgg-small", help="comma-separated registry names")
    parser.add_argument("--dataset", default="digits", help="dataset name (default digits)")
    parser.add_argument("--data-dir", default=None, help="directory of MNIST / CIFAR-10 files")
    parser.add_argument("--formats", default="int8,fp32+zero", help="formats[+mitigation], comma-separated")
    parser.add_argument("--models", default="uniform,wordline", help="error models, comma-separated")
    parser.add_argument("--recipes", default="eden,mixed,randbet", help="boosting recipes (control is always run)")
    parser.add_argument("--split-seeds", default="0", help="data split (and training) seeds, comma-separated")
    parser.add_argument("--seeds", type=int, default=20, help="error seeds per point (default 20)")
    parser.add_argument("--drops", default="1,2,5", help="accuracy drops in points (default 1,2,5)")
    parser.add_argument("--ber-min", type=float, default=1e-6, help="lowest BER (default 1e-6)")
    parser.add_argument("--ber-max", type=float, default=0.3, help="highest BER (default 0.3)")
    parser.add_argument("--per-decade", type=int, default=4, help="grid points per decade (default 4)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--max-epochs", type=int, default=60, help="clean training epochs at most (default 60)")
    parser.add_argument("--mismatch", action=argparse.BooleanOptionalAction, default=True,
                        help="mismatched retraining (EDEN Fig. 9), first network and split only")
    parser.add_argument("--fine", action=argparse.BooleanOptionalAction, default=True,
                        help="fine vs coarse on held-out seeds, first network and split only")
    parser.add_argument("--seed", type=int, default=0, help="seed of errors and retraining (default 0)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--out", default="out/benchmarks", help="output folder (default out/benchmarks)")
    parser.add_argument("--summary", nargs="+", metavar="JSON",
                        help="print markdown tables of earlier result files (boosting-<network>.json) and exit")
    args = parser.parse_args()
    if args.summary:
        print(summary_markdown(args.summary))
        return
    if args.quick:
        args.networks, args.formats, args.models = args.networks.split(",")[0], "int8", "uniform"
        args.recipes, args.seeds, args.per_decade, args.n_boot = "eden,mixed", min(args.seeds, 8), 2, 200
        args.mismatch = args.fine = False
        args.max_epochs = min(args.max_epochs, 30)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    drops = [float(d) for d in args.drops.split(",")]
    recipes = [r for r in args.recipes.split(",") if r]
    for r in recipes:
        get_recipe(r)  # unknown names fail before any work
    formats = [parse_format(f) for f in args.formats.split(",")]
    models = args.models.split(",")
    bers = default_bers(args.ber_min, args.ber_max, per_decade=args.per_decade)
    seeds = tuple(range(args.seeds))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; grid {len(bers)} BERs "
          f"{bers[0]:.0e}..{bers[-1]:.0e}, {len(seeds)} error seeds per point, bootstrap {args.n_boot}, "
          f"drops {drops} points; recipes {recipes}, each with its control", flush=True)

    for n_index, network in enumerate(args.networks.split(",")):
        t_net = time.perf_counter()
        size = DEFAULT_SIZES.get(network, 32)
        doc: dict[str, Any] = {"args": vars(args), "network": network, "image_size": size, "bers": bers,
                               "seeds": list(seeds), "splits": []}
        rows: list[dict[str, Any]] = []
        for s_index, split_seed in enumerate(int(s) for s in args.split_seeds.split(",")):
            work = out_dir / f"boosting-{network}-s{split_seed}"
            work.mkdir(exist_ok=True)
            t0 = time.perf_counter()
            base_path = train_clean(network, args.dataset, epochs=args.max_epochs, seed=split_seed,
                                    split_seed=split_seed, image_size=size, data_dir=args.data_dir,
                                    out=work / "baseline.pt", plot=False)
            nf = load_network(base_path)
            meta = nf.meta
            x, y = nf.load_split("test", root=args.data_dir).tensors
            train = nf.load_split("train", root=args.data_dir)
            scorer = Scorer(x, y, train, bers, seeds, args.seed, args.n_boot)
            split: dict[str, Any] = {"split_seed": split_seed, "train_s": time.perf_counter() - t0,
                                     "baseline": {k: meta.get(k) for k in ("clean_test_accuracy", "best_epoch",
                                                                          "stopped_epoch", "val_accuracy")},
                                     "configs": []}
            print(f"\n{network} on {args.dataset} {size}x{size}, split {split_seed}: {len(y)} test images; "
                  f"baseline clean {100 * float(meta.get('clean_test_accuracy', float('nan'))):.2f} % "
                  f"(best epoch {meta.get('best_epoch')}, {split['train_s']:.0f} s)", flush=True)
            stream = 0
            for fmt, mitigation in formats:
                ref = scorer.reference(nf.net, fmt, mitigation)
                stop = float(ref.mean()) - max(drops) / 100
                for model in models:
                    stream += 1
                    cfg: dict[str, Any] = {"fmt": fmt, "mitigation": mitigation, "model": model,
                                           "reference_pct": 100 * float(ref.mean()), "networks": {}}
                    base_c = scorer.curve(nf.net, model, fmt, mitigation, stop, stream)
                    curves = {"baseline": base_c}
                    cfg["networks"]["baseline"] = scorer.summary(base_c, ref, drops)
                    t1 = cfg["networks"]["baseline"]["tolerable"][f"{drops[0]:g}"]
                    base_ber = t1["ber"] if t1["ber"] > 0 else bers[0]
                    for r_name in recipes:
                        recipe = get_recipe(r_name)
                        target = recipe.target_ber(base_ber)
                        # the control: the same recipe and schedule, no errors
                        control = recipe.replace(name=f"control-{r_name}", errors_enabled=False)
                        for name, rcp in ((r_name, recipe), (control.name, control)):
                            spec = ErrorSpec(error_model(model, target), fmt=fmt, mitigation=mitigation,
                                             seed=_seed_of(args.seed, stream, 77))
                            t2 = time.perf_counter()
                            path = boost(base_path, spec, recipe=rcp, seed=args.seed, data_dir=args.data_dir,
                                         out=work / f"{label(fmt, mitigation)}-{model}-{name}.pt", plot=False,
                                         resume=False)
                            boost_s = time.perf_counter() - t2
                            net = load_network(path).net
                            c = scorer.curve(net, model, fmt, mitigation, stop, stream)
                            curves[name] = c
                            entry = scorer.summary(c, ref, drops)
                            own = scorer.reference(net, fmt, mitigation)
                            entry.update({"recipe": rcp.to_dict(), "target_ber": target, "boost_s": boost_s,
                                          "clean_pct": 100 * float(own.mean()),
                                          "clean_cost_pts": 100 * float(ref.mean() - own.mean())})
                            cfg["networks"][name] = entry
                    for name, c in curves.items():
                        if name == "baseline":
                            continue
                        e = cfg["networks"][name]
                        e["gain_over_baseline"] = {f"{d:g}": gain(c, base_c, bers, ref, d / 100, n_boot=args.n_boot,
                                                                  seed=args.seed) for d in drops}
                        if f"control-{name}" in curves:
                            e["gain_over_control"] = {f"{d:g}": gain(c, curves[f"control-{name}"], bers, ref,
                                                                     d / 100, n_boot=args.n_boot, seed=args.seed)
                                                      for d in drops}
                    for name, c in curves.items():
                        for b in range(len(bers)):
                            rows.append({"split_seed": split_seed, "fmt": label(fmt, mitigation), "model": model,
                                         "network": name, "ber": bers[b], "mean_pct": 100 * float(c[b].mean())})
                    split["configs"].append(cfg)
                    print_config(cfg, drops)
                    write(out_dir, network, doc | {"splits": doc["splits"] + [split]}, rows)

            if args.mismatch and n_index == 0 and s_index == 0:
                split["mismatch"] = mismatch(scorer, nf, base_path, work, recipes[0], drops, args)
            if args.fine and n_index == 0 and s_index == 0:
                split["fine"] = fine_vs_coarse(base_path, args, drops)
            doc["splits"].append(split)
            write(out_dir, network, doc, rows)
        print(f"{network}: {time.perf_counter() - t_net:.0f} s (evaluation {scorer.eval_s:.0f} s)", flush=True)


def summary_markdown(paths: list[str]) -> str:
    """Markdown tables of result files: per configuration the tolerable BERs of the first split with
    intervals, the gains at 1, 2 and 5 points, and the 2-point gains of every split (the docs' tables)."""
    out: list[str] = []
    for path in paths:
        with open(path) as fh:
            doc = json.load(fh)
        splits = doc["splits"]
        out.append(f"### {doc['network']} ({doc['image_size']}x{doc['image_size']}), split seeds "
                   f"{', '.join(str(s['split_seed']) for s in splits)}\n")
        first = splits[0]
        for cfg in first["configs"]:
            out.append(f"**{cfg['model']}, {label(cfg['fmt'], cfg['mitigation'])}** (reference "
                       f"{cfg['reference_pct']:.2f} %, split {first['split_seed']}; tolerable BER [95 % interval])\n")
            out.append("| network | @1 pt | @2 pt | @5 pt | gain/baseline @1 / @2 / @5 | gain/control @2 | clean cost |")
            out.append("|---|---|---|---|---|---|---|")
            for name, e in cfg["networks"].items():
                t = e["tolerable"]
                gb = e.get("gain_over_baseline")
                gains = " / ".join(fmt_gain(gb[d]) for d in ("1", "2", "5")) if gb else ""
                gc = fmt_gain(e["gain_over_control"]["2"]) if e.get("gain_over_control") else ""
                cost = f"{e['clean_cost_pts']:+.2f} pt" if "clean_cost_pts" in e else ""
                out.append(f"| {name} | {fmt_tol(t['1'])} | {fmt_tol(t['2'])} | {fmt_tol(t['5'])} | {gains} | {gc} | "
                           f"{cost} |")
            out.append("")
        if len(splits) > 1:
            out.append("2-point gain over the baseline / over the control, per split seed (point estimates):\n")
            names = [n for n in first["configs"][0]["networks"] if n != "baseline"]
            out.append("| configuration | " + " | ".join(names) + " |")
            out.append("|---|" + "---|" * len(names))
            for i, cfg in enumerate(first["configs"]):
                cells = []
                for n in names:
                    per = []
                    for sp in splits:
                        if i >= len(sp["configs"]):
                            continue
                        e = sp["configs"][i]["networks"][n]
                        g = e["gain_over_baseline"]["2"]["ratio"]
                        c = e.get("gain_over_control", {}).get("2", {}).get("ratio")
                        per.append(f"{g:.2g}" + (f"/{c:.2g}" if c is not None else ""))
                    cells.append(", ".join(per))
                out.append(f"| {cfg['model']}, {label(cfg['fmt'], cfg['mitigation'])} | " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)


def print_config(cfg: dict[str, Any], drops: list[float]) -> None:
    """The tolerable BERs, gains and clean costs of one configuration."""
    print(f"\n  {cfg['model']}, {label(cfg['fmt'], cfg['mitigation'])}: reference {cfg['reference_pct']:.2f} %")
    head = "".join(f"  {'tolerable @' + format(d, 'g') + ' pt':>28}" for d in drops)
    print(f"  {'network':<16}{head}  {'gain/base @2':>20}  {'gain/control @2':>20}  {'clean cost':>10}")
    for name, e in cfg["networks"].items():
        cells = "".join(f"  {fmt_tol(e['tolerable'][f'{d:g}']):>28}" for d in drops)
        g2 = e.get("gain_over_baseline", {}).get("2")
        c2 = e.get("gain_over_control", {}).get("2")
        cost = f"{e['clean_cost_pts']:+.2f} pt" if "clean_cost_pts" in e else ""
        print(f"  {name:<16}{cells}  {fmt_gain(g2) if g2 else '':>20}  {fmt_gain(c2) if c2 else '':>20}  {cost:>10}")
    sys.stdout.flush()


def mismatch(scorer: Scorer, nf: Any, base_path: Path, work: Path, recipe: str, drops: list[float],
             args: argparse.Namespace) -> list[dict[str, Any]]:
    """EDEN Fig. 9: retrained under one model, evaluated under another (and matched, beside it)."""
    cases = [("int8", None, "bitvalue01", "bitvalue10"), ("int8", None, "bitvalue10", "bitvalue01"),
             ("int8", None, "uniform", "wordline"), ("int8", None, "wordline", "uniform"),
             ("fp32", None, "uniform", "uniform")]
    out = []
    trained: dict[tuple[str, Optional[str], str], Path] = {}
    print("\n  mismatched retraining (retrained under A, evaluated under B; 2-point drop):")
    for k, (fmt, mitigation, train_model, eval_model) in enumerate(cases):
        ref = scorer.reference(nf.net, fmt, mitigation)
        stop = float(ref.mean()) - max(drops) / 100
        stream = 1000 + k
        base_c = scorer.curve(nf.net, eval_model, fmt, mitigation, stop, stream)
        t = tolerable_ber(base_c, scorer.bers, ref, 0.01, n_boot=scorer.n_boot, seed=args.seed)
        target = get_recipe(recipe).target_ber(t.ber if t.ber > 0 else scorer.bers[0])
        entry: dict[str, Any] = {"fmt": fmt, "mitigation": mitigation, "train_model": train_model,
                                 "eval_model": eval_model, "target_ber": target}
        for tag, m in (("mismatched", train_model), ("matched", eval_model)):
            key = (label(fmt, mitigation), m, f"{target:.3g}")
            if key not in trained:
                spec = ErrorSpec(error_model(m, target), fmt=fmt, mitigation=mitigation, seed=_seed_of(args.seed, k))
                trained[key] = boost(base_path, spec, recipe=get_recipe(recipe), seed=args.seed, plot=False,
                                     out=work / f"mismatch-{label(fmt, mitigation)}-{m}-{target:.3g}.pt",
                                     data_dir=args.data_dir, resume=False)
            net = load_network(trained[key]).net
            c = scorer.curve(net, eval_model, fmt, mitigation, stop, stream)
            own = scorer.reference(net, fmt, mitigation)
            entry[tag] = {**scorer.summary(c, ref, drops), "clean_pct": 100 * float(own.mean()),
                          "gain_over_baseline": {f"{d:g}": gain(c, base_c, scorer.bers, ref, d / 100,
                                                                n_boot=scorer.n_boot, seed=args.seed) for d in drops}}
        entry["baseline"] = scorer.summary(base_c, ref, drops)
        out.append(entry)
        print(f"  {label(fmt, mitigation):<8} {train_model:>10} -> {eval_model:<10}  baseline "
              f"{fmt_tol(entry['baseline']['tolerable']['2']):>26}  matched "
              f"{fmt_tol(entry['matched']['tolerable']['2']):>26}  mismatched "
              f"{fmt_tol(entry['mismatched']['tolerable']['2']):>26}  (clean {entry['mismatched']['clean_pct']:.1f} %)",
              flush=True)
    return out


def verify_assignment(net: torch.nn.Module, loader: Any, base: ErrorSpec, uniform: float,
                      overrides: dict[tuple[str, str], float], goal: float, cal: Any, seeds: tuple[int, ...]
                      ) -> dict[str, Any]:
    """Accuracy of a (uniform BER, per-key overrides) assignment on unseen seeds, and whether it meets ``goal``."""
    from boosting.inference import evaluate

    spec = ErrorSpec(base.model.with_ber(uniform), overrides=overrides, fmt=base.fmt, mitigation=base.mitigation,
                     seed=base.seed + 9000)
    r = evaluate(net, loader, spec, seeds=seeds, calibration=cal)
    return {"mean": r.mean, "ci_low": r.ci_low, "ci_high": r.ci_high, "passes": r.mean >= goal,
            "per_seed_pass_rate": float(np.mean([a >= goal for a in r.per_seed]))}


def geomean_over(bers: dict[tuple[str, str], float], start: float) -> float:
    """Geometric mean of ``bers / start`` (1.0 for none)."""
    return math.exp(float(np.mean([math.log(v / start) for v in bers.values()]))) if bers else 1.0


def fine_vs_coarse(base_path: Path, args: argparse.Namespace, drops: list[float]) -> list[dict[str, Any]]:
    """Coarse and fine characterization: the search's results and the held-out ones, on 30 unseen seeds."""
    from boosting.characterization import SerialExecutor, characterize_network

    out = []
    nf = load_network(base_path)
    x, y = nf.load_split("test", root=args.data_dir).tensors
    loader = DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=256)
    verify_seeds = tuple(range(5000, 5030))
    print("\n  coarse vs fine characterization at a 2-point drop (search 5 seeds, statistic mean; held-out 20; "
          "verified on 30 more):")
    for fmt, mitigation in (("int8", None), ("fp32", "zero")):
        spec = ErrorSpec(get_model("uniform", ber=1e-6), fmt=fmt, mitigation=mitigation, seed=args.seed + 3000)
        doc = characterize_network(nf, spec, search="both", max_drop=0.02, seeds=tuple(range(5)),
                                   statistic="mean", executor=SerialExecutor(), data_dir=args.data_dir)
        cal = calibrate(nf.net, DataLoader(Subset(nf.load_split("train", root=args.data_dir), range(512)),
                                           batch_size=256), fmt)
        goal = doc["coarse"]["goal"]
        entry: dict[str, Any] = {"fmt": fmt, "mitigation": mitigation, "goal": goal}
        c = doc["coarse"]
        search_ber = c.get("search_ber") or c["ber"]
        entry["coarse_search"] = {"ber": search_ber,
                                  **verify_assignment(nf.net, loader, spec, search_ber, {}, goal, cal, verify_seeds)}
        entry["coarse_final"] = ({"ber": c["ber"], **verify_assignment(nf.net, loader, spec, c["ber"], {}, goal, cal,
                                                                      verify_seeds)} if c["ber"] > 0 else None)
        f = doc.get("fine")
        if f:
            search = {(r[0], r[1]): float(r[2]) for r in (f.get("search_bers") or f["bers"])}
            final = {(r[0], r[1]): float(r[2]) for r in f["bers"]}
            hold = f.get("holdout") or {}
            uniform = float(hold.get("uniform_ber") or f["start_ber"])
            entry["fine_search"] = {"geomean_over_coarse": geomean_over(search, f["start_ber"]),
                                    **verify_assignment(nf.net, loader, spec, f["start_ber"], search, goal, cal,
                                                        verify_seeds)}
            entry["fine_final"] = {"geomean_over_coarse": geomean_over(final, f["start_ber"]), "uniform_ber": uniform,
                                   **verify_assignment(nf.net, loader, spec, uniform, final, goal, cal, verify_seeds)}
        entry["document"] = doc
        out.append(entry)
        cs, cf = entry["coarse_search"], entry["coarse_final"]
        print(f"  {label(fmt, mitigation):<9} goal {100 * goal:.2f} %: coarse search {cs['ber']:.2g} -> unseen "
              f"{100 * cs['mean']:.2f} % ({'pass' if cs['passes'] else 'FAIL'}); after held-out "
              f"{cf['ber'] if cf else 0:.2g} -> {100 * cf['mean'] if cf else float('nan'):.2f} %", flush=True)
        if f:
            fs, ff = entry["fine_search"], entry["fine_final"]
            print(f"  {'':<9} fine search geomean {fs['geomean_over_coarse']:.2f}x coarse -> unseen "
                  f"{100 * fs['mean']:.2f} % ({'pass' if fs['passes'] else 'FAIL'}); after held-out "
                  f"{ff['geomean_over_coarse']:.2f}x -> {100 * ff['mean']:.2f} % "
                  f"({'pass' if ff['passes'] else 'FAIL'})", flush=True)
    return out


def write(out_dir: Path, network: str, doc: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """``boosting-<network>.json`` and ``.csv`` (rewritten after every configuration)."""
    with open(out_dir / f"boosting-{network}.json", "w") as fh:
        json.dump(doc, fh, indent=1, default=str)
    with open(out_dir / f"boosting-{network}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["split_seed", "fmt", "model", "network", "ber", "mean_pct"])
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()

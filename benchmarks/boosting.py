"""Boosting results on digits LeNet: accuracy vs BER, tolerable BERs, and coarse vs fine characterization.

What it measures (EDEN, MICRO 2019, Sec. 4 / 6):

1. **Accuracy vs BER.** A LeNet trained clean on scikit-learn's digits (28x28, 1437 training
   and 360 test images) is evaluated on the test split under bit errors in its weights and
   input feature maps (:class:`boosting.inference.ErrorInjector`), at BERs from ``--ber-min``
   to ``--ber-max`` (a point per half decade), for every combination of

   - error model: ``uniform`` and ``wordline`` (weak wordline groups: 1 % of the 64-bit groups
     flip 100x more often; :meth:`~errormodels.models.ErrorModel.with_ber` saturates them at
     high BERs);
   - numeric format: ``fp32`` and ``int8`` (calibrated IFM scales);
   - mitigation: none or ``zero`` (out-of-range values and NaN/Inf read as 0);
   - retraining: none, or a copy of the network retrained at the point's BER
     (:func:`boosting.retrain.retrain`, the same model/format/mitigation, a log curriculum from
     BER/100, ``--epochs`` epochs; re-calibrated on the training data afterwards), evaluated at
     that BER. Points below ``--retrain-min`` (default 1e-5, where the network is not yet hurt)
     reuse the original network, to keep the run short; the JSON marks them.

   Each point is the mean top-1 accuracy over ``--seeds`` error seeds with a 95 % Student-t
   confidence interval (:func:`boosting.inference.evaluate`).

2. **Tolerable BER** of each configuration: the highest grid BER at which, and at every grid
   BER below which, the mean accuracy stays within 1 point (``--max-drop``) of the clean
   accuracy of the original network in the same format; and the ratios boosted / baseline.

3. **Coarse vs fine characterization** (:func:`boosting.characterize.coarse_characterize`, then
   :func:`~boosting.characterize.fine_characterize` from the coarse BER, uniform model, decision
   statistic "mean", same goal): the per-layer, per-kind (weight / IFM) BERs against the coarse one.

Outputs, under ``--out`` (default ``out/benchmarks/``): ``boosting.json`` (everything),
``boosting_curves.csv`` (one row per point), ``boosting.png`` (accuracy vs BER, log x, CI bands),
and the printed tables and summary. Every random choice is seeded (``--seed``).

    python benchmarks/boosting.py [--quick] [--seeds 5] [--epochs 3] [--out out/benchmarks]
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from boosting.characterize import NetworkWorkload, SerialExecutor, coarse_characterize, fine_characterize  # noqa: E402
from boosting.data import load_dataset  # noqa: E402
from boosting.inference import AccuracyResult, ErrorSpec, calibrate, evaluate  # noqa: E402
from boosting.networks import get_network  # noqa: E402
from boosting.retrain import Curriculum, retrain  # noqa: E402
from errormodels.models import ErrorModel, get_model  # noqa: E402

FORMATS = ("fp32", "int8")
MITIGATIONS: tuple[Optional[str], ...] = (None, "zero")
MODELS = ("uniform", "wordline")


@dataclass(frozen=True)
class Config:
    """One curve: error model, format, mitigation, and whether the network is retrained per point."""

    model: str
    fmt: str
    mitigation: Optional[str]
    retrained: bool

    @property
    def label(self) -> str:
        """Short name, e.g. ``uniform/int8+zero+RT``."""
        return (f"{self.model}/{self.fmt}" + ("+zero" if self.mitigation else "")
                + ("+RT" if self.retrained else ""))


def error_model(name: str, ber: float) -> ErrorModel:
    """The named model at ``ber`` (wordline: 1 % weak 64-bit groups, ratio 100, saturated at high BERs)."""
    if name == "wordline":
        return get_model("wordline", ber=1e-6, weak_fraction=0.01, ratio=100.0).with_ber(ber)
    return get_model(name, ber=ber)


def half_decades(lo: float, hi: float) -> list[float]:
    """BERs ``10**(k/2)`` from ``lo`` to ``hi`` (both rounded to half decades)."""
    a, b = round(2 * math.log10(lo)), round(2 * math.log10(hi))
    return [float(f"{10 ** (k / 2):.3g}") for k in range(a, b + 1)]


def train_clean(train: Any, epochs: int, seed: int) -> torch.nn.Module:
    """LeNet trained clean with Adam (lr 3e-3, batches of 32, seeded order), as ``tests/conftest.py`` does."""
    net = get_network("lenet", image_size=28, seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    x, y = train.tensors
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 32):
            idx = order[i: i + 32]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def result_dict(r: AccuracyResult) -> dict[str, Any]:
    """An :class:`AccuracyResult` as JSON (accuracies in %)."""
    return {"mean": 100 * r.mean, "ci_low": 100 * r.ci_low, "ci_high": 100 * r.ci_high,
            "per_seed": [100 * a for a in r.per_seed], "n_samples": r.n_samples}


def tolerable(points: list[dict[str, Any]], goal: float) -> float:
    """Highest BER such that it and every lower BER of ``points`` reach ``goal`` (mean, %); 0.0 if none."""
    best = 0.0
    for p in sorted(points, key=lambda p: p["ber"]):
        if p["mean"] is None or p["mean"] < goal:
            break
        best = p["ber"]
    return best


def fmt_ber(b: float) -> str:
    """A BER for tables (``<grid`` for 0)."""
    return f"{b:.0e}" if b > 0 else "<grid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a point per decade, 3 seeds, 2 retraining epochs, "
                                                             "int8 fine characterization only")
    parser.add_argument("--ber-min", type=float, default=1e-7, help="lowest BER (default 1e-7)")
    parser.add_argument("--ber-max", type=float, default=1e-1, help="highest BER (default 1e-1)")
    parser.add_argument("--seeds", type=int, default=5, help="error seeds per point (default 5)")
    parser.add_argument("--epochs", type=int, default=3, help="retraining epochs per point (default 3)")
    parser.add_argument("--retrain-min", type=float, default=1e-5,
                        help="retrain only at BERs >= this (default 1e-5; below, the original network)")
    parser.add_argument("--train-epochs", type=int, default=4, help="clean training epochs (default 4)")
    parser.add_argument("--max-drop", type=float, default=1.0, help="tolerated accuracy drop in points (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the network, data order and errors (default 0)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--out", default="out/benchmarks", help="output folder (default out/benchmarks)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds, args.epochs = min(args.seeds, 3), min(args.epochs, 2)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    bers = half_decades(args.ber_min, args.ber_max)
    if args.quick:
        bers = [b for b in bers if abs(math.log10(b) - round(math.log10(b))) < 1e-9]
    seeds = tuple(range(args.seeds))
    train = load_dataset("digits", split="train", image_size=28)
    test = load_dataset("digits", split="test", image_size=28)
    x_test, y_test = test.tensors
    test_loader = DataLoader(test, batch_size=180, shuffle=False)
    train_loader = DataLoader(train, batch_size=512, shuffle=False)
    net = train_clean(train, args.train_epochs, args.seed)
    clean = evaluate(net, test_loader).mean * 100
    cals = {f: calibrate(net, train_loader, f) for f in FORMATS}
    # Clean reference per format: the network read through the format with no errors.
    ref = {f: evaluate(net, test_loader, ErrorSpec(get_model("uniform", ber=0.0), fmt=f, seed=args.seed),
                       seeds=(0,), calibration=cals[f]).mean * 100 for f in FORMATS}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; LeNet on digits 28x28 "
          f"({len(train)} train / {len(test)} test), clean accuracy {clean:.2f} % "
          f"(fp32 {ref['fp32']:.2f} %, int8 {ref['int8']:.2f} %)")
    print(f"BERs: {', '.join(f'{b:.0e}' for b in bers)}; {len(seeds)} error seeds per point (95 % t-CI); "
          f"retraining: {args.epochs} epochs, log curriculum from BER/100 over {min(2, args.epochs - 1)} epochs")

    configs = [Config(m, f, mit, rt) for m in MODELS for f in FORMATS for mit in MITIGATIONS for rt in (False, True)]
    curves: dict[str, list[dict[str, Any]]] = {}
    retrain_s = eval_s = 0.0
    for cfg in configs:
        pts = []
        for i, ber in enumerate(bers):
            spec = ErrorSpec(error_model(cfg.model, ber), fmt=cfg.fmt, mitigation=cfg.mitigation,
                             seed=args.seed + 1000)
            model_net, cal, losses = net, cals[cfg.fmt], None
            if cfg.retrained and ber >= args.retrain_min * (1 - 1e-9):
                t0 = time.perf_counter()
                model_net = copy.deepcopy(net)
                rspec = ErrorSpec(error_model(cfg.model, ber), fmt=cfg.fmt, mitigation=cfg.mitigation,
                                  seed=args.seed + 2000 + i)
                res = retrain(model_net, train, rspec, epochs=args.epochs, lr=1e-3, seed=args.seed,
                              curriculum=Curriculum(ber, warmup_epochs=min(2, args.epochs - 1)),
                              calibration=cals[cfg.fmt])
                model_net.eval()
                cal = calibrate(model_net, train_loader, cfg.fmt)
                losses = [None if math.isnan(v) else v for v in res.losses]
                retrain_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            r = evaluate(model_net, test_loader, spec, seeds=seeds, calibration=cal)
            eval_s += time.perf_counter() - t0
            pts.append({"ber": ber, **result_dict(r), "retrained_here": losses is not None,
                        "retrain_losses": losses,
                        "clean_after_retrain": (evaluate(model_net, test_loader).mean * 100
                                                if losses is not None else None)})
        curves[cfg.label] = pts
        print(f"  {cfg.label:<26} done ({time.perf_counter() - t_start:6.0f} s)", flush=True)

    # ------------------------------------------------------------------ tables
    print(f"\nmean accuracy (%) vs BER [95 % CI half-width]; clean {clean:.2f} %")
    for model in MODELS:
        labels = [c.label for c in configs if c.model == model]
        print(f"\n{model}:")
        print(f"{'BER':>7}  " + "  ".join(f"{lab.split('/', 1)[1]:>16}" for lab in labels))
        for j, ber in enumerate(bers):
            cells = []
            for lab in labels:
                p = curves[lab][j]
                half = (p["ci_high"] - p["ci_low"]) / 2
                cells.append(f"{p['mean']:7.2f} [{half:5.2f}]".rjust(16))
            print(f"{ber:7.0e}  " + "  ".join(cells))

    goal_of = {f: ref[f] - args.max_drop for f in FORMATS}
    tol = {c.label: tolerable(curves[c.label], goal_of[c.fmt]) for c in configs}
    print(f"\ntolerable BER (highest grid BER with it and all lower ones >= clean - {args.max_drop:g} point; "
          f"grid step 10^0.5 = 3.16x):")
    print(f"{'model':>9}  {'format':>6}  {'plain':>7}  {'+zero':>7}  {'+RT':>7}  {'+zero+RT':>8}  "
          f"{'RT gain':>8}  {'zero gain':>9}  {'both gain':>9}")
    ratios: dict[str, dict[str, Optional[float]]] = {}

    def ratio(a: float, b: float) -> Optional[float]:
        return a / b if a > 0 and b > 0 else None

    def gain(boosted: float, base: float) -> str:
        """boosted / base, or a bound when base is below the grid."""
        if boosted > 0 and base > 0:
            return f"{boosted / base:.3g}x"
        if boosted > 0:
            return f">{boosted / bers[0]:.0e}x"
        return "n/a"

    for model in MODELS:
        for f in FORMATS:
            t = {k: tol[Config(model, f, mit, rt).label]
                 for k, mit, rt in (("plain", None, False), ("zero", "zero", False), ("rt", None, True),
                                    ("zero_rt", "zero", True))}
            r = {"retrain": ratio(t["rt"], t["plain"]), "retrain_with_zero": ratio(t["zero_rt"], t["zero"]),
                 "zero": ratio(t["zero"], t["plain"]), "both": ratio(t["zero_rt"], t["plain"])}
            ratios[f"{model}/{f}"] = {**r, **{f"tolerable_{k}": v for k, v in t.items()}}
            print(f"{model:>9}  {f:>6}  {fmt_ber(t['plain']):>7}  {fmt_ber(t['zero']):>7}  {fmt_ber(t['rt']):>7}  "
                  f"{fmt_ber(t['zero_rt']):>8}  {gain(t['rt'], t['plain']):>8}  {gain(t['zero'], t['plain']):>9}  "
                  f"{gain(t['zero_rt'], t['plain']):>9}")
    print(f"(RT gain: +RT / plain; zero gain: +zero / plain; both: +zero+RT / plain; '<grid': below "
          f"{bers[0]:.0e}, so a gain is only bounded; n/a: neither passes)")

    # ---------------------------------------------------- coarse vs fine characterization
    fine_cfgs = [("int8", None), ("fp32", "zero")] if not args.quick else [("int8", None)]
    fine_out = []
    for f, mit in fine_cfgs:
        t0 = time.perf_counter()
        workload = NetworkWorkload(net, x_test, y_test, batch_size=180, calibration=cals[f])
        base = ErrorSpec(get_model("uniform", ber=1e-6), fmt=f, mitigation=mit, seed=args.seed + 3000)
        coarse = coarse_characterize(workload, base, max_drop=args.max_drop / 100, ber_min=1e-8, ber_max=0.5,
                                     tol=0.1, seeds=seeds, statistic="mean", baseline=ref[f] / 100,
                                     executor=SerialExecutor())
        entry: dict[str, Any] = {"fmt": f, "mitigation": mit, "coarse": coarse.to_dict()}
        label = f"uniform/{f}" + ("+zero" if mit else "")
        print(f"\ncharacterization of {label} (goal: mean >= {coarse.goal * 100:.2f} %, {len(seeds)} seeds, "
              f"test split): coarse BER {coarse.ber:.3g} ({len(coarse.probes) - 1} probes)")
        if coarse.found and coarse.ber > 0:
            fine = fine_characterize(workload, base, coarse.ber, max_drop=args.max_drop / 100, factor=2.0,
                                     max_steps=12, ber_max=0.5, seeds=seeds, statistic="mean",
                                     baseline=ref[f] / 100, executor=SerialExecutor())
            entry["fine"] = fine.to_dict()
            verify = evaluate(net, test_loader, fine.spec(base), seeds=tuple(range(100, 100 + len(seeds))),
                              calibration=cals[f])
            entry["fine_verify_other_seeds"] = result_dict(verify)
            print(f"{'layer':>14}  {'kind':>6}  {'fine BER':>9}  {'/ coarse':>8}  {'sensitivity (pts)':>17}")
            for (layer, kind), b in fine.bers.items():
                print(f"{layer:>14}  {kind:>6}  {b:9.3g}  {b / coarse.ber:7.0f}x  "
                      f"{fine.sensitivity[(layer, kind)] * 100:17.2f}")
            above = sum(b > coarse.ber for b in fine.bers.values())
            gm = math.exp(sum(math.log(b / coarse.ber) for b in fine.bers.values()) / len(fine.bers))
            entry["summary"] = {"keys_above_coarse": above, "keys": len(fine.bers), "geomean_ratio": gm}
            print(f"{above} of {len(fine.bers)} (layer, kind) BERs above the coarse one, geometric mean "
                  f"{gm:.1f}x; fine spec on 5 unseen seeds: {verify.mean * 100:.2f} % "
                  f"[{verify.ci_low * 100:.2f}, {verify.ci_high * 100:.2f}] ({time.perf_counter() - t0:.0f} s)")
        fine_out.append(entry)

    # ---------------------------------------------------------------- outputs
    total_s = time.perf_counter() - t_start
    out = {"args": vars(args), "clean_accuracy": clean, "clean_by_format": ref, "bers": bers, "seeds": list(seeds),
           "curves": curves, "tolerable_ber": tol, "ratios": ratios, "characterization": fine_out,
           "timing_s": {"total": total_s, "retrain": retrain_s, "evaluate": eval_s}}
    json_path = os.path.join(args.out, "boosting.json")
    with open(json_path, "w") as fh:
        json.dump(out, fh, indent=1, default=str)
    csv_path = os.path.join(args.out, "boosting_curves.csv")
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "format", "mitigation", "retrained", "ber", "mean_pct", "ci_low_pct", "ci_high_pct",
                    "clean_after_retrain_pct"])
        for c in configs:
            for p in curves[c.label]:
                w.writerow([c.model, c.fmt, c.mitigation or "none", int(c.retrained), p["ber"], f"{p['mean']:.4f}",
                            f"{p['ci_low']:.4f}", f"{p['ci_high']:.4f}",
                            "" if p["clean_after_retrain"] is None else f"{p['clean_after_retrain']:.4f}"])
    png_path = plot(curves, configs, ref, args.max_drop, os.path.join(args.out, "boosting.png"))

    # ---------------------------------------------------------------- summary
    print("\nsummary vs the seed paper (EDEN, MICRO 2019):")
    u = ratios["uniform/fp32"], ratios["uniform/int8"]
    for name, r in zip(("fp32", "int8"), u):
        print(f"  retraining ({args.epochs} epochs) raised the tolerable uniform BER of {name}: "
              f"{fmt_ber(r['tolerable_plain'])} -> {fmt_ber(r['tolerable_rt'])} "
              f"({gain(r['tolerable_rt'], r['tolerable_plain'])}; with zero mitigation "
              f"{fmt_ber(r['tolerable_zero'])} -> {fmt_ber(r['tolerable_zero_rt'])}, "
              f"{gain(r['tolerable_zero_rt'], r['tolerable_zero'])}); slides claim 5-10x")
    r = ratios["uniform/fp32"]
    print(f"  zero mitigation moved fp32's tolerable uniform BER {fmt_ber(r['tolerable_plain'])} -> "
          f"{fmt_ber(r['tolerable_zero'])} ({gain(r['tolerable_zero'], r['tolerable_plain'])}); "
          f"the paper: ~1e-7 -> ~1e-3")
    for e in fine_out:
        if "summary" in e:
            s = e["summary"]
            print(f"  fine-grained ({e['fmt']}{'+' + e['mitigation'] if e['mitigation'] else ''}): "
                  f"{s['keys_above_coarse']}/{s['keys']} per-layer BERs above the coarse {e['coarse']['ber']:.3g} "
                  f"(geomean {s['geomean_ratio']:.1f}x); the paper: per-layer BERs above the coarse one")
    print(f"  wrote {json_path}, {csv_path}, {png_path}; {total_s:.0f} s "
          f"(retraining {retrain_s:.0f} s, evaluation {eval_s:.0f} s)")


def plot(curves: dict[str, list[dict[str, Any]]], configs: list[Config], ref: dict[str, float], max_drop: float,
         path: str) -> str:
    """Accuracy vs BER, one panel per (model, format), four curves each with 95 % CI bands; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(MODELS), len(FORMATS), figsize=(11, 8), sharex=True, sharey=True)
    styles = {(None, False): ("C0", "baseline"), ("zero", False): ("C1", "zero mitigation"),
              (None, True): ("C2", "retrained"), ("zero", True): ("C3", "zero + retrained")}
    for i, model in enumerate(MODELS):
        for j, f in enumerate(FORMATS):
            ax = axes[i][j]
            for c in configs:
                if c.model != model or c.fmt != f:
                    continue
                color, name = styles[(c.mitigation, c.retrained)]
                pts = curves[c.label]
                b = [p["ber"] for p in pts]
                ax.plot(b, [p["mean"] for p in pts], "o-", color=color, ms=3, label=name)
                ax.fill_between(b, [p["ci_low"] for p in pts], [p["ci_high"] for p in pts], color=color, alpha=0.2)
            ax.axhline(ref[f] - max_drop, color="grey", ls="--", lw=0.8, label=f"clean - {max_drop:g} pt")
            ax.set_xscale("log")
            ax.set_ylim(0, 100)
            ax.set_title(f"{model}, {f}")
            ax.grid(True, which="both", alpha=0.3)
            if i == len(MODELS) - 1:
                ax.set_xlabel("bit error rate")
            if j == 0:
                ax.set_ylabel("top-1 accuracy (%)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle("LeNet on digits: accuracy vs BER (mean over error seeds, 95 % CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()

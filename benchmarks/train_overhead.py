"""Cost of error injection during retraining: one LeNet epoch on digits with vs without the injector.

Times one training epoch of LeNet on scikit-learn's digits (1437 images, 28x28, batches of
32, Adam) run as :func:`boosting.retrain.retrain` runs it (re-seed the injector per batch,
forward, cross-entropy, finite checks, backward, optimizer step), with an
:class:`~boosting.inference.ErrorInjector` corrupting every conv/linear weight and input
feature map (uniform model, BER ``--ber``, ``int8`` and ``fp32``, calibrated ranges; also
both with ``zero`` mitigation, since unmitigated fp32 at 1e-3 gives a non-finite loss on
every batch, which retrain() skips without backward or step) and without it (the same
loop, no injector). Clean and injected epochs are interleaved, in a rotating order, so a
noisy machine slows them alike; medians of ``--repeats`` epochs are reported with the
ratio injected / clean, both as a ratio of medians and as the median of per-round ratios
(target: at most 1.2x).

A second, instrumented epoch per configuration splits the time into parts: the injector's
quantize, ``inject_`` and dequantize calls (``boosting.inference._store``, ``inject_`` and
``_load``, timed by wrapping them), the rest of the forward pass, backward, the optimizer
step and the remainder (data, checks). It is timed apart from the ratio (the timers add
their own overhead).

    python benchmarks/train_overhead.py [--repeats 9] [--ber 1e-3] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import boosting.inference as inference  # noqa: E402
from boosting.data import load_dataset  # noqa: E402
from boosting.inference import Calibration, ErrorInjector, ErrorSpec, calibrate  # noqa: E402
from boosting.networks import get_network  # noqa: E402
from errormodels.models import get_model  # noqa: E402

BATCH = 32


def pretrain(x: torch.Tensor, y: torch.Tensor, epochs: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """State of a LeNet trained clean (Adam, lr 3e-3, batches of 32, seeded order), as ``tests/conftest.py`` does."""
    net = get_network("lenet", image_size=28, seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), BATCH):
            idx = order[i: i + BATCH]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


class Timers:
    """Named wall-clock accumulators."""

    def __init__(self) -> None:
        self.s: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its wall time added to ``name``."""
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.s[name] += time.perf_counter() - t0
        return timed


def run_epoch(net: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], spec: Optional[ErrorSpec],
              calibration: Optional[Calibration], timers: Optional[Timers] = None) -> float:
    """One epoch of :func:`~boosting.retrain.retrain`'s loop (with an injector if ``spec``); seconds taken.

    The optimizer is built before the clock starts; ``timers`` (optional) receives the
    forward, backward and optimizer-step times.
    """
    params = [p for _, p in sorted(net.named_parameters()) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    net.train()
    tick = time.perf_counter

    def body(injector: Optional[ErrorInjector]) -> None:
        for step, (x, y) in enumerate(batches):
            if injector is not None:
                injector.reseed(step)
            opt.zero_grad(set_to_none=True)
            t0 = tick()
            loss = F.cross_entropy(net(x), y)
            t1 = tick()
            if timers is not None:
                timers.s["forward"] += t1 - t0
            if not torch.isfinite(loss):
                continue
            loss.backward()
            t2 = tick()
            if not all(torch.isfinite(p.grad).all() for p in params if p.grad is not None):
                opt.zero_grad(set_to_none=True)
                continue
            t3 = tick()
            opt.step()
            t4 = tick()
            float(loss.detach())
            if timers is not None:
                timers.s["backward"] += t2 - t1
                timers.s["optimizer step"] += t4 - t3

    start = tick()
    if spec is None:
        body(None)
    else:
        with ErrorInjector(net, spec, calibration) as injector:
            body(injector)
    return tick() - start


def epoch_batches(x: torch.Tensor, y: torch.Tensor, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The epoch's batches in a seeded permutation (as retrain() orders a dataset)."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return [(x[order[i: i + BATCH]], y[order[i: i + BATCH]]) for i in range(0, len(y), BATCH)]


def breakdown(net: torch.nn.Module, batches: list, spec: ErrorSpec, calibration: Calibration) -> tuple[float, dict]:
    """Seconds of an instrumented injected epoch and its parts (quantize, inject_, dequantize wrapped)."""
    timers = Timers()
    saved = {n: getattr(inference, n) for n in ("_store", "inject_", "_load")}
    try:
        for n, fn in saved.items():
            setattr(inference, n, timers.wrap(n, fn))
        total = run_epoch(net, batches, spec, calibration, timers)
    finally:
        for n, fn in saved.items():
            setattr(inference, n, fn)
    return total, dict(timers.s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed epochs per configuration (default 9)")
    parser.add_argument("--ber", type=float, default=1e-3, help="uniform bit error rate (default 1e-3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the network, data order and errors")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train = load_dataset("digits", split="train", image_size=28)
    x, y = train.tensors
    state = pretrain(x, y, seed=args.seed)
    net = get_network("lenet", image_size=28, seed=args.seed)
    net.load_state_dict(state)
    batches = epoch_batches(x, y, args.seed)
    fmts = ("int8", "fp32")
    cals = {f: calibrate(net, [(x, y)], f) for f in fmts}
    # (label, format, mitigation): plain int8 and fp32 as asked; fp32 at 1e-3 without mitigation
    # mostly gives non-finite losses (skipped steps, no backward), so "zero" variants run a full step.
    variants = [("int8", "int8", None), ("fp32", "fp32", None), ("int8+zero", "int8", "zero"),
                ("fp32+zero", "fp32", "zero")]
    specs: dict[str, Optional[ErrorSpec]] = {"clean": None}
    fmt_of: dict[str, Optional[str]] = {"clean": None}
    for label, fmt, mit in variants:
        specs[label] = ErrorSpec(get_model("uniform", ber=args.ber), fmt=fmt, mitigation=mit, seed=args.seed)
        fmt_of[label] = fmt
    n_params = sum(p.numel() for p in net.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; LeNet ({n_params:,} parameters) on digits: "
          f"{len(y)} images 28x28, {len(batches)} batches of {BATCH}, Adam; uniform BER {args.ber:g}, "
          f"weights + IFMs of {len(inference.injectable_layers(net))} layers; median of {args.repeats} epochs")

    labels = list(specs)

    def epoch(label: str, timers: Optional[Timers] = None) -> float:
        net.load_state_dict(state)
        fmt = fmt_of[label]
        return run_epoch(net, batches, specs[label], cals[fmt] if fmt else None, timers)

    times: dict[str, list[float]] = {c: [] for c in labels}
    for label in labels:  # warm-up
        epoch(label)
    for r in range(args.repeats):
        for i in range(len(labels)):
            label = labels[(i + r) % len(labels)]  # rotating order
            times[label].append(epoch(label))
    flips: dict[str, float] = {}
    skipped: dict[str, int] = {}
    for label in labels[1:]:
        net.load_state_dict(state)
        spec, cal = specs[label], cals[fmt_of[label]]
        with ErrorInjector(net, spec, cal) as inj:
            net.train()
            n_bad = 0
            for step, (xb, yb) in enumerate(batches):
                inj.reseed(step)
                with torch.no_grad():
                    n_bad += int(not torch.isfinite(F.cross_entropy(net(xb), yb)))
            flips[label] = inj.total_stats.bits_flipped / len(batches)
            skipped[label] = n_bad

    clean = statistics.median(times["clean"])
    print(f"\n{'config':>10}  {'epoch ms':>9}  {'min ms':>8}  {'max ms':>8}  {'/ clean':>8}  {'paired':>7}  "
          f"{'flips/batch':>11}  {'non-finite':>10}")
    for label in labels:
        med = statistics.median(times[label])
        paired = statistics.median(t / c for t, c in zip(times[label], times["clean"]))
        print(f"{label:>10}  {med * 1e3:9.1f}  {min(times[label]) * 1e3:8.1f}  {max(times[label]) * 1e3:8.1f}  "
              f"{med / clean:7.2f}x  {paired:6.2f}x  {flips.get(label, 0):11.1f}  "
              f"{skipped.get(label, 0):>4d}/{len(batches)}")
    print("'/ clean': ratio of medians; 'paired': median of each epoch / the clean epoch of its round "
          "(target <= 1.2x); 'non-finite': batches whose loss is NaN/Inf (retrain() skips their backward/step)")

    print("\nbreakdown of one instrumented epoch (ms; the injector's parts are inside 'forward'):")
    parts = ("quantize", "inject_", "dequantize", "forward", "backward", "optimizer step")
    keys = ("_store", "inject_", "_load", "forward", "backward", "optimizer step")
    print(f"{'config':>10}  {'total':>7}  " + "  ".join(f"{p:>10}" for p in parts) + f"  {'rest of fwd':>11}  {'other':>7}")
    for label in labels:
        if specs[label] is None:
            timers = Timers()
            total = epoch(label, timers)
            s = dict(timers.s)
        else:
            net.load_state_dict(state)
            total, s = breakdown(net, batches, specs[label], cals[fmt_of[label]])
        inj = sum(s.get(p, 0.0) for p in keys[:3])
        rest_fwd = s.get("forward", 0.0) - inj
        other = total - s.get("forward", 0.0) - s.get("backward", 0.0) - s.get("optimizer step", 0.0)
        print(f"{label:>10}  {total * 1e3:7.1f}  " + "  ".join(f"{s.get(p, 0.0) * 1e3:10.1f}" for p in keys)
              + f"  {rest_fwd * 1e3:11.1f}  {other * 1e3:7.1f}")
    if not all(math.isfinite(t) for v in times.values() for t in v):  # pragma: no cover
        raise SystemExit("non-finite timing")


if __name__ == "__main__":
    main()

"""Cost of error injection during retraining: a training epoch with vs without the injector.

Times training epochs run as :func:`boosting.retrain.retrain` runs them (an injector without
stats, ``collect_stats=False``; re-seed the injector
per batch, forward, cross-entropy, the loss's finite check, backward, the fused gradient check,
optimizer step) with an :class:`~boosting.inference.ErrorInjector` corrupting every conv/linear
weight and input feature map, and without it (the same loop, no injector), for

- networks (``--networks``): LeNet on scikit-learn's digits at 28x28 (1437 images, 45
  batches of 32: a full epoch) and VGG-small on the digits upscaled to 32x32 (the larger CNN
  of the boosting benchmark, ``docs/boosting-results.md``; its epoch is cut to
  ``--vgg-batches`` batches, since a VGG step takes 100x a LeNet step on a CPU);
- error models (``--models``): uniform and wordline, at BER ``--ber``;
- formats (``--formats``): ``int8`` and ``fp32+zero`` (fp32 with zeroing: unmitigated fp32 at
  1e-3 gives a non-finite loss on every batch, which retrain() skips without backward or step),
  calibrated on the training images.

Clean and injected epochs are interleaved in a rotating order, so a noisy machine slows them
alike; the table gives medians of ``--repeats`` epochs and the ratio injected / clean as the
median of the per-round ratios ("paired"), with a verdict against the target of 1.2x, and as
the ratio of the fastest epochs ("best", what a machine shared with other work still shows).

A second, instrumented epoch per configuration splits the injector's time into quantize
(``_quantize_into`` and the weight image's scales), ``inject_`` (the error model's own work:
the errormodels package), dequantize (``_dequantize_into`` and 4-bit unpacking) and the
injector's rest (buffers, mitigation, per-layer stats, the straight-through terms), beside the
rest of the forward pass, backward, the optimizer step and the remainder (data, checks). It is
timed apart from the ratio (the timers add their own overhead).

    python benchmarks/train_overhead.py [--repeats 5] [--networks lenet,vgg-small] [--ber 1e-3]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import boosting.inference as inference  # noqa: E402
from boosting.data import load_dataset  # noqa: E402
from boosting.inference import Calibration, ErrorInjector, ErrorSpec, calibrate  # noqa: E402
from boosting.networks import get_network  # noqa: E402
from boosting.retrain import _grads_finite  # noqa: E402
from errormodels.inject import KERNEL  # noqa: E402
from errormodels.models import get_model  # noqa: E402

BATCH = 32
TARGET = 1.2
SIZES = {"lenet": 28, "vgg-small": 32}


def pretrain(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int = 0
             ) -> dict[str, torch.Tensor]:
    """State of ``net`` after ``steps`` clean Adam steps (lr 3e-3, batches of 32, seeded order)."""
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), BATCH):
            idx = order[i: i + BATCH]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
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
            if not _grads_finite([p.grad for p in params if p.grad is not None]):
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
        with ErrorInjector(net, spec, calibration, collect_stats=False) as injector:  # as retrain() builds it
            body(injector)
    return tick() - start


# (timer, module or class, attribute): the injector's parts, wrapped for the instrumented epoch
_PARTS = (
    ("injector", inference.ErrorInjector, "_ifm_read"),
    ("injector", inference.ErrorInjector, "_build_image"),
    ("injector", inference.ErrorInjector, "_store_and_read"),
    ("quantize", inference, "_quantize_into"),
    ("quantize", inference._WeightImage, "_qparams"),
    ("quantize", inference, "_store"),
    ("inject_", inference, "inject_"),
    ("dequantize", inference, "_dequantize_into"),
    ("dequantize", inference, "_codes_of"),
    ("dequantize", inference, "_load"),
)


def breakdown(net: torch.nn.Module, batches: list, spec: ErrorSpec, calibration: Calibration) -> tuple[float, dict]:
    """Seconds of an instrumented injected epoch and its parts (the injector's functions wrapped)."""
    timers = Timers()
    saved = [(owner, attr, getattr(owner, attr)) for _, owner, attr in _PARTS if hasattr(owner, attr)]
    try:
        for name, owner, attr in _PARTS:
            if hasattr(owner, attr):
                setattr(owner, attr, timers.wrap(name, getattr(owner, attr)))
        total = run_epoch(net, batches, spec, calibration, timers)
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)
    return total, dict(timers.s)


@dataclass
class Config:
    """One measured configuration: an error spec (None: clean) and its calibration."""

    label: str
    spec: Optional[ErrorSpec]
    calibration: Optional[Calibration]


def measure_network(network: str, args: argparse.Namespace) -> list[tuple[str, float]]:
    """Print the table and breakdown of one network; ``[(config, paired ratio)]`` of its injected configs."""
    size = SIZES[network]
    train = load_dataset("digits", split="train", image_size=size)
    x, y = train.tensors
    net = get_network(network, in_channels=1, image_size=size, seed=args.seed)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed))
    batches = [(x[order[i: i + BATCH]], y[order[i: i + BATCH]]) for i in range(0, len(y), BATCH)]
    if network != "lenet":
        batches = batches[: args.vgg_batches]
    state = pretrain(net, x, y, steps=90 if network == "lenet" else 2 * len(batches), seed=args.seed)
    net.load_state_dict(state)
    configs = [Config("clean", None, None)]
    cals: dict[str, Calibration] = {}
    for model in args.models.split(","):
        for label in args.formats.split(","):
            fmt, _, mit = label.partition("+")
            if fmt not in cals:
                cals[fmt] = calibrate(net, [(x[i: i + 256], y[i: i + 256]) for i in range(0, len(y), 256)], fmt)
            spec = ErrorSpec(get_model(model, ber=args.ber), fmt=fmt, mitigation=mit or None, seed=args.seed)
            configs.append(Config(f"{model} {label}", spec, cals[fmt]))
    n_params = sum(p.numel() for p in net.parameters())
    n_layers = len(inference.injectable_layers(net))
    print(f"\n{network} ({n_params:,} parameters, {n_layers} conv/linear layers) on digits {size}x{size}: "
          f"{len(batches)} batches of {BATCH}, Adam; BER {args.ber:g}; median of {args.repeats} epochs")

    def epoch(c: Config, timers: Optional[Timers] = None) -> float:
        net.load_state_dict(state)
        return run_epoch(net, batches, c.spec, c.calibration, timers)

    times: dict[str, list[float]] = {c.label: [] for c in configs}
    for c in configs:  # warm-up (also builds the cached weak sets)
        epoch(c)
    for r in range(args.repeats):
        for i in range(len(configs)):
            c = configs[(i + r) % len(configs)]  # rotating order
            times[c.label].append(epoch(c))
    flips: dict[str, float] = {}
    skipped: dict[str, int] = {}
    for c in configs[1:]:
        net.load_state_dict(state)
        with ErrorInjector(net, c.spec, c.calibration) as inj:  # type: ignore[arg-type]
            net.train()
            n_bad = 0
            for step, (xb, yb) in enumerate(batches):
                inj.reseed(step)
                with torch.no_grad():
                    n_bad += int(not torch.isfinite(F.cross_entropy(net(xb), yb)))
            flips[c.label] = inj.total_stats.bits_flipped / len(batches)
            skipped[c.label] = n_bad

    verdicts = []
    print(f"\n{'config':>18}  {'epoch ms':>9}  {'min ms':>8}  {'max ms':>8}  {'paired':>7}  {'best':>6}  "
          f"{'verdict':>7}  {'flips/batch':>11}  {'non-finite':>10}")
    for c in configs:
        t = times[c.label]
        paired = statistics.median(a / b for a, b in zip(t, times["clean"]))
        best = min(t) / min(times["clean"])
        verdict = "" if c.spec is None else ("ok" if paired <= TARGET else "over")
        if c.spec is not None:
            verdicts.append((c.label, paired))
        print(f"{c.label:>18}  {statistics.median(t) * 1e3:9.1f}  {min(t) * 1e3:8.1f}  {max(t) * 1e3:8.1f}  "
              f"{paired:6.2f}x  {best:5.2f}x  {verdict:>7}  {flips.get(c.label, 0):11.1f}  "
              f"{skipped.get(c.label, 0):>4d}/{len(batches)}")
    print("'paired': median over rounds of each epoch / the clean epoch of its round (the verdict, target "
          f"<= {TARGET}x); 'best': fastest epoch / fastest clean epoch (robust to a busy machine)")

    print("\nbreakdown of one instrumented epoch, ms per batch (the injector's parts are inside 'forward'; "
          "'inject_' is the errormodels package's share):")
    cols = ("quantize", "inject_", "dequantize", "inj. rest", "rest of fwd", "backward", "opt. step", "other")
    print(f"{'config':>18}  {'total':>7}  " + "  ".join(f"{p:>11}" for p in cols))
    for c in configs:
        net.load_state_dict(state)
        if c.spec is None:
            timers = Timers()
            total = run_epoch(net, batches, None, None, timers)
            s = dict(timers.s)
        else:
            total, s = breakdown(net, batches, c.spec, c.calibration)  # type: ignore[arg-type]
        parts = [s.get("quantize", 0.0), s.get("inject_", 0.0), s.get("dequantize", 0.0)]
        inj_rest = s.get("injector", 0.0) - sum(parts)
        rest_fwd = s.get("forward", 0.0) - s.get("injector", 0.0)
        other = total - s.get("forward", 0.0) - s.get("backward", 0.0) - s.get("optimizer step", 0.0)
        row = parts + [inj_rest, rest_fwd, s.get("backward", 0.0), s.get("optimizer step", 0.0), other]
        print(f"{c.label:>18}  {total / len(batches) * 1e3:7.2f}  "
              + "  ".join(f"{v / len(batches) * 1e3:11.2f}" for v in row))
    if not all(math.isfinite(t) for v in times.values() for t in v):  # pragma: no cover
        raise SystemExit("non-finite timing")
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per configuration (default 5)")
    parser.add_argument("--networks", default="lenet,vgg-small", help="comma-separated: lenet, vgg-small")
    parser.add_argument("--models", default="uniform,wordline", help="comma-separated error models")
    parser.add_argument("--formats", default="int8,fp32+zero", help="comma-separated FORMAT[+MITIGATION]")
    parser.add_argument("--ber", type=float, default=1e-3, help="bit error rate (default 1e-3)")
    parser.add_argument("--vgg-batches", type=int, default=4, help="batches of a VGG-small epoch (default 4)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the network, data order and errors")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, errormodels kernel: {KERNEL}")
    verdicts = []
    for network in args.networks.split(","):
        verdicts += [(f"{network} {label}", r) for label, r in measure_network(network.strip(), args)]
    worst = max(verdicts, key=lambda v: v[1])
    met = [label for label, r in verdicts if r <= TARGET]
    print(f"\nverdict: {len(met)} of {len(verdicts)} configurations within {TARGET}x of a clean epoch (paired); "
          f"worst {worst[0]} at {worst[1]:.2f}x: target {'met' if worst[1] <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()

"""Analog processing-in-memory noise: layers computed on a crossbar, with output noise and ADC quantization.

The PIM design slides (Yang & Sze, in ``../shared/seeds/``) weigh DNN design against analog
in-memory computing, whose matrix-vector products are sensed as currents and digitised by ADCs
of limited precision. The model here (stated assumptions, not a circuit model):

- a layer mapped to the crossbar (conv or linear, :data:`boosting.inference.LAYER_TYPES`)
  produces its exact output ``y`` plus Gaussian noise of standard deviation
  ``noise * full_scale``, where ``full_scale`` is the layer's clean output range
  ``max - min`` measured on calibration batches (device variation, thermal and read noise
  lumped together, independent per output);
- then an ADC of ``adc_bits`` bits digitises it: uniform levels over the calibrated range,
  values outside clipped to it (``adc_bits = 0``: no ADC, an ideal readout).

:class:`AnalogPIM` applies both with forward hooks; the noise comes from a generator seeded per
evaluation seed. :func:`evaluate_pim` measures accuracy over seeds; :func:`tolerable_noise` finds
the largest ``noise`` that keeps an accuracy goal for a given ADC precision (geometric
bisection), the same question the DRAM characterization asks of the BER. Command::

    python -m boosting.pim --network-file NET.pt [--adc-bits 4,6,8] [--layers conv,linear]
        [--max-drop 0.01] [--seeds 0..4] [--noise-min 1e-4] [--noise-max 0.5] [-o pim.json]
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from boosting.inference import DEFAULT_LAYER_TYPES, confidence_interval, evaluate, injectable_layers

__all__ = ["AnalogPIM", "PimError", "calibrate_outputs", "evaluate_pim", "tolerable_noise", "main"]

log = logging.getLogger(__name__)


class PimError(ValueError):
    """Bad analog PIM parameters."""


def _check(noise: float, adc_bits: int) -> None:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
        raise PimError(f"noise must be a finite number >= 0 (a share of the output range), got {noise!r}")
    if not (isinstance(adc_bits, int) and 0 <= adc_bits <= 24):
        raise PimError(f"adc_bits must be an integer in 0..24 (0: no ADC), got {adc_bits!r}")


def calibrate_outputs(net: nn.Module, loader: Any, layer_types: Sequence[str] = DEFAULT_LAYER_TYPES
                      ) -> dict[str, tuple[float, float]]:
    """The clean output range ``(min, max)`` of each crossbar layer over ``loader``'s batches."""
    ranges: dict[str, list[float]] = {}
    handles = []

    def hook_for(name: str):
        def hook(_m: nn.Module, _args: Any, out: torch.Tensor) -> None:
            lo, hi = float(out.min()), float(out.max())
            r = ranges.setdefault(name, [lo, hi])
            r[0], r[1] = min(r[0], lo), max(r[1], hi)
        return hook

    for name, m in injectable_layers(net, layer_types):
        handles.append(m.register_forward_hook(hook_for(name)))
    was = net.training
    try:
        net.eval()
        with torch.no_grad():
            for x, _y in loader:
                net(x)
    finally:
        net.train(was)
        for h in handles:
            h.remove()
    if not ranges:
        raise PimError("no crossbar layers in the network for these layer types")
    return {k: (v[0], v[1]) for k, v in ranges.items()}


class AnalogPIM:
    """Forward hooks that add output noise and ADC quantization to the crossbar layers (a context manager)."""

    def __init__(self, net: nn.Module, ranges: dict[str, tuple[float, float]], *, noise: float, adc_bits: int,
                 seed: int = 0, layer_types: Sequence[str] = DEFAULT_LAYER_TYPES) -> None:
        _check(noise, adc_bits)
        self.net, self.ranges, self.noise, self.adc_bits = net, ranges, float(noise), adc_bits
        self.layer_types = layer_types
        self.generator = torch.Generator().manual_seed(int(seed))
        self._handles: list[Any] = []

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))

    def _hook(self, name: str):
        lo, hi = self.ranges[name]
        span = max(hi - lo, 1e-12)

        def hook(_m: nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
            y = out
            if self.noise > 0:
                eps = torch.randn(out.shape, generator=self.generator, dtype=out.dtype)
                y = y + eps.to(out.device) * (self.noise * span)
            if self.adc_bits:
                levels = (1 << self.adc_bits) - 1
                step = span / levels
                y = torch.clamp(torch.round((y - lo) / step), 0, levels) * step + lo
            return y
        return hook

    def __enter__(self) -> "AnalogPIM":
        for name, m in injectable_layers(self.net, self.layer_types):
            if name in self.ranges:
                self._handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


@dataclass(frozen=True)
class PimAccuracy:
    noise: float
    adc_bits: int
    mean: float
    ci_low: float
    ci_high: float
    per_seed: tuple[float, ...]


def evaluate_pim(net: nn.Module, loader: Any, ranges: dict[str, tuple[float, float]], *, noise: float,
                 adc_bits: int, seeds: Sequence[int] = (0, 1, 2),
                 layer_types: Sequence[str] = DEFAULT_LAYER_TYPES) -> PimAccuracy:
    """Accuracy with the crossbar layers' outputs noisy and digitised, over ``seeds``."""
    if not seeds:
        raise PimError("give at least one seed")
    accs, n = [], 0
    with AnalogPIM(net, ranges, noise=noise, adc_bits=adc_bits, layer_types=layer_types) as pim:
        for s in seeds:
            pim.reseed(s)
            r = evaluate(net, loader)
            accs.append(r.mean)
            n = r.n_samples
    mean, lo, hi = confidence_interval(accs, n)
    return PimAccuracy(float(noise), adc_bits, mean, lo, hi, tuple(accs))


def tolerable_noise(net: nn.Module, loader: Any, ranges: dict[str, tuple[float, float]], *, goal: float,
                    adc_bits: int, seeds: Sequence[int] = (0, 1, 2), noise_min: float = 1e-4,
                    noise_max: float = 0.5, tol: float = 0.1, layer_types: Sequence[str] = DEFAULT_LAYER_TYPES
                    ) -> dict[str, Any]:
    """The largest noise in ``[noise_min, noise_max]`` whose mean accuracy keeps ``goal`` (bisection on log noise).

    ``tol`` is the final bracket width in decades. Returns ``{"noise": ... or 0 when even
    ``noise_min`` fails, "status": "found" | "below-range" | "above-range", "probes": [...]}``;
    ``above-range``: ``noise_max`` still passes. The ADC alone (noise 0) is probed first.
    """
    if not 0 < noise_min < noise_max:
        raise PimError(f"need 0 < noise_min < noise_max, got {noise_min!r}, {noise_max!r}")
    probes = []

    def ok(noise: float) -> bool:
        r = evaluate_pim(net, loader, ranges, noise=noise, adc_bits=adc_bits, seeds=seeds, layer_types=layer_types)
        probes.append(asdict(r))
        log.info("adc %d bits, noise %.3g: accuracy %.4f (%s)", adc_bits, noise, r.mean,
                 "pass" if r.mean >= goal else "fail")
        return r.mean >= goal

    if not ok(0.0) or not ok(noise_min):
        return {"noise": 0.0, "status": "below-range", "probes": probes}
    if ok(noise_max):
        return {"noise": noise_max, "status": "above-range", "probes": probes}
    lo, hi = math.log10(noise_min), math.log10(noise_max)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if ok(10 ** mid):
            lo = mid
        else:
            hi = mid
    return {"noise": 10 ** lo, "status": "found", "probes": probes}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m boosting.pim``: the tolerable crossbar noise per ADC precision; 0 ok, 2 bad input."""
    from boosting.checkpoint import CheckpointError, load_network
    from boosting.cli_args import OneLineParser, fraction_arg, int_list_arg, layer_types_arg, positive_float, seeds_arg
    from boosting.data import iter_batches
    from boosting.inference import InferenceError
    from softmc_host.cli import add_out, add_verbosity, configure_logging, fail
    from softmc_host.files import write_json

    p = OneLineParser(prog="python -m boosting.pim",
                      description="Tolerable analog-PIM output noise of a network per ADC precision.")
    p.add_argument("--network-file", metavar="NET.pt", required=True, help="network file (python -m boosting.train)")
    p.add_argument("--adc-bits", type=int_list_arg(0, 24, "ADC bits"), default=(4, 6, 8), help="ADC precisions (0: no ADC; default 4,6,8)")
    p.add_argument("--layers", type=layer_types_arg, default=DEFAULT_LAYER_TYPES, help="layer types on the crossbar")
    p.add_argument("--max-drop", type=fraction_arg, default=0.01, help="tolerated accuracy drop (default 0.01)")
    p.add_argument("--seeds", type=seeds_arg, default=(0, 1, 2, 3, 4), help="noise seeds (default 0..4)")
    p.add_argument("--noise-min", type=positive_float, default=1e-4, help="lowest noise probed, as a share of the layer's output range (default 1e-4)")
    p.add_argument("--noise-max", type=positive_float, default=0.5, help="highest noise probed, as a share of the layer's output range (default 0.5)")
    add_out(p, "pim.json", "result document")
    add_verbosity(p)
    args = p.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        if not Path(args.network_file).is_file():
            raise PimError(f"network file {args.network_file!r} does not exist")
        nf = load_network(args.network_file)
        test = iter_batches(nf.load_split("test"), 512)
        calib = iter_batches(nf.load_split("train"), 512)
        ranges = calibrate_outputs(nf.net, calib, args.layers)
        clean = evaluate(nf.net, test).mean
        goal = clean - args.max_drop
        results = {}
        for bits in args.adc_bits:
            results[str(bits)] = tolerable_noise(nf.net, test, ranges, goal=goal, adc_bits=bits, seeds=args.seeds,
                                                 noise_min=args.noise_min, noise_max=args.noise_max,
                                                 layer_types=args.layers)
        doc = {"format": "eden-pim/1", "network_file": args.network_file, "clean": clean, "goal": goal,
               "layer_types": list(args.layers), "seeds": list(args.seeds),
               "ranges": {k: list(v) for k, v in ranges.items()}, "adc": results}
        write_json(args.out, doc)
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    except (PimError, CheckpointError, InferenceError, ValueError, OSError) as exc:
        return fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    print(f"clean accuracy {clean:.4f}, goal {goal:.4f}")
    print(f"{'ADC bits':>8} {'tolerable noise':>16} status")
    for bits, r in results.items():
        print(f"{bits:>8} {r['noise']:>16.3g} {r['status']}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    from boosting.pim import main as _main

    raise SystemExit(_main())

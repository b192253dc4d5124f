"""Cost of bit-error injection under all four error models, as a ratio to a plain copy.

For ``--n`` float32 and int8 values (default 25M) it prints, per model (uniform, wordline, bitline,
bit-value) and bit error rate (1e-6 .. 1e-2), the time of ``inject(x, model)`` (a copy plus the
injection) as a ratio to ``x.clone()``, at the first call and in steady state, and beside it the
time of ``inject_`` into an existing tensor as a ratio to ``copy_`` into an existing tensor (no
fresh memory: for tensors above glibc's 32 MiB mmap threshold, ``clone`` pays the kernel's page
faults on fresh memory, and so does ``inject``).

* **steady**: ``--repeats`` calls with fresh seeds, alternating with clones so that both see the
  same machine load (the weak sets of the wordline and bitline models are cached): the median
  time, and the median of the pairs' ratios;
* **first**: a call after :func:`~errormodels.inject.clear_weak_cache` (the weak set is found
  again), median of three, as a ratio to the median clone;
* **best**: the fastest call against the fastest clone, what each costs when nothing else
  runs (on a shared machine the medians carry other jobs' load; torch's two-thread clone
  stalls for a scheduler slice when one of its threads is descheduled; ``--threads 1`` compares
  one thread with one thread, which such load disturbs least).

Then the fixed cost of a call in microseconds (``inject_`` of 1,000 values, with ``seed=`` and
with ``generator=``, and a LeNet-sized layer of 100,000 values against its clone), the dense approach of existing tools at 1e-3 (draw
``torch.rand(n_bits) < ber``, pack into a byte mask, XOR into a copy; ``--dense``), and one
verdict line per target: steady state at most 1.5x a clone for every model at BER <= 1e-3, first
call at most 3x.

    python benchmarks/inject.py [--n 25000000] [--repeats 9] [--threads N] [--device cpu|cuda] [--no-dense]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from errormodels.inject import KERNEL, clear_weak_cache, inject, inject_  # noqa: E402
from errormodels.models import Bitline, BitValue, ErrorModel, Uniform, Wordline  # noqa: E402

BERS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
STEADY_TARGET, FIRST_TARGET, TARGET_BER = 1.5, 3.0, 1e-3


def models_at(ber: float) -> list[tuple[str, ErrorModel]]:
    """The four models at one BER (the clustered ones with 1% weak locations, 100x as weak)."""
    return [("uniform", Uniform(ber=ber)),
            ("wordline", Wordline(ber=ber, weak_fraction=0.01, ratio=100.0)),
            ("bitline", Bitline(ber=ber, weak_fraction=0.01, ratio=100.0)),
            ("bit-value", BitValue(ber=ber))]


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call takes (synchronised on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def median_s(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    timed(fn, device)  # warm-up
    return statistics.median(timed(fn, device) for _ in range(repeats))


def paired_s(fn: Callable[[], object], ref: Callable[[], object], device: torch.device,
             repeats: int) -> tuple[float, float, float, float, float]:
    """Seconds of ``fn`` and of ``ref``, run alternately: their medians, the median of the ratios of the
    pairs (a noisy machine drifts alike for both; a stall spoils one pair, not the median), and their
    minima (what each costs when nothing else runs)."""
    fn(), ref()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(fn, device))
        b.append(timed(ref, device))
    return (statistics.median(a), statistics.median(b), statistics.median(x / y for x, y in zip(a, b)),
            min(a), min(b))


def dense_inject(x: torch.Tensor, ber: float, gen: torch.Generator, chunk_bytes: int = 1 << 22) -> torch.Tensor:
    """What existing tools do: a Bernoulli draw per bit, packed into a byte mask, XORed into a copy."""
    out = x.clone()
    data = out.view(-1).view(torch.uint8)
    weights = (1 << torch.arange(8, device=x.device)).to(torch.uint8)
    for lo in range(0, data.numel(), chunk_bytes):
        part = data[lo: lo + chunk_bytes]
        bits = torch.rand(part.numel() * 8, generator=gen, device=x.device) < ber
        mask = (bits.view(-1, 8).to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)
        part.bitwise_xor_(mask)
    return out


def make_values(dtype: torch.dtype, n: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(0)
    if dtype.is_floating_point:
        return torch.randn(n, generator=gen, device=device, dtype=dtype)
    return torch.randint(-128, 128, (n,), generator=gen, device=device, dtype=torch.int64).to(dtype)


def fixed_costs(device: torch.device, repeats: int) -> None:
    """Microseconds per call where the data costs nothing (1,000 values), and a LeNet-sized layer."""
    small = make_values(torch.float32, 1000, device)
    layer = make_values(torch.float32, 100_000, device)
    gen = torch.Generator(device=device).manual_seed(0)
    reps = max(100, 20 * repeats)
    parts = []
    for label, model in models_at(TARGET_BER):
        seed_us = min(timed(lambda: inject_(small, model, seed=1), device) for _ in range(reps)) * 1e6
        gen_us = min(timed(lambda: inject_(small, model, generator=gen), device) for _ in range(reps)) * 1e6
        parts.append(f"{label} {seed_us:.0f} / {gen_us:.0f}")
    print(f"\nfixed cost per call, us (inject_ of 1,000 float32 values at {TARGET_BER:g}, seed= / generator=, "
          f"best of {reps}): {', '.join(parts)}")
    parts = []
    for label, model in models_at(TARGET_BER):
        t, c, r, t_min, c_min = paired_s(lambda: inject(layer, model, generator=gen), lambda: layer.clone(), device,
                                         reps)
        parts.append(f"{label} {t * 1e6:.0f} us = {r:.1f}x (best {t_min / c_min:.1f}x)")
    print(f"100,000 float32 values (a LeNet layer; clone {c * 1e6:.0f} us), copy+inject at {TARGET_BER:g}, "
          f"median of {reps}: {', '.join(parts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=25_000_000, help="values per tensor (default 25M)")
    parser.add_argument("--repeats", type=int, default=9, help="timed pairs per point, medians reported (default 9)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for clone and injection alike (default: torch's)")
    parser.add_argument("--no-dense", dest="dense", action="store_false",
                        help="skip the dense per-bit baseline (seconds per dtype)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device {args.device}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch build has no CUDA device")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}), torch {torch.__version__}, {args.n:,} values, median of {args.repeats}; "
          f"CPU block sampler: {KERNEL}")
    fixed_costs(device, args.repeats)

    worst: dict[tuple[str, str], list[float]] = {}  # (dtype, model) -> [steady, first] at BER <= target
    seeds = iter(range(10**7))
    for dtype in (torch.float32, torch.int8):
        dname = str(dtype).replace("torch.", "")
        x = make_values(dtype, args.n, device)
        mib = x.numel() * x.element_size() / 2**20
        copy_s = median_s(lambda: x.clone(), device, args.repeats)
        warm = torch.empty_like(x)
        warm_s = median_s(lambda: warm.copy_(x), device, args.repeats)
        print(f"\n{dname}: {mib:.0f} MiB, {x.numel() * x.element_size() * 8:,} bits; clone {copy_s * 1e3:.2f} ms, "
              f"copy_ into existing memory {warm_s * 1e3:.2f} ms")
        print(f"  {'model':>9}  {'BER':>7}  {'flips':>10}  {'steady ms':>9}  {'/ clone':>7}  {'best':>6}  "
              f"{'first ms':>8}  {'/ clone':>7}  {'best':>6}  |  {'in place ms':>11}  {'/ copy_':>7}  {'best':>6}")
        y = x.clone()
        at_1e3 = None
        for ber in BERS:
            for label, model in models_at(ber):
                first = []
                for _ in range(3):
                    clear_weak_cache()
                    first.append(timed(lambda: inject(x, model, seed=next(seeds)), device))
                t, c, r, t_min, c_min = paired_s(lambda: inject(x, model, seed=next(seeds)), lambda: x.clone(), device,
                                                 args.repeats)
                ti, _, ri, ti_min, cw_min = paired_s(lambda: inject_(y, model, seed=next(seeds)),
                                                     lambda: warm.copy_(x), device, args.repeats)
                _, st = inject(x, model, seed=0)
                f_med, f_min = statistics.median(first) / c, min(first) / c_min
                print(f"  {label:>9}  {ber:7.0e}  {st.bits_flipped:10,d}  {t * 1e3:9.2f}  {r:6.2f}x  "
                      f"{t_min / c_min:5.2f}x  {statistics.median(first) * 1e3:8.2f}  {f_med:6.2f}x  {f_min:5.2f}x  |"
                      f"  {ti * 1e3:11.2f}  {ri:6.2f}x  {ti_min / cw_min:5.2f}x")
                if ber <= TARGET_BER:
                    w = worst.setdefault((dname, label), [0.0, 0.0, 0.0, 0.0])
                    w[:] = [max(w[0], r), max(w[1], f_med), max(w[2], t_min / c_min), max(w[3], f_min)]
                if ber == TARGET_BER and label == "uniform":
                    at_1e3 = t
        if args.dense:
            gen = torch.Generator(device=device).manual_seed(0)
            dense_s = timed(lambda: dense_inject(x, TARGET_BER, gen), device)
            print(f"  dense per-bit masks (any BER): {dense_s * 1e3:.0f} ms = {dense_s / copy_s:.1f}x clone; "
                  f"sparse uniform is {dense_s / at_1e3:.0f}x faster at {TARGET_BER:g}")

    print(f"\nverdicts (BER <= {TARGET_BER:g}; worst ratio to a clone over those BERs, median of the pairs "
          f"and best against best):")
    for (dname, label), (steady, first, steady_min, first_min) in worst.items():
        def verdict(v: float, target: float) -> str:
            return "MET" if v <= target else "NOT MET"
        print(f"  {dname:>7} {label:>9}: steady {steady:5.2f}x / best {steady_min:5.2f}x (target {STEADY_TARGET:g}x) "
              f"{verdict(steady, STEADY_TARGET)} / {verdict(steady_min, STEADY_TARGET)}; first call {first:5.2f}x / "
              f"best {first_min:5.2f}x (target {FIRST_TARGET:g}x) {verdict(first, FIRST_TARGET)} / "
              f"{verdict(first_min, FIRST_TARGET)}")


if __name__ == "__main__":
    main()

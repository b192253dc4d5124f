"""Cost of bit-error injection: sparse exact injection vs a plain copy and vs dense per-bit masks.

For 25M float32 and 25M int8 values it prints, per bit error rate, the time of
``inject(x, Uniform(ber))`` (a copy plus the injection) as a ratio to ``x.clone()``
(the measure the 1.5x target is set on), and beside it the time of ``inject_`` into an existing tensor as a
ratio to ``copy_`` into an existing tensor (no fresh memory: for tensors above glibc's
32 MiB mmap threshold, ``clone`` pays the kernel's page faults on fresh memory, and so
does ``inject``), and, at BER 1e-3, the speed-up over the dense approach of existing tools: draw
``torch.rand(n_bits) < ber``, pack the booleans into a byte mask and XOR it into a copy
(timed once per dtype, as its cost does not depend on the BER). Times are medians of
``--repeats`` runs, alternating with copies so that both see the same machine load.
Extra lines give the other models at 1e-3 (the wordline and bitline models' first
call finds and caches the weak set; later calls reuse it).

    python benchmarks/inject.py [--n 25000000] [--repeats 5] [--device cpu|cuda]
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
             repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn`` and of ``ref``, run alternately (a noisy machine drifts alike for both)."""
    fn(), ref()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(fn, device))
        b.append(timed(ref, device))
    return statistics.median(a), statistics.median(b)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=25_000_000, help="values per tensor (default 25M)")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per point, median reported (default 9)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}), torch {torch.__version__}, {args.n:,} values, median of {args.repeats}; "
          f"CPU block sampler: {KERNEL}")

    for dtype in (torch.float32, torch.int8):
        x = make_values(dtype, args.n, device)
        mib = x.numel() * x.element_size() / 2**20
        copy_s = median_s(lambda: x.clone(), device, args.repeats)
        print(f"\n{str(dtype).replace('torch.', '')}: {mib:.0f} MiB, {x.numel() * x.element_size() * 8:,} bits; "
              f"plain copy {copy_s * 1e3:.1f} ms")
        y, warm = x.clone(), torch.empty_like(x)
        print(f"  {'BER':>7}  {'flips':>10}  {'copy+inject ms':>14}  {'copy ms':>8}  {'/ copy':>7}  |"
              f"  {'in place ms':>11}  {'warm copy ms':>12}  {'/ warm':>7}")
        at_1e3 = None
        for ber in BERS:
            seeds = iter(range(10**6))
            t, c = paired_s(lambda: inject(x, Uniform(ber=ber), seed=next(seeds)), lambda: x.clone(), device,
                            args.repeats)
            ti, cw = paired_s(lambda: inject_(y, Uniform(ber=ber), seed=next(seeds)), lambda: warm.copy_(x), device,
                              args.repeats)
            _, st = inject(x, Uniform(ber=ber), seed=0)
            print(f"  {ber:7.0e}  {st.bits_flipped:10,d}  {t * 1e3:14.1f}  {c * 1e3:8.1f}  {t / c:6.2f}x  |"
                  f"  {ti * 1e3:11.1f}  {cw * 1e3:12.1f}  {ti / cw:6.2f}x")
            if ber == 1e-3:
                at_1e3 = t
        gen = torch.Generator(device=device).manual_seed(0)
        dense_s = timed(lambda: dense_inject(x, 1e-3, gen), device)
        print(f"  dense per-bit masks (any BER): {dense_s * 1e3:.0f} ms = {dense_s / copy_s:.1f}x copy; "
              f"sparse is {dense_s / at_1e3:.0f}x faster at 1e-3")
        if dtype == torch.float32:
            models: list[tuple[str, ErrorModel]] = [
                ("wordline", Wordline(ber=1e-3, weak_fraction=0.01, ratio=100.0)),
                ("bitline", Bitline(ber=1e-3, weak_fraction=0.01, ratio=100.0)),
                ("bit-value", BitValue(ber=1e-3)),
            ]
            for label, model in models:
                clear_weak_cache()
                first = timed(lambda: inject(x, model, seed=0), device)
                t, c = paired_s(lambda: inject(x, model, seed=1), lambda: x.clone(), device, args.repeats)
                print(f"  {label:>9} 1e-3: copy+inject {t * 1e3:.1f} ms = {t / c:.2f}x copy "
                      f"(first call {first * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()

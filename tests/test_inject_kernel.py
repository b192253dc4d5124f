"""The block sampler: its compiled kernel, its torch version, and the stream both must follow."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import torch
from scipy import stats as sps

import errormodels.inject as inj
import errormodels.inject.sampler as inj_sampler
from errormodels.models import BitValue, Bitline, Uniform, Wordline

needs_kernel = pytest.mark.skipif(inj_sampler._flipkernel is None, reason="compiled kernel not built (no C compiler)")
CPU = torch.device("cpu")
M64 = (1 << 64) - 1


def reference_block(key: int, b: int, nb: int, c: int) -> list[int]:
    """The stream as the module documents it, in plain Python integers: the first ``c`` distinct
    draws below ``nb`` of block ``b``, sorted."""
    bits = max(1, (nb - 1).bit_length())
    chosen: list[int] = []
    seen: set[int] = set()
    j = 0
    while len(chosen) < c:
        z = (key + 0x9E3779B97F4A7C15 * ((b << 32) + j)) & M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        w = z ^ (z >> 31)
        for t in range(64 // bits):
            pos = (w >> (t * bits)) & ((1 << bits) - 1)
            if pos < nb and pos not in seen and len(chosen) < c:
                chosen.append(pos)
                seen.add(pos)
        j += 1
    return sorted(b * inj_sampler._BLOCK_BITS + p for p in chosen)


def test_kernel_is_built_where_a_compiler_is() -> None:
    """The README's install builds the kernel; CI has a compiler, so a broken build fails here."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the torch sampler is used")
    assert inj.KERNEL == "compiled"


@pytest.mark.parametrize("n,p", [(1, 0.5), (2, 0.5), (9, 0.4), (100, 0.05), (65_536, 1e-3), (65_537, 0.2),
                                 (140_001, 3e-4), (140_001, 0.05)])
def test_torch_sampler_follows_the_documented_stream(n: int, p: float) -> None:
    for key in (0, 1, 2**62 - 1, 123_456_789):
        counts = inj_sampler._block_counts(n, p, key)
        want = [pos for b in range(counts.size) for pos in reference_block(key, b, min(inj_sampler._BLOCK_BITS, n - b * inj_sampler._BLOCK_BITS), int(counts[b]))]
        got = inj_sampler._ranks_torch(n, counts, key, 0, counts.size, CPU)
        assert got.tolist() == want


@needs_kernel
@pytest.mark.parametrize("n", [1, 2, 3, 63, 64, 65, 1000, 65_535, 65_536, 65_537, 300_001, 1_000_000])
@pytest.mark.parametrize("p", [1e-5, 1e-3, 0.05, 0.3, 0.5])
def test_kernel_ranks_match_torch_ranks(n: int, p: float) -> None:
    key = (n * 7919 + int(p * 1e6)) % 2**62
    counts = inj_sampler._block_counts(n, p, key)
    full = inj_sampler._ranks(n, counts, key, 0, counts.size, CPU)
    assert torch.equal(full, inj_sampler._ranks_torch(n, counts, key, 0, counts.size, CPU))
    assert full.numel() == int(counts.sum()) and torch.unique(full).numel() == full.numel()
    assert full.numel() == 0 or (int(full.min()) >= 0 and int(full.max()) < n)
    if counts.size > 2:  # any block range gives that range's part
        part = inj_sampler._ranks(n, counts, key, 1, counts.size - 1, CPU)
        lo, hi = inj_sampler._BLOCK_BITS, (counts.size - 1) * inj_sampler._BLOCK_BITS
        assert torch.equal(part, full[(full >= lo) & (full < hi)])


def test_torch_sampler_redraws_blocks_that_run_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """With too few words drawn at first, the blocks that ran short are drawn again with more."""
    n, p, key = 200_000, 0.45, 99
    counts = inj_sampler._block_counts(n, p, key)
    want = inj_sampler._ranks_torch(n, counts, key, 0, counts.size, CPU)
    monkeypatch.setattr(inj_sampler, "_WORDS_SLACK", 0.02)
    assert torch.equal(inj_sampler._ranks_torch(n, counts, key, 0, counts.size, CPU), want)


def bytes_of(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


@needs_kernel
@pytest.mark.parametrize("dtype,dtype_bits", [(torch.float32, None), (torch.float16, None), (torch.bfloat16, None),
                                              (torch.int8, None), (torch.int16, None), (torch.float64, None),
                                              (torch.int32, None), (torch.uint8, 4)])
@pytest.mark.parametrize("ber", [1e-4, 1e-2, 0.3, 0.5, 0.7, 1.0])
def test_kernel_and_torch_fallback_flip_the_same_bits(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype,
                                                      dtype_bits: int, ber: float) -> None:
    gen = torch.Generator().manual_seed(11)
    x = (torch.randn(40_999, generator=gen) * 40).to(dtype)
    fast, fast_stats = inj.inject(x, Uniform(ber=ber), seed=3, dtype_bits=dtype_bits)
    in_place = x.clone()
    assert inj.inject_(in_place, Uniform(ber=ber), seed=3, dtype_bits=dtype_bits) == fast_stats
    monkeypatch.setattr(inj_sampler, "_flipkernel", None)
    slow, slow_stats = inj.inject(x, Uniform(ber=ber), seed=3, dtype_bits=dtype_bits)
    assert torch.equal(bytes_of(fast), bytes_of(slow)) and torch.equal(bytes_of(in_place), bytes_of(fast))
    assert fast_stats == slow_stats


@needs_kernel
def test_kernel_threads_give_the_same_flips(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(300_000, generator=torch.Generator().manual_seed(0))  # 19 blocks
    one, st1 = inj.inject(x, Uniform(ber=2e-3), seed=8)
    monkeypatch.setattr(inj_sampler, "_PAR_MIN_BLOCKS", 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    four, st4 = inj.inject(x, Uniform(ber=2e-3), seed=8)
    assert torch.equal(bytes_of(one), bytes_of(four)) and st1 == st4
    y = x.clone()
    assert inj.inject_(y, Uniform(ber=2e-3), seed=8) == st1 and torch.equal(bytes_of(y), bytes_of(one))


@needs_kernel
def test_non_contiguous_input_is_copied_in_c_order() -> None:
    x = torch.randn(300, 200, generator=torch.Generator().manual_seed(1))
    t = x.t()
    y, st = inj.inject(t, Uniform(ber=0.01), seed=4)
    want, st_want = inj.inject(t.contiguous(), Uniform(ber=0.01), seed=4)
    assert y.is_contiguous() and y.shape == t.shape and st == st_want
    assert torch.equal(bytes_of(y), bytes_of(want))


@needs_kernel
def test_kernel_rejects_bad_arguments() -> None:
    k = inj_sampler._flipkernel
    dst = np.zeros(100, np.uint8)
    good = np.array([3], np.int64)
    with pytest.raises(ValueError, match="elem_shift"):
        k.flip_uniform(dst, None, good, 1, 0, 1, 7)
    with pytest.raises(ValueError, match="outside"):
        k.flip_uniform(dst, None, np.array([801], np.int64), 1, 0, 1, 3)  # 100 bytes hold 800 bits
    with pytest.raises(ValueError, match="do not fit"):
        k.flip_uniform(dst, None, good, 1, 0, 2, 3)
    with pytest.raises(ValueError, match="differ in size"):
        k.flip_uniform(dst, np.zeros(99, np.uint8), good, 1, 0, 1, 3)
    with pytest.raises(ValueError, match="overlap"):
        k.flip_uniform(dst, dst, good, 1, 0, 1, 3)
    with pytest.raises(TypeError, match="int64"):
        k.flip_uniform(dst, None, np.array([3], np.int32), 1, 0, 1, 3)
    with pytest.raises(TypeError, match="int64"):
        k.flip_uniform(dst, None, np.array([3.0]), 1, 0, 1, 3)  # float64: also 8 bytes
    with pytest.raises(TypeError, match="int64"):
        k.flip_uniform(dst, None, np.array([3], ">i8"), 1, 0, 1, 3)
    with pytest.raises(ValueError, match="holds 2 positions"):
        k.sample_ranks(np.zeros(2, np.int64), good, 1, 800, 0, 1)
    with pytest.raises(BufferError):
        k.flip_uniform(np.zeros(100, np.uint8).tobytes(), None, good, 1, 0, 1, 3)  # read-only
    assert dst.sum() == 0  # nothing written on any error


def test_positions_are_uniform_and_counts_binomial() -> None:
    """Over many keys: counts per block follow Binomial(nb, p) and positions spread evenly."""
    n, p = 3 * inj_sampler._BLOCK_BITS + 5000, 2e-3
    totals, hist = [], np.zeros(64, np.int64)
    for key in range(300):
        counts = inj_sampler._block_counts(n, p, key)
        pos = inj_sampler._ranks(n, counts, key, 0, counts.size, CPU).numpy()
        totals.append(pos.size)
        hist += np.bincount(pos * 64 // n, minlength=64)
    mean, var = n * p, n * p * (1 - p)
    assert abs(np.mean(totals) - mean) < 4 * math.sqrt(var / len(totals))
    assert 0.75 < np.var(totals) / var < 1.3
    assert sps.chisquare(hist).pvalue > 1e-3
    low_bits = np.zeros(8, np.int64)  # bit-within-byte positions are even too
    for key in range(50):
        counts = inj_sampler._block_counts(n, p, key)
        low_bits += np.bincount(inj_sampler._ranks(n, counts, key, 0, counts.size, CPU).numpy() & 7, minlength=8)
    assert sps.chisquare(low_bits).pvalue > 1e-3


@pytest.mark.parametrize("model", [Wordline(ber=2e-3, weak_fraction=0.05, ratio=40.0), Bitline(ber=2e-3),
                                   BitValue(ber=2e-3)], ids=lambda m: m.name)
def test_other_models_same_flips_with_and_without_kernel(monkeypatch: pytest.MonkeyPatch, model) -> None:
    x = torch.randn(120_000, generator=torch.Generator().manual_seed(2)).to(torch.float16)
    a, sa = inj.inject(x, model, seed=6)
    monkeypatch.setattr(inj_sampler, "_flipkernel", None)
    b, sb = inj.inject(x, model, seed=6)
    assert sa == sb and torch.equal(bytes_of(a), bytes_of(b)) and sa.bits_flipped > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA path: no CUDA device on this machine")
def test_cuda_sampler_matches_cpu() -> None:
    for n, p in [(1000, 0.3), (1_000_003, 1e-3), (5 * inj_sampler._BLOCK_BITS, 0.5)]:
        counts = inj_sampler._block_counts(n, p, 77)
        cpu = inj_sampler._ranks(n, counts, 77, 0, counts.size, CPU)
        assert torch.equal(inj_sampler._ranks_torch(n, counts, 77, 0, counts.size, torch.device("cuda")).cpu(), cpu)


@needs_kernel
@pytest.mark.parametrize("dtype,n", [(torch.int8, 16_800_003), (torch.float32, 4_200_001)])
def test_large_copies_streamed_match_the_fallback(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, n: int) -> None:
    """Above 16 MiB the kernel copies with non-temporal stores, over threads; odd sizes end mid-word."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randint(-128, 128, (n,), generator=gen, dtype=torch.int8) if dtype == torch.int8 else \
        torch.randn(n, generator=gen)
    assert x.numel() * x.element_size() >= 16 << 20
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    for ber in (1e-7, 1e-3):
        fast, st = inj.inject(x, Uniform(ber=ber), seed=2)
        with monkeypatch.context() as m:
            m.setattr(inj_sampler, "_flipkernel", None)
            slow, st_slow = inj.inject(x, Uniform(ber=ber), seed=2)
        assert st == st_slow and torch.equal(bytes_of(fast), bytes_of(slow))
        flipped = int(np.bitwise_count(bytes_of(fast).numpy() ^ bytes_of(x).numpy()).sum())
        assert flipped == st.bits_flipped


@needs_kernel
@pytest.mark.parametrize("model", [Uniform(ber=0.01), BitValue(ber=0.01)], ids=lambda m: m.name)
def test_in_place_injection_tells_autograd(monkeypatch: pytest.MonkeyPatch, model) -> None:
    """Values saved for backward and then corrupted in place make backward fail, kernel or not."""
    for kernel in (inj_sampler._flipkernel, None):
        monkeypatch.setattr(inj_sampler, "_flipkernel", kernel)
        w = torch.randn(50_000, requires_grad=True)
        loss = (w * w).sum()
        with torch.no_grad():
            inj.inject_(w, model, seed=1)
        with pytest.raises(RuntimeError, match="inplace operation"):
            loss.backward()


FORK_SCRIPT = """
import os, signal, sys, torch
import errormodels.inject as inj
import errormodels.inject.sampler as inj_sampler
from errormodels.models import Uniform
x = torch.arange(3_000_000, dtype=torch.int32).to(torch.float32)
want, st = inj.inject(x, Uniform(ber=1e-3), seed=1)
if inj_sampler._pool is None:
    print("no helper threads"); sys.exit(0)
pid = os.fork()
if pid == 0:
    code = 4
    try:
        signal.alarm(20)
        got, st2 = inj.inject(x, Uniform(ber=1e-3), seed=1)
        same = (got.view(torch.int32).numpy() == want.view(torch.int32).numpy()).all()  # numpy: torch's
        code = 0 if st2 == st and same else 3  # OpenMP ops can hang in a forked child
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
print("child status", status)
"""


@needs_kernel
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kernel_threads_work_in_a_forked_child() -> None:
    """A child forked after the helper threads started gets its own (the parent's do not exist
    there). In a fresh interpreter: torch's own OpenMP threads are not fork-safe either, and
    earlier tests in this process have started them."""
    out = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "2"}, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() in ("child status 0", "no helper threads"), out.stdout

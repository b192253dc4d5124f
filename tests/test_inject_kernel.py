"""The block sampler and the flip-plan engine: the compiled kernel, its numpy/torch version, and the
stream both must follow (errormodels/inject/sampler.py, the comment above _BLOCK_BITS)."""

from __future__ import annotations

import bisect
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
import errormodels.inject.weak as inj_weak
from errormodels.layout import AddressMap
from errormodels.models import BitValue, Bitline, Uniform, Wordline, weak_mask

needs_kernel = pytest.mark.skipif(inj_sampler._flipkernel is None, reason="compiled kernel not built (no C compiler)")
CPU = torch.device("cpu")
M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
BLOCK = 1 << 16


def mix64(z: int) -> int:
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def reference_count(key: int, b: int, nb: int, q: float) -> int:
    """A block's count as the stream documents it: the table entries at or below u / 2**53."""
    if q <= 0.0:
        return 0
    k0, cdf = inj_sampler._cdf_table(nb, q)
    u = mix64(key + GAMMA * ((b << 32) + (1 << 32) - 1)) >> 11
    return k0 + bisect.bisect_right(list(cdf), u / 2.0**53)


def reference_block(key: int, b: int, nb: int, c: int) -> list[int]:
    """The first ``c`` distinct draws below ``nb`` of block ``b``, sorted, in plain Python integers."""
    bits = max(1, (nb - 1).bit_length())
    chosen: list[int] = []
    seen: set[int] = set()
    j = 0
    while len(chosen) < c:
        w = mix64(key + GAMMA * ((b << 32) + j))
        for t in range(64 // bits):
            pos = (w >> (t * bits)) & ((1 << bits) - 1)
            if pos < nb and pos not in seen and len(chosen) < c:
                chosen.append(pos)
                seen.add(pos)
        j += 1
    return sorted(b * BLOCK + p for p in chosen)


def reference_process(key: int, n: int, p: float) -> list[int]:
    """The chosen positions of a Bernoulli(p) process over n positions (complement above 1/2)."""
    q = 1.0 - p if p > 0.5 else p
    out: list[int] = []
    for b in range(-(-n // BLOCK)):
        nb = min(BLOCK, n - b * BLOCK)
        drawn = reference_block(key, b, nb, reference_count(key, b, nb, q))
        if p > 0.5:
            drawn_set = set(drawn)
            drawn = [b * BLOCK + i for i in range(nb) if b * BLOCK + i not in drawn_set]
        out += drawn
    return out


def reference_flips(x: torch.Tensor, model, layout: AddressMap, key: int) -> set[int]:
    """The bits an injection flips, from the stream's definition alone: the address map and weak_mask
    for the weak set, the three processes, the thinning hash."""
    n = x.numel() * x.element_size() * 8
    bits = np.unpackbits(x.contiguous().view(-1).view(torch.uint8).numpy(), bitorder="little")
    if isinstance(model, (Wordline, Bitline)):
        bank, row, bit = layout.locate_bits(np.arange(n))
        ids = (bank << 40) | (row << 20) | (bit // model.group_bits) if isinstance(model, Wordline) else (bank << 20) | bit
        weak = np.flatnonzero(weak_mask(model.seed, model.number, ids, model.weak_fraction)).tolist()
        weak_set = set(weak)
        strong = [x for x in reference_process(key, n, min(model.p_strong, 1.0)) if x not in weak_set]
        flips = strong + [weak[r] for r in reference_process(inj_sampler._subkey(key, 1), len(weak),
                                                             min(model.p_weak, 1.0))]
        return set(flips)
    plan_p = max(model.p01, model.p10) if isinstance(model, BitValue) else model.ber
    flips = reference_process(key, n, plan_p)
    if isinstance(model, BitValue):
        keep = (model.p01 / plan_p, model.p10 / plan_p)
        thr = [math.ceil(k * 2.0**53) for k in keep]
        tkey = inj_sampler._subkey(key, 2)
        flips = [x for x in flips if mix64(tkey + GAMMA * x) >> 11 < thr[bits[x]]]
    return set(flips)


def flipped(a: torch.Tensor, b: torch.Tensor) -> set[int]:
    d = a.contiguous().view(-1).view(torch.uint8).numpy() ^ b.contiguous().view(-1).view(torch.uint8).numpy()
    return set(np.flatnonzero(np.unpackbits(d, bitorder="little")).tolist())


def bytes_of(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


def test_kernel_is_built_where_a_compiler_is() -> None:
    """The README's install builds the kernel; CI has a compiler, so a broken build fails here."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the torch sampler is used")
    assert inj.KERNEL == "compiled"


# ------------------------------------------------------------------------------ the stream
@pytest.mark.parametrize("n,p", [(1, 0.5), (2, 0.5), (9, 0.4), (100, 0.05), (65_536, 1e-3), (65_537, 0.2),
                                 (140_001, 3e-4), (140_001, 0.05)])
def test_torch_sampler_follows_the_documented_stream(n: int, p: float) -> None:
    for key in (0, 1, 2**62 - 1, 123_456_789):
        counts = inj_sampler._block_counts_np(n, p, key)
        sizes = [min(BLOCK, n - b * BLOCK) for b in range(counts.size)]
        assert counts.tolist() == [reference_count(key, b, nb, p) for b, nb in enumerate(sizes)]
        want = [pos for b, nb in enumerate(sizes) for pos in reference_block(key, b, nb, int(counts[b]))]
        assert inj_sampler._ranks_torch(n, counts, key, 0, counts.size, CPU).tolist() == want


@pytest.mark.parametrize("model", [Uniform(ber=0.02), Uniform(ber=0.8), BitValue(ber=0.03, zero_share=0.8),
                                   Wordline(ber=0.02, weak_fraction=0.2, ratio=10.0, group_bits=16, seed=3),
                                   Wordline(ber=0.2, weak_fraction=0.3, ratio=3.0, group_bits=2048, seed=1),
                                   Bitline(ber=0.02, weak_fraction=0.1, ratio=20.0, seed=5)],
                         ids=lambda m: f"{m.name}-{m.ber}")
@pytest.mark.parametrize("kernel", [True, False], ids=["compiled", "vectorised"])
def test_injection_follows_the_documented_stream(monkeypatch: pytest.MonkeyPatch, model, kernel: bool) -> None:
    """Every model's flips, rebuilt from the definitions alone (addresses, weak_mask, the processes and
    the thinning hash) for the one key the generator gives, on both implementations."""
    if kernel and inj_sampler._flipkernel is None:
        pytest.skip("compiled kernel not built")
    if not kernel:
        monkeypatch.setattr(inj_sampler, "_flipkernel", None)
    inj_weak.clear_weak_cache()
    x = (torch.randn(20_001, generator=torch.Generator().manual_seed(4)) * 30).to(torch.int8)  # 3 blocks
    layout = AddressMap(interleave="line", bank=2, row=3, offset_bytes=24)
    y, st = inj.inject(x, model, seed=9, layout=layout)
    key = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(9)))
    want = reference_flips(x, model, layout, key)
    assert flipped(x, y) == want and st.bits_flipped == len(want) > 50
    inj_weak.clear_weak_cache()


@needs_kernel
def test_count_tables_and_counts_are_the_same_in_c_and_python() -> None:
    rng = np.random.default_rng(0)
    cases = [(1, 0.5), (2, 1e-9), (65_536, 1e-6), (65_536, 1e-3), (65_536, 0.5), (7, 0.3), (65_535, 0.125)]
    cases += [(int(n), float(q)) for n, q in zip(rng.integers(1, 65_537, 200), rng.random(200) * 0.5)]
    cases += [(int(n), float(0.5 * 10.0 ** -q)) for n, q in zip(rng.integers(1, 65_537, 100), rng.random(100) * 9)]
    for n, q in cases:
        k0, cdf = inj_sampler._flipkernel.cdf_table(n, q)
        k0_py, cdf_py = inj_sampler._cdf_table(n, q)
        assert k0 == k0_py and np.array_equal(np.array(cdf), cdf_py), (n, q)  # the same doubles
        assert cdf_py[-1] == 1.0 and np.all(np.diff(cdf_py) >= 0)
    for n, q in [(10**7, 1e-3), (5 * BLOCK, 0.5), (12_345, 0.2), (1, 0.4), (3 * BLOCK + 1, 1e-7)]:
        for key in (0, 5, 2**62 - 1):
            assert np.array_equal(inj_sampler._block_counts(n, q, key), inj_sampler._block_counts_np(n, q, key))


@pytest.mark.parametrize("n,q", [(BLOCK, 1e-3), (BLOCK, 0.3), (20_000, 0.01), (BLOCK, 2e-5)])
def test_block_counts_are_binomial(n: int, q: float) -> None:
    """The counts of many blocks (one per key) against Binomial(n, q): a chi-square over bins of
    expected mass >= 5, and the mean and variance."""
    counts = np.concatenate([inj_sampler._block_counts_np(n, q, key) for key in range(4000)])
    dist = sps.binom(n, q)
    lo, hi = int(dist.ppf(1e-4)), int(dist.ppf(1 - 1e-4))
    edges = np.arange(lo, hi + 2)
    obs = np.histogram(counts, bins=edges)[0].astype(float)
    exp = np.diff(dist.cdf(edges - 1)) * counts.size
    obs = np.append(obs, counts.size - obs.sum())
    exp = np.append(exp, counts.size - exp.sum())
    keep = exp >= 5  # merge thin bins into the last one
    obs = np.append(obs[keep], obs[~keep].sum())
    exp = np.append(exp[keep], exp[~keep].sum())
    if exp[-1] < 5:
        obs, exp = obs[:-1], exp[:-1]
    assert sps.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4
    assert abs(counts.mean() - n * q) < 5 * math.sqrt(n * q * (1 - q) / counts.size)
    assert 0.85 < counts.var() / (n * q * (1 - q)) < 1.15


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
        lo, hi = BLOCK, (counts.size - 1) * BLOCK
        assert torch.equal(part, full[(full >= lo) & (full < hi)])


def test_torch_sampler_redraws_blocks_that_run_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """With too few words drawn at first, the blocks that ran short are drawn again with more."""
    n, p, key = 200_000, 0.45, 99
    counts = inj_sampler._block_counts(n, p, key)
    want = inj_sampler._ranks_torch(n, counts, key, 0, counts.size, CPU)
    monkeypatch.setattr(inj_sampler, "_WORDS_SLACK", 0.02)
    assert torch.equal(inj_sampler._ranks_torch(n, counts, key, 0, counts.size, CPU), want)


def test_positions_are_uniform_and_counts_binomial() -> None:
    """Over many keys: totals follow Binomial(n, p) and positions spread evenly."""
    n, p = 3 * BLOCK + 5000, 2e-3
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


# ------------------------------------------------------------------ compiled vs vectorised
MODELS = [Uniform(ber=1e-4), Uniform(ber=1e-2), Uniform(ber=0.5), Uniform(ber=0.7), Uniform(ber=1.0),
          BitValue(ber=2e-3), BitValue(ber=0.4, zero_share=0.9), BitValue(ber=0.01, zero_share=1.0),
          Wordline(ber=2e-3, weak_fraction=0.05, ratio=40.0), Wordline(ber=0.02, weak_fraction=0.02, ratio=1e12),
          Wordline(ber=2e-3, group_bits=8, weak_fraction=0.3, ratio=2.0), Wordline(ber=1e-3, group_bits=2048),
          Wordline(ber=0.3, group_bits=1, weak_fraction=0.5, ratio=1.5),
          Bitline(ber=2e-3), Bitline(ber=0.004, weak_fraction=0.002, ratio=400.0),
          Bitline(ber=0.3, weak_fraction=0.3, ratio=3.0)]
LAYOUTS = [None, AddressMap(interleave="line", bank=3, offset_bytes=40),
           AddressMap(interleave="bank", bank=7, row=9, offset_bytes=100), AddressMap(row=5, offset_bytes=3)]


def _both(monkeypatch: pytest.MonkeyPatch, x: torch.Tensor, model, **kw):
    fast, fast_stats = inj.inject(x, model, **kw)
    in_place = x.clone()
    in_place_stats = inj.inject_(in_place, model, **kw)
    with monkeypatch.context() as m:
        m.setattr(inj_sampler, "_flipkernel", None)
        slow, slow_stats = inj.inject(x, model, **kw)
    return fast, fast_stats, in_place, in_place_stats, slow, slow_stats


@needs_kernel
@pytest.mark.parametrize("dtype,dtype_bits", [(torch.float32, None), (torch.float16, None), (torch.bfloat16, None),
                                              (torch.int8, None), (torch.int16, None), (torch.float64, None),
                                              (torch.int32, None), (torch.uint8, 4)])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.name}-{m.ber:g}")
def test_kernel_and_torch_fallback_flip_the_same_bits(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype,
                                                      dtype_bits: int, model) -> None:
    n = 40_999 if model.ber < 0.1 else 3_001  # the vectorised path is slow at high rates
    x = (torch.randn(n, generator=torch.Generator().manual_seed(11)) * 40).to(dtype)
    for layout in LAYOUTS if isinstance(model, (Wordline, Bitline)) else LAYOUTS[:1]:
        fast, st, in_place, st_in_place, slow, st_slow = _both(monkeypatch, x, model, seed=3, dtype_bits=dtype_bits,
                                                               layout=layout)
        assert st == st_in_place == st_slow, layout
        assert torch.equal(bytes_of(fast), bytes_of(slow)) and torch.equal(bytes_of(in_place), bytes_of(fast))
        assert st.bits_flipped == len(flipped(x, fast))


@needs_kernel
@pytest.mark.parametrize("n", [1, 7, 8191, 8193, 100_003])
def test_small_and_odd_sizes(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    x = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    for model in (Uniform(ber=0.05), BitValue(ber=0.05), Wordline(ber=0.05, weak_fraction=0.3, ratio=3.0),
                  Bitline(ber=0.05, weak_fraction=0.3, ratio=3.0)):
        fast, st, in_place, st_in_place, slow, st_slow = _both(monkeypatch, x, model, seed=n,
                                                               layout=AddressMap(offset_bytes=5))
        assert st == st_in_place == st_slow and torch.equal(fast, slow) and torch.equal(in_place, fast)


@needs_kernel
def test_kernel_threads_give_the_same_flips(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(3_000_000, generator=torch.Generator().manual_seed(0))  # 184 blocks: enough work for helpers
    for model in (Uniform(ber=2e-3), BitValue(ber=2e-3), Wordline(ber=2e-3), Bitline(ber=2e-3)):
        monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
        one, st1 = inj.inject(x, model, seed=8)
        monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
        for _ in range(3):  # helpers that join late, or not at all, take fewer chunks
            four, st4 = inj.inject(x, model, seed=8)
            assert torch.equal(bytes_of(one), bytes_of(four)) and st1 == st4
        y = x.clone()
        assert inj.inject_(y, model, seed=8) == st1 and torch.equal(bytes_of(y), bytes_of(one))
    if os.name == "posix":
        assert inj_sampler._flipkernel.pool_workers() >= 3  # the helpers were started


@needs_kernel
def test_weak_sets_built_in_c_and_in_torch_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [(64, AddressMap()), (8, AddressMap(interleave="bank", bank=7, row=9, offset_bytes=100)),
             (2048, AddressMap(interleave="line", bank=3, offset_bytes=40)), (1, AddressMap(offset_bytes=3)),
             (512, AddressMap(interleave="line", banks=3, rows=5, row_bytes=1024, line_bytes=128, bank=2, row=4,
                              offset_bytes=7))]
    for group_bits, amap in cases:
        n_bits = min(400_003 * 8, 8 * (amap.capacity_bytes - amap.start_address))
        inj_weak.clear_weak_cache()
        fast = inj_weak.weak_groups(1, 5, 0.3, group_bits, amap, n_bits, CPU)
        inj_weak.clear_weak_cache()
        monkeypatch.setattr(inj_sampler, "_flipkernel", None)
        slow = inj_weak.weak_groups(1, 5, 0.3, group_bits, amap, n_bits, CPU)
        monkeypatch.undo()
        assert torch.equal(fast.weak_q, slow.weak_q) and (fast.n, fast.head) == (slow.n, slow.head) > (0, -1)
        k = fast.n_pieces
        assert torch.equal(fast.bits[: k // 8], slow.bits[: k // 8])
        if k % 8:
            mask = (1 << (k % 8)) - 1
            assert int(fast.bits[k // 8]) & mask == int(slow.bits[k // 8]) & mask
    inj_weak.clear_weak_cache()


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
    all_ = 1 << 53
    with pytest.raises(ValueError, match="elem_shift"):
        k.inject(dst, None, 7, 1, 0.1, None, 0.0, all_, all_, 1)
    with pytest.raises(ValueError, match="p and p_weak"):
        k.inject(dst, None, 3, 1, 1.5, None, 0.0, all_, all_, 1)
    with pytest.raises(ValueError, match="thresholds"):
        k.inject(dst, None, 3, 1, 0.1, None, 0.0, all_ + 1, all_, 1)
    with pytest.raises(ValueError, match="differ in size"):
        k.inject(dst, np.zeros(99, np.uint8), 3, 1, 0.1, None, 0.0, all_, all_, 1)
    with pytest.raises(ValueError, match="overlap"):
        k.inject(dst, dst, 3, 1, 0.1, None, 0.0, all_, all_, 1)
    with pytest.raises(BufferError):
        k.inject(np.zeros(100, np.uint8).tobytes(), None, 3, 1, 0.1, None, 0.0, all_, all_, 1)  # read-only
    with pytest.raises(ValueError, match="holds 2 positions"):
        k.sample_ranks(np.zeros(2, np.int64), np.array([3], np.int64), 1, 800, 0, 1)
    with pytest.raises(TypeError, match="int64"):
        k.sample_ranks(np.zeros(3, np.int64), np.array([3], np.int32), 1, 800, 0, 1)
    with pytest.raises(ValueError, match="outside"):
        k.sample_ranks(np.zeros(801, np.int64), np.array([801], np.int64), 1, 800, 0, 1)
    with pytest.raises(ValueError, match="block_counts"):
        k.block_counts(np.zeros(1, np.int64), 10, 0.6, 1)
    # weak sets: the tuple the kernel gets is checked (throughout by check_weak, once per set)
    amap = AddressMap(offset_bytes=3)
    weak = inj_weak.weak_groups(1, 0, 0.5, 64, amap, 800, CPU)
    args = weak.kernel_args()
    k.check_weak(args, 800)
    bad_q = args[2].copy()
    bad_q[0] = bad_q[1]
    with pytest.raises(ValueError, match="sorted"):
        k.check_weak(args[:2] + (bad_q,) + args[3:], 800)
    with pytest.raises(ValueError, match="cover"):
        k.check_weak(args, 800_000)
    with pytest.raises(ValueError, match="unknown weak set kind"):
        k.inject(dst, None, 3, 1, 0.1, (7,), 0.5, all_, all_, 1)
    lines = inj_weak.weak_bitlines(2, 0, 0.5, amap, 800, CPU).kernel_args()
    k.check_weak(lines, 800)
    bad_keys = lines[6].copy()
    bad_keys[:] = bad_keys[::-1].copy()
    with pytest.raises(ValueError, match="keys do not"):
        k.check_weak(lines[:6] + (bad_keys,) + lines[7:], 800)
    assert dst.sum() == 0  # nothing written on any error
    inj_weak.clear_weak_cache()


@pytest.mark.parametrize("model", [Wordline(ber=2e-3, weak_fraction=0.05, ratio=40.0), Bitline(ber=2e-3),
                                   BitValue(ber=2e-3)], ids=lambda m: m.name)
def test_other_models_same_flips_with_and_without_kernel(monkeypatch: pytest.MonkeyPatch, model) -> None:
    x = torch.randn(120_000, generator=torch.Generator().manual_seed(2)).to(torch.float16)
    a, sa = inj.inject(x, model, seed=6)
    monkeypatch.setattr(inj_sampler, "_flipkernel", None)
    inj_weak.clear_weak_cache()  # the torch builder this time
    b, sb = inj.inject(x, model, seed=6)
    assert sa == sb and torch.equal(bytes_of(a), bytes_of(b)) and sa.bits_flipped > 0
    inj_weak.clear_weak_cache()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA path: no CUDA device on this machine")
def test_cuda_sampler_matches_cpu() -> None:
    for n, p in [(1000, 0.3), (1_000_003, 1e-3), (5 * BLOCK, 0.5)]:
        counts = inj_sampler._block_counts(n, p, 77)
        cpu = inj_sampler._ranks(n, counts, 77, 0, counts.size, CPU)
        assert torch.equal(inj_sampler._ranks_torch(n, counts, 77, 0, counts.size, torch.device("cuda")).cpu(), cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA path: no CUDA device on this machine")
@pytest.mark.parametrize("model", MODELS[::3], ids=lambda m: f"{m.name}-{m.ber:g}")
def test_cuda_flips_what_the_cpu_flips_for_the_same_key(monkeypatch: pytest.MonkeyPatch, model) -> None:
    """The positions depend only on the key: a CUDA tensor given the CPU's key flips the same bits."""
    x = (torch.randn(70_001, generator=torch.Generator().manual_seed(3)) * 9).to(torch.float16)
    cpu, st = inj.inject(x, model, seed=5, layout=LAYOUTS[1])
    key = inj.tensors._seed_key(CPU, 5)
    monkeypatch.setattr(inj.tensors, "_seed_key", lambda device, seed: key)
    gpu, st_gpu = inj.inject(x.cuda(), model, seed=5, layout=LAYOUTS[1])
    assert st == st_gpu and torch.equal(bytes_of(gpu.cpu()), bytes_of(cpu))


@needs_kernel
@pytest.mark.parametrize("dtype,n", [(torch.int8, 16_800_003), (torch.float32, 4_200_001)])
def test_large_copies_streamed_match_the_fallback(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, n: int) -> None:
    """Above 16 MiB the kernel copies with non-temporal stores, over threads; odd sizes end mid-word."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randint(-128, 128, (n,), generator=gen, dtype=torch.int8) if dtype == torch.int8 else \
        torch.randn(n, generator=gen)
    assert x.numel() * x.element_size() >= inj_sampler._flipkernel.STREAM_MIN_BYTES
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    for model in (Uniform(ber=1e-7), Uniform(ber=1e-3), BitValue(ber=1e-4), Wordline(ber=1e-4)):
        fast, st = inj.inject(x, model, seed=2)
        with monkeypatch.context() as m:
            m.setattr(inj_sampler, "_flipkernel", None)
            slow, st_slow = inj.inject(x, model, seed=2)
        assert st == st_slow and torch.equal(bytes_of(fast), bytes_of(slow))
        n_flipped = int(np.unpackbits(bytes_of(fast).numpy() ^ bytes_of(x).numpy()).sum())
        assert n_flipped == st.bits_flipped


@needs_kernel
@pytest.mark.parametrize("model", [Uniform(ber=0.01), BitValue(ber=0.01), Bitline(ber=0.01)], ids=lambda m: m.name)
def test_in_place_injection_tells_autograd(monkeypatch: pytest.MonkeyPatch, model) -> None:
    """Values saved for backward and then corrupted in place make backward fail, kernel or not."""
    for kernel in (inj_sampler._flipkernel, None):
        monkeypatch.setattr(inj_sampler, "_flipkernel", kernel)
        w = torch.randn(50_000, requires_grad=True)
        loss = (w * w).sum()
        inj.inject_(w, model, seed=1)
        with pytest.raises(RuntimeError, match="inplace operation"):
            loss.backward()


FORK_SCRIPT = """
import os, signal, sys, torch
import errormodels.inject as inj
from errormodels.models import Uniform, Wordline
x = torch.arange(3_000_000, dtype=torch.int32).to(torch.float32)
want, st = inj.inject(x, Uniform(ber=1e-3), seed=1)  # starts the kernel's helper threads
want_w, st_w = inj.inject(x, Wordline(ber=1e-3), seed=1)
pid = os.fork()
if pid == 0:
    code = 4
    try:
        signal.alarm(20)
        got, st2 = inj.inject(x, Uniform(ber=1e-3), seed=1)
        got_w, st2_w = inj.inject(x, Wordline(ber=1e-3), seed=1)
        same = (got.view(torch.int32).numpy() == want.view(torch.int32).numpy()).all()  # numpy: torch's
        same &= (got_w.view(torch.int32).numpy() == want_w.view(torch.int32).numpy()).all()
        code = 0 if st2 == st and st2_w == st_w and same else 3  # OpenMP ops can hang in a forked child
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
    assert out.stdout.strip() == "child status 0", out.stdout

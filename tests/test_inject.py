"""errormodels.layout and errormodels.inject: address mapping, exact sparse bit-flip injection, mitigation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import chdtrc, chdtri  # chi-square survival and its inverse (lighter than scipy.stats)

import errormodels.inject.flip as inj_flip
import errormodels.inject.injector as inj_injector
import errormodels.inject.sampler as inj_sampler
from errormodels.inject import (
    InjectionError,
    InjectionStats,
    calibrate_range,
    clear_weak_cache,
    inject,
    inject_,
    pack_int4,
    unpack_int4,
    weak_mask_torch,
)
from errormodels.layout import AddressMap, LayoutError
from errormodels.models import Bitline, BitValue, Uniform, Wordline, weak_mask

INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
            torch.float64: torch.int64, torch.int32: torch.int32, torch.int16: torch.int16,
            torch.int8: torch.uint8, torch.uint8: torch.uint8}
WIDTH = {torch.float32: 32, torch.float16: 16, torch.bfloat16: 16, torch.float64: 64, torch.int32: 32,
         torch.int16: 16, torch.int8: 8, torch.uint8: 8}


def random_tensor(dtype: torch.dtype, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(n, generator=g).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max + 1, (n,), generator=g, dtype=torch.int64).to(dtype)


def flipped_bits(before: torch.Tensor, after: torch.Tensor) -> np.ndarray:
    """Sorted tensor bit positions (8 * byte + bit, LSB first) where the storages differ."""
    a = before.contiguous().reshape(-1).view(torch.uint8).numpy()
    b = after.contiguous().reshape(-1).view(torch.uint8).numpy()
    return np.flatnonzero(np.unpackbits(a ^ b, bitorder="little"))


def bit_values(t: torch.Tensor) -> np.ndarray:
    return np.unpackbits(t.contiguous().reshape(-1).view(torch.uint8).numpy(), bitorder="little")


# ------------------------------------------------------------------------ layout
def test_layout_row_interleave() -> None:
    m = AddressMap(bank=2, row=32767)
    bank, row, col = m.locate(np.array([0, 8191, 8192, 8192 * 3 + 5]))
    assert bank.tolist() == [2, 2, 3, 3] and row.tolist() == [32767, 32767, 0, 2] and col.tolist() == [0, 8191, 0, 5]
    assert m.start_address == (2 * 32768 + 32767) * 8192


def test_layout_bank_interleave() -> None:
    m = AddressMap(bank=6, row=10, interleave="bank")
    bank, row, col = m.locate(torch.tensor([0, 8192, 16384, 16384 + 8192 * 8 + 7]))
    assert bank.tolist() == [6, 7, 0, 0] and row.tolist() == [10, 10, 11, 12] and col.tolist() == [0, 0, 0, 7]


def test_layout_line_interleave() -> None:
    m = AddressMap(interleave="line", bank=1, row=3)
    off = np.array([0, 63, 64, 64 * 7, 64 * 8, 64 * 8 * 128 - 1, 64 * 8 * 128])
    bank, row, col = m.locate(off)
    assert bank.tolist() == [1, 1, 2, 0, 1, 0, 1]
    # after bank 7 comes bank 0 at the next line slot; after the row's 128th slot, the next row
    assert row.tolist() == [3, 3, 3, 3, 3, 4, 4]
    assert col.tolist() == [0, 63, 0, 64, 64, 63, 0]


@pytest.mark.parametrize("interleave", ["row", "bank", "line"])
def test_layout_is_a_bijection(interleave: str) -> None:
    m = AddressMap(banks=4, rows=8, row_bytes=256, interleave=interleave, line_bytes=16)
    off = np.arange(m.capacity_bytes)
    bank, row, col = m.locate(off)
    cells = (bank * m.rows + row) * m.row_bytes + col
    assert np.array_equal(np.sort(cells), off)  # every cell exactly once
    assert np.array_equal(m.linear_address(bank, row, col), off)
    tb, tr, tc = m.locate(torch.from_numpy(off))  # torch gives the same
    assert np.array_equal(tb.numpy(), bank) and np.array_equal(tr.numpy(), row) and np.array_equal(tc.numpy(), col)
    # bits: LSB first, bit_in_row = byte_in_row * 8 + bit
    pos = np.arange(0, 8 * m.capacity_bytes, 37)
    bb, br, bit = m.locate_bits(pos)
    b2, r2, c2 = m.locate(pos >> 3)
    assert np.array_equal(bb, b2) and np.array_equal(br, r2) and np.array_equal(bit, c2 * 8 + (pos & 7))


def test_layout_fit_errors_and_after() -> None:
    m = AddressMap(banks=2, rows=4, row_bytes=64, bank=1, row=3)
    m.check_fits(64)
    with pytest.raises(LayoutError, match="beyond the DIMM's 512 bytes"):
        m.check_fits(65)
    with pytest.raises(LayoutError, match="outside"):
        m.locate(np.array([64]))
    with pytest.raises(LayoutError, match="interleave must be one of"):
        AddressMap(interleave="column")
    with pytest.raises(LayoutError, match="outside 8 banks"):
        AddressMap(bank=8)
    with pytest.raises(LayoutError, match="beyond the DIMM"):  # a tensor too big for the DIMM, through inject_
        inject_(torch.zeros(600, dtype=torch.uint8), Wordline(ber=1e-3), seed=0,
                layout=AddressMap(banks=2, rows=4, row_bytes=64))
    a = AddressMap(bank=0, row=5)
    b = a.after(100, align_bytes=a.row_bytes)
    assert b.locate(np.array([0]))[1].tolist() == [6] and b.locate(np.array([0]))[2].tolist() == [0]
    assert a.after(100).locate(np.array([0]))[2].tolist() == [100]


def test_weak_mask_torch_matches_numpy() -> None:
    ids = np.random.default_rng(0).integers(0, 1 << 62, 50_000)
    for seed, kind, f in [(0, 1, 0.01), (3, 2, 0.3), (12345, 1, 0.9)]:
        assert np.array_equal(weak_mask(seed, kind, ids, f), weak_mask_torch(seed, kind, torch.from_numpy(ids), f).numpy())


# ----------------------------------------------------------------- bit-exactness
@pytest.mark.parametrize("dtype", list(INT_VIEW))
def test_flip_changes_exactly_that_bit(dtype: torch.dtype) -> None:
    w = WIDTH[dtype]
    x = random_tensor(dtype, 6, seed=1)
    for i in (0, 5):
        for k in range(w):
            y = x.clone()
            inj_flip._Flipper(y.view(-1).view(torch.uint8), int(np.log2(w))).flip(torch.tensor([i * w + k]))
            diff = (x.view(INT_VIEW[dtype]) ^ y.view(INT_VIEW[dtype])).to(torch.int64)
            if w < 64:
                diff &= (1 << w) - 1  # the flipped bits as an unsigned w-bit number
            expect = torch.zeros(6, dtype=torch.int64)
            expect[i] = 1 << k if k < 63 else -(1 << 63)
            assert torch.equal(diff, expect), (dtype, i, k)
    if dtype.is_floating_point:  # the top bit is the sign
        y = x.clone()
        inj_flip._Flipper(y.view(-1).view(torch.uint8), int(np.log2(w))).flip(torch.tensor([w - 1]))
        assert y[0] == -x[0]


@pytest.mark.parametrize("dtype", list(INT_VIEW))
def test_public_injection_is_bit_exact(dtype: torch.dtype) -> None:
    x = random_tensor(dtype, 3000, seed=2)
    y, st = inject(x, Uniform(ber=0.01), seed=5)
    pos = flipped_bits(x, y)
    assert pos.size == st.bits_flipped > 0 and st.bits_total == x.numel() * WIDTH[dtype]
    held = bit_values(x)[pos]
    assert st.flips_1to0 == int(held.sum()) and st.flips_0to1 == int((held == 0).sum())
    assert st.elements_touched == np.unique(pos // WIDTH[dtype]).size
    y, st = inject(x, Uniform(ber=1.0), seed=5)  # every bit
    assert torch.equal(y.view(INT_VIEW[dtype]), ~x.view(INT_VIEW[dtype])) and st.elements_touched == x.numel()


def test_int4_nibbles() -> None:
    vals = torch.tensor([-8, 7, 0, -1, 3, -5], dtype=torch.int8)
    packed = pack_int4(vals)
    assert packed.dtype == torch.uint8 and packed.numel() == 3
    assert torch.equal(unpack_int4(packed), vals)
    assert torch.equal(unpack_int4(packed, signed=False), vals & 0xF)
    for j in range(6):
        for k in range(4):
            y = packed.clone()
            inj_flip._Flipper(y, 2).flip(torch.tensor([4 * j + k]))
            diff = unpack_int4(packed, signed=False) ^ unpack_int4(y, signed=False)
            expect = torch.zeros(6, dtype=torch.int8)
            expect[j] = 1 << k
            assert torch.equal(diff, expect)
    x = torch.randint(0, 256, (5000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y, st = inject(x, Uniform(ber=0.02), seed=1, dtype_bits=4)
    pos = flipped_bits(x, y)
    assert st.elements_total == 10000 and st.bits_flipped == pos.size
    assert st.elements_touched == np.unique(pos // 4).size
    assert st.elements_touched == int((unpack_int4(x) != unpack_int4(y)).sum())


# ---------------------------------------------------------------- statistics
@pytest.mark.parametrize("ber", [1e-3, 3e-2, 0.3, 0.8])
def test_flip_count_is_binomial(ber: float) -> None:
    x = torch.zeros(2000, dtype=torch.float32)
    n = x.numel() * 32
    counts, per_bit, per_range = [], np.zeros(32), np.zeros(16)
    for seed in range(200):
        y, st = inject(x, Uniform(ber=ber), seed=seed)
        pos = flipped_bits(x, y)
        assert pos.size == st.bits_flipped  # K flips change exactly K bits: no duplicates
        counts.append(st.bits_flipped)
        per_bit += np.bincount(pos % 32, minlength=32)
        per_range += np.bincount(pos * 16 // n, minlength=16)
    counts = np.array(counts, dtype=float)
    mean, var = n * ber, n * ber * (1 - ber)
    assert abs(counts.mean() - mean) < 4.5 * np.sqrt(var / counts.size), (counts.mean(), mean)
    # sample variance of 200 draws: var * chi2(199) / 199
    df = counts.size - 1
    lo, hi = chdtri(df, 1 - 1e-4) / df, chdtri(df, 1e-4) / df
    assert lo < counts.var(ddof=1) / var < hi, counts.var(ddof=1) / var
    # positions are uniform: every bit of the word, and every part of the tensor, is hit alike
    for hist in (per_bit, per_range):
        expect = hist.sum() / hist.size
        assert chdtrc(hist.size - 1, ((hist - expect) ** 2 / expect).sum()) > 1e-4


def test_small_chunks_and_complement_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectorised path in chunks of one block (forced) keeps counts exact and positions distinct, and
    flips what the compiled kernel flips; above 1/2 the drawn positions are the ones left alone."""
    x = random_tensor(torch.int16, 13_000, seed=3)  # 208,000 bits: 4 blocks, the last partial
    whole = {}
    for seed in range(3):  # a chunk of every block, then one chunk of all
        for chunk in (64, 1 << 20):
            monkeypatch.setattr(inj_injector, "_CHUNK_CANDIDATES", chunk)
            monkeypatch.setattr(inj_sampler, "_flipkernel", None)
            y, st = inject(x, Uniform(ber=0.6), seed=seed)
            monkeypatch.undo()
            pos = flipped_bits(x, y)
            assert pos.size == st.bits_flipped and st.elements_touched == np.unique(pos // 16).size
            whole.setdefault(seed, []).append(y)
        assert torch.equal(whole[seed][0], whole[seed][1])
    counts = [inject(x, Uniform(ber=0.6), seed=seed)[1].bits_flipped for seed in range(100)]
    n = 208_000
    assert abs(np.mean(counts) - 0.6 * n) < 4.5 * np.sqrt(0.24 * n / 100)
    for model in (Wordline(ber=0.01, weak_fraction=0.1, ratio=20), Bitline(ber=0.01, weak_fraction=0.1, ratio=20),
                  Wordline(ber=0.3, weak_fraction=0.3, ratio=3.0, group_bits=8)):  # p_weak > 1/2
        amap = AddressMap(interleave="line", offset_bytes=24)
        y, st = inject(x, model, seed=1, layout=amap)
        pos = flipped_bits(x, y)
        assert pos.size == st.bits_flipped and st.elements_touched == np.unique(pos // 16).size
        weak = weak_bits(model, amap, x.numel() * 2)
        assert st.weak_bits_total == weak.sum() and st.weak_bits_flipped == weak[pos].sum()
        monkeypatch.setattr(inj_injector, "_CHUNK_CANDIDATES", 64)
        monkeypatch.setattr(inj_sampler, "_flipkernel", None)
        y2, st2 = inject(x, model, seed=1, layout=amap)
        monkeypatch.undo()
        assert st2 == st and torch.equal(y2, y)


def weak_bits(model, layout: AddressMap, n_bytes: int) -> np.ndarray:
    """Which tensor bits are weak, straight from the address map and weak_mask (the reference)."""
    bank, row, bit = layout.locate_bits(np.arange(n_bytes * 8))
    if isinstance(model, Wordline):
        ids = (bank << 40) | (row << 20) | (bit // model.group_bits)
    else:
        ids = (bank << 20) | bit
    return weak_mask(model.seed, model.number, ids, model.weak_fraction)


def weak_share_case(model, layout: AddressMap, n_bytes: int, seed: int):
    x = random_tensor(torch.uint8, n_bytes, seed=seed)
    y, st = inject(x, model, seed=seed, layout=layout)
    pos = flipped_bits(x, y)
    assert pos.size == st.bits_flipped
    return st, weak_bits(model, layout, n_bytes), pos


@pytest.mark.parametrize("interleave", ["row", "line"])
def test_weak_sets_of_small_unaligned_tensors(interleave: str) -> None:
    """Tensors that start and end inside a group: the weak bits are exactly the reference's."""
    for model in (Wordline(ber=0.4, weak_fraction=0.5, ratio=2.0, group_bits=16, seed=3),
                  Wordline(ber=0.4, weak_fraction=0.5, ratio=2.0, group_bits=1024, seed=3),
                  Bitline(ber=0.4, weak_fraction=0.5, ratio=2.0, seed=3)):
        for offset in (0, 1, 3, 61):
            for n_bytes in (1, 5, 130):
                amap = AddressMap(interleave=interleave, offset_bytes=offset, bank=1)
                x = torch.zeros(n_bytes, dtype=torch.uint8)
                y, st = inject(x, model, seed=offset, layout=amap)
                weak = weak_bits(model, amap, n_bytes)
                pos = flipped_bits(x, y)
                assert st.weak_bits_total == weak.sum(), (model, offset, n_bytes)
                assert st.weak_bits_flipped == weak[pos].sum()


CLUSTER_CASES = [
    (Wordline(ber=2e-3, weak_fraction=0.05, ratio=40.0, seed=7), AddressMap()),
    (Wordline(ber=2e-3, weak_fraction=0.05, ratio=40.0, seed=7, group_bits=8),
     AddressMap(interleave="bank", bank=7, row=9, offset_bytes=100)),
    (Wordline(ber=2e-3, weak_fraction=0.05, ratio=40.0, seed=1, group_bits=2048),  # a group spans 4 lines
     AddressMap(interleave="line", bank=3, offset_bytes=40)),
    (Bitline(ber=2e-3, weak_fraction=0.05, ratio=40.0, seed=7), AddressMap(row=100)),
    (Bitline(ber=2e-3, weak_fraction=0.05, ratio=40.0, seed=2), AddressMap(interleave="line", offset_bytes=8)),
    (Bitline(ber=2e-3, weak_fraction=0.05, ratio=40.0, seed=2), AddressMap(interleave="bank", bank=5)),
]


@pytest.mark.parametrize("model,layout", CLUSTER_CASES, ids=lambda v: getattr(v, "name", None) or v.interleave)
def test_clustered_flips_land_in_weak_locations(model, layout: AddressMap) -> None:
    n_bytes = 200_000
    st, weak, pos = weak_share_case(model, layout, n_bytes, seed=3)
    n_weak = int(weak.sum())
    assert st.weak_bits_total == n_weak  # the engine's weak set is the address map + weak_mask
    assert st.weak_bits_flipped == int(weak[pos].sum())
    # flips per set are binomial with p_weak and p_strong
    n_strong = weak.size - n_weak
    k_weak, k_strong = int(weak[pos].sum()), int((~weak[pos]).sum())
    assert abs(k_weak - n_weak * model.p_weak) < 5 * np.sqrt(n_weak * model.p_weak) + 2
    assert abs(k_strong - n_strong * model.p_strong) < 5 * np.sqrt(n_strong * model.p_strong) + 2
    # share of flips in weak locations ~ f ratio / (f ratio + 1 - f)
    f = n_weak / weak.size
    share = f * model.ratio / (f * model.ratio + 1 - f)
    assert abs(k_weak / pos.size - share) < 0.04
    assert 0.03 < f < 0.07


@pytest.mark.parametrize("model", [Wordline(ber=1e-3, weak_fraction=0.05, ratio=10.0, group_bits=256),
                                   Bitline(ber=1e-3, weak_fraction=0.05, ratio=10.0)], ids=lambda m: m.name)
def test_weak_locations_are_a_property_of_the_address(model) -> None:
    """The same bits are weak at any BER, and for a tensor split in two parts placed back to back."""
    amap = AddressMap(interleave="line", bank=2, row=7, offset_bytes=96)
    whole = random_tensor(torch.uint8, 300_000, seed=0)
    _, st1 = inject(whole, model, seed=0, layout=amap)
    _, st2 = inject(whole, model.with_ber(4e-3), seed=1, layout=amap)
    assert st1.weak_bits_total == st2.weak_bits_total > 0
    part = 100_000 + 31  # not on a group or line boundary
    _, a = inject(whole[:part], model, seed=0, layout=amap)
    _, b = inject(whole[part:], model, seed=0, layout=amap.after(part))
    assert a.weak_bits_total + b.weak_bits_total == st1.weak_bits_total


def test_bitline_weak_in_every_row_of_the_bank() -> None:
    model = Bitline(ber=0.004, weak_fraction=0.002, ratio=400.0, seed=4)  # p_weak ~ 0.89, p_strong ~ 0.002
    amap = AddressMap(row=40)
    x = torch.zeros(8192 * 16, dtype=torch.uint8)  # 16 rows of bank 0
    y, st = inject(x, model, seed=0, layout=amap)
    pos = flipped_bits(x, y)
    _, row, bit = amap.locate_bits(pos)
    weak_lines = np.flatnonzero(weak_mask(4, 2, np.arange(65536), 0.002))
    assert weak_lines.size > 20
    hit = np.zeros((16, 65536), bool)
    hit[row - 40, bit] = True
    assert hit[:, weak_lines].mean() > 0.8  # a weak bitline is weak in each row
    assert hit[:, np.setdiff1d(np.arange(65536), weak_lines)].mean() < 0.01


def test_whole_word_flips() -> None:
    """Wordline with p_weak = 1: every bit of every weak group flips."""
    model = Wordline(ber=0.02, weak_fraction=0.02, ratio=1e12, group_bits=64)
    assert model.p_weak == pytest.approx(1.0)
    x = random_tensor(torch.float32, 50_000, seed=1)
    y, st = inject(x, model, seed=0)
    assert st.weak_bits_flipped == st.weak_bits_total > 0
    d = (x.view(torch.int64) ^ y.view(torch.int64))  # 64-bit groups = pairs of float32 (row interleave, base 0)
    assert int((d == -1).sum()) * 64 == st.weak_bits_total
    assert st.bits_flipped == st.weak_bits_total  # p_strong ~ 0


def test_bit_value_directions() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.where(torch.rand(400_000, generator=g) < 0.75, 0, 255).to(torch.uint8)
    n1 = int(x.bool().sum()) * 8
    n0 = x.numel() * 8 - n1
    model = BitValue(ber=0.005, zero_share=2 / 3)
    y, st = inject(x, model, seed=1)
    pos = flipped_bits(x, y)
    held = bit_values(x)[pos]
    assert st.flips_0to1 == int((held == 0).sum()) and st.flips_1to0 == int(held.sum())
    for k, n, p in ((st.flips_0to1, n0, model.p01), (st.flips_1to0, n1, model.p10)):
        assert abs(k - n * p) < 5 * np.sqrt(n * p * (1 - p)), (k, n * p)
    y, st = inject(x, BitValue(ber=0.005, zero_share=1.0), seed=2)  # only bits holding 0 flip
    assert st.flips_1to0 == 0 and st.flips_0to1 > 0
    assert bit_values(x)[flipped_bits(x, y)].sum() == 0


# ---------------------------------------------------------------- mitigation
def test_mitigation_float_zero_and_saturate() -> None:
    vals = [0.5, float("nan"), float("inf"), -float("inf"), 5.0, -5.0, -1.0, 1.0]
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.tensor(vals, dtype=dtype)
        st = inject_(x, Uniform(ber=0.0), seed=0, mitigation="zero", value_range=(-1.0, 1.0))
        assert st.values_mitigated == 5 and st.bits_flipped == 0
        assert x.float().tolist() == [0.5, 0, 0, 0, 0, 0, -1.0, 1.0]
        x = torch.tensor(vals, dtype=dtype)
        st = inject_(x, Uniform(ber=0.0), seed=0, mitigation="saturate", value_range=(-1.0, 1.0))
        assert st.values_mitigated == 5
        assert x.float().tolist() == [0.5, 0, 1.0, -1.0, 1.0, -1.0, -1.0, 1.0]


def test_mitigation_ints_and_int4() -> None:
    x = torch.tensor([-100, -10, 5, 10, 100], dtype=torch.int8)
    st = inject_(x, Uniform(ber=0.0), seed=0, mitigation="saturate", value_range=(-10.5, 10.0))
    assert st.values_mitigated == 2 and x.tolist() == [-10, -10, 5, 10, 10]
    x = torch.tensor([-100, -10, 5, 10, 100], dtype=torch.int16)
    inject_(x, Uniform(ber=0.0), seed=0, mitigation="zero", value_range=(-10, 10))
    assert x.tolist() == [0, -10, 5, 10, 0]
    packed = pack_int4(torch.tensor([-8, 7, 2, -3]))
    st = inject_(packed, Uniform(ber=0.0), seed=0, dtype_bits=4, mitigation="saturate", value_range=(-3, 3))
    assert st.values_mitigated == 2 and unpack_int4(packed).tolist() == [-3, 3, 2, -3]
    packed = pack_int4(torch.tensor([15, 1, 8, 0]))
    st = inject_(packed, Uniform(ber=0.0), seed=0, dtype_bits=4, int4_signed=False, mitigation="zero",
                 value_range=(0, 7))
    assert st.values_mitigated == 2 and unpack_int4(packed, signed=False).tolist() == [0, 1, 0, 0]


def test_mitigation_end_to_end_and_calibration() -> None:
    clean = [random_tensor(torch.float32, 10_000, seed=s) for s in range(3)]
    lo, hi = calibrate_range(clean)
    assert lo == min(float(t.min()) for t in clean) and hi == max(float(t.max()) for t in clean)
    lo2, hi2 = calibrate_range(iter(clean), margin=0.1)
    assert lo2 == pytest.approx(lo - 0.1 * (hi - lo)) and hi2 == pytest.approx(hi + 0.1 * (hi - lo))
    assert calibrate_range(torch.tensor([1.0, float("nan"), -float("inf"), 3.0])) == (1.0, 3.0)
    assert calibrate_range(pack_int4(torch.tensor([-8, 3])), dtype_bits=4) == (-8.0, 3.0)
    raw, _ = inject(clean[0], Uniform(ber=0.01), seed=9)
    bad = int((~((raw >= lo) & (raw <= hi))).sum())
    assert bad > 0
    fixed, st = inject(clean[0], Uniform(ber=0.01), seed=9, mitigation="zero", value_range=(lo, hi))
    assert st.values_mitigated == bad and torch.isfinite(fixed).all()
    assert ((fixed >= lo) & (fixed <= hi)).all()
    kept = (raw >= lo) & (raw <= hi)
    assert torch.equal(fixed[kept], raw[kept]) and (fixed[~kept] == 0).all()


# ---------------------------------------------------------- determinism and API
@pytest.mark.parametrize("model", [Uniform(ber=1e-3), Wordline(ber=1e-3), Bitline(ber=1e-3), BitValue(ber=1e-3)],
                         ids=lambda m: m.name)
def test_same_seed_same_result(model) -> None:
    x = random_tensor(torch.bfloat16, 100_000, seed=4)
    a, sa = inject(x, model, seed=11)
    b, sb = inject(x, model, seed=11)
    clear_weak_cache()
    c, sc = inject(x, model, seed=11, generator=None)
    assert torch.equal(a.view(torch.int16), b.view(torch.int16)) and sa == sb == sc
    assert torch.equal(a.view(torch.int16), c.view(torch.int16))
    d, _ = inject(x, model, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a.view(torch.int16), d.view(torch.int16))
    e, _ = inject(x, model, seed=12)
    assert not torch.equal(a.view(torch.int16), e.view(torch.int16))
    g = torch.Generator().manual_seed(0)
    f1, _ = inject(x, model, generator=g)
    f2, _ = inject(x, model, generator=g)  # the generator advances
    assert not torch.equal(f1.view(torch.int16), f2.view(torch.int16))


def test_in_place_non_contiguous_and_parameters() -> None:
    base = random_tensor(torch.float32, 1000, seed=0).reshape(20, 50)
    x = base.clone()
    view = x.t()
    assert not view.is_contiguous()
    st = inject_(view, Uniform(ber=0.01), seed=3)
    expect, st2 = inject(base.t().contiguous(), Uniform(ber=0.01), seed=3)
    assert st == st2 and torch.equal(x.t().contiguous().view(torch.int32), expect.view(torch.int32))
    p = torch.nn.Parameter(random_tensor(torch.float32, 1000, seed=1))
    before = p.detach().clone()
    st = inject_(p, Uniform(ber=0.01), seed=0)
    assert flipped_bits(before, p.detach()).size == st.bits_flipped > 0


def test_argument_errors() -> None:
    x = torch.zeros(10)
    with pytest.raises(InjectionError, match="exactly one of generator= and seed="):
        inject_(x, Uniform(ber=0.1))
    with pytest.raises(InjectionError, match="exactly one"):
        inject_(x, Uniform(ber=0.1), seed=1, generator=torch.Generator())
    with pytest.raises(InjectionError, match="unsupported dtype"):
        inject_(torch.zeros(10, dtype=torch.int64), Uniform(ber=0.1), seed=1)
    with pytest.raises(InjectionError, match="dtype_bits=4 does not fit"):
        inject_(x, Uniform(ber=0.1), seed=1, dtype_bits=4)
    with pytest.raises(InjectionError, match="go together"):
        inject_(x, Uniform(ber=0.1), seed=1, mitigation="zero")
    with pytest.raises(InjectionError, match="mitigation must be"):
        inject_(x, Uniform(ber=0.1), seed=1, mitigation="clip", value_range=(0, 1))
    with pytest.raises(InjectionError, match="model must be an ErrorModel"):
        inject_(x, "uniform", seed=1)
    with pytest.raises(LayoutError, match="group_bits"):
        inject_(x, Wordline(ber=1e-3, group_bits=128), seed=1, layout=AddressMap(row_bytes=8))
    assert inject_(torch.zeros(0), Uniform(ber=0.5), seed=1) == InjectionStats()
    s = InjectionStats(bits_total=10, bits_flipped=1) + InjectionStats(bits_total=30, bits_flipped=1)
    assert s.bits_total == 40 and s.ber == pytest.approx(0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA path: no CUDA device on this machine")
@pytest.mark.parametrize("model", [Uniform(ber=1e-3), Wordline(ber=1e-3), Bitline(ber=1e-3), BitValue(ber=1e-3)],
                         ids=lambda m: m.name)
def test_cuda_path(model) -> None:
    x = random_tensor(torch.float16, 200_000, seed=4).cuda()
    y, st = inject(x, model, seed=3, layout=AddressMap(interleave="line", bank=2))
    assert y.device == x.device
    y2, st2 = inject(x, model, generator=torch.Generator(device=x.device).manual_seed(3),
                     layout=AddressMap(interleave="line", bank=2))
    assert st == st2 and torch.equal(y.view(torch.int16), y2.view(torch.int16))
    pos = flipped_bits(x.cpu(), y.cpu())
    assert pos.size == st.bits_flipped > 0
    held = bit_values(x.cpu())[pos]
    assert st.flips_1to0 == int(held.sum())
    assert st.elements_touched == np.unique(pos // 16).size
    with pytest.raises(InjectionError, match="generator is on cpu"):
        inject_(x, model, generator=torch.Generator())
    ids = np.random.default_rng(0).integers(0, 1 << 62, 10_000)
    assert np.array_equal(weak_mask(1, 2, ids, 0.2), weak_mask_torch(1, 2, torch.from_numpy(ids).cuda(), 0.2).cpu().numpy())


def test_mitigate_alone_zeroes_or_saturates_out_of_range_values() -> None:
    from errormodels.inject import mitigate_

    x = torch.tensor([0.5, float("nan"), 3.0, -4.0, float("inf")])
    z = x.clone()
    assert mitigate_(z, "zero", (-1.0, 1.0)) == 4
    assert z.tolist() == [0.5, 0.0, 0.0, 0.0, 0.0]
    s = x.clone()
    assert mitigate_(s, "saturate", (-1.0, 1.0)) == 4
    assert s.tolist() == [0.5, 0.0, 1.0, -1.0, 1.0]
    packed = pack_int4(torch.tensor([-8, 7, 3, -2], dtype=torch.int8))
    assert mitigate_(packed, "zero", (-4, 4), dtype_bits=4) == 2  # -8 and 7
    assert unpack_int4(packed).tolist() == [0, 0, 3, -2]
    with pytest.raises(InjectionError, match="mitigation must be"):
        mitigate_(x.clone(), "clip", (-1.0, 1.0))

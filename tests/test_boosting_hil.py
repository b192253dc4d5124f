"""Hardware-in-the-loop inference: tensors round-trip through a row memory (a fake and the emulated bench)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from boosting.hil import HilError, HilInjector, hil_evaluate, placements_from_config, roundtrip
from boosting.inference import calibrate, evaluate
from errormodels.layout import AddressMap
from conftest import lenet_from


class FakeMemory:
    """Rows in a dict; reads flip the bits of ``flip_mask`` (per byte of a row) in chosen banks."""

    def __init__(self, row_bytes: int = 8192, flip_banks: tuple[int, ...] = (), flip_mask: int = 0) -> None:
        self.row_bytes = row_bytes
        self.rows: dict[tuple[int, int], np.ndarray] = {}
        self.flip_banks = flip_banks
        self.flip_mask = flip_mask
        self.reads: list[tuple[tuple[int, int], dict]] = []
        self.noise_seeds: list[int] = []

    def write_rows(self, rows, data, timing=None) -> None:
        for key, d in zip(rows, data):
            self.rows[tuple(key)] = np.asarray(d, dtype=np.uint8).copy()

    def read_rows(self, rows, timing=None, per_burst_activate=False) -> np.ndarray:
        out = []
        for key in rows:
            self.reads.append((tuple(key), {"timing": timing, "per_burst_activate": per_burst_activate}))
            row = self.rows[tuple(key)].copy()
            if key[0] in self.flip_banks:
                row ^= np.uint8(self.flip_mask)
            out.append(row)
        return np.stack(out)

    def seed_noise(self, seed: int) -> bool:
        self.noise_seeds.append(seed)
        return True


@pytest.fixture(scope="module")
def digits(lenet_digits_state: tuple) -> tuple:
    state, train, test = lenet_digits_state
    return state, Subset(test, range(96))


def test_roundtrip_places_bytes_at_their_rows_and_reads_per_bank_options() -> None:
    mem = FakeMemory(row_bytes=64)
    amap = AddressMap(banks=4, rows=16, row_bytes=64, bank=1, row=3, interleave="bank")
    data = np.arange(200, dtype=np.uint8)
    back = roundtrip(mem, data, amap, {2: {"timing": "fast", "per_burst_activate": True}})
    assert np.array_equal(back, data)
    # bank interleave: 64-byte chunks rotate over banks 1, 2, 3, then row 4 of bank 0
    assert set(mem.rows) == {(1, 3), (2, 3), (3, 3), (0, 4)}
    assert np.array_equal(mem.rows[(2, 3)], np.arange(64, 128, dtype=np.uint8))
    assert mem.rows[(0, 4)][8:].sum() == 0  # bytes the tensor does not own are zero
    opts = dict(mem.reads)
    assert opts[(2, 3)] == {"timing": "fast", "per_burst_activate": True}
    assert opts[(1, 3)] == {"timing": None, "per_burst_activate": False}


def test_roundtrip_geometry_mismatch_is_one_line_error() -> None:
    with pytest.raises(HilError, match="8192 B but the tester's rows are 64 B"):
        roundtrip(FakeMemory(row_bytes=64), np.zeros(10, np.uint8), AddressMap())


def test_clean_memory_gives_the_quantized_accuracy_and_counts_no_flips(digits) -> None:
    state, test = digits
    net = lenet_from(state)
    loader = DataLoader(test, batch_size=48)
    cal = calibrate(net, loader, "int8")
    result, stats = hil_evaluate(net, loader, FakeMemory(), fmt="int8", calibration=cal, repeats=(0, 1))
    from boosting.inference import ErrorSpec
    from errormodels.models import get_model

    sim = evaluate(net, loader, ErrorSpec(get_model("uniform", ber=0.0), fmt="int8"), seeds=(0,), calibration=cal)
    assert result.per_seed == (sim.mean, sim.mean)
    layers = {n for n, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert {k for k, _ in stats} == layers
    assert all(s.bits_flipped == 0 and s.bits_total > 0 for s in stats.values())


def test_flips_in_one_bank_hit_only_the_tensors_placed_there(digits) -> None:
    state, test = digits
    net = lenet_from(state)
    loader = DataLoader(test, batch_size=96)
    fc1, conv1, conv2 = "classifier.1", "features.0", "features.3"
    placements = {(fc1, "weight"): AddressMap(bank=5, row=10), (conv1, "ifm"): AddressMap(bank=5, row=40)}
    mem = FakeMemory(flip_banks=(5,), flip_mask=0x80)  # the sign bit of every int8 value
    with HilInjector(net, mem, fmt="int8", placements=placements) as inj:
        inj.reseed(0)
        with torch.no_grad():
            net(next(iter(loader))[0])
    n_fc1 = dict(net.named_modules())[fc1].weight.numel()
    assert inj.stats[(fc1, "weight")].bits_flipped == n_fc1  # one sign bit per int8 code
    assert inj.stats[(conv1, "ifm")].bits_flipped == inj.stats[(conv1, "ifm")].bits_total // 8
    assert inj.stats[(conv2, "weight")].bits_flipped == 0
    assert inj.stats[(conv2, "ifm")].bits_flipped == 0
    assert {r[0][0] for r in mem.reads} >= {0, 5}


def test_reseed_shifts_rows_and_restarts_noise() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    mem = FakeMemory()
    with HilInjector(net, mem, fmt="int8", shift_rows=7) as inj:
        for i in (0, 2):
            inj.reseed(i)
            with torch.no_grad():
                net(torch.ones(1, 4))
    rows = [r for (r, _) in mem.reads]
    assert (0, 0) in rows and (0, 14) in rows
    assert mem.noise_seeds == [0, 2]


def _config() -> dict:
    """A minimal valid DRAM configuration: fc1's weight at bank 3, row 12."""
    setting = {"vdd_v": 1.35, "trcd_ns": 13.75, "trp_ns": 13.75}
    return {"format": "eden-dram-config", "format_version": 1, "mode": "power", "granularity": "fine",
            "nominal": setting, "geometry": {"banks": 8, "rows": 32768, "row_bytes": 8192}, "capacity_rows": None,
            "partitions": [{"label": "bank3", "bank": 3, "rows": [0, 32767], **setting, "predicted_ber": 0.0,
                            "capacity_bytes": 32768 * 8192, "used_bytes": 8192}],
            "tensors": [{"layer": "fc1", "kind": "weight", "n_bytes": 100, "tolerable_ber": 1e-4, "partition": "bank3",
                         "bank": 3, "row": 12, "n_rows": 1, "offset_bytes": 0, "predicted_ber": 0.0, "margin": None}],
            "savings": {"vdd_reduction_v": 0.0, "trcd_reduction_ns": 0.0, "trp_reduction_ns": 0.0}, "source": {}}


def test_placements_from_config_and_bad_config() -> None:
    from boosting.map import placements

    cfg = _config()
    p = placements_from_config(cfg)
    assert p[("fc1", "weight")].bank == 3 and p[("fc1", "weight")].row == 12
    assert p == placements(cfg)  # one reader of a configuration's addresses
    with pytest.raises(HilError, match="not an eden-dram-config document"):
        placements_from_config({"tensors": []})
    bad = _config()
    bad["tensors"][0]["row"] = "12"
    with pytest.raises(HilError, match=r"tensors\[0\]\.row: expected int, got '12'"):
        placements_from_config(bad)
    net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.raises(HilError, match="unknown layer"):
        HilInjector(net, FakeMemory(), placements=p)


def test_emulated_bench_nominal_is_exact_and_low_vdd_flips(digits) -> None:
    from softmc_host.bench import Bench

    state, test = digits
    net = lenet_from(state)
    loader = DataLoader(test, batch_size=96)
    cal = calibrate(net, loader, "int8")
    with Bench.open("emu://B?seed=1") as bench:
        nominal, st0 = hil_evaluate(net, loader, bench.tester, calibration=cal, repeats=(0,))
        bench.set_vdd(1.025)
        low, st1 = hil_evaluate(net, loader, bench.tester, calibration=cal, mitigation="zero", repeats=(0,))
    clean_int8 = evaluate(net, loader, None).mean
    assert sum(s.bits_flipped for s in st0.values()) == 0
    assert abs(nominal.mean - clean_int8) <= 0.03
    flips = sum(s.bits_flipped for s in st1.values())
    assert flips > 100
    assert sum(s.flips_0to1 + s.flips_1to0 for s in st1.values()) == flips

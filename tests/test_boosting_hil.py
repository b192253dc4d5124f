"""Hardware-in-the-loop inference: tensors round-trip through a row memory (a fake and the emulated bench)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from boosting.hil import HilError, HilInjector, hil_evaluate, placements_from_config, roundtrip
from boosting.inference import ErrorInjector, ErrorSpec, calibrate, evaluate
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


class RecordingMemory:
    """Passes every call to ``memory`` and keeps, per (bank, row), the last bytes written and read back."""

    def __init__(self, memory) -> None:
        self.memory = memory
        self.row_bytes = memory.row_bytes
        self.written: dict[tuple[int, int], np.ndarray] = {}
        self.read: dict[tuple[int, int], np.ndarray] = {}

    def write_rows(self, rows, data, timing=None) -> None:
        for key, d in zip(rows, data):
            self.written[(int(key[0]), int(key[1]))] = np.array(d, dtype=np.uint8)
        self.memory.write_rows(rows, data, timing)

    def read_rows(self, rows, timing=None, per_burst_activate=False) -> np.ndarray:
        back = self.memory.read_rows(rows, timing, per_burst_activate)
        for key, row in zip(rows, back):
            self.read[(int(key[0]), int(key[1]))] = np.array(row, dtype=np.uint8)
        return back

    def seed_noise(self, seed: int) -> bool:
        return self.memory.seed_noise(seed)


def _tensor_bytes(rows: dict, amap: AddressMap, n_bytes: int) -> np.ndarray:
    """The ``n_bytes`` bytes of a tensor placed at ``amap``, gathered from recorded whole rows."""
    bank, row, col = amap.locate(np.arange(n_bytes, dtype=np.int64))
    return np.array([rows[(int(b), int(r))][int(c)] for b, r, c in zip(bank, row, col)], dtype=np.uint8)


def _int8_values(codes: np.ndarray, amax: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Dequantized int8 codes with the per-tensor symmetric scale ``max|x| / 127`` (float32)."""
    scale = np.float32(float(amax) / np.float32(127.0))
    return torch.from_numpy(codes.view(np.int8).astype(np.float32) * scale).reshape(shape)


def test_forward_pass_uses_the_bytes_read_back_from_the_emulated_dimm(digits) -> None:
    """At a failing VDD the last layer's weight and input are the read-back codes, and so are the logits."""
    from softmc_host.bench import Bench

    state, test = digits
    net = lenet_from(state).eval()
    x = next(iter(DataLoader(test, batch_size=96)))[0]
    name = "classifier.5"
    layer = dict(net.named_modules())[name]
    w_map, x_map = AddressMap(bank=3, row=100), AddressMap(bank=3, row=110)
    placements = {(name, "weight"): w_map, (name, "ifm"): x_map}
    clean_in: list[torch.Tensor] = []
    used_in: list[torch.Tensor] = []
    pre = layer.register_forward_pre_hook(lambda m, a: clean_in.append(a[0].detach().clone()))  # runs before the injector's
    logits = {}
    try:
        with Bench.open("emu://B?seed=1") as bench:
            for vdd_v in (1.35, 1.025):
                bench.set_vdd(vdd_v)
                mem = RecordingMemory(bench.tester)
                clean_in.clear()
                with torch.no_grad(), HilInjector(net, mem, fmt="int8", placements=placements) as inj:
                    inj.reseed(0)
                    post = layer.register_forward_hook(lambda m, a, out: used_in.append(a[0].detach().clone()))
                    logits[vdd_v] = net(x)
                    post.remove()
                    w_used = layer.weight.detach().clone()  # the parametrized weight: what the layer computes with
    finally:
        pre.remove()
    w_clean = layer.weight.detach()
    n_w, n_x = w_clean.numel(), used_in[-1].numel()
    w_back = _tensor_bytes(mem.read, w_map, n_w)
    x_back = _tensor_bytes(mem.read, x_map, n_x)
    # the failing setting flips bits of both tensors: what came back is not what was written
    assert np.count_nonzero(w_back != _tensor_bytes(mem.written, w_map, n_w)) > 0
    assert np.count_nonzero(x_back != _tensor_bytes(mem.written, x_map, n_x)) > 0
    assert inj.stats[(name, "weight")].bits_flipped == int(np.unpackbits(
        w_back ^ _tensor_bytes(mem.written, w_map, n_w)).sum())
    # the layer computes with exactly the read-back codes (weight and input feature map)
    w_expect = _int8_values(w_back, w_clean.abs().max(), w_clean.shape)
    x_expect = _int8_values(x_back, clean_in[-1].abs().max(), used_in[-1].shape)
    assert torch.equal(w_used, w_expect)
    assert torch.equal(used_in[-1], x_expect)
    torch.testing.assert_close(logits[1.025], torch.nn.functional.linear(x_expect, w_expect, layer.bias))
    # and the flips reach the output: the logits differ from the clean (nominal) run
    assert not torch.equal(logits[1.025], logits[1.35])


def test_emulated_bench_nominal_is_exact_and_low_vdd_flips(digits) -> None:
    from errormodels.models import get_model
    from softmc_host.bench import Bench

    state, test = digits
    net = lenet_from(state)
    loader = DataLoader(test, batch_size=96)
    x = next(iter(loader))[0]
    cal = calibrate(net, loader, "int8")
    with Bench.open("emu://B?seed=1") as bench:
        nominal, st0 = hil_evaluate(net, loader, bench.tester, calibration=cal, repeats=(0,))
        with torch.no_grad(), HilInjector(net, bench.tester, fmt="int8", calibration=cal) as inj:
            inj.reseed(0)
            logits_nominal = net(x)
        bench.set_vdd(1.025)
        low, st1 = hil_evaluate(net, loader, bench.tester, calibration=cal, mitigation="zero", repeats=(0,))
        with torch.no_grad(), HilInjector(net, bench.tester, fmt="int8", mitigation="zero", calibration=cal) as inj:
            inj.reseed(0)
            logits_low = net(x)
    # nominal VDD: exactly the simulator's int8 result at BER 0 (not the fp32 accuracy)
    int8 = ErrorSpec(get_model("uniform", ber=0.0), fmt="int8")
    sim = evaluate(net, loader, int8, seeds=(0,), calibration=cal)
    with torch.no_grad(), ErrorInjector(net, int8, cal) as sim_inj:
        sim_inj.reseed(0)
        logits_sim = net(x)
    assert sum(s.bits_flipped for s in st0.values()) == 0
    assert nominal.per_seed == (sim.mean,)
    assert torch.equal(logits_nominal, logits_sim)
    # low VDD: flips, counted both ways, and they change what the network computes
    flips = sum(s.bits_flipped for s in st1.values())
    assert flips > 100
    assert sum(s.flips_0to1 + s.flips_1to0 for s in st1.values()) == flips
    assert not torch.equal(logits_low, logits_nominal)
    assert (logits_low.argmax(1) != logits_nominal.argmax(1)).any()
    assert low.mean < nominal.mean - 0.5  # observed: 0.917 at 1.35 V, 0.021 at 1.025 V (seed 1)

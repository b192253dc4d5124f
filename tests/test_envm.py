"""MLC eNVM cells (errormodels.envm, model 4 ``mlc``): confusion from level distributions, faults per cell."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from errormodels.envm import MLC, bit_error_rate, level_confusion, level_patterns
from errormodels.inject import inject, inject_
from errormodels.models import ModelError, get_model, model_from_dict


def test_confusion_is_the_gaussian_mass_in_each_read_bin() -> None:
    sigma, rel = 0.08, (1.0, 1.6, 1.3, 0.7)
    conf = level_confusion(2, sigma, rel)
    means, edges = np.linspace(0, 1, 4), [-np.inf, 1 / 6, 1 / 2, 5 / 6, np.inf]
    for lvl in range(4):
        s = sigma * rel[lvl]
        for k in range(4):
            lo, hi = max(edges[k], means[lvl] - 12 * s), min(edges[k + 1], means[lvl] + 12 * s)
            mass = integrate.quad(norm.pdf, lo, hi, args=(means[lvl], s), epsabs=1e-14)[0] if lo < hi else 0.0
            assert conf[lvl, k] == pytest.approx(mass, rel=1e-6, abs=1e-14)
    assert np.allclose(conf.sum(axis=1), 1.0)
    # tiny tails keep their precision: the far bin of SLC at a small sigma
    assert level_confusion(1, 0.02)[0, 1] == pytest.approx(norm.sf(0.5 / 0.02), rel=1e-9)


def test_more_levels_in_the_same_window_fault_more() -> None:
    rates = [1 - np.trace(level_confusion(b, 0.05)) / (1 << b) for b in (1, 2, 3)]
    assert rates[0] < rates[1] < rates[2]
    conf = level_confusion(3, 0.05)
    assert conf[3, 4] > 1e3 * conf[3, 5]  # a neighbouring level is by far the likeliest fault


@pytest.mark.parametrize("bits, code", [(1, "gray"), (2, "gray"), (2, "binary"), (3, "gray"), (3, "binary")])
def test_sigma_is_solved_for_the_ber(bits: int, code: str) -> None:
    model = get_model("mlc", ber=2e-3, bits_per_cell=bits, code=code)
    assert bit_error_rate(model.confusion(), level_patterns(bits, code)) == pytest.approx(2e-3, rel=1e-8)
    assert MLC.from_sigma(model.sigma, bits, code).ber == pytest.approx(2e-3, rel=1e-8)
    assert get_model("mlc", ber=1e-4, bits_per_cell=bits, code=code).sigma < model.sigma


def _cells(t: torch.Tensor, bits: int) -> np.ndarray:
    flat = np.unpackbits(t.numpy().view(np.uint8), bitorder="little")
    n = len(flat) // bits * bits
    return (flat[:n].reshape(-1, bits) << np.arange(bits)).sum(1)


@pytest.mark.parametrize("bits", [2, 3])
def test_injection_hits_cells_with_their_level_confusion(bits: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (600_000,), dtype=torch.uint8, generator=g)
    for code in ("gray", "binary"):
        model = get_model("mlc", ber=5e-3, bits_per_cell=bits, code=code)
        y, stats = inject(x, model, seed=7)
        old, new = _cells(x, bits), _cells(y, bits)
        patterns = np.array(level_patterns(bits, code))
        decode = np.argsort(patterns)
        lo, ln = decode[old], decode[new]
        faulty = lo != ln
        # every changed bit lies in a faulty cell, and the cell took another level's whole pattern
        assert stats.bits_flipped == int(np.unpackbits((x ^ y).numpy()).sum())
        flips_per_cell = np.array([bin(v).count("1") for v in range(1 << bits)])[old ^ new]
        assert flips_per_cell[~faulty].sum() == 0
        conf = model.confusion()
        for lvl in range(1 << bits):  # per stored level: faults and where they went, within 5 sd of the expectation
            at = lo == lvl
            n = int(at.sum())
            for k in range(1 << bits):
                if k == lvl:
                    continue
                expected = n * conf[lvl, k]
                got = int((ln[at] == k).sum())
                assert abs(got - expected) <= 5 * math.sqrt(expected) + 2, (code, lvl, k, got, expected)
        if code == "gray":  # neighbours differ in one bit: every fault flips one bit
            assert flips_per_cell[faulty].max() == 1
        else:
            assert flips_per_cell[faulty].max() >= 2  # 01 -> 10 flips both bits of a cell
        assert stats.bits_flipped / stats.bits_total == pytest.approx(5e-3, rel=0.05)


def test_injection_is_seeded_and_in_bounds() -> None:
    model = get_model("mlc", ber=0.05, bits_per_cell=3)
    x = torch.arange(7, dtype=torch.uint8)  # 56 bits: the last cell has one missing bit
    a, _ = inject(x, model, seed=3)
    b, _ = inject(x, model, seed=3)
    c, _ = inject(x, model, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    inplace = x.clone()
    inject_(inplace, model, seed=3)
    assert torch.equal(inplace, a)
    f = torch.randn(1000)
    out, st = inject(f, get_model("mlc", ber=0.0, bits_per_cell=2), seed=1)
    assert torch.equal(out, f) and st.bits_flipped == 0
    half = torch.randn(999, dtype=torch.float16)  # any dtype: its storage bits form the cells
    assert inject(half, model, seed=1)[1].bits_flipped > 0


@pytest.mark.parametrize("params, message", [
    ({"bits_per_cell": 5}, "bits_per_cell must be an integer in 1..4"),
    ({"bits_per_cell": True}, "bits_per_cell must be an integer"),
    ({"code": "hamming"}, "code must be one of gray, binary"),
    ({"ber": 0.3}, "ber must be at most 0.25"),
    ({"level_sigma": [1, 2]}, "level_sigma must hold 4 finite values > 0"),
    ({"level_sigma": "x"}, "level_sigma must be a list of numbers"),
])
def test_bad_parameters_are_one_line(params: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        get_model("mlc", **params)


def test_registry_round_trip() -> None:
    model = get_model(4, ber=1e-3, bits_per_cell=3, level_sigma=[1, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1])
    assert isinstance(model, MLC) and model.name == "mlc"
    assert model_from_dict(model.to_dict()) == model
    assert model.with_ber(1e-4).bits_per_cell == 3 and model.with_ber(1e-4).sigma < model.sigma


def test_a_network_on_mlc_cells(lenet_digits_state) -> None:
    """The same error-injecting inference runs on eNVM cells: no faults at ber 0, fewer correct at a high ber,
    and MLC3 at one cell variation faults more than SLC at the same variation."""
    from torch.utils.data import DataLoader

    from boosting.inference import ErrorSpec, evaluate
    from conftest import lenet_from

    state, _, test = lenet_digits_state
    x, y = test.tensors
    loader = DataLoader(torch.utils.data.TensorDataset(x[:120], y[:120]), batch_size=120)
    net = lenet_from(state)
    clean = evaluate(net, loader, ErrorSpec(get_model("uniform", ber=0.0), fmt="int8"), seeds=(0,)).mean
    assert evaluate(net, loader, ErrorSpec(get_model("mlc", ber=0.0), fmt="int8"), seeds=(0,)).mean == clean
    hit = evaluate(net, loader, ErrorSpec(get_model("mlc", ber=0.05, bits_per_cell=3), fmt="int8"), seeds=(0, 1)).mean
    assert hit < clean - 0.1
    slc, mlc3 = MLC.from_sigma(0.08, 1), MLC.from_sigma(0.08, 3)
    assert mlc3.ber > 100 * slc.ber  # denser cells, same device: far more errors


def test_the_characterize_command_searches_mlc_cells(lenet_digits_state, tmp_path, capsys) -> None:
    import json

    from boosting.characterize import main
    from conftest import save_lenet_file

    state, _, _ = lenet_digits_state
    net = save_lenet_file(state, tmp_path / "lenet.pt")
    out = tmp_path / "tol.json"
    argv = ["--network-file", str(net), "--error-model", "mlc", "--model-param", "bits_per_cell=3",
            "--model-param", "code=binary", "--fmt", "int8", "--search", "coarse", "--seeds", "0,1",
            "--holdout-seeds", "0", "--curve-seeds", "0", "--samples", "60", "--tol", "1", "--ber-min", "1e-5",
            "--max-drop", "0.05", "--workers", "0", "--no-plot", "-q", "-o", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["coarse"]["found"] and 1e-5 <= doc["coarse"]["ber"] <= 0.25
    assert main([*argv[:5], "bits_per_cell=7", *argv[6:]]) == 2
    assert "bits_per_cell must be an integer in 1..4" in capsys.readouterr().err

"""Analog PIM noise: output noise of the stated size, ADC levels, seeded, and the tolerable-noise command."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from boosting.pim import AnalogPIM, PimError, calibrate_outputs, evaluate_pim, main, tolerable_noise


def _linear_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64)).eval()


def test_output_noise_has_the_stated_size_and_the_adc_its_levels() -> None:
    net = _linear_net()
    x = torch.randn(512, 16, generator=torch.Generator().manual_seed(1))
    ranges = calibrate_outputs(net, [(x, None)])
    lo, hi = ranges["0"]
    clean = net(x).detach()
    assert lo == pytest.approx(float(clean.min())) and hi == pytest.approx(float(clean.max()))
    with AnalogPIM(net, ranges, noise=0.02, adc_bits=0, seed=3):
        noisy = net(x).detach()
    err = noisy - clean
    assert float(err.std()) == pytest.approx(0.02 * (hi - lo), rel=0.03) and abs(float(err.mean())) < 0.002 * (hi - lo)
    with AnalogPIM(net, ranges, noise=0.0, adc_bits=3, seed=3):
        q = net(x).detach()
    levels = torch.unique(q)
    assert len(levels) <= 8 and float(q.min()) >= lo - 1e-6 and float(q.max()) <= hi + 1e-6
    assert float((q - clean).abs().max()) <= (hi - lo) / 7 / 2 + 1e-5  # within half a step
    assert torch.equal(net(x).detach(), clean)  # hooks removed on exit
    with AnalogPIM(net, ranges, noise=0.05, adc_bits=0, seed=9):
        a = net(x).detach()
    with AnalogPIM(net, ranges, noise=0.05, adc_bits=0, seed=9):
        b = net(x).detach()
    assert torch.equal(a, b)


def test_a_network_degrades_with_noise_and_coarse_adcs(lenet_digits_state) -> None:
    from boosting.data import iter_batches
    from boosting.inference import evaluate
    from conftest import lenet_from

    state, train, test = lenet_digits_state
    net = lenet_from(state)
    loader = iter_batches(test, 512)
    ranges = calibrate_outputs(net, iter_batches(train, 512))
    clean = evaluate(net, loader).mean
    fine = evaluate_pim(net, loader, ranges, noise=0.0, adc_bits=16, seeds=(0,))
    assert abs(fine.mean - clean) <= 1 / 360
    loud = evaluate_pim(net, loader, ranges, noise=0.2, adc_bits=0, seeds=(0, 1))
    assert loud.mean < clean - 0.2
    coarse = evaluate_pim(net, loader, ranges, noise=0.0, adc_bits=2, seeds=(0,))
    assert coarse.mean < clean - 0.05
    tol = tolerable_noise(net, loader, ranges, goal=clean - 0.02, adc_bits=8, seeds=(0, 1), tol=0.5)
    assert tol["status"] == "found" and 1e-4 < tol["noise"] < 0.2
    with pytest.raises(PimError, match="noise must be a finite number"):
        evaluate_pim(net, loader, ranges, noise=-1.0, adc_bits=8)


def test_the_pim_command(lenet_digits_state, tmp_path, capsys) -> None:
    from conftest import save_lenet_file

    state, _, _ = lenet_digits_state
    net = save_lenet_file(state, tmp_path / "lenet.pt")
    out = tmp_path / "pim.json"
    assert main(["--network-file", str(net), "--adc-bits", "0,2", "--seeds", "0", "--max-drop", "0.03",
                 "--noise-max", "0.3", "-q", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["adc"]["0"]["status"] == "found" and doc["adc"]["2"]["status"] == "below-range"
    assert "tolerable noise" in capsys.readouterr().out
    assert main(["--network-file", str(tmp_path / "nope.pt"), "-q"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--network-file", str(net), "--adc-bits", "40"])
    assert "ADC bits must be integers in 0..24" in capsys.readouterr().err

"""Robust asymmetric unsigned quantization (uint8, uint4; Stutz et al., MLSys 2021) in boosting.quant and its use
by the injector: round trip, range, stored bits, straight-through gradient, calibration, mitigation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from boosting.inference import ErrorInjector, ErrorSpec, calibrate, evaluate
from boosting.quant import (
    FakeQuant,
    QuantError,
    compute_qparams,
    compute_scale,
    dequantize,
    fake_quantize,
    get_format,
    quantize,
    storage,
)
from errormodels.inject import inject_
from errormodels.models import Uniform, get_model

UFORMATS = ("uint8", "uint4")


@pytest.mark.parametrize("fmt", UFORMATS)
@pytest.mark.parametrize("shape", [(1,), (7,), (4, 5, 3), (2, 3, 5, 5)])
def test_round_trip_within_half_a_step(fmt: str, shape: tuple) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(len(shape))) * 3 + 1
    q = quantize(x, fmt)
    f = get_format(fmt)
    assert f.unsigned and f.int_range == (0, f.qmax) and q.data.dtype == torch.uint8
    assert q.data.shape == (((x.numel() + 1) // 2,) if fmt == "uint4" else x.shape)
    lo, hi = float(x.min()), float(x.max())
    if x.numel() > 1:
        assert q.offset == lo and q.scale == pytest.approx((hi - lo) / f.qmax, rel=1e-6)
        assert (q.scale, q.offset) == compute_qparams(x, fmt) and q.scale == compute_scale(x, fmt)
    codes = q.int_values()
    assert codes.shape == x.shape and int(codes.min()) == 0
    assert int(codes.max()) == (f.qmax if x.numel() > 1 else 0)  # min -> code 0, max -> qmax
    back = dequantize(q)
    assert back.shape == x.shape and back.dtype == torch.float32
    assert float((back - x).abs().max()) <= q.scale / 2 * (1 + 1e-5) + 1e-6


def test_asymmetric_range_and_docstring_example() -> None:
    q = quantize(torch.tensor([-0.5, 0.1, 2.05]), "uint8")
    assert q.offset == -0.5 and q.scale == pytest.approx(0.01) and q.data.tolist() == [0, 60, 255]
    relu_like = torch.linspace(0.0, 1.0, 101)  # all >= 0: the full code range, 0.0 exactly representable
    uq, sq = quantize(relu_like, "uint8"), quantize(relu_like, "int8")
    assert uq.scale == pytest.approx(sq.scale * 127 / 255, rel=1e-6)  # about twice the resolution of int8
    assert int(uq.int_values().max()) == 255 and int(sq.int_values().min()) == 0  # int8 wastes its negative half
    assert dequantize(uq)[0] == 0.0
    const = quantize(torch.full((3,), 2.5), "uint4")
    assert const.scale == 1.0 and const.offset == 2.5 and torch.equal(dequantize(const), torch.full((3,), 2.5))
    given = quantize(torch.tensor([-1.0, 0.0, 0.5, 9.0]), "uint4", scale=0.25, offset=-0.5)  # saturates at ends
    assert given.int_values().tolist() == [0, 2, 4, 15]
    assert given.data.tolist() == [0x20, 0xF4]  # low nibble first, unsigned


def test_bad_parameters() -> None:
    x = torch.ones(4)
    with pytest.raises(QuantError, match="scale and offset together"):
        quantize(x, "uint8", scale=0.1)
    with pytest.raises(QuantError, match="scale and offset together"):
        fake_quantize(x, "uint4", offset=0.0)
    with pytest.raises(QuantError, match="symmetric: its offset is 0"):
        quantize(x, "int8", offset=0.5)
    with pytest.raises(QuantError, match="offset must be a finite number"):
        quantize(x, "uint8", scale=0.1, offset=float("nan"))
    with pytest.raises(QuantError, match="NaN or Inf"):
        quantize(torch.tensor([0.0, float("inf")]), "uint8")


@pytest.mark.parametrize("fmt", UFORMATS)
def test_bit_flips_move_codes_by_powers_of_two_steps(fmt: str) -> None:
    f = get_format(fmt)
    x = torch.randn(1001, generator=torch.Generator().manual_seed(3))
    q = quantize(x, fmt)
    s = storage(q)
    assert s.tensor is q.data and s.dtype_bits == f.bits
    clean_codes = q.int_values().to(torch.int64).clone()
    clean = dequantize(q)
    clean_bytes = s.tensor.clone().numpy()
    stats = inject_(s.tensor, Uniform(ber=0.05), seed=11, dtype_bits=s.dtype_bits)
    diff = np.unpackbits(clean_bytes ^ s.tensor.numpy(), bitorder="little")  # bit k of each code, little endian
    assert stats.bits_flipped == int(diff.sum()) > 0 and stats.bits_total == clean_bytes.size * 8
    per_bit = diff.reshape(-1, f.bits)[: x.numel()]
    assert per_bit.sum(axis=0).min() > 0  # every bit position 0 .. bits-1 of the codes got flips
    noisy_codes = q.int_values().to(torch.int64)
    # each flipped bit k toggles 2**k in the code: the new code is the old one XOR the flipped bits
    flipped = torch.from_numpy((per_bit.astype(np.int64) << np.arange(f.bits)).sum(axis=1))
    assert torch.equal(noisy_codes, clean_codes ^ flipped)
    noisy = dequantize(q)
    assert torch.allclose(noisy - clean, (noisy_codes - clean_codes).to(torch.float32) * q.scale, atol=1e-5)
    assert float(noisy.min()) >= q.offset and float(noisy.max()) <= q.offset + f.qmax * q.scale + 1e-5  # bounded


def test_manual_flip_of_each_bit() -> None:
    q = quantize(torch.tensor([0.0, 2.55]), "uint8")  # scale 0.01, codes 0 and 255
    for k in range(8):
        q.data[0] = 1 << k
        assert float(dequantize(q)[0]) == pytest.approx((1 << k) * 0.01, abs=1e-6)


def test_fake_quant_forward_and_straight_through_gradient() -> None:
    x = (torch.randn(64, generator=torch.Generator().manual_seed(2)) * 2).requires_grad_()
    for fmt in UFORMATS:
        y = fake_quantize(x, fmt)
        assert torch.equal(y.detach(), dequantize(quantize(x, fmt)))
        (y * torch.arange(64.0)).sum().backward()
        assert torch.equal(x.grad, torch.arange(64.0))
        x.grad = None
    y = FakeQuant.apply(x, "uint4", 0.1, -0.5)  # range -0.5 .. 1.0: saturated values still pass their gradient
    y.sum().backward()
    assert float(y.detach().min()) == pytest.approx(-0.5) and float(y.detach().max()) == pytest.approx(1.0)
    assert torch.equal(x.grad, torch.ones(64))


def test_calibration_gives_min_max_ifm_parameters() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    xs = torch.randn(32, 4) + 0.5
    cal = calibrate(net, [xs], "uint8")
    lo, hi = cal.ifm_ranges["0"]
    assert lo == float(xs.min()) and hi == float(xs.max())
    assert cal.ifm_offsets["0"] == lo and cal.ifm_scales["0"] == pytest.approx((hi - lo) / 255)
    assert cal.ifm_offsets["2"] == 0.0  # after the ReLU
    assert cal.ifm_qparams("0", "int8") == (pytest.approx(max(abs(lo), abs(hi)) / 127), 0.0)
    assert calibrate(net, [xs], "int8").ifm_offsets == {"0": 0.0, "2": 0.0}
    with torch.no_grad():
        clean = net(xs)
        with ErrorInjector(net, ErrorSpec(Uniform(ber=0.0), fmt="uint8"), cal) as inj:
            out = net(xs)
            assert inj.stats[("0", "ifm")].bits_total == xs.numel() * 8
    assert float((out - clean).abs().max()) < 0.05


@pytest.mark.parametrize("fmt", UFORMATS)
def test_mitigation_of_unsigned_codes(fmt: str) -> None:
    torch.manual_seed(1)
    lin = nn.Linear(16, 4, bias=False)
    xs = torch.rand(8, 16)
    cal = calibrate(lin, [xs], fmt)
    with torch.no_grad():
        w_clean = lin.weight.detach().clone()
        # calibrated on its own range: every code is in range, mitigation changes nothing
        for mitigation in ("zero", "saturate"):
            with ErrorInjector(lin, ErrorSpec(Uniform(ber=0.02), fmt=fmt, mitigation=mitigation, seed=5), cal) as inj:
                lin(xs)
                assert inj.total_stats.values_mitigated == 0 and inj.total_stats.bits_flipped > 0
        lin.weight.mul_(2.0)  # the weights moved beyond the calibrated range
        lo, hi = cal.weight_ranges[""]
        wide = lin.weight.detach().clone()
        outside = (wide < lo - 0.02) | (wide > hi + 0.02)
        assert bool(outside.any())
        with ErrorInjector(lin, ErrorSpec(Uniform(ber=0.0), fmt=fmt, mitigation="zero"), cal) as inj:
            w = lin.weight.clone()
            assert bool((w[outside] == 0.0).all())  # real 0.0, not the code 0 (= min)
            assert inj.stats[("", "weight")].values_mitigated >= int(outside.sum())
        with ErrorInjector(lin, ErrorSpec(Uniform(ber=0.0), fmt=fmt, mitigation="saturate"), cal):
            w = lin.weight.clone()
            step = float((wide.max() - wide.min()) / get_format(fmt).qmax)
            assert float(w.min()) >= lo - step and float(w.max()) <= hi + step
        lin.weight.copy_(w_clean)


def test_lenet_unsigned_bounded_under_errors(lenet_digits_state: tuple) -> None:
    from conftest import lenet_from

    state, train, test = lenet_digits_state
    net = lenet_from(state)
    loader = [(test.tensors[0][:128], test.tensors[1][:128])]
    cal = calibrate(net, [train.tensors[0][:128]], "uint8")
    clean = evaluate(net, loader).mean
    at0 = evaluate(net, loader, ErrorSpec(get_model("uniform", ber=0.0), fmt="uint8"), seeds=(0,), calibration=cal)
    assert abs(at0.mean - clean) <= 0.02
    noisy = evaluate(net, loader, ErrorSpec(get_model("uniform", ber=1e-2), fmt="uint8"), seeds=(0,),
                     calibration=cal)
    assert 0.0 <= noisy.mean <= 1.0

"""boosting.inference's fused storage: all weights in one DRAM image per step, each IFM in one call.

The fused path must read back exactly what storing each tensor on its own would, given the same
flipped bits: every check below rebuilds the image from per-layer :func:`boosting.quant.quantize`
storage at the layout's addresses, injects it with the documented seed, splits it and mitigates
and dequantizes each layer with the per-tensor rules, and compares values and per-layer stats.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import boosting.inference as inference
from boosting.inference import (
    _IFM_TAG,
    _WEIGHT_TAG,
    ErrorInjector,
    ErrorSpec,
    _code_range,
    _seed_of,
    _ucode_range,
    _widen,
    calibrate,
)
from boosting.quant import dequantize, get_format, quantize, storage
from errormodels.inject import inject_, mitigate_
from errormodels.layout import AddressMap
from errormodels.models import get_model

FORMATS = ["fp32", "int16", "int8", "int4", "uint8", "uint4"]


@pytest.fixture(autouse=True, params=["numpy", "torch"])
def backend(request, monkeypatch) -> str:
    """Every test runs on the CPU's numpy views and on the torch operations other devices use."""
    monkeypatch.setattr(inference, "_CPU_NUMPY", request.param == "numpy")
    return request.param


class Small(nn.Module):
    """Three layers; the first weight has an odd size (27 values: a padding nibble in 4-bit formats)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc1 = nn.Linear(3 * 6 * 6, 16)
        self.fc2 = nn.Linear(16, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


NAMES = ["conv", "fc1", "fc2"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


def _reference_weights(net: nn.Module, spec: ErrorSpec, cal, index: int) -> tuple[dict, dict]:
    """Per-layer expected read-back weights and flipped-bit counts: the layers' stored bytes laid
    end to end from ``spec.layout``, one inject_ call with the round's seed, then each layer alone."""
    f = spec.format
    qs = {n: quantize(getattr(net, n).parametrizations["weight"].original.detach(), f) for n in NAMES}
    image = torch.cat([_bytes(storage(qs[n]).tensor).clone() for n in NAMES])
    clean = image.clone()
    carrier = image.view(storage(qs[NAMES[0]]).tensor.dtype)
    inject_(carrier, spec.model, seed=_seed_of(spec.seed, index, _WEIGHT_TAG, 0), layout=spec.layout,
            dtype_bits=f.dtype_bits)
    values, flipped = {}, {}
    at = 0
    for n in NAMES:
        q = qs[n]
        s = storage(q)
        size = _bytes(s.tensor).numel()
        _bytes(s.tensor).copy_(image[at: at + size])
        diff = image[at: at + size] ^ clean[at: at + size]
        flipped[n] = sum(bin(int(b)).count("1") for b in diff[diff != 0])
        at += size
        rng = _widen(cal.weight_ranges[n], spec.margin)
        out_of = None
        if spec.mitigation is not None:
            if f.unsigned:
                lo, hi = _ucode_range(rng, q.scale, q.offset, f.qmax)
                codes = q.int_values()
                out_of = (codes < lo) | (codes > hi)
                if spec.mitigation == "saturate":
                    values[n] = codes.clamp(lo, hi).to(torch.float32) * q.scale + q.offset
            else:
                if not f.is_float:
                    rng = _code_range(rng, q.scale, f.qmax)
                mitigate_(s.tensor, spec.mitigation, rng, dtype_bits=s.dtype_bits)
        if n not in values:
            values[n] = dequantize(q)
        if out_of is not None and spec.mitigation == "zero":
            values[n] = values[n].masked_fill(out_of, 0.0)
    return values, flipped


def expected_q(net: nn.Module, name: str, fmt: str):
    """The clean weight of layer ``name`` (inside an injector), quantized on its own."""
    return quantize(getattr(net, name).parametrizations["weight"].original.detach(), fmt)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equal (NaN payloads included)."""
    return a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.int32), b.reshape(-1).view(torch.int32))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mitigation", [None, "zero", "saturate"])
def test_weight_image_reads_back_what_per_layer_storage_would(fmt: str, mitigation, images: torch.Tensor) -> None:
    net = Small()
    cal = calibrate(net, [images], fmt)
    with torch.no_grad():  # move the weights beyond the calibrated range, so mitigation has work
        net.fc1.weight.mul_(1.5)
    spec = ErrorSpec(get_model("uniform", ber=0.02), fmt=fmt, mitigation=mitigation, seed=4, margin=0.01,
                     layout=AddressMap(bank=2, row=5, offset_bytes=3))
    with torch.no_grad(), ErrorInjector(net, spec, cal) as inj:
        inj.reseed(6)
        expected, flipped = _reference_weights(net, spec, cal, 6)
        for n in NAMES:
            assert _same(getattr(net, n).weight, expected[n]), (fmt, mitigation, n)
            st = inj.stats[(n, "weight")]
            assert st.bits_flipped == flipped[n] and st.flips_0to1 + st.flips_1to0 == st.bits_flipped
            assert st.bits_total == 8 * _bytes(storage(expected_q(net, n, fmt)).tensor).numel()
        if mitigation is not None:
            assert inj.stats[("fc1", "weight")].values_mitigated > 0


def test_weight_stats_match_the_ber_layer_by_layer() -> None:
    net = Small()
    ber = 0.05
    spec = ErrorSpec(get_model("uniform", ber=ber), fmt="int8", seed=1)
    with torch.no_grad(), ErrorInjector(net, spec) as inj:
        for r in range(40):
            inj.reseed(r)
            net.conv.weight  # noqa: B018 - reading a weight stores all of them
        for n in NAMES:
            st = inj.stats[(n, "weight")]
            n_bits = st.bits_total
            assert n_bits == 40 * 8 * getattr(net, n).weight.numel()
            sd = math.sqrt(n_bits * ber * (1 - ber))
            assert abs(st.bits_flipped - n_bits * ber) < 5 * sd, n
            assert st.elements_touched <= st.bits_flipped


def test_overrides_split_the_image_into_runs_seeded_by_their_first_layer() -> None:
    net = Small()
    spec = ErrorSpec(get_model("uniform", ber=0.05), overrides={("fc1", "weight"): 0.0}, fmt="int8", seed=2)
    with torch.no_grad(), ErrorInjector(net, spec) as inj:
        inj.reseed(3)
        w2 = net.fc2.weight.clone()
        assert inj.stats[("fc1", "weight")].bits_flipped == 0
        assert torch.equal(net.fc1.weight, dequantize(expected_q(net, "fc1", "int8")))
        # fc2 is a run of its own: its bytes, at its own address, with the seed of layer index 2
        q = expected_q(net, "fc2", "int8")
        amap = inj._weight_maps["fc2"]
        inject_(storage(q).tensor, spec.model, seed=_seed_of(2, 3, _WEIGHT_TAG, 2), layout=amap, dtype_bits=8)
        assert torch.equal(w2, dequantize(q))


def test_wordline_weak_bits_are_split_by_layer() -> None:
    net = Small()
    model = get_model("wordline", ber=0.01, weak_fraction=0.2)
    spec = ErrorSpec(model, fmt="int8", seed=0)
    with torch.no_grad(), ErrorInjector(net, spec) as inj:
        inj.reseed(0)
        net.conv.weight  # noqa: B018
        for n in NAMES:
            st = inj.stats[(n, "weight")]
            alone = inject_(torch.zeros(getattr(net, n).weight.numel(), dtype=torch.int8), model, seed=0,
                            layout=inj._weight_maps[n], dtype_bits=8)
            assert st.weak_bits_total == alone.weak_bits_total > 0, n  # weak cells depend on the address only
            assert 0 <= st.weak_bits_flipped <= st.bits_flipped
        total = inj.total_stats
        assert total.weak_bits_flipped > 0


@pytest.mark.parametrize("fmt", ["fp32", "int8", "int16", "uint8"])
def test_ifm_reads_back_what_per_tensor_storage_would(fmt: str, images: torch.Tensor) -> None:
    net = Small()
    cal = calibrate(net, [images], fmt)
    mitigation = "zero" if fmt == "fp32" else "saturate"
    spec = ErrorSpec(get_model("uniform", ber=0.02), fmt=fmt, mitigation=mitigation, seed=7,
                     overrides={(n, "weight"): 0.0 for n in NAMES})
    seen = {}

    def keep(_module: nn.Module, args: tuple, _out: torch.Tensor) -> None:
        seen["x"] = args[0].detach().clone()  # what the layer read: its IFM after the injector's hook

    handle = net.conv.register_forward_hook(keep)
    try:
        with torch.no_grad(), ErrorInjector(net, spec, cal) as inj:
            inj.reseed(2)
            net(images)
    finally:
        handle.remove()
    f = get_format(fmt)
    scale, offset = cal.ifm_qparams("conv", f)
    q = quantize(images, f, scale=None if f.is_float else scale, offset=offset if f.unsigned else None)
    s = storage(q)
    gen = torch.Generator().manual_seed(_seed_of(7, 2, _IFM_TAG))
    rng = _widen(cal.ifm_ranges["conv"], 0.0)
    if f.unsigned:
        inject_(s.tensor, spec.model, generator=gen, layout=inj._ifm_maps["conv"][0], dtype_bits=s.dtype_bits)
        lo, hi = _ucode_range(rng, q.scale, q.offset, f.qmax)
        expected = q.int_values().clamp(lo, hi).to(torch.float32) * q.scale + q.offset
    else:
        if not f.is_float:
            rng = _code_range(rng, q.scale, f.qmax)
        inject_(s.tensor, spec.model, generator=gen, layout=inj._ifm_maps["conv"][0], dtype_bits=s.dtype_bits,
                mitigation=mitigation, value_range=rng)
        expected = dequantize(q)
    assert _same(seen["x"], expected)


def test_read_back_weights_of_a_round_are_not_overwritten_by_the_next() -> None:
    net = Small()
    spec = ErrorSpec(get_model("uniform", ber=0.05), fmt="int8", seed=0)
    with torch.no_grad(), ErrorInjector(net, spec) as inj:
        inj.reseed(0)
        w0 = net.fc1.weight
        kept = w0.clone()
        inj.reseed(1)
        w1 = net.fc1.weight
        assert torch.equal(w0, kept) and not torch.equal(w0, w1)


def test_training_steps_use_the_fused_image_and_resume_identically(images: torch.Tensor) -> None:
    """Two identical runs of reseed / forward / backward / step give the same weights, bit for bit,
    and a weight change within a round stores the image again with the same seed."""
    y = torch.arange(8) % 10

    def run() -> tuple[dict, int]:
        net = Small()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        spec = ErrorSpec(get_model("wordline", ber=1e-2), fmt="int4", mitigation="saturate", seed=3)
        with ErrorInjector(net, spec, calibrate(net, [images], "int4")) as inj:
            assert inj._image is not None
            for step in range(4):
                inj.reseed(step)
                opt.zero_grad()
                F.cross_entropy(net(images), y).backward()
                opt.step()
            net(images)  # the weights changed after the last step: stored again, same round
            bits = inj.stats[("conv", "weight")].bits_total
        return {k: v.clone() for k, v in net.state_dict().items()}, bits

    a, bits_a = run()
    b, bits_b = run()
    assert bits_a == bits_b == 5 * 8 * 14  # 27 int4 values: 14 bytes, stored in 4 rounds + once more
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_nan_feature_map_raises_in_eval_and_makes_a_nan_loss_in_training(images: torch.Tensor) -> None:
    from boosting.quant import QuantError

    net = Small()
    cal = calibrate(net, [images], "int8")
    bad = images.clone()
    bad[0, 0, 0, 0] = math.nan
    spec = ErrorSpec(get_model("uniform", ber=1e-3), fmt="int8", seed=0)
    with ErrorInjector(net, spec, cal):
        with torch.no_grad(), pytest.raises(QuantError, match="NaN"):
            net(bad)  # as quantize does with a calibrated scale
        x = bad.requires_grad_()
        loss = F.cross_entropy(net(x), torch.zeros(8, dtype=torch.long))
        assert math.isnan(float(loss.detach()))  # retrain skips the step


@pytest.mark.parametrize("fmt", ["fp32", "int8", "int4", "uint8"])
@pytest.mark.parametrize("mitigation", [None, "zero", "saturate"])
def test_without_stats_the_errors_are_the_same_and_nothing_is_counted(fmt: str, mitigation, images: torch.Tensor
                                                                       ) -> None:
    """``collect_stats=False`` (retrain's injectors) skips the bookkeeping only: same corrupted
    weights and outputs over training steps, bit for bit, and no stats."""
    y = torch.arange(8) % 10

    def run(collect: bool) -> tuple[list, dict]:
        net = Small()
        cal = calibrate(net, [images], fmt)
        with torch.no_grad():
            net.fc1.weight.mul_(1.5)  # out of the calibrated range: mitigation has work
        opt = torch.optim.SGD(net.parameters(), lr=1e-2)
        spec = ErrorSpec(get_model("uniform", ber=0.02), fmt=fmt, mitigation=mitigation, seed=2)
        seen = []
        with ErrorInjector(net, spec, cal, collect_stats=collect) as inj:
            for step in range(3):
                inj.reseed(step)
                opt.zero_grad()
                out = net(images)
                seen.append(out.detach().clone())
                with torch.no_grad():
                    seen += [getattr(net, n).weight.clone() for n in NAMES]
                F.cross_entropy(out, y).backward()
                opt.step()
            stats = dict(inj.stats)
        return seen, stats

    with_stats, stats = run(True)
    without, none = run(False)
    assert stats and inj_total_flips(stats) > 0
    assert none == {}
    assert all(_same(a, b) for a, b in zip(with_stats, without))


def inj_total_flips(stats: dict) -> int:
    return sum(s.bits_flipped for s in stats.values())

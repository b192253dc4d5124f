"""boosting.inference: error-injecting inference on weights and feature maps, calibration, evaluation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from boosting.inference import (
    AccuracyResult,
    Calibration,
    ErrorInjector,
    ErrorSpec,
    InferenceError,
    calibrate,
    evaluate,
    injectable_layers,
)
from boosting.networks import get_network
from errormodels.models import get_model

LAYERS = ["features.0", "features.3", "classifier.1", "classifier.3", "classifier.5"]


@pytest.fixture(scope="module")
def digits(lenet_digits_state: tuple) -> tuple:
    """Digits train/test resized to 28x28 and a LeNet trained on them for 2 epochs (seeded)."""
    from conftest import lenet_from

    state, train, test = lenet_digits_state
    return lenet_from(state), train, test


def _loader(ds, batch_size: int = 128) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=False)


def _clone_state(net) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _spec(ber: float, **kw) -> ErrorSpec:
    return ErrorSpec(get_model("uniform", ber=ber), **kw)


# ----------------------------------------------------------------------------- spec
def test_spec_validation_and_overrides() -> None:
    spec = _spec(1e-3, overrides={("features.0", "ifm"): 0.0}, fmt="INT8", seed=3)
    assert spec.fmt == "int8" and spec.ber_for("features.0", "ifm") == 0.0
    assert spec.ber_for("features.0", "weight") == 1e-3 and spec.model_for("features.0", "ifm").ber == 0.0
    with pytest.raises(InferenceError, match="override keys"):
        _spec(0.1, overrides={("features.0", "bias"): 0.0})
    with pytest.raises(InferenceError, match=r"in \[0, 1\]"):
        _spec(0.1, overrides={("features.0", "ifm"): 2.0})
    with pytest.raises(InferenceError, match="mitigation"):
        _spec(0.1, mitigation="clip")
    with pytest.raises(InferenceError, match="seed"):
        _spec(0.1, seed=-1)
    with pytest.raises(InferenceError, match="ErrorModel"):
        ErrorSpec(0.1)  # type: ignore[arg-type]
    net = get_network("lenet", seed=0)
    assert [n for n, _ in injectable_layers(net)] == LAYERS
    with pytest.raises(InferenceError, match="unknown layer.*'nope'"):
        ErrorInjector(net, _spec(0.1, overrides={("nope", "weight"): 0.0}))
    with pytest.raises(InferenceError, match="mitigation needs a calibration"):
        ErrorInjector(net, _spec(0.1, mitigation="zero"))


# -------------------------------------------------------------------- hooks, restore
def test_errors_hit_weights_and_ifms_and_weights_are_restored(digits) -> None:
    net, _, test = digits
    x = test.tensors[0][:64]
    before = _clone_state(net)
    params = {n: p for n, p in net.named_parameters()}
    with torch.no_grad():
        clean = net(x)
        with ErrorInjector(net, _spec(0.0, fmt="fp32")):
            assert torch.equal(net(x), clean)  # BER 0 in fp32: exactly the clean output
        with ErrorInjector(net, _spec(0.5, fmt="fp32", seed=1)) as inj:
            noisy = net(x)
            assert set(inj.stats) == {(n, k) for n in LAYERS for k in ("weight", "ifm")}
            for (name, kind), st in inj.stats.items():
                assert st.bits_flipped > 0, (name, kind)
                assert 0.4 < st.ber < 0.6
            assert inj.total_stats.bits_flipped == sum(s.bits_flipped for s in inj.stats.values())
            assert not torch.equal(net.features[0].weight, before["features.0.weight"])
    assert not torch.equal(noisy, clean)
    # bit for bit the same weights, and the very same Parameter objects
    after = net.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k].view(torch.uint8) if v.dtype == torch.float32 else after[k],
                           v.view(torch.uint8) if v.dtype == torch.float32 else v), k
    assert all(p is params[n] for n, p in net.named_parameters())
    assert not hasattr(net.features[0], "parametrizations")
    with torch.no_grad():
        assert torch.equal(net(x), clean)


def test_per_layer_override_leaves_that_layer_untouched(digits) -> None:
    net, _, test = digits
    x = test.tensors[0][:16]
    w0 = net.classifier[1].weight.detach().clone()
    spec = _spec(0.01, overrides={("classifier.1", "weight"): 0.0}, seed=2)
    with torch.no_grad(), ErrorInjector(net, spec) as inj:
        net(x)
        assert torch.equal(net.classifier[1].weight, w0)
        assert inj.stats[("classifier.1", "weight")].bits_flipped == 0
        assert inj.stats[("classifier.1", "weight")].bits_total == w0.numel() * 32
        assert inj.stats[("classifier.1", "ifm")].bits_flipped > 0
        assert inj.stats[("classifier.3", "weight")].bits_flipped > 0


def test_layout_places_tensors_one_after_another(digits) -> None:
    net, _, test = digits
    inj = ErrorInjector(net, _spec(0.0, fmt="int8"))
    starts = [inj._weight_maps[n].start_address for n in LAYERS]
    sizes = [m.weight.numel() for _, m in injectable_layers(net)]  # one byte per int8 value
    assert starts[0] == 0 and all(starts[i + 1] - starts[i] == sizes[i] for i in range(len(sizes) - 1))
    with torch.no_grad(), inj:
        net(test.tensors[0][:4])
    ifm0 = inj._ifm_maps["features.0"][0].start_address
    assert ifm0 == starts[-1] + sizes[-1]
    assert inj._ifm_maps["features.3"][0].start_address == ifm0 + 4 * 28 * 28


# ------------------------------------------------------------------------ gradients
def test_gradients_reach_clean_weights_in_training(digits) -> None:
    net0, train, _ = digits
    net = get_network("lenet", seed=0)
    net.load_state_dict(net0.state_dict())
    net.train()
    x, y = train.tensors[0][:32], train.tensors[1][:32]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    w = net.features[0].weight
    w_before = w.detach().clone()
    with ErrorInjector(net, _spec(1e-3, fmt="int8", seed=4)) as inj:
        inj.reseed(0)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        assert w.grad is not None and float(w.grad.abs().sum()) > 0
        assert all(p.grad is not None for p in net.parameters())
        opt.step()
        first_stats = inj.stats[("features.0", "weight")].bits_total
        net(x)  # the weight changed: it is stored (and corrupted) again, with the same seed
        assert inj.stats[("features.0", "weight")].bits_total == 2 * first_stats
    assert net.features[0].weight is w
    assert not torch.equal(w.detach(), w_before)


# ------------------------------------------------------------------------ mitigation
def test_zero_mitigation_keeps_fp32_outputs_finite(digits) -> None:
    net, train, test = digits
    x = test.tensors[0][:128]
    cal = calibrate(net, _loader(train, 256), "fp32")
    assert isinstance(cal, Calibration) and set(cal.ifm_ranges) == set(LAYERS)
    assert cal.ifm_ranges["classifier.1"][0] >= 0  # after a ReLU
    with torch.no_grad():
        with ErrorInjector(net, _spec(0.05, fmt="fp32", seed=5)):
            raw = net(x)
        with ErrorInjector(net, _spec(0.05, fmt="fp32", seed=5, mitigation="zero"), cal) as inj:
            fixed = net(x)
            assert all(inj.stats[(n, "weight")].values_mitigated > 0 for n in LAYERS)
            assert all(inj.stats[(n, "ifm")].values_mitigated > 0 for n in LAYERS)
        with ErrorInjector(net, _spec(0.05, fmt="int8", seed=5, mitigation="saturate"), cal):
            sat = net(x)
    assert not bool(torch.isfinite(raw).all())  # exponent flips give Inf/NaN without mitigation
    assert bool(torch.isfinite(fixed).all()) and bool(torch.isfinite(sat).all())


# ---------------------------------------------------------------------- determinism
def test_same_seed_same_output_different_seed_different(digits) -> None:
    net, _, test = digits
    x = test.tensors[0][:32]

    def run(seed: int, index: int = 0, fmt: str = "int8") -> tuple:
        with torch.no_grad(), ErrorInjector(net, _spec(1e-2, fmt=fmt, seed=seed)) as inj:
            inj.reseed(index)
            a = net(x)
            b = net(x)  # fresh IFM errors, same weight errors
            return a, b

    a1, b1 = run(7)
    a2, b2 = run(7)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert not torch.equal(a1, b1)
    assert not torch.equal(run(8)[0], a1)
    assert not torch.equal(run(7, index=1)[0], a1)
    wl = ErrorSpec(get_model("wordline", ber=1e-3), fmt="int4", seed=1)
    with torch.no_grad():
        outs = []
        for _ in range(2):
            with ErrorInjector(net, wl):
                outs.append(net(x))
    assert torch.equal(outs[0], outs[1])


# ------------------------------------------------------------------------ evaluation
def test_int8_at_ber0_close_to_fp32_and_accuracy_drops(digits) -> None:
    net, train, test = digits
    loader = _loader(test)
    cal = calibrate(net, _loader(train, 256), "int8")
    assert cal.fmt == "int8" and all(s > 0 for s in cal.ifm_scales.values())
    clean = evaluate(net, loader)
    assert clean.method == "wilson" and clean.seeds == () and clean.n_samples == len(test)
    assert clean.ci_low <= clean.mean <= clean.ci_high and clean.mean > 0.8
    fp32 = evaluate(net, loader, _spec(0.0, fmt="fp32"), seeds=(0,))
    assert fp32.mean == clean.mean and fp32.method == "wilson"
    int8 = evaluate(net, loader, _spec(0.0, fmt="int8"), seeds=(0,), calibration=cal)
    assert abs(int8.mean - clean.mean) <= 0.03
    low = evaluate(net, loader, _spec(1e-3, fmt="int8", mitigation="saturate"), calibration=cal)
    high = evaluate(net, loader, _spec(0.1, fmt="int8", mitigation="saturate"), calibration=cal)
    for r in (low, high):
        assert isinstance(r, AccuracyResult) and r.method == "t" and r.seeds == (0, 1, 2)
        assert len(r.per_seed) == 3 and r.mean == pytest.approx(sum(r.per_seed) / 3)
        assert r.ci_low <= r.mean <= r.ci_high
    assert high.mean < clean.mean - 0.3
    assert not net.training

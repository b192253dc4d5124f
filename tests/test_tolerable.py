"""boosting.tolerable: per-sample correctness, fresh masks per BER, interpolated crossing, bootstrap interval."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from boosting.inference import ErrorInjector, ErrorSpec, calibrate, evaluate
from boosting.tolerable import (
    MIN_SEEDS,
    CurveResult,
    Tolerance,
    ToleranceMeasureError,
    correctness,
    crossing,
    curve,
    curve_seed,
    default_bers,
    gain,
    measure,
    reference_correctness,
    tolerable_ber,
)
from errormodels.models import get_model


# ------------------------------------------------------------------------- crossing
def test_crossing_interpolates_on_log_ber() -> None:
    bers = [1e-2, 1e-4, 1e-3]  # unsorted on purpose
    acc = [0.80, 0.95, 0.90]
    ber, status = crossing(bers, acc, 0.85)
    assert status == "interpolated" and ber == pytest.approx(10 ** -2.5)
    ber, status = crossing(bers, acc, 0.93)  # 0.95 -> 0.90 over one decade: 2/5 of the way from 1e-4
    assert status == "interpolated" and ber == pytest.approx(10 ** (-4 + 0.4))
    assert crossing(bers, acc, 0.90) == (pytest.approx(1e-3), "interpolated")  # a point at the goal passes
    # a non-monotone curve: the first point below the goal decides
    assert crossing([1e-4, 1e-3, 1e-2], [0.95, 0.80, 0.96], 0.85)[0] < 1e-3


def test_crossing_censored() -> None:
    assert crossing([1e-4, 1e-3], [0.95, 0.90], 0.85) == (1e-3, "above_range")
    assert crossing([1e-4, 1e-3], [0.80, 0.70], 0.85) == (0.0, "below_range")
    with pytest.raises(ToleranceMeasureError):
        crossing([1e-4, 0.0], [0.9, 0.8], 0.85)
    with pytest.raises(ToleranceMeasureError):
        crossing([1e-4, 1e-3], [0.9], 0.85)


# ------------------------------------------------------------------ bootstrap interval
BERS = np.logspace(-5, -1, 17)  # four per decade


def _synthetic(n_seeds: int, n_samples: int, rng_seed: int = 0, seed_sd: float = 0.01) -> np.ndarray:
    """Correctness whose expected accuracy is 0.95 - 0.05 * (log10 BER + 5), with a per-seed offset."""
    rng = np.random.default_rng(rng_seed)
    p = 0.95 - 0.05 * (np.log10(BERS) + 5)
    offset = rng.normal(0.0, seed_sd, (1, n_seeds, 1))
    return rng.random((BERS.size, n_seeds, n_samples)) < p[:, None, None] + offset


def test_tolerable_ber_interval_covers_truth_and_narrows() -> None:
    truth = 1e-3  # 0.95 - 0.10 is reached at log10 BER = -3
    few = tolerable_ber(_synthetic(5, 400), BERS, 0.95, 0.10, n_boot=400, seed=1)
    many = tolerable_ber(_synthetic(40, 400), BERS, 0.95, 0.10, n_boot=400, seed=1)
    for t in (few, many):
        assert isinstance(t, Tolerance) and t.status == "interpolated"
        assert t.ci_low <= truth <= t.ci_high and t.ci_low <= t.ber <= t.ci_high
        assert t.goal == pytest.approx(0.85) and t.n_boot == 400
    assert math.log10(many.ci_high / many.ci_low) < math.log10(few.ci_high / few.ci_low)
    assert (few.n_seeds, few.n_samples, many.n_seeds) == (5, 400, 40)
    again = tolerable_ber(_synthetic(5, 400), BERS, 0.95, 0.10, n_boot=400, seed=1)
    assert again == few  # deterministic with the seed
    assert tolerable_ber(_synthetic(5, 400), BERS, 0.95, 0.10, n_boot=400, seed=2) != few
    json.dumps(few.to_dict())


def test_tolerable_ber_reference_array_and_censoring() -> None:
    c = _synthetic(8, 300)
    ref = np.zeros(300, dtype=bool)
    ref[:285] = True  # accuracy 0.95
    t = tolerable_ber(c, BERS, ref, 0.10, n_boot=200)
    assert t.reference == pytest.approx(0.95) and t.goal == pytest.approx(0.85)
    assert t.ci_low <= 1e-3 <= t.ci_high
    # a goal nothing reaches, and one everything keeps
    low = tolerable_ber(c, BERS, 0.99, 0.0, n_boot=100)
    assert (low.ber, low.status, low.ci_low) == (0.0, "below_range", 0.0)
    high = tolerable_ber(c, BERS, 0.95, 0.9, n_boot=100)
    assert high.status == "above_range" and high.ber == high.ci_high == pytest.approx(BERS[-1])
    with pytest.raises(ToleranceMeasureError, match="samples"):
        tolerable_ber(c, BERS, ref[:10], 0.1)
    with pytest.raises(ToleranceMeasureError, match="shape"):
        tolerable_ber(c[0], BERS, 0.95, 0.1)


# ------------------------------------------------------------------------ evaluation
@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear classifier on 16 features and 160 samples labelled by a noisy copy of it."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(4, 16, generator=gen))
        net[1].bias.zero_()
    x = torch.randn(160, 1, 4, 4, generator=gen)
    with torch.no_grad():
        y = (net(x) + 1.5 * torch.randn(160, 4, generator=gen)).argmax(dim=1)
    return net.eval(), x, y


def test_correctness_matches_a_direct_evaluation(tiny) -> None:
    net, x, y = tiny
    spec = ErrorSpec(get_model("uniform", ber=1e-2), fmt="int8", seed=4)
    c = correctness(net, x, y, spec, (3, 7), batch_size=50)
    assert c.shape == (2, 160) and c.dtype == bool
    # the same batches as evaluate: the same accuracies (IFM errors depend on the batching)
    r = evaluate(net, DataLoader(TensorDataset(x, y), batch_size=50), spec, seeds=(3, 7))
    assert c.mean(axis=1) == pytest.approx(r.per_seed)
    with torch.no_grad(), ErrorInjector(net, spec) as inj:
        inj.reseed(7)
        direct = (net(x).argmax(dim=1) == y).numpy()
    assert np.array_equal(correctness(net, x, y, spec, (7,), batch_size=160)[0], direct)
    clean = correctness(net, x, y, None, ())
    assert clean.shape == (1, 160) and clean.mean() > 0.5
    assert not net.training


def test_reference_goes_through_the_format_at_ber_zero(tiny) -> None:
    net, x, y = tiny
    spec = ErrorSpec(get_model("uniform", ber=0.3), {("1", "weight"): 0.5}, fmt="int4", mitigation="zero", seed=2)
    cal = calibrate(net, [x[:64]], "int4")
    ref = reference_correctness(net, x, y, spec, cal)
    assert ref.shape == (160,) and ref.dtype == bool
    zero = ErrorSpec(spec.model.with_ber(0.0), fmt="int4", mitigation="zero", seed=2)
    with torch.no_grad(), ErrorInjector(net, zero, cal) as inj:
        inj.reseed(0)
        logits = net(x)
        assert inj.total_stats.bits_flipped == 0 and inj.total_stats.bits_total > 0
    with torch.no_grad():
        assert not torch.allclose(logits, net(x))  # int4 storage (and zeroing) changed the values
    assert np.array_equal(ref, (logits.argmax(dim=1) == y).numpy())


def test_curve_draws_fresh_masks_per_ber(tiny) -> None:
    net, x, y = tiny
    base = ErrorSpec(get_model("uniform"), fmt="int8", seed=5)
    bers = [1e-3, 1e-2]
    c = curve(net, x, y, base, bers, (0, 1))
    assert c.shape == (2, 2, 160)
    assert curve_seed(5, 1e-3, 0) != curve_seed(5, 1e-2, 0) != curve_seed(5, 1e-2, 1)
    assert curve_seed(5, 1e-2, 1) == curve_seed(5, 1e-2, 1)  # a function of the BER's value
    spec = ErrorSpec(get_model("uniform", ber=1e-2), fmt="int8", seed=5)
    direct = correctness(net, x, y, spec, [curve_seed(5, 1e-2, s) for s in (0, 1)])
    assert np.array_equal(c[1], direct)
    with pytest.raises(ToleranceMeasureError, match="0.001 decade"):
        curve(net, x, y, base, [1e-3, 1.0001e-3], (0,))


def test_measure_reports_each_drop(tiny, caplog) -> None:
    net, x, y = tiny
    base = ErrorSpec(get_model("uniform"), fmt="int8", seed=0)
    bers = default_bers(1e-3, 1e-1, 2)
    with caplog.at_level(logging.WARNING, logger="boosting.tolerable"):
        res = measure(net, x, y, base, bers=bers, seeds=(0, 1, 2), max_drops=(0.02, 0.2), n_boot=50)
    assert any("fewer than" in r.getMessage() for r in caplog.records) and MIN_SEEDS == 20
    assert isinstance(res, CurveResult) and res.bers == tuple(bers) and len(res.mean) == len(bers)
    assert all(lo <= m <= hi for lo, m, hi in zip(res.ci_low, res.mean, res.ci_high))
    assert res.reference == pytest.approx(reference_correctness(net, x, y, base).mean())
    assert set(res.tolerable) == {0.02, 0.2}
    assert res.tolerable[0.2].ber >= res.tolerable[0.02].ber
    doc = json.loads(json.dumps(res.to_dict()))
    assert [t["max_drop"] for t in doc["tolerable"]] == [0.02, 0.2]
    given = measure(net, x, y, base, bers=bers, seeds=(0, 1), reference=0.5, max_drops=(0.01,), n_boot=20)
    assert given.tolerable[0.01].goal == pytest.approx(0.49)


def test_default_bers() -> None:
    bers = default_bers()
    assert len(bers) == 21 and bers[0] == pytest.approx(1e-6) and bers[-1] == pytest.approx(1e-1)
    assert np.allclose(np.diff(np.log10(bers)), 0.25)
    with pytest.raises(ToleranceMeasureError):
        default_bers(1e-2, 1e-3)


# ------------------------------------------------------------------------------ gain
def _latent_curves(shift_decades: float, n: int = 300, seeds: int = 20, seed: int = 0) -> tuple:
    """Correctness of two networks on the same samples: sample i fails once log10(BER) passes its latent
    threshold t_i (network A's thresholds ``shift_decades`` higher), plus a little seed noise."""
    rng = np.random.default_rng(seed)
    bers = default_bers(1e-5, 1e-1, per_decade=4)
    log_b = np.log10(bers)
    t = rng.normal(-2.5, 0.6, n)  # per-sample latent thresholds
    jitter = rng.normal(0, 0.1, (len(bers), seeds, n))
    b_ok = log_b[:, None, None] + jitter < t[None, None, :]
    a_ok = log_b[:, None, None] + jitter < (t + shift_decades)[None, None, :]
    reference = np.ones(n, dtype=bool)
    return bers, a_ok, b_ok, reference


def test_gain_of_a_known_shift_and_of_a_network_with_itself() -> None:
    bers, a, b, ref = _latent_curves(1.0)
    g = gain(a, b, bers, ref, 0.05, n_boot=400, seed=1)
    assert g["ratio"] == pytest.approx(10.0, rel=0.15)  # one decade
    assert g["ci_low"] <= 10.0 <= g["ci_high"] and g["ci_low"] > 3.0 and not g["censored"]
    assert g["a"]["ber"] == pytest.approx(g["ratio"] * g["b"]["ber"])
    same = gain(b, b, bers, ref, 0.05, n_boot=200, seed=1)
    assert same["ratio"] == 1.0 and same["ci_low"] == same["ci_high"] == 1.0  # paired: the noise cancels
    assert gain(a, b, bers, ref, 0.05, n_boot=200, seed=3) == gain(a, b, bers, ref, 0.05, n_boot=200, seed=3)
    with pytest.raises(ToleranceMeasureError, match="differ in shape"):
        gain(a[:, :10], b, bers, ref, 0.05)

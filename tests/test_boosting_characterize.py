"""boosting.characterize: coarse (Alg. 2) and fine (Alg. 3) tolerance searches, executor wiring."""

from __future__ import annotations

import json
import math
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from torch.utils.data import DataLoader, TensorDataset

from boosting.characterize import (
    CharacterizeError,
    NetworkWorkload,
    SerialExecutor,
    coarse_characterize,
    fine_characterize,
)
from boosting.inference import ErrorSpec, evaluate
from errormodels.models import get_model

LAYERS = ("a", "b", "c")
KEYS = [(layer, kind) for layer in LAYERS for kind in ("weight", "ifm")]
BASE = ErrorSpec(get_model("uniform", ber=1e-3))


@dataclass
class ThresholdWorkload:
    """Accuracy 0.9 while every (layer, kind) BER is at most its threshold, else 0.5."""

    thresholds: dict
    layers: tuple = LAYERS
    calls: list = field(default_factory=list)

    def clean(self) -> tuple[float, int]:
        return 0.9, 1000

    def __call__(self, spec: ErrorSpec, seed: int) -> tuple[float, int]:
        self.calls.append((spec, seed))
        ok = all(spec.ber_for(*k) <= t * (1 + 1e-9) for k, t in self.thresholds.items())
        return (0.9 if ok else 0.5), 1000


@dataclass
class LinearWorkload:
    """Accuracy 0.9 - sum_k s_k * ber_k (+ a per-seed offset): sensitivities known."""

    sens: dict
    noise: float = 0.0
    layers: tuple = LAYERS

    def clean(self) -> tuple[float, int]:
        return 0.9, 1000

    def __call__(self, spec: ErrorSpec, seed: int) -> tuple[float, int]:
        drop = sum(s * spec.ber_for(*k) for k, s in self.sens.items())
        return 0.9 - drop + self.noise * (seed - 1), 1000


def _thresholds(tmin: float = 1e-4) -> dict:
    return {k: tmin * (3.0 ** i) for i, k in enumerate(KEYS)}


# --------------------------------------------------------------------------- coarse
def test_coarse_finds_threshold_and_uses_executor() -> None:
    work = ThresholdWorkload(_thresholds(1e-4))
    ex = SerialExecutor()
    res = coarse_characterize(work, BASE, max_drop=0.01, ber_min=1e-9, ber_max=0.5, tol=0.05,
                              seeds=(0, 1), executor=ex)
    assert res.found
    assert 1e-4 * 10 ** -0.05 <= res.ber <= 1e-4 * (1 + 1e-9)
    assert res.baseline == 0.9 and math.isclose(res.goal, 0.89)
    coarse = [p for p in res.probes if p.stage == "coarse"]
    assert res.probes[0].stage == "baseline"
    assert ex.submitted == 1 + 2 * len(coarse)  # baseline task + one task per seed per probe
    assert len(work.calls) == 2 * len(coarse)
    assert all(not spec.overrides for spec, _ in work.calls)  # uniform BER
    assert max(p.ber for p in coarse if p.passed) == pytest.approx(res.ber)
    assert all(p.ber > res.ber for p in coarse if not p.passed)
    json.dumps(res.to_dict())


def test_coarse_bounds_and_retrain() -> None:
    seen, reported = [], []
    res = coarse_characterize(ThresholdWorkload({("a", "weight"): 1.0}), BASE, ber_max=0.5,
                              retrain=seen.append, seeds=(0,), statistic="mean", executor=SerialExecutor(),
                              progress=reported.append)
    assert reported == list(res.probes)
    assert res.ber == 0.5 and res.found
    assert [s.model.ber for s in seen] == pytest.approx([1e-9, 0.5])  # retrain before every probe
    res = coarse_characterize(ThresholdWorkload({("a", "weight"): 1e-12}), BASE, seeds=(0,),
                              statistic="mean", executor=SerialExecutor())
    assert res.ber == 0.0 and not res.found and len(res.probes) == 2
    with pytest.raises(CharacterizeError):
        coarse_characterize(ThresholdWorkload({}), BASE, ber_min=0.1, ber_max=0.01, executor=SerialExecutor())
    with pytest.raises(CharacterizeError):
        coarse_characterize(ThresholdWorkload({}), BASE, statistic="median", executor=SerialExecutor())


def test_coarse_ci_low_is_more_conservative_than_mean() -> None:
    sens = {k: 10.0 for k in KEYS}  # drop = 60 * ber: the mean reaches 0.89 at ber = 1/6000
    work = LinearWorkload(sens, noise=0.002)
    kw = dict(max_drop=0.01, tol=0.02, seeds=(0, 1, 2), executor=SerialExecutor())
    by_mean = coarse_characterize(work, BASE, statistic="mean", **kw)
    by_ci = coarse_characterize(work, BASE, statistic="ci_low", **kw)
    assert 10 ** -0.02 / 6000 <= by_mean.ber <= 1 / 6000
    assert by_ci.ber < by_mean.ber
    # (the stand-in's linear "accuracy" leaves [0, 1] at high BER, where the interval is clipped)
    assert all(p.ci_low < p.mean < p.ci_high for p in by_ci.probes if p.stage == "coarse" and 0.05 < p.mean < 0.95)
    assert all(0.0 <= p.ci_low <= p.ci_high <= 1.0 for p in by_ci.probes if 0.0 <= p.mean <= 1.0)


def test_thread_pool_gives_same_result() -> None:
    work = ThresholdWorkload(_thresholds(3e-5))
    serial = coarse_characterize(work, BASE, tol=0.1, executor=SerialExecutor())
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = coarse_characterize(work, BASE, tol=0.1, executor=pool)
    assert threaded.to_dict() == serial.to_dict()


# ----------------------------------------------------------------------------- fine
def test_fine_raises_each_key_to_its_threshold_and_rolls_back() -> None:
    th = _thresholds(1e-4)
    start, factor = 1e-4, 2.0
    ex = SerialExecutor()
    res = fine_characterize(ThresholdWorkload(th), BASE, start, factor=factor, max_steps=30,
                            seeds=(0, 1), executor=ex)
    assert set(res.bers) == set(KEYS)
    for k, t in th.items():
        steps = math.floor(math.log(t / start, factor) + 1e-9)
        assert res.bers[k] == pytest.approx(start * factor ** steps)
        assert res.bers[k] >= start
    fine = [p for p in res.probes if p.stage == "fine"]
    failed = [p for p in fine if not p.passed]
    assert len(failed) == len(KEYS) and all(p.rolled_back for p in failed)  # one rollback per key
    assert not any(p.rolled_back for p in fine if p.passed)
    for p in failed:  # the failing step was not kept
        assert p.overrides[p.key] > res.bers[p.key]
    n_probes = len(KEYS) + len(fine)  # sensitivity + fine
    assert ex.submitted == 1 + 2 * n_probes
    # sensitivity: only the key with threshold 1e-4 fails one step up; it is raised last
    assert res.sensitivity[("a", "weight")] == pytest.approx(0.4)
    assert res.order[-1] == ("a", "weight")
    assert res.spec(BASE).overrides == res.bers
    json.dumps(res.to_dict())


def test_fine_orders_by_sensitivity_and_is_locally_maximal() -> None:
    sens = {k: s for k, s in zip(KEYS, (5.0, 1.0, 40.0, 2.0, 20.0, 10.0))}
    work = LinearWorkload(sens)
    start = 1e-4
    res = fine_characterize(work, BASE, start, max_drop=0.01, factor=2.0, max_steps=40, seeds=(0, 1),
                            executor=SerialExecutor())
    assert list(res.order) == sorted(KEYS, key=lambda k: sens[k])
    final = 0.9 - sum(sens[k] * b for k, b in res.bers.items())
    assert final >= res.goal - 1e-12
    for k in KEYS:  # one more step on any key would break the goal
        assert final - sens[k] * res.bers[k] * (2.0 - 1) < res.goal
    assert min(res.bers.values()) >= start
    assert res.bers[("a", "ifm")] == max(res.bers.values())  # least sensitive rises most


def test_fine_max_steps_ceiling_and_keys() -> None:
    res = fine_characterize(ThresholdWorkload({}), BASE, 1e-3, factor=10.0, max_steps=2, ber_max=0.05,
                            keys=[("b", "ifm")], seeds=(0,), statistic="mean", executor=SerialExecutor())
    assert res.bers == {("b", "ifm"): pytest.approx(0.05)}  # 1e-2, then clipped at ber_max
    with pytest.raises(CharacterizeError):
        fine_characterize(ThresholdWorkload({}), BASE, 0.0, executor=SerialExecutor())
    with pytest.raises(CharacterizeError):
        fine_characterize(ThresholdWorkload({}), BASE, 1e-3, keys=[("a", "bias")], executor=SerialExecutor())


# ----------------------------------------------------------------------------- real
@pytest.fixture(scope="module")
def lenet_digits(lenet_digits_state: tuple) -> tuple:
    """LeNet trained two epochs on digits (28x28), and the first 180 test samples."""
    from conftest import lenet_from

    state, _, test = lenet_digits_state
    tx, ty = test.tensors
    return lenet_from(state), tx[:180], ty[:180]


def test_real_lenet_wiring(lenet_digits) -> None:
    net, tx, ty = lenet_digits
    work = NetworkWorkload(net, tx, ty, batch_size=180)
    restored = pickle.loads(pickle.dumps(work))  # tasks are picklable for process pools
    assert restored.layers == work.layers
    base = ErrorSpec(get_model("uniform", ber=1e-3), fmt="int8", seed=3)
    ex = SerialExecutor()
    res = coarse_characterize(work, base, max_drop=0.05, ber_min=1e-6, ber_max=0.1, tol=2.5, seeds=(0, 1),
                              statistic="mean", executor=ex)
    assert res.baseline > 0.7 and res.found
    coarse = [p for p in res.probes if p.stage == "coarse"]
    assert ex.submitted == 1 + 2 * len(coarse) and len(coarse) == 3
    last = coarse[-1]
    direct = evaluate(net, DataLoader(TensorDataset(tx, ty), batch_size=180),
                      ErrorSpec(base.model.with_ber(last.ber), fmt="int8", seed=3), seeds=(0, 1))
    assert direct.per_seed == pytest.approx(last.per_seed)
    assert direct.mean == pytest.approx(last.mean) and direct.ci_low == pytest.approx(last.ci_low)
    fine = fine_characterize(work, base, res.ber, max_drop=0.05, factor=10.0, max_steps=1,
                             keys=[("features.0", "weight"), ("classifier.5", "ifm")], seeds=(0,),
                             statistic="mean", baseline=res.baseline, executor=ex)
    assert set(fine.bers) == {("features.0", "weight"), ("classifier.5", "ifm")}
    assert all(b >= res.ber for b in fine.bers.values())
    json.dumps(fine.to_dict())

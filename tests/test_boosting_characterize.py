"""boosting.characterize: coarse (Alg. 2) and fine (Alg. 3) tolerance searches, executor wiring."""

from __future__ import annotations

import json
import math
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

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
                              seeds=(0, 1), executor=ex, holdout_seeds=())
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
    assert res.ber == 0.5 and res.found and res.holdout["passed"] and res.holdout["backed_off"] == 0
    # retrain before every probe, the held-out one included
    assert [s.model.ber for s in seen] == pytest.approx([1e-9, 0.5, 0.5])
    assert [p.stage for p in res.probes] == ["baseline", "coarse", "coarse", "holdout"]
    res = coarse_characterize(ThresholdWorkload({("a", "weight"): 1e-12}), BASE, seeds=(0,),
                              statistic="mean", executor=SerialExecutor())
    assert res.ber == 0.0 and not res.found and len(res.probes) == 2 and res.holdout is None
    with pytest.raises(CharacterizeError):
        coarse_characterize(ThresholdWorkload({}), BASE, ber_min=0.1, ber_max=0.01, executor=SerialExecutor())
    with pytest.raises(CharacterizeError):
        coarse_characterize(ThresholdWorkload({}), BASE, statistic="median", executor=SerialExecutor())


def test_coarse_ci_low_is_more_conservative_than_mean() -> None:
    sens = {k: 10.0 for k in KEYS}  # drop = 60 * ber: the mean reaches 0.89 at ber = 1/6000
    work = LinearWorkload(sens, noise=0.002)
    kw = dict(max_drop=0.01, tol=0.02, seeds=(0, 1, 2), executor=SerialExecutor(), holdout_seeds=(),
              fresh_masks=False)  # the stand-in reads the seed
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
                            seeds=(0, 1), executor=ex, holdout_seeds=())
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
    assert res.holdout["passed"] and res.holdout["backed_off"] == 0 and res.search_bers == res.bers
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
                              statistic="mean", executor=ex, holdout_seeds=())
    assert res.baseline > 0.7 and res.found
    assert res.baseline == pytest.approx(work.reference(base)[0])  # the clean accuracy in int8
    coarse = [p for p in res.probes if p.stage == "coarse"]
    assert ex.submitted == 1 + 2 * len(coarse) and len(coarse) == 3
    last = coarse[-1]
    direct = evaluate(net, DataLoader(TensorDataset(tx, ty), batch_size=180),
                      ErrorSpec(base.model.with_ber(last.ber), fmt="int8", seed=3), seeds=last.mask_seeds)
    assert direct.per_seed == pytest.approx(last.per_seed)
    assert direct.mean == pytest.approx(last.mean) and direct.ci_low == pytest.approx(last.ci_low)
    fine = fine_characterize(work, base, res.ber, max_drop=0.05, factor=10.0, max_steps=1,
                             keys=[("features.0", "weight"), ("classifier.5", "ifm")], seeds=(0,),
                             statistic="mean", baseline=res.baseline, executor=ex, holdout_seeds=(1000, 1001))
    assert set(fine.bers) == {("features.0", "weight"), ("classifier.5", "ifm")}
    assert all(b >= res.ber for b in fine.bers.values())
    json.dumps(fine.to_dict())


# ------------------------------------------------------------ fresh masks, held-out seeds
@dataclass
class LuckyWorkload:
    """Accuracy 0.9 - sum_k s_k * ber_k, plus ``luck`` for every search seed (< 1000): held-out seeds are not lucky."""

    sens: dict
    luck: float = 0.05
    layers: tuple = LAYERS

    def clean(self) -> tuple[float, int]:
        return 0.9, 1000

    def true_accuracy(self, spec: ErrorSpec) -> float:
        return 0.9 - sum(s * spec.ber_for(*k) for k, s in self.sens.items())

    def __call__(self, spec: ErrorSpec, seed: int) -> tuple[float, int]:
        return self.true_accuracy(spec) + (self.luck if seed < 1000 else 0.0), 1000


def test_probes_draw_fresh_masks() -> None:
    work = ThresholdWorkload({("a", "weight"): 1.0})
    res = coarse_characterize(work, BASE, ber_max=0.5, seeds=(0, 1), executor=SerialExecutor(),
                              holdout_seeds=(7, 8))
    top, held = res.probes[2], res.probes[3]
    assert (top.stage, held.stage) == ("coarse", "holdout") and top.ber == held.ber == 0.5  # the same spec
    masks = [m for p in res.probes[1:] for m in p.mask_seeds]
    assert len(masks) == len(set(masks)) == 6  # no two probes (or seeds) share masks
    assert sorted(seed for _, seed in work.calls) == sorted(masks)  # what the workload was given
    again = coarse_characterize(ThresholdWorkload({("a", "weight"): 1.0}), BASE, ber_max=0.5, seeds=(0, 1),
                                executor=SerialExecutor(), holdout_seeds=(7, 8))
    assert again.to_dict() == res.to_dict()  # deterministic
    fine = fine_characterize(work, BASE, 1e-3, max_steps=2, seeds=(0, 1), executor=SerialExecutor(),
                             holdout_seeds=(7,))
    fine_masks = [m for p in fine.probes[1:] for m in p.mask_seeds]
    assert len(set(fine_masks)) == len(fine_masks) and not set(fine_masks) & set(masks)
    old = coarse_characterize(work, BASE, ber_max=0.5, seeds=(0, 1), executor=SerialExecutor(),
                              holdout_seeds=(), fresh_masks=False)
    assert all(p.mask_seeds == (0, 1) for p in old.probes[1:])
    with pytest.raises(CharacterizeError, match="disjoint"):
        coarse_characterize(work, BASE, seeds=(0, 1), holdout_seeds=(1, 2), executor=SerialExecutor())


def test_holdout_backs_off_a_fine_assignment_that_fails_unseen_seeds() -> None:
    sens = {k: s for k, s in zip(KEYS, (5.0, 1.0, 40.0, 2.0, 20.0, 10.0))}
    work = LuckyWorkload(sens)
    kw = dict(max_drop=0.01, factor=2.0, max_steps=40, seeds=(0, 1), statistic="mean",
              executor=SerialExecutor(), fresh_masks=False, holdout_seeds=(1000, 1001))
    res = fine_characterize(work, BASE, 1e-4, **kw)
    h = res.holdout
    assert h["passed"] and h["backed_off"] > 0 and h["uniform_ber"] == 1e-4
    held = [p for p in res.probes if p.stage == "holdout"]
    assert len(held) == h["backed_off"] + 1 and held[-1].passed and not any(p.passed for p in held[:-1])
    # the search's assignment passes its lucky seeds only; the backed-off one passes for real
    assert work.true_accuracy(replace(BASE, overrides=res.search_bers)) < res.goal
    assert work.true_accuracy(res.spec(BASE)) >= res.goal
    assert all(res.bers[k] <= res.search_bers[k] for k in KEYS) and res.bers != res.search_bers
    # undone in reverse order of raising: keys raised before the partly undone one keep their BERs,
    # keys raised after it are back at the start
    j = next(i for i, k in enumerate(res.order) if res.bers[k] != res.search_bers[k])
    assert all(res.bers[k] == res.search_bers[k] for k in res.order[:j])
    assert all(res.bers[k] == 1e-4 for k in res.order[j + 1:]) and res.bers[res.order[j]] >= 1e-4
    doc = json.loads(json.dumps(res.to_dict()))
    assert doc["holdout"]["backed_off"] == h["backed_off"] and len(doc["search_bers"]) == len(KEYS)

    # a start assignment that fails the held-out seeds: every key lowered together
    start = 0.03 / 78  # true accuracy at a uniform BER b is 0.9 - 78 b: 0.87 here, lucky 0.92
    res = fine_characterize(work, BASE, start, **{**kw, "max_steps": 1})
    assert res.holdout["passed"] and res.holdout["uniform_ber"] < start
    assert set(res.bers.values()) == {res.holdout["uniform_ber"]}
    assert work.true_accuracy(res.spec(BASE)) >= res.goal


def test_holdout_backs_off_the_coarse_ber() -> None:
    work = LuckyWorkload({k: 10.0 for k in KEYS})  # true: 0.9 - 60 b; the goal 0.89 at b = 1/6000
    kw = dict(max_drop=0.01, tol=0.1, ber_min=1e-7, ber_max=0.5, seeds=(0, 1), statistic="mean",
              executor=SerialExecutor(), fresh_masks=False)
    res = coarse_characterize(work, BASE, holdout_seeds=(1000, 1001), **kw)
    assert res.search_ber > 1 / 6000 and res.ber <= 1 / 6000 and res.found
    assert res.holdout["backed_off"] >= 1 and res.holdout["ber"] == res.ber
    assert res.ber == pytest.approx(res.search_ber / 10 ** (0.1 * res.holdout["backed_off"]))
    held = [p for p in res.probes if p.stage == "holdout"]
    assert held[-1].passed and held[-1].ber == res.ber
    # nothing passes the held-out seeds: 0.0, not found
    hopeless = coarse_characterize(LuckyWorkload({k: 1.0 for k in KEYS}), BASE, holdout_seeds=(1000,),
                                   **{**kw, "max_drop": 0.0, "backoff": 1e3})
    assert hopeless.search_ber > 1e-3 and hopeless.ber == 0.0 and not hopeless.found
    assert not hopeless.holdout["passed"] and hopeless.probes[-1].ber == 1e-7  # tried down to ber_min


# ------------------------------------------------------------------- goal anchoring
@pytest.fixture(scope="module")
def family(lenet_digits_state, tmp_path_factory) -> dict:
    """Network files: an original LeNet, a boosted and a control child of it, a boosted grandchild.

    The children are the original with perturbed weights, so their clean accuracy differs.
    """
    import torch
    from conftest import lenet_from

    from boosting.checkpoint import save_network
    from softmc_host.files import sha256_file

    state, train, test = lenet_digits_state
    d = tmp_path_factory.mktemp("family")
    common = dict(network="lenet", build={"num_classes": 10, "in_channels": 1, "image_size": 28}, seed=0,
                  dataset={"name": "digits", "root": None, "image_size": 28, "normalize": False, "split_seed": 0})
    paths = {"root": save_network(d / "root.pt", lenet_from(state), meta={"kind": "clean"}, **common)}
    gen = torch.Generator().manual_seed(0)

    def child(name: str, kind: str, parent: str, noise: float) -> None:
        net = lenet_from(state)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(noise * p.abs().mean() * torch.randn(p.shape, generator=gen))
        meta = {"kind": kind, "parent": {"path": str(paths[parent]), "sha256": sha256_file(paths[parent]),
                                         "kind": "clean"}}
        paths[name] = save_network(d / f"{name}.pt", net, meta=meta, **common)

    child("boosted", "boosted", "root", 1.0)
    child("control", "control", "root", 1.5)
    child("reboosted", "boosted", "boosted", 1.5)
    child("orphan", "boosted", "root", 1.0)
    return {"paths": paths, "train": train, "test": test, "state": state}


FAMILY_KW = dict(search="coarse", seeds=(0,), holdout_seeds=(), ber_min=1e-4, ber_max=1e-2, tol=2.0, workers=0,
                 samples=60, statistic="mean", max_drop=0.05, calib_samples=128)


def _format_accuracy(path, family, spec) -> float:
    from boosting.checkpoint import load_network
    from boosting.inference import calibrate
    from boosting.tolerable import reference_correctness

    net = load_network(path).net
    xc = family["train"].tensors[0][:128]
    cal = calibrate(net, DataLoader(TensorDataset(xc), batch_size=256), spec.fmt)
    x, y = family["test"].tensors
    return float(reference_correctness(net, x[:60], y[:60], spec, cal).mean())


def test_goal_is_anchored_at_the_original_network(family) -> None:
    from boosting.characterization import characterize_network
    from softmc_host.files import sha256_file

    paths = family["paths"]
    spec = ErrorSpec(get_model("uniform"), fmt="int8", mitigation="zero")
    original = _format_accuracy(paths["root"], family, spec)
    for name in ("control", "reboosted"):  # a control child and a boosted grandchild
        doc = characterize_network(paths[name], spec, **FAMILY_KW)
        ref = doc["reference"]
        assert ref == {"path": str(paths["root"]), "sha256": sha256_file(paths["root"]),
                       "accuracy": pytest.approx(original), "source": "ancestor"}
        assert doc["coarse"]["baseline"] == pytest.approx(original)
        assert doc["coarse"]["goal"] == pytest.approx(original - 0.05)
        own = _format_accuracy(paths[name], family, spec)
        assert doc["clean"]["fmt"] == pytest.approx(own) and own != pytest.approx(original)
        assert doc["coarse"]["goal"] != pytest.approx(own - 0.05)  # not the child's own accuracy
        assert 0.0 <= doc["clean"]["fp32"] <= 1.0
    value = characterize_network(paths["boosted"], spec, reference=0.9, **FAMILY_KW)
    assert value["reference"] == {"path": None, "sha256": None, "accuracy": 0.9, "source": "value"}
    assert value["coarse"]["goal"] == pytest.approx(0.85)
    own = characterize_network(paths["root"], spec, **FAMILY_KW)  # no parent: the network itself, in int8
    assert own["reference"]["source"] == "self" and own["coarse"]["baseline"] == pytest.approx(original)
    assert own["reference"]["accuracy"] == own["clean"]["fmt"]
    with pytest.raises(CharacterizeError, match="does not exist"):
        characterize_network(paths["root"], spec, reference=str(paths["root"]) + ".missing", **FAMILY_KW)


def test_root_ancestor_follows_existing_parents(family, tmp_path, caplog) -> None:
    import shutil

    from boosting.characterization import root_ancestor
    from boosting.checkpoint import load_network

    paths = family["paths"]
    assert root_ancestor(load_network(paths["root"])) is None
    assert root_ancestor(load_network(paths["reboosted"])).path == paths["root"]
    # a child whose parent file is gone: no ancestor (the network itself anchors the goal)
    moved = tmp_path / "orphan.pt"
    shutil.copy(paths["orphan"], moved)
    nf = load_network(moved)
    nf.meta["parent"]["path"] = str(tmp_path / "gone.pt")
    with caplog.at_level("WARNING", logger="boosting.characterization"):
        assert root_ancestor(nf) is None
    assert any("not found" in r.getMessage() for r in caplog.records)


def test_cli_reference_and_holdout_errors(family, tmp_path, capsys) -> None:
    from boosting.characterize import main

    paths = family["paths"]
    out = str(tmp_path / "t.json")
    common = [str(paths["boosted"]), "--workers", "0", "--samples", "60", "--seeds", "0", "--statistic", "mean",
              "--ber-min", "1e-4", "--ber-max", "1e-2", "--tol", "2", "--max-drop", "0.3", "--no-plot", "-o", out]
    for extra, needle in ((["--reference", str(tmp_path / "nope.pt")], "does not exist"),
                          (["--reference", "1.5"], "[0, 1]"),
                          (["--seeds", "0,1005"], "held-out")):
        assert main(common + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert main(common + ["--reference", str(paths["root"]), "--holdout-seeds", "3", "--calib-samples", "128",
                          "-q"]) == 0
    printed = capsys.readouterr().out
    assert "reference given" in printed and "held-out (3 seeds)" in printed
    doc = json.loads(open(out).read())
    assert doc["reference"]["source"] == "given" and doc["holdout_seeds"] == [1000, 1001, 1002]
    assert doc["reference"]["path"] == str(paths["root"])
    spec = ErrorSpec(get_model("uniform"), fmt="int8", mitigation="zero")
    assert doc["coarse"]["baseline"] == pytest.approx(_format_accuracy(paths["root"], family, spec))
    assert doc["coarse"]["holdout"]["seeds"] == [1000, 1001, 1002]
    from boosting.tolerance import read_tolerance

    tol = read_tolerance(out)
    assert tol.reference.source == "given" and tol.coarse.holdout.seeds == [1000, 1001, 1002]

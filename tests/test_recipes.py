"""boosting.recipes and the recipe mechanics of boosting.retrain: clipping, control, mixing, RandBET, selection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from boosting import retrain as retrain_mod
from boosting import train as train_mod
from boosting.checkpoint import load_network, save_network
from boosting.data import from_tensors, load_dataset
from boosting.inference import ErrorInjector, ErrorSpec, calibrate
from boosting.networks import get_network
from boosting.recipes import RECIPES, Recipe, RecipeError, get_recipe
from boosting.retrain import EpochStats, RetrainError, retrain
from boosting.training import TrainError, boost
from errormodels.models import get_model


class Tiny(nn.Module):
    """One convolution and one linear layer on 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def data() -> tuple:
    full = load_dataset("digits", split="train")
    x, y = full.tensors
    return from_tensors(x[:128], y[:128]), from_tensors(x[128:192], y[128:192])


class Recorder(ErrorInjector):
    """An injector that remembers, on exit, its spec's BER and the flips per (layer, kind)."""

    log: list = []

    def __init__(self, *args, **kwargs) -> None:  # retrain() turns stats off; the recorder needs them
        super().__init__(*args, **{**kwargs, "collect_stats": True})

    def __exit__(self, *exc) -> None:
        Recorder.log.append((self.spec.model.ber, {k: v.bits_flipped for k, v in self.stats.items()},
                             sum(v.bits_total for v in self.stats.values())))
        super().__exit__(*exc)


@pytest.fixture
def recorder(monkeypatch) -> list:
    Recorder.log = []
    monkeypatch.setattr(retrain_mod, "ErrorInjector", Recorder)
    return Recorder.log


SPEC = ErrorSpec(get_model("uniform", ber=1e-2), fmt="int8", seed=1)


# -------------------------------------------------------------------------- recipes
def test_presets_and_get_recipe() -> None:
    assert set(RECIPES) == {"eden", "control", "mixed", "clip", "randbet"}
    with pytest.raises(RecipeError) as info:
        get_recipe("stutz")
    assert str(info.value) == "unknown recipe 'stutz'; known: clip, control, eden, mixed, randbet"
    eden = get_recipe("EDEN", epochs=8)
    assert eden.epochs == 8 and RECIPES["eden"].epochs == 4 and eden.kind == "boosted"
    assert eden.target_ber(1e-3) == pytest.approx(3e-3) and eden.target_ber(0.5) == 1.0
    cur = eden.curriculum_for(3e-3)
    assert (cur.target_ber, cur.start_ber, cur.warmup_epochs) == (3e-3, pytest.approx(3e-5), 6)
    with pytest.raises(RecipeError, match="unknown recipe field"):
        get_recipe("eden", epoch=3)
    with pytest.raises(RecipeError, match="weight_clip"):
        Recipe("x", weight_clip=2.0)  # relative clipping is a fraction
    spec = ErrorSpec(get_model("wordline", ber=1e-3), overrides={("fc", "ifm"): 2e-3}, fmt="int4",
                     mitigation="zero", seed=5)
    control = RECIPES["control"]
    assert control.kind == "control" and control.curriculum_for(1e-3) is None
    cs = control.train_spec(spec)
    assert cs.model.ber == 0.0 and cs.overrides == {("fc", "ifm"): 0.0}
    assert (cs.fmt, cs.mitigation, cs.seed) == ("int4", "zero", 5)  # the format comes from the spec
    rb = RECIPES["randbet"]
    rs = rb.train_spec(spec)
    assert rs.model.to_dict()["model"] == "uniform" and rs.model.ber == 1e-3 and rs.fmt == "int4"
    kw = rb.retrain_kwargs()
    assert kw["mix"] == "sum" and kw["errors_in"] == "weights" and kw["weight_clip"] == 0.5
    assert RECIPES["eden"].train_spec(spec) is spec
    for r in RECIPES.values():
        assert Recipe.from_dict(r.to_dict()) == r


# ------------------------------------------------------------------------ mechanics
def test_weight_clipping_bounds_the_weights(data: tuple) -> None:
    train, _ = data
    net = Tiny()
    start = {n: float(m.weight.detach().abs().max()) for n, m in (("conv", net.conv), ("fc", net.fc))}
    retrain(net, train, SPEC, epochs=1, lr=1e-2, batch_size=32, weight_clip=0.5)  # relative
    assert float(net.conv.weight.detach().abs().max()) <= 0.5 * start["conv"] + 1e-7
    assert float(net.fc.weight.detach().abs().max()) <= 0.5 * start["fc"] + 1e-7
    net = Tiny()
    retrain(net, train, SPEC, epochs=1, lr=1e-2, batch_size=32, weight_clip=0.02, clip_mode="absolute")
    assert float(net.conv.weight.detach().abs().max()) <= 0.02 and float(net.fc.weight.detach().abs().max()) <= 0.02
    assert float(net.conv.bias.detach().abs().max()) > 0.02  # biases are not clipped
    with pytest.raises(RetrainError, match="weight_clip"):
        retrain(Tiny(), train, SPEC, epochs=1, weight_clip=0.0)


def test_control_sees_no_errors_and_eden_does(data: tuple, recorder: list) -> None:
    train, _ = data
    retrain(Tiny(), train, RECIPES["control"].train_spec(SPEC), epochs=1, batch_size=32)
    assert recorder and all(ber == 0.0 and sum(f.values()) == 0 and total > 0 for ber, f, total in recorder)
    recorder.clear()
    retrain(Tiny(), train, SPEC, epochs=1, batch_size=32)
    assert sum(sum(f.values()) for _, f, _ in recorder) > 0


def test_mixed_batches_use_clean_and_error_passes(data: tuple, recorder: list) -> None:
    train, _ = data
    res = retrain(Tiny(), train, SPEC, epochs=2, batch_size=16, clean_fraction=0.5)
    assert [e.clean_steps for e in res.epochs] == [4, 4] and [e.steps for e in res.epochs] == [8, 8]
    bers = [ber for ber, _, _ in recorder]
    assert bers.count(0.0) == 8 and bers.count(1e-2) == 8  # alternating: every switch leaves an injector
    with pytest.raises(RetrainError, match="clean_fraction"):
        retrain(Tiny(), train, SPEC, epochs=1, clean_fraction=0.5, mix="sum")


def test_randbet_perturbs_only_the_weights(data: tuple, recorder: list) -> None:
    train, _ = data
    rb = RECIPES["randbet"]
    spec = rb.train_spec(ErrorSpec(get_model("wordline", ber=5e-3), fmt="int8", seed=3))
    kw = {k: v for k, v in rb.retrain_kwargs().items() if k not in ("select", "select_seeds", "select_clean_weight")}
    retrain(Tiny(), train, spec, epochs=1, **{**kw, "batch_size": 32})
    error_passes = [f for ber, f, _ in recorder if ber > 0]
    clean_passes = [f for ber, f, _ in recorder if ber == 0]
    assert len(error_passes) == len(clean_passes) == 4  # mix="sum": both losses on every batch
    assert sum(f[(n, "weight")] for f in error_passes for n in ("conv", "fc")) > 0
    assert all(f[(n, "ifm")] == 0 for f in error_passes + clean_passes for n in ("conv", "fc"))


def test_val_selection_keeps_the_best_scoring_epoch(data: tuple) -> None:
    train, val = data
    scores = iter([0.2, 0.9, 0.5])
    snapshots: dict[int, dict] = {}
    net = Tiny()

    def keep(stats: EpochStats) -> None:
        snapshots[stats.epoch] = {k: v.clone() for k, v in net.state_dict().items()}

    res = retrain(net, train, SPEC, epochs=3, batch_size=32, select="val", score=lambda n: next(scores),
                  on_epoch=keep)
    assert res.best_epoch == 1 and [e.val_score for e in res.epochs] == [0.2, 0.9, 0.5]
    for k, v in net.state_dict().items():
        assert torch.equal(v, snapshots[1][k]) and torch.equal(res.state_dict[k], v)
    # the built-in score: (clean + under errors) / 2 on the validation data
    res = retrain(Tiny(), train, SPEC, epochs=2, batch_size=32, select="val", val_data=val, select_seeds=(0,))
    e = res.epochs[res.best_epoch]
    assert e.val_score == pytest.approx((e.val_clean + e.val_error) / 2)
    assert e.val_score == max(x.val_score for x in res.epochs)
    with pytest.raises(RetrainError, match="val_data"):
        retrain(Tiny(), train, SPEC, epochs=1, select="val")


def test_recalibrate_recomputes_the_calibration(data: tuple) -> None:
    train, _ = data
    net = Tiny()
    cal = calibrate(net, [train.tensors], "int8")
    spec = ErrorSpec(get_model("uniform", ber=1e-3), fmt="int8", mitigation="zero", seed=0)
    fixed = retrain(net, train, spec, epochs=1, lr=1e-2, calibration=cal)
    assert fixed.calibration is cal
    net = Tiny()
    res = retrain(net, train, spec, epochs=2, lr=1e-2, calibration=cal, recalibrate=True, calib_data=train)
    assert res.calibration is not cal and res.calibration.weight_ranges != cal.weight_ranges
    with pytest.raises(RetrainError, match="calib_data"):
        retrain(Tiny(), train, spec, epochs=1, calibration=cal, recalibrate=True)


def test_resume_with_recipe_mechanics_is_bitwise_equal(data: tuple, tmp_path: Path) -> None:
    train, val = data
    spec = ErrorSpec(get_model("uniform", ber=1e-2), fmt="int8", mitigation="zero", seed=2)
    cal = calibrate(Tiny(), [train.tensors], "int8")
    kw = dict(epochs=3, lr=5e-3, seed=1, batch_size=32, calibration=cal, clean_fraction=0.5, weight_clip=0.5,
              recalibrate=True, calib_data=train, select="val", val_data=val, select_seeds=(0,))
    full = retrain(Tiny(), train, spec, **kw)

    class Stop(Exception):
        pass

    def stop(stats: EpochStats) -> None:
        if stats.epoch == 1:
            raise Stop

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Stop):
        retrain(Tiny(), train, spec, checkpoint_path=ckpt, on_epoch=stop, **kw)
    resumed = retrain(Tiny(), train, spec, checkpoint_path=ckpt, **kw)
    assert resumed.resumed_from == 2 and resumed.epochs == full.epochs and resumed.best_epoch == full.best_epoch
    for k in full.state_dict:
        assert torch.equal(full.state_dict[k], resumed.state_dict[k]), k
    with pytest.raises(RetrainError, match="other retraining arguments"):
        retrain(Tiny(), train, spec, checkpoint_path=ckpt, **{**kw, "weight_clip": 0.4})


# ---------------------------------------------------------------------------- boost
@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    build = {"num_classes": 10, "in_channels": 1, "image_size": 16}
    net = get_network("lenet", seed=0, **build)
    path = tmp_path_factory.mktemp("recipes") / "lenet.pt"
    return save_network(path, net, network="lenet", build=build, seed=0,
                        dataset={"name": "digits", "root": None, "image_size": 16, "normalize": False,
                                 "split_seed": 0, "val_fraction": 0.1, "val_seed": 0}, meta={"kind": "clean"})


def test_boost_with_recipes_records_kind_recipe_parent(parent: Path, tmp_path: Path) -> None:
    spec = ErrorSpec(get_model("uniform", ber=1e-2), fmt="int8", mitigation="zero", seed=0)
    kw = dict(seeds=(0,), eval_samples=40, calib_samples=64, val_samples=40, train_samples=96, plot=False, epochs=1)
    out = boost(parent, spec, recipe="control", out=tmp_path / "control.pt", **kw)
    meta = load_network(out).meta
    assert meta["kind"] == "control" and meta["recipe"]["name"] == "control" and meta["recipe"]["epochs"] == 1
    assert meta["parent"]["path"] == str(parent) and meta["spec"]["model"]["ber"] == 1e-2
    assert meta["train_spec"]["model"]["ber"] == 0.0 and meta["history"][0]["ber"] == 0.0
    out = boost(parent, spec, recipe=get_recipe("mixed"), out=tmp_path / "mixed.pt", **kw)
    meta = load_network(out).meta
    assert meta["kind"] == "boosted" and meta["best_epoch"] == 0 and meta["recipe"]["select"] == "val"
    assert meta["settings"]["validation"] == {"source": "file", "n_samples": 40}
    assert meta["history"][0]["val_score"] is not None and meta["history"][0]["clean_steps"] > 0
    with pytest.raises(TrainError, match="curriculum"):
        boost(parent, spec, recipe="eden", curriculum=RECIPES["eden"].curriculum_for(1e-2), out=tmp_path / "x.pt")
    with pytest.raises(RecipeError, match="known"):
        boost(parent, spec, recipe="nope", out=tmp_path / "x.pt")


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_cli_recipe_errors_are_one_line(parent: Path, tmp_path: Path, capsys) -> None:
    base = ["--network-file", str(parent), "--ber", "1e-2", "-o", str(tmp_path / "b.pt"), "--no-progress"]
    assert train_mod.main(["boost", *base, "--recipe", "stutz"]) == 2
    assert "unknown recipe 'stutz'; known: clip, control, eden, mixed, randbet" in _one_error_line(capsys.readouterr().err)
    assert train_mod.main([*base, "--recipe", "eden", "--schedule", "linear"]) == 2
    assert "sets the curriculum" in _one_error_line(capsys.readouterr().err)
    assert train_mod.main(["train", *base]) == 2
    assert "'train' builds a new network" in _one_error_line(capsys.readouterr().err)
    assert train_mod.main(["--network", "lenet", "--recipe", "eden", "-o", str(tmp_path / "c.pt")]) == 2
    assert "apply to boosting" in _one_error_line(capsys.readouterr().err)
    assert train_mod.main([*base, "--control"]) == 2
    assert "--control needs --recipe" in _one_error_line(capsys.readouterr().err)


def test_cli_control_trains_the_recipes_schedule_without_errors(parent: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ctl.pt"
    args = ["--network-file", str(parent), "--ber", "1e-2", "--recipe", "randbet", "--control", "--epochs", "1",
            "--samples", "40", "--seeds", "0", "-o", str(out), "--no-progress", "--no-plot"]
    assert train_mod.main(args) == 0, capsys.readouterr().err
    meta = load_network(out).meta
    assert meta["kind"] == "control" and meta["recipe"]["name"] == "control-randbet"
    assert meta["recipe"]["weight_clip"] == RECIPES["randbet"].weight_clip  # the same schedule and clipping
    assert meta["train_spec"]["model"]["ber"] == 0.0

"""The boosting command-line tools: python -m boosting.train, python -m boosting.characterize, plots."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from boosting import characterize as char_mod
from boosting import train as train_mod
from boosting.checkpoint import load_network, save_network
from boosting.inference import ErrorSpec
from boosting.plots import plot_accuracy_vs_ber
from boosting.retrain import Curriculum
from errormodels.models import ModelError, get_model
from conftest import lenet_from

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def parent(lenet_digits_state, tmp_path_factory) -> Path:
    """A network file holding the session's LeNet trained on digits."""
    state, _, _ = lenet_digits_state
    path = tmp_path_factory.mktemp("cli") / "lenet.pt"
    save_network(path, lenet_from(state), network="lenet", build={"num_classes": 10, "in_channels": 1, "image_size": 28},
                 seed=0, dataset={"name": "digits", "root": None, "image_size": 28, "normalize": False, "split_seed": 0},
                 meta={"kind": "clean"})
    return path


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_train_cli_writes_network_json_csv(tmp_path, capsys):
    out = tmp_path / "out" / "lenet.pt"
    rc = train_mod.main(["--network", "lenet", "--dataset", "digits", "--epochs", "1", "--seed", "0",
                         "--no-progress", "-o", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "test acc" in table and "clean test accuracy" in table
    nf = load_network(out)
    assert nf.network == "lenet" and nf.dataset["image_size"] == 28 and nf.net.input_shape == (1, 28, 28)
    assert nf.meta["kind"] == "clean" and len(nf.meta["history"]) == 1
    assert nf.meta["clean_test_accuracy"] > 0.5  # one epoch on digits is far above chance
    doc = json.loads((tmp_path / "out" / "lenet.train.json").read_text())
    assert doc["format"] == "eden-train" and doc["network"]["sha256"] == train_mod.file_sha256(out)
    assert doc["clean_test_accuracy"] == nf.meta["clean_test_accuracy"]
    with open(tmp_path / "out" / "lenet.train.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["0"] and {"loss", "train_acc", "test_acc"} <= set(rows[0])
    assert (tmp_path / "out" / "lenet.train.png").stat().st_size > 0


def test_boost_interrupted_then_resumed_by_cli(parent, tmp_path, capsys):
    out = tmp_path / "boosted.pt"
    ckpt = tmp_path / "boosted.boost-ckpt.pt"
    spec = ErrorSpec(get_model("uniform", ber=1e-3), fmt="int8", mitigation="zero", seed=0)

    def stop(stats):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_mod.boost(parent, spec, epochs=2, curriculum=Curriculum(1e-3, None, 1, "log"), out=out,
                        seeds=(0, 1), eval_samples=40, calib_samples=64, progress=False, plot=False, on_epoch=stop)
    assert ckpt.is_file() and not out.exists()
    # the same boosting from the command line picks the checkpoint up
    rc = train_mod.main(["--from", str(parent), "--error-model", "uniform", "--ber", "1e-3", "--fmt", "int8",
                         "--mitigation", "zero", "--epochs", "2", "--seeds", "0,1", "--samples", "40",
                         "--calib-samples", "64", "--no-progress", "--no-plot", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "resuming" in captured.err
    nf = load_network(out)
    meta = nf.meta
    assert meta["kind"] == "boosted" and meta["resumed_from"] == 1
    assert [h["ber"] for h in meta["history"]] == pytest.approx([1e-5, 1e-3])
    assert meta["spec"]["model"]["model"] == "uniform" and meta["spec"]["fmt"] == "int8"
    for tag in ("before", "after"):
        acc = meta[tag]["under_spec"]
        assert acc["seeds"] == [0, 1] and acc["n_samples"] == 40 and acc["ci_low"] <= acc["mean"] <= acc["ci_high"]
    assert meta["parent"]["sha256"] == train_mod.file_sha256(parent)
    assert not ckpt.exists()  # removed once the output is written
    with open(tmp_path / "boosted.train.csv") as fh:
        stages = [r["stage"] for r in csv.DictReader(fh)]
    assert stages == ["boost", "boost", "before", "after"]


def test_characterize_cli_serial(parent, tmp_path, capsys):
    out = tmp_path / "tol" / "tolerance.json"
    rc = char_mod.main([str(parent), "--error-model", "uniform", "--fmt", "int8", "--mitigation", "zero",
                        "--workers", "0", "--samples", "60", "--seeds", "0,1", "--statistic", "mean",
                        "--max-drop", "0.1", "--ber-min", "1e-5", "--ber-max", "0.05", "--tol", "1.5",
                        "--mode", "both", "--max-steps", "1", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "coarse" in captured.err and "tolerated uniform BER" in captured.out
    doc = json.loads(out.read_text())
    assert doc["format"] == "eden-tolerance" and doc["format_version"] == 1
    assert doc["network"]["sha256"] == train_mod.file_sha256(parent)
    assert doc["fmt"] == "int8" and doc["mitigation"] == "zero" and doc["model"]["model"] == "uniform"
    assert doc["seeds"] == [0, 1] and doc["max_drop"] == 0.1 and doc["samples"] == 60
    coarse = doc["coarse"]
    assert coarse["found"] and 1e-5 <= coarse["ber"] < 0.05
    assert coarse["probes"][0]["stage"] == "baseline"
    fine = doc["fine"]
    assert fine is not None and fine["start_ber"] == coarse["ber"]
    assert len(fine["bers"]) == 2 * len(doc["layers"]) and all(b >= fine["start_ber"] for _, _, b in fine["bers"])
    with open(tmp_path / "tol" / "tolerance.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(coarse["probes"]) + len(fine["probes"])
    assert (tmp_path / "tol" / "tolerance.png").stat().st_size > 0


def test_characterize_cli_curve_and_layer_types(parent, tmp_path, capsys):
    out = tmp_path / "tol.json"
    rc = char_mod.main([str(parent), "--error-model", "uniform", "--fmt", "int8", "--workers", "0", "--samples", "60",
                        "--seeds", "0", "--holdout-seeds", "0", "--curve-seeds", "3", "--max-drop", "0.05",
                        "--ber-min", "1e-4", "--ber-max", "0.1", "--tol", "1", "--layer-types", "conv",
                        "--no-plot", "-q", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(out.read_text())
    # only the conv layers get errors (and are searched)
    assert doc["spec"]["layer_types"] == ["conv"] and doc["layers"] and all("features" in n for n in doc["layers"])
    cv = doc["curve"]
    assert len(cv["bers"]) == len(cv["mean"]) == 13 and cv["seeds"] == [0, 1, 2]
    t = cv["tolerable"]
    assert t["goal"] == pytest.approx(doc["reference"]["accuracy"] - 0.05)
    assert t["ci_low"] <= t["ber"] <= t["ci_high"] and t["n_seeds"] == 3 and t["n_samples"] == 60
    assert "tolerable BER" in captured.out
    with pytest.raises(SystemExit) as exc:  # a usage error: one line, status 2
        char_mod.main([str(parent), "--layer-types", "relu", "-o", str(out)])
    assert exc.value.code == 2
    assert "unknown layer type(s) 'relu'" in _one_error_line(capsys.readouterr().err)


def test_characterize_network_is_deterministic(parent):
    spec = ErrorSpec(get_model("uniform"), fmt="int8", mitigation="zero")
    kw = dict(mode="coarse", seeds=(0, 1), ber_min=1e-4, ber_max=1e-2, tol=2.0, workers=0, samples=40,
              statistic="mean", max_drop=0.2)
    a = char_mod.characterize_network(parent, spec, **kw)
    b = char_mod.characterize_network(parent, spec, **kw)
    assert a["coarse"] == b["coarse"] and a["fine"] is None
    # the document's numbers are those of a direct evaluation: the first 40 test images, int8 with
    # zero mitigation, calibrated on the first 512 training images, each probe's mask seeds
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from boosting.inference import calibrate, evaluate

    nf = load_network(parent)
    net = nf.net.eval()
    x, y = (t[:40] for t in nf.load_split("test").tensors)
    cal = calibrate(net, DataLoader(TensorDataset(nf.load_split("train").tensors[0][:512]), batch_size=256), "int8")
    loader = DataLoader(TensorDataset(x, y), batch_size=256)
    with torch.no_grad():
        assert a["clean"]["fp32"] == int((net(x).argmax(1) == y).sum()) / len(y)
    at_zero = evaluate(net, loader, dataclasses.replace(spec, model=spec.model.with_ber(0.0)), seeds=(0,),
                       calibration=cal)
    assert a["reference"]["source"] == "self" and a["reference"]["accuracy"] == at_zero.mean == a["clean"]["fmt"]
    probes = [p for p in a["coarse"]["probes"] if p["stage"] == "coarse"]
    assert len(probes) >= 2 and a["coarse"]["found"]
    for p in probes:
        probe_spec = dataclasses.replace(spec, model=spec.model.with_ber(p["ber"]))
        direct = [evaluate(net, loader, probe_spec, seeds=(s,), calibration=cal).mean for s in p["mask_seeds"]]
        assert p["per_seed"] == pytest.approx(direct, abs=1e-12), p["ber"]
        assert p["passed"] == (sum(direct) / len(direct) >= a["coarse"]["goal"])
    assert a["coarse"]["ber"] == max(p["ber"] for p in probes if p["passed"])


@pytest.mark.parametrize("tool, argv, needle", [
    ("train", ["--from", "{parent}", "--error-model", "no-such-model", "--ber", "1e-3", "-o", "{tmp}/x.pt"],
     "unknown error model"),
    ("train", ["--from", "{parent}", "--error-model", "uniform", "--ber", "abc", "-o", "{tmp}/x.pt"], "--ber"),
    ("train", ["--from", "{parent}", "--error-model", "uniform", "--ber", "2", "-o", "{tmp}/x.pt"], "(0, 1]"),
    ("train", ["--from", "{tmp}/missing.pt", "--error-model", "uniform", "-o", "{tmp}/x.pt"], "does not exist"),
    ("train", ["--network", "no-such-net", "-o", "{tmp}/x.pt"], "unknown network"),
    # the message of the one model-file reader (errormodels.read_model_file)
    ("train", ["--from", "{parent}", "--error-model", "{tmp}/missing.json", "-o", "{tmp}/x.pt"], "does not exist"),
    ("characterize", ["{tmp}/missing.pt", "-o", "{tmp}/t.json"], "does not exist"),
    ("characterize", ["{parent}", "--error-model", "nope", "-o", "{tmp}/t.json"], "unknown error model"),
    ("characterize", ["{parent}", "--ber-min", "-1", "-o", "{tmp}/t.json"], "--ber-min"),
    ("characterize", ["{parent}", "--seeds", "0,x", "-o", "{tmp}/t.json"], "seeds"),
])
def test_bad_input_exits_2_with_one_line(tool, argv, needle, parent, tmp_path, capsys):
    argv = [a.format(parent=parent, tmp=tmp_path) for a in argv]
    main = train_mod.main if tool == "train" else char_mod.main
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert needle in line
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "t.json").exists()


def test_python_dash_m_characterize_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "boosting.characterize", str(tmp_path / "missing.pt")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "does not exist" in _one_error_line(proc.stderr)


@pytest.fixture(scope="module")
def fitted_json(tmp_path_factory) -> Path:
    from errormodels.fit import fit_map

    path = tmp_path_factory.mktemp("fit") / "model.json"
    path.write_text(json.dumps(fit_map(ROOT / "data" / "maps" / "B-seed1.h5"), default=float))
    return path


def test_error_model_from_fitted_json(fitted_json, tmp_path):
    doc = json.loads(fitted_json.read_text())
    model = train_mod.error_model_from(str(fitted_json), {}, None)
    selected = doc["partitions"]["all"]["selected"]
    assert model.name == selected["model"] == doc["selected_model"]
    assert model.ber == pytest.approx(selected["ber"])
    assert train_mod.error_model_from(str(fitted_json), {}, "all") == model
    reseeded = train_mod.error_model_from(str(fitted_json), {"seed": 7}, None)
    assert reseeded == dataclasses.replace(model, seed=7)
    with pytest.raises(train_mod.TrainError, match="unknown partition 'bank9'"):
        train_mod.error_model_from(str(fitted_json), {}, "bank9")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(train_mod.TrainError, match="cannot read"):
        train_mod.error_model_from(str(bad), {}, None)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(train_mod.TrainError, match="not an eden-error-model"):
        train_mod.error_model_from(str(other), {}, None)


def test_error_model_from_name_and_params():
    m = train_mod.error_model_from("wordline", train_mod.parse_model_params(["weak_fraction=0.1", "group_bits=64"]),
                                   None)
    assert m.name == "wordline" and m.weak_fraction == 0.1 and m.group_bits == 64
    assert train_mod.error_model_from("3", {}, None).name == "bit-value"
    with pytest.raises(ModelError):
        train_mod.error_model_from("nope", {}, None)
    with pytest.raises(train_mod.TrainError):
        train_mod.error_model_from("uniform", {}, "all")
    with pytest.raises(train_mod.TrainError):
        train_mod.parse_model_params(["novalue"])


def test_plot_accuracy_vs_ber(tmp_path):
    series = [("baseline", [1e-5, 1e-4, 1e-3], [0.95, 0.9, 0.5], [0.94, 0.88, 0.45], [0.96, 0.92, 0.55]),
              ("boosted", [0.0, 1e-5, 1e-4, 1e-3], [0.96, 0.95, 0.94, 0.8], [0.95, 0.94, 0.92, 0.75],
               [0.97, 0.96, 0.95, 0.85])]
    out = plot_accuracy_vs_ber(series, tmp_path / "p" / "acc.png", goal=0.94, title="test")
    assert out.stat().st_size > 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

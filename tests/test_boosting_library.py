"""boosting as a library: the split of train/characterize by job, lazy package exports, logging instead of
print, the one CI rule, the one model-file reader, the tolerance document's schema, the CLI vocabulary."""

from __future__ import annotations

import ast
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest

import boosting
from boosting import characterization, characterize, cli_args, records, train, training
from boosting.checkpoint import save_network
from boosting.inference import ErrorSpec, confidence_interval
from conftest import lenet_from
from errormodels.models import get_model

ROOT = Path(__file__).resolve().parents[1]
LIBRARY_MODULES = ("training", "characterization", "records", "cli_args", "inference", "retrain", "quant", "data",
                   "networks", "checkpoint", "plots")


@pytest.fixture(scope="module")
def parent(lenet_digits_state, tmp_path_factory) -> Path:
    state, _, _ = lenet_digits_state
    path = tmp_path_factory.mktemp("lib") / "lenet.pt"
    save_network(path, lenet_from(state), network="lenet", build={"num_classes": 10, "in_channels": 1, "image_size": 28},
                 seed=0, dataset={"name": "digits", "root": None, "image_size": 28, "normalize": False, "split_seed": 0},
                 meta={"kind": "clean"})
    return path


# ------------------------------------------------------------------------------ package
def test_import_boosting_is_cheap_and_exports_resolve() -> None:
    code = ("import sys, boosting; heavy = [m for m in ('torch', 'boosting.training', 'boosting.inference') "
            "if m in sys.modules]; print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    for name in boosting.__all__:
        assert getattr(boosting, name) is not None
    assert boosting.train_clean is training.train_clean and boosting.characterize_network is \
        characterization.characterize_network
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        boosting.nope  # noqa: B018
    doc = boosting.__doc__ or ""
    assert "no code yet" not in doc and "still to come" not in doc and "characterize_network" in doc


def test_old_names_are_aliases_of_the_new_homes() -> None:
    from softmc_host import files
    from boosting import checkpoint

    assert train.train_clean is training.train_clean and train.boost is training.boost
    assert train.TrainError is training.TrainError
    assert train.file_sha256 is files.sha256_file
    assert checkpoint.atomic_write is files.atomic_write
    assert train.spec_to_dict is records.spec_to_dict and train.side_path is records.side_path
    for name in ("ber_arg", "positive_int", "nonneg_int", "positive_float", "seeds_arg", "parse_seeds",
                 "parse_model_params", "error_model_from", "add_error_model_args", "mitigation_arg", "FORMATS"):
        assert getattr(train, name) is getattr(cli_args, name), name
    assert characterize._interval is characterize.confidence_interval is confidence_interval
    assert characterize.characterize_network is characterization.characterize_network
    assert characterize.probe_rows is records.probe_rows


@pytest.mark.parametrize("module", LIBRARY_MODULES)
def test_library_modules_never_print(module: str) -> None:
    tree = ast.parse((ROOT / "boosting" / f"{module}.py").read_text())
    prints = [n.lineno for n in ast.walk(tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert prints == [], f"boosting/{module}.py prints at lines {prints}"


# ------------------------------------------------------------------------- one CI rule
def test_confidence_interval_is_the_one_evaluate_uses() -> None:
    from scipy.stats import norm, t

    per_seed = [0.8, 0.9, 0.85]
    mean, lo, hi = confidence_interval(per_seed, 100, 0.95)
    half = t.ppf(0.975, 2) * (float(__import__("numpy").std(per_seed, ddof=1)) / math.sqrt(3))
    assert mean == pytest.approx(0.85) and lo == pytest.approx(0.85 - half) and hi == pytest.approx(0.85 + half)
    # one seed: Wilson's score interval over the samples
    m1, lo1, hi1 = confidence_interval([0.9], 100, 0.95)
    z = norm.ppf(0.975)
    centre = (0.9 + z * z / 200) / (1 + z * z / 100)
    assert lo1 < m1 < hi1 and (lo1 + hi1) / 2 == pytest.approx(centre)
    assert confidence_interval([1.0, 1.0], 10, 0.95)[1:] == (1.0, 1.0)
    assert confidence_interval([0.5], 0, 0.95)[1:] == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        confidence_interval([], 10, 0.95)
    with pytest.raises(ValueError, match="confidence"):
        confidence_interval([0.5, 0.6], 10, 1.5)


# --------------------------------------------------------------------- library calls
def test_train_clean_logs_and_prints_nothing(tmp_path, capsys, caplog) -> None:
    out = tmp_path / "net.pt"
    with caplog.at_level(logging.DEBUG, logger="boosting.training"):
        path = training.train_clean("lenet", "digits", epochs=1, out=out, plot=False, verbose=True)
    captured = capsys.readouterr()
    assert path == out and out.is_file()
    assert captured.out == "" and captured.err == ""  # no print, no bar unless progress=True
    infos = [r.getMessage() for r in caplog.records if r.name == "boosting.training" and r.levelno == logging.INFO]
    assert any("epoch 1/1" in m for m in infos) and any("clean test accuracy" in m for m in infos)
    doc = json.loads((tmp_path / "net.train.json").read_text())
    assert doc["format"] == records.TRAIN_FORMAT and doc["network"]["sha256"] == train.file_sha256(out)
    assert (tmp_path / "net.train.csv").read_text().startswith("epoch,loss,train_acc,test_acc,seconds,val_acc,val_loss,lr,best\n")


def test_characterize_network_search_progress_and_executor(parent, capsys, caplog) -> None:
    spec = ErrorSpec(get_model("uniform"), fmt="int8", mitigation="zero")
    kw = dict(seeds=(0,), ber_min=1e-4, ber_max=1e-2, tol=2.0, workers=0, samples=30, statistic="mean",
              max_drop=0.2)
    seen = []
    with caplog.at_level(logging.DEBUG, logger="boosting.characterization"):
        a = characterization.characterize_network(parent, spec, search="coarse",
                                                  progress=lambda s, p: seen.append((s, p.stage)), **kw)
    assert capsys.readouterr().err == ""
    assert seen[0] == ("coarse", "baseline") and len(seen) == len(a["coarse"]["probes"])
    assert sum("coarse" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG) >= len(seen)
    # mode= is the old name of search=, the document keeps its "mode" key
    b = characterization.characterize_network(parent, spec, mode="coarse", **kw)
    assert a["coarse"] == b["coarse"] and a["mode"] == b["mode"] == "coarse"
    with pytest.raises(characterization.CharacterizeError, match="disagree"):
        characterization.characterize_network(parent, spec, mode="fine", search="coarse", **kw)
    with pytest.raises(characterization.CharacterizeError, match="coarse, fine or both"):
        characterization.characterize_network(parent, spec, search="sideways", **kw)
    # progress=True: a bar on stderr; a caller's executor is used and left open
    executor = characterization.SerialExecutor()
    c = characterization.characterize_network(parent, spec, search="coarse", progress=True, executor=executor,
                                              **{**kw, "workers": 5})
    assert "probe" in capsys.readouterr().err
    # one task per probe and seed (held-out probes included); the reference is measured in this process
    assert executor.submitted == sum(len(p["per_seed"]) for p in c["coarse"]["probes"][1:])
    assert executor.submit(int, 1).result() == 1  # not shut down by the call
    assert c["coarse"] == a["coarse"]


def test_tolerance_documents_validate_with_the_schema(parent, tmp_path) -> None:
    from boosting.tolerance import Tolerance, read_tolerance

    spec = ErrorSpec(get_model("uniform"), fmt="int8", mitigation="zero")
    doc = characterization.characterize_network(parent, spec, search="both", seeds=(0, 1), ber_min=1e-4,
                                                ber_max=1e-2, tol=2.0, workers=0, samples=30, statistic="mean",
                                                max_drop=0.2, max_steps=1)
    json_path, csv_path = records.write_tolerance(doc, tmp_path / "t" / "tol.json")
    tol = read_tolerance(json_path)
    assert isinstance(tol, Tolerance)
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(doc))
    assert len(csv_path.read_text().splitlines()) == 1 + len(doc["coarse"]["probes"]) + len(doc["fine"]["probes"])


# ------------------------------------------------------------------ the one model reader
def test_error_model_from_uses_the_one_model_file_reader(tmp_path) -> None:
    from errormodels.fit import fit_map

    doc = json.loads(json.dumps(fit_map(ROOT / "data" / "maps" / "B-seed1.h5"), default=float))
    good = tmp_path / "model.json"
    good.write_text(json.dumps(doc))
    assert train.error_model_from(str(good)).name == doc["selected_model"]
    # a check the boosting commands' old parser did not make: the format version
    bad = tmp_path / "v2.json"
    bad.write_text(json.dumps({**doc, "format_version": 2}))
    with pytest.raises(train.TrainError, match="format_version"):
        train.error_model_from(str(bad))


# ----------------------------------------------------------------------- CLI vocabulary
def test_train_flags_new_and_old_spellings() -> None:
    p = train.build_parser()
    new = p.parse_args(["--network-file", "a.pt", "-o", "b.pt", "-q", "-v"])
    old = p.parse_args(["--from", "a.pt", "--out", "b.pt", "--no-progress"])
    assert new.network_file == old.network_file == "a.pt" and new.out == old.out == "b.pt"
    assert new.quiet and new.verbose == 1 and old.no_progress and not old.quiet
    assert "--from" not in p.format_help() and "--no-progress" not in p.format_help()


def test_characterize_flags_new_and_old_spellings() -> None:
    p = characterize.build_parser()
    assert p.parse_args(["--mode", "fine"]).search == "fine" and p.parse_args([]).search == "coarse"
    assert p.parse_args(["x.pt", "--quiet"]).quiet and p.parse_args(["x.pt"]).network_pos == "x.pt"
    assert "--mode " not in p.format_help() and "--mode {" not in p.format_help() and "--search" in p.format_help()


@pytest.mark.parametrize("argv, needle", [
    ([], "give the network file"),
    (["a.pt", "--network-file", "b.pt"], "two network files"),
    (["--network-file", "{tmp}/missing.pt"], "does not exist"),
    (["--config", "{tmp}/nope.toml"], "config file"),
])
def test_characterize_network_file_errors(argv, needle, tmp_path, capsys) -> None:
    argv = [a.format(tmp=tmp_path) for a in argv] + ["-o", str(tmp_path / "t.json")]
    try:
        rc = characterize.main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err
    assert not (tmp_path / "t.json").exists()


def test_characterize_cli_config_file_quiet_and_network_file(parent, tmp_path, capsys) -> None:
    config = tmp_path / "char.toml"
    config.write_text('search = "coarse"\nworkers = 0\nsamples = 30\nseeds = "0"\nstatistic = "mean"\n'
                      'max-drop = 0.2\nber-min = 1e-4\nber-max = 1e-2\ntol = 2.0\nno-plot = true\n')
    out = tmp_path / "tol.json"
    rc = characterize.main(["--config", str(config), "--network-file", str(parent), "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "coarse" in captured.err and "tolerated uniform BER" in captured.out  # probes logged, table printed
    doc = json.loads(out.read_text())
    assert doc["samples"] == 30 and doc["seeds"] == [0] and doc["mode"] == "coarse"
    assert not (tmp_path / "tol.png").exists()
    # -q: warnings only, so no probe lines; the flag on the command line overrides the file (max-drop)
    rc = characterize.main(["--config", str(config), str(parent), "-q", "--max-drop", "0.3", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0 and captured.err == ""
    assert json.loads(out.read_text())["max_drop"] == 0.3

"""boosting.journal: finished probe tasks on disk, and an interrupted characterization resumed from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import boosting.journal as journal_mod
from boosting.characterization import NetworkWorkload, characterize_network, coarse_characterize
from boosting.characterize import main as characterize_main
from boosting.inference import ErrorSpec
from boosting.journal import JournalError, ProbeJournal, spec_identity, task_key
from errormodels.models import get_model

SPEC = ErrorSpec(get_model("uniform", ber=1e-3), fmt="int8", seed=3)
KW = dict(search="both", seeds=(0, 1), holdout_seeds=(1000,), ber_min=1e-5, ber_max=1e-1, tol=2.0, factor=10.0,
          max_steps=1, samples=60, statistic="mean", max_drop=0.05, calib_samples=128, executor="serial")


# ---------------------------------------------------------------------------- the file
def test_entries_survive_reopening_and_a_cut_last_line(tmp_path) -> None:
    path = tmp_path / "sub" / "j.probes.jsonl"
    with ProbeJournal(path) as j:
        j.put("a", 0.5, 10)
        j.put("b", 0.25, 10)
        j.put("a", 0.9, 10)  # a key already held is not written again
        assert j.written == 2
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"k": "c", "acc": 0.1')  # an interrupted write
    j = ProbeJournal(path)
    assert j.loaded == 2 and j.get("a") == (0.5, 10) and j.get("c") is None and j.hits == 1
    j.put("c", 0.75, 4)
    j.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1]) == {"k": "c", "acc": 0.75, "n": 4} and len(lines) == 4  # header + 3
    assert ProbeJournal(path).get("c") == (0.75, 4)
    assert ProbeJournal(path, fresh=True).loaded == 0 and ProbeJournal(path).loaded == 0


def test_bad_files_are_one_line_errors(tmp_path, monkeypatch, caplog) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    with pytest.raises(JournalError, match="is not a probe journal"):
        ProbeJournal(other)
    assert other.read_text() == "hello\n"  # left alone
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"format": journal_mod.JOURNAL_FORMAT, "format_version": 99}) + "\n")
    with pytest.raises(JournalError, match="format_version 99"):
        ProbeJournal(newer)
    with pytest.raises(JournalError, match="is a directory"):
        ProbeJournal(tmp_path)
    # another toolkit version: started over, with a warning
    path = tmp_path / "old.jsonl"
    with ProbeJournal(path) as j:
        j.put("a", 0.5, 10)
    monkeypatch.setattr(journal_mod, "_toolkit_version", lambda: "9.9.9")
    assert ProbeJournal(path).loaded == 0
    assert "starting it over" in caplog.text
    # an unreadable line in the middle is skipped, the rest kept
    path.write_text(path.read_text() + "garbage\n" + json.dumps({"k": "z", "acc": 1.0, "n": 1}) + "\n")
    assert ProbeJournal(path).loaded == 1


def test_keys_separate_what_changes_a_result() -> None:
    base = task_key("f", "probe", spec_identity(SPEC), 1)
    assert base == task_key("f", "probe", spec_identity(SPEC), 1)
    others = {task_key("g", "probe", spec_identity(SPEC), 1), task_key("f", "reference", spec_identity(SPEC), 1),
              task_key("f", "probe", spec_identity(SPEC), 2),
              task_key("f", "probe", spec_identity(SPEC.__class__(SPEC.model.with_ber(2e-3), fmt="int8", seed=3)), 1),
              task_key("f", "probe", spec_identity(SPEC.__class__(SPEC.model, fmt="int8", seed=4)), 1),
              task_key("f", "probe", spec_identity(SPEC.__class__(SPEC.model, fmt="int8", seed=3,
                                                                  overrides={("c1", "weight"): 1e-2})), 1)}
    assert base not in others and len(others) == 6
    with pytest.raises(JournalError, match="task kind"):
        task_key("f", "nope", "null", 0)


def test_fingerprint_follows_the_network_data_and_calibration(lenet_digits_state) -> None:
    from conftest import lenet_from

    state, _, test = lenet_digits_state
    x, y = test.tensors
    w = NetworkWorkload(lenet_from(state), x[:40], y[:40])
    fp = w.fingerprint()
    assert fp == NetworkWorkload(lenet_from(state), x[:40].clone(), y[:40].clone()).fingerprint()
    assert fp != NetworkWorkload(lenet_from(state), x[:39], y[:39]).fingerprint()
    assert fp != NetworkWorkload(lenet_from(state), x[:40], y[:40], batch_size=7).fingerprint()
    with torch.no_grad():
        next(w.net.parameters()).add_(1e-3)
    assert w.fingerprint() == fp  # cached until told
    w.changed()
    assert w.fingerprint() != fp


# ------------------------------------------------------------------------------ resuming
class _Stop(Exception):
    pass


def test_an_interrupted_characterization_resumes_to_the_same_document(lenet_file, tmp_path) -> None:
    uninterrupted = characterize_network(lenet_file, SPEC, **KW)
    path = tmp_path / "t.probes.jsonl"
    seen = {"n": 0}

    def stop_after_five(search, probe) -> None:
        seen["n"] += 1
        if seen["n"] == 6:
            raise _Stop

    with pytest.raises(_Stop):
        characterize_network(lenet_file, SPEC, journal=str(path), progress=stop_after_five, **KW)
    j = ProbeJournal(path)
    assert j.loaded >= 5  # at least one task per finished probe
    resumed = characterize_network(lenet_file, SPEC, journal=j, **KW)
    assert resumed == uninterrupted
    assert j.hits == j.loaded and j.written > 0  # the finished tasks were not run again, the rest were
    total = j.hits + j.written
    j.close()
    # a complete journal answers everything; other samples share nothing with it
    j = ProbeJournal(path)
    assert characterize_network(lenet_file, SPEC, journal=j, **KW) == uninterrupted
    assert (j.hits, j.written) == (total, 0)
    other = characterize_network(lenet_file, SPEC, journal=j, **{**KW, "samples": 50})
    assert other["samples"] == 50 and j.hits == total and j.written > 0
    j.close()


class _NoFingerprint:
    layers = ("a",)

    def clean(self) -> tuple[float, int]:
        return 0.9, 10

    def __call__(self, spec, seed) -> tuple[float, int]:
        return 0.9, 10


def test_a_journal_needs_a_fingerprint(tmp_path) -> None:
    from boosting.characterization import CharacterizeError
    from profiler.executors import SerialExecutor

    with ProbeJournal(tmp_path / "j.jsonl") as j, pytest.raises(CharacterizeError, match="fingerprint"):
        coarse_characterize(_NoFingerprint(), SPEC, executor=SerialExecutor(), journal=j)


def test_retraining_refingerprints_the_network(lenet_file, tmp_path) -> None:
    kw = {**KW, "search": "coarse", "retrain_epochs": 1, "samples": 40, "calib_samples": 64, "holdout_seeds": ()}
    path = tmp_path / "r.jsonl"
    first = characterize_network(lenet_file, SPEC, journal=str(path), **kw)
    entries = path.read_text().splitlines()[1:]
    probes = [p for p in first["coarse"]["probes"] if p["stage"] != "baseline"]
    assert len(entries) == sum(len(p["per_seed"]) for p in probes)  # each retrained net its own fingerprint
    j = ProbeJournal(path)
    assert characterize_network(lenet_file, SPEC, journal=j, **kw) == first
    j.close()


# ------------------------------------------------------------------------------ command
def test_command_keeps_a_journal_beside_the_document(lenet_file, tmp_path, capsys, caplog) -> None:
    out = tmp_path / "tol.json"
    args = [str(lenet_file), "--error-model", "uniform", "--fmt", "int8", "--seeds", "0", "--holdout-seeds", "0",
            "--curve-seeds", "0", "--ber-min", "1e-4", "--ber-max", "1e-2", "--tol", "2", "--samples", "40",
            "--calib-samples", "64", "--executor", "serial", "--no-plot", "--statistic", "mean", "-o", str(out)]
    assert characterize_main(args) == 0
    journal = tmp_path / "tol.probes.jsonl"
    first = json.loads(out.read_text())
    n = len(journal.read_text().splitlines())
    assert n > 2
    caplog.set_level("INFO", logger="boosting.characterization")
    assert characterize_main(args) == 0
    assert "answered from the probe journal" in caplog.text
    assert json.loads(out.read_text())["coarse"] == first["coarse"]
    assert len(journal.read_text().splitlines()) == n  # nothing run again
    assert characterize_main(args + ["--fresh"]) == 0 and len(journal.read_text().splitlines()) == n
    elsewhere = tmp_path / "j" / "mine.jsonl"
    assert characterize_main(args + ["--journal", str(elsewhere)]) == 0 and elsewhere.is_file()
    capsys.readouterr()
    assert characterize_main(args + ["--no-journal", "--fresh"]) == 2
    assert "--no-journal excludes" in capsys.readouterr().err
    Path(journal).write_text("not a journal\n")
    assert characterize_main(args) == 2
    assert "is not a probe journal" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lenet_file(lenet_digits_state, tmp_path_factory) -> Path:
    """A network file of the session's LeNet (digits, 28x28)."""
    from conftest import lenet_from

    from boosting.checkpoint import save_network

    state, _, _ = lenet_digits_state
    path = tmp_path_factory.mktemp("net") / "lenet.pt"
    return save_network(path, lenet_from(state), network="lenet", meta={"kind": "clean"}, seed=0,
                        build={"num_classes": 10, "in_channels": 1, "image_size": 28},
                        dataset={"name": "digits", "root": None, "image_size": 28, "normalize": False,
                                 "split_seed": 0})

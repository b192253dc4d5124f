"""The whole EDEN flow on the emulated bench, small: stages, resume, report tracing, energy model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import stages as st
from pipeline.energy import DdrTiming, Tensor, energy_report, latency_ns, stream_of
from pipeline.flow import STAGES, FlowError, FlowOptions, run_flow
from pipeline.report import check_report, lookup


def _small(out: Path, **kw) -> FlowOptions:
    base = dict(out=str(out), vdd="1.35,1.1,1.05,1.025,1.0", epochs=2, boost_epochs=1, seeds=(0, 1),
                hil_repeats=2, batch_size=12, workers=0, progress=False)
    base.update(kw)
    return FlowOptions(**base)


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("eden")
    lines: list[str] = []
    run_flow(_small(out), log=lines.append)
    return out, lines


def test_every_stage_writes_its_outputs(flow_run) -> None:
    out, lines = flow_run
    record = json.loads((out / "stages.json").read_text())["stages"]
    assert list(record) == list(STAGES)
    for stage, entry in record.items():
        assert entry["outputs"] and all((out / p).exists() for p in entry["outputs"]), stage
    config = json.loads((out / "dram-config.json").read_text())
    assert config["format"] == "eden-dram-config" and config["mode"] == "power"
    assert config["partitions"][0]["vdd_v"] < config["nominal"]["vdd_v"]


def test_bench_validation_agrees_with_simulation_and_reports_flips(flow_run) -> None:
    out, _ = flow_run
    val = json.loads((out / "validate.json").read_text())
    assert val["runs"]["nominal"]["flips"] == 0
    assert val["runs"]["chosen"]["vdd_v"] < val["runs"]["nominal"]["vdd_v"]
    assert val["runs"]["chosen"]["flips"] > 0  # the reduced VDD really corrupts the DIMM's data
    hil = val["runs"]["chosen"]["accuracy"]["mean"]
    sim = val["simulation"]["measured"]
    assert val["sweep"] and all(p["measured_ber"] > 0 for p in val["sweep"])
    # what the bench measured agrees with the model at the BER the bench saw (a loose, fixed-seed check)
    assert abs(hil - sim["mean"]) <= max(0.05, sim["ci_high"] - sim["ci_low"])


def test_report_numbers_recompute_from_their_files(flow_run) -> None:
    out, _ = flow_run
    assert check_report(out) == []
    text = (out / "report.md").read_text()
    assert "validate.json: `runs.chosen.accuracy.mean`" in text
    for png in ("report-accuracy.png", "report-energy.png", "report-ber-curves.png", "report-accuracy-sweep.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # tamper with a cited file: the check notices
    energy = json.loads((out / "energy.json").read_text())
    energy["energy_saving"]["model"] = 0.99
    (out / "energy.json").write_text(json.dumps(energy))
    problems = check_report(out)
    assert any("energy.json: changed" in p for p in problems)
    assert any("energy_saving.model" in p for p in problems)


def test_rerun_skips_finished_stages_and_an_option_reruns_what_it_affects(flow_run, tmp_path) -> None:
    out, _ = flow_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    lines: list[str] = []
    run_flow(_small(copy), log=lines.append)
    assert all(f"[{s}] done before, skipped" in "\n".join(lines) for s in STAGES)
    lines.clear()
    run_flow(_small(copy, hil_repeats=3), log=lines.append, stop_after="validate")
    text = "\n".join(lines)
    assert "[map] done before, skipped" in text and "[validate] running" in text


def test_interrupted_flow_resumes_at_the_stage_it_was_in(flow_run, tmp_path, monkeypatch) -> None:
    out, _ = flow_run
    import shutil

    copy = tmp_path / "resume"
    shutil.copytree(out, copy)
    record = json.loads((copy / "stages.json").read_text())
    for s in ("energy", "report"):
        record["stages"].pop(s)
    (copy / "stages.json").write_text(json.dumps(record))

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(st, "stage_energy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_flow(_small(copy), log=lambda _l: None)
    done = json.loads((copy / "stages.json").read_text())["stages"]
    assert "validate" in done and "energy" not in done  # finished stages stay on record
    monkeypatch.undo()
    lines: list[str] = []
    run_flow(_small(copy), log=lines.append)
    text = "\n".join(lines)
    assert "[validate] done before, skipped" in text and "[energy] running" in text


def test_bad_options_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(FlowError, match="mode must be"):
        run_flow(_small(tmp_path, mode="turbo"))
    with pytest.raises(FlowError, match="unknown stage 'fitt'"):
        run_flow(_small(tmp_path), redo=["fitt"])


def test_cli_bad_bench_is_a_one_line_error(tmp_path, capsys) -> None:
    from pipeline.__main__ import main

    code = main(["--out", str(tmp_path / "x"), "--bench", "emu://Z", "--no-progress", "--stop-after", "profile"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:")


def test_energy_model_scales_with_vdd_squared_and_timing_shortens_the_stream() -> None:
    sizes = {("a", "weight"): 8192 * 3, ("a", "ifm"): 1000}
    nominal = DdrTiming()
    same = energy_report(sizes, nominal_vdd_v=1.35, vdd_v=1.35, nominal=nominal, timings={})
    assert same["energy_saving"]["model"] == pytest.approx(0.0)
    low = energy_report(sizes, nominal_vdd_v=1.35, vdd_v=1.35 * 0.8, nominal=nominal, timings={})
    assert low["energy_saving"]["model"] == pytest.approx(1 - 0.8 ** 2, rel=1e-3)
    fast = DdrTiming(trcd_ns=7.5, trp_ns=7.5)
    lat = energy_report(sizes, nominal_vdd_v=1.35, vdd_v=1.35, nominal=nominal,
                        timings={k: fast for k in sizes})
    assert lat["latency"]["closed_page_reduction"] == pytest.approx(1 - latency_ns(fast) / latency_ns(nominal))
    assert 0 < lat["latency"]["stream_reduction"] < lat["latency"]["closed_page_reduction"]
    s = stream_of([Tensor("w", 8192 * 3, False, nominal), Tensor("x", 1000, True, nominal)])
    assert (s.activates, s.read_bursts, s.write_bursts) == (3 + 1 + 1, 384 + 16, 16)


def test_lookup_paths() -> None:
    doc = {"a": [{"label": "x", "v": 1}, {"label": "y", "v": 2}], "b": {"c": [5, 6]}}
    assert lookup(doc, "a.label=y.v") == 2 and lookup(doc, "b.c.1") == 6


def test_latency_config_reads_each_bank_at_its_partitions_timing() -> None:
    config = {"geometry": {"banks": 4, "rows": 16, "row_bytes": 64},
              "partitions": [{"label": "bank1", "bank": 1, "trcd_ns": 7.5, "trp_ns": 13.75},
                             {"label": "bank2", "bank": 2, "trcd_ns": 13.75, "trp_ns": 13.75}]}
    opts = st._read_options(config)
    assert opts[1]["timing"].trcd_ns == 7.5 and opts[1]["per_burst_activate"] is True
    assert opts[2]["per_burst_activate"] is False and set(opts) == {1, 2}
    whole = st._read_options({"geometry": {"banks": 2}, "partitions": [{"label": "all", "bank": None,
                                                                        "trcd_ns": 10.0, "trp_ns": 12.5}]})
    assert set(whole) == {0, 1} and whole[0]["timing"].trp_ns == 12.5

"""Campaigns (``python -m profiler.campaign``): bench ranges, one map per DIMM, resume, serial = parallel, summary.

The sweeps are tiny (one bank, 4 sampled rows, two VDDs, two patterns: 4 points of 4 rows per
DIMM) on emulated vendor-C DIMMs, which at 1.1 V have a DIMM-to-DIMM spread in the fraction of
lines with errors.  The campaigns run once per module and the tests read their results.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import socket
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from profiler.campaign import (
    CampaignError,
    expand_benches,
    line_fractions,
    main,
    map_names,
    read_bench_list,
    run_campaign,
    summarize,
)
from profiler.plan import SweepConfig, build_plan
from profiler.run import sweep_to_map
from profiler.storage import BerMap

CONFIG = SweepConfig(vdd_v=[1.35, 1.1], banks="0", rows="sample:4", patterns=["all-1", "all-0"])
BENCHES = [f"emu://C?seed={s}" for s in (1, 2, 3)]
NAMES = ["C-seed01", "C-seed02", "C-seed03"]
PLAN_POINTS = len(build_plan(CONFIG))


def closed_port_url() -> str:
    """A socket:// tester URL on which nothing listens (a port just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"socket://127.0.0.1:{port}"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def point_times(path: Path) -> dict[str, str]:
    """started_utc of every complete point of a map: unchanged when nothing is measured again."""
    with h5py.File(path, "r") as fh:
        return {k: g.attrs["started_utc"] for k, g in fh["points"].items() if g.attrs.get("complete", False)}


def map_arrays(path: Path) -> dict[str, Any]:
    """Every point's counts and error positions (what must be identical between two runs)."""
    ber_map = BerMap(path)
    return {key: (p.flips_0to1.tolist(), p.flips_1to0.tolist(), p.errors.tobytes())
            for key, p in ((k, ber_map.point(k)) for k in ber_map.keys())}


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A serial campaign that resumes an interrupted map, and a parallel one with a failing bench."""
    root = tmp_path_factory.mktemp("campaign")
    serial, parallel = root / "serial", root / "parallel"
    serial.mkdir()
    # An interrupted sweep of the second DIMM: one point on disk.
    calls = iter(range(100))
    with pytest.raises(KeyboardInterrupt):
        sweep_to_map(replace(CONFIG, bench=BENCHES[1], out=str(serial / "C-seed02.h5")),
                     progress=False, stop_requested=lambda: next(calls) >= 1)
    before = point_times(serial / "C-seed02.h5")
    assert len(before) == 1
    seen: list[str] = []
    serial_results = run_campaign(CONFIG, BENCHES, serial, executor=None, on_result=lambda r: seen.append(r.name))
    failing = closed_port_url()
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parallel_results = run_campaign(CONFIG, [*BENCHES, failing], parallel, executor=pool)
    return {"serial": serial, "parallel": parallel, "serial_results": serial_results, "seen": seen,
            "parallel_results": parallel_results, "interrupted_before": before, "failing": failing}


# Bench lists and names --------------------------------------------------------------------------


def test_ranges_expand_in_order() -> None:
    assert expand_benches(["emu://C?seed=1..3"]) == ["emu://C?seed=1", "emu://C?seed=2", "emu://C?seed=3"]
    assert len(expand_benches(["emu://C?seed=1..20"])) == 20
    assert expand_benches(["emu://B?seed=08..10"]) == ["emu://B?seed=08", "emu://B?seed=09", "emu://B?seed=10"]
    assert expand_benches(["emu://A?seed=1..2&temp_c=20..21"]) == [
        "emu://A?seed=1&temp_c=20", "emu://A?seed=1&temp_c=21", "emu://A?seed=2&temp_c=20", "emu://A?seed=2&temp_c=21"]
    assert expand_benches(["emu://C?seed=4..4", "../benches/x.toml", "emu://C?seed=1.5"]) == [
        "emu://C?seed=4", "../benches/x.toml", "emu://C?seed=1.5"]  # '..' of a path, a decimal: not ranges


@pytest.mark.parametrize("specs, message", [
    (["emu://C?seed=5..2"], "range 5..2 runs backwards"),
    (["emu://C?seed=1..1001"], "more than 1,000 benches"),
    (["emu://C?seed=1..600", "emu://B?seed=1..600"], "more than 1,000 benches"),
    (["emu://C?seed=1..99999999999999999999999"], "more than 18 digits"),
    (["emu://C?seed=1.."], "a range is START..END"),
    (["emu://C?seed=..3"], "a range is START..END"),
    (["emu://C?seed=1..3", "emu://C?seed=2"], "listed twice"),
    ([], "no benches"),
    (["  "], "non-empty string"),
])
def test_bad_ranges_are_one_line_errors(specs: list[str], message: str) -> None:
    with pytest.raises(CampaignError, match=message) as info:
        expand_benches(specs)
    assert "\n" not in str(info.value)


def test_map_names_are_deterministic_and_unique(tmp_path: Path) -> None:
    assert map_names(["emu://C?seed=1", "emu://B?seed=3&temp_c=70", "emu://eden?seed=123"]) == [
        "C-seed01", "B-seed03-temp_c70", "eden-seed123"]
    assert map_names(["socket://10.0.0.5:7000"]) == ["socket-10.0.0.5-7000"]
    a, b = tmp_path / "a" / "dimm.toml", tmp_path / "b" / "dimm.toml"
    names = map_names([str(a), str(b), str(tmp_path / "other.toml")])
    assert names[2] == "other" and names[0] != names[1] and all(n.startswith("dimm-") for n in names[:2])
    assert names == map_names([str(a), str(b), str(tmp_path / "other.toml")])


def test_bench_list_file(tmp_path: Path) -> None:
    listing = tmp_path / "dimms.txt"
    listing.write_text("# the vendor-C population\nemu://C?seed=1..2   # two DIMMs\n\n  emu://B?seed=7\n")
    assert read_bench_list(listing) == ["emu://C?seed=1..2", "emu://B?seed=7"]
    assert expand_benches(read_bench_list(listing)) == ["emu://C?seed=1", "emu://C?seed=2", "emu://B?seed=7"]
    with pytest.raises(CampaignError, match="cannot read the bench list"):
        read_bench_list(tmp_path / "missing.txt")


# The command's input errors: one line, status 2, nothing written ---------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--bench", "emu://C?seed=5..2"], "runs backwards"),
    (["--bench", "emu://Z?seed=1"], "unknown DIMM profile 'Z'"),
    (["--bench", "nowhere/dimm.toml"], "cannot read bench file"),
    (["--bench", "bogus://x"], "unknown bench"),
    (["--bench", "/no/such/device"], "unknown bench"),
    (["--bench", "emu://C?seed=1", "--vdd", "9"], "vdd_v 9.0 outside"),
    (["--benches", "missing-list.txt"], "cannot read the bench list"),
    ([], "no benches"),
])
def test_command_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                              message: str) -> None:
    out = tmp_path / "camp"
    assert main([*argv, "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_command_needs_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--bench", "emu://C?seed=1"]) == 2
    assert "-o DIR" in capsys.readouterr().err
    assert main(["summarize", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--summarize-only", "-o", str(tmp_path / "none")]) == 2


def test_dry_run_lists_the_maps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "dimms.txt"
    listing.write_text("emu://C?seed=9..10\n")
    assert main(["--benches", str(listing), "--bench", "emu://A?seed=1", "--vdd", "1.35,1.1", "--banks", "0",
                 "--rows", "sample:4", "-o", str(tmp_path / "c"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "C-seed09.h5" in out and "C-seed10.h5" in out and "A-seed01.h5" in out and "3 benches" in out
    assert "points   : 4" in out
    assert not (tmp_path / "c").exists()


# Campaigns --------------------------------------------------------------------------------------


def test_one_map_per_dimm_and_the_failing_bench_is_reported(campaigns: dict[str, Any]) -> None:
    parallel = campaigns["parallel"]
    assert sorted(p.name for p in parallel.glob("*.h5")) == [f"{n}.h5" for n in NAMES]
    results = {r.name: r for r in campaigns["parallel_results"]}
    assert [results[n].status for n in NAMES] == ["complete"] * 3
    assert all(results[n].measured == PLAN_POINTS and len(BerMap(parallel / f"{n}.h5").keys()) == PLAN_POINTS
               for n in NAMES)
    failed = [r for r in campaigns["parallel_results"] if r.status == "failed"]
    assert len(failed) == 1 and failed[0].bench == campaigns["failing"] and "cannot open" in failed[0].message
    rows = {r["dimm"]: r for r in read_csv(parallel / "benches.csv")}
    assert [rows[n]["status"] for n in NAMES] == ["complete"] * 3
    assert rows[failed[0].name]["status"] == "failed" and "cannot open" in rows[failed[0].name]["message"]
    state = json.loads((parallel / "campaign.json").read_text())
    assert state["benches"][failed[0].name]["status"] == "failed" and state["plan_points"] == PLAN_POINTS
    assert (parallel / "spread.png").stat().st_size > 1000


def test_the_interrupted_map_was_resumed(campaigns: dict[str, Any]) -> None:
    results = {r.name: r for r in campaigns["serial_results"]}
    assert [r.name for r in campaigns["serial_results"]] == NAMES == campaigns["seen"]  # serial: in order
    resumed = results["C-seed02"]
    assert (resumed.status, resumed.stored_before, resumed.measured) == ("complete", 1, PLAN_POINTS - 1)
    times = point_times(campaigns["serial"] / "C-seed02.h5")
    assert len(times) == PLAN_POINTS
    assert all(times[k] == v for k, v in campaigns["interrupted_before"].items())  # the stored point kept


def test_serial_and_parallel_give_identical_maps_and_summaries(campaigns: dict[str, Any]) -> None:
    serial, parallel = campaigns["serial"], campaigns["parallel"]
    for name in NAMES:  # the resumed map included: the read noise is seeded per point
        assert map_arrays(serial / f"{name}.h5") == map_arrays(parallel / f"{name}.h5"), name
    assert (serial / "summary.csv").read_text() == (parallel / "summary.csv").read_text()
    assert (serial / "spread.csv").read_text() == (parallel / "spread.csv").read_text()


def test_line_fractions_match_an_independent_count(campaigns: dict[str, Any]) -> None:
    """summary.csv against lines counted with h5py alone from the stored error positions."""
    parallel = campaigns["parallel"]
    summary = read_csv(parallel / "summary.csv")
    assert len(summary) == 3 * len(CONFIG.vdd_v)
    fractions = []
    for name in NAMES:
        with h5py.File(parallel / f"{name}.h5", "r") as fh:
            row_bytes = json.loads(fh.attrs["geometry_json"])["row_bytes"]
            by_vdd: dict[float, set[tuple[int, int, int]]] = {}
            tested: dict[float, set[tuple[int, int]]] = {}
            for group in fh["points"].values():
                assert not group.attrs["errors_truncated"]
                vdd = round(float(group.attrs["vdd_v"]), 6)
                lines = by_vdd.setdefault(vdd, set())
                lines.update((int(e["bank"]), int(e["row"]), int(e["bit"]) // 512) for e in group["errors"][()])
                tested.setdefault(vdd, set()).update(map(tuple, group["rows"][()].tolist()))
        for vdd, lines in by_vdd.items():
            n_lines = len(tested[vdd]) * (row_bytes // 64)
            row = next(r for r in summary if r["dimm"] == name and float(r["vdd_v"]) == vdd)
            assert int(row["lines"]) == n_lines == 4 * row_bytes // 64
            assert int(row["error_lines"]) == int(row["error_lines_max"]) == len(lines)
            assert float(row["line_fraction"]) == pytest.approx(len(lines) / n_lines, abs=0)
            assert row["exact"] == "True" and row["vendor"] == "C" and row["patterns"] == "all-1+all-0"
            fractions.append((vdd, len(lines) / n_lines))
    at_low = sorted(f for v, f in fractions if v == 1.1)
    assert at_low[0] < at_low[-1] and at_low[0] > 0  # a real spread at 1.1 V; nothing at nominal
    assert all(f == 0 for v, f in fractions if v == 1.35)
    spread = {float(r["vdd_v"]): r for r in read_csv(parallel / "spread.csv")}
    low = spread[1.1]
    assert int(low["n_dimms"]) == 3 and int(low["dimms_with_errors"]) == 3
    assert float(low["min"]) == at_low[0] and float(low["max"]) == at_low[-1]
    assert float(low["median"]) == pytest.approx(float(np.median(at_low)))
    assert float(low["mean"]) == pytest.approx(float(np.mean(at_low)))
    assert float(low["std"]) == pytest.approx(float(np.std(at_low)))
    assert float(spread[1.35]["max"]) == 0.0


def test_rerun_measures_nothing_and_summarize_rebuilds(campaigns: dict[str, Any], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    parallel = campaigns["parallel"]
    before = {n: point_times(parallel / f"{n}.h5") for n in NAMES}
    argv = [*sum((["--bench", b] for b in BENCHES), []), "--bench", campaigns["failing"], "--vdd", "1.35,1.1",
            "--banks", "0", "--rows", "sample:4", "--patterns", "all-1,all-0", "-o", str(parallel)]
    assert main([*argv, "--jobs", "1", "--no-plot"]) == 1  # the failing bench: nonzero, again
    out = capsys.readouterr().out
    assert out.count("already complete (") == 3 and "FAILED" in out, out
    assert {n: point_times(parallel / f"{n}.h5") for n in NAMES} == before
    state = json.loads((parallel / "campaign.json").read_text())
    assert all(state["benches"][n]["status"] == "skipped" and state["benches"][n]["measured"] == 0 for n in NAMES)
    text = (parallel / "summary.csv").read_text()
    (parallel / "summary.csv").unlink()
    (parallel / "spread.csv").unlink()
    assert main(["summarize", str(parallel), "-q"]) == 1  # still reports the failed bench
    assert (parallel / "summary.csv").read_text() == text and (parallel / "spread.csv").is_file()
    assert {n: point_times(parallel / f"{n}.h5") for n in NAMES} == before
    assert summarize(parallel, plot=False).failed[0]["status"] == "failed"


def test_truncated_positions_give_bounds(campaigns: dict[str, Any], tmp_path: Path) -> None:
    """With a cap on stored positions the fraction is bracketed by the exact one of the full map."""
    config = replace(CONFIG, vdd_v=[1.1], max_error_positions=40)
    results = run_campaign(config, BENCHES[:1], tmp_path, summary=False)
    assert results[0].status == "complete"
    (row,) = line_fractions(tmp_path / "C-seed01.h5")
    exact = next(r for r in line_fractions(campaigns["parallel"] / "C-seed01.h5") if r["vdd_v"] == 1.1)
    assert not row["exact"]
    assert row["line_fraction"] <= exact["line_fraction"] <= row["line_fraction_max"]
    assert 0 < row["error_lines"] < row["error_lines_max"]


def test_a_stopped_campaign_keeps_its_points_and_resumes(tmp_path: Path) -> None:
    """A stop request (what Ctrl-C / SIGTERM make) ends the campaign after the point being measured."""
    asks = iter(range(100))
    with pytest.raises(KeyboardInterrupt):
        run_campaign(CONFIG, BENCHES[:2], tmp_path, stop_requested=lambda: next(asks) >= 2)
    state = json.loads((tmp_path / "campaign.json").read_text())
    first = state["benches"]["C-seed01"]
    assert (first["status"], first["measured"]) == ("interrupted", 2)
    assert "C-seed02" not in state["benches"] and not (tmp_path / "C-seed02.h5").exists()  # never started
    kept = point_times(tmp_path / "C-seed01.h5")
    assert len(kept) == 2
    assert summarize(tmp_path, plot=False).failed[0]["status"] == "interrupted"
    (result,) = run_campaign(CONFIG, BENCHES[:1], tmp_path, summary=False)
    assert (result.status, result.stored_before, result.measured) == ("complete", 2, PLAN_POINTS - 2)
    times = point_times(tmp_path / "C-seed01.h5")
    assert len(times) == PLAN_POINTS and all(times[k] == v for k, v in kept.items())


def test_an_unexpected_failure_says_where_it_was_raised(tmp_path: Path, monkeypatch, caplog) -> None:
    """The traceback stays on the worker that ran the bench: the message names the file, line and function."""
    import profiler.campaign as campaign

    def broken(*args, **kwargs):
        raise BufferError("Existing exports of data: object cannot be re-sized")

    monkeypatch.setattr(campaign, "sweep_to_map", broken)
    (task,) = campaign.plan_campaign(CONFIG, ["emu://C?seed=1"], tmp_path)
    with caplog.at_level("WARNING", logger="profiler.campaign"):
        result = campaign.run_bench(task)
    assert result.status == "failed"
    assert result.message == ("BufferError: Existing exports of data: object cannot be re-sized "
                              "(at test_campaign.py:" + str(broken.__code__.co_firstlineno + 1) + " in broken)")
    assert f"bench {task.name} failed" in caplog.text and "Traceback" in caplog.text  # the whole of it, in its log

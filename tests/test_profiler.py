"""profiler: plans and limits, the BER map format, resume after SIGKILL, the write lock, replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from profiler import engine
from profiler.engine import check_plan
from profiler.patterns import PatternError, parse_pattern
from profiler.plan import PlanError, SweepConfig, build_plan, load_config, parse_rows, parse_values
from profiler.storage import ERROR_DTYPE, BerMap, LockError, MapError, MapWriter, PointData
from profiler.sweep import main as sweep_main
from softmc_host.bench import Bench
from softmc_host.instruments import SupplyLimits, ThermalLimits

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


# Plans -------------------------------------------------------------------------------------


def test_value_lists_and_ranges() -> None:
    assert parse_values("1.35,1.3", "--vdd", "V") == [1.35, 1.3]
    assert parse_values("1.35:1.2:-0.05", "--vdd", "V") == [1.35, 1.3, 1.25, 1.2]
    assert parse_values("5:15:5", "--trcd", "ns") == [5.0, 10.0, 15.0]
    assert parse_values(1.2, "vdd_v", "V") == [1.2]
    assert parse_values("1.35, 1.2:1.1:-0.05", "--vdd", "V") == [1.35, 1.2, 1.15, 1.1]
    for bad, message in (("1.35:1.2:0.05", "step must go"), ("a,b", "comma list"), ("1:2", "comma list"), ("", "empty")):
        with pytest.raises(PlanError, match=message):
            parse_values(bad, "--vdd", "V")


def test_rows_selection() -> None:
    assert parse_rows("0:8:2", 32768, 0) == [0, 2, 4, 6]
    assert parse_rows("5,1,5", 32768, 0) == [1, 5]
    sample = parse_rows("sample:10", 32768, 3)
    assert len(sample) == 10 and sample == parse_rows("sample:10", 32768, 3) != parse_rows("sample:10", 32768, 4)
    assert len(parse_rows("all", 64, 0)) == 64
    with pytest.raises(PlanError, match="rows 40000 outside 0..32767"):
        parse_rows("40000", 32768, 0)
    with pytest.raises(PlanError, match="sample:N"):
        parse_rows("sample:0", 32768, 0)


def test_plan_order_keys_and_patterns() -> None:
    config = SweepConfig(vdd_v=[1.35, 1.2], trcd_ns=[13.75, 10.0], temp_c=[20.0, 50.0], patterns=["all-1", "random:7"], reps=2)
    plan = build_plan(config)
    assert len(plan) == 2 * 2 * 2 * 2 * 2
    assert [p.temp_c for p in plan[:16]] == [20.0] * 16  # temperature outermost
    assert plan[0].key == "T20_V1.3500_RCD13.75_RP13.75_RAS35_all-1_r0"
    assert len({p.key for p in plan}) == len(plan)
    with pytest.raises(PlanError, match="duplicate"):
        build_plan(SweepConfig(vdd_v=[1.2, 1.2]))
    with pytest.raises(PlanError, match="unknown data pattern 'stripes'"):
        build_plan(SweepConfig(patterns=["stripes"]))
    with pytest.raises(PlanError, match="trcd_ns -1"):
        build_plan(SweepConfig(trcd_ns=[-1.0]))


def test_patterns() -> None:
    assert (parse_pattern("0xaa").data(0, 0, 0, 16) == 0xAA).all()
    checker = parse_pattern("checkerboard")
    assert checker.data(0, 2, 0, 4).tolist() == [0x55] * 4 and checker.data(0, 3, 0, 4).tolist() == [0xAA] * 4
    rnd = parse_pattern("random:5")
    assert np.array_equal(rnd.data(1, 2, 0, 64), rnd.data(1, 2, 9, 64))
    assert not np.array_equal(rnd.data(1, 2, 0, 64), rnd.data(1, 3, 0, 64))
    with pytest.raises(PatternError, match="cannot read pattern file"):
        parse_pattern("file:/no/such/weights.bin")


def test_file_pattern_tiles_bytes(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(bytes(range(100)))
    pattern = parse_pattern(f"file:{weights}")
    assert pattern.data(0, 0, 0, 8).tolist() == list(range(8))
    assert pattern.data(0, 0, 13, 8).tolist() == [4, 5, 6, 7, 8, 9, 10, 11]  # bytes 104.. wrap at 100
    assert "sha256=" in pattern.definition


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[sweep]\nvdd_v = "1.35:1.25:-0.05"\nbanks = [0, 3]\npatterns = "checkerboard"\nreps = 2\n')
    config = load_config(path)
    assert config.vdd_v == [1.35, 1.3, 1.25] and config.banks == [0, 3] and config.patterns == ["checkerboard"]
    path.write_text("vdd = 1.2\n")
    with pytest.raises(PlanError, match="unknown key"):
        load_config(path)


def test_limits_checked_against_the_bench() -> None:
    limits = SupplyLimits(nominal_v=1.35, min_v=1.0, max_v=1.4, max_step_v=0.05, max_slew_v_per_s=1.0, current_limit_a=1.0)
    bench = SimpleNamespace(supply=SimpleNamespace(limits=limits), thermal=None)
    check_plan(build_plan(SweepConfig(vdd_v=[1.35, 1.0])), bench)
    with pytest.raises(PlanError, match="0.9 V outside the configured limits"):
        check_plan(build_plan(SweepConfig(vdd_v=[1.35, 0.9])), bench)
    with pytest.raises(PlanError, match="no thermal controller"):
        check_plan(build_plan(SweepConfig(temp_c=[40.0])), bench)
    hot = SimpleNamespace(supply=None, thermal=SimpleNamespace(limits=ThermalLimits(min_c=20, max_c=80)))
    with pytest.raises(PlanError, match="temperature 95.0 C outside"):
        check_plan(build_plan(SweepConfig(temp_c=[95.0])), hot)
    with pytest.raises(PlanError, match="no supply"):
        check_plan(build_plan(SweepConfig(vdd_v=[1.2])), hot)


def run_sweep(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "profiler.sweep", "--no-progress", *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout,
    )


def test_out_of_limit_sweep_is_refused_before_anything(tmp_path: Path) -> None:
    proc = run_sweep("--vdd", "1.35,0.5", "--out", "x.h5", cwd=tmp_path)
    assert proc.returncode == 2
    assert "0.5 V outside the configured limits" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.h5").exists()


def test_dry_run_touches_nothing(tmp_path: Path) -> None:
    proc = run_sweep("--vdd", "1.35:1.05:-0.1", "--trcd", "13.75,7.5", "--dry-run", "--out", "d.h5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "points   : 16" in proc.stdout and "estimate" in proc.stdout
    assert list(tmp_path.iterdir()) == []


# Format ---------------------------------------------------------------------------------------


def synthetic_point(key: str, index: int, flips: int) -> PointData:
    rows = np.array([[0, 1], [0, 2], [3, 7]], np.uint32)
    errors = np.zeros(flips, ERROR_DTYPE)
    errors["bank"], errors["row"], errors["bit"], errors["dir"] = 3, 7, np.arange(flips), np.arange(flips) % 2
    return PointData(
        key=key,
        attrs={"vdd_v": 1.2, "trcd_ns": 13.75, "trp_ns": 13.75, "tras_ns": 35.0, "temp_c": None, "pattern": "all-1",
               "rep": 0, "index": index, "measured_vdd_v": 1.2001, "errors_truncated": False},
        rows=rows,
        bits_tested=np.full(3, 65536, np.uint64),
        flips_0to1=np.array([0, 0, (flips + 1) // 2], np.uint32),
        flips_1to0=np.array([0, 0, flips // 2], np.uint32),
        bitline_banks=np.array([0, 3], np.uint8),
        bitline_0to1=np.zeros((2, 65536), np.uint32),
        bitline_1to0=np.zeros((2, 65536), np.uint32),
        errors=errors,
    )


def test_schema_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    writer = MapWriter(path, {"software": "test", "geometry": {"banks": 8, "rows": 32768, "row_bytes": 8192}}, {"a": 1})
    assert writer.open() == set()
    written = [synthetic_point(f"p{i}", i, flips) for i, flips in enumerate((0, 5, 40))]
    for point in written:
        writer.write(point)
    writer.finish(complete=True)
    assert not writer.journal.exists() and not writer.lock_path.exists()
    ber_map = BerMap(path)
    assert ber_map.keys() == ["p0", "p1", "p2"]
    assert ber_map.geometry["row_bytes"] == 8192
    for original in written:
        back = ber_map.point(original.key)
        for name, array in original.arrays().items():
            np.testing.assert_array_equal(getattr(back, name), array, err_msg=name)
        assert back.attrs["vdd_v"] == 1.2 and np.isnan(back.attrs["temp_c"])
    assert [round(r["ber"] * 3 * 65536) for r in ber_map.summary()] == [0, 5, 40]


def test_write_lock_and_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    first = MapWriter(path, {}, {"a": 1})
    first.open()
    with pytest.raises(LockError, match="being written by another sweep"):
        MapWriter(path, {}, {"a": 1}).open()
    first.finish(complete=False)
    # A lock left by a process that no longer exists is taken over.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / "m.h5.lock").write_text(f"{int(dead.stdout)} {socket.gethostname()}\n")
    again = MapWriter(path, {}, {"a": 1})
    again.open()
    again.finish(complete=True)


def test_other_sweep_cannot_resume_a_file(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    writer = MapWriter(path, {}, {"vdd_v": [1.2]})
    writer.open()
    writer.finish(complete=True)
    with pytest.raises(MapError, match="holds a different sweep \\(differs in vdd_v\\)"):
        MapWriter(path, {}, {"vdd_v": [1.1]}).open()
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(MapError, match="cannot read BER map"):
        BerMap(tmp_path / "junk.h5")
    with pytest.raises(MapError, match="exists and is not a BER map"):
        MapWriter(tmp_path / "junk.h5", {}, {"a": 1}).open()
    assert (tmp_path / "junk.h5").read_bytes() == b"not hdf5"  # left alone
    # A journal left by another sweep is not mixed into this one.
    other = MapWriter(tmp_path / "j.h5", {}, {"rows": "sample:8"})
    other.open()
    other.write(synthetic_point("p0", 0, 1))
    other.release()
    (tmp_path / "j.h5").unlink()
    with pytest.raises(MapError, match="journal .* belongs to a different sweep"):
        MapWriter(tmp_path / "j.h5", {}, {"rows": "0:4"}).open()


def test_journal_rebuilds_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    writer = MapWriter(path, {"software": "t", "geometry": {"banks": 8, "rows": 32768, "row_bytes": 8192}}, {"a": 1})
    writer.open()
    writer.write(synthetic_point("p0", 0, 3))
    writer.release()  # as if killed: the journal stays
    path.write_bytes(b"\x89HDF damaged by a kill mid-write")
    resumed = MapWriter(path, {"software": "t", "geometry": {"banks": 8, "rows": 32768, "row_bytes": 8192}}, {"a": 1})
    assert resumed.open() == {"p0"} and resumed.recovered_from_journal == 1
    resumed.finish(complete=True)
    assert BerMap(path).point("p0").flips == 3


# Resume after SIGKILL, and replay ---------------------------------------------------------------

SWEEP = ("--bench", "emu://B?seed=3", "--vdd", "1.35,1.1,1.05,1.03,1.02,1.01,1.0", "--banks", "0,5",
         "--rows", "sample:6", "--patterns", "all-1,random")
SWEEP_CONFIG = SweepConfig(bench="emu://B?seed=3", vdd_v=[1.35, 1.1, 1.05, 1.03, 1.02, 1.01, 1.0], banks=[0, 5],
                           rows="sample:6", patterns=["all-1", "random"])  # SWEEP, as a configuration
PROGRAMS_PER_POINT = 2  # at nominal timings: one program writes the pattern, one reads it back
VOLATILE = {"started_utc", "finished_utc", "duration_s", "measured_temp_c"}


def load_all(path: Path) -> dict[str, PointData]:
    ber_map = BerMap(path)
    return {key: ber_map.point(key) for key in ber_map.keys()}


def stored_keys(path: Path) -> set[str]:
    """The points a resumed run finds already measured: the map's, and the journal's (written before the map)."""
    journal = path.with_name(path.name + ".journal")
    return set(BerMap(path).keys()) | {entry.stem for entry in journal.glob("*.npz")}


class WireCount:
    """Spies on an in-process sweep: the PROGRAM requests sent to the tester and the points measured.

    PROGRAM requests are counted on the link's spy log (distinct sequence numbers, so a
    retransmission is not counted twice), independently of the sweep's own counters.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.frames: list[str] = []
        self.measured: list[str] = []
        opener = Bench.open
        measure = engine.measure_point

        def open_spied(cls: type, spec: Any, *, spy: Any = None) -> Bench:
            return opener(spec, spy=self.frames.append)

        def measure_counted(bench: Bench, point: Any, *args: Any, **kwargs: Any) -> PointData:
            self.measured.append(point.key)
            return measure(bench, point, *args, **kwargs)

        monkeypatch.setattr(Bench, "open", classmethod(open_spied))
        monkeypatch.setattr(engine, "measure_point", measure_counted)

    @property
    def programs(self) -> int:
        """PROGRAM requests sent so far."""
        return len({line.split()[3] for line in self.frames if line.split()[1:3] == [">>", "PROGRAM"]})


def resume_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path,
                      out: str) -> tuple[WireCount, str, str]:
    """Run the sweep command ``SWEEP --out OUT`` in this process, counting its wire traffic."""
    monkeypatch.chdir(cwd)
    count = WireCount(monkeypatch)
    capsys.readouterr()
    assert sweep_main(["--no-progress", *SWEEP, "--out", out]) == 0
    captured = capsys.readouterr()
    return count, captured.out, captured.err


def assert_resumed_only_the_rest(count: WireCount, out: str, err: str, name: str, stored: set[str],
                                 plan: list[str]) -> None:
    """The resumed run measured exactly the points missing from the map, and said so."""
    missing = [key for key in plan if key not in stored]
    assert stored and missing, "the interruption must leave part of the plan to measure"
    assert count.measured == missing  # every missing point once, in plan order; no stored point again
    assert count.programs == PROGRAMS_PER_POINT * len(missing)  # what went over the wire, not a counter
    assert f"resuming {name}: {len(stored)} of {len(plan)} points already measured" in err, err
    assert f"{name}: {len(plan)} points ({len(missing)} measured now in " in out, out


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    whole_count, _, _ = resume_in_process(monkeypatch, capsys, tmp_path, "whole.h5")  # a fresh map: the whole plan
    plan = [p.key for p in build_plan(SWEEP_CONFIG)]
    assert whole_count.measured == plan and whole_count.programs == PROGRAMS_PER_POINT * 14
    monkeypatch.undo()
    proc = subprocess.Popen(
        [sys.executable, "-m", "profiler.sweep", "--no-progress", *SWEEP, "--out", "cut.h5"],
        cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    journal = tmp_path / "cut.h5.journal"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(journal.glob("*.npz"))) < 3:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its emulator, mid-run
    proc.wait()
    partial = BerMap(tmp_path / "cut.h5").keys()  # a valid file after SIGKILL
    assert 2 <= len(partial) < 14  # the kill may land between a point's journal entry and its HDF5 write
    stored = stored_keys(tmp_path / "cut.h5")
    count, out, err = resume_in_process(monkeypatch, capsys, tmp_path, "cut.h5")
    assert_resumed_only_the_rest(count, out, err, "cut.h5", stored, plan)
    a, b = load_all(tmp_path / "whole.h5"), load_all(tmp_path / "cut.h5")
    assert sorted(a) == sorted(b) and len(a) == 14
    assert sum(p.flips for p in a.values()) > 100  # the comparison covers real errors
    for key in a:
        for name, array in a[key].arrays().items():
            np.testing.assert_array_equal(array, b[key].arrays()[name], err_msg=f"{key} {name}")
        steady = {k: v for k, v in a[key].attrs.items() if k not in VOLATILE}
        assert json.dumps(steady, sort_keys=True) == json.dumps(
            {k: v for k, v in b[key].attrs.items() if k not in VOLATILE}, sort_keys=True
        )


def test_interrupt_restores_nominal_and_keeps_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "profiler.sweep", "--no-progress", *SWEEP, "--out", "int.h5"],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    journal = tmp_path / "int.h5.journal"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(journal.glob("*.npz"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    kept = set(BerMap(tmp_path / "int.h5").keys())
    assert f"interrupted: {len(kept)} points are on disk in int.h5; " in err
    assert "the supply is back at nominal; rerun the same command to resume" in err
    assert not (tmp_path / "int.h5.lock").exists()
    assert len(kept) >= 2 and stored_keys(tmp_path / "int.h5") == kept  # a clean stop: the journal adds nothing
    # Rerunning the command measures only the rest: the points kept are not measured again.
    count, out, err = resume_in_process(monkeypatch, capsys, tmp_path, "int.h5")
    plan = [p.key for p in build_plan(SWEEP_CONFIG)]
    assert_resumed_only_the_rest(count, out, err, "int.h5", kept, plan)
    assert sorted(BerMap(tmp_path / "int.h5").keys()) == sorted(plan)


def test_replay_returns_recorded_counts(tmp_path: Path) -> None:
    args = ("--vdd", "1.35,1.02,1.0", "--banks", "1,6", "--rows", "sample:8", "--patterns", "all-1,all-0")
    recorded = run_sweep("--bench", "emu://B?seed=8", *args, "--out", "rec.h5", cwd=tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    replayed = run_sweep("--bench", f"replay://{tmp_path / 'rec.h5'}", *args, "--out", "rep.h5", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    a, b = load_all(tmp_path / "rec.h5"), load_all(tmp_path / "rep.h5")
    assert sum(p.flips for p in a.values()) > 100
    for key in a:
        np.testing.assert_array_equal(a[key].flips_0to1, b[key].flips_0to1, err_msg=key)
        np.testing.assert_array_equal(a[key].flips_1to0, b[key].flips_1to0, err_msg=key)
        np.testing.assert_array_equal(np.sort(a[key].errors, order=["bank", "row", "bit"]),
                                      np.sort(b[key].errors, order=["bank", "row", "bit"]), err_msg=key)
    meta = BerMap(tmp_path / "rep.h5").meta
    assert meta["dimm"]["profile"] == "replay" and json.dumps(meta["bench"])
    # Between recorded points the replay interpolates: more errors than at 1.02 V, fewer than at 1.0 V.
    between = run_sweep("--bench", f"replay://{tmp_path / 'rec.h5'}", "--vdd", "1.01", "--banks", "1,6",
                        "--rows", "sample:8", "--patterns", "all-1", "--out", "mid.h5", cwd=tmp_path)
    assert between.returncode == 0, between.stderr
    mid = next(iter(load_all(tmp_path / "mid.h5").values())).flips
    lo = [p.flips for p in a.values() if p.attrs["vdd_v"] == 1.02 and p.attrs["pattern"] == "all-1"][0]
    hi = [p.flips for p in a.values() if p.attrs["vdd_v"] == 1.0 and p.attrs["pattern"] == "all-1"][0]
    assert lo <= mid <= hi and lo < hi


def test_a_reader_does_not_disturb_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    writer = MapWriter(path, {"software": "t"}, {"a": 1})
    writer.open()
    writer.write(synthetic_point("p0", 0, 2))
    # Another process holds the map open with HDF5 file locking (HDFView, a plot, a notebook).
    reader = subprocess.Popen(
        [sys.executable, "-c", f"import h5py, time; f = h5py.File({str(path)!r}, 'r'); print('open', flush=True); time.sleep(4)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "open"
        writer.write(synthetic_point("p1", 1, 3))
        writer.finish(complete=False)
        again = MapWriter(path, {"software": "t"}, {"a": 1})
        assert again.open() == {"p0", "p1"} and again.damaged is None
        again.finish(complete=True)
    finally:
        reader.kill()
        reader.wait()


def test_refused_rerun_leaves_the_original_resumable(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    first = MapWriter(path, {}, {"trcd": [13.75]})
    first.open()
    first.write(synthetic_point("p0", 0, 1))
    first.finish(complete=False)
    with pytest.raises(MapError, match="different sweep"):
        MapWriter(path, {}, {"trcd": [10.0]}).open()
    assert MapWriter(path, {}, {"trcd": [13.75]}).open() == {"p0"}


@pytest.mark.parametrize(
    "text, message",
    [("reps = '2'\n", "reps must be an integer"), ("seed = -1\n", "seed must be a non-negative"),
     ("patterns = 5\n", "patterns must be a list"), ("banks = [0, 'a']\n", "banks must be"),
     ("out = 5\n", "out must be a non-empty string"), ("tras_ns = '35'\n", "tras_ns must be a number")],
)
def test_config_value_types(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    proc = run_sweep("--config", str(path), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


# Hostile input (issue 12): ASCII-only numbers, bad bench addresses, every config value checked ----


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: parse_rows("sample:\u00b2", 32768, 0), "sample:N"),
        (lambda: parse_rows("sample:\u0663", 32768, 0), "sample:N"),
        (lambda: parse_rows("sample:" + "9" * 5000, 32768, 0), "sample:N"),
        (lambda: parse_rows("\u0661,\u0662", 32768, 0), "rows must be"),
        (lambda: parse_rows("0:\uff18", 32768, 0), "rows must be"),
        (lambda: parse_rows("1_0", 32768, 0), "rows must be"),
        (lambda: parse_values("1.2,\u0661", "--vdd", "V"), "--vdd must be"),
        (lambda: parse_values("1_2", "--vdd", "V"), "--vdd must be"),
        (lambda: parse_values("0:inf:1", "--vdd", "V"), "--vdd"),
        (lambda: parse_values("nan", "--vdd", "V"), "--vdd"),
        (lambda: parse_values([True], "vdd_v", "V"), "vdd_v must be numbers"),
        (lambda: parse_values(["1.2"], "vdd_v", "V"), "vdd_v must be numbers"),
        (lambda: parse_values([10**400], "vdd_v", "V"), "not finite"),
        (lambda: parse_values({"a": 1}, "vdd_v", "V"), "vdd_v must be"),
    ],
)
def test_numbers_are_ascii_and_finite(call, fragment) -> None:
    with pytest.raises(PlanError, match=fragment) as info:
        call()
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


@pytest.mark.parametrize("name", ["random:\u00b2", "random:\u0663", "random:" + "9" * 5000, "random:18446744073709551616"])
def test_random_pattern_seed_is_ascii_and_64_bit(name: str) -> None:
    with pytest.raises(PatternError, match="seed") as info:
        parse_pattern(name)
    assert len(str(info.value)) < 200


def test_pattern_file_path_with_a_nul_is_a_pattern_error() -> None:
    # (a device such as /dev/zero is refused too: tests/test_plan_limits.py, in a capped process)
    with pytest.raises(PatternError, match="cannot read pattern file"):
        parse_pattern("file:a\x00b")


@pytest.mark.parametrize("url", ["emu://[B", "emu://]", "emu://?seed=\u00b2", "emu://B?seed=\u0663",
                                 "emu://B?seed=" + "9" * 5000, "emu://B?temp_c=\u0664\u0660", "emu://B?tck_ns=nan"])
def test_bad_emu_addresses_give_bench_error(url: str) -> None:
    from softmc_host.bench import Bench, BenchError

    with pytest.raises(BenchError) as info:
        Bench.open(url)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_sweep_with_a_malformed_bench_address_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = run_sweep("--bench", "emu://[B", "--out", "x.h5", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert "emu://[B" in proc.stderr and not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("temp_c = 200\n", "temp_c 200.0 outside [-55, 150] C"),
        ("vdd_v = [1.2, nan]\n", "vdd_v has a value that is not finite"),
        ("vdd_v = 99999999999999999999999999\n", "vdd_v 1e+26 outside (0, 5] V"),
        ("trcd_ns = inf\n", "trcd_ns has a value that is not finite"),
        ("tras_ns = nan\n", "tras_ns nan outside"),
        ("reps = true\n", "reps must be an integer"),
        ("reps = 0\n", "reps must be at least 1"),
        ("seed = 99999999999999999999999\n", "seed must be a non-negative integer of at most 64 bits"),
        ("max_error_positions = -5\n", "max_error_positions must be in 0..2**63-1"),
        ("rows = \"sample:\u00b2\"\n", "sample:N"),
        ("banks = \"0:9\"\n", "banks 8 outside 0..7"),
        ("rows = \"0:99999999999999\"\n", "rows 65536 outside"),
        ("patterns = []\n", "patterns must be a list of pattern names"),
        ("trcd_ns = []\n", "trcd_ns is empty"),
        ("sweep = 5\n", "[sweep] table"),
        ("bench = \"x\"\n[sweep]\nreps = 2\n", "outside [sweep]"),
        ("[sweep]\nvdd_v = { a = 1 }\n", "vdd_v must be a number, a list of numbers or a string"),
    ],
)
def test_every_config_value_is_validated(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PlanError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("url", ["emu://[B", "emu://]", "emu://?seed=\u00b2", "emu://B?seed=" + "9" * 5000,
                                 "emu://B?temp_c=\u0664\u0660", "emu://B?seed=18446744073709551616", 5])
def test_emu_address_parser_raises_only_bench_spec_error(url) -> None:
    from emubench.bench import BenchSpecError, parse_emu_url

    with pytest.raises(BenchSpecError) as info:
        parse_emu_url(url)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


@pytest.mark.parametrize("nominal_v", ["1.35", float("nan"), 1e9, [1.35]])
def test_replayed_bench_checks_the_recorded_nominal_voltage(tmp_path: Path, nominal_v) -> None:
    # (the map reader may refuse it first; either way one BenchSpecError naming nominal_v, no TypeError)
    import shutil

    import h5py

    from emubench.bench import BenchSpecError, EmulatedBench, parse_emu_url

    path = tmp_path / "m.h5"
    shutil.copy(ROOT / "data" / "maps" / "B-seed1.h5", path)
    with h5py.File(path, "r+") as f:
        bench = json.loads(f.attrs["bench_json"])
        bench["supply"]["nominal_v"] = nominal_v
        f.attrs["bench_json"] = json.dumps(bench)
    with pytest.raises(BenchSpecError, match="nominal_v") as info:
        EmulatedBench(parse_emu_url(f"replay://{path}?seed=1"))
    assert "\n" not in str(info.value)

"""The profiler's library API: run_sweep's documents, sweep_to_map, the subscribers, plot_map."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from profiler import plot as plot_module
from profiler.engine import SweepPlan, run_sweep
from profiler.plan import PlanError, SweepConfig
from profiler.run import ProgressBar, SweepError, sweep_to_map
from profiler.storage import BerMap, MapWriter
from profiler.sweep import main as sweep_main
from softmc_host.bench import Bench

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"started_utc", "finished_utc", "duration_s", "measured_temp_c"}


def small_config(out: Path, **changes: Any) -> SweepConfig:
    values: dict[str, Any] = dict(bench="emu://B?seed=2", vdd_v=[1.35, 1.05, 1.0], banks="0,3", rows="0:4",
                                  patterns=["all-1"], seed=5, out=str(out))
    values.update(changes)
    return SweepConfig(**values)


class Recorder:
    """A subscriber that keeps every document."""

    def __init__(self) -> None:
        self.docs: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        self.docs.append((name, doc))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.docs]

    def last(self, name: str) -> dict[str, Any]:
        return [doc for n, doc in self.docs if n == name][-1]


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    with Bench.open("emu://B?seed=2") as opened:
        yield opened


def plan_for(bench: Bench, tmp_path: Path, **changes: Any) -> SweepPlan:
    return SweepPlan.from_config(small_config(tmp_path / "unused.h5", **changes), banks=bench.tester.banks,
                                 rows=bench.tester.rows)


def test_documents_come_in_order_with_their_fields(bench: Bench, tmp_path: Path) -> None:
    plan = plan_for(bench, tmp_path)
    recorder = Recorder()
    summary = run_sweep(plan, bench, [recorder])
    assert recorder.names == ["start", "point", "point", "point", "stop"]
    start, stop = recorder.docs[0][1], recorder.docs[-1][1]
    assert start["total"] == 3 and start["skipped"] == 0 and start["plan"]["rows_per_point"] == 8
    assert start["geometry"]["row_bytes"] == bench.tester.row_bytes and start["identity"] == plan.identity
    assert start["patterns"] == {"all-1": "all-1"} and start["config"]["vdd_v"] == [1.35, 1.05, 1.0]
    points = [doc for name, doc in recorder.docs if name == "point"]
    assert [p["key"] for p in points] == [p.key for p in plan.points]
    assert [p["seq_num"] for p in points] == [1, 2, 3] and [p["index"] for p in points] == [0, 1, 2]
    assert {p["uid"] for p in points} == {start["uid"]} == {stop["uid"]}
    assert points[-1]["settings"]["vdd_v"] == 1.0 and points[-1]["data"].flips > 0  # 1.0 V fails on vendor B
    assert stop["exit_status"] == "success" and stop["reason"] == "" and stop["measured"] == 3
    assert stop["supply_at_nominal"] is True and summary.complete and summary.measured == 3
    assert bench.supply.voltage_set_v == pytest.approx(bench.supply.limits.nominal_v)


def test_skipped_points_are_not_measured(bench: Bench, tmp_path: Path) -> None:
    plan = plan_for(bench, tmp_path)
    recorder = Recorder()
    summary = run_sweep(plan, bench, [recorder], skip={plan.points[0].key, "not-in-the-plan"})
    assert recorder.names == ["start", "point", "point", "stop"]
    assert recorder.docs[0][1]["skipped"] == 1 and summary.skipped == 1 and summary.measured == 2
    assert [d["key"] for n, d in recorder.docs if n == "point"] == [p.key for p in plan.points[1:]]


def test_a_subscriber_interrupt_stops_the_run_at_nominal(bench: Bench, tmp_path: Path) -> None:
    plan = plan_for(bench, tmp_path)
    recorder = Recorder()
    seen: list[float] = []

    def impatient(name: str, doc: dict[str, Any]) -> None:
        if name == "point":
            seen.append(bench.supply.voltage_set_v)
            if doc["seq_num"] == 2:  # at 1.05 V
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, bench, [recorder, impatient])
    assert seen[-1] == pytest.approx(1.05)
    assert recorder.names == ["start", "point", "point", "stop"]
    stop = recorder.last("stop")
    assert stop["exit_status"] == "interrupted" and stop["measured"] == 2 and stop["supply_at_nominal"] is True
    assert bench.supply.voltage_set_v == pytest.approx(bench.supply.limits.nominal_v)


def test_a_bench_interrupt_and_a_bench_failure(bench: Bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_for(bench, tmp_path)
    original = bench.tester.read_rows
    calls = {"n": 0}

    def read_rows(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise failure
        return original(*args, **kwargs)

    monkeypatch.setattr(bench.tester, "read_rows", read_rows)
    for failure, status in ((KeyboardInterrupt(), "interrupted"), (RuntimeError("link lost"), "failed")):
        calls["n"] = 0
        recorder = Recorder()
        with pytest.raises(type(failure)):
            run_sweep(plan, bench, [recorder])
        stop = recorder.last("stop")
        assert recorder.names == ["start", "point", "point", "stop"]
        assert stop["exit_status"] == status and stop["measured"] == 2
        if status == "failed":
            assert stop["reason"] == "RuntimeError: link lost"
        assert bench.supply.voltage_set_v == pytest.approx(bench.supply.limits.nominal_v)  # the third point was at 1.0 V


def test_stop_requested_ends_with_interrupted(bench: Bench, tmp_path: Path) -> None:
    plan = plan_for(bench, tmp_path)
    recorder = Recorder()
    summary = run_sweep(plan, bench, [recorder], stop_requested=lambda: len(recorder.docs) >= 2)
    assert recorder.names == ["start", "point", "stop"]
    assert summary.exit_status == "interrupted" and summary.reason == "stop requested" and summary.measured == 1


def test_a_plan_outside_the_limits_emits_nothing(bench: Bench, tmp_path: Path) -> None:
    plan = plan_for(bench, tmp_path, vdd_v=[1.35, 0.5])
    recorder = Recorder()
    with pytest.raises(PlanError, match="0.5 V outside"):
        run_sweep(plan, bench, [recorder])
    assert recorder.docs == []


def test_map_writer_subscribes_on_its_own(bench: Bench, tmp_path: Path) -> None:
    plan = plan_for(bench, tmp_path)
    path = tmp_path / "w.h5"
    writer = MapWriter(path, {"software": "t", "geometry": {"banks": 8, "rows": bench.tester.rows,
                                                            "row_bytes": bench.tester.row_bytes}}, plan.identity)
    run_sweep(plan, bench, [writer])  # opened by the start document, finished by the stop document
    assert BerMap(path).keys() == [p.key for p in plan.points]
    assert not writer.journal.exists() and not writer.lock_path.exists()


def test_progress_bar_and_live_plot(bench: Bench, tmp_path: Path) -> None:
    plan = plan_for(bench, tmp_path)
    out = io.StringIO()
    png = tmp_path / "live.png"
    live = plot_module.LivePlot(png, every=2)
    run_sweep(plan, bench, [ProgressBar(file=out), live, ProgressBar(enabled=False)])
    assert "3/3" in out.getvalue()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and live.keys == [p.key for p in plan.points]


def _load(path: Path) -> dict[str, Any]:
    ber_map = BerMap(path)
    return {key: ber_map.point(key) for key in ber_map.keys()}


def test_sweep_to_map_writes_the_map_the_command_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = small_config(tmp_path / "lib.h5")
    recorder = Recorder()
    assert sweep_to_map(config, progress=False, subscribers=[recorder]) == tmp_path / "lib.h5"
    assert sweep_main(["--bench", config.bench, "--vdd", "1.35,1.05,1.0", "--banks", "0,3", "--rows", "0:4",
                       "--patterns", "all-1", "--seed", "5", "-q", "-o", str(tmp_path / "cli.h5")]) == 0
    assert "3 points (3 measured now" in capsys.readouterr().out
    a, b = _load(tmp_path / "lib.h5"), _load(tmp_path / "cli.h5")
    assert list(a) == list(b) and len(a) == 3 and sum(p.flips for p in a.values()) > 0
    for key in a:
        for name, array in a[key].arrays().items():
            np.testing.assert_array_equal(array, b[key].arrays()[name], err_msg=f"{key} {name}")
        assert {k: v for k, v in a[key].attrs.items() if k not in VOLATILE} == \
            {k: v for k, v in b[key].attrs.items() if k not in VOLATILE}
    meta_a, meta_b = BerMap(tmp_path / "lib.h5").meta, BerMap(tmp_path / "cli.h5").meta
    meta_a["config"].pop("out"), meta_b["config"].pop("out")
    assert meta_a == meta_b
    # the custom subscriber saw every point of the map
    assert [d["key"] for n, d in recorder.docs if n == "point"] == list(a)
    assert recorder.last("stop")["exit_status"] == "success"


def test_sweep_to_map_resumes_and_a_subscriber_gets_the_rest(tmp_path: Path) -> None:
    config = small_config(tmp_path / "r.h5")
    first = Recorder()
    with pytest.raises(KeyboardInterrupt):
        sweep_to_map(config, progress=False, subscribers=[first], stop_requested=lambda: first.names.count("point") >= 1)
    assert first.last("stop")["exit_status"] == "interrupted"
    assert len(BerMap(config.out).keys()) == 1 and Path(config.out + ".journal").is_dir()
    assert not Path(config.out + ".lock").exists()
    second = Recorder()
    sweep_to_map(config, progress=False, subscribers=[second])
    assert second.docs[0][1]["skipped"] == 1 and second.names.count("point") == 2
    assert len(BerMap(config.out).keys()) == 3 and not Path(config.out + ".journal").exists()


@pytest.mark.parametrize("changes, fragment", [
    ({"vdd_v": [1.35, 0.5]}, "0.5 V outside the configured limits"),
    ({"bench": "emu://[B"}, "emu://[B"),
    ({"reps": 0}, "reps must be at least 1"),
    ({"rows": "0:4", "banks": [9]}, "banks 9 outside"),
])
def test_sweep_to_map_fails_with_one_sweep_error(tmp_path: Path, changes: dict[str, Any], fragment: str) -> None:
    config = small_config(tmp_path / "x.h5", **changes)
    with pytest.raises(SweepError) as info:
        sweep_to_map(config, progress=False)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError) and not (tmp_path / "x.h5").exists()


def test_sweep_to_map_refuses_another_sweeps_map(tmp_path: Path) -> None:
    sweep_to_map(small_config(tmp_path / "m.h5"), progress=False)
    with pytest.raises(SweepError, match="holds a different sweep"):
        sweep_to_map(small_config(tmp_path / "m.h5", seed=6), progress=False)


def test_plot_map_and_the_out_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_to_map(small_config(tmp_path / "p.h5"), progress=False)
    written = plot_module.plot_map(path, tmp_path / "png", prefix="x")
    assert [p.name for p in written][0] == "x_ber_vs_vdd_v.png" and all(p.is_file() for p in written)
    for flag in ("-o", "--out", "--out-dir"):
        assert plot_module.main([str(path), flag, str(tmp_path / flag.strip("-")), "-q"]) == 0
        assert all(Path(line).parent == tmp_path / flag.strip("-") for line in capsys.readouterr().out.split())
    with pytest.raises(plot_module.MapError, match="no such file"):
        plot_module.plot_map(tmp_path / "none.h5")


def test_the_package_exports_its_api_without_importing_h5py_or_matplotlib() -> None:
    code = ("import sys, profiler; assert 'h5py' not in sys.modules and 'matplotlib' not in sys.modules, 'eager';"
            "names = ['run_sweep', 'sweep_to_map', 'SweepConfig', 'SweepError', 'BerMap', 'MapError', 'PointData',"
            " 'SweepPlan', 'SweepSummary', 'MapWriter'];"
            "assert all(n in profiler.__all__ for n in names + ['plot_map']);"
            "[getattr(profiler, n) for n in names]; assert 'matplotlib' not in sys.modules, 'plot';"
            "import profiler.sweep as s; assert s.sweep_to_map is profiler.sweep_to_map;"
            "assert profiler.plot_map.__module__ == 'profiler.plot'; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_start_document_is_json_except_the_point_data(bench: Bench, tmp_path: Path) -> None:
    recorder = Recorder()
    run_sweep(plan_for(bench, tmp_path), bench, [recorder])
    for _name, doc in recorder.docs:
        json.dumps({k: v for k, v in doc.items() if k != "data"})

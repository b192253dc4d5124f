"""Resource bounds of sweep plans (issue 12, item 7).

A plan is counted before it is built: a range of a trillion values (``--vdd 0:1:1e-12``,
``temp_c = "0:1:1e-12"``) or a billion repetitions (``--reps 1000000000``) is refused with a
one-line error at once, not expanded until the memory runs out. Every check runs in a child
process whose address space is capped, so that the code before the fix fails (MemoryError or
timeout) instead of taking the machine down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from profiler.plan import MAX_PLAN_POINTS, MAX_VALUES_PER_SETTING, PlanError, SweepConfig, build_plan, plan_size

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
MEMORY_CAP = 3 << 30  # bytes of address space for the child: far below what the unbounded plans need
TIMEOUT_S = 60


def _cap_memory() -> None:  # pragma: no cover - runs in the child
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    except (ImportError, ValueError, OSError):
        pass


def run_capped(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S,
        preexec_fn=_cap_memory if os.name == "posix" else None,
    )


def run_sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_capped(["-m", "profiler.sweep", "--no-progress", *args], cwd=cwd)


def assert_one_line_refusal(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# The API: counted, refused fast, little memory ------------------------------------------------

API_CHECK = textwrap.dedent(
    """
    import json, sys, time, tracemalloc
    from profiler.plan import PlanError, SweepConfig, build_plan, parse_values

    cases = {
        "range 1e-12": lambda: parse_values("0:1:1e-12", "--vdd", "V"),
        "range 1e-300": lambda: parse_values("1:2:1e-300", "--vdd", "V"),
        "range to 1e308": lambda: parse_values("-1e308:1e308:1e-300", "temp_c", "C"),
        "many ranges": lambda: parse_values(",".join(["0:1:0.001"] * 20), "--trcd", "ns"),
        "reps 1e9": lambda: build_plan(SweepConfig(reps=10**9)),
        "reps 2**62": lambda: build_plan(SweepConfig(reps=2**62)),
        "product": lambda: build_plan(SweepConfig(vdd_v=[1.0 + i * 1e-4 for i in range(2000)],
                                                  temp_c=[float(t) for t in range(100)])),
    }
    results = {}
    for name, call in cases.items():
        tracemalloc.start()
        started = time.perf_counter()
        try:
            call()
            outcome = "accepted"
        except PlanError as exc:
            outcome = str(exc)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results[name] = {"outcome": outcome, "seconds": elapsed, "peak_bytes": peak}
    print(json.dumps(results))
    """
)


def test_huge_plans_are_refused_quickly_without_building_them() -> None:
    proc = run_capped(["-c", API_CHECK])
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, result in results.items():
        assert result["outcome"] != "accepted", name
        assert "\n" not in result["outcome"]
        assert result["seconds"] < 2.0, (name, result)
        # the SweepConfig lists of the "product" case exist before the call; nothing near a plan is made
        assert result["peak_bytes"] < 4 << 20, (name, result)
    assert "1,000,000,000,001 values" in results["range 1e-12"]["outcome"]
    assert "more than the limit of 100,000" in results["reps 1e9"]["outcome"]
    assert "400,000 points" in results["product"]["outcome"]  # 2000 VDD x 100 temperatures x 2 patterns


def test_plan_size_counts_without_building() -> None:
    config = SweepConfig(vdd_v=[1.2, 1.1, 1.0], trcd_ns=[13.75, 10.0], temp_c=[20.0, 40.0], reps=5)
    assert plan_size(config) == 3 * 2 * 2 * 2 * 5 == len(build_plan(config))
    assert plan_size(SweepConfig(reps=10**12)) == 2 * 10**12  # arithmetic, instant


def test_the_limit_is_the_documented_constant_and_can_be_raised() -> None:
    at_limit = SweepConfig(patterns=["all-1"], reps=MAX_PLAN_POINTS)
    assert plan_size(at_limit) == MAX_PLAN_POINTS
    with pytest.raises(PlanError, match="limit of 10 "):
        build_plan(SweepConfig(reps=6), max_points=10)
    assert len(build_plan(SweepConfig(reps=6), max_points=12)) == 12
    with pytest.raises(PlanError, match="more than the limit"):
        build_plan(SweepConfig(patterns=["all-1"], reps=MAX_PLAN_POINTS + 1))
    with pytest.raises(PlanError, match="at most 10,000"):
        build_plan(SweepConfig(vdd_v=[1.0] * (MAX_VALUES_PER_SETTING + 1)))
    with pytest.raises(PlanError, match="--max-points"):
        build_plan(SweepConfig(), max_points=0)
    docs = (ROOT / "docs" / "profiling.md").read_text(encoding="utf-8")
    assert f"{MAX_PLAN_POINTS:,}" in docs and "MAX_PLAN_POINTS" in docs and f"{MAX_VALUES_PER_SETTING:,}" in docs


# The command line ---------------------------------------------------------------------------


def test_cli_vdd_range_of_a_trillion_values_is_refused(tmp_path: Path) -> None:
    proc = run_sweep("--vdd", "0:1:1e-12", "--dry-run", cwd=tmp_path)
    assert_one_line_refusal(proc, "--vdd", "1,000,000,000,001 values")
    assert list(tmp_path.iterdir()) == []


def test_cli_a_billion_reps_is_refused(tmp_path: Path) -> None:
    proc = run_sweep("--reps", "1000000000", "--dry-run", cwd=tmp_path)
    assert_one_line_refusal(proc, "2,000,000,000 points", "limit of 100,000", "--max-points")


def test_config_temperature_range_of_a_trillion_values_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text('[sweep]\ntemp_c = "0:1:1e-12"\n')
    proc = run_sweep("--config", str(config), "--dry-run", cwd=tmp_path)
    assert_one_line_refusal(proc, str(config), "temp_c", "1,000,000,000,001 values")


def test_cli_row_range_far_outside_the_dimm_is_refused(tmp_path: Path) -> None:
    proc = run_sweep("--rows", "0:99999999999999", "--dry-run", cwd=tmp_path)
    assert_one_line_refusal(proc, "rows", "outside")


def test_cli_max_points_flag_and_the_dry_run_count(tmp_path: Path) -> None:
    refused = run_sweep("--reps", "3", "--max-points", "5", "--dry-run", cwd=tmp_path)
    assert_one_line_refusal(refused, "6 points", "limit of 5")
    accepted = run_sweep("--reps", "3", "--max-points", "6", "--dry-run", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert "points   : 6" in accepted.stdout


def test_a_device_as_pattern_file_is_refused_not_read(tmp_path: Path) -> None:
    # Reading /dev/zero never ends; a FIFO would block for ever: neither is a regular file.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = textwrap.dedent(
        f"""
        from profiler.patterns import PatternError, parse_pattern
        for name in ("file:/dev/zero", "file:{fifo}", "file:{tmp_path}"):
            try:
                parse_pattern(name)
            except PatternError as exc:
                print(exc)
        """
    )
    proc = run_capped(["-c", code])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("not a regular file") == 3, proc.stdout

"""Smoke test of ``benchmarks/scaling.py``: a quick run prints every section with numbers; bad flags are one line."""

from __future__ import annotations

import re

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def bench_module():
    return load_script("benchmarks/scaling.py", "scaling_benchmark")


def _row(out: str, label: str, section: str) -> list[float]:
    """The numbers of the first row starting with ``label`` after ``section``'s header."""
    text = out[out.index(section):]
    line = next(line for line in text.splitlines() if line.startswith(label + " "))
    return [float(v) for v in re.findall(r"-?\d+\.\d+|-?\d+", line.split(None, 1)[1].split("  a key")[0])]


def test_quick_run_prints_every_section(bench_module, capsys, tmp_path):
    pytest.importorskip("distributed")
    argv = ["--quick", "--workers", "1,2", "--tasks", "4", "--images", "40", "--dimms", "2", "--out", str(tmp_path)]
    assert bench_module.main(argv) == 0
    out = capsys.readouterr().out
    for header in ("== 1. probes per second", "== 2. overhead per task", "== 3. campaign: 2 emulated"):
        assert header in out, header
    # section 1: every executor at every worker count, with a positive rate
    for label in ("local", "dask"):
        rows = [line for line in out[out.index("== 1."):out.index("== 2.")].splitlines()
                if line.split()[:1] == [label]]
        assert [int(r.split()[1]) for r in rows] == [1, 2]
        assert all(float(r.split()[3]) > 0 for r in rows)
    assert "results identical to the serial run" in out
    # section 2: a latency, its overhead, a throughput, and what each task carries
    latency, _, throughput, _, empty = _row(out, "local", "== 2.")[:5]
    assert latency > 0 and throughput > 0 and empty > 0
    assert "a key (1 scatter)" in out and " fd" in out and "(the file's name)" in out
    # section 3: the three ways agree (the script raises otherwise) and the maps are where asked
    serial_wall = _row(out, "serial", "== 3.")[1]
    assert serial_wall > 0
    assert len(list((tmp_path / "campaign-dask").glob("C-seed*.h5"))) == 2
    assert "total" in out.splitlines()[-1]


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers must be distinct integers >= 1"),
    (["--workers", "1,x"], "--workers must be comma-separated integers"),
    (["--sections", "probes,nope"], "unknown section 'nope'"),
    (["--tasks", "0"], "--tasks must be >= 1"),
    (["--images", "100000"], "--images must be at most"),
])
def test_bad_arguments_are_one_line(bench_module, capsys, argv, message):
    assert bench_module.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err

"""Smoke test of ``benchmarks/calibration.py``: a quick run prints every section with numbers."""

from __future__ import annotations

import math

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def bench_module():
    return load_script("benchmarks/calibration.py", "calibration_benchmark")


def test_quick_run_prints_every_section(bench_module, capsys):
    assert bench_module.main(["--quick", "--dimms", "3", "--rows", "8"]) == 0
    out = capsys.readouterr().out
    for header in ("== 1. population vs real", "-- 1b. measured through the bench", "== 2. hold-out",
                   "== 3. minimum reliable tRCD", "== 4. temperature", "== 5. retention", "== 6. data patterns"):
        assert header in out, header
    for dimm in ("A3", "A8", "B3", "B9", "C3"):
        assert f"\n{dimm}" in out
    assert "KS p" in out and "MWU p" in out
    assert "total" in out.splitlines()[-1]


def test_min_reliable_latency_rises_as_vdd_drops(bench_module):
    from emubench.physics import PhysicsDimm
    from emubench.profiles import get_profile

    dimm = PhysicsDimm(get_profile("B"), seed=0)
    nominal = bench_module.min_reliable_ns(dimm, 1.35)
    low = bench_module.min_reliable_ns(dimm, 1.20)
    assert nominal is not None and low is not None
    assert low > nominal
    assert math.isclose(nominal / bench_module.LATENCY_STEP_NS, round(nominal / bench_module.LATENCY_STEP_NS))
    # the grid point just below is not error-free
    assert not bench_module.error_free(dimm, 1.35, nominal - bench_module.LATENCY_STEP_NS, 20.0)


def test_censor_and_percentile(bench_module):
    import numpy as np

    values = bench_module.censor([0.0, 1e-9, 2**-25, 0.5])
    assert list(values) == [0.0, 0.0, 2**-25, 0.5]
    assert bench_module.percentile_in(0.0, np.zeros(4)) == 50.0
    assert bench_module.percentile_in(1.0, np.array([0.0, 0.5])) == 100.0

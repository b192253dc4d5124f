"""The ``eden`` profile reproduces the EDEN slides' table (issue #19): two of its eight points, through the bench."""

from __future__ import annotations

import numpy as np
import pytest

from emubench.calibration import EDEN_TABLE, table_setting, within
from softmc_host.bench import Bench
from softmc_host.timing import AccessTiming

ROWS = [(b, r) for b in (0, 3) for r in range(32)]


def _ber(bench: Bench, data: np.ndarray, vdd_v: float, trcd_ns: float) -> float:
    bench.set_vdd(bench.nominal_vdd_v)
    bench.tester.write_rows(ROWS, list(data))
    bench.set_vdd(vdd_v)
    back = bench.tester.read_rows(ROWS, AccessTiming(trcd_ns=trcd_ns, trp_ns=13.75, tras_ns=35.0),
                                  per_burst_activate=trcd_ns < 13.75)  # as profiler.sweep reads
    bench.set_vdd(bench.nominal_vdd_v)
    return float(np.unpackbits(back ^ data).sum()) / data.size / 8


@pytest.mark.parametrize("point", [("vdd", -0.25), ("trcd", -4.5)])
def test_a_sweep_of_eden_meets_the_table(point) -> None:
    knob, delta = point
    lo, hi = next((lo, hi) for k, d, lo, hi in EDEN_TABLE if (k, d) == point)
    vdd, trcd = table_setting(knob, delta)
    data = np.random.default_rng(3).integers(0, 256, (len(ROWS), 8192), dtype=np.uint8)
    with Bench.open("emu://eden?seed=1") as bench:
        ber = _ber(bench, data, vdd, trcd)
        nominal = _ber(bench, data, 1.35, 13.75)
    assert within(ber, lo, hi), f"{knob} {delta:+g}: BER {ber:.4f}, table {lo}-{hi}"
    assert nominal == 0.0

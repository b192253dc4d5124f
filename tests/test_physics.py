"""Error physics of the emulated DIMM, in process (the wire path is tested in test_bench.py)."""

from __future__ import annotations

import numpy as np
import pytest

from emubench.firmware import ExecutionError, TesterFirmware
from emubench.physics import PhysicsDimm
from emubench.profiles import PROFILES, LogCurve, cell_p_for_line_fraction, get_profile, line_fraction
from firmware_bridge.protocol import ErrorCode
from softmc_host.asm import assemble
from softmc_host.program import append_row_read, append_row_write, pack_rows
from softmc_host.timing import AccessTiming


class Bench:
    """A PhysicsDimm behind the firmware, with a settable supply and temperature."""

    def __init__(self, profile: str = "B", seed: int = 0, temp_c: float = 20.0) -> None:
        self.vdd_v = get_profile(profile).vdd_nominal_v
        self.temp_c = temp_c
        self.dimm = PhysicsDimm(get_profile(profile), seed=seed, environment=lambda: (self.vdd_v, self.temp_c))
        self.fw = TesterFirmware(self.dimm)

    def write(self, rows, data, timing=AccessTiming()) -> None:
        cyc = timing.cycles(2.5)
        for program in pack_rows(rows, lambda p, b, r: append_row_write(p, b, r, data, cyc)):
            self.fw.run(program.words, program.blocks)

    def read(self, rows, timing=AccessTiming(), per_burst: bool = False) -> np.ndarray:
        cyc = timing.cycles(2.5)
        out = []
        for program in pack_rows(rows, lambda p, b, r: append_row_read(p, b, r, cyc, per_burst_activate=per_burst)):
            out.append(np.frombuffer(self.fw.run(program.words, program.blocks), np.uint8))
        return np.concatenate(out).reshape(len(rows), -1)


ROWS = [(b, r) for b in range(8) for r in (5, 777, 4096, 20000)]


def bit_errors(read: np.ndarray, pattern: int) -> tuple[int, int]:
    """(1->0 flips, 0->1 flips) against a repeated byte pattern."""
    expect = np.full_like(read, pattern)
    diff = read ^ expect
    one_to_zero = int(np.unpackbits(diff & expect).sum())
    zero_to_one = int(np.unpackbits(diff & ~expect).sum())
    return one_to_zero, zero_to_one


@pytest.mark.parametrize("profile", ["A", "B", "C", "eden"])
def test_nominal_settings_give_no_errors(profile: str) -> None:
    bench = Bench(profile, seed=3, temp_c=85.0)  # even hot
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 8192, dtype=np.uint8)
    bench.write(ROWS, data)
    back = bench.read(ROWS)
    assert (back == data).all()
    back = bench.read(ROWS, per_burst=True)
    assert (back == data).all()


def test_reduced_voltage_gives_errors_that_grow_as_vdd_drops() -> None:
    bench = Bench("B", seed=1)
    bench.write(ROWS, 0xFF)
    counts = []
    for vdd in (1.15, 1.05, 1.025, 1.0):
        bench.vdd_v = vdd
        counts.append(sum(bit_errors(bench.read(ROWS), 0xFF)))
    assert counts[0] == 0
    assert counts[1] < counts[2] < counts[3]
    assert counts[3] > 100


def test_reduced_trcd_gives_errors_and_mostly_zero_to_one() -> None:
    bench = Bench("B", seed=2)
    rows = ROWS[::3]
    flips = {}
    for pattern in (0x00, 0xFF):
        bench.write(rows, pattern)
        assert bit_errors(bench.read(rows, AccessTiming(trcd_ns=12.5), per_burst=True), pattern) == (0, 0)
        flips[pattern] = bit_errors(bench.read(rows, AccessTiming(trcd_ns=2.5), per_burst=True), pattern)
    zero_to_one = flips[0x00][1]
    one_to_zero = flips[0xFF][0]
    assert flips[0x00][0] == 0 and flips[0xFF][1] == 0  # a cell flips only towards its leak direction
    assert zero_to_one > 1.4 * one_to_zero > 0  # the anti-cell bias under reduced tRCD


def test_reduced_trp_gives_errors() -> None:
    bench = Bench("A", seed=4)
    bench.write(ROWS, 0xAA)
    clean = bench.read(ROWS, AccessTiming(trp_ns=15.0))
    assert (clean == 0xAA).all()
    bad = bench.read(ROWS, AccessTiming(trp_ns=2.5))
    assert (bad != 0xAA).any()


def test_lower_vdd_raises_the_minimum_reliable_trcd() -> None:
    bench = Bench("B", seed=5)
    rows = ROWS[::3]
    bench.write(rows, 0x00)
    timing = AccessTiming(trcd_ns=7.5)
    at_nominal = sum(bit_errors(bench.read(rows, timing, per_burst=True), 0x00))
    bench.vdd_v = 1.20  # no voltage errors yet for B, but a slower array
    at_low = sum(bit_errors(bench.read(rows, timing, per_burst=True), 0x00))
    assert at_nominal < at_low


def test_same_seed_same_errors_other_seed_other_errors() -> None:
    def error_positions(seed: int) -> np.ndarray:
        bench = Bench("B", seed=seed)
        bench.write(ROWS, 0xFF)
        bench.vdd_v = 1.0
        return np.flatnonzero(bench.read(ROWS) != 0xFF)

    first, again, other = error_positions(7), error_positions(7), error_positions(8)
    assert first.size > 50
    np.testing.assert_array_equal(first, again)
    overlap = np.intersect1d(first, other).size
    assert overlap < 0.2 * min(first.size, other.size)


def test_banks_and_rows_differ_and_stripes_repeat_across_banks() -> None:
    bench = Bench("C", seed=1)
    rows = [(b, r) for b in range(8) for r in range(0, 512, 8)]  # one orientation block
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 8192, dtype=np.uint8)
    bench.write(rows, data)
    bench.vdd_v = 1.225
    errors = np.unpackbits(bench.read(rows) ^ data, axis=1).sum(axis=1).reshape(8, -1).astype(float)
    per_bank = errors.sum(axis=1)
    assert per_bank.max() > 3 * max(per_bank.min(), 1)  # whole banks differ strongly
    assert (errors > 0).any(axis=0).sum() < errors.shape[1]  # not every row fails
    # Row stripes: the same rows are weak in different banks (positive correlation).
    log_errors = np.log1p(errors[per_bank > 0])
    corr = np.corrcoef(log_errors)
    upper = corr[np.triu_indices(len(corr), 1)]
    assert np.nanmean(upper) > 0.3


def test_temperature_increases_errors() -> None:
    cold, hot = Bench("B", seed=9, temp_c=20.0), Bench("B", seed=9, temp_c=70.0)
    counts = []
    for bench in (cold, hot):
        bench.write(ROWS, 0xFF)
        bench.vdd_v = 1.05
        counts.append(sum(bit_errors(bench.read(ROWS), 0xFF)))
    assert counts[1] > 3 * max(counts[0], 1)


def test_read_to_read_jitter_is_small() -> None:
    bench = Bench("B", seed=10)
    bench.write(ROWS, 0xFF)
    bench.vdd_v = 1.0
    a, b = np.unpackbits(bench.read(ROWS) ^ 0xFF), np.unpackbits(bench.read(ROWS) ^ 0xFF)
    union = int((a | b).sum())
    assert union > 500
    assert 0 < int((a ^ b).sum()) < 0.2 * union  # a few cells near their threshold flicker


def test_short_tras_damages_the_next_activation() -> None:
    bench = Bench("A", seed=11)
    rows = [(2, r) for r in range(40)]
    bench.write(rows, 0xFF)
    assert (bench.read(rows) == 0xFF).all()
    # Open and close each row after 3 cycles (7.5 ns), far below the safe tRAS:
    # the charge is not restored, so the next activation reads errors.
    text = "".join(f"ACT 2 {r}\nWAIT 2\nPRE 2\nWAIT 10\n" for _, r in rows) + "END\n"
    bench.fw.run([i.encode() for i in assemble(text.splitlines())])
    assert bench.fw.last_trace.min_tras_cycles == 3
    damaged = bench.read(rows)
    assert (damaged != 0xFF).any()
    # Writing the rows again restores them.
    bench.write(rows, 0xFF)
    assert (bench.read(rows) == 0xFF).all()


def test_supply_off_is_refused() -> None:
    bench = Bench("B")
    bench.vdd_v = 0.0
    with pytest.raises(ExecutionError) as info:
        bench.read([(0, 0)])
    assert info.value.code == ErrorCode.NO_POWER


def test_line_fraction_calibration_is_consistent() -> None:
    for shared in (0.0, 0.3, 0.6):
        for frac in (1e-6, 1e-3, 0.1, 0.5):
            p = cell_p_for_line_fraction(frac, shared, 256)
            from scipy.special import ndtri

            assert line_fraction(-ndtri(p), shared, 256) == pytest.approx(frac, rel=1e-3)
    # Clustering means a higher cell rate is needed for the same line fraction.
    assert cell_p_for_line_fraction(0.01, 0.6, 256) > cell_p_for_line_fraction(0.01, 0.0, 256)


def test_log_curve_and_profile_lookup() -> None:
    curve = LogCurve(x=(1.0, 1.1), log10_p=(-2.0, -4.0), zero_at=1.15)
    assert curve(1.05) == pytest.approx(1e-3)
    assert curve(1.15) == 0.0 and curve(1.2) == 0.0
    assert curve(0.9) == 0.5  # extrapolated to 1e0, capped at p_max
    assert get_profile("c") is PROFILES["C"]
    with pytest.raises(KeyError, match="unknown DIMM profile 'Z'; known: A, B, C, eden, ideal"):
        get_profile("Z")


def test_every_row_and_bank_has_its_own_cells() -> None:
    dimm = PhysicsDimm(get_profile("B"), seed=1)
    draws = [dimm.cell_draws(b, r) for b, r in ((0, 5), (0, 6), (1, 5), (0, 5 + (1 << 15) - 1))]
    for i in range(len(draws)):
        for j in range(i + 1, len(draws)):
            assert not np.array_equal(draws[i], draws[j])
    np.testing.assert_array_equal(dimm.cell_draws(0, 5), PhysicsDimm(get_profile("B"), seed=1).cell_draws(0, 5))
    assert not np.array_equal(dimm.cell_draws(0, 5), PhysicsDimm(get_profile("A"), seed=1).cell_draws(0, 5))

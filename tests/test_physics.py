"""Error physics of the emulated DIMM, in process (the wire path is tested in test_bench.py)."""

from __future__ import annotations

import numpy as np
import pytest

from emubench.firmware import ExecutionError, TesterFirmware
from emubench.physics import MECH_TIMING, MECH_VOLTAGE, PhysicsDimm, WeakCells
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
VOLTRON = AccessTiming(trcd_ns=10.0, trp_ns=10.0)  # Voltron's test latency, the voltage curves' reference


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
    bench = Bench("A", seed=4)  # bitline orientation: true and anti cells side by side in every row
    bench.write(ROWS, 0xAA)
    clean = bench.read(ROWS, AccessTiming(trp_ns=15.0))
    assert (clean == 0xAA).all()
    bad = bench.read(ROWS, AccessTiming(trp_ns=2.5))
    assert (bad != 0xAA).any()
    # Direction: a failing cell only leaks its charge, so a flipped bit held its cell's charged
    # value (1 in a true cell, 0 in an anti cell) and both directions occur in a checkerboard.
    true_cells = np.stack([bench.dimm.true_cell_bytes(b, r) for b, r in ROWS])
    discharged = np.uint8(0xAA) ^ true_cells  # bit set where the cell holds its uncharged value
    diff = bad ^ 0xAA
    assert int(np.unpackbits(diff & discharged).sum()) == 0
    one_to_zero, zero_to_one = bit_errors(bad, 0xAA)
    # No anti-cell bias under reduced tRP (it is tRCD's): the two directions are about even.
    assert one_to_zero > 1000 and 0.8 < zero_to_one / one_to_zero < 1.25
    # Errors grow as tRP shrinks below the onset (A: 7.2 ns), and none at or above 10 ns.
    counts = [sum(bit_errors(bench.read(ROWS, AccessTiming(trp_ns=t)), 0xAA)) for t in (10.0, 7.5, 5.0, 2.5)]
    assert counts[0] == 0 < counts[1] < counts[2] < counts[3]
    # Timing errors are not written back: a nominal read afterwards is clean.
    assert (bench.read(ROWS) == 0xAA).all()


def test_lower_vdd_raises_the_minimum_reliable_trcd() -> None:
    bench = Bench("B", seed=5)
    rows = ROWS[::3]
    bench.write(rows, 0x00)
    timing = AccessTiming(trcd_ns=5.0)  # 2 cycles
    at_nominal = sum(bit_errors(bench.read(rows, timing, per_burst=True), 0x00))
    bench.vdd_v = 1.10  # a slower array: both mechanisms need more time
    at_low = sum(bit_errors(bench.read(rows, timing, per_burst=True), 0x00))
    assert at_nominal < at_low


def test_same_seed_same_errors_other_seed_other_errors() -> None:
    def error_positions(seed: int, vdd_v: float) -> np.ndarray:
        bench = Bench("B", seed=seed)
        bench.write(ROWS, 0xFF)
        bench.vdd_v = vdd_v
        return np.flatnonzero(bench.read(ROWS, VOLTRON) != 0xFF)

    first, again = error_positions(7, 1.0), error_positions(7, 1.0)
    assert first.size > 50
    np.testing.assert_array_equal(first, again)
    # Another DIMM at a voltage where it has about as many errors: other cells.
    others = [error_positions(8, v) for v in (1.0, 1.02, 1.04, 1.06, 1.08)]
    other = min(others, key=lambda e: abs(np.log((e.size + 1) / first.size)))
    assert 0.2 * first.size < other.size < 5 * first.size
    overlap = np.intersect1d(first, other).size
    assert overlap < 0.3 * min(first.size, other.size)


def test_banks_and_rows_differ_and_stripes_repeat_across_banks() -> None:
    bench = Bench("C", seed=1)
    rows = [(b, r) for b in range(8) for r in range(0, 512, 8)]  # one orientation block
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 8192, dtype=np.uint8)
    bench.write(rows, data)
    bench.vdd_v = 1.24
    errors = np.unpackbits(bench.read(rows, VOLTRON) ^ data, axis=1).sum(axis=1).reshape(8, -1).astype(float)
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
        counts.append(sum(bit_errors(bench.read(ROWS, AccessTiming(trp_ns=5.0)), 0xFF)))
    assert counts[1] > 3 * max(counts[0], 1)
    # The voltage mechanism too, through the latency a hot cell needs; and the error-free
    # voltage moves up with temperature instead of being a fixed cliff.
    dimm = PhysicsDimm(get_profile("C"), seed=0)
    assert dimm.voltage_probability(1.22, 10.0, 70.0) > 3 * dimm.voltage_probability(1.22, 10.0, 20.0)
    assert dimm.voltage_probability(1.30, 10.0, 20.0) == 0.0 < dimm.voltage_probability(1.30, 10.0, 70.0)


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


def weakest(dimm: PhysicsDimm, bank: int, row: int, mechanism: int = MECH_VOLTAGE) -> np.ndarray:
    return dimm.weak_cells(bank, row, mechanism).up_to(0.01)[1]


def test_every_row_and_bank_has_its_own_cells() -> None:
    dimm = PhysicsDimm(get_profile("B"), seed=1)
    draws = [weakest(dimm, b, r) for b, r in ((0, 5), (0, 6), (1, 5), (0, 5 + (1 << 15) - 1))]
    draws.append(weakest(dimm, 0, 5, MECH_TIMING))
    for i in range(len(draws)):
        for j in range(i + 1, len(draws)):
            assert np.intersect1d(draws[i], draws[j]).size < 0.1 * draws[i].size
    np.testing.assert_array_equal(weakest(dimm, 0, 5), weakest(PhysicsDimm(get_profile("B"), seed=1), 0, 5))
    assert not np.array_equal(weakest(dimm, 0, 5), weakest(PhysicsDimm(get_profile("A"), seed=1), 0, 5))


# The margin model of issue #14 -------------------------------------------------------------


def line_fraction_read(bench: Bench, rows, data, timing) -> float:
    back = bench.read(rows, timing)
    return float(((back ^ data) != 0).reshape(-1, 64).any(axis=1).mean())


def test_longer_latency_removes_voltage_errors_above_the_floor_but_not_below() -> None:
    rows = [(b, r) for b in range(8) for r in range(0, 2048, 64)]
    bench = Bench("C", seed=1)
    bench.write(rows, 0xFF)
    bench.vdd_v = 1.20  # above C's floor (about 1.09 V): a slow array, not a broken one
    fractions = [line_fraction_read(bench, rows, 0xFF, AccessTiming(trcd_ns=t, trp_ns=t)) for t in (10, 15, 30)]
    assert fractions[0] > 0.05
    assert fractions[0] > fractions[1] > fractions[2] == 0.0
    bench = Bench("B", seed=0)
    bench.write(rows, 0xFF)
    bench.vdd_v = 1.00  # below B's floor (about 1.04 V): latency does not help
    low = [line_fraction_read(bench, rows, 0xFF, AccessTiming(trcd_ns=t, trp_ns=t)) for t in (10, 30)]
    assert low[1] > 0.05 and low[1] == pytest.approx(low[0], rel=0.05)


def test_minimum_reliable_latency_rises_as_vdd_drops() -> None:
    dimm = PhysicsDimm(get_profile("C"), seed=2)

    def minimum_ns(vdd_v: float) -> float:
        return next(t for t in np.arange(2.5, 60.0, 0.25) if dimm.voltage_probability(vdd_v, t, 20.0) == 0.0)

    needs = [minimum_ns(v) for v in (1.35, 1.30, 1.25, 1.20, 1.15)]
    assert all(b > a for a, b in zip(needs, needs[1:]))
    assert needs[0] < 10.0  # no errors at Voltron's 10 ns at nominal VDD
    # Below the DIMM's floor no latency is enough.
    floor = dimm.profile.vdd_floor_v + dimm.vdd_offset_v
    assert dimm.voltage_probability(floor - 0.01, 200.0, 20.0) > 0


def test_dimms_and_chips_of_one_vendor_differ_in_their_onset() -> None:
    profile = get_profile("B")
    dimms = [PhysicsDimm(profile, seed=s) for s in range(12)]

    def onset_v(dimm: PhysicsDimm) -> float:
        return next(v for v in np.arange(1.30, 0.95, -0.0025) if dimm.voltage_probability(v, 10.0, 20.0) > 1e-7)

    def onset_trcd_ns(dimm: PhysicsDimm, chip: int) -> float:
        return next(t for t in np.arange(14.0, 0.0, -0.05) if dimm.timing_probability("trcd", t, 1.35, 20.0)[chip] > 1e-7)

    voltages = [onset_v(d) for d in dimms]
    assert max(voltages) - min(voltages) > 0.04  # tens of mV between DIMMs (fitted: 18 mV sigma)
    trcd = [onset_trcd_ns(d, 0) for d in dimms]
    assert max(trcd) - min(trcd) > 1.5  # not one step for every DIMM
    chips = [onset_trcd_ns(dimms[0], c) for c in range(8)]
    assert max(chips) - min(chips) > 0.3
    # Measured: byte lanes (chips) fail at different rates at one reduced tRCD.
    bench = Bench("B", seed=3)
    rows = [(b, r) for b in range(8) for r in range(0, 256, 16)]
    bench.write(rows, 0x00)
    diff = bench.read(rows, AccessTiming(trcd_ns=5.0), per_burst=True)
    per_lane = np.unpackbits(diff.reshape(len(rows), -1, 8), axis=2).reshape(len(rows), -1, 8, 8).sum(axis=(0, 1, 3))
    assert per_lane.min() > 0 and per_lane.max() > 1.5 * per_lane.min()


def test_tRCD_and_voltage_weak_cells_overlap_but_are_not_one_set() -> None:
    bench = Bench("B", seed=4)
    rows = [(b, r) for b in range(8) for r in range(0, 512, 8)]
    bench.write(rows, 0xFF)
    by_timing = np.flatnonzero(np.unpackbits(bench.read(rows, AccessTiming(trcd_ns=5.0), per_burst=True) ^ 0xFF))
    bench.vdd_v = 1.0
    by_voltage = np.flatnonzero(np.unpackbits(bench.read(rows, VOLTRON) ^ 0xFF))
    both = np.intersect1d(by_timing, by_voltage).size
    assert by_timing.size > 50 and by_voltage.size > 50
    assert both < 0.5 * min(by_timing.size, by_voltage.size)
    # Correlated through the shared structure: weak rows are weak for both.
    row_t = np.bincount(by_timing // (8192 * 8), minlength=len(rows))
    row_v = np.bincount(by_voltage // (8192 * 8), minlength=len(rows))
    assert np.corrcoef(np.log1p(row_t), np.log1p(row_v))[0, 1] > 0.2


def test_data_patterns_matter() -> None:
    rows = [(b, r) for b in range(8) for r in range(1, 512, 16)]
    counts = {}
    patterns = {
        "ones": np.full(8192, 0xFF, np.uint8),
        "zeros": np.zeros(8192, np.uint8),
        "checker": np.full(8192, 0xAA, np.uint8),
        "random": np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8),
    }
    for name, data in patterns.items():
        bench = Bench("B", seed=6)
        bench.write(rows, data)
        bench.vdd_v = 1.02
        counts[name] = int(np.unpackbits(bench.read(rows, VOLTRON) ^ data).sum())
    solid = (counts["ones"] + counts["zeros"]) / 2
    assert solid > 100
    # Alternating neighbours couple: the checkerboard fails most, random data in between.
    assert counts["checker"] > 1.3 * solid
    assert solid < counts["random"] < counts["checker"]


def test_retention_errors_appear_only_past_the_refresh_interval() -> None:
    from softmc_host.program import hold_programs, refresh_interval_program

    def run(bench: Bench, programs) -> None:
        for program in programs:
            bench.fw.run(program.words, program.blocks)

    rows = [(b, r) for b in range(8) for r in range(3, 32768, 1024)]

    def flips(hold_ms: float, refresh_ms: float | None) -> int:
        bench = Bench("B", seed=7, temp_c=70.0)
        bench.write(rows, 0xFF)
        if refresh_ms:
            run(bench, [refresh_interval_program(refresh_ms * 1e6 / 8192)[0]])
        run(bench, hold_programs(int(hold_ms * 1e6 / 2.5)))
        return int(np.unpackbits(bench.read(rows) ^ 0xFF).sum())

    assert flips(200.0, None) == 0  # up to 256 ms nothing leaks
    long = flips(16000.0, None)
    assert long > 0
    assert flips(16000.0, 64.0) == 0  # the same time with a 64 ms refresh: nothing leaks
    # Retention errors are written into the row: they stay when the setting is nominal again.
    bench = Bench("B", seed=7, temp_c=70.0)
    bench.write(rows, 0xFF)
    run(bench, hold_programs(int(16000.0 * 1e6 / 2.5)))
    first, second = bench.read(rows), bench.read(rows)
    np.testing.assert_array_equal(first, second)
    assert int(np.unpackbits(first ^ 0xFF).sum()) == long


def test_weak_cells_are_order_statistics_and_extend_consistently() -> None:
    n = 40000  # not a power of two: positions cycle-walk into range
    fractions = []
    for k in range(20):
        weak = WeakCells(1234 + k, n)
        u, pos = weak.up_to(0.002)
        assert np.all(np.diff(u) >= 0) and np.unique(pos).size == pos.size and pos.max() < n
        fractions.append(u.size / n)
        again = WeakCells(1234 + k, n)
        again.up_to(0.0001)
        u2, pos2 = again.up_to(0.002)
        np.testing.assert_array_equal(pos, pos2)
        np.testing.assert_allclose(u, u2, rtol=1e-12)
    assert np.mean(fractions) == pytest.approx(0.002, rel=0.05)
    assert WeakCells(99, 16).up_to(1.0)[1].size == 16  # the whole row when the bound is 1


def test_expected_line_fraction_predicts_what_is_read() -> None:
    dimm_seed, vdd = 2, 1.21
    bench = Bench("C", seed=dimm_seed)
    rng = np.random.default_rng(11)
    rows = sorted({(int(b), int(r)) for b, r in zip(rng.integers(0, 8, 160), rng.integers(0, 32768, 160))})
    bench.write(rows, 0xFF)
    bench.vdd_v = vdd
    measured = line_fraction_read(bench, rows, 0xFF, VOLTRON)
    predicted = bench.dimm.expected_line_fraction(vdd, 10.0, 20.0)
    assert measured > 0.01
    assert measured == pytest.approx(predicted, rel=0.3)

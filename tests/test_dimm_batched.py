"""The DIMMs' batched burst API (``read_bursts``/``write_bursts``) against the burst-by-burst path.

The firmware hands a DIMM every run of RD or WR bursts within an open row in one call.  For
random programs of bursts (whole and partial rows, unaligned columns, writes between reads,
repeated columns, mixed tRCD per burst) at nominal and failing settings (VDD low, tRCD and tRP
short, an early precharge, hot), the batched call gives the same bytes and leaves the DIMM in
the same state as one ``read_burst``/``write_burst`` per burst, for the fault-free DIMM, the
physics DIMM and the replay DIMM.  A subclass that overrides only the per-burst methods is
called burst by burst.  The physics DIMM's readahead (the weak cells of the next rows of a
sequential read drawn together) draws the same cells as the row-by-row draw.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emubench.dimm import EmulatedDimm, Geometry
from emubench.physics import PhysicsDimm
from emubench.profiles import get_profile
from emubench.replay import ReplayDimm
from profiler.storage import ERROR_DTYPE, BerMap, MapWriter, PointData

TCK_NS = 2.5
SMALL = Geometry(banks=2, rows=64, columns=96)  # 768-byte rows: 6144 bits, strata not a power of two


def _counting(cls: type) -> type:
    """A subclass of ``cls`` that overrides only the per-burst methods (and counts the calls)."""

    class PerBurst(cls):  # type: ignore[misc, valid-type]
        calls = 0

        def read_burst(self, access, column, trcd_cycles):  # type: ignore[no-untyped-def]
            type(self).calls += 1
            return super().read_burst(access, column, trcd_cycles)

        def write_burst(self, access, column, burst, trcd_cycles):  # type: ignore[no-untyped-def]
            type(self).calls += 1
            super().write_burst(access, column, burst, trcd_cycles)

    return PerBurst


class Env:
    """A settable supply and temperature."""

    def __init__(self) -> None:
        self.vdd_v, self.temp_c = 1.35, 20.0

    def __call__(self) -> tuple[float, float]:
        return self.vdd_v, self.temp_c


def random_program(seed: int, geometry: Geometry, settings: list[tuple[float, float]], rows: int = 24) -> list:
    """Steps for :func:`play`: each activates a row and runs bursts in runs of reads or writes."""
    rng = np.random.default_rng(seed)
    groups = geometry.columns // 8
    steps = []
    t_ns = 1e6
    row = int(rng.integers(0, geometry.rows))
    for _ in range(rows):
        if rng.random() < 0.7:  # mostly sequential rows (the readahead), sometimes a jump
            row = (row + 1) % geometry.rows
        else:
            row = int(rng.integers(0, geometry.rows))
        vdd_v, temp_c = settings[int(rng.integers(0, len(settings)))]
        trp = int(rng.choice([1, 2, 6, 6, 6, 900, 4563]))  # and the long idle tRP of a first ACT
        runs = []
        trcd = int(rng.choice([1, 2, 3, 6, 6]))
        for _ in range(int(rng.integers(1, 5))):
            n = int(rng.choice([1, 3, groups, groups]))
            if rng.random() < 0.5 and n == groups:
                columns = np.arange(0, geometry.columns, 8)  # a whole row in order
            else:
                columns = rng.integers(0, geometry.columns, n)  # any start column, repeats
            step = rng.integers(0, 5, n)  # mixed tRCD: not always increasing by the same
            trcds = trcd + np.cumsum(step)
            trcd = int(trcds[-1]) + 1
            write = rng.random() < 0.3
            bursts = rng.integers(0, 256, (n, 64), dtype=np.uint8) if write else None
            if write and rng.random() < 0.5:
                bursts[:] = rng.choice([0x00, 0xFF, 0xAA])
            runs.append((columns.astype(np.int64), trcds.astype(np.int64), bursts))
        tras = int(rng.choice([3, 40, 40]))
        hold_ns = float(rng.choice([1e3, 1e3, 5e9]))  # now and then a long hold (retention)
        t_ns += hold_ns
        steps.append((int(rng.integers(0, geometry.banks)), row, vdd_v, temp_c, trp, runs, tras, t_ns))
        t_ns += 1e4
    return steps


def play(dimm: EmulatedDimm, env: Env | None, steps: list) -> list[np.ndarray]:
    """Run the steps through the batched API; the reads, run by run."""
    out = []
    for bank, row, vdd_v, temp_c, trp, runs, tras, t_ns in steps:
        if env is not None:
            env.vdd_v, env.temp_c = vdd_v, temp_c
        dimm.now_ns = t_ns
        access = dimm.activate(bank, row, trp)
        for columns, trcds, bursts in runs:
            now = t_ns + trcds * TCK_NS
            if bursts is None:
                got = dimm.read_bursts(access, columns, trcds, now)
                assert got.dtype == np.uint8 and got.shape == (len(columns) * 64,)
                out.append(got.copy())
            else:
                dimm.write_bursts(access, columns, bursts, trcds, now)
            assert dimm.now_ns == now[-1]
        dimm.precharge(access, tras)
    return out


def state(dimm: EmulatedDimm) -> dict[str, Any]:
    """What a DIMM keeps between accesses (not its caches)."""
    rows = {key: data.copy() for key, data in dimm.store.items()}
    found: dict[str, Any] = {"rows": rows, "now_ns": dimm.now_ns}
    if dimm._clock is not None:
        found["restored"] = dimm._clock.restored_ns.copy()
        found["gap"] = dimm._clock.max_gap_ns.copy()
    if isinstance(dimm, PhysicsDimm):
        found["under_restored"] = dict(dimm.under_restored)
        found["activations"] = dimm._activations
    return found


def assert_same(batched: EmulatedDimm, per_burst: EmulatedDimm, a: list, b: list) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_array_equal(x, y, err_msg=f"read run {i}")
    sa, sb = state(batched), state(per_burst)
    assert sa["rows"].keys() == sb["rows"].keys()
    for key in sa["rows"]:
        np.testing.assert_array_equal(sa["rows"][key], sb["rows"][key], err_msg=f"stored row {key}")
    for name in sa:
        if name != "rows":
            np.testing.assert_equal(sa[name], sb[name], err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fault_free_dimm_batched_equals_burst_by_burst(seed: int) -> None:
    steps = random_program(seed, SMALL, [(1.35, 20.0)], rows=40)
    batched, per_burst = EmulatedDimm(SMALL, seed=seed), _counting(EmulatedDimm)(SMALL, seed=seed)
    a, b = play(batched, None, steps), play(per_burst, None, steps)
    assert_same(batched, per_burst, a, b)
    bursts = sum(len(c) for *_, runs, _tras, _t in steps for c, _, _ in runs)
    assert type(per_burst).calls == bursts  # the subclass got every burst, one call each


# Failing settings of each profile: nominal, low VDD, hot (with short tRCD/tRP from the program).
SETTINGS = {
    "B": [(1.35, 20.0), (1.025, 20.0), (1.05, 20.0), (1.0, 20.0)],
    "A": [(1.35, 20.0), (1.1, 20.0), (1.35, 70.0)],
    "C": [(1.35, 20.0), (1.2, 20.0), (1.15, 50.0)],  # row-block orientation
}


@pytest.mark.parametrize("profile,seed", [("B", 0), ("B", 1), ("A", 2), ("C", 3)])
def test_physics_dimm_batched_equals_burst_by_burst(profile: str, seed: int) -> None:
    steps = random_program(seed + 10, SMALL, SETTINGS[profile], rows=30)
    env_a, env_b = Env(), Env()
    batched = PhysicsDimm(get_profile(profile), SMALL, seed=seed, environment=env_a)
    per_burst = _counting(PhysicsDimm)(get_profile(profile), SMALL, seed=seed, environment=env_b)
    a, b = play(batched, env_a, steps), play(per_burst, env_b, steps)
    assert_same(batched, per_burst, a, b)
    assert type(per_burst).calls > 0
    # The programs reach failing settings: some reads differ from what the fault-free DIMM (the
    # same power-up content and writes) reads.
    clean = play(EmulatedDimm(SMALL, seed=seed), None, steps)
    assert any((x != y).any() for x, y in zip(a, clean))


def test_physics_dimm_full_geometry_bank_read_with_reduced_trcd() -> None:
    """A whole-row read at 1.025 V and tRCD from 1 cycle, 48 sequential rows of a full-size bank."""
    env_a, env_b = Env(), Env()
    profile = get_profile("B")
    batched = PhysicsDimm(profile, seed=0, environment=env_a)
    per_burst = _counting(PhysicsDimm)(profile, seed=0, environment=env_b)
    columns = np.arange(0, 1024, 8)
    steps = []
    for r in range(2000, 2048):
        trcd0 = 1 + r % 3
        runs = [(columns, trcd0 + 4 * np.arange(128), None)]
        steps.append((3, r, 1.025, 20.0, 6, runs, 40, 1e6 + r * 1e4))
    a, b = play(batched, env_a, steps), play(per_burst, env_b, steps)
    assert_same(batched, per_burst, a, b)
    errors = sum(int(np.unpackbits(x ^ batched.peek_row(3, 2000 + i)).sum()) for i, x in enumerate(a))
    assert errors > 100


@pytest.mark.parametrize("profile,vdd_v,seed", [("B", 1.025, 0), ("B", 1.0, 4), ("C", 1.2, 1), ("A", 1.1, 2)])
def test_readahead_draws_the_same_cells_as_row_by_row(profile: str, vdd_v: float, seed: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A sequential read with readahead and one with every row drawn alone read the same bytes."""
    reads = []
    for readahead in (True, False):
        for geometry, rows in ((SMALL, range(0, 64)), (Geometry(), range(700, 760))):
            dimm = PhysicsDimm(get_profile(profile), geometry, seed=seed, environment=lambda: (vdd_v, 20.0))
            if not readahead:
                monkeypatch.setattr(dimm, "_candidate_block", lambda *args: {})
            columns = np.arange(0, geometry.columns, 8)
            trcd = 6 + 4 * np.arange(columns.size)
            for r in list(rows) * 2:  # a second pass: rows with cached draws among them
                access = dimm.activate(1, r, 6)
                reads.append((readahead, dimm.read_bursts(access, columns, trcd, trcd * TCK_NS)))
                dimm.precharge(access, 40)
    with_ra = [x for flag, x in reads if flag]
    without = [x for flag, x in reads if not flag]
    for i, (x, y) in enumerate(zip(with_ra, without)):
        np.testing.assert_array_equal(x, y, err_msg=f"row {i}")


def test_trcd_past_the_flat_point_is_the_same_setting() -> None:
    dimm = PhysicsDimm(get_profile("B"), seed=5)
    cases = ((1.35, 20.0, 6), (1.025, 20.0, 6), (1.1, 70.0, 2), (1.2, 45.0, 11), (1.35, 20.0, 4563),
             (1.025, 20.0, 4563), (1.1, 70.0, 900), (0.9, 20.0, 4563))
    flats = {}
    for vdd_v, temp_c, trp in cases:
        flat = flats[vdd_v, temp_c, trp] = dimm.trcd_flat_cycles(vdd_v, temp_c, trp)
        assert 0 <= flat
        ref = dimm._setting(vdd_v, temp_c, flat, trp, None)
        for trcd in [t for t in list(range(flat, flat + 60)) + [trp, trp + 1, 10 * trp + 7] if t >= flat]:
            other = dimm._setting(vdd_v, temp_c, trcd, trp, None)
            assert other.thr_v == ref.thr_v and np.array_equal(other.thr_t, ref.thr_t), (vdd_v, temp_c, trp, trcd)
        if flat > 0:  # one cycle less reads differently: the flat point is the first, not just a safe one
            before = dimm._setting(vdd_v, temp_c, flat - 1, trp, None)
            assert before.thr_v != ref.thr_v or not np.array_equal(before.thr_t, ref.thr_t), (vdd_v, temp_c, trp)
    # A long idle tRP no longer makes every burst of a row read a setting of its own: at nominal
    # VDD the flat point is the tRCD margin's, and at a failing VDD it stops well short of tRP.
    assert flats[1.35, 20.0, 4563] == flats[1.35, 20.0, 6]
    assert flats[1.025, 20.0, 4563] < 200


def test_power_up_content_is_the_generator_bytes() -> None:
    dimm = EmulatedDimm(seed=9)
    for bank, row in ((0, 0), (3, 12345), (7, 32767)):
        expect = np.random.default_rng([9, 0x9E37, bank, row]).integers(0, 256, 8192, dtype=np.uint8)
        np.testing.assert_array_equal(dimm.power_up_content(bank, row), expect)


# Replay -------------------------------------------------------------------------------------

ROW_BYTES = 512
REPLAY_GEOMETRY = {"banks": 2, "rows": 16, "row_bytes": ROW_BYTES, "tck_ns": TCK_NS}
MEASURED = [(0, 1), (0, 2), (1, 5)]


def write_replay_map(path: Path) -> Path:
    """Points at two VDDs and two tRCDs; rows (0, 1), (0, 2), (1, 5) measured, the others drawn."""
    meta = {"software": "test", "geometry": REPLAY_GEOMETRY, "patterns": {"all-1": "all-1", "all-0": "all-0"},
            "bench": {"supply": {"nominal_v": 1.35}}}
    writer = MapWriter(path, meta, {"test": "batched"})
    writer.open()
    rng = np.random.default_rng(3)
    rows = np.array(MEASURED, np.uint32)
    bits = ROW_BYTES * 8
    index = 0
    for vdd_v, trcd_ns, flips in ((1.2, 15.0, 4), (1.1, 15.0, 30), (1.2, 5.0, 60)):
        for pattern in ("all-1", "all-0"):
            d = int(pattern == "all-0")
            errors = np.array(
                [(b, r, int(bit), d) for b, r in MEASURED for bit in rng.choice(bits, flips, replace=False)],
                ERROR_DTYPE,
            )
            counts = np.full(len(MEASURED), flips, np.uint32)
            lines = [np.zeros((2, bits), np.uint32), np.zeros((2, bits), np.uint32)]
            np.add.at(lines[1 - d], (errors["bank"], errors["bit"]), 1)
            writer.write(PointData(
                key=f"p{index}",
                attrs={"vdd_v": vdd_v, "trcd_ns": trcd_ns, "trp_ns": 15.0, "tras_ns": 35.0, "temp_c": None,
                       "pattern": pattern, "rep": 0, "index": index, "errors_truncated": False,
                       "effective_trcd_ns": trcd_ns, "effective_trp_ns": 15.0},
                rows=rows, bits_tested=np.full(len(MEASURED), bits, np.uint64),
                flips_0to1=counts if d else np.zeros_like(counts), flips_1to0=np.zeros_like(counts) if d else counts,
                bitline_banks=np.array([0, 1], np.uint8), bitline_0to1=lines[1], bitline_1to0=lines[0],
                errors=errors))
            index += 1
    writer.finish(complete=True)
    return path


def test_replay_dimm_batched_equals_burst_by_burst(tmp_path: Path) -> None:
    ber_map = BerMap(write_replay_map(tmp_path / "rec.h5"))
    geometry = Geometry(banks=2, rows=16, columns=ROW_BYTES // 8)
    settings = [(1.35, 20.0), (1.2, 20.0), (1.15, 20.0), (1.1, 20.0), (1.05, 20.0)]
    env_a, env_b = Env(), Env()
    batched = ReplayDimm(ber_map, env_a, TCK_NS, seed=2)
    per_burst = _counting(ReplayDimm)(ber_map, env_b, TCK_NS, seed=2)
    for seed in range(3):
        steps = random_program(seed + 20, geometry, settings, rows=30)
        a, b = play(batched, env_a, steps), play(per_burst, env_b, steps)
        assert_same(batched, per_burst, a, b)
    assert type(per_burst).calls > 0
    # Recorded errors are replayed: a read of a measured row at the harshest point differs from its data.
    env_a.vdd_v = 1.1
    access = batched.activate(0, 1, 6)
    columns = np.arange(0, geometry.columns, 8)
    trcd = 2 + 4 * np.arange(columns.size)  # from 5 ns: the tRCD points answer the first bursts
    got = batched.read_bursts(access, columns, trcd, trcd * TCK_NS)
    assert (got != batched.peek_row(0, 1)).any()


def test_dispatch_follows_an_instance_override() -> None:
    """A per-burst method replaced on the instance (as benchmarks/dimm_memory.py does) is called."""
    dimm = EmulatedDimm(SMALL, seed=1)
    seen = []
    original = dimm.write_burst

    def write_burst(access, column, burst, trcd_cycles):  # type: ignore[no-untyped-def]
        seen.append(column)
        original(access, column, burst, trcd_cycles)

    dimm.write_burst = write_burst  # type: ignore[method-assign]
    access = dimm.activate(0, 3, 6)
    dimm.write_bursts(access, np.array([0, 8, 16]), np.zeros((3, 64), np.uint8), np.array([6, 10, 14]),
                      np.array([1.0, 2.0, 3.0]))
    assert seen == [0, 8, 16]


def test_physics_profile_without_read_noise_or_coupling() -> None:
    """The batched path is the per-burst one also where the profile has no jitter and no coupling."""
    profile = dataclasses.replace(get_profile("B"), read_noise_voltage=0.0, read_noise_timing=0.0,
                                  coupling_per_aggressor=0.0)
    steps = random_program(7, SMALL, SETTINGS["B"], rows=20)
    env_a, env_b = Env(), Env()
    batched = PhysicsDimm(profile, SMALL, seed=0, environment=env_a)
    per_burst = _counting(PhysicsDimm)(profile, SMALL, seed=0, environment=env_b)
    assert_same(batched, per_burst, play(batched, env_a, steps), play(per_burst, env_b, steps))


@pytest.mark.parametrize("geometry", [Geometry(), SMALL], ids=["full", "small"])
@pytest.mark.parametrize("vdd_v,trcd", [(1.025, 6), (1.0, 2), (1.06, 3)])
def test_block_draw_is_the_row_by_row_draw_to_the_bit(geometry: Geometry, vdd_v: float, trcd: int) -> None:
    """The vectorised first draw of many rows gives each row's WeakCells draw: same cells, same uniforms."""
    import math

    dimm = PhysicsDimm(get_profile("B"), geometry, seed=3, environment=lambda: (vdd_v, 20.0))
    fresh = PhysicsDimm(get_profile("B"), geometry, seed=3)
    setting = dimm._setting(vdd_v, 20.0, trcd, 6, None)
    bank, rows = 1, list(range(10, 60))
    compared = 0
    for mech, thr in ((0x56, setting.thr_v), (0x54, setting.thr_t_min)):
        if not math.isfinite(thr):
            continue
        for k, (bits, top) in enumerate(dimm.strata(bank)):
            a = dimm.row_offsets(bank)[rows]
            bound = np.array([0.5 * math.erfc((thr - x - top - dimm._max_offset) / (dimm.own_sd * math.sqrt(2.0)))
                              * dimm._headroom for x in a.tolist()])
            sel = np.flatnonzero(bound * bits.size >= 1e-9)
            index, u, local, fallback = dimm._draw_block(bank, rows, sel, np.minimum(bound, 1.0)[sel],
                                                         mech + (k << 8), bits.size)
            for i in sel.tolist():
                if rows[i] in fallback:
                    continue
                want_u, want_local = fresh.weak_cells(bank, rows[i], mech + (k << 8), bits.size).up_to(
                    min(bound[i], 1.0))
                mine = index == i
                np.testing.assert_array_equal(u[mine], want_u)  # bitwise, not approximately
                np.testing.assert_array_equal(local[mine], want_local)
                compared += want_u.size
    assert compared > 100


@pytest.mark.parametrize("profile,vdd_v", [("B", 1.025), ("C", 1.2)])
def test_prepared_reads_are_dropped_when_the_row_or_the_stream_changes(profile: str, vdd_v: float,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows written, another row activated, the jitter reseeded while reads are prepared ahead:
    what is read is what the row-by-row path reads."""
    outs = []
    for readahead in (True, False):
        dimm = PhysicsDimm(get_profile(profile), SMALL, seed=2, environment=lambda: (vdd_v, 20.0))
        if not readahead:
            monkeypatch.setattr(dimm, "_candidate_block", lambda *args: {})
        columns = np.arange(0, SMALL.columns, 8)
        trcd = 6 + 4 * np.arange(columns.size)
        got = []
        for r in range(64):
            if r == 12:  # a row ahead is written (some bytes, then all of it)
                access = dimm.activate(0, 16, 6)
                dimm.write_bursts(access, columns[:3], np.full((3, 64), 0x55, np.uint8), trcd[:3], trcd[:3] * 1.0)
                dimm.precharge(access, 40)
            if r == 20:  # another row's activation takes an activation number
                access = dimm.activate(1, 7, 6)
                got.append(dimm.read_bursts(access, columns, trcd, trcd * 1.0))
                dimm.precharge(access, 40)
            if r == 40:
                dimm.reseed_noise(99)
            access = dimm.activate(0, r, 6)
            got.append(dimm.read_bursts(access, columns, trcd, trcd * 1.0))
            dimm.precharge(access, 40)
        outs.append((got, dimm._activations))
    (a, acts_a), (b, acts_b) = outs
    assert acts_a == acts_b
    for i, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_array_equal(x, y, err_msg=f"read {i}")

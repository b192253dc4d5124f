"""Programs, builders and DDR3 timing conversion."""

from __future__ import annotations

import numpy as np
import pytest

from softmc_host import isa
from softmc_host.program import (
    Program,
    ProgramError,
    append_row_read,
    append_row_write,
    pack_rows,
    row_bursts,
)
from softmc_host.timing import AccessTiming, Ddr3Params, TimingError, ns_to_cycles


@pytest.mark.parametrize(
    "ns, tck, cycles",
    [(13.75, 2.5, 6), (15.0, 2.5, 6), (15.0000001, 2.5, 7), (12.5, 2.5, 5), (0.1, 2.5, 1), (13.75, 1.25, 11), (35, 2.5, 14)],
)
def test_ns_to_cycles_rounds_up(ns: float, tck: float, cycles: int) -> None:
    assert ns_to_cycles(ns, tck) == cycles


def test_effective_timing() -> None:
    cyc = AccessTiming(13.75, 13.75, 35.0).cycles(2.5)
    assert (cyc.trcd, cyc.trp, cyc.tras) == (6, 6, 14)
    assert cyc.effective() == AccessTiming(15.0, 15.0, 35.0)
    assert Ddr3Params().trtp_cycles(2.5) == 4
    assert Ddr3Params().write_recovery_cycles(2.5) == 5 + 4 + 6


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 20000])
def test_bad_timing_is_refused(bad: float) -> None:
    with pytest.raises(TimingError, match="trcd_ns"):
        AccessTiming(trcd_ns=bad)


def test_program_counts_reads_and_tracks_bus() -> None:
    p = Program()
    assert p.bus_direction is None
    p.set_bus(isa.BusDirection.READ)
    p.set_bus(isa.BusDirection.READ)  # no second switch
    assert [type(i).__name__ for i in p.instructions] == ["SetBusDir", "Wait"]
    p.add(isa.Act(0, 1), isa.Rd(0, 0), isa.Rd(0, 8, True))
    assert p.n_reads == 2 and p.bus_direction == isa.BusDirection.READ
    p.add(isa.End())
    assert p.ended and p.words[-1] == 0
    with pytest.raises(ProgramError, match="after END"):
        p.add(isa.Ref())
    assert p.to_text().splitlines() == ["BUSDIR READ", "WAIT 5", "ACT 0 1", "RD 0 0", "RD 0 8 AP", "END"]


def test_long_waits_are_split() -> None:
    p = Program().wait(2500)
    assert [i.cycles for i in p.instructions] == [1023, 1023, 454]
    assert len(Program().wait(0)) == 0
    with pytest.raises(ProgramError):
        Program().wait(-1)


def test_length_limit_keeps_room_for_end() -> None:
    p = Program(max_length=4)
    p.add(isa.Ref(), isa.Ref(), isa.Ref())
    with pytest.raises(ProgramError, match="at most 4"):
        p.add(isa.Ref())
    assert len(p.end()) == 4


def test_row_bursts_uses_stock_wr_where_possible() -> None:
    data = np.zeros(8192, np.uint8)
    data[64:128] = np.arange(64)
    data[128:192] = 0x77
    items = row_bursts(data)
    assert items[0] == 0 and items[1] == bytes(range(64)) and items[2] == 0x77 and len(items) == 128
    cyc = AccessTiming().cycles(2.5)
    p = Program()
    append_row_write(p, 2, 3, data, cyc)
    assert len(p.blocks) == 1 and p.uses_write_extension
    assert sum(isinstance(i, isa.WBuf) for i in p.instructions) == 1
    # A stock-only row write is bit-exact stock SoftMC: no WBUF, no blocks.
    q = Program()
    append_row_write(q, 2, 3, 0x77, cyc)
    assert not q.uses_write_extension
    assert all(not isinstance(i, isa.WBuf) for i in q.instructions)
    assert len(q) == 2 + 2 + 2 * 128 + 3  # bus switch, ACT + WAIT, WR + WAIT per burst, WAIT, PRE, WAIT
    r = Program()
    append_row_read(r, 2, 3, cyc)
    assert len(r) == 2 + 2 + (2 * 128 - 1) + 3 and r.n_reads == 128
    s = Program()
    append_row_read(s, 2, 3, cyc, per_burst_activate=True)
    assert len(s) == 2 + 6 * 128 and s.n_reads == 128


def test_row_read_sequence_is_what_a_bench_user_expects() -> None:
    cyc = AccessTiming(10.0, 12.5, 35.0).cycles(2.5)
    p = Program()
    append_row_read(p, 1, 0x1234, cyc, bursts=[0, 1])
    assert p.to_text().splitlines() == [
        "BUSDIR READ",
        "WAIT 5",
        "ACT 1 4660",
        "WAIT 3",  # RD 4 cycles after ACT: tRCD 10 ns
        "RD 1 0",
        "WAIT 3",  # tCCD 4
        "RD 1 8",
        "WAIT 5",  # PRE at max(tRAS 14, last RD 8 + tRTP 4) = 14
        "PRE 1",
        "WAIT 4",  # next ACT 5 cycles later: tRP 12.5 ns
    ]


def test_pack_rows_respects_program_length() -> None:
    cyc = AccessTiming().cycles(2.5)
    rows = [(0, r) for r in range(100)]
    programs = list(pack_rows(rows, lambda p, b, r: append_row_read(p, b, r, cyc)))
    assert sum(p.n_reads for p in programs) == 100 * 128
    assert all(len(p) <= 8192 and p.ended for p in programs)
    assert len(programs) == 4  # 31 rows of 260 instructions (+ bus switch, END) fit in one program
    # Long timings split WAITs: the packing measures rows instead of estimating them.
    slow = AccessTiming(3000.0, 3000.0, 3000.0).cycles(2.5)
    programs = list(pack_rows(rows[:20], lambda p, b, r: append_row_read(p, b, r, slow, per_burst_activate=True)))
    assert all(len(p) <= 8192 for p in programs) and sum(p.n_reads for p in programs) == 20 * 128


def test_pack_rows_renumbers_write_buffers() -> None:
    cyc = AccessTiming().cycles(2.5)
    data = {r: bytes((r + i) % 256 for i in range(8192)) for r in range(25)}
    programs = list(pack_rows([(1, r) for r in range(25)], lambda p, b, r: append_row_write(p, b, r, data[r], cyc)))
    # A row whose 128 bursts all need the buffer is 389 instructions: 21 rows fit in one program.
    assert [len(p.blocks) for p in programs] == [21 * 128, 4 * 128]
    for program in programs:
        indices = [i.index for i in program.instructions if isinstance(i, isa.WBuf)]
        assert indices == list(range(len(program.blocks)))
    assert programs[1].blocks[0] == data[21][:64]


def test_write_buffer_block_size_checked() -> None:
    with pytest.raises(ProgramError, match="64 bytes"):
        Program().load_write_buffer(b"abc")
    with pytest.raises(ProgramError, match="does not carry"):
        Program().add(isa.WBuf(0))

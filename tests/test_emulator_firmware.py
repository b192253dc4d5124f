"""The emulated firmware and DIMM, in process: program checks, timing tracking, storage."""

from __future__ import annotations

import numpy as np
import pytest

from emubench import build_firmware
from emubench.dimm import EmulatedDimm, burst_order
from emubench.firmware import ExecutionError
from firmware_bridge.protocol import ErrorCode
from softmc_host import isa
from softmc_host.asm import assemble
from softmc_host.program import Program, append_row_read, append_row_write
from softmc_host.timing import AccessTiming


def words(text: str) -> list[int]:
    return [i.encode() for i in assemble(text.splitlines())]


@pytest.mark.parametrize(
    "text, code, message",
    [
        ("RD 0 0\nEND", ErrorCode.NO_OPEN_ROW, "RD to bank 0 with no open row"),
        ("BUSDIR WRITE\nWR 3 0 1\nEND", ErrorCode.NO_OPEN_ROW, "WR to bank 3 with no open row"),
        ("ACT 1 5\nWAIT 5\nBUSDIR WRITE\nRD 1 0\nEND", ErrorCode.BUS_DIRECTION, "RD while the bus is set to WRITE"),
        ("ACT 1 5\nWAIT 5\nWR 1 0 7\nEND", ErrorCode.BUS_DIRECTION, "WR while the bus is set to READ"),
        ("ACT 1 5\nACT 1 6\nEND", ErrorCode.BANK_STATE, "bank 1 already has row 5 open"),
        ("ACT 2 5\nREF\nEND", ErrorCode.BANK_STATE, "REF with rows open in banks [2]"),
        ("ACT 0 40000\nEND", ErrorCode.ADDRESS_RANGE, "the DIMM has 32768 rows"),
        ("ACT 0 1\nPRE 0", ErrorCode.NO_END, "does not end with END"),
        ("END\nREF\nEND", ErrorCode.NO_END, "END before the last instruction"),
        ("WBUF 0\nEND", ErrorCode.BAD_WRITE_DATA, "carries 0 write-data blocks"),
        ("ACT 1 5\nRD 1 0 AP\nRD 1 8\nEND", ErrorCode.NO_OPEN_ROW, "instruction 2 (RD 1 8)"),
    ],
)
def test_bad_programs_are_rejected(text: str, code: ErrorCode, message: str) -> None:
    fw = build_firmware()
    with pytest.raises(ExecutionError) as info:
        fw.run(words(text))
    assert info.value.code == code
    assert message in str(info.value)


def test_undecodable_and_too_long_programs() -> None:
    fw = build_firmware()
    with pytest.raises(ExecutionError) as info:
        fw.run([0x60000000, 0])
    assert info.value.code == ErrorCode.BAD_INSTRUCTION and "instruction 0" in str(info.value)
    with pytest.raises(ExecutionError) as info:
        fw.run([isa.Ref().encode()] * 8192 + [0])
    assert info.value.code == ErrorCode.PROGRAM_TOO_LONG
    with pytest.raises(ExecutionError) as info:
        fw.run([])
    assert info.value.code == ErrorCode.NO_END


def test_rejected_program_leaves_dimm_untouched() -> None:
    fw = build_firmware()
    before = fw.dimm.peek_row(0, 3)
    program = words("BUSDIR WRITE\nACT 0 3\nWAIT 5\nWR 0 0 0x5A\nWAIT 20\nPRE 0\nRD 0 0\nEND")
    with pytest.raises(ExecutionError):
        fw.run(program)
    assert fw.dimm.stored_rows == 0
    np.testing.assert_array_equal(fw.dimm.peek_row(0, 3), before)
    assert fw.programs_run == 0


def test_second_wbuf_without_wr_is_rejected() -> None:
    fw = build_firmware()
    with pytest.raises(ExecutionError, match="loaded twice"):
        fw.run(words("WBUF 0\nWBUF 1\nEND"), [bytes(64), bytes(64)])


def test_timing_is_tracked_from_waits() -> None:
    fw = build_firmware()
    # ACT at cycle 0; WAIT 3 -> RD at cycle 4 (tRCD 4); WAIT 9 -> PRE at 14 (tRAS 14);
    # WAIT 4 -> ACT at 19 (tRP 5); WAIT 1 -> RD at 21 (tRCD 2).
    fw.run(words("ACT 2 7\nWAIT 3\nRD 2 0\nWAIT 9\nPRE 2\nWAIT 4\nACT 2 8\nWAIT 1\nRD 2 8\nWAIT 20\nPRE 2\nEND"))
    trace = fw.last_trace
    assert trace.min_trcd_cycles == 2
    assert trace.min_trp_cycles == 5
    assert trace.min_tras_cycles == 14
    assert trace.reads == 2 and trace.activates == 2
    assert trace.rows == [(2, 7), (2, 8)]


@pytest.mark.parametrize("trcd_ns, trp_ns, tras_ns", [(13.75, 13.75, 35.0), (7.5, 10.0, 20.0), (2.5, 2.5, 30.0)])
def test_builders_produce_the_requested_cycles(trcd_ns: float, trp_ns: float, tras_ns: float) -> None:
    fw = build_firmware()
    cycles = AccessTiming(trcd_ns, trp_ns, tras_ns).cycles(2.5)
    program = Program()
    append_row_write(program, 4, 10, 0x3C, cycles)
    append_row_write(program, 4, 11, 0xC3, cycles)
    fw.run(program.end().words, program.blocks)
    assert fw.last_trace.min_trcd_cycles == cycles.trcd
    assert fw.last_trace.min_trp_cycles == cycles.trp
    program = Program()
    append_row_read(program, 4, 10, cycles, per_burst_activate=True)
    out = fw.run(program.end().words, program.blocks)
    assert out == b"\x3c" * 8192
    assert fw.last_trace.min_trcd_cycles == cycles.trcd
    assert fw.last_trace.min_trp_cycles == cycles.trp
    # With one ACT per burst, PRE follows after max(tRAS, tRCD + tRTP).
    assert fw.last_trace.min_tras_cycles == max(cycles.tras, cycles.trcd + 4)


def test_write_buffer_and_stock_writes() -> None:
    fw = build_firmware()
    burst = bytes(range(64))
    program = Program()
    program.set_bus(isa.BusDirection.WRITE)
    program.add(isa.Act(1, 1)).wait(5)
    program.load_write_buffer(burst)
    program.add(isa.Wr(1, 0, 0x11)).wait(3)  # writes the buffer, not 0x11
    program.add(isa.Wr(1, 8, 0x22)).wait(20)  # stock: 0x22 repeated
    program.add(isa.Pre(1)).wait(5)
    program.set_bus(isa.BusDirection.READ)
    program.add(isa.Act(1, 1)).wait(5)
    program.add(isa.Rd(1, 0)).wait(3).add(isa.Rd(1, 8)).wait(10).add(isa.Pre(1))
    out = fw.run(program.end().words, program.blocks)
    assert out == burst + b"\x22" * 64


def test_read_burst_order_follows_ddr3_table() -> None:
    assert burst_order(0) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert burst_order(5) == [5, 6, 7, 4, 1, 2, 3, 0]
    assert burst_order(2) == [2, 3, 0, 1, 6, 7, 4, 5]
    assert burst_order(7 + 16) == [23, 20, 21, 22, 19, 16, 17, 18]
    assert burst_order(5, write=True) == [4, 5, 6, 7, 0, 1, 2, 3]
    fw = build_firmware()
    row = np.arange(8192, dtype=np.uint32).astype(np.uint8)
    program = Program()
    append_row_write(program, 0, 0, row, AccessTiming().cycles(2.5))
    program.add(isa.SetBusDir(isa.BusDirection.READ), isa.Wait(5), isa.Act(0, 0), isa.Wait(5), isa.Rd(0, 5))
    program.wait(10).add(isa.Pre(0))
    out = fw.run(program.end().words, program.blocks)
    expect = b"".join(row[8 * c : 8 * c + 8].tobytes() for c in [5, 6, 7, 4, 1, 2, 3, 0])
    assert out == expect


def test_storage_is_sparse_and_power_up_is_deterministic() -> None:
    dimm_a, dimm_b = EmulatedDimm(seed=1), EmulatedDimm(seed=1)
    other = EmulatedDimm(seed=2)
    np.testing.assert_array_equal(dimm_a.peek_row(3, 1000), dimm_b.peek_row(3, 1000))
    assert not np.array_equal(dimm_a.peek_row(3, 1000), other.peek_row(3, 1000))
    assert not np.array_equal(dimm_a.peek_row(3, 1000), dimm_a.peek_row(3, 1001))
    fw = build_firmware(seed=1)
    cycles = AccessTiming().cycles(2.5)
    program = Program()
    for row in range(20):
        append_row_read(program, 0, row, cycles)
    out = fw.run(program.end().words)
    assert out[:8192] == dimm_a.peek_row(0, 0).tobytes()
    assert fw.dimm.stored_rows == 0  # reading stores nothing
    program = Program()
    append_row_write(program, 6, 123, 0xAB, cycles)
    fw.run(program.end().words)
    assert fw.dimm.stored_rows == 1


def test_reset_closes_rows_and_status_reports() -> None:
    fw = build_firmware()
    fw.run(words("ACT 3 3\nWAIT 5\nSET_TREFI 39\nBUSDIR WRITE\nEND"))
    status = fw.status()
    assert status["open_rows"] == {"3": 3}
    assert status["bus_direction"] == "WRITE" and status["trefi"] == 39
    fw.reset()
    status = fw.status()
    assert status["open_rows"] == {} and status["bus_direction"] == "READ" and status["trefi"] == 0
    # A row left open across programs is still open for the next one.
    fw.run(words("ACT 1 1\nEND"))
    fw.run(words("WAIT 5\nRD 1 0\nPRE 1\nEND"))
    assert fw.last_trace.min_trcd_cycles == 5 + 1 + 400  # the gap between programs counts

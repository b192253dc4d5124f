"""The firmware checks and runs programs on arrays: the same results as instruction by instruction.

A reference firmware here executes programs one instruction at a time (the emulator's timing
model of docs/emulator.md, as the firmware did before it worked on arrays); random programs
must give the same bytes, errors, traces, state and DIMM calls on both.
"""

from __future__ import annotations

import numpy as np
import pytest

from emubench.dimm import EmulatedDimm, Geometry
from emubench.firmware import INTER_PROGRAM_GAP_CYCLES, ExecutionError, ProgramTrace, TesterFirmware
from firmware_bridge.protocol import BURST_BYTES, MAX_PROGRAM_SLOTS, ErrorCode
from softmc_host import isa
from softmc_host.program import TREFI_TICK_NS

GEOMETRY = Geometry(banks=4, rows=64, columns=1024, bus_bytes=8)


class ReferenceFirmware(TesterFirmware):
    """The firmware as an instruction-by-instruction interpreter (the behaviour to match)."""

    def check_reference(self, words: list[int], blocks: list[bytes]) -> list[isa.Instruction]:
        n = len(words)
        if n > MAX_PROGRAM_SLOTS:
            raise ExecutionError(ErrorCode.PROGRAM_TOO_LONG, f"program of {n} instructions exceeds {MAX_PROGRAM_SLOTS}")
        if n == 0:
            raise ExecutionError(ErrorCode.NO_END, "empty program (it must end with END)")
        program = []
        for i, w in enumerate(words):
            try:
                program.append(isa.decode(w))
            except isa.IsaError as exc:
                raise ExecutionError(ErrorCode.BAD_INSTRUCTION, f"instruction {i}: {exc}") from None
        open_rows = [b.open.row if b.open is not None else None for b in self.banks]
        bus, loaded, written = self.bus, False, set()
        for i, ins in enumerate(program):
            where = f"instruction {i} ({ins.to_text()})"
            if isinstance(ins, isa.End) and i != n - 1:
                raise ExecutionError(ErrorCode.NO_END, f"{where}: END before the last instruction")
            if isinstance(ins, isa.Act):
                if ins.row >= self.dimm.geometry.rows:
                    raise ExecutionError(ErrorCode.ADDRESS_RANGE, f"{where}: the DIMM has {self.dimm.geometry.rows} rows")
                if open_rows[ins.bank] is not None:
                    raise ExecutionError(ErrorCode.BANK_STATE,
                                         f"{where}: bank {ins.bank} already has row {open_rows[ins.bank]} open")
                open_rows[ins.bank] = ins.row
            elif isinstance(ins, (isa.Rd, isa.Wr)):
                name = "RD" if isinstance(ins, isa.Rd) else "WR"
                if open_rows[ins.bank] is None:
                    raise ExecutionError(ErrorCode.NO_OPEN_ROW, f"{where}: {name} to bank {ins.bank} with no open row")
                want = isa.BusDirection.READ if name == "RD" else isa.BusDirection.WRITE
                if bus != want:
                    raise ExecutionError(ErrorCode.BUS_DIRECTION, f"{where}: {name} while the bus is set to {bus.name}")
                if name == "WR":
                    written.add((ins.bank, open_rows[ins.bank]))
                    loaded = False
                if ins.auto_precharge:
                    open_rows[ins.bank] = None
            elif isinstance(ins, isa.Pre):
                open_rows[ins.bank] = None
            elif isinstance(ins, isa.PreAll):
                open_rows = [None] * len(open_rows)
            elif isinstance(ins, isa.Ref):
                busy = [b for b, r in enumerate(open_rows) if r is not None]
                if busy:
                    raise ExecutionError(ErrorCode.BANK_STATE, f"{where}: REF with rows open in banks {busy}")
            elif isinstance(ins, isa.SetBusDir):
                bus = ins.direction
            elif isinstance(ins, isa.WBuf):
                if ins.index >= len(blocks):
                    raise ExecutionError(ErrorCode.BAD_WRITE_DATA,
                                         f"{where}: the program carries {len(blocks)} write-data blocks")
                if loaded:
                    raise ExecutionError(ErrorCode.BAD_WRITE_DATA, f"{where}: write buffer loaded twice without a WR")
                loaded = True
        if not isinstance(program[-1], isa.End):
            raise ExecutionError(ErrorCode.NO_END, f"program of {n} instructions does not end with END")
        for index, block in enumerate(blocks):
            if len(block) != BURST_BYTES:
                raise ExecutionError(ErrorCode.BAD_WRITE_DATA, f"write-data block {index} is not {BURST_BYTES} bytes")
        if written and (problem := self.dimm.store_problem(written)) is not None:
            raise ExecutionError(ErrorCode.STORE_FULL, problem)
        return program

    def run(self, words, blocks=()) -> bytes:  # type: ignore[override]
        program = self.check_reference(list(words), list(blocks))
        trace = ProgramTrace(instructions=len(program))
        out = bytearray()
        self.cycle += INTER_PROGRAM_GAP_CYCLES
        cycle, dimm, tck, wbuf = self.cycle, self.dimm, self.tck_ns, None
        for ins in program:
            if isinstance(ins, isa.Wait):
                cycle += ins.cycles
                continue
            if isinstance(ins, isa.WBuf):
                wbuf = blocks[ins.index]
                continue
            if isinstance(ins, (isa.Rd, isa.Wr)):
                bank = self.banks[ins.bank]
                trcd = cycle - bank.act_cycle
                trace.note("min_trcd_cycles", trcd)
                dimm.now_ns = cycle * tck
                if isinstance(ins, isa.Rd):
                    out += bank.open.read(ins.column, trcd)
                    trace.reads += 1
                    recovery = self._ap_read
                else:
                    burst = wbuf if wbuf is not None else bytes((ins.data,)) * BURST_BYTES
                    wbuf = None
                    bank.open.write(ins.column, burst, trcd)
                    trace.writes += 1
                    recovery = self._ap_write
                if ins.auto_precharge:
                    self._precharge(bank, max(cycle + recovery, bank.act_cycle + self._tras_min), trace)
            elif isinstance(ins, isa.Act):
                bank = self.banks[ins.bank]
                if bank.pre_cycle >= 0:
                    trace.note("min_trp_cycles", cycle - bank.pre_cycle)
                dimm.now_ns = cycle * tck
                bank.open = dimm.activate(ins.bank, ins.row, cycle - bank.pre_cycle)
                bank.act_cycle = cycle
                trace.activates += 1
                trace.rows.append((ins.bank, ins.row))
            elif isinstance(ins, isa.Pre):
                self._precharge(self.banks[ins.bank], cycle, trace)
            elif isinstance(ins, isa.PreAll):
                for bank in self.banks:
                    self._precharge(bank, cycle, trace)
            elif isinstance(ins, isa.Ref):
                trace.refreshes += 1
                dimm.now_ns = cycle * tck
                dimm.refresh(dimm.now_ns)
            elif isinstance(ins, isa.SetBusDir):
                self.bus = ins.direction
            elif isinstance(ins, isa.SetTrefi):
                self.trefi = ins.value
                dimm.now_ns = cycle * tck
                dimm.set_auto_refresh(dimm.now_ns, ins.value * TREFI_TICK_NS)
            elif isinstance(ins, isa.SetTrfc):
                self.trfc = ins.value
            elif isinstance(ins, isa.End):
                break
            cycle += 1
        trace.cycles = cycle - self.cycle
        self.cycle = cycle
        self.last_trace = trace
        self.programs_run += 1
        return bytes(out)


class RecordingDimm(EmulatedDimm):
    """A DIMM whose per-burst events are recorded (overriding read_burst/write_burst gives the per-burst path)."""

    def __init__(self, seed: int) -> None:
        super().__init__(GEOMETRY, seed=seed)
        self.events: list[tuple] = []

    def read_burst(self, access, column, trcd_cycles):  # type: ignore[override]
        self.events.append(("rd", access.bank, access.row, column, trcd_cycles, self.now_ns))
        return super().read_burst(access, column, trcd_cycles)

    def write_burst(self, access, column, burst, trcd_cycles):  # type: ignore[override]
        self.events.append(("wr", access.bank, access.row, column, bytes(burst), trcd_cycles, self.now_ns))
        super().write_burst(access, column, burst, trcd_cycles)

    def activate(self, bank, row, trp_cycles):  # type: ignore[override]
        self.events.append(("act", bank, row, trp_cycles, self.now_ns))
        return super().activate(bank, row, trp_cycles)

    def precharge(self, access, tras_cycles):  # type: ignore[override]
        self.events.append(("pre", access.bank, access.row, tras_cycles, self.now_ns))
        super().precharge(access, tras_cycles)


def random_program(rng: np.random.Generator, n_blocks: int, open_banks: set[int], bus: isa.BusDirection) -> list[int]:
    """A random program, mostly valid for the given state (so that most run), sometimes not."""
    out: list[isa.Instruction] = []
    loaded = False
    for _ in range(int(rng.integers(1, 70))):
        r = rng.random()
        closed = [b for b in range(3) if b not in open_banks]
        if r < 0.1 and closed:
            b = int(rng.choice(closed))
            out.append(isa.Act(b, int(rng.integers(0, 6)) if rng.random() > 0.01 else 40))
            open_banks.add(b)
        elif r < 0.5 and open_banks:
            b = int(rng.choice(sorted(open_banks))) if rng.random() > 0.01 else 2
            ap = bool(rng.random() < 0.08)
            if bus == isa.BusDirection.READ or rng.random() < 0.01:
                out.append(isa.Rd(b, int(rng.integers(0, 1024)), ap))
            else:
                if not loaded and n_blocks and rng.random() < 0.5:
                    out.append(isa.WBuf(int(rng.integers(0, n_blocks + (rng.random() < 0.02)))))
                out.append(isa.Wr(b, int(rng.integers(0, 1024)), int(rng.integers(0, 256)), ap))
                loaded = False
            if ap:
                open_banks.discard(b)
        elif r < 0.58:
            b = int(rng.integers(0, 3))
            out.append(isa.Pre(b))
            open_banks.discard(b)
        elif r < 0.6:
            out.append(isa.PreAll())
            open_banks.clear()
        elif r < 0.62:
            if open_banks and rng.random() < 0.9:
                out.append(isa.PreAll())
                open_banks.clear()
            out.append(isa.Ref())
        elif r < 0.63:
            out.append(isa.Zq(bool(rng.random() < 0.5)))
        elif r < 0.68:
            bus = isa.BusDirection.WRITE if rng.random() < 0.6 else isa.BusDirection.READ
            out.append(isa.SetBusDir(bus))
        elif r < 0.9:
            out.append(isa.Wait(int(rng.integers(1, 30))))
        elif r < 0.92 and n_blocks:
            out.append(isa.WBuf(int(rng.integers(0, n_blocks))))
            loaded = True
        elif r < 0.94:
            out.append(isa.SetTrefi(int(rng.integers(0, 50))))
        elif r < 0.95:
            out.append(isa.SetTrfc(int(rng.integers(0, 50))))
        elif r < 0.953:
            out.append(isa.End())
    words = [i.encode() for i in out]
    if rng.random() < 0.97:
        words.append(0)
    if rng.random() < 0.02:
        words.insert(int(rng.integers(0, len(words))), int(rng.integers(0, 2**32)))
    return words


def outcome(fw: TesterFirmware, words: list[int] | np.ndarray, blocks) -> tuple:
    try:
        result: tuple = ("ok", fw.run(words, blocks))
    except ExecutionError as exc:
        result = ("error", exc.code, str(exc))
    trace = fw.last_trace
    return result, fw.status(), trace.rows, fw.cycle


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_programs_run_as_instruction_by_instruction(seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = set()
    for sequence in range(6):
        fast, slow = TesterFirmware(RecordingDimm(sequence)), ReferenceFirmware(RecordingDimm(sequence))
        open_banks: set[int] = set()
        bus = isa.BusDirection.READ
        for _ in range(25):
            blocks = [rng.integers(0, 256, 64, dtype=np.uint8).tobytes() for _ in range(int(rng.integers(0, 4)))]
            words = random_program(rng, len(blocks), set(open_banks), bus)
            as_arrays = rng.random() < 0.5  # what the server passes: uint32 words, an (n, 64) block array
            fast_words = np.array(words, np.uint32) if as_arrays and max(words, default=0) < 2**32 else words
            fast_blocks = np.frombuffer(b"".join(blocks), np.uint8).reshape(-1, 64) if as_arrays else blocks
            got, want = outcome(fast, fast_words, fast_blocks), outcome(slow, words, blocks)
            assert got == want, words
            codes.add(got[0][1] if got[0][0] == "error" else "ok")
            status = got[1]
            open_banks = {int(b) for b in status["open_rows"]}
            bus = isa.BusDirection[status["bus_direction"]]
            if rng.random() < 0.1:
                fast.reset()
                slow.reset()
                open_banks, bus = set(), isa.BusDirection.READ
        assert fast.dimm.events == slow.dimm.events  # the same DIMM calls, at the same times
        for key in slow.dimm.store.keys():
            np.testing.assert_array_equal(fast.dimm.store[key], slow.dimm.store[key])
    assert "ok" in codes and len(codes) >= 5  # the programs exercised runs and several rejections


def test_runs_batch_the_bursts_of_an_open_row() -> None:
    class Counting(EmulatedDimm):
        calls: list[tuple[str, int]] = []

        def read_bursts(self, access, columns, trcd_cycles, now_ns):  # type: ignore[override]
            self.calls.append(("rd", len(columns)))
            return super().read_bursts(access, columns, trcd_cycles, now_ns)

        def write_bursts(self, access, columns, bursts, trcd_cycles, now_ns):  # type: ignore[override]
            self.calls.append(("wr", len(columns)))
            super().write_bursts(access, columns, bursts, trcd_cycles, now_ns)

    fw = TesterFirmware(Counting(GEOMETRY))
    text = ["BUSDIR WRITE", "WAIT 5", "ACT 1 3", "WAIT 5"]
    for c in range(0, 80, 8):
        text += ["WBUF %d" % (c // 8), f"WR 1 {c} 0", "WAIT 3"]
    text += ["WAIT 20", "PRE 1", "WAIT 5", "BUSDIR READ", "WAIT 5", "ACT 1 3", "WAIT 5"]
    text += [f"RD 1 {c}\nWAIT 3" for c in range(0, 80, 8)] + ["RD 1 0 AP", "END"]
    from softmc_host.asm import assemble

    blocks = np.arange(10 * 64, dtype=np.uint32).astype(np.uint8).reshape(10, 64)
    out = fw.run([i.encode() for i in assemble("\n".join(text).splitlines())], blocks)
    assert Counting.calls == [("wr", 10), ("rd", 10)]  # one call per run; the AP read on its own
    assert out[: 10 * 64] == blocks.tobytes() and len(out) == 11 * 64
    assert fw.last_trace.reads == 11 and fw.last_trace.writes == 10 and fw.status()["open_rows"] == {}


def test_checked_program_is_a_sequence_of_instructions() -> None:
    fw = TesterFirmware(EmulatedDimm(GEOMETRY))
    words = [isa.Act(1, 2).encode(), isa.Wait(4).encode(), isa.Pre(1).encode(), isa.End().encode()]
    plan = fw.check(words)
    assert len(plan) == 4 and plan[0] == isa.Act(1, 2) and list(plan)[-1] == isa.End()
    assert plan.cycles == 1 + 4 + 1 and plan.n_reads == 0
    assert fw.programs_run == 0  # checking runs nothing


@pytest.mark.parametrize("bad", [[True, 0], [1.0, 0], [2**70, 0], [-1, 0]])
def test_words_that_are_not_32_bit_integers_are_bad_instructions(bad: list) -> None:
    fw = TesterFirmware(EmulatedDimm(GEOMETRY))
    with pytest.raises(ExecutionError) as info:
        fw.run(bad)
    assert info.value.code == ErrorCode.BAD_INSTRUCTION and "instruction 0:" in str(info.value)


def test_decode_words_agrees_with_decode() -> None:
    rng = np.random.default_rng(3)
    n = 20000
    ddr = ((1 << 31) | (rng.choice([0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x01], n) << 19)
           | (rng.integers(0, 8, n) << 16) | rng.choice([0, 1 << 10, 1 << 12, 0x1400, 0xD000, 0x2000], n)
           | rng.integers(0, 1024, n) * rng.integers(0, 2, n) | (rng.integers(0, 64, n) << 25) * (rng.random(n) < 0.3))
    plain = (rng.integers(0, 8, n) << 28) | rng.choice([0, 1, 2, 3, 1023, 1024, 8191, 8192, 1 << 27], n)
    words = np.concatenate([rng.integers(0, 2**32, n), ddr, plain, [0, 2**32 - 1, -1, 2**32]]).astype(np.int64)
    dec = isa.decode_words(words)
    fields = {isa.Act: "row", isa.Rd: "column", isa.Wr: "column", isa.Wait: "cycles", isa.WBuf: "index",
              isa.SetTrefi: "value", isa.SetTrfc: "value", isa.SetBusDir: "direction", isa.Zq: "long"}
    valid = 0
    for i, word in enumerate(words.tolist()):
        try:
            ins = isa.decode(word)
        except isa.IsaError:
            assert dec.kind[i] == isa.Kind.INVALID, hex(word)
            continue
        valid += 1
        assert isa.KIND_CLASS[isa.Kind(int(dec.kind[i]))] is type(ins), hex(word)
        assert dec.field[i] == (int(getattr(ins, fields[type(ins)])) if type(ins) in fields else 0), hex(word)
        assert dec.bank[i] == getattr(ins, "bank", 0) and dec.data[i] == getattr(ins, "data", 0)
        assert dec.auto_precharge[i] == getattr(ins, "auto_precharge", False)
    assert valid > 10000
    ok = dec.kind != isa.Kind.INVALID
    again = isa.encode_words(dec.kind[ok], dec.bank[ok], dec.field[ok], dec.data[ok], dec.auto_precharge[ok])
    np.testing.assert_array_equal(again, words[ok])


def test_encode_words_refuses_out_of_range_fields() -> None:
    with pytest.raises(isa.IsaError, match="word 1"):
        isa.encode_words([isa.Kind.WAIT, isa.Kind.WAIT], field=[5, 0])
    with pytest.raises(isa.IsaError):
        isa.encode_words([isa.Kind.RD], bank=8)
    with pytest.raises(isa.IsaError):
        isa.encode_words([200])

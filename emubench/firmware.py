"""The tester firmware, emulated: executes SoftMC programs on an emulated DIMM.

Timing model (documented in ``docs/emulator.md``): the tester issues one
instruction per DRAM clock cycle; ``WAIT n`` takes ``n`` cycles; the bridge's
``WBUF`` takes none.  The effective tRCD of a RD/WR is the number of cycles from
its row's ACT, tRP of an ACT the cycles from the bank's last PRE, and tRAS of a
PRE the cycles from the ACT it closes.  Between two programs the clock advances
by :data:`INTER_PROGRAM_GAP_CYCLES` (the host's turnaround), so results do not
depend on wall-clock time.

The cycle counter is the DIMM's clock as well: before every call into the DIMM
(activate, a row access's read / write / close, refresh, auto-refresh) the
firmware sets ``dimm.now_ns = cycle * tck_ns``, so cells age only while programs
run (instructions, WAITs and the inter-program gap), never while the host
sleeps.  ``REF`` is one ``dimm.refresh(now_ns)``; ``SET_TREFI n`` is
``dimm.set_auto_refresh(now_ns, n * 200)`` (0 turns auto-refresh off), and the
DIMM works out which rows auto-refresh reached when.  A DIMM class without
``set_auto_refresh`` (an older one) gets neither call.

A program is checked completely before it runs; a bad one is rejected with an
:class:`ExecutionError` and leaves the DIMM untouched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from emubench.dimm import EmulatedDimm, RowAccess
from firmware_bridge.protocol import BURST_BYTES, MAX_PROGRAM_SLOTS, ErrorCode
from softmc_host import isa
from softmc_host.program import TREFI_TICK_NS
from softmc_host.timing import ML605_TCK_NS, NOMINAL_TIMING, Ddr3Params, ns_to_cycles

__all__ = ["ExecutionError", "ProgramTrace", "TesterFirmware", "INTER_PROGRAM_GAP_CYCLES", "FIRMWARE_NAME"]

FIRMWARE_NAME = "softmc-emulator"
FIRMWARE_VERSION = "1.0"
INTER_PROGRAM_GAP_CYCLES = 400  # a fixed number of cycles at any tCK (1 us at 2.5 ns)


class ExecutionError(Exception):
    """The firmware refuses a program; ``code`` is an :class:`ErrorCode`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ProgramTrace:
    """What the last program did, with the tightest timings it used (in cycles)."""

    instructions: int = 0
    reads: int = 0
    writes: int = 0
    activates: int = 0
    refreshes: int = 0
    cycles: int = 0
    min_trcd_cycles: int | None = None
    min_trp_cycles: int | None = None
    min_tras_cycles: int | None = None
    rows: list[tuple[int, int]] = field(default_factory=list)

    def note(self, name: str, value: int) -> None:
        """Keep the minimum of a timing field."""
        old = getattr(self, name)
        if old is None or value < old:
            setattr(self, name, value)


class _Where:
    """Formats "instruction N (TEXT)" only when an error message needs it."""

    __slots__ = ("index", "ins")

    def __init__(self, index: int, ins: isa.Instruction) -> None:
        self.index = index
        self.ins = ins

    def __str__(self) -> str:
        return f"instruction {self.index} ({self.ins.to_text()})"


class _Bank:
    __slots__ = ("open", "act_cycle", "pre_cycle")

    def __init__(self) -> None:
        self.open: RowAccess | None = None
        self.act_cycle = 0
        self.pre_cycle = -(1 << 40)  # precharged long ago


class TesterFirmware:
    """SoftMC firmware state machine over an :class:`EmulatedDimm`.

    Parameters
    ----------
    dimm : EmulatedDimm
        The memory under test.
    tck_ns : float
        DRAM clock period in nanoseconds (2.5 on the ML605).
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, dimm: EmulatedDimm, tck_ns: float = ML605_TCK_NS) -> None:
        self.dimm = dimm
        self.tck_ns = float(tck_ns)
        self.cycle = 0
        self.trefi = 0
        self.trfc = 0
        self.bus = isa.BusDirection.READ
        self.banks = [_Bank() for _ in range(dimm.geometry.banks)]
        self.last_trace = ProgramTrace()
        self.programs_run = 0
        # DIMMs with a refresh model (retention) get the REF / SET_TREFI calls; older classes do not.
        self._refreshing = hasattr(dimm, "set_auto_refresh") and hasattr(dimm, "refresh")
        self._decoded: dict[int, isa.Instruction] = {}
        # Auto-precharge starts after tRTP (reads) or write recovery (writes), and the
        # DRAM holds it until tRAS(min) has passed, as DDR3 devices do.
        params = Ddr3Params()
        self._ap_read = params.trtp_cycles(self.tck_ns)
        self._ap_write = params.write_recovery_cycles(self.tck_ns)
        self._tras_min = ns_to_cycles(NOMINAL_TIMING.tras_ns, self.tck_ns)

    # Information ---------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The INFO reply: identity, geometry, clock and features."""
        g = self.dimm.geometry
        return {
            "firmware": FIRMWARE_NAME,
            "version": FIRMWARE_VERSION,
            "protocol": 1,
            "tck_ps": round(self.tck_ns * 1000),
            "banks": g.banks,
            "rows": g.rows,
            "columns": g.columns,
            "bus_bytes": g.bus_bytes,
            "max_program": MAX_PROGRAM_SLOTS,
            "features": ["wbuf", "noise-seed"] if hasattr(self.dimm, "reseed_noise") else ["wbuf"],
            "dimm_seed": self.dimm.seed,
        }

    def status(self) -> dict[str, Any]:
        """The STATUS reply: clock, registers, open rows and the last program's trace."""
        return {
            "cycle": self.cycle,
            "programs_run": self.programs_run,
            "bus_direction": self.bus.name,
            "trefi": self.trefi,
            "trfc": self.trfc,
            "open_rows": {str(b): bank.open.row for b, bank in enumerate(self.banks) if bank.open is not None},
            "stored_rows": self.dimm.stored_rows,
            "last_program": {k: v for k, v in asdict(self.last_trace).items() if k != "rows"},
        }

    def reset(self) -> None:
        """Close every row, set the bus to READ and disable auto-refresh."""
        self._close_all()
        self.bus = isa.BusDirection.READ
        self.trefi = 0
        if self._refreshing:
            self.dimm.now_ns = self.cycle * self.tck_ns
            self.dimm.set_auto_refresh(self.dimm.now_ns, 0.0)

    # Execution -----------------------------------------------------------------------------

    def _decode(self, index: int, word: int) -> isa.Instruction:
        ins = self._decoded.get(word)
        if ins is None:
            try:
                ins = isa.decode(word)
            except isa.IsaError as exc:
                raise ExecutionError(ErrorCode.BAD_INSTRUCTION, f"instruction {index}: {exc}") from None
            if len(self._decoded) < 1 << 16:
                self._decoded[word] = ins
        return ins

    def check(self, words: Sequence[int], blocks: Sequence[bytes]) -> list[isa.Instruction]:
        """Decode and check a whole program against the current state without running it.

        Raises
        ------
        ExecutionError
            If the program is too long, lacks END, has instructions after END,
            reads a bank with no open row, uses the bus in the wrong direction,
            activates an open bank, refreshes with rows open, addresses a row
            beyond the DIMM, or names a missing write-data block.
        """
        n = len(words)
        if n > MAX_PROGRAM_SLOTS:
            raise ExecutionError(ErrorCode.PROGRAM_TOO_LONG, f"program of {n} instructions exceeds {MAX_PROGRAM_SLOTS}")
        if n == 0:
            raise ExecutionError(ErrorCode.NO_END, "empty program (it must end with END)")
        program = [self._decode(i, w) for i, w in enumerate(words)]
        open_rows = [bank.open.row if bank.open is not None else None for bank in self.banks]
        bus = self.bus
        wbuf_loaded = False
        written: set[tuple[int, int]] = set()  # rows the program writes: they must fit in the DIMM's store
        rows = self.dimm.geometry.rows
        for i, ins in enumerate(program):
            if isinstance(ins, isa.Wait):
                continue  # the commonest instruction, and always valid once decoded
            where = _Where(i, ins)
            if isinstance(ins, isa.End):
                if i != n - 1:
                    raise ExecutionError(ErrorCode.NO_END, f"{where}: END before the last instruction")
            elif isinstance(ins, isa.Act):
                if ins.row >= rows:
                    raise ExecutionError(ErrorCode.ADDRESS_RANGE, f"{where}: the DIMM has {rows} rows")
                if open_rows[ins.bank] is not None:
                    raise ExecutionError(
                        ErrorCode.BANK_STATE, f"{where}: bank {ins.bank} already has row {open_rows[ins.bank]} open"
                    )
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
                    wbuf_loaded = False
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
                    raise ExecutionError(
                        ErrorCode.BAD_WRITE_DATA, f"{where}: the program carries {len(blocks)} write-data blocks"
                    )
                if wbuf_loaded:
                    raise ExecutionError(ErrorCode.BAD_WRITE_DATA, f"{where}: write buffer loaded twice without a WR")
                wbuf_loaded = True
        if not isinstance(program[-1], isa.End):
            raise ExecutionError(ErrorCode.NO_END, f"program of {n} instructions does not end with END")
        for index, block in enumerate(blocks):
            if len(block) != BURST_BYTES:
                raise ExecutionError(ErrorCode.BAD_WRITE_DATA, f"write-data block {index} is not {BURST_BYTES} bytes")
        if written:
            problem = self.dimm.store_problem(written)
            if problem is not None:
                raise ExecutionError(ErrorCode.STORE_FULL, problem)
        return program

    def run(self, words: Sequence[int], blocks: Sequence[bytes] = ()) -> bytes:
        """Check and execute a program; return the read bursts, concatenated in program order."""
        program = self.check(words, blocks)
        problem = self.dimm.power_problem()
        if problem is not None:
            raise ExecutionError(ErrorCode.NO_POWER, problem)
        trace = ProgramTrace(instructions=len(program))
        out = bytearray()
        self.cycle += INTER_PROGRAM_GAP_CYCLES
        cycle = self.cycle
        banks = self.banks
        dimm = self.dimm
        tck_ns = self.tck_ns
        refreshing = self._refreshing
        wbuf: bytes | None = None
        for ins in program:
            if isinstance(ins, isa.Wait):
                cycle += ins.cycles
                continue
            if isinstance(ins, isa.WBuf):
                wbuf = blocks[ins.index]
                continue
            if isinstance(ins, isa.Rd):
                bank = banks[ins.bank]
                trcd = cycle - bank.act_cycle
                trace.note("min_trcd_cycles", trcd)
                dimm.now_ns = cycle * tck_ns
                out += bank.open.read(ins.column, trcd)  # type: ignore[union-attr]
                trace.reads += 1
                if ins.auto_precharge:
                    self._precharge(bank, max(cycle + self._ap_read, bank.act_cycle + self._tras_min), trace)
            elif isinstance(ins, isa.Wr):
                bank = banks[ins.bank]
                trcd = cycle - bank.act_cycle
                trace.note("min_trcd_cycles", trcd)
                burst = wbuf if wbuf is not None else bytes((ins.data,)) * BURST_BYTES
                wbuf = None
                dimm.now_ns = cycle * tck_ns
                bank.open.write(ins.column, burst, trcd)  # type: ignore[union-attr]
                trace.writes += 1
                if ins.auto_precharge:
                    self._precharge(bank, max(cycle + self._ap_write, bank.act_cycle + self._tras_min), trace)
            elif isinstance(ins, isa.Act):
                bank = banks[ins.bank]
                trp = cycle - bank.pre_cycle
                if bank.pre_cycle >= 0:
                    trace.note("min_trp_cycles", trp)
                dimm.now_ns = cycle * tck_ns
                bank.open = dimm.activate(ins.bank, ins.row, trp)
                bank.act_cycle = cycle
                trace.activates += 1
                trace.rows.append((ins.bank, ins.row))
            elif isinstance(ins, isa.Pre):
                self._precharge(banks[ins.bank], cycle, trace)
            elif isinstance(ins, isa.PreAll):
                for bank in banks:
                    self._precharge(bank, cycle, trace)
            elif isinstance(ins, isa.Ref):
                trace.refreshes += 1
                if refreshing:
                    dimm.now_ns = cycle * tck_ns
                    dimm.refresh(dimm.now_ns)
            elif isinstance(ins, isa.SetBusDir):
                self.bus = ins.direction
            elif isinstance(ins, isa.SetTrefi):
                self.trefi = ins.value
                if refreshing:
                    dimm.now_ns = cycle * tck_ns
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

    def _precharge(self, bank: _Bank, cycle: int, trace: ProgramTrace) -> None:
        if bank.open is not None:
            tras = cycle - bank.act_cycle
            trace.note("min_tras_cycles", tras)
            self.dimm.now_ns = cycle * self.tck_ns
            bank.open.close(tras)
            bank.open = None
        bank.pre_cycle = cycle

    def _close_all(self) -> None:
        for bank in self.banks:
            if bank.open is not None:
                self.dimm.now_ns = self.cycle * self.tck_ns
                bank.open.close(self.cycle - bank.act_cycle)
                bank.open = None
            bank.pre_cycle = self.cycle

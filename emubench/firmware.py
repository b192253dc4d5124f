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

Programs are checked and run on arrays (numpy), not instruction by instruction: the words
are decoded at once (:func:`softmc_host.isa.decode_words`), each instruction's cycle is a
cumulative sum of the costs above, and the RD/WR bursts between two other instructions that
go to the same open row are one call into the DIMM (:meth:`EmulatedDimm.read_bursts`,
:meth:`EmulatedDimm.write_bursts`: the same as one ``read_burst``/``write_burst`` per burst
with ``dimm.now_ns`` set before each).  ACT, PRE, REF, SET_* and RD/WR with auto-precharge
are handled one by one (a few per row).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from emubench.dimm import EmulatedDimm, RowAccess
from firmware_bridge.protocol import BURST_BYTES, MAX_PROGRAM_SLOTS, ErrorCode
from softmc_host import isa
from softmc_host.program import TREFI_TICK_NS
from softmc_host.timing import ML605_TCK_NS, NOMINAL_TIMING, Ddr3Params, ns_to_cycles

__all__ = [
    "ExecutionError", "ProgramTrace", "TesterFirmware", "CheckedProgram", "INTER_PROGRAM_GAP_CYCLES", "FIRMWARE_NAME",
]

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

    def _word_array(self, words: Sequence[int] | np.ndarray) -> np.ndarray:
        """The program's words as an integer array; a word that is not an integer is refused here."""
        if isinstance(words, np.ndarray) and words.dtype.kind in "iu":
            return words.reshape(-1)
        if not isinstance(words, np.ndarray) and all(type(w) is int for w in words):
            try:
                return np.array(words, dtype=np.int64)
            except OverflowError:  # a word beyond 64 bits: decode() names it below
                pass
        for index, word in enumerate(words):  # the first word decode() refuses, with its reason
            _decode_one(index, word)
        return np.array([int(w) for w in words], dtype=np.int64)

    def check(self, words: Sequence[int] | np.ndarray, blocks: Sequence[bytes] | np.ndarray = ()) -> "CheckedProgram":
        """Decode and check a whole program against the current state without running it.

        Parameters
        ----------
        words : sequence of int or numpy.ndarray
            The 32-bit instruction words.
        blocks : sequence of bytes or numpy.ndarray
            The write-data blocks (64 bytes each; or an ``(n, 64)`` uint8 array).

        Returns
        -------
        CheckedProgram
            The decoded program and its execution plan (a sequence of the instructions).

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
        w = self._word_array(words)
        dec = isa.decode_words(w)
        kind = dec.kind
        if kind.max() == _INVALID:
            index = int(np.flatnonzero(kind == _INVALID)[0])
            _decode_one(index, words[index] if not isinstance(words, np.ndarray) else int(w[index]))
            raise ExecutionError(ErrorCode.BAD_INSTRUCTION, f"instruction {index}: not a valid instruction")
        n_blocks = len(blocks)
        # One by one: everything but WAIT, WBUF and RD/WR without auto-precharge.
        control = np.flatnonzero(np.take(_IS_CONTROL, kind) | dec.auto_precharge)
        c_kind, c_bank, c_field = kind[control].tolist(), dec.bank[control].tolist(), dec.field[control].tolist()
        open_rows: list[int] = [bank.open.row if bank.open is not None else -1 for bank in self.banks]
        bus = self.bus
        snapshots: list[list[int]] = []  # open rows (-1: none) before each control instruction, and at the end
        buses: list[int] = []
        written: set[tuple[int, int]] = set()  # rows the program writes: they must fit in the DIMM's store
        dimm_rows = self.dimm.geometry.rows
        failure: tuple[int, ErrorCode, str] | None = None
        for j, index in enumerate(control.tolist()):
            snapshots.append(open_rows.copy())
            buses.append(bus)
            k = c_kind[j]
            if k == _ACT:
                b = c_bank[j]
                if c_field[j] >= dimm_rows:
                    failure = (index, ErrorCode.ADDRESS_RANGE, f"the DIMM has {dimm_rows} rows")
                    break
                if open_rows[b] >= 0:
                    failure = (index, ErrorCode.BANK_STATE, f"bank {b} already has row {open_rows[b]} open")
                    break
                open_rows[b] = c_field[j]
            elif k == _PRE:
                open_rows[c_bank[j]] = -1
            elif k == _PREA:
                open_rows = [-1] * len(open_rows)
            elif k == _RD or k == _WR:  # with auto-precharge
                b = c_bank[j]
                name = "RD" if k == _RD else "WR"
                if open_rows[b] < 0:
                    failure = (index, ErrorCode.NO_OPEN_ROW, f"{name} to bank {b} with no open row")
                    break
                want = isa.BusDirection.READ if k == _RD else isa.BusDirection.WRITE
                if bus != want:
                    failure = (index, ErrorCode.BUS_DIRECTION, f"{name} while the bus is set to {bus.name}")
                    break
                if k == _WR:
                    written.add((b, open_rows[b]))
                open_rows[b] = -1
            elif k == _REF:
                busy = [b for b, r in enumerate(open_rows) if r >= 0]
                if busy:
                    failure = (index, ErrorCode.BANK_STATE, f"REF with rows open in banks {busy}")
                    break
            elif k == _BUSDIR:
                bus = isa.BusDirection(c_field[j])
            elif k == _END and index != n - 1:
                failure = (index, ErrorCode.NO_END, "END before the last instruction")
                break
        else:
            snapshots.append(open_rows)
            buses.append(bus)
        # On arrays, the instructions before a failure (checked in order above): RD/WR without
        # auto-precharge against the state of their interval between control instructions, and WBUF.
        limit = n if failure is None else failure[0]
        head = kind if failure is None else kind[:limit]
        counts = np.bincount(head, minlength=256)
        has_writes = counts[_WR] > 0
        rw = np.flatnonzero(np.take(_IS_RW, head) ^ dec.auto_precharge[:limit])  # AP only ever marks an RD/WR
        interval = np.searchsorted(control, rw)  # control instructions before each
        rw_bank = dec.bank[rw]
        rw_write = kind[rw] == _WR if has_writes else np.zeros(len(rw), bool)
        # Runs: maximal stretches of rw to one bank, one direction, with no control instruction
        # between: they share the state checked here, and are one call into the DIMM each.
        if len(rw):
            key = interval * 16 + rw_bank * 2 + rw_write
            starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        else:
            starts = np.zeros(0, np.int64)
        run_interval, run_bank, run_write = interval[starts], rw_bank[starts], rw_write[starts]
        run_row = np.array(snapshots, dtype=np.int64)[run_interval, run_bank]
        # The bus direction each needs: 0 (READ) for RD, 2 (WRITE) for WR.
        run_bus = np.array(buses, dtype=np.int64)[run_interval]
        run_bad = (run_row < 0) | (run_bus != (run_write.view(np.uint8) << 1))
        candidates: list[tuple[int, int, ErrorCode, str]] = []
        if failure is not None:
            candidates.append((failure[0], 0, failure[1], failure[2]))
        if run_bad.any():
            r = int(np.flatnonzero(run_bad)[0])
            i = int(rw[starts[r]])
            name = "RD" if kind[i] == _RD else "WR"
            if run_row[r] < 0:
                message = (ErrorCode.NO_OPEN_ROW, f"{name} to bank {int(dec.bank[i])} with no open row")
            else:
                message = (ErrorCode.BUS_DIRECTION, f"{name} while the bus is set to {isa.BusDirection(int(run_bus[r])).name}")
            candidates.append((i, 0, *message))
        # WBUF and WR in program order: the block each WR writes, and WBUFs without a WR between.
        if counts[_WBUF]:
            is_wbuf = head == _WBUF
            loads = np.flatnonzero(is_wbuf | (head == _WR))
            is_load = is_wbuf[loads]
            wbuf = loads[is_load]
            missing = np.flatnonzero(dec.field[wbuf] >= n_blocks)
            if missing.size:
                candidates.append((int(wbuf[missing[0]]), 0, ErrorCode.BAD_WRITE_DATA,
                                   f"the program carries {n_blocks} write-data blocks"))
            twice = np.flatnonzero(is_load[1:] & is_load[:-1])
            if twice.size:
                candidates.append((int(loads[twice[0] + 1]), 1, ErrorCode.BAD_WRITE_DATA,
                                   "write buffer loaded twice without a WR"))
        else:
            loads = np.flatnonzero(head == _WR) if has_writes else np.zeros(0, np.int64)
            is_load = np.zeros(len(loads), bool)
        if candidates:
            index, _, code, text = min(candidates, key=lambda c: (c[0], c[1]))
            raise ExecutionError(code, f"instruction {index} ({isa.decode(int(w[index])).to_text()}): {text}")
        if kind[-1] != _END:
            raise ExecutionError(ErrorCode.NO_END, f"program of {n} instructions does not end with END")
        block_array = _block_array(blocks)
        written.update(zip(run_bank[run_write].tolist(), run_row[run_write].tolist()))
        if written:
            problem = self.dimm.store_problem(written)
            if problem is not None:
                raise ExecutionError(ErrorCode.STORE_FULL, problem)
        return CheckedProgram(
            w, dec, block_array, int(counts[_RD]), control, c_kind, c_bank, c_field, rw, rw_write, starts,
            run_interval, run_bank, run_write, loads, is_load,
        )

    def run(self, words: Sequence[int] | np.ndarray, blocks: Sequence[bytes] | np.ndarray = ()) -> bytes:
        """Check and execute a program; return the read bursts, concatenated in program order.

        ``words`` may be a sequence of ints or an integer array, ``blocks`` a sequence of
        64-byte blocks or an ``(n, 64)`` uint8 array (what
        :func:`firmware_bridge.protocol.decode_program_arrays` gives).

        Raises
        ------
        ExecutionError
            If :meth:`check` refuses the program, or the DIMM has no power.
        """
        return self.run_array(words, blocks).tobytes()

    def run_array(self, words: Sequence[int] | np.ndarray, blocks: Sequence[bytes] | np.ndarray = ()) -> np.ndarray:
        """:meth:`run`, returning the read bursts as a uint8 array (no copy into bytes)."""
        plan = self.check(words, blocks)
        problem = self.dimm.power_problem()
        if problem is not None:
            raise ExecutionError(ErrorCode.NO_POWER, problem)
        trace = ProgramTrace(instructions=len(plan))
        self.cycle += INTER_PROGRAM_GAP_CYCLES
        base = self.cycle
        banks = self.banks
        dimm = self.dimm
        tck_ns = self.tck_ns
        refreshing = self._refreshing
        out = np.empty(plan.n_reads * BURST_BYTES, np.uint8)
        done = 0  # bytes of out filled
        rw_cycle = plan.rw_offset + base
        rw_now_ns = rw_cycle * tck_ns
        control_cycles = (plan.control_offset + base).tolist()
        runs = plan.runs
        n_runs = len(runs)
        r = 0
        min_trcd: int | None = None
        for j in range(len(control_cycles) + 1):
            while r < n_runs and runs[r][0] == j:  # the RD/WR runs before control instruction j
                _, start, end, bank_index, write, first = runs[r]
                r += 1
                bank = banks[bank_index]
                access = bank.open
                trcd0 = int(rw_cycle[start]) - bank.act_cycle  # cycles only grow within a run
                if min_trcd is None or trcd0 < min_trcd:
                    min_trcd = trcd0
                trcd = rw_cycle[start:end] - bank.act_cycle
                columns = plan.rw_column[start:end]
                if write:
                    dimm.write_bursts(access, columns, plan.write_data[first : first + end - start], trcd,
                                      rw_now_ns[start:end])
                    trace.writes += end - start
                else:
                    size = (end - start) * BURST_BYTES
                    out[done : done + size] = dimm.read_bursts(access, columns, trcd, rw_now_ns[start:end])
                    done += size
                    trace.reads += end - start
            if j == len(control_cycles):
                break
            cycle = control_cycles[j]
            k = plan.c_kind[j]
            if k == _ACT:
                b = plan.c_bank[j]
                bank = banks[b]
                trp = cycle - bank.pre_cycle
                if bank.pre_cycle >= 0:
                    trace.note("min_trp_cycles", trp)
                dimm.now_ns = cycle * tck_ns
                bank.open = dimm.activate(b, plan.c_field[j], trp)
                bank.act_cycle = cycle
                trace.activates += 1
                trace.rows.append((b, plan.c_field[j]))
            elif k == _PRE:
                self._precharge(banks[plan.c_bank[j]], cycle, trace)
            elif k == _RD:  # with auto-precharge
                bank = banks[plan.c_bank[j]]
                trcd = cycle - bank.act_cycle
                if min_trcd is None or trcd < min_trcd:
                    min_trcd = trcd
                dimm.now_ns = cycle * tck_ns
                out[done : done + BURST_BYTES] = np.frombuffer(bank.open.read(plan.c_field[j], trcd), np.uint8)  # type: ignore[union-attr]
                done += BURST_BYTES
                trace.reads += 1
                self._precharge(bank, max(cycle + self._ap_read, bank.act_cycle + self._tras_min), trace)
            elif k == _WR:  # with auto-precharge
                bank = banks[plan.c_bank[j]]
                trcd = cycle - bank.act_cycle
                if min_trcd is None or trcd < min_trcd:
                    min_trcd = trcd
                dimm.now_ns = cycle * tck_ns
                bank.open.write(plan.c_field[j], plan.burst_of(int(plan.control[j])), trcd)  # type: ignore[union-attr]
                trace.writes += 1
                self._precharge(bank, max(cycle + self._ap_write, bank.act_cycle + self._tras_min), trace)
            elif k == _PREA:
                for bank in banks:
                    self._precharge(bank, cycle, trace)
            elif k == _REF:
                trace.refreshes += 1
                if refreshing:
                    dimm.now_ns = cycle * tck_ns
                    dimm.refresh(dimm.now_ns)
            elif k == _BUSDIR:
                self.bus = isa.BusDirection(plan.c_field[j])
            elif k == _TREFI:
                self.trefi = plan.c_field[j]
                if refreshing:
                    dimm.now_ns = cycle * tck_ns
                    dimm.set_auto_refresh(dimm.now_ns, plan.c_field[j] * TREFI_TICK_NS)
            elif k == _TRFC:
                self.trfc = plan.c_field[j]
        if min_trcd is not None:
            trace.min_trcd_cycles = min_trcd
        trace.cycles = plan.cycles
        self.cycle = base + plan.cycles
        self.last_trace = trace
        self.programs_run += 1
        return out

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


K = isa.Kind
# The kinds as plain ints: comparing against an IntEnum member costs an attribute lookup each time.
_END, _BUSDIR, _TREFI, _TRFC, _WAIT, _WBUF = (int(k) for k in (K.END, K.BUSDIR, K.TREFI, K.TRFC, K.WAIT, K.WBUF))
_ACT, _PRE, _PREA, _RD, _WR, _REF, _INVALID = (int(k) for k in (K.ACT, K.PRE, K.PREA, K.RD, K.WR, K.REF, K.INVALID))


def _decode_one(index: int, word: object) -> isa.Instruction:
    """Decode one word, or raise the firmware's BAD_INSTRUCTION error naming it."""
    try:
        return isa.decode(word)  # type: ignore[arg-type]
    except isa.IsaError as exc:
        raise ExecutionError(ErrorCode.BAD_INSTRUCTION, f"instruction {index}: {exc}") from None


def _block_array(blocks: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """The write-data blocks as an ``(n, 64)`` uint8 array (a view where possible)."""
    if isinstance(blocks, np.ndarray):
        if blocks.dtype == np.uint8 and blocks.ndim == 2 and blocks.shape[1] == BURST_BYTES:
            return blocks
        if blocks.size == 0:
            return np.empty((0, BURST_BYTES), np.uint8)
        raise ExecutionError(ErrorCode.BAD_WRITE_DATA, f"write-data block 0 is not {BURST_BYTES} bytes")
    for index, block in enumerate(blocks):
        if len(block) != BURST_BYTES:
            raise ExecutionError(ErrorCode.BAD_WRITE_DATA, f"write-data block {index} is not {BURST_BYTES} bytes")
    if not len(blocks):
        return np.empty((0, BURST_BYTES), np.uint8)
    return np.frombuffer(b"".join(blocks), np.uint8).reshape(-1, BURST_BYTES)


# Cycles each instruction kind takes (WAIT: its count; WBUF and END: none).
_COST = np.ones(256, np.int64)
_COST[[_WBUF, _END]] = 0
# Kinds run on arrays (WAIT, WBUF, RD/WR without auto-precharge), the rest one by one; and RD/WR.
_IS_CONTROL = np.ones(256, bool)
_IS_CONTROL[[_WAIT, _WBUF, _RD, _WR]] = False
_IS_RW = np.zeros(256, bool)
_IS_RW[[_RD, _WR]] = True


class CheckedProgram(Sequence[isa.Instruction]):
    """A program that passed :meth:`TesterFirmware.check`: its decoded words and how to run them.

    Indexing and iterating give the instructions (decoded on demand).  The plan lists the
    control instructions (run one by one) and the *runs*: maximal sequences of RD/WR without
    auto-precharge to the same bank, in the same direction, with no control instruction
    between them, each one call into the DIMM.
    """

    def __init__(
        self, words: np.ndarray, decoded: isa.DecodedWords, blocks: np.ndarray, n_reads: int, control: np.ndarray,
        c_kind: list[int], c_bank: list[int], c_field: list[int], rw: np.ndarray, rw_write: np.ndarray,
        starts: np.ndarray, run_interval: np.ndarray, run_bank: np.ndarray, run_write: np.ndarray,
        loads: np.ndarray, is_load: np.ndarray,
    ) -> None:
        self.words = words
        self.decoded = decoded
        self.blocks = blocks
        kind = decoded.kind
        cost = np.where(kind == _WAIT, decoded.field, np.take(_COST, kind))
        ends = np.cumsum(cost)
        self.cycles = int(ends[-1])
        offsets = ends - cost  # each instruction's cycle, from the program's first
        self.n_reads = n_reads
        self.control = control
        self.c_kind, self.c_bank, self.c_field = c_kind, c_bank, c_field
        self.control_offset = offsets[control]
        # The block each WR writes: that of the WBUF right before it among WBUF/WR (-1: its data byte).
        is_wr = ~is_load
        self.wr_index = loads[is_wr]  # every WR, in order
        if is_load.any():
            previous = np.empty(len(loads), np.int64)
            previous[0] = -1
            previous[1:] = np.where(is_load[:-1], decoded.field[loads[:-1]], -1)
            self.wr_block = previous[is_wr]
        else:
            self.wr_block = np.full(len(self.wr_index), -1, np.int64)
        self.rw_offset = offsets[rw]
        self.rw_column = decoded.field[rw]
        n_writes = int(np.count_nonzero(rw_write))
        if n_writes == len(self.wr_index):  # no WR with auto-precharge: the same WRs
            blocks_of = self.wr_block
        else:
            blocks_of = self.wr_block[np.searchsorted(self.wr_index, rw[rw_write])]
        first_block = int(blocks_of[0]) if n_writes else -1
        if first_block >= 0 and int(blocks_of[-1]) - first_block == n_writes - 1 and (
            n_writes == 1 or (np.diff(blocks_of) == 1).all()
        ):  # the usual case: each WR writes the next block; no copy
            self.write_data = blocks[first_block : first_block + n_writes]
        elif n_writes:
            has = blocks_of >= 0
            self.write_data = np.empty((n_writes, BURST_BYTES), np.uint8)
            self.write_data[:] = decoded.data[rw[rw_write]].astype(np.uint8)[:, None]
            if has.any():
                self.write_data[has] = blocks[blocks_of[has]]
        else:
            self.write_data = np.empty((0, BURST_BYTES), np.uint8)
        ends_of_runs = np.append(starts[1:], len(rw))
        firsts = (np.cumsum(rw_write) - rw_write)[starts] if n_writes else np.zeros(len(starts), np.int64)
        #: (control instructions before it, first and end index into the rw arrays, bank, write?, first write)
        self.runs: list[tuple[int, int, int, int, bool, int]] = list(zip(
            run_interval.tolist(), starts.tolist(), ends_of_runs.tolist(), run_bank.tolist(),
            run_write.tolist(), firsts.tolist(),
        ))

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [isa.decode(int(w)) for w in self.words[index]]
        return isa.decode(int(self.words[index]))

    def __iter__(self) -> Iterator[isa.Instruction]:
        return (isa.decode(w) for w in self.words.tolist())

    def burst_of(self, index: int) -> bytes:
        """The 64 bytes the WR at ``index`` writes."""
        block = int(self.wr_block[np.searchsorted(self.wr_index, index)])
        if block >= 0:
            return self.blocks[block].tobytes()
        return bytes((int(self.decoded.data[index]),)) * BURST_BYTES

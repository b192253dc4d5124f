"""SoftMC programs and the builders characterization needs.

A :class:`Program` is a list of 32-bit instruction words (at most 8192, the last
one END) plus the write-data blocks of the bridge's write-data extension.  It
knows how many read bursts it will return and which way the bus points.

Builders append the usual sequences with timings given in nanoseconds and
converted to cycles at the tester's tCK (rounded up): write a row with a pattern,
read a row back, optionally activating the row once per burst so that every
burst is read exactly tRCD after its ACT.

Cycle accounting follows the emulator's timing model (``docs/emulator.md``):
every instruction takes one cycle except ``WAIT n`` (n cycles) and ``WBUF`` (none),
so ``ACT; WAIT tRCD-1; RD`` puts the RD tRCD cycles after the ACT.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from firmware_bridge.protocol import BURST_BYTES, MAX_PROGRAM_SLOTS, encode_program
from softmc_host import isa
from softmc_host.timing import Ddr3Params, TimingCycles

__all__ = [
    "ProgramError",
    "Program",
    "idle_state_program",
    "uniform_bursts",
    "wait_words",
    "row_bursts",
    "row_data",
    "append_row_write",
    "append_row_read",
    "pack_rows",
    "build_row_writes",
    "build_row_reads",
    "hold_programs",
    "refresh_interval_program",
    "TREFI_TICK_NS",
    "MAX_TREFI_NS",
]

ROW_BYTES = 8192
_WBUF_OPCODE = isa.WBuf(0).encode() >> 28
BURSTS_PER_ROW = ROW_BYTES // BURST_BYTES
#: Longest wait one program can hold: every slot a WAIT of 1023 cycles.
MAX_WAIT_SLOTS_CYCLES = MAX_PROGRAM_SLOTS * isa.MAX_WAIT_CYCLES
#: Unit of the SET_TREFI value: the auto-refresh interval is counted in 200 ns ticks.
TREFI_TICK_NS = 200.0
#: Longest auto-refresh interval SET_TREFI can hold: its 28-bit field of 200 ns ticks (about 53.7 s).
MAX_TREFI_NS = isa.MAX_REG_VALUE * TREFI_TICK_NS


class ProgramError(ValueError):
    """A program would be too long, is used after END, or is given bad data."""


class Program:
    """A SoftMC program under construction.

    The words and write-data blocks are kept as Python lists (:attr:`words`, :attr:`blocks`)
    or, for a program built on arrays (:meth:`from_arrays`, :func:`build_row_writes`,
    :func:`build_row_reads`), as numpy arrays; the lists are made from the arrays the first
    time they are asked for, and :meth:`payload` encodes either without going word by word.

    Parameters
    ----------
    max_length : int
        Maximum number of instructions, END included (8192 on SoftMC).
    """

    def __init__(self, max_length: int = MAX_PROGRAM_SLOTS) -> None:
        self._words: list[int] | None = []
        self._word_array: np.ndarray | None = None
        self._blocks: list[bytes] | None = []
        self._block_array: np.ndarray | None = None
        self.max_length = max_length
        self.n_reads = 0
        self.bus_direction: isa.BusDirection | None = None
        self.ended = False

    @classmethod
    def from_arrays(
        cls,
        words: np.ndarray,
        blocks: np.ndarray | None = None,
        *,
        n_reads: int | None = None,
        bus_direction: isa.BusDirection | None = None,
        max_length: int = MAX_PROGRAM_SLOTS,
    ) -> "Program":
        """A program holding ``words`` (32-bit words, END last if it is ended) and ``blocks`` (``(n, 64)`` uint8).

        ``n_reads`` defaults to the number of RD words.

        Raises
        ------
        ProgramError
            If there are more words than ``max_length``, or the blocks are not 64 bytes each.
        """
        words = np.asarray(words, dtype=np.int64).reshape(-1)
        if len(words) > max_length:
            raise ProgramError(f"program of {len(words)} instructions; the tester takes at most {max_length}")
        if blocks is None:
            blocks = np.empty((0, BURST_BYTES), np.uint8)
        blocks = np.asarray(blocks, dtype=np.uint8)
        if blocks.ndim != 2 or blocks.shape[1] != BURST_BYTES:
            raise ProgramError(f"write-data blocks must be an (n, {BURST_BYTES}) array, got shape {blocks.shape}")
        program = cls(max_length)
        program._words, program._word_array = None, words
        program._blocks, program._block_array = None, blocks
        program.n_reads = (
            int(np.count_nonzero(isa.decode_words(words).kind == isa.Kind.RD)) if n_reads is None else int(n_reads)
        )
        program.bus_direction = bus_direction
        program.ended = bool(len(words)) and int(words[-1]) == isa.End().encode()
        return program

    @property
    def words(self) -> list[int]:
        """The instruction words so far (a list; changing it changes the program)."""
        if self._words is None:
            self._words = self._word_array.tolist()  # type: ignore[union-attr]
            self._word_array = None
        return self._words

    @words.setter
    def words(self, value: list[int]) -> None:
        self._words, self._word_array = list(value), None

    @property
    def blocks(self) -> list[bytes]:
        """The write-data blocks so far, 64 bytes each (a list; changing it changes the program)."""
        if self._blocks is None:
            array = self._block_array
            self._blocks = [array[i].tobytes() for i in range(len(array))]  # type: ignore[arg-type]
            self._block_array = None
        return self._blocks

    @blocks.setter
    def blocks(self, value: list[bytes]) -> None:
        self._blocks, self._block_array = list(value), None

    def word_array(self) -> np.ndarray:
        """The words as an int64 array (a copy of the list, or the array the program holds)."""
        if self._word_array is not None:
            return self._word_array
        return np.array(self._words, dtype=np.int64)

    def block_array(self) -> np.ndarray:
        """The write-data blocks as an ``(n, 64)`` uint8 array."""
        if self._block_array is not None:
            return self._block_array
        if not self._blocks:
            return np.empty((0, BURST_BYTES), np.uint8)
        return np.frombuffer(b"".join(self._blocks), np.uint8).reshape(-1, BURST_BYTES)

    @property
    def n_blocks(self) -> int:
        """Number of write-data blocks."""
        return len(self._blocks) if self._blocks is not None else len(self._block_array)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._words) if self._words is not None else len(self._word_array)  # type: ignore[arg-type]

    @property
    def room(self) -> int:
        """Instructions that can still be added, keeping one slot for END."""
        return self.max_length - len(self) - (0 if self.ended else 1)

    def _push(self, words: Sequence[int], reads: int = 0) -> None:
        if self.ended:
            raise ProgramError("cannot add instructions after END")
        if len(words) > self.room:
            raise ProgramError(
                f"program would hold {len(self) + len(words) + 1} instructions with END; "
                f"the tester takes at most {self.max_length}"
            )
        self.words.extend(words)
        self.n_reads += reads

    def add(self, *instructions: isa.Instruction) -> "Program":
        """Append instructions (END closes the program); returns the program for chaining."""
        for ins in instructions:
            if isinstance(ins, isa.End):
                self.end()
                continue
            if isinstance(ins, isa.WBuf) and ins.index >= self.n_blocks:
                raise ProgramError(f"WBUF {ins.index} names a write-data block the program does not carry")
            self._push([ins.encode()], 1 if isinstance(ins, isa.Rd) else 0)
            if isinstance(ins, isa.SetBusDir):
                self.bus_direction = ins.direction
        return self

    def wait(self, cycles: int) -> "Program":
        """Wait ``cycles`` DRAM cycles (0 adds nothing; long waits are split into WAITs of <= 1023)."""
        self._push(wait_words(cycles))
        return self

    def set_bus(self, direction: isa.BusDirection, settle_cycles: int = 5) -> "Program":
        """Point the bus at ``direction`` (and wait ``settle_cycles``) unless it already does."""
        if self.bus_direction != direction:
            self.add(isa.SetBusDir(direction))
            self.wait(settle_cycles)
        return self

    def load_write_buffer(self, burst: bytes) -> "Program":
        """Append a write-data block and a WBUF naming it: the next WR writes these 64 bytes."""
        if len(burst) != BURST_BYTES:
            raise ProgramError(f"a write burst is {BURST_BYTES} bytes, got {len(burst)}")
        self._push((isa.WBuf(self.n_blocks).encode(),))
        self.blocks.append(bytes(burst))
        return self

    def end(self) -> "Program":
        """Append END (once)."""
        if not self.ended:
            self.words.append(isa.End().encode())
            self.ended = True
        return self

    def merge(self, part: "Program") -> "Program":
        """Append another (unended) program's instructions and write-data blocks."""
        if part.ended:
            raise ProgramError("cannot merge a program that already ends with END")
        offset = self.n_blocks
        words = part.words if not offset else [w + offset if w >> 28 == _WBUF_OPCODE else w for w in part.words]
        self._push(words, part.n_reads)
        self.blocks.extend(part.blocks)
        if part.bus_direction is not None:
            self.bus_direction = part.bus_direction
        return self

    @property
    def instructions(self) -> list[isa.Instruction]:
        """The program decoded back into instructions."""
        return [isa.decode(w) for w in self.words]

    def to_text(self) -> str:
        """Assembler text of the program (``softmc_host.asm`` syntax)."""
        return "".join(ins.to_text() + "\n" for ins in self.instructions)

    def payload(self) -> bytes:
        """The PROGRAM request payload (END is appended if missing)."""
        self.end()
        return encode_program(self.word_array(), self.block_array())

    @property
    def uses_write_extension(self) -> bool:
        """True if the program needs the bridge's write-data extension."""
        return self.n_blocks > 0


@functools.lru_cache(maxsize=4096)
def wait_words(cycles: int) -> tuple[int, ...]:
    """Words of a wait of ``cycles`` cycles: WAITs of at most 1023 (none for 0).

    Raises
    ------
    ProgramError
        For a non-integer or negative count, or a wait longer than a whole program of WAITs
        (8192 x 1023 cycles) could hold; such a wait is refused before any word is made.
    """
    if isinstance(cycles, bool) or not isinstance(cycles, (int, np.integer)):
        raise ProgramError(f"a wait is a whole number of cycles, got {type(cycles).__name__}")
    cycles = int(cycles)
    if cycles < 0:
        raise ProgramError(f"cannot wait a negative number of cycles ({cycles if cycles > -10**18 else 'huge'})")
    if cycles > MAX_WAIT_SLOTS_CYCLES:
        raise ProgramError(
            f"a wait of {cycles if cycles < 10**18 else 'more than 10**18'} cycles does not fit in one program "
            f"(at most {MAX_WAIT_SLOTS_CYCLES:,} cycles: {MAX_PROGRAM_SLOTS} WAITs of {isa.MAX_WAIT_CYCLES})"
        )
    full, rest = divmod(cycles, isa.MAX_WAIT_CYCLES)
    return (isa.Wait(isa.MAX_WAIT_CYCLES).encode(),) * full + ((isa.Wait(rest).encode(),) if rest else ())


def row_data(data: int | bytes | np.ndarray, row_bytes: int = ROW_BYTES) -> np.ndarray:
    """One row's bytes as a ``(row_bytes,)`` uint8 array: a byte value 0..255 repeated, or exactly ``row_bytes`` bytes.

    Raises
    ------
    ProgramError
        For a byte value out of range or data of another length.
    """
    if isinstance(data, (int, np.integer)) and not isinstance(data, bool):
        if not 0 <= int(data) <= 0xFF:
            raise ProgramError(f"data byte {data} out of range 0..255")
        return np.full(row_bytes, int(data), np.uint8)
    arr = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    arr = np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1)
    if arr.size != row_bytes:
        raise ProgramError(f"row data must be {row_bytes} bytes, got {arr.size}")
    return arr


def uniform_bursts(data: np.ndarray) -> np.ndarray:
    """Which 64-byte bursts of ``data`` repeat one byte (what a plain WR writes, without WBUF).

    ``data`` is uint8 whose last axis is a whole number of bursts (``(n, row_bytes)`` rows, or one
    row); the result has one bool per burst, shaped ``data.shape[:-1] + (bursts,)``.
    """
    data = np.ascontiguousarray(data, dtype=np.uint8)
    bursts = data.reshape(*data.shape[:-1], data.shape[-1] // BURST_BYTES, BURST_BYTES)
    # A burst repeats one byte if its 8 lanes of 8 bytes all equal that byte 8 times.
    lanes = bursts.view(np.uint64)
    repeated = bursts[..., 0].astype(np.uint64) * np.uint64(0x0101010101010101)
    differ = lanes[..., 0] ^ repeated
    for lane in range(1, BURST_BYTES // 8):
        differ |= lanes[..., lane] ^ repeated
    return differ == 0


def row_bursts(data: int | bytes | np.ndarray, row_bytes: int = ROW_BYTES) -> list[int | bytes]:
    """Split a row's data into per-burst items: an int where a burst repeats one byte, else 64 bytes.

    Parameters
    ----------
    data : int or bytes-like
        A byte value 0..255 (the whole row repeats it) or exactly ``row_bytes`` bytes.
    """
    n = row_bytes // BURST_BYTES
    if isinstance(data, (int, np.integer)) and not isinstance(data, bool):
        row_data(data, row_bytes)  # checks the value
        return [int(data)] * n
    bursts = row_data(data, row_bytes).reshape(n, BURST_BYTES)
    uniform = uniform_bursts(bursts)
    return [int(b[0]) if u else b.tobytes() for b, u in zip(bursts, uniform)]


def append_row_write(
    program: Program,
    bank: int,
    row: int,
    data: int | bytes | np.ndarray,
    timing: TimingCycles,
    params: Ddr3Params = Ddr3Params(),
    columns_per_burst: int = 8,
    row_bytes: int = ROW_BYTES,
) -> Program:
    """Append a whole-row write: ACT, the bursts (WBUF + WR where bytes differ), PRE.

    Bursts that repeat one byte use the stock WR; others load the write buffer
    first.  The bus is switched to WRITE if needed.
    """
    items = row_bursts(data, row_bytes)
    program.set_bus(isa.BusDirection.WRITE)
    words = [isa.Act(bank, row).encode(), *wait_words(timing.trcd - 1)]
    wr_base = isa.Wr(bank, 0, 0).encode()
    gap = wait_words(params.tccd_cycles - 1)
    first_block = len(program.blocks)
    blocks: list[bytes] = []
    t = timing.trcd  # cycle of the next command, counted from the ACT
    for index, item in enumerate(items):
        column = index * columns_per_burst
        if isinstance(item, int):
            words.append(isa.Wr(bank, column, item).encode())
        else:
            words.append(isa.WBuf(first_block + len(blocks)).encode())
            blocks.append(item)
            words.append(wr_base | column)
        words.extend(gap)
        t += params.tccd_cycles
    last_wr = t - params.tccd_cycles
    pre_time = max(timing.tras, last_wr + params.write_recovery_cycles(timing.tck_ns))
    words.extend(wait_words(pre_time - t))
    words.append(isa.Pre(bank).encode())
    words.extend(wait_words(timing.trp - 1))
    program._push(words)
    program.blocks.extend(blocks)
    return program


def append_row_read(
    program: Program,
    bank: int,
    row: int,
    timing: TimingCycles,
    params: Ddr3Params = Ddr3Params(),
    bursts: Iterable[int] | None = None,
    per_burst_activate: bool = False,
    columns_per_burst: int = 8,
) -> Program:
    """Append reads of a row's bursts (all 128 by default), in order.

    With ``per_burst_activate`` every burst gets its own ACT ... PRE, so each is
    read exactly tRCD after activation (what a tRCD characterization needs);
    otherwise the row is opened once and the bursts follow at tCCD.
    """
    burst_list = list(range(BURSTS_PER_ROW) if bursts is None else bursts)
    for burst in burst_list:
        if not 0 <= burst * columns_per_burst < isa.N_COLUMNS:
            raise ProgramError(f"burst {burst} is outside the row")
    program.set_bus(isa.BusDirection.READ)
    rtp = params.trtp_cycles(timing.tck_ns)
    rd_base = isa.Rd(bank, 0).encode()
    act = (isa.Act(bank, row).encode(), *wait_words(timing.trcd - 1))
    pre = isa.Pre(bank).encode()
    close_tail = (pre, *wait_words(timing.trp - 1))
    words: list[int] = []
    if per_burst_activate:
        # ACT at 0, RD at tRCD, PRE at max(tRAS, tRCD + tRTP), next ACT tRP later.
        pre_wait = wait_words(max(timing.tras, timing.trcd + rtp) - (timing.trcd + 1))
        for burst in burst_list:
            words.extend(act)
            words.append(rd_base | (burst * columns_per_burst))
            words.extend(pre_wait)
            words.extend(close_tail)
    elif burst_list:
        words.extend(act)
        gap = wait_words(params.tccd_cycles - 1)
        for i, burst in enumerate(burst_list):
            if i:
                words.extend(gap)
            words.append(rd_base | (burst * columns_per_burst))
        last_rd = timing.trcd + params.tccd_cycles * (len(burst_list) - 1)
        words.extend(wait_words(max(timing.tras, last_rd + rtp) - (last_rd + 1)))
        words.extend(close_tail)
    program._push(words, reads=len(burst_list))
    return program


def pack_rows(
    rows: Sequence[tuple[int, int]],
    append_one: Callable[[Program, int, int], Program],
    max_length: int = MAX_PROGRAM_SLOTS,
) -> Iterator[Program]:
    """Yield programs holding as many of ``rows`` as fit, each row built by ``append_one(program, bank, row)``.

    Each row is built on its own and moved into the current program if it fits
    (write-data blocks renumbered), else the program is closed and a new one begun.

    Raises
    ------
    ProgramError
        If a single row does not fit in an empty program.
    """
    program = Program(max_length)
    for bank, row in rows:
        part = Program(max_length)
        part.bus_direction = program.bus_direction
        append_one(part, bank, row)
        if len(part) > program.room:
            if not program.words:
                raise ProgramError(f"row ({bank}, {row}) alone needs {len(part) + 1} instructions; the limit is {max_length}")
            yield program.end()
            program = Program(max_length)
            part = Program(max_length)
            append_one(part, bank, row)
        program.merge(part)
    if program.words:
        yield program.end()


@functools.lru_cache(maxsize=None)
def _zero_word(kind: isa.Kind) -> int:
    """The word of ``kind`` with every field 0 (bank 0, row/column 0, data 0)."""
    return int(isa.encode_words([kind])[0])


@functools.lru_cache(maxsize=None)
def _bank_bits(kind: isa.Kind) -> np.ndarray:
    """The bits each bank number sets in a word of ``kind`` (isa's own encoding, OR-able)."""
    return isa.encode_words([kind] * isa.N_BANKS, np.arange(isa.N_BANKS)) ^ _zero_word(kind)


@functools.lru_cache(maxsize=None)
def _wr_data_bits() -> np.ndarray:
    """Bits of WR's data byte, for data 0..255 and then 0 for indices 256..511 (no data)."""
    bits = isa.encode_words([isa.Kind.WR] * 256, data=np.arange(256)) ^ _zero_word(isa.Kind.WR)
    return np.concatenate([bits, np.zeros(256, np.int64)])


def _pack(lengths: Sequence[int], prefix: int, max_length: int) -> list[tuple[int, int]]:
    """Split rows into programs as :func:`pack_rows` does: ``(first, end)`` row ranges.

    ``lengths`` are the rows' words without the bus switch, which every program starts with
    (``prefix`` words); each program keeps one slot for END.

    Raises
    ------
    ProgramError
        If a row does not fit in a program of its own (the message :meth:`Program._push` gives).
    """
    ranges: list[tuple[int, int]] = []
    first, used = 0, 0
    for index, length in enumerate(lengths):
        need = length if index > first else length + prefix
        if need > max_length - used - 1 and index > first:
            ranges.append((first, index))
            first, used, need = index, 0, length + prefix
        if need > max_length - used - 1:
            raise ProgramError(
                f"program would hold {need + 1} instructions with END; the tester takes at most {max_length}"
            )
        used += need
    if len(lengths) > first:
        ranges.append((first, len(lengths)))
    return ranges


def _check_rows(rows: Sequence[tuple[int, int]]) -> np.ndarray:
    """Rows as an ``(n, 2)`` int64 array, each checked as ACT checks it (IsaError naming the field)."""
    array = np.array(rows, dtype=np.int64).reshape(-1, 2) if len(rows) else np.empty((0, 2), np.int64)
    bad = np.flatnonzero(
        (array[:, 0] < 0) | (array[:, 0] >= isa.N_BANKS) | (array[:, 1] < 0) | (array[:, 1] >= isa.N_ROWS)
    )
    if bad.size:
        bank, row = rows[int(bad[0])]
        isa.Act(int(bank), int(row))  # raises, naming the field
    return array


def build_row_writes(
    rows: Sequence[tuple[int, int]],
    data: np.ndarray,
    timing: TimingCycles,
    params: Ddr3Params = Ddr3Params(),
    columns_per_burst: int = 8,
    max_length: int = MAX_PROGRAM_SLOTS,
) -> list[Program]:
    """The programs writing whole rows, built on arrays: the same words and blocks as
    ``pack_rows(rows, append_row_write(...))``, without Python work per burst.

    Parameters
    ----------
    rows : sequence of (bank, row)
        The rows, in order.
    data : numpy.ndarray
        ``(len(rows), row_bytes)`` uint8: each row's bytes.
    timing, params, columns_per_burst
        As for :func:`append_row_write`.
    max_length : int
        Most instructions per program.

    Returns
    -------
    list of Program
        Ended programs, as many rows each as fit.  Their write-data blocks may be views of
        ``data`` (not copies): change ``data`` only after the programs have run.

    Raises
    ------
    ProgramError
        If one row does not fit in a program, or a wait cannot be built.
    """
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.ndim != 2 or len(data) != len(rows) or data.shape[1] % BURST_BYTES:
        raise ProgramError(f"data for {len(rows)} rows must be a ({len(rows)}, row_bytes) array, got {data.shape}")
    addr = _check_rows(rows)
    n, n_bursts = len(rows), data.shape[1] // BURST_BYTES
    if n == 0:
        return []
    if n_bursts and (n_bursts - 1) * columns_per_burst >= isa.N_COLUMNS:
        isa.Wr(0, (n_bursts - 1) * columns_per_burst, 0)  # raises, naming the column
    bursts = data.reshape(n, n_bursts, BURST_BYTES)
    first = bursts[:, :, 0]
    uniform = uniform_bursts(data)
    # One row's layout: ACT, WAITs | per burst: [WBUF], WR, gap WAITs | WAITs, PRE, WAITs.
    pre = np.array(wait_words(timing.trcd - 1), np.int64)
    gap = np.array(wait_words(params.tccd_cycles - 1), np.int64)
    t = timing.trcd + n_bursts * params.tccd_cycles
    last_wr = t - params.tccd_cycles
    pre_time = max(timing.tras, last_wr + params.write_recovery_cycles(timing.tck_ns))
    post = np.array(wait_words(pre_time - t), np.int64)
    close = np.array(wait_words(timing.trp - 1), np.int64)
    per_burst = 2 + len(gap)
    width = 1 + len(pre) + n_bursts * per_burst + len(post) + 1 + len(close)
    words = np.empty((n, width), np.int64)
    keep = np.ones((n, width), bool)
    banks, row_numbers = addr[:, 0], addr[:, 1]
    words[:, 0] = _zero_word(isa.Kind.ACT) | _bank_bits(isa.Kind.ACT)[banks] | row_numbers
    words[:, 1 : 1 + len(pre)] = pre
    body = words[:, 1 + len(pre) : 1 + len(pre) + n_bursts * per_burst].reshape(n, n_bursts, per_burst)
    keep_body = keep[:, 1 + len(pre) : 1 + len(pre) + n_bursts * per_burst].reshape(n, n_bursts, per_burst)
    columns = np.arange(n_bursts, dtype=np.int64) * columns_per_burst
    # WR: bank and column, and the data byte where the burst repeats one (stock SoftMC).
    data_bits = _wr_data_bits()[first + ((~uniform).astype(np.intp) << 8)]
    data_bits |= (_zero_word(isa.Kind.WR) | _bank_bits(isa.Kind.WR)[banks])[:, None]
    data_bits |= columns
    body[:, :, 1] = data_bits
    body[:, :, 2:] = gap
    keep_body[:, :, 0] = ~uniform
    tail = 1 + len(pre) + n_bursts * per_burst
    words[:, tail : tail + len(post)] = post
    words[:, tail + len(post)] = _zero_word(isa.Kind.PRE) | _bank_bits(isa.Kind.PRE)[banks]
    words[:, tail + len(post) + 1 :] = close
    needs_buffer = ~uniform
    lengths = (width - n_bursts + np.count_nonzero(needs_buffer, axis=1)).tolist()
    prefix = np.array([isa.SetBusDir(isa.BusDirection.WRITE).encode(), *wait_words(5)], np.int64)
    wbuf_zero = isa.WBuf(0).encode()
    end = np.array([isa.End().encode()], np.int64)
    programs = []
    for lo, hi in _pack(lengths, len(prefix), max_length):
        loads = needs_buffer[lo:hi]
        n_loads = int(np.count_nonzero(loads))
        body[lo:hi, :, 0][loads] = wbuf_zero | np.arange(n_loads, dtype=np.int64)
        program_words = np.concatenate([prefix, words[lo:hi][keep[lo:hi]], end])
        # Every burst loads the buffer (random data): the blocks are the rows' bytes as they are.
        blocks = bursts[lo:hi].reshape(-1, BURST_BYTES) if n_loads == loads.size else bursts[lo:hi][loads]
        program = Program.from_arrays(
            program_words, blocks, n_reads=0, bus_direction=isa.BusDirection.WRITE, max_length=max_length,
        )
        programs.append(program)
    return programs


def build_row_reads(
    rows: Sequence[tuple[int, int]],
    timing: TimingCycles,
    params: Ddr3Params = Ddr3Params(),
    bursts: Iterable[int] | None = None,
    per_burst_activate: bool = False,
    columns_per_burst: int = 8,
    max_length: int = MAX_PROGRAM_SLOTS,
) -> list[Program]:
    """The programs reading rows, built on arrays: the same words as
    ``pack_rows(rows, append_row_read(...))``, without Python work per burst.

    Every row's words are one row's (built by :func:`append_row_read` for bank 0, row 0)
    with the bank and row bits set.

    Raises
    ------
    ProgramError
        As :func:`append_row_read` and :func:`pack_rows`.
    """
    addr = _check_rows(rows)
    if not len(rows):
        return []
    template = Program(1 << 30)  # no limit here: the packing below refuses a row too long, as pack_rows does
    template.bus_direction = isa.BusDirection.READ  # no bus switch: every program starts with one
    append_row_read(template, 0, 0, timing, params, bursts, per_burst_activate, columns_per_burst)
    row_words = template.word_array()
    kinds = isa.decode_words(row_words).kind
    banked = np.isin(kinds, [isa.Kind.ACT, isa.Kind.PRE, isa.Kind.RD])
    is_act = kinds == isa.Kind.ACT
    bank_bits = _bank_bits(isa.Kind.ACT)  # the same bank bits in ACT, PRE and RD
    n = len(rows)
    words = np.broadcast_to(row_words, (n, len(row_words))).copy()
    words |= np.where(banked, bank_bits[addr[:, 0]][:, None], 0)
    words |= np.where(is_act, addr[:, 1][:, None], 0)
    prefix = np.array([isa.SetBusDir(isa.BusDirection.READ).encode(), *wait_words(5)], np.int64)
    end = np.array([isa.End().encode()], np.int64)
    programs = []
    for lo, hi in _pack([len(row_words)] * n, len(prefix), max_length):
        program_words = np.concatenate([prefix, words[lo:hi].ravel(), end])
        programs.append(Program.from_arrays(
            program_words, None, n_reads=template.n_reads * (hi - lo), bus_direction=isa.BusDirection.READ,
            max_length=max_length,
        ))
    return programs


def hold_programs(cycles: int, max_length: int = MAX_PROGRAM_SLOTS) -> Iterator[Program]:
    """Yield programs of WAITs only that together wait ``cycles`` cycles (none for 0).

    Each program is full (``max_length - 1`` WAITs of 1023 cycles and END) except the
    last, which holds the rest, so a long hold takes as few programs as the tester allows.

    Raises
    ------
    ProgramError
        For a non-integer or negative count, or a ``max_length`` below 2.
    """
    if isinstance(cycles, bool) or not isinstance(cycles, (int, np.integer)):
        raise ProgramError(f"a hold is a whole number of cycles, got {type(cycles).__name__}")
    if int(cycles) < 0:
        raise ProgramError("cannot hold a negative number of cycles")
    if max_length < 2:
        raise ProgramError(f"a hold needs programs of at least 2 instructions, the limit is {max_length}")
    per_program = (max_length - 1) * isa.MAX_WAIT_CYCLES
    left = int(cycles)
    while left > 0:
        chunk = min(left, per_program)
        program = Program(max_length)
        program.wait(chunk)
        yield program.end()
        left -= chunk


def refresh_interval_program(trefi_ns: float | None, max_length: int = MAX_PROGRAM_SLOTS) -> tuple[Program, int]:
    """A program setting the tester's auto-refresh interval (SET_TREFI), and the value it sets.

    Parameters
    ----------
    trefi_ns : float or None
        Interval between two REF commands in ns, rounded to the nearest 200 ns tick;
        None or 0 turns auto-refresh off.

    Returns
    -------
    (Program, int)
        The ended program and the SET_TREFI value (ticks of 200 ns; 0: off).

    Raises
    ------
    ProgramError
        For a value that is not a finite number, is negative, rounds to 0 ticks (below
        100 ns) or exceeds the 28-bit field (2**28 - 1 ticks, about 53.7 s).
    """
    if trefi_ns is None:
        ticks = 0
    else:
        if isinstance(trefi_ns, bool) or not isinstance(trefi_ns, (int, float, np.integer, np.floating)):
            raise ProgramError(f"tREFI must be a number of ns, got {type(trefi_ns).__name__}")
        value = float(trefi_ns)
        if value != value or value in (float("inf"), float("-inf")) or value < 0:
            raise ProgramError(f"tREFI must be a finite, non-negative number of ns, got {value!r}")
        ticks = int(round(value / TREFI_TICK_NS))
        if value > 0 and ticks == 0:
            raise ProgramError(f"tREFI {value:g} ns is below one SET_TREFI tick ({TREFI_TICK_NS:g} ns); 0 turns it off")
        if ticks > isa.MAX_REG_VALUE:
            raise ProgramError(
                f"tREFI {value:g} ns exceeds the SET_TREFI field ({isa.MAX_REG_VALUE} ticks of "
                f"{TREFI_TICK_NS:g} ns = {MAX_TREFI_NS / 1e6:g} ms)"
            )
    program = Program(max_length)
    program.add(isa.SetTrefi(ticks))
    return program.end(), ticks


def idle_state_program(trp_cycles: int, max_length: int = MAX_PROGRAM_SLOTS) -> Program:
    """A program leaving the tester as a firmware RESET does: rows closed, auto-refresh off, bus READ.

    What the host runs on a stock SoftMC tester, whose firmware has no RESET request: PRECHARGE
    all banks, wait ``trp_cycles``, SET_TREFI 0, SET_BUS_DIR READ and the usual 5-cycle settle
    (the bus state is unknown, so the switch is always issued).

    Raises
    ------
    ProgramError
        For a ``trp_cycles`` that is not a positive whole number.
    """
    if isinstance(trp_cycles, bool) or not isinstance(trp_cycles, (int, np.integer)) or int(trp_cycles) < 1:
        raise ProgramError(f"tRP is a positive whole number of cycles, got {trp_cycles!r}")
    program = Program(max_length)
    program.add(isa.PreAll())
    program.wait(int(trp_cycles))
    program.add(isa.SetTrefi(0))
    program.add(isa.SetBusDir(isa.BusDirection.READ))
    program.wait(5)
    return program.end()

"""An emulated DDR3 DIMM: compact, bounded row storage, burst ordering and access events.

Geometry of the SoftMC ML605 release: 8 banks x 32768 rows x 1024 columns on a
64-bit bus, so a row is 8 KiB (128 bursts of 64 bytes).  Byte ``8*c + k`` of a
row is column ``c`` of x8 chip ``k``.

Only written rows are stored, so memory grows with the data written, not with
the 2 GiB of the module.  A row never written reads as deterministic power-up
content derived from the DIMM's seed, bank and row.  Written rows live in a
:class:`RowStore`: packed 8 KiB slots in RAM (up to :data:`DEFAULT_MAX_STORE_MIB`
by default) or in a temporary file mapped into memory, so that a whole DIMM can
be written on a small machine.  A write that does not fit raises
:class:`StoreFullError` with a one-line reason.

The firmware reports every access to the DIMM with its effective timing (see
:class:`RowAccess`); error physics attaches there.
"""

from __future__ import annotations

import errno
import mmap
import os
import tempfile
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from firmware_bridge.protocol import BURST_BYTES
from softmc_host.geometry import ML605_GEOMETRY, Geometry  # re-exported: the one definition
from softmc_host.timing import REFRESH_COMMANDS_PER_WINDOW  # re-exported

__all__ = [
    "Geometry",
    "ML605_GEOMETRY",
    "burst_order",
    "RowAccess",
    "EmulatedDimm",
    "RowStore",
    "StoreFullError",
    "DEFAULT_MAX_STORE_MIB",
    "RefreshClock",
    "REFRESH_COMMANDS_PER_WINDOW",
]

DEFAULT_MAX_STORE_MIB = 1024
"""Default bound of an in-RAM row store, in MiB (131072 rows of 8 KiB: half the ML605 DIMM)."""

_MIB = 1 << 20


class StoreFullError(RuntimeError):
    """A written row cannot be stored: the row store's configured limit (or its disk) is full."""


def burst_order(column: int, write: bool = False) -> list[int]:
    """Column order of a DDR3 BL8 burst in sequential mode.

    A read starting at column ``c`` returns the 8 columns of its aligned group in
    the order of the DDR3 burst table (``c = 5`` gives 5, 6, 7, 4, 1, 2, 3, 0);
    a write uses only A2 of the start column (A1:A0 are taken as 0).

    Parameters
    ----------
    column : int
        Start column from the RD/WR instruction.
    write : bool
        True for a write burst.

    Returns
    -------
    list of int
        The 8 columns in transfer order.
    """
    base = column & ~7
    low2 = 0 if write else column & 3
    a2 = (column >> 2) & 1
    return [base | ((a2 ^ (i >> 2)) << 2) | ((low2 + i) & 3) for i in range(8)]


def _own(dimm: object, name: str, base: object) -> bool:
    """Whether ``dimm``'s per-burst method ``name`` is ``base`` itself: not overridden by a
    subclass nor replaced on the instance (a batched fast path is then exact)."""
    return getattr(getattr(dimm, name), "__func__", None) is base


class RowStore:
    """The written rows of an emulated DIMM, packed in fixed 8 KiB slots, in RAM or in a file.

    A flat table maps every (bank, row) of the geometry to a slot number (4 bytes
    per row of the geometry, allocated at the first write: 1 MiB for the ML605
    DIMM); slots live in chunks of ``chunk_rows`` rows that are allocated as rows
    are written.  A stored row therefore costs its ``row_bytes`` plus at most one
    partly filled chunk in all, instead of a Python object per row.

    Parameters
    ----------
    geometry : Geometry
        Banks, rows and row size of the DIMM.
    max_rows : int, optional
        Most rows the store may hold.
    max_mib : float, optional
        Most MiB of row data the store may hold (``floor(max_mib * 2**20 / row_bytes)`` rows).
        With both limits the smaller one holds.  With neither, an in-RAM store holds
        :data:`DEFAULT_MAX_STORE_MIB` MiB and a file-backed store the whole DIMM.
    directory : str, optional
        Keep the rows in a temporary file in this directory, mapped into memory,
        instead of in RAM.  The file is unlinked at once (nothing is left behind,
        even after a crash); disk space is reserved chunk by chunk as rows are
        written, so a full disk gives :class:`StoreFullError`, never a crash.
    chunk_rows : int
        Rows per allocation step (a power of two; 256 rows = 2 MiB for the ML605).

    Raises
    ------
    ValueError
        If a limit is negative or not finite, or ``chunk_rows`` is not a power of two.
    OSError
        If the file cannot be created in ``directory``.
    """

    def __init__(
        self,
        geometry: Geometry,
        *,
        max_rows: int | None = None,
        max_mib: float | None = None,
        directory: str | None = None,
        chunk_rows: int = 256,
    ) -> None:
        if chunk_rows < 1 or chunk_rows & (chunk_rows - 1):
            raise ValueError(f"chunk_rows must be a power of two, got {chunk_rows}")
        total = geometry.banks * geometry.rows
        limits = []
        if max_rows is not None:
            if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows < 0:
                raise ValueError(f"max_rows must be a non-negative integer, got {max_rows!r}")
            limits.append(int(max_rows))
        if max_mib is not None:
            value = float(max_mib)
            if not (value >= 0 and value != float("inf")):  # also refuses NaN
                raise ValueError(f"max_mib must be a finite non-negative number, got {max_mib!r}")
            limits.append(min(total, int(value * _MIB) // geometry.row_bytes))
        if not limits and directory is None:
            limits.append(DEFAULT_MAX_STORE_MIB * _MIB // geometry.row_bytes)
        self.geometry = geometry
        self.capacity_rows = min([total, *limits])  # most rows this store holds
        self.limited = self.capacity_rows < total
        self.directory = directory
        self._row_bytes = geometry.row_bytes
        self._rows_per_bank = geometry.rows
        self._shift = chunk_rows.bit_length() - 1
        self._mask = chunk_rows - 1
        self._chunk_rows = chunk_rows
        self._slots: np.ndarray | None = None  # slot of each (bank, row), -1 if not stored
        self._count = 0  # rows stored: slots 0..count-1
        self._codes: list[np.ndarray] = []  # per chunk, bank * rows + row of each slot (int32, no object per row)
        self._chunks: list[np.ndarray] = []
        self._file = None
        self._map: mmap.mmap | None = None
        self._pool: np.ndarray | None = None
        if directory is not None:
            self._file = tempfile.TemporaryFile(dir=directory, prefix="emulated-dimm-", suffix=".rows")
            size = max(self.capacity_rows, 1) * self._row_bytes
            # A sparse file: only the chunks reserved below take disk space.
            os.ftruncate(self._file.fileno(), size)
            self._map = mmap.mmap(self._file.fileno(), size)
            self._pool = np.frombuffer(self._map, dtype=np.uint8).reshape(-1, self._row_bytes)

    # Description ---------------------------------------------------------------------------

    @property
    def in_ram(self) -> bool:
        """True when rows are kept in RAM, False when in a file."""
        return self.directory is None

    @property
    def nbytes(self) -> int:
        """Bytes of row slots allocated so far (RAM or disk)."""
        return sum(chunk.nbytes for chunk in self._chunks)

    def describe(self) -> str:
        """One line: where rows are kept and the limit, e.g. ``RAM, up to 131072 rows (1024 MiB)``."""
        where = "RAM" if self.in_ram else f"a temporary file in {self.directory}"
        return f"{where}, up to {self.capacity_rows} rows ({self.capacity_rows * self._row_bytes / _MIB:g} MiB)"

    # Mapping interface (what the DIMM and its subclasses use) --------------------------------

    def __len__(self) -> int:
        return self._count

    def _slot(self, bank: int, row: int) -> int:
        if self._slots is None or not (0 <= bank < self.geometry.banks and 0 <= row < self._rows_per_bank):
            return -1
        return self._slots.item(bank * self._rows_per_bank + row)

    def __contains__(self, key: object) -> bool:
        try:
            bank, row = key  # type: ignore[misc]
            return self._slot(int(bank), int(row)) >= 0
        except (TypeError, ValueError):
            return False

    def get(self, key: tuple[int, int], default: np.ndarray | None = None) -> np.ndarray | None:
        """The stored row ``key = (bank, row)`` (a writable view into the store), or ``default``."""
        slot = self._slot(*key)
        if slot < 0:
            return default
        return self._chunks[slot >> self._shift][slot & self._mask]

    def __getitem__(self, key: tuple[int, int]) -> np.ndarray:
        data = self.get(key)
        if data is None:
            raise KeyError(key)
        return data

    def __setitem__(self, key: tuple[int, int], data: np.ndarray) -> None:
        """Store a copy of ``data`` (``row_bytes`` bytes) as row ``key``."""
        target = self.get(key)
        if target is None:
            target = self.allocate(*key)
        target[:] = np.asarray(data, dtype=np.uint8).reshape(-1)

    def keys(self) -> Iterator[tuple[int, int]]:
        """The stored (bank, row) pairs, in the order they were first written."""
        if not self._codes:
            return iter([])
        codes = np.concatenate(self._codes)[: self._count].tolist()
        return iter([divmod(c, self._rows_per_bank) for c in codes])

    __iter__ = keys

    def items(self) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
        """(bank, row) and a view of its data, for every stored row."""
        for key in self.keys():
            yield key, self[key]

    # Allocation ----------------------------------------------------------------------------

    def room(self) -> int:
        """Rows that can still be stored."""
        return self.capacity_rows - self._count

    def problem(self, rows: Iterable[tuple[int, int]]) -> str | None:
        """Why ``rows`` (the rows a program writes) cannot all be stored, or None if they fit.

        Rows already stored need no room; each other distinct row needs one slot.
        The chunks those slots fall in are reserved now (disk space, for a file-backed
        store), so that storing the rows afterwards cannot fail; a disk that is full
        is reported here like a full store.
        """
        rows = rows if isinstance(rows, (set, frozenset, list, tuple)) else list(rows)
        stored = self._count
        if stored + len(rows) <= len(self._chunks) << self._shift and len(rows) <= self.room():
            return None  # fits, in chunks already there, even if every row is new
        new = {(int(b), int(r)) for b, r in rows if self._slot(int(b), int(r)) < 0}
        if not new:
            return None
        bank, row = min(new)
        if len(new) > self.room():
            return self._full_message(bank, row, len(new))
        last_chunk = (stored + len(new) - 1) >> self._shift
        try:
            while len(self._chunks) <= last_chunk:
                self._new_chunk(bank, row)
        except StoreFullError as exc:
            return str(exc)
        return None

    def _full_message(self, bank: int, row: int, wanted: int = 1) -> str:
        stored = self._count
        rows = f"{wanted} new rows" if wanted > 1 else f"bank {bank} row {row}"
        hint = "raise --max-stored-rows/--max-store-mib" if self.limited else "the store holds the whole DIMM"
        if self.in_ram:
            hint += " or keep rows on disk with --store DIR"
        return (
            f"emulated DIMM row store full: {stored} of {self.capacity_rows} rows "
            f"({self.capacity_rows * self._row_bytes / _MIB:g} MiB, {'RAM' if self.in_ram else 'file'}) stored, "
            f"cannot store {rows}; {hint}"
        )

    def allocate(self, bank: int, row: int) -> np.ndarray:
        """Give row (bank, row) a slot and return it (its content is undefined until written).

        Raises
        ------
        StoreFullError
            If the store holds ``capacity_rows`` rows, or its file cannot grow (disk full).
        """
        slot = self._slot(bank, row)
        if slot >= 0:
            return self._chunks[slot >> self._shift][slot & self._mask]
        g = self.geometry
        if not (0 <= bank < g.banks and 0 <= row < g.rows):
            raise IndexError(f"bank {bank} row {row} outside the DIMM ({g.banks} banks x {g.rows} rows)")
        slot = self._count
        if slot >= self.capacity_rows:
            raise StoreFullError(self._full_message(bank, row))
        index = slot >> self._shift
        if index == len(self._chunks):  # (chunks may already be reserved by problem())
            self._new_chunk(bank, row)
        if self._slots is None:
            self._slots = np.full(g.banks * g.rows, -1, dtype=np.int32)
        self._slots[bank * self._rows_per_bank + row] = slot
        self._codes[index][slot & self._mask] = bank * self._rows_per_bank + row
        self._count = slot + 1
        return self._chunks[index][slot & self._mask]

    def _new_chunk(self, bank: int, row: int) -> None:
        """Add the next chunk of slots (reserving its disk space in a file-backed store)."""
        first = len(self._chunks) * self._chunk_rows
        n = min(self._chunk_rows, self.capacity_rows - first)
        if self._pool is None:
            chunk = np.empty((n, self._row_bytes), dtype=np.uint8)
        else:
            chunk = self._file_chunk(first, n, bank, row)
        self._codes.append(np.empty(n, dtype=np.int32))
        self._chunks.append(chunk)

    def _file_chunk(self, first: int, n: int, bank: int, row: int) -> np.ndarray:
        assert self._file is not None and self._pool is not None
        offset, length = first * self._row_bytes, n * self._row_bytes
        try:
            _reserve(self._file.fileno(), offset, length)
        except OSError as exc:
            raise StoreFullError(
                f"emulated DIMM row store cannot grow its file in {self.directory} "
                f"({exc.strerror or exc}): cannot store bank {bank} row {row} ({self._count} rows stored)"
            ) from None
        return self._pool[first : first + n]

    def close(self) -> None:
        """Release the file (a file-backed store); the store is empty and unusable afterwards."""
        self._chunks = []
        self._pool = None
        self._codes = []
        self._count = 0
        self._slots = None
        self.capacity_rows = 0
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a caller still holds a row view; the map goes with it
                pass
            self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _reserve(fd: int, offset: int, length: int) -> None:
    """Allocate disk blocks for a file range, so writing it through a memory map cannot fail (SIGBUS)."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, offset, length)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOSYS", -1)):
                raise
    zeros = bytes(min(length, _MIB))
    done = 0
    while done < length:
        done += os.pwrite(fd, zeros[: length - done], offset + done)





class RefreshClock:
    """When each row of a DIMM was last restored, on the tester's virtual clock.

    A row is restored when it is activated (the sense amplifiers write its charge
    back) and when a REF reaches it.  DDR3 refreshes rows in counter order:
    each REF refreshes the next ``rows_per_ref`` rows of every bank, and 8192 REFs
    cover the device.  Auto-refresh (SoftMC's SET_TREFI) is kept as *segments*
    (start, period, counter) and worked out analytically, so a long hold with
    auto-refresh costs nothing per REF.  For every row the clock keeps the
    longest time it went unrestored since it was last activated (``max_gap``),
    which is what retention physics needs.

    Times are in ns; every row counts as restored at time 0 (power-up).
    """

    def __init__(self, geometry: Geometry) -> None:
        self.banks = geometry.banks
        self.rows = geometry.rows
        self.rows_per_ref = -(-geometry.rows // REFRESH_COMMANDS_PER_WINDOW)
        self.groups = -(-geometry.rows // self.rows_per_ref)
        self.counter = 0
        self.restored_ns = np.zeros((geometry.banks, geometry.rows))
        self.max_gap_ns = np.zeros((geometry.banks, geometry.rows))
        self._segment: tuple[float, float, int] | None = None  # (start_ns, trefi_ns, counter at start)
        self.maintenance_row = (0, 0)  # SoftMC reads bank 0 row 0 every 1 us between programs

    @property
    def auto_refresh_ns(self) -> float:
        """The auto-refresh interval in force (0 = off)."""
        return 0.0 if self._segment is None else self._segment[1]

    def _apply_segment(self, rows: np.ndarray | slice, until_ns: float) -> None:
        """Fold the open auto-refresh segment's REFs up to ``until_ns`` into ``rows`` (all banks)."""
        if self._segment is None:
            return
        start, period, counter0 = self._segment
        index = np.arange(self.rows)[rows]
        restored = self.restored_ns[:, index]
        window = self.groups * period
        first = start + (((index // self.rows_per_ref) - counter0) % self.groups + 1) * period  # per row
        # The first REF of each row after its last restore, and the last one before until_ns.
        after = first + np.ceil(np.maximum(restored - first, 0.0) / window) * window
        after = np.where(after <= restored, after + window, after)
        count = np.floor((until_ns - after) / window) + 1
        hit = count >= 1
        if not hit.any():
            return
        last = after + (count - 1) * window
        gap = np.where(hit, after - restored, 0.0)
        gap = np.where(count >= 2, np.maximum(gap, window), gap)
        self.max_gap_ns[:, index] = np.maximum(self.max_gap_ns[:, index], gap)
        self.restored_ns[:, index] = np.where(hit, last, restored)

    def set_auto_refresh(self, now_ns: float, trefi_ns: float) -> None:
        """Auto-refresh every ``trefi_ns`` from ``now_ns`` on (0 = off)."""
        if self._segment is not None:
            self._apply_segment(slice(None), now_ns)
            start, period, counter0 = self._segment
            self.counter = (counter0 + int((now_ns - start) // period)) % self.groups
        self._segment = (float(now_ns), float(trefi_ns), self.counter) if trefi_ns > 0 else None

    def refresh(self, now_ns: float) -> None:
        """One REF command: the next group of rows in every bank is restored."""
        if self._segment is not None:  # an explicit REF during auto-refresh: settle first
            self.set_auto_refresh(now_ns, self._segment[1])
        group = self.counter % self.groups
        rows = slice(group * self.rows_per_ref, min(self.rows, (group + 1) * self.rows_per_ref))
        gap = now_ns - self.restored_ns[:, rows]
        self.max_gap_ns[:, rows] = np.maximum(self.max_gap_ns[:, rows], gap)
        self.restored_ns[:, rows] = now_ns
        self.counter = (self.counter + 1) % self.groups

    def unrestored_ns(self, bank: int, row: int, now_ns: float) -> float:
        """The longest time the row went without restore since it was last activated."""
        if (bank, row) == self.maintenance_row:
            return 0.0
        if self._segment is not None:
            self._apply_segment(slice(row, row + 1), now_ns)
        return max(float(self.max_gap_ns[bank, row]), now_ns - float(self.restored_ns[bank, row]))

    def restore(self, bank: int, row: int, now_ns: float) -> None:
        """The row was activated at ``now_ns``: its charge is restored and its history starts again."""
        self.restored_ns[bank, row] = now_ns
        self.max_gap_ns[bank, row] = 0.0


@dataclass
class RowAccess:
    """One open row: reads and writes go through it, with their effective timing.

    Attributes
    ----------
    bank, row : int
        The activated row.
    trp_cycles : int
        Cycles from the bank's last PRE to this ACT (tRP as the row saw it).
    data : numpy.ndarray
        The row's bytes (uint8, ``row_bytes`` long): a view into the DIMM's store
        once the row is stored, else its power-up content; writes go into it.
    stored : bool
        True once ``data`` is the row's slot in the store.  An access made with
        False (a never-written row, or a subclass that did not say) is moved into
        the store at its first write.
    """

    dimm: "EmulatedDimm"
    bank: int
    row: int
    trp_cycles: int
    data: np.ndarray
    stored: bool = False

    def read(self, column: int, trcd_cycles: int) -> bytes:
        """Return the 64-byte burst starting at ``column``, ``trcd_cycles`` after the ACT."""
        return self.dimm.read_burst(self, column, trcd_cycles)

    def write(self, column: int, burst: bytes, trcd_cycles: int) -> None:
        """Write a 64-byte burst starting at ``column``."""
        self.dimm.write_burst(self, column, burst, trcd_cycles)

    def close(self, tras_cycles: int) -> None:
        """Precharge the row ``tras_cycles`` after its ACT."""
        self.dimm.precharge(self, tras_cycles)


class EmulatedDimm:
    """A fault-free emulated DIMM: data written reads back exactly at any timing.

    Subclasses add error physics by overriding :meth:`read_burst` and the other
    access events.

    Parameters
    ----------
    geometry : Geometry
        Banks, rows and columns.
    seed : int
        Identity of this DIMM: selects its power-up content (and, with physics, its weak cells).
    store : RowStore, optional
        Where written rows are kept; by default an in-RAM store bounded to
        :data:`DEFAULT_MAX_STORE_MIB` MiB.  :meth:`use_store` replaces it later.
    """

    def __init__(self, geometry: Geometry = ML605_GEOMETRY, seed: int = 0, store: RowStore | None = None) -> None:
        self.geometry = geometry
        self.seed = int(seed)
        # Named and used like a dict of (bank, row) -> row data, which subclasses rely on.
        self._rows: RowStore = store if store is not None else RowStore(geometry)
        # Index of every byte of a burst, per start column, for reads and writes: one row of
        # ``_read_matrix`` per start column (the batched paths gather with it in one index);
        # ``_read_index[c]`` is a view of its row ``c``.
        g = geometry
        self._read_matrix = np.stack([self._burst_bytes_index(c, False) for c in range(g.columns)])
        self._write_matrix = np.stack([self._burst_bytes_index(c, True) for c in range(g.columns)])
        self._read_index = list(self._read_matrix)
        self._write_index = list(self._write_matrix)
        self._row_columns = np.arange(0, g.columns, 8)  # the start columns of a whole-row read
        self._row_columns_bytes = self._row_columns.tobytes()
        # Whether a whole-row write, burst by burst in column order, lays the bursts down as they
        # come (then it is one copy, not a scatter).
        self._row_write_in_order = bool(
            np.array_equal(self._write_matrix[self._row_columns].ravel(), np.arange(g.columns * g.bus_bytes))
        )
        #: The tester's clock in ns, set by the firmware before every call into the DIMM.
        self.now_ns = 0.0
        self._clock: RefreshClock | None = None  # allocated when first needed

    @property
    def refresh_clock(self) -> RefreshClock:
        """When each row was last restored (allocated at first use: 16 bytes per row)."""
        if self._clock is None:
            self._clock = RefreshClock(self.geometry)
        return self._clock

    def refresh(self, now_ns: float) -> None:
        """One REF command at ``now_ns``: the next group of rows is refreshed (DDR3 counter order)."""
        self.now_ns = now_ns
        self.refresh_clock.refresh(now_ns)

    def set_auto_refresh(self, now_ns: float, trefi_ns: float) -> None:
        """Auto-refresh every ``trefi_ns`` from ``now_ns`` on (0 turns it off), as SET_TREFI does."""
        self.now_ns = now_ns
        if self._clock is None and trefi_ns <= 0:
            return
        self.refresh_clock.set_auto_refresh(now_ns, trefi_ns)

    def _burst_bytes_index(self, column: int, write: bool) -> np.ndarray:
        cols = np.array(burst_order(column, write), dtype=np.intp)
        return (cols[:, None] * self.geometry.bus_bytes + np.arange(self.geometry.bus_bytes)).ravel()

    @property
    def stored_rows(self) -> int:
        """Number of rows held in the store (written at least once)."""
        return len(self._rows)

    @property
    def store(self) -> RowStore:
        """The store of written rows."""
        return self._rows

    def use_store(self, store: RowStore) -> None:
        """Keep written rows in ``store`` from now on (copying any rows already stored).

        Call it while no row is open (before the firmware runs programs): an open
        row's access keeps pointing into the old store.

        Raises
        ------
        ValueError
            If ``store`` is for another geometry.
        StoreFullError
            If the rows already stored do not fit in ``store``.
        """
        if store.geometry != self.geometry:
            raise ValueError(f"row store geometry {store.geometry} differs from the DIMM's {self.geometry}")
        if store is self._rows:
            return
        for key, data in self._rows.items():
            store[key] = data
        old, self._rows = self._rows, store
        old.close()

    def store_problem(self, rows: Iterable[tuple[int, int]]) -> str | None:
        """Why the rows a program would write cannot all be stored (one line), or None.

        Lets a firmware refuse such a program before it runs, so that it changes nothing.
        """
        return self._rows.problem(rows)

    def power_up_content(self, bank: int, row: int) -> np.ndarray:
        """Deterministic content of a row that was never written.

        The bytes of ``numpy.random.default_rng([seed, 0x9E37, bank, row]).integers(0, 256,
        row_bytes, dtype=uint8)``, taken straight from the PCG64 stream (uniform bytes are
        its 64-bit words, least significant byte first: the same bytes, at half the cost).
        """
        key = [self.seed, 0x9E37, bank, row]
        size = self.geometry.row_bytes
        if size % 8:
            return np.random.default_rng(key).integers(0, 256, size, dtype=np.uint8)
        return np.random.PCG64(key).random_raw(size // 8).astype("<u8", copy=False).view(np.uint8)

    def check_address(self, bank: int, row: int) -> None:
        """Raise IndexError if ``bank``/``row`` is outside the geometry."""
        if not 0 <= bank < self.geometry.banks:
            raise IndexError(f"bank {bank} outside 0..{self.geometry.banks - 1}")
        if not 0 <= row < self.geometry.rows:
            raise IndexError(f"row {row} outside 0..{self.geometry.rows - 1}")

    def peek_row(self, bank: int, row: int) -> np.ndarray:
        """A copy of a row's true content without storing anything (for tests and debugging)."""
        data = self._rows.get((bank, row))
        return (data if data is not None else self.power_up_content(bank, row)).copy()

    def power_problem(self) -> str | None:
        """Why the DIMM cannot be accessed now (e.g. its supply is off), or None."""
        return None

    # Access events ---------------------------------------------------------------------------

    def activate(self, bank: int, row: int, trp_cycles: int) -> RowAccess:
        """Open a row ``trp_cycles`` after the bank's last precharge.

        The row is stored only once it is written; an ACT followed by reads of a
        never-written row reads power-up content without storing it.
        """
        data = self._rows.get((bank, row))
        if data is None:
            return RowAccess(self, bank, row, trp_cycles, self.power_up_content(bank, row))
        return RowAccess(self, bank, row, trp_cycles, data, True)

    def read_burst(self, access: RowAccess, column: int, trcd_cycles: int) -> bytes:
        """Bytes of one read burst (no errors in the fault-free DIMM)."""
        return access.data[self._read_index[column]].tobytes()

    def write_burst(self, access: RowAccess, column: int, burst: bytes, trcd_cycles: int) -> None:
        """Store one write burst.

        Raises
        ------
        StoreFullError
            If this is the first write to a row and the store has no room for it;
            the row then stays unwritten.
        """
        if not access.stored:
            self._store_access(access)
        access.data[self._write_index[column]] = np.frombuffer(burst, dtype=np.uint8)

    def read_bursts(
        self, access: RowAccess, columns: np.ndarray, trcd_cycles: np.ndarray, now_ns: np.ndarray
    ) -> np.ndarray:
        """Several read bursts of one open row, in program order: ``(n * 64,)`` uint8.

        The same bytes as :meth:`read_burst` called once per burst with :attr:`now_ns` set to
        ``now_ns[i]`` first (the firmware's batched path), and :attr:`now_ns` is left at
        ``now_ns[-1]``.  The fault-free DIMM gathers the whole run with one index; a subclass
        that overrides :meth:`read_burst` (on the class or the instance) and not this method
        gets the per-burst calls, so it keeps its behaviour.  Overrides with physics must give
        the same bytes and effects as their per-burst path.

        Parameters
        ----------
        access : RowAccess
            The open row.
        columns, trcd_cycles : numpy.ndarray
            Per burst: the starting column and the cycles since the row's ACT (int64).
        now_ns : numpy.ndarray
            Per burst: the time of the read in ns (float64).
        """
        if not _own(self, "read_burst", EmulatedDimm.read_burst):
            return self._read_bursts_each(access, columns, trcd_cycles, now_ns)
        if len(columns):
            self.now_ns = float(now_ns[-1])
        return self._gather(access.data, columns)

    def _whole_row(self, columns: np.ndarray) -> bool:
        """Whether ``columns`` are the start columns of every burst of a row, in column order."""
        return len(columns) == len(self._row_columns) and (
            columns.tobytes() == self._row_columns_bytes
            if columns.dtype == self._row_columns.dtype
            else bool(np.array_equal(columns, self._row_columns))
        )

    def _gather(self, data: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """The bytes of read bursts starting at ``columns`` of a row's ``data``, in order (a copy)."""
        if self._whole_row(columns):
            return data.copy()  # the whole row, burst by burst in column order: the row as it is
        return data[self._read_matrix[columns]].reshape(-1)

    def _read_bursts_each(
        self, access: RowAccess, columns: np.ndarray, trcd_cycles: np.ndarray, now_ns: np.ndarray
    ) -> np.ndarray:
        """:meth:`read_bursts` as one :meth:`read_burst` call per burst (the reference path)."""
        out = np.empty((len(columns), BURST_BYTES), np.uint8)
        for i, (column, trcd, t_ns) in enumerate(zip(columns.tolist(), trcd_cycles.tolist(), now_ns.tolist())):
            self.now_ns = t_ns
            out[i] = np.frombuffer(self.read_burst(access, column, trcd), np.uint8)
        return out.reshape(-1)

    def write_bursts(
        self, access: RowAccess, columns: np.ndarray, bursts: np.ndarray, trcd_cycles: np.ndarray,
        now_ns: np.ndarray,
    ) -> None:
        """Several write bursts into one open row, in program order (``bursts``: ``(n, 64)`` uint8).

        The same effect as :meth:`write_burst` called once per burst with :attr:`now_ns` set to
        ``now_ns[i]`` first (a later burst to the same columns wins); see :meth:`read_bursts`
        for the fast path and the contract on overrides.

        Raises
        ------
        StoreFullError
            As :meth:`write_burst` (the row then stays unwritten).
        """
        if not _own(self, "write_burst", EmulatedDimm.write_burst):
            self._write_bursts_each(access, columns, bursts, trcd_cycles, now_ns)
            return
        self._scatter_bursts(access, columns, bursts, now_ns)

    def _write_bursts_each(
        self, access: RowAccess, columns: np.ndarray, bursts: np.ndarray, trcd_cycles: np.ndarray,
        now_ns: np.ndarray,
    ) -> None:
        """:meth:`write_bursts` as one :meth:`write_burst` call per burst (the reference path)."""
        for i, (column, trcd, t_ns) in enumerate(zip(columns.tolist(), trcd_cycles.tolist(), now_ns.tolist())):
            self.now_ns = t_ns
            self.write_burst(access, column, bursts[i].tobytes(), trcd)

    def _scatter_bursts(self, access: RowAccess, columns: np.ndarray, bursts: np.ndarray, now_ns: np.ndarray) -> None:
        """Store write bursts with one scatter: what :meth:`write_burst` does burst by burst."""
        n = len(columns)
        if n == 0:
            return
        self.now_ns = float(now_ns[0])
        if not access.stored:
            self._store_access(access)  # may raise StoreFullError, as the first burst would
        self.now_ns = float(now_ns[-1])
        if self._row_write_in_order and self._whole_row(columns):
            access.data[:] = np.asarray(bursts, dtype=np.uint8).reshape(-1)
            return
        columns = np.asarray(columns, dtype=np.intp)
        bursts = np.asarray(bursts, dtype=np.uint8).reshape(n, BURST_BYTES)
        if n > 1:
            # A write covers its whole aligned group of 8 columns: of several writes to one
            # group only the last counts (a scatter with repeated indices has no defined order).
            group = columns >> 3
            if np.bincount(group).max() > 1:
                _, first_of_reversed = np.unique(group[::-1], return_index=True)
                last = np.zeros(n, bool)
                last[n - 1 - first_of_reversed] = True
                columns, bursts = columns[last], bursts[last]
        access.data[self._write_matrix[columns]] = bursts

    def _store_access(self, access: RowAccess) -> None:
        """Point an access at its row's slot, storing the row (power-up content) if it is new."""
        slot = self._rows.get((access.bank, access.row))
        if slot is None:
            slot = self._rows.allocate(access.bank, access.row)
            slot[:] = access.data  # power-up content becomes stored on first write
        access.data = slot
        access.stored = True

    def precharge(self, access: RowAccess, tras_cycles: int) -> None:
        """Close a row ``tras_cycles`` after its activation (no effect without physics)."""

"""An emulated DDR3 DIMM: sparse row storage, burst ordering and access events.

Geometry of the SoftMC ML605 release: 8 banks x 32768 rows x 1024 columns on a
64-bit bus, so a row is 8 KiB (128 bursts of 64 bytes).  Byte ``8*c + k`` of a
row is column ``c`` of x8 chip ``k``.

Only written rows are stored, so memory grows with the data written, not with
the 2 GiB of the module.  A row never written reads as deterministic power-up
content derived from the DIMM's seed, bank and row.

The firmware reports every access to the DIMM with its effective timing (see
:class:`RowAccess`); error physics attaches there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Geometry", "ML605_GEOMETRY", "burst_order", "RowAccess", "EmulatedDimm"]


@dataclass(frozen=True)
class Geometry:
    """Shape of a DIMM rank."""

    banks: int = 8
    rows: int = 32768
    columns: int = 1024
    bus_bytes: int = 8
    burst_length: int = 8

    @property
    def row_bytes(self) -> int:
        """Bytes in one row across all chips."""
        return self.columns * self.bus_bytes

    @property
    def burst_bytes(self) -> int:
        """Bytes moved by one RD or WR."""
        return self.bus_bytes * self.burst_length

    @property
    def bursts_per_row(self) -> int:
        """Bursts needed to cover a row."""
        return self.columns // self.burst_length


ML605_GEOMETRY = Geometry()


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
        The row's stored bytes (uint8, ``row_bytes`` long); writes go into it.
    """

    dimm: "EmulatedDimm"
    bank: int
    row: int
    trp_cycles: int
    data: np.ndarray

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
    """

    def __init__(self, geometry: Geometry = ML605_GEOMETRY, seed: int = 0) -> None:
        self.geometry = geometry
        self.seed = int(seed)
        self._rows: dict[tuple[int, int], np.ndarray] = {}
        # Index of every column of a burst, per start column, for reads and writes.
        g = geometry
        self._read_index = [self._burst_bytes_index(c, False) for c in range(g.columns)]
        self._write_index = [self._burst_bytes_index(c, True) for c in range(g.columns)]

    def _burst_bytes_index(self, column: int, write: bool) -> np.ndarray:
        cols = np.array(burst_order(column, write), dtype=np.intp)
        return (cols[:, None] * self.geometry.bus_bytes + np.arange(self.geometry.bus_bytes)).ravel()

    @property
    def stored_rows(self) -> int:
        """Number of rows held in memory."""
        return len(self._rows)

    def power_up_content(self, bank: int, row: int) -> np.ndarray:
        """Deterministic content of a row that was never written."""
        rng = np.random.default_rng([self.seed, 0x9E37, bank, row])
        return rng.integers(0, 256, self.geometry.row_bytes, dtype=np.uint8)

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
            data = self.power_up_content(bank, row)
        return RowAccess(self, bank, row, trp_cycles, data)

    def read_burst(self, access: RowAccess, column: int, trcd_cycles: int) -> bytes:
        """Bytes of one read burst (no errors in the fault-free DIMM)."""
        return access.data[self._read_index[column]].tobytes()

    def write_burst(self, access: RowAccess, column: int, burst: bytes, trcd_cycles: int) -> None:
        """Store one write burst."""
        key = (access.bank, access.row)
        if key not in self._rows:
            self._rows[key] = access.data  # power-up content becomes stored on first write
        access.data[self._write_index[column]] = np.frombuffer(burst, dtype=np.uint8)

    def precharge(self, access: RowAccess, tras_cycles: int) -> None:
        """Close a row ``tras_cycles`` after its activation (no effect without physics)."""

"""DIMM geometry: the one definition every layer uses.

The SoftMC ML605 release drives one rank of 8 banks x 32768 rows x 1024 columns on a 64-bit
bus (8 KiB rows, 64-byte bursts of BL8). Where a tester is at hand, its INFO reply
(:attr:`softmc_host.session.TesterSession.info`) is the authority and :meth:`Geometry.from_info`
builds the geometry from it; :data:`ML605_GEOMETRY` is the default everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Geometry", "ML605_GEOMETRY", "N_BANKS", "ROWS_PER_BANK", "ROW_BYTES"]


@dataclass(frozen=True)
class Geometry:
    """Shape of a DIMM rank.

    Parameters
    ----------
    banks, rows, columns : int
        Banks per rank, rows per bank, columns per row.
    bus_bytes : int
        Width of the data bus in bytes (8 for a 64-bit DIMM).
    burst_length : int
        Columns moved by one RD or WR (8 for DDR3 BL8).
    """

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

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> "Geometry":
        """The geometry a tester reports in its INFO reply (keys ``banks``, ``rows``, ``row_bytes``)."""
        row_bytes = int(info.get("row_bytes", ML605_GEOMETRY.row_bytes))
        bus = ML605_GEOMETRY.bus_bytes
        return cls(banks=int(info.get("banks", ML605_GEOMETRY.banks)), rows=int(info.get("rows", ML605_GEOMETRY.rows)),
                   columns=row_bytes // bus, bus_bytes=bus)


#: The SoftMC ML605 DIMM (the default geometry of every command).
ML605_GEOMETRY = Geometry()
N_BANKS = ML605_GEOMETRY.banks
ROWS_PER_BANK = ML605_GEOMETRY.rows
ROW_BYTES = ML605_GEOMETRY.row_bytes

"""Where a tensor's bytes sit in DRAM: bank, row and bit position within the row.

Address scheme
--------------
A DIMM has ``banks`` banks of ``rows`` rows of ``row_bytes`` bytes (default:
:data:`softmc_host.geometry.ML605_GEOMETRY`, the SoftMC ML605 DDR3 DIMM, 8 x 32768 x 8192 B
= 2 GiB). Its bytes are numbered by a *linear address* whose order depends on the interleaving:

===========  =====================================================================  =====================
interleave   consecutive linear addresses ...                                       contiguous run
===========  =====================================================================  =====================
``"row"``    fill a row, then the next row of the same bank; after the bank's last   ``row_bytes``
             row, row 0 of the next bank
             ``linear = (bank * rows + row) * row_bytes + byte_in_row``
``"bank"``   fill a row, then the same row of the next bank; after the last bank,    ``row_bytes``
             the next row of bank 0 (row-sized chunks rotate over the banks)
             ``linear = (row * banks + bank) * row_bytes + byte_in_row``
``"line"``   fill a ``line_bytes`` (64 B) line, then the same line slot of the next  ``line_bytes``
             bank; after the last bank, the next line slot of bank 0; after the
             row's last slot, the next row
             ``linear = ((row * slots + slot) * banks + bank) * line_bytes + b``
             with ``slots = row_bytes // line_bytes``,
             ``byte_in_row = slot * line_bytes + b``
===========  =====================================================================  =====================

A tensor placed by an :class:`AddressMap` starts at the linear address of
``(bank, row, byte 0)`` plus ``offset_bytes``, and its byte ``i`` sits at that
address plus ``i``. Byte offsets are those of the tensor's storage in C order.

Bits are numbered LSB first: bit ``k`` (0 = least significant) of tensor byte ``i``
is tensor bit ``8 i + k``, and a byte at ``byte_in_row`` holds the row's bits
``byte_in_row * 8 + k`` (``bit_in_row``, 0 .. ``row_bytes * 8 - 1``). On a
little-endian host (every platform PyTorch supports) bit ``k`` of element ``j`` of a
``w``-bit dtype is tensor bit ``j * w + k``. This is the bit numbering of the BER maps
(``numpy.unpackbits(row, bitorder="little")``).

Location ids for :func:`errormodels.models.weak_mask`: a wordline group is
``bank << 40 | row << 20 | bit_in_row // group_bits``, a bitline is
``bank << 20 | bit_in_row`` (so rows and bits in a row must stay below 2**20).

All mappings are vectorised and accept ``numpy`` integer arrays or ``torch`` int64
tensors (on any device); results have the input's kind.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, TypeVar, Union

import numpy as np
import torch

from softmc_host.geometry import ML605_GEOMETRY, Geometry

__all__ = ["LayoutError", "AddressMap", "INTERLEAVES"]

INTERLEAVES = ("row", "bank", "line")

IntArray = TypeVar("IntArray", np.ndarray, torch.Tensor)
_ArrayLike = Union[np.ndarray, torch.Tensor, int, list]


class LayoutError(ValueError):
    """A geometry that cannot be mapped, or a tensor that does not fit in the DIMM."""


def _as_int64(x: _ArrayLike) -> np.ndarray | torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point or x.dtype == torch.bool:
            raise LayoutError(f"offsets must be integers, got {x.dtype}")
        return x.to(torch.int64)
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise LayoutError(f"offsets must be integers, got {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _div(x, d: int):
    """Floor division by a positive int, by a shift when ``d`` is a power of two (much faster on arrays)."""
    return x >> (d.bit_length() - 1) if d & (d - 1) == 0 and not isinstance(x, int) else x // d


def _mod(x, d: int):
    """Floor modulo by a positive int, by a mask when ``d`` is a power of two."""
    return x & (d - 1) if d & (d - 1) == 0 and not isinstance(x, int) else x % d


def _extent(x: np.ndarray | torch.Tensor) -> tuple[int, int] | None:
    if x.size == 0 if isinstance(x, np.ndarray) else x.numel() == 0:
        return None
    if isinstance(x, np.ndarray):
        return int(x.min()), int(x.max())
    lo, hi = torch.aminmax(x)
    return int(lo), int(hi)


@dataclass(frozen=True)
class AddressMap:
    """Placement of a tensor in DRAM: geometry, base address and interleaving.

    Parameters
    ----------
    banks, rows, row_bytes : int
        DIMM geometry (default :data:`softmc_host.geometry.ML605_GEOMETRY`: 8 banks x 32768
        rows x 8192 bytes, the SoftMC ML605 DIMM); :meth:`from_geometry` takes a ``Geometry``.
    bank, row : int
        Base address: the tensor's byte 0 sits at byte 0 of this row (plus ``offset_bytes``).
    interleave : {"row", "bank", "line"}
        How consecutive bytes spread over rows and banks (module docstring).
    offset_bytes : int
        Bytes after the base address, in the interleaving's linear order (to pack
        several tensors one after another, see :meth:`after`).
    line_bytes : int
        Size of a line for ``interleave="line"`` (default 64 B, a DDR3 burst).
    """

    banks: int = ML605_GEOMETRY.banks
    rows: int = ML605_GEOMETRY.rows
    row_bytes: int = ML605_GEOMETRY.row_bytes
    bank: int = 0
    row: int = 0
    interleave: str = "row"
    offset_bytes: int = 0
    line_bytes: int = ML605_GEOMETRY.burst_bytes

    @classmethod
    def from_geometry(cls, geometry: Geometry, **placement: Any) -> "AddressMap":
        """An address map over ``geometry`` (banks, rows, row bytes, a burst as the line);
        ``placement``: ``bank``, ``row``, ``interleave``, ``offset_bytes``."""
        return cls(banks=geometry.banks, rows=geometry.rows, row_bytes=geometry.row_bytes,
                   line_bytes=geometry.burst_bytes, **placement)

    def __post_init__(self) -> None:
        for name in ("banks", "rows", "row_bytes", "line_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LayoutError(f"{name} must be a positive integer, got {value!r}")
        if self.interleave not in INTERLEAVES:
            raise LayoutError(f"interleave must be one of {INTERLEAVES}, got {self.interleave!r}")
        if self.rows > 1 << 20 or self.row_bytes * 8 > 1 << 20 or self.banks > 1 << 20:
            raise LayoutError("location ids need banks, rows and bits per row <= 2**20")
        if self.interleave == "line" and self.row_bytes % self.line_bytes:
            raise LayoutError(f"row_bytes {self.row_bytes} is not a multiple of line_bytes {self.line_bytes}")
        if not (0 <= self.bank < self.banks and 0 <= self.row < self.rows):
            raise LayoutError(f"base (bank {self.bank}, row {self.row}) outside {self.banks} banks x {self.rows} rows")
        if not isinstance(self.offset_bytes, int) or self.offset_bytes < 0:
            raise LayoutError(f"offset_bytes must be a non-negative integer, got {self.offset_bytes!r}")
        if self.start_address > self.capacity_bytes:
            raise LayoutError(f"offset_bytes {self.offset_bytes} puts the start beyond the DIMM")

    # ----------------------------------------------------------------- geometry
    @property
    def capacity_bytes(self) -> int:
        """Bytes in the DIMM."""
        return self.banks * self.rows * self.row_bytes

    @property
    def row_bits(self) -> int:
        """Bits in a row (bitlines per bank)."""
        return self.row_bytes * 8

    @property
    def run_bytes(self) -> int:
        """Length of the runs of consecutive linear addresses that stay in one row."""
        return self.line_bytes if self.interleave == "line" else self.row_bytes

    @property
    def start_address(self) -> int:
        """Linear address of the tensor's byte 0."""
        return self.linear_address(self.bank, self.row, 0) + self.offset_bytes

    def linear_address(self, bank: _ArrayLike, row: _ArrayLike, byte_in_row: _ArrayLike) -> np.ndarray | torch.Tensor | int:
        """Linear address of ``(bank, row, byte_in_row)`` (inverse of :meth:`locate_linear`)."""
        scalar = all(isinstance(v, int) for v in (bank, row, byte_in_row))
        b, r, c = (v if scalar else _as_int64(v) for v in (bank, row, byte_in_row))
        if self.interleave == "row":
            out = (b * self.rows + r) * self.row_bytes + c
        elif self.interleave == "bank":
            out = (r * self.banks + b) * self.row_bytes + c
        else:
            slots = self.row_bytes // self.line_bytes
            out = ((r * slots + c // self.line_bytes) * self.banks + b) * self.line_bytes + c % self.line_bytes
        return out

    def locate_linear(self, address: IntArray) -> tuple[IntArray, IntArray, IntArray]:
        """``(bank, row, byte_in_row)`` of linear addresses (no range check)."""
        a = address
        if self.interleave == "row":
            chunk = _div(a, self.row_bytes)
            return _div(chunk, self.rows), _mod(chunk, self.rows), _mod(a, self.row_bytes)
        if self.interleave == "bank":
            chunk = _div(a, self.row_bytes)
            return _mod(chunk, self.banks), _div(chunk, self.banks), _mod(a, self.row_bytes)
        line = _div(a, self.line_bytes)
        slot = _div(line, self.banks)
        slots = self.row_bytes // self.line_bytes
        return (_mod(line, self.banks), _div(slot, slots),
                _mod(slot, slots) * self.line_bytes + _mod(a, self.line_bytes))

    # ------------------------------------------------------------ tensor bytes
    def check_fits(self, n_bytes: int) -> None:
        """Raise :class:`LayoutError` unless ``n_bytes`` from the start address fit in the DIMM."""
        end = self.start_address + int(n_bytes)
        if n_bytes < 0 or end > self.capacity_bytes:
            raise LayoutError(
                f"a tensor of {n_bytes} bytes placed at bank {self.bank}, row {self.row}, offset {self.offset_bytes} "
                f"(linear address {self.start_address}, {self.interleave} interleaving) ends at {end}, beyond the "
                f"DIMM's {self.capacity_bytes} bytes ({self.banks} banks x {self.rows} rows x {self.row_bytes} B)"
            )

    def locate(self, offsets: _ArrayLike) -> tuple[IntArray, IntArray, IntArray]:
        """``(bank, row, byte_in_row)`` of tensor byte offsets.

        Parameters
        ----------
        offsets : numpy integer array or torch integer tensor
            Byte offsets from the tensor's start (its storage in C order).

        Returns
        -------
        bank, row, byte_in_row : int64 arrays or tensors, like ``offsets``

        Raises
        ------
        LayoutError
            If an offset is negative or beyond the DIMM's end.
        """
        off = _extent_checked(self, _as_int64(offsets), self.capacity_bytes - self.start_address)
        return self.locate_linear(off + self.start_address)

    def locate_bits(self, bit_positions: _ArrayLike) -> tuple[IntArray, IntArray, IntArray]:
        """``(bank, row, bit_in_row)`` of tensor bit positions (``8 * byte + bit``, LSB first)."""
        pos = _extent_checked(self, _as_int64(bit_positions), 8 * (self.capacity_bytes - self.start_address))
        bank, row, byte = self.locate_linear((pos >> 3) + self.start_address)
        return bank, row, byte * 8 + (pos & 7)

    def after(self, n_bytes: int, align_bytes: int = 1) -> "AddressMap":
        """The map for a tensor placed right after ``n_bytes`` of this one, at a multiple of ``align_bytes``.

        ``align_bytes=map.row_bytes`` (row or bank interleaving) starts the next tensor in a fresh row.
        """
        if align_bytes < 1:
            raise LayoutError(f"align_bytes must be >= 1, got {align_bytes}")
        end = self.start_address + int(n_bytes)
        end = -(-end // align_bytes) * align_bytes
        base = self.linear_address(self.bank, self.row, 0)
        return replace(self, offset_bytes=end - base)

    def describe(self) -> str:
        """One line: geometry, base and interleaving."""
        return (f"{self.banks}x{self.rows}x{self.row_bytes}B, base bank {self.bank} row {self.row} "
                f"+{self.offset_bytes}B, {self.interleave} interleave")


def _extent_checked(amap: AddressMap, x: IntArray, limit: int) -> IntArray:
    ext = _extent(x)
    if ext is not None and (ext[0] < 0 or ext[1] >= limit):
        raise LayoutError(
            f"offset {ext[0] if ext[0] < 0 else ext[1]} outside the {limit} units available from the start "
            f"of {amap.describe()}"
        )
    return x

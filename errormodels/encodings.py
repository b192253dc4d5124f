"""Weight storage encodings (dense, bitmask-sparse, CSR), their faults, protection and costs.

A layer's quantized weights (integer codes of ``width`` bits, :mod:`boosting.quant`) are stored
as one or more *streams*: arrays of fixed-width fields packed densely into bits (field ``i``'s
bit ``k`` is stream bit ``i * field_bits + k``, bit ``k`` of byte ``j`` is stream bit
``8 j + k``, as the injectors count them), so a multi-level cell of an eNVM model spans fields
as a dense packing does. The encodings (MaxNVM weighs the same three):

``dense``
    ``values``: every code, ``width`` bits each.
``bitmask``
    ``mask``: one bit per weight (1: non-zero); ``values``: the non-zero codes in order. The
    decoder walks the mask and gives each set bit the next value, so a mask fault shifts every
    later value by one position (a 0 -> 1 fault takes a value early, 1 -> 0 skips one).
``bitmask`` with IdxSync (``sync_block = B > 0``)
    Index Synchronization: the mask is cut into blocks of ``B`` weights and ``offsets`` stores,
    for each block, the index of its first value (``ceil(log2(nnz + 1))`` bits). The decoder
    restarts each block at its stored offset, so a mask fault misaligns values only up to the end
    of its block; an offset fault misaligns only its own block. (Our reading of MaxNVM's IdxSync:
    the metadata re-synchronise the value pointer periodically; the block is a parameter.)
``csr``
    The weights as a matrix (rows: output channels), ``values``: the non-zero codes row by row,
    ``cols``: each value's column (``ceil(log2(n_cols))`` bits), ``rowptr``: each row's end index
    into the values (``ceil(log2(nnz + 1))`` bits; the start of row ``r`` is the end of row
    ``r - 1``). A column fault moves one value within its row (a column past the row's end drops
    it); a pointer fault moves the values at one row boundary into the neighbouring row.

Out-of-range indices read as zero weights, as a decoder that bounds its reads would give.

**Protection** (:mod:`errormodels.protection`): ``none``; ``secded``: every stream under SECDED
(72, 64); ``meta``: the metadata streams (mask, offsets, cols, rowptr) under SECDED, the values
bare; ``msb``: the metadata under SECDED and the top ``msb_bits`` of each value under their own
SECDED words (8-bit values only).

**Costs.** :func:`stored_bits` counts the stored bits of each stream (check bits included) and
:func:`storage_cost` turns them into cells, read energy and read latency with a
:class:`CostModel`; its parameters are stated assumptions in relative units
(``docs/memories.md``), not measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

import numpy as np

__all__ = [
    "ENCODINGS", "PROTECTIONS", "METADATA", "CostModel", "Encoded", "EncodingError", "StorageCost", "StoreStats",
    "decode", "encode", "fault", "storage_cost", "stored_bits",
]

ENCODINGS = ("dense", "bitmask", "csr")
"""Encoding names (``bitmask`` with ``sync_block > 0`` is bitmask with IdxSync)."""

PROTECTIONS = ("none", "secded", "meta", "msb")
"""Protection names."""

METADATA = ("mask", "offsets", "cols", "rowptr")
"""Streams that are metadata (the rest, ``values``, are weight codes)."""


class EncodingError(ValueError):
    """Bad encoding input: unknown encoding or protection, codes out of range, a bad shape."""


def _bits_for(n: int) -> int:
    """Bits of a field holding 0 .. n."""
    return max(1, int(n).bit_length())


def _pack(fields_: np.ndarray, field_bits: int) -> np.ndarray:
    """Unsigned fields (int64) packed LSB-first into a uint8 byte stream."""
    f = np.asarray(fields_, dtype=np.int64).reshape(-1)
    bits = ((f[:, None] >> np.arange(field_bits, dtype=np.int64)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little")


def _unpack(data: np.ndarray, field_bits: int, n_fields: int) -> np.ndarray:
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8), bitorder="little")[:n_fields * field_bits]
    bits = bits.reshape(n_fields, field_bits).astype(np.int64)
    return (bits << np.arange(field_bits, dtype=np.int64)).sum(axis=1) if field_bits else np.zeros(n_fields, np.int64)


@dataclass(frozen=True)
class Stream:
    """One stored array: ``n_fields`` fields of ``field_bits`` bits packed into ``data`` (uint8)."""

    data: np.ndarray
    field_bits: int
    n_fields: int

    @property
    def n_bits(self) -> int:
        return self.field_bits * self.n_fields

    def fields(self) -> np.ndarray:
        return _unpack(self.data, self.field_bits, self.n_fields)


@dataclass(frozen=True)
class Encoded:
    """A layer's weights as stored streams.

    Attributes
    ----------
    encoding : str
        One of :data:`ENCODINGS`.
    shape : tuple of int
        The weight tensor's shape.
    width : int
        Bits per value code (signed two's complement).
    streams : dict
        ``{name: Stream}``: ``values`` and the encoding's metadata.
    sync_block : int
        IdxSync block in weights (``bitmask`` only; 0: none).
    """

    encoding: str
    shape: tuple[int, ...]
    width: int
    streams: dict[str, Stream]
    sync_block: int = 0

    @property
    def n_weights(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def replace_streams(self, streams: Mapping[str, Stream]) -> "Encoded":
        return Encoded(self.encoding, self.shape, self.width, dict(streams), self.sync_block)


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    rows = int(shape[0])
    return rows, int(np.prod(shape[1:])) if len(shape) > 1 else 1


def _check(encoding: str, width: int, sync_block: int) -> None:
    if encoding not in ENCODINGS:
        raise EncodingError(f"unknown encoding {encoding!r}; known: {', '.join(ENCODINGS)}")
    if not (isinstance(width, int) and 2 <= width <= 16):
        raise EncodingError(f"width must be an integer in 2..16 bits, got {width!r}")
    if not (isinstance(sync_block, int) and sync_block >= 0):
        raise EncodingError(f"sync_block must be an integer >= 0, got {sync_block!r}")
    if sync_block and encoding != "bitmask":
        raise EncodingError(f"sync_block (IdxSync) applies to the bitmask encoding, not {encoding!r}")


def encode(codes: np.ndarray, encoding: str = "dense", *, width: int = 8, sync_block: int = 0) -> Encoded:
    """Store integer weight ``codes`` (any shape, signed ``width``-bit) in ``encoding``.

    Parameters
    ----------
    codes : ndarray of int
        Quantized weights, each in ``[-2**(width-1), 2**(width-1) - 1]``; 0 is a pruned weight.
    encoding : {"dense", "bitmask", "csr"}
        The layout (module docstring).
    width : int
        Bits per value code.
    sync_block : int
        IdxSync block for ``bitmask``, in weights (0: no IdxSync).
    """
    _check(encoding, width, sync_block)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise EncodingError(f"codes must be integers, got dtype {codes.dtype}")
    c = codes.astype(np.int64)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if c.size and (c.min() < lo or c.max() > hi):
        raise EncodingError(f"codes must lie in [{lo}, {hi}] for width {width}, got [{c.min()}, {c.max()}]")
    shape = tuple(int(s) for s in codes.shape)
    mask_w = (1 << width) - 1
    flat = c.reshape(-1)
    if encoding == "dense":
        return Encoded("dense", shape, width, {"values": Stream(_pack(flat & mask_w, width), width, flat.size)})
    if encoding == "bitmask":
        nz = flat != 0
        vals = flat[nz]
        streams = {"mask": Stream(_pack(nz.astype(np.int64), 1), 1, flat.size),
                   "values": Stream(_pack(vals & mask_w, width), width, vals.size)}
        if sync_block:
            n_blocks = -(-flat.size // sync_block)
            starts = np.concatenate([[0], np.cumsum(nz)])[::sync_block][:n_blocks]
            ob = _bits_for(vals.size)
            streams["offsets"] = Stream(_pack(starts, ob), ob, starts.size)
        return Encoded("bitmask", shape, width, streams, sync_block)
    rows, cols = _matrix_shape(shape)
    m = flat.reshape(rows, cols)
    r_idx, c_idx = np.nonzero(m)
    vals = m[r_idx, c_idx]
    ends = np.cumsum(np.bincount(r_idx, minlength=rows))
    cb, pb = _bits_for(max(cols - 1, 1)), _bits_for(vals.size)
    return Encoded("csr", shape, width, {
        "values": Stream(_pack(vals & mask_w, width), width, vals.size),
        "cols": Stream(_pack(c_idx, cb), cb, c_idx.size),
        "rowptr": Stream(_pack(ends, pb), pb, rows)})


def _signed(u: np.ndarray, width: int) -> np.ndarray:
    return np.where(u >= 1 << (width - 1), u - (1 << width), u)


def decode(enc: Encoded) -> np.ndarray:
    """The weight codes (int64, ``enc.shape``) a decoder reads back from ``enc``'s streams."""
    vals = _signed(enc.streams["values"].fields(), enc.width)
    n = enc.n_weights
    if enc.encoding == "dense":
        return vals.reshape(enc.shape)
    if enc.encoding == "bitmask":
        mask = enc.streams["mask"].fields().astype(bool)
        out = np.zeros(n, dtype=np.int64)
        pos = np.flatnonzero(mask)
        if enc.sync_block:
            b = enc.sync_block
            offsets = enc.streams["offsets"].fields()
            block = pos // b
            first = np.searchsorted(pos, block * b)  # index (in pos) of the block's first set bit
            ptr = offsets[block] + (np.arange(pos.size) - first)
        else:
            ptr = np.arange(pos.size)
        ok = ptr < vals.size
        out[pos[ok]] = vals[ptr[ok]]
        return out.reshape(enc.shape)
    rows, cols = _matrix_shape(enc.shape)
    col = enc.streams["cols"].fields()
    ends = np.minimum(enc.streams["rowptr"].fields(), vals.size)
    starts = np.concatenate([[0], ends[:-1]])
    lengths = np.maximum(ends - starts, 0)
    row_of = np.repeat(np.arange(rows), lengths)
    entry = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(starts, lengths)
    c = col[entry]
    ok = c < cols
    out = np.zeros((rows, cols), dtype=np.int64)
    out[row_of[ok], c[ok]] = vals[entry[ok]]
    return out.reshape(enc.shape)


def _check_protection(protection: str, enc: Encoded, msb_bits: int) -> None:
    if protection not in PROTECTIONS:
        raise EncodingError(f"unknown protection {protection!r}; known: {', '.join(PROTECTIONS)}")
    if protection == "msb" and enc.width != 8:
        raise EncodingError(f"msb protection needs 8-bit values, got width {enc.width}")
    if protection == "msb" and not (isinstance(msb_bits, int) and 1 <= msb_bits <= enc.width):
        raise EncodingError(f"msb_bits must be an integer in 1..{enc.width}, got {msb_bits!r}")


def _stream_protection(name: str, protection: str) -> Optional[str]:
    """The protection of one stream: None, ``secded`` or ``msb``."""
    if protection == "none":
        return None
    if protection == "secded":
        return "secded"
    if name in METADATA:
        return "secded"
    return "msb" if protection == "msb" else None


def stored_bits(enc: Encoded, protection: str = "none", *, msb_bits: int = 2) -> dict[str, int]:
    """Stored bits of each stream under ``protection`` (check bits included, words padded)."""
    _check_protection(protection, enc, msb_bits)
    out = {}
    for name, s in enc.streams.items():
        p = _stream_protection(name, protection)
        n_bytes = s.data.size
        if p == "secded":
            words = -(-n_bytes // 8)
            out[name] = words * 72
        elif p == "msb":
            words = -(-(s.n_fields * msb_bits) // 64)
            out[name] = n_bytes * 8 + words * 8
        else:
            out[name] = s.n_bits
    return out


@dataclass(frozen=True)
class StoreStats:
    """What storing an encoding in a faulty memory did."""

    stored_bits: int = 0
    raw_bits_flipped: int = 0
    words: int = 0
    corrected: int = 0
    detected: int = 0
    per_stream: dict[str, int] = field(default_factory=dict)  # raw flips per stream


def _stream_seed(seed: int, k: int) -> int:
    return int(np.random.SeedSequence([int(seed), 0x5EED, k]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def fault(enc: Encoded, model: Any, *, seed: int, protection: str = "none", msb_bits: int = 2) -> tuple[Encoded, StoreStats]:
    """``enc`` after every stream was stored in a memory faulted by ``model`` (and decoded by its protection).

    Each stream is its own stored image, faulted with its own seed derived from ``seed``; any
    registered error model applies (DRAM bits or eNVM cells). Returns the read-back encoding and
    the counts; :func:`decode` gives the weights a decoder would see.
    """
    import torch

    from errormodels.inject import inject
    from errormodels.protection import inject_protected

    _check_protection(protection, enc, msb_bits)
    out: dict[str, Stream] = {}
    total = flipped = words = corrected = detected = 0
    per: dict[str, int] = {}
    for k, (name, s) in enumerate(sorted(enc.streams.items())):
        if s.data.size == 0:
            out[name] = s
            per[name] = 0
            continue
        t = torch.from_numpy(s.data.copy())
        p = _stream_protection(name, protection)
        sd = _stream_seed(seed, k)
        if p is None:
            read, st = inject(t, model, seed=sd)
            total += st.bits_total
            flipped += st.bits_flipped
            per[name] = st.bits_flipped
        else:
            read, ps = inject_protected(t, model, seed=sd, protection=p, msb_bits=msb_bits)
            total += ps.stored_bits
            flipped += ps.raw_bits_flipped
            words += ps.words
            corrected += ps.corrected
            detected += ps.detected
            per[name] = ps.raw_bits_flipped
        out[name] = Stream(read.numpy().copy(), s.field_bits, s.n_fields)
    return enc.replace_streams(out), StoreStats(total, flipped, words, corrected, detected, per)


@dataclass(frozen=True)
class CostModel:
    """Read energy and latency of stored weights, in relative units (stated assumptions).

    A read of a cell of ``b`` bits costs ``cell_access`` (its word- and bit-line) plus ``b`` sense
    steps of ``sense_step`` each (sensing ``2**b`` levels by successive comparison against
    ``b`` references); a read takes ``b`` sense steps of latency for a row of cells read in
    parallel, ``row_cells`` wide. Decoding costs ``ecc_word`` energy per SECDED word read and
    adds ``ecc_latency`` steps per row; a sparse decoder costs ``sparse_per_weight`` energy per
    weight position it produces (bitmask prefix counting, CSR scatter).
    """

    cell_access: float = 1.0
    sense_step: float = 1.0
    row_cells: int = 256
    ecc_word: float = 4.0
    ecc_latency: float = 1.0
    sparse_per_weight: float = 0.05

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "CostModel":
        known = {f.name for f in fields(cls)}
        bad = sorted(set(doc) - known)
        if bad:
            raise EncodingError(f"unknown cost model parameter(s): {', '.join(bad)}; known: {', '.join(sorted(known))}")
        vals = {}
        for k, v in doc.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise EncodingError(f"cost model parameter {k} must be a finite number >= 0, got {v!r}")
            vals[k] = v
        if "row_cells" in vals:
            if int(vals["row_cells"]) != vals["row_cells"] or vals["row_cells"] < 1:
                raise EncodingError(f"row_cells must be an integer >= 1, got {vals['row_cells']!r}")
            vals["row_cells"] = int(vals["row_cells"])
        return cls(**vals)


@dataclass(frozen=True)
class StorageCost:
    """Cells, energy and latency of reading one layer's stored weights once."""

    bits: int
    cells: int
    energy: float
    latency: float
    cells_per_weight: float


def storage_cost(enc: Encoded, protection: str, bits_per_cell: int, cost: CostModel = CostModel(), *,
                 msb_bits: int = 2) -> StorageCost:
    """The cost of ``enc`` under ``protection`` in cells of ``bits_per_cell`` bits (each stream cell-aligned)."""
    if not (isinstance(bits_per_cell, int) and 1 <= bits_per_cell <= 4):
        raise EncodingError(f"bits_per_cell must be an integer in 1..4, got {bits_per_cell!r}")
    per = stored_bits(enc, protection, msb_bits=msb_bits)
    bits = sum(per.values())
    cells = sum(-(-v // bits_per_cell) for v in per.values())
    words = sum(-(-enc.streams[n].data.size // 8) for n in per if _stream_protection(n, protection) == "secded")
    words += sum(-(-(enc.streams[n].n_fields * msb_bits) // 64) for n in per
                 if _stream_protection(n, protection) == "msb")
    rows = -(-cells // cost.row_cells)
    energy = cells * (cost.cell_access + bits_per_cell * cost.sense_step) + words * cost.ecc_word
    if enc.encoding != "dense":
        energy += enc.n_weights * cost.sparse_per_weight
    latency = rows * (bits_per_cell + (cost.ecc_latency if words else 0.0))
    return StorageCost(bits, cells, float(energy), float(latency), cells / max(enc.n_weights, 1))

"""The weak bits of a tensor under a clustered model: wordline groups or bitlines, found once and cached.

A weak set is a :class:`~errormodels.models.WeakBits`: ``n`` bits, ranked in position order, with
``rank_of``, ``position_of`` and ``contains``. Finding one takes one pass over the wordline groups
the tensor covers (``n_bits / group_bits`` hashes, in the compiled kernel on the CPU), or over the
bitlines of the banks it touches; it is cached per (shape, kind, seed, weak fraction, group size,
layout, size, device), so repeated injections pay only for the flips. On the CPU with the
compiled kernel, the injector hands the set to the kernel as arrays (:meth:`kernel_args`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from threading import Lock
from typing import Optional, Union

import numpy as np
import torch

from errormodels.inject import sampler
from errormodels.inject.mix import weak_mask_torch
from errormodels.inject.stats import InjectionError
from errormodels.layout import AddressMap, LayoutError, _div, _mod
from softmc_host.splitmix import GAMMA, MASK64, SALT_KIND

__all__ = ["weak_groups", "weak_bitlines", "clear_weak_cache"]

_WEAK_BLOCK = 1 << 18  # location ids hashed per block when finding weak sets in torch (cache-sized)
_CACHE_ENTRIES = 256  # one entry per (model shape, placement, size): a network's layers fit
_CACHE_BYTES = 1 << 30  # and at most this much memory held by cached sets
_INTERLEAVE = {"row": 0, "bank": 1, "line": 2}


def _searchsorted(sorted_seq: torch.Tensor, values: torch.Tensor, right: bool = False) -> torch.Tensor:
    return torch.searchsorted(sorted_seq, values, right=right)


def _pack_bits(flags: torch.Tensor) -> torch.Tensor:
    """Booleans as bits of uint8 (little-endian: flag ``i`` is bit ``i % 8`` of byte ``i // 8``)."""
    pad = (-flags.numel()) % 8
    if pad:
        flags = torch.cat([flags, torch.zeros(pad, dtype=torch.bool, device=flags.device)])
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=flags.device)
    return (flags.view(-1, 8).to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)


def _bit_at(bits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Bit ``idx`` of a packed bitmap, as bool."""
    return ((bits[idx >> 3] >> (idx & 7).to(torch.uint8)) & 1).bool()


def _nbytes(*ts: Optional[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


class _WeakPieces:
    """Weak bits of a wordline model: weak pieces of ``piece`` bits, consecutive in the tensor.

    Pieces are numbered in linear bit space (piece ``q`` holds linear bits ``q * piece ..``);
    ranks count the weak bits of the weak pieces that meet the tensor, in order, so rank
    ``r`` is bit ``r % piece`` of weak piece ``r // piece`` (those outside the tensor are never
    drawn: chunks ask for the ranks of their own range).
    """

    def __init__(self, weak_q: torch.Tensor, piece: int, start: int, n_bits: int, first: int,
                 bits: torch.Tensor, n_pieces: int) -> None:
        self.weak_q = weak_q  # sorted indices of weak pieces meeting the tensor
        self.piece = piece
        self.start = start  # linear bit of tensor bit 0
        self.first = first  # first piece meeting the tensor
        self.bits = bits  # packed bitmap: bit (q - first) is set where piece q is weak
        self.n_pieces = n_pieces
        self.n_bits = n_bits
        k = weak_q.numel()
        if k:
            q0, q1 = int(weak_q[0]), int(weak_q[-1])
            self.head = max(0, start - q0 * piece)  # bits of the first weak piece before the tensor
            tail = max(0, (q1 + 1) * piece - (start + n_bits))
            self.n = k * piece - self.head - tail
        else:
            self.head, self.n = 0, 0
        self._kernel: Optional[tuple] = None

    @property
    def nbytes(self) -> int:
        return _nbytes(self.weak_q, self.bits)

    def rank_of(self, pos: torch.Tensor) -> torch.Tensor:
        lin = pos + self.start
        q = _div(lin, self.piece)
        j = torch.searchsorted(self.weak_q, q)
        hit = self.weak_q[j.clamp(max=max(self.weak_q.numel() - 1, 0))] == q if self.weak_q.numel() else q < 0
        return j * self.piece + torch.where(hit, lin - q * self.piece, torch.zeros_like(lin))

    def position_of(self, rank: torch.Tensor) -> torch.Tensor:
        return self.weak_q[_div(rank, self.piece)] * self.piece + _mod(rank, self.piece) - self.start

    def contains(self, pos: torch.Tensor) -> torch.Tensor:
        return _bit_at(self.bits, _div(pos + self.start, self.piece) - self.first)

    def kernel_args(self) -> Optional[tuple]:
        """The set for the compiled kernel (CPU, power-of-two pieces), or None."""
        if self._kernel is None and self.weak_q.device.type == "cpu" and self.piece & (self.piece - 1) == 0:
            args = (1, self.n, self.weak_q.numpy(), self.head, self.bits.numpy(), self.first, self.start,
                    self.piece.bit_length() - 1, self.n_pieces)
            sampler._flipkernel.check_weak(args, self.n_bits)
            self._kernel = args
        return self._kernel


class _WeakBitlines:
    """Weak bits of a bitline model: in each row segment, the bits on weak bitlines of its bank."""

    def __init__(self, amap: AddressMap, n_bits: int, keys: torch.Tensor, table: torch.Tensor,
                 seg_t: torch.Tensor, seg_key: torch.Tensor, idx0: Optional[torch.Tensor] = None,
                 cum: Optional[torch.Tensor] = None, table_bits: Optional[np.ndarray] = None) -> None:
        self.amap = amap
        self.n_bits = n_bits
        self.keys = keys  # sorted bank << 20 | bitline of weak bitlines of the banks touched
        self.table = table  # bool [banks * row_bits], True on weak bitlines
        self.seg_t = seg_t  # first tensor bit of each row segment
        self.seg_key = seg_key  # bank << 20 | bit_in_row of that bit
        if idx0 is None or cum is None:
            seg_end = torch.cat([seg_t[1:], torch.tensor([n_bits], dtype=torch.int64, device=seg_t.device)])
            idx0 = _searchsorted(keys, seg_key)
            idx1 = _searchsorted(keys, seg_key + (seg_end - seg_t))
            cum = torch.cat([torch.zeros(1, dtype=torch.int64, device=seg_t.device), torch.cumsum(idx1 - idx0, 0)])
        self.idx0 = idx0  # first key of each segment
        self.cum = cum  # weak bits before each segment
        self.n = int(self.cum[-1])
        self._table_bits = table_bits  # the table packed (little-endian bits), for the kernel
        self._kernel: Optional[tuple] = None

    @property
    def nbytes(self) -> int:
        return _nbytes(self.keys, self.table, self.seg_t, self.seg_key, self.idx0, self.cum)

    def rank_of(self, pos: torch.Tensor) -> torch.Tensor:
        at_end = pos >= self.n_bits
        p = pos.clamp(max=self.n_bits - 1)
        j = _searchsorted(self.seg_t, p, right=True) - 1
        key = self.seg_key[j] + (p - self.seg_t[j])
        rank = self.cum[j] + _searchsorted(self.keys, key) - self.idx0[j]
        return torch.where(at_end, torch.full_like(pos, self.n), rank)

    def position_of(self, rank: torch.Tensor) -> torch.Tensor:
        j = _searchsorted(self.cum[1:], rank, right=True)
        key = self.keys[self.idx0[j] + (rank - self.cum[j])]
        return self.seg_t[j] + (key - self.seg_key[j])

    def contains(self, pos: torch.Tensor) -> torch.Tensor:
        bank, _, byte = self.amap.locate_linear((pos >> 3) + self.amap.start_address)
        return self.table[bank * self.amap.row_bits + byte * 8 + (pos & 7)]

    def kernel_args(self) -> Optional[tuple]:
        """The set for the compiled kernel (CPU, power-of-two runs), or None."""
        run_bits = self.amap.run_bytes * 8
        if self._kernel is None and self.keys.device.type == "cpu" and run_bits & (run_bits - 1) == 0:
            start = self.amap.start_address * 8
            bits = self._table_bits if self._table_bits is not None else np.packbits(self.table.numpy(),
                                                                                          bitorder="little")
            args = (2, self.n, self.seg_t.numpy(), self.seg_key.numpy(), self.idx0.numpy(), self.cum.numpy(),
                    self.keys.numpy(), bits, self.amap.row_bits,
                    run_bits.bit_length() - 1, start // run_bits, start, self.amap.banks)
            sampler._flipkernel.check_weak(args, self.n_bits)
            self._kernel = args
        return self._kernel


_WeakSet = Union[_WeakPieces, _WeakBitlines]


def weak_groups(kind: int, seed: int, weak_fraction: float, group_bits: int, amap: AddressMap, n_bits: int,
                device: torch.device) -> _WeakSet:
    """The bits of a tensor of ``n_bits`` placed by ``amap`` that lie in weak wordline groups.

    A group is ``group_bits`` adjacent bits of a row (a power of two dividing the row and the
    interleaving's contiguous run); it is weak where :func:`~errormodels.models.weak_mask`
    (``seed``, ``kind``, ``bank << 40 | row << 20 | group``) says so. Cached.
    """
    key = ("groups", kind, seed, weak_fraction, group_bits, amap, n_bits, device)
    hit = _cache_get(key)
    if hit is not None:
        return hit
    _check_shape(kind, seed, weak_fraction)
    if not isinstance(group_bits, int) or isinstance(group_bits, bool) or group_bits < 1 or group_bits & (group_bits - 1):
        raise InjectionError(f"group_bits must be a power of two, got {group_bits!r}")
    return _cache_put(key, _groups(kind, seed, float(weak_fraction), group_bits, amap, n_bits, torch.device(device)))


def weak_bitlines(kind: int, seed: int, weak_fraction: float, amap: AddressMap, n_bits: int,
                  device: torch.device) -> _WeakSet:
    """The bits of a tensor of ``n_bits`` placed by ``amap`` that lie on weak bitlines: those where
    :func:`~errormodels.models.weak_mask` (``seed``, ``kind``, ``bank << 20 | bit_in_row``) is true. Cached."""
    key = ("bitlines", kind, seed, weak_fraction, amap, n_bits, device)
    hit = _cache_get(key)
    if hit is not None:
        return hit
    _check_shape(kind, seed, weak_fraction)
    return _cache_put(key, _bitlines(kind, seed, float(weak_fraction), amap, n_bits, torch.device(device)))


def _check_shape(kind: int, seed: int, weak_fraction: float) -> None:
    for name, value in (("kind", kind), ("seed", seed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InjectionError(f"weak set {name} must be a non-negative integer, got {value!r}")
    if not isinstance(weak_fraction, (int, float)) or isinstance(weak_fraction, bool) or not 0 <= weak_fraction <= 1:
        raise InjectionError(f"weak_fraction must be in [0, 1], got {weak_fraction!r}")


# ----------------------------------------------------------------------------- the cache
_cache: "OrderedDict[tuple, _WeakSet]" = OrderedDict()
_cache_bytes = 0
_cache_lock = Lock()


def _cache_get(key: tuple) -> Optional[_WeakSet]:
    try:
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
            return hit
    except TypeError:  # an unhashable argument: the checks below say what is wrong
        return None


def _cache_put(key: tuple, value: _WeakSet) -> _WeakSet:
    global _cache_bytes
    with _cache_lock:
        if key not in _cache:
            _cache[key] = value
            _cache_bytes += value.nbytes
            while len(_cache) > 1 and (len(_cache) > _CACHE_ENTRIES or _cache_bytes > _CACHE_BYTES):
                _, old = _cache.popitem(last=False)
                _cache_bytes -= old.nbytes
        return _cache[key]


def clear_weak_cache() -> None:
    """Forget the cached weak-bit sets (they hold tensors on their devices)."""
    global _cache_bytes
    with _cache_lock:
        _cache.clear()
        _cache_bytes = 0


# ----------------------------------------------------------------------------- building
def _salt(seed: int, kind: int) -> int:
    return (seed * GAMMA + kind * SALT_KIND) & MASK64


def _groups(kind: int, seed: int, weak_fraction: float, group_bits: int, amap: AddressMap, n_bits: int,
            dev: torch.device) -> _WeakPieces:
    start = amap.start_address * 8  # linear bit of tensor bit 0
    run_bits = amap.run_bytes * 8
    if amap.row_bits % group_bits or (group_bits < run_bits and run_bits % group_bits):
        raise LayoutError(f"group_bits {group_bits} must divide the {amap.row_bits} bits of a row "
                          f"and the {run_bits} consecutive bits of the {amap.interleave} interleaving")
    piece = min(group_bits, run_bits)  # a group's bits that are consecutive in the tensor
    first, last = start // piece, (start + n_bits - 1) // piece
    n_pieces = last - first + 1
    if dev.type == "cpu" and sampler._flipkernel is not None and piece & (piece - 1) == 0:
        words = np.empty(-(-n_pieces // 64), dtype=np.uint64)
        sampler._flipkernel.weak_pieces(words, _salt(seed, kind), math.ceil(weak_fraction * float(1 << 53)),
                                        group_bits.bit_length() - 1, piece.bit_length() - 1, first, n_pieces,
                                        _INTERLEAVE[amap.interleave], amap.banks, amap.rows, amap.row_bytes,
                                        amap.line_bytes, sampler._threads())
        bits = words.view(np.uint8)
        weak_q = np.empty(sampler._flipkernel.bit_count(bits, n_pieces), dtype=np.int64)
        sampler._flipkernel.bit_list(weak_q, bits, n_pieces, first)
        return _WeakPieces(torch.from_numpy(weak_q), piece, start, n_bits, first, torch.from_numpy(bits), n_pieces)
    i64 = dict(dtype=torch.int64, device=dev)
    shift = group_bits.bit_length() - 1
    weak, flags = [], []
    for b0 in range(first, last + 1, _WEAK_BLOCK):
        q = torch.arange(b0, min(b0 + _WEAK_BLOCK, last + 1), **i64)
        lin_bit = q * piece
        bank, row, byte = amap.locate_linear(lin_bit >> 3)
        group = ((byte << 3) | (lin_bit & 7)) >> shift
        is_weak = weak_mask_torch(seed, kind, (bank << 40) | (row << 20) | group, weak_fraction)
        weak.append(q[is_weak])
        flags.append(is_weak)
    return _WeakPieces(torch.cat(weak), piece, start, n_bits, first, _pack_bits(torch.cat(flags)), n_pieces)


def _bitlines(kind: int, seed: int, weak_fraction: float, amap: AddressMap, n_bits: int,
              dev: torch.device) -> _WeakBitlines:
    start = amap.start_address * 8  # linear bit of tensor bit 0
    run_bits = amap.run_bytes * 8
    if dev.type == "cpu" and sampler._flipkernel is not None:
        return _bitlines_kernel(kind, seed, weak_fraction, amap, n_bits)
    i64 = dict(dtype=torch.int64, device=dev)
    first, last = start // run_bits, (start + n_bits - 1) // run_bits
    s = torch.arange(first, last + 1, **i64)
    seg_t = (s * run_bits - start).clamp(min=0)
    bank, _, byte = amap.locate_linear((seg_t + start) >> 3)
    seg_key = (bank << 20) | (byte * 8 + ((seg_t + start) & 7))
    banks = torch.unique(bank)
    ids = ((banks[:, None] << 20) | torch.arange(amap.row_bits, **i64)[None, :]).reshape(-1)
    weak = weak_mask_torch(seed, kind, ids, weak_fraction)
    keys = ids[weak]
    table = torch.zeros(amap.banks * amap.row_bits, dtype=torch.bool, device=dev)
    table[(keys >> 20) * amap.row_bits + (keys & ((1 << 20) - 1))] = True
    return _WeakBitlines(amap, n_bits, keys, table, seg_t, seg_key)


def _bitlines_kernel(kind: int, seed: int, weak_fraction: float, amap: AddressMap, n_bits: int) -> _WeakBitlines:
    """:func:`_bitlines` on the CPU: numpy for the segments, the kernel's hash for the bitlines."""
    k = sampler._flipkernel
    start, run_bits, row_bits = amap.start_address * 8, amap.run_bytes * 8, amap.row_bits
    first, last = start // run_bits, (start + n_bits - 1) // run_bits
    seg_t = np.maximum(np.arange(first, last + 1, dtype=np.int64) * run_bits - start, 0)
    bank, _, byte = amap.locate_linear((seg_t + start) >> 3)
    seg_key = (bank << 20) | (byte * 8 + ((seg_t + start) & 7))
    words = np.zeros(-(-amap.banks * row_bits // 64), dtype=np.uint64)  # row_bits: a multiple of 8
    table_bits = words.view(np.uint8)
    salt, thr = _salt(seed, kind), math.ceil(weak_fraction * float(1 << 53))
    keys = []
    row_words = np.empty(-(-row_bits // 64), dtype=np.uint64)
    for b in np.unique(bank).tolist():
        k.weak_ids(row_words, salt, thr, b << 20, row_bits)
        row = row_words.view(np.uint8)[: row_bits // 8]
        table_bits[b * (row_bits // 8): (b + 1) * (row_bits // 8)] = row
        lines = np.empty(k.bit_count(row, row_bits), dtype=np.int64)
        k.bit_list(lines, row, row_bits, b << 20)
        keys.append(lines)
    keys_np = np.concatenate(keys)
    seg_end = np.append(seg_t[1:], n_bits)
    idx0 = np.searchsorted(keys_np, seg_key)
    cum = np.concatenate([[0], np.cumsum(np.searchsorted(keys_np, seg_key + (seg_end - seg_t)) - idx0)])
    table = torch.from_numpy(np.unpackbits(table_bits, bitorder="little")[: amap.banks * row_bits].view(np.bool_))
    t = torch.from_numpy
    return _WeakBitlines(amap, n_bits, t(keys_np), table, t(seg_t), t(seg_key), t(idx0.astype(np.int64)),
                         t(cum.astype(np.int64)), table_bits)

"""The weak bits of a tensor under a clustered model: wordline groups or bitlines, found once and cached.

A weak set is a :class:`~errormodels.models.WeakBits`: ``n`` bits, ranked in position order, with
``rank_of``, ``position_of`` and ``contains``. Finding one takes one pass over the wordline groups
the tensor covers (``n_bits / group_bits`` ids), or over the bitlines of the banks it touches; it
is cached per (shape, kind, seed, weak fraction, group size, layout, size, device), so repeated
injections pay only for the flips.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Union

import torch

from errormodels.inject.mix import weak_mask_torch
from errormodels.inject.stats import InjectionError
from errormodels.layout import AddressMap, LayoutError, _div, _mod

__all__ = ["weak_groups", "weak_bitlines", "clear_weak_cache"]

_WEAK_BLOCK = 1 << 18  # location ids hashed per block when finding weak sets (cache-sized)


def _searchsorted(sorted_seq: torch.Tensor, values: torch.Tensor, right: bool = False) -> torch.Tensor:
    return torch.searchsorted(sorted_seq, values, right=right)


class _WeakPieces:
    """Weak bits of a wordline model: weak pieces of ``piece`` bits, consecutive in the tensor.

    Pieces are numbered in linear bit space (piece ``q`` holds linear bits ``q * piece ..``);
    ranks count the weak bits of the weak pieces that meet the tensor, in order, so rank
    ``r`` is bit ``r % piece`` of weak piece ``r // piece`` (those outside the tensor are never
    drawn: chunks ask for the ranks of their own range).
    """

    def __init__(self, weak_q: torch.Tensor, piece: int, start: int, n_bits: int, first: int,
                 table: Optional[torch.Tensor]) -> None:
        self.weak_q = weak_q  # sorted indices of weak pieces meeting the tensor
        self.piece = piece
        self.start = start  # linear bit of tensor bit 0
        self.first = first  # first piece meeting the tensor
        self.table = table  # bool per piece from ``first``, or None (then searchsorted)
        ends = self.rank_of(torch.tensor([0, n_bits], dtype=torch.int64, device=weak_q.device)).tolist()
        self.n = ends[1] - ends[0]

    def rank_of(self, pos: torch.Tensor) -> torch.Tensor:
        lin = pos + self.start
        q = _div(lin, self.piece)
        j = torch.searchsorted(self.weak_q, q)
        hit = self.weak_q[j.clamp(max=max(self.weak_q.numel() - 1, 0))] == q if self.weak_q.numel() else q < 0
        return j * self.piece + torch.where(hit, lin - q * self.piece, torch.zeros_like(lin))

    def position_of(self, rank: torch.Tensor) -> torch.Tensor:
        return self.weak_q[_div(rank, self.piece)] * self.piece + _mod(rank, self.piece) - self.start

    def contains(self, pos: torch.Tensor) -> torch.Tensor:
        q = _div(pos + self.start, self.piece)
        if self.table is not None:
            return self.table[q - self.first]
        if self.weak_q.numel() == 0:
            return torch.zeros_like(pos, dtype=torch.bool)
        j = torch.searchsorted(self.weak_q, q).clamp(max=self.weak_q.numel() - 1)
        return self.weak_q[j] == q


class _WeakBitlines:
    """Weak bits of a bitline model: in each row segment, the bits on weak bitlines of its bank."""

    def __init__(self, amap: AddressMap, n_bits: int, keys: torch.Tensor, table: torch.Tensor,
                 seg_t: torch.Tensor, seg_key: torch.Tensor) -> None:
        self.amap = amap
        self.n_bits = n_bits
        self.keys = keys  # sorted bank << 20 | bitline of weak bitlines of the banks touched
        self.table = table  # bool [banks * row_bits], True on weak bitlines
        self.seg_t = seg_t  # first tensor bit of each row segment
        self.seg_key = seg_key  # bank << 20 | bit_in_row of that bit
        seg_end = torch.cat([seg_t[1:], torch.tensor([n_bits], dtype=torch.int64, device=seg_t.device)])
        self.idx0 = _searchsorted(keys, seg_key)
        idx1 = _searchsorted(keys, seg_key + (seg_end - seg_t))
        self.cum = torch.cat([torch.zeros(1, dtype=torch.int64, device=seg_t.device), torch.cumsum(idx1 - self.idx0, 0)])
        self.n = int(self.cum[-1])

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


_WeakSet = Union[_WeakPieces, _WeakBitlines]


def weak_groups(kind: int, seed: int, weak_fraction: float, group_bits: int, amap: AddressMap, n_bits: int,
                device: torch.device) -> _WeakSet:
    """The bits of a tensor of ``n_bits`` placed by ``amap`` that lie in weak wordline groups.

    A group is ``group_bits`` adjacent bits of a row (a power of two dividing the row and the
    interleaving's contiguous run); it is weak where :func:`~errormodels.models.weak_mask`
    (``seed``, ``kind``, ``bank << 40 | row << 20 | group``) says so. Cached.
    """
    _check_shape(kind, seed, weak_fraction)
    if not isinstance(group_bits, int) or isinstance(group_bits, bool) or group_bits < 1 or group_bits & (group_bits - 1):
        raise InjectionError(f"group_bits must be a power of two, got {group_bits!r}")
    return _weak_set_cached("groups", kind, seed, float(weak_fraction), group_bits, amap, n_bits, str(device))


def weak_bitlines(kind: int, seed: int, weak_fraction: float, amap: AddressMap, n_bits: int,
                  device: torch.device) -> _WeakSet:
    """The bits of a tensor of ``n_bits`` placed by ``amap`` that lie on weak bitlines: those where
    :func:`~errormodels.models.weak_mask` (``seed``, ``kind``, ``bank << 20 | bit_in_row``) is true. Cached."""
    _check_shape(kind, seed, weak_fraction)
    return _weak_set_cached("bitlines", kind, seed, float(weak_fraction), 0, amap, n_bits, str(device))


def _check_shape(kind: int, seed: int, weak_fraction: float) -> None:
    for name, value in (("kind", kind), ("seed", seed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InjectionError(f"weak set {name} must be a non-negative integer, got {value!r}")
    if not isinstance(weak_fraction, (int, float)) or isinstance(weak_fraction, bool) or not 0 <= weak_fraction <= 1:
        raise InjectionError(f"weak_fraction must be in [0, 1], got {weak_fraction!r}")


@lru_cache(maxsize=256)  # one entry per (model shape, placement, size): a network's layers fit
def _weak_set_cached(shape: str, kind: int, seed: int, weak_fraction: float, group_bits: int, amap: AddressMap,
                     n_bits: int, device: str) -> _WeakSet:
    dev = torch.device(device)
    start = amap.start_address * 8  # linear bit of tensor bit 0
    run_bits = amap.run_bytes * 8
    i64 = dict(dtype=torch.int64, device=dev)
    if shape == "groups":
        if amap.row_bits % group_bits or (group_bits < run_bits and run_bits % group_bits):
            raise LayoutError(f"group_bits {group_bits} must divide the {amap.row_bits} bits of a row "
                              f"and the {run_bits} consecutive bits of the {amap.interleave} interleaving")
        piece = min(group_bits, run_bits)  # a group's bits that are consecutive in the tensor
        first, last = start // piece, (start + n_bits - 1) // piece
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
        # a bool per piece (at most 1/32 of the tensor's size) makes "is this bit weak" a lookup
        table = torch.cat(flags) if piece >= 32 else None
        return _WeakPieces(torch.cat(weak), piece, start, n_bits, first, table)
    if shape == "bitlines":
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
    raise InjectionError(f"unknown weak-set shape {shape!r}")


def clear_weak_cache() -> None:
    """Forget the cached weak-bit sets (they hold tensors on their devices)."""
    _weak_set_cached.cache_clear()


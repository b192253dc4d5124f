"""Bit-error injection into tensors under EDEN's four error models: exact, sparse, layout-aware.

What is flipped
---------------
A tensor's bits are numbered as in :mod:`errormodels.layout`: bit ``k`` (LSB first) of
byte ``i`` of its storage (C order) is bit ``8 i + k``; on little-endian hosts bit ``k``
of element ``j`` of a ``w``-bit dtype is bit ``j w + k``. Floats are flipped through an
integer view of the same storage, so flipping bit ``p`` changes exactly that bit
(sign, exponent and mantissa bits alike; NaN payloads survive). Packed int4
(``dtype_bits=4``) is a uint8 tensor holding two 4-bit values, element ``2 i`` in the
low nibble of byte ``i``, element ``2 i + 1`` in the high nibble.

How flips are drawn
-------------------
Every bit flips independently with the probability its model gives it, and the
number of flips follows that distribution exactly, but the cost is proportional to
the number of flips, never to the number of bits:

* a set of ``n`` bits that all flip with probability ``p`` is sampled by the **block
  sampler** (the section of that name below defines its stream): the bits are cut into
  blocks of 65,536; each block gets a Binomial(block size, p) count (numpy, all blocks at
  once), then that many distinct uniform positions from a counter-based SplitMix64 stream
  keyed by one draw of the generator (16 bits per position, four per 64-bit word;
  duplicates are drawn again). Given the binomial counts each bit is chosen independently
  with probability ``p``, so the total is Binomial(n, p) exactly, with no per-bit draws and
  no duplicate positions. For ``p > 1/2`` the bits that do *not* flip are drawn this way.
* **uniform** (0): one set, all bits, ``p = ber``. On the CPU a compiled kernel
  (``errormodels/_flipkernel.c``) does it block by block: draw the block's positions into a
  bitmap, then (for :func:`inject`) write ``copy = source XOR bitmap`` in one pass, or (for
  :func:`inject_`) flip in place; on ``torch.get_num_threads()`` threads for large tensors.
* **wordline** (1) and **bitline** (2): the tensor's bits are split into weak and
  strong bits by the :class:`~errormodels.layout.AddressMap` (default ``AddressMap()``:
  bank 0, row 0, row interleaving) and :func:`~errormodels.models.weak_mask`. Weak bits
  are drawn at ``p_weak`` within the weak set; strong bits at ``p_strong`` by drawing
  over all bits and dropping the draws that land on weak bits (a Bernoulli process
  restricted to a subset is a Bernoulli process on it). Finding the weak set takes one
  pass over the wordline groups the tensor covers (``n_bits / group_bits`` ids), or
  over the bitlines of the banks it touches; it is cached per (model shape, layout,
  size, device), so repeated injections pay only for the flips.
* **bit-value** (3): candidates at ``max(p01, p10)`` over all bits, each kept with
  probability ``p01 / max`` if the bit holds 0 and ``p10 / max`` if it holds 1 (thinning:
  exact, and no pass over the data).

The non-uniform models process the tensor in chunks of whole elements sized so that a
chunk draws about ``2**20`` candidates (a few int64 temporaries of 8 MiB), which bounds
the memory at high error rates.

Cost on a 2-core CPU (``python benchmarks/inject.py``, ``docs/error-model-format.md``): the
uniform model adds about 3-4 ns per flipped bit (per thread) to a copy, plus a fixed 0.1-0.5 ms
for a tensor of 25M values (binomial counts per block, a second thread). In place, blocks with
a flip per 256 bytes or more are rewritten in one pass, sparser ones byte by byte. The other
models take about 40-50 ns per flip (sorted positions from the kernel, then torch index
operations), plus for bit-value one more uniform and read per candidate; wordline and bitline
models also pay once per (model shape, placement, size, device) for finding the weak set
(cached, 256 entries).

Mitigation
----------
After injection, ``mitigation="zero"`` sets every value outside ``value_range`` to 0
and ``"saturate"`` clamps it to the nearest bound (NaN becomes 0); NaN and +-Inf are
always out of range. EDEN's seed paper found zeroing better. ``value_range`` comes
from clean data (:func:`calibrate_range`). The check runs over every element (what a
reader of the memory would do), so it costs one pass over the tensor.

Randomness
----------
Every draw comes from the ``torch.Generator`` given (or one seeded with ``seed``) on the
tensor's device: a key for the block sampler, and torch uniforms for the bit-value model's
thinning. The same seed gives the same flips on the same device, with or without the
compiled kernel (:data:`KERNEL` says which runs; without a C compiler at install time the
vectorised torch sampler stands in, slower). The block sampler's positions depend only on
(key, counts), so they are the same on every device; the key drawn from a CUDA generator
differs from a CPU one's.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Iterable, Literal, Optional, Union

import numpy as np
import torch

from errormodels.layout import AddressMap, LayoutError, _div, _mod
from errormodels.models import Bitline, BitValue, ErrorModel, Uniform, Wordline

__all__ = [
    "InjectionError",
    "InjectionStats",
    "inject_",
    "inject",
    "mitigate_",
    "calibrate_range",
    "pack_int4",
    "unpack_int4",
    "weak_mask_torch",
    "clear_weak_cache",
    "SUPPORTED_DTYPES",
]

Mitigation = Optional[Literal["zero", "saturate"]]

SUPPORTED_DTYPES: dict[torch.dtype, int] = {
    torch.float32: 32,
    torch.float16: 16,
    torch.bfloat16: 16,
    torch.float64: 64,
    torch.int32: 32,
    torch.int16: 16,
    torch.int8: 8,
    torch.uint8: 8,
}
"""Dtypes :func:`inject_` accepts and their width in bits (packed int4: uint8 or int8 storage with ``dtype_bits=4``)."""

_CHUNK_CANDIDATES = 1 << 20  # expected draws per chunk (8 MiB per int64 temporary)
_MIN_CHUNK_BITS = 1 << 22
_WEAK_BLOCK = 1 << 18  # location ids hashed per block when finding weak sets (cache-sized)


class InjectionError(ValueError):
    """An unsupported tensor, a bad argument combination, or a generator on another device."""


# --------------------------------------------------------------------------- stats
@dataclass(frozen=True)
class InjectionStats:
    """What one injection did (add stats of several tensors with ``+``).

    Attributes
    ----------
    bits_total : int
        Bits exposed to errors (the tensor's storage).
    bits_flipped : int
        Bits flipped (``flips_0to1 + flips_1to0``).
    flips_0to1, flips_1to0 : int
        Flips of bits that held 0 and of bits that held 1.
    elements_total : int
        Elements (values; two per byte for packed int4).
    elements_touched : int
        Elements with at least one flipped bit.
    values_mitigated : int
        Values found out of range (or NaN/Inf) and zeroed or saturated.
    weak_bits_total, weak_bits_flipped : int
        For wordline and bitline models, bits in weak locations and flips among them (0 otherwise).
    """

    bits_total: int = 0
    bits_flipped: int = 0
    flips_0to1: int = 0
    flips_1to0: int = 0
    elements_total: int = 0
    elements_touched: int = 0
    values_mitigated: int = 0
    weak_bits_total: int = 0
    weak_bits_flipped: int = 0

    @property
    def ber(self) -> float:
        """Observed bit error rate (flipped / total bits)."""
        return self.bits_flipped / self.bits_total if self.bits_total else 0.0

    def __add__(self, other: "InjectionStats") -> "InjectionStats":
        if not isinstance(other, InjectionStats):
            return NotImplemented
        o = other.__dict__  # plain int fields: cheaper than asdict's deep copy
        return InjectionStats(**{k: v + o[k] for k, v in self.__dict__.items()})

    def to_dict(self) -> dict[str, int]:
        """The counts, JSON-ready."""
        return asdict(self)


# ------------------------------------------------------------------ weak_mask port
_M64 = (1 << 64) - 1


def _s64(c: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    c &= _M64
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix64_torch(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function on int64 bits (wrapping arithmetic)."""
    z = z ^ _shr(z, 30)
    z = z * _s64(0xBF58476D1CE4E5B9)
    z = z ^ _shr(z, 27)
    z = z * _s64(0x94D049BB133111EB)
    return z ^ _shr(z, 31)


def weak_mask_torch(seed: int, kind: int, location: torch.Tensor, weak_fraction: float) -> torch.Tensor:
    """:func:`errormodels.models.weak_mask` in torch int64 arithmetic, on ``location``'s device.

    Returns the same booleans as the numpy version for the same (non-negative) ids.
    """
    salt = _s64(seed * 0x9E3779B97F4A7C15 + kind * 0xD1B54A32D192ED03)
    u = _shr(_mix64_torch(location.to(torch.int64) ^ salt), 11)
    return u.to(torch.float64) < weak_fraction * float(1 << 53)


# ------------------------------------------------------------------ weak bit sets
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


def _weak_set(model: ErrorModel, amap: AddressMap, n_bits: int, device: torch.device) -> _WeakSet:
    """Weak bits of a wordline or bitline model for a tensor of ``n_bits`` placed by ``amap`` (cached)."""
    group_bits = model.group_bits if isinstance(model, Wordline) else 0
    return _weak_set_cached(model.number, model.seed, model.weak_fraction, group_bits, amap, n_bits, str(device))


@lru_cache(maxsize=256)  # one entry per (model shape, placement, size): a network's layers fit
def _weak_set_cached(kind: int, seed: int, weak_fraction: float, group_bits: int, amap: AddressMap, n_bits: int,
                     device: str) -> _WeakSet:
    dev = torch.device(device)
    start = amap.start_address * 8  # linear bit of tensor bit 0
    run_bits = amap.run_bytes * 8
    i64 = dict(dtype=torch.int64, device=dev)
    if kind == Wordline.number:
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
    if kind == Bitline.number:
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
    raise InjectionError(f"model number {kind} has no weak locations")


def clear_weak_cache() -> None:
    """Forget the cached weak-bit sets (they hold tensors on their devices)."""
    _weak_set_cached.cache_clear()


# ----------------------------------------------------------------- block sampler
# A Bernoulli(p) process over positions [0, n) (0 < p <= 1/2), from one 62-bit key drawn from
# the caller's generator. The positions are cut into blocks of _BLOCK_BITS; block b (nb
# positions, fewer in the last one) holds c_b ~ Binomial(nb, p) chosen positions, all counts
# drawn at once by numpy's PCG64 seeded with the key (the full blocks' in one call, then the
# partial block's). The c_b positions are the first c_b distinct values below nb, in draw
# order, of
#     word j = mix64(key + GAMMA * (b * 2**32 + j)),  j = 0, 1, ...      (SplitMix64)
#     draw t = (word >> (t * L)) & (2**L - 1),         t = 0 .. 64 // L - 1
# with L = max(1, bit_length(nb - 1)): a uniform subset of the block of that size. Given the
# binomial counts, each position is then chosen independently with probability p, and the
# total is Binomial(n, p) exactly. Per chosen position it costs a quarter of a hash and a
# duplicate check; the positions of a block are a cache-sized neighbourhood (8 KiB of data).
# numpy may change Generator.binomial's stream in a new release (NEP 19): the counts, and so the
# flips of a seed, are reproducible with the same numpy version (constraints.txt pins it).
#
# Two implementations give the same positions: the compiled one (errormodels/_flipkernel.c,
# built at install time when a C compiler is there; on the CPU) and the vectorised torch one
# below (any device; the fallback). tests/test_inject_kernel.py holds them to each other.

_BLOCK_BITS = 1 << 16
_GAMMA = 0x9E3779B97F4A7C15

try:
    from errormodels import _flipkernel
except ImportError:  # pragma: no cover - built at install time wherever a C compiler is
    _flipkernel = None
_STREAM_VERSION = 1  # bump with any change to the stream or the kernel's interface (and in the C file)
if _flipkernel is not None and (_flipkernel.BLOCK_BITS != _BLOCK_BITS or
                                getattr(_flipkernel, "STREAM_VERSION", None) != _STREAM_VERSION):
    warnings.warn("errormodels/_flipkernel was built from another version of the C source; using the slower "
                  "torch sampler (rebuild with: pip install -e .)", RuntimeWarning, stacklevel=2)
    _flipkernel = None

KERNEL: str = "compiled" if _flipkernel is not None else "torch"
"""Which block sampler the CPU uses: ``"compiled"`` (the C kernel) or ``"torch"`` (same flips, slower)."""

_WORDS_SLACK = 1.0  # scales the words the torch sampler draws at first (tests shrink it to force redraws)
_PAR_MIN_BLOCKS = 16  # blocks (8 KiB of data each) per thread before the kernel is split across threads
_pool: Optional[ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def _draw_key(gen: torch.Generator) -> int:
    """One 62-bit key from ``gen`` (on its device)."""
    return int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))


def _block_counts(n: int, p: float, key: int) -> np.ndarray:
    """Chosen positions per block of a process over ``n`` positions: independent binomials (int64)."""
    full, rest = divmod(n, _BLOCK_BITS)
    rng = np.random.Generator(np.random.PCG64(key))
    counts = np.empty(full + (rest > 0), dtype=np.int64)
    counts[:full] = rng.binomial(_BLOCK_BITS, p, size=full)  # one (n, p): numpy sets the sampler up once
    if rest:
        counts[full] = rng.binomial(rest, p)
    return counts


def _ranks_torch(n: int, counts: np.ndarray, key: int, b0: int, b1: int, device: torch.device) -> torch.Tensor:
    """The block sampler's positions of blocks [b0, b1), sorted, by vectorised torch operations."""
    c_all = counts[b0:b1]
    slots = np.flatnonzero(c_all)
    if slots.size == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    blocks = (slots + b0).astype(np.int64)
    c = c_all[slots]
    nb = np.minimum(_BLOCK_BITS, n - blocks * _BLOCK_BITS)
    bits = np.maximum(1, np.frexp((nb - 1).astype(np.float64))[1]).astype(np.int64)  # bit_length, >= 1
    per_word = 64 // bits
    # expected draws for c distinct of nb, at acceptance nb / 2**L, with room for 5 sigma
    draws = -nb * np.log1p(-c / (nb + 1.0)) * (2.0 ** bits / nb)
    words = np.maximum(1, np.ceil(_WORDS_SLACK * (draws + 5.0 * np.sqrt(draws) + 8.0) / per_word)).astype(np.int64)
    i64 = dict(dtype=torch.int64, device=device)
    pieces = []
    for group in np.unique(bits):  # blocks drawing as many bits per position (a short last block differs)
        todo = np.flatnonzero(bits == group)
        while todo.size:
            w_n = torch.as_tensor(words[todo], **i64)
            slot = torch.repeat_interleave(torch.arange(todo.size, **i64), w_n)  # index into todo, per word
            first = torch.cumsum(w_n, 0) - w_n
            j = torch.arange(slot.numel(), **i64) - first[slot]
            blk = torch.as_tensor(blocks[todo], **i64)[slot]
            w = _mix64_torch(((blk << 32) + j) * _s64(_GAMMA) + _s64(key))
            shifts = torch.arange(64 // int(group), **i64) * int(group)  # t * L, t < 64 // L
            pos = (w[:, None] >> shifts[None, :]) & ((1 << int(group)) - 1)  # bits above are masked off
            ok = pos < torch.as_tensor(nb[todo], **i64)[slot][:, None]
            g = (blk[:, None] * _BLOCK_BITS + pos)[ok]  # draw order (word-major)
            slot = slot[:, None].expand_as(pos)[ok]
            order = torch.sort(g, stable=True).indices  # a repeat of a position in draw order sorts after it
            dup = torch.zeros(g.numel(), dtype=torch.bool, device=device)
            dup[order[1:]] = g[order[1:]] == g[order[:-1]]
            g, slot = g[~dup], slot[~dup]
            got = torch.bincount(slot, minlength=todo.size)
            rank = torch.arange(g.numel(), **i64) - (torch.cumsum(got, 0) - got)[slot]
            need = torch.as_tensor(c[todo], **i64)
            pieces.append(g[(rank < need[slot]) & (got >= need)[slot]])
            short = (got < need).cpu().numpy()
            todo, words = todo[short], words.copy()
            words[todo] *= 2  # too few distinct draws in these blocks (rare): again, with twice the words
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    return torch.sort(out).values


def _ranks(n: int, counts: np.ndarray, key: int, b0: int, b1: int, device: torch.device) -> torch.Tensor:
    """The block sampler's positions of blocks [b0, b1), sorted (int64, on ``device``)."""
    if device.type == "cpu" and _flipkernel is not None:
        out = np.empty(int(counts[b0:b1].sum()), dtype=np.int64)
        _flipkernel.sample_ranks(out, counts, key, n, b0, b1)
        return torch.from_numpy(out)
    return _ranks_torch(n, counts, key, b0, b1, device)


def _bernoulli_ranks(n: int, p: float, gen: torch.Generator, device: torch.device, offset: int = 0) -> torch.Tensor:
    """Sorted distinct indices in [offset, offset + n), each present independently with probability ``p``."""
    if n <= 0 or p <= 0.0:
        return torch.empty(0, dtype=torch.int64, device=device)
    if p >= 1.0:
        return torch.arange(offset, offset + n, dtype=torch.int64, device=device)
    key = _draw_key(gen)
    if p <= 0.5:
        counts = _block_counts(n, p, key)
        return _ranks(n, counts, key, 0, counts.size, device).add_(offset)
    counts = _block_counts(n, 1.0 - p, key)  # the positions that are *not* chosen
    keep = torch.ones(n, dtype=torch.bool, device=device)
    keep[_ranks(n, counts, key, 0, counts.size, device)] = False
    return keep.nonzero().squeeze(1).add_(offset)


def _written(t: torch.Tensor) -> None:
    """``t`` was changed through a numpy view: bump its version, as a torch in-place op would, so
    autograd refuses a backward pass through values saved before the change."""
    if not t.is_inference():
        torch.autograd.graph.increment_version(t)


def _kernel_pool(workers: int) -> Optional[ThreadPoolExecutor]:
    """The kernel's helper threads (created on first use; None once the interpreter shuts down)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            if sys.is_finalizing():
                return None
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inject")
        return _pool


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist here."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _flip_uniform_kernel(data: torch.Tensor, src: Optional[torch.Tensor], width: int, p: float,
                         gen: torch.Generator) -> InjectionStats:
    """The uniform model on a CPU uint8 view by the compiled kernel: copy from ``src`` (if given)
    and flip, block by block (split across threads for large tensors)."""
    assert _flipkernel is not None
    dst = data.detach().numpy()
    src_np = src.detach().numpy() if src is not None else None
    n_bits = dst.size * 8
    key = _draw_key(gen)
    counts = _block_counts(n_bits, p, key)
    shift = int(math.log2(width))

    def run(b0: int, b1: int) -> tuple[int, int, int]:
        return _flipkernel.flip_uniform(dst, src_np, counts, key, b0, b1, shift)

    threads = min(torch.get_num_threads(), counts.size // _PAR_MIN_BLOCKS)
    pool = _kernel_pool(threads - 1) if threads > 1 else None
    if pool is None:
        parts = [run(0, counts.size)]
    else:
        edges = np.linspace(0, counts.size, threads + 1).astype(np.int64).tolist()
        try:
            rest = [pool.submit(run, edges[i], edges[i + 1]) for i in range(1, threads)]
        except RuntimeError:  # the pool shut down (interpreter exit): this thread does it all
            rest = [None] * (threads - 1)
        try:
            parts = [run(edges[0], edges[1])]  # this thread's share
            parts += [f.result() if f is not None else run(edges[i + 1], edges[i + 2]) for i, f in enumerate(rest)]
        finally:  # also on an interrupt: no helper may still write once this returns
            futures_wait([f for f in rest if f is not None])
    flipped, ones, touched = (sum(v) for v in zip(*parts))
    _written(data)
    return InjectionStats(bits_total=n_bits, bits_flipped=flipped, flips_0to1=flipped - ones, flips_1to0=ones,
                          elements_total=n_bits // width, elements_touched=touched)


# ----------------------------------------------------------------------- flipping
class _Flipper:
    """XORs sorted, distinct bit positions into a uint8 view and counts what it did."""

    def __init__(self, data: torch.Tensor, elem_shift: int) -> None:
        self.data = data  # flat uint8 view of the tensor's storage
        self.elem_shift = elem_shift  # log2(bits per element)
        z = torch.zeros((), dtype=torch.int64, device=data.device)
        self.flipped = 0
        self.ones_flipped = z
        self.touched = z
        self.weak_flipped = 0

    def flip(self, pos: torch.Tensor, need_elements: bool = False,
             old_bytes: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """Flip bits ``pos`` (sorted, distinct).

        Counts the touched elements itself unless ``need_elements``; then it returns them
        (sorted, distinct) for :meth:`count_touched`. ``old_bytes``, if given, holds the
        current byte of each position (saves reading them again).
        """
        if pos.numel() == 0:
            return pos if need_elements else None
        byte = pos >> 3
        bits = _bit_masks(pos)
        ubyte, inv = torch.unique_consecutive(byte, return_inverse=True)
        if ubyte.numel() == byte.numel():
            mask = bits
        else:  # several flips in one byte: distinct bits, so their sum is their or
            mask = torch.zeros(ubyte.numel(), dtype=torch.uint8, device=pos.device).index_add_(0, inv, bits)
        if old_bytes is None:
            old = self.data.index_select(0, ubyte)
        elif ubyte.numel() == byte.numel():
            old = old_bytes
        else:  # positions sharing a byte carry the same old byte
            old = torch.empty(ubyte.numel(), dtype=torch.uint8, device=pos.device).index_copy_(0, inv, old_bytes)
        self.ones_flipped = self.ones_flipped + _popcount8(old & mask).sum()
        self.data.index_copy_(0, ubyte, old ^ mask)
        self.flipped += pos.numel()
        if self.elem_shift == 3:
            elems = ubyte
        elif self.elem_shift > 3:
            elems = ubyte >> (self.elem_shift - 3)
        else:
            elems = pos >> self.elem_shift
        if need_elements:
            return elems if self.elem_shift == 3 else torch.unique_consecutive(elems)
        distinct = 1 + (elems[1:] != elems[:-1]).sum() if self.elem_shift != 3 else elems.numel()
        self.touched = self.touched + distinct
        return None

    def count_touched(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add the size of the union of two sorted distinct element lists."""
        total = a.numel() + b.numel()
        if a.numel() and b.numel():
            idx = _searchsorted(a, b).clamp(max=a.numel() - 1)
            total = total - (a[idx] == b).sum()
        self.touched = self.touched + total

    def stats(self, n_bits: int, width: int, weak_bits: int = 0) -> InjectionStats:
        """What the flips did, for a tensor of ``n_bits`` bits and ``width``-bit elements."""
        ones_flipped, touched = (int(v) for v in torch.stack([self.ones_flipped, self.touched]).tolist())
        return InjectionStats(bits_total=n_bits, bits_flipped=self.flipped, flips_0to1=self.flipped - ones_flipped,
                              flips_1to0=ones_flipped, elements_total=n_bits // width, elements_touched=touched,
                              weak_bits_total=weak_bits, weak_bits_flipped=self.weak_flipped)


def _bit_masks(pos: torch.Tensor) -> torch.Tensor:
    """``1 << (pos % 8)`` as uint8."""
    return torch.bitwise_left_shift(torch.ones((), dtype=torch.uint8, device=pos.device), pos.to(torch.uint8) & 7)


def _popcount8(x: torch.Tensor) -> torch.Tensor:
    """Set bits of each uint8 (as uint8)."""
    x = x - ((x >> 1) & 0x55)
    x = (x & 0x33) + ((x >> 2) & 0x33)
    return (x + (x >> 4)) & 0x0F


def _generator(tensor: torch.Tensor, generator: Optional[torch.Generator], seed: Optional[int]) -> torch.Generator:
    if (generator is None) == (seed is None):
        raise InjectionError("give exactly one of generator= and seed=")
    if generator is None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise InjectionError(f"seed must be a non-negative integer, got {seed!r}")
        return torch.Generator(device=tensor.device).manual_seed(seed)
    gdev, tdev = torch.device(generator.device), tensor.device
    if gdev.type != tdev.type or (tdev.type != "cpu" and (gdev.index or 0) != (tdev.index or 0)):
        raise InjectionError(f"the generator is on {gdev}, the tensor on {tdev}: give a generator on the tensor's device")
    return generator


def _width(tensor: torch.Tensor, dtype_bits: Optional[int]) -> int:
    if tensor.dtype not in SUPPORTED_DTYPES:
        raise InjectionError(f"unsupported dtype {tensor.dtype}; supported: "
                             f"{', '.join(str(d) for d in SUPPORTED_DTYPES)} and packed int4 (uint8, dtype_bits=4)")
    width = SUPPORTED_DTYPES[tensor.dtype]
    if dtype_bits is None or dtype_bits == width:
        return width
    if dtype_bits == 4 and tensor.dtype in (torch.uint8, torch.int8):
        return 4
    raise InjectionError(f"dtype_bits={dtype_bits!r} does not fit {tensor.dtype} (use 4 for int4 packed in uint8)")


def _chunk_bits(n_bits: int, p_max: float) -> int:
    if p_max <= 0 or _CHUNK_CANDIDATES / p_max >= n_bits:
        return max(n_bits, 64)
    bits = max(_MIN_CHUNK_BITS, int(_CHUNK_CANDIDATES / p_max))
    return max(64, bits - bits % 64)  # whole bytes and whole elements


def _inject_flat(data: torch.Tensor, width: int, model: ErrorModel, gen: torch.Generator,
                 layout: Optional[AddressMap], src: Optional[torch.Tensor] = None) -> InjectionStats:
    """Flip bits of the flat uint8 view ``data`` in place under ``model`` (after copying ``src``
    into it, if given: the compiled kernel does both in one pass)."""
    dev = data.device
    n_bits = data.numel() * 8
    block_sampled = isinstance(model, Uniform) and 0.0 < model.ber <= 0.5
    if block_sampled and dev.type == "cpu" and _flipkernel is not None:
        return _flip_uniform_kernel(data, src, width, model.ber, gen)
    if src is not None:
        data.copy_(src)
    if block_sampled:
        key = _draw_key(gen)
        counts = _block_counts(n_bits, model.ber, key)
        flipper = _Flipper(data, int(math.log2(width)))
        step = max(1, int(_CHUNK_CANDIDATES / (model.ber * _BLOCK_BITS)))  # blocks per chunk
        for b0 in range(0, counts.size, step):
            flipper.flip(_ranks(n_bits, counts, key, b0, min(b0 + step, counts.size), dev))
        return flipper.stats(n_bits, width)
    flipper = _Flipper(data, int(math.log2(width)))
    weak: Optional[_WeakSet] = None
    if isinstance(model, Uniform):
        p_max = model.ber
    elif isinstance(model, (Wordline, Bitline)):
        amap = layout if layout is not None else AddressMap()
        amap.check_fits(data.numel())
        weak = _weak_set(model, amap, n_bits, dev)
        p_weak, p_strong = min(model.p_weak, 1.0), min(model.p_strong, 1.0)
        p_max = (weak.n * p_weak + (n_bits * p_strong if weak.n < n_bits else 0.0)) / n_bits  # draws per bit
    elif isinstance(model, BitValue):
        p01, p10 = min(model.p01, 1.0), min(model.p10, 1.0)
        p_max = max(p01, p10)
    else:
        raise InjectionError(f"unknown error model {model!r}")

    chunk = _chunk_bits(n_bits, p_max)
    for lo in range(0, n_bits if p_max > 0 else 0, chunk):
        hi = min(lo + chunk, n_bits)
        if isinstance(model, Uniform):
            flipper.flip(_bernoulli_ranks(hi - lo, p_max, gen, dev, offset=lo))
        elif weak is not None:
            if weak.n:
                r0, r1 = weak.rank_of(torch.tensor([lo, hi], dtype=torch.int64, device=dev)).tolist()
                pos = weak.position_of(_bernoulli_ranks(r1 - r0, p_weak, gen, dev, offset=r0))
                flipper.weak_flipped += pos.numel()
            else:
                pos = torch.empty(0, dtype=torch.int64, device=dev)
            cand = _bernoulli_ranks(hi - lo if weak.n < n_bits else 0, p_strong, gen, dev, offset=lo)
            cand = cand[~weak.contains(cand)]
            flipper.count_touched(flipper.flip(pos, need_elements=True), flipper.flip(cand, need_elements=True))
        else:
            cand = _bernoulli_ranks(hi - lo, p_max, gen, dev, offset=lo)
            if p01 == p10:
                flipper.flip(cand)
                continue
            old = data.index_select(0, cand >> 3)
            holds_one = ((old & _bit_masks(cand)) != 0).to(torch.int64)
            keep_p = torch.tensor([p01 / p_max, p10 / p_max], dtype=torch.float64, device=dev)[holds_one]
            keep = torch.rand(cand.numel(), dtype=torch.float64, generator=gen, device=dev) < keep_p
            flipper.flip(cand[keep], old_bytes=old[keep])

    return flipper.stats(n_bits, width, weak.n if weak is not None else 0)


# --------------------------------------------------------------------- int4 helpers
def unpack_int4(packed: torch.Tensor, signed: bool = True) -> torch.Tensor:
    """Values of a packed int4 tensor (uint8/int8, two per byte, low nibble first), flat int8.

    Signed values are two's complement (-8 .. 7), unsigned 0 .. 15.
    """
    b = packed.reshape(-1).view(torch.uint8) if packed.dtype == torch.int8 else packed.reshape(-1)
    nib = torch.stack([b & 0xF, b >> 4], dim=1).reshape(-1).to(torch.int8)
    return torch.where(nib >= 8, nib - 16, nib) if signed else nib


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Pack an even number of int4 values (-8 .. 15, signed or unsigned) two per uint8, low nibble first."""
    v = values.reshape(-1).to(torch.int16)
    if v.numel() % 2:
        raise InjectionError("pack_int4 needs an even number of values")
    if v.numel() and (int(v.min()) < -8 or int(v.max()) > 15):
        raise InjectionError("int4 values must lie in -8 .. 15")
    nib = (v & 0xF).reshape(-1, 2)
    return (nib[:, 0] | (nib[:, 1] << 4)).to(torch.uint8)


# ----------------------------------------------------------------------- mitigation
def _mitigate(tensor: torch.Tensor, width: int, mitigation: str, value_range: tuple[float, float],
              int4_signed: bool) -> int:
    lo, hi = value_range
    if (width == 4 or not tensor.dtype.is_floating_point) and math.ceil(lo) > math.floor(hi):
        raise InjectionError(f"value_range {value_range!r} holds no integer value for {tensor.dtype}")
    if width == 4:
        b = tensor.reshape(-1).view(torch.uint8) if tensor.dtype == torch.int8 else tensor.reshape(-1)
        vals = unpack_int4(b, signed=int4_signed)
        bad, fixed = _fix(vals, mitigation, math.ceil(lo), math.floor(hi))
        if bad:
            b.copy_(pack_int4(fixed))
        return bad
    flat = tensor.reshape(-1)  # a view: ``tensor`` is contiguous
    if not flat.dtype.is_floating_point:
        lo, hi = math.ceil(lo), math.floor(hi)
    if flat.device.type == "cpu" and flat.dtype in _NUMPY_FIX_DTYPES:
        info = torch.finfo(flat.dtype) if flat.dtype.is_floating_point else torch.iinfo(flat.dtype)
        if info.min <= lo <= hi <= info.max:  # bounds the dtype holds (else torch's path and its errors)
            bad = _fix_np(flat.detach().numpy(), mitigation, lo, hi)
            if bad:
                _written(flat)
            return bad
    return _fix(flat, mitigation, lo, hi)[0]


_NUMPY_FIX_DTYPES = (torch.float32, torch.float64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _fix_np(x: np.ndarray, mitigation: str, lo: Union[int, float], hi: Union[int, float]) -> int:
    """:func:`_fix` on a numpy view of a CPU tensor (same comparisons: bounds in ``x``'s dtype; integer bounds in range)."""
    lo_s, hi_s = x.dtype.type(lo), x.dtype.type(hi)  # as torch compares a tensor with a Python scalar
    out = ~((x >= lo_s) & (x <= hi_s))  # NaN compares False
    bad = int(np.count_nonzero(out))
    if bad:
        if mitigation == "zero":
            x[out] = 0
        else:
            nan = np.isnan(x) if x.dtype.kind == "f" else None
            np.clip(x, lo_s, hi_s, out=x)
            if nan is not None:
                x[nan] = 0
    return bad


def _fix(x: torch.Tensor, mitigation: str, lo: float, hi: float) -> tuple[int, torch.Tensor]:
    """Count values outside [lo, hi] (NaN and Inf included) and zero or saturate them in place."""
    out = ~((x >= lo) & (x <= hi))  # NaN compares False
    bad = int(out.sum())
    if bad:
        if mitigation == "zero":
            x.masked_fill_(out, 0)
        else:
            nan = torch.isnan(x) if x.dtype.is_floating_point else None
            x.clamp_(lo, hi)
            if nan is not None:
                x.masked_fill_(nan, 0)
    return bad, x


def calibrate_range(data: Union[torch.Tensor, Iterable[torch.Tensor]], margin: float = 0.0, *,
                    dtype_bits: Optional[int] = None, int4_signed: bool = True) -> tuple[float, float]:
    """The value range of clean data, for :func:`inject_`'s ``value_range``.

    Parameters
    ----------
    data : tensor or iterable of tensors
        Clean values (e.g. ``model.parameters()``); NaN and Inf are ignored.
    margin : float
        Widen the range by this fraction of its width on each side (``0.1``: 10 %).
    dtype_bits : int, optional
        ``4`` for packed int4 tensors.
    int4_signed : bool
        Packed int4 values are two's complement (default) or unsigned.

    Returns
    -------
    (lo, hi) : tuple of float
    """
    if margin < 0 or not math.isfinite(margin):
        raise InjectionError(f"margin must be a finite fraction >= 0, got {margin!r}")
    tensors = [data] if isinstance(data, torch.Tensor) else list(data)
    lo, hi = math.inf, -math.inf
    for t in tensors:
        t = t.detach()
        if dtype_bits == 4:
            t = unpack_int4(t, signed=int4_signed)
        t = t.reshape(-1)
        if t.dtype.is_floating_point:
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                t = t[finite]
        if t.numel() == 0:
            continue
        tmin, tmax = torch.aminmax(t)
        lo, hi = min(lo, float(tmin)), max(hi, float(tmax))
    if lo > hi:
        raise InjectionError("calibrate_range found no finite values")
    span = hi - lo
    return lo - margin * span, hi + margin * span


# ---------------------------------------------------------------------- public API
def _check_args(tensor: torch.Tensor, model: ErrorModel, dtype_bits: Optional[int], mitigation: Mitigation,
                value_range: Optional[tuple[float, float]]) -> tuple[int, Optional[tuple[float, float]]]:
    if not isinstance(model, ErrorModel):
        raise InjectionError(f"model must be an ErrorModel, got {type(model).__name__}")
    width = _width(tensor, dtype_bits)
    if (mitigation is None) != (value_range is None):
        raise InjectionError("mitigation and value_range go together (value_range from calibrate_range)")
    if mitigation not in (None, "zero", "saturate"):
        raise InjectionError(f"mitigation must be 'zero', 'saturate' or None, got {mitigation!r}")
    if value_range is not None:
        lo, hi = (float(v) for v in value_range)
        if not lo <= hi:
            raise InjectionError(f"value_range {value_range!r} must be (lo, hi) with lo <= hi")
        value_range = (lo, hi)
    if sys.byteorder != "little":  # pragma: no cover - torch runs on little-endian hosts only
        raise InjectionError("bit numbering assumes a little-endian host")
    return width, value_range


def _run(out: torch.Tensor, model: ErrorModel, gen: torch.Generator, layout: Optional[AddressMap], width: int,
         mitigation: Mitigation, value_range: Optional[tuple[float, float]], int4_signed: bool,
         src: Optional[torch.Tensor] = None) -> InjectionStats:
    """Inject into contiguous ``out`` (first a copy of contiguous ``src``, if given), then mitigate."""
    if out.numel() == 0:
        return InjectionStats()
    src_bytes = src.view(-1).view(torch.uint8) if src is not None else None
    stats = _inject_flat(out.view(-1).view(torch.uint8), width, model, gen, layout, src_bytes)
    if mitigation is not None:
        mitigated = _mitigate(out, width, mitigation, value_range, int4_signed)
        stats = replace(stats, values_mitigated=mitigated)
    return stats


def inject_(tensor: torch.Tensor, model: ErrorModel, *, generator: Optional[torch.Generator] = None,
            seed: Optional[int] = None, layout: Optional[AddressMap] = None, dtype_bits: Optional[int] = None,
            mitigation: Mitigation = None, value_range: Optional[tuple[float, float]] = None,
            int4_signed: bool = True) -> InjectionStats:
    """Flip bits of ``tensor`` in place as ``model`` says; optionally mitigate out-of-range values.

    Parameters
    ----------
    tensor : torch.Tensor
        float32, float16, bfloat16, float64, int32, int16, int8 or uint8, on any device; packed
        int4 is a uint8 (or int8) tensor with ``dtype_bits=4``. A non-contiguous tensor is
        processed in C order through a contiguous copy.
    model : ErrorModel
        :class:`~errormodels.models.Uniform`, :class:`~errormodels.models.Wordline`,
        :class:`~errormodels.models.Bitline` or :class:`~errormodels.models.BitValue`.
    generator : torch.Generator, optional
        Source of randomness, on the tensor's device. Give this or ``seed``.
    seed : int, optional
        Seed for a fresh generator on the tensor's device.
    layout : AddressMap, optional
        Where the tensor's bytes sit in DRAM; used by the wordline and bitline models
        (default ``AddressMap()``: bank 0, row 0, row interleaving), ignored by the others.
    dtype_bits : int, optional
        Element width in bits: the dtype's (default) or 4 for packed int4.
    mitigation : {"zero", "saturate", None}
        What to do with values outside ``value_range`` after injection (NaN/Inf always count).
    value_range : (lo, hi), optional
        Range of clean values (see :func:`calibrate_range`); required with ``mitigation``.
    int4_signed : bool
        Whether packed int4 values are two's complement (for mitigation only).

    Returns
    -------
    InjectionStats

    Raises
    ------
    InjectionError
        Unsupported dtype, both or neither of ``generator``/``seed``, a generator on another
        device, or ``mitigation`` and ``value_range`` not given together.
    LayoutError
        If the tensor does not fit in the DIMM from the layout's start address.
    """
    width, value_range = _check_args(tensor, model, dtype_bits, mitigation, value_range)
    gen = _generator(tensor, generator, seed)
    with torch.no_grad():
        work = tensor if tensor.is_contiguous() else tensor.contiguous()
        stats = _run(work, model, gen, layout, width, mitigation, value_range, int4_signed)
        if work is not tensor:
            tensor.copy_(work)
    return stats


def mitigate_(tensor: torch.Tensor, mitigation: str, value_range: tuple[float, float], *,
              dtype_bits: Optional[int] = None, int4_signed: bool = True) -> int:
    """Zero or saturate, in place, the values of ``tensor`` outside ``value_range`` (NaN and Inf
    included): the mitigation step of :func:`inject_` on its own, for bytes corrupted elsewhere
    (e.g. read back from a DIMM). Returns the number of values changed."""
    if mitigation not in ("zero", "saturate"):
        raise InjectionError(f"mitigation must be 'zero' or 'saturate', got {mitigation!r}")
    width, value_range = _check_args(tensor, Uniform(ber=0.0), dtype_bits, mitigation, value_range)
    with torch.no_grad():
        work = tensor if tensor.is_contiguous() else tensor.contiguous()
        bad = _mitigate(work, width, mitigation, value_range, int4_signed) if work.numel() else 0
        if work is not tensor:
            tensor.copy_(work)
    return bad


def inject(tensor: torch.Tensor, model: ErrorModel, *, generator: Optional[torch.Generator] = None,
           seed: Optional[int] = None, layout: Optional[AddressMap] = None, dtype_bits: Optional[int] = None,
           mitigation: Mitigation = None, value_range: Optional[tuple[float, float]] = None,
           int4_signed: bool = True) -> tuple[torch.Tensor, InjectionStats]:
    """Like :func:`inject_`, into a contiguous copy: returns ``(copy, stats)`` and leaves ``tensor`` alone."""
    width, value_range = _check_args(tensor, model, dtype_bits, mitigation, value_range)
    gen = _generator(tensor, generator, seed)
    with torch.no_grad():
        src = tensor.detach() if tensor.is_contiguous() else tensor.detach().contiguous()
        out = torch.empty(src.shape, dtype=src.dtype, device=src.device)
        stats = _run(out, model, gen, layout, width, mitigation, value_range, int4_signed, src=src)
    return out, stats

"""The block sampler: Bernoulli processes over bit positions, compiled or in numpy/torch.

The stream (below) depends only on the key, so its positions are the same on every device;
:data:`KERNEL` says whether the CPU runs the compiled kernel (``errormodels._flipkernel``) or the
vectorised numpy/torch fallback (the same flips, slower).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Optional

import numpy as np
import torch

from errormodels.inject.mix import mix64_torch, s64
from softmc_host.splitmix import GAMMA, SALT_KIND, mix64, mix64_array

__all__ = ["KERNEL"]

# Stream version 2. A Bernoulli(p) process over positions [0, n) from a 62-bit key: for p > 1/2
# the positions drawn are those *not* chosen, at q = 1 - p (else q = p). The positions are cut
# into blocks of _BLOCK_BITS; block b (nb positions, fewer in the last one) draws
#     c_b = #{k : F(k) <= u_b / 2**53},  u_b = mix64(key + GAMMA * (b * 2**32 + 2**32 - 1)) >> 11,
# where F is the cumulative table of Binomial(nb, q) of _cdf_table (below: a fixed sequence of
# IEEE double operations, the same in C and in Python), i.e. a Binomial(nb, q) count by
# inversion. The c_b positions are the first c_b distinct values below nb, in draw order, of
#     word j = mix64(key + GAMMA * (b * 2**32 + j)),  j = 0, 1, ...      (SplitMix64)
#     draw t = (word >> (t * L)) & (2**L - 1),         t = 0 .. 64 // L - 1
# with L = max(1, bit_length(nb - 1)): a uniform subset of the block of that size. Given the
# counts, each position is then drawn independently with probability q, and the total is
# Binomial(n, q). Per drawn position it costs a quarter of a hash and a duplicate check; the
# positions of a block are a cache-sized neighbourhood (8 KiB of data). Every number here is an
# integer hash or an exactly rounded double operation, so the stream does not depend on numpy's
# or torch's random generators (stream version 1 drew the counts with numpy's binomial).
#
# A flip plan (errormodels.models.FlipPlan) is drawn from one key K drawn from the caller's
# generator (the only draw an injection makes):
#   * bits outside the weak set: the process over all n bits at p, key K, dropping the
#     positions that fall in the weak set;
#   * the weak set (W bits, ranked 0 .. W - 1 in position order): the process over the W ranks
#     at p_weak, key _subkey(K, 1); rank r is the weak set's r-th bit;
#   * thinning (by_value = (keep0, keep1)): a chosen bit x holding v is kept if
#     mix64(_subkey(K, 2) + GAMMA * x) >> 11 < ceil(keep_v * 2**53).
#
# Two implementations give the same flips: the compiled one (errormodels/_flipkernel.c, built at
# install time when a C compiler is there; on the CPU) and the vectorised one below (numpy counts,
# torch positions on any device; the fallback and the CUDA path). tests/test_inject_kernel.py
# holds them to each other and to a plain-Python reading of this comment.

_BLOCK_BITS = 1 << 16
_COUNT_WORD = (1 << 32) - 1  # word index of a block's count uniform
_TINY = 2.0 ** -70  # count tables keep the counts weighing at least this much of the mode
_TWO53 = float(1 << 53)
_GAMMA = GAMMA  # SplitMix64 increment (softmc_host.splitmix)

try:
    from errormodels import _flipkernel
except ImportError:  # pragma: no cover - built at install time wherever a C compiler is
    _flipkernel = None
_STREAM_VERSION = 2  # bump with any change to the stream or the kernel's interface (and in the C file)
if _flipkernel is not None and (_flipkernel.BLOCK_BITS != _BLOCK_BITS or
                                getattr(_flipkernel, "STREAM_VERSION", None) != _STREAM_VERSION):
    warnings.warn("errormodels/_flipkernel was built from another version of the C source; using the slower "
                  "torch sampler (rebuild with: pip install -e .)", RuntimeWarning, stacklevel=2)
    _flipkernel = None

KERNEL: str = "compiled" if _flipkernel is not None else "torch"
"""Which block sampler the CPU uses: ``"compiled"`` (the C kernel) or ``"torch"`` (same flips, slower)."""

_WORDS_SLACK = 1.0  # scales the words the torch sampler draws at first (tests shrink it to force redraws)


def _subkey(key: int, i: int) -> int:
    """The ``i``-th key derived from ``key`` (62 bits)."""
    return mix64(key + i * SALT_KIND) >> 2


def _keep_threshold(keep: float) -> int:
    """A kept bit's hash (top 53 bits) lies below this: ``ceil(keep * 2**53)`` (exact)."""
    return math.ceil(keep * _TWO53)


@lru_cache(maxsize=1024)
def _cdf_table(n: int, q: float) -> tuple[int, np.ndarray]:
    """``(k0, cdf)``: the cumulative table of Binomial(n, q), 0 < q <= 1/2, that counts are drawn from.

    ``cdf[i]`` is P(count <= k0 + i) over the counts weighing at least 2**-70 of the mode's, built
    by the same double operations, in the same order, as ``table_build`` in the C kernel.
    """
    if n <= 0 or not q > 0.0:
        return 0, np.ones(1)
    r = q / (1.0 - q)
    m = min(int((n + 1) * q), n)
    up: list[float] = []
    w, k = 1.0, m
    while k < n:
        k += 1
        w = w * (n - k + 1) * r / k
        if w < _TINY:
            break
        up.append(w)
    down: list[float] = []
    w, k = 1.0, m
    while k > 0:
        w = w * k / ((n - k + 1) * r)
        k -= 1
        if w < _TINY:
            break
        down.append(w)
    s, cum = 0.0, []
    for x in down[::-1] + [1.0] + up:
        s += x
        cum.append(s)
    cdf = np.array([c / s for c in cum])
    cdf[-1] = 1.0
    return m - len(down), cdf


def _block_counts(n: int, q: float, key: int) -> np.ndarray:
    """Drawn positions per block of a process over ``n`` positions at rate ``q <= 1/2`` (int64)."""
    n_blocks = -(-n // _BLOCK_BITS)
    if n_blocks == 0 or not q > 0.0:
        return np.zeros(n_blocks, dtype=np.int64)
    if _flipkernel is not None:
        out = np.empty(n_blocks, dtype=np.int64)
        _flipkernel.block_counts(out, n, q, key)
        return out
    return _block_counts_np(n, q, key)


def _block_counts_np(n: int, q: float, key: int) -> np.ndarray:
    """:func:`_block_counts` in numpy (the reference of the compiled one)."""
    n_blocks = -(-n // _BLOCK_BITS)
    if n_blocks == 0 or not q > 0.0:
        return np.zeros(n_blocks, dtype=np.int64)
    b = np.arange(n_blocks, dtype=np.uint64)
    with np.errstate(over="ignore"):
        words = np.uint64(key) + np.uint64(_GAMMA) * ((b << np.uint64(32)) + np.uint64(_COUNT_WORD))
    x = (mix64_array(words) >> np.uint64(11)).astype(np.float64) / _TWO53
    out = np.empty(n_blocks, dtype=np.int64)
    full = n_blocks if n % _BLOCK_BITS == 0 else n_blocks - 1
    if full:
        k0, cdf = _cdf_table(_BLOCK_BITS, q)
        out[:full] = np.searchsorted(cdf, x[:full], side="right") + k0
    if full < n_blocks:
        k0, cdf = _cdf_table(n - full * _BLOCK_BITS, q)
        out[full] = int(np.searchsorted(cdf, x[full], side="right")) + k0
    return out


def _ranks_torch(n: int, counts: np.ndarray, key: int, b0: int, b1: int, device: torch.device) -> torch.Tensor:
    """The block sampler's drawn positions of blocks [b0, b1), sorted, by vectorised torch operations."""
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
            w = mix64_torch(((blk << 32) + j) * s64(_GAMMA) + s64(key))
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
    """The block sampler's drawn positions of blocks [b0, b1), sorted (int64, on ``device``)."""
    if device.type == "cpu" and _flipkernel is not None:
        out = np.empty(int(counts[b0:b1].sum()), dtype=np.int64)
        _flipkernel.sample_ranks(out, counts, key, n, b0, b1)
        return torch.from_numpy(out)
    return _ranks_torch(n, counts, key, b0, b1, device)


class _Process:
    """A Bernoulli(p) process over positions [0, n) from ``key`` (the stream above), drawn by block ranges."""

    def __init__(self, n: int, p: float, key: int) -> None:
        self.n, self.p, self.key = n, p, key
        self.complement = p > 0.5
        self.q = 1.0 - p if self.complement else p
        self.n_blocks = -(-n // _BLOCK_BITS)
        self.counts = _block_counts(n, self.q, key)

    def chosen(self, b0: int, b1: int, device: torch.device) -> torch.Tensor:
        """The chosen positions of blocks [b0, b1), sorted."""
        drawn = _ranks(self.n, self.counts, self.key, b0, b1, device)
        if not self.complement:
            return drawn
        lo, hi = b0 * _BLOCK_BITS, min(b1 * _BLOCK_BITS, self.n)
        keep = torch.ones(hi - lo, dtype=torch.bool, device=device)
        keep[drawn - lo] = False
        return keep.nonzero().squeeze(1).add_(lo)

    def chosen_in(self, lo: int, hi: int, device: torch.device) -> torch.Tensor:
        """The chosen positions in [lo, hi), sorted."""
        if hi <= lo:
            return torch.empty(0, dtype=torch.int64, device=device)
        pos = self.chosen(lo // _BLOCK_BITS, -(-hi // _BLOCK_BITS), device)
        if lo % _BLOCK_BITS or hi % _BLOCK_BITS:
            pos = pos[(pos >= lo) & (pos < hi)]
        return pos


def _threads() -> int:
    return torch.get_num_threads()


def _kernel_inject(dst: np.ndarray, src: Optional[np.ndarray], elem_shift: int, key: int, p: float,
                   weak_args: Optional[tuple], p_weak: float, keep: Optional[tuple[float, float]]
                   ) -> tuple[int, int, int, int]:
    """The compiled kernel on byte arrays: ``(flipped, ones_flipped, touched, weak_flipped)``."""
    assert _flipkernel is not None
    thr0, thr1 = (_keep_threshold(k) for k in keep) if keep is not None else (1 << 53, 1 << 53)
    return _flipkernel.inject(dst, src, elem_shift, key, p, weak_args, p_weak, thr0, thr1, _threads())

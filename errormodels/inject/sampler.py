"""The block sampler: a Bernoulli(p) process over bit positions, compiled or in torch, and its threads.

The stream (below) depends only on (key, counts), so its positions are the same on every
device; :data:`KERNEL` says whether the CPU runs the compiled kernel (``errormodels._flipkernel``)
or the vectorised torch fallback (the same flips, slower).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Optional

import numpy as np
import torch

from errormodels.inject.mix import mix64_torch, s64
from errormodels.inject.stats import InjectionStats
from errormodels.inject.tensors import _written
from softmc_host.splitmix import GAMMA

__all__ = ["KERNEL"]

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
_GAMMA = GAMMA  # SplitMix64 increment (softmc_host.splitmix)

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



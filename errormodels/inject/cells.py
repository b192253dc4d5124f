"""Cell-by-cell fault injection for multi-level-cell memories (:class:`errormodels.envm.CellPlan`).

A tensor's storage bits form cells of ``b`` consecutive bits (:mod:`errormodels.envm`). A cell
faults with the probability of its level, ``q_l = 1 - confusion[l][l]``, and then reads as level
``k != l`` with probability ``confusion[l][k] / q_l``. Drawn sparsely, at a cost proportional to
the faults: the block sampler's Bernoulli process over the cells at ``q_max = max_l q_l`` chooses
candidate cells; each is kept with probability ``q_l / q_max`` of its stored level (a hash of the
cell's index against an exact 53-bit threshold, as the bit-value model thins bits) and given its
new level by a second hash against the row's cumulative thresholds. The bits that differ between
the old and the new level's pattern are flipped. Every number comes from the injection key, so
the faults of a seed are the same on every device.
"""

from __future__ import annotations

import numpy as np
import torch

from errormodels.envm import CellPlan
from errormodels.inject import sampler
from errormodels.inject.flip import _Flipper
from errormodels.inject.mix import mix64_torch, s64, shr
from errormodels.inject.stats import InjectionStats

_CHUNK_CELLS = 1 << 20  # candidate cells handled at a time (bounds the temporaries)


def _uniform53(index: torch.Tensor, key: int) -> torch.Tensor:
    """A 53-bit hash uniform per index (int64), from ``key``."""
    return shr(mix64_torch(index * s64(sampler._GAMMA) + s64(key)), 11)


def inject_cells(data: torch.Tensor, elem_shift: int, width: int, plan: CellPlan, key: int) -> InjectionStats:
    """Apply ``plan``'s cell faults to the flat uint8 view ``data`` of a tensor's storage."""
    dev = data.device
    n_bits = data.numel() * 8
    b = plan.bits_per_cell
    n_levels = 1 << b
    n_cells = -(-n_bits // b)
    conf = np.asarray(plan.confusion, dtype=float)
    q = 1.0 - np.diag(conf)
    q = np.clip(q, 0.0, 1.0)
    flipper = _Flipper(data, elem_shift)
    q_max = float(q.max())
    if q_max <= 0.0 or n_cells == 0:
        return flipper.stats(n_bits, width)
    keep_thr = torch.tensor([sampler._keep_threshold(min(1.0, v / q_max)) for v in q], dtype=torch.int64, device=dev)
    # cumulative thresholds of the new level among the L - 1 others, per stored level
    cum = np.zeros((n_levels, n_levels - 1), dtype=np.int64)
    for lvl in range(n_levels):
        others = np.delete(conf[lvl], lvl)
        total = others.sum()
        share = np.cumsum(others / total) if total > 0 else np.linspace(1, n_levels - 1, n_levels - 1) / (n_levels - 1)
        cum[lvl] = [sampler._keep_threshold(min(1.0, v)) for v in share]
        cum[lvl, -1] = 1 << 53  # every hash lies below: the last choice takes the rounding
    cum_t = torch.from_numpy(cum).to(dev)
    patterns = torch.tensor(plan.patterns, dtype=torch.int64, device=dev)
    decode = torch.empty(n_levels, dtype=torch.int64, device=dev)
    decode[patterns] = torch.arange(n_levels, device=dev)
    shifts = torch.arange(b, dtype=torch.int64, device=dev)
    proc = sampler._Process(n_cells, q_max, key)
    tkey, lkey = sampler._subkey(key, 2), sampler._subkey(key, 3)
    step = max(1, int(_CHUNK_CELLS / (q_max * sampler._BLOCK_BITS)))
    for b0 in range(0, proc.n_blocks, step):
        cells = proc.chosen(b0, min(b0 + step, proc.n_blocks), dev)
        if cells.numel() == 0:
            continue
        pos = cells[:, None] * b + shifts  # the cells' bit positions, (n, b)
        valid = pos < n_bits
        safe = torch.where(valid, pos, torch.zeros_like(pos))
        bits = (data.index_select(0, (safe >> 3).reshape(-1)).reshape(pos.shape).to(torch.int64) >> (safe & 7)) & 1
        bits = bits * valid
        level = decode[(bits << shifts).sum(1)]
        kept = _uniform53(cells, tkey) < keep_thr[level]
        cells, pos, valid, level = cells[kept], pos[kept], valid[kept], level[kept]
        if cells.numel() == 0:
            continue
        choice = (_uniform53(cells, lkey)[:, None] >= cum_t[level]).sum(1)
        new = choice + (choice >= level)
        diff = patterns[level] ^ patterns[new]
        flip = ((diff[:, None] >> shifts) & 1).bool() & valid
        flipper.flip(pos[flip])  # row-major: sorted and distinct
    return flipper.stats(n_bits, width)

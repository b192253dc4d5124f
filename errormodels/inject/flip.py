"""Flipping: XOR sorted, distinct bit positions into a tensor's bytes and count what changed."""

from __future__ import annotations

from typing import Optional

import torch

from errormodels.inject.stats import InjectionStats
from errormodels.inject.tensors import _bit_masks, _popcount8

__all__: list[str] = []


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
            idx = torch.searchsorted(a, b).clamp(max=a.numel() - 1)
            total = total - (a[idx] == b).sum()
        self.touched = self.touched + total

    def stats(self, n_bits: int, width: int, weak_bits: int = 0) -> InjectionStats:
        """What the flips did, for a tensor of ``n_bits`` bits and ``width``-bit elements."""
        ones_flipped, touched = (int(v) for v in torch.stack([self.ones_flipped, self.touched]).tolist())
        return InjectionStats(bits_total=n_bits, bits_flipped=self.flipped, flips_0to1=self.flipped - ones_flipped,
                              flips_1to0=ones_flipped, elements_total=n_bits // width, elements_touched=touched,
                              weak_bits_total=weak_bits, weak_bits_flipped=self.weak_flipped)


"""Packed int4: two 4-bit values per byte, element ``2 i`` in the low nibble of byte ``i``."""

from __future__ import annotations

import torch

from errormodels.inject.stats import InjectionError

__all__ = ["pack_int4", "unpack_int4"]


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


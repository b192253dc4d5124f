"""SplitMix64 in torch int64 arithmetic (wrapping), for tensors on any device.

The constants are :mod:`softmc_host.splitmix`'s; :func:`weak_mask_torch` gives the same
booleans as :func:`errormodels.models.weak_mask` (tests/test_inject.py holds them together).
"""

from __future__ import annotations

import torch

from softmc_host.splitmix import GAMMA, MASK64, MIX1, MIX2, SALT_KIND

__all__ = ["weak_mask_torch", "mix64_torch", "s64", "shr"]

def s64(c: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    c &= MASK64
    return c - (1 << 64) if c >= 1 << 63 else c


def shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits."""
    return (x >> k) & ((1 << (64 - k)) - 1)


_MIX1, _MIX2 = s64(MIX1), s64(MIX2)


def mix64_torch(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function on int64 bits (wrapping arithmetic)."""
    z = z ^ shr(z, 30)
    z = z * _MIX1
    z = z ^ shr(z, 27)
    z = z * _MIX2
    return z ^ shr(z, 31)


def weak_mask_torch(seed: int, kind: int, location: torch.Tensor, weak_fraction: float) -> torch.Tensor:
    """:func:`errormodels.models.weak_mask` in torch int64 arithmetic, on ``location``'s device.

    Returns the same booleans as the numpy version for the same (non-negative) ids.
    """
    salt = s64(seed * GAMMA + kind * SALT_KIND)
    u = shr(mix64_torch(location.to(torch.int64) ^ salt), 11)
    return u.to(torch.float64) < weak_fraction * float(1 << 53)

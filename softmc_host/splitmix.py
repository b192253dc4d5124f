"""SplitMix64, the one counter-based hash every seeded stream of the toolkit is built from.

Steele, Lea and Flood, "Fast splittable pseudorandom number generators" (OOPSLA 2014): a state
advanced by :data:`GAMMA` and the output function :func:`mix64`. The emulated DIMMs' noise, the
replay DIMM's per-cell uniforms, the error models' weak cells and the injection sampler all
hash with these constants, so one definition keeps them bit-identical (errormodels has a torch
version of :func:`mix64_array` for tensors on any device; its tests hold it to this one).
"""

from __future__ import annotations

import numpy as np

__all__ = ["GAMMA", "MIX1", "MIX2", "SALT_KIND", "MASK64", "splitmix64", "mix64", "mix64_array", "uniform53"]

#: The golden-ratio increment of the SplitMix64 state.
GAMMA = 0x9E3779B97F4A7C15
#: The two multipliers of the output function (Stafford's variant 13).
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
#: A second odd constant, for salting a stream by a small kind number.
SALT_KIND = 0xD1B54A32D192ED03
MASK64 = 0xFFFFFFFFFFFFFFFF


def mix64(x: int) -> int:
    """The SplitMix64 output function of a Python integer (taken modulo 2**64)."""
    x &= MASK64
    x = ((x ^ (x >> 30)) * MIX1) & MASK64
    x = ((x ^ (x >> 27)) * MIX2) & MASK64
    return x ^ (x >> 31)


def splitmix64(x: int) -> int:
    """One SplitMix64 step from state ``x``: ``mix64(x + GAMMA)``."""
    return mix64(x + GAMMA)


def mix64_array(x: np.ndarray) -> np.ndarray:
    """:func:`mix64` elementwise on a uint64 array (a new array; wrapping arithmetic)."""
    x = np.asarray(x).astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(MIX1)
    x ^= x >> np.uint64(27)
    x *= np.uint64(MIX2)
    x ^= x >> np.uint64(31)
    return x


def uniform53(x: np.ndarray) -> np.ndarray:
    """The top 53 bits of hashed uint64 words as uniform floats in [0, 1)."""
    return (np.asarray(x, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) / float(1 << 53)

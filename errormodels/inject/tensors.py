"""Tensor helpers of the injector: supported dtypes, argument checks, generators, bit masks."""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Literal, Optional

import torch

from errormodels.inject.stats import InjectionError
from errormodels.models import ErrorModel

__all__ = ["SUPPORTED_DTYPES", "Mitigation"]

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


def _written(t: torch.Tensor) -> None:
    """``t`` was changed through a numpy view: bump its version, as a torch in-place op would, so
    autograd refuses a backward pass through values saved before the change."""
    if not t.is_inference():
        torch.autograd.graph.increment_version(t)



def _bit_masks(pos: torch.Tensor) -> torch.Tensor:
    """``1 << (pos % 8)`` as uint8."""
    return torch.bitwise_left_shift(torch.ones((), dtype=torch.uint8, device=pos.device), pos.to(torch.uint8) & 7)


def _popcount8(x: torch.Tensor) -> torch.Tensor:
    """Set bits of each uint8 (as uint8)."""
    x = x - ((x >> 1) & 0x55)
    x = (x & 0x33) + ((x >> 2) & 0x33)
    return (x + (x >> 4)) & 0x0F


def _generator(tensor: torch.Tensor, generator: Optional[torch.Generator], seed: Optional[int]) -> torch.Generator:
    """The generator an injection draws from: ``generator`` (checked to be on the tensor's device) or a
    fresh one seeded with ``seed``."""
    _check_source(tensor, generator, seed)
    if generator is None:
        return torch.Generator(device=tensor.device).manual_seed(seed)
    return generator


def _check_source(tensor: torch.Tensor, generator: Optional[torch.Generator], seed: Optional[int]) -> None:
    if (generator is None) == (seed is None):
        raise InjectionError("give exactly one of generator= and seed=")
    if generator is None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise InjectionError(f"seed must be a non-negative integer, got {seed!r}")
        return
    gdev, tdev = torch.device(generator.device), tensor.device
    if gdev.type != tdev.type or (tdev.type != "cpu" and (gdev.index or 0) != (tdev.index or 0)):
        raise InjectionError(f"the generator is on {gdev}, the tensor on {tdev}: give a generator on the tensor's device")


def _draw_key(gen: torch.Generator) -> int:
    """One 62-bit key from ``gen`` (on its device): the one draw an injection makes."""
    # the value of torch.randint(0, 2**62, (1,), generator=gen), without its overhead
    return torch.empty((), dtype=torch.int64, device=gen.device).random_(0, 2**62, generator=gen).item()


@lru_cache(maxsize=4096)
def _seed_key(device: torch.device, seed: int) -> int:
    """The key a fresh generator seeded with ``seed`` on ``device`` draws first (remembered: the same every time)."""
    return _draw_key(torch.Generator(device=device).manual_seed(seed))


def _key(tensor: torch.Tensor, generator: Optional[torch.Generator], seed: Optional[int]) -> int:
    """The injection's key: drawn from ``generator``, or the first draw of a generator seeded with ``seed``
    (arguments checked by :func:`_check_source`)."""
    if generator is not None:
        return _draw_key(generator)
    return _seed_key(tensor.device, seed)


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


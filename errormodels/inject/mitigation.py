"""Mitigation: zero or saturate the values outside the clean data's range (NaN and Inf included).

``mitigation="zero"`` sets every value outside ``value_range`` to 0 and ``"saturate"`` clamps it
to the nearest bound (NaN becomes 0); NaN and +-Inf are always out of range. ``value_range``
comes from clean data (:func:`calibrate_range`). The check runs over every element, one pass.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Union

import numpy as np
import torch

from errormodels.inject.int4 import pack_int4, unpack_int4
from errormodels.inject.stats import InjectionError
from errormodels.inject.tensors import _check_args, _written
from errormodels.models import Uniform

__all__ = ["mitigate_", "calibrate_range"]


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


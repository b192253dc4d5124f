"""Numeric formats: float32 and symmetric linear quantization to int16, int8 and int4.

Scheme
------
Symmetric, linear, one scale per tensor (the seed paper's reference [84]). For a ``b``-bit
format, ``qmax = 2**(b-1) - 1``:

=========  ====  =======  =====================  ======================================
format     bits  qmax     scale                  stored as (``dtype_bits`` for inject_)
=========  ====  =======  =====================  ======================================
``fp32``   32    --       --                     float32 (32), values as they are
``int16``  16    32767    max abs(x) / 32767     int16 (16)
``int8``   8     127      max abs(x) / 127       int8 (8)
``int4``   4     7        max abs(x) / 7         uint8, two values a byte (4)
=========  ====  =======  =====================  ======================================

::

    scale = max|x| / qmax                       (float32; 1.0 when x is all zeros)
    q     = clamp(round(x / scale), -qmax, qmax)   (round half to even, torch.round)
    x'    = q * scale                           |x - x'| <= scale / 2

Example, int8: ``x = [-0.5, 0.1, 1.27]`` has ``max|x| = 1.27``, ``scale = 1.27 / 127 = 0.01``,
``q = [-50, 10, 127]``. The range is symmetric: the most negative code (-32768, -128, -8) is
never produced by :func:`quantize`, but a bit flip can produce it and :func:`dequantize`
maps it to ``-2**(b-1) * scale`` like any other code. A ``scale`` given to :func:`quantize`
(e.g. one calibrated on clean feature maps) is used as is: values beyond ``qmax * scale``
saturate to ``+-qmax``.

Storage: what sits in DRAM
--------------------------
:class:`QTensor` holds the integers as they would sit in DRAM, so bit errors hit them:
int16 and int8 as tensors of that dtype in the original shape (two's complement, little
endian), int4 as two's complement nibbles packed two per uint8 by
:func:`errormodels.inject.pack_int4` (element ``2 i`` in the low nibble of byte ``i``; an odd
count gets one zero nibble of padding, exposed to errors but never read back). fp32 keeps a
float32 copy. :func:`storage` gives that tensor and the ``dtype_bits`` to pass to
:func:`errormodels.inject.inject_`; the scale is metadata, kept error-free.

Training
--------
:class:`FakeQuant` (:func:`fake_quantize`) quantizes and dequantizes in the forward pass and
passes gradients straight through (identity) in the backward pass, for retraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Union

import torch

from errormodels.inject import pack_int4, unpack_int4

__all__ = [
    "QuantError",
    "QuantFormat",
    "QUANT_FORMATS",
    "get_format",
    "QTensor",
    "Storage",
    "compute_scale",
    "quantize",
    "dequantize",
    "storage",
    "FakeQuant",
    "fake_quantize",
]


class QuantError(ValueError):
    """An unknown format, a bad scale or a tensor that cannot be quantized."""


@dataclass(frozen=True)
class QuantFormat:
    """A numeric format: float32 pass-through or a symmetric ``bits``-bit integer.

    Attributes
    ----------
    name : str
        Registry name (``fp32``, ``int16``, ``int8``, ``int4``).
    bits : int
        Bits per value.
    is_float : bool
        True for float32 pass-through.
    """

    name: str
    bits: int
    is_float: bool = False

    @property
    def qmax(self) -> int:
        """Largest integer code, ``2**(bits-1) - 1`` (0 for float formats)."""
        return 0 if self.is_float else (1 << (self.bits - 1)) - 1

    @property
    def int_range(self) -> tuple[int, int]:
        """Codes :func:`quantize` produces, ``(-qmax, qmax)``."""
        return (-self.qmax, self.qmax)

    @property
    def storage_dtype(self) -> torch.dtype:
        """Dtype of the stored tensor (uint8 for packed int4)."""
        return {32: torch.float32, 16: torch.int16, 8: torch.int8, 4: torch.uint8}[self.bits]

    @property
    def dtype_bits(self) -> int:
        """``dtype_bits`` for :func:`errormodels.inject.inject_` (4 for packed int4)."""
        return self.bits


QUANT_FORMATS: dict[str, QuantFormat] = {
    f.name: f
    for f in (QuantFormat("fp32", 32, True), QuantFormat("int16", 16), QuantFormat("int8", 8), QuantFormat("int4", 4))
}
"""The formats by name."""


def get_format(fmt: Union[str, QuantFormat]) -> QuantFormat:
    """A format by name (``fp32``, ``int16``, ``int8``, ``int4``; case-insensitive) or as given.

    Raises
    ------
    QuantError
        For an unknown name.
    """
    if isinstance(fmt, QuantFormat):
        return fmt
    found = QUANT_FORMATS.get(str(fmt).strip().lower())
    if found is None:
        raise QuantError(f"unknown numeric format {fmt!r}; known: {', '.join(QUANT_FORMATS)}")
    return found


@dataclass(frozen=True)
class QTensor:
    """A tensor in a numeric format, as stored in DRAM.

    Attributes
    ----------
    data : torch.Tensor
        The stored tensor: float32 (fp32), int16, int8 (original shape) or packed int4
        (flat uint8, ``ceil(numel / 2)`` bytes). Injecting errors into it in place changes
        what :func:`dequantize` returns.
    scale : float
        Value of integer code 1 (a float32 value; 1.0 for fp32).
    shape : torch.Size
        Shape of the original tensor.
    fmt : QuantFormat
        The format.
    """

    data: torch.Tensor
    scale: float
    shape: torch.Size
    fmt: QuantFormat

    @property
    def numel(self) -> int:
        """Values held (excluding int4 padding)."""
        return math.prod(self.shape)

    def int_values(self) -> torch.Tensor:
        """The integer codes in the original shape (int16 or int8; int4 unpacked to int8).

        Raises
        ------
        QuantError
            For fp32, which holds no integer codes.
        """
        if self.fmt.is_float:
            raise QuantError("fp32 holds floats, not integer codes")
        if self.fmt.bits == 4:
            return unpack_int4(self.data, signed=True)[: self.numel].reshape(self.shape)
        return self.data


class Storage(NamedTuple):
    """The bits an error model should hit: ``inject_(s.tensor, model, dtype_bits=s.dtype_bits, ...)``."""

    tensor: torch.Tensor
    dtype_bits: int


def _float_input(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise QuantError(f"expected a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise QuantError(f"can only quantize floating-point tensors, got {x.dtype}")
    return x.detach().to(torch.float32)


def _scale_of(x32: torch.Tensor, qmax: int) -> torch.Tensor:
    """``max|x| / qmax`` as a float32 0-dim tensor, 1.0 for an empty or all-zero tensor."""
    if x32.numel() == 0:
        return torch.ones((), dtype=torch.float32, device=x32.device)
    amax = x32.abs().amax()
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


def compute_scale(x: torch.Tensor, fmt: Union[str, QuantFormat]) -> float:
    """The per-tensor scale :func:`quantize` would use for ``x``: ``max|x| / qmax`` (1.0 for fp32 or all zeros).

    Raises
    ------
    QuantError
        For an unknown format, a non-float tensor, or NaN/Inf in ``x``.
    """
    f = get_format(fmt)
    x32 = _float_input(x)
    if f.is_float:
        return 1.0
    scale = float(_scale_of(x32, f.qmax))
    if not math.isfinite(scale):
        raise QuantError("cannot quantize a tensor holding NaN or Inf")
    return scale


def _codes(x32: torch.Tensor, scale: Union[float, torch.Tensor], qmax: int) -> torch.Tensor:
    """``clamp(round(x / scale), -qmax, qmax)`` in float32."""
    return torch.round(x32 / scale).clamp_(-qmax, qmax)


def _check_scale(scale: Any) -> float:
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise QuantError(f"scale must be a single number, got a tensor of shape {tuple(scale.shape)}")
        scale = scale.item()
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
        raise QuantError(f"scale must be a finite number > 0, got {scale!r}")
    s32 = float(torch.tensor(float(scale), dtype=torch.float32))
    if s32 <= 0:
        raise QuantError(f"scale {scale!r} underflows float32")
    return s32


def quantize(x: torch.Tensor, fmt: Union[str, QuantFormat], *, scale: Optional[float] = None) -> QTensor:
    """``x`` in format ``fmt``, held as the integers (or floats) that would sit in DRAM.

    Parameters
    ----------
    x : torch.Tensor
        Floating-point values (any shape, any device; computed in float32).
    fmt : str or QuantFormat
        ``fp32``, ``int16``, ``int8`` or ``int4``.
    scale : float, optional
        Value of code 1; default ``max|x| / qmax``. Values beyond ``qmax * scale`` saturate.
        Ignored by fp32.

    Returns
    -------
    QTensor
        With fresh storage (``x`` is not modified or aliased).

    Raises
    ------
    QuantError
        For an unknown format, a non-float tensor, a bad scale, or NaN/Inf in ``x`` (integer formats).
    """
    f = get_format(fmt)
    x32 = _float_input(x)
    if f.is_float:
        return QTensor(x32.clone(memory_format=torch.contiguous_format), 1.0, x32.shape, f)
    if scale is None:
        s = float(_scale_of(x32, f.qmax))
        if not math.isfinite(s):
            raise QuantError("cannot quantize a tensor holding NaN or Inf")
    else:
        s = _check_scale(scale)
    codes = _codes(x32, s, f.qmax)
    if scale is not None and codes.numel() and bool(torch.isnan(codes).any()):  # a NaN max|x| was caught above
        raise QuantError("cannot quantize a tensor holding NaN")
    if f.bits == 4:
        flat = codes.reshape(-1).to(torch.int8)
        if flat.numel() % 2:
            flat = torch.cat([flat, flat.new_zeros(1)])
        data = pack_int4(flat)
    else:
        data = codes.to(f.storage_dtype).contiguous()
    return QTensor(data, s, x32.shape, f)


def dequantize(q: QTensor) -> torch.Tensor:
    """The float32 values a :class:`QTensor` stands for: ``codes * scale`` (a new tensor, original shape).

    Codes changed by bit errors are dequantized like any other (int4 nibbles as two's
    complement, -8 .. 7); fp32 returns a copy of the stored floats.
    """
    if not isinstance(q, QTensor):
        raise QuantError(f"expected a QTensor, got {type(q).__name__}")
    if q.fmt.is_float:
        return q.data.clone().reshape(q.shape)
    return q.int_values().to(torch.float32) * q.scale


def storage(q: QTensor) -> Storage:
    """The tensor whose bits an error model should hit (``q.data`` itself, not a copy) and its ``dtype_bits``.

    ``s = storage(q); inject_(s.tensor, model, seed=1, dtype_bits=s.dtype_bits)`` corrupts ``q``
    in place; then ``dequantize(q)`` gives the values a network would read.
    """
    if not isinstance(q, QTensor):
        raise QuantError(f"expected a QTensor, got {type(q).__name__}")
    return Storage(q.data, q.fmt.dtype_bits)


class FakeQuant(torch.autograd.Function):
    """Straight-through fake quantization: forward ``dequantize(quantize(x, fmt, scale=scale))``, backward identity.

    Use through :func:`fake_quantize` or ``FakeQuant.apply(x, fmt, scale)``. The forward
    computes in float32 and returns ``x``'s dtype; the scale defaults to ``max|x| / qmax``
    of the current ``x``. The gradient with respect to ``x`` is passed through unchanged,
    also for values that saturated; ``fmt`` and ``scale`` get none. fp32 is the identity.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fmt: Union[str, QuantFormat],
                scale: Optional[float] = None) -> torch.Tensor:
        f = get_format(fmt)
        if not x.dtype.is_floating_point:
            raise QuantError(f"can only fake-quantize floating-point tensors, got {x.dtype}")
        if f.is_float:
            return x.clone()
        x32 = x.detach().to(torch.float32)
        s: Union[float, torch.Tensor] = _scale_of(x32, f.qmax) if scale is None else _check_scale(scale)
        return (_codes(x32, s, f.qmax) * s).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad_output, None, None


def fake_quantize(x: torch.Tensor, fmt: Union[str, QuantFormat], *, scale: Optional[float] = None) -> torch.Tensor:
    """:class:`FakeQuant` applied to ``x``: quantize-dequantize forward, straight-through gradient."""
    return FakeQuant.apply(x, fmt, scale)

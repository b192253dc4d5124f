"""Numeric formats: float32, symmetric int16 / int8 / int4, and robust asymmetric uint8 / uint4.

Schemes
-------
Two linear schemes, one set of parameters per tensor (= per layer, for a weight or an IFM):

* **symmetric signed** (``int16``, ``int8``, ``int4``; the seed paper's reference [84]):
  two's complement codes, ``qmax = 2**(b-1) - 1``;
* **asymmetric unsigned** (``uint8``, ``uint4``; the robust fixed-point quantization of
  Stutz et al., "Bit error robustness for energy-efficient DNN accelerators", MLSys 2021):
  the tensor's own ``[min, max]`` mapped onto unsigned codes ``0 .. 2**b - 1`` with
  round-to-nearest. A bit flip moves a value by ``2**k * scale`` but can never take it out of
  ``[min, max]`` (no sign bit, no range beyond the clean one), which is why they found it far
  more robust to random bit errors than symmetric two's complement.

=========  ====  ============  ==========================  ==================================
format     bits  codes         scale, offset               stored as (``dtype_bits``)
=========  ====  ============  ==========================  ==================================
``fp32``   32    --            --                          float32 (32), values as they are
``int16``  16    -32767..32767 max abs(x) / 32767, 0       int16 (16)
``int8``   8     -127..127     max abs(x) / 127, 0         int8 (8)
``int4``   4     -7..7         max abs(x) / 7, 0           uint8, two values a byte (4)
``uint8``  8     0..255        (max - min) / 255, min      uint8 (8)
``uint4``  4     0..15         (max - min) / 15, min       uint8, two values a byte (4)
=========  ====  ============  ==========================  ==================================

Symmetric::

    scale = max|x| / qmax                          (float32; 1.0 when x is all zeros)
    q     = clamp(round(x / scale), -qmax, qmax)   (round half to even, torch.round)
    x'    = q * scale                              |x - x'| <= scale / 2

Asymmetric unsigned::

    offset = min(x)                                (float32: the value of code 0)
    scale  = (max(x) - min(x)) / qmax              (1.0 when max == min)
    q      = clamp(round((x - offset) / scale), 0, qmax)
    x'     = q * scale + offset                    |x - x'| <= scale / 2

Example, int8: ``x = [-0.5, 0.1, 1.27]`` has ``max|x| = 1.27``, ``scale = 1.27 / 127 = 0.01``,
``q = [-50, 10, 127]``. The symmetric range never produces the most negative code (-32768,
-128, -8), but a bit flip can, and :func:`dequantize` maps it to ``-2**(b-1) * scale`` like any
other code. Example, uint8: ``x = [-0.5, 0.1, 2.05]`` has ``offset = -0.5``,
``scale = 2.55 / 255 = 0.01``, ``q = [0, 60, 255]``. Real 0.0 is a code only when
``-offset / scale`` is an integer (always for a tensor with ``min = 0``, e.g. after a ReLU).

Parameters given to :func:`quantize` (e.g. calibrated on clean feature maps) are used as
they are: values beyond the range saturate to the end codes. The unsigned formats take
``scale`` and ``offset`` together.

Storage: what sits in DRAM
--------------------------
:class:`QTensor` holds the integers as they would sit in DRAM, so bit errors hit them:
int16, int8 and uint8 as tensors of that dtype in the original shape (two's complement or
plain binary, little endian; bit ``k`` of a uint8 code is worth ``2**k * scale``), int4 and
uint4 as nibbles packed two per uint8 by :func:`errormodels.inject.pack_int4` (element
``2 i`` in the low nibble of byte ``i``; an odd count gets one zero nibble of padding, exposed
to errors but never read back). fp32 keeps a float32 copy. :func:`storage` gives that tensor
and the ``dtype_bits`` to pass to :func:`errormodels.inject.inject_`; the scale and offset
are metadata, kept error-free.

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
    "compute_qparams",
    "quantize",
    "dequantize",
    "storage",
    "FakeQuant",
    "fake_quantize",
]


class QuantError(ValueError):
    """An unknown format, a bad scale or offset, or a tensor that cannot be quantized."""


@dataclass(frozen=True)
class QuantFormat:
    """A numeric format: float32 pass-through, a symmetric signed or an asymmetric unsigned ``bits``-bit integer.

    Attributes
    ----------
    name : str
        Registry name (``fp32``, ``int16``, ``int8``, ``int4``, ``uint8``, ``uint4``).
    bits : int
        Bits per value.
    is_float : bool
        True for float32 pass-through.
    unsigned : bool
        True for the asymmetric unsigned formats (codes ``0 .. 2**bits - 1``, a scale and an offset).
    """

    name: str
    bits: int
    is_float: bool = False
    unsigned: bool = False

    @property
    def qmax(self) -> int:
        """Largest integer code: ``2**(bits-1) - 1`` (signed), ``2**bits - 1`` (unsigned), 0 (float)."""
        if self.is_float:
            return 0
        return (1 << self.bits) - 1 if self.unsigned else (1 << (self.bits - 1)) - 1

    @property
    def int_range(self) -> tuple[int, int]:
        """Codes :func:`quantize` produces: ``(-qmax, qmax)`` signed, ``(0, qmax)`` unsigned."""
        return (0, self.qmax) if self.unsigned else (-self.qmax, self.qmax)

    @property
    def storage_dtype(self) -> torch.dtype:
        """Dtype of the stored tensor (uint8 for packed 4-bit and for uint8)."""
        if self.unsigned:
            return torch.uint8
        return {32: torch.float32, 16: torch.int16, 8: torch.int8, 4: torch.uint8}[self.bits]

    @property
    def dtype_bits(self) -> int:
        """``dtype_bits`` for :func:`errormodels.inject.inject_` (4 for packed 4-bit formats)."""
        return self.bits


QUANT_FORMATS: dict[str, QuantFormat] = {
    f.name: f
    for f in (QuantFormat("fp32", 32, True), QuantFormat("int16", 16), QuantFormat("int8", 8), QuantFormat("int4", 4),
              QuantFormat("uint8", 8, unsigned=True), QuantFormat("uint4", 4, unsigned=True))
}
"""The formats by name."""


def get_format(fmt: Union[str, QuantFormat]) -> QuantFormat:
    """A format by name (``fp32``, ``int16``, ``int8``, ``int4``, ``uint8``, ``uint4``; case-insensitive) or as given.

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
        The stored tensor: float32 (fp32), int16, int8, uint8 (original shape) or packed
        int4 / uint4 (flat uint8, ``ceil(numel / 2)`` bytes). Injecting errors into it in place
        changes what :func:`dequantize` returns.
    scale : float
        Value step of one code (a float32 value; 1.0 for fp32).
    shape : torch.Size
        Shape of the original tensor.
    fmt : QuantFormat
        The format.
    offset : float
        Value of code 0 (a float32 value; 0.0 for the symmetric formats and fp32).
    """

    data: torch.Tensor
    scale: float
    shape: torch.Size
    fmt: QuantFormat
    offset: float = 0.0

    @property
    def numel(self) -> int:
        """Values held (excluding 4-bit padding)."""
        return math.prod(self.shape)

    def int_values(self) -> torch.Tensor:
        """The integer codes in the original shape (int16, int8, uint8; 4-bit formats unpacked to int8).

        Raises
        ------
        QuantError
            For fp32, which holds no integer codes.
        """
        if self.fmt.is_float:
            raise QuantError("fp32 holds floats, not integer codes")
        if self.fmt.bits == 4:
            return unpack_int4(self.data, signed=not self.fmt.unsigned)[: self.numel].reshape(self.shape)
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


def _qparams_of(x32: torch.Tensor, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``((max - min) / qmax, min)`` as float32 0-dim tensors; scale 1.0 when ``max == min``, ``(1, 0)`` when empty."""
    if x32.numel() == 0:
        one = torch.ones((), dtype=torch.float32, device=x32.device)
        return one, torch.zeros_like(one)
    lo, hi = torch.aminmax(x32)
    span = hi - lo
    return torch.where(span > 0, span / qmax, torch.ones_like(span)), lo


def compute_scale(x: torch.Tensor, fmt: Union[str, QuantFormat]) -> float:
    """The per-tensor scale :func:`quantize` would use for ``x`` (1.0 for fp32 or a constant tensor).

    ``max|x| / qmax`` for the symmetric formats, ``(max(x) - min(x)) / qmax`` for the unsigned ones.

    Raises
    ------
    QuantError
        For an unknown format, a non-float tensor, or NaN/Inf in ``x``.
    """
    return compute_qparams(x, fmt)[0]


def compute_qparams(x: torch.Tensor, fmt: Union[str, QuantFormat]) -> tuple[float, float]:
    """``(scale, offset)`` :func:`quantize` would use for ``x``; the offset is 0.0 except for unsigned formats (``min(x)``).

    Raises
    ------
    QuantError
        For an unknown format, a non-float tensor, or NaN/Inf in ``x``.
    """
    f = get_format(fmt)
    x32 = _float_input(x)
    if f.is_float:
        return 1.0, 0.0
    if f.unsigned:
        s_t, o_t = _qparams_of(x32, f.qmax)
        scale, offset = float(s_t), float(o_t)
    else:
        scale, offset = float(_scale_of(x32, f.qmax)), 0.0
    if not (math.isfinite(scale) and math.isfinite(offset)):
        raise QuantError("cannot quantize a tensor holding NaN or Inf")
    return scale, offset


def _codes(x32: torch.Tensor, scale: Union[float, torch.Tensor], qmax: int) -> torch.Tensor:
    """``clamp(round(x / scale), -qmax, qmax)`` in float32."""
    return torch.round(x32 / scale).clamp_(-qmax, qmax)


def _ucodes(x32: torch.Tensor, scale: Union[float, torch.Tensor], offset: Union[float, torch.Tensor],
            qmax: int) -> torch.Tensor:
    """``clamp(round((x - offset) / scale), 0, qmax)`` in float32."""
    return torch.round((x32 - offset) / scale).clamp_(0, qmax)


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


def _check_offset(offset: Any) -> float:
    if isinstance(offset, torch.Tensor):
        if offset.numel() != 1:
            raise QuantError(f"offset must be a single number, got a tensor of shape {tuple(offset.shape)}")
        offset = offset.item()
    if not isinstance(offset, (int, float)) or isinstance(offset, bool) or not math.isfinite(offset):
        raise QuantError(f"offset must be a finite number, got {offset!r}")
    o32 = float(torch.tensor(float(offset), dtype=torch.float32))
    if not math.isfinite(o32):
        raise QuantError(f"offset {offset!r} overflows float32")
    return o32


def _params(x32: torch.Tensor, f: QuantFormat, scale: Any, offset: Any) -> tuple[float, float]:
    """Checked ``(scale, offset)`` for ``x32`` in the integer format ``f`` (given, or computed from ``x32``)."""
    if f.unsigned:
        if (scale is None) != (offset is None):
            raise QuantError(f"{f.name} takes scale and offset together (or neither)")
        if scale is None:
            s_t, o_t = _qparams_of(x32, f.qmax)
            s, o = float(s_t), float(o_t)
            if not (math.isfinite(s) and math.isfinite(o)):
                raise QuantError("cannot quantize a tensor holding NaN or Inf")
            return s, o
        return _check_scale(scale), _check_offset(offset)
    if offset is not None and _check_offset(offset) != 0.0:
        raise QuantError(f"{f.name} is symmetric: its offset is 0, got {offset!r}")
    if scale is None:
        s = float(_scale_of(x32, f.qmax))
        if not math.isfinite(s):
            raise QuantError("cannot quantize a tensor holding NaN or Inf")
        return s, 0.0
    return _check_scale(scale), 0.0


def _pack4(codes: torch.Tensor) -> torch.Tensor:
    flat = codes.reshape(-1).to(torch.int8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return pack_int4(flat)


def quantize(x: torch.Tensor, fmt: Union[str, QuantFormat], *, scale: Optional[float] = None,
             offset: Optional[float] = None) -> QTensor:
    """``x`` in format ``fmt``, held as the integers (or floats) that would sit in DRAM.

    Parameters
    ----------
    x : torch.Tensor
        Floating-point values (any shape, any device; computed in float32).
    fmt : str or QuantFormat
        ``fp32``, ``int16``, ``int8``, ``int4``, ``uint8`` or ``uint4``.
    scale : float, optional
        Value step of one code; default from ``x`` (``max|x| / qmax``, or ``(max - min) / qmax``
        for the unsigned formats). Values beyond the range saturate. Ignored by fp32.
    offset : float, optional
        Unsigned formats: the value of code 0, given together with ``scale`` (default
        ``min(x)``). The symmetric formats accept only None or 0.

    Returns
    -------
    QTensor
        With fresh storage (``x`` is not modified or aliased).

    Raises
    ------
    QuantError
        For an unknown format, a non-float tensor, a bad scale or offset, or NaN/Inf in ``x``
        (integer formats).
    """
    f = get_format(fmt)
    x32 = _float_input(x)
    if f.is_float:
        return QTensor(x32.clone(memory_format=torch.contiguous_format), 1.0, x32.shape, f)
    s, o = _params(x32, f, scale, offset)
    codes = _ucodes(x32, s, o, f.qmax) if f.unsigned else _codes(x32, s, f.qmax)
    if scale is not None and codes.numel() and bool(torch.isnan(codes).any()):  # a NaN min/max was caught above
        raise QuantError("cannot quantize a tensor holding NaN")
    if f.bits == 4:
        data = _pack4(codes)
    else:
        data = codes.to(f.storage_dtype).contiguous()
    return QTensor(data, s, x32.shape, f, o)


def dequantize(q: QTensor) -> torch.Tensor:
    """The float32 values a :class:`QTensor` stands for: ``codes * scale + offset`` (a new tensor, original shape).

    Codes changed by bit errors are dequantized like any other (int4 nibbles as two's
    complement, -8 .. 7; uint4 nibbles as 0 .. 15); fp32 returns a copy of the stored floats.
    """
    if not isinstance(q, QTensor):
        raise QuantError(f"expected a QTensor, got {type(q).__name__}")
    if q.fmt.is_float:
        return q.data.clone().reshape(q.shape)
    out = q.int_values().to(torch.float32) * q.scale
    if q.fmt.unsigned:
        out += q.offset
    return out


def storage(q: QTensor) -> Storage:
    """The tensor whose bits an error model should hit (``q.data`` itself, not a copy) and its ``dtype_bits``.

    ``s = storage(q); inject_(s.tensor, model, seed=1, dtype_bits=s.dtype_bits)`` corrupts ``q``
    in place; then ``dequantize(q)`` gives the values a network would read.
    """
    if not isinstance(q, QTensor):
        raise QuantError(f"expected a QTensor, got {type(q).__name__}")
    return Storage(q.data, q.fmt.dtype_bits)


class FakeQuant(torch.autograd.Function):
    """Straight-through fake quantization: forward ``dequantize(quantize(x, fmt, scale=, offset=))``, backward identity.

    Use through :func:`fake_quantize` or ``FakeQuant.apply(x, fmt, scale, offset)``. The forward
    computes in float32 and returns ``x``'s dtype; scale (and, for unsigned formats, offset)
    default to those of the current ``x``. The gradient with respect to ``x`` is passed through
    unchanged, also for values that saturated; ``fmt``, ``scale`` and ``offset`` get none.
    fp32 is the identity.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fmt: Union[str, QuantFormat],
                scale: Optional[float] = None, offset: Optional[float] = None) -> torch.Tensor:
        f = get_format(fmt)
        if not x.dtype.is_floating_point:
            raise QuantError(f"can only fake-quantize floating-point tensors, got {x.dtype}")
        if f.is_float:
            return x.clone()
        x32 = x.detach().to(torch.float32)
        if f.unsigned:
            if (scale is None) != (offset is None):
                raise QuantError(f"{f.name} takes scale and offset together (or neither)")
            if scale is None:
                s, o = _qparams_of(x32, f.qmax)  # tensors: no device sync
            else:
                s, o = _check_scale(scale), _check_offset(offset)
            return (_ucodes(x32, s, o, f.qmax) * s + o).to(x.dtype)
        if offset is not None and _check_offset(offset) != 0.0:
            raise QuantError(f"{f.name} is symmetric: its offset is 0, got {offset!r}")
        s1: Union[float, torch.Tensor] = _scale_of(x32, f.qmax) if scale is None else _check_scale(scale)
        return (_codes(x32, s1, f.qmax) * s1).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return grad_output, None, None, None


def fake_quantize(x: torch.Tensor, fmt: Union[str, QuantFormat], *, scale: Optional[float] = None,
                  offset: Optional[float] = None) -> torch.Tensor:
    """:class:`FakeQuant` applied to ``x``: quantize-dequantize forward, straight-through gradient."""
    return FakeQuant.apply(x, fmt, scale, offset)

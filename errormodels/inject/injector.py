"""The injector: a model's :class:`~errormodels.models.FlipPlan` drawn exactly and sparsely over a tensor."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import torch

from errormodels.inject import sampler
from errormodels.inject.flip import _Flipper
from errormodels.inject.mitigation import _mitigate
from errormodels.inject.stats import InjectionError, InjectionStats
from errormodels.inject.tensors import Mitigation, _bit_masks, _check_args, _generator
from errormodels.inject.weak import weak_bitlines, weak_groups
from errormodels.layout import AddressMap
from errormodels.models import ErrorModel, FlipPlan, WeakBits

__all__ = ["inject_", "inject"]

_CHUNK_CANDIDATES = 1 << 20  # expected draws per chunk (8 MiB per int64 temporary)
_MIN_CHUNK_BITS = 1 << 22


def _chunk_bits(n_bits: int, p_max: float) -> int:
    if p_max <= 0 or _CHUNK_CANDIDATES / p_max >= n_bits:
        return max(n_bits, 64)
    bits = max(_MIN_CHUNK_BITS, int(_CHUNK_CANDIDATES / p_max))
    return max(64, bits - bits % 64)  # whole bytes and whole elements


class _Context:
    """What a model's ``flip_plan`` may ask about the tensor (:class:`errormodels.models.PlanContext`)."""

    def __init__(self, n_bits: int, device: torch.device, layout: Optional[AddressMap]) -> None:
        self.n_bits = n_bits
        self.device = device
        self.layout = layout
        self._amap: Optional[AddressMap] = None

    def address_map(self) -> AddressMap:
        if self._amap is None:
            amap = self.layout if self.layout is not None else AddressMap()
            amap.check_fits(self.n_bits // 8)
            self._amap = amap
        return self._amap

    def weak_groups(self, kind: int, seed: int, weak_fraction: float, group_bits: int) -> WeakBits:
        return weak_groups(kind, seed, weak_fraction, group_bits, self.address_map(), self.n_bits, self.device)

    def weak_bitlines(self, kind: int, seed: int, weak_fraction: float) -> WeakBits:
        return weak_bitlines(kind, seed, weak_fraction, self.address_map(), self.n_bits, self.device)


def _plan_of(model: ErrorModel, n_bits: int, device: torch.device, layout: Optional[AddressMap]) -> FlipPlan:
    plan = model.flip_plan(_Context(n_bits, device, layout))
    if not isinstance(plan, FlipPlan):
        raise InjectionError(f"error model {model.name}: flip_plan must return a FlipPlan, got {type(plan).__name__}")
    return plan


def _thin(data: torch.Tensor, cand: torch.Tensor, keep01: tuple[float, float], gen: torch.Generator
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each candidate with ``keep01[bit value]``: (kept positions, their current bytes)."""
    old = data.index_select(0, cand >> 3)
    holds_one = ((old & _bit_masks(cand)) != 0).to(torch.int64)
    keep_p = torch.tensor(keep01, dtype=torch.float64, device=data.device)[holds_one]
    keep = torch.rand(cand.numel(), dtype=torch.float64, generator=gen, device=data.device) < keep_p
    return cand[keep], old[keep]


def _inject_flat(data: torch.Tensor, width: int, model: ErrorModel, gen: torch.Generator,
                 layout: Optional[AddressMap], src: Optional[torch.Tensor] = None) -> InjectionStats:
    """Flip bits of the flat uint8 view ``data`` in place as ``model``'s flip plan says (after copying
    ``src`` into it, if given: the compiled kernel does both in one pass)."""
    dev = data.device
    n_bits = data.numel() * 8
    plan = _plan_of(model, n_bits, dev, layout)
    weak, by_value, p = plan.weak, plan.by_value, plan.p
    block_sampled = weak is None and by_value is None and 0.0 < p <= 0.5
    if block_sampled and dev.type == "cpu" and sampler._flipkernel is not None:
        return sampler._flip_uniform_kernel(data, src, width, p, gen)
    if src is not None:
        data.copy_(src)
    flipper = _Flipper(data, int(math.log2(width)))
    if block_sampled:
        key = sampler._draw_key(gen)
        counts = sampler._block_counts(n_bits, p, key)
        step = max(1, int(_CHUNK_CANDIDATES / (p * sampler._BLOCK_BITS)))  # blocks per chunk
        for b0 in range(0, counts.size, step):
            flipper.flip(sampler._ranks(n_bits, counts, key, b0, min(b0 + step, counts.size), dev))
        return flipper.stats(n_bits, width)
    if weak is not None:
        p_weak = plan.p_weak
        p_max = (weak.n * p_weak + (n_bits * p if weak.n < n_bits else 0.0)) / n_bits  # draws per bit
    else:
        p_max = p

    chunk = _chunk_bits(n_bits, p_max)
    draw = sampler._bernoulli_ranks
    for lo in range(0, n_bits if p_max > 0 else 0, chunk):
        hi = min(lo + chunk, n_bits)
        if weak is not None:
            if weak.n:
                r0, r1 = weak.rank_of(torch.tensor([lo, hi], dtype=torch.int64, device=dev)).tolist()
                pos = weak.position_of(draw(r1 - r0, p_weak, gen, dev, offset=r0))
            else:
                pos = torch.empty(0, dtype=torch.int64, device=dev)
            cand = draw(hi - lo if weak.n < n_bits else 0, p, gen, dev, offset=lo)
            cand = cand[~weak.contains(cand)]
            old_pos = old_cand = None
            if by_value is not None and by_value != (1.0, 1.0):
                pos, old_pos = _thin(data, pos, by_value, gen)
                cand, old_cand = _thin(data, cand, by_value, gen)
            flipper.weak_flipped += pos.numel()
            flipper.count_touched(flipper.flip(pos, need_elements=True, old_bytes=old_pos),
                                  flipper.flip(cand, need_elements=True, old_bytes=old_cand))
            continue
        cand = draw(hi - lo, p, gen, dev, offset=lo)
        if by_value is None or by_value == (1.0, 1.0):
            flipper.flip(cand)
            continue
        kept, old = _thin(data, cand, by_value, gen)
        flipper.flip(kept, old_bytes=old)

    return flipper.stats(n_bits, width, weak.n if weak is not None else 0)


def _run(out: torch.Tensor, model: ErrorModel, gen: torch.Generator, layout: Optional[AddressMap], width: int,
         mitigation: Mitigation, value_range: Optional[tuple[float, float]], int4_signed: bool,
         src: Optional[torch.Tensor] = None) -> InjectionStats:
    """Inject into contiguous ``out`` (first a copy of contiguous ``src``, if given), then mitigate."""
    if out.numel() == 0:
        return InjectionStats()
    src_bytes = src.view(-1).view(torch.uint8) if src is not None else None
    stats = _inject_flat(out.view(-1).view(torch.uint8), width, model, gen, layout, src_bytes)
    if mitigation is not None:
        mitigated = _mitigate(out, width, mitigation, value_range, int4_signed)
        stats = replace(stats, values_mitigated=mitigated)
    return stats


def inject_(tensor: torch.Tensor, model: ErrorModel, *, generator: Optional[torch.Generator] = None,
            seed: Optional[int] = None, layout: Optional[AddressMap] = None, dtype_bits: Optional[int] = None,
            mitigation: Mitigation = None, value_range: Optional[tuple[float, float]] = None,
            int4_signed: bool = True) -> InjectionStats:
    """Flip bits of ``tensor`` in place as ``model`` says; optionally mitigate out-of-range values.

    Parameters
    ----------
    tensor : torch.Tensor
        float32, float16, bfloat16, float64, int32, int16, int8 or uint8, on any device; packed
        int4 is a uint8 (or int8) tensor with ``dtype_bits=4``. A non-contiguous tensor is
        processed in C order through a contiguous copy.
    model : ErrorModel
        Any model with a flip plan: :class:`~errormodels.models.Uniform`,
        :class:`~errormodels.models.Wordline`, :class:`~errormodels.models.Bitline`,
        :class:`~errormodels.models.BitValue`, or one added with
        :func:`~errormodels.models.register_model`.
    generator : torch.Generator, optional
        Source of randomness, on the tensor's device. Give this or ``seed``.
    seed : int, optional
        Seed for a fresh generator on the tensor's device.
    layout : AddressMap, optional
        Where the tensor's bytes sit in DRAM; used by the wordline and bitline models
        (default ``AddressMap()``: bank 0, row 0, row interleaving), ignored by the others.
    dtype_bits : int, optional
        Element width in bits: the dtype's (default) or 4 for packed int4.
    mitigation : {"zero", "saturate", None}
        What to do with values outside ``value_range`` after injection (NaN/Inf always count).
    value_range : (lo, hi), optional
        Range of clean values (see :func:`calibrate_range`); required with ``mitigation``.
    int4_signed : bool
        Whether packed int4 values are two's complement (for mitigation only).

    Returns
    -------
    InjectionStats

    Raises
    ------
    InjectionError
        Unsupported dtype, both or neither of ``generator``/``seed``, a generator on another
        device, or ``mitigation`` and ``value_range`` not given together.
    LayoutError
        If the tensor does not fit in the DIMM from the layout's start address.
    ModelError
        A model that defines no flip plan.
    """
    width, value_range = _check_args(tensor, model, dtype_bits, mitigation, value_range)
    gen = _generator(tensor, generator, seed)
    with torch.no_grad():
        work = tensor if tensor.is_contiguous() else tensor.contiguous()
        stats = _run(work, model, gen, layout, width, mitigation, value_range, int4_signed)
        if work is not tensor:
            tensor.copy_(work)
    return stats



def inject(tensor: torch.Tensor, model: ErrorModel, *, generator: Optional[torch.Generator] = None,
           seed: Optional[int] = None, layout: Optional[AddressMap] = None, dtype_bits: Optional[int] = None,
           mitigation: Mitigation = None, value_range: Optional[tuple[float, float]] = None,
           int4_signed: bool = True) -> tuple[torch.Tensor, InjectionStats]:
    """Like :func:`inject_`, into a contiguous copy: returns ``(copy, stats)`` and leaves ``tensor`` alone."""
    width, value_range = _check_args(tensor, model, dtype_bits, mitigation, value_range)
    gen = _generator(tensor, generator, seed)
    with torch.no_grad():
        src = tensor.detach() if tensor.is_contiguous() else tensor.detach().contiguous()
        out = torch.empty(src.shape, dtype=src.dtype, device=src.device)
        stats = _run(out, model, gen, layout, width, mitigation, value_range, int4_signed, src=src)
    return out, stats

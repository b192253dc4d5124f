"""The injector: a model's :class:`~errormodels.models.FlipPlan` drawn exactly and sparsely over a tensor."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Optional, Union

import torch

from errormodels.envm import CellPlan
from errormodels.inject import sampler
from errormodels.inject.cells import inject_cells
from errormodels.inject.flip import _Flipper
from errormodels.inject.mitigation import _mitigate
from errormodels.inject.mix import mix64_torch, s64, shr
from errormodels.inject.stats import InjectionError, InjectionStats, _stats
from errormodels.inject.tensors import Mitigation, _bit_masks, _check_args, _check_source, _key, _written
from errormodels.inject.weak import _WeakBitlines, _WeakPieces, weak_bitlines, weak_groups
from errormodels.layout import AddressMap
from errormodels.models import ErrorModel, FlipPlan, WeakBits

__all__ = ["inject_", "inject"]

_CHUNK_CANDIDATES = 1 << 20  # expected draws per chunk of the vectorised path (8 MiB per int64 temporary)
_ELEM_SHIFT = {4: 2, 8: 3, 16: 4, 32: 5, 64: 6}


class _Context:
    """What a model's ``flip_plan`` may ask about the tensor (:class:`errormodels.models.PlanContext`)."""

    def __init__(self, n_bits: int, device: torch.device, layout: Optional[AddressMap]) -> None:
        self.n_bits = n_bits
        self.device = device
        self.layout = layout
        self._amap: Optional[AddressMap] = None

    def address_map(self) -> AddressMap:
        if self._amap is None:
            n_bytes = self.n_bits // 8
            if self.layout is None and n_bytes <= _DEFAULT_ROOM:
                self._amap = _DEFAULT_MAP
            else:
                self._amap = _fitted(self.layout if self.layout is not None else _DEFAULT_MAP, n_bytes)
        return self._amap

    def weak_groups(self, kind: int, seed: int, weak_fraction: float, group_bits: int) -> WeakBits:
        return weak_groups(kind, seed, weak_fraction, group_bits, self.address_map(), self.n_bits, self.device)

    def weak_bitlines(self, kind: int, seed: int, weak_fraction: float) -> WeakBits:
        return weak_bitlines(kind, seed, weak_fraction, self.address_map(), self.n_bits, self.device)


_DEFAULT_MAP = AddressMap()
_DEFAULT_ROOM = _DEFAULT_MAP.capacity_bytes - _DEFAULT_MAP.start_address


@lru_cache(maxsize=4096)
def _fitted(amap: AddressMap, n_bytes: int) -> AddressMap:
    """``amap``, checked to hold ``n_bytes`` (remembered: the check computes addresses in Python)."""
    amap.check_fits(n_bytes)
    return amap


def _plan_of(model: ErrorModel, n_bits: int, device: torch.device,
             layout: Optional[AddressMap]) -> Union[FlipPlan, CellPlan]:
    plan = model.flip_plan(_Context(n_bits, device, layout))
    if not isinstance(plan, (FlipPlan, CellPlan)):
        raise InjectionError(f"error model {model.name}: flip_plan must return a FlipPlan or a CellPlan, "
                             f"got {type(plan).__name__}")
    return plan


def _keep_of(plan: FlipPlan) -> Optional[tuple[float, float]]:
    """The plan's thinning, or None where it keeps every chosen bit."""
    by_value = plan.by_value
    if by_value is None:
        return None
    keep = (float(by_value[0]), float(by_value[1]))
    return None if keep == (1.0, 1.0) else keep


def _thin(data: torch.Tensor, cand: torch.Tensor, thr: tuple[int, int], tkey: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each candidate whose thinning hash lies below ``thr[bit value]``: (kept positions, their current bytes)."""
    old = data.index_select(0, cand >> 3)
    holds_one = (old & _bit_masks(cand)) != 0
    u = shr(mix64_torch(cand * s64(sampler._GAMMA) + s64(tkey)), 11)
    keep = u < torch.where(holds_one, thr[1], thr[0])
    return cand[keep], old[keep]


def _numpy(t: torch.Tensor):
    """A numpy view of a contiguous CPU tensor's storage (bfloat16 through int16: numpy has no bfloat16)."""
    t = t.detach()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()


def _inject_kernel(out: torch.Tensor, src: Optional[torch.Tensor], width: int, plan: FlipPlan, n_bits: int,
                   key: int) -> Optional[InjectionStats]:
    """The plan drawn and applied by the compiled kernel (copying ``src`` into ``out`` first, in the same
    pass), or None where the kernel cannot draw it (a weak set of another kind)."""
    weak = plan.weak
    wargs = None
    if weak is not None:
        if not isinstance(weak, (_WeakPieces, _WeakBitlines)):
            return None
        wargs = weak.kernel_args()
        if wargs is None:
            return None
    flipped, ones, touched, weak_flipped = sampler._kernel_inject(
        _numpy(out), _numpy(src) if src is not None else None, _ELEM_SHIFT[width], key, plan.p, wargs, plan.p_weak,
        _keep_of(plan))
    _written(out)
    return _stats(n_bits, flipped, ones, n_bits // width, touched, weak.n if weak is not None else 0, weak_flipped)


def _inject_vectorised(data: torch.Tensor, width: int, plan: FlipPlan, keep: Optional[tuple[float, float]],
                       key: int) -> InjectionStats:
    """The plan drawn by numpy counts and torch positions (any device), in chunks of whole blocks."""
    dev = data.device
    n_bits = data.numel() * 8
    flipper = _Flipper(data, _ELEM_SHIFT[width])
    weak = plan.weak
    strong = sampler._Process(n_bits, plan.p, key)
    wproc, r_base = None, 0
    density = 1.0 if strong.complement else plan.p
    if weak is not None and weak.n > 0:
        wproc = sampler._Process(weak.n, plan.p_weak, sampler._subkey(key, 1))
        r_base = int(weak.rank_of(torch.zeros(1, dtype=torch.int64, device=dev)))
        density += weak.n / n_bits * (1.0 if wproc.complement else plan.p_weak)
    thr = (sampler._keep_threshold(keep[0]), sampler._keep_threshold(keep[1])) if keep is not None else None
    tkey = sampler._subkey(key, 2)
    n_blocks = strong.n_blocks
    step = max(1, int(_CHUNK_CANDIDATES / (density * sampler._BLOCK_BITS))) if density > 0 else n_blocks
    for b0 in range(0, n_blocks if density > 0 else 0, step):
        b1 = min(b0 + step, n_blocks)
        lo, hi = b0 * sampler._BLOCK_BITS, min(b1 * sampler._BLOCK_BITS, n_bits)
        cand = strong.chosen(b0, b1, dev)
        if weak is None:
            if thr is None:
                flipper.flip(cand)
            else:
                kept, old = _thin(data, cand, thr, tkey)
                flipper.flip(kept, old_bytes=old)
            continue
        if cand.numel():
            cand = cand[~weak.contains(cand)]
        if wproc is not None:
            r0, r1 = (weak.rank_of(torch.tensor([lo, hi], dtype=torch.int64, device=dev)) - r_base).tolist()
            pos = weak.position_of(wproc.chosen_in(r0, r1, dev) + r_base)
        else:
            pos = torch.empty(0, dtype=torch.int64, device=dev)
        old_pos = old_cand = None
        if thr is not None:
            pos, old_pos = _thin(data, pos, thr, tkey)
            cand, old_cand = _thin(data, cand, thr, tkey)
        flipper.weak_flipped += pos.numel()
        flipper.count_touched(flipper.flip(pos, need_elements=True, old_bytes=old_pos),
                              flipper.flip(cand, need_elements=True, old_bytes=old_cand))
    return flipper.stats(n_bits, width, weak.n if weak is not None else 0)


def _run(out: torch.Tensor, model: ErrorModel, generator: Optional[torch.Generator], seed: Optional[int],
         layout: Optional[AddressMap], width: int, mitigation: Mitigation, value_range: Optional[tuple[float, float]],
         int4_signed: bool, src: Optional[torch.Tensor] = None) -> InjectionStats:
    """Flip bits of contiguous ``out`` (first a copy of contiguous ``src``, if given: the compiled kernel
    does both in one pass) as ``model``'s flip plan says, then mitigate."""
    if out.numel() == 0:
        return InjectionStats()
    n_bits = out.numel() * out.element_size() * 8
    plan = _plan_of(model, n_bits, out.device, layout)
    key = _key(out, generator, seed)
    stats = None
    if isinstance(plan, CellPlan):  # multi-level cells: faults per cell (errormodels.inject.cells)
        with torch.no_grad():
            data = out.view(-1).view(torch.uint8)
            if src is not None:
                data.copy_(src.reshape(-1).view(torch.uint8))
            stats = inject_cells(data, _ELEM_SHIFT[width], width, plan, key)
    elif out.device.type == "cpu" and sampler._flipkernel is not None:
        stats = _inject_kernel(out, src, width, plan, n_bits, key)
    with torch.no_grad():
        if stats is None:
            data = out.view(-1).view(torch.uint8)
            if src is not None:
                data.copy_(src.reshape(-1).view(torch.uint8))
            stats = _inject_vectorised(data, width, plan, _keep_of(plan), key)
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
    _check_source(tensor, generator, seed)
    if tensor.is_contiguous():
        return _run(tensor, model, generator, seed, layout, width, mitigation, value_range, int4_signed)
    with torch.no_grad():
        work = tensor.contiguous()
        stats = _run(work, model, generator, seed, layout, width, mitigation, value_range, int4_signed)
        tensor.copy_(work)
    return stats



def inject(tensor: torch.Tensor, model: ErrorModel, *, generator: Optional[torch.Generator] = None,
           seed: Optional[int] = None, layout: Optional[AddressMap] = None, dtype_bits: Optional[int] = None,
           mitigation: Mitigation = None, value_range: Optional[tuple[float, float]] = None,
           int4_signed: bool = True) -> tuple[torch.Tensor, InjectionStats]:
    """Like :func:`inject_`, into a contiguous copy: returns ``(copy, stats)`` and leaves ``tensor`` alone."""
    width, value_range = _check_args(tensor, model, dtype_bits, mitigation, value_range)
    _check_source(tensor, generator, seed)
    src = tensor.detach()
    if not src.is_contiguous():
        src = src.contiguous()
    out = torch.empty(src.shape, dtype=src.dtype, device=src.device)
    stats = _run(out, model, generator, seed, layout, width, mitigation, value_range, int4_signed, src=src)
    return out, stats

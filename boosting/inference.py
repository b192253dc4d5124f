"""Error-injecting inference: memory as a noisy channel (EDEN, MICRO 2019, Fig. 7).

Model
-----
While an :class:`ErrorInjector` is active, every layer of a network whose type the
:class:`ErrorSpec` selects (``layer_types``, default convolution and linear) reads its
**weight** and its **input feature map** (IFM) from approximate DRAM:

1. the tensor is stored in the numeric format of the :class:`ErrorSpec` (:mod:`boosting.quant`:
   ``fp32`` floats, symmetric ``int16`` / ``int8`` / ``int4`` codes with an error-free scale,
   or asymmetric unsigned ``uint8`` / ``uint4`` codes with an error-free scale and offset);
2. the error model flips bits of the stored form (:func:`errormodels.inject.inject_`), with the
   tensor placed in DRAM by an :class:`~errormodels.layout.AddressMap` so wordline and bitline
   models see its real addresses;
3. optionally, values outside the clean range (and NaN/Inf) are zeroed or saturated
   (``mitigation``, thresholds from :func:`calibrate`);
4. the values are dequantized and used by the layer.

Layer types
-----------
:data:`LAYER_TYPES` names the module classes a spec can select:

=============  ==============================================  =====================
name           modules                                         tensors in DRAM
=============  ==============================================  =====================
``conv``       ``nn.Conv1d/2d/3d``, transposed convolutions    weight, IFM
``linear``     ``nn.Linear``                                   weight, IFM
``bn``         ``nn.BatchNorm1d/2d/3d``, ``SyncBatchNorm``     weight (gamma), IFM
``norm``       ``LayerNorm``, ``GroupNorm``, ``InstanceNorm``,  weight, IFM
               ``RMSNorm``
``embedding``  ``nn.Embedding``, ``nn.EmbeddingBag``            weight only
``all``        any module with a ``weight`` tensor             weight, float IFM
=============  ==============================================  =====================

Only the ``weight`` tensor of a layer is stored with errors (biases, BN running statistics
and other buffers stay exact); a layer without a weight tensor (``affine=False``) is not
selected. An IFM is the first positional input of the layer's ``forward`` and is injected only
when it is a floating-point tensor (an embedding's indices are not). A module called several
times in one forward pass gets fresh IFM errors on each call and the same corrupted weight.

Unsigned formats and mitigation
-------------------------------
A ``uint8`` / ``uint4`` code always dequantizes into the tensor's ``[min, max]``
(``offset .. offset + qmax * scale``), so a bit error cannot produce a value beyond it, nor
NaN/Inf. "Out of range" is therefore measured against the *calibrated clean* range, in codes:
codes outside ``[round((lo - offset) / scale), round((hi - offset) / scale)]`` (``lo, hi`` the
clean range widened by ``margin``). When the tensor is quantized on its own clean range (a
weight whose calibration matches it, an IFM quantized with the calibrated scale and offset)
that is every code, and mitigation changes nothing; it acts when the weights moved since the
calibration (e.g. during retraining). ``saturate`` clamps such codes to the nearest clean
code; ``zero`` replaces the *value* by real 0.0, which need not be a code (the code of 0 is
``-offset / scale``), so it is applied after dequantization, not in the stored codes.

Placement: the weights of the layers (in ``net.named_modules()`` order) lie one after another
from ``ErrorSpec.layout`` (default ``AddressMap()``: bank 0, row 0), each placed with
:meth:`~errormodels.layout.AddressMap.after`; the IFM buffers follow the last weight, one per
layer, allocated on the layer's first call (and moved to the end if a larger IFM arrives).

Weight image and random stream
------------------------------
The weights are stored, corrupted and read back **together**, as the one DRAM image the
placement describes: byte ``i`` of layer ``k``'s stored form sits at byte
``start_k - start_0 + i`` of the image, which starts at ``ErrorSpec.layout``. Once per
:meth:`ErrorInjector.reseed` (lazily, at the first read of any layer's weight after it, which
stores, and counts in the stats, all of them; and again, with the same seeds, when a clean
weight changes, e.g. after an optimizer step) every weight is
quantized with its own scale (and offset), and the image is corrupted with **one**
:func:`~errormodels.inject.inject_` call per run of consecutive layers under the same error
model (one run unless ``overrides`` give layers other BERs), with seed
``_seed_of(spec.seed, index, 0x5745, k)``, ``k`` the position of the run's first layer, at the
address map of that layer. Mitigation then uses each layer's own range, and
:attr:`~ErrorInjector.stats` gets each layer's flips from the difference of the image before
and after (weak-bit counts from the model's weak set). So the flips are those of a single
tensor the size of all weights: a layer's flips follow the same distribution as when each
weight was injected alone (the models flip each bit independently; wordline and bitline weak
cells depend on the address only), but not the same bits. The image is kept in buffers
allocated once; with a subclass that replaces :meth:`~ErrorInjector._corrupt` (e.g. reading
through a DIMM, :class:`boosting.hil.HilInjector`), placements that do not follow each other,
or weights that are not float32 on one device, each weight is stored on its own instead (seed
``_seed_of(spec.seed, index, 0x5745, layer position)``).

Each IFM is stored with one ``inject_`` call per forward call of its layer (fresh errors every
call, also for a module called twice in a pass), drawing from one generator per device seeded
with ``_seed_of(spec.seed, index, 0x4946)`` at each reseed; float32 IFMs in fp32 and the 8- and
16-bit formats go through per-layer buffers allocated once. With gradients a NaN in an IFM
that has a calibrated scale is not checked for: it comes out NaN through the straight-through
form (the loss is non-finite, and :func:`boosting.retrain.retrain` skips the step); without
them it raises :class:`~boosting.quant.QuantError`, as ``quantize`` does. All randomness derives from
``ErrorSpec.seed``, the reseed index, and the layers' positions.

Gradients: the clean weights stay the network's parameters (via
:mod:`torch.nn.utils.parametrize`, removed on exit so the original ``Parameter`` objects come
back untouched). With gradients enabled the corruption is a straight-through estimator,
``used = clean + (corrupt - clean).detach()``: the forward pass sees the corrupted values, the
backward pass treats the corruption as the identity, so gradients reach the clean weights and
inputs (for error-aware retraining).

Evaluation: :func:`evaluate` runs a data loader under several error seeds and reports the
mean accuracy with a 95 % confidence interval (Student's t over the seeds; Wilson's score
interval over the samples when there is one seed or no errors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from boosting.quant import (
    QTensor,
    QuantError,
    QuantFormat,
    _check_scale,
    _params,
    dequantize,
    get_format,
    quantize,
    storage,
)
from errormodels.inject import InjectionStats, inject_, pack_int4, unpack_int4, weak_bitlines, weak_groups
from errormodels.layout import AddressMap
from errormodels.models import ErrorModel

__all__ = [
    "InferenceError",
    "KINDS",
    "LAYER_TYPES",
    "DEFAULT_LAYER_TYPES",
    "check_layer_types",
    "MITIGATIONS",
    "ErrorSpec",
    "Calibration",
    "calibrate",
    "injectable_layers",
    "ErrorInjector",
    "AccuracyResult",
    "confidence_interval",
    "evaluate",
]

KINDS = ("weight", "ifm")
"""What a layer stores in DRAM: its weight tensor and its input feature map."""

MITIGATIONS = ("zero", "saturate", None)
"""Mitigations of out-of-range values after injection."""

_WEIGHT_TAG = 0x5745
_IFM_TAG = 0x4946


class InferenceError(ValueError):
    """A bad spec, a missing calibration or a network without injectable layers."""


def _seed_of(*parts: int) -> int:
    """A 63-bit seed derived from non-negative integers (numpy ``SeedSequence``)."""
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _check_seed(name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise InferenceError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


LAYER_TYPES: dict[str, tuple[type, ...]] = {
    "conv": (nn.modules.conv._ConvNd,),
    "linear": (nn.Linear,),
    "bn": (nn.modules.batchnorm._BatchNorm,),
    "norm": (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.RMSNorm),
    "embedding": (nn.Embedding, nn.EmbeddingBag),
    "all": (nn.Module,),
}
"""Layer types an :class:`ErrorSpec` can select, by name: the module classes each covers."""

DEFAULT_LAYER_TYPES: tuple[str, ...] = ("conv", "linear")
"""The layer types of :class:`ErrorSpec` and :func:`injectable_layers` by default."""

_WEIGHT_ONLY = LAYER_TYPES["embedding"]  # modules whose input is not a feature map


def check_layer_types(layer_types: Union[str, Iterable[str]]) -> tuple[str, ...]:
    """``layer_types`` as a tuple of known names in :data:`LAYER_TYPES` order (a single name may be given).

    Raises
    ------
    InferenceError
        For an unknown name, a non-string, or no name at all.
    """
    names = [layer_types] if isinstance(layer_types, str) else layer_types
    try:
        names = [n.strip().lower() if isinstance(n, str) else n for n in names]
    except TypeError:
        raise InferenceError(f"layer_types must be names of {', '.join(LAYER_TYPES)}, got {layer_types!r}") from None
    unknown = [n for n in names if n not in LAYER_TYPES]
    if unknown:
        raise InferenceError(f"unknown layer type(s) {', '.join(map(repr, unknown))}; known: {', '.join(LAYER_TYPES)}")
    if not names:
        raise InferenceError(f"layer_types must name at least one of {', '.join(LAYER_TYPES)}")
    return tuple(n for n in LAYER_TYPES if n in names)


def injectable_layers(net: nn.Module, layer_types: Union[str, Iterable[str]] = DEFAULT_LAYER_TYPES
                      ) -> list[tuple[str, nn.Module]]:
    """The layers of ``net`` of the given types that have a weight tensor, as ``(name, module)`` in ``named_modules()`` order.

    Parameters
    ----------
    net : nn.Module
        Any network.
    layer_types : str or iterable of str
        Names of :data:`LAYER_TYPES` (default convolution and linear).

    Raises
    ------
    InferenceError
        For an unknown layer type.
    """
    classes = tuple(c for t in check_layer_types(layer_types) for c in LAYER_TYPES[t])
    out = []
    for name, module in net.named_modules():
        if isinstance(module, classes) and isinstance(getattr(module, "weight", None), torch.Tensor):
            out.append((name, module))
    return out


def _no_layers(layer_types: Sequence[str]) -> InferenceError:
    return InferenceError(f"the network has no layer of type(s) {', '.join(layer_types)} with a weight tensor")


# ---------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class ErrorSpec:
    """Which errors hit the network, in which numeric format, and what mitigates them.

    Attributes
    ----------
    model : ErrorModel
        The error model (:func:`errormodels.models.get_model`); its ``ber`` applies to every
        layer and kind unless overridden.
    overrides : mapping
        ``{(layer_name, "weight" | "ifm"): ber}``: per-layer, per-kind BER replacing
        ``model.ber`` (the model's shape is kept, :meth:`ErrorModel.with_ber`).
    fmt : str
        Numeric format of the stored tensors: ``fp32``, ``int16``, ``int8``, ``int4``,
        ``uint8`` or ``uint4`` (:mod:`boosting.quant`).
    mitigation : {"zero", "saturate", None}
        Replace values outside the calibrated clean range (and NaN/Inf) after injection by
        zero or by the nearest bound; None keeps them.
    seed : int
        Root of every random choice of the injector.
    layout : AddressMap
        Where the first weight sits in DRAM; the other tensors follow it.
    margin : float
        Widen the mitigation ranges by this fraction of their width on each side.
    layer_types : tuple of str
        Which layers store their weights and IFMs in approximate DRAM: names of
        :data:`LAYER_TYPES` (a single name or any iterable is accepted and normalised to a
        tuple in registry order; default ``("conv", "linear")``).
    """

    model: ErrorModel
    overrides: Mapping[tuple[str, str], float] = field(default_factory=dict)
    fmt: str = "fp32"
    mitigation: Optional[str] = None
    seed: int = 0
    layout: AddressMap = field(default_factory=AddressMap)
    margin: float = 0.0
    layer_types: tuple[str, ...] = DEFAULT_LAYER_TYPES

    def __post_init__(self) -> None:
        if not isinstance(self.model, ErrorModel):
            raise InferenceError(f"model must be an ErrorModel, got {type(self.model).__name__}")
        object.__setattr__(self, "layer_types", check_layer_types(self.layer_types))
        object.__setattr__(self, "fmt", get_format(self.fmt).name)
        if self.mitigation not in MITIGATIONS:
            raise InferenceError(f"mitigation must be 'zero', 'saturate' or None, got {self.mitigation!r}")
        _check_seed("seed", self.seed)
        if not isinstance(self.layout, AddressMap):
            raise InferenceError(f"layout must be an AddressMap, got {type(self.layout).__name__}")
        if not isinstance(self.margin, (int, float)) or not math.isfinite(self.margin) or self.margin < 0:
            raise InferenceError(f"margin must be a finite number >= 0, got {self.margin!r}")
        checked = {}
        for key, ber in dict(self.overrides).items():
            if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str) and key[1] in KINDS):
                raise InferenceError(f"override keys are (layer_name, 'weight' | 'ifm'), got {key!r}")
            if not isinstance(ber, (int, float)) or isinstance(ber, bool) or not 0.0 <= ber <= 1.0:
                raise InferenceError(f"override BER for {key!r} must be in [0, 1], got {ber!r}")
            checked[key] = float(ber)
        object.__setattr__(self, "overrides", checked)

    @property
    def format(self) -> QuantFormat:
        """The numeric format."""
        return get_format(self.fmt)

    def ber_for(self, layer: str, kind: str) -> float:
        """The BER that applies to ``kind`` of ``layer``."""
        return self.overrides.get((layer, kind), self.model.ber)

    def model_for(self, layer: str, kind: str) -> ErrorModel:
        """The error model for ``kind`` of ``layer`` (``model`` at the overriding BER, if any)."""
        if (layer, kind) in self.overrides:
            return self.model.with_ber(self.overrides[(layer, kind)])
        return self.model


# ---------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Calibration:
    """Clean value ranges of a network's weights and layer inputs, and IFM quantization parameters.

    Attributes
    ----------
    fmt : str
        Format the IFM scales (and offsets) were computed for.
    weight_ranges : dict
        ``{layer_name: (min, max)}`` of each calibrated layer's weight.
    ifm_ranges : dict
        ``{layer_name: (min, max)}`` of each calibrated layer's floating-point input over the
        calibration data (weight-only layers, e.g. embeddings, have none).
    ifm_absmax : dict
        ``{layer_name: max |input|}``.
    ifm_scales : dict
        ``{layer_name: scale}`` for ``fmt``: ``max|input| / qmax`` (symmetric formats) or
        ``(max - min) / qmax`` (unsigned formats); 1.0 for fp32 or a constant input.
    ifm_offsets : dict
        ``{layer_name: offset}`` for ``fmt``: the input's minimum for unsigned formats, 0.0
        otherwise (empty in a Calibration built without it: read as 0.0).
    layer_types : tuple of str
        The layer types calibrated (:data:`LAYER_TYPES`).
    """

    fmt: str
    weight_ranges: dict[str, tuple[float, float]]
    ifm_ranges: dict[str, tuple[float, float]]
    ifm_absmax: dict[str, float]
    ifm_scales: dict[str, float]
    ifm_offsets: dict[str, float] = field(default_factory=dict)
    layer_types: tuple[str, ...] = DEFAULT_LAYER_TYPES

    def ifm_qparams(self, layer: str, fmt: Union[str, QuantFormat]) -> tuple[float, float]:
        """IFM ``(scale, offset)`` of ``layer`` for ``fmt`` (``(1.0, 0.0)`` for fp32; scale 1.0 for a constant input).

        Symmetric formats: ``(max|input| / qmax, 0.0)``; unsigned formats:
        ``((max - min) / qmax, min)`` of the calibrated input range.
        """
        f = get_format(fmt)
        if f.is_float:
            return 1.0, 0.0
        if f.unsigned:
            lo, hi = self.ifm_ranges[layer]
            return ((hi - lo) / f.qmax if hi > lo else 1.0), lo
        amax = self.ifm_absmax[layer]
        return (amax / f.qmax if amax > 0 else 1.0), 0.0

    def ifm_scale(self, layer: str, fmt: Union[str, QuantFormat]) -> float:
        """IFM quantization scale of ``layer`` for ``fmt`` (1.0 for fp32 or a constant input); see :meth:`ifm_qparams`."""
        return self.ifm_qparams(layer, fmt)[0]


def _batches(loader: Iterable[Any]) -> Iterable[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    for batch in loader:
        if isinstance(batch, torch.Tensor):
            yield batch, None
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
            yield batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            raise InferenceError(f"a loader must yield tensors or (x, y) pairs, got {type(batch).__name__}")


def _device_of(net: nn.Module) -> torch.device:
    for p in net.parameters():
        return p.device
    return torch.device("cpu")


def calibrate(model: nn.Module, loader: Iterable[Any], fmt: Union[str, QuantFormat] = "fp32", *,
              layer_types: Union[str, Iterable[str]] = DEFAULT_LAYER_TYPES) -> Calibration:
    """Clean value ranges of every selected layer's weight and input, and IFM scales (and offsets) for ``fmt``.

    Parameters
    ----------
    model : nn.Module
        The network (run in eval mode without gradients; its mode is restored).
    loader : iterable
        Clean batches: tensors or ``(x, y)`` pairs (e.g. a ``DataLoader``).
    fmt : str or QuantFormat
        Format for :attr:`Calibration.ifm_scales` and :attr:`Calibration.ifm_offsets`.
    layer_types : str or iterable of str
        The layers to calibrate (:data:`LAYER_TYPES`); pass the spec's ``layer_types``.

    Returns
    -------
    Calibration

    Raises
    ------
    InferenceError
        If the network has no layer of those types, or a layer never ran on the data.
    """
    f = get_format(fmt)
    types = check_layer_types(layer_types)
    layers = injectable_layers(model, types)
    if not layers:
        raise _no_layers(types)
    weight_ranges = {}
    for name, module in layers:
        lo, hi = torch.aminmax(module.weight.detach().float())
        weight_ranges[name] = (float(lo), float(hi))
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    ran: set[str] = set()

    def hook_for(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            ran.add(name)
            if not args or not isinstance(args[0], torch.Tensor) or not args[0].dtype.is_floating_point:
                return
            x = args[0].detach()
            if x.numel():
                lo, hi = torch.aminmax(x.float())
                lows[name] = min(lows.get(name, math.inf), float(lo))
                highs[name] = max(highs.get(name, -math.inf), float(hi))
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in layers]
    was_training = model.training
    device = _device_of(model)
    try:
        model.eval()
        with torch.no_grad():
            for x, _ in _batches(loader):
                model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [n for n, m in layers if n not in ran or (n not in lows and not isinstance(m, _WEIGHT_ONLY))]
    if missing:
        raise InferenceError(f"calibration data never reached layer(s) {', '.join(missing)}")
    ifm_ranges = {n: (lows[n], highs[n]) for n, _ in layers if n in lows}
    absmax = {n: max(abs(lo), abs(hi)) for n, (lo, hi) in ifm_ranges.items()}
    cal = Calibration(f.name, weight_ranges, ifm_ranges, absmax, {}, {}, types)
    for n in ifm_ranges:
        cal.ifm_scales[n], cal.ifm_offsets[n] = cal.ifm_qparams(n, f)
    return cal


# ------------------------------------------------------------------------- injector
def _widen(rng: tuple[float, float], margin: float) -> tuple[float, float]:
    span = rng[1] - rng[0]
    return rng[0] - margin * span, rng[1] + margin * span


def _code_range(rng: tuple[float, float], scale: float, qmax: int) -> tuple[float, float]:
    """A float range as integer codes, rounded like :func:`boosting.quant.quantize` and clamped to +-qmax."""
    lo = min(max(round(rng[0] / scale), -qmax), qmax)
    hi = min(max(round(rng[1] / scale), -qmax), qmax)
    return float(min(lo, hi)), float(max(lo, hi))


def _ucode_range(rng: tuple[float, float], scale: float, offset: float, qmax: int) -> tuple[int, int]:
    """A float range as unsigned codes, rounded like :func:`boosting.quant.quantize` and clamped to ``0 .. qmax``."""
    lo = min(max(round((rng[0] - offset) / scale), 0), qmax)
    hi = min(max(round((rng[1] - offset) / scale), 0), qmax)
    return min(lo, hi), max(lo, hi)


def _n_bytes(numel: int, f: QuantFormat) -> int:
    """Bytes a tensor of ``numel`` values takes in DRAM in format ``f``."""
    return -(-numel // 2) if f.bits == 4 else numel * f.bits // 8


_NP_STORAGE = {8: np.int8, 16: np.int16}


def _store(x: torch.Tensor, f: QuantFormat, scale: Optional[float], offset: Optional[float] = None) -> QTensor:
    """``quantize(x, f, scale=scale, offset=offset)``; for float32 CPU tensors in int8/int16 through numpy (same codes, less overhead).

    The codes are ``clip(rint(x / scale), -qmax, qmax)`` in float32 either way (IEEE division and
    round-half-to-even), the default scale is ``max|x| / qmax`` in float32, and the same inputs
    raise :class:`~boosting.quant.QuantError`.
    """
    if x.device.type != "cpu" or x.dtype != torch.float32 or f.unsigned or f.bits not in _NP_STORAGE:
        return quantize(x, f, scale=scale, offset=offset)
    xn = x.detach().numpy()
    if scale is None:
        if xn.size == 0:
            s = 1.0
        else:
            amax = np.abs(xn).max()
            s = float(amax / np.float32(f.qmax)) if amax > 0 else 1.0  # NaN max: 1.0, as quantize's where()
        if not math.isfinite(s):
            raise QuantError("cannot quantize a tensor holding NaN or Inf")
    else:
        s = _check_scale(scale)
    codes = np.divide(xn, np.float32(s))
    np.rint(codes, out=codes)
    np.maximum(codes, -f.qmax, out=codes)  # np.clip without its Python wrapper (NaN stays NaN)
    np.minimum(codes, f.qmax, out=codes)
    if scale is not None and codes.size and math.isnan(codes.sum()):  # |codes| <= qmax: only NaN makes the sum NaN
        raise QuantError("cannot quantize a tensor holding NaN")
    if scale is None and xn.size and math.isnan(amax):  # NaN codes: cast as torch does, without numpy's warning
        with np.errstate(invalid="ignore"):
            data = codes.astype(_NP_STORAGE[f.bits], order="C")
    else:
        data = codes.astype(_NP_STORAGE[f.bits], order="C")
    return QTensor(torch.from_numpy(data), s, x.shape, f)


def _load(q: QTensor) -> torch.Tensor:
    """``dequantize(q)``; in numpy for the CPU int8/int16 tensors of :func:`_store`, without a copy for fp32.

    ``q`` must be private to the caller (its fp32 storage is returned, not copied).
    """
    if q.fmt.is_float:
        return q.data.reshape(q.shape)
    if q.data.device.type != "cpu" or q.fmt.unsigned or q.fmt.bits not in _NP_STORAGE:
        return dequantize(q)
    out = q.data.numpy().astype(np.float32)
    out *= np.float32(q.scale)
    return torch.from_numpy(out).reshape(q.shape)


# ------------------------------------------------------------------- fused storage
_STAT_FIELDS = tuple(f.name for f in fields(InjectionStats))
_COL = {name: i for i, name in enumerate(_STAT_FIELDS)}
_POPCOUNT_NP = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
_POPCOUNT: dict[torch.device, torch.Tensor] = {}
_PENDING_MAX = 4096  # IFM stats kept unsummed before they are folded into ``ErrorInjector.stats``
_CPU_NUMPY = True  # CPU buffers are worked on through numpy views (fewer, cheaper calls; same IEEE results)


def _popcount8(device: torch.device) -> torch.Tensor:
    """Set bits of every byte value (int64, 256 entries) on ``device``."""
    table = _POPCOUNT.get(device)
    if table is None:
        table = torch.from_numpy(_POPCOUNT_NP).to(device)
        _POPCOUNT[device] = table
    return table


def _quantize_into(x: torch.Tensor, f: QuantFormat, scale: Union[float, torch.Tensor],
                   offset: Union[float, torch.Tensor, None], scratch: torch.Tensor, out: torch.Tensor,
                   pads: Optional[torch.Tensor] = None, reject_nan: bool = False) -> None:
    """Store flat float32 ``x`` in the integer format ``f`` into ``out`` (its storage dtype), in place.

    The codes are :func:`boosting.quant.quantize`'s, ``clamp(round((x - offset) / scale))``
    (float32 division, round half to even), computed in the float32 ``scratch`` (``x``'s
    size); ``scale`` and ``offset`` are numbers or per-value tensors. 4-bit codes are packed
    two per byte, ``pads`` (value slots holding no value) set to code 0 first. ``reject_nan``
    raises :class:`~boosting.quant.QuantError` for NaN in ``x`` (as ``quantize`` does with a
    given scale); otherwise a NaN becomes whatever the cast makes of it.
    """
    lo, hi = f.int_range
    if offset is not None:
        torch.sub(x, offset, out=scratch)
        scratch.div_(scale)
    else:
        torch.div(x, scale, out=scratch)
    scratch.round_().clamp_(lo, hi)
    if reject_nan and scratch.numel() and math.isnan(float(scratch.sum())):  # |codes| <= qmax: only NaN sums to NaN
        raise QuantError("cannot quantize a tensor holding NaN")
    if pads is not None:
        scratch.index_fill_(0, pads, 0.0)
    if f.bits == 4:
        out.copy_(pack_int4(scratch.to(torch.int8)))
    else:
        out.copy_(scratch)


def _codes_of(stored: torch.Tensor, f: QuantFormat) -> torch.Tensor:
    """The integer codes of a stored image: the image itself, or its nibbles unpacked (4-bit, int8)."""
    return unpack_int4(stored, signed=not f.unsigned) if f.bits == 4 else stored


def _dequantize_into(codes: torch.Tensor, f: QuantFormat, scale: Union[float, torch.Tensor],
                     offset: Union[float, torch.Tensor, None], out: torch.Tensor) -> None:
    """``codes * scale (+ offset)`` in float32 into ``out`` (:func:`boosting.quant.dequantize`'s values)."""
    out.copy_(codes).mul_(scale)  # the codes are exact in float32; one rounding, as dequantize
    if offset is not None:
        out.add_(offset)


class _WeakProbe:
    """A :class:`~errormodels.models.PlanContext` for a tensor of ``n_bits`` at ``layout``: gives a
    model's plan the same (cached) weak set the injector uses, to split weak-bit counts by layer."""

    def __init__(self, n_bits: int, device: torch.device, layout: AddressMap) -> None:
        self.n_bits = n_bits
        self.device = device
        self.layout = layout

    def address_map(self) -> AddressMap:
        self.layout.check_fits(self.n_bits // 8)
        return self.layout

    def weak_groups(self, kind: int, seed: int, weak_fraction: float, group_bits: int) -> Any:
        return weak_groups(kind, seed, weak_fraction, group_bits, self.address_map(), self.n_bits, self.device)

    def weak_bitlines(self, kind: int, seed: int, weak_fraction: float) -> Any:
        return weak_bitlines(kind, seed, weak_fraction, self.address_map(), self.n_bits, self.device)


class _WeightImage:
    """The weights of all selected layers as one DRAM image, laid out as their address maps place them.

    Layer ``i`` owns bytes ``byte_starts[i] .. byte_starts[i + 1]`` of the image, which starts
    at the first layer's address map (the maps are contiguous: each is the previous one's
    :meth:`~errormodels.layout.AddressMap.after`). A *slot* is one value's place in the image
    (a nibble for 4-bit formats, whose odd-sized layers end in a padding slot). Per
    :meth:`build` the clean weights are copied in, quantized with one scale (and offset) per
    layer, corrupted with one :func:`~errormodels.inject.inject_` call per run of consecutive
    layers under the same error model, mitigated with each layer's range and read back, all
    in buffers allocated once (the read-back values excepted, which the layers may keep).
    """

    def __init__(self, f: QuantFormat, names: Sequence[str], shapes: Sequence[torch.Size],
                 maps: Sequence[AddressMap], models: Sequence[ErrorModel], device: torch.device,
                 mitigation: Optional[str], ranges: Optional[Sequence[tuple[float, float]]]) -> None:
        self.f = f
        self.names = list(names)
        self.shapes = list(shapes)
        self.maps = list(maps)
        self.models = list(models)
        self.device = device
        self.mitigation = mitigation if ranges is not None else None
        self.ranges = list(ranges) if ranges is not None else None
        n_layers = len(names)
        self.numels = [math.prod(s) for s in shapes]
        n_bytes = [_n_bytes(n, f) for n in self.numels]
        self.bits_total = np.array([8 * n for n in n_bytes], dtype=np.int64)
        self.elements_total = self.bits_total // f.bits
        byte_starts = [0]
        for n in n_bytes:
            byte_starts.append(byte_starts[-1] + n)
        self.slot_starts = [8 * b // f.bits for b in byte_starts]
        self.n_slots = self.slot_starts[-1]
        # image elements: bytes for 4-bit formats (two slots each), else one slot each
        self.elem = byte_starts if f.bits == 4 else self.slot_starts
        # runs of consecutive layers under the same model: one inject_ call each
        self.runs: list[tuple[int, int]] = []
        for i in range(n_layers):
            if self.runs and self.models[i] == self.models[self.runs[-1][0]]:
                self.runs[-1] = (self.runs[-1][0], i + 1)
            else:
                self.runs.append((i, i + 1))
        self.np = _CPU_NUMPY and device.type == "cpu"
        i64 = dict(dtype=torch.int64, device=device)
        counts = torch.tensor([self.slot_starts[i + 1] - self.slot_starts[i] for i in range(n_layers)], **i64)
        self.seg = torch.repeat_interleave(torch.arange(n_layers, **i64), counts)  # layer of each slot
        self.elem_seg = self.seg[::2].contiguous() if f.bits == 4 else self.seg
        self.seg_np = self.seg.cpu().numpy()
        self.elem_seg_np = self.elem_seg.cpu().numpy()
        pad_list = [self.slot_starts[i] + self.numels[i] for i in range(n_layers)
                    if self.slot_starts[i] + self.numels[i] < self.slot_starts[i + 1]]
        self.pads = torch.tensor(pad_list, **i64) if pad_list else None
        # np.minimum/maximum.reduceat over each layer's values (padding left out): the even entries of
        # starts and ends interleaved (the last end dropped where it is the image's end)
        at = [p for i in range(n_layers) for p in (self.slot_starts[i], self.slot_starts[i] + self.numels[i])]
        self.reduce_at = np.asarray(at[:-1] if at[-1] == self.n_slots else at, dtype=np.intp)
        f32 = dict(dtype=torch.float32, device=device)
        self.wbuf = torch.zeros(self.n_slots, **f32)  # the clean weights (padding slots stay 0)
        self._pads_of = [torch.zeros(1, **f32) if self.slot_starts[i] + self.numels[i] < self.slot_starts[i + 1]
                         else None for i in range(n_layers)]
        self.wviews = [self.wbuf[self.slot_starts[i]: self.slot_starts[i] + self.numels[i]] for i in range(n_layers)]
        self.dbuf = torch.empty(self.n_slots, **f32)  # corrupt - clean, for the straight-through estimator
        self.delta_views = [self.dbuf[self.slot_starts[i]: self.slot_starts[i] + self.numels[i]].view(shapes[i])
                            for i in range(n_layers)]
        if not f.is_float:
            self.scratch = torch.empty(self.n_slots, **f32)
            self.sbuf = torch.empty(self.n_slots, **f32)
            self.obuf = torch.empty(self.n_slots, **f32) if f.unsigned else None
            if self.np:  # numpy views of each layer's slots (padding included) in the scale and offset buffers
                spans = [slice(self.slot_starts[i], self.slot_starts[i + 1]) for i in range(n_layers)]
                self.sviews_np = [self.sbuf.numpy()[sl] for sl in spans]
                self.oviews_np = [self.obuf.numpy()[sl] for sl in spans] if self.obuf is not None else []
            self.img = torch.zeros(self.elem[-1], dtype=f.storage_dtype, device=device)
            self.clean = torch.empty_like(self.img)
        self.run_views = [None] * len(self.runs)  # the image's slices per run (fp32: per build)
        self.lo_slots = self.hi_slots = None
        if self.mitigation is not None:
            assert self.ranges is not None
            if f.is_float:
                self.lo_slots = torch.tensor([r[0] for r in self.ranges], **f32)[self.seg]
                self.hi_slots = torch.tensor([r[1] for r in self.ranges], **f32)[self.seg]
            else:
                code_dtype = torch.int8 if f.bits == 4 else f.storage_dtype
                self.lo_slots = torch.empty(self.n_slots, dtype=code_dtype, device=device)
                self.hi_slots = torch.empty_like(self.lo_slots)
        self._weak: dict[int, tuple[Any, np.ndarray]] = {}
        self.out: Optional[torch.Tensor] = None
        self._corrupt_views: list[Optional[torch.Tensor]] = [None] * n_layers
        self._delta_ready = False
        self.round: Optional[int] = None
        self.versions: list[int] = []

    def matches(self, ws: Sequence[torch.Tensor]) -> bool:
        """Whether the buffers fit these weights (same shapes, float32, on this device)."""
        return all(w.shape == s and w.dtype == torch.float32 and w.device == self.device
                   for w, s in zip(ws, self.shapes))

    # ------------------------------------------------------------------ per step
    def build(self, ws: Sequence[torch.Tensor], seeds: Sequence[int], counts: Optional[np.ndarray]) -> None:
        """Store, corrupt and read back the clean weights ``ws``, seeds one per run; add the
        per-layer :class:`InjectionStats` fields to ``counts`` (layers x fields; None: no stats,
        which skips the copy of the image before injection and the per-layer flip counts)."""
        f = self.f
        with torch.no_grad():
            pieces: list[torch.Tensor] = []
            for w, pad in zip(ws, self._pads_of):
                pieces.append(w.detach().reshape(-1))
                if pad is not None:
                    pieces.append(pad)
            torch.cat(pieces, out=self.wbuf)
            scales = offsets = None
            if f.is_float:
                out = self.wbuf.clone()
                stored, clean = out, self.wbuf
                views = [out[self.elem[a]: self.elem[b]] for a, b in self.runs]
            else:
                scales, offsets = self._qparams()
                stored, clean = self.img, self.clean
                _quantize_into(self.wbuf, f, self.sbuf, self.obuf, self.scratch, stored, self.pads)
                if counts is not None:
                    clean.copy_(stored)
                views = self.run_views
                if views[0] is None:
                    views = self.run_views = [stored[self.elem[a]: self.elem[b]] for a, b in self.runs]
            run_stats = [inject_(v, self.models[a], seed=seed, layout=self.maps[a], dtype_bits=f.dtype_bits)
                         for v, (a, _), seed in zip(views, self.runs, seeds)]
            if counts is not None:
                self._count_flips(stored, clean, run_stats, counts)
            codes = out if f.is_float else _codes_of(stored, f)
            bad = self._mitigate(codes, scales, offsets, counts) if self.mitigation is not None else None
            if not f.is_float:
                out = torch.empty(self.n_slots, dtype=torch.float32, device=self.device)
                _dequantize_into(codes, f, self.sbuf, self.obuf, out)
            if bad is not None:  # zero: real 0.0 where the code was out of range
                if self.np:
                    out.numpy()[bad] = 0.0
                else:
                    out.index_fill_(0, bad, 0.0)
        self.out = out
        self._corrupt_views = [None] * len(self.names)
        self._delta_ready = False

    def corrupt(self, i: int) -> torch.Tensor:
        """Layer ``i``'s weight as read back (a view of this build's values)."""
        view = self._corrupt_views[i]
        if view is None:
            s = self.slot_starts[i]
            view = self.out[s: s + self.numels[i]].view(self.shapes[i])  # type: ignore[index]
            self._corrupt_views[i] = view
        return view

    def delta(self, i: int) -> torch.Tensor:
        """``corrupt - clean`` of layer ``i`` (no autograd; one subtraction for all layers per build)."""
        if not self._delta_ready:
            with torch.no_grad():
                torch.sub(self.out, self.wbuf, out=self.dbuf)  # type: ignore[arg-type]
            self._delta_ready = True
        return self.delta_views[i]

    # ----------------------------------------------------------------- internals
    def _qparams(self) -> tuple[list[float], Optional[list[float]]]:
        """Per-layer scales (and offsets) of the clean weights in ``wbuf`` (as ``quantize`` computes
        them: NaN or Inf raise, except a NaN max|w|, which gives scale 1), spread to the slots."""
        f = self.f
        n = len(self.names)
        if self.np:
            wn = self.wbuf.numpy()
            lo, hi = np.minimum.reduceat(wn, self.reduce_at)[::2], np.maximum.reduceat(wn, self.reduce_at)[::2]
            with np.errstate(invalid="ignore"):
                if f.unsigned:
                    span = hi - lo
                    scale = np.where(span > 0, span / np.float32(f.qmax), np.float32(1.0)).astype(np.float32)
                    values = np.concatenate([scale, lo])
                else:
                    amax = np.maximum(-lo, hi)  # max |w|, NaN if any is NaN (then scale 1, as quantize)
                    scale = np.where(amax > 0, amax / np.float32(f.qmax), np.float32(1.0)).astype(np.float32)
                    values = scale
            if not np.isfinite(values).all():
                raise QuantError("cannot quantize a tensor holding NaN or Inf")
            values_l = values.tolist()
            # each layer's slots (padding included); slice fills beat a gather (np.take) on the CPU
            for view, v in zip(self.sviews_np, scale):
                view[...] = v
            for view, v in zip(self.oviews_np, lo):
                view[...] = v
        else:
            lohi = [torch.aminmax(v) for v in self.wviews]
            lo_t = torch.stack([m[0] for m in lohi])
            hi_t = torch.stack([m[1] for m in lohi])
            if f.unsigned:
                span_t = hi_t - lo_t
                scale_t = torch.where(span_t > 0, span_t / f.qmax, torch.ones_like(span_t))
                values_l = torch.cat([scale_t, lo_t]).tolist()
            else:
                amax_t = torch.maximum(-lo_t, hi_t)
                scale_t = torch.where(amax_t > 0, amax_t / f.qmax, torch.ones_like(amax_t))
                values_l = scale_t.tolist()
            if not all(math.isfinite(v) for v in values_l):
                raise QuantError("cannot quantize a tensor holding NaN or Inf")
            torch.index_select(scale_t, 0, self.seg, out=self.sbuf)  # each layer's slots (padding included)
            if f.unsigned:
                torch.index_select(lo_t, 0, self.seg, out=self.obuf)
        if f.unsigned:
            return values_l[:n], values_l[n:]
        return values_l, None

    def _diff(self, stored: torch.Tensor, clean: torch.Tensor, e0: int, e1: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Elements ``e0 .. e1`` of the image that the injection changed: their indices (within the
        run) and their new and old integer values, as numpy arrays."""
        new, old = stored[e0:e1], clean[e0:e1]
        if new.dtype == torch.float32:
            new, old = new.view(torch.int32), old.view(torch.int32)
        if self.np:
            a, b = new.numpy(), old.numpy()
            idx = np.flatnonzero(a != b)
            return idx, a[idx], b[idx]
        idx_t = torch.nonzero(new != old).squeeze(1)
        return idx_t.cpu().numpy(), new[idx_t].cpu().numpy(), old[idx_t].cpu().numpy()

    def _count_flips(self, stored: torch.Tensor, clean: torch.Tensor, run_stats: Sequence[InjectionStats],
                     counts: np.ndarray) -> None:
        """Per-layer flip counts: a one-layer run's from its own stats, a longer run's from the
        difference of the image before and after (and its weak set, for weak-bit counts)."""
        c = _COL
        counts[:, c["bits_total"]] += self.bits_total
        counts[:, c["elements_total"]] += self.elements_total
        n_layers = len(self.names)
        for (a, b), st in zip(self.runs, run_stats):
            if b - a == 1:
                row = counts[a]
                for key in ("bits_flipped", "flips_0to1", "flips_1to0", "elements_touched", "weak_bits_total",
                            "weak_bits_flipped"):
                    row[c[key]] += getattr(st, key)
                continue
            if st.weak_bits_total:
                weak, totals = self._weak_set(a, b)
                counts[a:b, c["weak_bits_total"]] += totals
            if not st.bits_flipped:
                continue
            e0 = self.elem[a]
            idx, new, old = self._diff(stored, clean, e0, self.elem[b])
            x = new ^ old
            width = x.dtype.itemsize
            xb = x.view(np.uint8).reshape(-1, width)
            bits = _POPCOUNT_NP[xb].sum(1)
            lost = _POPCOUNT_NP[(x & old).view(np.uint8).reshape(-1, width)].sum(1)  # 1 -> 0
            if self.f.bits == 4:
                touched = ((x & 0x0F) != 0).astype(np.int64) + ((x & 0xF0) != 0)
            else:
                touched = np.ones_like(bits)
            layer = self.elem_seg_np[idx + e0]
            per = [np.bincount(layer, weights=v, minlength=n_layers)[a:b].astype(np.int64) for v in (bits, lost, touched)]
            counts[a:b, c["bits_flipped"]] += per[0]
            counts[a:b, c["flips_1to0"]] += per[1]
            counts[a:b, c["flips_0to1"]] += per[0] - per[1]
            counts[a:b, c["elements_touched"]] += per[2]
            if st.weak_bits_total:
                row, k = np.nonzero((xb.reshape(-1)[:, None] >> np.arange(8)) & 1)  # flipped bits
                pos = ((idx[row // width] * width + row % width) * 8 + k).astype(np.int64)  # bit positions in the run
                in_weak = weak.contains(torch.from_numpy(pos).to(self.device)).cpu().numpy()
                counts[a:b, c["weak_bits_flipped"]] += np.bincount(layer[row // width], weights=in_weak,
                                                                   minlength=n_layers)[a:b].astype(np.int64)

    def _weak_set(self, a: int, b: int) -> tuple[Any, np.ndarray]:
        """The weak set of run ``a .. b`` (the one its model's plan gave the injector) and its bits per layer."""
        found = self._weak.get(a)
        if found is None:
            n_bits = int(self.bits_total[a:b].sum())
            plan = self.models[a].flip_plan(_WeakProbe(n_bits, self.device, self.maps[a]))
            starts = np.concatenate([[0], np.cumsum(self.bits_total[a:b])])
            ranks = plan.weak.rank_of(torch.from_numpy(starts).to(self.device)).cpu().numpy()
            found = (plan.weak, np.diff(ranks))
            self._weak[a] = found
        return found

    def _mitigate(self, codes: torch.Tensor, scales: Optional[list[float]], offsets: Optional[list[float]],
                  counts: Optional[np.ndarray]) -> Optional[Any]:
        """Find the values outside each layer's range, count them (into ``counts``, unless None), saturate them (codes, or fp32
        values, in place); returns the slots to zero after dequantization (``zero`` on integer
        codes), else None."""
        f = self.f
        assert self.ranges is not None and self.lo_slots is not None and self.hi_slots is not None
        lo, hi = self.lo_slots, self.hi_slots
        if not f.is_float:
            assert scales is not None
            if f.unsigned:
                assert offsets is not None
                bounds = [_ucode_range(r, s, o, f.qmax) for r, s, o in zip(self.ranges, scales, offsets)]
            else:
                bounds = [_code_range(r, s, f.qmax) for r, s in zip(self.ranges, scales)]
            lo_b = torch.tensor([int(b[0]) for b in bounds], dtype=lo.dtype, device=self.device)
            hi_b = torch.tensor([int(b[1]) for b in bounds], dtype=hi.dtype, device=self.device)
            torch.index_select(lo_b, 0, self.seg, out=lo)  # each layer's slots
            torch.index_select(hi_b, 0, self.seg, out=hi)
            if f.unsigned and self.pads is not None:  # padding slots hold no value: never out of range
                lo.index_fill_(0, self.pads, 0)
                hi.index_fill_(0, self.pads, f.qmax)
        if self.np:
            v, lo_n, hi_n = codes.numpy(), lo.numpy(), hi.numpy()
            idx = np.flatnonzero(~((v >= lo_n) & (v <= hi_n)))  # NaN compares False: out of range
            if idx.size == 0:
                return None
            if counts is not None:
                counts[:, _COL["values_mitigated"]] += np.bincount(self.seg_np[idx], minlength=len(self.names))
            if self.mitigation == "saturate":
                fixed = np.minimum(np.maximum(v[idx], lo_n[idx]), hi_n[idx])
                if f.is_float:
                    fixed[np.isnan(fixed)] = 0.0
                v[idx] = fixed
                return None
            if f.is_float:
                v[idx] = 0.0
                return None
            return idx
        idx_t = torch.nonzero(~((codes >= lo) & (codes <= hi))).squeeze(1)
        if idx_t.numel() == 0:
            return None
        if counts is not None:
            counts[:, _COL["values_mitigated"]] += torch.bincount(self.seg[idx_t], minlength=len(self.names)).cpu().numpy()
        if self.mitigation == "saturate":
            torch.clamp(codes, lo, hi, out=codes)
            if f.is_float:
                codes.masked_fill_(torch.isnan(codes), 0.0)
            return None
        if f.is_float:
            codes.index_fill_(0, idx_t, 0.0)
            return None
        return idx_t


class _CorruptWeight(nn.Module):
    """Parametrization: the clean weight in, the stored-and-read-back weight out (STE under autograd)."""

    def __init__(self, injector: "ErrorInjector", index: int, name: str) -> None:
        super().__init__()
        self._injector = [injector]  # a list: keep the injector out of the module tree
        self.index = index
        self.layer = name

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and w.requires_grad:
            return w + self._injector[0]._weight_delta(self.index, self.layer, w)
        return self._injector[0]._weight_for(self.index, self.layer, w)


class ErrorInjector:
    """Context manager that makes a network read its weights and IFMs through approximate DRAM.

    Parameters
    ----------
    net : nn.Module
        The network; its layers of the spec's ``layer_types`` (:func:`injectable_layers`) are affected.
    spec : ErrorSpec
        Error model, per-layer BERs, format, mitigation and seed.
    calibration : Calibration, optional
        From :func:`calibrate` (with ``layer_types=spec.layer_types``). Needed for
        ``mitigation`` of IFMs. Without it, weight mitigation uses the current clean weight's
        range and integer IFMs are quantized with a scale (and offset) from each input itself.
    collect_stats : bool
        Keep :attr:`stats` (default). False leaves them empty and skips their bookkeeping (the
        image's copy before injection and its per-layer flip counts, the IFM calls' stats): for
        callers that never read them, such as :func:`boosting.retrain.retrain`. The errors are
        the same either way.

    Attributes
    ----------
    stats : dict
        ``{(layer_name, "weight" | "ifm"): InjectionStats}``, summed over all injections since
        entering (or :meth:`reset_stats`); empty with ``collect_stats=False``.
    layers : list of str
        Names of the affected layers.

    Raises
    ------
    InferenceError
        If the network has no layer of the spec's types, an override names an unknown layer,
        mitigation is asked for without a calibration, or the calibration lacks a layer.

    Examples
    --------
    >>> spec = ErrorSpec(get_model("uniform", ber=1e-3), fmt="int8", mitigation="saturate", seed=1)
    >>> with ErrorInjector(net, spec, calibrate(net, loader, "int8")) as inj:  # doctest: +SKIP
    ...     inj.reseed(0)
    ...     logits = net(x)
    """

    def __init__(self, net: nn.Module, spec: ErrorSpec, calibration: Optional[Calibration] = None, *,
                 collect_stats: bool = True) -> None:
        if not isinstance(spec, ErrorSpec):
            raise InferenceError(f"spec must be an ErrorSpec, got {type(spec).__name__}")
        if calibration is not None and not isinstance(calibration, Calibration):
            raise InferenceError(f"calibration must be a Calibration, got {type(calibration).__name__}")
        self.net = net
        self.spec = spec
        self.calibration = calibration
        self.collect_stats = bool(collect_stats)
        self._layers = injectable_layers(net, spec.layer_types)
        if not self._layers:
            raise _no_layers(spec.layer_types)
        self.layers = [n for n, _ in self._layers]
        unknown = sorted({k[0] for k in spec.overrides} - set(self.layers))
        if unknown:
            raise InferenceError(f"overrides name unknown layer(s) {', '.join(map(repr, unknown))}; "
                                 f"layers: {', '.join(self.layers)}")
        if calibration is not None:
            missing = [n for n, m in self._layers if n not in calibration.weight_ranges
                       or (n not in calibration.ifm_ranges and not isinstance(m, _WEIGHT_ONLY))]
            if missing:
                raise InferenceError(f"the calibration lacks layer(s) {', '.join(missing)} "
                                     f"(calibrate with layer_types={spec.layer_types!r})")
        elif spec.mitigation is not None:
            raise InferenceError("mitigation needs a calibration (calibrate(net, loader, fmt)) for the IFM ranges")
        self._image: Optional[_WeightImage] = None
        self.stats = {}
        self._fmt = spec.format
        self._models = {(n, k): spec.model_for(n, k) for n in self.layers for k in KINDS}
        self._ifm_consts: dict[str, tuple[Optional[float], Optional[float], Optional[tuple[float, float]]]] = {}
        for n in self.layers:
            if calibration is None or n not in calibration.ifm_ranges:
                self._ifm_consts[n] = (None, None, None)
            elif self._fmt.is_float:
                self._ifm_consts[n] = (None, None, calibration.ifm_ranges[n])
            else:
                scale, offset = calibration.ifm_qparams(n, self._fmt)
                self._ifm_consts[n] = (scale, offset if self._fmt.unsigned else None, calibration.ifm_ranges[n])
        self._round = 0
        self._active = False
        self._handles: list[Any] = []
        self._weight_cache: dict[int, tuple[int, int, torch.Tensor]] = {}
        self._delta_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._ifm_gens: dict[torch.device, torch.Generator] = {}
        self._weight_maps: dict[str, AddressMap] = {}
        self._ifm_maps: dict[str, tuple[AddressMap, int]] = {}
        self._ifm_cursor = spec.layout
        self._place_weights()
        self._originals: list[torch.Tensor] = []
        self._ifm_bufs: dict[str, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}
        self._ifm_slots: dict[str, tuple[Any, ...]] = {}  # per layer: size, device, placement, buffer views
        self._ifm_fast: dict[str, tuple[Optional[float], Optional[float], dict[str, Any], Optional[tuple[int, int]]]] = {}
        base_source = type(self)._corrupt is ErrorInjector._corrupt
        if base_source and (self._fmt.is_float or self._fmt.bits in (8, 16)):
            for n in self.layers:
                self._ifm_fast[n] = self._ifm_plan(n)

    # ------------------------------------------------------------------ placement
    def _place_weights(self) -> None:
        f = self.spec.format
        amap = self.spec.layout
        for name, module in self._layers:
            self._weight_maps[name] = amap
            amap = amap.after(_n_bytes(module.weight.numel(), f))
        self._ifm_cursor = amap

    def _ifm_map(self, name: str, n_bytes: int) -> AddressMap:
        placed = self._ifm_maps.get(name)
        if placed is None or placed[1] < n_bytes:
            placed = (self._ifm_cursor, n_bytes)
            self._ifm_maps[name] = placed
            self._ifm_cursor = self._ifm_cursor.after(n_bytes)
        return placed[0]

    def _ifm_plan(self, name: str) -> tuple[Optional[float], Optional[float], dict[str, Any], Optional[tuple[int, int]]]:
        """The constant part of a layer's IFM storage: checked scale and offset (None: from each input),
        ``inject_``'s mitigation arguments, and the unsigned formats' clean code range (None: all codes)."""
        f = self._fmt
        scale, offset, rng = self._ifm_consts[name]
        if scale is not None:
            scale = _check_scale(scale)
        if offset is not None:
            offset = float(torch.tensor(float(offset), dtype=torch.float32))
        mit: dict[str, Any] = {}
        codes: Optional[tuple[int, int]] = None
        if self.spec.mitigation is not None and rng is not None:
            rng = _widen(rng, self.spec.margin)
            if f.unsigned:
                assert scale is not None and offset is not None
                codes = _ucode_range(rng, scale, offset, f.qmax)
                if codes == (0, f.qmax):
                    codes = None
            else:
                if not f.is_float:
                    assert scale is not None
                    rng = _code_range(rng, scale, f.qmax)
                mit = {"mitigation": self.spec.mitigation, "value_range": rng}
        return scale, offset, mit, codes

    def _weight_image(self) -> Optional[_WeightImage]:
        """The fused weight image for the weights in :attr:`_originals`, or None where each weight is
        stored apart: another error source (:meth:`_corrupt` overridden, e.g. a DIMM), placements that
        do not follow each other, weights that are not float32 on one device, or an empty weight."""
        if type(self)._corrupt is not ErrorInjector._corrupt:
            return None
        ws = self._originals
        f = self._fmt
        if not ws or any(w.dtype != torch.float32 or w.device != ws[0].device or w.numel() == 0 for w in ws):
            return None
        maps = [self._weight_maps[n] for n in self.layers]
        if any(maps[i].after(_n_bytes(ws[i].numel(), f)) != maps[i + 1] for i in range(len(ws) - 1)):
            return None
        if self._image is not None and self._image.matches(ws) and self._image.maps == maps:
            return self._image
        ranges = None
        if self.spec.mitigation is not None and self.calibration is not None:
            ranges = [_widen(self.calibration.weight_ranges[n], self.spec.margin) for n in self.layers]
        return _WeightImage(f, self.layers, [w.shape for w in ws], maps, [self._models[(n, "weight")] for n in self.layers],
                            ws[0].device, self.spec.mitigation, ranges)

    # -------------------------------------------------------------------- control
    def __enter__(self) -> "ErrorInjector":
        if self._active:
            raise InferenceError("this ErrorInjector is already active")
        self.stats = {}
        self._weight_cache = {}
        self._delta_cache = {}
        self._reset_ifm_generators()
        try:
            for index, (name, module) in enumerate(self._layers):
                parametrize.register_parametrization(module, "weight", _CorruptWeight(self, index, name),
                                                     unsafe=True)
                self._handles.append(module.register_forward_pre_hook(self._ifm_hook(name)))
            self._originals = [module.parametrizations["weight"].original for _, module in self._layers]
            self._image = self._weight_image()
        except Exception:
            self._restore()
            raise
        if self._image is not None:
            self._image.round = None
        self._active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()
        self._active = False

    def _restore(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        for _, module in self._layers:
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        self._originals = []
        self._weight_cache = {}
        self._delta_cache = {}
        if self._image is not None:
            self._image.round = None

    def reseed(self, index: int) -> None:
        """Draw fresh weight errors and restart the IFM error stream, deterministically from ``(spec.seed, index)``.

        Call it per batch (error-aware training) or per evaluation seed. The weights are
        re-corrupted lazily, on the next forward pass.
        """
        self._round = _check_seed("index", index)
        self._weight_cache = {}
        self._delta_cache = {}
        if self._image is not None:
            self._image.round = None
        self._reset_ifm_generators()

    def reset_stats(self) -> None:
        """Forget the collected :attr:`stats`."""
        self.stats = {}

    @property
    def stats(self) -> dict[tuple[str, str], InjectionStats]:
        """``{(layer_name, "weight" | "ifm"): InjectionStats}``, summed over all injections since
        entering (or :meth:`reset_stats`); a dict that later injections add to."""
        self._fold_stats()
        return self._stats

    @stats.setter
    def stats(self, value: Mapping[tuple[str, str], InjectionStats]) -> None:
        self._stats: dict[tuple[str, str], InjectionStats] = dict(value)
        self._pending: list[tuple[tuple[str, str], InjectionStats]] = []
        self._wcounts = np.zeros((len(self.layers), len(_STAT_FIELDS)), dtype=np.int64)

    def _fold_stats(self) -> None:
        """Sum the stats kept apart on the hot path (IFM calls, the weight image's counts) into ``_stats``."""
        stats = self._stats
        for key, s in self._pending:
            old = stats.get(key)
            stats[key] = s if old is None else old + s
        self._pending.clear()
        counts = self._wcounts
        if counts.any():
            for name, row in zip(self.layers, counts.tolist()):
                if row[0]:  # bits_total: the weight was stored
                    s = InjectionStats(*row)
                    old = stats.get((name, "weight"))
                    stats[(name, "weight")] = s if old is None else old + s
            counts[:] = 0

    @property
    def total_stats(self) -> InjectionStats:
        """All of :attr:`stats` summed."""
        total = InjectionStats()
        for s in self.stats.values():
            total = total + s
        return total

    def _reset_ifm_generators(self) -> None:
        self._ifm_gens = {}

    def _ifm_generator(self, device: torch.device) -> torch.Generator:
        gen = self._ifm_gens.get(device)
        if gen is None:
            gen = torch.Generator(device=device).manual_seed(_seed_of(self.spec.seed, self._round, _IFM_TAG))
            self._ifm_gens[device] = gen
        return gen

    def _add_stats(self, key: tuple[str, str], stats: InjectionStats) -> None:
        if not self.collect_stats:
            return
        self._pending.append((key, stats))
        if len(self._pending) > _PENDING_MAX:
            self._fold_stats()

    # ------------------------------------------------------------------ corruption
    def _store_and_read(self, x: torch.Tensor, name: str, kind: str, scale: Optional[float],
                        value_range: Optional[tuple[float, float]], amap: AddressMap,
                        offset: Optional[float] = None, **source: Any) -> torch.Tensor:
        """Quantize ``x``, inject errors into its stored form, mitigate, dequantize (no autograd)."""
        f = self._fmt
        with torch.no_grad():
            q = _store(x, f, scale, offset)
            s = storage(q)
            mit: dict[str, Any] = {}
            codes: Optional[tuple[int, int]] = None  # unsigned formats: clean code range, mitigated here
            if self.spec.mitigation is not None and value_range is not None:
                rng = _widen(value_range, self.spec.margin)
                if f.unsigned:
                    codes = _ucode_range(rng, q.scale, q.offset, f.qmax)
                    if codes == (0, f.qmax):  # every code is in range: nothing to mitigate
                        codes = None
                else:
                    if not f.is_float:
                        rng = _code_range(rng, q.scale, f.qmax)
                    mit = {"mitigation": self.spec.mitigation, "value_range": rng}
            stats = self._corrupt(s.tensor, s.dtype_bits, name, kind, amap, mit, source)
            out = _load(q)
            if codes is not None:
                out, n_bad = self._mitigate_unsigned(q, out, codes)
                if n_bad:
                    stats = replace(stats, values_mitigated=stats.values_mitigated + n_bad)
            self._add_stats((name, kind), stats)
            return out.to(x.dtype)

    def _mitigate_unsigned(self, q: QTensor, values: torch.Tensor, codes: tuple[int, int]) -> tuple[torch.Tensor, int]:
        """Zero (real 0.0) or saturate the values whose unsigned code lies outside ``codes``; ``(values, count)``."""
        c = q.int_values()
        bad = (c < codes[0]) | (c > codes[1])
        n_bad = int(bad.sum())
        if n_bad:
            if self.spec.mitigation == "zero":
                values = values.masked_fill(bad, 0.0)
            else:
                values = c.clamp(codes[0], codes[1]).to(torch.float32) * q.scale + q.offset
        return values, n_bad

    def _corrupt(self, stored: torch.Tensor, dtype_bits: int, name: str, kind: str, amap: AddressMap,
                 mitigation: dict[str, Any], source: dict[str, Any]) -> InjectionStats:
        """Corrupt the stored form of a tensor in place (then mitigate, if ``mitigation`` is given):
        here by the error model; :class:`boosting.hil.HilInjector` reads it through a DIMM instead."""
        return inject_(stored, self._models[(name, kind)], layout=amap, dtype_bits=dtype_bits,
                       **mitigation, **source)

    def _weight_for(self, index: int, name: str, w: torch.Tensor) -> torch.Tensor:
        """Layer ``index``'s weight as read back from DRAM (no autograd), corrupted once per round."""
        image = self._image
        if image is None:
            return self._layer_weight_for(index, name, w)
        if image.round != self._round or image.versions[index] != w._version:
            self._build_image(image)
        return image.corrupt(index)

    def _build_image(self, image: _WeightImage) -> None:
        """Store, corrupt and read back every weight together (the round's seeds, one per run of layers)."""
        seeds = [_seed_of(self.spec.seed, self._round, _WEIGHT_TAG, a) for a, _ in image.runs]
        image.build(self._originals, seeds, self._wcounts if self.collect_stats else None)
        image.round = self._round
        image.versions = [w._version for w in self._originals]

    def _layer_weight_for(self, index: int, name: str, w: torch.Tensor) -> torch.Tensor:
        """One weight stored, corrupted and read back on its own (where there is no weight image)."""
        cached = self._weight_cache.get(index)
        if cached is not None and cached[0] == self._round and cached[1] == w._version:
            return cached[2]
        if self.calibration is not None:
            rng = self.calibration.weight_ranges[name]
        else:
            lo, hi = torch.aminmax(w.detach().float())
            rng = (float(lo), float(hi))
        corrupt = self._store_and_read(w.detach(), name, "weight", None, rng, self._weight_maps[name],
                                       seed=_seed_of(self.spec.seed, self._round, _WEIGHT_TAG, index))
        self._weight_cache[index] = (self._round, w._version, corrupt)
        return corrupt

    def _weight_delta(self, index: int, name: str, w: torch.Tensor) -> torch.Tensor:
        """``corrupt - w`` without autograd (the straight-through estimator's detached term), cached with the weight."""
        image = self._image
        if image is not None:
            if image.round != self._round or image.versions[index] != w._version:
                self._build_image(image)
            return image.delta(index)
        corrupt = self._weight_for(index, name, w)
        cached = self._delta_cache.get(index)
        if cached is not None and cached[0] is corrupt:
            return cached[1]
        with torch.no_grad():
            delta = corrupt - w
        self._delta_cache[index] = (corrupt, delta)
        return delta

    def _ifm_read(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """A float32 IFM stored, corrupted (one ``inject_`` call) and read back through the layer's
        own buffers: ``x + (corrupt - x)`` with gradients, else the corrupt values (a fresh tensor)."""
        f = self._fmt
        scale, offset, mit, codes = self._ifm_fast[name]
        n = x.numel()
        slot = self._ifm_slots.get(name)
        if slot is None or slot[0] != n or slot[1] != x.device:
            amap = self._ifm_map(name, _n_bytes(n, f))
            bufs = self._ifm_bufs.get(name)
            if bufs is None or bufs[0].numel() < n or bufs[0].device != x.device:
                bufs = (torch.empty(n, dtype=torch.float32, device=x.device),
                        None if f.is_float else torch.empty(n, dtype=f.storage_dtype, device=x.device))
                self._ifm_bufs[name] = bufs
            slot = (n, x.device, amap, bufs[0][:n], None if bufs[1] is None else bufs[1][:n])
            self._ifm_slots[name] = slot
        amap = slot[2]
        grad = torch.is_grad_enabled() and x.requires_grad
        vals = slot[3] if grad else torch.empty(n, dtype=torch.float32, device=x.device)
        gen = self._ifm_generator(x.device)
        model = self._models[(name, "ifm")]
        with torch.no_grad():
            xf = x.detach().reshape(-1)
            if f.is_float:
                vals.copy_(xf)
                stats = inject_(vals, model, generator=gen, layout=amap, dtype_bits=32, **mit)
            else:
                s, o = (scale, offset) if scale is not None else _params(xf, f, None, None)
                img = slot[4]
                # with a given scale quantize rejects NaN; in the straight-through form x + (corrupt - x)
                # a NaN input comes out NaN anyway (and makes the loss non-finite), so only eval checks
                _quantize_into(xf, f, s, o if f.unsigned else None, vals, img, reject_nan=scale is not None and not grad)
                stats = inject_(img, model, generator=gen, layout=amap, dtype_bits=f.bits, **mit)
                bad = None
                if codes is not None:
                    bad = (img < codes[0]) | (img > codes[1])
                    n_bad = int(bad.sum())
                    if n_bad:
                        stats = replace(stats, values_mitigated=stats.values_mitigated + n_bad)
                        if self.spec.mitigation == "saturate":
                            img.clamp_(codes[0], codes[1])
                            bad = None
                    else:
                        bad = None
                _dequantize_into(img, f, s, o if f.unsigned else None, vals)
                if bad is not None:
                    vals.masked_fill_(bad, 0.0)
            if grad:
                vals.sub_(xf)
        self._add_stats((name, "ifm"), stats)
        if grad:
            return x + vals.view(x.shape)  # straight-through: the values of corrupt, the gradient of x
        return vals.view(x.shape)

    def _ifm_hook(self, name: str):
        fast = name in self._ifm_fast

        def hook(_module: nn.Module, args: tuple) -> Optional[tuple]:
            if not args or not isinstance(args[0], torch.Tensor) or not args[0].dtype.is_floating_point:
                return None
            x = args[0]
            if fast and x.dtype == torch.float32:
                return (self._ifm_read(name, x),) + tuple(args[1:])
            scale, offset, rng = self._ifm_consts[name]
            corrupt = self._store_and_read(x, name, "ifm", scale, rng, self._ifm_map(name, _n_bytes(x.numel(), self._fmt)),
                                           offset, generator=self._ifm_generator(x.device))
            if torch.is_grad_enabled() and x.requires_grad:
                with torch.no_grad():
                    delta = corrupt - x
                used = x + delta  # straight-through: the values of x + (corrupt - x), the gradient of x
            else:
                used = corrupt
            return (used,) + tuple(args[1:])
        return hook


# ------------------------------------------------------------------------ evaluation
@dataclass(frozen=True)
class AccuracyResult:
    """Accuracy of a network under errors, over several error seeds.

    Attributes
    ----------
    mean : float
        Mean accuracy over the seeds (a fraction, 0 .. 1).
    ci_low, ci_high : float
        Bounds of the confidence interval of the mean.
    per_seed : tuple of float
        Accuracy under each seed.
    seeds : tuple of int
        The error seeds (``()`` for a clean evaluation).
    n_samples : int
        Samples evaluated per seed.
    confidence : float
        Confidence level of the interval (0.95).
    method : str
        ``"t"`` (Student's t over seeds) or ``"wilson"`` (score interval over samples).
    """

    mean: float
    ci_low: float
    ci_high: float
    per_seed: tuple[float, ...]
    seeds: tuple[int, ...]
    n_samples: int
    confidence: float = 0.95
    method: str = "t"


def _wilson(p: float, n: int, z: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def confidence_interval(per_seed: Sequence[float], n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean accuracy over error seeds and its confidence interval (the toolkit's one CI rule).

    Parameters
    ----------
    per_seed : sequence of float
        Accuracy (a fraction in [0, 1]) under each error seed; at least one.
    n : int
        Samples evaluated per seed (used by Wilson's interval with a single seed).
    confidence : float
        Confidence level, in (0, 1).

    Returns
    -------
    (mean, ci_low, ci_high) : tuple of float
        With two or more seeds, Student's t interval over the per-seed accuracies; with one,
        Wilson's score interval over the ``n`` samples (``(0, 1)`` when ``n`` is 0). The bounds
        are clipped to [0, 1], where an accuracy lies.

    Raises
    ------
    InferenceError
        No accuracies, or a confidence outside (0, 1).
    """
    if len(per_seed) == 0:
        raise InferenceError("confidence_interval needs at least one accuracy")
    if not 0.0 < confidence < 1.0:
        raise InferenceError(f"confidence must be in (0, 1), got {confidence!r}")
    mean = float(np.mean(per_seed))
    if len(per_seed) >= 2:
        from scipy.stats import t as student_t

        sem = float(np.std(per_seed, ddof=1)) / math.sqrt(len(per_seed))
        half = float(student_t.ppf(0.5 + confidence / 2, len(per_seed) - 1)) * sem
        return mean, max(0.0, mean - half), min(1.0, mean + half)
    z = float(math.sqrt(2) * _erfinv(confidence))
    lo, hi = _wilson(mean, int(n), z)
    return mean, lo, hi


def _accuracy(net: nn.Module, loader: Iterable[Any], device: torch.device) -> tuple[float, int]:
    correct = total = 0
    for x, y in _batches(loader):
        if y is None:
            raise InferenceError("evaluate needs (x, y) batches")
        pred = net(x.to(device)).argmax(dim=1)
        correct += int((pred == y.to(device)).sum())
        total += int(y.numel())
    if total == 0:
        raise InferenceError("the loader yielded no samples")
    return correct / total, total


def evaluate(net: nn.Module, loader: Iterable[Any], spec: Optional[ErrorSpec] = None, *,
             seeds: Sequence[int] = (0, 1, 2), calibration: Optional[Calibration] = None,
             confidence: float = 0.95) -> AccuracyResult:
    """Top-1 accuracy of ``net`` on ``loader``, clean or under the errors of ``spec``, over error seeds.

    Parameters
    ----------
    net : nn.Module
        The network (evaluated in eval mode without gradients; its mode is restored).
    loader : iterable
        ``(x, y)`` batches; iterated once per seed.
    spec : ErrorSpec, optional
        Errors to inject; None evaluates the clean network once.
    seeds : sequence of int
        Error seeds: each is passed to :meth:`ErrorInjector.reseed` (fresh weight errors,
        restarted IFM error stream).
    calibration : Calibration, optional
        For the injector (required with mitigation).
    confidence : float
        Confidence level of the interval.

    Returns
    -------
    AccuracyResult
        Mean accuracy and its confidence interval: Student's t over the per-seed accuracies
        when there are two or more seeds, otherwise Wilson's score interval over the samples.
    """
    if not 0.0 < confidence < 1.0:
        raise InferenceError(f"confidence must be in (0, 1), got {confidence!r}")
    seeds = tuple(_check_seed("seed", s) for s in seeds) if spec is not None else ()
    if spec is not None and not seeds:
        raise InferenceError("give at least one error seed")
    device = _device_of(net)
    was_training = net.training
    per_seed: list[float] = []
    try:
        net.eval()
        with torch.no_grad():
            if spec is None:
                acc, n = _accuracy(net, loader, device)
                per_seed.append(acc)
            else:
                with ErrorInjector(net, spec, calibration) as injector:
                    for s in seeds:
                        injector.reseed(s)
                        acc, n = _accuracy(net, loader, device)
                        per_seed.append(acc)
    finally:
        net.train(was_training)
    mean, lo, hi = confidence_interval(per_seed, n, confidence)
    method = "t" if len(per_seed) >= 2 else "wilson"
    return AccuracyResult(mean, lo, hi, tuple(per_seed), seeds, n, confidence, method)


def _erfinv(y: float) -> float:
    """Inverse error function (scipy's), for the normal quantile of Wilson's interval."""
    from scipy.special import erfinv

    return float(erfinv(y))

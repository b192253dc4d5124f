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

Weights are corrupted once per :meth:`ErrorInjector.reseed` call (and again, with the same
seed, when the clean weight changes, e.g. after an optimizer step); IFMs get fresh errors
on every forward call from a generator that :meth:`~ErrorInjector.reseed` re-seeds. All
randomness derives from ``ErrorSpec.seed``, the reseed index, and the layer's position.

Placement: the weights of the layers (in ``net.named_modules()`` order) lie one after another
from ``ErrorSpec.layout`` (default ``AddressMap()``: bank 0, row 0), each placed with
:meth:`~errormodels.layout.AddressMap.after`; the IFM buffers follow the last weight, one per
layer, allocated on the layer's first call (and moved to the end if a larger IFM arrives).

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
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from boosting.quant import QTensor, QuantError, QuantFormat, _check_scale, dequantize, get_format, quantize, storage
from errormodels.inject import InjectionStats, inject_
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

    Attributes
    ----------
    stats : dict
        ``{(layer_name, "weight" | "ifm"): InjectionStats}``, summed over all injections since
        entering (or :meth:`reset_stats`).
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

    def __init__(self, net: nn.Module, spec: ErrorSpec, calibration: Optional[Calibration] = None) -> None:
        if not isinstance(spec, ErrorSpec):
            raise InferenceError(f"spec must be an ErrorSpec, got {type(spec).__name__}")
        if calibration is not None and not isinstance(calibration, Calibration):
            raise InferenceError(f"calibration must be a Calibration, got {type(calibration).__name__}")
        self.net = net
        self.spec = spec
        self.calibration = calibration
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
        self.stats: dict[tuple[str, str], InjectionStats] = {}
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
        except Exception:
            self._restore()
            raise
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
        self._weight_cache = {}
        self._delta_cache = {}

    def reseed(self, index: int) -> None:
        """Draw fresh weight errors and restart the IFM error stream, deterministically from ``(spec.seed, index)``.

        Call it per batch (error-aware training) or per evaluation seed. The weights are
        re-corrupted lazily, on the next forward pass.
        """
        self._round = _check_seed("index", index)
        self._weight_cache = {}
        self._delta_cache = {}
        self._reset_ifm_generators()

    def reset_stats(self) -> None:
        """Forget the collected :attr:`stats`."""
        self.stats = {}

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
        old = self.stats.get(key)
        self.stats[key] = stats if old is None else old + stats

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
        corrupt = self._weight_for(index, name, w)
        cached = self._delta_cache.get(index)
        if cached is not None and cached[0] is corrupt:
            return cached[1]
        with torch.no_grad():
            delta = corrupt - w
        self._delta_cache[index] = (corrupt, delta)
        return delta

    def _ifm_hook(self, name: str):
        def hook(_module: nn.Module, args: tuple) -> Optional[tuple]:
            if not args or not isinstance(args[0], torch.Tensor) or not args[0].dtype.is_floating_point:
                return None
            x = args[0]
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

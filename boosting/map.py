"""Network-to-DRAM mapping: DRAM operating points and a partition for every tensor (EDEN Sec. 5.5).

EDEN's last stage takes the DRAM's error curves (BER as a function of VDD, tRCD, tRP, per
partition: ``python -m errormodels.fit``) and the tolerable BER of every network tensor (per
layer and kind, ``"weight"`` or ``"ifm"``: ``python -m boosting.characterize``), chooses DRAM
operating points and assigns each tensor to a partition. The output is a DRAM configuration
(``docs/dram-config-format.md``).

Modes
-----
``power``
    Lower VDD; tRCD and tRP stay nominal. VDD is one supply for the whole module, so a single
    VDD is chosen for every partition.
``latency``
    Lower tRCD (and tRP where the partition has a ``trp_ns`` curve); VDD stays nominal. Timings
    apply per access, so every partition gets its own tRCD / tRP.

Granularity
-----------
``coarse``
    One operating point for the whole DIMM: the most aggressive setting whose fitted BER is at
    most the lowest tolerable BER of all tensors, in every partition that holds data; the
    tensors are placed in network order from bank 0, row 0 (row interleaving, each in a fresh
    row).
``fine``
    Greedy and capacity-aware: tensors from the most sensitive (lowest tolerable BER) to the
    least, each into the most reliable partition (lowest fitted BER at the candidate setting)
    that has room and whose BER is at most the tensor's tolerable BER. In power mode the lowest
    VDD with a feasible assignment is searched over the measured VDDs and the partitions'
    ``lowest_safe`` points; in latency mode each used partition's tRCD (tRP) is the most
    aggressive one safe for the most sensitive tensor it holds, unused partitions stay nominal.

Settings are rounded to the milder side (VDD up to 1 mV, timings up to 0.01 ns), so the fitted
BER at the reported setting never exceeds what was asked. Where a partition has both a tRCD and
a tRP curve (each measured with the other nominal) the errors of the two are added:
``BER = max(a, b, a + b - base)`` with ``a``, ``b`` the curves' BERs and ``base`` the smaller of
their values at nominal (the shared floor is counted once).

Every tensor starts at byte 0 of a row of one bank (``AddressMap(bank=b, row=r,
interleave="row")``, :func:`placements`) and occupies ``ceil(n_bytes / row_bytes)`` consecutive
rows of that bank inside its partition (coarse mode: consecutive rows of the DIMM's row order).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from errormodels.curves import Curve
from errormodels.fit import file_sha256
from errormodels.layout import AddressMap, LayoutError
from errormodels.models import ModelError, finite_float, show

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODES",
    "GRANULARITIES",
    "NOMINAL_VDD_V",
    "NOMINAL_TRCD_NS",
    "NOMINAL_TRP_NS",
    "MapError",
    "Geometry",
    "Partition",
    "partitions_from_model",
    "nominal_of",
    "load_model",
    "load_tolerance",
    "tensor_sizes",
    "map_network",
    "save_config",
    "load_config",
    "placements",
    "main",
]

FORMAT = "eden-dram-config"
FORMAT_VERSION = 1
MODES = ("power", "latency")
GRANULARITIES = ("coarse", "fine")
NOMINAL_VDD_V = 1.35  # DDR3L
NOMINAL_TRCD_NS = 13.75
NOMINAL_TRP_NS = 13.75
KINDS = ("weight", "ifm")
_REL = 1e-9  # relative slack when comparing a fitted BER with a tolerable one

Key = tuple[str, str]
PathLike = Union[str, Path]


class MapError(ValueError):
    """Bad input to the mapping (file, format, partitions) or no feasible mapping; one-line message."""


# ----------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Geometry:
    """DIMM geometry: ``banks`` x ``rows`` x ``row_bytes`` (default: :class:`AddressMap`'s)."""

    banks: int = AddressMap.banks
    rows: int = AddressMap.rows
    row_bytes: int = AddressMap.row_bytes

    def __post_init__(self) -> None:
        for name in ("banks", "rows", "row_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MapError(f"geometry {name} must be a positive integer, got {value!r}")


@dataclass
class Partition:
    """A DRAM region that can hold tensors on its own, with its error curves.

    Attributes
    ----------
    label : str
        ``all``, ``bank<b>`` or ``rows<lo>-<hi>``.
    bank : int or None
        The bank of a bank partition (None: the region spans every bank).
    rows : tuple of int
        Inclusive row range ``(lo, hi)`` in each bank it covers.
    curves : dict
        ``{param: Curve}`` for the swept parameters (``vdd_v``, ``trcd_ns``, ``trp_ns``).
    """

    label: str
    bank: Optional[int]
    rows: tuple[int, int]
    curves: dict[str, Curve] = field(default_factory=dict)

    def segments(self, geometry: Geometry) -> list[tuple[int, int, int]]:
        """``(bank, lo, hi)`` runs of consecutive rows (a tensor must fit in one)."""
        if self.label == "all":
            return [(0, 0, geometry.banks * geometry.rows - 1)]  # DIMM row order (row interleaving)
        banks = [self.bank] if self.bank is not None else range(geometry.banks)
        return [(int(b), self.rows[0], self.rows[1]) for b in banks]

    def total_rows(self, geometry: Geometry) -> int:
        """Rows it holds."""
        return sum(hi - lo + 1 for _, lo, hi in self.segments(geometry))


_MAX_INDEX_DIGITS = 12  # a bank or row number longer than this is outside any geometry


def _parse_label(label: str, geometry: Geometry) -> tuple[Optional[int], tuple[int, int]]:
    """Bank and inclusive row range of a partition label (ASCII digits only)."""
    if label == "all":
        return None, (0, geometry.rows - 1)
    if re.fullmatch(r"chip[0-9]+", label):
        raise MapError(f"partition {show(label)} is a chip (byte lane of every row): chips cannot hold tensors "
                       "separately; fit with --partition dimm, bank or rowgroup:N")
    m = re.fullmatch(r"bank([0-9]+)", label)
    if m:
        if len(m.group(1)) > _MAX_INDEX_DIGITS or int(m.group(1)) >= geometry.banks:
            raise MapError(f"partition {show(label)} is outside the geometry's {geometry.banks} banks")
        return int(m.group(1)), (0, geometry.rows - 1)
    m = re.fullmatch(r"rows([0-9]+)-([0-9]+)", label)
    if m:
        if len(m.group(1)) > _MAX_INDEX_DIGITS or int(m.group(1)) >= geometry.rows:
            raise MapError(f"partition {show(label)} is outside the geometry's {geometry.rows} rows")
        lo = int(m.group(1))
        hi = geometry.rows - 1 if len(m.group(2)) > _MAX_INDEX_DIGITS else int(m.group(2))
        if not lo <= hi:
            raise MapError(f"partition {show(label)} has an empty row range")
        return None, (lo, min(hi, geometry.rows - 1))
    raise MapError(f"unknown partition label {show(label)} (all, bank<b>, rows<lo>-<hi>)")


def _sort_key(p: Partition) -> tuple:
    return (p.bank if p.bank is not None else -1, p.rows[0], p.label)


# ----------------------------------------------------------------------------- inputs
#: Deepest nesting accepted in a model, tolerance or configuration document (the formats need < 10).
MAX_JSON_DEPTH = 64
#: Accepted range of each setting in documents: VDD in V, timings in ns (as errormodels.curves.RANGES).
SETTING_RANGES = {"vdd_v": (0.0, 10.0), "trcd_ns": (0.0, 1e4), "trp_ns": (0.0, 1e4), "temp_c": (-273.15, 1e3)}


def _depth_ok(doc: Any, limit: int) -> bool:
    """Whether ``doc`` (JSON values) nests at most ``limit`` containers deep (iterative: no recursion)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Any = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def _read_json(path: PathLike, what: str) -> Any:
    """Parse a JSON file; MapError (one line) if it is missing, unreadable, not JSON, nested deeper
    than :data:`MAX_JSON_DEPTH` or holds an integer beyond Python's digit limit."""
    from boosting.checkpoint import file_problem

    path = Path(path)
    problem = file_problem(path, what)
    if problem is not None:
        raise MapError(problem)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except RecursionError:
        raise MapError(f"{path}: {what} JSON is nested too deeply") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, int digit limit
        detail = (exc.strerror if isinstance(exc, OSError) and exc.strerror
                  else str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise MapError(f"{path}: not a readable JSON {what} file ({detail})") from None
    if not _depth_ok(doc, MAX_JSON_DEPTH):
        raise MapError(f"{path}: {what} JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _version_ok(doc: Mapping[str, Any], version: int) -> bool:
    v = doc.get("format_version")
    return isinstance(v, int) and not isinstance(v, bool) and v == version


def _setting_value(value: Any, name: str, where: str) -> float:
    """A finite number in the setting's range (:data:`SETTING_RANGES`); MapError naming ``where``."""
    lo, hi = SETTING_RANGES[name]
    f = finite_float(value)
    if f is None or not lo <= f <= hi:
        raise MapError(f"{where} must be a number in [{lo:g}, {hi:g}], got {show(value)}")
    return f


def _check_model_doc(doc: Any, where: str) -> dict[str, Any]:
    """Format, version and ``source`` of an eden-error-model document (partitions: :func:`partitions_from_model`)."""
    if not isinstance(doc, Mapping) or doc.get("format") != "eden-error-model":
        raise MapError(f"{where}: not an eden-error-model file (write one with python -m errormodels.fit)")
    if not _version_ok(doc, 1):
        raise MapError(f"{where}: error-model format_version {show(doc.get('format_version'))} is not supported (1)")
    source = doc.get("source", {})
    if not isinstance(source, Mapping):
        raise MapError(f"{where}: source must be an object, got {show(source)}")
    setting = source.get("setting")
    if setting is not None:
        if not isinstance(setting, Mapping):
            raise MapError(f"{where}: source.setting must be an object, got {show(setting)}")
        for name, value in setting.items():
            if name in SETTING_RANGES and value is not None:
                _setting_value(value, name, f"{where}: source.setting.{name}")
    return dict(doc)


def load_model(path: PathLike) -> dict[str, Any]:
    """Read a fitted error-model JSON (``python -m errormodels.fit``), checking its format.

    Raises
    ------
    MapError
        Missing or unreadable file, not JSON, another format or version, a malformed ``source``
        (the partitions and curves are checked by :func:`partitions_from_model`).
    """
    return _check_model_doc(_read_json(path, "error-model"), str(path))


def partitions_from_model(model: Union[PathLike, Mapping[str, Any]], geometry: Optional[Geometry] = None) -> list[Partition]:
    """The partitions of a fitted error model, with their curves rebuilt.

    Parameters
    ----------
    model : path or dict
        An ``eden-error-model`` document or its path.
    geometry : Geometry, optional
        DIMM geometry (default 8 x 32768 x 8192 B).

    Raises
    ------
    MapError
        Wrong format, chip partitions, unknown labels, partitions of different kinds or
        overlapping row groups, or a malformed curve (naming the partition, the curve and the field).
    """
    geometry = geometry or Geometry()
    if isinstance(model, (str, Path)):
        doc = load_model(model)
    else:
        if not isinstance(model, Mapping):
            raise MapError(f"error model must be a document, got {show(model)}")
        doc = model if "format" not in model else _check_model_doc(model, "error model")
    parts = doc.get("partitions")
    if not isinstance(parts, Mapping) or not parts:
        raise MapError("error model has no partitions")
    out = []
    for label, entry in parts.items():
        if not isinstance(label, str):
            raise MapError(f"partition label {show(label)} is not a string")
        bank, rows = _parse_label(label, geometry)
        if not isinstance(entry, Mapping):
            raise MapError(f"partition {show(label)} must be an object, got {show(entry)}")
        curves_doc = entry.get("curves", {})
        if not isinstance(curves_doc, Mapping):
            raise MapError(f"partition {show(label)}: curves must be an object, got {show(curves_doc)}")
        curves = {}
        for name in ("vdd_v", "trcd_ns", "trp_ns"):
            if name not in curves_doc:
                continue
            try:
                curve = Curve.from_dict(curves_doc[name])
            except ModelError as exc:
                raise MapError(f"partition {show(label)}: curves.{name}: {exc}") from None
            if curve.param != name:
                raise MapError(f"partition {show(label)}: curves.{name} has param {show(curve.param)}")
            curves[name] = curve
        out.append(Partition(label, bank, rows, curves))
    kinds = {"all" if p.label == "all" else "bank" if p.bank is not None else "rows" for p in out}
    if len(kinds) > 1:
        which = "the 'all' partition with others" if "all" in kinds else "bank and row-group partitions"
        raise MapError(f"error model mixes {which}")
    out.sort(key=_sort_key)
    groups = sorted((p.rows, p.label) for p in out if p.label.startswith("rows"))
    for (a, la), (b, lb) in zip(groups, groups[1:]):
        if b[0] <= a[1]:
            raise MapError(f"error model partitions {la} and {lb} overlap")
    return out


def nominal_of(partitions: Sequence[Partition], setting: Optional[Mapping[str, Any]] = None) -> dict[str, float]:
    """Nominal VDD, tRCD and tRP: the largest measured value of each swept parameter, else the
    value the other curves were held at, else ``setting`` (a model's ``source.setting``), else
    DDR3L's 1.35 V / 13.75 ns / 13.75 ns.

    Raises
    ------
    MapError
        ``setting`` is not a mapping, or one of its values is not a number in range.
    """
    if setting is not None and not isinstance(setting, Mapping):
        raise MapError(f"source.setting must be an object, got {show(setting)}")
    defaults = {"vdd_v": NOMINAL_VDD_V, "trcd_ns": NOMINAL_TRCD_NS, "trp_ns": NOMINAL_TRP_NS}
    out = {}
    for name, default in defaults.items():
        swept = [float(np.max(p.curves[name].x)) for p in partitions if name in p.curves]
        held = [float(c.fixed[name]) for p in partitions for c in p.curves.values()
                if c.fixed.get(name) is not None]
        given = (setting or {}).get(name)
        if swept:
            out[name] = max(swept)
        elif held:
            out[name] = max(held)
        elif given is not None:
            out[name] = max(_setting_value(given, name, f"source.setting.{name}"), default)
        else:
            out[name] = default
    return out


def load_tolerance(source: Union[PathLike, Mapping[Any, Any]]) -> tuple[dict[Key, float] | float, Optional[str]]:
    """Tolerable BERs from a tolerance file or dict.

    Accepted: an ``eden-tolerance`` document (``python -m boosting.characterize``: the fine
    per-key BERs when present, else the coarse BER for every tensor), ``{"bers": [[layer, kind,
    ber], ...]}``, ``{"ber": x}``, or (API) ``{(layer, kind): ber}``.

    Returns
    -------
    bers : dict or float
        Per-key BERs, or one BER for every tensor.
    fmt : str or None
        The numeric format the tolerance was measured in, if recorded.

    Raises
    ------
    MapError
        A missing or unreadable file, not JSON, another format or version, or a malformed field
        (one line naming it): a BER that is not a number in (0, 1], a layer that is not a string,
        a kind other than ``weight`` / ``ifm``, a key given twice, a ``fmt`` that is not a string.
    """
    doc = _read_json(source, "tolerance") if isinstance(source, (str, Path)) else source
    if not isinstance(doc, Mapping):
        raise MapError("tolerance must be a JSON object")
    if doc and all(isinstance(k, tuple) for k in doc):
        if not all(len(k) == 2 for k in doc):
            raise MapError("tolerance keys must be (layer, kind) pairs")
        return {(str(k[0]), str(k[1])): _check_ber(v, k) for k, v in doc.items()}, None
    fmt = doc.get("fmt")
    if fmt is not None and not isinstance(fmt, str):
        raise MapError(f"tolerance fmt must be a string, got {show(fmt)}")
    if "format" in doc:
        if doc.get("format") != "eden-tolerance":
            raise MapError(f"tolerance is a {show(doc.get('format'))} document, not eden-tolerance")
        if not _version_ok(doc, 1):
            raise MapError(f"tolerance format_version {show(doc.get('format_version'))} is not supported (1)")
        fine = doc.get("fine")
        if fine is not None and not isinstance(fine, Mapping):
            raise MapError(f"tolerance fine must be an object or null, got {show(fine)}")
        if fine is not None and "bers" in fine:
            bers = _bers_list(fine["bers"], "fine.bers")
            if bers:
                return bers, fmt
        coarse = doc.get("coarse")
        if not isinstance(coarse, Mapping) or "ber" not in coarse:
            raise MapError("tolerance document has neither fine BERs nor a coarse BER")
        found = coarse.get("found", True)
        if not isinstance(found, bool):
            raise MapError(f"tolerance coarse.found must be true or false, got {show(found)}")
        ber = coarse["ber"]
        if not found or (finite_float(ber) == 0.0):
            raise MapError("the network tolerates no bit errors (coarse characterization found none): nothing to map")
        return _check_ber(ber, "coarse"), fmt
    if "bers" in doc:
        bers = _bers_list(doc["bers"], "bers")
        if not bers:
            raise MapError("tolerance 'bers' is empty")
        return bers, fmt
    if "ber" in doc:
        return _check_ber(doc["ber"], "ber"), fmt
    raise MapError("tolerance has no 'bers' or 'ber' (expected an eden-tolerance document)")


def _text(value: str) -> str:
    """A name as is when it is short and printable, else shortened and quoted (one-line messages)."""
    return value if value.isprintable() and len(value) <= 60 else show(value)


def _check_ber(value: Any, key: Any) -> float:
    f = finite_float(value)
    if f is None or not 0.0 < f <= 1.0:
        name = key if isinstance(key, str) else "/".join(map(str, key)) if isinstance(key, tuple) else show(key)
        raise MapError(f"tolerable BER of {name} must be in (0, 1], got {show(value)}")
    return f


def _bers_list(rows: Any, where: str = "bers") -> dict[Key, float]:
    if not isinstance(rows, list):
        raise MapError(f"tolerance {where} must be a list of [layer, kind, ber], got {show(rows)}")
    out: dict[Key, float] = {}
    for i, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 3):
            raise MapError(f"tolerance {where}[{i}] {show(row)} is not [layer, kind, ber]")
        layer, kind, ber = row
        if not isinstance(layer, str) or not layer:
            raise MapError(f"tolerance {where}[{i}]: layer must be a non-empty string, got {show(layer)}")
        if kind not in KINDS:
            raise MapError(f"tolerance {where}[{i}]: kind must be one of {', '.join(KINDS)}, got {show(kind)}")
        if (layer, kind) in out:
            raise MapError(f"tolerance {where}[{i}]: {show(layer)}/{kind} is given twice")
        out[(layer, kind)] = _check_ber(ber, f"{_text(layer)}/{kind}")
    return out


def tensor_sizes(net: nn.Module, fmt: Any, input_shape: Sequence[int], batch_size: int = 1) -> dict[Key, int]:
    """Bytes each tensor of ``net`` occupies in DRAM, per ``(layer, kind)`` in layer order.

    Weights take ``ceil(numel * bits / 8)`` bytes; an input feature map ``ceil(numel * bits / 8)``
    for the whole batch (found with forward pre-hooks on a zero input of ``(batch_size,
    *input_shape)``). Layers are :func:`boosting.inference.injectable_layers`.
    """
    from boosting.inference import injectable_layers
    from boosting.quant import QuantError, get_format

    try:
        bits = get_format(fmt).bits
    except QuantError as exc:
        raise MapError(str(exc)) from None
    if not isinstance(batch_size, int) or batch_size < 1:
        raise MapError(f"batch_size must be a positive integer, got {batch_size!r}")
    layers = injectable_layers(net)
    if not layers:
        raise MapError("the network has no convolution or linear layers")
    ifm: dict[str, int] = {}
    handles = []
    for name, module in layers:
        def hook(_m: nn.Module, args: tuple, name: str = name) -> None:
            ifm[name] = int(args[0].numel())
        handles.append(module.register_forward_pre_hook(hook))
    param = next(net.parameters(), None)
    x = torch.zeros((batch_size, *map(int, input_shape)), device=param.device if param is not None else "cpu")
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    out: dict[Key, int] = {}
    for name, module in layers:
        out[(name, "weight")] = -(-module.weight.numel() * bits // 8)
        if name in ifm:
            out[(name, "ifm")] = -(-ifm[name] * bits // 8)
    return out


# ----------------------------------------------------------------------------- settings
def _ceil(x: float, step: float) -> float:
    return round(math.ceil(x / step - 1e-6) * step, 6)


def _ok(ber: float, tol: float) -> bool:
    return ber <= tol * (1 + _REL)


class _Evaluator:
    """BER of a partition at a setting and the most aggressive safe setting, in one mode."""

    def __init__(self, mode: str, nominal: Mapping[str, float]) -> None:
        self.mode = mode
        self.nominal = dict(nominal)

    def _curve(self, p: Partition, name: str) -> Curve:
        if name not in p.curves:
            raise MapError(f"partition {p.label!r} has no {name} curve: {self.mode} mode needs a sweep of {name}")
        return p.curves[name]

    def setting(self, vdd_v: Optional[float] = None, trcd_ns: Optional[float] = None,
                trp_ns: Optional[float] = None) -> dict[str, float]:
        return {"vdd_v": self.nominal["vdd_v"] if vdd_v is None else vdd_v,
                "trcd_ns": self.nominal["trcd_ns"] if trcd_ns is None else trcd_ns,
                "trp_ns": self.nominal["trp_ns"] if trp_ns is None else trp_ns}

    def ber(self, p: Partition, s: Mapping[str, float]) -> float:
        """Fitted BER of ``p`` at setting ``s``."""
        if self.mode == "power":
            return self._curve(p, "vdd_v").at(s["vdd_v"])
        a = self._curve(p, "trcd_ns").at(s["trcd_ns"])
        if "trp_ns" not in p.curves:
            return a
        trp = p.curves["trp_ns"]
        b = trp.at(s["trp_ns"])
        base = min(p.curves["trcd_ns"].at(self.nominal["trcd_ns"]), trp.at(self.nominal["trp_ns"]))
        return max(a, b, a + b - base)

    def safe(self, p: Partition, tol: float) -> Optional[dict[str, float]]:
        """The most aggressive setting of ``p`` with fitted BER <= ``tol`` (None if even nominal fails)."""
        if self.mode == "power":
            x = self._curve(p, "vdd_v").lowest_safe(tol)
            if x is None:
                return None
            s = self.setting(vdd_v=min(_ceil(x, 1e-3), self.nominal["vdd_v"]))
            return s if _ok(self.ber(p, s), tol) else self.setting()
        trcd_curve = self._curve(p, "trcd_ns")
        trp_curve = p.curves.get("trp_ns")

        def pick(t: float) -> Optional[dict[str, float]]:
            a = trcd_curve.lowest_safe(t)
            b = trp_curve.lowest_safe(t) if trp_curve is not None else self.nominal["trp_ns"]
            if a is None or b is None:
                return None
            s = self.setting(trcd_ns=min(_ceil(a, 0.01), self.nominal["trcd_ns"]),
                             trp_ns=min(_ceil(b, 0.01), self.nominal["trp_ns"]))
            return s if _ok(self.ber(p, s), tol) else None

        best = pick(tol)
        if best is not None:
            return best
        if not _ok(self.ber(p, self.setting()), tol):
            return None
        # tRCD and tRP errors add up: the largest per-curve target whose sum still fits.
        lo, hi = math.log10(max(self.ber(p, self.setting()), 1e-300)), math.log10(tol)
        best = pick(10**lo) or self.setting()
        for _ in range(40):
            mid = (lo + hi) / 2
            found = pick(10**mid)
            if found is not None:
                best, lo = found, mid
            else:
                hi = mid
        return best

    def milder(self, a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
        """Per parameter the milder (larger) of two settings."""
        return {k: max(a[k], b[k]) for k in ("vdd_v", "trcd_ns", "trp_ns")}


# ----------------------------------------------------------------------------- allocation
@dataclass
class _Slot:
    """One tensor's place."""

    partition: str
    bank: int
    row: int
    n_rows: int


class _Allocator:
    """First-fit row allocation in a partition's segments, within a row budget."""

    def __init__(self, p: Partition, geometry: Geometry, capacity_rows: Optional[int]) -> None:
        self.p = p
        self.geometry = geometry
        self.segments = p.segments(geometry)
        self.cursor = [lo for _, lo, _ in self.segments]
        total = p.total_rows(geometry)
        self.budget = total if capacity_rows is None else min(total, capacity_rows)
        self.used = 0

    @property
    def capacity_bytes(self) -> int:
        return self.budget * self.geometry.row_bytes

    @property
    def used_bytes(self) -> int:
        return self.used * self.geometry.row_bytes

    def alloc(self, n_rows: int) -> Optional[_Slot]:
        if self.used + n_rows > self.budget:
            return None
        for i, (bank, _lo, hi) in enumerate(self.segments):
            if self.cursor[i] + n_rows - 1 <= hi:
                start = self.cursor[i]
                self.cursor[i] += n_rows
                self.used += n_rows
                if self.p.label == "all":  # DIMM row order -> (bank, row)
                    return _Slot(self.p.label, start // self.geometry.rows, start % self.geometry.rows, n_rows)
                return _Slot(self.p.label, bank, start, n_rows)
        return None


def _rows_for(n_bytes: int, geometry: Geometry) -> int:
    return max(1, -(-int(n_bytes) // geometry.row_bytes))


def _name(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


class _Unplaceable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _assign(order: list[Key], tolerances: Mapping[Key, float], sizes: Mapping[Key, int],
            ranked: list[tuple[float, Partition]], geometry: Geometry, capacity_rows: Optional[int],
            where: str) -> tuple[dict[Key, _Slot], dict[str, _Allocator]]:
    """Greedy: each tensor (in ``order``) into the first partition of ``ranked`` (BER, partition)
    that is safe for it and has room. Raises :class:`_Unplaceable` naming the first tensor that fails."""
    allocators = {p.label: _Allocator(p, geometry, capacity_rows) for _, p in ranked}
    slots: dict[Key, _Slot] = {}
    for key in order:
        tol, n_rows = tolerances[key], _rows_for(sizes[key], geometry)
        eligible = [p for ber, p in ranked if _ok(ber, tol)]
        for p in eligible:
            slot = allocators[p.label].alloc(n_rows)
            if slot is not None:
                slots[key] = slot
                break
        else:
            if not eligible:
                best_ber, best = ranked[0]
                raise _Unplaceable(f"tensor {_name(key)} (tolerable BER {tol:.3g}) cannot be placed: no partition has "
                                   f"BER <= {tol:.3g} {where} (most reliable: {best.label} at {best_ber:.3g})")
            labels = ", ".join(p.label for p in eligible)
            raise _Unplaceable(f"tensor {_name(key)} ({sizes[key]} bytes, {n_rows} rows, tolerable BER {tol:.3g}) "
                               f"cannot be placed: the partitions safe for it {where} ({labels}) have no room for its {n_rows} rows")
    return slots, allocators


# ----------------------------------------------------------------------------- mapping
def map_network(partitions: Sequence[Partition], tolerances: Union[Mapping[Key, float], float],
                sizes: Mapping[Key, int], *, mode: str = "power", granularity: str = "fine",
                capacity_rows: Optional[int] = None, geometry: Optional[Geometry] = None,
                nominal: Optional[Mapping[str, float]] = None,
                source: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Choose DRAM operating points and place every tensor (the DRAM configuration document).

    Parameters
    ----------
    partitions : sequence of Partition
        From :func:`partitions_from_model` (all of one kind: ``all``, banks or row groups).
    tolerances : dict or float
        ``{(layer, kind): tolerable BER}`` for every key of ``sizes``, or one BER for all.
    sizes : dict
        ``{(layer, kind): bytes}`` (:func:`tensor_sizes`); its order is the network order.
    mode : {"power", "latency"}
        Lower VDD, or lower tRCD / tRP.
    granularity : {"coarse", "fine"}
        One DIMM-wide setting, or per-partition greedy placement.
    capacity_rows : int, optional
        Usable rows per partition (coarse mode: in the whole DIMM); default all of them.
    geometry : Geometry, optional
        DIMM geometry (default 8 x 32768 x 8192 B).
    nominal : dict, optional
        ``vdd_v``, ``trcd_ns``, ``trp_ns`` at nominal (default :func:`nominal_of`).
    source : dict, optional
        Provenance stored as ``source``.

    Returns
    -------
    dict
        The ``eden-dram-config`` document (``docs/dram-config-format.md``).

    Raises
    ------
    MapError
        Bad arguments, missing curves, or no feasible mapping (naming the tensor that cannot be placed).
    """
    if mode not in MODES:
        raise MapError(f"mode must be one of {MODES}, got {mode!r}")
    if granularity not in GRANULARITIES:
        raise MapError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if capacity_rows is not None and (isinstance(capacity_rows, bool) or not isinstance(capacity_rows, int)
                                      or capacity_rows < 1):
        raise MapError(f"capacity_rows must be a positive integer, got {capacity_rows!r}")
    geometry = geometry or Geometry()
    partitions = sorted(partitions, key=_sort_key)
    if not partitions:
        raise MapError("no partitions to map to")
    if not sizes:
        raise MapError("no tensors to map")
    for key, n in sizes.items():
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise MapError(f"size of {_name(key)} must be a non-negative integer, got {n!r}")
    if isinstance(tolerances, (int, float)):
        tol = {k: _check_ber(tolerances, _name(k)) for k in sizes}
    else:
        tol = {(str(k[0]), str(k[1])): _check_ber(v, _name(k)) for k, v in tolerances.items()}
        missing = [k for k in sizes if k not in tol]
        if missing:
            raise MapError(f"the tolerance has no BER for {_name(missing[0])} "
                           f"({len(missing)} of the network's {len(sizes)} tensors missing: another network?)")
        extra = [k for k in tol if k not in sizes]
        if extra:
            raise MapError(f"the tolerance names {_name(extra[0])}, which the network does not have (another network?)")
    nominal = dict(nominal) if nominal is not None else nominal_of(partitions)
    ev = _Evaluator(mode, nominal)
    network_order = list(sizes)
    if granularity == "coarse":
        settings, slots, used_rows, ber_of_key = _coarse(partitions, tol, sizes, ev, geometry, capacity_rows)
        capacity = {p.label: (capacity_rows if capacity_rows is not None and len(partitions) == 1
                              else p.total_rows(geometry)) * geometry.row_bytes for p in partitions}
    else:
        settings, slots, used_rows, ber_of_key, capacity = _fine(partitions, tol, sizes, ev, geometry, capacity_rows)
    part_rows = []
    for p in partitions:
        s = settings[p.label]
        part_rows.append({
            "label": p.label, "bank": p.bank, "rows": [p.rows[0], p.rows[1]],
            "vdd_v": s["vdd_v"], "trcd_ns": s["trcd_ns"], "trp_ns": s["trp_ns"],
            "predicted_ber": ev.ber(p, s),
            "capacity_bytes": int(capacity[p.label]), "used_bytes": int(used_rows.get(p.label, 0) * geometry.row_bytes),
        })
    tensors = []
    for key in network_order:
        slot = slots[key]
        pred = ber_of_key[key]
        tensors.append({
            "layer": key[0], "kind": key[1], "n_bytes": int(sizes[key]), "tolerable_ber": tol[key],
            "partition": slot.partition, "bank": slot.bank, "row": slot.row, "n_rows": slot.n_rows,
            "offset_bytes": 0, "predicted_ber": pred, "margin": tol[key] / pred if pred > 0 else None,
        })
    total = sum(int(sizes[k]) for k in network_order) or 1
    savings = {}
    for name, out in (("vdd_v", "vdd_reduction_v"), ("trcd_ns", "trcd_reduction_ns"), ("trp_ns", "trp_reduction_ns")):
        red = sum(int(sizes[k]) * (nominal[name] - settings[slots[k].partition][name]) for k in network_order) / total
        savings[out] = round(red, 6)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mode": mode,
        "granularity": granularity,
        "nominal": {k: float(nominal[k]) for k in ("vdd_v", "trcd_ns", "trp_ns")},
        "geometry": {"banks": geometry.banks, "rows": geometry.rows, "row_bytes": geometry.row_bytes},
        "capacity_rows": capacity_rows,
        "partitions": part_rows,
        "tensors": tensors,
        "savings": savings,
        "source": dict(source or {}),
    }


def _coarse(partitions: list[Partition], tol: dict[Key, float], sizes: Mapping[Key, int], ev: _Evaluator,
            geometry: Geometry, capacity_rows: Optional[int]):
    """One DIMM-wide setting; tensors in network order from bank 0, row 0."""
    budget = geometry.banks * geometry.rows if capacity_rows is None else min(capacity_rows, geometry.banks * geometry.rows)
    cursor = 0
    spans: dict[Key, tuple[int, int]] = {}
    for key, n in sizes.items():
        n_rows = _rows_for(n, geometry)
        if cursor + n_rows > budget:
            need = sum(_rows_for(v, geometry) for v in sizes.values())
            raise MapError(f"tensor {_name(key)} cannot be placed: the network needs {need} rows, "
                           f"the DIMM offers {budget}" + (" (capacity_rows)" if capacity_rows is not None else ""))
        spans[key] = (cursor, cursor + n_rows - 1)
        cursor += n_rows

    def holders(first: int, last: int) -> list[Partition]:
        out = []
        for p in partitions:
            for bank, lo, hi in p.segments(geometry):
                g0, g1 = (lo, hi) if p.label == "all" else (bank * geometry.rows + lo, bank * geometry.rows + hi)
                if g0 <= last and first <= g1:
                    out.append(p)
                    break
        return out

    held = {key: holders(*span) for key, span in spans.items()}
    if any(not h for h in held.values()):
        key = next(k for k, h in held.items() if not h)
        raise MapError(f"tensor {_name(key)} falls in rows no partition of the model covers")
    min_key = min(tol, key=lambda k: tol[k])
    min_tol = tol[min_key]
    setting: Optional[dict[str, float]] = None
    for p in {p.label: p for h in held.values() for p in h}.values():
        s = ev.safe(p, min_tol)
        if s is None:
            raise MapError(f"tensor {_name(min_key)} (tolerable BER {min_tol:.3g}) cannot be placed: partition "
                           f"{p.label} has BER {ev.ber(p, ev.setting()):.3g} even at nominal settings")
        setting = s if setting is None else ev.milder(setting, s)
    assert setting is not None
    settings = {p.label: dict(setting) for p in partitions}
    slots: dict[Key, _Slot] = {}
    used_rows: dict[str, int] = {}
    ber_of_key: dict[Key, float] = {}
    for key, (first, last) in spans.items():
        first_holder = held[key][0]
        slots[key] = _Slot(first_holder.label, first // geometry.rows, first % geometry.rows, last - first + 1)
        ber_of_key[key] = max(ev.ber(p, setting) for p in held[key])
        for g in range(first, last + 1):
            bank, row = divmod(g, geometry.rows)
            for p in held[key]:
                if p.label == "all" or ((p.bank is None or p.bank == bank) and p.rows[0] <= row <= p.rows[1]):
                    used_rows[p.label] = used_rows.get(p.label, 0) + 1
                    break
    return settings, slots, used_rows, ber_of_key


def _fine(partitions: list[Partition], tol: dict[Key, float], sizes: Mapping[Key, int], ev: _Evaluator,
          geometry: Geometry, capacity_rows: Optional[int]):
    """Greedy, capacity-aware placement; one VDD (power) or per-partition timings (latency)."""
    index = {k: i for i, k in enumerate(sizes)}
    order = sorted(sizes, key=lambda k: (tol[k], index[k]))
    pindex = {p.label: i for i, p in enumerate(partitions)}

    def rank(bers: dict[str, float]) -> list[tuple[float, Partition]]:
        return sorted(((bers[p.label], p) for p in partitions), key=lambda bp: (bp[0], pindex[bp[1].label]))

    if ev.mode == "power":
        nominal_v = ev.nominal["vdd_v"]
        candidates = {nominal_v}
        for p in partitions:
            curve = ev._curve(p, "vdd_v")
            candidates.update(float(x) for x in curve.x if x <= nominal_v)
            for t in set(tol.values()):
                s = ev.safe(p, t)
                if s is not None:
                    candidates.add(s["vdd_v"])
        failure = None
        for vdd in sorted(candidates):
            s = ev.setting(vdd_v=vdd)
            bers = {p.label: ev.ber(p, s) for p in partitions}
            try:
                slots, allocators = _assign(order, tol, sizes, rank(bers), geometry, capacity_rows,
                                            f"at VDD {vdd:g} V")
            except _Unplaceable as exc:
                if vdd == nominal_v:
                    failure = exc.message.replace(f"at VDD {vdd:g} V", f"even at nominal VDD {vdd:g} V")
                continue
            settings = {p.label: dict(s) for p in partitions}
            break
        else:
            raise MapError(failure or "no VDD gives a feasible mapping")
    else:
        # Reliability: fitted BER at the most aggressive timing measured in any partition.
        harsh = ev.setting(trcd_ns=min(float(np.min(ev._curve(p, "trcd_ns").x)) for p in partitions),
                           trp_ns=min([float(np.min(p.curves["trp_ns"].x)) for p in partitions if "trp_ns" in p.curves]
                                      or [ev.nominal["trp_ns"]]))
        ranked = rank({p.label: ev.ber(p, harsh) for p in partitions})
        # In that order; a partition is safe for a tensor if its BER at nominal timings is within the tolerance.
        eligible = [(ev.ber(p, ev.setting()), p) for _, p in ranked]
        try:
            slots, allocators = _assign(order, tol, sizes, eligible, geometry, capacity_rows,
                                        "even at nominal timings")
        except _Unplaceable as exc:
            raise MapError(exc.message) from None
        settings = {}
        for p in partitions:
            held = [tol[k] for k, slot in slots.items() if slot.partition == p.label]
            s = ev.safe(p, min(held)) if held else ev.setting()
            settings[p.label] = s if s is not None else ev.setting()
    used_rows = {label: a.used for label, a in allocators.items()}
    capacity = {label: a.capacity_bytes for label, a in allocators.items()}
    by_label = {p.label: p for p in partitions}
    ber_of_key = {k: ev.ber(by_label[slot.partition], settings[slot.partition]) for k, slot in slots.items()}
    return settings, slots, used_rows, ber_of_key, capacity


# ----------------------------------------------------------------------------- documents
_PART_KEYS = ("label", "bank", "rows", "vdd_v", "trcd_ns", "trp_ns", "predicted_ber", "capacity_bytes", "used_bytes")
_TENSOR_KEYS = ("layer", "kind", "n_bytes", "tolerable_ber", "partition", "bank", "row", "offset_bytes", "predicted_ber")


def save_config(config: Mapping[str, Any], path: PathLike) -> Path:
    """Write a configuration as JSON (validated first)."""
    _validate(config, "configuration")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=1)
    return path


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nonneg_int(value: Any, where: str) -> int:
    if not _int(value) or value < 0:
        raise MapError(f"{where} must be a non-negative integer, got {show(value)}")
    return value


def _number(value: Any, where: str, lo: float = 0.0, hi: float = math.inf) -> float:
    f = finite_float(value)
    if f is None or not lo <= f <= hi:
        raise MapError(f"{where} must be a finite number in [{lo:g}, {hi:g}], got {show(value)}")
    return f


def _validate(doc: Any, where: str) -> dict[str, Any]:
    """Check a DRAM configuration document field by field (``docs/dram-config-format.md``)."""
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise MapError(f"{where}: not an {FORMAT} document (write one with python -m boosting.map)")
    if not _version_ok(doc, FORMAT_VERSION):
        raise MapError(f"{where}: format_version {show(doc.get('format_version'))} is not supported ({FORMAT_VERSION})")
    if doc.get("mode") not in MODES or doc.get("granularity") not in GRANULARITIES:
        raise MapError(f"{where}: mode {show(doc.get('mode'))} / granularity {show(doc.get('granularity'))} unknown")
    geo = doc.get("geometry")
    if not isinstance(geo, Mapping) or not all(_int(geo.get(k)) and geo[k] > 0 for k in ("banks", "rows", "row_bytes")):
        raise MapError(f"{where}: geometry needs positive integer banks, rows, row_bytes")
    try:
        AddressMap(banks=geo["banks"], rows=geo["rows"], row_bytes=geo["row_bytes"])
    except LayoutError as exc:
        raise MapError(f"{where}: geometry: {exc}") from None
    geometry = Geometry(geo["banks"], geo["rows"], geo["row_bytes"])
    nominal = doc.get("nominal")
    if not isinstance(nominal, Mapping):
        raise MapError(f"{where}: nominal must be an object with vdd_v, trcd_ns, trp_ns")
    for name in ("vdd_v", "trcd_ns", "trp_ns"):
        _setting_value(nominal.get(name), name, f"{where}: nominal.{name}")
    capacity_rows = doc.get("capacity_rows")
    if capacity_rows is not None and (not _int(capacity_rows) or capacity_rows < 1):
        raise MapError(f"{where}: capacity_rows must be null or a positive integer, got {show(capacity_rows)}")
    savings = doc.get("savings")
    if not isinstance(savings, Mapping):
        raise MapError(f"{where}: savings must be an object")
    for name in ("vdd_reduction_v", "trcd_reduction_ns", "trp_reduction_ns"):
        _number(savings.get(name), f"{where}: savings.{name}", -1e4, 1e4)
    for key in ("partitions", "tensors"):
        if not isinstance(doc.get(key), list):
            raise MapError(f"{where}: {key} must be a list")
    parts: dict[str, Partition] = {}
    for i, p in enumerate(doc["partitions"]):
        if not isinstance(p, Mapping) or any(k not in p for k in _PART_KEYS):
            raise MapError(f"{where}: partition {i} lacks one of {', '.join(_PART_KEYS)}")
        label = p["label"]
        if not isinstance(label, str):
            raise MapError(f"{where}: partition {i}: label must be a string, got {show(label)}")
        at = f"{where}: partition {_text(label)}"
        if label in parts:
            raise MapError(f"{at} is given twice")
        bank, rows = _parse_label(label, geometry)
        if p["bank"] != bank or p["bank"] is True or p["bank"] is False:
            raise MapError(f"{at}: bank must be {show(bank)}, got {show(p['bank'])}")
        if not (isinstance(p["rows"], list) and len(p["rows"]) == 2 and all(_int(r) for r in p["rows"])
                and tuple(p["rows"]) == rows):
            raise MapError(f"{at}: rows must be [{rows[0]}, {rows[1]}], got {show(p['rows'])}")
        for name in ("vdd_v", "trcd_ns", "trp_ns"):
            _setting_value(p[name], name, f"{at}: {name}")
        _number(p["predicted_ber"], f"{at}: predicted_ber")
        _nonneg_int(p["capacity_bytes"], f"{at}: capacity_bytes")
        _nonneg_int(p["used_bytes"], f"{at}: used_bytes")
        parts[label] = Partition(label, bank, rows)
    seen: set[Key] = set()
    spans: list[tuple[int, int, str]] = []
    for i, t in enumerate(doc["tensors"]):
        if not isinstance(t, Mapping) or any(k not in t for k in _TENSOR_KEYS):
            raise MapError(f"{where}: tensor {i} lacks one of {', '.join(_TENSOR_KEYS)}")
        if not isinstance(t["layer"], str) or not t["layer"] or t["kind"] not in KINDS:
            raise MapError(f"{where}: tensor {i}: layer must be a non-empty string and kind one of "
                           f"{', '.join(KINDS)}, got {show(t['layer'])}/{show(t['kind'])}")
        key = (t["layer"], t["kind"])
        at = f"{where}: tensor {_text(key[0])}/{key[1]}"
        if key in seen:
            raise MapError(f"{at} is given twice")
        seen.add(key)
        if not isinstance(t["partition"], str) or t["partition"] not in parts:
            raise MapError(f"{at} is in unknown partition {show(t['partition'])}")
        n_bytes = _nonneg_int(t["n_bytes"], f"{at}: n_bytes")
        _check_ber(t["tolerable_ber"], key)
        _number(t["predicted_ber"], f"{at}: predicted_ber")
        if "n_rows" in t:
            if not _int(t["n_rows"]) or t["n_rows"] < 1:
                raise MapError(f"{at}: n_rows must be a positive integer, got {show(t['n_rows'])}")
        if t.get("margin") is not None:
            _number(t["margin"], f"{at}: margin")
        if not (_int(t["bank"]) and 0 <= t["bank"] < geo["banks"] and _int(t["row"]) and 0 <= t["row"] < geo["rows"]
                and _int(t["offset_bytes"]) and t["offset_bytes"] >= 0):
            raise MapError(f"{at} has an address outside the geometry")
        part = parts[t["partition"]]
        if part.label != "all" and ((part.bank is not None and t["bank"] != part.bank)
                                    or not part.rows[0] <= t["row"] <= part.rows[1]):
            raise MapError(f"{at}: bank {t['bank']} row {t['row']} is outside its partition {part.label}")
        capacity = geo["banks"] * geo["rows"] * geo["row_bytes"]
        if n_bytes > capacity or t["offset_bytes"] > capacity:
            raise MapError(f"{at}: {show(n_bytes)} bytes at offset {show(t['offset_bytes'])} do not fit the "
                           f"DIMM's {capacity} bytes")
        try:
            amap = AddressMap(banks=geo["banks"], rows=geo["rows"], row_bytes=geo["row_bytes"], bank=t["bank"],
                              row=t["row"], interleave="row", offset_bytes=t["offset_bytes"])
            amap.check_fits(n_bytes)
        except LayoutError as exc:
            raise MapError(f"{at}: {exc}") from None
        first, last = amap.start_address, amap.start_address + max(n_bytes, 1) - 1
        rows_taken = last // geo["row_bytes"] - first // geo["row_bytes"] + 1
        if "n_rows" in t and t["n_rows"] != rows_taken:
            raise MapError(f"{at}: n_rows must be {rows_taken} for {n_bytes} bytes, got {show(t['n_rows'])}")
        end_bank, end_row = divmod(last // geo["row_bytes"], geo["rows"])
        if doc["granularity"] == "fine" and part.label != "all" and (end_bank != t["bank"] or end_row > part.rows[1]):
            raise MapError(f"{at}: its {rows_taken} rows from bank {t['bank']} row {t['row']} leave its "
                           f"partition {part.label}")
        spans.append((first, last, f"{_text(key[0])}/{key[1]}"))
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start <= end:
            raise MapError(f"{where}: tensors {a} and {b} overlap")
    return dict(doc)


def load_config(path: PathLike) -> dict[str, Any]:
    """Read and validate a DRAM configuration written by :func:`save_config` / the CLI.

    Raises
    ------
    MapError
        A missing or unreadable file, not JSON, another format or version, or any field of the
        wrong type or out of range (one line naming it; ``docs/dram-config-format.md``).
    """
    return _validate(_read_json(path, "DRAM configuration"), str(path))


def placements(config: Union[PathLike, Mapping[str, Any]]) -> dict[Key, AddressMap]:
    """``{(layer, kind): AddressMap}`` of every tensor of a configuration (row interleaving); MapError if malformed."""
    doc = load_config(config) if isinstance(config, (str, Path)) else _validate(config, "configuration")
    geo = doc["geometry"]
    return {(t["layer"], t["kind"]): AddressMap(banks=geo["banks"], rows=geo["rows"], row_bytes=geo["row_bytes"],
                                                 bank=t["bank"], row=t["row"], interleave="row",
                                                 offset_bytes=t["offset_bytes"])
            for t in doc["tensors"]}


def write_tensor_csv(config: Mapping[str, Any], path: PathLike) -> Path:
    """The tensors of a configuration as CSV (one row each, the JSON's keys plus the setting)."""
    parts = {p["label"]: p for p in config["partitions"]}
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*_TENSOR_KEYS, "n_rows", "margin", "vdd_v", "trcd_ns", "trp_ns"])
        for t in config["tensors"]:
            p = parts[t["partition"]]
            w.writerow([*(t[k] for k in _TENSOR_KEYS), t.get("n_rows"), t.get("margin"),
                        p["vdd_v"], p["trcd_ns"], p["trp_ns"]])
    return path


def _print_table(config: Mapping[str, Any]) -> None:
    nominal = config["nominal"]
    print(f"{config['mode']} mode, {config['granularity']} mapping; nominal VDD {nominal['vdd_v']:g} V, "
          f"tRCD {nominal['trcd_ns']:g} ns, tRP {nominal['trp_ns']:g} ns")
    print(f"{'partition':<14}{'VDD V':>8}{'tRCD ns':>9}{'tRP ns':>8}{'BER':>11}{'used/cap MiB':>16}  tensors")
    for p in config["partitions"]:
        names = [f"{t['layer']}/{t['kind']}" for t in config["tensors"] if t["partition"] == p["label"]]
        if len(names) > 4:
            names = [*names[:3], f"... ({len(names)} in all)"]
        print(f"{p['label']:<14}{p['vdd_v']:>8.3f}{p['trcd_ns']:>9.2f}{p['trp_ns']:>8.2f}{p['predicted_ber']:>11.2e}"
              f"{p['used_bytes'] / 2**20:>8.2f}/{p['capacity_bytes'] / 2**20:<7.1f}  {' '.join(names) or '-'}")
    print(f"{'tensor':<22}{'bytes':>10}{'tolerable':>11}{'predicted':>11}{'margin':>9}  place")
    for t in config["tensors"]:
        print(f"{t['layer'] + '/' + t['kind']:<22}{t['n_bytes']:>10}{t['tolerable_ber']:>11.2e}{t['predicted_ber']:>11.2e}"
              f"{t.get('margin') or float('nan'):>9.3g}  {t['partition']} bank {t['bank']} row {t['row']}")
    s = config["savings"]
    print(f"savings (byte-weighted): VDD -{s['vdd_reduction_v']:.3f} V, tRCD -{s['trcd_reduction_ns']:.2f} ns, "
          f"tRP -{s['trp_reduction_ns']:.2f} ns")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m boosting.map --model M --tolerance T --network NET -o dram-config.json``; exit 2 on bad input."""
    import argparse
    import sys

    from boosting.checkpoint import CheckpointError, load_network

    parser = argparse.ArgumentParser(
        prog="python -m boosting.map",
        description="Map a network's tensors to DRAM partitions and operating points (EDEN Sec. 5.5).",
    )
    parser.add_argument("--model", required=True, help="fitted error model (python -m errormodels.fit)")
    parser.add_argument("--tolerance", required=True, help="tolerance JSON (python -m boosting.characterize)")
    parser.add_argument("--network", required=True, help="network file (eden-network)")
    parser.add_argument("--mode", default="power", choices=MODES, help="power (lower VDD, default) or latency (lower tRCD/tRP)")
    parser.add_argument("--granularity", default="fine", choices=GRANULARITIES, help="coarse or fine (default)")
    parser.add_argument("--capacity-rows", type=int, default=None, help="usable rows per partition (default all)")
    parser.add_argument("--fmt", default=None, help="numeric format (default: the tolerance file's)")
    parser.add_argument("--batch-size", type=int, default=1, help="input batch held in DRAM (default 1)")
    parser.add_argument("-o", "--out", default="dram-config.json", help="output JSON (default dram-config.json)")
    parser.add_argument("--csv", default=None, help="tensor CSV (default: the output with .csv)")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model)
        partitions = partitions_from_model(model)
        tolerances, tol_fmt = load_tolerance(args.tolerance)
        fmt = args.fmt or tol_fmt
        if fmt is None:
            raise MapError("the tolerance does not record a numeric format: give --fmt")
        nf = load_network(args.network)
        sizes = tensor_sizes(nf.net, fmt, nf.net.input_shape, args.batch_size)
        source = {
            "model_file": str(Path(args.model).resolve()), "model_sha256": file_sha256(args.model),
            "tolerance_file": str(Path(args.tolerance).resolve()), "tolerance_sha256": file_sha256(args.tolerance),
            "network": {"file": str(Path(args.network).resolve()), "sha256": file_sha256(args.network),
                        "name": nf.network, "fmt": str(fmt), "batch_size": args.batch_size},
            "error_model_setting": model.get("source", {}).get("setting"),
            "dimm": model.get("source", {}).get("dimm"),
        }
        nominal = nominal_of(partitions, model.get("source", {}).get("setting"))
        config = map_network(partitions, tolerances, sizes, mode=args.mode, granularity=args.granularity,
                             capacity_rows=args.capacity_rows, nominal=nominal, source=source)
        save_config(config, args.out)
        csv_path = write_tensor_csv(config, args.csv or Path(args.out).with_suffix(".csv"))
    except (MapError, CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_table(config)
    print(f"written {args.out} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reading a fitted error model into the partitions tensors can be placed in.

The file is read and validated by :func:`errormodels.modelfile.read_model_file` (the one
reader of ``model.json``); here its partitions are checked against the DIMM geometry and their
curves rebuilt.

A partition (:class:`Partition`) is a DRAM region that holds tensors on its own: the whole DIMM
(``all``), a bank (``bank<b>``) or a row group of every bank (``rows<lo>-<hi>``), with the
error curves the model fitted for it (``python -m errormodels.fit``). Chip partitions (byte
lanes of every row) cannot hold tensors separately and are refused.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from boosting.map.base import (
    NOMINAL_TRCD_NS,
    NOMINAL_TRP_NS,
    NOMINAL_VDD_V,
    SETTING_RANGES,
    Geometry,
    MapError,
    PathLike,
    check_geometry,
)
from errormodels.curves import Curve
from errormodels.modelfile import read_model_file, validate_model_doc
from errormodels.models import ModelError, finite_float, show

__all__ = ["Partition", "parse_label", "partition_order", "setting_value", "load_model", "check_model_doc",
           "partitions_from_model", "nominal_of"]

log = logging.getLogger(__name__)

#: A bank or row number longer than this is outside any geometry.
_MAX_INDEX_DIGITS = 12
_CURVE_PARAMS = ("vdd_v", "trcd_ns", "trp_ns")


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


def parse_label(label: str, geometry: Geometry) -> tuple[Optional[int], tuple[int, int]]:
    """Bank and inclusive row range of a partition label (ASCII digits only); MapError otherwise."""
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


def partition_order(p: Partition) -> tuple:
    """Sort key: bank, then first row, then label."""
    return (p.bank if p.bank is not None else -1, p.rows[0], p.label)


def setting_value(value: Any, name: str, where: str) -> float:
    """A finite number in the setting's range (:data:`~boosting.map.base.SETTING_RANGES`); MapError naming ``where``."""
    lo, hi = SETTING_RANGES[name]
    f = finite_float(value)
    if f is None or not lo <= f <= hi:
        raise MapError(f"{where} must be a number in [{lo:g}, {hi:g}], got {show(value)}")
    return f


def check_model_doc(doc: Any, where: str) -> dict[str, Any]:
    """:func:`errormodels.modelfile.validate_model_doc` (the one check of an ``eden-error-model``
    document), raising :class:`MapError`. The partitions are read by :func:`partitions_from_model`."""
    try:
        return validate_model_doc(doc, where)
    except ModelError as exc:
        raise MapError(str(exc)) from None


def load_model(path: PathLike) -> dict[str, Any]:
    """Read a fitted error-model JSON (``python -m errormodels.fit``) through
    :func:`errormodels.modelfile.read_model_file`, the toolkit's one reader of the file.

    Raises
    ------
    MapError
        Missing or unreadable file, not JSON, another format or version, any malformed field
        (one line naming the file and the field).
    """
    try:
        return read_model_file(path)
    except ModelError as exc:
        raise MapError(str(exc)) from None


def partitions_from_model(model: Union[PathLike, Mapping[str, Any]],
                          geometry: Optional[Geometry] = None) -> list[Partition]:
    """The partitions of a fitted error model, with their curves rebuilt.

    Parameters
    ----------
    model : path or dict
        An ``eden-error-model`` document or its path.
    geometry : Geometry, optional
        DIMM geometry (default :data:`softmc_host.geometry.ML605_GEOMETRY`, 8 x 32768 x 8192 B).

    Raises
    ------
    MapError
        Wrong format, chip partitions, unknown labels, partitions of different kinds or
        overlapping row groups, or a malformed curve (naming the partition, the curve and the field).
    """
    geometry = check_geometry(geometry)
    if isinstance(model, (str, Path)):
        doc = load_model(model)
    else:
        if not isinstance(model, Mapping):
            raise MapError(f"error model must be a document, got {show(model)}")
        doc = model if "format" not in model else check_model_doc(model, "error model")
    parts = doc.get("partitions")
    if not isinstance(parts, Mapping) or not parts:
        raise MapError("error model has no partitions")
    out = []
    for label, entry in parts.items():
        if not isinstance(label, str):
            raise MapError(f"partition label {show(label)} is not a string")
        bank, rows = parse_label(label, geometry)
        if not isinstance(entry, Mapping):
            raise MapError(f"partition {show(label)} must be an object, got {show(entry)}")
        curves_doc = entry.get("curves", {})
        if not isinstance(curves_doc, Mapping):
            raise MapError(f"partition {show(label)}: curves must be an object, got {show(curves_doc)}")
        curves = {}
        for name in _CURVE_PARAMS:
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
    out.sort(key=partition_order)
    groups = sorted((p.rows, p.label) for p in out if p.label.startswith("rows"))
    for (a, la), (b, lb) in zip(groups, groups[1:]):
        if b[0] <= a[1]:
            raise MapError(f"error model partitions {la} and {lb} overlap")
    log.debug("%d partition(s): %s", len(out), ", ".join(p.label for p in out))
    return out


def nominal_of(partitions: Sequence[Partition], setting: Optional[Mapping[str, Any]] = None) -> dict[str, float]:
    """Nominal VDD, tRCD and tRP: the largest measured value of each swept parameter, else the
    value the other curves were held at, else ``setting`` (a model's ``source.setting``), else
    DDR3L's 1.35 V and the nominal timings of :mod:`softmc_host.timing` (13.75 ns).

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
            out[name] = max(setting_value(given, name, f"source.setting.{name}"), default)
        else:
            out[name] = default
    return out

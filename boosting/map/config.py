"""The DRAM configuration document (``eden-dram-config``): its types, writer, validated reader and address maps.

:func:`boosting.map.map_network` builds the document; :func:`save_config` writes it (validated
first, atomically), :func:`load_config` / :func:`read_config` read it back validated, and
:func:`placements` turns it into the :class:`~errormodels.layout.AddressMap` of every tensor,
the one place where a configuration becomes addresses (hardware-in-the-loop inference,
:func:`boosting.hil.placements_from_config`, and error injection use it).

Validation has two parts: the :mod:`msgspec` types below check every field's type and range
(:class:`DramConfig`; :func:`json_schema` is its JSON Schema), then :func:`validate` checks what
relates fields to each other: labels against the geometry, tensors inside their partitions,
sizes against ``n_rows``, no overlaps. Either gives one :class:`~boosting.map.MapError` line
naming the file and the field.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Union

import msgspec

from boosting.map.base import FORMAT, FORMAT_VERSION, Geometry, Key, MapError, PathLike, geometry_of, text
from boosting.map.partitions import Partition, parse_label
from boosting.tolerance import Ber, Kind, Layer, convert_document, read_document
from errormodels.layout import AddressMap, LayoutError
from errormodels.models import show
from softmc_host.files import write_json, write_text

__all__ = [
    "ConfigGeometry",
    "Nominal",
    "Savings",
    "PartitionEntry",
    "TensorEntry",
    "DramConfig",
    "json_schema",
    "validate",
    "read_config",
    "load_config",
    "save_config",
    "placements",
    "write_tensor_csv",
    "format_table",
    "TENSOR_CSV_COLUMNS",
]

log = logging.getLogger(__name__)

PosInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
VddV = Annotated[float, msgspec.Meta(ge=0.0, le=10.0, description="supply voltage, V")]
TimingNs = Annotated[float, msgspec.Meta(ge=0.0, le=1e4, description="timing, ns")]
FiniteNonNeg = Annotated[float, msgspec.Meta(ge=0.0, le=sys.float_info.max)]
ReductionV = Annotated[float, msgspec.Meta(ge=-1e4, le=1e4, description="V")]
ReductionNs = Annotated[float, msgspec.Meta(ge=-1e4, le=1e4, description="ns")]


class ConfigGeometry(msgspec.Struct, forbid_unknown_fields=True):
    """DIMM geometry: ``banks`` x ``rows`` x ``row_bytes``."""

    banks: PosInt
    rows: PosInt
    row_bytes: PosInt


class Nominal(msgspec.Struct, forbid_unknown_fields=True):
    """The nominal operating point."""

    vdd_v: VddV
    trcd_ns: TimingNs
    trp_ns: TimingNs


class Savings(msgspec.Struct, forbid_unknown_fields=True):
    """Nominal minus each tensor's setting, weighted by the tensor's bytes."""

    vdd_reduction_v: ReductionV
    trcd_reduction_ns: ReductionNs
    trp_reduction_ns: ReductionNs


class PartitionEntry(msgspec.Struct, forbid_unknown_fields=True):
    """One partition of the model, with its operating point and its use."""

    label: str
    bank: Optional[NonNegInt]
    rows: tuple[NonNegInt, NonNegInt]
    vdd_v: VddV
    trcd_ns: TimingNs
    trp_ns: TimingNs
    predicted_ber: FiniteNonNeg
    capacity_bytes: NonNegInt
    used_bytes: NonNegInt


class TensorEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One tensor (a layer's weight or input feature map) and where it sits."""

    layer: Layer
    kind: Kind
    n_bytes: NonNegInt
    tolerable_ber: Ber
    partition: str
    bank: NonNegInt
    row: NonNegInt
    offset_bytes: NonNegInt
    predicted_ber: FiniteNonNeg
    n_rows: Union[PosInt, msgspec.UnsetType] = msgspec.UNSET
    margin: Optional[FiniteNonNeg] = None


class DramConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An ``eden-dram-config`` document (``docs/dram-config-format.md``)."""

    format: Literal["eden-dram-config"]
    format_version: Literal[1]
    mode: Literal["power", "latency"]
    granularity: Literal["coarse", "fine"]
    nominal: Nominal
    geometry: ConfigGeometry
    capacity_rows: Optional[PosInt] = None
    partitions: list[PartitionEntry]
    tensors: list[TensorEntry]
    savings: Savings
    source: dict[str, Any] = {}


def json_schema() -> dict[str, Any]:
    """JSON Schema of the ``eden-dram-config`` document (:class:`DramConfig`)."""
    return msgspec.json.schema(DramConfig)


# ----------------------------------------------------------------------------- validation
def _check_identity(doc: Any, where: str) -> None:
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise MapError(f"{where}: not an {FORMAT} document (write one with python -m boosting.map)")
    v = doc.get("format_version")
    if not (isinstance(v, int) and not isinstance(v, bool) and v == FORMAT_VERSION):
        raise MapError(f"{where}: format_version {show(v)} is not supported ({FORMAT_VERSION})")


def _check_partitions(config: DramConfig, geometry: Geometry, where: str) -> dict[str, Partition]:
    parts: dict[str, Partition] = {}
    for p in config.partitions:
        at = f"{where}: partition {text(p.label)}"
        if p.label in parts:
            raise MapError(f"{at} is given twice")
        bank, rows = parse_label(p.label, geometry)
        if p.bank != bank:
            raise MapError(f"{at}: bank must be {show(bank)}, got {show(p.bank)}")
        if p.rows != rows:
            raise MapError(f"{at}: rows must be [{rows[0]}, {rows[1]}], got {show(list(p.rows))}")
        parts[p.label] = Partition(p.label, bank, rows)
    return parts


def _check_tensors(config: DramConfig, parts: Mapping[str, Partition], where: str) -> None:
    geo = config.geometry
    capacity = geo.banks * geo.rows * geo.row_bytes
    seen: set[Key] = set()
    spans: list[tuple[int, int, str]] = []
    for t in config.tensors:
        key = (t.layer, t.kind)
        name = f"{text(t.layer)}/{t.kind}"
        at = f"{where}: tensor {name}"
        if key in seen:
            raise MapError(f"{at} is given twice")
        seen.add(key)
        if t.partition not in parts:
            raise MapError(f"{at} is in unknown partition {show(t.partition)}")
        if not (t.bank < geo.banks and t.row < geo.rows):
            raise MapError(f"{at} has an address outside the geometry")
        part = parts[t.partition]
        if part.label != "all" and ((part.bank is not None and t.bank != part.bank)
                                    or not part.rows[0] <= t.row <= part.rows[1]):
            raise MapError(f"{at}: bank {t.bank} row {t.row} is outside its partition {part.label}")
        if t.n_bytes > capacity or t.offset_bytes > capacity:
            raise MapError(f"{at}: {show(t.n_bytes)} bytes at offset {show(t.offset_bytes)} do not fit the "
                           f"DIMM's {capacity} bytes")
        try:
            amap = _address_map(geo, t)
            amap.check_fits(t.n_bytes)
        except LayoutError as exc:
            raise MapError(f"{at}: {exc}") from None
        first, last = amap.start_address, amap.start_address + max(t.n_bytes, 1) - 1
        rows_taken = last // geo.row_bytes - first // geo.row_bytes + 1
        if t.n_rows is not msgspec.UNSET and t.n_rows != rows_taken:
            raise MapError(f"{at}: n_rows must be {rows_taken} for {t.n_bytes} bytes, got {show(t.n_rows)}")
        end_bank, end_row = divmod(last // geo.row_bytes, geo.rows)
        if config.granularity == "fine" and part.label != "all" and (end_bank != t.bank or end_row > part.rows[1]):
            raise MapError(f"{at}: its {rows_taken} rows from bank {t.bank} row {t.row} leave its "
                           f"partition {part.label}")
        spans.append((first, last, name))
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start <= end:
            raise MapError(f"{where}: tensors {a} and {b} overlap")


def validate(doc: Any, where: str = "configuration") -> DramConfig:
    """Check a DRAM configuration document: every field (:class:`DramConfig`), then the relations
    between them (``docs/dram-config-format.md``, "what is checked").

    Returns
    -------
    DramConfig
        The validated document.

    Raises
    ------
    MapError
        One line naming ``where`` and the field, partition or tensor.
    """
    _check_identity(doc, where)
    config = convert_document(doc, DramConfig, where, MapError)
    geo = config.geometry
    try:
        AddressMap(banks=geo.banks, rows=geo.rows, row_bytes=geo.row_bytes)
    except LayoutError as exc:
        raise MapError(f"{where}: geometry: {exc}") from None
    parts = _check_partitions(config, geometry_of(geo.banks, geo.rows, geo.row_bytes), where)
    _check_tensors(config, parts, where)
    return config


def _source(config: Union[PathLike, Mapping[str, Any]]) -> tuple[Any, str]:
    return read_document(config, "DRAM configuration", MapError, "configuration")


def read_config(config: Union[PathLike, Mapping[str, Any]]) -> DramConfig:
    """The validated :class:`DramConfig` of a configuration file or document (MapError otherwise)."""
    doc, where = _source(config)
    return validate(doc, where)


def load_config(path: PathLike) -> dict[str, Any]:
    """Read and validate a DRAM configuration written by :func:`save_config` / the CLI.

    Returns
    -------
    dict
        The document as it is in the file.

    Raises
    ------
    MapError
        A missing or unreadable file, not JSON, another format or version, or any field of the
        wrong type or out of range (one line naming it; ``docs/dram-config-format.md``).
    """
    doc, where = _source(path)
    validate(doc, where)
    return dict(doc)


def save_config(config: Mapping[str, Any], path: PathLike) -> Path:
    """Write a configuration as JSON, validated first, atomically (:func:`softmc_host.files.write_json`)."""
    validate(config, "configuration")
    path = write_json(path, config, indent=1)
    log.debug("wrote DRAM configuration %s", path)
    return path


def _address_map(geo: ConfigGeometry, t: TensorEntry) -> AddressMap:
    return AddressMap(banks=geo.banks, rows=geo.rows, row_bytes=geo.row_bytes, bank=t.bank, row=t.row,
                      interleave="row", offset_bytes=t.offset_bytes)


def placements(config: Union[PathLike, Mapping[str, Any], DramConfig]) -> dict[Key, AddressMap]:
    """``{(layer, kind): AddressMap}`` of every tensor of a configuration (row interleaving).

    Parameters
    ----------
    config : path, dict or DramConfig
        A configuration file, document, or an already validated :class:`DramConfig`.

    Raises
    ------
    MapError
        A malformed configuration (as :func:`load_config`).
    """
    doc = config if isinstance(config, DramConfig) else read_config(config)
    return {(t.layer, t.kind): _address_map(doc.geometry, t) for t in doc.tensors}


#: Columns of :func:`write_tensor_csv`.
TENSOR_CSV_COLUMNS = ("layer", "kind", "n_bytes", "tolerable_ber", "partition", "bank", "row", "offset_bytes",
                      "predicted_ber", "n_rows", "margin", "vdd_v", "trcd_ns", "trp_ns")
_TENSOR_KEYS = TENSOR_CSV_COLUMNS[:9]


def write_tensor_csv(config: Mapping[str, Any], path: PathLike) -> Path:
    """The tensors of a configuration as CSV (one row each, the JSON's keys plus the setting), atomically."""
    parts = {p["label"]: p for p in config["partitions"]}
    buffer = io.StringIO()
    w = csv.writer(buffer)
    w.writerow(TENSOR_CSV_COLUMNS)
    for t in config["tensors"]:
        p = parts[t["partition"]]
        w.writerow([*(t[k] for k in _TENSOR_KEYS), t.get("n_rows"), t.get("margin"),
                    p["vdd_v"], p["trcd_ns"], p["trp_ns"]])
    return write_text(path, buffer.getvalue())


def format_table(config: Mapping[str, Any]) -> str:
    """The configuration as a text table (what ``python -m boosting.map`` prints): the partitions with
    their setting, BER, use and tensors; then every tensor with its size, BERs, margin and place;
    then the byte-weighted savings. No trailing newline."""
    nominal = config["nominal"]
    lines = [f"{config['mode']} mode, {config['granularity']} mapping; nominal VDD {nominal['vdd_v']:g} V, "
             f"tRCD {nominal['trcd_ns']:g} ns, tRP {nominal['trp_ns']:g} ns",
             f"{'partition':<14}{'VDD V':>8}{'tRCD ns':>9}{'tRP ns':>8}{'BER':>11}{'used/cap MiB':>16}  tensors"]
    for p in config["partitions"]:
        names = [f"{t['layer']}/{t['kind']}" for t in config["tensors"] if t["partition"] == p["label"]]
        if len(names) > 4:
            names = [*names[:3], f"... ({len(names)} in all)"]
        lines.append(f"{p['label']:<14}{p['vdd_v']:>8.3f}{p['trcd_ns']:>9.2f}{p['trp_ns']:>8.2f}"
                     f"{p['predicted_ber']:>11.2e}{p['used_bytes'] / 2**20:>8.2f}/{p['capacity_bytes'] / 2**20:<7.1f}"
                     f"  {' '.join(names) or '-'}")
    lines.append(f"{'tensor':<22}{'bytes':>10}{'tolerable':>11}{'predicted':>11}{'margin':>9}  place")
    for t in config["tensors"]:
        margin = t.get("margin")
        lines.append(f"{t['layer'] + '/' + t['kind']:<22}{t['n_bytes']:>10}{t['tolerable_ber']:>11.2e}"
                     f"{t['predicted_ber']:>11.2e}{margin if margin is not None else float('nan'):>9.3g}"
                     f"  {t['partition']} bank {t['bank']} row {t['row']}")
    s = config["savings"]
    lines.append(f"savings (byte-weighted): VDD -{s['vdd_reduction_v']:.3f} V, tRCD -{s['trcd_reduction_ns']:.2f} ns, "
                 f"tRP -{s['trp_reduction_ns']:.2f} ns")
    return "\n".join(lines)

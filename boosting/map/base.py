"""What every module of :mod:`boosting.map` shares: the error class, the constants, the geometry.

The DIMM geometry is :class:`softmc_host.geometry.Geometry` (re-exported as
``boosting.map.Geometry``); :func:`geometry_of` builds one from a document's ``banks``,
``rows`` and ``row_bytes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

from boosting.tolerance import KINDS, MAX_JSON_DEPTH, ToleranceError, check_ber
from boosting.tolerance import load_tolerance as _read_tolerance
from errormodels.models import show
from softmc_host.geometry import ML605_GEOMETRY, Geometry
from softmc_host.timing import NOMINAL_TRCD_NS, NOMINAL_TRP_NS

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODES",
    "GRANULARITIES",
    "KINDS",
    "NOMINAL_VDD_V",
    "NOMINAL_TRCD_NS",
    "NOMINAL_TRP_NS",
    "MAX_JSON_DEPTH",
    "SETTING_RANGES",
    "MapError",
    "Geometry",
    "ML605_GEOMETRY",
    "Key",
    "PathLike",
    "geometry_of",
    "check_geometry",
    "tensor_name",
    "text",
    "ber_of",
    "load_tolerance",
]

FORMAT = "eden-dram-config"
FORMAT_VERSION = 1
MODES = ("power", "latency")
GRANULARITIES = ("coarse", "fine")
#: Nominal supply of the DDR3L DIMMs the fitted curves come from, in V.
NOMINAL_VDD_V = 1.35
#: Accepted range of each setting in documents: VDD in V, timings in ns (as errormodels.curves.RANGES).
SETTING_RANGES = {"vdd_v": (0.0, 10.0), "trcd_ns": (0.0, 1e4), "trp_ns": (0.0, 1e4), "temp_c": (-273.15, 1e3)}

Key = tuple[str, str]
PathLike = Union[str, Path]


class MapError(ValueError):
    """Bad input to the mapping (file, format, partitions) or no feasible mapping; one-line message."""


def geometry_of(banks: int, rows: int, row_bytes: int) -> Geometry:
    """The :class:`~softmc_host.geometry.Geometry` of ``banks`` x ``rows`` x ``row_bytes`` (64-bit bus
    where ``row_bytes`` is a multiple of 8, else a byte-wide one)."""
    bus = ML605_GEOMETRY.bus_bytes if row_bytes % ML605_GEOMETRY.bus_bytes == 0 else 1
    return Geometry(banks=banks, rows=rows, columns=row_bytes // bus, bus_bytes=bus)


def check_geometry(geometry: Optional[Geometry]) -> Geometry:
    """``geometry`` (default :data:`~softmc_host.geometry.ML605_GEOMETRY`) if its banks, rows and
    row bytes are positive integers; else MapError."""
    if geometry is None:
        return ML605_GEOMETRY
    for name in ("banks", "rows", "row_bytes"):
        value = getattr(geometry, name, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MapError(f"geometry {name} must be a positive integer, got {show(value)}")
    return geometry


def tensor_name(key: Key) -> str:
    """``layer/kind``."""
    return f"{key[0]}/{key[1]}"


def text(value: str) -> str:
    """A name as is when it is short and printable, else shortened and quoted (one-line messages)."""
    return value if value.isprintable() and len(value) <= 60 else show(value)


def ber_of(value: Any, name: str) -> float:
    """A tolerable BER in (0, 1] (MapError naming ``name`` otherwise)."""
    return check_ber(value, name, MapError)


def load_tolerance(source: Union[PathLike, Mapping[Any, Any]]) -> tuple[Union[dict[Key, float], float], Optional[str]]:
    """:func:`boosting.tolerance.load_tolerance`, raising :class:`MapError` (what the mapping reports).

    Returns ``(bers, fmt)``: ``{(layer, kind): ber}`` or one BER for every tensor, and the
    numeric format the tolerance was measured in (None if not recorded).
    """
    try:
        return _read_tolerance(source)
    except ToleranceError as exc:
        raise MapError(str(exc)) from None

"""The reference setting: the value each DRAM parameter is held at while another one is varied.

A BER curve (or plot) along one parameter holds the other parameters fixed. Both the profiler's
plots (:func:`profiler.plot.reference_settings`) and the fitted error curves
(:func:`errormodels.curves.curves_for`) choose those values by the one rule here,
per parameter:

1. its **nominal** value, if the map measured it (within :data:`NOMINAL_TOLERANCE`): tRCD and
   tRP at :data:`softmc_host.timing.NOMINAL_TRCD_NS` / ``NOMINAL_TRP_NS``, VDD at the supply's
   ``nominal_v`` from the bench metadata (:func:`nominal_vdd_of`), the refresh interval
   ``trefi_ms`` at the DDR3 refresh window (64 ms); temperature has none;
2. otherwise the **most common** measured value;
3. a tie goes to the **gentlest** value (highest VDD, longest tRCD / tRP, lowest temperature,
   shortest refresh interval).

Unrecorded values (``None``) are never a reference unless the parameter was never recorded, in
which case the reference is ``None``. The value returned is always one of the measured values
(so a caller can select the points that hold it by equality).

The refresh interval is not one of the four :data:`SETTING_PARAMS` of fitted error models and
their curves: :func:`at_reference_refresh` keeps the points of a map measured at its reference
refresh interval, so a map swept over ``trefi_ms`` is fitted at one interval.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Optional, Sequence

from softmc_host.session import NOMINAL_REFRESH_WINDOW_MS
from softmc_host.timing import NOMINAL_TRCD_NS, NOMINAL_TRP_NS

__all__ = [
    "SETTING_PARAMS",
    "GENTLER",
    "RANGES",
    "NOMINAL_TOLERANCE",
    "nominal_vdd_of",
    "nominal_value",
    "reference_value",
    "reference_settings",
    "REFRESH_PARAM",
    "refresh_of",
    "at_reference_refresh",
]

#: The parameters of a setting, in the order settings are written as tuples.
SETTING_PARAMS = ("vdd_v", "trcd_ns", "trp_ns", "temp_c")
#: +1: a larger value is gentler (fewer errors: VDD, timings); -1: a smaller one (temperature).
GENTLER = {"vdd_v": +1, "trcd_ns": +1, "trp_ns": +1, "temp_c": -1, "trefi_ms": -1}
#: The refresh-interval setting (ms; None: no hold, refresh as the tester had it).
REFRESH_PARAM = "trefi_ms"
#: Accepted range of each parameter in documents: VDD in V, timings in ns, temperature in °C.
RANGES = {"vdd_v": (0.0, 10.0), "trcd_ns": (0.0, 1e4), "trp_ns": (0.0, 1e4), "temp_c": (-273.15, 1e3)}
#: How close a measured value must be to the nominal one to count as it.
NOMINAL_TOLERANCE = 1e-6


def nominal_vdd_of(meta: Optional[Mapping[str, Any]]) -> Optional[float]:
    """The supply's nominal VDD recorded in a map's metadata (``bench.supply.nominal_v``), or None."""
    bench = (meta or {}).get("bench")
    supply = bench.get("supply") if isinstance(bench, Mapping) else None
    value = supply.get("nominal_v") if isinstance(supply, Mapping) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return round(float(value), 9)
    return None


def nominal_value(param: str, nominal_vdd_v: Optional[float] = None) -> Optional[float]:
    """The nominal value of a parameter (VDD: ``nominal_vdd_v``; temperature: None)."""
    if param == "trcd_ns":
        return NOMINAL_TRCD_NS
    if param == "trp_ns":
        return NOMINAL_TRP_NS
    if param == "vdd_v":
        return nominal_vdd_v
    if param == REFRESH_PARAM:
        return NOMINAL_REFRESH_WINDOW_MS
    return None


def reference_value(param: str, values: Iterable[Optional[float]], nominal: Optional[float] = None) -> Optional[float]:
    """The reference value of ``param`` among measured ``values`` (one per point or setting).

    Parameters
    ----------
    param : str
        One of :data:`SETTING_PARAMS` (for the direction of "gentlest").
    values : iterable of float or None
        The measured values; ``None`` for a point that did not record the parameter.
    nominal : float, optional
        The parameter's nominal value (:func:`nominal_value`).

    Returns
    -------
    float or None
        The measured value nearest the nominal one if within :data:`NOMINAL_TOLERANCE`, else the
        most common value (ties: the gentlest); None if no value was recorded.
    """
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return None
    if nominal is not None:
        near = [v for v in counts if abs(v - nominal) < NOMINAL_TOLERANCE]
        if near:
            return min(near, key=lambda v: abs(v - nominal))
    sign = GENTLER.get(param, 1)
    return max(counts, key=lambda v: (counts[v], sign * v))


def reference_settings(settings: Iterable[Mapping[str, Optional[float]]], nominal_vdd_v: Optional[float] = None,
                       params: Sequence[str] = SETTING_PARAMS) -> dict[str, Optional[float]]:
    """:func:`reference_value` of every parameter over a list of settings (mappings name -> value)."""
    rows = list(settings)
    return {p: reference_value(p, (row.get(p) for row in rows), nominal_value(p, nominal_vdd_v)) for p in params}


def refresh_of(row: Mapping[str, Any]) -> Optional[float]:
    """The refresh interval of a point's settings or summary row, in ms (None: absent or NaN)."""
    value = row.get(REFRESH_PARAM)
    if value is None or not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        return None
    return round(float(value), 9)


def at_reference_refresh(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows (point settings or ``BerMap.summary()`` rows) at the reference refresh interval.

    The reference is :func:`reference_value` of ``trefi_ms`` (64 ms if measured, else the most
    common interval, ties the shortest); when some rows have no interval (a map without a
    refresh sweep, or mixed) it is None and those rows are kept.
    """
    rows = list(rows)
    values = [refresh_of(row) for row in rows]
    wanted = None if None in values else reference_value(REFRESH_PARAM, values, NOMINAL_REFRESH_WINDOW_MS)
    return [row for row, value in zip(rows, values) if value == wanted]

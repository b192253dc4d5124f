"""Choosing operating points and placing tensors: the allocator behind :func:`map_network`.

``coarse`` granularity gives the DIMM one setting and places tensors in network order from
bank 0, row 0; ``fine`` places them greedily, most sensitive first, into the most reliable
partition with room (``docs/dram-config-format.md``, "Algorithm").
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from boosting.map.base import (
    FORMAT,
    FORMAT_VERSION,
    GRANULARITIES,
    MODES,
    Geometry,
    Key,
    MapError,
    ber_of,
    check_geometry,
    tensor_name,
)
from boosting.map.partitions import Partition, nominal_of, partition_order
from errormodels.curves import Curve

__all__ = ["map_network"]

log = logging.getLogger(__name__)

_REL = 1e-9  # relative slack when comparing a fitted BER with a tolerable one


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
                raise _Unplaceable(f"tensor {tensor_name(key)} (tolerable BER {tol:.3g}) cannot be placed: no partition has "
                                   f"BER <= {tol:.3g} {where} (most reliable: {best.label} at {best_ber:.3g})")
            labels = ", ".join(p.label for p in eligible)
            raise _Unplaceable(f"tensor {tensor_name(key)} ({sizes[key]} bytes, {n_rows} rows, tolerable BER {tol:.3g}) "
                               f"cannot be placed: the partitions safe for it {where} ({labels}) have no room for its {n_rows} rows")
    return slots, allocators


# ----------------------------------------------------------------------------- mapping
def map_network(partitions: Sequence[Partition], tolerances: Union[Mapping[Key, float], float],
                sizes: Mapping[Key, int], *, mode: str = "power", granularity: str = "coarse",
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
        One DIMM-wide setting (the default), or per-partition greedy placement.
    capacity_rows : int, optional
        Usable rows per partition (coarse mode: in the whole DIMM); default all of them.
    geometry : Geometry, optional
        DIMM geometry (default :data:`softmc_host.geometry.ML605_GEOMETRY`, 8 x 32768 x 8192 B).
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
    geometry = check_geometry(geometry)
    partitions = sorted(partitions, key=partition_order)
    if not partitions:
        raise MapError("no partitions to map to")
    if not sizes:
        raise MapError("no tensors to map")
    for key, n in sizes.items():
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise MapError(f"size of {tensor_name(key)} must be a non-negative integer, got {n!r}")
    if isinstance(tolerances, (int, float)):
        tol = {k: ber_of(tolerances, tensor_name(k)) for k in sizes}
    else:
        tol = {(str(k[0]), str(k[1])): ber_of(v, tensor_name(k)) for k, v in tolerances.items()}
        missing = [k for k in sizes if k not in tol]
        if missing:
            raise MapError(f"the tolerance has no BER for {tensor_name(missing[0])} "
                           f"({len(missing)} of the network's {len(sizes)} tensors missing: another network?)")
        extra = [k for k in tol if k not in sizes]
        if extra:
            raise MapError(f"the tolerance names {tensor_name(extra[0])}, which the network does not have (another network?)")
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
    log.debug("%s/%s mapping of %d tensors over %d partition(s); savings %s", mode, granularity, len(tensors),
              len(partitions), savings)
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
            raise MapError(f"tensor {tensor_name(key)} cannot be placed: the network needs {need} rows, "
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
        raise MapError(f"tensor {tensor_name(key)} falls in rows no partition of the model covers")
    min_key = min(tol, key=lambda k: tol[k])
    min_tol = tol[min_key]
    setting: Optional[dict[str, float]] = None
    for p in {p.label: p for h in held.values() for p in h}.values():
        s = ev.safe(p, min_tol)
        if s is None:
            raise MapError(f"tensor {tensor_name(min_key)} (tolerable BER {min_tol:.3g}) cannot be placed: partition "
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

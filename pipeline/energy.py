"""DRAM energy and latency of one inference at nominal and at reduced VDD / tRCD / tRP.

The access stream of one inference (batch of one) follows EDEN's memory model: every weight
tensor is read from DRAM once, every input feature map (IFM) is written once (by the layer
that produces it, or the host for the first) and read once. A tensor of ``n`` bytes spans
``ceil(n / row_bytes)`` rows (one activation each: row-interleaved, open-row streaming) and
``ceil(n / 64)`` bursts of 64 bytes (BL8 on a 64-bit bus).

Latency (DDR3 timing, bank accesses serialised, which is conservative)
----------------------------------------------------------------------
* **stream**: per row read ``tRCD + CL + bursts * tBURST + tRP``, per row written
  ``tRCD + CWL + bursts * tBURST + tWR + tRP``; summed over the stream.
* **closed page, line-granular**: one 64-byte access that misses the row buffer costs
  ``tRP + tRCD + CL + tBURST`` (the DNN-inference worst case with no row locality); its
  reduction is the upper bound of what lower tRCD/tRP buy per access.

Energy
------
* **model**: :func:`softmc_host.ddr3_power.interval_power` (IDD method, Micron TN-41-01 /
  DRAMPower; currents scale with ``VDD``, energy with ``VDD**2``) over the stream's duration
  with its activations, read bursts and write bursts. Timing changes shorten the stream and
  so the background energy; VDD scales everything.
* **measured**: the supply's measured current while the tester runs the inference's accesses
  (:mod:`pipeline.flow` reads it right after the hardware-in-the-loop run at each setting),
  times VDD, times the stream's duration at that setting.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, Sequence

from softmc_host.ddr3_power import DDR3L_1600_X8_4GB, Ddr3PowerParams, interval_power
from softmc_host.timing import NOMINAL_TRCD_NS, NOMINAL_TRP_NS

__all__ = ["DdrTiming", "Tensor", "Stream", "stream_of", "latency_ns", "energy_report"]

BURST_BYTES = 64


@dataclass(frozen=True)
class DdrTiming:
    """The timings of one access, in ns (DDR3L-1600 11-11-11 defaults; tRCD and tRP nominal)."""

    trcd_ns: float = NOMINAL_TRCD_NS
    trp_ns: float = NOMINAL_TRP_NS
    cl_ns: float = 13.75  # CL = 11 cycles of 1.25 ns
    cwl_ns: float = 10.0
    twr_ns: float = 15.0
    tburst_ns: float = 5.0  # 4 cycles of 1.25 ns


@dataclass(frozen=True)
class Tensor:
    """One tensor of the stream: its size, whether it is written too, and its partition's timing."""

    name: str
    n_bytes: int
    written: bool
    timing: DdrTiming


@dataclass(frozen=True)
class Stream:
    """Counts and duration of an access stream."""

    activates: int
    read_bursts: int
    write_bursts: int
    duration_ns: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def stream_of(tensors: Sequence[Tensor], row_bytes: int = 8192) -> Stream:
    """The access stream of reading every tensor once and writing the written ones once."""
    act = rd = wr = 0
    t_ns = 0.0
    for t in tensors:
        if t.n_bytes <= 0:
            continue
        rows = math.ceil(t.n_bytes / row_bytes)
        bursts = math.ceil(t.n_bytes / BURST_BYTES)
        tm = t.timing
        act += rows
        rd += bursts
        t_ns += rows * (tm.trcd_ns + tm.cl_ns + tm.trp_ns) + bursts * tm.tburst_ns
        if t.written:
            act += rows
            wr += bursts
            t_ns += rows * (tm.trcd_ns + tm.cwl_ns + tm.twr_ns + tm.trp_ns) + bursts * tm.tburst_ns
    return Stream(act, rd, wr, t_ns)


def latency_ns(timing: DdrTiming) -> float:
    """Latency of one closed-page 64-byte read: ``tRP + tRCD + CL + tBURST``."""
    return timing.trp_ns + timing.trcd_ns + timing.cl_ns + timing.tburst_ns


def _energy_j(stream: Stream, vdd_v: float, params: Ddr3PowerParams) -> float:
    cycles = max(1, math.ceil(stream.duration_ns / params.tck_ns))
    return interval_power(params, cycles=cycles, vdd_v=vdd_v, activates=stream.activates,
                          reads=stream.read_bursts, writes=stream.write_bursts).energy_j


def energy_report(sizes: Mapping[tuple[str, str], int], *, nominal_vdd_v: float, vdd_v: float,
                  nominal: DdrTiming, timings: Mapping[tuple[str, str], DdrTiming], row_bytes: int = 8192,
                  measured_current_a: Optional[Mapping[str, float]] = None,
                  params: Ddr3PowerParams = DDR3L_1600_X8_4GB) -> dict[str, Any]:
    """Energy and latency of one inference at nominal and at the chosen setting.

    Parameters
    ----------
    sizes : mapping
        ``{(layer, "weight" | "ifm"): bytes}`` for a batch of one (IFMs are written and read,
        weights read).
    nominal_vdd_v, vdd_v : float
        Supply voltage at nominal and at the chosen setting.
    nominal : DdrTiming
        Nominal timing.
    timings : mapping
        ``{(layer, kind): DdrTiming}`` at the chosen setting (tensors missing use ``nominal``).
    row_bytes : int
        Row size.
    measured_current_a : mapping, optional
        ``{"nominal": A, "chosen": A}``: the supply's measured current at each setting.
    params : Ddr3PowerParams
        IDD currents of the DIMM.

    Returns
    -------
    dict
        ``stream`` (both settings), ``energy_j`` (model and, if given, measured; both settings),
        ``energy_saving`` fractions, ``latency`` (stream time and closed-page access latency
        reductions).
    """
    def tensors(chosen: bool) -> list[Tensor]:
        return [Tensor(f"{layer}.{kind}", int(n), kind == "ifm", timings.get((layer, kind), nominal) if chosen
                       else nominal) for (layer, kind), n in sizes.items()]

    s_nom = stream_of(tensors(False), row_bytes)
    s_new = stream_of(tensors(True), row_bytes)
    e_nom = _energy_j(s_nom, nominal_vdd_v, params)
    e_new = _energy_j(s_new, vdd_v, params)
    out: dict[str, Any] = {
        "bytes_per_inference": int(sum(sizes.values())),
        "stream": {"nominal": s_nom.to_dict(), "chosen": s_new.to_dict()},
        "vdd_v": {"nominal": nominal_vdd_v, "chosen": vdd_v},
        "energy_j": {"model": {"nominal": e_nom, "chosen": e_new}},
        "energy_saving": {"model": 1.0 - e_new / e_nom if e_nom > 0 else 0.0},
        "power_params": asdict(params),
    }
    if measured_current_a is not None:
        m_nom = measured_current_a["nominal"] * nominal_vdd_v * s_nom.duration_ns * 1e-9
        m_new = measured_current_a["chosen"] * vdd_v * s_new.duration_ns * 1e-9
        out["energy_j"]["measured"] = {"nominal": m_nom, "chosen": m_new}
        out["energy_saving"]["measured"] = 1.0 - m_new / m_nom if m_nom > 0 else 0.0
        out["measured_current_a"] = dict(measured_current_a)
    worst = min(timings.values(), key=latency_ns, default=nominal)
    out["latency"] = {
        "stream_ns": {"nominal": s_nom.duration_ns, "chosen": s_new.duration_ns},
        "stream_reduction": 1.0 - s_new.duration_ns / s_nom.duration_ns if s_nom.duration_ns else 0.0,
        "closed_page_access_ns": {"nominal": latency_ns(nominal), "chosen_best": latency_ns(worst)},
        "closed_page_reduction": 1.0 - latency_ns(worst) / latency_ns(nominal),
    }
    return out

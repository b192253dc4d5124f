"""DDR3 timing in nanoseconds and in tester clock cycles.

The tester issues commands on DRAM clock edges, so a timing asked for in
nanoseconds becomes a whole number of cycles, rounded up (never shorter than
asked), and the value the DRAM really sees is the *effective* one:
``cycles * tck_ns``.  At the ML605's tCK = 2.5 ns, the DDR3-1600 datasheet tRCD of
13.75 ns becomes 6 cycles = 15 ns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "REFRESH_COMMANDS_PER_WINDOW",
    "NOMINAL_REFRESH_WINDOW_MS",
    "ML605_TCK_NS",
    "TimingError",
    "ns_to_cycles",
    "Ddr3Params",
    "AccessTiming",
    "TimingCycles",
    "NOMINAL_TIMING",
    "NOMINAL_TRCD_NS",
    "NOMINAL_TRP_NS",
    "NOMINAL_TRAS_NS",
]

ML605_TCK_NS = 2.5
_EPS = 1e-9


class TimingError(ValueError):
    """A timing value is not usable (non-positive, not finite, or too long)."""


def ns_to_cycles(value_ns: float, tck_ns: float, *, name: str = "time", minimum: int = 1) -> int:
    """Convert nanoseconds to clock cycles, rounding up.

    Parameters
    ----------
    value_ns : float
        Duration in nanoseconds.
    tck_ns : float
        Clock period in nanoseconds.
    name : str
        Name used in error messages (e.g. ``"trcd_ns"``).
    minimum : int
        Smallest number of cycles returned.

    Returns
    -------
    int
        ``ceil(value_ns / tck_ns)``, at least ``minimum``; values within 1e-9 of a
        whole cycle count are not rounded up by floating-point noise.
    """
    if not math.isfinite(value_ns) or value_ns < 0:
        raise TimingError(f"{name} must be a finite, non-negative number of ns, got {value_ns!r}")
    if not math.isfinite(tck_ns) or tck_ns <= 0:
        raise TimingError(f"tck_ns must be positive, got {tck_ns!r}")
    return max(minimum, math.ceil(value_ns / tck_ns - _EPS))


@dataclass(frozen=True)
class Ddr3Params:
    """DDR3 constraints the program builders respect besides tRCD/tRP/tRAS (ns unless noted).

    Defaults are JEDEC DDR3 values; at tCK = 2.5 ns they give tCCD 4, tRTP 4,
    tWR 6 cycles, CWL 5.
    """

    tccd_cycles: int = 4
    trtp_ns: float = 7.5
    trtp_min_cycles: int = 4
    twr_ns: float = 15.0
    cwl_cycles: int = 5
    burst_cycles: int = 4
    trfc_ns: float = 110.0
    bus_turnaround_cycles: int = 5

    def trtp_cycles(self, tck_ns: float) -> int:
        """Read-to-precharge delay in cycles."""
        return max(self.trtp_min_cycles, ns_to_cycles(self.trtp_ns, tck_ns, name="trtp_ns"))

    def write_recovery_cycles(self, tck_ns: float) -> int:
        """Cycles from a WR command to a PRE of its bank: CWL + burst + tWR."""
        return self.cwl_cycles + self.burst_cycles + ns_to_cycles(self.twr_ns, tck_ns, name="twr_ns")


@dataclass(frozen=True)
class AccessTiming:
    """The three timings a characterization changes, in nanoseconds.

    Defaults are the DDR3-1600 datasheet values (13.75 / 13.75 / 35 ns).
    """

    trcd_ns: float = 13.75  # NOMINAL_TRCD_NS
    trp_ns: float = 13.75  # NOMINAL_TRP_NS
    tras_ns: float = 35.0  # NOMINAL_TRAS_NS

    def __post_init__(self) -> None:
        for name in ("trcd_ns", "trp_ns", "tras_ns"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= 10_000:
                raise TimingError(f"{name} must be in (0, 10000] ns, got {value!r}")

    def cycles(self, tck_ns: float) -> "TimingCycles":
        """Round each timing up to whole cycles of ``tck_ns``."""
        return TimingCycles(
            trcd=ns_to_cycles(self.trcd_ns, tck_ns, name="trcd_ns"),
            trp=ns_to_cycles(self.trp_ns, tck_ns, name="trp_ns"),
            tras=ns_to_cycles(self.tras_ns, tck_ns, name="tras_ns"),
            tck_ns=tck_ns,
        )


NOMINAL_TIMING = AccessTiming()
#: The DDR3-1600 datasheet timings (ns): the one source of the nominal tRCD / tRP / tRAS.
NOMINAL_TRCD_NS = NOMINAL_TIMING.trcd_ns
NOMINAL_TRP_NS = NOMINAL_TIMING.trp_ns
NOMINAL_TRAS_NS = NOMINAL_TIMING.tras_ns

#: REF commands that refresh every row once (DDR3: 8192 per refresh window).
REFRESH_COMMANDS_PER_WINDOW = 8192
#: The DDR3 refresh window (tREFW) at normal temperature, in ms: every row refreshed every 64 ms.
NOMINAL_REFRESH_WINDOW_MS = 64.0


@dataclass(frozen=True)
class TimingCycles:
    """Timings in tester cycles, with the effective nanoseconds the DRAM sees."""

    trcd: int
    trp: int
    tras: int
    tck_ns: float

    @property
    def trcd_ns(self) -> float:
        """Effective tRCD in ns."""
        return self.trcd * self.tck_ns

    @property
    def trp_ns(self) -> float:
        """Effective tRP in ns."""
        return self.trp * self.tck_ns

    @property
    def tras_ns(self) -> float:
        """Effective tRAS in ns."""
        return self.tras * self.tck_ns

    def effective(self) -> AccessTiming:
        """The effective timing as an :class:`AccessTiming`."""
        return AccessTiming(self.trcd_ns, self.trp_ns, self.tras_ns)

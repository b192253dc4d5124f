"""DDR3 supply current and energy from command counts (IDD method).

The model follows Micron TN-41-01 ("Calculating Memory System Power for DDR3")
and DRAMPower: every datasheet IDD current is the current drawn in one
well-defined state, and the energy of a command is the charge it draws *above*
the background it displaces.  For one chip at the datasheet voltage
``vdd_ref_v`` (currents in A, times in s, ``T = cycles * tck``)::

    E_bg   = VDD * T * (f_act * IDD3N + (1 - f_act) * IDD2N)
    E_act  = VDD * N_act * (IDD0 * tRC - IDD3N * tRAS - IDD2N * (tRC - tRAS))
    E_rd   = VDD * N_rd  * (IDD4R - IDD3N) * tBURST
    E_wr   = VDD * N_wr  * (IDD4W - IDD3N) * tBURST
    E_ref  = VDD * N_ref * (IDD5B - IDD3N) * tRFC
    E_chip = E_bg + E_act + E_rd + E_wr + E_ref

where ``N_act`` counts ACT/PRE pairs, ``tBURST = burst_length / 2 * tCK`` (the
data burst of one READ/WRITE, 4 tCK for BL8) and ``f_act`` is the fraction of
the interval with at least one bank open (IDD3N vs IDD2N background).  The rank
energy is ``chips * E_chip``.

**Voltage scaling.**  At a supply voltage ``VDD`` other than ``vdd_ref_v`` every
current is scaled linearly, ``IDDx(VDD) = IDDx * VDD / vdd_ref_v`` (the array
and periphery behave roughly like a resistive load over the small range a
characterisation sweep covers), so power and energy scale with ``VDD**2``.
The average current returned is ``E / (VDD * T)``.

Not modelled: power-down and self-refresh states (IDD2P, IDD3P, IDD6), I/O and
on-die-termination power (these are drawn from VDDQ and depend on the board),
and the frequency dependence of IDD values; the datasheet currents are for the
speed bin they were specified at, so use the tester's real ``tck_ns`` to
convert cycles to time and read the result as an estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Ddr3PowerParams", "DDR3L_1600_X8_4GB", "IntervalPower", "interval_power"]


@dataclass(frozen=True)
class Ddr3PowerParams:
    """Datasheet IDD currents and timings of one DDR3 rank.

    The defaults are *typical magnitudes* for a DDR3L-1600 (tCK = 1.25 ns) x8
    4 Gb device as they appear in the IDD tables of current vendor datasheets
    (e.g. Micron MT41K512M8, Samsung/SK hynix 4 Gb DDR3L), rounded; they are not
    any one vendor's guaranteed maximum.  Replace them with the numbers of the
    part under test for absolute results; relative results (V**2 scaling,
    activity) do not depend much on them.

    Parameters
    ----------
    idd0_ma : float
        One-bank ACT-PRE current at tRC, per chip, in mA.
    idd2n_ma : float
        Precharge standby current (all banks closed), per chip, in mA.
    idd3n_ma : float
        Active standby current (a bank open), per chip, in mA.
    idd4r_ma : float
        Burst read current, per chip, in mA.
    idd4w_ma : float
        Burst write current, per chip, in mA.
    idd5b_ma : float
        Burst refresh current (a REF every tRFC), per chip, in mA.
    vdd_ref_v : float
        Supply voltage the currents are specified at, in V (1.35 for DDR3L).
    chips : int
        Chips in the rank (8 for a x64 rank of x8 parts).
    tck_ns : float
        Clock period in ns used to convert cycle counts to time.
    trc_ns, tras_ns, trfc_ns : float
        Row cycle, row active and refresh cycle times in ns (tRFC = 260 ns for 4 Gb).
    burst_length : int
        Burst length of one READ/WRITE (8 for DDR3).
    """

    idd0_ma: float = 55.0
    idd2n_ma: float = 25.0
    idd3n_ma: float = 35.0
    idd4r_ma: float = 135.0
    idd4w_ma: float = 135.0
    idd5b_ma: float = 200.0
    vdd_ref_v: float = 1.35
    chips: int = 8
    tck_ns: float = 1.25
    trc_ns: float = 48.75
    tras_ns: float = 35.0
    trfc_ns: float = 260.0
    burst_length: int = 8

    def __post_init__(self) -> None:
        for name in ("idd0_ma", "idd2n_ma", "idd3n_ma", "idd4r_ma", "idd4w_ma", "idd5b_ma"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite, non-negative current in mA, got {value!r}")
        for name in ("vdd_ref_v", "tck_ns", "trc_ns", "tras_ns", "trfc_ns"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be finite and positive, got {value!r}")
        if self.tras_ns > self.trc_ns:
            raise ValueError(f"tras_ns ({self.tras_ns}) must not exceed trc_ns ({self.trc_ns})")
        if int(self.chips) != self.chips or self.chips < 1:
            raise ValueError(f"chips must be a positive integer, got {self.chips!r}")
        if int(self.burst_length) != self.burst_length or self.burst_length < 1:
            raise ValueError(f"burst_length must be a positive integer, got {self.burst_length!r}")

    @property
    def act_pre_charge_c(self) -> float:
        """Charge of one ACT/PRE pair above background, per chip, at ``vdd_ref_v``, in C."""
        trc_s, tras_s = self.trc_ns * 1e-9, self.tras_ns * 1e-9
        return 1e-3 * (self.idd0_ma * trc_s - self.idd3n_ma * tras_s - self.idd2n_ma * (trc_s - tras_s))

    @property
    def read_charge_c(self) -> float:
        """Charge of one READ burst above background, per chip, at ``vdd_ref_v``, in C."""
        return 1e-3 * (self.idd4r_ma - self.idd3n_ma) * self._burst_s

    @property
    def write_charge_c(self) -> float:
        """Charge of one WRITE burst above background, per chip, at ``vdd_ref_v``, in C."""
        return 1e-3 * (self.idd4w_ma - self.idd3n_ma) * self._burst_s

    @property
    def refresh_charge_c(self) -> float:
        """Charge of one REF above background, per chip, at ``vdd_ref_v``, in C."""
        return 1e-3 * (self.idd5b_ma - self.idd3n_ma) * self.trfc_ns * 1e-9

    @property
    def _burst_s(self) -> float:
        return self.burst_length / 2 * self.tck_ns * 1e-9


#: The default parameter set (typical DDR3L-1600 x8 4 Gb magnitudes, 8 chips).
DDR3L_1600_X8_4GB = Ddr3PowerParams()


class IntervalPower(NamedTuple):
    """Average supply current and energy of a rank over one interval."""

    current_a: float
    """Average VDD current of the rank, in A."""
    energy_j: float
    """Energy drawn from VDD over the interval, in J."""
    duration_s: float
    """Length of the interval, in s."""

    @property
    def power_w(self) -> float:
        """Average power, in W."""
        return self.energy_j / self.duration_s


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer count, got {value!r}")
    return int(value)


def interval_power(
    params: Ddr3PowerParams,
    *,
    cycles: int,
    vdd_v: float,
    activates: int = 0,
    reads: int = 0,
    writes: int = 0,
    refreshes: int = 0,
    active_fraction: float | None = None,
) -> IntervalPower:
    """Average current and energy of a rank for the commands of one interval.

    Parameters
    ----------
    params : Ddr3PowerParams
        Datasheet currents and timings.
    cycles : int
        Length of the interval in clock cycles of ``params.tck_ns`` (positive).
    vdd_v : float
        Supply voltage in V (positive); currents scale with ``vdd_v / params.vdd_ref_v``.
    activates : int
        Number of ACT/PRE pairs.
    reads, writes : int
        Number of READ and WRITE bursts.
    refreshes : int
        Number of REF commands.
    active_fraction : float, optional
        Fraction of the interval, in [0, 1], with at least one bank open.  When
        omitted it is estimated as ``activates * tRAS / T`` clipped to 1 (each
        activation keeps a bank open for tRAS), which is exact for the
        ACT-RD/WR-PRE sequences of a characterisation test with closed-page policy.

    Returns
    -------
    IntervalPower
        ``current_a``, ``energy_j`` and ``duration_s`` (see the module docstring
        for the formula).

    Raises
    ------
    ValueError
        A count is negative or not an integer, ``cycles`` or ``vdd_v`` is not
        positive, or ``active_fraction`` is outside [0, 1].
    """
    cycles = _count("cycles", cycles)
    if cycles == 0:
        raise ValueError("cycles must be positive")
    activates = _count("activates", activates)
    reads = _count("reads", reads)
    writes = _count("writes", writes)
    refreshes = _count("refreshes", refreshes)
    if not math.isfinite(vdd_v) or vdd_v <= 0:
        raise ValueError(f"vdd_v must be a finite, positive voltage, got {vdd_v!r}")

    duration_s = cycles * params.tck_ns * 1e-9
    if active_fraction is None:
        active_fraction = min(1.0, activates * params.tras_ns * 1e-9 / duration_s)
    elif not 0.0 <= active_fraction <= 1.0:
        raise ValueError(f"active_fraction must be within [0, 1], got {active_fraction!r}")

    background_c = 1e-3 * duration_s * (
        active_fraction * params.idd3n_ma + (1.0 - active_fraction) * params.idd2n_ma
    )
    charge_ref_c = params.chips * (
        background_c
        + activates * params.act_pre_charge_c
        + reads * params.read_charge_c
        + writes * params.write_charge_c
        + refreshes * params.refresh_charge_c
    )
    charge_c = charge_ref_c * (vdd_v / params.vdd_ref_v)
    return IntervalPower(current_a=charge_c / duration_s, energy_j=charge_c * vdd_v, duration_s=duration_s)

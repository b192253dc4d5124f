"""The emulated bench's entry points: the ``emu://`` and ``replay://`` schemes of :mod:`softmc_host.schemes`.

``setup.cfg`` registers both functions under both schemes::

    [options.entry_points]
    eden_dram_toolkit.testers =
        emu = emubench.plugin:open_tester
        replay = emubench.plugin:open_tester
    eden_dram_toolkit.benches =
        emu = emubench.plugin:open_bench
        replay = emubench.plugin:open_bench

so that ``TesterSession.open("emu://B?seed=1")`` and ``Bench.open("replay://MAP.h5")`` reach
this package without the host driver importing it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import Any

from emubench import fake_riffa
from emubench.bench import BenchSpec, BenchSpecError, nominal_vdd_v, parse_emu_url
from emubench.process import EmulatorProcess, spawn
from firmware_bridge.riffa import register_library
from softmc_host.instruments import SupplyLimits, ThermalLimits

__all__ = ["open_tester", "open_bench", "EmulatedBenchPlan", "RiffaBench", "SUPPLY_MARGIN_V", "THERMAL_LIMITS"]

# ``lib=emu`` in this process even where the package's entry points are not installed.
register_library(fake_riffa.PROVIDER_NAME, fake_riffa.library)

#: Default supply limits of an emulated bench around its nominal voltage, in V: (below, above).
SUPPLY_MARGIN_V = (0.40, 0.05)
#: Default thermal limits of an emulated bench.
THERMAL_LIMITS = ThermalLimits(min_c=0.0, max_c=95.0, band_c=0.5)


def _spec(address: str) -> BenchSpec:
    """Parse an address; only :class:`BenchSpecError` (one line) comes out."""
    try:
        return parse_emu_url(address)
    except BenchSpecError:
        raise
    except (ValueError, TypeError) as exc:  # e.g. urllib's "Invalid IPv6 URL" for emu://[B
        raise BenchSpecError(f"malformed emulated-bench address {address!r}: {exc}") from None


class RiffaBench:
    """An emulated bench reached as a stock SoftMC board: ``riffa://`` through the fake libriffa.

    Its :attr:`url` is the ``riffa://ID/0?lib=emu&...`` of a fake board forwarding to the
    bench process's firmware; the supply and thermal controller are the process's.
    """

    def __init__(self, process: EmulatorProcess) -> None:
        self.process = process
        self.spec = process.spec
        self.supply_resource = process.supply_resource
        self.thermal_resource = process.thermal_resource
        self.fpga_id, self.url = fake_riffa.attach(process.url)

    def describe(self) -> dict[str, Any]:
        """The process's description, with ``link: riffa``."""
        return {**self.process.describe(), "link": "riffa"}

    def close(self) -> None:
        """Detach the fake board and stop the bench process."""
        try:
            fake_riffa.detach(self.fpga_id)
        finally:
            self.process.close()


def _start(spec: BenchSpec) -> EmulatorProcess | RiffaBench:
    process = spawn(spec)
    if spec.link != "riffa":
        return process
    try:
        return RiffaBench(process)
    except BaseException:
        process.close()
        raise


def open_tester(url: str) -> EmulatorProcess | RiffaBench:
    """Tester-scheme opener: start the emulated bench of ``url`` and return its process.

    The process's :attr:`~emubench.process.EmulatorProcess.url` is the tester's link URL;
    closing it stops the bench.

    Raises
    ------
    BenchSpecError
        For a bad address.
    EmulatorError
        If the process does not start.
    """
    return _start(_spec(url))


@dataclass(frozen=True)
class EmulatedBenchPlan:
    """A checked ``emu://`` or ``replay://`` address (what :func:`open_bench` returns); nothing runs yet.

    Attributes
    ----------
    spec : BenchSpec
        What to emulate.
    supply_limits : SupplyLimits
        Default supply limits: the bench's nominal voltage, 0.40 V below to 0.05 V above,
        0.05 V steps at most, 50 V/s, 2 A.
    thermal_limits : ThermalLimits
        Default thermal limits: 0..95 C, band 0.5 C.
    """

    spec: BenchSpec
    supply_limits: SupplyLimits
    thermal_limits: ThermalLimits

    def start(self) -> EmulatorProcess | RiffaBench:
        """Start the bench process (:func:`~emubench.process.spawn`); with ``link=riffa``, behind a fake board."""
        return _start(self.spec)


def open_bench(address: str) -> EmulatedBenchPlan:
    """Bench-scheme opener: check an ``emu://`` or ``replay://`` address and plan its bench.

    A replayed map is checked in full here (:func:`emubench.replay.check_replay_map`), so a
    malformed or damaged map is refused before any process starts, and its recorded nominal
    voltage sets the supply's limits.

    Raises
    ------
    BenchSpecError
        A one-line message for a bad address, an unreadable or unreplayable map, or a recorded
        nominal voltage that is not a number in 0.45..100 V.
    """
    spec = _spec(address)
    ber_map = None
    if spec.replay is not None:
        from emubench.replay import check_replay_map
        from profiler.storage import MapError

        try:
            ber_map = check_replay_map(spec.replay)
        except MapError as exc:
            raise BenchSpecError(str(exc)) from None
    nominal_v = nominal_vdd_v(spec, ber_map)
    if not (math.isfinite(nominal_v) and 0.45 <= nominal_v <= 100.0):  # a profile's own value, checked as well
        raise BenchSpecError(f"emulated bench {address!r}: nominal_v {nominal_v!r} V outside 0.45..100 V")
    below_v, above_v = SUPPLY_MARGIN_V
    try:
        supply = SupplyLimits(
            nominal_v=nominal_v,
            min_v=round(nominal_v - below_v, 3),
            max_v=round(nominal_v + above_v, 3),
            max_step_v=0.05,
            max_slew_v_per_s=50.0,
            current_limit_a=2.0,
        )
    except (ValueError, TypeError) as exc:
        raise BenchSpecError(f"emulated bench {address!r}: {exc}") from None
    return EmulatedBenchPlan(spec=spec, supply_limits=supply, thermal_limits=THERMAL_LIMITS)

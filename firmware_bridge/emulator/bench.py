"""The emulated bench: tester firmware, a DIMM with error physics, a supply and a thermal controller.

The DIMM sees the supply's output voltage and the thermal controller's
temperature; the supply's current reading follows the DIMM's activity (the
last program's commands, as if it ran in a loop, through the IDD model of
:mod:`softmc_host.ddr3_power`) and its voltage.

Address of an emulated bench (what ``emu://`` URLs and the emulator CLI take)::

    emu://<profile>?seed=N&temp_c=T&tck_ns=X

``profile`` is a name from :data:`firmware_bridge.emulator.profiles.PROFILES`
(default ``B``); ``seed`` the DIMM's identity (default 0); ``temp_c`` the
starting temperature (default: the profile's reference, 20 C); ``tck_ns`` the
tester clock (default: the profile's, 2.5 ns for SoftMC on the ML605).
"""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
from dataclasses import dataclass

from firmware_bridge.emulator.dimm import ML605_GEOMETRY, EmulatedDimm, Geometry
from firmware_bridge.emulator.firmware import TesterFirmware
from firmware_bridge.emulator.instruments import EmulatedSupply, EmulatedThermal
from firmware_bridge.emulator.physics import PhysicsDimm
from firmware_bridge.emulator.profiles import PROFILES, ProfileError, VendorProfile, get_profile
from softmc_host.ddr3_power import DDR3L_1600_X8_4GB, interval_power

__all__ = ["BenchSpec", "BenchSpecError", "parse_emu_url", "is_emulated_address", "EmulatedBench", "DEFAULT_PROFILE"]

DEFAULT_PROFILE = "B"


class BenchSpecError(ValueError):
    """An ``emu://`` address or emulator option is not valid."""


@dataclass(frozen=True)
class BenchSpec:
    """What emulated bench to build."""

    profile: str = DEFAULT_PROFILE
    seed: int = 0
    temp_c: float | None = None
    tck_ns: float | None = None
    replay: str | None = None  # path of a recorded BER map: a replayed DIMM instead of a profile

    def resolved_profile(self) -> VendorProfile:
        """The vendor profile named by :attr:`profile` (the fault-free one for a replay)."""
        if self.replay is not None:
            return get_profile("ideal")
        try:
            return get_profile(self.profile)
        except ProfileError as exc:
            raise BenchSpecError(str(exc)) from None

    @property
    def effective_temp_c(self) -> float:
        """Starting temperature in C."""
        return self.resolved_profile().temp_ref_c if self.temp_c is None else self.temp_c

    @property
    def effective_tck_ns(self) -> float:
        """Tester clock in ns."""
        return self.resolved_profile().tck_ns if self.tck_ns is None else self.tck_ns

    def url(self) -> str:
        """The canonical ``emu://`` (or ``replay://``) address of this bench."""
        query: dict[str, object] = {"seed": self.seed}
        if self.temp_c is not None:
            query["temp_c"] = self.temp_c
        if self.tck_ns is not None:
            query["tck_ns"] = self.tck_ns
        if self.replay is not None:
            return f"replay://{self.replay}?{urllib.parse.urlencode(query)}"
        return f"emu://{self.profile}?{urllib.parse.urlencode(query)}"


def _number(key: str, value: str, lo: float, hi: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise BenchSpecError(f"emu:// option {key}={value!r} is not a number") from None
    if not math.isfinite(number) or not lo <= number <= hi:
        raise BenchSpecError(f"emu:// option {key}={value} outside {lo:g}..{hi:g}")
    return number


def is_emulated_address(url: str) -> bool:
    """True for the addresses an emulated bench process serves (``emu://``, ``replay://``)."""
    return isinstance(url, str) and url.startswith(("emu://", "replay://"))


def parse_emu_url(url: str) -> BenchSpec:
    """Parse ``emu://<profile>?seed=N&temp_c=T&tck_ns=X`` or ``replay://PATH.h5?...`` into a :class:`BenchSpec`.

    Raises
    ------
    BenchSpecError
        With a one-line message naming the problem (scheme, profile, file, option or value).
    """
    spec: dict[str, object] = {}
    if url.startswith("replay://"):
        path, _, query_text = url[len("replay://") :].partition("?")
        if not path or not os.path.isfile(path):
            raise BenchSpecError(f"replay map {path!r} does not exist")
        spec["replay"] = os.path.abspath(path)
        spec["profile"] = "replay"
    else:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "emu":
            raise BenchSpecError(f"not an emulated-bench address (emu://PROFILE?seed=N or replay://MAP.h5): {url!r}")
        profile = (parts.netloc + parts.path).strip("/") or DEFAULT_PROFILE
        try:
            get_profile(profile)
        except ProfileError as exc:
            raise BenchSpecError(str(exc)) from None
        spec["profile"] = profile
        query_text = parts.query
    try:
        query = urllib.parse.parse_qs(query_text, strict_parsing=bool(query_text), keep_blank_values=False)
    except ValueError:
        raise BenchSpecError(f"malformed emu:// query in {url!r} (expected key=value&...)") from None
    for key, values in query.items():
        value = values[-1]
        if key == "seed":
            if not value.isdigit():
                raise BenchSpecError(f"emu:// option seed={value!r} is not a non-negative integer")
            spec["seed"] = int(value)
        elif key == "temp_c":
            spec["temp_c"] = _number(key, value, 0.0, 110.0)
        elif key == "tck_ns":
            spec["tck_ns"] = _number(key, value, 0.25, 100.0)
        else:
            raise BenchSpecError(f"unknown emu:// option {key!r} (seed, temp_c, tck_ns)")
    return BenchSpec(**spec)  # type: ignore[arg-type]


class EmulatedBench:
    """Everything an emulated bench process serves, wired together.

    Parameters
    ----------
    spec : BenchSpec
        Profile, seed, temperature and clock.
    geometry : Geometry
        DIMM geometry (the ML605's by default).
    thermal_tau_s : float
        Time constant of the emulated DIMM heater, in s.
    """

    def __init__(self, spec: BenchSpec, geometry: Geometry = ML605_GEOMETRY, thermal_tau_s: float = 0.2) -> None:
        profile = spec.resolved_profile()
        self.spec = spec
        self.profile = profile
        nominal_v = profile.vdd_nominal_v
        ber_map = None
        tck_ns = spec.effective_tck_ns
        if spec.replay is not None:
            from profiler.replay import ReplayError
            from profiler.storage import BerMap, MapError

            try:
                ber_map = BerMap(spec.replay)
            except MapError as exc:
                raise BenchSpecError(str(exc)) from None
            nominal_v = float(ber_map.meta.get("bench", {}).get("supply", {}).get("nominal_v", nominal_v))
            if spec.tck_ns is None:
                tck_ns = float(ber_map.geometry.get("tck_ns", tck_ns))
        self.supply = EmulatedSupply(nominal_v=nominal_v, serial=f"PSU-{spec.seed:04d}", current_limit_a=2.0)
        self.thermal = EmulatedThermal(
            initial_c=spec.effective_temp_c, seed=spec.seed, tau_s=thermal_tau_s, serial=f"TEC-{spec.seed:04d}"
        )
        if ber_map is not None:
            from profiler.replay import ReplayDimm

            try:
                self.dimm: EmulatedDimm = ReplayDimm(ber_map, self.environment, tck_ns, seed=spec.seed)
            except ReplayError as exc:
                raise BenchSpecError(str(exc)) from None
        else:
            self.dimm = PhysicsDimm(profile, geometry, seed=spec.seed, environment=self.environment, tck_ns=tck_ns)
        self.firmware = TesterFirmware(self.dimm, tck_ns=tck_ns)
        self.power_params = dataclasses.replace(DDR3L_1600_X8_4GB, tck_ns=tck_ns)
        self.supply.load_current_fn = self.load_current_a

    def environment(self) -> tuple[float, float]:
        """``(vdd_v, temp_c)`` at the DIMM now."""
        return self.supply.output_voltage_v(), self.thermal.temperature_c()

    def load_current_a(self, vdd_v: float) -> float:
        """Supply current of the DIMM running its last program in a loop (background if none ran)."""
        if vdd_v <= 0:
            return 0.0
        trace = self.firmware.last_trace
        cycles = max(1, trace.cycles)
        return interval_power(
            self.power_params,
            cycles=cycles,
            vdd_v=vdd_v,
            activates=trace.activates,
            reads=trace.reads,
            writes=trace.writes,
            refreshes=trace.refreshes,
        ).current_a


def known_profiles() -> str:
    """Comma-separated profile names, for help texts."""
    return ", ".join(PROFILES)

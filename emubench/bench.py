"""The emulated bench: tester firmware, a DIMM with error physics, a supply and a thermal controller.

The DIMM sees the supply's output voltage and the thermal controller's
temperature; the supply's current reading follows the DIMM's activity (the
last program's commands, as if it ran in a loop, through the IDD model of
:mod:`softmc_host.ddr3_power`) and its voltage.

Address of an emulated bench (what ``emu://`` URLs and the emulator CLI take)::

    emu://<profile>?seed=N&temp_c=T&tck_ns=X&link=serial|riffa

``profile`` is a name from :data:`emubench.profiles.PROFILES`
(default ``B``); ``seed`` the DIMM's identity (default 0); ``temp_c`` the
starting temperature (default: the profile's reference, 20 C); ``tck_ns`` the
tester clock (default: the profile's, 2.5 ns for SoftMC on the ML605); ``link`` how the host
reaches the tester: ``serial`` (default, the framed link over ``socket://``) or ``riffa`` (as a
stock SoftMC board, ``riffa://`` through the fake libriffa of :mod:`emubench.fake_riffa`).  Values are
ASCII decimal numbers (``seed`` an integer in 0..2**64-1); anything else, and a
malformed address (``emu://[B``), is a :class:`BenchSpecError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from emubench.dimm import ML605_GEOMETRY, EmulatedDimm, Geometry
from emubench.firmware import TesterFirmware
from emubench.instruments import EmulatedSupply, EmulatedThermal
from emubench.physics import PhysicsDimm
from emubench.profiles import PROFILES, ProfileError, VendorProfile, get_profile
from softmc_host.ddr3_power import DDR3L_1600_X8_4GB, interval_power

if TYPE_CHECKING:
    from profiler.storage import BerMap

__all__ = [
    "BenchSpec",
    "BenchSpecError",
    "parse_emu_url",
    "is_emulated_address",
    "nominal_vdd_v",
    "EmulatedBench",
    "DEFAULT_PROFILE",
]

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
    link: str = "serial"  # how the host reaches the tester: "serial" (framed, socket://) or "riffa" (fake libriffa)

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
        if self.link != "serial":
            query["link"] = self.link
        if self.replay is not None:
            return f"replay://{self.replay}?{urllib.parse.urlencode(query)}"
        return f"emu://{self.profile}?{urllib.parse.urlencode(query)}"


#: How a host can reach an emulated tester: the framed serial link, or RIFFA through the fake libriffa.
LINKS = ("serial", "riffa")
#: Largest DIMM seed of an emulated bench (64 bits).
MAX_SEED = (1 << 64) - 1

# ASCII decimal numbers only: float() and int() also take other scripts' digits, "1_0" and blanks,
# and str.isdigit() takes "²", which int() then refuses.
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SEED_RE = re.compile(r"[0-9]{1,20}")


def _short(text: str, limit: int = 60) -> str:
    """``repr(text)``, cut to one readable line."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit - 20]}...{shown[-8:]} ({len(text)} chars)"


def _number(key: str, value: str, lo: float, hi: float) -> float:
    if len(value) > 40 or not _FLOAT_RE.fullmatch(value):
        raise BenchSpecError(f"emu:// option {key}={_short(value)} is not a decimal number")
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        raise BenchSpecError(f"emu:// option {key}={value} outside {lo:g}..{hi:g}")  # value: <= 40 ASCII chars
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
        Nothing else escapes, whatever the string.
    """
    if not isinstance(url, str):
        raise BenchSpecError(f"an emulated-bench address is a string, got {type(url).__name__}")
    spec: dict[str, object] = {}
    if url.startswith("replay://"):
        path, _, query_text = url[len("replay://") :].partition("?")
        try:
            exists = bool(path) and os.path.isfile(path)
        except (OSError, ValueError):  # a path the OS cannot even look up
            exists = False
        if not exists:
            raise BenchSpecError(f"replay map {_short(path)} does not exist")
        spec["replay"] = os.path.abspath(path)
        spec["profile"] = "replay"
    else:
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError as exc:  # "emu://[B": an unbalanced IPv6 bracket, and the like
            raise BenchSpecError(f"malformed emulated-bench address {_short(url)}: {exc}") from None
        if parts.scheme != "emu":
            raise BenchSpecError(
                f"not an emulated-bench address (emu://PROFILE?seed=N or replay://MAP.h5): {_short(url)}"
            )
        profile = (parts.netloc + parts.path).strip("/") or DEFAULT_PROFILE
        try:
            get_profile(profile)
        except ProfileError:
            raise BenchSpecError(f"unknown DIMM profile {_short(profile)}; known: {known_profiles()}") from None
        spec["profile"] = profile
        query_text = parts.query
    try:
        query = urllib.parse.parse_qs(query_text, strict_parsing=bool(query_text), keep_blank_values=False)
    except ValueError:
        raise BenchSpecError(f"malformed emu:// query in {_short(url)} (expected key=value&...)") from None
    for key, values in query.items():
        value = values[-1]
        if key == "seed":
            if not _SEED_RE.fullmatch(value) or int(value) > MAX_SEED:
                raise BenchSpecError(f"emu:// option seed={_short(value)} is not a non-negative integer (at most 2**64-1)")
            spec["seed"] = int(value)
        elif key == "temp_c":
            spec["temp_c"] = _number(key, value, 0.0, 110.0)
        elif key == "tck_ns":
            spec["tck_ns"] = _number(key, value, 0.25, 100.0)
        elif key == "link":
            if value not in LINKS:
                raise BenchSpecError(f"emu:// option link={_short(value)} is not one of {', '.join(LINKS)}")
            spec["link"] = value
        else:
            raise BenchSpecError(f"unknown emu:// option {_short(key)} (seed, temp_c, tck_ns, link)")
    return BenchSpec(**spec)  # type: ignore[arg-type]


def _recorded_number(path: str, what: str, get: Callable[[], object], default: float, lo: float, hi: float) -> float:
    """A number from a replayed map's metadata (``default`` where it is absent), checked finite and in range."""
    try:
        value = get()
    except (KeyError, TypeError, AttributeError, IndexError):  # absent, or a member of the wrong shape
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        raise BenchSpecError(f"replay map {_short(path)}: {what} must be a number, got {shown[:40]}")
    if isinstance(value, int) and value.bit_length() > 64:
        raise BenchSpecError(f"replay map {_short(path)}: {what} (a {value.bit_length()}-bit integer) outside {lo:g}..{hi:g}")
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        raise BenchSpecError(f"replay map {_short(path)}: {what} {number!r} outside {lo:g}..{hi:g}")
    return number


def nominal_vdd_v(spec: BenchSpec, ber_map: "BerMap | None" = None) -> float:
    """The nominal supply voltage of a bench, in V: its profile's, or the one a replayed map recorded.

    Parameters
    ----------
    spec : BenchSpec
        The bench.
    ber_map : BerMap, optional
        The replayed map, already open (opened from ``spec.replay`` when not given).

    Raises
    ------
    BenchSpecError
        For an unreadable map, or a recorded ``bench.supply.nominal_v`` that is not a number in
        0.45..100 V (a map without one replays at the profile's nominal).
    """
    nominal_v = spec.resolved_profile().vdd_nominal_v
    if spec.replay is None:
        return nominal_v
    if ber_map is None:
        from profiler.storage import BerMap, MapError

        try:
            ber_map = BerMap(spec.replay)
        except MapError as exc:
            raise BenchSpecError(str(exc)) from None
    recorded = ber_map
    return _recorded_number(spec.replay, "bench.supply.nominal_v",
                            lambda: recorded.meta["bench"]["supply"]["nominal_v"], nominal_v, 0.45, 100.0)


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
        ber_map = None
        tck_ns = spec.effective_tck_ns
        if spec.replay is not None:
            from profiler.storage import BerMap, MapError

            try:
                ber_map = BerMap(spec.replay)
            except MapError as exc:
                raise BenchSpecError(str(exc)) from None
            if spec.tck_ns is None:
                tck_ns = _recorded_number(spec.replay, "geometry.tck_ns", lambda: ber_map.geometry["tck_ns"],
                                          tck_ns, 0.25, 100.0)
        nominal_v = nominal_vdd_v(spec, ber_map)
        self.supply = EmulatedSupply(nominal_v=nominal_v, serial=f"PSU-{spec.seed:04d}", current_limit_a=2.0)
        self.thermal = EmulatedThermal(
            initial_c=spec.effective_temp_c, seed=spec.seed, tau_s=thermal_tau_s, serial=f"TEC-{spec.seed:04d}"
        )
        if ber_map is not None:
            from emubench.replay import ReplayDimm, ReplayError

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

"""A characterization bench: the tester, the DIMM's supply and its thermal controller.

A bench is opened from one of:

- a bench file (TOML, documented in ``docs/bench-file.md``) naming the tester
  URL, the supply's VISA resource and limits, and the thermal controller;
- an address of a registered bench scheme (:mod:`softmc_host.schemes`), such as the
  emulated bench's ``emu://PROFILE?seed=N&temp_c=T`` and ``replay://MAP.h5``: a bench the
  plug-in (:mod:`emubench`) starts in its own process, reached through the real wire
  (pySerial for the tester, pyvisa-py over loopback sockets for the instruments);
- a plain tester URL: a tester with no instruments (VDD and temperature fixed).

Moving from the emulator to hardware changes addresses only: the same bench
file with ``url = "emu://B?seed=3"`` and ``resource = "emu"`` drives the
emulator, with real addresses it drives the lab bench.

On close, and on any exception inside ``with Bench.open(...)``, the supply is
ramped back to its nominal voltage and the tester is reset.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, TextIO

from firmware_bridge.link import LinkError
from softmc_host._compat import add_note
from softmc_host.instruments import (
    BenchSupply,
    InstrumentError,
    SupplyLimits,
    ThermalController,
    ThermalLimits,
    _check_number,
)
from softmc_host.files import read_toml
from softmc_host.schemes import BenchPlan, SchemeError, StartedBench, bench_opener, has_bench_scheme, url_scheme
from softmc_host.session import TesterSession


__all__ = ["Bench", "BenchConfig", "BenchError", "load_bench_file", "bench_config_from_table", "EMULATED_RESOURCE"]

EMULATED_RESOURCE = "emu"
#: Range of ``[tester] timeout_s`` (and :attr:`BenchConfig.tester_timeout_s`), in s: (lowest, excluded?, highest).
TESTER_TIMEOUT_RANGE_S = (0.0, True, 3600.0)


class BenchError(ValueError):
    """A bench file or address is invalid, or the bench could not be opened."""


@dataclass(frozen=True)
class BenchConfig:
    """Everything needed to open a bench (the parsed bench file)."""

    tester_url: str
    tester_timeout_s: float = 5.0
    supply_resource: str | None = None
    supply_limits: SupplyLimits | None = None
    thermal_resource: str | None = None
    thermal_limits: ThermalLimits | None = None
    visa_library: str = "@py"
    source: str = ""
    #: The checked plan of a bench-scheme address (``emu://``), reused when the bench opens.
    plan: BenchPlan | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("tester_url", "visa_library", "source"):
            if not isinstance(getattr(self, name), str):
                raise BenchError(f"bench config: {name} must be a string, got {type(getattr(self, name)).__name__}")
        lo, lo_open, hi = TESTER_TIMEOUT_RANGE_S
        timeout_s = _check_number("tester timeout_s", self.tester_timeout_s, lo=lo, lo_open=lo_open, hi=hi, unit="s",
                                  error=BenchError)
        object.__setattr__(self, "tester_timeout_s", timeout_s)
        for name, kind in (("supply_limits", SupplyLimits), ("thermal_limits", ThermalLimits)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise BenchError(f"bench config: {name} must be a {kind.__name__} or None, got {type(value).__name__}")
        for name in ("supply_resource", "thermal_resource"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise BenchError(f"bench config: {name} must be a string or None, got {type(value).__name__}")


def _is_bench_address(url: object) -> bool:
    """True for an address of a registered bench scheme (``emu://``, ``replay://``, a plug-in's)."""
    scheme = url_scheme(url)
    return scheme is not None and has_bench_scheme(scheme)


class _PlanError(ValueError):
    """A bench-scheme address its plug-in refused (the message is the plug-in's, one line)."""


def _plan(url: str) -> BenchPlan:
    """Check a bench-scheme address through its plug-in; :class:`_PlanError` with one line otherwise."""
    scheme = url_scheme(url)
    try:
        plan = bench_opener(scheme or "")(url)
    except (SchemeError, ValueError, TypeError) as exc:
        raise _PlanError(_one_line(str(exc)) or type(exc).__name__) from None
    except Exception as exc:  # noqa: BLE001 - a plug-in's own failure, still one line
        raise _PlanError(f"bench scheme {scheme}: {type(exc).__name__}: {_one_line(str(exc))}") from None
    for name, kind in (("supply_limits", SupplyLimits), ("thermal_limits", ThermalLimits)):
        value = getattr(plan, name, None)
        if value is not None and not isinstance(value, kind):
            raise _PlanError(f"bench scheme {scheme}: the plan's {name} is not a {kind.__name__}")
    return plan


def _scheme_defaults(url: str) -> BenchConfig:
    """The bench config of ``Bench.open("emu://...")``: the plug-in's limits, its instruments as ``"emu"``."""
    plan = _plan(url)
    supply_limits = getattr(plan, "supply_limits", None)
    thermal_limits = getattr(plan, "thermal_limits", None)
    return BenchConfig(
        tester_url=url,
        supply_resource=EMULATED_RESOURCE if supply_limits is not None else None,
        supply_limits=supply_limits,
        thermal_resource=EMULATED_RESOURCE if thermal_limits is not None else None,
        thermal_limits=thermal_limits,
        source=url,
        plan=plan,
    )


def _section(table: dict[str, Any], name: str, where: str) -> dict[str, Any] | None:
    value = table.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BenchError(f"{where}: [{name}] must be a table")
    return value


def _build(cls: type, values: dict[str, Any], where: str, skip: tuple[str, ...] = ()) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known - set(skip)
    if unknown:
        raise BenchError(f"{where}: unknown key(s) {_names(unknown)} (known: {', '.join(sorted(known))})")
    try:
        return cls(**{k: v for k, v in values.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise BenchError(f"{where}: {_one_line(str(exc))}") from None


def _names(keys: Any) -> str:
    """Key names for a message: sorted, shown as repr where they are not plain words, cut when many."""
    shown = sorted(k if isinstance(k, str) and k.isascii() and k.replace("_", "").isalnum() else repr(k)[:40] for k in keys)
    return ", ".join(shown[:10]) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _string(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    value = table.get(key, default)
    if value is not None and not isinstance(value, str):
        raise BenchError(f"{where}: {key} must be a string, got {type(value).__name__}")
    return value


def load_bench_file(path: str | Path) -> BenchConfig:
    """Read and check a bench file (``docs/bench-file.md``).

    Raises
    ------
    BenchError
        The only error it raises: a one-line message naming the file (and the key) for a
        missing or unreadable file, bad TOML, a missing, unknown or wrongly typed key, a
        number that is not finite or outside its documented range, a limit that does not
        make sense, or a bad ``emu://`` address.
    """
    path = Path(path)
    table = read_toml(path, "bench file", BenchError)
    return bench_config_from_table(table, str(path))


def bench_config_from_table(table: dict[str, Any], where: str = "bench file") -> BenchConfig:
    """Check a parsed bench file (the table ``tomllib`` returns) and build its :class:`BenchConfig`.

    Parameters
    ----------
    table : dict
        The parsed TOML document.
    where : str
        What to name in messages (the file's path).

    Raises
    ------
    BenchError
        As :func:`load_bench_file`.
    """
    if not isinstance(table, dict):
        raise BenchError(f"{where}: a bench file must be a TOML table, got {type(table).__name__}")
    unknown = set(table) - {"tester", "supply", "thermal", "visa_library", "name", "notes"}
    if unknown:
        raise BenchError(f"{where}: unknown section(s) {_names(unknown)} (tester, supply, thermal)")
    for key in ("name", "notes"):
        _string(table, key, where)
    visa_library = _string(table, "visa_library", where, "@py")
    tester = _section(table, "tester", where)
    if tester is None or not isinstance(tester.get("url"), str):
        raise BenchError(f"{where}: [tester] url = \"...\" is required")
    url = tester["url"]
    if set(tester) - {"url", "timeout_s"}:
        raise BenchError(f"{where}: unknown key(s) in [tester]: {_names(set(tester) - {'url', 'timeout_s'})}")
    lo, lo_open, hi = TESTER_TIMEOUT_RANGE_S
    try:
        timeout_s = _check_number("timeout_s", tester.get("timeout_s", 5.0), lo=lo, lo_open=lo_open, hi=hi, unit="s")
    except ValueError as exc:
        raise BenchError(f"{where}: [tester] {exc}") from None
    emulated = _is_bench_address(url)
    try:
        base = _scheme_defaults(url) if emulated else BenchConfig(tester_url=url)
    except ValueError as exc:
        raise BenchError(f"{where}: {_one_line(str(exc))}") from None
    supply = _section(table, "supply", where)
    thermal = _section(table, "thermal", where)
    supply_resource = supply_limits = thermal_resource = thermal_limits = None
    if supply is not None:
        supply_resource = supply.get("resource")
        if not isinstance(supply_resource, str):
            raise BenchError(f"{where}: [supply] resource = \"...\" is required (\"{EMULATED_RESOURCE}\" with emu://)")
        given = {k: v for k, v in supply.items() if k != "resource"}
        if emulated and base.supply_limits is not None:
            given = {**{f.name: getattr(base.supply_limits, f.name) for f in fields(SupplyLimits)}, **given}
        supply_limits = _build(SupplyLimits, given, f"{where} [supply]")
    if thermal is not None:
        thermal_resource = thermal.get("resource")
        if not isinstance(thermal_resource, str):
            raise BenchError(f"{where}: [thermal] resource = \"...\" is required (\"{EMULATED_RESOURCE}\" with emu://)")
        given = {k: v for k, v in thermal.items() if k != "resource"}
        thermal_limits = _build(ThermalLimits, given, f"{where} [thermal]")
    if emulated and supply is None:
        supply_resource, supply_limits = base.supply_resource, base.supply_limits
    if emulated and thermal is None:
        thermal_resource, thermal_limits = base.thermal_resource, base.thermal_limits
    for name, resource in (("supply", supply_resource), ("thermal", thermal_resource)):
        if resource == EMULATED_RESOURCE and not emulated:
            raise BenchError(f"{where}: [{name}] resource \"{EMULATED_RESOURCE}\" needs an emu:// tester url "
                             "(or another bench scheme's)")
    return BenchConfig(
        tester_url=url,
        tester_timeout_s=timeout_s,
        supply_resource=supply_resource,
        supply_limits=supply_limits,
        thermal_resource=thermal_resource,
        thermal_limits=thermal_limits,
        visa_library="@py" if visa_library is None else visa_library,
        source=where,
        plan=base.plan,
    )


class Bench:
    """An open bench: :attr:`tester`, and :attr:`supply` / :attr:`thermal` where it has them."""

    def __init__(
        self,
        config: BenchConfig,
        tester: TesterSession,
        supply: BenchSupply | None,
        thermal: ThermalController | None,
        emulator: StartedBench | None,
    ) -> None:
        self.config = config
        self.tester = tester
        self.supply = supply
        self.thermal = thermal
        self.emulator = emulator  # what a bench-scheme plug-in started (e.g. the emulator process), or None

    @classmethod
    def open(
        cls,
        spec: str | Path | BenchConfig,
        *,
        spy: Callable[[str], None] | TextIO | None = None,
    ) -> "Bench":
        """Open a bench from a bench file, a bench-scheme address (``emu://``, ``replay://``) or a tester URL.

        Raises
        ------
        BenchError
            For a bad bench file or address, or an instrument/tester that cannot be opened
            (the message is one line and names the part that failed).
        """
        try:
            if isinstance(spec, BenchConfig):
                config = spec
            elif _is_bench_address(str(spec)):
                config = _scheme_defaults(str(spec))
            elif str(spec).endswith(".toml") or Path(str(spec)).is_file():
                config = load_bench_file(spec)
            else:
                config = BenchConfig(tester_url=str(spec), source=str(spec))
        except _PlanError as exc:
            raise BenchError(str(exc)) from None
        emulator = None
        opened: list[Any] = []
        try:
            url = config.tester_url
            if _is_bench_address(url):
                plan = config.plan if config.plan is not None else _plan(url)
                try:
                    emulator = plan.start()
                except Exception as exc:  # noqa: BLE001 - whatever the plug-in raises, one line
                    raise _PlanError(_one_line(str(exc)) or type(exc).__name__) from None
                url = emulator.url
            tester = TesterSession.open(url, timeout_s=config.tester_timeout_s, spy=spy)
            opened.append(tester)

            def resource(name: str | None, emulated: str | None) -> str | None:
                if name == EMULATED_RESOURCE:
                    return emulated
                return name

            supply = thermal = None
            if config.supply_resource is not None and config.supply_limits is not None:
                name = resource(config.supply_resource, emulator.supply_resource if emulator else None)
                supply = BenchSupply.open(name, config.supply_limits, rm_spec=config.visa_library)  # type: ignore[arg-type]
                opened.append(supply)
            if config.thermal_resource is not None and config.thermal_limits is not None:
                name = resource(config.thermal_resource, emulator.thermal_resource if emulator else None)
                thermal = ThermalController.open(name, config.thermal_limits, rm_spec=config.visa_library)  # type: ignore[arg-type]
                opened.append(thermal)
        except BaseException as exc:  # also Ctrl-C: close what was opened, then let it through
            for thing in reversed(opened):
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - already failing; report the first error
                    pass
            if emulator is not None:
                emulator.close()
            if isinstance(exc, (LinkError, InstrumentError, OSError, ValueError)):
                raise BenchError(f"cannot open bench {config.source or config.tester_url}: {_one_line(str(exc))}") from None
            raise
        return cls(config, tester, supply, thermal, emulator)

    # Settings --------------------------------------------------------------------------------

    @property
    def nominal_vdd_v(self) -> float | None:
        """The supply's nominal voltage, or None without a supply."""
        return self.supply.limits.nominal_v if self.supply is not None else None

    def set_vdd(self, vdd_v: float) -> None:
        """Set the DIMM supply (within its limits, ramped) and wait for it to settle."""
        if self.supply is None:
            raise BenchError("this bench has no supply: VDD cannot be changed")
        self.supply.set_voltage(vdd_v)

    def set_temperature(self, temp_c: float, *, wait: bool = True, timeout_s: float = 600.0) -> float:
        """Set the DIMM temperature; with ``wait``, return once it is stable within the band."""
        if self.thermal is None:
            raise BenchError("this bench has no thermal controller: temperature cannot be changed")
        self.thermal.set_point_c = temp_c
        return self.thermal.wait_stable(timeout_s=timeout_s) if wait else self.thermal.temperature_c

    def describe(self) -> dict[str, Any]:
        """What this bench is, for metadata: addresses, firmware, DIMM profile, limits."""
        info: dict[str, Any] = {
            "tester_url": self.config.tester_url,
            "firmware": self.tester.info,
            "tck_ns": self.tester.tck_ns,
        }
        if self.emulator is not None:
            info["emulated"] = self.emulator.describe()
        if self.supply is not None:
            info["supply"] = {"resource": self.config.supply_resource, "idn": self.supply.idn, **vars(self.supply.limits)}
        if self.thermal is not None:
            info["thermal"] = {"resource": self.config.thermal_resource, "idn": self.thermal.idn}
        return info

    # Closing -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Restore nominal VDD, reset the tester, close everything (each step even if another fails).

        A ``KeyboardInterrupt`` in one step does not skip the others either: it is raised
        once every step has run (before any ordinary error).
        """
        errors: list[BaseException] = []
        for step in (
            (self.supply.close if self.supply is not None else None),
            (self.thermal.close if self.thermal is not None else None),
            self.tester.close,
            (self.emulator.close if self.emulator is not None else None),
        ):
            if step is None:
                continue
            try:
                step()
            except BaseException as exc:  # noqa: BLE001 - keep closing the rest
                errors.append(exc)
        interrupts = [e for e in errors if not isinstance(e, Exception)]
        if interrupts:
            raise interrupts[0]
        if errors:
            raise errors[0]

    def __enter__(self) -> "Bench":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.close()
        except Exception as close_error:
            if exc_type is None:
                raise
            if isinstance(exc, BaseException):  # keep the original error, but say what else failed
                add_note(exc, f"while closing the bench: {_one_line(str(close_error))}")

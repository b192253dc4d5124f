"""Registries of URL schemes: how a tester URL or a bench address reaches a plug-in.

The host driver opens testers by URL and benches by address, but it knows only the link's own
transports (pySerial's ``socket://``, ``loop://``, device paths, ...).  Anything else, such as
the emulated bench's ``emu://PROFILE?seed=N`` and ``replay://MAP.h5`` (package
:mod:`emubench`), is a *scheme* a plug-in registers here, so that no module of this layer
imports the plug-in by name:

- a **tester scheme** opens a tester for :meth:`softmc_host.session.TesterSession.open`: its
  opener takes the whole URL and returns a :class:`TesterEndpoint` (a link URL to connect to,
  and a ``close()`` that ends whatever was started for it);
- a **bench scheme** opens a whole bench for :meth:`softmc_host.bench.Bench.open` and for bench
  files whose ``[tester] url`` has that scheme: its opener takes the address, checks it
  (nothing started yet) and returns a :class:`BenchPlan` with the instrument limits; the bench
  starts it when it opens.

Plug-ins register through entry points of the groups :data:`TESTER_GROUP` and
:data:`BENCH_GROUP` (``name = module:opener``, the name being the scheme), loaded lazily on
first use, or at run time with :func:`register_tester_scheme` / :func:`register_bench_scheme`
(which win over an entry point of the same name).  ``setup.cfg`` of this toolkit::

    [options.entry_points]
    eden_dram_toolkit.testers =
        emu = emubench.plugin:open_tester
    eden_dram_toolkit.benches =
        emu = emubench.plugin:open_bench

A scheme name is case-insensitive (stored lower-case) and is what comes before ``://``.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
import threading
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:  # only for annotations: schemes sit below the instrument drivers
    from softmc_host.instruments import SupplyLimits, ThermalLimits

__all__ = [
    "TESTER_GROUP",
    "BENCH_GROUP",
    "SchemeError",
    "TesterEndpoint",
    "StartedBench",
    "BenchPlan",
    "TesterOpener",
    "BenchOpener",
    "url_scheme",
    "register_tester_scheme",
    "register_bench_scheme",
    "unregister_tester_scheme",
    "unregister_bench_scheme",
    "tester_opener",
    "bench_opener",
    "tester_schemes",
    "bench_schemes",
    "has_tester_scheme",
    "has_bench_scheme",
    "pyserial_schemes",
]

log = logging.getLogger(__name__)

#: Entry-point group of tester schemes (``scheme = module:opener``).
TESTER_GROUP = "eden_dram_toolkit.testers"
#: Entry-point group of bench schemes (``scheme = module:opener``).
BENCH_GROUP = "eden_dram_toolkit.benches"

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")


class SchemeError(ValueError):
    """An unknown scheme, a bad scheme name, or a plug-in whose entry point does not load."""


@runtime_checkable
class TesterEndpoint(Protocol):
    """What a tester-scheme opener returns: where to connect, and how to stop it."""

    url: str  #: a URL :func:`firmware_bridge.link.open_transport` opens (e.g. ``socket://127.0.0.1:PORT``)

    def close(self) -> None:
        """Stop what the opener started (called once, when the session closes or fails to open)."""


@runtime_checkable
class StartedBench(Protocol):
    """A started bench (what :meth:`BenchPlan.start` returns); :class:`~softmc_host.bench.Bench` closes it."""

    url: str  #: the tester's link URL
    supply_resource: str | None  #: VISA resource of its supply (what ``resource = "emu"`` stands for)
    thermal_resource: str | None  #: VISA resource of its thermal controller

    def describe(self) -> dict[str, Any]:
        """What this bench is, for metadata (e.g. ``{"profile": "B", "seed": 1}``)."""

    def close(self) -> None:
        """Stop the bench."""


@runtime_checkable
class BenchPlan(Protocol):
    """What a bench-scheme opener returns: a checked address, nothing started yet."""

    supply_limits: "SupplyLimits | None"  #: the supply's default limits (None: the bench has no supply)
    thermal_limits: "ThermalLimits | None"  #: the thermal controller's default limits (None: none)

    def start(self) -> StartedBench:
        """Start the bench (e.g. its process) and say where its parts listen."""


#: ``opener(url) -> TesterEndpoint``; raises ValueError (bad URL) or another error (cannot start).
TesterOpener = Callable[[str], TesterEndpoint]
#: ``opener(address) -> BenchPlan``; raises ValueError with a one-line message for a bad address.
BenchOpener = Callable[[str], BenchPlan]


class _Registry:
    """Openers by scheme: registered at run time, else found among the entry points of ``group``."""

    def __init__(self, group: str, what: str) -> None:
        self.group = group
        self.what = what
        self._lock = threading.Lock()
        self._registered: dict[str, Callable[[str], Any]] = {}
        self._entry_points: dict[str, metadata.EntryPoint] | None = None
        self._loaded: dict[str, Callable[[str], Any]] = {}

    def _discover(self) -> dict[str, metadata.EntryPoint]:
        if self._entry_points is None:
            found: dict[str, metadata.EntryPoint] = {}
            try:
                points = list(metadata.entry_points(group=self.group))
                if not points:
                    # entry_points() keeps one distribution per name, the first on sys.path: a stale
                    # source-tree *.egg-info without entry points may hide the installed metadata.
                    points = [p for d in metadata.distributions() for p in d.entry_points if p.group == self.group]
            except Exception as exc:  # noqa: BLE001 - a broken distribution must not break the others
                log.warning("cannot read entry points of %s: %s", self.group, exc)
                points = []
            for point in points:
                found.setdefault(point.name.lower(), point)
            log.debug("%s schemes from entry points: %s", self.what, ", ".join(sorted(found)) or "none")
            self._entry_points = found
        return self._entry_points

    def register(self, scheme: str, opener: Callable[[str], Any]) -> None:
        name = _check_scheme(scheme)
        if not callable(opener):
            raise SchemeError(f"{self.what} scheme {name!r}: the opener must be callable, got {type(opener).__name__}")
        with self._lock:
            self._registered[name] = opener

    def unregister(self, scheme: str) -> None:
        with self._lock:
            self._registered.pop(str(scheme).lower(), None)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(set(self._registered) | set(self._discover()))

    def has(self, scheme: str) -> bool:
        return isinstance(scheme, str) and scheme.lower() in self.names()

    def get(self, scheme: str) -> Callable[[str], Any]:
        name = scheme.lower() if isinstance(scheme, str) else scheme
        with self._lock:
            if name in self._registered:
                return self._registered[name]
            if name in self._loaded:
                return self._loaded[name]
            point = self._discover().get(name) if isinstance(name, str) else None
        if point is None:
            raise SchemeError(self.unknown_message(scheme))
        try:
            opener = point.load()
        except Exception as exc:  # noqa: BLE001 - report any failure of the plug-in in one line
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise SchemeError(f"{self.what} scheme {name!r} ({point.value}) does not load: {text}") from None
        if not callable(opener):
            raise SchemeError(f"{self.what} scheme {name!r} ({point.value}) is not callable")
        with self._lock:
            self._loaded[name] = opener
        return opener

    def unknown_message(self, scheme: object) -> str:
        shown = repr(scheme) if not isinstance(scheme, str) or len(scheme) <= 40 else repr(scheme[:37] + "...")
        known = ", ".join(self.names()) or f"none: no plug-in registers one (entry point group {self.group})"
        return f"unknown {self.what} scheme {shown} (known: {known})"


def _check_scheme(scheme: str) -> str:
    if not isinstance(scheme, str) or not _SCHEME_RE.fullmatch(scheme):
        raise SchemeError(f"a URL scheme is a letter then letters, digits, '+', '-' or '.', got {scheme!r}")
    return scheme.lower()


_TESTERS = _Registry(TESTER_GROUP, "tester")
_BENCHES = _Registry(BENCH_GROUP, "bench")


def url_scheme(url: object) -> str | None:
    """The scheme of ``url`` (lower-case: ``"emu"`` for ``emu://B``), or None without ``SCHEME://``."""
    if not isinstance(url, str):
        return None
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep and _SCHEME_RE.fullmatch(scheme) else None


def register_tester_scheme(scheme: str, opener: TesterOpener) -> None:
    """Make ``TesterSession.open("SCHEME://...")`` call ``opener(url)``.

    Parameters
    ----------
    scheme : str
        The URL scheme, without ``://`` (case-insensitive).
    opener : callable
        ``opener(url) -> TesterEndpoint``: start or find the tester and return where to
        connect; its ``close()`` is called when the session closes.

    Raises
    ------
    SchemeError
        If ``scheme`` is not a valid scheme name or ``opener`` is not callable.
    """
    _TESTERS.register(scheme, opener)


def register_bench_scheme(scheme: str, opener: BenchOpener) -> None:
    """Make ``Bench.open("SCHEME://...")`` (and bench files with that tester URL) use ``opener``.

    Parameters
    ----------
    scheme : str
        The address scheme, without ``://`` (case-insensitive).
    opener : callable
        ``opener(address) -> BenchPlan``: check the address (raise ValueError with a one-line
        message if it is bad), start nothing; the plan's ``start()`` starts the bench.

    Raises
    ------
    SchemeError
        If ``scheme`` is not a valid scheme name or ``opener`` is not callable.
    """
    _BENCHES.register(scheme, opener)


def unregister_tester_scheme(scheme: str) -> None:
    """Forget a tester scheme registered at run time (its entry point, if any, applies again)."""
    _TESTERS.unregister(scheme)


def unregister_bench_scheme(scheme: str) -> None:
    """Forget a bench scheme registered at run time (its entry point, if any, applies again)."""
    _BENCHES.unregister(scheme)


def tester_opener(scheme: str) -> TesterOpener:
    """The opener of a tester scheme (loading its entry point on first use).

    Raises
    ------
    SchemeError
        ``unknown tester scheme 'x' (known: emu, replay)``, or a plug-in that does not load.
    """
    return _TESTERS.get(scheme)


def bench_opener(scheme: str) -> BenchOpener:
    """The opener of a bench scheme (loading its entry point on first use).

    Raises
    ------
    SchemeError
        ``unknown bench scheme 'x' (known: emu, replay)``, or a plug-in that does not load.
    """
    return _BENCHES.get(scheme)


def tester_schemes() -> list[str]:
    """The known tester schemes (registered or installed), sorted."""
    return _TESTERS.names()


def bench_schemes() -> list[str]:
    """The known bench schemes (registered or installed), sorted."""
    return _BENCHES.names()


def has_tester_scheme(scheme: str) -> bool:
    """Whether ``scheme`` is a known tester scheme (without loading its plug-in)."""
    return _TESTERS.has(scheme)


def has_bench_scheme(scheme: str) -> bool:
    """Whether ``scheme`` is a known bench scheme (without loading its plug-in)."""
    return _BENCHES.has(scheme)


def pyserial_schemes() -> frozenset[str]:
    """The URL schemes pySerial itself opens (``socket``, ``loop``, ``rfc2217``, ``spy``, ...).

    Read from the modules ``protocol_<scheme>`` of ``serial.protocol_handler_packages``, as
    :func:`serial.serial_for_url` finds them.
    """
    import serial  # the link's dependency; imported here so that importing this module stays cheap

    names: set[str] = set()
    for package in serial.protocol_handler_packages:
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
            if info.name.startswith("protocol_"):
                names.add(info.name[len("protocol_") :].lower())
    return frozenset(names)

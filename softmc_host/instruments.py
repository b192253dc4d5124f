"""Host drivers of the bench instruments: the DIMM supply and the DIMM thermal controller.

Both speak SCPI through PyVISA; a driver receives an open message-based resource
(anything with ``write(str)``, ``query(str) -> str`` and ``close()``) or opens one
by VISA resource name and ResourceManager spec::

    limits = SupplyLimits(nominal_v=1.35, min_v=1.0, max_v=1.45, max_step_v=0.05,
                          max_slew_v_per_s=1.0, current_limit_a=2.0)
    with BenchSupply.open("TCPIP::127.0.0.1::5025::SOCKET", limits) as psu:
        psu.set_voltage(1.20)          # ramps 1.35 -> 1.20 in 0.05 V steps, waits to settle
        power_w = psu.measured_power_w
    # nominal VDD is restored here, also after an exception

The drivers are declared, PyMeasure-style: every SCPI setting or reading is a
:class:`Control` class attribute (get command, set command, unit, parser,
validator), and the plumbing (queries, ``SYST:ERR?`` after every write,
resynchronisation) lives in their base class :class:`ScpiInstrument`::

    class BenchSupply(ScpiInstrument):
        measured_current_a = Control(get="MEAS:CURR?", unit="A", doc="The output current.")
        voltage_set_v = Control(get="VOLT?", set="VOLT {value:.4f}", unit="V",
                                validator=_validate_set_point, ...)

A settable control needs a validator, and the validator runs before anything is
sent; it receives the instrument, so it checks the value against the limits the
instrument is configured with *at set time*.  Wire tests of a driver use
:func:`softmc_host.instrument_testing.expected_protocol`.

The safety rule of :class:`BenchSupply`: no code path writes a ``VOLT`` set point
outside ``[min_v, max_v]``, and no single change exceeds ``max_step_v``.  A
request outside the limits raises :class:`SupplyLimitError` before any byte is
sent; every ``VOLT`` write goes through one control (``voltage_set_v``) whose
validator checks both conditions again on the exact value it is about to send.

SCPI used (the emulated instruments in :mod:`emubench.instruments` speak it):
supply ``*IDN?``, ``*CLS``, ``SYST:ERR?``, ``VOLT <v>``/``VOLT?``,
``CURR <a>``/``CURR?``, ``OUTP 1|0``/``OUTP?``, ``MEAS:VOLT?``, ``MEAS:CURR?``,
``STAT:QUES:COND?``; thermal controller ``TEMP:SET <c>``/``TEMP:SET?``,
``MEAS:TEMP?``, ``OUTP 1|0``/``OUTP?``.  Set points are written with 0.1 mV and
1 mC resolution.

Every numeric argument (set points, limits, timeouts, poll intervals) must be a real
number that is finite as a float and not a bool; anything else (NaN, inf, ``10**400``,
``"1.2"``, ``True``, ``None``) raises :class:`InstrumentValueError` (or its subclasses
:class:`SupplyLimitError` / :class:`ThermalLimitError`) before any byte is sent.

Resynchronisation: a query whose reply was not read (an interrupt such as Ctrl-C inside
the blocking read, a timeout, a failed write) or whose reply does not fit the question
leaves the session *out of step*: the reply may still arrive and would be taken as the
answer to the next question.  The next exchange therefore first resynchronises: VISA
device clear (where the interface has one), reading and discarding whatever input is
pending, then ``*CLS``, ``*IDN?`` (must match the identity read at open), ``*OPC?``
(must be ``1``) and ``SYST:ERR?`` (must be ``0``), up to three tries.  Only then does
``close()`` ramp the supply back to nominal.  If the session cannot be resynchronised,
:class:`InstrumentError` says so.

The drivers log every exchange at DEBUG level and each resynchronisation at WARNING
level through :mod:`logging` (logger ``softmc_host.instruments``); they never print.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import string
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, TypeVar

from softmc_host._compat import add_note

__all__ = [
    "InstrumentError",
    "InstrumentValueError",
    "SupplyLimitError",
    "ThermalLimitError",
    "MessageResource",
    "SupplyLimits",
    "BenchSupply",
    "ThermalLimits",
    "ThermalController",
    "VOLTAGE_RESOLUTION_V",
    "SUPPLY_LIMIT_RANGES",
    "THERMAL_LIMIT_RANGES",
    "ramp_set_points",
    "Control",
    "ScpiInstrument",
    "Parser",
    "Validator",
    "boolean",
    "number",
    "within_limits",
    "check_number",
    "parse_number",
    "parse_bool",
    "parse_register",
    "parse_error_reply",
    "register_bit",
]

logger = logging.getLogger(__name__)

#: Resolution of the voltage set points written by :class:`BenchSupply`, in V.
VOLTAGE_RESOLUTION_V = 1e-4
_V_DIGITS = 4
_V_QUANTA_PER_V = 10**_V_DIGITS
_EPS_V = 1e-9

Sleep = Callable[[float], None]
Clock = Callable[[], float]


class InstrumentError(RuntimeError):
    """An instrument reported an error, did not answer, or did not reach a requested state."""


class InstrumentValueError(InstrumentError, ValueError):
    """A driver was given a bad value (not a finite number, wrong type, out of range); nothing was sent."""


class SupplyLimitError(InstrumentValueError):
    """A supply voltage outside the configured limits was requested (nothing was sent)."""


class ThermalLimitError(InstrumentValueError):
    """A temperature set point outside the configured limits was requested (nothing was sent)."""


class MessageResource(Protocol):
    """What the drivers need of a resource: a PyVISA ``MessageBasedResource`` fits."""

    def write(self, message: str) -> Any: ...

    def query(self, message: str) -> str: ...

    def close(self) -> Any: ...


def _as_finite_float(value: object) -> float | None:
    """``value`` as a float if it is a real number (not a bool) that is finite as a float, else None.

    Never raises: ``10**400`` (OverflowError in ``float``), NaN, inf, strings, ``None`` and
    bools (including ``numpy.bool_``, which is not a ``numbers.Real``) all give None.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return None
    return number if math.isfinite(number) else None


def _is_bool(value: object) -> bool:
    """True for ``bool`` and numpy's boolean scalar (named ``bool_`` before numpy 2, ``bool`` since)."""
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"))


def _is_finite_number(value: object) -> bool:
    return _as_finite_float(value) is not None


def _show(value: object, limit: int = 60) -> str:
    """A short one-line repr of a value for error messages (huge integers and long texts are cut)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still a bad value
        text = f"<{type(value).__name__} object>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(value: float) -> str:
    """Shortest round-trip text of a number, as the user wrote it (``1.0``, ``0.9``)."""
    return repr(float(value))


def _finite(name: str, value: object) -> float:
    number = _as_finite_float(value)
    if number is None:
        kind = "a boolean" if _is_bool(value) else _show(value)
        raise ValueError(f"{name} must be a finite number, got {kind}")
    return number


def _check_number(
    name: str,
    value: object,
    *,
    lo: float,
    hi: float,
    lo_open: bool = False,
    unit: str = "",
    error: type[Exception] = InstrumentValueError,
) -> float:
    """``value`` as a float if it is a finite number in ``lo..hi`` (``lo`` excluded with ``lo_open``).

    Raises ``error`` (an :class:`InstrumentValueError` by default) with a one-line message otherwise.
    """
    try:
        number = _finite(name, value)
    except ValueError as exc:
        raise error(str(exc)) from None
    if number < lo or (lo_open and number == lo) or number > hi:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise error(f"{name} must be {low} and <= {hi:g}{(' ' + unit) if unit else ''}, got {number:g}")
    return number


def _check_bool(name: str, value: object, error: type[Exception] = InstrumentValueError) -> bool:
    """``value`` as a bool if it is one (``bool``, ``numpy.bool_``, or the integers 0 and 1)."""
    if _is_bool(value):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise error(f"{name} must be True or False, got {_show(value)}")


#: The range of every :class:`SupplyLimits` field: name -> (lowest, lowest excluded, highest, unit).
#: Documented in ``docs/bench-file.md``; the relations between fields are checked as well.
SUPPLY_LIMIT_RANGES: dict[str, tuple[float, bool, float, str]] = {
    "nominal_v": (0.0, False, 100.0, "V"),
    "min_v": (0.0, False, 100.0, "V"),
    "max_v": (0.0, False, 100.0, "V"),
    "max_step_v": (VOLTAGE_RESOLUTION_V, False, 100.0, "V"),
    "max_slew_v_per_s": (0.0, True, 1e6, "V/s"),
    "current_limit_a": (0.0, True, 1000.0, "A"),
    "settle_tol_v": (0.0, True, 100.0, "V"),
    "settle_timeout_s": (0.0, False, 3600.0, "s"),
}

#: The range of every :class:`ThermalLimits` field, as :data:`SUPPLY_LIMIT_RANGES`.
THERMAL_LIMIT_RANGES: dict[str, tuple[float, bool, float, str]] = {
    "min_c": (-273.15, False, 1000.0, "C"),
    "max_c": (-273.15, False, 1000.0, "C"),
    "band_c": (0.0, True, 1000.0, "C"),
}


@dataclass(frozen=True)
class SupplyLimits:
    """What the DIMM supply may be set to.

    Parameters
    ----------
    nominal_v : float
        Nominal VDD in V, restored on close; ``min_v <= nominal_v <= max_v``.
    min_v, max_v : float
        Lowest and highest set point allowed, in V.
    max_step_v : float
        Largest single change of the set point, in V (at least 0.1 mV, the write
        resolution).
    max_slew_v_per_s : float
        Largest average ramp rate, in V/s.
    current_limit_a : float
        Current limit programmed into the supply when it is opened, in A.
    settle_tol_v : float
        How close ``MEAS:VOLT?`` must come to the set point, in V.
    settle_timeout_s : float
        How long to wait for it, in s.
    """

    nominal_v: float
    min_v: float
    max_v: float
    max_step_v: float
    max_slew_v_per_s: float
    current_limit_a: float
    settle_tol_v: float = 0.01
    settle_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            object.__setattr__(self, name, _finite(name, getattr(self, name)))
        if self.min_v < 0:
            raise ValueError(f"min_v must not be negative, got {self.min_v} V")
        if not self.min_v <= self.max_v:
            raise ValueError(f"min_v ({self.min_v} V) must not exceed max_v ({self.max_v} V)")
        if not self.min_v <= self.nominal_v <= self.max_v:
            raise ValueError(f"nominal_v {self.nominal_v} V must lie within min_v..max_v = {self.min_v}..{self.max_v} V")
        if self.max_step_v < VOLTAGE_RESOLUTION_V:
            raise ValueError(f"max_step_v must be at least {VOLTAGE_RESOLUTION_V} V, got {self.max_step_v} V")
        for name in ("max_slew_v_per_s", "current_limit_a", "settle_tol_v"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.settle_timeout_s < 0:
            raise ValueError(f"settle_timeout_s must not be negative, got {self.settle_timeout_s} s")
        for name, (lo, lo_open, hi, unit) in SUPPLY_LIMIT_RANGES.items():
            _check_number(name, getattr(self, name), lo=lo, hi=hi, lo_open=lo_open, unit=unit, error=ValueError)

    def check(self, vdd_v: float) -> float:
        """Return ``vdd_v`` as a float if it is within ``[min_v, max_v]``.

        Raises
        ------
        SupplyLimitError
            The value is outside the limits or not a finite number.
        """
        if not _is_finite_number(vdd_v):
            raise SupplyLimitError(f"supply voltage {_show(vdd_v)} is not a finite number of volts")
        if not self.min_v <= vdd_v <= self.max_v:
            raise SupplyLimitError(
                f"supply voltage {_fmt(vdd_v)} V outside the configured limits {_fmt(self.min_v)}..{_fmt(self.max_v)} V"
            )
        return float(vdd_v)


@dataclass(frozen=True)
class ThermalLimits:
    """What the DIMM temperature set point may be.

    Parameters
    ----------
    min_c, max_c : float
        Lowest and highest set point allowed, in degC.
    band_c : float
        Default half-width of the band :meth:`ThermalController.wait_stable` waits for, in degC.
    """

    min_c: float
    max_c: float
    band_c: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_c", "max_c", "band_c"):
            object.__setattr__(self, name, _finite(name, getattr(self, name)))
        if not self.min_c <= self.max_c:
            raise ValueError(f"min_c ({self.min_c} C) must not exceed max_c ({self.max_c} C)")
        if self.band_c <= 0:
            raise ValueError(f"band_c must be positive, got {self.band_c} C")
        for name, (lo, lo_open, hi, unit) in THERMAL_LIMIT_RANGES.items():
            _check_number(name, getattr(self, name), lo=lo, hi=hi, lo_open=lo_open, unit=unit, error=ValueError)

    def check(self, temp_c: float) -> float:
        """Return ``temp_c`` as a float if it is within ``[min_c, max_c]``, else raise :class:`ThermalLimitError`."""
        if not _is_finite_number(temp_c):
            raise ThermalLimitError(f"temperature set point {_show(temp_c)} is not a finite number of degC")
        if not self.min_c <= temp_c <= self.max_c:
            raise ThermalLimitError(
                f"temperature set point {_fmt(temp_c)} C outside the configured limits {_fmt(self.min_c)}..{_fmt(self.max_c)} C"
            )
        return float(temp_c)


#: A SCPI decimal reply (NR1, NR2 or NR3), ASCII only: ``1``, ``-0.5``, ``+1.350000``, ``9.91E+37``.
_SCPI_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?", re.ASCII)
#: A ``SYST:ERR?`` reply: ``<code>,"<message>"`` (the message is kept as sent).
_SCPI_ERROR = re.compile(r"([+-]?[0-9]{1,6})\s*(?:,(.*))?", re.ASCII | re.DOTALL)
#: Longest reply the parsers look at; instruments answer these queries in a few dozen bytes.
_MAX_REPLY_CHARS = 256
_SCPI_WHITESPACE = " \t\r\n"


def _reply_text(reply: object, what: str) -> str:
    if not isinstance(reply, str):
        raise InstrumentError(f"{what}: expected a text reply, got {_show(reply)}")
    text = reply.strip(_SCPI_WHITESPACE)
    if len(text) > _MAX_REPLY_CHARS:
        raise InstrumentError(f"{what}: reply of {len(text)} characters is too long ({_show(text)})")
    return text


def _parse_float(reply: str, what: str) -> float:
    """Parse a SCPI numeric reply (ASCII digits only); SCPI's NaN ``9.91E37`` is refused.

    Raises
    ------
    InstrumentError
        The reply is not one finite decimal number.
    """
    text = _reply_text(reply, what)
    if _SCPI_NUMBER.fullmatch(text) is None:
        raise InstrumentError(f"{what}: expected a number, got {_show(reply)}")
    value = float(text)
    if not math.isfinite(value) or abs(value) >= 9.9e37:  # SCPI's NaN is 9.91E37
        raise InstrumentError(f"{what}: instrument returned no valid value ({_show(text)})")
    return value


def _parse_bool(reply: str, what: str) -> bool:
    """Parse a SCPI boolean reply: ``1``/``ON`` or ``0``/``OFF`` (ASCII, any case).

    Raises
    ------
    InstrumentError
        Anything else.
    """
    word = _reply_text(reply, what)
    if word.isascii():
        word = word.upper()
        if word in ("1", "ON"):
            return True
        if word in ("0", "OFF"):
            return False
    raise InstrumentError(f"{what}: expected 1/0, got {_show(reply)}")


def _parse_register(reply: str, what: str) -> int:
    """Parse a SCPI status register reply: an integer 0..65535 (``+2``, ``2``, ``2.0``).

    Raises
    ------
    InstrumentError
        Not a number, not an integer, or out of range.
    """
    value = _parse_float(reply, what)
    if not value.is_integer() or not 0 <= value <= 0xFFFF:
        raise InstrumentError(f"{what}: expected a register value 0..65535, got {_show(reply)}")
    return int(value)


def _parse_error_reply(reply: str, what: str) -> tuple[int, str]:
    """Parse a ``SYST:ERR?`` reply ``<code>,"<message>"`` into ``(code, message)``.

    Raises
    ------
    InstrumentError
        The reply does not start with an ASCII integer code.
    """
    text = _reply_text(reply, what)
    match = _SCPI_ERROR.fullmatch(text)
    if match is None:
        raise InstrumentError(f"{what}: unreadable reply {_show(reply)}")
    return int(match.group(1)), (match.group(2) or "").strip(_SCPI_WHITESPACE)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (VISA errors span several)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."



#: Public names of the reply parsers and of the number check, for drivers and validators
#: written elsewhere (the underscored names stay for the existing callers).
parse_number = _parse_float
parse_bool = _parse_bool
parse_register = _parse_register
parse_error_reply = _parse_error_reply
check_number = _check_number


def ramp_set_points(start_v: float, target_v: float, max_step_v: float) -> list[float]:
    """The set points a ramp from ``start_v`` to ``target_v`` writes, on the 0.1 mV grid.

    Both ends are rounded to the grid; the steps are equal to within one grid
    quantum, none exceeds ``max_step_v``, and the last point is the target.

    Parameters
    ----------
    start_v, target_v : float
        Present and new set point in V.
    max_step_v : float
        Largest single change in V (at least 0.1 mV).

    Returns
    -------
    list of float
        The points after ``start_v`` (empty when there is nothing to change).

    Raises
    ------
    InstrumentValueError
        A value that is not a finite number, a voltage outside 0..100 V, or a
        ``max_step_v`` outside 0.0001..100 V.
    """
    start_v = _check_number("start_v", start_v, lo=0.0, hi=100.0, unit="V")
    target_v = _check_number("target_v", target_v, lo=0.0, hi=100.0, unit="V")
    max_step_v = _check_number("max_step_v", max_step_v, lo=0.0, hi=100.0, unit="V")
    max_q = int(math.floor(max_step_v * _V_QUANTA_PER_V + 1e-6))
    if max_q < 1:
        raise InstrumentValueError(f"max_step_v must be at least {VOLTAGE_RESOLUTION_V} V, got {max_step_v!r}")
    start_q = round(start_v * _V_QUANTA_PER_V)
    delta_q = round(target_v * _V_QUANTA_PER_V) - start_q
    n = -(-abs(delta_q) // max_q)  # ceil
    # floor(delta * k / n + 1/2) in exact integer arithmetic: consecutive differences
    # are at most ceil(|delta| / n) <= max_q, and the last point is the target
    return [(start_q + (2 * delta_q * k + n) // (2 * n)) / _V_QUANTA_PER_V for k in range(1, n + 1)]


# --------------------------------------------------------------------------- declarative controls

#: A reply parser: ``parse(reply, what) -> value``.  It raises :class:`InstrumentError`
#: naming ``what`` (``"supply VOLT?"``) for a reply that does not fit the question.
Parser = Callable[[str, str], Any]

#: A set-value validator: ``validator(instrument, value, what) -> value to send``.  It
#: raises :class:`InstrumentValueError` (or a subclass) naming ``what``
#: (``"supply output_enabled"``) for a value that must not be sent; it runs before
#: anything is sent, and receives the instrument so that it can consult its limits.
Validator = Callable[[Any, Any, str], Any]


def boolean(instrument: Any, value: object, what: str) -> bool:
    """Validator of an on/off control: ``True``/``False`` (also ``numpy.bool_``, ``0`` and ``1``).

    Raises
    ------
    InstrumentValueError
        Anything else, ``"off"`` and ``2`` included.
    """
    return _check_bool(what, value)


def number(lo: float, hi: float, *, unit: str = "", lo_open: bool = False) -> Validator:
    """A validator of a finite number in ``lo..hi`` (``lo`` excluded with ``lo_open``), sent as a float.

    Parameters
    ----------
    lo, hi : float
        The range, fixed when the driver class is defined; a range that depends on the
        instrument's configuration needs a validator that reads it (see :func:`within_limits`).
    unit : str
        Unit for the message (``"A"``).
    lo_open : bool
        Exclude ``lo``.

    Returns
    -------
    Validator
        Raises :class:`InstrumentValueError` for NaN, inf, bools, strings, ``None`` and
        numbers outside the range.
    """
    lo = _finite("lo", lo)
    hi = _finite("hi", hi)
    if lo > hi:
        raise ValueError(f"number(): lo {lo:g} must not exceed hi {hi:g}")

    def validate(instrument: Any, value: object, what: str) -> float:
        return _check_number(what, value, lo=lo, hi=hi, lo_open=lo_open, unit=unit)

    validate.__qualname__ = validate.__name__ = f"number({lo:g}, {hi:g})"
    return validate


def within_limits(instrument: Any, value: object, what: str) -> float:
    """Validator that asks the instrument's configured limits: ``instrument.limits.check(value)``.

    The limits are read when the value is set, not when the driver class is defined, so
    an instrument opened with other limits (or given new ones) is held to those.
    """
    return instrument.limits.check(value)


def register_bit(mask: int) -> Parser:
    """A parser of a status register reply (``0..65535``) that tells whether a bit of ``mask`` is set."""
    if isinstance(mask, bool) or not isinstance(mask, int) or not 0 < mask <= 0xFFFF:
        raise ValueError(f"register_bit(): mask must be an integer 1..65535, got {_show(mask)}")

    def parse(reply: str, what: str) -> bool:
        return bool(_parse_register(reply, what) & mask)

    parse.__qualname__ = parse.__name__ = f"register_bit({mask:#x})"
    return parse


def _template_fields(template: str) -> list[str]:
    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise TypeError(f"Control set template {template!r} is not a format string: {exc}") from None


class Control:
    """One SCPI setting or reading of an instrument, declared as a class attribute.

    Reading the attribute sends the ``get`` query and parses the reply; assigning it
    validates the value, formats the ``set`` command and writes it (the instrument then
    checks ``SYST:ERR?``).  Both go through the instrument's exchange methods, so an
    interrupted exchange leaves the session out of step and the next one resynchronises
    (see :class:`ScpiInstrument`)::

        class Dmm(ScpiInstrument):
            kind = "multimeter"
            voltage_v = Control(get="MEAS:VOLT?", unit="V", doc="The measured voltage.")
            range_v = Control(get="VOLT:RANG?", set="VOLT:RANG {value:g}", unit="V",
                              validator=number(0.1, 1000.0, unit="V"), doc="The range.")

    Parameters
    ----------
    get : str, optional
        The query that reads the value (``"VOLT?"``); None for a write-only control.
    set : str, optional
        The command that sets it: a :meth:`str.format` template with the one field
        ``{value}`` (``"VOLT {value:.4f}"``); None for a read-only control.  The
        formatted command must be printable ASCII (no line breaks, no extra ``;``).
    unit : str
        Unit of the value (``"V"``), for the documentation.
    parse : Parser
        ``parse(reply, what) -> value``; default :func:`parse_number` (ASCII SCPI
        decimal numbers only, SCPI's NaN refused).  A reply it refuses marks the
        session out of step.
    validator : Validator
        ``validator(instrument, value, what) -> value to send``; required with ``set``
        (every value sent is checked) and run before anything is sent.
    doc : str
        What the value is; becomes the attribute's docstring, with the commands.
    remember : str, optional
        Name of an instrument attribute holding the last known value: set from every
        reading (through ``remember_as``), to None while a write is under way (a write
        cut short leaves the instrument's state unknown) and to the sent value after it.
    remember_as : callable, optional
        Applied to a reading before it is remembered (e.g. rounding to the write grid).

    Raises
    ------
    TypeError
        At class definition: no command, a ``set`` without a validator, or a template
        whose fields are not exactly one ``{value}``.
    """

    def __init__(
        self,
        get: str | None = None,
        set: str | None = None,
        *,
        unit: str = "",
        parse: Parser = _parse_float,
        validator: Validator | None = None,
        doc: str = "",
        remember: str | None = None,
        remember_as: Callable[[Any], Any] | None = None,
    ) -> None:
        if get is None and set is None:
            raise TypeError("a Control needs a get query, a set command or both")
        for label, command in (("get", get), ("set", set)):
            if command is not None and (not isinstance(command, str) or not command.isascii() or not command.isprintable()):
                raise TypeError(f"Control {label} command must be a printable ASCII string, got {_show(command)}")
        if set is not None:
            if validator is None:
                raise TypeError(f"Control set {set!r} needs a validator: every value sent is checked first")
            if _template_fields(set) != ["value"]:
                raise TypeError(f"Control set template {set!r} must have exactly one field, {{value}}")
        if not callable(parse) or (validator is not None and not callable(validator)):
            raise TypeError("Control parse and validator must be callables")
        self.get = get
        self.set = set
        self.unit = unit
        self.parse = parse
        self.validator = validator
        self.doc = doc
        self.remember = remember
        self.remember_as = remember_as
        self.name = "?"
        self.__doc__ = self._docstring()

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.__doc__ = self._docstring()

    def _docstring(self) -> str:
        parts = []
        if self.get is not None:
            parts.append(f"read ``{self.get}``")
        if self.set is not None:
            parts.append(f"set ``{self.set}``")
        unit = f" Unit: {self.unit}." if self.unit else ""
        access = "" if self.set is not None else " Read-only." if self.get is not None else " Write-only."
        return f"{self.doc}\n\nSCPI: {', '.join(parts)}.{unit}{access}".strip()

    def __repr__(self) -> str:
        return f"Control(get={self.get!r}, set={self.set!r}, unit={self.unit!r})"

    def __get__(self, instrument: Any, owner: type | None = None) -> Any:
        if instrument is None:
            return self
        return self.read(instrument)

    def __set__(self, instrument: Any, value: Any) -> None:
        self.write(instrument, value)

    def read(self, instrument: Any) -> Any:
        """Send the ``get`` query through ``instrument`` and return the parsed reply.

        Raises
        ------
        AttributeError
            A write-only control.
        InstrumentError
            No reply, a reply the parser refuses, or a session that cannot be resynchronised.
        """
        if self.get is None:
            raise AttributeError(f"{type(instrument).__name__}.{self.name} is write-only (SCPI {self.set})")
        value = instrument._ask(self.get, self.parse)
        if self.remember is not None:
            setattr(instrument, self.remember, value if self.remember_as is None else self.remember_as(value))
        return value

    def write(self, instrument: Any, value: Any) -> Any:
        """Validate ``value``, then send the ``set`` command through ``instrument``; returns the value sent.

        Raises
        ------
        AttributeError
            A read-only control.
        InstrumentValueError
            The validator refused the value, or the command it formats to is not printable
            ASCII; nothing was sent.
        InstrumentError
            The write failed or the instrument reported an error after it.
        """
        if self.set is None or self.validator is None:
            raise AttributeError(f"{type(instrument).__name__}.{self.name} is read-only (SCPI {self.get})")
        what = f"{instrument.kind} {self.name}"
        checked = self.validator(instrument, value, what)
        try:
            command = self.set.format(value=checked)
        except (ValueError, TypeError) as exc:
            raise InstrumentValueError(f"{what}: cannot format {_show(checked)} into {self.set!r}: {exc}") from None
        if not (command.isascii() and command.isprintable()) or command.count(";") != self.set.count(";"):
            raise InstrumentValueError(f"{what}: refusing to send {_show(command)}: not one printable ASCII command")
        if self.remember is not None:
            setattr(instrument, self.remember, None)  # unknown until the instrument accepted it
        instrument._write(command)
        if self.remember is not None:
            setattr(instrument, self.remember, checked)
        return checked


# --------------------------------------------------------------------------- the SCPI plumbing


_Instrument = TypeVar("_Instrument", bound="ScpiInstrument")


class ScpiInstrument:
    """Base of the SCPI drivers: exchanges with error wrapping, ``SYST:ERR?`` checks, resynchronisation.

    A driver subclasses it, sets :attr:`kind` (a word for messages) and declares its
    settings and readings as :class:`Control` class attributes.  Opening asks
    ``*IDN?`` (kept as :attr:`idn`) and checks that ``SYST:ERR?`` is clean (or sends
    ``*CLS`` with ``clear_errors``); every write is followed by ``SYST:ERR?``.

    Every exchange marks the session out of step before it starts and in step once the
    reply has been read and fits the question, so an exchange cut short by anything (a
    ``KeyboardInterrupt`` inside the blocking read, a timeout, a garbled reply) leaves
    it out of step, and the next exchange calls :meth:`_resync` first.

    Parameters
    ----------
    resource : MessageResource
        An open message-based resource with ``"\\n"`` read/write termination.
    clear_errors : bool
        Send ``*CLS`` at open instead of refusing an instrument with queued errors.
    """

    #: A word naming the instrument in messages (``"supply"``).
    kind: ClassVar[str] = "instrument"
    #: Rounds of clear, drain and verify before :meth:`_resync` gives up.
    RESYNC_ATTEMPTS = 3
    #: Read timeout while draining stale input, in ms: input that stays away this long is gone.
    DRAIN_TIMEOUT_MS = 50
    #: Most stale lines read while draining (an instrument that never stops talking is broken).
    MAX_DRAIN_READS = 256

    def __init__(self, resource: MessageResource, *, clear_errors: bool = False) -> None:
        self.resource = resource
        self._closed = False
        self._in_sync = True
        self.idn = self._query("*IDN?").strip()
        if clear_errors:
            self._write("*CLS")
        else:
            self._check_errors("at open")

    @classmethod
    def controls(cls) -> dict[str, Control]:
        """The class's :class:`Control` attributes by name, base classes' first."""
        found: dict[str, Control] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Control):
                    found[name] = value
        return found

    @staticmethod
    def _open_resource(resource_name: str, rm_spec: str, timeout_ms: float) -> Any:
        # PyVISA keeps ONE ResourceManager per VISA library and hands it to every
        # ResourceManager(spec) call; closing it would close every resource opened
        # through it (the other instruments' too), so it is left open here.
        import pyvisa

        if not isinstance(resource_name, str) or not isinstance(rm_spec, str):
            raise InstrumentValueError(
                f"VISA resource name and library spec must be strings, got {_show(resource_name)} and {_show(rm_spec)}"
            )
        timeout_ms = _check_number("timeout_ms", timeout_ms, lo=0.0, lo_open=True, hi=3.6e6, unit="ms")
        rm = pyvisa.ResourceManager(rm_spec)
        return rm.open_resource(resource_name, read_termination="\n", write_termination="\n", timeout=timeout_ms)

    @classmethod
    def open(cls, resource_name: str, *args: Any, rm_spec: str = "@py", timeout_ms: float = 2000, **kwargs: Any) -> Any:
        """Open an instrument by VISA resource name and build the driver on it.

        Parameters
        ----------
        resource_name : str
            VISA resource name (``"TCPIP::192.168.1.40::5025::SOCKET"``).
        *args, **kwargs
            The driver's other constructor arguments.
        rm_spec : str
            ResourceManager spec: ``"@py"`` (pyvisa-py), ``"path/file.yaml@sim"``
            (pyvisa-sim), ``""`` (the system VISA library).
        timeout_ms : float
            I/O timeout in ms, 0 < t <= 3.6e6.

        Raises
        ------
        InstrumentValueError
            A bad name, spec or timeout (nothing is opened).
        """
        return cls._open_by_name(resource_name, rm_spec, timeout_ms, *args, **kwargs)

    @classmethod
    def _open_by_name(cls, resource_name: str, rm_spec: str, timeout_ms: float, *args: Any, **kwargs: Any) -> Any:
        """Open the VISA resource and build the driver on it; the resource is closed if the driver refuses it."""
        resource = cls._open_resource(resource_name, rm_spec, timeout_ms)
        try:
            return cls(resource, *args, **kwargs)
        except BaseException:
            resource.close()
            raise

    @property
    def in_sync(self) -> bool:
        """False after an exchange was cut short or answered out of turn, until :meth:`_resync` succeeds."""
        return self._in_sync

    def _query(self, command: str) -> str:
        """Send one query and return its reply line; resynchronise first if the session is out of step."""
        self._ensure_in_sync()
        self._in_sync = False  # until the reply has been read: an interrupt leaves it unread
        try:
            reply = self.resource.query(command)
        except InstrumentError:
            raise
        except Exception as exc:  # pyvisa.errors.VisaIOError (timeout, connection lost) and the like
            raise InstrumentError(f"{self.kind}: no valid reply to {command!r}: {_one_line(exc)}") from exc
        if not isinstance(reply, str):
            raise InstrumentError(f"{self.kind}: no valid reply to {command!r}: got {_show(reply)}")
        self._in_sync = True
        logger.debug("%s: %r -> %r", self.kind, command, reply)
        return reply

    def _ask(self, command: str, parse: Parser) -> Any:
        """Query and parse; a reply that does not parse may be an earlier one, so it marks the session out of step."""
        reply = self._query(command)
        try:
            return parse(reply, f"{self.kind} {command}")
        except InstrumentError:
            self._in_sync = False
            raise

    def _write(self, command: str) -> None:
        """Send one command, then check ``SYST:ERR?``; resynchronise first if the session is out of step."""
        self._ensure_in_sync()
        self._in_sync = False  # a write cut short may leave part of a line at the instrument
        try:
            self.resource.write(command)
        except Exception as exc:
            raise InstrumentError(f"{self.kind}: could not send {command!r}: {_one_line(exc)}") from exc
        self._in_sync = True
        logger.debug("%s: %r", self.kind, command)
        self._check_errors(f"after {command!r}")

    def _check_errors(self, when: str) -> None:
        code, message = self._ask("SYST:ERR?", _parse_error_reply)
        if code != 0:
            message = " ".join(message.split())
            message = message if len(message) <= 120 else message[:117] + "..."
            raise InstrumentError(f"{self.kind} reported error {code},{message} {when}")

    # --- resynchronisation

    def _ensure_in_sync(self) -> None:
        if self._closed:
            raise InstrumentError(f"{self.kind} is closed")
        if not self._in_sync:
            self._resync()

    def _discard_input(self) -> None:
        """VISA device clear where the interface supports it, then read and drop pending input."""
        clear = getattr(self.resource, "clear", None)
        if callable(clear):
            try:
                clear()
            except Exception:  # noqa: BLE001 - not every interface has a device clear; draining follows
                pass
        read_raw = getattr(self.resource, "read_raw", None)
        if not callable(read_raw):
            return
        try:
            saved_ms = self.resource.timeout  # type: ignore[attr-defined]
            self.resource.timeout = self.DRAIN_TIMEOUT_MS  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - no settable timeout: do not risk a long blocking read
            return
        try:
            for _ in range(self.MAX_DRAIN_READS):
                try:
                    stale = read_raw()
                except Exception:  # noqa: BLE001 - the timeout that says nothing more is pending
                    break
                logger.debug("%s: dropped stale input %r", self.kind, stale)
        finally:
            try:
                self.resource.timeout = saved_ms  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001
                pass

    def _resync(self) -> None:
        """Bring an out-of-step session back in step (see the module docstring).

        Raises
        ------
        InstrumentError
            The session is still out of step after :attr:`RESYNC_ATTEMPTS` rounds.
        """
        logger.warning("%s: session out of step after an interrupted or failed exchange; resynchronising", self.kind)
        expected_idn = getattr(self, "idn", None)
        problem = "no reply"
        for _ in range(self.RESYNC_ATTEMPTS):
            self._discard_input()
            try:
                # *CLS first: if part of an earlier line is still at the instrument,
                # the '*' makes the joined line invalid instead of completing a command
                self.resource.write("*CLS")
                idn = self.resource.query("*IDN?")
                opc = self.resource.query("*OPC?")
                err = self.resource.query("SYST:ERR?")
            except Exception as exc:  # noqa: BLE001 - try again; a KeyboardInterrupt propagates
                problem = f"{type(exc).__name__}: {_one_line(exc)}"
                continue
            idn_text = idn.strip() if isinstance(idn, str) else None
            try:
                in_step = (idn_text == expected_idn if expected_idn else bool(idn_text)) and (
                    _reply_text(opc, "*OPC?") == "1" and _parse_error_reply(err, "SYST:ERR?")[0] == 0
                )
            except InstrumentError:
                in_step = False
            if in_step:
                self._in_sync = True
                logger.info("%s: resynchronised", self.kind)
                return
            problem = "replies " + ", ".join(_show(r) for r in (idn, opc, err))
        raise InstrumentError(
            f"{self.kind}: session out of step after an interrupted or failed exchange and could not be "
            f"resynchronised in {self.RESYNC_ATTEMPTS} tries ({problem})"
        )

    # --- lifetime

    def _close_resource(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.resource.close()

    def close(self) -> None:
        """Close the resource (the shared ResourceManager stays open)."""
        self._close_resource()

    def __enter__(self: _Instrument) -> _Instrument:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


#: The earlier name of :class:`ScpiInstrument`.
_ScpiDriver = ScpiInstrument


def _on_voltage_grid(value_v: float) -> float:
    """``value_v`` rounded to the 0.1 mV write grid (where ramp steps are measured from)."""
    return round(value_v * _V_QUANTA_PER_V) / _V_QUANTA_PER_V


class BenchSupply(ScpiInstrument):
    """The DIMM's VDD supply, with enforced limits, ramping and settling.

    Opening it asks ``*IDN?``, checks that ``SYST:ERR?`` is clean, reads the
    present set point (if it is outside the limits, :class:`SupplyLimitError` is
    raised and nothing is written), programs ``limits.current_limit_a`` and reads
    ``OUTP?``.

    Parameters
    ----------
    resource : MessageResource
        An open message-based resource with ``"\\n"`` read/write termination.
    limits : SupplyLimits
        What the supply may be set to; every ``VOLT`` and ``CURR`` write is checked
        against the limits the driver holds when it writes.
    sleep : callable
        ``sleep(seconds)``, used between ramp steps and settle polls (inject a
        fake in tests).
    clock : callable
        Monotonic clock in seconds, used for the settle timeout.
    settle_poll_s : float
        Interval between ``MEAS:VOLT?`` polls while settling, in s.
    clear_errors : bool
        Send ``*CLS`` at open instead of refusing a supply with queued errors.

    Raises
    ------
    SupplyLimitError
        The present set point is outside the limits.
    InstrumentError
        The supply reports an error or does not answer.
    """

    kind = "supply"

    def __init__(
        self,
        resource: MessageResource,
        limits: SupplyLimits,
        *,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        settle_poll_s: float = 0.01,
        clear_errors: bool = False,
    ) -> None:
        if not isinstance(limits, SupplyLimits):
            raise InstrumentValueError(f"limits must be a SupplyLimits, got {type(limits).__name__}")
        self.limits = limits
        self._sleep = sleep
        self._clock = clock
        self.settle_poll_s = _check_number("settle_poll_s", settle_poll_s, lo=0.0, lo_open=True, hi=3600.0, unit="s")
        self._last_v: float | None = None
        self._output_on: bool | None = None
        super().__init__(resource, clear_errors=clear_errors)
        present_v = self.voltage_set_v
        try:
            limits.check(present_v)
        except SupplyLimitError as exc:
            raise SupplyLimitError(f"refusing to take over the supply: its present set point is out of range: {exc}") from None
        self.current_limit_a = limits.current_limit_a
        self._output_on = self.output_enabled

    @classmethod
    def open(
        cls,
        resource_name: str,
        limits: SupplyLimits,
        rm_spec: str = "@py",
        *,
        timeout_ms: int = 2000,
        **kwargs: Any,
    ) -> "BenchSupply":
        """Open a supply by VISA resource name (e.g. ``"TCPIP::127.0.0.1::5025::SOCKET"``).

        Parameters
        ----------
        resource_name : str
            VISA resource name.
        limits : SupplyLimits
            What the supply may be set to.
        rm_spec : str
            ResourceManager spec: ``"@py"`` (pyvisa-py), ``"path/file.yaml@sim"``
            (pyvisa-sim), ``""`` (the system VISA library).
        timeout_ms : int
            I/O timeout in ms.
        **kwargs
            Passed to the constructor (``sleep``, ``clock``, ``clear_errors``...).
        """
        return cls._open_by_name(resource_name, rm_spec, timeout_ms, limits, **kwargs)

    # --- validators: the safety guard of every write (they run before anything is sent)

    def _validate_set_point(self, vdd_v: object, what: str) -> float:
        """The ``VOLT`` value to send for ``vdd_v``: within the limits and one step from the last set point."""
        text = f"{self.limits.check(vdd_v):.{_V_DIGITS}f}"  # type: ignore[arg-type]
        sent_v = float(text)
        self.limits.check(sent_v)  # a limit off the 0.1 mV grid: check the exact value sent
        if self._last_v is None:
            raise SupplyLimitError("supply set point unknown: refusing to write VOLT before reading VOLT?")
        step_v = abs(sent_v - self._last_v)
        if step_v > self.limits.max_step_v + _EPS_V:
            raise SupplyLimitError(
                f"supply step {self._last_v:g} -> {sent_v:g} V exceeds max_step_v {self.limits.max_step_v:g} V"
                " (set_voltage ramps)"
            )
        return sent_v

    def _validate_current_limit(self, current_a: object, what: str) -> float:
        """The ``CURR`` value to send: above 0 and at most the configured limit, on the 0.1 mA grid (rounded down)."""
        limit_a = self.limits.current_limit_a
        value_a = _check_number(what, current_a, lo=0.0, lo_open=True, hi=limit_a, unit="A", error=SupplyLimitError)
        sent_a = math.floor(value_a * 1e4 + 1e-6) / 1e4
        if sent_a <= 0:
            raise SupplyLimitError(f"{what} {value_a:g} A is below the 0.1 mA write resolution")
        return sent_a

    # --- the controls

    voltage_set_v = Control(
        get="VOLT?",
        set="VOLT {value:.4f}",
        unit="V",
        validator=_validate_set_point,
        remember="_last_v",
        remember_as=_on_voltage_grid,
        doc="The set point, in V.  Setting it writes ONE step: refused (SupplyLimitError, nothing sent) "
        "outside the limits or more than max_step_v from the last set point; set_voltage ramps and settles.",
    )
    measured_voltage_v = Control(get="MEAS:VOLT?", unit="V", doc="The output voltage the supply measures, in V.")
    measured_current_a = Control(get="MEAS:CURR?", unit="A", doc="The output current the supply measures, in A.")
    current_limit_a = Control(
        get="CURR?",
        set="CURR {value:.4f}",
        unit="A",
        validator=_validate_current_limit,
        doc="The current limit programmed in the supply, in A (set to limits.current_limit_a at open; "
        "it may be lowered, never raised above it).",
    )
    current_limited = Control(
        get="STAT:QUES:COND?",
        parse=register_bit(0x2),
        doc="Whether the supply is limiting its current now (questionable condition bit 1).",
    )
    output_enabled = Control(
        get="OUTP?",
        set="OUTP {value:d}",
        parse=_parse_bool,
        validator=boolean,
        remember="_output_on",
        doc="Whether the output is on; takes True/False (also numpy.bool_, 0 and 1).",
    )

    @property
    def measured_power_w(self) -> float:
        """Measured output voltage times measured current, in W."""
        return self.measured_voltage_v * self.measured_current_a

    # --- the names of the hand-written driver

    def _read_set_point(self) -> float:
        """Read ``VOLT?`` (and remember it on the write grid: ramp steps are measured from there)."""
        return self.voltage_set_v

    def _write_voltage(self, vdd_v: float) -> None:
        """Send one ``VOLT`` set point after checking the range and the step (the safety guard)."""
        self.voltage_set_v = vdd_v

    # --- setting

    def set_voltage(self, vdd_v: float) -> float:
        """Ramp the set point to ``vdd_v`` and wait until the output has settled.

        Parameters
        ----------
        vdd_v : float
            New VDD in V, within ``[limits.min_v, limits.max_v]``.

        Returns
        -------
        float
            The measured output voltage once settled (the set point if the output
            is off, when there is nothing to wait for).

        Raises
        ------
        SupplyLimitError
            ``vdd_v`` is outside the limits or not a finite number (NaN, inf,
            ``10**400``, a string, a bool, None: nothing is sent), or the present set
            point is outside the limits (someone changed it behind this driver's back).
        InstrumentError
            The supply reports an error after a write, a reply does not parse, the
            session cannot be resynchronised after an earlier interrupted exchange,
            or the output does not settle within ``limits.settle_tol_v`` in
            ``limits.settle_timeout_s``.
        """
        target_v = self.limits.check(vdd_v)
        quantised_v = _on_voltage_grid(target_v)
        self.limits.check(quantised_v)  # a limit off the 0.1 mV grid
        present_v = self._read_set_point()
        if not self.limits.min_v <= present_v <= self.limits.max_v:
            raise SupplyLimitError(
                f"supply set point is {_fmt(present_v)} V, outside the configured limits "
                f"{_fmt(self.limits.min_v)}..{_fmt(self.limits.max_v)} V (changed behind the driver's back?); not ramping"
            )
        previous_v = self._last_v
        assert previous_v is not None
        for step_v in ramp_set_points(previous_v, target_v, self.limits.max_step_v):
            self.voltage_set_v = step_v
            self._sleep(abs(step_v - previous_v) / self.limits.max_slew_v_per_s)
            previous_v = step_v
        if self._output_on is None:  # an interrupted OUTP write: ask rather than guess
            self._output_on = self.output_enabled
        if self._output_on is False:
            return quantised_v
        return self._wait_settled(quantised_v)

    def _wait_settled(self, target_v: float) -> float:
        deadline = self._clock() + self.limits.settle_timeout_s
        while True:
            measured_v = self.measured_voltage_v
            if abs(measured_v - target_v) <= self.limits.settle_tol_v:
                return measured_v
            if self._clock() >= deadline:
                raise InstrumentError(
                    f"supply output did not settle to {target_v:g} V +- {self.limits.settle_tol_v:g} V "
                    f"within {self.limits.settle_timeout_s:g} s (last reading {measured_v:g} V)"
                )
            self._sleep(self.settle_poll_s)

    def restore_nominal(self) -> float:
        """Ramp back to ``limits.nominal_v`` (see :meth:`set_voltage`)."""
        return self.set_voltage(self.limits.nominal_v)

    # --- lifetime

    def close(self) -> None:
        """Restore the nominal voltage, then close the resource (the shared ResourceManager stays open)."""
        if self._closed:
            return
        try:
            self.restore_nominal()
        finally:
            self._close_resource()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as restore_exc:  # keep the original exception; say what else failed
            add_note(
                exc, f"while restoring the nominal supply voltage: {type(restore_exc).__name__}: {_one_line(restore_exc)}"
            )


class ThermalController(ScpiInstrument):
    """The DIMM heater/TEC controller.

    Opening it asks ``*IDN?`` and checks that ``SYST:ERR?`` is clean; the set point
    and output are left as they are (the present set point is not checked
    against the limits, only new ones are).  ``close()`` only closes the resource.

    Parameters
    ----------
    resource : MessageResource
        An open message-based resource with ``"\\n"`` read/write termination.
    limits : ThermalLimits
        What the set point may be.
    sleep, clock : callable
        Defaults for :meth:`wait_stable`.
    clear_errors : bool
        Send ``*CLS`` at open instead of refusing a controller with queued errors.
    """

    kind = "thermal controller"

    def __init__(
        self,
        resource: MessageResource,
        limits: ThermalLimits,
        *,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        clear_errors: bool = False,
    ) -> None:
        if not isinstance(limits, ThermalLimits):
            raise InstrumentValueError(f"limits must be a ThermalLimits, got {type(limits).__name__}")
        self.limits = limits
        self._sleep = sleep
        self._clock = clock
        super().__init__(resource, clear_errors=clear_errors)

    @classmethod
    def open(
        cls,
        resource_name: str,
        limits: ThermalLimits,
        rm_spec: str = "@py",
        *,
        timeout_ms: int = 2000,
        **kwargs: Any,
    ) -> "ThermalController":
        """Open a controller by VISA resource name (see :meth:`BenchSupply.open`)."""
        return cls._open_by_name(resource_name, rm_spec, timeout_ms, limits, **kwargs)

    def _validate_set_point(self, temp_c: object, what: str) -> float:
        """The ``TEMP:SET`` value to send: within the limits, checked again on the 1 mC grid it is sent on."""
        sent_c = float(f"{self.limits.check(temp_c):.3f}")  # type: ignore[arg-type]
        return self.limits.check(sent_c)

    set_point_c = Control(
        get="TEMP:SET?",
        set="TEMP:SET {value:.3f}",
        unit="C",
        validator=_validate_set_point,
        doc="Temperature set point in degC; a new one must lie within [limits.min_c, limits.max_c] "
        "(ThermalLimitError, nothing sent).",
    )
    temperature_c = Control(get="MEAS:TEMP?", unit="C", doc="Measured DIMM temperature in degC.")
    output_enabled = Control(
        get="OUTP?",
        set="OUTP {value:d}",
        parse=_parse_bool,
        validator=boolean,
        doc="Whether temperature regulation is on; takes True/False (also numpy.bool_, 0 and 1).",
    )

    def wait_stable(
        self,
        band_c: float | None = None,
        hold_s: float = 0.5,
        timeout_s: float = 60.0,
        poll_s: float = 0.05,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> float:
        """Wait until the temperature has stayed within ``band_c`` of the set point for ``hold_s``.

        Parameters
        ----------
        band_c : float, optional
            Half-width of the band in degC (default ``limits.band_c``).
        hold_s : float
            How long the readings must stay in the band, in s.
        timeout_s : float
            Give up after this long, in s.
        poll_s : float
            Interval between readings, in s.
        clock, sleep : callable, optional
            Override the controller's clock and sleep.

        Returns
        -------
        float
            The last temperature reading, in degC.

        Raises
        ------
        InstrumentValueError
            A value that is not a finite number or out of range (``band_c`` in (0, 1000] C,
            ``hold_s`` in [0, 86400] s, ``timeout_s`` in [0, 1e6] s, ``poll_s`` in (0, 3600] s),
            before anything is sent.
        InstrumentError
            Timeout (the message gives the last reading).
        """
        band_c = self.limits.band_c if band_c is None else band_c
        band_c = _check_number("band_c", band_c, lo=0.0, lo_open=True, hi=1000.0, unit="C")
        hold_s = _check_number("hold_s", hold_s, lo=0.0, hi=86400.0, unit="s")
        timeout_s = _check_number("timeout_s", timeout_s, lo=0.0, hi=1e6, unit="s")
        poll_s = _check_number("poll_s", poll_s, lo=0.0, lo_open=True, hi=3600.0, unit="s")
        clock = clock or self._clock
        sleep = sleep or self._sleep
        set_point_c = self.set_point_c
        start_s = clock()
        inside_since_s: float | None = None
        while True:
            temp_c = self.temperature_c
            now_s = clock()
            if abs(temp_c - set_point_c) <= band_c:
                if inside_since_s is None:
                    inside_since_s = now_s
                if now_s - inside_since_s >= hold_s:
                    return temp_c
            else:
                inside_since_s = None
            if now_s - start_s >= timeout_s:
                raise InstrumentError(
                    f"temperature not stable within {band_c:g} C of {set_point_c:g} C for {hold_s:g} s "
                    f"after {timeout_s:g} s (last reading {temp_c:.3f} C)"
                )
            sleep(poll_s)

    def close(self) -> None:
        """Close the resource (the shared ResourceManager stays open); the set point is left as it is."""
        self._close_resource()

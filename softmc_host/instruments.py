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

The safety rule of :class:`BenchSupply`: no code path writes a ``VOLT`` set point
outside ``[min_v, max_v]``, and no single change exceeds ``max_step_v``.  A
request outside the limits raises :class:`SupplyLimitError` before any byte is
sent; every ``VOLT`` write goes through one method that checks both conditions
again on the exact value it is about to send.

SCPI used (the emulator in :mod:`firmware_bridge.emulator.instruments` speaks it):
supply ``*IDN?``, ``*CLS``, ``SYST:ERR?``, ``VOLT <v>``/``VOLT?``,
``CURR <a>``/``CURR?``, ``OUTP 1|0``/``OUTP?``, ``MEAS:VOLT?``, ``MEAS:CURR?``,
``STAT:QUES:COND?``; thermal controller ``TEMP:SET <c>``/``TEMP:SET?``,
``MEAS:TEMP?``, ``OUTP 1|0``/``OUTP?``.  Set points are written with 0.1 mV and
1 mC resolution.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

__all__ = [
    "InstrumentError",
    "SupplyLimitError",
    "ThermalLimitError",
    "MessageResource",
    "SupplyLimits",
    "BenchSupply",
    "ThermalLimits",
    "ThermalController",
    "VOLTAGE_RESOLUTION_V",
    "ramp_set_points",
]

#: Resolution of the voltage set points written by :class:`BenchSupply`, in V.
VOLTAGE_RESOLUTION_V = 1e-4
_V_DIGITS = 4
_V_QUANTA_PER_V = 10**_V_DIGITS
_EPS_V = 1e-9

Sleep = Callable[[float], None]
Clock = Callable[[], float]


class InstrumentError(RuntimeError):
    """An instrument reported an error, did not answer, or did not reach a requested state."""


class SupplyLimitError(InstrumentError, ValueError):
    """A supply voltage outside the configured limits was requested (nothing was sent)."""


class ThermalLimitError(InstrumentError, ValueError):
    """A temperature set point outside the configured limits was requested (nothing was sent)."""


class MessageResource(Protocol):
    """What the drivers need of a resource: a PyVISA ``MessageBasedResource`` fits."""

    def write(self, message: str) -> Any: ...

    def query(self, message: str) -> str: ...

    def close(self) -> Any: ...


def _is_finite_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: float) -> str:
    """Shortest round-trip text of a number, as the user wrote it (``1.0``, ``0.9``)."""
    return repr(float(value))


def _finite(name: str, value: float) -> float:
    if not _is_finite_number(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


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
            _finite(name, getattr(self, name))
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

    def check(self, vdd_v: float) -> float:
        """Return ``vdd_v`` as a float if it is within ``[min_v, max_v]``.

        Raises
        ------
        SupplyLimitError
            The value is outside the limits or not a finite number.
        """
        if not _is_finite_number(vdd_v):
            raise SupplyLimitError(f"supply voltage {vdd_v!r} is not a finite number of volts")
        if not self.min_v <= vdd_v <= self.max_v:
            raise SupplyLimitError(
                f"supply voltage {_fmt(vdd_v)} V outside the configured limits {_fmt(self.min_v)}..{_fmt(self.max_v)} V"
            )
        return float(vdd_v)


def _parse_float(reply: str, what: str) -> float:
    try:
        value = float(reply.strip())
    except ValueError:
        raise InstrumentError(f"{what}: expected a number, got {reply!r}") from None
    if not math.isfinite(value) or abs(value) >= 9.9e37:  # SCPI's NaN is 9.91E37
        raise InstrumentError(f"{what}: instrument returned no valid value ({reply.strip()!r})")
    return value


def _parse_bool(reply: str, what: str) -> bool:
    word = reply.strip().upper()
    if word in ("1", "ON"):
        return True
    if word in ("0", "OFF"):
        return False
    raise InstrumentError(f"{what}: expected 1/0, got {reply!r}")



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
    """
    max_q = int(math.floor(max_step_v * _V_QUANTA_PER_V + 1e-6))
    if max_q < 1:
        raise ValueError(f"max_step_v must be at least {VOLTAGE_RESOLUTION_V} V, got {max_step_v!r}")
    start_q = round(start_v * _V_QUANTA_PER_V)
    delta_q = round(target_v * _V_QUANTA_PER_V) - start_q
    n = -(-abs(delta_q) // max_q)  # ceil
    # floor(delta * k / n + 1/2) in exact integer arithmetic: consecutive differences
    # are at most ceil(|delta| / n) <= max_q, and the last point is the target
    return [(start_q + (2 * delta_q * k + n) // (2 * n)) / _V_QUANTA_PER_V for k in range(1, n + 1)]


class _ScpiDriver:
    """Plumbing shared by the drivers: queries with error wrapping, SYST:ERR? checks."""

    kind = "instrument"

    def __init__(self, resource: MessageResource, *, clear_errors: bool) -> None:
        self.resource = resource
        self._closed = False
        self.idn = self._query("*IDN?").strip()
        if clear_errors:
            self._write("*CLS")
        else:
            self._check_errors("at open")

    @staticmethod
    def _open_resource(resource_name: str, rm_spec: str, timeout_ms: int) -> Any:
        # PyVISA keeps ONE ResourceManager per VISA library and hands it to every
        # ResourceManager(spec) call; closing it would close every resource opened
        # through it (the other instruments' too), so it is left open here.
        import pyvisa

        rm = pyvisa.ResourceManager(rm_spec)
        return rm.open_resource(resource_name, read_termination="\n", write_termination="\n", timeout=timeout_ms)

    def _query(self, command: str) -> str:
        try:
            return self.resource.query(command)
        except InstrumentError:
            raise
        except Exception as exc:  # pyvisa.errors.VisaIOError (timeout, connection lost) and the like
            raise InstrumentError(f"{self.kind}: no valid reply to {command!r}: {exc}") from exc

    def _write(self, command: str) -> None:
        try:
            self.resource.write(command)
        except Exception as exc:
            raise InstrumentError(f"{self.kind}: could not send {command!r}: {exc}") from exc
        self._check_errors(f"after {command!r}")

    def _check_errors(self, when: str) -> None:
        reply = self._query("SYST:ERR?").strip()
        code_text = reply.split(",", 1)[0].strip()
        try:
            code = int(code_text)
        except ValueError:
            raise InstrumentError(f"{self.kind}: unreadable SYST:ERR? reply {reply!r} {when}") from None
        if code != 0:
            raise InstrumentError(f"{self.kind} reported error {reply} {when}")

    def _close_resource(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.resource.close()


class BenchSupply(_ScpiDriver):
    """The DIMM's VDD supply, with enforced limits, ramping and settling.

    Opening it asks ``*IDN?``, checks that ``SYST:ERR?`` is clean, reads the
    present set point (if it is outside the limits, :class:`SupplyLimitError` is
    raised and nothing is written) and programs ``limits.current_limit_a``.

    Parameters
    ----------
    resource : MessageResource
        An open message-based resource with ``"\\n"`` read/write termination.
    limits : SupplyLimits
        What the supply may be set to.
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
        self.limits = limits
        self._sleep = sleep
        self._clock = clock
        self.settle_poll_s = settle_poll_s
        self._last_v: float | None = None
        self._output_on: bool | None = None
        super().__init__(resource, clear_errors=clear_errors)
        present_v = self._read_set_point()
        try:
            limits.check(present_v)
        except SupplyLimitError as exc:
            raise SupplyLimitError(f"refusing to take over the supply: its present set point is out of range: {exc}") from None
        self._write(f"CURR {limits.current_limit_a:.4f}")
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
        resource = cls._open_resource(resource_name, rm_spec, timeout_ms)
        try:
            return cls(resource, limits, **kwargs)
        except BaseException:
            resource.close()
            raise

    # --- the one place VOLT is written

    def _write_voltage(self, vdd_v: float) -> None:
        """Send one ``VOLT`` set point after checking the range and the step (the safety guard)."""
        text = f"{vdd_v:.{_V_DIGITS}f}"
        sent_v = float(text)
        self.limits.check(sent_v)
        if self._last_v is None:
            raise SupplyLimitError("supply set point unknown: refusing to write VOLT before reading VOLT?")
        step_v = abs(sent_v - self._last_v)
        if step_v > self.limits.max_step_v + _EPS_V:
            raise SupplyLimitError(
                f"supply step {self._last_v:g} -> {sent_v:g} V exceeds max_step_v {self.limits.max_step_v:g} V"
            )
        self._last_v = None  # unknown until the supply accepted it
        self._write(f"VOLT {text}")
        self._last_v = sent_v

    # --- reading

    def _read_set_point(self) -> float:
        value = _parse_float(self._query("VOLT?"), "supply VOLT?")
        # remember it on the write grid: ramp steps are measured from here
        self._last_v = round(value * _V_QUANTA_PER_V) / _V_QUANTA_PER_V
        return value

    @property
    def voltage_set_v(self) -> float:
        """The set point as the supply reports it, in V."""
        return self._read_set_point()

    @property
    def measured_voltage_v(self) -> float:
        """The output voltage the supply measures, in V."""
        return _parse_float(self._query("MEAS:VOLT?"), "supply MEAS:VOLT?")

    @property
    def measured_current_a(self) -> float:
        """The output current the supply measures, in A."""
        return _parse_float(self._query("MEAS:CURR?"), "supply MEAS:CURR?")

    @property
    def measured_power_w(self) -> float:
        """Measured output voltage times measured current, in W."""
        return self.measured_voltage_v * self.measured_current_a

    @property
    def current_limit_a(self) -> float:
        """The current limit programmed in the supply, in A (set from the limits at open)."""
        return _parse_float(self._query("CURR?"), "supply CURR?")

    @property
    def current_limited(self) -> bool:
        """Whether the supply is limiting its current now (``STAT:QUES:COND?`` bit 1)."""
        return bool(int(_parse_float(self._query("STAT:QUES:COND?"), "supply STAT:QUES:COND?")) & 0x2)

    @property
    def output_enabled(self) -> bool:
        """Whether the output is on (``OUTP?``); setting it sends ``OUTP 1`` / ``OUTP 0``."""
        return _parse_bool(self._query("OUTP?"), "supply OUTP?")

    @output_enabled.setter
    def output_enabled(self, enabled: bool) -> None:
        self._output_on = None  # unknown if the write fails
        self._write("OUTP 1" if enabled else "OUTP 0")
        self._output_on = bool(enabled)

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
            ``vdd_v`` is outside the limits (nothing is sent), or the present set
            point is (someone changed it behind this driver's back).
        InstrumentError
            The supply reports an error after a write, or the output does not
            settle within ``limits.settle_tol_v`` in ``limits.settle_timeout_s``.
        """
        target_v = self.limits.check(vdd_v)
        quantised_v = round(target_v * _V_QUANTA_PER_V) / _V_QUANTA_PER_V
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
            self._write_voltage(step_v)
            self._sleep(abs(step_v - previous_v) / self.limits.max_slew_v_per_s)
            previous_v = step_v
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

    def __enter__(self) -> "BenchSupply":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as restore_exc:  # keep the original exception; say what else failed
            exc.add_note(f"while restoring the nominal supply voltage: {type(restore_exc).__name__}: {restore_exc}")


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
            _finite(name, getattr(self, name))
        if not self.min_c <= self.max_c:
            raise ValueError(f"min_c ({self.min_c} C) must not exceed max_c ({self.max_c} C)")
        if self.band_c <= 0:
            raise ValueError(f"band_c must be positive, got {self.band_c} C")

    def check(self, temp_c: float) -> float:
        """Return ``temp_c`` as a float if it is within ``[min_c, max_c]``, else raise :class:`ThermalLimitError`."""
        if not _is_finite_number(temp_c):
            raise ThermalLimitError(f"temperature set point {temp_c!r} is not a finite number of degC")
        if not self.min_c <= temp_c <= self.max_c:
            raise ThermalLimitError(
                f"temperature set point {_fmt(temp_c)} C outside the configured limits {_fmt(self.min_c)}..{_fmt(self.max_c)} C"
            )
        return float(temp_c)


class ThermalController(_ScpiDriver):
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
        resource = cls._open_resource(resource_name, rm_spec, timeout_ms)
        try:
            return cls(resource, limits, **kwargs)
        except BaseException:
            resource.close()
            raise

    @property
    def set_point_c(self) -> float:
        """Temperature set point in degC, within ``[limits.min_c, limits.max_c]``; checked before sending."""
        return _parse_float(self._query("TEMP:SET?"), "thermal TEMP:SET?")

    @set_point_c.setter
    def set_point_c(self, temp_c: float) -> None:
        value = self.limits.check(temp_c)
        self._write(f"TEMP:SET {value:.3f}")

    @property
    def temperature_c(self) -> float:
        """Measured DIMM temperature in degC."""
        return _parse_float(self._query("MEAS:TEMP?"), "thermal MEAS:TEMP?")

    @property
    def output_enabled(self) -> bool:
        """Whether temperature regulation is on (``OUTP?``); setting it sends ``OUTP 1`` / ``OUTP 0``."""
        return _parse_bool(self._query("OUTP?"), "thermal OUTP?")

    @output_enabled.setter
    def output_enabled(self, enabled: bool) -> None:
        self._write("OUTP 1" if enabled else "OUTP 0")

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
        InstrumentError
            Timeout (the message gives the last reading).
        """
        band_c = self.limits.band_c if band_c is None else band_c
        if not band_c > 0 or not hold_s >= 0 or not timeout_s >= 0 or not poll_s > 0:
            raise ValueError("band_c and poll_s must be positive, hold_s and timeout_s non-negative")
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

    def __enter__(self) -> "ThermalController":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

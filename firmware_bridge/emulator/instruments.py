"""Emulated bench instruments: a DIMM supply and a DIMM thermal controller, spoken to in SCPI.

Wire format
-----------
Line-based SCPI over a TCP stream, ASCII, as a VISA ``TCPIP::HOST::PORT::SOCKET``
resource sees it (read and write termination ``"\\n"``):

* every line the host sends is one *program message*; a trailing ``"\\r"`` is
  ignored; ``;`` separates several commands on one line.  Each command is taken
  from the root of the command tree (the SCPI "same subsystem" shorthand after a
  ``;`` is not supported);
* headers are case-insensitive and accept the short or the long form
  (``VOLT`` / ``VOLTage``, ``MEAS:CURR?`` / ``MEASure:CURRent?``); a leading
  ``:`` is allowed;
* a command that sets something sends **no** reply; a query sends one reply line;
  the replies of several queries on one line are joined with ``;`` into one line;
* an unknown header or a bad parameter queues an error and sends no reply (so a
  query with a bad header leaves the host to time out, as on a real instrument);
  ``SYST:ERR?`` pops the oldest error as ``<code>,"<message>"`` and answers
  ``0,"No error"`` when the queue is empty.  Errors used:

  ====  ==========================
  -104  Data type error (not a number: ASCII decimal only, finite)
  -108  Parameter not allowed
  -109  Missing parameter
  -113  Undefined header
  -222  Data out of range
  -224  Illegal parameter value
  -300  Device-specific error (an exception inside the emulator)
  -350  Queue overflow
  -363  Input buffer overrun (a line longer than 64 KiB)
  ====  ==========================

Common commands of both instruments: ``*IDN?`` (``EDEN-EMU,<model>,<serial>,1.0``),
``*RST`` (power-on settings), ``*CLS`` (clear error queue and event registers),
``*OPC?`` (``1``), ``SYST:ERR?``.  See :class:`EmulatedSupply` and
:class:`EmulatedThermal` for their own commands.
"""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

__all__ = [
    "ScpiInstrument",
    "EmulatedSupply",
    "EmulatedThermal",
    "ScpiServer",
]

_LONG_FORMS = {
    "VOLTAGE": "VOLT",
    "CURRENT": "CURR",
    "OUTPUT": "OUTP",
    "MEASURE": "MEAS",
    "SYSTEM": "SYST",
    "ERROR": "ERR",
    "TEMPERATURE": "TEMP",
    "STATUS": "STAT",
    "STATE": "STAT",
    "QUESTIONABLE": "QUES",
    "CONDITION": "COND",
    "EVENT": "EVEN",
    "SETPOINT": "SET",
}

_MAX_LINE_BYTES = 65536
_SCPI_NAN = "9.91E+37"


class _ScpiError(Exception):
    """An error to queue: SCPI code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f'{code},"{message}"')
        self.code = code
        self.message = message


def _undefined() -> _ScpiError:
    return _ScpiError(-113, "Undefined header")


def _normalise_header(header: str) -> str:
    """Upper-case a header and reduce each node to its short form (``:MEASure:VOLTage?`` -> ``MEAS:VOLT?``)."""
    header = header.strip().upper()
    if header.startswith(":"):
        header = header[1:]
    query = header.endswith("?")
    if query:
        header = header[:-1]
    nodes = [_LONG_FORMS.get(node, node) for node in header.split(":")]
    return ":".join(nodes) + ("?" if query else "")


#: A SCPI decimal numeric parameter, ASCII digits only (``float()`` alone would also take
#: ``1_2``, ``nan``, ``infinity`` and non-ASCII digits such as ``１.２``).
_SCPI_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?", re.ASCII)


def _parse_number(arg: str | None) -> float:
    if arg is None or not arg.strip():
        raise _ScpiError(-109, "Missing parameter")
    text = arg.strip(" \t\r\n")
    if len(text) > 256 or _SCPI_NUMBER.fullmatch(text) is None:
        raise _ScpiError(-104, "Data type error")
    value = float(text)
    if not math.isfinite(value):
        raise _ScpiError(-104, "Data type error")
    return value


def _parse_bool(arg: str | None) -> bool:
    if arg is None or not arg.strip():
        raise _ScpiError(-109, "Missing parameter")
    word = arg.strip().upper()
    if word in ("ON", "1"):
        return True
    if word in ("OFF", "0"):
        return False
    raise _ScpiError(-224, "Illegal parameter value")


def _in_range(value: float, lo: float, hi: float) -> float:
    if not lo <= value <= hi:
        raise _ScpiError(-222, "Data out of range")
    return value


def _no_arg(arg: str | None) -> None:
    if arg is not None and arg.strip():
        raise _ScpiError(-108, "Parameter not allowed")


class ScpiInstrument:
    """Common part of the emulated instruments: error queue, common commands, parsing.

    Subclasses implement :meth:`_command` (their own headers) and :meth:`_reset`.
    All state changes happen under :attr:`_lock`, so an instrument may be served
    over the network and read by the emulated DIMM from another thread.

    Parameters
    ----------
    model : str
        Second field of the ``*IDN?`` reply.
    serial : str
        Third field of the ``*IDN?`` reply.
    """

    #: Errors kept before the last one is replaced by -350 "Queue overflow".
    ERROR_QUEUE_LENGTH = 16

    def __init__(self, model: str, serial: str) -> None:
        self.model = model
        self.serial = serial
        self._lock = threading.RLock()
        self._errors: deque[_ScpiError] = deque()

    # --- error queue

    def _queue_error(self, error: _ScpiError) -> None:
        with self._lock:
            if len(self._errors) >= self.ERROR_QUEUE_LENGTH:
                self._errors[-1] = _ScpiError(-350, "Queue overflow")
            else:
                self._errors.append(error)

    def queue_error(self, code: int, message: str) -> None:
        """Queue an error as the instrument would (used by the server and by tests)."""
        self._queue_error(_ScpiError(code, message))

    def pending_errors(self) -> list[str]:
        """The queued errors, oldest first, as ``SYST:ERR?`` would return them (not removed)."""
        with self._lock:
            return [str(e) for e in self._errors]

    # --- command handling

    def handle_line(self, line: str) -> str | None:
        """Execute one program message and return the reply line (without ``"\\n"``), or None.

        Parameters
        ----------
        line : str
            One line as received, without its terminator; ``;`` separates commands.

        Returns
        -------
        str or None
            The replies of the queries on the line joined with ``;``; None when the
            line held no query that replied.
        """
        replies = []
        for unit in line.rstrip("\r").split(";"):
            if not unit.strip():
                continue
            reply = self.execute(unit)
            if reply is not None:
                replies.append(reply)
        return ";".join(replies) if replies else None

    def execute(self, command: str) -> str | None:
        """Execute one command (no ``;``) and return its reply, or None for a setting or an error."""
        parts = command.strip().split(None, 1)
        if not parts:
            return None
        header = _normalise_header(parts[0])
        arg = parts[1] if len(parts) > 1 else None
        try:
            return self._common(header, arg)
        except _ScpiError as error:
            self._queue_error(error)
            return None
        except Exception as exc:  # a bug or a failing load callback: report it, keep serving
            self._queue_error(_ScpiError(-300, f"Device-specific error; {type(exc).__name__}: {exc}"))
            return _SCPI_NAN if header.endswith("?") else None

    def _common(self, header: str, arg: str | None) -> str | None:
        if header == "*IDN?":
            _no_arg(arg)
            return f"EDEN-EMU,{self.model},{self.serial},1.0"
        if header == "*RST":
            _no_arg(arg)
            with self._lock:
                self._reset()
            return None
        if header == "*CLS":
            _no_arg(arg)
            with self._lock:
                self._errors.clear()
                self._clear_events()
            return None
        if header == "*OPC?":
            _no_arg(arg)
            return "1"
        if header in ("SYST:ERR?", "SYST:ERR:NEXT?"):
            _no_arg(arg)
            with self._lock:
                return str(self._errors.popleft()) if self._errors else '0,"No error"'
        return self._command(header, arg)

    def _command(self, header: str, arg: str | None) -> str | None:
        """Execute an instrument-specific command; raise ``_ScpiError`` for errors."""
        raise _undefined()

    def _reset(self) -> None:
        """Return to the power-on settings (called with the lock held)."""

    def _clear_events(self) -> None:
        """Clear event registers (called with the lock held by ``*CLS``)."""


class EmulatedSupply(ScpiInstrument):
    """An emulated single-channel bench supply feeding the DIMM's VDD.

    Commands (besides the common ones):

    ==================  ==================================================================
    ``VOLT <v>``        set point in V, 0..2.0 (outside: -222)
    ``VOLT?``           set point
    ``CURR <a>``        current limit in A, 0..5.0
    ``CURR?``           current limit
    ``OUTP ON|OFF|1|0`` output on/off; ``OUTP?`` answers 1/0
    ``MEAS:VOLT?``      output voltage: the set point when the output is on, else 0.0
    ``MEAS:CURR?``      load current ``load_current_fn(vdd_v)``, clipped to the limit
    ``STAT:QUES?``      questionable event register, cleared by reading and by ``*CLS``;
                        bit 1 (value 2) is set when a measurement found the supply
                        current-limiting
    ``STAT:QUES:COND?`` questionable condition register (2 while current-limiting)
    ==================  ==================================================================

    Current limiting is kept simple: the output voltage stays at the set point and
    the measured current is the limit.

    Parameters
    ----------
    nominal_v : float
        Power-on set point in V (also restored by ``*RST``).
    serial : str
        Serial number in the ``*IDN?`` reply.
    current_limit_a : float
        Power-on current limit in A.

    Attributes
    ----------
    load_current_fn : callable
        ``f(vdd_v) -> current_a``, the load the DIMM draws at a given output
        voltage; set it from the owner (e.g. the emulated DIMM with
        :func:`softmc_host.ddr3_power.interval_power`).  Called without the
        supply's lock held.  Defaults to no load.
    """

    MIN_V = 0.0
    MAX_V = 2.0
    MAX_CURRENT_A = 5.0
    #: Questionable status bit set while the output is current-limiting.
    QUES_CURRENT_LIMIT = 0x2

    def __init__(self, nominal_v: float = 1.35, serial: str = "PSU-0001", *, current_limit_a: float = 1.0) -> None:
        super().__init__("BENCH-PSU", serial)
        if not self.MIN_V <= nominal_v <= self.MAX_V:
            raise ValueError(f"nominal_v {nominal_v} V outside the supply's range {self.MIN_V}..{self.MAX_V} V")
        if not 0.0 <= current_limit_a <= self.MAX_CURRENT_A:
            raise ValueError(f"current_limit_a {current_limit_a} A outside 0..{self.MAX_CURRENT_A} A")
        self.nominal_v = float(nominal_v)
        self.default_current_limit_a = float(current_limit_a)
        self.load_current_fn: Callable[[float], float] = lambda vdd_v: 0.0
        self._set_v = self.nominal_v
        self._limit_a = self.default_current_limit_a
        self._output = True
        self._ques_event = 0
        self._ques_cond = 0

    def _reset(self) -> None:
        self._set_v = self.nominal_v
        self._limit_a = self.default_current_limit_a
        self._output = True
        self._ques_cond = 0

    def _clear_events(self) -> None:
        self._ques_event = 0

    @property
    def voltage_set_v(self) -> float:
        """The set point in V."""
        with self._lock:
            return self._set_v

    @property
    def output_enabled(self) -> bool:
        """Whether the output is on."""
        with self._lock:
            return self._output

    def output_voltage_v(self) -> float:
        """The voltage at the output terminals in V (what the emulated DIMM sees)."""
        with self._lock:
            return self._set_v if self._output else 0.0

    def measured_current_a(self) -> float:
        """The output current in A: the load at the present voltage, clipped to the limit.

        Updates the current-limiting bit of the questionable registers.
        """
        with self._lock:
            vdd_v, on, limit_a = self.output_voltage_v(), self._output, self._limit_a
        load_a = float(self.load_current_fn(vdd_v)) if on else 0.0
        limiting = load_a > limit_a
        with self._lock:
            if limiting:
                self._ques_cond |= self.QUES_CURRENT_LIMIT
                self._ques_event |= self.QUES_CURRENT_LIMIT
            else:
                self._ques_cond &= ~self.QUES_CURRENT_LIMIT
        return min(max(load_a, 0.0), limit_a)

    def _command(self, header: str, arg: str | None) -> str | None:
        with self._lock:
            if header == "VOLT":
                self._set_v = _in_range(_parse_number(arg), self.MIN_V, self.MAX_V)
                return None
            if header == "CURR":
                self._limit_a = _in_range(_parse_number(arg), 0.0, self.MAX_CURRENT_A)
                return None
            if header in ("OUTP", "OUTP:STAT"):
                self._output = _parse_bool(arg)
                if not self._output:
                    self._ques_cond = 0
                return None
            if header.endswith("?"):
                _no_arg(arg)
            if header == "VOLT?":
                return f"{self._set_v:.6f}"
            if header == "CURR?":
                return f"{self._limit_a:.6f}"
            if header in ("OUTP?", "OUTP:STAT?"):
                return "1" if self._output else "0"
            if header == "MEAS:VOLT?":
                return f"{self.output_voltage_v():.6f}"
            if header in ("STAT:QUES?", "STAT:QUES:EVEN?"):
                value, self._ques_event = self._ques_event, 0
                return str(value)
            if header == "STAT:QUES:COND?":
                return str(self._ques_cond)
        if header == "MEAS:CURR?":  # outside the lock: the load callback may read the supply
            return f"{self.measured_current_a():.6e}"
        raise _undefined()


class EmulatedThermal(ScpiInstrument):
    """An emulated DIMM heater/TEC controller.

    The DIMM temperature follows a first-order lag in wall-clock time towards the
    set point (output on) or towards ambient (output off)::

        T(t + dt) = target + (T(t) - target) * exp(-dt / tau_s)

    and ``MEAS:TEMP?`` adds uniform sensor noise in ``[-noise_c, +noise_c]``
    drawn from a generator seeded with ``seed``.

    Commands (besides the common ones):

    ===================  ==========================================
    ``TEMP:SET <c>``     set point in degC, 0..110 (outside: -222)
    ``TEMP:SET?``        set point
    ``MEAS:TEMP?``       measured DIMM temperature in degC
    ``OUTP ON|OFF|1|0``  regulation on/off; ``OUTP?`` answers 1/0
    ===================  ==========================================

    Parameters
    ----------
    initial_c : float
        Temperature of the DIMM and power-on set point in degC.
    seed : int
        Seed of the sensor noise.
    tau_s : float
        Time constant of the thermal lag in s (0.2 s keeps tests fast).
    serial : str
        Serial number in the ``*IDN?`` reply.
    ambient_c : float
        Temperature the DIMM drifts to with the output off, in degC.
    noise_c : float
        Half-width of the uniform sensor noise in degC.
    clock : callable
        Monotonic clock in seconds (injectable for tests).
    """

    MIN_C = 0.0
    MAX_C = 110.0

    def __init__(
        self,
        initial_c: float = 25.0,
        seed: int = 0,
        tau_s: float = 0.2,
        *,
        serial: str = "TEC-0001",
        ambient_c: float = 25.0,
        noise_c: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("BENCH-TEC", serial)
        if not self.MIN_C <= initial_c <= self.MAX_C:
            raise ValueError(f"initial_c {initial_c} C outside {self.MIN_C}..{self.MAX_C} C")
        if not tau_s > 0:
            raise ValueError(f"tau_s must be positive, got {tau_s!r}")
        if not noise_c >= 0:
            raise ValueError(f"noise_c must be non-negative, got {noise_c!r}")
        self.initial_c = float(initial_c)
        self.tau_s = float(tau_s)
        self.ambient_c = float(ambient_c)
        self.noise_c = float(noise_c)
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        self._set_c = self.initial_c
        self._output = True
        self._temp_c = self.initial_c
        self._t_s = clock()

    def _advance(self) -> None:
        """Bring the modelled temperature up to now (lock held)."""
        now = self._clock()
        dt = now - self._t_s
        self._t_s = now
        if dt > 0:
            target = self._set_c if self._output else self.ambient_c
            self._temp_c = target + (self._temp_c - target) * math.exp(-dt / self.tau_s)

    def _reset(self) -> None:
        self._advance()
        self._set_c = self.initial_c
        self._output = True

    @property
    def set_point_c(self) -> float:
        """The set point in degC."""
        with self._lock:
            return self._set_c

    def temperature_c(self) -> float:
        """The DIMM temperature now, in degC, without sensor noise (what the emulated DIMM sees)."""
        with self._lock:
            self._advance()
            return self._temp_c

    def measured_temperature_c(self) -> float:
        """The temperature as the sensor reads it (with seeded noise), in degC."""
        with self._lock:
            self._advance()
            return self._temp_c + float(self._rng.uniform(-self.noise_c, self.noise_c))

    def _command(self, header: str, arg: str | None) -> str | None:
        with self._lock:
            if header == "TEMP:SET":
                value = _in_range(_parse_number(arg), self.MIN_C, self.MAX_C)
                self._advance()
                self._set_c = value
                return None
            if header in ("OUTP", "OUTP:STAT"):
                value = _parse_bool(arg)
                self._advance()
                self._output = value
                return None
            if header.endswith("?"):
                _no_arg(arg)
            if header == "TEMP:SET?":
                return f"{self._set_c:.3f}"
            if header == "MEAS:TEMP?":
                return f"{self.measured_temperature_c():.3f}"
            if header in ("OUTP?", "OUTP:STAT?"):
                return "1" if self._output else "0"
        raise _undefined()


def _quick_ack(conn: socket.socket) -> None:
    """Acknowledge received data at once (Linux), instead of after the ~40 ms delayed ACK.

    A host that sends a command and then a query in two small segments without
    TCP_NODELAY (pyvisa-py 0.8 does not set it on SOCKET resources) has its query
    held back by Nagle's algorithm until the command is acknowledged; since a
    command has no reply to carry the ACK, every write-then-query would otherwise
    cost a delayed-ACK timeout.  Linux clears the flag after use, so it is set
    after every receive.
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        except OSError:
            pass


class ScpiServer:
    """Serves one emulated instrument on a TCP socket, in a daemon thread.

    Several clients may be connected at once, each served by its own thread, as
    LAN instruments allow; they share the instrument's state and error queue.  Each received line is one program message (see the
    module docstring); a reply is sent followed by ``"\\n"``.

    Parameters
    ----------
    instrument : ScpiInstrument
        The instrument to serve.
    host : str
        Address to bind (loopback by default).
    port : int
        Port to bind; 0 picks a free one (see :meth:`start`).

    Examples
    --------
    >>> with ScpiServer(EmulatedSupply(1.35)) as server:   # doctest: +SKIP
    ...     name = f"TCPIP::127.0.0.1::{server.port}::SOCKET"
    """

    #: How often the serving thread checks whether it should stop, in s.
    POLL_S = 0.05

    def __init__(self, instrument: ScpiInstrument, host: str = "127.0.0.1", port: int = 0) -> None:
        self.instrument = instrument
        self.host = host
        self._requested_port = port
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.port: int | None = None
        self.connections = 0

    def start(self) -> int:
        """Bind, listen and start serving; return the port."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self._requested_port))
            listener.listen(4)
        except OSError:
            listener.close()
            raise
        listener.settimeout(self.POLL_S)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._thread = threading.Thread(
            target=self._run, name=f"scpi-{self.instrument.model}-{self.port}", daemon=True
        )
        self._thread.start()
        return self.port

    def close(self) -> None:
        """Stop serving, drop the client if any, and close the listening socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.POLL_S + 1.0)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> "ScpiServer":
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(self.POLL_S)
            try:
                self._serve(conn)
            except OSError:  # reset by the client
                pass

    def _serve(self, conn: socket.socket) -> None:
        buffer = bytearray()
        while not self._stop.is_set():
            try:
                chunk = conn.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                return
            _quick_ack(conn)
            buffer += chunk
            while True:
                end = buffer.find(b"\n")
                if end < 0:
                    break
                line = bytes(buffer[:end]).decode("ascii", errors="replace")
                del buffer[: end + 1]
                reply = self.instrument.handle_line(line)
                if reply is not None:
                    conn.sendall(reply.encode("ascii", errors="replace") + b"\n")
            if len(buffer) > _MAX_LINE_BYTES:
                buffer.clear()
                self.instrument.queue_error(-363, "Input buffer overrun")

"""The SCPI dialect of the emulated instruments: parsing, error queue, common commands.

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
``*OPC?`` (``1``), ``SYST:ERR?``.  See :class:`~emubench.instruments.supply.EmulatedSupply` and
:class:`~emubench.instruments.thermal.EmulatedThermal` for their own commands.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque

__all__ = [
    "ScpiInstrument",
    "ScpiError",
    "MAX_LINE_BYTES",
    "SCPI_NAN",
    "normalise_header",
    "parse_number",
    "parse_bool",
    "in_range",
    "no_arg",
    "undefined_header",
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

#: Longest program message a server takes, in bytes (longer: -363 "Input buffer overrun").
MAX_LINE_BYTES = 65536
#: What a query answers when the instrument failed inside (SCPI's "not a number").
SCPI_NAN = "9.91E+37"


class ScpiError(Exception):
    """An error to queue: SCPI code and message (raised by command handlers, queued by :class:`ScpiInstrument`)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f'{code},"{message}"')
        self.code = code
        self.message = message


def undefined_header() -> ScpiError:
    """The -113 "Undefined header" error."""
    return ScpiError(-113, "Undefined header")


def normalise_header(header: str) -> str:
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


def parse_number(arg: str | None) -> float:
    """A SCPI decimal numeric parameter (ASCII, finite); -109 if missing, -104 otherwise."""
    if arg is None or not arg.strip():
        raise ScpiError(-109, "Missing parameter")
    text = arg.strip(" \t\r\n")
    if len(text) > 256 or _SCPI_NUMBER.fullmatch(text) is None:
        raise ScpiError(-104, "Data type error")
    value = float(text)
    if not math.isfinite(value):
        raise ScpiError(-104, "Data type error")
    return value


def parse_bool(arg: str | None) -> bool:
    """A SCPI boolean (``ON``/``OFF``/``1``/``0``); -109 if missing, -224 otherwise."""
    if arg is None or not arg.strip():
        raise ScpiError(-109, "Missing parameter")
    word = arg.strip().upper()
    if word in ("ON", "1"):
        return True
    if word in ("OFF", "0"):
        return False
    raise ScpiError(-224, "Illegal parameter value")


def in_range(value: float, lo: float, hi: float) -> float:
    """``value`` if within ``lo..hi``, else -222 "Data out of range"."""
    if not lo <= value <= hi:
        raise ScpiError(-222, "Data out of range")
    return value


def no_arg(arg: str | None) -> None:
    """Refuse a parameter where the header takes none (-108)."""
    if arg is not None and arg.strip():
        raise ScpiError(-108, "Parameter not allowed")


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
        self._errors: deque[ScpiError] = deque()

    # --- error queue

    def _queue_error(self, error: ScpiError) -> None:
        with self._lock:
            if len(self._errors) >= self.ERROR_QUEUE_LENGTH:
                self._errors[-1] = ScpiError(-350, "Queue overflow")
            else:
                self._errors.append(error)

    def queue_error(self, code: int, message: str) -> None:
        """Queue an error as the instrument would (used by the server and by tests)."""
        self._queue_error(ScpiError(code, message))

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
        header = normalise_header(parts[0])
        arg = parts[1] if len(parts) > 1 else None
        try:
            return self._common(header, arg)
        except ScpiError as error:
            self._queue_error(error)
            return None
        except Exception as exc:  # a bug or a failing load callback: report it, keep serving
            self._queue_error(ScpiError(-300, f"Device-specific error; {type(exc).__name__}: {exc}"))
            return SCPI_NAN if header.endswith("?") else None

    def _common(self, header: str, arg: str | None) -> str | None:
        if header == "*IDN?":
            no_arg(arg)
            return f"EDEN-EMU,{self.model},{self.serial},1.0"
        if header == "*RST":
            no_arg(arg)
            with self._lock:
                self._reset()
            return None
        if header == "*CLS":
            no_arg(arg)
            with self._lock:
                self._errors.clear()
                self._clear_events()
            return None
        if header == "*OPC?":
            no_arg(arg)
            return "1"
        if header in ("SYST:ERR?", "SYST:ERR:NEXT?"):
            no_arg(arg)
            with self._lock:
                return str(self._errors.popleft()) if self._errors else '0,"No error"'
        return self._command(header, arg)

    def _command(self, header: str, arg: str | None) -> str | None:
        """Execute an instrument-specific command; raise ``ScpiError`` for errors."""
        raise undefined_header()

    def _reset(self) -> None:
        """Return to the power-on settings (called with the lock held)."""

    def _clear_events(self) -> None:
        """Clear event registers (called with the lock held by ``*CLS``)."""

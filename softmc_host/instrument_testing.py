"""Wire tests of SCPI drivers: the exact exchanges a driver has with its instrument.

:func:`expected_protocol` (after PyMeasure's ``pymeasure.test.expected_protocol``)
builds a driver on a fake resource that plays a list of ``(command, reply)`` pairs,
and fails the test with a one-line :class:`ProtocolMismatch` as soon as the driver
sends something else, sends more, or (when the block ends) sent less::

    from softmc_host.instrument_testing import NO_ERROR, expected_protocol
    from softmc_host.instruments import ThermalController, ThermalLimits

    with expected_protocol(
        ThermalController,
        [("*IDN?", "ACME,TEC,1,1.0"), ("SYST:ERR?", NO_ERROR),   # what opening sends
         ("TEMP:SET 45.000", None), ("SYST:ERR?", NO_ERROR)],    # what the block sends
        ThermalLimits(0.0, 95.0),
    ) as tec:
        tec.set_point_c = 45.0

An exchange is ``(command, reply)``:

- ``reply`` a string: the driver must *query* ``command`` (``resource.query``) and gets
  ``reply`` back;
- ``reply`` None: the driver must *write* ``command`` (``resource.write``);
- ``reply`` an exception (instance or class, ``KeyboardInterrupt`` included): the driver
  must send ``command`` either way and the fake raises it instead of answering, as a
  timeout or a Ctrl-C inside the blocking read would;
- ``(DEVICE_CLEAR, None)``: the driver must send a VISA device clear (``resource.clear()``),
  as a resynchronisation does first (see :func:`resync_exchanges`).

Commands are compared exactly (no case folding, no whitespace trimming): the test says
what goes on the wire.  A mismatch is recorded and raised at the offending exchange,
and raised *again* when the block ends, because a driver may catch the first one and
wrap it (the drivers turn a failing ``query`` into :class:`~softmc_host.instruments.InstrumentError`):
a test that expects an ``InstrumentError`` cannot swallow a protocol mismatch.  If the
block ends with an exception while exchanges are still expected, that is a mismatch
too (the exception is chained), unless it is an :class:`AssertionError` (a failing
assertion of the test itself), which propagates with a note naming the missing exchanges.

The module has no test-framework dependency: ``ProtocolMismatch`` is an
``AssertionError``, which pytest reports as a test failure.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence, TypeVar, Union

from softmc_host._compat import add_note

__all__ = [
    "DEVICE_CLEAR",
    "NO_ERROR",
    "Exchange",
    "ProtocolMismatch",
    "ProtocolResource",
    "expected_protocol",
    "resync_exchanges",
]

#: The command of a VISA device clear in an exchange list: ``(DEVICE_CLEAR, None)``.
DEVICE_CLEAR = "<device clear>"
#: The ``SYST:ERR?`` reply of an instrument with no queued error.
NO_ERROR = '0,"No error"'

#: One exchange: ``(command, reply)``; reply a string (a query), None (a write) or an exception to raise.
Exchange = tuple[str, Union[str, None, BaseException, type]]

_Driver = TypeVar("_Driver")


class ProtocolMismatch(AssertionError):
    """The driver's exchanges differ from the expected ones: a wrong, an extra or a missing exchange."""


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_exception(reply: object) -> bool:
    return isinstance(reply, BaseException) or (isinstance(reply, type) and issubclass(reply, BaseException))


def _describe(command: str, reply: object) -> str:
    """What an expected exchange asks of the driver, in words."""
    if command == DEVICE_CLEAR:
        return "a device clear"
    if reply is None:
        return f"the write {_short(command)}"
    if _is_exception(reply):
        name = reply.__name__ if isinstance(reply, type) else type(reply).__name__
        return f"{_short(command)} (answered by raising {name})"
    return f"the query {_short(command)} (reply {_short(reply)})"


def resync_exchanges(idn: str) -> list[Exchange]:
    """The exchanges of one successful resynchronisation of a driver whose ``*IDN?`` is ``idn``.

    Device clear, ``*CLS``, ``*IDN?``, ``*OPC?`` and ``SYST:ERR?`` (see
    :meth:`softmc_host.instruments.ScpiInstrument._resync`).
    """
    return [(DEVICE_CLEAR, None), ("*CLS", None), ("*IDN?", idn), ("*OPC?", "1"), ("SYST:ERR?", NO_ERROR)]


class ProtocolResource:
    """A fake message resource that plays an expected list of exchanges (see the module docstring).

    Parameters
    ----------
    exchanges : sequence of (str, reply)
        The expected exchanges, in order.

    Attributes
    ----------
    done : list of (str, reply)
        The exchanges that took place as expected.
    mismatch : ProtocolMismatch or None
        The first mismatch, if there was one.
    closed : bool
        Whether ``close()`` was called.
    """

    def __init__(self, exchanges: Sequence[Exchange]) -> None:
        checked: list[Exchange] = []
        for index, exchange in enumerate(exchanges):
            if not isinstance(exchange, tuple) or len(exchange) != 2:
                raise TypeError(f"exchange {index + 1} must be a (command, reply) pair, got {_short(exchange)}")
            command, reply = exchange
            if not isinstance(command, str):
                raise TypeError(f"exchange {index + 1}: the command must be a string, got {_short(command)}")
            if not (reply is None or isinstance(reply, str) or _is_exception(reply)):
                raise TypeError(
                    f"exchange {index + 1}: the reply must be a string, None (a write) or an exception, got {_short(reply)}"
                )
            if command == DEVICE_CLEAR and reply is not None:
                raise TypeError(f"exchange {index + 1}: a device clear has no reply")
            checked.append((command, reply))
        self.exchanges: list[Exchange] = checked
        self.done: list[Exchange] = []
        self.mismatch: ProtocolMismatch | None = None
        self.closed = False

    @property
    def remaining(self) -> list[Exchange]:
        """The expected exchanges that have not taken place yet."""
        return self.exchanges[len(self.done) :]

    def _history(self) -> str:
        if not self.done:
            return "as the first exchange"
        last = ", ".join(_describe(*exchange) for exchange in self.done[-2:])
        return f"after {len(self.done)} matching exchanges (the last: {last})"

    def _fail(self, text: str) -> ProtocolMismatch:
        if self.mismatch is None:
            self.mismatch = ProtocolMismatch(text)
        return self.mismatch

    def _take(self, kind: str, command: str) -> Any:
        """Match one exchange the driver starts (``kind``: write, query or clear); return its reply."""
        if self.mismatch is not None:  # out of protocol: every later exchange fails the same way
            raise self.mismatch
        number = len(self.done) + 1
        sent = {"write": f"wrote {_short(command)}", "query": f"queried {_short(command)}", "clear": "sent a device clear"}[
            kind
        ]
        if not self.remaining:
            raise self._fail(
                f"exchange {number}: the driver {sent}, but the expected protocol ended "
                f"({len(self.exchanges)} exchanges; {self._history()})"
            )
        expected, reply = self.remaining[0]
        if expected == DEVICE_CLEAR:
            fits = kind == "clear"
        elif _is_exception(reply):
            fits = kind != "clear" and command == expected
        else:
            fits = command == expected and kind == ("write" if reply is None else "query")
        if not fits:
            raise self._fail(f"exchange {number}: the driver {sent}, expected {_describe(expected, reply)} ({self._history()})")
        self.done.append((expected, reply))
        if _is_exception(reply):
            raise reply  # type: ignore[misc]
        return reply

    # --- the resource interface the drivers use

    def write(self, message: str) -> int:
        """Play a write: the next exchange must be the write of ``message``."""
        self._take("write", message)
        return len(message)

    def query(self, message: str) -> str:
        """Play a query: the next exchange must be the query ``message``; returns its reply."""
        return self._take("query", message)

    def clear(self) -> None:
        """Play a VISA device clear: the next exchange must be ``(DEVICE_CLEAR, None)``."""
        self._take("clear", DEVICE_CLEAR)

    def close(self) -> None:
        """Mark the resource closed (not an exchange)."""
        self.closed = True

    # --- the verdict

    def check_done(self, ended_with: BaseException | None = None) -> None:
        """Raise the recorded mismatch, or a :class:`ProtocolMismatch` naming the exchanges still expected.

        Parameters
        ----------
        ended_with : BaseException, optional
            The exception the test block ended with; it is chained to the mismatch.
        """
        if self.mismatch is not None:
            if ended_with is self.mismatch:
                raise self.mismatch
            raise self.mismatch from ended_with
        if self.remaining:
            missing = ", ".join(_describe(*exchange) for exchange in self.remaining[:3])
            more = f" and {len(self.remaining) - 3} more" if len(self.remaining) > 3 else ""
            ended = ""
            if ended_with is not None:
                ended = f"; the block ended with {type(ended_with).__name__}: {' '.join(str(ended_with).split())[:160]}"
            raise ProtocolMismatch(
                f"the driver stopped after {len(self.done)} of {len(self.exchanges)} expected exchanges; "
                f"missing: {missing}{more}{ended}"
            ) from ended_with


@contextlib.contextmanager
def expected_protocol(driver_cls: type[_Driver], exchanges: Sequence[Exchange], *args: Any, **kwargs: Any) -> Iterator[_Driver]:
    """Build ``driver_cls(resource, *args, **kwargs)`` on a :class:`ProtocolResource` and check every exchange.

    Parameters
    ----------
    driver_cls : type
        The driver class; its first constructor argument is the resource.
    exchanges : sequence of (str, reply)
        Every exchange expected, those of the constructor (opening) first; see the
        module docstring for the forms of ``reply``.
    *args, **kwargs
        The driver's other constructor arguments.

    Yields
    ------
    driver
        The driver; ``driver.resource`` is the :class:`ProtocolResource`.

    Raises
    ------
    ProtocolMismatch
        A wrong or extra exchange (at once, and again when the block ends), or
        exchanges still expected when the block ends.
    TypeError
        ``exchanges`` is not a list of ``(command, reply)`` pairs.
    """
    resource = ProtocolResource(exchanges)
    try:
        driver = driver_cls(resource, *args, **kwargs)  # type: ignore[call-arg]
        yield driver
    except BaseException as exc:
        if resource.mismatch is None and isinstance(exc, AssertionError):
            if resource.remaining:
                add_note(exc, f"(expected_protocol: {len(resource.remaining)} expected exchanges had not taken place)")
            raise
        resource.check_done(exc)
        raise
    resource.check_done()

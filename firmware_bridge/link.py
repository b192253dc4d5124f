"""Host end of the tester link: transports by URL, request/response, retransmission.

A :class:`Link` sends one request frame at a time and waits for the reply that
carries the same sequence number.  Replies with another sequence number (stale
data from an aborted exchange) are discarded; a damaged reply, a NAK or a
time-out makes it send the same request again, with the same sequence number,
at most ``retries`` times.  The firmware answers a repeated sequence number from
its reply cache without executing the request twice.

Transports are opened with :func:`serial.serial_for_url`, so any URL pySerial
knows works: a device path with optional serial settings as a query
(``/dev/ttyUSB0?baudrate=3000000``), ``socket://host:port``, ``loop://``,
``rfc2217://``, and pySerial's ``spy://`` raw hex dump (which wraps a device at
its default settings).  A ``spy+`` prefix (``spy+socket://...``,
``spy+/dev/ttyUSB0?baudrate=N``) logs every frame, decoded, to standard error.
"""

from __future__ import annotations

import math
import socket
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, TextIO

import serial

from firmware_bridge.framing import Frame, FrameDecoder, encode_frame
from firmware_bridge.protocol import MsgType, decode_error

__all__ = [
    "LinkError",
    "LinkTimeoutError",
    "RemoteError",
    "LinkStats",
    "Link",
    "open_transport",
    "describe_frame",
    "check_timeout_s",
    "spy_writer",
]


#: The reply type each request is answered with (besides ERROR and NAK).
_REPLY_TYPE = {
    MsgType.HELLO: MsgType.INFO,
    MsgType.PROGRAM: MsgType.RESULT,
    MsgType.RESET: MsgType.ACK,
    MsgType.STATUS: MsgType.STATUS_REPLY,
    MsgType.SEED: MsgType.ACK,
}


class LinkError(IOError):
    """The link could not be opened, or an exchange failed for good."""


class LinkTimeoutError(LinkError):
    """No valid reply arrived after every retransmission."""


class RemoteError(LinkError):
    """The firmware answered with an ERROR reply.

    Attributes
    ----------
    code : int
        The error code (:class:`firmware_bridge.protocol.ErrorCode`).
    message : str
        The firmware's explanation.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"tester error {code}: {message}")
        self.code = code
        self.message = message


class Transport(Protocol):
    """The subset of the pySerial ``Serial`` interface the link uses."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...
    def reset_input_buffer(self) -> None: ...
    def close(self) -> None: ...

    @property
    def in_waiting(self) -> int: ...


def open_transport(url: str, *, poll_s: float = 0.05) -> Transport:
    """Open a pySerial transport by URL.

    Parameters
    ----------
    url : str
        A device path (``/dev/ttyUSB0``, optionally ``?baudrate=N``) or any URL
        pySerial supports (``socket://``, ``loop://``, ``rfc2217://``, ``spy://``).
    poll_s : float
        Read time-out of one poll, in seconds.

    Raises
    ------
    LinkError
        With a one-line message if the URL is malformed or the port cannot be opened.
    """
    if not isinstance(url, str) or not url:
        raise LinkError(f"tester URL must be a non-empty string, got {url!r}")
    target, kwargs = url, {}
    if "://" not in url:
        # A plain device path may carry serial settings as a query: /dev/ttyUSB0?baudrate=115200
        path, _, query = url.partition("?")
        target = path
        for key, values in urllib.parse.parse_qs(query, strict_parsing=bool(query)).items() if query else ():
            if key not in ("baudrate", "bytesize", "stopbits"):
                raise LinkError(f"unknown serial option {key!r} in {url!r} (baudrate, bytesize, stopbits)")
            try:
                kwargs[key] = float(values[-1]) if key == "stopbits" else int(values[-1])
            except ValueError:
                raise LinkError(f"serial option {key}={values[-1]!r} in {url!r} is not a number") from None
    try:
        port = serial.serial_for_url(target, timeout=poll_s, write_timeout=10.0, **kwargs)
    except (serial.SerialException, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LinkError(f"cannot open tester link {url!r}: {reason}") from None
    _no_delay(port)
    return port


def _no_delay(port: object) -> None:
    """Turn Nagle's algorithm off on a ``socket://`` port (pySerial leaves it on).

    A request is one write: with Nagle on, the last part of a frame longer than a TCP
    segment waits for the acknowledgement of the rest, which the receiver may delay (tens
    of ms on Linux), so large frames would stall at random.  The firmware end sets the same.
    """
    sock = getattr(port, "_socket", None)
    if sock is not None and hasattr(sock, "setsockopt"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket after all
            pass


def describe_frame(frame: Frame) -> str:
    """One-line description of a frame, as the spy log prints it."""
    try:
        name = MsgType(frame.type).name
    except ValueError:
        name = f"TYPE_0x{frame.type:02X}"
    extra = ""
    if frame.type == MsgType.ERROR:
        code, message = decode_error(frame.payload)
        extra = f" code={code} {message!r}"
    elif frame.type in (MsgType.PROGRAM, MsgType.RESULT) and len(frame.payload) >= 4:
        extra = f" count={int.from_bytes(frame.payload[:4], 'little')}"
    return f"{name} seq={frame.seq} len={len(frame.payload)}{extra}"


def check_timeout_s(timeout_s: object) -> float:
    """``timeout_s`` as a float, or ValueError unless it is a positive, finite number of seconds."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not (
        timeout_s > 0 and math.isfinite(timeout_s)
    ):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return float(timeout_s)


def spy_writer(spy: Callable[[str], None] | TextIO | None) -> Callable[[str], None] | None:
    """A spy as a callable taking one line: the callable itself, or a writer to the text file."""
    if spy is None or callable(spy):
        return spy
    stream = spy
    return lambda line: print(line, file=stream, flush=True)


@dataclass
class LinkStats:
    """Counters of one link's traffic."""

    requests: int = 0
    retransmissions: int = 0
    naks: int = 0
    timeouts: int = 0
    stale_frames: int = 0
    corrupt_frames: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Link:
    """Framed request/response link to the tester firmware.

    Parameters
    ----------
    transport : Transport
        An open pySerial-like port; use :meth:`Link.open` to open one by URL.
    timeout_s : float
        Default time to wait for one reply, in seconds.
    retries : int
        Retransmissions after the first attempt before giving up.
    spy : callable or text file, optional
        Receives one line per frame sent (``>>``) and received (``<<``).
    name : str
        Shown in error messages (usually the URL).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        spy: Callable[[str], None] | TextIO | None = None,
        name: str = "tester",
    ) -> None:
        check_timeout_s(timeout_s)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 1000:
            raise ValueError(f"retries must be an integer 0..1000, got {retries!r}")
        self._port = transport
        self._decoder = FrameDecoder()
        self._seq = 0
        self._damaged_seq = 0  # SEQ of a damaged reply not yet acted on (0: none)
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.name = name
        self.stats = LinkStats()
        self._spy = spy_writer(spy)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        spy: Callable[[str], None] | TextIO | None = None,
    ) -> "Link":
        """Open a link by URL; a ``spy+`` prefix logs every frame to standard error."""
        if url.startswith("spy+"):
            url = url[4:]
            spy = spy if spy is not None else sys.stderr
        return cls(open_transport(url), timeout_s=timeout_s, retries=retries, spy=spy, name=url)

    def close(self) -> None:
        """Close the transport."""
        self._port.close()

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1  # 1..65535; 0 is never used by a request
        return self._seq

    def _log(self, direction: str, frame: Frame) -> None:
        if self._spy is not None:
            self._spy(f"{time.monotonic():.6f} {direction} {describe_frame(frame)}")

    def _send(self, frame_bytes: bytes, frame: Frame) -> None:
        self._log(">>", frame)
        try:
            self._port.write(frame_bytes)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"write to {self.name} failed: {exc}") from None
        self.stats.bytes_sent += len(frame_bytes)

    def _receive(self, deadline: float) -> Frame | None:
        """Return the next good frame before ``deadline`` (monotonic seconds), or None.

        A damaged frame (intact header, bad CRC-32) carrying the outstanding SEQ is returned
        as a NAK, but only when no intact frame was decoded in the same pass: an intact
        reply always wins over a damaged copy of it (for example a duplicate that lost
        bytes).  When an intact frame comes first, the NAK is kept and returned next.
        """
        decoder = self._decoder
        while True:
            corrupt_before = decoder.corrupt
            frame = decoder.next_frame()
            if decoder.corrupt != corrupt_before:
                self.stats.corrupt_frames += decoder.corrupt - corrupt_before
                if decoder.last_corrupt is not None and decoder.last_corrupt.seq == self._seq:
                    self._damaged_seq = self._seq
            if frame is not None:
                self._log("<<", frame)
                return frame
            if self._damaged_seq == self._seq and self._seq:
                self._damaged_seq = 0
                return Frame(MsgType.NAK, self._seq, b"damaged")  # our reply was damaged: ask again now
            if time.monotonic() >= deadline:
                return None
            try:
                chunk = self._port.read(max(decoder.needed(), self._port.in_waiting))
            except (serial.SerialException, OSError) as exc:
                raise LinkError(f"read from {self.name} failed: {exc}") from None
            self.stats.bytes_received += len(chunk)
            decoder.feed(chunk)

    def request(self, msg_type: int, payload: bytes = b"", *, timeout_s: float | None = None) -> Frame:
        """Send one request and return its reply frame.

        Parameters
        ----------
        msg_type : int
            Request type (:class:`firmware_bridge.protocol.MsgType`).
        payload : bytes
            Request payload.
        timeout_s : float, optional
            Time to wait for each attempt's reply; defaults to the link's.

        Returns
        -------
        Frame
            The reply (never an ERROR or NAK frame).

        Raises
        ------
        RemoteError
            The firmware answered with an ERROR reply.
        LinkTimeoutError
            No valid reply after ``1 + retries`` attempts.
        """
        wait_s = self.timeout_s if timeout_s is None else float(timeout_s)
        if not (wait_s > 0 and math.isfinite(wait_s)):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        seq = self._next_seq()
        frame_bytes = encode_frame(int(msg_type), seq, payload)
        sent = Frame(int(msg_type), seq, payload)
        self.stats.requests += 1
        expected = _REPLY_TYPE.get(int(msg_type))
        self._damaged_seq = 0
        waits: list[str] = []  # what each attempt ended with, for the error message
        attempts = self.retries + 1
        for attempt in range(attempts):
            if attempt:
                self.stats.retransmissions += 1
                # An incomplete frame at the head of the buffer belongs to an answer we have
                # given up on; left there, it would swallow the reply to this retransmission.
                if self._decoder.partial():
                    self._decoder.drop_partial()
            self._send(frame_bytes, sent)
            started = time.monotonic()
            deadline = started + wait_s
            last_attempt = attempt == attempts - 1
            outcome = ""
            while True:
                reply = self._receive(deadline)
                if reply is None:
                    self.stats.timeouts += 1
                    outcome = outcome or "no reply"
                    break
                if reply.seq != seq or reply.type < 0x80 or (
                    expected is not None and reply.type not in (expected, MsgType.NAK, MsgType.ERROR)
                ):
                    # A reply to an earlier request (an earlier host's on a shared line may carry
                    # the same SEQ, but not the type this request is answered with), or not a
                    # reply at all (an echo on loop://).
                    self.stats.stale_frames += 1
                    continue
                if reply.type == MsgType.NAK:
                    self.stats.naks += 1
                    outcome = "damaged reply" if reply.payload == b"damaged" else "NAK"
                    if last_attempt:
                        # Nothing left to retransmit: an intact copy may still arrive in time.
                        continue
                    break
                if reply.type == MsgType.ERROR:
                    raise RemoteError(*decode_error(reply.payload))
                return reply
            waits.append(f"{outcome} in {time.monotonic() - started:.2f} s")
        raise LinkTimeoutError(
            f"no valid reply from {self.name} to {describe_frame(sent)} after {attempts} attempts "
            f"({', '.join(waits)}; up to {wait_s:g} s each)"
        )

    def drain(self, quiet_s: float = 0.05, max_s: float = 2.0) -> int:
        """Discard received bytes until the line has been quiet for ``quiet_s``; return the count."""
        dropped = len(self._decoder)
        self._decoder.clear()
        try:
            dropped += self._port.in_waiting
            self._port.reset_input_buffer()
            end = time.monotonic() + max_s
            quiet_until = time.monotonic() + quiet_s
            while time.monotonic() < min(end, quiet_until):
                chunk = self._port.read(max(1, self._port.in_waiting))
                if chunk:
                    dropped += len(chunk)
                    quiet_until = time.monotonic() + quiet_s
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"draining {self.name} failed: {exc}") from None
        return dropped

    def reset(self) -> None:
        """Drain stale data and reset the firmware (closes rows, drops pending read data)."""
        self.drain()
        self.request(MsgType.RESET)

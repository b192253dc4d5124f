"""Serving the emulated firmware over a byte stream (TCP socket or pseudo-terminal).

The server side of ``docs/wire-protocol.md``: frames are decoded with the same
resynchronising decoder as the host's; a frame whose CRC-32 fails is answered
with a NAK; a request that repeats the sequence number and bytes of the last one
is answered from the reply cache without executing it again.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from typing import Callable

from emubench.firmware import ExecutionError, TesterFirmware
from firmware_bridge.framing import FRAME_TIMEOUT_S, Frame, FrameDecoder, encode_frame
from firmware_bridge.protocol import (
    ErrorCode,
    MsgType,
    ProtocolError,
    decode_program_arrays,
    encode_error,
    encode_json,
    encode_result,
)

__all__ = ["FirmwareServer", "serve_socket", "serve_pty", "bind_listener", "DEFAULT_IDLE_TIMEOUT_S"]

#: A connected host that sends nothing for this long (seconds) is disconnected.
DEFAULT_IDLE_TIMEOUT_S = 600.0
#: How often a server wakes up to check its time-outs when no bytes arrive (seconds).
POLL_S = 0.05

ReplyFilter = Callable[[Frame, bytes], "bytes | None"]


class FirmwareServer:
    """Answers request frames for one :class:`TesterFirmware`.

    Parameters
    ----------
    firmware : TesterFirmware
        The emulated tester.
    reply_filter : callable, optional
        ``f(request, reply_bytes) -> bytes or None`` applied to every reply before it
        is sent; returning None drops it.  Used to inject link faults in tests.
    log : callable, optional
        Receives one line per request.
    frame_timeout_s : float
        Drop a partly received frame after this long without a byte (seconds).
    """

    def __init__(
        self,
        firmware: TesterFirmware,
        *,
        reply_filter: ReplyFilter | None = None,
        log: Callable[[str], None] | None = None,
        frame_timeout_s: float = FRAME_TIMEOUT_S,
    ) -> None:
        if not 0 < frame_timeout_s <= 60:
            raise ValueError(f"frame_timeout_s must be in (0, 60] s, got {frame_timeout_s!r}")
        self.firmware = firmware
        self.frame_timeout_s = float(frame_timeout_s)
        self.dropped_partials = 0
        self.reply_filter = reply_filter
        self.log = log
        self._last: tuple[int, int, bytes, bytes] | None = None  # seq, type, payload, reply
        self.executed = 0
        self.replayed = 0
        self.naks = 0

    def new_connection(self) -> None:
        """Forget the reply cache and reset the firmware: a new host must not see stale state."""
        self._last = None
        self.firmware.reset()

    def _answer(self, frame: Frame) -> tuple[int, bytes]:
        fw = self.firmware
        if frame.type == MsgType.HELLO:
            return MsgType.INFO, encode_json(fw.info())
        if frame.type == MsgType.STATUS:
            return MsgType.STATUS_REPLY, encode_json(fw.status())
        if frame.type == MsgType.RESET:
            fw.reset()
            return MsgType.ACK, b""
        if frame.type == MsgType.SEED and hasattr(fw.dimm, "reseed_noise"):
            if len(frame.payload) != 8:
                return MsgType.ERROR, encode_error(ErrorCode.MALFORMED, "SEED payload must be 8 bytes")
            fw.dimm.reseed_noise(int.from_bytes(frame.payload, "little"))
            return MsgType.ACK, b""
        if frame.type == MsgType.PROGRAM:
            try:
                words, blocks = decode_program_arrays(frame.payload)
                return MsgType.RESULT, encode_result(fw.run_array(words, blocks))
            except ProtocolError as exc:
                return MsgType.ERROR, encode_error(ErrorCode.MALFORMED, str(exc))
            except ExecutionError as exc:
                return MsgType.ERROR, encode_error(exc.code, str(exc))
        return MsgType.ERROR, encode_error(ErrorCode.UNKNOWN_REQUEST, f"unknown request type 0x{frame.type:02X}")

    def handle(self, frame: Frame) -> bytes:
        """Return the reply bytes for one request frame (from the cache if it is a repeat)."""
        last = self._last
        if last is not None and last[0] == frame.seq and last[1] == frame.type and last[2] == frame.payload:
            self.replayed += 1
            return last[3]
        try:
            reply_type, payload = self._answer(frame)
        except Exception as exc:  # the firmware must answer, whatever went wrong inside it
            reply_type, payload = MsgType.ERROR, encode_error(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        self.executed += 1
        reply = encode_frame(reply_type, frame.seq, payload)
        self._last = (frame.seq, frame.type, frame.payload, reply)
        if frame.type == MsgType.RESET:
            self._last = None
        if self.log is not None:
            self.log(f"seq={frame.seq} type=0x{frame.type:02X} -> 0x{int(reply_type):02X} ({len(payload)} bytes)")
        return reply

    def _process(self, decoder: FrameDecoder, write: Callable[[bytes], None]) -> None:
        """Answer every whole frame buffered in ``decoder`` (NAK for damaged ones)."""
        while True:
            corrupt = decoder.corrupt
            frame = decoder.next_frame()
            if decoder.corrupt != corrupt and decoder.last_corrupt is not None:
                self.naks += 1
                write(encode_frame(MsgType.NAK, decoder.last_corrupt.seq))
            if frame is None:
                return
            reply = self.handle(frame)
            if self.reply_filter is not None:
                filtered = self.reply_filter(frame, reply)
                if filtered is None:
                    continue
                reply = filtered
            write(reply)

    def serve(
        self,
        read: Callable[[], "bytes | memoryview | None"],
        write: Callable[[bytes], None],
        *,
        idle_timeout_s: float | None = None,
    ) -> str:
        """Serve one connection; return why it ended: ``"closed"`` or ``"idle"``.

        Parameters
        ----------
        read : callable
            Returns received bytes (or a view of them, used before the next call), ``b""`` at
            the end of the stream, or None when nothing arrived within its poll interval (keep that short, e.g. 50 ms: the frame
            time-out is checked between polls).
        write : callable
            Sends bytes.
        idle_timeout_s : float, optional
            End the connection when the host has sent nothing for this long.

        A frame that has started but stops arriving for :attr:`frame_timeout_s` is dropped
        (its first byte, then the buffer is scanned again), so that a host that died
        half-way through a frame cannot leave the firmware waiting for bytes that will
        never come (``docs/wire-protocol.md`` section 5).
        """
        decoder = FrameDecoder()
        last_activity = time.monotonic()
        while True:
            chunk = read()
            now = time.monotonic()
            if chunk is None:
                if decoder.partial() and now - last_activity >= self.frame_timeout_s:
                    while decoder.partial():
                        decoder.drop_partial()
                        self.dropped_partials += 1
                        self._process(decoder, write)
                    last_activity = time.monotonic()
                elif idle_timeout_s is not None and now - last_activity >= idle_timeout_s:
                    return "idle"
                continue
            if not chunk:
                return "closed"
            decoder.feed(chunk)
            self._process(decoder, write)
            last_activity = time.monotonic()


def bind_listener(host: str, port: int) -> socket.socket:
    """Open a listening TCP socket (``port`` 0 picks a free one)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(4)
    return listener


def _socket_reader(conn: socket.socket) -> Callable[[], "bytes | memoryview | None"]:
    """A ``read`` for :meth:`FirmwareServer.serve` on a socket: up to 1 MiB at a time.

    It receives into one buffer kept for the connection and returns a view of the bytes
    received (valid until the next call; the frame decoder copies them at once), instead of
    allocating a fresh 1 MiB object for every chunk of a large frame.
    """
    conn.settimeout(POLL_S)
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)

    def read() -> bytes | memoryview | None:
        try:
            n = conn.recv_into(buffer)
        except socket.timeout:
            return None
        except OSError:  # reset by the peer, or closed under us
            return b""
        return view[:n] if n else b""

    return read


def _refuse_busy(conn: socket.socket, holder: str, since: float) -> None:
    """Answer every request of a second host with ERROR 12 (BUSY) until it hangs up (at most 10 s)."""
    read = _socket_reader(conn)
    decoder = FrameDecoder()
    end = time.monotonic() + 10.0
    try:
        while time.monotonic() < end:
            chunk = read()
            if chunk == b"":
                return
            if chunk:
                decoder.feed(chunk)
            while (frame := decoder.next_frame()) is not None:
                message = (
                    f"tester busy: another host ({holder}) has been connected for "
                    f"{time.monotonic() - since:.0f} s; one host at a time"
                )
                conn.sendall(encode_frame(MsgType.ERROR, frame.seq, encode_error(ErrorCode.BUSY, message)))
    except OSError:
        pass
    finally:
        conn.close()


def serve_socket(
    server: FirmwareServer,
    listener: socket.socket,
    *,
    once: bool = False,
    idle_timeout_s: float | None = DEFAULT_IDLE_TIMEOUT_S,
) -> None:
    """Accept connections and serve them one host at a time; the firmware state persists.

    While a host is connected, any other host that connects gets ERROR 12 (BUSY) for each
    request instead of waiting without an answer. A host that sends nothing for
    ``idle_timeout_s`` seconds is disconnected, so an abandoned connection cannot hold the
    tester for ever (None: never). Returns when the listener is closed, or after the first
    connection with ``once``.
    """
    holder: list[tuple[str, float]] = []  # the connected host and since when, if any
    lock = threading.Lock()

    def serve_one(conn: socket.socket, peer: str) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A new host must not see stale state: close rows, reset the bus, drop the cache.
            server.new_connection()
            why = server.serve(_socket_reader(conn), conn.sendall, idle_timeout_s=idle_timeout_s)
            if why == "idle" and server.log is not None:
                server.log(f"{peer}: idle for {idle_timeout_s:g} s, disconnected")
        except OSError:  # reset or broken pipe: the host went away
            pass
        finally:
            conn.close()
            with lock:
                holder.clear()

    while True:
        try:
            conn, address = listener.accept()
        except OSError:  # the listener was closed: stop serving
            return
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        with lock:
            busy = holder[0] if holder else None
            if busy is None:
                holder.append((peer, time.monotonic()))
        if busy is not None:
            threading.Thread(target=_refuse_busy, args=(conn, *busy), daemon=True).start()
            continue
        worker = threading.Thread(target=serve_one, args=(conn, peer), daemon=True, name=f"host {peer}")
        worker.start()
        if once:
            worker.join()
            return


def serve_pty(server: FirmwareServer, master_fd: int) -> None:
    """Serve the host side of a pseudo-terminal until it is closed.

    A pseudo-terminal has no connections: hosts come and go on the same stream, so the
    frame time-out is what lets a new host recover a firmware that an earlier host left
    half-way through a frame.
    """

    def read() -> bytes | None:
        try:
            ready, _, _ = select.select([master_fd], [], [], POLL_S)
            if not ready:
                return None
            return os.read(master_fd, 1 << 16)
        except OSError:  # EIO: the other side closed
            return b""

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(master_fd, view) :]

    server.serve(read, write)

"""Serving the emulated firmware over a byte stream (TCP socket or pseudo-terminal).

The server side of ``docs/wire-protocol.md``: frames are decoded with the same
resynchronising decoder as the host's; a frame whose CRC-32 fails is answered
with a NAK; a request that repeats the sequence number and bytes of the last one
is answered from the reply cache without executing it again.
"""

from __future__ import annotations

import os
import socket
from typing import Callable

from firmware_bridge.emulator.firmware import ExecutionError, TesterFirmware
from firmware_bridge.framing import Frame, FrameDecoder, encode_frame
from firmware_bridge.protocol import (
    ErrorCode,
    MsgType,
    ProtocolError,
    decode_program,
    encode_error,
    encode_json,
    encode_result,
)

__all__ = ["FirmwareServer", "serve_socket", "serve_pty", "bind_listener"]

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
    """

    def __init__(
        self,
        firmware: TesterFirmware,
        *,
        reply_filter: ReplyFilter | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.firmware = firmware
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
                words, blocks = decode_program(frame.payload)
                return MsgType.RESULT, encode_result(fw.run(words, blocks))
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

    def serve(self, read: Callable[[], bytes], write: Callable[[bytes], None]) -> None:
        """Serve one connection until ``read`` returns no bytes (end of stream)."""
        decoder = FrameDecoder()
        while True:
            chunk = read()
            if not chunk:
                return
            decoder.feed(chunk)
            while True:
                corrupt = decoder.corrupt
                frame = decoder.next_frame()
                if decoder.corrupt != corrupt and decoder.last_corrupt is not None:
                    self.naks += 1
                    write(encode_frame(MsgType.NAK, decoder.last_corrupt.seq))
                if frame is None:
                    break
                reply = self.handle(frame)
                if self.reply_filter is not None:
                    filtered = self.reply_filter(frame, reply)
                    if filtered is None:
                        continue
                    reply = filtered
                write(reply)


def bind_listener(host: str, port: int) -> socket.socket:
    """Open a listening TCP socket (``port`` 0 picks a free one)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    return listener


def serve_socket(server: FirmwareServer, listener: socket.socket, *, once: bool = False) -> None:
    """Accept connections one after another and serve each; the firmware state persists."""
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A dropped connection must not keep stale state: close rows, reset the bus, drop the cache.
        server.new_connection()
        try:
            server.serve(lambda: conn.recv(1 << 20), conn.sendall)
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            conn.close()
        if once:
            return


def serve_pty(server: FirmwareServer, master_fd: int) -> None:
    """Serve the host side of a pseudo-terminal until it is closed."""

    def read() -> bytes:
        try:
            return os.read(master_fd, 1 << 16)
        except OSError:  # EIO: the other side closed
            return b""

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(master_fd, view) :]

    server.serve(read, write)


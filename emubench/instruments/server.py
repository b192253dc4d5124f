"""Serving an emulated instrument on a TCP socket, line by line (:class:`ScpiServer`).

Each received line is one SCPI program message (:mod:`emubench.instruments.scpi`); a reply
is sent followed by ``"\\n"``, as a VISA ``TCPIP::HOST::PORT::SOCKET`` resource expects.
"""

from __future__ import annotations

import socket
import threading

from emubench.instruments.scpi import MAX_LINE_BYTES, ScpiInstrument

__all__ = ["ScpiServer"]


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
    LAN instruments allow; they share the instrument's state and error queue.  Each received line is one program message (see
    :mod:`emubench.instruments.scpi`); a reply is sent followed by ``"\\n"``.

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
            if len(buffer) > MAX_LINE_BYTES:
                buffer.clear()
                self.instrument.queue_error(-363, "Input buffer overrun")

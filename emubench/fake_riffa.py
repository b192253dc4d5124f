"""A stand-in of libriffa behind the same ctypes interface, forwarding to the emulated firmware.

The RIFFA transport (:mod:`firmware_bridge.riffa`) calls six C functions of libriffa through
ctypes.  This module provides the same six as ctypes function pointers (``CFUNCTYPE`` with
libriffa's signatures, :data:`firmware_bridge.riffa.SIGNATURES`), so that the transport's code
runs unchanged in CI: the words it sends are read from the memory its pointers name, the bursts
it receives are written into its buffers.  Each emulated board behaves as the stock SoftMC
release does on the wire:

- ``fpga_send`` buffers 64-bit instruction slots (two words each); an END starts the program
  before it: its words go to the emulated firmware as a PROGRAM request (the bridge protocol,
  over the emulated bench's own socket), and its READ bursts queue on the board; slots after
  the last END wait for the rest of their program;
- ``fpga_recv`` hands out one queued burst per call (16 words, one receive transaction, as
  SoftMC sends them), and returns 0 when none is queued (a real board would wait ``timeout`` ms);
- ``fpga_reset`` drops the queued bursts and a half-sent program; the queue outlives
  ``fpga_close``, as data in the board's FIFO outlives the host program that left it there.

For the transport's own tests a board can also hold bursts *in flight* (:attr:`FakeBoard.late`:
they arrive after the next ``fpga_reset``, which a drain must take), send READs packed several to
a transaction (:attr:`FakeBoard.bursts_per_transaction`, as another SoftMC build might), and it
records the time-out of every call (:attr:`FakeLibriffa.timeouts_ms`). A Python error inside a
function is logged and answered as libriffa answers a failure (-1, NULL), never raised through
the C boundary.

A program the emulated firmware refuses (stock SoftMC checks nothing) queues no data and is
logged: the host then times out on its first READ, as it would on a board that hangs.

Boards are attached by the emulated bench's plug-in for ``emu://...&link=riffa`` (the board
forwards to the bench's firmware) or, for a host-cost benchmark, as a *sink* that runs nothing
and answers every READ with zeros.  The library registers as ``lib=emu``
(``eden_dram_toolkit.riffa_libraries`` entry point).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware_bridge.link import Link, LinkError, RemoteError
from firmware_bridge.protocol import BURST_BYTES, MsgType, ProtocolError, decode_json, encode_program, result_bursts
from firmware_bridge.riffa import (
    RIFFA_MAX_FPGAS,
    SIGNATURES,
    FpgaInfoList,
    count_reads,
)

__all__ = ["FakeLibriffa", "FakeBoard", "library", "attach", "attach_sink", "detach", "PROVIDER_NAME"]

log = logging.getLogger(__name__)

#: The ``lib=`` name of this library.
PROVIDER_NAME = "emu"


@dataclass
class FakeBoard:
    """One emulated board: where its programs run, and what it has yet to send."""

    target: str | None  #: the emulated firmware's link URL (None: a sink answering READs with zeros)
    name: str = "SoftMC-emu"
    pending: deque = field(default_factory=deque)  #: queued receive transactions (64 bytes a burst)
    partial: list = field(default_factory=list)  #: words of a program not yet ended (uint32 arrays)
    late: list = field(default_factory=list)  #: bursts in flight: queued after the next fpga_reset
    bursts_per_transaction: int = 1  #: READ bursts packed into one receive transaction
    link: Link | None = None
    programs_run: int = 0
    programs_refused: int = 0
    resets: int = 0
    last_error: str | None = None

    def run(self, words: np.ndarray) -> None:
        """Run one program's instruction words (END last) and queue its READ bursts."""
        self.programs_run += 1
        if self.target is None:
            self.queue(bytes(BURST_BYTES * count_reads(words)))
            return
        payload = encode_program(words.astype(np.uint64))
        try:
            try:
                reply = self.connect().request(MsgType.PROGRAM, payload, timeout_s=30.0)
            except RemoteError:
                raise
            except LinkError:  # the bench dropped an idle connection: connect again, once
                self.close()
                reply = self.connect().request(MsgType.PROGRAM, payload, timeout_s=30.0)
            count = result_bursts(reply.payload)
        except (LinkError, ProtocolError) as exc:
            self.programs_refused += 1
            self.last_error = str(exc)
            log.warning("fake RIFFA board %s: program of %d words not run: %s", self.name, len(words), exc)
            return
        self.queue(reply.payload[4: 4 + BURST_BYTES * count])

    def queue(self, bursts: bytes) -> None:
        """Queue read bursts as the board sends them: :attr:`bursts_per_transaction` to a transaction."""
        size = BURST_BYTES * max(1, self.bursts_per_transaction)
        self.pending.extend(bursts[i: i + size] for i in range(0, len(bursts), size))

    def take(self, words: np.ndarray) -> None:
        """Buffer the words of one send; run every program an END closes."""
        self.partial.append(words)
        slots = np.concatenate(self.partial)
        if len(slots) % 2:  # half a slot: keep waiting for the rest
            return
        low = slots[0::2]
        ends = np.flatnonzero((low >> np.uint32(28)) == 0)  # opcode 0000: END
        start = 0
        for end in ends:
            self.run(low[start: end + 1])
            start = int(end) + 1
        rest = slots[2 * start:]
        self.partial = [rest] if len(rest) else []

    def connect(self) -> Link:
        """The link to the emulated firmware (opened on first use)."""
        if self.link is None:
            assert self.target is not None
            self.link = Link.open(self.target, timeout_s=30.0)
        return self.link

    def close(self) -> None:
        """Close the link to the firmware."""
        if self.link is not None:
            self.link.close()
            self.link = None


class FakeLibriffa:
    """libriffa's six functions as ctypes function pointers over :class:`FakeBoard` objects."""

    def __init__(self) -> None:
        self.boards: dict[int, FakeBoard] = {}
        self._handles: dict[int, tuple[int, ctypes.c_int]] = {}  # handle address -> (board id, its storage)
        self._lock = threading.RLock()
        self.calls = {name: 0 for name in SIGNATURES}
        #: The time-out (ms) of each recent ``fpga_send`` and ``fpga_recv`` call.
        self.timeouts_ms: dict[str, deque] = {"fpga_send": deque(maxlen=4096), "fpga_recv": deque(maxlen=4096)}
        #: Seconds spent inside the functions' Python bodies (what a benchmark takes off the host's time).
        self.busy_s = 0.0
        for name, (restype, argtypes) in SIGNATURES.items():
            prototype = ctypes.CFUNCTYPE(restype, *argtypes)
            setattr(self, name, prototype(self._guarded(name, getattr(self, "_" + name), restype)))

    def _guarded(self, name: str, body: Any, restype: Any) -> Any:
        """``body`` answering a Python error as libriffa answers a failure (-1, NULL or nothing), timed."""
        failure = -1 if restype is ctypes.c_int else None
        clock = time.perf_counter

        def call(*args: Any) -> Any:
            start = clock()
            try:
                return body(*args)
            except Exception:  # noqa: BLE001 - nothing may cross the C boundary
                log.exception("fake libriffa: %s failed", name)
                return failure
            finally:
                self.busy_s += clock() - start

        return call

    # Boards ---------------------------------------------------------------------------------------

    def attach(self, target: str | None, name: str = "SoftMC-emu") -> int:
        """Attach a board forwarding to ``target`` (None: a sink); return its RIFFA id (lowest free)."""
        with self._lock:
            for board_id in range(RIFFA_MAX_FPGAS):
                if board_id not in self.boards:
                    self.boards[board_id] = FakeBoard(target, name)
                    return board_id
        raise RuntimeError(f"the fake libriffa already has {RIFFA_MAX_FPGAS} boards (libriffa's limit)")

    def detach(self, board_id: int) -> None:
        """Remove a board (its open handles stop working)."""
        with self._lock:
            board = self.boards.pop(board_id, None)
            for handle in [h for h, (b, _) in self._handles.items() if b == board_id]:
                del self._handles[handle]
        if board is not None:
            board.close()

    def _board(self, handle: int | None) -> FakeBoard | None:
        entry = self._handles.get(handle or 0)
        return None if entry is None else self.boards.get(entry[0])

    # The C functions --------------------------------------------------------------------------------

    def _fpga_list(self, info_pointer: Any) -> int:
        self.calls["fpga_list"] += 1
        info: FpgaInfoList = info_pointer.contents
        with self._lock:
            ids = sorted(self.boards)[:RIFFA_MAX_FPGAS]
            info.num_fpgas = len(ids)
            for i, board_id in enumerate(ids):
                info.id[i] = board_id
                info.num_chnls[i] = 1  # SoftMC uses channel 0 only
                info.name[i].value = self.boards[board_id].name.encode("ascii")[:15]
                info.vendor_id[i] = 0x10EE  # Xilinx
                info.device_id[i] = 0x6018
        return 0

    def _fpga_open(self, board_id: int) -> int | None:
        self.calls["fpga_open"] += 1
        with self._lock:
            if board_id not in self.boards:
                return None  # NULL, as libriffa returns for a missing board
            storage = ctypes.c_int(board_id)
            handle = ctypes.addressof(storage)
            self._handles[handle] = (board_id, storage)
            return handle

    def _fpga_close(self, handle: int | None) -> None:
        self.calls["fpga_close"] += 1
        with self._lock:
            self._handles.pop(handle or 0, None)

    def _fpga_send(self, handle: int | None, channel: int, data: int | None, length: int, destoff: int,
                   last: int, timeout_ms: int) -> int:
        self.calls["fpga_send"] += 1
        self.timeouts_ms["fpga_send"].append(int(timeout_ms))
        with self._lock:
            board = self._board(handle)
            if board is None or channel != 0 or length <= 0 or not data:
                return 0
            words = np.frombuffer(ctypes.string_at(data, 4 * length), dtype="<u4").copy()
            board.take(words)  # a program without its END yet waits for the rest
            return length

    def _fpga_recv(self, handle: int | None, channel: int, data: int | None, length: int, timeout_ms: int) -> int:
        self.calls["fpga_recv"] += 1
        self.timeouts_ms["fpga_recv"].append(int(timeout_ms))
        with self._lock:
            board = self._board(handle)
            if board is None or channel != 0 or not data or not board.pending:
                return 0
            transaction = board.pending.popleft()
            words = max(0, min(int(length), len(transaction) // 4))  # libriffa drops what does not fit
            if words:
                ctypes.memmove(data, transaction, 4 * words)
            return words

    def _fpga_reset(self, handle: int | None) -> None:
        self.calls["fpga_reset"] += 1
        with self._lock:
            board = self._board(handle)
            if board is not None:
                board.pending.clear()
                board.partial = []
                board.resets += 1
                board.queue(b"".join(board.late))  # what was in flight arrives after the reset
                board.late = []


_LIBRARY: FakeLibriffa | None = None
_LIBRARY_LOCK = threading.Lock()


def library() -> FakeLibriffa:
    """The process's fake libriffa (the ``lib=emu`` provider)."""
    global _LIBRARY
    with _LIBRARY_LOCK:
        if _LIBRARY is None:
            _LIBRARY = FakeLibriffa()
        return _LIBRARY


def attach(target: str) -> tuple[int, str]:
    """Attach a board forwarding to the emulated firmware at ``target``; return its id and ``riffa://`` URL.

    The URL carries the firmware's geometry and clock (asked with HELLO, which the stock firmware
    could not answer), so that the host driver sizes rows as the emulated DIMM has them.
    """
    fake = library()
    board_id = fake.attach(target)
    try:
        info = decode_json(fake.boards[board_id].connect().request(MsgType.HELLO).payload)
    except BaseException:
        fake.detach(board_id)
        raise
    keys = ("banks", "rows", "columns", "bus_bytes", "tck_ps")
    query = "&".join(f"{key}={int(info[key])}" for key in keys if key in info)
    return board_id, f"riffa://{board_id}/0?lib={PROVIDER_NAME}&{query}"


def attach_sink() -> tuple[int, str]:
    """Attach a sink board (no DIMM: every READ answers zeros, instantly); return its id and URL."""
    board_id = library().attach(None, "SoftMC-sink")
    return board_id, f"riffa://{board_id}/0?lib={PROVIDER_NAME}"


def detach(board_id: int) -> None:
    """Remove a board attached by :func:`attach` or :func:`attach_sink`."""
    library().detach(board_id)

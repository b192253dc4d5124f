"""Frames of the tester link: layout, integrity checks and a resynchronising decoder.

Frame layout (all integers little-endian)::

    offset size  field
    0      2     SYNC        0xA5 0x5A
    2      1     VERSION     protocol version, 1
    3      1     TYPE        message type (see firmware_bridge.protocol.MsgType)
    4      2     SEQ         request sequence number; a reply carries its request's SEQ
    6      4     LENGTH      payload length in bytes, 0..MAX_PAYLOAD
    10     2     HCRC        CRC-16/CCITT-FALSE over bytes 0..9
    12     LENGTH PAYLOAD
    12+L   4     CRC         CRC-32 (zlib/IEEE 802.3) over bytes 0..12+L-1

The header CRC lets a receiver trust LENGTH before waiting for the payload; a bad
header makes the decoder skip one byte and search for the next SYNC.  The full
description, for firmware authors, is ``docs/wire-protocol.md``.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

__all__ = [
    "SYNC",
    "VERSION",
    "HEADER_SIZE",
    "TRAILER_SIZE",
    "MAX_PAYLOAD",
    "Frame",
    "FrameError",
    "encode_frame",
    "FrameDecoder",
    "FRAME_TIMEOUT_S",
    "crc16",
    "crc32",
]

SYNC = b"\xa5\x5a"
VERSION = 1
_HEADER = struct.Struct("<2sBBHI")  # sync, version, type, seq, length
HEADER_SIZE = _HEADER.size + 2  # + header CRC-16
TRAILER_SIZE = 4
MAX_PAYLOAD = 1 << 20
#: A receiver drops a partly received frame once no byte of it has arrived for this long
#: (seconds).  docs/wire-protocol.md section 5 makes this a MUST for firmware.
FRAME_TIMEOUT_S = 0.25


class FrameError(ValueError):
    """A frame could not be built (bad field) or a received frame failed its checks."""


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return binascii.crc_hqx(data, 0xFFFF)


def crc32(data: bytes, value: int = 0) -> int:
    """CRC-32 as in zlib and IEEE 802.3 (reflected poly 0xEDB88320, init and xorout 0xFFFFFFFF).

    ``data`` is any bytes-like object (a memoryview is not copied); ``value`` continues the CRC
    of the bytes before it, so ``crc32(b, crc32(a)) == crc32(a + b)``.
    """
    return binascii.crc32(data, value) & 0xFFFFFFFF


@dataclass(frozen=True)
class Frame:
    """One decoded frame: message ``type``, sequence number ``seq`` and ``payload`` bytes."""

    type: int
    seq: int
    payload: bytes = b""


def encode_frame(msg_type: int, seq: int, payload: bytes = b"") -> bytes:
    """Build the bytes of one frame (the payload is copied once, into the frame).

    Parameters
    ----------
    msg_type : int
        Message type, 0..255.
    seq : int
        Sequence number, 0..65535.
    payload : bytes-like
        At most :data:`MAX_PAYLOAD` bytes (bytes, bytearray, memoryview or a contiguous array).

    Returns
    -------
    bytes
        Header, payload and CRC-32 trailer.
    """
    if not 0 <= msg_type <= 0xFF:
        raise FrameError(f"frame type {msg_type} out of range 0..255")
    if not 0 <= seq <= 0xFFFF:
        raise FrameError(f"sequence number {seq} out of range 0..65535")
    if isinstance(payload, bytes):
        return _encode(msg_type, seq, payload)
    # a view of the caller's object, released before returning (see FrameDecoder.next_frame)
    with memoryview(payload) as outer:
        if not outer.c_contiguous:
            return _encode(msg_type, seq, outer.tobytes())
        with outer.cast("B") as view:
            return _encode(msg_type, seq, view)


def _encode(msg_type: int, seq: int, view: bytes | memoryview) -> bytes:
    if len(view) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(view)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    head = _HEADER.pack(SYNC, VERSION, msg_type, seq, len(view))
    head += struct.pack("<H", crc16(head))
    return b"".join((head, view, struct.pack("<I", crc32(view, crc32(head)))))


class FrameDecoder:
    """Incremental decoder: feed it received bytes, take out whole, checked frames.

    Noise before a SYNC, frames with a bad header CRC, an unknown version or an
    oversized LENGTH are skipped byte by byte until the next SYNC.  A frame whose
    header is good but whose CRC-32 fails is counted in :attr:`corrupt` and
    skipped the same way (a short frame's missing bytes may have been filled by
    the start of the next frame, which must not be lost), with its header kept in :attr:`last_corrupt` so that a
    receiver can ask for a retransmission of that sequence number.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.corrupt = 0
        self.skipped_bytes = 0
        self.last_corrupt: Frame | None = None

    def __len__(self) -> int:
        """Number of buffered bytes not yet decoded."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def clear(self) -> None:
        """Drop everything buffered (used when the link is reset)."""
        self.skipped_bytes += len(self._buf)
        self._buf.clear()

    def needed(self) -> int:
        """Bytes still missing before the frame at the head of the buffer is complete (at least 1)."""
        if len(self._buf) < HEADER_SIZE or self._buf[:2] != SYNC:
            return max(1, HEADER_SIZE - len(self._buf))
        length = struct.unpack_from("<I", self._buf, 6)[0]
        if length > MAX_PAYLOAD:
            return 1
        return max(1, HEADER_SIZE + length + TRAILER_SIZE - len(self._buf))

    def partial(self) -> bool:
        """True if the buffer starts a frame (a SYNC) that is not complete yet."""
        return len(self._buf) > 0 and self._buf[:1] == SYNC[:1]

    def drop_partial(self) -> int:
        """Give up on the incomplete frame at the head of the buffer; return the bytes dropped.

        Only its first byte is dropped, as for a corrupt frame: bytes buffered after it may
        hold the start of a good frame (for example a retransmission), which the next
        :meth:`next_frame` still finds.
        """
        if not self._buf:
            return 0
        self.skipped_bytes += 1
        del self._buf[:1]
        return 1

    def next_frame(self) -> Frame | None:
        """Return the next good frame, or None if no complete frame is buffered yet."""
        buf = self._buf
        while True:
            start = buf.find(SYNC)
            if start < 0:
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                self.skipped_bytes += len(buf) - keep
                del buf[: len(buf) - keep]
                return None
            if start:
                self.skipped_bytes += start
                del buf[:start]
            if len(buf) < HEADER_SIZE:
                return None
            _, version, msg_type, seq, length = _HEADER.unpack_from(buf, 0)
            (hcrc,) = struct.unpack_from("<H", buf, _HEADER.size)
            if hcrc != crc16(buf[: _HEADER.size]) or version != VERSION or length > MAX_PAYLOAD:
                self.skipped_bytes += 1
                del buf[:1]
                continue
            total = HEADER_SIZE + length + TRAILER_SIZE
            if len(buf) < total:
                return None
            (crc,) = struct.unpack_from("<I", buf, total - TRAILER_SIZE)
            # Every view of the buffer is released explicitly before the buffer is resized: a
            # sampling profiler (Dask's, in a worker thread) may hold the frame of crc32 and, with
            # it, a view passed to it, after the call returned; bytearray then refuses ``del``.
            with memoryview(buf) as view, view[: total - TRAILER_SIZE] as body:
                good = crc == crc32(body)
            if not good:
                self.corrupt += 1
                self.last_corrupt = Frame(msg_type, seq, b"")
                # Drop only the SYNC: a short frame's "payload" may hold the next frame.
                self.skipped_bytes += 1
                del buf[:1]
                continue
            with memoryview(buf) as view, view[HEADER_SIZE : total - TRAILER_SIZE] as body:
                payload = bytes(body)  # one copy, not two
            del buf[:total]
            return Frame(msg_type, seq, payload)

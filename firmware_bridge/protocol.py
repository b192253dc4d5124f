"""Messages of the tester link: types, error codes and payload layouts.

Requests (host to firmware) and their replies::

    HELLO    0x01  empty                       -> INFO    0x81  UTF-8 JSON object
    PROGRAM  0x02  u32 n_slots, u32 n_blocks,  -> RESULT  0x82  u32 n_bursts, n_bursts x 64 bytes
                   n_slots x u64 slot,
                   n_blocks x 64-byte write-data blocks
    RESET    0x03  empty                       -> ACK     0x83  empty
    STATUS   0x04  empty                       -> STATUS  0x84  UTF-8 JSON object
    SEED     0x05  u64 seed                    -> ACK     0x83  empty (emulator only: feature "noise-seed")

    any request                                -> ERROR   0xFF  u16 code, UTF-8 message
    a frame whose CRC-32 failed                -> NAK     0xFE  empty, SEQ of the damaged frame

Each instruction slot is 64 bits: the 32-bit SoftMC word in the low half, the
high half zero.  All integers are little-endian.  See ``docs/wire-protocol.md``.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from typing import Any, Sequence

__all__ = [
    "MsgType",
    "ErrorCode",
    "BURST_BYTES",
    "MAX_PROGRAM_SLOTS",
    "ProtocolError",
    "encode_program",
    "decode_program",
    "encode_result",
    "decode_result",
    "encode_error",
    "decode_error",
    "encode_json",
    "decode_json",
]

BURST_BYTES = 64
MAX_PROGRAM_SLOTS = 8192
_COUNTS = struct.Struct("<II")


class MsgType(enum.IntEnum):
    """Frame TYPE values."""

    HELLO = 0x01
    PROGRAM = 0x02
    RESET = 0x03
    STATUS = 0x04
    SEED = 0x05
    INFO = 0x81
    RESULT = 0x82
    ACK = 0x83
    STATUS_REPLY = 0x84
    NAK = 0xFE
    ERROR = 0xFF


class ErrorCode(enum.IntEnum):
    """Codes carried by an ERROR reply."""

    UNKNOWN_REQUEST = 1
    MALFORMED = 2
    BAD_INSTRUCTION = 3
    PROGRAM_TOO_LONG = 4
    NO_END = 5
    NO_OPEN_ROW = 6
    BUS_DIRECTION = 7
    BANK_STATE = 8
    BAD_WRITE_DATA = 9
    ADDRESS_RANGE = 10
    NO_POWER = 11
    BUSY = 12
    STORE_FULL = 13
    INTERNAL = 99


class ProtocolError(ValueError):
    """A payload does not follow its message layout."""


def encode_program(words: Sequence[int], blocks: Sequence[bytes] = ()) -> bytes:
    """Build a PROGRAM payload from 32-bit words and 64-byte write-data blocks."""
    for block in blocks:
        if len(block) != BURST_BYTES:
            raise ProtocolError(f"write-data block of {len(block)} bytes, expected {BURST_BYTES}")
    slots = struct.pack(f"<{len(words)}Q", *words)
    return _COUNTS.pack(len(words), len(blocks)) + slots + b"".join(blocks)


def decode_program(payload: bytes) -> tuple[list[int], list[bytes]]:
    """Split a PROGRAM payload into its 32-bit words and write-data blocks.

    Raises
    ------
    ProtocolError
        If the length does not match the counts or a slot's high 32 bits are set.
    """
    if len(payload) < _COUNTS.size:
        raise ProtocolError(f"PROGRAM payload of {len(payload)} bytes is shorter than its 8-byte counts")
    n_slots, n_blocks = _COUNTS.unpack_from(payload)
    want = _COUNTS.size + 8 * n_slots + BURST_BYTES * n_blocks
    if len(payload) != want:
        raise ProtocolError(
            f"PROGRAM payload is {len(payload)} bytes but {n_slots} slots and {n_blocks} blocks need {want}"
        )
    slots = struct.unpack_from(f"<{n_slots}Q", payload, _COUNTS.size)
    for index, slot in enumerate(slots):
        if slot >> 32:
            raise ProtocolError(f"slot {index} has its high 32 bits set (0x{slot:016X})")
    base = _COUNTS.size + 8 * n_slots
    blocks = [payload[base + BURST_BYTES * i : base + BURST_BYTES * (i + 1)] for i in range(n_blocks)]
    return list(slots), blocks


def encode_result(bursts: bytes) -> bytes:
    """Build a RESULT payload from the concatenated 64-byte read bursts."""
    if len(bursts) % BURST_BYTES:
        raise ProtocolError(f"read data of {len(bursts)} bytes is not a whole number of bursts")
    return struct.pack("<I", len(bursts) // BURST_BYTES) + bytes(bursts)


def decode_result(payload: bytes) -> bytes:
    """Return the concatenated read bursts of a RESULT payload."""
    if len(payload) < 4:
        raise ProtocolError("RESULT payload is shorter than its 4-byte count")
    (count,) = struct.unpack_from("<I", payload)
    if len(payload) != 4 + BURST_BYTES * count:
        raise ProtocolError(f"RESULT says {count} bursts but carries {len(payload) - 4} bytes")
    return payload[4:]


def encode_error(code: int, message: str) -> bytes:
    """Build an ERROR payload."""
    return struct.pack("<H", int(code)) + message.encode("utf-8")


def decode_error(payload: bytes) -> tuple[int, str]:
    """Return the code and message of an ERROR payload."""
    if len(payload) < 2:
        return ErrorCode.MALFORMED, "ERROR reply without a code"
    (code,) = struct.unpack_from("<H", payload)
    return code, payload[2:].decode("utf-8", errors="replace")


def encode_json(obj: dict[str, Any]) -> bytes:
    """Encode an INFO or STATUS payload."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"JSON number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"JSON payload holds {name}, which is not a JSON number")


def decode_json(payload: bytes) -> dict[str, Any]:
    """Decode an INFO or STATUS payload.

    Raises
    ------
    ProtocolError
        If the payload is not UTF-8 JSON holding an object, nests too deeply, holds
        ``NaN``/``Infinity`` or a number too large for a float or too long for an int.
    """
    try:
        obj = json.loads(
            bytes(payload).decode("utf-8"), parse_float=_finite_float, parse_constant=_no_constant
        )
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("JSON payload nests too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, int digit limit
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProtocolError(f"JSON payload is not valid: {reason}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("JSON payload is not an object")
    return obj

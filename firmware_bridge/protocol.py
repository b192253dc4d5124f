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

import numpy as np

__all__ = [
    "MsgType",
    "ErrorCode",
    "BURST_BYTES",
    "MAX_PROGRAM_SLOTS",
    "ProtocolError",
    "encode_program",
    "decode_program",
    "decode_program_arrays",
    "encode_result",
    "decode_result",
    "result_bursts",
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


def encode_program(words: Sequence[int] | np.ndarray, blocks: Sequence[bytes] | np.ndarray = ()) -> bytes:
    """Build a PROGRAM payload from 32-bit words and 64-byte write-data blocks.

    ``words`` may be a sequence of ints or an integer array; ``blocks`` a sequence of 64-byte
    blocks or an ``(n, 64)`` uint8 array (encoded as a whole, without a Python step per word).

    Raises
    ------
    ProtocolError
        If a block is not 64 bytes, or an array of words holds a negative one (a sequence of
        words that do not fit in 64-bit slots raises :class:`struct.error`).
    """
    if isinstance(blocks, np.ndarray):
        if blocks.size and (blocks.ndim != 2 or blocks.shape[1] != BURST_BYTES):
            raise ProtocolError(f"write-data blocks of shape {blocks.shape}, expected (n, {BURST_BYTES})")
        n_blocks = len(blocks) if blocks.size else 0
        block_bytes = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(-1)  # joined without a copy of its own
    else:
        for block in blocks:
            if len(block) != BURST_BYTES:
                raise ProtocolError(f"write-data block of {len(block)} bytes, expected {BURST_BYTES}")
        n_blocks = len(blocks)
        block_bytes = b"".join(blocks)
    if isinstance(words, np.ndarray):
        if words.dtype.kind not in "iu" or (words.dtype.kind == "i" and words.size and int(words.min()) < 0):
            raise ProtocolError("instruction words must be non-negative integers")
        slots = words.astype("<u8")
    else:
        slots = struct.pack(f"<{len(words)}Q", *words)
    return b"".join((_COUNTS.pack(len(words), n_blocks), slots, block_bytes))


def _program_parts(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The slots (uint64) and blocks (``(n, 64)`` uint8) of a PROGRAM payload, as views of it."""
    if len(payload) < _COUNTS.size:
        raise ProtocolError(f"PROGRAM payload of {len(payload)} bytes is shorter than its 8-byte counts")
    n_slots, n_blocks = _COUNTS.unpack_from(payload)
    want = _COUNTS.size + 8 * n_slots + BURST_BYTES * n_blocks
    if len(payload) != want:
        raise ProtocolError(
            f"PROGRAM payload is {len(payload)} bytes but {n_slots} slots and {n_blocks} blocks need {want}"
        )
    slots = np.frombuffer(payload, dtype="<u8", count=n_slots, offset=_COUNTS.size)
    high = np.flatnonzero(slots >> np.uint64(32))
    if high.size:
        index = int(high[0])
        raise ProtocolError(f"slot {index} has its high 32 bits set (0x{int(slots[index]):016X})")
    base = _COUNTS.size + 8 * n_slots
    blocks = np.frombuffer(payload, dtype=np.uint8, count=BURST_BYTES * n_blocks, offset=base)
    return slots, blocks.reshape(n_blocks, BURST_BYTES)


def decode_program(payload: bytes) -> tuple[list[int], list[bytes]]:
    """Split a PROGRAM payload into its 32-bit words and write-data blocks.

    Raises
    ------
    ProtocolError
        If the length does not match the counts or a slot's high 32 bits are set.
    """
    slots, blocks = _program_parts(payload)
    base = _COUNTS.size + 8 * len(slots)
    return slots.tolist(), [payload[base + BURST_BYTES * i : base + BURST_BYTES * (i + 1)] for i in range(len(blocks))]


def decode_program_arrays(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Split a PROGRAM payload into arrays: the words (uint32) and the blocks (``(n, 64)`` uint8).

    The same checks as :func:`decode_program`; the blocks are a read-only view of ``payload``.

    Raises
    ------
    ProtocolError
        If the length does not match the counts or a slot's high 32 bits are set.
    """
    slots, blocks = _program_parts(payload)
    return slots.astype(np.uint32), blocks


def encode_result(bursts: bytes | np.ndarray) -> bytes:
    """Build a RESULT payload from the concatenated 64-byte read bursts (bytes-like or a uint8 array)."""
    size = bursts.nbytes if isinstance(bursts, np.ndarray) else len(bursts)
    if size % BURST_BYTES:
        raise ProtocolError(f"read data of {size} bytes is not a whole number of bursts")
    return b"".join((struct.pack("<I", size // BURST_BYTES), bursts))


def result_bursts(payload: bytes) -> int:
    """The number of bursts a RESULT payload carries, checked against its length (nothing is copied).

    Raises
    ------
    ProtocolError
        If the payload is shorter than its count or its length does not match it.
    """
    if len(payload) < 4:
        raise ProtocolError("RESULT payload is shorter than its 4-byte count")
    (count,) = struct.unpack_from("<I", payload)
    if len(payload) != 4 + BURST_BYTES * count:
        raise ProtocolError(f"RESULT says {count} bursts but carries {len(payload) - 4} bytes")
    return count


def decode_result(payload: bytes) -> bytes:
    """Return the concatenated read bursts of a RESULT payload."""
    result_bursts(payload)
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

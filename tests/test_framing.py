"""Frame layout, CRCs and the resynchronising decoder, checked byte for byte."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.framing import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    FrameError,
    crc16,
    crc32,
    encode_frame,
)
from firmware_bridge.protocol import (
    ProtocolError,
    decode_program,
    decode_result,
    encode_program,
    encode_result,
)


def test_crc_check_values() -> None:
    # Standard check values of the catalogued CRCs for the ASCII string "123456789".
    assert crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE
    assert crc32(b"123456789") == 0xCBF43926  # CRC-32 (zlib, IEEE 802.3)


def test_hello_frame_exact_bytes() -> None:
    frame = encode_frame(0x01, 1)
    head = bytes([0xA5, 0x5A, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00])
    expected = head + struct.pack("<H", crc16(head))
    expected += struct.pack("<I", crc32(expected))
    assert frame == expected
    assert len(frame) == HEADER_SIZE + 4
    # The same bytes written out, so that a change of CRC parameters cannot go unnoticed
    # (this is the worked example in docs/wire-protocol.md).
    assert frame == bytes.fromhex("a55a 01 01 0100 00000000 dda7 3d72a649".replace(" ", ""))


def test_program_frame_layout() -> None:
    payload = encode_program([0x81191234, 0x00000000], [bytes(range(64))])
    assert payload[:8] == struct.pack("<II", 2, 1)
    assert payload[8:16] == bytes.fromhex("3412198100000000")  # slot 0, little-endian, high half zero
    assert payload[16:24] == bytes(8)
    assert payload[24:] == bytes(range(64))
    frame = encode_frame(0x02, 0x1234, payload)
    assert frame[4:6] == b"\x34\x12"
    assert struct.unpack_from("<I", frame, 6)[0] == len(payload)
    assert decode_program(payload) == ([0x81191234, 0], [bytes(range(64))])


def test_program_payload_errors() -> None:
    with pytest.raises(ProtocolError, match="shorter"):
        decode_program(b"\x01")
    with pytest.raises(ProtocolError, match="need"):
        decode_program(struct.pack("<II", 2, 0) + bytes(8))
    with pytest.raises(ProtocolError, match="high 32 bits"):
        decode_program(struct.pack("<IIQ", 1, 0, 1 << 40))
    with pytest.raises(ProtocolError, match="64"):
        encode_program([0], [b"short"])
    assert decode_result(encode_result(bytes(128))) == bytes(128)
    with pytest.raises(ProtocolError):
        decode_result(struct.pack("<I", 2) + bytes(64))


def test_encode_frame_field_errors() -> None:
    with pytest.raises(FrameError, match="type"):
        encode_frame(256, 1)
    with pytest.raises(FrameError, match="sequence"):
        encode_frame(1, 70000)
    with pytest.raises(FrameError, match="payload"):
        encode_frame(1, 1, bytes(MAX_PAYLOAD + 1))


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=300)), min_size=1, max_size=6
    ),
    noise=st.binary(max_size=40),
    chunk=st.integers(1, 97),
)
def test_decoder_round_trip_with_noise_and_split_reads(frames, noise, chunk) -> None:
    stream = noise + b"".join(encode_frame(t, s, p) for t, s, p in frames)
    decoder = FrameDecoder()
    got = []
    for i in range(0, len(stream), chunk):
        decoder.feed(stream[i : i + chunk])
        while (frame := decoder.next_frame()) is not None:
            got.append(frame)
    # Noise may by chance contain a frame-like prefix, but every real frame must arrive in order.
    assert got[-len(frames) :] == [Frame(t, s, p) for t, s, p in frames]


def test_corrupt_frame_is_dropped_and_next_one_kept() -> None:
    first = bytearray(encode_frame(0x82, 7, b"payload-one"))
    first[HEADER_SIZE + 2] ^= 0x40  # flip one payload bit
    second = encode_frame(0x82, 8, b"payload-two")
    decoder = FrameDecoder()
    decoder.feed(bytes(first) + second)
    assert decoder.next_frame() == Frame(0x82, 8, b"payload-two")
    assert decoder.corrupt == 1
    assert decoder.last_corrupt == Frame(0x82, 7, b"")


def test_short_frame_does_not_swallow_the_next() -> None:
    short = encode_frame(0x82, 3, bytes(100))[:-30]  # 30 bytes lost on the wire
    good = encode_frame(0x83, 4)
    decoder = FrameDecoder()
    decoder.feed(short + good + encode_frame(0x83, 5))
    seqs = []
    while (f := decoder.next_frame()) is not None:
        seqs.append(f.seq)
    # The damaged frame's LENGTH claims bytes of the next frames; when its CRC fails the
    # decoder rescans from just after its SYNC and still finds both later frames.
    assert seqs == [4, 5]
    assert decoder.corrupt == 1


def test_short_frame_then_intact_frames_all_found() -> None:
    short = encode_frame(0x82, 3, bytes(16))[:-10]
    later = [encode_frame(0x83, s, bytes(40)) for s in range(4, 8)]
    decoder = FrameDecoder()
    decoder.feed(short + b"".join(later))
    seqs = []
    while (f := decoder.next_frame()) is not None:
        seqs.append(f.seq)
    assert seqs == [4, 5, 6, 7]
    assert decoder.corrupt == 1


def test_bad_header_is_skipped() -> None:
    bad = bytearray(encode_frame(0x81, 1, b"x"))
    bad[7] ^= 0xFF  # length byte: header CRC now fails, so LENGTH is not trusted
    decoder = FrameDecoder()
    decoder.feed(bytes(bad) + encode_frame(0x81, 2, b"y"))
    assert decoder.next_frame() == Frame(0x81, 2, b"y")
    assert decoder.corrupt == 0
    assert decoder.skipped_bytes == len(bad)


def test_needed_reports_missing_bytes() -> None:
    frame = encode_frame(0x82, 1, bytes(50))
    decoder = FrameDecoder()
    assert decoder.needed() == HEADER_SIZE
    decoder.feed(frame[:HEADER_SIZE])
    assert decoder.needed() == 50 + 4
    decoder.feed(frame[HEADER_SIZE:])
    assert decoder.next_frame() == Frame(0x82, 1, bytes(50))


def test_a_view_kept_past_the_crc_call_does_not_block_the_buffer(monkeypatch) -> None:
    """A sampling profiler (Dask's worker profiler) may keep crc32's frame, and the view passed to it, alive
    after the call: the decoder must still be able to drop the decoded frame from its buffer."""
    import firmware_bridge.framing as framing

    held = []
    real = framing.crc32

    def keeping(data, value=0):
        held.append(data)  # what a frame kept alive by a profiler holds
        return real(data, value)

    monkeypatch.setattr(framing, "crc32", keeping)
    dec = framing.FrameDecoder()
    dec.feed(framing.encode_frame(1, 7, b"x" * 100) + framing.encode_frame(2, 8, bytearray(b"y" * 50)))
    first, second = dec.next_frame(), dec.next_frame()
    assert (first.seq, first.payload, second.seq, second.payload) == (7, b"x" * 100, 8, b"y" * 50)
    assert len(dec) == 0 and held
    payload = bytearray(b"z" * 10)
    framing.encode_frame(3, 9, payload)
    payload += b"more"  # the caller's buffer is free again too

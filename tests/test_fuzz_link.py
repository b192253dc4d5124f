"""Fuzz the link's decoders: frames, payloads, INFO replies, the firmware's PROGRAM handling
and the host's request loop. Only the documented exceptions may come out."""

from __future__ import annotations

import json

import pytest
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from emubench import build_firmware
from emubench.server import FirmwareServer
from firmware_bridge.framing import Frame, FrameDecoder, encode_frame
from firmware_bridge.link import Link, LinkError
from firmware_bridge.protocol import (
    ErrorCode,
    MsgType,
    ProtocolError,
    decode_error,
    decode_json,
    decode_program,
    decode_result,
    encode_program,
    encode_result,
)
from softmc_host import isa
from softmc_host.session import TesterError as _TesterError
from softmc_host.session import TesterSession

pytestmark = pytest.mark.fuzz

frames = st.builds(
    Frame,
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.binary(max_size=96),
)


@st.composite
def damaged_streams(draw: st.DrawFn) -> tuple[list[Frame], bytes, bool]:
    """Encoded frames, possibly damaged: (frames, stream bytes, whether damage was applied)."""
    sent = draw(st.lists(frames, max_size=6))
    stream = bytearray()
    for frame in sent:
        stream += draw(st.binary(max_size=8))  # noise between frames
        stream += encode_frame(frame.type, frame.seq, frame.payload)
    damaged = False
    for _ in range(draw(st.integers(0, 4))):
        if not stream:
            break
        damaged = True
        at = draw(st.integers(0, len(stream) - 1))
        action = draw(st.sampled_from(["flip", "cut", "dup", "insert"]))
        if action == "flip":
            stream[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del stream[at : at + draw(st.integers(1, 40))]
        elif action == "dup":
            stream[at:at] = stream[at : at + draw(st.integers(1, 40))]
        else:
            stream[at:at] = draw(st.binary(min_size=1, max_size=16))
    return sent, bytes(stream), damaged


@fuzz_settings(300)
@given(damaged_streams(), st.lists(st.integers(1, 64), min_size=1, max_size=8))
def test_fuzz_frame_decoder(case: tuple[list[Frame], bytes, bool], cuts: list[int]) -> None:
    sent, stream, damaged = case
    decoder = FrameDecoder()
    got: list[Frame] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        decoder.feed(stream[pos : pos + step])
        pos += step
        i += 1
        while (frame := decoder.next_frame()) is not None:
            got.append(frame)
        assert decoder.needed() >= 1
    for frame in got:
        # Every delivered frame is one whose exact bytes were on the wire.
        assert encode_frame(frame.type, frame.seq, frame.payload) in stream
    if not damaged:
        assert got == sent


@fuzz_settings(300)
@given(st.one_of(st.binary(max_size=200), st.builds(lambda w, b: encode_program(w, b),
                                                     st.lists(st.integers(0, 2**32 - 1), max_size=8),
                                                     st.lists(st.binary(min_size=64, max_size=64), max_size=3))),
       st.integers(0, 3), st.binary(max_size=8))
def test_fuzz_program_payload(payload: bytes, cut: int, junk: bytes) -> None:
    mutated = payload[: len(payload) - cut] + junk if cut or junk else payload
    try:
        words, blocks = decode_program(mutated)
    except ProtocolError:
        return
    assert all(0 <= w < 2**32 for w in words) and all(len(b) == 64 for b in blocks)
    assert encode_program(words, blocks) == mutated


@fuzz_settings(300)
@given(st.binary(max_size=300))
def test_fuzz_result_and_error_payloads(payload: bytes) -> None:
    try:
        data = decode_result(payload)
        assert len(data) % 64 == 0 and encode_result(data) == payload
    except ProtocolError:
        pass
    code, message = decode_error(payload)
    assert 0 <= code <= 0xFFFF and isinstance(message, str)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

GOOD_INFO = {"tck_ps": 2500, "banks": 8, "rows": 32768, "columns": 1024, "bus_bytes": 8,
             "max_program": 8192, "features": ["wbuf"]}


@st.composite
def info_payloads(draw: st.DrawFn) -> bytes:
    info: dict = dict(GOOD_INFO)
    for key in draw(st.lists(st.sampled_from(sorted(GOOD_INFO)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del info[key]
        else:
            info[key] = draw(json_values)
    text = json.dumps(info)
    kind = draw(st.sampled_from(["plain", "nest", "bignum", "constant", "bytes"]))
    if kind == "nest":
        depth = draw(st.integers(1, 3000))
        text = '{"banks":' + "[" * depth + "]" * depth + text[1:].replace('"banks":', '"x":', 1)
    elif kind == "bignum":
        text = text.replace("2500", "9" * draw(st.integers(300, 6000)), 1)
    elif kind == "constant":
        text = text.replace("8192", draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"])), 1)
    data = text.encode()
    if kind == "bytes" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + draw(st.binary(max_size=4)) + data[at + 1 :]
    return data


class _StubLink:
    name = "fuzz"
    timeout_s = 1.0

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def request(self, msg_type: int, payload: bytes = b"", **_: object) -> Frame:
        return Frame(MsgType.INFO, 1, self.payload)


@fuzz_settings(300)
@given(info_payloads())
def test_fuzz_info_reply(payload: bytes) -> None:
    try:
        decode_json(payload)
    except ProtocolError:
        pass
    try:
        session = TesterSession(_StubLink(payload))  # type: ignore[arg-type]
    except _TesterError as exc:
        assert "\n" not in str(exc)
        return
    assert session.banks >= 1 and session.rows >= 1 and session.tck_ns > 0
    assert all(isinstance(f, str) for f in session.features)


_FIRMWARE = FirmwareServer(build_firmware(seed=2))
_VALID_WORDS = [
    isa.Act(1, 5).encode(), isa.Rd(1, 8).encode(), isa.Wr(1, 0, 0xA5).encode(), isa.Pre(1).encode(),
    isa.PreAll().encode(), isa.Wait(3).encode(), isa.SetBusDir(isa.BusDirection.WRITE).encode(),
    isa.SetBusDir(isa.BusDirection.READ).encode(), isa.Ref().encode(), isa.WBuf(0).encode(),
    isa.SetTrefi(0).encode(), isa.End().encode(),
]


@fuzz_settings(300)
@given(
    st.lists(st.one_of(st.sampled_from(_VALID_WORDS), st.integers(0, 2**32 - 1)), max_size=12),
    st.integers(0, 2),
    st.sampled_from([MsgType.PROGRAM, MsgType.HELLO, MsgType.STATUS, MsgType.SEED, MsgType.RESET, 0x06, 0x7F, 0x90]),
    st.integers(1, 0xFFFF),
)
def test_fuzz_firmware_requests(words: list[int], n_blocks: int, msg_type: int, seq: int) -> None:
    payload = encode_program(words, [bytes([i]) * 64 for i in range(n_blocks)]) if msg_type == MsgType.PROGRAM else b""
    reply = _FIRMWARE.handle(Frame(int(msg_type), seq, payload))
    decoder = FrameDecoder()
    decoder.feed(reply)
    frame = decoder.next_frame()
    assert frame is not None and frame.seq == seq and len(decoder) == 0
    if frame.type == MsgType.ERROR:
        code, message = decode_error(frame.payload)
        assert code != ErrorCode.INTERNAL, message  # every rejection is a documented one
    _FIRMWARE.firmware.reset()


class _NoisePort:
    """A transport that answers every write with fixed bytes, then stays silent."""

    timeout = 0.0

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.pending: list[bytes] = []

    def write(self, data: bytes) -> int:
        if self.replies:
            self.pending.append(self.replies.pop(0))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        return self.pending.pop(0) if self.pending else b""

    @property
    def in_waiting(self) -> int:
        return 0

    def reset_input_buffer(self) -> None:
        self.pending.clear()

    def close(self) -> None:
        pass


@fuzz_settings(200)
@given(st.lists(st.one_of(st.binary(max_size=40), st.builds(
    lambda t, p, s: encode_frame(t, s, p), st.sampled_from([0x81, 0x83, 0x84, 0xFE, 0xFF, 0x02, 0x99]),
    st.binary(max_size=20), st.sampled_from([0, 1, 2]))), max_size=3))
def test_fuzz_host_request_loop(replies: list[bytes]) -> None:
    link = Link(_NoisePort(list(replies)), timeout_s=0.002, retries=2)
    try:
        reply = link.request(MsgType.HELLO)
    except LinkError as exc:
        assert "\n" not in str(exc)
        return
    assert reply.seq == 1 and reply.type == MsgType.INFO

"""Link faults that once broke the host or the firmware: damaged copies, dead partial frames,
idle and second hosts, malformed INFO/JSON replies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from emubench import build_firmware
from emubench.server import FirmwareServer, bind_listener, serve_socket
from firmware_bridge.framing import HEADER_SIZE, FrameDecoder, encode_frame
from firmware_bridge.link import Link, LinkTimeoutError, RemoteError, open_transport
from firmware_bridge.protocol import ErrorCode, MsgType, ProtocolError, decode_json, encode_json, encode_program
from softmc_host import isa
from softmc_host.session import TesterError as _TesterError
from softmc_host.session import TesterSession

ROOT = Path(__file__).resolve().parents[1]


class ScriptedPort:
    """An in-memory transport: ``respond(frame_bytes)`` returns the chunks to deliver, one per read."""

    def __init__(self, respond: Callable[[bytes], list[bytes]]) -> None:
        self.respond = respond
        self.timeout = 0.01
        self.chunks: list[bytes] = []
        self.written: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.written.append(bytes(data))
        self.chunks.extend(self.respond(bytes(data)))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        time.sleep(self.timeout)
        return b""

    @property
    def in_waiting(self) -> int:
        return 0

    def reset_input_buffer(self) -> None:
        self.chunks.clear()

    def close(self) -> None:
        pass


def _seq_of(frame_bytes: bytes) -> int:
    return int.from_bytes(frame_bytes[4:6], "little")


def _damaged(frame_bytes: bytes) -> bytes:
    bad = bytearray(frame_bytes)
    bad[-1] ^= 0x40  # the CRC-32: header intact, frame corrupt
    return bytes(bad)


def _info(seq: int) -> bytes:
    return encode_frame(MsgType.INFO, seq, encode_json({"tck_ps": 2500, "banks": 8, "rows": 32768, "columns": 1024}))


# 1. Host side: an intact reply wins over a damaged copy ---------------------------------------


def test_intact_reply_in_the_same_pass_as_a_damaged_copy_wins() -> None:
    port = ScriptedPort(lambda req: [_damaged(_info(_seq_of(req))) + _info(_seq_of(req))])
    link = Link(port, timeout_s=0.5, retries=0)
    reply = link.request(MsgType.HELLO)
    assert reply.type == MsgType.INFO
    assert len(port.written) == 1  # no retransmission was needed


def test_damaged_copy_on_the_last_attempt_keeps_waiting_for_the_intact_one() -> None:
    # The damaged copy arrives first, the intact reply one read later.
    port = ScriptedPort(lambda req: [_damaged(_info(_seq_of(req))), b"", b"", _info(_seq_of(req))])
    link = Link(port, timeout_s=0.5, retries=0)
    assert link.request(MsgType.HELLO).type == MsgType.INFO


def test_timeout_message_states_the_waits_that_happened() -> None:
    port = ScriptedPort(lambda req: [_damaged(_info(_seq_of(req)))])
    link = Link(port, timeout_s=0.2, retries=1)
    started = time.monotonic()
    with pytest.raises(LinkTimeoutError) as info:
        link.request(MsgType.HELLO)
    message = str(info.value)
    assert "after 2 attempts" in message and "damaged reply in 0.0" in message, message
    assert "\n" not in message
    # Attempt 1 ended at once on the damaged reply; the last attempt waited its full time.
    assert 0.15 < time.monotonic() - started < 1.0


def test_reply_of_the_wrong_type_with_our_seq_is_stale() -> None:
    # A RESULT with SEQ 1 left on a shared line by an earlier host must not answer our HELLO.
    port = ScriptedPort(lambda req: [encode_frame(MsgType.RESULT, _seq_of(req), b"\0\0\0\0") + _info(_seq_of(req))])
    link = Link(port, timeout_s=0.5, retries=0)
    assert link.request(MsgType.HELLO).type == MsgType.INFO
    assert link.stats.stale_frames == 1


def test_link_rejects_nan_timeouts() -> None:
    port = ScriptedPort(lambda req: [])
    for bad in (float("nan"), float("inf"), 0, -1, True):
        with pytest.raises(ValueError, match="timeout_s"):
            Link(port, timeout_s=bad)
    with pytest.raises(ValueError, match="retries"):
        Link(port, retries=1.5)  # type: ignore[arg-type]


# 2. Firmware side: a frame that stops arriving is dropped --------------------------------------


def _big_program_frame(seq: int = 9) -> bytes:
    words = [isa.Wait(1).encode()] * 8000 + [isa.End().encode()]
    blocks = [bytes(64)] * 2200
    return encode_frame(MsgType.PROGRAM, seq, encode_program(words, blocks))


def test_server_drops_a_partial_frame_after_the_frame_timeout() -> None:
    server = FirmwareServer(build_firmware(seed=1), frame_timeout_s=0.1)
    dead = _big_program_frame()
    script: list[bytes | None] = [dead[:50_000], encode_frame(MsgType.HELLO, 1)]
    written: list[bytes] = []

    def read() -> bytes | None:
        if script:
            return script.pop(0)
        if any(w[3] == MsgType.INFO for w in written):
            return b""
        time.sleep(0.02)
        return None

    assert server.serve(read, written.append) == "closed"
    decoder = FrameDecoder()
    decoder.feed(b"".join(written))
    frame = decoder.next_frame()
    assert frame is not None and frame.type == MsgType.INFO and frame.seq == 1
    assert server.dropped_partials >= 1


def _spawn_pty_emulator() -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge.emulator", "--listen", "pty", "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode().strip()
        if line.startswith("listening on "):
            return proc, line[len("listening on ") :]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("pty emulator did not start")


@pytest.fixture
def pty_emulator() -> Iterator[str]:
    proc, path = _spawn_pty_emulator()
    try:
        yield path
    finally:
        proc.kill()
        proc.wait()


def test_session_recovers_a_tester_left_mid_frame_on_a_pty(pty_emulator: str) -> None:
    # A host "killed" half-way through a 200 KB PROGRAM: the header and part of the body arrive.
    dead = _big_program_frame()
    assert len(dead) > 200_000
    port = open_transport(pty_emulator)
    port.write(dead[: len(dead) // 2])
    port.flush()
    port.close()
    started = time.monotonic()
    with TesterSession.open(pty_emulator, timeout_s=2.0) as tester:
        assert tester.banks == 8
        assert tester.link.stats.retransmissions <= 1
        tester.write_row(1, 7, 0x3C)
        assert tester.read_row(1, 7) == b"\x3c" * 8192
    assert time.monotonic() - started < 6


# 3. Payloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"banks": ' + b"9" * 5000 + b"}",
        b'{"banks": Infinity}',
        b'{"banks": NaN}',
        b'{"tck_ps": 1e400}',
        b"\xff\xfe",
        b"[1, 2]",
    ],
)
def test_decode_json_refuses_hostile_payloads(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_json(payload)


class StubLink:
    """Answers HELLO with a fixed INFO payload."""

    name = "stub"
    timeout_s = 1.0

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def request(self, msg_type: int, payload: bytes = b"", **_: object):
        from firmware_bridge.framing import Frame

        return Frame(MsgType.INFO, 1, self.payload)


GOOD_INFO = {"tck_ps": 2500, "banks": 8, "rows": 32768, "columns": 1024, "features": ["wbuf"]}


@pytest.mark.parametrize(
    "change",
    [
        {"features": [{}]},
        {"features": "wbuf"},
        {"tck_ps": 0},
        {"tck_ps": 2.5},
        {"tck_ps": True},
        {"banks": -1},
        {"banks": "8"},
        {"rows": 10**30},
        {"columns": None},
        {"max_program": 1},
        {"bus_bytes": 0},
    ],
)
def test_info_with_wrong_types_raises_tester_error(change: dict) -> None:
    info = dict(GOOD_INFO, **change)
    with pytest.raises(_TesterError, match="INFO"):
        TesterSession(StubLink(encode_json(info)))  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", [b'{"banks": Infinity, "tck_ps": 2500, "rows": 1, "columns": 1}', b"[" * 10_000])
def test_unparsable_info_raises_tester_error(payload: bytes) -> None:
    with pytest.raises(_TesterError, match="malformed INFO"):
        TesterSession(StubLink(payload))  # type: ignore[arg-type]


def test_missing_info_key_is_named() -> None:
    info = {k: v for k, v in GOOD_INFO.items() if k != "rows"}
    with pytest.raises(_TesterError, match="without 'rows'"):
        TesterSession(StubLink(encode_json(info)))  # type: ignore[arg-type]


# 4. The emulator as a server: idle and second hosts ---------------------------------------------


@pytest.fixture
def socket_server() -> Iterator[Callable[..., str]]:
    listeners = []

    def start(**kwargs: object) -> str:
        server = FirmwareServer(build_firmware(seed=3))
        listener = bind_listener("127.0.0.1", 0)
        listeners.append(listener)
        threading.Thread(target=serve_socket, args=(server, listener), kwargs=kwargs, daemon=True).start()
        return "socket://127.0.0.1:%d" % listener.getsockname()[1]

    yield start
    for listener in listeners:
        listener.close()


def test_second_host_gets_a_clear_busy_error(socket_server: Callable[..., str]) -> None:
    url = socket_server()
    with TesterSession.open(url, timeout_s=2.0) as first:
        started = time.monotonic()
        with pytest.raises(RemoteError) as info:
            TesterSession.open(url, timeout_s=2.0)
        assert info.value.code == ErrorCode.BUSY
        assert "busy" in str(info.value) and "\n" not in str(info.value)
        assert time.monotonic() - started < 1.5
        assert first.read_row(0, 0) is not None  # the first host is undisturbed
    # Once the first host has gone, the next one is served.
    with TesterSession.open(url, timeout_s=2.0) as second:
        assert second.banks == 8


def test_idle_host_is_disconnected_and_frees_the_tester(socket_server: Callable[..., str]) -> None:
    url = socket_server(idle_timeout_s=0.3)
    host, port = url[len("socket://") :].rsplit(":", 1)
    idle = socket.create_connection((host, int(port)))  # connects, then never says anything
    try:
        time.sleep(0.6)
        with TesterSession.open(url, timeout_s=2.0) as tester:
            assert tester.banks == 8
        assert idle.recv(16) == b""  # the server closed the idle connection
    finally:
        idle.close()


def test_frame_timeout_is_validated() -> None:
    for bad in (0, -1, float("nan"), 1e9):
        with pytest.raises(ValueError, match="frame_timeout_s"):
            FirmwareServer(build_firmware(seed=1), frame_timeout_s=bad)


def test_header_only_frame_is_not_left_pending_for_the_next_request() -> None:
    # Unit view of the same rule: the decoder keeps a partial frame until told to drop it.
    decoder = FrameDecoder()
    decoder.feed(_big_program_frame()[:HEADER_SIZE + 10] + encode_frame(MsgType.HELLO, 2))
    assert decoder.next_frame() is None and decoder.partial()
    decoder.drop_partial()
    frame = decoder.next_frame()
    assert frame is not None and frame.type == MsgType.HELLO and frame.seq == 2

"""The host link: transports by URL, request/response, corrupt, lost and duplicated frames."""

from __future__ import annotations

import io
import threading
from types import SimpleNamespace
from typing import Callable, Iterator

import pytest
import serial

from emubench import build_firmware
from emubench.server import FirmwareServer, bind_listener, serve_socket
from firmware_bridge import link as link_module
from firmware_bridge.framing import HEADER_SIZE, Frame, FrameDecoder, encode_frame
from firmware_bridge.link import Link, LinkError, LinkTimeoutError, RemoteError, open_transport
from firmware_bridge.protocol import ErrorCode, MsgType, decode_json, decode_result, encode_program
from softmc_host import isa


class ThreadServer:
    """The emulated firmware served from a thread on a loopback port, with fault injection."""

    def __init__(self, reply_filter: Callable[[Frame, bytes], bytes | None] | None = None) -> None:
        self.server = FirmwareServer(build_firmware(seed=5), reply_filter=reply_filter)
        self.listener = bind_listener("127.0.0.1", 0)
        self.url = "socket://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.thread = threading.Thread(target=serve_socket, args=(self.server, self.listener), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def make_server() -> Iterator[Callable[..., ThreadServer]]:
    servers: list[ThreadServer] = []

    def make(reply_filter=None) -> ThreadServer:
        servers.append(ThreadServer(reply_filter))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def read_program(bank: int = 1, row: int = 9) -> bytes:
    words = [
        isa.Act(bank, row).encode(),
        isa.Wait(5).encode(),
        isa.Rd(bank, 0).encode(),
        isa.Wait(10).encode(),
        isa.Pre(bank).encode(),
        isa.End().encode(),
    ]
    return encode_program(words)


def test_hello_over_socket(make_server) -> None:
    srv = make_server()
    with Link.open(srv.url, timeout_s=2) as link:
        info = decode_json(link.request(MsgType.HELLO).payload)
    assert info["banks"] == 8 and info["rows"] == 32768 and info["tck_ps"] == 2500
    assert "wbuf" in info["features"]


def test_corrupt_reply_is_retransmitted_from_cache(make_server) -> None:
    damaged = []

    def corrupt_first(request: Frame, reply: bytes) -> bytes:
        if request.type == MsgType.PROGRAM and not damaged:
            damaged.append(request.seq)
            bad = bytearray(reply)
            bad[HEADER_SIZE + 10] ^= 0x01
            return bytes(bad)
        return reply

    srv = make_server(corrupt_first)
    with Link.open(srv.url, timeout_s=2) as link:
        data = decode_result(link.request(MsgType.PROGRAM, read_program()).payload)
        assert len(data) == 64
        assert link.stats.corrupt_frames == 1
        assert link.stats.retransmissions == 1
    assert srv.server.executed == 1  # the program ran once; the repeat was replayed
    assert srv.server.replayed == 1


class FakeClock:
    """A monotonic clock that moves only when a read waits (see :class:`ClockedPort`)."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def monotonic(self) -> float:
        return self.now_s


class ClockedPort:
    """An in-memory transport to a :class:`FirmwareServer`, on a :class:`FakeClock`.

    Every whole request written is answered at once, except the replies to the requests
    numbered (from 0) in ``lose``, which are lost.  A read that finds nothing waits the
    port's ``timeout`` on the fake clock, as a pySerial read does on the real one; so the
    link's timeouts do not depend on how loaded the machine is.
    """

    def __init__(self, server: FirmwareServer, clock: FakeClock, lose: set[int], timeout: float = 0.05) -> None:
        self.server = server
        self.clock = clock
        self.lose = lose
        self.timeout = timeout
        self.requests: list[Frame] = []
        self._decoder = FrameDecoder()
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._decoder.feed(bytes(data))
        while (frame := self._decoder.next_frame()) is not None:
            reply = self.server.handle(frame)
            if len(self.requests) not in self.lose:
                self._buffer += reply
            self.requests.append(frame)
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if not self._buffer:
            self.clock.now_s += self.timeout
            return b""
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk

    @property
    def in_waiting(self) -> int:
        return len(self._buffer)

    def reset_input_buffer(self) -> None:
        self._buffer.clear()

    def close(self) -> None:
        pass


def test_lost_reply_times_out_then_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(link_module, "time", SimpleNamespace(monotonic=clock.monotonic))
    server = FirmwareServer(build_firmware(seed=5))
    port = ClockedPort(server, clock, lose={0})
    with Link(port, timeout_s=0.3, retries=2, name="clocked") as link:
        info = decode_json(link.request(MsgType.HELLO).payload)
        assert info["banks"] == 8
        assert link.stats.timeouts == 1
        assert link.stats.retransmissions == 1
        assert 0.3 <= clock.now_s < 0.3 + 2 * port.timeout  # the first attempt waited out its 0.3 s, no longer
        assert [(f.type, f.seq) for f in port.requests] == [(MsgType.HELLO, 1)] * 2  # the same request again
    assert server.executed == 1 and server.replayed == 1  # answered from the cache, not run twice


def test_lost_reply_over_a_socket_is_retransmitted(make_server) -> None:
    # The same over a real socket, on the real clock: on a loaded machine a slow reply may
    # cost another timeout, so the counts are tied to each other rather than fixed at one.
    dropped = []

    def drop_first(request: Frame, reply: bytes) -> bytes | None:
        if not dropped:
            dropped.append(request.seq)
            return None
        return reply

    srv = make_server(drop_first)
    with Link.open(srv.url, timeout_s=0.3, retries=5) as link:
        link.request(MsgType.HELLO)
        assert dropped == [1]
        assert link.stats.timeouts >= 1
        assert link.stats.retransmissions == link.stats.timeouts
    # HELLO ran once; the reply that came back was a replay (a later repeat may still be in flight)
    assert srv.server.executed == 1 and 1 <= srv.server.replayed <= link.stats.retransmissions


def test_no_reply_gives_clear_timeout(make_server) -> None:
    srv = make_server(lambda request, reply: None)
    with Link.open(srv.url, timeout_s=0.1, retries=2) as link:
        with pytest.raises(LinkTimeoutError, match=r"no valid reply from socket://.* HELLO seq=1 .* after 3 attempts"):
            link.request(MsgType.HELLO)
        assert link.stats.retransmissions == 2


def test_duplicated_reply_is_discarded_as_stale(make_server) -> None:
    srv = make_server(lambda request, reply: reply + reply)  # every reply arrives twice
    with Link.open(srv.url, timeout_s=2) as link:
        first = link.request(MsgType.HELLO)
        second = link.request(MsgType.STATUS)
        assert first.seq == 1 and second.seq == 2
        assert second.type == MsgType.STATUS_REPLY
        assert link.stats.stale_frames == 1  # the second copy of HELLO's reply


class CorruptingTransport:
    """Wraps a pySerial port and damages the n-th frame the host writes."""

    def __init__(self, port, damage_writes: set[int]) -> None:
        self.port = port
        self.damage = damage_writes
        self.writes = 0

    def __getattr__(self, name):
        return getattr(self.port, name)

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes in self.damage:
            data = bytearray(data)
            data[-1] ^= 0x80  # CRC-32 byte
            data = bytes(data)
        return self.port.write(data)


def test_corrupt_request_is_nakked_and_resent(make_server) -> None:
    srv = make_server()
    transport = CorruptingTransport(open_transport(srv.url), {1})
    lines: list[str] = []
    link = Link(transport, timeout_s=2, spy=lines.append, name=srv.url)
    try:
        reply = link.request(MsgType.PROGRAM, read_program())
    finally:
        link.close()
    assert reply.type == MsgType.RESULT
    assert link.stats.naks == 1 and link.stats.retransmissions == 1
    assert srv.server.naks == 1 and srv.server.executed == 1
    # The spy saw both transmissions and the NAK, one decoded line per frame.
    assert sum(">> PROGRAM seq=1" in line for line in lines) == 2
    assert any("<< NAK seq=1" in line for line in lines)
    assert any("<< RESULT seq=1 len=68 count=1" in line for line in lines)


def test_remote_error_is_raised_with_message(make_server) -> None:
    srv = make_server()
    bad = encode_program([isa.Rd(2, 0).encode(), isa.End().encode()])
    with Link.open(srv.url, timeout_s=2) as link:
        with pytest.raises(RemoteError, match="RD to bank 2 with no open row") as info:
            link.request(MsgType.PROGRAM, bad)
        assert info.value.code == ErrorCode.NO_OPEN_ROW
        # The link is still usable afterwards.
        assert link.request(MsgType.HELLO).type == MsgType.INFO


def test_reset_drains_stale_data(make_server) -> None:
    srv = make_server()
    with Link.open(srv.url, timeout_s=2) as link:
        # An aborted exchange: a request whose reply the host never reads.
        link._port.write(encode_frame(MsgType.PROGRAM, 999, read_program()))
        link._port.write(b"\x00garbage\xa5")
        link.reset()
        assert link.request(MsgType.HELLO).seq == 2
        assert link.stats.stale_frames == 0


def test_loop_transport_echo_is_not_taken_as_reply() -> None:
    with Link.open("loop://", timeout_s=0.05, retries=1) as link:
        with pytest.raises(LinkTimeoutError):
            link.request(MsgType.HELLO)
        assert link.stats.stale_frames == 2  # both echoed requests were seen and ignored


def test_loop_transport_carries_frames_exactly() -> None:
    port = open_transport("loop://")
    frame = encode_frame(MsgType.RESULT, 42, bytes(range(200)))
    port.write(frame)
    assert port.read(len(frame)) == frame
    port.close()


def test_spy_prefix_logs_frames(make_server, capsys) -> None:
    srv = make_server()
    with Link.open("spy+" + srv.url, timeout_s=2) as link:
        link.request(MsgType.HELLO)
    err = capsys.readouterr().err
    assert ">> HELLO seq=1 len=0" in err and "<< INFO seq=1" in err


def test_spy_to_text_stream(make_server) -> None:
    srv = make_server()
    stream = io.StringIO()
    with Link.open(srv.url, timeout_s=2, spy=stream) as link:
        link.request(MsgType.STATUS)
    assert "STATUS seq=1" in stream.getvalue()


@pytest.mark.parametrize(
    "url, message",
    [
        ("bogus://x", "cannot open tester link 'bogus://x'"),
        ("socket://127.0.0.1:1", "cannot open tester link"),
        ("/dev/does-not-exist-tty", "cannot open tester link"),
        ("/dev/ttyUSB0?parity=Q", "unknown serial option 'parity'"),
        ("/dev/ttyUSB0?baudrate=fast", "is not a number"),
        ("", "non-empty"),
    ],
)
def test_bad_urls_give_one_line_errors(url: str, message: str) -> None:
    with pytest.raises(LinkError) as info:
        Link.open(url)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_serial_device_path_with_baudrate(monkeypatch) -> None:
    seen = {}
    real_serial_for_url = serial.serial_for_url

    def fake_serial_for_url(url, **kwargs):
        seen.update(kwargs, url=url)
        return real_serial_for_url("loop://", timeout=kwargs["timeout"])

    monkeypatch.setattr(serial, "serial_for_url", fake_serial_for_url)
    open_transport("/dev/ttyUSB3?baudrate=3000000").close()
    assert seen["url"] == "/dev/ttyUSB3" and seen["baudrate"] == 3000000


def test_socket_links_send_frames_without_nagle_delay(make_server) -> None:
    import socket

    server = make_server()
    with Link.open(server.url) as link:
        sock = link._port._socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        # A request larger than a TCP segment is answered whole.
        words = [isa.Wait(1).encode()] * 8000 + [isa.End().encode()]
        assert decode_result(link.request(MsgType.PROGRAM, encode_program(words)).payload) == b""

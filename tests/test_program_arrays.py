"""Programs built on arrays: the same words as the per-row builders, payloads and frames from arrays, the session's rows."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from emubench import build_firmware
from emubench.server import FirmwareServer, bind_listener, serve_socket
from firmware_bridge.framing import FrameDecoder, encode_frame
from firmware_bridge.protocol import ProtocolError, decode_program, decode_program_arrays, encode_program
from softmc_host import isa
from softmc_host.program import (
    Program,
    ProgramError,
    append_row_read,
    append_row_write,
    build_row_reads,
    build_row_writes,
    pack_rows,
)
from softmc_host.session import TesterSession
from softmc_host.timing import AccessTiming, Ddr3Params


def mixed_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows of random bytes, some repeating one byte per burst (stock WR), some whole rows of one byte."""
    data = rng.integers(0, 256, (n, 8192), dtype=np.uint8)
    for i in range(n):
        bursts = data[i].reshape(128, 64)
        if i % 3 == 0:
            bursts[:] = rng.integers(0, 256)
        elif i % 3 == 1:
            pick = rng.random(128) < 0.5
            bursts[pick] = rng.integers(0, 256, (int(pick.sum()), 1))
    return data


CASES = [  # (timing, tCK in ns, program length limit)
    (AccessTiming(), 2.5, 8192),
    (AccessTiming(7.5, 10.0, 20.0), 1.25, 3000),
    (AccessTiming(3000.0, 3000.0, 3000.0), 2.5, 8192),
    (AccessTiming(2.5, 2.5, 30.0), 2.5, 900),
]


@pytest.mark.parametrize("timing, tck_ns, max_length", CASES)
def test_row_writes_on_arrays_match_the_per_row_builder(timing: AccessTiming, tck_ns: float, max_length: int) -> None:
    rng = np.random.default_rng(int(tck_ns * 100) + max_length)
    rows = [(int(rng.integers(0, 8)), int(rng.integers(0, 32768))) for _ in range(40)]
    data = mixed_rows(rng, len(rows))
    cycles = timing.cycles(tck_ns)
    slow = list(pack_rows(rows, lambda p, b, r: append_row_write(p, b, r, data[rows.index((b, r))], cycles), max_length))
    fast = build_row_writes(rows, data, cycles, max_length=max_length)
    assert len(fast) == len(slow) >= 1
    for a, b in zip(slow, fast):
        assert b.word_array().tolist() == a.words  # bit-exact SoftMC words
        assert b.blocks == a.blocks and b.n_reads == a.n_reads == 0 and b.ended
        assert b.payload() == a.payload()


@pytest.mark.parametrize("timing, tck_ns, max_length", CASES)
@pytest.mark.parametrize("bursts, per_burst", [(None, False), (None, True), ([0, 5, 3], False), ([], False)])
def test_row_reads_on_arrays_match_the_per_row_builder(
    timing: AccessTiming, tck_ns: float, max_length: int, bursts: list | None, per_burst: bool
) -> None:
    rows = [(r % 8, 7 * r + 1) for r in range(33)]
    cycles = timing.cycles(tck_ns)

    def one(p: Program, b: int, r: int) -> Program:
        return append_row_read(p, b, r, cycles, Ddr3Params(), bursts, per_burst)

    try:
        slow = list(pack_rows(rows, one, max_length))
    except ProgramError as exc:
        with pytest.raises(ProgramError, match=str(exc)[:30]):
            build_row_reads(rows, cycles, Ddr3Params(), bursts, per_burst, max_length=max_length)
        return
    fast = build_row_reads(rows, cycles, Ddr3Params(), bursts, per_burst, max_length=max_length)
    assert [p.word_array().tolist() for p in fast] == [p.words for p in slow]
    assert [p.n_reads for p in fast] == [p.n_reads for p in slow]


def test_array_builders_refuse_what_the_per_row_builders_refuse() -> None:
    cycles = AccessTiming().cycles(2.5)
    for build, one in [
        (lambda: build_row_writes([(0, 1)], np.zeros((1, 8192), np.uint8), cycles, max_length=100),
         lambda p, b, r: append_row_write(p, b, r, 0, cycles)),
        (lambda: build_row_reads([(0, 1)], cycles, max_length=100), lambda p, b, r: append_row_read(p, b, r, cycles)),
    ]:
        with pytest.raises(ProgramError) as slow:
            list(pack_rows([(0, 1)], one, 100))
        with pytest.raises(ProgramError) as fast:
            build()
        assert str(fast.value) == str(slow.value)
    with pytest.raises(isa.IsaError, match="bank"):
        build_row_reads([(9, 1)], cycles)
    with pytest.raises(ProgramError, match="array"):
        build_row_writes([(0, 1)], np.zeros((2, 8192), np.uint8), cycles)
    assert build_row_writes([], np.zeros((0, 8192), np.uint8), cycles) == []


def test_array_program_lists_appear_on_demand() -> None:
    p = Program.from_arrays(np.array([isa.Ref().encode(), 0]), np.zeros((1, 64), np.uint8))
    assert len(p) == 2 and p.ended and p.n_blocks == 1 and p.uses_write_extension
    assert p.words == [isa.Ref().encode(), 0] and p.blocks == [bytes(64)]
    p.words.insert(0, isa.Wait(3).encode())  # the list is the program once asked for
    assert p.word_array().tolist()[:2] == [isa.Wait(3).encode(), isa.Ref().encode()]


def test_payloads_and_frames_from_arrays_are_the_same_bytes() -> None:
    words = [isa.Act(1, 2).encode(), isa.WBuf(0).encode(), isa.Wr(1, 8, 0).encode(), 0]
    blocks = [bytes(range(64)), bytes(64)]
    payload = encode_program(words, blocks)
    array_payload = encode_program(np.array(words, np.int64), np.frombuffer(b"".join(blocks), np.uint8).reshape(2, 64))
    assert array_payload == payload
    w, b = decode_program_arrays(payload)
    assert w.dtype == np.uint32 and w.tolist() == words and b.tobytes() == b"".join(blocks)
    assert decode_program(payload) == (words, blocks)
    with pytest.raises(ProtocolError, match="negative"):
        encode_program(np.array([-1]))
    frame = encode_frame(0x02, 7, payload)
    assert encode_frame(0x02, 7, memoryview(payload)) == frame
    assert encode_frame(0x02, 7, np.frombuffer(payload, np.uint8)) == frame
    decoder = FrameDecoder()
    decoder.feed(frame[:100])
    decoder.feed(frame[100:] + frame)
    assert decoder.next_frame().payload == payload and decoder.next_frame().payload == payload


@pytest.fixture
def tester():
    listener = bind_listener("127.0.0.1", 0)
    server = FirmwareServer(build_firmware(seed=2))
    threading.Thread(target=serve_socket, args=(server, listener), daemon=True).start()
    with TesterSession.open("socket://127.0.0.1:%d" % listener.getsockname()[1]) as session:
        yield session
    listener.close()


def test_session_moves_rows_given_in_every_form(tester: TesterSession) -> None:
    rng = np.random.default_rng(4)
    rows = [(b, r) for b in (0, 5) for r in range(30)]
    data = mixed_rows(rng, len(rows))
    tester.write_rows(rows, data)  # one (rows, row_bytes) array
    np.testing.assert_array_equal(tester.read_rows(rows), data)
    tester.write_rows(rows[:3], [0x5A, bytes(data[1]), data[2]])  # a byte, bytes, an array
    np.testing.assert_array_equal(tester.read_rows(rows[:3]), np.stack([np.full(8192, 0x5A, np.uint8), data[1], data[2]]))
    tester.write_rows(rows[:2], 0x11)
    assert tester.read_row(*rows[1]) == b"\x11" * 8192
    back = tester.read_rows(rows[:4], per_burst_activate=True)
    np.testing.assert_array_equal(back[2:], data[2:4])
    with pytest.raises(ValueError, match="row data must be 8192 bytes"):
        tester.write_rows(rows[:2], [bytes(10), 0])
    with pytest.raises(ValueError, match="out of range"):
        tester.write_rows(rows[:1], [300])
    with pytest.raises(ValueError, match="twice"):
        tester.write_rows([rows[0], rows[0]], 0)

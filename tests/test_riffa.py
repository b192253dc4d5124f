"""The stock SoftMC transport (``riffa://``) through the fake libriffa that forwards to the emulated firmware."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from boosting.hil import HilError, HilInjector, roundtrip
from conftest import receives_interrupted_after
from emubench import fake_riffa
from errormodels.layout import AddressMap
from firmware_bridge.link import LinkTimeoutError
from firmware_bridge.protocol import MsgType, encode_program
from firmware_bridge.riffa import (
    SIGNATURES,
    FpgaInfoList,
    RiffaError,
    RiffaLibrary,
    RiffaLink,
    UnsupportedRequest,
    count_reads,
    load_library,
    parse_riffa_url,
    register_library,
)
from profiler.plan import SweepConfig
from profiler.run import SweepError, sweep_to_map
from profiler.storage import BerMap
from softmc_host import isa
from softmc_host.demo import main as demo_main
from softmc_host.program import Program
from softmc_host.session import CapabilityError, TesterSession
from softmc_host.timing import AccessTiming

BENCH = "emu://eden?seed=1&link=riffa"


@pytest.fixture(scope="module")
def stock():
    """One emulated bench reached as a stock SoftMC board (``riffa://N/0?lib=emu``)."""
    with TesterSession.open("emu://B?seed=3&link=riffa", timeout_s=5.0) as session:
        yield session


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    return text


# URLs, library, board ------------------------------------------------------------------------------

@pytest.mark.parametrize("url, words", [
    ("riffa://", "malformed RIFFA URL"),
    ("riffa://x/0", "ID='x'"),
    ("riffa://5/0", "0..4"),
    ("riffa://0/12", "0..11"),
    ("riffa://0/0/1", "malformed"),
    ("riffa://0/0?lib", "malformed riffa:// query"),
    ("riffa://0/0?rows=0", "rows='0'"),
    ("riffa://0/0?speed=9", "unknown riffa:// option 'speed'"),
    ("riffa://0/0?timeout_ms=-1", "timeout_ms"),
    ("riffa://0/0?columns=3", "whole 64-byte bursts"),
])
def test_bad_riffa_urls_are_one_line_errors(url: str, words: str) -> None:
    with pytest.raises(RiffaError) as info:
        TesterSession.open(url)
    assert words in _one_line(info.value)


def test_url_defaults_are_the_ml605_release() -> None:
    parsed = parse_riffa_url("riffa://2")
    assert (parsed.fpga_id, parsed.channel, parsed.lib) == (2, 0, None)
    assert parsed.info_dict() == {"tck_ps": 2500, "banks": 8, "rows": 32768, "columns": 1024, "bus_bytes": 8,
                                  "max_program": 8192}
    assert parse_riffa_url("riffa://0/3?rows=1024&timeout_ms=50&lib=/x.so").info_dict()["rows"] == 1024


def test_missing_library_is_a_one_line_error(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("EDEN_RIFFA_LIB", raising=False)
    missing = tmp_path / "libriffa.so"
    with pytest.raises(RiffaError) as info:
        TesterSession.open(f"riffa://0/0?lib={missing}")
    message = _one_line(info.value)
    assert "libriffa not found" in message and str(missing) in message and "?lib=PATH" in message
    monkeypatch.setenv("EDEN_RIFFA_LIB", str(missing))  # the environment variable names it as well
    assert demo_main(["--tester", "riffa://0/0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: libriffa not found") and str(missing) in err and "\n" not in err


def test_a_library_that_is_not_libriffa_is_named() -> None:
    libc = ctypes.util.find_library("c")
    if libc is None:
        pytest.skip("no C library to load")
    with pytest.raises(RiffaError) as info:
        load_library(libc)
    assert "is not libriffa: it lacks fpga_list" in _one_line(info.value)


def test_missing_board_is_a_one_line_error(stock) -> None:
    taken = stock.link.url.fpga_id
    absent = next(i for i in range(5) if i not in fake_riffa.library().boards)
    with pytest.raises(RiffaError) as info:
        TesterSession.open(f"riffa://{absent}/0?lib=emu")
    message = _one_line(info.value)
    assert f"no RIFFA board {absent}" in message and f"{taken} ('SoftMC-emu', 1 channels)" in message
    with pytest.raises(RiffaError, match="has channels 0..0, not 1"):
        TesterSession.open(f"riffa://{taken}/1?lib=emu")


def test_missing_board_from_the_sweep_command_is_one_line(tmp_path, capsys) -> None:
    from profiler.sweep import main as sweep_main

    out = tmp_path / "m.h5"
    assert sweep_main(["--bench", "riffa://4/0?lib=emu", "--banks", "0", "--rows", "0:2", "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no RIFFA board 4" in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_unknown_provider_names_fall_back_to_a_library_lookup(monkeypatch) -> None:
    monkeypatch.delenv("EDEN_RIFFA_LIB", raising=False)
    with pytest.raises(RiffaError, match="libriffa not found .*library providers: emu"):
        load_library("nosuchriffa")
    with pytest.raises(ValueError):
        register_library("bad name", lambda: None)


def test_the_emu_provider_is_an_entry_point_in_a_fresh_process() -> None:
    code = ("from firmware_bridge.riffa import load_library; lib = load_library('emu'); "
            "print(lib.source, lib.boards())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "RIFFA library 'emu' []"


# The fake library behind the ctypes interface --------------------------------------------------

def test_fake_functions_have_libriffa_signatures_and_fill_the_list() -> None:
    fake = fake_riffa.FakeLibriffa()
    for name, (restype, argtypes) in SIGNATURES.items():
        function = getattr(fake, name)
        assert isinstance(function, ctypes._CFuncPtr)
        assert tuple(function.argtypes) == argtypes and function.restype == restype
    first = fake.attach(None)
    second = fake.attach(None, "other")
    info = FpgaInfoList()
    assert fake.fpga_list(ctypes.byref(info)) == 0
    assert info.num_fpgas == 2 and list(info.id[:2]) == [first, second] and info.name[1].value == b"other"
    fake.detach(first)
    assert fake.fpga_open(first) is None  # NULL for a missing board
    handle = fake.fpga_open(second)
    assert handle
    fake.fpga_close(handle)


def test_sink_board_answers_every_read_with_one_16_word_transaction() -> None:
    fake = fake_riffa.FakeLibriffa()
    board = fake.attach(None)
    handle = fake.fpga_open(board)
    words = np.array([isa.Act(0, 1).encode(), isa.Rd(0, 0).encode(), isa.Rd(0, 8).encode(), isa.PreAll().encode(), 0],
                     dtype="<u8")
    send = (ctypes.c_uint64 * len(words))(*words.tolist())
    assert fake.fpga_send(handle, 0, send, 2 * len(words), 0, 1, 100) == 2 * len(words)
    buffer = (ctypes.c_uint32 * 64)()
    assert [fake.fpga_recv(handle, 0, buffer, 64, 10) for _ in range(3)] == [16, 16, 0]
    # Half a program waits for its END; fpga_reset drops it and anything queued.
    assert fake.fpga_send(handle, 0, send, 4, 0, 0, 100) == 4
    assert fake.fpga_recv(handle, 0, buffer, 16, 10) == 0
    fake.fpga_reset(handle)
    assert fake.boards[board].partial == [] and fake.boards[board].resets == 1


def test_count_reads_agrees_with_the_instruction_decoder() -> None:
    rng = np.random.default_rng(4)
    kinds = [isa.Rd(1, 8), isa.Wr(2, 16, 0xA5), isa.Act(3, 77), isa.Pre(1), isa.PreAll(), isa.Wait(9),
             isa.SetBusDir(isa.BusDirection.WRITE), isa.Rd(7, 1016, auto_precharge=True), isa.Ref(), isa.End()]
    words = np.array([kinds[i].encode() for i in rng.integers(0, len(kinds), 500)], dtype=np.int64)
    assert count_reads(words) == int(np.count_nonzero(isa.decode_words(words).kind == isa.Kind.RD))


# Sessions on a stock tester ----------------------------------------------------------------------

def test_stock_session_kind_capabilities_and_round_trip(stock) -> None:
    assert stock.kind == "stock-softmc" and stock.stock
    assert stock.capabilities == frozenset() and not stock.writes_arbitrary_data
    assert stock.link.name.startswith("riffa://") and isinstance(stock.link, RiffaLink)
    rows = [(0, 3), (5, 900), (7, 32767)]
    pattern = np.repeat(np.arange(len(rows) * stock.bursts_per_row, dtype=np.uint8) * 37, 64).reshape(len(rows), -1)
    stock.write_rows(rows, pattern)  # one byte per burst: what a stock WR writes
    assert np.array_equal(stock.read_rows(rows), pattern)
    assert np.array_equal(stock.read_rows(rows, AccessTiming(), per_burst_activate=True), pattern)
    assert stock.seed_noise(5) is False
    assert stock.hold(1e5) >= 1e5 and stock.set_refresh_interval(7800.0) == 7800.0


def test_stock_session_refuses_what_it_lacks_before_sending(stock) -> None:
    before = stock.link.stats.requests
    data = np.arange(stock.row_bytes, dtype=np.uint8)
    with pytest.raises(CapabilityError) as info:
        stock.write_rows([(1, 10)], data)
    assert "bank 1 row 10, burst 0, is not one repeated byte" in _one_line(info.value)
    assert "write-data extension" in str(info.value)
    with pytest.raises(CapabilityError, match="STATUS"):
        stock.status()
    program = Program().set_bus(isa.BusDirection.WRITE).load_write_buffer(bytes(range(64)))
    program.add(isa.Act(0, 1)).wait(6).add(isa.Wr(0, 0, 0)).wait(20).add(isa.PreAll()).wait(6).end()
    with pytest.raises(CapabilityError, match="WBUF"):
        stock.run(program)
    assert stock.link.stats.requests == before  # nothing went to the board
    with pytest.raises(UnsupportedRequest, match="no SEED request"):
        stock.link.request(MsgType.SEED, bytes(8))
    with pytest.raises(RiffaError, match="lacks the write-data extension"):
        stock.link.request(MsgType.PROGRAM, encode_program([0], [bytes(64)]))
    with pytest.raises(RiffaError, match="does not end with END"):
        stock.link.request(MsgType.PROGRAM, encode_program([isa.Wait(5).encode()]))


def test_hardware_in_the_loop_inference_needs_the_write_data_extension(stock) -> None:
    import torch

    with pytest.raises(HilError) as info:
        roundtrip(stock, np.arange(100, dtype=np.uint8), AddressMap())
    message = _one_line(info.value)
    assert "stock-softmc tester" in message and "write-data extension" in message
    with pytest.raises(HilError, match="write-data extension"):
        HilInjector(torch.nn.Sequential(torch.nn.Linear(4, 2)), stock)


def test_a_read_that_never_comes_times_out_and_the_next_program_works(stock) -> None:
    link = stock.link
    stock.write_rows([(2, 2)], 0x3C)
    # RD with no open row: the emulated firmware refuses it (stock SoftMC checks nothing), so no data comes.
    bad = Program().add(isa.Rd(2, 0)).end()
    resets = link.stats.extra["resets"]
    old, link.timeout_s = link.timeout_s, 0.05
    try:
        with pytest.raises(LinkTimeoutError) as info:
            stock.run(bad)
    finally:
        link.timeout_s = old
    waited = int(re.search(r"READ 1 of 1 did not come back within (\d+) ms", _one_line(info.value)).group(1))
    assert 50 <= waited <= 60  # the link's time-out (plus the session's allowance for the program's length)
    assert np.all(stock.read_rows([(2, 2)]) == 0x3C)
    assert link.stats.extra["resets"] == resets + 1  # the board was reset before the next program


def test_aborted_program_then_new_session_returns_no_stale_data(stock) -> None:
    url = stock.link.name
    board = fake_riffa.library().boards[stock.link.url.fpga_id]
    rows_a = [(0, 100 + i) for i in range(4)]
    rows_b = [(1, 200 + i) for i in range(4)]
    stock.write_rows(rows_a, 0xA1)
    stock.write_rows(rows_b, 0xB2)
    # Ctrl-C after the 5th burst of a 4-row read, and the host process goes away without a reset.
    with receives_interrupted_after(stock.link, 5), pytest.raises(KeyboardInterrupt):
        stock.read_rows(rows_a)
    stale = len(board.pending)
    assert stale == 4 * stock.bursts_per_row - 5  # the board still holds the rest of rows_a
    # Without a reset, the next receive would take row A's data as its own.
    handle = fake_riffa.library().fpga_open(stock.link.url.fpga_id)
    peek = (ctypes.c_uint8 * 64)()
    assert fake_riffa.library().fpga_recv(handle, 0, peek, 16, 10) == 16 and set(bytes(peek)) == {0xA1}
    fake_riffa.library().fpga_close(handle)
    # A new session on the same board resets it on open and reads back what is there.
    resets = board.resets
    with TesterSession.open(url) as second:
        assert second.link.stats.extra["resets"] == 1 and board.resets == resets + 1
        assert len(board.pending) == 0  # fpga_reset dropped them (a drain would take what came after)
        back = second.read_rows(rows_b)
        assert np.all(back == 0xB2)
    # The first session recovers the same way: its link resets the board before its next program.
    assert np.all(stock.read_rows(rows_a) == 0xA1)


# A sweep and the demo over riffa:// ----------------------------------------------------------------

def _sweep(tmp_path, bench: str, name: str, patterns=("checkerboard",)):
    config = SweepConfig(bench=bench, vdd_v=[1.35], trcd_ns=[13.75, 7.5], banks="0", rows="sample:4",
                         patterns=list(patterns), seed=0, out=str(tmp_path / name))
    return BerMap(sweep_to_map(config, progress=False))


def test_sweep_over_riffa_matches_the_serial_link(tmp_path) -> None:
    over_riffa = _sweep(tmp_path, BENCH, "riffa.h5", ("random-bursts",))
    over_serial = _sweep(tmp_path, "emu://eden?seed=1", "serial.h5", ("random-bursts",))
    assert over_riffa.meta["bench"]["emulated"]["link"] == "riffa"
    assert over_riffa.meta["bench"]["firmware"]["firmware"] == "SoftMC (stock)"
    a = {p.key: p for p in over_riffa.points()}
    b = {p.key: p for p in over_serial.points()}
    assert a.keys() == b.keys() and len(a) == 2
    for key in a:
        if "RCD13.75" in key:
            assert a[key].flips == 0 == b[key].flips  # nominal: every bit reads back
        else:  # the same DIMM (seed) at a short tRCD: the same cells fail, up to read noise
            assert a[key].ber > 0.01 and abs(a[key].ber - b[key].ber) < 0.1 * b[key].ber
            assert np.array_equal(a[key].rows, b[key].rows)


def test_sweep_with_a_pattern_a_stock_tester_cannot_write_is_refused_up_front(tmp_path) -> None:
    with pytest.raises(SweepError) as info:
        _sweep(tmp_path, BENCH, "refused.h5", ("all-1", "random"))
    message = _one_line(info.value)
    assert "pattern 'random:0'" in message and "random-bursts" in message
    assert list(tmp_path.iterdir()) == []  # nothing on disk, the supply never moved


def test_a_file_pattern_that_varies_past_the_first_rows_is_refused_up_front(tmp_path) -> None:
    pattern = np.zeros(300 * 8192, np.uint8)
    pattern[280 * 8192 + 5] = 1  # row 280 is the first that a stock WR cannot write
    path = tmp_path / "weights.bin"
    path.write_bytes(pattern.tobytes())
    config = SweepConfig(bench="emu://B?seed=1&link=riffa", banks="0", rows="0:300", patterns=[f"file:{path}"],
                         out=str(tmp_path / "f.h5"))
    with pytest.raises(SweepError, match="pattern 'file:weights.bin' for bank 0 row 280, burst 0"):
        sweep_to_map(config, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_demo_over_riffa(capsys) -> None:
    assert demo_main(["--tester", "emu://B?seed=2&link=riffa", "--banks", "0,7", "--rows", "0,5,32767"]) == 0
    out = capsys.readouterr().out
    assert "tester: SoftMC (stock) RIFFA 2.1" in out and "random bursts (0)" in out
    assert "0 bit errors; RIFFA:" in out and "1 resets" in out


# Fuzzing the URL parser ----------------------------------------------------------------------------

RIFFA_VALUES = st.one_of(
    st.sampled_from(["0", "4", "5", "11", "12", "-1", "\u0663", "1e3", "9" * 40, "", "%00", "&", "=", "?", "/"]),
    st.text(max_size=8),
)


@st.composite
def riffa_urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["riffa://", "RIFFA://", "riffa:/", "riffa://"]))
    path = "/".join(draw(st.lists(RIFFA_VALUES, min_size=0, max_size=3)))
    pairs = draw(st.lists(st.tuples(st.sampled_from(["timeout_ms", "rows", "banks", "columns", "bus_bytes",
                                                     "tck_ps", "x", ""]), RIFFA_VALUES), max_size=3))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    return scheme + path + ("?" + query if query else "")


@pytest.mark.fuzz
@fuzz_settings()
@given(riffa_urls())
def test_fuzzed_riffa_urls_parse_or_fail_in_one_line(url: str) -> None:
    try:
        parsed = parse_riffa_url(url)
    except RiffaError as exc:
        assert "\n" not in str(exc)
        return
    assert 0 <= parsed.fpga_id < 5 and 0 <= parsed.channel < 12
    info = parsed.info_dict()
    assert (info["columns"] * info["bus_bytes"]) % 64 == 0


def test_link_benchmark_reports_the_fake_riffa_host_cost(capsys) -> None:
    from conftest import load_script

    bench = load_script("benchmarks/link.py", "link_benchmark")
    boards = set(fake_riffa.library().boards)
    bench.riffa_host_cost(4, 1)
    out = capsys.readouterr().out
    assert "4 rows to a sink board" in out
    host = [line for line in out.splitlines() if line.strip().startswith("host read:")]
    assert len(host) == 1 and float(host[0].split()[2]) > 0  # the fake's time is measured within the same reads
    assert set(fake_riffa.library().boards) == boards  # the sink board is detached again


def test_the_emulator_command_refuses_link_riffa_in_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "emubench", "--bench", "emu://B?link=riffa"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].endswith("this command serves the serial link")
    with pytest.raises(Exception, match="link='x'|link=x"):
        TesterSession.open("emu://B?link=x")


# Failures of the library and the board -----------------------------------------------------------

@pytest.fixture
def sink():
    """A sink board of a private fake library, opened as a system library would be, and its link."""
    fake = fake_riffa.FakeLibriffa()
    board = fake.attach(None)
    library = RiffaLibrary(fake, "fake", system=False)
    link = RiffaLink(library, parse_riffa_url(f"riffa://{board}/0?timeout_ms=40"), name=f"riffa://{board}/0")
    yield fake, fake.boards[board], link
    link.close()


def _read_program(n_reads: int) -> bytes:
    words = [isa.Act(0, 1).encode()] + [isa.Rd(0, 8 * i).encode() for i in range(n_reads)] + [isa.PreAll().encode(), 0]
    return encode_program(words)


def test_every_transfer_has_a_finite_time_out(sink) -> None:
    fake, _, link = sink
    fake.timeouts_ms["fpga_recv"].clear()
    link.request(MsgType.PROGRAM, _read_program(3))
    assert list(fake.timeouts_ms["fpga_recv"]) == [40, 40, 40]  # never 0, which blocks for ever
    assert all(t > 0 for t in fake.timeouts_ms["fpga_send"])


def test_bursts_in_flight_at_a_reset_are_drained(sink) -> None:
    _, board, link = sink
    board.late = [bytes([0x5A]) * 64] * 7
    link.reset()
    assert link.stats.extra["drained_bursts"] == 7 and not board.pending
    reply = link.request(MsgType.PROGRAM, _read_program(2))
    assert reply.payload == (2).to_bytes(4, "little") + bytes(128)  # the sink's zeros, not the stale 0x5A


def test_a_board_that_keeps_sending_fails_the_drain_in_one_line(sink) -> None:
    fake, board, link = sink
    board.pending.extend([bytes(64)] * 100000)
    with pytest.raises(RiffaError) as info:
        link.drain(max_s=0.01)
    assert "still sending after 0.01 s of draining" in _one_line(info.value)


def test_transactions_of_another_length_are_refused_not_cut(sink) -> None:
    _, board, link = sink
    board.bursts_per_transaction = 2  # a build packing two READs per transaction
    with pytest.raises(LinkTimeoutError, match="READ 1 of 4 came back as a transaction of 32 words, not 16"):
        link.request(MsgType.PROGRAM, _read_program(4))
    assert link.needs_reset
    board.bursts_per_transaction = 1
    link.reset()
    board.pending.append(bytes(32))  # and a transaction of 8 words ahead of the program's
    with pytest.raises(LinkTimeoutError, match="transaction of 8 words"):
        link.request(MsgType.PROGRAM, _read_program(1))
    assert link.request(MsgType.PROGRAM, _read_program(1)).payload[:4] == (1).to_bytes(4, "little")


def test_a_short_send_is_an_error_and_the_next_program_works(sink, monkeypatch) -> None:
    _, _, link = sink
    monkeypatch.setattr(link.library, "fpga_send", lambda *args: 0)
    with pytest.raises(RiffaError, match="fpga_send to riffa://.* took 0 of 10 words in 40 ms"):
        link.request(MsgType.PROGRAM, _read_program(2))
    monkeypatch.undo()
    assert link.needs_reset
    assert link.request(MsgType.PROGRAM, _read_program(2)).payload[:4] == (2).to_bytes(4, "little")
    assert not link.needs_reset


def test_driver_failures_name_the_device_node(monkeypatch, tmp_path) -> None:
    fake = fake_riffa.FakeLibriffa()
    board = fake.attach(None)
    system = RiffaLibrary(fake, "libriffa.so", system=True)
    monkeypatch.setenv("EDEN_RIFFA_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr("firmware_bridge.riffa.DEVICE_NODE", str(tmp_path / "riffa"))
    monkeypatch.setattr(system, "fpga_list", lambda info: -1)
    with pytest.raises(RiffaError) as info:
        RiffaLink(system, parse_riffa_url(f"riffa://{board}/0"))
    assert f"fpga_list of libriffa.so failed (-1): no {tmp_path / 'riffa'}: is the RIFFA driver loaded" in str(info.value)
    monkeypatch.undo()
    monkeypatch.setenv("EDEN_RIFFA_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(system, "fpga_open", lambda board_id: None)
    with pytest.raises(RiffaError, match=rf"fpga_open\({board}\) failed"):
        RiffaLink(system, parse_riffa_url(f"riffa://{board}/0"))


def test_a_second_host_on_one_board_is_refused(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("EDEN_RIFFA_LOCK_DIR", str(tmp_path))
    fake = fake_riffa.FakeLibriffa()
    board = fake.attach(None)
    system = RiffaLibrary(fake, "libriffa.so", system=True)
    url = parse_riffa_url(f"riffa://{board}/0")
    first = RiffaLink(system, url)
    resets = fake.boards[board].resets
    with pytest.raises(RiffaError) as info:
        RiffaLink(system, url)
    assert f"RIFFA board {board} is in use by another program (pid {os.getpid()} holds" in _one_line(info.value)
    assert fake.boards[board].resets == resets  # refused before it could reset the first host's board
    first.close()
    RiffaLink(system, url).close()  # free again


def test_a_python_error_inside_the_fake_is_a_failure_code_not_a_crash(caplog) -> None:
    fake = fake_riffa.FakeLibriffa()
    fake.attach(None)
    fake.boards[0].name = "\u00e9" * 40  # not ASCII: filling the list fails inside the callback
    info = FpgaInfoList()
    assert fake.fpga_list(ctypes.byref(info)) == -1
    assert "fpga_list failed" in caplog.text


def test_spy_logs_programs_and_results(stock) -> None:
    lines: list[str] = []
    with TesterSession.open("spy+" + stock.link.name, spy=lines.append) as spied:
        spied.read_rows([(0, 1)])
    text = "\n".join(lines)
    assert "RESET fpga_reset" in text and ">> PROGRAM" in text and "<< RESULT 128 bursts" in text

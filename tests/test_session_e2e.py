"""End to end: the emulator as a separate process, reached through pySerial over socket://."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from emubench import EmulatorProcess, spawn
from firmware_bridge.link import RemoteError
from softmc_host.session import TesterSession
from softmc_host.timing import AccessTiming

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with spawn(seed=11) as emu:
        yield emu


def test_patterns_in_several_banks_read_back_exactly(emulator: EmulatorProcess) -> None:
    rng = np.random.default_rng(1234)
    rows = [(0, 0), (0, 32767), (3, 17), (5, 1000), (7, 4242)]
    patterns = [
        0x00,
        0xFF,
        np.tile(np.array([0xAA, 0x55], np.uint8), 4096),
        rng.integers(0, 256, 8192, dtype=np.uint8),
        bytes(range(256)) * 32,
    ]
    with TesterSession.open(emulator.url) as tester:
        assert tester.row_bytes == 8192 and tester.banks == 8 and tester.tck_ns == 2.5
        tester.write_rows(rows, patterns)
        back = tester.read_rows(rows)
        for i, pattern in enumerate(patterns):
            expect = np.full(8192, pattern, np.uint8) if isinstance(pattern, int) else np.frombuffer(bytes(pattern), np.uint8)
            np.testing.assert_array_equal(back[i], expect)
        # Different data in different rows really went to different places.
        assert len({back[i].tobytes() for i in range(len(rows))}) == len(rows)
        assert tester.read_row(7, 4242) == bytes(range(256)) * 32
        assert tester.link.stats.retransmissions == 0


def test_many_rows_span_several_programs(emulator: EmulatorProcess) -> None:
    rng = np.random.default_rng(99)
    rows = [(b, r) for b in (1, 2) for r in range(100, 140)]
    data = [rng.integers(0, 256, 8192, dtype=np.uint8) for _ in rows]
    with TesterSession.open(emulator.url) as tester:
        tester.write_rows(rows, data)
        back = tester.read_rows(rows, per_burst_activate=True)
        np.testing.assert_array_equal(back, np.stack(data))
        assert tester.link.stats.requests > 4  # HELLO + several write and read programs


def test_reduced_timing_is_effective_and_reported(emulator: EmulatorProcess) -> None:
    with TesterSession.open(emulator.url, timing=AccessTiming(trcd_ns=9.0, trp_ns=11.0, tras_ns=30.0)) as tester:
        cyc = tester.timing_cycles
        assert (cyc.trcd, cyc.trp, cyc.tras) == (4, 5, 12)
        assert (cyc.trcd_ns, cyc.trp_ns, cyc.tras_ns) == (10.0, 12.5, 30.0)
        tester.write_row(4, 4, 0x5A)
        tester.write_row(4, 5, 0x5A)  # a second row in the bank: its ACT follows a PRE at tRP
        assert tester.status()["last_program"]["min_trcd_cycles"] == 4
        assert tester.read_row(4, 4) == b"\x5a" * 8192  # no error physics yet: data is exact


def test_remote_errors_and_clean_exit(emulator: EmulatorProcess) -> None:
    with TesterSession.open(emulator.url) as tester:
        with pytest.raises(RemoteError, match="RD while the bus is set to WRITE"):
            tester.run_text("BUSDIR WRITE\nACT 2 2\nWAIT 5\nRD 2 0\nEND")
    with pytest.raises(RuntimeError, match="boom"):
        with TesterSession.open(emulator.url) as tester:
            tester.run_text("ACT 6 6\nACT 5 5\nBUSDIR WRITE\nEND")
            assert tester.status()["open_rows"] == {"5": 5, "6": 6}
            raise RuntimeError("boom")
    with TesterSession.open(emulator.url) as tester:
        status = tester.status()
        assert status["open_rows"] == {} and status["bus_direction"] == "READ"


def test_write_input_errors(emulator: EmulatorProcess) -> None:
    with TesterSession.open(emulator.url) as tester:
        with pytest.raises(ValueError, match="row data must be 8192 bytes"):
            tester.write_row(0, 0, b"short")
        with pytest.raises(ValueError, match="bank 8 outside 0..7"):
            tester.write_row(8, 0, 0)
        with pytest.raises(ValueError, match="row 32768 outside"):
            tester.read_row(0, 32768)
        with pytest.raises(ValueError, match="data byte 300"):
            tester.write_row(0, 0, 300)


def run_module(*args: str, input_text: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, input=input_text,
        timeout=timeout,
    )


def test_demo_runs_against_its_own_emulator() -> None:
    proc = run_module("softmc_host.demo", "--banks", "1,6", "--rows", "3,30000")
    assert proc.returncode == 0, proc.stderr
    assert "0 bit errors" in proc.stdout
    assert "random (seed 0)" in proc.stdout


def test_demo_against_a_running_emulator_with_spy(emulator: EmulatorProcess) -> None:
    proc = run_module("softmc_host.demo", "--tester", emulator.url, "--rows", "9", "--spy")
    assert proc.returncode == 0, proc.stderr
    assert ">> HELLO seq=1" in proc.stderr and "<< RESULT" in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tester", "socket://127.0.0.1:1"], "error: cannot open tester link"),
        (["--trcd-ns", "-1"], "trcd_ns must be in (0, 10000] ns"),
        (["--banks", "x"], "--banks must be a comma list of integers"),
    ],
)
def test_demo_bad_input_is_one_line(args: list[str], message: str) -> None:
    proc = run_module("softmc_host.demo", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_emulator_cli_rejects_bad_listen() -> None:
    proc = run_module("firmware_bridge.emulator", "--listen", "tcp://x")
    assert proc.returncode == 2
    assert "--listen must be socket://HOST:PORT or pty" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminals as on Linux")
def test_emulator_pty_mode() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge.emulator", "--listen", "pty", "--exit-on-stdin-eof"],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        while line.startswith(("supply ", "thermal ", "bench ")):
            line = proc.stdout.readline()
        assert line.startswith("listening on /dev/")
        path = line.split()[-1]
        with TesterSession.open(path, timeout_s=5) as tester:
            tester.write_row(2, 77, 0xC3)
            assert tester.read_row(2, 77) == b"\xc3" * 8192
    finally:
        proc.stdin.close()
        proc.wait(10)

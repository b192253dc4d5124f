"""The emulated DIMM's row store: compact in RAM, bounded with a clear error, optionally file-backed."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from emubench import spawn
from emubench.dimm import (
    DEFAULT_MAX_STORE_MIB,
    ML605_GEOMETRY,
    EmulatedDimm,
    Geometry,
    RowStore,
    StoreFullError,
)
from firmware_bridge.link import RemoteError
from softmc_host.session import TesterSession

ROOT = Path(__file__).resolve().parents[1]
ROW = ML605_GEOMETRY.row_bytes


def _rss_anon_kib() -> int | None:
    """Anonymous resident memory of this process (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _write_row(dimm: EmulatedDimm, bank: int, row: int, data: np.ndarray) -> None:
    """Write a whole row through the DIMM's access events, burst by burst, as the firmware does."""
    access = dimm.activate(bank, row, 100)
    for column in range(0, dimm.geometry.columns, dimm.geometry.burst_length):
        start = column * dimm.geometry.bus_bytes
        access.write(column, data[start : start + dimm.geometry.burst_bytes].tobytes(), 6)
    access.close(500)


def _read_row(dimm: EmulatedDimm, bank: int, row: int) -> bytes:
    access = dimm.activate(bank, row, 100)
    data = b"".join(access.read(c, 6) for c in range(0, dimm.geometry.columns, dimm.geometry.burst_length))
    access.close(500)
    return data


# Limits -----------------------------------------------------------------------------------


def test_default_store_is_bounded_ram_and_a_file_store_holds_the_whole_dimm(tmp_path: Path) -> None:
    dimm = EmulatedDimm()
    assert dimm.store.in_ram
    assert dimm.store.capacity_rows == DEFAULT_MAX_STORE_MIB * 2**20 // ROW == 131072
    assert RowStore(ML605_GEOMETRY, max_mib=0.5).capacity_rows == 64
    assert RowStore(ML605_GEOMETRY, max_rows=100, max_mib=0.5).capacity_rows == 64  # the smaller limit holds
    assert RowStore(ML605_GEOMETRY, max_rows=10**9).capacity_rows == 8 * 32768  # never beyond the DIMM
    store = RowStore(ML605_GEOMETRY, directory=str(tmp_path))
    assert not store.in_ram and store.capacity_rows == 8 * 32768
    store.close()
    for bad in ({"max_rows": -1}, {"max_rows": 1.5}, {"max_rows": True}, {"max_mib": float("nan")}, {"max_mib": -2}):
        with pytest.raises(ValueError):
            RowStore(ML605_GEOMETRY, **bad)


def test_write_beyond_the_limit_raises_a_one_line_store_full_error_and_stores_nothing() -> None:
    dimm = EmulatedDimm(seed=4, store=RowStore(ML605_GEOMETRY, max_rows=2))
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 256, ROW, dtype=np.uint8) for _ in range(3)]
    _write_row(dimm, 0, 10, rows[0])
    _write_row(dimm, 5, 20, rows[1])
    before = dimm.peek_row(7, 30)
    with pytest.raises(StoreFullError) as info:
        _write_row(dimm, 7, 30, rows[2])
    message = str(info.value)
    assert "\n" not in message
    assert "row store full: 2 of 2 rows" in message and "bank 7 row 30" in message and "--store DIR" in message
    assert dimm.stored_rows == 2
    assert np.array_equal(dimm.peek_row(7, 30), before)  # still its power-up content
    _write_row(dimm, 0, 10, rows[2])  # a stored row can always be rewritten
    assert _read_row(dimm, 0, 10) == rows[2].tobytes()
    assert _read_row(dimm, 5, 20) == rows[1].tobytes()
    # What a firmware asks before running a program: only new rows need room.
    assert dimm.store_problem([(0, 10), (5, 20), (0, 10)]) is None
    problem = dimm.store_problem([(0, 10), (1, 1), (2, 2)])
    assert problem is not None and "cannot store 2 new rows" in problem


def test_store_limit_over_the_wire_is_an_error_reply_and_the_emulator_keeps_serving() -> None:
    rng = np.random.default_rng(7)
    first = [(0, r) for r in range(16)]
    second = [(3, 1000 + r) for r in range(16)]
    data = {key: rng.integers(0, 256, ROW, dtype=np.uint8).tobytes() for key in first + second}
    with spawn(seed=2, max_stored_rows=24) as emu:
        tester = TesterSession.open(emu.url)
        unwritten = tester.read_rows(second)
        tester.write_rows(first, [data[k] for k in first])
        assert tester.status()["stored_rows"] == 16
        with pytest.raises(RemoteError) as info:
            tester.write_rows(second, [data[k] for k in second])  # one program: 16 new rows, room for 8
        message = info.value.message
        assert "\n" not in message
        assert "row store full: 16 of 24 rows" in message and "cannot store 16 new rows" in message
        assert "--max-stored-rows" in message
        # The refused program changed nothing, and the session goes on without a reset.
        status = tester.status()
        assert status["stored_rows"] == 16 and status["open_rows"] == {}
        assert np.array_equal(tester.read_rows(second), unwritten)
        got = tester.read_rows(first)
        assert all(got[i].tobytes() == data[k] for i, k in enumerate(first))
        tester.write_rows(second[:8], [data[k] for k in second[:8]])  # exactly fills the store
        with pytest.raises(RemoteError, match="row store full: 24 of 24 rows"):
            tester.write_row(*second[8], data[second[8]])
        tester.write_row(*first[0], data[second[0]])  # rewriting a stored row needs no room
        got = tester.read_rows(second[:8] + [first[0]])
        assert all(got[i].tobytes() == data[k] for i, k in enumerate(second[:8]))
        assert got[8].tobytes() == data[second[0]]
        assert tester.status()["stored_rows"] == 24
        tester.close()
        with TesterSession.open(emu.url) as again:  # a new host finds the same DIMM
            assert again.read_row(*first[1]) == data[first[1]]
        assert emu.proc.poll() is None  # still running


# Compact RAM -------------------------------------------------------------------------------


def test_ram_store_costs_the_row_bytes_and_nothing_per_row_beside() -> None:
    dimm = EmulatedDimm(seed=1)
    data = np.arange(ROW, dtype=np.uint32).astype(np.uint8)
    _write_row(dimm, 0, 0, data)  # first chunk and slot table
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(1, 513):
            _write_row(dimm, i % 8, 1000 + 61 * i, data)
        per_row = (tracemalloc.get_traced_memory()[0] - base) / 512
    finally:
        tracemalloc.stop()
    assert dimm.stored_rows == 513
    # The old store kept a NumPy array object, a tuple and a dict entry per row (8 KiB + about 160 bytes).
    assert ROW <= per_row <= ROW + 16, per_row
    assert sorted(dimm.store.keys()) == sorted([(0, 0)] + [(i % 8, 1000 + 61 * i) for i in range(1, 513)])


# File-backed store -------------------------------------------------------------------------


def test_file_store_round_trips_20000_rows_in_little_ram(tmp_path: Path) -> None:
    store = RowStore(ML605_GEOMETRY, directory=str(tmp_path))
    dimm = EmulatedDimm(seed=3, store=store)
    assert os.listdir(tmp_path) == []  # the file is unlinked at once: nothing is ever left behind
    n = 20000
    keys = [(i % 8, (i * 13) % 32768) for i in range(n)]
    assert len(set(keys)) == n
    pattern = np.arange(ROW, dtype=np.uint32).astype(np.uint8)
    rss0 = _rss_anon_kib()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i, key in enumerate(keys[:-2]):
            row = store.allocate(*key)
            row[:] = pattern
            row[:8] = np.frombuffer(i.to_bytes(8, "little"), np.uint8)
        for key in keys[-2:]:  # the last rows through the DIMM's own write path
            _write_row(dimm, *key, np.full(ROW, key[1] & 0xFF, np.uint8))
        traced = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    rss1 = _rss_anon_kib()
    assert dimm.stored_rows == n
    assert store.nbytes >= n * ROW  # 156 MiB of rows in the file ...
    assert traced < 4 * 2**20, traced  # ... but only the slot table and bookkeeping in RAM
    if rss0 is not None and rss1 is not None:
        assert rss1 - rss0 < 48 * 1024, (rss0, rss1)
    for i in (0, 1, 777, n // 2, n - 3):
        want = pattern.copy()
        want[:8] = np.frombuffer(i.to_bytes(8, "little"), np.uint8)
        assert _read_row(dimm, *keys[i]) == want.tobytes()
    assert _read_row(dimm, *keys[-1]) == bytes([keys[-1][1] & 0xFF]) * ROW
    never = (7, 32767)
    assert never not in store
    assert _read_row(dimm, *never) == EmulatedDimm(seed=3).power_up_content(*never).tobytes()
    store.close()


def test_file_store_that_cannot_grow_gives_store_full_not_a_crash(tmp_path: Path, monkeypatch) -> None:
    geometry = Geometry(banks=2, rows=64, columns=64)  # 512-byte rows
    store = RowStore(geometry, directory=str(tmp_path), chunk_rows=8)
    dimm = EmulatedDimm(geometry, store=store)
    data = np.full(geometry.row_bytes, 0x5A, np.uint8)
    for r in range(8):
        _write_row(dimm, 0, r, data)

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    # What the firmware asks before a program runs: the disk is reserved then, so it is refused there ...
    problem = dimm.store_problem([(1, 0), (0, 2)])
    assert problem is not None and "cannot grow its file" in problem and "No space left on device" in problem
    # ... and a write without that check fails cleanly too, before anything is stored.
    with pytest.raises(StoreFullError, match="cannot grow its file .*No space left on device.*bank 1 row 0"):
        _write_row(dimm, 1, 0, data)
    assert dimm.stored_rows == 8
    _write_row(dimm, 0, 3, data ^ 0xFF)  # the rows already stored still work
    assert _read_row(dimm, 0, 3) == (data ^ 0xFF).tobytes()
    store.close()


def test_use_store_moves_rows_already_written(tmp_path: Path) -> None:
    dimm = EmulatedDimm(seed=9)
    a = np.random.default_rng(1).integers(0, 256, ROW, dtype=np.uint8)
    _write_row(dimm, 2, 200, a)
    dimm.use_store(RowStore(ML605_GEOMETRY, directory=str(tmp_path)))
    assert not dimm.store.in_ram and dimm.stored_rows == 1
    assert _read_row(dimm, 2, 200) == a.tobytes()
    with pytest.raises(ValueError, match="geometry"):
        dimm.use_store(RowStore(Geometry(banks=1)))
    with pytest.raises(StoreFullError):
        dimm.use_store(RowStore(ML605_GEOMETRY, max_rows=0))
    assert _read_row(dimm, 2, 200) == a.tobytes()  # a failed move keeps the old store


def test_file_store_over_the_wire(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = [(b, 32767 - b) for b in range(8)]
    data = [rng.integers(0, 256, ROW, dtype=np.uint8).tobytes() for _ in rows]
    with spawn(seed=6, store_dir=str(tmp_path)) as emu, TesterSession.open(emu.url) as tester:
        tester.write_rows(rows, data)
        got = tester.read_rows(rows)
        assert [g.tobytes() for g in got] == data
        assert tester.status()["stored_rows"] == 8
        assert os.listdir(tmp_path) == []


# Command line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--max-stored-rows", "\u0663"], {}, "--max-stored-rows must be a non-negative integer number of rows"),
        (["--store", "/nonexistent/dir"], {}, "--store '/nonexistent/dir' is not a directory"),
        ([], {"EDEN_EMU_MAX_STORE_MIB": "inf"}, "$EDEN_EMU_MAX_STORE_MIB must be a non-negative number of MiB"),
    ],
)
def test_cli_rejects_bad_store_options_in_one_line(args: list[str], env: dict[str, str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "firmware_bridge.emulator", *args],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **env), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_spawn_checks_store_options_before_starting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_stored_rows"):
        spawn(max_stored_rows=-5)
    with pytest.raises(ValueError, match="max_store_mib"):
        spawn(max_store_mib=float("nan"))
    with pytest.raises(ValueError, match="store_dir"):
        spawn(store_dir=str(tmp_path / "missing"))

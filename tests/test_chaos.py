"""Chaos on the wire: a TCP proxy that drops, corrupts and duplicates about 1 % of chunks.

The proxy sits between the host and an emulator process and damages traffic in both
directions. Rows of distinct data must still round-trip exactly, with no error raised,
at the link's default retry count (the reply time-out is shortened so that the lost
chunks cost seconds, not minutes).
"""

from __future__ import annotations

import random
import socket
import threading
from typing import Iterator

import numpy as np
import pytest

from emubench import EmulatorProcess, spawn
from softmc_host.session import TesterSession


class ChaosProxy:
    """Forward TCP traffic to ``upstream``, damaging a fraction of the chunks each way.

    Each chunk (at most ``chunk_bytes``) is independently dropped, corrupted (one byte
    flipped) or sent twice, each with probability ``rate / 3``. The random choices come
    from generators seeded per direction.
    """

    def __init__(self, upstream: tuple[str, int], *, rate: float = 0.01, seed: int = 0, chunk_bytes: int = 4096):
        self.upstream = upstream
        self.rate = rate
        self.seed = seed
        self.chunk_bytes = chunk_bytes
        self.counts = {"chunks": 0, "dropped": 0, "corrupted": 0, "duplicated": 0}
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = "socket://127.0.0.1:%d" % self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connections += 1
            base = self.seed * 1000 + 2 * self._connections
            for src, dst, offset in ((client, server, 0), (server, client, 1)):
                t = threading.Thread(target=self._pump, args=(src, dst, random.Random(base + offset)), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, rng: random.Random) -> None:
        try:
            while True:
                chunk = src.recv(self.chunk_bytes)
                if not chunk:
                    break
                roll = rng.random()
                kind = "chunks"
                if roll < self.rate / 3:
                    kind = "dropped"
                elif roll < 2 * self.rate / 3:
                    kind = "corrupted"
                    damaged = bytearray(chunk)
                    damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
                    dst.sendall(bytes(damaged))
                elif roll < self.rate:
                    kind = "duplicated"
                    dst.sendall(chunk + chunk)
                else:
                    dst.sendall(chunk)
                with self._lock:
                    self.counts["chunks"] += 1
                    if kind != "chunks":
                        self.counts[kind] += 1
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with spawn(seed=21) as emu:
        yield emu


def _upstream(emu: EmulatorProcess) -> tuple[str, int]:
    host, port = emu.url[len("socket://") :].rsplit(":", 1)
    return host, int(port)


@pytest.mark.parametrize("seed", [1, 2])
def test_rows_round_trip_through_a_damaging_proxy(emulator: EmulatorProcess, seed: int) -> None:
    proxy = ChaosProxy(_upstream(emulator), rate=0.01, seed=seed)
    rng = np.random.default_rng(seed)
    n_rows = 160
    rows = [(int(b), int(r)) for b, r in zip(rng.integers(0, 8, n_rows), rng.choice(32768, n_rows, replace=False))]
    data = [rng.integers(0, 256, 8192, dtype=np.uint8).tobytes() for _ in rows]
    try:
        # Default retries (3); a short reply time-out keeps the cost of a lost chunk low.
        with TesterSession.open(proxy.url, timeout_s=0.5) as tester:
            for start in range(0, n_rows, 8):
                tester.write_rows(rows[start : start + 8], data[start : start + 8])
            back = []
            for start in range(0, n_rows, 4):
                back.extend(tester.read_rows(rows[start : start + 4]))
            stats = tester.link.stats
    finally:
        proxy.close()
    wrong = sum(int(np.count_nonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8)))
                for a, b in zip(back, data))
    assert wrong == 0
    assert len(back) == n_rows
    damaged = proxy.counts["dropped"] + proxy.counts["corrupted"] + proxy.counts["duplicated"]
    # The proxy really did damage traffic, and the link really had to recover from it.
    assert proxy.counts["chunks"] > 500
    assert damaged >= 3, proxy.counts
    assert stats.retransmissions + stats.stale_frames + stats.corrupt_frames > 0, (stats, proxy.counts)

"""Throughput of full-row writes and reads through host -> socket -> emulator.

Prints MB/s of row data moved (written + read back) through the tester link to
the emulated tester, and the same number of bytes pushed through a raw loopback
TCP socket to an echo process, measured in the same run, with their ratio: what
the protocol and the emulator cost over the wire itself.

    python benchmarks/link.py [--rows 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emubench import spawn  # noqa: E402
from softmc_host.session import TesterSession  # noqa: E402

_ECHO = r"""
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    data = conn.recv(1 << 20)
    if not data:
        break
    conn.sendall(data)
"""


def raw_socket_seconds(total_bytes: int, chunk: int) -> float:
    """Time to push ``total_bytes`` to an echo process and receive them back, ``chunk`` at a time."""
    proc = subprocess.Popen([sys.executable, "-c", _ECHO], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = bytes(chunk)
        start = time.perf_counter()
        moved = 0
        while moved < total_bytes:
            n = min(chunk, total_bytes - moved)
            sock.sendall(payload[:n])
            got = 0
            while got < n:
                got += len(sock.recv(n - got))
            moved += n
        elapsed = time.perf_counter() - start
        sock.close()
        return elapsed
    finally:
        proc.wait(10)


def link_seconds(url: str, rows: list[tuple[int, int]], data: np.ndarray) -> tuple[float, float]:
    """Seconds to write and to read back ``rows`` through the tester link."""
    with TesterSession.open(url) as tester:
        start = time.perf_counter()
        tester.write_rows(rows, list(data))
        mid = time.perf_counter()
        back = tester.read_rows(rows)
        end = time.perf_counter()
    if not np.array_equal(back, data):
        raise SystemExit("read-back mismatch: the benchmark result would be meaningless")
    return mid - start, end - mid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="rows written and read per repeat (8 KiB each)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the best is reported")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = [(r % 8, r // 8) for r in range(args.rows)]
    data = rng.integers(0, 256, (len(rows), 8192), dtype=np.uint8)
    row_bytes = data.size
    with spawn(seed=0) as emu:
        write_s, read_s = min((link_seconds(emu.url, rows, data) for _ in range(args.repeat)), key=sum)
    # One program's worth of rows per exchange, as the link moves them.
    raw_s = min(raw_socket_seconds(2 * row_bytes, 31 * 8192) for _ in range(args.repeat))
    link_s = write_s + read_s
    mb = 2 * row_bytes / 1e6
    print(f"rows: {len(rows)} x 8 KiB, random data (write-data extension on every burst)")
    print(f"link write : {row_bytes / 1e6 / write_s:8.2f} MB/s")
    print(f"link read  : {row_bytes / 1e6 / read_s:8.2f} MB/s")
    print(f"link total : {mb / link_s:8.2f} MB/s  ({link_s:.3f} s)")
    print(f"raw socket : {mb / raw_s:8.2f} MB/s  ({raw_s:.3f} s, echo of the same bytes)")
    print(f"ratio link/raw time: {link_s / raw_s:.1f}x")


if __name__ == "__main__":
    main()

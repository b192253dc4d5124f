"""Throughput of full-row writes and reads through host -> socket -> emulator.

Prints MB/s of row data moved through the tester link to the emulated bench (a
separate process, as ``emu://`` starts it), measured in one run:

* **nominal**: the rows written and read back at the profile's nominal VDD (every byte
  must read back exactly), total MB/s of write + read;
* **failing setting**: the same rows read back at a low VDD set through the bench's
  supply (``--fail-vdd``, default 1.025 V on the default vendor profile B, where the
  DIMM returns bit errors), MB/s of the reads and the bit error rate seen;
* **raw socket**: the same number of bytes as the nominal write + read pushed through a
  loopback TCP socket to an echo process, and the ratio of the link's time to it: what
  the protocol, the host driver and the emulator cost over the wire itself;
* **fake RIFFA** (the stock SoftMC transport, ``riffa://``): the host-side cost per row of
  writing and reading rows through :class:`firmware_bridge.riffa.RiffaLink` and ctypes to a
  *sink* board of the fake libriffa (no DIMM behind it: every READ answers zeros at once), the
  time spent inside the fake's functions (timed during the same reads) taken off; beside it, the
  time the same programs keep the DRAM command bus busy on the board (their cycles at the tester
  clock). ``--riffa-url riffa://0/0`` also times rows on a real board.

Each figure is the best of ``--repeat`` repeats.  ``--tree DIR`` measures the code in
another checkout (for example a worktree of the code before a change) with this same
script, so that before and after are measured alike::

    python benchmarks/link.py [--rows 256] [--repeat 3] [--fail-vdd 1.025] [--tree DIR]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

import numpy as np

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
        assert proc.stdout is not None
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="rows written and read per repeat (8 KiB each)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the best is reported")
    parser.add_argument("--bench", default="emu://B?seed=0", help="emulated bench address (default %(default)s)")
    parser.add_argument("--fail-vdd", type=float, default=1.025,
                        help="VDD in V of the failing-setting reads (default %(default)s)")
    parser.add_argument("--tree", default=None, help="measure the code of this checkout instead of this one")
    parser.add_argument("--riffa-url", default=None,
                        help="also time row writes and reads on this real stock SoftMC board (e.g. riffa://0/0; "
                             "it overwrites rows of banks 0..7 from row 0)")
    args = parser.parse_args()
    root = os.path.abspath(args.tree) if args.tree else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(root, "softmc_host")):
        parser.error(f"--tree {args.tree}: not a checkout of this toolkit (no softmc_host/ in it)")
    sys.path.insert(0, root)
    # The emulated bench runs as ``python -m emubench``, which imports from the working directory first.
    os.chdir(root)
    from softmc_host.bench import Bench

    rng = np.random.default_rng(0)
    rows = [(r % 8, r // 8) for r in range(args.rows)]
    data = rng.integers(0, 256, (len(rows), 8192), dtype=np.uint8)
    row_bytes = data.size
    nominal: list[tuple[float, float]] = []
    failing: list[float] = []
    errors_bits = 0
    with Bench.open(args.bench) as bench:
        tester = bench.tester
        nominal_v = bench.nominal_vdd_v
        for _ in range(args.repeat):
            start = time.perf_counter()
            tester.write_rows(rows, list(data))
            mid = time.perf_counter()
            back = tester.read_rows(rows)
            nominal.append((mid - start, time.perf_counter() - mid))
            if not np.array_equal(back, data):
                raise SystemExit("read-back mismatch at nominal VDD: the benchmark result would be meaningless")
        bench.set_vdd(args.fail_vdd)
        for _ in range(args.repeat):
            start = time.perf_counter()
            back = tester.read_rows(rows)
            failing.append(time.perf_counter() - start)
            errors_bits = int(np.unpackbits(back ^ data).sum())
        bench.set_vdd(nominal_v)
    write_s, read_s = min(nominal, key=sum)
    fail_s = min(failing)
    # One program's worth of rows per exchange, as the link moves them.
    raw_s = min(raw_socket_seconds(2 * row_bytes, 31 * 8192) for _ in range(args.repeat))
    link_s = write_s + read_s
    mb = 2 * row_bytes / 1e6
    print(f"code: {root}")
    print(f"rows: {len(rows)} x 8 KiB, random data (write-data extension on every burst), bench {args.bench}")
    print(f"link write : {row_bytes / 1e6 / write_s:8.2f} MB/s  (nominal VDD {nominal_v} V)")
    print(f"link read  : {row_bytes / 1e6 / read_s:8.2f} MB/s")
    print(f"link total : {mb / link_s:8.2f} MB/s  ({link_s:.3f} s)")
    print(f"failing    : {row_bytes / 1e6 / fail_s:8.2f} MB/s  read at VDD {args.fail_vdd} V through the bench supply "
          f"(BER {errors_bits / (8 * row_bytes):.2e}, {errors_bits} bits)")
    print(f"raw socket : {mb / raw_s:8.2f} MB/s  ({raw_s:.3f} s, echo of the same bytes)")
    print(f"ratio link/raw time: {link_s / raw_s:.1f}x")
    try:
        import firmware_bridge.riffa  # noqa: F401 - absent in a checkout from before the transport
    except ImportError:
        print("fake RIFFA : not in this checkout")
        return
    riffa_host_cost(len(rows), args.repeat)
    if args.riffa_url:
        riffa_board(args.riffa_url, len(rows), args.repeat)


def riffa_board(url: str, n_rows: int, repeat: int) -> None:
    """Print MB/s of row writes and reads on a real board: the host, libriffa and the board together."""
    from softmc_host.session import TesterSession

    with TesterSession.open(url) as tester:
        rows = [(r % tester.banks, r // tester.banks) for r in range(n_rows)]
        best_w = best_r = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            tester.write_rows(rows, 0xAA)
            mid = time.perf_counter()
            back = tester.read_rows(rows)
            best_w, best_r = min(best_w, mid - start), min(best_r, time.perf_counter() - mid)
        errors = int(np.unpackbits(back ^ np.uint8(0xAA)).sum())
        row_bytes = tester.row_bytes
    per_row = 1e6 / n_rows
    print(f"board      : {url}: write {best_w * per_row:.1f} us/row, read {best_r * per_row:.1f} us/row "
          f"({row_bytes * n_rows / best_r / 1e6:.2f} MB/s), {errors} bit errors at nominal")


def _cycles(program) -> int:
    """DRAM clock cycles a program keeps the tester busy: each WAIT its count, END and WBUF none, the rest one."""
    from softmc_host import isa

    decoded = isa.decode_words(program.word_array())
    wait = decoded.kind == isa.Kind.WAIT
    free = (decoded.kind == isa.Kind.END) | (decoded.kind == isa.Kind.WBUF)
    return int(decoded.field[wait].sum()) + int(np.count_nonzero(~wait & ~free))


def riffa_host_cost(n_rows: int, repeat: int) -> None:
    """Print the host-side cost per row of the RIFFA transport, against a sink board of the fake libriffa."""
    import emubench.plugin  # noqa: F401 - registers lib=emu in this process
    from emubench import fake_riffa
    from softmc_host.program import build_row_reads, build_row_writes
    from softmc_host.session import TesterSession

    board, url = fake_riffa.attach_sink()
    fake = fake_riffa.library()
    try:
        with TesterSession.open(url) as tester:
            rows = [(r % tester.banks, r // tester.banks) for r in range(n_rows)]
            row_bytes = tester.row_bytes
            bursts = np.random.default_rng(1).integers(0, 256, (n_rows, tester.bursts_per_row), dtype=np.uint8)
            data = np.repeat(bursts, 64, axis=1)  # one byte per burst: what a stock WR writes
            runs = []  # (write s, read s, the fake's share of the read s) of each repeat
            for _ in range(repeat):
                start = time.perf_counter()
                tester.write_rows(rows, data)
                mid = time.perf_counter()
                busy = fake.busy_s
                tester.read_rows(rows)
                runs.append((mid - start, time.perf_counter() - mid, fake.busy_s - busy))
            cycles = tester.timing_cycles
            write_cycles = sum(_cycles(p) for p in build_row_writes(rows, data, cycles, tester.params))
            read_cycles = sum(_cycles(p) for p in build_row_reads(rows, cycles, tester.params,
                                                                   range(tester.bursts_per_row), False))
            tck_ns, per_row_bursts = tester.tck_ns, tester.bursts_per_row
    finally:
        fake_riffa.detach(board)
    per_row = 1e6 / n_rows
    w = min(r[0] for r in runs) * per_row
    read, fake_share = min((r[1], r[2]) for r in runs)
    r, f = read * per_row, fake_share * per_row
    host = r - f
    w_dram, r_dram = write_cycles * tck_ns / 1e3 / n_rows, read_cycles * tck_ns / 1e3 / n_rows
    print(f"fake RIFFA : {n_rows} rows to a sink board, one byte per burst; a row read is "
          f"{per_row_bursts} receive transactions of 16 words")
    print(f"  write    : {w:8.1f} us/row host side  ({row_bytes / w:7.1f} MB/s); the board's command bus "
          f"{w_dram:.2f} us/row at tCK {tck_ns:g} ns")
    print(f"  read     : {r:8.1f} us/row through the fake, of which inside the fake's functions {f:.1f} us/row")
    print(f"  host read: {host:8.1f} us/row ({row_bytes / max(host, 1e-9):7.1f} MB/s, "
          f"{host / per_row_bursts:.2f} us per transaction), an upper bound: it includes the fake's C-to-Python "
          f"transitions; the board's command bus {r_dram:.2f} us/row")


if __name__ == "__main__":
    main()

"""RAM per stored row and write/read speed of the emulated DIMM's row store, old scheme vs new.

Writes ``--rows`` whole rows (distinct data, through the write-data extension) into an
emulated DIMM with error physics (profile B, nominal conditions) by running SoftMC
programs on the emulated firmware in process, reads them back, and reports for each
store:

- ``dict``: the scheme before issue #12 (a dict of one NumPy array per row), rebuilt here
  as the baseline;
- ``ram``: the new packed in-RAM :class:`~emubench.dimm.RowStore`;
- ``file``: the new file-backed store (``--store DIR``), in a temporary directory.

Speed is timed in this process, the three stores taking turns in every round (best
round kept), so that load from other programs hits all of them alike.  Memory is
measured in a child process per store (so that resident memory is its own), once
untraced for resident memory and once under ``tracemalloc`` for the bytes allocated
per stored row.  Ratios are new / old in the same run.

    python benchmarks/dimm_memory.py [--rows 4096] [--store-dir /var/tmp]
    python benchmarks/dimm_memory.py --full-dimm --store-dir /var/tmp   # all 262144 rows (2 GiB) to disk

``--full-dimm`` writes every row of the 2 GiB DIMM through the file-backed store and
checks a sample read back; it prints the time and the process's anonymous resident
memory, which stays far below the DIMM's size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emubench.dimm import EmulatedDimm, RowStore  # noqa: E402
from emubench.firmware import TesterFirmware  # noqa: E402
from emubench.physics import PhysicsDimm  # noqa: E402
from emubench.profiles import get_profile  # noqa: E402
from softmc_host.program import append_row_read, append_row_write, pack_rows  # noqa: E402
from softmc_host.timing import NOMINAL_TIMING, Ddr3Params  # noqa: E402

TCK_NS = 2.5
DISTINCT = 16  # distinct row contents, used in turn (keeps the prebuilt programs small)
KINDS = ("dict", "ram", "file")


def _rss_kib(field: str = "RssAnon") -> int:
    """A field of /proc/self/status in KiB (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _legacy(dimm: EmulatedDimm) -> None:
    """Give ``dimm`` the storage of the code before issue #12: a dict of one array per row."""
    rows: dict[tuple[int, int], np.ndarray] = {}
    dimm._rows = rows  # type: ignore[assignment]

    def write_burst(access, column, burst, trcd_cycles):  # type: ignore[no-untyped-def]
        key = (access.bank, access.row)
        if key not in rows:
            rows[key] = access.data
        access.data[dimm._write_index[column]] = np.frombuffer(burst, dtype=np.uint8)

    dimm.write_burst = write_burst  # type: ignore[method-assign]


def _programs(rows: list[tuple[int, int]], contents: list[bytes], write: bool) -> list[tuple[list[int], list[bytes]]]:
    timing = NOMINAL_TIMING.cycles(TCK_NS)
    params = Ddr3Params()
    index = {key: i for i, key in enumerate(rows)}

    def add_write(program, bank, row):  # type: ignore[no-untyped-def]
        return append_row_write(program, bank, row, contents[index[(bank, row)] % DISTINCT], timing, params)

    def add_read(program, bank, row):  # type: ignore[no-untyped-def]
        return append_row_read(program, bank, row, timing, params)

    out = []
    for program in pack_rows(rows, add_write if write else add_read):
        out.append((list(program.words), list(program.blocks)))
    return out


def _dimm(kind: str, store_dir: str | None) -> EmulatedDimm:
    dimm = PhysicsDimm(get_profile("B"), seed=0, tck_ns=TCK_NS)
    if kind == "dict":
        _legacy(dimm)
    elif kind == "ram":
        dimm.use_store(RowStore(dimm.geometry, max_rows=dimm.geometry.banks * dimm.geometry.rows))
    elif kind == "file":
        dimm.use_store(RowStore(dimm.geometry, directory=store_dir))
    return dimm


def _workload(n_rows: int) -> tuple[list, list, list, np.ndarray]:
    """Write programs (first half, second half), read programs, and the data expected back."""
    rng = np.random.default_rng(12)
    contents = [rng.integers(0, 256, 8192, dtype=np.uint8).tobytes() for _ in range(DISTINCT)]
    banks, rows_per_bank = 8, 32768
    rows = [(i % banks, (i // banks) * 7 % rows_per_bank) for i in range(n_rows)]
    half = n_rows // 2
    writes = [_programs(rows[:half], contents, True), _programs(rows[half:], contents, True)]
    reads = _programs(rows, contents, False)
    want = np.frombuffer(b"".join(contents[i % DISTINCT] for i in range(n_rows)), np.uint8).reshape(n_rows, -1)
    return writes[0], writes[1], reads, want


def timing(n_rows: int, store_dir: str, repeat: int) -> dict[str, dict[str, float]]:
    """Best write and read times of each store, the stores taking turns in every round (fair under load)."""
    first, second, reads, want = _workload(n_rows)
    result = {kind: {"write_s": float("inf"), "read_s": float("inf"), "wrong_bytes": 0} for kind in KINDS}
    for _ in range(repeat):
        for kind in KINDS:
            dimm = _dimm(kind, store_dir)
            fw = TesterFirmware(dimm, tck_ns=TCK_NS)
            start = time.perf_counter()
            for words, blocks in first + second:
                fw.run(words, blocks)
            r = result[kind]
            r["write_s"] = min(r["write_s"], time.perf_counter() - start)
            start = time.perf_counter()
            data = b"".join(fw.run(words, blocks) for words, blocks in reads)
            r["read_s"] = min(r["read_s"], time.perf_counter() - start)
            r["wrong_bytes"] += int((np.frombuffer(data, np.uint8).reshape(n_rows, -1) != want).sum())
            assert dimm.stored_rows == n_rows
            if kind != "dict":
                dimm.store.close()  # a file store gives its file back now, not at garbage collection
            del dimm, fw, data
    return result


def child(kind: str, n_rows: int, store_dir: str | None) -> dict[str, float]:
    """Memory of one store, in a process of its own: what the second half of the rows adds
    once the first half is stored (so fixed costs, such as the store's slot table and the
    firmware's bounded decode cache, are left out)."""
    first, second, _, _ = _workload(n_rows)
    half = n_rows // 2
    result: dict[str, float] = {}
    dimm = _dimm(kind, store_dir)
    fw = TesterFirmware(dimm, tck_ns=TCK_NS)
    for words, blocks in first:
        fw.run(words, blocks)
    rss = _rss_kib()
    for words, blocks in second:
        fw.run(words, blocks)
    result["rss_anon_kib_per_row"] = (_rss_kib() - rss) / (n_rows - half)
    del dimm, fw
    # Bytes allocated per stored row (NumPy reports its buffers to tracemalloc).
    dimm = _dimm(kind, store_dir)
    fw = TesterFirmware(dimm, tck_ns=TCK_NS)
    tracemalloc.start()
    for words, blocks in first:
        fw.run(words, blocks)
    base = tracemalloc.get_traced_memory()[0]
    for words, blocks in second:
        fw.run(words, blocks)
    result["traced_bytes_per_row"] = (tracemalloc.get_traced_memory()[0] - base) / (n_rows - half)
    tracemalloc.stop()
    return result


def full_dimm(store_dir: str) -> None:
    """Write the whole DIMM through a file-backed store; print time and resident memory."""
    dimm = PhysicsDimm(get_profile("B"), seed=0, tck_ns=TCK_NS)
    dimm.use_store(RowStore(dimm.geometry, directory=store_dir))
    fw = TesterFirmware(dimm, tck_ns=TCK_NS)
    g = dimm.geometry
    rng = np.random.default_rng(3)
    contents = [rng.integers(0, 256, g.row_bytes, dtype=np.uint8).tobytes() for _ in range(DISTINCT)]
    rss0 = _rss_kib()
    start = time.perf_counter()
    batch = 512
    total = g.banks * g.rows
    for first in range(0, total, batch):
        rows = [(i // g.rows, i % g.rows) for i in range(first, min(total, first + batch))]
        for words, blocks in _programs(rows, [contents[(i + first) % DISTINCT] for i in range(DISTINCT)], True):
            fw.run(words, blocks)
        if first % (total // 16) == 0:
            print(f"  {first:6d} rows, {time.perf_counter() - start:6.1f} s, RssAnon {_rss_kib() / 1024:.0f} MiB", flush=True)
    write_s = time.perf_counter() - start
    sample = [(b, r) for b in range(g.banks) for r in (0, 1, g.rows // 2, g.rows - 1)]
    data = b"".join(fw.run(w, bl) for w, bl in _programs(sample, contents, False))
    got = np.frombuffer(data, np.uint8).reshape(len(sample), -1)
    wrong = sum(int((got[k] != np.frombuffer(contents[(b * g.rows + r) % DISTINCT], np.uint8)).sum())
                for k, (b, r) in enumerate(sample))
    print(f"full DIMM: {dimm.stored_rows} rows ({dimm.stored_rows * g.row_bytes / 2**30:.2f} GiB) in {write_s:.1f} s "
          f"({dimm.stored_rows * g.row_bytes / 2**20 / write_s:.1f} MiB/s); store file {dimm.store.nbytes / 2**30:.2f} GiB; "
          f"RssAnon grew {(_rss_kib() - rss0) / 1024:.0f} MiB; sample of {len(sample)} rows read back, {wrong} wrong bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096, help="rows written per store (default 4096 = 32 MiB)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds, best kept (default 3)")
    parser.add_argument("--store-dir", help="directory for the file-backed store (default: a temporary one)")
    parser.add_argument("--full-dimm", action="store_true", help="write all 262144 rows through the file-backed store")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.store_dir)))
        return
    with tempfile.TemporaryDirectory(dir=args.store_dir) as tmp:
        if args.full_dimm:
            full_dimm(tmp)
            return
        results = timing(args.rows, tmp, args.repeat)
        for kind in KINDS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", kind, "--rows", str(args.rows), "--store-dir", tmp],
                check=True, capture_output=True, text=True,
            ).stdout
            results[kind].update(json.loads(out.strip().splitlines()[-1]))
    mib = args.rows * 8192 / 2**20
    print(f"{args.rows} rows ({mib:.0f} MiB) written and read back through the emulated firmware (profile B, nominal),")
    print(f"best of {args.repeat} rounds; memory per row is what the second half of the rows added (a file store's")
    print("rows sit in the kernel's page cache, reclaimable, not in the process's anonymous memory)")
    print(f"{'store':6} {'write MiB/s':>12} {'read MiB/s':>11} {'traced B/row':>13} {'RssAnon KiB/row':>16} {'wrong':>6}")
    for kind, r in results.items():
        print(f"{kind:6} {mib / r['write_s']:12.1f} {mib / r['read_s']:11.1f} {r['traced_bytes_per_row']:13.0f} "
              f"{r['rss_anon_kib_per_row']:16.2f} {r['wrong_bytes']:6d}")
    old = results["dict"]
    for kind in ("ram", "file"):
        r = results[kind]
        print(f"{kind} vs dict: write speed x{old['write_s'] / r['write_s']:.2f}, read speed x{old['read_s'] / r['read_s']:.2f}, "
              f"traced bytes per row x{r['traced_bytes_per_row'] / old['traced_bytes_per_row']:.3f}")


if __name__ == "__main__":
    main()

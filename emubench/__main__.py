"""Command line of the emulated tester: ``python -m emubench`` (or, the same, ``python -m firmware_bridge.emulator``).

Examples::

    python -m emubench --listen socket://127.0.0.1:5555
    python -m emubench --listen pty      # prints the device path to open
    python -m emubench --bench "emu://C?seed=3&temp_c=45"
    python -m emubench --store /var/tmp   # written rows on disk: a whole DIMM in little RAM

It prints where its instruments listen (``supply VISA-RESOURCE``, ``thermal
VISA-RESOURCE``) and then where the tester listens (``listening on URL``).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import tty
from typing import Sequence

from emubench.bench import BenchSpec, BenchSpecError, EmulatedBench, known_profiles, parse_emu_url
from emubench.dimm import DEFAULT_MAX_STORE_MIB, Geometry, RowStore
from emubench.instruments import ScpiServer
from emubench.server import (
    DEFAULT_IDLE_TIMEOUT_S,
    FirmwareServer,
    bind_listener,
    serve_pty,
    serve_socket,
)
from firmware_bridge.framing import FRAME_TIMEOUT_S


def _parse_listen(text: str) -> tuple[str, int] | None:
    """Return (host, port) for ``socket://HOST:PORT``, None for ``pty``; raise ValueError otherwise."""
    if text == "pty":
        return None
    if not text.startswith("socket://"):
        raise ValueError(f"--listen must be socket://HOST:PORT or pty, got {text!r}")
    host, sep, port = text[len("socket://") :].rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected socket://HOST:PORT with a port 0..65535")
    return host, int(port)


STORE_ENV = "EDEN_EMU_STORE"
MAX_STORE_MIB_ENV = "EDEN_EMU_MAX_STORE_MIB"
MAX_STORED_ROWS_ENV = "EDEN_EMU_MAX_STORED_ROWS"


def _parse_rows(text: str, name: str) -> int:
    """A row count in ASCII digits; raise ValueError naming ``name`` otherwise."""
    if not re.fullmatch(r"[0-9]{1,15}", text.strip()):
        raise ValueError(f"{name} must be a non-negative integer number of rows, got {text!r}")
    return int(text)


def _parse_mib(text: str, name: str) -> float:
    """A size in MiB in ASCII decimal notation; raise ValueError naming ``name`` otherwise."""
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,12}(\.[0-9]{0,12})?|\.[0-9]{1,12}", text):
        raise ValueError(f"{name} must be a non-negative number of MiB, got {text!r}")
    return float(text)  # at most 12 digits each side of the point: finite


def _store_option(value: str | None, env: str, flag: str) -> tuple[str | None, str]:
    """The option's text from the command line, else from the environment variable; and its name."""
    if value is not None:
        return value, flag
    from_env = os.environ.get(env)
    return (from_env, f"${env}") if from_env not in (None, "") else (None, flag)


def build_store(args: argparse.Namespace, geometry: Geometry) -> RowStore:
    """The row store asked for by ``--store``/``--max-stored-rows``/``--max-store-mib`` (or their variables).

    Raises
    ------
    ValueError
        With a one-line reason, for a bad value or a directory where the store file cannot be made.
    """
    directory, dir_name = _store_option(args.store, STORE_ENV, "--store")
    rows_text, rows_name = _store_option(args.max_stored_rows, MAX_STORED_ROWS_ENV, "--max-stored-rows")
    mib_text, mib_name = _store_option(args.max_store_mib, MAX_STORE_MIB_ENV, "--max-store-mib")
    max_rows = _parse_rows(rows_text, rows_name) if rows_text is not None else None
    max_mib = _parse_mib(mib_text, mib_name) if mib_text is not None else None
    if directory is not None:
        try:
            is_dir = os.path.isdir(directory)
        except (OSError, ValueError):  # a path the OS cannot even look up (a NUL byte)
            is_dir = False
        if not is_dir:
            raise ValueError(f"{dir_name} {directory!r} is not a directory")
    try:
        return RowStore(geometry, max_rows=max_rows, max_mib=max_mib, directory=directory)
    except OSError as exc:
        raise ValueError(f"{dir_name} {directory!r}: cannot create the row store file there ({exc.strerror or exc})") from None


def _exit_on_stdin_eof() -> None:
    """Exit when standard input closes: the process that started us is gone."""

    def watch() -> None:
        while sys.stdin.buffer.read(1):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: Sequence[str] | None = None, prog: str = "python -m emubench") -> int:
    """Run the emulator; return the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Emulated SoftMC tester firmware with an emulated DDR3 DIMM, served over the tester link.",
    )
    parser.add_argument(
        "--listen",
        default="socket://127.0.0.1:0",
        help="socket://HOST:PORT (port 0 picks a free one) or pty (default: %(default)s)",
    )
    parser.add_argument(
        "--bench",
        help="emu://PROFILE?seed=N&temp_c=T&tck_ns=X (overrides --profile, --seed, --temp-c, --tck-ns)",
    )
    parser.add_argument("--profile", default="B", help=f"DIMM vendor profile: {known_profiles()} (default: B)")
    parser.add_argument("--seed", type=int, default=0, help="DIMM identity: weak cells, power-up content (default: 0)")
    parser.add_argument("--temp-c", type=float, help="starting DIMM temperature in C (default: the profile's, 20)")
    parser.add_argument("--tck-ns", type=float, help="DRAM clock period in ns (default: the profile's: 2.5 for A, B, C; 0.25 for eden)")
    parser.add_argument("--thermal-tau-s", type=float, default=0.2, help="heater time constant in s (default: 0.2)")
    parser.add_argument(
        "--store",
        metavar="DIR",
        help=f"keep written rows in a temporary file in DIR (memory-mapped, unlinked at once) instead of RAM; "
        f"default ${STORE_ENV} or RAM",
    )
    parser.add_argument(
        "--max-stored-rows",
        metavar="N",
        help=f"most rows the DIMM stores (8 KiB each); a write beyond it is refused with an ERROR reply "
        f"(default ${MAX_STORED_ROWS_ENV}, else the --max-store-mib limit)",
    )
    parser.add_argument(
        "--max-store-mib",
        metavar="MIB",
        help=f"most MiB of written rows stored (default ${MAX_STORE_MIB_ENV}, else {DEFAULT_MAX_STORE_MIB} "
        f"in RAM, the whole DIMM with --store)",
    )
    parser.add_argument("--frame-timeout-s", type=float, default=FRAME_TIMEOUT_S,
                        help="drop a partly received frame after this long without a byte, in s "
                             "(docs/wire-protocol.md 5.1; default: %(default)s)")
    parser.add_argument("--idle-timeout-s", type=float, default=DEFAULT_IDLE_TIMEOUT_S,
                        help="disconnect a TCP host that sends nothing for this long, in s; 0: never "
                             "(default: %(default)s)")
    parser.add_argument("--once", action="store_true", help="exit after the first connection closes")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when standard input closes")
    parser.add_argument("--verbose", action="store_true", help="log each request on standard error")
    args = parser.parse_args(argv)
    try:
        where = _parse_listen(args.listen)
        if args.bench is not None:
            spec = parse_emu_url(args.bench)
            if spec.link != "serial":
                raise BenchSpecError(
                    f"--bench {args.bench}: link={spec.link} is reached with TesterSession.open or Bench.open "
                    "(the fake libriffa lives in the host process); this command serves the serial link"
                )
        else:
            if args.seed < 0:
                raise BenchSpecError(f"--seed must be non-negative, got {args.seed}")
            spec = BenchSpec(args.profile, args.seed, args.temp_c, args.tck_ns)
            spec = parse_emu_url(spec.url())  # one place checks every value
        if not 0.01 <= args.thermal_tau_s <= 600:
            raise ValueError(f"--thermal-tau-s {args.thermal_tau_s} outside 0.01..600 s")
        bench = EmulatedBench(spec, thermal_tau_s=args.thermal_tau_s)
        bench.dimm.use_store(build_store(args, bench.dimm.geometry))
    except ValueError as exc:
        parser.error(str(exc))
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else None
    if log is not None:
        log(f"row store: {bench.dimm.store.describe()}")
    if not 0 < args.frame_timeout_s <= 60:
        parser.error(f"--frame-timeout-s {args.frame_timeout_s} outside (0, 60] s")
    if not 0 <= args.idle_timeout_s <= 1e6:
        parser.error(f"--idle-timeout-s {args.idle_timeout_s} outside 0..1e6 s")
    server = FirmwareServer(bench.firmware, log=log, frame_timeout_s=args.frame_timeout_s)
    instruments = [ScpiServer(bench.supply), ScpiServer(bench.thermal)]
    for name, instrument in zip(("supply", "thermal"), instruments):
        print(f"{name} TCPIP::127.0.0.1::{instrument.start()}::SOCKET", flush=True)
    print(f"bench {spec.url()}", flush=True)
    if args.exit_on_stdin_eof:
        _exit_on_stdin_eof()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # started by a host program: it decides when we stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if where is None:
            master, slave = os.openpty()
            tty.setraw(slave)
            print(f"listening on {os.ttyname(slave)}", flush=True)
            serve_pty(server, master)
        else:
            try:
                listener = bind_listener(*where)
            except OSError as exc:
                print(f"error: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
                return 2
            host, port = listener.getsockname()[:2]
            print(f"listening on socket://{host}:{port}", flush=True)
            serve_socket(server, listener, once=args.once, idle_timeout_s=args.idle_timeout_s or None)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

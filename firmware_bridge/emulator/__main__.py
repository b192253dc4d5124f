"""Command line of the emulated tester: ``python -m firmware_bridge.emulator``.

Examples::

    python -m firmware_bridge.emulator --listen socket://127.0.0.1:5555
    python -m firmware_bridge.emulator --listen pty      # prints the device path to open
    python -m firmware_bridge.emulator --bench "emu://C?seed=3&temp_c=45"

It prints where its instruments listen (``supply VISA-RESOURCE``, ``thermal
VISA-RESOURCE``) and then where the tester listens (``listening on URL``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import tty
from typing import Sequence

from firmware_bridge.emulator.bench import BenchSpec, BenchSpecError, EmulatedBench, known_profiles, parse_emu_url
from firmware_bridge.emulator.instruments import ScpiServer
from firmware_bridge.emulator.server import FirmwareServer, bind_listener, serve_pty, serve_socket


def _parse_listen(text: str) -> tuple[str, int] | None:
    """Return (host, port) for ``socket://HOST:PORT``, None for ``pty``; raise ValueError otherwise."""
    if text == "pty":
        return None
    if not text.startswith("socket://"):
        raise ValueError(f"--listen must be socket://HOST:PORT or pty, got {text!r}")
    host, sep, port = text[len("socket://") :].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected socket://HOST:PORT with a port 0..65535")
    return host, int(port)


def _exit_on_stdin_eof() -> None:
    """Exit when standard input closes: the process that started us is gone."""

    def watch() -> None:
        while sys.stdin.buffer.read(1):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m firmware_bridge.emulator",
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
    parser.add_argument("--once", action="store_true", help="exit after the first connection closes")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when standard input closes")
    parser.add_argument("--verbose", action="store_true", help="log each request on standard error")
    args = parser.parse_args(argv)
    try:
        where = _parse_listen(args.listen)
        if args.bench is not None:
            spec = parse_emu_url(args.bench)
        else:
            if args.seed < 0:
                raise BenchSpecError(f"--seed must be non-negative, got {args.seed}")
            spec = BenchSpec(args.profile, args.seed, args.temp_c, args.tck_ns)
            spec = parse_emu_url(spec.url())  # one place checks every value
        if not 0.01 <= args.thermal_tau_s <= 600:
            raise ValueError(f"--thermal-tau-s {args.thermal_tau_s} outside 0.01..600 s")
        bench = EmulatedBench(spec, thermal_tau_s=args.thermal_tau_s)
    except ValueError as exc:
        parser.error(str(exc))
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else None
    server = FirmwareServer(bench.firmware, log=log)
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
            serve_socket(server, listener, once=args.once)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

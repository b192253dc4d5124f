"""Command line of the emulated tester: ``python -m firmware_bridge.emulator``.

Examples::

    python -m firmware_bridge.emulator --listen socket://127.0.0.1:5555
    python -m firmware_bridge.emulator --listen pty      # prints the device path to open

The first line on standard output says where it listens (``listening on URL``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import tty
from typing import Sequence

from firmware_bridge.emulator import build_firmware
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
    parser.add_argument("--seed", type=int, default=0, help="DIMM identity: power-up content (default: 0)")
    parser.add_argument("--tck-ns", type=float, default=2.5, help="DRAM clock period in ns (default: 2.5, DDR3-800)")
    parser.add_argument("--once", action="store_true", help="exit after the first connection closes")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when standard input closes")
    parser.add_argument("--verbose", action="store_true", help="log each request on standard error")
    args = parser.parse_args(argv)
    try:
        where = _parse_listen(args.listen)
        if not 0.5 <= args.tck_ns <= 100:
            raise ValueError(f"--tck-ns {args.tck_ns} outside 0.5..100 ns")
    except ValueError as exc:
        parser.error(str(exc))
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else None
    server = FirmwareServer(build_firmware(seed=args.seed, tck_ns=args.tck_ns), log=log)
    if args.exit_on_stdin_eof:
        _exit_on_stdin_eof()
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

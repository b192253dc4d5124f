"""The emulated bench: SoftMC tester firmware over an emulated DDR3 DIMM.

Run it as a separate process (``python -m firmware_bridge.emulator``) and talk to
it through the real link, or start one from Python with :func:`spawn`::

    with spawn(seed=3) as emu:
        with TesterSession.open(emu.url) as tester:
            ...
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Sequence

from firmware_bridge.emulator.dimm import ML605_GEOMETRY, EmulatedDimm, Geometry
from firmware_bridge.emulator.firmware import TesterFirmware

__all__ = ["build_firmware", "spawn", "EmulatorProcess", "EmulatorError"]


class EmulatorError(RuntimeError):
    """The emulator process could not be started."""


def build_firmware(seed: int = 0, tck_ns: float = 2.5, geometry: Geometry = ML605_GEOMETRY) -> TesterFirmware:
    """Create the emulated firmware with a fresh DIMM."""
    return TesterFirmware(EmulatedDimm(geometry, seed=seed), tck_ns=tck_ns)


class EmulatorProcess:
    """A running emulator process; :attr:`url` is what to open the tester link with."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc = proc
        self.url = url

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the process (closing its standard input ends it; then SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> "EmulatorProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def spawn(seed: int = 0, tck_ns: float = 2.5, extra_args: Sequence[str] = (), timeout_s: float = 30.0) -> EmulatorProcess:
    """Start ``python -m firmware_bridge.emulator`` on a free loopback port.

    The process exits when the returned object is closed or when this process
    dies (it watches its standard input).

    Raises
    ------
    EmulatorError
        If the process does not report its address within ``timeout_s``.
    """
    cmd = [
        sys.executable,
        "-m",
        "firmware_bridge.emulator",
        "--listen",
        "socket://127.0.0.1:0",
        "--seed",
        str(seed),
        "--tck-ns",
        repr(float(tck_ns)),
        "--exit-on-stdin-eof",
        *extra_args,
    ]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(b"listening on "):
            return EmulatorProcess(proc, line[len(b"listening on ") :].decode().strip())
        if not line and proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    raise EmulatorError(f"emulator did not start (exit status {proc.returncode}, last output {line!r})")

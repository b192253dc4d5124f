"""The emulated bench: SoftMC tester firmware over an emulated DDR3 DIMM.

Run it as a separate process (``python -m firmware_bridge.emulator``) and talk to
it through the real link, or start one from Python with :func:`spawn`::

    with spawn("emu://C?seed=3") as emu:
        with TesterSession.open(emu.url) as tester:
            ...

or open ``emu://C?seed=3`` directly as a tester URL or bench address.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from typing import Sequence

from firmware_bridge.emulator.bench import BenchSpec, BenchSpecError, parse_emu_url
from firmware_bridge.emulator.dimm import ML605_GEOMETRY, EmulatedDimm, Geometry
from firmware_bridge.emulator.firmware import TesterFirmware

__all__ = ["build_firmware", "spawn", "EmulatorProcess", "EmulatorError", "BenchSpec", "parse_emu_url"]


class EmulatorError(RuntimeError):
    """The emulator process could not be started."""


def build_firmware(seed: int = 0, tck_ns: float = 2.5, geometry: Geometry = ML605_GEOMETRY) -> TesterFirmware:
    """Create the emulated firmware with a fresh, fault-free DIMM (in process, for unit tests)."""
    return TesterFirmware(EmulatedDimm(geometry, seed=seed), tck_ns=tck_ns)


class EmulatorProcess:
    """A running emulated bench process.

    Attributes
    ----------
    url : str
        Tester link URL (``socket://127.0.0.1:PORT``).
    supply_resource, thermal_resource : str
        VISA resource names of the emulated supply and thermal controller.
    spec : BenchSpec
        What the process emulates.
    """

    def __init__(self, proc: subprocess.Popen[bytes], url: str, resources: dict[str, str], spec: BenchSpec) -> None:
        self.proc = proc
        self.url = url
        self.supply_resource = resources["supply"]
        self.thermal_resource = resources["thermal"]
        self.spec = spec

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


def spawn(
    bench: BenchSpec | str | None = None,
    *,
    seed: int = 0,
    extra_args: Sequence[str] = (),
    timeout_s: float = 30.0,
) -> EmulatorProcess:
    """Start an emulated bench (``python -m firmware_bridge.emulator``) on free loopback ports.

    Parameters
    ----------
    bench : BenchSpec or str, optional
        What to emulate: a spec or an ``emu://`` address; default profile B with ``seed``.
    seed : int
        DIMM seed when ``bench`` is not given.

    The process exits when the returned object is closed or when this process
    dies (it watches its standard input).

    Raises
    ------
    BenchSpecError
        If the ``emu://`` address is not valid.
    EmulatorError
        If the process does not report its addresses within ``timeout_s``.
    """
    spec = parse_emu_url(bench) if isinstance(bench, str) else bench if bench is not None else BenchSpec(seed=seed)
    cmd = [
        sys.executable,
        "-m",
        "firmware_bridge.emulator",
        "--listen",
        "socket://127.0.0.1:0",
        "--bench",
        spec.url(),
        "--exit-on-stdin-eof",
        *extra_args,
    ]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    # Its own session: Ctrl-C in the terminal goes to the host program, which then stops
    # cleanly through the emulator (restoring nominal VDD) instead of losing it mid-point.
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    resources: dict[str, str] = {}
    fd = proc.stdout.fileno()
    pending = b""
    line = b""
    while time.monotonic() < deadline:
        # Read the raw descriptor: a buffered readline could hold lines that select cannot see.
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            if text.startswith("listening on "):
                return EmulatorProcess(proc, text[len("listening on ") :], resources, spec)
            if text.startswith(("supply ", "thermal ")):
                name, _, resource = text.partition(" ")
                resources[name] = resource
    proc.kill()
    proc.wait()
    raise EmulatorError(f"emulator did not start (exit status {proc.returncode}, last output {line!r})")

"""Starting an emulated bench in its own process (:func:`spawn`), and the in-process firmware for tests."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import select
import subprocess
import sys
import time
from typing import Any, Sequence

from emubench.bench import BenchSpec, parse_emu_url
from emubench.dimm import ML605_GEOMETRY, EmulatedDimm, Geometry, RowStore
from emubench.firmware import TesterFirmware
from emubench.profiles import get_profile
from softmc_host.timing import ML605_TCK_NS

__all__ = ["build_firmware", "spawn", "EmulatorProcess", "EmulatorError"]

log = logging.getLogger(__name__)


class EmulatorError(RuntimeError):
    """The emulator process could not be started."""


def build_firmware(
    seed: int = 0, tck_ns: float = ML605_TCK_NS, geometry: Geometry = ML605_GEOMETRY, store: RowStore | None = None
) -> TesterFirmware:
    """Create the emulated firmware with a fresh, fault-free DIMM (in process, for unit tests).

    ``store`` keeps its written rows (default: in RAM, bounded; see :class:`RowStore`).
    """
    return TesterFirmware(EmulatedDimm(geometry, seed=seed, store=store), tck_ns=tck_ns)


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

    def describe(self) -> dict[str, Any]:
        """What this bench emulates, for metadata: profile, seed (and the replayed map, or the profile's description)."""
        spec = self.spec
        if spec.replay is not None:
            return {"profile": "replay", "replay": spec.replay, "seed": spec.seed}
        profile = get_profile(spec.profile)
        return {"profile": profile.name, "seed": spec.seed, "description": profile.description}

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
    store_dir: str | None = None,
    max_stored_rows: int | None = None,
    max_store_mib: float | None = None,
) -> EmulatorProcess:
    """Start an emulated bench (``python -m emubench``) on free loopback ports.

    Parameters
    ----------
    bench : BenchSpec or str, optional
        What to emulate: a spec or an ``emu://`` address; default profile B with ``seed``.
    seed : int
        DIMM seed when ``bench`` is not given.
    extra_args : sequence of str
        More command-line arguments for the emulator.
    timeout_s : float
        How long to wait for the process to report its addresses.
    store_dir : str, optional
        Keep written rows in a temporary file in this directory (``--store``).
    max_stored_rows : int, optional
        Most rows the DIMM stores (``--max-stored-rows``).
    max_store_mib : float, optional
        Most MiB of rows the DIMM stores (``--max-store-mib``).  Without these three the
        process uses ``$EDEN_EMU_STORE`` etc. if set, else an in-RAM store of
        ``DEFAULT_MAX_STORE_MIB`` MiB.

    The process exits when the returned object is closed or when this process
    dies (it watches its standard input).

    Raises
    ------
    BenchSpecError
        If the ``emu://`` address is not valid.
    ValueError
        If a store option is not valid (before anything starts).
    EmulatorError
        If the process does not report its addresses within ``timeout_s``.
    """
    spec = parse_emu_url(bench) if isinstance(bench, str) else bench if bench is not None else BenchSpec(seed=seed)
    store_args: list[str] = []
    if store_dir is not None:
        if not os.path.isdir(store_dir):
            raise ValueError(f"store_dir {store_dir!r} is not a directory")
        store_args += ["--store", str(store_dir)]
    if max_stored_rows is not None:
        if isinstance(max_stored_rows, bool) or not isinstance(max_stored_rows, int) or max_stored_rows < 0:
            raise ValueError(f"max_stored_rows must be a non-negative integer, got {max_stored_rows!r}")
        store_args += ["--max-stored-rows", str(max_stored_rows)]
    if max_store_mib is not None:
        if isinstance(max_store_mib, bool) or not isinstance(max_store_mib, (int, float)):
            raise ValueError(f"max_store_mib must be a number, got {max_store_mib!r}")
        if not (math.isfinite(max_store_mib) and 0 <= max_store_mib < 1e12):
            raise ValueError(f"max_store_mib must be finite and non-negative, got {max_store_mib!r}")
        store_args += ["--max-store-mib", f"{float(max_store_mib):.6f}"]
    cmd = [
        sys.executable,
        "-m",
        "emubench",
        "--listen",
        "socket://127.0.0.1:0",
        "--bench",
        dataclasses.replace(spec, link="serial").url(),  # the process serves the framed link; a fake board fronts it
        "--exit-on-stdin-eof",
        *store_args,
        *extra_args,
    ]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the directory holding emubench
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
                url = text[len("listening on ") :]
                log.debug("emulated bench %s (pid %d) listening on %s", spec.url(), proc.pid, url)
                return EmulatorProcess(proc, url, resources, spec)
            if text.startswith(("supply ", "thermal ")):
                name, _, resource = text.partition(" ")
                resources[name] = resource
    proc.kill()
    proc.wait()
    raise EmulatorError(f"emulator did not start (exit status {proc.returncode}, last output {line!r})")

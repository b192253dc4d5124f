"""The emulated bench, a plug-in: SoftMC tester firmware over an emulated DDR3 DIMM, with instruments.

A whole characterization bench in one process, reached through the real wire: the tester
firmware (:mod:`~emubench.firmware`, served by :mod:`~emubench.server`) over a DIMM whose reads
fail as published DIMMs do (:mod:`~emubench.dimm`, :mod:`~emubench.physics`,
:mod:`~emubench.profiles`) or as a recorded BER map says (:mod:`~emubench.replay`), and an
emulated supply and thermal controller spoken to in SCPI (:mod:`~emubench.instruments`), wired
together by :mod:`~emubench.bench`.

No layer of the toolkit imports this package: the host driver reaches it by URL, through the
scheme registries of :mod:`softmc_host.schemes`, which this package fills through entry points
(:mod:`~emubench.plugin`: ``emu://`` and ``replay://``).  Run it as a separate process
(``python -m emubench``, or the old spelling ``python -m firmware_bridge.emulator``) and talk
to it through the link, or start one from Python with :func:`spawn`::

    with spawn("emu://C?seed=3") as emu:
        with TesterSession.open(emu.url) as tester:
            ...

or open ``emu://C?seed=3`` directly as a tester URL or bench address.
"""

from __future__ import annotations

from emubench.bench import BenchSpec, BenchSpecError, EmulatedBench, parse_emu_url
from emubench.dimm import ML605_GEOMETRY, EmulatedDimm, Geometry, RowStore, StoreFullError
from emubench.firmware import TesterFirmware
from emubench.process import EmulatorError, EmulatorProcess, build_firmware, spawn
from emubench.profiles import PROFILES, VendorProfile, get_profile

__all__ = [
    "build_firmware",
    "spawn",
    "EmulatorProcess",
    "EmulatorError",
    "BenchSpec",
    "BenchSpecError",
    "EmulatedBench",
    "parse_emu_url",
    "RowStore",
    "StoreFullError",
    "EmulatedDimm",
    "Geometry",
    "ML605_GEOMETRY",
    "TesterFirmware",
    "PROFILES",
    "VendorProfile",
    "get_profile",
]

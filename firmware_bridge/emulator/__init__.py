"""Compatibility alias: the emulated bench now lives in :mod:`emubench`.

``firmware_bridge`` is the link (transports, framing, protocol); the emulated bench is a
plug-in above the host driver, reached by URL (``emu://``, ``replay://``) through the
scheme registries of :mod:`softmc_host.schemes`.  This module keeps the old names
working: ``from firmware_bridge.emulator import spawn``, ``import
firmware_bridge.emulator.bench`` (the same module object as :mod:`emubench.bench`) and
``python -m firmware_bridge.emulator ...``.  New code should import :mod:`emubench`.
"""

from __future__ import annotations

import sys

import emubench
import emubench.bench
import emubench.dimm
import emubench.firmware
import emubench.instruments
import emubench.physics
import emubench.profiles
import emubench.server
from emubench import (
    ML605_GEOMETRY,
    BenchSpec,
    BenchSpecError,
    EmulatedDimm,
    EmulatorError,
    EmulatorProcess,
    Geometry,
    RowStore,
    StoreFullError,
    TesterFirmware,
    build_firmware,
    parse_emu_url,
    spawn,
)

__all__ = [
    "build_firmware",
    "spawn",
    "EmulatorProcess",
    "EmulatorError",
    "BenchSpec",
    "BenchSpecError",
    "parse_emu_url",
    "RowStore",
    "StoreFullError",
    "EmulatedDimm",
    "Geometry",
    "ML605_GEOMETRY",
    "TesterFirmware",
]

# The old submodule paths name the new modules themselves (one module object each, so
# isinstance checks and monkeypatching agree whichever path a caller used).
for _name in ("bench", "dimm", "firmware", "instruments", "physics", "profiles", "server"):
    _module = getattr(emubench, _name)
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
del _name, _module

"""Host driver of the SoftMC DRAM tester, and the facts and utilities every layer above shares.

The driver:

- :mod:`softmc_host.isa`: bit-exact instruction words; :mod:`softmc_host.asm`: assembler and
  disassembler (``python -m softmc_host.asm``).
- :mod:`softmc_host.timing`: DDR3 timings in ns and tester cycles, the nominal tRCD/tRP/tRAS.
- :mod:`softmc_host.program`: programs and row read/write builders.
- :mod:`softmc_host.session`: :class:`TesterSession`, a tester opened by URL (the bridge firmware over
  a pySerial transport, or a stock SoftMC board over RIFFA, ``riffa://``, with what it lacks said
  by :class:`CapabilityError`).
- :mod:`softmc_host.bench`: :class:`Bench`, tester + supply + thermal controller from a bench file
  or address, restoring nominal VDD and timing on every exit path.
- :mod:`softmc_host.instruments`: the SCPI drivers (declared with :class:`~softmc_host.instruments.Control`),
  :mod:`softmc_host.instrument_testing`: ``expected_protocol`` for their wire tests.
- :mod:`softmc_host.schemes`: the tester and bench URL-scheme registries that plug-ins such as
  the emulated bench (``emu://``, ``replay://``) fill through entry points.
- :mod:`softmc_host.demo`: the bench demo (``python -m softmc_host.demo``).

Shared by every layer (one source for each fact):

- :mod:`softmc_host.geometry` (DIMM geometry), :mod:`softmc_host.patterns` (data patterns),
  :mod:`softmc_host.splitmix` (the one hash), :mod:`softmc_host.files` (atomic writes, JSON,
  TOML, SHA-256), :mod:`softmc_host.cli` (the command-line vocabulary and logging set-up).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "TesterSession": "softmc_host.session",
    "TesterError": "softmc_host.session",
    "CapabilityError": "softmc_host.session",
    "Bench": "softmc_host.bench",
    "BenchError": "softmc_host.bench",
    "AccessTiming": "softmc_host.timing",
    "NOMINAL_TIMING": "softmc_host.timing",
    "NOMINAL_TRCD_NS": "softmc_host.timing",
    "NOMINAL_TRP_NS": "softmc_host.timing",
    "NOMINAL_TRAS_NS": "softmc_host.timing",
    "Ddr3Params": "softmc_host.timing",
    "Geometry": "softmc_host.geometry",
    "ML605_GEOMETRY": "softmc_host.geometry",
    "Pattern": "softmc_host.patterns",
    "parse_pattern": "softmc_host.patterns",
    "register_tester_scheme": "softmc_host.schemes",
    "register_bench_scheme": "softmc_host.schemes",
    "SchemeError": "softmc_host.schemes",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (``import softmc_host`` stays cheap)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'softmc_host' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

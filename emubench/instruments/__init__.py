"""Emulated bench instruments: a DIMM supply and a DIMM thermal controller, spoken to in SCPI.

- :mod:`~emubench.instruments.scpi`: the SCPI dialect (wire format, error codes, common
  commands) and :class:`ScpiInstrument`, the base of both instruments;
- :mod:`~emubench.instruments.supply`: :class:`EmulatedSupply`, the DIMM's VDD;
- :mod:`~emubench.instruments.thermal`: :class:`EmulatedThermal`, the DIMM heater/TEC;
- :mod:`~emubench.instruments.server`: :class:`ScpiServer`, one instrument on a TCP socket.

The host drivers that speak to them are in :mod:`softmc_host.instruments`
(``docs/bench-instruments.md``).
"""

from __future__ import annotations

from emubench.instruments.scpi import ScpiError, ScpiInstrument
from emubench.instruments.server import ScpiServer
from emubench.instruments.supply import EmulatedSupply
from emubench.instruments.thermal import EmulatedThermal

__all__ = [
    "ScpiInstrument",
    "ScpiError",
    "EmulatedSupply",
    "EmulatedThermal",
    "ScpiServer",
]

"""The link between host and tester firmware.

- :mod:`firmware_bridge.framing`: frame layout, CRCs, resynchronising decoder.
- :mod:`firmware_bridge.protocol`: message types and payload layouts.
- :mod:`firmware_bridge.link`: transports by URL (pySerial), request/response, retransmission.
- :mod:`firmware_bridge.emulator`: the tester firmware with an emulated DDR3 DIMM,
  served over the same wire (``python -m firmware_bridge.emulator``).

The wire format is specified in ``docs/wire-protocol.md``.
"""

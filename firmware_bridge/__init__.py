"""The link between host and tester firmware: transports, framing, protocol.

- :mod:`firmware_bridge.framing`: frame layout, CRCs, resynchronising decoder (``encode_frame``).
- :mod:`firmware_bridge.protocol`: message types and payload layouts.
- :mod:`firmware_bridge.link`: transports by URL (pySerial ports, ``socket://``, ``loop://``),
  request/response, retransmission.
- :mod:`firmware_bridge.riffa`: the stock SoftMC transport (``riffa://ID/CHANNEL``, RIFFA 2.1
  over PCIe through libriffa and ctypes), for a tester without the bridge firmware.
- :mod:`firmware_bridge.connect`: :func:`open_link`, the link a URL names (either of the two).

The wire format is specified in ``docs/wire-protocol.md``. This package imports nothing else of
the toolkit. ``firmware_bridge.emulator`` is kept only as a compatibility alias of the emulated
bench, which now lives in :mod:`emubench` (``python -m firmware_bridge.emulator`` still works).
"""

from firmware_bridge.connect import open_link
from firmware_bridge.framing import Frame, FrameDecoder, FrameError, encode_frame
from firmware_bridge.link import Link, LinkError, LinkTimeoutError, RemoteError, open_transport
from firmware_bridge.protocol import ErrorCode, MsgType, ProtocolError
from firmware_bridge.riffa import RiffaError, RiffaLink, UnsupportedRequest

__all__ = [
    "encode_frame",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "Link",
    "LinkError",
    "LinkTimeoutError",
    "RemoteError",
    "open_transport",
    "open_link",
    "RiffaLink",
    "RiffaError",
    "UnsupportedRequest",
    "MsgType",
    "ErrorCode",
    "ProtocolError",
]

"""Compatibility alias: ``python -m firmware_bridge.emulator`` runs ``python -m emubench``."""

from __future__ import annotations

import sys

from emubench.__main__ import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m firmware_bridge.emulator"))

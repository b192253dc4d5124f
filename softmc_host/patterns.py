"""Data patterns written to rows during a characterization, looked up by name.

=================  ==========================================================
name               row content
=================  ==========================================================
``all-0``          every byte 0x00
``all-1``          every byte 0xFF
``0xNN``           every byte 0xNN (``0xAA``, ``0x55``, ...)
``checkerboard``   0x55 in even rows, 0xAA in odd rows (a bit checkerboard)
``rowstripe``      0xFF in even rows, 0x00 in odd rows
``random``         seeded random bytes, different in every (bank, row);
                   ``random:SEED`` names the seed (default: the sweep's)
``random-bursts``  seeded random bytes, one per 64-byte burst (repeated across
                   it): what a stock SoftMC tester, whose WR repeats one byte,
                   can write; ``random-bursts:SEED`` as for ``random``
``file:PATH``      the bytes of a file (e.g. a network's weights), tiled over
                   consecutive rows: row ``k`` of the sweep's row list takes
                   bytes ``[k * row_bytes, (k + 1) * row_bytes)`` modulo the size
=================  ==========================================================

Each pattern has a :attr:`Pattern.definition` string that is stored in a BER
map's metadata and rebuilds the same pattern (a file pattern also records the
file's SHA-256).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["Pattern", "PatternError", "parse_pattern", "PATTERN_NAMES"]

#: Largest seed of a ``random:SEED`` pattern (the generator is keyed with 64 bits).
MAX_RANDOM_SEED = (1 << 64) - 1

PATTERN_NAMES = (
    "all-0", "all-1", "0xNN", "checkerboard", "rowstripe", "random[:SEED]", "random-bursts[:SEED]", "file:PATH"
)
#: Bytes of one burst (a ``random-bursts`` pattern repeats one byte across each).
_BURST_BYTES = 64


class PatternError(ValueError):
    """An unknown or malformed pattern name, or an unreadable pattern file."""


def _show(text: object, limit: int = 80) -> str:
    """``repr(text)`` cut to one short line."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit - 20]}...{shown[-12:]} ({len(shown)} chars)"


@dataclass(frozen=True)
class Pattern:
    """A data pattern: ``data(bank, row, index)`` gives a row's bytes.

    ``index`` is the row's position in the sweep's row list (used by file patterns).
    """

    name: str
    definition: str
    _fill: Callable[[int, int, int, int], np.ndarray]

    def data(self, bank: int, row: int, index: int, row_bytes: int) -> np.ndarray:
        """The ``row_bytes`` bytes written to (bank, row)."""
        return self._fill(bank, row, index, row_bytes)


def _constant(value: int) -> Callable[[int, int, int, int], np.ndarray]:
    return lambda bank, row, index, n: np.full(n, value, np.uint8)


def _alternating(even: int, odd: int) -> Callable[[int, int, int, int], np.ndarray]:
    return lambda bank, row, index, n: np.full(n, even if row % 2 == 0 else odd, np.uint8)


def _random(seed: int) -> Callable[[int, int, int, int], np.ndarray]:
    def fill(bank: int, row: int, index: int, n: int) -> np.ndarray:
        key = np.array([seed & 0xFFFFFFFFFFFFFFFF, (bank << 32) | row], dtype=np.uint64)
        return np.random.Generator(np.random.Philox(key=key)).integers(0, 256, n, dtype=np.uint8)

    return fill


def _random_bursts(seed: int) -> Callable[[int, int, int, int], np.ndarray]:
    def fill(bank: int, row: int, index: int, n: int) -> np.ndarray:
        key = np.array([seed & 0xFFFFFFFFFFFFFFFF, (1 << 63) | (bank << 32) | row], dtype=np.uint64)
        values = np.random.Generator(np.random.Philox(key=key)).integers(0, 256, -(-n // _BURST_BYTES), dtype=np.uint8)
        return np.repeat(values, _BURST_BYTES)[:n]

    return fill


def _file(path: Path) -> tuple[Callable[[int, int, int, int], np.ndarray], str]:
    try:
        special = path.exists() and not path.is_file()  # a directory, a device (/dev/zero never ends), a FIFO
        content = None if special else np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as exc:
        raise PatternError(f"cannot read pattern file {_show(str(path))}: {exc.strerror or exc}") from None
    except ValueError as exc:  # an embedded NUL in the path
        raise PatternError(f"cannot read pattern file {_show(str(path))}: {exc}") from None
    if content is None:
        raise PatternError(f"cannot read pattern file {_show(str(path))}: not a regular file")
    if content.size == 0:
        raise PatternError(f"pattern file {str(path)!r} is empty")
    digest = hashlib.sha256(content.tobytes()).hexdigest()

    def fill(bank: int, row: int, index: int, n: int) -> np.ndarray:
        start = (index * n) % content.size
        return np.resize(np.roll(content, -start), n)

    return fill, digest


def parse_pattern(text: str, default_seed: int = 0) -> Pattern:
    """Build a pattern from its name (see the module docstring).

    Raises
    ------
    PatternError
        With the known names, for an unknown or malformed name.
    """
    if not isinstance(text, str):
        raise PatternError(f"a data pattern is a name, got {_show(text)}")
    name = text.strip()
    lower = name.lower()
    if lower in ("all-0", "all0", "zeros"):
        return Pattern("all-0", "all-0", _constant(0x00))
    if lower in ("all-1", "all1", "ones"):
        return Pattern("all-1", "all-1", _constant(0xFF))
    if re.fullmatch(r"0x[0-9a-f]{1,2}", lower):
        value = int(lower, 16)
        return Pattern(f"0x{value:02X}", f"0x{value:02X}", _constant(value))
    if lower == "checkerboard":
        return Pattern("checkerboard", "checkerboard", _alternating(0x55, 0xAA))
    if lower == "rowstripe":
        return Pattern("rowstripe", "rowstripe", _alternating(0xFF, 0x00))
    if lower in ("random", "random-bursts") or lower.startswith(("random:", "random-bursts:")):
        kind, _, seed_text = lower.partition(":")
        seed_text = name.partition(":")[2]
        # ASCII digits only (str.isdigit() also takes "²"), at most 64 bits
        if seed_text and (not re.fullmatch(r"[0-9]{1,20}", seed_text) or int(seed_text) > MAX_RANDOM_SEED):
            raise PatternError(f"pattern {_show(name)}: the seed must be an integer in 0..2**64-1")
        seed = int(seed_text) if seed_text else default_seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_RANDOM_SEED:
            raise PatternError(f"pattern {_show(name)}: the default seed must be an integer in 0..2**64-1, got {seed!r}")
        fill = _random(seed) if kind == "random" else _random_bursts(seed)
        return Pattern(f"{kind}:{seed}", f"{kind}:{seed}", fill)
    if lower.startswith("file:"):
        path = Path(name[5:])
        fill, digest = _file(path)
        return Pattern(f"file:{path.name}", f"file:{path} sha256={digest}", fill)
    raise PatternError(f"unknown data pattern {_show(name)}; known: {', '.join(PATTERN_NAMES)}")

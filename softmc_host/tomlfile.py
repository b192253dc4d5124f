"""Reading TOML configuration files (bench files, sweep configs) with one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["read_toml", "parse_toml", "MAX_TOML_BYTES"]

#: Largest configuration file read, in bytes; bench files and sweep configs are a few KiB.
MAX_TOML_BYTES = 16 * 1024 * 1024


def read_toml(path: str | Path, what: str, error: type[Exception], *, max_bytes: int = MAX_TOML_BYTES) -> dict[str, Any]:
    """Parse a TOML file; raise ``error`` with a one-line message naming ``what`` and the path.

    Parameters
    ----------
    path : path
        The file.
    what : str
        What the file is, for messages (``"bench file"``, ``"sweep config"``).
    error : exception class
        Raised for an unreadable, oversized or non-UTF-8 file or invalid TOML; the only
        exception this function raises.
    max_bytes : int
        Refuse larger files (:data:`MAX_TOML_BYTES` by default).
    """
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    except ValueError as exc:  # an embedded NUL in the path, for one
        raise error(f"cannot read {what} {str(path)!r}: {exc}") from None
    if len(data) > max_bytes:
        raise error(f"{what} {str(path)!r} is larger than {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {str(path)!r} is not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    # line ends as a text-mode read gives them (what this reader always did)
    return parse_toml(text.replace("\r\n", "\n").replace("\r", "\n"), f"{what} {str(path)!r}", error)


def parse_toml(data: bytes | str, what: str, error: type[Exception]) -> dict[str, Any]:
    """Parse TOML text (UTF-8 bytes or str); raise ``error`` with a one-line message naming ``what``.

    Beyond ``TOMLDecodeError`` this catches what the parser lets out on hostile input:
    ``RecursionError`` for very deep nesting and the ``ValueError`` of Python's limit on
    integer digits (4300) for huge integers.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} is not valid TOML: {_one_line(exc)}") from None
    except RecursionError:
        raise error(f"{what} is not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        if "integer string conversion" in str(exc):
            limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
            raise error(f"{what} is not valid TOML: an integer with more than {limit} digits") from None
        raise error(f"{what} is not valid TOML: {_one_line(exc)}") from None


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Reading TOML configuration files (bench files, sweep configs) with one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["read_toml"]


def read_toml(path: str | Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """Parse a TOML file; raise ``error`` with a one-line message naming ``what`` and the path.

    Parameters
    ----------
    path : path
        The file.
    what : str
        What the file is, for messages (``"bench file"``, ``"sweep config"``).
    error : exception class
        Raised for an unreadable file or invalid TOML.
    """
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {str(path)!r} is not valid TOML: {exc}") from None

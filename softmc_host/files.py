"""The toolkit's one files module: every command reads and writes its files through it.

* :func:`atomic_write` / :func:`write_json` / :func:`write_text`: a file is either complete or
  absent (a temporary file in the same directory, flushed and ``fsync``-ed, renamed over the
  target, then the directory ``fsync``-ed), so an interrupted command never leaves half a file.
* :func:`read_json`: JSON with one-line errors (:class:`FileFormatError`) for a missing,
  unreadable, non-UTF-8, corrupt or too deeply nested file.
* :func:`sha256_file`: the SHA-256 that documents record of the files they were made from.
* :func:`read_toml` / :func:`parse_toml`: bench files, sweep configs and ``--config`` files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Optional, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "FileFormatError",
    "atomic_write",
    "write_json",
    "write_text",
    "read_json",
    "sha256_file",
    "to_jsonable",
    "read_toml",
    "parse_toml",
    "MAX_TOML_BYTES",
    "MAX_JSON_BYTES",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Largest JSON document read, in bytes (the toolkit's documents are at most a few MiB).
MAX_JSON_BYTES = 256 * 1024 * 1024


class FileFormatError(ValueError):
    """A file that is missing, unreadable or not of its format (one-line message naming it)."""


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file so that it is either complete or absent.

    Parameters
    ----------
    path : path
        The file; missing parent directories are created.
    write : callable
        ``write(fh)`` fills a binary temporary file in the same directory. It is flushed and
        ``fsync``-ed, renamed over ``path`` and the directory is ``fsync``-ed; on any exception
        (an interrupt included) the temporary file is removed and a previous ``path`` is intact.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def to_jsonable(value: Any) -> Any:
    """JSON fallback for the values documents hold: numpy scalars and arrays, paths, sets, tuples."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _finite(doc: Any) -> Any:
    """``doc`` with non-finite floats replaced by ``None`` (JSON has no NaN or infinity)."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: _finite(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_finite(v) for v in doc]
    return doc


def write_json(path: PathLike, doc: Any, *, indent: Optional[int] = 1) -> Path:
    """Write ``doc`` as UTF-8 JSON atomically (:func:`atomic_write`).

    Numpy values, tuples and paths are converted (:func:`to_jsonable`); NaN and infinities,
    which JSON cannot hold, are written as ``null``.
    """
    data = json.dumps(_finite(json.loads(json.dumps(doc, default=to_jsonable))), indent=indent,
                      allow_nan=False).encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data + b"\n"))


def write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (:func:`atomic_write`)."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data))


def read_json(path: PathLike, what: str = "file", error: type[Exception] = FileFormatError, *,
              max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read a JSON file; raise ``error`` with a one-line message naming ``what`` and the path.

    Parameters
    ----------
    path : path
        The file.
    what : str
        What the file is, for messages (``"error-model file"``).
    error : exception class
        Raised (with ``FileNotFoundError`` text for a missing file) for any failure; the only
        exception this function raises. :class:`FileFormatError` by default.
    max_bytes : int
        Refuse larger files.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    except ValueError as exc:  # an embedded NUL in the path
        raise error(f"cannot read {what} {str(path)!r}: {exc}") from None
    if len(data) > max_bytes:
        raise error(f"{what} {str(path)!r} is larger than {max_bytes} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{what} {str(path)!r} is not JSON: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise error(f"{what} {str(path)!r} is not JSON: it nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, the integer digit limit
        raise error(f"{what} {str(path)!r} is not JSON: {_one_line(exc)}") from None


def sha256_file(path: PathLike) -> str:
    """SHA-256 of a file's bytes, as 64 hex digits (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

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

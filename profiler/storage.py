"""BER maps in HDF5: writing point by point with a journal and a lock, and reading them back.

Layout (``docs/ber-map-format.md`` has the full description)::

    /                         attrs: format = "eden-ber-map", format_version = 1,
                              software, created_utc, and JSON attrs bench_json, dimm_json,
                              geometry_json, config_json, patterns_json, units_json,
                              identity_json (the settings a resume must match)
    /points/<key>             one group per measured point; attrs: the settings
                              (vdd_v, trcd_ns, trp_ns, tras_ns, temp_c, pattern, rep;
                              trefi_ms, effective_trefi_ms, hold_ms where the sweep
                              held a refresh interval), effective timings, measured_vdd_v, measured_temp_c,
                              supply_current_a, started_utc, finished_utc, duration_s,
                              index, errors_truncated, complete (written last)
        rows          (N, 2) uint32   bank, row
        bits_tested   (N,)   uint64   bits compared per row
        flips_0to1    (N,)   uint32   bits written 0 and read 1
        flips_1to0    (N,)   uint32   bits written 1 and read 0
        bitline_0to1  (B, W) uint32   per bank of the sweep (attr banks), per bit position
        bitline_1to0  (B, W) uint32   in the row (W = row bytes * 8), over the rows read
        errors        (M,)   compound {bank u1, row u4, bit u4, dir u1}: every flipped
                                      bit up to the cap (bit = byte * 8 + bit, LSB first;
                                      dir 1 = 0->1, 0 = 1->0)

Nothing is lost on an interruption: every point is first saved to a journal
file (``OUT.journal/<key>.npz``, fsynced), then added to the HDF5 file, which is
closed after each point.  A rerun takes the points the file (or, if the file
was damaged by a kill during a write, the journal) holds and measures the rest.
A lock file (``OUT.lock``, holding the writer's PID) refuses a second writer.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from softmc_host.files import atomic_write, write_text

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ERROR_DTYPE",
    "UNITS",
    "MapError",
    "LockError",
    "PointData",
    "MapWriter",
    "BerMap",
    "REQUIRED_FILE_ATTRS",
    "REQUIRED_POINT_ATTRS",
]

FORMAT = "eden-ber-map"
FORMAT_VERSION = 1
ERROR_DTYPE = np.dtype([("bank", "u1"), ("row", "<u4"), ("bit", "<u4"), ("dir", "u1")])
UNITS = {
    "vdd_v": "V",
    "measured_vdd_v": "V",
    "trcd_ns": "ns",
    "trp_ns": "ns",
    "tras_ns": "ns",
    "effective_trcd_ns": "ns",
    "effective_trp_ns": "ns",
    "effective_tras_ns": "ns",
    "temp_c": "degC",
    "measured_temp_c": "degC",
    "trefi_ms": "ms",
    "effective_trefi_ms": "ms",
    "hold_ms": "ms",
    "supply_current_a": "A",
    "duration_s": "s",
    "bits_tested": "bits",
    "flips_0to1": "bits",
    "flips_1to0": "bits",
    "bitline_0to1": "bits",
    "bitline_1to0": "bits",
}
_POINT_ATTRS = (
    "vdd_v",
    "trcd_ns",
    "trp_ns",
    "tras_ns",
    "temp_c",
    "pattern",
    "rep",
    "trefi_ms",  # only in points of a sweep with a refresh interval, with the next two
    "effective_trefi_ms",
    "hold_ms",
    "index",
    "effective_trcd_ns",
    "effective_trp_ns",
    "effective_tras_ns",
    "measured_vdd_v",
    "measured_temp_c",
    "supply_current_a",
    "started_utc",
    "finished_utc",
    "duration_s",
    "errors_truncated",
)
_ARRAYS = ("rows", "bits_tested", "flips_0to1", "flips_1to0", "bitline_0to1", "bitline_1to0", "errors", "bitline_banks")


class MapError(ValueError):
    """A file is not a readable BER map, or does not match the sweep that would write it.

    The message is always one line: it names the file and, for a problem inside a point,
    the point and the member (dataset or attribute).
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(_one_line(message))


class LockError(RuntimeError):
    """Another process is writing the same BER map."""


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class PointData:
    """The measured data of one point (attrs: settings and measurements; arrays as in the layout)."""

    key: str
    attrs: dict[str, Any]
    rows: np.ndarray
    bits_tested: np.ndarray
    flips_0to1: np.ndarray
    flips_1to0: np.ndarray
    bitline_banks: np.ndarray
    bitline_0to1: np.ndarray
    bitline_1to0: np.ndarray
    errors: np.ndarray

    @property
    def bits(self) -> int:
        """Bits tested in total."""
        return int(self.bits_tested.sum())

    @property
    def flips(self) -> int:
        """Flipped bits in total."""
        return int(self.flips_0to1.sum() + self.flips_1to0.sum())

    @property
    def ber(self) -> float:
        """Bit error rate over the point."""
        return self.flips / max(1, self.bits)

    def arrays(self) -> dict[str, np.ndarray]:
        """The point's arrays by dataset name."""
        return {name: getattr(self, name) for name in _ARRAYS}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_point(group: h5py.Group, point: PointData) -> None:
    compress = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    group.create_dataset("rows", data=point.rows.astype("<u4"))
    for name in ("bits_tested", "flips_0to1", "flips_1to0"):
        dataset = group.create_dataset(name, data=getattr(point, name))
        dataset.attrs["units"] = UNITS[name]
    for name in ("bitline_0to1", "bitline_1to0"):
        data = getattr(point, name)
        dataset = group.create_dataset(name, data=data, chunks=data.shape if data.size else None, **compress)
        dataset.attrs["units"] = UNITS[name]
        dataset.attrs["banks"] = point.bitline_banks.astype("u1")
    if point.errors.size:
        group.create_dataset("errors", data=point.errors, chunks=True, **compress)
    else:
        group.create_dataset("errors", shape=(0,), dtype=ERROR_DTYPE)
    for name, value in point.attrs.items():
        group.attrs[name] = np.nan if value is None else value
    group.attrs["complete"] = True  # last: a group without it is discarded on resume


class MapWriter:
    """Writes a BER map point by point; resumable, with a journal and a lock.

    Parameters
    ----------
    path : path
        The HDF5 file.
    meta : dict
        File attributes: ``bench``, ``dimm``, ``geometry``, ``config``, ``patterns``
        (JSON-serialisable values), and ``software``.
    identity : dict
        The parts of the configuration that must match for a rerun to resume the file.
    """

    def __init__(self, path: str | Path, meta: dict[str, Any], identity: dict[str, Any]) -> None:
        self.path = Path(path)
        self.journal = self.path.with_name(self.path.name + ".journal")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.meta = meta
        self.identity = identity
        self._locked = False
        self.done: set[str] = set()
        self.recovered_from_journal = 0
        self.damaged: Path | None = None  # where a damaged file was moved, if one was

    # Locking -----------------------------------------------------------------------------

    def _acquire(self) -> None:
        stamp = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid_text, _, host = self.lock_path.read_text().partition(" ")
                    pid = int(pid_text)
                except (OSError, ValueError):
                    pid, host = -1, ""
                if pid > 0 and host.strip() == socket.gethostname() and not _pid_alive(pid):
                    self.lock_path.unlink(missing_ok=True)  # stale: its writer is gone
                    continue
                raise LockError(
                    f"{self.path} is being written by another sweep (pid {pid}); "
                    f"if that process is gone, remove {self.lock_path}"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(stamp)
            self._locked = True
            return
        raise LockError(f"cannot take the lock {self.lock_path}")

    def release(self) -> None:
        """Release the lock."""
        if self._locked:
            self.lock_path.unlink(missing_ok=True)
            self._locked = False

    # Opening / resuming ------------------------------------------------------------------

    def open(self) -> set[str]:
        """Take the lock, create or check the file, recover journaled points; return finished keys."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._acquire()
        try:
            if self.path.exists():
                try:
                    self._check_existing()
                except IsADirectoryError:
                    raise MapError(f"{self.path} is a directory; choose another --out") from None
                except MapError:
                    raise
                except (OSError, RuntimeError, KeyError, TypeError, ValueError, AttributeError):
                    # h5py's errors on damaged metadata (OSError, or RuntimeError/KeyError/... from
                    # damaged object headers, B-trees and heaps)
                    with open(self.path, "rb") as fh:
                        if not fh.read(4) == b"\x89HDF":
                            raise MapError(f"{self.path} exists and is not a BER map; choose another --out") from None
                    # An HDF5 file damaged by a kill during a write: set aside, rebuilt from the journal.
                    self.damaged = self.path.with_name(self.path.name + f".damaged-{os.getpid()}")
                    self.path.rename(self.damaged)
            self._check_journal()  # after the file's identity: a refused run leaves nothing behind
            if not self.path.exists():
                self._create()
            self._recover_journal()
            with h5py.File(self.path, "r", locking=False) as fh:
                self.done = {k for k, g in fh["points"].items() if g.attrs.get("complete", False)}
        except BaseException:
            self.release()
            raise
        return set(self.done)

    def _check_journal(self) -> None:
        """Create the journal, or check that an existing one belongs to this sweep."""
        stamp = self.journal / "identity.json"
        wanted = json.dumps(self.identity, sort_keys=True, default=str)
        if self.journal.exists() and stamp.exists():
            if stamp.read_text() != wanted:
                raise MapError(
                    f"the journal {self.journal} belongs to a different sweep; "
                    "rerun that sweep's command to finish it, or remove the journal"
                )
            return
        self.journal.mkdir(exist_ok=True)
        write_text(stamp, wanted)

    def _create(self) -> None:
        with h5py.File(self.path, "w", locking=False) as fh:
            fh.attrs["format"] = FORMAT
            fh.attrs["format_version"] = FORMAT_VERSION
            fh.attrs["created_utc"] = utc_now()
            fh.attrs["software"] = self.meta.get("software", "")
            for name in ("bench", "dimm", "geometry", "config", "patterns"):
                fh.attrs[f"{name}_json"] = json.dumps(self.meta.get(name, {}), sort_keys=True, default=str)
            fh.attrs["identity_json"] = json.dumps(self.identity, sort_keys=True, default=str)
            fh.attrs["units_json"] = json.dumps(UNITS, sort_keys=True)
            fh.create_group("points")

    def _check_existing(self) -> None:
        with h5py.File(self.path, "a", locking=False) as fh:
            try:
                _check_global_heaps(self.path)  # before any string is read: libhdf5 would hang
            except MapError as exc:
                raise OSError(str(exc)) from None
            if fh.attrs.get("format") != FORMAT:
                raise MapError(f"{self.path} exists and is not a BER map; choose another --out")
            stored = json.loads(fh.attrs.get("identity_json", "{}"))
            if not isinstance(stored, dict):
                stored = {"identity_json": stored}
            wanted = json.loads(json.dumps(self.identity, sort_keys=True, default=str))
            if stored != wanted:
                diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
                raise MapError(
                    f"{self.path} holds a different sweep (differs in {', '.join(diff)}); "
                    "choose another --out or rerun the original command to resume it"
                )
            for key in [k for k, g in fh["points"].items() if not g.attrs.get("complete", False)]:
                del fh["points"][key]  # interrupted while writing: measured again

    def _recover_journal(self) -> None:
        entries = sorted(self.journal.glob("*.npz"))
        if not entries:
            return
        with h5py.File(self.path, "a", locking=False) as fh:
            points = fh["points"]
            for entry in entries:
                key = entry.stem
                if key in points and points[key].attrs.get("complete", False):
                    continue
                if key in points:
                    del points[key]
                try:
                    point = _load_journal(entry)
                except (OSError, ValueError, KeyError):
                    entry.unlink(missing_ok=True)  # torn journal write: the point is measured again
                    continue
                _write_point(points.create_group(key), point)
                self.recovered_from_journal += 1

    # Writing -----------------------------------------------------------------------------

    def write(self, point: PointData) -> None:
        """Journal and store one finished point (flushed and closed before returning)."""
        if not self._locked:
            raise LockError("MapWriter.write before open()")
        _save_journal(self.journal / f"{point.key}.npz", point)
        with h5py.File(self.path, "a", locking=False) as fh:
            points = fh["points"]
            if point.key in points:
                del points[point.key]
            _write_point(points.create_group(point.key), point)
        self.done.add(point.key)

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Subscribe to a sweep's documents (:func:`profiler.engine.run_sweep`).

        ``"start"`` opens the map if :meth:`open` was not called (a resume then measures the
        stored points again, overwriting them: call :meth:`open` first and pass its keys as
        ``skip``); ``"point"`` stores the point (:meth:`write`); ``"stop"`` releases the lock and,
        when the exit status is ``"success"``, drops the journal (:meth:`finish`).
        """
        if name == "start":
            if not self._locked:
                self.open()
        elif name == "point":
            self.write(doc["data"])
        elif name == "stop":
            self.finish(doc.get("exit_status") == "success")

    def finish(self, complete: bool) -> None:
        """Release the lock; when the whole plan is stored, drop the journal."""
        try:
            if complete and self.journal.exists():
                shutil.rmtree(self.journal, ignore_errors=True)
        finally:
            self.release()


def _save_journal(path: Path, point: PointData) -> None:
    """One journal entry, written atomically (complete or absent; ``softmc_host.files.atomic_write``)."""
    attrs = np.array(json.dumps({"key": point.key, **point.attrs}, default=float))
    atomic_write(path, lambda fh: np.savez_compressed(fh, attrs=attrs, **point.arrays()))


def _load_journal(path: Path) -> PointData:
    with np.load(path, allow_pickle=False) as data:
        attrs = json.loads(str(data["attrs"]))
        key = attrs.pop("key")
        return PointData(key=key, attrs=attrs, **{name: data[name] for name in _ARRAYS})


# Reading ------------------------------------------------------------------------------------------
#
# Every problem of a map (a missing or wrongly typed member, values out of range, counts that
# contradict each other, damaged HDF5 metadata) becomes one MapError naming the file, the point
# and the member; docs/ber-map-format.md lists what is required and checked.

#: Largest geometry a map may declare (the ``errors`` fields are u1 bank, u4 row; W <= 2^19 bits).
MAX_BANKS = 256
MAX_ROWS = 1 << 32
MAX_ROW_BYTES = 1 << 16
MAX_TCK_NS = 1000.0
#: Required file attributes and the JSON objects every reader relies on.
REQUIRED_FILE_ATTRS = ("format", "format_version", "geometry_json", "patterns_json")
#: Required point attributes (besides ``complete``, without which a group is not a point).
REQUIRED_POINT_ATTRS = ("index", "vdd_v", "trcd_ns", "trp_ns", "temp_c", "pattern", "rep", "errors_truncated")
_KNOWN_JSON = ("bench", "dimm", "geometry", "config", "patterns", "units", "identity")
# (attribute, lowest, highest, NaN allowed): NaN stands for "not set by the sweep" / "not measured".
_FLOAT_ATTRS = {
    "vdd_v": (0.0, 10.0),
    "trcd_ns": (0.0, 1e6),
    "trp_ns": (0.0, 1e6),
    "tras_ns": (0.0, 1e6),
    "temp_c": (-273.15, 1000.0),
    "effective_trcd_ns": (0.0, 1e6),
    "effective_trp_ns": (0.0, 1e6),
    "effective_tras_ns": (0.0, 1e6),
    "measured_vdd_v": (-1e3, 1e3),
    "measured_temp_c": (-273.15, 1000.0),
    "supply_current_a": (-1e3, 1e3),
    "duration_s": (0.0, 1e9),
    "trefi_ms": (0.0, 1e9),
    "effective_trefi_ms": (0.0, 1e9),
    "hold_ms": (0.0, 1e12),
}
_TEXT_ATTRS = ("pattern", "started_utc", "finished_utc")
_ATTR_CLASSES = (h5py.h5t.INTEGER, h5py.h5t.FLOAT, h5py.h5t.STRING, h5py.h5t.ENUM)
# What h5py and libhdf5 raise on damaged files and odd objects; wrapped into MapError.
_H5_ERRORS = (OSError, RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError,
              OverflowError, MemoryError, SystemError, LookupError)
# A dataset claiming more than this many bytes per stored byte (and over 1 MiB) is damaged:
# deflate cannot compress more than about 1032:1.
_MAX_EXPANSION = 2048
_MISSING: Any = object()


def _one_line(text: object) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip()) or "(no message)"


def _show(name: str) -> str:
    return name if name.isprintable() and name.strip() == name and name else ascii(name)


def _kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} ({value.dtype})"
    if isinstance(value, (bool, np.bool_)):
        return "a boolean"
    if isinstance(value, np.generic):
        return f"a {value.dtype} value"
    return f"a {type(value).__name__}"


class _Guard:
    """Turns h5py's and libhdf5's exceptions inside the block into a MapError about ``member``."""

    def __init__(self, where: str, member: str) -> None:
        self.where, self.member = where, member

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, MapError) or not isinstance(exc, _H5_ERRORS):
            return False
        raise MapError(f"{self.where}: {self.member}: cannot be read ({type(exc).__name__}: {_one_line(exc)})") from None


def _attr(obj: Any, name: str, where: str) -> Any:
    """The raw value of an attribute (``_MISSING`` when absent); unsupported HDF5 types refused."""
    with _Guard(where, f"attribute {name}"):
        if name not in obj.attrs:
            return _MISSING
        cls = obj.attrs.get_id(name).get_type().get_class()
        if cls not in _ATTR_CLASSES:
            raise MapError(f"{where}: attribute {name}: unsupported HDF5 type class {cls} "
                           "(numbers, strings and booleans only)")
        return obj.attrs[name]


def _plain(value: Any) -> Any:
    """An attribute value as Python data: numpy scalars unwrapped, byte strings decoded."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _text(value: Any, where: str, name: str) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise MapError(f"{where}: attribute {name}: is not UTF-8 text") from None
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "OSU":
        return _text(value[()], where, name)
    if not isinstance(value, str):
        raise MapError(f"{where}: attribute {name}: must be a string, got {_kind(value)}")
    return value


def _integer(value: Any, where: str, name: str, lo: int, hi: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise MapError(f"{where}: attribute {name}: must be an integer, got {_kind(value)}")
    number = int(value)
    if not lo <= number <= hi:
        raise MapError(f"{where}: attribute {name}: {number} is outside [{lo}, {hi}]")
    return number


def _number(value: Any, where: str, name: str, lo: float, hi: float) -> float:
    """A float attribute: finite and within [lo, hi], or NaN (not set / not measured)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise MapError(f"{where}: attribute {name}: must be a number, got {_kind(value)}")
    number = float(value)
    if math.isnan(number):
        return math.nan
    if not lo <= number <= hi:
        raise MapError(f"{where}: attribute {name}: {number!r} is outside [{lo:g}, {hi:g}] (NaN: not set)")
    return number


def _boolean(value: Any, where: str, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    raise MapError(f"{where}: attribute {name}: must be a boolean, got {_kind(value)}")


def _json_object(text: Any, where: str, name: str) -> dict[str, Any]:
    text = _text(text, where, name)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MapError(f"{where}: attribute {name}: not valid JSON ({_one_line(exc)})") from None
    if not isinstance(value, dict):
        raise MapError(f"{where}: attribute {name}: must be a JSON object, got {type(value).__name__}")
    return value


def _json_int(doc: dict[str, Any], key: str, where: str, lo: int, hi: int) -> int:
    value = doc.get(key, _MISSING)
    if value is _MISSING:
        raise MapError(f"{where}: {key} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise MapError(f"{where}: {key} must be an integer in [{lo}, {hi}], got {_short_json(value)}")
    return value


def _short_json(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_geometry(geometry: dict[str, Any], where: str) -> None:
    where = f"{where}: geometry_json"
    _json_int(geometry, "banks", where, 1, MAX_BANKS)
    _json_int(geometry, "rows", where, 1, MAX_ROWS)
    row_bytes = _json_int(geometry, "row_bytes", where, 8, MAX_ROW_BYTES)
    if row_bytes % 8:
        raise MapError(f"{where}: row_bytes must be a multiple of 8 (the 64-bit bus), got {row_bytes}")
    if "tck_ns" in geometry:
        tck = geometry["tck_ns"]
        if isinstance(tck, bool) or not isinstance(tck, (int, float)) or not 0 < tck <= MAX_TCK_NS:
            raise MapError(f"{where}: tck_ns must be a number in (0, {MAX_TCK_NS:g}], got {_short_json(tck)}")


def _check_bench(bench: dict[str, Any], where: str) -> None:
    supply = bench.get("supply", _MISSING)
    if supply is _MISSING:
        return
    if not isinstance(supply, dict):
        raise MapError(f"{where}: bench_json: supply must be a JSON object, got {_short_json(supply)}")
    if "nominal_v" in supply:
        v = supply["nominal_v"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 10:
            raise MapError(f"{where}: bench_json: supply.nominal_v must be a number in (0, 10] V, got {_short_json(v)}")


def _check_patterns(patterns: dict[str, Any], where: str) -> None:
    for name, definition in patterns.items():
        if not isinstance(definition, str) or not definition.strip():
            raise MapError(f"{where}: patterns_json: pattern {_show(name)} needs a definition string, "
                           f"got {_short_json(definition)}")


def _member(group: Any, name: str, where: str, what: str) -> Any:
    """``group[name]`` when it is a hard link (None when absent); other links are refused."""
    with _Guard(where, what):
        link = group.get(name, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise MapError(f"{where}: {what} is a {type(link).__name__} (only plain members are read)")
        return group[name]


def _dataset(group: Any, name: str, where: str, ndim: int) -> h5py.Dataset:
    """A required dataset of integers (or the ``errors`` compound) with ``ndim`` dimensions."""
    obj = _member(group, name, where, f"dataset {name}")
    if obj is None:
        raise MapError(f"{where}: dataset {name} is missing")
    if not isinstance(obj, h5py.Dataset):
        raise MapError(f"{where}: {name} is a {type(obj).__name__.lower()}, not a dataset")
    with _Guard(where, f"dataset {name}"):
        shape, dtype = obj.shape, obj.dtype
    if shape is None or len(shape) != ndim:
        raise MapError(f"{where}: dataset {name} must be {ndim}-dimensional, has shape {shape}")
    if name == "errors":
        fields = dtype.fields or {}
        for field in ERROR_DTYPE.names or ():
            if field not in fields or fields[field][0].kind not in "ui" or fields[field][0].shape != ():
                raise MapError(f"{where}: dataset errors must be a compound of integer fields bank, row, bit, dir "
                               f"(got {dtype})")
    elif dtype.kind not in "ui" or dtype.shape != () or dtype.fields is not None:
        raise MapError(f"{where}: dataset {name} must hold integers, got {dtype}")
    return obj


def _read(dataset: h5py.Dataset, name: str, where: str, expansion_check: bool = True) -> np.ndarray:
    """The dataset's data, after checking it stores what its shape claims."""
    with _Guard(where, f"dataset {name}"):
        nbytes = math.prod(dataset.shape) * dataset.dtype.itemsize
        if nbytes:
            stored = dataset.id.get_storage_size()
            if stored == 0:
                raise MapError(f"{where}: dataset {name} holds no data (shape {dataset.shape} but nothing written)")
            if expansion_check and nbytes > (1 << 20) and nbytes > _MAX_EXPANSION * stored:
                raise MapError(f"{where}: dataset {name} claims {nbytes:,} bytes but stores {stored:,}: damaged")
        return np.asarray(dataset[()])


def _bounded(array: np.ndarray, name: str, where: str, hi: int, dtype: str) -> np.ndarray:
    """``array`` as ``dtype`` after checking 0 <= every value <= hi."""
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0:
            raise MapError(f"{where}: dataset {name}: negative value {low}")
        if high > hi:
            raise MapError(f"{where}: dataset {name}: value {high} exceeds {hi}")
    return array.astype(dtype)


def _check_global_heaps(path: Path) -> None:
    """Refuse a file with a global heap collection that libhdf5 would loop on forever.

    Variable-length strings live in global heap collections (``GCOL``).  libhdf5 walks the
    objects of a collection by their sizes, and a free-space object of size 0 (a damaged
    size field) makes that walk stand still: reading any string of the collection then never
    returns (libhdf5 2.0); a size running past the collection sends it outside its buffer.
    This walks every collection the same way first and raises MapError where the objects do
    not tile the collection exactly.  Other damage is left to libhdf5, which reports it.
    """
    import mmap

    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 16:
                return
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                start = data.find(b"GCOL")
                while start >= 0:
                    if start + 16 <= size and data[start + 4] == 1:
                        length = int.from_bytes(data[start + 8 : start + 16], "little")
                        end = start + length
                        if 4096 <= length and end <= size:
                            p = start + 16
                            while p < end:
                                if p + 16 > end:
                                    break  # a tail too small for an object: free space
                                index = int.from_bytes(data[p : p + 2], "little")
                                object_size = int.from_bytes(data[p + 8 : p + 16], "little")
                                need = 16 + (object_size + 7) // 8 * 8 if index else object_size
                                if need % (1 << 64) == 0 or p + need > end:
                                    raise MapError(f"{path}: damaged HDF5 global heap at byte {start} (object "
                                                   f"{index} of {object_size} bytes does not fit): its strings "
                                                   "cannot be read")
                                p += need
                    start = data.find(b"GCOL", start + 4)
    except OSError:
        return  # not readable as a file: h5py says why


class BerMap:
    """Read access to a BER map (opens the file per call, without HDF5 file locking, so it can be
    read while a sweep appends: points still being written have no ``complete`` mark and are skipped).

    Every malformed map raises one :class:`MapError` naming the file, the point and the member:
    the file-level checks happen here, a point's when it is listed (:meth:`keys`), summarised
    (:meth:`summary`) or read (:meth:`point`); :meth:`check` reads and checks everything.

    Raises
    ------
    MapError
        The file is not HDF5, not a BER map, of a newer format version, or its metadata is
        missing or malformed (``docs/ber-map-format.md``, section 1).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        where = str(self.path)
        with self._open() as fh:
            _check_global_heaps(self.path)
            fmt = _attr(fh, "format", where)
            if fmt is _MISSING:
                raise MapError(f"{where} is not a BER map (format attribute missing)")
            if not isinstance(fmt, (str, bytes, np.bytes_)) or _plain(fmt) != FORMAT:
                raise MapError(f"{where} is not a BER map (format is {_short_json(_plain(fmt))}, not {FORMAT!r})")
            version = _attr(fh, "format_version", where)
            if version is _MISSING:
                raise MapError(f"{where}: attribute format_version is missing")
            version = _integer(version, where, "format_version", 1, 2**62)
            if version > FORMAT_VERSION:
                raise MapError(f"{where} has format version {version}; this software reads up to {FORMAT_VERSION}")
            attrs: dict[str, Any] = {}
            meta: dict[str, Any] = {}
            with _Guard(where, "the file attributes"):
                names = list(fh.attrs.keys())
            for name in names:
                if name.endswith("_json") and name[:-5] in _KNOWN_JSON:
                    value = _attr(fh, name, where)
                    meta[name[:-5]] = _json_object(value, where, name)
                    continue
                try:
                    value = _attr(fh, name, where)
                except MapError:
                    continue  # an attribute this reader does not know, of a type it does not read
                if name.endswith("_json"):
                    try:
                        meta[name[:-5]] = json.loads(_text(value, where, name))
                    except (MapError, ValueError, RecursionError):
                        pass  # unknown and unreadable: tolerated
                    continue
                attrs[name] = _plain(value)
            for name in ("software", "created_utc"):
                if name in attrs:
                    _text(attrs[name], where, name)
            for name in ("geometry", "patterns"):
                if name not in meta:
                    raise MapError(f"{where}: attribute {name}_json is missing (required, see docs/ber-map-format.md)")
            _check_geometry(meta["geometry"], where)
            _check_patterns(meta["patterns"], where)
            _check_bench(meta.get("bench", {}), where)
            meta.setdefault("bench", {})
            meta.setdefault("dimm", {})
            self._points_group(fh)
        self.attrs = attrs
        self.meta = meta

    # Files and groups -------------------------------------------------------------------------

    def _open(self) -> Any:
        """The file, opened for reading; a MapError for anything that goes wrong inside."""
        return _OpenMap(self.path)

    def _points_group(self, fh: h5py.File) -> h5py.Group:
        points = _member(fh, "points", str(self.path), "/points")
        if points is None:
            raise MapError(f"{self.path} has no /points group")
        if not isinstance(points, h5py.Group):
            raise MapError(f"{self.path}: /points is a {type(points).__name__.lower()}, not a group")
        return points

    def _where(self, key: str) -> str:
        return f"{self.path}: point {_show(key)}"

    @property
    def geometry(self) -> dict[str, Any]:
        """Banks, rows, row_bytes (and tck_ns, if recorded) of the DIMM; checked when the map was opened."""
        return self.meta["geometry"]

    @property
    def row_bits(self) -> int:
        """W, the bits of one row: ``row_bytes * 8``."""
        return int(self.geometry["row_bytes"]) * 8

    def _complete(self, group: Any, key: str) -> bool:
        value = _attr(group, "complete", self._where(key))
        return value is not _MISSING and _boolean(value, self._where(key), "complete")

    def _group(self, points: h5py.Group, key: str) -> h5py.Group:
        where = self._where(key)
        group = _member(points, key, where, "group")
        if group is None:
            raise MapError(f"{self.path} has no point {key!r}")
        if not isinstance(group, h5py.Group):
            raise MapError(f"{where}: /points/{_show(key)} is a {type(group).__name__.lower()}, not a point group")
        return group

    def _names(self, points: h5py.Group) -> list[str]:
        with _Guard(str(self.path), "/points"):
            return list(points.keys())

    # Points -----------------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Keys of the complete points, in measurement order (their ``index``)."""
        found = []
        with self._open() as fh:
            points = self._points_group(fh)
            for key in self._names(points):
                group = self._group(points, key)
                if not self._complete(group, key):
                    continue
                index = _attr(group, "index", self._where(key))
                if index is _MISSING:
                    raise MapError(f"{self._where(key)}: attribute index is missing")
                found.append((_integer(index, self._where(key), "index", 0, 2**63 - 1), key))
        return [k for _, k in sorted(found)]

    def _point_attrs(self, group: h5py.Group, key: str) -> dict[str, Any]:
        where = self._where(key)
        with _Guard(where, "attributes"):
            names = list(group.attrs.keys())
        missing = [n for n in REQUIRED_POINT_ATTRS if n not in names]
        if missing:
            raise MapError(f"{where}: attribute {missing[0]} is missing")
        attrs: dict[str, Any] = {}
        for name in names:
            if name in _FLOAT_ATTRS:
                attrs[name] = _number(_attr(group, name, where), where, name, *_FLOAT_ATTRS[name])
            elif name in _TEXT_ATTRS:
                attrs[name] = _text(_attr(group, name, where), where, name)
            elif name in ("index", "rep"):
                attrs[name] = _integer(_attr(group, name, where), where, name, 0, 2**63 - 1)
            elif name in ("errors_truncated", "complete"):
                attrs[name] = _boolean(_attr(group, name, where), where, name)
            else:
                try:
                    attrs[name] = _plain(_attr(group, name, where))
                except MapError:
                    continue  # an attribute this reader does not know, of a type it does not read
        if not attrs["pattern"].strip():
            raise MapError(f"{where}: attribute pattern is empty")
        if not math.isnan(attrs["vdd_v"]) and attrs["vdd_v"] <= 0:
            raise MapError(f"{where}: attribute vdd_v: {attrs['vdd_v']!r} V is not a supply voltage (NaN: not set)")
        return attrs

    def _read_point(self, points: h5py.Group, key: str, positions: bool) -> PointData:
        """One point, checked; with ``positions`` False the error positions and bit-line arrays
        are checked for type and shape but not read (they come back empty)."""
        where = self._where(key)
        group = self._group(points, key)
        if not self._complete(group, key):
            raise MapError(f"{where}: is incomplete (no complete attribute: written when a sweep was killed)")
        attrs = self._point_attrs(group, key)
        geo = self.geometry
        banks, n_rows, row_bits = int(geo["banks"]), int(geo["rows"]), self.row_bits
        # Per-row counts.
        rows_ds = _dataset(group, "rows", where, 2)
        if rows_ds.shape[1] != 2 or rows_ds.shape[0] < 1:
            raise MapError(f"{where}: dataset rows must have shape (N, 2) with N >= 1, has {rows_ds.shape}")
        n = rows_ds.shape[0]
        small = {name: _dataset(group, name, where, 1) for name in ("bits_tested", "flips_0to1", "flips_1to0")}
        for name, dataset in small.items():
            if dataset.shape != (n,):
                raise MapError(f"{where}: dataset {name} has shape {dataset.shape}, rows has {n} rows")
        rows = _read(rows_ds, "rows", where)
        if rows.size and (int(rows.min()) < 0 or int(rows[:, 0].max()) >= banks or int(rows[:, 1].max()) >= n_rows):
            raise MapError(f"{where}: dataset rows: [bank, row] outside the geometry's {banks} banks x {n_rows} rows")
        rows = rows.astype("<u4")
        codes = rows[:, 0].astype(np.int64) * n_rows + rows[:, 1].astype(np.int64)
        if np.unique(codes).size != n:
            raise MapError(f"{where}: dataset rows lists a row twice")
        bits = _bounded(_read(small["bits_tested"], "bits_tested", where), "bits_tested", where, row_bits, "<u8")
        f01 = _bounded(_read(small["flips_0to1"], "flips_0to1", where), "flips_0to1", where, row_bits, "<u4")
        f10 = _bounded(_read(small["flips_1to0"], "flips_1to0", where), "flips_1to0", where, row_bits, "<u4")
        over = np.flatnonzero(f01.astype(np.int64) + f10 > bits.astype(np.int64))
        if over.size:
            i = int(over[0])
            raise MapError(f"{where}: flips_0to1 + flips_1to0 exceed bits_tested in bank {rows[i, 0]} row {rows[i, 1]} "
                           f"({int(f01[i]) + int(f10[i])} > {int(bits[i])})")
        total_flips = int(f01.sum(dtype=np.int64) + f10.sum(dtype=np.int64))
        # Error positions.
        errors_ds = _dataset(group, "errors", where, 1)
        m = errors_ds.shape[0]
        truncated = attrs["errors_truncated"]
        if m > total_flips or (not truncated and m != total_flips):
            raise MapError(f"{where}: dataset errors holds {m} positions but the row counts have {total_flips} flips"
                           + ("" if truncated else " (and errors_truncated is false)"))
        # Bit lines.
        bitline: dict[str, np.ndarray] = {}
        line_banks = None
        measured = np.unique(rows[:, 0])
        for name in ("bitline_0to1", "bitline_1to0"):
            dataset = _dataset(group, name, where, 2)
            value = _attr(dataset, "banks", f"{where}: dataset {name}")
            if value is _MISSING:
                raise MapError(f"{where}: dataset {name}: attribute banks is missing")
            these = np.atleast_1d(np.asarray(value))
            if these.ndim != 1 or these.dtype.kind not in "ui" or these.size == 0:
                raise MapError(f"{where}: dataset {name}: attribute banks must be a 1-D integer array, got {_kind(value)}")
            if int(these.min()) < 0 or int(these.max()) >= banks or np.unique(these).size != these.size:
                raise MapError(f"{where}: dataset {name}: attribute banks must list distinct banks below {banks}")
            if not np.array_equal(np.sort(these), measured):
                raise MapError(f"{where}: dataset {name}: attribute banks {these.tolist()[:8]} are not the measured "
                               f"banks {measured.tolist()[:8]}")
            if line_banks is not None and not np.array_equal(these, line_banks):
                raise MapError(f"{where}: datasets bitline_0to1 and bitline_1to0 have different banks attributes")
            line_banks = these
            if dataset.shape != (these.size, row_bits):
                raise MapError(f"{where}: dataset {name} has shape {dataset.shape}, expected ({these.size}, {row_bits}) "
                               "(banks x row_bytes * 8)")
            if positions:
                bitline[name] = _bounded(_read(dataset, name, where, expansion_check=False), name, where,
                                         2**32 - 1, "<u4")
            else:
                bitline[name] = np.zeros((0, row_bits), "<u4")
        assert line_banks is not None
        if positions:
            errors = self._errors(errors_ds, where, rows, codes, f01.astype(np.int64) + f10, truncated)
        else:
            errors = np.zeros(0, ERROR_DTYPE)
        return PointData(
            key=key,
            attrs={k: v for k, v in attrs.items() if k != "complete"},
            rows=rows,
            bits_tested=bits,
            flips_0to1=f01,
            flips_1to0=f10,
            bitline_banks=line_banks.astype("u1"),
            bitline_0to1=bitline["bitline_0to1"],
            bitline_1to0=bitline["bitline_1to0"],
            errors=errors,
        )

    def _errors(self, dataset: h5py.Dataset, where: str, rows: np.ndarray, codes: np.ndarray,
                row_flips: np.ndarray, truncated: bool) -> np.ndarray:
        raw = _read(dataset, "errors", where)
        n_rows, row_bits = int(self.geometry["rows"]), self.row_bits
        out = np.zeros(raw.shape[0], ERROR_DTYPE)
        if not raw.size:
            return out
        for field, hi in (("bank", MAX_BANKS - 1), ("row", n_rows - 1), ("bit", row_bits - 1), ("dir", 1)):
            column = raw[field]
            if int(column.min()) < 0 or int(column.max()) > hi:
                bad = int(column.max()) if int(column.max()) > hi else int(column.min())
                raise MapError(f"{where}: dataset errors: {field} {bad} is outside [0, {hi}]")
            out[field] = column
        error_codes = out["bank"].astype(np.int64) * n_rows + out["row"].astype(np.int64)
        order = np.argsort(codes, kind="stable")
        slot = np.searchsorted(codes, error_codes, sorter=order)
        slot = np.minimum(slot, codes.size - 1)
        found = codes[order[slot]] == error_codes
        if not found.all():
            e = out[int(np.flatnonzero(~found)[0])]
            raise MapError(f"{where}: dataset errors: a flip in bank {e['bank']} row {e['row']}, a row not in rows")
        per_row = np.bincount(order[slot], minlength=codes.size)
        over = np.flatnonzero(per_row > row_flips)
        if over.size:
            i = int(over[0])
            raise MapError(f"{where}: dataset errors: {int(per_row[i])} positions in bank {rows[i, 0]} row {rows[i, 1]}, "
                           f"which has {int(row_flips[i])} flips")
        return out

    def point(self, key: str, positions: bool = True) -> PointData:
        """Load one complete point, checked.

        Parameters
        ----------
        key : str
            The point's key (:meth:`keys`).
        positions : bool
            Read the error positions and bit-line arrays (default).  With False they are only
            checked for type and shape and come back empty: the per-row counts alone.
        """
        with self._open() as fh:
            return self._read_point(self._points_group(fh), key, positions)

    def points(self) -> Iterator[PointData]:
        """All complete points, in measurement order."""
        for key in self.keys():
            yield self.point(key)

    def summary(self) -> list[dict[str, Any]]:
        """One row per point: attributes, ``key``, ``bits``, ``flips_0to1``, ``flips_1to0``, ``ber``
        (every per-row count checked; error positions and bit lines checked but not read)."""
        out = []
        keys = self.keys()
        with self._open() as fh:
            points = self._points_group(fh)
            for key in keys:
                p = self._read_point(points, key, positions=False)
                bits = int(p.bits_tested.sum(dtype=np.int64))
                f01, f10 = int(p.flips_0to1.sum(dtype=np.int64)), int(p.flips_1to0.sum(dtype=np.int64))
                row = {**p.attrs, "complete": True}
                row.update(key=key, bits=bits, flips_0to1=f01, flips_1to0=f10, ber=(f01 + f10) / max(1, bits))
                out.append(row)
        return out

    def check(self) -> int:
        """Read and check every complete point in full; return how many there are.

        Raises
        ------
        MapError
            The first problem found.
        """
        keys = self.keys()
        with self._open() as fh:
            points = self._points_group(fh)
            for key in keys:
                self._read_point(points, key, positions=True)
        return len(keys)


class _OpenMap:
    """``with _OpenMap(path) as fh``: the file open for reading; errors of HDF5 become MapError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh: h5py.File | None = None

    def __enter__(self) -> h5py.File:
        try:
            self.fh = h5py.File(self.path, "r", locking=False)
        except _H5_ERRORS as exc:
            raise MapError(f"cannot read BER map {self.path}: {_one_line(exc)}") from None
        return self.fh

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        try:
            if self.fh is not None:
                self.fh.close()
        except _H5_ERRORS:
            pass
        if exc is None or isinstance(exc, MapError) or not isinstance(exc, _H5_ERRORS):
            return False
        raise MapError(f"{self.path}: cannot be read ({type(exc).__name__}: {_one_line(exc)})") from None

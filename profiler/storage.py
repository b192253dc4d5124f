"""BER maps in HDF5: writing point by point with a journal and a lock, and reading them back.

Layout (``docs/ber-map-format.md`` has the full description)::

    /                         attrs: format = "eden-ber-map", format_version = 1,
                              software, created_utc, and JSON attrs bench_json, dimm_json,
                              geometry_json, config_json, patterns_json, units_json,
                              identity_json (the settings a resume must match)
    /points/<key>             one group per measured point; attrs: the settings
                              (vdd_v, trcd_ns, trp_ns, tras_ns, temp_c, pattern, rep),
                              effective timings, measured_vdd_v, measured_temp_c,
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
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

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
    """A file is not a readable BER map, or does not match the sweep that would write it."""


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
                except OSError:
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
        stamp.write_text(wanted)

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
            if fh.attrs.get("format") != FORMAT:
                raise MapError(f"{self.path} exists and is not a BER map; choose another --out")
            stored = json.loads(fh.attrs.get("identity_json", "{}"))
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

    def finish(self, complete: bool) -> None:
        """Release the lock; when the whole plan is stored, drop the journal."""
        try:
            if complete and self.journal.exists():
                shutil.rmtree(self.journal, ignore_errors=True)
        finally:
            self.release()


def _save_journal(path: Path, point: PointData) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, attrs=np.array(json.dumps({"key": point.key, **point.attrs}, default=float)), **point.arrays()
        )
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_journal(path: Path) -> PointData:
    with np.load(path, allow_pickle=False) as data:
        attrs = json.loads(str(data["attrs"]))
        key = attrs.pop("key")
        return PointData(key=key, attrs=attrs, **{name: data[name] for name in _ARRAYS})


class BerMap:
    """Read access to a BER map (opens the file per call, without HDF5 file locking, so it can be
    read while a sweep appends: points still being written have no ``complete`` mark and are skipped)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with h5py.File(self.path, "r", locking=False) as fh:
                if fh.attrs.get("format") != FORMAT:
                    raise MapError(f"{self.path} is not a BER map (format attribute missing)")
                version = int(fh.attrs.get("format_version", 0))
                if version > FORMAT_VERSION:
                    raise MapError(f"{self.path} has format version {version}; this software reads up to {FORMAT_VERSION}")
                self.attrs = {k: v for k, v in fh.attrs.items() if not k.endswith("_json")}
                self.meta = {k[:-5]: json.loads(v) for k, v in fh.attrs.items() if k.endswith("_json")}
        except OSError as exc:
            raise MapError(f"cannot read BER map {self.path}: {str(exc).splitlines()[0]}") from None

    @property
    def geometry(self) -> dict[str, Any]:
        """Banks, rows, row_bytes of the DIMM."""
        return self.meta.get("geometry", {})

    def keys(self) -> list[str]:
        """Keys of the complete points, in measurement order."""
        with h5py.File(self.path, "r", locking=False) as fh:
            if "points" not in fh:
                raise MapError(f"{self.path} has no /points group")
            groups = [(g.attrs.get("index", 0), k) for k, g in fh["points"].items() if g.attrs.get("complete", False)]
        return [k for _, k in sorted(groups)]

    def point(self, key: str) -> PointData:
        """Load one point."""
        with h5py.File(self.path, "r", locking=False) as fh:
            if key not in fh["points"]:
                raise MapError(f"{self.path} has no point {key!r}")
            g = fh["points"][key]
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in g.attrs.items() if k != "complete"}
            return PointData(
                key=key,
                attrs=attrs,
                rows=g["rows"][()],
                bits_tested=g["bits_tested"][()],
                flips_0to1=g["flips_0to1"][()],
                flips_1to0=g["flips_1to0"][()],
                bitline_banks=g["bitline_0to1"].attrs["banks"][()],
                bitline_0to1=g["bitline_0to1"][()],
                bitline_1to0=g["bitline_1to0"][()],
                errors=g["errors"][()],
            )

    def points(self) -> Iterator[PointData]:
        """All complete points, in measurement order."""
        for key in self.keys():
            yield self.point(key)

    def summary(self) -> list[dict[str, Any]]:
        """One row per point: settings, bits tested, flips by direction and BER (no large arrays read)."""
        out = []
        with h5py.File(self.path, "r", locking=False) as fh:
            for key in self.keys():
                g = fh["points"][key]
                bits = int(g["bits_tested"][()].sum())
                f01, f10 = int(g["flips_0to1"][()].sum()), int(g["flips_1to0"][()].sum())
                row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in g.attrs.items()}
                row.update(key=key, bits=bits, flips_0to1=f01, flips_1to0=f10, ber=(f01 + f10) / max(1, bits))
                out.append(row)
        return out

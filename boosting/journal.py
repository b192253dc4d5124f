"""The probe journal: every finished characterization task on disk, so an interrupted run resumes.

A tolerance search (:mod:`boosting.characterization`) is a sequence of decisions, each made from
the accuracies of a probe's error seeds; given the same accuracies it makes the same decisions.
The journal keeps every task's result the moment it finishes (one JSON line, flushed), keyed by
what determines it. A rerun of the same search reads the journal first: the tasks it holds are
answered from it without running, the others run, so the rerun replays the finished part of the
search at no cost and goes on where the interrupted one stopped, with the same result an
uninterrupted run gives. Format: ``docs/tolerance-format.md`` (section "Probe journal").

Key of a task
-------------
``sha256("<fingerprint>|<kind>|<spec>|<seed>")`` (first 32 hex digits), where

* ``fingerprint`` is the workload's :meth:`~boosting.characterization.NetworkWorkload.fingerprint`:
  a SHA-256 over the network's parameters and buffers, the test inputs and labels, the batch
  size and the calibration (so a retrained network, other samples or another calibration never
  match an old entry);
* ``kind`` is ``probe`` (an accuracy under errors), ``reference`` (the clean accuracy in the
  spec's format) or ``clean``;
* ``spec`` is the error spec as JSON (:func:`spec_identity`: model with its parameters, format,
  mitigation, seed, margin, overrides, layer types and DRAM layout);
* ``seed`` is the mask seed handed to the workload.

Entries of other fingerprints are kept and never match, so one journal may serve several
searches. A journal written by another toolkit version is started over (the injector may have
changed); ``fresh=True`` (the command's ``--fresh``) starts over in any case, e.g. after editing
the toolkit's code in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from concurrent.futures import Future
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["JOURNAL_FORMAT", "JOURNAL_VERSION", "JournalError", "ProbeJournal", "spec_identity", "task_key"]

log = logging.getLogger(__name__)

JOURNAL_FORMAT = "eden-probe-journal"
"""The ``format`` of a journal's first line."""

JOURNAL_VERSION = 1
"""The ``format_version`` this module writes and reads."""

KINDS = ("probe", "reference", "clean")


class JournalError(ValueError):
    """A file that is not a probe journal, one of an unknown version, or one that cannot be written."""


def _toolkit_version() -> str:
    from softmc_host import __version__

    return str(__version__)


def spec_identity(spec: Any) -> str:
    """The JSON text naming an error spec in task keys (every field that changes a probe's result).

    Parameters
    ----------
    spec : ErrorSpec or None
        None (the clean accuracy) gives ``"null"``.

    Returns
    -------
    str
    """
    if spec is None:
        return "null"
    from boosting.records import spec_to_dict

    doc = spec_to_dict(spec)
    layout = spec.layout
    doc["layout"] = asdict(layout) if is_dataclass(layout) else repr(layout)
    return json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))


def task_key(fingerprint: str, kind: str, spec_json: str, seed: int) -> str:
    """The journal key of one task (module docstring)."""
    if kind not in KINDS:
        raise JournalError(f"task kind must be one of {KINDS}, got {kind!r}")
    text = f"{fingerprint}|{kind}|{spec_json}|{int(seed)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class ProbeJournal:
    """An append-only file of finished tasks, ``{"k": key, "acc": float, "n": int}`` per line.

    Parameters
    ----------
    path : str or Path
        The journal (created with its folder if missing; by convention ``<document>.probes.jsonl``).
    fresh : bool
        Discard what the file holds and start over.

    Attributes
    ----------
    path : Path
    loaded : int
        Entries read from the file when it was opened.
    hits : int
        Tasks answered from the journal since.
    written : int
        Tasks recorded since.

    Raises
    ------
    JournalError
        The file exists and is not a probe journal (or of an unknown version), or cannot be
        written.
    """

    def __init__(self, path: Union[str, Path], *, fresh: bool = False) -> None:
        self.path = Path(path)
        self.loaded = 0
        self.hits = 0
        self.written = 0
        self._entries: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._fh: Any = None
        if self.path.is_dir():
            raise JournalError(f"probe journal {self.path} is a directory")
        start_over = fresh or not self.path.exists() or self.path.stat().st_size == 0
        if not start_over:
            start_over = not self._read()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if start_over:
                self._entries.clear()
                self.loaded = 0
                self._fh = open(self.path, "w", encoding="utf-8")
                header = {"format": JOURNAL_FORMAT, "format_version": JOURNAL_VERSION, "toolkit": _toolkit_version()}
                self._fh.write(json.dumps(header) + "\n")
                self._fh.flush()
            else:
                self._fh = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise JournalError(f"cannot write the probe journal {self.path}: {exc.strerror or exc}") from None

    def _read(self) -> bool:
        """Load the entries; False if the file is to be started over (another toolkit version)."""
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise JournalError(f"cannot read the probe journal {self.path}: {exc.strerror or exc}") from None
        lines = raw.split(b"\n")
        try:
            header = json.loads(lines[0].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            header = None
        if not isinstance(header, dict) or header.get("format") != JOURNAL_FORMAT:
            raise JournalError(f"{self.path} is not a probe journal (first line is not an {JOURNAL_FORMAT} header); "
                               "name another file or delete it")
        if header.get("format_version") != JOURNAL_VERSION:
            raise JournalError(f"probe journal {self.path} has format_version {header.get('format_version')!r}; "
                               f"this toolkit reads {JOURNAL_VERSION}")
        if header.get("toolkit") != _toolkit_version():
            log.warning("probe journal %s was written by toolkit %s (this is %s): starting it over", self.path,
                        header.get("toolkit"), _toolkit_version())
            return False
        body = lines[1:]
        if body and body[-1] == b"":
            body = body[:-1]
        elif body:  # a last line without its newline: cut short by an interruption
            log.debug("probe journal %s: dropped an unfinished last line", self.path)
            body = body[:-1]
            self._truncate_to(len(raw) - len(lines[-1]))
        bad = 0
        for line in body:
            try:
                entry = json.loads(line.decode("utf-8"))
                key, acc, n = entry["k"], float(entry["acc"]), int(entry["n"])
                if not isinstance(key, str):
                    raise TypeError(key)
            except (UnicodeDecodeError, ValueError, KeyError, TypeError):
                bad += 1
                continue
            self._entries[key] = (acc, n)
        if bad:
            log.warning("probe journal %s: skipped %d unreadable line(s); those tasks run again", self.path, bad)
        self.loaded = len(self._entries)
        return True

    def _truncate_to(self, size: int) -> None:
        try:
            with open(self.path, "r+b") as fh:
                fh.truncate(size)
        except OSError as exc:
            raise JournalError(f"cannot repair the probe journal {self.path}: {exc.strerror or exc}") from None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Optional[tuple[float, int]]:
        """The recorded ``(accuracy, n_samples)`` of a task, or None (counted in :attr:`hits`)."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self.hits += 1
            return hit

    def put(self, key: str, accuracy: float, n_samples: int) -> None:
        """Record a finished task (one line, flushed; a key already held is not written again)."""
        with self._lock:
            if key in self._entries or self._fh is None:
                return
            acc, n = float(accuracy), int(n_samples)
            self._entries[key] = (acc, n)
            try:
                self._fh.write(json.dumps({"k": key, "acc": acc, "n": n}) + "\n")
                self._fh.flush()
            except OSError as exc:
                raise JournalError(f"cannot write the probe journal {self.path}: {exc.strerror or exc}") from None
            self.written += 1

    def record_when_done(self, key: str, future: Future) -> None:
        """Record ``future``'s ``(accuracy, n_samples)`` when it finishes successfully."""

        def done(f: Future) -> None:
            if f.cancelled() or f.exception() is not None:
                return
            acc, n = f.result()
            try:
                self.put(key, acc, n)
            except JournalError as exc:
                log.warning("%s", exc)

        future.add_done_callback(done)

    def close(self) -> None:
        """Flush to disk and close (idempotent)."""
        with self._lock:
            if self._fh is None:
                return
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError:
                pass
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ProbeJournal":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

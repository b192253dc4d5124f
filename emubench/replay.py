"""Replay of a recorded BER map: a DIMM whose errors are the ones measured.

``replay://path/to/map.h5`` opens an emulated bench (the same tester firmware,
supply and thermal controller, reached through the same wire) whose DIMM fails
where the map says the real one failed, so a sweep, a fit or a
hardware-in-the-loop run works offline on recorded data.

How a read is answered:

- The setting the DIMM sees (VDD from the supply, temperature from the thermal
  controller, tRCD of the RD, tRP of the activation) is matched against the
  recorded points.  A recorded setting within tolerance is used as it is.  A
  setting between two recorded points that differ in one swept parameter is
  interpolated: the milder point's failing cells fail, and of the cells only the
  harsher point shows, a share ``w`` (log-linear in the flip count, ``w`` the
  position between the two) fails, chosen in a fixed seeded order so that
  failures are nested as the setting moves.  Otherwise the nearest recorded point
  (in steps of 10 mV, 0.5 ns and 5 C) answers; settings milder than every
  recorded point read clean.
- A cell recorded as flipping 0->1 flips only while it holds 0, one recorded
  1->0 only while it holds 1; all patterns measured at a setting are merged.
- A row the map did not measure fails at its bank's recorded bit error rate and
  0->1 / 1->0 split, at positions drawn from a generator keyed by the row.
- The refresh interval (``trefi_ms`` of a map swept with ``--trefi-ms``) is matched
  exactly, not interpolated: a read while auto-refresh is set (SET_TREFI) so that
  every row is refreshed every X ms answers from the points recorded at X (within
  1 %); with no points at X, from the longest recorded interval below X, else the
  shortest recorded one.  A read with auto-refresh off answers from the points
  recorded without an interval, else from the shortest recorded interval.  A map
  without intervals answers every read as recorded, whatever the refresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from emubench.dimm import EmulatedDimm, Geometry, RowAccess, _own
from profiler.storage import BerMap, MapError
from softmc_host.session import REFRESH_COMMANDS_PER_WINDOW
from softmc_host.splitmix import GAMMA, mix64_array, uniform53

__all__ = ["ReplayDimm", "ReplayError", "check_replay_map", "replay_path"]

_TOLERANCE = {"vdd_v": 0.002, "trcd_ns": 0.01, "trp_ns": 0.01, "temp_c": 0.5}
_SCALE = {"vdd_v": 0.010, "trcd_ns": 0.5, "trp_ns": 0.5, "temp_c": 5.0}
_AXES = ("vdd_v", "trcd_ns", "trp_ns", "temp_c")
# Harsher means: lower VDD, shorter tRCD/tRP, higher temperature.
_HARSH_SIGN = {"vdd_v": -1.0, "trcd_ns": -1.0, "trp_ns": -1.0, "temp_c": 1.0}
# Refresh intervals are told apart to 1 %.
_REFRESH_TOLERANCE = 0.01


def _refresh_ms(row: dict) -> float | None:
    """A summary row's refresh interval (ms), None for a point measured without one."""
    value = row.get("trefi_ms")
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _cell_uniform(seed: int, bank: int, row: int, bits: np.ndarray) -> np.ndarray:
    """A fixed uniform number in [0, 1) per cell (splitmix64 of its address), independent of the others."""
    address = bits.astype(np.uint64) + np.uint64(((seed & 0xFFFF) << 48) | (bank << 40) | (row << 17))
    return uniform53(mix64_array(address * np.uint64(GAMMA)))


class ReplayError(MapError):
    """A replay address or map that cannot be served (a :class:`~profiler.storage.MapError`)."""


def replay_path(url: str) -> Path:
    """The map file of a ``replay://PATH`` address."""
    if not url.startswith("replay://"):
        raise ReplayError(f"not a replay address (replay://PATH.h5): {url!r}")
    path = Path(url[len("replay://") :])
    if not path.is_file():
        raise ReplayError(f"replay map {str(path)!r} does not exist")
    return path


def _replayable(ber_map: BerMap) -> list[dict]:
    """Check all of a map for replay (every point read and checked, whole 64-byte bursts per row,
    at least one point) and return its summary; ReplayError (a MapError) otherwise."""
    geo = ber_map.geometry  # banks, rows, row_bytes: required and checked by BerMap
    if int(geo["row_bytes"]) % 64:
        raise ReplayError(f"{ber_map.path}: geometry_json: a replayed DIMM needs row_bytes in whole "
                          f"64-byte bursts, got {geo['row_bytes']}")
    try:
        ber_map.check()  # now, so that a malformed map fails here rather than while serving a read
        summary = ber_map.summary()
    except ReplayError:
        raise
    except MapError as exc:
        raise ReplayError(str(exc)) from None
    if not summary:
        raise ReplayError(f"{ber_map.path} holds no measured points")
    return summary


def check_replay_map(path: str | Path) -> BerMap:
    """Open a map and check that a replay bench can serve it, before any bench process starts.

    Raises
    ------
    ReplayError
        A :class:`~profiler.storage.MapError`: the map is malformed (``docs/ber-map-format.md``,
        section 2.4), holds no points, or its rows are not whole 64-byte bursts.
    """
    try:
        ber_map = BerMap(path)
    except MapError as exc:
        raise ReplayError(str(exc)) from None
    _replayable(ber_map)
    return ber_map


@dataclass
class _Setting:
    """One recorded setting: its values and the merged failing cells per row."""

    values: dict[str, float]
    keys: list[str]
    flips: int
    bits: int
    cells: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] | None = None  # (bank,row) -> (bit, dir)
    bank_rates: dict[int, tuple[float, float]] | None = None  # bank -> (p 0->1, p 1->0) per bit
    refresh_ms: float | None = None  # the refresh interval held before the read (None: none)


class ReplayDimm(EmulatedDimm):
    """A DIMM answering from a recorded BER map (see the module docstring).

    Parameters
    ----------
    ber_map : BerMap
        The recording.
    environment : callable
        ``() -> (vdd_v, temp_c)`` of the bench.
    tck_ns : float
        Tester clock, to turn cycles into ns.
    seed : int
        Power-up content and the positions of errors in rows the map did not measure.
    """

    def __init__(
        self,
        ber_map: BerMap,
        environment: Callable[[], tuple[float, float]],
        tck_ns: float,
        seed: int = 0,
    ) -> None:
        summary = _replayable(ber_map)
        geo = ber_map.geometry
        geometry = Geometry(banks=int(geo["banks"]), rows=int(geo["rows"]), columns=int(geo["row_bytes"]) // 8)
        if not math.isfinite(float(tck_ns)) or float(tck_ns) <= 0:
            raise ReplayError(f"tester clock tck_ns must be a positive number, got {tck_ns!r}")
        super().__init__(geometry, seed)
        self.map = ber_map
        self.environment = environment
        self.tck_ns = float(tck_ns)
        settings: dict[tuple, _Setting] = {}
        for row in summary:
            # Timings as the DIMM saw them (rounded up to whole tester cycles).
            source = {"trcd_ns": "effective_trcd_ns", "trp_ns": "effective_trp_ns"}
            values = {
                axis: float(row.get(source.get(axis, axis), row.get(axis)))
                if row.get(source.get(axis, axis), row.get(axis)) is not None
                else math.nan
                for axis in _AXES
            }
            refresh = _refresh_ms(row)
            label = tuple(round(values[a] / _TOLERANCE[a]) if math.isfinite(values[a]) else None for a in _AXES)
            label += (None if refresh is None else round(math.log(refresh) / _REFRESH_TOLERANCE),)
            setting = settings.setdefault(label, _Setting(values, [], 0, 0, refresh_ms=refresh))
            setting.keys.append(row["key"])
            setting.flips += row["flips_0to1"] + row["flips_1to0"]
            setting.bits += row["bits"]
        self.settings = list(settings.values())
        # A timing longer than every recorded one is as mild as the longest recorded.
        self._longest = {
            axis: max((st.values[axis] for st in self.settings if math.isfinite(st.values[axis])), default=math.inf)
            for axis in ("trcd_ns", "trp_ns")
        }
        self._choice_cache: dict[tuple, list[tuple[_Setting, float]]] = {}
        self._measured_rows: set[tuple[int, int]] = set()
        self._recorded_refresh = sorted({st.refresh_ms for st in self.settings if st.refresh_ms is not None})
        self._has_unrefreshed = any(st.refresh_ms is None for st in self.settings)
        self._refresh_window_ms: float | None = None  # auto-refresh as the firmware set it (None: off)
        self._pool = self._settings_at(None)

    # Refresh ----------------------------------------------------------------------------

    def _settings_at(self, window_ms: float | None) -> list[_Setting]:
        """The recorded settings that answer reads while every row is refreshed every ``window_ms``."""
        recorded = self._recorded_refresh
        if window_ms is None:
            chosen = None if self._has_unrefreshed or not recorded else recorded[0]
        else:
            near = [r for r in recorded if abs(r - window_ms) <= _REFRESH_TOLERANCE * r]
            below = [r for r in recorded if r < window_ms]
            chosen = near[0] if near else below[-1] if below else recorded[0] if recorded else None
        return [st for st in self.settings if st.refresh_ms == chosen]

    def set_auto_refresh(self, now_ns: float, trefi_ns: float) -> None:
        """Auto-refresh every ``trefi_ns`` from ``now_ns`` (0: off): selects the recorded interval that answers."""
        parent = getattr(super(), "set_auto_refresh", None)
        if parent is not None:
            parent(now_ns, trefi_ns)
        window = float(trefi_ns) * REFRESH_COMMANDS_PER_WINDOW / 1e6 if trefi_ns > 0 else None
        if window != self._refresh_window_ms:
            self._refresh_window_ms = window
            self._pool = self._settings_at(window)

    def refresh(self, now_ns: float) -> None:
        """One REF command (replayed errors do not depend on single REFs)."""
        parent = getattr(super(), "refresh", None)
        if parent is not None:
            parent(now_ns)

    # Loading ---------------------------------------------------------------------------

    def _load(self, setting: _Setting) -> None:
        if setting.cells is not None:
            return
        bits_list, dirs_list, rows_list = [], [], []
        bank_flips: dict[int, np.ndarray] = {}
        bank_bits: dict[int, int] = {}
        for key in setting.keys:
            point = self.map.point(key)
            errors = point.errors
            rows_list.append(errors["bank"].astype(np.int64) << 32 | errors["row"].astype(np.int64))
            bits_list.append(errors["bit"].astype(np.int64))
            dirs_list.append(errors["dir"].astype(np.uint8))
            for (bank, _), f01, f10, nbits in zip(point.rows, point.flips_0to1, point.flips_1to0, point.bits_tested):
                acc = bank_flips.setdefault(int(bank), np.zeros(2))
                acc += (int(f01), int(f10))
                bank_bits[int(bank)] = bank_bits.get(int(bank), 0) + int(nbits)
        cells: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        if rows_list and sum(len(r) for r in rows_list):
            rows = np.concatenate(rows_list)
            bits = np.concatenate(bits_list)
            dirs = np.concatenate(dirs_list)
            # One entry per (row, bit, dir): patterns and repetitions merged.
            combined = np.unique(np.stack([rows, bits, dirs.astype(np.int64)], axis=1), axis=0)
            order = np.argsort(combined[:, 0], kind="stable")
            combined = combined[order]
            starts = np.flatnonzero(np.r_[True, combined[1:, 0] != combined[:-1, 0]])
            ends = np.r_[starts[1:], len(combined)]
            for s, e in zip(starts, ends):
                code = int(combined[s, 0])
                cells[(code >> 32, code & 0xFFFFFFFF)] = (combined[s:e, 1], combined[s:e, 2].astype(np.uint8))
        setting.cells = cells
        # Each pattern tests a bit once in each direction at most: halve for the per-direction rate.
        setting.bank_rates = {
            b: (float(f[0]) * 2 / max(1, bank_bits[b]), float(f[1]) * 2 / max(1, bank_bits[b]))
            for b, f in bank_flips.items()
        }
        for key in setting.keys:
            self._measured_rows.update((int(b), int(r)) for b, r in self.map.point(key).rows)

    # Choosing recorded settings ---------------------------------------------------------

    def _choose(self, current: dict[str, float]) -> list[tuple[_Setting, float]]:
        """Recorded settings answering ``current``, each with the share of its extra cells that fail."""
        pool = self._pool
        label = tuple(round(current[a] / _TOLERANCE[a]) for a in _AXES) + (self._refresh_window_ms,)
        cached = self._choice_cache.get(label)
        if cached is not None:
            return cached

        def matches(setting: _Setting, axis: str) -> bool:
            value = setting.values[axis]
            return not math.isfinite(value) or abs(value - current[axis]) <= _TOLERANCE[axis]

        exact = [s for s in pool if all(matches(s, a) for a in _AXES)]
        choice: list[tuple[_Setting, float]] = []
        if exact:
            choice = [(exact[0], 1.0)]
        else:
            for axis in _AXES:
                line = [s for s in pool if all(matches(s, a) for a in _AXES if a != axis)]
                if not line:
                    continue
                sign = _HARSH_SIGN[axis]
                severity = lambda s, sign=sign, axis=axis: sign * s.values[axis]  # noqa: E731
                here = sign * current[axis]
                milder = [s for s in line if severity(s) <= here]
                harsher = [s for s in line if severity(s) > here]
                if not milder:
                    choice = []  # milder than anything recorded: clean
                    break
                lo = max(milder, key=severity)
                if not harsher:
                    choice = [(lo, 1.0)]
                    break
                hi = min(harsher, key=severity)
                x = (here - severity(lo)) / (severity(hi) - severity(lo))
                n_lo, n_hi = max(lo.flips, 1), max(hi.flips, 1)
                target = math.exp(math.log(n_lo) + x * (math.log(n_hi) - math.log(n_lo)))
                share = 0.0 if n_hi <= n_lo else min(1.0, max(0.0, (target - n_lo) / (n_hi - n_lo)))
                choice = [(lo, 1.0), (hi, share)]
                break
            else:
                nearest = min(
                    pool,
                    key=lambda s: sum(
                        ((s.values[a] - current[a]) / _SCALE[a]) ** 2 for a in _AXES if math.isfinite(s.values[a])
                    ),
                )
                choice = [(nearest, 1.0)]
        self._choice_cache[label] = choice
        return choice

    # Rows ----------------------------------------------------------------------------------

    def _row_cells(self, setting: _Setting, bank: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        self._load(setting)
        assert setting.cells is not None and setting.bank_rates is not None
        found = setting.cells.get((bank, row))
        if found is not None:
            return found
        if (bank, row) in self._measured_rows:
            return np.zeros(0, np.int64), np.zeros(0, np.uint8)  # measured and clean
        rates = setting.bank_rates.get(bank)
        if rates is None:
            rates = tuple(np.mean([r[i] for r in setting.bank_rates.values()]) for i in (0, 1))  # type: ignore[assignment]
        n_bits = self.geometry.row_bytes * 8
        key = np.array([self.seed, (bank << 32) | row, setting.flips, 0x5E], dtype=np.uint64)
        rng = np.random.default_rng(key)
        parts_bits, parts_dirs = [], []
        for direction, rate in ((1, rates[0]), (0, rates[1])):
            count = rng.binomial(n_bits, min(1.0, rate))
            if count:
                parts_bits.append(rng.choice(n_bits, count, replace=False))
                parts_dirs.append(np.full(count, direction, np.uint8))
        if not parts_bits:
            return np.zeros(0, np.int64), np.zeros(0, np.uint8)
        return np.concatenate(parts_bits), np.concatenate(parts_dirs)

    def _fail_cells(self, bank: int, row: int, current: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        bits_all, dirs_all = [], []
        seen: set[tuple[int, int]] = set()
        for setting, share in self._choose(current):
            bits, dirs = self._row_cells(setting, bank, row)
            if share < 1.0 and bits.size:
                keep = _cell_uniform(self.seed, bank, row, bits) < share  # nested as the share grows
                bits, dirs = bits[keep], dirs[keep]
            for b, d in zip(bits.tolist(), dirs.tolist()):
                if (b, d) not in seen:
                    seen.add((b, d))
                    bits_all.append(b)
                    dirs_all.append(d)
        return np.array(bits_all, np.int64), np.array(dirs_all, np.uint8)

    def activate(self, bank: int, row: int, trp_cycles: int) -> RowAccess:
        access = super().activate(bank, row, trp_cycles)
        vdd_v, temp_c = self.environment()
        access.replay_env = (vdd_v, temp_c)  # type: ignore[attr-defined]
        access.replay_masks = {}  # type: ignore[attr-defined]
        return access

    def power_problem(self) -> str | None:
        vdd_v, _ = self.environment()
        return f"the DIMM is not powered (supply output {vdd_v:.2f} V)" if vdd_v < 0.5 else None

    def _masks(self, access: RowAccess, trcd_ns: float) -> tuple[np.ndarray, np.ndarray]:
        """The open row's (0->1, 1->0) failure masks for a read ``trcd_ns`` after its ACT (as
        :meth:`read_burst` sees it: capped at the longest recorded tRCD), cached per activation."""
        vdd_v, temp_c = access.replay_env  # type: ignore[attr-defined]
        current = {
            "vdd_v": vdd_v,
            "trcd_ns": trcd_ns,
            "trp_ns": min(access.trp_cycles * self.tck_ns, self._longest["trp_ns"]),
            "temp_c": temp_c,
        }
        label = tuple(round(current[a] / _TOLERANCE[a]) for a in _AXES) + (self._refresh_window_ms,)
        masks = access.replay_masks  # type: ignore[attr-defined]
        mask = masks.get(label)
        if mask is None:
            bits, dirs = self._fail_cells(access.bank, access.row, current)
            n_bytes = self.geometry.row_bytes
            # Two masks over the row: cells failing 0->1 and cells failing 1->0.
            up = np.zeros(n_bytes * 8, bool)
            down = np.zeros(n_bytes * 8, bool)
            up[bits[dirs == 1]] = True
            down[bits[dirs == 0]] = True
            mask = masks[label] = (np.packbits(up, bitorder="little"), np.packbits(down, bitorder="little"))
        return mask

    def read_burst(self, access: RowAccess, column: int, trcd_cycles: int) -> bytes:
        index = self._read_index[column]
        clean = access.data[index]
        up, down = self._masks(access, min(trcd_cycles * self.tck_ns, self._longest["trcd_ns"]))
        up_bytes, down_bytes = up[index], down[index]
        flips = (up_bytes & ~clean) | (down_bytes & clean)
        return (clean ^ flips).tobytes()

    def read_bursts(
        self, access: RowAccess, columns: np.ndarray, trcd_cycles: np.ndarray, now_ns: np.ndarray
    ) -> np.ndarray:
        """Several read bursts of one open row (see :meth:`EmulatedDimm.read_bursts`): the bytes
        of :meth:`read_burst` burst by burst, with the masks looked up once per distinct tRCD
        (every tRCD from the longest recorded one on reads alike) and one gather."""
        if not _own(self, "read_burst", ReplayDimm.read_burst):
            return self._read_bursts_each(access, columns, trcd_cycles, now_ns)
        n = len(columns)
        if n == 0:
            return np.zeros(0, np.uint8)
        self.now_ns = float(now_ns[-1])
        trcd_ns = np.minimum(np.asarray(trcd_cycles) * self.tck_ns, self._longest["trcd_ns"])
        values, first_at, inverse = np.unique(trcd_ns, return_index=True, return_inverse=True)
        clean = access.data
        reads = []
        for k in np.argsort(first_at, kind="stable").tolist():  # in program order, as burst by burst
            up, down = self._masks(access, float(values[k]))
            reads.append(clean ^ ((up & ~clean) | (down & clean)))
        if len(reads) == 1:
            return self._gather(reads[0], columns)
        which = np.empty(values.size, np.intp)
        which[np.argsort(first_at, kind="stable")] = np.arange(values.size)
        return np.stack(reads)[which[inverse.reshape(-1)][:, None], self._read_matrix[columns]].reshape(-1)

"""Sweep plans: what to set and measure, checked against the bench's limits before anything runs.

A :class:`SweepConfig` comes from a TOML file (``--config``) with command-line
flags overriding it; :func:`build_plan` expands it into an ordered list of
:class:`Point` (temperature outermost, as it is the slowest to change, then VDD,
tRCD, tRP, refresh interval, pattern and repetition).  Every point has a stable key, so a rerun
recognises finished points and resumes.

Value lists are written ``1.35,1.3,1.25`` or ``start:stop:step`` (``stop``
included when it falls on the grid): ``1.35:1.05:-0.05``, or a mix of both:
``1.35,1.2:1.0:-0.025``.  Rows are ``all``,
ranges ``0:1024`` or ``0:32768:64`` (stop excluded, like Python), lists
``1,5,9``, or a seeded sample ``sample:256``.  Numbers are ASCII only.

A plan is counted before it is built: one of more than :data:`MAX_PLAN_POINTS`
points (or a setting of more than :data:`MAX_VALUES_PER_SETTING` values) is
refused with a one-line :class:`PlanError`, so a typo such as a step of 1e-12
fails at once instead of filling the memory.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from softmc_host import isa
from softmc_host.files import read_toml
from softmc_host.patterns import Pattern, PatternError, parse_pattern
from softmc_host.timing import NOMINAL_TRAS_NS, NOMINAL_TRCD_NS, NOMINAL_TRP_NS


__all__ = [
    "PlanError",
    "Point",
    "SweepConfig",
    "parse_values",
    "parse_rows",
    "parse_int_list",
    "plan_size",
    "ascii_float",
    "ascii_int",
    "build_plan",
    "validate_config",
    "load_config",
    "resolve_rows",
    "identity",
    "NOMINAL_TRCD_NS",
    "NOMINAL_TRP_NS",
    "NOMINAL_TRAS_NS",
    "MAX_PLAN_POINTS",
    "MAX_VALUES_PER_SETTING",
    "MAX_SEED",
    "TREFI_RANGE_MS",
]

# NOMINAL_TRCD_NS, NOMINAL_TRP_NS, NOMINAL_TRAS_NS: re-exported from softmc_host.timing (their one source).

#: Most points a plan may have (``--max-points`` raises it). 100 000 points are about 30 MB of
#: plan and days of measuring; a bigger plan is almost always a typo (a step of 1e-12).
MAX_PLAN_POINTS = 100_000
#: Most values one swept setting (``vdd_v``, ``trcd_ns``, ``trp_ns``, ``temp_c``, ``trefi_ms``) may list.
MAX_VALUES_PER_SETTING = 10_000
#: Largest seed (row sampling, random patterns, read noise): 64 bits.
MAX_SEED = (1 << 64) - 1
#: Largest ``max_error_positions`` (it must fit an HDF5 int64 attribute).
MAX_ERROR_POSITIONS = (1 << 63) - 1
#: Accepted ranges of the swept settings (the bench's own limits are checked as well).
VDD_RANGE_V = (0.0, 5.0)  # lower bound excluded
TEMP_RANGE_C = (-55.0, 150.0)
TIMING_MAX_NS = 1000.0
TRAS_MAX_NS = 10000.0
#: Refresh intervals a sweep may hold (``trefi_ms``: every row refreshed once per interval).  Below
#: 8 ms a tREFI of interval / 8192 is under five 200 ns SET_TREFI ticks (rounding it is then off by
#: more than 10 %); 16384 ms (a hold of 33 s per point) is past any DDR3 cell's retention at 85 C.
TREFI_RANGE_MS = (8.0, 16384.0)

# Numbers in settings are ASCII only: str.isdigit(), int() and float() also take other scripts'
# digits (``²``, ``٣``), underscores and blanks.
_MAX_NUMBER_CHARS = 40
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_RE = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+)")


class PlanError(ValueError):
    """A sweep configuration or plan is invalid (the message names the setting)."""


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened to one readable line (huge numbers and strings are cut)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<{'-' if value < 0 else ''}{value.bit_length()}-bit integer>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - repr of a foreign object; never let it hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 20]}...{text[-12:]} ({len(text)} chars)"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def ascii_float(text: str) -> float:
    """Parse an ASCII decimal number (``1.35``, ``-5``, ``1e-3``); ValueError for anything else.

    ``float()`` alone would also take other scripts' digits, ``1_0``, blanks, ``nan`` and ``inf``.
    """
    if not isinstance(text, str) or len(text) > _MAX_NUMBER_CHARS or not _FLOAT_RE.fullmatch(text):
        raise ValueError(f"not a decimal number: {_show(text)}")
    return float(text)


def ascii_int(text: str) -> int:
    """Parse an ASCII decimal or ``0x`` hexadecimal integer of at most 40 characters; ValueError otherwise."""
    if not isinstance(text, str) or len(text) > _MAX_NUMBER_CHARS or not _INT_RE.fullmatch(text):
        raise ValueError(f"not an integer: {_show(text)}")
    sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
    return sign * (int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 10))


def _finite(value: Any, name: str, unit: str) -> float:
    """A TOML/Python number as a finite float, or PlanError naming ``name``."""
    if not _is_number(value):
        raise PlanError(f"{name} must be numbers in {unit}, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise PlanError(f"{name} has a value that is not finite: {_show(value)}")
    return number


def _range_count(start: float, stop: float, step: float, name: str, item: str, max_count: int) -> int:
    """Values of ``start:stop:step`` (stop included when on the grid), counted before any is made."""
    if step == 0 or (stop - start) * step < 0:
        raise PlanError(f"{name} range {_show(item)}: the step must go from start towards stop")
    steps = (stop - start) / step
    if not math.isfinite(steps) or steps + 1 > max_count:
        many = (
            "too many" if not math.isfinite(steps)
            else f"{int(math.floor(steps + 1e-9)) + 1:,}" if steps < 1e15 else f"about {steps + 1:.3g}"
        )
        raise PlanError(f"{name} range {_show(item)} has {many} values; a setting takes at most {max_count:,}")
    return int(math.floor(steps + 1e-9)) + 1


def parse_values(
    text: str | float | Sequence[float], name: str, unit: str, max_count: int = MAX_VALUES_PER_SETTING
) -> list[float]:
    """Parse ``a,b,c``, ``start:stop:step`` or a comma mix of both (or a number / list from TOML).

    Numbers are ASCII decimal and finite.  A range is counted before it is expanded, so a
    range of too many values (``0:1:1e-12``) is refused at once.

    Raises
    ------
    PlanError
        Naming ``name``: a malformed or non-finite value, a range whose step does not go
        towards its stop, more than ``max_count`` values, or nothing at all.
    """
    if _is_number(text):
        return [_finite(text, name, unit)]
    if isinstance(text, (list, tuple)):
        if len(text) > max_count:
            raise PlanError(f"{name} lists {len(text):,} values; a setting takes at most {max_count:,}")
        values = [_finite(v, name, unit) for v in text]
        if not values:
            raise PlanError(f"{name} is empty")
        return values
    if not isinstance(text, str):
        raise PlanError(f"{name} must be a number, a list of numbers or a string of values in {unit}, got {_show(text)}")
    text = text.strip()
    values: list[float] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            parts = [ascii_float(p.strip()) for p in item.split(":")]
        except ValueError:
            parts = []
        if not parts or len(parts) not in (1, 3):
            raise PlanError(
                f"{name} must be a comma list of values and start:stop:step ranges in {unit}, got {_show(text)}"
            )
        if any(not math.isfinite(p) for p in parts):
            raise PlanError(f"{name} has a value that is not finite: {_show(item)}")
        if len(parts) == 1:
            count = 1
        else:
            count = _range_count(*parts, name, item, max_count)
        if len(values) + count > max_count:
            raise PlanError(f"{name} has more than {max_count:,} values; a setting takes at most {max_count:,}")
        if len(parts) == 1:
            values.append(parts[0])
        else:
            start, _, step = parts
            values.extend(round(start + i * step, 9) for i in range(count))
    if not values:
        raise PlanError(f"{name} is empty")
    if any(not math.isfinite(v) for v in values):
        raise PlanError(f"{name} has a value that is not finite: {_show(text)}")
    return values


def _selection(text: Any, name: str, lo: int, hi: int) -> range | list[int]:
    """``all``, ``a,b``, ``start:stop[:step]``, an int or a list of ints, checked within [lo, hi), not expanded."""
    if _is_int(text):
        values: range | list[int] = [text]
    elif isinstance(text, (list, tuple)):
        if not all(_is_int(v) for v in text):
            raise PlanError(f"{name} must be a list of integers, got {_show(text)}")
        values = list(text)
    elif isinstance(text, str):
        lowered = text.strip().lower()
        try:
            if lowered == "all":
                values = range(lo, hi)
            elif ":" in lowered:
                parts = [ascii_int(p.strip()) for p in lowered.split(":")]
                if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] <= 0):
                    raise ValueError
                values = range(*parts)
            else:
                values = [ascii_int(v.strip()) for v in lowered.split(",") if v.strip()]
        except ValueError:
            raise PlanError(f"{name} must be all, a comma list or start:stop[:step], got {_show(text)}") from None
    else:
        raise PlanError(f"{name} must be a selection string or a list of integers, got {_show(text)}")
    if not values:
        raise PlanError(f"{name} selects nothing")
    if isinstance(values, range):  # ascending: check the ends, name the first value outside
        if values[0] < lo:
            raise PlanError(f"{name} {_show(values[0])} outside {lo}..{hi - 1}")
        if values[-1] >= hi:
            first = values[0] + -(-(hi - values[0]) // values.step) * values.step
            raise PlanError(f"{name} {_show(first)} outside {lo}..{hi - 1}")
        return values
    bad = [v for v in values if not lo <= v < hi]
    if bad:
        raise PlanError(f"{name} {_show(bad[0])} outside {lo}..{hi - 1}")
    return values


def parse_int_list(text: str | int | Sequence[int], name: str, lo: int, hi: int) -> list[int]:
    """Parse ``all``, ``a,b``, ``start:stop[:step]`` into integers within [lo, hi).

    Numbers are ASCII decimal or ``0x`` hex.  Ranges are checked against the bounds before
    they are expanded.
    """
    return sorted(set(_selection(text, name, lo, hi)))


def _sample_count(text: Any, n_rows: int) -> int | None:
    """N of ``sample:N`` (checked 1 <= N <= n_rows), or None when ``text`` is not a sample."""
    if not (isinstance(text, str) and text.strip().lower().startswith("sample:")):
        return None
    count_text = text.split(":", 1)[1].strip()
    if not re.fullmatch(r"[0-9]{1,12}", count_text) or not 0 < int(count_text) <= n_rows:
        raise PlanError(f"rows sample:N needs 1 <= N <= {n_rows}, got {_show(text)}")
    return int(count_text)


def parse_rows(text: str | int | Sequence[int], n_rows: int, seed: int) -> list[int]:
    """Rows: like :func:`parse_int_list`, plus ``sample:N`` (N rows drawn without replacement, seeded)."""
    count = _sample_count(text, n_rows)  # type: ignore[arg-type]
    if count is not None:
        rng = np.random.default_rng([seed, 0x5A3])
        return sorted(int(r) for r in rng.choice(n_rows, count, replace=False))
    return parse_int_list(text, "rows", 0, n_rows)


@dataclass(frozen=True)
class Point:
    """One measurement: settings (units in the names), data pattern and repetition.

    ``trefi_ms`` is the refresh interval held before the read (every row refreshed once per
    interval, then a hold of twice the interval); None: no hold, refresh as the tester has it
    (the point's key, settings and HDF5 attributes are then those of a sweep without it).
    """

    temp_c: float | None
    vdd_v: float | None
    trcd_ns: float
    trp_ns: float
    tras_ns: float
    pattern: str
    rep: int
    trefi_ms: float | None = None

    @property
    def key(self) -> str:
        """Stable identifier, used as the HDF5 group name and for resuming."""
        temp = "na" if self.temp_c is None else f"{self.temp_c:g}"
        vdd = "na" if self.vdd_v is None else f"{self.vdd_v:.4f}"
        pattern = "".join(c if c.isalnum() or c in "-." else "_" for c in self.pattern)
        refresh = "" if self.trefi_ms is None else f"_REF{self.trefi_ms:g}"
        return f"T{temp}_V{vdd}_RCD{self.trcd_ns:g}_RP{self.trp_ns:g}_RAS{self.tras_ns:g}{refresh}_{pattern}_r{self.rep}"

    def as_dict(self) -> dict[str, Any]:
        """The point's fields, for metadata (``trefi_ms`` only when the point holds one)."""
        values = asdict(self)
        if self.trefi_ms is None:
            del values["trefi_ms"]
        return values


@dataclass
class SweepConfig:
    """A sweep's settings; see ``python -m profiler.sweep --help`` for each one's meaning."""

    bench: str = "emu://B?seed=0"
    vdd_v: list[float] | None = None
    trcd_ns: list[float] = field(default_factory=lambda: [NOMINAL_TRCD_NS])
    trp_ns: list[float] = field(default_factory=lambda: [NOMINAL_TRP_NS])
    tras_ns: float = NOMINAL_TRAS_NS
    temp_c: list[float] | None = None
    banks: str | list[int] = "all"
    rows: str | list[int] = "sample:64"
    patterns: list[str] = field(default_factory=lambda: ["all-1", "all-0"])
    reps: int = 1
    seed: int = 0
    out: str = "sweep.h5"
    max_error_positions: int = 1_000_000
    trefi_ms: list[float] | None = None

    def resolved_patterns(self) -> list[Pattern]:
        """The named patterns, built (raises PlanError for an unknown name)."""
        try:
            return [parse_pattern(p, self.seed) for p in self.patterns]
        except PatternError as exc:
            raise PlanError(str(exc)) from None

    def as_dict(self) -> dict[str, Any]:
        """The configuration as plain values, for metadata (``trefi_ms`` only when set, so that a
        sweep without it has the metadata and identity it had before the setting existed)."""
        values = asdict(self)
        if self.trefi_ms is None:
            del values["trefi_ms"]
        return values


_CONFIG_KEYS = {f.name for f in fields(SweepConfig)}
# The swept settings and their units.
_SWEPT = {"vdd_v": "V", "trcd_ns": "ns", "trp_ns": "ns", "temp_c": "C", "trefi_ms": "ms"}
# Swept settings that may be left out (None: the bench keeps its own value).
_OPTIONAL = ("vdd_v", "temp_c", "trefi_ms")


def _key_list(keys: set[str]) -> str:
    return ", ".join(k if k.isidentifier() else _show(k) for k in sorted(keys))


def load_config(path: str | Path, base: SweepConfig | None = None) -> SweepConfig:
    """Read a sweep TOML file (keys as in :class:`SweepConfig`, optionally all under ``[sweep]``).

    Every value is checked (:func:`validate_config`): types, finite numbers, ranges.

    Raises
    ------
    PlanError
        A one-line message naming the file and the key: an unreadable file, invalid TOML,
        an unknown key, or a value of the wrong type or out of range.
    """
    path = Path(path)
    table = read_toml(path, "sweep config", PlanError)
    if "sweep" in table:
        if not isinstance(table["sweep"], dict):
            raise PlanError(f"{path}: sweep must be a [sweep] table of settings, got {_show(table['sweep'])}")
        outside = set(table) - {"sweep"}
        if outside:
            raise PlanError(f"{path}: key(s) {_key_list(outside)} outside [sweep] (put every setting under [sweep])")
        table = table["sweep"]
    unknown = set(table) - _CONFIG_KEYS
    if unknown:
        raise PlanError(f"{path}: unknown key(s) {_key_list(unknown)} (known: {', '.join(sorted(_CONFIG_KEYS))})")
    values: dict[str, Any] = {}
    try:
        for key, value in table.items():
            if key in _SWEPT:
                values[key] = parse_values(value, key, _SWEPT[key])
            elif key == "patterns":
                values[key] = [value] if isinstance(value, str) else list(value) if isinstance(value, list) else value
            else:
                values[key] = value
        config = replace(base or SweepConfig(), **values)
        validate_config(config)
    except PlanError as exc:
        raise PlanError(f"{path}: {exc}") from None
    return config


def validate_config(config: SweepConfig) -> None:
    """Check every setting of a configuration: types, finite numbers and ranges.

    Ranges: ``vdd_v`` in (0, 5] V, ``temp_c`` in [-55, 150] C, ``trcd_ns``/``trp_ns`` in
    (0, 1000] ns, ``trefi_ms`` in [8, 16384] ms (:data:`TREFI_RANGE_MS`), ``tras_ns`` in (0, 10000] ns, ``reps`` >= 1, ``seed`` in 0..2**64-1,
    ``max_error_positions`` in 0..2**63-1, at most :data:`MAX_VALUES_PER_SETTING` values per
    swept setting; ``banks``/``rows`` within what the ISA can address (the bench's geometry
    is checked again when it is known).  The bench's supply and thermal limits are checked
    separately (:func:`profiler.engine.check_plan`).

    Raises
    ------
    PlanError
        A one-line message naming the setting and the value.
    """
    for name in ("reps", "seed", "max_error_positions"):
        if not _is_int(getattr(config, name)):
            raise PlanError(f"{name} must be an integer, got {_show(getattr(config, name))}")
    if config.reps < 1:
        raise PlanError(f"reps must be at least 1, got {_show(config.reps)}")
    if not 0 <= config.seed <= MAX_SEED:
        raise PlanError(f"seed must be a non-negative integer of at most 64 bits, got {_show(config.seed)}")
    if not 0 <= config.max_error_positions <= MAX_ERROR_POSITIONS:
        raise PlanError(f"max_error_positions must be in 0..2**63-1, got {_show(config.max_error_positions)}")
    for name in ("bench", "out"):
        value = getattr(config, name)
        if not isinstance(value, str) or not value or "\x00" in value:
            raise PlanError(f"{name} must be a non-empty string, got {_show(value)}")
    if not _is_number(config.tras_ns):
        raise PlanError(f"tras_ns must be a number of ns, got {_show(config.tras_ns)}")
    if not 0 < config.tras_ns <= TRAS_MAX_NS:
        raise PlanError(f"tras_ns {_show(config.tras_ns)} outside (0, {TRAS_MAX_NS:g}] ns")
    bounds = {
        "vdd_v": (VDD_RANGE_V[0], VDD_RANGE_V[1], False),
        "temp_c": (TEMP_RANGE_C[0], TEMP_RANGE_C[1], True),
        "trcd_ns": (0.0, TIMING_MAX_NS, False),
        "trp_ns": (0.0, TIMING_MAX_NS, False),
        "trefi_ms": (TREFI_RANGE_MS[0], TREFI_RANGE_MS[1], True),
    }
    for name, unit in _SWEPT.items():
        values = getattr(config, name)
        optional = name in _OPTIONAL
        if values is None and optional:
            continue
        if not isinstance(values, list) or not all(_is_number(v) for v in values) or (not values and not optional):
            raise PlanError(f"{name} must be a list of numbers in {unit}, got {_show(values)}")
        if len(values) > MAX_VALUES_PER_SETTING:
            raise PlanError(f"{name} lists {len(values):,} values; a setting takes at most {MAX_VALUES_PER_SETTING:,}")
        lo, hi, closed = bounds[name]
        for value in values:
            if not (lo <= value <= hi if closed else lo < value <= hi):
                interval = f"[{lo:g}, {hi:g}]" if closed else f"({lo:g}, {hi:g}]"
                raise PlanError(f"{name} {_show(value)} outside {interval} {unit}")
    if not isinstance(config.patterns, list) or not config.patterns or not all(isinstance(p, str) for p in config.patterns):
        raise PlanError(f"patterns must be a list of pattern names, got {_show(config.patterns)}")
    for name in ("banks", "rows"):
        value = getattr(config, name)
        if not (isinstance(value, str) or (isinstance(value, list) and all(_is_int(v) for v in value))):
            raise PlanError(f"{name} must be a selection string or a list of integers, got {_show(value)}")
    _selection(config.banks, "banks", 0, isa.N_BANKS)
    if _sample_count(config.rows, isa.N_ROWS) is None:
        _selection(config.rows, "rows", 0, isa.N_ROWS)


def plan_size(config: SweepConfig) -> int:
    """Number of points :func:`build_plan` would make, counted without making them.

    ``config`` must be valid (:func:`validate_config`).
    """
    return (
        len(config.temp_c or [None])
        * len(config.vdd_v or [None])
        * len(config.trcd_ns)
        * len(config.trp_ns)
        * len(config.trefi_ms or [None])
        * len(config.patterns)
        * config.reps
    )


def build_plan(config: SweepConfig, max_points: int = MAX_PLAN_POINTS) -> list[Point]:
    """Expand a configuration into its ordered points (no bench needed).

    The points are counted first; a plan of more than ``max_points`` points is refused
    before any is made.

    Raises
    ------
    PlanError
        An invalid setting (:func:`validate_config`), an unknown pattern, a duplicate
        setting, or more than ``max_points`` points.
    """
    validate_config(config)
    if not _is_int(max_points) or max_points < 1:
        raise PlanError(f"the point limit (--max-points) must be a positive integer, got {_show(max_points)}")
    count = plan_size(config)
    if count > max_points:
        raise PlanError(
            f"the plan has {count:,} points, more than the limit of {max_points:,} "
            "(MAX_PLAN_POINTS; --max-points N raises it)"
        )
    patterns = config.resolved_patterns()
    temps: list[float | None] = list(config.temp_c) if config.temp_c else [None]
    vdds: list[float | None] = list(config.vdd_v) if config.vdd_v else [None]
    refreshes: list[float | None] = list(config.trefi_ms) if config.trefi_ms else [None]
    points = [
        Point(t, v, rcd, rp, config.tras_ns, p.name, rep, trefi)
        for t in temps
        for v in vdds
        for rcd in config.trcd_ns
        for rp in config.trp_ns
        for trefi in refreshes
        for p in patterns
        for rep in range(config.reps)
    ]
    keys = [p.key for p in points]
    if len(set(keys)) != len(keys):
        raise PlanError("the sweep lists a setting twice (duplicate values in a list)")
    return points


def resolve_rows(config: SweepConfig, banks: int, rows: int) -> list[tuple[int, int]]:
    """The (bank, row) pairs measured at every point, within a DIMM of ``banks`` x ``rows``.

    Parameters
    ----------
    config : SweepConfig
        The sweep (its ``banks``, ``rows`` and ``seed``).
    banks, rows : int
        The DIMM's geometry (the tester's INFO where a tester is at hand).

    Raises
    ------
    PlanError
        A bank or row outside the geometry, or a bad ``sample:N``.
    """
    bank_list = parse_int_list(config.banks, "banks", 0, banks)
    row_list = parse_rows(config.rows, rows, config.seed)
    return [(b, r) for b in bank_list for r in row_list]


def identity(config: SweepConfig) -> dict[str, Any]:
    """What must match for a rerun to resume an existing map: the settings without ``out`` and
    ``max_error_positions``, plus every pattern's definition (a file pattern's SHA-256)."""
    values = config.as_dict()
    values.pop("out")
    values.pop("max_error_positions")
    values["pattern_definitions"] = [p.definition for p in config.resolved_patterns()]
    return values

"""Sweep plans: what to set and measure, checked against the bench's limits before anything runs.

A :class:`SweepConfig` comes from a TOML file (``--config``) with command-line
flags overriding it; :func:`build_plan` expands it into an ordered list of
:class:`Point` (temperature outermost, as it is the slowest to change, then VDD,
tRCD, tRP, pattern and repetition).  Every point has a stable key, so a rerun
recognises finished points and resumes.

Value lists are written ``1.35,1.3,1.25`` or ``start:stop:step`` (``stop``
included when it falls on the grid): ``1.35:1.05:-0.05``, or a mix of both:
``1.35,1.2:1.0:-0.025``.  Rows are ``all``,
ranges ``0:1024`` or ``0:32768:64`` (stop excluded, like Python), lists
``1,5,9``, or a seeded sample ``sample:256``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from profiler.patterns import Pattern, PatternError, parse_pattern
from softmc_host.tomlfile import read_toml


__all__ = [
    "PlanError",
    "Point",
    "SweepConfig",
    "parse_values",
    "parse_rows",
    "parse_int_list",
    "build_plan",
    "load_config",
    "NOMINAL_TRCD_NS",
    "NOMINAL_TRP_NS",
    "NOMINAL_TRAS_NS",
]

NOMINAL_TRCD_NS = 13.75
NOMINAL_TRP_NS = 13.75
NOMINAL_TRAS_NS = 35.0


class PlanError(ValueError):
    """A sweep configuration or plan is invalid (the message names the setting)."""


def parse_values(text: str | float | Sequence[float], name: str, unit: str) -> list[float]:
    """Parse ``a,b,c``, ``start:stop:step`` or a comma mix of both (or a number / list from TOML)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return [float(text)]
    if isinstance(text, (list, tuple)):
        try:
            return [float(v) for v in text]
        except (TypeError, ValueError):
            raise PlanError(f"{name} must be numbers in {unit}, got {text!r}") from None
    text = str(text).strip()
    values = []
    try:
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if ":" not in item:
                values.append(float(item))
                continue
            parts = [float(p) for p in item.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step == 0 or (stop - start) * step < 0:
                raise PlanError(f"{name} range {item!r}: the step must go from start towards stop")
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            values.extend(round(start + i * step, 9) for i in range(count))
    except PlanError:
        raise
    except ValueError:
        raise PlanError(
            f"{name} must be a comma list of values and start:stop:step ranges in {unit}, got {text!r}"
        ) from None
    if not values:
        raise PlanError(f"{name} is empty")
    if any(not math.isfinite(v) for v in values):
        raise PlanError(f"{name} has a value that is not finite: {text!r}")
    return values


def parse_int_list(text: str | int | Sequence[int], name: str, lo: int, hi: int) -> list[int]:
    """Parse ``all``, ``a,b``, ``start:stop[:step]`` into integers within [lo, hi)."""
    if isinstance(text, int) and not isinstance(text, bool):
        values = [text]
    elif isinstance(text, (list, tuple)):
        values = [int(v) for v in text]
    else:
        text = str(text).strip().lower()
        try:
            if text == "all":
                values = list(range(lo, hi))
            elif ":" in text:
                parts = [int(p) for p in text.split(":")]
                if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] <= 0):
                    raise ValueError
                values = list(range(*parts))
            else:
                values = [int(v, 0) for v in text.split(",") if v.strip()]
        except ValueError:
            raise PlanError(f"{name} must be all, a comma list or start:stop[:step], got {text!r}") from None
    if not values:
        raise PlanError(f"{name} selects nothing")
    bad = [v for v in values if not lo <= v < hi]
    if bad:
        raise PlanError(f"{name} {bad[0]} outside {lo}..{hi - 1}")
    return sorted(set(values))


def parse_rows(text: str | int | Sequence[int], n_rows: int, seed: int) -> list[int]:
    """Rows: like :func:`parse_int_list`, plus ``sample:N`` (N rows drawn without replacement, seeded)."""
    if isinstance(text, str) and text.strip().lower().startswith("sample:"):
        count_text = text.split(":", 1)[1]
        if not count_text.isdigit() or not 0 < int(count_text) <= n_rows:
            raise PlanError(f"rows sample:N needs 1 <= N <= {n_rows}, got {text!r}")
        rng = np.random.default_rng([seed, 0x5A3])
        return sorted(int(r) for r in rng.choice(n_rows, int(count_text), replace=False))
    return parse_int_list(text, "rows", 0, n_rows)


@dataclass(frozen=True)
class Point:
    """One measurement: settings (units in the names), data pattern and repetition."""

    temp_c: float | None
    vdd_v: float | None
    trcd_ns: float
    trp_ns: float
    tras_ns: float
    pattern: str
    rep: int

    @property
    def key(self) -> str:
        """Stable identifier, used as the HDF5 group name and for resuming."""
        temp = "na" if self.temp_c is None else f"{self.temp_c:g}"
        vdd = "na" if self.vdd_v is None else f"{self.vdd_v:.4f}"
        pattern = "".join(c if c.isalnum() or c in "-." else "_" for c in self.pattern)
        return f"T{temp}_V{vdd}_RCD{self.trcd_ns:g}_RP{self.trp_ns:g}_RAS{self.tras_ns:g}_{pattern}_r{self.rep}"

    def as_dict(self) -> dict[str, Any]:
        """The point's fields, for metadata."""
        return asdict(self)


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

    def resolved_patterns(self) -> list[Pattern]:
        """The named patterns, built (raises PlanError for an unknown name)."""
        try:
            return [parse_pattern(p, self.seed) for p in self.patterns]
        except PatternError as exc:
            raise PlanError(str(exc)) from None

    def as_dict(self) -> dict[str, Any]:
        """The configuration as plain values, for metadata."""
        return asdict(self)


_CONFIG_KEYS = {f.name for f in fields(SweepConfig)}


def load_config(path: str | Path, base: SweepConfig | None = None) -> SweepConfig:
    """Read a sweep TOML file (keys as in :class:`SweepConfig`, optionally under ``[sweep]``)."""
    path = Path(path)
    table = read_toml(path, "sweep config", PlanError)
    table = table.get("sweep", table)
    unknown = set(table) - _CONFIG_KEYS
    if unknown:
        raise PlanError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_CONFIG_KEYS))})")
    config = base or SweepConfig()
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in ("vdd_v", "trcd_ns", "trp_ns", "temp_c"):
            values[key] = parse_values(value, key, key.rsplit("_", 1)[1])
        elif key == "patterns":
            values[key] = [value] if isinstance(value, str) else list(value) if isinstance(value, list) else value
        else:
            values[key] = value
    try:
        return replace(config, **values)
    except TypeError as exc:
        raise PlanError(f"{path}: {exc}") from None


def _check_types(config: SweepConfig) -> None:
    """One-line errors for settings of the wrong type (from a TOML file, typically)."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for name in ("reps", "seed", "max_error_positions"):
        if not is_int(getattr(config, name)):
            raise PlanError(f"{name} must be an integer, got {getattr(config, name)!r}")
    for name in ("bench", "out"):
        if not isinstance(getattr(config, name), str) or not getattr(config, name):
            raise PlanError(f"{name} must be a non-empty string, got {getattr(config, name)!r}")
    if not is_number(config.tras_ns):
        raise PlanError(f"tras_ns must be a number of ns, got {config.tras_ns!r}")
    for name in ("vdd_v", "trcd_ns", "trp_ns", "temp_c"):
        values = getattr(config, name)
        if values is not None and (not isinstance(values, list) or not all(is_number(v) for v in values)):
            raise PlanError(f"{name} must be a list of numbers, got {values!r}")
    if not isinstance(config.patterns, list) or not config.patterns or not all(isinstance(p, str) for p in config.patterns):
        raise PlanError(f"patterns must be a list of pattern names, got {config.patterns!r}")
    for name in ("banks", "rows"):
        value = getattr(config, name)
        if not (isinstance(value, str) or (isinstance(value, list) and all(is_int(v) for v in value))):
            raise PlanError(f"{name} must be a selection string or a list of integers, got {value!r}")


def build_plan(config: SweepConfig) -> list[Point]:
    """Expand a configuration into its ordered points (no bench needed)."""
    _check_types(config)
    if config.reps < 1:
        raise PlanError(f"reps must be at least 1, got {config.reps}")
    if config.seed < 0:
        raise PlanError(f"seed must be a non-negative integer, got {config.seed}")
    if config.max_error_positions < 0:
        raise PlanError(f"max_error_positions must be >= 0, got {config.max_error_positions}")
    for name in ("trcd_ns", "trp_ns"):
        for value in getattr(config, name):
            if not 0 < value <= 1000:
                raise PlanError(f"{name} {value} outside (0, 1000] ns")
    if not 0 < config.tras_ns <= 10000:
        raise PlanError(f"tras_ns {config.tras_ns} outside (0, 10000] ns")
    patterns = config.resolved_patterns()
    temps: list[float | None] = list(config.temp_c) if config.temp_c else [None]
    vdds: list[float | None] = list(config.vdd_v) if config.vdd_v else [None]
    points = [
        Point(t, v, rcd, rp, config.tras_ns, p.name, rep)
        for t in temps
        for v in vdds
        for rcd in config.trcd_ns
        for rp in config.trp_ns
        for p in patterns
        for rep in range(config.reps)
    ]
    keys = [p.key for p in points]
    if len(set(keys)) != len(keys):
        raise PlanError("the sweep lists a setting twice (duplicate values in a list)")
    return points

"""Fuzz the sweep configuration: TOML files (``load_config`` + ``build_plan``) and value specs.

* A valid sweep TOML document is mutated (keys deleted, added or moved out of ``[sweep]``,
  values swapped for other types, NaN, inf, 5000-digit or Unicode-digit numbers, ranges of
  a trillion values, nested tables) and written as TOML, sometimes with its text damaged too;
  ``load_config`` then ``build_plan`` and the row selection may raise only ``PlanError``,
  with a one-line message, and a plan they accept is bounded and in range.
* Range strings as ``--vdd`` / ``--temp`` take them (``start:stop:step``, comma mixes) and
  row/bank selections: only ``PlanError``, results bounded, finite, returned quickly.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from typing import Any

import pytest
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from profiler.plan import (
    MAX_VALUES_PER_SETTING,
    PlanError,
    build_plan,
    load_config,
    parse_int_list,
    parse_rows,
    parse_values,
)
from profiler.sweep import resolve_rows

pytestmark = pytest.mark.fuzz

MAX_POINTS = 2000
VALID: dict[str, Any] = {
    "bench": "emu://B?seed=0",
    "vdd_v": "1.35:1.2:-0.05",
    "trcd_ns": [13.75, 10.0],
    "trp_ns": 13.75,
    "tras_ns": 35.0,
    "temp_c": [20, 40],
    "banks": "0:2",
    "rows": "sample:4",
    "patterns": ["all-1", "random:3", "checkerboard"],
    "reps": 2,
    "seed": 1,
    "out": "x.h5",
    "max_error_positions": 10,
}

NUMBER_TEXT = st.one_of(
    st.sampled_from(["1.2", "-1", "0", "1e-12", "1e999", "nan", "inf", "\u00b2", "\u0663", "1_0", "9" * 5000,
                     "0x10", "", " ", ".", "-", "1e", "1.35:1.0:-0.05", "0:1:1e-12", "1:0:1", "0:1:0", "1:2",
                     "1:2:3:4", "1e308:-1e308:-1e-308", "0:1e308:1e-308", "all", "sample:\u00b2", "sample:5"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**80), 2**80).map(str),
)
RANGE_SPECS = st.one_of(
    st.lists(NUMBER_TEXT, min_size=1, max_size=3).map(":".join),
    st.lists(st.lists(NUMBER_TEXT, min_size=1, max_size=3).map(":".join), min_size=1, max_size=4).map(",".join),
    st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(-1e3, 1e3)).map(lambda t: f"{t[0]!r}:{t[1]!r}:{t[2]!r}"),
    st.text(max_size=20),
)
# Stand-ins for 5000-digit TOML integers (hypothesis cannot print such an int in a report).
HUGE, NEG_HUGE = "<5000-digit integer>", "<negative 5000-digit integer>"
LEAVES = st.one_of(
    st.none(),  # dropped: TOML has no null
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([HUGE, NEG_HUGE, -1, 0, 2**64, 2**63, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True),
    NUMBER_TEXT,
    RANGE_SPECS,
    st.sampled_from(["all-0", "random:\u00b2", "random:" + "9" * 5000, "file:/dev/zero", "file:/no/such", "file:",
                     "0xZZ", "emu://[B", "", "\x00", "sample:64", "0:99999999999", "0:65536:1"]),
)
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                      max_leaves=8)


def toml_value(value: Any) -> str | None:
    """``value`` in TOML syntax (None for a value TOML cannot hold)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if value in (HUGE, NEG_HUGE):
        return ("-" if value == NEG_HUGE else "") + "9" * 5000
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string (or, with DEL, text TOML refuses)
    if isinstance(value, list):
        items = [toml_value(v) for v in value]
        return "[" + ", ".join(i for i in items if i is not None) + "]"
    if isinstance(value, dict):
        items = [(json.dumps(k, ensure_ascii=False), toml_value(v)) for k, v in value.items()]
        return "{" + ", ".join(f"{k} = {v}" for k, v in items if v is not None) + "}"
    return None


def toml_document(table: dict[str, Any], under_sweep: bool, outside: dict[str, Any]) -> str:
    def assignments(values: dict[str, Any]) -> list[str]:
        pairs = [(json.dumps(k, ensure_ascii=False), toml_value(v)) for k, v in values.items()]
        return [f"{k} = {v}" for k, v in pairs if v is not None]

    lines = assignments(outside)
    if under_sweep:
        lines.append("[sweep]")
    return "\n".join(lines + assignments(table)) + "\n"


def _one_line(exc: BaseException) -> None:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message, repr(message[:300])
    assert len(message) < 600, message[:600]


@fuzz_settings(200)
@given(st.data())
def test_fuzz_sweep_config_file(data: st.DataObject) -> None:
    table = dict(VALID)
    for key in data.draw(st.lists(st.sampled_from(sorted(VALID)), max_size=3, unique=True), label="replace"):
        table[key] = data.draw(VALUES, label=key)
    for key in data.draw(st.lists(st.sampled_from(sorted(VALID)), max_size=2, unique=True), label="delete"):
        table.pop(key, None)
    if data.draw(st.integers(0, 3), label="junk key") == 0:
        table[data.draw(st.text(min_size=1, max_size=6), label="junk")] = data.draw(VALUES, label="junk value")
    under_sweep = data.draw(st.booleans(), label="[sweep]")
    outside = {}
    if data.draw(st.integers(0, 3), label="outside") == 0:
        outside = data.draw(st.dictionaries(st.sampled_from(["sweep", "bench", "x"]), VALUES, max_size=1), label="keys")
    text = toml_document(table, under_sweep, outside)
    raw = text.encode("utf-8", "surrogatepass")
    for _ in range(data.draw(st.sampled_from([0, 0, 0, 1, 2]), label="byte edits")):
        pos = data.draw(st.integers(0, len(raw)), label="pos")
        raw = raw[:pos] + data.draw(st.binary(max_size=3), label="bytes") + raw[pos + 1:]
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        started = time.perf_counter()
        try:
            config = load_config(path)
            plan = build_plan(config, max_points=MAX_POINTS)
            rows = resolve_rows(config, 8, 32768)
        except PlanError as exc:
            _one_line(exc)
            return
        finally:
            assert time.perf_counter() - started < 5.0  # counted, never expanded without bound
    finally:
        os.unlink(path)
    assert 1 <= len(plan) <= MAX_POINTS
    assert rows and all(0 <= b < 8 and 0 <= r < 32768 for b, r in rows)
    for point in plan:
        assert point.vdd_v is None or (math.isfinite(point.vdd_v) and 0 < point.vdd_v <= 5)
        assert point.temp_c is None or (math.isfinite(point.temp_c) and -55 <= point.temp_c <= 150)
        assert 0 < point.trcd_ns <= 1000 and 0 < point.trp_ns <= 1000 and 0 < point.tras_ns <= 10000


@fuzz_settings(400)
@given(RANGE_SPECS, st.sampled_from([("--vdd", "V"), ("temp_c", "C"), ("--trcd", "ns")]))
def test_fuzz_value_specs(text: str, name_unit: tuple[str, str]) -> None:
    name, unit = name_unit
    started = time.perf_counter()
    try:
        values = parse_values(text, name, unit)
    except PlanError as exc:
        _one_line(exc)
        assert name in str(exc)
        return
    finally:
        assert time.perf_counter() - started < 2.0
    assert 1 <= len(values) <= MAX_VALUES_PER_SETTING
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)


@fuzz_settings(300)
@given(st.one_of(NUMBER_TEXT, RANGE_SPECS, st.lists(st.integers(-(2**40), 2**40), max_size=4),
                 st.integers(-(2**70), 2**70), LEAVES),
       st.sampled_from(["rows", "banks"]), st.integers(1, 65536))
def test_fuzz_row_and_bank_selections(text: Any, name: str, limit: int) -> None:
    started = time.perf_counter()
    try:
        chosen = parse_rows(text, limit, seed=3) if name == "rows" else parse_int_list(text, name, 0, limit)
    except PlanError as exc:
        _one_line(exc)
        return
    finally:
        assert time.perf_counter() - started < 2.0
    assert chosen and all(isinstance(v, int) and 0 <= v < limit for v in chosen)
    assert chosen == sorted(set(chosen))

"""Fuzz the bench-file reader and the instrument drivers' SCPI reply parsing.

Documented errors, the only exceptions each target may let out:

* ``softmc_host.bench.load_bench_file`` (``softmc_host.tomlfile.read_toml`` plus the checks
  of ``bench_config_from_table``): :class:`~softmc_host.bench.BenchError`, one line.
* ``softmc_host.tomlfile.read_toml``: the error class it is given.
* the SCPI reply parsers of ``softmc_host.instruments`` (``_parse_float``, ``_parse_bool``,
  ``_parse_register``, ``_parse_error_reply``) and the drivers ``BenchSupply`` /
  ``ThermalController`` talking to an instrument that answers garbage:
  :class:`~softmc_host.instruments.InstrumentError` (and its subclasses), one line.

Inputs: the shipped bench files and variants, as text with mutations (byte flips, cuts,
inserted junk, numbers replaced by NaN, inf, 5000-digit, Unicode-digit or boolean values,
deep nesting) and as tables with values of every TOML type; SCPI replies as arbitrary text
and near-miss numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from softmc_host.bench import BenchConfig, BenchError, bench_config_from_table, load_bench_file
from softmc_host.instruments import (
    SUPPLY_LIMIT_RANGES,
    BenchSupply,
    InstrumentError,
    SupplyLimits,
    ThermalController,
    ThermalLimits,
    _parse_bool,
    _parse_error_reply,
    _parse_float,
    _parse_register,
)
from softmc_host.tomlfile import read_toml

ROOT = Path(__file__).resolve().parents[1]
VALID_TEXTS = [
    (ROOT / "data" / "benches" / "emulated.toml").read_text(encoding="utf-8"),
    (ROOT / "data" / "benches" / "lab-example.toml").read_text(encoding="utf-8"),
    "[tester]\nurl = \"emu://C?seed=3&temp_c=45\"\n[supply]\nresource = \"emu\"\nmax_step_v = 0.025\n",
    "visa_library = \"\"\n[tester]\nurl = \"socket://127.0.0.1:5555\"\ntimeout_s = 2\n"
    "[thermal]\nresource = \"ASRL1::INSTR\"\nmin_c = -10\nmax_c = 85\n",
]
VALID_TABLES = [
    {"tester": {"url": "emu://B?seed=1", "timeout_s": 5.0},
     "supply": {"resource": "emu", "nominal_v": 1.35, "min_v": 0.95, "max_v": 1.4, "max_step_v": 0.05,
                "max_slew_v_per_s": 50.0, "current_limit_a": 2.0},
     "thermal": {"resource": "emu", "min_c": 15.0, "max_c": 90.0, "band_c": 0.5}},
    {"name": "lab", "visa_library": "@py", "tester": {"url": "/dev/ttyUSB0?baudrate=3000000"},
     "supply": {"resource": "TCPIP::192.168.1.30::5025::SOCKET", "nominal_v": 1.35, "min_v": 1.0, "max_v": 1.4,
                "max_step_v": 0.025, "max_slew_v_per_s": 0.5, "current_limit_a": 3, "settle_tol_v": 0.005,
                "settle_timeout_s": 5}},
]

HOSTILE_NUMBERS = ["nan", "+nan", "inf", "-inf", "1e400", "-1e400", "9" * 400, "9" * 5000, "0", "-0.0", "-1",
                   "true", "false", "\"1.35\"", "1_000", "0x10", "0o7", "0b1", "1979-05-27", "07:32:00",
                   "1979-05-27T07:32:00Z", "[]", "[1.35]", "{}", "{a = 1}", "\u00b2", "\u0661.\u0662", "\uff11",
                   "1e-400", "5e-324", "1.7976931348623157e308", "1e6", "3600.0000001", "0.00009"]
NUMBER_TEXT = st.one_of(
    st.sampled_from(HOSTILE_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**30), 10**30).map(str),
)
JUNK = st.one_of(
    st.sampled_from(["\n", "=", "[", "]", "[[", "'", "\"", "\"\"\"", "'''", "#", "\x00", "\r", "\\", "[tester]",
                     "[supply]", "[thermal]", "[power]", "url = 'emu://[B'", "url = 'emu://B?seed=\u00b2'",
                     "url = 'replay://x.h5'", "resource = 'emu'", "nominal_v = nan", "timeout_s = nan",
                     "a = " + "[" * 3000, "a = " + "{b = " * 2000, "x = 1\nx = 2", "\ufeff", "\xff\xfe"]),
    st.text(max_size=12),
)
_NUMBER_AT = re.compile(r"(?<== )[-+0-9.eE_]+")
_VALUE_AT = re.compile(r"(?<== )[^\n#]*")


def _one_line(exc: BaseException) -> None:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message, repr(message[:300])
    assert len(message) < 1000, message[:300]


def _mutate(text: str, data: st.DataObject) -> bytes:
    """Apply a few drawn mutations to a TOML document and return its bytes."""
    for _ in range(data.draw(st.integers(0, 4), label="edits")):
        kind = data.draw(st.sampled_from(["number", "value", "insert", "delete-line", "cut", "swap-lines"]), label="kind")
        if kind in ("number", "value"):
            spots = list((_NUMBER_AT if kind == "number" else _VALUE_AT).finditer(text))
            if spots:
                spot = spots[data.draw(st.integers(0, len(spots) - 1), label="spot")]
                new = data.draw(NUMBER_TEXT if kind == "number" else st.one_of(NUMBER_TEXT, JUNK), label="new")
                text = text[: spot.start()] + new + text[spot.end():]
        elif kind == "insert":
            pos = data.draw(st.integers(0, len(text)), label="pos")
            text = text[:pos] + data.draw(JUNK, label="junk") + text[pos:]
        elif kind == "cut":
            text = text[: data.draw(st.integers(0, len(text)), label="cut")]
        else:
            lines = text.split("\n")
            i = data.draw(st.integers(0, len(lines) - 1), label="line")
            if kind == "delete-line":
                del lines[i]
            else:
                j = data.draw(st.integers(0, len(lines) - 1), label="other")
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    raw = text.encode("utf-8", "surrogatepass")
    for _ in range(data.draw(st.sampled_from([0, 0, 0, 1, 2]), label="byte flips")):
        if raw:
            pos = data.draw(st.integers(0, len(raw) - 1), label="byte")
            raw = raw[:pos] + bytes([data.draw(st.integers(0, 255), label="value")]) + raw[pos + 1:]
    return raw


def _check_config(config: BenchConfig) -> None:
    """What an accepted bench file guarantees."""
    assert isinstance(config.tester_url, str) and isinstance(config.visa_library, str)
    assert isinstance(config.tester_timeout_s, float) and 0 < config.tester_timeout_s <= 3600
    limits = config.supply_limits
    if limits is not None:
        assert isinstance(config.supply_resource, str)
        for name, (lo, _, hi, _) in SUPPLY_LIMIT_RANGES.items():
            value = getattr(limits, name)
            assert isinstance(value, float) and math.isfinite(value) and lo <= value <= hi, (name, value)
        assert limits.min_v <= limits.nominal_v <= limits.max_v
    thermal = config.thermal_limits
    if thermal is not None:
        assert isinstance(config.thermal_resource, str)
        assert all(isinstance(v, float) and math.isfinite(v) for v in (thermal.min_c, thermal.max_c, thermal.band_c))
        assert thermal.min_c <= thermal.max_c and thermal.band_c > 0


def _load(raw: bytes) -> BenchConfig | None:
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        started = time.perf_counter()
        try:
            return load_bench_file(path)
        except BenchError as exc:  # the one documented error
            _one_line(exc)
            return None
        finally:
            assert time.perf_counter() - started < 5.0
    finally:
        os.unlink(path)


@pytest.mark.fuzz
@fuzz_settings(300)
@given(st.data())
def test_fuzz_bench_file_text(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(VALID_TEXTS), label="base")
    config = _load(_mutate(text, data))
    if config is not None:
        _check_config(config)


LEAVES = st.one_of(
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([400, -400, 5000, 0, 1, 19]).map(lambda k: 10**k if k > 0 else -(10 ** -k) if k else -1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.sampled_from(["emu", "emu://B", "emu://[B", "emu://B?seed=\u00b2", "emu://Q", "replay://no.h5", "\x00", "",
                     "1.35", "nan"]),
    st.dates(), st.datetimes(), st.times(),
    st.datetimes(timezones=st.just(dt.timezone.utc)),
)
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                      max_leaves=6)
KEYS = st.sampled_from(["tester", "supply", "thermal", "name", "notes", "visa_library", "url", "timeout_s",
                        "resource", *SUPPLY_LIMIT_RANGES, "min_c", "max_c", "band_c", "bogus", ""])


@pytest.mark.fuzz
@fuzz_settings(300)
@given(st.data())
def test_fuzz_bench_table(data: st.DataObject) -> None:
    """Parsed bench files with values of every TOML type: what ``tomllib`` can hand the checks."""
    table = json.loads(json.dumps(data.draw(st.sampled_from(VALID_TABLES), label="base")))
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        section = data.draw(st.sampled_from([None, "tester", "supply", "thermal"]), label="section")
        target = table if section is None or not isinstance(table.get(section), dict) else table[section]
        action = data.draw(st.sampled_from(["set", "delete"]), label="action")
        key = data.draw(KEYS, label="key")
        if action == "set":
            target[key] = data.draw(VALUES, label="value")
        else:
            target.pop(key, None)
    try:
        config = bench_config_from_table(table, "fuzz.toml")
    except BenchError as exc:  # the one documented error
        _one_line(exc)
        return
    _check_config(config)


class _Oops(Exception):
    """The error class handed to read_toml."""


@pytest.mark.fuzz
@fuzz_settings(200)
@given(st.one_of(st.binary(max_size=200), st.sampled_from([t.encode() for t in VALID_TEXTS]),
                 st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_fuzz_read_toml_bytes(raw: bytes) -> None:
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        try:
            table = read_toml(path, "fuzz file", _Oops)
        except _Oops as exc:  # the error class it was given, and nothing else
            _one_line(exc)
            return
    finally:
        os.unlink(path)
    assert isinstance(table, dict)


# --------------------------------------------------------------------------- SCPI replies

NEAR_NUMBERS = st.one_of(
    st.from_regex(r"\A[ +\-]?[0-9\u0660-\u0669\uff10-\uff19_.]{0,8}([eE][+\-]?[0-9]{0,6})?[ \r\n]?\Z"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["9.91E+37", "9.9E37", "-9.91E37", "1e308", "1e309", "0,\"No error\"", "-113,\"Undefined header\"",
                     "ON", "off", "1;1", "\x00", "\u00b2", "1" * 300, "+0", "65535", "65536", "2.0"]),
)
REPLIES = st.one_of(NEAR_NUMBERS, st.text(max_size=30), st.integers(-(2**70), 2**70).map(str))


@pytest.mark.fuzz
@fuzz_settings(500)
@given(REPLIES)
def test_fuzz_scpi_reply_parsers(reply: str) -> None:
    for parse in (_parse_float, _parse_bool, _parse_register, _parse_error_reply):
        try:
            value = parse(reply, "fuzz?")
        except InstrumentError as exc:  # the drivers' documented error
            _one_line(exc)
            continue
        if parse is _parse_float:
            assert isinstance(value, float) and math.isfinite(value) and abs(value) < 9.9e37
            assert reply.strip(" \t\r\n").isascii() and value == float(reply)
        elif parse is _parse_register:
            assert isinstance(value, int) and 0 <= value <= 0xFFFF
        elif parse is _parse_error_reply:
            assert isinstance(value[0], int) and isinstance(value[1], str)
        else:
            assert isinstance(value, bool)


class _GarbageResource:
    """An instrument that answers each query with the next drawn reply (or fails), then times out."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = list(replies)

    def write(self, message: str) -> None:
        if self.replies and self.replies[0] == "<write fails>":
            self.replies.pop(0)
            raise OSError("connection lost")

    def query(self, message: str) -> str:
        if not self.replies:
            raise TimeoutError("timeout")
        reply = self.replies.pop(0)
        if reply == "<query fails>":
            raise ConnectionResetError("reset")
        return reply

    def close(self) -> None:
        pass


PLAUSIBLE = st.sampled_from(["EDEN-EMU,BENCH-PSU,X,1.0", "0,\"No error\"", "1.350000", "1.300000", "1.200000",
                             "1", "0", "2.000000", "45.000", "<write fails>", "<query fails>"])


@pytest.mark.fuzz
@fuzz_settings(300)
@given(st.lists(st.one_of(PLAUSIBLE, REPLIES), max_size=40), st.booleans())
def test_fuzz_drivers_against_garbage_replies(replies: list[str], thermal: bool) -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        assert 0 <= seconds < 1e6
        clock[0] += seconds

    started = time.perf_counter()
    try:
        if thermal:
            with ThermalController(_GarbageResource(replies), ThermalLimits(0.0, 95.0), sleep=sleep,
                                   clock=lambda: clock[0]) as tec:
                tec.set_point_c = 45.0
                tec.wait_stable(hold_s=0.2, timeout_s=1.0, poll_s=0.1)
        else:
            limits = SupplyLimits(nominal_v=1.35, min_v=1.0, max_v=1.5, max_step_v=0.05, max_slew_v_per_s=50.0,
                                  current_limit_a=2.0, settle_timeout_s=0.5)
            with BenchSupply(_GarbageResource(replies), limits, sleep=sleep, clock=lambda: clock[0]) as psu:
                psu.set_voltage(1.2)
                psu.output_enabled = False
    except InstrumentError as exc:  # the drivers' documented error (limits errors are subclasses)
        _one_line(exc)
    finally:
        assert time.perf_counter() - started < 2.0

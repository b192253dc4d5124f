"""Fuzz the JSON readers: error models (``model_from_dict``), error curves (``Curve.from_dict``),
fitted-model files (``boosting.map.load_model`` / ``partitions_from_model``), tolerance files
(``load_tolerance``) and DRAM configurations (``load_config`` / ``placements``).

Each test mutates a valid document (keys deleted, values swapped for other types, NaN, inf,
huge or Unicode-digit values, deep nesting) and, for files, its text too (flipped bytes,
truncation, junk, ``1e400``, 5000-digit numbers, ``[[[[...``). Only the reader's documented
exception, with a one-line message, may come out.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from boosting.map import (
    Geometry,
    MapError,
    load_config,
    load_model,
    load_tolerance,
    map_network,
    nominal_of,
    partitions_from_model,
    placements,
)
from errormodels.curves import Curve, curves_for
from errormodels.models import MODELS, ModelError, get_model, model_from_dict

pytestmark = pytest.mark.fuzz

# ----------------------------------------------------------------------------- valid documents
MODEL_DOCS = [
    get_model("uniform", ber=1e-3, seed=3).to_dict(),
    get_model("wordline", ber=1e-3, weak_fraction=0.02, ratio=40.0, group_bits=64, seed=7).to_dict(),
    get_model("bitline", ber=1e-4, weak_fraction=0.1, ratio=5.0).to_dict(),
    get_model("bit-value", ber=1e-2, zero_share=0.6).to_dict(),
]


def _curve_doc(param: str, xs: list[float], flips: list[int], n: int = 1_000_000) -> dict[str, Any]:
    others = {"vdd_v": 1.35, "trcd_ns": 13.75, "trp_ns": 13.75, "temp_c": None}
    cells = {}
    for x, k in zip(xs, flips):
        setting = dict(others, **{param: x})
        cells[tuple(setting[p] for p in ("vdd_v", "trcd_ns", "trp_ns", "temp_c"))] = (k, n)
    return curves_for(cells, nominal_vdd=1.35)[param].to_dict()


VDD_CURVE = _curve_doc("vdd_v", [1.0, 1.1, 1.2, 1.35], [50_000, 900, 3, 0])
TRCD_CURVE = _curve_doc("trcd_ns", [7.5, 10.0, 13.75], [4000, 20, 0])
CURVE_DOCS = [VDD_CURVE, TRCD_CURVE]
MODEL_FILE_DOC = {
    "format": "eden-error-model",
    "format_version": 1,
    "software": "fuzz",
    "source": {"file": "x.h5", "sha256": "0" * 64, "points": ["p0"],
               "setting": {"vdd_v": 1.0, "trcd_ns": 13.75, "trp_ns": 13.75, "temp_c": None}, "dimm": {"seed": 1}},
    "partition": "bank",
    "criterion": "bic",
    "selected_model": "uniform",
    "partitions": {f"bank{b}": {"selected": MODEL_DOCS[0], "curves": {"vdd_v": VDD_CURVE, "trcd_ns": TRCD_CURVE}}
                   for b in range(3)},
}
GEO = Geometry(banks=4, rows=64, columns=128)  # 1 KiB rows on the 64-bit bus
SIZES = {("conv1", "weight"): 1500, ("conv1", "ifm"): 800, ("fc", "weight"): 3000}
TOLERANCE_DOC = {
    "format": "eden-tolerance", "format_version": 1, "fmt": "int8", "mitigation": "zero",
    "coarse": {"ber": 1e-4, "found": True, "baseline": 0.97, "goal": 0.96, "probes": []},
    "fine": {"bers": [["conv1", "weight", 2e-4], ["conv1", "ifm", 1e-3], ["fc", "weight", 5e-4]], "start_ber": 1e-4},
}
CONFIG_DOC = json.loads(json.dumps(map_network(
    partitions_from_model(MODEL_FILE_DOC, GEO), load_tolerance(TOLERANCE_DOC)[0], SIZES,
    mode="power", granularity="fine", geometry=GEO, source={"model_file": "m.json"})))

# ----------------------------------------------------------------------------- mutations
SPECIAL_STRINGS = ["", " ", "²", "٣", "12", "bank²", "bank٣", "rows0-٣", "rows5-2", "chip0", "all", "bank0",
                   "weight", "ifm", "uniform", "wordline", "3", "1e400", "NaN", "Infinity", "\n", "\x00", "é" * 3]
SPECIAL_NUMBERS = [0, -1, 1, 2, 3, 64, 2**31, 2**63, 2**64, 2**70, -(2**70), 0.0, -0.0, 0.5, 1.0, 1.0000001,
                   1e-300, 5e-324, 1e308, -1e308, math.nan, math.inf, -math.inf]


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def json_values(huge: bool) -> st.SearchStrategy[Any]:
    """Values a mutation puts in a document; ``huge``: also integers beyond JSON's digit limit
    and nesting deeper than the JSON module can write (for readers that take Python objects)."""
    leaves = st.one_of(
        st.none(), st.booleans(), st.integers(), st.sampled_from(SPECIAL_NUMBERS),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.sampled_from(SPECIAL_STRINGS),
    )
    small = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
    extra = [st.integers(2, 200).map(_nested)]
    if huge:
        extra += [st.sampled_from([10**400, -(10**400), 10**5000]), st.integers(900, 5000).map(_nested)]
    return st.one_of(small, *extra)


MAX_PATH = 12  # mutations go at most this deep; deeper containers are shared, not copied


def _copy(doc: Any, depth: int = 0) -> Any:
    """Copy of the containers down to MAX_PATH levels (deeper ones shared: no recursion limit)."""
    if depth > MAX_PATH:
        return doc
    if isinstance(doc, dict):
        return {k: _copy(v, depth + 1) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy(v, depth + 1) for v in doc]
    return doc


def _paths(doc: Any) -> list[tuple]:
    """Every position in a document down to MAX_PATH levels (the root is ``()``)."""
    out, stack = [], [((), doc)]
    while stack:
        path, value = stack.pop()
        out.append(path)
        if len(path) >= MAX_PATH:
            continue
        if isinstance(value, dict):
            stack.extend((path + (k,), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((path + (i,), v) for i, v in enumerate(value))
    return sorted(out, key=repr)


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def mutate(draw: st.DrawFn, doc: Any, values: st.SearchStrategy[Any], max_steps: int = 3) -> Any:
    """A deep copy of ``doc`` with 1..max_steps structural mutations."""
    doc = _copy(doc)
    for _ in range(draw(st.integers(1, max_steps))):
        paths = _paths(doc)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        op = draw(st.sampled_from(["replace", "replace", "delete", "wrap", "stringify", "duplicate", "add"]))
        value = _get(doc, path)
        if op == "replace" or not path and op in ("delete", "duplicate"):
            new = draw(values)
        elif op == "wrap":
            shape = draw(st.sampled_from(["list", "dict", "deep"]))
            new = [value] if shape == "list" else {"value": value} if shape == "dict" else [_nested(draw(st.integers(1, 80))), value]
        elif op == "stringify":
            try:
                new = json.dumps(value, default=str) if draw(st.booleans()) else str(value)
            except (ValueError, RecursionError):  # huge ints, deep nesting: no text form
                new = "?"
        elif op == "add":
            if isinstance(value, dict):
                value[draw(st.sampled_from(["extra", "model", "number", "fmt", "²", "bers", "ber", "curves"]))] = draw(values)
            elif isinstance(value, list):
                value.insert(draw(st.integers(0, len(value))), draw(values))
            continue
        else:  # delete / duplicate an element of its parent
            parent, key = _get(doc, path[:-1]), path[-1]
            if op == "delete":
                del parent[key]
            elif isinstance(parent, list):
                parent.insert(key, _copy(value))
            else:
                parent[key] = [value, value]
            continue
        if not path:
            doc = new
        else:
            _get(doc, path[:-1])[path[-1]] = new
    return doc


HUGE_LITERALS = ["1e400", "-1e400", "1" * 400, "1" * 5000, "-" + "9" * 4400, "NaN", "Infinity", "-Infinity",
                 "1.5", "true", "null", "\"²\"", "\"٣\"", "[" * 3000 + "]" * 3000, "{\"a\":" * 2000 + "0" + "}" * 2000]


def damage_text(draw: st.DrawFn, text: str) -> bytes:
    """0..2 text-level mutations of a JSON document, as bytes (possibly not UTF-8)."""
    data = bytearray(text.encode("utf-8"))
    for _ in range(draw(st.integers(0, 2))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "junk", "literal", "digit", "truncate"]))
        if op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[at: at + draw(st.integers(1, 30))]
        elif op == "truncate":
            del data[at:]
        elif op == "junk":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        elif op == "digit":  # a Unicode digit for an ASCII one
            digits = [i for i, c in enumerate(data) if 0x30 <= c <= 0x39]
            if digits:
                i = digits[at % len(digits)]
                data[i:i + 1] = draw(st.sampled_from(["²", "٣", "３", "߁"])).encode("utf-8")
        else:  # a number or a value replaced by a nasty literal
            numbers = [i for i, c in enumerate(data) if 0x30 <= c <= 0x39 and (i == 0 or not 0x30 <= data[i - 1] <= 0x39)]
            i = numbers[at % len(numbers)] if numbers else at
            j = i
            while j < len(data) and (0x30 <= data[j] <= 0x39 or data[j] in b".eE+-"):
                j += 1
            data[i:j] = draw(st.sampled_from(HUGE_LITERALS)).encode("utf-8")
    return bytes(data)


@st.composite
def documents(draw: st.DrawFn, bases: list[Any], huge: bool) -> Any:
    return mutate(draw, draw(st.sampled_from(bases)), json_values(huge))


@st.composite
def files(draw: st.DrawFn, base: Any) -> bytes:
    doc = mutate(draw, base, json_values(False)) if draw(st.integers(0, 4)) else base
    try:
        text = json.dumps(doc, indent=draw(st.sampled_from([None, 1])))
    except (ValueError, RecursionError):  # a value the json module cannot write: the original then
        text = json.dumps(base)
    return damage_text(draw, text)


def expect_only(error: type[Exception], call: Callable[[], Any]) -> Any:
    """Run ``call``; only ``error`` with a one-line, non-empty message may come out."""
    try:
        return call()
    except error as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return None


def with_file(data: bytes, read: Callable[[Path], Any]) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.json"
        path.write_bytes(data)
        return read(path)


# ----------------------------------------------------------------------------- tests
@fuzz_settings(200)
@given(documents(MODEL_DOCS, huge=True))
def test_fuzz_model_dict(doc: Any) -> None:
    model = expect_only(ModelError, lambda: model_from_dict(doc))
    if model is not None:  # what was accepted is a usable model
        assert type(model) in MODELS.values() and 0.0 <= model.ber <= 1.0
        assert model_from_dict(json.loads(json.dumps(model.to_dict()))) == model
        model.describe()
        model.with_ber(0.5)


@fuzz_settings(200)
@given(st.one_of(st.text(max_size=6), st.sampled_from(SPECIAL_STRINGS + ["bit-value", " 0 ", "0", "03", "٠", "𝟎"]),
                 json_values(True)))
def test_fuzz_model_name(name: Any) -> None:
    model = expect_only(ModelError, lambda: get_model(name))
    if model is not None and isinstance(name, str) and name.strip().isdigit():
        assert name.strip().isascii()


@fuzz_settings(200)
@given(documents(CURVE_DOCS, huge=True), st.floats(allow_nan=False, allow_infinity=False, width=32),
       st.floats(1e-12, 1.0))
def test_fuzz_curve_dict(doc: Any, x: float, max_ber: float) -> None:
    curve = expect_only(ModelError, lambda: Curve.from_dict(doc))
    if curve is not None:  # what was accepted answers queries
        assert 0.0 <= curve.at(x) <= 1.0
        safe = curve.lowest_safe(max_ber)
        assert safe is None or math.isfinite(safe)
        Curve.from_dict(json.loads(json.dumps(curve.to_dict())))


def _use_model_file(path: Path) -> None:
    doc = load_model(path)
    parts = partitions_from_model(doc, GEO)
    nominal = nominal_of(parts, doc.get("source", {}).get("setting"))
    for mode in ("power", "latency"):
        map_network(parts, 1e-4, SIZES, mode=mode, granularity="fine", geometry=GEO, nominal=nominal)


@fuzz_settings(150)
@given(files(MODEL_FILE_DOC))
def test_fuzz_model_file(data: bytes) -> None:
    expect_only(MapError, lambda: with_file(data, _use_model_file))


@fuzz_settings(150)
@given(files(TOLERANCE_DOC))
def test_fuzz_tolerance_file(data: bytes) -> None:
    result = expect_only(MapError, lambda: with_file(data, load_tolerance))
    if result is not None:
        bers, fmt = result
        assert fmt is None or isinstance(fmt, str)
        values = [bers] if isinstance(bers, float) else list(bers.values())
        assert all(isinstance(v, float) and 0.0 < v <= 1.0 for v in values)


@fuzz_settings(150)
@given(files(CONFIG_DOC))
def test_fuzz_config_file(data: bytes) -> None:
    def read(path: Path) -> None:
        config = load_config(path)
        for amap in placements(config).values():
            assert 0 <= amap.bank < amap.banks
    expect_only(MapError, lambda: with_file(data, read))


@fuzz_settings(120)
@given(documents([CONFIG_DOC], huge=True))
def test_fuzz_config_dict(doc: Any) -> None:
    expect_only(MapError, lambda: placements(doc))


@fuzz_settings(120)
@given(documents([TOLERANCE_DOC], huge=True))
def test_fuzz_tolerance_dict(doc: Any) -> None:
    expect_only(MapError, lambda: load_tolerance(doc))

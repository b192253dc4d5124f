"""Fuzz the BER-map reader with mutated HDF5 maps: only MapError may come out.

A small valid map is written once with the toolkit (``MapWriter``) into one temporary
directory; every example writes a mutated copy there and reads it the way ``errormodels.fit``
and ``replay://`` do (``BerMap``: keys, summary, every point in full; ``ReplayDimm``; the fit's
observations).  Mutations are (a) byte-level damage of the file (flips, overwrites, inserted
junk, truncation) and (b) structural edits with h5py (members deleted, types and shapes
changed, wrong JSON, NaN / inf / negative / huge values, flips > bits, links).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from errormodels.fit import FitError, FitWarning, observe
from emubench.replay import ReplayDimm
from profiler.storage import ERROR_DTYPE, BerMap, MapError
from test_map_errors import META, W, write_map  # the same small valid map

KEYS = ("p0", "p1", "p2")  # the points write_map writes
FILE_ATTRS = ("format", "format_version", "software", "created_utc", "bench_json", "dimm_json", "geometry_json",
              "config_json", "identity_json", "patterns_json", "units_json")
POINT_ATTRS = ("vdd_v", "trcd_ns", "trp_ns", "tras_ns", "temp_c", "pattern", "rep", "index", "errors_truncated",
               "complete", "effective_trcd_ns", "effective_trp_ns")
DATASETS = ("rows", "bits_tested", "flips_0to1", "flips_1to0", "bitline_0to1", "bitline_1to0", "errors")

_TMP = tempfile.TemporaryDirectory(prefix="eden-fuzz-maps-")
_DIR = Path(_TMP.name)


def _base_map() -> bytes:
    meta = dict(META, software="fuzz")
    return write_map(_DIR / "base.h5", meta).read_bytes()


BASE = _base_map()
TARGET = _DIR / "mutated.h5"


def read_map(path: Path) -> None:
    """Read a map as errormodels.fit and replay:// do; only MapError (and, from the fit, FitError) may escape."""
    try:
        ber_map = BerMap(path)
        keys = ber_map.keys()
        ber_map.summary()
        ber_map.check()
        ReplayDimm(ber_map, lambda: (1.35, 20.0), 2.5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            for partition in ("dimm", "chip"):
                try:
                    observe(ber_map, keys, partition)
                except FitError:
                    pass
    except MapError as exc:
        assert "\n" not in str(exc)


# (a) byte-level damage ------------------------------------------------------------------------

_positions = st.integers(0, len(BASE) - 1)
byte_damage = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(_positions, st.integers(0, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("overwrite"), st.tuples(_positions, st.binary(min_size=1, max_size=64))),
    st.tuples(st.just("insert"), st.tuples(_positions, st.binary(min_size=1, max_size=32))),
    st.tuples(st.just("truncate"), _positions),
    st.tuples(st.just("zero"), st.tuples(_positions, st.integers(1, 512))),
)


def damage(kind: str, arg) -> bytes:
    data = bytearray(BASE)
    if kind == "flip":
        for position, value in arg:
            data[position] ^= value or 1
    elif kind == "overwrite":
        position, junk = arg
        data[position:position + len(junk)] = junk
    elif kind == "insert":
        position, junk = arg
        data[position:position] = junk
    elif kind == "truncate":
        del data[arg:]
    else:
        position, n = arg
        data[position:position + n] = bytes(min(n, len(data) - position))
    return bytes(data)


@pytest.mark.fuzz
@fuzz_settings(120)
@given(byte_damage)
def test_damaged_bytes(mutation) -> None:
    TARGET.write_bytes(damage(*mutation))
    read_map(TARGET)


# (b) structural edits with h5py --------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_geometry_values = st.sampled_from([2, 0, -1, 1, 64, 8, 7, 63, 2**32, 2**40, 1.5, 1e400, "2", None, True, [2]])
json_texts = st.one_of(
    _json_values.map(lambda v: json.dumps(v)),
    st.fixed_dictionaries({"banks": _geometry_values, "rows": _geometry_values, "row_bytes": _geometry_values},
                          optional={"tck_ns": _geometry_values}).map(json.dumps),
    st.fixed_dictionaries({}, optional={"supply": st.one_of(_json_values, st.fixed_dictionaries(
        {"nominal_v": st.one_of(st.floats(), st.integers(), st.text(max_size=4), st.none())}))}).map(json.dumps),
    st.dictionaries(st.text(max_size=6), st.one_of(st.text(max_size=8), _json_values), max_size=3).map(json.dumps),
    st.integers(1, 20_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 200_000).map(lambda n: "[" * n),
    st.sampled_from(["", "{", "1e400", "NaN", "9" * 5000, '{"banks": 2,', "\x00", "{}"]),
    st.text(max_size=20),
)
attr_values = st.one_of(
    st.integers(-2**63, 2**63 - 1).map(np.int64),
    st.integers(0, 2**64 - 1).map(np.uint64),
    st.integers(-128, 127).map(np.int8),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=32).map(np.float32),
    st.booleans(),
    st.text(max_size=12),
    st.binary(max_size=12).map(np.bytes_),
    st.lists(st.integers(-300, 300), min_size=0, max_size=4).map(lambda v: np.array(v, np.int64)),
    st.lists(st.floats(), min_size=1, max_size=3).map(np.array),
    json_texts,
)
array_values = st.one_of(
    hnp.arrays(
        dtype=st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(sizes=(32, 64)),
                        st.just(np.dtype(bool)), st.just(np.dtype("S4"))),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
    ),
    hnp.arrays(dtype=st.sampled_from([np.dtype(ERROR_DTYPE), np.dtype([("bank", "i4"), ("row", "f8")]),
                                      np.dtype([("bank", "u1"), ("row", "u4"), ("bit", "i8"), ("dir", "i2")])]),
               shape=st.integers(0, 12)),
)
element_values = st.one_of(st.integers(-2**31, 2**32), st.sampled_from([W, W + 1, 2 * W, 2**31, 64, 63, 2]))

edits = st.one_of(
    st.tuples(st.just("del-file-attr"), st.sampled_from(FILE_ATTRS)),
    st.tuples(st.just("set-file-attr"), st.tuples(st.sampled_from(FILE_ATTRS), attr_values)),
    st.tuples(st.just("del-point-attr"), st.tuples(st.sampled_from(KEYS), st.sampled_from(POINT_ATTRS))),
    st.tuples(st.just("set-point-attr"), st.tuples(st.sampled_from(KEYS), st.sampled_from(POINT_ATTRS), attr_values)),
    st.tuples(st.just("del-dataset"), st.tuples(st.sampled_from(KEYS), st.sampled_from(DATASETS))),
    st.tuples(st.just("replace-dataset"), st.tuples(st.sampled_from(KEYS), st.sampled_from(DATASETS), array_values)),
    st.tuples(st.just("set-element"), st.tuples(st.sampled_from(KEYS), st.sampled_from(DATASETS),
                                                 st.integers(0, 40), element_values)),
    st.tuples(st.just("banks-attr"), st.tuples(st.sampled_from(KEYS), st.sampled_from(("bitline_0to1", "bitline_1to0")),
                                                st.one_of(st.none(), attr_values))),
    st.tuples(st.just("points"), st.sampled_from(("dataset", "delete", "soft-link", "external-link", "empty"))),
    st.tuples(st.just("point"), st.tuples(st.sampled_from(KEYS),
                                          st.sampled_from(("dataset", "soft-link", "external-link", "rows-link")))),
)


def _set_element(group: h5py.Group, name: str, position: int, value: int) -> None:
    data = group[name][()]
    if not data.size:
        return
    flat = data.reshape(-1).copy()
    i = position % flat.size
    if flat.dtype.names:
        field = flat.dtype.names[position % len(flat.dtype.names)]
        info = np.iinfo(flat.dtype[field])
        flat[field][i] = min(max(value, info.min), info.max)
    else:
        info = np.iinfo(flat.dtype)
        flat[i] = min(max(value, info.min), info.max)
    group[name][...] = flat.reshape(data.shape)


def edit(fh: h5py.File, kind: str, arg) -> None:
    if kind == "del-file-attr":
        fh.attrs.pop(arg, None)
    elif kind == "set-file-attr":
        fh.attrs[arg[0]] = arg[1]
    elif kind == "del-point-attr":
        fh["points"][arg[0]].attrs.pop(arg[1], None)
    elif kind == "set-point-attr":
        fh["points"][arg[0]].attrs[arg[1]] = arg[2]
    elif kind == "del-dataset":
        del fh["points"][arg[0]][arg[1]]
    elif kind == "replace-dataset":
        group = fh["points"][arg[0]]
        attrs = dict(group[arg[1]].attrs)
        del group[arg[1]]
        group[arg[1]] = arg[2]
        group[arg[1]].attrs.update(attrs)
    elif kind == "set-element":
        _set_element(fh["points"][arg[0]], arg[1], arg[2], arg[3])
    elif kind == "banks-attr":
        attrs = fh["points"][arg[0]][arg[1]].attrs
        if arg[2] is None:
            attrs.pop("banks", None)
        else:
            attrs["banks"] = arg[2]
    elif kind == "points":
        if arg != "empty":
            del fh["points"]
        if arg == "dataset":
            fh["points"] = np.arange(3)
        elif arg == "soft-link":
            fh["points"] = h5py.SoftLink("/points")
        elif arg == "external-link":
            fh["points"] = h5py.ExternalLink(str(_DIR / "base.h5"), "/points")
        elif arg == "empty":
            for key in KEYS:
                del fh["points"][key]
    else:
        key, how = arg
        group = fh["points"]
        if how == "rows-link":
            del group[key]["rows"]
            group[key]["rows"] = h5py.SoftLink(f"/points/{key}/bits_tested")
            return
        del group[key]
        if how == "dataset":
            group[key] = np.arange(4)
            group[key].attrs["complete"] = True
        elif how == "soft-link":
            group[key] = h5py.SoftLink("/points/p0")
        else:
            group[key] = h5py.ExternalLink(str(_DIR / "base.h5"), "/points/p0")


@pytest.mark.fuzz
@fuzz_settings(200)
@given(st.lists(edits, min_size=1, max_size=3))
def test_structural_edits(mutations) -> None:
    TARGET.write_bytes(BASE)
    with h5py.File(TARGET, "r+", locking=False) as fh:
        for kind, arg in mutations:
            try:
                edit(fh, kind, arg)
            except Exception:  # noqa: BLE001 - the mutation, not the reader: h5py cannot write that
                pass  # value, or an earlier edit removed the member; the map is mutated less
    read_map(TARGET)


def test_base_map_reads_cleanly() -> None:
    TARGET.write_bytes(BASE)
    assert BerMap(TARGET).check() == 3
    read_map(TARGET)

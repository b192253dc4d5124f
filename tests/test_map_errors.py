"""Malformed BER maps: every one becomes one MapError naming the point and the member, and the
command-line tools exit 2 with that line; the format doc and the reader agree (issue 12, item 6)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from errormodels import fit
from profiler import plot
from profiler.patterns import parse_pattern
from emubench.replay import ReplayDimm, ReplayError, check_replay_map
from profiler.storage import ERROR_DTYPE, REQUIRED_FILE_ATTRS, REQUIRED_POINT_ATTRS, BerMap, MapError, MapWriter, PointData

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ber-map-format.md"
ROW_BYTES = 64
W = ROW_BYTES * 8
ROWS = [(0, 5), (0, 17), (1, 5), (1, 40)]
META = {"software": "test", "geometry": {"banks": 2, "rows": 64, "row_bytes": ROW_BYTES, "tck_ns": 2.5},
        "patterns": {"all-0": "all-0", "all-1": "all-1"}, "bench": {"supply": {"nominal_v": 1.35}}}
# (vdd_v, pattern, flips per row): 1->0 flips with all-1, 0->1 flips with all-0.
POINTS = [(1.35, "all-1", [0, 0, 0, 0]), (1.1, "all-1", [1, 2, 0, 3]), (1.1, "all-0", [2, 0, 1, 0])]


def write_map(path: Path, meta: dict = META) -> Path:
    """A small valid map written by the toolkit: points p0, p1, p2."""
    writer = MapWriter(path, meta, {"test": path.name})
    writer.open()
    rows = np.array(ROWS, np.uint32)
    for index, (vdd_v, pattern, flips) in enumerate(POINTS):
        d = int(pattern == "all-0")
        errors = np.array([(b, r, 7 * k + 1, d) for (b, r), n in zip(ROWS, flips) for k in range(n)], ERROR_DTYPE)
        counts = np.array(flips, np.uint32)
        lines = [np.zeros((2, W), np.uint32), np.zeros((2, W), np.uint32)]
        np.add.at(lines[1 - d], (errors["bank"], errors["bit"]), 1)
        writer.write(PointData(
            key=f"p{index}",
            attrs={"vdd_v": vdd_v, "trcd_ns": 13.75, "trp_ns": 13.75, "tras_ns": 35.0, "temp_c": None,
                   "pattern": pattern, "rep": 0, "index": index, "errors_truncated": False,
                   "effective_trcd_ns": 15.0, "effective_trp_ns": 15.0},
            rows=rows, bits_tested=np.full(len(ROWS), W, np.uint64),
            flips_0to1=counts if d else np.zeros_like(counts), flips_1to0=np.zeros_like(counts) if d else counts,
            bitline_banks=np.array([0, 1], np.uint8), bitline_0to1=lines[1], bitline_1to0=lines[0], errors=errors))
    writer.finish(complete=True)
    return path


def read_everything(path: Path) -> BerMap:
    """Everything the toolkit reads of a map: listing, summaries, every point in full, replay, a fit."""
    ber_map = BerMap(path)
    ber_map.keys()
    ber_map.summary()
    ber_map.check()
    plot.read_point_rows(ber_map)
    ReplayDimm(ber_map, lambda: (1.35, 20.0), 2.5)
    fit.observe(ber_map, ber_map.keys(), "chip")
    fit.observe(ber_map, ber_map.keys(), "bank")
    return ber_map


def _replace(group: h5py.Group, name: str, data: np.ndarray, keep_attrs: bool = True) -> None:
    attrs = dict(group[name].attrs) if keep_attrs else {}
    del group[name]
    group[name] = data
    group[name].attrs.update(attrs)


def _set(group_path: str, name: str, value) -> Callable[[h5py.File], None]:
    def mutate(fh: h5py.File) -> None:
        fh[group_path].attrs[name] = value
    return mutate


def _delete(path: str, attr: str | None = None) -> Callable[[h5py.File], None]:
    def mutate(fh: h5py.File) -> None:
        if attr is None:
            del fh[path]
        else:
            del fh[path].attrs[attr]
    return mutate


def _edit(dataset: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    def mutate(fh: h5py.File) -> None:
        group_path, name = dataset.rsplit("/", 1)
        _replace(fh[group_path], name, change(fh[dataset][()]))
    return mutate


def _flips_over_bits(values: np.ndarray) -> np.ndarray:
    values = values.copy()
    values[1] = W + 1
    return values


def _half_and_more(values: np.ndarray) -> np.ndarray:
    return np.full_like(values, W // 2 + 1)


def _points_dataset(fh: h5py.File) -> None:
    del fh["points"]
    fh["points"] = np.zeros(3)


def _point_dataset(fh: h5py.File) -> None:
    del fh["points/p1"]
    fh["points/p1"] = np.arange(4)
    fh["points/p1"].attrs["complete"] = True


def _error_elsewhere(errors: np.ndarray) -> np.ndarray:
    errors = errors.copy()
    errors["row"][0] = 63  # a row the point did not measure
    return errors


def _error_dir(errors: np.ndarray) -> np.ndarray:
    errors = errors.copy()
    errors["dir"][0] = 2
    return errors


def _vlen_attr(fh: h5py.File) -> None:
    value = np.empty((), dtype=h5py.vlen_dtype(np.int32))
    value[()] = np.arange(3, dtype=np.int32)
    del fh["points/p1"].attrs["pattern"]
    fh["points/p1"].attrs.create("pattern", value)


def _external_link(fh: h5py.File) -> None:
    del fh["points/p1/rows"]
    fh["points/p1/rows"] = h5py.ExternalLink("elsewhere.h5", "/rows")


def _never_written(fh: h5py.File) -> None:
    # Shapes that agree, but no data behind them: reading would allocate 100 MB of fill values.
    group = fh["points/p1"]
    for name, shape in (("rows", (1 << 22, 2)), ("bits_tested", (1 << 22,)), ("flips_0to1", (1 << 22,)),
                        ("flips_1to0", (1 << 22,))):
        del group[name]
        group.create_dataset(name, shape=shape, dtype="<u8", chunks=True)


# (id, mutation, fragments the one-line message must contain)
CASES = [
    ("no-bits_tested", _delete("points/p1/bits_tested"), ["point p1", "bits_tested", "missing"]),
    ("no-rows", _delete("points/p1/rows"), ["point p1", "rows", "missing"]),
    ("no-flips_0to1", _delete("points/p1/flips_0to1"), ["point p1", "flips_0to1", "missing"]),
    ("no-flips_1to0", _delete("points/p2/flips_1to0"), ["point p2", "flips_1to0", "missing"]),
    ("no-errors", _delete("points/p1/errors"), ["point p1", "errors", "missing"]),
    ("no-bitline", _delete("points/p0/bitline_1to0"), ["point p0", "bitline_1to0", "missing"]),
    ("no-banks-attr", _delete("points/p1/bitline_0to1", "banks"), ["point p1", "bitline_0to1", "banks", "missing"]),
    ("banks-attr-wrong", _set("points/p1/bitline_0to1", "banks", np.array([0, 7], np.uint8)),
     ["point p1", "bitline_0to1", "banks"]),
    ("geometry-missing", _delete("/", "geometry_json"), ["geometry_json", "missing"]),
    ("geometry-broken", _set("/", "geometry_json", '{"banks": 2, "rows": 64,'), ["geometry_json", "not valid JSON"]),
    ("geometry-list", _set("/", "geometry_json", "[2, 64, 64]"), ["geometry_json", "JSON object"]),
    ("geometry-string-banks", _set("/", "geometry_json", '{"banks": "2", "rows": 64, "row_bytes": 64}'),
     ["geometry_json", "banks"]),
    ("geometry-no-row_bytes", _set("/", "geometry_json", '{"banks": 2, "rows": 64}'), ["geometry_json", "row_bytes"]),
    ("geometry-int", _set("/", "geometry_json", np.int64(5)), ["geometry_json", "string"]),
    ("geometry-deep", _set("/", "geometry_json", "[" * 100_000), ["geometry_json", "not valid JSON"]),
    ("geometry-huge-number", _set("/", "geometry_json", '{"banks": 2, "rows": 1e400, "row_bytes": 64}'),
     ["geometry_json", "rows"]),
    ("patterns-missing", _delete("/", "patterns_json"), ["patterns_json", "missing"]),
    ("patterns-not-strings", _set("/", "patterns_json", '{"all-1": 5}'), ["patterns_json", "all-1"]),
    ("bench-supply-list", _set("/", "bench_json", '{"supply": [1.35]}'), ["bench_json", "supply"]),
    ("nominal-string", _set("/", "bench_json", '{"supply": {"nominal_v": "1.35"}}'), ["bench_json", "nominal_v"]),
    ("format-version-string", _set("/", "format_version", "1"), ["format_version", "integer"]),
    ("format-bytes-wrong", _set("/", "format", np.bytes_(b"other")), ["not a BER map"]),
    ("points-dataset", _points_dataset, ["/points", "dataset"]),
    ("point-dataset", _point_dataset, ["p1", "dataset"]),
    ("vdd-missing", _delete("points/p1", "vdd_v"), ["point p1", "vdd_v", "missing"]),
    ("temp-missing", _delete("points/p1", "temp_c"), ["point p1", "temp_c", "missing"]),
    ("truncated-flag-missing", _delete("points/p1", "errors_truncated"), ["point p1", "errors_truncated", "missing"]),
    ("index-missing", _delete("points/p1", "index"), ["point p1", "index", "missing"]),
    ("vdd-inf", _set("points/p1", "vdd_v", np.inf), ["point p1", "vdd_v"]),
    ("vdd-negative", _set("points/p1", "vdd_v", -1.0), ["point p1", "vdd_v"]),
    ("vdd-string", _set("points/p1", "vdd_v", "1.1"), ["point p1", "vdd_v", "number"]),
    ("vdd-bool", _set("points/p1", "vdd_v", True), ["point p1", "vdd_v", "number"]),
    ("trcd-array", _set("points/p1", "trcd_ns", np.array([1.0, 2.0])), ["point p1", "trcd_ns", "number"]),
    ("index-float", _set("points/p1", "index", 1.5), ["point p1", "index", "integer"]),
    ("complete-string", _set("points/p1", "complete", "yes"), ["point p1", "complete", "boolean"]),
    ("pattern-vlen", _vlen_attr, ["point p1", "pattern", "unsupported HDF5 type"]),
    ("flips-over-bits", _edit("points/p1/flips_1to0", _flips_over_bits), ["point p1", "flips_1to0", "exceeds"]),
    ("flips-sum-over-bits", lambda fh: (_edit("points/p1/flips_1to0", _half_and_more)(fh),
                                        _edit("points/p1/flips_0to1", _half_and_more)(fh)),
     ["point p1", "exceed bits_tested"]),
    ("flips-negative", _edit("points/p1/flips_1to0", lambda v: v.astype(np.int32) - 5), ["point p1", "flips_1to0", "negative"]),
    ("bits-floats", _edit("points/p1/bits_tested", lambda v: v.astype(np.float64)), ["point p1", "bits_tested", "integers"]),
    ("bits-strings", _edit("points/p1/bits_tested", lambda v: v.astype("S8")), ["point p1", "bits_tested", "integers"]),
    ("rows-shape", _edit("points/p1/rows", lambda v: np.zeros((4, 3), np.uint32)), ["point p1", "rows", "shape"]),
    ("rows-outside", _edit("points/p1/rows", lambda v: v + 100), ["point p1", "rows", "geometry"]),
    ("rows-short", _edit("points/p1/rows", lambda v: v[:3]), ["point p1", "shape"]),
    ("errors-elsewhere", _edit("points/p1/errors", _error_elsewhere), ["point p1", "errors", "not in rows"]),
    ("errors-dir", _edit("points/p1/errors", _error_dir), ["point p1", "errors", "dir"]),
    ("errors-fewer", _edit("points/p1/errors", lambda e: e[:-1]), ["point p1", "errors", "positions"]),
    ("errors-floats", _edit("points/p1/errors", lambda e: np.zeros(len(e))), ["point p1", "errors", "compound"]),
    ("bitline-shape", _edit("points/p1/bitline_0to1", lambda v: v[:, :8]), ["point p1", "bitline_0to1", "shape"]),
    ("external-link", _external_link, ["point p1", "rows", "ExternalLink"]),
    ("never-written", _never_written, ["point p1", "rows", "holds no data"]),
]


@pytest.mark.parametrize("mutate, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_map_is_one_map_error(tmp_path: Path, mutate, fragments: list[str]) -> None:
    path = write_map(tmp_path / "m.h5")
    with h5py.File(path, "r+") as fh:
        mutate(fh)
    with pytest.raises(MapError) as info:
        read_everything(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_valid_map_reads(tmp_path: Path) -> None:
    ber_map = read_everything(write_map(tmp_path / "m.h5"))
    assert ber_map.check() == 3 and ber_map.keys() == ["p0", "p1", "p2"]
    p1 = ber_map.point("p1")
    assert p1.flips == 6 and p1.errors.dtype == ERROR_DTYPE and len(p1.errors) == 6
    counts = ber_map.point("p1", positions=False)
    assert counts.flips == 6 and counts.errors.size == 0 and counts.bitline_0to1.shape == (0, W)


@pytest.mark.parametrize("make", [
    lambda p: p.write_bytes(b"this is not HDF5\n"),
    lambda p: p.write_bytes(b""),
    lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200)),
    lambda p: p.write_bytes(write_map(p.with_name("v.h5")).read_bytes()[:3000]),
    lambda p: p.write_bytes(write_map(p.with_name("v.h5")).read_bytes()[:-100]),
    lambda p: p.mkdir(),
], ids=["text", "empty", "signature-only", "truncated-head", "truncated-tail", "directory"])
def test_files_that_are_not_maps(tmp_path: Path, make) -> None:
    path = tmp_path / "x.h5"
    make(path)
    with pytest.raises(MapError) as info:
        read_everything(path)
    assert "\n" not in str(info.value)


def test_every_truncation_is_a_map_error(tmp_path: Path) -> None:
    data = write_map(tmp_path / "v.h5").read_bytes()
    path = tmp_path / "t.h5"
    for size in range(0, len(data), max(1, len(data) // 97)):
        path.write_bytes(data[:size])
        with pytest.raises(MapError):
            read_everything(path)


def _zero_free_space(data: bytearray) -> bytearray:
    """Set the size of the free-space object of the first global heap collection to 0."""
    start = data.find(b"GCOL")
    assert start >= 0
    end = start + int.from_bytes(data[start + 8:start + 16], "little")
    p = start + 16
    while p + 16 <= end:
        index = int.from_bytes(data[p:p + 2], "little")
        size = int.from_bytes(data[p + 8:p + 16], "little")
        if index == 0:
            data[p + 8:p + 16] = bytes(8)
            return data
        p += 16 + (size + 7) // 8 * 8
    raise AssertionError("no free-space object")


def test_damaged_global_heap_does_not_hang(tmp_path: Path) -> None:
    # libhdf5 loops forever reading a string from such a heap: run in a child with a time limit.
    path = tmp_path / "heap.h5"
    path.write_bytes(_zero_free_space(bytearray(write_map(tmp_path / "v.h5").read_bytes())))
    code = ("import sys; from profiler.storage import BerMap, MapError\n"
            "try:\n    m = BerMap(sys.argv[1]); m.summary(); m.check()\n"
            "except MapError as exc:\n    print('MapError', exc)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("MapError") and "global heap" in proc.stdout, proc


# Command lines ----------------------------------------------------------------------------------

CLI_CASES = ["no-bits_tested", "no-banks-attr", "geometry-broken", "points-dataset", "flips-over-bits",
             "patterns-missing", "vdd-missing", "pattern-vlen"]


def _damaged(tmp_path: Path, case: str) -> Path:
    path = write_map(tmp_path / f"{case}.h5")
    mutate = {c[0]: c[1] for c in CASES}[case]
    with h5py.File(path, "r+") as fh:
        mutate(fh)
    return path


def _one_error_line(err: str) -> str:
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("case", CLI_CASES)
def test_fit_and_plot_exit_2_with_one_line(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _damaged(tmp_path, case)
    assert fit.main([str(path), "-o", str(tmp_path / "model.json")]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert str(path) in err
    assert plot.main([str(path), "--out-dir", str(tmp_path / "png")]) == 2
    assert str(path) in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "model.json").exists()


def test_fit_cli_on_a_truncated_map_in_a_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "cut.h5"
    path.write_bytes(write_map(tmp_path / "v.h5").read_bytes()[:20000])
    proc = subprocess.run([sys.executable, "-m", "errormodels.fit", str(path), "-o", str(tmp_path / "x.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    _one_error_line(proc.stderr)


def test_replay_refuses_a_malformed_map_before_serving(tmp_path: Path) -> None:
    path = _damaged(tmp_path, "no-errors")
    BerMap(path)  # the file-level metadata is fine
    with pytest.raises(ReplayError, match=r"point p1: dataset errors is missing"):
        ReplayDimm(BerMap(path), lambda: (1.35, 20.0), 2.5)
    with pytest.raises(MapError, match=r"point p1: dataset errors is missing"):
        check_replay_map(path)
    assert issubclass(ReplayError, MapError)
    with pytest.raises(ReplayError, match="64-byte bursts"):
        check_replay_map(write_map(tmp_path / "narrow.h5", {**META, "geometry": {**META["geometry"], "row_bytes": 8}}))
    assert check_replay_map(write_map(tmp_path / "ok.h5")).keys() == ["p0", "p1", "p2"]


def test_rowgroup_needs_ascii_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_map(tmp_path / "m.h5")
    assert fit.main([str(path), "--partition", "rowgroup:²", "-o", str(tmp_path / "x.json")]) == 2
    assert "rowgroup:N needs a positive N" in _one_error_line(capsys.readouterr().err)
    with pytest.raises(fit.FitError):
        fit.partition_rows("rowgroup:²", 0, 1)


# Guesses refused or warned about ---------------------------------------------------------------


def test_unbuildable_pattern_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pattern_file = tmp_path / "weights.bin"
    pattern_file.write_bytes(bytes(range(256)))
    definition = parse_pattern(f"file:{pattern_file}").definition
    meta = {**META, "patterns": {"all-0": "all-0", "all-1": definition}}
    path = write_map(tmp_path / "m.h5", meta)
    ber_map = BerMap(path)
    fit.observe(ber_map, ber_map.keys())  # the file is there and unchanged: no warning
    pattern_file.write_bytes(bytes(256))  # changed since the sweep
    with pytest.warns(fit.FitWarning, match=r"point p0: .*SHA-256 differs.*half"):
        obs = fit.observe(ber_map, ber_map.keys())["all"]
    assert obs.n1 == 2 * len(ROWS) * W // 2  # the two points of that pattern counted as half ones
    pattern_file.unlink()
    assert fit.main([str(path), "-o", str(tmp_path / "model.json")]) == 0
    warnings_seen = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings_seen) == 1 and "cannot rebuild the data written" in warnings_seen[0]


def test_missing_settings_are_refused_not_guessed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for case in ("vdd-missing", "geometry-missing", "patterns-missing"):
        path = _damaged(tmp_path, case)
        with pytest.raises(MapError):
            fit.fit_map(str(path))
        assert fit.main([str(path), "-o", str(tmp_path / "x.json")]) == 2
        capsys.readouterr()


# The doc and the code agree ---------------------------------------------------------------------


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _table_rows(section: str) -> list[list[str]]:
    text = _doc().split(section, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| `")]


def test_doc_required_members_match_the_reader() -> None:
    files = {row[0].strip("`"): row[1] for row in _table_rows("## 1. File attributes")}
    points = {row[0].strip("`"): row[1] for row in _table_rows("### 2.1 Point attributes")}
    assert {k for k, v in files.items() if "yes" in v} == set(REQUIRED_FILE_ATTRS)
    assert {k for k, v in points.items() if "yes" in v} == set(REQUIRED_POINT_ATTRS) | {"complete"}
    datasets = {row[0].strip("`") for row in _table_rows("### 2.2 Point datasets") if row[1] in ("uint32", "uint64", "compound")}
    assert datasets == {"rows", "bits_tested", "flips_0to1", "flips_1to0", "bitline_0to1", "bitline_1to0", "errors"}


def _doc_example(tmp_path: Path) -> Path:
    block = _doc().split("<!-- minimal-map-example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "write_map.py"
    script.write_text(block)
    path = tmp_path / "third-party.h5"
    proc = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return path


def test_doc_minimal_map_is_read_by_every_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _doc_example(tmp_path)
    ber_map = read_everything(path)
    assert ber_map.check() == 2
    assert fit.main([str(path), "-o", str(tmp_path / "model.json")]) == 0
    assert json.loads((tmp_path / "model.json").read_text())["partitions"]["all"]["observations"]["k10"] == 3
    assert plot.main([str(path), "--out-dir", str(tmp_path / "png")]) == 0
    assert "warning" not in capsys.readouterr().err
    # Every member the doc calls required is required: without it the map is refused.
    data = path.read_bytes()
    for name in REQUIRED_FILE_ATTRS:
        path.write_bytes(data)
        with h5py.File(path, "r+") as fh:
            del fh.attrs[name]
        with pytest.raises(MapError, match="format|" + name):
            read_everything(path)
    for name in (*REQUIRED_POINT_ATTRS, "rows", "bits_tested", "flips_0to1", "flips_1to0", "errors",
                 "bitline_0to1", "bitline_1to0"):
        path.write_bytes(data)
        with h5py.File(path, "r+") as fh:
            group = fh["points/V1.10"]
            if name in group.attrs:
                del group.attrs[name]
            else:
                del group[name]
        with pytest.raises(MapError, match=f"point V1.10: .*{name}"):
            read_everything(path)


def test_hand_written_map_with_other_accepted_types(tmp_path: Path) -> None:
    """Written with plain h5py from the doc's type table: fixed-length strings, int8 booleans,
    narrow integer datasets, float32 settings; optional members left out."""
    path = tmp_path / "hand.h5"
    row_bytes, rows = 64, np.array([[1, 2], [1, 3]], np.uint16)
    with h5py.File(path, "w") as fh:
        fh.attrs["format"] = np.bytes_(b"eden-ber-map")
        fh.attrs["format_version"] = np.uint8(1)
        fh.attrs["geometry_json"] = np.bytes_(json.dumps({"banks": 4, "rows": 8, "row_bytes": row_bytes}).encode())
        fh.attrs["patterns_json"] = np.bytes_(b"{}")
        g = fh.create_group("points").create_group("only")
        g["rows"] = rows
        g["bits_tested"] = np.full(2, row_bytes * 8, np.uint32)
        g["flips_0to1"] = np.array([1, 0], np.uint16)
        g["flips_1to0"] = np.array([0, 1], np.uint16)
        g["errors"] = np.array([(1, 2, 4, 1), (1, 3, 5, 0)],
                               dtype=[("bank", "i2"), ("row", "<u2"), ("bit", ">u4"), ("dir", "i1")])
        for name in ("bitline_0to1", "bitline_1to0"):
            g[name] = np.zeros((1, row_bytes * 8), np.uint8)
            g[name].attrs["banks"] = np.int32(1)
        for name, value in (("vdd_v", np.float32(1.2)), ("trcd_ns", np.int16(10)), ("trp_ns", np.float32(13.75)),
                            ("temp_c", np.float32("nan")), ("pattern", np.bytes_(b"checkerboard")), ("rep", np.uint8(0)),
                            ("index", np.int32(0)), ("errors_truncated", np.int8(0)), ("complete", np.int8(1))):
            g.attrs[name] = value
    ber_map = read_everything(path)
    point = ber_map.point("only")
    assert point.attrs["pattern"] == "checkerboard" and point.attrs["errors_truncated"] is False
    assert point.rows.dtype == np.uint32 and point.errors["bit"].tolist() == [4, 5] and point.bitline_banks.tolist() == [1]
    obs = fit.observe(ber_map, ["only"])["all"]
    assert obs.n1 == obs.n0 == row_bytes * 8  # a checkerboard holds as many ones as zeros
    assert math.isclose(ber_map.summary()[0]["vdd_v"], 1.2, rel_tol=1e-6)


def _doc_pattern_bytes(definition: str, bank: int, row: int, k: int, row_bytes: int, file_bytes: bytes = b"") -> np.ndarray:
    """The bytes a pattern writes, computed from docs/ber-map-format.md section 2.6 only."""
    if definition == "all-0":
        return np.zeros(row_bytes, np.uint8)
    if definition == "all-1":
        return np.full(row_bytes, 0xFF, np.uint8)
    if re.fullmatch(r"0x[0-9A-F]{2}", definition):
        return np.full(row_bytes, int(definition, 16), np.uint8)
    if definition == "checkerboard":
        bits = np.array([(bit + row) % 2 == 0 for bit in range(row_bytes * 8)], np.uint8)
        return np.packbits(bits, bitorder="little")
    if definition == "rowstripe":
        return np.full(row_bytes, 0xFF if row % 2 == 0 else 0x00, np.uint8)
    if definition.startswith("random:"):
        seed = int(definition.split(":")[1])
        key = np.array([seed % 2**64, (bank << 32) | row], dtype=np.uint64)
        return np.random.Generator(np.random.Philox(key=key)).integers(0, 256, row_bytes, dtype=np.uint8)
    if definition.startswith("file:"):
        return np.array([file_bytes[(k * row_bytes + j) % len(file_bytes)] for j in range(row_bytes)], np.uint8)
    raise AssertionError(definition)


def test_doc_pattern_bits_are_the_toolkit_patterns(tmp_path: Path) -> None:
    content = bytes(range(7, 107))  # 100 bytes: rows do not start at multiples of the size
    pattern_file = tmp_path / "p.bin"
    pattern_file.write_bytes(content)
    for name in ("all-0", "all-1", "0x5a", "0xA", "checkerboard", "rowstripe", "random:0", "random:7",
                 f"random:{2**64 - 1}", f"file:{pattern_file}"):
        pattern = parse_pattern(name)
        definition = pattern.definition.split(" sha256=")[0]
        doc_name = definition if not definition.startswith("file:") else "file:"
        for bank, row, k in ((0, 0, 0), (3, 7, 1), (7, 32767, 5), (2, 4096, 2)):
            expected = _doc_pattern_bytes(doc_name, bank, row, k, 64, content)
            np.testing.assert_array_equal(pattern.data(bank, row, k, 64), expected, err_msg=f"{name} {bank} {row}")
    assert parse_pattern("0xA").definition == "0x0A" and parse_pattern("random").definition == "random:0"


def test_resuming_writer_sets_a_damaged_map_aside(tmp_path: Path) -> None:
    """A sweep resuming a map whose metadata is damaged sets it aside and rebuilds it from the journal
    (before: the JSONDecodeError, or a hang on a damaged string heap, escaped)."""
    for damage in ("identity", "heap"):
        path = tmp_path / f"{damage}.h5"
        writer = MapWriter(path, META, {"test": 1})
        writer.open()
        writer.write(PointData(
            key="p0", attrs={"vdd_v": 1.2, "trcd_ns": 13.75, "trp_ns": 13.75, "temp_c": None, "pattern": "all-1",
                             "rep": 0, "index": 0, "errors_truncated": False},
            rows=np.array(ROWS, np.uint32), bits_tested=np.full(4, W, np.uint64), flips_0to1=np.zeros(4, np.uint32),
            flips_1to0=np.zeros(4, np.uint32), bitline_banks=np.array([0, 1], np.uint8),
            bitline_0to1=np.zeros((2, W), np.uint32), bitline_1to0=np.zeros((2, W), np.uint32),
            errors=np.zeros(0, ERROR_DTYPE)))
        writer.release()  # as if killed: the journal stays
        if damage == "identity":
            with h5py.File(path, "r+") as fh:
                fh.attrs["identity_json"] = "{not json"
        else:
            path.write_bytes(_zero_free_space(bytearray(path.read_bytes())))
        code = ("import sys; from profiler.storage import MapWriter\n"
                f"w = MapWriter(sys.argv[1], {META!r}, {{'test': 1}})\n"
                "print(sorted(w.open()), w.recovered_from_journal, w.damaged is not None); w.finish(True)\n")
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT,
                              timeout=60)
        assert proc.returncode == 0 and proc.stdout.split() == ["['p0']", "1", "True"], proc
        assert BerMap(path).check() == 1

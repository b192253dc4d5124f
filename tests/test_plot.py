"""``python -m profiler.plot`` on small synthetic BER maps written with MapWriter (no sweep is run)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np
import pytest

from profiler import plot
from profiler.plan import Point
from profiler.storage import ERROR_DTYPE, BerMap, MapWriter, PointData

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROW_BYTES = 8
BITS_PER_ROW = ROW_BYTES * 8
ROWS = [(0, 5), (0, 17), (0, 40), (1, 5), (1, 17), (1, 40)]  # 2 banks x 3 sparse rows
VDDS_V = (1.35, 1.2, 1.1)
# Flips per row (in ROWS order) at each VDD: none at nominal, more at every step down.
BASE_FLIPS = {
    1.35: [0, 0, 0, 0, 0, 0],
    1.2: [1, 0, 2, 0, 1, 0],
    1.1: [3, 4, 5, 2, 2, 2],
}
# all-1 shows the base counts as 1->0 flips; all-0 twice the base counts as 0->1 flips.
PATTERN_SCALE = {"all-1": 1, "all-0": 2}
META = {"software": "test", "geometry": {"banks": 2, "rows": 64, "row_bytes": ROW_BYTES}, "bench": {"supply": {"nominal_v": 1.35}}}


def make_point(point: Point, index: int, flips: list[int]) -> PointData:
    """A PointData whose flips are ``flips`` per row, in the direction the pattern allows."""
    counts = np.array(flips, dtype=np.uint32)
    zeros = np.zeros_like(counts)
    up, down = (counts, zeros) if point.pattern == "all-0" else (zeros, counts)
    errors = np.array(
        [(b, r, bit, int(point.pattern == "all-0")) for (b, r), n in zip(ROWS, flips) for bit in range(n)],
        dtype=ERROR_DTYPE,
    )
    bitline_up = np.zeros((2, BITS_PER_ROW), np.uint32)
    bitline_down = np.zeros_like(bitline_up)
    for e in errors:
        (bitline_up if e["dir"] else bitline_down)[e["bank"], e["bit"]] += 1
    return PointData(
        key=point.key,
        attrs={**point.as_dict(), "index": index, "errors_truncated": False, "measured_vdd_v": point.vdd_v},
        rows=np.array(ROWS, dtype=np.uint32),
        bits_tested=np.full(len(ROWS), BITS_PER_ROW, np.uint64),
        flips_0to1=up,
        flips_1to0=down,
        bitline_banks=np.array([0, 1], np.uint8),
        bitline_0to1=bitline_up,
        bitline_1to0=bitline_down,
        errors=errors,
    )


def write_map(path: Path, settings: list[tuple[float, float, str]], flips_of, meta: dict = META) -> Path:
    """Write a map with one point per (vdd_v, trcd_ns, pattern); ``flips_of(vdd, trcd, pattern)`` gives its flips."""
    writer = MapWriter(path, meta, {"test": path.name})
    writer.open()
    for index, (vdd_v, trcd_ns, pattern) in enumerate(settings):
        point = Point(None, vdd_v, trcd_ns, 13.75, 35.0, pattern, 0)
        writer.write(make_point(point, index, flips_of(vdd_v, trcd_ns, pattern)))
    writer.finish(True)
    return path


@pytest.fixture
def vdd_map(tmp_path: Path) -> Path:
    """3 VDD points x 2 patterns at nominal timing."""
    settings = [(v, 13.75, p) for v in VDDS_V for p in ("all-1", "all-0")]
    return write_map(tmp_path / "tiny.h5", settings, lambda v, t, p: [PATTERN_SCALE[p] * n for n in BASE_FLIPS[v]])


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000  # a drawn figure, not an empty canvas


def test_writes_the_plots(vdd_map: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "png"
    assert plot.main([str(vdd_map), "--out-dir", str(out_dir), "--prefix", "t"]) == 0
    harshest = Point(None, 1.1, 13.75, 13.75, 35.0, "all-0", 0).key
    expected = [out_dir / "t_ber_vs_vdd_v.png", out_dir / f"t_heatmap_{harshest}.png", out_dir / "t_direction.png"]
    for path in expected:
        assert_png(path)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in expected)  # trcd has one value: no plot
    assert capsys.readouterr().out.split() == [str(p) for p in expected]


def test_point_option_and_defaults(vdd_map: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = Point(None, 1.2, 13.75, 13.75, 35.0, "all-1", 0).key
    assert plot.main([str(vdd_map), "--point", key]) == 0
    written = [Path(line) for line in capsys.readouterr().out.split()]
    assert Path(vdd_map.parent / f"tiny_heatmap_{key}.png") in written  # prefix: file stem; dir: the map's
    for path in written:
        assert_png(path)


def test_ber_by_bank_exact(vdd_map: Path) -> None:
    data = plot.ber_by_bank(BerMap(vdd_map), "vdd_v")
    assert data.values.tolist() == [1.1, 1.2, 1.35]
    assert data.banks.tolist() == [0, 1]
    bits = 3 * BITS_PER_ROW * 2  # 3 rows per bank, 2 patterns
    assert data.bits.tolist() == [[bits] * 3, [bits] * 3]
    # bank 0 at 1.2 V: all-1 gives 1+0+2 = 3, all-0 twice that: 9; at 1.1 V: 12 + 24 = 36.
    assert data.flips.tolist() == [[36, 9, 0], [18, 3, 0]]
    expected = [[Fraction(36, bits), Fraction(9, bits), 0], [Fraction(18, bits), Fraction(3, bits), 0]]
    assert data.ber.tolist() == [[float(f) for f in row] for row in expected]
    assert data.fixed == {"trcd_ns": 13.75, "trp_ns": 13.75, "temp_c": None}
    assert data.points == 6


def test_grouping_holds_other_params_at_nominal(tmp_path: Path) -> None:
    # VDD x tRCD grid; at 7.5 ns every row flips 10 more bits.
    settings = [(v, t, "all-1") for v in (1.35, 1.2) for t in (13.75, 7.5)]
    path = write_map(tmp_path / "grid.h5", settings, lambda v, t, p: [n + (10 if t < 13.75 else 0) for n in BASE_FLIPS[v]])
    bits = 3 * BITS_PER_ROW
    by_vdd = plot.ber_by_bank(BerMap(path), "vdd_v")  # at the nominal tRCD 13.75 ns
    assert by_vdd.fixed["trcd_ns"] == 13.75
    assert by_vdd.flips.tolist() == [[3, 0], [1, 0]] and by_vdd.bits.tolist() == [[bits, bits], [bits, bits]]
    by_trcd = plot.ber_by_bank(BerMap(path), "trcd_ns")  # at the nominal VDD 1.35 V
    assert by_trcd.fixed["vdd_v"] == 1.35
    assert by_trcd.values.tolist() == [7.5, 13.75]
    assert by_trcd.flips.tolist() == [[30, 0], [30, 0]]
    # No nominal VDD measured: the most common value, ties to the gentlest (highest VDD).
    points = [p for p in plot.read_point_rows(BerMap(path)) if p.settings["vdd_v"] != 1.35]
    assert plot.reference_settings(points)["vdd_v"] == 1.2
    mixed = points + [p for p in plot.read_point_rows(BerMap(path)) if p.settings["vdd_v"] == 1.35 and p.settings["trcd_ns"] == 7.5]
    assert plot.reference_settings(mixed)["vdd_v"] == 1.2  # 2 points at 1.2 V against 1 at 1.35 V, no nominal given
    assert plot.reference_settings(mixed, {"bench": {"supply": {"nominal_v": 1.35}}})["vdd_v"] == 1.35
    assert plot.swept_params(plot.read_point_rows(BerMap(path))) == ["vdd_v", "trcd_ns"]


def test_ber_by_bank_rejects_unknown_param(vdd_map: Path) -> None:
    with pytest.raises(ValueError, match="param must be one of"):
        plot.ber_by_bank(BerMap(vdd_map), "tras_ns")


def _not_a_map(tmp_path: Path) -> Path:
    path = tmp_path / "text.h5"
    path.write_text("not hdf5\n")
    return path


def _other_hdf5(tmp_path: Path) -> Path:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["format"] = "something-else"
    return path


def _empty_map(tmp_path: Path) -> Path:
    return write_map(tmp_path / "empty.h5", [], lambda v, t, p: [])


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda tmp: tmp / "missing.h5", [], "no such file"),
        (_not_a_map, [], "cannot read BER map"),
        (_other_hdf5, [], "is not a BER map"),
        (_empty_map, [], "no finished points"),
        (None, ["--point", "T20_V9.9999_nope"], "has no point 'T20_V9.9999_nope'"),
    ],
    ids=["missing", "not-hdf5", "not-a-map", "no-points", "unknown-point"],
)
def test_bad_input_exit_2(make, extra: list[str], message: str, vdd_map: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    path = vdd_map if make is None else make(tmp_path)
    out_dir = tmp_path / "png-bad"
    assert plot.main([str(path), "--out-dir", str(out_dir), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.endswith("\n")
    assert captured.err.count("\n") == 1 and message in captured.err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plots_draw_the_maps_numbers(vdd_map: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = []
    make_figure = plot._figure

    def spy(width_in: float, height_in: float):
        fig = make_figure(width_in, height_in)
        figures.append(fig)
        return fig

    monkeypatch.setattr(plot, "_figure", spy)
    out_dir = tmp_path / "png"
    written = plot.write_plots(BerMap(vdd_map), out_dir, "t")
    assert len(written) == len(figures) == 3
    for path, fig in zip(written, figures):  # each PNG is its figure at the module's resolution
        width_in, height_in = fig.get_size_inches()
        assert png_size(path) == (round(width_in * 120), round(height_in * 120)), path.name
    ber_fig, heat_fig, dir_fig = figures
    assert [p.name for p in written] == ["t_ber_vs_vdd_v.png", f"t_heatmap_{Point(None, 1.1, 13.75, 13.75, 35.0, 'all-0', 0).key}.png",
                                         "t_direction.png"]

    # BER vs VDD: one line per bank through its BER at 1.1, 1.2, 1.35 V; zero-flip points sit on the floor.
    bits = 3 * BITS_PER_ROW * 2
    floor = 1 / (2 * bits)
    ax = ber_fig.axes[0]
    curves = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert len(curves) == 2
    assert [list(c.get_xdata()) for c in curves] == [[1.1, 1.2, 1.35]] * 2
    np.testing.assert_allclose(curves[0].get_ydata(), [36 / bits, 9 / bits, floor])
    np.testing.assert_allclose(curves[1].get_ydata(), [18 / bits, 3 / bits, floor])
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.get_ylim(), (floor / 3, 3 * 36 / bits))

    # Heatmap of the harshest point (1.1 V, all-0: twice the base flips): 1 + flips per bank and row.
    image = heat_fig.axes[0].get_images()[0]
    np.testing.assert_array_equal(np.asarray(image.get_array()), 1 + 2 * np.array(BASE_FLIPS[1.1]).reshape(2, 3))

    # Direction: all-0 gives the 0->1 flips (twice the base), all-1 the 1->0 flips, per VDD ascending.
    ax = dir_fig.axes[0]
    heights = [rect.get_height() + rect.get_y() for rect in ax.patches]
    up = [2 * sum(BASE_FLIPS[v]) for v in (1.1, 1.2, 1.35)]
    down = [sum(BASE_FLIPS[v]) for v in (1.1, 1.2, 1.35)]
    np.testing.assert_allclose(heights, [u if u else 0.5 for u in up] + [d if d else 0.5 for d in down])
    assert ax.get_ylim() == pytest.approx((0.5, 6 * max(up)))

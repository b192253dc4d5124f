"""``python -m profiler.plot``: PNG plots of a BER map written by ``python -m profiler.sweep``.

Usage::

    python -m profiler.plot FILE.h5 [-o DIR] [--prefix NAME] [--point KEY] [-q] [-v]

The command is a thin shell over :func:`plot_map` (``--out-dir`` is the old spelling of ``-o``).

Plots written (``PREFIX`` defaults to the map's file name without ``.h5``, ``DIR`` to
the map's directory); the command prints the path of every file it writes:

``PREFIX_ber_vs_PARAM.png``
    One per swept parameter (``vdd_v``, ``trcd_ns``, ``trp_ns``, ``temp_c``, ``trefi_ms``) that
    takes more than one value in the map: bit error rate (log scale) against that
    parameter, one line per bank.  A bank's BER at a setting is the flips (0->1 plus
    1->0) over the bits tested in that bank's rows, summed over every data pattern
    and repetition measured at the setting.  The other parameters are held at their
    *reference* values (see :func:`reference_settings`): the nominal value where the
    map measured it, otherwise the most common value.  Settings with no flip are
    drawn as hollow triangles on a dotted floor line at ``1 / (2 * bits)``, below any
    measurable BER (one flip is ``1 / bits``), labelled ``0 flips (BER < 1/bits)``.
``PREFIX_heatmap_KEY.png``
    Bit errors per measured row at one point (``--point KEY``, default the point
    with the highest BER): banks on y, the measured rows on x as columns in
    ascending order, labelled with their row indices (a sparse sample such as
    ``sample:64`` is shown as adjacent columns); the colour is ``1 + errors`` on a
    log scale.  Counts come from ``flips_0to1 + flips_1to0`` of each row, so they
    are exact even when the stored error positions were truncated.
``PREFIX_direction.png``
    The direction of the flips: bars of 0->1 and 1->0 flips (all banks, patterns and
    repetitions) per setting of the main swept parameter (the one with the most
    values), the other parameters at their reference values.  A 0->1 flip needs a
    0 written, so the split depends on the data patterns as well as on the DIMM.

Exit status: 0 when the plots are written; 2 for bad input (a missing file, a file
that is not a BER map, a malformed or damaged map -- any :class:`~profiler.storage.MapError`,
``docs/ber-map-format.md`` section 2.4 --, an unknown ``--point``, a map with no finished
points), reported as one line on standard error.

:class:`LivePlot` is a subscriber of a running sweep's documents
(:func:`profiler.engine.run_sweep`): it redraws one PNG of BER per measured point as the
points come (``python -m profiler.sweep --live-plot PNG``).

The plotting functions draw on :class:`matplotlib.figure.Figure` objects with the
Agg canvas and keep no state between calls; only :func:`main` selects the Agg
backend (before any pyplot import), so that the command works without a display.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from profiler import reference
from profiler.storage import BerMap, MapError, PointData
from softmc_host.cli import add_out, add_verbosity, configure_logging, fail
from softmc_host.files import atomic_write
from softmc_host.timing import NOMINAL_TRCD_NS, NOMINAL_TRP_NS

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "SWEPT_PARAMS",
    "PointRows",
    "BankBer",
    "read_point_rows",
    "param_values",
    "swept_params",
    "reference_settings",
    "ber_by_bank",
    "write_ber_vs_param",
    "write_heatmap",
    "write_direction",
    "write_plots",
    "plot_map",
    "LivePlot",
    "main",
]

logger = logging.getLogger(__name__)

#: The settings a sweep can vary, in the order the plots are written.
SWEPT_PARAMS: tuple[str, ...] = ("vdd_v", "trcd_ns", "trp_ns", "temp_c", "trefi_ms")

_LABELS = {
    "vdd_v": "supply voltage VDD (V)",
    "trcd_ns": "tRCD (ns)",
    "trp_ns": "tRP (ns)",
    "temp_c": "DIMM temperature (°C)",
    "trefi_ms": "refresh interval, every row (ms)",
}
_SHORT = {
    "vdd_v": ("VDD", "V"),
    "trcd_ns": ("tRCD", "ns"),
    "trp_ns": ("tRP", "ns"),
    "temp_c": ("temp", "°C"),
    "trefi_ms": ("tREFW", "ms"),
}
# Which way is gentler on the DIMM: +1 = a higher value is gentler (used to break ties).
_GENTLER = {"vdd_v": +1, "trcd_ns": +1, "trp_ns": +1, "temp_c": -1, "trefi_ms": -1}
_DPI = 120


@dataclass(frozen=True)
class PointRows:
    """The per-row counts of one point (no bit-line arrays or error positions).

    Attributes
    ----------
    key : str
        The point's key (``profiler.plan.Point.key``).
    settings : dict
        ``vdd_v`` (V), ``trcd_ns`` (ns), ``trp_ns`` (ns), ``temp_c`` (degC) -- ``None``
        where the sweep left the setting unchanged -- and ``pattern`` (str), ``rep`` (int).
    rows : numpy.ndarray
        (N, 2) uint32: bank, row of each measured row.
    bits_tested : numpy.ndarray
        (N,) uint64: bits compared in each row.
    flips_0to1, flips_1to0 : numpy.ndarray
        (N,) uint32: bits written 0 read 1, and written 1 read 0, in each row.
    """

    key: str
    settings: dict[str, Any]
    rows: np.ndarray
    bits_tested: np.ndarray
    flips_0to1: np.ndarray
    flips_1to0: np.ndarray

    @property
    def flips(self) -> np.ndarray:
        """(N,) int64: flips per row, both directions."""
        return self.flips_0to1.astype(np.int64) + self.flips_1to0.astype(np.int64)

    @property
    def ber(self) -> float:
        """Bit error rate over the whole point (0 when no bits were tested)."""
        bits = int(self.bits_tested.sum())
        return int(self.flips.sum()) / bits if bits else 0.0


@dataclass(frozen=True)
class BankBer:
    """Per-bank BER against one parameter, the other parameters held at reference values.

    Attributes
    ----------
    param : str
        The parameter on the x axis (one of :data:`SWEPT_PARAMS`).
    values : numpy.ndarray
        (K,) float: its values, ascending (units as in ``param``).
    banks : numpy.ndarray
        (B,) int: banks, ascending.
    flips : numpy.ndarray
        (B, K) int64: flipped bits (0->1 plus 1->0) in the bank's rows, summed over the
        points (patterns, repetitions) at each value.
    bits : numpy.ndarray
        (B, K) int64: bits tested, summed the same way.
    fixed : dict
        The reference values of the other parameters (``None``: not set by the sweep).
    points : int
        How many points the plot uses.
    """

    param: str
    values: np.ndarray
    banks: np.ndarray
    flips: np.ndarray
    bits: np.ndarray
    fixed: dict[str, float | None]
    points: int

    @property
    def ber(self) -> np.ndarray:
        """(B, K) float: ``flips / bits`` (NaN where no bits were tested)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.bits > 0, self.flips / np.maximum(self.bits, 1), np.nan)


# Reading -------------------------------------------------------------------------------------


def _setting(value: Any) -> float | None:
    """A setting attribute as a float, ``None`` for a setting the sweep did not make (NaN)."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else round(number, 9)


def read_point_rows(ber_map: BerMap) -> list[PointRows]:
    """Read the settings and per-row counts of every complete point, in measurement order.

    Parameters
    ----------
    ber_map : BerMap
        The map.

    Returns
    -------
    list of PointRows
        Only the small per-row datasets are read (not the bit-line arrays or errors).

    Raises
    ------
    MapError
        The file cannot be read, or a point is malformed (a missing or wrongly typed member,
        counts out of range: ``docs/ber-map-format.md``).
    """
    out = []
    for key in ber_map.keys():
        point = ber_map.point(key, positions=False)  # every count checked (MapError otherwise)
        settings: dict[str, Any] = {name: _setting(point.attrs.get(name)) for name in SWEPT_PARAMS}
        settings["pattern"] = str(point.attrs["pattern"])
        settings["rep"] = int(point.attrs["rep"])
        out.append(
            PointRows(
                key=key,
                settings=settings,
                rows=point.rows.astype(np.int64),
                bits_tested=point.bits_tested.astype(np.int64),
                flips_0to1=point.flips_0to1.astype(np.int64),
                flips_1to0=point.flips_1to0.astype(np.int64),
            )
        )
    return out


# Grouping ------------------------------------------------------------------------------------


def param_values(points: Sequence[PointRows], param: str) -> list[float | None]:
    """The distinct values of ``param`` in the points, ascending (``None`` first)."""
    values = {p.settings[param] for p in points}
    return sorted(values, key=lambda v: (v is not None, v if v is not None else 0.0))


def swept_params(points: Sequence[PointRows]) -> list[str]:
    """The parameters of :data:`SWEPT_PARAMS` that take more than one value, in that order."""
    return [name for name in SWEPT_PARAMS if len(param_values(points, name)) > 1]


def _nominal(param: str, meta: dict[str, Any]) -> float | None:
    if param == "trcd_ns":
        return NOMINAL_TRCD_NS
    if param == "trp_ns":
        return NOMINAL_TRP_NS
    if param == "vdd_v":
        supply = meta.get("bench", {}).get("supply") if isinstance(meta.get("bench"), dict) else None
        if isinstance(supply, dict) and supply.get("nominal_v") is not None:
            return round(float(supply["nominal_v"]), 9)
    return None  # temperature: no nominal value


def reference_settings(points: Sequence[PointRows], meta: dict[str, Any] | None = None) -> dict[str, float | None]:
    """The value each parameter is held at while another one is on a plot's x axis.

    Rule, per parameter: its **nominal** value if the map measured it (tRCD
    13.75 ns, tRP 13.75 ns, VDD the supply's ``nominal_v`` from the bench metadata;
    temperature has none); otherwise the **most common** value among the points;
    a tie goes to the gentlest value (highest VDD, longest tRCD / tRP, lowest
    temperature).  A parameter the sweep did not set is ``None``.

    Parameters
    ----------
    points : sequence of PointRows
        The map's points.
    meta : dict, optional
        ``BerMap.meta`` (for the supply's nominal VDD).

    Returns
    -------
    dict
        Parameter name -> reference value (units as in the name) or ``None``.
    """
    # The one rule (profiler.reference), shared with errormodels.curves.
    return reference.reference_settings([p.settings for p in points], reference.nominal_vdd_of(meta), SWEPT_PARAMS)


def _select(points: Sequence[PointRows], param: str, reference: dict[str, float | None]) -> list[PointRows]:
    """The points whose parameters other than ``param`` equal their reference values."""
    return [p for p in points if all(p.settings[o] == reference[o] for o in SWEPT_PARAMS if o != param)]


def _ber_by_bank(points: Sequence[PointRows], param: str, reference: dict[str, float | None]) -> BankBer:
    chosen = _select(points, param, reference)
    values = param_values(chosen, param)
    banks = sorted({int(b) for p in chosen for b in p.rows[:, 0]})
    flips = np.zeros((len(banks), len(values)), np.int64)
    bits = np.zeros_like(flips)
    bank_slot = {b: i for i, b in enumerate(banks)}
    value_slot = {v: i for i, v in enumerate(values)}
    for point in chosen:
        k = value_slot[point.settings[param]]
        slots = np.array([bank_slot[int(b)] for b in point.rows[:, 0]], dtype=np.int64)
        np.add.at(flips[:, k], slots, point.flips)
        np.add.at(bits[:, k], slots, point.bits_tested)
    numeric = np.array([np.nan if v is None else v for v in values], dtype=float)
    # The refresh interval is listed only where the map swept it (maps without it: as before).
    fixed = {o: reference[o] for o in SWEPT_PARAMS if o != param and (o != "trefi_ms" or reference[o] is not None)}
    return BankBer(param, numeric, np.array(banks, dtype=np.int64), flips, bits, fixed, len(chosen))


def ber_by_bank(ber_map: BerMap, param: str, points: Sequence[PointRows] | None = None) -> BankBer:
    """Per-bank BER against ``param``, the other parameters at their reference values.

    Parameters
    ----------
    ber_map : BerMap
        The map.
    param : str
        One of :data:`SWEPT_PARAMS`.
    points : sequence of PointRows, optional
        The map's points, if already read (:func:`read_point_rows`).

    Returns
    -------
    BankBer
        For each bank and each value of ``param``: flips and bits summed over the
        bank's rows in every point (pattern, repetition) at that value whose other
        parameters equal :func:`reference_settings`; ``.ber`` is their ratio.

    Raises
    ------
    ValueError
        ``param`` is not one of :data:`SWEPT_PARAMS`.
    """
    if param not in SWEPT_PARAMS:
        raise ValueError(f"param must be one of {', '.join(SWEPT_PARAMS)}, got {param!r}")
    if points is None:
        points = read_point_rows(ber_map)
    return _ber_by_bank(points, param, reference_settings(points, ber_map.meta))


# Drawing -------------------------------------------------------------------------------------


def _figure(width_in: float, height_in: float) -> Figure:
    """A new figure on an Agg canvas (not registered with pyplot: nothing to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _fmt_setting(param: str, value: float | None) -> str:
    name, unit = _SHORT[param]
    return f"{name} not set" if value is None else f"{name} {value:g} {unit}"


def _fmt_fixed(fixed: dict[str, float | None]) -> str:
    return ", ".join(_fmt_setting(p, v) for p, v in fixed.items() if v is not None) or "no other setting"


def write_ber_vs_param(data: BankBer, path: Path, title: str = "") -> Path:
    """Draw per-bank BER (log y) against ``data.param`` and save it as a PNG.

    Parameters
    ----------
    data : BankBer
        From :func:`ber_by_bank`.
    path : Path
        The PNG to write.
    title : str
        First title line (e.g. the map's DIMM).

    Returns
    -------
    Path
        ``path``.
    """
    import matplotlib
    from matplotlib.lines import Line2D

    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    ber = data.ber
    max_bits = int(data.bits.max()) if data.bits.size else 1
    floor_ber = 1.0 / (2 * max(max_bits, 1))
    colors = matplotlib.colormaps["tab10" if len(data.banks) <= 10 else "tab20"]
    x = data.values
    for i in range(len(data.banks)):
        color = colors(i % colors.N)
        y = ber[i]
        shown = np.where(data.flips[i] > 0, y, floor_ber)
        valid = data.bits[i] > 0
        ax.plot(x[valid], shown[valid], "-", color=color, lw=1.4, alpha=0.85)
        hit = valid & (data.flips[i] > 0)
        zero = valid & (data.flips[i] == 0)
        ax.plot(x[hit], y[hit], "o", color=color, ms=5)
        ax.plot(x[zero], np.full(int(zero.sum()), floor_ber), "v", mfc="none", mec=color, ms=7, mew=1.3)
    ax.axhline(floor_ber, color="0.35", ls=":", lw=1)
    ax.set_yscale("log")
    top = float(np.nanmax(ber)) if np.any(data.flips > 0) else floor_ber * 10
    ax.set_ylim(floor_ber / 3, max(top * 3, floor_ber * 10))
    ax.set_xticks(x)
    ax.set_xticklabels([f"{v:g}" for v in x], rotation=45 if len(x) > 10 else 0)
    ax.set_xlabel(_LABELS[data.param])
    ax.set_ylabel("bit error rate (flips / bits tested)")
    ax.grid(True, which="major", alpha=0.3)
    bank_handles = [Line2D([], [], color=colors(i % colors.N), marker="o", label=f"bank {b}") for i, b in enumerate(data.banks)]
    floor_handle = Line2D(
        [], [], color="0.35", ls=":", marker="v", mfc="none", mec="0.35",
        label=f"0 flips (BER < 1/bits = {1.0 / max(max_bits, 1):.1e})",
    )
    ax.legend(handles=bank_handles + [floor_handle], fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    name = _SHORT[data.param][0]
    heading = f"BER vs {name} per bank, at {_fmt_fixed(data.fixed)}"
    tested = data.bits[data.bits > 0]
    min_bits = int(tested.min()) if tested.size else 0
    span = f"{max_bits:,}" if min_bits == max_bits else f"{min_bits:,} to {max_bits:,}"
    sub = f"{data.points} points; patterns and repetitions merged; {span} bits per bank and setting"
    fig.suptitle("\n".join(t for t in (title, heading) if t), fontsize=10)
    ax.set_title(sub, fontsize=8, color="0.3")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _tick_positions(count: int, most: int) -> np.ndarray:
    if count <= most:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, most).round().astype(int))


def write_heatmap(point: PointRows, path: Path, title: str = "") -> Path:
    """Draw bit errors per measured row (bank x row, colour ``1 + errors``, log) and save it.

    Parameters
    ----------
    point : PointRows
        The point.
    path : Path
        The PNG to write.
    title : str
        First title line.

    Returns
    -------
    Path
        ``path``.
    """
    import matplotlib
    from matplotlib.colors import LogNorm

    banks = np.unique(point.rows[:, 0])
    columns = np.unique(point.rows[:, 1])
    grid = np.full((banks.size, columns.size), np.nan)
    bank_slot = np.searchsorted(banks, point.rows[:, 0])
    column_slot = np.searchsorted(columns, point.rows[:, 1])
    grid[bank_slot, column_slot] = 1 + point.flips
    contiguous = columns.size == 1 or bool(np.all(np.diff(columns) == 1))
    width_in = float(np.clip(3.0 + 0.32 * columns.size, 7.0, 14.0))
    fig = _figure(width_in, float(np.clip(1.8 + 0.38 * banks.size, 3.2, 9.0)))
    ax = fig.add_subplot()
    vmax = max(10.0, float(np.nanmax(grid)) if np.isfinite(grid).any() else 10.0)
    cmap = matplotlib.colormaps["magma_r"].with_extremes(bad="0.85")
    image = ax.imshow(
        np.ma.masked_invalid(grid), aspect="auto", interpolation="nearest", cmap=cmap,
        norm=LogNorm(vmin=1.0, vmax=vmax),
    )
    bar = fig.colorbar(image, ax=ax, pad=0.015)
    bar.set_label("1 + bit errors in the row")
    if columns.size <= 24 and banks.size <= 16:  # room for the numbers
        for (b, c), value in np.ndenumerate(grid):
            if np.isfinite(value) and value > 1:
                dark = math.log(value) > 0.55 * math.log(vmax)
                ax.text(c, b, f"{int(value) - 1}", ha="center", va="center", fontsize=6.5,
                        color="white" if dark else "black")
    ticks = _tick_positions(columns.size, 32)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(int(columns[t])) for t in ticks], rotation=90, fontsize=7.5)
    ax.set_yticks(np.arange(banks.size))
    ax.set_yticklabels([str(int(b)) for b in banks])
    ax.set_ylabel("bank")
    if contiguous:
        ax.set_xlabel("row")
    else:
        ax.set_xlabel(f"row index ({columns.size} measured rows, shown as adjacent columns in ascending order)")
    s = point.settings
    settings = ", ".join(_fmt_setting(p, s[p]) for p in SWEPT_PARAMS if s[p] is not None)
    heading = f"Bit errors per row at {settings}; pattern {s['pattern']}, rep {s['rep']}"
    sub = f"point {point.key}: {int(point.flips.sum()):,} flips in {int(point.bits_tested.sum()):,} bits, BER {point.ber:.2e}"
    fig.suptitle("\n".join(t for t in (title, heading) if t), fontsize=10)
    ax.set_title(sub, fontsize=8, color="0.3")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_direction(points: Sequence[PointRows], param: str, reference: dict[str, float | None], path: Path,
                    patterns: Sequence[str] = (), title: str = "") -> Path:
    """Draw 0->1 and 1->0 flips per setting of ``param`` as side-by-side bars (log y) and save it.

    Parameters
    ----------
    points : sequence of PointRows
        The map's points.
    param : str
        The parameter on the x axis (one of :data:`SWEPT_PARAMS`).
    reference : dict
        The other parameters' values (:func:`reference_settings`).
    path : Path
        The PNG to write.
    patterns : sequence of str
        The data patterns of the map (named in the subtitle).
    title : str
        First title line.

    Returns
    -------
    Path
        ``path``.
    """
    chosen = _select(points, param, reference)
    values = param_values(chosen, param)
    up = np.zeros(len(values), np.int64)
    down = np.zeros(len(values), np.int64)
    bits = np.zeros(len(values), np.int64)
    for point in chosen:
        k = values.index(point.settings[param])
        up[k] += int(point.flips_0to1.sum())
        down[k] += int(point.flips_1to0.sum())
        bits[k] += int(point.bits_tested.sum())
    fig = _figure(float(np.clip(3.5 + 0.6 * len(values), 7.0, 14.0)), 4.6)
    ax = fig.add_subplot()
    x = np.arange(len(values))
    width = 0.38
    base = 0.5  # bars start below 1 so that a single flip shows on the log axis
    for offset, counts, color, label in ((-width / 2, up, "tab:red", "0 -> 1 (written 0, read 1)"),
                                         (width / 2, down, "tab:blue", "1 -> 0 (written 1, read 0)")):
        heights = np.where(counts > 0, counts - base, 0)
        ax.bar(x + offset, heights, width, bottom=base, color=color, label=label)
        for xi, count in zip(x + offset, counts):
            ax.text(xi, max(count, base) * 1.15, f"{count:,}" if count else "0", ha="center", va="bottom",
                    fontsize=6.5, rotation=90 if len(values) > 6 else 0, color="0.2")
    ax.set_yscale("log")
    top = max(int(up.max(initial=0)), int(down.max(initial=0)), 1)
    ax.set_ylim(base, top * (30 if len(values) > 6 else 6))
    ax.set_xticks(x)
    ax.set_xticklabels(["not set" if v is None else f"{v:g}" for v in values])
    ax.set_xlabel(_LABELS[param])
    ax.set_ylabel("flipped bits (all banks, patterns, reps)")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", frameon=False)
    fixed = {o: reference[o] for o in SWEPT_PARAMS if o != param}
    heading = f"Flip direction vs {_SHORT[param][0]}, at {_fmt_fixed(fixed)}"
    pattern_text = f"patterns {', '.join(patterns)}" if patterns else "all patterns"
    sub = f"{len(chosen)} points, {pattern_text} (a 0->1 flip needs a 0 written, a 1->0 flip a 1)"
    fig.suptitle("\n".join(t for t in (title, heading) if t), fontsize=10)
    ax.set_title(sub, fontsize=8, color="0.3")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _main_param(points: Sequence[PointRows]) -> str:
    """The swept parameter with the most values (ties: :data:`SWEPT_PARAMS` order)."""
    swept = swept_params(points)
    if swept:
        return max(swept, key=lambda p: (len(param_values(points, p)), -SWEPT_PARAMS.index(p)))
    for param in SWEPT_PARAMS:  # nothing swept: the first parameter the sweep set
        if points and points[0].settings[param] is not None:
            return param
    return "trcd_ns"


def write_plots(ber_map: BerMap, out_dir: Path, prefix: str, point_key: str | None = None) -> list[Path]:
    """Write every plot of a map; return the paths written.

    Parameters
    ----------
    ber_map : BerMap
        The map.
    out_dir : Path
        Where the PNGs go (created if missing).
    prefix : str
        File name prefix.
    point_key : str, optional
        The heatmap's point; default the point with the highest BER (the first
        such in measurement order).

    Returns
    -------
    list of Path
        The PNG files written, in the order written.

    Raises
    ------
    MapError
        The map is unreadable, has no complete points, or lacks ``point_key``.
    OSError
        ``out_dir`` cannot be written.
    """
    points = read_point_rows(ber_map)
    if not points:
        raise MapError(f"{ber_map.path} holds no finished points yet: nothing to plot")
    by_key = {p.key: p for p in points}
    if point_key is not None and point_key not in by_key:
        raise MapError(f"{ber_map.path} has no point {point_key!r} ({len(points)} points, e.g. {points[0].key})")
    dimm = ber_map.meta.get("dimm", {})
    title = f"{ber_map.path.name}" + (f" (DIMM profile {dimm['profile']})" if isinstance(dimm, dict) and "profile" in dimm else "")
    reference = reference_settings(points, ber_map.meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for param in swept_params(points):
        data = _ber_by_bank(points, param, reference)
        written.append(write_ber_vs_param(data, out_dir / f"{prefix}_ber_vs_{param}.png", title))
    heat = by_key[point_key] if point_key is not None else max(points, key=lambda p: p.ber)
    written.append(write_heatmap(heat, out_dir / f"{prefix}_heatmap_{heat.key}.png", title))
    patterns = list(dict.fromkeys(p.settings["pattern"] for p in points))
    written.append(write_direction(points, _main_param(points), reference, out_dir / f"{prefix}_direction.png", patterns, title))
    return written


def plot_map(path: str | Path, out_dir: str | Path | None = None, prefix: str | None = None,
             point_key: str | None = None) -> list[Path]:
    """Write every plot of a BER map file; return the PNGs written (the library of ``python -m profiler.plot``).

    Parameters
    ----------
    path : path
        The BER map (``.h5``).
    out_dir : path, optional
        Where the PNGs go (created if missing); default the map's directory.
    prefix : str, optional
        File name prefix; default the map's file name without ``.h5``.
    point_key : str, optional
        The heatmap's point; default the point with the highest BER.

    Returns
    -------
    list of Path
        The PNG files written, in the order written (:func:`write_plots`).

    Raises
    ------
    MapError
        A missing file, a directory, a file that is not a readable BER map, a map with no
        finished points, or an unknown ``point_key`` (one line naming the file).
    OSError
        ``out_dir`` cannot be written.
    """
    path = Path(path)
    if not path.exists():
        raise MapError(f"{path}: no such file")
    if path.is_dir():
        raise MapError(f"{path} is a directory, not a BER map")
    ber_map = BerMap(path)
    directory = Path(out_dir) if out_dir is not None else path.resolve().parent
    written = write_plots(ber_map, directory, prefix or path.stem, point_key)
    logger.debug("%s: %d plots in %s", path, len(written), directory)
    return written


class LivePlot:
    """A subscriber of a sweep's documents that redraws a PNG of BER per measured point.

    Parameters
    ----------
    path : path
        The PNG, replaced atomically at each redraw (a viewer never sees half a file).
    every : int
        Redraw after this many points (and always at the stop document).
    """

    def __init__(self, path: str | Path, every: int = 1) -> None:
        self.path = Path(path)
        self.every = max(1, int(every))
        self.keys: list[str] = []
        self.bits: list[int] = []
        self.flips: list[int] = []
        self._pending = 0

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self.keys, self.bits, self.flips, self._pending = [], [], [], 0
        elif name == "point":
            data: PointData = doc["data"]
            self.keys.append(str(doc["key"]))
            self.bits.append(data.bits)
            self.flips.append(data.flips)
            self._pending += 1
            if self._pending >= self.every:
                self.draw()
        elif name == "stop" and self._pending:
            self.draw()

    def draw(self) -> Path:
        """Write the PNG now; return its path."""
        fig = _figure(7.5, 4.2)
        ax = fig.add_subplot()
        bits = np.maximum(np.array(self.bits, dtype=float), 1.0)
        flips = np.array(self.flips, dtype=float)
        floor = 1.0 / (2 * float(bits.max())) if bits.size else 1e-9
        ber = np.where(flips > 0, flips / bits, floor)
        x = np.arange(1, len(ber) + 1)
        ax.plot(x, ber, "o-", ms=4, lw=1)
        ax.axhline(floor, color="0.35", ls=":", lw=1, label="0 flips")
        ax.set_yscale("log")
        ax.set_xlabel("point (measurement order, this run)")
        ax.set_ylabel("bit error rate")
        ax.legend(fontsize=8, frameon=False)
        last = self.keys[-1] if self.keys else ""
        ax.set_title(f"{len(ber)} points; last {last}", fontsize=8, color="0.3")
        fig.tight_layout()
        atomic_write(self.path, lambda fh: fig.savefig(fh, format="png"))
        self._pending = 0
        return self.path


# Command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m profiler.plot",
        description="Write PNG plots of a BER map: BER vs each swept parameter per bank, "
        "a bank x row error heatmap, and the 0->1 / 1->0 split.",
    )
    p.add_argument("file", help="BER map (.h5) written by python -m profiler.sweep")
    add_out(p, None, "directory for the PNGs (default: the map's directory)")
    p.add_argument("--out-dir", dest="out", help=argparse.SUPPRESS)  # the old spelling of -o
    p.add_argument("--prefix", help="file name prefix (default: the map's file name without .h5)")
    p.add_argument("--point", metavar="KEY", help="heatmap point key (default: the point with the highest BER)")
    add_verbosity(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the plot command; print the PNGs written; exit 0 when the plots are written, 2 on bad input."""
    args = _parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    import matplotlib

    matplotlib.use("Agg")  # before any pyplot import: no display needed
    try:
        written = plot_map(args.file, args.out, args.prefix, args.point)
    except MapError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot write the plots: {exc.strerror or exc}"
                    + (f": {exc.filename}" if getattr(exc, "filename", None) else ""))
    for item in written:
        print(item)
    return 0


if __name__ == "__main__":
    sys.exit(main())

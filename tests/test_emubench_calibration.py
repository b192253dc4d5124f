"""The Voltron per-DIMM calibration (emubench.calibration): loading, the shift-model fit, hold-out, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from emubench.calibration import (
    RESOLUTION,
    CalibrationError,
    Record,
    default_holdout,
    fit_vendor,
    load_voltron,
    main,
)

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "data" / "voltron-faulty-cachelines.csv"
HEADER = "dimm_name,vdd,vendor,error_cacheline_percent\n"

# A known typical curve on the 25 mV grid: at the ceiling up to 1.0 V, then 80 decades per volt.
TRUE_KNOTS_V = np.round(np.arange(0.95, 1.3001, 0.025), 4)
TRUE_LOG10 = np.minimum(0.0, -80.0 * (TRUE_KNOTS_V - 1.0))
TRUE_SIGMA_V = 0.015


def _synthetic(seed: int = 7, n_dimms: int = 12, noise_decades: float = 0.1) -> tuple[list[Record], dict[str, float]]:
    """Rows from the known curve and known shifts, with measurement noise and censoring at one line."""
    rng = np.random.default_rng(seed)
    z = np.array([-1.8, -1.3, -1.0, -0.7, -0.4, -0.1, 0.1, 0.4, 0.7, 1.0, 1.3, 1.8])[:n_dimms]
    deltas_v = TRUE_SIGMA_V * rng.permutation(z)
    names = [f"S{i + 1}" for i in range(n_dimms)]
    rows = []
    for name, delta in zip(names, deltas_v):
        for vdd in np.round(np.arange(1.0, 1.2001, 0.025), 4):
            log10 = np.interp(vdd - delta, TRUE_KNOTS_V, TRUE_LOG10) + rng.normal(0.0, noise_decades)
            frac = min(1.0, 10.0**log10)
            frac = np.round(frac / RESOLUTION) * RESOLUTION  # whole lines; below one line reads as 0
            rows.append(Record(name, "S", float(vdd), float(frac)))
    return rows, dict(zip(names, deltas_v))


@pytest.fixture(scope="module")
def synthetic_fit():
    rows, true = _synthetic()
    return rows, true, fit_vendor(rows, "S", holdout=())


# --- loading ----------------------------------------------------------------------------------

def test_load_shipped_csv_gives_fractions() -> None:
    rows = load_voltron(CSV)
    assert {r.vendor for r in rows} == {"A", "B", "C"}
    a7 = next(r for r in rows if r.dimm == "A7" and abs(r.vdd_v - 1.1) < 1e-9)
    assert a7.line_fraction == pytest.approx(0.896379262209)
    assert all(0.0 <= r.line_fraction <= 1.0 for r in rows)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        (b"\x00\x01\x02binary", "not a text file"),
        (b"\xff\xfe\xfa", "not a UTF-8"),
        (b"", "empty file"),
        (b"dimm,vdd,vendor\nA1,1.1,A\n", "missing column"),
        ((HEADER + "A1,abc,A,1.0\n").encode(), "line 2"),
        ((HEADER + "A1,1.1,A,1.0\nA1,1.1,A,140\n").encode(), "not in 0..100"),
        ((HEADER + "A1,1.1,A,1.0\nA1,1.1,A,2.0\n").encode(), "a second row for A1"),
        ((HEADER + "A1,1.1,A\n").encode(), "fields"),
        ((HEADER + "A1,nan,A,1\n").encode(), "not a DDR supply"),
        (HEADER.encode(), "no data rows"),
    ],
)
def test_load_errors_are_one_line(tmp_path: Path, content: bytes | None, needle: str) -> None:
    path = tmp_path / "v.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CalibrationError) as info:
        load_voltron(path)
    message = str(info.value)
    assert needle in message and str(path) in message
    assert "\n" not in message


# --- the fit ------------------------------------------------------------------------------------

def test_synthetic_fit_recovers_sigma_and_delta_ranks(synthetic_fit) -> None:
    _, true, fit = synthetic_fit
    true_std = float(np.std(list(true.values()), ddof=1))
    assert fit.sigma_dimm_v == pytest.approx(true_std, rel=0.15)
    assert fit.sigma_dimm_robust_v == pytest.approx(true_std, rel=0.4)
    names = sorted(true)
    rho = spearmanr([true[n] for n in names], [fit.deltas[n] for n in names])[0]
    assert rho >= 0.95
    assert abs(sum(fit.deltas.values())) < 1e-9  # centred
    assert fit.rms_decades < 0.3


def test_synthetic_curve_is_monotone_capped_and_close(synthetic_fit) -> None:
    _, _, fit = synthetic_fit
    y = np.array(fit.knots_log10_fraction)
    assert np.all(np.diff(y) <= 0) and np.all(y <= np.log10(fit.ceiling) + 1e-12)
    # where the data are measured (above one line, below the ceiling) F matches the true curve
    for vdd in (1.05, 1.075, 1.1):
        true = np.interp(vdd, TRUE_KNOTS_V, TRUE_LOG10)
        assert np.log10(fit.line_fraction(vdd)) == pytest.approx(true, abs=0.35)


def test_quantiles_follow_the_shift_model(synthetic_fit) -> None:
    _, _, fit = synthetic_fit
    q05, q50, q95 = fit.quantiles(1.075, (0.05, 0.5, 0.95))
    assert q05 < q50 < q95
    assert q50 == pytest.approx(fit.line_fraction(1.075))
    assert q95 == pytest.approx(fit.line_fraction(1.075, 1.6448536 * fit.sigma_dimm_v), rel=1e-6)
    with pytest.raises(ValueError):
        fit.quantiles(1.075, 1.5)


def test_holdout_dimm_does_not_change_the_fit() -> None:
    rows, true = _synthetic()
    held = "S3"
    base = fit_vendor(rows, "S", holdout=(held,))
    changed = [Record(r.dimm, r.vendor, r.vdd_v, min(1.0, r.line_fraction * 10.0)) if r.dimm == held else r
               for r in rows]
    other = fit_vendor(changed, "S", holdout=(held,))
    assert held not in base.deltas
    assert base.knots_log10_fraction == other.knots_log10_fraction
    assert base.deltas == other.deltas and base.sigma_dimm_v == other.sigma_dimm_v
    (result,) = base.holdout
    assert result.dimm == held
    # its one-parameter delta sits where the truth is (relative to the fitted shifts' centre)
    centre = np.mean([true[d] for d in base.deltas])
    assert result.delta_v == pytest.approx(true[held] - centre, abs=0.004)
    assert 0.0 < result.percentile < 100.0
    inside, n = result.coverage
    assert n == 9 and inside >= 7
    # a 10x larger error rate makes the held-out DIMM weaker
    assert other.holdout[0].delta_v > result.delta_v


def test_default_holdout_rule_and_bad_names() -> None:
    names = [f"A{i}" for i in range(1, 11)]
    assert default_holdout(reversed(names)) == ("A3", "A8")
    rows = load_voltron(CSV)
    with pytest.raises(CalibrationError, match="not in the data"):
        fit_vendor(rows, "A", holdout=("A99",))
    with pytest.raises(CalibrationError, match="no rows for vendor"):
        fit_vendor(rows, "Z")


def test_floors_are_lowest_rows() -> None:
    rows = load_voltron(CSV)
    fit = fit_vendor(rows, "B")
    assert fit.floors.per_dimm_v["B1"] == pytest.approx(1.025)
    assert fit.floors.per_dimm_v["B5"] == pytest.approx(1.075)
    assert fit.floors.median_v == pytest.approx(1.05)
    assert set(fit.floors.per_dimm_v) == set(fit.deltas) | {h.dimm for h in fit.holdout}


# --- the command --------------------------------------------------------------------------------

def test_cli_prints_all_vendors_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fit.json"
    assert main(["--csv", str(CSV), "--json", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    for vendor in "ABC":
        assert f"== vendor {vendor}:" in printed
    assert printed.count("points=((") == 3 and printed.count("dimm_sigma_v=") == 3
    assert "hold-out A3" in printed and "hold-out C3" in printed
    doc = json.loads(out.read_text())
    assert set(doc["vendors"]) == {"A", "B", "C"}
    assert doc["vendors"]["C"]["ceiling"] == 0.5
    assert doc["vendors"]["B"]["sigma_dimm_v"] > 0


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--csv", str(tmp_path / "none.csv"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["--csv", str(CSV), "--holdout", "A3,Q1", "-q"]) == 2
    assert "Q1" in capsys.readouterr().err

"""errormodels: the four models, fitting and selection on synthetic maps, error curves, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from errormodels.curves import Curve, curves_for
from errormodels.fit import fit_all, observe, select
from errormodels.models import Bitline, BitValue, ModelError, Wordline, get_model, model_from_dict, weak_mask
from profiler.storage import ERROR_DTYPE, BerMap, MapWriter, PointData

ROOT = Path(__file__).resolve().parents[1]
ROW_BITS = 8192 * 8


def synthetic_map(path: Path, sampler, n_rows: int = 64, vdds=(1.0,), seed: int = 0, pattern: str = "random:3") -> Path:
    """A BER map whose flips are drawn by ``sampler(rng, bank, row, ones) -> (bits, dirs)``."""
    from profiler.patterns import parse_pattern

    pat = parse_pattern(pattern)
    rng = np.random.default_rng(seed)
    meta = {"software": "test", "geometry": {"banks": 8, "rows": 32768, "row_bytes": 8192},
            "patterns": {pat.name: pat.definition}}
    writer = MapWriter(path, meta, {"test": str(path)})
    writer.open()
    rows = np.array([(b, r) for b in range(4) for r in range(n_rows // 4)], np.uint32)
    for index, vdd in enumerate(vdds):
        errs, f01, f10 = [], [], []
        for i, (bank, row) in enumerate(rows):
            data = pat.data(int(bank), int(row), i, 8192)
            ones = np.unpackbits(data, bitorder="little").astype(bool)
            bits, dirs = sampler(rng, int(bank), int(row), ones, vdd)
            e = np.zeros(bits.size, ERROR_DTYPE)
            e["bank"], e["row"], e["bit"], e["dir"] = bank, row, bits, dirs
            errs.append(e)
            f01.append(int((dirs == 1).sum()))
            f10.append(int((dirs == 0).sum()))
        writer.write(PointData(
            key=f"p{index}", attrs={"vdd_v": vdd, "trcd_ns": 13.75, "trp_ns": 13.75, "tras_ns": 35.0, "temp_c": None,
                                    "pattern": pat.name, "rep": 0, "index": index, "errors_truncated": False},
            rows=rows, bits_tested=np.full(len(rows), ROW_BITS, np.uint64),
            flips_0to1=np.array(f01, np.uint32), flips_1to0=np.array(f10, np.uint32),
            bitline_banks=np.arange(4, dtype=np.uint8), bitline_0to1=np.zeros((4, ROW_BITS), np.uint32),
            bitline_1to0=np.zeros((4, ROW_BITS), np.uint32), errors=np.concatenate(errs)))
    writer.finish(complete=True)
    return path


def direction(ones: np.ndarray, bits: np.ndarray) -> np.ndarray:
    return (~ones[bits]).astype(np.uint8)  # a bit holding 0 that flips is 0->1


def test_models_and_registry() -> None:
    m = get_model("wordline", ber=1e-3, weak_fraction=0.01, ratio=50.0)
    assert m.p_weak == pytest.approx(50 * m.p_strong)
    assert 0.01 * m.p_weak + 0.99 * m.p_strong == pytest.approx(1e-3)
    assert get_model(3, ber=0.01, zero_share=2 / 3).p01 == pytest.approx(2 * 0.01 * 2 / 3)
    assert model_from_dict(m.to_dict()) == m
    assert m.with_ber(0.5).p_weak <= 1.0 + 1e-9
    with pytest.raises(ModelError, match="unknown error model 'gauss'"):
        get_model("gauss")
    with pytest.raises(ModelError, match="ber must be in"):
        get_model("uniform", ber=2.0)
    with pytest.raises(ModelError, match="group_bits must be a power of two"):
        Wordline(group_bits=3)
    mask = weak_mask(1, 1, np.arange(100_000), 0.1)
    assert 0.09 < mask.mean() < 0.11 and np.array_equal(mask, weak_mask(1, 1, np.arange(100_000), 0.1))


def uniform_sampler(p):
    def sample(rng, bank, row, ones, vdd):
        bits = np.flatnonzero(rng.random(ROW_BITS) < p)
        return bits, direction(ones, bits)
    return sample


def wordline_sampler(model: Wordline):
    def sample(rng, bank, row, ones, vdd):
        groups = np.arange(ROW_BITS // model.group_bits)
        weak = weak_mask(model.seed, 1, (bank << 40) | (row << 20) | groups, model.weak_fraction)
        p = np.where(np.repeat(weak, model.group_bits), model.p_weak, model.p_strong)
        bits = np.flatnonzero(rng.random(ROW_BITS) < p)
        return bits, direction(ones, bits)
    return sample


def bitline_sampler(f, p_w, p_s):
    def sample(rng, bank, row, ones, vdd):
        weak = weak_mask(0, 2, (bank << 20) | np.arange(ROW_BITS), f)
        bits = np.flatnonzero(rng.random(ROW_BITS) < np.where(weak, p_w, p_s))
        return bits, direction(ones, bits)
    return sample


def bitvalue_sampler(p01, p10):
    def sample(rng, bank, row, ones, vdd):
        bits = np.flatnonzero(rng.random(ROW_BITS) < np.where(ones, p10, p01))
        return bits, direction(ones, bits)
    return sample


@pytest.mark.parametrize(
    "sampler, expected",
    [
        (uniform_sampler(2e-3), "uniform"),
        (wordline_sampler(Wordline(ber=2e-3, weak_fraction=0.02, ratio=40.0, group_bits=64)), "wordline"),
        (bitline_sampler(0.03, 0.05, 2e-4), "bitline"),
        (bitvalue_sampler(3e-3, 1e-3), "bit-value"),
    ],
)
def test_selection_recovers_the_generating_model(tmp_path: Path, sampler, expected: str) -> None:
    ber_map = BerMap(synthetic_map(tmp_path / "m.h5", sampler))
    obs = observe(ber_map, ber_map.keys())["all"]
    chosen = select(obs, "all")
    assert chosen.best.model.name == expected, [c.to_dict() for c in chosen.candidates]


def test_fitted_parameters_are_recovered(tmp_path: Path) -> None:
    truth = Wordline(ber=2e-3, weak_fraction=0.02, ratio=40.0, group_bits=64)
    ber_map = BerMap(synthetic_map(tmp_path / "w.h5", wordline_sampler(truth), n_rows=128))
    fitted = {c.model.name: c for c in fit_all(observe(ber_map, ber_map.keys())["all"])}
    w = fitted["wordline"].model
    assert w.group_bits == 64
    assert w.weak_fraction == pytest.approx(0.02, rel=0.2)
    assert w.ratio == pytest.approx(40.0, rel=0.25)
    assert w.ber == pytest.approx(2e-3, rel=0.1)
    b = BerMap(synthetic_map(tmp_path / "b.h5", bitvalue_sampler(3e-3, 1e-3)))
    bv = {c.model.name: c for c in fit_all(observe(b, b.keys())["all"])}["bit-value"].model
    assert isinstance(bv, BitValue)
    assert bv.p01 == pytest.approx(3e-3, rel=0.05) and bv.p10 == pytest.approx(1e-3, rel=0.1)
    # Bitlines: 64 rows per bank, so a weak bitline (p 0.05) shows about 3 flips and a strong one
    # (p 2e-4) rarely any; with fewer rows the mixture cannot tell the strong rate from zero.
    f, p_w, p_s = 0.03, 0.05, 2e-4
    m = BerMap(synthetic_map(tmp_path / "l.h5", bitline_sampler(f, p_w, p_s), n_rows=256))
    fitted_bl = {c.model.name: c for c in fit_all(observe(m, m.keys())["all"])}["bitline"]
    bl = fitted_bl.model
    assert isinstance(bl, Bitline)
    assert bl.weak_fraction == pytest.approx(f, rel=0.1)
    assert bl.ratio == pytest.approx(p_w / p_s, rel=0.2)
    assert bl.ber == pytest.approx(f * p_w + (1 - f) * p_s, rel=0.05)
    assert bl.p_weak == pytest.approx(p_w, rel=0.1) and bl.p_strong == pytest.approx(p_s, rel=0.2)
    assert fitted_bl.detail["p_weak"] == pytest.approx(p_w, rel=0.1)
    assert fitted_bl.detail["p_strong"] == pytest.approx(p_s, rel=0.2)


def test_partitions(tmp_path: Path) -> None:
    ber_map = BerMap(synthetic_map(tmp_path / "m.h5", uniform_sampler(1e-3), n_rows=16))
    assert sorted(observe(ber_map, ber_map.keys(), "bank")) == ["bank0", "bank1", "bank2", "bank3"]
    chips = observe(ber_map, ber_map.keys(), "chip")
    assert sorted(chips) == [f"chip{c}" for c in range(8)]
    assert sum(o.k for o in chips.values()) == observe(ber_map, ber_map.keys())["all"].k
    assert set(observe(ber_map, ber_map.keys(), "rowgroup:2")) == {"rows0-1", "rows2-3"}


def test_curves_monotone_with_confidence_and_inversion() -> None:
    n = 10_000_000
    cells = {
        (1.35, 13.75, 13.75, None): (0, n),
        (1.2, 13.75, 13.75, None): (3, n),
        (1.1, 13.75, 13.75, None): (2, n),  # noise: fewer than at 1.2 V
        (1.05, 13.75, 13.75, None): (1000, n),
        (1.0, 13.75, 13.75, None): (100_000, n),
    }
    curve = curves_for(cells, nominal_vdd=1.35)["vdd_v"]
    assert np.all(np.diff(curve.fit) <= 1e-15)  # x ascending, BER never rising with VDD
    assert np.all(curve.lo <= curve.ber) and np.all(curve.ber <= curve.hi)
    assert curve.x[-1] == 1.35 and curve.lo[-1] == 0.0
    assert curve.hi[-1] == pytest.approx(3.69e-7, rel=0.01)  # 95 % upper bound for 0 flips in n bits
    assert curve.at(1.0) == pytest.approx(1e-2, rel=0.01)
    low = curve.lowest_safe(1e-5)
    assert 1.05 < low < 1.1 and curve.at(low) == pytest.approx(1e-5, rel=0.05)
    assert curve.lowest_safe(1.0) == 1.0
    assert Curve.from_dict(curve.to_dict()).lowest_safe(1e-5) == low


def test_fit_cli_writes_documented_json(tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    proc = subprocess.run([sys.executable, "-m", "errormodels.fit", str(ROOT / "data/maps/B-seed1.h5"),
                           "--partition", "bank", "-o", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "selected model:" in proc.stdout and "EDEN rule" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["format"] == "eden-error-model" and doc["format_version"] == 1
    assert len(doc["source"]["sha256"]) == 64 and doc["source"]["points"]
    assert set(doc["partitions"]) == {f"bank{b}" for b in range(8)}
    part = doc["partitions"]["bank0"]
    assert model_from_dict(part["selected"]).name == part["selected"]["model"]
    assert {c["model"] for c in part["candidates"]} == {"uniform", "wordline", "bitline", "bit-value"}
    assert "vdd_v" in part["curves"] and part["table"]


@pytest.mark.parametrize("args, message", [(["/no/such.h5"], "cannot read BER map"),
                                           (["data/maps/B-seed1.h5", "--partition", "rank"], "unknown partition")])
def test_fit_cli_bad_input(tmp_path: Path, args, message) -> None:
    proc = subprocess.run([sys.executable, "-m", "errormodels.fit", *args, "-o", str(tmp_path / "x.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr

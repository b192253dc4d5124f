"""Network-to-DRAM mapping (boosting.map): toy partitions with synthetic curves, and the CLI on a real fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from boosting.map import (
    Geometry,
    MapError,
    Partition,
    load_config,
    load_tolerance,
    map_network,
    partitions_from_model,
    placements,
    save_config,
    tensor_sizes,
)
from errormodels.curves import Curve

GEO = Geometry(banks=3, rows=16, columns=128)  # 1 KiB rows on the 64-bit bus
VDD_X = [1.0, 1.1, 1.2, 1.35]
TRCD_X = [7.5, 10.0, 13.75]
# bank0 is the most reliable, bank2 the least.
VDD_FIT = {0: [1e-4, 1e-6, 1e-8, 1e-9], 1: [1e-3, 1e-5, 1e-7, 1e-9], 2: [1e-2, 1e-4, 1e-6, 1e-9]}
TRCD_FIT = {0: [1e-6, 1e-8, 1e-9], 1: [1e-5, 1e-7, 1e-9], 2: [1e-4, 1e-6, 1e-9]}
SIZES = {("a", "weight"): 1000, ("b", "weight"): 2048, ("c", "ifm"): 1500}  # 1, 2, 2 rows of 1 KiB
TOL = {("a", "weight"): 1e-7, ("b", "weight"): 1e-5, ("c", "ifm"): 1e-3}


def curve(param: str, x: list[float], fit: list[float]) -> Curve:
    xs, fits = np.array(x, float), np.array(fit, float)
    bits = np.full(len(xs), 1e9)
    return Curve(param, {}, xs, fits * bits, bits, fits, fits, fits)


def toy_partitions() -> list[Partition]:
    return [
        Partition(f"bank{b}", b, (0, GEO.rows - 1),
                  {"vdd_v": curve("vdd_v", VDD_X, VDD_FIT[b]), "trcd_ns": curve("trcd_ns", TRCD_X, TRCD_FIT[b])})
        for b in (2, 0, 1)  # any order in, sorted inside
    ]


def by_key(config: dict) -> dict:
    return {(t["layer"], t["kind"]): t for t in config["tensors"]}


def parts(config: dict) -> dict:
    return {p["label"]: p for p in config["partitions"]}


def test_coarse_picks_setting_of_most_sensitive_tensor() -> None:
    config = map_network(toy_partitions(), TOL, SIZES, mode="power", granularity="coarse", geometry=GEO)
    # Everything fits in bank0 (rows 0..4): VDD is bank0's lowest safe VDD for BER 1e-7, log-interpolated 1.15 V.
    vdds = {p["vdd_v"] for p in config["partitions"]}
    assert len(vdds) == 1 and vdds.pop() == pytest.approx(1.15, abs=1e-3)
    t = by_key(config)
    assert [t[k]["row"] for k in SIZES] == [0, 1, 3] and {t[k]["bank"] for k in SIZES} == {0}
    assert all(x["predicted_ber"] <= x["tolerable_ber"] * (1 + 1e-9) for x in config["tensors"])
    assert config["savings"]["vdd_reduction_v"] == pytest.approx(0.2, abs=1e-3)
    # A single tolerable BER for all tensors behaves the same.
    same = map_network(toy_partitions(), 1e-7, SIZES, mode="power", granularity="coarse", geometry=GEO)
    assert parts(same)["bank0"]["vdd_v"] == parts(config)["bank0"]["vdd_v"]
    # Latency coarse: one tRCD for the DIMM, VDD nominal.
    lat = map_network(toy_partitions(), TOL, SIZES, mode="latency", granularity="coarse", geometry=GEO)
    trcds = {p["trcd_ns"] for p in lat["partitions"]}
    assert len(trcds) == 1 and trcds.pop() == pytest.approx(8.75, abs=0.01)
    assert {p["vdd_v"] for p in lat["partitions"]} == {1.35}


def test_fine_power_one_vdd_and_most_sensitive_in_most_reliable() -> None:
    config = map_network(toy_partitions(), TOL, SIZES, mode="power", granularity="fine", geometry=GEO)
    assert len({p["vdd_v"] for p in config["partitions"]}) == 1  # one supply for the module
    assert config["partitions"][0]["vdd_v"] == pytest.approx(1.15, abs=1e-3)
    t = by_key(config)
    assert t[("a", "weight")]["partition"] == "bank0"
    assert all(p["trcd_ns"] == 13.75 and p["trp_ns"] == 13.75 for p in config["partitions"])
    for x in config["tensors"]:
        assert x["predicted_ber"] <= x["tolerable_ber"] * (1 + 1e-9) and x["margin"] >= 1 - 1e-9


def test_capacity_pushes_tensors_to_next_partition() -> None:
    config = map_network(toy_partitions(), TOL, SIZES, mode="power", granularity="fine", geometry=GEO, capacity_rows=2)
    t = by_key(config)
    # a (1 row) -> bank0; b (2 rows) does not fit in bank0's last row -> bank1; c -> neither -> bank2.
    assert [t[k]["partition"] for k in SIZES] == ["bank0", "bank1", "bank2"]
    p = parts(config)
    assert p["bank0"]["used_bytes"] == 1024 and p["bank0"]["capacity_bytes"] == 2048
    assert all(q["used_bytes"] <= q["capacity_bytes"] for q in config["partitions"])
    assert len({q["vdd_v"] for q in config["partitions"]}) == 1
    # Too little room for b anywhere it is safe -> a clear error naming it.
    with pytest.raises(MapError, match=r"tensor b/weight .*no room"):
        map_network(toy_partitions(), {**TOL, ("c", "ifm"): 1e-5}, SIZES, mode="power", granularity="fine",
                    geometry=GEO, capacity_rows=1)


def test_latency_fine_per_partition_trcd() -> None:
    config = map_network(toy_partitions(), TOL, SIZES, mode="latency", granularity="fine", geometry=GEO, capacity_rows=2)
    p, t = parts(config), by_key(config)
    assert [t[k]["partition"] for k in SIZES] == ["bank0", "bank1", "bank2"]
    assert p["bank0"]["trcd_ns"] == pytest.approx(8.75, abs=0.01)  # safe for 1e-7
    assert p["bank1"]["trcd_ns"] == pytest.approx(7.5)  # safe for 1e-5
    assert all(q["vdd_v"] == 1.35 for q in config["partitions"])
    # Without the capacity limit everything goes to bank0; the others stay nominal.
    free = parts(map_network(toy_partitions(), TOL, SIZES, mode="latency", granularity="fine", geometry=GEO))
    assert free["bank0"]["trcd_ns"] == pytest.approx(8.75, abs=0.01)
    assert free["bank1"]["trcd_ns"] == free["bank2"]["trcd_ns"] == 13.75
    assert free["bank1"]["used_bytes"] == 0


def test_latency_adds_trp_errors() -> None:
    ps = toy_partitions()
    for q in ps:
        q.curves["trp_ns"] = curve("trp_ns", TRCD_X, [1e-6, 1e-8, 1e-9])
    config = map_network(ps, {k: 1e-6 for k in SIZES}, SIZES, mode="latency", granularity="fine", geometry=GEO)
    b0 = parts(config)["bank0"]
    assert b0["trcd_ns"] < 13.75 and b0["trp_ns"] < 13.75
    assert b0["predicted_ber"] <= 1e-6 * (1 + 1e-9)


def test_infeasible_names_the_tensor() -> None:
    tol = {**TOL, ("b", "weight"): 1e-10}
    for mode in ("power", "latency"):
        for granularity in ("coarse", "fine"):
            with pytest.raises(MapError, match=r"tensor b/weight \(tolerable BER 1e-10\) cannot be placed"):
                map_network(toy_partitions(), tol, SIZES, mode=mode, granularity=granularity, geometry=GEO)
    with pytest.raises(MapError, match="no BER for c/ifm"):
        map_network(toy_partitions(), {k: v for k, v in TOL.items() if k[1] != "ifm"}, SIZES, geometry=GEO)
    with pytest.raises(MapError, match="chip"):
        partitions_from_model({"format": "eden-error-model", "format_version": 1, "partitions": {"chip0": {}}})
    with pytest.raises(MapError, match="mode"):
        map_network(toy_partitions(), TOL, SIZES, mode="speed", geometry=GEO)


def test_config_round_trip(tmp_path: Path) -> None:
    config = map_network(toy_partitions(), TOL, SIZES, mode="power", granularity="fine", geometry=GEO, capacity_rows=2)
    path = save_config(config, tmp_path / "cfg.json")
    loaded = load_config(path)
    assert loaded == json.loads(json.dumps(config))
    amaps = placements(path)
    assert set(amaps) == set(SIZES)
    used = set()
    for key, amap in amaps.items():
        t = by_key(loaded)[key]
        assert (amap.bank, amap.row, amap.interleave, amap.rows, amap.row_bytes) == (t["bank"], t["row"], "row", 16, 1024)
        amap.check_fits(SIZES[key])
        bank, row, _ = amap.locate(np.arange(SIZES[key]))
        cells = set(zip(bank.tolist(), row.tolist()))
        assert not cells & used and len({b for b, _ in cells}) == 1  # rows of one bank, no overlap
        used |= cells
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**config, "format_version": 7}))
    with pytest.raises(MapError, match="format_version"):
        load_config(bad)
    with pytest.raises(MapError, match="does not exist"):
        load_config(tmp_path / "missing.json")


def test_tolerance_and_sizes() -> None:
    from boosting.networks import get_network

    doc = {"format": "eden-tolerance", "format_version": 1, "fmt": "int8", "coarse": {"ber": 1e-4, "found": True},
           "fine": None}
    assert load_tolerance(doc) == (1e-4, "int8")
    fine = {**doc, "fine": {"bers": [["x", "weight", 2e-4]], "start_ber": 1e-4}}
    assert load_tolerance(fine) == ({("x", "weight"): 2e-4}, "int8")
    with pytest.raises(MapError, match="tolerates no bit errors"):
        load_tolerance({**doc, "coarse": {"ber": 0.0, "found": False}})
    net = get_network("lenet", image_size=28, seed=0)
    s8 = tensor_sizes(net, "int8", net.input_shape)
    s4 = tensor_sizes(net, "int4", net.input_shape, batch_size=2)
    first = next(iter(s8))[0]
    assert s8[(first, "weight")] == 150 and s8[(first, "ifm")] == 784
    assert s4[(first, "weight")] == 75 and s4[(first, "ifm")] == 784
    assert len(s8) == 10


@pytest.fixture(scope="module")
def real_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from boosting.checkpoint import save_network
    from boosting.networks import get_network
    from errormodels.fit import fit_map

    root = Path(__file__).resolve().parents[1]
    tmp = tmp_path_factory.mktemp("map")
    model = tmp / "model.json"
    model.write_text(json.dumps(fit_map(str(root / "data/maps/B-seed1.h5"), "bank"), default=float))
    net = get_network("lenet", image_size=28, seed=0)
    network = save_network(tmp / "lenet.pt", net, network="lenet", build={"image_size": 28}, seed=0,
                           dataset={"name": "digits", "root": None, "image_size": 28, "normalize": False, "split_seed": 0})
    keys = list(tensor_sizes(net, "int8", net.input_shape))
    tol = {"format": "eden-tolerance", "format_version": 1, "fmt": "int8", "coarse": {"ber": 1e-5, "found": True},
           "fine": {"bers": [[layer, k, 1e-5 if i == 0 else 1e-3] for i, (layer, k) in enumerate(keys)], "start_ber": 1e-5}}
    tolerance = tmp / "tolerance.json"
    tolerance.write_text(json.dumps(tol))
    return {"tmp": tmp, "model": model, "network": network, "tolerance": tolerance, "keys": keys}


def test_cli_on_real_fit(real_inputs: dict, capsys: pytest.CaptureFixture) -> None:
    from boosting.map import main

    r = real_inputs
    out = r["tmp"] / "cfg.json"
    base = ["--error-model", str(r["model"]), "--tolerance", str(r["tolerance"]), "--network-file", str(r["network"]),
            "--granularity", "fine"]
    assert main([*base, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bank" in text and "written" in text
    config = load_config(out)
    assert out.with_suffix(".csv").read_text().count("\n") == 11
    vdds = {p["vdd_v"] for p in config["partitions"]}
    assert len(vdds) == 1 and vdds.pop() < 1.35
    first = by_key(config)[tuple(r["keys"][0])]
    p = parts(config)
    assert p[first["partition"]]["predicted_ber"] == min(q["predicted_ber"] for q in config["partitions"])
    assert all(t["predicted_ber"] <= t["tolerable_ber"] * (1 + 1e-9) for t in config["tensors"])
    assert config["source"]["network"]["name"] == "lenet" and len(config["source"]["model_sha256"]) == 64
    assert len(placements(config)) == 10
    # Latency mode with a tight capacity spreads tensors over banks.
    out2 = r["tmp"] / "lat.json"
    assert main([*base, "--mode", "latency", "--capacity-rows", "8", "-o", str(out2)]) == 0
    lat = load_config(out2)
    assert len({t["partition"] for t in lat["tensors"]}) > 1
    assert all(q["vdd_v"] == 1.35 for q in lat["partitions"])
    capsys.readouterr()


def test_cli_errors(real_inputs: dict, capsys: pytest.CaptureFixture) -> None:
    from boosting.map import main

    r = real_inputs
    base = ["--network", str(r["network"]), "-o", str(r["tmp"] / "x.json")]
    # Missing file.
    assert main(["--model", str(r["tmp"] / "nope.json"), "--tolerance", str(r["tolerance"]), *base]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "does not exist" in err
    # Chip partitions.
    doc = json.loads(r["model"].read_text())
    doc["partitions"] = {f"chip{i}": v for i, v in enumerate(doc["partitions"].values())}
    chips = r["tmp"] / "chips.json"
    chips.write_text(json.dumps(doc))
    assert main(["--model", str(chips), "--tolerance", str(r["tolerance"]), *base]) == 2
    assert "chip" in capsys.readouterr().err
    # Below the curves' floor: infeasible, naming the tensor.
    tight = r["tmp"] / "tight.json"
    tight.write_text(json.dumps({"fmt": "int8", "bers": [[layer, k, 1e-9] for layer, k in r["keys"]]}))
    assert main(["--model", str(r["model"]), "--tolerance", str(tight), *base]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: tensor ") and "cannot be placed" in err and err.count("\n") == 1
    # Wrong format of the tolerance.
    assert main(["--model", str(r["model"]), "--tolerance", str(r["model"]), *base]) == 2
    assert "eden-tolerance" in capsys.readouterr().err


def test_cli_vocabulary_defaults_and_config_file(real_inputs: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """New flags (--error-model, --network-file), default granularity coarse, --config TOML, hidden aliases."""
    from boosting.map import main, map_files

    r = real_inputs
    out = tmp_path / "coarse.json"
    assert main(["--error-model", str(r["model"]), "--tolerance", str(r["tolerance"]),
                 "--network-file", str(r["network"]), "-o", str(out), "-q"]) == 0
    coarse = load_config(out)
    assert coarse["granularity"] == "coarse" and len({p["vdd_v"] for p in coarse["partitions"]}) == 1
    assert coarse == json.loads(json.dumps(map_files(r["model"], r["tolerance"], r["network"])))  # the library call
    capsys.readouterr()
    toml = tmp_path / "map.toml"
    toml.write_text(f'error-model = "{r["model"]}"\ntolerance = "{r["tolerance"]}"\n'
                    f'network-file = "{r["network"]}"\ngranularity = "fine"\nout = "{tmp_path / "fine.json"}"\n')
    assert main(["--config", str(toml)]) == 0
    assert load_config(tmp_path / "fine.json")["granularity"] == "fine"
    assert main(["--config", str(toml), "--granularity", "coarse"]) == 0  # flags override the file
    assert load_config(tmp_path / "fine.json")["granularity"] == "coarse"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--error-model", "--network-file", "--tolerance", "--granularity", "-o PATH, --out", "-q, --quiet",
                 "-v, --verbose", "--config"):
        assert flag in help_text, flag
    assert "--model " not in help_text and "--network " not in help_text  # hidden aliases
    with pytest.raises(SystemExit) as exc:
        main(["--tolerance", str(r["tolerance"])])
    assert exc.value.code == 2
    assert "--error-model, --network-file" in capsys.readouterr().err


def test_format_table_and_print_alias(capsys: pytest.CaptureFixture) -> None:
    from boosting.map import _print_table, format_table

    config = map_network(toy_partitions(), TOL, SIZES, mode="power", granularity="fine", geometry=GEO)
    table = format_table(config)
    lines = table.splitlines()
    assert lines[0].startswith("power mode, fine mapping") and not table.endswith("\n")
    assert sum(line.startswith("bank") for line in lines) == 3 and lines[-1].startswith("savings")
    assert all(f"{layer}/{kind}" in table for layer, kind in SIZES)
    _print_table(config)
    assert capsys.readouterr().out == table + "\n"


def test_geometry_is_the_host_geometry_and_library_default_coarse() -> None:
    from softmc_host.geometry import ML605_GEOMETRY
    from softmc_host.geometry import Geometry as HostGeometry

    assert Geometry is HostGeometry and GEO.row_bytes == 1024
    config = map_network(toy_partitions(), TOL, SIZES, geometry=GEO)
    assert config["granularity"] == "coarse" and config["mode"] == "power"
    assert config["geometry"] == {"banks": 3, "rows": 16, "row_bytes": 1024}
    ps = [Partition("all", None, (0, ML605_GEOMETRY.rows - 1), toy_partitions()[0].curves)]
    assert map_network(ps, TOL, SIZES)["geometry"]["row_bytes"] == ML605_GEOMETRY.row_bytes
    with pytest.raises(MapError, match="geometry banks must be a positive integer"):
        map_network(toy_partitions(), TOL, SIZES, geometry=Geometry(banks=0))

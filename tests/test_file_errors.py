"""Malformed model, curve, tolerance, DRAM-configuration and network files: each gives the reader's
documented error with a one-line message naming the field, and the CLIs exit 2 with that line
(issue #12, item 6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_fuzz_json import CONFIG_DOC, CURVE_DOCS, MODEL_DOCS, MODEL_FILE_DOC, TOLERANCE_DOC, VDD_CURVE, _use_model_file
from test_fuzz_network_files import DOC as NET_DOC
from test_fuzz_network_files import VALID as NET_BYTES
from test_fuzz_network_files import _STATE

import boosting.characterize
import boosting.map
from boosting.checkpoint import CheckpointError, load_network
from boosting.map import MapError, load_config, load_model, load_tolerance, partitions_from_model, placements
from errormodels.curves import Curve
from errormodels.models import ModelError, get_model, model_from_dict

ROOT = Path(__file__).resolve().parent.parent
DEEP = "[" * 100_000 + "]" * 100_000


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message and len(message) < 400, message
    return message


def test_fuzz_bases_are_valid(tmp_path: Path) -> None:
    """The unmutated documents of the fuzz suite load, so the fuzz tests start from valid input."""
    for doc in MODEL_DOCS:
        model_from_dict(doc)
    for doc in CURVE_DOCS:
        Curve.from_dict(doc)
    (tmp_path / "m.json").write_text(json.dumps(MODEL_FILE_DOC))
    _use_model_file(tmp_path / "m.json")
    assert isinstance(load_tolerance(TOLERANCE_DOC)[0], dict)
    assert len(placements(CONFIG_DOC)) == 3
    (tmp_path / "n.pt").write_bytes(NET_BYTES)
    assert load_network(tmp_path / "n.pt").network == "lenet"


# ----------------------------------------------------------------------------- curves
@pytest.mark.parametrize("change, field", [
    ({"x": [1.0, 1.1]}, "flips has 4 values, x has 2"),
    ({"fit": [0.1, 0.01]}, "fit has 2 values"),
    ({"x": "1.0,1.1"}, "x must be a list"),
    ({"param": "inf"}, "curve param must be one of"),
    ({"param": None}, "curve param"),
    ({"fixed": [1.35]}, "fixed must be an object"),
    ({"fixed": {"inf": 1.0}}, "fixed has key 'inf'"),
    ({"fixed": {"trcd_ns": "13.75"}}, "fixed.trcd_ns must be null or a number"),
    ({"bits": [1e6, 1e6, True, 1e6]}, "bits[2] must be a finite number"),
    ({"bits": [1e6, 1e6, 10**400, 1e6]}, "bits[2] must be a finite number"),
    ({"fit": [float("nan"), 1e-3, 1e-6, 1e-9]}, "fit[0] must be a finite number"),
    ({"x": [1.0, 1.2, 1.1, 1.35]}, "x must be strictly increasing"),
    ({"x": [1.0, 1.1, 1.2, 1e300]}, "x must lie in"),
    ({"flips": [2e6, 0, 0, 0]}, "flips must be in [0, bits]"),
    ({"fit": [1e-9, 1e-6, 1e-3, 1e-2]}, "fit must be monotone"),
    ({"fit": [2.0, 1e-3, 1e-6, 1e-9]}, "fit must be in [0, 1]"),
    ({"ci95_lo": [0.5, 0.5, 0.5, 0.5], "ci95_hi": [0.1, 0.1, 0.1, 0.1]}, "ci95_lo must not exceed ci95_hi"),
    ({"x": []}, "x is empty"),
])
def test_curve_from_dict_validates_every_field(change: dict, field: str) -> None:
    doc = {**VDD_CURVE, **change}
    with pytest.raises(ModelError) as exc:
        Curve.from_dict(doc)
    assert field in one_line(exc)


def test_curve_from_dict_not_a_dict() -> None:
    with pytest.raises(ModelError, match="must be a JSON object"):
        Curve.from_dict([VDD_CURVE])


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("doc, field", [
    ({"model": "uniform", "ber": 10**400}, "ber must be in [0, 1], got an integer of about 401 digits"),
    (json.loads('{"model": "uniform", "ber": 1e400}'), "ber must be in [0, 1], got inf"),
    ({"model": "uniform", "ber": True}, "ber must be in"),
    ({"model": "uniform", "ber": "1e-3"}, "ber must be in"),
    ({"model": "uniform", "seed": True}, "seed must be an integer"),
    ({"model": "uniform", "seed": 1.0}, "seed must be an integer"),
    ({"model": "uniform", "seed": 10**400}, "seed must be an integer"),
    ({"model": "uniform", "seed": -1}, "seed must be an integer"),
    ({"model": "wordline", "group_bits": 64.0}, "group_bits must be a power of two"),
    ({"model": "wordline", "group_bits": 2**80}, "group_bits must be a power of two"),
    ({"model": "wordline", "ratio": float("inf")}, "ratio must be in"),
    ({"model": "bit-value", "zero_share": None}, "zero_share must be in"),
    ({"model": "uniform", "number": 2}, "number must be 0"),
    ({"model": "uniform", "number": False}, "number must be 0"),
    ({"model": "uniform", "weak_fraction": 0.1}, "unknown parameter 'weak_fraction'"),
    ({"model": "gauss"}, "unknown error model 'gauss'; known: 0 uniform, 1 wordline, 2 bitline, 3 bit-value"),
    ({"model": "²"}, "unknown error model '²'"),
    ({"model": "٣"}, "unknown error model '٣'"),
    ({"model": True}, "unknown error model True"),
    ({"number": 1.0}, "unknown error model 1.0"),
    ({"ber": 1e-3}, "neither 'model' nor 'number'"),
])
def test_model_from_dict_checks_every_number(doc: dict, field: str) -> None:
    with pytest.raises(ModelError) as exc:
        model_from_dict(doc)
    assert field in one_line(exc)


def test_model_names_ascii_digits_only() -> None:
    assert get_model("3").name == "bit-value" and get_model(" 1 ").name == "wordline" and get_model(2).name == "bitline"
    for name in ("²", "٣", "３", "𝟑", "0" * 5000 + "1"):
        with pytest.raises(ModelError, match="unknown error model"):
            get_model(name)
    with pytest.raises(ModelError, match="must be a JSON object"):
        model_from_dict(["uniform"])


# ----------------------------------------------------------------------------- model files (boosting.map)
def _model_file(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "model.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _part(**curves: Any) -> dict:
    return {"selected": MODEL_DOCS[0], "curves": curves}


@pytest.mark.parametrize("change, field", [
    ({"source": [1]}, "source must be an object"),
    ({"source": {"setting": [1.0]}}, "source.setting must be an object"),
    ({"source": {"setting": {"vdd_v": "1.2"}}}, "source.setting.vdd_v must be a number"),
    ({"source": {"setting": {"vdd_v": 1e300}}}, "source.setting.vdd_v must be a number"),
    ({"format_version": True}, "format_version True is not supported"),
    ({"partitions": {"bank٣": _part(vdd_v=VDD_CURVE)}}, "unknown partition label 'bank٣'"),
    ({"partitions": {"rows٣-9": _part(vdd_v=VDD_CURVE)}}, "unknown partition label"),
    ({"partitions": {"rows" + "1" * 5000 + "-9": _part(vdd_v=VDD_CURVE)}}, "outside the geometry"),
    ({"partitions": {"bank" + "9" * 5000: _part(vdd_v=VDD_CURVE)}}, "outside the geometry"),
    ({"partitions": {"bank0": [1]}}, "partition 'bank0' must be an object"),
    ({"partitions": {"bank0": {"curves": [1]}}}, "curves must be an object"),
    ({"partitions": {"bank0": _part(vdd_v={**VDD_CURVE, "param": "trcd_ns", "fixed": {}})}},
     "curves.vdd_v has param 'trcd_ns'"),
    ({"partitions": {"bank0": _part(vdd_v={**VDD_CURVE, "x": [1.0]})}}, "partition 'bank0': curves.vdd_v: curve vdd_v: flips"),
    ({"partitions": {"bank0": _part(vdd_v={**VDD_CURVE, "param": "inf"})}}, "curve param must be one of"),
    ({"partitions": {"bank0": _part(vdd_v=VDD_CURVE), "rows0-9": _part(vdd_v=VDD_CURVE)}},
     "mixes bank and row-group partitions"),
    ({"partitions": {"rows0-99": _part(vdd_v=VDD_CURVE), "rows50-199": _part(vdd_v=VDD_CURVE)}}, "overlap"),
])
def test_model_file_malformed(tmp_path: Path, change: dict, field: str) -> None:
    path = _model_file(tmp_path, {**MODEL_FILE_DOC, **change})
    with pytest.raises(MapError) as exc:
        doc = load_model(path)
        boosting.map.nominal_of(partitions_from_model(doc), doc.get("source", {}).get("setting"))
    assert field in one_line(exc)


@pytest.mark.parametrize("text, field", [
    (DEEP, "too deeply"),
    ('{"a": ' + "[" * 70 + "]" * 70 + "}", "nested deeper than 64 levels"),
    ('{"format": "eden-error-model", "format_version": ' + "1" * 5000 + "}", "not a readable JSON"),
    (b"\xff\xfe{}", "not a readable JSON"),
    ('{"format": "eden-error-model"', "not a readable JSON"),
])
def test_model_file_unparseable(tmp_path: Path, text: Any, field: str) -> None:
    path = tmp_path / "model.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(MapError) as exc:
        load_model(path)
    assert field in one_line(exc)


# ----------------------------------------------------------------------------- tolerance files
@pytest.mark.parametrize("text, field", [
    (DEEP, "too deeply"),
    ('{"ber": ' + "1" * 5000 + "}", "is not JSON"),
    ('{"ber": ' + "1" * 400 + "}", "ber: number out of range, got an integer of about 400 digits"),
    ('{"ber": 1e400}', "got inf"),
    ('{"ber": NaN}', "got nan"),
    ('{"ber": true}', "got True"),
    ('{"bers": [["conv1", "bias", 1e-4]]}', "bers[0][1]: invalid enum value 'bias'"),
    ('{"bers": [[7, "weight", 1e-4]]}', "bers[0][0]: expected str, got 7"),
    ('{"bers": [["a", "weight", 1e-4], ["a", "weight", 2e-4]]}', "'a'/weight is given twice"),
    ('{"bers": [["a", "weight"]]}', "bers[0]: expected array of length 3, got 2"),
    ('{"bers": []}', "'bers' is empty"),
    ('{"bers": {"a": 1}}', "bers: expected array, got {'a': 1}"),
    ('{"ber": 1e-4, "fmt": 8}', "fmt: expected str | null, got 8"),
    ('{"format": "eden-tolerance", "format_version": 1, "coarse": {"ber": 1e-4, "found": "yes"}}',
     "coarse.found: expected bool, got 'yes'"),
    ('{"format": "eden-tolerance", "format_version": 1, "coarse": {"ber": [], "found": true}}',
     "coarse.ber: expected float, got []"),
    ('{"format": "eden-tolerance", "format_version": 1, "fine": [1], "coarse": {"ber": 1e-4}}', "fine: expected object | null, got [1]"),
    ('{"format": "eden-tolerance", "format_version": 1, "fine": {"bers": "x"}, "coarse": {"ber": 1e-4}}',
     "fine.bers: expected array, got 'x'"),
    ('{"format": "eden-tolerance", "format_version": true, "coarse": {"ber": 1e-4}}', "format_version True"),
])
def test_tolerance_file_malformed(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "tolerance.json"
    path.write_text(text)
    with pytest.raises(MapError) as exc:
        load_tolerance(path)
    assert field in one_line(exc)


# ----------------------------------------------------------------------------- DRAM configurations
def _config(**change: Any) -> dict:
    doc = json.loads(json.dumps(CONFIG_DOC))
    for dotted, value in change.items():
        *path, last = dotted.split("__")
        target = doc
        for key in path:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is KeyError:
            del target[last]
        else:
            target[int(last) if isinstance(target, list) else last] = value
    return doc


@pytest.mark.parametrize("change, field", [
    ({"partitions__0__label": ["bank0"]}, "partitions[0].label: expected str, got ['bank0']"),
    ({"tensors__0__partition": ["bank0"]}, "tensors[0].partition: expected str, got ['bank0']"),
    ({"tensors__0__partition": "bank9"}, "is in unknown partition 'bank9'"),
    ({"geometry__rows": 2**21}, "geometry: location ids need"),
    ({"geometry__banks": 10**400}, "geometry: location ids need"),
    ({"geometry__rows": True}, "geometry.rows: expected int, got True"),
    ({"geometry__rows": 0}, "geometry.rows: expected int >= 1, got 0"),
    ({"partitions__0__vdd_v": "1.2"}, "partitions[0].vdd_v: expected float, got '1.2'"),
    ({"partitions__0__vdd_v": 11.0}, "partitions[0].vdd_v: expected float <= 10.0, got 11.0"),
    ({"partitions__0__trcd_ns": float("nan")}, "partitions[0].trcd_ns: expected float >= 0.0, got nan"),
    ({"partitions__0__bank": 2}, "bank must be 0, got 2"),
    ({"partitions__0__rows": [0, 10**400]}, "rows must be [0, 63]"),
    ({"partitions__0__used_bytes": -1}, "partitions[0].used_bytes: expected int >= 0, got -1"),
    ({"partitions__0__predicted_ber": 1e400}, "partitions[0].predicted_ber: expected float <="),
    ({"nominal": KeyError}, "object missing required field nominal"),
    ({"nominal": [1.35]}, "nominal: expected object, got [1.35]"),
    ({"nominal__vdd_v": None}, "nominal.vdd_v: expected float, got None"),
    ({"savings__vdd_reduction_v": "0.1"}, "savings.vdd_reduction_v"),
    ({"capacity_rows": 0}, "capacity_rows: expected int >= 1, got 0"),
    ({"tensors__0__kind": "bias"}, "tensors[0].kind: invalid enum value 'bias'"),
    ({"tensors__1__layer": "conv1", "tensors__1__kind": "weight"}, "tensor conv1/weight is given twice"),
    ({"tensors__0__tolerable_ber": 2.0}, "tensors[0].tolerable_ber: expected float <= 1.0, got 2.0"),
    ({"tensors__0__n_bytes": 10**12}, "do not fit the DIMM"),
    ({"tensors__1__n_bytes": 260_000}, "beyond the DIMM"),
    ({"tensors__0__n_bytes": 200_000}, "n_rows must be 196 for 200000 bytes, got 2"),
    ({"tensors__0__n_bytes": 200_000, "tensors__0__n_rows": 196}, "leave its partition bank0"),
    ({"tensors__1__bank": 0, "tensors__1__row": 1, "tensors__1__partition": "bank0"}, "overlap"),
    ({"tensors__0__offset_bytes": 10**4000}, "do not fit the DIMM"),
    ({"tensors__0__n_rows": 0}, "tensors[0].n_rows: expected int >= 1, got 0"),
    ({"tensors__0__margin": "big"}, "tensors[0].margin: expected float | null, got 'big'"),
    ({"tensors__0__extra": 1}, "tensors[0]: object contains unknown field extra"),
    ({"tensors__0__row": 10**400}, "has an address outside the geometry"),
    ({"format_version": True}, "format_version True is not supported"),
])
def test_config_malformed(tmp_path: Path, change: dict, field: str) -> None:
    doc = _config(**change)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(doc))
    for read in (lambda: placements(load_config(path)), lambda: placements(doc)):
        with pytest.raises(MapError) as exc:
            read()
        assert field in one_line(exc)


def test_config_tensor_outside_its_partition() -> None:
    doc = _config()
    t = doc["tensors"][0]
    other = next(p for p in doc["partitions"] if p["label"] != t["partition"])
    t["bank"] = other["bank"]
    with pytest.raises(MapError) as exc:
        placements(doc)
    assert "is outside its partition" in one_line(exc)


@pytest.mark.parametrize("text, field", [(DEEP, "too deeply"),
                                         ('{"geometry": {"rows": ' + "9" * 4400 + "}}", "is not JSON")])
def test_config_file_unparseable(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(text)
    with pytest.raises(MapError) as exc:
        load_config(path)
    assert field in one_line(exc)


# ----------------------------------------------------------------------------- network files
def _net_file(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "net.pt"
    torch.save(doc, path)
    return path


@pytest.mark.parametrize("key", ["dataset", "meta", "build", "seed", "network", "state_dict"])
def test_network_file_missing_key(tmp_path: Path, key: str) -> None:
    doc = {**NET_DOC, "state_dict": _STATE}
    del doc[key]
    with pytest.raises(CheckpointError) as exc:
        load_network(_net_file(tmp_path, doc))
    assert f"lacks {key!r}" in one_line(exc)


@pytest.mark.parametrize("change, field", [
    ({"meta": ["kind", "clean"]}, "meta must be a JSON-ready dict"),
    ({"meta": {"kind": "clean", "x": torch.zeros(2)}}, "meta must be a JSON-ready dict"),
    ({"meta": {"kind": 3}}, "meta.kind must be a string"),
    ({"dataset": "digits"}, "dataset must be a dict"),
    ({"dataset": {"name": 5}}, "dataset.name"),
    ({"dataset": {"name": "digits", "normalize": "no"}}, "dataset.normalize must be a bool"),
    ({"dataset": {"name": "digits", "split_seed": -1}}, "dataset.split_seed"),
    ({"dataset": {"name": "digits", "image_size": 32}}, "differs from dataset.image_size"),
    ({"seed": "0"}, "seed must be an integer"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"seed": 10**400}, "seed must be an integer in [0, 2**64 - 1], got an integer"),
    ({"network": ["lenet"]}, "network must be a registry name"),
    ({"network": "gpt"}, "network does not rebuild (NetworkError: unknown network 'gpt'"),
    ({"build": {"num_classes": 10.0, "image_size": 28}}, "build.num_classes must be an integer"),
    ({"build": {"num_classes": 10**12, "image_size": 28}}, "needs torch.float32 (1000000000000, 84)"),
    ({"build": {"image_size": 10**6}}, "build.image_size must be an integer in [1, 1024]"),
    ({"build": {"image_size": 28, "width": [1]}}, "build.width must be a number"),
    ({"format_version": True}, "format_version True is not supported"),
    ({"state_dict": [1, 2]}, "state_dict must map parameter names to tensors"),
])
def test_network_file_wrong_types(tmp_path: Path, change: dict, field: str) -> None:
    doc = {**NET_DOC, "state_dict": _STATE, **change}
    with pytest.raises(CheckpointError) as exc:
        load_network(_net_file(tmp_path, doc))
    assert field in one_line(exc)


def test_network_file_state_shapes_and_dtypes(tmp_path: Path) -> None:
    key = next(iter(_STATE))
    for value, field in ((_STATE[key].double(), "torch.float64"), (_STATE[key][:1], "needs torch.float32"),
                         (None, f"lacks {key!r}")):
        state = dict(_STATE)
        if value is None:
            del state[key]
        else:
            state[key] = value
        with pytest.raises(CheckpointError) as exc:
            load_network(_net_file(tmp_path, {**NET_DOC, "state_dict": state}))
        assert field in one_line(exc)


def test_network_file_damaged_bytes(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    data = bytearray(NET_BYTES)
    data[len(data) // 2] ^= 0x10  # inside a weight tensor: torch.load alone accepts it
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as exc:
        load_network(path)
    assert "CRC mismatch" in one_line(exc)
    path.write_bytes(NET_BYTES[: len(NET_BYTES) // 3])
    with pytest.raises(CheckpointError) as exc:
        load_network(path)
    assert "not a readable network file" in one_line(exc)
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError):
        load_network(path)


# ----------------------------------------------------------------------------- CLIs
def _stderr_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_map_cli_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good_model = _model_file(tmp_path, MODEL_FILE_DOC)
    tol = tmp_path / "tol.json"
    tol.write_text(json.dumps(TOLERANCE_DOC))
    net = tmp_path / "net.pt"
    net.write_bytes(NET_BYTES)
    bad_model = tmp_path / "bad-model.json"
    bad_model.write_text(json.dumps({**MODEL_FILE_DOC, "source": {"setting": [1]}}))
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    broken_net = tmp_path / "broken.pt"
    broken_net.write_bytes(NET_BYTES[:-100])
    out = str(tmp_path / "cfg.json")
    cases = [([bad_model, tol, net], "source.setting must be an object"),
             ([good_model, deep, net], "too deeply"),
             ([good_model, tol, broken_net], "not a readable network file")]
    for (model, tolerance, network), message in cases:
        rc = boosting.map.main(["--model", str(model), "--tolerance", str(tolerance), "--network", str(network),
                                "-o", out])
        assert rc == 2 and message in _stderr_line(capsys)


def test_characterize_cli_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = {**NET_DOC, "state_dict": _STATE}
    del doc["dataset"]
    path = _net_file(tmp_path, doc)
    rc = boosting.characterize.main([str(path), "--workers", "0", "--quiet", "--no-plot",
                                     "-o", str(tmp_path / "tol.json")])
    assert rc == 2 and "lacks 'dataset'" in _stderr_line(capsys)


def test_map_cli_subprocess(tmp_path: Path) -> None:
    """The real ``python -m boosting.map`` entry point: one line on stderr, exit 2."""
    model = _model_file(tmp_path, {**MODEL_FILE_DOC, "partitions": {"bank٣": _part(vdd_v=VDD_CURVE)}})
    tol = tmp_path / "tol.json"
    tol.write_text(json.dumps(TOLERANCE_DOC))
    proc = subprocess.run([sys.executable, "-m", "boosting.map", "--model", str(model), "--tolerance", str(tol),
                           "--network", str(tmp_path / "none.pt"), "-o", str(tmp_path / "c.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err and "unknown partition label 'bank٣'" in err, err


@pytest.mark.parametrize("name", ["x" * 5000, "bad\x00name.json"])
def test_unopenable_names(name: str) -> None:
    for read, error in ((load_tolerance, MapError), (load_config, MapError), (load_model, MapError),
                        (load_network, CheckpointError)):
        with pytest.raises(error) as exc:
            read(name)
        one_line(exc)

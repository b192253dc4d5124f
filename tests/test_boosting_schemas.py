"""The msgspec schemas of boosting's documents: the tolerance (``boosting.tolerance``) and the DRAM
configuration (``boosting.map.config``). A valid document passes; a wrong type, a missing field or
an out-of-range value gives one line naming the file and the field; ``json_schema()`` is a JSON
Schema whose references resolve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_fuzz_json import CONFIG_DOC, TOLERANCE_DOC

import boosting.map
import boosting.tolerance
from boosting.map import DramConfig, MapError, load_config, placements, read_config, save_config
from boosting.tolerance import (
    Tolerance,
    ToleranceBer,
    ToleranceBers,
    ToleranceError,
    load_tolerance,
    read_tolerance,
)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message and len(message) < 400, message
    return message


def copy(doc: Any) -> Any:
    return json.loads(json.dumps(doc))


# ----------------------------------------------------------------------------- tolerance
def test_tolerance_valid_documents_pass(tmp_path: Path) -> None:
    tol = read_tolerance(TOLERANCE_DOC)
    assert isinstance(tol, Tolerance) and tol.fmt == "int8" and tol.coarse is not None and tol.coarse.ber == 1e-4
    assert tol.fine is not None and tol.fine.bers[0] == ("conv1", "weight", 2e-4)
    path = tmp_path / "tolerance.json"
    path.write_text(json.dumps({**TOLERANCE_DOC, "chosen": {"network": "boosted"}}))  # open: extra keys are kept out
    assert read_tolerance(path) == tol
    assert isinstance(read_tolerance({"bers": [["a", "ifm", 0.5]]}), ToleranceBers)
    assert isinstance(read_tolerance({"ber": 1.0, "fmt": None}), ToleranceBer)
    assert load_tolerance(path) == ({("conv1", "weight"): 2e-4, ("conv1", "ifm"): 1e-3, ("fc", "weight"): 5e-4}, "int8")


@pytest.mark.parametrize("change, field", [
    ({"fmt": 8}, "fmt: expected str | null, got 8"),  # wrong type
    ({"seeds": [0, "1"]}, "seeds[1]: expected int, got '1'"),
    ({"coarse": {"found": True}}, "coarse: object missing required field ber"),  # missing field
    ({"coarse": {"ber": 1.5}}, "coarse.ber: expected float <= 1.0, got 1.5"),  # out of range
    ({"fine": {"bers": [["conv1", "weight", 0.0]]}}, "fine.bers[0][2]: expected float > 0.0, got 0.0"),
    ({"fine": {"bers": [["", "weight", 0.1]]}}, "fine.bers[0][0]: expected str of length >= 1, got ''"),
    ({"fine": {"bers": [["a", "bias", 0.1]]}}, "fine.bers[0][1]: invalid enum value 'bias'"),
    ({"fine": {"bers": [["a", "ifm", 0.1], ["a", "ifm", 0.2]]}}, "fine: bers[1]: 'a'/ifm is given twice"),
    ({"format_version": 2}, "format_version 2 is not supported (1)"),
    ({"format": "eden-dram-config"}, "a 'eden-dram-config' document, not eden-tolerance"),
])
def test_tolerance_errors_name_file_and_field(tmp_path: Path, change: dict, field: str) -> None:
    path = tmp_path / "tol.json"
    path.write_text(json.dumps({**TOLERANCE_DOC, **change}))
    with pytest.raises(ToleranceError) as exc:
        read_tolerance(path)
    assert one_line(exc) == f"{path}: {field}"
    with pytest.raises(ToleranceError) as exc:  # a document in memory is named as such
        read_tolerance({**TOLERANCE_DOC, **change})
    assert one_line(exc) == f"tolerance document: {field}"
    with pytest.raises(MapError, match="tolerance document: "):  # what the mapping raises
        boosting.map.load_tolerance({**TOLERANCE_DOC, **change})


def test_tolerance_kinds_are_the_inference_kinds() -> None:
    from boosting.inference import KINDS

    assert boosting.tolerance.KINDS == KINDS == boosting.map.KINDS


# ----------------------------------------------------------------------------- DRAM configuration
def test_config_valid_document_passes(tmp_path: Path) -> None:
    config = read_config(CONFIG_DOC)
    assert isinstance(config, DramConfig) and config.mode == "power" and config.geometry.banks == 4
    assert [t.layer for t in config.tensors] == [t["layer"] for t in CONFIG_DOC["tensors"]]
    assert placements(config) == placements(CONFIG_DOC)  # a validated struct is taken as it is
    path = save_config(CONFIG_DOC, tmp_path / "cfg.json")
    assert path.read_text().endswith("\n") and not list(tmp_path.glob("*.tmp"))  # written atomically
    assert load_config(path) == copy(CONFIG_DOC)


def _changed(dotted: str, value: Any) -> dict:
    doc = copy(CONFIG_DOC)
    *path, last = dotted.split(".")
    target = doc
    for key in path:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is KeyError:
        del target[last]
    else:
        target[int(last) if isinstance(target, list) else last] = value
    return doc


@pytest.mark.parametrize("dotted, value, field", [
    ("mode", "speed", "mode: invalid enum value 'speed'"),  # wrong value
    ("geometry.banks", 4.0, "geometry.banks: expected int, got 4.0"),  # wrong type
    ("partitions.0.capacity_bytes", True, "partitions[0].capacity_bytes: expected int, got True"),
    ("tensors.1.layer", KeyError, "tensors[1]: object missing required field layer"),  # missing field
    ("savings", KeyError, "object missing required field savings"),
    ("nominal.trcd_ns", 2e4, "nominal.trcd_ns: expected float <= 10000.0, got 20000.0"),  # out of range
    ("tensors.0.offset_bytes", -8, "tensors[0].offset_bytes: expected int >= 0, got -8"),
    ("savings.vdd_reduction_v", float("inf"), "savings.vdd_reduction_v: expected float <= 10000.0, got inf"),
    ("geometry.columns", 1024, "geometry: object contains unknown field columns"),  # closed format
    ("extra", 1, "object contains unknown field extra"),
])
def test_config_errors_name_file_and_field(tmp_path: Path, dotted: str, value: Any, field: str) -> None:
    doc = _changed(dotted, value)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(MapError) as exc:
        load_config(path)
    assert one_line(exc) == f"{path}: {field}"
    with pytest.raises(MapError) as exc:
        placements(doc)
    assert one_line(exc) == f"configuration: {field}"
    with pytest.raises(MapError):  # save_config refuses to write it
        save_config(doc, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


# ----------------------------------------------------------------------------- JSON Schemas
def _check_schema(schema: dict, root: str, required: set[str]) -> dict:
    assert json.loads(json.dumps(schema)) == json.loads(json.dumps(schema, default=list))  # JSON-ready
    defs = schema["$defs"]
    assert schema["$ref"] == f"#/$defs/{root}"
    text = json.dumps(schema, default=list)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/$defs/')[1:]}:
        assert ref in defs, ref  # every reference resolves
    for name, d in defs.items():
        assert d["type"] == "object" and isinstance(d["properties"], dict), name
    top = defs[root]
    assert required <= set(top["required"]) and required <= set(top["properties"])
    return defs


def test_tolerance_json_schema() -> None:
    defs = _check_schema(boosting.tolerance.json_schema(), "Tolerance", {"format", "format_version"})
    top = defs["Tolerance"]["properties"]
    assert top["format"] == {"enum": ["eden-tolerance"]}
    assert defs["CoarseTolerance"]["required"] == ["ber"]
    row = defs["FineTolerance"]["properties"]["bers"]["items"]["prefixItems"]
    assert sorted(row[1]["enum"]) == ["ifm", "weight"] and row[2]["exclusiveMinimum"] == 0 and row[2]["maximum"] == 1


def test_config_json_schema() -> None:
    defs = _check_schema(boosting.map.json_schema(), "DramConfig",
                         {"format", "format_version", "mode", "granularity", "nominal", "geometry", "partitions",
                          "tensors", "savings"})
    assert defs["DramConfig"]["additionalProperties"] is False
    assert defs["TensorEntry"]["properties"]["tolerable_ber"]["maximum"] == 1
    assert "n_rows" not in defs["TensorEntry"]["required"]
    assert defs["Nominal"]["properties"]["vdd_v"]["maximum"] == 10.0


def test_schemas_accept_valid_documents_per_jsonschema() -> None:
    """Where the jsonschema package is installed: the valid documents validate, a broken one does not."""
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(copy(TOLERANCE_DOC), boosting.tolerance.json_schema())
    jsonschema.validate(copy(CONFIG_DOC), json.loads(json.dumps(boosting.map.json_schema(), default=list)))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_changed("mode", "speed"), json.loads(json.dumps(boosting.map.json_schema(), default=list)))

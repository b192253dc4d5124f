"""The published JSON Schemas (docs/schemas/) are the ones the readers validate with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import schemas  # noqa: E402


def test_published_schemas_are_current() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "schemas.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", sorted(schemas.SCHEMAS))
def test_each_schema_is_an_object_schema_with_resolvable_refs(name: str) -> None:
    doc = json.loads((ROOT / "docs" / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8"))
    assert doc["title"] == name
    defs = doc.get("$defs", {})
    text = json.dumps(doc)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        assert ref.startswith("#/$defs/"), ref
        assert ref.split("/")[-1] in defs, f"{name}: unresolved {ref}"


def test_a_stale_schema_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schemas, "OUT", tmp_path)
    monkeypatch.setattr(schemas, "ROOT", tmp_path.parent)
    assert schemas.main(["--check"]) == 1
    assert schemas.main([]) == 0
    assert schemas.main(["--check"]) == 0
    (tmp_path / "tolerance.schema.json").write_text("{}", encoding="utf-8")
    assert schemas.main(["--check"]) == 1

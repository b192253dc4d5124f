"""tools/fuzz.py, the long fuzz driver: finds the fuzz tests, counts inputs, catches and saves failures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("eden_fuzz_tool", ROOT / "tools" / "fuzz.py")
fuzz_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_tool)


def test_driver_finds_every_fuzz_test_and_runs_them(tmp_path: Path, capsys) -> None:
    names = [name for name, _ in fuzz_tool.fuzz_targets()]
    assert len(names) >= 30 and all(n.split(".")[0].startswith("test_fuzz_") for n in names)
    assert fuzz_tool.main(["--inputs", "30", "-k", "test_fuzz_urls", "--failures-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "test_fuzz_urls.test_fuzz_emu_url_parser: 30 inputs, 0 failures" in out
    assert not list(tmp_path.iterdir())


@fuzz_settings(5)
@given(st.binary())
def _fails_on_long_inputs(data: bytes) -> None:
    assert len(data) < 40


def test_driver_reports_and_saves_failing_inputs(tmp_path: Path) -> None:
    result = fuzz_tool.run_target("t", _fails_on_long_inputs.hypothesis.fuzz_one_input, 300, 0, 8192, 60, tmp_path)
    assert result["inputs"] == 300 and result["failures"] > 0
    assert all(kind.startswith("AssertionError") for kind in result["kinds"])
    saved = sorted(tmp_path.iterdir())
    assert saved
    with pytest.raises(AssertionError):  # a saved input fails again
        _fails_on_long_inputs.hypothesis.fuzz_one_input(saved[0].read_bytes())

"""The layering and lint rules, run as tests so that the README's test command (and CI) enforce them.

* import-linter's contracts in setup.cfg: the layers run one way (firmware_bridge up to pipeline),
  the emulated bench (``emubench``) is imported by no layer, and no package has an import cycle
  between its modules. An upward import fails the build here.
* ruff, with the rule set in pyproject.toml.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install the test extras (pip install -e '.[test]')")
    return path


def test_import_contracts_hold() -> None:
    proc = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"import-linter found broken contracts:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"
    # every contract of setup.cfg was checked (a contract that silently vanished would pass)
    for name in ("layers run one way", "emulated bench is a plug-in", "No import cycles"):
        assert name in proc.stdout, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout, proc.stdout[-3000:]


def test_an_upward_import_breaks_the_layers_contract(tmp_path: Path) -> None:
    """The contracts can fail: a copy of the tree with one upward import is refused."""
    copy = tmp_path / "tree"
    ignore = shutil.ignore_patterns(".venv", "__pycache__", "*.so", "out", "*.egg-info", ".git", "fuzz-failures")
    shutil.copytree(ROOT, copy, ignore=ignore)
    timing = copy / "softmc_host" / "timing.py"
    timing.write_text(timing.read_text() + "\nimport boosting.quant  # an upward import\n")
    proc = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=copy, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(copy), "PATH": str(BIN)})
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "softmc_host.timing -> boosting.quant" in proc.stdout, proc.stdout[-3000:]


def test_ruff_finds_nothing() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"ruff:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"

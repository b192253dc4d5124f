"""The project runs on the oldest Python it promises (``python_requires`` in setup.cfg: 3.10).

Python 3.10 is not needed to check this: ``vermin`` reads every source file and names the
minimum Python each construct needs (modules, members, syntax, annotations), honouring
``sys.version_info`` guards such as the ``tomllib``/``tomli`` fallback. What vermin cannot
see (a method of a value whose type it does not know, such as ``exc.add_note``) is checked
by an AST scan, and the pinned installs of ``constraints.txt`` by their own metadata.
"""

from __future__ import annotations

import ast
import configparser
import re
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The oldest Python the project promises.
TARGET = (3, 10)
#: Everything that runs on the user's Python: the packages, the tests, tools and benchmarks.
SOURCES = ["softmc_host", "firmware_bridge", "profiler", "errormodels", "boosting", "pipeline",
           "tests", "tools", "benchmarks", "setup.py"]
#: Methods of 3.11+ types that vermin cannot attribute (it does not know the receiver's type),
#: with the one file allowed to call each (behind a feature check).
NEWER_METHODS = {"add_note": ("BaseException.add_note (Python 3.11)", {"softmc_host/_compat.py"})}


def python_files() -> list[Path]:
    files: list[Path] = []
    for name in SOURCES:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in sorted(path.rglob("*.py")) if "__pycache__" not in p.parts)
    return files


def test_the_promise_is_3_10() -> None:
    """The target above is what setup.cfg promises (change both together)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["options"]["python_requires"].strip() == ">=3.10"


def _vermin_config():
    vermin = pytest.importorskip("vermin")
    config = vermin.Config()
    config.set_eval_annotations(True)  # typing.get_type_hints and dataclasses may evaluate them
    config.set_verbose(2)  # so that output_text() names each construct and its version
    return vermin, config


def too_new_for_target(source: str, name: str) -> str | None:
    """Why ``source`` needs a Python newer than :data:`TARGET` (vermin's findings), or None."""
    vermin, config = _vermin_config()
    visitor = vermin.visit(source, config, name)
    if not isinstance(visitor, vermin.SourceVisitor):
        return "vermin cannot parse it"
    py3 = visitor.minimum_versions()[1]
    if py3 is not None and tuple(py3) <= TARGET:
        return None
    reasons = [
        line.strip() for line in visitor.output_text().splitlines()
        if any(int(minor) > TARGET[1] for minor in re.findall(r"\b3\.(\d+)", line))
    ]
    return f"needs Python {py3}: {'; '.join(reasons) or 'not Python 3'}"


def newer_method_calls(source: str, name: str) -> list[str]:
    """Calls of :data:`NEWER_METHODS` in ``source`` outside the files allowed to make them."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in NEWER_METHODS
                and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "_compat")):  # the helper
            what, allowed = NEWER_METHODS[node.func.attr]
            if name not in allowed:
                found.append(f"{name}:{node.lineno}: calls {what}; use softmc_host._compat.add_note instead")
    return found


def test_the_checks_see_3_11_code() -> None:
    """The two scans below can fail: they flag 3.11-only code, and pass the guarded fallback."""
    assert "tomllib" in too_new_for_target("import tomllib\n", "new.py")
    assert "3.11" in too_new_for_target("from typing import Self\n", "new.py")
    assert "3.11" in too_new_for_target("try:\n    pass\nexcept* OSError:\n    pass\n", "new.py")
    guarded = "import sys\nif sys.version_info >= (3, 11):\n    import tomllib\nelse:\n    import tomli as tomllib\n"
    assert too_new_for_target(guarded, "old.py") is None
    assert newer_method_calls("def f(exc):\n    exc.add_note('x')\n", "pkg/mod.py")
    assert not newer_method_calls("def f(exc):\n    exc.add_note('x')\n", "softmc_host/_compat.py")


def test_no_source_file_needs_a_python_newer_than_3_10() -> None:
    _vermin_config()
    files = python_files()
    assert len(files) > 50  # the packages were found
    failures = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        why = too_new_for_target(path.read_text(encoding="utf-8"), rel)
        if why is not None:
            failures.append(f"{rel}: {why}")
    assert not failures, "\n".join(failures)


def test_no_call_of_a_3_11_method_vermin_cannot_see() -> None:
    failures = []
    for path in python_files():
        rel = path.relative_to(ROOT).as_posix()
        failures.extend(newer_method_calls(path.read_text(encoding="utf-8"), rel))
    assert not failures, "\n".join(failures)


def _pins() -> list[tuple[str, str, str]]:
    """(name, version, marker) of every ``name==version`` line of constraints.txt."""
    pins = []
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        requirement, _, marker = line.split("#", 1)[0].partition(";")
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)\s*", requirement)
        if match:
            pins.append((match.group(1), match.group(2), marker.strip()))
    return pins


def test_pinned_installs_support_python_3_10() -> None:
    """Every pin that applies on Python 3.10 must be a release that installs there.

    Checked from the installed distributions' ``Requires-Python`` (no network): a pin whose
    installed version differs from the pin is skipped, as its metadata is not at hand.
    """
    pytest.importorskip("packaging")
    from packaging.markers import Marker
    from packaging.specifiers import SpecifierSet

    env = {"python_version": "3.10", "python_full_version": "3.10.0"}
    failures, checked = [], 0
    for name, version, marker in _pins():
        if marker and not Marker(marker).evaluate(env):
            continue  # this pin does not apply to Python 3.10
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version.split("+")[0] != version.split("+")[0]:
            continue
        checked += 1
        requires = dist.metadata.get("Requires-Python")
        if requires and not SpecifierSet(requires).contains("3.10.0", prereleases=True):
            failures.append(f"{name}=={version} requires Python {requires}")
    assert checked, "no pinned distribution is installed"
    assert not failures, ("constraints.txt pins releases that Python 3.10 cannot install "
                          "(setup.cfg promises >=3.10): " + "; ".join(failures))

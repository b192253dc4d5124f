"""No module of the toolkit uses another top-level package's private (``_name``) names.

A static scan (AST) of every module of the packages: ``from X import _name`` where X lies in
another package, and ``m._name`` where ``m`` is bound to a module of another package (``import
a.b``, ``import a.b as m``, ``from a import b``). A private *module* reached for its public names
(``from softmc_host._compat import add_note``, which the compatibility helpers are for) is not a
private name; importing the private module itself (``from softmc_host import _compat``) is.
Dunder names (``__version__``) are public.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("firmware_bridge", "softmc_host", "profiler", "errormodels", "boosting", "pipeline", "emubench")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package of the repository (a file, not an attribute)."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> Optional[str]:
    """The absolute module an ``ImportFrom`` imports from (relative imports resolved)."""
    if node.level == 0:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    if not base:
        return None
    return ".".join(base + ([node.module] if node.module else []))


def _top(dotted: str) -> str:
    return dotted.split(".")[0]


def offences(path: Path, source: Optional[str] = None) -> Iterator[str]:
    """``file:line: what`` for each use of another package's private name in one module
    (``source``: its text, default read from ``path``)."""
    module = _module_name(path)
    own = _top(module)
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text, filename=str(path))
    rel = path.relative_to(ROOT)
    bound: dict[str, str] = {}  # local name -> module of another repository package
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _top(alias.name) in PACKAGES and _top(alias.name) != own:
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound[_top(alias.name)] = _top(alias.name)
                    last = alias.name.split(".")[-1]
                    if _private(last) and alias.asname:
                        yield f"{rel}:{node.lineno}: import {alias.name} as {alias.asname}"
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node, module, path.name == "__init__.py")
            if source is None or _top(source) not in PACKAGES or _top(source) == own:
                continue
            for alias in node.names:
                if _private(alias.name):
                    yield f"{rel}:{node.lineno}: from {source} import {alias.name}"
                elif _is_module(f"{source}.{alias.name}"):
                    bound[alias.asname or alias.name] = f"{source}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain = [node.attr]
        base = node.value
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if not isinstance(base, ast.Name) or base.id not in bound:
            continue
        chain.reverse()  # base.chain[0].chain[1]...
        dotted = bound[base.id]
        for i, attr in enumerate(chain):
            if _private(attr):
                yield f"{rel}:{node.lineno}: {base.id}.{'.'.join(chain[: i + 1])}"
                break
            if not _is_module(f"{dotted}.{attr}"):
                break  # an attribute of a module: what follows is that object's business
            dotted = f"{dotted}.{attr}"


def _all_offences() -> list[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found.update(offences(path))
    return sorted(found)


def test_no_module_imports_another_packages_private_names() -> None:
    bad = _all_offences()
    assert not bad, f"{len(bad)} use(s) of another package's private names: {'; '.join(bad)}"


@pytest.mark.parametrize("source, expected", [
    ("from boosting.map import _print_table\n", "from boosting.map import _print_table"),
    ("import errormodels.fit\nerrormodels.fit._print_report(1)\n", "errormodels.fit._print_report"),
    ("import errormodels.fit as f\nf._print_report(1)\n", "f._print_report"),
    ("from boosting import characterize\ncharacterize._interval(1)\n", "characterize._interval"),
    ("from softmc_host import _compat\n", "from softmc_host import _compat"),
])
def test_the_scan_finds_each_kind_of_use(source: str, expected: str) -> None:
    found = list(offences(ROOT / "pipeline" / "probe.py", source))
    assert len(found) == 1 and found[0].endswith(expected), found


@pytest.mark.parametrize("source", [
    "from softmc_host._compat import add_note\n",          # a private module's public helper
    "from pipeline import _x\n",                            # its own package
    "import boosting.map\nboosting.map.__doc__\n",          # dunder
    "from boosting.map import format_table\nformat_table._cache\n",  # an object's attribute, not a module's
    "import argparse\nargparse._StoreTrueAction\n",         # not a repository package
])
def test_the_scan_allows(source: str) -> None:
    assert list(offences(ROOT / "pipeline" / "probe.py", source)) == []

"""The emulated bench as a plug-in (issue #13, item 1): scheme registries, entry points, the old alias."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import emubench
from emubench import EmulatorProcess, spawn
from firmware_bridge.link import LinkError
from softmc_host import schemes  # (tester_* by attribute: pytest would collect them as tests)
from softmc_host.bench import Bench, BenchError, load_bench_file
from softmc_host.schemes import (
    BENCH_GROUP,
    TESTER_GROUP,
    SchemeError,
    bench_opener,
    bench_schemes,
    register_bench_scheme,
    register_tester_scheme,
    unregister_bench_scheme,
    unregister_tester_scheme,
)
from softmc_host.session import TesterSession

ROOT = Path(__file__).resolve().parents[1]
LOWER_PACKAGES = ("firmware_bridge", "softmc_host", "profiler", "errormodels", "boosting", "pipeline")


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with spawn("emu://B?seed=5") as emu:
        yield emu


class Endpoint:
    """A tester endpoint that records its closing (what a tester-scheme opener returns)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.closed = 0
        self.supply_resource: str | None = None
        self.thermal_resource: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"profile": "fake", "url": self.url}

    def close(self) -> None:
        self.closed += 1


# --------------------------------------------------------------------------- the registries


def test_unknown_schemes_are_one_line_errors_naming_the_known_ones() -> None:
    with pytest.raises(SchemeError) as info:
        schemes.tester_opener("nosuch")
    message = str(info.value)
    assert message.startswith("unknown tester scheme 'nosuch' (known: ") and "emu" in message and "replay" in message
    with pytest.raises(SchemeError, match=r"unknown bench scheme 'nosuch' \(known: .*emu.*replay"):
        bench_opener("nosuch")
    with pytest.raises(LinkError) as info:
        TesterSession.open("nosuch://x")
    message = str(info.value)
    assert "unknown tester URL scheme 'nosuch'" in message and "\n" not in message
    assert "emu" in message and "socket" in message  # the plug-ins' schemes and pySerial's own
    with pytest.raises(BenchError, match="unknown tester URL scheme 'nosuch'"):
        Bench.open("nosuch://x")


@pytest.mark.parametrize("scheme", ["", "1abc", "a b", "x" * 40, None, "emu://"])
def test_bad_scheme_names_are_refused(scheme: object) -> None:
    with pytest.raises(SchemeError, match="URL scheme"):
        register_tester_scheme(scheme, Endpoint)  # type: ignore[arg-type]


def test_an_opener_must_be_callable() -> None:
    with pytest.raises(SchemeError, match="must be callable"):
        register_bench_scheme("fakebench", "not a function")  # type: ignore[arg-type]


def test_the_entry_points_are_in_the_installed_metadata() -> None:
    for group, opener in ((TESTER_GROUP, "emubench.plugin:open_tester"), (BENCH_GROUP, "emubench.plugin:open_bench")):
        found = {p.name: p.value for d in metadata.distributions() for p in d.entry_points if p.group == group}
        assert found.get("emu") == opener and found.get("replay") == opener, (group, found)
    assert {"emu", "replay"} <= set(schemes.tester_schemes()) and {"emu", "replay"} <= set(bench_schemes())
    from emubench import plugin

    assert schemes.tester_opener("emu") is plugin.open_tester and schemes.tester_opener("EMU") is plugin.open_tester
    assert bench_opener("replay") is plugin.open_bench


def test_an_entry_point_that_does_not_load_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = schemes._TESTERS
    points = dict(registry._discover())
    points["broken"] = metadata.EntryPoint(name="broken", value="no_such_module_here:opener", group=TESTER_GROUP)
    monkeypatch.setattr(registry, "_entry_points", points)
    with pytest.raises(SchemeError, match=r"tester scheme 'broken' \(no_such_module_here:opener\) does not load") as info:
        schemes.tester_opener("broken")
    assert "\n" not in str(info.value)
    with pytest.raises(LinkError, match="does not load"):
        TesterSession.open("broken://x")


def test_a_tester_scheme_registered_at_run_time_is_used(emulator: EmulatorProcess) -> None:
    opened: list[Endpoint] = []

    def opener(url: str) -> Endpoint:
        assert url == "faketester://anything?x=1"
        opened.append(Endpoint(emulator.url))
        return opened[-1]

    register_tester_scheme("faketester", opener)
    try:
        with TesterSession.open("faketester://anything?x=1") as tester:
            tester.write_row(1, 5, 0x3C)
            assert tester.read_row(1, 5) == b"\x3c" * 8192
            assert opened[0].closed == 0
        assert opened[0].closed == 1  # closed with the session
    finally:
        unregister_tester_scheme("faketester")
    with pytest.raises(LinkError, match="unknown tester URL scheme 'faketester'"):
        TesterSession.open("faketester://anything")


def test_a_failing_tester_opener_is_a_one_line_link_error() -> None:
    def opener(url: str) -> Endpoint:
        raise RuntimeError("no such\nsimulator")

    register_tester_scheme("failing", opener)
    try:
        with pytest.raises(LinkError, match="cannot start failing:// tester 'failing://x': no such simulator"):
            TesterSession.open("failing://x")
    finally:
        unregister_tester_scheme("failing")


class Plan:
    """A bench plan without instruments."""

    supply_limits = None
    thermal_limits = None

    def __init__(self, url: str) -> None:
        self.url = url
        self.started: list[Endpoint] = []

    def start(self) -> Endpoint:
        self.started.append(Endpoint(self.url))
        return self.started[-1]


def test_a_bench_scheme_registered_at_run_time_is_used(emulator: EmulatorProcess, tmp_path: Path) -> None:
    plans: list[Plan] = []

    def opener(address: str) -> Plan:
        if "bad" in address:
            raise ValueError(f"fake bench {address!r} is bad")
        plans.append(Plan(emulator.url))
        return plans[-1]

    register_bench_scheme("fakebench", opener)
    try:
        with Bench.open("fakebench://one") as bench:
            assert bench.describe()["emulated"] == {"profile": "fake", "url": emulator.url}
            assert bench.supply is None and bench.thermal is None
            bench.tester.write_row(0, 1, 0x11)
        assert len(plans) == 1 and plans[0].started[0].closed == 1
        with pytest.raises(BenchError, match="fake bench 'fakebench://bad' is bad"):
            Bench.open("fakebench://bad")
        path = tmp_path / "bench.toml"
        path.write_text("[tester]\nurl = 'fakebench://two'\n")
        config = load_bench_file(path)
        assert config.tester_url == "fakebench://two" and config.plan is plans[-1]
        with Bench.open(path) as bench:
            assert bench.emulator is plans[-1].started[0]
        # one check per open: the plan checked while reading the file is the one started
        assert len(plans) == 3 and plans[1].started == [] and len(plans[2].started) == 1
        path.write_text("[tester]\nurl = 'fakebench://bad'\n")
        with pytest.raises(BenchError, match="is bad"):
            load_bench_file(path)
    finally:
        unregister_bench_scheme("fakebench")


def test_replay_map_checks_happen_in_the_plug_in(tmp_path: Path) -> None:
    path = tmp_path / "cut.h5"
    path.write_bytes((ROOT / "data" / "maps" / "B-seed1.h5").read_bytes()[:5000])
    with pytest.raises(BenchError) as info:
        Bench.open(f"replay://{path}")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    plan = bench_opener("replay")(f"replay://{ROOT / 'data' / 'maps' / 'B-seed1.h5'}")
    assert plan.supply_limits.nominal_v == pytest.approx(1.35)


# --------------------------------------------------------------------------- the layering


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_layer_imports_the_plug_in() -> None:
    offenders = []
    for package in LOWER_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "firmware_bridge" / "emulator"):  # the compatibility alias
                continue
            bad = sorted(n for n in _imports(path) if n == "emubench" or n.startswith("emubench."))
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {', '.join(bad)}")
            text = path.read_text(encoding="utf-8")
            assert "firmware_bridge.emulator import" not in text or package == "firmware_bridge", path
    assert offenders == []
    assert not (ROOT / "profiler" / "replay.py").exists()


# --------------------------------------------------------------------------- the old names


def test_firmware_bridge_emulator_is_an_alias_of_emubench() -> None:
    import firmware_bridge.emulator as alias
    import firmware_bridge.emulator.bench
    import firmware_bridge.emulator.instruments
    from firmware_bridge.emulator.physics import PhysicsDimm

    assert alias.spawn is emubench.spawn and alias.EmulatorProcess is emubench.EmulatorProcess
    assert alias.EmulatorError is emubench.EmulatorError and alias.build_firmware is emubench.build_firmware
    assert alias.BenchSpec is emubench.BenchSpec and alias.parse_emu_url is emubench.parse_emu_url
    assert firmware_bridge.emulator.bench is emubench.bench
    assert firmware_bridge.emulator.instruments.EmulatedSupply is emubench.instruments.EmulatedSupply
    assert PhysicsDimm is emubench.physics.PhysicsDimm
    for name in ("build_firmware", "spawn", "EmulatorProcess", "EmulatorError", "BenchSpec", "parse_emu_url",
                 "RowStore", "StoreFullError"):  # what the old package exported
        assert name in alias.__all__ and getattr(alias, name) is getattr(emubench, name)
    from softmc_host.geometry import Geometry

    assert emubench.dimm.Geometry is Geometry  # one definition, re-exported


@pytest.mark.parametrize("module", ["emubench", "firmware_bridge.emulator"])
def test_both_module_names_run_the_emulator_cli(module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m {module} ") and "--listen" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", module, "--listen", "tcp://x"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--listen must be socket://HOST:PORT or pty" in bad.stderr


def test_replay_cell_uniforms_are_the_recorded_splitmix_stream() -> None:
    """The per-cell uniforms now come from softmc_host.splitmix; they must not change (recorded maps replay alike)."""
    from emubench.replay import _cell_uniform

    def reference(seed: int, bank: int, row: int, bits: np.ndarray) -> np.ndarray:
        mask = (1 << 64) - 1
        out = []
        for bit in bits.tolist():
            x = ((bit + (((seed & 0xFFFF) << 48) | (bank << 40) | (row << 17))) * 0x9E3779B97F4A7C15) & mask
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
            x ^= x >> 31
            out.append((x >> 11) / float(1 << 53))
        return np.array(out)

    bits = np.array([0, 1, 2, 12345, 65535])
    for seed, bank, row in ((0, 0, 0), (3, 7, 32767), (65535, 5, 100)):
        assert np.array_equal(_cell_uniform(seed, bank, row, bits), reference(seed, bank, row, bits))

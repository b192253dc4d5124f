"""The emulated bench through the real wire: pySerial to the tester, pyvisa-py to the instruments."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import pyvisa

from emubench import EmulatorProcess, spawn
from softmc_host.bench import Bench, BenchConfig, BenchError, load_bench_file
from softmc_host.instruments import SupplyLimitError, SupplyLimits, ThermalLimits
from softmc_host.timing import AccessTiming

ROOT = Path(__file__).resolve().parents[1]
ROWS = [(b, r) for b in (0, 3, 6) for r in (11, 1200, 30000)]
LIMITS = SupplyLimits(
    nominal_v=1.35, min_v=0.95, max_v=1.40, max_step_v=0.05, max_slew_v_per_s=100.0, current_limit_a=2.0
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with spawn("emu://B?seed=4") as emu:
        yield emu


def config_for(emu: EmulatorProcess) -> BenchConfig:
    return BenchConfig(
        tester_url=emu.url,
        supply_resource=emu.supply_resource,
        supply_limits=LIMITS,
        thermal_resource=emu.thermal_resource,
        thermal_limits=ThermalLimits(min_c=0.0, max_c=95.0, band_c=0.5),
        source="test",
    )


def supply_set_point(emu: EmulatorProcess) -> float:
    """Ask the emulated supply directly, on a connection of its own."""
    rm = pyvisa.ResourceManager("@py")
    psu = rm.open_resource(emu.supply_resource, read_termination="\n", write_termination="\n", timeout=2000)
    try:
        return float(psu.query("VOLT?"))
    finally:
        psu.close()


def line_errors(read: np.ndarray, pattern: int) -> int:
    return int((read != pattern).reshape(-1, 64).any(axis=1).sum())


def test_vdd_through_the_supply_causes_errors_and_is_restored(emulator: EmulatorProcess) -> None:
    with Bench.open(config_for(emulator)) as bench:
        bench.tester.write_rows(ROWS, 0xFF)
        assert line_errors(bench.tester.read_rows(ROWS), 0xFF) == 0
        bench.set_vdd(1.0)
        assert bench.supply.measured_voltage_v == pytest.approx(1.0, abs=0.01)
        assert line_errors(bench.tester.read_rows(ROWS), 0xFF) > 0
    assert supply_set_point(emulator) == pytest.approx(1.35)


def test_nominal_restored_after_an_exception(emulator: EmulatorProcess) -> None:
    with pytest.raises(RuntimeError, match="interrupted"):
        with Bench.open(config_for(emulator)) as bench:
            bench.set_vdd(1.05)
            assert supply_set_point(emulator) == pytest.approx(1.05)
            raise RuntimeError("interrupted")
    assert supply_set_point(emulator) == pytest.approx(1.35)


def test_voltage_outside_limits_is_refused_before_sending(emulator: EmulatorProcess) -> None:
    with Bench.open(config_for(emulator)) as bench:
        bench.set_vdd(1.2)
        with pytest.raises(SupplyLimitError, match="0.5 V outside the configured limits 0.95..1.4 V"):
            bench.set_vdd(0.5)
        assert supply_set_point(emulator) == pytest.approx(1.2)  # nothing was sent
        with pytest.raises(SupplyLimitError):
            bench.set_vdd(1.6)


def test_supply_current_follows_activity_and_voltage(emulator: EmulatorProcess) -> None:
    with Bench.open(config_for(emulator)) as bench:
        bench.tester.run_text("REF\nWAIT 1000\nEND")  # an idle program: background current only
        idle_a = bench.supply.measured_current_a
        bench.tester.read_rows(ROWS)  # reads and activations
        busy_a = bench.supply.measured_current_a
        bench.set_vdd(1.2)
        busy_low_a = bench.supply.measured_current_a
    assert 0 < idle_a < busy_a
    assert busy_low_a == pytest.approx(busy_a * 1.2 / 1.35, rel=1e-6)


def test_temperature_is_driven_and_increases_errors() -> None:
    with Bench.open("emu://B?seed=6&temp_c=20") as bench:
        rows = [(b, r) for b in range(8) for r in range(7, 32768, 2048)]
        bench.tester.write_rows(rows, 0xFF)
        # A cut tRP: a hot array needs more time to precharge (the latency need grows 0.4 %/C).
        short = AccessTiming(trp_ns=7.5)
        cold = line_errors(bench.tester.read_rows(rows, short), 0xFF)
        reached = bench.set_temperature(75.0)
        assert abs(reached - 75.0) <= 0.5
        hot = line_errors(bench.tester.read_rows(rows, short), 0xFF)
    assert hot > 3 * max(cold, 1)


def test_emulated_bench_file() -> None:
    config = load_bench_file(ROOT / "data" / "benches" / "emulated.toml")
    assert config.tester_url.startswith("emu://B")
    assert config.supply_limits is not None and config.supply_limits.min_v == 0.95
    with Bench.open(ROOT / "data" / "benches" / "emulated.toml") as bench:
        description = bench.describe()
        assert description["emulated"]["profile"] == "B" and description["emulated"]["seed"] == 1
        assert "BENCH-PSU" in description["supply"]["idn"]
        assert bench.nominal_vdd_v == 1.35


def test_lab_example_bench_file_parses() -> None:
    config = load_bench_file(ROOT / "data" / "benches" / "lab-example.toml")
    assert config.tester_url == "/dev/ttyUSB0?baudrate=3000000"
    assert config.supply_limits.max_step_v == 0.025 and config.thermal_limits.band_c == 0.3


@pytest.mark.parametrize(
    "text, message",
    [
        ("[tester]\n", "[tester] url"),
        ("[tester]\nurl = 'socket://x:1'\nspeed = 3\n", "unknown key(s) in [tester]: speed"),
        ("[tester\nurl='x'", "is not valid TOML"),
        ("[tester]\nurl='emu://B'\n[supply]\nresource='emu'\nmin_v=1.3\nmax_v=1.2\n", "[supply]"),
        ("[tester]\nurl='socket://h:1'\n[supply]\nresource='emu'\nnominal_v=1.35\nmin_v=1\nmax_v=1.4\n"
         "max_step_v=0.05\nmax_slew_v_per_s=1\ncurrent_limit_a=1\n", "needs an emu:// tester url"),
        ("[tester]\nurl='emu://B'\n[supply]\nresource='emu'\nvolts=3\n", "unknown key(s) volts"),
        ("[tester]\nurl='emu://B'\n[heater]\n", "unknown section(s) heater"),
    ],
)
def test_bad_bench_files_give_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bench.toml"
    path.write_text(text)
    with pytest.raises(BenchError) as info:
        load_bench_file(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("emu://Q?seed=1", "unknown DIMM profile 'Q'"),
        ("emu://B?seed=x", "seed='x' is not a non-negative integer"),
        ("emu://B?temp_c=500", "temp_c=500 outside 0..110"),
        ("emu://B?volts=1", "unknown emu:// option 'volts'"),
        ("/no/such/bench.toml", "cannot read bench file"),
        ("socket://127.0.0.1:1", "cannot open bench"),
    ],
)
def test_bad_bench_addresses(spec: str, message: str) -> None:
    with pytest.raises(BenchError, match=None) as info:
        Bench.open(spec)
    assert message in str(info.value)


def test_tester_session_and_demo_accept_emu_urls() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "softmc_host.demo", "--tester", "emu://C?seed=2", "--banks", "1", "--rows", "7"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 bit errors" in proc.stdout


# --------------------------------------------------------------------------- numbers in bench files (issue #12, item 5)

TESTER = "[tester]\nurl = 'socket://127.0.0.1:1'\n"
EMU_TESTER = "[tester]\nurl = 'emu://B?seed=1'\n"
HUGE_INT = "9" * 400
BAD_NUMBER_TEXTS = ["nan", "+inf", "-inf", "true", "'5'", "1e400", HUGE_INT, "9" * 5000, "1979-05-27", "[1]", "{x = 1}"]


@pytest.mark.parametrize("value", BAD_NUMBER_TEXTS + ["0", "-1", "1e9"])
def test_tester_timeout_must_be_a_finite_number_in_range(tmp_path: Path, value: str) -> None:
    path = tmp_path / "bench.toml"
    path.write_text(TESTER + f"timeout_s = {value}\n")
    with pytest.raises(BenchError) as info:
        load_bench_file(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert "timeout_s" in message or "not valid TOML" in message  # 5000 digits: Python's own int limit


def test_bench_open_with_a_nan_timeout_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bench.toml"
    path.write_text(TESTER + "timeout_s = nan\n")
    with pytest.raises(BenchError, match=r"\[tester\] timeout_s must be a finite number, got nan$"):
        Bench.open(path)
    with pytest.raises(BenchError, match="tester timeout_s must be"):
        BenchConfig(tester_url="socket://127.0.0.1:1", tester_timeout_s=float("nan"))


SUPPLY_KEYS = ["nominal_v", "min_v", "max_v", "max_step_v", "max_slew_v_per_s", "current_limit_a", "settle_tol_v",
               "settle_timeout_s"]


@pytest.mark.parametrize("key", SUPPLY_KEYS + ["min_c", "max_c", "band_c"])
@pytest.mark.parametrize("value", BAD_NUMBER_TEXTS[:-4] + ["1e300", "-1e300"])
def test_every_limit_in_a_bench_file_is_checked(tmp_path: Path, key: str, value: str) -> None:
    section = "[thermal]\nresource = 'emu'\nmin_c = 0.0\nmax_c = 50.0\n" if key.endswith("_c") else "[supply]\nresource = 'emu'\n"
    path = tmp_path / "bench.toml"
    path.write_text(EMU_TESTER + section + f"{key} = {value}\n")
    with pytest.raises(BenchError) as info:
        load_bench_file(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    if "not valid TOML" not in message:
        assert key in message and ("[supply]: " in message or "[thermal]: " in message), message


@pytest.mark.parametrize(
    "text, message",
    [
        ("visa_library = 3\n" + TESTER, "visa_library must be a string, got int"),
        ("name = true\n" + TESTER, "name must be a string, got bool"),
        ("[tester]\nurl = 'emu://[B'\n", "malformed emulated-bench address"),
        ("[tester]\nurl = 'emu://B?seed=x'\n", "seed='x'"),
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_more_bad_bench_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bench.toml"
    path.write_text(text)
    with pytest.raises(BenchError) as info:
        load_bench_file(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert type(info.value) is BenchError


def test_bench_file_numbers_keep_working(tmp_path: Path) -> None:
    path = tmp_path / "bench.toml"
    path.write_text(TESTER + "timeout_s = 2\n[thermal]\nresource = 'ASRL1::INSTR'\nmin_c = -10\nmax_c = 85\n")
    config = load_bench_file(path)
    assert config.tester_timeout_s == 2.0 and config.thermal_limits == ThermalLimits(min_c=-10.0, max_c=85.0)


# --------------------------------------------------------------------------- interrupts through the bench


def test_ctrl_c_inside_a_supply_query_still_restores_nominal(emulator: EmulatorProcess) -> None:
    with pytest.raises(KeyboardInterrupt, match="Ctrl-C"):
        with Bench.open(config_for(emulator)) as bench:
            bench.set_vdd(1.2)
            resource = bench.supply.resource
            reads = []

            def read(*args: object, **kwargs: object) -> str:  # Ctrl-C in the 3rd reply of the next ramp
                reads.append(1)
                if len(reads) == 3:
                    raise KeyboardInterrupt("Ctrl-C")
                return type(resource).read(resource, *args, **kwargs)

            resource.read = read
            bench.set_vdd(1.0)
    assert supply_set_point(emulator) == pytest.approx(1.35)


def test_failed_close_keeps_the_original_error_on_python_310(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from softmc_host import _compat

    monkeypatch.setattr(_compat, "HAS_NATIVE_ADD_NOTE", False)  # as on Python 3.10: no BaseException.add_note
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)

    class BrokenTester:
        def close(self) -> None:
            raise OSError("port vanished")

    bench = Bench(BenchConfig(tester_url="socket://x:1"), BrokenTester(), None, None, None)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="original") as info:
        with bench:
            raise KeyError("original")
    assert info.value.__notes__ == ["while closing the bench: port vanished"]


def test_ctrl_c_while_opening_closes_what_was_opened(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    import softmc_host.bench as bench_module

    opened: list[object] = []
    real_open = bench_module.BenchSupply.open

    def supply_open(*args: object, **kwargs: object) -> object:
        opened.append(real_open(*args, **kwargs))  # type: ignore[arg-type]
        return opened[-1]

    def thermal_open(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt("Ctrl-C while opening")

    monkeypatch.setattr(bench_module.BenchSupply, "open", supply_open)
    monkeypatch.setattr(bench_module.ThermalController, "open", thermal_open)
    with pytest.raises(KeyboardInterrupt):
        Bench.open(config_for(emulator))
    assert len(opened) == 1 and opened[0]._closed  # type: ignore[attr-defined]


def test_close_runs_every_step_even_after_a_ctrl_c() -> None:
    closed: list[str] = []

    class Part:
        def __init__(self, name: str, fail: BaseException | None = None) -> None:
            self.name, self.fail = name, fail

        def close(self) -> None:
            closed.append(self.name)
            if self.fail is not None:
                raise self.fail

    bench = Bench(BenchConfig(tester_url="socket://x:1"), Part("tester", OSError("gone")),  # type: ignore[arg-type]
                  Part("supply", KeyboardInterrupt("again")), Part("thermal"), Part("emulator"))  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt, match="again"):
        bench.close()
    assert closed == ["supply", "thermal", "tester", "emulator"]

"""Bench instrument drivers against pyvisa-sim and against the emulated instruments over TCP."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import pyvisa
from hypothesis import given, settings
from hypothesis import strategies as st

from emubench.instruments import EmulatedSupply, EmulatedThermal, ScpiServer
from softmc_host.ddr3_power import DDR3L_1600_X8_4GB, interval_power
from softmc_host.instruments import (
    BenchSupply,
    InstrumentError,
    SupplyLimitError,
    SupplyLimits,
    ThermalController,
    ThermalLimitError,
    ThermalLimits,
    ramp_set_points,
)

SIM_YAML = Path(__file__).parent / "sim" / "bench.yaml"
SIM_PSU = "TCPIP::psu.sim::5025::SOCKET"
SIM_PSU_HIGH = "TCPIP::psu-high.sim::5025::SOCKET"

LIMITS = SupplyLimits(
    nominal_v=1.35, min_v=1.0, max_v=1.4, max_step_v=0.05, max_slew_v_per_s=0.5, current_limit_a=2.0
)


class FakeTime:
    """A clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now_s += seconds


class Recorder:
    """Wraps a message resource and records every message sent through it.

    ``ideal_readback`` answers ``MEAS:VOLT?`` from ``VOLT?``/``OUTP?`` (an ideal
    supply), which pyvisa-sim cannot compute itself.
    """

    def __init__(self, inner: Any, *, ideal_readback: bool = False) -> None:
        self.inner = inner
        self.ideal_readback = ideal_readback
        self.traffic: list[str] = []
        self.writes: list[str] = []
        self.fail_writes = False
        self.closed = False

    def write(self, message: str) -> Any:
        self.traffic.append(message)
        if self.fail_writes:
            raise pyvisa.errors.VisaIOError(pyvisa.constants.StatusCode.error_connection_lost)
        self.writes.append(message)
        return self.inner.write(message)

    def query(self, message: str) -> str:
        self.traffic.append(message)
        if self.ideal_readback and message == "MEAS:VOLT?":
            on = self.inner.query("OUTP?").strip() == "1"
            return self.inner.query("VOLT?") if on else "0.000000"
        return self.inner.query(message)

    def close(self) -> None:
        self.closed = True
        self.inner.close()

    def volts_written(self) -> list[float]:
        return [float(w.split()[1]) for w in self.writes if w.startswith("VOLT ")]


# --------------------------------------------------------------------------- pyvisa-sim


@pytest.fixture
def sim_spec(tmp_path: Path) -> str:
    """A private copy of the YAML: pyvisa caches the simulated state per file path."""
    path = tmp_path / "bench.yaml"
    shutil.copy(SIM_YAML, path)
    return f"{path}@sim"


@pytest.fixture
def sim_rm(sim_spec: str) -> Iterator[pyvisa.ResourceManager]:
    rm = pyvisa.ResourceManager(sim_spec)
    yield rm
    rm.close()


def open_sim(rm: pyvisa.ResourceManager, name: str = SIM_PSU) -> Any:
    return rm.open_resource(name, read_termination="\n", write_termination="\n", timeout=100)


@pytest.fixture
def sim_psu(sim_rm: pyvisa.ResourceManager) -> tuple[BenchSupply, Recorder, FakeTime]:
    rec = Recorder(open_sim(sim_rm), ideal_readback=True)
    fake = FakeTime()
    psu = BenchSupply(rec, LIMITS, sleep=fake.sleep, clock=fake.clock)
    return psu, rec, fake


def sim_set_point(rm: pyvisa.ResourceManager) -> float:
    res = open_sim(rm)
    try:
        return float(res.query("VOLT?"))
    finally:
        res.close()


def test_open_reads_identity_and_programs_current_limit(sim_psu: tuple[BenchSupply, Recorder, FakeTime]) -> None:
    psu, rec, _ = sim_psu
    assert psu.idn == "EDEN-EMU,BENCH-PSU,SIM-0001,1.0"
    assert rec.writes == ["CURR 2.0000"]
    assert rec.traffic[:3] == ["*IDN?", "SYST:ERR?", "VOLT?"]
    assert psu.current_limit_a == pytest.approx(2.0)
    assert psu.voltage_set_v == pytest.approx(1.35)


@pytest.mark.parametrize("bad_v", [0.9, 1.41, 2.5, -1.0, float("nan"), float("inf")])
def test_voltage_outside_limits_is_refused_before_anything_is_sent(
    sim_psu: tuple[BenchSupply, Recorder, FakeTime], bad_v: float
) -> None:
    psu, rec, _ = sim_psu
    rec.traffic.clear()
    with pytest.raises(SupplyLimitError) as info:
        psu.set_voltage(bad_v)
    assert rec.traffic == []
    assert isinstance(info.value, ValueError) and isinstance(info.value, InstrumentError)
    assert "\n" not in str(info.value)
    if math.isfinite(bad_v):
        assert str(info.value) == f"supply voltage {bad_v!r} V outside the configured limits 1.0..1.4 V"


def test_ramp_steps_never_exceed_max_step(
    sim_psu: tuple[BenchSupply, Recorder, FakeTime], sim_rm: pyvisa.ResourceManager
) -> None:
    psu, rec, fake = sim_psu
    assert psu.set_voltage(1.0) == pytest.approx(1.0)
    psu.set_voltage(1.4)
    psu.set_voltage(1.3333)
    volts = rec.volts_written()
    assert volts[:7] == pytest.approx([1.30, 1.25, 1.20, 1.15, 1.10, 1.05, 1.00])
    assert volts[-1] == 1.3333
    previous = 1.35
    for v in volts:
        assert LIMITS.min_v <= v <= LIMITS.max_v
        assert abs(v - previous) <= LIMITS.max_step_v + 1e-12
        previous = v
    # every step waited step / slew: 0.05 V at 0.5 V/s is 0.1 s
    assert fake.sleeps[:7] == pytest.approx([0.1] * 7)
    assert sim_set_point(sim_rm) == pytest.approx(1.3333)


@settings(max_examples=300, deadline=None)
@given(
    start_q=st.integers(0, 20000),
    target_q=st.integers(0, 20000),
    max_step_v=st.floats(1e-4, 0.5),
)
def test_ramp_set_points_property(start_q: int, target_q: int, max_step_v: float) -> None:
    start_v, target_v = start_q / 1e4, target_q / 1e4
    points = ramp_set_points(start_v, target_v, max_step_v)
    if start_q == target_q:
        assert points == []
        return
    assert points[-1] == target_v
    previous = start_v
    for v in points:
        assert abs(v - previous) <= max_step_v + 1e-9
        assert min(start_v, target_v) <= v <= max(start_v, target_v)
        assert round(v * 1e4) / 1e4 == v
        previous = v
    assert len(points) == math.ceil(abs(target_q - start_q) / math.floor(max_step_v * 1e4 + 1e-6))


def test_low_level_guard_refuses_out_of_range_and_big_steps(sim_psu: tuple[BenchSupply, Recorder, FakeTime]) -> None:
    psu, rec, _ = sim_psu
    rec.traffic.clear()
    with pytest.raises(SupplyLimitError, match="outside the configured limits"):
        psu._write_voltage(1.45)
    with pytest.raises(SupplyLimitError, match="exceeds max_step_v"):
        psu._write_voltage(1.25)  # 0.1 V from 1.35
    assert rec.traffic == []


def test_limit_off_the_write_grid_is_checked_on_the_value_sent(sim_rm: pyvisa.ResourceManager) -> None:
    # 1.00004 V is within the limits but would be sent as 1.0000 V, below min_v
    odd = SupplyLimits(nominal_v=1.35, min_v=1.00004, max_v=1.4, max_step_v=0.4, max_slew_v_per_s=1.0, current_limit_a=1.0)
    rec = Recorder(open_sim(sim_rm), ideal_readback=True)
    psu = BenchSupply(rec, odd, sleep=FakeTime().sleep)
    rec.traffic.clear()
    with pytest.raises(SupplyLimitError, match=r"1\.0 V outside the configured limits 1\.00004\.\.1\.4 V"):
        psu.set_voltage(1.00004)
    assert rec.traffic == []


def test_nominal_restored_on_close(sim_rm: pyvisa.ResourceManager) -> None:
    rec = Recorder(open_sim(sim_rm), ideal_readback=True)
    fake = FakeTime()
    psu = BenchSupply(rec, LIMITS, sleep=fake.sleep, clock=fake.clock)
    psu.set_voltage(1.1)
    rec.writes.clear()
    psu.close()
    assert rec.volts_written() == pytest.approx([1.15, 1.2, 1.25, 1.3, 1.35])
    assert rec.closed
    assert sim_set_point(sim_rm) == pytest.approx(1.35)
    psu.close()  # idempotent


def test_nominal_restored_after_exception_inside_with(sim_rm: pyvisa.ResourceManager) -> None:
    rec = Recorder(open_sim(sim_rm), ideal_readback=True)
    fake = FakeTime()
    with pytest.raises(RuntimeError, match="boom"):
        with BenchSupply(rec, LIMITS, sleep=fake.sleep, clock=fake.clock) as psu:
            psu.set_voltage(1.2)
            raise RuntimeError("boom")
    assert rec.volts_written()[-1] == 1.35
    assert rec.closed
    assert sim_set_point(sim_rm) == pytest.approx(1.35)


def test_failed_restore_does_not_mask_the_original_exception(sim_rm: pyvisa.ResourceManager) -> None:
    rec = Recorder(open_sim(sim_rm), ideal_readback=True)
    fake = FakeTime()
    with pytest.raises(KeyError) as info:
        with BenchSupply(rec, LIMITS, sleep=fake.sleep, clock=fake.clock) as psu:
            psu.set_voltage(1.2)
            rec.fail_writes = True
            raise KeyError("original")
    assert any("restoring the nominal supply voltage" in note for note in info.value.__notes__)
    assert rec.closed  # the resource is closed even so


def test_refused_open_when_present_set_point_is_outside_limits(sim_rm: pyvisa.ResourceManager) -> None:
    rec = Recorder(open_sim(sim_rm, SIM_PSU_HIGH))
    with pytest.raises(SupplyLimitError, match=r"present set point .* 1\.6 V outside the configured limits 1\.0\.\.1\.4 V"):
        BenchSupply(rec, LIMITS, sleep=FakeTime().sleep)
    assert rec.writes == []
    assert rec.traffic == ["*IDN?", "SYST:ERR?", "VOLT?"]


def test_open_by_name_with_sim_spec_and_refusal_closes_the_resource(sim_spec: str) -> None:
    fake = FakeTime()
    with BenchSupply.open(SIM_PSU, LIMITS, rm_spec=sim_spec, sleep=fake.sleep, clock=fake.clock) as psu:
        assert psu.measured_voltage_v == pytest.approx(1.35)  # the YAML's fixed reading
        assert psu.measured_power_w == pytest.approx(1.35 * 0.25)
    with pytest.raises(SupplyLimitError):
        BenchSupply.open(SIM_PSU_HIGH, LIMITS, rm_spec=sim_spec)


def test_settle_timeout_raises_with_last_reading(sim_rm: pyvisa.ResourceManager) -> None:
    # no ideal readback: the simulated MEAS:VOLT? stays at 1.35 whatever the set point
    fake = FakeTime()
    psu = BenchSupply(Recorder(open_sim(sim_rm)), LIMITS, sleep=fake.sleep, clock=fake.clock)
    with pytest.raises(InstrumentError, match=r"did not settle to 1.3 V .* \(last reading 1.35 V\)"):
        psu.set_voltage(1.3)
    assert fake.now_s >= LIMITS.settle_timeout_s


def test_instrument_error_after_a_write_is_raised(sim_rm: pyvisa.ResourceManager) -> None:
    # limits wider than the simulated instrument (0..2 V): the instrument refuses 2.05 V
    wide = SupplyLimits(nominal_v=1.35, min_v=1.0, max_v=2.5, max_step_v=0.35, max_slew_v_per_s=10.0, current_limit_a=1.0)
    rec = Recorder(open_sim(sim_rm), ideal_readback=True)
    fake = FakeTime()
    psu = BenchSupply(rec, wide, sleep=fake.sleep, clock=fake.clock)
    with pytest.raises(InstrumentError, match=r"-113,\"Undefined header\" after 'VOLT 2.1000'"):
        psu.set_voltage(2.1)
    assert rec.volts_written() == [1.6, 1.85, 2.1]  # 2.1 V was refused by the instrument


def test_output_off_skips_settling(sim_psu: tuple[BenchSupply, Recorder, FakeTime]) -> None:
    psu, rec, fake = sim_psu
    psu.output_enabled = False
    assert rec.writes[-1] == "OUTP 0"
    assert psu.output_enabled is False
    assert psu.set_voltage(1.3) == pytest.approx(1.3)
    assert "MEAS:VOLT?" not in rec.traffic


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(nominal_v=0.9), "nominal_v 0.9 V must lie within"),
        (dict(min_v=1.5), "min_v .* must not exceed max_v"),
        (dict(max_step_v=0.0), "max_step_v must be at least"),
        (dict(max_slew_v_per_s=0.0), "max_slew_v_per_s must be positive"),
        (dict(current_limit_a=float("nan")), "current_limit_a must be a finite number"),
    ],
)
def test_supply_limits_are_validated(kwargs: dict, message: str) -> None:
    base = dict(nominal_v=1.35, min_v=1.0, max_v=1.4, max_step_v=0.05, max_slew_v_per_s=1.0, current_limit_a=1.0)
    with pytest.raises(ValueError, match=message):
        SupplyLimits(**{**base, **kwargs})


# --------------------------------------------------------------------------- emulator over TCP


@pytest.fixture(scope="module")
def py_rm() -> Iterator[pyvisa.ResourceManager]:
    rm = pyvisa.ResourceManager("@py")
    yield rm
    rm.close()


@pytest.fixture
def emulated_supply() -> Iterator[tuple[EmulatedSupply, str]]:
    supply = EmulatedSupply(nominal_v=1.35, serial="T-17")
    with ScpiServer(supply) as server:
        yield supply, f"TCPIP::127.0.0.1::{server.port}::SOCKET"


@pytest.fixture
def emulated_thermal() -> Iterator[tuple[EmulatedThermal, str]]:
    thermal = EmulatedThermal(initial_c=25.0, seed=7, tau_s=0.05)
    with ScpiServer(thermal) as server:
        yield thermal, f"TCPIP::127.0.0.1::{server.port}::SOCKET"


FAST = SupplyLimits(nominal_v=1.35, min_v=1.0, max_v=1.5, max_step_v=0.05, max_slew_v_per_s=50.0, current_limit_a=2.0)


def test_supply_over_tcp_sets_and_measures(emulated_supply: tuple[EmulatedSupply, str]) -> None:
    emu, name = emulated_supply
    with BenchSupply.open(name, FAST) as psu:
        assert psu.idn == "EDEN-EMU,BENCH-PSU,T-17,1.0"
        assert psu.current_limit_a == pytest.approx(2.0)
        assert psu.set_voltage(1.2) == pytest.approx(1.2)
        assert emu.output_voltage_v() == pytest.approx(1.2)
        assert psu.voltage_set_v == pytest.approx(1.2)
        assert psu.measured_voltage_v == pytest.approx(1.2)
        psu.output_enabled = False
        assert psu.measured_voltage_v == 0.0
        assert emu.output_voltage_v() == 0.0
        psu.output_enabled = True
    assert emu.voltage_set_v == pytest.approx(1.35)


def test_supply_current_follows_the_load(emulated_supply: tuple[EmulatedSupply, str]) -> None:
    emu, name = emulated_supply

    def dimm_load(vdd_v: float) -> float:
        return interval_power(DDR3L_1600_X8_4GB, cycles=10_000, vdd_v=vdd_v, activates=100, reads=800).current_a

    emu.load_current_fn = dimm_load
    with BenchSupply.open(name, FAST) as psu:
        for vdd_v in (1.35, 1.2):
            psu.set_voltage(vdd_v)
            assert psu.measured_current_a == pytest.approx(dimm_load(vdd_v), rel=1e-5)
            assert psu.measured_power_w == pytest.approx(vdd_v * dimm_load(vdd_v), rel=1e-5)
        assert not psu.current_limited
        emu.load_current_fn = lambda vdd_v: 5.0  # a short: the supply limits at 2 A
        assert psu.measured_current_a == pytest.approx(2.0)
        assert psu.current_limited


def test_bad_command_surfaces_through_syst_err(
    emulated_supply: tuple[EmulatedSupply, str], py_rm: pyvisa.ResourceManager
) -> None:
    emu, name = emulated_supply
    with BenchSupply.open(name, FAST) as psu:
        psu.resource.write("VOLT:BOGUS 1")  # behind the driver's back
        with pytest.raises(InstrumentError, match=r'supply reported error -113,"Undefined header" after \'OUTP 1\''):
            psu.output_enabled = True
    # raw SCPI: bad values queue errors and send nothing; the set point is unchanged
    res = py_rm.open_resource(name, read_termination="\n", write_termination="\n", timeout=500)
    try:
        res.write("VOLT 2.5")
        res.write("VOLT abc")
        res.write("OUTP maybe")
        assert res.query("SYST:ERR?") == '-222,"Data out of range"'
        assert res.query("SYST:ERR?") == '-104,"Data type error"'
        assert res.query("SYST:ERR?") == '-224,"Illegal parameter value"'
        assert res.query("SYST:ERR?") == '0,"No error"'
        assert res.query("VOLT?;OUTP?;*OPC?") == "1.350000;1;1"
    finally:
        res.close()


def test_open_refuses_a_supply_with_queued_errors(emulated_supply: tuple[EmulatedSupply, str]) -> None:
    emu, name = emulated_supply
    emu.queue_error(-113, "Undefined header")
    with pytest.raises(InstrumentError, match="at open"):
        BenchSupply.open(name, FAST)
    with BenchSupply.open(name, FAST, clear_errors=True) as psu:
        assert psu.voltage_set_v == pytest.approx(1.35)


def test_thermal_wait_stable_reaches_a_new_set_point() -> None:
    # On an injected clock (time moves only when the wait sleeps), so a loaded machine cannot
    # stretch or shorten the settling; the emulated DIMM follows a first-order lag on that clock.
    fake = FakeTime()
    tau_s, band_c, hold_s, poll_s = 1.0, 0.3, 0.5, 0.05
    emu = EmulatedThermal(initial_c=25.0, seed=7, tau_s=tau_s, clock=fake.clock, noise_c=0.02)
    with ScpiServer(emu) as server:
        tec = ThermalController.open(f"TCPIP::127.0.0.1::{server.port}::SOCKET", ThermalLimits(min_c=20.0, max_c=95.0),
                                     clock=fake.clock, sleep=fake.sleep)
        with tec:
            assert tec.idn == f"EDEN-EMU,BENCH-TEC,{emu.serial},1.0"
            assert tec.output_enabled
            tec.set_point_c = 45.0
            assert tec.set_point_c == pytest.approx(45.0)
            temp_c = tec.wait_stable(band_c=band_c, hold_s=hold_s, timeout_s=30.0, poll_s=poll_s)
    assert abs(temp_c - 45.0) <= band_c
    assert emu.temperature_c() == pytest.approx(45.0, abs=band_c)
    # It waited for the lag to bring 20 C within the band (noise moves the edge by 0.02 C), then held it.
    enters_lo_s, enters_hi_s = tau_s * math.log(20.0 / (band_c + 0.02)), tau_s * math.log(20.0 / (band_c - 0.02))
    assert enters_lo_s + hold_s - 1e-9 <= fake.now_s <= enters_hi_s + hold_s + 2 * poll_s
    assert set(fake.sleeps) == {poll_s}


def test_thermal_set_point_out_of_range_is_refused_before_sending(
    emulated_thermal: tuple[EmulatedThermal, str], py_rm: pyvisa.ResourceManager
) -> None:
    emu, name = emulated_thermal
    rec = Recorder(py_rm.open_resource(name, read_termination="\n", write_termination="\n", timeout=500))
    tec = ThermalController(rec, ThermalLimits(min_c=20.0, max_c=95.0))
    rec.traffic.clear()
    for bad_c in (100.0, 120.0, 10.0, float("nan")):
        with pytest.raises(ThermalLimitError):
            tec.set_point_c = bad_c
    assert rec.traffic == []
    assert emu.set_point_c == 25.0
    tec.close()
    assert rec.closed


def test_thermal_wait_stable_timeout_reports_last_reading() -> None:
    fake = FakeTime()
    emu = EmulatedThermal(initial_c=25.0, seed=3, tau_s=1000.0, clock=fake.clock, noise_c=0.0)
    with ScpiServer(emu) as server:
        tec = ThermalController.open(
            f"TCPIP::127.0.0.1::{server.port}::SOCKET", ThermalLimits(0.0, 100.0), clock=fake.clock, sleep=fake.sleep
        )
        with tec:
            tec.set_point_c = 80.0
            with pytest.raises(InstrumentError, match=r"not stable within 0.5 C of 80 C for 0.5 s after 5 s \(last reading 25\.\d+ C\)"):
                tec.wait_stable(timeout_s=5.0, poll_s=0.5)
            assert fake.now_s == pytest.approx(5.0)


# --------------------------------------------------------------------------- emulator, direct


def test_emulated_supply_scpi_details() -> None:
    psu = EmulatedSupply(nominal_v=1.5, serial="X")
    assert psu.handle_line("*IDN?") == "EDEN-EMU,BENCH-PSU,X,1.0"
    assert psu.handle_line(":SOURce:VOLTage 1.2") is None  # no [SOURce:] node: undefined
    assert psu.handle_line("SYST:ERR?") == '-113,"Undefined header"'
    assert psu.handle_line("voltage 1.2;OUTPut OFF") is None
    assert psu.handle_line("MEASure:VOLTage?;volt?;OUTP?") == "0.000000;1.200000;0"
    assert psu.handle_line("MEAS:VOLT:BOGUS?") is None  # unknown query: no reply
    assert psu.handle_line("VOLT") is None
    assert psu.handle_line("*IDN? now") is None
    assert psu.pending_errors() == ['-113,"Undefined header"', '-109,"Missing parameter"', '-108,"Parameter not allowed"']
    assert psu.handle_line("*CLS") is None
    assert psu.pending_errors() == []
    psu.handle_line("*RST")
    assert psu.handle_line("VOLT?;OUTP?;CURR?") == "1.500000;1;1.000000"
    for _ in range(40):
        psu.handle_line("NOPE")
    errors = psu.pending_errors()
    assert len(errors) == EmulatedSupply.ERROR_QUEUE_LENGTH and errors[-1] == '-350,"Queue overflow"'


def test_emulated_supply_current_limit_flags() -> None:
    psu = EmulatedSupply(nominal_v=1.35, current_limit_a=0.5)
    psu.load_current_fn = lambda vdd_v: vdd_v / 1.0  # 1 ohm
    assert psu.handle_line("MEAS:CURR?") == "5.000000e-01"
    assert psu.handle_line("STAT:QUES:COND?;STAT:QUES?;STAT:QUES?") == "2;2;0"
    psu.handle_line("CURR 2")
    assert float(psu.handle_line("MEAS:CURR?") or "nan") == pytest.approx(1.35)
    assert psu.handle_line("STAT:QUES:COND?") == "0"

    def broken(vdd_v: float) -> float:
        raise ZeroDivisionError("model")

    psu.load_current_fn = broken
    assert psu.handle_line("MEAS:CURR?") == "9.91E+37"
    assert psu.pending_errors()[0].startswith("-300,")


def test_emulated_thermal_follows_first_order_dynamics_with_seeded_noise() -> None:
    def run(seed: int) -> tuple[EmulatedThermal, FakeTime, list[float]]:
        fake = FakeTime()
        emu = EmulatedThermal(initial_c=25.0, seed=seed, tau_s=2.0, clock=fake.clock)
        emu.handle_line("TEMP:SET 85")
        fake.sleep(2.0)
        assert emu.temperature_c() == pytest.approx(85.0 + (25.0 - 85.0) * math.exp(-1.0))
        return emu, fake, [float(emu.handle_line("MEAS:TEMP?") or "nan") for _ in range(20)]

    a, fake, readings_a = run(11)
    assert run(11)[2] == readings_a
    assert run(12)[2] != readings_a
    assert all(abs(r - a.temperature_c()) <= 0.02 + 5e-4 for r in readings_a)
    assert len(set(readings_a)) > 1
    a.handle_line("OUTP OFF")
    fake.sleep(100.0)
    assert a.temperature_c() == pytest.approx(25.0)
    a.handle_line("TEMP:SET 111")
    assert a.handle_line("SYST:ERR?") == '-222,"Data out of range"'
    assert a.handle_line("TEMP:SET?;OUTP?") == "85.000;0"
    a.handle_line("*RST")
    assert a.handle_line("TEMP:SET?;OUTP?") == "25.000;1"


def test_numpy_scalars_are_accepted_and_thermal_limits_validated(
    sim_psu: tuple[BenchSupply, Recorder, FakeTime],
) -> None:
    import numpy as np

    psu, rec, _ = sim_psu
    psu.set_voltage(np.float32(1.2))  # a value taken from a sweep array
    assert rec.volts_written()[-1] == 1.2
    with pytest.raises(SupplyLimitError):
        psu.set_voltage(np.float64(1.5))
    with pytest.raises(ValueError, match="min_c .* must not exceed max_c"):
        ThermalLimits(min_c=50.0, max_c=40.0)
    with pytest.raises(ValueError, match="band_c must be positive"):
        ThermalLimits(min_c=0.0, max_c=40.0, band_c=0.0)
    with pytest.raises(ThermalLimitError, match=r"^temperature set point 96\.0 C outside the configured limits 20\.0\.\.95\.0 C$"):
        ThermalLimits(20.0, 95.0).check(96)


# --------------------------------------------------------------------------- bad numbers (issue #12, item 2)

from decimal import Decimal  # noqa: E402
from fractions import Fraction  # noqa: E402

import numpy as np  # noqa: E402

from softmc_host.instruments import InstrumentValueError  # noqa: E402

#: Values that are not finite numbers: every numeric input must refuse them before sending.
NOT_NUMBERS = [
    float("nan"), float("inf"), float("-inf"), 10**400, -(10**400), 10**5000, Fraction(10**400, 3),
    "1.2", "nan", b"1.2", True, False, np.bool_(True), None, [1.2], 1.2j, Decimal("1.2"), np.float64("nan"),
]


def bad_id(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"{'-' if value < 0 else ''}int_of_{value.bit_length()}_bits"
    return f"{type(value).__name__}_{str(value)[:16]}"


class LocalResource:
    """A message resource that hands every message straight to an emulated instrument, recording it."""

    def __init__(self, instrument: Any) -> None:
        self.instrument = instrument
        self.traffic: list[str] = []

    def write(self, message: str) -> None:
        self.traffic.append(message)
        self.instrument.handle_line(message)

    def query(self, message: str) -> str:
        self.traffic.append(message)
        reply = self.instrument.handle_line(message)
        if reply is None:
            raise pyvisa.errors.VisaIOError(pyvisa.constants.StatusCode.error_timeout)
        return reply

    def close(self) -> None:
        pass


@pytest.fixture
def local_psu() -> tuple[BenchSupply, LocalResource]:
    res = LocalResource(EmulatedSupply(nominal_v=1.35))
    fake = FakeTime()
    return BenchSupply(res, FAST, sleep=fake.sleep, clock=fake.clock), res


@pytest.fixture
def local_tec() -> tuple[ThermalController, LocalResource]:
    res = LocalResource(EmulatedThermal(initial_c=25.0, tau_s=0.01, noise_c=0.0))
    fake = FakeTime()
    return ThermalController(res, ThermalLimits(0.0, 95.0), sleep=fake.sleep, clock=fake.clock), res


def assert_one_line(exc: BaseException) -> None:
    text = str(exc)
    assert "\n" not in text and 0 < len(text) < 300, text


@pytest.mark.parametrize("bad", NOT_NUMBERS, ids=bad_id)
def test_every_supply_number_refuses_non_numbers_before_sending(
    local_psu: tuple[BenchSupply, LocalResource], bad: object
) -> None:
    psu, res = local_psu
    res.traffic.clear()
    for action in (
        lambda: psu.set_voltage(bad),
        lambda: psu._write_voltage(bad),
        lambda: setattr(psu, "output_enabled", bad if not isinstance(bad, (bool, np.bool_)) else "on"),
    ):
        with pytest.raises(InstrumentValueError) as info:
            action()
        assert isinstance(info.value, ValueError)
        assert_one_line(info.value)
    with pytest.raises(SupplyLimitError):
        psu.set_voltage(bad)
    assert res.traffic == []
    assert res.instrument.voltage_set_v == 1.35


@pytest.mark.parametrize("bad", NOT_NUMBERS, ids=bad_id)
def test_every_thermal_number_refuses_non_numbers_before_sending(
    local_tec: tuple[ThermalController, LocalResource], bad: object
) -> None:
    tec, res = local_tec
    res.traffic.clear()
    with pytest.raises(ThermalLimitError) as info:
        tec.set_point_c = bad
    assert_one_line(info.value)
    for name in ("band_c", "hold_s", "timeout_s", "poll_s"):
        if name == "band_c" and bad is None:
            continue  # None means the limits' band
        with pytest.raises(InstrumentValueError, match=f"^{name} must be") as info:
            tec.wait_stable(**{name: bad})
        assert_one_line(info.value)
    if not isinstance(bad, (bool, np.bool_)):
        with pytest.raises(InstrumentValueError, match="output_enabled must be True or False"):
            tec.output_enabled = bad
    assert res.traffic == []


@pytest.mark.parametrize("bad", NOT_NUMBERS, ids=bad_id)
def test_limits_ramps_and_driver_options_refuse_non_numbers(bad: object) -> None:
    base = dict(nominal_v=1.35, min_v=1.0, max_v=1.4, max_step_v=0.05, max_slew_v_per_s=1.0, current_limit_a=1.0)
    for name in (*base, "settle_tol_v", "settle_timeout_s"):
        with pytest.raises(ValueError, match=f"^{name} must be a finite number, got ") as info:
            SupplyLimits(**{**base, name: bad})
        assert_one_line(info.value)
    for name in ("min_c", "max_c", "band_c"):
        with pytest.raises(ValueError, match=f"^{name} must be a finite number, got "):
            ThermalLimits(**{"min_c": 0.0, "max_c": 50.0, name: bad})
    for args in ((bad, 1.2, 0.05), (1.2, bad, 0.05), (1.2, 1.0, bad)):
        with pytest.raises(InstrumentValueError):
            ramp_set_points(*args)
    res = LocalResource(EmulatedSupply(nominal_v=1.35))
    with pytest.raises(InstrumentValueError, match="^settle_poll_s must be"):
        BenchSupply(res, FAST, settle_poll_s=bad)
    with pytest.raises(InstrumentValueError, match="^timeout_ms must be"):
        BenchSupply.open("TCPIP::127.0.0.1::1::SOCKET", FAST, timeout_ms=bad)
    with pytest.raises(InstrumentValueError, match="^timeout_ms must be"):
        ThermalController.open("TCPIP::127.0.0.1::1::SOCKET", ThermalLimits(0.0, 50.0), timeout_ms=bad)


def test_huge_but_finite_numbers_are_out_of_range() -> None:
    base = dict(nominal_v=1.35, min_v=1.0, max_v=1.4, max_step_v=0.05, max_slew_v_per_s=1.0, current_limit_a=1.0)
    for name, value in [("max_slew_v_per_s", 1e300), ("current_limit_a", 10**300), ("settle_timeout_s", 1e9),
                        ("max_step_v", 1e6), ("settle_tol_v", 1000.0)]:
        with pytest.raises(ValueError, match=f"^{name} must be "):
            SupplyLimits(**{**base, name: value})
    with pytest.raises(ValueError, match="^max_c must be >= -273.15 and <= 1000 C, got 1e\\+300$"):
        ThermalLimits(min_c=0.0, max_c=1e300)
    with pytest.raises(SupplyLimitError, match=r"^supply voltage 1e\+300 V outside the configured limits"):
        FAST.check(10**300)
    assert SupplyLimits(**{**base, "current_limit_a": 2}).current_limit_a == 2.0  # TOML integers become floats
    assert isinstance(SupplyLimits(**base).nominal_v, float)


def test_numeric_inputs_that_are_numbers_still_work(local_psu: tuple[BenchSupply, LocalResource]) -> None:
    psu, res = local_psu
    assert psu.set_voltage(Fraction(6, 5)) == pytest.approx(1.2)
    assert psu.set_voltage(np.int64(1)) == pytest.approx(1.0)
    psu.output_enabled = np.bool_(False)
    assert res.instrument.output_enabled is False
    psu.output_enabled = 1
    assert res.instrument.output_enabled is True


# --------------------------------------------------------------------------- SCPI reply parsing


@pytest.mark.parametrize(
    "reply, expected",
    [("1.350000", 1.35), ("+1.35E+00", 1.35), ("-0.5", -0.5), (".5", 0.5), ("2.", 2.0), ("  7\r\n", 7.0)],
)
def test_numeric_replies_parse(reply: str, expected: float) -> None:
    from softmc_host.instruments import _parse_float

    assert _parse_float(reply, "VOLT?") == expected


@pytest.mark.parametrize(
    "reply",
    ["", "nan", "inf", "1_0", "１.３５", "1.3\u0665", "\u00b2", "0x10", "1e99999", "9.91E+37", "1.2;3", '0,"No error"', "1" * 400],
)
def test_numeric_replies_are_ascii_scpi_numbers_only(reply: str) -> None:
    from softmc_host.instruments import _parse_float

    with pytest.raises(InstrumentError) as info:
        _parse_float(reply, "supply VOLT?")
    assert_one_line(info.value)


def test_error_and_register_replies_parse_strictly() -> None:
    from softmc_host.instruments import _parse_error_reply, _parse_register

    assert _parse_error_reply('-113,"Undefined header"', "SYST:ERR?") == (-113, '"Undefined header"')
    assert _parse_error_reply("+0,\"No error\"\n", "SYST:ERR?") == (0, '"No error"')
    for bad in ("\u0660", "1_0", "", "x,y", "9" * 50):
        with pytest.raises(InstrumentError):
            _parse_error_reply(bad, "SYST:ERR?")
    assert _parse_register("+2", "STAT:QUES:COND?") == 2
    for bad in ("2.5", "-1", "1e9"):
        with pytest.raises(InstrumentError):
            _parse_register(bad, "STAT:QUES:COND?")


def test_a_reply_that_does_not_fit_marks_the_session_out_of_step(local_psu: tuple[BenchSupply, LocalResource]) -> None:
    psu, res = local_psu
    res.query = lambda message: '0,"No error"'  # type: ignore[method-assign]  # a reply shifted by one
    with pytest.raises(InstrumentError, match=r"supply VOLT\?: expected a number"):
        _ = psu.voltage_set_v
    assert not psu.in_sync
    del res.query  # answers in turn again
    res.traffic.clear()
    assert psu.voltage_set_v == pytest.approx(1.35)
    assert res.traffic == ["*CLS", "*IDN?", "*OPC?", "SYST:ERR?", "VOLT?"]
    assert psu.in_sync


# --------------------------------------------------------------------------- Python 3.10 (issue #12, item 8)


def test_add_note_fallback_records_and_prints_notes(capsys: pytest.CaptureFixture[str]) -> None:
    import sys
    import traceback

    from softmc_host import _compat

    exc = KeyError("original")
    _compat._add_note_fallback(exc, "first note")
    _compat._add_note_fallback(exc, "second note")
    assert exc.__notes__ == ["first note", "second note"]
    assert "first note" in "".join(traceback.format_exception(exc))  # what 3.11+ prints
    with pytest.raises(TypeError):
        _compat._add_note_fallback(exc, 3)  # type: ignore[arg-type]
    _compat._excepthook_with_notes(KeyError, exc, None)  # the hook the fallback installs on 3.10
    assert "KeyError: 'original'" in capsys.readouterr().err
    native = ValueError("x")
    _compat.add_note(native, "native note")
    assert native.__notes__ == ["native note"]
    if sys.version_info < (3, 11):
        assert not _compat.HAS_NATIVE_ADD_NOTE


def test_failed_restore_keeps_the_original_exception_without_add_note(
    sim_rm: pyvisa.ResourceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from softmc_host import _compat

    monkeypatch.setattr(_compat, "HAS_NATIVE_ADD_NOTE", False)  # as on Python 3.10
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    rec = Recorder(open_sim(sim_rm), ideal_readback=True)
    fake = FakeTime()
    with pytest.raises(KeyError, match="original") as info:
        with BenchSupply(rec, LIMITS, sleep=fake.sleep, clock=fake.clock) as psu:
            psu.set_voltage(1.2)
            rec.fail_writes = True
            raise KeyError("original")
    assert any("restoring the nominal supply voltage" in note for note in info.value.__notes__)
    assert sys.excepthook is _compat._excepthook_with_notes


def test_no_direct_add_note_calls() -> None:
    root = Path(__file__).resolve().parents[1]
    for name in ("softmc_host/instruments.py", "softmc_host/bench.py", "softmc_host/tomlfile.py"):
        assert ".add_note(" not in (root / name).read_text(), f"{name}: use softmc_host._compat.add_note"


def test_emulated_instruments_take_ascii_decimal_parameters_only() -> None:
    psu = EmulatedSupply(nominal_v=1.35)
    for bad in ("１.２", "1_2", "1.\u0662", "infinity", "nan", "1e99999", "0x1", "1" * 300):
        psu.handle_line(f"VOLT {bad}")
        assert psu.pending_errors() == ['-104,"Data type error"'], bad
        psu.handle_line("*CLS")
    assert psu.voltage_set_v == 1.35
    psu.handle_line("VOLT +1.2E+00")
    assert psu.voltage_set_v == 1.2 and psu.pending_errors() == []
    tec = EmulatedThermal(initial_c=25.0)
    tec.handle_line("TEMP:SET ４５")
    assert tec.pending_errors() == ['-104,"Data type error"'] and tec.set_point_c == 25.0

"""Wire tests of the SCPI drivers with ``expected_protocol``, and tests of the Control descriptor and the helper."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np
import pytest
import pyvisa

from softmc_host.instrument_testing import (
    DEVICE_CLEAR,
    NO_ERROR,
    ProtocolMismatch,
    ProtocolResource,
    expected_protocol,
    resync_exchanges,
)
from softmc_host.instruments import (
    BenchSupply,
    Control,
    InstrumentError,
    InstrumentValueError,
    ScpiInstrument,
    SupplyLimitError,
    SupplyLimits,
    ThermalController,
    ThermalLimitError,
    ThermalLimits,
    boolean,
    number,
    register_bit,
    within_limits,
)

PSU_IDN = "EDEN-EMU,BENCH-PSU,P-1,1.0"
TEC_IDN = "EDEN-EMU,BENCH-TEC,T-1,1.0"
LIMITS = SupplyLimits(nominal_v=1.35, min_v=1.0, max_v=1.4, max_step_v=0.05, max_slew_v_per_s=0.5, current_limit_a=2.0)
THERMAL = ThermalLimits(min_c=20.0, max_c=95.0)
NOT_NUMBERS = [float("nan"), float("inf"), -math.inf, 10**400, True, np.bool_(False), "1.2", None, b"1", [1.2], 1j]


class FakeTime:
    def __init__(self) -> None:
        self.now_s = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


def supply_open(volt: str = "1.350000", outp: str = "1", curr: str = "CURR 2.0000") -> list[Any]:
    """What opening a BenchSupply sends and reads."""
    return [("*IDN?", PSU_IDN), ("SYST:ERR?", NO_ERROR), ("VOLT?", volt), (curr, None), ("SYST:ERR?", NO_ERROR),
            ("OUTP?", outp)]


TEC_OPEN = [("*IDN?", TEC_IDN), ("SYST:ERR?", NO_ERROR)]


def write(command: str) -> list[Any]:
    """A write and the SYST:ERR? that follows every write."""
    return [(command, None), ("SYST:ERR?", NO_ERROR)]


def supply(exchanges: list[Any], limits: SupplyLimits = LIMITS, **kwargs: Any) -> Any:
    fake = FakeTime()
    return expected_protocol(BenchSupply, exchanges, limits, sleep=fake.sleep, clock=fake.clock, **kwargs)


# --------------------------------------------------------------------------- every Control, get and set

#: (driver, control, query, reply, value read)
GETS = [
    (BenchSupply, "voltage_set_v", "VOLT?", "1.300000", 1.3),
    (BenchSupply, "measured_voltage_v", "MEAS:VOLT?", "+1.2995E+00", 1.2995),
    (BenchSupply, "measured_current_a", "MEAS:CURR?", "9.861101e-01", 0.9861101),
    (BenchSupply, "current_limit_a", "CURR?", "2.000000", 2.0),
    (BenchSupply, "current_limited", "STAT:QUES:COND?", "2", True),
    (BenchSupply, "current_limited", "STAT:QUES:COND?", "+5", False),
    (BenchSupply, "output_enabled", "OUTP?", "0", False),
    (BenchSupply, "output_enabled", "OUTP?", "ON", True),
    (ThermalController, "set_point_c", "TEMP:SET?", "45.000", 45.0),
    (ThermalController, "temperature_c", "MEAS:TEMP?", "44.823", 44.823),
    (ThermalController, "output_enabled", "OUTP?", "1", True),
]

#: (driver, control, value set, command written)
SETS = [
    (BenchSupply, "voltage_set_v", 1.3, "VOLT 1.3000"),
    (BenchSupply, "voltage_set_v", np.float32(1.31), "VOLT 1.3100"),
    (BenchSupply, "current_limit_a", 1.5, "CURR 1.5000"),
    (BenchSupply, "current_limit_a", 1.23456, "CURR 1.2345"),  # rounded down: never above the value asked
    (BenchSupply, "output_enabled", False, "OUTP 0"),
    (BenchSupply, "output_enabled", np.bool_(True), "OUTP 1"),
    (BenchSupply, "output_enabled", 0, "OUTP 0"),
    (ThermalController, "set_point_c", 45, "TEMP:SET 45.000"),
    (ThermalController, "set_point_c", 20.0004, "TEMP:SET 20.000"),
    (ThermalController, "output_enabled", True, "OUTP 1"),
]


def opening(driver: type) -> list[Any]:
    return supply_open() if driver is BenchSupply else list(TEC_OPEN)


def build(driver: type, exchanges: list[Any]) -> Any:
    if driver is BenchSupply:
        return supply(exchanges)
    return expected_protocol(ThermalController, exchanges, THERMAL)


@pytest.mark.parametrize("driver, name, query, reply, expected", GETS, ids=lambda v: v if isinstance(v, str) else None)
def test_every_control_reads_with_its_query(driver: type, name: str, query: str, reply: str, expected: object) -> None:
    with build(driver, [*opening(driver), (query, reply)]) as inst:
        value = getattr(inst, name)
    assert value == pytest.approx(expected) and type(value) is type(expected)


@pytest.mark.parametrize("driver, name, value, command", SETS, ids=lambda v: v if isinstance(v, str) else None)
def test_every_settable_control_writes_its_command_and_checks_errors(
    driver: type, name: str, value: object, command: str
) -> None:
    with build(driver, [*opening(driver), *write(command)]) as inst:
        setattr(inst, name, value)


def test_the_wire_tables_cover_every_control() -> None:
    for driver in (BenchSupply, ThermalController):
        controls = driver.controls()
        assert {name for d, name, *_ in GETS if d is driver} == {n for n, c in controls.items() if c.get}
        assert {name for d, name, *_ in SETS if d is driver} == {n for n, c in controls.items() if c.set}
        for control in controls.values():
            assert "SCPI:" in control.__doc__ and control.get in control.__doc__


def test_read_only_controls_refuse_assignment_and_send_nothing() -> None:
    with supply(supply_open()) as psu:
        for name in ("measured_voltage_v", "measured_current_a", "current_limited"):
            with pytest.raises(AttributeError, match=f"BenchSupply.{name} is read-only"):
                setattr(psu, name, 1.0)
    with expected_protocol(ThermalController, TEC_OPEN, THERMAL) as tec:
        with pytest.raises(AttributeError, match="read-only"):
            tec.temperature_c = 30.0


# --------------------------------------------------------------------------- opening and closing


def test_supply_open_protocol() -> None:
    with supply(supply_open(outp="0")) as psu:
        assert psu.idn == PSU_IDN and psu._output_on is False and psu._last_v == 1.35


def test_supply_open_with_clear_errors_sends_cls() -> None:
    with supply([("*IDN?", PSU_IDN), *write("*CLS"), *supply_open()[2:]], clear_errors=True):
        pass


def test_supply_refused_at_open_stops_after_reading_the_set_point() -> None:
    with pytest.raises(SupplyLimitError, match=r"refusing to take over the supply: .* 1\.6 V outside"):
        with supply(supply_open(volt="1.600000")[:3]):
            pass


def test_supply_with_queued_errors_is_refused_at_open() -> None:
    with pytest.raises(InstrumentError, match=r'supply reported error -113,"Undefined header" at open'):
        with supply([("*IDN?", PSU_IDN), ("SYST:ERR?", '-113,"Undefined header"')]):
            pass


def test_supply_current_limit_at_open_follows_the_configured_limit() -> None:
    odd = dataclasses.replace(LIMITS, current_limit_a=0.29)
    with supply(supply_open(curr="CURR 0.2900"), odd):
        pass


def test_close_ramps_back_to_nominal_then_closes() -> None:
    ramp_back = [("VOLT?", "1.250000"), *write("VOLT 1.3000"), *write("VOLT 1.3500"), ("MEAS:VOLT?", "1.350000")]
    with supply([*supply_open(), ("VOLT?", "1.350000"), *write("VOLT 1.3000"), *write("VOLT 1.2500"),
                 ("MEAS:VOLT?", "1.250000"), *ramp_back]) as psu:
        assert psu.set_voltage(1.25) == pytest.approx(1.25)
        psu.close()
        assert psu.resource.closed
        psu.close()  # idempotent: nothing more on the wire


def test_thermal_open_close_and_wait_stable() -> None:
    fake = FakeTime()
    readings = [("TEMP:SET?", "45.000"), ("MEAS:TEMP?", "40.000"), ("MEAS:TEMP?", "44.800"), ("MEAS:TEMP?", "45.100")]
    with expected_protocol(ThermalController, [*TEC_OPEN, *readings], THERMAL, sleep=fake.sleep, clock=fake.clock) as tec:
        assert tec.wait_stable(band_c=0.5, hold_s=0.1, poll_s=0.1) == pytest.approx(45.1)
        tec.close()
        assert tec.resource.closed


# --------------------------------------------------------------------------- ramps and the VOLT guard


def test_set_voltage_ramps_in_steps_with_an_error_check_after_each() -> None:
    with supply([*supply_open(), ("VOLT?", "1.350000"), *write("VOLT 1.3000"), *write("VOLT 1.2500"),
                 *write("VOLT 1.2000"), ("MEAS:VOLT?", "1.150000"), ("MEAS:VOLT?", "1.199000")]) as psu:
        assert psu.set_voltage(1.2) == pytest.approx(1.199)


def test_set_voltage_with_the_output_off_does_not_wait_to_settle() -> None:
    with supply([*supply_open(outp="0"), ("VOLT?", "1.350000"), *write("VOLT 1.3200")]) as psu:
        assert psu.set_voltage(1.32) == pytest.approx(1.32)


def test_a_single_step_assignment_is_refused_beyond_max_step_without_sending() -> None:
    with supply([*supply_open(), *write("VOLT 1.3000")]) as psu:
        with pytest.raises(SupplyLimitError, match=r"^supply step 1\.35 -> 1\.25 V exceeds max_step_v 0\.05 V"):
            psu.voltage_set_v = 1.25
        psu.voltage_set_v = 1.3
        assert psu._last_v == 1.3


@pytest.mark.parametrize("bad_v", [0.99, 1.41, 1.0 - 1e-9, -1.0, *NOT_NUMBERS])
def test_voltage_refusals_send_nothing(bad_v: object) -> None:
    with supply(supply_open()) as psu:
        for action in (lambda: psu.set_voltage(bad_v), lambda: setattr(psu, "voltage_set_v", bad_v)):
            with pytest.raises(SupplyLimitError) as info:
                action()
            assert "\n" not in str(info.value)


def test_the_voltage_validator_reads_the_limits_at_set_time() -> None:
    with supply([*supply_open(), *write("VOLT 1.3200")]) as psu:
        psu.limits = dataclasses.replace(LIMITS, max_v=1.3, nominal_v=1.3)
        with pytest.raises(SupplyLimitError, match=r"1\.32 V outside the configured limits 1\.0\.\.1\.3 V"):
            psu.voltage_set_v = 1.32
        psu.limits = LIMITS
        psu.voltage_set_v = 1.32


def test_a_voltage_write_is_refused_while_the_set_point_is_unknown() -> None:
    timeout = pyvisa.errors.VisaIOError(pyvisa.constants.StatusCode.error_timeout)
    with supply([*supply_open(), ("VOLT 1.3000", timeout)]) as psu:
        with pytest.raises(InstrumentError, match="could not send 'VOLT 1.3000'"):
            psu.voltage_set_v = 1.3
        assert psu._last_v is None and not psu.in_sync
        with pytest.raises(SupplyLimitError, match="refusing to write VOLT before reading VOLT?"):
            psu.voltage_set_v = 1.3


def test_limit_off_the_write_grid_is_checked_on_the_value_sent() -> None:
    odd = SupplyLimits(nominal_v=1.35, min_v=1.00004, max_v=1.4, max_step_v=0.4, max_slew_v_per_s=1.0, current_limit_a=2.0)
    with supply(supply_open(), odd) as psu:
        with pytest.raises(SupplyLimitError, match=r"1\.0 V outside the configured limits 1\.00004\.\.1\.4 V"):
            psu.set_voltage(1.00004)
        with pytest.raises(SupplyLimitError):
            psu.voltage_set_v = 1.00004


@pytest.mark.parametrize("bad_a", [2.01, 0.0, -1.0, 0.00001, *NOT_NUMBERS])
def test_current_limit_refusals_send_nothing(bad_a: object) -> None:
    with supply(supply_open()) as psu:
        with pytest.raises(SupplyLimitError) as info:
            psu.current_limit_a = bad_a
        assert str(info.value).startswith("supply current_limit_a ")


@pytest.mark.parametrize("bad", ["on", "off", 2, -1, 0.5, None, float("nan")])
def test_output_refusals_send_nothing(bad: object) -> None:
    with supply(supply_open()) as psu:
        with pytest.raises(InstrumentValueError, match="^supply output_enabled must be True or False"):
            psu.output_enabled = bad
    with expected_protocol(ThermalController, TEC_OPEN, THERMAL) as tec:
        with pytest.raises(InstrumentValueError, match="^thermal controller output_enabled must be True or False"):
            tec.output_enabled = bad


@pytest.mark.parametrize("bad_c", [95.01, 19.9, 120, -300, *NOT_NUMBERS])
def test_thermal_set_point_refusals_send_nothing(bad_c: object) -> None:
    with expected_protocol(ThermalController, TEC_OPEN, THERMAL) as tec:
        with pytest.raises(ThermalLimitError):
            tec.set_point_c = bad_c


def test_thermal_set_point_off_the_write_grid_is_checked_on_the_value_sent() -> None:
    with expected_protocol(ThermalController, TEC_OPEN, ThermalLimits(min_c=20.0004, max_c=95.0)) as tec:
        with pytest.raises(ThermalLimitError, match=r"^temperature set point 20\.0 C outside the configured limits 20\.0004"):
            tec.set_point_c = 20.0004  # within the limits, but it would go out as 20.000


# --------------------------------------------------------------------------- errors, parsing, resynchronisation


def test_an_instrument_error_after_a_write_is_raised() -> None:
    with supply([*supply_open(), ("OUTP 0", None), ("SYST:ERR?", '-222,"Data out of range"')]) as psu:
        with pytest.raises(InstrumentError, match=r"^supply reported error -222,\"Data out of range\" after 'OUTP 0'$"):
            psu.output_enabled = False
        assert psu._output_on is None  # refused by the instrument: unknown, set_voltage asks OUTP? first


@pytest.mark.parametrize("reply", ["nan", "１.２", "1_0", "9.91E+37", '0,"No error"', ""])
def test_a_reply_that_does_not_parse_is_refused_and_resynchronises(reply: str) -> None:
    with supply([*supply_open(), ("MEAS:VOLT?", reply), *resync_exchanges(PSU_IDN), ("MEAS:VOLT?", "1.350000")]) as psu:
        with pytest.raises(InstrumentError, match=r"^supply MEAS:VOLT\?: "):
            _ = psu.measured_voltage_v
        assert not psu.in_sync
        assert psu.measured_voltage_v == 1.35
        assert psu.in_sync


def test_an_interrupted_query_resynchronises_before_the_next_exchange(caplog: pytest.LogCaptureFixture) -> None:
    with supply([*supply_open(), ("MEAS:CURR?", KeyboardInterrupt), *resync_exchanges(PSU_IDN),
                 ("VOLT?", "1.350000")]) as psu:
        with pytest.raises(KeyboardInterrupt):
            _ = psu.measured_current_a
        with caplog.at_level(logging.DEBUG, logger="softmc_host.instruments"):
            assert psu.voltage_set_v == 1.35
    assert any(r.levelno == logging.WARNING and "resynchronising" in r.getMessage() for r in caplog.records)
    assert any(r.levelno == logging.DEBUG and "'VOLT?' -> '1.350000'" in r.getMessage() for r in caplog.records)


def test_resync_retries_and_then_gives_up_without_writing() -> None:
    bad_round = [(DEVICE_CLEAR, None), ("*CLS", None), ("*IDN?", "SOMEONE,ELSE,1,1.0"), ("*OPC?", "1"),
                 ("SYST:ERR?", NO_ERROR)]
    with supply([*supply_open(), ("MEAS:CURR?", TimeoutError("timeout")), *bad_round * 3]) as psu:
        with pytest.raises(InstrumentError, match="no valid reply to 'MEAS:CURR\\?'"):
            _ = psu.measured_current_a
        with pytest.raises(InstrumentError, match=r"could not be resynchronised in 3 tries \(replies 'SOMEONE"):
            psu.output_enabled = False


# --------------------------------------------------------------------------- the helper itself


def test_a_wrong_command_fails_with_a_clear_message() -> None:
    with pytest.raises(ProtocolMismatch) as info:
        with supply([*supply_open(), ("VOLT?", "1.350000")]) as psu:
            _ = psu.measured_voltage_v
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("exchange 7: the driver queried 'MEAS:VOLT?', expected the query 'VOLT?' (reply '1.350000')")
    assert "after 6 matching exchanges" in text


def test_a_mismatch_the_driver_swallows_is_reported_when_the_block_ends() -> None:
    with pytest.raises(ProtocolMismatch, match="expected the write 'OUTP 0'"):
        with supply([*supply_open(), ("OUTP 0", None)]) as psu:
            with pytest.raises(InstrumentError):  # the driver wraps the failing query
                _ = psu.measured_voltage_v


def test_a_write_where_a_query_is_expected_is_a_mismatch() -> None:
    with pytest.raises(ProtocolMismatch, match=r"the driver wrote 'OUTP 0', expected the query 'OUTP 0' \(reply '1'\)"):
        with supply([*supply_open(), ("OUTP 0", "1")]) as psu:
            psu.output_enabled = False


def test_an_extra_exchange_fails() -> None:
    with pytest.raises(ProtocolMismatch, match=r"^exchange 7: the driver queried 'CURR\?', but the expected protocol ended "
                       r"\(6 exchanges; after 6 matching exchanges"):
        with supply(supply_open()) as psu:
            _ = psu.current_limit_a


def test_a_missing_exchange_fails() -> None:
    with pytest.raises(ProtocolMismatch, match=r"^the driver stopped after 6 of 8 expected exchanges; missing: "
                       r"the write 'OUTP 0', the query 'SYST:ERR\?' \(reply '0,\"No error\"'\)$"):
        with supply([*supply_open(), *write("OUTP 0")]):
            pass


def test_a_missing_exchange_is_not_hidden_by_an_expected_error() -> None:
    # the refusal at open is expected, but the protocol lists a CURR write that never came
    with pytest.raises(ProtocolMismatch, match=r"missing: the write 'CURR 2.0000'.*block ended with SupplyLimitError"):
        with pytest.raises(SupplyLimitError):
            with supply(supply_open(volt="1.600000")):
                pass


def test_a_failing_assertion_in_the_block_propagates_with_a_note() -> None:
    with pytest.raises(AssertionError, match="^the test's own") as info:
        with supply([*supply_open(), ("VOLT?", "1.35")]):
            raise AssertionError("the test's own")
    assert not isinstance(info.value, ProtocolMismatch)
    assert any("1 expected exchanges had not taken place" in note for note in info.value.__notes__)


def test_device_clear_and_exception_replies_are_matched() -> None:
    res = ProtocolResource([(DEVICE_CLEAR, None), ("X?", ValueError("boom")), ("Y", None)])
    res.clear()
    with pytest.raises(ValueError, match="boom"):
        res.query("X?")
    with pytest.raises(ProtocolMismatch, match="the driver sent a device clear, expected the write 'Y'"):
        res.clear()
    with pytest.raises(ProtocolMismatch, match="device clear"):  # stays failed
        res.write("Y")
    with pytest.raises(ProtocolMismatch):
        res.check_done()


@pytest.mark.parametrize(
    "exchanges, message",
    [([("VOLT?",)], "must be a .command, reply. pair"), ([(b"VOLT?", "1")], "command must be a string"),
     ([("VOLT?", 1.35)], "reply must be a string, None"), ([(DEVICE_CLEAR, "x")], "a device clear has no reply")],
)
def test_bad_exchange_lists_are_refused(exchanges: list, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        ProtocolResource(exchanges)


# --------------------------------------------------------------------------- Control: a new driver, declared


class Dmm(ScpiInstrument):
    """A made-up multimeter: what a new driver looks like."""

    kind = "multimeter"

    def __init__(self, resource: Any, limits: ThermalLimits) -> None:
        self.limits = limits
        super().__init__(resource)

    voltage_v = Control(get="MEAS:VOLT?", unit="V", doc="The measured voltage.")
    range_v = Control(get="VOLT:RANG?", set="VOLT:RANG {value:g}", unit="V", validator=number(0.1, 1000.0, unit="V"),
                      doc="The range.")
    probe_c = Control(set="PROBE:SET {value:.1f}", unit="C", validator=within_limits, doc="A write-only setting.")
    overload = Control(get="STAT:QUES:COND?", parse=register_bit(0x10), doc="Overload bit.")
    beep = Control(get="SYST:BEEP?", set="SYST:BEEP {value:d}", parse=lambda r, w: r == "1", validator=boolean)
    label = Control(set="DISP:TEXT '{value}'", validator=lambda inst, value, what: value)


DMM_OPEN = [("*IDN?", "ACME,DMM,1,1.0"), ("SYST:ERR?", NO_ERROR)]


def test_a_new_driver_declared_with_controls() -> None:
    exchanges = [*DMM_OPEN, ("MEAS:VOLT?", "1.5"), *write("VOLT:RANG 10"), ("VOLT:RANG?", "10"),
                 *write("PROBE:SET 40.0"), ("STAT:QUES:COND?", "16"), *write("SYST:BEEP 1"), ("SYST:BEEP?", "1"),
                 *write("DISP:TEXT 'hello'")]
    with expected_protocol(Dmm, exchanges, ThermalLimits(0.0, 50.0)) as dmm:
        assert dmm.voltage_v == 1.5
        dmm.range_v = 10
        assert dmm.range_v == 10.0
        dmm.probe_c = 40
        assert dmm.overload is True
        dmm.beep = True
        assert dmm.beep is True
        dmm.label = "hello"
        with pytest.raises(InstrumentValueError, match=r"^multimeter range_v must be >= 0.1 and <= 1000 V, got 5000$"):
            dmm.range_v = 5000
        with pytest.raises(ThermalLimitError):
            dmm.probe_c = 60.0  # within_limits asks dmm.limits
        with pytest.raises(AttributeError, match="Dmm.probe_c is write-only"):
            _ = dmm.probe_c
        for bad in ("x\nVOLT 99", "a;VOLT 99", "é"):  # a value must not smuggle in a second command
            with pytest.raises(InstrumentValueError, match="^multimeter label: refusing to send"):
                dmm.label = bad
    assert list(Dmm.controls()) == ["voltage_v", "range_v", "probe_c", "overload", "beep", "label"]
    assert isinstance(Dmm.voltage_v, Control) and "MEAS:VOLT?" in Dmm.voltage_v.__doc__


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "needs a get query, a set command or both"),
        ({"set": "VOLT {value}"}, "needs a validator"),
        ({"set": "VOLT {}", "validator": boolean}, "exactly one field"),
        ({"set": "VOLT {value} {x}", "validator": boolean}, "exactly one field"),
        ({"set": "VOLT {value", "validator": boolean}, "not a format string"),
        ({"get": "VOLT?\n"}, "printable ASCII"),
        ({"get": "ＶOLT?"}, "printable ASCII"),
        ({"get": "VOLT?", "parse": "float"}, "must be callables"),
    ],
)
def test_bad_control_declarations_fail_at_class_definition(kwargs: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Control(**kwargs)


def test_validator_and_parser_factories_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="lo 2 must not exceed hi 1"):
        number(2.0, 1.0)
    with pytest.raises(ValueError, match="must be a finite number"):
        number(float("nan"), 1.0)
    for bad in (0, 0x10000, True, 1.5):
        with pytest.raises(ValueError, match="mask must be an integer"):
            register_bit(bad)  # type: ignore[arg-type]
    with pytest.raises(InstrumentError, match="expected a register value"):
        register_bit(1)("70000", "STAT?")


def test_a_new_driver_opens_by_visa_name_through_the_base_class(tmp_path: Any) -> None:
    import shutil
    from pathlib import Path

    spec = tmp_path / "bench.yaml"
    shutil.copy(Path(__file__).parent / "sim" / "bench.yaml", spec)

    class PlainSupply(ScpiInstrument):
        kind = "plain supply"
        volt = Control(get="VOLT?", unit="V", doc="Set point.")

    with PlainSupply.open("TCPIP::psu.sim::5025::SOCKET", rm_spec=f"{spec}@sim", timeout_ms=100) as psu:
        assert psu.idn == "EDEN-EMU,BENCH-PSU,SIM-0001,1.0"
        assert psu.volt == pytest.approx(1.35)
    with pytest.raises(InstrumentError, match="plain supply is closed"):
        _ = psu.volt
    with pytest.raises(InstrumentValueError, match="^timeout_ms must be"):
        PlainSupply.open("TCPIP::psu.sim::5025::SOCKET", rm_spec=f"{spec}@sim", timeout_ms=float("nan"))

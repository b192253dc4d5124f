"""Ctrl-C inside any query of a supply ramp leaves the supply at nominal (issue #12, item 5).

The emulated supply is served over TCP and reached through the real pyvisa-py path, as in
``tests/test_instruments.py``. ``KeyboardInterrupt`` is raised inside the blocking read of
one query, after the query has been sent: the instrument's reply then arrives with nobody
reading it, exactly what Ctrl-C does to a sweep waiting for an instrument.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
import pyvisa

from emubench.instruments import EmulatedSupply, EmulatedThermal, ScpiServer
from softmc_host.instruments import BenchSupply, InstrumentError, SupplyLimits, ThermalController, ThermalLimits

FAST = SupplyLimits(nominal_v=1.35, min_v=1.0, max_v=1.5, max_step_v=0.05, max_slew_v_per_s=50.0, current_limit_a=2.0)
RAMP_TARGET_V = 1.0  # 1.35 -> 1.0 V: VOLT?, 7 x (VOLT + SYST:ERR?), MEAS:VOLT?


class LoggingSupply(EmulatedSupply):
    """The emulated supply, recording every set point it takes and able to answer one query late."""

    def __init__(self) -> None:
        super().__init__(nominal_v=1.35, serial="INT-1")
        self.set_points: list[float] = []
        self.slow_query: str | None = None
        self.slow_s = 0.0

    def execute(self, command: str) -> str | None:
        if self.slow_query is not None and command.strip() == self.slow_query:
            self.slow_query = None
            time.sleep(self.slow_s)
        reply = super().execute(command)
        if self.set_points[-1:] != [self.voltage_set_v]:
            self.set_points.append(self.voltage_set_v)
        return reply


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[LoggingSupply, str]]:
    supply = LoggingSupply()
    with ScpiServer(supply) as server:
        yield supply, f"TCPIP::127.0.0.1::{server.port}::SOCKET"


class Interrupt:
    """Make the ``n``-th reply read through ``resource`` raise ``KeyboardInterrupt`` (n counts from 1).

    ``mode`` is ``"unread"`` (nothing of the reply read) or ``"half-read"`` (its first
    byte read, the rest left pending). ``n = 0`` only counts.
    """

    def __init__(self, resource: Any, n: int, mode: str = "unread") -> None:
        self.resource = resource
        self.n = n
        self.mode = mode
        self.reads = 0
        self.raised: KeyboardInterrupt | None = None
        self._read = resource.read
        resource.read = self.read  # pyvisa's query() is write() then self.read()

    def read(self, *args: Any, **kwargs: Any) -> str:
        self.reads += 1
        if self.reads == self.n:
            if self.mode == "half-read":
                self.resource.read_bytes(1)
            self.raised = KeyboardInterrupt(f"Ctrl-C in read {self.n}")
            raise self.raised
        return self._read(*args, **kwargs)


def ramp_queries(name: str) -> int:
    with BenchSupply.open(name, FAST) as psu:
        counter = Interrupt(psu.resource, 0)
        psu.set_voltage(RAMP_TARGET_V)
        return counter.reads


def assert_steps_within_limits(set_points: list[float]) -> None:
    for before, after in zip(set_points, set_points[1:]):
        assert abs(after - before) <= FAST.max_step_v + 1e-9, set_points
        assert FAST.min_v <= after <= FAST.max_v, set_points


@pytest.mark.parametrize("mode", ["unread", "half-read"])
def test_interrupt_inside_every_query_of_a_ramp_restores_nominal(served: tuple[LoggingSupply, str], mode: str) -> None:
    emu, name = served
    n_queries = ramp_queries(name)
    assert n_queries >= 9  # VOLT?, one SYST:ERR? per step, at least one MEAS:VOLT?
    assert emu.voltage_set_v == pytest.approx(FAST.nominal_v)
    for n in range(1, n_queries + 1):
        emu.set_points = [emu.voltage_set_v]
        with pytest.raises(KeyboardInterrupt) as info:
            with BenchSupply.open(name, FAST) as psu:
                interrupt = Interrupt(psu.resource, n, mode)
                psu.set_voltage(RAMP_TARGET_V)
        assert info.value is interrupt.raised, f"query {n}: the original KeyboardInterrupt must propagate"
        assert not getattr(info.value, "__notes__", None), f"query {n}: restore failed: {info.value.__notes__}"
        assert emu.voltage_set_v == pytest.approx(FAST.nominal_v), f"query {n} ({mode}): supply left off nominal"
        assert emu.pending_errors() == []
        assert_steps_within_limits(emu.set_points)


def test_interrupt_then_explicit_close_restores_nominal(served: tuple[LoggingSupply, str]) -> None:
    emu, name = served
    psu = BenchSupply.open(name, FAST)
    Interrupt(psu.resource, 3)  # the SYST:ERR? after the second step
    with pytest.raises(KeyboardInterrupt):
        psu.set_voltage(RAMP_TARGET_V)
    assert not psu.in_sync
    assert emu.voltage_set_v <= 1.30 + 1e-9  # 1.30 confirmed; VOLT 1.25 sent, perhaps not yet taken
    psu.close()
    assert emu.voltage_set_v == pytest.approx(FAST.nominal_v)


def test_replies_are_not_shifted_after_an_interrupted_query(served: tuple[LoggingSupply, str]) -> None:
    emu, name = served
    with BenchSupply.open(name, FAST) as psu:
        psu.set_voltage(1.2)
        Interrupt(psu.resource, 1)
        with pytest.raises(KeyboardInterrupt):
            _ = psu.measured_current_a
        # without resynchronisation this VOLT? would read the MEAS:CURR? reply
        assert psu.voltage_set_v == pytest.approx(1.2)
        assert psu.output_enabled is True
        assert psu.current_limit_a == pytest.approx(2.0)
        assert psu.in_sync


def test_a_late_reply_after_a_timeout_is_discarded(served: tuple[LoggingSupply, str]) -> None:
    emu, name = served
    with BenchSupply.open(name, FAST, timeout_ms=100) as psu:
        psu.set_voltage(1.25)
        emu.slow_query, emu.slow_s = "CURR?", 0.3  # answered 0.2 s after the driver gave up
        with pytest.raises(InstrumentError, match=r"no valid reply to 'CURR\?'"):
            _ = psu.current_limit_a
        assert psu.voltage_set_v == pytest.approx(1.25)
        assert psu.measured_voltage_v == pytest.approx(1.25)
    assert emu.voltage_set_v == pytest.approx(FAST.nominal_v)


def test_restore_fails_cleanly_when_the_supply_stops_answering(served: tuple[LoggingSupply, str]) -> None:
    emu, name = served
    psu = BenchSupply.open(name, FAST, timeout_ms=100)
    psu.set_voltage(1.3)
    Interrupt(psu.resource, 1)
    with pytest.raises(KeyboardInterrupt):
        _ = psu.measured_voltage_v
    # from now on every reply is lost: the driver must say so instead of trusting stale input
    psu.resource.read = lambda *a, **k: (_ for _ in ()).throw(
        pyvisa.errors.VisaIOError(pyvisa.constants.StatusCode.error_timeout)
    )
    with pytest.raises(InstrumentError, match="could not be resynchronised in 3 tries") as info:
        psu.close()
    assert "\n" not in str(info.value)
    emu.handle_line("VOLT 1.35")  # put the shared emulated supply back for the other tests


def test_thermal_controller_resynchronises_after_an_interrupt() -> None:
    emu = EmulatedThermal(initial_c=30.0, seed=1, tau_s=0.05, noise_c=0.0)
    with ScpiServer(emu) as server:
        with ThermalController.open(f"TCPIP::127.0.0.1::{server.port}::SOCKET", ThermalLimits(0.0, 95.0)) as tec:
            tec.set_point_c = 40.0
            Interrupt(tec.resource, 1, "half-read")
            with pytest.raises(KeyboardInterrupt):
                _ = tec.output_enabled
            assert tec.set_point_c == pytest.approx(40.0)
            tec.set_point_c = 41.0
            assert tec.set_point_c == pytest.approx(41.0)
            assert emu.set_point_c == pytest.approx(41.0)


def test_query_reads_through_the_patched_read() -> None:
    # the interrupts above are raised in read(): that is where Ctrl-C lands while a query
    # waits for its reply, and pyvisa's query() calls self.read(), so an instance attribute
    # replaces it (if pyvisa stopped doing so, the tests above would interrupt nothing)
    supply = EmulatedSupply(nominal_v=1.35)
    with ScpiServer(supply) as server:
        rm = pyvisa.ResourceManager("@py")
        res = rm.open_resource(f"TCPIP::127.0.0.1::{server.port}::SOCKET", read_termination="\n",
                               write_termination="\n", timeout=500)
        try:
            interrupt = Interrupt(res, 1)
            with pytest.raises(KeyboardInterrupt):
                res.query("VOLT?")
            assert interrupt.reads == 1
            assert res.read() == "1.350000"  # the reply nobody read, still pending
        finally:
            res.close()

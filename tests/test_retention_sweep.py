"""Retention and refresh as a sweep setting (issue #14): firmware clock and refresh calls, the
session's hold and SET_TREFI, the ``trefi_ms`` setting in plans, maps, resume and dry runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emubench.dimm import EmulatedDimm
from emubench.firmware import INTER_PROGRAM_GAP_CYCLES, ExecutionError, TesterFirmware
from firmware_bridge.link import LinkError
from firmware_bridge.protocol import MsgType, decode_program, encode_json, encode_result
from profiler.engine import SweepPlan, run_sweep, sweep_metadata
from profiler.plan import PlanError, Point, SweepConfig, build_plan, identity, load_config
from profiler.reference import at_reference_refresh
from profiler.storage import BerMap, MapWriter
from profiler.sweep import main as sweep_main
from softmc_host import isa
from softmc_host.program import MAX_TREFI_NS, Program, ProgramError, hold_programs
from softmc_host.session import TesterSession


class RecordingDimm(EmulatedDimm):
    """A fault-free DIMM that records every call into it with the clock it saw."""

    def __init__(self) -> None:
        super().__init__(seed=3)
        self.calls: list[tuple[str, float, Any]] = []

    def activate(self, bank, row, trp_cycles):
        self.calls.append(("activate", self.now_ns, (bank, row)))
        return super().activate(bank, row, trp_cycles)

    def read_burst(self, access, column, trcd_cycles):
        self.calls.append(("read", self.now_ns, column))
        return super().read_burst(access, column, trcd_cycles)

    def write_burst(self, access, column, burst, trcd_cycles):
        self.calls.append(("write", self.now_ns, column))
        super().write_burst(access, column, burst, trcd_cycles)

    def precharge(self, access, tras_cycles):
        self.calls.append(("precharge", self.now_ns, tras_cycles))
        super().precharge(access, tras_cycles)

    def refresh(self, now_ns):
        self.calls.append(("refresh", now_ns, None))
        super().refresh(now_ns)

    def set_auto_refresh(self, now_ns, trefi_ns):
        self.calls.append(("auto", now_ns, trefi_ns))
        super().set_auto_refresh(now_ns, trefi_ns)


@dataclass
class _Reply:
    payload: bytes


class FirmwareLink:
    """A link answered in-process by a :class:`TesterFirmware` (counts the programs it runs)."""

    name = "firmware-in-process"
    timeout_s = 5.0

    def __init__(self, firmware: TesterFirmware, fail_on_read_program: int | None = None) -> None:
        self.firmware = firmware
        self.programs: list[list[int]] = []
        self.fail_on_read_program = fail_on_read_program
        self.read_programs = 0

    def request(self, kind: MsgType, payload: bytes = b"", timeout_s: float | None = None) -> _Reply:
        if kind == MsgType.HELLO:
            return _Reply(encode_json(self.firmware.info()))
        if kind == MsgType.STATUS:
            return _Reply(encode_json(self.firmware.status()))
        if kind == MsgType.PROGRAM:
            words, blocks = decode_program(payload)
            self.programs.append(words)
            if any(isinstance(isa.decode(w), isa.Rd) for w in words):
                self.read_programs += 1
                if self.read_programs == self.fail_on_read_program:
                    raise LinkError("link lost (test)")
            return _Reply(encode_result(self.firmware.run(words, blocks)))
        raise AssertionError(f"unexpected request {kind}")

    def reset(self) -> None:
        self.firmware.reset()

    def close(self) -> None:
        pass


def session(dimm: EmulatedDimm | None = None, **link_options: Any) -> tuple[TesterSession, FirmwareLink]:
    link = FirmwareLink(TesterFirmware(dimm if dimm is not None else EmulatedDimm(seed=1)), **link_options)
    return TesterSession(link), link  # type: ignore[arg-type]


# Firmware ------------------------------------------------------------------------------------


def test_firmware_sets_the_clock_before_every_call_and_passes_refresh() -> None:
    dimm = RecordingDimm()
    firmware = TesterFirmware(dimm)
    tck = firmware.tck_ns
    program = Program().add(isa.SetTrefi(39), isa.Act(2, 7)).wait(10)
    program.add(isa.SetBusDir(isa.BusDirection.WRITE), isa.Wr(2, 0, 0xAA)).wait(30)
    program.add(isa.Pre(2)).wait(20).add(isa.Ref()).wait(1000)
    program.add(isa.SetBusDir(isa.BusDirection.READ), isa.Act(2, 7)).wait(10).add(isa.Rd(2, 0), isa.PreAll())
    firmware.run(program.end().words)
    start = INTER_PROGRAM_GAP_CYCLES
    names = [c[0] for c in dimm.calls]
    assert names == ["auto", "activate", "write", "precharge", "refresh", "activate", "read", "precharge"]
    auto, act, write, pre, ref, act2, read, pre2 = dimm.calls
    assert auto == ("auto", start * tck, 39 * 200.0)  # SET_TREFI ticks of 200 ns
    assert act[1] == (start + 1) * tck and write[1] == (start + 1 + 10 + 1 + 1) * tck
    assert pre[1] == (start + 1 + 10 + 1 + 1 + 30 + 1) * tck
    assert ref[1] == pre[1] + 21 * tck
    assert act2[1] == ref[1] + 1002 * tck and read[1] == act2[1] + 11 * tck and pre2[1] == read[1] + tck
    # Time passes between programs (the fixed gap) and in WAITs only: a WAIT-only program calls nothing.
    before = len(dimm.calls)
    firmware.run(Program().wait(5000).end().words)
    assert len(dimm.calls) == before
    firmware.run(Program().add(isa.Act(0, 1), isa.Pre(0)).end().words)
    assert dimm.calls[-2][1] == pytest.approx(firmware.cycle * tck - 2 * tck)
    firmware.reset()  # auto-refresh off, at the clock of the reset
    assert dimm.calls[-1] == ("auto", firmware.cycle * tck, 0.0)


def test_firmware_skips_refresh_calls_on_dimms_without_them() -> None:
    class OldDimm:
        """A DIMM class from before refresh existed (duck-typed, only what the firmware calls)."""

        def __init__(self) -> None:
            self.inner = EmulatedDimm(seed=1)
            self.geometry, self.seed = self.inner.geometry, 1

        def __getattr__(self, name: str) -> Any:
            if name in ("refresh", "set_auto_refresh"):
                raise AttributeError(name)
            return getattr(self.inner, name)

    firmware = TesterFirmware(OldDimm())  # type: ignore[arg-type]
    firmware.run(Program().add(isa.SetTrefi(39), isa.Ref()).end().words)
    firmware.reset()
    assert firmware.trefi == 0 and firmware.last_trace.refreshes == 1


# Session: SET_TREFI and hold -----------------------------------------------------------------


def test_set_refresh_interval_sends_one_set_trefi_and_checks_the_field() -> None:
    dimm = RecordingDimm()
    tester, link = session(dimm)
    assert tester.set_refresh_interval(7812.5) == 7800.0  # rounded to 39 ticks
    assert [isa.decode(w) for w in link.programs[-1]] == [isa.SetTrefi(39), isa.End()]
    assert link.firmware.trefi == 39 and tester.refresh_interval_ns == 7800.0
    assert dimm.calls[-1][0] == "auto" and dimm.calls[-1][2] == 7800.0
    assert tester.set_refresh_interval(None) is None and link.firmware.trefi == 0
    assert tester.set_refresh_interval(0) is None and tester.refresh_interval_ns is None
    sent = len(link.programs)
    for bad, fragment in ((MAX_TREFI_NS + 200.0, "exceeds the SET_TREFI field"), (50.0, "below one SET_TREFI tick"),
                          (-5.0, "non-negative"), (math.nan, "finite"), ("7800", "number of ns")):
        with pytest.raises(ValueError, match=fragment) as info:
            tester.set_refresh_interval(bad)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)
    assert len(link.programs) == sent  # nothing sent for a refused value
    assert tester.set_refresh_interval(MAX_TREFI_NS) == MAX_TREFI_NS
    tester.reset()
    assert tester.refresh_interval_ns is None and link.firmware.trefi == 0


def test_hold_sends_wait_programs_totalling_the_duration() -> None:
    tester, link = session()
    tck = tester.tck_ns
    start = link.firmware.cycle
    held = tester.hold(50e6)  # 50 ms: three programs on SoftMC's 8192 slots
    cycles = math.ceil(50e6 / tck)
    assert held == pytest.approx(cycles * tck) and held >= 50e6
    assert len(link.programs) == 3
    for words in link.programs:
        program = [isa.decode(w) for w in words]
        assert len(words) <= 8192 and isinstance(program[-1], isa.End)
        assert all(isinstance(ins, isa.Wait) and 1 <= ins.cycles <= 1023 for ins in program[:-1])
    waited = sum(ins.cycles for words in link.programs for ins in map(isa.decode, words) if isinstance(ins, isa.Wait))
    assert waited == cycles
    # The firmware's clock moved by the WAITs and the gaps between programs (END takes no cycle).
    assert link.firmware.cycle - start == cycles + 3 * INTER_PROGRAM_GAP_CYCLES
    assert tester.hold(0) == 0.0 and len(link.programs) == 3
    assert tester.hold(1.0) == pytest.approx(tck)  # rounded up to one cycle
    for bad in (-1.0, math.inf, "5"):
        with pytest.raises(ValueError):
            tester.hold(bad)  # type: ignore[arg-type]


def test_hold_programs_fit_smaller_testers() -> None:
    programs = list(hold_programs(10_000, max_length=4))
    assert all(len(p) <= 4 for p in programs)
    assert sum(i.cycles for p in programs for i in p.instructions if isinstance(i, isa.Wait)) == 10_000
    with pytest.raises(ProgramError):
        list(hold_programs(-1))


# Plans, keys and identities ------------------------------------------------------------------


def test_a_plan_without_trefi_is_unchanged() -> None:
    assert Point(None, 1.35, 13.75, 13.75, 35.0, "all-1", 0).key == "Tna_V1.3500_RCD13.75_RP13.75_RAS35_all-1_r0"
    assert "trefi_ms" not in Point(None, 1.35, 13.75, 13.75, 35.0, "all-1", 0).as_dict()
    config = SweepConfig(vdd_v=[1.35, 1.2])
    assert "trefi_ms" not in identity(config) and "trefi_ms" not in config.as_dict()
    assert sorted(identity(config)) == sorted(
        ["bench", "vdd_v", "trcd_ns", "trp_ns", "tras_ns", "temp_c", "banks", "rows", "patterns", "reps", "seed",
         "pattern_definitions"]
    )
    assert [p.key for p in build_plan(config)][:2] == ["Tna_V1.3500_RCD13.75_RP13.75_RAS35_all-1_r0",
                                                       "Tna_V1.3500_RCD13.75_RP13.75_RAS35_all-0_r0"]


def test_trefi_points_keys_and_identity(tmp_path: Path) -> None:
    config = SweepConfig(trefi_ms=[64.0, 512.0], patterns=["all-1"])
    plan = build_plan(config)
    assert [p.key for p in plan] == ["Tna_Vna_RCD13.75_RP13.75_RAS35_REF64_all-1_r0",
                                     "Tna_Vna_RCD13.75_RP13.75_RAS35_REF512_all-1_r0"]
    assert plan[1].as_dict()["trefi_ms"] == 512.0 and identity(config)["trefi_ms"] == [64.0, 512.0]
    path = tmp_path / "s.toml"
    path.write_text('[sweep]\ntrefi_ms = "64,1024"\n')
    assert load_config(path).trefi_ms == [64.0, 1024.0]
    path.write_text("trefi_ms = [4]\n")
    with pytest.raises(PlanError, match=r"trefi_ms 4.0 outside \[8, 16384\] ms"):
        load_config(path)
    with pytest.raises(PlanError, match="trefi_ms"):
        build_plan(SweepConfig(trefi_ms=[20000.0]))


def test_cli_dry_run_shows_the_refresh_and_refuses_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep_main(["--trefi-ms", "64,2048", "--rows", "0:4", "--patterns", "all-1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "refresh  : 64, 2048 ms" in out and "REF2048" in out and "points   : 2" in out
    assert "holds    : 0m04s" in out  # 2 x (64 + 2048) ms
    assert sweep_main(["--rows", "0:4", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "refresh" not in out and "REF" not in out
    assert sweep_main(["--trefi-ms", "1", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "trefi_ms 1.0 outside [8, 16384] ms" in err and len(err.strip().splitlines()) == 1
    assert sweep_main(["--trefi-ms", "64,x", "--dry-run"]) == 2
    assert "--trefi-ms" in capsys.readouterr().err


# Sweeps --------------------------------------------------------------------------------------


class FakeBench:
    """What :func:`run_sweep` needs of a bench: a tester, no supply, no thermal controller."""

    supply = None
    thermal = None

    def __init__(self, tester: TesterSession) -> None:
        self.tester = tester

    def describe(self) -> dict[str, Any]:
        return {"tester": "in-process firmware"}


def _plan(tmp_path: Path, **changes: Any) -> SweepPlan:
    values: dict[str, Any] = dict(banks="1", rows="0:4", patterns=["all-1"], trefi_ms=[64.0, 128.0],
                                  out=str(tmp_path / "r.h5"))
    values.update(changes)
    return SweepPlan.from_config(SweepConfig(**values))


def test_sweep_holds_writes_the_setting_and_resumes(tmp_path: Path) -> None:
    tester, link = session()
    tester.set_refresh_interval(3800.0)  # the bench's own refresh setting, put back after every point
    bench = FakeBench(tester)
    plan = _plan(tmp_path)
    path = tmp_path / "r.h5"
    writer = MapWriter(path, sweep_metadata(plan, bench), plan.identity)  # type: ignore[arg-type]
    done = writer.open()
    asked = iter([False, True])
    summary = run_sweep(plan, bench, [writer], skip=done, stop_requested=lambda: next(asked))  # type: ignore[arg-type]
    assert summary.exit_status == "interrupted" and summary.measured == 1
    assert link.firmware.trefi == 19  # 3800 ns again
    first_cycle = link.firmware.cycle
    assert first_cycle * tester.tck_ns >= 2 * 64e6  # the hold of 2 x 64 ms passed on the tester
    writer = MapWriter(path, sweep_metadata(plan, bench), plan.identity)  # type: ignore[arg-type]
    done = writer.open()
    assert done == {plan.points[0].key}
    summary = run_sweep(plan, bench, [writer], skip=done)  # type: ignore[arg-type]
    assert summary.complete and summary.measured == 1 and summary.skipped == 1
    assert (link.firmware.cycle - first_cycle) * tester.tck_ns >= 2 * 128e6
    ber_map = BerMap(path)
    rows = ber_map.summary()
    assert [r["key"] for r in rows] == [p.key for p in plan.points]
    assert [r["trefi_ms"] for r in rows] == [64.0, 128.0]
    assert rows[0]["effective_trefi_ms"] == pytest.approx(39 * 200 * 8192 / 1e6)
    assert rows[1]["hold_ms"] >= 256.0 and rows[0]["ber"] == 0.0
    assert ber_map.meta["units"]["trefi_ms"] == "ms" and ber_map.meta["identity"]["trefi_ms"] == [64.0, 128.0]
    assert [r["trefi_ms"] for r in at_reference_refresh(rows)] == [64.0]  # what fitting uses
    assert link.firmware.trefi == 19


def test_refresh_is_restored_when_a_point_fails(tmp_path: Path) -> None:
    tester, link = session(fail_on_read_program=1)
    bench = FakeBench(tester)
    with pytest.raises(LinkError):
        run_sweep(_plan(tmp_path), bench, [])  # type: ignore[arg-type]
    assert link.firmware.trefi == 0 and tester.refresh_interval_ns is None  # off, as the tester had it
    assert [isa.decode(w) for w in link.programs[-1]] == [isa.SetTrefi(0), isa.End()]


def test_a_sweep_without_trefi_sends_no_refresh_or_hold(tmp_path: Path) -> None:
    tester, link = session()
    summary = run_sweep(_plan(tmp_path, trefi_ms=None), FakeBench(tester), [])  # type: ignore[arg-type]
    assert summary.complete
    decoded = [isa.decode(w) for words in link.programs for w in words]
    assert not any(isinstance(ins, isa.SetTrefi) for ins in decoded)
    assert link.firmware.cycle * tester.tck_ns < 1e6  # no hold: well under a millisecond


def test_trefi_setting_with_rows_open_is_still_checked() -> None:
    firmware = TesterFirmware(RecordingDimm())
    with pytest.raises(ExecutionError):
        firmware.run(Program().add(isa.Act(0, 1), isa.Ref()).end().words)  # REF with a row open


# End to end on the emulated DIMM's retention physics -------------------------------------------


def test_long_refresh_intervals_show_retention_errors(tmp_path: Path) -> None:
    from profiler.run import sweep_to_map

    config = SweepConfig(bench="emu://B?seed=1&temp_c=70", banks="0", rows="1:257", patterns=["all-1", "all-0"],
                         trefi_ms=[64.0, 4096.0], out=str(tmp_path / "ret.h5"))
    path = sweep_to_map(config, progress=False)
    rows = BerMap(path).summary()
    by_refresh: dict[float, int] = {}
    for row in rows:
        by_refresh[row["trefi_ms"]] = by_refresh.get(row["trefi_ms"], 0) + row["flips_0to1"] + row["flips_1to0"]
    assert by_refresh[64.0] == 0
    assert by_refresh[4096.0] > 0
    again = sweep_to_map(config, progress=False)  # complete: resumes with nothing to measure
    assert np.array_equal([r["flips_1to0"] for r in BerMap(again).summary()], [r["flips_1to0"] for r in rows])

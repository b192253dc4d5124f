"""The whole EDEN flow on the emulated bench, small: stages, resume, report tracing, energy model.

The flow runs once per module (``flow_run``) with the ``main()`` of every module of the other
packages replaced by a recorder: a stage that drives another command through its ``main``
instead of its library function fails :func:`test_no_stage_calls_another_commands_main`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import pkgutil
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from pipeline import stages as st
from pipeline.__main__ import _parser, main, options_from_args
from pipeline.energy import DdrTiming, Tensor, energy_report, latency_ns, stream_of
from pipeline.flow import STAGES, FlowError, FlowOptions, run_flow
from pipeline.records import json_schemas
from pipeline.report import check_report, lookup
from softmc_host.cli import parse_args

ROOT = Path(__file__).resolve().parents[1]

#: The packages whose commands the pipeline must reach through library functions only.
COMMAND_PACKAGES = ("firmware_bridge", "softmc_host", "profiler", "errormodels", "boosting", "emubench")


def _small(out: Path, **kw: Any) -> FlowOptions:
    base: dict[str, Any] = dict(out=str(out), vdd="1.35,1.1,1.05,1.025,1.0", epochs=2, boost_epochs=1, seeds=(0, 1),
                                curve_seeds=4, holdout_seeds=2, hil_repeats=2, batch_size=12, workers=0, progress=False)
    base.update(kw)
    return FlowOptions(**base)


class _Lines(logging.Handler):
    """Collects the formatted messages of the ``pipeline`` loggers."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _captured() -> Iterator[list[str]]:
    handler = _Lines()
    log = logging.getLogger("pipeline")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _command_modules() -> list[Any]:
    """Every importable module of :data:`COMMAND_PACKAGES` that has a ``main`` (optional modules that
    fail to import are skipped; ``__main__`` shims run their command on import and are skipped)."""
    found = []
    for name in COMMAND_PACKAGES:
        package = importlib.import_module(name)
        modules = [package]
        for info in pkgutil.walk_packages(package.__path__, name + ".", onerror=lambda _n: None):
            if info.name.endswith(".__main__") and not _guarded(info):
                continue
            try:
                modules.append(importlib.import_module(info.name))
            except Exception:  # an optional dependency missing: nothing there to call
                continue
        found += [m for m in modules if callable(getattr(m, "main", None))]
    return found


def _guarded(info: pkgutil.ModuleInfo) -> bool:
    """Whether a ``__main__`` module runs its command only under ``if __name__ == "__main__"``."""
    spec = info.module_finder.find_spec(info.name.rsplit(".", 1)[1], None)  # type: ignore[call-arg]
    origin = getattr(spec, "origin", None)
    try:
        return origin is not None and "if __name__ ==" in Path(origin).read_text(encoding="utf-8")
    except OSError:
        return False


#: Commands whose work the stages do through library functions (the guard must cover them).
REPLACED_COMMANDS = {"profiler.sweep", "profiler.plot", "errormodels.fit", "boosting.train", "boosting.characterize"}


class _MainCalled(Exception):
    pass


@contextlib.contextmanager
def _mains_guarded() -> Iterator[list[str]]:
    """Replace the ``main`` of every command module (and any reference a pipeline module holds to
    one) with a recorder that raises; yield the list of the commands called."""
    called: list[str] = []
    modules = _command_modules()
    names = {m.__name__ for m in modules}
    # the guard really covers the commands the stages once drove through their main()
    assert REPLACED_COMMANDS <= names and any(n.startswith("boosting.map") for n in names), sorted(names)
    originals = {id(m.main): m.__name__ for m in modules}

    def recorder(module_name: str) -> Any:
        def fake_main(*_args: Any, **_kwargs: Any) -> int:
            called.append(module_name)
            raise _MainCalled(f"a stage called {module_name}.main()")
        return fake_main

    with pytest.MonkeyPatch.context() as mp:
        for m in modules:
            mp.setattr(m, "main", recorder(m.__name__))
        import pipeline

        for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
            if info.name.endswith(".__main__"):
                continue
            pm = importlib.import_module(info.name)
            for attr, value in list(vars(pm).items()):
                if id(value) in originals:
                    mp.setattr(pm, attr, recorder(originals[id(value)]))
        yield called


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory) -> tuple[Path, list[str], list[str], bool]:
    out = tmp_path_factory.mktemp("eden")
    completed = False
    with _mains_guarded() as called, _captured() as lines:
        try:
            run_flow(_small(out))
            completed = True
        except _MainCalled:
            pass
    return out, lines, called, completed


def test_no_stage_calls_another_commands_main(flow_run) -> None:
    _out, _lines, called, completed = flow_run
    assert called == [], f"stages called {called}: call the library functions instead"
    assert completed


def test_every_stage_writes_its_outputs(flow_run) -> None:
    out, lines, _, _ = flow_run
    record = json.loads((out / "stages.json").read_text())["stages"]
    assert list(record) == list(STAGES)
    for stage, entry in record.items():
        assert entry["outputs"] and all((out / p).exists() for p in entry["outputs"]), stage
        # each file a stage wrote is one its table entry declares
        assert all(STAGES[stage].writes(p) for p in entry["outputs"]), (stage, entry["outputs"])
    config = json.loads((out / "dram-config.json").read_text())
    assert config["format"] == "eden-dram-config" and config["mode"] == "power"
    assert config["partitions"][0]["vdd_v"] < config["nominal"]["vdd_v"]
    text = "\n".join(lines)
    assert "[profile] running" in text and "[report] finished" in text and "baseline tolerates BER" in text


def test_boosting_is_measured_against_the_baseline_beside_its_control(flow_run) -> None:
    out, _, _, _ = flow_run
    base = json.loads((out / "tolerance-baseline.json").read_text())
    docs = {n: json.loads((out / f"tolerance-{n}.json").read_text()) for n in ("boosted", "control")}
    ref = base["curve"]["reference"]
    for name, doc in docs.items():
        # the goal of every derived network is the baseline's clean accuracy in the flow's format, not its own
        assert doc["reference"]["source"] == "given" and doc["reference"]["path"].endswith("baseline.pt"), name
        assert doc["curve"]["reference"] == ref and doc["curve"]["tolerable"]["goal"] == pytest.approx(ref - 0.02)
        assert doc["coarse"]["goal"] == pytest.approx(base["coarse"]["goal"])
    control = json.loads((out / "control.train.json").read_text())
    assert control["kind"] == "control" and control["recipe"]["errors_enabled"] is False
    chosen = json.loads((out / "tolerance.json").read_text())["chosen"]
    tolerable = {n: chosen["tolerable"][n]["ber"] for n in ("baseline", "control", "boosted")}
    best = max(tolerable.values())
    assert tolerable[chosen["network"]] == best
    if chosen["network"] != "baseline":  # ties go to the baseline
        assert tolerable["baseline"] < best
    assert set(chosen["gains"]) == {"boosted/baseline", "boosted/control", "control/baseline"}
    for g in chosen["gains"].values():
        assert g["ci_low"] <= g["ratio"] <= g["ci_high"] or g["censored"]


def test_bench_validation_agrees_with_simulation_and_reports_flips(flow_run) -> None:
    out = flow_run[0]
    val = json.loads((out / "validate.json").read_text())
    assert val["runs"]["nominal"]["flips"] == 0
    assert val["runs"]["chosen"]["vdd_v"] < val["runs"]["nominal"]["vdd_v"]
    assert val["runs"]["chosen"]["flips"] > 0  # the reduced VDD really corrupts the DIMM's data
    hil = val["runs"]["chosen"]["accuracy"]["mean"]
    sim = val["simulation"]["measured"]
    assert val["sweep"] and all(p["measured_ber"] > 0 for p in val["sweep"])
    # what the bench measured agrees with the model at the BER the bench saw (a loose, fixed-seed check)
    assert abs(hil - sim["mean"]) <= max(0.05, sim["ci_high"] - sim["ci_low"])


def test_report_numbers_recompute_from_their_files(flow_run, tmp_path) -> None:
    copy = tmp_path / "report"
    shutil.copytree(flow_run[0], copy)
    assert check_report(copy) == []
    text = (copy / "report.md").read_text()
    assert "validate.json: `runs.chosen.accuracy.mean`" in text
    for png in ("report-accuracy.png", "report-energy.png", "report-ber-curves.png", "report-accuracy-sweep.png"):
        assert (copy / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # tamper with a cited file: the check notices
    energy = json.loads((copy / "energy.json").read_text())
    energy["energy_saving"]["model"] = 0.99
    (copy / "energy.json").write_text(json.dumps(energy))
    problems = check_report(copy)
    assert any("energy.json: changed" in p for p in problems)
    assert any("energy_saving.model" in p for p in problems)



def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_pngs_are_their_figures_and_show_the_files_numbers(flow_run, tmp_path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    from pipeline.report import write_report

    copy = tmp_path / "figures"
    shutil.copytree(flow_run[0], copy)
    import boosting.plots

    saved: dict[str, tuple[Figure, float]] = {}
    original, original_write = Figure.savefig, boosting.plots.atomic_write
    target: list[Path] = []

    def atomic_write_spy(path: Path, write: Any) -> Any:  # names the open file savefig gets
        target[:] = [Path(path)]
        return original_write(path, write)

    def spy(fig: Figure, fname: Any, *args: Any, **kwargs: Any) -> Any:
        name = Path(fname).name if isinstance(fname, (str, Path)) else target[0].name
        saved[name] = (fig, kwargs.get("dpi", fig.dpi))
        return original(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    monkeypatch.setattr(boosting.plots, "atomic_write", atomic_write_spy)
    write_report(copy, _small(copy))
    pngs = ("report-ber-curves.png", "report-accuracy.png", "report-tolerance.png", "report-energy.png",
            "report-accuracy-sweep.png")
    assert set(saved) == set(pngs)
    for png in pngs:  # the file is the figure, drawn at its size and resolution
        fig, dpi = saved[png]
        width_in, height_in = fig.get_size_inches()
        assert _png_size(copy / png) == (round(width_in * dpi), round(height_in * dpi)), png
        assert _png_size(flow_run[0] / png) == _png_size(copy / png)  # as the flow wrote it
    # Energy: one bar per (setting, kind), the energy.json values in nJ.
    energy = json.loads((copy / "energy.json").read_text())
    kinds = [k for k in ("model", "measured") if k in energy["energy_j"]]
    assert "measured" in kinds
    bars = [rect.get_height() for rect in saved["report-energy.png"][0].axes[0].patches]
    expected = [energy["energy_j"][k][s] * 1e9 for s in ("nominal", "chosen") for k in kinds]
    assert bars == pytest.approx(expected, rel=1e-12)
    # BER curves: each partition's monotone fit, over its measured settings.
    model = json.loads((copy / "model.json").read_text())
    ax = saved["report-ber-curves.png"][0].axes[0]
    fits = [line for line in ax.get_lines() if line.get_label().endswith(" fit")]
    curves = [part["curves"]["vdd_v"] for part in model["partitions"].values() if part.get("curves", {}).get("vdd_v")]
    assert len(fits) == len(curves) > 0
    for line, curve in zip(fits, curves):
        assert list(line.get_xdata()) == pytest.approx(curve["x"]) and list(line.get_ydata()) == pytest.approx(curve["fit"])
    # The sweep: accuracy through the DIMM and in simulation at each VDD of validate.json.
    val = json.loads((copy / "validate.json").read_text())
    sweep = sorted(val["sweep"], key=lambda p: p["vdd_v"])
    ax = saved["report-accuracy-sweep.png"][0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for key, label in (("bench", "through the DIMM"), ("simulation", "fitted model, predicted BER")):
        assert list(lines[label].get_xdata()) == pytest.approx([p["vdd_v"] for p in sweep])
        assert list(lines[label].get_ydata()) == pytest.approx([p[key]["mean"] for p in sweep])
    # Accuracy vs BER: the baseline's honest curve (BERs above zero) on a log BER axis, and the goal.
    tol0 = json.loads((copy / "tolerance-baseline.json").read_text())["curve"]
    ax = saved["report-accuracy.png"][0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    points = sorted((b, m) for b, m in zip(tol0["bers"], tol0["mean"]) if b > 0)
    assert list(lines["baseline"].get_xdata()) == pytest.approx([b for b, _ in points])
    assert list(lines["baseline"].get_ydata()) == pytest.approx([m for _, m in points])
    assert ax.get_xscale() == "log" and list(lines[f"goal {val['goal']:.3f}"].get_ydata()) == [val["goal"]] * 2
    assert ax.get_xlim()[0] <= points[0][0] and ax.get_xlim()[1] >= points[-1][0]


def test_energy_report_uses_the_supplys_current_readings(flow_run) -> None:
    out = flow_run[0]
    energy = json.loads((out / "energy.json").read_text())
    runs = json.loads((out / "validate.json").read_text())["runs"]
    readings = {s: runs[s]["supply_current_a"] for s in ("nominal", "chosen")}
    vdd = {s: runs[s]["vdd_v"] for s in ("nominal", "chosen")}
    assert energy["measured_current_a"] == readings  # the supply's readings, as validate recorded them
    assert energy["vdd_v"] == pytest.approx(vdd)
    # The emulated supply reads the DIMM's load current (0 < I < its 2 A limit), which scales with
    # VDD: the same stream of reads at the chosen VDD draws current in proportion.
    assert 0 < readings["chosen"] < readings["nominal"] < 2.0
    assert readings["chosen"] / readings["nominal"] == pytest.approx(vdd["chosen"] / vdd["nominal"], rel=1e-5)
    # Measured energy = current x VDD x the inference stream's duration, at each setting.
    stream_ns = energy["latency"]["stream_ns"]
    measured = energy["energy_j"]["measured"]
    for s in ("nominal", "chosen"):
        assert measured[s] == pytest.approx(readings[s] * vdd[s] * stream_ns[s] * 1e-9, rel=1e-12)
    saving = energy["energy_saving"]
    assert saving["measured"] == pytest.approx(1 - measured["chosen"] / measured["nominal"], rel=1e-12)
    # Power mode keeps the timing: both estimates save the VDD-squared share.
    assert saving["measured"] == pytest.approx(1 - (vdd["chosen"] / vdd["nominal"]) ** 2, rel=1e-4)
    assert saving["measured"] == pytest.approx(saving["model"], rel=1e-3)
    text = (out / "report.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("From the supply's measured current"))
    assert f"{readings['nominal'] * 1e3:.1f} mA" in line and f"{readings['chosen'] * 1e3:.1f} mA" in line


def test_check_command_and_a_malformed_facts_file(flow_run, tmp_path, capsys) -> None:
    copy = tmp_path / "facts"
    shutil.copytree(flow_run[0], copy)
    assert main(["check", str(copy)]) == 0
    assert "report agrees with its files" in capsys.readouterr().out
    facts = json.loads((copy / "report-facts.json").read_text())
    facts["facts"][0]["text"] = 5  # not a string
    (copy / "report-facts.json").write_text(json.dumps(facts))
    with pytest.raises(FlowError, match=r"report facts .*facts\[0\]\.text"):
        check_report(copy)
    assert main(["check", "-o", str(copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "facts[0].text" in err[0]


def test_rerun_skips_finished_stages_and_an_option_reruns_what_it_affects(flow_run, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(flow_run[0], copy)
    with _captured() as lines:
        run_flow(_small(copy))
    assert all(f"[{s}] done before, skipped" in "\n".join(lines) for s in STAGES)
    with _captured() as lines:
        run_flow(_small(copy, hil_repeats=3), stop_after="validate")
    text = "\n".join(lines)
    assert "[map] done before, skipped" in text and "[validate] running" in text
    assert "[energy]" not in text


def test_validate_on_a_stock_softmc_bench_is_a_one_line_flow_error(flow_run, tmp_path) -> None:
    copy = tmp_path / "stock"
    shutil.copytree(flow_run[0], copy)
    ctx = st.StageContext(_small(copy, bench="emu://B?seed=0&link=riffa"), copy)
    with pytest.raises(FlowError) as info:
        st.stage_validate(ctx)
    message = str(info.value)
    assert message.startswith("bench validation: hardware-in-the-loop inference") and "\n" not in message
    assert "stock-softmc tester at riffa://" in message and "--stop-after map" in message


def test_interrupted_flow_resumes_at_the_stage_it_was_in(flow_run, tmp_path, monkeypatch) -> None:
    copy = tmp_path / "resume"
    shutil.copytree(flow_run[0], copy)
    record = json.loads((copy / "stages.json").read_text())
    for s in ("energy", "report"):
        record["stages"].pop(s)
    (copy / "stages.json").write_text(json.dumps(record))

    def interrupted(_ctx: Any) -> list[Path]:
        raise KeyboardInterrupt

    monkeypatch.setattr(STAGES["energy"], "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_flow(_small(copy))
    done = json.loads((copy / "stages.json").read_text())["stages"]
    assert "validate" in done and "energy" not in done  # finished stages stay on record
    monkeypatch.undo()
    with _captured() as lines:
        run_flow(_small(copy))
    text = "\n".join(lines)
    assert "[validate] done before, skipped" in text and "[energy] running" in text


def test_redo_reruns_a_stage_and_everything_after_it(flow_run, tmp_path, monkeypatch) -> None:
    copy = tmp_path / "redo"
    shutil.copytree(flow_run[0], copy)
    ran: list[str] = []
    for name in ("energy", "report"):
        real = STAGES[name].run
        monkeypatch.setattr(STAGES[name], "run", lambda ctx, real=real, name=name: ran.append(name) or real(ctx))
    with _captured() as lines:
        run_flow(_small(copy), redo=["energy"])
    assert ran == ["energy", "report"]  # report depends on energy's new token
    assert "[validate] done before, skipped" in "\n".join(lines)


def test_a_malformed_stage_record_is_a_one_line_error(tmp_path) -> None:
    (tmp_path / "stages.json").write_text(json.dumps(
        {"format": "eden-flow-stages", "format_version": 1,
         "stages": {"profile": {"key": "k", "token": "t", "outputs": ["sweep.h5"], "seconds": "slow",
                                "finished": "now"}}}))
    with pytest.raises(FlowError, match=r"stage record .*stages\.profile\.seconds"):
        run_flow(_small(tmp_path))
    (tmp_path / "stages.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(FlowError, match="not a stage record of this flow"):
        run_flow(_small(tmp_path))


def test_bad_options_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(FlowError, match="mode"):
        run_flow(_small(tmp_path, mode="turbo"))
    with pytest.raises(FlowError, match="epochs"):
        run_flow(_small(tmp_path, epochs=0))
    with pytest.raises(FlowError, match="seeds"):
        run_flow(_small(tmp_path, seeds=()))
    with pytest.raises(FlowError, match="unknown stage 'fitt'"):
        run_flow(_small(tmp_path), redo=["fitt"])
    with pytest.raises(FlowError, match="unknown field `epoch`"):
        FlowOptions.from_mapping({"epoch": 3})


def test_cli_bad_bench_is_a_one_line_error(tmp_path, capsys) -> None:
    code = main(["--out", str(tmp_path / "x"), "--bench", "emu://Z", "--no-progress", "--stop-after", "profile"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:")
    # at the default verbosity the stages log (INFO) and the error is still one line, the last
    code = main(["-o", str(tmp_path / "y"), "--bench", "emu://Z", "--stop-after", "profile"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "[profile] running" in err and [e for e in err if e.startswith("error:")] == [err[-1]]


def test_config_file_sets_options_and_flags_override_it(tmp_path, capsys) -> None:
    cfg = tmp_path / "flow.toml"
    cfg.write_text('out = "o/x"\nmax-drop = 0.05\nepochs = 2\nseeds = [3, 4]\nmitigation = "none"\n'
                   'boost_epochs = 0\nquiet = true\nmode = "latency"\n')
    opts = options_from_args(parse_args(_parser(), ["--config", str(cfg), "--epochs", "3"]))
    assert (opts.out, opts.max_drop, opts.epochs, opts.seeds, opts.mitigation, opts.boost_epochs) == \
        ("o/x", 0.05, 3, (3, 4), None, 0)
    assert opts.progress is False and opts.mode == "latency" and opts.granularity == "coarse"
    assert options_from_args(parse_args(_parser(), ["--config", str(cfg), "-o", "elsewhere"])).out == "elsewhere"
    # an unknown key, or a bad value, is one line naming it
    (tmp_path / "bad.toml").write_text("epoch = 3\n")
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(tmp_path / "bad.toml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "unknown option 'epoch'" in err[0]
    (tmp_path / "bad.toml").write_text('mode = "turbo"\n')
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "bad.toml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "turbo" in err[0]
    # a value the schema refuses (the flag's type accepts it)
    assert main(["-o", str(tmp_path / "z"), "--epochs", "0", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochs" in err[0]


def test_cli_vocabulary(tmp_path) -> None:
    p = _parser()
    args = parse_args(p, ["-o", "a", "-q", "-v"])
    assert (args.out, args.quiet, args.verbose, args.granularity, args.mode) == ("a", True, 1, "coarse", "power")
    assert parse_args(p, ["--no-progress"]).quiet is True  # the old spelling
    assert options_from_args(parse_args(p, ["run", str(tmp_path)])).out == str(tmp_path)  # positional alias
    assert not any("--error-model" in a.option_strings for a in p._actions)  # the pipeline fits its own
    with pytest.raises(SystemExit):
        parse_args(p, ["--mode", "fine"])


def test_stage_table_is_one_table_and_keeps_the_resume_keys() -> None:
    # the dependencies follow from the files each stage reads and equal the flow's since its start
    # (so the keys of existing stages.json files stay valid)
    assert {s.name: s.after for s in STAGES.stages} == {
        "profile": (), "fit": ("profile",), "train": (), "tolerance0": ("fit", "train"), "boost": ("tolerance0",),
        "tolerance": ("boost",), "map": ("tolerance",), "validate": ("map",), "energy": ("validate",),
        "report": ("energy",)}
    assert STAGES["map"].options == ("mode", "granularity", "batch_size")
    with pytest.raises(ValueError, match="no earlier stage writes"):
        st.StageTable([st.Stage("a", lambda ctx: [], "x", inputs=("nothing.json",))])
    with pytest.raises(ValueError, match="not a FlowOptions field"):
        st.StageTable([st.Stage("a", lambda ctx: [], "x", options=("speed",))])


def test_docs_show_the_stage_table() -> None:
    assert STAGES.markdown() in (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")


def test_schemas_of_the_options_and_documents() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"flow-options", "stages", "report-facts"}
    props = schemas["flow-options"]["$defs"]["FlowOptions"]["properties"]
    assert sorted(props["mode"]["enum"]) == ["latency", "power"] and props["max_drop"]["exclusiveMaximum"] == 1.0
    assert FlowOptions.json_schema() == schemas["flow-options"]
    json.dumps(schemas)  # JSON-ready


def test_energy_model_scales_with_vdd_squared_and_timing_shortens_the_stream() -> None:
    sizes = {("a", "weight"): 8192 * 3, ("a", "ifm"): 1000}
    nominal = DdrTiming()
    same = energy_report(sizes, nominal_vdd_v=1.35, vdd_v=1.35, nominal=nominal, timings={})
    assert same["energy_saving"]["model"] == pytest.approx(0.0)
    low = energy_report(sizes, nominal_vdd_v=1.35, vdd_v=1.35 * 0.8, nominal=nominal, timings={})
    assert low["energy_saving"]["model"] == pytest.approx(1 - 0.8 ** 2, rel=1e-3)
    fast = DdrTiming(trcd_ns=7.5, trp_ns=7.5)
    lat = energy_report(sizes, nominal_vdd_v=1.35, vdd_v=1.35, nominal=nominal,
                        timings={k: fast for k in sizes})
    assert lat["latency"]["closed_page_reduction"] == pytest.approx(1 - latency_ns(fast) / latency_ns(nominal))
    assert 0 < lat["latency"]["stream_reduction"] < lat["latency"]["closed_page_reduction"]
    s = stream_of([Tensor("w", 8192 * 3, False, nominal), Tensor("x", 1000, True, nominal)])
    assert (s.activates, s.read_bursts, s.write_bursts) == (3 + 1 + 1, 384 + 16, 16)


def test_lookup_paths() -> None:
    doc = {"a": [{"label": "x", "v": 1}, {"label": "y", "v": 2}], "b": {"c": [5, 6]}}
    assert lookup(doc, "a.label=y.v") == 2 and lookup(doc, "b.c.1") == 6


def test_latency_config_reads_each_bank_at_its_partitions_timing() -> None:
    config = {"geometry": {"banks": 4, "rows": 16, "row_bytes": 64},
              "partitions": [{"label": "bank1", "bank": 1, "trcd_ns": 7.5, "trp_ns": 13.75},
                             {"label": "bank2", "bank": 2, "trcd_ns": 13.75, "trp_ns": 13.75}]}
    opts = st._read_options(config)
    assert opts[1]["timing"].trcd_ns == 7.5 and opts[1]["per_burst_activate"] is True
    assert opts[2]["per_burst_activate"] is False and set(opts) == {1, 2}
    whole = st._read_options({"geometry": {"banks": 2}, "partitions": [{"label": "all", "bank": None,
                                                                        "trcd_ns": 10.0, "trp_ns": 12.5}]})
    assert set(whole) == {0, 1} and whole[0]["timing"].trp_ns == 12.5

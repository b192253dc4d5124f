"""The stages of EDEN's flow as objects, and :data:`STAGES`, the one table of them.

A :class:`Stage` names the files it reads (``inputs``) and writes (``outputs``), the options
its result depends on (``options``, part of its resume key) and its ``run(ctx)``, which does
the work through the toolkit's library functions (``profiler.sweep.sweep_to_map``,
``errormodels.fit.fit_map``, ``boosting.train.train_clean``, ``boost``,
``boosting.characterize.characterize_network``, ``boosting.map.map_network``,
``boosting.hil.hil_evaluate``), never another command's ``main()``, and returns the files it
wrote. The stages a stage depends on (``after``) follow from the table: the nearest earlier
stages that write its inputs. :func:`pipeline.flow.run_flow` runs the table in order.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from pipeline.options import FlowError, FlowOptions
from softmc_host.files import read_json, sha256_file, write_json
from softmc_host.geometry import ML605_GEOMETRY
from softmc_host.timing import NOMINAL_TRCD_NS, NOMINAL_TRP_NS

__all__ = ["Stage", "StageContext", "StageTable", "STAGES", "load_config", "CALIB_SAMPLES"]

logger = logging.getLogger(__name__)

CALIB_SAMPLES = 512
HOLDOUT_SEED_BASE = 1000
CURVE_BERS: tuple[float, ...] = tuple(float(f"{10 ** (k / 4):.4g}") for k in range(-28, -3))
"""The honest curves' grid: four BERs per decade from 1e-7 to 1e-1."""
CURVE_POINTS = 5
CURVE_REPEATS = 2


# ------------------------------------------------------------------------- the objects
@dataclass(frozen=True)
class StageContext:
    """What a stage's ``run`` gets: the options, the output directory and a logger.

    Attributes
    ----------
    opts : FlowOptions
        The flow's options.
    out : Path
        The output directory (exists).
    log : logging.Logger
        Where the stage's progress lines go (``pipeline.stages``).
    """

    opts: FlowOptions
    out: Path
    log: logging.Logger = field(default=logger)

    def path(self, name: str) -> Path:
        """A file of the output directory."""
        return self.out / name


@dataclass
class Stage:
    """One stage of the flow.

    Attributes
    ----------
    name : str
        The stage's name (``--redo``, ``--stop-after``, ``stages.json``).
    run : callable
        ``run(ctx: StageContext) -> list[Path]``: do the stage, return the files written.
    summary : str
        What it does (one sentence; the stage table of ``docs/pipeline.md``).
    inputs : tuple of str
        The output directory's files it reads.
    outputs : tuple of str
        The files it writes (``*`` patterns for families such as plots).
    options : tuple of str
        The :class:`FlowOptions` fields its result depends on (its resume key holds them).
    external : tuple of str
        What else it reads (``bench``, ``dataset``), for the documentation.
    after : tuple of str
        The stages it depends on; :class:`StageTable` fills it from ``inputs``.
    """

    name: str
    run: Callable[[StageContext], list[Path]]
    summary: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    external: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    def writes(self, name: str) -> bool:
        """Whether ``name`` (a path relative to the output directory) is one of this stage's outputs."""
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.outputs)


class StageTable(Mapping[str, Stage]):
    """The flow's stages in order, by name (iterating gives the names, ``table[name]`` the stage).

    Building the table checks that every input is written by an earlier stage and every option
    is a :class:`FlowOptions` field, and fills each stage's ``after``: the stages writing its
    inputs, less those another of them already depends on (a transitive reduction, so a stage
    depends on its nearest producers only).
    """

    def __init__(self, stages: Sequence[Stage]) -> None:
        fields = set(FlowOptions.__struct_fields__)
        ancestors: dict[str, set[str]] = {}
        built: dict[str, Stage] = {}
        for stage in stages:
            if stage.name in built:
                raise ValueError(f"stage {stage.name!r} is in the table twice")
            unknown = [o for o in stage.options if o not in fields]
            if unknown:
                raise ValueError(f"stage {stage.name!r}: {unknown[0]!r} is not a FlowOptions field")
            producers: list[str] = []
            for name in stage.inputs:
                writers = [s.name for s in reversed(list(built.values())) if s.writes(name)]
                if not writers:
                    raise ValueError(f"stage {stage.name!r} reads {name!r}, which no earlier stage writes")
                if writers[0] not in producers:
                    producers.append(writers[0])
            implied = set().union(*(ancestors[p] for p in producers)) if producers else set()
            order = list(built)
            after = tuple(sorted((p for p in producers if p not in implied), key=order.index))
            ancestors[stage.name] = set(producers) | implied
            built[stage.name] = replace(stage, after=after)
        self._stages = built

    def __getitem__(self, name: str) -> Stage:
        return self._stages[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stages)

    def __len__(self) -> int:
        return len(self._stages)

    def __repr__(self) -> str:
        return f"StageTable({', '.join(self._stages)})"

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The stages in order."""
        return tuple(self._stages.values())

    def markdown(self) -> str:
        """The stage table of ``docs/pipeline.md`` (stage, writes, reads, depends on, options, what it does)."""
        def code(items: Sequence[str]) -> str:
            return ", ".join(f"`{i}`" for i in items) or "-"

        lines = ["| stage | writes | reads | after | options | what it does |", "|---|---|---|---|---|---|"]
        for s in self._stages.values():
            reads = [f"`{i}`" for i in s.inputs] + list(s.external)
            lines.append(f"| `{s.name}` | {code(s.outputs)} | {', '.join(reads) or '-'} | {code(s.after)} | "
                         f"{', '.join(f'`--{o.replace(chr(95), chr(45))}`' for o in s.options) or '-'} | "
                         f"{s.summary} |")
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers
def load_config(path: Path) -> dict[str, Any]:
    """The DRAM configuration, fully validated (``boosting.map.MapError`` on any malformed field)."""
    from boosting.map import load_config as _load

    return _load(path)


def _image_size(opts: FlowOptions) -> Optional[int]:
    if opts.image_size is not None:
        return opts.image_size
    return 28 if opts.network == "lenet" else None


def _sizes(net: Any, opts: FlowOptions, batch_size: int) -> dict[tuple[str, str], int]:
    from boosting.map import tensor_sizes

    return tensor_sizes(net, opts.fmt, tuple(net.input_shape), batch_size=batch_size)


def _rows_needed(opts: FlowOptions) -> int:
    """Rows (per bank) the network's tensors occupy at the inference batch, rounded up to 8."""
    from boosting.networks import get_network

    size = _image_size(opts)
    net = get_network(opts.network, seed=opts.seed, **({"image_size": size} if size else {}))
    row_bytes = ML605_GEOMETRY.row_bytes
    rows = sum(math.ceil(n / row_bytes) for n in _sizes(net, opts, opts.batch_size).values())
    return max(8, -(-rows // 8) * 8)


def _spec(ctx: StageContext, ber: Optional[float] = None) -> Any:
    """The error spec of the fitted model (whole-DIMM selection), at ``ber`` if given."""
    from boosting.inference import ErrorSpec
    from errormodels import error_model_from

    model = error_model_from(str(ctx.path("model.json")))
    if ber is not None:
        model = model.with_ber(ber)
    return ErrorSpec(model, fmt=ctx.opts.fmt, mitigation=ctx.opts.mitigation, seed=ctx.opts.seed)


def _characterize(ctx: StageContext, net_path: Path, search: str) -> dict[str, Any]:
    """The tolerance document of a network; the goal is anchored at the baseline (its ancestor)."""
    from boosting.characterize import characterize_network

    opts, log = ctx.opts, ctx.log

    def progress(stage_search: str, p: Any) -> None:
        if p.stage == "baseline":
            log.info("  reference accuracy %.4f (the baseline in %s), goal %.4f", p.mean, opts.fmt,
                     p.mean - opts.max_drop)
        else:
            log.info("  %-6s %-11s BER %9.3g acc %.4f [%.4f, %.4f] %s", stage_search, p.stage, p.ber, p.mean,
                     p.ci_low, p.ci_high, "pass" if p.passed else "FAIL")

    holdout = tuple(range(HOLDOUT_SEED_BASE, HOLDOUT_SEED_BASE + opts.holdout_seeds))
    return characterize_network(str(net_path), _spec(ctx), mode=search, max_drop=opts.max_drop,
                                seeds=opts.seeds, ber_min=1e-7, ber_max=0.1, tol=0.25, workers=opts.workers,
                                executor=opts.executor,
                                data_dir=opts.data_dir, progress=progress, reference=str(ctx.path("baseline.pt")),
                                holdout_seeds=holdout, journal=str(ctx.path(f"{net_path.stem}.probes.jsonl")))


def _test_split(ctx: StageContext, nf: Any) -> tuple[Any, Any, Any]:
    """Test inputs, labels and the calibration images of a network file."""
    from torch.utils.data import DataLoader, Subset

    x, y = nf.load_split("test", root=ctx.opts.data_dir).tensors
    train = nf.load_split("train", root=ctx.opts.data_dir)
    calib = DataLoader(Subset(train, range(min(CALIB_SAMPLES, len(train)))), batch_size=256)
    return x, y, calib


def _curve(ctx: StageContext, name: str, reference: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """Correctness ``(B, S, N)`` of ``<name>.pt`` on the honest grid, the reference correctness, the summary.

    The reference is the baseline's clean correctness in the flow's format and mitigation
    (measured here when ``reference`` is None); every network's tolerable BER is the crossing
    of its mean-accuracy curve with ``reference - max_drop``, with a bootstrap interval.
    """
    import numpy as np

    from boosting.checkpoint import load_network
    from boosting.inference import calibrate, confidence_interval
    from boosting.tolerable import curve, reference_correctness, tolerable_ber

    opts = ctx.opts
    nf = load_network(ctx.path(f"{name}.pt"))
    x, y, calib = _test_split(ctx, nf)
    cal = calibrate(nf.net, calib, opts.fmt)  # the flow injects into conv and linear layers (the default)
    spec = _spec(ctx)
    own = reference_correctness(nf.net, x, y, spec, cal)
    if reference is None:
        reference = own
    seeds = tuple(range(opts.curve_seeds))
    correct = curve(nf.net, x, y, spec, CURVE_BERS, seeds, cal, stop_below=float(np.mean(reference)) - opts.max_drop)
    evaluated = int(np.flatnonzero(correct.any(axis=(1, 2))).max(initial=0)) + 1
    tol = tolerable_ber(correct, CURVE_BERS, reference, opts.max_drop, seed=opts.seed)
    per_seed = correct[:evaluated].mean(axis=2)
    intervals = [confidence_interval(list(a), len(y)) for a in per_seed]
    summary = {"bers": list(CURVE_BERS[:evaluated]), "mean": [float(i[0]) for i in intervals],
               "ci_low": [float(i[1]) for i in intervals], "ci_high": [float(i[2]) for i in intervals],
               "seeds": list(seeds), "evaluated_points": evaluated, "reference": float(reference.mean()),
               "clean": float(own.mean()), "tolerable": tol.to_dict()}
    ctx.log.info("  %s: tolerable BER %.3g [%.3g, %.3g] at %.4f (reference %.4f - %g; %d seeds, %d images)",
                 name, tol.ber, tol.ci_low, tol.ci_high, tol.goal, tol.reference, opts.max_drop, len(seeds), len(y))
    return correct, reference, summary


def _save_curve(path: Path, correct: Any, reference: Any) -> Path:
    import numpy as np

    from softmc_host.files import atomic_write

    atomic_write(path, lambda fh: np.savez_compressed(fh, correct=correct, reference=reference,
                                                        bers=np.asarray(CURVE_BERS)))
    return path


def _load_curve(ctx: StageContext, name: str) -> tuple[Any, Any]:
    import numpy as np

    path = ctx.path(name)
    try:
        with np.load(path) as z:
            return z["correct"], z["reference"]
    except (OSError, KeyError, ValueError) as exc:
        raise FlowError(f"{path}: not a curve file of this flow ({exc}); rerun with --redo tolerance0") from None


def _read(ctx: StageContext, name: str, what: str) -> Any:
    return read_json(ctx.path(name), what, FlowError)


def _log_block(log: logging.Logger, text: str) -> None:
    for line in text.splitlines():
        if line.strip():
            log.info("  %s", line)
        else:
            log.info("")


# ---------------------------------------------------------------------------- stages
def stage_profile(ctx: StageContext) -> list[Path]:
    """Sweep the bench over the rows the network will use, keeping every error position; plot it."""
    from profiler.plan import PlanError, parse_values
    from profiler.plot import plot_map
    from profiler.sweep import SweepConfig, SweepError, sweep_to_map

    opts = ctx.opts
    rows = _rows_needed(opts)
    path = ctx.path("sweep.h5")
    g = ML605_GEOMETRY
    try:
        if opts.mode == "power":
            vdd_v: Optional[list[float]] = parse_values(opts.vdd, "--vdd", "V")
            trcd_ns = [NOMINAL_TRCD_NS]
        else:
            vdd_v, trcd_ns = None, parse_values(opts.trcd, "--trcd", "ns")
    except PlanError as exc:
        raise FlowError(str(exc)) from None
    # every error position is kept (clustered models need them): at most all bits of the rows
    config = SweepConfig(bench=opts.bench, vdd_v=vdd_v, trcd_ns=trcd_ns, rows=f"0:{rows}", seed=opts.seed,
                         out=str(path), max_error_positions=rows * g.banks * g.row_bytes * 8)
    swept = f"VDD {opts.vdd} V" if opts.mode == "power" else f"tRCD {opts.trcd} ns"
    ctx.log.info("  sweeping %s over rows 0:%d of every bank on %s", swept, rows, opts.bench)
    try:
        sweep_to_map(config, progress=opts.progress)
    except SweepError as exc:
        raise FlowError(f"the sweep failed: {exc}") from None
    plots = plot_map(path)
    ctx.log.info("  %s and %d plots", path.name, len(plots))
    return [path, *plots]


def stage_fit(ctx: StageContext) -> list[Path]:
    """Fit the error models: whole DIMM (coarse mapping) or per bank (fine mapping)."""
    from errormodels.fit import fit_map, format_report

    partition = "dimm" if ctx.opts.granularity == "coarse" else "bank"
    doc = fit_map(str(ctx.path("sweep.h5")), partition)
    _log_block(ctx.log, format_report(doc))
    return [write_json(ctx.path("model.json"), doc)]


def stage_train(ctx: StageContext) -> list[Path]:
    """Train the network clean until it converges (validation split, early stopping)."""
    from boosting.train import train_clean

    opts = ctx.opts
    path = train_clean(opts.network, opts.dataset, epochs=opts.epochs, seed=opts.seed,
                       patience=opts.patience or None, image_size=_image_size(opts), data_dir=opts.data_dir,
                       out=ctx.path("baseline.pt"), progress=opts.progress)
    return [Path(path)]


def stage_tolerance0(ctx: StageContext) -> list[Path]:
    """The baseline's tolerance: coarse search (held-out re-scored) and the honest curve with its interval."""
    doc = _characterize(ctx, ctx.path("baseline.pt"), "coarse")
    correct, reference, summary = _curve(ctx, "baseline")
    t = summary["tolerable"]
    ctx.log.info("  baseline tolerates BER %.3g [%.3g, %.3g] (curve); coarse search %.3g (held-out re-scored)",
                 t["ber"], t["ci_low"], t["ci_high"], doc["coarse"]["ber"])
    doc["curve"] = summary
    return [write_json(ctx.path("tolerance-baseline.json"), doc),
            _save_curve(ctx.path("curve-baseline.npz"), correct, reference)]


def _recipe(ctx: StageContext) -> Any:
    from boosting.recipes import get_recipe

    opts = ctx.opts
    changes: dict[str, Any] = {"epochs": opts.boost_epochs}
    if opts.boost_factor is not None:
        changes["target_factor"] = opts.boost_factor
    return get_recipe(opts.recipe, **changes)


def stage_boost(ctx: StageContext) -> list[Path]:
    """Retrain with the recipe at its target (x the baseline's tolerable BER), and the clean control."""
    from boosting.train import boost

    opts = ctx.opts
    tol0 = _read(ctx, "tolerance-baseline.json", "baseline tolerance")
    path, control = ctx.path("boosted.pt"), ctx.path("control.pt")
    if opts.boost_epochs == 0:
        shutil.copyfile(ctx.path("baseline.pt"), path)
        return [path]
    recipe = _recipe(ctx)
    base_ber = float(tol0.get("curve", {}).get("tolerable", {}).get("ber") or tol0["coarse"]["ber"]) or 1e-7
    target = min(recipe.target_ber(base_ber), 0.05)
    ctx.log.info("  boosting with recipe %s at BER %.3g (%g x the baseline's %.3g), %d epochs", recipe.name, target,
                 recipe.target_factor, base_ber, recipe.epochs)
    common = dict(seeds=opts.seeds[:3], seed=opts.seed, data_dir=opts.data_dir, progress=opts.progress)
    boost(ctx.path("baseline.pt"), _spec(ctx, target), recipe=recipe, out=path, **common)
    written = [path]
    if opts.control:
        ctx.log.info("  control: the same schedule without errors")
        boost(ctx.path("baseline.pt"), _spec(ctx, target), recipe=recipe.replace(name="control", errors_enabled=False),
              out=control, **common)
        written.append(control)
    return written


def stage_tolerance(ctx: StageContext) -> list[Path]:
    """Tolerance of the boosted network and the control; the most tolerant of the three becomes ``network.pt``.

    Every network is scored on the same grid, error seeds and test images against the
    baseline's clean accuracy (same format and mitigation). EDEN keeps boosting only while it
    raises the tolerable BER: the chosen network has the highest tolerable BER (point estimate
    of the honest curve; the baseline wins ties, then the control). The gains over the baseline
    and over the control are paired bootstrap ratios with intervals. Fine mapping characterizes
    the chosen network per layer and data type too.
    """
    from boosting.tolerable import gain

    opts = ctx.opts
    base = _read(ctx, "tolerance-baseline.json", "baseline tolerance")
    base_correct, reference = _load_curve(ctx, "curve-baseline.npz")
    docs = {"baseline": base}
    correct = {"baseline": base_correct}
    names = ["boosted"] + (["control"] if ctx.path("control.pt").exists() and opts.boost_epochs else [])
    written: list[Path] = []
    for name in names:
        doc = _characterize(ctx, ctx.path(f"{name}.pt"), "coarse")
        correct[name], _, doc["curve"] = _curve(ctx, name, reference)
        docs[name] = doc
        written.append(write_json(ctx.path(f"tolerance-{name}.json"), doc))
    tolerable = {n: float(d["curve"]["tolerable"]["ber"]) for n, d in docs.items()}
    chosen = "baseline"
    for name in ("control", "boosted"):
        if name in tolerable and tolerable[name] > tolerable[chosen]:
            chosen = name
    gains: dict[str, Any] = {}
    for name in names:
        for other in ("baseline", "control"):
            if other != name and other in correct:
                gains[f"{name}/{other}"] = gain(correct[name], correct[other], CURVE_BERS, reference, opts.max_drop,
                                                seed=opts.seed)
    for key, g in gains.items():
        ctx.log.info("  gain %s: %s", key, _gain_text(g))
    ctx.log.info("  tolerable BER: %s: mapping the %s network",
                 ", ".join(f"{n} {b:.3g}" for n, b in tolerable.items()), chosen)
    shutil.copyfile(ctx.path(f"{chosen}.pt"), ctx.path("network.pt"))
    if ctx.opts.granularity == "fine":
        doc = _characterize(ctx, ctx.path("network.pt"), "both")
        doc["curve"] = docs[chosen]["curve"]
    else:
        doc = dict(docs[chosen])
    doc["chosen"] = {"network": chosen, "baseline_ber": tolerable["baseline"],
                     "boosted_ber": tolerable.get("boosted", tolerable["baseline"]),
                     "control_ber": tolerable.get("control"), "tolerable": {n: d["curve"]["tolerable"]
                                                                           for n, d in docs.items()},
                     "gains": gains, "rule": "highest tolerable BER of the honest curve; ties: baseline, control"}
    return [write_json(ctx.path("tolerance.json"), doc), ctx.path("network.pt"), *written]


def _gain_text(g: dict[str, Any]) -> str:
    return (f"{g['ratio']:.3g}x [{g['ci_low']:.3g}, {g['ci_high']:.3g}]"
            + (" (censored at the grid)" if g.get("censored") else ""))


def stage_map(ctx: StageContext) -> list[Path]:
    """Operating points and placement from the curves and the tolerances."""
    from boosting.checkpoint import load_network
    from boosting.map import (format_table, load_tolerance, map_network, partitions_from_model, save_config,
                              write_tensor_csv)

    opts = ctx.opts
    nf = load_network(ctx.path("network.pt"))
    tolerances, _fmt = load_tolerance(ctx.path("tolerance.json"))
    if isinstance(tolerances, float) and tolerances <= 0.0:
        raise FlowError("the boosted network tolerates no errors at this accuracy goal: nothing to map "
                        "(loosen --max-drop or train longer)")
    sizes = _sizes(nf.net, opts, opts.batch_size)
    source: dict[str, Any] = {}
    for key, name in (("model", "model.json"), ("tolerance", "tolerance.json"), ("network", "network.pt")):
        source[key] = {"path": name, "sha256": sha256_file(ctx.path(name))}
    source["batch_size"] = opts.batch_size
    config = map_network(partitions_from_model(ctx.path("model.json")), tolerances, sizes, mode=opts.mode,
                         granularity=opts.granularity, source=source)
    _log_block(ctx.log, format_table(config))
    path = save_config(config, ctx.path("dram-config.json"))
    return [Path(path), Path(write_tensor_csv(config, ctx.path("dram-config.csv")))]


def _chosen_vdd(config: dict[str, Any]) -> float:
    return min(float(p["vdd_v"]) for p in config["partitions"])


def _read_options(config: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per-bank read timing of the chosen setting (the banks of every partition)."""
    from softmc_host.timing import AccessTiming

    banks = int(config["geometry"]["banks"])
    options: dict[int, dict[str, Any]] = {}
    for p in config["partitions"]:
        trcd, trp = float(p["trcd_ns"]), float(p["trp_ns"])
        fast = trcd < NOMINAL_TRCD_NS or trp < NOMINAL_TRP_NS
        for b in ([int(p["bank"])] if p.get("bank") is not None else range(banks)):
            prev = options.get(b)
            timing = AccessTiming(trcd_ns=trcd, trp_ns=trp)
            if prev is None or prev["timing"].trcd_ns > trcd:
                options[b] = {"timing": timing, "per_burst_activate": fast}
    return options


def _stream_current(bench: Any, config: dict[str, Any], read_options: dict[int, dict[str, Any]]) -> Optional[float]:
    """The supply current while the tester streams the network's rows (row by row, every burst of a
    row after one activation, each bank at its setting's timing): the inference's reads as the
    IDD model of :mod:`pipeline.energy` counts them. None without a supply."""
    if bench.supply is None:
        return None
    rows_by_bank: dict[int, list[tuple[int, int]]] = {}
    for t in config["tensors"]:
        for r in range(int(t["row"]), int(t["row"]) + int(t.get("n_rows", 1))):
            rows_by_bank.setdefault(int(t["bank"]), []).append((int(t["bank"]), r))
    for bank, rows in sorted(rows_by_bank.items()):
        timing = read_options.get(bank, {}).get("timing")
        bench.tester.read_rows(sorted(set(rows)), timing=timing, per_burst_activate=False)
    return float(bench.supply.measured_current_a)


def stage_validate(ctx: StageContext) -> list[Path]:
    """Inference through the bench's DIMM at nominal and at the chosen setting, beside simulation."""
    from torch.utils.data import DataLoader, TensorDataset

    from boosting.checkpoint import load_network
    from boosting.hil import HilError, hil_evaluate, placements_from_config, require_arbitrary_data
    from boosting.inference import ErrorSpec, calibrate, evaluate
    from firmware_bridge.link import LinkError
    from softmc_host.bench import Bench, BenchError
    from softmc_host.instruments import InstrumentError
    from softmc_host.session import TesterError

    opts, log = ctx.opts, ctx.log
    config = load_config(ctx.path("dram-config.json"))
    nf = load_network(ctx.path("network.pt"))
    net = nf.net.eval()
    train = nf.load_split("train", root=opts.data_dir)
    test = nf.load_split("test", root=opts.data_dir)
    loader = DataLoader(test, batch_size=opts.batch_size, shuffle=False)
    calibration = calibrate(net, DataLoader(TensorDataset(train.tensors[0][:CALIB_SAMPLES]), batch_size=256),
                            opts.fmt)
    placements = placements_from_config(config)
    repeats = tuple(range(opts.hil_repeats))
    clean = evaluate(net, loader, None).mean
    goal = clean - opts.max_drop
    runs: dict[str, Any] = {}
    try:
        with Bench.open(opts.bench) as bench:
            require_arbitrary_data(bench.tester)  # before the supply moves
            for name in ("nominal", "chosen"):
                read_options: dict[int, dict[str, Any]] = {}
                vdd = bench.nominal_vdd_v
                if name == "chosen":
                    if opts.mode == "power":
                        vdd = _chosen_vdd(config)
                        bench.set_vdd(vdd)
                    else:
                        read_options = _read_options(config)
                acc, stats = hil_evaluate(net, loader, bench.tester, fmt=opts.fmt, mitigation=opts.mitigation,
                                          calibration=calibration, placements=placements,
                                          read_options=read_options, repeats=repeats)
                current = _stream_current(bench, config, read_options)
                flips = sum(s.bits_flipped for s in stats.values())
                bits = sum(s.bits_total for s in stats.values())
                runs[name] = {
                    "vdd_v": vdd,
                    "read_timing": {str(b): {"trcd_ns": o["timing"].trcd_ns, "trp_ns": o["timing"].trp_ns,
                                             "per_burst_activate": o["per_burst_activate"]}
                                    for b, o in read_options.items()},
                    "accuracy": _acc(acc),
                    "measured_ber": flips / bits if bits else 0.0,
                    "flips": flips, "bits": bits,
                    "tensors": [{"layer": k[0], "kind": k[1], "ber": s.ber, **s.to_dict()} for k, s in stats.items()],
                    "supply_current_a": current,
                }
                log.info("  bench %s: VDD %s V, accuracy %.4f [%.4f, %.4f], measured BER %.3g", name, vdd,
                         acc.mean, acc.ci_low, acc.ci_high, runs[name]["measured_ber"])
            sweep = _accuracy_sweep(ctx, config, bench, net, loader, calibration, placements)
    except HilError as exc:
        raise FlowError(f"bench validation: {exc} (--stop-after map ends the flow before it)") from None
    except (BenchError, InstrumentError, TesterError, LinkError) as exc:
        raise FlowError(f"bench validation: {exc}") from None

    # Simulation at the same setting: the fitted model at the predicted BER of every tensor,
    # and at the BER the bench measured for it.
    predicted = {(t["layer"], t["kind"]): float(t["predicted_ber"]) for t in config["tensors"]}
    measured = {(t["layer"], t["kind"]): float(t["ber"]) for t in runs["chosen"]["tensors"]}
    sims = {}
    for label, overrides in (("predicted", predicted), ("measured", measured)):
        spec = _spec(ctx, max(overrides.values()))
        spec = ErrorSpec(spec.model, overrides=overrides, fmt=opts.fmt, mitigation=opts.mitigation, seed=opts.seed)
        r = evaluate(net, loader, spec, seeds=opts.seeds, calibration=calibration)
        sims[label] = _acc(r)
        log.info("  simulation at the %s BERs: accuracy %.4f [%.4f, %.4f]", label, r.mean, r.ci_low, r.ci_high)
    hil = runs["chosen"]["accuracy"]
    doc = {
        "format": "eden-validation", "format_version": 1,
        "clean_accuracy": clean, "max_drop": opts.max_drop, "goal": goal,
        "bench": opts.bench, "repeats": list(repeats), "seeds": list(opts.seeds), "fmt": opts.fmt,
        "mitigation": opts.mitigation, "mode": opts.mode, "granularity": opts.granularity,
        "runs": runs, "simulation": sims, "sweep": sweep,
        "meets_goal": hil["mean"] >= goal,
        "agreement": {
            label: {"hil_mean": hil["mean"], "sim_ci": [s["ci_low"], s["ci_high"]],
                    "hil_within_sim_ci": s["ci_low"] <= hil["mean"] <= s["ci_high"],
                    "intervals_overlap": hil["ci_low"] <= s["ci_high"] and s["ci_low"] <= hil["ci_high"],
                    "difference": hil["mean"] - s["mean"]}
            for label, s in sims.items()},
    }
    return [write_json(ctx.path("validate.json"), doc)]


def _accuracy_sweep(ctx: StageContext, config: dict[str, Any], bench: Any, net: Any, loader: Any,
                    calibration: Any, placements: Any) -> list[dict[str, Any]]:
    """Accuracy through the DIMM and in simulation along the swept parameter (the seed slides'
    "DNN accuracy of LeNet using real DRAM"): the measured settings whose predicted BER is at
    least 1e-6, the harshest :data:`CURVE_POINTS` of them, mildest first."""
    from boosting.hil import hil_evaluate
    from boosting.inference import ErrorSpec, evaluate
    from boosting.map import partitions_from_model
    from softmc_host.timing import AccessTiming

    opts = ctx.opts
    param = "vdd_v" if opts.mode == "power" else "trcd_ns"
    parts = {p.label: p for p in partitions_from_model(ctx.path("model.json"))}
    xs = sorted({float(x) for p in parts.values() if param in p.curves for x in p.curves[param].x})
    xs = [x for x in xs if max(p.curves[param].at(x) for p in parts.values() if param in p.curves) >= 1e-6]
    xs = sorted(xs)[:CURVE_POINTS]  # the harshest (lowest VDD / tRCD) settings with errors
    points = []
    for x in sorted(xs, reverse=True):
        read_options: dict[int, dict[str, Any]] = {}
        if param == "vdd_v":
            bench.set_vdd(x)
        else:
            timing = AccessTiming(trcd_ns=x)
            read_options = {b: {"timing": timing, "per_burst_activate": True}
                            for b in range(int(config["geometry"]["banks"]))}
        acc, stats = hil_evaluate(net, loader, bench.tester, fmt=opts.fmt, mitigation=opts.mitigation,
                                  calibration=calibration, placements=placements, read_options=read_options,
                                  repeats=tuple(range(CURVE_REPEATS)))
        bits = sum(s.bits_total for s in stats.values())
        measured = sum(s.bits_flipped for s in stats.values()) / bits if bits else 0.0
        overrides = {(t["layer"], t["kind"]): parts[t["partition"]].curves[param].at(x) for t in config["tensors"]}
        model = _spec(ctx, max(overrides.values())).model
        sim = evaluate(net, loader, ErrorSpec(model, overrides=overrides, fmt=opts.fmt, mitigation=opts.mitigation,
                                              seed=opts.seed), seeds=opts.seeds, calibration=calibration)
        points.append({param: x, "predicted_ber": max(overrides.values()), "measured_ber": measured,
                       "bench": _acc(acc), "simulation": _acc(sim)})
        ctx.log.info("  %s %g: bench %.4f (BER %.3g), simulation %.4f [%.4f, %.4f] (BER %.3g)", param, x, acc.mean,
                     measured, sim.mean, sim.ci_low, sim.ci_high, max(overrides.values()))
    return points


def _acc(r: Any) -> dict[str, Any]:
    return {"mean": r.mean, "ci_low": r.ci_low, "ci_high": r.ci_high, "per_seed": list(r.per_seed),
            "n_samples": r.n_samples, "method": r.method}


def stage_energy(ctx: StageContext) -> list[Path]:
    """DRAM energy and latency of one inference, model and measured."""
    from boosting.checkpoint import load_network
    from pipeline.energy import DdrTiming, energy_report

    config = load_config(ctx.path("dram-config.json"))
    val = _read(ctx, "validate.json", "validation")
    nf = load_network(ctx.path("network.pt"))
    sizes = _sizes(nf.net, ctx.opts, 1)
    by_label = {p["label"]: p for p in config["partitions"]}
    nominal = DdrTiming(trcd_ns=float(config["nominal"]["trcd_ns"]), trp_ns=float(config["nominal"]["trp_ns"]))
    timings = {}
    for t in config["tensors"]:
        p = by_label[t["partition"]]
        timings[(t["layer"], t["kind"])] = DdrTiming(trcd_ns=float(p["trcd_ns"]), trp_ns=float(p["trp_ns"]))
    runs = val["runs"]
    currents = None
    if runs["nominal"].get("supply_current_a") is not None and runs["chosen"].get("supply_current_a") is not None:
        currents = {"nominal": runs["nominal"]["supply_current_a"], "chosen": runs["chosen"]["supply_current_a"]}
    doc = energy_report(sizes, nominal_vdd_v=float(config["nominal"]["vdd_v"]), vdd_v=_chosen_vdd(config),
                        nominal=nominal, timings=timings, row_bytes=int(config["geometry"]["row_bytes"]),
                        measured_current_a=currents)
    doc = {"format": "eden-energy", "format_version": 1, "sizes_batch1": [[k[0], k[1], n] for k, n in sizes.items()],
           **doc}
    e = doc["energy_saving"]
    measured = f", measured {e['measured']:.1%}" if "measured" in e else ""
    ctx.log.info("  DRAM energy per inference saved: model %.1f%%%s; stream latency -%.1f%%, closed-page access -%.1f%%",
                 100 * e["model"], measured, 100 * doc["latency"]["stream_reduction"],
                 100 * doc["latency"]["closed_page_reduction"])
    return [write_json(ctx.path("energy.json"), doc)]


def stage_report(ctx: StageContext) -> list[Path]:
    """The one-page report."""
    from pipeline.report import write_report

    paths = write_report(ctx.out, ctx.opts)
    ctx.log.info("  report: %s", paths[0])
    return paths


# ------------------------------------------------------------------------- the table
#: The flow's stages, in the order they run (iterating gives the names; ``STAGES[name]`` the stage).
STAGES = StageTable([
    Stage("profile", stage_profile,
          "`profiler.sweep.sweep_to_map` over rows `0:R` of every bank, where `R` covers the network's tensors at "
          "the inference batch (rounded up to 8 rows); VDD sweep at nominal timing (`--mode power`) or tRCD sweep "
          "at nominal VDD (`--mode latency`); every error position kept; `profiler.plot.plot_map` draws it",
          outputs=("sweep.h5", "sweep_*.png"), external=("bench",),
          options=("bench", "mode", "vdd", "trcd", "network", "fmt", "batch_size", "image_size", "seed")),
    Stage("fit", stage_fit,
          "`errormodels.fit.fit_map`, whole DIMM (`--granularity coarse`) or per bank (`fine`); "
          "[format](error-model-format.md)",
          inputs=("sweep.h5",), outputs=("model.json",), options=("granularity",)),
    Stage("train", stage_train, "clean training to convergence (`boosting.train.train_clean`: validation split, "
          "early stopping after `--patience` epochs, at most `--epochs`)",
          outputs=("baseline.pt", "baseline.train.*"), external=("dataset",),
          options=("network", "dataset", "data_dir", "image_size", "epochs", "patience", "seed")),
    Stage("tolerance0", stage_tolerance0,
          "the baseline's tolerance under the fitted model's shape: coarse search with held-out re-scoring "
          "(`boosting.characterize.characterize_network`; [format](tolerance-format.md)) and the honest curve "
          "(`boosting.tolerable`: `--curve-seeds` error seeds per BER, tolerable BER interpolated on log BER with "
          "a bootstrap interval; `curve-baseline.npz` keeps its per-sample correctness)",
          inputs=("model.json", "baseline.pt"), outputs=("tolerance-baseline.json", "curve-baseline.npz"),
          options=("fmt", "mitigation", "max_drop", "seeds", "curve_seeds", "holdout_seeds")),
    Stage("boost", stage_boost,
          "retraining with `--recipe` (`boosting.train.boost`, `boosting.recipes`) under the fitted model at the "
          "recipe's target (`target_factor`, or `--boost-factor`, x the baseline's tolerable BER, at most 0.05), "
          "and (`--control`) the clean control: the same schedule without errors",
          inputs=("tolerance-baseline.json", "baseline.pt", "model.json"),
          outputs=("boosted.pt", "boosted.train.*", "control.pt", "control.train.*"),
          options=("recipe", "boost_epochs", "boost_factor", "control")),
    Stage("tolerance", stage_tolerance,
          "the boosted and control networks' tolerances against the baseline's clean accuracy; the most tolerant "
          "of baseline, control and boosted (honest curve) is kept as `network.pt` (EDEN boosts only while it "
          "helps) and `tolerance.json` is its tolerance (`chosen` says which, with the paired bootstrap gains "
          "over baseline and control), with the fine characterization for fine mapping",
          inputs=("boosted.pt", "tolerance-baseline.json", "curve-baseline.npz", "baseline.pt", "model.json"),
          outputs=("tolerance.json", "network.pt", "tolerance-boosted.json", "tolerance-control.json"),
          options=("granularity",)),
    Stage("map", stage_map,
          "`boosting.map.map_network`; IFM placements sized for the inference batch; "
          "[format](dram-config-format.md)",
          inputs=("network.pt", "tolerance.json", "model.json"), outputs=("dram-config.json", "dram-config.csv"),
          options=("mode", "granularity", "batch_size")),
    Stage("validate", stage_validate,
          "hardware-in-the-loop inference (`boosting.hil`) at nominal and at the chosen setting, and simulation of "
          "the fitted model at the predicted and at the measured per-tensor BERs",
          inputs=("dram-config.json", "network.pt", "model.json"), outputs=("validate.json",), external=("bench",),
          options=("bench", "hil_repeats")),
    Stage("energy", stage_energy, "DRAM energy and latency per inference (`pipeline/energy.py`)",
          inputs=("dram-config.json", "validate.json", "network.pt"), outputs=("energy.json",)),
    Stage("report", stage_report, "the one-page report; every number cites its file and key",
          inputs=("model.json", "dram-config.json", "tolerance-baseline.json", "tolerance-boosted.json",
                  "tolerance.json", "validate.json", "energy.json"),
          outputs=("report.md", "report-facts.json", "report-*.png")),
])


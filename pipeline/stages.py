"""The stages of :mod:`pipeline.flow`: each takes the options, the output directory and a logger,
does its work through the toolkit's own entry points, and returns the files it wrote."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from pipeline.flow import FlowError, FlowOptions, read_json, write_json


def load_config(path: Path) -> dict[str, Any]:
    """The DRAM configuration, fully validated (``boosting.map.MapError`` on any malformed field)."""
    from boosting.map import load_config as _load

    return _load(path)

Log = Callable[[str], None]

NOMINAL_TRCD_NS = 13.75
NOMINAL_TRP_NS = 13.75
CALIB_SAMPLES = 512


# --------------------------------------------------------------------------- helpers
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
    from errormodels.layout import AddressMap

    rows = sum(math.ceil(n / AddressMap.row_bytes) for n in _sizes(net, opts, opts.batch_size).values())
    return max(8, -(-rows // 8) * 8)


def _spec(opts: FlowOptions, out: Path, ber: Optional[float] = None) -> Any:
    """The error spec of the fitted model (whole-DIMM selection), at ``ber`` if given."""
    from boosting.inference import ErrorSpec
    from boosting.train import error_model_from

    model = error_model_from(str(out / "model.json"), {}, None)
    if ber is not None:
        model = model.with_ber(ber)
    return ErrorSpec(model, fmt=opts.fmt, mitigation=opts.mitigation, seed=opts.seed)


def _characterize(opts: FlowOptions, out: Path, net_path: Path, mode: str, log: Log) -> dict[str, Any]:
    from boosting.characterize import characterize_network

    def progress(search: str, p: Any) -> None:
        if p.stage == "baseline":
            log(f"  clean accuracy {p.mean:.4f}, goal {p.mean - opts.max_drop:.4f}")
        else:
            log(f"  {search:6s} {p.stage:11s} BER {p.ber:9.3g} acc {p.mean:.4f} "
                f"[{p.ci_low:.4f}, {p.ci_high:.4f}] {'pass' if p.passed else 'FAIL'}")

    return characterize_network(str(net_path), _spec(opts, out), mode=mode, max_drop=opts.max_drop,
                                seeds=opts.seeds, ber_min=1e-7, ber_max=0.1, tol=0.25, workers=opts.workers,
                                data_dir=opts.data_dir, progress=progress)


# ---------------------------------------------------------------------------- stages
def stage_profile(opts: FlowOptions, out: Path, log: Log) -> list[Path]:
    """Sweep the bench over the rows the network will use (``profiler.sweep``'s own CLI path)."""
    from profiler.sweep import main as sweep_main

    rows = _rows_needed(opts)
    path = out / "sweep.h5"
    # every error position is kept (clustered models need them): at most all bits of the rows
    argv = ["--bench", opts.bench, "--rows", f"0:{rows}", "--seed", str(opts.seed), "--out", str(path),
            "--max-errors", str(rows * 8 * 8192 * 8)]
    if opts.mode == "power":
        argv += ["--vdd", opts.vdd, "--trcd", str(NOMINAL_TRCD_NS)]
    else:
        argv += ["--trcd", opts.trcd]
    if not opts.progress:
        argv.append("--no-progress")
    log(f"  python -m profiler.sweep {' '.join(argv)}")
    code = sweep_main(argv)
    if code != 0:
        raise FlowError(f"the sweep failed (exit {code})", reported=True)
    from profiler.plot import main as plot_main

    plot_main([str(path)])
    return [path]


def stage_fit(opts: FlowOptions, out: Path, log: Log) -> list[Path]:
    """Fit the error models: whole DIMM (coarse mapping) or per bank (fine mapping)."""
    from errormodels.fit import _print_report, fit_map

    partition = "dimm" if opts.granularity == "coarse" else "bank"
    doc = fit_map(str(out / "sweep.h5"), partition)
    _print_report(doc)
    return [write_json(out / "model.json", doc)]


def stage_train(opts: FlowOptions, out: Path, log: Log) -> list[Path]:
    """Train the network clean."""
    from boosting.train import train_clean

    path = train_clean(opts.network, opts.dataset, epochs=opts.epochs, seed=opts.seed,
                       image_size=_image_size(opts), data_dir=opts.data_dir, out=out / "baseline.pt",
                       progress=opts.progress)
    return [Path(path)]


def stage_tolerance0(opts: FlowOptions, out: Path, log: Log) -> list[Path]:
    """Coarse tolerable BER of the baseline under the fitted model."""
    doc = _characterize(opts, out, out / "baseline.pt", "coarse", log)
    log(f"  baseline tolerates BER {doc['coarse']['ber']:.3g}")
    return [write_json(out / "tolerance-baseline.json", doc)]


def stage_boost(opts: FlowOptions, out: Path, log: Log) -> list[Path]:
    """Retrain under the fitted model, BER rising to ``boost_factor`` x the baseline's tolerable BER."""
    from boosting.retrain import Curriculum
    from boosting.train import boost

    tol0 = read_json(out / "tolerance-baseline.json", "baseline tolerance")
    base_ber = float(tol0["coarse"]["ber"]) or 1e-7
    target = min(base_ber * opts.boost_factor, 0.05)
    path = out / "boosted.pt"
    if opts.boost_epochs == 0:
        shutil.copyfile(out / "baseline.pt", path)
        return [path]
    log(f"  boosting at BER {target:.3g} ({opts.boost_factor:g} x the baseline's {base_ber:.3g}), "
        f"{opts.boost_epochs} epochs")
    curriculum = Curriculum(target_ber=target, start_ber=target / 100.0, warmup_epochs=max(1, opts.boost_epochs - 1))
    boost(out / "baseline.pt", _spec(opts, out, target), epochs=opts.boost_epochs, curriculum=curriculum,
          out=path, seeds=opts.seeds[:3], seed=opts.seed, data_dir=opts.data_dir, progress=opts.progress)
    return [path]


def stage_tolerance(opts: FlowOptions, out: Path, log: Log) -> list[Path]:
    """Tolerance of the boosted network; the more tolerant of baseline and boosted becomes ``network.pt``.

    EDEN keeps boosting only while it raises the tolerable BER: if retraining did not (it can
    cost clean accuracy, or the target BER was too high to learn), the baseline is mapped.
    Fine mapping characterizes the chosen network per layer and data type too.
    """
    boosted = _characterize(opts, out, out / "boosted.pt", "coarse", log)
    base = read_json(out / "tolerance-baseline.json", "baseline tolerance")
    b0, b1 = float(base["coarse"]["ber"]), float(boosted["coarse"]["ber"])
    chosen = "boosted" if b1 >= b0 else "baseline"
    log(f"  boosted network tolerates BER {b1:.3g} (baseline {b0:.3g}): mapping the {chosen} network")
    shutil.copyfile(out / f"{chosen}.pt", out / "network.pt")
    write_json(out / "tolerance-boosted.json", boosted)
    if opts.granularity == "fine":
        doc = _characterize(opts, out, out / "network.pt", "both", log)
    else:
        doc = dict(boosted if chosen == "boosted" else base)
    doc["chosen"] = {"network": chosen, "baseline_ber": b0, "boosted_ber": b1}
    return [write_json(out / "tolerance.json", doc), out / "network.pt", out / "tolerance-boosted.json"]


def stage_map(opts: FlowOptions, out: Path, log: Log) -> list[Path]:
    """Operating points and placement from the curves and the tolerances."""
    from boosting.checkpoint import load_network
    from boosting.map import (_print_table, load_tolerance, map_network, partitions_from_model, save_config,
                              write_tensor_csv)
    from boosting.train import file_sha256

    nf = load_network(out / "network.pt")
    tolerances, _fmt = load_tolerance(out / "tolerance.json")
    if isinstance(tolerances, float) and tolerances <= 0.0:
        raise FlowError("the boosted network tolerates no errors at this accuracy goal: nothing to map "
                        "(loosen --max-drop or train longer)")
    sizes = _sizes(nf.net, opts, opts.batch_size)
    config = map_network(partitions_from_model(out / "model.json"), tolerances, sizes, mode=opts.mode,
                         granularity=opts.granularity,
                         source={"model": {"path": "model.json", "sha256": file_sha256(out / "model.json")},
                                 "tolerance": {"path": "tolerance.json",
                                               "sha256": file_sha256(out / "tolerance.json")},
                                 "network": {"path": "network.pt", "sha256": file_sha256(out / "network.pt")},
                                 "batch_size": opts.batch_size})
    _print_table(config)
    path = save_config(config, out / "dram-config.json")
    return [Path(path), write_tensor_csv(config, out / "dram-config.csv")]


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


def stage_validate(opts: FlowOptions, out: Path, log: Log) -> list[Path]:
    """Inference through the bench's DIMM at nominal and at the chosen setting, beside simulation."""
    from torch.utils.data import DataLoader, TensorDataset

    from boosting.checkpoint import load_network
    from boosting.hil import hil_evaluate, placements_from_config
    from boosting.inference import ErrorSpec, calibrate, evaluate
    from softmc_host.bench import Bench, BenchError
    from softmc_host.instruments import InstrumentError
    from firmware_bridge.link import LinkError
    from softmc_host.session import TesterError

    config = load_config(out / "dram-config.json")
    nf = load_network(out / "network.pt")
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
                log(f"  bench {name}: VDD {vdd} V, accuracy {acc.mean:.4f} [{acc.ci_low:.4f}, {acc.ci_high:.4f}], "
                    f"measured BER {runs[name]['measured_ber']:.3g}")
            sweep = _accuracy_sweep(opts, out, config, bench, net, loader, calibration, placements, log)
    except (BenchError, InstrumentError, TesterError, LinkError) as exc:
        raise FlowError(f"bench validation: {exc}") from None

    # Simulation at the same setting: the fitted model at the predicted BER of every tensor,
    # and at the BER the bench measured for it.
    predicted = {(t["layer"], t["kind"]): float(t["predicted_ber"]) for t in config["tensors"]}
    measured = {(t["layer"], t["kind"]): float(t["ber"]) for t in runs["chosen"]["tensors"]}
    sims = {}
    for label, overrides in (("predicted", predicted), ("measured", measured)):
        spec = _spec(opts, out, max(overrides.values()))
        spec = ErrorSpec(spec.model, overrides=overrides, fmt=opts.fmt, mitigation=opts.mitigation, seed=opts.seed)
        r = evaluate(net, loader, spec, seeds=opts.seeds, calibration=calibration)
        sims[label] = _acc(r)
        log(f"  simulation at the {label} BERs: accuracy {r.mean:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}]")
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
    return [write_json(out / "validate.json", doc)]


CURVE_POINTS = 5
CURVE_REPEATS = 2


def _accuracy_sweep(opts: FlowOptions, out: Path, config: dict[str, Any], bench: Any, net: Any, loader: Any,
                    calibration: Any, placements: Any, log: Log) -> list[dict[str, Any]]:
    """Accuracy through the DIMM and in simulation along the swept parameter (the seed slides'
    "DNN accuracy of LeNet using real DRAM"): the measured settings whose predicted BER is at
    least 1e-6, the harshest :data:`CURVE_POINTS` of them, mildest first."""
    from boosting.hil import hil_evaluate
    from boosting.inference import ErrorSpec, evaluate
    from boosting.map import partitions_from_model
    from softmc_host.timing import AccessTiming

    param = "vdd_v" if opts.mode == "power" else "trcd_ns"
    parts = {p.label: p for p in partitions_from_model(out / "model.json")}
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
        bits = sum(st_.bits_total for st_ in stats.values())
        measured = sum(st_.bits_flipped for st_ in stats.values()) / bits if bits else 0.0
        overrides = {(t["layer"], t["kind"]): parts[t["partition"]].curves[param].at(x) for t in config["tensors"]}
        model = _spec(opts, out, max(overrides.values())).model
        sim = evaluate(net, loader, ErrorSpec(model, overrides=overrides, fmt=opts.fmt, mitigation=opts.mitigation,
                                              seed=opts.seed), seeds=opts.seeds, calibration=calibration)
        points.append({param: x, "predicted_ber": max(overrides.values()), "measured_ber": measured,
                       "bench": _acc(acc), "simulation": _acc(sim)})
        log(f"  {param} {x:g}: bench {acc.mean:.4f} (BER {measured:.3g}), simulation {sim.mean:.4f} "
            f"[{sim.ci_low:.4f}, {sim.ci_high:.4f}] (BER {max(overrides.values()):.3g})")
    return points


def _acc(r: Any) -> dict[str, Any]:
    return {"mean": r.mean, "ci_low": r.ci_low, "ci_high": r.ci_high, "per_seed": list(r.per_seed),
            "n_samples": r.n_samples, "method": r.method}


def stage_energy(opts: FlowOptions, out: Path, log: Log) -> list[Path]:
    """DRAM energy and latency of one inference, model and measured."""
    from boosting.checkpoint import load_network
    from pipeline.energy import DdrTiming, energy_report

    config = load_config(out / "dram-config.json")
    val = read_json(out / "validate.json", "validation")
    nf = load_network(out / "network.pt")
    sizes = _sizes(nf.net, opts, 1)
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
    log(f"  DRAM energy per inference saved: model {e['model']:.1%}"
        + (f", measured {e['measured']:.1%}" if "measured" in e else "")
        + f"; stream latency -{doc['latency']['stream_reduction']:.1%}, "
          f"closed-page access -{doc['latency']['closed_page_reduction']:.1%}")
    return [write_json(out / "energy.json", doc)]


def stage_report(opts: FlowOptions, out: Path, log: Log) -> list[Path]:
    """The one-page report."""
    from pipeline.report import write_report

    paths = write_report(out, opts)
    log(f"  report: {paths[0]}")
    return paths

"""The one-page report of a flow run: Markdown with PNGs, every number traced to a file.

Every figure quoted in ``report.md`` is a *fact*: a value read from one of the flow's JSON
files at a key path (``validate.json: runs.chosen.accuracy.mean``). The report prints the
value with its source next to it, and ``report-facts.json`` lists the facts with the SHA-256
of each source file, so :func:`check_report` (``python -m pipeline check OUT``) can recompute
every number from the files and confirm that none changed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from pipeline.options import FlowError, FlowOptions
from pipeline.records import Fact, ReportFacts, read_document, write_document
from softmc_host.files import read_json, sha256_file, write_text

__all__ = ["write_report", "check_report", "lookup"]


def lookup(doc: Any, keypath: str) -> Any:
    """The value at a dotted key path (list indices as numbers, ``label=X`` picks the list item
    whose ``label`` is X)."""
    cur = doc
    for part in keypath.split("."):
        if isinstance(cur, list):
            if "=" in part:
                k, v = part.split("=", 1)
                cur = next(item for item in cur if str(item.get(k)) == v)
            else:
                cur = cur[int(part)]
        else:
            cur = cur[part]
    return cur


def _fmt(value: Any, style: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if style == "pct":
        return f"{100 * float(value):.1f} %"
    if style == "acc":
        return f"{float(value):.4f}"
    if style == "ber":
        return f"{float(value):.3g}"
    if style == "x":
        return f"{float(value):.3g}x"
    if style == "v":
        return f"{float(value):.3f} V"
    if style == "ns":
        return f"{float(value):.2f} ns"
    if style == "nj":
        return f"{float(value) * 1e9:.2f} nJ"
    if style == "a":
        return f"{float(value) * 1e3:.1f} mA"
    return str(value)


class _Facts:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.docs: dict[str, Any] = {}
        self.items: list[Fact] = []

    def doc(self, name: str) -> Any:
        if name not in self.docs:
            self.docs[name] = read_json(self.out / name, name, FlowError)
        return self.docs[name]

    def get(self, name: str, keypath: str) -> Any:
        return lookup(self.doc(name), keypath)

    def fact(self, name: str, keypath: str, style: str = "") -> str:
        """The value formatted, with its source, and remembered for :func:`check_report`."""
        value = self.get(name, keypath)
        text = _fmt(value, style)
        kept = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
        self.items.append(Fact(file=name, key=keypath, style=style, text=text, value=kept))
        return f"{text} <sub>[{name}: `{keypath}`]</sub>"


# ------------------------------------------------------------------------------ plots
def _plot_curves(model: dict[str, Any], config: dict[str, Any], param: str, path: Path) -> Optional[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    drawn = False
    for label, part in model["partitions"].items():
        c = part.get("curves", {}).get(param)
        if not c:
            continue
        x = c["x"]
        ber = [max(b, 1e-9) for b in c["ber"]]
        lo = [max(b, 1e-9) for b in c["ci95_lo"]]
        hi = [max(b, 1e-9) for b in c["ci95_hi"]]
        line, = ax.plot(x, c["fit"], lw=1.2, label=f"{label} fit")
        ax.errorbar(x, ber, yerr=[[b - low for b, low in zip(ber, lo)], [h - b for b, h in zip(ber, hi)]], fmt="o",
                    ms=3, color=line.get_color(), alpha=0.7)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for p in config["partitions"]:
        if p.get("used_bytes", 1):
            ax.axvline(float(p[param]), color="k", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel({"vdd_v": "VDD (V)", "trcd_ns": "tRCD (ns)", "trp_ns": "tRP (ns)"}.get(param, param))
    ax.set_ylabel("bit error rate")
    ax.set_title("Measured BER (95 % CI) and monotone fit; dotted: chosen setting")
    ax.grid(True, which="both", alpha=0.3)
    if len(model["partitions"]) <= 8:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _curve_series(doc: Optional[dict[str, Any]], label: str) -> Optional[tuple]:
    """The honest curve of a tolerance document (mean accuracy and its interval per BER), or None."""
    c = (doc or {}).get("curve")
    if not c:
        return None
    return (label, c["bers"], c["mean"], c.get("ci_low", c["mean"]), c.get("ci_high", c["mean"]))


def _probe_series(doc: dict[str, Any], label: str) -> tuple:
    probes = sorted((p for p in doc["coarse"]["probes"] if p["stage"] == "coarse"), key=lambda p: p["ber"])
    return (label, [p["ber"] for p in probes], [p["mean"] for p in probes], [p["ci_low"] for p in probes],
            [p["ci_high"] for p in probes])


def _plot_sweep(val: dict[str, Any], param: str, path: Path) -> Optional[Path]:
    """Accuracy along the swept parameter: through the DIMM and in simulation, with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted(val.get("sweep") or [], key=lambda p: p[param])
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    x = [p[param] for p in pts]
    for key, label in (("bench", "through the DIMM"), ("simulation", "fitted model, predicted BER")):
        m = [p[key]["mean"] for p in pts]
        line, = ax.plot(x, m, marker="o", ms=4, label=label)
        ax.fill_between(x, [p[key]["ci_low"] for p in pts], [p[key]["ci_high"] for p in pts],
                        color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(val["goal"], color="k", ls="--", lw=1, label="goal")
    ax.set_xlabel({"vdd_v": "VDD (V)", "trcd_ns": "tRCD (ns)"}[param])
    ax.set_ylabel("accuracy")
    ax.set_title("Network accuracy using the DIMM vs simulation")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_energy(energy: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    kinds = [k for k in ("model", "measured") if k in energy["energy_j"]]
    width = 0.38
    for i, setting in enumerate(("nominal", "chosen")):
        vals = [energy["energy_j"][k][setting] * 1e9 for k in kinds]
        ax.bar([j + (i - 0.5) * width for j in range(len(kinds))], vals, width, label=setting)
    ax.set_xticks(range(len(kinds)))
    ax.set_xticklabels([f"{k}" for k in kinds])
    ax.set_ylabel("DRAM energy per inference (nJ)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- report
def write_report(out: Path, opts: FlowOptions) -> list[Path]:
    """Write ``report.md``, its PNGs and ``report-facts.json`` into ``out``; return their paths."""
    from boosting.plots import plot_accuracy_vs_ber, plot_tolerance

    f = _Facts(out)
    model, config = f.doc("model.json"), f.doc("dram-config.json")
    tol0, tol = f.doc("tolerance-baseline.json"), f.doc("tolerance.json")
    tol_b = f.doc("tolerance-boosted.json")
    tol_c = f.doc("tolerance-control.json") if (out / "tolerance-control.json").exists() else None
    val, energy = f.doc("validate.json"), f.doc("energy.json")
    param = "vdd_v" if opts.mode == "power" else "trcd_ns"
    paths: list[Path] = []
    curve_png = _plot_curves(model, config, param, out / "report-ber-curves.png")
    series = [_curve_series(tol0, "baseline"), _curve_series(tol_c, "control"), _curve_series(tol_b, "boosted")]
    if series[0] is None:  # a flow of an older version: the search probes
        series = [_probe_series(tol0, "baseline"), None, _probe_series(tol_b, "boosted")]
    acc_png = plot_accuracy_vs_ber([s for s in series if s is not None],
                                   out / "report-accuracy.png", goal=val["goal"],
                                   title=f"{opts.network} {opts.fmt}: accuracy vs BER (fitted model)")
    tol_png = plot_tolerance(tol, out / "report-tolerance.png")
    energy_png = _plot_energy(energy, out / "report-energy.png")
    first = next(iter(model["partitions"]))
    sel = model["partitions"][first]["selected"]
    lines = [
        f"# EDEN flow report: {opts.network} on {opts.dataset}, {opts.fmt}, {opts.mode} mode, "
        f"{opts.granularity} mapping",
        "",
        f"Bench `{opts.bench}`; accuracy goal: at most {opts.max_drop:g} below the clean accuracy. "
        "Every number cites the file and key it comes from (`python -m pipeline check "
        f"{out}` recomputes them all).",
        "",
        "## 1. DRAM errors",
        "",
        f"Swept {param} over the rows the network occupies (`sweep.h5`). Fitted model "
        f"({first}): **{f.fact('model.json', f'partitions.{first}.selected.model')}** "
        f"(selected by {model['criterion'].upper()}; EDEN's rule picks "
        f"{f.fact('model.json', f'partitions.{first}.eden_rule.pick')}), "
        f"BER at the harshest setting {f.fact('model.json', f'partitions.{first}.observations.ber', 'ber')}.",
        "",
        "| model | log-likelihood | BIC |",
        "|---|---|---|",
    ]
    for i, cand in enumerate(model["partitions"][first]["candidates"]):
        lines.append(f"| {cand['model']} | {f.fact('model.json', f'partitions.{first}.candidates.{i}.loglik', 'ber')} "
                     f"| {f.fact('model.json', f'partitions.{first}.candidates.{i}.bic', 'ber')} |")
    lines += ["", f"Selected parameters: `{ {k: v for k, v in sel.items() if k not in ('model', 'number')} }`", ""]
    if curve_png:
        lines += [f"![BER curves]({curve_png.name})", ""]
        paths.append(curve_png)
    lines += [
        "## 2. Error tolerance",
        "",
        "Every network is measured against the baseline's clean accuracy in the same format and mitigation "
        f"(reference {f.fact('tolerance-baseline.json', 'curve.reference', 'acc')}): the tolerable BER is where the "
        "mean accuracy over the error seeds crosses the goal, interpolated on log BER, with a bootstrap interval "
        "over error seeds and test images.",
        "",
        "| network | clean accuracy | tolerable BER | 95 % interval |",
        "|---|---|---|---|",
    ]
    for name, doc in (("baseline", tol0), ("control", tol_c), ("boosted", tol_b)):
        if doc is None or "curve" not in doc:
            continue
        fname = f"tolerance-{name}.json"
        lines.append(f"| {name} | {f.fact(fname, 'curve.clean', 'acc')} | "
                     f"{f.fact(fname, 'curve.tolerable.ber', 'ber')} | "
                     f"{f.fact(fname, 'curve.tolerable.ci_low', 'ber')} - {f.fact(fname, 'curve.tolerable.ci_high', 'ber')} |")
    lines += [""]
    for key in (tol.get("chosen", {}).get("gains") or {}):
        lines.append(f"Gain {key.replace('/', ' over ')}: {f.fact('tolerance.json', f'chosen.gains.{key}.ratio', 'x')} "
                     f"({f.fact('tolerance.json', f'chosen.gains.{key}.ci_low', 'x')} - "
                     f"{f.fact('tolerance.json', f'chosen.gains.{key}.ci_high', 'x')}).")
    lines += [
        "",
        f"Mapped: the **{f.fact('tolerance.json', 'chosen.network')}** network (the most tolerant), whose coarse "
        f"search, re-scored on held-out error seeds, gives BER {f.fact('tolerance.json', 'coarse.ber', 'ber')}.",
        "",
        f"![accuracy vs BER]({acc_png.name})",
        "",
    ]
    paths += [acc_png]
    if tol.get("fine"):
        lines += ["Fine-grained tolerable BER per layer and data type:", "", "| layer | kind | BER |", "|---|---|---|"]
        for i, (layer, kind, _ber) in enumerate(tol["fine"]["bers"]):
            lines.append(f"| {layer} | {kind} | {f.fact('tolerance.json', f'fine.bers.{i}.2', 'ber')} |")
        lines.append("")
    lines += [f"![tolerance]({tol_png.name})", ""]
    paths.append(tol_png)
    lines += [
        "## 3. Chosen DRAM settings",
        "",
        f"Nominal: VDD {f.fact('dram-config.json', 'nominal.vdd_v', 'v')}, tRCD "
        f"{f.fact('dram-config.json', 'nominal.trcd_ns', 'ns')}, tRP {f.fact('dram-config.json', 'nominal.trp_ns', 'ns')}.",
        "",
        "| partition | VDD | tRCD | tRP | predicted BER | used bytes |",
        "|---|---|---|---|---|---|",
    ]
    for p in config["partitions"]:
        if not p.get("used_bytes"):
            continue
        k = f"partitions.label={p['label']}"
        lines.append(f"| {p['label']} | {f.fact('dram-config.json', k + '.vdd_v', 'v')} | "
                     f"{f.fact('dram-config.json', k + '.trcd_ns', 'ns')} | {f.fact('dram-config.json', k + '.trp_ns', 'ns')} | "
                     f"{f.fact('dram-config.json', k + '.predicted_ber', 'ber')} | {p['used_bytes']} |")
    lines += ["", "Tensor placement: `dram-config.csv`.", ""]
    lines += [
        "## 4. Validation on the bench",
        "",
        "The network's weights and input feature maps were written into the DIMM at their mapped "
        "addresses and read back at each setting; the bytes read back were used for inference.",
        "",
        "| setting | accuracy (mean) | 95 % CI | measured BER |",
        "|---|---|---|---|",
    ]
    for name in ("nominal", "chosen"):
        lines.append(f"| bench, {name} | {f.fact('validate.json', f'runs.{name}.accuracy.mean', 'acc')} | "
                     f"{f.fact('validate.json', f'runs.{name}.accuracy.ci_low', 'acc')} - "
                     f"{f.fact('validate.json', f'runs.{name}.accuracy.ci_high', 'acc')} | "
                     f"{f.fact('validate.json', f'runs.{name}.measured_ber', 'ber')} |")
    for label in ("predicted", "measured"):
        lines.append(f"| simulation, {label} BERs | {f.fact('validate.json', f'simulation.{label}.mean', 'acc')} | "
                     f"{f.fact('validate.json', f'simulation.{label}.ci_low', 'acc')} - "
                     f"{f.fact('validate.json', f'simulation.{label}.ci_high', 'acc')} | |")
    lines += [
        "",
        f"Goal {f.fact('validate.json', 'goal', 'acc')}; bench accuracy meets it: "
        f"**{f.fact('validate.json', 'meets_goal')}**. Bench mean within the simulation's CI (predicted BERs): "
        f"{f.fact('validate.json', 'agreement.predicted.hil_within_sim_ci')}; intervals overlap: "
        f"{f.fact('validate.json', 'agreement.predicted.intervals_overlap')}; (measured BERs): "
        f"{f.fact('validate.json', 'agreement.measured.hil_within_sim_ci')}.",
        "",
    ]
    sweep_png = _plot_sweep(val, param, out / "report-accuracy-sweep.png")
    if sweep_png:
        unit = "v" if param == "vdd_v" else "ns"
        lines += ["Along the sweep (bench: 2 repetitions; simulation: the fitted model at the BER the curves predict):",
                  "", f"| {param} | bench accuracy | bench BER | simulated accuracy (95 % CI) | predicted BER |",
                  "|---|---|---|---|---|"]
        for i, _p in enumerate(val["sweep"]):
            k = f"sweep.{i}"
            lines.append(f"| {f.fact('validate.json', f'{k}.{param}', unit)} | "
                         f"{f.fact('validate.json', f'{k}.bench.mean', 'acc')} | "
                         f"{f.fact('validate.json', f'{k}.measured_ber', 'ber')} | "
                         f"{f.fact('validate.json', f'{k}.simulation.mean', 'acc')} "
                         f"({f.fact('validate.json', f'{k}.simulation.ci_low', 'acc')} - "
                         f"{f.fact('validate.json', f'{k}.simulation.ci_high', 'acc')}) | "
                         f"{f.fact('validate.json', f'{k}.predicted_ber', 'ber')} |")
        lines += ["", f"![accuracy along the sweep]({sweep_png.name})", ""]
        paths.append(sweep_png)
    lines += [
        "## 5. Energy and latency per inference",
        "",
        f"{f.fact('energy.json', 'bytes_per_inference')} bytes of weights and feature maps per inference. "
        f"DRAM energy (IDD model, `softmc_host/ddr3_power.py`): {f.fact('energy.json', 'energy_j.model.nominal', 'nj')} "
        f"at nominal, {f.fact('energy.json', 'energy_j.model.chosen', 'nj')} at the chosen setting: "
        f"**{f.fact('energy.json', 'energy_saving.model', 'pct')} saved**.",
    ]
    if "measured" in energy["energy_j"]:
        lines.append(f"From the supply's measured current ({f.fact('energy.json', 'measured_current_a.nominal', 'a')} "
                     f"-> {f.fact('energy.json', 'measured_current_a.chosen', 'a')}): "
                     f"{f.fact('energy.json', 'energy_j.measured.nominal', 'nj')} -> "
                     f"{f.fact('energy.json', 'energy_j.measured.chosen', 'nj')}, "
                     f"**{f.fact('energy.json', 'energy_saving.measured', 'pct')} saved**.")
    lines += [
        "",
        f"Latency: the inference's access stream takes {f.fact('energy.json', 'latency.stream_reduction', 'pct')} "
        f"less time; a closed-page 64-byte access "
        f"{f.fact('energy.json', 'latency.closed_page_access_ns.nominal', 'ns')} -> "
        f"{f.fact('energy.json', 'latency.closed_page_access_ns.chosen_best', 'ns')} "
        f"({f.fact('energy.json', 'latency.closed_page_reduction', 'pct')} less).",
        "",
        f"![energy]({energy_png.name})",
        "",
        "## Sources",
        "",
    ]
    paths.append(energy_png)
    sources = {name: sha256_file(out / name) for name in sorted({item.file for item in f.items})}
    for name, sha in sources.items():
        lines.append(f"- `{name}` sha256 `{sha}`")
    report = write_text(out / "report.md", "\n".join(lines) + "\n")
    facts = write_document(out / "report-facts.json", ReportFacts(sources=sources, facts=f.items))
    return [report, facts] + paths


def check_report(out: Path) -> list[str]:
    """Recompute every fact of ``report.md`` from its source file; return the problems (empty: all agree)."""
    out = Path(out)
    facts = read_document(out / "report-facts.json", ReportFacts, "report facts")
    try:
        report = (out / "report.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError(f"cannot read the report {str(out / 'report.md')!r}: {exc}") from None
    problems = []
    for name, sha in facts.sources.items():
        if not (out / name).exists():
            problems.append(f"{name}: missing")
        elif sha256_file(out / name) != sha:
            problems.append(f"{name}: changed since the report was written")
    docs: dict[str, Any] = {}
    for item in facts.facts:
        name = item.file
        if name not in docs:
            try:
                docs[name] = read_json(out / name, name, FlowError)
            except FlowError as exc:
                problems.append(str(exc))
                docs[name] = None
        if docs[name] is None:
            continue
        try:
            value = lookup(docs[name], item.key)
        except (KeyError, IndexError, StopIteration, ValueError, TypeError, AttributeError):
            problems.append(f"{name}: key {item.key} not found")
            continue
        text = _fmt(value, item.style)
        if text != item.text:
            problems.append(f"{name}: {item.key} is {text}, the report says {item.text}")
        if f"{item.text} <sub>[{name}: `{item.key}`]</sub>" not in report:
            problems.append(f"report.md does not show {name}: {item.key}")
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{name}: {item.key} is not finite")
    return problems

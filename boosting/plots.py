"""Plots of the boosting tools (matplotlib, Agg backend: no display needed).

- :func:`plot_accuracy_vs_ber`: accuracy against bit error rate on a log axis, one line per
  series with its confidence band (baseline vs boosted network, per error model).
- :func:`plot_tolerance`: the probes of a tolerance document (``python -m boosting.characterize``,
  ``docs/tolerance-format.md``): coarse probes coloured pass/fail with the goal line, and the
  fine per-(layer, kind) BERs as bars when present.
- :func:`plot_history`: loss and accuracy per epoch of ``python -m boosting.train``.
- :func:`plot_design`: accuracy against storage cells per weight of ``python -m boosting.design``
  (one marker per encoding, one colour per bits per cell, the chosen per-layer design starred).

Every function writes a PNG and returns its path; figures are closed after saving.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from softmc_host.files import atomic_write  # noqa: E402

__all__ = ["Series", "plot_accuracy_vs_ber", "plot_tolerance", "plot_history", "plot_design"]

PathLike = Union[str, Path]
Series = tuple[str, Sequence[float], Sequence[float], Sequence[float], Sequence[float]]
"""``(label, bers, means, ci_lows, ci_highs)``; accuracies are fractions in [0, 1]."""


def _save(fig: Any, out_png: PathLike) -> Path:
    """Write ``fig`` as a PNG through :func:`softmc_host.files.atomic_write` and close it."""
    path = Path(out_png)
    try:
        fig.tight_layout()
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    finally:
        plt.close(fig)
    return path


def plot_accuracy_vs_ber(series: Sequence[Series], out_png: PathLike, goal: Optional[float] = None,
                         title: str = "Accuracy vs. bit error rate") -> Path:
    """Accuracy against BER (log x axis) with confidence bands.

    Parameters
    ----------
    series : sequence of (label, bers, means, ci_lows, ci_highs)
        One line per entry, drawn in order of increasing BER; points with a BER <= 0 are
        left out (they do not fit on a log axis).
    out_png : str or Path
        Destination PNG (parent directories are created).
    goal : float, optional
        Accuracy goal, drawn as a dashed horizontal line.
    title : str
        Figure title.

    Returns
    -------
    Path
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, bers, means, lows, highs in series:
        rows = sorted((float(b), float(m), float(lo), float(hi))
                      for b, m, lo, hi in zip(bers, means, lows, highs) if float(b) > 0.0)
        if not rows:
            continue
        x = [r[0] for r in rows]
        line, = ax.plot(x, [r[1] for r in rows], marker="o", ms=3.5, label=label)
        ax.fill_between(x, [r[2] for r in rows], [r[3] for r in rows], color=line.get_color(), alpha=0.2, lw=0)
    if goal is not None:
        ax.axhline(goal, color="k", ls="--", lw=1, label=f"goal {goal:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("bit error rate")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_tolerance(doc: dict[str, Any], out_png: PathLike) -> Path:
    """The probes of a tolerance document.

    Left: coarse probes (accuracy mean with its CI against BER, green when passed, red when
    failed), the baseline and the goal. Right, if the document has a fine result: the final
    BER of every (layer, kind) as bars on a log axis, with the coarse BER as a line.

    Parameters
    ----------
    doc : dict
        A document as written by ``python -m boosting.characterize``.
    out_png : str or Path
        Destination PNG.

    Returns
    -------
    Path
    """
    coarse = doc.get("coarse")
    fine = doc.get("fine")
    ncols = 2 if fine else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.0 * ncols, 4.2), squeeze=False)
    ax = axes[0][0]
    ref = coarse or fine or {}
    probes = [p for p in (coarse or {}).get("probes", []) if p["stage"] == "coarse"]
    if not probes and fine:
        probes = [p for p in fine.get("probes", []) if p["stage"] == "fine" and not p["overrides"]]
    for passed, colour, label in ((True, "tab:green", "pass"), (False, "tab:red", "fail")):
        sel = [p for p in probes if bool(p["passed"]) == passed and p["ber"] > 0]
        if sel:
            x = [p["ber"] for p in sel]
            y = [p["mean"] for p in sel]
            err = [[max(0.0, p["mean"] - p["ci_low"]) for p in sel], [max(0.0, p["ci_high"] - p["mean"]) for p in sel]]
            ax.errorbar(x, y, yerr=err, fmt="o", color=colour, ms=5, capsize=3, label=label)
    if "baseline" in ref:
        ax.axhline(ref["baseline"], color="tab:blue", lw=1, label=f"baseline {ref['baseline']:.3f}")
    if "goal" in ref:
        ax.axhline(ref["goal"], color="k", ls="--", lw=1, label=f"goal {ref['goal']:.3f}")
    if coarse and coarse.get("found"):
        ax.axvline(coarse["ber"], color="tab:gray", ls=":", lw=1, label=f"tolerated BER {coarse['ber']:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("uniform bit error rate")
    ax.set_ylabel("accuracy")
    ax.set_title(f"coarse: {doc.get('model', {}).get('model', '?')} {doc.get('fmt', '')} "
                 f"mitigation={doc.get('mitigation')}")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if fine:
        bx = axes[0][1]
        rows = fine.get("bers", [])
        labels = [f"{layer}\n{kind}" for layer, kind, _ in rows]
        values = [float(v) for _, _, v in rows]
        colours = ["tab:orange" if kind == "weight" else "tab:purple" for _, kind, _ in rows]
        bx.bar(range(len(values)), values, color=colours)
        bx.set_xticks(range(len(values)))
        bx.set_xticklabels(labels, rotation=90, fontsize=7)
        if values and min(values) > 0:
            bx.set_yscale("log")
        start = fine.get("start_ber")
        if start and start > 0:
            bx.axhline(start, color="k", ls="--", lw=1, label=f"start {start:.2e}")
            bx.legend(fontsize=8)
        bx.set_ylabel("tolerated BER")
        bx.set_title("fine: per layer (orange weight, purple IFM)")
    return _save(fig, out_png)


def plot_history(history: Sequence[dict[str, Any]], out_png: PathLike, title: str = "Training") -> Path:
    """Loss (left axis) and accuracies (right axis) per epoch.

    Parameters
    ----------
    history : sequence of dict
        One dict per epoch with ``epoch`` and ``loss`` and optionally ``train_acc``,
        ``test_acc`` (fractions) and ``ber``; missing or NaN values are skipped.
    out_png : str or Path
        Destination PNG.
    title : str
        Figure title.

    Returns
    -------
    Path
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    epochs = [int(h["epoch"]) + 1 for h in history]

    def column(name: str) -> tuple[list[int], list[float]]:
        pairs = [(e, float(h[name])) for e, h in zip(epochs, history)
                 if h.get(name) is not None and not math.isnan(float(h[name]))]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    ex, loss = column("loss")
    ax.plot(ex, loss, "o-", color="tab:red", label="loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    handles, labels = ax.get_legend_handles_labels()
    acc_cols = [c for c in ("train_acc", "test_acc") if any(h.get(c) is not None for h in history)]
    if acc_cols:
        ax2 = ax.twinx()
        for name, colour in zip(acc_cols, ("tab:blue", "tab:green")):
            x, y = column(name)
            ax2.plot(x, y, "s-", color=colour, label=name.replace("_", " "))
        ax2.set_ylabel("accuracy")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(handles, labels, fontsize=8, loc="center right")
    return _save(fig, out_png)


_ENC_MARKERS = {"dense": "o", "bitmask": "v", "bitmask+idxsync": "^", "csr": "s"}


def plot_design(rows: Sequence[dict[str, Any]], out_png: PathLike, goal: Optional[float] = None,
                chosen: Optional[tuple[float, float]] = None, title: str = "Accuracy vs. storage cells") -> Path:
    """Accuracy against cells per weight of uniform storage plans (``python -m boosting.design``).

    Parameters
    ----------
    rows : sequence of dict
        Rows with ``encoding``, ``idxsync``, ``bits_per_cell``, ``protection``,
        ``cells_per_weight``, ``accuracy``, ``ci_low``, ``ci_high``.
    out_png : str or Path
        Destination PNG.
    goal : float, optional
        Accuracy goal (dashed line).
    chosen : (cells_per_weight, accuracy), optional
        The per-layer design, drawn as a star.
    title : str
        Figure title.
    """
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    colours = {1: "tab:blue", 2: "tab:orange", 3: "tab:red", 4: "tab:purple"}
    seen: set[str] = set()
    for r in rows:
        enc = r["encoding"] + ("+idxsync" if r.get("idxsync") else "")
        b = int(r["bits_per_cell"])
        label = f"{'SLC' if b == 1 else f'MLC{b}'} {enc}"
        x, y = float(r["cells_per_weight"]), float(r["accuracy"])
        filled = r["protection"] != "none"
        ax.errorbar([x], [y], yerr=[[max(0.0, y - r["ci_low"])], [max(0.0, r["ci_high"] - y)]],
                    fmt=_ENC_MARKERS.get(enc, "o"), ms=6, color=colours.get(b, "k"), elinewidth=0.8,
                    mfc=colours.get(b, "k") if filled else "none", label=label if label not in seen else None)
        seen.add(label)
    if chosen is not None:
        ax.plot([chosen[0]], [chosen[1]], marker="*", ms=14, color="k", ls="none", label="per-layer design")
    if goal is not None:
        ax.axhline(goal, color="k", ls="--", lw=1, label=f"goal {goal:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("storage cells per weight (filled: protected)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out_png)

"""Maximum-likelihood fits of the registered error models to BER maps, and model selection.

:func:`fit_map` is the library function behind ``python -m errormodels.fit MAP.h5 -o model.json``:
it gathers each partition's :class:`~errormodels.observations.Observations` at the harshest
setting (:func:`observe`), asks every model of the registry to fit itself (:func:`fit_all`: each
model class's ``fit`` classmethod, so a model added with
:func:`~errormodels.models.register_model` is a candidate too), selects one by BIC or AIC
(:func:`select`), and adds the error curves (:mod:`errormodels.curves`). :func:`format_report`
renders the document as the command's text report.

Every model is scored on the same observation: which of the tested bits flipped
(and, for the bit-value model, what each held), so the log-likelihoods are
comparable. The built-in four:

- uniform: ``K ln p + (N - K) ln(1 - p)``, MLE ``p = K / N``;
- bit-value: the same per direction over bits holding 0 and bits holding 1;
- wordline: a two-component binomial mixture over groups of ``g`` adjacent bits
  of a tested row (weak groups with ``p_weak``, others with ``p_strong``), fitted
  by EM for each ``g`` in :data:`GROUP_BITS`, the best ``g`` kept;
- bitline: the same mixture over bitlines (a bit position of a bank, across the
  rows tested).

Models are compared by BIC (and AIC) with the full table reported.  EDEN's own
rule is reported beside it: a direction bias above 10 % points to the bit-value
model, more than 25 % of errors with an erroneous neighbour (along the row, or
the bitline in the adjacent row) to a correlated model.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from errormodels.curves import ber_table, curves_for
from errormodels.models import GROUP_BITS, MODELS
from errormodels.observations import Candidate, FitError, Observations, partition_rows
from profiler.reference import at_reference_refresh, nominal_vdd_of
from profiler.storage import BerMap, PointData
from softmc_host.files import sha256_file
from softmc_host.patterns import Pattern, PatternError, parse_pattern

__all__ = [
    "GROUP_BITS",
    "Observations",
    "Candidate",
    "Selection",
    "FitError",
    "FitWarning",
    "FORMAT",
    "FORMAT_VERSION",
    "observe",
    "fit_all",
    "select",
    "eden_rule",
    "partition_rows",
    "settings_of",
    "harshest_setting",
    "fit_map",
    "format_report",
    "file_sha256",
    "main",
]

log = logging.getLogger(__name__)

#: ``format`` and ``format_version`` of the document :func:`fit_map` returns (:mod:`errormodels.modelfile`).
FORMAT = "eden-error-model"
FORMAT_VERSION = 1

#: Hex SHA-256 of a file (the provenance hash every toolkit document records): an alias of
#: :func:`softmc_host.files.sha256_file`.
file_sha256 = sha256_file


class FitWarning(UserWarning):
    """A fit had to assume something the map does not record (e.g. the bits a pattern wrote)."""


def _pattern_of(point: PointData, definitions: dict[str, str]) -> Pattern | None:
    """The pattern a point wrote, rebuilt from ``patterns_json`` (None, with a :class:`FitWarning`, if it
    cannot be: an unknown name, or a ``file:`` pattern whose file is missing or has changed)."""
    name = str(point.attrs.get("pattern"))
    definition = definitions.get(name, name)
    text, _, digest = definition.partition(" sha256=")
    try:
        pattern = parse_pattern(text)
    except (PatternError, OSError, ValueError) as exc:
        problem = str(exc)
    else:
        recorded = digest.strip()
        rebuilt = pattern.definition.partition(" sha256=")[2]
        if not recorded or recorded == rebuilt:
            return pattern
        problem = f"the file of pattern {name!r} has changed since the sweep (SHA-256 differs)"
    warnings.warn(FitWarning(f"point {point.key}: cannot rebuild the data written ({problem}); "
                             "the bit-value model assumes half the tested bits held 1"), stacklevel=3)
    return None


def _ones_per_row(point: PointData, pattern: Pattern | None, row_bytes: int) -> np.ndarray:
    """Bits holding 1 in each tested row (half the row when the pattern cannot be rebuilt)."""
    if pattern is None:
        return np.full(len(point.rows), row_bytes * 4, np.int64)
    out = np.empty(len(point.rows), np.int64)
    for i, (bank, row) in enumerate(point.rows):
        out[i] = int(np.bitwise_count(pattern.data(int(bank), int(row), i, row_bytes)).sum())
    return out


def observe(
    ber_map: BerMap,
    keys: Iterable[str],
    partition: str = "dimm",
) -> dict[str, Observations]:
    """Gather the observations of the given points, per partition label.

    ``partition`` is ``dimm``, ``bank``, ``rowgroup:N`` or ``chip`` (the 8 byte lanes of
    the 64-bit bus: byte ``j`` of a row belongs to chip ``j % 8``).
    """
    row_bytes = int(ber_map.geometry["row_bytes"])  # required and checked by BerMap
    definitions = ber_map.meta["patterns"]
    chips = partition == "chip"
    if not chips:
        partition_rows(partition, 0, 0)  # an unknown partition or a bad rowgroup:N raises FitError
    out: dict[str, Observations] = {}
    patterns: dict[str, Pattern | None] = {}
    test_id = 0
    for key in keys:
        point = ber_map.point(key)
        name = str(point.attrs.get("pattern"))
        if name not in patterns:
            patterns[name] = _pattern_of(point, definitions)
        ones = _ones_per_row(point, patterns[name], row_bytes)
        errors = point.errors
        truncated = bool(point.attrs.get("errors_truncated", False))
        if chips:
            # Each chip's share of every row: counts from the error list (exact when not truncated).
            byte = errors["bit"].astype(np.int64) // 8
            chip_of = byte % 8
            local = (byte // 8) * 8 + errors["bit"].astype(np.int64) % 8
            for chip in range(8):
                obs = out.setdefault(f"chip{chip}", Observations(row_bits=row_bytes))
                sel = chip_of == chip
                n = len(point.rows) * row_bytes
                obs.n_bits += n
                share_ones = int(ones.sum()) // 8
                obs.n1 += share_ones
                obs.n0 += n - share_ones
                d = errors["dir"][sel]
                obs.k01 += int((d == 1).sum())
                obs.k10 += int((d == 0).sum())
                row_index = {(int(b), int(r)): i for i, (b, r) in enumerate(point.rows)}
                tests = np.array([row_index[(int(b), int(r))] for b, r in zip(errors["bank"][sel], errors["row"][sel])], np.int64)
                obs.err_test.append(test_id + tests)
                obs.err_bank.append(errors["bank"][sel])
                obs.err_row.append(errors["row"][sel])
                obs.err_bit.append(local[sel])
                obs.rows_tested += len(point.rows)
                for bank in point.rows[:, 0]:
                    obs.rows_per_bank[int(bank)] = obs.rows_per_bank.get(int(bank), 0) + 1
                obs.positions_complete &= not truncated
                obs.point_keys.append(key)
            test_id += len(point.rows)
            continue
        labels = [partition_rows(partition, int(b), int(r)) for b, r in point.rows]
        row_index = {(int(b), int(r)): i for i, (b, r) in enumerate(point.rows)}
        err_rows = np.array([row_index[(int(b), int(r))] for b, r in zip(errors["bank"], errors["row"])], np.int64)
        err_labels = np.array([labels[i] for i in err_rows]) if err_rows.size else np.array([], dtype=object)
        for label in sorted(set(labels)):
            obs = out.setdefault(label, Observations(row_bits=row_bytes * 8))
            rows_here = np.array([lab == label for lab in labels])
            n = int(point.bits_tested[rows_here].sum())
            n1 = int(ones[rows_here].sum())
            obs.n_bits += n
            obs.n1 += n1
            obs.n0 += n - n1
            obs.k01 += int(point.flips_0to1[rows_here].sum())
            obs.k10 += int(point.flips_1to0[rows_here].sum())
            sel = err_labels == label if err_rows.size else np.zeros(0, bool)
            obs.err_test.append(test_id + err_rows[sel])
            obs.err_bank.append(errors["bank"][sel])
            obs.err_row.append(errors["row"][sel])
            obs.err_bit.append(errors["bit"][sel])
            obs.rows_tested += int(rows_here.sum())
            for bank in point.rows[rows_here, 0]:
                obs.rows_per_bank[int(bank)] = obs.rows_per_bank.get(int(bank), 0) + 1
            obs.positions_complete &= not truncated
            obs.point_keys.append(key)
        test_id += len(point.rows)
    if not out:
        raise FitError("no measured points to fit")
    return out


def fit_all(obs: Observations, seed: int = 0) -> list[Candidate]:
    """Fit every registered model to one partition's observations, in registration order.

    Each model class fits itself (:meth:`ErrorModel.fit <errormodels.models.ErrorModel.fit>`);
    those that return None (e.g. the clustered models without complete error positions or
    without errors) are left out.
    """
    if obs.n_bits == 0:
        raise FitError("no bits tested")
    candidates = []
    for cls in list(MODELS.values()):
        fitted = cls.fit(obs, seed)
        if fitted is not None:
            candidates.append(fitted)
    return candidates


@dataclass
class Selection:
    """The chosen model of one partition, the full table and EDEN's rule beside it."""

    label: str
    observations: Observations
    candidates: list[Candidate]
    criterion: str
    rule: dict[str, Any]

    @property
    def best(self) -> Candidate:
        """The candidate with the lowest criterion."""
        key = (lambda c: c.bic) if self.criterion == "bic" else (lambda c: c.aic)
        return min(self.candidates, key=key)


def eden_rule(obs: Observations) -> dict[str, Any]:
    """EDEN's rule of thumb: direction bias > 10 % -> bit-value; > 25 % neighbouring errors -> correlated."""
    p01 = obs.k01 / obs.n0 if obs.n0 else 0.0
    p10 = obs.k10 / obs.n1 if obs.n1 else 0.0
    bias = abs(p01 - p10) / (p01 + p10) if p01 + p10 > 0 else 0.0
    test, bank, row, bit = obs.positions()
    along_row = along_bitline = 0.0
    if bit.size:
        take = slice(0, 200_000)  # enough errors for a share; keeps the set work bounded
        test, bank, row, bit = test[take], bank[take], row[take], bit[take]
        keys = set(zip(test.tolist(), bit.tolist()))
        along_row = float(np.mean([(t, b - 1) in keys or (t, b + 1) in keys for t, b in keys]))
        by_row = set(zip(bank.tolist(), row.tolist(), bit.tolist()))
        along_bitline = float(np.mean([(k, r - 1, b) in by_row or (k, r + 1, b) in by_row for k, r, b in by_row]))
    if bias > 0.10:
        pick = "bit-value"
    elif max(along_row, along_bitline) > 0.25:
        pick = "wordline" if along_row >= along_bitline else "bitline"
    else:
        pick = "uniform"
    return {
        "direction_bias": bias,
        "neighbours_along_row": along_row,
        "neighbours_along_bitline": along_bitline,
        "pick": pick,
        "note": "bitline neighbours need adjacent rows in the sweep (rows are often sampled)",
    }


def select(obs: Observations, label: str, criterion: str = "bic", seed: int = 0) -> Selection:
    """Fit all models and choose by ``criterion`` (``bic`` or ``aic``)."""
    if criterion not in ("bic", "aic"):
        raise FitError(f"criterion must be bic or aic, got {criterion!r}")
    return Selection(label, obs, fit_all(obs, seed), criterion, eden_rule(obs))


def settings_of(ber_map: BerMap) -> dict[tuple, list[str]]:
    """Point keys grouped by setting (vdd_v, trcd_ns, trp_ns, temp_c): patterns and reps merged.

    A map swept over the refresh interval contributes its points at the reference interval only
    (:func:`profiler.reference.at_reference_refresh`)."""
    groups: dict[tuple, list[str]] = {}
    for row in at_reference_refresh(ber_map.summary()):
        setting = tuple(
            None if row.get(k) is None or (isinstance(row.get(k), float) and math.isnan(row[k])) else round(float(row[k]), 6)
            for k in ("vdd_v", "trcd_ns", "trp_ns", "temp_c")
        )
        groups.setdefault(setting, []).append(row["key"])
    return groups


def harshest_setting(ber_map: BerMap) -> tuple[tuple, list[str]]:
    """The setting with the most flips (the most informative for fitting shapes)."""
    flips: dict[tuple, int] = {}
    keys_by: dict[tuple, list[str]] = {}
    summary = {r["key"]: r for r in ber_map.summary()}
    for setting, keys in settings_of(ber_map).items():
        keys_by[setting] = keys
        flips[setting] = sum(summary[k]["flips_0to1"] + summary[k]["flips_1to0"] for k in keys)
    if not flips:
        raise FitError(f"{ber_map.path} holds no points")
    best = max(flips, key=lambda s: flips[s])
    return best, keys_by[best]


def fit_map(path: str, partition: str = "dimm", criterion: str = "bic", seed: int = 0) -> dict[str, Any]:
    """Fit a BER map: model selection per partition at the most informative setting, and error curves.

    Returns the document written by ``python -m errormodels.fit`` (``docs/error-model-format.md``).
    """
    from softmc_host import __version__

    ber_map = BerMap(path)
    setting, keys = harshest_setting(ber_map)
    observations = observe(ber_map, keys, partition)
    nominal_vdd = nominal_vdd_of(ber_map.meta)
    table = ber_table(ber_map, "dimm" if partition == "chip" else partition)
    parts: dict[str, Any] = {}
    for label, obs in sorted(observations.items()):
        chosen = select(obs, label, criterion, seed)
        curves = curves_for(table.get(label, {}), nominal_vdd) if label in table else {}
        parts[label] = {
            "selected": chosen.best.model.to_dict(),
            "candidates": [c.to_dict() for c in sorted(chosen.candidates, key=lambda c: c.bic)],
            "eden_rule": chosen.rule,
            "observations": {
                "n_bits": obs.n_bits, "n0": obs.n0, "n1": obs.n1, "k01": obs.k01, "k10": obs.k10,
                "ber": obs.ber, "positions_complete": obs.positions_complete,
            },
            "curves": {name: curve.to_dict() for name, curve in curves.items()},
            "table": [
                {**dict(zip(("vdd_v", "trcd_ns", "trp_ns", "temp_c"), setting_key)), "flips": k, "bits": n}
                for setting_key, (k, n) in sorted(table.get(label, {}).items(), key=lambda item: str(item[0]))
            ],
        }
    names = [parts[label]["selected"]["model"] for label in parts]
    overall = max(set(names), key=names.count)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "software": f"eden-dram-toolkit {__version__}",
        "source": {
            "file": str(ber_map.path.resolve()),
            "sha256": file_sha256(str(ber_map.path)),
            "points": keys,
            "setting": dict(zip(("vdd_v", "trcd_ns", "trp_ns", "temp_c"), setting)),
            "dimm": ber_map.meta.get("dimm", {}),
        },
        "partition": partition,
        "criterion": criterion,
        "selected_model": overall,
        "partitions": parts,
    }


def format_report(doc: dict[str, Any]) -> str:
    """The text report of a fitted document (:func:`fit_map`): per partition the observations, the
    candidate table (the selected model marked ``<``), EDEN's rule and the curves; then the model."""
    setting = ", ".join(f"{k}={v}" for k, v in doc["source"]["setting"].items() if v is not None)
    lines = [f"fitted at the setting with the most errors: {setting} ({len(doc['source']['points'])} points)"]
    for label, part in doc["partitions"].items():
        obs = part["observations"]
        lines += ["", f"[{label}] {obs['n_bits']:,} bits, {obs['k01']:,} 0->1 and {obs['k10']:,} 1->0 flips, "
                      f"BER {obs['ber']:.3e}",
                  f"  {'model':<12}{'params':<52}{'loglik':>14}{'AIC':>14}{'BIC':>14}"]
        for c in part["candidates"]:
            params = {k: v for k, v in c.items()
                      if k not in ("model", "number", "seed", "loglik", "n_params", "aic", "bic", "detail")}
            text = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            mark = " <" if c["model"] == part["selected"]["model"] else ""
            lines.append(f"  {c['number']} {c['model']:<10}{text:<52}{_num(c['loglik'], 14)}{_num(c['aic'], 14)}"
                         f"{_num(c['bic'], 14)}{mark}")
        rule = part["eden_rule"]
        lines.append(
            f"  EDEN rule: direction bias {rule['direction_bias']:.0%}, neighbours along row "
            f"{rule['neighbours_along_row']:.0%} / bitline {rule['neighbours_along_bitline']:.0%} -> {rule['pick']}"
        )
        for name, curve in part["curves"].items():
            fixed = ", ".join(f"{k}={v}" for k, v in curve["fixed"].items() if v is not None)
            pairs = " ".join(f"{x:g}:{b:.1e}" for x, b in zip(curve["x"], curve["fit"]))
            lines.append(f"  curve BER({name}) at {fixed}: {pairs}")
    lines += ["", f"selected model: {doc['selected_model']}"]
    return "\n".join(lines)


def _num(value: Any, width: int) -> str:
    return f"{value:>{width}.1f}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def _print_report(doc: dict[str, Any]) -> None:
    """Deprecated: print :func:`format_report` (kept for callers not yet switched)."""
    print(format_report(doc))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m errormodels.fit MAP.h5 [--partition P] -o model.json``; exit 2 on bad input."""
    import argparse

    from profiler.storage import MapError
    from softmc_host.cli import add_out, add_verbosity, configure_logging, fail
    from softmc_host.files import write_json

    parser = argparse.ArgumentParser(
        prog="python -m errormodels.fit",
        description="Fit the registered error models (0 uniform, 1 wordline, 2 bitline, 3 bit-value, and any "
                    "registered one) to a BER map and select one per partition.",
    )
    parser.add_argument("map", help="BER map (HDF5) written by python -m profiler.sweep")
    parser.add_argument("--partition", default="dimm", help="dimm (default), bank, rowgroup:N (rows) or chip (byte lane)")
    parser.add_argument("--criterion", default="bic", choices=("bic", "aic"), help="information criterion (default bic)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fitted models' weak locations (default 0)")
    add_out(parser, "model.json", "the fitted-model JSON (docs/error-model-format.md)")
    add_verbosity(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FitWarning)
            doc = fit_map(args.map, args.partition, args.criterion, args.seed)
    except (MapError, FitError, OSError) as exc:
        return fail(str(exc))
    for item in caught:
        log.warning("%s", item.message)
    print(format_report(doc))
    try:
        write_json(args.out, doc)
    except OSError as exc:
        return fail(f"cannot write {args.out!r}: {exc.strerror or exc}")
    log.info("written %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

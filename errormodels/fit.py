"""Maximum-likelihood fits of EDEN's error models to BER maps, and model selection.

Every model is scored on the same observation: which of the tested bits flipped
(and, for the bit-value model, what each held), so the log-likelihoods are
comparable:

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

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from errormodels.models import Bitline, BitValue, ErrorModel, Uniform, Wordline
from profiler.patterns import Pattern, PatternError, parse_pattern
from profiler.storage import BerMap, PointData

__all__ = [
    "GROUP_BITS",
    "Observations",
    "Candidate",
    "Selection",
    "FitError",
    "FitWarning",
    "observe",
    "fit_all",
    "select",
    "eden_rule",
    "partition_rows",
]

GROUP_BITS = (8, 64, 512, 65536)
_EPS = 1e-300


class FitError(ValueError):
    """The data cannot be fitted (no points, no bits, unknown partition)."""


class FitWarning(UserWarning):
    """A fit had to assume something the map does not record (e.g. the bits a pattern wrote)."""


def _ascii_digits(text: str) -> bool:
    """True for a non-empty run of ASCII digits only (``str.isdigit`` also accepts '²')."""
    return bool(text) and text.isascii() and text.isdigit()


@dataclass
class Observations:
    """What a set of measured points says about one partition.

    Counts are over every tested bit; positions (for the clustered models) are
    available only when no point of the set truncated its error list.
    """

    n_bits: int = 0
    n0: int = 0  # tested bits that held 0
    n1: int = 0
    k01: int = 0
    k10: int = 0
    row_bits: int = 0  # bits of one tested row in this partition
    rows_tested: int = 0  # (point, row) pairs
    positions_complete: bool = True
    # Error positions: (test id, bank, row, bit in the partition's row) where test id numbers (point, row).
    err_test: list[np.ndarray] = field(default_factory=list)
    err_bank: list[np.ndarray] = field(default_factory=list)
    err_row: list[np.ndarray] = field(default_factory=list)
    err_bit: list[np.ndarray] = field(default_factory=list)
    rows_per_bank: dict[int, int] = field(default_factory=dict)  # tests per bank (bitline trials)
    point_keys: list[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        """Flipped bits."""
        return self.k01 + self.k10

    @property
    def ber(self) -> float:
        """Bit error rate."""
        return self.k / self.n_bits if self.n_bits else 0.0

    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Concatenated (test, bank, row, bit) of every recorded error."""
        if not self.err_bit:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty, empty
        return tuple(np.concatenate(part).astype(np.int64) for part in (self.err_test, self.err_bank, self.err_row, self.err_bit))  # type: ignore[return-value]


def partition_rows(partition: str, bank: int, row: int) -> str:
    """The partition label of a row: ``all``, ``bank<b>``, ``rows<start>-<end>``; chips are split by bits."""
    if partition == "dimm":
        return "all"
    if partition == "bank":
        return f"bank{bank}"
    if partition.startswith("rowgroup:"):
        size_text = partition.split(":", 1)[1]
        if not _ascii_digits(size_text) or int(size_text) < 1:
            raise FitError(f"partition {partition!r}: rowgroup:N needs a positive N")
        size = int(size_text)
        start = row // size * size
        return f"rows{start}-{start + size - 1}"
    raise FitError(f"unknown partition {partition!r} (dimm, bank, rowgroup:N, chip)")


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
    if not chips and partition != "dimm" and partition != "bank" and not partition.startswith("rowgroup:"):
        raise FitError(f"unknown partition {partition!r} (dimm, bank, rowgroup:N, chip)")
    if partition.startswith("rowgroup:"):
        size_text = partition.split(":", 1)[1]
        if not _ascii_digits(size_text) or int(size_text) < 1:
            raise FitError(f"partition {partition!r}: rowgroup:N needs a positive N")
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


# Likelihoods and fits -------------------------------------------------------------------------


def _xlogy(k: float, p: float) -> float:
    return 0.0 if k == 0 else k * math.log(max(p, _EPS))


def _binom_ll(k: int, n: int, p: float) -> float:
    return _xlogy(k, p) + _xlogy(n - k, 1.0 - p)


@dataclass
class Candidate:
    """One fitted model: its parameters, log-likelihood and information criteria."""

    model: ErrorModel
    loglik: float
    n_params: int
    n_obs: int
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def aic(self) -> float:
        """Akaike information criterion."""
        return 2 * self.n_params - 2 * self.loglik

    @property
    def bic(self) -> float:
        """Bayesian information criterion."""
        return self.n_params * math.log(max(self.n_obs, 1)) - 2 * self.loglik

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            **self.model.to_dict(),
            "loglik": self.loglik,
            "n_params": self.n_params,
            "aic": self.aic,
            "bic": self.bic,
            **({"detail": self.detail} if self.detail else {}),
        }


def _mixture_em(counts: np.ndarray, trials: np.ndarray, weights: np.ndarray, iterations: int = 300) -> tuple[float, float, float, float]:
    """Two-component binomial mixture by EM over distinct (k, n) values with multiplicities.

    Returns (weak_fraction, p_weak, p_strong, loglik) where loglik is the exact-pattern
    log-likelihood (no binomial coefficients).
    """
    k = counts.astype(np.float64)
    n = trials.astype(np.float64)
    w = weights.astype(np.float64)
    total_k, total_n = float((w * k).sum()), float((w * n).sum())
    p_all = total_k / total_n if total_n else 0.0
    if total_k == 0:
        return 0.0, 0.0, 0.0, 0.0
    # Start: weak = locations with errors above the mean rate.
    hot = k / np.maximum(n, 1) > p_all
    f = max(1e-6, min(0.5, float((w * hot).sum() / w.sum())))
    p_w = min(1 - 1e-9, max(p_all * 2, float((w * k * hot).sum() / max((w * n * hot).sum(), 1))))
    p_s = max(1e-12, min(p_all, float((w * k * ~hot).sum() / max((w * n * ~hot).sum(), 1))))
    ll_old = -math.inf
    for _ in range(iterations):
        log_w = np.log(f) + k * np.log(p_w) + (n - k) * np.log1p(-p_w)
        log_s = np.log1p(-f) + k * np.log(max(p_s, _EPS)) + (n - k) * np.log1p(-min(p_s, 1 - 1e-12))
        top = np.maximum(log_w, log_s)
        norm = top + np.log(np.exp(log_w - top) + np.exp(log_s - top))
        ll = float((w * norm).sum())
        r = np.exp(log_w - norm)
        wr = w * r
        f = float(np.clip(wr.sum() / w.sum(), 1e-9, 1 - 1e-9))
        p_w = float(np.clip((wr * k).sum() / max((wr * n).sum(), _EPS), 1e-12, 1 - 1e-9))
        ws = w * (1 - r)
        p_s = float(np.clip((ws * k).sum() / max((ws * n).sum(), _EPS), 0.0, 1 - 1e-9))
        if p_s > p_w:  # keep the weak component the weak one
            f, p_w, p_s = 1 - f, p_s, p_w
        if abs(ll - ll_old) < 1e-9 * max(1.0, abs(ll)):
            break
        ll_old = ll
    return f, p_w, p_s, ll


def _hist(values: np.ndarray, n_locations: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct error counts, how many locations have each), including the error-free ones."""
    per_location = np.bincount(values) if values.size else np.zeros(0, np.int64)
    per_location = per_location[per_location > 0]
    ks, mult = np.unique(per_location, return_counts=True)
    zero = n_locations - int(mult.sum())
    return np.r_[0, ks], np.r_[zero, mult]


def _fit_wordline(obs: Observations, seed: int) -> Candidate | None:
    test, _, _, bit = obs.positions()
    best = None
    for g in GROUP_BITS:
        g_eff = min(g, obs.row_bits)
        per_row = obs.row_bits // g_eff
        ids = test * per_row + bit // g_eff
        _, inverse = np.unique(ids, return_inverse=True) if ids.size else (None, np.zeros(0, np.int64))
        ks, mult = _hist(inverse, obs.rows_tested * per_row)
        f, p_w, p_s, ll = _mixture_em(ks, np.full(ks.size, g_eff), mult)
        if best is None or ll > best[4]:
            best = (g_eff, f, p_w, p_s, ll)
    if best is None:
        return None
    g_eff, f, p_w, p_s, ll = best
    ratio = min(1e12, p_w / p_s) if p_s > 0 else 1e12
    model = Wordline(ber=obs.ber, seed=seed, weak_fraction=f, ratio=max(1.0, ratio), group_bits=int(g_eff))
    return Candidate(model, ll, 4, obs.n_bits, {"p_weak": p_w, "p_strong": p_s})


def _fit_bitline(obs: Observations, seed: int) -> Candidate | None:
    _, bank, _, bit = obs.positions()
    ks_all, n_all, mult_all = [], [], []
    for b, trials in sorted(obs.rows_per_bank.items()):
        sel = bank == b
        ks, mult = _hist(bit[sel], obs.row_bits)
        ks_all.append(ks)
        n_all.append(np.full(ks.size, trials))
        mult_all.append(mult)
    if not ks_all:
        return None
    f, p_w, p_s, ll = _mixture_em(np.concatenate(ks_all), np.concatenate(n_all), np.concatenate(mult_all))
    ratio = min(1e12, p_w / p_s) if p_s > 0 else 1e12
    model = Bitline(ber=obs.ber, seed=seed, weak_fraction=f, ratio=max(1.0, ratio))
    return Candidate(model, ll, 3, obs.n_bits, {"p_weak": p_w, "p_strong": p_s})


def fit_all(obs: Observations, seed: int = 0) -> list[Candidate]:
    """Fit every model to one partition's observations (clustered ones need complete positions)."""
    if obs.n_bits == 0:
        raise FitError("no bits tested")
    p = obs.ber
    candidates = [Candidate(Uniform(ber=p, seed=seed), _binom_ll(obs.k, obs.n_bits, p), 1, obs.n_bits)]
    p01 = obs.k01 / obs.n0 if obs.n0 else 0.0
    p10 = obs.k10 / obs.n1 if obs.n1 else 0.0
    ll3 = _binom_ll(obs.k01, obs.n0, p01) + _binom_ll(obs.k10, obs.n1, p10)
    share = p01 / (p01 + p10) if p01 + p10 > 0 else 0.5
    candidates.append(
        Candidate(BitValue(ber=(p01 + p10) / 2, seed=seed, zero_share=share), ll3, 2, obs.n_bits, {"p01": p01, "p10": p10})
    )
    if obs.positions_complete and obs.k > 0:
        for fitted in (_fit_wordline(obs, seed), _fit_bitline(obs, seed)):
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
    """Point keys grouped by setting (vdd_v, trcd_ns, trp_ns, temp_c): patterns and reps merged."""
    groups: dict[tuple, list[str]] = {}
    for row in ber_map.summary():
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


# Command line -----------------------------------------------------------------------------------

FORMAT = "eden-error-model"
FORMAT_VERSION = 1


def file_sha256(path: "str | os.PathLike[str]") -> str:
    """Hex SHA-256 of a file's bytes (the provenance hash every toolkit document records)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fit_map(path: str, partition: str = "dimm", criterion: str = "bic", seed: int = 0) -> dict[str, Any]:
    """Fit a BER map: model selection per partition at the most informative setting, and error curves.

    Returns the document written by ``python -m errormodels.fit`` (``docs/error-model-format.md``).
    """
    from errormodels.curves import ber_table, curves_for
    from softmc_host import __version__

    ber_map = BerMap(path)
    setting, keys = harshest_setting(ber_map)
    observations = observe(ber_map, keys, partition)
    nominal_vdd = ber_map.meta.get("bench", {}).get("supply", {}).get("nominal_v")
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


def _print_report(doc: dict[str, Any]) -> None:
    setting = ", ".join(f"{k}={v}" for k, v in doc["source"]["setting"].items() if v is not None)
    print(f"fitted at the setting with the most errors: {setting} ({len(doc['source']['points'])} points)")
    for label, part in doc["partitions"].items():
        obs = part["observations"]
        print(f"\n[{label}] {obs['n_bits']:,} bits, {obs['k01']:,} 0->1 and {obs['k10']:,} 1->0 flips, BER {obs['ber']:.3e}")
        print(f"  {'model':<12}{'params':<52}{'loglik':>14}{'AIC':>14}{'BIC':>14}")
        for c in part["candidates"]:
            params = {k: v for k, v in c.items() if k in ("ber", "weak_fraction", "ratio", "group_bits", "zero_share")}
            text = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            mark = " <" if c["model"] == part["selected"]["model"] else ""
            print(f"  {c['number']} {c['model']:<10}{text:<52}{c['loglik']:>14.1f}{c['aic']:>14.1f}{c['bic']:>14.1f}{mark}")
        rule = part["eden_rule"]
        print(
            f"  EDEN rule: direction bias {rule['direction_bias']:.0%}, neighbours along row "
            f"{rule['neighbours_along_row']:.0%} / bitline {rule['neighbours_along_bitline']:.0%} -> {rule['pick']}"
        )
        for name, curve in part["curves"].items():
            fixed = ", ".join(f"{k}={v}" for k, v in curve["fixed"].items() if v is not None)
            pairs = " ".join(f"{x:g}:{b:.1e}" for x, b in zip(curve["x"], curve["fit"]))
            print(f"  curve BER({name}) at {fixed}: {pairs}")
    print(f"\nselected model: {doc['selected_model']}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m errormodels.fit MAP.h5 [--partition P] -o model.json``; exit 2 on bad input."""
    import argparse
    import json
    import sys

    from profiler.storage import MapError

    parser = argparse.ArgumentParser(
        prog="python -m errormodels.fit",
        description="Fit EDEN's error models (0 uniform, 1 wordline, 2 bitline, 3 bit-value) to a BER map.",
    )
    parser.add_argument("map", help="BER map (HDF5) written by python -m profiler.sweep")
    parser.add_argument("--partition", default="dimm", help="dimm (default), bank, rowgroup:N (rows) or chip (byte lane)")
    parser.add_argument("--criterion", default="bic", choices=("bic", "aic"), help="information criterion (default bic)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fitted models' weak locations (default 0)")
    parser.add_argument("-o", "--out", default="model.json", help="output JSON (default model.json)")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FitWarning)
            doc = fit_map(args.map, args.partition, args.criterion, args.seed)
    except (MapError, FitError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for item in caught:
        print(f"warning: {item.message}", file=sys.stderr)
    _print_report(doc)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, default=float)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

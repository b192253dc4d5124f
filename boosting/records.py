"""The side documents of the boosting commands, and their one writer.

Every JSON and CSV file the training and characterization commands write beside their main
output goes through :mod:`softmc_host.files` (atomic: complete or absent):

* ``<stem>.train.json`` (``format = "eden-train"``, :data:`TRAIN_FORMAT_VERSION`): what
  :func:`boosting.training.train_clean` and :func:`boosting.training.boost` did: the
  network file and its SHA-256, the kind (``clean`` / ``boosted``) and the network's meta
  (settings, history, accuracies, the error spec and parent of a boosted network);
  :func:`write_train_record`;
* ``<stem>.train.csv``: the per-epoch history (and the before/after rows of boosting);
  :func:`write_csv`;
* the tolerance document of :func:`boosting.characterization.characterize_network`
  (``docs/tolerance-format.md``) and its ``<stem>.csv`` of probes: :func:`write_tolerance`,
  :func:`probe_rows`.

The JSON-ready forms of the library's values live here too (:func:`spec_to_dict`,
:func:`accuracy_to_dict`), so a document names an error spec or an accuracy one way only.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

from softmc_host.files import sha256_file, write_json, write_text

if TYPE_CHECKING:  # pragma: no cover - typing only; keeps this module free of torch
    from boosting.inference import AccuracyResult, ErrorSpec

__all__ = [
    "TRAIN_FORMAT",
    "TRAIN_FORMAT_VERSION",
    "side_path",
    "spec_to_dict",
    "spec_from_dict",
    "accuracy_to_dict",
    "train_record",
    "write_train_record",
    "csv_text",
    "write_csv",
    "probe_rows",
    "write_tolerance",
]

TRAIN_FORMAT = "eden-train"
"""``format`` of the ``<stem>.train.json`` documents."""

TRAIN_FORMAT_VERSION = 1
"""``format_version`` of the ``<stem>.train.json`` documents."""

PathLike = Union[str, Path]


def side_path(out: PathLike, suffix: str) -> Path:
    """``out`` with its extension replaced by ``suffix`` (``out/lenet.pt``, ``.train.json`` -> ``out/lenet.train.json``)."""
    out = Path(out)
    return out.with_name(out.stem + suffix)


def spec_to_dict(spec: "ErrorSpec") -> dict[str, Any]:
    """JSON-ready description of an error spec (the layout is the default one and not stored)."""
    return {"model": spec.model.to_dict(), "fmt": spec.fmt, "mitigation": spec.mitigation, "seed": spec.seed,
            "margin": spec.margin, "overrides": [[k[0], k[1], v] for k, v in spec.overrides.items()],
            "layer_types": list(spec.layer_types)}


def spec_from_dict(data: Mapping[str, Any]) -> "ErrorSpec":
    """The :class:`~boosting.inference.ErrorSpec` of a :func:`spec_to_dict` description (default layout).

    Keys other than ``model`` may be missing and take the spec's defaults (``layer_types``
    is absent from documents written before it existed: convolution and linear layers).

    Raises
    ------
    boosting.inference.InferenceError
        For a description that is not a mapping with a ``model``, or bad values.
    """
    from boosting.inference import ErrorSpec, InferenceError
    from errormodels.models import model_from_dict

    if not isinstance(data, Mapping) or "model" not in data:
        raise InferenceError(f"an error spec description is a mapping with a 'model', got {type(data).__name__}")
    overrides = data.get("overrides") or []
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, (list, tuple)) and len(o) == 3
                                                            for o in overrides):
        raise InferenceError(f"spec overrides must be [layer, kind, ber] triples, got {overrides!r}")
    kw: dict[str, Any] = {k: data[k] for k in ("fmt", "mitigation", "seed", "margin", "layer_types") if k in data}
    return ErrorSpec(model_from_dict(data["model"]), overrides={(o[0], o[1]): o[2] for o in overrides}, **kw)


def accuracy_to_dict(r: "AccuracyResult") -> dict[str, Any]:
    """JSON-ready :class:`~boosting.inference.AccuracyResult`."""
    return {"mean": r.mean, "ci_low": r.ci_low, "ci_high": r.ci_high, "per_seed": list(r.per_seed),
            "seeds": list(r.seeds), "n_samples": r.n_samples, "method": r.method}


def train_record(network_path: PathLike, kind: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``<stem>.train.json`` document of a written network file.

    Parameters
    ----------
    network_path : str or Path
        The network file (its SHA-256 is recorded, so it must exist).
    kind : {"clean", "boosted"}
        What wrote it.
    meta : mapping
        The network's meta (its keys are copied to the top level of the document).
    """
    return {"format": TRAIN_FORMAT, "format_version": TRAIN_FORMAT_VERSION, "kind": kind,
            "network": {"path": str(network_path), "sha256": sha256_file(network_path)}, **meta}


def write_train_record(network_path: PathLike, kind: str, meta: Mapping[str, Any]) -> Path:
    """Write :func:`train_record` to ``<stem>.train.json`` beside the network file; return its path."""
    return write_json(side_path(network_path, ".train.json"), train_record(network_path, kind, meta))


def csv_text(rows: Sequence[Mapping[str, Any]], fields: Sequence[str] = ()) -> str:
    """``rows`` as CSV text: the columns are ``fields`` then every other key, in order of appearance."""
    columns: list[str] = list(fields)
    for r in rows:
        columns += [k for k in r if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: PathLike, rows: Sequence[Mapping[str, Any]], fields: Sequence[str] = ()) -> Path:
    """Write :func:`csv_text` atomically (:func:`softmc_host.files.write_text`); return the path."""
    return write_text(path, csv_text(rows, fields))


def probe_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every probe of a tolerance document as flat CSV rows (``search`` = coarse or fine)."""
    rows = []
    for search in ("coarse", "fine"):
        part = doc.get(search)
        for i, p in enumerate((part or {}).get("probes", [])):
            key = p.get("key") or ["", ""]
            rows.append({"search": search, "index": i, "stage": p["stage"], "ber": p["ber"], "layer": key[0],
                         "kind": key[1], "key_ber": max((o[2] for o in p["overrides"] if o[:2] == key), default=""),
                         "mean": p["mean"], "ci_low": p["ci_low"], "ci_high": p["ci_high"],
                         "per_seed": " ".join(f"{a:.6g}" for a in p["per_seed"]), "passed": p["passed"],
                         "rolled_back": p["rolled_back"], "n_overrides": len(p["overrides"])})
    return rows


def write_tolerance(doc: Mapping[str, Any], out: PathLike) -> tuple[Path, Path]:
    """Write a tolerance document to ``out`` (JSON) and its probes to ``<stem>.csv``; return both paths."""
    out = Path(out)
    rows = probe_rows(doc)
    json_path = write_json(out, dict(doc))
    csv_path = write_csv(side_path(out, ".csv"), rows, () if rows else ("search",))
    return json_path, csv_path

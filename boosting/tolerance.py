"""Tolerance documents: the tolerable BER of every tensor of a network (``docs/tolerance-format.md``).

``python -m boosting.characterize`` writes an ``eden-tolerance`` document; ``python -m
boosting.map`` and the pipeline read it here. The document types are :mod:`msgspec` structs
(:class:`Tolerance`, with :class:`CoarseTolerance`, :class:`FineTolerance`, :class:`Probe`), so
reading is validation: a field of the wrong type, out of range or missing gives one
:class:`ToleranceError` line naming the file and the field (``tolerance.json: fine.bers[2][2]:
expected float <= 1.0, got 2.0``). :func:`json_schema` is the published JSON Schema.

Also accepted (the short forms of ``docs/tolerance-format.md``): ``{"bers": [[layer, kind,
ber], ...], "fmt": ...}`` (:class:`ToleranceBers`), ``{"ber": x, "fmt": ...}``
(:class:`ToleranceBer`) and, from Python, ``{(layer, kind): ber}``.

The helpers :func:`convert_document` and :func:`validation_message` turn a
``msgspec.ValidationError`` into such a line; the DRAM configuration reader
(:mod:`boosting.map.config`) uses them too.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, TypeVar, Union

import msgspec

from errormodels.models import finite_float, show
from softmc_host.files import read_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "MAX_JSON_DEPTH",
    "ToleranceError",
    "Probe",
    "Reference",
    "CoarseHoldout",
    "FineHoldout",
    "CoarseTolerance",
    "FineTolerance",
    "Tolerance",
    "ToleranceBers",
    "ToleranceBer",
    "read_tolerance",
    "load_tolerance",
    "tolerance_bers",
    "check_ber",
    "json_schema",
    "convert_document",
    "validation_message",
    "read_document",
    "file_name",
]

log = logging.getLogger(__name__)

FORMAT = "eden-tolerance"
FORMAT_VERSION = 1
#: Tensor kinds (the same as :data:`boosting.inference.KINDS`; a test keeps the two equal).
KINDS = ("weight", "ifm")
#: Deepest nesting accepted in a tolerance, model or configuration document (the formats need < 10).
MAX_JSON_DEPTH = 64

Key = tuple[str, str]
PathLike = Union[str, Path]
T = TypeVar("T")

Kind = Literal["weight", "ifm"]
#: A tolerable BER: a finite number in (0, 1].
Ber = Annotated[float, msgspec.Meta(gt=0.0, le=1.0, description="tolerable bit error rate, in (0, 1]")]
#: ``coarse.ber``: 0.0 when no probed BER passed.
BerOrZero = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Layer = Annotated[str, msgspec.Meta(min_length=1, description="layer name (torch module path)")]
#: ``[layer, kind, ber]``.
BerRow = tuple[Layer, Kind, Ber]


class ToleranceError(ValueError):
    """A tolerance file or document that cannot be read or is malformed (one-line message naming the field)."""


# ----------------------------------------------------------------------------- document types
class Probe(msgspec.Struct, kw_only=True):
    """One accuracy evaluation of a search (``CoarseResult`` / ``FineResult`` probes)."""

    stage: str = ""
    ber: Optional[float] = None
    overrides: list[tuple[str, str, Optional[float]]] = []
    mean: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    per_seed: list[Optional[float]] = []
    passed: Optional[bool] = None
    key: Optional[tuple[str, str]] = None
    rolled_back: bool = False
    mask_seeds: list[int] = []


Accuracy = Annotated[float, msgspec.Meta(ge=0.0, le=1.0, description="accuracy, a fraction in [0, 1]")]
Seed = Annotated[int, msgspec.Meta(ge=0)]


class Reference(msgspec.Struct, kw_only=True):
    """What the goal is anchored at: ``goal = accuracy - max_drop`` (absent in older documents)."""

    accuracy: Accuracy
    source: Literal["given", "ancestor", "self", "value"]
    path: Optional[str] = None
    sha256: Optional[str] = None


class CoarseHoldout(msgspec.Struct, kw_only=True):
    """The coarse result re-scored on held-out error seeds, backed off until it passed."""

    seeds: list[Seed] = []
    passed: bool
    backed_off: Annotated[int, msgspec.Meta(ge=0)] = 0
    ber: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class FineHoldout(msgspec.Struct, kw_only=True):
    """The fine assignment re-scored on held-out error seeds, backed off until it passed."""

    seeds: list[Seed] = []
    passed: bool
    backed_off: Annotated[int, msgspec.Meta(ge=0)] = 0
    uniform_ber: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    bers: list[BerRow] = []


def _no_duplicates(rows: list[BerRow]) -> None:
    seen: set[Key] = set()
    for i, (layer, kind, _ber) in enumerate(rows):
        if (layer, kind) in seen:
            raise ValueError(f"bers[{i}]: {show(layer)}/{kind} is given twice")
        seen.add((layer, kind))


class CoarseTolerance(msgspec.Struct, kw_only=True):
    """The coarse search (EDEN Algorithm 2): the highest uniform BER that passed."""

    ber: BerOrZero
    found: bool = True
    baseline: Optional[float] = None
    goal: Optional[float] = None
    statistic: Optional[str] = None
    probes: list[Probe] = []
    search_ber: Optional[BerOrZero] = None
    holdout: Optional[CoarseHoldout] = None


class FineTolerance(msgspec.Struct, kw_only=True):
    """The fine search (EDEN Algorithm 3): a tolerable BER per (layer, kind)."""

    bers: list[BerRow] = []
    start_ber: Optional[float] = None
    order: list[tuple[str, str]] = []
    sensitivity: list[tuple[str, str, Optional[float]]] = []
    baseline: Optional[float] = None
    goal: Optional[float] = None
    statistic: Optional[str] = None
    probes: list[Probe] = []
    search_bers: list[BerRow] = []
    holdout: Optional[FineHoldout] = None

    def __post_init__(self) -> None:
        _no_duplicates(self.bers)


class TolerableBer(msgspec.Struct, kw_only=True):
    """A tolerable BER with its bootstrap interval (:class:`boosting.tolerable.Tolerance`)."""

    ber: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    ci_low: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    ci_high: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    goal: float
    reference: Accuracy
    max_drop: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    status: Literal["interpolated", "above_range", "below_range"]
    confidence: float
    n_seeds: Annotated[int, msgspec.Meta(ge=1)]
    n_samples: Annotated[int, msgspec.Meta(ge=1)]
    n_boot: Annotated[int, msgspec.Meta(ge=1)]


class Curve(msgspec.Struct, kw_only=True):
    """The honest accuracy curve and the tolerable BER it gives (``--curve-seeds``, the flow's stages)."""

    bers: list[Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]]
    mean: list[Accuracy]
    ci_low: list[Accuracy] = []
    ci_high: list[Accuracy] = []
    seeds: list[Seed] = []
    reference: Accuracy
    tolerable: TolerableBer
    evaluated_points: Optional[int] = None
    clean: Optional[Accuracy] = None


class Tolerance(msgspec.Struct, kw_only=True):
    """An ``eden-tolerance`` document (``python -m boosting.characterize``).

    Open: keys it does not know (the pipeline adds ``chosen``) are kept out of the struct but
    do not make the document invalid.
    """

    format: Literal["eden-tolerance"]
    format_version: Literal[1]
    network: Optional[dict[str, Any]] = None
    reference: Optional[Reference] = None
    clean: Optional[dict[str, Any]] = None
    fmt: Optional[str] = None
    mitigation: Optional[str] = None
    model: Optional[dict[str, Any]] = None
    spec: Optional[dict[str, Any]] = None
    max_drop: Optional[float] = None
    seeds: list[int] = []
    holdout_seeds: list[int] = []
    statistic: Optional[str] = None
    confidence: Optional[float] = None
    mode: Optional[str] = None
    search: Optional[dict[str, Any]] = None
    retrain_epochs: Optional[int] = None
    samples: Optional[int] = None
    layers: list[str] = []
    coarse: Optional[CoarseTolerance] = None
    fine: Optional[FineTolerance] = None
    curve: Optional[Curve] = None


class ToleranceBers(msgspec.Struct, kw_only=True):
    """The short form ``{"bers": [[layer, kind, ber], ...], "fmt": ...}``."""

    bers: list[BerRow]
    fmt: Optional[str] = None

    def __post_init__(self) -> None:
        _no_duplicates(self.bers)


class ToleranceBer(msgspec.Struct, kw_only=True):
    """The short form ``{"ber": x, "fmt": ...}``: one tolerable BER for every tensor."""

    ber: Ber
    fmt: Optional[str] = None


def json_schema() -> dict[str, Any]:
    """JSON Schema of the ``eden-tolerance`` document (:class:`Tolerance`)."""
    return msgspec.json.schema(Tolerance)


# ----------------------------------------------------------------------------- validation helpers
_AT = re.compile(r" - at (`key` in )?`([^`]*)`$")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_GOT_TYPE = re.compile(r", got `[^`]*`$")


def _lookup(doc: Any, path: str) -> tuple[bool, Any]:
    """The value at a msgspec path (``$.a[0].b``), if the path can be followed."""
    if not path.startswith("$"):
        return False, None
    rest, value = path[1:], doc
    while rest:
        m = _STEP.match(rest)
        if m is None:
            return False, None
        try:
            value = value[m.group(1)] if m.group(1) is not None else value[int(m.group(2))]
        except (KeyError, IndexError, TypeError):
            return False, None
        rest = rest[m.end():]
    return True, value


def validation_message(exc: msgspec.ValidationError, doc: Any, where: str) -> str:
    """One line ``WHERE: FIELD: what is wrong, got VALUE`` from a msgspec validation error."""
    text = " ".join(str(exc).split())
    m = _AT.search(text)
    if m is None:
        message, path, is_key = text, "$", False
    else:
        message, path, is_key = text[: m.start()], m.group(2), m.group(1) is not None
    field = path[1:].lstrip(".") if path.startswith("$") else path
    found, value = (False, None) if is_key else _lookup(doc, path)
    if found and (message.startswith("Expected") or message.startswith("Number out of range")):
        if _GOT_TYPE.search(message):
            got = f", got {show(value)}"
            message = _GOT_TYPE.sub(lambda _m: got, message)
        elif ", got " not in message:
            message = f"{message}, got {show(value)}"
    message = message.replace("`", "")
    message = message[:1].lower() + message[1:]
    if is_key:
        field = f"a key of {field}" if field else "a key"
    return f"{where}: {field}: {message}" if field else f"{where}: {message}"


def convert_document(doc: Any, type_: type[T], where: str, error: type[Exception]) -> T:
    """``msgspec.convert(doc, type_)`` with a one-line ``error`` naming ``where`` and the field."""
    try:
        return msgspec.convert(doc, type_)
    except msgspec.ValidationError as exc:
        raise error(validation_message(exc, doc, where)) from None
    except RecursionError:
        raise error(f"{where}: nested too deeply") from None


def _depth_ok(doc: Any, limit: int) -> bool:
    """Whether ``doc`` (JSON values) nests at most ``limit`` containers deep (iterative: no recursion)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Any = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def file_name(path: PathLike, limit: int = 160) -> str:
    """A file's name for a one-line message: as is when short and printable, else shortened (``show``)."""
    name = str(path)
    return name if len(name) <= limit and name.isprintable() else show(name, limit)


def read_document(source: Union[PathLike, Any], what: str, error: type[Exception],
                  default_where: str) -> tuple[Any, str]:
    """The JSON document of a file (or a document as is) and the name messages use for it.

    Raises ``error`` (one line) for a missing, unreadable, non-UTF-8 or corrupt file and for
    nesting deeper than :data:`MAX_JSON_DEPTH`.
    """
    if isinstance(source, (str, Path)):
        where = file_name(source)
        try:
            doc = read_json(source, f"{what} file", error)
        except error as exc:  # a path too long for a one-line message is shortened
            shown = repr(where) if where == str(source) else where  # show() quotes already
            raise error(str(exc).replace(repr(str(source)), shown)) from None
    else:
        where, doc = default_where, source
    if not _depth_ok(doc, MAX_JSON_DEPTH):
        raise error(f"{where}: {what} JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    return doc, where


def check_ber(value: Any, name: str, error: type[Exception] = ToleranceError) -> float:
    """A tolerable BER: a finite number in (0, 1] (not a bool), as float; else ``error`` naming ``name``."""
    f = finite_float(value)
    if f is None or not 0.0 < f <= 1.0:
        raise error(f"tolerable BER of {name} must be in (0, 1], got {show(value)}")
    return f


def _check_identity(doc: Mapping[str, Any], where: str) -> None:
    if doc.get("format") != FORMAT:
        raise ToleranceError(f"{where}: a {show(doc.get('format'))} document, not {FORMAT}")
    v = doc.get("format_version")
    if not (isinstance(v, int) and not isinstance(v, bool) and v == FORMAT_VERSION):
        raise ToleranceError(f"{where}: format_version {show(v)} is not supported ({FORMAT_VERSION})")


# ----------------------------------------------------------------------------- readers
def read_tolerance(source: Union[PathLike, Mapping[str, Any]]) -> Union[Tolerance, ToleranceBers, ToleranceBer]:
    """Read and validate a tolerance file or JSON document.

    Parameters
    ----------
    source : path or dict
        An ``eden-tolerance`` document, or one of the short forms ``{"bers": [...]}`` /
        ``{"ber": x}``; a file holding one.

    Returns
    -------
    Tolerance, ToleranceBers or ToleranceBer
        The validated document.

    Raises
    ------
    ToleranceError
        A missing or unreadable file, not JSON, nested deeper than 64 levels, another format or
        version, or a field of the wrong type or out of range (one line naming the file and field).
    """
    doc, where = read_document(source, "tolerance", ToleranceError, "tolerance document")
    if not isinstance(doc, Mapping):
        raise ToleranceError(f"{where}: tolerance must be a JSON object, got {show(doc)}")
    if "format" in doc:
        _check_identity(doc, where)
        return convert_document(doc, Tolerance, where, ToleranceError)
    if "bers" in doc:
        return convert_document(doc, ToleranceBers, where, ToleranceError)
    if "ber" in doc:
        return convert_document(doc, ToleranceBer, where, ToleranceError)
    raise ToleranceError(f"{where}: tolerance has no 'bers' or 'ber' (expected an {FORMAT} document)")


def tolerance_bers(tol: Union[Tolerance, ToleranceBers, ToleranceBer],
                   where: str = "tolerance document") -> tuple[Union[dict[Key, float], float], Optional[str]]:
    """The tolerable BERs a validated document gives: ``(bers, fmt)`` as :func:`load_tolerance`."""
    if isinstance(tol, ToleranceBer):
        return tol.ber, tol.fmt
    if isinstance(tol, ToleranceBers):
        if not tol.bers:
            raise ToleranceError(f"{where}: tolerance 'bers' is empty")
        return {(layer, kind): ber for layer, kind, ber in tol.bers}, tol.fmt
    if tol.fine is not None and tol.fine.bers:
        return {(layer, kind): ber for layer, kind, ber in tol.fine.bers}, tol.fmt
    if tol.coarse is None:
        raise ToleranceError(f"{where}: tolerance document has neither fine BERs nor a coarse BER")
    if not tol.coarse.found or tol.coarse.ber == 0.0:
        raise ToleranceError(f"{where}: the network tolerates no bit errors (coarse characterization found none): "
                             "nothing to map")
    return tol.coarse.ber, tol.fmt


def load_tolerance(source: Union[PathLike, Mapping[Any, Any]]) -> tuple[Union[dict[Key, float], float], Optional[str]]:
    """Tolerable BERs from a tolerance file or document.

    Accepted: an ``eden-tolerance`` document (the fine per-key BERs when present, else the
    coarse BER for every tensor), ``{"bers": [[layer, kind, ber], ...]}``, ``{"ber": x}``, or
    (API) ``{(layer, kind): ber}``.

    Returns
    -------
    bers : dict or float
        ``{(layer, kind): ber}``, or one BER for every tensor.
    fmt : str or None
        The numeric format the tolerance was measured in, if recorded.

    Raises
    ------
    ToleranceError
        As :func:`read_tolerance`; also an empty short-form ``bers``, a coarse result that found
        no tolerable BER, a document with neither fine BERs nor a coarse BER.
    """
    if isinstance(source, Mapping) and source and all(isinstance(k, tuple) for k in source):
        if not all(len(k) == 2 for k in source):
            raise ToleranceError("tolerance keys must be (layer, kind) pairs")
        return {(str(k[0]), str(k[1])): check_ber(v, "/".join(map(str, k))) for k, v in source.items()}, None
    where = file_name(source) if isinstance(source, (str, Path)) else "tolerance document"
    bers, fmt = tolerance_bers(read_tolerance(source), where)
    n = 1 if isinstance(bers, float) else len(bers)
    log.debug("%s: %d tolerable BER(s), fmt %s", where, n, fmt)
    return bers, fmt

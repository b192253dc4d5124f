"""The fitted error-model file (``model.json``): its schema, its one reader, and models from it.

``python -m errormodels.fit`` writes the file (``docs/error-model-format.md``); every reader of
the toolkit (training, the DRAM mapping, the pipeline) goes through :func:`read_model_file` or,
for a document already in memory, :func:`validate_model_doc`. The schema is a set of
:mod:`msgspec` structs (:class:`ModelFile` and the types of its fields); :func:`json_schema`
returns it as a JSON Schema. Beyond the types, the reader checks what a type cannot say: the
partition labels' syntax, each partition's ``selected`` model (through the model registry, so a
registered model reads back like the built-in four) and each curve (:meth:`Curve.from_dict
<errormodels.curves.Curve.from_dict>`: lengths, ranges, monotone fit).

Every problem is one :class:`ModelFileError` line naming the file and the field, e.g.
``model.json: partition 'bank0': curves.vdd_v: curve vdd_v: x must be strictly increasing``.
"""

from __future__ import annotations

import json
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import msgspec
from msgspec import Meta

from errormodels.models import ErrorModel, ModelError, get_model, model_from_dict, show
from profiler.reference import RANGES

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_JSON_DEPTH",
    "RANGES",
    "ModelFileError",
    "ModelFile",
    "Source",
    "Setting",
    "PartitionDoc",
    "CandidateDoc",
    "CurveDoc",
    "read_model_file",
    "validate_model_doc",
    "partition_model",
    "error_model_from",
    "json_schema",
]

#: ``format`` of the file.
FORMAT = "eden-error-model"
#: ``format_version`` this reader accepts.
FORMAT_VERSION = 1
#: Deepest nesting of JSON containers accepted (the format itself nests 5 deep).
MAX_JSON_DEPTH = 64
#: Largest file read, in bytes.
MAX_FILE_BYTES = 256 * 1024 * 1024

_LABEL = re.compile(r"(all|bank[0-9]+|rows[0-9]+-[0-9]+|chip[0-9]+)")


class ModelFileError(ModelError):
    """A model file that cannot be read or breaks the format: one line naming the file and the field."""


# ----------------------------------------------------------------------------- schema
VddV = Annotated[float, Meta(ge=RANGES["vdd_v"][0], le=RANGES["vdd_v"][1], description="supply voltage, V")]
TrcdNs = Annotated[float, Meta(ge=RANGES["trcd_ns"][0], le=RANGES["trcd_ns"][1], description="tRCD, ns")]
TrpNs = Annotated[float, Meta(ge=RANGES["trp_ns"][0], le=RANGES["trp_ns"][1], description="tRP, ns")]
TempC = Annotated[float, Meta(ge=RANGES["temp_c"][0], le=RANGES["temp_c"][1], description="temperature, °C")]
Count = Annotated[int, Meta(ge=0)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]


class Setting(msgspec.Struct, kw_only=True):
    """One DRAM setting; null for a parameter the sweep did not record."""

    vdd_v: Optional[VddV] = None
    trcd_ns: Optional[TrcdNs] = None
    trp_ns: Optional[TrpNs] = None
    temp_c: Optional[TempC] = None


class Source(msgspec.Struct, kw_only=True):
    """The BER map fitted: its path and SHA-256, the points used and their setting, the DIMM."""

    file: Optional[str] = None
    sha256: Optional[Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]] = None
    points: list[str] = []
    setting: Optional[Setting] = None
    dimm: dict[str, Any] = {}


class CandidateDoc(msgspec.Struct, kw_only=True):
    """One fitted model of a partition: the model's ``to_dict`` plus its scores (other keys: parameters)."""

    model: str
    number: Optional[int] = None
    loglik: Optional[float] = None
    n_params: Optional[Count] = None
    aic: Optional[float] = None
    bic: Optional[float] = None
    detail: dict[str, Any] = {}


class EdenRuleDoc(msgspec.Struct, kw_only=True):
    """EDEN's rule of thumb beside the selection."""

    direction_bias: Optional[float] = None
    neighbours_along_row: Optional[float] = None
    neighbours_along_bitline: Optional[float] = None
    pick: Optional[str] = None
    note: Optional[str] = None


class ObservationsDoc(msgspec.Struct, kw_only=True):
    """What the fitted points say about the partition: tested bits and flips by direction."""

    n_bits: Count = 0
    n0: Count = 0
    n1: Count = 0
    k01: Count = 0
    k10: Count = 0
    ber: Optional[Probability] = None
    positions_complete: bool = True


class CurveDoc(msgspec.Struct, kw_only=True):
    """BER along one parameter at fixed others (checked further by ``Curve.from_dict``)."""

    param: str
    fixed: dict[str, Optional[float]] = {}
    x: list[float]
    flips: list[float]
    bits: list[float]
    ber: Optional[list[float]] = None
    ci95_lo: list[float]
    ci95_hi: list[float]
    fit: list[float]


class TableRow(msgspec.Struct, kw_only=True):
    """Flips and bits of the partition at one setting."""

    vdd_v: Optional[float] = None
    trcd_ns: Optional[float] = None
    trp_ns: Optional[float] = None
    temp_c: Optional[float] = None
    flips: Count = 0
    bits: Count = 0


class PartitionDoc(msgspec.Struct, kw_only=True):
    """One partition: the selected model, the candidate table, EDEN's rule, observations, curves."""

    selected: Optional[dict[str, Any]] = None
    candidates: list[CandidateDoc] = []
    eden_rule: Optional[EdenRuleDoc] = None
    observations: Optional[ObservationsDoc] = None
    curves: dict[str, CurveDoc] = {}
    table: list[TableRow] = []


class ModelFile(msgspec.Struct, kw_only=True):
    """The document ``python -m errormodels.fit`` writes (``docs/error-model-format.md``).

    Open: keys not listed are kept by :func:`read_model_file` and ignored.
    """

    format: Literal["eden-error-model"]
    format_version: Literal[1]
    software: Optional[str] = None
    source: Optional[Source] = None
    partition: Optional[str] = None
    criterion: Optional[Literal["bic", "aic"]] = None
    selected_model: Optional[str] = None
    partitions: dict[str, PartitionDoc]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the model file (:class:`ModelFile`)."""
    return msgspec.json.schema(ModelFile)


# ----------------------------------------------------------------------------- messages
_KINDS = {"object": "an object", "array": "a list", "str": "a string", "int": "an integer", "float": "a number",
          "bool": "true or false", "null": "null"}
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def _kinds(text: str) -> str:
    return " or ".join(_KINDS.get(part.strip(), part.strip()) for part in text.split("|"))


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _locate(doc: Any, tp: Any, path: str) -> list[Union[str, int]]:
    """The field path of a msgspec error, with the dict keys msgspec writes as ``[...]`` found again."""
    named: list[Union[str, int]] = []
    node: Any = doc
    for field, index in _SEGMENT.findall(path):
        tp = _strip_optional(tp)
        if field:
            named.append(field)
            hints = typing.get_type_hints(tp) if isinstance(tp, type) and issubclass(tp, msgspec.Struct) else {}
            tp = hints.get(field, Any)
            node = node.get(field) if isinstance(node, Mapping) else None
        elif index != "...":
            named.append(int(index))
            args = typing.get_args(tp)
            tp = args[0] if args else Any
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:  # a dict value: find the first one that fails
            args = typing.get_args(tp)
            tp = args[1] if len(args) == 2 else Any
            if not isinstance(node, Mapping):
                named.append("...")
                continue
            for key, value in node.items():
                try:
                    msgspec.convert(value, tp)
                except msgspec.ValidationError:
                    named.append(str(key))
                    node = value
                    break
            else:
                named.append("...")
                node = None
    return named


def _field_name(named: list[Union[str, int]]) -> str:
    """``partition 'bank0': curves.vdd_v`` from ``["partitions", "bank0", "curves", "vdd_v"]``."""
    prefix = ""
    if len(named) >= 2 and named[0] == "partitions":
        prefix, named = f"partition {show(named[1])}", named[2:]
    text = ""
    for part in named:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier() or part == "...":
            text += f".{part}" if text else part
        else:
            text += f"[{show(part)}]"
    if prefix:
        return f"{prefix}: {text}" if text else prefix
    return text or "the document"


def _validation_message(exc: msgspec.ValidationError, doc: Any, tp: Any) -> str:
    """A msgspec error as one line in the toolkit's words, naming the field."""
    text = " ".join(str(exc).split())
    head, _, path = text.partition(" - at `")
    field = _field_name(_locate(doc, tp, path.rstrip("`"))) if path else "the document"
    m = re.fullmatch(r"Expected `(.+?)`, got `(.+?)`", head)
    if m:
        return f"{field} must be {_kinds(m.group(1))}, got {_kinds(m.group(2))}"
    m = re.fullmatch(r"Expected `(.+?)` (.+)", head)
    if m:
        return f"{field} must be {_kinds(m.group(1))} {m.group(2)}"
    m = re.fullmatch(r"Object missing required field `(.+)`", head)
    if m:
        return f"{field} lacks {m.group(1)!r}"
    m = re.fullmatch(r"Invalid enum value (.+)", head)
    if m:
        return f"{field} has the invalid value {m.group(1)}"
    return f"{field}: {head[:1].lower()}{head[1:]}"


def _name(path: Union[str, "os.PathLike[str]"]) -> str:
    """A file name for a one-line message: control characters shown escaped, long names shortened."""
    text = str(path)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= 120 else "..." + text[-100:]


def _depth_ok(doc: Any, limit: int) -> bool:
    """Whether ``doc`` nests at most ``limit`` containers deep (iteratively: no recursion)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


# ----------------------------------------------------------------------------- reading
def validate_model_doc(doc: Any, where: str = "error model") -> dict[str, Any]:
    """Check an error-model document already in memory; returns it as a dict (same keys).

    Parameters
    ----------
    doc : mapping
        The parsed JSON.
    where : str
        What to name in messages (the file, for :func:`read_model_file`).

    Raises
    ------
    ModelFileError
        Another format or version, a field of the wrong type or out of range (named by its path,
        e.g. ``source.setting.vdd_v`` or ``partition 'bank0': curves.vdd_v``), an unknown
        partition label, a selected model the registry does not know or whose parameters are
        bad, or a malformed curve.
    """
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise ModelFileError(f"{where}: not an {FORMAT} file (write one with python -m errormodels.fit)")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version != FORMAT_VERSION:
        raise ModelFileError(f"{where}: error-model format_version {show(version)} is not supported "
                             f"({FORMAT_VERSION})")
    try:
        msgspec.convert(doc, ModelFile)
    except msgspec.ValidationError as exc:
        raise ModelFileError(f"{where}: {_validation_message(exc, doc, ModelFile)}") from None
    parts = doc["partitions"]
    if not parts:
        raise ModelFileError(f"{where}: partitions is empty (the file holds no fitted partition)")
    from errormodels.curves import Curve  # scipy: only when a file is read

    for label, part in parts.items():
        if not (label.isascii() and _LABEL.fullmatch(label)):
            raise ModelFileError(f"{where}: unknown partition label {show(label)} "
                                 "(all, bank<N>, rows<A>-<B>, chip<N>)")
        selected = part.get("selected")
        if selected is not None:
            try:
                model_from_dict(selected)
            except ModelError as exc:
                raise ModelFileError(f"{where}: partition {show(label)}: selected: {exc}") from None
        for name, curve_doc in part.get("curves", {}).items():
            try:
                curve = Curve.from_dict(curve_doc)
            except ModelError as exc:
                raise ModelFileError(f"{where}: partition {show(label)}: curves.{name}: {exc}") from None
            if curve.param != name:
                raise ModelFileError(f"{where}: partition {show(label)}: curves.{name} has param {show(curve.param)}")
    return dict(doc)


def read_model_file(path: Union[str, "os.PathLike[str]"]) -> dict[str, Any]:
    """Read and validate a fitted error-model file (``python -m errormodels.fit``).

    Parameters
    ----------
    path : path
        The ``model.json``.

    Returns
    -------
    dict
        The document, with the keys of the file (``format``, ``format_version``, ``software``,
        ``source``, ``partition``, ``criterion``, ``selected_model``, ``partitions``).

    Raises
    ------
    ModelFileError
        A missing or unreadable file, not UTF-8 JSON, JSON nested deeper than
        :data:`MAX_JSON_DEPTH`, or a document :func:`validate_model_doc` refuses.
    """
    name = _name(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ModelFileError(f"error-model file {name} does not exist") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read error-model file {name}: {exc.strerror or type(exc).__name__}") from None
    except ValueError as exc:  # an embedded NUL in the name
        raise ModelFileError(f"cannot read error-model file {name}: {exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ModelFileError(f"error-model file {name} is larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ModelFileError(f"cannot read error-model file {name}: JSON nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, the integer digit limit
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise ModelFileError(f"cannot read error-model file {name}: not a readable JSON file ({detail})") from None
    if not _depth_ok(doc, MAX_JSON_DEPTH):
        raise ModelFileError(f"{name}: error-model JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return validate_model_doc(doc, name)


def partition_model(doc: Mapping[str, Any], partition: Optional[str] = None, where: str = "error model",
                    params: Optional[Mapping[str, Any]] = None) -> ErrorModel:
    """The selected model of one partition of a validated document.

    ``partition`` defaults to ``all`` if present, else the first partition whose selected model
    is the document's ``selected_model``; ``params`` replace fitted parameters (e.g. ``seed``).
    """
    parts: Mapping[str, Any] = doc["partitions"]
    if partition is None:
        if "all" in parts:
            partition = "all"
        else:
            chosen = [k for k, v in parts.items() if (v.get("selected") or {}).get("model") == doc.get("selected_model")]
            if not chosen:
                raise ModelFileError(f"{where}: no partition selected {show(doc.get('selected_model'))}; "
                                     "name the partition")
            partition = chosen[0]
    if partition not in parts:
        known = ", ".join(sorted(parts)) or "none"
        raise ModelFileError(f"{where}: unknown partition {show(partition)}; known: {known[:200]}")
    selected = parts[partition].get("selected")
    if not isinstance(selected, Mapping):
        raise ModelFileError(f"{where}: partition {show(partition)} has no selected model")
    try:
        return model_from_dict({**selected, **dict(params or {})})
    except ModelFileError:
        raise
    except ModelError as exc:
        raise ModelFileError(f"{where}: partition {show(partition)}: {exc}") from None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, an embedded NUL
        return False


def error_model_from(arg: str, params: Optional[Mapping[str, Any]] = None,
                     partition: Optional[str] = None) -> ErrorModel:
    """An error model from a model kind name or a fitted ``model.json``.

    Parameters
    ----------
    arg : str
        A name or number the registry knows (:func:`errormodels.models.get_model`: ``uniform``,
        ``wordline``, ``bitline``, ``bit-value``, 0-3, or a registered model's name), or the path
        of a file written by ``python -m errormodels.fit`` (any existing file, or a name ending
        in ``.json``).
    params : mapping, optional
        For a name, the constructor arguments; for a file, values replacing the fitted ones
        (e.g. ``{"seed": 3}``).
    partition : str, optional
        Partition label of a file (``all``, ``bank3``, ...); default: :func:`partition_model`'s.
        Not allowed with a name.

    Raises
    ------
    ModelFileError
        An unreadable or malformed file, an unknown partition.
    ModelError
        An unknown model name, a bad parameter, a partition given with a name.
    """
    params = dict(params or {})
    text = str(arg)
    path = Path(text)
    if not (_is_file(path) or text.lower().endswith(".json")):
        if partition is not None:
            raise ModelError(f"a partition ({show(partition)}) applies to a fitted-model file, "
                             f"not to the model name {show(text)}")
        return get_model(text, **params)
    doc = read_model_file(path)
    return partition_model(doc, partition, _name(path), params)

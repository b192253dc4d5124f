"""The flow's own documents, as :mod:`msgspec` schemas: ``stages.json`` and ``report-facts.json``.

* ``stages.json`` (:class:`StageLog`, ``format = "eden-flow-stages"``): one
  :class:`StageRecord` per finished stage, what :func:`pipeline.flow.run_flow` resumes from.
* ``report-facts.json`` (:class:`ReportFacts`, ``format = "eden-report-facts"``): every number
  of ``report.md`` (:class:`Fact`) with the SHA-256 of the files they come from, what
  ``python -m pipeline check`` recomputes.

Both are written through :func:`softmc_host.files.write_json` (atomic, fsync-ed) and read
through :func:`softmc_host.files.read_json`; a file that does not match its schema is a
one-line :class:`~pipeline.options.FlowError` naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Type, TypeVar, Union

import msgspec
from msgspec import Meta

from pipeline.options import FlowError, validation_message
from pipeline.options import json_schema as options_schema
from softmc_host.files import read_json, write_json

__all__ = [
    "StageRecord",
    "StageLog",
    "Fact",
    "ReportFacts",
    "read_document",
    "write_document",
    "stages_schema",
    "report_facts_schema",
    "json_schemas",
]

STAGES_FORMAT = "eden-flow-stages"
FACTS_FORMAT = "eden-report-facts"

Sha256 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]


class StageRecord(msgspec.Struct):
    """One finished stage in ``stages.json``.

    Attributes
    ----------
    key : str
        Hash of the options the stage depends on and the tokens of the stages it reads.
    token : str
        This run's token (changes every time the stage runs; later stages' keys hold it).
    outputs : list of str
        The files it wrote, relative to the output directory.
    seconds : float
        How long it ran.
    finished : str
        When it finished (local time, ISO 8601).
    """

    key: str
    token: str
    outputs: list[str]
    seconds: Annotated[float, Meta(ge=0.0)]
    finished: str


class StageLog(msgspec.Struct):
    """``stages.json``: the stages finished so far, by name."""

    format: Literal["eden-flow-stages"] = STAGES_FORMAT
    format_version: Literal[1] = 1
    stages: dict[str, StageRecord] = {}


class Fact(msgspec.Struct, forbid_unknown_fields=True):
    """One number of ``report.md``: the value at ``key`` in ``file``, printed as ``text``."""

    file: str
    key: str
    style: str
    text: str
    value: Union[int, float, str, bool, None]


class ReportFacts(msgspec.Struct, forbid_unknown_fields=True):
    """``report-facts.json``: the report's facts and the SHA-256 of every file they cite."""

    format: Literal["eden-report-facts"] = FACTS_FORMAT
    format_version: Literal[1] = 1
    sources: dict[str, Sha256] = {}
    facts: list[Fact] = []


D = TypeVar("D", StageLog, ReportFacts)


def read_document(path: Path, kind: Type[D], what: str) -> D:
    """Read and validate a flow document; one-line :class:`FlowError` for any problem.

    Parameters
    ----------
    path : Path
        The file.
    kind : type
        :class:`StageLog` or :class:`ReportFacts`.
    what : str
        What the file is, for messages (``"stage record"``).
    """
    doc = read_json(path, what, FlowError)
    fmt = STAGES_FORMAT if kind is StageLog else FACTS_FORMAT
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise FlowError(f"{path} is not a {what} of this flow (format {fmt!r} expected)")
    label = f"{what} {str(path)!r}"
    try:
        return msgspec.convert(doc, kind)
    except msgspec.ValidationError as exc:
        message = validation_message(exc, label)
    if kind is StageLog and isinstance(doc.get("stages"), dict):  # name the stage (msgspec shows keys as [...])
        for name, entry in doc["stages"].items():
            try:
                msgspec.convert(entry, StageRecord)
            except msgspec.ValidationError as exc:
                message = validation_message(exc, f"{label} stages.{name}").replace(f"stages.{name} ", f"stages.{name}.", 1)
                break
    raise FlowError(message)


def write_document(path: Path, doc: Union[StageLog, ReportFacts]) -> Path:
    """Write a flow document atomically (:func:`softmc_host.files.write_json`)."""
    return write_json(path, msgspec.to_builtins(doc))


def stages_schema() -> dict[str, Any]:
    """The JSON Schema of ``stages.json``."""
    return msgspec.json.schema(StageLog)


def report_facts_schema() -> dict[str, Any]:
    """The JSON Schema of ``report-facts.json``."""
    return msgspec.json.schema(ReportFacts)


def json_schemas() -> dict[str, dict[str, Any]]:
    """Every schema of the pipeline's documents, by file name (for ``docs/schemas/``)."""
    return {"flow-options": options_schema(), "stages": stages_schema(), "report-facts": report_facts_schema()}

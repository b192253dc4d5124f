"""EDEN's whole flow on a bench as one resumable command: ``python -m pipeline``.

Profile the DIMM, fit the error model, train, characterize and boost the network, map it to
DRAM settings, validate on the bench through the DIMM itself, and report energy, latency and
accuracy, every number traced to the file it comes from (``docs/pipeline.md``).

Modules
-------
:mod:`pipeline.options`
    :class:`FlowOptions` (a msgspec schema; ``--config flow.toml`` holds the same keys) and
    :class:`FlowError`.
:mod:`pipeline.stages`
    :class:`Stage` objects (name, inputs, outputs, options, ``run(ctx)``) and :data:`STAGES`,
    the one table of them, in order. Each stage calls the toolkit's library functions.
:mod:`pipeline.flow`
    :func:`run_flow`: runs the table, skipping finished stages (``stages.json``).
:mod:`pipeline.records`
    The schemas of ``stages.json`` and ``report-facts.json``.
:mod:`pipeline.report`
    :func:`write_report` and :func:`check_report` (``python -m pipeline check OUT``).
:mod:`pipeline.energy`
    DRAM energy and latency of one inference.

The package sits on top of every other layer (boosting, errormodels, profiler, softmc_host,
firmware_bridge) and nothing imports it.
"""

from pipeline.energy import DdrTiming, energy_report
from pipeline.flow import load_stage_log, run_flow, stage_key
from pipeline.options import FlowError, FlowOptions
from pipeline.records import ReportFacts, StageLog, StageRecord, json_schemas
from pipeline.report import check_report, write_report
from pipeline.stages import STAGES, Stage, StageContext, StageTable

__all__ = [
    "FlowError",
    "FlowOptions",
    "STAGES",
    "Stage",
    "StageContext",
    "StageTable",
    "run_flow",
    "stage_key",
    "load_stage_log",
    "StageLog",
    "StageRecord",
    "ReportFacts",
    "json_schemas",
    "write_report",
    "check_report",
    "DdrTiming",
    "energy_report",
]

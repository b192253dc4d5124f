"""EDEN's flow (seed paper, Algorithm 1) as resumable stages, each writing its result to disk.

The stages are the one table :data:`pipeline.stages.STAGES` (profile, fit, train, tolerance0,
boost, tolerance, map, validate, energy, report; ``docs/pipeline.md`` lists what each reads
and writes). :func:`run_flow` runs them in order.

``stages.json`` (:class:`pipeline.records.StageLog`) records each finished stage with a key
made of its options and the run tokens of the stages it depends on; a rerun skips a stage
whose key is unchanged and whose outputs exist, so an interrupted run resumes at the stage it
was in (the sweep itself resumes point by point, boosting from its last epoch). Changing an
option reruns the stages it affects and everything after them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import msgspec

from pipeline.options import FlowError, FlowOptions
from pipeline.records import StageLog, StageRecord, read_document, write_document
from pipeline.stages import STAGES, Stage, StageContext

__all__ = ["FlowError", "FlowOptions", "STAGES", "run_flow", "stage_key", "load_stage_log"]

logger = logging.getLogger(__name__)


def load_stage_log(out: Path) -> StageLog:
    """The stage record of an output directory (empty if it has none yet), validated."""
    path = Path(out) / "stages.json"
    if not path.exists():
        return StageLog()
    return read_document(path, StageLog, "stage record")


def stage_key(stage: Stage, opts: FlowOptions, log: StageLog) -> str:
    """The resume key of ``stage``: a hash of its options and the tokens of the stages it depends on."""
    parts: dict[str, Any] = {name: getattr(opts, name) for name in stage.options}
    parts["__upstream"] = [log.stages[d].token if d in log.stages else None for d in stage.after]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_flow(opts: FlowOptions, *, redo: Sequence[str] = (), stop_after: Optional[str] = None) -> dict[str, Any]:
    """Run (or resume) the flow; return the stage record (``{stage: record}``, JSON-ready).

    Parameters
    ----------
    opts : FlowOptions
        Options (validated here: :meth:`FlowOptions.check`).
    redo : sequence of str
        Stages to run even if finished (and so everything after them).
    stop_after : str, optional
        Last stage to run.

    Returns
    -------
    dict
        ``stages.json``'s ``stages``: per finished stage its ``key``, ``token``, ``outputs``,
        ``seconds`` and ``finished``.

    Raises
    ------
    FlowError
        Bad options, an unknown stage name, a malformed ``stages.json``, or a stage that cannot
        run (one line). The libraries the stages call raise their own one-line errors too
        (``python -m pipeline`` reports them).

    Notes
    -----
    Progress goes to the ``pipeline`` loggers (INFO); configure :mod:`logging` to see it.
    """
    opts.check()
    bad = [s for s in list(redo) + ([stop_after] if stop_after else []) if s not in STAGES]
    if bad:
        raise FlowError(f"unknown stage {bad[0]!r}; stages: {', '.join(STAGES)}")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "stages.json"
    record = load_stage_log(out)
    ctx = StageContext(opts, out)
    t_start = time.monotonic()
    for stage in STAGES.stages:
        key = stage_key(stage, opts, record)
        done = record.stages.get(stage.name)
        outputs = [out / p for p in done.outputs] if done else []
        if stage.name not in redo and done is not None and done.key == key and outputs \
                and all(p.exists() for p in outputs):
            logger.info("[%s] done before, skipped (%s)", stage.name, ", ".join(done.outputs))
        else:
            logger.info("[%s] running", stage.name)
            t0 = time.monotonic()
            produced = stage.run(ctx)
            finished = time.strftime("%Y-%m-%dT%H:%M:%S")
            record.stages[stage.name] = StageRecord(
                key=key,
                token=hashlib.sha256(f"{key}/{finished}/{time.time_ns()}".encode()).hexdigest()[:16],
                outputs=[str(Path(p).relative_to(out)) for p in produced],
                seconds=round(time.monotonic() - t0, 2),
                finished=finished,
            )
            write_document(path, record)
            logger.info("[%s] finished in %.1f s", stage.name, time.monotonic() - t0)
        if stage.name == stop_after:
            break
    logger.info("flow finished in %.1f s; results in %s", time.monotonic() - t_start, out)
    return msgspec.to_builtins(record)["stages"]


def options_dict(opts: FlowOptions) -> dict[str, Any]:
    """The options, JSON-ready (:meth:`FlowOptions.to_dict`)."""
    return opts.to_dict()

"""Characterization sweeps of VDD, tRCD, tRP and temperature per bank, written as BER maps to HDF5.

The profiler layer sits on the host driver (:mod:`softmc_host`) and below the error models.
Its modules, each one job:

``profiler.plan``
    :class:`SweepConfig` (flags and the ``--config`` TOML file), :func:`build_plan` (the
    ordered points, counted before they are built), :class:`PlanError`.
``profiler.engine``
    :func:`run_sweep` runs a :class:`SweepPlan` on a bench and emits ``start`` / ``point`` /
    ``stop`` documents to subscribers ``subscriber(name, doc)``; :func:`check_plan` refuses a
    plan outside the bench's limits before anything is set.
``profiler.storage``
    The BER map (HDF5, ``docs/ber-map-format.md``): :class:`MapWriter` (journal, lock,
    resume; a subscriber of the documents), :class:`BerMap` (the checked reader),
    :class:`PointData`, :class:`MapError`.
``profiler.run``
    :func:`sweep_to_map`: the whole sweep command as one call (bench, plan, map, progress,
    resume), failing with one :class:`SweepError`; :class:`ProgressBar`.
``profiler.plot``
    :func:`plot_map` (PNG plots of a map) and :class:`LivePlot` (a subscriber).
``profiler.sweep``, ``profiler.plot``
    The commands ``python -m profiler.sweep`` and ``python -m profiler.plot``.

The names below are importable from ``profiler`` itself; they are loaded on first use, so
``import profiler`` imports neither h5py nor matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "SweepConfig": "profiler.plan",
    "PlanError": "profiler.plan",
    "Point": "profiler.plan",
    "build_plan": "profiler.plan",
    "load_config": "profiler.plan",
    "MAX_PLAN_POINTS": "profiler.plan",
    "RowSet": "profiler.engine",
    "SweepPlan": "profiler.engine",
    "SweepSummary": "profiler.engine",
    "Subscriber": "profiler.engine",
    "check_plan": "profiler.engine",
    "run_sweep": "profiler.engine",
    "BerMap": "profiler.storage",
    "MapWriter": "profiler.storage",
    "MapError": "profiler.storage",
    "LockError": "profiler.storage",
    "PointData": "profiler.storage",
    "SweepError": "profiler.run",
    "ProgressBar": "profiler.run",
    "sweep_to_map": "profiler.run",
    "plot_map": "profiler.plot",
    "LivePlot": "profiler.plot",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'profiler' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

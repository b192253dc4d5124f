"""EDEN's error models: a registry of models fitted to BER maps, the model file, and bit-error injection.

Modules
-------
- :mod:`errormodels.models`: the registry (:func:`register_model`, :func:`get_model`,
  :func:`model_from_dict`) and the four built-in models (0 :class:`Uniform`, 1 :class:`Wordline`,
  2 :class:`Bitline`, 3 :class:`BitValue`). Each model owns its sampling (``flip_plan``, what the
  injector draws) and its fit (``fit``, a maximum-likelihood :class:`~errormodels.observations.Candidate`),
  so a registered model is injected, fitted and named in files like the built-in four.
- :mod:`errormodels.envm`: model 4 :class:`MLC` (``mlc``), multi-level-cell eNVM whose cells fault
  as a whole (a :class:`CellPlan` instead of a flip plan), and its level confusion matrices.
- :mod:`errormodels.observations`: what a BER map says about a partition, likelihood helpers.
- :mod:`errormodels.fit`: :func:`fit_map` (selection by BIC/AIC, EDEN's rule, partitions) and
  ``python -m errormodels.fit MAP.h5 -o model.json``.
- :mod:`errormodels.modelfile`: the ``model.json`` schema (msgspec), its one reader
  :func:`read_model_file` and :func:`error_model_from` (a model name or a file).
- :mod:`errormodels.curves`: BER vs VDD / tRCD / tRP per partition, monotone fits, inversion.
- :mod:`errormodels.layout`: where a tensor's bytes sit in DRAM (:class:`AddressMap`).
- :mod:`errormodels.inject`: exact, sparse bit-error injection into tensors of any dtype.

``errormodels.inject`` is the injection subpackage (``errormodels.inject.inject`` the function);
every other name below is importable from ``errormodels`` directly; the modules load on first use, so
``import errormodels`` stays cheap (no torch, scipy or h5py until a name needs them).
Formats: ``docs/error-model-format.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it (loaded on first access).
_EXPORTS = {
    # models and the registry
    "ModelError": "errormodels.models",
    "ErrorModel": "errormodels.models",
    "Uniform": "errormodels.models",
    "Wordline": "errormodels.models",
    "Bitline": "errormodels.models",
    "BitValue": "errormodels.models",
    "FlipPlan": "errormodels.models",
    "MLC": "errormodels.envm",
    "CellPlan": "errormodels.envm",
    "level_confusion": "errormodels.envm",
    "MODELS": "errormodels.models",
    "register_model": "errormodels.models",
    "unregister_model": "errormodels.models",
    "get_model": "errormodels.models",
    "model_from_dict": "errormodels.models",
    "weak_mask": "errormodels.models",
    # fitting
    "Observations": "errormodels.observations",
    "Candidate": "errormodels.observations",
    "FitError": "errormodels.observations",
    "fit_map": "errormodels.fit",
    "fit_all": "errormodels.fit",
    "select": "errormodels.fit",
    "observe": "errormodels.fit",
    "format_report": "errormodels.fit",
    # the model file
    "ModelFileError": "errormodels.modelfile",
    "read_model_file": "errormodels.modelfile",
    "validate_model_doc": "errormodels.modelfile",
    "error_model_from": "errormodels.modelfile",
    # curves and layout
    "Curve": "errormodels.curves",
    "curves_for": "errormodels.curves",
    "AddressMap": "errormodels.layout",
    "LayoutError": "errormodels.layout",
    # injection
    "inject_": "errormodels.inject",
    "mitigate_": "errormodels.inject",
    "calibrate_range": "errormodels.inject",
    "InjectionError": "errormodels.inject",
    "InjectionStats": "errormodels.inject",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'errormodels' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""Error-tolerance boosting of neural networks on approximate DRAM (EDEN's second and third stages).

Networks and data:

- :mod:`boosting.networks`: network registry (``lenet``, ``vgg-small``, ``resnet8``, ``resnet20``;
  any ``torch.nn.Module``), seeded initialisation.
- :mod:`boosting.data`: datasets (scikit-learn's digits offline; MNIST and CIFAR-10 from a local
  directory in their standard formats; user tensors).
- :mod:`boosting.checkpoint`: network files (``eden-network``), the one format every command
  reads and writes networks in.

Inference under errors:

- :mod:`boosting.quant`: FP32, symmetric linear int16 / int8 / int4 and robust asymmetric
  unsigned uint8 / uint4 (Stutz et al.) quantization holding the integers that sit in DRAM, and a
  straight-through fake-quant for retraining.
- :mod:`boosting.inference`: error-injecting inference (weights and input feature maps stored
  in the chosen format, corrupted by an error model, mitigated), gradients to the clean
  weights, accuracy over error seeds with the toolkit's one confidence interval.
- :mod:`boosting.hil`: inference through a tester's DIMM (hardware in the loop).

The EDEN stages, as library calls (each command is a thin shell over one):

- :mod:`boosting.training`: :func:`train_clean` (to convergence: validation split, early
  stopping) and :func:`boost` (error-aware retraining by a :mod:`boosting.recipes` recipe through
  :mod:`boosting.retrain`, or its clean control; resumable checkpoints); command
  ``python -m boosting.train``.
- :mod:`boosting.tolerable`: the honest tolerable BER: accuracy curves over >= 20 error seeds
  with fresh masks, the crossing with the goal interpolated on log BER, bootstrap intervals over
  error seeds and test samples, paired gains between networks.
- :mod:`boosting.characterization`: :func:`characterize_network`, the coarse (Algorithm 2) and
  fine (Algorithm 3) tolerance searches, evaluations submitted through a
  ``concurrent.futures`` executor; command ``python -m boosting.characterize``.
- :mod:`boosting.tolerance`: the tolerance document's schema and reader.
- :mod:`boosting.map`: :func:`map_network`, network-to-DRAM mapping (operating point and
  placement per partition); command ``python -m boosting.map``.

Support: :mod:`boosting.records` (the side documents ``*.train.json`` / ``.csv`` and the
tolerance files, written through :mod:`softmc_host.files`), :mod:`boosting.cli_args` (the
options the boosting commands share), :mod:`boosting.plots`.

The names below are importable from ``boosting`` directly; each is imported on first use, so
``import boosting`` loads neither torch nor any submodule.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # networks, data, network files
    "get_network": "boosting.networks",
    "NETWORKS": "boosting.networks",
    "load_dataset": "boosting.data",
    "DATASETS": "boosting.data",
    "save_network": "boosting.checkpoint",
    "load_network": "boosting.checkpoint",
    "NetworkFile": "boosting.checkpoint",
    "CheckpointError": "boosting.checkpoint",
    # inference under errors
    "ErrorSpec": "boosting.inference",
    "ErrorInjector": "boosting.inference",
    "calibrate": "boosting.inference",
    "evaluate": "boosting.inference",
    "confidence_interval": "boosting.inference",
    "AccuracyResult": "boosting.inference",
    "hil_evaluate": "boosting.hil",
    # training and boosting
    "train_clean": "boosting.training",
    "boost": "boosting.training",
    "TrainError": "boosting.training",
    "retrain": "boosting.retrain",
    "Curriculum": "boosting.retrain",
    "Recipe": "boosting.recipes",
    "RECIPES": "boosting.recipes",
    "get_recipe": "boosting.recipes",
    # characterization
    "characterize_network": "boosting.characterization",
    "coarse_characterize": "boosting.characterization",
    "fine_characterize": "boosting.characterization",
    "NetworkWorkload": "boosting.characterization",
    "SerialExecutor": "boosting.characterization",
    "CharacterizeError": "boosting.characterization",
    "read_tolerance": "boosting.tolerance",
    # honest tolerance measurement
    "tolerable_ber": "boosting.tolerable",
    "crossing": "boosting.tolerable",
    "gain": "boosting.tolerable",
    # mapping
    "map_network": "boosting.map",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (``import boosting`` stays cheap)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'boosting' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Network files: a trained (or boosted) registry network with what is needed to rebuild it.

Every ``boosting`` CLI reads and writes networks in this one format, so the stages of the
EDEN flow (train, characterize, boost, map, validate) hand networks to each other by path.

Format (``torch.save`` of a dict; ``format = "eden-network"``, ``format_version = 1``)
-------------------------------------------------------------------------------------------
==================  ====================================================================
key                 content
==================  ====================================================================
``format``          ``"eden-network"``
``format_version``  ``1``
``network``         registry name (:data:`boosting.networks.NETWORKS`)
``build``           keyword arguments of :func:`boosting.networks.get_network` besides
                    ``seed``: ``num_classes``, ``in_channels``, ``image_size`` and options
``seed``            the seed the network was built (initialised) with
``dataset``         ``{"name", "root", "image_size", "normalize", "split_seed"}``: how the
                    inputs it expects are loaded (:func:`boosting.data.load_dataset`)
``state_dict``      the parameters and buffers
``meta``            free-form JSON-ready provenance (training settings, accuracy, history,
                    the error spec of a boosted network, the parent file)
==================  ====================================================================

Only tensors, numbers, strings, lists and dicts are stored, so files load with
``torch.load(weights_only=True)``: opening a network file runs no code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Optional, Union

import torch
from torch import nn

from boosting.data import load_dataset
from boosting.networks import get_network

__all__ = ["CheckpointError", "FORMAT", "FORMAT_VERSION", "NetworkFile", "atomic_write", "save_network", "load_network"]

FORMAT = "eden-network"
FORMAT_VERSION = 1

PathLike = Union[str, Path]


class CheckpointError(ValueError):
    """A network file that is missing, corrupt or of another format."""


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file so that it is either complete or absent: ``write(fh)`` fills a temporary file in
    the same directory, which is flushed to disk and renamed over ``path`` (an interruption leaves
    any previous file intact). Parent directories are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class NetworkFile:
    """A loaded network file.

    Attributes
    ----------
    net : nn.Module
        The rebuilt network, in eval mode, on the CPU.
    network : str
        Registry name.
    build : dict
        :func:`~boosting.networks.get_network` arguments (without ``seed``).
    seed : int
        Build seed.
    dataset : dict
        How its inputs are loaded (see the module docstring).
    meta : dict
        Provenance.
    path : Path
        Where it was read from.
    """

    def __init__(self, net: nn.Module, network: str, build: dict[str, Any], seed: int, dataset: dict[str, Any],
                 meta: dict[str, Any], path: Path) -> None:
        self.net = net
        self.network = network
        self.build = build
        self.seed = seed
        self.dataset = dataset
        self.meta = meta
        self.path = path

    def load_split(self, split: str, root: Optional[PathLike] = None) -> Any:
        """The dataset split this network expects (``root`` overrides the stored directory)."""
        d = self.dataset
        return load_dataset(d["name"], root=root if root is not None else d.get("root"), split=split,
                            seed=int(d.get("split_seed", 0)), image_size=d.get("image_size"),
                            normalize=bool(d.get("normalize", False)))


def save_network(path: PathLike, net: nn.Module, *, network: str, build: dict[str, Any], seed: int,
                 dataset: dict[str, Any], meta: Optional[dict[str, Any]] = None) -> Path:
    """Write ``net`` atomically (temporary file, then rename) in the network-file format.

    Parameters
    ----------
    path : str or Path
        Destination; parent directories are created.
    net : nn.Module
        The network (its ``state_dict`` is stored, moved to the CPU).
    network : str
        Registry name it was built from.
    build : dict
        :func:`~boosting.networks.get_network` keyword arguments besides ``seed``.
    seed : int
        Build seed.
    dataset : dict
        ``{"name", "root", "image_size", "normalize", "split_seed"}``.
    meta : dict, optional
        JSON-ready provenance.

    Returns
    -------
    Path
    """
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "network": str(network),
        "build": dict(build),
        "seed": int(seed),
        "dataset": dict(dataset),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "meta": dict(meta or {}),
    }
    return atomic_write(path, lambda fh: torch.save(doc, fh))


def load_network(path: PathLike) -> NetworkFile:
    """Read a network file written by :func:`save_network` and rebuild the network.

    Raises
    ------
    CheckpointError
        Missing file, not a torch file, another format or version, or a state that does not
        fit the rebuilt network (one-line messages naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"network file {str(path)!r} does not exist")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of many kinds
        raise CheckpointError(f"{path}: not a readable network file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an {FORMAT} file (write one with python -m boosting.train)")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {doc.get('format_version')!r} is not supported "
                              f"(this software reads {FORMAT_VERSION})")
    try:
        net = get_network(doc["network"], seed=int(doc["seed"]), **doc["build"])
        net.load_state_dict(doc["state_dict"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: network does not rebuild ({str(exc).splitlines()[0]})") from None
    return NetworkFile(net.eval(), doc["network"], dict(doc["build"]), int(doc["seed"]), dict(doc["dataset"]),
                       dict(doc.get("meta", {})), path)

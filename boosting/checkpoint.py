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
                    inputs it expects are loaded (:func:`boosting.data.load_dataset`);
                    optionally ``val_fraction`` (in [0, 1)) and ``val_seed``: the
                    validation split carved from the training split
                    (:func:`boosting.data.split_validation`)
``state_dict``      the parameters and buffers
``meta``            free-form JSON-ready provenance (training settings, accuracy, history,
                    the error spec of a boosted network, the parent file)
==================  ====================================================================

Only tensors, numbers, strings, lists and dicts are stored, so files load with
``torch.load(weights_only=True)``: opening a network file runs no code.

Reading (:func:`load_network`) raises :class:`CheckpointError`, with a one-line message naming
the file and the key, for every malformed file; the CLIs print it as ``error: ...`` and exit 2:

- a missing or unopenable path; not a zip archive as ``torch.save`` writes it (members stored
  uncompressed); a member whose CRC-32 does not match (``torch.load`` itself does not check
  them, so a damaged byte in a tensor would otherwise load as another weight); anything
  ``torch.load(weights_only=True)`` refuses (truncated files, foreign pickles);
- ``format`` other than ``"eden-network"``; ``format_version`` other than the integer 1;
- a missing key of the table above; ``network`` not a registry name string; ``seed`` not an
  integer in [0, 2**64 - 1] (bools, floats and strings are refused); ``build`` not a dict of
  plain values, or ``num_classes`` / ``in_channels`` / ``image_size`` not integers;
  ``dataset`` not a dict with a string ``name``, an optional string ``root``, a bool
  ``normalize`` and a non-negative integer ``split_seed``; a ``val_fraction`` that is not a
  number in [0, 1) or a ``val_seed`` that is not a non-negative integer; an ``image_size`` (either) above
  :data:`MAX_IMAGE_SIZE`, or the two differing; ``meta`` not a JSON-ready dict (string keys;
  strings, numbers, bools, None, lists, dicts; at most :data:`MAX_META_DEPTH` levels) or a
  ``meta.kind`` that is not a string;
- a network that does not rebuild from ``network``, ``build`` and ``seed``; a ``state_dict``
  whose names, shapes or dtypes differ from the rebuilt network's. The network is first built
  on PyTorch's ``meta`` device, so build arguments that would need huge memory are refused
  before anything is allocated.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from boosting.data import load_dataset, split_validation
from boosting.networks import get_network
from softmc_host.files import atomic_write as files_atomic_write

__all__ = ["CheckpointError", "FORMAT", "FORMAT_VERSION", "NetworkFile", "atomic_write", "save_network", "load_network"]

FORMAT = "eden-network"
FORMAT_VERSION = 1

PathLike = Union[str, Path]


class CheckpointError(ValueError):
    """A network file that is missing, corrupt or of another format."""


atomic_write = files_atomic_write
"""Old name of :func:`softmc_host.files.atomic_write` (complete or absent, fsync-ed): kept for callers."""


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

    @property
    def val_fraction(self) -> float:
        """Share of the training split held out for validation (0: none)."""
        return float(self.dataset.get("val_fraction", 0.0) or 0.0)

    def load_split(self, split: str, root: Optional[PathLike] = None) -> Any:
        """The dataset split this network expects (``root`` overrides the stored directory).

        Parameters
        ----------
        split : {"train", "val", "test"}
            ``train`` is the training split without the validation items (all of it when the
            file records no validation split); ``val`` the validation items
            (:func:`boosting.data.split_validation` with the stored ``val_fraction`` and
            ``val_seed``); ``test`` the test split.
        root : str or Path, optional
            Directory of the dataset's files.

        Raises
        ------
        CheckpointError
            ``val`` asked of a file without a validation split, or an unknown split.
        """
        if split not in ("train", "val", "test"):
            raise CheckpointError(f"split must be 'train', 'val' or 'test', got {split!r}")
        d = self.dataset
        data = load_dataset(d["name"], root=root if root is not None else d.get("root"),
                            split="test" if split == "test" else "train", seed=int(d.get("split_seed", 0)),
                            image_size=d.get("image_size"), normalize=bool(d.get("normalize", False)))
        if split == "test":
            return data
        fraction = self.val_fraction
        if fraction == 0.0:
            if split == "val":
                raise CheckpointError(f"{self.path}: the network file records no validation split "
                                      "(dataset.val_fraction)")
            return data
        train, val = split_validation(data, fraction, int(d.get("val_seed", 0)))
        return val if split == "val" else train


def save_network(path: PathLike, net: nn.Module, *, network: str, build: dict[str, Any], seed: int,
                 dataset: dict[str, Any], meta: Optional[dict[str, Any]] = None) -> Path:
    """Write ``net`` atomically (:func:`softmc_host.files.atomic_write`) in the network-file format.

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
    return files_atomic_write(path, lambda fh: torch.save(doc, fh))


#: Largest image side a network file may declare (the forward pass of a larger one could exhaust memory).
MAX_IMAGE_SIZE = 1024
#: Deepest nesting accepted in ``meta`` (provenance needs a few levels).
MAX_META_DEPTH = 32
_MAX_SEED = 2**64 - 1
_SCALARS = (str, int, float, bool, type(None))


def file_problem(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be read as a ``what`` file (missing, not a file, a bad name), or None."""
    try:
        exists = path.is_file()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        detail = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        return f"{what} file {_show(str(path), 300)} cannot be opened ({detail})"
    return None if exists else f"{what} file {_show(str(path), 300)} does not exist"


def _show(value: Any, limit: int = 60) -> str:
    """Short one-line repr, safe for huge integers."""
    from errormodels.models import show

    return show(value, limit)


def _check_archive(path: Path) -> None:
    """The zip container ``torch.save`` writes: every member stored uncompressed, every CRC-32 right.

    ``torch.load`` does not check the CRCs, so without this a flipped bit in a tensor's bytes would
    load silently as a different weight.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if not members:
                raise CheckpointError(f"{path}: not a readable network file (empty archive)")
            for info in members:
                if info.compress_type != zipfile.ZIP_STORED:
                    raise CheckpointError(f"{path}: not a network file written by torch.save "
                                          f"(member {_show(info.filename)} is compressed)")
                if info.file_size > info.compress_size or info.header_offset > path.stat().st_size:
                    raise CheckpointError(f"{path}: corrupt network file (member {_show(info.filename)} "
                                          "has inconsistent sizes)")
            bad = archive.testzip()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, RuntimeError,
            NotImplementedError, UnicodeDecodeError, OverflowError, struct.error) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable network file ({type(exc).__name__}: {detail})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupt network file (CRC mismatch in member {_show(bad)})")


def _json_ready(value: Any, limit: int) -> bool:
    """Only dicts with string keys, lists, tuples, strings, numbers, bools and None, at most ``limit`` deep."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            if depth > limit or not all(isinstance(k, str) for k in v):
                return False
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            if depth > limit:
                return False
            stack.extend((x, depth + 1) for x in v)
        elif not isinstance(v, _SCALARS):
            return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_doc(doc: Any, path: Path) -> None:
    """Types and ranges of every key of a loaded network file (the module docstring's table)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("format"), str) or doc["format"] != FORMAT:
        raise CheckpointError(f"{path}: not an {FORMAT} file (write one with python -m boosting.train)")
    version = doc.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {_show(version)} is not supported "
                              f"(this software reads {FORMAT_VERSION})")
    for key in ("network", "build", "seed", "dataset", "state_dict", "meta"):
        if key not in doc:
            raise CheckpointError(f"{path}: network file lacks {key!r}")
    if not isinstance(doc["network"], str) or not doc["network"] or len(doc["network"]) > 100:
        raise CheckpointError(f"{path}: network must be a registry name, got {_show(doc['network'])}")
    seed = doc["seed"]
    if not _is_int(seed) or not 0 <= seed <= _MAX_SEED:
        raise CheckpointError(f"{path}: seed must be an integer in [0, 2**64 - 1], got {_show(seed)}")
    build = doc["build"]
    if not isinstance(build, dict) or not all(isinstance(k, str) for k in build):
        raise CheckpointError(f"{path}: build must be a dict of keyword arguments, got {_show(build)}")
    for key, value in build.items():
        if not isinstance(value, _SCALARS):
            raise CheckpointError(f"{path}: build.{key} must be a number, string, bool or null, got {_show(value)}")
        if key in ("num_classes", "in_channels", "image_size") and value is not None and not _is_int(value):
            raise CheckpointError(f"{path}: build.{key} must be an integer, got {_show(value)}")
    dataset = doc["dataset"]
    if not isinstance(dataset, dict) or not all(isinstance(k, str) for k in dataset):
        raise CheckpointError(f"{path}: dataset must be a dict, got {_show(dataset)}")
    if not isinstance(dataset.get("name"), str) or not dataset["name"]:
        raise CheckpointError(f"{path}: dataset.name must be a dataset name, got {_show(dataset.get('name'))}")
    if dataset.get("root") is not None and not isinstance(dataset["root"], str):
        raise CheckpointError(f"{path}: dataset.root must be a string or None, got {_show(dataset['root'])}")
    if not isinstance(dataset.get("normalize", False), bool):
        raise CheckpointError(f"{path}: dataset.normalize must be a bool, got {_show(dataset['normalize'])}")
    split_seed = dataset.get("split_seed", 0)
    if not _is_int(split_seed) or not 0 <= split_seed <= _MAX_SEED:
        raise CheckpointError(f"{path}: dataset.split_seed must be a non-negative integer, got {_show(split_seed)}")
    val_fraction = dataset.get("val_fraction", 0.0)
    if not isinstance(val_fraction, (int, float)) or isinstance(val_fraction, bool) or not 0.0 <= val_fraction < 1.0:
        raise CheckpointError(f"{path}: dataset.val_fraction must be a number in [0, 1), got {_show(val_fraction)}")
    val_seed = dataset.get("val_seed", 0)
    if not _is_int(val_seed) or not 0 <= val_seed <= _MAX_SEED:
        raise CheckpointError(f"{path}: dataset.val_seed must be a non-negative integer, got {_show(val_seed)}")
    for where, size in (("build.image_size", build.get("image_size")), ("dataset.image_size", dataset.get("image_size"))):
        if size is not None and (not _is_int(size) or not 1 <= size <= MAX_IMAGE_SIZE):
            raise CheckpointError(f"{path}: {where} must be an integer in [1, {MAX_IMAGE_SIZE}] or None, "
                                  f"got {_show(size)}")
    if _is_int(build.get("image_size")) and _is_int(dataset.get("image_size")) \
            and build["image_size"] != dataset["image_size"]:
        raise CheckpointError(f"{path}: build.image_size {build['image_size']} differs from dataset.image_size "
                              f"{dataset['image_size']}")
    state = doc["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: state_dict must map parameter names to tensors")
    meta = doc["meta"]
    if not isinstance(meta, dict) or not _json_ready(meta, MAX_META_DEPTH):
        raise CheckpointError(f"{path}: meta must be a JSON-ready dict (string keys; strings, numbers, bools, "
                              f"None, lists, dicts; at most {MAX_META_DEPTH} levels)")
    if meta.get("kind") is not None and not isinstance(meta["kind"], str):
        raise CheckpointError(f"{path}: meta.kind must be a string, got {_show(meta['kind'])}")


def _rebuild(doc: dict[str, Any], path: Path) -> nn.Module:
    """The network of a checked document: built on the meta device first, so that a file whose
    state does not fit (or whose build arguments would take huge memory) is refused before anything
    is allocated; then built for real and loaded."""
    state = doc["state_dict"]
    try:
        with torch.device("meta"):
            shape_net = get_network(doc["network"], seed=doc["seed"], **doc["build"])
    except Exception as exc:  # NetworkError, and whatever a builder raises on odd options
        raise CheckpointError(f"{path}: network does not rebuild ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    expected = shape_net.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        which = f"lacks {_show(missing[0])}" if missing else f"has unexpected {_show(extra[0])}"
        raise CheckpointError(f"{path}: state_dict does not fit network {doc['network']} ({which}; "
                              f"{len(missing)} missing, {len(extra)} unexpected)")
    for key, want in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype or got.layout != torch.strided:
            raise CheckpointError(f"{path}: state_dict {key} is {got.dtype} {tuple(got.shape)}, network "
                                  f"{doc['network']} needs {want.dtype} {tuple(want.shape)}")
    try:
        net = get_network(doc["network"], seed=doc["seed"], **doc["build"])
        net.load_state_dict(state)
    except Exception as exc:
        raise CheckpointError(f"{path}: network does not rebuild ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    return net


def load_network(path: PathLike) -> NetworkFile:
    """Read a network file written by :func:`save_network` and rebuild the network.

    Checked, in this order: the file exists; it is a zip archive as ``torch.save`` writes it
    (members stored, every CRC-32 right: a damaged byte anywhere is found); ``torch.load(...,
    weights_only=True)`` reads it; every key of the format is present with its type (``network`` a
    string, ``seed`` an integer in [0, 2**64), ``build`` and ``dataset`` dicts of plain values with
    integer sizes, image sizes at most :data:`MAX_IMAGE_SIZE`, ``state_dict`` names to tensors,
    ``meta`` a JSON-ready dict); the network rebuilds and every tensor of the state has the name,
    shape and dtype the network needs.

    Raises
    ------
    CheckpointError
        For each of those failures, with a one-line message naming the file and the key.
    """
    path = Path(path)
    problem = file_problem(path, "network")
    if problem is not None:
        raise CheckpointError(problem)
    _check_archive(path)
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of many kinds
        raise CheckpointError(f"{path}: not a readable network file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    _check_doc(doc, path)
    net = _rebuild(doc, path)
    return NetworkFile(net.eval(), doc["network"], dict(doc["build"]), int(doc["seed"]), dict(doc["dataset"]),
                       dict(doc["meta"]), path)

"""Datasets by name, from local files only: scikit-learn digits, MNIST, CIFAR-10, user tensors.

Nothing is downloaded. :func:`load_dataset` returns a ``torch.utils.data.TensorDataset`` of
images ``x`` (float32, ``(N, C, H, W)``) and labels ``y`` (int64, ``(N,)``);
:data:`DATASETS` maps names to their :class:`DatasetSpec`; :func:`from_tensors` wraps the
user's own tensors the same way.

==========  ================================================  =======  =======  ==============
name        source                                            shape    classes  train / test
==========  ================================================  =======  =======  ==============
``digits``  ``sklearn.datasets.load_digits`` (ships with      1x8x8    10       1437 / 360
            scikit-learn); seeded stratified split
``mnist``   IDX files in ``root`` (or ``root/MNIST/raw``)     1x28x28  10       60000 / 10000
``cifar10`` ``cifar-10-batches-py`` pickles in ``root``       3x32x32  10       50000 / 10000
==========  ================================================  =======  =======  ==============

Normalisation
-------------
Pixels are scaled to [0, 1]: digits / 16, MNIST and CIFAR-10 / 255. ``image_size=S`` then
resizes to S x S (bilinear, ``align_corners=False``, antialiased when shrinking; upsampling
keeps values in [0, 1]): LeNet takes the digits as ``image_size=28``. ``normalize=True``
finally subtracts a fixed per-channel mean and divides by a fixed std, the dataset's
constants in :class:`DatasetSpec` (digits 0.3053 / 0.3760 over all 1797 images; MNIST
0.1307 / 0.3081; CIFAR-10 (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616), from the
training images). Without it (the default) inputs stay in [0, 1].

digits split
------------
1797 images, 20 % (rounded up: 360) for test, the rest (1437) for training, stratified by
class: the images are permuted with ``numpy.random.default_rng(seed)``, stably sorted by
label, and every (1797 / 360)-th of that list goes to test. ``split="train"`` and
``split="test"`` with the same seed are disjoint and cover the data; the default seed 0 is
the fixed split. Images keep their original order within a split.

Validation split
----------------
:func:`split_validation` carves a seeded, stratified validation set out of a dataset (usually
the training split): ``ceil(fraction * N)`` items chosen by the same rule as the digits test
split (permute with ``numpy.random.default_rng(seed)``, stably sort by label, take evenly
spaced positions), so every class keeps its share. The two parts are disjoint, cover the data
and keep the original order. Network files record ``val_fraction`` and ``val_seed`` so every
later stage sees the same split (:meth:`boosting.checkpoint.NetworkFile.load_split`).

Batches
-------
:func:`iter_batches` cuts a dataset into batches in a given order of its items (a permutation,
or the natural order): batch ``k`` holds items ``order[k * batch_size : (k + 1) * batch_size]``,
in that order, the last batch possibly shorter. A ``TensorDataset`` (what every loader here
returns), or a ``Subset`` of one at any depth, is batched by indexing its tensors with that slice
of the order, one gather per tensor and batch; any other dataset goes through a ``DataLoader``
with the order as its sampler (one ``__getitem__`` per item, default collation). Both give the
same tensors. :func:`boosting.retrain.retrain` draws each epoch's order with
``torch.randperm(N, generator)`` from a generator seeded by ``(seed, epoch)``.

File formats
------------
MNIST, IDX (http://yann.lecun.com/exdb/mnist/), optionally gzip-compressed (``.gz``):
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``. Big-endian: a 32-bit magic ``0x00000803`` (images: unsigned
bytes, 3 dimensions) or ``0x00000801`` (labels: 1 dimension), one 32-bit size per
dimension (N, 28, 28 or N), then the bytes in C order. Looked up in ``root`` and then in
``root/MNIST/raw`` (torchvision's layout).

CIFAR-10, python version (https://www.cs.toronto.edu/~kriz/cifar.html): directory
``cifar-10-batches-py`` (in ``root``, or ``root`` itself) with ``data_batch_1`` ..
``data_batch_5`` (train) and ``test_batch`` (test), each a pickle of a dict with ``b"data"``,
uint8 ``(N, 3072)`` (1024 red, then green, then blue values, rows top to bottom), and
``b"labels"``, N ints in 0..9. These are Python pickles: load only files you trust.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset

__all__ = [
    "DatasetError",
    "DatasetSpec",
    "DATASETS",
    "register_dataset",
    "load_dataset",
    "split_validation",
    "from_tensors",
    "iter_batches",
    "read_idx",
    "MNIST_FILES",
    "CIFAR10_FILES",
]

PathLike = Union[str, Path]
Loader = Callable[[Optional[Path], str, int], tuple[torch.Tensor, torch.Tensor]]

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""IDX file names (images, labels) per split; each may also be present with ``.gz``."""

CIFAR10_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
"""Pickle file names in ``cifar-10-batches-py`` per split."""

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
DIGITS_TEST_FRACTION = 0.2


class DatasetError(ValueError):
    """An unknown dataset, missing or malformed files, or bad tensors."""


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes
    ----------
    name : str
        Registry name.
    loader : callable
        ``loader(root, split, seed) -> (x, y)``: float images in [0, 1] ``(N, C, H, W)``, int64 labels.
    num_classes, in_channels, image_size : int
        Classes, channels and native side in pixels.
    mean, std : tuple of float
        Per-channel constants used by ``normalize=True``.
    needs_root : bool
        Whether the files come from ``root`` (False for digits).
    description : str
        One line.
    """

    name: str
    loader: Loader
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    needs_root: bool
    description: str


DATASETS: dict[str, DatasetSpec] = {}
"""Registered datasets by name (``list(DATASETS)`` gives the names)."""


def register_dataset(name: str, *, num_classes: int, in_channels: int, image_size: int, mean: tuple[float, ...],
                     std: tuple[float, ...], needs_root: bool = True) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader(root, split, seed) -> (x, y)`` as dataset ``name``.

    The loader returns float images scaled to [0, 1], ``(N, in_channels, image_size, image_size)``,
    and int64 labels in ``0 .. num_classes - 1``; ``root`` is a ``Path`` (or None when not
    ``needs_root``), ``split`` is ``"train"`` or ``"test"``.

    Raises
    ------
    DatasetError
        If the name is empty or taken, or mean/std do not have one entry per channel.
    """
    key = str(name).strip().lower()
    if not key:
        raise DatasetError("dataset name must not be empty")
    if key in DATASETS:
        raise DatasetError(f"dataset {key!r} is already registered")
    if len(mean) != in_channels or len(std) != in_channels or min(std) <= 0:
        raise DatasetError(f"dataset {key}: mean and std need {in_channels} entries and std > 0")

    def decorate(loader: Loader) -> Loader:
        doc = (loader.__doc__ or "").strip().splitlines()
        DATASETS[key] = DatasetSpec(key, loader, num_classes, in_channels, image_size, tuple(mean), tuple(std),
                                    needs_root, doc[0] if doc else "")
        return loader

    return decorate


def _known() -> str:
    return ", ".join(sorted(DATASETS)) or "none"


def load_dataset(name: str, *, root: Optional[PathLike] = None, split: str = "train", seed: int = 0,
                 image_size: Optional[int] = None, normalize: bool = False) -> TensorDataset:
    """Load a registered dataset from local files.

    Parameters
    ----------
    name : str
        A name in :data:`DATASETS`: ``digits``, ``mnist``, ``cifar10`` (case-insensitive).
    root : str or Path, optional
        Directory with the dataset's files (mnist, cifar10); not used by digits.
    split : {"train", "test"}
        Which part.
    seed : int
        Seed of the digits train/test split (non-negative; 0 is the fixed default split).
        MNIST and CIFAR-10 have fixed standard splits and ignore it.
    image_size : int, optional
        Resize to this square side (bilinear); default: the native size.
    normalize : bool
        Subtract the dataset's per-channel mean and divide by its std (see the module
        docstring); default False keeps values in [0, 1].

    Returns
    -------
    torch.utils.data.TensorDataset
        ``(x, y)``: x float32 ``(N, C, H, W)``, y int64 ``(N,)``.

    Raises
    ------
    DatasetError
        Unknown name (listing the known ones), bad split or seed, missing files (naming the
        directory and the expected file names) or malformed files.
    """
    spec = DATASETS.get(str(name).strip().lower())
    if spec is None:
        raise DatasetError(f"unknown dataset {name!r}; known: {_known()}")
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    path: Optional[Path] = None
    if spec.needs_root:
        if root is None:
            raise DatasetError(f"{spec.name} is read from local files: give root=, the directory holding them")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DatasetError(f"{spec.name}: directory {str(path)!r} does not exist")
    x, y = spec.loader(path, split, seed)
    x = _resize(x, image_size)
    if normalize:
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = (x - mean) / std
    return TensorDataset(x.contiguous(), y)


def _labels_of(dataset: Any) -> np.ndarray:
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1].detach().cpu().numpy().astype(np.int64).reshape(-1)
    try:
        return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)
    except (TypeError, IndexError, ValueError) as exc:
        raise DatasetError(f"split_validation needs (x, y) items with integer labels ({exc})") from None


def split_validation(dataset: Any, fraction: float, seed: int = 0) -> tuple[Any, Optional[Any]]:
    """Split ``dataset`` into a training part and a seeded, stratified validation part.

    Parameters
    ----------
    dataset : Dataset
        ``(x, y)`` items with integer labels; a ``TensorDataset`` (as :func:`load_dataset`
        returns) gives ``TensorDataset`` parts, anything else ``Subset`` parts.
    fraction : float
        Share of the items for validation, in [0, 1): ``ceil(fraction * N)`` items; 0 gives
        ``(dataset, None)``.
    seed : int
        Seed of the choice (non-negative).

    Returns
    -------
    (train, val)
        Disjoint, covering ``dataset``, each in the original order; ``val`` is None for
        ``fraction == 0``.

    Raises
    ------
    DatasetError
        A fraction outside [0, 1), a bad seed, a validation part that would leave no training
        item, or items without integer labels.
    """
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0.0 <= fraction < 1.0:
        raise DatasetError(f"validation fraction must be in [0, 1), got {fraction!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    if fraction == 0.0:
        return dataset, None
    labels = _labels_of(dataset)
    n = labels.size
    n_val = math.ceil(fraction * n)
    if n_val >= n:
        raise DatasetError(f"a validation fraction of {fraction:g} leaves no training item of {n}")
    is_val = np.zeros(n, dtype=bool)
    is_val[_stratified_test_indices(labels, n_val, int(seed))] = True
    val_idx = np.flatnonzero(is_val)
    train_idx = np.flatnonzero(~is_val)
    if isinstance(dataset, TensorDataset):
        ti, vi = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
        return (TensorDataset(*(t[ti] for t in dataset.tensors)), TensorDataset(*(t[vi] for t in dataset.tensors)))
    from torch.utils.data import Subset

    return Subset(dataset, train_idx.tolist()), Subset(dataset, val_idx.tolist())


def from_tensors(x: Union[torch.Tensor, np.ndarray], y: Union[torch.Tensor, np.ndarray], *,
                 image_size: Optional[int] = None) -> TensorDataset:
    """The user's images and labels as a dataset shaped like :func:`load_dataset`'s.

    Parameters
    ----------
    x : tensor or array
        Floating-point images ``(N, C, H, W)`` or ``(N, H, W)`` (one channel added); values
        are used as they are (no scaling).
    y : tensor or array
        Integer class labels ``(N,)``, >= 0.
    image_size : int, optional
        Resize to this square side (bilinear).

    Returns
    -------
    torch.utils.data.TensorDataset
        x float32 ``(N, C, H, W)`` (a copy), y int64 ``(N,)``.

    Raises
    ------
    DatasetError
        For wrong dimensions or dtypes, mismatched lengths, negative labels or non-finite images.
    """
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if not x.dtype.is_floating_point:
        raise DatasetError(f"images must be floating point, got {x.dtype} (scale integer pixels first)")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise DatasetError(f"images must be (N, C, H, W) or (N, H, W), got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise DatasetError(f"labels must be a 1-D integer tensor, got {y.dtype} of shape {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise DatasetError(f"{x.shape[0]} images but {y.shape[0]} labels")
    if y.numel() and int(y.min()) < 0:
        raise DatasetError("labels must be >= 0")
    x = x.detach().to(torch.float32).clone()
    if not bool(torch.isfinite(x).all()):
        raise DatasetError("images hold NaN or Inf")
    return TensorDataset(_resize(x, image_size).contiguous(), y.detach().to(torch.int64).clone())


def _tensor_source(dataset: Any) -> Optional[tuple[tuple[torch.Tensor, ...], Optional[torch.Tensor]]]:
    """``(tensors, index)`` of a ``TensorDataset`` or a ``Subset`` (of a Subset ...) of one: item ``i``
    is ``tuple(t[index[i]] for t in tensors)`` (``index`` None: ``t[i]``); None for any other dataset."""
    index: Optional[torch.Tensor] = None
    while isinstance(dataset, Subset):
        level = torch.as_tensor(dataset.indices, dtype=torch.int64)
        index = level if index is None else level[index]
        dataset = dataset.dataset
    if isinstance(dataset, TensorDataset):
        return dataset.tensors, index
    return None


class _Batches:
    """The batches of :func:`iter_batches`: iterable any number of times, sized."""

    def __init__(self, dataset: Any, batch_size: int, order: Optional[torch.Tensor]) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.order = order
        self.source = _tensor_source(dataset)

    def __len__(self) -> int:
        n = len(self.dataset) if self.order is None else self.order.numel()
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        if self.source is None:
            sampler = range(len(self.dataset)) if self.order is None else self.order.tolist()
            return iter(DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler))
        return self._gather(*self.source)

    def _gather(self, tensors: tuple[torch.Tensor, ...], index: Optional[torch.Tensor]) -> Iterator[Any]:
        order = torch.arange(len(self.dataset)) if self.order is None else self.order
        if index is not None:
            order = index[order]
        for i in range(0, order.numel(), self.batch_size):
            idx = order[i: i + self.batch_size]
            yield tuple(t[idx] for t in tensors)


def iter_batches(dataset: Any, batch_size: int, order: Optional[Union[torch.Tensor, Sequence[int]]] = None
                 ) -> Iterable[Any]:
    """Batches of ``dataset`` taken in ``order`` (see the module docstring, "Batches").

    Parameters
    ----------
    dataset : Dataset
        ``TensorDataset`` or ``Subset`` of one (batched by tensor indexing), or any map-style
        dataset (through a ``DataLoader``).
    batch_size : int
        Items per batch (>= 1); the last batch may be shorter.
    order : tensor or sequence of int, optional
        The items' indices in the order wanted (e.g. a ``torch.randperm``); default
        ``0 .. len(dataset) - 1``.

    Returns
    -------
    iterable
        Sized and iterable any number of times (the same batches each time). For a tensor
        source each batch is ``tuple(t[idx] for t in tensors)`` (fresh tensors) with ``idx`` the
        batch's slice of ``order``; otherwise what the ``DataLoader`` yields (the same values,
        collated).

    Raises
    ------
    DatasetError
        A batch size below 1.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise DatasetError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    order_t = None if order is None else torch.as_tensor(order, dtype=torch.int64).reshape(-1)
    return _Batches(dataset, batch_size, order_t)


def _resize(x: torch.Tensor, image_size: Optional[int]) -> torch.Tensor:
    if image_size is None:
        return x
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise DatasetError(f"image_size must be a positive integer, got {image_size!r}")
    if x.shape[-2:] == (image_size, image_size):
        return x
    if x.shape[0] == 0:
        return x.new_empty(0, x.shape[1], image_size, image_size)
    shrink = image_size < max(x.shape[-2:])
    return torch.cat([F.interpolate(c, size=(image_size, image_size), mode="bilinear", align_corners=False,
                                    antialias=shrink) for c in x.split(8192)])  # chunks bound the temporaries


# ------------------------------------------------------------------------------ digits
def _stratified_test_indices(labels: np.ndarray, n_test: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, stratified test set of exactly ``n_test`` items."""
    n = labels.size
    perm = np.random.default_rng(seed).permutation(n)
    order = perm[np.argsort(labels[perm], kind="stable")]  # permuted within each class, classes in order
    i = np.arange(n)
    pick = (i + 1) * n_test // n > i * n_test // n  # exactly n_test evenly spaced positions
    return np.sort(order[pick])


@register_dataset("digits", num_classes=10, in_channels=1, image_size=8, mean=(0.3053,), std=(0.3760,),
                  needs_root=False)
def _load_digits(root: Optional[Path], split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 handwritten digits (1797 images, bundled with scikit-learn), seeded 80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise DatasetError("the digits dataset needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    n_test = math.ceil(DIGITS_TEST_FRACTION * labels.size)
    test = np.zeros(labels.size, dtype=bool)
    test[_stratified_test_indices(labels, n_test, seed)] = True
    keep = test if split == "test" else ~test
    x = torch.from_numpy(images[keep]).unsqueeze(1)
    return x, torch.from_numpy(labels[keep])


# ------------------------------------------------------------------------------- MNIST
def read_idx(path: PathLike, magic: int) -> np.ndarray:
    """An IDX file's uint8 array (``.gz`` files are decompressed), checking its magic number and size.

    Parameters
    ----------
    path : str or Path
        The file.
    magic : int
        Expected magic: ``0x00000803`` (3-D images) or ``0x00000801`` (1-D labels).

    Raises
    ------
    DatasetError
        If the file cannot be read, has another magic number or is truncated or too long.
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if len(raw) < 4:
        raise DatasetError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        raise DatasetError(f"{path}: IDX magic 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise DatasetError(f"{path}: {len(raw) - header} data bytes for dimensions {dims} "
                           f"({math.prod(dims)} expected)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_mnist(root: Path, base: str) -> Optional[Path]:
    for folder in (root, root / "MNIST" / "raw"):
        for name in (base, base + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


@register_dataset("mnist", num_classes=10, in_channels=1, image_size=28, mean=(0.1307,), std=(0.3081,))
def _load_mnist(root: Optional[Path], split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST handwritten digits from the four standard IDX files (28x28, 60000 train / 10000 test)."""
    assert root is not None
    names = MNIST_FILES[split]
    found = [_find_mnist(root, base) for base in names]
    if None in found:
        missing = ", ".join(f"{b}[.gz]" for b, p in zip(names, found) if p is None)
        raise DatasetError(f"mnist {split} files missing in {str(root)!r} (and {str(root / 'MNIST' / 'raw')!r}): "
                           f"expected {missing}")
    images = read_idx(found[0], IDX_IMAGES_MAGIC)
    labels = read_idx(found[1], IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{found[0]} holds {images.shape[0]} images but {found[1]} {labels.shape[0]} labels")
    if labels.size and int(labels.max()) > 9:
        raise DatasetError(f"{found[1]}: label {int(labels.max())} outside 0..9")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------- CIFAR-10
def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DatasetError(f"cannot read CIFAR-10 batch {path}: {exc}") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels: Any = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DatasetError(f"{path}: the dict needs b'data' and b'labels'")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: b'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DatasetError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: labels must be integers in 0..9")
    return data, labels.astype(np.int64)


@register_dataset("cifar10", num_classes=10, in_channels=3, image_size=32, mean=(0.4914, 0.4822, 0.4465),
                  std=(0.2470, 0.2435, 0.2616))
def _load_cifar10(root: Optional[Path], split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from the python-version batches in ``cifar-10-batches-py`` (32x32 RGB, 50000 / 10000)."""
    assert root is not None
    names = CIFAR10_FILES[split]
    folder = root / "cifar-10-batches-py"
    if not folder.is_dir() and all((root / n).is_file() for n in names):
        folder = root  # root is the batches directory itself
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        hint = ""
        if (root / "cifar-10-python.tar.gz").is_file():
            hint = " (cifar-10-python.tar.gz is there: extract it)"
        raise DatasetError(f"cifar10 {split} files missing in {str(folder)!r}: expected {', '.join(missing)}{hint}")
    parts = [_read_cifar_batch(folder / n) for n in names]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels)

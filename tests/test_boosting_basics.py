"""boosting.networks, .data, .quant: registries, loaders on synthetic files, formats, a short training."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from boosting.data import (
    CIFAR10_FILES,
    DATASETS,
    MNIST_FILES,
    DatasetError,
    from_tensors,
    load_dataset,
    register_dataset,
)
from boosting.networks import (
    NETWORKS,
    NetworkError,
    as_network,
    get_network,
    init_parameters_,
    register_network,
)
from boosting.quant import (
    QUANT_FORMATS,
    FakeQuant,
    QTensor,
    QuantError,
    compute_scale,
    dequantize,
    fake_quantize,
    get_format,
    quantize,
    storage,
)
from errormodels.inject import inject_, unpack_int4
from errormodels.models import Uniform

INT_FORMATS = ("int16", "int8", "int4")


@pytest.fixture(scope="module")
def digits28() -> tuple:
    """The digits train and test splits resized to 28x28 (loaded once: importing scikit-learn takes ~1 s)."""
    return (load_dataset("digits", split="train", image_size=28), load_dataset("digits", split="test", image_size=28))


# ------------------------------------------------------------------------- networks
def test_network_registry_names_and_errors() -> None:
    assert {"lenet", "vgg-small", "resnet8", "resnet20"} <= set(NETWORKS)
    with pytest.raises(NetworkError, match=r"unknown network 'alexnet'; known: .*lenet.*resnet20"):
        get_network("alexnet", seed=0)
    with pytest.raises(NetworkError, match="already registered"):
        register_network("lenet")(lambda **kw: nn.Identity())
    with pytest.raises(NetworkError, match=r"lenet needs image_size >= 12, got 8 .*image_size=28"):
        get_network("lenet", image_size=8, seed=0)
    with pytest.raises(NetworkError, match="seed must be an integer >= 0"):
        get_network("lenet", seed=-1)
    with pytest.raises(NetworkError, match="num_classes must be an integer >= 1"):
        get_network("lenet", num_classes=0, seed=0)
    with pytest.raises(NetworkError, match="network resnet8: .*unexpected keyword argument 'depth'"):
        get_network("resnet8", depth=20, seed=0)
    assert get_network("LeNet ", seed=0).input_shape == (1, 28, 28)  # names are case-insensitive


def test_register_custom_network() -> None:
    @register_network("test-mlp", in_channels=1, image_size=4)
    def _mlp(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        """A tiny MLP."""
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes))

    try:
        assert NETWORKS["test-mlp"].description == "A tiny MLP."
        net = get_network("test-mlp", num_classes=3, seed=1)
        assert net(torch.zeros(2, 1, 4, 4)).shape == (2, 3)
        assert net.input_shape == (1, 4, 4)
    finally:
        del NETWORKS["test-mlp"]


@pytest.mark.parametrize("name, shape", [
    ("lenet", (1, 28, 28)),    # MNIST, and digits resized to 28
    ("lenet", (3, 32, 32)),    # LeNet on CIFAR-10-shaped input
    ("vgg-small", (3, 32, 32)),
    ("resnet8", (3, 32, 32)),
    ("resnet20", (3, 32, 32)),
])
def test_network_forward_shapes(name: str, shape: tuple) -> None:
    net = get_network(name, num_classes=7, in_channels=shape[0], image_size=shape[1], seed=0)
    out = net(torch.rand(5, *shape, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (5, 7) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    with pytest.raises(NetworkError, match=r"expects input \(N, "):
        net(torch.zeros(5, shape[0], shape[1] + 4, shape[2] + 4))


def test_seeded_init_is_reproducible_and_scoped() -> None:
    torch.manual_seed(123)
    a = get_network("resnet8", seed=5).state_dict()
    before = torch.get_rng_state()
    torch.manual_seed(999)  # global seeding has no effect on the weights
    b = get_network("resnet8", seed=5).state_dict()
    c = get_network("resnet8", seed=6).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    # building draws nothing from the caller's global stream
    state = torch.get_rng_state()
    get_network("vgg-small", seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(before, state)  # (sanity: the check above is not vacuous)
    # init_parameters_ redraws the same weights from the same seed
    net = get_network("lenet", seed=3)
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    init_parameters_(net, seed=3)
    assert all(torch.equal(ref[k], v) for k, v in net.state_dict().items())


def test_as_network_accepts_names_and_modules() -> None:
    module = nn.Linear(3, 2)
    assert as_network(module) is module
    assert isinstance(as_network("lenet", seed=0), nn.Module)
    with pytest.raises(NetworkError, match="needs seed="):
        as_network("lenet")
    with pytest.raises(NetworkError, match="used as given"):
        as_network(module, seed=0)
    with pytest.raises(NetworkError, match="got int"):
        as_network(3)


# ---------------------------------------------------------------------------- digits
def test_dataset_registry() -> None:
    assert {"digits", "mnist", "cifar10"} <= set(DATASETS)
    assert (DATASETS["cifar10"].in_channels, DATASETS["cifar10"].image_size) == (3, 32)
    with pytest.raises(DatasetError, match=r"unknown dataset 'svhn'; known: cifar10, digits, mnist"):
        load_dataset("svhn")
    with pytest.raises(DatasetError, match="split must be 'train' or 'test'"):
        load_dataset("digits", split="val")
    with pytest.raises(DatasetError, match="already registered"):
        register_dataset("mnist", num_classes=10, in_channels=1, image_size=28, mean=(0.0,), std=(1.0,))


def test_digits_offline_split(digits28: tuple) -> None:
    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test")
    (xtr, ytr), (xte, yte) = train.tensors, test.tensors
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert float(xtr.min()) == 0.0 and float(xtr.max()) == 1.0
    # the splits partition the data, stratified: each class's test share within one of 20 %
    counts_tr, counts_te = torch.bincount(ytr, minlength=10), torch.bincount(yte, minlength=10)
    total = counts_tr + counts_te
    assert int(total.sum()) == 1797 and int(total.min()) >= 174
    assert bool(((counts_te.double() - total.double() * 360 / 1797).abs() <= 1).all())
    # the same seed gives the same split; another seed another one
    assert torch.equal(load_dataset("digits", split="test").tensors[0], xte)
    assert not torch.equal(load_dataset("digits", split="test", seed=1).tensors[0], xte)
    # resized for LeNet: 28x28, still in [0, 1]
    x28 = digits28[0].tensors[0]
    assert x28.shape == (1437, 1, 28, 28) and float(x28.min()) >= 0.0 and float(x28.max()) <= 1.0
    # normalize: dataset constants, so the train split is roughly standardised
    xn = load_dataset("digits", split="train", normalize=True).tensors[0]
    assert abs(float(xn.mean())) < 0.05 and abs(float(xn.std()) - 1.0) < 0.05


def test_from_tensors() -> None:
    x = torch.rand(6, 5, 5, generator=torch.Generator().manual_seed(0))
    ds = from_tensors(x, np.arange(6) % 3, image_size=10)
    xs, ys = ds.tensors
    assert xs.shape == (6, 1, 10, 10) and ys.dtype == torch.int64 and ys.tolist() == [0, 1, 2, 0, 1, 2]
    assert from_tensors(x.unsqueeze(1), torch.zeros(6, dtype=torch.int32)).tensors[0].data_ptr() != x.data_ptr()
    with pytest.raises(DatasetError, match="6 images but 5 labels"):
        from_tensors(x, torch.zeros(5, dtype=torch.int64))
    with pytest.raises(DatasetError, match="labels must be a 1-D integer tensor"):
        from_tensors(x, torch.zeros(6))
    with pytest.raises(DatasetError, match="images must be floating point"):
        from_tensors(torch.zeros(6, 5, 5, dtype=torch.uint8), torch.zeros(6, dtype=torch.int64))
    with pytest.raises(DatasetError, match=r"images must be \(N, C, H, W\)"):
        from_tensors(torch.zeros(6, 5), torch.zeros(6, dtype=torch.int64))


# ----------------------------------------------------------------------------- MNIST
def write_idx(path: Path, array: np.ndarray, magic: int, compress: bool = False) -> Path:
    """An IDX file: big-endian magic, one big-endian uint32 per dimension, then the bytes."""
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def synthetic_mnist(root: Path, n: dict, rng: np.random.Generator) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, (img_name, lbl_name) in MNIST_FILES.items():
        images = rng.integers(0, 256, (n[split], 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n[split], dtype=np.uint8)
        write_idx(root / img_name, images, 0x00000803, compress=split == "test")  # test files gzip-compressed
        write_idx(root / lbl_name, labels, 0x00000801, compress=split == "test")
        arrays[split] = (images, labels)
    return arrays


def test_mnist_loader_on_synthetic_idx_files(tmp_path: Path) -> None:
    arrays = synthetic_mnist(tmp_path, {"train": 12, "test": 5}, np.random.default_rng(0))
    for split in ("train", "test"):
        x, y = load_dataset("mnist", root=tmp_path, split=split).tensors
        images, labels = arrays[split]
        assert x.shape == (len(labels), 1, 28, 28) and x.dtype == torch.float32
        assert torch.allclose(x[:, 0], torch.from_numpy(images.astype(np.float32) / 255))
        assert y.tolist() == labels.tolist()
    # torchvision's layout root/MNIST/raw, resized and normalised
    synthetic_mnist(tmp_path / "tv" / "MNIST" / "raw", {"train": 3, "test": 2}, np.random.default_rng(1))
    x, _ = load_dataset("mnist", root=str(tmp_path / "tv"), split="test", image_size=32, normalize=True).tensors
    assert x.shape == (2, 1, 32, 32)
    net = get_network("lenet", seed=0)
    assert net(load_dataset("mnist", root=tmp_path, split="test").tensors[0]).shape == (5, 10)


def test_mnist_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="give root="):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match=r"directory '.*nowhere' does not exist"):
        load_dataset("mnist", root=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"mnist train files missing in '.*' \(and '.*MNIST/raw'\): expected "
                                           r"train-images-idx3-ubyte\[\.gz\], train-labels-idx1-ubyte\[\.gz\]"):
        load_dataset("mnist", root=tmp_path)
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (4, 28, 28)), 0x00000801)
    write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 4), 0x00000801)
    with pytest.raises(DatasetError, match="IDX magic 0x00000801, expected 0x00000803"):
        load_dataset("mnist", root=tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (3, 28, 28)), 0x00000803)
    with pytest.raises(DatasetError, match="holds 3 images but .* 4 labels"):
        load_dataset("mnist", root=tmp_path)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-10])
    with pytest.raises(DatasetError, match=r"data bytes for dimensions \(3, 28, 28\)"):
        load_dataset("mnist", root=tmp_path)


# -------------------------------------------------------------------------- CIFAR-10
def synthetic_cifar(folder: Path, n: int, rng: np.random.Generator) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in CIFAR10_FILES["train"] + CIFAR10_FILES["test"]:
        batch = {b"batch_label": name.encode(), b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
        batches[name] = batch
    return batches


def test_cifar10_loader_on_synthetic_batches(tmp_path: Path) -> None:
    batches = synthetic_cifar(tmp_path / "cifar-10-batches-py", 3, np.random.default_rng(0))
    x, y = load_dataset("cifar10", root=tmp_path, split="train").tensors
    assert x.shape == (15, 3, 32, 32) and y.shape == (15,)
    data = batches["data_batch_2"][b"data"][1]  # 4th image: 1024 red, 1024 green, 1024 blue, row by row
    assert float(x[4, 1, 0, 0]) == pytest.approx(data[1024] / 255)
    assert float(x[4, 2, 31, 31]) == pytest.approx(data[3071] / 255)
    assert float(x[4, 0, 1, 0]) == pytest.approx(data[32] / 255)
    assert y.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    xt, yt = load_dataset("cifar10", root=tmp_path / "cifar-10-batches-py", split="test").tensors  # the dir itself
    assert xt.shape == (3, 3, 32, 32) and yt.tolist() == batches["test_batch"][b"labels"]
    for name in ("vgg-small", "resnet8", "resnet20"):
        assert get_network(name, seed=0)(xt).shape == (3, 10)


def test_cifar10_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"cifar10 test files missing in '.*cifar-10-batches-py': "
                                           r"expected test_batch"):
        load_dataset("cifar10", root=tmp_path, split="test")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"expected data_batch_1, .*data_batch_5 \(cifar-10-python.tar.gz "
                                           r"is there: extract it\)"):
        load_dataset("cifar10", root=tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"b'data' must be uint8 \(N, 3072\)"):
        load_dataset("cifar10", root=tmp_path, split="test")
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="cannot read CIFAR-10 batch"):
        load_dataset("cifar10", root=tmp_path, split="test")


# ----------------------------------------------------------------------- quantization
def test_format_registry() -> None:
    assert list(QUANT_FORMATS) == ["fp32", "int16", "int8", "int4", "uint8", "uint4"]
    assert [get_format(n).qmax for n in INT_FORMATS] == [32767, 127, 7]
    assert [get_format(n).int_range for n in ("uint8", "uint4")] == [(0, 255), (0, 15)]
    assert get_format("INT8") is QUANT_FORMATS["int8"]
    with pytest.raises(QuantError, match=r"unknown numeric format 'int2'; known: fp32, int16, int8, int4, uint8, uint4"):
        get_format("int2")


def test_docstring_example() -> None:
    q = quantize(torch.tensor([-0.5, 0.1, 1.27]), "int8")
    assert q.scale == pytest.approx(0.01) and q.data.tolist() == [-50, 10, 127]
    assert torch.allclose(dequantize(q), torch.tensor([-0.5, 0.1, 1.27]))


@pytest.mark.parametrize("fmt", INT_FORMATS)
@pytest.mark.parametrize("shape", [(1,), (7,), (4, 5, 3), (2, 3, 5, 5)])
def test_quantize_round_trip_and_ranges(fmt: str, shape: tuple) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(len(shape))) * 3
    q = quantize(x, fmt)
    f = get_format(fmt)
    assert q.scale == pytest.approx(float(x.abs().max()) / f.qmax, rel=1e-6) == compute_scale(x, fmt)
    assert q.data.dtype == {"int16": torch.int16, "int8": torch.int8, "int4": torch.uint8}[fmt]
    if fmt == "int4":
        assert q.data.shape == ((x.numel() + 1) // 2,)  # two codes a byte, padded to whole bytes
    else:
        assert q.data.shape == x.shape
    codes = q.int_values()
    assert codes.shape == x.shape
    assert int(codes.min()) >= -f.qmax and int(codes.max()) <= f.qmax
    assert int(codes.abs().max()) == f.qmax  # the largest |x| gets qmax
    back = dequantize(q)
    assert back.shape == x.shape and back.dtype == torch.float32
    assert float((back - x).abs().max()) <= q.scale / 2 * (1 + 1e-5) + 1e-7


def test_quantize_edge_cases() -> None:
    z = quantize(torch.zeros(3, 3), "int8")
    assert z.scale == 1.0 and bool((dequantize(z) == 0).all())
    q = quantize(torch.tensor([0.5, -3.0, 10.0]), "int4", scale=0.5)  # saturates beyond 7 * 0.5
    assert q.int_values().tolist() == [1, -6, 7]
    assert q.data.tolist() == [0xA1, 0x07]  # 1 | (-6 & 0xF) << 4, then 7 and a zero nibble of padding
    fp = quantize(torch.tensor([1.5, float("nan")], dtype=torch.float64), "fp32")
    assert fp.data.dtype == torch.float32 and storage(fp).dtype_bits == 32 and fp.scale == 1.0
    with pytest.raises(QuantError, match="NaN or Inf"):
        quantize(torch.tensor([1.0, float("inf")]), "int8")
    with pytest.raises(QuantError, match="NaN"):
        quantize(torch.tensor([1.0, float("nan")]), "int8", scale=0.1)
    with pytest.raises(QuantError, match="scale must be a finite number > 0"):
        quantize(torch.ones(2), "int8", scale=0.0)
    with pytest.raises(QuantError, match="floating-point"):
        quantize(torch.ones(2, dtype=torch.int32), "int8")
    with pytest.raises(QuantError, match="fp32 holds floats"):
        fp.int_values()


def test_int4_packing_round_trip() -> None:
    values = torch.arange(-7, 8, dtype=torch.float32)  # every int4 code quantize can make, odd count
    q = quantize(values, "int4", scale=1.0)
    assert q.data.numel() == 8
    assert torch.equal(q.int_values(), values.to(torch.int8))
    assert torch.equal(unpack_int4(q.data)[:15], values.to(torch.int8))
    assert torch.equal(dequantize(q), values)
    assert (int(q.data[0]) & 0xF, int(q.data[0]) >> 4) == (-7 & 0xF, -6 & 0xF)  # low nibble first


@pytest.mark.parametrize("fmt", ("fp32",) + INT_FORMATS)
def test_injection_into_storage_changes_only_flipped_values(fmt: str) -> None:
    x = torch.randn(4001, generator=torch.Generator().manual_seed(1))
    q = quantize(x, fmt)
    s = storage(q)
    assert s.tensor is q.data and s.dtype_bits == {"fp32": 32, "int16": 16, "int8": 8, "int4": 4}[fmt]
    clean_bytes = s.tensor.clone().view(torch.uint8).numpy()
    clean = dequantize(q)
    stats = inject_(s.tensor, Uniform(ber=0.01), seed=7, dtype_bits=s.dtype_bits)
    diff = np.unpackbits(clean_bytes ^ s.tensor.view(torch.uint8).numpy(), bitorder="little")
    assert stats.bits_flipped == int(diff.sum()) > 0
    per_value = diff.reshape(-1, s.dtype_bits).any(axis=1)[: x.numel()]  # int4: drops the padding nibble
    noisy = dequantize(q)
    if fmt == "fp32":  # compare bit patterns (a flip can make NaN)
        changed = (noisy.view(torch.int32) != clean.view(torch.int32)).numpy()
    else:
        changed = (noisy != clean).numpy()
        assert torch.equal(noisy, q.int_values().to(torch.float32) * q.scale)
    assert np.array_equal(changed, per_value)


def test_fake_quant_forward_and_straight_through_gradient() -> None:
    x = (torch.randn(64, generator=torch.Generator().manual_seed(2)) * 2).requires_grad_()
    for fmt in ("fp32",) + INT_FORMATS:
        y = fake_quantize(x, fmt)
        expected = x.detach() if fmt == "fp32" else dequantize(quantize(x, fmt))
        assert torch.equal(y.detach(), expected)
        (y * torch.arange(64.0)).sum().backward()
        assert torch.equal(x.grad, torch.arange(64.0))  # identity backward
        x.grad = None
    y = FakeQuant.apply(x, "int4", 0.1)  # saturating values still pass their gradient
    y.sum().backward()
    assert float(y.detach().abs().max()) == pytest.approx(0.7) and torch.equal(x.grad, torch.ones(64))
    assert isinstance(quantize(x, "int8"), QTensor)  # quantize detaches


# ------------------------------------------------------------------------- training
def test_lenet_learns_digits(lenet_digits_state: tuple) -> None:
    from conftest import lenet_from

    state, _, test = lenet_digits_state  # trained by train_lenet_on_digits in conftest.py
    net = lenet_from(state)
    with torch.no_grad():
        accuracy = float((net(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean())
    assert accuracy > 0.8, f"LeNet reached {accuracy:.3f} on the digits test split"

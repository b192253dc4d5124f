"""Layer-type selection of ErrorSpec and arbitrary modules (a torchvision-style ResNet) through inference,
retraining and characterization."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from boosting.characterization import NetworkWorkload, SerialExecutor, coarse_characterize
from boosting.data import load_dataset
from boosting.inference import (
    DEFAULT_LAYER_TYPES,
    LAYER_TYPES,
    ErrorInjector,
    ErrorSpec,
    InferenceError,
    calibrate,
    evaluate,
    injectable_layers,
)
from boosting.records import spec_from_dict, spec_to_dict
from boosting.retrain import retrain
from errormodels.models import get_model


# ------------------------------------------------------------- a torchvision-style ResNet
class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3-bn-relu-conv3x3-bn, + identity or downsample, relu (one inplace ReLU, twice)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet layout, tiny: stem conv-bn-relu-maxpool, two stages, adaptive avgpool, fc."""

    def __init__(self, layers: tuple[int, int] = (1, 1), num_classes: int = 10, in_channels: int = 1,
                 width: int = 4) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(2 * width, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2 * width, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


CONVS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0"]
BNS = ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer2.0.bn1", "layer2.0.bn2", "layer2.0.downsample.1"]


def _resnet(seed: int = 0) -> ResNet:
    torch.manual_seed(seed)
    net = ResNet()
    with torch.no_grad():  # non-trivial BN statistics and affine weights
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """128 digits at their native 8x8 (deterministic split)."""
    ds = load_dataset("digits", split="train")
    return ds.tensors[0][:128], ds.tensors[1][:128]


def _spec(ber: float, **kw) -> ErrorSpec:
    return ErrorSpec(get_model("uniform", ber=ber), **kw)


# ---------------------------------------------------------------------- selection, spec
def test_layer_type_registry_and_validation() -> None:
    assert list(LAYER_TYPES) == ["conv", "linear", "bn", "norm", "embedding", "all"]
    assert DEFAULT_LAYER_TYPES == ("conv", "linear") == _spec(0.0).layer_types
    spec = _spec(0.0, layer_types=["BN", "conv", "conv"])
    assert spec.layer_types == ("conv", "bn") and hash(spec.layer_types)
    assert _spec(0.0, layer_types="bn").layer_types == ("bn",)
    with pytest.raises(InferenceError, match=r"^unknown layer type\(s\) 'relu'; known: conv, linear, bn, norm, "
                                              r"embedding, all$"):
        _spec(0.0, layer_types=("conv", "relu"))
    with pytest.raises(InferenceError, match="at least one"):
        _spec(0.0, layer_types=())
    with pytest.raises(InferenceError, match="unknown layer type"):
        injectable_layers(nn.Linear(2, 2), ("dense",))


def test_injectable_layers_by_type() -> None:
    net = _resnet()
    assert [n for n, _ in injectable_layers(net)] == CONVS[:5] + [CONVS[5], "fc"]
    assert [n for n, _ in injectable_layers(net, ("bn",))] == BNS
    both = [n for n, _ in injectable_layers(net, ("conv", "linear", "bn"))]
    assert both == [n for n, _ in injectable_layers(net, "all")] and len(both) == 13
    assert injectable_layers(nn.BatchNorm2d(3, affine=False), "bn") == []  # no weight tensor
    with pytest.raises(InferenceError, match=r"no layer of type\(s\) bn"):
        ErrorInjector(nn.Linear(2, 2), _spec(0.1, layer_types="bn"))


def test_spec_serialization_round_trip() -> None:
    spec = _spec(1e-3, fmt="uint8", mitigation="zero", seed=4, margin=0.1, layer_types=("bn", "conv"),
                 overrides={("conv1", "ifm"): 0.0})
    doc = spec_to_dict(spec)
    assert doc["layer_types"] == ["conv", "bn"]
    assert spec_from_dict(doc) == spec
    old = {k: v for k, v in doc.items() if k != "layer_types"}  # written before the field existed
    assert spec_from_dict(old) == dataclasses.replace(spec, layer_types=DEFAULT_LAYER_TYPES)
    with pytest.raises(InferenceError, match="unknown layer type"):
        spec_from_dict({**doc, "layer_types": ["nope"]})


def test_bn_weights_get_errors_only_when_selected(data) -> None:
    x = data[0][:16]
    net = _resnet()
    bn_clean = {n: m.weight.detach().clone() for n, m in injectable_layers(net, "bn")}
    with torch.no_grad():
        with ErrorInjector(net, _spec(0.3, fmt="int8", seed=1)) as inj:
            net(x)
            assert set(inj.stats) == {(n, k) for n in CONVS + ["fc"] for k in ("weight", "ifm")}
            assert all(torch.equal(m.weight, bn_clean[n]) for n, m in injectable_layers(net, "bn"))
        with ErrorInjector(net, _spec(0.3, fmt="int8", seed=1, layer_types=("conv", "linear", "bn"))) as inj:
            net(x)
            for n, m in injectable_layers(net, "bn"):
                assert inj.stats[(n, "weight")].bits_flipped > 0 and inj.stats[(n, "ifm")].bits_flipped > 0
                assert not torch.equal(m.weight, bn_clean[n])
    assert all(torch.equal(m.weight, bn_clean[n]) for n, m in injectable_layers(net, "bn"))  # restored


def test_embedding_weights_only_and_module_called_twice() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.lin = nn.Linear(6, 6)  # applied twice per forward

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.lin(torch.relu(self.lin(self.emb(idx))))

    torch.manual_seed(0)
    net = Net()
    idx = torch.arange(10).reshape(2, 5)
    cal = calibrate(net, [idx], "int8", layer_types=("embedding", "linear"))
    assert set(cal.weight_ranges) == {"emb", "lin"} and set(cal.ifm_ranges) == {"lin"}
    with pytest.raises(InferenceError, match="calibration lacks layer.*emb"):
        ErrorInjector(net, _spec(0.0, layer_types="embedding"), calibrate(net, [idx], "int8"))
    spec = _spec(0.1, fmt="int8", mitigation="saturate", layer_types=("embedding", "linear"), seed=2)
    with torch.no_grad(), ErrorInjector(net, spec, cal) as inj:
        net(idx)
        assert set(inj.stats) == {("emb", "weight"), ("lin", "weight"), ("lin", "ifm")}
        assert inj.stats[("lin", "ifm")].elements_total == 2 * idx.numel() * 6  # two calls
        assert inj.stats[("emb", "weight")].bits_flipped > 0


# ------------------------------------------------------------ ResNet: evaluate, retrain
@pytest.mark.parametrize("fmt, mitigation", [("int8", None), ("fp32", "zero"), ("uint8", "saturate")])
def test_resnet_through_evaluate(data, fmt: str, mitigation) -> None:
    x, y = data[0][:64], data[1][:64]
    net = _resnet()
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    types = ("conv", "linear", "bn")
    cal = calibrate(net, DataLoader(TensorDataset(x), batch_size=64), fmt, layer_types=types)
    assert set(cal.ifm_ranges) == set(CONVS + BNS + ["fc"])
    clean = evaluate(net, loader)
    at0 = evaluate(net, loader, _spec(0.0, fmt=fmt, mitigation=mitigation, layer_types=types), seeds=(0,),
                   calibration=cal)
    assert abs(at0.mean - clean.mean) <= 0.05
    spec = _spec(1e-3, fmt=fmt, mitigation=mitigation, layer_types=types)
    r1 = evaluate(net, loader, spec, seeds=(0, 1), calibration=cal)
    r2 = evaluate(net, loader, spec, seeds=(0, 1), calibration=cal)
    assert r1 == r2 and len(r1.per_seed) == 2 and 0.0 <= r1.mean <= 1.0
    assert not net.training


def test_resnet_gradients_and_retrain(data) -> None:
    x, y = data
    net = _resnet().train()
    spec = _spec(1e-3, fmt="int8", seed=3, layer_types=("conv", "linear", "bn"))
    with ErrorInjector(net, spec) as inj:
        inj.reseed(0)
        nn.functional.cross_entropy(net(x[:32]), y[:32]).backward()
    for n, m in injectable_layers(net, "all"):
        assert m.weight.grad is not None and float(m.weight.grad.abs().sum()) > 0, n
    net.zero_grad()
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    result = retrain(net, TensorDataset(x[:64], y[:64]), _spec(1e-3, fmt="int8", seed=3), epochs=1, lr=1e-2,
                     batch_size=32)
    assert len(result.epochs) == 1 and all(math.isfinite(v) for v in result.losses)
    after = net.state_dict()
    for name in CONVS + BNS + ["fc"]:
        assert not torch.equal(after[name + ".weight"], before[name + ".weight"]), name
    assert not hasattr(net.conv1, "parametrizations")


def test_resnet_through_coarse_characterization(data) -> None:
    x = data[0][:32]
    net = _resnet()
    with torch.no_grad():
        y = net(x).argmax(1)  # labels: the clean network's own predictions, so the baseline is 1.0
    base = _spec(0.0, fmt="int8", layer_types=("conv", "linear", "bn"))
    result = coarse_characterize(NetworkWorkload(net, x, y), base, max_drop=0.1, ber_min=1e-4, ber_max=0.1,
                                 tol=1.5, seeds=(0,), statistic="mean", executor=SerialExecutor())
    assert result.baseline == 1.0 and result.found and 1e-4 <= result.ber < 0.1
    assert any(not p.passed for p in result.probes)

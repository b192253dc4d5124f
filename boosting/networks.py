"""Network builders by name: LeNet for MNIST-sized inputs, small VGG and ResNets for 32x32 inputs.

Registry
--------
:func:`register_network` adds a builder under a name, :func:`get_network` builds one from its
name (torchvision's ``register_model``/``get_model`` pattern), :data:`NETWORKS` maps the names
to their :class:`NetworkSpec`. Any other ``torch.nn.Module`` can be used as it is
(:func:`as_network` accepts a name or a module).

=============  ==========================================  ========  ========  ===========
name           layers                                      input     min side  parameters
=============  ==========================================  ========  ========  ===========
``lenet``      conv5x5(6, pad 2) relu maxpool2,            1x28x28   12        62 k
               conv5x5(16) relu maxpool2,
               fc 120 relu, fc 84 relu, fc classes
``vgg-small``  [conv3x3 bn relu] x2 then maxpool2, per     3x32x32   8         205 k
               stage of 16/32/64 channels;
               fc 128 relu, fc classes
``resnet8``    CIFAR ResNet (He et al. 2016),              3x32x32   4         78 k
               1 basic block per stage, 16/32/64 ch
``resnet20``   CIFAR ResNet, 3 basic blocks per stage      3x32x32   4         272 k
=============  ==========================================  ========  ========  ===========

Input is the default ``(C, H, W)``; parameters are counted for 10 classes and the default input.

LeNet and the 8x8 digits
------------------------
``lenet`` is LeNet-5 as used on MNIST (the network of EDEN's real-DRAM experiment): two 5x5
convolutions (the first padded by 2, so a 28x28 image behaves like LeNet-5's 32x32 input) and
three fully connected layers, with ReLU and max pooling. Its classifier is sized from
``image_size`` (28 gives the classic 16*5*5 = 400 features), and it needs a side of at least
12 pixels. The 8x8 scikit-learn digits are therefore **resized in the data pipeline**, not by
the network: ``load_dataset("digits", image_size=28)`` (:mod:`boosting.data`, bilinear), then
``get_network("lenet", image_size=28, ...)``.

The ResNets use a 3x3 stem, basic blocks with 1x1-convolution + BN projection shortcuts
where the shape changes, global average pooling and one fully connected layer; ``width``
(default 16) sets the first stage's channels. ``vgg-small`` takes ``width`` too. Activations
are separate, non-inplace ``nn.ReLU`` modules, so forward hooks see every feature map, and no
layer draws random numbers in ``forward`` (no dropout).

Initialisation
--------------
:func:`get_network` builds the module with torch's CPU random state forked and seeded with
``seed`` (the caller's global random stream is restored afterwards), then re-initialises
every convolution, linear and normalisation layer from a ``torch.Generator`` seeded with
``seed`` (:func:`init_parameters_`): PyTorch's default scheme (weights
``kaiming_uniform_(a=sqrt(5))``, biases uniform in +-1/sqrt(fan_in), norm layers weight 1,
bias 0, fresh running statistics). The same seed gives the same weights, whatever global
seeding the caller did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

__all__ = [
    "NetworkError",
    "NetworkSpec",
    "NETWORKS",
    "register_network",
    "get_network",
    "as_network",
    "init_parameters_",
    "LeNet",
    "VGGSmall",
    "CifarResNet",
]

Builder = Callable[..., nn.Module]


class NetworkError(ValueError):
    """An unknown network name, a bad build option or an input of the wrong shape."""


@dataclass(frozen=True)
class NetworkSpec:
    """A registered network builder and the input it expects by default.

    Attributes
    ----------
    name : str
        Registry name (lower case).
    builder : callable
        ``builder(*, num_classes, in_channels, image_size, **options) -> nn.Module``.
    in_channels : int
        Default input channels.
    image_size : int
        Default input side in pixels (square images).
    min_image_size : int
        Smallest side the network accepts.
    description : str
        First line of the builder's docstring.
    """

    name: str
    builder: Builder
    in_channels: int
    image_size: int
    min_image_size: int
    description: str


NETWORKS: dict[str, NetworkSpec] = {}
"""Registered networks by name (``list(NETWORKS)`` gives the names)."""


def _known() -> str:
    return ", ".join(sorted(NETWORKS)) or "none"


def register_network(name: str, *, in_channels: int = 3, image_size: int = 32,
                     min_image_size: int = 1) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(*, num_classes, in_channels, image_size, **options)`` as ``name``.

    Parameters
    ----------
    name : str
        Registry name; case-insensitive, must not be taken.
    in_channels, image_size : int
        The input :func:`get_network` assumes when the caller gives none.
    min_image_size : int
        Smallest side in pixels the builder accepts (checked by :func:`get_network`).

    Raises
    ------
    NetworkError
        If the name is empty or already registered.
    """
    key = str(name).strip().lower()
    if not key:
        raise NetworkError("network name must not be empty")
    if key in NETWORKS:
        raise NetworkError(f"network {key!r} is already registered")

    def decorate(builder: Builder) -> Builder:
        doc = (builder.__doc__ or "").strip().splitlines()
        NETWORKS[key] = NetworkSpec(key, builder, in_channels, image_size, min_image_size, doc[0] if doc else "")
        return builder

    return decorate


def _check_int(name: str, value: Any, lo: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise NetworkError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


def get_network(name: str, *, num_classes: int = 10, in_channels: Optional[int] = None,
                image_size: Optional[int] = None, seed: int, **options: Any) -> nn.Module:
    """Build a registered network with weights drawn from ``seed``.

    Parameters
    ----------
    name : str
        A name in :data:`NETWORKS` (case-insensitive).
    num_classes : int
        Outputs of the last layer.
    in_channels : int, optional
        Input channels (default: the network's, see :data:`NETWORKS`).
    image_size : int, optional
        Side of the square input in pixels (default: the network's).
    seed : int
        Seed of the initial weights (non-negative).
    **options
        Builder-specific options, e.g. ``width`` for ``vgg-small`` and the ResNets.

    Returns
    -------
    torch.nn.Module
        In training mode, on the CPU, float32; ``module.input_shape`` is ``(C, H, W)``.

    Raises
    ------
    NetworkError
        For an unknown name (the message lists the known ones), a bad size or option.
    """
    spec = NETWORKS.get(str(name).strip().lower())
    if spec is None:
        raise NetworkError(f"unknown network {name!r}; known: {_known()}")
    _check_int("num_classes", num_classes, 1)
    in_channels = _check_int("in_channels", spec.in_channels if in_channels is None else in_channels, 1)
    image_size = _check_int("image_size", spec.image_size if image_size is None else image_size, 1)
    if image_size < spec.min_image_size:
        hint = " (resize the input, e.g. load_dataset('digits', image_size=28))" if spec.name == "lenet" else ""
        raise NetworkError(f"{spec.name} needs image_size >= {spec.min_image_size}, got {image_size}{hint}")
    seed = _check_int("seed", seed, 0)
    with torch.random.fork_rng(devices=[]):  # construction-time draws do not touch the caller's stream
        torch.manual_seed(seed)
        try:
            model = spec.builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **options)
        except TypeError as exc:
            raise NetworkError(f"network {spec.name}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise NetworkError(f"network {spec.name}: builder returned {type(model).__name__}, not a torch.nn.Module")
    init_parameters_(model, generator=torch.Generator().manual_seed(seed))
    if not hasattr(model, "input_shape"):
        model.input_shape = (in_channels, image_size, image_size)
    return model


def as_network(network: Union[str, nn.Module], *, seed: Optional[int] = None, **config: Any) -> nn.Module:
    """A network from a registry name (built by :func:`get_network`) or a module used as given.

    Parameters
    ----------
    network : str or torch.nn.Module
        A name in :data:`NETWORKS`, or any module (returned unchanged).
    seed : int, optional
        Required with a name; not allowed with a module.
    **config
        :func:`get_network` arguments (names only).

    Raises
    ------
    NetworkError
        For a name without ``seed``, build options given with a module, or anything else.
    """
    if isinstance(network, nn.Module):
        if seed is not None or config:
            raise NetworkError("a torch.nn.Module is used as given: seed and build options apply to names only")
        return network
    if isinstance(network, str):
        if seed is None:
            raise NetworkError(f"building network {network!r} needs seed=")
        return get_network(network, seed=seed, **config)
    raise NetworkError(f"network must be a registry name or a torch.nn.Module, got {type(network).__name__}")


@torch.no_grad()
def init_parameters_(module: nn.Module, *, generator: Optional[torch.Generator] = None,
                     seed: Optional[int] = None) -> nn.Module:
    """Re-initialise conv, linear and norm layers of ``module`` in place from a generator.

    PyTorch's default scheme, with explicit randomness: weights of ``nn.Conv*d``,
    ``nn.ConvTranspose*d`` and ``nn.Linear`` get ``kaiming_uniform_(a=sqrt(5))``, their biases
    uniform in +-1/sqrt(fan_in); batch, group, instance and layer norms get weight 1, bias 0
    and fresh running statistics. Other layers are left alone.

    Parameters
    ----------
    module : torch.nn.Module
        Parameters on the CPU (the generator's device).
    generator : torch.Generator, optional
        Source of randomness (CPU). Give this or ``seed``.
    seed : int, optional
        Seed for a fresh CPU generator.

    Returns
    -------
    torch.nn.Module
        ``module`` itself.
    """
    if (generator is None) == (seed is None):
        raise NetworkError("give exactly one of generator= and seed=")
    if generator is None:
        generator = torch.Generator().manual_seed(_check_int("seed", seed, 0))
    for m in module.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in = m.weight.shape[1] * math.prod(m.weight.shape[2:])
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
            if isinstance(m, nn.modules.batchnorm._NormBase):
                m.reset_running_stats()
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return module


def _check_input(x: torch.Tensor, shape: tuple[int, int, int], name: str) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != shape:
        raise NetworkError(f"{name} expects input (N, {shape[0]}, {shape[1]}, {shape[2]}), got {tuple(x.shape)}")


# ---------------------------------------------------------------------------- LeNet
class LeNet(nn.Module):
    """LeNet-5 style: two 5x5 convolutions and three fully connected layers, ReLU, max pooling.

    Parameters
    ----------
    num_classes : int
        Outputs.
    in_channels : int
        Input channels (1 for MNIST and digits).
    image_size : int
        Input side in pixels, >= 12 (28 for MNIST; digits resized to 28).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        side = (image_size // 2 - 4) // 2
        if side < 1:
            raise NetworkError(f"lenet needs image_size >= 12, got {image_size}")
        self.input_shape = (in_channels, image_size, image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of images ``(N, C, H, W)``."""
        _check_input(x, self.input_shape, "lenet")
        return self.classifier(self.features(x))


@register_network("lenet", in_channels=1, image_size=28, min_image_size=12)
def _lenet(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """LeNet-5 style (2 conv + 3 fc) for 28x28 MNIST and digits resized to 28x28."""
    return LeNet(num_classes, in_channels, image_size)


# ------------------------------------------------------------------------ VGG-small
class VGGSmall(nn.Module):
    """VGG-style: three stages of two 3x3 conv + BN + ReLU and a 2x2 max pool, then fc 128, fc classes.

    Parameters
    ----------
    num_classes, in_channels : int
        Outputs and input channels.
    image_size : int
        Input side, >= 8 (32 for CIFAR-10).
    width : int
        Channels of the first stage (doubled in each later stage); default 16.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 16) -> None:
        super().__init__()
        _check_int("width", width, 1)
        side = image_size // 8
        if side < 1:
            raise NetworkError(f"vgg-small needs image_size >= 8, got {image_size}")
        self.input_shape = (in_channels, image_size, image_size)
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in (width, 2 * width, 4 * width):
            for _ in range(2):
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * side * side, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of images ``(N, C, H, W)``."""
        _check_input(x, self.input_shape, "vgg-small")
        return self.classifier(self.features(x))


@register_network("vgg-small", in_channels=3, image_size=32, min_image_size=8)
def _vgg_small(*, num_classes: int, in_channels: int, image_size: int, width: int = 16) -> nn.Module:
    """Small VGG (6 conv with BN + 2 fc, 16/32/64 channels) for 32x32 CIFAR-10."""
    return VGGSmall(num_classes, in_channels, image_size, width)


# ------------------------------------------------------------------------- ResNets
class _BasicBlock(nn.Module):
    """Two 3x3 conv + BN, ReLU between and after the residual sum; 1x1 conv + BN shortcut on a shape change."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs (He et al. 2016, section 4.2): depth 6n + 2, stages of width, 2 width, 4 width.

    Parameters
    ----------
    depth : int
        8, 14, 20, 32, ... (``(depth - 2) % 6 == 0``).
    num_classes, in_channels : int
        Outputs and input channels.
    image_size : int
        Input side, >= 4 (global average pooling makes the rest size-independent).
    width : int
        Channels of the first stage; default 16.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 width: int = 16) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise NetworkError(f"resnet depth must be 6n + 2 with n >= 1, got {depth!r}")
        _check_int("width", width, 1)
        self.input_shape = (in_channels, image_size, image_size)
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        stages: list[nn.Module] = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = [_BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of images ``(N, C, H, W)``."""
        _check_input(x, self.input_shape, "resnet")
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


@register_network("resnet8", in_channels=3, image_size=32, min_image_size=4)
def _resnet8(*, num_classes: int, in_channels: int, image_size: int, width: int = 16) -> nn.Module:
    """CIFAR ResNet-8 (1 basic block per stage, 16/32/64 channels) for 32x32 CIFAR-10."""
    return CifarResNet(8, num_classes, in_channels, image_size, width)


@register_network("resnet20", in_channels=3, image_size=32, min_image_size=4)
def _resnet20(*, num_classes: int, in_channels: int, image_size: int, width: int = 16) -> nn.Module:
    """CIFAR ResNet-20 (3 basic blocks per stage, 16/32/64 channels) for 32x32 CIFAR-10."""
    return CifarResNet(20, num_classes, in_channels, image_size, width)

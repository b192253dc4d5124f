"""How many bytes each tensor of a network occupies in DRAM."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from boosting.inference import injectable_layers
from boosting.map.base import Key, MapError
from boosting.quant import QuantError, get_format

__all__ = ["tensor_sizes"]


def tensor_sizes(net: nn.Module, fmt: Any, input_shape: Sequence[int], batch_size: int = 1) -> dict[Key, int]:
    """Bytes each tensor of ``net`` occupies in DRAM, per ``(layer, kind)`` in layer order.

    Weights take ``ceil(numel * bits / 8)`` bytes; an input feature map ``ceil(numel * bits / 8)``
    for the whole batch (found with forward pre-hooks on a zero input of ``(batch_size,
    *input_shape)``). Layers are :func:`boosting.inference.injectable_layers`.

    Raises
    ------
    MapError
        An unknown numeric format, a batch size that is not a positive integer, a network
        without convolution or linear layers.
    """
    try:
        bits = get_format(fmt).bits
    except QuantError as exc:
        raise MapError(str(exc)) from None
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise MapError(f"batch_size must be a positive integer, got {batch_size!r}")
    layers = injectable_layers(net)
    if not layers:
        raise MapError("the network has no convolution or linear layers")
    ifm: dict[str, int] = {}
    handles = []
    for name, module in layers:
        def hook(_m: nn.Module, args: tuple, name: str = name) -> None:
            ifm[name] = int(args[0].numel())
        handles.append(module.register_forward_pre_hook(hook))
    param = next(net.parameters(), None)
    x = torch.zeros((batch_size, *map(int, input_shape)), device=param.device if param is not None else "cpu")
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    out: dict[Key, int] = {}
    for name, module in layers:
        out[(name, "weight")] = -(-module.weight.numel() * bits // 8)
        if name in ifm:
            out[(name, "ifm")] = -(-ifm[name] * bits // 8)
    return out

"""Hardware-in-the-loop inference: a network whose weights and feature maps round-trip through a DIMM.

EDEN's real-DRAM experiment (seed slides, "DNN Accuracy of LeNet using Real DRAM"): instead of
simulating bit errors with a model, every tensor the network reads from memory is **written
into the DIMM of a tester and read back** under the operating point being evaluated, and the
bytes that come back are what the layer uses. Accuracy is then measured through the memory
itself, on a real SoftMC tester, on the emulated bench, or on a replayed BER map.

How it works
------------
:class:`HilInjector` is an :class:`~boosting.inference.ErrorInjector` whose error source is a
memory instead of an error model; everything else is shared with simulation, so the two paths
differ only in where the flipped bits come from:

1. a layer's weight (once per :meth:`~HilInjector.reseed`) or input feature map (every forward
   call) is quantized to the stored format (:mod:`boosting.quant`) by the simulator's own code
   (only :meth:`~boosting.inference.ErrorInjector._corrupt` is replaced);
2. its storage bytes are laid out at DRAM addresses by the tensor's
   :class:`~errormodels.layout.AddressMap` (from a DRAM configuration written by
   ``python -m boosting.map``: :func:`boosting.map.placements`, here
   :func:`placements_from_config`; or packed one after another from ``spec.layout`` as the
   simulator does); every DRAM row the tensor touches is written
   whole (bytes of the row not owned by the tensor hold zeros) and read back;
3. the bytes read back replace the stored bytes; flips are counted (0->1 and 1->0) into
   :attr:`~boosting.inference.ErrorInjector.stats`, so the measured BER of every tensor is known;
4. the optional out-of-range mitigation and dequantization follow, as in simulation.

Which rows, and their operating point
-------------------------------------
``row_shift`` moves every placement by that many rows within its bank (modulo the bank's
rows): repetitions with different shifts meet different cells, the hardware counterpart of a
new error seed. :meth:`HilInjector.reseed` (index ``i``) uses shift ``i * shift_rows`` and
restarts an emulated tester's read-noise stream with ``i``.

The memory is any object with ``row_bytes``, ``write_rows(rows, data)`` and
``read_rows(rows, timing, per_burst_activate)`` (:class:`RowMemory`);
:class:`softmc_host.session.TesterSession` is one. This module never opens a port: the caller
opens the bench, sets its supply, and hands the tester in. Timings are per bank
(``read_options``: the keyword arguments of ``read_rows`` for rows of that bank, e.g.
``{"timing": AccessTiming(trcd_ns=10), "per_burst_activate": True}``), because a fine-grained
DRAM configuration gives partitions their own tRCD and tRP.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import lru_cache
from typing import Any, Iterable, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from boosting.inference import (
    DEFAULT_LAYER_TYPES,
    AccuracyResult,
    Calibration,
    ErrorInjector,
    ErrorSpec,
    InferenceError,
    _accuracy,
    _device_of,
)
from boosting.map import MapError, placements
from errormodels.inject import InjectionStats, mitigate_
from errormodels.layout import AddressMap
from errormodels.models import Uniform

__all__ = [
    "RowMemory", "HilError", "HilInjector", "hil_evaluate", "placements_from_config", "roundtrip", "require_arbitrary_data",
]

Key = tuple[str, str]

log = logging.getLogger(__name__)

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


class HilError(InferenceError):
    """Bad hardware-in-the-loop setup (geometry mismatch, a placement that does not fit)."""


class RowMemory(Protocol):
    """What hardware-in-the-loop inference needs of a tester: whole-row writes and reads."""

    row_bytes: int

    def write_rows(self, rows: Sequence[tuple[int, int]], data: Any, timing: Any = None) -> None:
        """Write whole rows (one ``row_bytes`` item per row)."""

    def read_rows(self, rows: Sequence[tuple[int, int]], timing: Any = None,
                  per_burst_activate: bool = False) -> np.ndarray:
        """Read whole rows as a ``(len(rows), row_bytes)`` uint8 array."""


@lru_cache(maxsize=256)
def _row_index(amap: AddressMap, n_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a tensor of ``n_bytes`` at ``amap``: the distinct (bank, row) pairs it touches (``(R, 2)``),
    and for each of its bytes the index of its row and its byte in that row."""
    amap.check_fits(n_bytes)
    bank, row, col = amap.locate(np.arange(n_bytes, dtype=np.int64))
    key = bank.astype(np.int64) * amap.rows + row
    keys, inverse = np.unique(key, return_inverse=True)
    rows = np.stack([keys // amap.rows, keys % amap.rows], axis=1)
    return rows, inverse.astype(np.int64), col.astype(np.int64)


def require_arbitrary_data(memory: RowMemory) -> None:
    """Refuse a memory that cannot hold arbitrary bytes (a stock SoftMC tester: a burst repeats one byte).

    Raises
    ------
    HilError
        One line naming the memory and what it lacks.
    """
    if getattr(memory, "writes_arbitrary_data", True) is False:
        where = getattr(getattr(memory, "link", None), "name", type(memory).__name__)
        kind = getattr(memory, "kind", "this")
        raise HilError(
            f"hardware-in-the-loop inference stores arbitrary weights and activations, but the {kind} tester "
            f"at {where} lacks the write-data extension (a burst repeats one byte); use the bridge firmware "
            "with the extension, or the emulated bench over its serial link"
        )


def roundtrip(memory: RowMemory, data: np.ndarray, amap: AddressMap,
              read_options: Optional[Mapping[int, Mapping[str, Any]]] = None) -> np.ndarray:
    """Write the bytes ``data`` at ``amap`` into ``memory``, read them back, and return what came back.

    Parameters
    ----------
    memory : RowMemory
        The tester (or any object with the same row interface).
    data : numpy.ndarray
        uint8 bytes of the tensor, in storage order.
    amap : AddressMap
        Where byte 0 sits and how the bytes spread over rows and banks.
    read_options : mapping, optional
        ``{bank: read_rows keyword arguments}`` (timing, per-burst activation); banks not
        listed are read with the memory's defaults.

    Returns
    -------
    numpy.ndarray
        uint8, the same length as ``data``.
    """
    require_arbitrary_data(memory)
    data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    if amap.row_bytes != memory.row_bytes:
        raise HilError(f"placement rows are {amap.row_bytes} B but the tester's rows are {memory.row_bytes} B")
    if data.size == 0:
        return data.copy()
    rows, inverse, col = _row_index(amap, int(data.size))
    image = np.zeros((len(rows), amap.row_bytes), dtype=np.uint8)
    image[inverse, col] = data
    row_list = [(int(b), int(r)) for b, r in rows]
    memory.write_rows(row_list, list(image))
    back = np.empty_like(image)
    options = read_options or {}
    for bank in np.unique(rows[:, 0]):
        sel = np.flatnonzero(rows[:, 0] == bank)
        back[sel] = memory.read_rows([row_list[i] for i in sel], **dict(options.get(int(bank), {})))
    return back[inverse, col]


def _shifted(amap: AddressMap, shift_rows: int) -> AddressMap:
    if shift_rows == 0:
        return amap
    return replace(amap, row=(amap.row + shift_rows) % amap.rows)


class HilInjector(ErrorInjector):
    """An :class:`~boosting.inference.ErrorInjector` whose errors come from a memory round trip.

    Parameters
    ----------
    net : nn.Module
        The network (its conv and linear layers read weights and IFMs through the memory).
    memory : RowMemory
        The tester session.
    fmt : str
        Stored format: ``fp32``, ``int16``, ``int8`` or ``int4``.
    mitigation : {"zero", "saturate", None}
        Out-of-range mitigation after the round trip (needs ``calibration``).
    calibration : Calibration, optional
        Clean ranges and IFM scales (:func:`boosting.inference.calibrate`).
    placements : mapping, optional
        ``{(layer, "weight" | "ifm"): AddressMap}``; tensors not listed are packed one after
        another from ``layout`` as in simulation.
    layout : AddressMap
        Base placement for tensors without an explicit one (default bank 0, row 0).
    read_options : mapping, optional
        ``{bank: read_rows keyword arguments}``.
    shift_rows : int
        Rows every placement moves per reseed index (see the module docstring).
    layer_types : tuple of str, optional
        Layer types whose tensors go through the DIMM (:data:`boosting.inference.LAYER_TYPES`);
        default: the calibration's, else conv and linear.
    """

    def __init__(self, net: nn.Module, memory: RowMemory, *, fmt: str = "int8", mitigation: Optional[str] = None,
                 calibration: Optional[Calibration] = None, placements: Optional[Mapping[Key, AddressMap]] = None,
                 layout: AddressMap = AddressMap(), read_options: Optional[Mapping[int, Mapping[str, Any]]] = None,
                 shift_rows: int = 0, layer_types: Optional[tuple[str, ...]] = None) -> None:
        if not hasattr(memory, "write_rows") or not hasattr(memory, "read_rows"):
            raise HilError(f"memory must have write_rows and read_rows, got {type(memory).__name__}")
        require_arbitrary_data(memory)
        if not isinstance(shift_rows, int) or shift_rows < 0:
            raise HilError(f"shift_rows must be a non-negative integer, got {shift_rows!r}")
        self.memory = memory
        self.read_options = dict(read_options or {})
        self.shift_rows = shift_rows
        self.explicit: dict[Key, AddressMap] = dict(placements or {})
        if layer_types is None:
            layer_types = calibration.layer_types if calibration is not None else DEFAULT_LAYER_TYPES
        spec = ErrorSpec(Uniform(ber=0.0), fmt=fmt, mitigation=mitigation, layout=layout, layer_types=layer_types)
        super().__init__(net, spec, calibration)
        unknown = sorted({k for k in self.explicit if k[0] not in self.layers})
        if unknown:
            raise HilError(f"placements name unknown layer(s) {', '.join(sorted({k[0] for k in unknown}))}; "
                           f"layers: {', '.join(self.layers)}")
        for name in self.layers:
            if (name, "weight") in self.explicit:
                self._weight_maps[name] = self.explicit[(name, "weight")]

    def _ifm_map(self, name: str, n_bytes: int) -> AddressMap:
        explicit = self.explicit.get((name, "ifm"))
        return explicit if explicit is not None else super()._ifm_map(name, n_bytes)

    def reseed(self, index: int) -> None:
        """Next repetition: placements move by ``index * shift_rows`` rows; the read-noise stream restarts."""
        super().reseed(index)
        seed_noise = getattr(self.memory, "seed_noise", None)
        if callable(seed_noise):
            seed_noise(index)

    def _corrupt(self, stored: torch.Tensor, dtype_bits: int, name: str, kind: str, amap: AddressMap,
                 mitigation: dict[str, Any], source: dict[str, Any]) -> InjectionStats:
        """Round-trip the stored bytes through the memory, count the flips, then mitigate."""
        work = stored if stored.is_contiguous() else stored.contiguous()
        raw = work.reshape(-1).view(torch.uint8).cpu().numpy().copy()
        back = roundtrip(self.memory, raw, _shifted(amap, self._round * self.shift_rows), self.read_options)
        diff = raw ^ back
        flipped = int(_POPCOUNT[diff].sum())
        ones_lost = int(_POPCOUNT[diff & raw].sum())
        work.reshape(-1).view(torch.uint8).copy_(torch.from_numpy(back).to(work.device))
        if work is not stored:
            stored.copy_(work)
        mitigated = mitigate_(stored, dtype_bits=dtype_bits, **mitigation) if mitigation else 0
        return InjectionStats(bits_total=raw.size * 8, bits_flipped=flipped, flips_0to1=flipped - ones_lost,
                              flips_1to0=ones_lost, elements_total=raw.size * 8 // dtype_bits,
                              elements_touched=_touched(diff, dtype_bits), values_mitigated=mitigated)


def _touched(diff: np.ndarray, width_bits: int) -> int:
    """Elements (of ``width_bits``) with at least one flipped bit, from the XOR of old and new bytes."""
    if width_bits == 4:
        return int(np.count_nonzero(diff & 0x0F) + np.count_nonzero(diff & 0xF0))
    per = width_bits // 8
    return int(np.count_nonzero(diff.reshape(-1, per).any(axis=1))) if per > 1 else int(np.count_nonzero(diff))


def hil_evaluate(net: nn.Module, loader: Iterable[Any], memory: RowMemory, *, fmt: str = "int8",
                 mitigation: Optional[str] = None, calibration: Optional[Calibration] = None,
                 placements: Optional[Mapping[Key, AddressMap]] = None, layout: AddressMap = AddressMap(),
                 read_options: Optional[Mapping[int, Mapping[str, Any]]] = None, repeats: Sequence[int] = (0, 1, 2),
                 shift_rows: int = 0, confidence: float = 0.95) -> tuple[AccuracyResult, dict[Key, InjectionStats]]:
    """Top-1 accuracy of ``net`` with every weight and IFM read through ``memory``, over repetitions.

    Parameters
    ----------
    net : nn.Module
        The network (evaluated without gradients; its mode is restored).
    loader : iterable
        ``(x, y)`` batches, iterated once per repetition.
    memory : RowMemory
        The tester (``TesterSession``), already at the operating point's VDD.
    fmt, mitigation, calibration, placements, layout, read_options, shift_rows
        As for :class:`HilInjector`.
    repeats : sequence of int
        Repetition indices (each a :meth:`HilInjector.reseed`: other rows if ``shift_rows``,
        a restarted read-noise stream).
    confidence : float
        Confidence level of the interval (as :func:`boosting.inference.evaluate`).

    Returns
    -------
    (AccuracyResult, dict)
        The accuracy with its interval, and the measured flips per ``(layer, kind)`` summed
        over the repetitions.
    """
    repeats = tuple(int(r) for r in repeats)
    if not repeats or any(r < 0 for r in repeats):
        raise HilError(f"give at least one non-negative repetition index, got {repeats!r}")
    device = _device_of(net)
    was_training = net.training
    per: list[float] = []
    n = 0
    try:
        net.eval()
        with torch.no_grad(), HilInjector(net, memory, fmt=fmt, mitigation=mitigation, calibration=calibration,
                                          placements=placements, layout=layout, read_options=read_options,
                                          shift_rows=shift_rows) as injector:
            for r in repeats:
                injector.reseed(r)
                acc, n = _accuracy(net, loader, device)
                per.append(acc)
                log.debug("repetition %d: accuracy %.4f through the memory (%d samples)", r, acc, n)
            stats = dict(injector.stats)
    finally:
        net.train(was_training)
    from boosting.inference import confidence_interval as _interval

    mean, lo, hi = _interval(per, n, confidence)
    method = "t" if len(per) >= 2 else "wilson"
    return AccuracyResult(mean, lo, hi, tuple(per), repeats, n, confidence, method), stats


def placements_from_config(config: Any) -> dict[Key, AddressMap]:
    """``{(layer, kind): AddressMap}`` from a DRAM configuration (``python -m boosting.map``).

    :func:`boosting.map.placements` (the one reader of a configuration's addresses: validated,
    row interleaving, each tensor at its entry's ``bank``, ``row`` and ``offset_bytes``), with
    its error as :class:`HilError`.

    Parameters
    ----------
    config : path, dict or boosting.map.DramConfig
        The configuration.
    """
    try:
        return placements(config)
    except MapError as exc:
        raise HilError(str(exc)) from None

"""Fuzz the network-file reader (``boosting.checkpoint.load_network``).

Two kinds of input, both written to a temporary directory: the bytes of a small valid file
(LeNet at 28x28) with flipped, cut, duplicated or inserted bytes; and a valid document with
structural mutations (keys deleted, values of other types, huge numbers, NaN, deep nesting,
state tensors of another shape or dtype, meta that is not JSON-ready) saved by ``torch.save``.
Only ``CheckpointError`` with a one-line message may come out; a damaged file that loads must
give back exactly the original network (the CRC check finds every damaged byte).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_json import expect_only, json_values, mutate

from boosting.checkpoint import CheckpointError, load_network, save_network
from boosting.networks import get_network

pytestmark = pytest.mark.fuzz

_NET = get_network("lenet", seed=0, image_size=28)
_STATE = {k: v.detach().clone() for k, v in _NET.state_dict().items()}
_DATASET = {"name": "digits", "root": None, "image_size": 28, "normalize": False, "split_seed": 0}
_META = {"kind": "clean", "settings": {"epochs": 2, "lr": 0.003}, "history": [{"epoch": 1, "loss": 0.5}],
         "clean_test_accuracy": 0.97}


def _valid_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = save_network(Path(tmp) / "net.pt", _NET, network="lenet",
                            build={"num_classes": 10, "in_channels": 1, "image_size": 28}, seed=0,
                            dataset=_DATASET, meta=_META)
        return path.read_bytes()


VALID = _valid_bytes()
DOC = {"format": "eden-network", "format_version": 1, "network": "lenet",
       "build": {"num_classes": 10, "in_channels": 1, "image_size": 28}, "seed": 0, "dataset": _DATASET,
       "meta": _META}


def _load(data: bytes) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.pt"
        path.write_bytes(data)
        return load_network(path)


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "flip", "cut", "truncate", "dup", "insert", "zero"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at: at + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[at:]
        elif op == "dup":
            data[at:at] = data[at: at + draw(st.integers(1, 64))]
        elif op == "zero":
            n = draw(st.integers(1, 64))
            data[at: at + n] = bytes(len(data[at: at + n]))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@fuzz_settings(250)
@given(damaged_files())
def test_fuzz_network_file_bytes(data: bytes) -> None:
    nf = expect_only(CheckpointError, lambda: _load(data))
    if nf is not None:  # the damage missed everything that matters: the very same network
        state = nf.net.state_dict()
        assert set(state) == set(_STATE) and all(torch.equal(state[k], v) for k, v in _STATE.items())
        assert nf.meta == _META and nf.dataset == _DATASET


_TENSORS = st.sampled_from([
    torch.zeros(0), torch.zeros(3), torch.zeros(6, 1, 5, 5, dtype=torch.float64), torch.zeros(6, 1, 5, 5, dtype=torch.int8),
    torch.zeros(6, 1, 5, 4), torch.full((6,), float("nan")), torch.zeros((), dtype=torch.bool),
])


@st.composite
def mutated_docs(draw: st.DrawFn) -> bytes:
    """A network document with 1-3 mutations of its plain parts and/or its state, saved by torch.save."""
    values = st.one_of(json_values(False), _TENSORS, st.sampled_from([b"bytes", (1, 2), {1: "int key"}, 10**400]))
    doc = mutate(draw, DOC, values) if draw(st.integers(0, 3)) else dict(DOC)
    if not isinstance(doc, dict):
        doc = {"format": "eden-network", "value": doc}
    state = dict(_STATE)
    for _ in range(draw(st.integers(0, 2))):
        keys = sorted(state)
        op = draw(st.sampled_from(["drop", "add", "reshape", "retype", "replace"]))
        key = keys[draw(st.integers(0, len(keys) - 1))] if keys else "x"
        if op == "drop" and keys:
            del state[key]
        elif op == "add":
            state[draw(st.sampled_from(["extra.weight", key + "_", "conv1.weight"]))] = draw(_TENSORS)
        elif op == "reshape" and isinstance(state.get(key), torch.Tensor):
            state[key] = state[key].reshape(-1)[: max(0, state[key].numel() - 1)]
        elif op == "retype" and isinstance(state.get(key), torch.Tensor):
            state[key] = state[key].to(draw(st.sampled_from([torch.float64, torch.float16, torch.int32])))
        elif op == "replace" and keys:
            state[key] = draw(values)
    if draw(st.integers(0, 5)) or "state_dict" in doc:
        doc.setdefault("state_dict", state)
    buffer = io.BytesIO()
    try:
        torch.save(doc, buffer)
    except Exception:  # an object torch cannot pickle: save the unmutated document
        buffer = io.BytesIO()
        torch.save({**DOC, "state_dict": _STATE}, buffer)
    return buffer.getvalue()


@fuzz_settings(100)
@given(mutated_docs())
def test_fuzz_network_file_structure(data: bytes) -> None:
    nf = expect_only(CheckpointError, lambda: _load(data))
    if nf is not None:  # accepted: a usable network with the documented attribute types
        assert isinstance(nf.network, str) and isinstance(nf.seed, int) and isinstance(nf.meta, dict)
        assert isinstance(nf.dataset.get("name"), str)
        nf.net(torch.zeros(1, *nf.net.input_shape))

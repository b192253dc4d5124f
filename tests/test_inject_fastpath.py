"""The CPU fast paths (numpy) give the same results as the torch paths they shortcut (the uniform
model's compiled kernel: tests/test_inject_kernel.py)."""

from __future__ import annotations

import math

import pytest
import torch

import boosting.inference as inference
import errormodels.inject.mitigation as inj_mitigation
from boosting.quant import QuantError, dequantize, get_format, quantize


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int8, torch.int16, torch.int32, torch.uint8])
@pytest.mark.parametrize("mitigation", ["zero", "saturate"])
def test_numpy_mitigation_matches_torch(dtype: torch.dtype, mitigation: str) -> None:
    gen = torch.Generator().manual_seed(5)
    for _trial in range(20):
        if dtype.is_floating_point:
            x = torch.randn(300, generator=gen, dtype=torch.float64).to(dtype)
            x[::37] = math.nan
            x[1::53] = math.inf
            lo = float(torch.randn(1, generator=gen, dtype=torch.float64)) - 0.5
            hi = lo + abs(float(torch.randn(1, generator=gen, dtype=torch.float64)))
        else:
            info = torch.iinfo(dtype)
            x = torch.randint(info.min, info.max + 1, (300,), generator=gen, dtype=torch.int64).to(dtype)
            lo = int(torch.randint(info.min, info.max + 1, (1,), generator=gen))
            hi = int(torch.randint(lo, info.max + 1, (1,), generator=gen))
        a, b = x.clone(), x.clone()
        n_torch = inj_mitigation._fix(a, mitigation, lo, hi)[0]
        n_numpy = inj_mitigation._fix_np(b.numpy(), mitigation, lo, hi)
        assert n_torch == n_numpy
        assert torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0))


@pytest.mark.parametrize("fmt", ["int8", "int16", "fp32", "int4"])
def test_store_and_load_match_quantize(fmt: str) -> None:
    f = get_format(fmt)
    gen = torch.Generator().manual_seed(2)
    for _trial in range(10):
        x = torch.randn(7, 33, generator=gen) * float(torch.rand(1, generator=gen) * 10)
        for scale in (None, 0.0123, 1e-30):
            q_ref = quantize(x, f, scale=scale)
            q = inference._store(x, f, scale)
            assert q.scale == q_ref.scale and q.shape == q_ref.shape
            assert q.data.dtype == q_ref.data.dtype and torch.equal(q.data, q_ref.data)
            assert torch.equal(inference._load(q), dequantize(q_ref))
    zeros = torch.zeros(4, 5)
    assert torch.equal(inference._store(zeros, f, None).data, quantize(zeros, f).data)


def test_store_raises_like_quantize() -> None:
    f = get_format("int8")
    x = torch.tensor([1.0, math.nan, 2.0])
    for scale in (0.1,):
        with pytest.raises(QuantError):
            quantize(x, f, scale=scale)
        with pytest.raises(QuantError):
            inference._store(x, f, scale)
    inf_x = torch.tensor([1.0, math.inf])
    with pytest.raises(QuantError):
        quantize(inf_x, f)
    with pytest.raises(QuantError):
        inference._store(inf_x, f, None)
    assert torch.equal(inference._store(x, f, None).data, quantize(x, f).data)  # NaN max: scale 1.0, no error

"""SECDED (72, 64) per word (errormodels.protection): single errors corrected, doubles detected."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from errormodels.models import get_model
from errormodels.protection import SECDED_OVERHEAD, inject_protected, secded_decode, secded_encode


def _flip(words: np.ndarray, checks: np.ndarray, bit: int) -> tuple[np.ndarray, np.ndarray]:
    """Flip codeword bit ``bit`` (0..63 data, 64..71 check)."""
    w, c = words.copy(), checks.copy()
    if bit < 64:
        w ^= np.uint64(1) << np.uint64(bit)
    else:
        c ^= np.uint8(1 << (bit - 64))
    return w, c


@pytest.fixture(scope="module")
def words() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.integers(0, 2**63, 6, dtype=np.uint64) * np.uint64(2) + np.uint64(1),
                           np.array([0, 2**64 - 1], dtype=np.uint64)])


def test_a_clean_codeword_decodes_as_is(words) -> None:
    fixed, status = secded_decode(words, secded_encode(words))
    assert np.array_equal(fixed, words) and not status.any()


def test_every_single_error_is_corrected(words) -> None:
    checks = secded_encode(words)
    for bit in range(72):
        fixed, status = secded_decode(*_flip(words, checks, bit))
        assert np.array_equal(fixed, words), bit
        assert (status == 1).all(), bit


def test_every_double_error_is_detected(words) -> None:
    checks = secded_encode(words)
    for a, b in itertools.combinations(range(72), 2):
        w, c = _flip(words, checks, a)
        w, c = _flip(w, c, b)
        fixed, status = secded_decode(w, c)
        assert (status == 2).all(), (a, b)
        assert np.array_equal(fixed, w)  # not "corrected" into a third error


def test_protected_storage_under_a_model() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50_000, generator=g)
    model = get_model("uniform", ber=1e-4)
    plain, plain_stats = inject_protected(x, model, seed=2, protection=None)
    prot, stats = inject_protected(x, model, seed=2)
    assert stats.stored_bits == pytest.approx(x.numel() * 32 * SECDED_OVERHEAD)
    assert plain_stats.data_bits_wrong > 100 and stats.corrected > 100
    # at 1e-4 a 72-bit word holds two flips with probability ~2.5e-5: almost nothing is left wrong
    assert stats.data_bits_wrong <= 0.05 * plain_stats.data_bits_wrong
    assert int((prot != x).sum()) <= stats.detected + 1
    # a binary-coded MLC3 cell fault that flips two bits of one word is a double error: detected, not corrected
    cells = get_model("mlc", ber=1e-3, bits_per_cell=3, code="binary")
    _, cell_stats = inject_protected(x, cells, seed=2)
    assert cell_stats.detected > 0
    with pytest.raises(ValueError, match="protection must be .secded., .msb. or None"):
        inject_protected(x, model, seed=1, protection="chipkill")


def test_msb_only_protection_keeps_the_high_bits() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-128, 128, (40_000,), dtype=torch.int8, generator=g)
    model = get_model("uniform", ber=1e-3)
    plain, _ = inject_protected(x, model, seed=5, protection=None)
    msb, stats = inject_protected(x, model, seed=5, protection="msb", msb_bits=2)
    assert stats.stored_bits == x.numel() * 8 + -(-x.numel() * 2 // 64) * 8  # 2 of 8 bits: 1 + 2/64 per bit
    high = lambda t: (t.view(torch.uint8) >> 6).numpy()  # noqa: E731
    wrong_high_plain = int((high(plain) != high(x)).sum())
    wrong_high = int((high(msb) != high(x)).sum())
    assert wrong_high_plain > 40 and wrong_high <= 2 * stats.detected
    low = lambda t: (t.view(torch.uint8) & 0x3F).numpy()  # noqa: E731
    assert int((low(msb) != low(x)).sum()) > 50  # the low bits are not protected
    with pytest.raises(ValueError, match="msb_bits must be an integer in 1..8"):
        inject_protected(x, model, seed=1, protection="msb", msb_bits=9)

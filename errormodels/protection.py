"""Error protection of stored words: SECDED (72, 64) per 64-bit word, and injection through it.

**The code.** An extended Hamming code over 64 data bits: the data bits take the Hamming
positions 1..71 that are not powers of two (in order: data bit ``i`` at the ``i``-th such
position), seven check bits ``c_j`` (``j = 0..6``) are the parities of the data bits whose
position has bit ``j`` set, and an eighth, ``c_7``, is the parity of the 64 data bits and the
seven checks, so a codeword (64 + 8 = 72 bits) has even overall parity. Decoding recomputes the
checks: the syndrome ``s`` (7 bits) is the Hamming position of a single flipped bit, and the
overall parity tells one flip from two:

* ``s = 0`` and even parity: no error;
* odd parity: one error, corrected (a data bit at position ``s``; a check bit when ``s`` is 0 or
  a power of two); a syndrome naming no position (three or more flips) is *detected*;
* ``s != 0`` and even parity: two errors, *detected*, not corrected (the data are returned as read).

So one flip in a 72-bit codeword is always corrected, two are always detected; three or more may
be miscorrected, as in any SECDED memory. Capacity: 72 stored bits per 64 data bits (1.125x).

**Injection through it** (:func:`inject_protected`; ``protection="msb"`` protects only the high
bits of each element, the cheaper protection MaxNVM weighs): the tensor's storage is cut into 64-bit
words (the last one padded with zeros), the eight check bits of each are stored after the data,
and the error model faults the whole stored image — data and check bits alike, as in a memory
where the checks sit in the same cells — before it is decoded. Energy and latency costs of the
code are not modelled here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

__all__ = ["ProtectionStats", "inject_protected", "secded_decode", "secded_encode", "SECDED_OVERHEAD"]

SECDED_OVERHEAD = 72 / 64
"""Stored bits per data bit under SECDED (72, 64)."""

_POSITIONS = np.array([p for p in range(1, 72) if p & (p - 1)], dtype=np.int64)  # 64 data positions
assert _POSITIONS.size == 64
_MASKS = np.array([sum(1 << i for i in range(64) if _POSITIONS[i] >> j & 1) for j in range(7)], dtype=np.uint64)
_DATA_AT = np.full(128, -1, dtype=np.int64)  # Hamming position -> data bit index (-1: a check bit or none)
_DATA_AT[_POSITIONS] = np.arange(64)


def _parity(x: np.ndarray) -> np.ndarray:
    return (np.bitwise_count(x) & 1).astype(np.uint8)


def secded_encode(words: np.ndarray) -> np.ndarray:
    """The eight check bits (one uint8, ``c_j`` in bit ``j``) of each uint64 data word."""
    words = np.asarray(words, dtype=np.uint64)
    checks = np.zeros(words.shape, dtype=np.uint8)
    for j in range(7):
        checks |= _parity(words & _MASKS[j]) << np.uint8(j)
    overall = _parity(words) ^ _parity(checks.astype(np.uint64))
    return checks | (overall << np.uint8(7))


def secded_decode(words: np.ndarray, checks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct the read words with their read check bits.

    Returns
    -------
    words : numpy.ndarray of uint64
        The corrected data words (a double error's word as read).
    status : numpy.ndarray of uint8
        0 no error, 1 corrected (a data or a check bit), 2 detected and not corrected.
    """
    words = np.asarray(words, dtype=np.uint64).copy()
    checks = np.asarray(checks, dtype=np.uint8)
    expected = secded_encode(words)
    syndrome = ((expected ^ checks) & 0x7F).astype(np.int64)
    odd = (_parity(words) ^ _parity(checks.astype(np.uint64))).astype(bool)  # overall parity of the codeword
    status = np.zeros(words.shape, dtype=np.uint8)
    data_bit = _DATA_AT[syndrome]
    fix = odd & (data_bit >= 0)
    words[fix] ^= np.left_shift(np.uint64(1), data_bit[fix].astype(np.uint64))
    check_only = odd & (data_bit < 0) & ((syndrome & (syndrome - 1)) == 0)  # 0 or a power of two: a check bit
    status[fix | check_only] = 1
    status[(odd & ~fix & ~check_only) | (~odd & (syndrome != 0))] = 2
    return words, status


@dataclass(frozen=True)
class ProtectionStats:
    """What one protected injection did: codewords read, corrected, detected; data bits left wrong."""

    words: int = 0
    corrected: int = 0
    detected: int = 0
    data_bits_wrong: int = 0  # after decoding: miscorrected and detected-uncorrected words' wrong bits
    stored_bits: int = 0
    raw_bits_flipped: int = 0


def _words_of(bits: np.ndarray) -> np.ndarray:
    """A flat 0/1 array packed LSB-first into uint64 words (zero-padded)."""
    n_words = -(-bits.size // 64)
    padded = np.zeros(n_words * 64, dtype=np.uint8)
    padded[:bits.size] = bits
    return np.packbits(padded, bitorder="little").view(np.uint64)


def _bits_of(words: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:n]


def inject_protected(tensor: torch.Tensor, model: object, *, seed: int, protection: Optional[str] = "secded",
                     msb_bits: int = 2, layout: object = None) -> tuple[torch.Tensor, ProtectionStats]:
    """A copy of ``tensor`` after its SECDED-protected storage was faulted by ``model`` and decoded.

    Parameters
    ----------
    tensor : torch.Tensor
        Any dtype (its storage bytes are protected), on the CPU.
    model : ErrorModel
        Any registered model (DRAM bits or eNVM cells): it faults data and check bits together.
    seed : int
        The injection seed.
    protection : {"secded", "msb", None}
        ``secded``: every 64 bits of storage carry 8 check bits (1.125x). ``msb``: only the top
        ``msb_bits`` bits of each element are protected, gathered into 64-bit words with their
        own check bits (``1 + msb_bits / (8 * element bits)`` stored bits per data bit); the
        other bits stay unprotected. None stores the data unprotected (the same faults as
        :func:`errormodels.inject.inject`).
    msb_bits : int
        Protected high bits per element, for ``msb`` (1 .. element bits).
    layout : AddressMap, optional
        Passed to the injector.
    """
    from errormodels.inject import inject

    if protection not in ("secded", "msb", None):
        raise ValueError(f"protection must be 'secded', 'msb' or None, got {protection!r}")
    src = tensor.detach().contiguous().cpu()
    raw = src.reshape(-1).view(torch.uint8).numpy()
    if protection == "msb":
        width = src.element_size() * 8
        if not (isinstance(msb_bits, int) and 1 <= msb_bits <= width):
            raise ValueError(f"msb_bits must be an integer in 1..{width}, got {msb_bits!r}")
        bits = np.unpackbits(raw, bitorder="little").reshape(-1, width)
        msb = bits[:, width - msb_bits:].reshape(-1)
        words = _words_of(msb)
        stored = np.concatenate([raw, secded_encode(words)])
        faulted, st = inject(torch.from_numpy(stored), model, seed=seed, layout=layout)
        read = faulted.numpy()
        read_bits = np.unpackbits(read[:raw.size], bitorder="little").reshape(-1, width)
        read_words = _words_of(read_bits[:, width - msb_bits:].reshape(-1))
        fixed, status = secded_decode(read_words, read[raw.size:])
        read_bits[:, width - msb_bits:] = _bits_of(fixed, msb.size).reshape(-1, msb_bits)
        out_bytes = np.packbits(read_bits.reshape(-1), bitorder="little")
        wrong = int(np.bitwise_count(out_bytes ^ raw).sum())
        out = torch.from_numpy(out_bytes).view(src.dtype).reshape(src.shape)
        return out, ProtectionStats(words=words.size, corrected=int((status == 1).sum()),
                                    detected=int((status == 2).sum()), data_bits_wrong=wrong,
                                    stored_bits=stored.size * 8, raw_bits_flipped=st.bits_flipped)
    if protection is None:
        out, st = inject(src, model, seed=seed, layout=layout)
        return out, ProtectionStats(stored_bits=st.bits_total, raw_bits_flipped=st.bits_flipped,
                                    data_bits_wrong=st.bits_flipped)
    n_words = -(-raw.size // 8)
    padded = np.zeros(n_words * 8, dtype=np.uint8)
    padded[:raw.size] = raw
    words = padded.view(np.uint64)
    stored = np.concatenate([padded, secded_encode(words)])  # data words, then their check bytes
    faulted, st = inject(torch.from_numpy(stored), model, seed=seed, layout=layout)
    read = faulted.numpy()
    fixed, status = secded_decode(read[:n_words * 8].view(np.uint64), read[n_words * 8:])
    wrong = int(np.bitwise_count(fixed ^ words).sum())
    out_bytes = fixed.view(np.uint8)[:raw.size].copy()
    out = torch.from_numpy(out_bytes).view(src.dtype).reshape(src.shape)
    return out, ProtectionStats(words=n_words, corrected=int((status == 1).sum()), detected=int((status == 2).sum()),
                                data_bits_wrong=wrong, stored_bits=stored.size * 8, raw_bits_flipped=st.bits_flipped)

"""Bit-error injection into tensors under any registered error model: exact, sparse, layout-aware.

Every model says how its flips are drawn (:meth:`ErrorModel.flip_plan
<errormodels.models.ErrorModel.flip_plan>` returns a :class:`~errormodels.models.FlipPlan`: a
rate for every bit, a set of weak bits at another rate, value-dependent thinning); the injector
draws that plan. The built-in four use it as described below; a registered model that returns
a plan is injected the same way.

Modules
-------
- :mod:`~errormodels.inject.injector`: :func:`inject_`, :func:`inject` (the plan, to the kernel or vectorised);
- :mod:`~errormodels.inject.sampler`: the block sampler's stream, compiled and vectorised (:data:`KERNEL`);
- :mod:`~errormodels.inject.weak`: weak wordline-group and bitline sets (cached);
- :mod:`~errormodels.inject.flip`: XOR of sorted positions into a tensor's bytes, with counts;
- :mod:`~errormodels.inject.mitigation`: :func:`mitigate_`, :func:`calibrate_range`;
- :mod:`~errormodels.inject.int4`: :func:`pack_int4`, :func:`unpack_int4`;
- :mod:`~errormodels.inject.mix`: SplitMix64 in torch (:func:`weak_mask_torch`);
- :mod:`~errormodels.inject.stats`, :mod:`~errormodels.inject.tensors`: stats, errors, dtypes.

What is flipped
---------------
A tensor's bits are numbered as in :mod:`errormodels.layout`: bit ``k`` (LSB first) of
byte ``i`` of its storage (C order) is bit ``8 i + k``; on little-endian hosts bit ``k``
of element ``j`` of a ``w``-bit dtype is bit ``j w + k``. Floats are flipped through an
integer view of the same storage, so flipping bit ``p`` changes exactly that bit
(sign, exponent and mantissa bits alike; NaN payloads survive). Packed int4
(``dtype_bits=4``) is a uint8 tensor holding two 4-bit values, element ``2 i`` in the
low nibble of byte ``i``, element ``2 i + 1`` in the high nibble.

How flips are drawn
-------------------
Every bit flips independently with the probability its model gives it, and the
number of flips follows that distribution exactly, but the cost is proportional to
the number of flips, never to the number of bits:

* a set of ``n`` bits that all flip with probability ``p`` is a Bernoulli process drawn by
  the **block sampler** (its stream is defined in :mod:`~errormodels.inject.sampler`): the
  bits are cut into blocks of 65,536; each block gets a Binomial(block size, p) count by
  inversion of a table of the binomial distribution with one 53-bit hash uniform, then that
  many distinct uniform positions from a counter-based SplitMix64 stream (16 bits per
  position, four per 64-bit word; duplicates are drawn again). Given the counts each bit is
  chosen independently with probability ``p``, so the total is Binomial(n, p) exactly, with
  no per-bit draws and no duplicate positions. For ``p > 1/2`` the bits that do *not* flip
  are drawn this way. Every number of the stream is an integer hash or an exactly rounded
  double operation, so it does not depend on numpy's or torch's generators.
* **uniform** (0): one process, all bits, ``p = ber``.
* **wordline** (1) and **bitline** (2): the tensor's bits are split into weak and
  strong bits by the :class:`~errormodels.layout.AddressMap` (default ``AddressMap()``:
  bank 0, row 0, row interleaving) and :func:`~errormodels.models.weak_mask`. Weak bits
  are drawn at ``p_weak`` by a process over the weak set's ranks (its bits in position
  order); strong bits at ``p_strong`` by a process over all bits that drops the draws landing
  on weak bits (a Bernoulli process restricted to a subset is a Bernoulli process on it).
  Finding the weak set takes one hash per wordline piece the tensor covers (``n_bits /
  group_bits``, vectorised in the compiled kernel), or per bitline of the banks it touches; it
  is cached per (model shape, layout, size, device), 256 sets or 1 GiB at most, so repeated
  injections pay only for the flips.
* **bit-value** (3): candidates at ``max(p01, p10)`` over all bits, each kept if a hash of its
  position lies below ``p01 / max`` (the bit holds 0) or ``p10 / max`` (it holds 1) of the
  range: thinning, exact, and no pass over the data.

On the CPU the compiled kernel (``errormodels/_flipkernel.c``) draws and applies any of these
plans block by block: (for :func:`inject`) it copies a block, draws its flips (strong draws
less the weak set's, the weak set's chosen bits, thinning) and flips them in the lines just
copied, or, for copies of 16 MiB and more, XORs the block's bitmap into the copy with
non-temporal stores; (for :func:`inject_`) it flips in place, a block with a flip per 256
bytes or more in one pass. Blocks go to ``torch.get_num_threads()`` threads of the kernel's
own pool in chunks of 64 KiB (a helper that wakes late takes fewer). Other plans (a custom
model's own weak set), other devices and installs without a C compiler run the same stream
in numpy (counts) and torch (positions, in chunks of about ``2**20`` candidates).

Cost on a 2-core CPU (``python benchmarks/inject.py``, ``docs/error-model-format.md``): every
model adds 3-8 ns per flipped bit (per thread) to a copy, plus a fixed 10-25 us per call; the
first call of a wordline model also hashes its pieces (about 0.3 ns each with AVX-512).

Mitigation
----------
After injection, ``mitigation="zero"`` sets every value outside ``value_range`` to 0
and ``"saturate"`` clamps it to the nearest bound (NaN becomes 0); NaN and +-Inf are
always out of range. EDEN's seed paper found zeroing better. ``value_range`` comes
from clean data (:func:`calibrate_range`). The check runs over every element (what a
reader of the memory would do), so it costs one pass over the tensor.

Randomness
----------
An injection makes one draw from the ``torch.Generator`` given (or one seeded with ``seed``, on
the tensor's device): a 62-bit key, from which every count, position and thinning hash
follows. The same seed gives the same flips on the same device, with or without the
compiled kernel (:data:`KERNEL` says which runs; without a C compiler at install time the
vectorised sampler stands in, slower). The positions depend only on the key, so they are
the same on every device; the key drawn from a CUDA generator differs from a CPU one's.
"""

from errormodels.inject.injector import inject, inject_
from errormodels.inject.int4 import pack_int4, unpack_int4
from errormodels.inject.mitigation import calibrate_range, mitigate_
from errormodels.inject.mix import weak_mask_torch
from errormodels.inject.sampler import KERNEL
from errormodels.inject.stats import InjectionError, InjectionStats
from errormodels.inject.tensors import SUPPORTED_DTYPES, Mitigation
from errormodels.inject.weak import clear_weak_cache, weak_bitlines, weak_groups

__all__ = [
    "InjectionError",
    "InjectionStats",
    "inject_",
    "inject",
    "mitigate_",
    "calibrate_range",
    "pack_int4",
    "unpack_int4",
    "weak_mask_torch",
    "weak_groups",
    "weak_bitlines",
    "clear_weak_cache",
    "SUPPORTED_DTYPES",
    "Mitigation",
    "KERNEL",
]

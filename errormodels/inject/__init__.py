"""Bit-error injection into tensors under any registered error model: exact, sparse, layout-aware.

Every model says how its flips are drawn (:meth:`ErrorModel.flip_plan
<errormodels.models.ErrorModel.flip_plan>` returns a :class:`~errormodels.models.FlipPlan`: a
rate for every bit, a set of weak bits at another rate, value-dependent thinning); the injector
draws that plan. The built-in four use it as described below; a registered model that returns
a plan is injected the same way.

Modules
-------
- :mod:`~errormodels.inject.injector`: :func:`inject_`, :func:`inject` (plan, chunks, stats);
- :mod:`~errormodels.inject.sampler`: the block sampler, compiled kernel and its threads (:data:`KERNEL`);
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

* a set of ``n`` bits that all flip with probability ``p`` is sampled by the **block
  sampler** (the section of that name below defines its stream): the bits are cut into
  blocks of 65,536; each block gets a Binomial(block size, p) count (numpy, all blocks at
  once), then that many distinct uniform positions from a counter-based SplitMix64 stream
  keyed by one draw of the generator (16 bits per position, four per 64-bit word;
  duplicates are drawn again). Given the binomial counts each bit is chosen independently
  with probability ``p``, so the total is Binomial(n, p) exactly, with no per-bit draws and
  no duplicate positions. For ``p > 1/2`` the bits that do *not* flip are drawn this way.
* **uniform** (0): one set, all bits, ``p = ber``. On the CPU a compiled kernel
  (``errormodels/_flipkernel.c``) does it block by block: draw the block's positions into a
  bitmap, then (for :func:`inject`) write ``copy = source XOR bitmap`` in one pass, or (for
  :func:`inject_`) flip in place; on ``torch.get_num_threads()`` threads for large tensors.
* **wordline** (1) and **bitline** (2): the tensor's bits are split into weak and
  strong bits by the :class:`~errormodels.layout.AddressMap` (default ``AddressMap()``:
  bank 0, row 0, row interleaving) and :func:`~errormodels.models.weak_mask`. Weak bits
  are drawn at ``p_weak`` within the weak set; strong bits at ``p_strong`` by drawing
  over all bits and dropping the draws that land on weak bits (a Bernoulli process
  restricted to a subset is a Bernoulli process on it). Finding the weak set takes one
  pass over the wordline groups the tensor covers (``n_bits / group_bits`` ids), or
  over the bitlines of the banks it touches; it is cached per (model shape, layout,
  size, device), so repeated injections pay only for the flips.
* **bit-value** (3): candidates at ``max(p01, p10)`` over all bits, each kept with
  probability ``p01 / max`` if the bit holds 0 and ``p10 / max`` if it holds 1 (thinning:
  exact, and no pass over the data).

The non-uniform models process the tensor in chunks of whole elements sized so that a
chunk draws about ``2**20`` candidates (a few int64 temporaries of 8 MiB), which bounds
the memory at high error rates.

Cost on a 2-core CPU (``python benchmarks/inject.py``, ``docs/error-model-format.md``): the
uniform model adds about 3-4 ns per flipped bit (per thread) to a copy, plus a fixed 0.1-0.5 ms
for a tensor of 25M values (binomial counts per block, a second thread). In place, blocks with
a flip per 256 bytes or more are rewritten in one pass, sparser ones byte by byte. The other
models take about 40-50 ns per flip (sorted positions from the kernel, then torch index
operations), plus for bit-value one more uniform and read per candidate; wordline and bitline
models also pay once per (model shape, placement, size, device) for finding the weak set
(cached, 256 entries).

Mitigation
----------
After injection, ``mitigation="zero"`` sets every value outside ``value_range`` to 0
and ``"saturate"`` clamps it to the nearest bound (NaN becomes 0); NaN and +-Inf are
always out of range. EDEN's seed paper found zeroing better. ``value_range`` comes
from clean data (:func:`calibrate_range`). The check runs over every element (what a
reader of the memory would do), so it costs one pass over the tensor.

Randomness
----------
Every draw comes from the ``torch.Generator`` given (or one seeded with ``seed``) on the
tensor's device: a key for the block sampler, and torch uniforms for the bit-value model's
thinning. The same seed gives the same flips on the same device, with or without the
compiled kernel (:data:`KERNEL` says which runs; without a C compiler at install time the
vectorised torch sampler stands in, slower). The block sampler's positions depend only on
(key, counts), so they are the same on every device; the key drawn from a CUDA generator
differs from a CPU one's.
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

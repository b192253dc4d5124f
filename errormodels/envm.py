"""Multi-level-cell eNVM (RRAM, CTT, ...) as a memory technology: levels per cell, confused as a whole cell.

An eNVM cell stores ``b`` bits (1: SLC, 2: MLC2, 3: MLC3) as one of ``L = 2**b`` levels of a sensed
quantity (a resistance, a threshold voltage). The levels are programmed with variation, so a
read senses a value spread around the level's target; the read thresholds cut the range into
``L`` bins, and a value that lands in another level's bin reads as that level. All ``b`` bits of
the cell change together, by the bit pattern of the new level: faults are per cell, not per bit.

The model here (MaxNVM, MICRO 2019, Sec. 3, describes the same mechanism for measured RRAM and
CTT distributions; its parameters below are **assumptions**, not measurements):

* the sensed quantity is normalised so that the lowest level's target is 0 and the highest's 1
  (the cell's programming window), and the ``L`` targets are evenly spaced in it: packing more
  bits into a cell shrinks the spacing from 1 (SLC) to 1/3 (MLC2) and 1/7 (MLC3);
* a level's sensed value is Gaussian around its target with standard deviation
  ``sigma * level_sigma[l]`` (``level_sigma`` all ones by default: the same variation at every
  level; measured RRAM spreads its middle levels more, which ``level_sigma`` expresses);
* the read thresholds lie midway between adjacent targets.

So the probability that level ``l`` reads as level ``k`` is the Gaussian mass of level ``l`` in
bin ``k`` (:func:`level_confusion`). The bit pattern stored for level ``l`` is ``l`` itself
(``code="binary"``) or its Gray code ``l ^ (l >> 1)`` (``code="gray"``, the default: adjacent
levels differ in one bit, so the most likely fault, to a neighbouring level, flips one bit).

**Its error rate.** A model's ``ber`` is the bit error rate the cell faults cause when the levels
are equally likely (:func:`bit_error_rate`); the model solves ``sigma`` for it (``MLC.sigma``),
so the searches of :mod:`boosting.characterization`, which move a model's ``ber``
(:meth:`ErrorModel.with_ber`), find the tolerable cell variation for a given number of bits per
cell; :meth:`MLC.from_sigma` builds the model of a device's variation instead.

**Cells in a tensor.** Cell ``c`` of a tensor holds its storage bits ``b c .. b c + b - 1``
(bit ``k`` of byte ``i`` is bit ``8 i + k``, :mod:`errormodels.inject`), the lowest bit as the
pattern's bit 0. With ``b = 3`` cells straddle bytes and values, as in a dense packing; the last
cell of a tensor whose size is not a multiple of ``b`` holds zeros in its missing bits, and
flips there are dropped.
"""

from __future__ import annotations

from errormodels.models import (
    CODES,
    MAX_MLC_BER,
    MLC,
    CellPlan,
    bit_error_rate,
    level_confusion,
    level_patterns,
)

__all__ = ["CODES", "CellPlan", "MLC", "bit_error_rate", "level_confusion", "level_patterns", "MAX_MLC_BER"]

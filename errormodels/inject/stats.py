"""What an injection did (:class:`InjectionStats`) and the error it raises (:class:`InjectionError`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["InjectionError", "InjectionStats"]


class InjectionError(ValueError):
    """An unsupported tensor, a bad argument combination, or a generator on another device."""


@dataclass(frozen=True)
class InjectionStats:
    """What one injection did (add stats of several tensors with ``+``).

    Attributes
    ----------
    bits_total : int
        Bits exposed to errors (the tensor's storage).
    bits_flipped : int
        Bits flipped (``flips_0to1 + flips_1to0``).
    flips_0to1, flips_1to0 : int
        Flips of bits that held 0 and of bits that held 1.
    elements_total : int
        Elements (values; two per byte for packed int4).
    elements_touched : int
        Elements with at least one flipped bit.
    values_mitigated : int
        Values found out of range (or NaN/Inf) and zeroed or saturated.
    weak_bits_total, weak_bits_flipped : int
        For wordline and bitline models, bits in weak locations and flips among them (0 otherwise).
    """

    bits_total: int = 0
    bits_flipped: int = 0
    flips_0to1: int = 0
    flips_1to0: int = 0
    elements_total: int = 0
    elements_touched: int = 0
    values_mitigated: int = 0
    weak_bits_total: int = 0
    weak_bits_flipped: int = 0

    @property
    def ber(self) -> float:
        """Observed bit error rate (flipped / total bits)."""
        return self.bits_flipped / self.bits_total if self.bits_total else 0.0

    def __add__(self, other: "InjectionStats") -> "InjectionStats":
        if not isinstance(other, InjectionStats):
            return NotImplemented
        o = other.__dict__  # plain int fields: cheaper than asdict's deep copy
        return InjectionStats(**{k: v + o[k] for k, v in self.__dict__.items()})

    def to_dict(self) -> dict[str, int]:
        """The counts, JSON-ready."""
        return asdict(self)


def _stats(bits_total: int, bits_flipped: int, flips_1to0: int, elements_total: int, elements_touched: int,
           weak_bits_total: int = 0, weak_bits_flipped: int = 0) -> InjectionStats:
    """An :class:`InjectionStats` built without the frozen dataclass's per-field ``__setattr__`` (a hot path)."""
    s = object.__new__(InjectionStats)
    s.__dict__.update(bits_total=bits_total, bits_flipped=bits_flipped, flips_0to1=bits_flipped - flips_1to0,
                      flips_1to0=flips_1to0, elements_total=elements_total, elements_touched=elements_touched,
                      values_mitigated=0, weak_bits_total=weak_bits_total, weak_bits_flipped=weak_bits_flipped)
    return s

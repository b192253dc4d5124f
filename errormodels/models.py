"""EDEN's four DRAM error models, with physically meaningful parameters.

Numbered as in EDEN's slides; each model gives every bit of a memory region a
probability of flipping, and is parameterised by its bit error rate ``ber``
(flipped bits / bits, for data holding as many ones as zeros) plus shape
parameters that keep their meaning when the BER is scaled:

=====  =====================  ==============================================================
model  name                   bit flip probability
=====  =====================  ==============================================================
0      ``uniform``            ``ber`` for every bit, either direction
1      ``wordline``           groups of ``group_bits`` adjacent bits along a wordline (row):
                              a fraction ``weak_fraction`` of groups is weak and flips
                              ``ratio`` times as often as the rest; ``group_bits = 64`` and
                              ``p_weak = 1`` is the draft paper's "whole-word flip"
2      ``bitline``            bitlines (a bit position of a bank, across its rows): a
                              fraction ``weak_fraction`` is weak, ``ratio`` times the rest
3      ``bit-value``          a bit holding 0 flips with ``p01``, one holding 1 with ``p10``;
                              ``p10 = 2 p01`` is the draft paper's "2:1 odds" against zeros
=====  =====================  ==============================================================

Whether a group or bitline is weak is a property of its address, fixed by the
model's ``seed`` (see :func:`weak_mask`), so a retrained network meets the same
weak locations again, as it would on the DIMM.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Mapping

import numpy as np

__all__ = [
    "ModelError",
    "ErrorModel",
    "Uniform",
    "Wordline",
    "Bitline",
    "BitValue",
    "MODELS",
    "get_model",
    "model_from_dict",
    "weak_mask",
]


class ModelError(ValueError):
    """An unknown model name, a parameter of the wrong type or outside its range, or a malformed
    model or curve document; always a one-line message naming the field."""


#: Largest model seed (weak locations hash the seed to 64 bits).
MAX_SEED = 2**64 - 1
#: Largest ``group_bits`` of the wordline model (a whole row of a large DIMM is 2**16 bits).
MAX_GROUP_BITS = 2**32


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a one-line message: shortened, and safe for integers of any size.

    (``repr`` of an integer above Python's digit limit raises ``ValueError``.)
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_number(value: Any) -> bool:
    """True for an int or float that is not a bool (numpy floats count; strings, None do not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_float(value: Any) -> float | None:
    """``float(value)`` for a finite number (not a bool), else None (also for ints too large for a float)."""
    if not is_number(value):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _check(name: str, value: Any, lo: float, hi: float) -> None:
    f = finite_float(value)
    if f is None or not lo <= f <= hi:
        raise ModelError(f"{name} must be in [{lo:g}, {hi:g}], got {show(value)}")


@dataclass(frozen=True)
class ErrorModel:
    """Base of the four models: a bit error rate and a seed for weak locations."""

    ber: float = 1e-4
    seed: int = 0
    number: ClassVar[int] = -1
    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _check("ber", self.ber, 0.0, 1.0)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed <= MAX_SEED:
            raise ModelError(f"seed must be an integer in [0, 2**64 - 1], got {show(self.seed)}")

    @property
    def n_params(self) -> int:
        """Free parameters a fit estimates (for information criteria)."""
        return 1

    def with_ber(self, ber: float) -> "ErrorModel":
        """The same model shape at another bit error rate."""
        return replace(self, ber=float(ber))

    def to_dict(self) -> dict[str, Any]:
        """Name, number and parameters, JSON-ready."""
        return {"model": self.name, "number": self.number, **asdict(self)}

    def describe(self) -> str:
        """One line: the model and its parameters."""
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in asdict(self).items())
        return f"{self.number} {self.name}({params})"


@dataclass(frozen=True)
class Uniform(ErrorModel):
    """Model 0: every bit flips with probability ``ber``, independently, whatever it holds."""

    number: ClassVar[int] = 0
    name: ClassVar[str] = "uniform"


@dataclass(frozen=True)
class _Clustered(ErrorModel):
    """Shared parameters of the wordline and bitline models."""

    weak_fraction: float = 0.01
    ratio: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check("weak_fraction", self.weak_fraction, 0.0, 1.0)
        _check("ratio", self.ratio, 1.0, 1e12)
        if self.p_weak > 1.0 + 1e-12:
            raise ModelError(
                f"{self.name}: ber {self.ber:g} with weak_fraction {self.weak_fraction:g} and ratio "
                f"{self.ratio:g} needs a flip probability {self.p_weak:.3g} > 1 in weak locations"
            )

    @property
    def p_strong(self) -> float:
        """Flip probability of a bit outside weak locations."""
        return self.ber / (self.weak_fraction * self.ratio + 1.0 - self.weak_fraction)

    @property
    def p_weak(self) -> float:
        """Flip probability of a bit in a weak location."""
        return self.p_strong * self.ratio

    @property
    def n_params(self) -> int:
        return 3

    def with_ber(self, ber: float) -> "ErrorModel":
        """The same shape at another BER; the weak probability is capped at 1 (the ratio shrinks)."""
        ber = float(ber)
        f = self.weak_fraction
        if f > 0 and ber / (f * self.ratio + 1 - f) * self.ratio > 1.0:
            # Weak locations saturate: p_weak = 1, the strong ones take the rest.
            p_strong = max(0.0, (ber - f) / (1 - f)) if f < 1 else 1.0
            ratio = 1.0 / p_strong if p_strong > 0 else 1e12
            return replace(self, ber=ber, ratio=min(max(ratio, 1.0), 1e12))
        return replace(self, ber=ber)


@dataclass(frozen=True)
class Wordline(_Clustered):
    """Model 1: weak groups of ``group_bits`` adjacent bits along a row (wordline)."""

    group_bits: int = 64
    number: ClassVar[int] = 1
    name: ClassVar[str] = "wordline"

    def __post_init__(self) -> None:
        super().__post_init__()
        g = self.group_bits
        if not isinstance(g, int) or isinstance(g, bool) or not 1 <= g <= MAX_GROUP_BITS or g & (g - 1):
            raise ModelError(f"group_bits must be a power of two in [1, 2**32], got {show(g)}")


@dataclass(frozen=True)
class Bitline(_Clustered):
    """Model 2: weak bitlines (a bit position in the rows of a bank)."""

    number: ClassVar[int] = 2
    name: ClassVar[str] = "bitline"


@dataclass(frozen=True)
class BitValue(ErrorModel):
    """Model 3: a 0 flips with ``p01``, a 1 with ``p10``; ``ber = (p01 + p10) / 2``.

    ``zero_share`` is the share of flips that are 0->1 when the data holds as many
    ones as zeros: ``p01 = 2 ber zero_share``, ``p10 = 2 ber (1 - zero_share)``.
    """

    zero_share: float = 2.0 / 3.0
    number: ClassVar[int] = 3
    name: ClassVar[str] = "bit-value"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check("zero_share", self.zero_share, 0.0, 1.0)
        if max(self.p01, self.p10) > 1.0 + 1e-12:
            raise ModelError(f"bit-value: ber {self.ber:g} with zero_share {self.zero_share:g} needs a probability > 1")

    @property
    def p01(self) -> float:
        """Probability that a bit holding 0 reads 1."""
        return 2.0 * self.ber * self.zero_share

    @property
    def p10(self) -> float:
        """Probability that a bit holding 1 reads 0."""
        return 2.0 * self.ber * (1.0 - self.zero_share)

    @property
    def n_params(self) -> int:
        return 2


MODELS: dict[str, type[ErrorModel]] = {
    "uniform": Uniform,
    "wordline": Wordline,
    "bitline": Bitline,
    "bit-value": BitValue,
}
_BY_NUMBER = {cls.number: cls for cls in MODELS.values()}


_KNOWN = "known: 0 uniform, 1 wordline, 2 bitline, 3 bit-value"


def _model_class(name: Any) -> type[ErrorModel]:
    """The model class of a name or number (ASCII digits only: ``"²"`` is not 2)."""
    cls = None
    if isinstance(name, numbers.Integral) and not isinstance(name, (bool, np.bool_)):
        cls = _BY_NUMBER.get(int(name))
    elif isinstance(name, str):
        key = name.strip().lower()
        cls = MODELS.get(key)
        if cls is None and key.isascii() and key.isdigit() and len(key) <= 3:
            cls = _BY_NUMBER.get(int(key))
    if cls is None:
        raise ModelError(f"unknown error model {show(name)}; {_KNOWN}")
    return cls


def get_model(name: str | int, **params: Any) -> ErrorModel:
    """Build a model by name (``uniform``, ``wordline``, ``bitline``, ``bit-value``) or number 0-3.

    Parameters
    ----------
    name : str or int
        Model name (case-insensitive), or its number as an int or a string of ASCII digits.
    **params
        Constructor arguments: ``ber``, ``seed`` and the model's shape parameters.

    Raises
    ------
    ModelError
        For an unknown name (the message lists the known ones) or parameter, a parameter of the
        wrong type (bools are not numbers, ints must be ints) or out of range.
    """
    cls = _model_class(name)
    known = {f.name for f in fields(cls)}
    for key in params:
        if key not in known:
            raise ModelError(f"error model {cls.name}: unknown parameter {show(key)}; "
                             f"known: {', '.join(sorted(known))}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ModelError(f"error model {cls.name}: {str(exc).splitlines()[0]}") from None


def model_from_dict(data: Any) -> ErrorModel:
    """Rebuild a model from :meth:`ErrorModel.to_dict` output (e.g. a fitted model's ``selected``).

    ``model`` (name) or ``number`` identifies it (both: they must agree); every other key is a
    parameter, checked as by :func:`get_model`.

    Raises
    ------
    ModelError
        Not a dict, no or an unknown model, ``model`` and ``number`` disagreeing, or a bad parameter.
    """
    if not isinstance(data, Mapping):
        raise ModelError(f"an error model must be a JSON object, got {show(data)}")
    if "model" not in data and "number" not in data:
        raise ModelError("error model has neither 'model' nor 'number'")
    cls = _model_class(data["model"] if "model" in data else data["number"])
    if "model" in data and "number" in data:
        number = data["number"]
        if not isinstance(number, int) or isinstance(number, bool) or number != cls.number:
            raise ModelError(f"error model {cls.name}: number must be {cls.number}, got {show(number)}")
    params = {k: v for k, v in data.items() if k not in ("model", "number")}
    return get_model(cls.name, **params)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def weak_mask(seed: int, kind: int, location: np.ndarray, weak_fraction: float) -> np.ndarray:
    """Which locations are weak: a fixed function of (seed, model kind, location id).

    ``location`` holds integer ids (e.g. ``bank << 40 | row << 20 | group`` for a
    wordline group, ``bank << 20 | bitline`` for a bitline); the result is True for
    a fraction ``weak_fraction`` of ids, the same on every call.
    """
    salt = np.uint64((seed * 0x9E3779B97F4A7C15 + kind * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
    u = _mix(location.astype(np.uint64) ^ salt) >> np.uint64(11)
    return u.astype(np.float64) < weak_fraction * float(1 << 53)


"""EDEN's DRAM error models and the registry every error model lives in.

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

The registry
------------
A model is a frozen dataclass deriving from :class:`ErrorModel`, with a ``name`` and a
``number`` (class variables), registered with :func:`register_model` (as torchvision registers
its networks). A model owns everything the toolkit does with it:

* **sampling**: :meth:`ErrorModel.flip_plan` tells the injector (:mod:`errormodels.inject`) how
  its flips are drawn over a tensor's bits, as a :class:`FlipPlan` (a rate for every bit, a set
  of weak bits at another rate, value-dependent thinning); the injector draws it exactly and
  sparsely;
* **fitting**: the classmethod :meth:`ErrorModel.fit` turns a partition's
  :class:`~errormodels.observations.Observations` into a
  :class:`~errormodels.observations.Candidate` (or None), so :func:`errormodels.fit.fit_all`
  and ``python -m errormodels.fit`` score it beside the others;
* **files**: :meth:`ErrorModel.to_dict` and :func:`model_from_dict` name it in ``model.json``
  and training records by its registered name.

:func:`get_model` and :func:`model_from_dict` build any registered model by name or number;
:data:`MODELS` is the registry itself (name -> class, in registration order, which is also the
order in which models are fitted).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Optional, Protocol, TypeVar, Union, overload

import numpy as np

from errormodels.observations import Candidate, Observations, binom_ll, location_histogram, mixture_em
from softmc_host.splitmix import GAMMA, MASK64, SALT_KIND, mix64_array

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import torch

    from errormodels.layout import AddressMap

__all__ = [
    "ModelError",
    "ErrorModel",
    "FlipPlan",
    "WeakBits",
    "PlanContext",
    "Uniform",
    "Wordline",
    "Bitline",
    "BitValue",
    "MODELS",
    "GROUP_BITS",
    "register_model",
    "MLC",
    "CellPlan",
    "level_confusion",
    "unregister_model",
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
#: Group sizes the wordline fit tries (bits), the best kept.
GROUP_BITS = (8, 64, 512, 65536)


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


# ----------------------------------------------------------------------------- sampling
class WeakBits(Protocol):
    """A set of a tensor's bit positions (0 .. n_bits - 1) that flip at their own rate.

    The injector draws ranks ``0 .. n - 1`` in the set and maps them to positions; ranks are
    in position order.
    """

    n: int  # bits in the set

    def rank_of(self, pos: "torch.Tensor") -> "torch.Tensor":
        """Ranks of the first set bits at or after ``pos`` (``n`` past the last)."""

    def position_of(self, rank: "torch.Tensor") -> "torch.Tensor":
        """Tensor bit positions of ranks."""

    def contains(self, pos: "torch.Tensor") -> "torch.Tensor":
        """Whether each position is in the set (bool)."""


class PlanContext(Protocol):
    """What the injector offers a model's :meth:`ErrorModel.flip_plan`."""

    n_bits: int  # bits of the tensor's storage
    device: "torch.device"

    def address_map(self) -> "AddressMap":
        """Where the tensor sits in DRAM (the caller's layout or ``AddressMap()``), checked to fit."""

    def weak_groups(self, kind: int, seed: int, weak_fraction: float, group_bits: int) -> WeakBits:
        """The tensor's bits in weak wordline groups: groups of ``group_bits`` adjacent bits of a row
        for which :func:`weak_mask` (``seed``, ``kind``, ``bank << 40 | row << 20 | group``) is true."""

    def weak_bitlines(self, kind: int, seed: int, weak_fraction: float) -> WeakBits:
        """The tensor's bits on weak bitlines: :func:`weak_mask` (``seed``, ``kind``, ``bank << 20 | bit``)."""


@dataclass(frozen=True)
class FlipPlan:
    """How the injector draws a model's flips over a tensor's bits (every bit independently).

    A bit outside ``weak`` is drawn with probability ``p``, a bit in ``weak`` with ``p_weak``.
    With ``by_value = (keep0, keep1)`` a drawn bit is kept with probability ``keep0`` if it holds 0
    and ``keep1`` if it holds 1 (thinning: a bit holding ``v`` flips with ``p * keep_v``).
    On the CPU the compiled kernel draws any plan whose ``weak`` is absent or comes from the
    context (``ctx.weak_groups``, ``ctx.weak_bitlines``); a weak set of a model's own making is
    drawn by the vectorised path (the same stream, slower).

    Raises
    ------
    ModelError
        A probability outside [0, 1].
    """

    p: float
    weak: Optional[WeakBits] = None
    p_weak: float = 0.0
    by_value: Optional[tuple[float, float]] = None

    def __post_init__(self) -> None:
        p, p_weak = self.p, self.p_weak
        if not (type(p) is float and type(p_weak) is float and 0.0 <= p <= 1.0 and 0.0 <= p_weak <= 1.0):
            _check("flip plan p", p, 0.0, 1.0)  # the plain floats of the built-in models skip these
            _check("flip plan p_weak", p_weak, 0.0, 1.0)
        if self.by_value is not None:
            if len(self.by_value) != 2:
                raise ModelError(f"flip plan by_value must be (keep0, keep1), got {show(self.by_value)}")
            for name, value in zip(("keep0", "keep1"), self.by_value):
                _check(f"flip plan by_value {name}", value, 0.0, 1.0)


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ErrorModel:
    """Base of every error model: a bit error rate and a seed for weak locations.

    A subclass is a frozen dataclass with class variables ``name`` (lower case, unique) and
    ``number`` (a unique non-negative integer), registered with :func:`register_model`; it
    overrides :meth:`flip_plan` (to be injected) and :meth:`fit` (to be fitted), and checks its
    parameters in ``__post_init__`` (raising :class:`ModelError`).
    """

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

    def flip_plan(self, ctx: PlanContext) -> FlipPlan:
        """How the injector draws this model's flips on a tensor (``ctx``: its size, device, layout)."""
        raise ModelError(f"error model {self.name or type(self).__name__} defines no flip_plan: it cannot be injected")

    @classmethod
    def fit(cls, obs: Observations, seed: int = 0) -> Optional[Candidate]:
        """The maximum-likelihood model of this kind for one partition's observations, or None
        (the model does not fit these data, or needs what they lack). The base fits nothing."""
        return None


@dataclass(frozen=True)
class Uniform(ErrorModel):
    """Model 0: every bit flips with probability ``ber``, independently, whatever it holds."""

    number: ClassVar[int] = 0
    name: ClassVar[str] = "uniform"

    def flip_plan(self, ctx: PlanContext) -> FlipPlan:
        """Every bit at ``ber`` (the compiled block sampler's path)."""
        return FlipPlan(p=self.ber)

    @classmethod
    def fit(cls, obs: Observations, seed: int = 0) -> Optional[Candidate]:
        """MLE ``ber = K / N``; log-likelihood ``K ln p + (N - K) ln(1 - p)``."""
        p = obs.ber
        return Candidate(cls(ber=p, seed=seed), binom_ll(obs.k, obs.n_bits, p), 1, obs.n_bits)


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

    def flip_plan(self, ctx: PlanContext) -> FlipPlan:
        """Candidates at ``max(p01, p10)``, kept with ``p01 / max`` (bit holds 0) or ``p10 / max`` (1)."""
        p01, p10 = min(self.p01, 1.0), min(self.p10, 1.0)
        p_max = max(p01, p10)
        return FlipPlan(p=p_max, by_value=(p01 / p_max, p10 / p_max) if p_max > 0 else (1.0, 1.0))

    @classmethod
    def fit(cls, obs: Observations, seed: int = 0) -> Optional[Candidate]:
        """MLE per direction over the bits holding 0 and those holding 1."""
        p01 = obs.k01 / obs.n0 if obs.n0 else 0.0
        p10 = obs.k10 / obs.n1 if obs.n1 else 0.0
        ll = binom_ll(obs.k01, obs.n0, p01) + binom_ll(obs.k10, obs.n1, p10)
        share = p01 / (p01 + p10) if p01 + p10 > 0 else 0.5
        return Candidate(cls(ber=(p01 + p10) / 2, seed=seed, zero_share=share), ll, 2, obs.n_bits,
                         {"p01": p01, "p10": p10})


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

    def _plan(self, weak: WeakBits) -> FlipPlan:
        return FlipPlan(p=min(self.p_strong, 1.0), weak=weak, p_weak=min(self.p_weak, 1.0))


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

    def flip_plan(self, ctx: PlanContext) -> FlipPlan:
        """Weak wordline groups at ``p_weak``, the other bits at ``p_strong``."""
        return self._plan(ctx.weak_groups(self.number, self.seed, self.weak_fraction, self.group_bits))

    @classmethod
    def fit(cls, obs: Observations, seed: int = 0) -> Optional[Candidate]:
        """A two-component binomial mixture over groups of ``g`` adjacent bits of a tested row, by EM,
        for each ``g`` of :data:`GROUP_BITS` (the best kept); needs complete error positions."""
        if not obs.positions_complete or obs.k == 0 or obs.row_bits < 1:
            return None
        test, _, _, bit = obs.positions()
        best = None
        for g in GROUP_BITS:
            g_eff = min(g, obs.row_bits)
            per_row = obs.row_bits // g_eff
            ids = test * per_row + bit // g_eff
            _, inverse = np.unique(ids, return_inverse=True) if ids.size else (None, np.zeros(0, np.int64))
            ks, mult = location_histogram(inverse, obs.rows_tested * per_row)
            f, p_w, p_s, ll = mixture_em(ks, np.full(ks.size, g_eff), mult)
            if best is None or ll > best[4]:
                best = (g_eff, f, p_w, p_s, ll)
        if best is None:
            return None
        g_eff, f, p_w, p_s, ll = best
        ratio = min(1e12, p_w / p_s) if p_s > 0 else 1e12
        model = cls(ber=obs.ber, seed=seed, weak_fraction=f, ratio=max(1.0, ratio), group_bits=int(g_eff))
        return Candidate(model, ll, 4, obs.n_bits, {"p_weak": p_w, "p_strong": p_s})


@dataclass(frozen=True)
class Bitline(_Clustered):
    """Model 2: weak bitlines (a bit position in the rows of a bank)."""

    number: ClassVar[int] = 2
    name: ClassVar[str] = "bitline"

    def flip_plan(self, ctx: PlanContext) -> FlipPlan:
        """Weak bitlines at ``p_weak``, the other bits at ``p_strong``."""
        return self._plan(ctx.weak_bitlines(self.number, self.seed, self.weak_fraction))

    @classmethod
    def fit(cls, obs: Observations, seed: int = 0) -> Optional[Candidate]:
        """A two-component binomial mixture over bitlines (a bit position of a bank across the rows
        tested), by EM; needs complete error positions."""
        if not obs.positions_complete or obs.k == 0 or obs.row_bits < 1:
            return None
        _, bank, _, bit = obs.positions()
        ks_all, n_all, mult_all = [], [], []
        for b, trials in sorted(obs.rows_per_bank.items()):
            ks, mult = location_histogram(bit[bank == b], obs.row_bits)
            ks_all.append(ks)
            n_all.append(np.full(ks.size, trials))
            mult_all.append(mult)
        if not ks_all:
            return None
        f, p_w, p_s, ll = mixture_em(np.concatenate(ks_all), np.concatenate(n_all), np.concatenate(mult_all))
        ratio = min(1e12, p_w / p_s) if p_s > 0 else 1e12
        model = cls(ber=obs.ber, seed=seed, weak_fraction=f, ratio=max(1.0, ratio))
        return Candidate(model, ll, 3, obs.n_bits, {"p_weak": p_w, "p_strong": p_s})


# ----------------------------------------------------------------------------- registry
#: The registry: name -> model class, in registration order (the order models are fitted in).
MODELS: dict[str, type[ErrorModel]] = {}
_BY_NUMBER: dict[int, type[ErrorModel]] = {}

M = TypeVar("M", bound=type)


@overload
def register_model(cls: M) -> M: ...
@overload
def register_model(cls: None = None, *, name: Optional[str] = None) -> Callable[[M], M]: ...


def register_model(cls: Optional[M] = None, *, name: Optional[str] = None) -> Union[M, Callable[[M], M]]:
    """Register an error model class: ``@register_model`` or ``@register_model(name="my-model")``.

    The class must be a dataclass deriving from :class:`ErrorModel` with a unique ``number``
    (a non-negative integer class variable) and a unique lower-case ``name`` (``name=`` sets it).
    Registering the same class again is allowed (a module reloaded); another class under a
    taken name or number is not.

    Raises
    ------
    ModelError
        Not an ErrorModel dataclass, a missing or malformed name or number, or one that is taken.
    """

    def add(model_cls: M) -> M:
        if not (isinstance(model_cls, type) and issubclass(model_cls, ErrorModel) and is_dataclass(model_cls)):
            raise ModelError(f"register_model takes an ErrorModel dataclass, got {show(model_cls)}")
        key, number = (model_cls.name if name is None else name), model_cls.number
        if name is not None and name != model_cls.name and model_cls in MODELS.values():
            raise ModelError(f"error model {model_cls.name!r} is registered; it cannot be renamed {name!r}")
        if not isinstance(key, str) or not key or key != key.strip().lower() or key.isdigit():
            raise ModelError(f"model name must be a non-empty lower-case string that is not a number, got {show(key)}")
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise ModelError(f"model {key}: number must be a non-negative integer, got {show(number)}")
        for taken, what in ((MODELS.get(key), f"name {key!r}"), (_BY_NUMBER.get(number), f"number {number}")):
            if taken is not None and taken is not model_cls and taken.__qualname__ != model_cls.__qualname__:
                raise ModelError(f"error model {what} is taken by {taken.__name__}")
        model_cls.name = key
        MODELS[key] = model_cls
        _BY_NUMBER[number] = model_cls
        return model_cls

    return add if cls is None else add(cls)


def unregister_model(name: str) -> None:
    """Remove a registered model (tests and plug-ins that add one for a while); unknown names are ignored."""
    cls = MODELS.pop(name, None)
    if cls is not None and _BY_NUMBER.get(cls.number) is cls:
        del _BY_NUMBER[cls.number]


# ------------------------------------------------------------------ multi-level eNVM cells
# Model 4, mlc: described in errormodels.envm (its public module) and docs/memories.md.
CODES = ("gray", "binary")
"""How a level's index becomes the cell's bit pattern."""

MAX_BITS_PER_CELL = 4

MAX_MLC_BER = 0.25
"""Highest ``ber`` an :class:`MLC` model takes (the fault rate of a cell whose levels overlap heavily)."""


def _check_bits(bits_per_cell: Any) -> int:
    if not (isinstance(bits_per_cell, int) and not isinstance(bits_per_cell, bool)
            and 1 <= bits_per_cell <= MAX_BITS_PER_CELL):
        raise ModelError(f"bits_per_cell must be an integer in 1..{MAX_BITS_PER_CELL}, got {show(bits_per_cell)}")
    return bits_per_cell


def level_patterns(bits_per_cell: int, code: str = "gray") -> tuple[int, ...]:
    """The bit pattern stored for each level ``0 .. 2**bits_per_cell - 1``."""
    _check_bits(bits_per_cell)
    if code not in CODES:
        raise ModelError(f"code must be one of {', '.join(CODES)}, got {show(code)}")
    levels = range(1 << bits_per_cell)
    return tuple(level ^ (level >> 1) if code == "gray" else level for level in levels)


def level_confusion(bits_per_cell: int, sigma: float, level_sigma: Optional[tuple[float, ...]] = None) -> np.ndarray:
    """The ``L x L`` matrix of P(level ``l`` is read as level ``k``), ``L = 2**bits_per_cell``.

    Parameters
    ----------
    bits_per_cell : int
        Bits per cell (1..4).
    sigma : float
        Standard deviation of a level's sensed value, in units of the programming window (>= 0).
    level_sigma : tuple of float, optional
        Relative standard deviation of each level (``L`` values > 0; default all 1).

    Returns
    -------
    numpy.ndarray
        Rows sum to 1. The tails are computed from the nearer side (``ndtr`` of negative
        arguments), so probabilities down to about 1e-300 keep their relative precision.
    """
    from scipy.special import ndtr  # here: importing the registry stays free of scipy

    n_levels = 1 << _check_bits(bits_per_cell)
    _check("sigma", sigma, 0.0, math.inf)
    rel = np.ones(n_levels) if not level_sigma else np.asarray(level_sigma, dtype=float)
    if rel.shape != (n_levels,) or not np.all(rel > 0) or not np.all(np.isfinite(rel)):
        raise ModelError(f"level_sigma must hold {n_levels} finite values > 0, got {show(level_sigma)}")
    means = np.linspace(0.0, 1.0, n_levels)
    edges = np.concatenate([[-np.inf], (means[:-1] + means[1:]) / 2, [np.inf]])
    conf = np.zeros((n_levels, n_levels))
    for lvl in range(n_levels):
        s = sigma * rel[lvl]
        if s == 0.0:
            conf[lvl, lvl] = 1.0
            continue
        z = (edges - means[lvl]) / s  # bin edges in this level's standard units
        for k in range(n_levels):
            if k > lvl:  # the upper tail: both edges above the mean
                conf[lvl, k] = ndtr(-z[k]) - ndtr(-z[k + 1])
            elif k < lvl:
                conf[lvl, k] = ndtr(z[k + 1]) - ndtr(z[k])
        conf[lvl, lvl] = max(0.0, 1.0 - conf[lvl].sum())
    return conf


def bit_error_rate(conf: np.ndarray, patterns: tuple[int, ...]) -> float:
    """The bit error rate of cells with confusion ``conf`` and level patterns, the levels equally likely."""
    n_levels = len(patterns)
    bits = n_levels.bit_length() - 1
    hamming = np.array([[bin(patterns[a] ^ patterns[b]).count("1") for b in range(n_levels)] for a in range(n_levels)])
    return float((conf * hamming).sum() / (n_levels * bits))


@lru_cache(maxsize=4096)
def _sigma_for(bits_per_cell: int, code: str, level_sigma: tuple[float, ...], ber: float) -> float:
    """The ``sigma`` whose cells have bit error rate ``ber`` (bisection on log sigma; relative 1e-10)."""
    if ber == 0.0:
        return 0.0
    patterns = level_patterns(bits_per_cell, code)

    def rate(s: float) -> float:
        return bit_error_rate(level_confusion(bits_per_cell, s, level_sigma or None), patterns)

    lo, hi = 1e-6, 1.0
    while rate(hi) < ber:
        hi *= 2.0
        if hi > 1e6:
            raise ModelError(f"mlc: no cell variation gives ber {ber:g}")
    while rate(lo) > ber:
        lo /= 2.0
        if lo < 1e-300:
            return lo
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if rate(mid) < ber:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-10:
            break
    return math.sqrt(lo * hi)


@dataclass(frozen=True)
class CellPlan:
    """How the injector draws a model's faults cell by cell (instead of a :class:`FlipPlan`'s bits).

    ``bits_per_cell`` consecutive storage bits form a cell; a cell whose bits hold the pattern of
    level ``l`` (``patterns[l]``) is read as level ``k`` with probability ``confusion[l][k]``.
    """

    bits_per_cell: int
    confusion: tuple[tuple[float, ...], ...]
    patterns: tuple[int, ...]

    def __post_init__(self) -> None:
        n_levels = 1 << _check_bits(self.bits_per_cell)
        conf = np.asarray(self.confusion, dtype=float)
        if conf.shape != (n_levels, n_levels) or not np.all(np.isfinite(conf)) or np.any(conf < 0) \
                or not np.allclose(conf.sum(axis=1), 1.0, atol=1e-9):
            raise ModelError(f"cell plan: confusion must be a {n_levels}x{n_levels} matrix of probabilities whose rows "
                             "sum to 1")
        if sorted(self.patterns) != list(range(n_levels)):
            raise ModelError(f"cell plan: patterns must be a permutation of 0..{n_levels - 1}, got {show(self.patterns)}")


@dataclass(frozen=True)
class MLC(ErrorModel):
    """Model 4 ``mlc``: multi-level eNVM cells of ``bits_per_cell`` bits whose levels are confused as a whole.

    ``ber`` is the bit error rate the faults cause with equally likely levels; the cell variation
    ``sigma`` it needs is solved from it (:mod:`errormodels.envm`). ``code`` is ``gray`` or ``binary``;
    ``level_sigma`` the relative variation of each level (empty: all equal).
    """

    bits_per_cell: int = 2
    code: str = "gray"
    level_sigma: tuple[float, ...] = field(default=())
    number: ClassVar[int] = 4
    name: ClassVar[str] = "mlc"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_bits(self.bits_per_cell)
        if self.code not in CODES:
            raise ModelError(f"mlc: code must be one of {', '.join(CODES)}, got {show(self.code)}")
        try:
            rel = tuple(float(v) for v in self.level_sigma)
        except (TypeError, ValueError):
            raise ModelError(f"mlc: level_sigma must be a list of numbers, got {show(self.level_sigma)}") from None
        object.__setattr__(self, "level_sigma", rel)
        if rel:
            level_confusion(self.bits_per_cell, 0.1, rel)  # checks its length and values
        if self.ber > MAX_MLC_BER:
            raise ModelError(f"mlc: ber must be at most {MAX_MLC_BER} (levels overlapping completely), got {self.ber:g}")

    @property
    def sigma(self) -> float:
        """The cell variation (units of the programming window) that gives ``ber``."""
        return _sigma_for(self.bits_per_cell, self.code, self.level_sigma, float(self.ber))

    @classmethod
    def from_sigma(cls, sigma: float, bits_per_cell: int = 2, code: str = "gray",
                   level_sigma: tuple[float, ...] = (), seed: int = 0) -> "MLC":
        """The model of a device with cell variation ``sigma``: its ``ber`` computed from the levels."""
        conf = level_confusion(bits_per_cell, sigma, tuple(level_sigma) or None)
        ber = bit_error_rate(conf, level_patterns(bits_per_cell, code))
        return cls(ber=min(ber, MAX_MLC_BER), seed=seed, bits_per_cell=bits_per_cell, code=code,
                   level_sigma=tuple(level_sigma))

    def confusion(self) -> np.ndarray:
        """P(level ``l`` read as level ``k``) at this model's ``sigma``."""
        return level_confusion(self.bits_per_cell, self.sigma, self.level_sigma or None)

    def cell_fault_rate(self) -> float:
        """The probability that a cell reads another level, the levels equally likely."""
        conf = self.confusion()
        return float(1.0 - np.trace(conf) / len(conf))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["level_sigma"] = list(self.level_sigma)
        return out

    def flip_plan(self, ctx: Any) -> CellPlan:  # type: ignore[override]
        """Faults per cell: the confusion matrix at ``sigma`` and the levels' bit patterns."""
        conf = self.confusion()
        return CellPlan(self.bits_per_cell, tuple(tuple(float(v) for v in row) for row in conf),
                        level_patterns(self.bits_per_cell, self.code))


for _builtin in (Uniform, BitValue, Wordline, Bitline, MLC):  # registration order = fitting order
    register_model(_builtin)


def _known() -> str:
    return "known: " + ", ".join(f"{n} {_BY_NUMBER[n].name}" for n in sorted(_BY_NUMBER))


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
        raise ModelError(f"unknown error model {show(name)}; {_known()}")
    return cls


def get_model(name: str | int, **params: Any) -> ErrorModel:
    """Build a registered model by name (``uniform``, ``wordline``, ``bitline``, ``bit-value``, or a
    name given to :func:`register_model`, ``mlc``) or number (0-3 for the DRAM four, 4 ``mlc``).

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


# ----------------------------------------------------------------------------- weak locations
_mix = mix64_array  # the SplitMix64 finaliser, elementwise on uint64 (softmc_host.splitmix)


def weak_mask(seed: int, kind: int, location: np.ndarray, weak_fraction: float) -> np.ndarray:
    """Which locations are weak: a fixed function of (seed, model kind, location id).

    ``location`` holds integer ids (e.g. ``bank << 40 | row << 20 | group`` for a
    wordline group, ``bank << 20 | bitline`` for a bitline); the result is True for
    a fraction ``weak_fraction`` of ids, the same on every call.
    """
    salt = np.uint64((seed * GAMMA + kind * SALT_KIND) & MASK64)
    u = _mix(location.astype(np.uint64) ^ salt) >> np.uint64(11)
    return u.astype(np.float64) < weak_fraction * float(1 << 53)


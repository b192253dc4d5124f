"""Retraining recipes: named, frozen sets of :func:`boosting.retrain.retrain` settings.

A :class:`Recipe` says *how* a network is retrained; the *errors* (model, numeric format,
mitigation, placement) come from the caller's :class:`~boosting.inference.ErrorSpec`, so
every recipe works with every format :mod:`boosting.quant` offers. The caller chooses the
target BER, usually ``recipe.target_ber(baseline_tolerable_ber)`` (``target_factor`` times
the baseline's tolerable BER, about 3x in the literature), and passes the spec at that BER to
:func:`boosting.training.boost`.

Presets (:data:`RECIPES`, :func:`get_recipe`)
----------------------------------------------
==========  ==========================================================================
name        what it does
==========  ==========================================================================
``eden``    EDEN (MICRO 2019, Sec. 4.3): the BER rises from 1 % of the target to the
            target over the first 3/4 of the epochs (log curriculum), errors from the
            spec's (matched) model in weights and IFMs, the last epoch's weights kept.
``control`` The clean-retraining control: ``eden``'s schedule (epochs, lr, batches) with
            no bit errors (BER 0), in the same format and mitigation. Whatever ``eden``
            gains over it is the effect of the errors, not of further training.
``mixed``   Half the batches clean, half under errors at the target (no curriculum);
            the mitigation ranges recalibrated every epoch; the epoch with the best
            validation score ``(clean + at-target accuracy) / 2`` kept.
``clip``    ``mixed`` plus weight clipping (Stutz et al., MLSys 2021) at 0.5 x each
            layer's max |weight| of the parent.
``randbet`` Stutz et al.'s random bit error training: weight clipping, uniform random
            bit errors in the weights only at the target BER, the clean and the
            perturbed loss summed on every batch, validation selection.
==========  ==========================================================================

Measured (digits LeNet, baselines of :func:`boosting.training.train_clean` with its defaults,
split seeds 0-2; int8, uniform model, mitigation zero, target BER 1e-2, 4 epochs; test accuracy
clean / at BER 1e-2 over 10 held-out error seeds, mean of the three): baseline 98.0 / 90.4,
control 97.5 / 89.9, eden 97.6 / 91.1, mixed 97.5 / 91.3, clip 97.4 / 93.1, randbet 98.2 / 93.8.
RandBET with ``weight_clip`` 0.25 gave 96.5 / 91.8 and without clipping 98.2 / 92.1, so 0.5 is
the preset; 8 epochs instead of 4 changed nothing beyond noise (randbet 98.0 / 93.8).

Weight clipping (``weight_clip``, ``clip_mode``): after every optimizer step each conv/linear
weight is clamped to ``[-w_max, w_max]``. ``clip_mode="relative"`` (default) sets ``w_max``
per layer to ``weight_clip`` times that layer's max |weight| when retraining starts, so one
value suits layers and networks of any scale; ``"absolute"`` uses ``weight_clip`` itself
(Stutz et al. use 0.1 for their normalised CIFAR networks). With a per-tensor scale
(``max|w| / qmax``) a smaller range means a smaller quantization step and a smaller absolute
error for a flipped high-order bit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

from boosting.inference import ErrorSpec
from boosting.retrain import CLIP_MODES, ERRORS_IN, MIXES, SELECTS, SCHEDULES, Curriculum

__all__ = ["RecipeError", "Recipe", "RECIPES", "get_recipe"]


class RecipeError(ValueError):
    """An unknown recipe or bad recipe settings (one-line message)."""


def _number(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        raise RecipeError(f"{name} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Recipe:
    """How a network is retrained under errors (the errors themselves come from the spec).

    Attributes
    ----------
    name : str
        Label stored in the boosted network's meta.
    target_factor : float
        The target BER is this times the baseline's tolerable BER (:meth:`target_ber`), > 0.
    epochs : int
        Retraining epochs, >= 1.
    lr : float
        Adam learning rate, > 0.
    curriculum_start : float or None
        First BER of the curriculum as a fraction of the target, in (0, 1]; None: the
        target from the first epoch.
    warmup_fraction : float
        Share of the epochs over which the BER reaches the target, in [0, 1]
        (``round(warmup_fraction * epochs)`` epochs).
    schedule : {"log", "linear"}
        Curriculum shape.
    clean_fraction : float
        Share of error-free batches, in [0, 1] (with ``mix="batches"``).
    mix : {"batches", "sum"}
        Clean and error batches apart, or both losses summed per batch (Stutz).
    select : {"last", "val"}
        Keep the last epoch, or the epoch with the best validation score.
    select_clean_weight : float
        Score ``w * clean + (1 - w) * at-target`` validation accuracy, ``w`` in [0, 1].
    select_seeds : tuple of int
        Error seeds of the validation score.
    recalibrate : bool
        Recompute the mitigation ranges and IFM scales from the current network every
        epoch instead of keeping the parent's.
    weight_clip : float or None
        Weight clipping bound (see :attr:`clip_mode`); None: no clipping.
    clip_mode : {"relative", "absolute"}
        ``weight_clip`` as a fraction of each layer's max |weight| at the start, or as ``w_max``.
    randbet : bool
        Random bit error training: uniform bit errors at the spec's BER, whatever its model,
        in the weights only, and ``mix="sum"``.
    errors_in : {"weights+ifm", "weights"}
        Where the bit errors go.
    errors_enabled : bool
        False: the clean-retraining control (BER 0, the same format, mitigation and schedule).
    batch_size : int
        Batch size, >= 1.
    """

    name: str
    target_factor: float = 3.0
    epochs: int = 4
    lr: float = 1e-3
    curriculum_start: Optional[float] = 0.01
    warmup_fraction: float = 0.75
    schedule: str = "log"
    clean_fraction: float = 0.0
    mix: str = "batches"
    select: str = "last"
    select_clean_weight: float = 0.5
    select_seeds: tuple[int, ...] = (0, 1, 2)
    recalibrate: bool = False
    weight_clip: Optional[float] = None
    clip_mode: str = "relative"
    randbet: bool = False
    errors_in: str = "weights+ifm"
    errors_enabled: bool = True
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise RecipeError(f"a recipe needs a name, got {self.name!r}")
        _number("target_factor", self.target_factor, 0.0, math.inf, lo_open=True)
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RecipeError(f"{key} must be an integer >= 1, got {value!r}")
        _number("lr", self.lr, 0.0, math.inf, lo_open=True)
        if self.curriculum_start is not None:
            _number("curriculum_start", self.curriculum_start, 0.0, 1.0, lo_open=True)
        _number("warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        _number("clean_fraction", self.clean_fraction, 0.0, 1.0)
        _number("select_clean_weight", self.select_clean_weight, 0.0, 1.0)
        for key, value, allowed in (("schedule", self.schedule, SCHEDULES), ("mix", self.mix, MIXES),
                                    ("select", self.select, SELECTS), ("clip_mode", self.clip_mode, CLIP_MODES),
                                    ("errors_in", self.errors_in, ERRORS_IN)):
            if value not in allowed:
                raise RecipeError(f"{key} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        if self.weight_clip is not None:
            _number("weight_clip", self.weight_clip, 0.0, 1.0 if self.clip_mode == "relative" else math.inf,
                    lo_open=True)
        if self.mix == "sum" and self.clean_fraction > 0:
            raise RecipeError("clean_fraction applies to mix='batches'")
        seeds = tuple(self.select_seeds)
        if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
            raise RecipeError(f"select_seeds must be non-negative integers, at least one, got {self.select_seeds!r}")
        object.__setattr__(self, "select_seeds", seeds)
        for key in ("recalibrate", "randbet", "errors_enabled"):
            if not isinstance(getattr(self, key), bool):
                raise RecipeError(f"{key} must be a bool, got {getattr(self, key)!r}")

    # ------------------------------------------------------------------ derived
    @property
    def kind(self) -> str:
        """``"control"`` for a recipe without errors, else ``"boosted"`` (the network file's ``meta.kind``)."""
        return "boosted" if self.errors_enabled else "control"

    @property
    def effective_mix(self) -> str:
        """``mix``, or ``"sum"`` for RandBET."""
        return "sum" if self.randbet else self.mix

    @property
    def effective_errors_in(self) -> str:
        """``errors_in``, or ``"weights"`` for RandBET."""
        return "weights" if self.randbet else self.errors_in

    def target_ber(self, baseline_tolerable_ber: float) -> float:
        """The retraining target: ``target_factor * baseline_tolerable_ber``, capped at 1.

        Raises
        ------
        RecipeError
            A BER outside [0, 1].
        """
        ber = _number("baseline_tolerable_ber", baseline_tolerable_ber, 0.0, 1.0)
        return min(1.0, self.target_factor * ber)

    def warmup_epochs(self) -> int:
        """Epochs of the curriculum warm-up: ``round(warmup_fraction * epochs)``."""
        return int(min(self.epochs, max(0, round(self.warmup_fraction * self.epochs))))

    def curriculum_for(self, target_ber: float) -> Optional[Curriculum]:
        """The BER curriculum to ``target_ber`` (None without one, or for the control)."""
        if self.curriculum_start is None or not self.errors_enabled:
            return None
        return Curriculum(float(target_ber), float(target_ber) * self.curriculum_start, self.warmup_epochs(),
                          self.schedule)

    def train_spec(self, spec: ErrorSpec) -> ErrorSpec:
        """The spec retraining runs under: ``spec``; at BER 0 for the control; uniform errors for RandBET.

        The format, mitigation, seed, placement and margin are always ``spec``'s.
        """
        if not isinstance(spec, ErrorSpec):
            raise RecipeError(f"spec must be an ErrorSpec, got {type(spec).__name__}")
        if not self.errors_enabled:
            model = spec.model.with_ber(0.0)
            overrides = {k: 0.0 for k in spec.overrides}
        elif self.randbet:
            from errormodels.models import get_model

            model = get_model("uniform", ber=spec.model.ber)
            overrides = dict(spec.overrides)
        else:
            return spec
        return dataclasses.replace(spec, model=model, overrides=overrides)

    def retrain_kwargs(self) -> dict[str, Any]:
        """The :func:`~boosting.retrain.retrain` keyword arguments of the recipe's mechanics (not spec, data, epochs)."""
        return {"lr": self.lr, "batch_size": self.batch_size, "errors_in": self.effective_errors_in,
                "clean_fraction": self.clean_fraction, "mix": self.effective_mix, "weight_clip": self.weight_clip,
                "clip_mode": self.clip_mode, "recalibrate": self.recalibrate, "select": self.select,
                "select_seeds": self.select_seeds, "select_clean_weight": self.select_clean_weight}

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with some fields changed (checked again).

        Raises
        ------
        RecipeError
            An unknown field or a bad value.
        """
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise RecipeError(f"unknown recipe field(s) {', '.join(unknown)}; fields: {', '.join(sorted(fields))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (as stored in ``meta["recipe"]``)."""
        d = dataclasses.asdict(self)
        d["select_seeds"] = list(self.select_seeds)
        d["kind"] = self.kind
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        """The recipe of :meth:`to_dict` (extra keys such as ``kind`` are ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        if "select_seeds" in kw:
            kw["select_seeds"] = tuple(kw["select_seeds"])
        return cls(**kw)


_EDEN = Recipe("eden")
RECIPES: dict[str, Recipe] = {
    "eden": _EDEN,
    "control": dataclasses.replace(_EDEN, name="control", errors_enabled=False),
    "mixed": Recipe("mixed", curriculum_start=None, clean_fraction=0.5, select="val", recalibrate=True),
    "clip": Recipe("clip", curriculum_start=None, clean_fraction=0.5, select="val", recalibrate=True,
                   weight_clip=0.5),
    "randbet": Recipe("randbet", curriculum_start=None, randbet=True, weight_clip=0.5, select="val"),
}
"""The preset recipes by name (see the module docstring)."""


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """A preset recipe by name, optionally with some fields changed.

    Parameters
    ----------
    name : str
        A key of :data:`RECIPES` (case-insensitive).
    **overrides
        Fields to change (:meth:`Recipe.replace`), e.g. ``epochs=8``.

    Raises
    ------
    RecipeError
        An unknown name (listing the known ones), field or value.
    """
    recipe = RECIPES.get(str(name).strip().lower())
    if recipe is None:
        raise RecipeError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return recipe.replace(**overrides) if overrides else recipe

"""The command-line words the boosting commands share (``python -m boosting.train``, ``characterize``).

The toolkit-wide vocabulary (``-o/--out``, ``-q/--quiet``, ``-v/--verbose``, ``--config``,
:func:`~softmc_host.cli.fail`) comes from :mod:`softmc_host.cli`; this module adds what the
boosting commands have in common on top of it:

* argparse types with one-line messages: :func:`ber_arg`, :func:`positive_int`,
  :func:`nonneg_int`, :func:`positive_float`, :func:`fraction_arg`, :func:`val_fraction_arg`,
  :func:`seeds_arg`;
* :func:`parse_seeds` and :func:`parse_model_params` (``"0,1,2"``, ``["k=v", ...]``);
* the error-spec options (:func:`add_error_model_args`: ``--error-model NAME|FILE``,
  ``--partition``, ``--model-param``, ``--fmt``, ``--mitigation``, ``--layer-types``) and their reading,
  :func:`error_model_from`;
* the network-file option, :func:`add_network_file` (``--network-file NET.pt``, with the old
  spellings as hidden aliases) and :func:`network_file_of`;
* :class:`OneLineParser`: argparse whose usage errors are one line ``error: ...``, status 2.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from boosting.inference import DEFAULT_LAYER_TYPES, LAYER_TYPES, check_layer_types
from boosting.quant import QUANT_FORMATS
from boosting.training import TrainError
from errormodels.models import ErrorModel

__all__ = [
    "FORMATS",
    "MITIGATION_CHOICES",
    "OneLineParser",
    "ber_arg",
    "positive_int",
    "nonneg_int",
    "positive_float",
    "fraction_arg",
    "val_fraction_arg",
    "seeds_arg",
    "mitigation_arg",
    "parse_seeds",
    "parse_model_params",
    "error_model_from",
    "add_error_model_args",
    "layer_types_arg",
    "add_network_file",
    "network_file_of",
]

FORMATS: tuple[str, ...] = tuple(QUANT_FORMATS)
"""Numeric formats accepted by the CLIs (``fp32``, ``int16``, ``int8``, ``int4``)."""

MITIGATION_CHOICES = ("zero", "saturate", "none")
"""``--mitigation`` choices (``none`` is no mitigation)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors as one line ``error: ... (see PROG --help)`` and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------- argparse types
def ber_arg(text: str) -> float:
    """argparse type: a bit error rate in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise argparse.ArgumentTypeError(f"a bit error rate must be in (0, 1], got {text!r}")
    return value


def _int_at_least(lo: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < lo:
        raise argparse.ArgumentTypeError(f"must be >= {lo}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(1, text)


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(0, text)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def fraction_arg(text: str) -> float:
    """argparse type: a number in [0, 1] (an accuracy or an accuracy drop)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text!r}")
    return value


def val_fraction_arg(text: str) -> float:
    """argparse type: a share of a dataset held out for validation, in [0, 1)."""
    value = fraction_arg(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def int_list_arg(lo: int, hi: int, what: str) -> Callable[[str], tuple[int, ...]]:
    """argparse type: a comma list of integers in ``lo .. hi`` (``what`` names them in the error)."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            items = tuple(int(t) for t in text.split(",") if t.strip())
        except ValueError:
            items = ()
        if not items or any(not lo <= v <= hi for v in items):
            raise argparse.ArgumentTypeError(f"{what} must be integers in {lo}..{hi}, got {text!r}")
        return items
    return parse


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` as ``(0, 1, 2)``.

    Raises
    ------
    TrainError
        Unless the items are distinct non-negative integers (at least one).
    """
    try:
        seeds = tuple(int(s) for s in str(text).split(",") if s.strip())
    except ValueError:
        raise TrainError(f"seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise TrainError(f"seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def seeds_arg(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated seeds (:func:`parse_seeds`)."""
    try:
        return parse_seeds(text)
    except TrainError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def mitigation_arg(text: str) -> Optional[str]:
    """A ``--mitigation`` value as :class:`~boosting.inference.ErrorSpec` takes it (``"none"`` -> None)."""
    return None if text == "none" else text


def _number(text: str) -> Union[int, float, str]:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_model_params(items: Optional[Sequence[str]]) -> dict[str, Any]:
    """``["k=v", ...]`` as ``{k: v}`` (values as int, else float, else str).

    Raises
    ------
    TrainError
        For an item without ``=`` or with an empty key.
    """
    params: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise TrainError(f"--model-param takes key=value, got {item!r}")
        params[key.strip()] = _number(value.strip())
    return params


# --------------------------------------------------------------------------- error model
def error_model_from(arg: str, params: Optional[Mapping[str, Any]] = None,
                     partition: Optional[str] = None) -> ErrorModel:
    """An error model from a registry name or a fitted-model JSON (``--error-model NAME|FILE``).

    The reading is :func:`errormodels.error_model_from` (the one reader of ``model.json``,
    :func:`errormodels.read_model_file`); this wrapper only gives its file and partition
    problems the boosting commands' exception.

    Parameters
    ----------
    arg : str
        A name or number of :func:`errormodels.models.get_model` (``uniform``, ``wordline``,
        ``bitline``, ``bit-value``, 0-3, a registered model), or the path of a JSON written by
        ``python -m errormodels.fit`` (any existing file, or a name ending in ``.json``).
    params : mapping, optional
        Model parameters: for a name, the constructor arguments; for a fitted model, values
        replacing the fitted ones (e.g. ``{"seed": 3}``).
    partition : str, optional
        Partition label of a fitted model (``all``, ``bank3``, ...). Default: ``all`` if
        present, else the first partition whose selected model is ``selected_model``.
        Not allowed with a name.

    Returns
    -------
    ErrorModel

    Raises
    ------
    TrainError
        Unreadable or foreign JSON, unknown partition, a partition given with a name.
    ModelError
        Unknown model name, bad parameter.
    """
    from errormodels import error_model_from as read_error_model
    from errormodels.models import ModelError
    from errormodels.modelfile import ModelFileError

    try:
        return read_error_model(str(arg), params, partition)
    except ModelFileError as exc:
        raise TrainError(str(exc)) from None
    except ModelError as exc:
        if partition is not None:  # with a file every problem is a ModelFileError: a partition given with a name
            raise TrainError(str(exc)) from None
        raise


def add_error_model_args(p: Any, required: bool) -> None:
    """The ``--error-model``, ``--partition``, ``--model-param``, ``--fmt``, ``--mitigation`` options.

    ``p`` is a parser or an argument group.
    """
    p.add_argument("--error-model", required=required, default=None if required else "uniform",
                   metavar="NAME|FILE",
                   help="registry name (uniform, wordline, bitline, bit-value or 0-3) or a fitted-model JSON of "
                        "python -m errormodels.fit" + ("" if required else " (default uniform)"))
    p.add_argument("--partition", help="partition label of a fitted-model JSON (default: all / the selected_model one)")
    p.add_argument("--model-param", action="append", metavar="K=V", default=[],
                   help="model parameter (repeatable), e.g. weak_fraction=0.01")
    p.add_argument("--fmt", default="int8", choices=FORMATS, help="numeric format in DRAM (default int8)")
    p.add_argument("--mitigation", default="zero", choices=MITIGATION_CHOICES,
                   help="out-of-range mitigation (default zero)")
    p.add_argument("--layer-types", type=layer_types_arg, default=DEFAULT_LAYER_TYPES, metavar="T[,T...]",
                   help=f"layer types whose weights and input feature maps get errors: "
                        f"{', '.join(LAYER_TYPES)} (default {','.join(DEFAULT_LAYER_TYPES)})")


def layer_types_arg(text: str) -> tuple[str, ...]:
    """argparse type of ``--layer-types``: ``"conv,linear,bn"`` -> the checked tuple (one-line error)."""
    try:
        return check_layer_types([t for t in text.split(",") if t.strip()])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --------------------------------------------------------------------------- network file
def add_network_file(p: Any, help: str, *, aliases: Sequence[str] = (), positional: bool = False) -> None:
    """Add ``--network-file NET.pt`` (dest ``network_file``).

    Parameters
    ----------
    p : parser or argument group
        Where to add it.
    help : str
        Its help text.
    aliases : sequence of str
        Old option spellings (e.g. ``"--from"``), accepted but hidden from ``--help``.
    positional : bool
        Also accept the file as an optional positional argument (dest ``network_pos``; the
        old spelling of ``characterize``); :func:`network_file_of` reconciles the two.
    """
    p.add_argument("--network-file", metavar="NET.pt", help=help)
    for alias in aliases:
        p.add_argument(alias, dest="network_file", metavar="NET.pt", help=argparse.SUPPRESS)
    if positional:
        p.add_argument("network_pos", nargs="?", metavar="NET.pt", help="the network file (same as --network-file)")


def network_file_of(args: argparse.Namespace, required: bool = True) -> Optional[str]:
    """The network file of parsed arguments (``--network-file``, an alias, or the positional).

    Raises
    ------
    TrainError
        Neither given while ``required``, or the positional and the option naming different files.
    """
    option = getattr(args, "network_file", None)
    positional = getattr(args, "network_pos", None)
    if option is not None and positional is not None and option != positional:
        raise TrainError(f"two network files given: {positional!r} and --network-file {option!r}")
    path = option if option is not None else positional
    if path is None and required:
        raise TrainError("give the network file: --network-file NET.pt")
    return path

"""What the flow depends on: :class:`FlowOptions`, validated by its :mod:`msgspec` schema.

The options come from the command line (``python -m pipeline``), from a TOML file of the
same long flag names (``--config flow.toml``, flags override it: :mod:`softmc_host.cli`), or
from Python (``FlowOptions(out="out/x", epochs=2)``). Construction does not check anything;
:meth:`FlowOptions.check` (called by :func:`pipeline.flow.run_flow`) validates every field
against the schema (:func:`json_schema`) and turns a violation into a one-line
:class:`FlowError`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Mapping, Optional, Tuple

import msgspec
from msgspec import Meta

from profiler.executors import ExecutorError, check_executor_spec
from softmc_host.timing import NOMINAL_TRCD_NS

__all__ = ["FlowError", "FlowOptions", "json_schema", "validation_message"]


class FlowError(ValueError):
    """Bad options or a stage that cannot run (one-line message).

    ``reported`` is True when the tool that failed has already printed its own one-line error
    (kept for callers of older versions; the stages now raise instead of printing).
    """

    def __init__(self, message: str, reported: bool = False) -> None:
        super().__init__(message)
        self.reported = reported


PositiveInt = Annotated[int, Meta(ge=1)]
Count = Annotated[int, Meta(ge=0)]

#: The tRCD values (ns) the latency-mode sweep steps through by default: nominal down to 5 ns.
DEFAULT_TRCD = ",".join(f"{v:g}" for v in (NOMINAL_TRCD_NS, 12.5, 11.25, 10, 8.75, 7.5, 6.25, 5))


class FlowOptions(msgspec.Struct, forbid_unknown_fields=True):
    """Everything the flow's stages depend on.

    Attributes
    ----------
    out : str
        Output directory.
    bench : str
        Bench file, ``emu://`` or ``replay://`` address, or tester URL.
    mode : {"power", "latency"}
        Reduce VDD, or reduce tRCD.
    granularity : {"coarse", "fine"}
        One DIMM-wide setting, or per-bank partitions with fine-grained tolerances.
    max_drop : float
        Accuracy goal: at most this absolute drop below the clean accuracy, in [0, 1).
    fmt : {"fp32", "int16", "int8", "int4", "uint8", "uint4"}
        Stored number format (``int8`` default).
    mitigation : {"zero", "saturate"} or None
        Out-of-range mitigation (``zero`` default; None: none).
    network, dataset, data_dir, image_size
        What to train and on which data (``image_size`` None: the network's own).
    epochs, patience
        Clean training: at most ``epochs`` (>= 1) epochs, early stopping on a validation split
        after ``patience`` epochs without improvement (0: train all ``epochs``).
    recipe, boost_epochs, boost_factor, control
        Boosting: the retraining recipe (:data:`boosting.recipes.RECIPES`), its epochs (0: no
        boosting) and target (x the baseline's tolerable BER; None: the recipe's
        ``target_factor``); ``control`` also retrains a clean control with the same schedule.
    curve_seeds, holdout_seeds
        Error seeds of the honest accuracy curves (tolerable BER with intervals, >= 1; 20 is the
        minimum for a reliable interval) and the held-out seeds re-scoring the searches (0: none).
    seeds : tuple of int
        Error seeds of characterization and simulation (at least one, each >= 0).
    hil_repeats : int
        Repetitions of the hardware-in-the-loop run (read-noise streams).
    batch_size : int
        Inference batch in images (IFM placements are sized for it).
    vdd, trcd : str
        Sweep values in V and ns (``profiler.sweep`` syntax: ``a,b,c`` or ``start:stop:step``).
    workers : int
        Processes of the local characterization executor (0: in this process).
    executor : str
        Where characterization's probes run: ``local`` (``workers`` processes), ``serial`` (this
        process) or ``dask://HOST:PORT`` (a Dask scheduler; :mod:`profiler.executors`).
    seed : int
        Seed of training and error draws.
    progress : bool
        Show progress bars.
    """

    out: str = "out/eden"
    bench: Annotated[str, Meta(min_length=1)] = "emu://B?seed=1"
    mode: Literal["power", "latency"] = "power"
    granularity: Literal["coarse", "fine"] = "coarse"
    max_drop: Annotated[float, Meta(ge=0.0, lt=1.0)] = 0.02
    fmt: Literal["fp32", "int16", "int8", "int4", "uint8", "uint4"] = "int8"
    mitigation: Optional[Literal["zero", "saturate"]] = "zero"
    network: Annotated[str, Meta(min_length=1)] = "lenet"
    dataset: Annotated[str, Meta(min_length=1)] = "digits"
    data_dir: Optional[str] = None
    image_size: Optional[PositiveInt] = None
    epochs: PositiveInt = 40
    patience: Count = 5
    recipe: Annotated[str, Meta(min_length=1)] = "randbet"
    boost_epochs: Count = 4
    boost_factor: Optional[Annotated[float, Meta(gt=0.0)]] = None
    control: bool = True
    curve_seeds: PositiveInt = 20
    holdout_seeds: Count = 20
    seeds: Annotated[Tuple[Count, ...], Meta(min_length=1)] = (0, 1, 2, 3, 4)
    hil_repeats: PositiveInt = 5
    batch_size: PositiveInt = 60
    vdd: str = "1.35,1.2:1.0:-0.025"
    trcd: str = DEFAULT_TRCD
    workers: Count = 2
    executor: Annotated[str, Meta(min_length=1, description="local, serial or dask://HOST:PORT")] = "local"
    seed: Count = 0
    progress: bool = True

    def check(self) -> None:
        """Validate every field against the schema; raise a one-line :class:`FlowError` naming the field."""
        FlowOptions.from_mapping(msgspec.structs.asdict(self))

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], what: str = "option") -> "FlowOptions":
        """Options from a mapping of field names (missing fields take their defaults), validated."""
        try:
            opts = msgspec.convert(dict(doc), cls)
        except msgspec.ValidationError as exc:
            raise FlowError(validation_message(exc, what)) from None
        try:
            check_executor_spec(opts.executor)
        except ExecutorError as exc:
            raise FlowError(f"{what} executor: {exc}") from None
        return opts

    def to_dict(self) -> dict[str, Any]:
        """The options, JSON-ready (``seeds`` as a list)."""
        doc = msgspec.structs.asdict(self)
        doc["seeds"] = list(self.seeds)
        return doc

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the options (:func:`json_schema`)."""
        return json_schema()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`FlowOptions` (the keys a ``--config`` file may hold, as field names)."""
    return msgspec.json.schema(FlowOptions)


_AT = re.compile(r"^(?P<text>.*?) - at `\$(?P<path>[^`]*)`$")


def validation_message(exc: msgspec.ValidationError, what: str) -> str:
    """One line from a msgspec error: ``"<what> mode: Invalid enum value 'turbo'"``.

    ``what`` names the thing validated (``"option"``, ``"stage record 'out/stages.json'"``);
    the field path of the error follows it.
    """
    text = " ".join(str(exc).split())
    m = _AT.match(text)
    if m is None:
        return f"{what}: {text}"
    path = m.group("path").lstrip(".")
    return f"{what} {path}: {m.group('text')}" if path else f"{what}: {m.group('text')}"

"""EDEN's flow (seed paper, Algorithm 1) as resumable stages, each writing its result to disk.

============  ====================================  =================================================
stage         writes (in the output directory)      does
============  ====================================  =================================================
profile       ``sweep.h5``                          sweeps VDD (power mode) or tRCD (latency mode) on
                                                    the bench over the rows the network will occupy
fit           ``model.json``                        fits EDEN's four error models and the BER curves
                                                    (whole DIMM for coarse mapping, per bank for fine)
train         ``baseline.pt``                       trains the network clean
tolerance0    ``tolerance-baseline.json``           coarse tolerable BER of the baseline
boost         ``boosted.pt``                        retrains under the fitted model (curriculum up to
                                                    ``boost_factor`` x the baseline's tolerable BER)
tolerance     ``tolerance.json``, ``network.pt``    tolerance of the boosted network; the more tolerant
                                                    of baseline and boosted is kept (``network.pt``);
                                                    fine characterization of it for fine mapping
map           ``dram-config.json``                  operating points and tensor placement
validate      ``validate.json``                     inference through the bench's DIMM at nominal and
                                                    at the chosen setting, beside simulation
energy        ``energy.json``                       DRAM energy and latency per inference
report        ``report.md`` and PNGs                one page tracing every number to these files
============  ====================================  =================================================

``stages.json`` records each finished stage with a key made of its options and the keys of
the stages it depends on; a rerun skips a stage whose key is unchanged and whose outputs
exist, so an interrupted run resumes at the stage it was in (the sweep itself resumes
point by point, boosting from its last epoch). Changing an option reruns the stages it
affects and everything after them.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

__all__ = ["FlowError", "FlowOptions", "STAGES", "run_flow", "write_json", "read_json"]

STAGES = ("profile", "fit", "train", "tolerance0", "boost", "tolerance", "map", "validate", "energy", "report")

_DEPENDS: dict[str, tuple[str, ...]] = {
    "profile": (),
    "fit": ("profile",),
    "train": (),
    "tolerance0": ("fit", "train"),
    "boost": ("tolerance0",),
    "tolerance": ("boost",),
    "map": ("tolerance",),
    "validate": ("map",),
    "energy": ("validate",),
    "report": ("energy",),
}


class FlowError(ValueError):
    """Bad options or a stage that cannot run (one-line message).

    ``reported`` is True when the tool that failed has already printed its own one-line error.
    """

    def __init__(self, message: str, reported: bool = False) -> None:
        super().__init__(message)
        self.reported = reported


@dataclass
class FlowOptions:
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
        Accuracy goal: at most this absolute drop below the clean accuracy.
    fmt : str
        Stored number format (``int8`` default).
    mitigation : str or None
        Out-of-range mitigation (``zero`` default).
    network, dataset, data_dir, image_size
        What to train and on which data.
    epochs, boost_epochs, boost_factor
        Clean training epochs; boosting epochs and target (x the baseline tolerable BER).
    seeds : tuple of int
        Error seeds of characterization and simulation.
    hil_repeats : int
        Repetitions of the hardware-in-the-loop run (read-noise streams).
    batch_size : int
        Inference batch (IFM placements are sized for it).
    vdd, trcd : str
        Sweep values (``profiler.sweep`` syntax).
    workers : int
        Processes for characterization (0: in this process).
    seed : int
        Seed of training and error draws.
    """

    out: str = "out/eden"
    bench: str = "emu://B?seed=1"
    mode: str = "power"
    granularity: str = "coarse"
    max_drop: float = 0.02
    fmt: str = "int8"
    mitigation: Optional[str] = "zero"
    network: str = "lenet"
    dataset: str = "digits"
    data_dir: Optional[str] = None
    image_size: Optional[int] = None
    epochs: int = 8
    boost_epochs: int = 4
    boost_factor: float = 4.0
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    hil_repeats: int = 5
    batch_size: int = 60
    vdd: str = "1.35,1.2:1.0:-0.025"
    trcd: str = "13.75,12.5,11.25,10,8.75,7.5,6.25,5"
    workers: int = 2
    seed: int = 0
    progress: bool = True

    def check(self) -> None:
        """Raise :class:`FlowError` for an impossible option."""
        if self.mode not in ("power", "latency"):
            raise FlowError(f"mode must be 'power' or 'latency', got {self.mode!r}")
        if self.granularity not in ("coarse", "fine"):
            raise FlowError(f"granularity must be 'coarse' or 'fine', got {self.granularity!r}")
        if not 0.0 <= self.max_drop < 1.0:
            raise FlowError(f"max_drop must be in [0, 1), got {self.max_drop!r}")
        if self.mitigation not in ("zero", "saturate", None):
            raise FlowError(f"mitigation must be zero, saturate or none, got {self.mitigation!r}")
        for name in ("epochs", "boost_epochs", "hil_repeats", "batch_size"):
            if int(getattr(self, name)) < (0 if name == "boost_epochs" else 1):
                raise FlowError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if int(self.workers) < 0:
            raise FlowError(f"workers must be >= 0 (0: in this process), got {self.workers!r}")
        if not self.seeds:
            raise FlowError("give at least one error seed")
        if self.boost_factor < 1.0:
            raise FlowError(f"boost_factor must be >= 1, got {self.boost_factor!r}")


# ----------------------------------------------------------------------------- files
def write_json(path: Path, doc: Any) -> Path:
    """Write ``doc`` as JSON atomically (complete or absent, :func:`boosting.checkpoint.atomic_write`)."""
    from boosting.checkpoint import atomic_write

    data = json.dumps(doc, indent=1, default=_jsonable).encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def read_json(path: Path, what: str = "file") -> Any:
    """Read a JSON file; one-line :class:`FlowError` if it is missing or corrupt."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise FlowError(f"{what} {str(path)!r} is missing (rerun the stage that writes it)") from None
    except RecursionError:
        raise FlowError(f"{what} {str(path)!r} is unreadable: JSON nests too deeply") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, JSONDecodeError, int digit limit
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FlowError(f"{what} {str(path)!r} is unreadable: {reason}") from None


# ----------------------------------------------------------------------- stage state
@dataclass
class _State:
    out: Path
    stages: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.out / "stages.json"

    def load(self) -> None:
        if self.path.exists():
            doc = read_json(self.path, "stage record")
            if not isinstance(doc, dict) or doc.get("format") != "eden-flow-stages":
                raise FlowError(f"{self.path} is not a stage record of this flow")
            self.stages = dict(doc.get("stages", {}))

    def save(self) -> None:
        write_json(self.path, {"format": "eden-flow-stages", "format_version": 1, "stages": self.stages})


_STAGE_OPTIONS: dict[str, tuple[str, ...]] = {
    "profile": ("bench", "mode", "vdd", "trcd", "network", "fmt", "batch_size", "image_size", "seed"),
    "fit": ("granularity",),
    "train": ("network", "dataset", "data_dir", "image_size", "epochs", "seed"),
    "tolerance0": ("fmt", "mitigation", "max_drop", "seeds"),
    "boost": ("boost_epochs", "boost_factor"),
    "tolerance": ("granularity",),
    "map": ("mode", "granularity", "batch_size"),
    "validate": ("bench", "hil_repeats"),
    "energy": (),
    "report": (),
}


def _key(stage: str, opts: FlowOptions, state: _State) -> str:
    parts = {name: getattr(opts, name) for name in _STAGE_OPTIONS[stage]}
    parts["__upstream"] = [state.stages.get(d, {}).get("token") for d in _DEPENDS[stage]]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the flow
def run_flow(opts: FlowOptions, *, redo: Sequence[str] = (), stop_after: Optional[str] = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the flow; return the stage record.

    Parameters
    ----------
    opts : FlowOptions
        Options.
    redo : sequence of str
        Stages to run even if finished (and so everything after them).
    stop_after : str, optional
        Last stage to run.
    log : callable
        Where progress lines go.
    """
    from pipeline import stages as st

    opts.check()
    bad = [s for s in list(redo) + ([stop_after] if stop_after else []) if s not in STAGES]
    if bad:
        raise FlowError(f"unknown stage {bad[0]!r}; stages: {', '.join(STAGES)}")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out)
    state.load()
    t_start = time.monotonic()
    for stage in STAGES:
        key = _key(stage, opts, state)
        done = state.stages.get(stage, {})
        outputs = [out / p for p in done.get("outputs", [])]
        if stage not in redo and done.get("key") == key and outputs and all(p.exists() for p in outputs):
            log(f"[{stage}] done before, skipped ({', '.join(done['outputs'])})")
        else:
            log(f"[{stage}] running")
            t0 = time.monotonic()
            produced = getattr(st, f"stage_{stage}")(opts, out, log)
            finished = time.strftime("%Y-%m-%dT%H:%M:%S")
            state.stages[stage] = {
                "key": key,
                "token": hashlib.sha256(f"{key}/{finished}/{time.time_ns()}".encode()).hexdigest()[:16],
                "outputs": [str(Path(p).relative_to(out)) for p in produced],
                "seconds": round(time.monotonic() - t0, 2),
                "finished": finished,
            }
            state.save()
            log(f"[{stage}] finished in {time.monotonic() - t0:.1f} s")
        if stage == stop_after:
            break
    log(f"flow finished in {time.monotonic() - t_start:.1f} s; results in {out}")
    return state.stages


def options_dict(opts: FlowOptions) -> dict[str, Any]:
    """The options, JSON-ready."""
    return asdict(opts)

"""errormodels' registry, model file and reference rule (issue #13, item 4).

A model registered in this file (not one of the built-in four) is injected into a tensor, fitted by
``fit_all`` / ``fit_map`` (selected when its fit is best), written to model.json and read back;
the model file's one reader (``errormodels.read_model_file``) validates with msgspec and names the
field; curves and plots choose reference settings by one rule (``profiler.reference``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import pytest
import torch
from test_errormodels import ROW_BITS, direction, synthetic_map

import errormodels
from errormodels.curves import curves_for
from errormodels.fit import fit_all, fit_map, format_report, main, select
from errormodels.inject import inject, inject_
from errormodels.layout import AddressMap
from errormodels.modelfile import ModelFileError, error_model_from, json_schema, read_model_file, validate_model_doc
from errormodels.models import (
    MODELS,
    ErrorModel,
    FlipPlan,
    ModelError,
    PlanContext,
    Uniform,
    get_model,
    model_from_dict,
    register_model,
    unregister_model,
    weak_mask,
)
from errormodels.observations import Candidate, Observations, binom_ll
from profiler.reference import reference_settings, reference_value

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- a user's models
@dataclass(frozen=True)
class OnesOnly(ErrorModel):
    """Only bits holding 1 flip (with ``p10 = 2 ber``): a DIMM that loses charge, never gains it."""

    number: ClassVar[int] = 40
    name: ClassVar[str] = "ones-only"

    def flip_plan(self, ctx: PlanContext) -> FlipPlan:
        return FlipPlan(p=min(2.0 * self.ber, 1.0), by_value=(0.0, 1.0))

    @classmethod
    def fit(cls, obs: Observations, seed: int = 0) -> Optional[Candidate]:
        if obs.k01 or not obs.n1:
            return None  # a 0->1 flip: this model cannot explain the data
        p10 = obs.k10 / obs.n1
        return Candidate(cls(ber=p10 / 2, seed=seed), binom_ll(obs.k10, obs.n1, p10), 1, obs.n_bits)


@dataclass(frozen=True)
class WeakOnes(ErrorModel):
    """Bits holding 1 on weak bitlines flip with ``p_weak``; nothing else flips (no fit)."""

    weak_fraction: float = 0.25
    p_weak: float = 0.5
    number: ClassVar[int] = 41
    name: ClassVar[str] = "weak-ones"

    def flip_plan(self, ctx: PlanContext) -> FlipPlan:
        weak = ctx.weak_bitlines(self.number, self.seed, self.weak_fraction)
        return FlipPlan(p=0.0, weak=weak, p_weak=self.p_weak, by_value=(0.0, 1.0))


@pytest.fixture
def registered():
    """OnesOnly and WeakOnes in the registry for one test (the message listing known models stays as it was)."""
    register_model(OnesOnly)
    register_model(name="weak-ones")(WeakOnes)
    try:
        yield
    finally:
        unregister_model("ones-only")
        unregister_model("weak-ones")


def bits_of(t: torch.Tensor) -> np.ndarray:
    return np.unpackbits(t.contiguous().view(torch.uint8).numpy(), bitorder="little")


def test_a_registered_model_is_injected(registered) -> None:
    x = torch.randint(0, 256, (200_000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    model = get_model("ones-only", ber=0.01)
    y, stats = inject(x, model, seed=1)
    before, after = bits_of(x), bits_of(y)
    flipped = np.flatnonzero(before != after)
    assert stats.bits_flipped == flipped.size and stats.flips_0to1 == 0 and bool(before[flipped].all())
    n1 = int(before.sum())
    assert abs(flipped.size - 0.02 * n1) < 5 * np.sqrt(0.02 * n1)
    y2, stats2 = inject(x, model, seed=1)  # the same seed, the same flips; in place too
    z = x.clone()
    assert torch.equal(y, y2) and inject_(z, model, seed=1) == stats and torch.equal(z, y)
    # A weak set from the injector's context, thinned by value: flips only on weak bitlines, only of ones.
    amap = AddressMap(bank=1)
    y, stats = inject(x, WeakOnes(seed=2), seed=4, layout=amap)
    flipped = np.flatnonzero(bits_of(x) != bits_of(y))
    bank, _, byte = amap.locate(flipped // 8)
    weak = weak_mask(2, WeakOnes.number, (bank << 20) | (byte * 8 + flipped % 8), 0.25)
    assert flipped.size > 1000 and weak.all() and bool(before[flipped].all())
    assert stats.weak_bits_flipped == flipped.size and 0 < stats.weak_bits_total < x.numel() * 8


def test_a_registered_model_is_named_and_rebuilt(registered) -> None:
    model = get_model("Ones-Only", ber=0.01, seed=5)
    assert isinstance(model, OnesOnly) and get_model(40) == get_model("40") == OnesOnly()
    assert model_from_dict(model.to_dict()) == model and model.to_dict()["number"] == 40
    assert MODELS["ones-only"] is OnesOnly and errormodels.get_model is get_model
    with pytest.raises(ModelError, match="known: 0 uniform, 1 wordline, 2 bitline, 3 bit-value, 4 mlc, 40 ones-only"):
        get_model("gauss")
    with pytest.raises(ModelError, match="unknown parameter 'ratio'"):
        get_model("ones-only", ratio=2.0)


def test_registry_refuses_bad_or_taken_models(registered) -> None:
    with pytest.raises(ModelError, match="ErrorModel dataclass"):
        register_model(int)

    @dataclass(frozen=True)
    class Clash(ErrorModel):
        number: ClassVar[int] = 99
        name: ClassVar[str] = "uniform"

    with pytest.raises(ModelError, match="name 'uniform' is taken by Uniform"):
        register_model(Clash)
    with pytest.raises(ModelError, match="number 40 is taken by OnesOnly"):
        register_model(name="other")(type("Other", (OnesOnly,), {"__annotations__": {}}))
    with pytest.raises(ModelError, match="lower-case"):
        register_model(name="Bad Name")(dataclass(frozen=True)(type("Bad", (ErrorModel,), {"number": 98})))
    with pytest.raises(ModelError, match="cannot be renamed"):
        register_model(name="plain")(Uniform)
    assert "other" not in MODELS and "plain" not in MODELS and MODELS["uniform"] is Uniform
    assert Uniform.name == "uniform" and register_model(Uniform) is Uniform  # again: allowed, unchanged


def test_unregistered_models_are_gone() -> None:
    with pytest.raises(ModelError, match="unknown error model 'ones-only'; known: 0 uniform, 1 wordline, 2 bitline, "
                                         "3 bit-value, 4 mlc$"):
        get_model("ones-only")

    @dataclass(frozen=True)
    class NoPlan(ErrorModel):
        number: ClassVar[int] = 97
        name: ClassVar[str] = "no-plan"

    with pytest.raises(ModelError, match="no-plan defines no flip_plan"):
        inject(torch.zeros(8, dtype=torch.uint8), NoPlan(), seed=0)


def ones_only_sampler(p10: float):
    def sample(rng, bank, row, ones, vdd):
        bits = np.flatnonzero(rng.random(ROW_BITS) < np.where(ones, p10 * (1.5 if vdd < 1.1 else 1.0), 0.0))
        return bits, direction(ones, bits)
    return sample


def test_a_registered_model_is_fitted_selected_written_and_read(registered, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # fit_all on observations: listed, and best by BIC (bit-value fits as well with one parameter more).
    obs = Observations(n_bits=2_000_000, n0=1_000_000, n1=1_000_000, k01=0, k10=400)
    chosen = select(obs, "all")
    names = [c.model.name for c in fit_all(obs)]
    assert "ones-only" in names and chosen.best.model == OnesOnly(ber=2e-4)
    assert "ones-only" not in [c.model.name for c in fit_all(Observations(n_bits=10, n0=5, n1=5, k01=1, k10=1))]
    # fit_map on a BER map whose flips are all 1->0.
    path = synthetic_map(tmp_path / "ones.h5", ones_only_sampler(2e-3), vdds=(1.35, 1.0))
    doc = fit_map(str(path))
    part = doc["partitions"]["all"]
    assert doc["selected_model"] == "ones-only" and part["selected"]["model"] == "ones-only"
    assert {c["model"] for c in part["candidates"]} >= {"uniform", "bit-value", "ones-only"}
    assert "ones-only" in format_report(doc)
    # written by the command, read back by the one reader and by error_model_from.
    out = tmp_path / "model.json"
    assert main([str(path), "-o", str(out), "-q"]) == 0
    assert "selected model: ones-only" in capsys.readouterr().out
    back = read_model_file(out)
    assert back["partitions"]["all"]["selected"] == json.loads(json.dumps(part["selected"]))
    model = error_model_from(str(out))
    assert isinstance(model, OnesOnly) and model.ber == pytest.approx(part["selected"]["ber"])
    assert error_model_from(str(out), {"seed": 9}).seed == 9
    unregister_model("ones-only")  # a file naming a model nobody registered
    with pytest.raises(ModelFileError, match="partition 'all': selected: unknown error model 'ones-only'"):
        read_model_file(out)


# ----------------------------------------------------------------------------- the model file
@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fit") / "model.json"
    assert main([str(ROOT / "data/maps/B-seed1.h5"), "--partition", "bank", "-o", str(path), "-q"]) == 0
    return path


def test_read_model_file_returns_the_document(fitted: Path) -> None:
    doc = read_model_file(fitted)
    assert doc == json.loads(fitted.read_text()) and set(doc["partitions"]) == {f"bank{b}" for b in range(8)}
    assert errormodels.read_model_file is read_model_file and issubclass(errormodels.ModelFileError, ModelError)
    assert error_model_from(str(fitted), partition="bank3") == model_from_dict(doc["partitions"]["bank3"]["selected"])
    schema = json_schema()
    props = schema["$defs"]["ModelFile"]["properties"]
    assert {"format", "format_version", "source", "partitions"} <= set(props)
    assert schema["$defs"]["Setting"]["properties"]["vdd_v"]["anyOf"][0]["maximum"] == 10.0


def _mutated(fitted: Path, tmp_path: Path, change) -> Path:
    doc = json.loads(fitted.read_text())
    change(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="other"), "not an eden-error-model file"),
    (lambda d: d.update(format_version=2), "format_version 2 is not supported (1)"),
    (lambda d: d.pop("partitions"), "the document lacks 'partitions'"),
    (lambda d: d.update(partitions={}), "partitions is empty"),
    (lambda d: d.update(criterion="mdl"), "criterion has the invalid value 'mdl'"),
    (lambda d: d["source"].update(setting={"vdd_v": "1.2"}), "source.setting.vdd_v must be a number or null, got a string"),
    (lambda d: d["source"].update(setting={"trcd_ns": -1}), "source.setting.trcd_ns must be a number >= 0.0"),
    (lambda d: d["source"].update(sha256="xyz"), "source.sha256 must be a string matching"),
    (lambda d: d["partitions"]["bank2"]["observations"].update(k01=-3), "partition 'bank2': observations.k01 must be "
                                                                       "an integer >= 0"),
    (lambda d: d["partitions"]["bank2"]["candidates"][1].pop("model"), "partition 'bank2': candidates[1] lacks 'model'"),
    (lambda d: d["partitions"]["bank5"]["curves"]["vdd_v"].update(x="1.0"), "partition 'bank5': curves.vdd_v.x must be a list"),
    (lambda d: d["partitions"]["bank5"]["curves"]["vdd_v"].update(x=[1.0]), "partition 'bank5': curves.vdd_v: curve vdd_v: "
                                                                           "flips has"),
    (lambda d: d["partitions"]["bank1"]["selected"].update(ber=2.0), "partition 'bank1': selected: ber must be in [0, 1]"),
    (lambda d: d["partitions"].update({"bank٣": d["partitions"]["bank1"]}), "unknown partition label 'bank٣'"),
])
def test_malformed_model_files_name_the_file_and_field(fitted: Path, tmp_path: Path, change, message: str) -> None:
    path = _mutated(fitted, tmp_path, change)
    with pytest.raises(ModelFileError) as exc:
        read_model_file(path)
    text = str(exc.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text, text


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"{not json", "not a readable JSON file"),
    (b"\xff\xfe{}", "not a readable JSON file"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
    (b'{"a": ' + b"[" * 70 + b"]" * 70 + b"}", "nested deeper than 64 levels"),
])
def test_unreadable_model_files(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "model.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        read_model_file(path)
    with pytest.raises(ModelFileError, match=message):
        error_model_from(str(path))


def test_error_model_from_names_and_partitions(fitted: Path) -> None:
    assert error_model_from("bitline", {"weak_fraction": 0.1}).weak_fraction == 0.1
    assert error_model_from("3").name == "bit-value"
    with pytest.raises(ModelError, match="applies to a fitted-model file"):
        error_model_from("uniform", partition="all")
    with pytest.raises(ModelFileError, match="unknown partition 'all'; known: bank0, bank1"):
        error_model_from(str(fitted), partition="all")
    long_name = "x" * 5000 + ".json"
    with pytest.raises(ModelFileError) as exc:
        error_model_from(long_name)
    assert len(str(exc.value)) < 300
    with pytest.raises(ModelFileError):
        read_model_file("bad\x00name.json")
    assert validate_model_doc(json.loads(fitted.read_text()), "doc")["format"] == "eden-error-model"


# ----------------------------------------------------------------------------- the reference rule
def test_one_reference_rule() -> None:
    assert reference_value("vdd_v", [1.2, 1.35]) == 1.35  # a tie: the gentlest (highest VDD)
    assert reference_value("temp_c", [50.0, 30.0]) == 30.0  # the gentlest temperature is the lowest
    assert reference_value("vdd_v", [1.2, 1.2, 1.35]) == 1.2  # the most common
    assert reference_value("vdd_v", [1.2, 1.2, 1.3500000001], nominal=1.35) == 1.3500000001  # nominal, as measured
    assert reference_value("trcd_ns", [None, None]) is None and reference_value("trcd_ns", [None, 10.0, None]) == 10.0
    rows = [{"vdd_v": 1.2, "trcd_ns": 13.75}, {"vdd_v": 1.35, "trcd_ns": 10.0}, {"vdd_v": 1.35, "trcd_ns": 13.75},
            {"vdd_v": 1.2, "trcd_ns": 10.0}]
    assert reference_settings(rows) == {"vdd_v": 1.35, "trcd_ns": 13.75, "trp_ns": None, "temp_c": None}
    assert reference_settings(rows, nominal_vdd_v=1.2)["vdd_v"] == 1.2
    # curves hold the other parameter where the rule says: VDD 1.2 and 1.35 tie, so 1.35.
    cells = {(s["vdd_v"], s["trcd_ns"], None, None): (10, 10_000) for s in rows}
    assert curves_for(cells)["trcd_ns"].fixed["vdd_v"] == 1.35
    assert curves_for(cells, nominal_vdd=1.2)["trcd_ns"].fixed["vdd_v"] == 1.2


def test_import_errormodels_is_cheap_and_exports_the_api() -> None:
    code = ("import sys, errormodels; heavy = [m for m in ('torch', 'scipy', 'h5py') if m in sys.modules]; "
            "print(heavy, errormodels.ModelError.__name__, errormodels.read_model_file.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["[]", "ModelError", "read_model_file"], proc.stderr
    for name in errormodels.__all__:
        assert getattr(errormodels, name) is not None
    import errormodels.inject as inj

    assert inj.inject is inject and inj.KERNEL in ("compiled", "torch")

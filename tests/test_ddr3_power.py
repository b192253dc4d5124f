"""Tests of the IDD-based DDR3 power model."""

from __future__ import annotations

import dataclasses

import pytest

from softmc_host.ddr3_power import DDR3L_1600_X8_4GB, Ddr3PowerParams, IntervalPower, interval_power

P = DDR3L_1600_X8_4GB


def test_zero_activity_is_idd2n_background_only() -> None:
    result = interval_power(P, cycles=1000, vdd_v=P.vdd_ref_v)
    duration_s = 1000 * P.tck_ns * 1e-9
    assert result.duration_s == pytest.approx(duration_s)
    assert result.current_a == pytest.approx(P.chips * P.idd2n_ma * 1e-3)
    assert result.energy_j == pytest.approx(P.chips * P.idd2n_ma * 1e-3 * P.vdd_ref_v * duration_s)
    assert result.power_w == pytest.approx(result.energy_j / duration_s)


def test_all_banks_open_background_is_idd3n() -> None:
    result = interval_power(P, cycles=1000, vdd_v=P.vdd_ref_v, active_fraction=1.0)
    assert result.current_a == pytest.approx(P.chips * P.idd3n_ma * 1e-3)


def test_act_pre_pairs_back_to_back_draw_idd0() -> None:
    """N ACT/PRE pairs, one every tRC with the bank open for tRAS, is the IDD0 measurement itself."""
    n = 400
    params = dataclasses.replace(P, tck_ns=1.25, trc_ns=50.0, tras_ns=35.0)  # tRC = 40 cycles
    cycles = n * 40
    f_act = 35.0 / 50.0
    result = interval_power(params, cycles=cycles, vdd_v=params.vdd_ref_v, activates=n)
    assert result.current_a == pytest.approx(params.chips * params.idd0_ma * 1e-3)
    # the energy formula written out
    trc, tras = 50e-9, 35e-9
    per_pair = params.idd0_ma * trc - params.idd3n_ma * tras - params.idd2n_ma * (trc - tras)
    expected = params.chips * params.vdd_ref_v * 1e-3 * (
        n * per_pair + cycles * 1.25e-9 * (f_act * params.idd3n_ma + (1 - f_act) * params.idd2n_ma)
    )
    assert result.energy_j == pytest.approx(expected, rel=1e-12)


def test_each_command_adds_its_charge() -> None:
    kwargs = dict(cycles=10_000, vdd_v=1.35, active_fraction=0.25)
    base = interval_power(P, **kwargs)
    burst_s = 4 * P.tck_ns * 1e-9
    cases = {
        "activates": (P.idd0_ma * P.trc_ns - P.idd3n_ma * P.tras_ns - P.idd2n_ma * (P.trc_ns - P.tras_ns)) * 1e-9,
        "reads": (P.idd4r_ma - P.idd3n_ma) * burst_s,
        "writes": (P.idd4w_ma - P.idd3n_ma) * burst_s,
        "refreshes": (P.idd5b_ma - P.idd3n_ma) * P.trfc_ns * 1e-9,
    }
    for name, charge_mc in cases.items():
        more = interval_power(P, **kwargs, **{name: 7})
        assert more.energy_j - base.energy_j == pytest.approx(7 * P.chips * 1.35 * 1e-3 * charge_mc, rel=1e-9), name


def test_current_scales_with_v_and_energy_with_v_squared() -> None:
    counts = dict(cycles=50_000, activates=300, reads=900, writes=200, refreshes=6)
    ref = interval_power(P, vdd_v=1.35, **counts)
    for vdd_v in (1.0, 1.2, 1.5):
        r = interval_power(P, vdd_v=vdd_v, **counts)
        assert r.current_a == pytest.approx(ref.current_a * vdd_v / 1.35, rel=1e-12)
        assert r.energy_j == pytest.approx(ref.energy_j * (vdd_v / 1.35) ** 2, rel=1e-12)
        assert r.energy_j == pytest.approx(r.current_a * vdd_v * r.duration_s, rel=1e-12)


def test_estimated_active_fraction_is_clipped() -> None:
    # more activations than fit: the bank is open all the time, background is IDD3N
    a = interval_power(P, cycles=100, vdd_v=1.35, activates=50)
    b = interval_power(P, cycles=100, vdd_v=1.35, activates=50, active_fraction=1.0)
    assert a == b


def test_result_is_a_named_tuple() -> None:
    r = interval_power(P, cycles=10, vdd_v=1.35)
    assert isinstance(r, IntervalPower)
    current_a, energy_j, duration_s = r
    assert (current_a, energy_j, duration_s) == (r.current_a, r.energy_j, r.duration_s)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(cycles=0, vdd_v=1.35),
        dict(cycles=10, vdd_v=0.0),
        dict(cycles=10, vdd_v=float("nan")),
        dict(cycles=10, vdd_v=1.35, activates=-1),
        dict(cycles=10, vdd_v=1.35, reads=1.5),
        dict(cycles=10, vdd_v=1.35, active_fraction=1.1),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        interval_power(P, **kwargs)


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="idd0_ma"):
        Ddr3PowerParams(idd0_ma=-1.0)
    with pytest.raises(ValueError, match="tras_ns"):
        Ddr3PowerParams(tras_ns=60.0, trc_ns=50.0)
    with pytest.raises(ValueError, match="chips"):
        Ddr3PowerParams(chips=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        P.chips = 4  # type: ignore[misc]

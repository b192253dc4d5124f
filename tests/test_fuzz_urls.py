"""Fuzz the emulated-bench address parser (``emu://PROFILE?seed=N&temp_c=T&tck_ns=X``, ``replay://``).

Addresses are built from valid parts and mutated (characters flipped, inserted, deleted;
values swapped for huge, Unicode-digit, NaN/inf or junk text; brackets that ``urlsplit``
chokes on). Only ``BenchSpecError``, with a one-line message, may come out of
``parse_emu_url``; an address it accepts gives a spec whose canonical URL parses back to the
same spec.
"""

from __future__ import annotations

import math

import pytest
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from emubench.bench import BenchSpec, BenchSpecError, parse_emu_url
from emubench.profiles import PROFILES

pytestmark = pytest.mark.fuzz

NASTY_VALUES = st.one_of(
    st.sampled_from([
        "0", "1", "18446744073709551615", "18446744073709551616", "9" * 5000, "-1", "+1", "1_0", "\u00b2",
        "\u0663", "\uff11", "1e999", "-1e999", "nan", "inf", "NaN", "1.5", ".5", "5.", "1e-3", "", " 1",
        "%00", "%ZZ", "[", "]", "[::1]", "\x00", "\n", "&", "=", "?", "#",
    ]),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=10),
)
KEYS = st.one_of(st.sampled_from(["seed", "temp_c", "tck_ns", "volts", "", "Seed", "seed\u00b2"]), st.text(max_size=6))
PROFILE_NAMES = st.one_of(st.sampled_from([*PROFILES, "", "b", "EDEN", "[B", "B]", "[::1]", "B:80", "a@B"]),
                          st.text(max_size=6))


@st.composite
def addresses(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["emu://", "emu://", "emu://", "replay://", "EMU://", "emu:", "emu:///", ""]))
    host = draw(st.sampled_from(["/tmp/no-such-map.h5", "", "."])) if scheme == "replay://" else draw(PROFILE_NAMES)
    pairs = draw(st.lists(st.tuples(KEYS, NASTY_VALUES), max_size=4))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    url = scheme + host + (("?" + query) if query or draw(st.booleans()) else "")
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, len(url)))
        if kind == "flip" and url:
            pos = min(pos, len(url) - 1)
            url = url[:pos] + draw(st.characters()) + url[pos + 1:]
        elif kind == "insert":
            url = url[:pos] + draw(st.sampled_from(["[", "]", "%", "?", "&", "=", "#", ":", "@", "\u00b2"])) + url[pos:]
        elif kind == "delete":
            url = url[:pos] + url[pos + 1:]
        else:
            url = url[:pos]
    return url


@fuzz_settings(500)
@given(st.one_of(addresses(), st.text(max_size=40)))
def test_fuzz_emu_url_parser(url: str) -> None:
    try:
        spec = parse_emu_url(url)
    except BenchSpecError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 400, message[:400]
        return
    assert isinstance(spec, BenchSpec)
    assert isinstance(spec.seed, int) and 0 <= spec.seed < 2**64
    for value, lo, hi in ((spec.temp_c, 0.0, 110.0), (spec.tck_ns, 0.25, 100.0)):
        assert value is None or (math.isfinite(value) and lo <= value <= hi)
    if spec.replay is None:
        assert parse_emu_url(spec.url()) == spec  # the canonical address says the same


@fuzz_settings(100)
@given(st.one_of(st.integers(), st.none(), st.binary(max_size=8), st.lists(st.text(max_size=3), max_size=2)))
def test_fuzz_emu_url_parser_wrong_types(url: object) -> None:
    with pytest.raises(BenchSpecError):
        parse_emu_url(url)  # type: ignore[arg-type]

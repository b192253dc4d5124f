"""Opt-in tests on a real stock SoftMC board: ``pytest tests/test_riffa_hardware.py --tester-url riffa://0/0``.

Skipped without ``--tester-url`` (CI has no board).  They write rows 0..7 of banks 1 and 6 at
nominal voltage and timing, so run them on a DIMM whose contents do not matter.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import receives_interrupted_after
from softmc_host.patterns import parse_pattern
from softmc_host.session import CapabilityError, TesterSession

ROWS = [(bank, row) for bank in (1, 6) for row in range(8)]


@pytest.fixture(scope="module")
def url(request: pytest.FixtureRequest) -> str:
    value = request.config.getoption("--tester-url")
    if not value:
        pytest.skip("no --tester-url: opt-in hardware test (e.g. --tester-url riffa://0/0)")
    if not value.lower().startswith("riffa://"):
        pytest.skip(f"--tester-url {value} is not a riffa:// board")
    return value


def test_board_round_trips_rows_at_nominal(url: str) -> None:
    with TesterSession.open(url) as tester:
        assert tester.kind == "stock-softmc"
        for value in (0x00, 0xFF, 0xAA, 0x55):
            tester.write_rows(ROWS, value)
            back = tester.read_rows(ROWS)
            assert int(np.unpackbits(back ^ np.uint8(value)).sum()) == 0, f"bit errors at nominal with 0x{value:02X}"
        # A different byte in every burst: what a stock WR can write, burst by burst.
        pattern = parse_pattern("random-bursts:7")
        data = np.stack([pattern.data(b, r, i, tester.row_bytes) for i, (b, r) in enumerate(ROWS)])
        tester.write_rows(ROWS, data)
        assert int(np.unpackbits(tester.read_rows(ROWS) ^ data).sum()) == 0


def test_board_refuses_arbitrary_data_before_sending(url: str) -> None:
    with TesterSession.open(url) as tester:
        before = tester.link.stats.requests
        with pytest.raises(CapabilityError):
            tester.write_rows(ROWS[:1], np.arange(tester.row_bytes, dtype=np.uint8))
        assert tester.link.stats.requests == before


def test_aborted_read_then_new_session_returns_no_stale_data(url: str) -> None:
    first = TesterSession.open(url)
    first.write_rows(ROWS[:8], 0x3C)
    first.write_rows(ROWS[8:], 0xC3)
    with receives_interrupted_after(first.link, 3), pytest.raises(KeyboardInterrupt):
        first.read_rows(ROWS[:8])
    first.link.close()  # gone without a reset, as a killed host would be
    with TesterSession.open(url) as second:
        assert np.all(second.read_rows(ROWS[8:]) == 0xC3)

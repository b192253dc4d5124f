"""Shared settings for the fuzz suite (``tests/test_fuzz_*.py``).

Every fuzz test is a hypothesis test marked ``@pytest.mark.fuzz`` that takes no pytest
fixtures, feeds one decoder or reader one generated input, and lets only that decoder's
documented exceptions out. In CI each runs a small, fixed number of derandomized examples
(``fuzz_settings(n)``); ``tools/fuzz.py`` drives the same tests with many more inputs
through hypothesis' ``fuzz_one_input``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: When set (``EDEN_FUZZ_EXAMPLES=100000``), every fuzz test runs that many examples instead.
LONG_EXAMPLES = int(os.environ.get("EDEN_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(ci_examples: int = 200) -> settings:
    """Hypothesis settings for one fuzz test: deterministic, no deadline, no example database.

    Parameters
    ----------
    ci_examples : int
        Examples to run in CI. Keep a file's total under about 15 s on two cores.
    """
    return settings(
        max_examples=LONG_EXAMPLES or ci_examples,
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much, HealthCheck.large_base_example],
    )

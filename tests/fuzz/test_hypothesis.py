"""Hypothesis drives the guarded credit-scoring example at the ASGI level with every kind of hostile request.

Each example is one request through the real guard (PII, explanation, fairness, sync audit); the harness checks
every oracle on it (tests/fuzz/harness.py). A kind that the smoke form covers only lightly gets its full share
in the long form (bench/fuzz.py).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import FuzzEnv, fuzz_settings
from tests.fuzz.strategies import BY_KIND


# The example app's own overflow on numbers beyond float32 (it answers 500 bare too) warns from numpy/sklearn.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("kind", sorted(BY_KIND))
@fuzz_settings()
@given(data=st.data())
def test_guard_holds_under_fuzzed_requests(fuzz_env: FuzzEnv, kind: str, data: st.DataObject) -> None:
    fuzz_env.send(data.draw(BY_KIND[kind], label=kind))


def test_no_planted_value_in_any_file_the_guard_wrote(fuzz_env: FuzzEnv) -> None:
    """After the fuzzed traffic above: the audit database, its WAL, the witness, the vault hold no planted value
    in clear (they are sealed)."""
    assert fuzz_env.stats.requests > 0
    assert fuzz_env.files_hits() == {}

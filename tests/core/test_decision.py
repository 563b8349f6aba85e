"""decide() as a table."""

from __future__ import annotations

import pytest

from mlguard.policy.decision import Evidence, Rules, decide


@pytest.mark.parametrize(("evidence", "rules", "action", "status", "gap"), [
    (Evidence("request"), Rules("fail_closed"), "proceed", None, False),
    (Evidence("request", failed_stages=("pii",)), Rules("fail_closed"), "refuse", 503, False),
    (Evidence("request", failed_stages=("pii",)), Rules("fail_open"), "proceed", None, True),
    (Evidence("finish", failed_stages=("audit",)), Rules("fail_closed"), "refuse", 503, False),
    (Evidence("request", halted=True), Rules("fail_open"), "refuse", 503, False),
    (Evidence("response", halted=True), Rules("fail_open"), "proceed", None, False),
    (Evidence("request", fairness_status="violation"), Rules("fail_open", "block"), "refuse", 503, False),
    (Evidence("request", fairness_status="violation"), Rules("fail_open", "alert"), "proceed", None, False),
    (Evidence("request", fairness_status="warn"), Rules("fail_open", "block"), "proceed", None, False),
    # personal data that could not be redacted is never passed on, whatever the failure mode
    (Evidence("request", failed_stages=("pii",), unredacted=True), Rules("fail_open"), "refuse", 503, False),
    (Evidence("response", failed_stages=("pii",), unredacted=True), Rules("fail_open"), "refuse", 503, False),
])
def test_decide_table(evidence: Evidence, rules: Rules, action: str, status: int | None, gap: bool) -> None:
    d = decide(evidence, rules)
    assert (d.action, d.status, d.gap) == (action, status, gap)

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


@pytest.mark.parametrize(("evidence", "rules", "reason"), [
    # a person's stop
    (Evidence("request", halted=True), Rules("fail_open", "block"), "halted"),
    # the fairness monitor's stop (its request-phase evidence is "violation" while that stop holds)
    (Evidence("request", halted=True, fairness_status="violation"), Rules("fail_open", "block"), "fairness_block"),
    # a violation is a block only under action block
    (Evidence("request", halted=True, fairness_status="violation"), Rules("fail_open", "alert"), "halted"),
    # a stop in force is answered before a failed stage: the model is not called either way
    (Evidence("request", halted=True, fairness_status="violation", failed_stages=("pii",), unredacted=True),
     Rules("fail_open", "block"), "fairness_block"),
    (Evidence("request", halted=True, failed_stages=("pii",)), Rules("fail_closed"), "halted"),
])
def test_each_stop_is_named_as_itself(evidence: Evidence, rules: Rules, reason: str) -> None:
    d = decide(evidence, rules)
    assert (d.action, d.status, d.reason) == ("refuse", 503, reason)
    assert ("human oversight" in d.detail) == (reason == "halted")
    assert ("fairness monitor" in d.detail) == (reason == "fairness_block")

"""An unfavourable decision without complete lawful reasons, under a policy that requires them (Reg B 1002.9(b)(2)).

* ``fail_closed`` (ecoa): refused, 503 problem+json ``reasons-incomplete`` naming the cause and the policy, no
  input value, the app's decision not released; the sealed record says refused and why; the refusal is counted
  under reason ``reasons-incomplete``. A decision with complete reasons, and a favourable one, are served.
* ``fail_open`` (a lender's policy extending ecoa): served as before, flagged.
* deferred explanations cannot refuse after the fact: start-up warns, the exchange is served.

The decision is made by the pure ``decide()`` from the evidence the explain stage leaves on the Exchange.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlguard.middleware import GuardMiddleware
from mlguard.policy.decision import PROCEED, Evidence, Rules, decide
from mlguard.runtime import Guard
from mlguard.testing import json_app
from tests.explain.prohibited_model import (
    FEATURES,
    ON_PROHIBITED_ONLY,
    ORDINARY,
    PLANTED_INCOME,
    build_guard,
    client,
    scored_model,
    sealed_record,
)

TOKEN = "incomplete-reasons-token"
APPROVED = {**ORDINARY, "income": 90.0, "debt": 5.0, "Marital Status": 1.0}
OPEN_POLICY = """\
id: lender_open
title: A lender serving flagged notices for its own review
instrument: internal
jurisdiction: US
status: in_force
effective_from: 2026-01-01
review_by: 2027-06-30
version: "1"
extends: [ecoa]
failure_mode: {value: fail_open, cite: "internal: notices reviewed before they are sent"}
"""


@pytest.fixture(scope="module")
def scored() -> tuple[Any, list[dict[str, float]]]:
    """A classifier that scores prohibited bases heavily (as a careless deployment's might), 200 background rows."""
    return scored_model()


class Recorder:
    """What the app answered, per request: to show the decision made is the one withheld."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.answers: list[dict[str, Any]] = []

    def __call__(self, doc: Any) -> dict[str, Any]:
        p = float(self.model.predict_proba(np.array([[doc["features"][n] for n in FEATURES]]))[0, 1])
        answer = {"score": p, "approved": p >= 0.5}
        self.answers.append(answer)
        return answer


def _guard(scored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policies: list[str],
           explain: dict[str, Any] | None = None) -> tuple[Guard, Any, Recorder]:
    model, _ = scored
    (tmp_path / "lender_open.yaml").write_text(OPEN_POLICY)
    _, guard = build_guard(scored, tmp_path, monkeypatch, policies, module="mlguard_incomplete_reasons_model",
                           token=TOKEN, explain={"execution": "inline", **(explain or {})})
    recorder = Recorder(model)
    return guard, GuardMiddleware(json_app(recorder), guard=guard), recorder





# ---------------------------------------------------------------------- decide() as a table


@pytest.mark.parametrize(("evidence", "rules", "reason"), [
    (Evidence("response", reasons_incomplete=True), Rules("fail_closed", reasons_required=True),
     "reasons_incomplete"),
    (Evidence("response", reasons_incomplete=True), Rules("fail_open", reasons_required=True), None),
    (Evidence("response", reasons_incomplete=True), Rules("fail_closed", reasons_required=False), None),
    (Evidence("response"), Rules("fail_closed", reasons_required=True), None),
    (Evidence("request", reasons_incomplete=True), Rules("fail_closed", reasons_required=True), None),
    (Evidence("finish", reasons_incomplete=True), Rules("fail_closed", reasons_required=True), None),
    # a failed stage is named first: it is the cause a fix starts with
    (Evidence("response", failed_stages=("fairness",), reasons_incomplete=True),
     Rules("fail_closed", reasons_required=True), "stage_failed"),
])
def test_decide_refuses_incomplete_reasons_only_where_required_under_fail_closed(
        evidence: Evidence, rules: Rules, reason: str | None) -> None:
    got = decide(evidence, rules)
    if reason is None:
        assert got == PROCEED
    else:
        assert got.refused and got.status == 503 and got.reason == reason


def test_decide_names_the_cause_the_finding_and_the_policy() -> None:
    got = decide(Evidence("response", reasons_incomplete=True, reasons_finding="no_lawful_reason"),
                 Rules("fail_closed", reasons_required=True, reasons_policy="ecoa"))
    assert got.title == "Adverse action reasons incomplete"
    assert "(no_lawful_reason)" in got.detail and "(ecoa)" in got.detail and "fail_closed" in got.detail
    assert not got.gap


# ---------------------------------------------------------------------- through the guard


@pytest.mark.anyio
async def test_fail_closed_refuses_an_adverse_decision_without_complete_reasons(
        scored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("mlguard.audit.stage")
    guard, mw, app = _guard(scored, tmp_path, monkeypatch, ["ecoa"])
    assert guard.table.routes[0].policy.failure_mode == "fail_closed"
    with caplog.at_level(logging.DEBUG):
        async with client(mw) as c:
            refused = await c.post("/predict", json={"applicant": {"id": "s-1", "sex": "F"},
                                                     "features": ON_PROHIBITED_ONLY})
            ordinary = await c.post("/predict", json={"applicant": {"id": "s-2"}, "features": ORDINARY})
            approved = await c.post("/predict", json={"applicant": {"id": "s-3"}, "features": APPROVED})
            metrics = await c.get("/mlguard/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        await guard.aclose()

    # the app made the decision (unfavourable); the client gets a problem, not the decision
    assert app.answers[0]["approved"] is False
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/reasons-incomplete") and problem["status"] == 503
    assert problem["title"] == "Adverse action reasons incomplete"
    assert "no complete lawful principal reasons" in problem["detail"] and "(no_lawful_reason)" in problem["detail"]
    assert "(ecoa)" in problem["detail"] and "fail_closed" in problem["detail"]
    audit_id = refused.headers["mlguard-audit-id"]
    assert problem["instance"] == f"urn:mlguard:audit:{audit_id}"
    assert refused.headers["mlguard-reasons"] == "incomplete"
    assert set(problem) == {"type", "title", "status", "detail", "instance"}  # no score, approval, explanation
    assert str(PLANTED_INCOME) not in refused.text and str(app.answers[0]["score"]) not in refused.text

    # complete reasons, and a favourable decision: served as before
    assert ordinary.status_code == 200 and ordinary.json()["approved"] is False
    assert ordinary.json()["explanation"]["reasons_incomplete"] is False
    assert ordinary.headers["mlguard-reasons"] == "complete"
    assert approved.status_code == 200 and approved.json()["approved"] is True

    # the sealed record: refused, why, and the finding; it keeps the app's decision for the lender's review
    sealed = sealed_record(tmp_path, audit_id)
    assert sealed["status"] == 503
    assert sealed["decision"]["action"] == "refuse" and sealed["decision"]["reason"] == "reasons_incomplete"
    assert sealed["explanation"]["reasons_incomplete"] is True
    assert sealed["explanation"]["reasons_finding"]["code"] == "no_lawful_reason"

    # counted as a refusal under its own reason
    assert metrics.status_code == 200
    assert 'mlguard_refusals_total{reason="reasons-incomplete",route="/predict"} 1.0' in metrics.text

    for rec in caplog.records:
        assert str(PLANTED_INCOME) not in rec.getMessage() and str(PLANTED_INCOME) not in str(rec.__dict__)


@pytest.mark.anyio
async def test_fail_open_serves_it_flagged(scored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlguard.audit.stage")
    guard, mw, _ = _guard(scored, tmp_path, monkeypatch, ["./lender_open.yaml"])
    policy = guard.table.routes[0].policy
    assert policy.failure_mode == "fail_open" and policy.explanations.reasons_on_adverse is True
    async with client(mw) as c:
        flagged = await c.post("/predict", json={"applicant": {"id": "s-1"}, "features": ON_PROHIBITED_ONLY})
    await guard.aclose()
    assert flagged.status_code == 200 and flagged.json()["approved"] is False
    assert flagged.json()["explanation"]["reasons_incomplete"] is True
    assert flagged.headers["mlguard-reasons"] == "incomplete"
    sealed = sealed_record(tmp_path, flagged.headers["mlguard-audit-id"])
    assert sealed["status"] == 200 and sealed["decision"]["action"] == "proceed"


@pytest.mark.anyio
async def test_deferred_under_fail_closed_warns_at_start_up_and_is_served(
        scored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("mlguard.audit.stage")
    with caplog.at_level(logging.WARNING, logger="mlguard.explain.route"):
        guard, mw, _ = _guard(scored, tmp_path, monkeypatch, ["ecoa"], {"execution": "deferred"})
    (line,) = [r.getMessage() for r in caplog.records if "run deferred" in r.getMessage()]
    assert "fail_closed cannot refuse it" in line and "explain.execution: inline" in line
    async with client(mw) as c:
        resp = await c.post("/predict", json={"applicant": {"id": "s-1"}, "features": ON_PROHIBITED_ONLY})
    await guard.aclose()
    # the answer leaves before the explanation exists: nothing to refuse on
    assert resp.status_code == 200 and resp.json()["explanation"]["status"] == "pending"


@pytest.mark.anyio
async def test_no_deferral_warning_where_no_refusal_is_lost(scored: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Inline under fail_closed (the refusal happens), deferred under fail_open (none was due)."""
    pytest.importorskip("mlguard.audit.stage")
    (tmp_path / "open").mkdir()
    with caplog.at_level(logging.WARNING, logger="mlguard.explain.route"):
        inline, _, _ = _guard(scored, tmp_path, monkeypatch, ["ecoa"])
        deferred, _, _ = _guard(scored, tmp_path / "open", monkeypatch, ["./lender_open.yaml"],
                                {"execution": "deferred"})
    await inline.aclose()
    await deferred.aclose()
    assert not [r for r in caplog.records if "run deferred" in r.getMessage()]

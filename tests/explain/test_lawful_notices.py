"""Adverse-action notices from a model that scores prohibited bases (Reg B 1002.6(b), 1002.9(b)(2)).

The model here scores ``Sex``, ``Marital Status`` and ``age`` heavily, as a careless deployment's might. The
guard cannot make such a model lawful; it must not make its notices look lawful either:

* no counterfactual names a prohibited basis or protected attribute (the admin page and ``mlguard explain``),
  and the counterfactual section appears only when the effective policy asks for it (gdpr does, ecoa alone not);
* a refusal that rests on prohibited bases is flagged (``reasons_incomplete``), in the response, its header,
  the sealed audit record, the plain text and a WARNING that carries no input value; no reason is made up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from click.testing import CliRunner

from mlguard.config.explain import ExplainSettings, ModelBinding
from mlguard.explain.render import counterfactuals
from mlguard.explain.route import build_route_explainer
from mlguard.middleware import GuardMiddleware
from mlguard.policy import resolve_policies
from mlguard.runtime import Guard
from mlguard.testing import json_app
from tests.explain.prohibited_model import (
    CATALOG,
    FEATURES,
    ON_PROHIBITED_ONLY,
    ORDINARY,
    PLANTED_INCOME,
    PROHIBITED,
    build_guard,
    client,
    scored_model,
    sealed_record,
)

TOKEN = "lawful-notices-token"
# Refused near the cut-off, Sex its largest factor: the old search said "If Sex had been 1 instead of 0".
SEX_FIRST = {"income": 55.0, "debt": 18.0, "Sex": 0.0, "Marital Status": 1.0, "age": 50.0}


@pytest.fixture(scope="module")
def scored() -> tuple[Any, list[dict[str, float]]]:
    """A classifier scoring prohibited bases, and 200 background rows."""
    return scored_model()


def _route(scored: Any, policies: list[str]) -> Any:
    model, rows = scored
    cfg = ModelBinding(object=model, features="$.features", feature_order=FEATURES, background_rows=rows)
    return build_route_explainer(0, cfg, resolve_policies(policies), ExplainSettings(reason_catalog=CATALOG),
                                 base_dir=None, protected=["sex"])


def _explained(rx: Any, inputs: dict[str, float]) -> dict[str, Any]:
    score = float(rx.binding.score(rx.binding.matrix([inputs]))[0])
    return {**rx.explain_many([inputs], [score < 0.5])[0].private, "outcome": {"score": score,
                                                                              "favorable": score >= 0.5}}


def _named(text: str) -> list[str]:
    """The prohibited bases a plain text offers as a change."""
    return [f for f in PROHIBITED if f"If {f} had been" in text]


# ---------------------------------------------------------------------- counterfactuals and reasons, directly


def test_counterfactuals_never_name_a_prohibited_basis(scored: Any) -> None:
    rx = _route(scored, ["gdpr", "ecoa"])
    assert rx.rules.counterfactuals is True
    record = _explained(rx, SEX_FIRST)
    assert record["outcome"]["favorable"] is False
    # the search itself would offer Sex first: the case the exclusion is for
    assert counterfactuals(rx.binding, SEX_FIRST, record)[0]["feature"] == "Sex"
    changes = counterfactuals(rx.binding, SEX_FIRST, record, prohibited=rx.rules.prohibited)
    assert changes and not {c["feature"] for c in changes} & set(PROHIBITED)
    for (_, rows), k in ((scored, 0), (scored, 1)):  # and over the background, both ways round
        for row in rows[k::2][:40]:
            got = counterfactuals(rx.binding, row, _explained(rx, row), prohibited=rx.rules.prohibited)
            assert not {c["feature"] for c in got} & set(PROHIBITED)


def test_the_effective_policy_decides_on_counterfactuals(scored: Any) -> None:
    assert _route(scored, ["ecoa"]).rules.counterfactuals is False
    assert _route(scored, ["gdpr", "ecoa"]).rules.counterfactuals is True


@pytest.mark.parametrize(("inputs", "code", "reasons"), [
    (ON_PROHIBITED_ONLY, "no_lawful_reason", 0),
    (SEX_FIRST, "prohibited_bases_outweigh", 1),
    (ORDINARY, None, 2),
])
def test_refusals_resting_on_prohibited_bases_are_flagged(scored: Any, inputs: dict[str, float],
                                                          code: str | None, reasons: int) -> None:
    record = _explained(_route(scored, ["ecoa"]), inputs)
    assert record["outcome"]["favorable"] is False
    assert len(record["reasons"]) == reasons  # never a made-up reason to fill the gap
    assert not {r["feature"] for r in record["reasons"]} & set(PROHIBITED)
    assert record["reasons_incomplete"] is (code is not None)
    if code is None:
        assert "reasons_finding" not in record
    else:
        assert record["reasons_finding"]["code"] == code


def test_startup_warning_says_what_follows(scored: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mlguard.explain.route"):
        _route(scored, ["ecoa"])
    (line,) = [r.getMessage() for r in caplog.records if "prohibited bases" in r.getMessage()]
    assert "never given as reasons or counterfactuals" in line and "reasons_incomplete" in line


# ---------------------------------------------------------------------- through the guard, sealed, rendered


def _guard(scored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policies: list[str],
           explain: dict[str, Any] | None = None) -> tuple[Path, Guard, Any]:
    model, _ = scored
    path, guard = build_guard(scored, tmp_path, monkeypatch, policies, module="mlguard_lawful_notices_model",
                              token=TOKEN, explain=explain)

    def score(doc: Any) -> dict[str, Any]:
        p = float(model.predict_proba(np.array([[doc["features"][n] for n in FEATURES]]))[0, 1])
        return {"score": p, "approved": p >= 0.5}

    return path, guard, GuardMiddleware(json_app(score), guard=guard)



def _cli(audit_id: str, tmp_path: Path, config: Path) -> Any:
    import mlguard.cli.explain  # noqa: F401  (registers the command)
    from mlguard.cli._root import cli

    return CliRunner().invoke(cli, ["explain", audit_id, "--store", f"sqlite:///{tmp_path}/audit.db",
                                    "--keyring", str(tmp_path / "k.keyring"), "--config", str(config)])




@pytest.mark.anyio
async def test_ecoa_notice_flags_a_refusal_on_prohibited_bases_and_offers_no_changes(
        scored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("mlguard.audit.stage")
    path, guard, mw = _guard(scored, tmp_path, monkeypatch, ["ecoa"])
    auth = {"authorization": f"Bearer {TOKEN}"}
    with caplog.at_level(logging.DEBUG):
        async with client(mw) as c:
            flagged = await c.post("/predict", json={"applicant": {"id": "s-1", "sex": "F"},
                                                     "features": ON_PROHIBITED_ONLY})
            ordinary = await c.post("/predict", json={"applicant": {"id": "s-2"}, "features": ORDINARY})
            approved = await c.post("/predict", json={"applicant": {"id": "s-3"},
                                                      "features": {**ORDINARY, "income": 90.0, "debt": 5.0,
                                                                   "Marital Status": 1.0}})
            audit_id = flagged.headers["mlguard-audit-id"]
            plain = await c.get(f"/mlguard/explanations/{audit_id}/plain", headers=auth)
            ordinary_plain = await c.get(f"/mlguard/explanations/{ordinary.headers['mlguard-audit-id']}/plain",
                                         headers=auth)
        await guard.aclose()

    # the response: ecoa is fail_closed, so the decision without lawful reasons is withheld (503 problem+json,
    # no decision in it), the gap stated in the header; the decision and its explanation are sealed (below)
    assert flagged.status_code == 503 and flagged.headers["content-type"] == "application/problem+json"
    assert flagged.json()["type"].endswith("reasons-incomplete") and "approved" not in flagged.text
    assert flagged.headers["mlguard-reasons"] == "incomplete"
    assert ordinary.json()["explanation"]["reasons_incomplete"] is False
    assert ordinary.headers["mlguard-reasons"] == "complete"
    assert approved.json()["approved"] is True and "mlguard-reasons" not in approved.headers

    # the sealed audit record carries the decision, the refusal and the finding
    record = sealed_record(tmp_path, audit_id)
    assert record["output"]["approved"] is False and record["status"] == 503
    exp = record["explanation"]
    assert exp["status"] == "ready" and exp["reasons"] == []
    assert exp["reasons_incomplete"] is True and exp["reasons_finding"]["code"] == "no_lawful_reason"
    assert set(exp["reasons_excluded"]) == set(PROHIBITED)

    # the plain text: the gap said plainly, no counterfactual section (ecoa: counterfactuals false)
    assert plain.status_code == 200
    assert "No principal reason can be given for this decision:\n  only prohibited bases" in plain.text
    assert "What would have changed the result" not in plain.text and not _named(plain.text)
    assert "What would have changed the result" not in ordinary_plain.text
    assert "incomplete" not in ordinary_plain.text

    # a WARNING naming the audit id and the finding, with no input value in any log line
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "complete lawful reasons" in
              r.getMessage()]
    assert len(warned) == 1 and warned[0].__dict__.get("audit_id") == audit_id
    assert "no_lawful_reason" in warned[0].getMessage()
    for rec in caplog.records:
        assert str(PLANTED_INCOME) not in rec.getMessage() and str(PLANTED_INCOME) not in str(rec.__dict__)

    res = _cli(audit_id, tmp_path, path)
    assert res.exit_code == 0, res.output
    assert "No principal reason can be given for this decision:\n  only prohibited bases" in res.stdout
    assert "What would have changed the result" not in res.stdout and not _named(res.stdout)
    assert "does not ask for counterfactuals" in res.stderr


@pytest.mark.anyio
async def test_counterfactuals_where_the_policy_asks_never_name_a_prohibited_basis(
        scored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlguard.audit.stage")
    path, guard, mw = _guard(scored, tmp_path, monkeypatch, ["gdpr", "ecoa"])
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with client(mw) as c:
        ids = []
        for i, feats in enumerate((SEX_FIRST, ON_PROHIBITED_ONLY)):
            resp = await c.post("/predict", json={"applicant": {"id": f"s-{i}"}, "features": feats})
            # refusals whose reasons are incomplete: withheld under ecoa's fail_closed, explained to the lender
            assert resp.status_code == 503 and resp.json()["type"].endswith("reasons-incomplete")
            ids.append(resp.headers["mlguard-audit-id"])
        pages = [(await c.get(f"/mlguard/explanations/{a}/plain", headers=auth)).text for a in ids]
    await guard.aclose()
    sex_first, on_prohibited = pages
    assert "What would have changed the result:" in sex_first and "  - If debt had been" in sex_first
    assert not _named(sex_first)
    # Sex weighed more against the applicant than the debt, the one reason given
    assert "1. Amount of debt\n\nThese principal reasons are incomplete:\n  prohibited bases" in sex_first
    # nothing lawful pushed toward refusal, so no change is offered, and the text does not claim none exists
    assert not _named(on_prohibited)
    assert "No single change to one of the main factors would have altered the result" not in on_prohibited
    assert "that may lawfully be considered would have altered the result" in on_prohibited
    for audit_id, page in zip(ids, pages, strict=True):
        res = _cli(audit_id, tmp_path, path)
        assert res.exit_code == 0, res.output
        # the same reasons, finding and changes as the admin page (the "Data used" lines may differ in order)
        assert res.stdout[res.stdout.index("Main factors"):] == page[page.index("Main factors"):]


@pytest.mark.anyio
async def test_deferred_refusal_on_prohibited_bases_is_flagged_too(
        scored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("mlguard.audit.stage")
    _, guard, mw = _guard(scored, tmp_path, monkeypatch, ["ecoa"], {"execution": "deferred"})
    auth = {"authorization": f"Bearer {TOKEN}"}
    with caplog.at_level(logging.WARNING):
        async with client(mw) as c:
            resp = await c.post("/predict", json={"applicant": {"id": "s-1"}, "features": ON_PROHIBITED_ONLY})
            audit_id = resp.headers["mlguard-audit-id"]
            assert resp.json()["explanation"]["status"] == "pending"
            got = None
            with anyio.fail_after(10):
                while got is None or got.status_code == 202:
                    await anyio.sleep(0.05)
                    got = await c.get(f"/mlguard/explanations/{audit_id}", headers=auth)
        await guard.aclose()
    assert got.json()["reasons_incomplete"] is True and got.json()["reasons"] == []
    assert any(r.__dict__.get("audit_id") == audit_id and "complete lawful reasons" in r.getMessage()
               for r in caplog.records)

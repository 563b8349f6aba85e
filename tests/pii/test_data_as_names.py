"""Personal data used as JSON member names, as a whole JSON string, or read into codes by NER.

Why these tests (two new-user walk-throughs):
- ``{"contacts": {"Zephyrine Quackenbush": "zq@quackmail.eu", "DE06370400440598765432": "iban"}}``: only values
  were scanned, so the name and the IBAN reached the app as member names, and finding paths held them; under a
  declared ``$.name: PERSON``, ``{"first": ..., "last": ...}`` lost its schema (every member name replaced).
- A body that was one JSON string was scanned and counted (``MLGuard-Redactions: 4``) but reached the app and
  the audit record in clear: the result was read before the scanned string was written back.
- Claim ids reached the app as ``<ORGANIZATION>`` (spaCy reads "CLM-7781" as an organisation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.config.pii import PIIEngineSettings
from mlguard.jsonpath import compile_path
from mlguard.keys import Keyring
from mlguard.middleware import GuardMiddleware
from mlguard.pii import Redactor
from mlguard.pii.engine import PIIEngine
from mlguard.pii.redactor import schema_name
from tests.pii.conftest import RecordingApp

NAME = "Maria Lopez"  # one the English NER finds on its own (it misses rarer ones alone: a known limit)
IBAN = "DE06370400440598765432"
EMAIL = "zq@quackmail.eu"


@pytest.fixture
def red(keyring: Keyring, engine: PIIEngine) -> Redactor:
    return Redactor({"PERSON": "hmac", "IBAN_CODE": "hmac", "EMAIL_ADDRESS": "hmac"}, PIIEngineSettings(),
                    keyring=keyring, engine=engine)


def test_member_names_that_are_data_are_scanned(red: Redactor) -> None:
    doc = {"claim_id": "CLM-1", "contacts": {NAME: EMAIL, IBAN: "iban", "role": "owner",
                                             f"{NAME} ": {"note": "call back"}}}
    out, findings = red.redact(doc, scan_undeclared=True)
    text = json.dumps(out)
    assert NAME not in text and "Lopez" not in text and IBAN not in text and EMAIL not in text
    assert len(out["contacts"]) == 4 and out["contacts"]["role"] == "owner"  # no member lost, schema names kept
    assert next(iter(out)) == "claim_id" and out["claim_id"] == "CLM-1"
    assert all("Lopez" not in f.path and IBAN not in f.path for f in findings)  # paths show redacted names
    nested = [k for k, v in out["contacts"].items() if isinstance(v, dict)]
    assert len(nested) == 1 and out["contacts"][nested[0]] == {"note": "call back"}
    assert {f.entity for f in findings} >= {"PERSON", "IBAN_CODE", "EMAIL_ADDRESS"}


def test_names_redacted_alike_are_kept_apart(red: Redactor) -> None:
    out, _ = red.redact({"m": {"Maria Lopez": 1, "Maria  Lopez": 2}}, scan_undeclared=True)
    assert sorted(out["m"].values()) == [1, 2]  # two names, one pseudonym: the second gets "#2"
    assert len({k.split("#")[0] for k in out["m"]}) == 1 and "Maria" not in json.dumps(out)


def test_schema_names_are_not_sent_to_detection(red: Redactor) -> None:
    # (not firstName: a member that names a person takes its value whole, without detection)
    plan = red.prepare({"claim_id": "x", "orderType": "y", "ORDER_TYPE": "z", "x-request-id": "w", NAME: "v"},
                       scan_undeclared=True)
    assert sorted(p.text for p in plan.pending) == sorted(["x", "y", "z", "w", "v", NAME])


@pytest.mark.parametrize(("name", "schema"), [("first", True), ("claim_id", True), ("firstName", True),
                                              ("x-request-id", True), ("FIRST_NAME", True), (NAME, False),
                                              (IBAN, False), (EMAIL, False), ("Email", True), ("FirstName", True),
                                              ("CurrencyCode", True), ("Zephyrine Q", False),
                                              ("item1234", False)])
def test_schema_name(name: str, schema: bool) -> None:
    assert schema_name(name) is schema


def test_a_declared_object_keeps_its_schema(keyring: Keyring) -> None:
    red = Redactor({"PERSON": "hmac"}, keyring=keyring, engine=lambda: None)  # type: ignore[arg-type, return-value]
    out, _ = red.redact({"name": {"first": "Zephyrine", "last": "Quackenbush", "Zephyrine Quackenbush": 1}},
                        [(compile_path("$.name"), "PERSON")], scan_undeclared=False)
    assert set(out["name"]) >= {"first", "last"} and len(out["name"]) == 3
    assert "Zephyrine" not in json.dumps(out) and "Quackenbush" not in json.dumps(out)


def test_a_document_that_is_one_string_is_redacted(red: Redactor) -> None:
    out, findings = red.redact(f"{NAME} wrote from {EMAIL}", scan_undeclared=True)
    assert isinstance(out, str) and NAME not in out and EMAIL not in out
    assert {f.path for f in findings} == {"$"}


@pytest.mark.parametrize("code", ["CLM-7781", "CLM-L120", "CLM-9", "2026-000123", "A12"])
def test_codes_are_not_names_or_dates(engine: PIIEngine, code: str) -> None:
    (spans,) = engine.analyze_many([code])
    assert not [s for s in spans if s.entity in ("PERSON", "ORGANIZATION", "DATE_TIME")]


@pytest.mark.parametrize(("text", "label"), [("TKT-00001", None), ("My NI number is on file", "NI"),
                                           ("SIN and IBAN attached", "SIN"), ("IBAN attached to the SIN", "IBAN")])
def test_ticket_ids_and_identifier_labels_are_not_names(engine: PIIEngine, text: str, label: str | None) -> None:
    """A user's 2,000 tickets: "TKT-00001" as a whole value read as a LOCATION, and the labels "NI", "SIN",
    "IBAN" as organisations (4,413 findings of nothing)."""
    (spans,) = engine.analyze_many([text])
    named = [(s.entity, text[s.start:s.end]) for s in spans if s.entity in ("PERSON", "ORGANIZATION", "LOCATION")]
    assert not [n for n in named if label is None or n[1] == label]


def test_names_beside_codes_are_still_found(engine: PIIEngine) -> None:
    text = "Claim CLM-7781 filed by John Smith for Acme Corp on 2026-01-15"
    (spans,) = engine.analyze_many([text])
    found = {(s.entity, text[s.start:s.end]) for s in spans}
    assert ("PERSON", "John Smith") in found and ("ORGANIZATION", "Acme Corp") in found


@pytest.mark.anyio
async def test_a_json_string_body_reaches_the_app_redacted(tmp_path: Path) -> None:
    app = RecordingApp()
    cfg: dict[str, Any] = {
        "policies": ["gdpr"], "retention": {"max": "P1Y"}, "admin": {"enabled": False},
        "audit": {"store": f"sqlite:///{tmp_path / 'audit.db'}", "keyring": str(tmp_path / "k.keyring")},
        "pii_engine": {"vault_path": str(tmp_path / "vault.db")},
        "routes": [{"path": "/predict", "subject": "$"}]}
    guarded = GuardMiddleware(app, config=cfg)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://t") as client:
        r = await client.post("/predict", json=f"{NAME} at {EMAIL}")
    await guarded.guard.aclose()
    assert r.status_code == 200
    assert isinstance(app.bodies[0], str) and NAME not in app.bodies[0] and EMAIL not in app.bodies[0]
    for f in tmp_path.iterdir():
        if f.is_file():
            assert NAME.encode() not in f.read_bytes() and EMAIL.encode() not in f.read_bytes()


def test_pascal_case_keys_are_a_schema(red: Redactor) -> None:
    """A .NET client's {"Email": ..., "Currency": ...}: scanned as data, "Email" became a PERSON pseudonym and
    "Currency" an <ORGANIZATION>, breaking the app's schema (a red-team probe)."""
    doc = {"Email": "ops@quackmail.eu", "Currency": "EUR", "FirstName": "Maria"}
    out, _ = red.redact(doc, scan_undeclared=True)
    assert list(out) == ["Email", "Currency", "FirstName"] and out["Currency"] == "EUR"
    assert out["Email"] != doc["Email"]  # the value is still redacted

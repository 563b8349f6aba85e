"""Regressions for what fuzzing found, each pinned by a fixed request (not left to a generator's luck)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlguard.jsonpath import compile_path
from mlguard.pii.redactor import Redactor
from tests.fuzz.harness import DECLARED, FEATURES, PROTECTED, FuzzEnv, FuzzRequest

JSON_HEADERS = [(b"host", b"testserver"), (b"content-type", b"application/json")]


def _doc(**applicant: Any) -> dict[str, Any]:
    return {"applicant": {"id": "APP-REG-1", **applicant}, "features": dict.fromkeys(FEATURES, 1.0)}


def test_member_names_inside_a_declared_field_are_redacted() -> None:
    """Found by fuzzing: ``"ssn": {"<the SSN>": 1}`` passed the SSN to the app as an object key."""
    redactor = Redactor({"US_SSN": "replace"}, engine=lambda: None)  # type: ignore[arg-type, return-value]
    rules = [(compile_path("$.applicant.ssn"), "US_SSN")]
    doc = {"applicant": {"ssn": {DECLARED["ssn"]: 1, "x": {DECLARED["ssn"] + "!": [DECLARED["ssn"]]}}},
           "other": {DECLARED["ssn"]: "kept: not a declared field"}}
    out, findings = redactor.redact(doc, rules, scan_undeclared=False)
    text = json.dumps(out["applicant"])
    assert DECLARED["ssn"] not in text
    assert set(out["applicant"]["ssn"]) == {"<US_SSN>", "x"}  # a schema's name ("x") is not the value: kept
    assert set(out["applicant"]["ssn"]["x"]) == {"<US_SSN>"}
    assert all(DECLARED["ssn"] not in f.path for f in findings)  # finding paths show redacted names only
    assert {f.recognizer for f in findings} == {"declared", "declared-name"}
    assert out["other"] == doc["other"]  # undeclared member names are the scanner's business, untouched here
    assert DECLARED["ssn"] in doc["applicant"]["ssn"]  # the input is never mutated


@pytest.mark.parametrize(
    ("name", "body", "status"),
    [
        # The planted value first, then null: nothing left to redact, so the raw bytes used to reach the app.
        ("duplicate-key", b'{"applicant": {"id": "A-1", "ssn": ' + json.dumps(DECLARED["ssn"]).encode()
         + b', "ssn": null, "sex": ' + json.dumps(PROTECTED["sex"]).encode() + b', "sex": null}, "features": '
         + json.dumps(dict.fromkeys(FEATURES, 1.0)).encode() + b"}", 400),
        # A declared field holding an object whose member name is the planted value.
        ("object-key", json.dumps(_doc(address={DECLARED["address"]: 1})).encode(), 422),
        # A number beyond a double next to a declared field: the rewritten body used to fail to serialise.
        ("huge-number", json.dumps(_doc(name=DECLARED["name"])).replace('"education_num": 1.0',
                                                                        '"education_num": 1e400').encode(), 422),
    ],
)
def test_fuzz_findings_through_the_whole_guard(fuzz_env: FuzzEnv, name: str, body: bytes, status: int) -> None:
    out = fuzz_env.send(FuzzRequest(kind=f"regression-{name}", headers=JSON_HEADERS, chunks=[body]))
    assert out.status == status
    assert out.error is None


def test_a_boolean_in_a_declared_field_keeps_its_type() -> None:
    """Found by fuzzing (schemathesis, negative mode): ``"name": false`` became a string token, so a request
    the app refuses (422) was turned into one it accepts; true/false carry no identifier."""
    redactor = Redactor({"PERSON": "replace"}, engine=lambda: None)  # type: ignore[arg-type, return-value]
    rules = [(compile_path("$.applicant.name"), "PERSON")]
    out, findings = redactor.redact({"applicant": {"name": False}}, rules, scan_undeclared=False)
    assert out == {"applicant": {"name": False}}
    assert findings == []
    out, findings = redactor.redact({"applicant": {"name": 12345}}, rules, scan_undeclared=False)
    assert out["applicant"]["name"] != 12345 and len(findings) == 1  # a number still is the entity


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_the_example_app_refuses_features_beyond_float32(fuzz_env: FuzzEnv) -> None:
    body = json.dumps({"applicant": {"id": "APP-REG-2"},
                       "features": {**dict.fromkeys(FEATURES, 1.0), "capital_gain": 3.5e38}}).encode()
    out = fuzz_env.send_bare(FuzzRequest(kind="bare", headers=JSON_HEADERS, chunks=[body]))
    assert out.status == 422

"""The JSON walk: field rules by JSONPath, scanning, numbers, drops, bad strings, cache, batching.

A fake engine keeps these tests exact and fast; the real one is exercised in test_pii_engine.py.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from mlguard.config.pii import PIIEngineSettings
from mlguard.jsonpath import compile_path
from mlguard.pii.engine import Span
from mlguard.pii.redactor import REDACTED, UNSCANNED, Redactor

NAME = re.compile(r"Jane Doe|John Roe")


class FakeEngine:
    """Finds the two planted names; counts calls so batching and caching can be asserted."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def analyze_many(self, texts: list[str], entities: Any = None) -> list[list[Span]]:
        self.calls.append(list(texts))
        return [[Span("PERSON", m.start(), m.end(), 0.85, "fake") for m in NAME.finditer(t)] for t in texts]


def R(spec: dict[str, Any]) -> list[Any]:
    return [(compile_path(k), v) for k, v in spec.items()]


def no_engine() -> Any:
    raise AssertionError("declared fields must not need the engine")


DOC = {
    "applicant": {"id": "A-1", "name": "Jane Doe", "ssn": "123-45-6789", "age": 93, "vip": True, "phone": None},
    "features": {"income": 52000.5, "tags": ["Jane Doe", "ok"]},
    "note": "Spoke with John Roe today.",
}


def test_declared_fields_need_no_engine() -> None:
    red = Redactor({}, engine=no_engine)
    out, findings = red.redact(DOC, R({"$.applicant.name": "PERSON", "$.applicant.ssn": "US_SSN"}),
                               scan_undeclared=False)
    assert out["applicant"]["name"] == "<PERSON>"
    assert out["applicant"]["ssn"] == "<US_SSN>"
    assert out["note"] == DOC["note"]  # not scanned
    assert {(f.entity, f.path, f.start, f.end, f.recognizer) for f in findings} == {
        ("PERSON", "$.applicant.name", 0, 8, "declared"), ("US_SSN", "$.applicant.ssn", 0, 11, "declared")}


def test_original_is_never_mutated() -> None:
    before = copy.deepcopy(DOC)
    Redactor({}, engine=FakeEngine()).redact(DOC, R({"$.applicant.name": "PERSON"}))
    assert before == DOC


def test_scan_keep_and_undeclared() -> None:
    eng = FakeEngine()
    red = Redactor({}, engine=eng)
    out, findings = red.redact(DOC, R({"$.note": "scan", "$.features.tags": "keep", "$.applicant.id": "keep"}))
    assert out["note"] == "Spoke with <PERSON> today."
    assert out["features"]["tags"] == ["Jane Doe", "ok"]  # container rule: keep applies to its items
    assert out["applicant"]["name"] == "<PERSON>"  # undeclared string, scanned by default
    assert out["applicant"]["id"] == "A-1"
    assert out["applicant"]["age"] == 93 and out["applicant"]["vip"] is True and out["applicant"]["phone"] is None
    assert out["features"]["income"] == 52000.5
    note = next(f for f in findings if f.path == "$.note")
    assert (note.start, note.end, note.entity) == (11, 19, "PERSON")  # offsets in the original string
    assert len(eng.calls) == 1  # one engine pass for all scanned strings


def test_wildcards_and_arrays() -> None:
    doc = {"people": [{"n": "Jane Doe", "x": 1}, {"n": "John Roe", "x": 2}], "list": ["a", "Jane Doe"]}
    red = Redactor({}, engine=no_engine)
    out, findings = red.redact(doc, R({"$.people[*].n": "PERSON", "$.list[1]": "PERSON"}), scan_undeclared=False)
    assert out == {"people": [{"n": "<PERSON>", "x": 1}, {"n": "<PERSON>", "x": 2}], "list": ["a", "<PERSON>"]}
    assert [f.path for f in findings] == ["$.list[1]", "$.people[0].n", "$.people[1].n"]


def test_declared_number_is_redacted_and_generalize_numbers() -> None:
    red = Redactor({"AGE": {"operator": "generalize", "params": {"age_cap": 90}}}, engine=no_engine)
    out, findings = red.redact({"ssn": 123456789, "age": 93, "young": 30},
                               R({"$.ssn": "US_SSN", "$.age": "AGE", "$.young": "AGE"}), scan_undeclared=False)
    assert out == {"ssn": "<US_SSN>", "age": 90, "young": 30}
    assert findings[0].start is None  # numbers have no offsets


def test_drop_removes_member() -> None:
    red = Redactor({"NRP": {"operator": "drop"}}, engine=no_engine)
    out, _ = red.redact({"a": "French", "b": ["French", "x"]}, R({"$.a": "NRP", "$.b[0]": "NRP"}), False)
    assert out == {"b": [None, "x"]}


def test_operator_per_entity_from_policy_rules() -> None:
    red = Redactor({"PERSON": {"operator": "mask", "params": {"keep_first": 1}}}, engine=FakeEngine())
    out, findings = red.redact({"t": "Hi Jane Doe"})
    assert out == {"t": "Hi J*** ***"}
    assert findings[0].operator == "mask"


def test_default_operator_keep_limits_detection() -> None:
    red = Redactor({"PERSON": {"operator": "replace"}}, default_operator="keep", engine=FakeEngine())
    assert red.detect_entities == frozenset({"PERSON"})
    assert Redactor({}, engine=FakeEngine()).detect_entities is None


@pytest.mark.parametrize(("text", "reason"), [
    ("Jane Doe " * 5, "limit:max_field_chars"),
    ("Jane\x00Doe", "invalid:nul"),
    ("Jane \ud800 Doe", "invalid:surrogate"),
])
def test_unscannable_strings_are_redacted_whole(text: str, reason: str) -> None:
    eng = FakeEngine()
    red = Redactor({}, PIIEngineSettings(max_field_chars=30), engine=eng)
    out, findings = red.redact({"t": text})
    assert out == {"t": REDACTED}
    assert (findings[0].entity, findings[0].recognizer) == (UNSCANNED, reason)
    assert eng.calls == []


def test_cache_avoids_repeated_detection_and_holds_no_text() -> None:
    eng = FakeEngine()
    red = Redactor({}, PIIEngineSettings(cache_size=2), engine=eng)
    for _ in range(3):
        out, _ = red.redact({"t": "Hello Jane Doe"})
        assert out == {"t": "Hello <PERSON>"}
    assert len(eng.calls) == 1
    assert "Jane" not in repr(red.cache._data)
    for t in ("a Jane Doe", "b Jane Doe", "c Jane Doe"):
        red.redact({"t": t})
    assert len(red.cache._data) == 2  # bounded


def test_redact_many_is_one_pass_and_keeps_order() -> None:
    eng = FakeEngine()
    red = Redactor({}, PIIEngineSettings(cache_size=0), engine=eng)
    docs = [{"t": "Jane Doe"}, {"t": "nothing"}, {"t": "John Roe", "u": "Jane Doe"}]
    res = red.redact_many(docs)
    assert [d for d, _ in res] == [{"t": "<PERSON>"}, {"t": "nothing"}, {"t": "<PERSON>", "u": "<PERSON>"}]
    assert len(eng.calls) == 1


def test_findings_hold_no_values() -> None:
    red = Redactor({}, engine=FakeEngine())
    _, findings = red.redact(DOC, R({"$.applicant.ssn": "US_SSN"}))
    dumped = json.dumps([f.as_dict() for f in findings])
    for planted in ("Jane Doe", "John Roe", "123-45-6789"):
        assert planted not in dumped


def test_rule_matcher_answers_as_the_declared_order_does() -> None:
    """The per-route matcher (a dict lookup when no rule has a wildcard) gives the same rule as the linear scan
    in declared order, for every location of a document, with and without wildcards."""
    from mlguard.jsonpath import compile_path
    from mlguard.pii.redactor import _match_rules, _matcher

    exact = [(compile_path("$.a.name"), "PERSON"), (compile_path("$.a.name"), "US_SSN"),
             (compile_path("$.items[1]"), "EMAIL_ADDRESS"), (compile_path("$['x y']"), "keep")]
    mixed = [*exact[:1], (compile_path("$.items[*]"), "PHONE_NUMBER"), (compile_path("$.a.*"), "scan"), *exact]
    locations = [(), ("a",), ("a", "name"), ("a", "other"), ("items",), ("items", 0), ("items", 1),
                 ("items", "1"), ("x y",), ("a", "name", "deeper")]
    for rules in (exact, mixed):
        match = _matcher(rules)
        assert _matcher(rules) is match  # built once per rules object
        assert [match(loc) for loc in locations] == [_match_rules(rules, loc) for loc in locations]
    assert _matcher(exact)(("a", "name")) == "PERSON"  # first declared wins
    assert _matcher(mixed)(("items", 1)) == "PHONE_NUMBER"  # the wildcard was declared before the exact path

"""Identifiers written so that the patterns could not read them, and identifiers sent as JSON numbers.

Why (a red-team probe of the redactor): full-width or Arabic-Indic digits, a zero-width space or soft hyphen
inside a PAN, SSN or IBAN, a full-width at sign in an e-mail, and ``{"card": 4111111111111111}`` (a number, where
only strings were scanned) all passed through whole.
"""

from __future__ import annotations

import json

import pytest

from mlguard.config.pii import PIIEngineSettings
from mlguard.keys import Keyring
from mlguard.pii import Redactor
from mlguard.pii.engine import PIIEngine, fold, get_engine

ZW, SHY = "\u200b", "\u00ad"
FULL_PAN = "".join(chr(0xFF10 + int(d)) for d in "4111111111111111")
ARABIC_PAN = "".join(chr(0x0660 + int(d)) for d in "4111111111111111")
FULL_NINO = "".join(chr(ord(c) + 0xFEE0) for c in "AB123456C")  # full-width forms of the ASCII letters, digits


@pytest.fixture(scope="module")
def uk_engine() -> PIIEngine:
    return get_engine(PIIEngineSettings(countries=["us", "uk"]))


@pytest.mark.parametrize(("text", "value", "entity"), [
    (f"pay with {FULL_PAN} please", FULL_PAN, "CREDIT_CARD"),
    (f"pay with {ARABIC_PAN} please", ARABIC_PAN, "CREDIT_CARD"),
    (f"card 4111{ZW}1111{ZW}1111{ZW}1111 ok", f"4111{ZW}1111{ZW}1111{ZW}1111", "CREDIT_CARD"),
    (f"card 4111{SHY}1111{SHY}1111{SHY}1111 ok", f"4111{SHY}1111{SHY}1111{SHY}1111", "CREDIT_CARD"),
    (f"ssn 912{ZW}-45-6789", f"912{ZW}-45-6789", "US_SSN"),
    ("mail mateo.hernandez\uff20inbox.example now", "mateo.hernandez\uff20inbox.example", "EMAIL_ADDRESS"),
    (f"IBAN DE89{ZW}370400440532013000", f"DE89{ZW}370400440532013000", "IBAN_CODE"),
    (f"ni {FULL_NINO}", FULL_NINO, "UK_NINO"),
])
def test_folded_identifiers_are_found_at_their_original_offsets(uk_engine: PIIEngine, text: str, value: str,
                                                                 entity: str) -> None:
    (spans,) = uk_engine.analyze_many([text])
    assert (entity, value) in [(s.entity, text[s.start:s.end]) for s in spans]


def test_fold_maps_every_character_back() -> None:
    text = f"a{ZW}\uff14\u00a0\u0664b"
    folded, back = fold(text)
    assert folded == "a4 4b" and back == [0, 2, 3, 4, 5]
    assert fold("plain ascii") == ("plain ascii", None)


def test_an_identifier_sent_as_a_number_is_scanned(keyring: Keyring, engine: PIIEngine) -> None:
    red = Redactor({"CREDIT_CARD": "replace"}, keyring=keyring, engine=engine)
    doc = {"card": 4111111111111111, "ref": 5555555555554444, "amount": 125000, "year": 2026, "score": 0.7,
           "count": 123456789}
    out, findings = red.redact(doc, scan_undeclared=True)
    assert out["card"] == "<CREDIT_CARD>" and out["ref"] == "<CREDIT_CARD>"
    assert {k: out[k] for k in ("amount", "year", "score", "count")} == {"amount": 125000, "year": 2026,
                                                                         "score": 0.7, "count": 123456789}
    assert {f.path for f in findings} == {"$.card", "$.ref"} and "4111" not in json.dumps(out)


@pytest.mark.parametrize(("text", "value", "entity"), [
    ("card 4111/1111/1111/1111 ok", "4111/1111/1111/1111", "CREDIT_CARD"),
    ("card 4111\u20131111\u20131111\u20131111 ok", "4111\u20131111\u20131111\u20131111", "CREDIT_CARD"),
    ("card 4111,1111,1111,1111 ok", "4111,1111,1111,1111", "CREDIT_CARD"),
    ("ssn 912/45/6789", "912/45/6789", "US_SSN"),
    ("ssn 912_45_6789", "912_45_6789", "US_SSN"),
    ("call 415/555/0134", "415/555/0134", "PHONE_NUMBER"),
    ("call 415_555_0134", "415_555_0134", "PHONE_NUMBER"),
])
def test_other_separators(engine: PIIEngine, text: str, value: str, entity: str) -> None:
    (spans,) = engine.analyze_many([text])
    assert (entity, value) in [(s.entity, text[s.start:s.end]) for s in spans]


@pytest.mark.parametrize("text", ["card 4111/1111/1111/1112 ok", "the date 2026/11/27 and 1,234,567,890 items",
                                  "ratio 912/45/6789 of the batch"])
def test_other_separators_without_an_identifier(engine: PIIEngine, text: str) -> None:
    (spans,) = engine.analyze_many([text])
    assert not {s.entity for s in spans} & {"CREDIT_CARD", "US_SSN"}


@pytest.mark.parametrize("value", ["mateo.hernandez [at] inbox [dot] example", "mateo.hernandez(at)gmail(dot)com",
                                   "mateo dot hernandez at gmail dot com", "mateo.hernandez%40inbox.example",
                                   "mateo.hernandez&#64;inbox.example", "mateo.hernandez at gmail.com"])
def test_obfuscated_emails(engine: PIIEngine, value: str) -> None:
    text = f"write to {value} today"
    (spans,) = engine.analyze_many([text])
    assert ("EMAIL_ADDRESS", value) in [(s.entity, text[s.start:s.end]) for s in spans]


@pytest.mark.parametrize("text", ["I arrived at work today.", "we met at the station at 5.30",
                                  "look at example.com for details", "lunch at Joe.s place"])
def test_at_in_a_sentence_is_no_email(engine: PIIEngine, text: str) -> None:
    (spans,) = engine.analyze_many([text])
    assert "EMAIL_ADDRESS" not in {s.entity for s in spans}

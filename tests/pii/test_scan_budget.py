"""The per-request scan budget (``pii_engine.max_scan_chars`` / ``max_scan_texts``).

One request's NER holds the process's only detection engine (and the GIL) for as long as it takes: a body of
9,000 short strings, inside every body limit, stalled every other guarded request for 12-22 s. Over the budget a
request is refused with 413 problem+json before any detection, the app is not called, and no input value reaches
the response, the logs or the audit record; a response over it has its unscanned strings withheld. The budgets
here are tiny so that the tests send a few short strings through spaCy, not thousands.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.audit.reader import AuditReader
from mlguard.config.pii import PIIEngineSettings
from mlguard.errors import ScanBudgetExceeded
from mlguard.jsonpath import compile_path
from mlguard.pii.engine import PIIEngine, _Keywords
from mlguard.pii.redactor import REDACTED, UNSCANNED, Redactor
from tests.pii.conftest import RecordingApp
from tests.pii.test_pii_stage import NOTE, NOTE_NAME, PLANTED, REQUEST, build, client, make_config

PHONE = "212-555-0199"
BUDGET = {"max_scan_chars": 200, "max_scan_texts": 10}
# Eight distinct notes of about 50 characters: 8 texts (within 10), about 420 characters (over 200).
LONG_NOTES = [f"Call {NOTE_NAME} at {PHONE} about item {i}." for i in range(8)]
# Twelve distinct short strings: 12 texts (over 10), 160 characters (within 200).
MANY_NOTES = [f"Quill{i:02d}Vexmar" for i in range(12)]


def budget_config(tmp: Path, policies: list[str] | None = None) -> dict[str, Any]:
    cfg = make_config(tmp, policies)
    cfg["pii_engine"].update(BUDGET)
    return cfg


class Calls:
    """Counts the texts each ``analyze_many`` call sends to the real engine (which it still calls)."""

    def __init__(self, engine: PIIEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int] = []
        real = engine.analyze_many

        def counting(texts: Any, entities: Any = None) -> Any:
            self.calls.append(len(texts))
            return real(texts, entities)

        monkeypatch.setattr(engine, "analyze_many", counting)


def _engine(mw: Any) -> PIIEngine:
    stage = next(s for s in mw.guard.stages if s.name == "pii")
    engine: PIIEngine = stage._engine
    return engine


def _passed_on(r: httpx.Response, app: RecordingApp) -> str:
    return json.dumps(app.bodies) + r.text + json.dumps(dict(r.headers))


def _logs(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{rec.getMessage()} {rec.__dict__}" for rec in caplog.records)


# ---------------------------------------------------------------------------------------- through the middleware

@pytest.mark.anyio
@pytest.mark.parametrize(("notes", "limit"), [(LONG_NOTES, "max_scan_chars"), (MANY_NOTES, "max_scan_texts")])
async def test_over_budget_is_refused_413_before_any_detection(tmp_path: Path, recording_app: RecordingApp,
                                                               caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               notes: list[str], limit: str) -> None:
    caplog.set_level(logging.DEBUG)
    mw, spy = build(budget_config(tmp_path), recording_app)
    engine = Calls(_engine(mw), monkeypatch)
    async with client(mw) as c:
        r = await c.post("/predict", json={**REQUEST, "note": notes})
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"].endswith("/scan-budget-exceeded") and problem["status"] == 413
    assert problem["limit"] == limit and f"pii_engine.{limit}=" in problem["detail"]
    assert problem["instance"] == f"urn:mlguard:audit:{r.headers['mlguard-audit-id']}"
    assert recording_app.bodies == []  # the app was not called
    assert engine.calls == []  # nothing reached the engine
    # Neither a failure (no failure_mode, no 503) nor a redaction: a refused input.
    seen = spy.seen[0]
    assert seen["findings"] == [] and "pii" not in seen["record"]
    assert seen["protected"] == {}  # read from the refused input, not kept for the record
    logs = _logs(caplog)
    assert "stage failed" not in logs
    for value in (NOTE_NAME, PHONE, *PLANTED.values(), *notes):
        assert value not in _passed_on(r, recording_app), "input value in the refusal"
        assert value not in logs, "input value in a log line"
    # The audit record: the refusal, no input, no protected attributes, the app not called.
    reader = AuditReader(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "mlguard.keyring")
    rec = reader.get(r.headers["mlguard-audit-id"])
    assert rec is not None
    assert rec["status"] == 413 and rec["app_called"] is False
    assert rec["rejection"] == {"status": 413, "type": "scan-budget-exceeded", "limit": limit}
    assert rec["input"] is None and rec["findings"] == [] and not rec.get("protected")
    assert rec["failures"] == [] and rec["decision"]["action"] == "proceed"
    dumped = json.dumps(rec)
    for value in (NOTE_NAME, PHONE, *PLANTED.values()):
        assert value not in dumped, "input value in the audit record"


@pytest.mark.anyio
async def test_under_budget_passes_with_redaction(tmp_path: Path, recording_app: RecordingApp,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    mw, spy = build(budget_config(tmp_path), recording_app)
    engine = Calls(_engine(mw), monkeypatch)
    async with client(mw) as c:
        r = await c.post("/predict", json={**REQUEST, "note": [NOTE, "second note, nothing in it"]})
    assert r.status_code == 200
    got = recording_app.bodies[0]
    assert all(NOTE_NAME not in n and PHONE not in n for n in got["note"])
    assert got["note"][1] == "second note, nothing in it"
    assert engine.calls == [2]
    assert int(r.headers["mlguard-redactions"]) >= 8
    assert {"$.note[0]"} <= {f.path for f in spy.seen[0]["findings"]}


@pytest.mark.anyio
async def test_repeats_and_cached_strings_do_not_count(tmp_path: Path, recording_app: RecordingApp,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve copies of one note are one text to scan; once it is cached it costs nothing at all, so a
    document of those plus nine new strings (ten texts) still passes."""
    mw, _spy = build(budget_config(tmp_path), recording_app)
    engine = Calls(_engine(mw), monkeypatch)
    async with client(mw) as c:
        first = await c.post("/predict", json={**REQUEST, "note": [NOTE] * 12})
        second = await c.post("/predict", json={**REQUEST, "note": [NOTE] * 12 + MANY_NOTES[:9]})
    assert first.status_code == 200 and second.status_code == 200
    assert engine.calls == [1, 9]
    assert all(NOTE_NAME not in n for body in recording_app.bodies for n in body["note"])


@pytest.mark.anyio
async def test_refused_under_fail_open_too(tmp_path: Path, recording_app: RecordingApp) -> None:
    """gdpr alone is fail_open: a stage failure would be served; an input over the budget is not a failure."""
    mw, _spy = build(budget_config(tmp_path, ["gdpr"]), recording_app)
    assert mw.guard.table.routes[0].policy.failure_mode == "fail_open"
    async with client(mw) as c:
        r = await c.post("/predict", json={**REQUEST, "note": LONG_NOTES})
    assert r.status_code == 413 and r.json()["limit"] == "max_scan_chars"
    assert recording_app.bodies == []


@pytest.mark.anyio
async def test_response_over_budget_is_withheld_not_scanned(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The client cannot be refused for the size of the app's answer: the strings the response scan would send
    to NER are withheld instead (``<REDACTED>``, finding UNSCANNED ``limit:max_scan_chars``)."""
    app = RecordingApp({"score": 0.2, "approved": False, "messages": LONG_NOTES})
    mw, spy = build(budget_config(tmp_path), app)
    route = mw.guard.table.routes[0]
    pii = route.policy.pii.model_copy(update={"scan_response": True})
    route.policy = route.policy.model_copy(update={"pii": pii})
    engine = Calls(_engine(mw), monkeypatch)
    async with client(mw) as c:
        r = await c.post("/predict", json=REQUEST)
    assert r.status_code == 200
    body = r.json()
    assert body["messages"] == [REDACTED] * len(LONG_NOTES) and body["score"] == 0.2
    assert engine.calls == [1]  # the request's note only
    withheld = [f for f in spy.seen[0]["findings"] if f.path.startswith("response:")]
    assert len(withheld) == len(LONG_NOTES)
    assert all(f.entity == UNSCANNED and f.recognizer == "limit:max_scan_chars" for f in withheld)
    assert NOTE_NAME not in r.text and PHONE not in r.text


@pytest.mark.anyio
@pytest.mark.parametrize("length", [15_000, 25_000])
async def test_defaults_never_refuse_one_long_string_that_a_longer_one_would_pass(
        tmp_path: Path, recording_app: RecordingApp, monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    """With the default settings one string too long to scan is withheld from the model, never refused: before,
    15,000 characters (over max_scan_chars, within max_field_chars) got 413 while 25,000 passed withheld."""
    mw, spy = build(make_config(tmp_path), recording_app)
    engine = Calls(_engine(mw), monkeypatch)
    long_note = (f"{NOTE} " * (length // len(NOTE) + 1))[:length]
    async with client(mw) as c:
        r = await c.post("/predict", json={**REQUEST, "note": long_note})
    assert r.status_code == 200
    assert recording_app.bodies[0]["note"] == REDACTED
    assert all(n < length for n in engine.calls)  # the note never reached the engine
    withheld = [f for f in spy.seen[0]["findings"] if f.path == "$.note"]
    assert [(f.entity, f.recognizer) for f in withheld] == [(UNSCANNED, "limit:max_field_chars")]
    assert NOTE_NAME not in json.dumps(recording_app.bodies) + r.text


# ---------------------------------------------------------------------------------------- the settings

def test_default_field_limit_is_within_the_default_budget() -> None:
    s = PIIEngineSettings()
    assert 0 < s.max_field_chars <= s.max_scan_chars


@pytest.mark.parametrize("budget", [12_000, 5_000, 100])
def test_one_string_is_scanned_up_to_the_budget_and_withheld_beyond_never_refused(budget: int) -> None:
    """Whatever max_scan_chars is (max_field_chars left to its default), one string alone never earns a 413:
    up to the budget it is scanned, one character more and it is withheld."""
    red = Redactor({}, PIIEngineSettings(max_scan_chars=budget), engine=lambda: pytest.fail("no engine needed"))
    fits = red.prepare({"note": "a" * budget}, RULES, False, budget="refuse")
    assert (fits.scan_texts, fits.scan_chars) == (1, budget)
    over = red.prepare({"note": "a" * (budget + 1)}, RULES, False, budget="refuse")
    assert over.scan_texts == 0 and not over.needs_engine
    out, findings = red.finish(over)
    assert out == {"note": REDACTED}
    assert [(f.entity, f.recognizer) for f in findings] == [(UNSCANNED, "limit:max_field_chars")]


def test_field_limit_set_above_the_budget_is_a_config_error_naming_both(tmp_path: Path) -> None:
    from mlguard.config import load_config
    from mlguard.errors import ConfigError

    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text("pii_engine:\n  max_field_chars: 20000\n  max_scan_chars: 12000\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    message = str(info.value)
    assert info.value.file == str(cfg) and info.value.field == "pii_engine"
    assert "pii_engine.max_field_chars (20000)" in message and "pii_engine.max_scan_chars (12000)" in message


@pytest.mark.parametrize(("given", "field_chars"), [
    ({"max_field_chars": 12_000, "max_scan_chars": 12_000}, 12_000),  # equal: fine
    ({"max_field_chars": 500, "max_scan_chars": 12_000}, 500),
    ({"max_field_chars": 50_000, "max_scan_chars": 0}, 50_000),  # no budget: no constraint
    ({"max_scan_chars": 3_000}, 3_000),  # unset: follows a lower budget
    ({"max_scan_chars": 50_000}, 12_000),  # unset: keeps its default under a higher one
])
def test_coherent_settings_are_accepted(given: dict[str, int], field_chars: int) -> None:
    assert PIIEngineSettings(**given).max_field_chars == field_chars


# ---------------------------------------------------------------------------------------- the redactor

RULES = [(compile_path("$.note"), "scan")]


def test_prepare_counts_what_detection_would_cost(engine: PIIEngine) -> None:
    settings = PIIEngineSettings(max_field_chars=len(NOTE), cache_size=16, max_scan_chars=100, max_scan_texts=2)
    red = Redactor({}, settings, engine=engine)
    doc = {"note": [NOTE, NOTE, "x" * (len(NOTE) + 1), "", "Ring Ann tomorrow"]}
    plan = red.prepare(doc, RULES, False, budget="refuse")
    # Repeats once, the unscannable one (withheld by max_field_chars) and the empty one not at all.
    assert (plan.scan_texts, plan.scan_chars) == (2, len(NOTE) + len("Ring Ann tomorrow"))
    red.detect([plan])
    out, _ = red.finish(plan)
    assert out["note"][2] == REDACTED
    again = red.prepare(doc, RULES, False, budget="refuse")
    assert (again.scan_texts, again.scan_chars) == (0, 0) and not again.needs_engine  # all cached


@pytest.mark.parametrize(("settings", "limit"), [
    ({"max_scan_texts": 2}, "max_scan_texts"),
    ({"max_scan_chars": len(NOTE)}, "max_scan_chars"),
])
def test_refuse_names_the_limit_and_no_text(engine: PIIEngine, settings: dict[str, int], limit: str) -> None:
    red = Redactor({}, PIIEngineSettings(cache_size=0, **settings), engine=engine)
    doc = {"note": [NOTE, f"{NOTE_NAME} again", PHONE]}
    with pytest.raises(ScanBudgetExceeded) as info:
        red.prepare(doc, RULES, False, budget="refuse")
    exc = info.value
    assert exc.limit == limit and exc.status == 413 and f"pii_engine.{limit}=" in exc.detail
    assert NOTE_NAME not in str(exc) and PHONE not in str(exc)


def test_withhold_replaces_every_string_left_to_scan(engine: PIIEngine) -> None:
    # Each string within the budget (one alone is never over it: it would be withheld by max_field_chars), the
    # two together over it.
    red = Redactor({}, PIIEngineSettings(cache_size=0, max_scan_chars=len(NOTE) + 5), engine=engine)
    doc = {"note": [NOTE, "Ring Ann"], "id": "APP-7"}
    plan = red.prepare(doc, [(compile_path("$.note[*]"), "scan"), (compile_path("$.id"), "keep")], False,
                       budget="withhold")
    assert not plan.needs_engine
    out, findings = red.finish(plan)
    assert out == {"note": [REDACTED, REDACTED], "id": "APP-7"}
    assert [(f.entity, f.path, f.recognizer) for f in findings] == [
        (UNSCANNED, "$.note[0]", "limit:max_scan_chars"), (UNSCANNED, "$.note[1]", "limit:max_scan_chars")]


def test_no_budget_unless_asked_and_zero_is_no_limit(engine: PIIEngine) -> None:
    """``redact``/``redact_many`` (the CLI's path) apply no budget; 0 turns a limit off."""
    tiny = Redactor({}, PIIEngineSettings(cache_size=0, max_scan_chars=1, max_scan_texts=1), engine=engine)
    (out, findings), = tiny.redact_many([{"note": [NOTE, "Ring Ann"]}], RULES, False)
    assert NOTE_NAME not in json.dumps(out) and findings
    off = Redactor({}, PIIEngineSettings(cache_size=0, max_scan_chars=0, max_scan_texts=0), engine=engine)
    plan = off.prepare({"note": [NOTE, "Ring Ann", PHONE]}, RULES, False, budget="refuse")
    assert plan.scan_texts == 3


def test_defaults_refuse_the_reported_body_and_pass_a_few_notes() -> None:
    """The defaults against the new-user report (9,000 short strings, 268 KB) and a legitimate request with a few
    notes of a few thousand characters; counted only, nothing is detected."""
    red = Redactor({}, PIIEngineSettings(), engine=lambda: pytest.fail("no engine needed"))
    reported = {"note": [f"short note number {i} for the file" for i in range(9000)]}
    with pytest.raises(ScanBudgetExceeded):
        red.prepare(reported, RULES, False, budget="refuse")
    hundred_k = {"note": [("word " * 600)[:3000] + str(i) for i in range(33)]}
    with pytest.raises(ScanBudgetExceeded):
        red.prepare(hundred_k, RULES, False, budget="refuse")
    few = {"note": [("word " * 800)[:3500] + str(i) for i in range(3)]}
    assert red.prepare(few, RULES, False, budget="refuse").scan_chars > 10_000


# ---------------------------------------------------------------------------------------- the engine's cost

def test_context_keywords_are_looked_up_as_a_set(engine: PIIEngine) -> None:
    """Presidio's context enhancer asks ``lemma in keywords`` for each step of a walk around each span: with a
    list that made one long note cost O(spans * tokens^2) (a 19,000-character note 24 s). The list it gets
    answers ``in`` from a set, and is otherwise the same list."""
    doc = engine.nlp(NOTE)
    art = engine._nlp_engine._doc_to_nlp_artifact(doc, "en")
    assert isinstance(art.keywords, _Keywords)
    plain = list(art.keywords)
    assert art.keywords == plain and plain  # the words of the note (context works: test_pii_engine.py)
    for word in [*plain, "loan", "zzz-not-there", 3]:
        assert (word in art.keywords) == (word in plain)

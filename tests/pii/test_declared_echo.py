"""A declared field's value found again inside a scanned string is redacted there too, as its declared entity.

A new user's HIPAA trial: ``$.patient.name`` declared PERSON was tokenized, and the note "Percival Dunwoody seen
today" reached the model in clear because NER missed that name. The guard had been told the exact value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.jsonpath import compile_path
from mlguard.middleware import GuardMiddleware
from mlguard.pii.engine import Span
from mlguard.pii.redactor import ECHO, Redactor
from tests.pii.conftest import RecordingApp

NAME = "Percival Dunwoody"
MRN = "MRN-99887766"


class NoNER:
    """An engine that finds nothing: whatever is redacted in the note came from the declared values."""

    def analyze_many(self, texts: list[str], entities: Any = None) -> list[list[Span]]:
        return [[] for _ in texts]


def _redactor(**ops: str) -> Redactor:
    return Redactor({"PERSON": "replace", "MEDICAL_RECORD_NUMBER": "replace", **ops}, engine=NoNER())


RULES = [(compile_path("$.name"), "PERSON"), (compile_path("$.mrn"), "MEDICAL_RECORD_NUMBER"),
         (compile_path("$.note"), "scan")]


def test_declared_values_are_redacted_where_the_note_repeats_them() -> None:
    note = f"{NAME} seen today ({MRN}); Mr Dunwoody stable. {NAME.upper()} again, {MRN.lower()}."
    out, findings = _redactor().redact({"name": NAME, "mrn": MRN, "note": note}, RULES)
    assert out == {"name": "<PERSON>", "mrn": "<MEDICAL_RECORD_NUMBER>",
                   "note": "<PERSON> seen today (<MEDICAL_RECORD_NUMBER>); Mr <PERSON> stable. <PERSON> again, "
                           "<MEDICAL_RECORD_NUMBER>."}
    echoed = [(f.entity, note[f.start:f.end]) for f in findings if f.recognizer == ECHO]
    assert echoed == [("PERSON", NAME), ("MEDICAL_RECORD_NUMBER", MRN), ("PERSON", "Dunwoody"),
                      ("PERSON", NAME.upper()), ("MEDICAL_RECORD_NUMBER", MRN.lower())]


def test_only_whole_words_and_not_short_values() -> None:
    """A value inside a longer word is not it; values too short to be telling are not searched; a name's words
    are matched capitalised as declared (the name "Baker", not the word "baker")."""
    doc = {"name": "Al Baker", "mrn": "12", "note": "Albert the baker, Bakerloo line, 12 days, Baker left."}
    out, findings = _redactor().redact(doc, RULES)
    assert out["note"] == "Albert the baker, Bakerloo line, 12 days, <PERSON> left."
    assert [f.recognizer for f in findings if f.path == "$.note"] == [ECHO]


def test_kept_fields_and_withheld_strings_are_left_alone() -> None:
    """A field the policy keeps is not searched for; a string withheld as unscannable stays withheld whole."""
    r = Redactor({"PERSON": "keep", "MEDICAL_RECORD_NUMBER": "replace"}, engine=NoNER())
    out, _ = r.redact({"name": NAME, "mrn": MRN, "note": f"{NAME} ({MRN})"}, RULES)
    assert out["note"] == f"{NAME} (<MEDICAL_RECORD_NUMBER>)"
    r = _redactor()
    plan = r.prepare({"name": NAME, "note": f"{NAME} " + "x" * 50}, RULES)
    r.withhold(plan, "limit:test")
    out, _ = r.finish(plan)
    assert out["note"] == "<REDACTED>"


def test_merged_with_what_detection_found() -> None:
    """An echo overlapping a detected span becomes one span: nothing left partly in clear."""

    class Partial:
        def analyze_many(self, texts: list[str], entities: Any = None) -> list[list[Span]]:
            # NER found only "Dunwoody seen" (a wrong, partial span)
            return [[Span("PERSON", t.index("Dunwoody"), t.index("Dunwoody") + 13, 0.6, "SpacyRecognizer")]
                    for t in texts]

    r = Redactor({"PERSON": "replace"}, engine=Partial())
    out, findings = r.redact({"name": NAME, "note": f"Dr {NAME} seen today"}, RULES)
    assert out["note"] == "Dr <PERSON> today"
    assert [(f.start, f.end) for f in findings if f.path == "$.note"] == [(3, 25)]


async def test_through_the_guard_the_model_never_sees_the_declared_name_in_the_note(tmp_path: Path) -> None:
    app = RecordingApp()
    cfg = {"policies": ["hipaa"], "retention": {"max": "P6Y"}, "admin": {"enabled": False},
           "audit": {"store": f"sqlite:///{tmp_path / 'audit.db'}", "keyring": str(tmp_path / "k.keyring")},
           "pii_engine": {"vault_path": str(tmp_path / "vault.db")},
           "routes": [{"path": "/predict", "subject": "$.patient.mrn",
                       "pii": {"$.patient.name": "PERSON", "$.patient.mrn": "MEDICAL_RECORD_NUMBER",
                               "$.note": "scan"}}]}
    mw = GuardMiddleware(app, config=cfg)
    body = {"patient": {"name": NAME, "mrn": MRN}, "note": f"{NAME} readmitted; chart {MRN} updated."}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        r = await c.post("/predict", json=body)
    await mw.guard.aclose()
    assert r.status_code == 200
    got = app.bodies[0]
    assert NAME not in got["note"] and "Dunwoody" not in got["note"] and "99887766" not in got["note"]
    token = got["patient"]["name"]
    assert token.startswith("tok_") and token in got["note"]  # the same token as the declared field


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = pytest.mark.anyio

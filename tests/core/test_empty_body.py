"""A guarded request with no body (an erasure DELETE) is "no document", not a 415 or a 400.

The walk-through: ``DELETE /v1/misc/applicants/A-17`` on a guarded route got 415 without a content type and
400 "Expecting value" with one, so such a route could not be guarded at all. An empty body now reaches the app
unchanged, the stages have nothing to redact, the response is still inspected and the exchange audited with a
null input; a body with bytes keeps every check it had.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlguard.audit.reader import AuditReader
from mlguard.body import read_body
from mlguard.errors import UnsupportedMediaType
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from tests.core.conftest import RecordingApp, base_config, client

pytestmark = pytest.mark.anyio

ERASE = "/v1/misc/applicants/A-17"
NAME = "Ysolde Farquharson-Pemberly"  # planted: must not reach the app when a body is sent


def _route(**extra: Any) -> dict[str, Any]:
    return {"path": "/v1/misc/applicants/{applicant_id}", "methods": ["DELETE", "POST"],
            "subject": "$.applicant.id", "protected": {"sex": "$.applicant.sex"},
            "pii": {"$.applicant.name": "PERSON"},
            "model": {"output": "$.score", "favorable": "$.approved"}, **extra}


def _guard(tmp_path: Path, stages: list[str] | None) -> tuple[GuardMiddleware, RecordingApp, Guard]:
    cfg = base_config(tmp_path, routes=[_route()])
    guard = Guard(cfg, stages=stages)
    app = RecordingApp({"erased": True, "score": 0.1, "approved": False})
    return GuardMiddleware(app, guard=guard), app, guard


@pytest.mark.parametrize("headers", [{}, {"content-type": "application/json"}, {"content-type": "text/plain"},
                                     {"content-length": "0"},
                                     {"content-type": "application/json", "content-length": "0"}],
                         ids=["no-type", "json", "text-plain", "length-0", "json-length-0"])
async def test_empty_body_on_a_core_guard_reaches_the_app_unchanged(tmp_path: Path,
                                                                    headers: dict[str, str]) -> None:
    mw, app, guard = _guard(tmp_path, stages=[])
    async with client(mw) as c:
        resp = await c.request("DELETE", ERASE, headers=headers)
    await guard.aclose()
    assert resp.status_code == 200, resp.text
    assert resp.json()["erased"] is True
    assert resp.headers["mlguard-inspected"] == "true"
    assert app.calls[0]["body"] == b""
    assert app.calls[0]["scope"]["method"] == "DELETE"


async def test_empty_body_with_every_request_stage_is_served_inspected_and_audited(tmp_path: Path) -> None:
    """PII, fairness and audit on the route: no document to redact, a decision still counted, a record whose
    input (and subject) is null."""
    mw, app, guard = _guard(tmp_path, stages=["pii", "fairness", "audit"])
    async with client(mw) as c:
        resp = await c.request("DELETE", ERASE, headers={"content-type": "application/json"})
        bare = await c.request("DELETE", ERASE)
    await guard.aclose()
    for r in (resp, bare):
        assert r.status_code == 200, r.text
        assert r.headers["mlguard-inspected"] == "true"
        assert r.headers["mlguard-redactions"] == "0"
    assert [call["body"] for call in app.calls] == [b"", b""]

    reader = AuditReader(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "k.keyring")
    try:
        record = reader.get(resp.headers["mlguard-audit-id"])
    finally:
        reader.close()
    assert record is not None
    assert record["input"] is None
    assert record["subject"] is None
    assert record["rejection"] is None and record["failures"] == []
    assert record["app_called"] is True and record["status"] == 200
    assert record["output"] == {"erased": True, "score": 0.1, "approved": False}
    assert record["fairness"]["counted"] is True


async def test_a_body_with_bytes_keeps_its_checks(tmp_path: Path) -> None:
    """Wrong type 415, malformed 400, whitespace is not empty (400); a JSON body is still redacted."""
    mw, app, guard = _guard(tmp_path, stages=[])
    async with client(mw) as c:
        wrong = await c.request("DELETE", ERASE, content=b'{"a": 1}', headers={"content-type": "text/plain"})
        untyped = await c.request("DELETE", ERASE, content=b'{"a": 1}')
        bad = await c.request("DELETE", ERASE, content=b"{", headers={"content-type": "application/json"})
        blank = await c.request("DELETE", ERASE, content=b"  ", headers={"content-type": "application/json"})
        ok = await c.request("DELETE", ERASE, content=json.dumps({"applicant": {"id": "A-17"}}).encode(),
                             headers={"content-type": "application/json"})
    await guard.aclose()
    assert [r.status_code for r in (wrong, untyped, bad, blank, ok)] == [415, 415, 400, 400, 200]
    assert len(app.calls) == 1


async def test_lying_zero_length_with_bytes_is_checked() -> None:
    """``Content-Length: 0`` followed by bytes (no content type): the type is checked when the first byte
    comes, so a body cannot slip past the check by declaring itself empty."""
    scope = {"type": "http", "headers": [(b"content-length", b"0")]}
    messages = [{"type": "http.request", "body": b"", "more_body": True},
                {"type": "http.request", "body": NAME.encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    def check() -> None:
        raise UnsupportedMediaType("content type 'text/plain' is not accepted", limit="content_types")

    with pytest.raises(UnsupportedMediaType):
        await read_body(scope, receive, 1000, check=check)


def test_explain_binding_skips_a_missing_document() -> None:
    """The explain stage reads its features from ``ex.document``: with no document it skips with a reason
    (recorded, no explanation attached) instead of failing the stage."""
    from mlguard.explain.binding import Background, Binding
    from mlguard.jsonpath import compile_path

    binding = Binding(0, None, "Stub", "", True, compile_path("$.features"), ["income"], {}, "probability",
                      1, True, None, 0.0, Background(None, None, None))
    row = binding.build_row(None)
    assert row.values is None
    assert row.skip_reason == "no feature object at $.features"

"""A declared PII path that does not fit the requests is said once, at the first request that shows it.

A developer's walk-through: `$.a.contacts[*].email` declared for a body whose `contacts` was one object, and
`$.a.phones` where the client sent `Phones`; with `scan_undeclared: false` both values reached the app in clear
and nothing said why."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.jsonpath import compile_path
from mlguard.middleware import GuardMiddleware
from mlguard.pii.declared_paths import ABSENT_CHECKS, DeclaredPathCheck, misfit
from mlguard.runtime import Guard
from tests.pii.conftest import RecordingApp

PLANTED_EMAIL = "ottilie.vanderbeek@example.org"
PLANTED_PHONE = "+1 415 555 0199"


@pytest.mark.parametrize(("path", "doc", "expected"), [
    ("$.a.contacts[*].email", {"a": {"contacts": {"email": PLANTED_EMAIL}}},
     "$.a.contacts is an object, not an array"),
    ("$.a.phones", {"a": {"Phones": [PLANTED_PHONE]}}, "$.a has the member 'phones' in other letter case"),
    ("$.addrs[*].street", {"addrs": ["1 Main St"]}, "$.addrs[*] is a string, not an object"),
    ("$.addr.street", {"addr": [{"street": "1 Main St"}]}, "$.addr is an array, not an object"),
    ("$.a[0].email", {"a": {"email": PLANTED_EMAIL}}, "$.a is an object, not an array"),
])
def test_a_path_of_the_wrong_shape_is_explained_without_values(path: str, doc: Any, expected: str) -> None:
    why = misfit(compile_path(path), doc)
    assert why is not None and why.startswith(expected), why
    assert PLANTED_EMAIL not in why and PLANTED_PHONE not in why and "Main" not in why


@pytest.mark.parametrize(("path", "doc"), [
    ("$.a.contacts[*].email", {"a": {"contacts": [{"email": PLANTED_EMAIL}]}}),  # fits
    ("$.a.contacts[*].email", {"a": {}}),  # absent: an optional field
    ("$.a.contacts[*].email", {"a": {"contacts": []}}),
    ("$.a.phones", {"b": 1}),
    ("$.a.email", {"a": {"email": None}}),
])
def test_a_path_that_fits_or_is_absent_is_no_misfit(path: str, doc: Any) -> None:
    assert misfit(compile_path(path), doc) is None


def test_an_absent_path_stops_being_checked(caplog: pytest.LogCaptureFixture) -> None:
    check = DeclaredPathCheck({0: [(compile_path("$.opt.email"), "EMAIL_ADDRESS")]})
    for _ in range(ABSENT_CHECKS):
        check.check(0, "/p", {"other": 1})
    assert not check._pending[0]  # no more work per request for that route
    check.check(0, "/p", {"opt": {"Email": PLANTED_EMAIL}})
    assert not caplog.records


@pytest.mark.anyio
async def test_the_guard_warns_once_per_route_and_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = {"policies": ["gdpr"], "retention": {"max": "P1Y"}, "base_dir": str(tmp_path),
           "routes": [{"path": "/score", "scan_undeclared": False,
                       "pii": {"$.a.contacts[*].email": "EMAIL_ADDRESS", "$.a.phones": "PHONE_NUMBER",
                               "$.a.name": "PERSON"}}]}
    app = RecordingApp()
    guard = Guard(cfg, stages=["pii"])
    body = {"a": {"name": "Ottilie", "contacts": {"email": PLANTED_EMAIL}, "Phones": [PLANTED_PHONE]}}
    with caplog.at_level(logging.WARNING):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=GuardMiddleware(app, guard=guard)),
                                     base_url="http://t") as client:
            for _ in range(3):
                assert (await client.post("/score", json=body)).status_code == 200
    await guard.aclose()
    warned = [r.getMessage() for r in caplog.records if r.name == "mlguard.pii.declared"]
    assert len(warned) == 2, warned  # the two misfits, each once; the name fits and is redacted
    assert any("$.a.contacts[*].email" in w and "is an object, not an array" in w for w in warned)
    assert any("$.a.phones" in w and "other letter case" in w for w in warned)
    assert all("route /score" in w for w in warned)
    assert app.bodies[0]["a"]["name"] != "Ottilie"
    for record in caplog.records:
        text = record.getMessage() + str(record.__dict__)
        assert PLANTED_EMAIL not in text and PLANTED_PHONE not in text and "Ottilie" not in text

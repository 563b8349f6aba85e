"""The access line's path carries no input value: cut at an encoded ``?`` or ``#`` as at a literal one, and in
paths of unguarded routes a segment holding an ``@`` or a long run of digits logged as ``{redacted}``.

A security review logged ``POST /v1/score%3Femail=zq@quackmail.eu`` as ``/v1/score%3Femail%3Dzq%40quackmail.eu``
(uvicorn logs the percent-encoded path), a raw ``#`` as ``%23...``, and ``/v1/zq@quackmail.eu/Zephyrine`` as is.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest

import mlguard.logs
from mlguard.logs import JsonFormatter, TextFormatter, mask_route_paths

EMAIL = "zq@quackmail.eu"


def _access(path: str, method: str = "POST") -> logging.LogRecord:
    return logging.getLogger("uvicorn.access").makeRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("203.0.113.9:5123", method, path, "1.1", 200), None)


def _logged_path(path: str) -> str:
    rec = _access(path)
    text = TextFormatter().format(rec)
    assert "quackmail" not in text and "zq%40" not in text and "5550123" not in text
    doc: dict[str, Any] = json.loads(JsonFormatter().format(rec))
    return str(doc["path"])


@pytest.fixture(autouse=True)
def _no_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlguard.logs, "_TEMPLATES", {})  # process-wide: only this test's templates


@pytest.mark.parametrize("path", [
    "/v1/score%3Femail%3Dzq%40quackmail.eu", "/v1/score%3femail=zq@quackmail.eu",  # an encoded ?, either case
    "/v1/score%23email%3Dzq%40quackmail.eu", "/v1/score%23", "/v1/score#email=zq@quackmail.eu",  # a fragment
    "/v1/score?email=zq@quackmail.eu", "/v1/score?a=1%3Fb%23c",
])
def test_the_path_is_cut_at_an_encoded_query_or_fragment(path: str) -> None:
    assert _logged_path(path) == "/v1/score"


@pytest.mark.parametrize(("path", "logged"), [
    (f"/v1/{EMAIL}/Zephyrine", "/v1/{redacted}/Zephyrine"),
    ("/v1/zq%40quackmail.eu/Zephyrine", "/v1/{redacted}/Zephyrine"),
    ("/v1/ZQ%40QUACKMAIL.EU", "/v1/{redacted}"),
    ("/customers/+1-555-0123-4567/calls", "/customers/+1-555-0123-4567/calls"),  # no run of 7 digits
    ("/customers/15550123456/calls", "/customers/{redacted}/calls"),
    ("/accounts/DE89370400440532013000", "/accounts/{redacted}"),
    ("/v1/orders/123456", "/v1/orders/123456"),  # six digits: kept
    ("/v1/score", "/v1/score"),
])
def test_an_unguarded_path_segment_with_an_at_sign_or_a_long_number_is_redacted(path: str, logged: str) -> None:
    rec = _access(path)
    assert json.loads(JsonFormatter().format(rec))["path"] == logged
    assert logged in TextFormatter().format(rec)


def test_a_guarded_route_is_still_logged_as_its_template() -> None:
    mask_route_paths([("/people/{person}/score", re.compile(r"^/people/(?P<person>[^/]+)/score$"))])
    assert _logged_path(f"/people/{EMAIL}/score%3Fx=1") == "/people/{person}/score"
    assert _logged_path("/people/5550123999/score") == "/people/{person}/score"


def test_a_websocket_line_gets_the_same_rules() -> None:
    rec = logging.getLogger("uvicorn.error").makeRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("203.0.113.9:5123", f"/ws/{EMAIL}/feed%3Ftoken=5550123999"), None)
    message = json.loads(JsonFormatter().format(rec))["message"]
    assert "/ws/{redacted}/feed" in message and "quackmail" not in message and "5550123999" not in message

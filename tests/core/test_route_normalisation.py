"""Requests a loose app serves as a guarded route are guarded, whatever their method's case, override header,
body on a bodiless method or path spelling; the app still gets the request as it came.

A security review over real HTTP (uvicorn, h11) with a raw-ASGI app that answers any path and method got a
planted e-mail address past the guard in clear with ``post /v1/score``, ``X-HTTP-Method-Override: POST``, a GET
with a body, and ``//v1/score``, ``/v1/./score``, ``/v1/score;x``, ``/V1/SCORE`` and the like. These tests drive
the middleware in-process with hand-made scopes (h11 passes the method as sent, which httpx would upper-case).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlguard.exchange import Exchange
from mlguard.stage import BaseStage

pytestmark = pytest.mark.anyio

EMAIL = "zq@quackmail.eu"
BODY = json.dumps({"email": EMAIL, "features": {"income": 5}}).encode()
ROUTES = [{"path": "/v1/score", "methods": ["POST"]},
          {"path": "/v1/applicants/{applicant_id}/score", "methods": ["POST"]}]


class RedactEmail(BaseStage):
    """Stands in for the PII stage (no spaCy here): the app must get ``email`` redacted on a guarded route."""

    name = "pii"

    async def before_app(self, ex: Exchange) -> None:
        if isinstance(ex.document, dict) and "email" in ex.document:
            ex.set_document({**ex.document, "email": "<EMAIL_ADDRESS>"})


async def _call(mw: Any, method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None,
                body: bytes = BODY) -> tuple[int, dict[bytes, bytes]]:
    """One request through the middleware as uvicorn would give it: the method and path as sent."""
    if headers is None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
             "method": method, "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"t"), *headers], "client": ("127.0.0.1", 5000), "server": ("t", 80)}
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await mw(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"])


@pytest.fixture
def guarded(make_guarded: Any) -> tuple[Any, Any]:
    mw, app = make_guarded(routes=ROUTES)
    mw.guard.stages.append(RedactEmail())
    return mw, app


def _assert_guarded(app: Any, status: int, headers: dict[bytes, bytes], path: str, method: str) -> None:
    assert status == 200
    assert b"mlguard-audit-id" in headers
    call = app.calls[-1]
    assert EMAIL.encode() not in call["body"] and json.loads(call["body"])["email"] == "<EMAIL_ADDRESS>"
    assert (call["scope"]["path"], call["scope"]["method"]) == (path, method)  # the request as it came


JSON_BODY = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


@pytest.mark.parametrize("method", ["post", "Post", "pOST"])
async def test_a_lower_or_mixed_case_method_is_guarded(guarded: tuple[Any, Any], method: str) -> None:
    mw, app = guarded
    status, headers = await _call(mw, method, "/v1/score")
    _assert_guarded(app, status, headers, "/v1/score", method)


@pytest.mark.parametrize("header", [b"x-http-method-override", b"x-http-method", b"x-method-override"])
@pytest.mark.parametrize(("method", "override"), [("GET", b"POST"), ("PUT", b"POST"), ("GET", b"post"),
                                                   ("PATCH", b" POST ")])
async def test_a_method_override_naming_a_guarded_method_is_guarded(guarded: tuple[Any, Any], header: bytes,
                                                                    method: str, override: bytes) -> None:
    mw, app = guarded
    status, headers = await _call(mw, method, "/v1/score", [*JSON_BODY, (header, override)])
    _assert_guarded(app, status, headers, "/v1/score", method)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "get", "PROPFIND"])
async def test_a_body_on_a_bodiless_method_is_guarded(guarded: tuple[Any, Any], method: str) -> None:
    mw, app = guarded
    status, headers = await _call(mw, method, "/v1/score")
    _assert_guarded(app, status, headers, "/v1/score", method)


async def test_a_chunked_body_on_a_get_is_guarded(guarded: tuple[Any, Any]) -> None:
    mw, app = guarded
    status, headers = await _call(mw, "GET", "/v1/applicants/A-17/score",
                                  [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")])
    _assert_guarded(app, status, headers, "/v1/applicants/A-17/score", "GET")


@pytest.mark.parametrize("path", ["//v1/score", "/v1//score", "/v1/./score", "/v1/x/../score", "/v1/%2e/score",
                                  "/v1/x/%2E%2e/score", "/v1/score;x", "/v1;a=b/score", "/v1/x/..;/score",
                                  "/V1/SCORE", "/v1/Score/", "/../v1/score", "//V1/applicants/A-17/./SCORE",
                                  "/v1/applicants/A-17/score;jsessionid=1"])
async def test_a_path_a_loose_router_resolves_to_a_guarded_route_is_guarded(guarded: tuple[Any, Any],
                                                                            path: str) -> None:
    mw, app = guarded
    status, headers = await _call(mw, "POST", path)
    _assert_guarded(app, status, headers, path, "POST")


@pytest.mark.parametrize(("method", "path", "headers"), [
    ("GET", "/v1/score", []),  # a GET without a body: nothing to redact
    ("get", "/V1//score", [(b"content-length", b"0")]),
    ("PUT", "/v1/score", JSON_BODY),  # not listed on the route: the user's choice, as configured
    ("put", "/v1/score", JSON_BODY),
    ("GET", "/v1/score", [(b"x-http-method-override", b"PUT"), (b"content-length", b"0")]),
    ("POST", "/v1/scores", JSON_BODY),
    ("POST", "/v1/score/..", JSON_BODY),  # resolves to /v1
    ("POST", "/v2/score", JSON_BODY),
    ("POST", "/v1/applicants/score", JSON_BODY),
])
async def test_other_requests_still_pass_through_untouched(guarded: tuple[Any, Any], method: str, path: str,
                                                           headers: list[tuple[bytes, bytes]]) -> None:
    mw, app = guarded
    body = BODY if headers is JSON_BODY else b""
    status, sent = await _call(mw, method, path, headers, body=body)
    assert status == 200 and b"mlguard-audit-id" not in sent
    assert app.calls[-1]["body"] == body and app.calls[-1]["scope"]["path"] == path


@pytest.mark.parametrize(("path", "normal"), [
    ("/v1/score", "/v1/score"), ("//v1//score//", "/v1/score"), ("/v1/./score/.", "/v1/score"),
    ("/v1/x/../score", "/v1/score"), ("/../../v1/score", "/v1/score"), ("/v1/%2e%2E/score", "/score"),
    ("/v1/score;x=1", "/v1/score"), ("/v1/..;/score", "/score"), ("/V1/Score/", "/V1/Score"), ("/", "/"),
    ("//", "/"), ("/v1/%41", "/v1/%41"),
])
def test_decision_path(path: str, normal: str) -> None:
    from mlguard.routes import decision_path

    assert decision_path(path) == normal

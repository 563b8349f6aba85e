"""ASGI protocol details the guard must keep as the app meant them (a platform engineer's walk-through).

- A response the app cut short (it raised after a first chunk) reached the client as a complete 200 with half a
  JSON document: it must stay cut short, so the server aborts it as without the guard.
- ``http.response.trailers`` and ``http.response.pathsend`` were forwarded before the held start message.
- The app's writes into the scope (Starlette's ``route``, ``endpoint``, ``path_params``) were lost for outer
  middleware on requests whose body the guard had rewritten (the app got a copy).
- A chunked request reached the app with both Transfer-Encoding and Content-Length; a rewritten response kept
  the app's ETag.
- A gzip request body was refused as "not valid UTF-8 (at byte 1)"; a UTF-8 byte order mark, which Starlette
  accepts, was refused.
- A batch's subject path ($[*].applicant.id) was accepted: every member but the first could not be erased.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from mlguard.errors import ConfigError
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.stage import BaseStage
from tests.core.conftest import base_config

BODY = {"applicant": {"id": "A-1", "sex": "Plantedfemale"}, "x": 1}  # sex is removed: the body is rewritten


def guard(tmp_path: Path, app: Any) -> GuardMiddleware:
    return GuardMiddleware(app, guard=Guard(base_config(tmp_path), stages=[]))


def http_scope(headers: list[tuple[bytes, bytes]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
            "headers": headers or [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1),
            "server": ("t", 80), **extra}


async def drive(mw: GuardMiddleware, body: bytes, scope: dict[str, Any] | None = None
                ) -> tuple[list[dict[str, Any]], BaseException | None]:
    """Call the middleware as a server would; the messages it sent and what it raised."""
    sent: list[dict[str, Any]] = []
    given = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return given.pop(0) if given else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await mw(scope or http_scope(), receive, send)
    except Exception as exc:
        return sent, exc
    return sent, None


async def _read(receive: Any) -> bytes:
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            return body


pytestmark = pytest.mark.anyio


async def test_a_response_cut_short_stays_cut_short(tmp_path: Path) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _read(receive)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"rows": [1, 2, ', "more_body": True})
        raise RuntimeError("database went away")

    sent, raised = await drive(guard(tmp_path, app), json.dumps(BODY).encode())
    assert isinstance(raised, RuntimeError)  # the app's error propagates, as without the guard
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert bodies and all(m.get("more_body") for m in bodies)  # never ended: the server aborts it


async def test_trailers_follow_the_body(tmp_path: Path) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _read(receive)
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"score": 0.7, "approved": true}'})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")], "more_trailers": False})

    sent, raised = await drive(guard(tmp_path, app), json.dumps(BODY).encode())
    assert raised is None
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body", "http.response.trailers"]
    assert sent[0]["trailers"] is True


async def test_pathsend_comes_after_its_start(tmp_path: Path) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _read(receive)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.pathsend", "path": "/tmp/report.json"})

    scope = http_scope(extensions={"http.response.pathsend": {}})
    sent, raised = await drive(guard(tmp_path, app), json.dumps(BODY).encode(), scope)
    assert raised is None
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.pathsend"]
    assert (b"mlguard-inspected", b"false") in sent[0]["headers"]


async def test_what_the_app_writes_into_the_scope_is_seen_outside(tmp_path: Path) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _read(receive)
        scope["route"] = "/predict"
        scope["path_params"] = {}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"score": 0.7, "approved": true}'})

    scope = http_scope()
    _, raised = await drive(guard(tmp_path, app), json.dumps(BODY).encode(), scope)
    assert raised is None and scope["route"] == "/predict" and scope["path_params"] == {}
    assert dict(scope["headers"]).get(b"content-length") is None  # the server's own headers are untouched


async def test_a_rewritten_request_says_one_length_and_a_rewritten_response_drops_its_etag(tmp_path: Path) -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(list(scope["headers"]))
        await _read(receive)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"etag", b'"v1"'),
                                (b"cache-control", b"max-age=60")]})
        await send({"type": "http.response.body", "body": b'{"score": 0.7, "approved": true, "sex": "F"}'})

    class Rewrites(BaseStage):
        """Takes a member out of the response, as the PII stage does when it scans responses."""

        name = "rewrites"

        async def after_app(self, ex: Any) -> None:
            ex.response_doc = {k: v for k, v in ex.response_doc.items() if k != "sex"}
            ex.response_modified = True

    g = Guard(base_config(tmp_path), stages=[])
    g.stages.append(Rewrites())
    scope = http_scope([(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")])
    sent, raised = await drive(GuardMiddleware(app, guard=g), json.dumps(BODY).encode(), scope)
    assert raised is None
    names = [k for k, _ in seen[0]]
    assert b"transfer-encoding" not in names and names.count(b"content-length") == 1
    headers = dict(sent[0]["headers"])
    assert b"etag" not in headers and headers[b"cache-control"] == b"max-age=60"
    assert int(headers[b"content-length"]) == len(sent[1]["body"]) and b"sex" not in sent[1]["body"]


async def test_a_compressed_request_is_refused_naming_its_encoding(tmp_path: Path) -> None:
    called: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(True)

    scope = http_scope([(b"content-type", b"application/json"), (b"content-encoding", b"gzip")])
    sent, _ = await drive(guard(tmp_path, app), gzip.compress(json.dumps(BODY).encode()), scope)
    assert sent[0]["status"] == 415 and not called
    problem = json.loads(sent[1]["body"])
    assert "Content-Encoding 'gzip'" in problem["detail"]


@pytest.mark.parametrize("encodings", [[b"identity", b"gzip"], [b"identity, gzip"], [b"gzip, identity"]])
async def test_every_content_encoding_header_and_coding_counts(tmp_path: Path, encodings: list[bytes]) -> None:
    """A security review: "identity" in a first Content-Encoding header and "gzip" in a second passed as identity
    (only the first header was read), while an app decoding the whole list would read what the guard did not."""
    called: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(True)

    scope = http_scope([(b"content-type", b"application/json"), *((b"content-encoding", e) for e in encodings)])
    sent, _ = await drive(guard(tmp_path, app), json.dumps(BODY).encode(), scope)
    assert sent[0]["status"] == 415 and not called
    assert "Content-Encoding 'gzip'" in json.loads(sent[1]["body"])["detail"]


async def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    got: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append(await _read(receive))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"score": 0.7, "approved": true}'})

    sent, raised = await drive(guard(tmp_path, app), b"\xef\xbb\xbf" + json.dumps(BODY).encode())
    assert raised is None and sent[0]["status"] == 200
    assert b"Plantedfemale" not in got[0]  # parsed, and the protected attribute taken out as usual


def test_a_batch_subject_is_refused(tmp_path: Path) -> None:
    cfg = base_config(tmp_path)
    cfg["routes"][0]["subject"] = "$[*].applicant.id"
    with pytest.raises(ConfigError, match="can match more than one value") as err:
        Guard(cfg, stages=[])
    assert err.value.field == "routes.0.subject"


@pytest.mark.parametrize(("headers", "body", "kind"), [
    ([(b"content-type", b"text/plain")], b"score 0.7", "not_json_or_too_large"),
    ([(b"content-type", b"application/json"), (b"content-encoding", b"gzip")],
     gzip.compress(b'{"score": 0.7, "approved": true}'), "encoded"),
])
async def test_responses_the_guard_cannot_read_are_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                             headers: list[tuple[bytes, bytes]], body: bytes,
                                                             kind: str) -> None:
    """A GZipMiddleware inside the guard, or a text answer, on a route bound to its model: the decision went
    unexplained and uncounted with no log line at all."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _read(receive)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    mw = guard(tmp_path, app)
    for _ in range(2):
        sent, raised = await drive(mw, json.dumps(BODY).encode())
        assert raised is None and (b"mlguard-inspected", b"false") in sent[0]["headers"]
    lines = [r for r in caplog.records if "not inspected" in r.getMessage()]
    assert len(lines) == 1 and getattr(lines[0], "kind", None) == kind
    assert getattr(lines[0], "route", None) == "/predict"

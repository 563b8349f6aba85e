"""Item 3 of the foundation issue: bad input never reaches the app and never crashes the guard."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.core.conftest import client

pytestmark = pytest.mark.anyio

SECRET = "Zebulon Quartermaine 078-05-1120"  # planted: must never be echoed


async def _post(mw: Any, content: bytes, content_type: str = "application/json") -> Any:
    async with client(mw) as c:
        return await c.post("/predict", content=content, headers={"content-type": content_type})


def _assert_problem(resp: Any, status: int, limit_word: str) -> dict[str, Any]:
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    doc = resp.json()
    assert doc["status"] == status
    assert limit_word in doc["detail"]
    assert SECRET not in resp.text
    assert "Zebulon" not in resp.text
    assert resp.headers["mlguard-audit-id"]
    return doc


async def test_oversized_body_declared_length_is_413(make_guarded: Any) -> None:
    mw, app = make_guarded(limits={"max_body_bytes": 64})
    body = json.dumps({"note": SECRET * 10}).encode()
    resp = await _post(mw, body)
    _assert_problem(resp, 413, "max_body_bytes=64")
    assert not app.called


async def test_oversized_chunked_body_is_413(make_guarded: Any) -> None:
    mw, app = make_guarded(limits={"max_body_bytes": 64})
    sent: list[Any] = []
    chunks = [b'{"note": "' + SECRET.encode(), b"x" * 100, b'"}']

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(msg: Any) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-type",
             b"application/json")], "query_string": b""}
    await mw(scope, receive, send)
    assert sent[0]["status"] == 413
    assert b"max_body_bytes" in sent[1]["body"]
    assert SECRET.encode() not in sent[1]["body"]
    assert not app.called


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_wrong_content_type_is_415(make_guarded: Any, ctype: str) -> None:
    mw, app = make_guarded()
    resp = await _post(mw, json.dumps({"note": SECRET}).encode(), ctype)
    _assert_problem(resp, 415, "content type")
    assert not app.called


async def test_missing_content_type_is_415(make_guarded: Any) -> None:
    mw, app = make_guarded()
    async with client(mw) as c:
        resp = await c.post("/predict", content=json.dumps({"note": SECRET}).encode())
    assert resp.status_code == 415
    assert not app.called


async def test_json_suffix_type_is_accepted(make_guarded: Any) -> None:
    mw, app = make_guarded()
    resp = await _post(mw, b'{"a": 1}', "application/vnd.api+json")
    assert resp.status_code == 200
    assert app.called


@pytest.mark.parametrize(
    ("body", "status", "word"),
    [
        (b'{"note": "' + SECRET.encode() + b'"', 400, "not valid JSON"),
        (b'{"note": "\xff\xfe' + SECRET.encode() + b'"}', 400, "UTF-8"),
        (b'{"x": NaN, "note": "' + SECRET.encode() + b'"}', 400, "not valid JSON"),
        (b'{"n": ' + b"1" * 200 + b', "note": "' + SECRET.encode() + b'"}', 422, "max_integer_digits"),
        (b"[" * 40 + b"]" * 40, 422, "max_depth"),
        (b"[" * 100_000 + b"]" * 100_000, 422, "max_depth"),
        (json.dumps({"note": SECRET + "y" * 200_000}).encode(), 422, "max_string_length"),
        (json.dumps({"items": list(range(20_000)), "note": SECRET}).encode(), 422, "max_array_length"),
        (b'{"note": "\\ud800' + SECRET.encode() + b'"}', 400, "surrogate"),
        (b'{"note": "a\\u0000' + SECRET.encode() + b'"}', 422, "NUL"),
    ],
    ids=["truncated", "non-utf8", "nan", "int-digits", "depth", "very-deep", "string-length", "array-length",
         "lone-surrogate", "nul"],
)
async def test_malformed_or_over_limit_json(make_guarded: Any, body: bytes, status: int, word: str) -> None:
    mw, app = make_guarded(limits={"max_body_bytes": 4 * 1024 * 1024})
    resp = await _post(mw, body)
    _assert_problem(resp, status, word)
    assert not app.called


async def test_client_disconnect_mid_body(make_guarded: Any) -> None:
    mw, app = make_guarded()
    messages = [{"type": "http.request", "body": b'{"note": "', "more_body": True}, {"type": "http.disconnect"}]
    sent: list[Any] = []

    async def receive() -> Any:
        return messages.pop(0)

    async def send(msg: Any) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/predict",
             "headers": [(b"content-type", b"application/json")], "query_string": b""}
    await mw(scope, receive, send)
    assert sent == []
    assert not app.called


async def test_bad_content_length_is_400(make_guarded: Any) -> None:
    mw, app = make_guarded()
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(msg: Any) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"abc")]}
    await mw(scope, receive, send)
    assert sent[0]["status"] == 400
    assert not app.called


# --- found by fuzzing (tests/fuzz) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"applicant": {"ssn": "' + SECRET.encode() + b'", "ssn": null}}',
        b'{"a": 1, "a": 1}',
        b'{"x": [{"k": {"n": "' + SECRET.encode() + b'", "n": "y"}}]}',
    ],
    ids=["planted-then-null", "same-value-twice", "nested"],
)
async def test_duplicate_member_names_are_400(make_guarded: Any, body: bytes) -> None:
    """A member given twice: the guard's parser keeps the last, the app's may keep the first. With nothing to
    redact in the last value the original bytes (first value in clear) used to reach the app."""
    mw, app = make_guarded()
    resp = await _post(mw, body)
    doc = _assert_problem(resp, 400, "same member name twice")
    assert doc["limit"] == "duplicate_member"
    assert not app.called


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1E+999999", b"17976931348623159" + b"0" * 292 + b".0"])
async def test_numbers_beyond_a_double_are_422(make_guarded: Any, number: bytes) -> None:
    """1e400 parsed to infinity, which JSON cannot carry: a rewritten body failed to serialise (an exception out
    of the guard), an unrewritten one reached the app as a different number."""
    mw, app = make_guarded()
    resp = await _post(mw, b'{"score": ' + number + b', "note": "' + SECRET.encode() + b'"}')
    doc = _assert_problem(resp, 422, "64-bit float")
    assert doc["limit"] == "number_range"
    assert not app.called


async def test_tiny_and_large_finite_numbers_pass(make_guarded: Any) -> None:
    mw, app = make_guarded()
    resp = await _post(mw, b'{"a": 1e-400, "b": 1.7976931348623157e308, "c": -0.0}')
    assert resp.status_code == 200
    assert app.json() == {"a": 0.0, "b": 1.7976931348623157e308, "c": -0.0}


def test_the_size_fast_path_never_skips_a_violation() -> None:
    """parse_json skips the walk over the document when the text is too small to break a limit. Random documents
    (deep ones, NULs, lone surrogates, long arrays) under small limits: every text the fast path lets through
    passes the full walk. The text reaches the check as parse_json gets it, decoded from UTF-8 bytes."""
    import json as _json

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mlguard.body import _check_limits, _within_by_size
    from mlguard.config import LimitSettings
    from mlguard.errors import RequestRejected

    leaves = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=14)
              | st.sampled_from(["\x00", "a\x00", "\ud800", "x\udc00y"]))
    docs = st.recursive(leaves, lambda inner: st.lists(inner, max_size=5)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=16)

    def nest(depth: int, key: str) -> object:
        doc: object = 0
        for level in range(depth):
            doc = [doc] if level % 2 else {key: doc}
        return doc

    docs = docs | st.builds(nest, st.integers(1, 6), st.text(max_size=3))  # sure to reach every depth
    depth_and_escapes = LimitSettings(max_depth=3, max_string_length=10_000, max_array_length=10_000)
    arrays = LimitSettings(max_depth=64, max_string_length=10_000, max_array_length=3)
    taken: list[str] = []

    @settings(max_examples=600, deadline=None, derandomize=True, database=None)
    @given(docs, st.booleans(), st.sampled_from([depth_and_escapes, arrays]))
    def check(doc: object, ascii_only: bool, limits: LimitSettings) -> None:
        try:
            text = _json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass").decode("utf-8")
        except UnicodeDecodeError:
            return  # parse_json refuses these bytes before any limit is looked at
        if _within_by_size(text, limits):
            taken.append(text)
            try:
                _check_limits(_json.loads(text), limits)
            except RequestRejected as exc:  # pragma: no cover - the failure this test exists for
                raise AssertionError(f"fast path skipped a violation ({exc.limit})") from None

    check()
    assert len(taken) > 50, "the fast path was hardly taken: the test would prove little"

"""mlguard.testing: the JSON stand-in app reads chunked bodies and answers JSON with its length."""

from __future__ import annotations

from typing import Any

import pytest

from mlguard.testing import json_app

pytestmark = pytest.mark.anyio


async def test_json_app_reads_chunks_and_answers_json() -> None:
    seen: list[Any] = []
    app = json_app(lambda doc: seen.append(doc) or {"n": len(doc["items"])})
    chunks = [b'{"items": [1,', b" 2, 3]}"]
    sent: list[Any] = []

    async def receive() -> Any:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(msg: Any) -> None:
        sent.append(msg)

    await app({"type": "http"}, receive, send)
    assert seen == [{"items": [1, 2, 3]}]
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"content-length"] == b"8"
    assert sent[1]["body"] == b'{"n": 3}'

"""Core fixtures: a raw ASGI app that records what it received, wrapped by a guard with no heavy stages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard


class RecordingApp:
    """Answers JSON ``{"score": 0.7, "approved": true}`` and remembers every call's scope and body."""

    def __init__(self, response: dict[str, Any] | None = None, content_type: bytes = b"application/json") -> None:
        self.calls: list[dict[str, Any]] = []
        self.response = response if response is not None else {"score": 0.7, "approved": True}
        self.content_type = content_type

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        messages = []
        if scope["type"] == "http":
            while True:
                msg = await receive()
                messages.append(msg)
                body += msg.get("body", b"")
                if not msg.get("more_body", False):
                    break
        self.calls.append({"scope": scope, "body": body, "messages": messages, "receive": receive,
                           "send": send})
        payload = json.dumps(self.response).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", self.content_type),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    @property
    def called(self) -> bool:
        return bool(self.calls)

    def json(self, i: int = -1) -> Any:
        return json.loads(self.calls[i]["body"])


def base_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "policies": ["base"],
        "retention": {"max": "P3Y"},
        "audit": {"store": f"sqlite:///{tmp_path}/audit.db", "keyring": str(tmp_path / "k.keyring")},
        "routes": [{"path": "/predict", "methods": ["POST"], "subject": "$.applicant.id",
                    "protected": {"sex": "$.applicant.sex"},
                    "model": {"output": "$.score", "favorable": "$.approved"}}],
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture
def recording_app() -> RecordingApp:
    return RecordingApp()


@pytest.fixture
def make_guarded(tmp_path: Path) -> Callable[..., tuple[GuardMiddleware, RecordingApp]]:
    """Build (middleware, app) with only core stages (no PII/audit/explain/fairness engines)."""

    def _make(app: Any = None, stages: list[str] | None = None, **overrides: Any
              ) -> tuple[GuardMiddleware, RecordingApp]:
        inner = app or RecordingApp()
        guard = Guard(base_config(tmp_path, **overrides), stages=stages if stages is not None else [])
        return GuardMiddleware(inner, guard=guard), inner

    return _make


def client(asgi: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t")

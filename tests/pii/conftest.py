"""Fixtures of the PII tests: the engine loaded once per session, a deterministic keyring, a tiny ASGI app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mlguard.config.pii import PIIEngineSettings
from mlguard.keys import Keyring
from mlguard.pii.engine import PIIEngine, get_engine
from mlguard.testing import receive_body, send_json


@pytest.fixture(scope="session")
def engine() -> PIIEngine:
    """The real presidio + spaCy engine, built once for the whole session (about 1 s)."""
    return get_engine(PIIEngineSettings())


@pytest.fixture(scope="session")
def keyring() -> Keyring:
    return Keyring.from_seed(b"pii-tests-seed-material-0123456789abcdef")


class RecordingApp:
    """A raw ASGI app that records the JSON body it received and answers a fixed JSON document."""

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.bodies: list[Any] = []
        self.answer = answer if answer is not None else {"score": 0.4, "approved": False}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.bodies.append(json.loads(await receive_body(receive)))
        await send_json(send, self.answer)


@pytest.fixture
def recording_app() -> Iterator[RecordingApp]:
    yield RecordingApp()

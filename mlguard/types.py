"""ASGI type aliases and small shared value types.

Kept free of any framework import so that every layer may use it without pulling Starlette in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = Any
"""A parsed JSON document: dict, list, str, int, float, bool or None."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One PII detection. Holds where and what kind, never the value itself."""

    entity: str
    path: str
    start: int | None
    end: int | None
    recognizer: str
    score: float
    operator: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "path": self.path,
            "start": self.start,
            "end": self.end,
            "recognizer": self.recognizer,
            "score": round(self.score, 4),
            "operator": self.operator,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """The model's decision as read from the app's JSON response via the route's model binding."""

    score: float | None
    favorable: bool | None


@dataclass(frozen=True, slots=True)
class StageFailure:
    """A stage that raised. ``error`` is the exception class name and ``message`` its text, which our own
    errors keep free of input values; foreign exceptions are recorded by class name only."""

    stage: str
    phase: str
    error: str
    message: str

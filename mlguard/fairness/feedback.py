"""Ground truth arriving after the decision: ``POST {admin prefix}/feedback``.

Body: ``{"audit_id": "...", "label": true|false}`` or ``{"subject": "...", "label": ...}``; ``label`` is whether
the true outcome was the favourable one. Why a strict parser with its own messages: a malformed feedback must
answer 422 saying exactly what is wrong (and never echo the values sent), because a silently dropped label skews
every label-based metric.

Subjects are looked up through a keyed hash (a per-process random key), so the in-memory map holds no subject id.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass

MAX_ID_CHARS = 200


class FeedbackInvalid(ValueError):
    """The feedback body is malformed; the message names the field, never a value."""


@dataclass(frozen=True, slots=True)
class Feedback:
    audit_id: str | None
    subject: str | None
    label: bool


def parse_feedback(body: bytes) -> Feedback:
    """Validate a feedback body; raise FeedbackInvalid with a clear message."""
    try:
        doc = json.loads(body or b"")
    except (ValueError, RecursionError):
        raise FeedbackInvalid("body must be a JSON object") from None
    if not isinstance(doc, dict):
        raise FeedbackInvalid("body must be a JSON object")
    unexpected = sorted(set(doc) - {"audit_id", "subject", "label"})
    if unexpected:
        # member names are client-supplied text too: count them, never echo them
        raise FeedbackInvalid(f"{len(unexpected)} unexpected member(s); allowed: audit_id or subject, and label")
    if "label" not in doc:
        raise FeedbackInvalid("missing member: label (true or false)")
    label = doc["label"]
    if not isinstance(label, bool):
        raise FeedbackInvalid("label must be true or false")
    has_id, has_subject = "audit_id" in doc, "subject" in doc
    if has_id == has_subject:
        raise FeedbackInvalid("give exactly one of audit_id or subject")
    key = "audit_id" if has_id else "subject"
    value = doc[key]
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise FeedbackInvalid(f"{key} must be a non-empty string of at most {MAX_ID_CHARS} characters")
    return Feedback(value if has_id else None, value if has_subject else None, label)


class SubjectIndex:
    """Bounded map: keyed hash of a subject id -> its latest decision's audit id (oldest entries evicted)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._key = secrets.token_bytes(32)
        self._map: OrderedDict[bytes, str] = OrderedDict()

    def _h(self, subject: str) -> bytes:
        return hashlib.blake2b(subject.encode("utf-8", "replace"), key=self._key, digest_size=16).digest()

    def put(self, subject: str, audit_id: str) -> None:
        h = self._h(subject)
        self._map[h] = audit_id
        self._map.move_to_end(h)
        while len(self._map) > self.capacity:
            self._map.popitem(last=False)

    def get(self, subject: str) -> str | None:
        return self._map.get(self._h(subject))

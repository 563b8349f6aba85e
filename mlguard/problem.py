"""RFC 9457 problem+json responses. Details name limits and stages, never request content."""

from __future__ import annotations

import json

from mlguard.types import Send

PROBLEM_BASE = "https://mlguard.dev/problems/"


def problem_body(status: int, title: str, detail: str, type_suffix: str, instance: str | None = None,
                 **extra: object) -> bytes:
    doc: dict[str, object] = {"type": PROBLEM_BASE + type_suffix, "title": title, "status": status,
                              "detail": detail}
    if instance:
        doc["instance"] = f"urn:mlguard:audit:{instance}"
    doc.update(extra)
    return json.dumps(doc).encode()


async def send_problem(send: Send, status: int, title: str, detail: str, type_suffix: str, *,
                       instance: str | None = None, headers: list[tuple[bytes, bytes]] | None = None,
                       **extra: object) -> None:
    body = problem_body(status, title, detail, type_suffix, instance, **extra)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            *(headers or []),
        ],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})

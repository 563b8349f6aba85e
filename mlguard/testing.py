"""Small ASGI helpers for testing guarded apps: a JSON model app from a plain function, and body reading.

Why in the package: users testing their own guarded services, our tests and our benchmarks all need a tiny
stand-in model app; one tested helper serves all of them.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

from mlguard.types import ASGIApp, Receive, Scope, Send


async def receive_body(receive: Receive) -> bytes:
    """Read a whole HTTP request body from ``receive`` (no cap: for tests and trusted callers only)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return b"".join(chunks)


async def send_json(send: Send, doc: Any, status: int = 200) -> None:
    """Answer with ``doc`` as ``application/json``."""
    body = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def json_app(handler: Callable[[Any], Any]) -> ASGIApp:
    """A raw ASGI app that answers every HTTP request with ``handler(parsed request JSON)`` as JSON.

    >>> app = json_app(lambda doc: {"score": 0.5, "approved": doc.get("ok", False)})
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send_json(send, handler(json.loads(await receive_body(receive))))

    return app


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now, for a test or benchmark server started in a subprocess."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

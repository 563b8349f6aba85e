"""GuardMiddleware: the pure-ASGI entry point.

Why pure ASGI (no BaseHTTPMiddleware): unguarded traffic must cost nothing, so the first thing ``__call__``
does is hand through what it does not guard (lifespan, websocket, other paths, other methods) with the
original receive and send, untouched. Guarded requests get one Exchange each; nothing per-request lives on
``self``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlguard.admin import Admin
from mlguard.config import GuardConfig
from mlguard.exchange import Exchange
from mlguard.runtime import Guard
from mlguard.types import ASGIApp, Message, Receive, Scope, Send


class GuardMiddleware:
    """Wrap ``app`` with the guard described by ``config`` (a path to mlguard.yaml, a GuardConfig or a dict).

    Works as ``app.add_middleware(GuardMiddleware, config=...)`` in Starlette and FastAPI, and as a plain
    wrapper: ``app = GuardMiddleware(app, config="mlguard.yaml")``. Pass ``guard=`` to share one built Guard.
    """

    def __init__(self, app: ASGIApp, config: str | Path | GuardConfig | dict[str, Any] | None = None, *,
                 guard: Guard | None = None) -> None:
        if guard is None:
            if config is None:
                raise TypeError("GuardMiddleware needs config= (a path, GuardConfig or dict) or guard=")
            guard = Guard(config)
        self.app = app
        self.guard = guard
        self.admin = Admin(guard) if guard.config.admin.enabled else None
        self._table = guard.table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, self._lifespan_send(send))
                return
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = self._table.match(scope["method"], path)
        if route is None:
            if self.admin is not None and self.admin.handles(path):
                await self.admin(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        await Exchange(self.guard, route, scope).run(self.app, receive, send)

    def _lifespan_send(self, send: Send) -> Send:
        """Forward the app's lifespan messages unchanged; before the server hears that shutdown is complete,
        close the guard's stages (drain the audit queue, sign a final checkpoint)."""

        async def _send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.guard.aclose()
            await send(message)

        return _send

"""GuardMiddleware: the pure-ASGI entry point.

Why pure ASGI (no BaseHTTPMiddleware): unguarded traffic must cost nothing, so the first thing ``__call__``
does is hand through what it does not guard (lifespan, websocket, other paths, other methods) with the
original receive and send, untouched. Guarded requests get one Exchange each; nothing per-request lives on
``self``. Every guarded exchange is counted exactly once in the guard's metrics (``GuardMetrics.observe``)
after it has ended, whatever its outcome: served, refused, rejected, failed or abandoned by the client.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlguard.admin import Admin
from mlguard.config import GuardConfig
from mlguard.exchange import Exchange
from mlguard.metrics import GuardMetrics, running_asyncio_loop
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
        self._metrics = GuardMetrics.of(guard)

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
        ex = Exchange(self.guard, route, scope)
        timed = _TimedApp(self.app)
        try:
            await ex.run(timed, receive, send)
        except BaseException as exc:
            self._metrics.observe(ex, timed.seconds, exc)
            raise
        self._metrics.observe(ex, timed.seconds)

    def _lifespan_send(self, send: Send) -> Send:
        """Forward the app's lifespan messages unchanged. At startup, start spooling metrics when several workers
        share them (``admin.metrics_dir``); before the server hears that shutdown is complete, close the guard's
        stages (drain the audit queue, sign a final checkpoint), then write the last metrics."""

        async def _send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self._metrics.bind(running_asyncio_loop())
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.guard.aclose()
                self._metrics.close()
            await send(message)

        return _send


class _TimedApp:
    """The wrapped app, timed: the metrics subtract its time from the exchange's to give the guard's overhead.

    Why here and not in the Exchange: the Exchange knows nothing of metrics; one small object per guarded
    request (two clock reads) is what the overhead histogram costs.
    """

    __slots__ = ("app", "seconds")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seconds = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.seconds = time.perf_counter() - t0

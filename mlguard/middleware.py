"""GuardMiddleware: the pure-ASGI entry point.

Why pure ASGI (no BaseHTTPMiddleware): unguarded traffic must cost nothing, so the first thing ``__call__``
does is hand through what it does not guard (lifespan, websocket, other paths, other methods) with the
original receive and send, untouched. Guarded requests get one Exchange each; nothing per-request lives on
``self``. Every guarded exchange is counted exactly once in the guard's metrics (``GuardMetrics.observe``)
after it has ended, whatever its outcome: served, refused, rejected, failed or abandoned by the client.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anyio

from mlguard.admin import Admin
from mlguard.config import GuardConfig
from mlguard.exchange import Exchange
from mlguard.metrics import GuardMetrics, running_asyncio_loop
from mlguard.routes import route_path
from mlguard.runtime import Guard
from mlguard.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("mlguard.middleware")


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
        self._use(guard)

    def _use(self, guard: Guard) -> None:
        self.guard = guard
        self.admin = Admin(guard) if guard.config.admin.enabled else None
        self._table = guard.table
        self._metrics = GuardMetrics.of(guard)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
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

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app's lifespan, with the guard's own start and close hooked on its messages. An app that does
        not speak lifespan (a raw ASGI callable that raises on the scope type) gets the guard's instead.

        Why take it over: the server, told the protocol is unsupported, never says it is shutting down, so the
        guard was never closed: the audit queue was not drained and no final checkpoint was signed (``audit
        verify`` then said the last records were "not yet signed"). Only an error before the app has answered
        the startup, or a return without one (``if scope["type"] != "http": return``), is taken as "unsupported",
        as uvicorn's default (lifespan auto) takes it; later errors, and an app's own startup.failed, are the
        app's."""
        state = {"received": 0, "answered": False}

        async def counted_receive() -> Message:
            message = await receive()
            state["received"] += 1
            return message

        guarded_send = self._lifespan_send(send)

        async def answered_send(message: Message) -> None:
            if str(message.get("type", "")).startswith("lifespan.startup."):
                state["answered"] = True
            await guarded_send(message)

        try:
            await self.app(scope, counted_receive, answered_send)
        except Exception as exc:
            if state["answered"]:
                raise
            log.info("the app does not support lifespan: the guard runs its own",
                     extra={"error": type(exc).__name__})
        else:
            if state["answered"]:
                return
            log.info("the app does not support lifespan: the guard runs its own")
        if not state["received"]:
            await receive()  # lifespan.startup, not read by the app
        await guarded_send({"type": "lifespan.startup.complete"})
        message = await receive()  # lifespan.shutdown
        if message.get("type") == "lifespan.shutdown":
            await guarded_send({"type": "lifespan.shutdown.complete"})

    def _lifespan_send(self, send: Send) -> Send:
        """Forward the app's lifespan messages unchanged. At startup, start spooling metrics when several workers
        share them (``admin.metrics_dir``); before the server hears that shutdown is complete, close the guard's
        stages (drain the audit queue, sign a final checkpoint), then write the last metrics."""

        async def _send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                if self.guard.closed:  # a lifespan run again after its shutdown closed the guard: build anew
                    self._use(await anyio.to_thread.run_sync(self.guard.reopen))
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

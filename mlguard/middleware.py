"""GuardMiddleware: the pure-ASGI entry point.

Why pure ASGI (no BaseHTTPMiddleware): unguarded traffic must cost nothing, so the first thing ``__call__``
does is hand through what it does not guard (lifespan, websocket, other paths, other methods) with the
original receive and send, untouched. Guarded requests get one Exchange each; nothing per-request lives on
``self``. Every guarded exchange is counted exactly once in the guard's metrics (``GuardMetrics.observe``)
after it has ended, whatever its outcome: served, refused, rejected, failed or abandoned by the client.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import anyio

from mlguard.admin import Admin
from mlguard.config import GuardConfig
from mlguard.coverage import check_route_coverage
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
        self._coverage_checked = False
        self._reopen_lock = threading.Lock()
        self._successor: tuple[weakref.ref[Guard], weakref.ref[Guard]] | None = None
        self._use(guard)

    def _use(self, guard: Guard) -> None:
        self.guard = guard
        self.admin = Admin(guard) if guard.config.admin.enabled else None
        self._table = guard.table
        self._metrics = GuardMetrics.of(guard)
        self._closed_by_shutdown = False  # set when the app's lifespan shutdown closes this guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if not self._coverage_checked:  # no lifespan came first (httpx's ASGITransport, TestClient without with)
            self._check_coverage()
        path = route_path(scope)
        route = self._table.match(scope["method"], path, scope.get("headers", ()))
        if route is None:
            if self.admin is not None and self.admin.handles(path):
                await self.admin(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if self._closed_by_shutdown:
            await self._reopen_after_shutdown()
            # the same route, compiled by the new guard
            route = self._table.match(scope["method"], path, scope.get("headers", ()))
            if route is None:  # pragma: no cover - the reopened guard has the same configuration
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

    def _check_coverage(self) -> None:
        """Warn about each guarded route that matches no route of the wrapped app (:mod:`mlguard.coverage`), once.

        Why at the lifespan startup, or the first request without one, and not in ``__init__``: routers are
        often included after the middleware is added, and ``app.add_middleware`` builds the guard before the
        app has finished starting. Never raises: an app we cannot read must still start."""
        self._coverage_checked = True
        try:
            check_route_coverage(self.app, self._table.routes)
        except Exception as exc:
            log.debug("route coverage not checked", extra={"error": type(exc).__name__})

    async def _reopen_after_shutdown(self) -> None:
        """Replace the guard that the app's lifespan shutdown closed with a new one built as it was (once,
        however many guarded requests arrive together), for a request that came after the shutdown.

        Why: a test suite runs ``with TestClient(app)`` in one test (its exit runs the lifespan shutdown, which
        drains and closes the audit writer) and then reaches the same app without a lifespan (``TestClient(app)``
        without ``with``, ``httpx.ASGITransport(app)``): every guarded request was refused 503 (fail_closed) or
        served with no audit record (fail_open). Only a guard closed by a lifespan shutdown is reopened (one
        closed by its owner's ``aclose()`` stays closed).

        Why this is safe in production: a server sends no request after the lifespan shutdown it ran (uvicorn
        stops accepting and drains connections first), so this never runs there. What it costs when it runs:
        the first guarded request after the shutdown waits for a full build (seconds with PII or explain stages),
        done in a worker thread so the event loop keeps serving, and requests arriving meanwhile wait on the
        lock; and the new guard is closed only by a later lifespan shutdown: under a client without lifespan its
        audit writer is never drained and its last records stay unsigned until the next start. The build is
        under a thread lock, not an event-loop lock, because such clients run each request on a loop of its
        own."""
        closed = self.guard
        fresh = await anyio.to_thread.run_sync(self._successor_of, closed)
        if self.guard is closed:  # this loop has not switched yet (another request may have)
            self._use(fresh)
            self._metrics.bind(running_asyncio_loop())

    def _successor_of(self, closed: Guard) -> Guard:
        """The guard that replaces ``closed``: built by the first caller, returned to the others (worker thread)."""
        with self._reopen_lock:
            known = self._successor
            if known is not None and known[0]() is closed:
                fresh = known[1]()
                if fresh is not None:
                    return fresh
            fresh = closed.reopen()
            self._successor = (weakref.ref(closed), weakref.ref(fresh))
            log.info("the guard was closed by the app's lifespan shutdown; reopened for a request that came after it")
            return fresh

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
                if not self._coverage_checked:  # the app's routes are all added by now
                    self._check_coverage()
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.guard.aclose()
                self._metrics.close()
                self._closed_by_shutdown = True  # a request after this reopens it (_reopen_after_shutdown)
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

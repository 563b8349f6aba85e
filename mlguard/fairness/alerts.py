"""Fairness alerts: a structured log line and a webhook POST, on every change of a route's status.

Why on changes only: a window that stays in "warn" for an hour would otherwise send a webhook per decision.
Why a background task: the webhook may be slow or down; the decision being served must not wait for it. The POST
has a timeout and is retried with exponential backoff; a final failure is logged (without the payload).

What an alert carries: route path, status, whether the route is halted (and by which stops), metric names and
values, group category keys. Never an input value.

Why the log line says it in its message: under a plain text formatter (``uvicorn`` without mlguard's JSON
formatter) the ``extra`` fields are not printed, and "fairness status changed" alone tells an operator nothing.
The message holds the route path (the configured template), the previous and new status, the breached metrics
by dimension (attribute names from the config) and the halt: no group name, no value.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("mlguard.fairness.alerts")


class AlertSink:
    """Sends alerts; ``pending`` holds the running webhook tasks (so they are not garbage-collected)."""

    def __init__(self, webhook: str | None, *, timeout_s: float = 5.0, retries: int = 3,
                 backoff_s: float = 0.5, transport: Any = None) -> None:
        self.webhook = webhook
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.transport = transport  # an httpx transport (tests); None: the network
        self.pending: set[asyncio.Task[bool]] = set()
        self.sent = 0
        self.failed = 0

    def emit(self, payload: dict[str, Any]) -> None:
        """Log the alert and schedule the webhook POST (if configured). Never raises."""
        level = logging.ERROR if payload.get("status") == "violation" else logging.WARNING
        message, args = _message(payload)
        log.log(level, message, *args, extra={"fairness_alert": payload})
        if self.webhook is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._post(self.webhook, payload))
        except RuntimeError:  # no running loop (called from sync code): log only
            return
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _post(self, url: str, payload: dict[str, Any]) -> bool:
        import httpx

        delay = self.backoff_s
        async with httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport) as client:
            for attempt in range(self.retries + 1):
                try:
                    resp = await client.post(url, json=payload)
                    if resp.status_code < 500 and resp.status_code != 429:
                        self.sent += 1
                        if resp.status_code >= 400:
                            log.warning("fairness webhook refused the alert", extra={"status": resp.status_code})
                        return resp.status_code < 400
                except httpx.HTTPError as exc:
                    log.warning("fairness webhook failed", extra={"error": type(exc).__name__,
                                                                  "attempt": attempt + 1})
                if attempt < self.retries:
                    await asyncio.sleep(delay)
                    delay *= 2
        self.failed += 1
        log.error("fairness webhook gave up", extra={"attempts": self.retries + 1})
        return False

    async def drain(self) -> None:
        """Wait for pending webhook POSTs (tests, shutdown)."""
        if self.pending:
            await asyncio.gather(*list(self.pending), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self.pending):
            task.cancel()
        await self.drain()


def _message(payload: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The log message (template and arguments) of an alert: what happened, readable without ``extra``.

    >>> template, args = _message({"route": "/screen", "previous": "ok", "status": "violation",
    ...     "halted": True, "stopped_by": ["fairness"], "summary": {"breaches": ["impact_ratio:race"]}})
    >>> print(template % args)  # doctest: +NORMALIZE_WHITESPACE
    fairness status changed on route /screen: ok -> violation; breaches: impact_ratio:race;
    route halted (stopped by fairness)
    """
    summary = payload.get("summary")
    breaches = summary.get("breaches") if isinstance(summary, dict) else None
    breached = f"; breaches: {', '.join(str(b) for b in breaches)}" if breaches else ""
    stopped = payload.get("stopped_by") or []
    halted = (f"; route halted (stopped by {' and '.join(str(c) for c in stopped)})" if payload.get("halted")
              else "")
    return ("fairness status changed on route %s: %s -> %s%s%s",
            (payload.get("route"), payload.get("previous"), payload.get("status"), breached, halted))

"""Fairness alerts: a structured log line and a webhook POST, on every change of a route's status.

Why on changes only: a window that stays in "warn" for an hour would otherwise send a webhook per decision.
Why a background task: the webhook may be slow or down; the decision being served must not wait for it. The POST
has a timeout and is retried with exponential backoff; a final failure is logged (without the payload).

What an alert carries: route path, status, metric names and values, group category keys. Never an input value.
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
        log.log(level, "fairness status changed", extra={"fairness_alert": payload})
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

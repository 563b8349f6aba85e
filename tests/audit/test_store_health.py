"""``{admin}/health`` reflects an audit store that does not take writes: 503 (``unavailable``) when a route is
fail_closed, so a load balancer takes the instance out of service; 200 ``degraded`` when every route is
fail_open; back to 200 ``ok`` once writes succeed again, found by the writer itself without any traffic."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.testing import json_app

PLANTED = "Leocadia Vanderspuy"
model_app = json_app(lambda doc: {"score": 0.7})


def guard_with(tmp_path: Path, mode: str) -> Guard:
    guard = Guard({"policies": ["base"], "base_dir": str(tmp_path),
                   "audit": {"store": "sqlite:///./audit.db", "keyring": "./k.keyring", "lock_timeout": 0.3},
                   "routes": [{"path": "/predict", "subject": "$.id", "model": {"output": "$.score"}}]},
                  stages=["audit"])
    route = guard.table.routes[0]
    route.policy = route.policy.model_copy(update={"failure_mode": mode})
    return guard


async def until_ok(client: httpx.AsyncClient, seconds: float = 10.0) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        r = await client.get("/mlguard/health")
        if r.json()["status"] == "ok" or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.05)


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "down_status", "down_word", "request_status"),
                         [("fail_closed", 503, "unavailable", 503), ("fail_open", 200, "degraded", 200)])
async def test_health_follows_the_audit_store(tmp_path: Path, mode: str, down_status: int, down_word: str,
                                              request_status: int) -> None:
    guard = guard_with(tmp_path, mode)
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        ok = await client.get("/mlguard/health")
        assert ok.status_code == 200 and ok.json()["status"] == "ok" and ok.json()["failing"] == {}
        holder = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the store takes no writes
        try:
            r = await client.post("/predict", json={"id": "s", "name": PLANTED})
            assert r.status_code == request_status
            down = await client.get("/mlguard/health")
            assert down.status_code == down_status
            doc = down.json()
            assert doc["status"] == down_word and down.headers["content-type"] == "application/json"
            assert set(doc["failing"]) == {"audit"} and doc["failing"]["audit"]["error"]
            assert doc["failing"]["audit"]["failing_seconds"] >= 0
            assert PLANTED not in down.text
            await asyncio.sleep(1.5)  # the writer's probes keep failing while the lock is held
            assert (await client.get("/mlguard/health")).status_code == down_status
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # no request in between: the writer finds out by itself that the store is back
        back = await until_ok(client)
        assert back.status_code == 200 and back.json()["status"] == "ok", back.text
    await guard.aclose()


@pytest.mark.anyio
async def test_health_reads_a_flag_not_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Health is polled often; answering it must not query the store (one that struggles least of all)."""
    guard = guard_with(tmp_path, "fail_closed")
    stage: Any = guard.stages[0]

    def no_query(*a: Any, **k: Any) -> Any:
        raise AssertionError("health queried the store")

    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        with monkeypatch.context() as m:
            for name in ("head", "count", "checkpoints", "public_keys", "write"):
                m.setattr(stage.store, name, no_query)
            r = await client.get("/mlguard/health")
        assert r.status_code == 200 and r.json()["status"] == "ok" and "failing" in r.json()
    await guard.aclose()

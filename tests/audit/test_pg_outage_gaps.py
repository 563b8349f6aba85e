"""PostgreSQL stopped mid-load under fail_closed (sync durability): health answers 503 while it is down and
200 once it is back, and a gap record written after the outage lists every refused exchange (the ops report:
503s and nothing recorded later). Through a TCP proxy this test owns (tests/audit/test_pg_outage.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from mlguard.audit.reader import AuditReader
from mlguard.audit.verify import verify_log
from mlguard.keys import Keyring
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.testing import json_app
from tests.audit.test_pg_outage import CuttableProxy

model_app = json_app(lambda doc: {"score": 0.7})


@pytest.fixture
def proxied(pg_store_url: str) -> Iterator[tuple[str, CuttableProxy]]:
    parts = urlsplit(pg_store_url)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = (f"{parts.username}@" if parts.username else "") + f"127.0.0.1:{proxy.port}"
    yield urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), proxy
    proxy.cut()


@pytest.mark.postgres
@pytest.mark.anyio
async def test_postgres_down_refusals_gap_and_health(tmp_path: Path, proxied: tuple[str, CuttableProxy]) -> None:
    url, proxy = proxied
    Keyring.create(tmp_path / "k.keyring")
    guard = Guard({"policies": ["base"], "base_dir": str(tmp_path),
                   "audit": {"store": url, "keyring": "./k.keyring", "durability": "sync"},
                   "routes": [{"path": "/p", "subject": "$.id", "model": {"output": "$.score"}}]}, stages=["audit"])
    route = guard.table.routes[0]
    route.policy = route.policy.model_copy(update={"failure_mode": "fail_closed"})
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        served = [(await client.post("/p", json={"id": f"a{i}"})) for i in range(3)]
        assert {r.status_code for r in served} == {200}
        proxy.cut()
        down = [(await client.post("/p", json={"id": f"b{i}"})) for i in range(4)]
        assert {r.status_code for r in down} == {503}
        health = await client.get("/mlguard/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert "audit" in health.json()["failing"]
        proxy.restore()
        deadline = time.monotonic() + 30
        while (health := await client.get("/mlguard/health")).status_code != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert health.status_code == 200 and health.json()["status"] == "ok"  # no request needed to find out
    await guard.aclose()

    refused = {r.headers["mlguard-audit-id"] for r in down}
    reader = AuditReader(url, tmp_path / "k.keyring")
    try:
        gaps: list[dict[str, Any]] = [reader.decode(r) for r in reader.store.iter_rows(kind="gap")]
        assert gaps and all(g["data"]["client"] == "refused" for g in gaps)
        assert sorted(a for g in gaps for a in g["data"]["audit_ids"]) == sorted(refused)
        assert sum(g["data"]["reasons"].get("store_error", 0) for g in gaps) == len(refused)
        assert all(reader.get(r.headers["mlguard-audit-id"]) is not None for r in served)
        s = reader.store
        assert verify_log(s.iter_rows(), head=s.head(), checkpoints=s.checkpoints(), public_keys=s.public_keys()).ok
    finally:
        reader.store.close()

"""PostgreSQL stopped mid-load under fail_closed (sync durability): health answers 503 while it is down and
200 once it is back, and a gap record written after the outage lists every refused exchange (the ops report:
503s and nothing recorded later). Through a TCP proxy this test owns (tests/audit/test_pg_outage.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.audit.reader import AuditReader
from mlguard.audit.verify import verify_log
from mlguard.middleware import GuardMiddleware
from mlguard.testing import json_app
from tests.audit.test_pg_outage import CuttableProxy, fail_closed_guard

model_app = json_app(lambda doc: {"score": 0.7})


@pytest.mark.postgres
@pytest.mark.anyio
async def test_postgres_down_refusals_gap_and_health(tmp_path: Path, proxied_url: tuple[str, CuttableProxy]) -> None:
    url, proxy = proxied_url
    guard = fail_closed_guard(tmp_path, url)
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

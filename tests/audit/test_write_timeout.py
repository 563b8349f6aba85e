"""A store that takes a write and never answers (a stopped server, hung storage) holds no request for ever:
after ``audit.write_timeout`` the batch in its hands is answered by the policy's failure_mode (its outcome
unknown: ``writer_error``), everything queued behind it and everything submitted while it stays stalled is
refused at once (``store_timeout``), health says ``StoreTimeout``; once the store answers, writes go on and the
gap record lists every refused id.

Why: the wait on the store had no bound; a PostgreSQL server alive on the network but not answering (TCP
keepalives and the user timeout do not fire: its kernel acknowledges) kept every sync request waiting.
The store's write is made to hang here by holding it on an event inside its transaction; tests/audit/
test_pg_outage.py does the same to a real PostgreSQL through a proxy that stops forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.audit.reader import AuditReader
from mlguard.config import load_config
from mlguard.errors import ConfigError
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.testing import json_app

PLANTED = "Wilhelmina Stalloway"
model_app = json_app(lambda doc: {"score": 0.7})


class Hang:
    """Makes a store's write transactions wait on ``release`` while ``on`` is set (the store "not answering")."""

    def __init__(self, store: Any) -> None:
        self.on = threading.Event()
        self.release = threading.Event()
        self.entered = threading.Event()
        real = store.write

        @contextlib.contextmanager
        def write() -> Iterator[Any]:
            with real() as tx:
                if self.on.is_set():
                    self.entered.set()
                    self.release.wait(30)
                yield tx

        store.write = write


def guard_with(tmp_path: Path, mode: str = "fail_closed") -> Guard:
    guard = Guard({"policies": ["base"], "base_dir": str(tmp_path), "log_level": "DEBUG",
                   "audit": {"store": "sqlite:///./audit.db", "keyring": "./k.keyring", "lock_timeout": 0.2,
                             "write_timeout": 0.5},
                   "routes": [{"path": "/predict", "subject": "$.id", "pii": {"$.name": "PERSON"},
                               "model": {"output": "$.score"}}]},
                  stages=["audit"])
    route = guard.table.routes[0]
    route.policy = route.policy.model_copy(update={"failure_mode": mode})
    return guard


@pytest.mark.anyio
async def test_a_store_that_stops_answering_is_bounded_and_recovers(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    guard = guard_with(tmp_path)
    stage: Any = guard.stages[0]
    hang = Hang(stage.store)
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        def post(i: int) -> Any:
            return client.post("/predict", json={"id": f"s{i}", "name": PLANTED})

        assert (await post(0)).status_code == 200
        hang.on.set()
        t0 = time.monotonic()
        in_flight = asyncio.ensure_future(post(1))
        assert await asyncio.to_thread(hang.entered.wait, 5)  # its transaction is in the store's hands
        queued = asyncio.ensure_future(post(2))  # behind it
        first, behind = await asyncio.wait_for(asyncio.gather(in_flight, queued), 10)
        waited = time.monotonic() - t0
        assert 0.5 <= waited < 5, waited
        for r in (first, behind):
            assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
            assert PLANTED not in r.text
        t1 = time.monotonic()
        later = await post(3)  # while stalled: refused at once, not after another timeout
        assert later.status_code == 503 and time.monotonic() - t1 < 0.4
        health = await client.get("/mlguard/health")
        assert health.status_code == 503 and health.json()["failing"]["audit"]["error"] == "StoreTimeout"

        hang.on.clear()
        hang.release.set()  # the store answers again: the stuck transaction ends, writes go on
        deadline = time.monotonic() + 10
        while (await client.get("/mlguard/health")).json()["status"] != "ok" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        again = await post(4)
        assert again.status_code == 200
    await guard.aclose()

    reader = AuditReader(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "k.keyring")
    try:
        ids = {r.headers["mlguard-audit-id"]: i for i, r in ((1, first), (2, behind), (3, later), (4, again))}
        records = list(reader.iter_records())
    finally:
        reader.store.close()
    exchanges = {r["audit_id"] for r in records if r["kind"] == "exchange"}
    listed: set[int] = set()
    reasons: dict[str, int] = {}
    for r in records:
        if r["kind"] == "gap":
            assert r["data"]["client"] == "refused"
            listed |= {ids[a] for a in r["data"]["audit_ids"]}
            for reason, n in r["data"]["reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + n
    assert listed == {1, 2, 3}
    assert reasons == {"writer_error": 1, "store_timeout": 2}  # 1: outcome unknown; 2 and 3: never sent
    on_disk = {ids[a] for a in exchanges if a in ids}
    assert on_disk == {1, 4}  # the stuck batch committed once the store answered; the refused ones never sent
    assert PLANTED not in caplog.text


def test_write_timeout_must_exceed_lock_timeout() -> None:
    with pytest.raises(ConfigError, match=r"audit.write_timeout \(5 s\) must exceed audit.lock_timeout \(30 s\)"):
        load_config({"audit": {"write_timeout": 5}})
    assert load_config({"audit": {"lock_timeout": 90}}).audit.write_timeout == 120  # unset: follows it up
    assert load_config({}).audit.write_timeout == 60

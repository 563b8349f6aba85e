"""Exchanges refused under fail_closed because their record could not be written are accounted for: once the
store takes writes again a gap record lists their audit ids (reason, and that the client was refused), the
gaps metric counts them, and the log verifies. Before, only fail_open's served exchanges were listed, and a
503's MLGuard-Audit-Id led to nothing."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.audit.reader import AuditReader
from mlguard.audit.store.base import AuditStore, open_store
from mlguard.audit.verify import verify_log
from mlguard.metrics import render
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.testing import json_app

PLANTED = "Philippa Quenneville-Ostrander"
model_app = json_app(lambda doc: {"score": 0.7, "approved": True})


def config(tmp_path: Path, **audit: Any) -> dict[str, Any]:
    return {"policies": ["base"], "base_dir": str(tmp_path),
            "audit": {"store": "sqlite:///./audit.db", "keyring": "./k.keyring", **audit},
            "routes": [{"path": "/predict", "subject": "$.id", "pii": {"$.name": "PERSON"},
                        "model": {"output": "$.score"}}]}


def fail_closed(guard: Guard) -> Guard:
    route = guard.table.routes[0]
    route.policy = route.policy.model_copy(update={"failure_mode": "fail_closed"})
    return guard


def gap_records(tmp_path: Path) -> list[dict[str, Any]]:
    reader = AuditReader(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "k.keyring")
    try:
        return [reader.decode(r) for r in reader.store.iter_rows(kind="gap")]
    finally:
        reader.store.close()


async def wait_for_gaps(tmp_path: Path, seconds: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gaps := gap_records(tmp_path):
            return gaps
        await asyncio.sleep(0.05)
    return []


def gaps_metric(guard: Guard) -> float:
    m = re.search(rb"^mlguard_audit_gaps_total ([0-9.e+]+)$", render(guard.context.shared), re.M)
    assert m is not None
    return float(m.group(1))


def verified(store: AuditStore) -> bool:
    return verify_log(store.iter_rows(), head=store.head(), checkpoints=store.checkpoints(),
                      public_keys=store.public_keys()).ok


@contextmanager
def write_lock_held(tmp_path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock: the store cannot take writes until the block ends."""
    holder = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.anyio
async def test_async_queue_full_refusals_are_listed_in_a_gap_record(tmp_path: Path) -> None:
    """The ops report: async durability, queue_size 2, a burst of concurrent requests under fail_closed. The
    writer is held up by the store's write lock, so the queue fills and the burst's tail is refused (503)
    after the app ran."""
    guard = fail_closed(Guard(config(tmp_path, durability="async", queue_size=2), stages=["audit"]))
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/predict", json={"id": "s", "name": PLANTED})).status_code == 200
        with write_lock_held(tmp_path):
            burst = await asyncio.gather(*(client.post("/predict", json={"id": f"s{i}", "name": PLANTED})
                                           for i in range(200)))
        refused = {r.headers["mlguard-audit-id"] for r in burst if r.status_code == 503}
        served = {r.headers["mlguard-audit-id"] for r in burst if r.status_code == 200}
        assert refused and served and len(refused) + len(served) == 200
        gaps = await wait_for_gaps(tmp_path)  # written once the store takes writes again, without a restart
    await guard.aclose()

    assert gaps, "no gap record for the refused exchanges"
    assert all(g["data"]["client"] == "refused" for g in gaps)
    assert {a for g in gaps for a in g["data"]["audit_ids"]} == refused
    assert sum(g["data"]["reasons"].get("queue_full", 0) for g in gaps) == len(refused)
    assert gaps_metric(guard) == len(refused)
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    try:
        assert all(store.get_row(a) is not None for a in served)
        assert all(store.get_row(a) is None for a in refused)
        assert verified(store)
    finally:
        store.close()
    assert PLANTED not in str(gaps)


@pytest.mark.anyio
async def test_sync_store_failure_refusals_are_listed_once_the_store_is_back(tmp_path: Path) -> None:
    """Sync durability: the store cannot take writes (its lock held elsewhere past ``lock_timeout``), so each
    request is refused (503) after the app ran. Once the store is back, with no further traffic, a gap record
    (reason ``store_error``, client ``refused``) lists every refused id."""
    guard = fail_closed(Guard(config(tmp_path, lock_timeout=0.3), stages=["audit"]))
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        served = await client.post("/predict", json={"id": "s", "name": PLANTED})
        assert served.status_code == 200
        with write_lock_held(tmp_path):
            down = await asyncio.gather(*(client.post("/predict", json={"id": f"s{i}", "name": PLANTED})
                                          for i in range(5)))
        assert {r.status_code for r in down} == {503}
        refused = {r.headers["mlguard-audit-id"] for r in down}
        gaps = await wait_for_gaps(tmp_path)
        assert gaps, "no gap record once the store was back"
        assert (await client.post("/predict", json={"id": "t", "name": PLANTED})).status_code == 200
    await guard.aclose()

    gaps = [g["data"] for g in gap_records(tmp_path)]  # one per write attempt that found ids waiting
    assert gaps and all(d["client"] == "refused" and set(d["reasons"]) == {"store_error"} for d in gaps)
    assert sum(d["count"] for d in gaps) == 5 and not any(d["truncated"] for d in gaps)
    assert sorted(a for d in gaps for a in d["audit_ids"]) == sorted(refused)
    assert gaps_metric(guard) == 5
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    try:
        assert store.get_row(served.headers["mlguard-audit-id"]) is not None
        assert verified(store)
    finally:
        store.close()
    assert PLANTED not in str(gaps)


@pytest.mark.anyio
async def test_fail_open_gap_says_served(tmp_path: Path) -> None:
    """fail_open keeps listing its served exchanges, now saying so (``client: served``) beside the refused."""
    guard = Guard(config(tmp_path, lock_timeout=0.3), stages=["audit"])
    route = guard.table.routes[0]
    route.policy = route.policy.model_copy(update={"failure_mode": "fail_open"})
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        with write_lock_held(tmp_path):
            r = await client.post("/predict", json={"id": "s", "name": PLANTED})
        assert r.status_code == 200
    await guard.aclose()
    gaps = gap_records(tmp_path)
    assert [g["data"]["client"] for g in gaps] == ["served"]
    assert gaps[0]["data"]["audit_ids"] == [r.headers["mlguard-audit-id"]]
    assert gaps[0]["data"]["reasons"] == {"store_error": 1}


def test_many_gaps_are_listed_over_several_records_and_memory_is_bounded(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every id held is listed (several records of GAP_IDS, one transaction), none silently cut at the first
    record's limit; past GAP_MEMORY ids (a long outage) the rest are counted and the record says truncated."""
    from mlguard.audit import writer as writer_mod
    from mlguard.audit.writer import AuditWriter
    from mlguard.keys import Keyring

    monkeypatch.setattr(writer_mod, "GAP_IDS", 10)
    monkeypatch.setattr(writer_mod, "GAP_MEMORY", 25)
    keys = Keyring.create(tmp_path / "k.keyring")
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    w = AuditWriter(store, keys)
    w.start()
    for i in range(3):
        w.note_gap(f"served-{i}", "queue_full")
    for i in range(30):
        w.note_gap(f"refused-{i}", "store_error" if i % 2 else "queue_full", refused=True)
    w.close()
    gaps = gap_records(tmp_path)
    served = [g["data"] for g in gaps if g["data"]["client"] == "served"]
    refused = [g["data"] for g in gaps if g["data"]["client"] == "refused"]
    assert served == [{"count": 3, "audit_ids": ["served-0", "served-1", "served-2"],
                       "reasons": {"queue_full": 3}, "client": "served", "truncated": False}]
    assert [len(d["audit_ids"]) for d in refused] == [10, 10, 2]
    assert [a for d in refused for a in d["audit_ids"]] == [f"refused-{i}" for i in range(22)]
    assert sum(d["count"] for d in refused) == 30 and [d["truncated"] for d in refused] == [False, False, True]
    assert w.stats["gaps"] == 33
    assert verified(store)
    store.close()


async def streaming_app(scope: Any, receive: Any, send: Any) -> None:
    """An app answering with a body in two parts (more_body): the guard streams it through uninspected."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": False})


@pytest.mark.anyio
async def test_a_streamed_response_whose_record_failed_is_a_served_gap_under_fail_closed(tmp_path: Path) -> None:
    """A response streamed through has reached its client before the record is written, so nothing can refuse it:
    its gap must say ``served``. It said ``refused`` under fail_closed, so the trail understated what left."""
    guard = fail_closed(Guard(config(tmp_path, lock_timeout=0.3), stages=["audit"]))
    app = GuardMiddleware(streaming_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/predict", json={"id": "s", "name": PLANTED})).status_code == 200
        with write_lock_held(tmp_path):
            streamed = await client.post("/predict", json={"id": "s1", "name": PLANTED})
        assert streamed.status_code == 200 and streamed.text == "data: 1\n\ndata: 2\n\n"
        gaps = await wait_for_gaps(tmp_path)
    await guard.aclose()
    assert [g["data"]["client"] for g in gaps] == ["served"]
    assert [a for g in gaps for a in g["data"]["audit_ids"]] == [streamed.headers["mlguard-audit-id"]]
    assert PLANTED not in str(gaps)

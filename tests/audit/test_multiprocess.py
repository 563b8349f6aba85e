"""Several processes append to one log (SQLite and PostgreSQL); PostgreSQL connections heal by themselves."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlguard.audit.record import Pending, canonical, iso
from mlguard.audit.store.base import AuditStore, open_store
from mlguard.audit.verify import verify_log
from mlguard.audit.writer import AuditWriter
from mlguard.errors import AuditUnavailable
from mlguard.keys import Keyring

CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from mlguard.audit.record import Pending, canonical, iso
    from mlguard.audit.stage import append_durably
    from mlguard.audit.store.base import open_store
    from mlguard.audit.writer import AuditWriter
    from mlguard.keys import Keyring

    w = AuditWriter(open_store(sys.argv[1]), Keyring.from_seed(b"multi-process-seed-multi-process!"))
    w.start()

    async def worker(k):
        for i in range(50):
            await append_durably(w, Pending(f"{sys.argv[2]}-{k}-{i}", iso(time.time()), "exchange", "/p",
                                            f"s{k}", canonical({"i": i}), canonical({"g": "x"})))

    async def main():
        await asyncio.gather(*(worker(k) for k in range(8)))

    asyncio.run(main())
    w.close()
""")


def test_two_processes_one_chain(store_url: str, store: AuditStore) -> None:
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, store_url, f"p{i}"], cwd=root) for i in range(2)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert store.count() == 800 and store.head()[0] == 800
    res = verify_log(store.iter_rows(), head=store.head(), checkpoints=store.checkpoints(),
                     public_keys=store.public_keys())
    assert res.ok, res.as_dict()


@pytest.mark.postgres
def test_postgres_connection_heals(pg_store_url: str) -> None:
    store_url = pg_store_url
    store = open_store(store_url)
    ring = Keyring.from_seed(b"heal-test-seed-heal-test-seed-00!")
    w = AuditWriter(store, ring)
    w.append_now([Pending("a1", iso(0), "exchange", "/p", None, canonical({}))])
    pid = store._w.info.backend_pid  # type: ignore[attr-defined]
    killer = open_store(store_url)
    with killer._txn() as tx:  # type: ignore[attr-defined]
        tx.cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    killer.close()
    with pytest.raises(AuditUnavailable) as err:
        w.append_now([Pending("a2", iso(0), "exchange", "/p", None, canonical({"ssn": "123-45-6789"}))])
    assert "123-45-6789" not in str(err.value)
    w.append_now([Pending("a3", iso(0), "exchange", "/p", None, canonical({}))])  # reconnected
    assert [r.audit_id for r in store.iter_rows()] == ["a1", "a3"]
    store.close()


@pytest.mark.anyio
@pytest.mark.postgres
async def test_stage_fail_closed_503_then_recovers(pg_store_url: str, tmp_path: Path) -> None:
    """PostgreSQL connection lost mid-load: fail_closed answers 503 without PII, the next request is served."""
    import httpx

    from mlguard.middleware import GuardMiddleware
    from mlguard.runtime import Guard

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})

    guard = Guard({"policies": ["base"], "base_dir": str(tmp_path),
                   "audit": {"store": pg_store_url, "keyring": "./k"},
                   "routes": [{"path": "/p", "subject": "$.id"}]}, stages=["audit"])
    stage = guard.stages[0]
    planted = "Planted-Name-4471"
    mw = GuardMiddleware(app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        assert (await c.post("/p", json={"id": "u1", "name": planted})).status_code == 200
        pid = stage.store._w.info.backend_pid  # type: ignore[attr-defined]
        killer = open_store(pg_store_url)
        with killer._txn() as tx:  # type: ignore[attr-defined]
            tx.cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        killer.close()
        down = await c.post("/p", json={"id": "u2", "name": planted})
        assert down.status_code == 503 and planted not in down.text
        assert down.headers["content-type"].startswith("application/problem+json")
        up = await c.post("/p", json={"id": "u3", "name": planted})
        assert up.status_code == 200
    await guard.aclose()
    store = open_store(pg_store_url)
    assert store.count() == 3  # the two served exchanges, and the gap record listing the refused one
    from mlguard.audit.reader import AuditReader

    gap = AuditReader(store, Keyring.load(tmp_path / "k")).decode(next(store.iter_rows(kind="gap")))
    assert gap["data"]["audit_ids"] == [down.headers["mlguard-audit-id"]] and gap["data"]["client"] == "refused"
    res = verify_log(store.iter_rows(), head=store.head(), checkpoints=store.checkpoints(),
                     public_keys=store.public_keys())
    assert res.ok
    store.close()

"""The audit stage through the middleware: every exchange sealed, durable before the response, readable,
refusals recorded, admin reads audited, planted PII never in the database, witness or logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.audit.chain import Witness
from mlguard.audit.reader import AuditReader
from mlguard.audit.store.base import open_store
from mlguard.audit.verify import verify_log
from mlguard.keys import Keyring
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.testing import json_app

PLANTED = {"name": "Zebulon Quattlebaum", "ssn": "987-65-4329", "id": "SUBJ-7731-PLANT", "sex": "Xenofemale"}


model_app = json_app(lambda doc: {"score": 0.7, "approved": True})


def config(tmp_path: Path, **audit: Any) -> dict[str, Any]:
    return {
        "policies": ["base"], "base_dir": str(tmp_path),
        "audit": {"store": "sqlite:///./audit.db", "keyring": "./k.keyring", "witness": "./witness.jsonl",
                  "checkpoint_every": 5, **audit},
        "routes": [{"path": "/predict", "subject": "$.applicant.id",
                    "protected": {"sex": "$.applicant.sex"},
                    "model": {"output": "$.score", "favorable": "$.approved"}}],
    }


def body() -> dict[str, Any]:
    return {"applicant": {"id": PLANTED["id"], "name": PLANTED["name"], "ssn": PLANTED["ssn"],
                          "sex": PLANTED["sex"]}, "features": {"income": 5}}


@pytest.mark.anyio
async def test_records_every_exchange_and_no_pii_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mlguard")
    guard = Guard(config(tmp_path), stages=["audit"])
    app = GuardMiddleware(model_app, guard=guard)
    ids = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for _ in range(7):
            r = await client.post("/predict", json=body())
            assert r.status_code == 200
            ids.append(r.headers["mlguard-audit-id"])
        bad = await client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 400
        ids.append(bad.headers["mlguard-audit-id"])
        # durable before the response: readable right now, from another connection
        reader = AuditReader(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "k.keyring")
        rec = reader.get(ids[0])
        assert rec is not None and rec["kind"] == "exchange" and rec["status"] == 200
        assert rec["protected"] == {"sex": PLANTED["sex"]} and rec["output"] == {"score": 0.7, "approved": True}
        assert rec["subject"] and rec["subject"] != PLANTED["id"]
        assert rec["policies"]["ids"] == ["base"] and rec["decision"]["action"] == "proceed"
        refused = reader.get(ids[-1])
        assert refused is not None and refused["status"] == 400 and refused["rejection"]["status"] == 400
        assert [r["audit_id"] for r in reader.iter_records(subject=PLANTED["id"])] == ids[:7]

        # admin read: token needed (a refused attempt is audited too, PCI DSS 10.2.1.4), and the read is audited
        r = await client.get(f"/mlguard/audit/records/{ids[0]}")
        assert r.status_code == 401
        import os

        os.environ["MLGUARD_ADMIN_TOKEN"] = "tok"
        try:
            r = await client.get(f"/mlguard/audit/records/{ids[0]}",
                                 headers={"authorization": "Bearer wrong-token-PLANTED"})
            assert r.status_code == 401
        finally:
            del os.environ["MLGUARD_ADMIN_TOKEN"]
        denied = [x for x in reader.iter_records() if x["kind"] == "admin_denied"]
        assert [x["data"] for x in denied] == [{"endpoint": "/audit/records/{audit_id}", "method": "GET",
                                                "reason": "missing or invalid bearer token"}] * 2

        os.environ["MLGUARD_ADMIN_TOKEN"] = "tok"
        try:
            r = await client.get(f"/mlguard/audit/records/{ids[0]}", headers={"authorization": "Bearer tok"})
            assert r.status_code == 200 and r.json()["record"]["audit_id"] == ids[0]
            miss = await client.get("/mlguard/audit/records/nope", headers={"authorization": "Bearer tok"})
            assert miss.status_code == 404
        finally:
            del os.environ["MLGUARD_ADMIN_TOKEN"]
        # each read is in the trail by the time its answer is out, saying what it found
        reads = [x for x in reader.iter_records() if x["kind"] == "admin_read"]
        assert [x["data"] for x in reads] == [{"endpoint": "/audit/records", "target": ids[0], "found": True},
                                              # not an audit id: answered unread, kept by its length only
                                              {"endpoint": "/audit/records",
                                               "target": {"not_an_audit_id": True, "length": 4}, "found": False}]
        assert [x["audit_id"] for x in reads] == [r.json()["read_id"], miss.json()["read_id"]]
        reader.close()
    await guard.aclose()

    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    res = verify_log(store.iter_rows(), head=store.head(), checkpoints=store.checkpoints(),
                     public_keys=store.public_keys(), witness=Witness.read(tmp_path / "witness.jsonl"))
    assert res.ok and res.records == 12, res.as_dict()  # 8 exchanges, 2 refused admin requests, 2 reads
    store.close()
    planted = [v.encode() for v in (*PLANTED.values(), "wrong-token-PLANTED")]
    for f in tmp_path.iterdir():
        data = f.read_bytes()
        for p in planted:
            assert p not in data, (f.name, p)
    logs = caplog.text
    assert not any(v in logs for v in PLANTED.values())


def _admin_reads(tmp_path: Path) -> list[dict[str, Any]]:
    reader = AuditReader(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "k.keyring")
    try:
        return [x for x in reader.iter_records() if x["kind"] == "admin_read"]
    finally:
        reader.close()


@pytest.mark.anyio
async def test_admin_read_not_recorded_discloses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the admin_read event cannot be appended, the answer is the same 503 whether the record exists or
    not: neither the record nor its existence is disclosed by an unaudited read."""
    from mlguard.errors import AuditUnavailable

    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "tok")
    guard = Guard(config(tmp_path), stages=["audit"])
    app = GuardMiddleware(model_app, guard=guard)
    auth = {"authorization": "Bearer tok"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        audit_id = (await client.post("/predict", json=body())).headers["mlguard-audit-id"]
        writer = guard.stages[0].writer  # type: ignore[attr-defined]

        def refuse(*_: Any, **__: Any) -> Any:
            raise AuditUnavailable("audit queue is full")

        monkeypatch.setattr(writer, "submit_async", refuse)
        monkeypatch.setattr(writer, "submit", refuse)
        found = await client.get(f"/mlguard/audit/records/{audit_id}", headers=auth)
        missing = await client.get("/mlguard/audit/records/nope", headers=auth)
        monkeypatch.undo()
    await guard.aclose()
    assert found.status_code == missing.status_code == 503
    assert found.content == missing.content  # not even whether the record exists
    assert found.json()["detail"] == "audit trail unavailable"
    assert "record" not in found.json() and "read_id" not in found.json() and audit_id not in found.text
    assert _admin_reads(tmp_path) == []


@pytest.mark.anyio
async def test_admin_read_that_fails_is_recorded_and_discloses_nothing(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from mlguard.errors import AuditError

    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "tok")
    guard = Guard(config(tmp_path), stages=["audit"])
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        audit_id = (await client.post("/predict", json=body())).headers["mlguard-audit-id"]

        def broken(_: str) -> Any:
            raise AuditError("cannot decrypt")

        monkeypatch.setattr(guard.stages[0].reader, "get", broken)  # type: ignore[attr-defined]
        r = await client.get(f"/mlguard/audit/records/{audit_id}", headers={"authorization": "Bearer tok"})
    await guard.aclose()
    assert r.status_code == 503 and r.json()["detail"] == "audit trail unavailable"
    assert "record" not in r.json() and "read_id" not in r.json()
    assert [x["data"] for x in _admin_reads(tmp_path)] == [
        {"endpoint": "/audit/records", "target": audit_id, "found": None, "error": "AuditError"}]


@pytest.mark.anyio
async def test_events_api(tmp_path: Path) -> None:
    guard = Guard(config(tmp_path), stages=["audit"])
    events = guard.context.shared["audit_events"]
    eid = await events.append_event("oversight", {"action": "stop", "route": 0})
    from mlguard.errors import AuditError

    with pytest.raises(AuditError):
        await events.append_event("exchange", {})
    await guard.aclose()
    rec = AuditReader(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "k.keyring").get(eid)
    assert rec is not None and rec["kind"] == "oversight" and rec["data"] == {"action": "stop", "route": 0}


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "status"), [("fail_closed", 503), ("fail_open", 200)])
async def test_async_queue_full(tmp_path: Path, mode: str, status: int) -> None:
    guard = Guard(config(tmp_path, durability="async", queue_size=1), stages=["audit"])
    route = guard.table.routes[0]
    route.policy = route.policy.model_copy(update={"failure_mode": mode})
    stage = guard.stages[0]
    stage.writer.close()  # type: ignore[attr-defined]  # stop draining so the queue stays full,
    stage.writer._closed = False  # type: ignore[attr-defined]  # and take submissions again (a closed one refuses)
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        first = await client.post("/predict", json=body())
        assert first.status_code == 200
        second = await client.post("/predict", json=body())
        assert second.status_code == status
        if status == 503:
            assert PLANTED["name"] not in second.text
    # listed for a gap record either way; refused under fail_closed (tests/audit/test_refused_gaps.py)
    assert stage.writer._gaps == [(second.headers["mlguard-audit-id"], "queue_full",  # type: ignore[attr-defined]
                                   mode == "fail_closed")]
    stage.store.close()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_store_lock_held_elsewhere_answers_503_then_recovers(tmp_path: Path) -> None:
    """Sync durability, fail_closed: while someone else holds the audit database's write lock, requests are
    answered 503 (problem+json, no input value) after ``lock_timeout`` instead of waiting for ever; once the lock
    is released the next request is served and recorded, and the log verifies."""
    import sqlite3

    guard = Guard(config(tmp_path, lock_timeout=0.3), stages=["audit"])
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/predict", json=body())).status_code == 200
        holder = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            refused = await client.post("/predict", json=body())
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert refused.status_code == 503
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert not any(v in refused.text for v in PLANTED.values())
        served = await client.post("/predict", json=body())
        assert served.status_code == 200
    await guard.aclose()
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    # the refused exchange's record could not be written (its batch failed); the two served ones are there
    assert store.get_row(served.headers["mlguard-audit-id"]) is not None
    assert store.get_row(refused.headers["mlguard-audit-id"]) is None
    res = verify_log(store.iter_rows(), head=store.head(), checkpoints=store.checkpoints(),
                     public_keys=store.public_keys())
    assert res.ok
    store.close()


def test_keyring_created_0600(tmp_path: Path) -> None:
    Guard(config(tmp_path), stages=["audit"])
    assert (tmp_path / "k.keyring").stat().st_mode & 0o077 == 0
    assert isinstance(Keyring.load(tmp_path / "k.keyring"), Keyring)


@pytest.mark.anyio
async def test_csv_and_parquet_exports_carry_every_member_jsonl_does(tmp_path: Path) -> None:
    """The flat formats had a fixed column list that lost eight members of the stage's records (pii, outcome,
    ts_end, app_called, app_error, disconnected, inspected, rejection) without a word."""
    import csv
    import json

    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is the `parquet` extra")
    from mlguard.audit.export import export_store

    guard = Guard(config(tmp_path), stages=["audit"])
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/predict", json=body())).status_code == 200
        assert (await client.post("/predict", content=b"{", headers={"content-type": "application/json"})
                ).status_code == 400
    await guard.aclose()
    url, ring = f"sqlite:///{tmp_path / 'audit.db'}", Keyring.load(tmp_path / "k.keyring")
    outs = {fmt: tmp_path / f"x.{fmt}" for fmt in ("jsonl", "csv", "parquet")}
    for fmt, out in outs.items():
        assert export_store(url, ring, out, fmt, jobs=1) >= 2  # type: ignore[arg-type]
    records = [json.loads(line) for line in outs["jsonl"].read_text().splitlines()]
    exchanges = [r for r in records if r["kind"] == "exchange"]
    assert len(exchanges) == 2 and exchanges[1]["rejection"]["status"] == 400
    members = set().union(*(r.keys() for r in records))
    rows = list(csv.DictReader(outs["csv"].open(encoding="utf-8")))
    table = pq.read_table(outs["parquet"]).to_pylist()
    assert members <= set(rows[0]) and members <= set(table[0])
    by_id = {r["audit_id"]: r for r in table}
    for rec in exchanges:
        row = by_id[rec["audit_id"]]
        assert row["inspected"] is rec["inspected"] and row["app_called"] is rec["app_called"]
        assert row["ts_end"] == rec["ts_end"]
        for name in ("pii", "outcome", "rejection"):
            assert (None if row[name] is None else json.loads(row[name])) == rec.get(name)


@pytest.mark.anyio
async def test_the_witness_file_exists_from_the_start_and_verifies_before_any_checkpoint(tmp_path: Path) -> None:
    """A verify with --witness right after a deploy (no checkpoint signed yet) stopped with 'witness file does
    not exist' (exit 2, as if misconfigured); the writer now creates the file, empty, when it starts."""
    from click.testing import CliRunner

    from mlguard.cli import cli

    guard = Guard(config(tmp_path, checkpoint_every=1000), stages=["audit"])
    witness = tmp_path / "witness.jsonl"
    assert witness.exists() and witness.read_text() == ""
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/predict", json=body())).status_code == 200
    res = CliRunner().invoke(cli, ["audit", "verify", "--store", f"sqlite:///{tmp_path / 'audit.db'}",
                                   "--witness", str(witness)])
    assert res.exit_code == 0, res.output
    await guard.aclose()
    assert witness.read_text().strip()  # the closing checkpoint is there now

"""One contract, every store: the same tests run against SQLite and PostgreSQL (``store`` fixture)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlguard.audit.chain import GENESIS
from mlguard.audit.reader import AuditReader
from mlguard.audit.record import Pending, canonical, event, iso, pseudonym
from mlguard.audit.store.base import AuditStore, open_store
from mlguard.audit.verify import verify_log
from mlguard.audit.writer import AuditWriter
from mlguard.keys import Keyring

T0 = 1_790_000_000.0  # 2026-09-21


def rec(i: int, keyring: Keyring, subject: str | None = "alice", ts: float = T0, route: str = "/predict",
        protected: dict[str, str] | None = None) -> Pending:
    body = {"audit_id": f"id-{i:06d}", "kind": "exchange", "input": {"n": i}, "route": route}
    return Pending(f"id-{i:06d}", iso(ts + i), "exchange", route, pseudonym(keyring, subject), canonical(body),
                   canonical(protected) if protected else None)


def check(store: AuditStore) -> None:
    res = verify_log(store.iter_rows(), head=store.head(), checkpoints=store.checkpoints(),
                     public_keys=store.public_keys())
    assert res.ok, res.as_dict()


def test_empty_store(store: AuditStore) -> None:
    assert store.head() == (0, GENESIS)
    assert list(store.iter_rows()) == [] and store.count() == 0 and store.get_row("x") is None
    check(store)


def test_append_read_filter(store: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(store, keyring)
    seqs = w.append_now([rec(i, keyring, subject="alice" if i % 2 else "bob",
                             route="/a" if i < 5 else "/b") for i in range(10)])
    assert seqs == list(range(1, 11))
    assert store.count() == 10 and store.head()[0] == 10
    assert [r.seq for r in store.iter_rows(since_seq=7)] == [8, 9, 10]
    assert len(list(store.iter_rows(route="/a"))) == 5
    assert len(list(store.iter_rows(since=iso(T0 + 3), until=iso(T0 + 6)))) == 3
    assert len(list(store.iter_rows(subject=pseudonym(keyring, "bob")))) == 5
    row = store.get_row("id-000004")
    assert row is not None and row.seq == 5
    # verify's narrow read: the same three columns, in order, from any seq
    assert list(store.iter_chain()) == [(r.seq, r.sealed, r.hash) for r in store.iter_rows()]
    assert [c.seq for c in store.iter_chain(since_seq=7)] == [8, 9, 10]
    assert all(isinstance(c.sealed, bytes) and isinstance(c.hash, bytes) for c in store.iter_chain())
    w.checkpoint()
    assert store.checkpoints()[-1]["seq"] == 10
    assert set(store.public_keys()) == set(keyring.public_keys())
    check(store)


def test_reader_decrypts_protected_separately(store: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(store, keyring)
    w.append_now([rec(1, keyring, protected={"sex": "F"}), rec(2, keyring, subject=None)])
    r = AuditReader(store, keyring)
    one = r.get("id-000001")
    assert one is not None and one["input"] == {"n": 1} and one["protected"] == {"sex": "F"}
    assert one["subject"] == pseudonym(keyring, "alice") and one["shredded"] is False and one["seq"] == 1
    assert [x["audit_id"] for x in r.iter_records(subject="alice")] == ["id-000001"]
    # protected attributes sit under a data key of their own domain
    import json

    from mlguard.audit.seal import decode

    row = store.get_row("id-000001")
    assert row is not None
    h = decode(row.sealed).header
    assert h["kid"] != h["pkid"]
    dk = store.get_data_key(h["pkid"])
    assert dk is not None and dk[1] == "protected"
    assert b"alice" not in row.sealed and b'"sex"' not in row.sealed and json.loads(decode(row.sealed).header_bytes)


def test_shred_subject(store: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(store, keyring)
    w.append_now([rec(i, keyring, subject="alice" if i < 3 else "bob") for i in range(5)])
    gone = store.delete_data_keys(subject=pseudonym(keyring, "alice"))
    assert gone
    w.append_now([event("tomb-1", T0, "tombstone", {"keys_destroyed": len(gone)}, clear=True)])
    r = AuditReader(store, Keyring.from_seed(b"mlguard-test-seed-0123456789abcdef"))
    recs = {x["audit_id"]: x for x in r.iter_records()}
    assert recs["id-000000"]["shredded"] is True and recs["id-000000"]["input"] is None
    assert recs["id-000004"]["shredded"] is False and recs["id-000004"]["input"] == {"n": 4}
    assert recs["tomb-1"]["kind"] == "tombstone" and recs["tomb-1"]["data"] == {"keys_destroyed": len(gone)}
    # writing for a shredded subject again gets a fresh key
    w.append_now([rec(9, keyring, subject="alice")])
    assert AuditReader(store, keyring).get("id-000009")["shredded"] is False  # type: ignore[index]
    check(store)


def test_periods_and_purge_by_month(store: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(store, keyring)
    w.append_now([rec(0, keyring, ts=T0), rec(1, keyring, ts=T0 + 40 * 86400)])
    subj = pseudonym(keyring, "alice")
    assert store.subject_periods(subj) == ["2026-09-21", "2026-10-31"]
    store.delete_data_keys(before_period="2026-10")
    assert store.subject_periods(subj) == ["2026-10-31"]
    r = AuditReader(store, keyring)
    assert [x["shredded"] for x in r.iter_records()] == [True, False]


def test_group_commit_concurrent(store: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(store, keyring, checkpoint_every=50)
    w.start()
    futs = []
    lock = threading.Lock()

    def producer(k: int) -> None:
        for i in range(25):
            f = w.submit(rec(k * 1000 + i, keyring, subject=f"s{k}"))
            with lock:
                futs.append(f)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = sorted(f.result(timeout=30) for f in futs)  # type: ignore[union-attr]
    assert seqs == list(range(1, 201))
    assert w.stats["batches"] < 200  # batched
    w.close()
    assert store.checkpoints() and store.checkpoints()[-1]["seq"] == 200
    check(store)


def test_two_store_objects_one_chain(store_url: str, keyring: Keyring) -> None:
    """Two writers (as two processes would) append to one consistent chain."""
    a, b = open_store(store_url), open_store(store_url)
    wa, wb = AuditWriter(a, keyring), AuditWriter(b, keyring)
    for i in range(6):
        (wa if i % 2 else wb).append_now([rec(i, keyring)])
    check(a)
    assert a.head()[0] == 6
    a.close()
    b.close()


def test_idle_checkpoint(store: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(store, keyring, checkpoint_seconds=0.05)
    w.start()
    deadline = time.monotonic() + 5
    while len(store.checkpoints()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    w.close()
    assert len(store.checkpoints()) >= 2 and store.checkpoints()[0]["seq"] == 0
    check(store)


def test_failure_reaches_waiter_and_gap_recorded(store: AuditStore, keyring: Keyring) -> None:
    from mlguard.errors import AuditUnavailable

    w = AuditWriter(store, keyring)
    real = w._commit
    calls = {"n": 0}

    def flaky(batch, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk gone")
        return real(batch, **kw)

    w._commit = flaky  # type: ignore[method-assign]
    w.start()
    f = w.submit(rec(1, keyring))
    with pytest.raises(AuditUnavailable, match="OSError"):
        f.result(timeout=10)  # type: ignore[union-attr]
    w.submit(rec(2, keyring), wait=False)  # async item: written
    w.note_gap("id-lost", "queue_full")
    w.close()
    kinds = [AuditReader(store, keyring).decode(r)["kind"] for r in store.iter_rows()]
    assert kinds == ["exchange", "gap"]
    gap = AuditReader(store, keyring).decode(list(store.iter_rows())[-1])
    assert gap["data"]["audit_ids"] == ["id-lost"]
    check(store)


def test_rolled_back_batch_does_not_reuse_lost_keys(store: AuditStore, keyring: Keyring) -> None:
    from contextlib import contextmanager

    w = AuditWriter(store, keyring)
    real = store.write

    class Proxy:
        def __init__(self, tx: object) -> None:
            self.tx = tx

        def __getattr__(self, name: str) -> object:
            return getattr(self.tx, name)

        def insert_records(self, rows: object) -> None:
            raise OSError("fsync failed")  # after sealing: the new data key rows roll back with the batch

    @contextmanager
    def failing():  # type: ignore[no-untyped-def]
        with real() as tx:
            yield Proxy(tx)

    store.write = failing  # type: ignore[method-assign]
    with pytest.raises(OSError):
        w.append_now([rec(1, keyring, subject="carol")])
    store.write = real  # type: ignore[method-assign]
    assert store.count() == 0
    w.append_now([rec(2, keyring, subject="carol")])
    r = AuditReader(store, keyring).get("id-000002")
    assert r is not None and r["shredded"] is False and r["input"] == {"n": 2}


def test_jsonl_fast_path_equals_records(store: AuditStore, keyring: Keyring) -> None:
    import json

    from mlguard.audit.reader import FIELDS

    w = AuditWriter(store, keyring)
    full = {k: None for k in FIELDS if k not in ("seq", "protected", "shredded")}
    items = [Pending(f"f{i}", iso(T0 + i), "exchange", "/p", pseudonym(keyring, f"s{i % 2}"),
                     canonical({**full, "audit_id": f"f{i}", "kind": "exchange", "ts": iso(T0 + i), "route": "/p",
                                "subject": pseudonym(keyring, f"s{i % 2}"), "input": {"é": i}}),
                     canonical({"sex": "F"}) if i % 3 else None) for i in range(6)]
    w.append_now(items)
    w.append_now([event("e1", T0, "oversight", {"stop": True})])
    store.delete_data_keys(subject=pseudonym(keyring, "s1"))
    r = AuditReader(store, keyring)
    assert [json.loads(x) for x in r.iter_jsonl()] == [json.loads(json.dumps(x)) for x in r.iter_records()]
    assert [json.loads(x)["audit_id"] for x in r.iter_jsonl(subject="s0")] == ["f0", "f2", "f4"]


def test_uncached_reader_sees_shred_at_once(store: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(store, keyring)
    w.append_now([rec(1, keyring, subject="dave")])
    live = AuditReader(store, keyring, cache_keys=False)
    assert live.get("id-000001")["shredded"] is False  # type: ignore[index]
    store.delete_data_keys(subject=pseudonym(keyring, "dave"))
    assert live.get("id-000001")["shredded"] is True  # type: ignore[index]


def test_oversight_state_is_shared_between_store_objects(store_url: str, store: AuditStore) -> None:
    """A stop written through one store object (one worker) is read by another (another worker), and a later
    resume replaces it; nothing else is touched (the chain stays empty and intact)."""
    other = open_store(store_url)
    try:
        assert store.oversight() == {}
        store.put_oversight("0:/predict", True, False, iso(T0))
        assert other.oversight() == {"0:/predict": (True, False)}
        other.put_oversight("0:/predict", False, True, iso(T0 + 1))
        other.put_oversight("1:/screen", True, False, iso(T0 + 2))
        assert store.oversight() == {"0:/predict": (False, True), "1:/screen": (True, False)}
        assert store.count() == 0
        check(store)
    finally:
        other.close()


def test_rewrap_moves_every_data_key_to_the_active_kek(store: AuditStore, tmp_path: Path) -> None:
    """After a rotation every data key is re-wrapped under the new KEK; the old KEK can then leave the keyring
    and every record still opens (a shredded one stays shredded), the chain untouched."""
    from mlguard.audit.rekey import rewrap

    ring = Keyring.create(tmp_path / "k.keyring")
    old = ring.active_kek_id()
    AuditWriter(store, ring).append_now([rec(i, ring, subject=f"s{i % 3}", protected={"sex": "F"})
                                          for i in range(6)])
    assert store.delete_data_keys(subject=pseudonym(ring, "s2"))
    new, _ = ring.rotate()
    AuditWriter(store, ring).append_now([rec(10, ring, subject="s9")])  # a restarted writer: the new KEK
    counts = store.data_key_counts()
    assert set(counts) == {old, new} and counts[old] == 4  # s0, s1: a data and a protected key each
    head = store.head()
    ticks: list[int] = []
    res = rewrap(store, ring, batch=3, progress=ticks.append)
    assert (res.active, res.rewrapped, res.remaining) == (new, 4, {})
    assert ticks == [3, 1] and store.data_key_counts() == {new: sum(counts.values())}
    assert rewrap(store, ring).rewrapped == 0  # nothing left to do
    assert store.head() == head  # records and chain untouched
    ring.retire(old)
    fresh = Keyring.load(tmp_path / "k.keyring")
    assert fresh.kek_ids() == [new]
    recs = {r["audit_id"]: r for r in AuditReader(store, fresh).iter_records()}
    assert recs["id-000000"]["input"] == {"n": 0} and recs["id-000000"]["protected"] == {"sex": "F"}
    assert recs["id-000002"]["shredded"] is True and recs["id-000002"]["input"] is None
    assert recs["id-000010"]["input"] == {"n": 10}
    check(store)


def test_rewrap_without_the_old_kek_names_it_and_changes_nothing(store: AuditStore, tmp_path: Path) -> None:
    from mlguard.audit.rekey import rewrap
    from mlguard.errors import KeyringError

    ring = Keyring.create(tmp_path / "k.keyring")
    old = ring.active_kek_id()
    AuditWriter(store, ring).append_now([rec(1, ring)])
    other = Keyring.create(tmp_path / "other.keyring")  # the wrong keyring: it never held ``old``
    with pytest.raises(KeyringError, match=old):
        rewrap(store, other)
    assert store.data_key_counts() == {old: 1}


def test_iter_chain_pages_and_verify_counts_progress(store: AuditStore, keyring: Keyring,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages smaller than the log (the page boundary is where a narrow read could skip or repeat a record), and
    the progress callbacks of verify add up to the records verified."""
    import mlguard.audit.store.postgres as pg_store
    import mlguard.audit.store.sqlite as sqlite_store

    AuditWriter(store, keyring).append_now([rec(i, keyring) for i in range(11)])
    monkeypatch.setattr(sqlite_store, "PAGE", 3)
    monkeypatch.setattr(pg_store, "PAGE", 3)
    assert [c.seq for c in store.iter_chain()] == list(range(1, 12))
    assert [c.seq for c in store.iter_chain(since_seq=3)] == list(range(4, 12))
    ticks: list[int] = []
    res = verify_log(store.iter_chain(), head=store.head(), checkpoints=store.checkpoints(),
                     public_keys=store.public_keys(), progress=ticks.append)
    assert res.ok and res.records == 11 and sum(ticks) == 11


def test_kind_filter_and_deferred_explanation_lookup(store: AuditStore, keyring: Keyring) -> None:
    """``iter_rows(kind=...)`` reads the clear kind column; a deferred explanation is found in the first
    explanation event after its exchange that names it (and not past the scan bound)."""
    w = AuditWriter(store, keyring)
    w.append_now([rec(i, keyring) for i in range(3)])
    w.append_now([event("ev-1", T0 + 10, "explanation", {"audit_id": "id-000009", "explanation": {"x": 0}}),
                  event("ev-2", T0 + 11, "feedback", {"audit_id": "id-000001"}),
                  event("ev-3", T0 + 12, "explanation", {"audit_id": "id-000001",
                                                         "explanation": {"status": "ready", "top": []}})])
    assert [r.audit_id for r in store.iter_rows(kind="explanation")] == ["ev-1", "ev-3"]
    assert [r.audit_id for r in store.iter_rows(kind="explanation", since_seq=4)] == ["ev-3"]
    reader = AuditReader(store, keyring)
    record = reader.get("id-000001")
    assert record is not None and record["seq"] == 2
    assert reader.deferred_explanation(record) == {"status": "ready", "top": []}
    assert reader.deferred_explanation(record, scan=1) is None  # ev-1 looked at, ev-3 beyond the bound
    later = reader.get("id-000002")
    assert later is not None and reader.deferred_explanation(later) is None


def _count_transactions(store: AuditStore) -> list[int]:
    """Wrap ``store.write`` to count write transactions (the instance attribute shadows the method)."""
    n = [0]
    real = store.write

    def counted():  # type: ignore[no-untyped-def]
        n[0] += 1
        return real()

    store.write = counted  # type: ignore[method-assign]
    return n


@pytest.mark.parametrize("pipeline", [False, True])
def test_checkpoint_due_under_traffic_rides_in_the_batch_transaction(store: AuditStore, keyring: Keyring,
                                                                     tmp_path: Path, pipeline: bool) -> None:
    """A checkpoint that falls due while records flow is signed over the head its batch sets and committed in
    that batch's transaction: as many transactions as batches, one checkpoint per 10 records, each at a batch's
    last seq, in the store and in the witness, and the log verifies."""
    import json

    witness = tmp_path / "witness.jsonl"
    w = AuditWriter(store, keyring, checkpoint_every=10, witness=witness, pipeline=pipeline)
    tx = _count_transactions(store)
    for b in range(5):
        assert w.append_now([rec(b * 10 + i, keyring) for i in range(10)]) == list(range(b * 10 + 1, b * 10 + 11))
    assert tx[0] == 5
    assert [cp["seq"] for cp in store.checkpoints()] == [10, 20, 30, 40, 50]
    assert [json.loads(line)["seq"] for line in witness.read_text().splitlines()] == [10, 20, 30, 40, 50]
    heads = {r.seq: r.hash.hex() for r in store.iter_rows()}
    assert all(cp["head"] == heads[cp["seq"]] for cp in store.checkpoints())
    assert w.stats["checkpoints"] == 5 and w.stats["errors"] == 0
    w.append_now([rec(50 + i, keyring) for i in range(4)])  # 4 records: none due
    assert len(store.checkpoints()) == 5 and tx[0] == 6
    check(store)


def test_witness_failure_does_not_fail_committed_records(store: AuditStore, keyring: Keyring, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The witness cannot be written (its directory is missing): the records of the batch are committed and
    their waiters get their seqs; the error is logged and counted, and once the witness can be written again the
    housekeeping writes a fresh checkpoint to the store and to it."""
    witness = tmp_path / "later" / "witness.jsonl"
    w = AuditWriter(store, keyring, checkpoint_every=5, checkpoint_seconds=30.0, witness=witness)
    w.start()
    futures = [w.submit(rec(i, keyring)) for i in range(5)]
    assert [f.result(timeout=10) for f in futures] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
    assert store.head()[0] == 5 and [cp["seq"] for cp in store.checkpoints()] == [5]
    deadline = time.monotonic() + 10
    while w.stats["errors"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.stats["errors"] >= 1
    assert any(r.getMessage() == "audit witness append failed" for r in caplog.records)
    witness.parent.mkdir()
    deadline = time.monotonic() + 10
    while not witness.exists() and time.monotonic() < deadline:  # the retry comes about a second later
        time.sleep(0.05)
    w.close()
    assert witness.exists() and '"seq":5' in witness.read_text()
    check(store)


def test_signing_failure_does_not_fail_the_batch(store: AuditStore, keyring: Keyring,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A key provider that cannot sign (a remote KMS down) costs the checkpoint, not the records: the batch
    commits without one, the failure is logged, and the next batch once signing works carries it."""
    w = AuditWriter(store, keyring, checkpoint_every=3)
    real = keyring.sign
    keyring.sign = lambda msg: (_ for _ in ()).throw(OSError("kms down"))  # type: ignore[method-assign]
    try:
        assert w.append_now([rec(i, keyring) for i in range(3)]) == [1, 2, 3]
    finally:
        keyring.sign = real  # type: ignore[method-assign]
    assert store.checkpoints() == [] and store.head()[0] == 3 and w.stats["errors"] == 1
    assert any(r.getMessage() == "audit checkpoint signing failed" for r in caplog.records)
    assert w.append_now([rec(3, keyring)]) == [4]
    assert [cp["seq"] for cp in store.checkpoints()] == [4]
    check(store)


class _LockHolder:
    """Holds the store's write lock from outside the store, as another process or an open SQL session would:
    SQLite's RESERVED lock (BEGIN IMMEDIATE), PostgreSQL's head-row lock (SELECT ... FOR UPDATE)."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            import sqlite3

            self.conn: Any = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            from urllib.parse import parse_qsl, urlsplit, urlunsplit

            import psycopg

            parts = urlsplit(url)
            schema = dict(parse_qsl(parts.query))["schema"]
            self.conn = psycopg.connect(urlunsplit((*parts[:3], "", "")))
            self.conn.execute(f"SELECT seq FROM {schema}.head WHERE id = 1 FOR UPDATE")

    def release(self) -> None:
        self.conn.rollback() if hasattr(self.conn, "broken") else self.conn.execute("ROLLBACK")
        self.conn.close()


def test_a_write_lock_held_elsewhere_fails_the_batch_after_lock_timeout(store_url: str, keyring: Keyring) -> None:
    """A lock never released (a SQL session left open) must not leave writes waiting for ever: after
    ``lock_timeout`` the batch fails with AuditUnavailable, and once the lock is gone the next batch commits and
    the log verifies. (Run in a thread so that a write that never returns fails the test instead of hanging it.)"""
    from mlguard.errors import AuditUnavailable

    store = open_store(store_url, lock_timeout=0.3)
    w = AuditWriter(store, keyring)
    w.append_now([rec(0, keyring)])  # the head row exists: PostgreSQL's lock is on it
    holder = _LockHolder(store_url)
    outcome: list[BaseException | list[int]] = []
    t = threading.Thread(target=lambda: outcome.append(_try(lambda: w.append_now([rec(1, keyring)]))))
    t.start()
    t.join(timeout=30)
    holder.release()
    assert not t.is_alive(), "the write still waits for the lock"
    assert len(outcome) == 1 and isinstance(outcome[0], AuditUnavailable)
    assert w.append_now([rec(2, keyring)]) == [2]
    assert store.count() == 2
    check(store)
    store.close()


def _try(fn: Any) -> Any:
    try:
        return fn()
    except BaseException as exc:
        return exc

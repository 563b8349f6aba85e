"""SQLite's WAL is copied back by a thread of its own, not inside a group commit (mlguard/audit/store/sqlite.py).

The automatic checkpoint stays as a backstop at WAL_AUTOCHECKPOINT_PAGES (256 MiB), far above what these tests
write, so the database file can only grow here if the background checkpointer ran.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from mlguard.audit.record import Pending, canonical, iso, pseudonym
from mlguard.audit.store import sqlite as sqlite_store
from mlguard.audit.store.base import open_store
from mlguard.audit.verify import verify_log
from mlguard.audit.writer import AuditWriter
from mlguard.keys import Keyring


def _rec(i: int, keyring: Keyring) -> Pending:
    body = {"audit_id": f"id-{i:06d}", "kind": "exchange", "input": {"n": i, "pad": "x" * 2000}}
    return Pending(f"id-{i:06d}", iso(1_790_000_000.0 + i), "exchange", "/predict",
                   pseudonym(keyring, f"s{i % 7}"), canonical(body), None)


def _wait(cond, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_wal_is_checkpointed_in_the_background(tmp_path: Path, keyring: Keyring,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "BACKGROUND_CHECKPOINT_BYTES", 64 * 1024)
    db = tmp_path / "audit.db"
    store = open_store(f"sqlite:///{db}")
    assert isinstance(store, sqlite_store.SQLiteStore)
    w = AuditWriter(store, keyring)
    size0 = db.stat().st_size
    for b in range(20):  # about 1 MiB of sealed records, 32 per transaction
        w.append_now([_rec(b * 32 + i, keyring) for i in range(32)])
    cp = store._checkpointer
    assert _wait(lambda: cp.runs >= 1), "the background checkpointer never ran"
    assert cp.errors == 0
    assert _wait(lambda: db.stat().st_size > size0 + 512 * 1024), "the records were not copied into the db file"
    res = verify_log(store.iter_rows(), head=store.head(), checkpoints=store.checkpoints(),
                     public_keys=store.public_keys())
    assert res.ok and store.count() == 640
    thread = cp._thread
    store.close()
    assert thread is not None and not thread.is_alive()
    # what the file holds on its own (WAL folded in at close) reads back complete
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 640


def test_small_store_never_starts_the_thread(tmp_path: Path, keyring: Keyring) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    assert isinstance(store, sqlite_store.SQLiteStore)
    AuditWriter(store, keyring).append_now([_rec(i, keyring) for i in range(10)])
    assert store._checkpointer._thread is None
    store.close()


def test_failed_checkpoint_is_logged_and_does_not_touch_commits(tmp_path: Path, keyring: Keyring,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sqlite_store, "BACKGROUND_CHECKPOINT_BYTES", 16 * 1024)
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    assert isinstance(store, sqlite_store.SQLiteStore)

    def broken() -> sqlite3.Connection:
        raise sqlite3.OperationalError("disk I/O error")

    store._checkpointer._connect = broken
    w = AuditWriter(store, keyring)
    assert w.append_now([_rec(i, keyring) for i in range(16)]) == list(range(1, 17))
    assert _wait(lambda: store._checkpointer.errors >= 1)
    assert any(r.getMessage() == "audit WAL checkpoint failed" and getattr(r, "error", "") == "OperationalError"
               for r in caplog.records)
    assert w.append_now([_rec(16, keyring)]) == [17]  # commits go on
    store.close()

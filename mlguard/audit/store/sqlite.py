"""SQLite audit store (the default): WAL, synchronous=FULL, one exclusive writer per batch.

Why these settings: WAL lets readers (verify, export, admin reads) run beside the writer; synchronous=FULL
makes a COMMIT durable (fsync) before it returns, which is what "sync" durability promises. Throughput comes
from group commit (writer.py batches many requests into one transaction), not from weaker syncing.
``BEGIN IMMEDIATE`` takes the write lock up front, so several processes append to one consistent chain.

No index by subject (neither on ``records`` nor on ``data_keys``). Subject pseudonyms are HMAC values, so such
an index takes its new entries at random places: one more dirty B-tree page per distinct subject in every group
commit, each written to the WAL before the fsync. Measured here with a new subject every 4 records, the two
indexes cost 64 concurrent durable writers about a fifth of their throughput (about 18,000 against 23,000
records/s). The queries they served are rare and scan instead: ``export --subject`` reads the log in seq order
and filters (about 2.5 million rows/s here, 20 ms per 50,000 records), ``shred`` deletes a subject's keys with a
scan of ``data_keys`` (about 10 million rows/s). ``ts``, ``audit_id`` and ``key_id`` grow with time, so their
indexes only append. PostgreSQL (several writers, larger logs) keeps its subject indexes.
"""

# ruff: noqa: S608  (table/schema names are constants or validated identifiers; values are bound)
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

from mlguard.audit.chain import GENESIS
from mlguard.audit.store.base import (
    LOCK_TIMEOUT,
    VERIFY_COLUMNS,
    AuditStore,
    ChainRow,
    DataKeyRow,
    RecordRow,
    VerifyRow,
    WriteTx,
    cp_from_json,
    paged_rows,
    record_filters,
    row_from_db,
)
from mlguard.errors import AuditUnavailable

log = logging.getLogger("mlguard.audit.store")

KEYS_PER_QUERY = 500  # ids per prefetch query (SQLite allows 32,766 parameters; a short statement)
PAGE = 2000
PAGE_SIZE = 8192
MULTI_ROWS = 1024  # rows per INSERT statement (bound by SQLite's variable limit too)
WAL_AUTOCHECKPOINT_PAGES = 16000
"""SQLite's own checkpoint at commit time, now only a backstop (125 MiB of WAL with 8 KiB pages): the WAL is
normally checkpointed in the background, see :class:`_WalCheckpointer`."""
BACKGROUND_CHECKPOINT_BYTES = 16 << 20
"""Sealed record bytes committed between two background WAL checkpoints (about 2,000 pages of 8 KiB)."""
# Logs created before the subject indexes were dropped keep them (CREATE IF NOT EXISTS never drops); they only
# cost write speed: ``DROP INDEX records_subject; DROP INDEX data_keys_slot;`` removes them.
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, audit_id TEXT NOT NULL UNIQUE, ts TEXT NOT NULL,
  kind TEXT NOT NULL, route TEXT, subject TEXT, sealed BLOB NOT NULL, hash BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE TABLE IF NOT EXISTS head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash BLOB NOT NULL,
  gen INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS checkpoints (seq INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS public_keys (kid TEXT PRIMARY KEY, pub BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS data_keys (key_id TEXT PRIMARY KEY, subject TEXT NOT NULL, domain TEXT NOT NULL,
  period TEXT NOT NULL, kek_id TEXT NOT NULL, wrapped BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS oversight (route TEXT PRIMARY KEY, halted INTEGER NOT NULL, override INTEGER NOT NULL,
  ts TEXT NOT NULL);
"""


def _unavailable(exc: BaseException) -> AuditUnavailable:
    return AuditUnavailable(f"audit store (sqlite) failed: {type(exc).__name__}: {exc}")


def _insert_many(conn: sqlite3.Connection, table: str, ncols: int, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert rows with multi-row ``INSERT ... VALUES (...),(...)`` statements of up to MULTI_ROWS rows.

    Why not ``executemany``: it steps once per row, releasing and re-taking the GIL each time. With another
    Python thread busy (the writer's sealing thread in the async pipeline, or the event loop) every re-take
    waits for that thread's switch interval: measured here, 64 rows/ms instead of 100. One statement per
    chunk re-takes the GIL once per chunk; alone it is as fast as ``executemany`` (same bytes, same pages).
    """
    limit = max(1, min(MULTI_ROWS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // ncols))
    one = "(" + ",".join("?" * ncols) + ")"
    n = len(rows)
    full = n - n % limit if n >= limit else 0
    if full:
        stmt = f"INSERT INTO {table} VALUES " + ",".join([one] * limit)
        for i in range(0, full, limit):
            conn.execute(stmt, list(chain.from_iterable(rows[i:i + limit])))
    rest = n - full
    if rest:
        conn.execute(f"INSERT INTO {table} VALUES " + ",".join([one] * rest), list(chain.from_iterable(rows[full:])))


class _Tx(WriteTx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.c = conn
        self.written = 0  # sealed bytes inserted: what the WAL grows by, near enough for the checkpointer

    def head(self) -> tuple[int, bytes]:
        row = self.c.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))

    def key_generation(self) -> int:
        row = self.c.execute("SELECT gen FROM head WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def bump_generation(self) -> None:
        self.c.execute("INSERT INTO head VALUES (1, 0, ?, 1) ON CONFLICT (id) DO UPDATE SET gen = gen + 1",
                       (GENESIS,))

    def insert_records(self, rows: list[RecordRow]) -> None:
        _insert_many(self.c, "records", 8, rows)  # RecordRow is in column order
        self.written += sum(len(r.sealed) for r in rows)

    def set_head(self, seq: int, head: bytes) -> None:
        self.c.execute("INSERT INTO head VALUES (1, ?, ?, 0) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, "
                       "hash = excluded.hash", (seq, head))

    def insert_checkpoint(self, cp: dict[str, Any]) -> None:
        self.c.execute("INSERT INTO checkpoints VALUES (?, ?)", (cp["seq"], json.dumps(cp, sort_keys=True)))

    def insert_data_keys(self, rows: list[tuple[str, str, str, str, str, bytes]]) -> None:
        _insert_many(self.c, "data_keys", 6, rows)


class _WalCheckpointer:
    """Copies the WAL back into the database from a thread of its own (``PRAGMA wal_checkpoint(PASSIVE)`` on
    its own connection), nudged by the writer every BACKGROUND_CHECKPOINT_BYTES committed.

    Why: SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold, so one group commit in
    every few thousand copied 64 MiB back and fsynced the database file while its requests waited: 67-113 ms
    measured in-process here (the longest commit by far; durable "sync" requests wait for their commit). A
    PASSIVE checkpoint runs beside the writer (it never blocks it; SQLite releases the GIL around it), and a
    completed one lets the next transaction restart the WAL from its beginning, as the automatic one does; that
    one stays as a backstop (WAL_AUTOCHECKPOINT_PAGES) should this thread fall behind or a reader hold the WAL.
    Started on the first nudge, so short-lived stores (the CLI) never start it. Errors are logged and counted,
    never raised into the writer: the records are committed whatever the checkpoint does."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._wake = threading.Event()
        self._stop = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.errors = 0

    def nudge(self) -> None:
        with self._lock:
            if self._stop:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mlguard-audit-wal", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                try:
                    if conn is None:
                        conn = self._connect()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                except Exception as exc:  # the thread must outlive any failure: the next nudge tries again
                    self.errors += 1
                    log.error("audit WAL checkpoint failed", extra={"error": type(exc).__name__})
        finally:
            if conn is not None:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._stop = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=60)


class SQLiteStore(AuditStore):
    def __init__(self, url: str, *, create: bool = True, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.url = url
        self.path = Path(url[len("sqlite:///"):])
        self.lock_timeout = lock_timeout  # SQLite's busy timeout: how long BEGIN IMMEDIATE waits for the lock
        self._wlock = threading.Lock()
        self._local = threading.local()
        # Every thread's reader connection, so close() closes them all: SQLite copies the WAL back and deletes
        # it only when the last connection closes; one left open in a worker thread left it on disk (megabytes
        # per thousand records) until the process ended, and after it.
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        fresh = not self.path.exists()
        if fresh and not create:
            raise AuditUnavailable(f"no audit log at {self.path}")
        self._w = self._connect()
        self._written = 0  # sealed bytes committed since the last background checkpoint was asked for
        self._checkpointer = _WalCheckpointer(self._connect)
        if fresh:
            os.chmod(self.path, 0o600)
        try:
            self._w.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self.lock_timeout)
            # 8 KiB pages for a new file (an existing one keeps its size: SQLite ignores this then). A sealed
            # exchange record is about 1.5 KB: a 4 KiB page holds two (2.2 KB of file per record), an 8 KiB page
            # five, a 16 KiB page ten. But every commit also rewrites whole pages it touched only a little (the
            # index leaves, the head row, data keys), so small commits favour small pages. Measured here
            # (ninth session, the same runs alternated): 64 sync writers 16,900-19,300 records/s with 16 KiB,
            # 18,300-21,000 with 8 KiB, 19,800-20,200 with 4 KiB; a one-record commit p50 0.52-0.61 ms, 0.49,
            # 0.44; the async pipeline (batches of up to 2,048) 48,000-49,000 with 16 KiB, 49,000-51,000 with
            # 8 KiB, 41,000 with 4 KiB. 8 KiB is the best or near it for all three.
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")  # shredded keys are overwritten, not left in free pages
            # The automatic checkpoint (inside a COMMIT) only as a backstop; _WalCheckpointer does the work
            # beside the writer. (Checkpoints far apart also copy back pages that many commits touch, index
            # leaves, once instead of many times: measured about 0.3 ms less per group commit.)
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        return conn

    def _r(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def write(self) -> AbstractContextManager[WriteTx]:
        return self._txn()

    @contextmanager
    def _txn(self) -> Iterator[_Tx]:
        with self._wlock:
            try:
                self._w.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc
            tx = _Tx(self._w)
            try:
                yield tx
            except BaseException:
                self._w.execute("ROLLBACK")
                raise
            try:
                self._w.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._w.in_transaction:
                    self._w.execute("ROLLBACK")
                raise _unavailable(exc) from exc
            self._written += tx.written
            if self._written >= BACKGROUND_CHECKPOINT_BYTES:
                self._written = 0
                self._checkpointer.nudge()

    def head(self) -> tuple[int, bytes]:
        return _Tx(self._r()).head()

    def iter_rows(self, *, since_seq: int = 0, since: str | None = None, until: str | None = None,
                  route: str | None = None, subject: str | None = None, kind: str | None = None,
                  to_seq: int | None = None) -> Iterator[RecordRow]:
        where, args = record_filters("?", since=since, until=until, route=route, subject=subject, kind=kind,
                                     to_seq=to_seq)
        sql = f"SELECT * FROM records WHERE {where} ORDER BY seq LIMIT {PAGE}"
        conn = self._r()
        return paged_rows(lambda last: conn.execute(sql, (last, *args)).fetchall(), since_seq, PAGE,
                          row_from_db)

    def iter_chain(self, *, since_seq: int = 0, to_seq: int | None = None) -> Iterator[ChainRow]:
        where, args = record_filters("?", since=None, until=None, route=None, subject=None, to_seq=to_seq)
        sql = f"SELECT seq, sealed, hash FROM records WHERE {where} ORDER BY seq LIMIT {PAGE}"
        conn = self._r()
        # sqlite3 hands BLOBs back as bytes: the tuple is already a ChainRow's fields
        return paged_rows(lambda last: conn.execute(sql, (last, *args)).fetchall(), since_seq, PAGE,
                          ChainRow._make)

    def iter_verify(self, *, since_seq: int = 0, to_seq: int | None = None) -> Iterator[VerifyRow]:
        where, args = record_filters("?", since=None, until=None, route=None, subject=None, to_seq=to_seq)
        sql = f"SELECT {VERIFY_COLUMNS} FROM records WHERE {where} ORDER BY seq LIMIT {PAGE}"
        conn = self._r()
        last = since_seq
        while True:  # paged_rows without its per-row call: sqlite3's row tuples already are VerifyRows
            rows: list[VerifyRow] = conn.execute(sql, (last, *args)).fetchall()
            yield from rows
            if len(rows) < PAGE:
                return
            last = rows[-1][0]

    def get_row(self, audit_id: str) -> RecordRow | None:
        r = self._r().execute("SELECT * FROM records WHERE audit_id = ?", (audit_id,)).fetchone()
        return None if r is None else row_from_db(r)

    def count(self) -> int:
        return int(self._r().execute("SELECT count(*) FROM records").fetchone()[0])

    def add_checkpoint(self, cp: dict[str, Any]) -> None:
        with self._txn() as tx:
            tx.insert_checkpoint(cp)

    def checkpoints(self) -> list[dict[str, Any]]:
        rows = self._r().execute("SELECT doc FROM checkpoints ORDER BY rowid").fetchall()
        return [cp_from_json(r[0]) for r in rows]

    def put_public_keys(self, keys: dict[str, bytes]) -> None:
        with self._txn() as tx:
            tx.c.executemany("INSERT OR IGNORE INTO public_keys VALUES (?, ?)", list(keys.items()))

    def public_keys(self) -> dict[str, bytes]:
        return {str(k): bytes(v) for k, v in self._r().execute("SELECT kid, pub FROM public_keys")}

    def get_data_key(self, key_id: str) -> tuple[str, str, str, str, bytes] | None:
        r = self._r().execute("SELECT subject, domain, period, kek_id, wrapped FROM data_keys WHERE key_id = ?",
                              (key_id,)).fetchone()
        return None if r is None else (str(r[0]), str(r[1]), str(r[2]), str(r[3]), bytes(r[4]))

    def get_data_keys(self, key_ids: Sequence[str]) -> dict[str, tuple[str, str, str, str, bytes]]:
        out = {}
        conn = self._r()
        ids = list(key_ids)
        for i in range(0, len(ids), KEYS_PER_QUERY):
            part = ids[i:i + KEYS_PER_QUERY]
            rows = conn.execute("SELECT key_id, subject, domain, period, kek_id, wrapped FROM data_keys "
                                f"WHERE key_id IN ({','.join('?' * len(part))})", part).fetchall()
            for r in rows:
                out[str(r[0])] = (str(r[1]), str(r[2]), str(r[3]), str(r[4]), bytes(r[5]))
        return out

    def delete_data_keys(self, *, subject: str | None = None, before_period: str | None = None) -> list[str]:
        cond, arg = ("subject = ?", subject) if subject is not None else ("period < ?", before_period)
        if arg is None:
            return []
        with self._txn() as tx:
            ids = [str(r[0]) for r in tx.c.execute(f"SELECT key_id FROM data_keys WHERE {cond}", (arg,))]
            tx.c.execute(f"DELETE FROM data_keys WHERE {cond}", (arg,))
            tx.bump_generation()
        self._truncate_wal()
        return ids

    def data_key_counts(self) -> dict[str, int]:
        rows = self._r().execute("SELECT kek_id, count(*) FROM data_keys GROUP BY kek_id").fetchall()
        return {str(k): int(n) for k, n in rows}

    def data_keys_under(self, kek_ids: Sequence[str], after: str, limit: int) -> list[DataKeyRow]:
        if not kek_ids:
            return []
        marks = ",".join("?" * len(kek_ids))
        rows = self._r().execute(
            f"SELECT key_id, subject, domain, period, kek_id, wrapped FROM data_keys WHERE kek_id IN ({marks}) "
            "AND key_id > ? ORDER BY key_id LIMIT ?", (*kek_ids, after, limit)).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), bytes(r[5])) for r in rows]

    def rewrap_data_keys(self, rows: Sequence[tuple[str, str, str, bytes]]) -> int:
        if not rows:
            return 0
        with self._txn() as tx:
            before = tx.c.total_changes
            tx.c.executemany("UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE key_id = ? AND kek_id = ?",
                             [(new, wrapped, key_id, old) for key_id, old, new, wrapped in rows])
            changed = tx.c.total_changes - before
        self._truncate_wal()
        return changed

    def _truncate_wal(self) -> None:
        """After a shred or rewrap: secure_delete overwrote the old key bytes in the table, but their old page
        images linger in the WAL until a checkpoint copies and truncates it."""
        with self._wlock:
            self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def subject_periods(self, subject: str) -> list[str]:
        rows = self._r().execute("SELECT DISTINCT period FROM data_keys WHERE subject = ? ORDER BY period",
                                 (subject,)).fetchall()
        return [str(r[0]) for r in rows]

    def oversight(self) -> dict[str, tuple[bool, bool]]:
        rows = self._r().execute("SELECT route, halted, override FROM oversight").fetchall()
        return {str(r[0]): (bool(r[1]), bool(r[2])) for r in rows}

    def put_oversight(self, route_key: str, halted: bool, override: bool, ts: str) -> None:
        with self._txn() as tx:
            tx.c.execute("INSERT INTO oversight VALUES (?, ?, ?, ?) ON CONFLICT (route) DO UPDATE SET "
                         "halted = excluded.halted, override = excluded.override, ts = excluded.ts",
                         (route_key, int(halted), int(override), ts))

    def close(self) -> None:
        self._checkpointer.close()
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._local = threading.local()
        with self._wlock:
            self._w.close()  # the last connection: SQLite checkpoints the WAL and removes it

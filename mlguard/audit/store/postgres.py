"""PostgreSQL audit store (psycopg 3): several processes and hosts appending to one log.

How the chain stays consistent: the ``head`` table has one row. Each write transaction (one batch of records
from one process) starts with ``SELECT seq, hash FROM head WHERE id = 1 FOR UPDATE``: that row lock is the
sequencer. Whoever holds it reads the head, seals and chains its batch after it, inserts the records and
updates the head, and commits (``synchronous_commit = on``: durable at COMMIT); the next writer then sees the
new head. Batching (writer.py) amortises the lock and the commit over many records. Readers never take the
lock. Tables live in the schema named by ``?schema=NAME`` in the URL (default ``mlguard``).
"""

# ruff: noqa: S608  (table/schema names are constants or validated identifiers; values are bound)
from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    chain_row_from_db,
    paged_rows,
    record_filters,
    row_from_db,
    verify_row_from_db,
)
from mlguard.errors import AuditUnavailable, ConfigError, DependencyMissing
from mlguard.pgconn import connect_error_text, liveness, statement_error_text

KEYS_PER_QUERY = 500  # ids per prefetch query (SQLite allows 32,766 parameters; a short statement)
PAGE = 5000
T = TypeVar("T")
_RECORD_TYPES = ["int8", "text", "text", "text", "text", "text", "bytea", "bytea"]  # records' columns, in order
_KEY_TYPES = ["text", "text", "text", "text", "text", "bytea"]  # data_keys' columns, in order
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.records (seq BIGINT PRIMARY KEY, audit_id TEXT NOT NULL UNIQUE, ts TEXT NOT NULL,
  kind TEXT NOT NULL, route TEXT, subject TEXT, sealed BYTEA NOT NULL, hash BYTEA NOT NULL);
CREATE INDEX IF NOT EXISTS records_ts ON {s}.records (ts);
CREATE INDEX IF NOT EXISTS records_subject ON {s}.records (subject);
CREATE TABLE IF NOT EXISTS {s}.head (id INT PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash BYTEA NOT NULL,
  gen BIGINT NOT NULL DEFAULT 0);
INSERT INTO {s}.head VALUES (1, 0, %(genesis)s, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS {s}.checkpoints (id BIGSERIAL PRIMARY KEY, seq BIGINT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.public_keys (kid TEXT PRIMARY KEY, pub BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.data_keys (key_id TEXT PRIMARY KEY, subject TEXT NOT NULL, domain TEXT NOT NULL,
  period TEXT NOT NULL, kek_id TEXT NOT NULL, wrapped BYTEA NOT NULL);
CREATE INDEX IF NOT EXISTS data_keys_slot ON {s}.data_keys (subject, domain, period);
CREATE TABLE IF NOT EXISTS {s}.oversight (route TEXT PRIMARY KEY, halted BOOLEAN NOT NULL, override BOOLEAN NOT NULL,
  ts TEXT NOT NULL);
"""


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise DependencyMissing("psycopg", "postgres") from None
    return psycopg


def _unreachable(exc: BaseException, dsn: str) -> AuditUnavailable:
    """An error raised while connecting (no statement has run): libpq's own words (connection refused to
    host:port, database "x" does not exist, role "y" does not exist, password authentication failed), which name
    hosts, users and databases, never record contents; the password is removed (``pgconn.connect_error_text``)."""
    return AuditUnavailable(f"audit store (postgresql) cannot connect: {connect_error_text(exc, dsn)}")


def _unavailable(exc: BaseException) -> AuditUnavailable:
    """An error raised by a statement: class and SQLSTATE only. Its message and DETAIL may quote a row's values
    (a unique violation prints the key), so they never reach a message (``pgconn.statement_error_text``)."""
    return AuditUnavailable(f"audit store (postgresql) failed: {statement_error_text(exc)}")


class _Tx(WriteTx):
    def __init__(self, cur: Any, s: str) -> None:
        self.cur = cur
        self.s = s
        self._gen: int | None = None

    def head(self) -> tuple[int, bytes]:
        # The generation comes with the head: the row is locked FOR UPDATE until this transaction ends, so it
        # cannot move under us, and a batch's group commit saves the round trips (one lock holder at a time:
        # every round trip inside the lock is time the other processes wait).
        self.cur.execute(f"SELECT seq, hash, gen FROM {self.s}.head WHERE id = 1 FOR UPDATE")
        row = self.cur.fetchone()
        if row is None:
            return (0, GENESIS)
        self._gen = int(row[2])
        return (int(row[0]), bytes(row[1]))

    def key_generation(self) -> int:
        if self._gen is not None:
            return self._gen
        self.cur.execute(f"SELECT gen FROM {self.s}.head WHERE id = 1")
        row = self.cur.fetchone()
        return 0 if row is None else int(row[0])

    def insert_records(self, rows: list[RecordRow]) -> None:
        # Binary COPY: the sealed bytes go as they are instead of as escaped text twice their size; a group
        # commit of 64 records measured 2.7 -> 1.5 ms here, all of it inside the head-row lock.
        with self.cur.copy(f"COPY {self.s}.records (seq, audit_id, ts, kind, route, subject, sealed, hash) "
                           "FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(_RECORD_TYPES)
            for r in rows:
                cp.write_row(r)  # RecordRow is a tuple in column order

    def set_head(self, seq: int, head: bytes) -> None:
        self.cur.execute(f"UPDATE {self.s}.head SET seq = %s, hash = %s WHERE id = 1", (seq, head))

    def insert_checkpoint(self, cp: dict[str, Any]) -> None:
        self.cur.execute(f"INSERT INTO {self.s}.checkpoints (seq, doc) VALUES (%s, %s)",
                         (cp["seq"], json.dumps(cp, sort_keys=True)))

    def insert_data_keys(self, rows: list[tuple[str, str, str, str, str, bytes]]) -> None:
        with self.cur.copy(f"COPY {self.s}.data_keys (key_id, subject, domain, period, kek_id, wrapped) "
                           "FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(_KEY_TYPES)
            for r in rows:
                cp.write_row(r)


class PostgresStore(AuditStore):
    def __init__(self, url: str, *, create: bool = True, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.url = url
        self.lock_timeout = lock_timeout
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        schema = query.pop("schema", "mlguard")
        if not _SCHEMA_RE.match(schema):
            raise ConfigError("schema must be a lower-case SQL identifier", field="audit.store")
        self.s = schema
        self.dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
        self._pg = _psycopg()
        self._wlock = threading.Lock()
        self._w: Any = None
        self._local = threading.local()
        # DDL only when the tables are missing, under an advisory lock: CREATE INDEX IF NOT EXISTS still takes
        # table locks, which would deadlock against another process already appending.
        with self._txn() as tx:
            if not create:
                if not self._exists(tx, "data_keys"):  # a log made before the oversight table is still a log
                    raise AuditUnavailable(f"no audit log in PostgreSQL schema {schema}")
            elif not self._ready(tx):
                tx.cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"mlguard.ddl.{schema}",))
                if not self._ready(tx):
                    tx.cur.execute(DDL.format(s=schema).replace("%(genesis)s",
                                                                "'\\x" + GENESIS.hex() + "'::bytea"))

    def _ready(self, tx: _Tx) -> bool:
        return self._exists(tx, "oversight")  # the last table the DDL makes

    def _exists(self, tx: _Tx, table: str) -> bool:
        tx.cur.execute("SELECT to_regclass(%s)", (f"{self.s}.{table}",))
        row = tx.cur.fetchone()
        return row is not None and row[0] is not None

    def _connect(self, autocommit: bool) -> Any:
        try:  # connecting: libpq's message is kept (password removed); the statements below: class only
            conn = self._pg.connect(self.dsn, autocommit=autocommit, connect_timeout=5, **liveness(self.dsn))
        except self._pg.Error as exc:
            raise _unreachable(exc, self.dsn) from None  # the cause's text may hold the password verbatim
        try:
            conn.execute("SET synchronous_commit = on")
            if not autocommit:
                # The writer waits at most this long for the head row's lock (another process's batch takes
                # milliseconds; a session left open in a SQL shell, for ever): then the batch fails with
                # AuditUnavailable and the policy's failure_mode answers, instead of every request hanging.
                conn.execute(f"SET lock_timeout = {max(1, round(self.lock_timeout * 1000))}")
            if not autocommit:
                conn.commit()
        except self._pg.Error as exc:
            conn.close()
            raise _unavailable(exc) from None  # its DETAIL may quote a row: not chained
        return conn

    def write(self) -> AbstractContextManager[WriteTx]:
        return self._txn()

    @contextmanager
    def _txn(self) -> Iterator[_Tx]:
        pg = self._pg
        with self._wlock:
            if self._w is None or self._w.closed:
                self._w = self._connect(autocommit=False)
            conn = self._w
            try:
                with conn.cursor() as cur:
                    yield _Tx(cur, self.s)
                conn.commit()
            except pg.Error as exc:
                self._drop(conn)
                raise _unavailable(exc) from None  # its DETAIL may quote a row: not chained
            except BaseException:
                self._drop(conn)
                raise

    def _drop(self, conn: Any) -> None:
        """Roll back, and forget a broken connection so the next batch reconnects (self-healing)."""
        with suppress(self._pg.Error):
            conn.rollback()
        if conn.broken or conn.closed:
            conn.close()
            self._w = None

    @contextmanager
    def _read(self) -> Iterator[Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._connect(autocommit=True)
            self._local.conn = conn
        try:
            with conn.cursor() as cur:
                yield cur
        except self._pg.Error as exc:
            conn.close()
            self._local.conn = None
            raise _unavailable(exc) from None  # its DETAIL may quote a row: not chained

    def head(self) -> tuple[int, bytes]:
        with self._read() as cur:
            cur.execute(f"SELECT seq, hash FROM {self.s}.head WHERE id = 1")
            row = cur.fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))

    def iter_rows(self, *, since_seq: int = 0, since: str | None = None, until: str | None = None,
                  route: str | None = None, subject: str | None = None, kind: str | None = None,
                  to_seq: int | None = None) -> Iterator[RecordRow]:
        where, args = record_filters("%s", since=since, until=until, route=route, subject=subject, kind=kind,
                                     to_seq=to_seq)
        return self._paged(f"SELECT * FROM {self.s}.records WHERE {where} ORDER BY seq LIMIT {PAGE}", args,
                           since_seq, row_from_db)

    def iter_chain(self, *, since_seq: int = 0, to_seq: int | None = None) -> Iterator[ChainRow]:
        where, args = record_filters("%s", since=None, until=None, route=None, subject=None, to_seq=to_seq)
        return self._paged(f"SELECT seq, sealed, hash FROM {self.s}.records WHERE {where} ORDER BY seq LIMIT {PAGE}",
                           args, since_seq, chain_row_from_db)

    def iter_verify(self, *, since_seq: int = 0, to_seq: int | None = None) -> Iterator[VerifyRow]:
        where, args = record_filters("%s", since=None, until=None, route=None, subject=None, to_seq=to_seq)
        return self._paged(f"SELECT {VERIFY_COLUMNS} FROM {self.s}.records WHERE {where} ORDER BY seq LIMIT {PAGE}",
                           args, since_seq, verify_row_from_db)

    def _paged(self, sql: str, args: list[str | int], since_seq: int, make: Callable[[Any], T]) -> Iterator[T]:
        """``sql`` (its first parameter the last seq seen, then ``args``) a page at a time on the read connection."""

        def fetch(last: int) -> Any:
            with self._read() as cur:
                cur.execute(sql, (last, *args))
                return cur.fetchall()

        return paged_rows(fetch, since_seq, PAGE, make)

    def get_row(self, audit_id: str) -> RecordRow | None:
        with self._read() as cur:
            cur.execute(f"SELECT * FROM {self.s}.records WHERE audit_id = %s", (audit_id,))
            r = cur.fetchone()
        return None if r is None else row_from_db(r)

    def count(self) -> int:
        with self._read() as cur:
            cur.execute(f"SELECT count(*) FROM {self.s}.records")
            return int(cur.fetchone()[0])

    def add_checkpoint(self, cp: dict[str, Any]) -> None:
        with self._txn() as tx:
            tx.insert_checkpoint(cp)

    def checkpoints(self) -> list[dict[str, Any]]:
        with self._read() as cur:
            cur.execute(f"SELECT doc FROM {self.s}.checkpoints ORDER BY id")
            return [json.loads(r[0]) for r in cur.fetchall()]

    def put_public_keys(self, keys: dict[str, bytes]) -> None:
        with self._txn() as tx:
            for kid, pub in keys.items():
                tx.cur.execute(f"INSERT INTO {self.s}.public_keys VALUES (%s, %s) ON CONFLICT DO NOTHING",
                               (kid, pub))

    def public_keys(self) -> dict[str, bytes]:
        with self._read() as cur:
            cur.execute(f"SELECT kid, pub FROM {self.s}.public_keys")
            return {str(k): bytes(v) for k, v in cur.fetchall()}

    def get_data_key(self, key_id: str) -> tuple[str, str, str, str, bytes] | None:
        with self._read() as cur:
            cur.execute(f"SELECT subject, domain, period, kek_id, wrapped FROM {self.s}.data_keys "
                        "WHERE key_id = %s", (key_id,))
            r = cur.fetchone()
        return None if r is None else (str(r[0]), str(r[1]), str(r[2]), str(r[3]), bytes(r[4]))

    def get_data_keys(self, key_ids: Sequence[str]) -> dict[str, tuple[str, str, str, str, bytes]]:
        out = {}
        ids = list(key_ids)
        for i in range(0, len(ids), KEYS_PER_QUERY):
            with self._read() as cur:
                cur.execute(f"SELECT key_id, subject, domain, period, kek_id, wrapped FROM {self.s}.data_keys "
                            "WHERE key_id = ANY(%s)", (ids[i:i + KEYS_PER_QUERY],))
                rows = cur.fetchall()
            for r in rows:
                out[str(r[0])] = (str(r[1]), str(r[2]), str(r[3]), str(r[4]), bytes(r[5]))
        return out

    def delete_data_keys(self, *, subject: str | None = None, before_period: str | None = None) -> list[str]:
        cond, arg = ("subject = %s", subject) if subject is not None else ("period < %s", before_period)
        if arg is None:
            return []
        with self._txn() as tx:
            tx.cur.execute(f"DELETE FROM {self.s}.data_keys WHERE {cond} RETURNING key_id", (arg,))
            ids = [str(r[0]) for r in tx.cur.fetchall()]
            tx.cur.execute(f"UPDATE {self.s}.head SET gen = gen + 1 WHERE id = 1")
        self._vacuum_keys()
        return ids

    def _vacuum_keys(self) -> None:
        """Reclaim the dead row versions a shred or rewrap leaves (they hold wrapped keys); VACUUM cannot run in
        a transaction, so on the autocommit read connection. The space is freed for reuse, not zeroed."""
        with self._read() as cur:
            cur.execute(f"VACUUM {self.s}.data_keys")

    def data_key_counts(self) -> dict[str, int]:
        with self._read() as cur:
            cur.execute(f"SELECT kek_id, count(*) FROM {self.s}.data_keys GROUP BY kek_id")
            return {str(k): int(n) for k, n in cur.fetchall()}

    def data_keys_under(self, kek_ids: Sequence[str], after: str, limit: int) -> list[DataKeyRow]:
        if not kek_ids:
            return []
        with self._read() as cur:
            cur.execute(f"SELECT key_id, subject, domain, period, kek_id, wrapped FROM {self.s}.data_keys "
                        "WHERE kek_id = ANY(%s) AND key_id > %s ORDER BY key_id LIMIT %s",
                        (list(kek_ids), after, limit))
            return [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), bytes(r[5])) for r in cur.fetchall()]

    def rewrap_data_keys(self, rows: Sequence[tuple[str, str, str, bytes]]) -> int:
        changed = 0
        if not rows:
            return 0
        with self._txn() as tx:
            for key_id, old, new, wrapped in rows:
                tx.cur.execute(f"UPDATE {self.s}.data_keys SET kek_id = %s, wrapped = %s "
                               "WHERE key_id = %s AND kek_id = %s", (new, wrapped, key_id, old))
                changed += max(tx.cur.rowcount, 0)
        self._vacuum_keys()
        return changed

    def subject_periods(self, subject: str) -> list[str]:
        with self._read() as cur:
            cur.execute(f"SELECT DISTINCT period FROM {self.s}.data_keys WHERE subject = %s "
                        "ORDER BY period", (subject,))
            return [str(r[0]) for r in cur.fetchall()]

    def drop_schema(self) -> None:
        """Drop this store's schema (tests and benchmarks clean up with it)."""
        with self._txn() as tx:
            tx.cur.execute(f"DROP SCHEMA IF EXISTS {self.s} CASCADE")

    def oversight(self) -> dict[str, tuple[bool, bool]]:
        with self._read() as cur:
            cur.execute(f"SELECT route, halted, override FROM {self.s}.oversight")
            return {str(r[0]): (bool(r[1]), bool(r[2])) for r in cur.fetchall()}

    def put_oversight(self, route_key: str, halted: bool, override: bool, ts: str) -> None:
        with self._txn() as tx:
            tx.cur.execute(f"INSERT INTO {self.s}.oversight VALUES (%s, %s, %s, %s) ON CONFLICT (route) DO UPDATE "
                           "SET halted = excluded.halted, override = excluded.override, ts = excluded.ts",
                           (route_key, halted, override, ts))

    def close(self) -> None:
        with self._wlock:
            if self._w is not None:
                self._w.close()
                self._w = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

"""The store contract, and the SQL both backends share.

Why one contract: the chain, sealing, verify and export never know which database holds the log; the same
contract test suite runs against SQLite and PostgreSQL (tests/audit/test_store_contract.py).

Tables: ``records`` (seq, audit_id, ts, kind, route, subject pseudonym, sealed bytes, chain hash), ``head``
(one row: last seq and chain hash, updated in the same transaction as the records: a store whose rows end
before its head was truncated), ``checkpoints`` (signed JSON), ``public_keys`` (Ed25519, by key id) and
``data_keys`` (per-subject data keys, wrapped by a KEK; deleting them is shredding).

Write transactions are exclusive (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``SELECT ... FOR UPDATE`` on the head
row), so any number of processes append to one consistent chain: each batch reads the head, seals and chains
its records after it, and commits records and head together.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, TypeVar

from mlguard.errors import ConfigError

T = TypeVar("T")


class RecordRow(NamedTuple):
    """One stored record. A NamedTuple (immutable, attribute access) so that it is already the parameter tuple
    ``executemany`` binds, in column order: no per-record conversion on the writer thread."""

    seq: int
    audit_id: str
    ts: str
    kind: str
    route: str | None
    subject: str | None
    sealed: bytes
    hash: bytes


class ChainRow(NamedTuple):
    """What verifying needs of a record: its place, its sealed bytes and its stored chain hash."""

    seq: int
    sealed: bytes
    hash: bytes


VerifyRow = tuple[int, bytes, bytes, str, str, str, str | None, str | None]
"""What verify reads of a record: (seq, sealed, hash), then the clear columns the store filters on (audit_id, ts,
kind, route, subject), which are not in the chain: verify compares them with the sealed header, which is. A plain
tuple, not a NamedTuple: building one per row cost 0.14 us here, where verifying a record costs 4 us."""


VERIFY_COLUMNS = "seq, sealed, hash, audit_id, ts, kind, route, subject"
"""The columns of a VerifyRow, in its order (both stores' ``iter_verify`` select them)."""


def row_from_db(r: Sequence[Any]) -> RecordRow:
    """A RecordRow from a database row in column order (drivers hand blobs back as memoryview or bytes)."""
    return RecordRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7]))


def record_filters(placeholder: str, *, since: str | None, until: str | None, route: str | None,
                   subject: str | None, kind: str | None = None, to_seq: int | None = None
                   ) -> tuple[str, list[str | int]]:
    """The WHERE clause (after ``seq > ?``) and its arguments shared by both stores' ``iter_rows``."""
    where, args = [f"seq > {placeholder}"], []
    for cond, val in (("ts >=", since), ("ts <", until), ("route =", route), ("subject =", subject),
                      ("kind =", kind), ("seq <=", to_seq)):
        if val is not None:
            where.append(f"{cond} {placeholder}")
            args.append(val)
    return " AND ".join(where), args


def paged_rows(fetch: Callable[[int], Sequence[Sequence[Any]]], since_seq: int, page: int,
               make: Callable[[Sequence[Any]], T]) -> Iterator[T]:
    """Stream records in seq order, ``page`` at a time: ``fetch(last_seq)`` returns the next page after it (rows
    starting with seq), each turned into ``make(row)`` (``row_from_db``, ``chain_row_from_db``)."""
    last = since_seq
    while True:
        rows = fetch(last)
        yield from map(make, rows)
        if len(rows) < page:
            return
        last = rows[-1][0]


def chain_row_from_db(r: Sequence[Any]) -> ChainRow:
    """A ChainRow from (seq, sealed, hash) as a driver hands them back (memoryview or bytes)."""
    return ChainRow(r[0], bytes(r[1]), bytes(r[2]))


def verify_row_from_db(r: Sequence[Any]) -> VerifyRow:
    """A VerifyRow from its columns (VERIFY_COLUMNS) as a driver hands them back (memoryview or bytes)."""
    return (r[0], bytes(r[1]), bytes(r[2]), r[3], r[4], r[5], r[6], r[7])


DataKeyRow = tuple[str, str, str, str, str, bytes]
"""(key_id, subject, domain, period, kek_id, wrapped): one row of the data_keys table."""


class WriteTx(ABC):
    """One exclusive write transaction (see the module docstring)."""

    @abstractmethod
    def head(self) -> tuple[int, bytes]: ...

    @abstractmethod
    def key_generation(self) -> int:
        """A counter bumped by every deletion of data keys: writers drop their cached keys when it moves."""

    @abstractmethod
    def insert_records(self, rows: list[RecordRow]) -> None: ...

    @abstractmethod
    def set_head(self, seq: int, head: bytes) -> None: ...

    @abstractmethod
    def insert_data_keys(self, rows: list[tuple[str, str, str, str, str, bytes]]) -> None:
        """Insert (key_id, subject, domain, period, kek_id, wrapped) rows."""

    @abstractmethod
    def insert_checkpoint(self, cp: dict[str, Any]) -> None:
        """Insert a signed checkpoint. The writer signs the head its own transaction sets and inserts the
        checkpoint in that transaction: no second transaction and fsync per checkpoint."""


class AuditStore(ABC):
    """What the audit trail needs from a database. Read methods may run on any thread."""

    url: str

    @abstractmethod
    def write(self) -> AbstractContextManager[WriteTx]:
        """An exclusive transaction, committed (durably) on normal exit, rolled back on error."""

    @abstractmethod
    def head(self) -> tuple[int, bytes]: ...

    @abstractmethod
    def iter_rows(self, *, since_seq: int = 0, since: str | None = None, until: str | None = None,
                  route: str | None = None, subject: str | None = None, kind: str | None = None,
                  to_seq: int | None = None) -> Iterator[RecordRow]:
        """Rows with ``since_seq < seq <= to_seq`` in seq order, fetched in pages (constant memory); ``kind`` is
        the clear ``kind`` column. (A seq window is what one process of a parallel export reads.)"""

    def iter_chain(self, *, since_seq: int = 0, to_seq: int | None = None) -> Iterator[ChainRow]:
        """(seq, sealed, hash) in seq order, constant memory: what verify reads. Stores override it with a query
        of those three columns (verify is bound by reading rows, not by hashing them)."""
        for r in self.iter_rows(since_seq=since_seq, to_seq=to_seq):
            yield ChainRow(r.seq, r.sealed, r.hash)

    def iter_verify(self, *, since_seq: int = 0, to_seq: int | None = None) -> Iterator[VerifyRow]:
        """``iter_chain`` with the clear columns (audit id, ts, kind, route, subject): what ``mlguard audit verify``
        reads, to check them against each record's sealed header. Stores override it with a query of those
        columns only (no per-row conversion through RecordRow)."""
        for r in self.iter_rows(since_seq=since_seq, to_seq=to_seq):
            yield r.seq, r.sealed, r.hash, r.audit_id, r.ts, r.kind, r.route, r.subject

    @abstractmethod
    def get_row(self, audit_id: str) -> RecordRow | None: ...

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def add_checkpoint(self, cp: dict[str, Any]) -> None: ...

    @abstractmethod
    def checkpoints(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    def put_public_keys(self, keys: dict[str, bytes]) -> None: ...

    @abstractmethod
    def public_keys(self) -> dict[str, bytes]: ...

    @abstractmethod
    def get_data_key(self, key_id: str) -> tuple[str, str, str, str, bytes] | None:
        """(subject, domain, period, kek_id, wrapped) or None when shredded."""

    def get_data_keys(self, key_ids: Sequence[str]) -> dict[str, tuple[str, str, str, str, bytes]]:
        """``get_data_key`` for many ids at once (a reader's prefetch for a page of records); shredded ids are
        absent. Stores override it with one query per few hundred ids."""
        out = {}
        for k in key_ids:
            row = self.get_data_key(k)
            if row is not None:
                out[k] = row
        return out

    @abstractmethod
    def delete_data_keys(self, *, subject: str | None = None, before_period: str | None = None) -> list[str]:
        """Delete (shred) data keys of a subject or of every day before ``before_period``; their ids."""

    @abstractmethod
    def data_key_counts(self) -> dict[str, int]:
        """KEK id -> how many data keys it wraps (``mlguard keys retire`` refuses a KEK that still wraps one)."""

    @abstractmethod
    def data_keys_under(self, kek_ids: Sequence[str], after: str, limit: int) -> list[DataKeyRow]:
        """Up to ``limit`` data-key rows wrapped by one of ``kek_ids`` whose key id sorts after ``after``, in key
        id order (``mlguard audit rewrap`` pages through them)."""

    @abstractmethod
    def rewrap_data_keys(self, rows: Sequence[tuple[str, str, str, bytes]]) -> int:
        """(key_id, old kek_id, new kek_id, new wrapped): replace each key's wrapping, in one transaction, where
        the key still exists under its old KEK (one shredded or rewrapped meanwhile is left alone); returns how
        many rows changed. What becomes of the old wrapped bytes is the store's (as after ``delete_data_keys``):
        SQLite overwrites them and truncates its WAL; PostgreSQL vacuums the table, which frees the space without
        zeroing it, so a KEK that wrapped them is only out of the picture once it is retired (README)."""

    @abstractmethod
    def subject_periods(self, subject: str) -> list[str]:
        """Days (YYYY-MM-DD) for which ``subject`` has data keys."""

    @abstractmethod
    def oversight(self) -> dict[str, tuple[bool, bool]]:
        """Route key -> (halted, override): the human-oversight state every worker on this store shares."""

    @abstractmethod
    def put_oversight(self, route_key: str, halted: bool, override: bool, ts: str) -> None:
        """Record that a route was stopped or resumed (``override``: resumed by a human despite a fairness
        violation, so a block must not stop it again until the status has left violation)."""

    @abstractmethod
    def close(self) -> None: ...


def cp_from_json(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(text)
    return doc


LOCK_TIMEOUT = 30.0
"""Default seconds a write waits for the store's write lock (``audit.lock_timeout``)."""


def open_store(url: str, *, create: bool = True, lock_timeout: float = LOCK_TIMEOUT) -> AuditStore:
    """Open ``sqlite:///PATH`` or ``postgresql://...`` (``?schema=NAME`` picks a PostgreSQL schema).

    ``create=False`` (readers: verify, export, the CLI) refuses a log that does not exist instead of creating an
    empty one: verifying a mistyped path or schema must fail, not report an intact empty log.
    ``lock_timeout``: seconds a write transaction waits for the write lock that another process (or a person in
    a SQL shell) holds before it fails with AuditUnavailable; without a bound, a lock never released would
    leave every sync request waiting for ever.
    """
    if url.startswith("sqlite:///"):
        from mlguard.audit.store.sqlite import SQLiteStore
        from mlguard.config.audit import sqlite_store_problem

        problem = sqlite_store_problem(url)  # also checked at config check; here for stores opened by URL
        if problem is not None:
            raise ConfigError(problem, field="audit.store")

        return SQLiteStore(url, create=create, lock_timeout=lock_timeout)
    if url.startswith(("postgresql://", "postgres://")):
        from mlguard.audit.store.postgres import PostgresStore

        return PostgresStore(url, create=create, lock_timeout=lock_timeout)
    raise ConfigError("audit store URL must start with sqlite:/// or postgresql://", field="audit.store")

"""Fixtures of the audit tests: a deterministic keyring, and one store per backend (same contract suite)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlguard.audit.store.base import AuditStore, open_store
from mlguard.keys import Keyring
from tests.pg import PG_URL, require_pg


def pg_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}schema={schema}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.from_seed(b"mlguard-test-seed-0123456789abcdef")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    yield from _pg_store_url()


def _pg_store_url() -> Iterator[str]:
    """A PostgreSQL URL with a schema unique to this test; the schema is dropped afterwards."""
    require_pg()
    url = pg_url(f"mlg_test_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    yield url
    from mlguard.audit.store.postgres import PostgresStore

    store = PostgresStore(url)
    store.drop_schema()
    store.close()


@pytest.fixture
def pg_store_url() -> Iterator[str]:
    yield from _pg_store_url()


@pytest.fixture
def store(store_url: str) -> Iterator[AuditStore]:
    s = open_store(store_url)
    yield s
    s.close()


def raw_sql(store: AuditStore, stmt: str, *params: Any) -> None:
    """Run a raw statement on either store, as a tamperer would ({t}: the table prefix, ?: the placeholder)."""
    with store._txn() as tx:  # type: ignore[attr-defined]
        if hasattr(tx, "cur"):
            tx.cur.execute(stmt.format(t=f"{store.s}.").replace("?", "%s"), params)  # type: ignore[attr-defined]
        else:
            tx.c.execute(stmt.format(t=""), params)


def records_of_kind(tmp_path: Path, kind: str, keyring: str = "mlguard.keyring") -> list[dict[str, Any]]:
    """The records of ``kind`` in ``tmp_path``'s audit.db (keyring ``tmp_path/keyring``), decrypted."""
    from mlguard.audit.reader import AuditReader

    reader = AuditReader(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / keyring)
    try:
        return [r for r in reader.iter_records() if r["kind"] == kind]
    finally:
        reader.close()


def tombstones(tmp_path: Path) -> list[dict[str, Any]]:
    """The tombstone records of ``tmp_path``'s audit.db (keyring mlguard.keyring), decrypted."""
    return records_of_kind(tmp_path, "tombstone")


@pytest.fixture
def proxied_url(pg_store_url: str) -> Iterator[tuple[str, Any]]:
    """The PostgreSQL store URL through a CuttableProxy this test owns (tests/audit/test_pg_outage.py), and it."""
    from urllib.parse import urlsplit, urlunsplit

    from tests.audit.test_pg_outage import CuttableProxy

    parts = urlsplit(pg_store_url)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = (f"{parts.username}@" if parts.username else "") + f"127.0.0.1:{proxy.port}"
    yield urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), proxy
    proxy.cut()

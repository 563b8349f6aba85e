"""Every PostgreSQL connection the guard opens has TCP keepalives and a user timeout on its socket, so a wait on a
host that went silent (no reset) ends in an error instead of lasting for ever; a URL's own settings win.

Read from the connected socket itself (getsockopt), not from what was passed: what libpq applied is the point.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mlguard.audit.store.postgres import PostgresStore
from mlguard.fairness.shared_pg import SharedWindow
from tests.pg import PG_URL, require_pg


@pytest.fixture
def pg() -> None:
    require_pg()


def _sock_opts(conn: Any) -> dict[str, int]:
    s = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        return {"keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                "idle": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                "interval": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                "count": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                "user_timeout": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)}
    finally:
        s.close()


DEFAULT = {"keepalive": 1, "idle": 10, "interval": 5, "count": 3, "user_timeout": 30000}


@pytest.fixture
def schema() -> Iterator[str]:
    import psycopg

    name = f"mlg_live_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _with(url: str, extra: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def test_audit_store_connections_carry_tcp_liveness(pg: None, schema: str) -> None:
    store = PostgresStore(_with(PG_URL, f"schema={schema}"))
    try:
        store.head()  # a reader connection of this thread
        assert _sock_opts(store._w) == DEFAULT  # the writer's, opened by the schema check
        assert _sock_opts(store._local.conn) == DEFAULT
    finally:
        store.close()


def test_a_url_setting_wins(pg: None, schema: str) -> None:
    store = PostgresStore(_with(PG_URL, f"schema={schema}&keepalives_idle=42&tcp_user_timeout=5000"))
    try:
        assert _sock_opts(store._w) == {**DEFAULT, "idle": 42, "user_timeout": 5000}
    finally:
        store.close()


def test_shared_fairness_window_connection_carries_tcp_liveness(pg: None) -> None:
    import psycopg

    name = f"mlg_live_f_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        window = SharedWindow(_with(PG_URL, f"options=-csearch_path%3D{name}"), route="/r", attributes=["sex"],
                              size=100, secret=b"s" * 32)
        try:
            assert _sock_opts(window._conn) == DEFAULT
        finally:
            window.close()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")

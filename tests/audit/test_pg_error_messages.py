"""PostgreSQL errors say what went wrong: an error raised while connecting carries libpq's words (connection
refused, no such database, no such role, password authentication failed) with the password removed; an error
raised by a statement is reduced to its class and SQLSTATE, since its DETAIL may quote a row's values.

A refused port (127.0.0.1:1) needs no server; the others use the test server at MLGUARD_TEST_PG.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from click.testing import CliRunner

from mlguard.audit.store.postgres import PostgresStore
from mlguard.cli import cli
from mlguard.errors import AuditUnavailable, FairnessError
from mlguard.pgconn import connect_error_text, redact_password, statement_error_text
from tests.audit.conftest import pg_url
from tests.pg import PG_URL, require_pg

SECRET = "s3cr3t-Pw-417"
REFUSED = f"postgresql://app:{SECRET}@127.0.0.1:1/mlguard"


def _with(user: str | None = None, database: str | None = None, password: str = SECRET) -> str:
    """PG_URL with this password (the test server trusts local connections, so it is ignored) and maybe another
    user or database."""
    parts = urlsplit(PG_URL)
    netloc = f"{user or parts.username or 'root'}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, f"/{database}" if database else parts.path, parts.query, ""))


def _store_error(url: str) -> str:
    with pytest.raises(AuditUnavailable) as info:
        PostgresStore(url, create=False)
    return str(info.value)


# ---------------------------------------------------------------------------------------------- connecting


def test_a_refused_port_is_named_and_the_password_is_not() -> None:
    msg = _store_error(REFUSED)
    assert "Connection refused" in msg and '"127.0.0.1", port 1' in msg, msg
    assert SECRET not in msg
    assert "\n" not in msg  # libpq's hint line joined: one line in a log or on a terminal


def test_audit_verify_on_a_refused_port_says_why() -> None:
    res = CliRunner().invoke(cli, ["audit", "verify", "--store", REFUSED])
    assert res.exit_code == 2, res.output
    assert "Connection refused" in res.output and "port 1" in res.output, res.output
    assert SECRET not in res.output


@pytest.mark.postgres
@pytest.mark.parametrize("part", ["database", "user"])
def test_a_missing_database_or_role_is_named(part: str) -> None:
    require_pg()
    name = f"mlguard_no{part}_{uuid.uuid4().hex[:8]}"
    msg = _store_error(_with(**{part: name}))
    assert f'{"role" if part == "user" else part} "{name}" does not exist' in msg, msg
    assert SECRET not in msg


def test_a_failed_password_is_reported_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test server trusts local connections, so libpq's answer to a wrong password is played back; this one
    also quotes the URL, as a message of a library in between might."""

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise psycopg.OperationalError(
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  password '
            f'authentication failed for user "app" (url postgresql://app:{SECRET}@10.0.0.5/mlguard)')

    monkeypatch.setattr(psycopg, "connect", refuse)
    msg = _store_error(f"postgresql://app:{SECRET}@10.0.0.5:5432/mlguard")
    assert 'password authentication failed for user "app"' in msg, msg
    assert SECRET not in msg and "postgresql://app:***@10.0.0.5/mlguard" in msg


@pytest.mark.parametrize("password", ["s3c%zzret-x", "s3c ret-x", "pa@ss-word"])
def test_a_malformed_url_quoting_its_password_does_not_show_it(password: str) -> None:
    """libpq quotes the piece of a URL it cannot parse, which can be the password (a bad percent escape, a
    space), or reports part of it as the host (an unescaped "@")."""
    msg = _store_error(f"postgresql://app:{password}@127.0.0.1:1/mlguard")
    for piece in (password, password.split("@")[-1] + "@"):
        assert piece not in msg, msg
    assert "cannot connect" in msg


def test_redaction_covers_every_way_a_password_is_written() -> None:
    text = ("a postgresql://u:hunter2x@h/db; password=hunter2x password='hunter 2' password = other9 "
            "https://v:zz-top@host ?password=q1w2e3&x=1")
    assert redact_password(text, "host=h password=hunter2x") == (
        "a postgresql://u:***@h/db; password=*** password=*** password = *** https://v:***@host ?password=***&x=1")
    msg = connect_error_text(psycopg.OperationalError("bad: hunter%202 / hunter 2"), "postgresql://u:hunter%202@h/d")
    assert "hunter" not in msg
    assert connect_error_text(psycopg.OperationalError("x" * 1000), "postgresql://h/d").endswith("...")


# ---------------------------------------------------------------------------------------------- statements


@pytest.fixture
def pg_store() -> Iterator[PostgresStore]:
    require_pg()
    store = PostgresStore(pg_url(f"mlg_err_{uuid.uuid4().hex[:8]}"))
    yield store
    store.drop_schema()
    store.close()


@pytest.mark.postgres
def test_a_statement_error_is_reduced_to_class_and_sqlstate(pg_store: PostgresStore) -> None:
    """A unique violation's DETAIL quotes the key (``Key (kid)=(...) already exists``): none of it is kept."""
    value = f"row-value-{uuid.uuid4().hex}"
    with pg_store._txn() as tx:
        tx.cur.execute(f"INSERT INTO {pg_store.s}.public_keys VALUES (%s, %s)", (value, b"k"))
    with pytest.raises(AuditUnavailable) as info, pg_store._txn() as tx:
        tx.cur.execute(f"INSERT INTO {pg_store.s}.public_keys VALUES (%s, %s)", (value, b"k"))
    assert str(info.value) == "audit store (postgresql) failed: UniqueViolation (SQLSTATE 23505)"
    assert statement_error_text(ValueError(value)) == "ValueError"
    pg_store.put_public_keys({"k2": b"p"})  # the writer answers again after the failed statement
    assert "k2" in pg_store.public_keys()


# ---------------------------------------------------------------------------------------------- shared fairness


def test_the_shared_fairness_store_says_why_it_cannot_connect() -> None:
    from mlguard.fairness.shared_pg import SharedWindow, erase_decisions

    with pytest.raises(FairnessError) as info:
        SharedWindow(REFUSED, route="/r", attributes=["sex"], size=10, secret=b"k" * 32)
    assert "Connection refused" in str(info.value) and SECRET not in str(info.value), info.value
    with pytest.raises(FairnessError) as info:
        erase_decisions(REFUSED, b"k" * 32, ["a"])
    assert "Connection refused" in str(info.value) and SECRET not in str(info.value), info.value


@pytest.mark.postgres
def test_the_shared_fairness_window_says_why_it_cannot_reconnect() -> None:
    """A window whose connection broke reconnects at its next call; when that fails, the error says why."""
    from mlguard.fairness.shared_pg import SharedWindow

    require_pg()
    w = SharedWindow(PG_URL, route=f"/err-{uuid.uuid4().hex[:8]}", attributes=["sex"], size=10, secret=b"k" * 32)
    try:
        w._conn.close()
        w._url = REFUSED  # the server moved: the reconnection is refused
        with pytest.raises(FairnessError) as info:
            w.add({"sex": "Female"}, True)
        assert "Connection refused" in str(info.value) and SECRET not in str(info.value), info.value
    finally:
        w._conn = None
        w._url = PG_URL

"""PostgreSQL for tests: where it is, and the one rule for when it is not there.

Why one place: PostgreSQL tests must run in CI (``CI`` set: an unreachable server fails the test) and skip with
a clear reason on a machine without it; every area's PostgreSQL tests apply that same rule.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_URL = os.environ.get("MLGUARD_TEST_PG", "postgresql://root@127.0.0.1:5432/test")


def pg_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except Exception:
        return False


def require_pg() -> None:
    """Return when PostgreSQL answers; otherwise fail under CI, skip (saying why) elsewhere."""
    if pg_reachable():
        return
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL at {PG_URL} is unreachable and CI is set: PostgreSQL tests must run in CI")
    pytest.skip(f"PostgreSQL at {PG_URL} is unreachable (set MLGUARD_TEST_PG, or CI=1 to make this a failure)")


@contextmanager
def fresh_schema_url(prefix: str) -> Iterator[str]:
    """PG_URL with its search_path set to a new schema of this test (its tables start missing), dropped after."""
    require_pg()
    import psycopg

    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

"""Several processes start on one shared-window database at once (``mlguard serve --workers N``).

Before: every SharedWindow ran ``CREATE TABLE IF NOT EXISTS`` at start. Two sessions that both find a table
missing both create it and the second fails (UniqueViolation on pg_type): on a fresh database one of two workers
failed to build its guard, every time here. And when the tables existed, ``CREATE INDEX IF NOT EXISTS`` still
waited for the table lock behind any in-flight decision insert.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from mlguard.fairness.shared_pg import SharedWindow
from tests.pg import fresh_schema_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema of this test (dropped afterwards): the tables start missing."""
    with fresh_schema_url("mlg_fair_start") as url:
        yield url


def _open(url: str) -> SharedWindow:
    return SharedWindow(url, route="/r", attributes=["sex"], size=100, secret=b"s" * 32)


def test_simultaneous_first_starts_all_succeed(schema_url: str) -> None:
    n = 6
    barrier = threading.Barrier(n)
    errors: list[str] = []
    windows: list[SharedWindow] = []

    def start() -> None:
        barrier.wait()
        try:
            windows.append(_open(schema_url))
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=start) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(windows) == n
    windows[0].add({"sex": "F"}, pred=True, audit_id="a1")
    assert all(len(w) == 1 for w in windows)  # one set of tables, seen by all
    for w in windows:
        w.close()


def test_start_does_not_wait_for_a_writer_when_the_tables_exist(schema_url: str) -> None:
    import psycopg

    _open(schema_url).close()
    writer = psycopg.connect(schema_url)  # another worker, in the middle of recording a decision
    try:
        writer.execute("INSERT INTO mlguard_fairness_decisions (audit_id, route, bucket, groups, pred) "
                       "VALUES ('x', '/r', 1, '\\x00', true)")
        # lock_timeout turns "waits behind the writer" into an error instead of a hang
        _open(schema_url + "%20-clock_timeout%3D2000").close()
    finally:
        writer.rollback()
        writer.close()

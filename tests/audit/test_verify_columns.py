"""`audit verify` compares each record's clear columns with its sealed header, on every store and every path.

The columns (audit_id, ts, kind, route, subject) are what ``export --since/--until/--route/--subject`` select by,
and the chain does not cover them; the sealed header holds the same values and is covered. An edited column used
to pass verify (exit 0) and misdirect filtered exports. Windows are tiny (4 records) so edits land on a window's
first and last records, where a worker hands over to the next.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlguard.audit import parallel
from mlguard.audit.record import Pending, canonical, event, iso, pseudonym
from mlguard.audit.store.base import AuditStore, open_store
from mlguard.audit.verify import column_problem, columns_match, verify_log, verify_store
from mlguard.audit.writer import AuditWriter
from mlguard.cli import cli
from mlguard.keys import Keyring
from tests.audit.conftest import raw_sql

T0 = 1_790_000_000.0
N = 24
W = 4
ODD_ROUTE = '/a "quoted" \\ route é\n'  # escaped in the header (backslash, quote, newline), raw in the column


@pytest.fixture(autouse=True)
def _fork_as_the_cli_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forked workers as the CLI gets them (an idle thread left by another test must not prevent the fork)."""
    monkeypatch.setattr(parallel, "other_threads", lambda: False)


def _fill(store: AuditStore, keyring: Keyring) -> None:
    """N records: exchanges with a subject, a clear event with neither subject nor route (seq 6), an exchange
    without subject (seq 7) and one on a route whose header text is escaped (seq 9); checkpoints at 8 and 16."""
    w = AuditWriter(store, keyring)
    for i in range(1, N + 1):
        if i == 6:
            item = event(f"ev-{i}", T0 + i, "gap", {"count": 0}, clear=True)
        else:
            route = ODD_ROUTE if i == 9 else f"/r{i % 3}"
            subject = None if i == 7 else pseudonym(keyring, f"s{i % 5}")
            item = Pending(f"id-{i:03d}", iso(T0 + 3600 * i), "exchange", route, subject,
                           canonical({"i": i}), canonical({"sex": "F"}) if i % 2 else None)
        w.append_now([item])
        if i in (8, 16):
            w.checkpoint()


def _verdicts(url: str) -> list[dict[str, Any]]:
    """The verdict of every path: one process over iter_rows (verify_log), then verify_store in one process
    and with two workers (the worker's hot loop)."""
    store = open_store(url, create=False)
    try:
        one = verify_log(store.iter_rows(), head=store.head(), checkpoints=store.checkpoints(),
                         public_keys=store.public_keys()).as_dict()
    finally:
        store.close()
    return [one] + [verify_store(url, jobs=jobs, window=W).as_dict() for jobs in (1, 2)]


EDITS = {  # column -> (seq, new value): first and last of a window, a record with nulls, the escaped route
    "audit_id": (5, "id-other"),
    "ts": (8, "2020-01-01T00:00:00.000000Z"),
    "kind": (9, "admin_read"),
    "route": (12, "/other"),
    "subject": (13, "deadbeef"),
}


def test_an_unedited_log_verifies_on_every_path(store_url: str, keyring: Keyring) -> None:
    store = open_store(store_url)
    try:
        _fill(store, keyring)
    finally:
        store.close()
    for got in _verdicts(store_url):
        assert got["ok"] and got["records"] == N, got


def _fill_and_edit(store_url: str, keyring: Keyring, column: str, value: str | None, seq: int) -> None:
    """Write the test log, then edit one record's clear column as a tamperer would."""
    store = open_store(store_url)
    try:
        _fill(store, keyring)
        raw_sql(store, f"UPDATE {{t}}records SET {column} = ? WHERE seq = ?", value, seq)
    finally:
        store.close()


@pytest.mark.parametrize("column", list(EDITS))
def test_each_edited_column_is_found_at_its_seq(store_url: str, keyring: Keyring, column: str) -> None:
    seq, value = EDITS[column]
    _fill_and_edit(store_url, keyring, column, value, seq)
    verdicts = _verdicts(store_url)
    assert verdicts[1:] == [verdicts[0]] * 2  # the same report whichever path found it
    got = verdicts[0]
    assert (got["ok"], got["seq"], got["records"]) == (False, seq, seq - 1), got
    assert f"store column {column} differs from the record's sealed header" in got["problem"]
    text = " ".join(str(got[k]) for k in ("problem", "expected", "calculated"))
    assert value not in text  # column names and seq, never a value


@pytest.mark.parametrize(("column", "seq", "value"), [
    ("subject", 3, None),  # a subject removed
    ("subject", 7, "deadbeef"),  # a subject given to a record without one
    ("route", 6, "/r1"),  # a route given to a clear event (null in its header)
    ("route", 9, ODD_ROUTE.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")),  # its JSON text
    ("route", 9, ODD_ROUTE.strip()),
])
def test_null_and_escaped_values_are_compared_exactly(store_url: str, keyring: Keyring, column: str, seq: int,
                                                      value: str | None) -> None:
    """The column text is never trusted to be the header's JSON: a column holding the header's escaped text of
    its value (backslashes and all) is as wrong as any other value."""
    _fill_and_edit(store_url, keyring, column, value, seq)
    for got in _verdicts(store_url):
        assert (got["ok"], got["seq"]) == (False, seq), got
        assert f"store column {column} differs" in got["problem"]


def test_several_columns_edited_are_named_together_and_the_first_record_wins(tmp_path: Path,
                                                                             keyring: Keyring) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    try:
        _fill(store, keyring)
        raw_sql(store, "UPDATE records SET ts = ?, subject = ? WHERE seq = ?", "2020-01-01T00:00:00.000000Z", "x", 17)
        raw_sql(store, "UPDATE records SET kind = ? WHERE seq = ?", "gap", 21)
    finally:
        store.close()
    for got in _verdicts(url):
        assert got["seq"] == 17 and "store columns ts, subject differ" in got["problem"], got


def test_an_edited_record_is_reported_as_edited_not_as_its_columns(tmp_path: Path, keyring: Keyring) -> None:
    """Sealed bytes and columns both changed at one seq: the chain failure is the finding (the header is no
    longer the one the chain vouches for)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    try:
        _fill(store, keyring)
        sealed = bytearray(next(store.iter_chain(since_seq=9, to_seq=10)).sealed)
        sealed[-1] ^= 1
        raw_sql(store, "UPDATE records SET sealed = ?, subject = ? WHERE seq = ?", bytes(sealed), "x", 10)
    finally:
        store.close()
    for got in _verdicts(url):
        assert got["seq"] == 10 and "record hash mismatch" in got["problem"], got


def test_cli_reports_the_users_edits(tmp_path: Path, keyring: Keyring) -> None:
    """What the user ran: `UPDATE records SET subject='deadbeef' WHERE seq=2` (then the same with ts)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    try:
        _fill(store, keyring)
    finally:
        store.close()
    assert CliRunner().invoke(cli, ["audit", "verify", "--store", url]).exit_code == 0
    db = sqlite3.connect(tmp_path / "a.db")
    original = db.execute("SELECT subject, ts FROM records WHERE seq = 2").fetchone()
    for column, value in (("subject", "deadbeef"), ("ts", "2031-01-01T00:00:00.000000Z")):
        db.execute("UPDATE records SET subject = ?, ts = ? WHERE seq = 2", original)
        db.execute(f"UPDATE records SET {column} = ? WHERE seq = 2", (value,))
        db.commit()
        for jobs in ("1", "2"):
            out = CliRunner().invoke(cli, ["audit", "verify", "--store", url, "--jobs", jobs])
            assert out.exit_code == 1, out.output
            assert f"INTEGRITY FAILURE at seq 2: store column {column} differs" in out.output
            assert "expected:" in out.output and "calculated:" in out.output and value not in out.output
    db.close()


def test_the_byte_comparison_agrees_with_parsing_the_header(keyring: Keyring, tmp_path: Path) -> None:
    """columns_match (the bytes) only ever says yes where the parsed header says the same values."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    try:
        _fill(store, keyring)
        rows = list(store.iter_verify())
    finally:
        store.close()
    for seq, sealed, _, audit_id, ts, kind, route, subject in rows:
        assert column_problem(seq, sealed, audit_id, ts, kind, route, subject) is None
        assert columns_match(seq, sealed, audit_id, ts, kind, route, subject) is (route != ODD_ROUTE)
        for i, other in enumerate((audit_id + "x", ts[:-2] + "Z", kind + "s", (route or "") + "/", "")):
            cols = [audit_id, ts, kind, route, subject]
            cols[i] = other
            assert not columns_match(seq, sealed, *cols)  # type: ignore[arg-type]
            assert column_problem(seq, sealed, *cols) is not None  # type: ignore[arg-type]

"""Verify and export with several worker processes give what one process gives, on every store.

The windows are made tiny (4 records) so a 30-record log spans eight of them and every corruption can be put on
a window's first or last record, where a worker's walk hands over to the next.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlguard.audit import parallel
from mlguard.audit.export import export_store
from mlguard.audit.reader import AuditReader
from mlguard.audit.record import Pending, canonical, event, iso, pseudonym
from mlguard.audit.seal import Sealer
from mlguard.audit.store.base import AuditStore, open_store
from mlguard.audit.verify import verify_log, verify_store
from mlguard.audit.writer import AuditWriter
from mlguard.cli import cli
from mlguard.errors import IntegrityError, MLGuardError
from mlguard.keys import Keyring
from tests.audit.conftest import raw_sql

_REAL_OTHER_THREADS = parallel.other_threads


@pytest.fixture(autouse=True)
def _fork_as_the_cli_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the forked workers, which the CLI (single-threaded) gets; a thread left idle by
    another test of the session (anyio's worker threads linger) must not send them down the in-process path."""
    monkeypatch.setattr(parallel, "other_threads", lambda: False)


T0 = 1_790_000_000.0
SEED = b"mlguard-test-seed-0123456789abcdef"  # the keyring fixture's
N = 30
W = 4


def _rec(i: int, keyring: Keyring) -> Pending:
    subject = f"s{i % 5}"
    body = {"audit_id": f"id-{i:03d}", "kind": "exchange", "route": "/a" if i % 3 else "/b", "input": {"n": i},
            "output": {"score": i / 10}}
    return Pending(f"id-{i:03d}", iso(T0 + i), "exchange", body["route"], pseudonym(keyring, subject),
                   canonical(body), canonical({"sex": "F" if i % 2 else "M"}))


def _fill(store: AuditStore, keyring: Keyring) -> None:
    """N records (one a clear event), a checkpoint every 7 and one at a window boundary (seq 8)."""
    w = AuditWriter(store, keyring)
    for i in range(1, N + 1):
        item = _rec(i, keyring) if i != 12 else event("ev-12", T0 + 12, "gap", {"count": 0}, clear=True)
        w.append_now([item])
        if i % 7 == 0 or i == 8:
            w.checkpoint()


def _sealed(store: AuditStore, seq: int) -> bytes:
    return next(r.sealed for r in store.iter_chain(since_seq=seq - 1, to_seq=seq))


def _flip(store: AuditStore, seq: int) -> None:
    blob = bytearray(_sealed(store, seq))
    blob[len(blob) // 2] ^= 1
    raw_sql(store, "UPDATE {t}records SET sealed = ? WHERE seq = ?", bytes(blob), seq)


def _swap(store: AuditStore, a: int, b: int) -> None:
    ra, rb = (next(iter(store.iter_chain(since_seq=s - 1, to_seq=s))) for s in (a, b))
    raw_sql(store, "UPDATE {t}records SET sealed = ?, hash = ? WHERE seq = ?", rb.sealed, rb.hash, a)
    raw_sql(store, "UPDATE {t}records SET sealed = ?, hash = ? WHERE seq = ?", ra.sealed, ra.hash, b)


def _bad_checkpoint(store: AuditStore) -> None:
    cps = store.checkpoints()
    cp = dict(cps[1])  # the one at seq 8, a window boundary
    cp["sig"] = cps[0]["sig"]
    raw_sql(store, "UPDATE {t}checkpoints SET doc = ? WHERE seq = ?", json.dumps(cp, sort_keys=True), cp["seq"])


CORRUPTIONS = {
    "intact": lambda s: None,
    "flip first record": lambda s: _flip(s, 1),
    "flip last of a window": lambda s: _flip(s, 8),
    "flip first of a window": lambda s: _flip(s, 9),
    "flip last record": lambda s: _flip(s, N),
    "delete first of a window": lambda s: raw_sql(s, "DELETE FROM {t}records WHERE seq = ?", 13),
    "delete last of a window": lambda s: raw_sql(s, "DELETE FROM {t}records WHERE seq = ?", 16),
    "delete a whole window": lambda s: raw_sql(s, "DELETE FROM {t}records WHERE seq > ? AND seq <= ?", 16, 20),
    "swap across windows": lambda s: _swap(s, 11, 14),
    "stored hash edited": lambda s: raw_sql(s, "UPDATE {t}records SET hash = ? WHERE seq = ?", b"\x01" * 32, 20),
    "truncated tail": lambda s: raw_sql(s, "DELETE FROM {t}records WHERE seq > ?", 22),
    "inserted beyond the end": lambda s: raw_sql(
        s, "INSERT INTO {t}records SELECT seq + 10, audit_id || 'x', ts, kind, route, subject, sealed, hash "
           "FROM {t}records WHERE seq = ?", N),
    "checkpoint signature replaced": _bad_checkpoint,
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_verify_in_windows_equals_one_process(store_url: str, keyring: Keyring, corruption: str) -> None:
    store = open_store(store_url)
    try:
        _fill(store, keyring)
        CORRUPTIONS[corruption](store)
        one = verify_log(store.iter_chain(), head=store.head(), checkpoints=store.checkpoints(),
                         public_keys=store.public_keys()).as_dict()
    finally:
        store.close()
    assert one["ok"] is (corruption == "intact"), one
    ticks: list[int] = []
    for jobs in (1, 2):
        got = verify_store(store_url, jobs=jobs, window=W, progress=ticks.append).as_dict()
        assert got == one, (jobs, got, one)
    if corruption == "intact":
        assert one["records"] == N and sum(ticks) == 2 * N


def test_verify_reports_the_first_failure_of_several(store_url: str, keyring: Keyring) -> None:
    store = open_store(store_url)
    try:
        _fill(store, keyring)
        _flip(store, 27)  # a later window fails too, and its worker may finish first
        _flip(store, 6)
    finally:
        store.close()
    res = verify_store(store_url, jobs=2, window=W)
    assert (res.ok, res.seq, res.records) == (False, 6, 5)


def test_export_in_windows_equals_one_process(store_url: str, keyring: Keyring, tmp_path: Path) -> None:
    store = open_store(store_url)
    try:
        _fill(store, keyring)
        assert store.delete_data_keys(subject=pseudonym(keyring, "s3"))  # shown as shredded in both
        reader = AuditReader(store, keyring)
        want_lines = list(reader.iter_jsonl())
        want_b = [r for r in reader.iter_records(route="/b", subject="s1")]
    finally:
        store.close()
    assert any(json.loads(x)["shredded"] for x in want_lines) and want_b
    for jobs in (1, 2):
        out = tmp_path / f"all{jobs}.jsonl"
        ticks: list[int] = []
        assert export_store(store_url, keyring, out, "jsonl", jobs=jobs, window=W,
                            progress=ticks.append) == len(want_lines) == sum(ticks)
        assert out.read_text().splitlines() == want_lines
        csv_out = tmp_path / f"b{jobs}.csv"
        ticks = []
        assert export_store(store_url, keyring, csv_out, "csv", route="/b", subject="s1", jobs=jobs,
                            window=W, progress=ticks.append) == len(want_b) == sum(ticks)
    assert (tmp_path / "b1.csv").read_bytes() == (tmp_path / "b2.csv").read_bytes()
    assert [line.split(",")[0] for line in (tmp_path / "b2.csv").read_text().splitlines()[1:]] == \
        [r["audit_id"] for r in want_b]


def test_export_worker_error_reaches_the_caller(tmp_path: Path, keyring: Keyring) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    try:
        _fill(store, keyring)
        raw_sql(store, "UPDATE {t}records SET sealed = ? WHERE seq = ?", b"not a sealed record", 10)
    finally:
        store.close()
    for jobs in (1, 2):
        for fmt in ("jsonl", "csv"):
            out = tmp_path / f"x.{fmt}"
            with pytest.raises(IntegrityError, match="malformed"):
                export_store(url, keyring, out, fmt, jobs=jobs, window=W)  # type: ignore[arg-type]
            assert not out.exists()  # no cut file that would pass for the export of a shorter log



@pytest.mark.parametrize("column", ["ts", "route", "kind"])
def test_an_edited_filter_column_is_caught_when_read(store_url: str, keyring: Keyring, tmp_path: Path,
                                                     column: str) -> None:
    """The clear columns filters use are not in the chain; the sealed header they copy is. A record moved to
    another day, route or kind by editing its row is refused when read (export, admin reads), naming its seq,
    instead of being exported under the wrong filter."""
    store = open_store(store_url)
    try:
        _fill(store, keyring)
        value = {"ts": "2020-01-01T00:00:00.000Z", "route": "/other", "kind": "admin_read"}[column]
        raw_sql(store, f"UPDATE {{t}}records SET {column} = ? WHERE seq = ?", value, 13)
    finally:
        store.close()
    for jobs in (1, 2):
        out = tmp_path / "x.jsonl"
        with pytest.raises(IntegrityError) as err:
            export_store(store_url, keyring, out, "jsonl", jobs=jobs, window=W)
        assert err.value.seq == 13 and "sealed header" in str(err.value)
        assert not out.exists()


def test_an_error_that_cannot_cross_the_pipe_is_still_raised() -> None:
    class Odd(Exception):
        def __init__(self, a: int, b: int) -> None:  # pickle rebuilds exceptions from args: this one fails
            super().__init__(f"odd {a + b}")

    ok, err = parallel._call(lambda _: (_ for _ in ()).throw(Odd(1, 2)), 0)
    assert not ok and isinstance(err, MLGuardError) and "Odd: odd 3" in str(err)
    pickle.loads(pickle.dumps(err))  # crosses a pipe as it is


def test_windows_partition_the_log() -> None:
    assert parallel.windows(0, 4) == [(0, None)]
    assert parallel.windows(4, 4) == [(0, None)]
    assert parallel.windows(9, 4) == [(0, 4), (4, 8), (8, None)]
    assert parallel.windows(8, 4) == [(0, 4), (4, None)]


def test_reader_key_cache_is_bounded(tmp_path: Path, keyring: Keyring, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export over many subjects keeps a bounded number of unwrapped keys (and still opens everything)."""
    import mlguard.audit.seal as seal

    monkeypatch.setattr(seal, "MAX_READ_KEYS", 8)
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        w = AuditWriter(store, keyring)
        w.append_now([Pending(f"id-{i}", iso(T0 + i), "exchange", "/a", pseudonym(keyring, f"subject-{i}"),
                              canonical({"audit_id": f"id-{i}", "input": {"n": i}}), None) for i in range(40)])
        reader = AuditReader(store, keyring)
        got = [json.loads(line) for line in reader.iter_jsonl()]
        again = reader.get("id-0")  # forgotten by now: fetched and unwrapped again
    finally:
        store.close()
    assert [g["input"]["n"] for g in got] == list(range(40)) and not any(g["shredded"] for g in got)
    assert again is not None and again["input"] == {"n": 0}
    assert len(reader.sealer._aeads) <= 8


def test_prefetch_leaves_out_a_key_row_of_another_domain(keyring: Keyring) -> None:
    sealer = Sealer(keyring)
    calls: list[list[str]] = []

    def fetch_many(ids: list[str]) -> dict[str, tuple[str, str, str, str, bytes]]:
        calls.append(ids)
        return {"k1": ("s", "protected", "2026-09-21", "kek", b"x" * 60)}

    gone = sealer.prefetch({"k1": "data", "k2": "data"}, fetch_many)
    assert gone == {"k2"} and calls == [["k1", "k2"]] and sealer._aeads == {}


def test_cli_jobs_option(tmp_path: Path, keyring: Keyring) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    try:
        _fill(store, keyring)
    finally:
        store.close()
    runner = CliRunner(env={"MLGUARD_KEYRING": base64.b64encode(SEED).decode()})
    outs = []
    for jobs in ("1", "2"):
        r = runner.invoke(cli, ["audit", "verify", "--store", url, "--jobs", jobs, "--json"])
        assert r.exit_code == 0 and json.loads(r.stdout.splitlines()[-1])["records"] == N, r.output
        out = tmp_path / f"x{jobs}.jsonl"
        r = runner.invoke(cli, ["audit", "export", "--store", url, "--jobs", jobs, "--out", str(out)])
        assert r.exit_code == 0, r.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0].count(b"\n") == N
    r = runner.invoke(cli, ["audit", "verify", "--store", url, "--jobs", "0"])
    assert r.exit_code == 2


def test_empty_log_verifies_and_exports_nothing(store_url: str, keyring: Keyring, tmp_path: Path) -> None:
    open_store(store_url).close()  # the schema, no record
    res = verify_store(store_url, jobs=2, window=W)
    assert res.ok and res.records == 0
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"empty.{fmt}"
        assert export_store(store_url, keyring, out, fmt, jobs=2, window=W) == 0  # type: ignore[arg-type]
        assert out.exists()



@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_export_files_are_readable_by_their_owner_only(tmp_path: Path, keyring: Keyring, fmt: str) -> None:
    """A decrypted export holds protected attributes in clear: it is created 0600 whatever the umask, and an
    existing file written over is narrowed to 0600 too; the content is the export's."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    _fill(store, keyring)
    store.close()
    new, old = tmp_path / f"new.{fmt}", tmp_path / f"old.{fmt}"
    old.write_bytes(b"stale")
    old.chmod(0o644)
    mask = os.umask(0o022)
    try:
        for out in (new, old):
            assert export_store(url, keyring, out, fmt, jobs=1) == N  # type: ignore[arg-type]
            assert out.stat().st_mode & 0o777 == 0o600, out.name
    finally:
        os.umask(mask)
    assert old.read_bytes() == new.read_bytes()


_PARENT = os.getpid()


def _exit_in_worker(task: int) -> int:
    if task == 2 and os.getpid() != _PARENT:  # never the test process itself
        os._exit(3)  # a worker dying (killed, out of memory) mid-task
    return task


def _pid(task: int) -> int:
    return os.getpid()


def test_no_fork_while_other_threads_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller with another thread running reads in its own process (a fork there can copy a lock held by
    that thread and hang the child; Python 3.12+ warns); without one, the windows go to forked workers."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert parallel.can_fork() and os.getpid() not in set(parallel.run_windows(_pid, list(range(4)), url=url,
                                                                              jobs=2))
    monkeypatch.setattr(parallel, "other_threads", _REAL_OTHER_THREADS)  # the real check from here on
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert parallel.other_threads() and not parallel.can_fork()
        assert set(parallel.run_windows(_pid, list(range(4)), url=url, jobs=2)) == {os.getpid()}
    finally:
        stop.set()
        t.join()


def test_a_worker_that_dies_is_an_error_not_a_hang(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    got = []
    with pytest.raises(MLGuardError, match="ended unexpectedly"):
        for r in parallel.run_windows(_exit_in_worker, list(range(6)), url=url, jobs=2):
            got.append(r)
    assert got == [0, 1]


class _SlowToUnpickle:
    """A result that takes the parent half a second to unpickle: long enough for the worker to die meanwhile."""

    def __reduce__(self) -> tuple[Any, tuple[float]]:
        import time

        return time.sleep, (0.5,)


def _slow_then_exit(task: int) -> Any:
    if task == 0:
        return _SlowToUnpickle()
    os._exit(3)


def test_a_task_sent_to_a_worker_already_dead_is_reported_in_order() -> None:
    """The parent sends the next task to a worker that died meanwhile (the pipe is broken): not a
    BrokenPipeError from the send, but the worker's death, when its result is due (flaky before: it raced)."""
    got = []
    with pytest.raises(MLGuardError, match="ended unexpectedly"):
        for r in parallel._forked(_slow_then_exit, [0, 1, 2, 3], 1):
            got.append(r)
    assert got == [None]


def test_stopping_early_leaves_no_worker_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    before = {p.pid for p in multiprocessing.active_children()}
    results = parallel.run_windows(abs, list(range(-50, 0)), url=url, jobs=2)
    assert next(results) == 50
    results.close()
    assert {p.pid for p in multiprocessing.active_children()} == before

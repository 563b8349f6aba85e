"""The async writer's pipeline: batches sealed ahead of their transaction are committed only when the head,
the key generation and the key slots they were sealed under still hold; otherwise they are sealed again inside
the transaction. Each case drives the two steps by hand (no threads) so the interleaving is exact."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mlguard.audit.reader import AuditReader
from mlguard.audit.record import Pending, canonical, iso, pseudonym
from mlguard.audit.seal import decode
from mlguard.audit.store.base import AuditStore, WriteTx, open_store
from mlguard.audit.verify import verify_log
from mlguard.audit.writer import AuditWriter
from mlguard.errors import AuditUnavailable
from mlguard.keys import Keyring

T0 = 1_790_000_000.0


def rec(i: int, ring: Keyring, subject: str = "alice") -> Pending:
    return Pending(f"p-{i:05d}", iso(T0 + i), "exchange", "/predict", pseudonym(ring, subject),
                   canonical({"i": i}), canonical({"sex": "F"}))


def batch(ring: Keyring, lo: int, hi: int, subject: str = "alice") -> list[tuple[Pending, Any]]:
    return [(rec(i, ring, subject), None) for i in range(lo, hi)]


@pytest.fixture
def sq(tmp_path: Path) -> Iterator[AuditStore]:
    s = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    yield s
    s.close()


def verified_and_readable(store: AuditStore, ring: Keyring, n: int) -> None:
    res = verify_log(store.iter_rows(), head=store.head(), checkpoints=store.checkpoints(),
                     public_keys=store.public_keys())
    assert res.ok, res.as_dict()
    recs = list(AuditReader(store, ring).iter_records())
    assert len(recs) == n
    assert all(r["shredded"] is False and r["protected"] == {"sex": "F"} for r in recs if r["kind"] == "exchange")


def test_presealed_batch_commits_as_sealed(sq: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(sq, keyring, pipeline=True)
    first = w._preseal(batch(keyring, 0, 5))
    assert first.rows is None  # no known head yet: sealed in the transaction
    assert w._commit_job(first) == [1, 2, 3, 4, 5]
    job = w._preseal(batch(keyring, 5, 10))
    assert job.rows is not None and job.seq0 == 5
    assert w._commit_job(job) == [6, 7, 8, 9, 10]
    assert w.stats["resealed"] == 0
    assert [r.sealed for r in sq.iter_rows(since_seq=5)] == [r.sealed for r in job.rows]
    verified_and_readable(sq, keyring, 10)


def test_head_moved_by_another_writer_reseals(sq: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(sq, keyring, pipeline=True)
    w._commit_job(w._preseal(batch(keyring, 0, 3)))
    job = w._preseal(batch(keyring, 3, 6, subject="bob"))  # creates bob's keys while sealing ahead
    assert job.rows is not None and job.new
    AuditWriter(sq, keyring).append_now([rec(100, keyring, "carol")])  # another process appends
    assert w._commit_job(job) == [5, 6, 7]
    assert w.stats["resealed"] == 1
    # the prediction was dropped; the next batch resynchronises on the committed head and seals ahead again
    nxt = w._preseal(batch(keyring, 6, 8, subject="bob"))
    assert nxt.rows is not None and nxt.seq0 == 7
    w._commit_job(nxt)
    assert w.stats["resealed"] == 1
    verified_and_readable(sq, keyring, 9)


def test_shred_between_seal_and_commit_uses_fresh_keys(sq: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(sq, keyring, pipeline=True)
    w._commit_job(w._preseal(batch(keyring, 0, 2)))
    job = w._preseal(batch(keyring, 2, 4))  # alice's (cached) keys
    gone = sq.delete_data_keys(subject=pseudonym(keyring, "alice"))  # the key generation moves
    assert job.rows is not None and gone
    w._commit_job(job)
    assert w.stats["resealed"] == 1
    kids = {decode(r.sealed).header["kid"] for r in sq.iter_rows(since_seq=2)}
    assert not kids & set(gone)  # never sealed under a shredded key
    recs = {r["audit_id"]: r for r in AuditReader(sq, keyring).iter_records()}
    assert recs["p-00000"]["shredded"] is True and recs["p-00003"]["shredded"] is False


def test_failed_batch_invalidates_batches_sealed_after_it(sq: AuditStore, keyring: Keyring,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    w = AuditWriter(sq, keyring, pipeline=True)
    w._commit_job(w._preseal(batch(keyring, 0, 2)))
    failing = w._preseal(batch(keyring, 2, 4, subject="dave"))  # creates dave's keys
    after = w._preseal(batch(keyring, 4, 6, subject="dave"))  # uses them: they exist only in `failing`
    assert failing.new and not after.new
    real_write = sq.write

    @contextmanager
    def broken() -> Iterator[WriteTx]:
        with real_write() as tx:
            yield tx
            raise AuditUnavailable("disk full")

    monkeypatch.setattr(sq, "write", broken)
    with pytest.raises(AuditUnavailable):
        w._commit_job(failing)
    monkeypatch.setattr(sq, "write", real_write)
    assert w._commit_job(after) == [3, 4]  # sealed again, under fresh keys that are stored with it
    assert w.stats["resealed"] == 1
    verified_and_readable(sq, keyring, 4)


def test_pipelined_writer_threads(store: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(store, keyring, pipeline=True, queue_size=20_000, checkpoint_every=500)
    w.start()
    waited = []
    for i in range(6000):
        item = rec(i, keyring, subject=f"s{i // 4}")
        if i % 1000 == 0:
            fut = w.submit(item, wait=True)
            assert fut is not None
            waited.append(fut)
        else:
            w.submit(item, wait=False)
    w.close()
    assert sorted(f.result(timeout=5) for f in waited) == [f.result() for f in waited]
    assert store.count() == 6000 and w.stats["errors"] == 0
    nonces = [(decode(r.sealed).header["kid"], decode(r.sealed).parts[0][0]) for r in store.iter_rows()]
    assert len(set(nonces)) == len(nonces)
    verified_and_readable(store, keyring, 6000)


def test_two_pipelined_writers_on_one_log(store: AuditStore, keyring: Keyring) -> None:
    """Two writers (as two processes would) interleave batches: every batch sealed ahead after a head the
    other writer moved is sealed again; one chain, every record readable."""
    ws = [AuditWriter(store, keyring, pipeline=True, queue_size=10_000) for _ in range(2)]
    for w in ws:
        w.start()
    for i in range(3000):
        ws[i % 2].submit(rec(i, keyring, subject=f"s{i // 8}"), wait=False)
    for w in ws:
        w.close()
    assert store.count() == 3000 and sum(w.stats["errors"] for w in ws) == 0
    verified_and_readable(store, keyring, 3000)

"""The writer's queue: no wake-up is ever missed, the bound holds, what an event loop submits in one iteration
is one batch, and the pooled CSPRNG is fork-safe."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from mlguard.audit.record import Pending, canonical, iso
from mlguard.audit.store.base import open_store
from mlguard.audit.writer import AuditWriter
from mlguard.errors import AuditUnavailable
from mlguard.ids import random_bytes, uuid7
from mlguard.keys import Keyring


def _item(i: int) -> Pending:
    return Pending(f"q-{i}-{uuid7()}", iso(time.time()), "exchange", "/p", f"s{i % 7}", canonical({"i": i}),
                   canonical({"sex": "F"}))


def test_bursts_from_threads_never_wait_for_the_idle_timeout(tmp_path: Path) -> None:
    """The writer sleeps up to checkpoint_seconds (60 s here) when idle: a missed wake-up would show as a
    future that takes that long. Bursts separated by pauses make it fall asleep again and again."""
    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    w = AuditWriter(store, Keyring.from_seed(b"queue-test-seed-queue-test-seed!!"), checkpoint_seconds=60.0)
    w.start()
    worst: list[float] = []

    def producer(k: int) -> None:
        for burst in range(15):
            futs = [w.submit(_item(k * 10_000 + burst * 10 + j)) for j in range(1 + (k + burst) % 4)]
            t0 = time.monotonic()
            for f in futs:
                assert f is not None
                f.result(timeout=10)
            worst.append(time.monotonic() - t0)
            time.sleep(0.003 * ((k + burst) % 3))

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert max(worst) < 5.0
    assert store.count() == sum(1 + (k + b) % 4 for k in range(4) for b in range(15))
    store.close()


def test_queue_bound_refuses_when_full(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    w = AuditWriter(store, Keyring.from_seed(b"queue-test-seed-queue-test-seed!!"), queue_size=3)
    for i in range(3):  # no writer thread: nothing drains
        w.submit(_item(i), wait=False)
    with pytest.raises(AuditUnavailable):
        w.submit(_item(3), wait=False)
    assert w.depth == 3
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_random_pool_is_not_replayed_in_a_forked_child() -> None:
    random_bytes(1)  # the parent's pool is filled
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.write(wfd, random_bytes(32))
        os._exit(0)
    os.close(wfd)
    child = os.read(r, 32)
    os.close(r)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != random_bytes(32)


def test_what_a_loop_submits_in_one_iteration_is_committed_as_one_batch(tmp_path: Path) -> None:
    """Coroutines that reach the audit stage during the same loop iteration share one COMMIT (the writer is
    handed their records together, not woken by the first: it would take the GIL whenever the loop thread
    releases it and commit the first records nearly alone), and each gets its own seq, in submission order."""
    import asyncio

    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    w = AuditWriter(store, Keyring.from_seed(b"queue-test-seed-queue-test-seed!!"), checkpoint_seconds=60.0)
    w.start()

    async def main() -> list[int]:
        futs = []
        for i in range(40):  # one iteration: nothing awaited in between
            futs.append(w.submit_async(_item(i)))
            time.sleep(0.002)  # the GIL released between two submissions, as numpy does inside an explanation
        return list(await asyncio.wait_for(asyncio.gather(*futs), 10))

    seqs = asyncio.run(main())
    w.close()
    assert seqs == list(range(1, 41))
    assert w.stats["batches"] == 1  # (checkpoints are not batches)
    store.close()


def test_a_lone_coroutine_is_not_kept_waiting(tmp_path: Path) -> None:
    """The hand-over runs in the loop's next iteration: with nothing else to do, at once (the writer sleeps
    up to checkpoint_seconds, 60 s here, so a missed hand-over would show)."""
    import asyncio

    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    w = AuditWriter(store, Keyring.from_seed(b"queue-test-seed-queue-test-seed!!"), checkpoint_seconds=60.0)
    w.start()

    async def main() -> list[float]:
        took = []
        for i in range(20):
            t0 = time.monotonic()
            await asyncio.wait_for(w.submit_async(_item(i)), 10)
            took.append(time.monotonic() - t0)
            await asyncio.sleep(0.002 * (i % 3))  # the writer falls asleep in between
        return took

    took = asyncio.run(main())
    w.close()
    assert max(took) < 5.0
    assert store.count() == 20
    store.close()


def test_the_bound_counts_records_waiting_for_the_hand_over(tmp_path: Path) -> None:
    import asyncio

    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    w = AuditWriter(store, Keyring.from_seed(b"queue-test-seed-queue-test-seed!!"), queue_size=3)

    async def main() -> None:
        for i in range(3):  # no writer thread: nothing drains
            w.submit_async(_item(i))
        with pytest.raises(AuditUnavailable):
            w.submit_async(_item(3))  # refused at once, not when handed over
        await asyncio.sleep(0)  # the hand-over ran: all three are in the queue
        assert w.depth == 3

    asyncio.run(main())
    store.close()


@pytest.mark.parametrize("pipeline", [False, True], ids=["writer", "committer"])
def test_a_bug_in_the_writer_thread_answers_the_batch_and_keeps_the_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, pipeline: bool) -> None:
    """An unexpected error in the thread's loop (here: resolving a committed batch) must not end the thread:
    with sync durability every later request would wait for ever. The batch's waiters get AuditUnavailable,
    the error is counted and logged (class only), and the next record is committed as usual."""
    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    w = AuditWriter(store, Keyring.from_seed(b"queue-test-seed-queue-test-seed!!"), pipeline=pipeline)
    real = AuditWriter._resolve_batch
    calls = {"n": 0}

    def flaky(batch: list, seqs: list) -> None:  # type: ignore[type-arg]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("planted-secret-value")
        real(batch, seqs)

    monkeypatch.setattr(AuditWriter, "_resolve_batch", staticmethod(flaky))
    w.start()
    first = w.submit(_item(1))
    assert first is not None
    with pytest.raises(AuditUnavailable, match="RuntimeError"):
        first.result(timeout=10)
    second = w.submit(_item(2))
    assert second is not None
    assert second.result(timeout=10) == 2  # the thread lives on; the first record was committed (seq 1)
    w.close()
    assert w.stats["errors"] == 1
    assert store.count() == 2
    failed = [r for r in caplog.records if r.getMessage() == ("audit committer failed" if pipeline
                                                              else "audit writer failed")]
    assert [getattr(r, "error", None) for r in failed] == ["RuntimeError"]
    assert all("planted-secret-value" not in str(vars(r)) for r in caplog.records)
    store.close()
